-- Callback sign rules.  The reference's sign section is missing, so the rule
-- the SDK verifies by default ("md5-key": every top-level member but `sign`,
-- null and "" skipped, sorted byte-wise by key, `key=value` joined by '&',
-- then "&key=" and the secret, MD5, upper-case hex) is our reading.  This
-- module names that rule and the credible others, verifies a body under any
-- of them, and finds which of them a captured body was signed with
-- (discover).  The default rule's fast path stays in C (src/cbscan.c);
-- this file makes the other rules' canonical strings and signs, and
-- discover.  It builds no event: an event's data comes from the one
-- builder (kinot.callback.scanner.data, kinot.callback.event.event_of).
--
-- A rule is a name or a table of parts:
--   digest   "md5" | "hmac-md5" | "hmac-sha1" | "hmac-sha256"
--   suffix   text put between the canonical string and the secret, which is
--            then appended: "&key=", "&secret=", "&app_secret=", "" (the
--            secret bare).  MD5 needs one (default "&key="); an HMAC keys
--            with the secret and appends nothing unless given one.
--   empty    "skip" | "keep": members whose value is "" (kept as `k=`)
--   null     "skip" | "empty" | "text": null members skipped, or kept as
--            `k=` or as `k=null`
--   encoding "upper" | "lower" (hex) | "base64".  Hex signs verify in
--            either case; the case names the rule a body was signed with.
-- Names: a base, then "+modifier"s:
--   base      md5-key | md5-secret | md5-app_secret | md5-bare |
--             hmac-md5 | hmac-sha1 | hmac-sha256 |
--             <digest>-suffix[TEXT] (any other suffix)
--   modifiers keep-empty | null-as-empty | null-as-text | lower | upper | base64
-- e.g. "md5-key" (the default), "md5-secret+lower", "hmac-sha256+base64",
-- "md5-bare+keep-empty+null-as-text".
local core = require "kinot.core_loader"
local errors = require "kinot.errors"

local M = {}

M.DEFAULT = "md5-key"

local byte = string.byte
local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local concat, sort = table.concat, table.sort
local digest_of, ct_equal = core.digest, core.ct_equal
local read_members = require("kinot.callback.scanner").members

local SUFFIX_BY_NAME = { key = "&key=", secret = "&secret=", app_secret = "&app_secret=", bare = "" }
local NAME_BY_SUFFIX = {}
for k, v in pairs(SUFFIX_BY_NAME) do NAME_BY_SUFFIX[v] = k end
local HASH = { md5 = "md5", ["hmac-md5"] = "md5", ["hmac-sha1"] = "sha1", ["hmac-sha256"] = "sha256" }
local DIGEST_BYTES = { md5 = 16, sha1 = 20, sha256 = 32 }
local EMPTY = { skip = true, keep = true }
local NULL = { skip = true, empty = true, text = true }
local ENCODING = { upper = true, lower = true, base64 = true }

--- the bases discover tries, in the order it reports them
M.BASES = { "md5-key", "md5-secret", "md5-app_secret", "md5-bare", "hmac-md5", "hmac-sha1", "hmac-sha256" }

local function misuse(msg) errors.misuse("sign_rule: " .. msg) end

--- name(rule) -> the rule's canonical name (rule: normalized parts)
local function name_of(r)
  local base
  local sfx = r.suffix
  if r.digest == "md5" and NAME_BY_SUFFIX[sfx] then
    base = "md5-" .. NAME_BY_SUFFIX[sfx]
  elseif r.digest ~= "md5" and sfx == nil then
    base = r.digest
  else
    base = r.digest .. "-suffix[" .. (sfx or "") .. "]"
  end
  local out = { base }
  if r.empty == "keep" then out[#out + 1] = "keep-empty" end
  if r.null == "empty" then out[#out + 1] = "null-as-empty" end
  if r.null == "text" then out[#out + 1] = "null-as-text" end
  if r.encoding ~= "upper" then out[#out + 1] = r.encoding end
  return concat(out, "+")
end

local normalized = setmetatable({}, { __mode = "k" }) -- the rules made here

-- parts -> normalized rule (checked); level for misuse
local function from_parts(t, level)
  local r = {}
  r.digest = t.digest or "md5"
  if not HASH[r.digest] then
    misuse("digest must be md5, hmac-md5, hmac-sha1 or hmac-sha256 (got " .. tostring(r.digest) .. ")", level)
  end
  r.hash = HASH[r.digest]
  r.hmac = r.digest ~= "md5"
  r.suffix = t.suffix
  if r.suffix == nil and not r.hmac then r.suffix = "&key=" end
  if r.suffix ~= nil and type(r.suffix) ~= "string" then misuse("suffix must be a string", level) end
  r.empty = t.empty or "skip"
  if not EMPTY[r.empty] then misuse("empty must be skip or keep (got " .. tostring(r.empty) .. ")", level) end
  r.null = t.null or "skip"
  if not NULL[r.null] then misuse("null must be skip, empty or text (got " .. tostring(r.null) .. ")", level) end
  r.encoding = t.encoding or "upper"
  if not ENCODING[r.encoding] then
    misuse("encoding must be upper, lower or base64 (got " .. tostring(r.encoding) .. ")", level)
  end
  for k in pairs(t) do
    if k ~= "digest" and k ~= "suffix" and k ~= "empty" and k ~= "null" and k ~= "encoding" and k ~= "name" then
      misuse("unknown part '" .. tostring(k) .. "' (parts: digest, suffix, empty, null, encoding)", level)
    end
  end
  r.name = name_of(r)
  r.default = r.name == M.DEFAULT
  normalized[r] = true
  return r
end

local MODIFIERS = {
  ["keep-empty"] = { "empty", "keep" }, ["null-as-empty"] = { "null", "empty" }, ["null-as-text"] = { "null", "text" },
  lower = { "encoding", "lower" }, upper = { "encoding", "upper" }, base64 = { "encoding", "base64" },
}

local function parse(name, level)
  local parts = {}
  local base, rest = name:match("^([%w%-]+%-suffix%b[])(.*)$")
  if not base then base, rest = name:match("^([^+]*)(.*)$") end
  local digest, sfx = base:match("^(.-)%-suffix%[(.*)%]$")
  if digest then
    parts.digest, parts.suffix = digest, sfx
  elseif HASH[base] and base ~= "md5" then
    parts.digest = base
  else
    local which = base:match("^md5%-(.+)$")
    if not (which and SUFFIX_BY_NAME[which]) then
      misuse("unknown rule '" .. name .. "' (bases: " .. concat(M.BASES, ", ") .. "; modifiers: +keep-empty, " ..
        "+null-as-empty, +null-as-text, +lower, +base64)", level)
    end
    parts.digest, parts.suffix = "md5", SUFFIX_BY_NAME[which]
  end
  for mod in rest:gmatch("[^+]+") do
    local m = MODIFIERS[mod]
    if not m then misuse("unknown modifier '+" .. mod .. "' in '" .. name .. "'", level) end
    parts[m[1]] = m[2]
  end
  if rest ~= "" and not rest:match("^%+[^+]") then misuse("malformed rule name '" .. name .. "'", level) end
  return from_parts(parts, level + 1)
end

local cache = {}

--- rule(spec) -> normalized rule {digest, suffix, empty, null, encoding, name, default}
-- spec: a name, a table of parts, or nil (the default)
function M.rule(spec, level)
  level = (level or 1) + 1
  if spec == nil then spec = M.DEFAULT end
  if type(spec) == "string" then
    local r = cache[spec]
    if not r then
      r = parse(spec, level)
      cache[spec] = r
    end
    return r
  end
  if type(spec) == "table" then
    if normalized[spec] then return spec end
    return from_parts(spec, level)
  end
  misuse("must be a rule name or a table of parts (got " .. type(spec) .. ")", level - 1)
end

--- is_default(spec) -> whether the rule is the C path's (md5-key in any hex case)
function M.is_default(spec)
  if spec == nil then return true end
  local r = M.rule(spec, 2)
  return r.digest == "md5" and r.suffix == "&key=" and r.empty == "skip" and r.null == "skip" and
    r.encoding ~= "base64"
end

-- ------------------------------------------------------------ members

local function refuse(reason, message)
  return nil, errors.new("callback", message, { reason = reason })
end

--- members(raw) -> list of {key, kind, text} in body order | nil, err
-- (canonical() keeps the list in key order as the field `sorted`)
-- kind: "string", "integer", "number", "true", "false", "null", "object", "array".
-- The one reader of callback bodies: the C scanner (src/cbscan.c), which
-- the default rule's fast path reads too (kinot.callback.scanner; through
-- the FFI on LuaJIT, the C API on Lua 5.4).
function M.members(raw)
  if type(raw) ~= "string" then errors.misuse("callback body must be a string") end
  local list, reason, why = read_members(raw)
  if not list then return refuse(reason, "callback body refused: " .. why) end
  return list
end

-- ------------------------------------------------------------ canonical strings

local plain_order -- whether '<' on strings is byte order: the "C" collation
local function bytewise(a, b) -- byte order whatever the locale (string '<' collates)
  local x, y = a.key, b.key
  if plain_order then return x < y end
  local n = #x < #y and #x or #y
  for i = 1, n do
    local c, d = byte(x, i), byte(y, i)
    if c ~= d then return c < d end
  end
  return #x < #y
end

--- canonical(members, rule) -> the string that is signed, without the secret; given sign or nil
function M.canonical(members, rule)
  rule = M.rule(rule, 2)
  local sorted = members.sorted -- sorted once per body, whatever the rules tried
  if not sorted then
    local collate = os.setlocale(nil, "collate")
    plain_order = collate == "C" or collate == "POSIX"
    sorted = {}
    for i = 1, #members do sorted[i] = members[i] end
    sort(sorted, bytewise)
    members.sorted = sorted
  end
  local out, given = {}, nil
  for _, m in ipairs(sorted) do
    if m.key == "sign" then
      given = m.text
    elseif m.kind == "null" then
      if rule.null == "empty" then out[#out + 1] = m.key .. "="
      elseif rule.null == "text" then out[#out + 1] = m.key .. "=null" end
    elseif m.kind == "string" and m.text == "" then
      if rule.empty == "keep" then out[#out + 1] = m.key .. "=" end
    else
      out[#out + 1] = m.key .. "=" .. m.text
    end
  end
  return concat(out, "&"), given
end

-- the sign of canonical under rule with secret, in the rule's encoding
local function compute(rule, canonical, secret)
  local enc = rule.encoding == "base64" and "base64" or "hex"
  local text = canonical
  if rule.suffix then text = canonical .. rule.suffix .. secret end
  local d = digest_of(rule.hash, text, rule.hmac and secret or nil, enc)
  if rule.encoding == "lower" then d = d:lower() end
  return d
end

-- whether given is the sign: hex in either case, base64 exactly
local function matches(rule, given, mine)
  if rule.encoding == "base64" then return ct_equal(given, mine) end
  return ct_equal(given:upper(), mine:upper())
end

--- sign(raw, secret, rule) -> the sign of the body under rule (any sign member ignored) | nil, err
function M.sign(raw, secret, rule)
  if type(secret) ~= "string" then errors.misuse("callback secret must be a string") end
  rule = M.rule(rule, 2)
  local members, err = M.members(raw)
  if not members then return nil, err end
  return compute(rule, (M.canonical(members, rule)), secret)
end

--- check(raw, secrets, rule, max_body) -> id, secret index, members | nil, err
-- id: the sign as computed (upper-case hex, or base64): a redelivery has
-- the same.  Every secret is tried, so timing tells nothing.
function M.check(raw, secrets, rule, max_body)
  if type(raw) ~= "string" then errors.misuse("callback body must be a string") end
  rule = M.rule(rule, 3)
  if max_body and #raw > max_body then
    return refuse("too_large", "callback body is " .. #raw .. " bytes, over the " .. max_body .. "-byte cap")
  end
  local members, err = M.members(raw)
  if not members then return nil, err end
  local canonical, given = M.canonical(members, rule)
  if given == nil or given == "" then return refuse("no_sign", "callback body has no sign member") end
  local id, index
  for i = 1, #secrets do
    local mine = compute(rule, canonical, secrets[i])
    if matches(rule, given, mine) and not index then
      index = i
      id = rule.encoding == "base64" and mine or mine:upper()
    end
  end
  if not index then
    return refuse("bad_sign", "callback sign does not match under rule " .. rule.name .. " (tampered body, wrong secret or wrong rule)")
  end
  return id, index, members
end

-- ------------------------------------------------------------ discover

-- what the sign looks like, without showing it
local function form_of(given)
  if given:match("^%x+$") and (#given == 32 or #given == 40 or #given == 64) then
    local up, low = given:find("[A-F]") ~= nil, given:find("[a-f]") ~= nil
    local case = up and low and "mixed" or low and "lower" or up and "upper" or "digits only"
    return { hex = true, bytes = #given / 2, case = case,
             text = #given .. " hex characters, " .. (case == "digits only" and "no letters" or case .. " case") }
  end
  local bytes = ({ [24] = 16, [28] = 20, [44] = 32 })[#given]
  if bytes and given:match("^[%w+/]+=*$") then
    return { base64 = true, bytes = bytes, text = #given .. " base64 characters (" .. bytes .. " bytes)" }
  end
  return { text = #given .. " characters, neither hex nor base64 of a known digest" }
end

--- discover(raw, secrets[, extra]) -> report | nil, err
-- Every rule this module knows (and every rule of the list extra: names or
-- tables) under which the body verifies with one of the secrets (a string
-- or a list).  report = {
--   matches = { {name, rule, secret_index, undetermined = {part...}} ... },
--   tried = { names... }, ruled_out = { the tried whose digest has another
--   length than the sign }, sign_form = "32 hex characters, upper case",
--   canonical = the default rule's canonical string,
--   note = what the body cannot tell (parts it has no member for) }
-- The sign and the secrets appear nowhere in the report.
function M.discover(raw, secrets, extra)
  if type(secrets) == "string" then secrets = { secrets } end
  if type(secrets) ~= "table" or #secrets == 0 then
    errors.misuse("discover needs the secret (a string or a list of strings)")
  end
  for i = 1, #secrets do
    if type(secrets[i]) ~= "string" then errors.misuse("secret[" .. i .. "] must be a string") end
  end
  -- the caller's rules, checked whatever the body holds
  if extra ~= nil then
    if type(extra) ~= "table" or next(extra) ~= nil and #extra == 0 then
      errors.misuse("discover's extra rules must be a list of sign rules")
    end
    for k in pairs(extra) do
      if type(k) ~= "number" or k < 1 or k > #extra or k ~= math.floor(k) then
        errors.misuse("discover's extra rules must be a list of sign rules")
      end
    end
    for _, spec in ipairs(extra) do M.rule(spec, 2) end
  end
  local members, err = M.members(raw)
  if not members then return nil, err end
  local canonical, given = M.canonical(members, M.DEFAULT)
  if given == nil or given == "" then return refuse("no_sign", "callback body has no sign member") end
  local has_empty, has_null = false, false
  for _, m in ipairs(members) do
    if m.key ~= "sign" then
      if m.kind == "null" then has_null = true end
      if m.kind == "string" and m.text == "" then has_empty = true end
    end
  end
  local form = form_of(given)
  local report = { matches = {}, tried = {}, ruled_out = {}, canonical = canonical, sign_form = form.text, secrets = #secrets }
  local undetermined = {}
  if not has_empty then undetermined[#undetermined + 1] = "empty" end
  if not has_null then undetermined[#undetermined + 1] = "null" end
  if form.hex and form.case == "digits only" then undetermined[#undetermined + 1] = "encoding" end
  local notes = {}
  if not has_empty then notes[#notes + 1] = "the body has no \"\" member, so it cannot tell whether empty values are skipped" end
  if not has_null then notes[#notes + 1] = "the body has no null member, so it cannot tell how nulls are treated" end
  if form.hex and form.case == "mixed" then notes[#notes + 1] = "the sign mixes upper and lower case hex" end
  report.note = #notes > 0 and table.concat(notes, "; ") or nil
  if not (form.hex or form.base64) then
    report.note = "the sign is " .. form.text .. ": no rule here could give it"
    return report
  end
  local encoding = form.base64 and "base64" or (form.case == "lower" and "lower" or "upper")
  local done = {}
  local function try(rule)
    if done[rule.name] then return end
    done[rule.name] = true
    report.tried[#report.tried + 1] = rule.name
    if DIGEST_BYTES[rule.hash] ~= form.bytes or (rule.encoding == "base64") ~= (encoding == "base64") then
      report.ruled_out[#report.ruled_out + 1] = rule.name
      return
    end
    local text = M.canonical(members, rule)
    for i = 1, #secrets do
      if matches(rule, given, compute(rule, text, secrets[i])) then
        report.matches[#report.matches + 1] = { name = rule.name, rule = rule, secret_index = i,
                                                undetermined = undetermined }
        return
      end
    end
  end
  for _, base in ipairs(M.BASES) do
    for _, empty in ipairs(has_empty and { "skip", "keep" } or { "skip" }) do
      for _, null in ipairs(has_null and { "skip", "empty", "text" } or { "skip" }) do
        local b = M.rule(base, 2)
        try(M.rule({ digest = b.digest, suffix = b.suffix, empty = empty, null = null, encoding = encoding }, 2))
      end
    end
  end
  -- the caller's own guesses, named in the body's hex case
  for _, spec in ipairs(extra or {}) do
    local r = M.rule(spec, 2)
    if r.encoding ~= "base64" and encoding ~= "base64" then
      r = M.rule({ digest = r.digest, suffix = r.suffix, empty = r.empty, null = r.null, encoding = encoding }, 2)
    end
    try(r)
  end
  return report
end

return M
