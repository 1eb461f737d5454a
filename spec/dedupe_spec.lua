-- The dedupe stores' promises under attack (issue 18, defects 1 and 2),
-- against a real redis-server and real nginx started here:
--   * a claim whose answer was lost (Redis stalled past the client's
--     timeout, or the kept connection died and the claim went again on a
--     fresh one) is never read as "already seen" on the redelivery;
--   * the in-progress mark of ack = "after_handler" in a lua_shared_dict is
--     never evicted by other deliveries filling the dict: a copy of an
--     event never runs beside the first.
local callback = require "kinot.callback"
local core = require "kinot.core"
local store = require "kinot.callback.redis_store"
local R = require "redis_server"
local H = require "helpers"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"

local function signed(body)
  return (body:gsub("}$", ',"sign":"' .. assert(callback.sign(body, SECRET)) .. '"}'))
end
local function status_body(sn)
  return signed(string.format('{"sn":%d,"locked":1,"car_detected":0,"device_type":18}', sn))
end
local function post(ng, body)
  return H.raw("POST", ng.url .. "/cb", body, { ["Content-Type"] = "application/json" })
end
local function shell(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local function host(opts_lua, extra_http) return H.handler_host(SECRET, opts_lua, extra_http) end
local seen = H.seen
local COUNT = H.COUNT_EVENT

-- holds Redis's event loop `seconds` (a script spinning on TIME), from
-- redis-cli in the background
local function stall(r, seconds)
  return shell("redis-cli -p " .. r.port .. " EVAL \"local s = redis.call('TIME') " ..
    "local t0 = s[1] * 1e6 + s[2] repeat s = redis.call('TIME') until s[1] * 1e6 + s[2] - t0 > " ..
    math.floor(seconds * 1e6) .. " return 1\" 0 >/dev/null 2>&1 &") and core.sleep(0.1) == nil
end

-- the platform delivering again until it gets 200 (at most `seconds`)
local function deliver_until_ok(ng, body, seconds)
  local deadline = core.monotonic() + seconds
  local res
  repeat
    res = post(ng, body)
    if res.status == 200 then return res end
    core.sleep(0.2)
  until core.monotonic() > deadline
  return res
end

describe("ack = immediate on Redis dedupe: a lost answer is not a duplicate #redis #nginx", function()
  local r, ng
  setup(function()
    r = R.start {}
    ng = host("{ ack = 'immediate', dedupe = { redis = '" .. r.url .. "', timeout = 0.3, lease = 1 }, " ..
              "on_status = " .. COUNT .. " }")
  end)
  teardown(function()
    if ng then ng.stop() end
    r.stop()
  end)

  it("runs the handler for the redelivery of a delivery whose SET NX answer never came", function()
    local body = status_body(201)
    -- Redis stalls longer than the receiver's timeout (a script spinning
    -- 1.2 s holds its event loop, as DEBUG SLEEP would): the claim waits in
    -- its socket, the platform gets 503, and Redis runs the claim afterwards
    assert(stall(r, 1.2))
    local res = post(ng, body)
    assert.are.equal(503, res.status)
    core.sleep(1.4) -- the stall is over: the queued claim has run
    res = deliver_until_ok(ng, body, 5)
    assert.are.equal(200, res.status)
    assert.are.equal(1, H.wait_for(function() return seen(ng) == 1 and 1 end, 3))
    -- and it stays handled once
    assert.are.equal(200, post(ng, body).status)
    core.sleep(0.2)
    assert.are.equal(1, seen(ng))
  end)
end)

describe("the Redis store's claim sent twice #redis", function()
  local r
  setup(function() r = R.start {} end)
  teardown(function() r.stop() end)

  -- kinot.redis sends a command again on a fresh connection when the kept
  -- one died: if it died between Redis's work and its reply, the command
  -- runs twice.  Killing a connection exactly there is out of reach, so the
  -- client here sends every command twice and keeps the second reply:
  -- exactly what that retry does.
  it("reads its own claim, run twice, as new, never as already seen", function()
    local s = store.new { redis = r.url, timeout = 1, lease = 1 }
    local send = s.client.call_timeout
    s.client.call_timeout = function(c, ...)
      send(c, ...)
      return send(c, ...)
    end
    local state = s:claim("twice")
    assert.are.equal("new", state)
  end)
end)

describe("ack = after_handler in a full lua_shared_dict: the in-progress mark stays #nginx", function()
  local ng
  setup(function()
    -- the handler of sn 1 sleeps; meanwhile other deliveries fill the dict
    ng = host("{ dedupe = 'dedupe', dedupe_ttl = 3600, max_age = false, on_status = function(ev) " ..
              "ngx.shared.seen:incr('n', 1, 0) if ev.sn == 1 then ngx.sleep(1.5) end end }",
              "lua_shared_dict dedupe 12k; lua_shared_dict dedupe_busy 12k;")
  end)
  teardown(function()
    if ng then ng.stop() end
  end)

  it("never runs a copy of an event beside the first, however many deliveries come meanwhile", function()
    local first = status_body(1)
    -- the first delivery, in the background (its handler sleeps 1.5 s)
    local out = os.tmpname()
    assert(shell("curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' " ..
                 "--data-binary '" .. first .. "' " .. ng.url .. "/cb > " .. out .. " &"))
    core.sleep(0.3)
    -- many other deliveries: far more than a 12k dict holds
    for sn = 1000, 1400 do assert.are.equal(200, post(ng, status_body(sn)).status) end
    -- a copy of the first, while it is still handled: never run beside it
    local res = post(ng, first)
    assert.are.equal(503, res.status)
    core.sleep(1.5)
    local f = io.open(out)
    local code = f:read("*a")
    f:close()
    os.remove(out)
    assert.are.equal("200", code)
    -- sn 1 ran once; each other once
    assert.are.equal(1 + 401, seen(ng))
  end)
end)
