-- kinot.fleet's groups file with a control character in a group's name (a
-- CSV's quoted field holding a line break, a JSON "\n"): the shared dict
-- keeps a device as its flags, a newline, its record, so such a name hid
-- the device there (twin:device gave nil, the sweep never found it stale).
-- Refused when the file is read, naming the line, like | and @.
local groups = require "kinot.fleet.groups"
local errors = require "kinot.errors"

describe("kinot.fleet groups with a control character in a name #unit", function()
  local files = {}
  local function file(ext, text)
    local path = os.tmpname() .. ext
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    files[#files + 1] = path
    return path
  end
  teardown(function() for _, f in ipairs(files) do os.remove(f) end end)

  local function refused(source, pattern)
    local ok, err = pcall(groups.load, source)
    assert.is_false(ok, "accepted")
    assert.is_true(errors.is_misuse(err), tostring(err))
    assert.matches(pattern or "a group name cannot hold", tostring(err))
  end

  it("refuses a CSV zone holding a line break (a quoted field over two lines), or a tab", function()
    refused(file(".csv", 'sn,zone,level\n419600001,"A\nB",1\n'), "unclosed quote")
    refused(file(".csv", 'sn,zone,level\n419600001,A\tB,1\n'))
  end)
  it("refuses a JSON zone holding a newline, a tab, a NUL", function()
    for _, c in ipairs { "\\n", "\\t", "\\u0000" } do
      refused(file(".json", '[{"sn":419600001,"zone":"A' .. c .. 'B","level":"1"}]'))
    end
  end)
  it("still takes UTF-8 and spaces in a name", function()
    local map = groups.load(file(".json", '[{"sn":419600001,"zone":"Niveau -1 é","level":"1"}]'))
    assert.are.equal("Niveau -1 é/1", map[419600001].group)
  end)
end)

describe("kinot.fleet groups read from a path that is no file #unit", function()
  it("refuses a directory and a missing path as misuse naming the path (a directory raised 'attempt to index a nil value')", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    finally(function() os.execute("rm -rf " .. dir) end)
    for _, path in ipairs { dir, dir .. "/missing.csv" } do
      local ok, err = pcall(groups.load, path)
      assert.is_false(ok, "accepted " .. path)
      assert.is_true(errors.is_misuse(err), tostring(err))
      assert.matches("cannot read " .. path, tostring(err), 1, true)
    end
  end)
end)
