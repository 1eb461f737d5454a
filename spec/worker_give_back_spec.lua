-- kinot.callback.worker's entries it holds without running them, against a
-- real redis-server: those a batch skips past its claim_after / 2 cutoff
-- (a slow handler before them) were delivered (counted) but never run; they
-- must not use up an attempt, else the next claim buries them as "died"
-- without their handler ever running.  And the give-back itself (a Lua
-- script sent through kinot.redis, which may send a command again on a
-- fresh connection when a kept one is found dead) must hold when it runs
-- twice: never lowering a count below the attempts really made.
local core = require "kinot.core"
local worker = require "kinot.callback.worker"
local H = require "helpers"
local R = require "redis_server"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"

-- { [entry id] = deliveries } of the pending entries
local function pending(r, stream)
  local t = {}
  for _, row in ipairs(r.call("XPENDING", stream, worker.GROUP, "-", "+", 100)) do t[row[1]] = row[4] end
  return t
end

describe("callback.worker's entries held but not run #redis", function()
  local r
  setup(function() r = R.start {} end)
  teardown(function() r.stop() end)

  it("runs the entries a batch skipped past its cutoff (a slow handler before them), none buried unrun", function()
    H.put_statuses(r.url, "cut", { 1, 2, 3 }, SECRET)
    local attempts = {}
    -- claim_after 1 s: the batch's cutoff is 0.5 s after its read; the
    -- first handler takes 0.7 s, so 2 and 3 are skipped; max_attempts 1:
    -- one counted delivery they never ran is enough to bury them
    local w = worker.new { redis = r.url, stream = "cut", consumer = "slow", block = 0.1, count = 10, claim_after = 1,
                           max_attempts = 1, log = function() end, on_status = function(ev)
                             attempts[ev.sn] = (attempts[ev.sn] and attempts[ev.sn] .. "," or "") .. ev.attempt
                             if ev.sn == 1 then core.sleep(0.7) end
                           end }
    local t0 = core.monotonic()
    w:run(function() return w.handled + w.dead >= 3 or core.monotonic() - t0 > 8 end)
    w.client:close()
    assert.are.same({ [1] = "1", [2] = "1", [3] = "1" }, attempts)
    assert.are.equal(0, w.dead)
    assert.are.equal(0, r.call("XLEN", "cut:dead"))
    assert.are.same({}, pending(r, "cut"))
  end)

  it("a give-back run twice (kinot.redis's retry on a fresh connection) lowers the count once", function()
    H.put_statuses(r.url, "twice", { 101 }, SECRET)
    r.call("XGROUP", "CREATE", "twice", worker.GROUP, "0")
    local read = r.call("XREADGROUP", "GROUP", worker.GROUP, "w", "COUNT", 1, "STREAMS", "twice", ">")
    local id = read[1][2][1][1]
    -- two more deliveries, as two claims would count them: 3 attempts made
    r.call("XCLAIM", "twice", worker.GROUP, "w", 0, id)
    r.call("XCLAIM", "twice", worker.GROUP, "w", 0, id)
    assert.are.same({ [id] = 3 }, pending(r, "twice"))
    local w = worker.new { redis = r.url, stream = "twice", consumer = "w", log = function() end,
                           on_status = function() end }
    finally(function() w.client:close() end)
    -- the worker was given it at its third delivery and stopped before it
    -- ran: the same script a second time (a retry after the first ran but
    -- its reply was lost) must leave the two attempts really made
    assert(w:give_back({ id }, { [id] = 3 }))
    assert(w:give_back({ id }, { [id] = 3 }))
    assert.are.same({ [id] = 2 }, pending(r, "twice"))
  end)
  it("a give-back never takes an entry another worker claimed meanwhile, nor lowers its count", function()
    H.put_statuses(r.url, "race", { 201, 202 }, SECRET)
    r.call("XGROUP", "CREATE", "race", worker.GROUP, "0")
    local read = r.call("XREADGROUP", "GROUP", worker.GROUP, "a", "COUNT", 2, "STREAMS", "race", ">")
    local one, two = read[1][2][1][1], read[1][2][2][1]
    -- a's first entry idle past claim_after: b's claim takes it (its 2nd delivery)
    r.call("XCLAIM", "race", worker.GROUP, "a", 0, one, "IDLE", 120000, "JUSTID")
    local claimed = r.call("XAUTOCLAIM", "race", worker.GROUP, "b", 60000, "0", "COUNT", 10)
    assert.are.equal(1, #claimed[2])
    local a = worker.new { redis = r.url, stream = "race", consumer = "a", log = function() end,
                           on_status = function() end }
    finally(function() a.client:close() end)
    -- a, stopped, gives back the two it was given at their first delivery
    assert(a:give_back({ one, two }))
    local rows = r.call("XPENDING", "race", worker.GROUP, "-", "+", 10)
    assert.are.same({ { one, "b", 2 }, { two, "a", 0 } }, { { rows[1][1], rows[1][2], rows[1][4] },
                                                             { rows[2][1], rows[2][2], rows[2][4] } })
    -- b's claim takes a's given back at once, at its first counted delivery
    claimed = r.call("XAUTOCLAIM", "race", worker.GROUP, "b", 60000, "0", "COUNT", 10)
    assert.are.equal(two, claimed[2][1][1])
    assert.are.same({ [one] = 2, [two] = 1 }, pending(r, "race"))
  end)
end)

-- nginx reloaded (HUP) while its worker's batch runs: the old nginx worker
-- stops after the entry in hand and gives the rest back; the new one
-- claims them: each entry runs once, none dead, nothing left pending
describe("callback.worker inside nginx through a reload #redis #nginx", function()
  it("runs each entry of the batch in hand once across the reload", function()
    local r = R.start {}
    local ng
    finally(function()
      if ng then ng.stop() end
      r.stop()
    end)
    H.put_statuses(r.url, "reload", { 1, 2, 3, 4, 5, 6 }, SECRET)
    ng = H.nginx { http = [[
      lua_shared_dict seen 1m;
      init_worker_by_lua_block {
        require("kinot.callback.worker").start {
          redis = "]] .. r.url .. [[", stream = "reload", block = 0.2, count = 10, max_attempts = 1,
          on_status = function(ev)
            ngx.shared.seen:incr("n", 1, 0)
            ngx.shared.seen:incr("sn" .. ev.sn, 1, 0)
            ngx.sleep(0.5)
          end,
        }
      }
    ]], server = [[
      location = /seen { content_by_lua_block {
        local s = ngx.shared.seen
        local t = {}
        for sn = 1, 6 do t[#t + 1] = s:get("sn" .. sn) or 0 end
        ngx.print((s:get("n") or 0), " ", table.concat(t, ","))
      } }
    ]] }
    assert.truthy(H.wait_for(function() return H.raw("GET", ng.url .. "/seen").body:match("^1 ") end, 10))
    local pid = require("kinot.sim.launcher").running(ng.prefix)
    assert(os.execute("kill -HUP " .. pid))
    assert.truthy(H.wait_for(function() return H.raw("GET", ng.url .. "/seen").body:match("^6 ") end, 20),
      H.raw("GET", ng.url .. "/seen").body)
    core.sleep(1) -- (a seventh run would show)
    assert.are.equal("6 1,1,1,1,1,1", H.raw("GET", ng.url .. "/seen").body)
    assert.are.same({}, pending(r, "reload"))
    assert.are.equal(0, r.call("XLEN", "reload:dead"))
  end)
end)
