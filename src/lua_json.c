/* kinot.core.json_decode and json_encode: the SDK's one JSON reader
 * (json.h, numbers by jsonlex.h) into Lua tables, and its one writer, Lua
 * values into text (the scalars by jsonwrite.h). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include "lua_binding.h"
#include "buf.h"
#include "json.h"
#include "jsonlex.h"
#include "jsonwrite.h"

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

/* ------------------------------------------------------------ writing
 * A walk over the value, lua-cjson style: one growing buffer, raw table
 * access only (no metamethod, no Lua code runs), a depth limit.  What the
 * Lua side decides (kinot.json documents it): a table is a list (keys
 * 1..n, no hole) or an object (string keys only), else it is refused; an
 * empty table is {} unless its shape has `items`; an object's keys go out
 * in its shape's `order` (those present), then the rest sorted bytewise.
 *
 * Nothing raises while the walk runs: a refusal is written into the
 * writer's message and unwinds as -1, and the entry point raises it through
 * kn_misuse once the buffers are in a state to be reused.  Only memory
 * errors of the Lua API can jump out mid-walk; the buffers are the
 * writer's (a userdata), so nothing leaks then either. */
#define JW_MAX_DEPTH 1000

typedef struct jw_key { /* a member name, anchored by its table during the call */
    const char *s;
    size_t n;
} jw_key;

typedef struct jw_step { /* how the walk went down from one depth: a name, or an index when s is NULL */
    const char *s;
    size_t n;
    lua_Integer i;
} jw_step;

typedef struct jw_state {
    kn_buf out, msg;
    jw_key *keys; /* the names of the objects being written, a stack */
    size_t nkeys, capkeys;
    int busy; /* a walk is using it (a finalizer that encodes mid-walk gets a state of its own) */
    jw_step path[JW_MAX_DEPTH + 2];
    const void *tables[JW_MAX_DEPTH + 2];
} jw_state;

enum { JW_MISUSE = 1, JW_FAIL = 2 };

typedef struct jw {
    lua_State *L;
    jw_state *st;
    const char *name; /* what the caller calls the value (argument 3, on the stack) */
    int cache;        /* stack index of the shapes' rank tables (weak keys) */
    int err;
} jw;

static int jw_state_gc(lua_State *L) {
    jw_state *st = luaL_checkudata(L, 1, JSONWRITER_MT);
    kn_buf_free(&st->out);
    kn_buf_free(&st->msg);
    free(st->keys);
    st->keys = NULL;
    st->nkeys = st->capkeys = 0;
    return 0;
}

static jw_state *jw_state_new(lua_State *L) {
    jw_state *st = lua_newuserdata(L, sizeof *st);
    kn_buf_init(&st->out);
    kn_buf_init(&st->msg);
    st->keys = NULL;
    st->nkeys = st->capkeys = 0;
    st->busy = 0;
    luaL_getmetatable(L, JSONWRITER_MT);
    lua_setmetatable(L, -2);
    return st;
}

static int jw_oom(jw *w) {
    w->err = JW_FAIL;
    return -1;
}

#define JW_ADD(w, lit) (kn_buf_add(&(w)->st->out, lit, sizeof(lit) - 1) ? jw_oom(w) : 0)

static int ident(const char *s, size_t n) {
    size_t i;
    if (n == 0) return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return 0;
    }
    return 1;
}

/* refuses the value at `depth`: "<name><path> cannot be sent as JSON (why)",
 * the path as Lua would index it (.name, ["other name"] cut at 30 bytes, [i]) */
static int jw_refuse(jw *w, int depth, const char *why) {
    kn_buf *m = &w->st->msg;
    int d, bad = 0;
    char num[32];
    kn_buf_reset(m);
    bad |= kn_buf_add(m, w->name, strlen(w->name));
    for (d = 1; d < depth; d++) {
        const jw_step *p = &w->st->path[d];
        if (!p->s) {
            snprintf(num, sizeof num, "[%lld]", (long long)p->i);
            bad |= kn_buf_add(m, num, strlen(num));
        } else if (ident(p->s, p->n)) {
            bad |= kn_buf_addc(m, '.');
            bad |= kn_buf_add(m, p->s, p->n);
        } else { /* (a NUL as \0: the message is a C string on its way) */
            size_t i, n = p->n < 30 ? p->n : 30;
            bad |= kn_buf_add(m, "[\"", 2);
            for (i = 0; i < n; i++) bad |= p->s[i] ? kn_buf_addc(m, p->s[i]) : kn_buf_add(m, "\\0", 2);
            bad |= kn_buf_add(m, "\"]", 2);
        }
    }
    bad |= kn_buf_add(m, " cannot be sent as JSON (", 25);
    bad |= kn_buf_add(m, why, strlen(why));
    bad |= kn_buf_addc(m, ')');
    if (bad) return jw_oom(w);
    w->err = JW_MISUSE;
    return -1;
}

static int jw_value(jw *w, int idx, int shape, int depth);

static int jw_number(jw *w, int idx, int depth) {
    lua_State *L = w->L;
    int rc;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) return kn_jw_integer(&w->st->out, (long long)lua_tointeger(L, idx)) ? jw_oom(w) : 0;
#endif
    rc = kn_jw_double(&w->st->out, (double)lua_tonumber(L, idx));
    if (rc == 1) { /* NaN, an infinity: named as tostring names it on this runtime */
        char why[32];
        lua_pushvalue(L, idx);
        snprintf(why, sizeof why, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return jw_refuse(w, depth, why);
    }
    return rc ? jw_oom(w) : 0;
}

/* pushes shape[field] and returns its index when it is a table; 0 (and
 * nothing pushed) when absent; refuses another value */
static int jw_shape_part(jw *w, int shape, const char *field, int *bad) {
    lua_State *L = w->L;
    lua_pushstring(L, field);
    lua_rawget(L, shape);
    if (lua_istable(L, -1)) return lua_gettop(L);
    if (!lua_isnil(L, -1)) *bad = 1;
    lua_pop(L, 1);
    return 0;
}

/* a shape's rank table { [name] = position in order }, made once per shape
 * and kept in the weak cache; pushed, its index in *rank */
static int jw_rank(jw *w, int shape, int order, int depth, int *rank) {
    lua_State *L = w->L;
    lua_Integer i, n;
    lua_pushvalue(L, shape);
    lua_rawget(L, w->cache);
    *rank = lua_gettop(L);
    if (!lua_isnil(L, -1)) return 0;
    lua_pop(L, 1);
    n = (lua_Integer)kn_rawlen(L, order);
    lua_createtable(L, 0, (int)(n < 1000 ? n : 1000));
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, order, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING) return jw_refuse(w, depth, "its shape's order must list names");
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (!lua_isnil(L, -1)) return jw_refuse(w, depth, "its shape's order names a key twice");
        lua_pop(L, 1);
        lua_pushinteger(L, i);
        lua_rawset(L, -3);
    }
    lua_pushvalue(L, shape);
    lua_pushvalue(L, -2);
    lua_rawset(L, w->cache);
    return 0;
}

static int key_less(const jw_key *a, const jw_key *b) {
    const unsigned char *x = (const unsigned char *)a->s, *y = (const unsigned char *)b->s;
    size_t i, n = a->n < b->n ? a->n : b->n;
    for (i = 0; i < n; i++) /* (names differ early: no memcmp call) */
        if (x[i] != y[i]) return x[i] < y[i];
    return a->n < b->n;
}

static int key_cmp(const void *a, const void *b) { return key_less(a, b) ? -1 : key_less(b, a); }

/* bytewise, as Lua's < orders strings in the C locale */
static void sort_keys(jw_key *k, size_t n) {
    size_t i, j;
    if (n > 24) {
        qsort(k, n, sizeof *k, key_cmp);
        return;
    }
    for (i = 1; i < n; i++) {
        jw_key x = k[i];
        for (j = i; j > 0 && key_less(&x, &k[j - 1]); j--) k[j] = k[j - 1];
        k[j] = x;
    }
}

static int jw_push_key(jw *w, int idx) {
    jw_state *st = w->st;
    if (st->nkeys == st->capkeys) {
        size_t cap = st->capkeys ? st->capkeys * 2 : 64;
        jw_key *k = cap > (size_t)-1 / sizeof *k ? NULL : realloc(st->keys, cap * sizeof *k);
        if (!k) return -1;
        st->keys = k;
        st->capkeys = cap;
    }
    st->keys[st->nkeys].s = lua_tolstring(w->L, idx, &st->keys[st->nkeys].n);
    st->nkeys++;
    return 0;
}

/* one member: the name (anchored by the table), then the value on top */
static int jw_member(jw *w, const char *k, size_t kn, int first, int fields, int depth) {
    lua_State *L = w->L;
    int child = 0, value = lua_gettop(L);
    if (!first && JW_ADD(w, ",")) return -1;
    if (kn_jw_string(&w->st->out, k, kn) || kn_buf_addc(&w->st->out, ':')) return jw_oom(w);
    w->st->path[depth].s = k;
    w->st->path[depth].n = kn;
    if (fields) {
        lua_pushlstring(L, k, kn);
        lua_rawget(L, fields);
        if (lua_istable(L, -1)) child = lua_gettop(L);
        else if (!lua_isnil(L, -1)) return jw_refuse(w, depth + 1, "its shape is not a table");
    }
    if (jw_value(w, value, child, depth + 1)) return -1;
    lua_settop(L, value - 1);
    return 0;
}

static int jw_table(jw *w, int idx, int shape, int depth) {
    lua_State *L = w->L;
    jw_state *st = w->st;
    size_t base = st->nkeys, nstr, j;
    lua_Integer n, ints = 0, i;
    int others = 0, first = 1, bad = 0, top = lua_gettop(L);
    st->tables[depth] = lua_topointer(L, idx);
    if (depth > JW_MAX_DEPTH) {
        /* a table inside itself ends here too: named at its first repeat,
         * where the walk went round */
        int d, e;
        for (d = 2; d <= depth; d++)
            for (e = 1; e < d; e++)
                if (st->tables[e] == st->tables[d]) return jw_refuse(w, d, "it contains itself");
        return jw_refuse(w, depth, "nested deeper than 1000");
    }
    if (!lua_checkstack(L, 8)) return jw_oom(w);
    /* a list: keys 1..n, no hole; an object: string keys; nothing else */
    n = (lua_Integer)kn_rawlen(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        switch (lua_type(L, -2)) {
        case LUA_TSTRING:
            if (jw_push_key(w, -2)) {
                lua_pop(L, 2);
                return jw_oom(w);
            }
            break;
        case LUA_TNUMBER: {
            lua_Number k;
#if LUA_VERSION_NUM >= 503
            if (lua_isinteger(L, -2)) {
                lua_Integer ki = lua_tointeger(L, -2);
                if (ki >= 1 && ki <= n) ints++;
                else others = 1;
                break;
            }
#endif
            k = lua_tonumber(L, -2);
            if (k >= 1 && k <= (lua_Number)n && k == floor(k)) ints++;
            else others = 1;
            break;
        }
        default: others = 1;
        }
        lua_pop(L, 1);
    }
    nstr = st->nkeys - base;
    if (others || ints != n || (nstr > 0 && n > 0))
        return jw_refuse(w, depth, "a table must be a list 1..n or have only string keys");

    if (n > 0) {
        int items = shape ? jw_shape_part(w, shape, "items", &bad) : 0;
        if (bad) return jw_refuse(w, depth, "its shape's items is not a table");
        if (JW_ADD(w, "[")) return -1;
        st->path[depth].s = NULL;
        for (i = 1; i <= n; i++) {
            if (i > 1 && JW_ADD(w, ",")) return -1;
            lua_rawgeti(L, idx, (int)i);
            st->path[depth].i = i;
            if (jw_value(w, lua_gettop(L), items, depth + 1)) return -1;
            lua_pop(L, 1);
        }
        lua_settop(L, top);
        return JW_ADD(w, "]");
    }
    if (nstr == 0) { /* {}, or [] where the shape says a list goes */
        int list = 0;
        if (shape) {
            lua_pushstring(L, "items");
            lua_rawget(L, shape);
            list = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        return list ? JW_ADD(w, "[]") : JW_ADD(w, "{}");
    }

    if (JW_ADD(w, "{")) return -1;
    if (shape) {
        int order = jw_shape_part(w, shape, "order", &bad), rank = 0, fields;
        size_t hits = 0, kept;
        if (bad) return jw_refuse(w, depth, "its shape's order is not a table");
        if (order) {
            lua_Integer no = (lua_Integer)kn_rawlen(L, order);
            if (jw_rank(w, shape, order, depth, &rank)) return -1;
            fields = jw_shape_part(w, shape, "fields", &bad);
            if (bad) return jw_refuse(w, depth, "its shape's fields is not a table");
            /* the shape's names, those present */
            for (i = 1; i <= no; i++) {
                const char *k;
                size_t kn;
                lua_rawgeti(L, order, (int)i);
                k = lua_tolstring(L, -1, &kn); /* a string (jw_rank), anchored by order */
                lua_rawget(L, idx);
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    continue;
                }
                if (jw_member(w, k, kn, first, fields, depth)) return -1;
                first = 0;
                hits++;
            }
            /* then the others, sorted */
            kept = 0;
            if (hits < nstr)
                for (j = 0; j < nstr; j++) {
                    jw_key k = st->keys[base + j];
                    lua_pushlstring(L, k.s, k.n);
                    lua_rawget(L, rank);
                    if (lua_isnil(L, -1)) st->keys[base + kept++] = k;
                    lua_pop(L, 1);
                }
            nstr = kept;
            st->nkeys = base + kept;
        } else {
            fields = jw_shape_part(w, shape, "fields", &bad);
            if (bad) return jw_refuse(w, depth, "its shape's fields is not a table");
        }
        shape = fields; /* from here, the members' shapes */
    }
    sort_keys(st->keys + base, nstr);
    for (j = 0; j < nstr; j++) {
        jw_key k = st->keys[base + j]; /* (re-read each time: the walk below may move the array) */
        lua_pushlstring(L, k.s, k.n);
        lua_rawget(L, idx);
        if (jw_member(w, k.s, k.n, first, shape, depth)) return -1;
        first = 0;
    }
    st->nkeys = base;
    lua_settop(L, top);
    return JW_ADD(w, "}");
}

static int jw_value(jw *w, int idx, int shape, int depth) {
    lua_State *L = w->L;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return kn_jw_string(&w->st->out, s, n) ? jw_oom(w) : 0;
    }
    case LUA_TNUMBER: return jw_number(w, idx, depth);
    case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? JW_ADD(w, "true") : JW_ADD(w, "false");
    case LUA_TTABLE: return jw_table(w, idx, shape, depth);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) return JW_ADD(w, "null"); /* json.null, cjson.null */
        /* fall through */
    default: {
        char why[48];
        snprintf(why, sizeof why, "a %s", luaL_typename(L, idx));
        return jw_refuse(w, depth, why);
    }
    }
}

/* encode(v[, shape][, name]) -> text; raises misuse naming where in v
 * (called name, "value" by default) the first value JSON cannot carry is.
 * shape: { order = {names...}, fields = {name = shape}, items = shape }. */
static int l_json_encode(lua_State *L) {
    jw w;
    jw_state *st = lua_touserdata(L, lua_upvalueindex(1));
    int shape, rc;
    lua_settop(L, 3);
    if (lua_type(L, 2) == LUA_TSTRING && lua_isnil(L, 3)) { /* encode(v, name) */
        lua_insert(L, 2);
    }
    if (!lua_isnil(L, 2) && !lua_istable(L, 2)) kn_misuse(L, "the JSON shape must be a table (got %s)", luaL_typename(L, 2));
    shape = lua_isnil(L, 2) ? 0 : 2;
    w.name = lua_isnil(L, 3) ? "value" : kn_check_lstring(L, 3, "the name of the value", NULL);
    if (st->busy) st = jw_state_new(L); /* at 4: a finalizer's encode mid-walk */
    lua_pushvalue(L, lua_upvalueindex(2));
    w.cache = lua_gettop(L);
    w.L = L;
    w.st = st;
    w.err = 0;
    kn_buf_reset(&st->out);
    st->nkeys = 0;
    st->busy = 1;
    rc = jw_value(&w, 1, shape, 1);
    st->busy = 0;
    lua_settop(L, w.cache);
    if (rc) {
        if (w.err == JW_MISUSE) return kn_misuse(L, "%s", st->msg.p);
        return kn_fail(L, "out of memory writing JSON");
    }
    lua_pushlstring(L, st->out.p, st->out.len);
    if (st->out.cap > ((size_t)1 << 20)) kn_buf_free(&st->out); /* no megabytes kept for the next small text */
    return 1;
}

/* the decoder's scratch buffer: one per state, the closure's upvalue */
void kn_open_json(lua_State *L) {
    kn_buf *b = lua_newuserdata(L, sizeof *b);
    kn_buf_init(b);
    luaL_newmetatable(L, JSONBUF_MT);
    lua_pushcfunction(L, jsonbuf_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, l_json_decode, 1);
    lua_setfield(L, -2, "json_decode");

    /* the writer's state and its cache of shapes (weak keys) */
    luaL_newmetatable(L, JSONWRITER_MT);
    lua_pushcfunction(L, jw_state_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    jw_state_new(L);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, l_json_encode, 2);
    lua_setfield(L, -2, "json_encode");
}
