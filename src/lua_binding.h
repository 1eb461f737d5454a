/* What the Lua binding files share (src/lua_*.c, src/kinot_core.c: the only
 * files that include Lua headers; everything else in src/ is plain C over
 * libcurl and OpenSSL).  One binding file per concern:
 *   lua_sign.c      kinot.core.signer        (sign.h)
 *   lua_http.c      kinot.core.http          (http.h, headers.h)
 *   lua_json.c      json_decode, json_encode (json.h, jsonlex.h, jsonwrite.h)
 *   lua_callback.c  callback_scan / _verify / _digest (cbscan.h)
 *   lua_util.c      digests, uuid, clocks, sleep (digest.h)
 *   lua_binding.c   the error funnel, the argument checks, classes
 * kinot_core.c's luaopen_kinot_core only gathers them.  The simulator's
 * signal handling is its own module, kinot.simsignal (lua_simsignal.c).
 *
 * Convention: misuse (wrong types) raises; runtime failures return
 * nil, kind, message[, extra].  Every raise goes through one funnel,
 * kn_misuse or kn_fail (lua_binding.c). */
#ifndef KINOT_LUA_BINDING_H
#define KINOT_LUA_BINDING_H
#include <stddef.h>
#include <lua.h>
#include <lauxlib.h>
#include "kn_types.h"

/* binding helpers stay inside the module that links them (kinot.core and
 * kinot.simsignal each carry a copy) */
#if defined(__GNUC__)
#define KN_LOCAL __attribute__((visibility("hidden")))
#else
#define KN_LOCAL
#endif

/* LuaJIT 2.1 ships luaL_newlib/luaL_setfuncs while saying 5.1: test names */
#ifndef luaL_newlib
KN_LOCAL void kn_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
#define luaL_setfuncs kn_setfuncs
#define luaL_newlib(L, l) (lua_newtable(L), luaL_setfuncs(L, l, 0))
#endif
#if LUA_VERSION_NUM >= 502
#define kn_rawlen lua_rawlen
#else
#define kn_rawlen lua_objlen
#endif

/* metatable names (registry keys) */
#define MISUSE_MT "kinot.Misuse"          /* completed by lua/kinot/errors.lua */
#define MISUSE_COMPLETE "kinot.misuse_complete" /* errors.lua: function(misuse) sets where, logs in nginx */
#define ERROR_MT "kinot.Error"            /* completed by lua/kinot/errors.lua */
#define SIGNER_MT "kinot.core.signer"     /* lua_sign.c */
#define HTTP_MT "kinot.core.http"         /* lua_http.c */
#define HTTP_STREAM_MT "kinot.core.http_stream" /* lua_http.c */
#define JSONBUF_MT "kinot.core.jsonbuf"   /* lua_json.c: the reader's scratch */
#define JSONWRITER_MT "kinot.core.jsonwriter" /* lua_json.c: the writer's buffers */
#define SCANNER_MT "kinot.core.cbscanner" /* lua_callback.c */

/* ------------------------------------------------------------- errors
 * The funnel of every error a binding raises, the two classes of
 * lua/kinot/errors.lua (which completes these metatables):
 *   kn_misuse(L, fmt, ...)  the caller's mistake: a kinot.Misuse object
 *                           { kind = "misuse", message, where };
 *   kn_fail(L, fmt, ...)    the machine failed (memory, OpenSSL, libcurl's
 *                           setup): a kinot.Error of kind "internal";
 *   kn_interrupt_error(L)   Ctrl-C (the CLI's): kind "interrupted".
 * Messages carry no "kinot: " prefix: tostring adds it, once.  Neither
 * returns; both are typed int so that `return kn_misuse(...)` reads well. */
KN_LOCAL int kn_misuse(lua_State *L, const char *fmt, ...);
KN_LOCAL int kn_fail(lua_State *L, const char *fmt, ...);
/* Ctrl-C under the CLI's handler (interrupt.h) stopped a wait: a kinot.Error
 * of kind "interrupted", raised, never returned (no caller may take it for
 * a failed request and go on: the CLI ends with exit 130) */
KN_LOCAL int kn_interrupt_error(lua_State *L);

/* makes the two metatables (once per state: a second module's call keeps
 * what errors.lua made of them) */
KN_LOCAL void kn_open_errors(lua_State *L);

/* argument checks through the funnel, naming the argument (luaL_check*
 * would raise a plain string) */
KN_LOCAL const char *kn_check_lstring(lua_State *L, int idx, const char *what, size_t *n);
KN_LOCAL lua_Number kn_check_number(lua_State *L, int idx, const char *what);
KN_LOCAL void kn_check_table(lua_State *L, int idx, const char *what);
/* a string (or a number, converted in place: the slot stays on the stack) */
KN_LOCAL kn_str kn_str_at(lua_State *L, int idx, const char *what);

/* a class: metatable `name` with methods as __index, close as __gc and
 * __close */
KN_LOCAL void kn_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close);

/* Each binding file adds its functions to the module table on top of the
 * stack (and makes its metatables); luaopen_kinot_core calls them all. */
KN_LOCAL void kn_open_sign(lua_State *L);
KN_LOCAL void kn_open_http(lua_State *L);
KN_LOCAL void kn_open_json(lua_State *L);
KN_LOCAL void kn_open_callback(lua_State *L);
KN_LOCAL void kn_open_util(lua_State *L);

#endif
