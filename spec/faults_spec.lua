-- The fault matrix of docs/RELIABILITY.md: for each fault the simulator (or
-- the network) can produce, what the user sees (kind, message), how many
-- attempts were made, and that no command was created twice.  Each row runs
-- for an idempotent GET and for POST /commands.
local core = require "kinot.core"
local kinot = require "kinot"
local launcher = require "kinot.sim.launcher"
local H = require "helpers"

-- fault, then what the GET and the POST must come to
local MATRIX = {
  { name = "500", fault = { kind = "status", status = 500, next = 1 }, get = { ok = true, attempts = 2 },
    post = { kind = "http", attempts = 1 } },
  { name = "502", fault = { kind = "status", status = 502, next = 1 }, get = { ok = true, attempts = 2 },
    post = { kind = "http", attempts = 1 } },
  { name = "503 + Retry-After", fault = { kind = "status", status = 503, retry_after = 0, next = 1 },
    get = { ok = true, attempts = 2 }, post = { kind = "http", attempts = 1 } },
  { name = "504", fault = { kind = "status", status = 504, next = 1 }, get = { ok = true, attempts = 2 },
    post = { kind = "http", attempts = 1 } },
  { name = "429 + Retry-After", fault = { kind = "throttle", retry_after = 0, next = 1 },
    get = { ok = true, attempts = 2 }, post = { kind = "throttled", attempts = 1 } },
  { name = "gateway throttling (403)", fault = { kind = "gateway_throttle", next = 1 },
    get = { ok = true, attempts = 2 }, post = { ok = true, attempts = 2, created = 1 } },
  { name = "reused nonce (gateway 400)", fault = { kind = "gateway", message = "Nonce Used", next = 1 },
    get = { ok = true, attempts = 2 }, post = { ok = true, attempts = 2, created = 1 } },
  { name = "reset before the answer", fault = { kind = "reset", next = 1 }, get = { ok = true, attempts = 2 },
    post = { kind = "network", attempts = 1 } },
  { name = "reset after the command was made", fault = { kind = "reset", after = true, next = 1 },
    get = { ok = true, attempts = 2 }, post = { kind = "network", attempts = 1, created = 1 } },
  { name = "truncated JSON (reset mid-body)", fault = { kind = "truncated", next = 1 }, get = { ok = true, attempts = 2 },
    post = { kind = "network", attempts = 1 } },
  { name = "malformed JSON", fault = { kind = "malformed", next = 1 }, get = { ok = true, attempts = 2 },
    post = { kind = "decode", attempts = 1 } },
  { name = "stalled server", fault = { kind = "latency", latency = 1.2, next = 1 }, get = { ok = true, attempts = 2 },
    post = { kind = "timeout", attempts = 1, created = 1 } },
  { name = "oversized body", fault = { kind = "oversize", bytes = 300000, share = 1 },
    get = { kind = "too_large", attempts = 1 }, post = { kind = "too_large", attempts = 1 } },
}

describe("fault matrix", function()
  local sim
  setup(function() sim = H.sim { command_pace = 5 } end)
  teardown(function() sim.stop() end)
  before_each(function() sim.reset() end)

  local function client(extra)
    local o = { retries = 2, timeout = 0.6, max_body = 64 * 1024 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return sim.client(o)
  end

  for _, row in ipairs(MATRIX) do
    it(row.name .. ": GET lockers", function()
      local f = { endpoint = "GET /lockers" }
      for k, v in pairs(row.fault) do f[k] = v end
      sim.fault(f)
      local c = client()
      local attempts = 0
      c.on_event = function(e) if e.type == "request" then attempts = attempts + 1 end end
      local page, err = c:lockers()
      c:close()
      if row.get.ok then
        assert.is_table(page, tostring(err))
        assert.are.equal(row.get.attempts, attempts)
      else
        assert.is_nil(page)
        assert.are.equal(row.get.kind, err.kind)
        assert.are.equal(row.get.attempts, err.attempts)
        assert.is_string(err.message)
      end
    end)

    it(row.name .. ": POST command, never twice", function()
      local f = { endpoint = "POST /commands" }
      for k, v in pairs(row.fault) do f[k] = v end
      sim.fault(f)
      local c = client()
      local cmd, err = c:send_command(419600001, { key = "handle", value = 1 })
      c:close()
      if row.post.ok then
        assert.is_table(cmd, tostring(err))
      else
        assert.is_nil(cmd)
        assert.are.equal(row.post.kind, err.kind, tostring(err))
        assert.are.equal(row.post.attempts, err.attempts)
      end
      -- a stalled server makes the command after the client gave up
      if row.fault.kind == "latency" then core.sleep(1) end
      local counters = sim.counters()
      assert.are.equal(row.post.created or (row.post.ok and 1 or 0), counters.commands_created)
      assert.is_true(counters.commands_created <= 1)
    end)
  end

  it("refused connection: GET retried, then network; POST retried (never sent)", function()
    local dead = "http://127.0.0.1:" .. launcher.free_port() .. "/open/lora/v1"
    local c = kinot.new { app_key = "k", app_secret = "s", endpoint = dead, retries = 2, backoff = { base = 0.01 } }
    local _, err = c:lockers()
    assert.are.same({ "network", 3, true }, { err.kind, err.attempts, err.retryable })
    local _, e2 = c:send_command(419600001, { key = "handle", value = 1 })
    assert.are.same({ "network", 3 }, { e2.kind, e2.attempts })
    assert.matches("refused", e2.message:lower())
    c:close()
  end)

  it("bad signature: kind signature, not retried, both strings shown", function()
    local c = client { app_secret = "wrong" }
    local _, err = c:send_command(419600001, { key = "handle", value = 1 })
    assert.are.same({ "signature", 1 }, { err.kind, err.attempts })
    assert.is_string(err.server_string_to_sign)
    assert.are.equal(0, sim.counters().commands_created)
    c:close()
  end)

  it("clock skew: one retry with the server's clock, for a command too", function()
    sim.call("POST", "/config", { clock_offset_ms = -20 * 60 * 1000 })
    local c = client()
    local cmd = assert(c:send_command(419600001, { key = "handle", value = 1 }))
    assert.is_string(cmd.guid)
    assert.are.equal(1, sim.counters().commands_created)
    assert.are.equal(2, sim.counters().endpoints["POST /commands"])
    c:close()
  end)
end)
