-- The platform's vocabulary, as the API reference's tables give it: device
-- type codes, each device's fields and their types, the callbacks' fields,
-- and the platform's spellings.  Plain data, read by the rest of the SDK;
-- one helper, coerce(type, value), gives a value the type a field has.
--
-- Field types are the reference's words: "int", "float", "string", "json"
-- (an object the caller decodes).  Fields the reference's tables do not
-- list are not in fields (but the few in also_typed, and the sensor's
-- `active` in order): callers pass them through as they come.  Read-only:
-- the callback binding keeps the types it has read from fields.callback.
-- No other module under lua/kinot spells a code, the commnad_status
-- spelling or a fault-flag list: spec/vocabulary_spec.lua greps for them.
local M = {}

local type, floor = type, math.floor
local tointeger = math.tointeger -- nil on LuaJIT / 5.1, where every number is a double

--- device type codes (POST /notifications, callbacks' device_type)
M.device_types = { [18] = "lock", [34] = "sensor" }
M.device_codes = { lock = 18, sensor = 34 }
-- the names a caller may give for a device type (kinot.validate), beside the codes
M.device_names = { lock = 18, locker = 18, sensor = 34 }

-- Codes seen in the reference that it does not define: a callback that
-- carries one is judged by its fields (kinot.callback: ev.device_why).
M.unconfirmed_device_types = {
  [38] = "the reference's callback examples carry 38 for a lock's status_changed and command_resp and a sensor's " ..
    "status_changed, though 18 means a lock and 34 a sensor everywhere else",
}

-- the platform's spelling of command_status in commands and command_resp
-- callbacks; the SDK gives both names
M.COMMAND_STATUS_AS_SENT = "commnad_status"
M.command_statuses = { "sending", "pending", "arrived", "succeeded", "failed" }
-- a command_resp's reason when there is none: the text "NULL"
M.NO_REASON = "NULL"

local lock = {
  sn = "int", voltage = "float", frequency = "float", locked = "int", car_detected = "int", shell_opened = "int",
  low_battery = "int", coil_fault = "int", bar_position_error = "int", motor_fail = "int", rs_si = "float",
  bt_match_code = "string", bt_mac = "string", updated_at = "string",
}
local sensor = {
  sn = "int", voltage = "float", frequency = "float", car_detected = "int", low_battery = "int", coil_fault = "int",
  rs_si = "float", updated_at = "string",
}
local function with(base, extra)
  local t = {}
  for k, v in pairs(base) do t[k] = v end
  for k, v in pairs(extra) do t[k] = v end
  return t
end
local command_resp = {
  guid = "string", sn = "int", commnad_status = "string", reason = "string", updated_at = "string",
  sign = "string", device_type = "int",
}
local signed = { sign = "string", device_type = "int" }

M.fields = {
  lock = lock,
  sensor = sensor,
  dtu = { sn = "int", hw = "int", sw = "int", firmware = "int", host = "string", online = "string",
          updated_at = "string" },
  command = { guid = "string", sn = "int", command = "int", commnad_status = "string", command_status = "string",
              parameter = "json" },
  notification = { device_type = "int", status_changed_callback_url = "string",
                   command_resp_callback_url = "string", commandResp_callback_url = "string",
                   update_at = "string" },
  -- the four callbacks, as their tables give them (bt_match_code and bt_mac
  -- are in the lock's table, not its callback's: typed the same if sent)
  lock_status_changed = with(lock, signed),
  lock_command_resp = command_resp,
  sensor_status_changed = with(sensor, signed),
  sensor_command_resp = command_resp,
}
-- every field a callback body may carry, for verification, which types
-- a body before it knows which callback it is; command_status is the
-- correct spelling, typed the same should the platform ever send it
M.fields.callback = with(with(with(M.fields.lock_status_changed, M.fields.sensor_status_changed), command_resp),
  { command_status = "string" })

-- Fields the answers carry that the reference's answer tables above do not
-- list, typed all the same (kinot.typed):
M.fields.envelope = { code = "int", message = "string", count = "int", request_id = "string" } -- every answer's
M.fields.test_notification = { sn = "int", callback_url = "string", error_detail = "string" } -- POST /test/notifications
M.also_typed = {
  -- a command answer carries neither in the reference's table, but its
  -- command_resp callback carries both: typed the same when a platform
  -- (or the simulator, once a command is final) sends them
  command = { reason = "string", updated_at = "string" },
  -- the spelling every other answer has for the reference's update_at
  notification = { updated_at = "string" },
}

-- The members of each answer and callback in the order of the reference's
-- examples (the simulator writes them so).  A sensor's example carries
-- `active` (1 active, 0 frozen), which its table does not list; callbacks
-- carry `sign` just before `device_type`, which ends them.
M.order = {
  lock = { "sn", "voltage", "frequency", "locked", "car_detected", "shell_opened", "low_battery", "coil_fault",
           "bar_position_error", "motor_fail", "rs_si", "bt_match_code", "bt_mac", "updated_at" },
  sensor = { "sn", "voltage", "frequency", "active", "car_detected", "low_battery", "coil_fault", "rs_si", "updated_at" },
  dtu = { "sn", "hw", "sw", "firmware", "host", "online", "updated_at" },
  notification = { "device_type", "status_changed_callback_url", "command_resp_callback_url", "update_at" },
  lock_status_changed = { "sn", "voltage", "frequency", "locked", "car_detected", "shell_opened", "low_battery",
                          "coil_fault", "bar_position_error", "motor_fail", "rs_si", "updated_at" },
  sensor_status_changed = { "sn", "voltage", "frequency", "car_detected", "low_battery", "coil_fault", "rs_si",
                            "updated_at" },
  command_resp = { "guid", "sn", "commnad_status", "reason", "updated_at" },
  -- a command answer (its example spells command_status right, its table
  -- commnad_status: both, where they come); reason and updated_at are its
  -- command_resp callback's (also_typed.command)
  command = { "sn", "guid", "command", "command_status", "commnad_status", "parameter", "reason", "updated_at" },
  test_notification = { "sn", "callback_url", "error_detail" },
}

-- what only a lock reports (its status_changed); a sensor's status has
-- car_detected and none of these
M.lock_only = { "locked", "shell_opened", "bar_position_error", "motor_fail", "bt_match_code", "bt_mac" }
-- the fault flags (1 = fault), by device
M.faults = {
  lock = { "coil_fault", "bar_position_error", "motor_fail", "shell_opened" },
  sensor = { "coil_fault" },
}

-- The integer rule, in Lua once (src/cbscan.c's kn_cb_whole is the C
-- side): INT_LIMIT = 2^53, the first integer a double cannot tell from its
-- neighbour (2^53 + 1 reads as 2^53); INT_MAX = 2^53 - 1, the largest
-- whole number (a serial's largest, kinot.validate).  A check of whether a
-- number is written exactly (JSON text, a CLI option) bounds by INT_LIMIT;
-- whether a value is a whole number, by whole() below.
local INT_LIMIT = 2 ^ 53 -- exact on every runtime
M.INT_LIMIT, M.INT_MAX = INT_LIMIT, INT_LIMIT - 1

local KINDS = { int = true, float = true, string = true, json = true }

--- whole(v) -> the integer v is (an integer on Lua 5.3+, -0 as 0) when v
-- is a whole number strictly within +-2^53; else nil.  The rule for every
-- field the reference types int, in Lua once (src/cbscan.c's kn_cb_whole is
-- the C side).  +-2^53 itself is out: 2^53 + 1 reads as 2^53 in a double,
-- so only below it is a whole double the number that was written.
local function whole(v)
  if type(v) ~= "number" or v ~= floor(v) or v >= INT_LIMIT or v <= -INT_LIMIT then return nil end
  return tointeger and tointeger(v) or v + 0
end
M.whole = whole

--- coerce(kind, value) -> value of that kind | nil, why
-- int: a whole number strictly within +-2^53 (an integer on Lua 5.3+); float: any
-- number, always a float (3 -> 3.0); string: a string; json: any value.
-- A quoted number is not a number.  An unknown kind raises.
function M.coerce(kind, v)
  if not KINDS[kind] then
    require("kinot.errors").misuse("coerce: kind must be int, float, string or json (got " .. tostring(kind) .. ")")
  end
  local t = type(v)
  if kind == "json" then return v end
  if kind == "string" then
    if t == "string" then return v end
    return nil, "a string is wanted, not a " .. t
  end
  if t ~= "number" then return nil, "a number is wanted, not a " .. t end
  if v ~= v then return nil, "not a number (NaN)" end
  if kind == "float" then return v * 1.0 end -- (-0.0 stays -0.0, as the C reader gives it)
  local n = whole(v)
  if n == nil then return nil, "a whole number within +-2^53 is wanted" end
  return n
end

return M
