-- callback.handler's promises (issue 12 §4-§6), in real nginx wherever
-- nginx is what keeps them:
--   * freshness: a captured callback cannot be replayed once the dedupe
--     memory has forgotten it (max_age on the signed updated_at, max_skew,
--     per-device order);
--   * ack = "immediate": every acknowledged event reaches its handler, even
--     when nginx has no timer left (tiny lua_max_running_timers);
--   * ack = "after_handler": 200 only once the handler returned, 500 when
--     it failed, 503 to a copy while the first is being handled;
--   * the README's table: what each mode does when the handler raises, when
--     the worker is reloaded or stopped, and when it is killed (SIGKILL).
-- Handled events are counted in a file the handlers append to, which
-- outlives a killed worker.
local callback = require "kinot.callback"
local core = require "kinot.core"
local freshness = require "kinot.callback.freshness"
local json = require "kinot.json"
local H = require "helpers"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"

local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%S+00:00", t) end
local function iso8(t) return os.date("!%Y-%m-%dT%H:%M:%S", t + 8 * 3600) .. "+08:00" end

--- status(sn, t, extra) -> a lock status_changed body of updated_at t, signed
local function status(sn, t, extra)
  local b = '{"sn":' .. sn .. ',"locked":1,"updated_at":"' .. iso8(t) .. '"' .. (extra or "") .. ',"device_type":18}'
  return (b:gsub("}$", ',"sign":"' .. assert(callback.sign(b, SECRET)) .. '"}'))
end

local function read(path)
  local f = io.open(path)
  local s = f and f:read("*a") or ""
  if f then f:close() end
  return s
end

local function count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

-- A platform's delivery that the spec does not wait for: a separate
-- process (Lua 5.4 and the C core) POSTs and writes what it saw.
local POSTER = os.tmpname()
do
  local f = assert(io.open(POSTER, "w"))
  f:write(string.format([[
package.cpath = %q .. "/build/5.4/?.so;" .. package.cpath
local url, bodyf, outf = arg[1], arg[2], arg[3]
local f = assert(io.open(bodyf, "rb"))
local body = f:read("a")
f:close()
local res, kind = require("kinot.core").http():request { method = "POST", url = url, body = body,
  headers = { ["Content-Type"] = "application/json" }, timeout = 30, connect_timeout = 2 }
local o = assert(io.open(outf .. ".part", "w"))
o:write(res and (res.status .. " " .. res.body) or ("error " .. tostring(kind)))
o:close()
os.rename(outf .. ".part", outf)
]], H.root))
  f:close()
end

local function post_later(url, body)
  local bodyf, outf = os.tmpname(), os.tmpname()
  os.remove(outf)
  local f = assert(io.open(bodyf, "wb"))
  f:write(body)
  f:close()
  os.execute(string.format("lua5.4 %s %s %s %s >/dev/null 2>&1 &", POSTER, url, bodyf, outf))
  return function() -- -> what the platform saw: "200 {...}" or "error network"
    local got = H.wait_for(function() local s = read(outf) return s ~= "" and s end, 15)
    os.remove(bodyf)
    os.remove(outf)
    return got
  end
end

--- a receiver in real nginx; `opts` is Lua source for more handler options.
-- Its handler appends "start SN PID" and "done SN" lines to a file, sleeps
-- ev.data.sleep seconds, and fails the first ev.data.fail_first tries of
-- an event (raising, or returning nil, err when ev.data.fail_nil).
local function receiver(o)
  local out = os.tmpname()
  local ng = H.nginx {
    workers = o.workers,
    http = (o.http or "") .. [[
      lua_shared_dict tries 1m;
      ]] .. (o.dedupe and "lua_shared_dict dedupe 2m; lua_shared_dict dedupe_busy 1m;" or "") .. [[
      init_by_lua_block {
        ]] .. (o.init or "") .. [[
        local out = "]] .. out .. [["
        local function line(s)
          local f = assert(io.open(out, "a"))
          f:write(s, "\n")
          f:close()
        end
        local function note(ev)
          line("start " .. ev.sn .. " " .. ngx.worker.pid() .. (ev.stale and " stale" or ""))
          if ev.data.sleep then ngx.sleep(ev.data.sleep) end
          local tries = ngx.shared.tries:incr(ev.id, 1, 0)
          if ev.data.fail_first and tries <= ev.data.fail_first then
            if ev.data.fail_nil then return nil, "refused on purpose, secret ]] .. SECRET .. [[" end
            error("failed on purpose, secret ]] .. SECRET .. [[")
          end
          line("done " .. ev.sn)
        end
        receive = require("kinot.callback").handler {
          secret = "]] .. SECRET .. [[", on_status = note, on_command = note,
          ]] .. (o.dedupe and 'dedupe = "dedupe",' or "") .. (o.opts or "") .. [[
        }
      }
    ]],
    server = "location = /cb { content_by_lua_block { receive() } }",
  }
  ng.out = out
  ng.lines = function() return read(out) end
  ng.post = function(body) return H.raw("POST", ng.url .. "/cb", body, { ["Content-Type"] = "application/json" }) end
  ng.later = function(body) return post_later(ng.url .. "/cb", body) end
  ng.started = function(sn) return count(read(out), "start " .. sn .. " ") end
  ng.done = function(sn) return count(read(out), "done " .. sn .. "\n") end
  ng.wait_done = function(sn, n, seconds)
    return H.wait_for(function() return ng.done(sn) >= n end, seconds or 5) and ng.done(sn)
  end
  ng.worker_of = function(sn) -- the pid of the worker that started sn's handler
    return tonumber(H.wait_for(function() return read(out):match("start " .. sn .. " (%d+)") end, 5))
  end
  local stop = ng.stop
  ng.stop = function(graceful)
    stop(graceful)
    os.remove(out)
  end
  return ng
end

-- runs fn(ng) against a receiver, and stops it even when fn fails
local function with(o, fn)
  local ng = receiver(o)
  local ok, err = pcall(fn, ng)
  ng.stop(o.graceful)
  if not ok then error(err, 0) end
end

local function master_pid(ng) return tonumber(read(ng.prefix .. "/nginx.pid")) end
local function workers_of(ng)
  local p = io.popen("pgrep -P " .. master_pid(ng))
  local s = p:read("*a")
  p:close()
  local pids = {}
  for pid in s:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
  return pids
end
-- kill -9 the worker; the master starts another
local function kill_worker(ng, pid)
  os.execute("kill -KILL " .. pid)
  H.wait_for(function()
    local w = workers_of(ng)
    return #w > 0 and w[1] ~= pid
  end, 5)
  require("kinot.sim.launcher").wait_for_port(ng.port)
end

local NOW = os.time()

describe("freshness.parse #unit", function()
  it("reads the platform's ISO 8601 times with their offset", function()
    assert.are.equal(1552444959, freshness.parse("2019-03-13T10:42:39+08:00"))
    assert.are.equal(1552444959, freshness.parse("2019-03-13T02:42:39Z"))
    assert.are.equal(1552444959, freshness.parse("2019-03-13 02:42:39.25+00:00"))
    assert.are.equal(1552444959, freshness.parse("2019-03-12T21:12:39-0530"))
    assert.are.equal(951782400, freshness.parse("2000-02-29T00:00:00+00"))
    assert.are.equal(NOW, freshness.parse(iso(NOW)))
    assert.are.equal(NOW, freshness.parse(iso8(NOW)))
    local t, zoned = freshness.parse("2019-03-13T02:42:39")
    assert.are.same({ 1552444959, false }, { t, zoned })
    for _, bad in ipairs { "2019-03-13", "2019-13-13T10:42:39+08:00", "2019-03-13T10:42:39+8", "x", "",
                           "2019-03-13T10:42:39+08:00 ", "2019-03-13T25:00:00Z" } do
      assert.is_nil(freshness.parse(bad), bad)
    end
  end)

  -- parse reads bytes (string.match would leave LuaJIT's JIT); the
  -- reading it must keep, written with patterns, is the oracle here
  local function by_pattern(text)
    if type(text) ~= "string" then return nil end
    local y, mo, d, h, mi, s, rest = text:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)(.*)$")
    if not y then return nil end
    y, mo, d, h, mi, s = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(s)
    if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 60 then return nil end
    local frac = rest:match("^%.%d+")
    if frac then rest = rest:sub(#frac + 1) end
    local offset, zoned = 0, true
    if rest == "Z" or rest == "z" then
      offset = 0
    elseif rest == "" then
      zoned = false
    else
      local sign, oh, om = rest:match("^([+-])(%d%d):?(%d?%d?)$")
      if not sign or (#om ~= 0 and #om ~= 2) then return nil end
      oh, om = tonumber(oh), tonumber(om) or 0
      if oh > 23 or om > 59 then return nil end
      offset = (oh * 3600 + om * 60) * (sign == "-" and -1 or 1)
    end
    return require("kinot.calendar").days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset, zoned
  end

  it("reads every time exactly as the ISO 8601 pattern does, and refuses what it refuses", function()
    local seeds = { "2019-03-13T10:42:39+08:00", "2019-03-13 10:42:39", "2019-03-13T10:42:39Z",
      "2019-03-13T10:42:39.5+0800", "2019-03-13T10:42:39+08", "2019-03-13T10:42:39+08:", "2019-03-13T10:42:39+08:0",
      "2019-03-13T10:42:39.+08:00", "2019-03-13T23:59:60-23:59", "1999-12-31T00:00:00z", "2019-03-13T10:42:39Zx" }
    local pieces = { "-", ":", "+", ".", "Z", "T", " ", "0", "9", "00", "08", "24", "60", "13", "32", "x", "\0", "١" }
    local rnd = 12345 -- a fixed sequence: a failure can be replayed
    local function random(n)
      rnd = (rnd * 1103515245 + 12345) % 2147483648
      return rnd % n + 1
    end
    local tried = 0
    local function same(text)
      tried = tried + 1
      local t1, z1 = by_pattern(text)
      local t2, z2 = freshness.parse(text)
      assert.are.same({ t1, z1 }, { t2, z2 }, string.format("%q", text))
    end
    for _, text in ipairs(seeds) do same(text) end
    for _ = 1, 20000 do
      local text = seeds[random(#seeds)]
      for _ = 1, random(3) do
        local at, how = random(#text + 1), random(3)
        if how == 1 then
          text = text:sub(1, at - 1) .. pieces[random(#pieces)] .. text:sub(at)
        elseif how == 2 then
          text = text:sub(1, at - 1) .. text:sub(at + random(3))
        else
          text = text:sub(1, at - 1) .. string.char(random(95) + 31) .. text:sub(at + 1)
        end
      end
      same(text)
    end
    same(nil)
    same(5)
    assert.are.equal(#seeds + 20000 + 2, tried)
  end)
end)

describe("freshness in callback.receiver #unit", function()
  local now = NOW
  local clock = function() return now end

  it("refuses a captured callback replayed once the dedupe memory has forgotten it", function()
    local handled = 0
    local rcv = callback.receiver { secret = SECRET, clock = clock, dedupe_capacity = 10,
                                    on_status = function() handled = handled + 1 end }
    local captured = status(419600001, now)
    local s, _, ev = rcv:receive(captured)
    assert.are.equal(200, s)
    assert(rcv:dispatch(ev))
    -- 10 other deliveries, then max_age later: the dedupe ring has forgotten it
    for i = 1, 10 do assert.is_truthy(select(3, rcv:receive(status(419700000 + i, now)))) end
    now = NOW + freshness.MAX_AGE + 1
    local s2, body2, ev2, err = rcv:receive(captured)
    assert.are.same({ 200, '{"code":0,"message":"OK"}' }, { s2, body2 }) -- the platform stops
    assert.is_nil(ev2)
    assert.are.equal("stale", err.reason)
    assert.matches("max_age", err.message)
    -- and after a restart (a new receiver: nothing remembered at all)
    local fresh_rcv = callback.receiver { secret = SECRET, clock = clock }
    local _, _, ev3, err3 = fresh_rcv:receive(captured)
    assert.is_nil(ev3)
    assert.are.equal("stale", err3.reason)
    assert.is_nil(tostring(err3):find(SECRET, 1, true))
    now = NOW
  end)

  it("takes max_age and max_skew, and tells the future from the past", function()
    local rcv = callback.receiver { secret = SECRET, clock = clock, max_age = 60, max_skew = 5 }
    assert.is_truthy(select(3, rcv:receive(status(1, now - 59))))
    local s, _, ev, err = rcv:receive(status(2, now - 61))
    assert.are.same({ 200, "stale" }, { s, err.reason })
    assert.is_nil(ev)
    assert.is_truthy(select(3, rcv:receive(status(3, now + 5))))
    local s4, b4, ev4, err4 = rcv:receive(status(4, now + 6))
    assert.are.same({ 503, "future", 503 }, { s4, err4.reason, json.decode(b4).code }) -- deliver again later
    assert.is_nil(ev4)
    -- switched off
    local off = callback.receiver { secret = SECRET, clock = clock, max_age = false, max_skew = false }
    assert.is_truthy(select(3, off:receive(status(5, 1552444959))))
    assert.has_error(function() callback.receiver { secret = SECRET, max_age = "1h" } end,
      "kinot: max_age must be a number of seconds >= 0, or false")
    assert.has_error(function() callback.receiver { secret = SECRET, out_of_order = "keep" } end)
  end)

  it("never hands over a status older than the newest accepted for its device", function()
    local rcv = callback.receiver { secret = SECRET, clock = clock }
    assert.is_truthy(select(3, rcv:receive(status(7, now - 10))))
    local s, _, ev, err = rcv:receive(status(7, now - 20))
    assert.are.same({ 200, "out_of_order" }, { s, err.reason })
    assert.is_nil(ev)
    assert.is_truthy(select(3, rcv:receive(status(8, now - 20)))) -- another device
    assert.is_truthy(select(3, rcv:receive(status(7, now - 10, ',"x":1')))) -- the same second: not older
    assert.is_truthy(select(3, rcv:receive(status(7, now))))
    assert.is_nil(select(3, rcv:receive(status(7, now - 5))))
    -- "flag": handed over, marked
    local flag = callback.receiver { secret = SECRET, clock = clock, out_of_order = "flag" }
    assert.is_nil(select(3, flag:receive(status(9, now))).stale)
    local old = select(3, flag:receive(status(9, now - 1)))
    assert.is_true(old.stale)
  end)

  it("orders command results by guid, and passes a body without updated_at", function()
    local function resp(guid, st, t)
      local b = '{"guid":"' .. guid .. '","sn":5,"commnad_status":"' .. st .. '","reason":"NULL","updated_at":"' ..
        iso(t) .. '","device_type":18}'
      return (b:gsub("}$", ',"sign":"' .. assert(callback.sign(b, SECRET)) .. '"}'))
    end
    local rcv = callback.receiver { secret = SECRET, clock = clock }
    assert.is_truthy(select(3, rcv:receive(resp("AA", "succeeded", now))))
    assert.is_nil(select(3, rcv:receive(resp("AA", "pending", now - 2))))
    assert.is_truthy(select(3, rcv:receive(resp("BB", "pending", now - 2))))
    local b = '{"sn":6,"locked":0}'
    b = b:gsub("}$", ',"sign":"' .. assert(callback.sign(b, SECRET)) .. '"}')
    assert.is_truthy(select(3, rcv:receive(b)))
    -- "" and null are outside the signature: added to a body, they change nothing
    for i, v in ipairs { '""', "null" } do
      local nb = '{"sn":6' .. i .. ',"locked":0}'
      nb = nb:gsub("}$", ',"sign":"' .. assert(callback.sign(nb, SECRET)) .. '"}')
      nb = nb:gsub("^{", '{"updated_at":' .. v .. ",")
      assert.is_truthy(select(3, rcv:receive(nb)), v)
    end
    local bad = '{"sn":6,"updated_at":"yesterday"}'
    bad = bad:gsub("}$", ',"sign":"' .. assert(callback.sign(bad, SECRET)) .. '"}')
    local s, _, ev, err = rcv:receive(bad)
    assert.are.same({ 400, "malformed" }, { s, err.reason })
    assert.is_nil(ev)
  end)

  it("keeps a bounded memory of devices: two generations of order_capacity", function()
    local f = freshness.new { capacity = 2, now = clock }
    for i = 1, 7 do assert(f:check { kind = "status_changed", sn = i, data = { updated_at = iso(now) } }) end
    local n = 0
    for _ in pairs(f.young) do n = n + 1 end
    for _ in pairs(f.old) do n = n + 1 end
    assert.is_true(n <= 4)
    assert.is_nil(f:check { kind = "status_changed", sn = 7, data = { updated_at = iso(now - 1) } })
  end)
end)

describe("freshness in nginx, across workers and restarts #nginx", function()
  it("refuses a replay after a restart, and an older status on any worker", function()
    local t = os.time()
    local captured = status(419600002, t)
    with({ workers = 2, dedupe = true, opts = "max_age = 2," }, function(ng)
      assert.are.equal(200, ng.post(captured).status)
      assert.are.equal(1, ng.wait_done(419600002, 1))
      -- newer, then older for one device: whichever worker gets the older
      assert.are.equal(200, ng.post(status(419600003, t)).status)
      assert.are.equal(1, ng.wait_done(419600003, 1))
      for i = 1, 6 do assert.are.equal(200, ng.post(status(419600003, t - 1 - i % 2, ',"n":' .. i)).status) end
      core.sleep(0.3)
      assert.are.equal(1, ng.started(419600003))
    end)
    -- a restart forgets every delivery: the captured body is refused by its age
    with({ workers = 2, dedupe = true, opts = "max_age = 2," }, function(ng)
      H.wait_for(function() return os.time() > t + 2 end, 4)
      local res = ng.post(captured)
      assert.are.same({ 200, '{"code":0,"message":"OK"}' }, { res.status, res.body })
      core.sleep(0.3)
      assert.are.equal(0, ng.started(419600002))
      assert.matches("over max_age 2 s: acknowledged, not handled", ng.log())
    end)
  end)
end)

-- §5: with lua_max_running_timers at 1 the first runner takes the only
-- timer; nginx drops every other timer that comes due meanwhile
for _, t in ipairs { { 1, 2 }, { 2, 1 } } do
  describe("ack = immediate with lua_max_running_timers " .. t[1] .. ", lua_max_pending_timers " .. t[2] .. " #nginx", function()
    local ng
    setup(function()
      ng = receiver { opts = 'ack = "immediate",',
                      http = "lua_max_running_timers " .. t[1] .. "; lua_max_pending_timers " .. t[2] .. ";" }
    end)
    teardown(function() ng.stop() end)

    it("hands every acknowledged event to its handler, also those after the runners are gone", function()
      for sn = 1, 7 do assert.are.equal(200, ng.post(status(sn, NOW, ',"sleep":0.3')).status) end
      for sn = 8, 20 do assert.are.equal(200, ng.post(status(sn, NOW)).status) end
      for sn = 1, 20 do assert.are.equal(1, ng.wait_done(sn, 1, 8), "sn " .. sn) end
      -- the runners have all returned: later events still find one
      for sn = 21, 27 do assert.are.equal(200, ng.post(status(sn, NOW)).status) end
      for sn = 21, 27 do assert.are.equal(1, ng.wait_done(sn, 1, 3), "sn " .. sn) end
      assert.matches("lua_max_running_timers are not enough", ng.log()) -- the case happened
    end)

    it("hands over a burst with handlers that sleep, each event once", function()
      for sn = 100, 299 do
        assert.are.equal(200, ng.post(status(sn, NOW, sn % 10 == 0 and ',"sleep":0.2' or nil)).status)
      end
      H.wait_for(function() return count(ng.lines(), "done ") >= 227 end, 15)
      for sn = 100, 299 do
        assert.are.equal(1, ng.done(sn), "sn " .. sn)
        assert.are.equal(1, ng.started(sn), "sn " .. sn)
      end
    end)
  end)
end

describe("ack = immediate with no timer left, at nginx -s quit #nginx", function()
  it("hands over every queued event before the worker goes", function()
    local ng = receiver { opts = 'ack = "immediate",', http = "lua_max_running_timers 1; lua_max_pending_timers 1;" }
    local ok, err = pcall(function()
      for sn = 1, 6 do assert.are.equal(200, ng.post(status(sn, NOW, ',"sleep":0.2')).status) end
    end)
    local master = master_pid(ng)
    os.execute("kill -QUIT " .. master)
    H.wait_for(function()
      local r = os.execute("kill -0 " .. master .. " 2>/dev/null")
      return not (r == true or r == 0)
    end, 8)
    local got = ng.lines()
    ng.stop(true)
    assert(ok, err)
    for sn = 1, 6 do assert.are.equal(1, count(got, "done " .. sn .. "\n"), "sn " .. sn) end
  end)
end)

-- §6
for _, dedupe in ipairs { true, false } do
  describe("ack = after_handler, dedupe " .. (dedupe and "in a lua_shared_dict" or "per worker") .. " #nginx", function()
    local ng
    -- with the dict, two workers: a copy may reach the other one
    setup(function() ng = receiver { dedupe = dedupe, workers = dedupe and 2 or 1 } end) -- the default ack
    teardown(function() ng.stop() end)

    it("answers 200 only once the handler has returned", function()
      local t0 = core.monotonic()
      local res = ng.post(status(1, NOW, ',"sleep":0.4'))
      assert.are.equal(200, res.status)
      assert.are.equal('{"code":0,"message":"OK"}', res.body)
      assert.is_true(core.monotonic() - t0 >= 0.4, "answered before the handler returned")
      assert.are.equal(1, ng.done(1)) -- already there when the answer came
    end)

    it("answers 500 when the handler raises or returns nil, err; the redelivery runs it again", function()
      for sn, extra in pairs { [2] = ',"fail_first":2', [3] = ',"fail_first":1,"fail_nil":true' } do
        local body = status(sn, NOW, extra)
        local fails = sn == 2 and 2 or 1
        for _ = 1, fails do
          local res = ng.post(body)
          assert.are.equal(500, res.status)
          local doc = json.decode(res.body)
          assert.are.equal(500, doc.code)
          assert.matches("deliver this callback again", doc.message)
          assert.is_nil(res.body:find(SECRET, 1, true))
          assert.is_nil(res.body:find("on purpose", 1, true))
        end
        assert.are.equal(0, ng.done(sn))
        assert.are.equal(200, ng.post(body).status) -- delivered again: handled now
        assert.are.equal(1, ng.done(sn))
        assert.are.equal(200, ng.post(body).status) -- and now a duplicate
        assert.are.equal(fails + 1, ng.started(sn))
        assert.are.equal(1, ng.done(sn))
      end
      assert.matches("failed on purpose", ng.log()) -- the reason is in the log
    end)

    it("answers 503 to a copy that arrives while the first is handled, and runs the handler once", function()
      local body = status(4, NOW, ',"sleep":1')
      local first = ng.later(body)
      assert.is_truthy(H.wait_for(function() return ng.started(4) == 1 end, 5))
      local res = ng.post(body)
      assert.are.equal(503, res.status)
      assert.are.equal("5", res.headers["retry-after"] or res.headers["Retry-After"])
      assert.are.equal(503, json.decode(res.body).code)
      assert.matches("^200 ", first())
      assert.are.equal(200, ng.post(body).status)
      assert.are.equal(1, ng.started(4))
      assert.are.equal(1, ng.done(4))
    end)
  end)
end

describe("callback.handler options #unit", function()
  it("refuses an unknown ack", function()
    local ok, err = pcall(callback.handler, { secret = "s", ack = "later" })
    assert.is_false(ok)
    assert.is_true(require("kinot.errors").is_misuse(err))
    assert.matches('ack must be "after_handler" or "immediate"', err.message, 1, true)
    assert.has_error(function() callback.handler { secret = "s", busy_ttl = 0 } end)
  end)
end)

-- The README's table, row by row: what the platform saw, what the handler did
describe("what each ack promises #nginx #slow", function()
  it("immediate, handler raises: the platform got 200; the event is not delivered again", function()
    with({ opts = 'ack = "immediate",' }, function(ng)
      local body = status(10, NOW, ',"fail_first":1')
      assert.are.equal(200, ng.post(body).status)
      H.wait_for(function() return ng.log():find("failed on purpose", 1, true) end, 3)
      assert.are.same({ 1, 0 }, { ng.started(10), ng.done(10) }) -- logged, and lost to the handler
    end)
  end)

  it("immediate, worker killed (SIGKILL) in a handler: the platform got 200, the event is lost", function()
    with({ opts = 'ack = "immediate",', dedupe = true }, function(ng)
      local res = ng.post(status(11, NOW, ',"sleep":3'))
      assert.are.equal(200, res.status)
      kill_worker(ng, ng.worker_of(11))
      core.sleep(3.2)
      assert.are.same({ 1, 0 }, { ng.started(11), ng.done(11) })
      -- and a redelivery, were there one, would be taken for a duplicate
      assert.are.equal(200, ng.post(status(11, NOW, ',"sleep":3')).status)
      core.sleep(0.3)
      assert.are.equal(1, ng.started(11))
    end)
  end)

  for _, dedupe in ipairs { true, false } do
    it("after_handler, worker killed (SIGKILL) in a handler: no 200, so the platform delivers again; handled once" ..
       (dedupe and " (dict: after busy_ttl)" or ""), function()
      with({ dedupe = dedupe, opts = "busy_ttl = 2," }, function(ng)
        local body = status(12, NOW, ',"sleep":3')
        local first = ng.later(body)
        kill_worker(ng, ng.worker_of(12))
        local saw = first()
        assert.matches("^error ", saw) -- no answer: to the platform, not delivered
        local res = ng.post(status(13, NOW)) -- the new worker serves
        assert.are.equal(200, res.status)
        if dedupe then
          -- the in-progress mark outlived the worker: copies wait until it expires
          assert.are.equal(503, ng.post(body).status)
          core.sleep(2.1)
        end
        local t0 = core.monotonic()
        assert.are.equal(200, ng.post(body).status)
        assert.is_true(core.monotonic() - t0 >= 3)
        assert.are.same({ 2, 1 }, { ng.started(12), ng.done(12) })
      end)
    end)
  end

  for _, sig in ipairs { "HUP", "QUIT" } do
    it("immediate, nginx " .. (sig == "HUP" and "-s reload" or "-s quit") .. " while handlers sleep: every event handled",
      function()
        with({ opts = 'ack = "immediate",', graceful = true }, function(ng)
          for sn = 20, 24 do assert.are.equal(200, ng.post(status(sn, NOW, ',"sleep":0.5')).status) end
          os.execute("kill -" .. sig .. " " .. master_pid(ng))
          for sn = 20, 24 do assert.are.equal(1, ng.wait_done(sn, 1, 5), "sn " .. sn) end
        end)
      end)

    it("after_handler, nginx " .. (sig == "HUP" and "-s reload" or "-s quit") .. " while a handler sleeps: 200 once handled",
      function()
        with({ graceful = true }, function(ng)
          local first = ng.later(status(30, NOW, ',"sleep":1'))
          assert.is_truthy(H.wait_for(function() return ng.started(30) == 1 end, 5))
          os.execute("kill -" .. sig .. " " .. master_pid(ng))
          assert.matches("^200 ", first())
          assert.are.equal(1, ng.done(30))
        end)
      end)
  end
end)
