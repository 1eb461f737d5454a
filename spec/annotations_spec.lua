-- The LuaLS annotations of the public API (what an editor completes and
-- checks a user's calls with) cannot rot silently.  lua-language-server is
-- not packaged for Debian 12, so this reads the files itself: every public
-- function of the four public modules has a `---@param` line for each of
-- its parameters and a `---@return` line when it returns a value; the
-- module-level calls of `kinot` are declared with the client methods'
-- parameters; every type named exists.
local H = require "helpers"

local PUBLIC = { "lua/kinot/init.lua", "lua/kinot/client.lua", "lua/kinot/callback/init.lua",
                 -- the engine kinot.callback re-exports (canonical, sign, rebuild ...)
                 "lua/kinot/callback/event.lua", "lua/kinot/errors.lua" }

local function lines_of(path)
  local f = assert(io.open(H.root .. "/" .. path, "rb"))
  local text = f:read("*a")
  f:close()
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  return lines
end

local function params_of(list)
  local names = {}
  for name in list:gmatch("[^,%s]+") do
    if name ~= "..." then names[#names + 1] = name end
  end
  return names
end

-- the module table a file returns, and its public functions: name, params,
-- the annotation lines right above, whether the body returns a value
local function functions_of(path)
  local lines = lines_of(path)
  local module
  for i = #lines, 1, -1 do
    module = lines[i]:match("^return ([%a_][%w_]*)%s*$")
    if module then break end
  end
  assert(module, path .. ": no `return <module>` line")
  local found = {}
  for i, line in ipairs(lines) do
    local sep, name, params = line:match("^function " .. module .. "([.:])([%a_][%w_]*)%(([^)]*)%)")
    if name and not name:match("^_") then
      local notes = {}
      local j = i - 1
      while j > 0 and lines[j]:match("^%-%-") do
        notes[#notes + 1] = lines[j]
        j = j - 1
      end
      local body = { line }
      if not line:match("%send%s*$") then
        for k = i + 1, #lines do
          body[#body + 1] = lines[k]
          if lines[k]:match("^end") then break end
        end
      end
      local text = table.concat(body, "\n")
      local returns = false
      for what in text:gmatch("%f[%w]return%s+([^%s]+)") do
        if what ~= "end" then returns = true end
      end
      found[#found + 1] = { name = name, method = sep == ":", params = params_of(params), notes = notes,
                            returns = returns, where = path .. ":" .. i }
    end
  end
  return found, module
end

local function annotated(notes, tag, name)
  for _, l in ipairs(notes) do
    local n = l:match("^%-%-%-@" .. tag .. "%s+([%w_]+)%??%s")
    if n == name then return true end
  end
  return false
end

local function has_return(notes)
  for _, l in ipairs(notes) do
    if l:match("^%-%-%-@return%s") then return true end
  end
  return false
end

-- a `fun(a: T, b?: U): R` type's parameter names
local function fun_params(sig)
  local list = sig:match("^fun(%b())")
  assert(list, "not a fun type: " .. sig)
  local names = {}
  for name in list:sub(2, -2):gmatch("([%w_]+)%??%s*:") do names[#names + 1] = name end
  return names
end

describe("LuaLS annotations of the public API #unit", function()
  it("name every parameter of every public function, and its return when it returns one", function()
    local missing, n = {}, 0
    for _, path in ipairs(PUBLIC) do
      for _, fn in ipairs((functions_of(path))) do
        n = n + 1
        for _, p in ipairs(fn.params) do
          if not annotated(fn.notes, "param", p) then
            missing[#missing + 1] = fn.where .. ": " .. fn.name .. ": no ---@param " .. p
          end
        end
        if fn.returns and not has_return(fn.notes) then
          missing[#missing + 1] = fn.where .. ": " .. fn.name .. ": no ---@return"
        end
      end
    end
    assert.is_true(n >= 40, "found only " .. n .. " public functions: the reader is wrong")
    assert.are.same({}, missing)
  end)

  it("declare each module-level call of kinot with the client method's parameters", function()
    local fields = {}
    for _, l in ipairs(lines_of("lua/kinot/init.lua")) do
      local name, sig = l:match("^%-%-%-@field%s+([%w_]+)%s+(fun%b().*)$")
      if name then fields[name] = sig end
    end
    local wrong, n = {}, 0
    for _, fn in ipairs((functions_of("lua/kinot/client.lua"))) do
      if fn.method and fn.name ~= "close" then
        n = n + 1
        local sig = fields[fn.name]
        if not sig then
          wrong[#wrong + 1] = "kinot." .. fn.name .. ": no ---@field on the kinot class"
        else
          local got = table.concat(fun_params(sig), ", ")
          local want = table.concat(fn.params, ", ")
          if got ~= want then wrong[#wrong + 1] = "kinot." .. fn.name .. ": fun(" .. got .. "), the method (" .. want .. ")" end
        end
      end
    end
    assert.is_true(n >= 15, "found only " .. n .. " client methods: the reader is wrong")
    assert.are.same({}, wrong)
  end)

  it("name only types that are declared", function()
    local declared, used = {}, {}
    local p = io.popen("cd '" .. H.root .. "' && find lua -name '*.lua' | sort")
    for path in p:lines() do
      for i, l in ipairs(lines_of(path)) do
        local kind, name = l:match("^%-%-%-@(%a+)%s+([%w_.]+)")
        if kind == "class" or kind == "alias" then declared[name] = true end
        if l:match("^%-%-%-@") then
          -- a type's last segment starts upper case (kinot.Error, kinot.callback.Event)
          for t in l:gmatch("kinot%.[%w_.]*%u[%w_]*") do used[t] = used[t] or (path .. ":" .. i) end
        end
      end
    end
    p:close()
    local undeclared = {}
    for t, where in pairs(used) do
      if not declared[t] then undeclared[#undeclared + 1] = where .. ": " .. t end
    end
    table.sort(undeclared)
    assert.is_true(declared["kinot.Options"] and declared["kinot.Error"] and declared["kinot.callback.Event"] or false)
    assert.are.same({}, undeclared)
  end)

  it("come with a .luarc.json for the editor: the library, the runtime, ngx", function()
    local text = table.concat(lines_of(".luarc.json"), "\n")
    local json = require "cjson"
    local conf = json.decode(text)
    assert.are.equal("LuaJIT", conf["runtime.version"])
    assert.are.same({ "lua" }, conf["workspace.library"])
    local globals = {}
    for _, g in ipairs(conf["diagnostics.globals"]) do globals[g] = true end
    assert.is_true(globals.ngx)
  end)
end)
