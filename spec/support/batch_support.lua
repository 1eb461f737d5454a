-- What the batch specs (batch_spec, batch_attack_spec, batch_stream_spec)
-- share: serials from the simulator's first lock, a free temporary path,
-- a file's bytes, and the simulator's own count of the commands it made.
local json = require "kinot.json"
local assert = require "luassert" -- (a support module sees the global assert, not busted's)

local M = {}

M.FIRST = 419600001

--- serials(n) -> the first n locks of a simulator
function M.serials(n)
  local t = {}
  for i = 1, n do t[i] = M.FIRST + i - 1 end
  return t
end

--- tmpname() -> a path no file holds (a journal the batch creates)
function M.tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

--- read(p) -> the file's bytes, or nil
M.read = require("helpers").read

--- created(sim) -> commands the simulator created per serial, and the
-- serials given two or more
function M.created(sim)
  local by = sim.counters().commands_by_sn
  local per, twice = {}, {}
  if by ~= json.null then
    for sn, k in pairs(by) do
      per[tonumber(sn)] = k
      if k > 1 then twice[#twice + 1] = sn end
    end
  end
  return per, twice
end

--- resty_host(o) -> an nginx whose POST /batch ({ app_key, app_secret,
-- endpoint, n[, timeout] }: M.batch posts it) makes a client over resty
-- (o.client: more of kinot.new's options, Lua source) and runs o.send
-- (Lua source, with c the client and items the simulator's first n locks)
M.RESULTS = [[
          local out = {}
          for i, r in ipairs(results) do out[i] = { sn = r.sn, outcome = r.outcome, guid = r.guid or json.null } end
          ngx.say(json.encode { results = out, summary = summary })]]
function M.resty_host(o)
  return require("helpers").nginx {
    server = [[
        location = /batch { content_by_lua_block {
          local json = require "kinot.json"
          ngx.req.read_body()
          local a = json.decode(ngx.req.get_body_data())
          local c = require("kinot").new { app_key = a.app_key, app_secret = a.app_secret, endpoint = a.endpoint,
            transport = "resty", ]] .. o.client .. [[ }
          local items = {}
          for i = 1, a.n do items[i] = ]] .. (M.FIRST - 1) .. [[ + i end
]] .. o.send .. [[

        } }
      ]],
  }
end

--- batch(ng, sim, n[, timeout]) -> what ng's POST /batch answered (M.resty_host)
function M.batch(ng, sim, n, timeout)
  return require("helpers").json("POST", ng.url .. "/batch", { app_key = sim.app_key, app_secret = sim.app_secret,
                                                               endpoint = sim.endpoint, n = n, timeout = timeout })
end

--- agrees(results, per): every result agrees with the platform: a guid ->
-- 1 command; unknown -> 0 or 1; refused or never sent -> 0
function M.agrees(results, per)
  for _, r in ipairs(results) do
    local k = per[r.sn] or 0
    if r.outcome == "unknown" then
      assert.is_true(k <= 1, r.sn .. ": " .. k)
    elseif r.guid then
      assert.are.equal(1, k, r.sn .. " " .. tostring(r.outcome))
    else
      assert.are.equal(0, k, r.sn .. " " .. tostring(r.outcome) .. " " .. tostring(r.error))
    end
  end
end

return M
