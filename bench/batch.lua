-- client:send_commands at fleet scale against the simulator, 20 ms added to
-- every request (a latency fault on all of them), in one run:
--   the limit:  N x 20 ms / concurrency, what no batch of N at that
--               concurrency can beat (12.5 s for 10,000 at 16)
--   the batch:  send_commands(N serials, {concurrency = 16}): it streams
--               (a new command starts as soon as one ends)
--   journal on: the same with journal = file: one fsync for the commands
--               that start together (the count is shown), whatever the
--               disk's fsync costs on this machine now
--   the paths:  N POST /commands straight through the transport, no batch
--               around them: request.stream (16 in flight at all times, the
--               floor under the batch) and, the baseline, rounds of 16
--               through request.perform_many (each round waits for its
--               slowest: how the batch ran before it streamed)
--   naive loop: send_command one after another (BENCH_NAIVE commands,
--               per command; x N for the same work)
--   memory:     the Lua heap a batch holds per item (its results), after
--               1,000 and after N items, and its peak during the run
--   lua5.4 bench/batch.lua   (after make build; BENCH_COMMANDS=N, BENCH_NAIVE=n)
package.path = "./?.lua;" .. package.path
local B = require "bench.support"
local core = require "kinot.core"
local request = require "kinot.request"
local H = require "helpers"
local journal_core = require "kinot.core_loader"

local N = tonumber(os.getenv("BENCH_COMMANDS") or "10000")
local NAIVE = tonumber(os.getenv("BENCH_NAIVE") or "200")
local CONCURRENCY = 16
local LATENCY = 0.02
local FIRST = 419600001

-- (command_pace: the commands stay "sending"; no wait in this bench)
local sim = H.sim { locks = N + 10, command_pace = 3600 }

local function serials(n)
  local t = {}
  for i = 1, n do t[i] = FIRST + i - 1 end
  return t
end

local function heap_kb()
  collectgarbage("collect")
  collectgarbage("collect")
  return collectgarbage("count")
end

-- a batch of n: seconds, heap held per item (bytes), peak heap growth per item
local function batch(c, n, journal)
  local items = serials(n)
  local before = heap_kb()
  local peak = before
  local t0 = core.monotonic()
  local results, summary = c:send_commands(items, { parameter = { value = 1 }, concurrency = CONCURRENCY,
    journal = journal, on_progress = function()
      local k = collectgarbage("count")
      if k > peak then peak = k end
    end })
  local took = core.monotonic() - t0
  assert(results, summary)
  assert(summary.pending == n, "not every command was created: " .. summary.pending .. " of " .. n)
  local held = heap_kb() - before
  results, items = nil, nil -- luacheck: ignore
  local after = heap_kb() - before
  return took, held * 1024 / n, (peak - before) * 1024 / n, after
end

B.guarded(function()
  sim.fault { kind = "latency", latency = LATENCY, share = 1 }
  local c = sim.client()
  -- warm: connections open, code loaded
  c:send_commands(serials(64), { parameter = { value = 1 }, concurrency = CONCURRENCY })
  H.json("POST", sim.admin .. "/reset", {})
  sim.fault { kind = "latency", latency = LATENCY, share = 1 }

  local t1k, held1k, peak1k = batch(c, 1000)
  H.json("POST", sim.admin .. "/reset", {})
  sim.fault { kind = "latency", latency = LATENCY, share = 1 }

  local tn, heldn, peakn, left = batch(c, N)
  assert(sim.counters().commands_created == N)
  H.json("POST", sim.admin .. "/reset", {})
  sim.fault { kind = "latency", latency = LATENCY, share = 1 }

  local journal = os.tmpname()
  os.remove(journal)
  -- the journal's fsyncs, counted where it makes them
  local append, fsyncs = journal_core.append_durable, 0
  journal_core.append_durable = function(path, data, sync)
    if sync ~= false then fsyncs = fsyncs + 1 end
    return append(path, data, sync)
  end
  local tj = batch(c, N, journal)
  journal_core.append_durable = append
  local jbytes = #assert(io.open(journal, "rb")):read("*a")
  os.remove(journal)
  assert(sim.counters().commands_created == N)
  local fsync_t0 = core.monotonic()
  for _ = 1, 20 do assert(core.append_durable(journal, "x\n")) end
  local fsync_ms = (core.monotonic() - fsync_t0) / 20 * 1000
  os.remove(journal)

  local t0 = core.monotonic()
  for i = 1, NAIVE do assert(c:send_command(FIRST + i - 1, { key = "handle", value = 1 })) end
  local naive = (core.monotonic() - t0) / NAIVE
  local function command(k)
    return { method = "POST", path = "/commands", query = {}, idempotent = false,
             body = { sn = FIRST + k % N, command = 1, parameter = { key = "handle", value = 1 } } }
  end
  -- the baseline: rounds of 16 through perform_many
  t0 = core.monotonic()
  for r = 0, N // CONCURRENCY - 1 do
    local calls = {}
    for k = 1, CONCURRENCY do calls[k] = command(r * CONCURRENCY + k) end
    for _, a in ipairs(request.perform_many(c, calls)) do assert(a[1], a[2]) end
  end
  local rounds = core.monotonic() - t0
  -- the floor: 16 in flight at all times through request.stream
  local to_go, answered = N, 0
  t0 = core.monotonic()
  request.stream(c, CONCURRENCY, function(free)
    local calls = {}
    while #calls < free and to_go > 0 do
      calls[#calls + 1] = command(to_go)
      to_go = to_go - 1
    end
    return calls
  end, function(_, doc, err)
    assert(doc, err)
    answered = answered + 1
  end)
  local streamed = core.monotonic() - t0
  assert(answered == N)
  c:close()

  local limit = N * LATENCY / CONCURRENCY
  print(string.format("%s, %d commands, %g ms added per request, concurrency %d", B.runtime, N, LATENCY * 1000,
    CONCURRENCY))
  print(string.format("  limit (N x %g ms / %d)        %7.2f s", LATENCY * 1000, CONCURRENCY, limit))
  print(string.format("  send_commands (streams)       %7.2f s   x%.2f of the limit   (%d commands/s)",
    tn, tn / limit, math.floor(N / tn)))
  print(string.format("  send_commands, journal on     %7.2f s   x%.2f of the limit   (journal %d KB; %d fsyncs, " ..
    "%.1f commands each; an fsync %.1f ms now)", tj, tj / limit, jbytes // 1024, fsyncs, N / fsyncs, fsync_ms))
  print(string.format("  path: request.stream of %d     %7.2f s   x%.2f of the limit   (no batch around it: the floor)",
    CONCURRENCY, streamed, streamed / limit))
  print(string.format("  path: perform_many rounds of %d %6.2f s   x%.2f of the limit   (the baseline: each round " ..
    "waits for its slowest)", CONCURRENCY, rounds, rounds / limit))
  print(string.format("  naive loop of send_command    %7.2f s   (%.1f ms a command, %d timed, x N)", naive * N,
    naive * 1000, NAIVE))
  print(string.format("  1,000 items: %.2f s, heap held %.0f B/item, peak %.0f B/item", t1k, held1k, peak1k))
  print(string.format("  %d items: heap held %.0f B/item, peak %.0f B/item; %.0f KB left once the results go",
    N, heldn, peakn, left))
  print(string.format("  peak RSS %d KB", B.peak_rss_kb()))
end, sim)
