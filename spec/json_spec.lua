-- The JSON reader behind every response: the platform's quirks, integers,
-- null, and clear refusals.
local json = require "kinot.json"
local cjson = require "cjson"

describe("kinot.json.decode", function()
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
