-- lua-kinot: the Lua SDK for the Kinot open platform (LoRa parking locks,
-- parking sensors and their DTU gateways).  This is the public face:
-- kinot.new, the module-level default client, and the signing helpers.
local core = require "kinot.core_loader"
local Client = require "kinot.client"
local errors = require "kinot.errors"
local signer = require "kinot.signer"
local validate = require "kinot.validate"

--- The module: kinot.new, the default client's module-level calls (every
--- client method, called on kinot.default_client()), the signing helpers.
---@class kinot
---@field _VERSION string the SDK's version
---@field errors kinot.errors the errors module (docs/errors.md)
---@field lockers fun(opts?: kinot.PageOptions): kinot.LockPage?, kinot.Error?
---@field sensors fun(opts?: kinot.PageOptions): kinot.SensorPage?, kinot.Error?
---@field locker fun(sn: kinot.Sn): kinot.Lock?, kinot.Error?
---@field sensor fun(sn: kinot.Sn): kinot.Sensor?, kinot.Error?
---@field dtu_device fun(sn: kinot.Sn): kinot.Dtu?, kinot.Error?
---@field each_locker fun(opts?: kinot.EachOptions): fun(): kinot.Lock?
---@field each_sensor fun(opts?: kinot.EachOptions): fun(): kinot.Sensor?
---@field send_command fun(sn: kinot.Sn, parameter: kinot.CommandParameter): kinot.Command?, kinot.Error?
---@field command fun(guid: string): kinot.Command?, kinot.Error?
---@field wait_command fun(guid: string, opts?: kinot.WaitOptions): kinot.Command?, kinot.Error?
---@field send_commands fun(items: kinot.BatchItem[], opts?: kinot.BatchOptions): kinot.BatchResult[]?, kinot.BatchSummary|kinot.Error
---@field wait_commands fun(guids: string[], opts?: kinot.WaitManyOptions): kinot.BatchResult[], kinot.BatchSummary
---@field reset_bt_match_code fun(sn: kinot.Sn): kinot.Command?, kinot.Error?
---@field activate_sensor fun(sn: kinot.Sn): kinot.Command?, kinot.Error?
---@field freeze_sensor fun(sn: kinot.Sn): kinot.Command?, kinot.Error?
---@field set_notifications fun(opts: kinot.NotificationSettings): kinot.Notification?, kinot.Error?
---@field notifications fun(device_type: kinot.DeviceType): kinot.Notification?, kinot.Error?
---@field test_notification fun(sn: kinot.Sn, callback_type?: kinot.CallbackType): kinot.TestNotification?, kinot.Error?
---@field request fun(method: string, path: string, opts?: kinot.RequestOptions): integer?, table<string, string>|kinot.Error, string?
local kinot = {
  _VERSION = require("kinot.version"),
  errors = errors,
}

--- new(opts) -> client (docs/api.md)
---@param opts kinot.Options
---@return kinot.Client
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
---@param opts kinot.Options
---@return kinot.Client
function kinot.configure(opts)
  if default then default:close() end
  default = Client.new(opts)
  return default
end

--- default_client() -> the client of configure(), or one made from KINOT_APP_KEY,
--- KINOT_APP_SECRET and KINOT_ENDPOINT (misuse raises when the first two are unset)
---@return kinot.Client
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
local SIGN_REQUEST = validate.set {
  "method", "path", "query", "form", "headers", "sign_headers", "app_secret", "signature_method",
}
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
---@param t kinot.SignRequest
---@return kinot.Signed
function kinot.sign_request(t)
  if type(t) ~= "table" then errors.misuse("sign_request expects a table") end
  validate.options(t, SIGN_REQUEST, "sign_request")
  local secret = t.app_secret
  if type(secret) ~= "string" then errors.misuse("app_secret must be a string") end
  return signer_for(secret):sign(t)
end

--- content_md5(body) -> base64(MD5(body))
---@param body string
---@return string
function kinot.content_md5(body)
  if type(body) ~= "string" then errors.misuse("content_md5 expects the body string") end
  return core.content_md5(body)
end

-- ------------------------------------------------------------ LuaLS types

--- kinot.new's options (docs/api.md); a wrong one raises (misuse).
---@class kinot.Options
---@field app_key string the AppKey, sent as X-Ca-Key (required)
---@field app_secret string the AppSecret that signs every request (required; kept only inside the C signer)
---@field endpoint? string the API's base URL with its path (default http://device.api.parks8.com/open/lora/v1)
---@field stage? string sent as X-Ca-Stage when set (e.g. "TEST"); none means RELEASE
---@field timeout? number seconds: one deadline for a whole attempt (default 10)
---@field connect_timeout? number seconds to establish the connection, within timeout (default 3)
---@field retries? integer attempts after the first, for what may be retried (default 2)
---@field backoff? { base?: number, max?: number } seconds; the n-th wait is drawn from [b/2, b], b = min(base * 2^(n-1), max) (default 0.25, 8)
---@field max_retry_after? number a longer Retry-After is not waited for (default 60)
---@field signature_method? kinot.SignatureMethod default "HmacSHA256"
---@field transport? kinot.TransportName|kinot.TransportFunction default "auto"
---@field paging? kinot.Paging how the platform numbers `offset` (default "auto")
---@field verify_tls? boolean verify the server's certificate and name (default true)
---@field ca_file? string a PEM bundle to verify against (curl transport)
---@field proxy? string http://[user:password@]host:port, for both transports
---@field max_body? integer bytes: a larger answer is dropped, kind too_large (default 8 MiB)
---@field resolver? string[] inside nginx only: the nameservers the resty transport asks
---@field on_event? fun(ev: kinot.Event) called for every request, response and retry

---@alias kinot.SignatureMethod "HmacSHA256"|"HmacSHA1"
---@alias kinot.TransportName "auto"|"curl"|"resty"

--- how the platform numbers `offset` (docs/paging.md)
---@alias kinot.Paging
---| "auto"  # found out once per client
---| "page0" # a page index from 0
---| "page1" # a page index from 1
---| "rows"  # a row offset

--- A function transport: any HTTP stack, or a test double (docs/transports.md).
---@alias kinot.TransportFunction fun(request: kinot.TransportRequest): kinot.TransportResponse?, string|kinot.TransportError?

---@class kinot.TransportRequest
---@field method string
---@field url string with the percent-encoded query
---@field headers table<string, string> already signed
---@field body? string
---@field timeout number seconds
---@field connect_timeout number seconds

---@class kinot.TransportResponse
---@field status integer
---@field headers table<string, string> names in lower case
---@field body string

---@class kinot.TransportError
---@field kind "network"|"timeout"|"tls"|"too_large"
---@field message string
---@field not_sent? boolean true asserts the request never left (a command may then be sent again)

--- What on_event sees, one per attempt (docs/api.md, "Events").
---@class kinot.Event
---@field type "request"|"response"|"retry"
---@field attempt integer from 1 (retry: the one that failed)
---@field method? string request, response
---@field url? string request, response; without credentials
---@field headers? table<string, string> request: as sent, X-Ca-Signature redacted
---@field status? integer response
---@field request_id? string response: X-Ca-Request-Id
---@field elapsed? number response: seconds
---@field reason? string retry: a sentence, or "clock skew"
---@field error? kinot.ErrorKind retry: the failure's kind
---@field delay? number retry: seconds before the next attempt

--- kinot.sign_request's table (docs/signing.md).
---@class kinot.SignRequest
---@field method string as sent
---@field path string as sent, with the endpoint's base (e.g. /open/lora/v1/lockers)
---@field query? string[][] ordered {name, value} pairs, raw (not percent-encoded)
---@field form? string[][] ordered {name, value} pairs, raw
---@field headers table<string, string> every header that will be sent (X-Ca-Key, X-Ca-Timestamp, X-Ca-Nonce, Accept ...)
---@field sign_headers? string[] extra header names to sign besides the X-Ca-* ones
---@field app_secret string the secret (required)
---@field signature_method? kinot.SignatureMethod default "HmacSHA256"

---@class kinot.Signed
---@field string_to_sign string
---@field signature string base64
---@field signed_headers string[] the names signed, in string-to-sign order (X-Ca-Signature-Headers, comma-joined)
return kinot
