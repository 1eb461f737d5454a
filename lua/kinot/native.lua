-- The C core (kinot/core.so) seen through LuaJIT's FFI: every declaration
-- the FFI paths use, declared once, and the library loaded once.  Returns
-- the library, or false where there is no FFI (Lua 5.4) or no core.so on
-- package.cpath; callers then use the Lua C API binding (kinot.core).
--
-- The declarations cannot drift from the C headers:
--   * CDEF below is the headers' own declarations (src/kn_types.h, sign.h,
--     cbscan.h, ffi_layout.h), comments left out: spec/native_spec.lua
--     compares them token for token;
--   * at load, the core's own sizeof/offsetof of every struct the FFI reads
--     (kn_ffi_layout, src/ffi_layout.c) are compared with ffi.sizeof and
--     ffi.offsetof: a core.so built from other headers is refused with an
--     error naming the struct and the field, before anything is read.
-- (kn_cb_check scans a copy of the body it is given: no pointer into the
-- Lua string outlives the call.)
local ok_ffi, ffi = pcall(require, "ffi")
if not ok_ffi or not rawget(_G, "jit") then return false end

local path = package.searchpath and package.searchpath("kinot.core", package.cpath)
if not path then return false end

-- BEGIN CDEF (spec/native_spec.lua reads from here to END CDEF)
local CDEF = [[
typedef struct kn_str {
    const char *p;
    size_t n;
} kn_str;

typedef struct kn_kv {
    kn_str name, value;
} kn_kv;

typedef struct kn_sign_req {
    kn_str method, path;
    const kn_kv *headers;
    size_t nheaders;
    const kn_str *sign_headers;
    size_t nsign;
    const kn_kv *query;
    size_t nquery;
    const kn_kv *form;
    size_t nform;
} kn_sign_req;

enum kn_hmac { KN_HMAC_SHA256 = 0, KN_HMAC_SHA1 = 1 };

typedef struct kn_signer kn_signer;
kn_signer *kn_signer_new(const void *secret, size_t n);
void kn_signer_free(kn_signer *s);
int kn_sign(kn_signer *s, const kn_sign_req *req, enum kn_hmac alg);
const char *kn_signer_string(const kn_signer *s, size_t *len);
const char *kn_signer_signature(const kn_signer *s, size_t *len);
const size_t *kn_signer_signed(const kn_signer *s, size_t *count);
const char *kn_signer_error(const kn_signer *s);

typedef enum kn_cb_type {
    KN_CB_STRING, KN_CB_NUMBER, KN_CB_TRUE, KN_CB_FALSE, KN_CB_NULL, KN_CB_OBJECT, KN_CB_ARRAY
} kn_cb_type;

typedef enum kn_cb_verdict {
    KN_CB_OK, KN_CB_NOT_JSON, KN_CB_NOT_OBJECT, KN_CB_DUPLICATE_KEY, KN_CB_NO_SIGN, KN_CB_BAD_SIGN, KN_CB_NOMEM
} kn_cb_verdict;

typedef struct kn_cb_member {
    kn_str key;
    kn_str text;
    int type;
    int is_integer;
    double number;
    long long integer;
    int name_slot;
} kn_cb_member;

typedef struct kn_cb_scanner kn_cb_scanner;
kn_cb_scanner *kn_cb_scanner_new(void);
void kn_cb_scanner_free(kn_cb_scanner *s);
int kn_cb_check(kn_cb_scanner *s, const char *body, size_t n, const kn_str *secrets, size_t nsecrets,
                char hex[33], int *index, char *why, size_t whylen);
int kn_cb_scan(kn_cb_scanner *s, const char *body, size_t n, char *why, size_t whylen);
int kn_cb_convert(kn_cb_scanner *s, const kn_cb_member **members, size_t *count);

size_t kn_ffi_layout(char *buf, size_t cap);
]]
-- END CDEF

-- ffi.cdef is process-wide: a second copy of this module (another
-- package.loaded) must not fail on names already declared.  Only kn_*
-- names: a name some other library declares too (memcmp, say) would stop
-- the declarations after it.
pcall(ffi.cdef, CDEF)

-- the same file through the Lua C API first: a core of another Lua ABI is
-- refused there, naming both (kinot.core_loader), before the FFI maps it
require "kinot.core_loader"
local ok, lib = pcall(ffi.load, path)
if not ok then return false end

-- The layout check: the core's "name value" lines against this side's.
local function refuse(why)
  require("kinot.errors").misuse(path .. " does not match the FFI declarations of kinot.native (" .. why ..
    "): it was built from other sources than these Lua modules; rebuild it from them (make build, or " ..
    "luarocks make) rather than let the FFI read its structs wrongly")
end

local has, layout = pcall(function() return lib.kn_ffi_layout end)
if not has then refuse("it has no kn_ffi_layout") end
local size = 2048
local buf = ffi.new("char[?]", size)
local n = tonumber(layout(buf, size))
if n >= size then
  size = n + 1
  buf = ffi.new("char[?]", size)
  n = tonumber(layout(buf, size))
end
local wrong, structs = {}, {}
for name, value in ffi.string(buf, n):gmatch("([%w_%.]+) (%d+)\n") do
  local struct, field = name:match("^([%w_]+)%.([%w_]+)$")
  local here
  if field then
    local okf, off = pcall(ffi.offsetof, struct, field)
    here = okf and off or nil
    if here == nil then
      wrong[#wrong + 1] = name .. " is in the core and not declared here"
    end
  else
    struct = name
    local oks, sz = pcall(ffi.sizeof, struct)
    here = oks and sz or nil
    structs[struct] = true
    if here == nil then wrong[#wrong + 1] = "struct " .. name .. " is in the core and not declared here" end
  end
  if here ~= nil and here ~= tonumber(value) then
    wrong[#wrong + 1] = field and string.format("%s is at offset %s in the core, %d here", name, value, here)
      or string.format("sizeof(%s) is %s in the core, %d here", name, value, here)
  end
end
for _, struct in ipairs { "kn_str", "kn_kv", "kn_sign_req", "kn_cb_member" } do
  if not structs[struct] then wrong[#wrong + 1] = "the core gives no layout for " .. struct end
end
if #wrong > 0 then refuse(table.concat(wrong, "; ")) end

return lib
