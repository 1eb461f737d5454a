-- lua-kinot: the Lua SDK for the Kinot open platform (LoRa parking locks,
-- parking sensors and their DTU gateways).  This is the public face:
-- kinot.new, the module-level default client, and the signing helpers.
local core = require "kinot.core"
local Client = require "kinot.client"
local errors = require "kinot.errors"
local signer = require "kinot.signer"

local kinot = {
  _VERSION = require("kinot.version"),
  errors = errors,
}

--- new(opts) -> client (docs/api.md)
function kinot.new(opts)
  return Client.new(opts)
end

-- ------------------------------------------------------------ the default client

local default

local function env_opts()
  local getenv = os.getenv
  return {
    app_key = getenv("KINOT_APP_KEY"), app_secret = getenv("KINOT_APP_SECRET"),
    endpoint = getenv("KINOT_ENDPOINT"),
  }
end

--- configure(opts): the client behind the module-level calls
function kinot.configure(opts)
  if default then default:close() end
  default = Client.new(opts)
  return default
end

function kinot.default_client()
  if not default then
    local o = env_opts()
    if not o.app_key or not o.app_secret then
      errors.misuse("no default client: call kinot.configure{...} or set KINOT_APP_KEY and KINOT_APP_SECRET")
    end
    default = Client.new(o)
  end
  return default
end

for name, fn in pairs(Client) do
  if type(fn) == "function" and not name:match("^_") and name ~= "new" and name ~= "close" then
    kinot[name] = function(...) return fn(kinot.default_client(), ...) end
  end
end

-- ------------------------------------------------------------ signing helpers

-- keyed signers by secret, so repeated calls reuse the absorbed HMAC key;
-- weak values let unused ones go.  The last one is kept at hand: a script
-- signs with one secret.
local signers = setmetatable({}, { __mode = "v" })
local last_secret, last_signer

local function signer_for(secret)
  if secret == last_secret then return last_signer end
  local s = signers[secret]
  if not s then
    s = signer.new(secret)
    signers[secret] = s
  end
  last_secret, last_signer = secret, s
  return s
end

--- sign_request{method, path, query, form, headers, sign_headers, app_secret, signature_method}
--   -> { string_to_sign, signature, signed_headers }
function kinot.sign_request(t)
  if type(t) ~= "table" then errors.misuse("sign_request expects a table") end
  local secret = t.app_secret
  if type(secret) ~= "string" then errors.misuse("app_secret must be a string") end
  return signer_for(secret):sign(t)
end

--- content_md5(body) -> base64(MD5(body))
function kinot.content_md5(body)
  if type(body) ~= "string" then errors.misuse("content_md5 expects the body string") end
  return core.content_md5(body)
end

return kinot
