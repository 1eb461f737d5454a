-- The SDK's one JSON writer (kinot.json.encode, in the C core) against
-- three judges, on 20,000 seeded random values: nested lists and objects,
-- integers at the 2^53 edges (and a Lua 5.4 integer's), floats of every
-- magnitude with subnormals and -0.0, strings of every byte 0-255 and
-- invalid UTF-8, names of any bytes:
--   - python3's json module (strict: no NaN, no control byte in a string,
--     no repeated name) reads each text back to the value written;
--   - kinot.json.decode reads each back to the value written;
--   - the two Lua writers it replaced (spec/support/json_oracle.lua: the
--     sorted kinot.json.encode and the CLI's shape-ordered writer) give the
--     same bytes for every value, and the same refusal for what JSON cannot
--     carry (NaN, a function, a table inside itself, a mixed table ...).
-- "The value written" is compared with Lua's ==: an integral float goes
-- out as an integer (-0.0 as 0), which == keeps equal.
local json = require "kinot.json"
local oracle = require "json_oracle"
local output = require "kinot.cli.output"

local N = 20000
local mtype = math.type

-- ------------------------------------------------------------ random values

local seed = 20261203
local function rand(n) -- an LCG: the same draws on every run and both runtimes
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n
end

local function bytes(len, any)
  local t = {}
  for i = 1, len do
    local r = rand(10)
    if any or r < 4 then t[i] = string.char(rand(256))             -- every byte, invalid UTF-8 too
    elseif r < 6 then t[i] = ({ '"', "\\", "/", "\127", "\0", "\n", "\31", "\128", "\255" })[1 + rand(9)]
    elseif r < 8 then t[i] = ({ "é", "京", "🚗", "\226\128\174", "\194\155", "\237\160\128" })[1 + rand(6)]
    else t[i] = string.char(97 + rand(26)) end
  end
  return table.concat(t)
end

local function mantissa() return rand(2 ^ 26) * 2 ^ 27 + rand(2 ^ 27) end -- 53 random bits

local EDGES = { 2 ^ 53, -2 ^ 53, 2 ^ 53 - 1, -(2 ^ 53 - 1), 2 ^ 53 + 2, -(2 ^ 53 + 2), 2 ^ 52 + 0.5, 2 ^ 63, -2 ^ 63,
                0.0, -0.0, 5e-324, -5e-324, 2.2250738585072009e-308, 2.2250738585072014e-308, 1.7976931348623157e308,
                0.1, 0.30000000000000004, 123456789012345.6, 1e15, 1e16, 1e21, 1e22, 1e23, 3.659, -109.5 }

local function number()
  local r = rand(12)
  if r == 0 then return EDGES[1 + rand(#EDGES)] end
  if r == 1 and mtype then -- a Lua 5.4 integer of any size
    local i = math.tointeger(rand(2 ^ 31)) * math.tointeger(2 ^ 32) + math.tointeger(rand(2 ^ 31))
    return ({ i, -i, math.maxinteger, math.mininteger, math.tointeger(2 ^ 53) + 1, -math.tointeger(2 ^ 53) - 1 })[1 + rand(6)]
  end
  if r <= 3 then return rand(2 ^ 31) - 2 ^ 30 end                              -- an integer (a float on LuaJIT)
  if r == 4 then return (rand(2) == 0 and 1 or -1) * (mantissa() % 2 ^ 52) * 2 ^ -1074 end -- subnormal
  if r == 5 then return (rand(2000000) - 1000000) / 10 ^ rand(7) end           -- a reading: 3.659, -48.1
  local v = mantissa() * 2 ^ (rand(2045) - 1074)                                -- any magnitude
  return rand(2) == 0 and -v or v
end

local function name()
  if rand(3) == 0 then return ({ "sn", "voltage", "objects", "a", "b", "zz", "updated_at", "_x1" })[1 + rand(8)] end
  return bytes(rand(8), rand(2) == 0)
end

local value
function value(depth)
  local r = rand(depth > 4 and 7 or 10)
  if r <= 1 then return number() end
  if r <= 3 then return bytes(rand(24), rand(3) == 0) end
  if r == 4 then return rand(2) == 0 end
  if r == 5 then return json.null end
  if r == 6 then return number() end
  if r == 7 then
    local t = {}
    for i = 1, rand(6) do t[i] = value(depth + 1) end
    return t
  end
  local t = {}
  for _ = 1, rand(7) do t[name()] = value(depth + 1) end
  return t
end

-- a shape for v as the CLI would give one: an order naming some of its
-- names (and some it lacks), shapes of members and items
local function shape_for(v, depth)
  if type(v) ~= "table" or depth > 6 then return nil end
  local s = {}
  if rand(3) == 0 then s.items = shape_for(v[1], depth + 1) or {} end
  local names, seen = {}, {}
  for k in pairs(v) do if type(k) == "string" then names[#names + 1] = k end end
  table.sort(names)
  if #names > 0 or rand(2) == 0 then
    s.order = {}
    for _ = 1, rand(#names + 3) do
      local k = (#names > 0 and rand(3) > 0) and names[1 + rand(#names)] or name()
      if not seen[k] then seen[k], s.order[#s.order + 1] = true, k end
    end
    s.fields = {}
    for _, k in ipairs(names) do if rand(2) == 0 then s.fields[k] = shape_for(v[k], depth + 1) end end
  end
  if #v > 0 then s.items = shape_for(v[1], depth + 1) or s.items end
  return s
end

-- what JSON cannot carry, put somewhere in v: the refusals must match
local function poisoned(v)
  local bad = ({ 0 / 0, -(0 / 0), math.huge, -math.huge, print, coroutine.create(print), io.stdout })[1 + rand(7)]
  local r = rand(6)
  if r == 0 then
    local t = {}
    t.self = { inner = t }
    bad = t
  elseif r == 1 then
    bad = ({ { 1, 2, x = 3 }, { [2] = 1 }, { [1.5] = 1 }, { [true] = 1 } })[1 + rand(4)]
  elseif r == 2 then -- deeper than 1000
    bad = {}
    for _ = 1, 1000 + rand(3) do bad = { bad } end
  end
  -- down a random path of v, then in place of a member or an item
  local t = v
  while type(t) == "table" do
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    if #keys == 0 or rand(3) == 0 then
      if #t > 0 or #keys == 0 then t[#t + 1] = bad else t[name()] = bad end
      return v
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local k = keys[1 + rand(#keys)]
    if type(t[k]) ~= "table" then
      t[k] = bad
      return v
    end
    t = t[k]
  end
  return type(v) == "table" and v or { v, bad }
end

-- ------------------------------------------------------------ comparing
local message

-- (as_read: kinot.json.decode reads a number of over 18 characters as a
-- float, the nearest double, which a Lua 5.4 integer that long becomes)
local function equal(a, b, where, as_read)
  if as_read and mtype and mtype(a) == "integer" and #tostring(a) > 18 then a = a + 0.0 end
  if type(a) == "table" and type(b) == "table" then
    for k, v in pairs(a) do
      local ok, why = equal(v, b[k], where .. "[" .. tostring(k) .. "]", as_read)
      if not ok then return false, why end
    end
    for k in pairs(b) do if a[k] == nil then return false, where .. ": extra " .. tostring(k) end end
    return true
  end
  if a == b then return true end
  return false, string.format("%s: %s ~= %s", where, tostring(a), tostring(b))
end

function message(f)
  local ok, err = pcall(f)
  if ok then return nil end
  assert(type(err) == "table" and err.kind == "misuse", "not a misuse: " .. tostring(err))
  return err.message
end

-- python3's reading of each line, as a tagged text this reads back
local PY = [[
import json, sys
def no_constant(c): raise ValueError("constant " + c)
def pairs_once(pairs):
    d = {}
    for k, v in pairs:
        if k in d: raise ValueError("repeated name")
        d[k] = v
    return d
def b(s): return s.encode("utf-8", "surrogateescape").hex()
def tag(v):
    if v is None: return "n"
    if v is True: return "t"
    if v is False: return "f"
    if isinstance(v, int): return "i%d;" % v
    if isinstance(v, float): return "d%r;" % v
    if isinstance(v, str): return "s%s;" % b(v)
    if isinstance(v, list): return "[" + "".join(tag(x) for x in v) + "]"
    return "{" + "".join("s%s;%s" % (b(k), tag(x)) for k, x in sorted(v.items())) + "}"
out = open(sys.argv[2], "w")
for line in open(sys.argv[1], "rb").read().split(b"\n")[:-1]:
    text = line.decode("utf-8", "surrogateescape")
    out.write(tag(json.loads(text, strict=True, parse_constant=no_constant, object_pairs_hook=pairs_once)) + "\n")
]]

local function untag(s)
  local i = 1
  local function hex(h) return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end)) end
  local read
  function read()
    local c = s:sub(i, i)
    i = i + 1
    if c == "n" then return json.null end
    if c == "t" then return true end
    if c == "f" then return false end
    if c == "i" or c == "d" or c == "s" then
      local j = s:find(";", i, true)
      local body = s:sub(i, j - 1)
      i = j + 1
      if c == "s" then return hex(body) end
      return assert(tonumber(body), body)
    end
    local t = {}
    if c == "[" then
      while s:sub(i, i) ~= "]" do t[#t + 1] = read() end
    else
      while s:sub(i, i) ~= "}" do
        local k = read()
        t[k] = read()
      end
    end
    i = i + 1
    return t
  end
  return read()
end

describe("kinot.json.encode against python3, its own reader and the writers it replaced #unit", function()
  local values, shapes, texts = {}, {}, {}
  setup(function()
    for i = 1, N do
      values[i] = value(0)
      if rand(2) == 0 then shapes[i] = shape_for(values[i], 0) end
      texts[i] = json.encode(values[i], shapes[i])
    end
  end)

  it("writes text python3's strict json module reads back to the value written", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    finally(function() os.execute("rm -rf " .. dir) end)
    local f = assert(io.open(dir .. "/in", "wb"))
    for i = 1, N do f:write(texts[i], "\n") end
    f:close()
    f = assert(io.open(dir .. "/read.py", "wb"))
    f:write(PY)
    f:close()
    local p = io.popen("python3 " .. dir .. "/read.py " .. dir .. "/in " .. dir .. "/out 2>&1")
    local py_err = p:read("*a")
    p:close()
    assert.are.equal("", py_err)
    local i = 0
    for line in io.lines(dir .. "/out") do
      i = i + 1
      local ok, why = equal(values[i], untag(line), "value " .. i)
      if not ok then error(why .. "\n  text: " .. texts[i]) end
    end
    assert.are.equal(N, i)
  end)

  it("writes text kinot.json.decode reads back to the value written", function()
    for i = 1, N do
      local back, err = json.decode(texts[i])
      assert(back ~= nil, tostring(err) .. "\n  text: " .. texts[i])
      local ok, why = equal(values[i], back, "value " .. i, true)
      if not ok then error(why .. "\n  text: " .. texts[i]) end
    end
  end)

  it("gives the bytes of the Lua writers it replaced: sorted, and in a shape's order", function()
    for i = 1, N do
      local v = values[i]
      assert.are.equal(oracle.encode(v), json.encode(v))
      if shapes[i] then assert.are.equal(oracle.json_text(v, shapes[i]), json.encode(v, shapes[i])) end
    end
    -- the CLI's own shapes on what the CLI writes
    local page = json.decode(require("kinot.sim.fleet").new { locks = 30 }:page_json("lock", 0, 30))
    page.offset, page.limit, page.extra = 0, 30, { z = 1, a = { 1.5, "x/y" } }
    for _, shape in ipairs { "lock_page", "report", "error", "verify", "discover" } do
      assert.are.equal(oracle.json_text(page, shape), output.json_text(page, shape))
    end
    assert.are.equal(oracle.json_text(page.objects, "locks"), output.json_text(page.objects, "locks"))
    assert.are.equal(oracle.json_text({}, "locks"), output.json_text({}, "locks"))
  end)

  it("refuses what JSON cannot carry as the Lua writer did, naming the same place", function()
    for i = 1, 3000 do
      local v = poisoned(value(0))
      local old = message(function() oracle.encode(v, "body") end)
      local new = message(function() json.encode(v, "body") end)
      assert(old, "the old writer took value " .. i)
      -- (a name with a NUL byte on the path: the message shows it as \0)
      assert.are.equal((old:gsub("%z", "\\0")), new)
      -- and the CLI's writer refused it too: a misuse, or for NaN / inf (which
      -- only the platform's answer can hold) a decode error naming where
      local ok, err = pcall(output.json_text, v)
      assert.is_false(ok)
      assert.is_true(err.kind == "misuse" or err.kind == "decode", tostring(err))
    end
  end)
end)

describe("kinot.json.encode under attack #unit", function()
  local function nested(n, shaped)
    local v, shape = 1, nil
    for _ = 1, n do
      v = { x = v, y = "/" }
      if shaped then shape = { order = { "y", "x" }, fields = { x = shape } } end
    end
    return v, shape
  end

  it("writes 1000 levels, with a shape at every one too, and refuses the 1001st naming where", function()
    local v = nested(1000)
    assert.are.equal(oracle.encode(v), json.encode(v))
    local shape
    v, shape = nested(1000, true)
    local text = json.encode(v, shape)
    assert.are.equal('{"y":"/","x":{"y":"/","x":', text:sub(1, 26))
    assert.are.equal(oracle.json_text(v, shape), text)
    local list = 1
    for _ = 1, 1000 do list = { list } end
    assert.are.equal(string.rep("[", 1000) .. "1" .. string.rep("]", 1000), json.encode(list))
    v = nested(1001)
    local err = message(function() json.encode(v, "doc") end)
    assert.are.equal("doc" .. string.rep(".x", 1000) .. " cannot be sent as JSON (nested deeper than 1000)", err)
  end)

  it("is whole again after a refusal deep in a long text, and after a refusal at every place", function()
    local page = json.decode(require("kinot.sim.fleet").new { locks = 2000 }:page_json("lock", 0, 2000))
    local want = json.encode(page)
    assert.is_true(#want > 400000)
    for i = 1, 50 do
      local lock = page.objects[1 + (i * 37) % 2000]
      local keep = lock.voltage
      lock.voltage = 0 / 0
      assert.matches("^value%.objects%[%d+%]%.voltage cannot be sent as JSON %(%-?nan%)$",
        message(function() json.encode(page) end))
      lock.voltage = keep
      assert.are.equal(want, json.encode(page))
    end
    assert.are.equal('{"a":[1,2.5,"x"]}', json.encode { a = { 1, 2.5, "x" } })
  end)

  it("gives each finalizer that encodes during a walk a writer of its own (the walk's text stays whole)", function()
    -- Lua 5.4 runs finalizers inside the walk's allocations (a long name is
    -- a new string each time it is looked up); LuaJIT interns every string,
    -- so its walk allocates nothing and no finalizer runs inside it there
    local inside, fired, wrong = false, 0, 0
    local function bomb()
      local function gc()
        if not inside then return end
        fired = fired + 1
        if json.encode { a = { 1, 2.5, "x" }, [string.rep("k", 50)] = true } ~= '{"a":[1,2.5,"x"],"' ..
          string.rep("k", 50) .. '":true}' then wrong = wrong + 1 end
      end
      if newproxy then
        local p = newproxy(true)
        getmetatable(p).__gc = gc
      else
        setmetatable({}, { __gc = gc })
      end
    end
    local v = {}
    for i = 1, 3000 do v[string.format("%060d", i)] = { i, i + 0.5, "s" .. i } end
    local want = oracle.encode(v)
    -- (a collector left at its default pace may finish no cycle inside 20
    -- walks, and a finalizer runs only at a cycle's end: seen in 2 of 4
    -- runs; an eager pace, kept until a finalizer ran inside a walk, at
    -- most 200 walks, makes the premise hold without weakening the check)
    local pause = collectgarbage("setpause", 50)
    local walks = 0
    repeat
      walks = walks + 1
      for _ = 1, 2000 do bomb() end
      inside = true
      local got = json.encode(v)
      inside = false
      assert.are.equal(want, got)
    until (walks >= 20 and (fired > 0 or rawget(_G, "jit"))) or walks >= 200
    collectgarbage("setpause", pause)
    collectgarbage()
    assert.are.equal(0, wrong)
    if not rawget(_G, "jit") then assert.is_true(fired > 0, "no finalizer ran inside a walk") end
  end)
end)
