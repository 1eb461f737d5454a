-- The platform's vocabulary lives in one module, lua/kinot/vocabulary.lua:
-- the device type codes (18, 34 and the reference's unexplained 38), the
-- `commnad_status` spelling, the fault-flag list and the "NULL" of a
-- command_resp without a reason.  This spec reads every
-- other Lua file under lua/kinot, token by token (comments left out: prose
-- may name a code), and fails on any of them; an allow-list names the few
-- places that must stay, and why.  Then it checks that the modules that
-- used to hold a copy read the vocabulary and still give what they gave.
local H = require "helpers"
local vocabulary = require "kinot.vocabulary"

-- ------------------------------------------------------------ a small Lua lexer

-- tokens(src) -> list of { kind = "number" | "string" | "name" | "other", text, line }
local function tokens(src)
  local out, i, line, n = {}, 1, 1, #src
  local function add(kind, text) out[#out + 1] = { kind = kind, text = text, line = line } end
  local function long_bracket(at)
    local eq = src:match("^%[(=*)%[", at)
    if not eq then return nil end
    local close = "]" .. eq .. "]"
    local s = at + #eq + 2
    local e = src:find(close, s, true)
    assert(e, "unclosed long bracket at line " .. line)
    return src:sub(s, e - 1), e + #close
  end
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then
      line, i = line + 1, i + 1
    elseif c:match("%s") then
      i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local body, after = long_bracket(i + 2)
      if body then
        local _, nl = body:gsub("\n", "")
        line, i = line + nl, after
      else
        i = (src:find("\n", i, true) or n + 1)
      end
    elseif c == "[" and src:match("^%[=*%[", i) then
      local body, after = long_bracket(i)
      add("string", body)
      local _, nl = body:gsub("\n", "")
      line, i = line + nl, after
    elseif c == '"' or c == "'" then
      local j, buf = i + 1, {}
      while true do
        local d = src:sub(j, j)
        assert(d ~= "" and d ~= "\n", "unclosed string at line " .. line)
        if d == "\\" then
          local e = src:sub(j + 1, j + 1)
          if e == "z" then
            j = src:find("%S", j + 2) or n + 1
          elseif e:match("%d") then
            local digits = src:match("^%d%d?%d?", j + 1)
            buf[#buf + 1] = string.char(tonumber(digits))
            j = j + 1 + #digits
          elseif e == "x" then
            buf[#buf + 1] = string.char(tonumber(src:sub(j + 2, j + 3), 16))
            j = j + 4
          else
            if e == "\n" then line = line + 1 end
            buf[#buf + 1] = ({ n = "\n", t = "\t", r = "\r" })[e] or e
            j = j + 2
          end
        elseif d == c then
          break
        else
          buf[#buf + 1] = d
          j = j + 1
        end
      end
      add("string", table.concat(buf))
      i = j + 1
    elseif c:match("%d") or (c == "." and src:sub(i + 1, i + 1):match("%d")) then
      local num = src:match("^0[xX][%x%.]+[pP][-+]?%d+", i) or src:match("^0[xX][%x%.]+", i)
        or src:match("^%d*%.?%d+[eE][-+]?%d+", i) or src:match("^%d+%.?%d*[eE][-+]?%d+", i)
        or src:match("^%d*%.?%d*", i)
      add("number", num)
      i = i + #num
    elseif c:match("[%a_]") then
      local name = src:match("^[%w_]+", i)
      add("name", name)
      i = i + #name
    else
      add("other", c)
      i = i + 1
    end
  end
  return out
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function lua_files()
  local p = assert(io.popen("cd " .. H.root .. " && find lua/kinot -name '*.lua' | sort"))
  local files = {}
  for f in p:lines() do files[#files + 1] = f end
  p:close()
  return files
end

local CODES = { [18] = true, [34] = true, [38] = true }
local FAULT_NAMES = {}
for _, list in pairs(vocabulary.faults) do
  for _, f in ipairs(list) do FAULT_NAMES[f] = true end
end
local SPELLING = "commnad_status"

-- file -> { line text pattern -> why }: the places that must stay
local ALLOW = {
  -- (the pure-Lua JSON reader whose bytes and digit counts stood here is
  -- gone: kinot.callback.rules reads through the C scanner)
  ["lua/kinot/sim/fleet.lua"] = {
    { 'host = "218%.204%.252%.18:44062"', "the reference's example DTU address, not a device code" },
  },
}

local function allowed(file, text)
  for _, a in ipairs(ALLOW[file] or {}) do
    if text:find(a[1]) then return a[2] end
  end
end

local function offences(file)
  local src = read(H.root .. "/" .. file)
  local lines = {}
  for l in (src .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  local found = {}
  for _, t in ipairs(tokens(src)) do
    local why
    if t.kind == "number" and CODES[tonumber(t.text)] then
      why = "the device code " .. t.text
    elseif t.kind == "string" then
      for code in pairs(CODES) do
        if t.text:find("%f[%w]" .. code .. "%f[%W]") then why = "the device code " .. code .. " in a string" end
      end
      if t.text:find(SPELLING, 1, true) then why = "the spelling " .. SPELLING end
      if FAULT_NAMES[t.text] then why = "the fault flag \"" .. t.text .. "\" (a fault-flag list)" end
      if t.text == vocabulary.NO_REASON then why = "the text " .. t.text .. " (a command_resp without a reason)" end
    elseif t.kind == "name" and t.text == SPELLING then
      why = "the spelling " .. SPELLING
    end
    if why and not allowed(file, lines[t.line] or "") then
      found[#found + 1] = file .. ":" .. t.line .. ": " .. why .. ": " .. (lines[t.line] or ""):gsub("^%s+", "")
    end
  end
  return found
end

describe("the vocabulary in one place #unit", function()
  it("the lexer sees numbers, strings and names, and skips comments", function()
    local t = tokens("local a = 18 -- 34\n--[[ 38 ]] b = '34 x' .. [==[ commnad_status ]==] .. 0x22 .. c.commnad_status")
    local got = {}
    for _, x in ipairs(t) do if x.kind ~= "other" then got[#got + 1] = x.kind .. ":" .. x.text end end
    assert.are.same({ "name:local", "name:a", "number:18", "name:b", "string:34 x", "string: commnad_status ",
                      "number:0x22", "name:c", "name:commnad_status" }, got)
    assert.are.equal(2, t[#t].line)
  end)

  it("no module under lua/kinot but vocabulary.lua spells a device code, commnad_status or a fault flag", function()
    local files = lua_files()
    assert.is_true(#files > 30, "found only " .. #files .. " files")
    local all = {}
    for _, f in ipairs(files) do
      if f ~= "lua/kinot/vocabulary.lua" then
        for _, o in ipairs(offences(f)) do all[#all + 1] = o end
      end
    end
    assert.are.same({}, all)
  end)

  it("the check finds what it looks for (vocabulary.lua itself has each)", function()
    local o = table.concat(offences("lua/kinot/vocabulary.lua"), "\n")
    assert.matches("the device code 18", o, 1, true)
    assert.matches("the device code 34", o, 1, true)
    assert.matches("the device code 38", o, 1, true)
    assert.matches("the spelling commnad_status", o, 1, true)
    assert.matches("the fault flag \"motor_fail\"", o, 1, true)
    assert.matches("the text NULL", o, 1, true)
  end)

  it("every allow-listed line is still there (no stale excuse)", function()
    for file, list in pairs(ALLOW) do
      local src = read(H.root .. "/" .. file)
      for _, a in ipairs(list) do assert.is_truthy(src:find(a[1]), file .. ": " .. a[1]) end
    end
  end)
end)

describe("the modules read the vocabulary #unit", function()
  local validate = require "kinot.validate"
  local errors = require "kinot.errors"

  it("validate.device_type takes the codes and the names the vocabulary gives", function()
    for code in pairs(vocabulary.device_types) do assert.are.equal(code, validate.device_type(code)) end
    for name, code in pairs(vocabulary.device_names) do assert.are.equal(code, validate.device_type(name)) end
    assert.are.same({ 18, 18, 34 }, { validate.device_type("lock"), validate.device_type("locker"), validate.device_type(34) })
    local ok, e = pcall(validate.device_type, 38)
    assert.is_false(ok)
    assert.is_true(errors.is_misuse(e))
    assert.are.equal("kinot: device_type must be 18 (lock), 34 (sensor), \"lock\" or \"sensor\" (got 38)", tostring(e))
  end)

  it("the simulator's fleet renders the members in the vocabulary's order", function()
    local fleet = require "kinot.sim.fleet"
    assert.are.equal(vocabulary.device_codes, fleet.DEVICE_TYPE)
    local f = fleet.new { locks = 1, sensors = 1, dtus = 1 }
    for _, kind in ipairs { "lock", "sensor", "dtu" } do
      local text = f:render_device(kind, f:device(kind, 1))
      local keys = {}
      for k in text:gmatch('"([%w_]+)":') do keys[#keys + 1] = k end
      assert.are.same(vocabulary.order[kind], keys, kind)
    end
  end)

  it("each device's member order names every field of its table, and the fault flags are its fields", function()
    for _, kind in ipairs { "lock", "sensor", "dtu" } do
      local listed = {}
      for _, k in ipairs(vocabulary.order[kind]) do listed[k] = true end
      for k in pairs(vocabulary.fields[kind]) do assert.is_true(listed[k], kind .. "." .. k) end
    end
    for kind, flags in pairs(vocabulary.faults) do
      for _, f in ipairs(flags) do assert.are.equal("int", vocabulary.fields[kind][f], kind .. "." .. f) end
    end
    assert.are.equal(vocabulary.COMMAND_STATUS_AS_SENT, vocabulary.order.command_resp[3])
  end)

  it("the report counts each device's fault flags as the vocabulary lists them", function()
    local report = require "kinot.cli.report"
    local lock = { sn = 1, rs_si = -1, car_detected = 1 }
    for _, f in ipairs(vocabulary.faults.lock) do lock[f] = 1 end
    local sensor = { sn = 2, rs_si = -1, active = 1, shell_opened = 1 } -- not a sensor's fault
    for _, f in ipairs(vocabulary.faults.sensor) do sensor[f] = 1 end
    local function each(list)
      return function() local i = 0 return function() i = i + 1 return list[i] end end
    end
    local client = { each_locker = each { lock }, each_sensor = each { sensor } }
    local r = report.build(client, {})
    local want_lock, want_sensor = {}, {}
    for _, f in ipairs(vocabulary.faults.lock) do want_lock[f] = 1 end
    for _, f in ipairs(vocabulary.faults.sensor) do want_sensor[f] = 1 end
    assert.are.same(want_lock, r.locks.faults)
    assert.are.same(want_sensor, r.sensors.faults)
  end)
end)
