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
local stores = require "kinot.callback.stores"
local errors = require "kinot.errors"
local validate = require "kinot.validate"

local ngx = ngx -- luacheck: ignore
local M = {}

-- at most this many handlers run at once per handler (ack = "immediate")
M.MAX_RUNNERS = 64
-- a runner starts this long after the event that needs it, so that under
-- load one timer takes a whole batch (setting up a timer costs about as
-- much as verifying a callback); the platform has had its answer already
M.BATCH_DELAY = 0.001
M.BUSY_TTL = stores.BUSY_TTL

local function log_failure(ev, why)
  ngx.log(ngx.ERR, "kinot callback handler failed for sn ", tostring(ev.sn), ": ", tostring(why))
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
    local ok, why = rcv:dispatch(ev)
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
-- the callback handler failed (500), the store could not say (503)
local LOGGED = { handler_failed = true, unavailable = true }

local OPTIONS = validate.set(receiver.OPTIONS)
OPTIONS.metrics = true -- a kinot.metrics registry (kinot.metrics.callback): the handler's, not the receiver's

function M.new(opts)
  if type(opts) ~= "table" then errors.misuse("callback.handler needs a table of options") end
  validate.options(opts, OPTIONS, "callback.handler")
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.inbox ~= nil then
    if o.ack ~= nil then
      errors.misuse("ack does not apply with an inbox: its 200 means the event is stored, and kinot.callback.worker " ..
        "runs the handlers")
    end
    if o.on_status ~= nil or o.on_command ~= nil or o.fleet ~= nil then
      errors.misuse("with an inbox, on_status, on_command and fleet belong to kinot.callback.worker, not the handler")
    end
    o.ack = "immediate" -- stored is acknowledged; nothing runs here
  end
  if o.ack == nil then o.ack = "after_handler" end
  o.metrics = nil
  local after = o.ack == "after_handler"
  -- nginx's cached clock: no system call, and the JIT compiles it
  if o.clock == nil and ngx and ngx.time then o.clock = ngx.time end
  local rcv = receiver.new(o, "callback.handler")
  if o.verify == "monitor" and ngx and ngx.log then
    ngx.log(ngx.WARN, "kinot callback handler with verify = \"monitor\": callbacks that fail verification reach ",
      "the handlers (ev.verified = false); anyone can forge them until it is turned off")
  end
  local max_body = rcv.max_body
  local observe = opts.metrics and require("kinot.metrics.callback").instrument(opts.metrics, rcv)
  local hand_over = not after and (o.on_status or o.on_command or o.fleet) and dispatcher(rcv, M.MAX_RUNNERS)

  return function()
    ngx.header["Content-Type"] = "application/json"
    if ngx.req.get_method() ~= "POST" then
      ngx.status = 405
      return ngx.print('{"code":405,"message":"callbacks are POSTed"}')
    end
    local body, why = read_body(max_body)
    local status, answer, ev, err, dup
    if not body then
      status = why == "too_large" and 413 or 400
      answer = '{"code":' .. status .. ',"message":"callback body ' ..
        (why == "too_large" and ("over the " .. max_body .. "-byte cap") or "could not be read") .. '"}'
    else
      status, answer, ev, err, dup = rcv:receive(body)
      -- verify = "monitor": say so for every body let through unverified
      if ev and ev.verified == false then
        ngx.log(ngx.WARN, "kinot callback accepted UNVERIFIED (verify = \"monitor\"), sn ",
          (tostring(ev.sn):sub(1, 40):gsub("%c", "?")), ": ", err and err.message or "sign not checked")
      end
      -- (one line per message, whatever a member name held)
      if err and NOT_HANDLED[err.reason] then ngx.log(ngx.WARN, (err.message:gsub("%c", "?"))) end
      if err and LOGGED[err.reason] then ngx.log(ngx.ERR, "kinot ", (err.message:gsub("%c", "?"))) end
    end
    if status == 503 then ngx.header["Retry-After"] = "5" end
    -- (200 is nginx's own: setting ngx.status is a C call the JIT cannot compile)
    if status ~= 200 then ngx.status = status end
    ngx.print(answer)
    if observe then observe(status, ev, err, dup, why) end
    if ev and hand_over and status == 200 then hand_over(ev) end
  end
end

return M
