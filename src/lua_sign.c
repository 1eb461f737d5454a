/* kinot.core.signer: gateway request signing (sign.h) for Lua. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include "lua_binding.h"
#include "sign.h"

typedef struct signer_ud {
    kn_signer *s;
    kn_kv *kv;      /* headers, query and form of the request being signed */
    int *keyidx;    /* stack slot of each header name: reused for the result */
    size_t kvcap;
    kn_str *names;  /* sign_headers */
    size_t namecap;
} signer_ud;

static signer_ud *check_signer(lua_State *L) {
    signer_ud *u = luaL_checkudata(L, 1, SIGNER_MT);
    if (!u->s) kn_misuse(L, "signer is closed");
    return u;
}

static int signer_new(lua_State *L) {
    size_t n;
    const char *secret = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
    signer_ud *u;
    if (!secret) return kn_misuse(L, "the secret must be a string (got %s)", luaL_typename(L, 1));
    u = lua_newuserdata(L, sizeof *u);
    memset(u, 0, sizeof *u);
    luaL_getmetatable(L, SIGNER_MT);
    lua_setmetatable(L, -2);
    u->s = kn_signer_new(secret, n);
    if (!u->s) return kn_fail(L, "out of memory creating a signer");
    return 1;
}

static int signer_close(lua_State *L) {
    signer_ud *u = luaL_checkudata(L, 1, SIGNER_MT);
    kn_signer_free(u->s);
    free(u->kv);
    free(u->keyidx);
    free(u->names);
    memset(u, 0, sizeof *u);
    return 0;
}

static void grow_kv(lua_State *L, signer_ud *u, size_t need) {
    kn_kv *nk;
    int *ni;
    if (need <= u->kvcap) return;
    nk = realloc(u->kv, need * 2 * sizeof *nk);
    if (!nk) kn_fail(L, "out of memory while signing");
    u->kv = nk;
    ni = realloc(u->keyidx, need * 2 * sizeof *ni);
    if (!ni) kn_fail(L, "out of memory while signing");
    u->keyidx = ni;
    u->kvcap = need * 2;
}

/* Reads a list of {name, value} pairs from field `field` of the table at
 * index 2 into u->kv from position *at; leaves the values on the stack. */
static size_t read_pairs(lua_State *L, signer_ud *u, const char *field, size_t *at) {
    size_t i, n, start = *at;
    lua_getfield(L, 2, field);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (!lua_istable(L, -1)) kn_misuse(L, "%s must be a list of {name, value} pairs", field);
    n = kn_rawlen(L, -1);
    luaL_checkstack(L, (int)(2 * n + 4), "too many parameters");
    grow_kv(L, u, start + n);
    for (i = 1; i <= n; i++) {
        int list = lua_gettop(L) - 2 * (int)(i - 1);
        lua_rawgeti(L, list, (int)i);
        if (!lua_istable(L, -1)) kn_misuse(L, "%s[%d] must be a {name, value} pair", field, (int)i);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        lua_remove(L, -3);
        u->kv[start + i - 1].name = kn_str_at(L, -2, field);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushliteral(L, "");
        }
        u->kv[start + i - 1].value = kn_str_at(L, -1, field);
    }
    *at = start + n;
    return n;
}

static int signer_sign(lua_State *L) {
    signer_ud *u = check_signer(L);
    kn_sign_req req;
    size_t at = 0, nh = 0, i, count, len;
    const size_t *idx;
    const char *p;
    enum kn_hmac alg = KN_HMAC_SHA256;
    if (!lua_istable(L, 2)) return kn_misuse(L, "sign expects a table");
    lua_settop(L, 2);
    memset(&req, 0, sizeof req);

    lua_getfield(L, 2, "method");
    req.method = kn_str_at(L, -1, "method");
    lua_getfield(L, 2, "path");
    req.path = kn_str_at(L, -1, "path");
    lua_getfield(L, 2, "signature_method");
    if (!lua_isnil(L, -1)) {
        const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        if (strcmp(m, "HmacSHA1") == 0) alg = KN_HMAC_SHA1;
        else if (strcmp(m, "HmacSHA256") != 0)
            return kn_misuse(L, "signature_method must be \"HmacSHA256\" or \"HmacSHA1\"");
    }

    /* headers: a map name -> value; key and value stay on the stack */
    lua_getfield(L, 2, "headers");
    if (!lua_isnil(L, -1)) {
        int t = lua_gettop(L);
        if (!lua_istable(L, t)) return kn_misuse(L, "headers must be a table of name = value");
        lua_pushnil(L);
        while (lua_next(L, t)) {
            luaL_checkstack(L, 4, "too many headers");
            grow_kv(L, u, nh + 1);
            if (lua_type(L, -2) != LUA_TSTRING) return kn_misuse(L, "header names must be strings");
            u->kv[nh].name.p = lua_tolstring(L, -2, &u->kv[nh].name.n);
            u->keyidx[nh] = lua_gettop(L) - 1;
            u->kv[nh].value = kn_str_at(L, -1, "header value");
            nh++;
            lua_pushvalue(L, -2);
        }
    }
    req.headers = u->kv;
    req.nheaders = nh;
    at = nh;
    req.nquery = read_pairs(L, u, "query", &at);
    req.nform = read_pairs(L, u, "form", &at);
    /* u->kv may have moved while growing: take the pointers last */
    req.headers = u->kv;
    req.query = u->kv + nh;
    req.form = u->kv + nh + req.nquery;

    lua_getfield(L, 2, "sign_headers");
    if (!lua_isnil(L, -1)) {
        int t = lua_gettop(L);
        size_t n;
        if (!lua_istable(L, t)) return kn_misuse(L, "sign_headers must be a list of header names");
        n = kn_rawlen(L, t);
        luaL_checkstack(L, (int)n + 2, "too many sign_headers");
        if (n > u->namecap) {
            kn_str *nn = realloc(u->names, n * sizeof *nn);
            if (!nn) return kn_fail(L, "out of memory while signing");
            u->names = nn;
            u->namecap = n;
        }
        for (i = 0; i < n; i++) {
            lua_rawgeti(L, t, (int)i + 1);
            u->names[i] = kn_str_at(L, -1, "sign_headers entry");
        }
        req.sign_headers = u->names;
        req.nsign = n;
    }

    {
        int rc = kn_sign(u->s, &req, alg);
        if (rc == KN_SIGN_NOMEM) return kn_fail(L, "%s", kn_signer_error(u->s));
        if (rc) return kn_misuse(L, "%s", kn_signer_error(u->s));
    }

    lua_createtable(L, 0, 3);
    p = kn_signer_string(u->s, &len);
    lua_pushlstring(L, p, len);
    lua_setfield(L, -2, "string_to_sign");
    p = kn_signer_signature(u->s, &len);
    lua_pushlstring(L, p, len);
    lua_setfield(L, -2, "signature");
    idx = kn_signer_signed(u->s, &count);
    lua_createtable(L, (int)count, 0);
    for (i = 0; i < count; i++) {
        lua_pushvalue(L, u->keyidx[idx[i]]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "signed_headers");
    return 1;
}


void kn_open_sign(lua_State *L) {
    static const luaL_Reg methods[] = {{"sign", signer_sign}, {"close", signer_close}, {NULL, NULL}};
    kn_new_class(L, SIGNER_MT, methods, signer_close);
    lua_pushcfunction(L, signer_new);
    lua_setfield(L, -2, "signer");
}
