-- callback.handler(opts) for OpenResty: build once (init_by_lua or at module
-- level), then `content_by_lua_block { receive() }`.  Two acknowledgements:
--   ack = "after_handler" (the default): on_status / on_command run in the
--     request, and the platform gets 200 only once the handler returned
--     normally; when it raises or returns nil, err the platform gets 500
--     and delivers again.  Dedupe records a delivery only once its handler
--     succeeded; while one delivery is being handled, another copy of it
--     gets 503 ("in progress": a short mark in the dedupe store, `busy_ttl`
--     seconds at most), so a handler never runs twice at once for one event.
--   ack = "immediate": the platform gets 200 at once and the handlers run
--     afterwards in a timer, so a slow handler never delays the platform;
--     what a raising handler, a reload or a kill -9 does to each: README.
local receiver = require "kinot.callback.receiver"
local recent = require "kinot.callback.recent"
local shared = require "kinot.callback.shared"

local ngx = ngx -- luacheck: ignore
local M = {}

-- at most this many handlers run at once per handler (ack = "immediate")
M.MAX_RUNNERS = 64
-- a runner starts this long after the event that needs it, so that under
-- load one timer takes a whole batch (setting up a timer costs about as
-- much as verifying a callback); the platform has had its answer already
M.BATCH_DELAY = 0.001
-- how long a delivery being handled (ack = "after_handler") keeps other
-- copies of it away: longer than a handler takes, short enough that a
-- delivery whose worker was killed is handled again soon after
M.BUSY_TTL = 60

local OK_BODY = receiver.OK_BODY
local FAILED_BODY = '{"code":500,"message":"the callback handler failed; deliver this callback again"}'
local BUSY_BODY = '{"code":503,"message":"this callback is being handled by an earlier delivery; deliver it again later"}'

local function log_failure(ev, why)
  ngx.log(ngx.ERR, "kinot callback handler failed for sn ", tostring(ev.sn), ": ", tostring(why))
end

-- pcall's results -> true | false, why: a handler fails when it raises,
-- returns nil (or false) and an error, or returns false (a handler that
-- says false has not done its work: acknowledging it would lose the event)
local function outcome(ok, r1, r2)
  if not ok then return false, r1 end
  if (r1 == nil or r1 == false) and r2 ~= nil then return false, r2 end
  if r1 == false then return false, "the handler returned false" end
  return true
end

-- The dedupe store.  add(key) is the receiver's question "is this delivery
-- new?", asked before the event is built: with ack = "immediate" it records
-- the delivery at once; with "after_handler" it only looks, and claim /
-- commit / release record it around the handler.

-- a lua_shared_dict: shared by every worker, and it outlives a worker
-- killed with SIGKILL (the in-progress mark then holds copies off for
-- busy_ttl seconds)
local function dict_store(name, ttl, busy_ttl, after)
  local dict = ngx.shared[name]
  if not dict then error("kinot: dedupe names lua_shared_dict '" .. name .. "', which nginx.conf does not declare", 4) end
  local marks = 0
  local s = { dict = dict }
  if after then
    function s.add(_, key) return dict:get(key) ~= true end
  else
    function s.add(_, key)
      local ok, err = dict:add(key, true, ttl)
      if ok then return true end
      if err == "exists" then return false end
      return true -- a full dict must not lose a callback: process it
    end
  end
  --- claim(key) -> token | nil, "done" | "busy"
  function s.claim(_, key)
    marks = marks + 1
    local token = "busy:" .. ngx.worker.pid() .. ":" .. marks
    local ok, err = dict:add(key, token, busy_ttl)
    if ok then return token end
    if err ~= "exists" then return token end -- no memory: handle it, unmarked
    local v = dict:get(key)
    if v == true then return nil, "done" end
    if v == nil and dict:add(key, token, busy_ttl) then return token end -- expired just now
    return nil, "busy"
  end
  function s.commit(_, key) dict:set(key, true, ttl) end
  function s.release(_, key, token)
    if dict:get(key) == token then dict:delete(key) end
  end
  return s
end

-- without a dict: this worker's memory (kinot.callback.recent)
local function local_store(seen, busy_ttl, after)
  local busy = {}
  local s = {}
  if after then
    function s.add(_, key) return not seen:has(key) end
  else
    function s.add(_, key) return seen:add(key) end
  end
  function s.claim(_, key)
    if seen:has(key) then return nil, "done" end
    local now = ngx.now()
    local until_ = busy[key]
    if until_ and until_ > now then return nil, "busy" end
    busy[key] = now + busy_ttl
    return key
  end
  function s.commit(_, key)
    busy[key] = nil
    seen:add(key)
  end
  function s.release(_, key) busy[key] = nil end
  return s
end

-- ack = "immediate": events wait in a per-worker queue.  A timer (a
-- "runner") empties it; a runner about to call a handler with events
-- queued behind it spawns a spare (a light thread of the same timer, which
-- takes no timer of its own): a handler that sleeps or does I/O never
-- holds the others back.  nginx drops a timer that comes due while
-- lua_max_running_timers timers are running, without a word to the Lua
-- that made it: so a runner is counted only once it runs, and the request
-- that started it watches, after its answer, until it runs; if it does
-- not, the request empties the queue itself.
local function dispatcher(rcv, max_runners)
  local queue, first, last = {}, 1, 0
  local loops, blocked = 0, 0 -- coroutines emptying the queue; of them, those inside a handler
  local pending, serial, started_upto, abandoned = 0, 0, 0, {}
  local drain

  local function dispatch(ev)
    blocked = blocked + 1
    local ok, why = outcome(rcv:dispatch(ev))
    blocked = blocked - 1
    if not ok then log_failure(ev, why) end
  end

  local function spare()
    if not ngx.worker.exiting() then ngx.sleep(M.BATCH_DELAY) end
    drain()
  end

  -- the caller has counted this coroutine in `loops`
  drain = function()
    while first <= last do
      local ev = queue[first]
      queue[first] = nil
      first = first + 1
      -- (not once the worker exits: a spare would not wait, and would run
      -- the next events before this one)
      if first <= last and loops - blocked < 2 and loops < max_runners and not ngx.worker.exiting() then
        loops = loops + 1 -- the spare counts from now: it will take the next events
        if not ngx.thread.spawn(spare) then loops = loops - 1 end
      end
      dispatch(ev)
    end
    first, last = 1, 0 -- empty: indices start over, the queue's table stays small
    loops = loops - 1
  end

  -- premature (the worker is exiting) still runs what is queued: an
  -- acknowledged callback is never dropped
  local function run(_, s)
    if abandoned[s] then abandoned[s] = nil else pending = pending - 1 end
    if s > started_upto then started_upto = s end
    loops = loops + 1
    drain()
  end

  local function here() -- in the request, after its answer
    ngx.eof()
    loops = loops + 1
    drain()
  end

  return function(ev)
    last = last + 1
    queue[last] = ev
    -- a runner on its way (its request watches it), or a spare about to
    -- wake, takes it; at the cap, the first handler to return takes it
    if pending > 0 or loops > blocked or loops >= max_runners then return end
    serial = serial + 1
    local s = serial
    if not ngx.timer.at(M.BATCH_DELAY, run, s) then return here() end -- no timer to be had
    pending = pending + 1
    ngx.eof()
    local due = ngx.now() + M.BATCH_DELAY
    while started_upto < s and not ngx.worker.exiting() and ngx.now() <= due do
      ngx.sleep(math.min(0.05, due - ngx.now() + 0.001))
    end
    if started_upto < s then -- dropped by nginx (or the worker is exiting): do it here
      abandoned[s] = true
      pending = pending - 1
      loops = loops + 1
      drain()
    end
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

local NOT_HANDLED = { stale = true, out_of_order = true, future = true, malformed = true }

function M.new(opts)
  if type(opts) ~= "table" then error("kinot: callback.handler needs a table of options", 3) end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  local ack = o.ack
  if ack == nil then ack = "after_handler" end
  if ack ~= "after_handler" and ack ~= "immediate" then
    error('kinot: ack must be "after_handler" or "immediate"', 3)
  end
  if o.inbox ~= nil and opts.ack ~= nil then
    error("kinot: ack does not apply with an inbox: its 200 means the event is stored, and kinot.callback.worker " ..
      "runs the handlers", 3)
  end
  o.ack = ack
  -- Redis: dedupe = { redis = url } and inbox = { redis = url } (kinot.callback.shared)
  local gate = shared.new(o)
  local after = ack == "after_handler"
  local busy_ttl = o.busy_ttl or M.BUSY_TTL
  if type(busy_ttl) ~= "number" or busy_ttl <= 0 then error("kinot: busy_ttl must be a positive number of seconds", 3) end
  -- nginx's cached clock: no system call, and the JIT compiles it
  if o.clock == nil and ngx and ngx.time then o.clock = ngx.time end
  local ttl = o.dedupe_ttl or 3600
  local store
  if gate then
    store = { claim = function() return true end } -- Redis dedupes (kinot.callback.shared); see settled()
  elseif o.dedupe ~= nil then
    if type(o.dedupe) ~= "string" then
      error("kinot: dedupe must name a lua_shared_dict or be { redis = url, ttl = s }", 3)
    end
    if ngx and ngx.shared then
      store = dict_store(o.dedupe, ttl, busy_ttl, after)
      o.order_dict = store.dict -- each device's newest updated_at, shared by the workers too
    end
  end
  if not store then
    store = local_store(recent.new(o.dedupe_capacity or 10000, ttl, o.clock), busy_ttl, after)
  end
  o.seen = gate and gate.pass or store
  local rcv = receiver.new(o)
  if o.verify == "monitor" and ngx and ngx.log then
    ngx.log(ngx.WARN, "kinot callback handler with verify = \"monitor\": callbacks that fail verification reach ",
      "the handlers (ev.verified = false); anyone can forge them until it is turned off")
  end
  local max_body = rcv.max_body
  local hand_over = not after and dispatcher(rcv, M.MAX_RUNNERS)

  -- ack = "after_handler": the answer is the handler's outcome
  local function handle(ev)
    local key = ev.id
    local token, state = store:claim(key)
    if not token then
      if state == "done" then return 200, OK_BODY end
      ngx.header["Retry-After"] = "5"
      return 503, BUSY_BODY
    end
    local ok, why = outcome(rcv:dispatch(ev))
    if ok then
      store:commit(key)
      return 200, OK_BODY
    end
    store:release(key, token)
    log_failure(ev, why)
    return 500, FAILED_BODY
  end

  -- ack = "after_handler" over Redis dedupe: the gate has claimed the
  -- delivery; the handler runs, and the claim is settled by its outcome
  local function settled(ev)
    local ok, why = outcome(rcv:dispatch(ev))
    gate:settle(ev, ok)
    if ok then return 200, OK_BODY end
    log_failure(ev, why)
    return 500, FAILED_BODY
  end

  return function()
    ngx.header["Content-Type"] = "application/json"
    if ngx.req.get_method() ~= "POST" then
      ngx.status = 405
      return ngx.print('{"code":405,"message":"callbacks are POSTed"}')
    end
    local body, why = read_body(max_body)
    local status, answer, ev, err
    if not body then
      status = why == "too_large" and 413 or 400
      answer = '{"code":' .. status .. ',"message":"callback body ' ..
        (why == "too_large" and ("over the " .. max_body .. "-byte cap") or "could not be read") .. '"}'
    else
      status, answer, ev, err = rcv:receive(body)
      -- verify = "monitor": say so for every body let through unverified
      if ev and ev.verified == false then
        ngx.log(ngx.WARN, "kinot callback accepted UNVERIFIED (verify = \"monitor\"), sn ",
          (tostring(ev.sn):sub(1, 40):gsub("%c", "?")), ": ", err and err.message or "sign not checked")
      end
      -- (one line per message, whatever a member name held)
      if err and NOT_HANDLED[err.reason] then ngx.log(ngx.WARN, (err.message:gsub("%c", "?"))) end
      if ev and gate then
        status, answer, ev = gate:accept(body, ev)
        if ev and after then status, answer, ev = settled(ev) end
      elseif ev and after then
        status, answer, ev = handle(ev)
      end
    end
    ngx.status = status
    ngx.print(answer)
    if ev then hand_over(ev) end
  end
end

return M
