/* kinot.core: the Lua face of the C core.  The only file that includes Lua
 * headers; everything below it is plain C over libcurl and OpenSSL.
 *
 * Convention: misuse (wrong types) raises; runtime failures return
 * nil, kind, message[, extra].  Every raise goes through one funnel,
 * kn_misuse or kn_fail (see "errors" below). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <lua.h>
#include <lauxlib.h>
#include "buf.h"
#include "digest.h"
#include "sign.h"
#include "http.h"
#include "cbscan.h"
#include "jsonlex.h"
#include "headers.h"
#include "json.h"

/* LuaJIT 2.1 ships luaL_newlib/luaL_setfuncs while saying 5.1: test names */
#ifndef luaL_newlib
static void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
    luaL_checkstack(L, nup, "too many upvalues");
    for (; l->name; l++) {
        int i;
        for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#define luaL_newlib(L, l) (lua_newtable(L), luaL_setfuncs(L, l, 0))
#endif
#if LUA_VERSION_NUM >= 502
#define kn_rawlen lua_rawlen
#else
#define kn_rawlen lua_objlen
#endif

#define SIGNER_MT "kinot.core.signer"
#define HTTP_MT "kinot.core.http"

/* ------------------------------------------------------------- errors
 * The funnel of every error the core raises, the two classes of
 * lua/kinot/errors.lua (which completes these metatables):
 *   kn_misuse(L, fmt, ...)  the caller's mistake: a kinot.Misuse object
 *                           { kind = "misuse", message, where };
 *   kn_fail(L, fmt, ...)    the machine failed (memory, OpenSSL, libcurl's
 *                           setup): a kinot.Error of kind "internal".
 * Messages carry no "kinot: " prefix: tostring adds it, once. */
#define MISUSE_MT "kinot.Misuse"
#define ERROR_MT "kinot.Error"

/* the message is on top of the stack */
static int kn_raise(lua_State *L, const char *mt, const char *kind) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "message");
    if (strcmp(mt, MISUSE_MT) == 0) {
        size_t n;
        const char *w;
        luaL_where(L, 1); /* "chunk:line: " of the Lua caller, or "" */
        w = lua_tolstring(L, -1, &n);
        if (n > 2) {
            lua_pushlstring(L, w, n - 2);
            lua_setfield(L, -3, "where");
        }
        lua_pop(L, 1);
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

static int kn_misuse(lua_State *L, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return kn_raise(L, MISUSE_MT, "misuse");
}

static int kn_fail(lua_State *L, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return kn_raise(L, ERROR_MT, "internal");
}

/* argument checks through the funnel, naming the argument (luaL_check*
 * would raise a plain string) */
static const char *kn_check_lstring(lua_State *L, int idx, const char *what, size_t *n) {
    if (!lua_isstring(L, idx)) kn_misuse(L, "%s must be a string (got %s)", what, luaL_typename(L, idx));
    return lua_tolstring(L, idx, n);
}

static lua_Number kn_check_number(lua_State *L, int idx, const char *what) {
    if (!lua_isnumber(L, idx)) kn_misuse(L, "%s must be a number (got %s)", what, luaL_typename(L, idx));
    return lua_tonumber(L, idx);
}

static void kn_check_table(lua_State *L, int idx, const char *what) {
    if (!lua_istable(L, idx)) kn_misuse(L, "%s must be a table (got %s)", what, luaL_typename(L, idx));
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

/* error_metatables() -> the kinot.Error and kinot.Misuse metatables */
static int l_error_metatables(lua_State *L) {
    luaL_getmetatable(L, ERROR_MT);
    luaL_getmetatable(L, MISUSE_MT);
    return 2;
}

static kn_str str_at(lua_State *L, int idx, const char *what) {
    kn_str s;
    /* converts numbers in place: the slot stays on the stack */
    s.p = lua_tolstring(L, idx, &s.n);
    if (!s.p) kn_misuse(L, "%s must be a string (got %s)", what, luaL_typename(L, idx));
    return s;
}

/* ------------------------------------------------------------- signer */

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
        u->kv[start + i - 1].name = str_at(L, -2, field);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushliteral(L, "");
        }
        u->kv[start + i - 1].value = str_at(L, -1, field);
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
    req.method = str_at(L, -1, "method");
    lua_getfield(L, 2, "path");
    req.path = str_at(L, -1, "path");
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
            u->kv[nh].value = str_at(L, -1, "header value");
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
            u->names[i] = str_at(L, -1, "sign_headers entry");
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

/* ------------------------------------------------------------- http */

typedef struct http_ud {
    kn_http *h;
    kn_http_result one;      /* reused by single requests */
    kn_http_result *many;    /* reused by batches */
    size_t nmany;
    kn_http_req *reqs;
    kn_kv *kv;
    size_t kvcap;
} http_ud;

static http_ud *check_http(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    if (!u->h) kn_misuse(L, "http handle is closed");
    return u;
}

static int http_new(lua_State *L) {
    http_ud *u = lua_newuserdata(L, sizeof *u);
    memset(u, 0, sizeof *u);
    kn_http_result_init(&u->one);
    luaL_getmetatable(L, HTTP_MT);
    lua_setmetatable(L, -2);
    u->h = kn_http_new();
    if (!u->h) return kn_fail(L, "could not create a libcurl handle");
    return 1;
}

static int http_close(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    size_t i;
    if (u->h) kn_http_free(u->h);
    kn_http_result_free(&u->one);
    for (i = 0; i < u->nmany; i++) kn_http_result_free(&u->many[i]);
    free(u->many);
    free(u->reqs);
    free(u->kv);
    memset(u, 0, sizeof *u);
    return 0;
}

static long ms_field(lua_State *L, int t, const char *name, double dflt) {
    double v;
    lua_getfield(L, t, name);
    v = lua_isnil(L, -1) ? dflt : kn_check_number(L, -1, name);
    lua_pop(L, 1);
    if (!(v >= 0 && v <= 1e9)) kn_misuse(L, "%s must be a number of seconds >= 0", name); /* NaN, inf too */
    return (long)(v * 1000.0 + 0.5);
}

static const char *opt_string(lua_State *L, int t, const char *name) {
    const char *s;
    lua_getfield(L, t, name); /* stays on the stack: the string must live */
    if (lua_isnil(L, -1)) return NULL;
    s = lua_tostring(L, -1);
    if (!s) kn_misuse(L, "%s must be a string", name);
    return s;
}

/* Reads the request table at index t; strings stay referenced by the stack
 * or by the table itself. kv storage grows in u->kv from *at. */
static void read_req(lua_State *L, http_ud *u, int t, kn_http_req *r, size_t *at) {
    size_t start = *at, n = 0;
    memset(r, 0, sizeof *r);
    kn_check_table(L, t, "request");
    luaL_checkstack(L, 16, "request");
    r->method = opt_string(L, t, "method");
    if (!r->method) r->method = "GET";
    r->url = opt_string(L, t, "url");
    if (!r->url) kn_misuse(L, "request.url is required");
    lua_getfield(L, t, "body");
    if (!lua_isnil(L, -1)) r->body = kn_check_lstring(L, -1, "request.body", &r->body_len);
    r->timeout_ms = ms_field(L, t, "timeout", 10);
    r->connect_timeout_ms = ms_field(L, t, "connect_timeout", 3);
    lua_getfield(L, t, "max_body");
    if (lua_isnil(L, -1)) {
        r->max_body = (size_t)8 << 20;
    } else {
        lua_Number mb = kn_check_number(L, -1, "max_body");
        if (!(mb >= 0 && mb <= 1e15)) kn_misuse(L, "max_body must be a number of bytes >= 0");
        r->max_body = (size_t)mb;
    }
    lua_pop(L, 1);
    lua_getfield(L, t, "verify_tls");
    r->verify_tls = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    r->ca_file = opt_string(L, t, "ca_file");
    r->proxy = opt_string(L, t, "proxy");
    lua_getfield(L, t, "headers");
    if (!lua_isnil(L, -1)) {
        int ht = lua_gettop(L);
        kn_check_table(L, ht, "request.headers");
        lua_pushnil(L);
        while (lua_next(L, ht)) {
            if (start + n + 1 > u->kvcap) {
                size_t cap = (start + n + 1) * 2;
                kn_kv *nk = realloc(u->kv, cap * sizeof *nk);
                if (!nk) kn_fail(L, "out of memory building a request");
                u->kv = nk;
                u->kvcap = cap;
            }
            if (lua_type(L, -2) != LUA_TSTRING) kn_misuse(L, "header names must be strings");
            luaL_checkstack(L, 4, "too many headers");
            u->kv[start + n].name.p = lua_tolstring(L, -2, &u->kv[start + n].name.n);
            u->kv[start + n].value = str_at(L, -1, "header value");
            n++;
            lua_pushvalue(L, -2);
        }
    }
    r->headers = NULL; /* set by the caller once u->kv stops moving */
    r->nheaders = n;
    *at = start + n;
}

static int add_header(void *ud, const char *name, size_t nlen, const char *value, size_t vlen) {
    lua_State *L = ud;
    char low[128];
    size_t i;
    if (nlen == 0 || nlen >= sizeof low) return 0;
    for (i = 0; i < nlen; i++) low[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    lua_pushlstring(L, low, nlen);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushlstring(L, value, vlen);
    } else { /* a repeated field: join as RFC 9110 allows */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, value, vlen);
        lua_concat(L, 3);
    }
    lua_rawset(L, -3);
    return 0;
}

static void push_response(lua_State *L, const kn_http_result *r) {
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)r->status);
    lua_setfield(L, -2, "status");
    lua_newtable(L);
    if (kn_headers_parse(r->head.p ? r->head.p : "", r->head.len, add_header, L) < 0)
        kn_fail(L, "out of memory reading response headers");
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.len);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, r->total_time);
    lua_setfield(L, -2, "time");
}

static const char *const kind_names[] = {"ok", "network", "timeout", "tls", "too_large", "invalid", "nomem"};

static int http_request(lua_State *L) {
    http_ud *u = check_http(L);
    kn_http_req req;
    size_t at = 0;
    lua_settop(L, 2);
    read_req(L, u, 2, &req, &at);
    req.headers = u->kv;
    kn_http_perform(u->h, &req, &u->one);
    if (u->one.kind == KN_HTTP_INVALID) return kn_misuse(L, "%s", u->one.msg);
    if (u->one.kind != KN_HTTP_OK) {
        lua_pushnil(L);
        lua_pushstring(L, kind_names[u->one.kind]);
        lua_pushstring(L, u->one.msg);
        lua_pushboolean(L, u->one.not_sent);
        return 4;
    }
    push_response(L, &u->one);
    return 1;
}

/* request_many({req1, req2, ...}) -> {res1, res2, ...}; each res is a
 * response table, or {error = kind, message = ..., not_sent = bool} */
static int http_request_many(lua_State *L) {
    http_ud *u = check_http(L);
    size_t n, i, at = 0;
    kn_check_table(L, 2, "request_many's list");
    lua_settop(L, 2);
    n = kn_rawlen(L, 2);
    if (n > u->nmany) {
        kn_http_result *nm = realloc(u->many, n * sizeof *nm);
        if (!nm) return kn_fail(L, "out of memory starting a batch");
        u->many = nm;
        for (i = u->nmany; i < n; i++) kn_http_result_init(&u->many[i]);
        u->nmany = n;
        {
            kn_http_req *nr = realloc(u->reqs, n * sizeof *nr);
            if (!nr) return kn_fail(L, "out of memory starting a batch");
            u->reqs = nr;
        }
    }
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (int)i + 1);
        read_req(L, u, lua_gettop(L), &u->reqs[i], &at);
    }
    at = 0;
    for (i = 0; i < n; i++) {
        u->reqs[i].headers = u->kv + at;
        at += u->reqs[i].nheaders;
    }
    kn_http_perform_many(u->h, u->reqs, u->many, n);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        const kn_http_result *r = &u->many[i];
        if (r->kind == KN_HTTP_OK) {
            push_response(L, r);
        } else {
            lua_createtable(L, 0, 3);
            lua_pushstring(L, r->kind == KN_HTTP_INVALID ? "invalid" : kind_names[r->kind]);
            lua_setfield(L, -2, "error");
            lua_pushstring(L, r->msg);
            lua_setfield(L, -2, "message");
            lua_pushboolean(L, r->not_sent);
            lua_setfield(L, -2, "not_sent");
        }
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

/* ------------------------------------------------------------- small functions */

static int l_content_md5(lua_State *L) {
    size_t n;
    const char *s = kn_check_lstring(L, 1, "the body", &n);
    char out[25];
    if (kn_content_md5(s, n, out)) return kn_fail(L, "MD5 failed");
    lua_pushlstring(L, out, 24);
    return 1;
}

static int l_md5_hex(lua_State *L) {
    size_t n;
    const char *s = kn_check_lstring(L, 1, "md5_hex's argument", &n);
    unsigned char d[16];
    char hex[33];
    if (kn_md5(s, n, d)) return kn_fail(L, "MD5 failed");
    kn_hex_upper(d, 16, hex);
    lua_pushlstring(L, hex, 32);
    return 1;
}

/* digest(alg, data[, key[, encoding]]) -> MD5 / SHA-1 / SHA-256 of data, or
 * its HMAC under key; encoding "hex" (upper case, the default), "base64"
 * or "raw".  For the callback sign rules (callback/rules.lua). */
static int l_digest(lua_State *L) {
    size_t n, kn = 0, len;
    const char *alg = kn_check_lstring(L, 1, "digest algorithm", NULL);
    const char *data = kn_check_lstring(L, 2, "digest data", &n);
    const char *key = lua_isnoneornil(L, 3) ? NULL : kn_check_lstring(L, 3, "digest key", &kn);
    const char *enc = lua_isnoneornil(L, 4) ? "hex" : kn_check_lstring(L, 4, "digest encoding", NULL);
    unsigned char d[32];
    char out[65];
    if (strcmp(enc, "hex") && strcmp(enc, "base64") && strcmp(enc, "raw"))
        return kn_misuse(L, "digest encoding must be hex, base64 or raw (got %s)", enc);
    if (strcmp(alg, "md5") && strcmp(alg, "sha1") && strcmp(alg, "sha256"))
        return kn_misuse(L, "digest algorithm must be md5, sha1 or sha256 (got %s)", alg);
    if (!(len = kn_digest(alg, key, kn, data, n, d))) return kn_fail(L, "%s digest failed", alg);
    if (enc[0] == 'r') {
        lua_pushlstring(L, (const char *)d, len);
    } else if (enc[0] == 'h') {
        kn_hex_upper(d, len, out);
        lua_pushlstring(L, out, 2 * len);
    } else {
        lua_pushlstring(L, out, kn_base64(d, len, out));
    }
    return 1;
}

/* a JSON number lexeme: an integer where it is one (and Lua has them) */
static void push_lexeme(lua_State *L, const char *p, size_t n, int is_integer) {
    double d;
    if (is_integer) {
        lua_pushinteger(L, (lua_Integer)kn_jl_integer(p, n));
        return;
    }
    if (kn_jl_double(p, n, &d)) kn_fail(L, "out of memory");
    lua_pushnumber(L, d);
}

/* ------------------------------------------------------------- JSON decoding */

#define JSONBUF_MT "kinot.core.jsonbuf"

typedef struct json_frame {
    int is_object;
    lua_Integer n; /* array length so far */
} json_frame;

typedef struct json_ctx {
    lua_State *L;
    json_frame frames[210];
    int depth;
} json_ctx;

/* a finished value is on top of the stack: put it in its container */
static int json_done(json_ctx *c) {
    json_frame *f;
    if (c->depth == 0) return 0;
    f = &c->frames[c->depth - 1];
    if (f->is_object) lua_rawset(c->L, -3);
    else lua_rawseti(c->L, -2, (int)++f->n);
    return 0;
}

static int json_begin(void *ud, int is_object) {
    json_ctx *c = ud;
    if (c->depth >= (int)(sizeof c->frames / sizeof c->frames[0])) return -1;
    luaL_checkstack(c->L, 4, "JSON nesting");
    lua_createtable(c->L, is_object ? 0 : 4, is_object ? 8 : 0);
    c->frames[c->depth].is_object = is_object;
    c->frames[c->depth].n = 0;
    c->depth++;
    return 0;
}

static int json_end(void *ud, int is_object) {
    json_ctx *c = ud;
    (void)is_object;
    c->depth--;
    return json_done(c);
}

static int json_key(void *ud, const char *s, size_t n) {
    lua_pushlstring(((json_ctx *)ud)->L, s, n);
    return 0;
}

static int json_string(void *ud, const char *s, size_t n) {
    lua_pushlstring(((json_ctx *)ud)->L, s, n);
    return json_done(ud);
}

static int json_number(void *ud, const char *lexeme, size_t n, int is_integer) {
    push_lexeme(((json_ctx *)ud)->L, lexeme, n, is_integer);
    return json_done(ud);
}

static int json_literal(void *ud, int which) {
    json_ctx *c = ud;
    if (which == 0) lua_pushlightuserdata(c->L, NULL); /* == cjson.null */
    else lua_pushboolean(c->L, which == 2);
    return json_done(c);
}

static int jsonbuf_gc(lua_State *L) {
    kn_buf *b = luaL_checkudata(L, 1, JSONBUF_MT);
    kn_buf_free(b);
    return 0;
}

/* decode(text) -> value | nil, reason.  Integers stay integers (5.3+), null
 * is cjson.null, a trailing comma before '}' or ']' is accepted. */
static int l_json_decode(lua_State *L) {
    size_t n;
    const char *text = kn_check_lstring(L, 1, "the JSON text", &n);
    kn_buf *scratch = lua_touserdata(L, lua_upvalueindex(1));
    json_ctx c;
    kn_json_sink sink;
    char why[160];
    c.L = L;
    c.depth = 0;
    sink.ud = &c;
    sink.begin = json_begin;
    sink.end = json_end;
    sink.key = json_key;
    sink.string = json_string;
    sink.number = json_number;
    sink.literal = json_literal;
    lua_settop(L, 1);
    if (kn_json_parse(text, n, &sink, scratch, why, sizeof why)) {
        lua_settop(L, 1);
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    return 1;
}

static int l_uuid(lua_State *L) {
    char u[37];
    if (kn_uuid4(u)) return kn_fail(L, "OpenSSL's random generator failed");
    lua_pushlstring(L, u, 36);
    return 1;
}

static int l_ct_equal(lua_State *L) {
    size_t a, b;
    const char *x = kn_check_lstring(L, 1, "ct_equal's first argument", &a);
    const char *y = kn_check_lstring(L, 2, "ct_equal's second argument", &b);
    lua_pushboolean(L, kn_ct_equal(x, a, y, b));
    return 1;
}

static int l_now_ms(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + (lua_Integer)(ts.tv_nsec / 1000000));
    return 1;
}

static int l_monotonic(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

static int l_sleep(lua_State *L) {
    double s = kn_check_number(L, 1, "sleep's seconds");
    struct timespec ts;
    if (!(s > 0)) return 0;
    if (s > 1e9) kn_misuse(L, "sleep's seconds must be finite");
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0) {
    }
    return 0;
}

/* Lua cannot catch a signal, so `kinot sim` blocks INT/TERM/HUP before it
 * starts nginx (block_signals) and then waits for one of them, or for nginx
 * to go (wait_signal), to stop nginx however it is asked to.  A blocked
 * signal is queued even where the shell left it ignored. */
static void stop_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

/* block_signals() / block_signals(false): hold or release INT/TERM/HUP */
static int l_block_signals(lua_State *L) {
    sigset_t set;
    stop_signals(&set);
    if (sigprocmask(lua_isnoneornil(L, 1) || lua_toboolean(L, 1) ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL) != 0)
        return kn_fail(L, "sigprocmask failed");
    return 0;
}

/* wait_signal(pid) -> "SIGINT" | "SIGTERM" | "SIGHUP" | "exited"; releases
 * the signals before returning */
static int l_wait_signal(lua_State *L) {
    pid_t pid = (pid_t)kn_check_number(L, 1, "wait_signal's pid");
    sigset_t set;
    struct timespec tick = {0, 200000000};
    const char *what = "exited";
    stop_signals(&set);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return kn_fail(L, "sigprocmask failed");
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGINT) { what = "SIGINT"; break; }
        if (sig == SIGTERM) { what = "SIGTERM"; break; }
        if (sig == SIGHUP) { what = "SIGHUP"; break; }
        if (kill(pid, 0) != 0 && errno == ESRCH) break;
    }
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    lua_pushstring(L, what);
    return 1;
}

static int l_curl_version(lua_State *L) {
    lua_pushstring(L, kn_http_version());
    return 1;
}

/* ------------------------------------------------------------- callbacks */

/* Each call takes a scanner for its own length and gives it back at its
 * end: nothing a call leaves in a scanner is read by another call.  The
 * state keeps one spare (upvalue 1: a table, [1] the spare's userdata);
 * a call that finds none (a finalizer run by the collector in the middle
 * of another call that verifies a callback) makes its own.  A call that
 * raises half way never gives its scanner back: the collector frees it.
 *
 * With the scanner, its box keeps each member name's type by the
 * scanner's name slots (kn_cb_convert), read from the types table the box
 * holds as its user value: a name seen before costs no table look-up.
 * The types table is the same from call to call (kinot.vocabulary's) and
 * never changed; another table empties the cache. */
#define SCANNER_MT "kinot.core.cbscanner"

enum { TYPE_UNREAD, TYPE_OTHER, TYPE_INT, TYPE_FLOAT, TYPE_STRING };

typedef struct cb_box {
    kn_cb_scanner *sc;
    unsigned char type[257]; /* by name slot (1..256): a TYPE_* */
} cb_box;

#if LUA_VERSION_NUM >= 504
#define kn_getuv(L, i) lua_getiuservalue(L, i, 1)
#define kn_setuv(L, i) lua_setiuservalue(L, i, 1)
#elif LUA_VERSION_NUM >= 502
#define kn_getuv(L, i) lua_getuservalue(L, i)
#define kn_setuv(L, i) lua_setuservalue(L, i)
#else
#define kn_getuv(L, i) lua_getfenv(L, i)
#define kn_setuv(L, i) lua_setfenv(L, i)
#endif

static int scanner_gc(lua_State *L) {
    cb_box *b = luaL_checkudata(L, 1, SCANNER_MT);
    kn_cb_scanner_free(b->sc);
    b->sc = NULL;
    return 0;
}

/* pushes the box's userdata and returns the box */
static cb_box *take_box(lua_State *L) {
    cb_box *b;
    lua_rawgeti(L, lua_upvalueindex(1), 1);
    if (lua_type(L, -1) == LUA_TUSERDATA) {
        b = lua_touserdata(L, -1);
        lua_pushnil(L);
        lua_rawseti(L, lua_upvalueindex(1), 1);
        if (b->sc) return b;
    }
    lua_pop(L, 1);
    b = lua_newuserdata(L, sizeof *b);
    b->sc = NULL;
    memset(b->type, TYPE_UNREAD, sizeof b->type);
    luaL_getmetatable(L, SCANNER_MT);
    lua_setmetatable(L, -2);
    if (!(b->sc = kn_cb_scanner_new())) kn_fail(L, "out of memory");
    return b;
}

/* the box's userdata at index ud is the spare again */
static void give_back(lua_State *L, int ud) {
    lua_pushvalue(L, ud);
    lua_rawseti(L, lua_upvalueindex(1), 1);
}

/* the types table at index t becomes the box's (at ud), its cache emptied
 * if it was another's */
static void use_types(lua_State *L, cb_box *b, int ud, int t) {
    int same;
    kn_getuv(L, ud);
    same = lua_rawequal(L, -1, t);
    lua_pop(L, 1);
    if (same) return;
    memset(b->type, TYPE_UNREAD, sizeof b->type);
    lua_pushvalue(L, t);
    kn_setuv(L, ud);
}

/* kn_cb_verdict by name, as scan() and verify() report them */
static const char *const VERDICT[] = {"ok", "not_json", "not_object", "duplicate_key", "no_sign", "bad_sign"};

/* nil, reason, message for a refused body; out of memory raises */
static int push_refusal(lua_State *L, const char *reason, const char *why) {
    lua_pushnil(L);
    lua_pushstring(L, reason);
    lua_pushstring(L, why);
    return 3;
}

/* scan(body) -> canonical, sign_or_nil | nil, reason, message */
static int l_callback_scan(lua_State *L) {
    size_t n;
    const char *s = kn_check_lstring(L, 1, "callback body", &n);
    char why[200];
    kn_str canon, given;
    int verdict, ud;
    kn_cb_scanner *sc;
    lua_settop(L, 1);
    sc = take_box(L)->sc;
    ud = lua_gettop(L);
    verdict = kn_cb_scan(sc, s, n, why, sizeof why);
    if (verdict == KN_CB_NOMEM) return kn_fail(L, "%s", why);
    if (verdict) {
        give_back(L, ud);
        return push_refusal(L, VERDICT[verdict], why);
    }
    if (kn_cb_canonical(sc, &canon, &given)) return kn_fail(L, "out of memory");
    lua_pushlstring(L, canon.p, canon.n);
    if (given.p) lua_pushlstring(L, given.p, given.n);
    else lua_pushnil(L);
    give_back(L, ud);
    return 2;
}

/* A member name: a name seen before comes from the names table (upvalue
 * 2) instead of being made again; checked, so a table left behind by an
 * error half way through an earlier call, or filled by another scanner,
 * cannot give a wrong name. */
static void push_name(lua_State *L, const kn_cb_member *m) {
    int slot = m->name_slot < 0 ? -m->name_slot : m->name_slot;
    if (m->name_slot > 0) {
        size_t n;
        const char *have;
        lua_rawgeti(L, lua_upvalueindex(2), slot);
        have = lua_tolstring(L, -1, &n);
        if (have && n == m->key.n && memcmp(have, m->key.p, n) == 0) return;
        lua_pop(L, 1);
    }
    lua_pushlstring(L, m->key.p, m->key.n);
    if (slot) {
        lua_pushvalue(L, -1);
        lua_rawseti(L, lua_upvalueindex(2), slot);
    }
}

static const char *kind_of(const kn_cb_member *m) {
    switch (m->type) {
    case KN_CB_STRING: return "a string";
    case KN_CB_NUMBER: return "a number that is not whole, or beyond +-2^53";
    case KN_CB_TRUE: case KN_CB_FALSE: return "a boolean";
    case KN_CB_OBJECT: return "an object";
    case KN_CB_ARRAY: return "an array";
    default: return "null";
    }
}

/* a member name's TYPE_*, from the types table at index 3; the name is on
 * top of the stack and stays there */
static unsigned char read_type(lua_State *L) {
    const char *want;
    unsigned char t = TYPE_OTHER;
    lua_pushvalue(L, -1);
    lua_rawget(L, 3);
    if (lua_type(L, -1) == LUA_TSTRING) {
        want = lua_tostring(L, -1);
        if (strcmp(want, "int") == 0) t = TYPE_INT;
        else if (strcmp(want, "float") == 0) t = TYPE_FLOAT;
        else if (strcmp(want, "string") == 0) t = TYPE_STRING;
    }
    lua_pop(L, 1);
    return t;
}

/* The data of a verified body at index 5 (made here), its nested members'
 * raw text at 6: the signed members only, each known field (types, index
 * 3: name -> "int" | "float" | "string" | ...) as its type says.  0, or 1
 * with why filled when a known field has another type. */
static int build_data(lua_State *L, cb_box *b, const kn_cb_member *members, size_t count, char *why, size_t whylen) {
    size_t i;
    int nested = 0;
    lua_createtable(L, 0, (int)count); /* 5: data */
    lua_pushnil(L);                    /* 6: nested, made on demand */
    for (i = 0; i < count; i++) {
        const kn_cb_member *m = &members[i];
        int slot = m->name_slot < 0 ? -m->name_slot : m->name_slot, bad = 0;
        unsigned char t;
        long long iv;
        /* a slot that changed name forgets its type, signed member or not */
        if (m->name_slot < 0) b->type[slot] = TYPE_UNREAD;
        /* '&' or '=' in a name: the canonical string could not tell it from
         * other members (docs/callback-sign.md) */
        if (memchr(m->key.p, '&', m->key.n) || memchr(m->key.p, '=', m->key.n)) {
            memset(b->type, TYPE_UNREAD, sizeof b->type);
            snprintf(why, whylen, "callback body refused: member name \"%.*s\" holds '&' or '=', so the signed "
                     "string cannot tell it from other members", (int)(m->key.n > 40 ? 40 : m->key.n), m->key.p);
            return 1;
        }
        if (!kn_cb_is_signed(m)) continue;
        push_name(L, m);
        t = slot ? b->type[slot] : TYPE_UNREAD;
        if (t == TYPE_UNREAD) {
            t = read_type(L);
            if (slot) b->type[slot] = t;
        }
        switch (t) {
        case TYPE_INT:
            bad = !kn_cb_whole(m, &iv);
            if (!bad) lua_pushinteger(L, (lua_Integer)iv);
            break;
        case TYPE_FLOAT:
            bad = m->type != KN_CB_NUMBER;
            if (!bad) lua_pushnumber(L, (lua_Number)m->number);
            break;
        case TYPE_STRING:
            bad = m->type != KN_CB_STRING;
            if (!bad && memchr(m->text.p, '&', m->text.n)) {
                /* a typed string holding '&' could hold the members after it */
                memset(b->type, TYPE_UNREAD, sizeof b->type);
                snprintf(why, whylen, "callback body refused: member \"%.*s\" holds '&', so the signed string "
                         "cannot tell it from the members after it", (int)(m->key.n > 40 ? 40 : m->key.n), m->key.p);
                return 1;
            }
            if (!bad) lua_pushlstring(L, m->text.p, m->text.n);
            break;
        default:
            switch (m->type) {
            case KN_CB_STRING: lua_pushlstring(L, m->text.p, m->text.n); break;
            case KN_CB_NUMBER:
                if (m->is_integer) lua_pushinteger(L, (lua_Integer)m->integer);
                else lua_pushnumber(L, m->number);
                break;
            case KN_CB_TRUE: lua_pushboolean(L, 1); break;
            case KN_CB_FALSE: lua_pushboolean(L, 0); break;
            default: /* an object or array: its raw text, for the caller to decode */
                if (!nested) {
                    lua_newtable(L);
                    lua_replace(L, 6);
                    nested = 1;
                }
                lua_pushvalue(L, -1);
                lua_pushlstring(L, m->text.p, m->text.n);
                lua_rawset(L, 6);
                lua_pushlstring(L, m->text.p, m->text.n);
            }
        }
        if (bad) {
            /* the members after this one were never seen here: forget every type */
            memset(b->type, TYPE_UNREAD, sizeof b->type);
            snprintf(why, whylen, "callback body refused: member \"%.*s\" must be %s (the reference's type), not %s",
                     (int)(m->key.n > 40 ? 40 : m->key.n), m->key.p,
                     t == TYPE_INT ? "an int" : t == TYPE_FLOAT ? "a float" : "a string", kind_of(m));
            return 1;
        }
        lua_rawset(L, 5);
    }
    return 0;
}

/* verify(body, secrets, types) -> sign, index, data, nested_or_nil
 *                               | nil, reason, message
 * The whole verification in one call: scan, canonical string, MD5 for each
 * secret (all of them, so timing tells nothing), constant-time compare,
 * then the data of the signed members, typed by `types`.  What it returns
 * owns everything: nothing stays behind for another call.
 * reason: "not_json", "not_object", "duplicate_key", "no_sign",
 * "bad_sign", "malformed". */
static int l_callback_verify(lua_State *L) {
    size_t n, i, count;
    const char *s = kn_check_lstring(L, 1, "callback body", &n);
    char why[200], hex[33];
    kn_str few[8], *secrets = few;
    const kn_cb_member *members;
    int index, verdict, ud;
    cb_box *box;
    kn_check_table(L, 2, "callback secrets");
    kn_check_table(L, 3, "callback field types");
    lua_settop(L, 3);
    count = kn_rawlen(L, 2);
    for (i = 0; i < count; i++) { /* checked first: the error below must not leak a larger array */
        lua_rawgeti(L, 2, (int)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING) return kn_misuse(L, "secret[%d] must be a string", (int)i + 1);
        lua_pop(L, 1);
    }
    box = take_box(L);
    ud = lua_gettop(L); /* 4 */
    if (count > sizeof few / sizeof few[0] && !(secrets = malloc(count * sizeof *secrets)))
        return kn_fail(L, "out of memory");
    for (i = 0; i < count; i++) { /* the strings stay referenced by the table */
        lua_rawgeti(L, 2, (int)i + 1);
        secrets[i].p = lua_tolstring(L, -1, &secrets[i].n);
        lua_pop(L, 1);
    }
    verdict = kn_cb_check(box->sc, s, n, secrets, count, hex, &index, why, sizeof why);
    if (secrets != few) free(secrets);
    if (verdict == KN_CB_NOMEM) return kn_fail(L, "%s", why);
    if (verdict) {
        give_back(L, ud);
        return push_refusal(L, VERDICT[verdict], why);
    }
    if (kn_cb_convert(box->sc, &members, &count)) return kn_fail(L, "out of memory");
    use_types(L, box, ud, 3);
    if (build_data(L, box, members, count, why, sizeof why)) {
        give_back(L, ud);
        return push_refusal(L, "malformed", why);
    }
    give_back(L, ud);
    lua_pushlstring(L, hex, 32);
    lua_pushinteger(L, index);
    lua_pushvalue(L, 5);
    lua_pushvalue(L, 6);
    return 4;
}

/* digest(canonical, secret) -> 32 upper-case hex chars */
static int l_callback_digest(lua_State *L) {
    size_t cn, sn;
    const char *c = kn_check_lstring(L, 1, "canonical string", &cn);
    const char *k = kn_check_lstring(L, 2, "callback secret", &sn);
    char hex[33];
    if (kn_cb_digest(c, cn, k, sn, hex)) return kn_fail(L, "MD5 failed");
    lua_pushlstring(L, hex, 32);
    return 1;
}

/* ------------------------------------------------------------- module */

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close) {
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

int luaopen_kinot_core(lua_State *L) {
    static const luaL_Reg signer_methods[] = {{"sign", signer_sign}, {"close", signer_close}, {NULL, NULL}};
    static const luaL_Reg http_methods[] = {
        {"request", http_request}, {"request_many", http_request_many}, {"close", http_close}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"signer", signer_new},
                                     {"http", http_new},
                                     {"content_md5", l_content_md5},
                                     {"md5_hex", l_md5_hex},
                                     {"digest", l_digest},
                                     {"uuid", l_uuid},
                                     {"ct_equal", l_ct_equal},
                                     {"now_ms", l_now_ms},
                                     {"monotonic", l_monotonic},
                                     {"sleep", l_sleep},
                                     {"curl_version", l_curl_version},
                                     {"wait_signal", l_wait_signal},
                                     {"block_signals", l_block_signals},
                                     {"callback_digest", l_callback_digest},
                                     {"error_metatables", l_error_metatables},
                                     {NULL, NULL}};
    luaL_newmetatable(L, ERROR_MT);
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newmetatable(L, MISUSE_MT);
    lua_pushcfunction(L, misuse_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 2);
    if (kn_http_global_init()) return kn_fail(L, "libcurl global initialisation failed");
    new_class(L, SIGNER_MT, signer_methods, signer_close);
    new_class(L, HTTP_MT, http_methods, http_close);
    luaL_newlib(L, funcs);
    {
        kn_buf *b = lua_newuserdata(L, sizeof *b);
        kn_buf_init(b);
        luaL_newmetatable(L, JSONBUF_MT);
        lua_pushcfunction(L, jsonbuf_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_pushcclosure(L, l_json_decode, 1);
        lua_setfield(L, -2, "json_decode");
    }
    {
        luaL_newmetatable(L, SCANNER_MT);
        lua_pushcfunction(L, scanner_gc);
        lua_setfield(L, -2, "__gc");
        lua_pop(L, 1);
        lua_createtable(L, 1, 0); /* the spare scanner, made by the first call */
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, l_callback_scan, 1);
        lua_setfield(L, -3, "callback_scan");
        lua_createtable(L, 256, 0); /* member names by kn_cb_convert's name_slot */
        lua_pushcclosure(L, l_callback_verify, 2);
        lua_setfield(L, -2, "callback_verify");
    }
    /* no version here: lua/kinot/version.lua holds the one copy */
    return 1;
}
