-- The C core (kinot/core.so) seen through LuaJIT's FFI: every declaration
-- the FFI paths use, declared once, and the library loaded once.  Returns
-- the library, or false where there is no FFI (Lua 5.4) or no core.so on
-- package.cpath; callers then use the Lua C API binding (kinot.core).
-- The declarations must match src/sign.h and src/cbscan.h (kn_cb_check
-- scans a copy of the body it is given: no pointer into the Lua string
-- outlives the call).
local ok_ffi, ffi = pcall(require, "ffi")
if not ok_ffi or not rawget(_G, "jit") then return false end

local path = package.searchpath and package.searchpath("kinot.core", package.cpath)
if not path then return false end

-- ffi.cdef is process-wide: a second copy of this module (another
-- package.loaded) must not fail on names already declared.  Only kn_*
-- names: a name some other library declares too (memcmp, say) would stop
-- the declarations after it.
pcall(ffi.cdef, [[
  typedef struct kn_str { const char *p; size_t n; } kn_str;

  typedef struct kn_kv { kn_str name, value; } kn_kv;
  typedef struct kn_sign_req {
    kn_str method, path;
    const kn_kv *headers; size_t nheaders;
    const kn_str *sign_headers; size_t nsign;
    const kn_kv *query; size_t nquery;
    const kn_kv *form; size_t nform;
  } kn_sign_req;
  typedef struct kn_signer kn_signer;
  kn_signer *kn_signer_new(const void *secret, size_t n);
  void kn_signer_free(kn_signer *s);
  int kn_sign(kn_signer *s, const kn_sign_req *req, int alg);
  const char *kn_signer_string(const kn_signer *s, size_t *len);
  const char *kn_signer_signature(const kn_signer *s, size_t *len);
  const size_t *kn_signer_signed(const kn_signer *s, size_t *count);
  const char *kn_signer_error(const kn_signer *s);

  typedef struct kn_cb_member {
    kn_str key, text;
    int type, is_integer;
    double number;
    long long integer;
    int name_slot;
  } kn_cb_member;
  typedef struct kn_cb_scanner kn_cb_scanner;
  kn_cb_scanner *kn_cb_scanner_new(void);
  void kn_cb_scanner_free(kn_cb_scanner *s);
  int kn_cb_check(kn_cb_scanner *s, const char *body, size_t n, const kn_str *secrets, size_t nsecrets,
                  char hex[33], int *index, char *why, size_t whylen);
  int kn_cb_convert(kn_cb_scanner *s, const kn_cb_member **members, size_t *count);
]])

local ok, lib = pcall(ffi.load, path)
return ok and lib or false
