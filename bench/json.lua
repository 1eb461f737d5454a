-- JSON writing: kinot.json.encode (the C core's writer: exact integers,
-- shortest round-trip floats, sorted keys) against lua-cjson's encode (14
-- significant digits, keys in hash order: the baseline it replaced), on
-- what the CLI writes most: a page of 100
-- locks as the simulator serves them (`kinot --json lockers --limit 100`),
-- and a command body (`client:send_command`).
--   lua5.4 bench/json.lua ; luajit bench/json.lua   (after make build)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local json = require "kinot.json"
local cjson = require "cjson"
local fleet = require("kinot.sim.fleet").new { locks = 100 }

local page = json.decode(fleet:page_json("lock", 0, 100)).objects
local body = { sn = 419600001, command = 1, parameter = { key = "handle", value = 1 } }
assert(json.decode(json.encode(page))[100].sn == page[100].sn)

print(string.format("%s, %.0f s rounds", B.runtime, B.SECONDS))
for _, case in ipairs { { "page of 100 locks", page, 10 }, { "command body", body, 1000 } } do
  local name, v, batch = case[1], case[2], case[3]
  local ours = B.rate(function() return json.encode(v) end, nil, batch)
  local base = B.rate(function() return cjson.encode(v) end, nil, batch)
  print(string.format("  %-18s kinot.json %10.0f/s   lua-cjson %10.0f/s   (%.0f%% of the baseline's rate)",
    name, ours, base, 100 * ours / base))
end
