/* kinot.core: the Lua face of the C core, gathered from one binding file
 * per concern (see lua_binding.h).  Everything below the binding is plain
 * C over libcurl and OpenSSL, and LuaJIT's FFI reaches part of it directly
 * (lua/kinot/native.lua; ffi_layout.c lets it check what it reads). */
#include "lua_binding.h"

/* The Lua ABI of the headers this core is built with: core.abi, and as text
 * in the file itself, so that lua/kinot/core_loader.lua can name it when the
 * dynamic linker refuses the file in a Lua of another ABI ("undefined
 * symbol: lua_tonumber") and nothing of it can run. */
#if LUA_VERSION_NUM == 501
#define KN_LUA_ABI "5.1"
#elif LUA_VERSION_NUM == 502
#define KN_LUA_ABI "5.2"
#elif LUA_VERSION_NUM == 503
#define KN_LUA_ABI "5.3"
#elif LUA_VERSION_NUM == 504
#define KN_LUA_ABI "5.4"
#else
#error "kinot.core: a Lua ABI of its own (LUA_VERSION_NUM)"
#endif
/* external linkage: kept in the file whether or not anything refers to it */
const char kn_lua_abi_stamp[] = "kinot-core-abi=" KN_LUA_ABI ";";

/* error_metatables() -> the kinot.Error and kinot.Misuse metatables */
static int l_error_metatables(lua_State *L) {
    luaL_getmetatable(L, ERROR_MT);
    luaL_getmetatable(L, MISUSE_MT);
    return 2;
}

int luaopen_kinot_core(lua_State *L) {
    kn_open_errors(L);
    lua_newtable(L);
    lua_pushcfunction(L, l_error_metatables);
    lua_setfield(L, -2, "error_metatables");
    kn_open_http(L); /* first: libcurl's global init may fail */
    kn_open_sign(L);
    kn_open_util(L);
    kn_open_json(L);
    kn_open_callback(L);
    lua_pushliteral(L, KN_LUA_ABI);
    lua_setfield(L, -2, "abi");
    /* no version here: lua/kinot/version.lua holds the one copy */
    return 1;
}
