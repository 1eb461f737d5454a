-- Secrets never leak: the app secret and the request signatures appear in
-- no error message, no event, no printed client, and no CLI output, on any
-- error path. Injection (CR/LF/NUL) is refused; TLS is verified by default.
local kinot = require "kinot"
local json = require "kinot.json"
local callback = require "kinot.callback"
local launcher = require "kinot.sim.launcher"
local redact = require "kinot.redact"
local core = require "kinot.core"
local H = require "helpers"

local SECRET = "s3cr3t-Do-Not-Print-0123456789"

-- a proxy or endpoint password: no piece of it (5 characters or more) may
-- be shown, even where a message was cut short inside it
local PW = "Pq7Zx9Kw3Lm"
local function leaked(text, pw)
  pw = pw or PW
  text = tostring(text) -- a misuse error is an object that prints "kinot: ..."
  for i = 1, #pw - 4 do
    local piece = pw:sub(i, i + 4)
    if text:find(piece, 1, true) then return piece end
  end
  return nil
end

-- each form libcurl refuses, and a few it takes, all with the password
local DEAD = launcher.free_port()
local PROXIES = {
  { "port out of range", "http://agent:" .. PW .. "@127.0.0.1:99999" },
  { "unclosed [", "http://agent:" .. PW .. "@[::1" },
  { "unknown scheme", "socks9://agent:" .. PW .. "@127.0.0.1:3128" },
  { "no scheme, bad port", "agent:" .. PW .. "@127.0.0.1:99999" },
  { "port not a number", "http://agent:" .. PW .. "@127.0.0.1:80x" },
  { "empty host", "http://agent:" .. PW .. "@:80" },
  { "space in the host", "http://agent:" .. PW .. "@host name:80" },
  { "a raw @ in the password", "http://agent:Pq7Z@x9Kw3Lm@[::1" },
  { "a raw / in the password", "http://agent:Pq7Z/x9Kw3Lm@127.0.0.1:99999" },
  -- longer than libcurl's error buffer: its message is cut inside the password
  { "cut short by libcurl", "http://agent:" .. PW .. string.rep("Y", 300) .. "@[::1" },
  { "cut short, no scheme", "agent:" .. PW .. string.rep("Y", 228) .. "@[::1" },
  { "not listening", "http://agent:" .. PW .. "@127.0.0.1:" .. DEAD },
}
local ENDPOINTS = {
  { "port out of range", "http://agent:" .. PW .. "@127.0.0.1:99999/open/lora/v1" },
  { "unclosed [", "http://agent:" .. PW .. "@[::1/open/lora/v1" },
  { "not listening", "http://agent:" .. PW .. "@127.0.0.1:" .. DEAD .. "/open/lora/v1" },
  { "a raw @ in the password", "http://agent:Pq7Z@x9Kw3Lm@127.0.0.1:" .. DEAD .. "/open/lora/v1" },
}

describe("secrets #sim", function()
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

describe("passwords in URLs #sim #nginx", function()
  local sim
  setup(function() sim = H.sim { app_secret = SECRET, app_key = "leak-check" } end)
  teardown(function() sim.stop() end)

  -- everything a run can show: the error, its fields, every event, a raise
  local function run_all(opts)
    local texts = {}
    local function collect(v)
      if type(v) == "table" then
        texts[#texts + 1] = tostring(v)
        local ok, enc = pcall(json.encode, v)
        if ok then texts[#texts + 1] = enc end
        for k, x in pairs(v) do
          if type(x) == "table" then collect(x) else texts[#texts + 1] = tostring(k) .. "=" .. tostring(x) end
        end
      elseif v ~= nil then
        texts[#texts + 1] = tostring(v)
      end
    end
    local o = { app_key = "leak-check", app_secret = SECRET, retries = 1, timeout = 2, connect_timeout = 1,
                backoff = { base = 0.01, max = 0.02 }, on_event = collect }
    for k, v in pairs(opts) do o[k] = v end
    local ok, c = pcall(kinot.new, o)
    if not ok then collect(c) return table.concat(texts, "\n") end
    collect(tostring(c))
    for _, call in ipairs {
      function() return c:lockers() end,
      function() return c:send_command(419600001, { key = "handle", value = 1 }) end,
      function() return c:request("POST", "/notifications", { body = { device_type = 18 } }) end,
    } do
      local okc, a, b = pcall(call)
      collect(a)
      collect(b)
      if not okc then collect(a) end
    end
    c:close()
    return table.concat(texts, "\n")
  end

  for _, p in ipairs(PROXIES) do
    it("curl, proxy " .. p[1] .. ": no piece of the password anywhere", function()
      local all = run_all { endpoint = sim.endpoint, proxy = p[2] }
      assert.is_true(#all > 100)
      assert.is_nil(leaked(all), all)
      assert.is_nil(all:find(SECRET, 1, true))
    end)
  end

  for _, e in ipairs(ENDPOINTS) do
    it("curl, endpoint " .. e[1] .. ": no piece of the password anywhere", function()
      local all = run_all { endpoint = e[2] }
      assert.is_nil(leaked(all), all)
      assert.is_nil(all:find(SECRET, 1, true))
    end)
  end

  it("an endpoint the SDK refuses: the raise shows no password", function()
    local ok, err = pcall(kinot.new, { app_key = "k", app_secret = "s", endpoint = "http://agent:" .. PW .. "@h/a b" })
    assert.is_false(ok)
    assert.matches("endpoint must be", err)
    assert.is_nil(leaked(err), err)
    local c = kinot.new { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:9/x" }
    local ok2, err2 = pcall(c.set_notifications, c, { device_type = 18,
      status_changed_callback_url = "http://agent:" .. PW .. "@h/a b" })
    c:close()
    assert.is_false(ok2)
    assert.is_nil(leaked(err2), err2)
  end)

  -- second wave (attack 11): a raise that cuts the value it quotes at 30
  -- bytes cut the password before its '@'; an endpoint without a scheme, or
  -- a password with a space or a quote, had no "scheme://...@" to redact
  it("a long password, no scheme, a space or a quote: no raise, no printed client, no event shows it", function()
    local long = "http://agent:" .. PW .. PW .. "@h/a b"
    for _, e in ipairs { long, "agent:" .. PW .. "@127.0.0.1:1/v1", "http://agent:Pq7 Zx9Kw3Lm@127.0.0.1:1/v1" } do
      local ok, err = pcall(kinot.new, { app_key = "k", app_secret = "s", endpoint = e })
      assert.is_false(ok)
      assert.matches("endpoint must be", tostring(err))
      assert.is_nil(leaked(err), tostring(err))
    end
    local c = kinot.new { app_key = "k", app_secret = "s", endpoint = "http://127.0.0.1:9/x" }
    for _, u in ipairs { long, "agent:" .. PW .. "@h.example/cb" } do
      local ok, err = pcall(c.set_notifications, c, { device_type = 18, status_changed_callback_url = u })
      assert.is_false(ok)
      assert.is_nil(leaked(err), tostring(err))
    end
    for _, call in ipairs { c.locker, c.command, c.send_command } do
      local ok, err = pcall(call, c, "http://agent:" .. PW .. "@h.example/")
      assert.is_false(ok)
      assert.is_nil(leaked(err), tostring(err))
    end
    c:close()
    local all = run_all { endpoint = "http://ag\"ent:" .. PW .. "@127.0.0.1:" .. DEAD .. "/open/lora/v1" }
    assert.is_nil(leaked(all), all)
  end)

  it("the C core's own messages, whatever calls it", function()
    local h = core.http()
    for _, p in ipairs(PROXIES) do
      local res, kind, msg = h:request { url = sim.endpoint .. "/lockers", proxy = p[2], timeout = 2, connect_timeout = 1 }
      assert.is_nil(res)
      assert.is_string(kind)
      assert.is_nil(leaked(msg), p[1] .. ": " .. msg)
    end
    -- every length around libcurl's error buffer and the core's message:
    -- the cut falls at each place in the password, the scheme and the host
    for n = 0, 400, 7 do
      for _, form in ipairs { "http://a:%s@[::1", "%s@127.0.0.1:99999", "socks9://agent:%s@h", "http://:%s@:80" } do
        local proxy = form:format(PW .. string.rep("Y", n))
        local res, _, msg = h:request { url = "http://127.0.0.1:9/", proxy = proxy, timeout = 1, connect_timeout = 1 }
        assert.is_nil(res)
        assert.is_nil(leaked(msg), #proxy .. ": " .. msg)
      end
    end
    local results = h:request_many {
      { url = sim.endpoint .. "/lockers", proxy = PROXIES[1][2] },
      { url = "http://agent:" .. PW .. "@127.0.0.1:99999/x" },
    }
    for _, r in ipairs(results) do assert.is_nil(leaked(r.message or ""), r.message) end
    h:close()
  end)

  it("redact.text: the Lua side of the same rule", function()
    local cases = {
      { "see http://agent:" .. PW .. "@host:1/x and https://u:" .. PW .. "@h", "see http://<redacted>@host:1/x and https://<redacted>@h" },
      { "'socks9://a:" .. PW .. "@h'", "'socks9://<redacted>@h'" },
      { "http://a:Pq7Z@x9Kw3Lm@h", "http://<redacted>@h" },
      { "no url here", "no url here" },
      { "http://host/path", "http://host/path" },
    }
    for _, c in ipairs(cases) do assert.are.equal(c[2], redact.text(c[1])) end
    -- a userinfo quoted without its scheme, when the URL is known
    assert.are.equal("connecting to <redacted>@h:80", redact.text("connecting to agent:" .. PW .. "@h:80", "http://agent:" .. PW .. "@h:80"))
    assert.are.equal(42, redact.text(42))
    -- a short userinfo takes nothing else with it
    assert.are.equal("connecting to <redacted>@h:80 failed: a", redact.text("connecting to a@h:80 failed: a", "http://a@h:80"))
  end)

  it("a short userinfo leaves the rest of the message readable (C core)", function()
    local h = core.http()
    local _, _, msg = h:request { url = "http://a@127.0.0.1:" .. DEAD .. "/x", proxy = "http://a@127.0.0.1:99999" }
    h:close()
    assert.are.equal("Unsupported proxy syntax in 'http://<redacted>@127.0.0.1:99999'", msg:match("^[^(]+'"))
  end)

  it("resty inside nginx: proxies and endpoints with passwords", function()
    local cases = {}
    for _, p in ipairs(PROXIES) do cases[#cases + 1] = { endpoint = sim.endpoint, proxy = p[2] } end
    for _, e in ipairs(ENDPOINTS) do cases[#cases + 1] = { endpoint = e[2] } end
    local ng = H.nginx {
      server = [[
        location = /run { content_by_lua_block {
          local json = require "kinot.json"
          ngx.req.read_body()
          local cases = json.decode(ngx.req.get_body_data())
          local texts = {}
          local function collect(v)
            if type(v) == "table" then
              texts[#texts + 1] = tostring(v)
              for k, x in pairs(v) do
                if type(x) == "table" then collect(x) else texts[#texts + 1] = tostring(k) .. "=" .. tostring(x) end
              end
            elseif v ~= nil then texts[#texts + 1] = tostring(v) end
          end
          for _, o in ipairs(cases) do
            o.app_key, o.app_secret, o.transport = "leak-check", "]] .. SECRET .. [[", "resty"
            o.retries, o.timeout, o.connect_timeout, o.on_event = 1, 2, 1, collect
            o.backoff = { base = 0.01, max = 0.02 }
            local ok, c = pcall(require("kinot").new, o)
            if not ok then collect(c) else
              collect(tostring(c))
              for _, call in ipairs {
                function() return c:lockers() end,
                function() return c:send_command(419600001, { key = "handle", value = 1 }) end,
              } do
                local okc, a, b = pcall(call)
                collect(a); collect(b)
                if not okc then collect(a) end
              end
            end
          end
          ngx.print(table.concat(texts, "\n"))
        } }
      ]],
    }
    local ok, res = pcall(H.raw, "POST", ng.url .. "/run", json.encode(cases), { ["Content-Type"] = "application/json" })
    local log = ng.log()
    ng.stop()
    assert.is_true(ok, tostring(res))
    assert.are.equal(200, res.status, res.body .. log)
    assert.is_true(#res.body > 200)
    assert.is_nil(leaked(res.body), res.body)
    assert.is_nil(res.body:find(SECRET, 1, true))
    assert.is_nil(leaked(log), log)
  end)

  it("the CLI: --proxy, KINOT_PROXY and KINOT_ENDPOINT with passwords", function()
    local lua = H.runtime == "luajit" and "luajit" or "lua5.4"
    local base = string.format("cd %s && KINOT_APP_KEY=leak-check KINOT_APP_SECRET=%s ", H.root, SECRET)
    local runs = {}
    for _, p in ipairs(PROXIES) do
      runs[#runs + 1] = base .. "KINOT_ENDPOINT=" .. sim.endpoint .. " " .. lua .. " bin/kinot --timeout 2 --proxy '" .. p[2] .. "' lockers"
      runs[#runs + 1] = base .. "KINOT_ENDPOINT=" .. sim.endpoint .. " KINOT_PROXY='" .. p[2] .. "' " .. lua ..
        " bin/kinot --timeout 2 command send 419600001"
    end
    for _, e in ipairs(ENDPOINTS) do
      runs[#runs + 1] = base .. "KINOT_ENDPOINT='" .. e[2] .. "' " .. lua .. " bin/kinot --timeout 2 locker 419600001"
      runs[#runs + 1] = base .. lua .. " bin/kinot --json --endpoint '" .. e[2] .. "' --timeout 2 command send 419600001"
    end
    runs[#runs + 1] = base .. lua .. " bin/kinot --endpoint 'http://agent:" .. PW .. "@h/a b' lockers"
    -- callback URLs with credentials, set, then read back and shown
    local sim_env = base .. "KINOT_APP_KEY=" .. sim.app_key .. " KINOT_APP_SECRET=" .. sim.app_secret ..
      " KINOT_ENDPOINT=" .. sim.endpoint .. " " .. lua .. " bin/kinot "
    local fine = {
      sim_env .. "notifications set --device-type 18 --status-url 'http://agent:" .. PW .. "@127.0.0.1:9/cb'",
      sim_env .. "notifications get 18", sim_env .. "--json notifications get 18",
      sim_env .. "notifications test 419600001",
    }
    runs[#runs + 1] = base .. "KINOT_ENDPOINT=" .. sim.endpoint .. " " .. lua ..
      " bin/kinot notifications set --device-type 18 --status-url 'http://agent:" .. PW .. "@h/a b'"
    local out = {}
    for _, r in ipairs(runs) do
      local p = io.popen(r .. " 2>&1; echo rc=$?")
      out[#out + 1] = p:read("*a")
      p:close()
    end
    local all = table.concat(out, "\n")
    assert.is_true(select(2, all:gsub("rc=[1-9]", "")) >= #runs - 2, all) -- they fail, and say why
    for _, r in ipairs(fine) do
      local p = io.popen(r .. " 2>&1; echo rc=$?")
      local o = p:read("*a")
      p:close()
      assert.matches("rc=0", o)
      assert.matches("<redacted>", o)
      all = all .. "\n" .. o
    end
    assert.is_nil(leaked(all), all)
    assert.is_nil(all:find(SECRET, 1, true))
  end)
end)

describe("injection and TLS defaults #unit", function()
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
