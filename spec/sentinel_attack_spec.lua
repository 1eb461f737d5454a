-- Attacks on Redis behind Sentinel and the `wait` option (kinot.redis,
-- kinot.redis_sentinel, the inbox): each tries to get an event answered
-- 200 that a failover could lose, a secret into a message, or a call held
-- or misreported.  Real parts: Debian's redis-server and redis-sentinel
-- (spec/support/sentinel_cluster.lua), nginx, kinot.callback.worker, all
-- started and stopped here; the one fake is a listening socket that never
-- answers (a Sentinel that stalls: a real one cannot be made to).
local callback = require "kinot.callback"
local kredis = require "kinot.redis"
local R = require "redis_server"
local H = require "helpers"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local function status_body(sn) return H.lock_status(sn, SECRET) end

local function raises(fn)
  local ok, e = pcall(fn)
  assert.is_false(ok, "did not raise")
  return tostring(e)
end

describe("a Sentinel URL's passwords, unescaped #unit", function()
  -- a password pasted as it is (not percent-escaped) may hold & @ ? #:
  -- neither redact (kinot worker prints its URL so) nor a misuse message
  -- may show any piece of it
  local urls = {
    "redis+sentinel://127.0.0.1:1/m?sentinel_password=SEC&RET",        -- an & cuts it in two
    "redis+sentinel://127.0.0.1:1/m?sentinel_password=SEC&R=ET",
    "redis+sentinel://127.0.0.1:1/m?sentinel_password=S#E@CRET",       -- an @ in the query
    "redis+sentinel://:MA@STER@127.0.0.1:1/m?sentinel_password=S@CRET",
    "redis+sentinel://:MA&S?TER@127.0.0.1:1/m/0",                      -- a ? in the master's
    "redis+sentinel://127.0.0.1:1/m?sentinel_username=US&ER&sentinel_password=SECRET",
  }
  it("redact shows no piece of either password, and still the Sentinels", function()
    for _, url in ipairs(urls) do
      local shown = kredis.redact(url)
      for _, piece in ipairs { "SEC", "RET", "CRET", "ET", "MA", "STER", "TER", "US", "ER" } do
        assert.is_nil(shown:find(piece, 1, true), url .. " shown as " .. shown)
      end
    end
    assert.are.equal("redis+sentinel://127.0.0.1:1/m?sentinel_password=***",
      kredis.redact("redis+sentinel://127.0.0.1:1/m?sentinel_password=S#E@CRET"))
    assert.are.equal("redis+sentinel://***@127.0.0.1:1/m?sentinel_password=***",
      kredis.redact("redis+sentinel://:MA@STER@127.0.0.1:1/m?sentinel_password=S@CRET"))
    -- (redis://: the userinfo runs to the last @, a ? in it included)
    assert.are.equal("redis://***@127.0.0.1:1/0", kredis.redact("redis://:P?W@127.0.0.1:1/0"))
  end)

  it("a misuse names no piece of either password", function()
    for _, url in ipairs(urls) do
      local ok, e = pcall(kredis.new, url)
      if not ok then
        e = tostring(e)
        for _, piece in ipairs { "SEC", "RET", "CRET", "ET", "MA", "STER", "TER", "US", "ER" } do
          assert.is_nil(e:find(piece, 1, true), e)
        end
      end
    end
    raises(function() kredis.new(urls[1]) end)
  end)
end)

describe("TLS behind Sentinel #unit #cli", function()
  -- not built: a Sentinel URL with TLS is refused saying so, never read as
  -- a plain redis:// one nor taken without its TLS
  it("is refused by name, as a rediss+sentinel:// URL and as tls with redis+sentinel://", function()
    local e = raises(function() kredis.new("rediss+sentinel://:SECRET@127.0.0.1:26379/m/0") end)
    assert.matches("TLS behind Sentinel is not supported", e, 1, true)
    assert.is_nil(e:find("SECRET", 1, true), e)
    e = raises(function() kredis.new("redis+sentinel://:SECRET@127.0.0.1:26379/m/0", { tls = { verify_tls = false } }) end)
    assert.matches("TLS behind Sentinel is not supported", e, 1, true)
    assert.is_nil(e:find("SECRET", 1, true), e)
    e = raises(function()
      callback.handler { secret = "s", inbox = { redis = "redis+sentinel://127.0.0.1/m/0", redis_tls = { verify_tls = false } } }
    end)
    assert.matches("inbox.redis_tls: TLS behind Sentinel is not supported", e, 1, true)
    assert.are.equal("rediss+sentinel://127.0.0.1:1/m?sentinel_password=***",
      kredis.redact("rediss+sentinel://127.0.0.1:1/m?sentinel_password=S@CRET"))
  end)

  it("kinot worker with a Sentinel URL and --redis-insecure: exit 2, saying so", function()
    local out, err, code = H.kinot("worker --redis 'redis+sentinel://:SECRET@127.0.0.1:1/m' --redis-insecure " ..
                                   "--handler x", "KINOT_REDIS_URL=")
    assert.are.equal(2, code, out .. err)
    assert.matches("TLS behind Sentinel is not supported", err, 1, true)
    assert.is_nil((out .. err):find("SECRET", 1, true), err)
  end)
end)

describe("the inbox's wait against a replica that has nothing #redis", function()
  -- WAIT counts the replicas that have THIS connection's last write.  A
  -- redelivery found stored writes nothing: on another connection than
  -- the first delivery's (another nginx worker, another pooled
  -- connection, a receiver started since) WAIT has nothing to wait for
  -- and answered at once with every replica connected, though none had
  -- the event: 200, and a failover then lost it.
  it("a redelivery found stored, on another connection, is 503 while no replica has the entry", function()
    local master, replica
    finally(function()
      if replica then replica.stop() end -- (stopped, paused or not)
      if master then master.stop() end
    end)
    master, replica = R.pair() -- (the replica in sync)
    local inbox = { redis = master.url, stream = "waited", wait = { replicas = 1, timeout = 0.3 } }
    local first = callback.receiver { secret = SECRET, max_age = false, inbox = inbox }
    -- another worker, which took an event of its own before (its
    -- connection's last write is one the replica has)
    local other = callback.receiver { secret = SECRET, max_age = false, inbox = inbox }
    assert.is_truthy(H.wait_for(function() return (first:receive(status_body(1))) == 200 end, 5))
    assert.is_truthy(H.wait_for(function() return (other:receive(status_body(3))) == 200 end, 5))
    replica.pause()
    local body = status_body(2)
    local st, res, _, err = first:receive(body)
    assert.are.equal(503, st, res)
    assert.matches("0 of 1 replica", tostring(err))
    -- the platform delivers again; the other worker's connection takes it
    st, res, _, err = other:receive(body)
    assert.are.equal(503, st, res)
    assert.matches("0 of 1 replica", tostring(err))
    replica.resume()
    -- (the replica catches up: then the redelivery is 200, on either)
    assert.is_truthy(H.wait_for(function() return (other:receive(body)) == 200 end, 10))
    -- Redis 7.2 and later move a connection's WAIT offset only on a
    -- command that wrote (this machine's 7.0 on every command, so the 503
    -- above held here either way): a redelivery that waits must write,
    -- and the replica runs that write (its SET count moves)
    local function sets()
      local c = replica.client { timeout = 1 }
      local info = tostring(c:call("INFO", "commandstats"))
      c:close()
      return tonumber(info:match("cmdstat_set:calls=(%d+)")) or 0
    end
    local before = sets()
    assert.are.equal(200, (other:receive(body)))
    assert.are.equal(before + 1, sets(), "the redelivery's script wrote nothing for WAIT to count")
    local c = kredis.new(master.url)
    assert.are.equal(3, tonumber(c:call("XLEN", "waited")))
    c:close()
  end)
end)

describe("the Sentinels asked, in which order #redis #slow", function()
  -- A Sentinel host that is down in a way that costs time (it takes the
  -- connection and never answers, or its packets are dropped) was asked
  -- first on every lookup: once a second per process (the TTL), and on
  -- every sign of a failover, each lookup spent connect_timeout there
  -- before the next Sentinel.  The Sentinel clients' guidelines: the one
  -- that answered goes first.
  it("asks the Sentinel that answered first next time, not the one that stalled", function()
    local S = require "sentinel_cluster"
    local sentinel = require "kinot.redis_sentinel"
    local socket = require "socket"
    local k, stall
    finally(function()
      if stall then stall:close() end
      if k then k.stop() end
    end)
    k = S.start { replicas = 1, sentinels = 1 }
    k.wait_ready()
    -- listening, never accepting: a connection is made (the kernel's), a
    -- command sent, and no answer ever comes
    stall = assert(socket.bind("127.0.0.1", 0, 64))
    local _, port = stall:getsockname()
    local url = k.url:gsub("://", "://127.0.0.1:" .. port .. ",", 1)
    local c = kredis.new(url, { timeout = 2, connect_timeout = 0.3 })
    assert.are.equal("PONG", c:call("PING"))
    for _ = 1, 3 do
      sentinel.forget(c.sentinel) -- (the TTL ran out, or a failover's sign)
      assert.are.equal("PONG", c:call("PING"))
    end
    c:close()
    stall:settimeout(0)
    local asked = 0
    while true do
      local conn = stall:accept()
      if not conn then break end
      conn:close()
      asked = asked + 1
    end
    assert.are.equal(1, asked, "the stalled Sentinel was asked on " .. asked .. " of 4 lookups")
  end)
end)

describe("one kinot.callback.worker through a failover #redis #slow", function()
  -- The worker's kept connection (LuaSocket) is to the master SIGKILLed
  -- while it blocks in XREADGROUP; the same worker object must find the
  -- new master, its consumer group there, and go on: every event the
  -- inbox answered 200 (wait 1), before or after, handled.
  it("keeps handling after the master is SIGKILLed mid-BLOCK, nothing answered 200 left behind", function()
    local S = require "sentinel_cluster"
    local worker = require "kinot.callback.worker"
    local core = require "kinot.core"
    local k
    finally(function() if k then k.stop() end end)
    k = S.start {}
    k.wait_ready()
    local rcv = callback.receiver { secret = SECRET, max_age = false,
                                    inbox = { redis = k.url, timeout = 3, wait = { replicas = 1, timeout = 1 } } }
    local handled, logged = {}, {}
    local w = worker.new { redis = k.url, block = 0.5, claim_after = 1, timeout = 2,
                           log = function(level, msg) logged[#logged + 1] = level .. ": " .. msg end,
                           on_status = function(ev) handled[ev.sn] = (handled[ev.sn] or 0) + 1 end }
    local answered, count = {}, 0 -- set of sn answered 200
    local function post(from, to)
      for sn = from, to do
        if not answered[sn] and (rcv:receive(status_body(sn))) == 200 then
          answered[sn], count = true, count + 1
        end
      end
    end
    local function drain(seconds)
      local t0 = core.monotonic()
      w:run(function()
        for sn in pairs(answered) do if not handled[sn] then return core.monotonic() - t0 > seconds end end
        return true
      end)
    end
    post(1, 50)
    assert.are.equal(50, count)
    drain(10)
    local old = k.master_port()
    -- the worker is blocked in XREADGROUP on the master when it dies
    local killer = io.popen("sleep 0.2; kill -KILL " .. k.master().pid(), "r")
    local n, err = w:step()
    killer:close()
    assert.is_nil(n, "the step went on past the master's death")
    assert.are.equal("network", err.kind)
    k.wait_master(old, 20)
    -- what the platform posts next, and delivers again (a 503 is redelivered)
    for _ = 1, 5 do
      post(51, 100)
      if count == 100 then break end
    end
    drain(20)
    local missing = {}
    for sn in pairs(answered) do if not handled[sn] then missing[#missing + 1] = sn end end
    assert.are.same({}, missing, table.concat(logged, "\n"))
    assert.are.equal(100, count) -- (each was posted again until answered 200)
    w.client:close()
  end)
end)

describe("a Sentinel that names another Redis #redis #slow", function()
  -- A Sentinel misconfigured (or in an attacker's hands: one without
  -- requirepass takes SENTINEL MONITOR from anyone) names a standalone
  -- Redis under the master's name.  ROLE says master there: the client
  -- cannot tell it from the real one.  With wait, its WAIT finds no
  -- replica and nothing is answered 200; without, the event is stored on
  -- a server the platform's events were never meant to reach.
  it("with inbox wait, an event stored on a master with no replicas is 503", function()
    local S = require "sentinel_cluster"
    local k, other
    finally(function()
      if other then other.stop() end
      if k then k.stop() end
    end)
    k = S.start { replicas = 1, sentinels = 1 }
    k.wait_ready()
    other = R.start {}
    k.monitor(1, other.port)
    local rcv = callback.receiver { secret = SECRET, max_age = false,
                                    inbox = { redis = k.url, wait = { replicas = 1, timeout = 0.3 } } }
    local st, res, _, err = rcv:receive(status_body(1))
    assert.are.equal(503, st, res)
    assert.matches("127.0.0.1:" .. other.port .. ": EVALSHA done, but WAIT: 0 of 1 replica", tostring(err), 1, true)
    local plain = callback.receiver { secret = SECRET, max_age = false, inbox = { redis = k.url, stream = "plain" } }
    assert.are.equal(200, (plain:receive(status_body(2))))
    local c = other.client()
    assert.are.equal(1, tonumber(c:call("XLEN", "plain"))) -- (where it went)
    c:close()
  end)
end)

describe("a Sentinel that names a hung server #redis #slow", function()
  -- A Sentinel that has not yet seen the failover of a master that hangs
  -- (SIGSTOP here; a machine swapping, a disk stalled in life) names it.
  -- The address is confirmed with ROLE, which such a server never
  -- answers: that ROLE once had the whole call's time, and the next
  -- Sentinel, which names the live master, was never asked.
  it("asks the next Sentinel once ROLE at the named address takes longer than connect_timeout", function()
    local S = require "sentinel_cluster"
    local sentinel = require "kinot.redis_sentinel"
    local k, hung
    finally(function()
      if hung then hung.stop() end -- (stopped, paused or not)
      if k then k.stop() end
    end)
    k = S.start { replicas = 1, sentinels = 2 }
    k.wait_ready()
    hung = R.start {}
    k.monitor(1, hung.port)
    hung.pause()
    local c = kredis.new(k.url, { timeout = 2, connect_timeout = 0.3 })
    sentinel.forget(c.sentinel)
    local v, err = c:call("PING")
    assert.are.equal("PONG", v, err and err.message)
    assert.are.equal("127.0.0.1:" .. k.master_port(2), c.where)
    c:close()
  end)
end)

describe("a wrong password behind Sentinel #redis #slow", function()
  -- The master's password wrong (or the Sentinels'): as with redis://, a
  -- "redis" error naming it (WRONGPASS, not retryable), at once; it was
  -- "network" (retryable) after the call's whole timeout spent asking
  -- the Sentinels again and again, on every call (a kinot worker logged
  -- "no master found" for ever)
  it("is kind redis, code WRONGPASS, not retryable, without waiting out the call", function()
    local S = require "sentinel_cluster"
    local core = require "kinot.core"
    local k
    finally(function() if k then k.stop() end end)
    k = S.start { replicas = 1, sentinels = 1, password = "RIGHTmaster", sentinel_password = "RIGHTsentinel" }
    k.wait_ready()
    for _, url in ipairs {
      k.url:gsub("RIGHTmaster", "WRONGmaster", 1),
      (k.url:gsub("RIGHTsentinel", "WRONGsentinel", 1)),
    } do
      local c = kredis.new(url, { timeout = 3 })
      local t0 = core.monotonic()
      local v, err = c:call("PING")
      local took = core.monotonic() - t0
      c:close()
      assert.is_nil(v)
      assert.are.equal("redis", err.kind, err.message)
      assert.are.equal("WRONGPASS", err.code, err.message)
      assert.is_false(err.retryable)
      assert.is_true(took < 1.5, "took " .. took .. " s of the call's 3")
      assert.is_nil(err.message:find("RIGHT", 1, true), err.message)
      assert.is_nil(err.message:find("WRONG[ms]", 1), err.message)
    end
  end)
end)

describe("nginx's pool through a failover #redis #nginx #slow", function()
  -- Inside nginx the connections to the old master stay in the keepalive
  -- pool (named by host:port), and each worker knows the old master for up
  -- to a second.  Once Sentinel has demoted it (a manual failover: it still
  -- runs), a pooled connection to it meets READONLY: the call goes on to
  -- the new master, and the platform sees no 503.
  it("answers 200 once the old master is a replica, with pooled connections to it", function()
    local S = require "sentinel_cluster"
    local k, ng
    finally(function()
      if ng then ng.stop() end
      if k then k.stop() end
    end)
    k = S.start { replicas = 1, sentinels = 3 }
    k.wait_ready()
    ng = H.handler_host(SECRET, "{ inbox = { redis = '" .. k.url .. "', stream = 'pooled', timeout = 3 } }")
    local function post(sn)
      return H.raw("POST", ng.url .. "/cb", status_body(sn), { ["Content-Type"] = "application/json" }).status
    end
    for sn = 1, 40 do assert.are.equal(200, post(sn)) end -- (connections to the old master pooled)
    local old = k.master_port()
    local sc = k.sentinel_client(1)
    assert.are.equal("OK", sc:call("SENTINEL", "FAILOVER", S.NAME))
    sc:close()
    k.wait_master(old, 20)
    -- until Sentinel has made the old master a replica (it looks every second or so)
    assert.is_truthy(H.wait_for(function()
      local c = k.server(old).client { timeout = 1 }
      local role = c:call("ROLE")
      c:close()
      return type(role) == "table" and role[1] == "slave"
    end, 20))
    local statuses = {}
    for sn = 41, 80 do
      local st = post(sn)
      statuses[st] = (statuses[st] or 0) + 1
    end
    assert.are.same({ [200] = 40 }, statuses)
    local c = kredis.new(k.url)
    assert.are.equal(80, tonumber(c:call("XLEN", "pooled")))
    c:close()
  end)
end)

describe("a wait that falls short, and the Sentinels #redis #slow", function()
  -- Each WAIT that fell short (a replica down, wait = every replica) made
  -- the client forget the master: every request then asked a Sentinel
  -- (SENTINEL, then AUTH and ROLE at the master), as many lookups as
  -- requests, the Sentinels loaded in proportion to the callbacks. The
  -- 1 s the master is kept for already bounds how long an old master cut
  -- from its replicas is used (and its WAIT fails all that time: 503).
  it("asks a Sentinel about once a second, not once a request", function()
    local S = require "sentinel_cluster"
    local k
    finally(function() if k then k.stop() end end) -- (a paused replica too)
    k = S.start { replicas = 1, sentinels = 1 }
    k.wait_ready()
    local rcv = callback.receiver { secret = SECRET, max_age = false,
                                    inbox = { redis = k.url, wait = { replicas = 1, timeout = 0.05 } } }
    assert.is_truthy(H.wait_for(function() return (rcv:receive(status_body(1))) == 200 end, 5))
    for _, r in ipairs(k.replicas()) do r.pause() end
    -- commands the only Sentinel ran (a Sentinel's INFO has no
    -- commandstats; alone, no other Sentinel sends it any)
    local function lookups()
      local c = k.sentinel_client(1)
      local info = tostring(c:call("INFO", "stats"))
      c:close()
      return assert(tonumber(info:match("total_commands_processed:(%d+)")), info)
    end
    local before = lookups()
    local core = require "kinot.core"
    local t0 = core.monotonic()
    for sn = 2, 41 do
      local st = rcv:receive(status_body(sn))
      assert.are.equal(503, st)
    end
    local took = core.monotonic() - t0
    local asked = lookups() - before - 1 -- (this count's own lookup is not one: INFO is)
    assert.is_true(asked <= math.ceil(took) + 2, asked .. " lookups for 40 requests in " .. took .. " s")
  end)
end)

describe("the inbox's group commit, wait, and a script flushed mid-batch #redis #nginx", function()
  -- A batch whose EVALSHAs all find the script gone (SCRIPT FLUSH, a
  -- restart) while a replica is stopped: each of its puts fell back to an
  -- EVAL and a WAIT of its own, one after the other, so the request that
  -- sent the batch waited wait.timeout once per put (200 puts of a 10 s
  -- wait: over half an hour), far past the bound every other request of
  -- the batch is given.  Every put must be answered within that bound.
  it("answers every put of the batch within 2 * (timeout + wait) + 1 s", function()
    local master, replica, ng
    finally(function()
      if ng then ng.stop() end
      if replica then replica.stop() end -- (stopped, paused or not)
      if master then master.stop() end
    end)
    master, replica = R.pair() -- (the replica in sync)
    ng = H.nginx {
      http = [[
        init_by_lua_block {
          box = require("kinot.callback.inbox").new { redis = "]] .. master.url .. [[", stream = "flushed",
                                                     timeout = 0.5, wait = { replicas = 1, timeout = 0.4 } }
        }
      ]],
      server = [[
        location = /put { content_by_lua_block {
          local v, err = box:put("warm", "{}", ngx.now())
          ngx.say(tostring(v), " ", err and err.kind or "")
        } }
        location = /batch { content_by_lua_block {
          local redis = require "kinot.redis"
          local threads = {}
          for i = 1, 12 do
            threads[i] = ngx.thread.spawn(function()
              local t0 = ngx.now()
              local v, err = box:put("b" .. i, "{}", ngx.now())
              ngx.update_time()
              return string.format("%s %s %.2f", tostring(v), err and (err.code or err.kind) or "", ngx.now() - t0)
            end)
          end
          -- the first put's pipeline waits on the stopped replica, the
          -- other eleven queued behind it: the script goes meanwhile
          ngx.sleep(0.1)
          local c = redis.new("]] .. master.url .. [[")
          c:call("SCRIPT", "FLUSH")
          for i = 1, 12 do
            local _, line = ngx.thread.wait(threads[i])
            ngx.say(line)
          end
        } }
      ]],
    }
    -- (the script loaded, its sha kept; a loaded machine's replica may be
    -- late for the first WAIT: then its redelivery is "false")
    assert.is_truthy(H.wait_for(function()
      local b = H.raw("GET", ng.url .. "/put").body
      return b == "true \n" or b == "false \n"
    end, 10))
    replica.pause()
    local body = H.raw("GET", ng.url .. "/batch").body
    local bound = 2 * (0.5 + 0.4) + 1
    local n = 0
    for v, why, took in body:gmatch("(%S+) (%S*) ([%d.]+)\n") do
      n = n + 1
      -- (the replica stopped: nothing is 200)
      assert.are.equal("nil", v, body)
      assert.is_truthy(why == "NOREPLICAS" or why == "timeout", body)
      assert.is_true(tonumber(took) <= bound + 0.3, "a put took " .. took .. " s, bound " .. bound .. " s:\n" .. body)
    end
    assert.are.equal(12, n, body)
  end)
end)

describe("the inbox's group commit on a replica #redis #nginx", function()
  -- A real replica (7.0) runs the PUT script until its first write: a
  -- redelivery found stored, without wait, only reads and answers 0
  -- between the READONLYs of the new events of its batch.  The stored one
  -- is "stored before" (the replica has its mark, so the master had its
  -- entry); the new ones are tried again as their own pipeline, refused as
  -- a whole (behind Sentinel: followed), and fail, each, here.
  it("answers the redelivery found stored, and fails each new event", function()
    local master, replica, ng
    finally(function()
      if ng then ng.stop() end
      if replica then replica.stop() end
      if master then master.stop() end
    end)
    master, replica = R.pair()
    local stored = require("kinot.callback.inbox").new { redis = master.url, stream = "ro" }
    assert.is_true(stored:put("old", "{}", 1))
    assert.is_truthy(H.wait_for(function()
      local c = replica.client { timeout = 1 }
      local n = c:call("EXISTS", "kinot:seen:old")
      c:close()
      return n == 1
    end, 10))
    ng = H.nginx {
      http = [[
        init_by_lua_block {
          box = require("kinot.callback.inbox").new { redis = "]] .. replica.url .. [[", stream = "ro" }
        }
      ]],
      server = [[
        location = /batch { content_by_lua_block {
          local threads = {}
          for i, id in ipairs { "lead", "new1", "old", "new2" } do
            threads[i] = ngx.thread.spawn(function()
              local v, err = box:put(id, "{}", ngx.now())
              return id .. " " .. tostring(v) .. " " .. (err and err.code or "")
            end)
          end
          for i = 1, #threads do
            local _, line = ngx.thread.wait(threads[i])
            ngx.say(line)
          end
        } }
      ]],
    }
    assert.are.equal("lead nil READONLY\nnew1 nil READONLY\nold false \nnew2 nil READONLY\n",
                     H.raw("GET", ng.url .. "/batch").body)
  end)
end)
