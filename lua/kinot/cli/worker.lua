-- `kinot worker`: the durable inbox's events (a Redis stream that
-- callback.handler's `inbox` fills) run through a handler module, in a
-- plain Lua process (kinot.callback.worker over LuaSocket).  Runs until
-- it is stopped; an entry it was running when killed is claimed by
-- another worker after --claim-after seconds.  On stderr: errors, each
-- entry with --verbose, and a line of counts every --stats-every seconds
-- and on SIGUSR1 (held, and taken between two entries: kinot.simsignal).
-- Ctrl-C stops it between two entries too (exit 130: kinot.cli's main).
local worker = require "kinot.callback.worker"
local redis = require "kinot.redis"

local M = {}

--- add(parser): the subcommand and its options
function M.add(p, ex)
  local w = p:command("worker", "Run the callbacks stored in the inbox (a Redis stream) through a handler module")
  w:option("--redis", "Redis URL, redis://[:password@]host:port/db, rediss:// for TLS, or behind Sentinel " ..
    "redis+sentinel://[:password@]host:port[,host:port...]/mastername/db (default $KINOT_REDIS_URL, " ..
    "which keeps the password out of ps)")
  require("kinot.cli.redis_tls").add(w)
  w:option("--stream", "The inbox's stream", "kinot:callbacks")
  w:option("--group", "Consumer group", worker.GROUP)
  w:option("--consumer", "This worker's name in the group (default host:pid)")
  w:option("--handler", "Lua module (on package.path) returning { on_status = fn, on_command = fn }, or one function for both")
  w:option("--claim-after", "Seconds an entry stays pending (its worker died, its handler failed) before it is run again", "60")
    :convert(tonumber)
  w:option("--max-attempts", "Attempts before an entry moves to <stream>:dead with its last error", "5"):convert(tonumber)
  w:option("--block", "Seconds one read waits for new entries", "2"):convert(tonumber)
  w:option("--count", "Entries a read, acknowledged together once their handlers returned (killed mid-batch, " ..
    "those not yet acknowledged run again)", tostring(worker.COUNT)):convert(tonumber)
  w:flag("--verbose", "A line for each entry handled (errors always have one)")
  w:option("--stats-every", "Seconds between two lines of counts (SIGUSR1: one now)", "60"):convert(tonumber)
  w:epilog(ex({ "kinot worker --handler myapp.callbacks              # Redis from $KINOT_REDIS_URL",
                 "kinot worker --handler myapp.callbacks --verbose    # a line per entry handled or failed",
                 "kill -USR1 <pid>                                    # a line of counts now" },
    "A line of counts (handled, failed, dead) goes to stderr every minute, and on SIGUSR1."))
end

--- run(args, out) -> exit code (runs until killed)
function M.run(args, out)
  -- held first: SIGUSR1's default action ends the process
  local signals = require "kinot.simsignal"
  signals.hold_signal("SIGUSR1")
  local url = args.redis or os.getenv("KINOT_REDIS_URL")
  if not url or url == "" then error({ usage = "worker needs --redis URL or KINOT_REDIS_URL" }, 0) end
  local tls = require("kinot.cli.redis_tls").of(args, url)
  if not args.handler then error({ usage = "worker needs --handler MODULE" }, 0) end
  local ok, mod = pcall(require, args.handler)
  if not ok then error({ usage = "cannot load the handler module " .. args.handler .. ": " .. tostring(mod) }, 0) end
  local opts = { redis = url, redis_tls = tls, stream = args.stream, group = args.group, consumer = args.consumer,
                 claim_after = args.claim_after, max_attempts = args.max_attempts, block = args.block,
                 count = args.count }
  if type(mod) == "function" then
    opts.on_status, opts.on_command = mod, mod
  elseif type(mod) == "table" then
    opts.on_status, opts.on_command = mod.on_status, mod.on_command
  else
    error({ usage = "the handler module " .. args.handler .. " must return a function or { on_status, on_command }" }, 0)
  end
  if not args.stats_every or args.stats_every <= 0 then error({ usage = "--stats-every must be a number of seconds > 0" }, 0) end
  local core = require "kinot.core_loader"
  local function stamp() return os.date("!%Y-%m-%dT%H:%M:%SZ") end
  opts.log = function(level, msg)
    if core.interrupted() then return end -- (those entries left pending: main's one line says why)
    if level ~= "info" or args.verbose then out:note(stamp(), " ", level == "info" and "" or (level .. ": "), msg) end
  end
  local w = worker.new(opts)
  out:note(string.format("kinot worker %s: %s, group %s, on %s", w.consumer, w.stream, w.group, redis.redact(url)))
  local since, last = core.monotonic(), { handled = 0, failed = 0, dead = 0 }
  local function counts()
    local now = core.monotonic()
    out:note(string.format("%s counts: %d handled, %d failed, %d dead since start; %d, %d, %d in the last %.0f s",
      stamp(), w.handled, w.failed, w.dead, w.handled - last.handled, w.failed - last.failed, w.dead - last.dead,
      now - since))
    since, last = now, { handled = w.handled, failed = w.failed, dead = w.dead }
  end
  -- asked before each entry, and between two reads of the stream (a read
  -- waiting for entries sees a Ctrl-C within a quarter second:
  -- kinot.redis).  Ctrl-C (main's handler raises core's flag) ends the
  -- loop: the entries run before it are acknowledged; the others, and one
  -- whose handler it stopped (inside a wait of the C core: an API call,
  -- core.sleep), stay pending as if never delivered here, for the next
  -- worker after --claim-after (callback.worker's run_batch).  main then
  -- says "interrupted", exit 130
  w:run(function()
    if core.interrupted() then return true end
    if signals.take_signal("SIGUSR1") or core.monotonic() - since >= args.stats_every then counts() end
    return false
  end)
  return 0
end

return M
