-- callback.handler(opts) for OpenResty: build once (init_by_lua or at module
-- level), then `content_by_lua_block { receive() }`.  The platform gets its
-- answer at once; on_status / on_command run afterwards in a timer, so a
-- slow handler never delays the platform nor the worker's other requests.
local receiver = require "kinot.callback.receiver"
local shared = require "kinot.callback.shared"

local ngx = ngx -- luacheck: ignore
local M = {}

-- at most this many timers per handler run on_status / on_command at once
M.MAX_RUNNERS = 64
-- a runner starts this long after the event that needs it, so that under
-- load one timer takes a whole batch (setting up a timer costs about as
-- much as verifying a callback); the platform has had its answer already
M.BATCH_DELAY = 0.001

-- a lua_shared_dict as the dedupe set: shared by every worker
local function dict_set(name, ttl)
  local dict = ngx.shared[name]
  if not dict then error("kinot: dedupe names lua_shared_dict '" .. name .. "', which nginx.conf does not declare", 4) end
  return {
    add = function(_, key)
      local ok, err = dict:add(key, true, ttl)
      if ok then return true end
      if err == "exists" then return false end
      return true -- a full dict must not lose a callback: process it
    end,
  }
end

-- Events wait in a per-worker queue that timers ("runners") empty.  One
-- timer per event would cost a timer's setup on every callback; a runner
-- takes a whole batch.  A runner whose handler yields (ngx.sleep, a
-- cosocket) is "blocked", so a runner about to call a handler with events
-- queued behind it makes sure another one is on its way: a slow handler
-- never holds the others back.
local function dispatcher(rcv, max_runners)
  local queue, first, last = {}, 1, 0
  local runners, blocked = 0, 0
  local run

  local function start_runner()
    if runners >= max_runners or not ngx.timer.at(M.BATCH_DELAY, run) then return false end
    runners = runners + 1
    return true
  end

  local function dispatch(ev)
    blocked = blocked + 1
    local ok, err = rcv:dispatch(ev)
    blocked = blocked - 1
    if not ok then ngx.log(ngx.ERR, "kinot callback handler failed for sn ", tostring(ev.sn), ": ", tostring(err)) end
  end

  -- premature (the worker is exiting) still runs what is queued: an
  -- acknowledged callback is never dropped
  run = function()
    while first <= last do
      local ev = queue[first]
      queue[first] = nil
      first = first + 1
      if first <= last and runners - blocked < 2 then start_runner() end -- a spare, should this one block
      dispatch(ev)
    end
    first, last = 1, 0 -- empty: indices start over, the queue's table stays small
    runners = runners - 1
  end

  return function(ev)
    last = last + 1
    queue[last] = ev
    -- a runner that is not blocked is on its way and will take it; else
    -- start one; at the cap, the first blocked runner to finish takes it
    if runners > blocked or start_runner() or runners > 0 then return end
    -- no timer left: run here, after the answer, rather than lose it
    ngx.eof()
    runners = runners + 1
    run()
  end
end

-- nginx keeps a large body in a file (client_body_buffer_size): memory
-- stays bounded, and only max_body + 1 bytes are ever read from it
local function read_body(max_body)
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local file = ngx.req.get_body_file() -- bigger than client_body_buffer_size
  if not file then return "" end
  local f = io.open(file, "rb")
  if not f then return nil, "unreadable" end
  body = f:read(max_body + 1)
  f:close()
  if body and #body > max_body then return nil, "too_large" end
  return body or ""
end

function M.new(opts)
  if type(opts) ~= "table" then error("kinot: callback.handler needs a table of options", 3) end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  -- Redis: dedupe = { redis = url } and inbox = { redis = url } (kinot.callback.shared)
  local gate = shared.new(o)
  if gate then o.seen = gate.pass end
  if o.dedupe ~= nil and not gate then
    if type(o.dedupe) ~= "string" then error("kinot: dedupe must name a lua_shared_dict or be { redis = url, ttl = s }", 3) end
    if ngx and ngx.shared then o.seen = dict_set(o.dedupe, o.dedupe_ttl or 3600) end
  end
  -- nginx's cached clock: no system call, and the JIT compiles it
  if o.clock == nil and ngx and ngx.time then o.clock = ngx.time end
  local rcv = receiver.new(o)
  local max_body = rcv.max_body
  local hand_over = dispatcher(rcv, M.MAX_RUNNERS)

  return function()
    ngx.header["Content-Type"] = "application/json"
    if ngx.req.get_method() ~= "POST" then
      ngx.status = 405
      return ngx.print('{"code":405,"message":"callbacks are POSTed"}')
    end
    local body, why = read_body(max_body)
    local status, answer, ev
    if not body then
      status = why == "too_large" and 413 or 400
      answer = '{"code":' .. status .. ',"message":"callback body ' ..
        (why == "too_large" and ("over the " .. max_body .. "-byte cap") or "could not be read") .. '"}'
    else
      status, answer, ev = rcv:receive(body)
      if ev and gate then status, answer, ev = gate:accept(body, ev) end
    end
    ngx.status = status
    ngx.print(answer)
    if ev then hand_over(ev) end
  end
end

return M
