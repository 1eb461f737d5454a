-- Request signing (docs/signing.md): the known-answer vectors from the official
-- Alibaba Cloud API Gateway signing code, then the edges around them.
local kinot = require "kinot"
local cjson = require "cjson"
local H = require "helpers"
local errors = require "kinot.errors"

local vectors = H.fixture("aliyun-gateway-sign.json").vectors

local function nn(v) if v == cjson.null then return nil end return v end

describe("kinot.sign_request against the gateway vectors #unit", function()
  it("has the whole vector file", function()
    assert.are.equal(16, #vectors)
  end)

  for _, v in ipairs(vectors) do
    it(v.id .. " " .. v.name, function()
      local r = kinot.sign_request {
        method = v.method, path = v.path, query = v.query, form = nn(v.form),
        headers = v.headers_at_signing, sign_headers = v.sign_headers,
        app_secret = v.app_secret, signature_method = v.signature_method,
      }
      assert.are.equal(v.expected.string_to_sign, r.string_to_sign)
      assert.are.equal(v.expected.x_ca_signature, r.signature)
      assert.are.same(v.expected.signed_headers, r.signed_headers)
      assert.are.equal(v.expected.x_ca_signature_headers_sorted, table.concat(r.signed_headers, ","))
      if nn(v.expected.content_md5) then
        assert.are.equal(v.expected.content_md5, kinot.content_md5(v.body))
      end
    end)
  end
end)

describe("kinot.sign_request edges #unit", function()
  local base = { method = "GET", path = "/open/lora/v1/lockers", app_secret = "s3cr3t",
                 headers = { ["X-Ca-Key"] = "k", Accept = "application/json" } }
  local function sign(over)
    local t = {}
    for k, v in pairs(base) do t[k] = v end
    for k, v in pairs(over or {}) do t[k] = v end
    return kinot.sign_request(t)
  end
  local function url_of(r) return r.string_to_sign:match("[^\n]*$") end

  it("signs an empty query value as the bare name", function()
    assert.are.equal("/open/lora/v1/lockers?a&b=1", url_of(sign { query = { { "b", "1" }, { "a", "" } } }))
  end)

  it("signs the first value of a repeated name only", function()
    assert.are.equal("/open/lora/v1/lockers?a=1", url_of(sign { query = { { "a", "1" }, { "a", "2" } } }))
  end)

  it("lets a form value win over a query value of the same name", function()
    local r = sign { method = "POST", query = { { "x", "q" }, { "y", "1" } }, form = { { "x", "f" } } }
    assert.are.equal("/open/lora/v1/lockers?x=f&y=1", url_of(r))
  end)

  it("leaves out a parameter with an empty name, and the '?' when nothing is left", function()
    assert.are.equal("/open/lora/v1/lockers", url_of(sign { query = { { "", "v" } } }))
  end)

  it("signs non-ASCII values raw and takes a non-ASCII secret as UTF-8 bytes", function()
    local r = sign { query = { { "name", "停车场" } }, app_secret = "密钥-Sécret" }
    assert.are.equal("/open/lora/v1/lockers?name=停车场", url_of(r))
    assert.are_not.equal(sign { query = { { "name", "停车场" } } }.signature, r.signature)
  end)

  it("matches header names in either case for the four fixed lines", function()
    local a = sign { headers = { ["X-Ca-Key"] = "k", ACCEPT = "a/b", ["content-type"] = "c/d", DATE = "D" } }
    assert.are.equal("GET\na/b\n\nc/d\nD\nX-Ca-Key:k\n/open/lora/v1/lockers", a.string_to_sign)
  end)

  it("signs an X-Ca- header in any case, but never X-Ca-Signature itself", function()
    local r = sign { headers = { ["x-ca-key"] = "k", ["X-CA-STAGE"] = "TEST", ["X-Ca-Signature"] = "old",
                                 ["X-Ca-Signature-Headers"] = "x" } }
    assert.are.same({ "X-CA-STAGE", "x-ca-key" }, r.signed_headers)
  end)

  it("signs extra headers named in sign_headers case-insensitively", function()
    local r = sign { headers = { ["X-Ca-Key"] = "k", ["X-Trace"] = "t" }, sign_headers = { "x-trace" } }
    assert.are.same({ "X-Ca-Key", "X-Trace" }, r.signed_headers)
  end)

  it("gives HmacSHA1 signatures of 20 bytes", function()
    local r = sign { signature_method = "HmacSHA1" }
    assert.are.equal(28, #r.signature)
  end)

  it("refuses a header value containing CR or LF, naming the header", function()
    for _, bad in ipairs { "a\r\nX-Evil: 1", "a\nb", "a\rb" } do
      assert.has_error(function() sign { headers = { ["X-Ca-Key"] = "k", ["X-Note"] = bad } } end,
        "kinot: header 'X-Note' value contains CR or LF")
    end
  end)

  it("refuses a NUL in a header value and a bad header name", function()
    assert.has_error(function() sign { headers = { ["X-Note"] = "a\0b" } } end, "kinot: header 'X-Note' value contains a NUL byte")
    assert.has_error(function() sign { headers = { ["X Bad"] = "1" } } end)
  end)

  it("refuses CR, LF and NUL in the path", function()
    assert.has_error(function() sign { path = "/a\r\nHost: evil" } end, "kinot: path contains CR or LF at byte 3")
    assert.has_error(function() sign { path = "/a\0" } end, "kinot: path contains a NUL byte at byte 3")
  end)

  it("raises on misuse before anything else", function()
    assert.has_error(function() kinot.sign_request { method = "GET", path = "/" } end, "kinot: app_secret must be a string")
    assert.has_error(function() sign { signature_method = "MD5" } end)
    assert.has_error(function() sign { query = { "notapair" } } end)
  end)

  it("content_md5 is base64(MD5(body))", function()
    assert.are.equal("1B2M2Y8AsgTpgAmY7PhCfg==", kinot.content_md5(""))
    assert.has_error(function() kinot.content_md5(nil) end)
  end)
end)

describe("the LuaJIT FFI signer #unit", function()
  local signer = require "kinot.signer"
  local core = require "kinot.core"

  it("is the one in use on LuaJIT, and absent on PUC Lua", function()
    assert.are.equal(rawget(_G, "jit") ~= nil, signer.ffi)
  end)

  it("gives exactly what the C API signer gives, errors included", function()
    local cases = {}
    for _, v in ipairs(vectors) do
      cases[#cases + 1] = { secret = v.app_secret, req = { method = v.method, path = v.path, query = v.query,
        form = nn(v.form), headers = v.headers_at_signing, sign_headers = v.sign_headers, signature_method = v.signature_method } }
    end
    local many = { ["X-Ca-Key"] = "k", ["X-Ca-Timestamp"] = 1700000000000 }
    for i = 1, 40 do many["X-Ca-H" .. i] = "v" .. i end -- more than the FFI signer's first buffer
    cases[#cases + 1] = { secret = "s", req = { method = "GET", path = "/p", headers = many,
      query = { { "n", 12 }, { "a" } }, form = { { "f", "1" } }, sign_headers = { "x-extra" } } }
    cases[#cases + 1] = { secret = "s", req = { method = "GET", path = "/p", headers = { ["X-Bad"] = "a\r\nb" } } }
    cases[#cases + 1] = { secret = "s", req = { method = "get", path = "/p" } }
    cases[#cases + 1] = { secret = "s", req = { method = "GET", path = "/p", headers = { ["X"] = {} } } }
    -- every misuse either binding can name, whole messages compared (issue 11 §7)
    for _, req in ipairs {
      { method = "GET", path = "/p", signature_method = "MD5" }, { method = "GET", path = "/p", signature_method = 1 },
      { method = {}, path = "/p", signature_method = "MD5" }, { method = "GET" }, { path = "/p" },
      { method = "GET", path = "/p", headers = 3 }, { method = "GET", path = "/p", headers = { "x" } },
      { method = "GET", path = "/p", query = 3 }, { method = "GET", path = "/p", query = { "x" } },
      { method = "GET", path = "/p", form = { { {}, "v" } } }, { method = "GET", path = "/p", sign_headers = 3 },
      { method = "GET", path = "/p", sign_headers = { {} } }, { method = "GET", path = "p" },
      { method = "GET", path = "/p\0" }, { method = "", path = "/p" },
    } do
      cases[#cases + 1] = { secret = "s", req = req }
    end
    cases[#cases + 1] = { secret = "s", req = "not a table" }
    cases[#cases + 1] = { secret = 42, req = { method = "GET", path = "/p" } }
    for i, c in ipairs(cases) do
      local a_ok, a = pcall(function() return signer.new(c.secret):sign(c.req) end)
      local b_ok, b = pcall(function() return core.signer(c.secret):sign(c.req) end)
      assert.are.equal(b_ok, a_ok, "case " .. i)
      if a_ok then
        assert.are.same(b, a)
      else
        assert.are.equal(tostring(b), tostring(a), "case " .. i)
        assert.matches("^kinot: ", tostring(a))
        assert.is_true(errors.is_misuse(a), "case " .. i)
        assert.is_true(errors.is_misuse(b), "case " .. i)
      end
    end
  end)

  it("closes idempotently", function()
    local s = signer.new("x")
    s:close()
    s:close()
    assert.has_error(function() s:sign { method = "GET", path = "/" } end)
  end)
end)
