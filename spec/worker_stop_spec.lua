-- kinot.callback.worker stopped in the middle of a batch (run's until_fn
-- true between two entries: `kinot worker`'s Ctrl-C, nginx's worker
-- exiting), against a real redis-server: the entries it did not run, and
-- one whose handler failed as the stop came, are given back (pending,
-- their delivery uncounted, claimable at once), never judged as failed
-- attempts nor dead-lettered.  A failure while not stopping is still one.
local core = require "kinot.core"
local worker = require "kinot.callback.worker"
local H = require "helpers"
local R = require "redis_server"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"

-- { deliveries of each pending entry } (XPENDING's counts, in order)
local function pending(r, stream)
  local t = {}
  for _, row in ipairs(r.call("XPENDING", stream, worker.GROUP, "-", "+", 100)) do t[#t + 1] = row[4] end
  return t
end

describe("callback.worker stopped mid-batch #redis", function()
  local r
  setup(function() r = R.start {} end)
  teardown(function() r.stop() end)


  -- a worker of max_attempts 1 (each entry read is at its last attempt)
  -- whose first handler call fails; stop_on_failure: the stop comes as it
  -- fails (as Ctrl-C stopping its wait), else once it was judged
  local function first_fails(stream, stop_on_failure)
    local stopping, calls = false, 0
    local w
    w = worker.new { redis = r.url, stream = stream, consumer = "first", block = 0.1, max_attempts = 1,
                     count = 10, log = function() end, on_status = function()
                       calls = calls + 1
                       if stop_on_failure then stopping = true end
                       return nil, "failed"
                     end }
    w:run(function() return stopping or w.failed > 0 end)
    w.client:close()
    return w, calls
  end

  it("gives back the entry whose handler failed as the stop came, and those after it: pending, uncounted, none dead",
     function()
    H.put_statuses(r.url, "stop", { 1, 2, 3 }, SECRET)
    local w, calls = first_fails("stop", true)
    assert.are.equal(1, calls)
    assert.are.same({ 0, 0, 0, failed = 0, dead = 0 }, { pending(r, "stop")[1], pending(r, "stop")[2], pending(r, "stop")[3],
                                                           failed = w.failed, dead = w.dead })
    assert.are.equal(0, r.call("XLEN", "stop:dead"))
    assert.are.equal(0, r.call("HLEN", "stop:errors"))
    -- the next worker (the same claim_after, 60 s) claims them at once: each its first attempt
    local attempts = {}
    local nxt = worker.new { redis = r.url, stream = "stop", consumer = "next", block = 0.1, max_attempts = 1,
                             log = function() end, on_status = function(ev) attempts[ev.sn] = ev.attempt end }
    local t0 = core.monotonic()
    nxt:run(function() return nxt.handled >= 3 or core.monotonic() - t0 > 10 end)
    nxt.client:close()
    assert.are.same({ 1, 1, 1 }, attempts)
    assert.are.same({}, pending(r, "stop"))
    assert.are.equal(0, r.call("XLEN", "stop:dead"))
  end)

  it("still judges a handler that failed while the worker was not stopping: its last attempt goes to dead", function()
    H.put_statuses(r.url, "fail", { 11 }, SECRET)
    local w, calls = first_fails("fail", false)
    assert.are.equal(1, calls)
    assert.are.equal(1, w.failed)
    assert.are.equal(1, w.dead)
    assert.are.equal(1, r.call("XLEN", "fail:dead"))
    assert.are.same({}, pending(r, "fail"))
  end)
end)

-- Inside nginx run's until_fn is ngx.worker.exiting(): a worker told to
-- quit (a reload, a stop) runs no further entry of the batch in hand (it
-- used to run them all first, however slow: nginx's exit waited for them)
describe("callback.worker inside nginx, quitting mid-batch #redis #nginx", function()
  it("runs no further entry once nginx is told to quit: the rest given back, run by the next worker once", function()
    local r = R.start {}
    local ng
    finally(function()
      if ng then ng.stop() end
      r.stop()
    end)
    H.put_statuses(r.url, "quit", { 1, 2, 3, 4, 5, 6 }, SECRET)
    ng = H.nginx { http = [[
      lua_shared_dict seen 1m;
      init_worker_by_lua_block {
        require("kinot.callback.worker").start {
          redis = "]] .. r.url .. [[", stream = "quit", block = 0.2, count = 10, max_attempts = 1,
          on_status = function()
            ngx.shared.seen:incr("n", 1, 0)
            ngx.sleep(1)
          end,
        }
      }
    ]], server = [[
      location = /seen { content_by_lua_block { ngx.print(ngx.shared.seen:get("n") or 0) } }
    ]] }
    assert.truthy(H.wait_for(function() return H.raw("GET", ng.url .. "/seen").body == "1" end, 10))
    local t0 = core.monotonic()
    ng.stop(true) -- QUIT: a graceful stop
    assert.is_true(core.monotonic() - t0 < 3, "nginx took " .. (core.monotonic() - t0) .. " s to quit")
    -- the first ran (acknowledged, deleted), the five others given back
    assert.are.same({ 0, 0, 0, 0, 0 }, pending(r, "quit"))
    assert.are.equal(5, r.call("XLEN", "quit"))
    assert.are.equal(0, r.call("XLEN", "quit:dead"))
    local sns = {}
    local nxt = worker.new { redis = r.url, stream = "quit", consumer = "next", block = 0.1, max_attempts = 1,
                             log = function() end, on_status = function(ev) sns[#sns + 1] = ev.sn end }
    t0 = core.monotonic()
    nxt:run(function() return nxt.handled >= 5 or core.monotonic() - t0 > 10 end)
    nxt.client:close()
    table.sort(sns)
    assert.are.same({ 2, 3, 4, 5, 6 }, sns)
    assert.are.equal(0, r.call("XLEN", "quit:dead"))
  end)
end)
