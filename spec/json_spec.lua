-- The JSON reader behind every response: the platform's quirks, integers,
-- null, and clear refusals.
local json = require "kinot.json"
local cjson = require "cjson"

describe("kinot.json.decode #unit", function()
  it("reads the reference's examples with their trailing commas", function()
    local doc = assert(json.decode('{\n "code":0,\n "objects":[\n  {"sn":419631107,"voltage":3.659}\n ],\n}'))
    assert.are.equal(419631107, doc.objects[1].sn)
    assert.are.equal(3.659, doc.objects[1].voltage)
    assert.are.same({ 1, 2 }, json.decode("[1,2,]"))
  end)

  it("keeps integers integers where Lua has them, and big ones as floats", function()
    local doc = json.decode('{"sn":419631107,"big":12345678901234567890,"neg":-7,"f":2.0}')
    if math.type then
      assert.are.equal("integer", math.type(doc.sn))
      assert.are.equal("integer", math.type(doc.neg))
      assert.are.equal("float", math.type(doc.big))
      assert.are.equal("float", math.type(doc.f))
    end
    assert.are.equal(-7, doc.neg)
  end)

  -- numbers are converted by the core itself (a fast exact path, strtod
  -- past it): each must be the double the C library reads from the text
  it("reads every number exactly as strtod does, in and past the fast path", function()
    local seed = 20261125
    local function rand(n) -- small LCG: the same lexemes on every run and runtime
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    end
    local function digits(n)
      local t = {}
      for i = 1, n do t[i] = tostring(i == 1 and 1 + rand(9) or rand(10)) end
      return table.concat(t)
    end
    local fixed = { "0", "-0", "0.1", "3.659", "37.919", "1e22", "1e23", "9007199254740993", "9007199254740992.5",
                    "123456789012345678", "1234567890123456789", "0.000001", "4.9e-324", "1.7976931348623157e308",
                    "2.2250738585072011e-308", "1e-400", "1e400", "0." .. string.rep("0", 70) .. "1",
                    string.rep("9", 80), "-12.5e-3", "5E+2" }
    local lexemes = {}
    for _, v in ipairs(fixed) do lexemes[#lexemes + 1] = v end
    for _ = 1, 3000 do
      local int, frac = digits(1 + rand(12)), rand(3) > 0 and digits(1 + rand(10)) or nil
      local lex = (rand(4) == 0 and "-" or "") .. int .. (frac and ("." .. frac) or "")
      if rand(3) == 0 then lex = lex .. (rand(2) == 0 and "e" or "E") .. ({ "", "+", "-" })[1 + rand(3)] .. rand(30) end
      lexemes[#lexemes + 1] = lex
    end
    for _, lex in ipairs(lexemes) do
      local got = json.decode("[" .. lex .. "]")[1]
      local want = tonumber(lex)
      -- 5.4 reads 19 digits as an integer; the reader's rule makes it a float
      if math.type and math.type(got) == "float" then want = want + 0.0 end
      assert(got == want, lex .. " read as " .. string.format("%.17g", got) .. ", strtod says " .. string.format("%.17g", want))
    end
  end)

  it("decodes escapes and surrogate pairs to UTF-8", function()
    assert.are.equal('café "q" \\ / 😀\n', json.decode('"caf\\u00e9 \\"q\\" \\\\ \\/ \\ud83d\\ude00\\n"'))
  end)

  it("gives null as cjson.null and booleans as booleans", function()
    assert.are.same({ cjson.null, true, false }, json.decode("[null,true,false]"))
    assert.are.equal(json.null, cjson.null)
  end)

  it("refuses broken text with the byte it stopped at", function()
    for text, want in pairs {
      ['{"a":'] = "unexpected end at byte 6", ["[1,,2]"] = "unexpected character at byte 4",
      ['{"a":1} x'] = "trailing characters at byte 9", ['"\\ud800"'] = "unpaired surrogate",
      ["[01]"] = "expected ',' or ']' at byte 3", ['{"a" 1}'] = "expected ':' at byte 6", [""] = "unexpected end at byte 1",
      ['"a\nb"'] = "control character in a string",
    } do
      local v, err = json.decode(text)
      assert.is_nil(v, text)
      assert.matches(want, err, 1, true)
    end
  end)

  it("stops at a nesting depth of 200 instead of exhausting the C stack", function()
    assert.is_table(json.decode(string.rep("[", 150) .. string.rep("]", 150)))
    local v, err = json.decode(string.rep("[", 5000) .. string.rep("]", 5000))
    assert.is_nil(v)
    assert.matches("nesting too deep", err)
  end)

  it("agrees with lua-cjson on an encoded page", function()
    local page = { code = 0, objects = {}, count = 3 }
    for i = 1, 3 do page.objects[i] = { sn = 419600000 + i, rs_si = -88.5, bt_match_code = "1-2", locked = i % 2 } end
    local text = cjson.encode(page)
    local a, b = json.decode(text), cjson.decode(text)
    assert.are.same(b, a) -- numerically equal, integer or not
  end)
end)
