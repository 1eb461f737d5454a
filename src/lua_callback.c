/* kinot.core's callback functions: callback_scan, callback_members,
 * callback_verify, callback_data, callback_digest over the callback scanner (cbscan.h). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lua_binding.h"
#include "cbscan.h"

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

/* the body scanned by sc (the box at ud taken): 0, or the refusal pushed
 * (3 values) with the box given back; out of memory raises.  The one
 * start of scan(), data() and members(). */
static int scan_body(lua_State *L, kn_cb_scanner *sc, const char *s, size_t n, int ud) {
    char why[200];
    int verdict = kn_cb_scan(sc, s, n, why, sizeof why);
    if (verdict == KN_CB_NOMEM) return kn_fail(L, "%s", why);
    if (!verdict) return 0;
    give_back(L, ud);
    return push_refusal(L, VERDICT[verdict], why);
}

/* scan(body) -> canonical, sign_or_nil | nil, reason, message */
static int l_callback_scan(lua_State *L) {
    size_t n;
    const char *s = kn_check_lstring(L, 1, "callback body", &n);
    kn_str canon, given;
    int refused, ud;
    kn_cb_scanner *sc;
    lua_settop(L, 1);
    sc = take_box(L)->sc;
    ud = lua_gettop(L);
    if ((refused = scan_body(L, sc, s, n, ud))) return refused;
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

/* A member name as a message shows it: its first 40 bytes, control
 * characters as '?' (under verify = "monitor" the name is anyone's and the
 * message goes to the error log; scanner.lua's shown() in Lua). */
static const char *shown(const kn_cb_member *m, char out[41]) {
    size_t i, n = m->key.n > 40 ? 40 : m->key.n;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)m->key.p[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    out[n] = '\0';
    return out;
}

/* Whether a member is in an event's data: the signed ones (kn_cb_is_signed),
 * and under a sign rule that signs them (kinot.callback.rules) the "" and
 * null members too; never "sign". */
static int in_data(const kn_cb_member *m, int keep_empty, int keep_null) {
    if (kn_cb_is_signed(m)) return 1;
    if (m->key.n == 4 && memcmp(m->key.p, "sign", 4) == 0) return 0;
    return m->type == KN_CB_NULL ? keep_null : keep_empty;
}

/* THE event builder of the C API (its twin for the FFI is build() in
 * lua/kinot/callback/scanner.lua; every path reaches one of them through
 * kinot.callback.scanner): the data of the members just scanned at index 5
 * (made here), its nested members' raw text at 6: the members in_data
 * keeps, each known field (types, index 3: name -> "int" | "float" |
 * "string" | ...) as its type says, a kept null as json.null (a NULL
 * lightuserdata) whatever its type.  0, or 1 with why filled when a known
 * field has another type or the body could be recut. */
static int build_data(lua_State *L, cb_box *b, const kn_cb_member *members, size_t count, int keep_empty,
                      int keep_null, char *why, size_t whylen) {
    size_t i;
    int nested = 0;
    char name[41];
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
            snprintf(why, whylen, "callback body refused: member name \"%s\" holds '&' or '=', so the signed "
                     "string cannot tell it from other members", shown(m, name));
            return 1;
        }
        if (!in_data(m, keep_empty, keep_null)) continue;
        push_name(L, m);
        if (m->type == KN_CB_NULL) { /* kept by the rule: json.null, typed or not */
            lua_pushlightuserdata(L, NULL);
            lua_rawset(L, 5);
            continue;
        }
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
                snprintf(why, whylen, "callback body refused: member \"%s\" holds '&', so the signed string "
                         "cannot tell it from the members after it", shown(m, name));
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
            snprintf(why, whylen, "callback body refused: member \"%s\" must be %s (the reference's type), not %s",
                     shown(m, name),
                     t == TYPE_INT ? "an int" : t == TYPE_FLOAT ? "a float" : "a string", kind_of(m));
            return 1;
        }
        lua_rawset(L, 5);
    }
    return 0;
}

/* the data of the members sc scanned, typed by the table at 3, into 5 and
 * 6 (build_data's): 0, or the refusal pushed (3 values); the box at ud
 * given back either way.  The one end of verify() and data(). */
static int scanned_data(lua_State *L, cb_box *box, int ud, int keep_empty, int keep_null) {
    const kn_cb_member *members;
    size_t count;
    char why[200];
    if (kn_cb_convert(box->sc, &members, &count)) return kn_fail(L, "out of memory");
    use_types(L, box, ud, 3);
    if (build_data(L, box, members, count, keep_empty, keep_null, why, sizeof why)) {
        give_back(L, ud);
        return push_refusal(L, "malformed", why);
    }
    give_back(L, ud);
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
    int index, verdict, refused, ud;
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
    if ((refused = scanned_data(L, box, ud, 0, 0))) return refused;
    lua_pushlstring(L, hex, 32);
    lua_pushinteger(L, index);
    lua_pushvalue(L, 5);
    lua_pushvalue(L, 6);
    return 4;
}

/* data(body, types, keep_empty, keep_null) -> data, nested_or_nil
 *                                          | nil, reason, message
 * The same data verify() gives, of a body whose sign was checked elsewhere
 * (a sign rule but the default, in Lua) or not at all (the worker's
 * rebuild of a stored body, verify = "monitor"): one scan, then
 * build_data.  keep_empty, keep_null: the rule signs "" / null members,
 * so they are data.  reason: "not_json", "not_object", "duplicate_key",
 * "malformed". */
static int l_callback_data(lua_State *L) {
    size_t n;
    const char *s = kn_check_lstring(L, 1, "callback body", &n);
    int refused, ud, keep_empty, keep_null;
    cb_box *box;
    kn_check_table(L, 2, "callback field types");
    keep_empty = lua_toboolean(L, 3);
    keep_null = lua_toboolean(L, 4);
    lua_settop(L, 2);
    lua_pushvalue(L, 2); /* 3: the types, where build_data reads them */
    box = take_box(L);
    ud = lua_gettop(L); /* 4 */
    if ((refused = scan_body(L, box->sc, s, n, ud))) return refused;
    if ((refused = scanned_data(L, box, ud, keep_empty, keep_null))) return refused;
    lua_pushvalue(L, 5);
    lua_pushvalue(L, 6);
    return 2;
}

/* a member's kind as the sign rules read it (kinot.callback.rules) */
static const char *member_kind(const kn_cb_member *m) {
    switch (m->type) {
    case KN_CB_STRING: return "string";
    case KN_CB_NUMBER: return m->is_integer ? "integer" : "number";
    case KN_CB_TRUE: return "true";
    case KN_CB_FALSE: return "false";
    case KN_CB_OBJECT: return "object";
    case KN_CB_ARRAY: return "array";
    default: return "null";
    }
}

/* members(body) -> list of { key =, kind =, text = } in body order
 *                | nil, reason, message
 * The members as the sign rules read them (the canonical strings of the
 * rules but the default, discover); the data of an event is build_data's
 * alone (callback_verify, callback_data).  kind:
 * "string", "integer" (no fraction or exponent, at most 18 digits),
 * "number", "true", "false", "null", "object", "array"; text: a string
 * decoded, anything else its raw text.  reason: "not_json", "not_object",
 * "duplicate_key". */
static int l_callback_members(lua_State *L) {
    size_t n, i, count;
    const char *s = kn_check_lstring(L, 1, "callback body", &n);
    int refused, ud;
    kn_cb_scanner *sc;
    lua_settop(L, 1);
    sc = take_box(L)->sc;
    ud = lua_gettop(L);
    if ((refused = scan_body(L, sc, s, n, ud))) return refused;
    count = kn_cb_count(sc);
    lua_createtable(L, (int)count, 0);
    for (i = 0; i < count; i++) {
        const kn_cb_member *m = kn_cb_member_at(sc, i);
        lua_createtable(L, 0, 3);
        lua_pushlstring(L, m->key.p, m->key.n);
        lua_setfield(L, -2, "key");
        lua_pushstring(L, member_kind(m));
        lua_setfield(L, -2, "kind");
        lua_pushlstring(L, m->text.p, m->text.n);
        lua_setfield(L, -2, "text");
        lua_rawseti(L, -2, (int)i + 1);
    }
    give_back(L, ud);
    return 1;
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

void kn_open_callback(lua_State *L) {
    luaL_newmetatable(L, SCANNER_MT);
    lua_pushcfunction(L, scanner_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_createtable(L, 1, 0); /* the spare scanner, made by the first call */
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_callback_scan, 1);
    lua_setfield(L, -3, "callback_scan");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_callback_members, 1);
    lua_setfield(L, -3, "callback_members");
    lua_createtable(L, 256, 0); /* member names by kn_cb_convert's name_slot */
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, l_callback_data, 2);
    lua_setfield(L, -4, "callback_data");
    lua_pushcclosure(L, l_callback_verify, 2);
    lua_setfield(L, -2, "callback_verify");
    lua_pushcfunction(L, l_callback_digest);
    lua_setfield(L, -2, "callback_digest");
}
