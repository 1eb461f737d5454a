/* kinot.core.json_decode: JSON answers (json.h, numbers by jsonlex.h)
 * into Lua tables. */
#define _POSIX_C_SOURCE 200809L
#include "lua_binding.h"
#include "buf.h"
#include "json.h"
#include "jsonlex.h"

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
}
