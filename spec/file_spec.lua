-- kinot.file.read, the one reader of a whole file (lua/kinot/file.lua):
-- what it gives back for each kind of path, in both runtimes.
local H = require "helpers"
local file = require "kinot.file"

describe("kinot.file.read #unit", function()
  local dir
  setup(function() dir = H.tmpdir("file") end)
  teardown(function() if dir then os.execute("rm -rf " .. dir) end end)

  local function write(name, bytes)
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    f:write(bytes)
    f:close()
    return dir .. "/" .. name
  end

  it("a missing file: nil and io.open's reason naming the path", function()
    local s, err = file.read(dir .. "/absent")
    assert.is_nil(s)
    assert.is_string(err)
    assert.matches("absent", err)
    assert.matches("No such file", err)
  end)

  it("an empty file: the empty string, not nil", function()
    assert.are.equal("", file.read(write("empty", "")))
  end)

  it("a binary file: every byte as stored (NUL, CR LF, 0xFF, no trailing newline)", function()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local all = table.concat(bytes) .. "\r\n\0\r" .. table.concat(bytes):rep(300) -- past one stdio buffer
    local got = file.read(write("binary", all))
    assert.are.equal(#all, #got)
    assert.is_true(all == got)
  end)

  it("a directory: nil and a reason naming it, never a string nor a raise", function()
    local s, err = file.read(dir)
    assert.is_nil(s)
    assert.is_string(err)
    assert.matches(dir:gsub("%p", "%%%0"), err)
  end)

  it("an unreadable file: nil and a reason", function()
    local p = write("secret", "x")
    os.execute("chmod 000 " .. p)
    local s, err = file.read(p)
    if s ~= nil then -- root reads through mode 000: nothing to refuse then
      assert.are.equal("x", s)
      return
    end
    assert.is_string(err)
    assert.matches("Permission denied", err)
  end)

  it("closes what it opens: a thousand reads of one file and of a directory leave no descriptor open", function()
    local p = write("many", "abc")
    local function open_fds()
      local h = io.popen("ls /proc/$PPID/fd | wc -l") -- $PPID: this Lua process
      local n = tonumber(h:read("*a"))
      h:close()
      return n
    end
    collectgarbage("stop") -- a handle left open must not be closed by its collector
    local before = open_fds()
    for _ = 1, 1000 do
      assert.are.equal("abc", file.read(p))
      assert.is_nil(file.read(dir))
    end
    local after = open_fds()
    collectgarbage("restart")
    assert.is_true(after <= before + 1, before .. " -> " .. after)
  end)
end)
