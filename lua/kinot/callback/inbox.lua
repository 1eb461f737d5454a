-- The durable inbox: callback.handler's `inbox = { redis = url, stream =
-- "kinot:callbacks", maxlen = n }` appends each verified delivery to a
-- Redis stream before the platform gets its 200, so a 200 means stored;
-- kinot.callback.worker hands the entries to on_status / on_command.
--
-- An entry: id (the verified sign), body (the raw verified body), at (when
-- it was received, epoch seconds).  The append and the dedupe mark are one
-- script, so they happen together or not at all: a redelivery of a stored
-- event is answered 200 without a second entry, on any host.
local redis = require "kinot.redis"
local store = require "kinot.callback.redis_store"

local M = {}
M.__index = M

M.STREAM = "kinot:callbacks"

-- KEYS: dedupe key, stream; ARGV: ttl, maxlen ("" for none), id, body, at.
-- The mark is set after the append: a script that fails half way keeps
-- what it wrote, and a mark without its entry would make the redelivery
-- of an event never stored look like a duplicate.
local PUT = [[
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'id', ARGV[3], 'body', ARGV[4], 'at', ARGV[5])
else
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'body', ARGV[4], 'at', ARGV[5])
end
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[1])
return 1]]

--- options(inbox, dedupe, level): misuse raises
function M.options(o, dedupe, level)
  level = (level or 1) + 1
  if type(o) ~= "table" then error("kinot: inbox must be a table { redis = url, stream = name, maxlen = n }", level) end
  redis.parse(o.redis, level)
  if o.stream ~= nil and (type(o.stream) ~= "string" or o.stream == "") then error("kinot: inbox.stream must be a name", level) end
  if o.maxlen ~= nil and (type(o.maxlen) ~= "number" or o.maxlen < 1) then error("kinot: inbox.maxlen must be a positive number", level) end
  if type(dedupe) == "table" then
    store.options(dedupe, level)
    if dedupe.redis ~= o.redis then
      error("kinot: dedupe.redis and inbox.redis must name the same Redis (the inbox dedupes as it appends)", level)
    end
  elseif dedupe ~= nil then
    error("kinot: with an inbox, dedupe is the inbox's own: leave it out or give the same { redis = url, ttl = s }", level)
  end
end

--- new(inbox, dedupe) -> inbox.  dedupe (optional): { ttl = s, prefix = ... }
function M.new(o, dedupe)
  M.options(o, dedupe, 2)
  dedupe = dedupe or {}
  return setmetatable({
    client = redis.new(o.redis, { timeout = o.timeout, connect_timeout = o.connect_timeout }),
    stream = o.stream or M.STREAM, maxlen = o.maxlen and string.format("%d", o.maxlen) or "",
    ttl = math.floor(dedupe.ttl or 3600), prefix = dedupe.prefix or store.PREFIX,
  }, M)
end

--- put(id, raw, at) -> true (stored now) | false (stored before: a redelivery) | nil, err
function M:put(id, raw, at)
  local v, err = self.client:eval(PUT, 2, self.prefix .. id, self.stream,
                                  self.ttl, self.maxlen, id, raw, string.format("%.3f", at))
  if v == nil then return nil, err end
  return v == 1
end

return M
