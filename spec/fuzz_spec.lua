-- Each libFuzzer target runs briefly from the vector seeds (make fuzz
-- FUZZ_SECONDS=3); a crash, leak or sanitizer report fails it.
local H = require "helpers"

describe("fuzz targets (brief run) #nosanitize #fuzz #slow", function()
  local out, rc
  setup(function()
    -- (make test runs both runtimes' specs at once: one make fuzz at a time,
    -- or both would build the same binaries and seeds)
    local p = io.popen("cd " .. H.root .. " && mkdir -p build && flock build/.fuzz.lock make -s fuzz FUZZ_SECONDS=3 2>&1; " ..
      "echo \"rc=$?\"")
    out = p:read("*a")
    p:close()
    rc = tonumber(out:match("rc=(%d+)%s*$"))
  end)

  it("all pass", function()
    assert.are.equal(0, rc, out)
  end)

  for _, t in ipairs { "sign", "cbscan", "headers", "json", "jsonwrite" } do
    it(t .. " executed inputs", function()
      local n = tonumber(out:match("== fuzz " .. t .. " %(3 s%)\n[^=]-stat::number_of_executed_units: (%d+)"))
      assert.is_truthy(n, out)
      assert.is_true(n > 1000)
    end)
  end
end)
