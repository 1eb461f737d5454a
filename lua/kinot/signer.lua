-- A keyed request signer (docs/signing.md): signer.new(secret) -> object with
-- :sign(request) -> {string_to_sign, signature, signed_headers} and :close().
-- The signing itself is always the C core's kn_sign.  On Lua 5.4 the
-- request table is read through the Lua C API (kinot.core); on LuaJIT it is
-- handed over through the FFI, which the JIT compiles, nearly twice as fast.
-- Both give the same results and the same errors (spec/sign_spec.lua).
-- Errors go through kinot.errors' two constructors, with the C binding's
-- messages word for word.
local core = require "kinot.core_loader"
local errors = require "kinot.errors"

local M = {}

local lib = require "kinot.native"
M.ffi = lib ~= false

if not lib then
  --- new(secret) -> the C core's signer userdata
  function M.new(secret)
    return core.signer(secret)
  end
  return M
end

local ffi = require "ffi"
local type, tostring, pairs, error, tonumber = type, tostring, pairs, error, tonumber
local misuse = errors.misuse

-- the machine failed: what the C binding's kn_fail raises
local function fail(msg)
  error(errors.new("internal", msg), 0)
end

local SIGN_NOMEM = -2 -- KN_SIGN_NOMEM of sign.h (a macro: spec/native_spec.lua compares)
-- enum kn_hmac, from the declarations (kinot.native)
local HMAC_SHA256, HMAC_SHA1 = lib.KN_HMAC_SHA256, lib.KN_HMAC_SHA1
local ffi_string, ffi_new, ffi_gc = ffi.string, ffi.new, ffi.gc

local Signer = {}
Signer.__index = Signer

-- a string as it is; a number as text, kept alive in self.keep until
-- kn_sign is done (the FFI holds only a pointer to it)
local function text(self, v, what)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    v = tostring(v)
    local keep = self.keep
    if not keep then keep = {}; self.keep = keep end
    keep[#keep + 1] = v
    return v
  end
  misuse(what .. " must be a string (got " .. t .. ")")
end

-- fills kv[at..] from a list of {name, value} pairs; returns the count
local function put_pairs(self, list, field, at)
  if list == nil then return 0 end
  if type(list) ~= "table" then misuse(field .. " must be a list of {name, value} pairs") end
  local n = #list
  self:reserve(at + n)
  local kv = self.kv
  for i = 1, n do
    local p = list[i]
    if type(p) ~= "table" then misuse(field .. "[" .. i .. "] must be a {name, value} pair") end
    local k, v = text(self, p[1], field), p[2]
    v = v == nil and "" or text(self, v, field)
    local e = kv[at + i - 1]
    e.name.p, e.name.n = k, #k
    e.value.p, e.value.n = v, #v
  end
  return n
end

-- room for n entries, keeping those already filled
function Signer:reserve(n)
  if n <= self.cap then return end
  local cap = self.cap * 2
  while cap < n do cap = cap * 2 end
  local kv = ffi_new("kn_kv[?]", cap)
  ffi.copy(kv, self.kv, ffi.sizeof("kn_kv") * self.cap)
  self.kv, self.cap = kv, cap
end

function Signer:sign(t)
  local s = self.s
  if s == nil then misuse("signer is closed") end
  if type(t) ~= "table" then misuse("sign expects a table") end
  local names = self.names
  self.keep = nil
  -- checked in the C binding's order, so that both name the same problem first
  local method, path = text(self, t.method, "method"), text(self, t.path, "path")
  local alg = HMAC_SHA256
  local sm = t.signature_method
  if sm ~= nil and sm ~= "HmacSHA256" then
    if sm ~= "HmacSHA1" then misuse('signature_method must be "HmacSHA256" or "HmacSHA1"') end
    alg = HMAC_SHA1
  end
  local n = 0
  local headers = t.headers
  if headers ~= nil then
    if type(headers) ~= "table" then misuse("headers must be a table of name = value") end
    for name, value in pairs(headers) do
      if type(name) ~= "string" then misuse("header names must be strings") end
      if n >= self.cap then self:reserve(n + 1) end
      value = text(self, value, "header value")
      local e = self.kv[n]
      e.name.p, e.name.n = name, #name
      e.value.p, e.value.n = value, #value
      n = n + 1
      names[n] = name
    end
  end
  local nq = put_pairs(self, t.query, "query", n)
  local nf = put_pairs(self, t.form, "form", n + nq)
  local req, kv = self.req, self.kv
  req.method.p, req.method.n = method, #method
  req.path.p, req.path.n = path, #path
  req.headers, req.nheaders = kv, n
  req.query, req.nquery = kv + n, nq
  req.form, req.nform = kv + n + nq, nf
  local sh = t.sign_headers
  if sh ~= nil and type(sh) ~= "table" then misuse("sign_headers must be a list of header names") end
  if sh ~= nil and #sh > 0 then
    local arr = ffi_new("kn_str[?]", #sh)
    for i = 1, #sh do
      local v = text(self, sh[i], "sign_headers entry")
      arr[i - 1].p, arr[i - 1].n = v, #v
    end
    self.sign_names = arr -- alive until the next call
    req.sign_headers, req.nsign = arr, #sh
  else
    req.nsign = 0
  end
  local rc = lib.kn_sign(s, req, alg)
  if rc ~= 0 then
    self.keep = nil
    local why = ffi_string(lib.kn_signer_error(s))
    if rc == SIGN_NOMEM then fail(why) end
    misuse(why)
  end
  local len = self.len
  local p = lib.kn_signer_string(s, len)
  local sts = ffi_string(p, len[0])
  p = lib.kn_signer_signature(s, len)
  local sig = ffi_string(p, len[0])
  local idx = lib.kn_signer_signed(s, len)
  local signed = {}
  for i = 0, tonumber(len[0]) - 1 do signed[i + 1] = names[tonumber(idx[i]) + 1] end
  self.keep = nil
  return { string_to_sign = sts, signature = sig, signed_headers = signed }
end

--- close(): wipes the key; idempotent
function Signer:close()
  if self.s ~= nil then
    lib.kn_signer_free(ffi_gc(self.s, nil))
    self.s = nil
  end
end

--- new(secret) -> signer using the FFI
function M.new(secret)
  if type(secret) ~= "string" then misuse("the secret must be a string (got " .. type(secret) .. ")") end
  local s = lib.kn_signer_new(secret, #secret)
  if s == nil then fail("out of memory creating a signer") end
  return setmetatable({
    s = ffi_gc(s, lib.kn_signer_free), cap = 16, kv = ffi_new("kn_kv[16]"),
    req = ffi_new("kn_sign_req"), len = ffi_new("size_t[1]"), names = {},
  }, Signer)
end

return M
