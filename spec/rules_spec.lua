-- Callback sign rules (kinot.callback.rules): names and parts, every
-- variant against digests computed here by the `openssl` command line (not
-- by the code under test), discover on bodies signed by each rule and on
-- the reference's own examples, the Lua member reader against the C
-- scanner, `kinot verify --discover`, `verify = "monitor"` in real nginx;
-- and the notification spellings and X-Ca-Stage against the simulator.
local callback = require "kinot.callback"
local rules = require "kinot.callback.rules"
local receiver = require "kinot.callback.receiver"
local core = require "kinot.core"
local json = require "kinot.json"
local H = require "helpers"

local _ -- a sink for values a test does not look at
local SECRET = "s3cr3t-K3y_9d4c"

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- openssl dgst over data (a file, so any byte goes): lower hex, or base64
local function openssl(alg, data, key, base64)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  local cmd = "openssl dgst -" .. alg .. (key and (" -hmac " .. quote(key)) or "")
  cmd = base64 and (cmd .. " -binary " .. path .. " | openssl base64 -A") or (cmd .. " -r " .. path)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  os.remove(path)
  out = base64 and out:gsub("%s+$", "") or out:match("^(%x+)")
  assert(out and #out > 0, "openssl gave nothing for " .. cmd)
  return out
end

local function sorted_names(report)
  local out = {}
  for i, m in ipairs(report.matches) do out[i] = m.name end
  table.sort(out)
  return out
end

-- one body with an empty string, a null, a nested object, an escape, a
-- float written with a trailing zero and the reference's trailing comma
local BODY = '{"sn":419631107,"voltage":3.60,"memo":"","reason":null,"note":"caf\\u00e9",' ..
  '"nested":{"a":[1,2]},"ok":true,"updated_at":"2019-03-13T10:42:39+08:00","sign":"%s","device_type":18,}'
local function body_with(sign) return (BODY:gsub("%%s", sign)) end
-- its canonical strings, written out by hand, one per treatment of "" and null
local HEAD, TAIL = 'device_type=18', '&nested={"a":[1,2]}&note=caf\195\169&ok=true'
local REST = '&sn=419631107&updated_at=2019-03-13T10:42:39+08:00&voltage=3.60'
local CANON = {
  skip = HEAD .. TAIL .. REST,
  keep_empty = HEAD .. "&memo=" .. TAIL .. REST,
  null_empty = HEAD .. TAIL .. "&reason=" .. REST,
  null_text = HEAD .. TAIL .. "&reason=null" .. REST,
  both = HEAD .. "&memo=" .. TAIL .. "&reason=null" .. REST,
}

-- name or parts, its canonical name, what openssl signs: alg, text, hmac key, encoding
local VARIANTS = {
  { "md5-key", "md5-key", "md5", CANON.skip .. "&key=" .. SECRET, nil, "upper" },
  { "md5-key+lower", "md5-key+lower", "md5", CANON.skip .. "&key=" .. SECRET, nil, "lower" },
  { "md5-secret", "md5-secret", "md5", CANON.skip .. "&secret=" .. SECRET, nil, "upper" },
  { "md5-app_secret+lower", "md5-app_secret+lower", "md5", CANON.skip .. "&app_secret=" .. SECRET, nil, "lower" },
  { "md5-bare", "md5-bare", "md5", CANON.skip .. SECRET, nil, "upper" },
  { "md5-key+keep-empty", "md5-key+keep-empty", "md5", CANON.keep_empty .. "&key=" .. SECRET, nil, "upper" },
  { "md5-key+null-as-empty", "md5-key+null-as-empty", "md5", CANON.null_empty .. "&key=" .. SECRET, nil, "upper" },
  { "md5-key+null-as-text", "md5-key+null-as-text", "md5", CANON.null_text .. "&key=" .. SECRET, nil, "upper" },
  { "md5-secret+keep-empty+null-as-text+lower", "md5-secret+keep-empty+null-as-text+lower", "md5",
    CANON.both .. "&secret=" .. SECRET, nil, "lower" },
  { "hmac-md5", "hmac-md5", "md5", CANON.skip, SECRET, "upper" },
  { "hmac-md5+lower", "hmac-md5+lower", "md5", CANON.skip, SECRET, "lower" },
  { "hmac-md5+base64", "hmac-md5+base64", "md5", CANON.skip, SECRET, "base64" },
  { "hmac-sha1+base64", "hmac-sha1+base64", "sha1", CANON.skip, SECRET, "base64" },
  { "hmac-sha256", "hmac-sha256", "sha256", CANON.skip, SECRET, "upper" },
  { "hmac-sha256+lower", "hmac-sha256+lower", "sha256", CANON.skip, SECRET, "lower" },
  { "hmac-sha256+base64", "hmac-sha256+base64", "sha256", CANON.skip, SECRET, "base64" },
  { { digest = "hmac-sha256", empty = "keep", encoding = "base64" }, "hmac-sha256+keep-empty+base64", "sha256",
    CANON.keep_empty, SECRET, "base64" },
  { { digest = "md5", suffix = "&token=", encoding = "lower" }, "md5-suffix[&token=]+lower", "md5",
    CANON.skip .. "&token=" .. SECRET, nil, "lower" },
}

local function expected(v)
  local alg, text, key, enc = v[3], v[4], v[5], v[6]
  local d = openssl(alg, text, key, enc == "base64")
  return enc == "upper" and d:upper() or d
end

describe("sign rule names and parts #unit", function()
  it("takes a name or a table of parts, and names each canonically", function()
    for _, v in ipairs(VARIANTS) do assert.are.equal(v[2], rules.rule(v[1]).name) end
    assert.are.equal("md5-key", rules.rule(nil).name)
    assert.are.equal("md5-key", rules.rule { digest = "md5" }.name)
    assert.are.equal("hmac-md5-suffix[&key=]", rules.rule { digest = "hmac-md5", suffix = "&key=" }.name)
    -- a canonical name parses back to the same rule
    for _, n in ipairs { "md5-suffix[&token=]+lower", "hmac-sha1-suffix[]+keep-empty", "md5-bare+null-as-empty+base64" } do
      assert.are.equal(n, rules.rule(rules.rule(n).name).name)
    end
  end)

  it("knows the default rule, in either hex case", function()
    assert.is_true(rules.is_default(nil))
    assert.is_true(rules.is_default("md5-key"))
    assert.is_true(rules.is_default("md5-key+lower"))
    assert.is_true(rules.is_default { digest = "md5", suffix = "&key=" })
    assert.is_false(rules.is_default("md5-secret"))
    assert.is_false(rules.is_default("md5-key+keep-empty"))
    assert.is_false(rules.is_default("md5-key+base64"))
    assert.is_false(rules.is_default("hmac-md5"))
  end)

  it("raises as misuse on an unknown name, modifier or part, naming it", function()
    local function msg(spec)
      local ok, err = pcall(rules.rule, spec)
      assert.is_false(ok)
      return tostring(err)
    end
    assert.matches("kinot: sign_rule: unknown rule 'md5'", msg("md5"), 1, true)
    assert.matches("unknown rule 'sha256'", msg("sha256"), 1, true)
    assert.matches("unknown modifier '+upside-down'", msg("md5-key+upside-down"), 1, true)
    assert.matches("malformed rule name", msg("md5-key+"), 1, true)
    assert.matches("digest must be", msg { digest = "sha512" }, 1, true)
    assert.matches("empty must be skip or keep", msg { empty = "drop" }, 1, true)
    assert.matches("null must be skip, empty or text", msg { null = "zero" }, 1, true)
    assert.matches("encoding must be upper, lower or base64", msg { encoding = "hex" }, 1, true)
    assert.matches("unknown part 'secret'", msg { secret = "x" }, 1, true)
    assert.matches("must be a rule name or a table", msg(42), 1, true)
    -- a table that looks like a made rule is still checked
    assert.matches("digest must be", msg { digest = "sha3", hash = "md5", name = "md5-key" }, 1, true)
    assert.has_error(function() callback.verify(body_with("x"), { secret = SECRET, sign_rule = "nope" }) end)
    assert.has_error(function() receiver.new { secret = SECRET, sign_rule = "nope" } end)
    assert.has_error(function() receiver.new { secret = SECRET, verify = "lenient" } end,
      'kinot: verify must be "enforce" (the default) or "monitor" (got lenient)')
  end)
end)

describe("the C core's digests #unit", function()
  it("match the RFCs' vectors (RFC 1321, RFC 2202, RFC 4231)", function()
    assert.are.equal("900150983CD24FB0D6963F7D28E17F72", core.digest("md5", "abc"))
    assert.are.equal("9294727A3638BB1C13F48EF8158BFC9D", core.digest("md5", "Hi There", ("\11"):rep(16)))
    assert.are.equal("EFFCDF6AE5EB2FA2D27416D5F184DF9C259A7C79",
      core.digest("sha1", "what do ya want for nothing?", "Jefe"))
    assert.are.equal("5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843",
      core.digest("sha256", "what do ya want for nothing?", "Jefe"))
    assert.are.equal("W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=",
      core.digest("sha256", "what do ya want for nothing?", "Jefe", "base64"))
    assert.are.equal(32, #core.digest("sha256", "x", "k", "raw"))
    -- an empty key is a key (HMAC with a zero-length key), not "no key"
    assert.are.equal(openssl("md5", "abc", ""):upper(), core.digest("md5", "abc", ""))
  end)

  it("raises on an unknown algorithm or encoding, naming it", function()
    assert.has_error(function() core.digest("md4", "x") end, "kinot: digest algorithm must be md5, sha1 or sha256 (got md4)")
    assert.has_error(function() core.digest("md5", "x", nil, "hex32") end,
      "kinot: digest encoding must be hex, base64 or raw (got hex32)")
  end)
end)

describe("every sign rule against openssl #unit", function()
  for _, v in ipairs(VARIANTS) do
    it(v[2], function()
      local want = expected(v)
      assert.are.equal(want, rules.sign(body_with("ignored"), SECRET, v[1]))
      local body = body_with(want)
      -- verify with the rule: an event, typed as the C path types it, without the sign
      local ev, err = callback.verify(body, { secret = { "an-old-secret", SECRET }, sign_rule = v[1] })
      assert.is_table(ev, err and tostring(err))
      assert.is_true(ev.verified)
      assert.are.equal(2, ev.secret_index)
      assert.are.equal(v[6] == "base64" and want or want:upper(), ev.id)
      assert.are.equal(419631107, ev.sn)
      if math.type then
        assert.are.equal("integer", math.type(ev.sn))
        assert.are.equal("float", math.type(ev.data.voltage))
      end
      assert.are.equal(3.6, ev.data.voltage)
      assert.are.equal("caf\195\169", ev.data.note)
      assert.are.equal(2, ev.data.nested.a[2])
      -- only the members the rule signs reach the event (issue 12 §3)
      local r = rules.rule(v[1])
      assert.are.equal(r.null ~= "skip" and json.null or nil, ev.data.reason)
      assert.are.equal(r.empty == "keep" and "" or nil, ev.data.memo)
      assert.is_true(ev.data.ok)
      assert.is_nil(ev.data.sign)
      -- hex signs verify in either case
      if v[6] ~= "base64" then
        local flipped = v[6] == "upper" and want:lower() or want:upper()
        assert.is_table((callback.verify(body_with(flipped), { secret = SECRET, sign_rule = v[1] })))
      end
      -- a wrong secret, a changed member: refused, naming the rule, never the secret
      local _, e2 = callback.verify(body, { secret = "wrong", sign_rule = v[1] })
      assert.are.equal("bad_sign", e2.reason)
      if not rules.is_default(v[1]) then assert.matches("under rule " .. v[2], e2.message, 1, true) end
      local _, e3 = callback.verify((body:gsub("419631107", "419631108")), { secret = SECRET, sign_rule = v[1] })
      assert.are.equal("bad_sign", e3.reason)
      assert.is_nil(tostring(e3):find(SECRET, 1, true))
      assert.is_nil(tostring(e3):find(want, 1, true))
      -- the default rule takes only md5-key's signs
      assert.are.equal(rules.is_default(v[1]), callback.verify(body, { secret = SECRET }) ~= nil)
      -- the receiver takes the rule too
      local rcv = receiver.new { secret = SECRET, sign_rule = v[1], max_age = false } -- a 2019 body
      local status, _, rev = rcv:receive(body)
      assert.are.equal(200, status)
      assert.are.equal(ev.id, rev.id)
      assert.are.equal(401, (rcv:receive(body_with(("0"):rep(#want)))))
    end)
  end
end)

describe("callback.discover #unit", function()
  it("names the rule each body was signed with, and only it", function()
    for _, v in ipairs(VARIANTS) do
      local report = assert(callback.discover(body_with(expected(v)), { "not-this-one", SECRET }))
      local custom = type(v[1]) == "table" and v[1].suffix
      if custom then
        -- a rule it does not know: none, and it says what it tried; given as a guess, found
        assert.are.same({}, report.matches)
        local guessed = assert(callback.discover(body_with(expected(v)), SECRET, { { digest = "md5", suffix = "&token=" } }))
        assert.are.same({ v[2] }, sorted_names(guessed))
        assert.are.equal(v[2], guessed.tried[#guessed.tried])
      else
        assert.are.same({ v[2] }, sorted_names(report))
        assert.are.equal(2, report.matches[1].secret_index)
        assert.are.same({}, report.matches[1].undetermined) -- this body has "" and null members
      end
      assert.is_true(#report.tried >= 7)
      assert.are.equal(CANON.skip, report.canonical)
      local text = json.encode { report.tried, report.sign_form, report.note or "", report.canonical, sorted_names(report) }
      assert.is_nil(text:find(SECRET, 1, true))
      assert.is_nil(text:find(expected(v), 1, true))
    end
  end)

  -- the reference's four examples, copied as the reference prints them
  -- (tabs, a trailing comma, device_type 38); their secret is unknown
  local SIGN = "641EB269A46944D404EC6BEF902E7918"
  local REFERENCE = {
    '{\n\t"sn": 419631107,\n\t"voltage": 3.659,\n\t"frequency": 37.919,\n\t"locked": 0,\n\t"car_detected": 1,\n' ..
      '\t"shell_opened": 0,\n\t"low_battery": 0,\n\t"coil_fault": 0,\n\t"bar_position_error": 0,\n\t"motor_fail": 1,\n' ..
      '\t"rs_si": 1,\n\t"updated_at": "2019-03-13T10:42:39+08:00",\n    "sign":"' .. SIGN .. '",\n    "device_type":38,\n}',
    '{\n    "guid": "3019FF21F07FA9EFD7CA1DBBE8AF3749",\n\t"sn": 419631107,\n\t"commnad_status": "succeeded",\n' ..
      '\t"reason":"NULL",\n    "updated_at": "2019-03-13T10:42:39+08:00",\n    "sign":"' .. SIGN .. '",\n     "device_type":38,\n}',
    '{\n\t"sn": 419631107,\n\t"voltage": 3.659,\n\t"frequency": 37.919,\n\t"car_detected": 1,\n\t"low_battery": 0,\n' ..
      '    "coil_fault": 0,\n\t"rs_si": 1,\n\t"updated_at": "2019-03-13T10:42:39+08:00",\n    "sign":"' .. SIGN .. '",\n' ..
      '    "device_type":38,\n}',
    '{\n    "guid": "3019FF21F07FA9EFD7CA1DBBE8AF3749",\n\t"sn": 419631107,\n\t"commnad_status": "succeeded",\n' ..
      '\t"reason":"NULL",\n    "updated_at": "2019-03-13T10:42:39+08:00",\n    "sign":"' .. SIGN .. '",\n     "device_type":38,\n}',
  }

  it("says that no rule verifies the reference's examples with a wrong secret, and what it tried", function()
    for _, body in ipairs(REFERENCE) do
      local report = assert(callback.discover(body, { SECRET, "kinot-sim-secret" }))
      assert.are.same({}, report.matches)
      assert.are.same(rules.BASES, report.tried) -- no "" nor null member: one canonical string each
      assert.are.same({ "hmac-sha1", "hmac-sha256" }, report.ruled_out)
      assert.are.equal("32 hex characters, upper case", report.sign_form)
      assert.matches("cannot tell whether empty values are skipped", report.note, 1, true)
    end
  end)

  it("finds the rule of a reference-shaped body signed under each base, and says what the body cannot tell", function()
    local canon = 'commnad_status=succeeded&device_type=38&guid=3019FF21F07FA9EFD7CA1DBBE8AF3749&reason=NULL' ..
      '&sn=419631107&updated_at=2019-03-13T10:42:39+08:00'
    local cases = {
      { "md5-key", openssl("md5", canon .. "&key=" .. SECRET):upper() },
      { "md5-bare+lower", openssl("md5", canon .. SECRET) },
      { "hmac-sha256+lower", openssl("sha256", canon, SECRET) },
      { "hmac-md5+base64", openssl("md5", canon, SECRET, true) },
    }
    for _, c in ipairs(cases) do
      local report = assert(callback.discover((REFERENCE[2]:gsub(SIGN, c[2])), SECRET))
      assert.are.same({ c[1] }, sorted_names(report))
      assert.are.same({ "empty", "null" }, report.matches[1].undetermined)
    end
  end)

  it("refuses a body without a sign, one that is not JSON, and a sign of no known form", function()
    local _, err = callback.discover('{"sn":1}', SECRET)
    assert.are.equal("no_sign", err.reason)
    _, err = callback.discover('{"sn":1,"sign":"x"', SECRET)
    assert.are.equal("not_json", err.reason)
    local report = assert(callback.discover('{"sn":1,"sign":"not-a-digest"}', SECRET))
    assert.are.same({}, report.matches)
    assert.matches("neither hex nor base64", report.note, 1, true)
    assert.has_error(function() callback.discover('{"sn":1}') end)
    assert.has_error(function() callback.discover('{"sn":1}', { 42 }) end, "kinot: secret[1] must be a string")
  end)
end)

describe("the Lua member reader and the C scanner #unit", function()
  local vectors = H.fixture("callback-sign.json").vectors

  local function verdict_c(body, secret)
    local ev, err = callback.verify(body, { secret = secret, max_body = math.huge })
    return ev and ("ok " .. ev.id) or err.reason
  end
  -- the default rule through the Lua reader (rules.check does not hand it to C)
  local function verdict_lua(body, secret)
    local id, err = rules.check(body, { secret }, rules.rule("md5-key"), nil)
    return id and ("ok " .. id) or err.reason
  end

  it("reads every vector as the C scanner does: same verdict, same canonical string, same values", function()
    for _, v in ipairs(vectors) do
      local id, err = rules.check(v.body, { v.secret }, rules.rule { digest = "md5", suffix = "&key=", null = "skip",
                                                                               encoding = "upper", empty = "skip" }, nil)
      local ev, cerr = callback.verify(v.body, { secret = v.secret, max_body = math.huge })
      assert.are.equal(ev and "ok" or cerr.reason, id and "ok" or err.reason, v.id)
      if ev then
        assert.are.equal(ev.id, id)
        local data = callback.event_of(v.body, id, 1).data
        for k, x in pairs(ev.data) do
          if k ~= "sign" then
            if type(x) == "table" then assert.are.same(x, data[k], v.id .. " " .. k)
            else assert.are.equal(x, data[k], v.id .. " " .. k) end
            if math.type then assert.are.equal(math.type(x), math.type(data[k]), v.id .. " " .. k) end
          end
        end
      end
      local canonical = callback.canonical(v.body)
      local lua_members = rules.members(v.body)
      assert.are.equal(canonical, lua_members and (rules.canonical(lua_members, "md5-key")) or nil, v.id)
    end
  end)

  it("refuses what the C scanner refuses, for the same reason, over hostile bodies", function()
    local cases = {
      '{"a":1,"a":2,"sign":"x"}', '{"a":1,,"sign":"x"}', '{,}', '{"a":01,"sign":"x"}', '{"a":1.,"sign":"x"}',
      '{"a":-,"sign":"x"}', '{"a":1e,"sign":"x"}', '{"a":"\\ud800","sign":"x"}', '{"a":"\\udc00x","sign":"x"}',
      '{"a":"\\x","sign":"x"}', '{"a":"\1","sign":"x"}', '{"a":"\127","sign":"1"}', '{"a":tru,"sign":"x"}',
      '{"a":[1,],"sign":"x"}', '{"a":[1,,],"sign":"x"}', '{"a":{"b":1,},"sign":"x"}', '{"a":{"b"},"sign":"x"}',
      '[1]', '', '   ', '{"a":1} x', '{"a":1}  \n', '{"sign":null}', '{"sign":""}', '{"sign":5}',
      '{"a":"\\ud83d\\ude00","sign":"x"}', '{"a":"unterminated', '{"a":1', '{"a"', '{"a":', '{"a" 1}',
      string.rep("[", 70) .. string.rep("]", 70), '{"a":' .. string.rep("[", 63) .. string.rep("]", 63) .. ',"sign":"x"}',
      '{"a":' .. string.rep("[", 64) .. string.rep("]", 64) .. ',"sign":"x"}',
      '{"a":1e400,"b":-0,"c":123456789012345678901,"sign":"x"}',
    }
    for _, body in ipairs(cases) do
      assert.are.equal(verdict_c(body, SECRET), verdict_lua(body, SECRET), body)
      local members = rules.members(body)
      assert.are.equal(callback.canonical(body), members and (rules.canonical(members, "md5-key")) or nil, body)
    end
    -- the same over mutations of every vector: a byte dropped, doubled or changed
    local seed = 12345
    local function rnd(n)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n + 1
    end
    local alphabet = '{}[],:"\\ -0123456789.eEtrufalsn\t\n\1\127\200ab'
    local compared = 0
    for _, v in ipairs(vectors) do
      for _ = 1, 150 do
        local b, i = v.body, rnd(#v.body)
        local op = rnd(3)
        if op == 1 then b = b:sub(1, i - 1) .. b:sub(i + 1)
        elseif op == 2 then b = b:sub(1, i) .. b:sub(i)
        else
          local j = rnd(#alphabet)
          b = b:sub(1, i - 1) .. alphabet:sub(j, j) .. b:sub(i + 1)
        end
        assert.are.equal(verdict_c(b, v.secret), verdict_lua(b, v.secret), b)
        local members = rules.members(b)
        assert.are.equal(callback.canonical(b), members and (rules.canonical(members, "md5-key")) or nil, b)
        compared = compared + 1
      end
    end
    assert.are.equal(150 * #vectors, compared)
  end)

  it("sorts keys byte-wise whatever the collation locale", function()
    local body = '{"b":1,"B":2,"a":3,"\\u00e9":4,"_":5,"a_":6,"A":7,"sign":"x"}'
    local want = "A=7&B=2&_=5&a=3&a_=6&b=1&\195\169=4"
    assert.are.equal(want, (rules.canonical(assert(rules.members(body)), "md5-key")))
    assert.are.equal(want, callback.canonical(body))
    local was = os.setlocale(nil, "collate")
    for _, loc in ipairs { "C.utf8", "C.UTF-8", "en_US.UTF-8", "de_DE.UTF-8" } do
      if os.setlocale(loc, "collate") then
        assert.are.equal(want, (rules.canonical(assert(rules.members(body)), "md5-key")), loc)
      end
    end
    os.setlocale(was, "collate")
  end)

  it("keeps the members intact under an eager collector", function()
    local body = body_with("x")
    collectgarbage("setpause", 0)
    for _ = 1, 50 do
      local members = rules.members(body:sub(1)) -- a fresh string each time
      collectgarbage()
      assert.are.equal(CANON.skip, (rules.canonical(members, "md5-key")))
    end
    collectgarbage("setpause", 200)
  end)
end)

-- ---------------------------------------------------------------- the CLI

local kinot = H.kinot

local function tmpfile(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

describe("kinot verify --discover #cli", function()
  local files = {}
  local function file(text)
    files[#files + 1] = tmpfile(text)
    return files[#files]
  end
  teardown(function() for _, p in ipairs(files) do os.remove(p) end end)

  it("names the rule a body verifies under, and --sign-rule then verifies it", function()
    local v = VARIANTS[3] -- md5-secret
    local sign = expected(v)
    local path = file(body_with(sign))
    local out, err, rc = kinot("verify --discover --secret " .. SECRET .. " " .. path)
    assert.are.equal(0, rc, err)
    assert.matches("verifies under: md5-secret", out, 1, true)
    assert.matches('use:%s+sign_rule = "md5%-secret"', out)
    assert.is_nil(out:find(SECRET, 1, true))
    assert.is_nil(out:find(sign, 1, true))
    -- the secret from the environment, as `kinot verify` takes it
    out, err, rc = kinot("--json verify --discover " .. path, "KINOT_APP_SECRET=" .. SECRET)
    assert.are.equal(0, rc, err)
    local doc = json.decode(out)
    assert.is_true(doc.valid)
    assert.are.same({ "md5-secret" }, doc.rules)
    out, _, rc = kinot("verify --secret " .. SECRET .. " " .. path)
    assert.are.equal(1, rc)
    assert.matches("kinot verify --discover", out, 1, true)
    out, err, rc = kinot("verify --sign-rule md5-secret --secret " .. SECRET .. " " .. path)
    assert.are.equal(0, rc, err)
    assert.matches("valid", out, 1, true)
    -- the canonical string shown is the one the rule signs
    local keep = file(body_with(expected(VARIANTS[6])))
    out, err, rc = kinot("--json verify --sign-rule md5-key+keep-empty --secret " .. SECRET .. " " .. keep)
    assert.are.equal(0, rc, err)
    assert.are.equal(CANON.keep_empty, json.decode(out).canonical)
    -- with --discover, --sign-rule is one more guess
    local custom = file(body_with(expected(VARIANTS[#VARIANTS])))
    _, err, rc = kinot("verify --discover --secret " .. SECRET .. " " .. custom)
    assert.are.equal(1, rc, err)
    out, err, rc = kinot("verify --discover --sign-rule 'md5-suffix[&token=]' --secret " .. SECRET .. " " .. custom)
    assert.are.equal(0, rc, err)
    assert.matches("verifies under: md5-suffix[&token=]+lower", out, 1, true)
    _, err, rc = kinot("verify --sign-rule md5-wrong --secret " .. SECRET .. " " .. path)
    assert.are.equal(2, rc)
    assert.matches("unknown rule 'md5-wrong'", err, 1, true)
  end)

  it("says that none verifies the reference's example with a wrong secret, and what it tried", function()
    local path = file('{\n\t"sn": 419631107,\n\t"voltage": 3.659,\n\t"rs_si": 1,\n' ..
      '    "sign":"641EB269A46944D404EC6BEF902E7918",\n    "device_type":38,\n}')
    local out, err, rc = kinot("verify --discover --secret wrong-secret " .. path)
    assert.are.equal(1, rc, err)
    assert.matches("no known rule verifies this body", out, 1, true)
    assert.matches("tried:%s+7 rules: md5%-key, md5%-secret, md5%-app_secret, md5%-bare, hmac%-md5, hmac%-sha1, hmac%-sha256", out)
    assert.matches("ruled out: hmac-sha1, hmac-sha256", out, 1, true)
    assert.is_nil(out:find("641EB269A46944D404EC6BEF902E7918", 1, true))
    out, _, rc = kinot("--json verify --discover --secret wrong-secret " .. path)
    assert.are.equal(1, rc)
    local doc = json.decode(out)
    assert.is_false(doc.valid)
    assert.are.equal(7, #doc.tried)
    _, err, rc = kinot("verify --discover " .. path, "KINOT_APP_SECRET=")
    assert.are.equal(1, rc, err) -- an empty secret is still a secret: nothing verifies
  end)
end)

-- ---------------------------------------------------------------- monitor

describe('verify = "monitor" #unit', function()
  local v = VARIANTS[3] -- a body signed with md5-secret: a real one whose rule we guessed wrong
  local real = body_with(expected(v))
  local forged = body_with(("0"):rep(32))

  it("hands a body that fails over unverified, outside nginx, and still refuses bodies that are not callbacks", function()
    local rcv = receiver.new { secret = SECRET, verify = "monitor" }
    local status, body, ev, err = rcv:receive(forged)
    assert.are.equal(200, status)
    assert.are.equal(receiver.OK_BODY, body)
    assert.is_false(ev.verified)
    assert.are.equal(419631107, ev.sn)
    assert.is_nil(ev.data.sign)
    assert.are.equal("bad_sign", err.reason)
    assert.is_nil(err.rules)
    -- a redelivery of the same body is a duplicate
    local s2, _, ev2, _, dup = rcv:receive(forged)
    assert.are.equal(200, s2)
    assert.is_nil(ev2)
    assert.is_true(dup)
    -- the real body: unverified under the default rule, and err names the rule it verifies under
    local _, _, ev3, err3 = rcv:receive(real)
    assert.is_false(ev3.verified)
    assert.are.same({ "md5-secret" }, err3.rules)
    assert.is_nil(err3.message:find(SECRET, 1, true))
    -- no sign at all: handed over too
    local _, _, ev4 = rcv:receive('{"sn":7,"updated_at":"x"}')
    assert.is_false(ev4.verified)
    -- not JSON, too large: refused as ever
    assert.are.equal(400, (rcv:receive('{"sn":')))
    assert.are.equal(413, (rcv:receive(("x"):rep(rcv.max_body + 1))))
    -- the default is to enforce
    assert.are.equal(401, (receiver.new { secret = SECRET }:receive(forged)))
    assert.are.equal(401, (receiver.new { secret = SECRET, verify = "enforce" }:receive(forged)))
  end)

  describe("in real nginx #nginx", function()
    local ng
    setup(function()
      ng = H.nginx {
        http = [[
          lua_shared_dict seen 1m;
          init_by_lua_block {
            local callback = require "kinot.callback"
            local function note(ev)
              local d = ngx.shared.seen
              local n = d:incr("n", 1, 0)
              d:set(n, tostring(ev.verified) .. " " .. tostring(ev.sn) .. " " .. tostring(ev.data.sign))
            end
            monitor = callback.handler { secret = "]] .. SECRET .. [[", max_age = false, verify = "monitor", on_status = note }
            enforce = callback.handler { secret = "]] .. SECRET .. [[", max_age = false, on_status = note }
            by_rule = callback.handler { secret = "]] .. SECRET .. [[", max_age = false, sign_rule = "md5-secret", on_status = note }
          }
        ]],
        server = [[
          location = /monitor { content_by_lua_block { monitor() } }
          location = /enforce { content_by_lua_block { enforce() } }
          location = /rule { content_by_lua_block { by_rule() } }
          location = /seen { content_by_lua_block {
            local d, out = ngx.shared.seen, {}
            for i = 1, d:get("n") or 0 do out[i] = d:get(i) end
            ngx.print(table.concat(out, "\n"))
          } }
        ]],
      }
    end)
    teardown(function() ng.stop() end)

    local function post(where, body) return H.raw("POST", ng.url .. where, body, { ["Content-Type"] = "application/json" }) end
    local function seen() return H.raw("GET", ng.url .. "/seen").body end

    it("answers 401 to a forged body by default, and the handler never sees it", function()
      local res = post("/enforce", forged)
      assert.are.equal(401, res.status)
      core.sleep(0.1)
      assert.are.equal("", seen())
    end)

    it("hands a forged body to on_status with verified = false and warns in the error log, without the sign", function()
      local res = post("/monitor", forged)
      assert.are.equal(200, res.status)
      assert.are.equal('{"code":0,"message":"OK"}', res.body)
      assert.are.equal("false 419631107 nil", H.wait_for(function() return seen() ~= "" and seen() end, 5))
      local log = H.wait_for(function() local l = ng.log() return l:find("UNVERIFIED", 1, true) and l end, 5)
      assert.matches('[warn]', log, 1, true)
      assert.matches('kinot callback handler with verify = "monitor"', log, 1, true) -- said once, at start
      assert.matches('kinot callback accepted UNVERIFIED (verify = "monitor"), sn 419631107: callback sign does not match',
        log, 1, true)
      assert.is_nil(log:find(("0"):rep(32), 1, true))
      assert.is_nil(log:find(SECRET, 1, true))
    end)

    it("writes no line of the attacker's into the error log", function()
      local body = '{"sn":"1\\n2026/01/01 00:00:00 [emerg] 1#1: forged line","updated_at":"x","sign":"00"}'
      -- a quoted sn is a known field of the wrong type: refused before any log line names it
      assert.are.equal(400, post("/monitor", body).status)
      -- an unknown member carries it instead: the warning names only the sn
      local body2 = '{"sn":7,"note":"1\\n2026/01/01 00:00:00 [emerg] 1#1: forged line","updated_at":"x","sign":"00"}'
      assert.are.equal(200, post("/monitor", body2).status)
      local log = H.wait_for(function() local l = ng.log() return l:find("UNVERIFIED (verify = \"monitor\"), sn 7", 1, true) and l end, 5)
      assert.is_truthy(log)
      assert.is_nil(log:find("\n2026/01/01 00:00:00 [emerg]", 1, true))
    end)

    it("names, in the warning, the rule a real body verifies under; with that sign_rule it is verified", function()
      assert.are.equal(200, post("/monitor", real).status)
      local log = H.wait_for(function() local l = ng.log() return l:find("verifies under", 1, true) and l end, 5)
      assert.matches("it verifies under sign_rule md5-secret", log, 1, true)
      assert.is_nil(log:find(expected(v), 1, true))
      assert.are.equal(200, post("/rule", real).status)
      assert.are.equal(401, post("/rule", forged).status)
      local lines = H.wait_for(function()
        local s = seen()
        return s:find("true 419631107", 1, true) and s
      end, 5)
      assert.matches("nil\nfalse 419631107 nil\ntrue 419631107 nil$", lines)
    end)
  end)
end)

-- ---------------------------------------------------------------- notifications, stage

describe("notification settings, both spellings, cleared URLs #sim #nginx", function()
  local sim
  setup(function() sim = H.sim { locks = 10, sensors = 10, dtus = 1 } end)
  teardown(function() sim.stop() end)

  it("takes commandResp_callback_url as command_resp_callback_url, and clears a URL with \"\"", function()
    local c = sim.client()
    local set = assert(c:set_notifications { device_type = "lock", status_changed_callback_url = "http://127.0.0.1:9/s",
                                             commandResp_callback_url = "http://127.0.0.1:9/c" })
    assert.are.equal("http://127.0.0.1:9/c", set.command_resp_callback_url)
    local got = assert(c:notifications(18))
    assert.are.equal("http://127.0.0.1:9/s", got.status_changed_callback_url)
    assert.are.equal("http://127.0.0.1:9/c", got.command_resp_callback_url)
    -- cleared: the simulator stores "" and sends no callback there any more
    assert(c:set_notifications { device_type = 18, status_changed_callback_url = "" })
    got = assert(c:notifications(18))
    assert.are.equal("", got.status_changed_callback_url)
    assert.are.equal("http://127.0.0.1:9/c", got.command_resp_callback_url)
    local _, err = c:test_notification(419600001, "status_changed")
    assert.matches("no status_changed callback url", err.message, 1, true)
    assert(c:set_notifications { device_type = 18, commandResp_callback_url = "" })
    assert.are.equal("", assert(c:notifications(18)).command_resp_callback_url)
  end)

  it("raises when the two spellings disagree, or a URL is not one", function()
    local c = sim.client()
    assert.has_error(function()
      c:set_notifications { device_type = 18, command_resp_callback_url = "http://a/1", commandResp_callback_url = "http://a/2" }
    end, "kinot: command_resp_callback_url and commandResp_callback_url (one field, two spellings) differ")
    assert.has_error(function() c:set_notifications { device_type = 18, commandResp_callback_url = "ftp://x" } end)
    assert.has_error(function() c:set_notifications { device_type = 18, status_changed_callback_url = " " } end)
  end)

  it("sends the URL under both spellings, so either reading of the reference reaches the platform", function()
    local ng = H.nginx {
      http = "lua_shared_dict got 1m;",
      server = [[
        location / { content_by_lua_block {
          ngx.req.read_body()
          ngx.shared.got:set("body", ngx.req.get_body_data())
          ngx.header["Content-Type"] = "application/json"
          ngx.print('{"code":0,"message":"OK","objects":[{"device_type":34,"commandResp_callback_url":"http://x/c"}]}')
        } }
        location = /got { content_by_lua_block { ngx.print(ngx.shared.got:get("body")) } }
      ]],
    }
    local ok, e = pcall(function()
      local c = require("kinot").new { app_key = "k", app_secret = "s", endpoint = ng.url, timeout = 5 }
      local r = assert(c:set_notifications { device_type = 34, command_resp_callback_url = "http://x/c" })
      -- an answer in the table's spelling reads as the example's
      assert.are.equal("http://x/c", r.command_resp_callback_url)
      local sent = json.decode(H.raw("GET", ng.url .. "/got").body)
      assert.are.equal("http://x/c", sent.command_resp_callback_url)
      assert.are.equal("http://x/c", sent.commandResp_callback_url)
      assert.is_nil(sent.status_changed_callback_url)
    end)
    ng.stop()
    assert(ok, e)
  end)

  it("kinot notifications set --clear-status-url, and get shows both URLs", function()
    local env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint)
    local _, err, rc = kinot("notifications set --device-type sensor --status-url http://127.0.0.1:9/s --command-url http://127.0.0.1:9/c", env)
    assert.are.equal(0, rc, err)
    _, err, rc = kinot("notifications set --device-type sensor --clear-status-url", env)
    assert.are.equal(0, rc, err)
    local out
    out, err, rc = kinot("notifications get sensor", env)
    assert.are.equal(0, rc, err)
    assert.matches("status_changed_callback_url:%s+%(not set%)", out)
    assert.matches("command_resp_callback_url:%s+http://127.0.0.1:9/c", out)
    out = kinot("--json notifications get 34", env)
    assert.are.equal("", json.decode(out).status_changed_callback_url)
    _, err, rc = kinot("notifications set --device-type sensor --clear-command-url --command-url http://127.0.0.1:9/c", env)
    assert.are.equal(2, rc)
    assert.matches("--command-url and --clear-command-url contradict each other", err, 1, true)
    _, err, rc = kinot("notifications set --device-type sensor --clear-command-url", env)
    assert.are.equal(0, rc, err)
    out = kinot("notifications get 34", env)
    assert.matches("command_resp_callback_url:%s+%(not set%)", out)
  end)
end)

describe("X-Ca-Stage #sim", function()
  local sim
  setup(function() sim = H.sim { locks = 10, sensors = 10, dtus = 1, stage = "TEST" } end)
  teardown(function() sim.stop() end)

  it("a simulator started with a stage serves that stage only, as the gateway answers an API not in a stage", function()
    assert(sim.client({ stage = "TEST" }):locker(419600001))
    for _, stage in ipairs { false, "RELEASE", "PRE", "test" } do
      local _, err = sim.client({ stage = stage or nil }):locker(419600001)
      assert.are.equal("gateway", err.kind)
      assert.are.equal(404, err.status)
      assert.are.equal("Invalid Url", err.gateway_error)
      assert.matches("X-Ca-Stage; none means RELEASE", err.message, 1, true)
    end
    -- a stage-less request is a RELEASE request
    local rel = H.sim { locks = 10, sensors = 10, dtus = 1, stage = "RELEASE" }
    local ok, e = pcall(function()
      assert(rel.client():locker(419600001))
      assert(rel.client({ stage = "RELEASE" }):locker(419600001))
      assert.are.equal("Invalid Url", select(2, rel.client({ stage = "TEST" }):locker(419600001)).gateway_error)
    end)
    rel.stop()
    assert(ok, e)
  end)

  it("kinot sim --stage NAME starts a simulator that serves that stage only", function()
    local pidf = os.tmpname()
    local ok, e = pcall(function()
      local out, err, rc = kinot("--json sim --stage TEST --daemon --pid-file " .. pidf .. " --locks 5 --sensors 5 --dtus 1")
      assert.are.equal(0, rc, err)
      local info = json.decode(out)
      assert.are.equal("TEST", info.stage)
      local env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", info.app_key, info.app_secret,
        info.endpoint)
      _, err, rc = kinot("--stage TEST locker 419600001", env)
      assert.are.equal(0, rc, err)
      _, err, rc = kinot("locker 419600001", env)
      assert.are.equal(3, rc)
      assert.matches("Invalid Url", err, 1, true)
    end)
    kinot("sim stop --pid-file " .. pidf)
    os.remove(pidf)
    assert(ok, e)
  end)

  it("kinot --stage NAME and KINOT_STAGE send it", function()
    local env = string.format("KINOT_APP_KEY=%s KINOT_APP_SECRET=%s KINOT_ENDPOINT=%s", sim.app_key, sim.app_secret, sim.endpoint)
    local out, err, rc = kinot("--stage TEST locker 419600001", env)
    assert.are.equal(0, rc, err)
    assert.matches("419600001", out, 1, true)
    _, err, rc = kinot("locker 419600001", env .. " KINOT_STAGE=TEST")
    assert.are.equal(0, rc, err)
    _, err, rc = kinot("locker 419600001", env)
    assert.are.equal(3, rc)
    assert.matches("Invalid Url", err, 1, true)
    _, _, rc = kinot("--stage PRE locker 419600001", env .. " KINOT_STAGE=TEST")
    assert.are.equal(3, rc) -- the flag wins over the environment
  end)
end)
