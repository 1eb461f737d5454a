-- kinot serve's dashboard API and commands, attacked (over real HTTP against
-- `kinot serve` in front of `kinot sim`, whose counters say what was sent):
-- a browser page of another site reaching the loopback-trusted API through
-- DNS rebinding (a Host that is not this server's), and a storm of commands
-- in course that used to take every running timer of a worker (the 257th
-- command's follow, and the sync loop, silently dropped by nginx).
local H = require "helpers"
local json = require "kinot.json"
local launcher = require "kinot.sim.launcher"

local TOKEN = "attack-spec-token-5e1d"

local sh = H.sh

-- serve(sim, token, extra) -> { url, port, prefix, stop() }: a `kinot serve --daemon` over the simulator, synced
local function serve(sim, token, extra) return H.serve(sim, { token = token, args = extra }) end

-- commands_host(o) -> nginx serving kinot.serve.commands alone: its records in a dict of o.dict (a size), its
-- client o.client (Lua source), more CTX fields o.ctx (source), CTX.spawn o.spawn (source; a timer a follow unless
-- given); the twin a stand-in (every serial a lock)
local function commands_host(o)
  return H.nginx {
    http = "lua_shared_dict cmds " .. o.dict .. ";\n" ..
      "init_worker_by_lua_block {\n" ..
      "  local mod = require 'kinot.serve.commands'\n" ..
      "  local client = " .. o.client .. "\n" ..
      "  CTX = { dict = ngx.shared.cmds, token = '" .. TOKEN .. "', now = ngx.now, client = client," .. (o.ctx or "") ..
      "\n    twin = { device = function(_, sn) return { sn = sn, kind = 'lock' } end } }\n" ..
      (o.spawn or "  function CTX.spawn(id) ngx.timer.at(0, function() mod.follow(CTX, id) end) end\n") ..
      "}",
    server = "location / { content_by_lua_block { require('kinot.serve.commands').nginx(CTX) } }",
  }
end

-- post_reset(url, sn, request_id) -> the answer to a POST of reset_bt_match_code for sn, with the token
local function post_reset(url, sn, id)
  return H.raw("POST", url .. "/api/devices/" .. sn .. "/commands",
    '{"command":"reset_bt_match_code","request_id":"' .. id .. '"}',
    { ["Content-Type"] = "application/json", Authorization = "Bearer " .. TOKEN })
end
-- post_reset_doc(url, sn, request_id) -> its status, its body decoded
local function post_reset_doc(url, sn, id)
  local res = post_reset(url, sn, id)
  return res.status, json.decode(res.body)
end

describe("kinot serve's token compared #unit", function()
  it("by the core's constant-time comparison, over digests of one length whatever the token's", function()
    local core = require "kinot.core"
    local api = require "kinot.serve.api"
    local calls = {}
    local real = core.ct_equal
    core.ct_equal = function(a, b)
      calls[#calls + 1] = { #a, #b }
      return real(a, b)
    end
    finally(function() core.ct_equal = real end)
    local secret = "the-real-token-0123456789"
    for _, given in ipairs { "x", secret:sub(1, -2), secret .. "x", ("y"):rep(#secret), secret } do
      local ok = api.allowed({ remote_addr = "10.1.2.3", authorization = "Bearer " .. given }, secret)
      assert.are.equal(given == secret, ok == true, given)
      ok = api.token_given({ remote_addr = "127.0.0.1", authorization = "Bearer " .. given }, secret)
      assert.are.equal(given == secret, ok == true, given)
    end
    assert.are.equal(10, #calls)
    for _, c in ipairs(calls) do assert.are.same({ 32, 32 }, c) end
  end)
end)

describe("kinot serve's API from a rebound name #nginx #sim #cli", function()
  local sim
  setup(function() sim = H.sim { locks = 3, sensors = 2, dtus = 1 } end)
  teardown(function() if sim then sim.stop() end end)

  it("trusts loopback only when the request names this server (Host), not a page's rebound name", function()
    local s = serve(sim, nil)
    finally(function() s.stop() end)
    -- what a browser sends after evil.example's DNS turned to 127.0.0.1: the connection is loopback,
    -- the page's origin (and its Host) is the attacker's, who may read what the answer holds
    for _, path in ipairs { "/api/fleet", "/api/devices", "/api/changes", "/metrics", "/api/commands/some-id-0000000001" } do
      local res = H.raw("GET", s.url .. path, nil, { Host = "evil.example:" .. s.port })
      assert.are.equal(401, res.status, path .. ": " .. res.body)
    end
    -- the names of this machine still answer from loopback without a token
    for _, host in ipairs { "127.0.0.1:" .. s.port, "localhost:" .. s.port, "127.0.0.1", "localhost", "[::1]:" ..
                            s.port, "LocalHost:" .. s.port } do
      local res = H.raw("GET", s.url .. "/api/fleet", nil, { Host = host })
      assert.are.equal(200, res.status, host .. ": " .. res.body)
    end
  end)

  it("answers a rebound name with the token (a reverse proxy's own name is given the token too)", function()
    local s = serve(sim, TOKEN)
    finally(function() s.stop() end)
    local res = H.raw("GET", s.url .. "/api/fleet", nil, { Host = "parking.example", Authorization = "Bearer " .. TOKEN })
    assert.are.equal(200, res.status, res.body)
    res = H.raw("GET", s.url .. "/api/fleet", nil, { Host = "parking.example" })
    assert.are.equal(401, res.status, res.body)
  end)
end)

describe("kinot serve's commands in a storm #nginx #sim #cli #slow", function()
  local N = 300 -- more than lua_max_running_timers (256) in course at once on one worker
  local sim
  setup(function() sim = H.sim { locks = N, sensors = 1, dtus = 1, command_pace = 5 } end)
  teardown(function() if sim then sim.stop() end end)

  it("follows every one of 300 commands in course at once to its end, and the sync loop keeps going", function()
    local s = serve(sim, TOKEN, "--workers 1 --sync-interval 1")
    finally(function() s.stop() end)
    local devices = H.json("GET", s.url .. "/api/devices?kind=lock&limit=1000").devices
    assert.are.equal(N, #devices)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local lines = {}
    for i, d in ipairs(devices) do
      lines[i] = string.format("%d %05d", d.sn, i)
    end
    local f = assert(io.open(dir .. "/jobs", "wb"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    -- 300 POSTs, 40 at a time
    local out = sh(string.format("cd %s && xargs -P 40 -L 1 sh -c 'curl -s -o /dev/null -w \"%%{http_code}\\n\" " ..
      "-H \"Authorization: Bearer %s\" -H \"Content-Type: application/json\" " ..
      "--data-binary \"{\\\"command\\\":\\\"reset_bt_match_code\\\",\\\"request_id\\\":\\\"storm-request-$1\\\"}\" " ..
      "%s/api/devices/$0/commands' < jobs", dir, TOKEN, s.url))
    os.execute("rm -rf " .. dir)
    local accepted = select(2, out:gsub("202", ""))
    assert.are.equal(N, accepted, out)
    local storm_at = (H.json("GET", s.url .. "/api/fleet")).synced_at
    -- every command final, each sent once
    local unfinished
    local all = H.wait_for(function()
      unfinished = {}
      for i = 1, N do
        local doc = H.json("GET", s.url .. string.format("/api/commands/storm-request-%05d", i))
        if not doc.final then unfinished[#unfinished + 1] = i end
      end
      return #unfinished == 0
    end, 40)
    assert.is_truthy(all, #unfinished .. " commands never final")
    assert.are.equal(N, sim.counters().commands_created)
    -- the sync loop (a timer of worker 0) survived the storm
    assert.is_truthy(H.wait_for(function()
      return (H.json("GET", s.url .. "/api/fleet")).synced_at ~= storm_at
    end, 10), "the sync loop died in the storm")
  end)
end)

describe("kinot serve's commands across a reload #nginx #sim #cli #slow", function()
  local sim
  setup(function() sim = H.sim { locks = 2, sensors = 1, dtus = 1, command_pace = 2 } end)
  teardown(function() if sim then sim.stop() end end)

  it("follows a command to its end when nginx reloads (HUP) while it is in course", function()
    local s = serve(sim, TOKEN, "--workers 1")
    finally(function() s.stop() end)
    local lock = H.json("GET", s.url .. "/api/devices?kind=lock").devices[1].sn
    local res = post_reset(s.url, lock, "reload-request-00001")
    assert.are.equal(202, res.status, res.body)
    assert.is_false(json.decode(res.body).final)
    local pid = tonumber(H.read(s.prefix .. "/nginx.pid"))
    assert(os.execute("kill -HUP " .. pid))
    local last
    local final = H.wait_for(function()
      last = H.json("GET", s.url .. "/api/commands/reload-request-00001")
      return last.final
    end, 30)
    assert.is_truthy(final, "never final after the reload: " .. json.encode(last))
    assert.are.equal("succeeded", last.status)
    assert.are.equal(1, sim.counters().commands_created)
  end)
end)

-- the commands' records in a lua_shared_dict that fills: real nginx, a real
-- dict (small, so that it fills in a few hundred commands), the real client
-- against the simulator; the twin is a stand-in (every serial is a lock: the
-- twin is not what is attacked here)
describe("kinot serve's commands when their dict is full #nginx #sim", function()
  local N = 400
  local sim
  setup(function() sim = H.sim { locks = N, sensors = 1, dtus = 1, command_pace = 0.2 } end)
  teardown(function() if sim then sim.stop() end end)

  it("never sends a command twice for one request_id, even after the dict has filled", function()
    local ng = commands_host { dict = "48k", client = "require('kinot').new { app_key = '" .. sim.app_key ..
      "', app_secret = '" .. sim.app_secret .. "', endpoint = '" .. sim.endpoint .. "' }" }
    finally(function() ng.stop() end)
    local locks = {}
    for i = 1, N do locks[i] = 419600000 + i end -- the simulator's locks
    local function post(i) return post_reset(ng.url, locks[i], string.format("full-dict-request-%05d", i)).status end
    -- twenty commands, followed to their end: their records the oldest in the dict
    for i = 1, 20 do assert.are.equal(202, post(i)) end
    os.execute("sleep 2")
    -- then as many as the dict takes, and more: refused (503) once it is full, each followed as it goes
    local seen, refused = {}, {}
    for i = 21, N do
      local st = post(i)
      seen[st] = (seen[st] or 0) + 1
      if st ~= 202 then refused[#refused + 1] = locks[i] end
    end
    local shown = {}
    for st, n in pairs(seen) do shown[#shown + 1] = st .. ": " .. n end
    assert.is_truthy(seen[503], "the dict never filled: " .. table.concat(shown, ", "))
    os.execute("sleep 2") -- every command followed to its end (their records grown)
    -- the first twenty again, as a page's retry would: each answered its record, nothing sent
    for i = 1, 20 do assert.are.equal(200, post(i)) end
    local by_sn = sim.counters().commands_by_sn
    local twice = {}
    for sn, n in pairs(by_sn) do if n > 1 then twice[#twice + 1] = sn .. " x" .. n end end
    assert.are.same({}, twice)
    -- and what the dict could not record was not sent
    for _, sn in ipairs(refused) do assert.is_nil(by_sn[tostring(sn)], sn) end
  end)
end)

describe("kinot serve's commands, hostile requests #nginx #sim #cli", function()
  local sim
  setup(function() sim = H.sim { locks = 3, sensors = 1, dtus = 1, command_pace = 0.1 } end)
  teardown(function() if sim then sim.stop() end end)

  local function command(s, sn, body, headers)
    headers = headers or {}
    if headers["Content-Type"] == nil then headers["Content-Type"] = "application/json" end
    return H.raw("POST", s.url .. "/api/devices/" .. sn .. "/commands", body, headers)
  end

  it("takes the Authorization scheme in any case (RFC 7235), never the token from the query", function()
    local s = serve(sim, TOKEN)
    finally(function() s.stop() end)
    local res = command(s, 419600001, '{"command":"reset_bt_match_code","request_id":"scheme-case-000001"}',
      { Authorization = "BEARER " .. TOKEN })
    assert.are.equal(202, res.status, res.body)
    res = H.raw("POST", s.url .. "/api/devices/419600002/commands?access_token=" .. TOKEN .. "&token=" .. TOKEN,
      '{"command":"reset_bt_match_code","request_id":"query-token-000001"}', { ["Content-Type"] = "application/json" })
    assert.are.equal(401, res.status, res.body)
    assert.are.equal(1, sim.counters().commands_created)
  end)

  it("answers a body too large for memory 413, before any token check reads it to disk", function()
    local s = serve(sim, TOKEN)
    finally(function() s.stop() end)
    -- a valid command padded to 20 KB: nginx put it in a file, read as no body ("must be a JSON object")
    local before = sim.counters().commands_created
    local body = '{"command":"reset_bt_match_code","request_id":"padded-body-000001"' .. (" "):rep(20000) .. "}"
    local res = command(s, 419600003, body, { Authorization = "Bearer " .. TOKEN })
    assert.are.equal(413, res.status, res.body)
    res = command(s, 419600003, body)
    assert.are.equal(413, res.status, res.body)
    assert.are.equal(before, sim.counters().commands_created)
  end)

  it("says nosniff on every JSON answer (an error echoes the path or the query)", function()
    local s = serve(sim, TOKEN)
    finally(function() s.stop() end)
    for _, path in ipairs { "/api/devices?%3Cimg%20src=x%20onerror=alert(1)%3E=1", "/api/commands/%3Cscript%3E",
                            "/api/fleet", "/metrics" } do
      local res = H.raw("GET", s.url .. path)
      assert.are.equal("nosniff", res.headers["x-content-type-options"], path)
    end
    local res = command(s, 419600001, "{}")
    assert.are.equal(401, res.status)
    assert.are.equal("nosniff", res.headers["x-content-type-options"])
  end)
end)

describe("kinot serve --api-token #cli #nginx #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 1, sensors = 1, dtus = 1 } end)
  teardown(function() if sim then sim.stop() end end)
  local function env(token)
    return string.format("KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_API_TOKEN=%s",
      sim.endpoint, sim.app_key, sim.app_secret, launcher.sh_quote(token))
  end

  it("refuses a token no Authorization header can carry (a space, a control), before starting", function()
    for _, token in ipairs { "two words", "tab\tinside", " " } do
      local out, err, rc = H.kinot("serve --listen 127.0.0.1:" .. launcher.free_port(), env(token))
      assert.are_not.equal(0, rc, out .. err)
      assert.matches("api%-token", err)
      assert.is_nil(out:match("/kinot/callback"), out)
    end
  end)

  it("says the commands are off when the token given is empty", function()
    local pid_file = os.tmpname()
    local out, err, rc = H.kinot("serve --daemon --pid-file " .. pid_file .. " --listen 127.0.0.1:" ..
      launcher.free_port() .. " --api-token ''", env(""))
    finally(function() H.kinot("serve stop --pid-file " .. pid_file) os.remove(pid_file) end)
    assert.are.equal(0, rc, out .. err)
    assert.matches("commands are off", out)
  end)
end)

-- serials past 10^14, each its own device: inside nginx (LuaJIT) a number
-- is written with 14 digits, so "sn:" .. sn made 100000000000001 and
-- 100000000000002 one key. The simulator has no such serial: the twin and
-- the client are stand-ins (a command in course for 2 s, then succeeded),
-- the dict and nginx real.
describe("kinot serve's commands, one in course per device, for long serials #nginx", function()
  it("keeps the devices 100000000000001 and 100000000000002 apart", function()
    local ng = commands_host { dict = "1m", client = "{ reset_bt_match_code = function(_, sn)\n" ..
      "      return { guid = string.format('%032d', sn), command_status = 'sending' } end,\n" ..
      "    wait_command = function(_, guid, o) ngx.sleep(2)\n" ..
      "      local c = { guid = guid, command_status = 'succeeded' } o.on_status(c) return c end }" }
    finally(function() ng.stop() end)
    local function post(sn, id) return post_reset_doc(ng.url, sn, id) end
    local status, doc = post("100000000000001", "long-serial-000001")
    assert.are.equal(202, status)
    assert.is_false(doc.final)
    status, doc = post("100000000000002", "long-serial-000002")
    assert.are.equal(202, status, json.encode(doc))
    -- the same device still refused while in course
    status, doc = post("100000000000001", "long-serial-000003")
    assert.are.equal(409, status)
    assert.are.equal("refused", doc.status)
  end)
end)

-- one request_id given to two devices at the same moment (two workers): the
-- one that claims it second must hear request_id_taken, not the record of the
-- other device's command as if it were its own. The moment between the
-- id's check and its claim is out of reach of a real race in a spec: the
-- twin's read stands for it (a stand-in twin whose device() lets the other
-- worker claim the id; the dict a stand-in with the shared dict's calls).
describe("kinot serve's commands, one id claimed twice at once #unit", function()
  it("answers the second claim 409 request_id_taken when the first was for another device", function()
    local commands = require "kinot.serve.commands"
    local store = {}
    local dict = {
      get = function(_, k) return store[k] end,
      set = function(_, k, v) store[k] = v return true end,
      safe_add = function(_, k, v) if store[k] then return false, "exists" end store[k] = v return true end,
      delete = function(_, k) store[k] = nil end,
    }
    local sent = 0
    local ctx
    ctx = { dict = dict, token = TOKEN, now = os.time, spawn = function() end,
      client = { reset_bt_match_code = function() sent = sent + 1 return { guid = ("a"):rep(32),
                 command_status = "sending" } end },
      twin = { device = function(_, sn)
        if sn == 419600002 and not store["req:same-moment-000001"] then
          -- the other worker, for another device, claims the id now
          assert.are.equal(202, (commands.handle(ctx, { method = "POST", path = "/api/devices/419600001/commands",
            body = '{"command":"reset_bt_match_code","request_id":"same-moment-000001"}',
            authorization = "Bearer " .. TOKEN })))
        end
        return { sn = sn, kind = "lock" }
      end } }
    local status, body = commands.handle(ctx, { method = "POST", path = "/api/devices/419600002/commands",
      body = '{"command":"reset_bt_match_code","request_id":"same-moment-000001"}', authorization = "Bearer " .. TOKEN })
    assert.are.equal(409, status, body)
    assert.are.equal("request_id_taken", json.decode(body).reason)
    assert.are.equal(1, sent)
  end)
end)

-- a command waiting in a worker's queue of follows (its followers all busy
-- with commands the platform is slow to end) keeps its device's mark: the
-- mark lasted 150 s from the POST, so a command queued longer left its
-- device open to a second one while it was still in course. nginx and the
-- dict real; the twin and the client stand-ins (the simulator cannot hold a
-- command for half a minute): device 1's command is followed for 32 s.
describe("kinot serve's commands queued behind slow ones #nginx #slow", function()
  it("refuses a second command for a device whose first waits in the queue past the mark's old life", function()
    local ng = commands_host { dict = "1m", ctx = " wait = 1,", client = "{ reset_bt_match_code = function(_, sn)\n" ..
      "      return { guid = string.format('%032d', sn), command_status = 'sending' } end,\n" ..
      "    wait_command = function(_, guid, o) ngx.sleep(tonumber(guid) == 1 and 32 or 0.2)\n" ..
      "      local c = { guid = guid, command_status = 'succeeded' } o.on_status(c) return c end }",
      spawn = "  CTX.spawn = mod.followers(CTX, 1, function(msg) ngx.log(ngx.ERR, msg) end)\n" }
    finally(function() ng.stop() end)
    local function post(sn, id) return post_reset_doc(ng.url, sn, id) end
    assert.are.equal(202, (post(1, "slow-one-00000001")))
    assert.are.equal(202, (post(2, "queued-one-000001"))) -- behind the slow one: the only follower is busy
    os.execute("sleep 31.5")
    local status, doc = post(2, "second-for-two-001")
    assert.are.equal(409, status, json.encode(doc))
    assert.are.equal("refused", doc.status)
    -- once followed to its end, the device takes another
    local done = H.wait_for(function()
      return H.json("GET", ng.url .. "/api/commands/queued-one-000001").final
    end, 10)
    assert.is_truthy(done)
    assert.are.equal(202, (post(2, "after-the-queue-01")))
  end)
end)
