-- Every top-level describe of spec/ says what it needs, with one of the
-- tags the README's "Tests" lists; `make check` runs #unit and leaves out
-- every other one (busted's --tags alone would still run the setups of the
-- describes it filters, and start their servers).
local H = require "helpers"

local TAGS = { "unit", "nginx", "sim", "redis", "cli", "peer", "install", "lint", "build", "fuzz", "slow", "browser" }

local function read(path)
  local f = assert(io.open(H.root .. "/" .. path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local function spec_files()
  local p = io.popen("cd '" .. H.root .. "' && ls spec/*_spec.lua")
  local files = {}
  for line in p:lines() do files[#files + 1] = line end
  p:close()
  return files
end

local function tags_of(line)
  local found = {}
  for tag in line:gmatch("#([%w_]+)") do found[tag] = true end
  return found
end

describe("spec tags #unit", function()
  it("every top-level describe carries one of the tags", function()
    local known = {}
    for _, t in ipairs(TAGS) do known[t] = true end
    local untagged, n = {}, 0
    for _, path in ipairs(spec_files()) do
      local lineno = 0
      for line in (read(path) .. "\n"):gmatch("([^\n]*)\n") do
        lineno = lineno + 1
        if line:match("^describe%(") then
          n = n + 1
          local any = false
          for tag in pairs(tags_of(line)) do any = any or known[tag] == true end
          if not any then untagged[#untagged + 1] = path .. ":" .. lineno .. ": " .. line end
        end
      end
    end
    assert.is_true(n > 50, "found only " .. n .. " describes: the reader is wrong")
    assert.are.same({}, untagged)
  end)

  it("make check runs #unit and leaves out every other tag, and the README names them all", function()
    local line = read("Makefile"):match("\nCHECK_TAGS := ([^\n]*)")
    assert.is_string(line, "no CHECK_TAGS in the Makefile")
    assert.are.equal("unit", line:match("%-%-tags=(%S+)"))
    local excluded = {}
    for t in (line:match("%-%-exclude%-tags=(%S+)") or ""):gmatch("[^,]+") do excluded[t] = true end
    local readme = read("README.md")
    for _, t in ipairs(TAGS) do
      if t ~= "unit" then assert.is_true(excluded[t], "make check does not exclude #" .. t) end
      assert.truthy(readme:find("`#" .. t .. "`", 1, true), "README.md does not name #" .. t)
    end
  end)
end)
