-- Simulator throughput: 100-device pages per second from one nginx worker,
-- every request signed and checked by the simulated gateway.  Requests are
-- signed before the clock starts (unique nonces), then sent over keep-alive
-- libcurl: one connection in a loop, then 8 at a time over curl-multi.
--   make bench   (or: lua5.4 bench/sim.lua after make build)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local core = require "kinot.core"
local request = require "kinot.request"
local H = require "helpers"

local N = tonumber(os.getenv("BENCH_SIM_REQUESTS") or "20000")
local sim = H.sim { locks = 10000 }
local client = sim.client()

local function presign(n)
  local reqs = {}
  for i = 1, n do
    local page = (i - 1) % 100
    reqs[i] = request.build(client, { method = "GET", path = "/lockers",
      query = { { "offset", tostring(page) }, { "limit", "100" } } })
  end
  return reqs
end

local loop, multi, counters
B.guarded(function()
  local http = core.http()
  -- one connection, one request after the other
  local reqs = presign(N)
  local t0 = core.monotonic()
  for i = 1, N do
    local res = http:request(reqs[i])
    assert(res.status == 200 and #res.body > 20000, res.body)
  end
  loop = N / (core.monotonic() - t0)

  -- eight connections at once
  reqs = presign(N)
  t0 = core.monotonic()
  for i = 1, N, 8 do
    local batch = {}
    for k = i, math.min(N, i + 7) do batch[#batch + 1] = reqs[k] end
    for _, res in ipairs(http:request_many(batch)) do assert(res.status == 200, res.message) end
  end
  multi = N / (core.monotonic() - t0)
  counters = sim.counters()
end, sim)
assert(counters.requests["GET /lockers 200"] == 2 * N, "the simulator did not answer every request with a page")
print(string.format("sim   %-22s 100-lock pages, signed + verified: %6.0f pages/s (1 keep-alive connection), %6.0f pages/s (8 connections)",
  B.runtime, loop, multi))
