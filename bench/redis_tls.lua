-- What TLS costs a kinot.redis client, outside nginx (LuaSocket + LuaSec),
-- against two redis-servers of this machine started here, in one run:
--   call      PINGs per second on a kept connection: redis:// (the
--             baseline) and rediss:// (the same server's settings, TLS only)
--   connect   a new client's first PING per second (connect, AUTH, and for
--             rediss:// the handshake and the host-name check): redis://
--             (the baseline) and rediss://
--   luajit bench/redis_tls.lua   |   lua5.4 bench/redis_tls.lua   (after make build)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local R = require "redis_server"

local plain = R.start { password = "bench-pw" }
local tls = R.start { password = "bench-pw", tls = true }

B.guarded(function()
  local rows = {}
  for _, s in ipairs { { "redis://", plain }, { "rediss://", tls } } do
    local name, r = s[1], s[2]
    local c = r.client()
    assert(c:call("PING") == "PONG")
    local call = B.rate(function() c:call("PING") end)
    c:close()
    local connect = B.rate(function()
      local n = r.client()
      assert(n:call("PING") == "PONG")
      n:close()
    end, nil, 10)
    rows[#rows + 1] = { name, call, connect }
  end
  print(string.format("kinot.redis over TLS, %s, %d s a figure", B.runtime, B.SECONDS))
  print(string.format("%-10s %14s %22s", "", "PING/s (kept)", "new client + PING/s"))
  for _, row in ipairs(rows) do print(string.format("%-10s %14.0f %22.0f", row[1], row[2], row[3])) end
  print(string.format("rediss:// / redis://: kept %.2fx, new %.2fx", rows[2][2] / rows[1][2], rows[2][3] / rows[1][3]))
end, plain, tls)
