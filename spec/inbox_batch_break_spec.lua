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
