-- The resty transport (inside nginx) sends a batch's requests at once, as
-- curl's does elsewhere: each_locker's `concurrency` pages are in flight
-- together (kinot serve's sync depends on it), seen through the client's
-- on_event (a page asked as soon as one is in),
-- against the real simulator; failures keep their place in the batch.
local H = require "helpers"

describe("the resty transport's batches inside nginx #nginx #sim", function()
  local sim, ng
  setup(function()
    sim = H.sim { locks = 200 }
    ng = H.nginx {
      http = "init_by_lua_block { SIM = { key = '" .. sim.app_key .. "', secret = '" .. sim.app_secret ..
             "', endpoint = '" .. sim.endpoint .. "' } }",
      server = [[
        location = /pages { content_by_lua_block {
          local kinot = require "kinot"
          local seen = {}
          local c = kinot.new { app_key = SIM.key, app_secret = SIM.secret, endpoint = SIM.endpoint,
                                paging = "page0", on_event = function(ev) seen[#seen + 1] = ev.type:sub(1, 3) end }
          local n = 0
          for _ in c:each_locker { limit = 20, concurrency = 4 } do n = n + 1 end
          ngx.say(n, " ", table.concat(seen, ","))
        } }
        location = /mixed { content_by_lua_block {
          local kinot = require "kinot"
          local c = kinot.new { app_key = SIM.key, app_secret = SIM.secret, endpoint = SIM.endpoint, retries = 0 }
          local calls = {}
          for i, path in ipairs { "/lockers/419600001", "/lockers/419600002", "/no/such/path", "/lockers/419600004" } do
            calls[i] = { method = "GET", path = path, idempotent = true }
          end
          local got = require("kinot.request").perform_many(c, calls)
          local out = {}
          for i = 1, #got do
            out[i] = got[i][1] and "ok" or got[i][2].kind
          end
          ngx.say(table.concat(out, " "))
        } }
      ]],
    }
  end)
  teardown(function()
    if ng then ng.stop() end
    if sim then sim.stop() end
  end)

  it("keeps each_locker's `concurrency` pages in flight: a page asked as soon as one is in", function()
    local res = H.raw("GET", ng.url .. "/pages")
    assert.are.equal(200, res.status, ng.log())
    local n, seen = res.body:match("^(%d+) (.-)%s*$")
    assert.are.equal("200", n, res.body)
    -- 10 pages: the first alone (the count comes with it), then 4 at
    -- once, then the next as room is made, never more than 4 out (which
    -- answers come before the caller's turn is the scheduler's: that no
    -- round waits for its slowest, spec/pager_window_spec.lua shows)
    assert.matches("^req,res,req,req,req,req,res", seen)
    local out, most, reqs = 0, 0, 0
    for ev in seen:gmatch("%a+") do
      out = out + (ev == "req" and 1 or -1)
      if ev == "req" then reqs = reqs + 1 end
      most = math.max(most, out)
    end
    assert.are.same({ 4, 10, 0 }, { most, reqs, out })
  end)

  it("keeps each answer and each failure in its place", function()
    local res = H.raw("GET", ng.url .. "/mixed")
    assert.are.equal(200, res.status, ng.log())
    local third = res.body:match("^ok ok ([%w_]+) ok%s*$")
    assert.is_string(third, res.body)
    assert.are_not.equal("ok", third)
  end)
end)
