-- An OpenResty receiver for the Kinot platform's callbacks: verifies each
-- callback, keeps the latest state of every device in a shared dict, and
-- refreshes the whole fleet from the API in a timer (cosocket transport).
--
-- Configuration comes from the environment (see nginx.conf's `env` lines):
--   KINOT_APP_KEY, KINOT_APP_SECRET, KINOT_ENDPOINT, KINOT_POLL_SECONDS
local kinot = require "kinot"
local callback = require "kinot.callback"
local cjson = require "cjson.safe"

local ngx = ngx -- luacheck: ignore
local M = {}

local function store() return ngx.shared.kinot_state end

local function remember(kind, key, value)
  store():set(kind .. ":" .. key, value)
  store():incr("received:" .. kind, 1, 0)
end

--- init(): in init_by_lua_block, once per nginx
function M.init()
  local secret = os.getenv("KINOT_APP_SECRET")
  assert(secret, "set KINOT_APP_SECRET (and `env KINOT_APP_SECRET;` in nginx.conf)")
  M.receive = callback.handler {
    secret = secret,
    dedupe = "kinot_dedupe",
    on_status = function(ev)
      remember("device", ev.sn, cjson.encode(ev.data))
    end,
    on_command = function(ev)
      remember("command", ev.guid, ev.command_status)
    end,
  }
end

local function poll(premature)
  if premature then return end
  local client = kinot.new {
    app_key = os.getenv("KINOT_APP_KEY"), app_secret = os.getenv("KINOT_APP_SECRET"),
    endpoint = os.getenv("KINOT_ENDPOINT"), transport = "resty",
  }
  local n = 0
  local ok, err = pcall(function()
    for _, list in ipairs { "each_locker", "each_sensor" } do
      for device in client[list](client, { limit = 100 }) do
        store():set("device:" .. device.sn, cjson.encode(device))
        n = n + 1
      end
    end
  end)
  store():set("poll:last", cjson.encode { ok = ok, devices = n, error = not ok and tostring(err) or nil, at = ngx.now() })
  if not ok then ngx.log(ngx.ERR, "kinot poll failed: ", tostring(err)) end
end

--- init_worker(): in init_worker_by_lua_block; one worker polls the API
function M.init_worker()
  if ngx.worker.id() ~= 0 or not os.getenv("KINOT_APP_KEY") then return end
  local every = tonumber(os.getenv("KINOT_POLL_SECONDS") or "60")
  ngx.timer.at(0, poll)
  ngx.timer.every(every, poll)
end

--- state(): GET /state/<sn> answers the latest known state of a device
function M.state()
  local sn = ngx.var.uri:match("/state/(%d+)$")
  local v = sn and store():get("device:" .. sn)
  if not v then
    ngx.status = 404
    return ngx.say('{"message":"no state for that device yet"}')
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(v)
end

--- stats(): counts of what arrived, and the last poll
function M.stats()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode {
    devices = store():get("received:device") or 0,
    commands = store():get("received:command") or 0,
    poll = cjson.decode(store():get("poll:last") or "null"),
  })
end

return M
