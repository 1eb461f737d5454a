-- The inbox stores a batch of deliveries (an nginx worker's group commit)
-- with ONE call of its script: attacked here with real parts.  Two nginx
-- workers post into one Redis, 64 requests at a time (Python threads, real
-- HTTP), each load mixing new events, events stored before (redeliveries)
-- and the same event twice; meanwhile Redis is stalled (SIGSTOP past the
-- client's timeout), its script flushed again and again (SCRIPT FLUSH), or
-- nginx's connections killed mid-pipeline (CLIENT KILL; with wait, between
-- the script and its WAIT).  Whatever happens: every event answered 200 is
-- in the stream exactly once, every other answer is a 503, and once the
-- refused are delivered again every event is stored, once.
local callback = require "kinot.callback"
local core = require "kinot.core"
local launcher = require "kinot.sim.launcher"
local R = require "redis_server"
local H = require "helpers"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local STREAM = "kinot:batch"

local function signed(body)
  return (body:gsub("}$", ',"sign":"' .. assert(callback.sign(body, SECRET)) .. '"}'))
end
local function status_body(sn)
  return signed(string.format('{"sn":%d,"locked":1,"car_detected":0,"device_type":18}', sn))
end
local function shell(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

-- bodies (a list) posted 64 at a time to url -> status by index; `at`:
-- { after = n answers, cmd = shell command } run then, in the background
local function post_all(dir, url, bodies, at)
  return H.post_many(dir, url, bodies, at)
end

-- body -> entries holding it
local function stored(c)
  local have = {}
  for _, e in ipairs(assert(c:call("XRANGE", STREAM, "-", "+"))) do
    local f = {}
    for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
    have[f.body] = (have[f.body] or 0) + 1
  end
  return have
end

-- a shell loop started in the background (its pid), stopped by stop_loop
local function start_loop(cmd)
  local p = io.popen("(while :; do " .. cmd .. " >/dev/null 2>&1; done) >/dev/null 2>&1 & echo $!")
  local pid = tonumber(p:read("*l"))
  p:close()
  return pid
end
-- (the command the loop was running when killed still runs to its end: a
-- CLIENT KILL landing after the stop cut the spec's own connection to
-- Redis once, mid-XRANGE: 0.2 s lets it land first)
local function stop_loop(pid)
  if pid then shell("kill " .. pid .. " 2>/dev/null; sleep 0.2") end
end

-- A TCP relay to Redis on a free port that cuts connections part way:
-- of the chunks Redis sends back, one in `every` is forwarded whole or
-- half (in turn) and then both sides are closed: a batch's reply cut
-- mid-way, or after the script's reply and before its WAIT's.
-- -> { port, stop(), cuts() }
local function cutter(dir, upstream, every)
  local port = launcher.free_port()
  local py = assert(io.open(dir .. "/cutter.py", "w"))
  py:write([[
import socket, sys, threading
port, up, every, log = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lock, n = threading.Lock(), [0, 0]
def pipe(a, b, cut):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            if cut:
                with lock:
                    n[0] += 1
                    k = n[0]
                if k % every == 0:
                    b.sendall(d if (k // every) % 2 else d[:max(1, len(d) // 2)])
                    with lock:
                        n[1] += 1
                        open(log, "w").write(str(n[1]))
                    break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(128)
while True:
    c, _ = srv.accept()
    u = socket.create_connection(("127.0.0.1", up))
    threading.Thread(target=pipe, args=(c, u, False), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c, True), daemon=True).start()
]])
  py:close()
  local log = dir .. "/cuts"
  local p = io.popen(string.format("python3 %s/cutter.py %d %d %d %s >/dev/null 2>&1 & echo $!", dir, port, upstream,
    every, log))
  local pid = tonumber(p:read("*l"))
  p:close()
  launcher.wait_for_port(port)
  return { port = port, stop = function() shell("kill " .. pid .. " 2>/dev/null") end,
           cuts = function() return tonumber(H.read(log) or "0") or 0 end }
end

-- two nginx workers, each with the inbox (timeout: the client's deadline)
local function inbox_host(url, extra)
  return H.nginx {
    workers = 2,
    http = [[
      init_by_lua_block {
        receive = require("kinot.callback").handler { secret = "]] .. SECRET .. [[",
          inbox = { redis = "]] .. url .. [[", stream = "]] .. STREAM .. [[", timeout = 0.5]] .. (extra or "") .. [[ } }
      }
    ]],
    server = [[
      location = /cb { content_by_lua_block { receive() } }
    ]],
  }
end

-- The load: 300 events stored first, then 1,200 posts at once: 700 new
-- events, the 300 stored (redeliveries) and 200 of the new ones twice.
-- `during()` disturbs Redis while they are posted: it returns { at = {
-- after = n, cmd = shell command run after n answers }, stop = function
-- run once all are answered }.  Then the checks above.
-- urls: { before = the events stored first, load = the 1,200, again = the
-- refused delivered again } (one host's url for all, or another for the load)
local function attack(dir, c, base, urls, during)
  if type(urls) == "string" then urls = { before = urls, load = urls, again = urls } end
  assert(c:call("DEL", STREAM))
  local before = {}
  for i = 1, 300 do before[i] = status_body(base + i) end
  local st = post_all(dir, urls.before .. "/cb", before)
  for i = 1, 300 do assert.are.equal(200, st[i], "stored first: " .. i) end
  local bodies, distinct = {}, {}
  for i = 1, 700 do
    bodies[#bodies + 1] = status_body(base + 1000 + i)
    distinct[bodies[#bodies]] = true
  end
  for i = 1, 300 do bodies[#bodies + 1] = before[i] end
  for i = 1, 200 do bodies[#bodies + 1] = bodies[i * 3] end
  for _, b in ipairs(before) do distinct[b] = true end
  local d = during and during() or {}
  local ok, res = pcall(post_all, dir, urls.load .. "/cb", bodies, d.at)
  if d.stop then d.stop() end
  assert(ok, res)
  st = res
  local have = stored(c)
  local refused = {}
  for i, body in ipairs(bodies) do
    if st[i] == 200 then
      assert.are.equal(1, have[body], "answered 200 but stored " .. tostring(have[body]) .. " times: post " .. i)
    else
      assert.are.equal(503, st[i], "post " .. i)
      refused[#refused + 1] = body
    end
  end
  for body, n in pairs(have) do
    assert.is_true(distinct[body] ~= nil, "an entry no one posted")
    assert.are.equal(1, n, "stored twice")
  end
  -- the platform delivers the refused ones again: every event stored, once
  if #refused > 0 then
    st = post_all(dir, urls.again .. "/cb", refused)
    for i = 1, #refused do assert.are.equal(200, st[i], "redelivered " .. i) end
  end
  have = stored(c)
  local n = 0
  for body in pairs(distinct) do
    assert.are.equal(1, have[body], "stored " .. tostring(have[body]) .. " times")
    n = n + 1
  end
  assert.are.equal(1000, n)
  assert.are.equal(n, tonumber(c:call("XLEN", STREAM)))
  return #refused
end

describe("the inbox's one script a batch, attacked #redis #nginx #slow", function()
  local r, ng, c, dir
  setup(function()
    r = R.start {}
    ng = inbox_host(r.url)
    c = r.client()
    local p = io.popen("mktemp -d /tmp/kinot-batch.XXXXXX")
    dir = p:read("*l")
    p:close()
  end)
  teardown(function()
    if ng then ng.stop() end
    r.stop()
    if dir then shell("rm -rf " .. dir) end
  end)

  it("stores a batch mixing new events, redeliveries and the same event twice, each once, in fewer calls than events",
     function()
    assert(c:call("CONFIG", "RESETSTAT"))
    assert.are.equal(0, attack(dir, c, 100000, ng.url))
    -- one script call a batch: fewer calls than the 1,500 events posted
    local calls = tonumber(assert(c:call("INFO", "commandstats")):match("cmdstat_evalsha:calls=(%d+)"))
    assert.is_true(calls < 1500, calls .. " script calls for 1,500 posts")
  end)

  it("Redis stalled (SIGSTOP) past the client's timeout mid-load, then resumed: every 200 stored once", function()
    local pid = r.pid()
    local refused = attack(dir, c, 200000, ng.url, function()
      -- after 300 answers, stopped for 1.5 s: three times the client's timeout
      return { at = { after = 300, cmd = "kill -STOP " .. pid .. "; sleep 1.5; kill -CONT " .. pid },
               stop = function()
                 -- (never left stopped, whatever happened)
                 core.sleep(2)
                 shell("kill -CONT " .. pid .. " 2>/dev/null")
               end }
    end)
    assert.is_true(refused > 0, "the stall refused nothing")
    io.stderr:write("  (SIGSTOP: " .. refused .. " refused, then delivered again)\n")
  end)

  it("its script flushed again and again (SCRIPT FLUSH) mid-load: every 200 stored once", function()
    local refused = attack(dir, c, 300000, ng.url, function()
      local pid = start_loop("redis-cli -p " .. r.port .. " SCRIPT FLUSH; sleep 0.005")
      return { stop = function() stop_loop(pid) end }
    end)
    -- (NOSCRIPT: loaded again and sent again, once: a flush between the
    -- load and the resend refuses that batch, 503, and it comes again)
    io.stderr:write("  (SCRIPT FLUSH: " .. refused .. " refused, then delivered again)\n")
    assert.is_true(refused < 600, refused .. " refused")
  end)

  it("nginx's connections killed (CLIENT KILL) mid-pipeline: every 200 stored once", function()
    local refused = attack(dir, c, 400000, ng.url, function()
      local pid = start_loop("redis-cli -p " .. r.port .. " CLIENT KILL TYPE normal SKIPME yes; sleep 0.01")
      return { stop = function() stop_loop(pid) end }
    end)
    io.stderr:write("  (CLIENT KILL: " .. refused .. " refused, then delivered again)\n")
  end)

  it("Redis out of memory: in one batch the redeliveries get 200, each new event 503, and no mark without its entry",
     function()
    assert(c:call("DEL", STREAM))
    local old, new = {}, {}
    for i = 1, 100 do old[i] = status_body(700000 + i) end
    for i = 1, 100 do new[i] = status_body(710000 + i) end
    local st = post_all(dir, ng.url .. "/cb", old)
    for i = 1, 100 do assert.are.equal(200, st[i], i) end
    local mixed = {}
    for i = 1, 100 do
      mixed[#mixed + 1] = new[i]
      mixed[#mixed + 1] = old[i]
    end
    assert(c:call("CONFIG", "SET", "maxmemory-policy", "noeviction"))
    assert(c:call("CONFIG", "SET", "maxmemory", "1"))
    local ok, res = pcall(post_all, dir, ng.url .. "/cb", mixed)
    assert(c:call("CONFIG", "SET", "maxmemory", "0"))
    assert(ok, res)
    for i = 1, 200, 2 do
      assert.are.equal(503, res[i], "new " .. i)
      assert.are.equal(200, res[i + 1], "redelivery " .. i + 1)
    end
    assert.are.equal(100, tonumber(c:call("XLEN", STREAM)))
    -- their redeliveries, memory back: stored, once each
    st = post_all(dir, ng.url .. "/cb", new)
    for i = 1, 100 do assert.are.equal(200, st[i], i) end
    local have = stored(c)
    for i = 1, 100 do
      assert.are.equal(1, have[new[i]])
      assert.are.equal(1, have[old[i]])
    end
  end)

  it("its connections cut mid-reply (a relay that closes them part way): every 200 stored once", function()
    local cut = cutter(dir, r.port, 7)
    local cut_ng = inbox_host("redis://127.0.0.1:" .. cut.port)
    local ok, refused = pcall(attack, dir, c, 600000, { before = ng.url, load = cut_ng.url, again = ng.url })
    cut_ng.stop()
    cut.stop()
    assert(ok, refused)
    io.stderr:write("  (cut mid-reply: " .. cut.cuts() .. " cuts, " .. refused .. " refused, then delivered again)\n")
    -- (a batch's one reply cut on a kept connection is sent again on a
    -- fresh one, and the script finds what its first run stored: few or
    -- none refused; with wait, a cut after the script's reply is a 503)
    assert.is_true(cut.cuts() > 0, "nothing cut")
  end)
end)

describe("the inbox's one script a batch with wait, its connections cut mid-reply #redis #nginx #slow", function()
  local master, replica, ng, cut_ng, c, dir, cut
  setup(function()
    master = R.start {}
    replica = R.start { conf = { "replicaof 127.0.0.1 " .. master.port } }
    c = master.client()
    assert(H.wait_for(function()
      return (c:call("INFO", "replication") or ""):match("slave0:[^\r\n]*state=online") ~= nil
    end, 10), "the replica never came online")
    local p = io.popen("mktemp -d /tmp/kinot-batch.XXXXXX")
    dir = p:read("*l")
    p:close()
  end)
  teardown(function()
    if ng then ng.stop() end
    if cut_ng then cut_ng.stop() end
    if cut then cut.stop() end
    replica.stop()
    master.stop()
    if dir then shell("rm -rf " .. dir) end
  end)

  it("every 200 stored once (and on the replica), every other a 503, all stored once when delivered again", function()
    cut = cutter(dir, master.port, 7)
    ng = inbox_host(master.url, ", wait = { replicas = 1, timeout = 1 }")
    cut_ng = inbox_host("redis://127.0.0.1:" .. cut.port, ", wait = { replicas = 1, timeout = 1 }")
    local refused = attack(dir, c, 500000, { before = ng.url, load = cut_ng.url, again = ng.url })
    io.stderr:write("  (cut mid-reply with wait: " .. cut.cuts() .. " cuts, " .. refused ..
      " refused, then delivered again)\n")
    assert.is_true(cut.cuts() > 0 and refused > 0, cut.cuts() .. " cuts, " .. refused .. " refused")
    local rc = replica.client()
    assert(H.wait_for(function() return tonumber(rc:call("XLEN", STREAM)) == 1000 end, 10))
    rc:close()
  end)
end)
