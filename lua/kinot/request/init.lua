-- One API call, read top to bottom, one step a file:
--   build.lua     the call -> the transport's request, signed
--   (transport)   client.transport.send / stream
--   classify.lua  the response or the transport's failure -> document | error table
--   retry.lua     a failed attempt -> go again (when, after how long) or stop
-- and here the loop that runs them, with the events (on_event).  Entry
-- points: perform (one call, retried), stream (calls kept in flight, a new
-- one as one ends: the transport's concurrent path), perform_many (a list
-- of calls at once over stream), send (one attempt, raw: client:request).
local build = require "kinot.request.build"
local classify = require "kinot.request.classify"
local retry = require "kinot.request.retry"
local redact = require "kinot.redact"
local errors = require "kinot.errors"

local M = {}

local pairs, pcall = pairs, pcall

-- the names the rest of the SDK (and its specs and benchmarks) reach here
M.USER_AGENT = build.USER_AGENT
M.pct = build.pct
M.build = build.build
M.http_date_ms = classify.http_date_ms
M.decode = classify.response
M.transport_error = classify.transport_error
M.unknown_outcome = classify.unknown_outcome

local header = classify.header

-- ---------------------------------------------------------------- events

local REDACTED = "<redacted>"
local function redacted_headers(h)
  local out = {}
  for k, v in pairs(h) do out[k] = v end
  out["X-Ca-Signature"] = REDACTED
  return out
end

-- events are built only when someone listens: callers check client.on_event
local function emit(client, ev)
  pcall(client.on_event, ev)
end

-- ---------------------------------------------------------------- entry points

--- send(client, call) -> response {status, headers, body}, signed | nil, err
-- One attempt: build, sign, send; the answer is not classified.
function M.send(client, call)
  local req, signed = build.build(client, call)
  local res, kind, message, not_sent = client.transport.send(req)
  if not res then
    local err = classify.transport_error(kind, message, not_sent, client.origin)
    if not classify.safe_method(call.method) and classify.outcome_unknown(err) then
      err = classify.unknown_outcome(call, err)
    end
    return nil, err
  end
  return res, signed
end

--- perform(client, call) -> decoded document | nil, err
-- call.idempotent: false for POST /commands (docs/transports.md)
function M.perform(client, call)
  local transport = client.transport
  local state = { attempt = 0, max_attempts = 1 + client.retries, skew_retried = false, answered = false }
  while true do
    state.attempt = state.attempt + 1
    local attempt = state.attempt
    -- 1. build
    local req, signed = build.build(client, call)
    local hook = client.on_event
    if hook then
      emit(client, { type = "request", attempt = attempt, method = req.method, url = redact.url(req.url),
                     headers = redacted_headers(req.headers) })
    end
    -- 2. send
    local mx = client.metrics
    local started = (hook or mx) and transport.now()
    local res, kind, message, not_sent = transport.send(req)
    if mx then mx:attempt(call, res and res.status, transport.now() - started) end
    -- 3. classify
    local doc, err
    if res then
      if hook then
        emit(client, { type = "response", attempt = attempt, method = req.method, url = redact.url(req.url),
                       status = res.status, request_id = header(res, "x-ca-request-id"),
                       elapsed = transport.now() - started })
      end
      doc, err = classify.response(res, signed, call)
      if doc then
        if mx then mx:answered(call, doc) end
        return doc
      end
    else
      err = classify.transport_error(kind, message, not_sent, client.origin)
    end
    err.attempts = attempt
    -- 4. retry or stop
    state.answered = res ~= nil
    local action, delay = retry.decide(client, call, err, state)
    if action == "clock" then
      -- a refused timestamp: learn the server's clock once and go again
      state.skew_retried = true
      retry.learn_clock(client, res)
      if hook then emit(client, { type = "retry", attempt = attempt, reason = "clock skew", delay = 0, error = err.kind }) end
      state.max_attempts = state.max_attempts + 1
    elseif action == "unknown" then
      if mx then mx:unknown_outcome(call) end
      return nil, classify.unknown_outcome(call, err)
    elseif action == "stop" then
      err.timestamp_error = nil
      return nil, err
    else
      if mx then mx:retry(call) end
      if hook then emit(client, { type = "retry", attempt = attempt, reason = err.message, error = err.kind, delay = delay }) end
      transport.sleep(delay)
    end
  end
end

-- one attempt's answer in a stream (a response or the transport's
-- {error, message, not_sent}) -> doc | nil, err.  A command whose outcome
-- is unknown keeps perform's rule: it may have arrived.
local function answer_of(client, transport, call, signed, req, r, started)
  local doc, err
  local mx = client.metrics
  if mx then mx:attempt(call, not r.error and r.status or nil, started and transport.now() - started) end
  if r.error then
    err = classify.transport_error(r.error, r.message, r.not_sent, client.origin)
  else
    if client.on_event then
      emit(client, { type = "response", attempt = 1, method = req.method, url = redact.url(req.url),
                     status = r.status, request_id = header(r, "x-ca-request-id"),
                     elapsed = transport.now() - started })
    end
    doc, err = classify.response(r, signed, call)
  end
  if doc then
    if mx then mx:answered(call, doc) end
    return doc
  end
  err.attempts = 1
  if not call.idempotent and classify.outcome_unknown(err) then
    if mx then mx:unknown_outcome(call) end
    return nil, classify.unknown_outcome(call, err)
  end
  return nil, err
end

-- a transport without a stream of its own: one request at a time
local function stream_one_by_one(transport)
  return function(_, take, done)
    while true do
      local reqs, delay = take(1)
      local req = reqs[1]
      if req then
        local res, kind, message, not_sent = transport.send(req)
        done(req, res or { error = kind, message = message, not_sent = not_sent })
      elseif delay then
        transport.sleep(delay)
      else
        return
      end
    end
  end
end

--- stream(client, slots, take, on_answer): calls, up to `slots` at once,
-- each slot given the next call as soon as its last one ended (no round
-- waits for its slowest).  take(free) -> {call...} (at most free), delay:
-- the calls to start now; asked again when one ends, or after `delay`
-- seconds at the latest (nil: only when one ends; with none running, the
-- stream is over).  Each call is built and signed in take's turn, right
-- before it goes.  on_answer(call, doc, err): its one attempt, not retried
-- (the caller decides what goes again, and when); a call that is not
-- idempotent and may have arrived answers unknown_outcome.  The transport's
-- stream (curl: curl-multi; resty: nginx light threads), or one at a time.
-- wake(poke), optional: given a function that makes the stream call take
-- now, where the transport waits apart from its caller (resty: the pager's
-- caller frees room in another light thread); not called elsewhere.
function M.stream(client, slots, take, on_answer, wake)
  if not client.signer then errors.misuse("client is closed") end
  local transport = client.transport
  local pending = {} -- req -> {call, signed, started}
  local closed = false
  local function take_reqs(free)
    -- a client closed meanwhile (by on_answer, say): nothing more goes, the
    -- calls out are read (the transport lets go of the handle after them)
    if not client.signer then closed = true end
    if closed then return {} end
    local calls, delay = take(free)
    if not client.signer then closed = true end -- (closed inside take)
    local reqs = {}
    for k = 1, #calls do
      if not client.signer then errors.misuse("client is closed") end
      local call = calls[k]
      local req, signed = build.build(client, call)
      if client.on_event then
        emit(client, { type = "request", attempt = 1, method = req.method, url = redact.url(req.url),
                       headers = redacted_headers(req.headers) })
      end
      pending[req] = { call, signed, (client.on_event or client.metrics) and transport.now() }
      reqs[k] = req
    end
    return reqs, delay
  end
  local function done(req, r)
    local p = pending[req]
    pending[req] = nil
    on_answer(p[1], answer_of(client, transport, p[1], p[2], req, r, p[3]))
  end
  local run = transport.stream or stream_one_by_one(transport)
  run(slots, take_reqs, done, wake)
  if closed then errors.misuse("client is closed") end
end

--- perform_many(client, calls[, opts]) -> list of {doc} | {nil, err}, the
-- calls all at once over the transport's stream (or one by one, each
-- under perform's retry policy, without one).  opts.requeue: a retryable
-- failure comes back as it is, for the caller to send again later,
-- instead of going again alone at once.
function M.perform_many(client, calls, opts)
  local requeue = opts and opts.requeue
  if not client.signer then errors.misuse("client is closed") end
  local transport = client.transport
  if not transport.stream or #calls <= 1 then
    local out = {}
    for i = 1, #calls do out[i] = { M.perform(client, calls[i]) } end
    return out
  end
  local at, given = {}, false -- call -> its positions (the same call twice answers in turn)
  for i = 1, #calls do
    local c = calls[i]
    at[c] = at[c] or {}
    at[c][#at[c] + 1] = i
  end
  local out = {}
  M.stream(client, #calls, function()
    if given then return {} end
    given = true
    return calls
  end, function(call, doc, err)
    local i = table.remove(at[call], 1)
    out[i] = { doc, err }
  end)
  for i = 1, #calls do
    local err = out[i][2]
    if err and err.kind ~= "unknown_outcome" and not (requeue and err.retryable) and retry.alone(err) then
      -- a failed page goes again alone, under the full retry policy
      out[i] = { M.perform(client, calls[i]) }
      if out[i][2] then out[i][2].attempts = out[i][2].attempts + 1 end
    end
  end
  return out
end

return M
