-- Secrets never leak: the app secret and the request signatures appear in
-- no error message, no event, no printed client, and no CLI output, on any
-- error path. Injection (CR/LF/NUL) is refused; TLS is verified by default.
local kinot = require "kinot"
local json = require "kinot.json"
local callback = require "kinot.callback"
local launcher = require "kinot.sim.launcher"
local H = require "helpers"

local SECRET = "s3cr3t-Do-Not-Print-0123456789"

describe("secrets", function()
  local sim, sent, texts, curl
  setup(function()
    sim = H.sim { app_secret = SECRET, app_key = "leak-check", command_pace = 0.02 }
    sent, texts = {}, {}
    -- the real curl transport, wrapped only to record the signatures it sends
    curl = require("kinot.transport.curl").new { verify_tls = true, max_body = 32 * 1024 }
  end)
  teardown(function()
    curl.close()
    sim.stop()
  end)

  local function recording(req)
    sent[#sent + 1] = req.headers["X-Ca-Signature"]
    local res, kind, msg, not_sent = curl.send(req)
    if not res then return nil, { kind = kind, message = msg, not_sent = not_sent } end
    return res
  end

  local function collect(v)
    if v == nil then return end
    if type(v) == "table" then
      texts[#texts + 1] = tostring(v)
      local ok, enc = pcall(json.encode, v)
      if ok then texts[#texts + 1] = enc end
      for k, x in pairs(v) do
        if type(x) == "string" then texts[#texts + 1] = k .. "=" .. x end
      end
    else
      texts[#texts + 1] = tostring(v)
    end
  end

  it("drives every error path with the hook on", function()
    local c = sim.client { app_secret = SECRET, transport = recording, retries = 1, timeout = 0.5,
                           on_event = function(e) collect(e); if e.headers then collect(e.headers) end end }
    collect(c)
    local faults = {
      { kind = "status", status = 503, next = 1 }, { kind = "throttle", retry_after = 0, next = 1 },
      { kind = "gateway_throttle", next = 1 }, { kind = "gateway", message = "Nonce Used", next = 1 },
      { kind = "reset", next = 1 }, { kind = "truncated", next = 1 }, { kind = "malformed", share = 1 },
      { kind = "oversize", bytes = 100000, share = 1 }, { kind = "latency", latency = 1, next = 2 },
    }
    for _, f in ipairs(faults) do
      sim.call("DELETE", "/faults")
      sim.fault(f)
      collect(select(2, c:lockers()))
      collect(select(2, c:send_command(419600001, { key = "handle", value = 1 })))
    end
    sim.call("DELETE", "/faults")
    collect(select(2, c:locker(1)))                                        -- not_found
    collect(select(2, c:send_command(419600001, { key = "handle", value = 9 }))) -- api
    local bad = sim.client { app_secret = SECRET .. "x", transport = recording, on_event = collect }
    collect(select(2, bad:lockers()))                                      -- signature
    local other = sim.client { app_key = "nobody", app_secret = SECRET, transport = recording, on_event = collect }
    collect(select(2, other:lockers()))                                    -- gateway
    local dead = kinot.new { app_key = "k", app_secret = SECRET, retries = 0,
                             endpoint = "http://127.0.0.1:" .. launcher.free_port() }
    collect(select(2, dead:lockers()))                                     -- network
    collect(tostring(dead))
    collect(select(2, pcall(dead.locker, dead, "1\r\nX: y")))               -- misuse
    collect(select(2, pcall(kinot.sign_request, { method = "GET", path = "/\r\n", app_secret = SECRET })))
    collect(select(2, callback.verify('{"sn":1,"sign":"00"}', { secret = SECRET })))
    assert.is_true(#sent > 20)
    assert.is_true(#texts > 50)
    local all = table.concat(texts, "\n")
    assert.is_nil(all:find(SECRET, 1, true), "the secret leaked")
    for _, sig in ipairs(sent) do
      assert.is_nil(all:find(sig, 1, true), "a signature leaked: " .. sig)
    end
    assert.is_truthy(all:find("<redacted>", 1, true))
    c:close(); bad:close(); other:close(); dead:close()
  end)

  it("keeps the secret out of the client table itself", function()
    local c = sim.client { app_secret = SECRET }
    local function walk(t, seen)
      seen = seen or {}
      if seen[t] then return end
      seen[t] = true
      for k, v in pairs(t) do
        assert.are_not.equal(SECRET, v, "client." .. tostring(k) .. " holds the secret")
        if type(v) == "table" then walk(v, seen) end
      end
    end
    walk(c)
    c:close()
  end)

  it("never prints the secret from the CLI, even on a signature error", function()
    local lua = H.runtime == "luajit" and "luajit" or "lua5.4"
    local p = io.popen(string.format("cd %s && KINOT_APP_KEY=leak-check KINOT_APP_SECRET=%sx KINOT_ENDPOINT=%s %s bin/kinot lockers 2>&1; " ..
      "KINOT_APP_SECRET=%s %s bin/kinot sign /p 2>&1; KINOT_APP_SECRET=%s %s bin/kinot --json sign /p 2>&1",
      H.root, SECRET, sim.endpoint, lua, SECRET, lua, SECRET, lua))
    local out = p:read("*a")
    p:close()
    assert.matches("signature", out)
    assert.is_nil(out:find(SECRET, 1, true))
  end)
end)

describe("injection and TLS defaults", function()
  it("refuses CR, LF and NUL in headers and paths before sending", function()
    local c = kinot.new { app_key = "k\r\nX-Evil: 1", app_secret = "s", endpoint = "http://127.0.0.1:9/open/lora/v1" }
    assert.has_error(function() c:lockers() end, "kinot: header 'X-Ca-Key' value contains CR or LF")
    c:close()
    local c2 = kinot.new { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:9/open/lora/v1", stage = "A\0B" }
    assert.has_error(function() c2:lockers() end, "kinot: header 'X-Ca-Stage' value contains a NUL byte")
    c2:close()
    assert.has_error(function() kinot.new { app_key = "k", app_secret = "s", endpoint = "http://h/a b" } end)
  end)

  it("verifies TLS by default (the refusal itself: http_spec, self-signed certificate)", function()
    local c = kinot.new { app_key = "k", app_secret = "s" }
    assert.is_true(c.verify_tls)
    c:close()
    local off = kinot.new { app_key = "k", app_secret = "s", verify_tls = false }
    assert.is_false(off.verify_tls)
    off:close()
  end)
end)
