-- The seam between LuaJIT's FFI and the C core cannot drift:
--   * lua/kinot/native.lua's declarations are the C headers' own, token for
--     token (the comparison below, and a drift it must catch);
--   * a kinot/core.so built from other headers (a struct with one field
--     more) is refused at load, with an error naming the struct and the
--     field, where the FFI would otherwise read garbage.
-- The FFI is LuaJIT's: the load checks run a luajit process under either
-- runtime; the token comparison is plain Lua.
local H = require "helpers"

local function read(name)
  local f = assert(io.open(name))
  local s = f:read("*a")
  f:close()
  return s
end

local function sh(cmd) -- -> true when it exited 0, its output
  local out, rc = H.sh(cmd)
  return rc == 0, out
end

-- C text -> tokens: comments, preprocessor lines and blanks gone
local function tokens(text)
  text = text:gsub("/%*.-%*/", " "):gsub("//[^\n]*", " ")
  text = ("\n" .. text):gsub("\n[ \t]*#[^\n]*", "\n")
  local out, i = {}, 1
  while i <= #text do
    local c = text:sub(i, i)
    if c:match("%s") then
      i = i + 1
    else
      local word = text:match("^[%w_]+", i)
      if word then
        out[#out + 1] = word
        i = i + #word
      else
        out[#out + 1] = c
        i = i + 1
      end
    end
  end
  return out
end

-- tokens -> top-level declarations, each { name = ..., toks = {...} }:
-- a function by the name before its first "(", a typedef by the last name
-- at brace depth 0, an enum or struct by its tag
local function declarations(toks)
  local decls, cur, depth = {}, {}, 0
  local function close()
    if #cur == 0 then return end
    local name
    local paren
    for k, t in ipairs(cur) do
      if t == "(" then paren = k break end
    end
    if cur[1] == "typedef" then
      local d = 0
      for _, t in ipairs(cur) do
        if t == "{" then d = d + 1 elseif t == "}" then d = d - 1
        elseif d == 0 and t:match("^[%a_][%w_]*$") then name = t end
      end
    elseif paren then
      name = cur[paren - 1]
    elseif (cur[1] == "enum" or cur[1] == "struct") and cur[3] == "{" then
      name = cur[1] .. " " .. cur[2]
    end
    decls[#decls + 1] = { name = name or table.concat(cur, " "), toks = cur }
    cur = {}
  end
  for _, t in ipairs(toks) do
    cur[#cur + 1] = t
    if t == "{" then
      depth = depth + 1
    elseif t == "}" then
      depth = depth - 1
      -- the end of an inline function's body ends its declaration
      if depth == 0 and cur[1] == "static" then close() end
    elseif t == ";" and depth == 0 then
      close()
    end
  end
  close()
  return decls
end

local function cdef_text()
  local src = read(H.root .. "/lua/kinot/native.lua")
  return assert(src:match("%-%- BEGIN CDEF.-%[%[(.-)%]%]\n%-%- END CDEF"), "no CDEF block in native.lua")
end

local function header_decls()
  local p = io.popen("ls " .. H.root .. "/src/*.h")
  local by = {}
  for name in p:lines() do
    for _, d in ipairs(declarations(tokens(read(name)))) do
      by[d.name] = by[d.name] or {}
      table.insert(by[d.name], { toks = d.toks, file = name:match("[^/]+$") })
    end
  end
  p:close()
  return by
end

-- nil when every declaration of cdef is a header's own; else what differs
local function compare(cdef, by)
  local decls = declarations(tokens(cdef))
  if #decls == 0 then return "the cdef declares nothing" end
  for _, d in ipairs(decls) do
    local found = by[d.name]
    if not found then return "the cdef declares " .. d.name .. ", which no header of src/ declares" end
    local closest
    for _, h in ipairs(found) do
      local k = 1
      while k <= math.max(#h.toks, #d.toks) and h.toks[k] == d.toks[k] do k = k + 1 end
      if k > math.max(#h.toks, #d.toks) then closest = nil break end
      if not closest or k > closest.k then closest = { k = k, h = h } end
    end
    if closest then
      local k, h = closest.k, closest.h
      return string.format("%s: the cdef says %q where %s says %q (token %d: ... %s)", d.name, tostring(d.toks[k]),
        h.file, tostring(h.toks[k]), k, table.concat(h.toks, " ", math.max(1, k - 4), math.min(#h.toks, k + 2)))
    end
  end
  return nil, #decls
end

describe("the FFI declarations (native.lua) #unit", function()
  it("are the C headers' own, token for token", function()
    local why, n = compare(cdef_text(), header_decls())
    assert.is_nil(why, why)
    assert.is_true(n >= 20, "declarations compared: " .. tostring(n))
  end)

  it("would be caught drifting: a field moved, a type changed, a name no header has", function()
    local by, cdef = header_decls(), cdef_text()
    local moved = cdef:gsub("    double number;\n    long long integer;\n", "    long long integer;\n    double number;\n")
    assert.are_not.equal(cdef, moved)
    assert.matches("kn_cb_member: the cdef says \"long\" where cbscan%.h says \"double\"", compare(moved, by))
    local typed = cdef:gsub("int kn_sign%(kn_signer %*s, const kn_sign_req %*req, enum kn_hmac alg%)",
      "int kn_sign(kn_signer *s, const kn_sign_req *req, int alg)")
    assert.are_not.equal(cdef, typed)
    assert.matches("^kn_sign: the cdef says \"int\" where sign%.h says \"enum\"", compare(typed, by))
    assert.matches("kn_gone, which no header", compare(cdef .. "\nvoid kn_gone(void);\n", by))
  end)

  it("keep KN_SIGN_NOMEM, a macro the FFI cannot see, as signer.lua has it", function()
    local c = read(H.root .. "/src/sign.h"):match("#define KN_SIGN_NOMEM %((%-?%d+)%)")
    local lua = read(H.root .. "/lua/kinot/signer.lua"):match("local SIGN_NOMEM = (%-?%d+)")
    assert.is_truthy(c)
    assert.are.equal(c, lua)
  end)
end)

describe("a kinot/core.so whose layout does not match #build", function()
  local tmp
  -- a luajit process with this checkout's Lua modules and the core in dir
  local function luajit(dir, code)
    local f = assert(io.open(tmp .. "/probe.lua", "w"))
    f:write(string.format("package.path = %q .. package.path\npackage.cpath = %q .. package.cpath\n",
      H.root .. "/lua/?.lua;" .. H.root .. "/lua/?/init.lua;", dir .. "/?.so;"), code)
    f:close()
    return sh("luajit " .. tmp .. "/probe.lua")
  end

  setup(function()
    local p = io.popen("mktemp -d /tmp/kinot-native.XXXXXX")
    tmp = p:read("*l")
    p:close()
    -- the core built again from a copy of src/ whose kn_cb_member has one
    -- field more than the FFI declares
    assert(sh("mkdir -p " .. tmp .. "/co && cp -r " .. H.root .. "/Makefile " .. H.root .. "/src " .. tmp .. "/co/"))
    local hdr = tmp .. "/co/src/cbscan.h"
    local text, n = read(hdr):gsub("\n(%s*)double number;", "\n%1int added_by_the_spec;\n%1double number;")
    assert.are.equal(1, n)
    local f = assert(io.open(hdr, "w"))
    f:write(text)
    f:close()
    local ok, out = sh("make -s -C " .. tmp .. "/co build/5.1/kinot/core.so CFLAGS=-O0")
    assert(ok, out)
  end)
  teardown(function() if tmp then os.execute("rm -rf " .. tmp) end end)

  it("the checkout's own core loads through the FFI, its layout the declarations'", function()
    local ok, out = luajit(H.root .. "/build/5.1", [[
      local lib = require "kinot.native"
      print(lib ~= false, require("kinot.signer").ffi, require("kinot.callback.scanner").ffi)
    ]])
    assert(ok, out)
    assert.matches("^true\ttrue\ttrue\n", out)
  end)

  it("is refused at load, the error naming the struct and the field", function()
    local ok, out = luajit(tmp .. "/co/build/5.1", [[
      local ok, err = pcall(require, "kinot.native")
      print(ok)
      print(err)
      -- whoever loads the SDK is stopped as well
      package.loaded["kinot.native"] = nil
      print((select(2, pcall(require, "kinot"))))
    ]])
    assert(ok, out)
    local core = tmp .. "/co/build/5.1/kinot/core.so"
    local esc = core:gsub("%p", "%%%0")
    assert.matches("^false\n", out)
    assert.matches("kinot: " .. esc .. " does not match the FFI declarations of kinot.native", out)
    assert.matches("kn_cb_member%.number is at offset %d+ in the core, %d+ here", out)
    assert.matches("sizeof%(kn_cb_member%) is %d+ in the core, %d+ here", out)
    assert.matches("rebuild it", out)
    -- the second line (require "kinot") says the same
    local _, again = out:match("^false\n([^\n]*)\n([^\n]*)")
    assert.matches("kn_cb_member%.number", again or "")
  end)

  it("would otherwise be read wrongly: the FFI's member.number is not the core's", function()
    -- what the refusal prevents: the same core through the same declarations,
    -- without the check, reads a member's number from the wrong bytes
    local ok, out = luajit(tmp .. "/co/build/5.1", [[
      local ffi = require "ffi"
      pcall(require, "kinot.native") -- declares, then refuses
      pcall(ffi.cdef, "int kn_cb_scan(kn_cb_scanner *s, const char *body, size_t n, char *why, size_t whylen);")
      local lib = ffi.load(package.searchpath("kinot.core", package.cpath))
      local sc = lib.kn_cb_scanner_new()
      local why = ffi.new("char[200]")
      local body = '{"voltage":3.5}'
      assert(lib.kn_cb_scan(sc, body, #body, why, 200) == 0, ffi.string(why))
      local m, n = ffi.new("const kn_cb_member *[1]"), ffi.new("size_t[1]")
      assert(lib.kn_cb_convert(sc, m, n) == 0)
      print(tonumber(n[0]), m[0][0].number)
      lib.kn_cb_scanner_free(sc)
    ]])
    assert(ok, out)
    local count, number = out:match("^(%d+)\t(%S+)")
    assert.are.equal("1", count)
    assert.are_not.equal(3.5, tonumber(number))
    -- while the checkout's core reads it right
    ok, out = luajit(H.root .. "/build/5.1", [[
      local ffi = require "ffi"
      local lib = require "kinot.native"
      pcall(ffi.cdef, "int kn_cb_scan(kn_cb_scanner *s, const char *body, size_t n, char *why, size_t whylen);")
      local sc = lib.kn_cb_scanner_new()
      local why = ffi.new("char[200]")
      local body = '{"voltage":3.5}'
      assert(lib.kn_cb_scan(sc, body, #body, why, 200) == 0)
      local m, n = ffi.new("const kn_cb_member *[1]"), ffi.new("size_t[1]")
      assert(lib.kn_cb_convert(sc, m, n) == 0)
      print(tonumber(n[0]), m[0][0].number)
      lib.kn_cb_scanner_free(sc)
    ]])
    assert(ok, out)
    assert.matches("^1\t3%.5\n", out)
  end)

  it("the core's layout table covers every field the FFI declares of the structs it reads", function()
    local ok, out = luajit(H.root .. "/build/5.1", [[
      local ffi = require "ffi"
      local lib = require "kinot.native"
      local buf = ffi.new("char[4096]")
      io.write(ffi.string(buf, lib.kn_ffi_layout(buf, 4096)))
    ]])
    assert(ok, out)
    local listed = {}
    for name in out:gmatch("([%w_%.]+) %d+\n") do listed[name] = true end
    local decls = declarations(tokens(cdef_text()))
    local checked = 0
    for _, d in ipairs(decls) do
      if d.toks[1] == "typedef" and d.toks[2] == "struct" and d.toks[4] == "{" then
        local struct = d.name
        assert.is_true(listed[struct], struct .. " has no sizeof in the core's layout")
        -- the field names: the names just before each "," or ";" inside the braces
        local depth = 0
        for k, t in ipairs(d.toks) do
          if t == "{" then depth = depth + 1 elseif t == "}" then depth = depth - 1
          elseif depth == 1 and (t == ";" or t == ",") then
            local field = d.toks[k - 1]
            assert.is_true(listed[struct .. "." .. field], struct .. "." .. field .. " is not in the core's layout")
            checked = checked + 1
          end
        end
      end
    end
    assert.are.equal(21, checked)
  end)
end)
