-- callback.verify's options, and every misuse of the callback modules as
-- one kind of error (issue 18: errors.is_misuse holds, where names the
-- caller, an unknown option is named).
local callback = require "kinot.callback"
local errors = require "kinot.errors"

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"
local function signed(body)
  return (body:gsub("}$", ',"sign":"' .. assert(callback.sign(body, SECRET)) .. '"}'))
end
-- a body of 2019 (the reference's time), signed
local OLD = signed('{"sn":419631107,"locked":1,"updated_at":"2019-03-13T10:42:39+08:00"}')

local function misuse_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "no error raised")
  assert.is_true(errors.is_misuse(err), "not a misuse: " .. tostring(err))
  return err
end

describe("callback.verify's options #unit", function()
  it("refuses a replayed body of 2019 when max_age is given", function()
    local ev, err = callback.verify(OLD, { secret = SECRET, max_age = 3600 })
    assert.is_nil(ev)
    assert.are.equal("stale", err.reason)
    -- without max_age the sign alone is judged (a captured body, a stored one)
    assert.are.equal(419631107, assert(callback.verify(OLD, { secret = SECRET })).sn)
    assert.are.equal(419631107, assert(callback.verify(OLD, { secret = SECRET, max_age = false })).sn)
  end)

  it("refuses a body from the future when max_skew is given, by its clock", function()
    local t = 1552444959 -- 2019-03-13T10:42:39+08:00
    local _, err = callback.verify(OLD, { secret = SECRET, max_skew = 60, clock = function() return t - 3600 end })
    assert.are.equal("future", err.reason)
    assert.is_truthy(callback.verify(OLD, { secret = SECRET, max_age = 60, clock = function() return t + 10 end }))
  end)

  it("raises misuse naming an option it does not know", function()
    local err = misuse_of(callback.verify, OLD, { secret = SECRET, bogus = 1 })
    assert.matches("callback.verify: unknown option \"bogus\"", err.message, 1, true)
    assert.matches("callback_misuse_spec.lua", err.where, 1, true)
  end)
end)

describe("every callback misuse is errors.misuse #unit", function()
  it("verify, sign, discover, receiver, handler, worker", function()
    misuse_of(callback.verify, OLD, {})
    misuse_of(callback.verify, OLD, { secret = "" })
    misuse_of(callback.verify, 42, { secret = SECRET })
    misuse_of(callback.sign, OLD, 42)
    misuse_of(callback.discover, OLD, { 42 })
    misuse_of(callback.verify, OLD, { secret = SECRET, sign_rule = "md5" })
    misuse_of(callback.receiver, { secret = SECRET, ack = "later" })
    misuse_of(callback.receiver, { secret = SECRET, max_age = -1 })
    misuse_of(callback.receiver, { secret = SECRET, verify = "lenient" })
    misuse_of(callback.receiver, { secret = SECRET, dedup = "typo" })
    misuse_of(callback.handler, { secret = SECRET, busy_ttl = 0 })
    misuse_of(callback.handler, { secret = SECRET, inbox = { redis = "redis://127.0.0.1:1", streem = "x" } })
    misuse_of(callback.handler, { secret = SECRET, dedupe = { redis = "redis://127.0.0.1:1", lease = 0 } })
    misuse_of(callback.worker, { redis = "redis://127.0.0.1:1" })
    local err = misuse_of(callback.worker, { redis = "redis://127.0.0.1:1", on_status = print, dead_max = 1 })
    assert.matches("dead_max", err.message, 1, true)
  end)
end)
