/* kinot.core: the Lua face of the C core, gathered from one binding file
 * per concern (see lua_binding.h).  Everything below the binding is plain
 * C over libcurl and OpenSSL, and LuaJIT's FFI reaches part of it directly
 * (lua/kinot/native.lua; ffi_layout.c lets it check what it reads). */
#include "lua_binding.h"

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
    /* no version here: lua/kinot/version.lua holds the one copy */
    return 1;
}
