/* kinot.core.http: HTTP over libcurl (http.h) for Lua, the response
 * headers read by headers.h. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include "lua_binding.h"
#include "http.h"
#include "headers.h"
#include "interrupt.h"

typedef struct http_ud {
    kn_http *h;
    kn_http_result one;      /* reused by single requests */
    kn_http_result *many;    /* reused by batches */
    size_t nmany;
    kn_http_req *reqs;
    kn_kv *kv;
    size_t kvcap;
    int streams; /* streams open on it: a close waits for the last */
    int collect_at; /* streams open at which the next one collects first (0: STREAMS_COLLECT) */
    int closing;
} http_ud;

/* A stream left open (a pager loop left by `break` under LuaJIT, which has
 * no to-be-closed variables, its closer not called) holds its curl multi's
 * socket pair and the connections of its transfers out until the GC
 * collects it, and the GC paces itself by Lua memory alone: with a large
 * heap, hundreds could pile up (EMFILE).  So a new stream on a handle
 * with STREAMS_COLLECT others open runs a full collection first (each one
 * unreachable is closed by its __gc), and the next one only once twice as
 * many as were left are open: streams a program holds open on purpose cost
 * a collection at each doubling, not at each stream. */
#define STREAMS_COLLECT 4

/* a stream (http:stream): keeps its handle's userdata alive (ref) */
typedef struct stream_ud {
    kn_http_stream *s;
    http_ud *owner;
    int ref;
    size_t *done;
} stream_ud;

static http_ud *check_http(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    if (!u->h || u->closing) kn_misuse(L, "http handle is closed");
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

static void http_release(http_ud *u) {
    size_t i;
    if (u->h) kn_http_free(u->h);
    kn_http_result_free(&u->one);
    for (i = 0; i < u->nmany; i++) kn_http_result_free(&u->many[i]);
    free(u->many);
    free(u->reqs);
    free(u->kv);
    memset(u, 0, sizeof *u);
}

/* close(): with a stream open, the handle is closed for new calls at once
 * and freed when the last stream closes (its transfers use it) */
static int http_close(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    if (u->streams > 0) {
        u->closing = 1;
        return 0;
    }
    http_release(u);
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
            u->kv[start + n].value = kn_str_at(L, -1, "header value");
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

static const char *const kind_names[] = {"ok", "network", "timeout", "tls", "too_large", "invalid", "nomem",
                                         "interrupted"};

static int http_request(lua_State *L) {
    http_ud *u = check_http(L);
    kn_http_req req;
    size_t at = 0;
    lua_settop(L, 2);
    read_req(L, u, 2, &req, &at);
    req.headers = u->kv;
    kn_http_perform(u->h, &req, &u->one);
    if (u->one.kind == KN_HTTP_INVALID) return kn_misuse(L, "%s", u->one.msg);
    if (u->one.kind == KN_HTTP_INTERRUPTED) return kn_interrupt_error(L);
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

static void push_result(lua_State *L, const kn_http_result *r);

/* request_many({req1, req2, ...}) -> {res1, res2, ...}; each res is a
 * response table, or {error = kind, message = ..., not_sent = bool} */
static int http_request_many(lua_State *L) {
    http_ud *u = check_http(L);
    size_t n, i, at = 0;
    kn_check_table(L, 2, "request_many's list");
    lua_settop(L, 2);
    n = kn_rawlen(L, 2);
    if (n > u->nmany) {
        /* both arrays grown before nmany says so: a failure in between
         * leaves nmany the size both still have */
        kn_http_req *nr = realloc(u->reqs, n * sizeof *nr);
        kn_http_result *nm;
        if (!nr) return kn_fail(L, "out of memory starting a batch");
        u->reqs = nr;
        nm = realloc(u->many, n * sizeof *nm);
        if (!nm) return kn_fail(L, "out of memory starting a batch");
        u->many = nm;
        for (i = u->nmany; i < n; i++) kn_http_result_init(&u->many[i]);
        u->nmany = n;
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
    if (kn_interrupted()) return kn_interrupt_error(L);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        push_result(L, &u->many[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

/* ------------------------------------------------------------ streams */

/* stream(slots) -> a stream of up to `slots` transfers at once (http.h) */
static int http_stream(lua_State *L) {
    http_ud *u = check_http(L);
    lua_Number n = kn_check_number(L, 2, "stream's slots");
    stream_ud *su;
    if (!(n >= 1 && n <= 1024) || n != (lua_Number)(size_t)n) kn_misuse(L, "stream's slots must be an integer from 1 to 1024");
    if (u->streams >= (u->collect_at ? u->collect_at : STREAMS_COLLECT)) {
        lua_gc(L, LUA_GCCOLLECT, 0);
        u->collect_at = u->streams * 2 > STREAMS_COLLECT ? u->streams * 2 : STREAMS_COLLECT;
    }
    su = lua_newuserdata(L, sizeof *su);
    memset(su, 0, sizeof *su);
    su->ref = LUA_NOREF;
    luaL_getmetatable(L, HTTP_STREAM_MT);
    lua_setmetatable(L, -2);
    su->done = malloc((size_t)n * sizeof *su->done);
    if (!su->done) return kn_fail(L, "out of memory starting a stream");
    su->s = kn_http_stream_new(u->h, (size_t)n);
    if (!su->s) return kn_fail(L, "out of memory starting a stream");
    su->owner = u;
    u->streams++;
    lua_pushvalue(L, 1);
    su->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static stream_ud *check_stream(lua_State *L) {
    stream_ud *su = luaL_checkudata(L, 1, HTTP_STREAM_MT);
    if (!su->s) kn_misuse(L, "stream is closed");
    return su;
}

static int stream_close(lua_State *L) {
    stream_ud *su = luaL_checkudata(L, 1, HTTP_STREAM_MT);
    if (su->s) {
        kn_http_stream_free(su->s);
        su->s = NULL;
        if (--su->owner->streams == 0 && su->owner->closing) http_release(su->owner);
        luaL_unref(L, LUA_REGISTRYINDEX, su->ref);
        su->ref = LUA_NOREF;
    }
    free(su->done);
    su->done = NULL;
    return 0;
}

/* add(slot, req) -> true (started) | false (ended at once: the next wait
 * hands it back).  A request it cannot make raises, as request does. */
static int stream_add(lua_State *L) {
    stream_ud *su = check_stream(L);
    lua_Number n = kn_check_number(L, 2, "slot");
    kn_http_req req;
    size_t at = 0, slot;
    int rc;
    if (!(n >= 1 && n <= (lua_Number)kn_http_stream_slots(su->s)) || n != (lua_Number)(size_t)n)
        return kn_misuse(L, "slot must be an integer from 1 to %d", (int)kn_http_stream_slots(su->s));
    slot = (size_t)n - 1;
    lua_settop(L, 3);
    read_req(L, su->owner, 3, &req, &at);
    req.headers = su->owner->kv;
    rc = kn_http_stream_add(su->s, slot, &req);
    if (rc == -2) return kn_misuse(L, "slot %d is busy", (int)slot + 1);
    lua_settop(L, 3); /* (the strings read above: copied, no longer needed) */
    if (rc && kn_http_stream_result(su->s, slot)->kind == KN_HTTP_INVALID)
        return kn_misuse(L, "%s", kn_http_stream_result(su->s, slot)->msg);
    lua_pushboolean(L, rc == 0);
    return 1;
}

static void push_result(lua_State *L, const kn_http_result *r) {
    if (r->kind == KN_HTTP_OK) {
        push_response(L, r);
        return;
    }
    lua_createtable(L, 0, 3);
    lua_pushstring(L, r->kind == KN_HTTP_INVALID ? "invalid" : kind_names[r->kind]);
    lua_setfield(L, -2, "error");
    lua_pushstring(L, r->msg);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, r->not_sent);
    lua_setfield(L, -2, "not_sent");
}

/* wait([seconds]) -> slots, results: the transfers that ended (a slot each,
 * free again, and its response or {error, message, not_sent}); both empty
 * when `seconds` passed first.  No seconds: until one ends (at once when
 * none runs). */
static int stream_wait(lua_State *L) {
    stream_ud *su = check_stream(L);
    long ms = -1;
    int k, i;
    if (!lua_isnoneornil(L, 2)) {
        lua_Number sec = kn_check_number(L, 2, "wait's seconds");
        if (!(sec >= 0 && sec <= 1e6)) kn_misuse(L, "wait's seconds must be a number from 0 to 1e6");
        ms = (long)(sec * 1000.0 + 0.5);
    }
    k = kn_http_stream_wait(su->s, ms, su->done);
    if (k < 0) return kn_interrupt_error(L); /* (the caller's close abandons what runs) */
    lua_createtable(L, k, 0);
    lua_createtable(L, k, 0);
    for (i = 0; i < k; i++) {
        lua_pushinteger(L, (lua_Integer)su->done[i] + 1);
        lua_rawseti(L, -3, i + 1);
        push_result(L, kn_http_stream_result(su->s, su->done[i]));
        lua_rawseti(L, -2, i + 1);
    }
    return 2;
}

/* running() -> transfers under way */
static int stream_running(lua_State *L) {
    stream_ud *su = check_stream(L);
    lua_pushinteger(L, (lua_Integer)kn_http_stream_running(su->s));
    return 1;
}

static int l_curl_version(lua_State *L) {
    lua_pushstring(L, kn_http_version());
    return 1;
}

void kn_open_http(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"request", http_request}, {"request_many", http_request_many}, {"stream", http_stream},
        {"close", http_close}, {NULL, NULL}};
    static const luaL_Reg stream_methods[] = {
        {"add", stream_add}, {"wait", stream_wait}, {"running", stream_running}, {"close", stream_close},
        {NULL, NULL}};
    if (kn_http_global_init()) kn_fail(L, "libcurl global initialisation failed");
    kn_new_class(L, HTTP_MT, methods, http_close);
    kn_new_class(L, HTTP_STREAM_MT, stream_methods, stream_close);
    lua_pushcfunction(L, http_new);
    lua_setfield(L, -2, "http");
    lua_pushcfunction(L, l_curl_version);
    lua_setfield(L, -2, "curl_version");
}
