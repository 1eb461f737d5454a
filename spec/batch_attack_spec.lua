-- Attacks on client:send_commands and its journal (issue 22's promises):
-- duplicate serials in other spellings, one journal reached by two paths
-- (a symlink, a hard link), journals edited or hostile (records of unknown
-- kinds, impossible histories, NUL bytes, a huge line, a FIFO, /dev/null,
-- /etc/passwd behind a symlink), SIGKILL at each point of a command's
-- life, timeouts where the platform did create the command, Retry-After in
-- its other forms, and no secret in the journal.  Every count is the
-- simulator's (commands_by_sn), never the SDK's.
local core = require "kinot.core"
local json = require "kinot.json"
local errors = require "kinot.errors"
local H = require "helpers"
local B = require "batch_support"
local FIRST = B.FIRST
local serials, tmpname, read, created, agrees = B.serials, B.tmpname, B.read, B.created, B.agrees

local LUA = H.runtime == "luajit" and "luajit" or "lua5.4"

local function append(p, s)
  local f = assert(io.open(p, "ab"))
  f:write(s)
  f:close()
end

local function cleanup(...)
  for _, p in ipairs { ... } do os.remove(p) os.remove(p .. ".lock") os.remove(p .. ".tmp") end
end

local function misuse_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "no error raised")
  assert.is_true(errors.is_misuse(e), tostring(e))
  return e.message
end

describe("send_commands attacks: one device, many spellings #unit", function()
  local c
  setup(function()
    c = require("kinot").new { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:9/open/lora/v1" }
  end)
  teardown(function() c:close() end)

  it("419600001, \"419600001\", 419600001.0, \"0419600001\", {sn = ...}, {sn, v}: the same device, refused twice", function()
    local spellings = { 419600001, "419600001", 419600001.0, "0419600001", { sn = 419600001 }, { sn = "419600001" },
                        { 419600001, 1 }, { sn = 419600001.0, value = 2 } }
    for a = 1, #spellings do
      for b = a + 1, #spellings do
        local m = misuse_of(c.send_commands, c, { spellings[a], 419600002, spellings[b] }, { parameter = { value = 1 } })
        assert.matches("in the batch twice %(items 1 and 3%)", m)
      end
    end
  end)
end)

-- the journal and its C calls alone (no simulator, no shell: the block
-- that runs under ASan, spec/batch_attack_spec.lua --tags=unit)
describe("batch journal: its file, its lock, its repair #unit", function()
  local journal = require "kinot.batch.journal"
  local plan = { { sn = 419600001, value = 1 }, { sn = 419600002, value = 1 } }
  local fp = journal.fingerprint(plan, "handle")

  it("a new journal: its header on the disk, the lock held until close, then free", function()
    local p = tmpname()
    finally(function() cleanup(p) end)
    local j = assert(journal.open(p, fp, 2, plan))
    assert.matches('^{.*"journal":"kinot%-batch"', read(p))
    local m = misuse_of(journal.open, p, fp, 2, plan)
    assert.matches("in use by another run", m)
    assert.is_true(j:write { { i = 1, sn = 419600001, at = "sending" } })
    assert.is_true(j:write({ { i = 1, at = "created", guid = "G1", status = "sending" } }, false))
    assert.is_true(j:sync())
    j:close()
    j:close() -- idempotent
    local j2 = assert(journal.open(p, fp, 2, plan))
    assert.are.equal("created", j2.found[1].at)
    assert.is_nil(j2.found[2])
    j2:close()
  end)

  it("a torn last line is cut off in place: the same file, still locked", function()
    local p = tmpname()
    finally(function() cleanup(p) end)
    local j = assert(journal.open(p, fp, 2, plan))
    assert(j:write { { i = 2, sn = 419600002, at = "sending" } })
    j:close()
    local whole = read(p)
    append(p, '{"i":2,"at":"crea')
    local j2 = assert(journal.open(p, fp, 2, plan))
    assert.are.equal(whole, read(p))
    assert.are.equal("sending", j2.found[2].at)
    -- the file it cut is the file it locked
    assert.matches("in use by another run", misuse_of(journal.open, p, fp, 2, plan))
    j2:close()
  end)

  it("not a regular file, or nowhere: an error naming the path and why, before anything", function()
    for path, why in pairs { ["/dev/null"] = "not a regular file", ["/tmp"] = "Is a directory",
                             ["/nonexistent-dir/j"] = "No such file or directory" } do
      local j, err = journal.open(path, fp, 2, plan)
      assert.is_nil(j)
      assert.matches(path:gsub("%-", "%%-") .. ": " .. why, err.message)
    end
  end)

  it("the C calls refuse what they cannot take", function()
    local ok, e = pcall(core.unlock_file, -1)
    assert.is_false(ok)
    assert.matches("lock_file", tostring(e.message or e))
    ok, e = pcall(core.truncate_file, 0, -1)
    assert.is_false(ok)
    assert.matches("size", tostring(e.message or e))
    local nok, msg = core.truncate_file(1048576, 0)
    assert.is_nil(nok)
    assert.matches("Bad file descriptor", msg)
    nok, msg = core.append_durable("/nonexistent-dir/x", "a")
    assert.is_nil(nok)
    assert.matches("/nonexistent%-dir/x: No such file or directory", msg)
  end)
end)

describe("send_commands attacks: hostile journals #sim", function()
  local sim, c
  setup(function()
    sim = H.sim { locks = 200, command_pace = 0.02 }
    c = sim.client()
  end)
  teardown(function()
    c:close()
    sim.stop()
  end)
  before_each(function() sim.reset() end)

  -- a second run of the same journal while the first runs, through `path2`
  local function second_run_through(link)
    local j = tmpname()
    local j2 = tmpname()
    finally(function() cleanup(j, j2) end)
    local items = serials(40)
    local inner
    local _, s = c:send_commands(items, { parameter = { value = 1 }, concurrency = 8, journal = j,
      on_progress = function()
        if inner == nil then
          assert(os.execute(link .. " " .. j .. " " .. j2))
          local ok, e = pcall(c.send_commands, c, items, { parameter = { value = 1 }, concurrency = 8, journal = j2 })
          inner = ok and "ran" or e.message
        end
      end })
    local _, twice = created(sim)
    assert.are.same({}, twice)
    assert.matches("is in use by another run of this batch", inner)
    assert.are.equal(40, s.pending)
    assert.are.equal(40, sim.counters().commands_created)
  end

  it("one journal through a symlink: the second run is refused, nothing sent twice", function()
    second_run_through("ln -s")
  end)

  it("one journal through a hard link: the second run is refused, nothing sent twice", function()
    second_run_through("ln")
  end)

  -- a first run of 5 with a journal; returns its path
  local function first_run(n)
    local j = tmpname()
    local _, s = c:send_commands(serials(n or 5), { parameter = { value = 1 }, journal = j })
    assert.are.equal(n or 5, s.pending)
    return j
  end

  it("a journal of another batch: the same serials in another order, another key, a value changed", function()
    local j = first_run()
    finally(function() cleanup(j) end)
    local items = serials(5)
    local reversed = {}
    for i = 1, 5 do reversed[i] = items[6 - i] end
    local changed = { items[1], items[2], { sn = items[3], value = 2 }, items[4], items[5] }
    for _, case in ipairs { { reversed, { value = 1 } }, { items, { key = "bt_code", value = 1 } },
                            { changed, { value = 1 } }, { items, { value = "1" } } } do
      assert.matches("belongs to another batch",
        misuse_of(c.send_commands, c, case[1], { parameter = case[2], journal = j }))
    end
    assert.are.equal(5, sim.counters().commands_created)
  end)

  it("a record of a kind this version does not know, after 'sending': refused, not sent again", function()
    local j = first_run()
    finally(function() cleanup(j) end)
    append(j, '{"i":2,"at":"acknowledged"}\n')
    local ok, res, s = pcall(c.send_commands, c, serials(5), { parameter = { value = 1 }, journal = j })
    local _, twice = created(sim)
    assert.are.same({}, twice)
    if ok then assert.are.equal(0, s.sent) end
    assert.is_false(ok, "resumed with a record it does not know: " .. json.encode(res and res[2] or {}))
    assert.matches("line 12", res.message)
  end)

  it("an impossible history (created, then not_sent): refused, not sent again", function()
    local j = first_run()
    finally(function() cleanup(j) end)
    append(j, '{"i":3,"at":"not_sent"}\n')
    local m = misuse_of(c.send_commands, c, serials(5), { parameter = { value = 1 }, journal = j })
    assert.matches("line 12", m)
    local _, twice = created(sim)
    assert.are.same({}, twice)
  end)

  it("an item number that is no position (1.5, 0, 6, \"2\"): refused", function()
    for _, bad in ipairs { "1.5", "0", "6", '"2"', "1e400", "-1" } do
      local j = first_run()
      append(j, '{"i":' .. bad .. ',"at":"created","guid":"x","status":"x"}\n')
      local m = misuse_of(c.send_commands, c, serials(5), { parameter = { value = 1 }, journal = j })
      assert.matches("line 12 names no item", m)
      cleanup(j)
      sim.reset()
    end
  end)

  it("a 'sending' record naming another serial than its item: refused", function()
    local j = first_run()
    finally(function() cleanup(j) end)
    append(j, '{"i":4,"sn":419600099,"at":"sending"}\n')
    local m = misuse_of(c.send_commands, c, serials(5), { parameter = { value = 1 }, journal = j })
    assert.matches("line 12", m)
  end)

  it("NUL bytes, a 20 MB line, invalid JSON in the middle: a clear error, nothing sent", function()
    for _, junk in ipairs { '{"i":1,"at":"sent\0"}\n', '{"i":1,"at":"created"\0,"x":1}\n',
                            string.rep("x", 20 * 1024 * 1024) .. "\n", "{not json}\n" } do
      local j = first_run()
      local before = sim.counters().commands_created
      -- (the junk in the middle: a complete record after it)
      append(j, junk .. '{"i":1,"at":"not_sent"}\n')
      local m = misuse_of(c.send_commands, c, serials(5), { parameter = { value = 1 }, journal = j })
      assert.matches("line 12 is not a batch journal record", m)
      assert.are.equal(before, sim.counters().commands_created)
      cleanup(j)
      sim.reset()
    end
  end)

  it("a symlink to /etc/passwd: refused, /etc/passwd untouched, nothing sent", function()
    local j = tmpname()
    finally(function() cleanup(j) end)
    assert(os.execute("ln -s /etc/passwd " .. j))
    local before = read("/etc/passwd")
    local ok, e = pcall(c.send_commands, c, serials(3), { parameter = { value = 1 }, journal = j })
    assert.is_false(ok)
    assert.matches("not a kinot batch journal", e.message)
    assert.are.equal(before, read("/etc/passwd"))
    assert.are.equal(0, sim.counters().commands_created)
  end)

  it("/dev/null and a FIFO as the journal: an error at once, nothing sent", function()
    local fifo = tmpname()
    local j = tmpname()
    finally(function() cleanup(j, fifo) end)
    assert(os.execute("mkfifo " .. fifo))
    for _, target in ipairs { "/dev/null", fifo } do
      os.remove(j)
      assert(os.execute("ln -s " .. target .. " " .. j))
      -- in a process of its own: a FIFO may block a read for ever
      local script = tmpname() .. ".lua"
      local f = assert(io.open(script, "w"))
      f:write(string.format([[
        local c = require("kinot").new { app_key = %q, app_secret = %q, endpoint = %q }
        local ok, res, err = pcall(c.send_commands, c, { 419600001, 419600002 }, { parameter = { value = 1 },
                                                                                 journal = %q })
        io.write(ok and (res and "SENT" or ("ERR " .. err.message)) or ("RAISED " .. tostring(res.message or res)))
      ]], sim.app_key, sim.app_secret, sim.endpoint, j))
      f:close()
      local p = io.popen(string.format("cd %s && LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH=%q timeout 10 %s %s 2>&1",
        H.root, package.cpath, LUA, script))
      local out = p:read("*a")
      p:close()
      os.remove(script)
      assert.matches("^[ER][RA][RI]", out, target .. ": " .. out)
      assert.matches("regular file", out, target .. ": " .. out)
      assert.are.equal(0, sim.counters().commands_created)
    end
  end)

  it("a journal in a directory that does not exist: nil and the error, nothing sent", function()
    local res, err = c:send_commands(serials(3), { parameter = { value = 1 }, journal = "/nonexistent-dir/sub/j" })
    assert.is_nil(res)
    assert.matches("No such file or directory", err.message)
    assert.are.equal(0, sim.counters().commands_created)
  end)

  it("the journal never holds the secret, whatever failed", function()
    local j = tmpname()
    finally(function() cleanup(j) end)
    local secret = "attack-secret-" .. core.uuid()
    H.json("POST", sim.admin .. "/config", { app_secret = secret })
    sim.fault { kind = "reset", after = true, next = 2, endpoint = "POST /commands" }
    sim.fault { kind = "status", status = 200, code = 500, message = "device busy", next = 1, endpoint = "POST /commands" }
    local c2 = sim.client { app_secret = secret }
    local _, s = c2:send_commands(serials(6), { parameter = { value = 1 }, journal = j })
    c2:close()
    assert.are.equal(2, s.unknown)
    assert.are.equal(1, s.failed)
    -- a wrong secret: the signature refusal is journaled, the secret is not
    local j2 = tmpname()
    finally(function() cleanup(j, j2) end)
    local c3 = sim.client { app_secret = "wrong-" .. secret }
    local _, s3 = c3:send_commands(serials(2), { parameter = { value = 1 }, journal = j2 })
    c3:close()
    assert.are.equal(2, s3.failed)
    for _, p in ipairs { j, j2 } do
      local text = read(p)
      assert.is_nil(text:find("attack-secret-", 1, true) and text:find(secret:sub(-36), 1, true),
                    "the secret is in the journal: " .. text)
    end
  end)
end)

describe("send_commands attacks: SIGKILL at each point of a command's life #sim #slow", function()
  local sim
  setup(function() sim = H.sim { locks = 200, command_pace = 0.02 } end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  -- a batch of 64 in a process of its own, killed with SIGKILL at `point`
  -- of the 3rd round (a hook on the journal's writes: the kill is real)
  local function killed_at(point, j)
    local script = tmpname() .. ".lua"
    local f = assert(io.open(script, "w"))
    f:write(string.format([[
      local core = require "kinot.core_loader"
      local point = %q
      local pid = assert(io.open("/proc/self/stat")):read("*l"):match("^(%%d+)")
      local function die() os.execute("kill -9 " .. pid) core.sleep(5) os.exit(9) end
      local real = core.append_durable
      local sendings, outcomes = 0, 0
      core.append_durable = function(path, data, sync)
        if data:find('"at":"sending"', 1, true) then
          sendings = sendings + 1
          if sendings == 3 then
            if point == "before_fsync" then real(path, data, false) die() end
            if point == "before_write" then die() end
            local ok, e = real(path, data, sync)
            if point == "after_fsync" then die() end
            -- the POSTs of this round take 2 s at the simulator: killed while they are in flight
            if point == "mid_post" then os.execute("(sleep 0.5; kill -9 " .. pid .. ") &") end
            return ok, e
          end
        elseif sendings == 3 and data:find('"at":"created"', 1, true) then
          outcomes = outcomes + 1
          if outcomes == 1 then
            if point == "after_answer" then die() end
            local ok, e = real(path, data, sync)
            if point == "after_outcome" then die() end
            return ok, e
          end
        end
        return real(path, data, sync)
      end
      local c = require("kinot").new { app_key = %q, app_secret = %q, endpoint = %q, timeout = 10 }
      local items = {}
      for i = 1, 64 do items[i] = %d + i - 1 end
      c:send_commands(items, { parameter = { value = 1 }, concurrency = 8, journal = %q })
      io.write("ENDED")
    ]], point, sim.app_key, sim.app_secret, sim.endpoint, FIRST, j))
    f:close()
    local p = io.popen(string.format("cd %s && LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH=%q timeout 60 %s %s 2>&1",
      H.root, package.cpath, LUA, script))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    assert.is_nil(out:find("ENDED", 1, true), point .. ": the batch was not killed: " .. out)
  end

  for _, point in ipairs { "before_write", "before_fsync", "after_fsync", "mid_post", "after_answer", "after_outcome" } do
    it("killed " .. point .. ", resumed: every serial once at most, each unknown one reported, the rest sent", function()
      local j = tmpname()
      finally(function() cleanup(j) end)
      if point == "mid_post" then
        -- the 17th POST on and after take 2 s: round 3's are in flight when the kill comes
        sim.fault { kind = "latency", latency = 0, next = 16, endpoint = "POST /commands" }
        sim.fault { kind = "latency", latency = 2, share = 1, endpoint = "POST /commands" }
      end
      killed_at(point, j)
      if point == "mid_post" then
        core.sleep(2.5) -- the simulator finishes what it was given
        sim.call("DELETE", "/faults")
      end
      local made = sim.counters().commands_created
      local c = sim.client()
      local results, s = c:send_commands(serials(64), { parameter = { value = 1 }, concurrency = 8, journal = j })
      c:close()
      local per, twice = created(sim)
      assert.are.same({}, twice)
      agrees(results, per)
      assert.are.equal(64, s.pending + s.unknown)
      -- what the killed run may have sent is unknown, and only that: the batch
      -- streams, so commands sent before the kill point may be out too, but
      -- never more than `concurrency` have a "sending" record and no outcome
      assert.is_true(s.unknown <= 8, point .. ": " .. s.unknown .. " unknown")
      if point == "before_fsync" or point == "after_fsync" or point == "mid_post" or point == "after_answer" then
        assert.is_true(s.unknown >= 1, point .. ": the killed run's commands out are unknown")
      end
      -- the resumed run sent all the rest, and the platform has one command for each but unknown ones it never got
      assert.are.equal(64 - s.resumed, s.sent)
      local never = 0
      for _, r in ipairs(results) do if (per[r.sn] or 0) == 0 then never = never + 1 end end
      assert.are.equal(64 - never, sim.counters().commands_created)
      assert.is_true(made <= 64 - s.sent)
      for _, r in ipairs(results) do
        if r.outcome == "unknown" then assert.is_true(r.resumed) end
      end
    end)
  end
end)

describe("send_commands attacks: timeouts and Retry-After #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 200, command_pace = 0.02 } end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  it("a timeout where the platform did create the command: unknown, never sent again, also on resume", function()
    local j = tmpname()
    finally(function() cleanup(j) end)
    sim.fault { kind = "latency", latency = 1.5, next = 3, endpoint = "POST /commands" }
    local c = sim.client { timeout = 0.5 }
    local results, s = c:send_commands(serials(20), { parameter = { value = 1 }, concurrency = 4, journal = j })
    core.sleep(1.5) -- the simulator acts on them after the client gave up
    assert.are.equal(3, s.unknown)
    assert.are.equal(20, sim.counters().commands_created)
    local per, twice = created(sim)
    assert.are.same({}, twice)
    agrees(results, per)
    local _, s2 = c:send_commands(serials(20), { parameter = { value = 1 }, concurrency = 4, journal = j })
    assert.are.equal(0, s2.sent)
    assert.are.equal(3, s2.unknown)
    assert.are.equal(20, sim.counters().commands_created)
    c:close()
  end)

  it("rate: re-sends after 429s count too, so no more POSTs a second than asked", function()
    local c = sim.client()
    sim.fault { kind = "throttle", retry_after = 0, share = 0.3, endpoint = "POST /commands" }
    local t0 = core.monotonic()
    local results, s = c:send_commands(serials(20), { parameter = { value = 1 }, concurrency = 8, rate = 10 })
    local took = core.monotonic() - t0
    local posts = sim.counters().endpoints["POST /commands"]
    assert.are.equal(20, s.pending)
    assert.is_true(posts > 20)
    assert.is_true(took >= (posts - 1) / 10, posts .. " POSTs at rate 10 in " .. took .. " s")
    local per, twice = created(sim)
    assert.are.same({}, twice)
    agrees(results, per)
    c:close()
  end)

  it("concurrency: halved by 429s, grown back, never more requests in flight than asked (sends and polls)", function()
    local inflight, most, limits = 0, 0, {}
    local c = sim.client { on_event = function(ev)
      if ev.type == "request" then
        inflight = inflight + 1
        if inflight > most then most = inflight end
      elseif ev.type == "response" then
        inflight = inflight - 1
      end
    end }
    sim.fault { kind = "throttle", retry_after = 0, share = 0.2 }
    local results, s = c:send_commands(serials(80), { parameter = { value = 1 }, concurrency = 4, wait = true,
      wait_timeout = 20, on_progress = function(p) limits[#limits + 1] = p.concurrency end })
    assert.are.equal(80, s.succeeded)
    assert.are.equal(0, inflight)
    assert.is_true(most <= 4, most .. " requests in flight at concurrency 4")
    local low = math.huge
    for _, l in ipairs(limits) do
      assert.is_true(l >= 1 and l <= 4, l)
      low = math.min(low, l)
    end
    assert.is_true(low < 4 and s.throttled > 0, "never halved")
    local per, twice = created(sim)
    assert.are.same({}, twice)
    agrees(results, per)
    c:close()
  end)

  it("Retry-After as an HTTP date: the batch holds until then", function()
    local c = sim.client()
    local now = os.time() + 3
    sim.fault { kind = "throttle", retry_after = os.date("!%a, %d %b %Y %H:%M:%S GMT", now), next = 1,
                endpoint = "POST /commands" }
    local t0 = core.monotonic()
    local _, s = c:send_commands(serials(4), { parameter = { value = 1 }, concurrency = 4 })
    local took = core.monotonic() - t0
    assert.are.equal(1, s.throttled)
    assert.are.equal(4, s.pending)
    assert.is_true(took >= 1.5, "an HTTP-date Retry-After 2..3 s ahead, held " .. took .. " s")
    c:close()
  end)

  it("Retry-After huge: the item fails as throttled at once, not sent, no wait", function()
    local c = sim.client()
    sim.fault { kind = "throttle", retry_after = 1e9, next = 1, endpoint = "POST /commands" }
    local t0 = core.monotonic()
    local results, s = c:send_commands(serials(4), { parameter = { value = 1 }, concurrency = 1 })
    assert.is_true(core.monotonic() - t0 < 5)
    assert.are.equal(1, s.failed)
    assert.are.equal(3, s.pending)
    assert.are.equal("throttled", results[1].error.kind)
    assert.are.equal(3, sim.counters().commands_created)
    c:close()
  end)

  it("Retry-After negative or garbage: sent again, once, no hang", function()
    local c = sim.client()
    sim.fault { kind = "throttle", retry_after = -30, next = 2, endpoint = "POST /commands" }
    sim.fault { kind = "throttle", retry_after = "soon", next = 2, endpoint = "POST /commands" }
    local t0 = core.monotonic()
    local results, s = c:send_commands(serials(6), { parameter = { value = 1 }, concurrency = 2 })
    assert.is_true(core.monotonic() - t0 < 5)
    assert.are.equal(6, s.pending)
    local per, twice = created(sim)
    assert.are.same({}, twice)
    agrees(results, per)
    c:close()
  end)

  it("a poll answered 429 with Retry-After: no poll before it", function()
    local c = sim.client()
    local results = c:send_commands(serials(2), { parameter = { value = 1 } })
    local guids = { results[1].guid, results[2].guid }
    sim.fault { kind = "throttle", retry_after = 2, next = 1, endpoint = "GET /commands" }
    local function gets() return sim.counters().endpoints["GET /commands"] or 0 end
    local before = gets()
    local t0 = core.monotonic()
    local early = 0 -- polls the platform saw by an answer read within 1.9 s
    local w, ws = c:wait_commands(guids, { concurrency = 2, wait_timeout = 10,
      on_progress = function()
        if core.monotonic() - t0 < 1.9 then early = math.max(early, gets() - before) end
      end })
    assert.are.equal(2, ws.succeeded, json.encode(w))
    -- the first two polls (one of them throttled), then none before the 2 s
    assert.are.equal(2, early, "polls seen within 1.9 s of a Retry-After of 2 s")
    c:close()
  end)
end)

describe("send_commands attacks: each command's record synced before its POST is written #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 100, command_pace = 0.02 } end)
  teardown(function() sim.stop() end)

  it("seen by strace: the journal's write and fsync come before each POST /commands on the socket", function()
    local found = os.execute("command -v strace >/dev/null 2>&1")
    assert(found == true or found == 0, "strace is not installed: make deps installs it") -- 5.4 says true, LuaJIT 0
    local j, trace, script = tmpname(), tmpname(), tmpname() .. ".lua"
    finally(function() cleanup(j, trace, script) end)
    local f = assert(io.open(script, "w"))
    f:write(string.format([[
      local c = require("kinot").new { app_key = %q, app_secret = %q, endpoint = %q }
      local items = {}
      for i = 1, 40 do items[i] = %d + i - 1 end
      local _, s = c:send_commands(items, { parameter = { value = 1 }, concurrency = 8, journal = %q })
      io.write(s.pending)
    ]], sim.app_key, sim.app_secret, sim.endpoint, FIRST, j))
    f:close()
    local p = io.popen(string.format("cd %s && LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH=%q strace -f -qq -s 65536 " ..
      "-e trace=openat,write,fsync,close,sendto,sendmsg,writev -o %s %s %s 2>&1", H.root, package.cpath, trace, LUA, script))
    local out = p:read("*a")
    p:close()
    assert.are.equal("40", out)
    local jfd, written, synced, posts = {}, {}, {}, 0
    for line in read(trace):gmatch("[^\n]+") do
      local pid, rest = line:match("^(%d+)%s+(.*)$")
      rest = rest or line
      local fd = rest:match('^openat%(AT_FDCWD, "' .. j:gsub("%p", "%%%0") .. '", O_WRONLY.-%) = (%d+)$')
      if fd then jfd[pid .. ":" .. fd] = true end
      local cfd = rest:match("^close%((%d+)%)")
      if cfd then jfd[pid .. ":" .. cfd] = nil end
      local wfd, data = rest:match('^write%((%d+), "(.*)", %d+%) = %d+$')
      if wfd and jfd[pid .. ":" .. wfd] then
        for sn in data:gmatch('\\"at\\":\\"sending\\",\\"i\\":%d+,\\"sn\\":(%d+)') do written[sn] = true end
      end
      local ffd = rest:match("^fsync%((%d+)%)%s+= 0")
      if ffd and jfd[pid .. ":" .. ffd] then
        for sn in pairs(written) do synced[sn] = true end
      end
      -- a POST on a socket (not a write to the journal): its body names the serial
      local sfd = rest:match("^%a+%((%d+),")
      if rest:find('\\"command\\":1', 1, true) and not jfd[pid .. ":" .. tostring(sfd)] then
        local sn = rest:match('\\"sn\\":(%d+)')
        posts = posts + 1
        assert.is_true(synced[sn] == true, "POST for " .. tostring(sn) .. " before its record was synced: " ..
          rest:sub(1, 200))
      end
    end
    assert.are.equal(40, posts)
  end)
end)

describe("send_commands attacks: abort_after while commands are in flight #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 300, command_pace = 0.02 } end)
  teardown(function() sim.stop() end)

  it("under failures, resets and 429s: every item accounted for; resumed, the skipped ones go once", function()
    local j = tmpname()
    finally(function() cleanup(j) end)
    sim.reset()
    H.json("POST", sim.admin .. "/config", { failure_rate = 0.4 })
    sim.fault { kind = "reset", after = true, share = 0.05, endpoint = "POST /commands" }
    sim.fault { kind = "throttle", retry_after = 0, share = 0.1, endpoint = "POST /commands" }
    local c = sim.client()
    local items = serials(250)
    local r1, s1 = c:send_commands(items, { parameter = { value = 1 }, concurrency = 16, wait = true, abort_after = 8,
                                            journal = j, wait_timeout = 10 })
    assert.matches("^abort_after", s1.aborted)
    local count = { succeeded = 0, failed = 0, unknown = 0, skipped = 0, sent = 0 }
    for _, r in ipairs(r1) do
      assert.is_not_nil(count[r.outcome], "item without an outcome: " .. json.encode(r))
      count[r.outcome] = count[r.outcome] + 1
    end
    assert.are.same({ succeeded = s1.succeeded, failed = s1.failed, unknown = s1.unknown, skipped = s1.skipped,
                      sent = s1.pending }, count)
    assert.are.equal(250, s1.succeeded + s1.failed + s1.unknown + s1.skipped + s1.pending)
    assert.is_true(s1.skipped > 0)
    local per, twice = created(sim)
    assert.are.same({}, twice)
    agrees(r1, per)
    -- resumed without faults: what was skipped goes, once; nothing else
    sim.call("DELETE", "/faults")
    H.json("POST", sim.admin .. "/config", { failure_rate = 0 })
    local r2, s2 = c:send_commands(items, { parameter = { value = 1 }, concurrency = 16, journal = j })
    assert.are.equal(s1.skipped, s2.sent)
    assert.are.equal(s1.unknown, s2.unknown)
    per, twice = created(sim)
    assert.are.same({}, twice)
    agrees(r2, per)
    c:close()
  end)
end)

describe("kinot command wait --from: a guid the platform does not know #cli #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 10, command_pace = 0.02 } end)
  teardown(function() sim.stop() end)

  it("is a failure (exit 3), not a wait that ran out (6)", function()
    local list = tmpname()
    finally(function() os.remove(list) end)
    local f = assert(io.open(list, "w"))
    f:write("no-such-guid-1\n")
    f:close()
    local cmd = string.format("cd %s && KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s %s bin/kinot command " ..
      "wait --from %s --wait-timeout 3 --jsonl 2>/dev/null; echo rc=$?", H.root, sim.app_key, sim.app_secret,
      sim.endpoint, LUA, list)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    local line = json.decode(out:match("^[^\n]+"))
    assert.are.equal("not_found", line.error_kind, out)
    assert.are.equal("3", out:match("rc=(%d+)"), out)
  end)

  it("a wait that runs out is 6; the same commands followed to their end later, 0", function()
    local list, out = tmpname(), tmpname()
    finally(function() os.remove(list) os.remove(out) end)
    local f = assert(io.open(list, "w"))
    f:write("419600001\n419600002\n")
    f:close()
    H.json("POST", sim.admin .. "/config", { command_pace = 1 })
    local env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret,
      sim.endpoint)
    local p = io.popen(string.format("cd %s && %s %s bin/kinot command send --from %s --wait --wait-timeout 0.5 " ..
      "--jsonl > %s 2>/dev/null; echo rc=$?", H.root, env, LUA, list, out))
    local rc = p:read("*a")
    p:close()
    assert.are.equal("6", rc:match("rc=(%d+)"), read(out))
    H.json("POST", sim.admin .. "/config", { command_pace = 0.02 })
    p = io.popen(string.format("cd %s && %s %s bin/kinot command wait --from %s --wait-timeout 20 >/dev/null " ..
      "2>&1; echo rc=$?", H.root, env, LUA, out))
    rc = p:read("*a")
    p:close()
    assert.are.equal("0", rc:match("rc=(%d+)"))
    assert.are.equal(2, sim.counters().commands_created)
  end)
end)

describe("send_commands attacks over resty inside nginx #nginx #sim", function()
  local sim, ng
  setup(function()
    sim = H.sim { locks = 300, command_pace = 0.02 }
    ng = B.resty_host { client = "timeout = a.timeout, backoff = { base = 0.01, max = 0.05 }", send = [[
          local results, summary = c:send_commands(items, { parameter = { value = 1 }, concurrency = 8 })]] ..
      B.RESULTS }
  end)
  teardown(function()
    ng.stop()
    sim.stop()
  end)

  it("timeouts where the platform created the command, resets before and after it acted, 429s: once at most", function()
    sim.fault { kind = "latency", latency = 1.5, next = 3, endpoint = "POST /commands" }
    sim.fault { kind = "reset", share = 0.05, endpoint = "POST /commands" }
    sim.fault { kind = "reset", after = true, share = 0.05, endpoint = "POST /commands" }
    sim.fault { kind = "throttle", retry_after = 0, share = 0.1, endpoint = "POST /commands" }
    local doc = B.batch(ng, sim, 200, 0.5)
    assert.is_table(doc, "nginx: " .. ng.log())
    core.sleep(1.5) -- the simulator acts on the slow ones after the client gave up
    sim.call("DELETE", "/faults")
    local per, twice = created(sim)
    assert.are.same({}, twice)
    for _, r in ipairs(doc.results) do
      if r.guid == json.null then r.guid = nil end
      assert.is_string(r.outcome)
    end
    agrees(doc.results, per)
    assert.is_true(doc.summary.unknown >= 3)
    assert.are.equal(200, doc.summary.pending + doc.summary.unknown)
  end)
end)
