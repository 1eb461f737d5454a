-- JSON in and out.  Decoding tolerates the platform's trailing commas and,
-- on Lua 5.4, turns integral numbers back into integers (lua-cjson 2.1
-- decodes every number as a float, which would print sn as 419631107.0).
local cjson = require "cjson.safe"
local core = require "kinot.core"

local M = {}
M.null = cjson.null

-- floats with integral values back to integers, in C (5.3+ only)
local integers = math.tointeger and core.json_integers
local type = type

--- decode(text) -> value | nil, reason
function M.decode(text)
  local v, err = cjson.decode(text)
  if v == nil and err then
    local relaxed = core.json_relax(text)
    if relaxed ~= text then v, err = cjson.decode(relaxed) end
    if v == nil and err then return nil, err end
  end
  if integers and type(v) == "table" then integers(v) end
  return v
end

-- encoding with Lua integers kept integral on both runtimes
function M.encode(v)
  return cjson.encode(v)
end

return M
