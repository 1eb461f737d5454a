-- The inbox's held events: a worker in the process that stored an entry
-- runs the event that process verified (kinot.callback.inbox.take,
-- event.as_rebuilt) instead of scanning its body again.  Attacked where
-- the two could differ: every kind of body, a sign_rule, verify =
-- "monitor", an event the receiver flagged (out_of_order = "flag"), the
-- same body under another rule, a handler that changes its event, more
-- events than are held.  The event must be, field by field, the one
-- rebuilt from the stored body.  Real redis-server, the real receiver,
-- inbox and worker.
local callback = require "kinot.callback"
local event = require "kinot.callback.event"
local inbox = require "kinot.callback.inbox"
local rules = require "kinot.callback.rules"
local worker = require "kinot.callback.worker"
local R = require "redis_server"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local function signed(body, rule)
  local sign = rule and rules.sign(body, SECRET, rules.rule(rule)) or assert(callback.sign(body, SECRET))
  return (body:gsub("}$", ',"sign":"' .. sign .. '"}'))
end

-- the worker's extras, gone: what is left is the event of the body
local function bare(ev)
  local e = {}
  for k, v in pairs(ev) do e[k] = v end
  e.received_at, e.attempt, e.entry = nil, nil, nil
  return e
end

describe("the inbox's events held for the workers of the process that stored them #redis", function()
  local r
  before_each(function() r = R.start() end)
  after_each(function() r.stop() end)

  -- receives each body with ropts, then one worker step runs them: the
  -- events the receiver verified and those the handler got, by sn
  local function through(ropts, bodies, on_status)
    ropts.inbox = { redis = r.url, stream = "s" }
    ropts.secret = SECRET
    if ropts.max_age == nil then ropts.max_age = false end
    local rcv = callback.receiver(ropts)
    local verified = {}
    for _, body in ipairs(bodies) do
      local status, _, ev = rcv:receive(body)
      assert.are.equal(200, status)
      if ev then verified[#verified + 1] = ev end
    end
    local seen = {}
    local function got(ev)
      seen[#seen + 1] = ev
      if on_status then return on_status(ev) end
      return true
    end
    local w = worker.new { redis = r.url, stream = "s", block = 0.1, on_status = got, on_command = got }
    assert(w:step())
    return verified, seen
  end

  it("runs the event the receiver verified, equal to the one rebuilt from its body, for every kind of body", function()
    local bodies = {}
    for i = 1, 9 do -- a lock's status, a sensor's, a command's result (bench/support.lua's mix)
      local sn, at = 400000000 + i, string.format("2026-01-01T10:%02d:00+08:00", i)
      local body = i % 3 == 0 and string.format('{"guid":"%032X","sn":%d,"commnad_status":"succeeded",' ..
          '"reason":"NULL","updated_at":"%s","device_type":18}', i, sn, at)
        or i % 3 == 1 and string.format('{"sn":%d,"voltage":%.3f,"frequency":37.919,"locked":%d,"car_detected":0,' ..
          '"low_battery":0,"rs_si":%d,"updated_at":"%s","device_type":18}', sn, 3.4 + i / 1000, i % 2, i % 5, at)
        or string.format('{"sn":%d,"voltage":%.3f,"car_detected":%d,"rs_si":%d,"updated_at":"%s","device_type":34}',
          sn, 3.5 + i / 1000, i % 2, i % 5, at)
      bodies[i] = signed(body)
    end
    bodies[10] = signed('{"sn":419631107,"locked":1,"extra":{"a":[1,2]},"device_type":99}') -- nested, unknown type
    local verified, seen = through({}, bodies)
    assert.are.equal(#bodies, #seen)
    for i, ev in ipairs(seen) do
      assert.are.equal(verified[i].data, ev.data) -- the same table: taken, not scanned again
      assert.are_not.equal(verified[i], ev) -- a table of its own
      assert.are.same(assert(event.rebuild(bodies[i], verified[i].id)), bare(ev))
      assert.is_nil(ev.secret_index)
      assert.is_number(ev.received_at)
      assert.are.equal(1, ev.attempt)
    end
    -- given once: nothing left held for them
    for i, ev in ipairs(verified) do assert.is_nil(inbox.take(ev.id, bodies[i])) end
  end)

  it("under a sign_rule, under verify = \"monitor\", and flagged stale: as rebuilt, the flag kept", function()
    local raw = '{"sn":419631107,"locked":1,"note":"","device_type":18}'
    local _, seen = through({ sign_rule = "md5-key+keep-empty" }, { signed(raw, "md5-key+keep-empty") })
    assert.are.equal("", seen[1].data.note)
    assert.are.same(assert(event.rebuild(signed(raw, "md5-key+keep-empty"), seen[1].id, "md5-key+keep-empty")),
      bare(seen[1]))

    r.stop()
    r = R.start()
    local forged = '{"sn":419631108,"locked":0,"sign":"00000000000000000000000000000000"}'
    _, seen = through({ verify = "monitor" }, { forged })
    assert.is_false(seen[1].verified)
    local again = assert(event.rebuild(forged, seen[1].id))
    again.verified = false
    assert.are.same(again, bare(seen[1]))

    r.stop()
    r = R.start()
    local newer = signed('{"sn":419631109,"locked":1,"updated_at":"2026-01-01T10:00:00+08:00","device_type":18}')
    local older = signed('{"sn":419631109,"locked":0,"updated_at":"2026-01-01T09:00:00+08:00","device_type":18}')
    local verified
    verified, seen = through({ out_of_order = "flag" }, { newer, older })
    assert.is_true(verified[2].stale) -- the receiver's own event
    -- (out_of_order = "flag": the handler is told, through the inbox too)
    assert.are.equal(1, seen[1].data.locked)
    assert.is_nil(seen[1].stale)
    assert.are.equal(0, seen[2].data.locked)
    assert.is_true(seen[2].stale)
  end)

  it("flagged stale and rebuilt from the stored entry (not held here): the handler is told", function()
    local newer = signed('{"sn":419631112,"locked":1,"updated_at":"2026-01-01T10:00:00+08:00","device_type":18}')
    local older = signed('{"sn":419631112,"locked":0,"updated_at":"2026-01-01T09:00:00+08:00","device_type":18}')
    local rcv = callback.receiver { secret = SECRET, max_age = false, out_of_order = "flag",
                                    inbox = { redis = r.url, stream = "s" } }
    local ids = {}
    for i, body in ipairs { newer, older } do
      local status, _, ev = rcv:receive(body)
      assert.are.equal(200, status)
      assert.is_not_nil(inbox.take(ev.id, body)) -- as another process's worker: nothing held
      ids[i] = ev.id
    end
    local seen = {}
    local w = worker.new { redis = r.url, stream = "s", block = 0.1,
                           on_status = function(ev) seen[ev.id] = ev return true end }
    assert.are.equal(2, w:step())
    assert.is_nil(seen[ids[1]].stale)
    assert.is_true(seen[ids[2]].stale)
  end)

  it("a handler that changes its event changes nothing the receiver or a later attempt reads", function()
    local body = signed('{"sn":419631110,"locked":1,"device_type":18}')
    local attempts = 0
    local verified, seen = through({}, { body }, function(ev)
      attempts = attempts + 1
      ev.sn, ev.kind = "changed", "changed"
      return nil, "fails once"
    end)
    assert.are.equal(1, attempts)
    assert.are.equal(419631110, verified[1].sn)
    assert.are.equal("status_changed", verified[1].kind)
    assert.are.equal("changed", seen[1].sn)
    -- its next attempt (claimed: not held any more) is rebuilt from the body
    local again
    local w = worker.new { redis = r.url, stream = "s", block = 0.1, claim_after = 0.1, log = function() end,
                           on_status = function(ev) again = ev return true end }
    require("kinot.core").sleep(0.2)
    assert(w:step())
    assert.is_table(again)
    assert.are.equal(2, again.attempt)
    assert.are.equal(419631110, again.sn)
    assert.are.same(assert(event.rebuild(body, verified[1].id)), bare(again))
  end)

  it("is not taken for another body, another rule, or twice; holds a bounded number", function()
    local rcv = callback.receiver { secret = SECRET, max_age = false, inbox = { redis = r.url, stream = "s" } }
    local body = signed('{"sn":419631111,"locked":1,"device_type":18}')
    local _, _, ev = rcv:receive(body)
    assert.is_nil(inbox.take(ev.id, body .. " ")) -- another body under its id
    assert.is_nil(inbox.take(ev.id, body, "md5-key+keep-empty")) -- read under another rule
    assert.are.equal(ev, inbox.take(ev.id, body))
    assert.is_nil(inbox.take(ev.id, body)) -- once
    -- more than two generations' worth never read here: the first are let go
    local first
    for i = 1, 2 * inbox.HELD + 1 do
      local b = signed(string.format('{"sn":%d,"locked":1,"device_type":18}', 500000000 + i))
      local _, _, e = rcv:receive(b)
      if i == 1 then first = { e.id, b } end
    end
    assert.is_nil(inbox.take(first[1], first[2]))
  end)
end)
