-- Callbacks on Redis (the scale-out path): shared dedupe across hosts, the
-- durable inbox, and workers, each against a real redis-server on a free
-- 127.0.0.1 port and real nginx, all started and stopped here.
local callback = require "kinot.callback"
local core = require "kinot.core"
local json = require "kinot.json"
local kredis = require "kinot.redis"
local worker = require "kinot.callback.worker"
local R = require "redis_server"
local H = require "helpers"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"

local function signed(body)
  return (body:gsub("}$", ',"sign":"' .. assert(callback.sign(body, SECRET)) .. '"}'))
end
local function status_body(sn, extra)
  return signed(string.format('{"sn":%d,"locked":1,"car_detected":0,"device_type":18%s}', sn, extra or ""))
end
local function post(ng, body)
  return H.raw("POST", ng.url .. "/cb", body, { ["Content-Type"] = "application/json" })
end
local function shell(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

-- the entries of a stream: list of { entry = id, <field> = value }
local function entries(c, stream)
  local out = {}
  for _, e in ipairs(assert(c:call("XRANGE", stream, "-", "+"))) do
    local t = { entry = e[1] }
    for i = 1, #e[2], 2 do t[e[2][i]] = e[2][i + 1] end
    out[#out + 1] = t
  end
  return out
end

local function host(opts_lua, extra_http) return H.handler_host(SECRET, opts_lua, extra_http) end
local COUNT = H.COUNT_EVENT
local seen = H.seen

describe("callback.handler's Redis options (misuse) #unit", function()
  it("raises on a wrong URL, an inbox with local handlers, two Redis", function()
    assert.has_error(function() callback.handler { secret = "s", dedupe = { redis = "http://x" } } end)
    assert.has_error(function()
      callback.handler { secret = "s", inbox = { redis = "redis://127.0.0.1:1" }, on_status = print }
    end, "kinot: with an inbox, on_status, on_command and fleet belong to kinot.callback.worker, not the handler")
    assert.has_error(function()
      callback.handler { secret = "s", inbox = { redis = "redis://127.0.0.1:1" }, dedupe = { redis = "redis://127.0.0.1:2" } }
    end, "kinot: dedupe.redis and inbox.redis must name the same Redis (the inbox dedupes as it appends)")
    assert.has_error(function() worker.new { redis = "redis://127.0.0.1:1" } end,
      "kinot: callback.worker needs on_status, on_command or fleet")
  end)
end)

describe("callback.rebuild (the worker's event from a stored body) #unit", function()
  it("gives the event verify gave, without the secret, for the reference's bodies too", function()
    local vectors = H.fixture("callback-sign.json").vectors
    for _, v in ipairs(vectors) do
      local ev = callback.verify(v.body, { secret = v.secret })
      if ev then
        local again = assert(callback.rebuild(v.body, ev.id))
        ev.secret_index = nil
        assert.are.same(ev, again)
      end
    end
    local _, err = callback.rebuild("not json", "x")
    assert.are.equal("callback", err.kind)
  end)
end)

describe("two receiver hosts sharing one Redis #redis", function()
  local r, a, b
  local PASSWORD = "hosts-Sh4red/pw"
  setup(function()
    r = R.start { password = PASSWORD }
    local o = "{ dedupe = { redis = '" .. r.url .. "', ttl = 600 }, on_status = " .. COUNT .. " }"
    a, b = host(o), host(o)
  end)
  teardown(function()
    if a then a.stop() end
    if b then b.stop() end
    r.stop()
  end)

  it("runs the handler once for a delivery to one host and its redelivery to the other", function()
    local body = status_body(101)
    assert.are.equal(200, post(a, body).status)
    local res = post(b, body)
    assert.are.equal(200, res.status)
    assert.are.equal('{"code":0,"message":"OK"}', res.body)
    assert.are.equal(200, post(a, body).status)
    assert.are.equal(1, H.wait_for(function() return seen(a) + seen(b) == 1 and 1 end, 2))
    core.sleep(0.2)
    assert.are.equal(1, seen(a) + seen(b))
    assert.are.equal(1, seen(a))
    -- a different event on b runs on b
    assert.are.equal(200, post(b, status_body(102)).status)
    assert.are.equal(1, H.wait_for(function() return seen(b) == 1 and 1 end, 2))
  end)

  it("answers 503 while Redis is down (the platform delivers again), and runs it once Redis is back", function()
    r.down()
    local body = status_body(103)
    local res = post(a, body)
    assert.are.equal(503, res.status)
    assert.are.equal(503, json.decode(res.body).code)
    assert.is_nil(res.body:find("redis://", 1, true))
    assert.are.equal(1, seen(a))
    r.up()
    assert.are.equal(200, post(b, body).status)
    assert.are.equal(2, H.wait_for(function() return seen(b) == 2 and 2 end, 2))
    assert.are.equal(200, post(a, body).status)
    core.sleep(0.2)
    assert.are.equal(3, seen(a) + seen(b))
    for _, ng in ipairs { a, b } do assert.is_nil(ng.log():find(PASSWORD, 1, true), "the password is in a log") end
  end)

  it("runs the handler once when a delivery and its redelivery reach both hosts at the same moment", function()
    local before = seen(a) + seen(b)
    local f = assert(io.open(r.dir .. "/race.sh", "w"))
    for i = 1, 30 do
      local file = r.dir .. "/race" .. i .. ".json"
      local bf = assert(io.open(file, "w"))
      bf:write(status_body(900 + i))
      bf:close()
      for _, ng in ipairs { a, b, a, b } do
        f:write(string.format("curl -s -o /dev/null -w '%%{http_code}\\n' -H 'Content-Type: application/json' " ..
          "--data-binary @%s %s/cb &\n", file, ng.url))
      end
    end
    f:write("wait\n")
    f:close()
    local p = io.popen("sh " .. r.dir .. "/race.sh")
    local codes = p:read("*a")
    p:close()
    -- ack = "after_handler" (the default): a copy that lands while another
    -- host runs the handler is answered 503 ("deliver again"), which is
    -- right; what must hold is that no code is anything else
    local _, n200 = codes:gsub("200", "")
    local _, n503 = codes:gsub("503", "")
    assert.are.equal(120, n200 + n503, codes)
    assert.is_true(n200 >= 30, codes)
    assert.are.equal(before + 30, H.wait_for(function() return seen(a) + seen(b) == before + 30 and before + 30 end, 3))
    -- the platform's redelivery of each, to either host: acknowledged, not handled again
    for i = 1, 30 do
      local body = status_body(900 + i)
      assert.are.equal(200, post(i % 2 == 0 and a or b, body).status)
    end
    core.sleep(0.2)
    assert.are.equal(before + 30, seen(a) + seen(b))
  end)
end)

describe("the Redis dedupe store's two steps (for an acknowledgement after the handler) #redis", function()
  local r, store
  setup(function()
    r = R.start {}
    store = require("kinot.callback.redis_store").new { redis = r.url, ttl = 60, lease = 5 }
  end)
  teardown(function() r.stop() end)

  it("claims, refuses a second claim while pending, forgets a failure, remembers a success", function()
    local state, token = store:claim("id1")
    assert.are.equal("new", state)
    assert.are.equal("busy", store:claim("id1"))
    assert.is_true(store:settle("id1", token, false)) -- a failure forgets its own claim (its token)
    state, token = store:claim("id1")
    assert.are.equal("new", state)
    assert.is_true(store:settle("id1", token, true))
    assert.are.equal("done", store:claim("id1"))
    -- a host that died holding a claim blocks nobody past its lease
    local short = require("kinot.callback.redis_store").new { redis = r.url, ttl = 60, lease = 0.2 }
    assert.are.equal("new", short:claim("id3"))
    core.sleep(0.3)
    assert.are.equal("new", store:claim("id3"))
  end)

  it("with ack = after_handler, records a delivery only once its handler succeeded", function()
    local body = status_body(701)
    local rcv, inner, fail
    rcv = callback.receiver { secret = SECRET, ack = "after_handler", max_age = false,
                              dedupe = { redis = r.url, ttl = 60, lease = 5 },
                              on_status = function()
                                -- the redelivery while the handler runs, on any host
                                inner = { rcv:receive(body) }
                                if fail then error("the handler fails") end
                              end }
    fail = true
    assert.are.equal(500, (rcv:receive(body))) -- failed: the platform's redelivery runs it
    assert.are.equal(503, inner[1])
    fail, inner = false, nil
    assert.are.equal(200, (rcv:receive(body)))
    assert.are.equal(503, inner[1])
    inner = nil
    local st, _, ev, _, duplicate = rcv:receive(body)
    assert.are.equal(200, st)
    assert.is_nil(ev)
    assert.is_true(duplicate)
    assert.is_nil(inner)
  end)

  it("trims the inbox's stream near maxlen, each entry still deduped", function()
    local box = require("kinot.callback.inbox").new({ redis = r.url, stream = "trimmed", maxlen = 5 }, nil)
    for i = 1, 400 do assert.is_true(box:put("t" .. i, "{}", 1)) end
    assert.is_false(box:put("t400", "{}", 1))
    local c = r.client()
    local len = tonumber(c:call("XLEN", "trimmed"))
    c:close()
    assert.is_true(len < 400 and len >= 5, "XLEN " .. len)
  end)

  it("says network when Redis is gone", function()
    r.down()
    local v, err = store:claim("id4")
    assert.is_nil(v)
    assert.are.equal("network", err.kind)
    r.up()
  end)
end)

describe("the durable inbox #redis", function()
  local r, a, b, c
  local STREAM = "kinot:callbacks"
  setup(function()
    r = R.start { aof = true }
    local o = "{ inbox = { redis = '" .. r.url .. "', stream = '" .. STREAM .. "' } }"
    a, b = host(o), host(o)
    c = r.client()
  end)
  teardown(function()
    if a then a.stop() end
    if b then b.stop() end
    r.stop()
  end)

  it("stores each verified event once, whichever host gets the delivery", function()
    local body = status_body(201)
    assert.are.equal(200, post(a, body).status)
    assert.are.equal(200, post(b, body).status)
    assert.are.equal(401, post(a, (body:gsub('"locked":1', '"locked":0'))).status)
    local es = entries(c, STREAM)
    assert.are.equal(1, #es)
    assert.are.equal(body, es[1].body)
    assert.are.equal(assert(callback.verify(body, { secret = SECRET })).id, es[1].id)
    assert.is_true(math.abs(tonumber(es[1].at) - os.time()) < 5)
  end)

  it("loses no event that got a 200 when Redis is killed and restarted (appendfsync always)", function()
    c:call("DEL", STREAM)
    -- Redis is killed (SIGKILL: no goodbye) while the callbacks come in
    local pid = r.pid()
    shell("(sleep 0.4; kill -KILL " .. pid .. ") >/dev/null 2>&1 &")
    local told, refused = {}, {}
    local t0 = core.monotonic()
    local sn = 3000
    while core.monotonic() - t0 < 1.2 do
      sn = sn + 1
      local body = status_body(sn)
      local st = post(sn % 2 == 0 and a or b, body).status
      if st == 200 then told[#told + 1] = body
      else
        assert.are.equal(503, st)
        refused[#refused + 1] = body
      end
    end
    assert.is_true(#told > 10 and #refused > 0, #told .. " stored, " .. #refused .. " refused")
    r.up()
    local have = {}
    for _, e in ipairs(entries(c, STREAM)) do have[e.body] = (have[e.body] or 0) + 1 end
    for _, body in ipairs(told) do assert.are.equal(1, have[body], body) end
    -- the platform delivers the refused ones again: all stored now, once each
    for _, body in ipairs(refused) do assert.are.equal(200, post(a, body).status) end
    for _, body in ipairs(told) do assert.are.equal(200, post(b, body).status) end -- redeliveries: no new entry
    assert.are.equal(#told + #refused, tonumber(c:call("XLEN", STREAM)))
  end)

  it("answers 503 while Redis is stopped, and keeps every event it said was stored", function()
    c:call("DEL", STREAM)
    for i = 1, 5 do assert.are.equal(200, post(a, status_body(400 + i)).status) end
    r.down()
    local res = post(b, status_body(406))
    assert.are.equal(503, res.status)
    assert.are.equal(503, post(a, status_body(407)).status)
    r.up()
    local es = entries(c, STREAM)
    assert.are.equal(5, #es)
    for i = 1, 5 do assert.are.equal(status_body(400 + i), es[i].body) end
  end)
end)

-- Inside nginx the puts of requests that arrive together go to Redis as
-- one pipeline (kinot.callback.inbox's group commit): many POSTs at once
-- on one nginx worker (64 at a time, from Python threads: real HTTP), and
-- Redis killed part way.  Each request's 200 must still follow its own
-- event's append.
for _, flying in ipairs { 1, 3 } do
-- (many requests at once on one nginx worker)
describe("the inbox's group commit, " .. flying .. " pipeline(s) in flight #redis #nginx #slow", function()
  local r, ng, c, dir
  local STREAM = "kinot:gc"
  setup(function()
    r = R.start { aof = true }
    -- (IN_FLIGHT: pipelines at once in the worker, set before the handler is made)
    ng = host("(function() require('kinot.callback.inbox').IN_FLIGHT = " .. flying .. " return { inbox = { redis = '" ..
      r.url .. "', stream = '" .. STREAM .. "' } } end)()")
    c = r.client()
    local p = io.popen("mktemp -d /tmp/kinot-gc.XXXXXX")
    dir = p:read("*l")
    p:close()
  end)
  teardown(function()
    if ng then ng.stop() end
    r.stop()
    if dir then shell("rm -rf " .. dir) end
  end)

  -- posts bodies (a list) 64 at a time; after `kill_after` answers, kills
  -- `pid` (SIGKILL); -> status by body index
  local function post_all(bodies, kill_after, pid)
    return H.post_many(dir, ng.url .. "/cb", bodies,
      { after = kill_after, cmd = (kill_after and pid) and ("kill -9 " .. pid) or nil, timeout = 10 })
  end

  it("stores 1,500 callbacks posted 64 at a time, each once, duplicates among them included", function()
    c:call("DEL", STREAM)
    local bodies = {}
    for i = 1, 1500 do bodies[i] = status_body(20000 + (i <= 1200 and i or i - 300)) end -- the last 300: redeliveries
    local st = post_all(bodies)
    for i = 1, 1500 do assert.are.equal(200, st[i], i) end
    local have = {}
    for _, e in ipairs(entries(c, STREAM)) do have[e.body] = (have[e.body] or 0) + 1 end
    for i = 1, 1200 do assert.are.equal(1, have[bodies[i]], i) end
    assert.are.equal(1200, tonumber(c:call("XLEN", STREAM)))
    -- the script lost (SCRIPT FLUSH: a restart without it): loaded again, nothing refused
    c:call("SCRIPT", "FLUSH")
    bodies = {}
    for i = 1, 300 do bodies[i] = status_body(30000 + i) end
    st = post_all(bodies)
    for i = 1, 300 do assert.are.equal(200, st[i], i) end
    assert.are.equal(1500, tonumber(c:call("XLEN", STREAM)))
  end)

  it("loses none answered 200 when Redis is killed (SIGKILL) in the middle of the batches (appendfsync always)", function()
    c:call("DEL", STREAM)
    local bodies = {}
    for i = 1, 1500 do bodies[i] = status_body(40000 + i) end
    local st = post_all(bodies, 500, r.pid())
    local told, refused = {}, {}
    for i = 1, 1500 do
      if st[i] == 200 then told[#told + 1] = bodies[i]
      else
        assert.are.equal(503, st[i], i)
        refused[#refused + 1] = bodies[i]
      end
    end
    assert.is_true(#told >= 500 and #refused > 0, #told .. " stored, " .. #refused .. " refused")
    r.up()
    local have = {}
    for _, e in ipairs(entries(c, STREAM)) do have[e.body] = (have[e.body] or 0) + 1 end
    for _, body in ipairs(told) do assert.are.equal(1, have[body], body) end
    -- the platform delivers the refused ones again: all stored now, once each
    st = post_all(refused)
    for i = 1, #refused do assert.are.equal(200, st[i], i) end
    assert.are.equal(1500, tonumber(c:call("XLEN", STREAM)))
  end)
end)
end

-- The group commit's slot is held by a request: one ended under it
-- (here a light thread killed while its pipeline waits on a stopped
-- Redis; lua_check_client_abort does the same) must not leave every later
-- store of that worker waiting for it.
describe("the inbox's group commit when the request holding its slot is killed #redis #nginx", function()
  local r, ng
  setup(function()
    r = R.start {}
    ng = H.nginx {
      http = [[
        init_by_lua_block {
          box = require("kinot.callback.inbox").new { redis = "]] .. r.url .. [[", stream = "kinot:sw", timeout = 0.5 }
        }
      ]],
      server = [[
        location = /lead { content_by_lua_block {
          local t = ngx.thread.spawn(function() return box:put("lead", "{}", ngx.now()) end)
          ngx.sleep(0.2)
          ngx.say(tostring(ngx.thread.kill(t)))
        } }
        location = /put { content_by_lua_block {
          local v, err = box:put(ngx.var.arg_id, "{}", ngx.now())
          ngx.say(tostring(v), " ", err and err.kind or "")
        } }
      ]],
    }
  end)
  teardown(function()
    if ng then ng.stop() end
    r.stop()
  end)

  it("takes the slot back once it is older than a pipeline can last, and stores again", function()
    assert.are.equal("true \n", H.raw("GET", ng.url .. "/put?id=before").body)
    local pid = r.pid()
    assert.is_true(shell("kill -STOP " .. pid))
    local killed = H.raw("GET", ng.url .. "/lead").body
    assert.is_true(shell("kill -CONT " .. pid))
    assert.are.equal("1\n", killed) -- ngx.thread.kill: 1, killed
    -- the first store after it may wait its turn in vain (timeout: 503),
    -- then the slot is taken back: the next one is stored
    local first = H.raw("GET", ng.url .. "/put?id=a").body
    assert.is_truthy(first == "true \n" or first == "nil timeout\n", first)
    assert.are.equal("true \n", H.raw("GET", ng.url .. "/put?id=b").body)
    assert.are.equal("true \n", H.raw("GET", ng.url .. "/put?id=c").body)
  end)
end)

-- a handler module for `kinot worker` processes: it notes each start and
-- each finish in files of dir; an event with data.slow hangs on its first
-- attempt (the spec kills that worker there)
local function handler_module(dir)
  local f = assert(io.open(dir .. "/spec_inbox_handler.lua", "w"))
  f:write(string.format([[
local core = require "kinot.core"
local DIR = %q
local function note(file, line)
  local f = assert(io.open(DIR .. "/" .. file, "a"))
  f:write(line, "\n")
  f:close()
end
return {
  on_status = function(ev)
    note("started", ev.sn .. " " .. ev.attempt)
    if ev.data.slow and ev.attempt == 1 then core.sleep(60) end
    note("done", tostring(ev.sn))
  end,
}
]], dir))
  f:close()
end

local lines = H.lines

describe("workers #redis #cli", function()
  local r, ng, c, dir
  local STREAM = "kinot:w"
  local PASSWORD = "w0rkers-Pa55"
  setup(function()
    r = R.start { password = PASSWORD }
    ng = host("{ inbox = { redis = '" .. r.url .. "', stream = '" .. STREAM .. "' } }")
    c = r.client()
    local p = io.popen("mktemp -d /tmp/kinot-worker.XXXXXX")
    dir = p:read("*l")
    p:close()
    handler_module(dir)
  end)
  teardown(function()
    if ng then ng.stop() end
    r.stop()
    if dir then shell("rm -rf " .. dir) end
  end)

  local function spawn(name, extra)
    local cmd = string.format("cd %s && LUA_PATH='%s/?.lua;;' KINOT_REDIS_URL='%s' exec %s bin/kinot worker --stream %s " ..
      "--group g --consumer %s --handler spec_inbox_handler --claim-after 0.5 --block 0.2 %s >%s/%s.log 2>&1 & echo $!",
      H.root, dir, r.url, H.runtime == "luajit" and "luajit" or "lua5.4", STREAM, name, extra or "", dir, name)
    local p = io.popen(cmd)
    local pid = tonumber(p:read("*l"))
    p:close()
    return pid
  end

  -- --count 1: each entry is acknowledged before the next runs, so none
  -- that finished runs again (a batch's run again when killed: below)
  it("a worker killed (SIGKILL) in the middle of a handler: another claims its entry; nothing acknowledged is lost", function()
    local pids = {}
    local ok, e = pcall(function()
      for i = 1, 3 do assert.are.equal(200, post(ng, status_body(500 + i)).status) end
      assert.are.equal(200, post(ng, status_body(504, ',"slow":true')).status)
      for i = 5, 7 do assert.are.equal(200, post(ng, status_body(500 + i)).status) end
      pids[1] = spawn("w1", "--count 1")
      assert.is_truthy(H.wait_for(function()
        for _, l in ipairs(lines(dir .. "/started")) do if l == "504 1" then return true end end
      end, 10), "the first worker never started the slow event")
      assert.is_true(shell("kill -KILL " .. pids[1]))
      pids[2] = spawn("w2")
      assert.is_truthy(H.wait_for(function() return #lines(dir .. "/done") == 7 end, 10),
        "done: " .. table.concat(lines(dir .. "/done"), ","))
      local done = {}
      for _, l in ipairs(lines(dir .. "/done")) do done[l] = (done[l] or 0) + 1 end
      for i = 1, 7 do assert.are.equal(1, done[tostring(500 + i)], 500 + i) end
      -- the slow one ran again, as attempt 2, on the other worker
      local retried = false
      for _, l in ipairs(lines(dir .. "/started")) do if l == "504 2" then retried = true end end
      assert.is_true(retried)
      assert.is_truthy(H.wait_for(function()
        return tonumber(c:call("XPENDING", STREAM, "g")[1]) == 0 and tonumber(c:call("XLEN", STREAM)) == 0
      end, 3))
      -- each says where it reads, without the password
      for _, name in ipairs { "w1", "w2" } do
        local log = table.concat(lines(dir .. "/" .. name .. ".log"), "\n")
        assert.matches("kinot worker " .. name .. ": " .. STREAM .. ", group g, on redis://***@127.0.0.1:", log, 1, true)
        assert.is_nil(log:find(PASSWORD, 1, true))
      end
    end)
    for _, pid in pairs(pids) do shell("kill -KILL " .. pid .. " 2>/dev/null") end
    assert(ok, e)
  end)

  -- the default count: a batch of 30 read at once, killed in its 15th
  -- handler.  Nothing is lost; what ran twice is only what had finished
  -- in the killed worker's batch and was not yet acknowledged.
  it("a worker killed (SIGKILL) mid-batch: nothing lost, only its unacknowledged finished entries run again", function()
    local pids = {}
    os.remove(dir .. "/started")
    os.remove(dir .. "/done")
    local ok, e = pcall(function()
      c:call("DEL", STREAM)
      for i = 1, 30 do
        assert.are.equal(200, post(ng, status_body(800 + i, i == 15 and ',"slow":true' or "")).status)
      end
      pids[1] = spawn("w3")
      assert.is_truthy(H.wait_for(function()
        for _, l in ipairs(lines(dir .. "/started")) do if l == "815 1" then return true end end
      end, 10), "the first worker never started the slow event")
      assert.is_true(shell("kill -KILL " .. pids[1]))
      local before = {}
      for _, l in ipairs(lines(dir .. "/done")) do before[l] = true end
      pids[2] = spawn("w4")
      assert.is_truthy(H.wait_for(function()
        return tonumber(c:call("XPENDING", STREAM, "g")[1]) == 0 and tonumber(c:call("XLEN", STREAM)) == 0
      end, 15), "entries left: " .. tostring(c:call("XLEN", STREAM)))
      local done = {}
      for _, l in ipairs(lines(dir .. "/done")) do done[l] = (done[l] or 0) + 1 end
      for i = 1, 30 do
        local sn = tostring(800 + i)
        assert.is_truthy(done[sn], sn .. " never handled")
        -- twice only if it had finished in the killed worker, unacknowledged
        assert.is_true(done[sn] == 1 or (done[sn] == 2 and before[sn] == true), sn .. " ran " .. done[sn] .. " times")
      end
    end)
    for _, pid in pairs(pids) do shell("kill -KILL " .. pid .. " 2>/dev/null") end
    assert(ok, e)
  end)

  -- one failure in the middle of a batch: the others are acknowledged in
  -- the batch, the failed one is not, and runs again
  it("a handler failing in the middle of a batch: the rest acknowledged, that one left pending and run again", function()
    c:call("DEL", STREAM)
    for i = 1, 20 do assert.are.equal(200, post(ng, status_body(900 + i)).status) end
    local runs, acked_before_retry = {}, nil
    local w = worker.new { redis = r.url, stream = STREAM, group = "g5", consumer = "b", block = 0.1, claim_after = 0.3,
                           log = function() end,
                           on_status = function(ev)
                             runs[ev.sn] = (runs[ev.sn] or 0) + 1
                             if ev.sn == 910 and ev.attempt == 1 then error("fails in the middle") end
                             if ev.sn == 910 then
                               -- the retry: every other entry is gone from the stream by now
                               acked_before_retry = tonumber(c:call("XLEN", STREAM))
                             end
                           end }
    local t0 = core.monotonic()
    w:run(function() return (runs[910] or 0) >= 2 or core.monotonic() - t0 > 5 end)
    for i = 1, 20 do assert.are.equal(i == 10 and 2 or 1, runs[900 + i], 900 + i) end
    assert.are.equal(1, acked_before_retry)
    assert.are.equal(0, tonumber(c:call("XPENDING", STREAM, "g5")[1]))
    assert.are.equal(0, tonumber(c:call("XLEN", STREAM)))
    assert.are.equal(19 + 1, w.handled)
  end)

  it("moves an entry whose handler always raises to <stream>:dead after max_attempts, with its error", function()
    local body = status_body(601)
    assert.are.equal(200, post(ng, body).status)
    local calls = 0
    local w = worker.new { redis = r.url, stream = STREAM, group = "g2", consumer = "x", block = 0.1,
                           claim_after = 0.1, max_attempts = 3, log = function() end,
                           on_status = function(ev)
                             if ev.sn == 601 then
                               calls = calls + 1
                               error("boom on attempt " .. ev.attempt)
                             end
                           end }
    local t0 = core.monotonic()
    w:run(function() return w.dead > 0 or core.monotonic() - t0 > 10 end)
    assert.are.equal(3, calls)
    local dead = entries(c, STREAM .. ":dead")
    assert.are.equal(1, #dead)
    assert.matches("boom on attempt 3", dead[1].error)
    assert.are.equal("3", dead[1].attempts)
    assert.are.equal(body, dead[1].body)
    assert.are.equal(assert(callback.verify(body, { secret = SECRET })).id, dead[1].id)
    assert.are.equal(0, tonumber(c:call("XPENDING", STREAM, "g2")[1]))
    assert.are.equal(kredis.null, c:call("HGET", STREAM .. ":errors", dead[1].entry))
  end)

  it("kinot worker refuses to start without a Redis URL or a loadable handler (exit 2)", function()
    local function run(env, args)
      local p = io.popen(string.format("cd %s && %s %s bin/kinot worker %s 2>&1; echo \"rc=$?\"", H.root, env,
        H.runtime == "luajit" and "luajit" or "lua5.4", args))
      local out = p:read("*a")
      p:close()
      return out
    end
    assert.matches("worker needs %-%-redis URL or KINOT_REDIS_URL.*rc=2", run("KINOT_REDIS_URL=", "--handler x"))
    local out = run("KINOT_REDIS_URL='" .. r.url .. "'", "--handler no_such_handler_module")
    assert.matches("cannot load the handler module no_such_handler_module.*rc=2", out)
    assert.is_nil(out:find(PASSWORD, 1, true))
  end)

  it("makes its group again when the stream is deleted under it (FLUSHALL, an operator's DEL)", function()
    c:call("DEL", STREAM)
    local handled = {}
    local w = worker.new { redis = r.url, stream = STREAM, group = "g6", block = 0.1, claim_after = 0.1,
                           log = function() end, on_status = function(ev) handled[#handled + 1] = ev.sn end }
    assert.are.equal(0, w:step())
    c:call("DEL", STREAM)
    core.sleep(0.1) -- a claim is due: the first command of the next step finds no group
    assert.is_nil(w:step())
    assert.are.equal(200, post(ng, status_body(661)).status)
    local t0 = core.monotonic()
    w:run(function() return #handled > 0 or core.monotonic() - t0 > 3 end)
    assert.are.same({ 661 }, handled)
  end)

  it("moves an entry it cannot read to the dead-letter stream at once, without calling the handler", function()
    c:call("DEL", STREAM, STREAM .. ":dead")
    assert(c:call("XADD", STREAM, "*", "id", "x", "body", "{not json", "at", "1"))
    local calls = 0
    local w = worker.new { redis = r.url, stream = STREAM, group = "g5", block = 0.1, log = function() end,
                           on_status = function() calls = calls + 1 end }
    local t0 = core.monotonic()
    w:run(function() return w.dead > 0 or core.monotonic() - t0 > 5 end)
    assert.are.equal(0, calls)
    local dead = entries(c, STREAM .. ":dead")
    assert.are.equal(1, #dead)
    assert.matches("^entry unreadable", dead[1].error)
    assert.are.equal("{not json", dead[1].body)
  end)

  it("forgets consumers long gone, but never one that holds an entry", function()
    c:call("DEL", STREAM)
    assert.are.equal(200, post(ng, status_body(651)).status)
    c:call("XGROUP", "CREATE", STREAM, "g4", "0")
    assert(c:call("XREADGROUP", "GROUP", "g4", "holder", "COUNT", 1, "STREAMS", STREAM, ">"))
    assert(c:call("XREADGROUP", "GROUP", "g4", "idle", "COUNT", 1, "STREAMS", STREAM, ">"))
    local w = worker.new { redis = r.url, stream = STREAM, group = "g4", consumer = "me", on_status = print }
    local forget = worker.FORGET_AFTER
    worker.FORGET_AFTER = 0
    local ok, err = w:tidy()
    worker.FORGET_AFTER = forget
    assert(ok, err)
    local names = {}
    for _, row in ipairs(c:call("XINFO", "CONSUMERS", STREAM, "g4")) do names[#names + 1] = row[2] end
    assert.are.same({ "holder" }, names)
  end)

  it("counts nil, err from a handler as a failure and runs the entry again", function()
    c:call("DEL", STREAM)
    assert.are.equal(200, post(ng, status_body(701)).status)
    local attempts = {}
    local w = worker.new { redis = r.url, stream = STREAM, group = "g3", block = 0.1, claim_after = 0.1,
                           log = function() end,
                           on_status = function(ev)
                             attempts[#attempts + 1] = ev.attempt
                             if ev.attempt < 2 then return nil, "not yet" end
                             return true
                           end }
    local t0 = core.monotonic()
    w:run(function() return w.handled > 0 or core.monotonic() - t0 > 5 end)
    assert.are.same({ 1, 2 }, attempts)
    assert.are.equal(0, tonumber(c:call("XPENDING", STREAM, "g3")[1]))
  end)
end)

describe("a worker inside nginx #redis #nginx", function()
  local r, ng
  setup(function()
    r = R.start {}
    ng = host("{ inbox = { redis = '" .. r.url .. "' } }", [[
      init_worker_by_lua_block {
        require("kinot.callback.worker").start {
          redis = "]] .. r.url .. [[", block = 0.2, claim_after = 1,
          on_status = function(ev) ngx.shared.seen:incr("n", 1, 0) end,
          on_command = function(ev) ngx.shared.seen:incr("n", 1, 0) end,
        }
      }
    ]])
  end)
  teardown(function()
    if ng then ng.stop() end
    r.stop()
  end)

  it("runs every stored event, over cosockets in a timer", function()
    for i = 1, 20 do assert.are.equal(200, post(ng, status_body(800 + i)).status) end
    assert.are.equal(20, H.wait_for(function() return seen(ng) == 20 and 20 end, 5))
    local c = r.client()
    assert.are.equal(0, tonumber(c:call("XLEN", "kinot:callbacks")))
    c:close()
  end)
end)

-- the README's config, as written (only the paths, the port and the user
-- changed for a checkout), with a handler module of the kind it names
describe("the README's nginx config for several receivers #redis #nginx", function()
  local r, prefix, url
  setup(function()
    r = R.start { password = "readme-pw" }
    local p = io.popen("mktemp -d /tmp/kinot-readme.XXXXXX")
    prefix = p:read("*l")
    p:close()
    local f = assert(io.open(H.root .. "/README.md"))
    local readme = f:read("*a")
    f:close()
    local conf = assert(readme:match("## Several receivers and workers %(Redis%).-```nginx\n(.-)```"))
    local port = require("kinot.sim.launcher").free_port()
    conf = conf:gsub("listen 8080;", "listen 127.0.0.1:" .. port .. ";")
      :gsub('lua_package_path "[^"]*"', 'lua_package_path "' .. prefix .. "/?.lua;" .. H.root .. "/lua/?.lua;" ..
        H.root .. '/lua/?/init.lua;;"')
      :gsub('lua_package_cpath "[^"]*"', 'lua_package_cpath "' .. H.root .. '/build/5.1/?.so;;"')
      :gsub("worker_processes auto;", "worker_processes 2;\n" .. require("kinot.sim.launcher").user_directive())
      :gsub("pid /run/kinot%-callbacks%.pid;", "pid " .. prefix .. "/logs/nginx.pid;")
    shell("mkdir -p " .. prefix .. "/logs " .. prefix .. "/myapp")
    f = assert(io.open(prefix .. "/nginx.conf", "w"))
    f:write(conf)
    f:close()
    f = assert(io.open(prefix .. "/myapp/callbacks.lua", "w"))
    f:write(string.format([[
local function note(ev)
  local f = assert(io.open(%q, "a"))
  f:write(ev.kind, " ", ev.sn, "\n")
  f:close()
end
return { on_status = note, on_command = note }
]], prefix .. "/handled"))
    f:close()
    assert.is_true(shell(string.format("KINOT_APP_SECRET=%s KINOT_REDIS_URL='%s' nginx -p %s -c nginx.conf -e %s/logs/error.log",
      SECRET, r.url, prefix, prefix)))
    url = "http://127.0.0.1:" .. port
    require("kinot.sim.launcher").wait_for_port(port)
  end)
  teardown(function()
    shell("kill $(cat " .. prefix .. "/logs/nginx.pid) 2>/dev/null; sleep 0.3; rm -rf " .. prefix)
    r.stop()
  end)

  it("receives, stores and runs callbacks, each once", function()
    local function deliver(body)
      return H.raw("POST", url .. "/kinot/callback", body, { ["Content-Type"] = "application/json" }).status
    end
    for i = 1, 5 do assert.are.equal(200, deliver(status_body(1100 + i))) end
    assert.are.equal(200, deliver(status_body(1101))) -- a redelivery
    assert.are.equal(401, deliver((status_body(1106):gsub('"locked":1', '"locked":0'))))
    assert.is_truthy(H.wait_for(function() return #lines(prefix .. "/handled") == 5 end, 5))
    core.sleep(0.3)
    local got = lines(prefix .. "/handled")
    table.sort(got)
    assert.are.same({ "status_changed 1101", "status_changed 1102", "status_changed 1103", "status_changed 1104",
                      "status_changed 1105" }, got)
    local f = io.open(prefix .. "/logs/error.log")
    local log = f and f:read("*a") or ""
    if f then f:close() end
    assert.is_nil(log:find("readme-pw", 1, true))
  end)
end)
