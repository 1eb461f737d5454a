-- client:send_commands(items, opts): many commands, each device commanded
-- at most once (docs/api.md "send_commands").  The batch streams over the
-- one concurrent path there is (request.stream: libcurl's multi interface;
-- nginx light threads inside nginx; one call after another where the
-- transport has neither): up to `limit` calls out at once, the commands to
-- send and the polls of those sent (wait), and each time calls end the
-- stream asks for the next (take): the commands that go are journaled
-- together, durably, before any is written, and what came back is
-- journaled as it is read (on_answer).  Its pace: `rate` commands a second
-- at most; `limit` starts at `concurrency`, halves when the platform
-- throttles (once for the commands that were out together) and grows by
-- one each `limit` answers that were not throttled, and after a throttled
-- answer no command goes before its Retry-After.  A command whose outcome
-- is unknown is never sent again (docs/RELIABILITY.md); one refused with
-- 429 was not acted on (the answer says so) and goes again later.
local request = require "kinot.request"
local retry = require "kinot.request.retry"
local validate = require "kinot.validate"
local errors = require "kinot.errors"
local json = require "kinot.json"
local INT_LIMIT = require("kinot.vocabulary").INT_LIMIT -- 2^53: a count held exactly
local journal_mod = require "kinot.batch.journal"

local M = {}

local misuse = errors.misuse
local floor, min, max = math.floor, math.min, math.max

local OPTIONS = validate.set { "parameter", "concurrency", "rate", "wait", "wait_timeout", "abort_after",
                               "on_progress", "journal" }
-- a ratio of failures decides once this many items are done (or all are)
local RATIO_SAMPLE = 10
-- throttled answers one command may get before it fails as throttled
local MAX_THROTTLED = 50
local FINAL = { succeeded = true, failed = true }
local drive, heap_push, heap_pop

-- items -> plan { {sn, value} ... }; a serial twice is refused: it would be
-- commanded twice
local function plan_of(items, parameter)
  if type(items) ~= "table" then misuse("send_commands expects a list of serials or {sn, value} items") end
  local plan, seen = {}, {}
  local n = #items
  for i = 1, n do
    local it, value = items[i], parameter.value
    local sn
    if type(it) == "table" then
      sn = it.sn
      if sn == nil then sn = it[1] end
      if it.value ~= nil then value = it.value elseif it[2] ~= nil then value = it[2] end
    else
      sn = it
    end
    sn = validate.sn(sn, "items[" .. i .. "]")
    if value == nil then misuse("items[" .. i .. "] has no value, and no parameter = {key, value} gives one") end
    json.check(value, "items[" .. i .. "].value")
    if seen[sn] then
      misuse("sn " .. validate.sn_text(sn) .. " is in the batch twice (items " .. seen[sn] .. " and " .. i ..
        "): a batch commands each device once")
    end
    seen[sn] = i
    plan[i] = { sn = sn, value = value }
  end
  for k in pairs(items) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then
      misuse("items must be a list (a key " .. tostring(k) .. " is not a position in it)")
    end
  end
  return plan
end

local function check_options(opts)
  validate.options(opts, OPTIONS, "send_commands")
  opts = opts or {}
  local parameter = opts.parameter or {}
  if type(parameter) ~= "table" then misuse("parameter must be a table like {key = \"handle\", value = 1}") end
  local key = parameter.key == nil and "handle" or parameter.key
  json.check(key, "parameter.key")
  local concurrency = validate.integer(opts.concurrency or 8, 1, 64)
  if not concurrency then misuse("concurrency must be an integer from 1 to 64 (got " .. tostring(opts.concurrency) .. ")") end
  local rate = opts.rate
  if rate ~= nil and (type(rate) ~= "number" or rate ~= rate or rate <= 0 or rate == math.huge) then
    misuse("rate must be a number of commands a second > 0 (got " .. tostring(rate) .. ")")
  end
  local wait_timeout = validate.positive(opts.wait_timeout, "wait_timeout", true) or 60
  local abort_after = opts.abort_after
  if abort_after ~= nil then
    local ok = type(abort_after) == "number" and abort_after > 0 and
      (abort_after < 1 or validate.integer(abort_after, 1, INT_LIMIT) ~= nil)
    if not ok then
      misuse("abort_after must be a count of failures (an integer >= 1) or a ratio of them (0 < r < 1) (got " ..
        tostring(abort_after) .. ")")
    end
  end
  if opts.on_progress ~= nil and type(opts.on_progress) ~= "function" then misuse("on_progress must be a function") end
  if opts.journal ~= nil and (type(opts.journal) ~= "string" or opts.journal == "") then
    misuse("journal must be a file path")
  end
  return {
    key = key, value = parameter.value, concurrency = concurrency, rate = rate, wait = opts.wait == true,
    wait_timeout = wait_timeout, abort_after = abort_after, on_progress = opts.on_progress, journal = opts.journal,
  }
end

-- the journal's record of a failure, and the error it stands for
local function failed_record(i, err)
  return { i = i, at = "failed", kind = err.kind, message = err.message, status = err.status, code = err.code }
end
local function error_of(rec)
  local kind = errors.KINDS[rec.kind] and rec.kind or "api"
  return errors.new(kind, tostring(rec.message), { status = rec.status, code = rec.code })
end

--- run(client, items, opts, command) -> results, summary | nil, err (the journal cannot be written: nothing sent)
-- command: the client's one definition of a command call
-- { call(sn, key, value), answer(doc) -> cmd | nil, err, poll(guid) }
function M.run(client, items, opts, command)
  local o = check_options(opts)
  local plan = plan_of(items, { value = o.value })
  local journal
  if o.journal then
    local jerr
    journal, jerr = journal_mod.open(o.journal, journal_mod.fingerprint(plan, o.key), #plan, plan)
    if not journal then return nil, jerr end -- the batch cannot start: nothing was sent
  end
  -- the journal's lock goes on every way out, an error raised by on_progress too
  local ok, results, summary = pcall(drive, client, o, plan, command, nil, journal)
  if journal then journal:close() end
  if not ok then error(results, 0) end
  return results, summary
end

local FOLLOW_OPTIONS = validate.set { "concurrency", "wait_timeout", "on_progress" }

--- follow(client, guids, opts, command) -> results, summary: commands
-- already sent, each followed to succeeded or failed (client:wait_commands)
function M.follow(client, guids, opts, command)
  validate.options(opts, FOLLOW_OPTIONS, "wait_commands")
  if type(guids) ~= "table" then misuse("wait_commands expects a list of command guids") end
  local o = check_options { concurrency = opts and opts.concurrency, wait_timeout = opts and opts.wait_timeout,
                            on_progress = opts and opts.on_progress, wait = true }
  local list = {}
  for i = 1, #guids do list[i] = validate.guid(guids[i]) end
  return drive(client, o, nil, command, list)
end

-- the polls' heap (wait): {at, i} entries, the earliest at first
function heap_push(h, i, at)
  local k = h.n + 1
  h.n = k
  while k > 1 do
    local up = floor(k / 2)
    if h[up].at <= at then break end
    h[k] = h[up]
    k = up
  end
  h[k] = { at = at, i = i }
end

function heap_pop(h)
  local top, last, n = h[1], h[h.n], h.n - 1
  h[h.n], h.n = nil, n
  if n > 0 then
    local k = 1
    while true do
      local c = 2 * k
      if c > n then break end
      if c < n and h[c + 1].at < h[c].at then c = c + 1 end
      if h[c].at >= last.at then break end
      h[k] = h[c]
      k = c
    end
    h[k] = last
  end
  return top.i
end

-- the stream: plan (commands to send) or guids (commands to follow)
function drive(client, o, plan, command, guids, journal)
  local n = plan and #plan or #guids
  local transport = client.transport
  local now = transport.now
  local started = now()

  local results, summary = {}, {
    total = n, sent = 0, succeeded = 0, failed = 0, unknown = 0, skipped = 0, pending = 0,
    throttled = 0, resumed = 0, aborted = false, concurrency = o.concurrency,
  }
  local queue, qhead = {}, 1 -- items to send, in order (a throttled one goes to `later`)
  local later = {}           -- {i, at}: sent again at or after `at`
  local polls = { n = 0 }    -- created, followed until final (wait): a heap of {at, i}, the next due first

  local function outcome(i, what)
    local r = results[i]
    if r.outcome == "sent" then summary.pending = summary.pending - 1 end
    r.outcome = what
    if what == "sent" then summary.pending = summary.pending + 1
    elseif what == "succeeded" then summary.succeeded = summary.succeeded + 1
    elseif what == "failed" then summary.failed = summary.failed + 1
    elseif what == "unknown" then summary.unknown = summary.unknown + 1
    elseif what == "skipped" then summary.skipped = summary.skipped + 1 end
  end

  local function follow(i, at)
    local r = results[i]
    r.next_poll, r.interval, r.deadline = at, 0.5, (r.deadline or (at + o.wait_timeout))
    heap_push(polls, i, at)
  end

  for i = 1, n do
    results[i] = plan and { sn = plan[i].sn, value = plan[i].value, attempts = 0 } or { guid = guids[i], attempts = 0 }
  end


  -- what an earlier run of this batch came to
  local t = now()
  for i = 1, guids and n or 0 do
    outcome(i, "sent")
    follow(i, t)
  end
  for i = 1, plan and n or 0 do
    local rec = journal and journal.found[i]
    local r = results[i]
    if not rec or rec.at == "not_sent" then
      queue[#queue + 1] = i
    else
      summary.resumed = summary.resumed + 1
      r.resumed = true
      if rec.at == "sending" or rec.at == "unknown" then
        r.error = errors.new("unknown_outcome", "POST /commands for sn " .. validate.sn_text(r.sn) ..
          ": an earlier run of this batch " .. (rec.at == "sending"
            and "stopped after journaling this command and before reading its answer"
            or "could not tell whether the platform acted on it (" .. tostring(rec.cause) .. ")") ..
          "; it was not sent again. Read the device (client:locker(sn) / client:sensor(sn)) before sending it again",
          { cause = rec.cause or "interrupted" })
        outcome(i, "unknown")
      elseif rec.at == "failed" then
        r.error = error_of(rec)
        outcome(i, "failed")
      elseif rec.at == "created" or rec.at == "final" then
        r.guid, r.command_status, r.reason = rec.guid, rec.status, rec.reason
        if rec.at == "final" then
          outcome(i, rec.status == "succeeded" and "succeeded" or "failed")
        elseif o.wait then
          outcome(i, "sent")
          follow(i, t)
        else
          outcome(i, "sent")
        end
      else
        queue[#queue + 1] = i -- a record this version does not know: treated as none
      end
    end
  end

  -- (the queue is emptied from its head: its length is counted here, as
  -- `#` is undefined for a table with holes)
  local qtail = #queue
  local limit = o.concurrency
  local hold_until = 0  -- no command before this (Retry-After)
  local sent_now = 0    -- commands sent in this run (the rate counts them)
  local stop_reason     -- once set, nothing more is sent
  local inflight = 0    -- calls out (sends and polls); at most `limit`
  local item_of, kind_of, seq_of = {}, {}, {} -- a call out -> its item, "send" | "poll", its send's number
  local seq, cut_at, grown = 0, 0, 0 -- sends so far; the last one out when the limit halved; answers since it grew
  local records = {}    -- outcomes read, for the journal's next write
  local dirty = false   -- answers since on_progress was last called
  local raised          -- what on_progress raised: nothing more goes out, the calls out are read, then it goes on

  local function failures() return summary.failed + summary.unknown end
  local function check_abort()
    if stop_reason or not o.abort_after then return end
    local bad = failures()
    if o.abort_after >= 1 then
      if bad >= o.abort_after then stop_reason = "abort_after: " .. bad .. " failures" end
    else
      local done = summary.succeeded + summary.failed + summary.unknown + (o.wait and 0 or summary.pending)
      if done >= min(RATIO_SAMPLE, n) and bad / done >= o.abort_after then
        stop_reason = string.format("abort_after: %d of %d failed (%.0f%%)", bad, done, 100 * bad / done)
      end
    end
  end

  local function progress()
    dirty = false
    if o.on_progress and not raised then
      local ok, e = pcall(o.on_progress, { total = n, sent = summary.sent, succeeded = summary.succeeded,
        failed = summary.failed, unknown = summary.unknown, skipped = summary.skipped, pending = summary.pending,
        concurrency = limit })
      if not ok then raised = e end
    end
  end
  check_abort()

  -- nothing more goes out; the polls of those sent go on
  local function skip_rest()
    for k = qhead, qtail do
      local i = queue[k]
      queue[k] = nil
      results[i].error = errors.new("api", "not sent: the batch stopped (" .. stop_reason .. ")")
      outcome(i, "skipped")
    end
    qhead = qtail + 1
    for _, l in ipairs(later) do
      results[l.i].error = errors.new("api", "not sent: the batch stopped (" .. stop_reason .. ")")
      outcome(l.i, "skipped")
    end
    later = {}
  end

  -- the journal's next write: the outcomes read since the last, and the
  -- "sending" records of the commands about to go, on the disk (one fsync
  -- for all that go together) before any of them is written
  local function journal_write(sync)
    if not journal or #records == 0 then records = {} return true end
    local ok, jerr = journal:write(records, sync)
    records = {}
    if not ok and not stop_reason then stop_reason = jerr.message end
    return ok, jerr
  end

  -- the stream asks for what goes next each time calls end (and when the
  -- delay it was given has passed): due polls first, then commands, as
  -- many as the free slots, `limit`, the rate and a Retry-After allow
  local function take(free)
    -- the answers read so far go to the journal, then on_progress sees them
    journal_write(false)
    if dirty then progress() end
    -- (on_progress raised, or closed the client: nothing more goes out)
    if raised or not client.signer then return {} end
    t = now()
    if stop_reason then skip_rest() end
    local room = min(free, limit - inflight)
    local calls, next_at = {}, nil
    local function due(at) if not next_at or at < next_at then next_at = at end end
    -- 1. polls that are due
    -- (a Retry-After holds the polls too)
    while #calls < room and polls.n > 0 and polls[1].at <= t and hold_until <= t do
      local i = heap_pop(polls)
      local call = command.poll(results[i].guid)
      calls[#calls + 1], item_of[call], kind_of[call] = call, i, "poll"
    end
    if polls.n > 0 then due(max(polls[1].at, hold_until)) end
    -- 2. commands
    local allowed = room - #calls
    local sends = {}
    if allowed > 0 and (qhead <= qtail or #later > 0) then
      if o.rate then
        local tokens = floor(o.rate * (t - started)) + 1 - sent_now
        if tokens < 1 then due(started + sent_now / o.rate) end
        allowed = min(allowed, tokens)
      end
      if hold_until > t then
        due(hold_until)
        allowed = 0
      end
      if #later > 0 then -- those waiting for their turn again, first
        local keep = {}
        for _, l in ipairs(later) do
          if #sends < allowed and l.at <= t then sends[#sends + 1] = l.i
          else keep[#keep + 1] = l; due(max(l.at, hold_until)) end
        end
        later = keep
      end
      while #sends < allowed and qhead <= qtail do
        sends[#sends + 1] = queue[qhead]
        queue[qhead] = nil
        qhead = qhead + 1
      end
    end
    -- 3. journal the commands, durably (one fsync for all), before any is written
    if #sends > 0 and journal then
      for _, i in ipairs(sends) do records[#records + 1] = { i = i, sn = plan[i].sn, at = "sending" } end
      local ok, jerr = journal_write(true)
      if not ok then
        -- none of these is sent; the batch stops
        for _, i in ipairs(sends) do
          results[i].error = jerr
          outcome(i, "skipped")
        end
        sends = {}
      end
    end
    for _, i in ipairs(sends) do
      local call = command.call(plan[i].sn, o.key, plan[i].value)
      results[i].attempts = results[i].attempts + 1
      sent_now, summary.sent, seq = sent_now + 1, summary.sent + 1, seq + 1
      calls[#calls + 1], item_of[call], kind_of[call], seq_of[call] = call, i, "send", seq
    end
    inflight = inflight + #calls
    -- asked again when a call ends, or when the next thing falls due
    if #calls < room and next_at then return calls, max(0.001, next_at - t) end
    return calls
  end

  -- 4. the pace: halve when throttled (once for the commands that were out
  -- together), and hold every command until its Retry-After; one more each
  -- `limit` commands sent since and answered without
  local function throttled(call, wait)
    if (seq_of[call] or seq) > cut_at then -- (a poll: as if sent now)
      limit = max(1, floor(limit / 2))
      cut_at, grown = seq, 0
    end
    hold_until = max(hold_until, t + wait)
  end
  local function not_throttled(call)
    if limit < o.concurrency and seq_of[call] > cut_at then -- (sent after the cut: the new pace's own)
      grown = grown + 1
      if grown >= limit then limit, grown = limit + 1, 0 end
    end
  end

  -- each answer, as it comes
  local function on_answer(call, doc, err)
    local i, kind = item_of[call], kind_of[call]
    local r = results[i]
    inflight, dirty, t = inflight - 1, true, now()
    if kind == "send" then
      local cmd
      if doc then cmd, err = command.answer(doc) end
      if cmd then
        r.guid, r.command_status, r.reason, r.error = cmd.guid, cmd.command_status, cmd.reason, nil
        records[#records + 1] = { i = i, at = "created", guid = cmd.guid, status = cmd.command_status }
        outcome(i, "sent")
        if o.wait then
          if FINAL[cmd.command_status] then
            outcome(i, cmd.command_status)
            records[#records + 1] = { i = i, at = "final", guid = cmd.guid, status = cmd.command_status,
                                      reason = cmd.reason }
          else
            follow(i, t + 0.5)
          end
        end
        not_throttled(call)
      elseif err.kind == "unknown_outcome" then
        r.error = err
        records[#records + 1] = { i = i, at = "unknown", cause = err.cause }
        outcome(i, "unknown")
        not_throttled(call)
      elseif err.kind == "throttled" then
        -- an answer that refuses: the platform did not act on it
        summary.throttled = summary.throttled + 1
        r.throttles = (r.throttles or 0) + 1
        local wait = err.retry_after
        if wait and wait > client.max_retry_after or r.throttles > MAX_THROTTLED then
          r.error = err
          records[#records + 1] = failed_record(i, err)
          outcome(i, "failed")
          throttled(call, 0)
        else
          wait = wait or retry.backoff(client, min(r.throttles, 6))
          records[#records + 1] = { i = i, at = "not_sent" }
          later[#later + 1] = { i = i, at = t + wait }
          throttled(call, wait)
        end
      else
        local action, delay = retry.decide(client, call, err,
          { attempt = r.attempts, max_attempts = 1 + client.retries, skew_retried = true, answered = false })
        if action == "again" then
          records[#records + 1] = { i = i, at = "not_sent" }
          later[#later + 1] = { i = i, at = t + delay }
        elseif action == "unknown" then
          r.error = request.unknown_outcome(call, err)
          records[#records + 1] = { i = i, at = "unknown", cause = err.kind }
          outcome(i, "unknown")
        else
          r.error = err
          records[#records + 1] = failed_record(i, err)
          outcome(i, "failed")
        end
        not_throttled(call)
      end
    else -- a poll
      local cmd, final
      if doc then cmd, err = command.answer(doc) end
      if cmd then
        r.command_status, r.reason, r.error = cmd.command_status, cmd.reason, nil
        if FINAL[cmd.command_status] then
          final = true
          outcome(i, cmd.command_status)
          records[#records + 1] = { i = i, at = "final", guid = r.guid, status = cmd.command_status,
                                    reason = cmd.reason }
        end
      elseif err.kind == "throttled" then
        -- the batch slows down for a throttled poll as for a command
        summary.throttled = summary.throttled + 1
        throttled(call, err.retry_after and min(err.retry_after, client.max_retry_after) or 0)
      elseif not err.retryable then
        final = true -- it was created; what became of it, the platform does not say
        r.error = err
      end
      if not final then
        if t >= r.deadline then
          r.error = errors.new("timeout", "command " .. tostring(r.guid) .. " still " ..
            tostring(r.command_status) .. " after " .. o.wait_timeout .. " s", { retryable = true })
        else
          r.next_poll = min(t + r.interval, r.deadline)
          r.interval = min(r.interval * 1.5, 5)
          heap_push(polls, i, r.next_poll)
        end
      end
    end
    item_of[call], kind_of[call], seq_of[call] = nil, nil, nil
    check_abort()
  end

  -- the batch, over the one concurrent path (request.stream); what was
  -- read goes to the journal whichever way it ends
  local streamed, serr = pcall(request.stream, client, o.concurrency, take, on_answer)
  journal_write(false)
  if not streamed then
    if journal then journal:sync() end
    error(serr, 0)
  end
  if stop_reason then skip_rest() end
  if dirty then progress() end

  for i = 1, n do
    local r = results[i]
    r.next_poll, r.interval, r.deadline, r.throttles = nil, nil, nil, nil
    if r.outcome == "unknown" then
      summary.unknown_sns = summary.unknown_sns or {}
      summary.unknown_sns[#summary.unknown_sns + 1] = r.sn
    end
  end
  if journal then
    local ok, jerr = journal:sync()
    if not ok and not stop_reason then stop_reason = jerr.message end
  end
  if raised then error(raised, 0) end
  summary.aborted = stop_reason or false
  summary.elapsed = now() - started
  summary.concurrency = limit
  return results, summary
end

return M
