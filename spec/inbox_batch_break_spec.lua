-- The inbox's one-script batch, attacked from outside the defender's spec
-- (spec/inbox_batch_attack_spec.lua): real redis-server, real nginx.
local inbox = require "kinot.callback.inbox"
local R = require "redis_server"

describe("the inbox outside nginx: a delivery the script refuses is nil, err #redis", function()
  local r, c
  setup(function()
    r = R.start {}
    c = r.client()
  end)
  teardown(function()
    c:close()
    r.stop()
  end)

  it("Redis out of memory: put answers nil, err (OOM), never raises, stores nothing, and stores it once memory is back",
     function()
    local box = inbox.new { redis = r.url, stream = "kinot:oom" }
    assert(c:call("CONFIG", "SET", "maxmemory-policy", "noeviction"))
    assert(c:call("CONFIG", "SET", "maxmemory", "1"))
    local ran, v, err = pcall(box.put, box, "oom-1", '{"sn":1}', 1700000000)
    assert(c:call("CONFIG", "SET", "maxmemory", "0"))
    assert.is_true(ran, "put raised: " .. tostring(v))
    assert.is_nil(v)
    assert.are.equal("OOM", err.code)
    assert.are.equal(0, c:call("XLEN", "kinot:oom"))
    assert.is_true(box:put("oom-1", '{"sn":1}', 1700000000))
    assert.is_false(box:put("oom-1", '{"sn":1}', 1700000000))
    assert.are.equal(1, c:call("XLEN", "kinot:oom"))
  end)

  it("a stream key holding a string: put answers nil, err (WRONGTYPE), never raises, and sets no mark", function()
    local box = inbox.new { redis = r.url, stream = "kinot:str" }
    assert(c:call("SET", "kinot:str", "not a stream"))
    local ran, v, err = pcall(box.put, box, "str-1", '{"sn":1}', 1700000000)
    assert.is_true(ran, "put raised: " .. tostring(v))
    assert.is_nil(v)
    assert.are.equal("WRONGTYPE", err.code)
    assert(c:call("DEL", "kinot:str"))
    assert.is_true(box:put("str-1", '{"sn":1}', 1700000000))
    assert.are.equal(1, c:call("XLEN", "kinot:str"))
  end)
end)

-- ------------------------------------------------------------ in nginx
local callback = require "kinot.callback"
local H = require "helpers"

local SECRET = "5e1f0c2d3b4a59687766554433221100"

local function body_of(sn)
  local b = string.format('{"sn":%d,"locked":1,"car_detected":0,"device_type":18}', sn)
  return (b:gsub("}$", ',"sign":"' .. assert(callback.sign(b, SECRET)) .. '"}'))
end

-- bodies posted 64 at a time (Python threads, real HTTP) -> status by index
local function post_all(url, bodies)
  local dir = H.tmpdir("post")
  local ok, st = pcall(H.post_many, dir, url, bodies)
  os.execute("rm -rf " .. dir)
  assert(ok, st)
  return st
end

-- body -> entries holding it, in `stream`
local function stored(c, stream)
  local have = {}
  for _, e in ipairs(assert(c:call("XRANGE", stream, "-", "+"))) do
    for i = 1, #e[2], 2 do
      if e[2][i] == "body" then have[e[2][i + 1]] = (have[e[2][i + 1]] or 0) + 1 end
    end
  end
  return have
end

local function host(url, stream, extra)
  return H.nginx {
    workers = 2,
    http = [[
      init_by_lua_block {
        receive = require("kinot.callback").handler { secret = "]] .. SECRET .. [[",
          inbox = { redis = "]] .. url .. [[", stream = "]] .. stream .. [[", timeout = 0.5]] .. (extra or "") .. [[ } }
      }
    ]],
    server = "location = /cb { content_by_lua_block { receive() } }",
  }
end

describe("the inbox's batch on a replica and with a replica down (2 nginx workers) #redis #nginx #slow", function()
  local master, replica, mc
  setup(function()
    master = R.start {}
    replica = R.start { conf = { "replicaof 127.0.0.1 " .. master.port } }
    mc = master.client()
    assert(H.wait_for(function()
      return (mc:call("INFO", "replication") or ""):match("slave0:[^\r\n]*state=online") ~= nil
    end, 10), "the replica never came online")
  end)
  teardown(function()
    mc:close()
    replica.stop()
    master.stop()
  end)

  it("pointed at a replica: a batch mixing redeliveries and new events answers each its own (200 / 503), writes nothing",
     function()
    local ng = host(master.url, "kinot:rep")
    local rng = host(replica.url, "kinot:rep")
    finally(function()
      ng.stop()
      rng.stop()
    end)
    local old, mixed = {}, {}
    for i = 1, 150 do old[i] = body_of(810000 + i) end
    local st = post_all(ng.url .. "/cb", old)
    for i = 1, 150 do assert.are.equal(200, st[i], "stored first " .. i) end
    local rc = replica.client()
    assert(H.wait_for(function() return rc:call("XLEN", "kinot:rep") == 150 end, 10))
    rc:close()
    for i = 1, 150 do
      mixed[#mixed + 1] = body_of(820000 + i) -- new
      mixed[#mixed + 1] = old[i] -- a redelivery
      if i % 3 == 0 then mixed[#mixed + 1] = body_of(820000 + i) end -- the new one twice
    end
    st = post_all(rng.url .. "/cb", mixed)
    local have = stored(mc, "kinot:rep")
    local olds = {}
    for _, b in ipairs(old) do olds[b] = true end
    local n200, n503 = 0, 0
    for i, b in ipairs(mixed) do
      if olds[b] then
        assert.are.equal(200, st[i], "a redelivery, post " .. i)
        n200 = n200 + 1
      else
        assert.are.equal(503, st[i], "a new event on a replica, post " .. i)
        assert.is_nil(have[b])
        n503 = n503 + 1
      end
    end
    assert.are.equal(150, mc:call("XLEN", "kinot:rep"))
    io.stderr:write("  (on a replica: " .. n200 .. " redeliveries 200, " .. n503 .. " new 503)\n")
  end)

  it("wait = { replicas = 1 } with the replica down: no 200; back up, each redelivered event stored once, then 200",
     function()
    local ng = host(master.url, "kinot:wait", ", wait = { replicas = 1, timeout = 0.3 }")
    finally(function()
      ng.stop()
      if not replica.running() then replica.up() end
    end)
    local old = {}
    for i = 1, 100 do old[i] = body_of(830000 + i) end
    local st = post_all(ng.url .. "/cb", old)
    for i = 1, 100 do assert.are.equal(200, st[i], "stored first " .. i) end
    replica.down()
    local mixed, distinct = {}, {}
    for i = 1, 100 do
      mixed[#mixed + 1] = body_of(840000 + i)
      mixed[#mixed + 1] = old[i]
      if i % 4 == 0 then mixed[#mixed + 1] = body_of(840000 + i) end
    end
    for _, b in ipairs(mixed) do distinct[b] = true end
    st = post_all(ng.url .. "/cb", mixed)
    for i = 1, #mixed do assert.are.equal(503, st[i], "replica down, post " .. i) end
    replica.up()
    assert(H.wait_for(function()
      return (mc:call("INFO", "replication") or ""):match("slave0:[^\r\n]*state=online") ~= nil
    end, 10), "the replica never came back")
    st = post_all(ng.url .. "/cb", mixed)
    for i = 1, #mixed do assert.are.equal(200, st[i], "replica back, post " .. i) end
    local have, n = stored(mc, "kinot:wait"), 0
    for b in pairs(distinct) do
      assert.are.equal(1, have[b])
      n = n + 1
    end
    assert.are.equal(n, mc:call("XLEN", "kinot:wait"))
    local rc = replica.client()
    assert(H.wait_for(function() return rc:call("XLEN", "kinot:wait") == n end, 10))
    rc:close()
  end)
end)

describe("the inbox's batch when its script fails part way or Redis stalls (2 nginx workers) #redis #nginx #slow", function()
  local master, replica, mc
  setup(function()
    master = R.start {}
    replica = R.start { conf = { "replicaof 127.0.0.1 " .. master.port } }
    mc = master.client()
    assert(H.wait_for(function()
      return (mc:call("INFO", "replication") or ""):match("slave0:[^\r\n]*state=online") ~= nil
    end, 10), "the replica never came online")
  end)
  teardown(function()
    mc:close()
    replica.stop()
    master.stop()
  end)

  -- every 200 stored once; every other answer 503; the 503s delivered
  -- again (after `mend()`) all 200; every event stored once
  local function check(ng, stream, bodies, st, mend)
    local have, refused, distinct = stored(mc, stream), {}, {}
    for i, b in ipairs(bodies) do
      distinct[b] = true
      if st[i] == 200 then
        assert.are.equal(1, have[b], "answered 200, stored " .. tostring(have[b]) .. " times: post " .. i)
      else
        assert.are.equal(503, st[i], "post " .. i)
        assert.is_true((have[b] or 0) <= 1, "stored twice")
        refused[#refused + 1] = b
      end
    end
    if mend then mend() end
    local again = post_all(ng.url .. "/cb", refused)
    for i = 1, #refused do assert.are.equal(200, again[i], "delivered again " .. i) end
    have = stored(mc, stream)
    local n = 0
    for b in pairs(distinct) do
      assert.are.equal(1, have[b], "stored " .. tostring(have[b]) .. " times")
      n = n + 1
    end
    assert.are.equal(n, mc:call("XLEN", stream))
    return #refused
  end

  it("with wait, one dedupe mark of the wrong type (the script raises part way): every 200 stored once", function()
    local ng = host(master.url, "kinot:wrong", ", wait = { replicas = 1, timeout = 1 }")
    finally(ng.stop)
    local old = {}
    for i = 1, 100 do old[i] = body_of(850000 + i) end
    -- old[37] stored alone first: the one mark then is its
    assert.are.equal(200, post_all(ng.url .. "/cb", { old[37] })[1])
    local keys = assert(mc:call("KEYS", "kinot:seen:*"))
    assert.are.equal(1, #keys)
    local poisoned = keys[1]
    local st = post_all(ng.url .. "/cb", old)
    for i = 1, 100 do assert.are.equal(200, st[i], "stored first " .. i) end
    -- its mark made a hash: a redelivery's GET of it raises WRONGTYPE,
    -- ending the script after what it wrote
    assert(mc:call("DEL", poisoned))
    assert(mc:call("HSET", poisoned, "f", "v"))
    local bodies = {}
    for i = 1, 300 do bodies[#bodies + 1] = body_of(860000 + i) end
    for i = 1, 100 do bodies[#bodies + 1] = old[i] end
    for i = 1, 60 do bodies[#bodies + 1] = bodies[i * 5] end
    -- (Redis paused for 0.3 s near the start, under the client's timeout:
    -- the requests meanwhile make big batches, the poisoned one in some)
    for i = 1, 300, 10 do table.insert(bodies, i, old[37]) end
    assert(os.execute("(sleep 0.2; redis-cli -p " .. master.port .. " CLIENT PAUSE 300 ALL) >/dev/null 2>&1 &"))
    st = post_all(ng.url .. "/cb", bodies)
    local refused = check(ng, "kinot:wrong", bodies, st, function()
      assert(mc:call("DEL", poisoned))
      assert(mc:call("SET", poisoned, "done", "EX", 3600))
    end)
    io.stderr:write("  (a wrong-type mark: " .. refused .. " refused, then delivered again)\n")
    assert.is_true(refused > 0)
  end)

  it("Redis stalled 0.2 s into the load (CLIENT PAUSE 1.2 s, past the 0.5 s timeout) mid-load: every 200 stored once", function()
    local ng = host(master.url, "kinot:sleep")
    finally(ng.stop)
    local bodies = {}
    for i = 1, 1900 do bodies[#bodies + 1] = body_of(870000 + i) end
    for i = 1, 100 do bodies[#bodies + 1] = bodies[i * 7] end
    -- (DEBUG is refused by Redis 7's default enable-debug-command no:
    -- CLIENT PAUSE stalls every client's commands the same way)
    assert(os.execute("(sleep 0.2; redis-cli -p " .. master.port .. " CLIENT PAUSE 1200 ALL) >/dev/null 2>&1 &"))
    local st = post_all(ng.url .. "/cb", bodies)
    local refused = check(ng, "kinot:sleep", bodies, st)
    io.stderr:write("  (CLIENT PAUSE: " .. refused .. " refused, then delivered again)\n")
  end)
end)

describe("the inbox's batch: each entry holds its own delivery's fields #redis #nginx", function()
  local r, c
  setup(function()
    r = R.start {}
    c = r.client()
  end)
  teardown(function()
    c:close()
    r.stop()
  end)

  it("a batch of 60 puts from light threads, mixing rules, unverified ones, maxlen, a redelivery and an id twice",
     function()
    local ng = H.nginx { server = [[
      location = /puts { content_by_lua_block {
        local box = require("kinot.callback.inbox").new { redis = "]] .. r.url .. [[", stream = "kinot:fields",
                                                          maxlen = 100000 }
        assert(box:put("pre-1", "body pre-1", 1700000000.5))
        local threads, out = {}, {}
        for i = 1, 60 do
          local id = i % 20 == 0 and "pre-1" or i % 15 == 0 and ("id-" .. (i - 1)) or ("id-" .. i)
          local form = (i % 3 == 0 and { rule = "rule-" .. i }) or (i % 3 == 1 and { verified = false }) or nil
          if i % 7 == 0 then form = { rule = "r7-" .. i, verified = false } end
          threads[i] = ngx.thread.spawn(function()
            local v, err = box:put(id, "body " .. id .. (i % 15 == 0 and " copy" or ""), 1700000000 + i, form)
            out[i] = id .. " " .. tostring(v) .. " " .. tostring(err and err.message)
          end)
        end
        for i = 1, 60 do ngx.thread.wait(threads[i]) end
        ngx.print(table.concat(out, "\n"))
      } }
    ]] }
    finally(ng.stop)
    local answers = H.raw("GET", ng.url .. "/puts").body
    local calls = tonumber(assert(c:call("INFO", "commandstats")):match("cmdstat_evalsha:calls=(%d+)") or 0)
    local got = {}
    for line in answers:gmatch("[^\n]+") do
      local id, v = line:match("^(%S+) (%S+)")
      got[#got + 1] = { id = id, v = v }
    end
    assert.are.equal(60, #got, answers)
    local entries = {}
    for _, e in ipairs(assert(c:call("XRANGE", "kinot:fields", "-", "+"))) do
      local f = {}
      for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
      assert.is_nil(entries[f.id], "two entries for " .. tostring(f.id))
      entries[f.id] = f
    end
    for i, g in ipairs(got) do
      local id = i % 20 == 0 and "pre-1" or i % 15 == 0 and ("id-" .. (i - 1)) or ("id-" .. i)
      assert.are.equal(id, g.id)
      if i % 20 == 0 or i % 15 == 0 then
        assert.are.equal("false", g.v, "post " .. i .. " (stored before)")
      else
        assert.are.equal("true", g.v, "post " .. i)
        local e = entries[id]
        assert.are.equal("body " .. id, e.body, id)
        assert.are.equal(string.format("%.3f", 1700000000 + i), e.at, id)
        local rule = i % 7 == 0 and "r7-" .. i or i % 3 == 0 and "rule-" .. i or nil
        local verified = (i % 7 == 0 or (i % 3 == 1)) and "0" or nil
        assert.are.equal(rule, e.rule, id .. " rule")
        assert.are.equal(verified, e.verified, id .. " verified")
      end
    end
    assert.are.equal("body pre-1", entries["pre-1"].body)
    -- (fewer script calls than puts: they went as batches)
    assert.is_true(calls < 61, calls .. " script calls")
  end)
end)
