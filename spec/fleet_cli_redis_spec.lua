-- `kinot fleet summary|devices|device SN|changes` read the twin in Redis
-- directly (--redis, $KINOT_REDIS_URL) as well as through a running `kinot
-- serve`: the same output, tables and --json, against a real redis-server
-- fed by a real `kinot serve --redis` synced with `kinot sim`.
local H = require "helpers"
local R = require "redis_server"
local launcher = require "kinot.sim.launcher"

local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return out:gsub("rc=%d+%s*$", ""), rc
end

describe("kinot fleet over Redis and over kinot serve #cli #sim #nginx #redis", function()
  local sim, rs, srv, pid_file, groups_file, sn
  setup(function()
    sim = H.sim { locks = 300, sensors = 100 }
    rs = R.start { password = "s3cret-pw" }
    local first = {}
    for d in sim.client():each_locker { limit = 100 } do
      first[#first + 1] = d.sn
      if #first == 6 then break end
    end
    sn = first[1]
    groups_file = os.tmpname()
    local f = assert(io.open(groups_file, "wb"))
    f:write("sn,zone,level,bay\n")
    for i, x in ipairs(first) do f:write(string.format("%d,%s,1,B-%d\n", x, i <= 3 and "A" or "B", i)) end
    f:close()
    local port = launcher.free_port()
    pid_file = os.tmpname()
    local out, rc = sh(string.format("cd %s && KINOT_ENDPOINT=%s KINOT_APP_KEY=%s KINOT_APP_SECRET=%s " ..
      "KINOT_REDIS_URL=%s %s bin/kinot serve --daemon --pid-file %s --listen 127.0.0.1:%d --groups %s " ..
      "--stale-after 1234", H.root, sim.endpoint, sim.app_key, sim.app_secret, rs.url, LUA, pid_file, port,
      groups_file))
    assert(rc == 0, out)
    srv = { url = "http://127.0.0.1:" .. port }
    assert(H.wait_for(function()
      local doc = H.json("GET", srv.url .. "/api/fleet")
      return doc and type(doc.synced_at) == "string"
    end, 15), "no first sync")
  end)
  teardown(function()
    if pid_file then
      sh(string.format("cd %s && %s bin/kinot serve stop --pid-file %s", H.root, LUA, pid_file))
      os.remove(pid_file)
    end
    if groups_file then os.remove(groups_file) end
    if rs then rs.stop() end
    if sim then sim.stop() end
  end)

  local function kinot(env, args)
    return sh(string.format("cd %s && env -u KINOT_REDIS_URL -u KINOT_SERVE_URL %s %s bin/kinot %s", H.root, env, LUA,
      args))
  end

  it("answers every query the same from Redis as from the server, tables and --json", function()
    local queries = { "fleet summary", "fleet devices --limit 20", "fleet devices --kind lock --occupied false",
                      "fleet devices --group A/1", "fleet devices --stale true --limit 3",
                      "fleet device " .. sn, "fleet changes --limit 10" }
    for _, q in ipairs(queries) do
      for _, mode in ipairs { "", "--json " } do
        local over_http, rc1 = kinot("", mode .. q .. " --url " .. srv.url)
        assert.are.equal(0, rc1, over_http)
        local over_redis, rc2 = kinot("", mode .. q .. " --redis " .. rs.url)
        assert.are.equal(0, rc2, over_redis)
        assert.are.equal(over_http, over_redis, mode .. q)
        local over_env = kinot("KINOT_REDIS_URL=" .. rs.url, mode .. q)
        assert.are.equal(over_http, over_env, "KINOT_REDIS_URL: " .. mode .. q)
      end
    end
    -- the settings the server's sync wrote: its groups and its stale_after
    local out = kinot("", "--json fleet summary --redis " .. rs.url)
    local doc = require("kinot.json").decode(out)
    assert.are.equal(1234, doc.stale_after)
    assert.are.same({ "A/1", "B/1" }, (function()
      local g = {}
      for k in pairs(doc.occupancy.groups) do g[#g + 1] = k end
      table.sort(g)
      return g
    end)())
    assert.are.equal(3, doc.occupancy.groups["A/1"].total)
  end)

  it("shows what the platform wrote escaped, never raw on the terminal", function()
    local fleet = require "kinot.fleet"
    local twin = fleet.new { store = "redis", redis = rs.client(), prefix = "hostile:" }
    assert(twin:put("lock", { { sn = 419655555, car_detected = 1, locked = 0, bt_mac = "\27]0;owned\7",
      bt_match_code = "\27[2J\27[31mred\r\nfake: line", updated_at = "2026-12-03T10:00:00+08:00" } }, "scan"))
    for _, q in ipairs { "fleet device 419655555", "fleet devices --kind lock" } do
      local out, rc = kinot("", q .. " --redis " .. rs.url .. " --prefix hostile:")
      assert.are.equal(0, rc, out)
      assert.is_nil(out:find("\27", 1, true), out)
      assert.is_nil(out:find("\7", 1, true), out)
      if q:find("device 4") then
        assert.matches("\\x1b]0;owned\\x07", out, 1, true)
        assert.matches("\\x1b[2J\\x1b[31mred\\x0d\\x0afake: line", out, 1, true)
      end
    end
  end)

  it("says which Redis failed without its password, and refuses --url with --redis", function()
    local port = launcher.free_port()
    local out, rc = kinot("", "fleet summary --redis redis://:s3cret-pw@127.0.0.1:" .. port .. "/0")
    assert.are_not.equal(0, rc, out)
    assert.matches("Redis at redis://%*%*%*@127.0.0.1:" .. port, out)
    assert.is_nil(out:find("s3cret-pw", 1, true), out)
    out, rc = kinot("", "fleet device 42 --redis " .. rs.url)
    assert.are.equal(3, rc, out)
    assert.matches("never seen", out)
    out, rc = kinot("", "fleet summary --redis " .. rs.url .. " --url " .. srv.url)
    assert.are.equal(2, rc, out)
    assert.matches("not both", out)
  end)
end)
