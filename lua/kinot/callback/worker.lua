-- kinot.callback.worker: runs the events of the durable inbox (a Redis
-- stream that callback.handler's `inbox` option fills) through on_status /
-- on_command, with a consumer group, so that any number of workers on any
-- number of hosts share the work and none is lost:
--   * an entry is acknowledged (XACK, then deleted) only after its handler
--     returned normally; raising or returning nil, err leaves it pending;
--   * an entry pending longer than claim_after seconds (its worker died,
--     or its handler failed) is claimed by a worker (XAUTOCLAIM) and run
--     again; each delivery counts (XPENDING's delivery count);
--   * an entry whose handler failed max_attempts times moves to the
--     dead-letter stream `<stream>:dead`, with its last error.
-- The same code inside nginx (worker.start in init_worker_by_lua: a timer
-- loop over cosockets) and in a plain Lua process (`kinot worker`, over
-- LuaSocket).  Order per device is NOT kept: several workers run entries
-- side by side and a failed entry runs again later; compare the event's
-- data.updated_at with the state you hold.
local redis = require "kinot.redis"
local event = require "kinot.callback.event"
local inbox = require "kinot.callback.inbox"
local receiver = require "kinot.callback.receiver"
local core = require "kinot.core_loader"
local errors = require "kinot.errors"
local validate = require "kinot.validate"

local ngx = rawget(_G, "ngx")
local null = redis.null
local unpack = table.unpack or unpack -- luacheck: ignore

local M = {}
M.__index = M

M.GROUP = "kinot"

-- KEYS: stream, errors hash; ARGV: group, delete ("1"/"0"), then the
-- entry ids (a batch: one round trip acknowledges every entry a read
-- gave that its handler ran; at most ACK_BATCH of them, within the
-- unpack bound of Redis's Lua)
local ACK = [[
local ids = { unpack(ARGV, 3) }
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], unpack(ids)) end
redis.call('HDEL', KEYS[2], unpack(ids))
return #ids]]
local ACK_BATCH = 1000

-- Failed (FAILED, DEAD): only while the entry is still this consumer's.
-- A handler slower than claim_after may fail after another worker claimed
-- the entry and handled it (acknowledged, deleted): its error would stay in
-- the errors hash for ever, or a handled entry would go to the dead-letter
-- stream.  The entry is then the other worker's to judge.

-- KEYS: stream, errors hash; ARGV: group, entry id, consumer, error
local FAILED = [[
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return 1]]

-- KEYS: stream, errors hash, dead stream; ARGV: group, entry id, delete,
-- last error, "died" or "", dead_maxlen, consumer, then the dead entry's
-- field / value pairs.  The dead-letter stream keeps its newest
-- dead_maxlen entries (exactly: it is small, and read by people)
local DEAD = [[
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[7]) == 0 then return 0 end
local err = ARGV[4]
if ARGV[5] == 'died' then
  local before = redis.call('HGET', KEYS[2], ARGV[2])
  if before then err = err .. '; the attempt before failed with: ' .. before end
end
local f = { 'entry', ARGV[2] }
for i = 8, #ARGV do f[#f + 1] = ARGV[i] end
f[#f + 1] = 'error'
f[#f + 1] = err
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[6], '*', unpack(f))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
redis.call('HDEL', KEYS[2], ARGV[2])
return 1]]

-- KEYS: errors hash; ARGV: entry ids trimmed from the stream while
-- pending (XAUTOCLAIM's third element): their last errors go with them
local FORGET_ERRORS = [[
for i = 1, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
return 1]]

-- KEYS: stream; ARGV: group, consumer, claim_after (ms), then entry id /
-- delivery count pairs: entries this worker was stopped before it ran (or
-- while: Ctrl-C stopping a handler's wait), or skipped past its batch's
-- cutoff, given back: still pending, their delivery uncounted (the next
-- claim counts it again) and idle at least claim_after (nothing runs them:
-- the next claim of any worker takes them), each only while it is still
-- this consumer's and at the count it was given at (the script run twice,
-- kinot.redis's retry on a fresh connection, uncounts it once)
local GIVE_BACK = [[
local n = 0
for i = 4, #ARGV, 2 do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])[1]
  if row and row[4] == tonumber(ARGV[i + 1]) and row[4] > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', math.max(row[3], tonumber(ARGV[3])),
               'RETRYCOUNT', row[4] - 1, 'JUSTID')
    n = n + 1
  end
end
return n]]

-- KEYS: stream; ARGV: group, consumer: forgets a consumer holding nothing
-- (checked in the same step, so no entry it was given is dropped with it)
local FORGET = [[
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1]]

-- a consumer idle this long is a worker that is gone (a live one reads
-- every `block` seconds); each worker forgets such names every TIDY_EVERY s
M.FORGET_AFTER = 3600
M.TIDY_EVERY = 600
-- entries <stream>:dead keeps (dead_maxlen), the newest
M.DEAD_MAXLEN = 10000
-- entries a read (count): a batch, acknowledged in one round trip
M.COUNT = 100
-- seconds a loop pauses after a read that brought fewer than `count`
-- entries (a stream being filled as it is read, the inbox under load):
-- each read would otherwise wake for the one or two entries a put just
-- appended, and pay a read and an acknowledgement (two round trips, and
-- Redis serving a blocked reader) for them.  Measured (bench/inbox.lua's
-- load, 2 shared cores, nginx's CPU an inbox request, its worker
-- included): 55 to 57 us with the pause against 80 without (1 loop), 71
-- against 81 to 97 (4 loops).  It adds at most this much from POST to
-- handler
M.GATHER = 0.005

-- seconds between two looks at run's until_fn while it waits after a
-- Redis failure (up to 2 s)
local STOP_SLICE = 0.05

local function sleep(s)
  if ngx and ngx.sleep then return ngx.sleep(s) end
  require("socket").sleep(s)
end

-- schedules (next_claim, next_tidy) run on the monotonic clock: a wall
-- clock stepped back would hold a failed entry for as long as it stepped
local now = core.monotonic

local function default_consumer()
  local host
  local f = io.open("/proc/sys/kernel/hostname")
  if f then
    host = f:read("*l")
    f:close()
  end
  local pid
  if ngx and ngx.worker then
    pid = ngx.worker.pid()
  else
    local p = io.popen("echo $PPID") -- the shell's parent is this process
    pid = p and p:read("*l")
    if p then p:close() end
  end
  return (host or "host") .. ":" .. tostring(pid or math.random(1, 1e9))
end

local function positive(o, k, default)
  local v = o[k]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v <= 0 then errors.misuse("callback.worker: " .. k .. " must be a positive number") end
  return v
end

local OPTIONS = validate.set { "redis", "redis_tls", "stream", "group", "consumer", "on_status", "on_command", "fleet", "claim_after",
  "max_attempts", "block", "count", "delete", "timeout", "connect_timeout", "log", "dead_maxlen", "loops" }

--- new(opts) -> worker.  opts: redis (URL, required), stream (default
-- "kinot:callbacks"), group (default "kinot"), consumer (default
-- host:pid), on_status, on_command, fleet (a live twin, kinot.fleet, fed
-- each status change before on_status), claim_after (s, default 60),
-- max_attempts (default 5), block (s, default 2), count (entries a read,
-- default 100, acknowledged together), delete (default true: a handled entry leaves the stream),
-- log (function(level, message); level "error", or "info" for each entry
-- handled; default ngx.log, or stderr for errors only), redis_tls (a
-- rediss:// URL's TLS settings: kinot.redis's tls)
function M.new(opts)
  if type(opts) ~= "table" then errors.misuse("callback.worker needs a table of options") end
  validate.options(opts, OPTIONS, "callback.worker")
  redis.check(opts.redis, opts.redis_tls, "callback.worker: redis_tls")
  for _, k in ipairs { "on_status", "on_command", "log" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then errors.misuse("callback.worker: " .. k .. " must be a function") end
  end
  receiver.check_fleet(opts.fleet)
  if not opts.on_status and not opts.on_command and not opts.fleet then
    errors.misuse("callback.worker needs on_status, on_command or fleet")
  end
  for _, k in ipairs { "stream", "group", "consumer" } do
    if opts[k] ~= nil and (type(opts[k]) ~= "string" or opts[k] == "") then
      errors.misuse("callback.worker: " .. k .. " must be a name")
    end
  end
  local block = positive(opts, "block", 2)
  local loops = positive(opts, "loops", 1)
  if loops ~= math.floor(loops) then errors.misuse("callback.worker: loops must be a whole number") end
  local self = setmetatable({
    stream = opts.stream or "kinot:callbacks", group = opts.group or M.GROUP,
    consumer = opts.consumer or default_consumer(),
    on_status = opts.on_status, on_command = opts.on_command, fleet = opts.fleet,
    claim_after = positive(opts, "claim_after", 60), max_attempts = math.floor(positive(opts, "max_attempts", 5)),
    block = block, count = math.floor(positive(opts, "count", M.COUNT)), delete = opts.delete ~= false and "1" or "0",
    dead_maxlen = string.format("%d", positive(opts, "dead_maxlen", M.DEAD_MAXLEN)),
    log = opts.log, cursor = "0-0", next_claim = 0, next_tidy = 0, handled = 0, failed = 0, dead = 0,
  }, M)
  self.errors_key, self.dead_key = self.stream .. ":errors", self.stream .. ":dead"
  self.client = redis.new(opts.redis, { timeout = opts.timeout or 2, connect_timeout = opts.connect_timeout,
                                        tls = opts.redis_tls })
  -- the line for each entry handled is made only where it can be seen:
  -- a log of the caller's, or nginx's error_log at info (the default log
  -- outside nginx shows errors only)
  self.log_info = self.log ~= nil
  if not self.log then
    if ngx and ngx.log then
      local ok, level = pcall(function() return require("ngx.errlog").get_sys_filter_level() end)
      self.log_info = not (ok and type(level) == "number") or level >= ngx.INFO
    end
    self.log = function(level, msg)
      if ngx and ngx.log then ngx.log(level == "error" and ngx.ERR or level == "info" and ngx.INFO or ngx.WARN, msg)
      elseif level ~= "info" then io.stderr:write("kinot worker: ", msg, "\n") end
    end
  end
  return self
end

--- ensure_group() -> true | nil, err: the stream and its group, made if missing
-- (a new group starts at the stream's beginning: nothing stored before the
-- first worker ran is skipped)
function M:ensure_group()
  local v, err = self.client:call("XGROUP", "CREATE", self.stream, self.group, "0", "MKSTREAM")
  if v == nil and err.code ~= "BUSYGROUP" then return nil, err end
  -- the give-back script loaded now (run on no entry): after a Ctrl-C the
  -- worker waits a quarter second for a reply, and a stalled Redis must
  -- find its EVALSHA sent before the connection is dropped (it runs it
  -- once it goes on), not a SCRIPT LOAD whose EVALSHA never left
  v, err = self.client:eval(GIVE_BACK, 1, self.stream, self.group, self.consumer, 0)
  if v == nil then return nil, err end
  self.ready = true
  return true
end

local function fields_of(list)
  local f = {}
  if type(list) == "table" then
    for i = 1, #list - 1, 2 do f[list[i]] = list[i + 1] end
  end
  return f
end

-- the ACK script's command for these entries (at most ACK_BATCH), in a
-- pipeline: EVALSHA, the script loaded once | nil, err
local function ack_command(self, ids)
  local sha, err = self.client:sha(ACK)
  if not sha then return nil, err end
  local cmd = { "EVALSHA", sha, 2, self.stream, self.errors_key, self.group, self.delete }
  for i = 1, #ids do cmd[7 + i] = ids[i] end
  return cmd
end

--- ack(ids) -> true | nil, err: acknowledges (and deletes) these entries,
-- each one whose handler returned normally, ACK_BATCH to a round trip
function M:ack(ids)
  for i = 1, #ids, ACK_BATCH do
    local v, err = self.client:eval(ACK, 2, self.stream, self.errors_key, self.group, self.delete,
                                    unpack(ids, i, math.min(#ids, i + ACK_BATCH - 1)))
    if v == nil then return nil, err end
  end
  return true
end

--- give_back(ids[, deliveries_of]) -> true | nil, err: these entries, not
-- run to their end (the worker is stopping, or they were skipped past a
-- batch's cutoff), left pending as if never delivered here.
-- deliveries_of: { [id] = the delivery count they were given at } (1 when
-- missing: XREADGROUP's)
function M:give_back(ids, deliveries_of)
  for i = 1, #ids, ACK_BATCH do
    local args = {}
    for k = i, math.min(#ids, i + ACK_BATCH - 1) do
      args[#args + 1] = ids[k]
      args[#args + 1] = deliveries_of and deliveries_of[ids[k]] or 1
    end
    local v, err = self.client:eval(GIVE_BACK, 1, self.stream, self.group, self.consumer,
                                    math.floor(self.claim_after * 1000), unpack(args))
    if v == nil then return nil, err end
  end
  return true
end

function M:bury(entry, f, attempts, why, died)
  local v, err = self.client:eval(DEAD, 3, self.stream, self.errors_key, self.dead_key, self.group, entry,
    self.delete, why, died and "died" or "", self.dead_maxlen, self.consumer, "id", f.id or "", "body", f.body or "",
    "at", f.at or "", "rule", f.rule or "", "verified", f.verified or "", "stale", f.stale or "", "attempts", attempts, "consumer", self.consumer)
  if v == nil then return nil, err end
  if v == 0 then -- another worker claimed it meanwhile: its call
    self.log("error", "entry " .. entry .. " was claimed by another worker while its handler ran here: left to it")
    return v
  end
  self.dead = self.dead + 1
  self.log("error", "entry " .. entry .. " (callback " .. tostring(f.id) .. ") moved to " .. self.dead_key ..
    " after " .. attempts .. " attempt(s)")
  return v
end

-- run_handler(ev) -> true | false, error text: the handler's outcome,
-- judged as callback.handler judges it (kinot.callback.receiver)
function M:run_handler(ev)
  local ok, why = receiver.dispatch(self, ev)
  if ok then return true end
  return false, tostring(why)
end

--- handle(entry, fields list, deliveries) -> "ack" (handled, or nothing
-- left to run: to be acknowledged, with its batch) | true (failed: left
-- pending, or moved to the dead-letter stream) | "stopped" (failed while
-- the worker is being stopped, Ctrl-C stopping the handler's wait: not
-- the handler's failure, nothing counted) | nil, err (a Redis error)
function M:handle(entry, list, deliveries)
  if list == null or list == nil then -- trimmed or deleted meanwhile: nothing left to run
    return "ack"
  end
  local f = fields_of(list)
  if deliveries > self.max_attempts then
    local v, err = self:bury(entry, f, deliveries - 1, "handler did not finish (its worker died or stalled)", true)
    return v and true, err
  end
  -- (the sign_rule it was verified under; verified = "0": it was not,
  -- under verify = "monitor", and the handler must be told)
  -- (stored by this process: as it was verified, kinot.callback.inbox's held events)
  local ev, why = inbox.take(f.id, f.body, f.rule), nil
  if ev then ev = event.as_rebuilt(ev) else ev, why = event.rebuild(f.body or "", f.id, f.rule) end
  if not ev then
    local v, err = self:bury(entry, f, deliveries, "entry unreadable: " .. tostring(why))
    return v and true, err
  end
  if f.verified == "0" then ev.verified = false end
  if f.stale == "1" then ev.stale = true end -- (out_of_order = "flag", as the receiver told it)
  ev.received_at, ev.attempt, ev.entry = tonumber(f.at), deliveries, entry
  local ok, err = self:run_handler(ev)
  if ok then
    self.handled = self.handled + 1
    if self.log_info then
      self.log("info", "handled entry " .. entry .. " (" .. tostring(ev.kind) .. ", " .. tostring(ev.device) .. " " ..
        tostring(ev.sn) .. ", attempt " .. deliveries .. ")")
    end
    return "ack"
  end
  if self.stop and self.stop() then return "stopped" end
  self.failed = self.failed + 1
  err = err:sub(1, 2000)
  self.log("error", "handler failed for entry " .. entry .. " (attempt " .. deliveries .. " of " ..
    self.max_attempts .. "): " .. err)
  local v, rerr
  if deliveries >= self.max_attempts then
    v, rerr = self:bury(entry, f, deliveries, err)
  else
    -- left pending: claimed again after claim_after; the error goes with it
    v, rerr = self.client:eval(FAILED, 2, self.stream, self.errors_key, self.group, entry, self.consumer, err)
  end
  return v and true, rerr
end

-- the ids of entries[from], entries[from + 1] ...
local function ids_from(entries, from)
  local ids = {}
  for i = from, #entries do
    if type(entries[i]) == "table" then ids[#ids + 1] = entries[i][1] end
  end
  return ids
end

-- The acknowledgement of a batch's last handled entries waits for the
-- loop's next read, and goes in the same round trip, before it
-- (`unacked`; run() and step() send them on their way out): one round
-- trip a batch instead of two.  An acknowledgement that never reaches
-- Redis (the connection died, the worker was killed first) loses nothing:
-- its entries stay pending and run again after claim_after (at least
-- once), as the entries of a worker killed mid-batch.
-- flush_acks() -> true | nil, err: the acknowledgements waiting, now
function M:flush_acks()
  local ids = self.unacked
  if not ids then return true end
  local ok, err = self:ack(ids)
  if not ok then return nil, err end
  self.unacked = nil
  return true
end

local function defer_acks(self, done)
  local ids = self.unacked
  if not ids then
    ids = done
    self.unacked = ids
  else
    for i = 1, #done do ids[#ids + 1] = done[i] end
  end
  -- (more than one script call takes, a count over ACK_BATCH or a few
  -- reads' worth waiting: sent now, ACK_BATCH to a round trip)
  if #ids > ACK_BATCH then return self:flush_acks() end
  return true
end

-- run_batch(entries, deliveries_of) -> entries run | nil, err.  entries:
-- XREADGROUP's or XAUTOCLAIM's { id, fields } pairs.  The handled ones are
-- acknowledged together (one round trip a batch, with the next read, and
-- at least every second while handlers are slow); a failed one is not among them.  Only
-- entries read less than claim_after / 2 ago are run: past that another
-- worker may claim one still waiting here, and run it beside this one; the
-- rest are given back (M:give_back: their delivery, which did not run,
-- uncounted; else an entry skipped so at its last attempt would be buried
-- as "died" by the next claim), for the claim (this worker's or
-- another's).  Killed mid-batch, the entries not yet acknowledged run
-- again after claim_after.  Stopped (run's until_fn, asked before each
-- entry: Ctrl-C, nginx exiting), the entries not run, and one whose
-- handler failed meanwhile, are given back the same way; so are those
-- after a Redis error that ended the batch.
function M:run_batch(entries, deliveries_of)
  local read_at = now()
  local cutoff, done, flushed, n = read_at + self.claim_after / 2, {}, read_at, 0
  local rest, failure -- (the first entry given back; a Redis error that ended the batch)
  for i, e in ipairs(entries) do
    if type(e) == "table" then
      local t = now()
      if t >= cutoff or (self.stop and self.stop()) then
        rest = i
        break
      end
      if #done > 0 and t - flushed >= 1 then
        local ok, err = self:ack(done)
        if not ok then
          rest, failure, done = i, err, {}
          break
        end
        done, flushed = {}, t
      end
      local r, herr = self:handle(e[1], e[2], deliveries_of and deliveries_of[e[1]] or 1)
      if r == nil then -- (this one ran: its attempt counts; those after it did not)
        rest, failure = i + 1, herr
        break
      end
      if r == "stopped" then
        rest = i
        break
      end
      if r == "ack" then done[#done + 1] = e[1] end
      n = n + 1
    end
  end
  if #done > 0 then -- (those did run: a Redis error is reported either way)
    local ok, err = defer_acks(self, done)
    if not ok then failure = failure or err end
  end
  -- (even when a Redis error came first: after a Ctrl-C, a Redis stalled
  -- past the quarter second the worker waits runs it once it goes on)
  if rest then
    local ok, err = self:give_back(ids_from(entries, rest), deliveries_of)
    if not ok then failure = failure or err end
  end
  if failure then return nil, failure end
  return n
end

-- deliveries of the entries just claimed: { [id] = XPENDING's count }
-- (an entry missing there counts 1), one round trip for the batch
function M:deliveries(entries)
  local cmds = {}
  for i, e in ipairs(entries) do cmds[i] = { "XPENDING", self.stream, self.group, e[1], e[1], 1 } end
  local counts = {}
  if #cmds == 0 then return counts end
  local v, err = self.client:pipeline(cmds)
  if v == nil then return nil, err end
  for i, e in ipairs(entries) do
    local reply = v[i]
    if getmetatable(reply) == redis.ReplyError then
      return nil, errors.new("redis", "redis " .. self.client.where .. ": " .. reply.text,
                             { code = reply.code, retryable = false })
    end
    local row = type(reply) == "table" and reply[1]
    counts[e[1]] = type(row) == "table" and tonumber(row[4]) or 1
  end
  return counts
end

-- entries idle over claim_after: their worker died, or their handler failed
function M:claim()
  local v, err = self.client:call("XAUTOCLAIM", self.stream, self.group, self.consumer,
    math.floor(self.claim_after * 1000), self.cursor, "COUNT", self.count)
  if v == nil then return nil, err end
  self.cursor = v[1]
  -- (Redis 7) entries trimmed while pending: dropped from the group by
  -- XAUTOCLAIM itself; their last errors are forgotten here
  local gone = v[3]
  if type(gone) == "table" and #gone > 0 then
    local ok, ferr = self.client:eval(FORGET_ERRORS, 1, self.errors_key, unpack(gone))
    if not ok then return nil, ferr end
  end
  if self.cursor == "0-0" then self.next_claim = now() + math.min(self.claim_after / 2, 5) end
  local entries = {}
  for _, e in ipairs(v[2]) do
    if type(e) == "table" then entries[#entries + 1] = e end
  end
  local counts, derr = self:deliveries(entries)
  if not counts then return nil, derr end
  return self:run_batch(entries, counts)
end

-- default consumer names are host:pid: forget those of workers long gone
function M:tidy()
  self.next_tidy = now() + M.TIDY_EVERY
  local v, err = self.client:call("XINFO", "CONSUMERS", self.stream, self.group)
  if v == nil then return nil, err end
  for _, c in ipairs(v) do
    local f = fields_of(c)
    if f.name ~= self.consumer and tonumber(f.idle) and tonumber(f.idle) > M.FORGET_AFTER * 1000 then
      local ok, ferr = self.client:eval(FORGET, 1, self.stream, self.group, f.name)
      if not ok then return nil, ferr end
    end
  end
  return true
end

-- the next read, after the acknowledgements waiting (one round trip):
-- XREADGROUP's reply | nil, err.  Acknowledgements that the server
-- refused (NOSCRIPT: it lost the script; anything else) are sent again
-- on their own (eval loads the script) or left: their entries run again
-- after claim_after; lost with the connection, they wait for the next read.
local function read(self)
  local args = { "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count, "BLOCK",
                 math.floor(self.block * 1000), "STREAMS", self.stream, ">" }
  local ids = self.unacked
  if not ids then return self.client:call_timeout(self.block + 2, unpack(args)) end
  local ack, aerr = ack_command(self, ids)
  if not ack then return nil, aerr end
  local replies, err = self.client:pipeline({ ack, args }, self.block + 2)
  if not replies then return nil, err end
  local acked = replies[1]
  if getmetatable(acked) == redis.ReplyError then
    local ok, rerr = self:flush_acks()
    if not ok then
      self.log("error", "entries handled but not acknowledged (they run again after claim_after): " .. tostring(rerr))
    end
  end
  self.unacked = nil
  local v = replies[2]
  if getmetatable(v) == redis.ReplyError then
    return nil, errors.new("redis", "redis " .. self.client.where .. ": " .. v.text,
                           { code = v.code, retryable = redis.RETRYABLE_CODES[v.code] or false })
  end
  return v
end

local function step(self)
  if not self.ready then
    local ok, err = self:ensure_group()
    if not ok then return nil, err end
  end
  if now() >= self.next_tidy then
    local ok, err = self:tidy()
    if not ok then return nil, err end
  end
  if now() >= self.next_claim then
    -- (the acknowledgements waiting go first: no read may come for a
    -- while, claims following claims each up to claim_after / 2, and
    -- their entries, idle since their read, would be claimed and run again)
    local ok, aerr = self:flush_acks()
    if not ok then return nil, aerr end
    local n, err = self:claim()
    if not n then return nil, err end
    if n > 0 then return n end
  end
  local v, err = read(self)
  if v == nil then return nil, err end
  if v == null then return 0 end
  return self:run_batch(v[1][2])
end

-- a step whose last acknowledgements wait for the next read (run's loop)
local function loop_step(self)
  local n, err = step(self)
  -- the stream (and its group) was deleted, whichever command found out:
  -- make them again, from the stream's start, on the next step
  if n == nil and (err.code == "NOGROUP" or err.code == "UNBLOCKED") then self.ready = false end
  return n, err
end

--- step() -> entries run (0 when none came within `block`) | nil, err:
-- one read, its entries run and acknowledged
function M:step()
  local n, err = loop_step(self)
  local ok, aerr = self:flush_acks()
  if n ~= nil and not ok then return nil, aerr end
  return n, err
end

--- run(until_fn) : steps until until_fn() is true (never, without one;
-- asked before each entry of a batch too, which stops there: M:run_batch);
-- a Redis failure is logged and tried again, waiting up to 2 s
-- A step that raises (a reply kinot.redis could not read, a bug) is
-- logged and the loop goes on, as after a Redis failure: one bad read must
-- not end `kinot worker` or an nginx timer loop.
function M:run(until_fn)
  local wait = 0.05
  self.stop = until_fn -- (asked between two entries too: M:run_batch)
  while not (until_fn and until_fn()) do
    local ok, n, err = pcall(loop_step, self)
    if not ok then n, err = nil, "callback.worker: a step raised: " .. tostring(n) end
    if n then
      wait = 0.05
      if n > 0 and n < self.count then sleep(M.GATHER) end
    else
      self.log("error", tostring(err))
      -- (in slices: a stop asked meanwhile, a Ctrl-C, nginx exiting, ends
      -- the wait; LuaSocket's sleep sits a signal out)
      local till = now() + wait
      repeat sleep(math.min(STOP_SLICE, till - now())) until now() >= till or (until_fn and until_fn())
      wait = math.min(wait * 2, 2)
    end
  end
  -- (stopped: the last batch's acknowledgements, which no read will take)
  local ok, done, err = pcall(self.flush_acks, self)
  if not (ok and done) then
    self.log("error", "entries handled but not acknowledged (they run again after claim_after): " ..
      tostring(ok and err or done))
  end
  self.stop = nil
end

--- start(opts) -> worker, inside nginx (init_worker_by_lua): a timer loop
-- in this nginx worker, until it exits; opts as new, plus loops (timers
-- running side by side, default 1)
function M.start(opts)
  if not (ngx and ngx.timer) then errors.misuse("callback.worker.start runs inside nginx; elsewhere use worker:run()") end
  local loops = opts.loops or 1
  local workers = {}
  for i = 1, loops do
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if loops > 1 then o.consumer = (opts.consumer or default_consumer()) .. ":" .. i end
    o.loops = nil
    local w = M.new(o)
    workers[i] = w
    local ok, err = ngx.timer.at(0, function()
      w:run(function() return ngx.worker.exiting() end)
    end)
    if not ok then errors.misuse("callback.worker.start could not start a timer: " .. tostring(err)) end
  end
  return workers[1], workers
end

return setmetatable(M, { __call = function(_, opts) return M.new(opts) end })
