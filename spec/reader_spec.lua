-- One reader and one event builder (issue 18): every use of a callback
-- body reads it through the C scanner and builds its event's data with the
-- one builder (kinot.callback.scanner: build_data of the C API on Lua 5.4,
-- the FFI's build() on LuaJIT), and all of them give EQUAL events (the
-- whole event, data typed the same, integer or float kept apart) on 20,000
-- generated hostile bodies (seeded: a failure names its body, and the next
-- run makes the same):
--   verify           the default rule's fast path (FFI on LuaJIT, C API on 5.4)
--   check_rule       the same rule through kinot.callback.rules (the path of
--                    every other sign_rule)
--   every sign rule  the body signed under each of the credible rules,
--                    verified under it: the same event (a rule that signs
--                    "" or null members has them in its data, and only them)
--   discover         finds the rule each was signed with
--   monitor          verify = "monitor" with a wrong secret: the same event,
--                    verified = false
--   rebuild          the worker's event from the stored body
-- and, on LuaJIT, the FFI and the C API give the same members and data.
local callback = require "kinot.callback"
local rules = require "kinot.callback.rules"
local scanner = require "kinot.callback.scanner"
local core = require "kinot.core"
local json = require "kinot.json"
local FIELD_TYPES = require("kinot.vocabulary").fields.callback

local function read(path)
  local f = assert(io.open(path))
  local text = f:read("*a")
  f:close()
  return text
end

local SECRET = "9d4c2f7a1b3e5d6f8a0b2c4d6e8f0a1b"

local NAMES = { "sn", "guid", "reason", "locked", "voltage", "updated_at", "a&b", "c=d", "x", "y", "bt_mac",
                "commnad_status", "command_status", "device_type", "car_detected", "active", "", "\\u00e9t\\u00e9",
                "k\\\"q", "sign2", "\\u0000", "n\\/m" }
local VALUES = { '1', '"a&b"', '"ok"', '9007199254740993', '9007199254740991', '-9007199254740993', '-0', '-0.0',
                 '1.5', '3.6590', '""', 'null', '{"k":1}', '[1,2,]', '{"a":{"b":[null,{}]}}', '"x=y"', 'true',
                 'false', '"\\u0026"', '"\\ud83d\\ude00"', '3e2', '18', '34', '1e400', '-1e-400',
                 '123456789012345678901', '0.1e1', '"NULL"', '"2019-03-13T10:42:39+08:00"', '"\\t\\n"', '1E2',
                 '"\\u00zz"', '01', '-', '[', '"unterminated', '{"k":1,,}' }
-- the rules every body is also signed under (the default first)
local RULES = { "md5-key", "md5-secret+lower", "md5-bare+keep-empty+null-as-text", "hmac-sha256+base64",
                "hmac-md5", "md5-app_secret+null-as-empty" }

local seed = 20261203
local function rnd(n)
  seed = (seed * 48271) % 2147483647
  return seed % n + 1
end

-- a value as a string, whatever the runtime (integer or float kept apart)
local function ser(t)
  if type(t) ~= "table" then return tostring(t) .. (math.type and tostring(math.type(t)) or "") end
  local k = {}
  for a, b in pairs(t) do k[#k + 1] = tostring(a) .. "=" .. ser(b) end
  table.sort(k)
  return "{" .. table.concat(k, ",") .. "}"
end
-- an event, whole, as a string; `drop`: fields left out (those a path sets
-- its own way: the id of an unverified event, the secret_index of a rebuild)
local function whole(ev, err, drop)
  if not ev then return "refused " .. tostring(err and err.reason) end
  local t = {}
  for k, v in pairs(ev) do
    if not (drop and drop[k]) then t[k] = v end
  end
  return ser(t)
end

-- the body with the sign under rule (or a broken sign), as a string
local function body_of(parts, rule, hostile)
  local body = "{" .. table.concat(parts, ",") .. "}"
  if hostile == 1 then return body end -- no sign at all
  local sign = rules.sign(body, SECRET, rule)
  if not sign then return body end -- not readable: sent as it is
  if hostile == 2 then sign = sign:sub(2) .. "0" end -- a wrong sign
  return (body:gsub("}$", (#parts > 0 and "," or "") .. '"sign":"' .. sign .. '"}'))
end

describe("one reader and one event builder of callback bodies #unit", function()
  it("the pure-Lua member reader is gone: rules reads through the C scanner, the FFI on LuaJIT", function()
    if require("kinot.native") then
      assert.are_not.equal(scanner.members, core.callback_members) -- the FFI's fast path
    else
      assert.are.equal(scanner.members, core.callback_members)
    end
    local text = read("lua/kinot/callback/rules.lua")
    assert.is_nil(text:find("read_string", 1, true))
    assert.is_nil(text:find("read_container", 1, true))
    assert.is_truthy(text:find('require("kinot.callback.scanner").members', 1, true))
  end)

  it("one event builder: the data is typed in build_data (C API) and build() (FFI) only", function()
    -- the Lua builder of the other rules and the Lua data reader are gone
    for _, path in ipairs { "lua/kinot/callback/event.lua", "lua/kinot/callback/rules.lua",
                            "lua/kinot/callback/receiver.lua", "lua/kinot/callback/worker.lua" } do
      local text = read(path)
      assert.is_nil(text:find("signed_data", 1, true), path)
      assert.is_nil(text:find("coerce", 1, true), path)
      assert.is_nil(text:find("function M.data", 1, true), path)
      assert.is_nil(text:find("whole(", 1, true), path)
    end
    -- every path reaches the builder through scanner.verify or scanner.data
    local event = read("lua/kinot/callback/event.lua")
    assert.is_truthy(event:find("scanner.verify, scanner.data", 1, true))
    local p = io.popen("grep -rln 'build_data\\|kn_cb_convert' src lua")
    local found = {}
    for path in p:lines() do found[#found + 1] = path end
    p:close()
    table.sort(found)
    assert.are.same({ "lua/kinot/callback/scanner.lua", "lua/kinot/native.lua", "src/cbscan.c", "src/cbscan.h",
                      "src/lua_callback.c" }, found)
  end)

  it("members() between two data() calls changes no name: a recut name is refused whatever read it before", function()
    -- (the FFI keeps member names by the scanner's name slots, shared by
    -- members() and the builder; the C API checks a kept name's bytes)
    for _, order in ipairs { { "members", "data" }, { "data", "members", "data" } } do
      for round = 1, 300 do
        local bad = '{"a&b' .. round % 7 .. '":1,"x":"1"}'
        local good = '{"ab' .. round % 7 .. '":1,"x":"1"}'
        for _, call in ipairs(order) do
          if call == "members" then assert(scanner.members(bad)) assert(scanner.members(good))
          else
            local none, reason = scanner.data(bad, FIELD_TYPES)
            assert.is_nil(none)
            assert.are.equal("malformed", reason)
            assert.are.same({ ["ab" .. round % 7] = 1, x = "1" }, assert(scanner.data(good, FIELD_TYPES)))
          end
        end
        local members = assert(scanner.members(good))
        assert.are.equal("ab" .. round % 7, members[1].key)
      end
    end
  end)

  it("kinot.callback is the front: no module under it requires it back", function()
    local p = io.popen("ls lua/kinot/callback/*.lua")
    for path in p:lines() do
      if not path:find("init.lua", 1, true) then
        local text = read(path)
        assert.is_nil(text:find('require%s*%(?%s*"kinot%.callback"'), path .. " requires kinot.callback")
      end
    end
    p:close()
  end)

  it("verify, every sign rule, discover, monitor and rebuild give equal events on 20,000 hostile bodies", function()
    local diff, verified, refused, kept = {}, 0, 0, 0
    local default = rules.rule("md5-key")
    local function differ(body, a, an, b, bn)
      if a ~= b then diff[#diff + 1] = body .. "\n  " .. an .. " " .. a .. "\n  " .. bn .. " " .. b end
    end
    -- verify = "monitor" with the wrong secret: every body fails its sign
    local monitor = callback.receiver {
      secret = "not-the-secret", verify = "monitor", max_age = false, out_of_order = false,
      on_status = function() return true end, on_command = function() return true end,
      store = { claim = function() return "new", true end, settle = function() return true end },
    }
    local ffi = require("kinot.native") and true
    for _ = 1, 20000 do
      local parts, used = {}, {}
      for _ = 1, rnd(7) - 1 do
        local n = NAMES[rnd(#NAMES)]
        if not used[n] or rnd(20) == 1 then -- now and then a duplicate key
          used[n] = true
          parts[#parts + 1] = '"' .. n .. '":' .. VALUES[rnd(#VALUES)]
        end
      end
      if rnd(30) == 1 then parts[#parts + 1] = "" end -- a trailing comma
      local hostile = rnd(12) -- 1: no sign, 2: a wrong sign
      local body = body_of(parts, default, hostile)
      local ev, err = callback.verify(body, { secret = SECRET })
      local want = whole(ev, err)
      if ev then verified = verified + 1 else refused = refused + 1 end
      -- the default rule through kinot.callback.rules
      differ(body, want, "verify", whole(callback.check_rule(body, { SECRET }, default, callback.MAX_BODY)), "rules")
      -- on LuaJIT: the FFI's members and data are the C API's
      if ffi then
        differ(body, ser(core.callback_members(body) or "refused"), "C API members",
          ser(scanner.members(body) or "refused"), "FFI members")
        for _, keep in ipairs { { false, false }, { true, true } } do
          local a, an = core.callback_data(body, FIELD_TYPES, keep[1], keep[2])
          local b, bn = scanner.data(body, FIELD_TYPES, keep[1], keep[2])
          differ(body, ser(a or an), "C API data", ser(b or bn), "FFI data")
        end
      end
      -- verify = "monitor": the same event, unverified, or the same refusal
      local _, _, mev, merr = monitor:receive(body)
      if ev then
        differ(body, whole(ev, nil, { id = true, secret_index = true, verified = true }), "verify",
          whole(mev, merr, { id = true, secret_index = true, verified = true }), "monitor")
        if not (mev and mev.verified == false and mev.id:find("^unverified:")) then
          diff[#diff + 1] = body .. "\n  monitor did not flag its event unverified"
        end
      elseif err.reason == "malformed" or err.reason == "no_sign" or err.reason == "bad_sign" then
        -- (a body verify cannot read is refused the same under monitor)
        local UNVERIFIED = { id = true, secret_index = true, verified = true }
        local rev, rerr = callback.rebuild(body, "id")
        differ(body, whole(rev, rerr, UNVERIFIED), "rebuild", whole(mev, merr, UNVERIFIED), "monitor")
        if mev and mev.verified ~= false then diff[#diff + 1] = body .. "\n  monitor did not flag its event" end
      else
        differ(body, want, "verify", whole(mev, merr), "monitor")
      end
      if ev then
        -- the worker's rebuild of the stored body: all but the secret's index
        differ(body, whole(ev, nil, { secret_index = true }), "verify", whole(callback.rebuild(body, ev.id)), "rebuild")
        -- every other rule: the same event; discover names the rule
        local members = assert(rules.members(body))
        for i = 2, #RULES do
          local rule = rules.rule(RULES[i])
          local signed = body_of(parts, rule, 0)
          local uev, uerr = callback.verify(signed, { secret = SECRET, sign_rule = RULES[i] })
          -- a rule that signs "" or null members has them in its data, and only them
          local extra = {}
          for _, m in ipairs(members) do
            if m.key ~= "sign" and m.kind == "null" and rule.null ~= "skip" then extra[m.key] = json.null end
            if m.kind == "string" and m.text == "" and rule.empty == "keep" then extra[m.key] = "" end
          end
          if next(extra) == nil then
            differ(signed, whole(ev, nil, { id = true }), "md5-key", whole(uev, uerr, { id = true }), RULES[i])
          else
            kept = kept + 1
            local typed_empty = false
            for k, v in pairs(extra) do
              if v == "" and FIELD_TYPES[k] and FIELD_TYPES[k] ~= "string" then typed_empty = true end
            end
            if typed_empty then -- "" in an int or float field it signs: malformed
              differ(signed, "refused malformed", "want", whole(uev, uerr), RULES[i])
            elseif not uev then
              diff[#diff + 1] = signed .. "\n  " .. RULES[i] .. " refused: " .. uerr.reason
            else
              local data = {}
              for k, v in pairs(ev.data) do data[k] = v end
              for k, v in pairs(extra) do data[k] = v end
              -- (the event gives the platform's commnad_status spelt right too)
              if data.command_status == nil then data.command_status = data.commnad_status end
              differ(signed, ser(data), "md5-key + kept", ser(uev.data), RULES[i])
            end
          end
          local report = callback.discover(signed, SECRET)
          local found = false
          for _, m in ipairs(report and report.matches or {}) do
            -- (a modifier the body cannot tell, as keep-empty on a body
            -- without "", is left out of the name and listed undetermined)
            local have = {}
            for part in rule.name:gmatch("[^+]+") do have[part] = true end
            local all = true
            for part in m.name:gmatch("[^+]+") do all = all and have[part] == true end
            if all then found = true end
          end
          if not found then diff[#diff + 1] = signed .. "\n  discover missed " .. rule.name end
        end
      end
      if #diff > 5 then break end
    end
    assert.are.same({}, diff)
    -- the generator reaches every side
    assert.is_true(verified > 2000, "verified " .. verified)
    assert.is_true(refused > 2000, "refused " .. refused)
    assert.is_true(kept > 500, "bodies with members only a keeping rule signs: " .. kept)
  end)
end)
