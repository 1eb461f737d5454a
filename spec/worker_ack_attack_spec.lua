-- kinot.callback.worker's acknowledgements that wait for the next read,
-- attacked where no read comes: the loop's next steps are claims (entries
-- of a dead worker, idle past claim_after, each claim batch running up to
-- claim_after / 2).  Against a real redis-server started here.
local core = require "kinot.core"
local worker = require "kinot.callback.worker"
local socket = require "socket"
local R = require "redis_server"
local H = require "helpers"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"

-- stores the status callbacks of locks first .. last in stream, as the handler's inbox does
local function put(r, stream, first, last)
  local sns = {}
  for sn = first, last do sns[#sns + 1] = sn end
  H.put_statuses(r.url, stream, sns, SECRET)
end

describe("the worker's deferred acknowledgements behind claim batches #redis #slow", function()
  local r, c
  before_each(function()
    r = R.start {}
    c = r.client()
  end)
  after_each(function()
    if c then c:close() end
    r.stop()
  end)

  -- a dead worker's entries (sn 1-3), then one this worker reads (sn 100):
  -- it runs them all, sn 100 first (1.1 s, past the first claim's time),
  -- then the ghost's, claimed one at a time (0.8 s each); the runs by sn
  local function backlog(max_attempts)
    assert(c:call("XGROUP", "CREATE", "s", "kinot", "0", "MKSTREAM"))
    put(r, "s", 1, 3)
    assert(c:call("XREADGROUP", "GROUP", "kinot", "ghost", "COUNT", 10, "STREAMS", "s", ">"))
    put(r, "s", 100, 100) -- the entry this worker reads and handles
    socket.sleep(1.0) -- the ghost's entries idle 1 s already
    local runs = {}
    local w = worker.new { redis = r.url, stream = "s", consumer = "a", block = 0.1, count = 1, claim_after = 2,
                           max_attempts = max_attempts, log = function() end,
                           on_status = function(ev)
                             runs[ev.sn] = (runs[ev.sn] or 0) + 1
                             -- sn 100's handler ends after the first claim is due; each
                             -- claimed one takes 0.8 s (within the batch's cutoff, 1 s)
                             socket.sleep(ev.sn == 100 and 1.1 or 0.8)
                           end }
    local t0 = core.monotonic()
    w:run(function() return core.monotonic() - t0 > 5.5 end)
    return runs
  end

  it("an entry handled, then claims for a while: acknowledged before they run, not claimed and run again", function()
    local runs = backlog(5)
    for sn = 1, 3 do assert.are.equal(1, runs[sn], "sn " .. sn) end
    -- handled once at t0 + 1.1 s: its acknowledgement must not wait 3 claim
    -- batches (2.4 s) while it idles past claim_after and this worker claims it
    assert.are.equal(1, runs[100], "sn 100 ran " .. tostring(runs[100]) .. " times")
    assert.are.equal(0, tonumber(c:call("XPENDING", "s", "kinot")[1]))
    assert.are.equal(0, tonumber(c:call("XLEN", "s:dead")))
  end)

  it("the same at max_attempts = 2: no handled entry claimed again and buried as died", function()
    local runs = backlog(2)
    for _, sn in ipairs { 1, 2, 3, 100 } do assert.are.equal(1, runs[sn], "sn " .. sn) end
    assert.are.equal(0, tonumber(c:call("XLEN", "s:dead")))
    assert.are.equal(0, tonumber(c:call("XPENDING", "s", "kinot")[1]))
  end)
end)
