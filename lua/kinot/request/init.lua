-- One API call, read top to bottom, one step a file:
--   build.lua     the call -> the transport's request, signed
--   (transport)   client.transport.send / send_many
--   classify.lua  the response or the transport's failure -> document | error table
--   retry.lua     a failed attempt -> go again (when, after how long) or stop
-- and here the loop that runs them, with the events (on_event).  Entry
-- points: perform (one call, retried), perform_many (a round of GETs over
-- the transport's batch path), send (one attempt, raw: client:request).
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
    local started = hook and transport.now()
    local res, kind, message, not_sent = transport.send(req)
    -- 3. classify
    local doc, err
    if res then
      if hook then
        emit(client, { type = "response", attempt = attempt, method = req.method, url = redact.url(req.url),
                       status = res.status, request_id = header(res, "x-ca-request-id"),
                       elapsed = transport.now() - started })
      end
      doc, err = classify.response(res, signed, call)
      if doc then return doc end
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
      return nil, classify.unknown_outcome(call, err)
    elseif action == "stop" then
      err.timestamp_error = nil
      return nil, err
    else
      if hook then emit(client, { type = "retry", attempt = attempt, reason = err.message, error = err.kind, delay = delay }) end
      transport.sleep(delay)
    end
  end
end

--- perform_many(client, calls[, opts]) -> list of {doc} | {nil, err}, one
-- round of concurrent calls over the transport's batch path (or one by one
-- without it).  opts.requeue: a retryable failure comes back as it is, for
-- the caller to send again in a later round (kinot.batch: its waits and its
-- pace are the batch's), instead of going again alone at once.
function M.perform_many(client, calls, opts)
  local requeue = opts and opts.requeue
  if not client.signer then errors.misuse("client is closed") end
  local transport = client.transport
  if not transport.send_many or #calls <= 1 then
    local out = {}
    for i = 1, #calls do out[i] = { M.perform(client, calls[i]) } end
    return out
  end
  local reqs, signs = {}, {}
  local hook = client.on_event
  for i = 1, #calls do
    reqs[i], signs[i] = build.build(client, calls[i])
    if hook then -- a batch's requests are events too, as perform's are
      emit(client, { type = "request", attempt = 1, method = reqs[i].method, url = redact.url(reqs[i].url),
                     headers = redacted_headers(reqs[i].headers) })
    end
  end
  local started = hook and transport.now()
  local results = transport.send_many(reqs)
  local out = {}
  for i = 1, #calls do
    local r = results[i]
    local doc, err
    if r.error then
      err = classify.transport_error(r.error, r.message, r.not_sent, client.origin)
    else
      if hook then
        emit(client, { type = "response", attempt = 1, method = reqs[i].method, url = redact.url(reqs[i].url),
                       status = r.status, request_id = header(r, "x-ca-request-id"), elapsed = transport.now() - started })
      end
      doc, err = classify.response(r, signs[i], calls[i])
    end
    if doc then
      out[i] = { doc }
    elseif not calls[i].idempotent and classify.outcome_unknown(err) then
      -- a command in a batch keeps perform's rule: it may have arrived
      out[i] = { nil, classify.unknown_outcome(calls[i], err) }
    elseif requeue and err.retryable then
      out[i] = { nil, err }
    elseif retry.alone(err) then
      -- a failed page goes again alone, under the full retry policy
      out[i] = { M.perform(client, calls[i]) }
      if out[i][2] then out[i][2].attempts = out[i][2].attempts + 1 end
    else
      out[i] = { nil, err }
    end
  end
  return out
end

return M
