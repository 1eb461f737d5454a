-- kinot.redis against a broken or hostile server (issue 18, defect 4): a
-- reply nested 400,000 arrays deep, a reply dripped a byte every 1.5 s, a
-- bulk string announced as 4,000,000,000 bytes.  Each must end the call
-- with an error of its own, bounded in depth, time and memory, outside
-- nginx (LuaSocket) and inside (cosockets).
--
-- The server is a FAKE (spec/support/redis_hostile.py): a real redis-server
-- cannot be made to send these replies.
local kredis = require "kinot.redis"
local core = require "kinot.core"
local errors = require "kinot.errors"
local json = require "kinot.json"
local H = require "helpers"

-- starts the fake in `mode`; -> {port, url, stop()}
local function hostile(mode)
  local peer = H.fake("redis_hostile.py", mode)
  peer.url = "redis://127.0.0.1:" .. peer.port
  return peer
end

describe("kinot.redis bounded against a hostile server, outside nginx (LuaSocket) #peer", function()
  it("refuses a reply nested 400,000 arrays deep: an error of kind decode, no stack overflow", function()
    local peer = hostile("deep")
    finally(peer.stop)
    local c = kredis.new(peer.url, { timeout = 5 })
    local ok, v, err = pcall(c.call, c, "PING")
    assert.is_true(ok, "raised: " .. tostring(v))
    assert.is_nil(v)
    assert.is_true(errors.is(err))
    assert.are.equal("decode", err.kind)
    assert.matches("nested deeper than " .. kredis.MAX_DEPTH .. " arrays", err.message, 1, true)
    assert.is_false(err.retryable)
    assert.is_nil(c.sock) -- a half-read reply: the connection is dropped
    c:close()
  end)

  it("holds a call no longer than its timeout when the reply drips a byte every 1.5 s", function()
    local peer = hostile("drip")
    finally(peer.stop)
    local c = kredis.new(peer.url, { timeout = 2 })
    local t0 = core.monotonic()
    local v, err = c:call("PING")
    local took = core.monotonic() - t0
    assert.is_nil(v, "the dripped reply was waited for: " .. took .. " s")
    assert.are.equal("timeout", err.kind)
    assert.is_true(took < 2.5, "took " .. took .. " s")
    assert.is_true(took > 1.9, "took " .. took .. " s")
    assert.matches("2 s timeout", err.message, 1, true)
    c:close()
  end)

  it("refuses a bulk length of 4,000,000,000 before reading it (max_reply)", function()
    local peer = hostile("huge")
    finally(peer.stop)
    local c = kredis.new(peer.url, { timeout = 5 })
    local t0 = core.monotonic()
    local before = collectgarbage("count")
    local v, err = c:call("PING")
    assert.is_nil(v)
    assert.are.equal("too_large", err.kind)
    assert.matches("max_reply", err.message, 1, true)
    assert.is_true(core.monotonic() - t0 < 1)
    assert.is_true(collectgarbage("count") - before < 8 * 1024, "KiB grown: " .. (collectgarbage("count") - before))
    c:close()
  end)

  it("refuses an array announced as 4,000,000,000 elements before reading them (max_reply)", function()
    local peer = hostile("wide")
    finally(peer.stop)
    local c = kredis.new(peer.url, { timeout = 5 })
    local t0 = core.monotonic()
    local v, err = c:call("PING")
    assert.is_nil(v)
    assert.are.equal("too_large", err.kind, err.message)
    assert.is_true(core.monotonic() - t0 < 1)
    c:close()
  end)

  it("refuses a line that never ends after 64 KiB, not at the deadline", function()
    local peer = hostile("line")
    finally(peer.stop)
    local c = kredis.new(peer.url, { timeout = 5 })
    local t0 = core.monotonic()
    local v, err = c:call("PING")
    assert.is_nil(v)
    assert.are.equal("decode", err.kind, err.message)
    assert.matches("longer than " .. kredis.LINE_MAX, err.message, 1, true)
    assert.is_true(core.monotonic() - t0 < 1)
    c:close()
  end)

  it("takes max_reply as an option, and refuses a bad one naming it", function()
    assert.are.equal(64 * 1024 * 1024, kredis.MAX_REPLY)
    local ok, e = pcall(kredis.new, "redis://127.0.0.1", { max_reply = -1 })
    assert.is_false(ok)
    assert.is_true(errors.is_misuse(e))
    assert.matches("max_reply", tostring(e), 1, true)
  end)
end)

describe("kinot.redis bounded against a hostile server, inside nginx (cosockets) #peer #nginx", function()
  local deep, drip, huge, ng
  setup(function()
    deep, drip, huge = hostile("deep"), hostile("drip"), hostile("huge")
    local function location(name, peer)
      return "location = /" .. name .. [[ { content_by_lua_block {
          local c = require("kinot.redis").new("]] .. peer.url .. [[", { timeout = 2 })
          local t0 = ngx.now()
          local ok, v, err = pcall(c.call, c, "PING")
          ngx.update_time()
          ngx.say(require("kinot.json").encode { raised = not ok and tostring(v) or nil,
            kind = err and err.kind, message = err and err.message, took = ngx.now() - t0 })
        } }
      ]]
    end
    ng = H.nginx { server = location("deep", deep) .. location("drip", drip) .. location("huge", huge) }
  end)
  teardown(function()
    if ng then ng.stop() end
    deep.stop()
    drip.stop()
    huge.stop()
  end)

  local function get(name)
    return json.decode(H.raw("GET", ng.url .. "/" .. name).body)
  end

  it("refuses a reply nested 400,000 arrays deep: an error of kind decode, no stack overflow", function()
    local r = get("deep")
    assert.is_nil(r.raised)
    assert.are.equal("decode", r.kind)
    assert.matches("nested deeper than", r.message, 1, true)
  end)

  it("holds a call no longer than its timeout when the reply drips a byte every 1.5 s", function()
    local r = get("drip")
    assert.are.equal("timeout", r.kind, r.message)
    assert.is_true(r.took < 2.5, "took " .. r.took .. " s")
  end)

  it("refuses a bulk length of 4,000,000,000 before reading it (max_reply)", function()
    local r = get("huge")
    assert.are.equal("too_large", r.kind, r.message)
    assert.is_true(r.took < 1, "took " .. r.took .. " s")
  end)
end)

-- a pipeline whose connection drops after the commands were written: the
-- server may have run some, all or none, so the call fails (kind network)
-- and sends nothing again; the worker's batch stays pending (inbox_spec)
describe("kinot.redis pipeline on a connection dropped between its writes and its reads #peer", function()
  for _, mode in ipairs { "close", "half" } do
    it("fails with kind network, without sending the commands again (" .. mode .. ")", function()
      local peer = hostile(mode)
      finally(peer.stop)
      local c = kredis.new(peer.url, { timeout = 3 })
      local t0 = core.monotonic()
      local v, err = c:pipeline { { "XACK", "s", "g", "1-1" }, { "XACK", "s", "g", "1-2" }, { "PING" } }
      assert.is_nil(v)
      assert.is_true(errors.is(err))
      assert.are.equal("network", err.kind)
      assert.is_true(err.retryable)
      assert.matches("pipeline of 3 (XACK ...) read failed", err.message, 1, true)
      assert.is_true(core.monotonic() - t0 < 2, "it waited for its deadline")
      c:close()
    end)
  end
end)


describe("kinot.redis pipeline with one command run between two refused #peer", function()
  -- READONLY for every command means nothing ran (behind Sentinel the
  -- pipeline goes again, to the new master); one that ran among them (the
  -- FAKE's :1 between two READONLY) makes the pipeline's replies the
  -- caller's, never an error that has it sent again.  (The merge counted
  -- n - 1 refusals as all, whichever one was not.)
  it("gives each command's reply, not READONLY for the whole", function()
    local peer = hostile("mixed")
    finally(peer.stop)
    local c = kredis.new(peer.url, { timeout = 3 })
    local v, err = c:pipeline { { "EVALSHA", "x", "0" }, { "EVALSHA", "x", "0" }, { "EVALSHA", "x", "0" } }
    assert.is_table(v, tostring(err))
    assert.are.equal("READONLY", v[1].code)
    assert.are.equal(1, v[2])
    assert.are.equal("READONLY", v[3].code)
    c:close()
  end)
end)
