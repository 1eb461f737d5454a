/* The binding's shared parts (lua_binding.h): the error funnel, the
 * argument checks, classes. */
#include <stdarg.h>
#include <string.h>
#include "lua_binding.h"

#if defined(luaL_setfuncs) /* our fallback (lua_binding.h), for a plain 5.1 */
void kn_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
    luaL_checkstack(L, nup, "too many upvalues");
    for (; l->name; l++) {
        int i;
        for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#endif

/* the message is on top of the stack */
static int kn_raise(lua_State *L, const char *mt, const char *kind) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "message");
    if (strcmp(mt, MISUSE_MT) == 0) {
        /* kinot.errors completes a misuse as it does its own: `where` is
         * the first frame outside the SDK (luaL_where(L, 1) is the frame
         * that called C, often an SDK file, and another one on LuaJIT
         * after a tail call), and inside nginx an uncaught one is logged */
        lua_getfield(L, LUA_REGISTRYINDEX, MISUSE_COMPLETE);
        if (lua_isfunction(L, -1)) {
            lua_pushvalue(L, -2);
            lua_call(L, 1, 0);
        } else { /* kinot.errors not loaded: the caller of C */
            size_t n;
            const char *w;
            lua_pop(L, 1);
            luaL_where(L, 1); /* "chunk:line: " of the Lua caller, or "" */
            w = lua_tolstring(L, -1, &n);
            if (n > 2) {
                lua_pushlstring(L, w, n - 2);
                lua_setfield(L, -3, "where");
            }
            lua_pop(L, 1);
        }
    } else {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "retryable");
        lua_pushinteger(L, 1);
        lua_setfield(L, -2, "attempts");
    }
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
    return lua_error(L); /* the funnel */
}

int kn_misuse(lua_State *L, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return kn_raise(L, MISUSE_MT, "misuse");
}

int kn_fail(lua_State *L, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return kn_raise(L, ERROR_MT, "internal");
}

int kn_interrupt_error(lua_State *L) {
    lua_pushliteral(L, "interrupted");
    return kn_raise(L, ERROR_MT, "interrupted");
}

const char *kn_check_lstring(lua_State *L, int idx, const char *what, size_t *n) {
    if (!lua_isstring(L, idx)) kn_misuse(L, "%s must be a string (got %s)", what, luaL_typename(L, idx));
    return lua_tolstring(L, idx, n);
}

lua_Number kn_check_number(lua_State *L, int idx, const char *what) {
    if (!lua_isnumber(L, idx)) kn_misuse(L, "%s must be a number (got %s)", what, luaL_typename(L, idx));
    return lua_tonumber(L, idx);
}

void kn_check_table(lua_State *L, int idx, const char *what) {
    if (!lua_istable(L, idx)) kn_misuse(L, "%s must be a table (got %s)", what, luaL_typename(L, idx));
}

kn_str kn_str_at(lua_State *L, int idx, const char *what) {
    kn_str s;
    s.p = lua_tolstring(L, idx, &s.n);
    if (!s.p) kn_misuse(L, "%s must be a string (got %s)", what, luaL_typename(L, idx));
    return s;
}

/* until errors.lua replaces them: "kinot: message" / "kinot: kind: message" */
static int misuse_tostring(lua_State *L) {
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "kinot: %s", lua_tostring(L, -1));
    return 1;
}

static int error_tostring(lua_State *L) {
    lua_getfield(L, 1, "kind");
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "kinot: %s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
    return 1;
}

void kn_open_errors(lua_State *L) {
    if (luaL_newmetatable(L, ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    if (luaL_newmetatable(L, MISUSE_MT)) {
        lua_pushcfunction(L, misuse_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 2);
}

void kn_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}
