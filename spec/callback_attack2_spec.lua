-- A hostile review of the callback receiving path after issue 18 (third
-- wave): each spec here failed on the main it was written against (on the
-- runtime it names), and says which promise it holds.
local callback = require "kinot.callback"
local rules = require "kinot.callback.rules"
local worker = require "kinot.callback.worker"
local R = require "redis_server"
local H = require "helpers"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local function signed(body)
  return (body:gsub("}$", ',"sign":"' .. assert(callback.sign(body, SECRET)) .. '"}'))
end

local LUA = H.runtime == "luajit" and "luajit" or "lua5.4"
local CPATH = H.runtime == "luajit" and "build/5.1/?.so" or "build/5.4/?.so"

-- runs `code` in a fresh interpreter of this runtime; its stdout
local function fresh(code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local p = io.popen(string.format("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s;;' %s %s 2>&1", CPATH, LUA, path))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  return out
end

describe("Redis dedupe claim tokens do not collide between hosts #redis", function()
  -- Two nginx hosts in containers on one node with the host's network
  -- share a hostname, and their workers have the same pid in their own pid
  -- namespaces (7, say); each starts counting claims at 1.  Out of reach
  -- here (no containers): each host is a fresh interpreter whose
  -- ngx.worker.pid() answers 7, the rest is real (real redis-server, the
  -- real store).  A token they share lets the second host take the first
  -- host's pending mark for its own claim ("new"): the handler runs twice
  -- at once.
  it("a second host's claim of an event in hand is busy, never new", function()
    local r = R.start()
    finally(function() r.stop() end)
    local code = string.format([[
      _G.ngx = { worker = { pid = function() return 7 end } }
      local store = require("kinot.callback.redis_store").new { redis = %q, lease = 60 }
      print((store:claim("the-same-delivery")))
    ]], r.url)
    assert.are.equal("new\n", fresh(code))  -- host A has it in hand
    assert.are.equal("busy\n", fresh(code)) -- host B's copy must wait
  end)
end)

describe("a handler running past busy_ttl (ack = after_handler) #unit", function()
  -- The in-progress mark is a lease, not a lock: a copy that comes once it
  -- has run out runs the handler beside the first.  docs/callbacks.md says
  -- so (it said only "keeps the handler from running twice at once").
  -- This spec holds the documented behaviour (it passed before: the fix was
  -- to the docs).
  it("runs the copy beside it", function()
    local now = 1000
    local body = signed('{"sn":419631107,"locked":1}')
    local rcv
    local inside, overlap, copy_status = 0, 0, nil
    rcv = callback.receiver { secret = SECRET, ack = "after_handler", busy_ttl = 1, max_age = false,
      clock = function() return now end,
      on_status = function()
        inside = inside + 1
        if inside > 1 then overlap = overlap + 1 end
        if inside == 1 then
          now = now + 2 -- the first is slow: its lease runs out, the platform delivers again
          copy_status = rcv:receive(body)
        end
        inside = inside - 1
        return true
      end }
    assert.are.equal(200, (rcv:receive(body)))
    assert.are.equal(200, copy_status)
    assert.are.equal(1, overlap) -- twice at once: what the docs now say
  end)
end)

describe("the inbox's worker sees the event the receiver verified #redis", function()
  -- A body goes through the inbox (the receiver stores it) and comes back
  -- through a worker (rebuilt without the secret): the worker's event must
  -- be the one the receiver verified, under whatever sign_rule and verify
  -- mode the receiver had.  Real redis-server, the real inbox and worker.
  local r
  before_each(function() r = R.start() end)
  after_each(function() r.stop() end)

  local function through(ropts, body)
    ropts.inbox = { redis = r.url, stream = "s" }
    ropts.secret = SECRET
    ropts.max_age = false
    local rcv = callback.receiver(ropts)
    local status, _, ev = rcv:receive(body)
    assert.are.equal(200, status)
    local seen
    local w = worker.new { redis = r.url, stream = "s", block = 0.1, on_status = function(e) seen = e return true end }
    assert(w:step())
    assert.is_table(seen)
    return ev, seen
  end

  it("under sign_rule keep-empty / null-as-text: the members that rule signed", function()
    for _, rule in ipairs { "md5-key+keep-empty", "md5-key+null-as-text" } do
      local raw = '{"sn":419631107,"locked":1,"note":"","x":null}'
      local body = raw:gsub("}$", ',"sign":"' .. rules.sign(raw, SECRET, rules.rule(rule)) .. '"}')
      local ev, seen = through({ sign_rule = rule }, body)
      assert.are.same(ev.data, seen.data, rule)
    end
  end)

  it('under verify = "monitor": a body that failed verification reaches the worker as unverified', function()
    local body = '{"sn":419631107,"locked":0,"sign":"00000000000000000000000000000000"}' -- forged
    local ev, seen = through({ verify = "monitor" }, body)
    assert.is_false(ev.verified)
    assert.is_false(seen.verified) -- was true: a forgery handed to the worker as verified
  end)
end)

describe("a worker whose slow handler fails after another worker handled the entry #redis", function()
  -- Worker A's handler outlives claim_after; worker B claims the entry,
  -- handles it, acknowledges it; then A's handler fails.  A must not leave
  -- an error in <stream>:errors for an entry that is gone (nothing would
  -- ever remove it), nor move a handled entry to <stream>:dead.
  -- Real redis-server, the real inbox and workers (B runs inside A's
  -- handler: the interleaving is the point).
  local r
  before_each(function() r = R.start() end)
  after_each(function() r.stop() end)

  local function race(max_attempts)
    local rcv = callback.receiver { secret = SECRET, max_age = false, inbox = { redis = r.url, stream = "s" } }
    assert.are.equal(200, (rcv:receive(signed('{"sn":419631107,"locked":1}'))))
    local b = worker.new { redis = r.url, stream = "s", consumer = "b", block = 0.1, claim_after = 0.1,
                           on_status = function() return true end }
    local a = worker.new { redis = r.url, stream = "s", consumer = "a", block = 0.1, claim_after = 0.1,
      max_attempts = max_attempts, log = function() end,
      on_status = function()
        require("kinot.core").sleep(0.3) -- slower than claim_after
        assert.are.equal(1, b:step()) -- B takes it over and handles it
        return nil, "failed late"
      end }
    assert(a:step())
    local c = r.client()
    local hlen = c:call("HLEN", "s:errors")
    local dead = c:call("XLEN", "s:dead")
    c:close()
    return hlen, dead
  end

  it("leaves no error behind for it", function()
    local hlen, dead = race(5)
    assert.are.equal(0, hlen)
    assert.are.equal(0, dead)
  end)

  it("does not move it to the dead-letter stream at its last attempt", function()
    local hlen, dead = race(1)
    assert.are.equal(0, hlen)
    assert.are.equal(0, dead)
  end)
end)

describe("callback misuse raises misuse when the options are read, not a Lua error later #unit", function()
  local errors = require "kinot.errors"
  local function misuse(f, pattern)
    local ok, e = pcall(f)
    assert.is_false(ok, "accepted")
    assert.is_true(errors.is_misuse(e), "not a misuse: " .. tostring(e))
    if pattern then assert.matches(pattern, tostring(e)) end
  end
  local BODY = '{"sn":1,"locked":1,"updated_at":"2019-03-13T10:42:39+08:00","sign":"x"}'

  it("verify's max_body must be a positive number (was: attempt to compare string with number)", function()
    misuse(function() callback.verify(BODY, { secret = SECRET, max_body = "10" }) end, "max_body")
  end)

  it("clock must be a function, in the receiver and in verify (was: accepted, then a Lua error per request)", function()
    misuse(function() callback.receiver { secret = SECRET, clock = 5 } end, "clock")
    misuse(function() callback.verify(BODY, { secret = SECRET, max_age = 10, clock = "x" }) end, "clock")
  end)

  it("order_dict must be a lua_shared_dict (was: accepted, then a Lua error per request)", function()
    misuse(function() callback.receiver { secret = SECRET, order_dict = "x" } end, "order_dict")
  end)

  it("a worker's loops must be a positive whole number (was: accepted)", function()
    misuse(function() worker.new { redis = "redis://127.0.0.1:1", on_status = print, loops = "x" } end, "loops")
  end)

  it("discover's extra rules are checked whatever the body (was: only when its sign is hex)", function()
    misuse(function() callback.discover(BODY, SECRET, { { digest = "md5", bogus = 1 } }) end, "bogus")
    misuse(function() callback.discover(BODY, SECRET, { bogus = 1 }) end, "list")
  end)
end)
