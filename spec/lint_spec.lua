-- The code stays clean: luacheck over every Lua file, and the C core
-- compiling without a warning under -Wall -Wextra for both runtimes.
local H = require "helpers"

local function sh(cmd) -- -> its exit code, its output (from the checkout's root)
  local out, rc = H.sh("cd " .. H.root .. " && " .. cmd)
  return rc, out
end

describe("lint #lint", function()
  it("luacheck finds nothing", function()
    local rc, out = sh("luacheck --no-color --formatter plain lua bin spec examples bench")
    assert.are.equal(0, rc, out)
  end)

  for _, inc in ipairs { "/usr/include/lua5.4", "/usr/include/luajit-2.1" } do
    it("the C core has no warning with " .. inc .. " #build", function()
      local rc, out = sh("cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror " ..
        "-fsyntax-only -I" .. inc .. " src/*.c")
      assert.are.equal(0, rc, out)
    end)
  end
end)
