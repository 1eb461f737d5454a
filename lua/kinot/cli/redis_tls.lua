-- The Redis TLS options of every command that takes --redis (kinot
-- worker, kinot fleet, kinot serve): one spelling and one meaning, turned
-- into the `redis_tls` table the library takes (docs/redis.md#tls).
local errors = require "kinot.errors"

local M = {}

--- add(cmd): --redis-ca-file, --redis-server-name, --redis-insecure
function M.add(cmd)
  cmd:option("--redis-ca-file", "With a rediss:// URL: the PEM CA bundle its certificate is verified against " ..
    "(default: the system's CAs)")
  cmd:option("--redis-server-name", "With a rediss:// URL: the name its certificate must hold " ..
    "(default: the URL's host)")
  cmd:flag("--redis-insecure", "With a rediss:// URL: encrypt without verifying the certificate " ..
    "(anyone on the path can pose as the server)")
end

--- of(args, url) -> the redis_tls table | nil (none given); misuse raises
-- when they cannot go together or with this URL
function M.of(args, url)
  if not (args.redis_ca_file or args.redis_server_name or args.redis_insecure) then return nil end
  if type(url) == "string" and url:match("^redis%+sentinel://") then
    errors.misuse("--redis-ca-file, --redis-server-name and --redis-insecure: TLS behind Sentinel is not supported " ..
      "(redis+sentinel:// is plain TCP)")
  end
  if type(url) ~= "string" or not url:match("^rediss://") then
    errors.misuse("--redis-ca-file, --redis-server-name and --redis-insecure go with a rediss:// URL (TLS)")
  end
  if args.redis_insecure and args.redis_ca_file then
    errors.misuse("--redis-insecure verifies nothing: leave out --redis-ca-file, or --redis-insecure")
  end
  local tls = { ca_file = args.redis_ca_file, server_name = args.redis_server_name }
  if args.redis_insecure then tls.verify_tls = false end
  return tls
end

return M
