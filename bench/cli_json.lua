-- The CLI's JSON output (kinot.cli.output.json_text: kinot.json.encode
-- with the lock's shape, keys in the reference's order) against the
-- baseline of kinot.json.encode alone (keys sorted) on the same lock: what
-- the order costs per device with --jsonl.
--   lua5.4 bench/cli_json.lua; luajit bench/cli_json.lua
local B = require "bench.support"
local json = require "kinot.json"
local output = require "kinot.cli.output"

local lock = { sn = 419631107, voltage = 3.659, frequency = 37.919, locked = 0, car_detected = 0, shell_opened = 0,
  low_battery = 0, coil_fault = 0, bar_position_error = 0, motor_fail = 0, rs_si = -109.5,
  bt_match_code = "61518-59257-29505-55487-10411-15740", bt_mac = "aa0018382001", updated_at = "2019-03-13T10:42:39+08:00" }

local base = B.rate(function() json.encode(lock) end, B.SECONDS)
local ordered = B.rate(function() output.json_text(lock, "lock") end, B.SECONDS)
print(string.format("%s: kinot.json.encode %.0f locks/s (baseline); output.json_text %.0f locks/s (%.0f%%)",
  B.runtime, base, ordered, 100 * ordered / base))
