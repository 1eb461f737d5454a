-- Step 3 of a call (kinot.request): the retry policy of docs/transports.md,
-- as a decision on one failed attempt.  What may go again: a retryable
-- error (network, timeout, throttled, 5xx, a nonce refusal, an answer that
-- is not JSON) while attempts remain, and for a request that is not
-- idempotent only when it provably never left (not_sent); one whose
-- outcome is unknown is never sent again.  A refused timestamp: the
-- server's clock is learnt from its Date and the request goes again at
-- once, once per call, beside the retries.  Waits: the server's
-- Retry-After (none above max_retry_after), or exponential backoff with
-- equal jitter.
local core = require "kinot.core_loader"
local classify = require "kinot.request.classify"

local M = {}

local random = math.random

--- backoff(policy, attempt, after[, rand]) -> seconds to wait before attempt + 1
-- policy = { backoff = { base, max } } (a client); after: the server's
-- Retry-After, taken as it is; rand: math.random by default
function M.backoff(policy, attempt, after, rand)
  if after then return after end
  local base = policy.backoff.base * 2 ^ (attempt - 1)
  if base > policy.backoff.max then base = policy.backoff.max end
  return base / 2 + (rand or random)() * base / 2 -- "equal jitter": never zero, never all at once
end

--- decide(policy, call, err, state) -> action[, delay]
-- policy: the client (retries are counted in state, max_retry_after and
-- backoff read here); call.idempotent; err: the attempt's error table;
-- state = { attempt, max_attempts, skew_retried, answered (a response
-- came back, so its Date can be read) }.  Actions:
--   "clock"    learn the server's clock (learn_clock) and go again at once
--   "unknown"  stop: classify.unknown_outcome(call, err) is the answer
--   "again"    wait `delay` seconds, then go again
--   "stop"     stop: err is the answer
function M.decide(policy, call, err, state, rand)
  if err.timestamp_error and not state.skew_retried and state.answered then return "clock" end
  -- a command must never reach a device twice because of us: it may have
  -- arrived, so it is not sent again, and the caller is told so
  if not call.idempotent and classify.outcome_unknown(err) then return "unknown" end
  local allowed = err.retryable and state.attempt < state.max_attempts
  -- not idempotent: sent again only when it provably never left
  if allowed and not call.idempotent then allowed = err.not_sent == true end
  if allowed and err.retry_after and err.retry_after > policy.max_retry_after then allowed = false end
  if not allowed then return "stop" end
  return "again", M.backoff(policy, state.attempt, err.retry_after, rand)
end

--- learn_clock(client, res): the client's clock offset from the response's Date
function M.learn_clock(client, res)
  local server = classify.http_date_ms(classify.header(res, "date"))
  if server then client.clock_offset_ms = server - core.now_ms() end
end

--- alone(err) -> whether a call that failed in a batch goes again by
-- itself, under the whole policy (perform): when its error is retryable
-- or a refused timestamp
function M.alone(err)
  return err.retryable or err.timestamp_error and true or false
end

return M
