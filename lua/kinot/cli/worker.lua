-- `kinot worker`: the durable inbox's events (a Redis stream that
-- callback.handler's `inbox` fills) run through a handler module, in a
-- plain Lua process (kinot.callback.worker over LuaSocket).  Runs until
-- it is stopped; an entry it was running when killed is claimed by
-- another worker after --claim-after seconds.
local worker = require "kinot.callback.worker"
local redis = require "kinot.redis"

local M = {}

--- add(parser): the subcommand and its options
function M.add(p)
  local w = p:command("worker", "Run the callbacks stored in the inbox (a Redis stream) through a handler module")
  w:option("--redis", "Redis URL, redis://[:password@]host:port/db (default $KINOT_REDIS_URL, which keeps the password out of ps)")
  w:option("--stream", "The inbox's stream", "kinot:callbacks")
  w:option("--group", "Consumer group", worker.GROUP)
  w:option("--consumer", "This worker's name in the group (default host:pid)")
  w:option("--handler", "Lua module (on package.path) returning { on_status = fn, on_command = fn }, or one function for both")
  w:option("--claim-after", "Seconds an entry stays pending (its worker died, its handler failed) before it is run again", "60")
    :convert(tonumber)
  w:option("--max-attempts", "Attempts before an entry moves to <stream>:dead with its last error", "5"):convert(tonumber)
  w:option("--block", "Seconds one read waits for new entries", "2"):convert(tonumber)
end

--- run(args, out) -> exit code (runs until killed)
function M.run(args, out)
  local url = args.redis or os.getenv("KINOT_REDIS_URL")
  if not url or url == "" then error({ usage = "worker needs --redis URL or KINOT_REDIS_URL" }, 0) end
  if not args.handler then error({ usage = "worker needs --handler MODULE" }, 0) end
  local ok, mod = pcall(require, args.handler)
  if not ok then error({ usage = "cannot load the handler module " .. args.handler .. ": " .. tostring(mod) }, 0) end
  local opts = { redis = url, stream = args.stream, group = args.group, consumer = args.consumer,
                 claim_after = args.claim_after, max_attempts = args.max_attempts, block = args.block }
  if type(mod) == "function" then
    opts.on_status, opts.on_command = mod, mod
  elseif type(mod) == "table" then
    opts.on_status, opts.on_command = mod.on_status, mod.on_command
  else
    error({ usage = "the handler module " .. args.handler .. " must return a function or { on_status, on_command }" }, 0)
  end
  local w = worker.new(opts)
  out.err:write(string.format("kinot worker %s: %s, group %s, on %s\n", w.consumer, w.stream, w.group, redis.redact(url)))
  out.err:flush()
  w:run()
  return 0
end

return M
