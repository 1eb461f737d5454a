-- kinot.redis behind Sentinel (redis+sentinel:// URLs, kinot.redis_sentinel)
-- and the `wait` option of the inbox and the Redis dedupe: the URL and its
-- misuse, then a real master, two replicas and three Sentinels
-- (spec/support/sentinel_cluster.lua) started and stopped here.  The
-- failover under load, through nginx, is spec/redis_durability_spec.lua.
local callback = require "kinot.callback"
local core = require "kinot.core"
local kredis = require "kinot.redis"
local sentinel = require "kinot.redis_sentinel"
local launcher = require "kinot.sim.launcher"
local S = require "sentinel_cluster"
local H = require "helpers"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local function status_body(sn) return H.lock_status(sn, SECRET) end
-- ROLE of the server a client talks to now ("master", "slave")
local function role_of(k, c)
  local d = k.server(tonumber(c.where:match(":(%d+)$"))).client()
  local role = d:call("ROLE")
  d:close()
  return type(role) == "table" and role[1] or tostring(role)
end

local function raises(fn, expected)
  local ok, e = pcall(fn)
  assert.is_false(ok, "did not raise")
  e = tostring(e)
  if expected then assert.matches(expected, e, 1, true) end
  return e
end

describe("redis+sentinel:// URLs and the wait option #unit", function()
  it("reads the Sentinels, the master's name and db, the master's and the Sentinels' credentials", function()
    local o = kredis.parse("redis+sentinel://app:m%2Fpw@10.0.0.1:26380,sent-b,[::1]:26381/cars/3" ..
                           "?sentinel_password=s%40pw&sentinel_username=watch")
    assert.are.equal("app", o.username)
    assert.are.equal("m/pw", o.password)
    assert.are.equal(3, o.db)
    assert.are.same({ { host = "10.0.0.1", port = 26380 }, { host = "sent-b", port = 26379 }, { host = "::1", port = 26381 } },
      o.sentinel.sentinels)
    assert.are.equal("cars", o.sentinel.master)
    assert.are.equal("s@pw", o.sentinel.password)
    assert.are.equal("watch", o.sentinel.username)
    o = kredis.parse("redis+sentinel://127.0.0.1/mymaster")
    assert.are.equal(0, o.db)
    assert.is_nil(o.password)
    assert.is_nil(o.sentinel.password)
    assert.are.same({ { host = "127.0.0.1", port = 26379 } }, o.sentinel.sentinels)
    -- the redis:// form is unchanged
    assert.are.equal(6379, kredis.parse("redis://h/2").port)
  end)

  it("refuses a malformed URL as misuse, never showing either password", function()
    for _, url in ipairs {
      "redis+sentinel://:SECRETM@127.0.0.1:26379",                   -- no master name
      "redis+sentinel://:SECRETM@127.0.0.1:26379/",                  -- an empty one
      "redis+sentinel://:SECRETM@127.0.0.1:26379,,h2/m/0",           -- an empty Sentinel
      "redis+sentinel://:SECRETM@127.0.0.1:99999/m/0",               -- a port out of range
      "redis+sentinel://:SECRETM@127.0.0.1:26379/m/x",               -- a db not a number
      "redis+sentinel://:SECRETM@127.0.0.1/m/0?password=SECRETS",     -- an unknown parameter
      "redis+sentinel://:SECRETM@127.0.0.1/m/0?sentinel_password",    -- no value
      "redis+sentinel://SECRETM@127.0.0.1/m/0?sentinel_password=SECRETS", -- userinfo without a colon
      "redis+sentinel:/127.0.0.1/m",
    } do
      local e = raises(function() kredis.new(url) end, "kinot: redis")
      assert.is_nil(e:find("SECRET", 1, true), e)
    end
  end)

  it("redacts both passwords", function()
    assert.are.equal("redis+sentinel://***@h1,h2:26380/m/0?sentinel_password=***&sentinel_username=***",
      kredis.redact("redis+sentinel://:pw@h1,h2:26380/m/0?sentinel_password=spw&sentinel_username=u"))
  end)

  it("checks wait = { replicas, timeout } where it is given", function()
    assert.are.same({ replicas = 1, ms = 1000 }, kredis.wait_option({ replicas = 1 }, "inbox"))
    assert.are.same({ replicas = 2, ms = 250 }, kredis.wait_option({ replicas = 2, timeout = 0.25 }, "inbox"))
    local url = "redis+sentinel://127.0.0.1/m/0"
    for _, w in ipairs { 1, { replicas = 0 }, { replicas = 1.5 }, { replicas = 1, timeout = 0 },
                         { replicas = 1, timeout = 0 / 0 }, { replicas = 1, timeot = 1 }, {} } do
      raises(function() callback.handler { secret = "s", inbox = { redis = url, wait = w } } end, "kinot: inbox.wait")
      raises(function() callback.handler { secret = "s", dedupe = { redis = url, wait = w }, on_status = print } end,
        "kinot: dedupe.wait")
    end
    raises(function()
      callback.handler { secret = "s", inbox = { redis = url }, dedupe = { redis = url, wait = { replicas = 1 } } }
    end, "kinot: with an inbox, give wait in inbox")
  end)

  it("says network, naming each Sentinel, when none answers, within the call's timeout", function()
    local a, b = launcher.free_port(), launcher.free_port()
    local c = kredis.new("redis+sentinel://:SECRETM@127.0.0.1:" .. a .. ",127.0.0.1:" .. b .. "/m/0?sentinel_password=SECRETS",
                         { timeout = 0.4 })
    local t0 = core.monotonic()
    local v, err = c:call("PING")
    local took = core.monotonic() - t0
    assert.is_nil(v)
    assert.are.equal("network", err.kind)
    assert.is_true(err.retryable)
    assert.matches("no master m found", err.message, 1, true)
    assert.matches("127.0.0.1:" .. a, err.message, 1, true)
    assert.matches("127.0.0.1:" .. b, err.message, 1, true)
    assert.is_nil(err.message:find("SECRET", 1, true))
    assert.is_true(took >= 0.35 and took < 1.5, took) -- it kept asking until the deadline, not past it
  end)
end)

describe("a Redis behind Sentinel #redis #nginx #slow", function()
  local k
  local PASSWORD, SPASSWORD = "master/Pw@1", "sentinel:Pw&2"
  setup(function()
    k = S.start { password = PASSWORD, sentinel_password = SPASSWORD }
    k.wait_ready()
  end)
  teardown(function() if k then k.stop() end end)

  -- A Sentinel failover while the old master still runs (SENTINEL FAILOVER
  -- here; a network partition in life): the old master takes writes until
  -- Sentinel demotes it, and what it took then is lost, even when one of
  -- two replicas acknowledged it (WAIT 1): that replica is still the old
  -- master's until Sentinel points it at the new one, and then drops what
  -- the new master never had.  Only WAIT for every replica keeps each
  -- write answered (the promoted replica has left the old master: a WAIT
  -- for it fails).  The figures of the three go to stderr (docs/redis.md).
  it("follows a manual SENTINEL FAILOVER; with wait = every replica, loses no write it answered", function()
    local c = kredis.new(k.url, { timeout = 2 })
    local old = k.master_port()
    assert.are.equal("OK", c:call("SET", "before", "1"))
    assert.are.equal("127.0.0.1:" .. old, c.where)
    local INCR = "return redis.call('INCR', KEYS[1])"
    local modes = { { key = "all", wait = kredis.wait_option({ replicas = 2, timeout = 0.3 }, "spec") },
                    { key = "one", wait = kredis.wait_option({ replicas = 1, timeout = 0.3 }, "spec") },
                    { key = "none" } }
    for _, m in ipairs(modes) do m.ok, m.failed = 0, 0 end
    local s = k.sentinel_client(2)
    assert.are.equal("OK", s:call("SENTINEL", "FAILOVER", S.NAME))
    s:close()
    local t0, new = core.monotonic(), nil
    while core.monotonic() - t0 < 15 do
      for _, m in ipairs(modes) do
        local v, err
        if m.wait then v, err = c:eval_wait(m.wait, INCR, 1, m.key) else v, err = c:call("INCR", m.key) end
        if v then m.ok = m.ok + 1 else
          m.failed = m.failed + 1
          assert.is_true(err.retryable, tostring(err))
        end
      end
      if c.where ~= "127.0.0.1:" .. old then
        new = new or core.monotonic()
        if core.monotonic() - new > 0.5 then break end
      end
      core.sleep(0.002)
    end
    assert.is_truthy(new, "the client never reached another master")
    local port = k.wait_master(old)
    assert.are.equal("127.0.0.1:" .. port, c.where)
    local direct = k.server(port).client()
    assert.are.equal("1", direct:call("GET", "before"))
    for _, m in ipairs(modes) do
      m.have = tonumber(direct:call("GET", m.key)) or 0
      io.stderr:write(string.format("\n  manual failover, wait %s: %d answered, %d failed, %d on the new master: %d lost",
        m.key, m.ok, m.failed, m.have, math.max(0, m.ok - m.have)))
    end
    io.stderr:write("\n")
    -- every write answered with every replica's acknowledgement is there; none twice (no lost reply sent again)
    assert.is_true(modes[1].have >= modes[1].ok and modes[1].have <= modes[1].ok + modes[1].failed,
      modes[1].have .. " on the master, " .. modes[1].ok .. " answered, " .. modes[1].failed .. " failed")
    assert.is_true(modes[1].ok > 0)
    -- the old master is a replica now: a write there is refused (READONLY)
    H.wait_for(function()
      local d = k.server(old).client()
      local _, err = d:call("SET", "x", "1")
      d:close()
      return err and err.code == "READONLY"
    end, 10)
    direct:close()
    c:close()
  end)

  it("goes from a demoted master's READONLY to the new master at once (a master this process still knows)", function()
    local old_ttl = sentinel.TTL
    sentinel.TTL = 60 -- this process keeps the old master through the failover
    k.wait_ready() -- (after the spec before's failover)
    local ok, e = pcall(function()
      local c = kredis.new(k.url, { timeout = 3 })
      sentinel.forget(c.sentinel) -- (the spec before left it a second)
      assert.are.equal("OK", c:call("SET", "a", "1"))
      local old = k.master_port()
      assert.are.equal("127.0.0.1:" .. old, c.where)
      c:close()
      local s = k.sentinel_client(1)
      assert.are.equal("OK", s:call("SENTINEL", "FAILOVER", S.NAME))
      s:close()
      k.wait_master(old)
      -- the old master has turned replica (Sentinel looks at it every 10 s)
      assert.is_truthy(H.wait_for(function()
        local d = k.server(old).client()
        local role = d:call("ROLE")
        d:close()
        return type(role) == "table" and role[1] == "slave"
      end, 25), "Sentinel never demoted the old master")
      -- a new client (no kept connection): the process's cache names the old master, which answers READONLY
      local c2 = kredis.new(k.url, { timeout = 3 })
      assert.are.equal(old, select(2, sentinel.known(c2.sentinel)))
      assert.are.equal("OK", c2:call("SET", "a", "2"))
      assert.are_not.equal("127.0.0.1:" .. old, c2.where)
      assert.are.equal("master", role_of(k, c2))
      assert.are_not.equal(old, select(2, sentinel.known(c2.sentinel)))
      c2:close()
    end)
    sentinel.TTL = old_ttl
    assert(ok, e)
  end)

  it("with inbox wait: 503 while no replica has the entry, its redelivery too, 200 once one has", function()
    k.wait_ready()
    local rcv = callback.receiver { secret = SECRET, max_age = false,
                                    inbox = { redis = k.url, stream = "waited", wait = { replicas = 1, timeout = 0.3 } } }
    local plain = callback.receiver { secret = SECRET, max_age = false, inbox = { redis = k.url, stream = "waited" } }
    -- (a loaded machine may keep a replica's acknowledgement past 0.3 s now and then)
    assert.is_truthy(H.wait_for(function() return (rcv:receive(status_body(1))) == 200 end, 5))
    local replicas = k.replicas()
    assert.are.equal(2, #replicas)
    for _, r in ipairs(replicas) do r.pause() end
    local ok, e = pcall(function()
      local body = status_body(2)
      local st, res, _, err = rcv:receive(body)
      assert.are.equal(503, st, res)
      assert.matches("0 of 1 replica", tostring(err))
      -- the redelivery finds the entry stored (its script writes nothing): still 503, for the same reason
      st, _, _, err = rcv:receive(body)
      assert.are.equal(503, st)
      assert.matches("0 of 1 replica", tostring(err))
      -- without wait, the same is answered 200 at once
      assert.are.equal(200, (plain:receive(status_body(3))))
    end)
    for _, r in ipairs(replicas) do r.resume() end
    assert(ok, e)
    -- (the replicas catch up on what they missed while stopped)
    assert.is_truthy(H.wait_for(function() return (rcv:receive(status_body(2))) == 200 end, 10))
    assert.are.equal(200, (rcv:receive(status_body(4))))
    local c = kredis.new(k.url)
    assert.are.equal(4, tonumber(c:call("XLEN", "waited")))
    c:close()
  end)

  it("with dedupe wait: a done mark not on a replica is a settle error (logged), not a 5xx", function()
    k.wait_ready()
    local store = require("kinot.callback.redis_store").new { redis = k.url, wait = { replicas = 1, timeout = 0.3 } }
    local state, token = store:claim("d1")
    assert.are.equal("new", state)
    assert.is_true(store:settle("d1", token, true))
    local replicas = k.replicas()
    for _, r in ipairs(replicas) do r.pause() end
    local ok, e = pcall(function()
      state, token = store:claim("d2")
      assert.are.equal("new", state)
      local v, err = store:settle("d2", token, true)
      assert.is_nil(v)
      assert.are.equal("NOREPLICAS", err.code)
      assert.matches("0 of 1 replica", err.message)
      assert.are.equal("done", store:claim("d2")) -- on the master all the same
      -- a failed handler's settle does not wait
      state, token = store:claim("d3")
      assert.is_true(store:settle("d3", token, false))
    end)
    for _, r in ipairs(replicas) do r.resume() end
    assert(ok, e)
  end)

  -- the Sentinels before the real one are FAKES (spec/support/redis_hostile.py):
  -- a real Sentinel cannot be made to drip, or to name a port "abc"
  it("passes over a Sentinel that drips, names no usable address, or is down, for the next", function()
    local fakes = {}
    local ok, e = pcall(function()
      for _, mode in ipairs { "drip", "badaddr", "deep" } do
        fakes[#fakes + 1] = H.fake("redis_hostile.py", mode)
      end
      local down = launcher.free_port()
      local url = k.url:gsub("@", "@127.0.0.1:" .. fakes[1].port .. ",127.0.0.1:" .. fakes[2].port .. ",127.0.0.1:" ..
        fakes[3].port .. ",127.0.0.1:" .. down .. ",", 1)
      local c = kredis.new(url, { timeout = 3, connect_timeout = 0.5 })
      sentinel.forget(c.sentinel)
      local t0 = core.monotonic()
      assert.are.equal("PONG", c:call("PING"))
      assert.is_true(core.monotonic() - t0 < 1.5, "the dripping Sentinel held the call " .. (core.monotonic() - t0) .. " s")
      assert.are.equal("127.0.0.1:" .. k.master_port(), c.where)
      c:close()
      -- only the fakes: an error naming each, in time
      -- (no Sentinel password: each fake's bad answer goes to SENTINEL, not to AUTH)
      local only = "redis+sentinel://127.0.0.1:" .. fakes[1].port .. ",127.0.0.1:" .. fakes[2].port .. ",127.0.0.1:" ..
        fakes[3].port .. ",127.0.0.1:" .. down .. "/" .. S.NAME .. "/0"
      c = kredis.new(only, { timeout = 1.5, connect_timeout = 0.3 })
      t0 = core.monotonic()
      local v, err = c:call("PING")
      assert.is_nil(v)
      assert.is_true(core.monotonic() - t0 < 2.5)
      assert.are.equal("network", err.kind)
      assert.matches("127.0.0.1:" .. fakes[2].port .. " answered no address", err.message, 1, true)
      assert.matches("127.0.0.1:" .. fakes[3].port .. ": .*nested deeper", err.message)
      assert.is_nil(err.message:find("Pw", 1, true))
      c:close()
    end)
    for _, f in ipairs(fakes) do f.stop() end
    assert(ok, e)
  end)

  it("inside nginx asks a Sentinel about once a second per worker, not once a request", function()
    k.wait_ready()
    local ng = H.handler_host(SECRET, "{ inbox = { redis = '" .. k.url .. "', stream = 'cached' } }")
    local ok, e = pcall(function()
      -- commands the first Sentinel (the one asked first) has run: the
      -- other Sentinels PING it every second, and this INFO counts too
      local function processed()
        local c = k.sentinel_client(1)
        local info = assert(c:call("INFO", "stats"))
        c:close()
        return tonumber(info:match("total_commands_processed:(%d+)"))
      end
      local before, t0 = processed(), core.monotonic()
      for i = 1, 300 do
        assert.are.equal(200, H.raw("POST", ng.url .. "/cb", status_body(5000 + i),
          { ["Content-Type"] = "application/json" }).status)
      end
      local took = core.monotonic() - t0
      local asked = processed() - before
      -- at most: a lookup (AUTH, SENTINEL) a second, 2 PINGs a second, 2 INFO, and slack
      local bound = math.ceil(took + 1) * 4 + 10
      assert.is_true(bound < 300, "posting took " .. took .. " s: too slow for the count to tell")
      assert.is_true(asked <= bound, asked .. " commands at the Sentinel for 300 callbacks in " .. took .. " s")
    end)
    ng.stop()
    assert(ok, e)
  end)

  it("kinot worker --redis redis+sentinel://... runs the stored events, and shows neither password", function()
    local dir = H.sn_handler("sentinel_handler")
    local box = require("kinot.callback.inbox").new { redis = k.url, stream = "cli" }
    for sn = 1, 5 do
      local body = status_body(100 + sn)
      assert.is_true(box:put(assert(callback.verify(body, { secret = SECRET })).id, body, os.time()))
    end
    box.client:close()
    local pid
    local ok, e = pcall(function()
      pid = H.kinot_spawn("worker --redis '" .. k.url .. "' --stream cli --handler sentinel_handler --block 0.2",
        "LUA_PATH='" .. dir .. "/?.lua;;'", dir .. "/log")
      assert.is_truthy(H.wait_for(function()
        local d = H.read(dir .. "/handled")
        return d and select(2, d:gsub("\n", "")) == 5
      end, 10), "the worker ran: " .. tostring(H.read(dir .. "/handled")) .. "\n" .. tostring(H.read(dir .. "/log")))
      local log = H.read(dir .. "/log")
      assert.matches("on redis+sentinel://***@127.0.0.1:", log, 1, true)
      assert.matches("sentinel_password=***", log, 1, true)
      assert.is_nil(log:find("Pw", 1, true), log)
    end)
    if pid then H.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    H.execute("rm -rf " .. dir)
    assert(ok, e)
  end)
  -- last: it leaves the old master to Sentinel to mend
  it("goes from a master turned stale replica's MASTERDOWN to the master Sentinel promotes next", function()
    k.wait_ready()
    local old_ttl = sentinel.TTL
    sentinel.TTL = 60 -- (so that the client meets MASTERDOWN, not a lookup of its own)
    local c = kredis.new(k.url, { timeout = 8 })
    sentinel.forget(c.sentinel)
    local ok0, e0 = pcall(c.call, c, "SET", "m", "1")
    sentinel.TTL = old_ttl
    assert(ok0, e0)
    assert.are.equal("OK", e0)
    local old = k.master_port()
    assert.are.equal("127.0.0.1:" .. old, c.where)
    -- the master becomes the replica of nothing, and refuses to serve stale data
    local a = k.server(old).client()
    assert.are.equal("OK", a:call("CONFIG", "SET", "replica-serve-stale-data", "no"))
    assert.are.equal("OK", a:call("REPLICAOF", "127.0.0.1", tostring(launcher.free_port())))
    local _, err = a:call("GET", "m")
    assert.are.equal("MASTERDOWN", err.code)
    -- the client still knows it as the master: MASTERDOWN, then Sentinel
    -- names it (ROLE says slave: not taken) until the failover asked now
    -- (Sentinel would itself, after 20 s) promotes another
    local s = k.sentinel_client(3)
    assert.are.equal("OK", s:call("SENTINEL", "FAILOVER", S.NAME))
    s:close()
    local v
    v, err = c:call("SET", "m", "2")
    assert.are.equal("OK", v, tostring(err))
    assert.are_not.equal("127.0.0.1:" .. old, c.where)
    assert.are.equal("master", role_of(k, c))
    local d = k.server(tonumber(c.where:match(":(%d+)$"))).client()
    assert.are.equal("2", d:call("GET", "m"))
    d:close()
    a:close()
    c:close()
  end)
end)
