/* The layout of every struct LuaJIT's FFI reads or writes in the core
 * (lua/kinot/native.lua), as this build of the core compiled it, so that
 * the FFI can refuse a core.so whose structs are not the ones it declares
 * instead of reading garbage. */
#ifndef KINOT_FFI_LAYOUT_H
#define KINOT_FFI_LAYOUT_H
#include <stddef.h>

/* Writes "name value\n" lines into buf (cap bytes, NUL-terminated when cap
 * > 0): "kn_str 16" for a sizeof, "kn_str.n 8" for an offsetof, every field
 * of kn_str, kn_kv, kn_sign_req and kn_cb_member.  Returns the length the
 * whole text needs (without its NUL), as snprintf does. */
size_t kn_ffi_layout(char *buf, size_t cap);

#endif
