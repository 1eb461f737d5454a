-- JSON in and out.  Decoding is the C core's reader: it tolerates the
-- platform's trailing commas and keeps integers integers on Lua 5.3+
-- (lua-cjson 2.1 decodes every number as a float, which would print sn as
-- 419631107.0).  null decodes to cjson.null.  Encoding is lua-cjson's.
local cjson = require "cjson.safe"
local core = require "kinot.core"

local M = {}
M.null = cjson.null

--- decode(text) -> value | nil, reason
M.decode = core.json_decode

function M.encode(v)
  return cjson.encode(v)
end

return M
