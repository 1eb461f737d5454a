-- A poster for the specs, in its own process (several run side by side, so
-- requests are in flight when a spec kills a server): POSTs each line of
-- a file of bodies (from line `first`, every `step`-th) to a URL, one
-- after the other, and writes "<line number> <status>" for each to a
-- file, a line at a time (status 0: no answer).
--   lua post_lines.lua URL BODIES OUT FIRST STEP
local core = require "kinot.core"

local url, bodies, out, first, step = arg[1], arg[2], arg[3], tonumber(arg[4]), tonumber(arg[5])
local http = core.http()
local f = assert(io.open(out, "w"))
local n = 0
for body in io.lines(bodies) do
  n = n + 1
  if n >= first and (n - first) % step == 0 then
    local res = http:request { method = "POST", url = url, body = body, timeout = 10, connect_timeout = 2,
                               headers = { ["Content-Type"] = "application/json" } }
    f:write(n, " ", res and res.status or 0, "\n")
    f:flush()
  end
end
f:close()
