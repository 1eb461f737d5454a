-- The shared dict's change feed (twin:changes(since), what /api/changes
-- serves) followed by cursor while two nginx workers write: each change
-- reaches a reader once, in id order, even when the reader looks while an
-- update in the other worker holds an id it took (its `incr x`) and has not
-- made its entries ready yet, and a later id is already ready.  And an id
-- whose writer never finishes (killed, or the dict full after its incr)
-- delays the feed by a bound, not for ever (docs/fleet.md, "Shared dict").
local H = require "helpers"
local json = require "kinot.json"

local HTTP = [[
  lua_shared_dict fleet_feed 48m;
  init_by_lua_block {
    T0 = 1796083200
    local twin
    function feed_twin()
      twin = twin or require("kinot.fleet").new { store = "shared", dict = "fleet_feed", stale_after = false,
                                                  changes_max = 100000 }
      return twin
    end
    function feed_sns(r)
      local sns = {}
      for i = 1, 5 do sns[i] = 419950000 + r * 100 + i end
      return sns
    end
    -- every flag of a lock at v (0 or 1): a change of v is four events
    function feed_obj(sn, v, s)
      return { sn = sn, car_detected = v, locked = v, low_battery = v, coil_fault = v,
               updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ", T0 + s) }
    end
    -- every change after since, page by page, the way /api/changes's clients follow it
    function feed_drain(since)
      local twin, ids = feed_twin(), {}
      while true do
        local page = assert(twin:changes(since, 1000))
        for _, ev in ipairs(page.changes) do ids[#ids + 1] = ev.id end
        if #page.changes == 0 then return ids, since end
        since = page.next
      end
    end
  }
]]

local SERVER = [[
  location = /add {
    content_by_lua_block {
      -- every writer's devices, first seen (no events) at stamp 0, all 0
      local twin = feed_twin()
      for r = 1, tonumber(ngx.var.arg_writers) do
        local page = {}
        for i, sn in ipairs(feed_sns(r)) do page[i] = feed_obj(sn, 0, 0) end
        assert(twin:put("lock", page, "scan"))
      end
      ngx.say("ok")
    }
  }
  location = /run {
    content_by_lua_block {
      -- a writer (its own five devices: no lock waits) that also follows
      -- the feed from its start, a page after each of its updates
      local twin, dict = feed_twin(), ngx.shared.fleet_feed
      local sns, state = feed_sns(tonumber(ngx.var.arg_r)), {}
      local emitted, seen, since = {}, {}, nil
      for k = 1, tonumber(ngx.var.arg_n) do
        local i = k % #sns + 1
        state[i] = 1 - (state[i] or 0)
        local s = dict:incr("stamp", 1, 0) -- unique, rising
        local v, evs = twin:apply { kind = "status_changed", device = "lock", sn = sns[i], verified = true,
                                    data = feed_obj(sns[i], state[i], s) }
        if v ~= "applied" then return ngx.say("failed: ", tostring(v), " ", tostring(evs)) end
        for _, ev in ipairs(evs) do emitted[#emitted + 1] = ev.id end
        local page = assert(twin:changes(since, 1000))
        for _, ev in ipairs(page.changes) do seen[#seen + 1] = ev.id end
        since = page.next
        if k % 100 == 0 then ngx.sleep(0.001) end
      end
      ngx.say(require("kinot.json").encode { pid = ngx.worker.pid(), emitted = emitted, seen = seen, next = since })
    }
  }
  location = /drain {
    content_by_lua_block {
      local ids, next_cursor = feed_drain(ngx.var.arg_since and tonumber(ngx.var.arg_since))
      ngx.update_time()
      ngx.say(require("kinot.json").encode { ids = ids, next = next_cursor, at = ngx.now() })
    }
  }
  location = /gap {
    content_by_lua_block {
      -- a writer that never finishes, simulated here (nothing else leaves
      -- it so for sure): what it did before it died, and no more
      local dict = ngx.shared.fleet_feed
      ngx.update_time()
      local id
      if ngx.var.arg_kind == "missing" then
        -- it took its id (log_event's incr x), then was killed, or the
        -- dict had no room for its entry: no entry at all
        id = dict:incr("x", 1, 0)
      else
        -- it wrote its entry not ready (log_event itself) and was killed
        -- before log_ready
        local b = require("kinot.fleet.local_store").shared_backend("fleet_feed", 100000)
        local ev = { sn = 419950101, kind = "lock", change = "occupied", source = "callback" }
        assert(b:log_event(ev))
        id = ev.id
      end
      ngx.say(require("kinot.json").encode { id = id, at = ngx.now() })
    }
  }
]]

local function get(ng, path) return H.raw("GET", ng.url .. path).body end

-- ids (a reader's, in the order it got them) against every id emitted:
-- each once, rising; "" when so, else what is wrong
local function once_each(ids, emitted)
  local want, got = {}, {}
  for _, id in ipairs(emitted) do want[id] = true end
  local prev = 0
  for _, id in ipairs(ids) do
    if got[id] then return "id " .. id .. " twice" end
    if id <= prev then return "id " .. id .. " after " .. prev end
    if not want[id] then return "id " .. id .. " never emitted" end
    got[id], prev = true, id
  end
  local lost = {}
  for _, id in ipairs(emitted) do
    if not got[id] then lost[#lost + 1] = id end
  end
  table.sort(lost)
  if #lost > 0 then return #lost .. " lost: " .. table.concat(lost, " ", 1, math.min(#lost, 10)) end
  return ""
end

describe("kinot.fleet's shared dict change feed, writers in two workers and readers following it #nginx #slow", function()
  it("brings every change emitted to each reader once, in id order", function()
    local ng = H.nginx { http = HTTP, server = SERVER, workers = 2 }
    finally(function() ng.stop() end)
    local writers, n, tries = 4, 2000, 3 -- (3 x 4 x 2000 x 4 changes: within the feed's 100,000)
    assert.are.equal("ok\n", get(ng, "/add?writers=" .. writers * tries))
    -- (each answer to a file of its own: tens of KB each, written by
    -- concurrent curls into one pipe, they interleaved once)
    local dir = H.tmpdir("feed")
    finally(function() os.execute("rm -rf " .. dir) ng.stop() end) -- (busted keeps an it's last finally)
    -- writers at once, each on its own connection; nginx hands a
    -- connection to whichever worker takes it first, so on a loaded
    -- machine one worker may take them all: then writers again (new
    -- devices), until both workers ran some (each reader starts from the
    -- feed's beginning: it follows every change of every round)
    local runs, emitted, pids, workers = {}, {}, {}, 0
    for try = 1, tries do
      local cmd = {}
      for w = 1, writers do
        local r = (try - 1) * writers + w
        cmd[#cmd + 1] = string.format("curl -s -o %s/%d.json '%s/run?r=%d&n=%d' &", dir, r, ng.url, r, n)
      end
      os.execute("(" .. table.concat(cmd, " ") .. " wait)")
      for w = 1, writers do
        local line = H.read(dir .. "/" .. ((try - 1) * writers + w) .. ".json") or ""
        assert.matches("^{", line, line .. ng.log())
        local run = json.decode(line)
        runs[#runs + 1] = run
        if not pids[run.pid] then workers = workers + 1 end
        pids[run.pid] = true
        for _, id in ipairs(run.emitted) do emitted[#emitted + 1] = id end
      end
      if workers == 2 then break end
    end
    assert.are.equal(2, workers, "the writers ran in one worker " .. tries .. " times: no race")
    -- counted from the apply results: every update applied, four changes each
    assert.are.equal(#runs * n * 4, #emitted)
    -- each reader: what it saw while the writers ran, then the rest from its cursor
    for r, run in ipairs(runs) do
      local rest = json.decode(get(ng, "/drain?since=" .. run.next))
      local ids = run.seen
      for _, id in ipairs(rest.ids) do ids[#ids + 1] = id end
      assert.are.equal("", once_each(ids, emitted), "reader " .. r .. " (worker " .. run.pid .. ")")
    end
    -- and a reader from the start, after them all
    assert.are.equal("", once_each(json.decode(get(ng, "/drain")).ids, emitted), "a reader after")
  end)
end)

describe("kinot.fleet's shared dict change feed, an id whose writer never finishes #nginx #slow", function()
  local GAP_WAIT = require("kinot.fleet.local_store").GAP_WAIT
  for _, kind in ipairs { "missing", "unready" } do
    it("holds the feed back at most " .. GAP_WAIT .. " s, then gives the changes after it, once (" .. kind .. ")",
      function()
      local ng = H.nginx { http = HTTP, server = SERVER, workers = 2 }
      finally(function() ng.stop() end)
      assert.are.equal("ok\n", get(ng, "/add?writers=2"))
      local before = json.decode(get(ng, "/run?r=1&n=3")).emitted
      local gap = json.decode(get(ng, "/gap?kind=" .. kind))
      local after = json.decode(get(ng, "/run?r=2&n=3")).emitted
      assert.are.equal(12, #before)
      assert.are.equal(12, #after)
      assert.are.equal(before[#before] + 1, gap.id)
      assert.are.equal(gap.id + 1, after[1])
      -- a reader from the start: the changes before the gap at once, the
      -- cursor just before it
      local first = json.decode(get(ng, "/drain"))
      assert.are.same(before, first.ids)
      assert.are.equal(gap.id - 1, first.next)
      -- following it (either worker answers): nothing until the bound, then
      -- the changes after the gap, once
      local ids, since, given_at = {}, first.next, nil
      repeat
        os.execute("sleep 0.1")
        local page = json.decode(get(ng, "/drain?since=" .. since))
        for _, id in ipairs(page.ids) do ids[#ids + 1] = id end
        if #page.ids > 0 then given_at = given_at or page.at end
        since = page.next
      until (given_at and page.at > given_at + 0.5) or page.at > gap.at + 3 * GAP_WAIT
      assert.is_truthy(given_at, "the feed stayed behind the gap")
      assert.are.same(after, ids)
      assert.are.equal(after[#after], since)
      local waited = given_at - gap.at
      assert.is_true(waited > GAP_WAIT - 0.2, "given after " .. waited .. " s only")
      assert.is_true(waited < GAP_WAIT + 1.5, "given after " .. waited .. " s")
      -- and a reader from the start now: every change once, the gap's id never
      local all = {}
      for _, id in ipairs(before) do all[#all + 1] = id end
      for _, id in ipairs(after) do all[#all + 1] = id end
      assert.are.same(all, json.decode(get(ng, "/drain")).ids)
    end)
  end

  it("times an id missing at the log's end from when the worker first saw it so", function()
    -- one worker: the sight it remembers is the one asked again
    local ng = H.nginx { http = HTTP, server = SERVER, workers = 1 }
    finally(function() ng.stop() end)
    assert.are.equal("ok\n", get(ng, "/add?writers=2"))
    local before = json.decode(get(ng, "/run?r=1&n=3")).emitted
    local gap = json.decode(get(ng, "/gap?kind=missing"))
    -- seen missing, nothing after it: held there
    local first = json.decode(get(ng, "/drain"))
    assert.are.same(before, first.ids)
    assert.are.equal(gap.id - 1, first.next)
    os.execute("sleep " .. GAP_WAIT + 0.3)
    -- changes after it, written now: given at once, the gap seen missing
    -- longer than the bound (timed from their entries, it would wait again)
    local after = json.decode(get(ng, "/run?r=2&n=3")).emitted
    local page = json.decode(get(ng, "/drain?since=" .. first.next))
    assert.are.same(after, page.ids)
    assert.are.equal(after[#after], page.next)
  end)
end)
