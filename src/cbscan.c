#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* low-level MD5: see digest.c for why */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/md5.h>
#include "cbscan.h"
#include "jsonlex.h"
#include "buf.h"
#include "digest.h"

#define MAX_DEPTH 64

/* a failing step's verdict, passed up */
#define TRY(step) do { int verdict_ = (step); if (verdict_) return verdict_; } while (0)
#define NAME_SLOTS 256
#define NAME_BYTES 32

/* members keep offsets into the arena while scanning (it may move) */
typedef struct slot {
    size_t koff, klen;
    size_t toff, tlen;
    int key_in_arena, text_in_arena; /* else an offset into the body */
    kn_cb_type type;
    int is_integer;
} slot;

struct kn_cb_scanner {
    const char *p, *end, *start; /* into body: the scanner's own copy */
    kn_buf body;            /* the body scanned, copied: members never point into the caller's memory */
    kn_buf arena;           /* decoded keys and strings */
    kn_buf scratch;         /* one escaped string while it is decoded */
    slot *slots;
    size_t nslots, cap;
    kn_cb_member *members;  /* resolved views of slots */
    size_t *order;          /* member indices sorted by key */
    kn_buf canon;
    char *why;
    size_t whylen;
    int last_integer; /* what kn_jl_number said of the last number */
    unsigned char name_len[NAME_SLOTS]; /* the names in kn_cb_convert's slots */
    char names[NAME_SLOTS][NAME_BYTES];
};

kn_cb_scanner *kn_cb_scanner_new(void) {
    kn_cb_scanner *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    kn_buf_init(&s->body);
    kn_buf_init(&s->arena);
    kn_buf_init(&s->scratch);
    kn_buf_init(&s->canon);
    return s;
}

void kn_cb_scanner_free(kn_cb_scanner *s) {
    if (!s) return;
    kn_buf_free(&s->body);
    kn_buf_free(&s->arena);
    kn_buf_free(&s->scratch);
    kn_buf_free(&s->canon);
    free(s->slots);
    free(s->members);
    free(s->order);
    free(s);
}

static int fail(kn_cb_scanner *s, const char *msg) {
    if (strcmp(msg, "out of memory") == 0) {
        if (s->why && s->whylen) snprintf(s->why, s->whylen, "out of memory");
        return KN_CB_NOMEM;
    }
    if (s->why && s->whylen) {
        if (s->p && s->p >= s->start && s->p <= s->end)
            snprintf(s->why, s->whylen, "body is not valid JSON: %s at byte %zu", msg, (size_t)(s->p - s->start) + 1);
        else
            snprintf(s->why, s->whylen, "body is not valid JSON: %s", msg);
    }
    return KN_CB_NOT_JSON;
}

static void ws(kn_cb_scanner *s) { s->p = kn_jl_ws(s->p, s->end); }

/* A string at s->p.  With a place to put it, its text is recorded as an
 * offset: into the body when it had no escape (no copy), else into the
 * arena where its decoded bytes go. */
static int string(kn_cb_scanner *s, size_t *off, size_t *len, int *in_arena) {
    const char *str, *why;
    size_t n;
    if ((why = kn_jl_string(&s->p, s->end, &s->scratch, &str, &n))) return fail(s, why);
    if (!off) return 0;
    *len = n;
    if (str != s->scratch.p) { /* no escape: the text is the body's own */
        *off = (size_t)(str - s->start);
        *in_arena = 0;
        return 0;
    }
    *off = s->arena.len;
    *in_arena = 1;
    return kn_buf_add(&s->arena, str, n) ? fail(s, "out of memory") : 0;
}

static int number(kn_cb_scanner *s) {
    const char *why = kn_jl_number(&s->p, s->end, &s->last_integer);
    return why ? fail(s, why) : 0;
}

static int literal(kn_cb_scanner *s, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0) return fail(s, "unexpected character");
    s->p += n;
    return 0;
}

static int value(kn_cb_scanner *s, int depth, kn_cb_type *type);

/* an object or array body after its opening bracket, for nested values */
static int container(kn_cb_scanner *s, int depth, char close) {
    int first = 1;
    kn_cb_type t;
    if (depth > MAX_DEPTH) return fail(s, "nesting too deep");
    s->p++;
    for (;;) {
        ws(s);
        if (s->p < s->end && *s->p == close) {
            s->p++;
            return 0;
        }
        if (!first) {
            if (s->p >= s->end || *s->p != ',') return fail(s, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
            s->p++;
            ws(s);
            /* the one tolerated trailing comma */
            if (s->p < s->end && *s->p == close) {
                s->p++;
                return 0;
            }
        }
        first = 0;
        if (close == '}') {
            if (s->p >= s->end || *s->p != '"') return fail(s, "expected a key");
            TRY(string(s, NULL, NULL, NULL));
            ws(s);
            if (s->p >= s->end || *s->p != ':') return fail(s, "expected ':'");
            s->p++;
            ws(s);
        }
        TRY(value(s, depth + 1, &t));
    }
}

static int value(kn_cb_scanner *s, int depth, kn_cb_type *type) {
    if (s->p >= s->end) return fail(s, "unexpected end");
    switch (*s->p) {
    case '{': *type = KN_CB_OBJECT; return container(s, depth, '}');
    case '[': *type = KN_CB_ARRAY; return container(s, depth, ']');
    case '"': *type = KN_CB_STRING; return string(s, NULL, NULL, NULL);
    case 't': *type = KN_CB_TRUE; return literal(s, "true");
    case 'f': *type = KN_CB_FALSE; return literal(s, "false");
    case 'n': *type = KN_CB_NULL; return literal(s, "null");
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) {
            *type = KN_CB_NUMBER;
            return number(s);
        }
        return fail(s, "unexpected character");
    }
}

static kn_str key_of(const kn_cb_scanner *s, size_t i) {
    return (kn_str){(s->slots[i].key_in_arena ? s->arena.p : s->start) + s->slots[i].koff, s->slots[i].klen};
}

static int keycmp(kn_str a, kn_str b) {
    size_t n = a.n < b.n ? a.n : b.n;
    int c;
    /* keys nearly always differ in their first byte: no memcmp call then */
    if (n && a.p[0] != b.p[0]) return (unsigned char)a.p[0] < (unsigned char)b.p[0] ? -1 : 1;
    c = n ? memcmp(a.p, b.p, n) : 0;
    if (c) return c;
    return a.n < b.n ? -1 : a.n > b.n;
}

/* sort member indices by key; insertion sort: callbacks have ~15 members */
static void sort_order(kn_cb_scanner *s) {
    size_t i, j;
    for (i = 0; i < s->nslots; i++) s->order[i] = i;
    for (i = 1; i < s->nslots; i++) {
        size_t v = s->order[i];
        for (j = i; j > 0 && keycmp(s->members[s->order[j - 1]].key, s->members[v].key) > 0; j--)
            s->order[j] = s->order[j - 1];
        s->order[j] = v;
    }
}

/* room for more members: slots, their views and their order grow together */
static int grow(kn_cb_scanner *s) {
    size_t cap = s->cap ? s->cap * 2 : 32;
    slot *ns = realloc(s->slots, cap * sizeof *ns);
    kn_cb_member *nm;
    size_t *no;
    if (!ns) return -1;
    s->slots = ns;
    nm = realloc(s->members, cap * sizeof *nm);
    if (!nm) return -1;
    s->members = nm;
    no = realloc(s->order, cap * sizeof *no);
    if (!no) return -1;
    s->order = no;
    s->cap = cap;
    return 0;
}

int kn_cb_scan(kn_cb_scanner *s, const char *caller_body, size_t n, char *why, size_t whylen) {
    size_t i;
    const char *body;
    s->why = why;
    s->whylen = whylen;
    s->nslots = 0;
    s->p = NULL;
    kn_buf_reset(&s->arena);
    /* scan a copy: what the members point into is the scanner's, and
     * stays valid until the next scan whatever becomes of caller_body */
    kn_buf_reset(&s->body);
    if (kn_buf_add(&s->body, n ? caller_body : "", n)) {
        if (why && whylen) snprintf(why, whylen, "out of memory");
        return KN_CB_NOMEM;
    }
    body = s->body.p;
    s->start = s->p = body;
    s->end = body + n;
    ws(s);
    if (s->p >= s->end || *s->p != '{') {
        s->p = NULL;
        if (why && whylen) snprintf(why, whylen, "body is not a JSON object");
        return KN_CB_NOT_OBJECT;
    }
    s->p++;
    for (;;) {
        slot *sl;
        const char *vstart;
        ws(s);
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            break;
        }
        if (s->nslots) {
            if (s->p >= s->end || *s->p != ',') return fail(s, "expected ',' or '}'");
            s->p++;
            ws(s);
            if (s->p < s->end && *s->p == '}') {
                s->p++;
                break;
            }
        }
        if (s->p >= s->end || *s->p != '"') return fail(s, "expected a key");
        if (s->nslots == s->cap && grow(s)) return fail(s, "out of memory");
        /* filled in place: a local copy stalled on store forwarding */
        sl = &s->slots[s->nslots];
        TRY(string(s, &sl->koff, &sl->klen, &sl->key_in_arena));
        ws(s);
        if (s->p >= s->end || *s->p != ':') return fail(s, "expected ':'");
        s->p++;
        ws(s);
        vstart = s->p;
        if (s->p < s->end && *s->p == '"') {
            sl->type = KN_CB_STRING;
            sl->is_integer = 0;
            TRY(string(s, &sl->toff, &sl->tlen, &sl->text_in_arena));
        } else {
            TRY(value(s, 1, &sl->type));
            sl->is_integer = sl->type == KN_CB_NUMBER && s->last_integer;
            sl->toff = (size_t)(vstart - body);
            sl->tlen = (size_t)(s->p - vstart);
            sl->text_in_arena = 0;
        }
        s->nslots++;
    }
    ws(s);
    if (s->p != s->end) return fail(s, "trailing characters after the object");
    for (i = 0; i < s->nslots; i++) {
        const slot *sl = &s->slots[i];
        s->members[i].key = key_of(s, i);
        s->members[i].text = (kn_str){(sl->text_in_arena ? s->arena.p : body) + sl->toff, sl->tlen};
        s->members[i].type = sl->type;
        s->members[i].is_integer = sl->is_integer;
    }
    sort_order(s);
    for (i = 1; i < s->nslots; i++) {
        kn_str a = s->members[s->order[i - 1]].key, b = s->members[s->order[i]].key;
        if (keycmp(a, b) == 0) {
            if (why && whylen) snprintf(why, whylen, "duplicate key \"%.*s\"", (int)(a.n > 40 ? 40 : a.n), a.p);
            return KN_CB_DUPLICATE_KEY;
        }
    }
    return KN_CB_OK;
}

size_t kn_cb_count(const kn_cb_scanner *s) { return s->nslots; }

const kn_cb_member *kn_cb_member_at(const kn_cb_scanner *s, size_t i) { return &s->members[i]; }

int kn_cb_is_signed(const kn_cb_member *m) {
    if (m->type == KN_CB_NULL || (m->type == KN_CB_STRING && m->text.n == 0)) return 0;
    return !(m->key.n == 4 && memcmp(m->key.p, "sign", 4) == 0);
}

#define WHOLE_MAX 9007199254740992LL /* 2^53: exact in a double */

int kn_cb_whole(const kn_cb_member *m, long long *out) {
    if (m->type != KN_CB_NUMBER) return 0;
    if (m->is_integer) {
        if (m->integer >= WHOLE_MAX || m->integer <= -WHOLE_MAX) return 0;
        *out = m->integer;
        return 1;
    }
    /* strictly inside: a text over 2^53 (2^53 + 1) rounds to 2^53 */
    if (!(m->number > -(double)WHOLE_MAX && m->number < (double)WHOLE_MAX)) return 0; /* NaN too */
    if (m->number != (double)(long long)m->number) return 0;
    *out = (long long)m->number;
    return 1;
}

int kn_cb_canonical(kn_cb_scanner *s, kn_str *canon, kn_str *given) {
    size_t i, out = 0;
    kn_buf_reset(&s->canon);
    given->p = NULL;
    given->n = 0;
    for (i = 0; i < s->nslots; i++) {
        const kn_cb_member *m = &s->members[s->order[i]];
        if (m->key.n == 4 && memcmp(m->key.p, "sign", 4) == 0) {
            *given = m->text;
            continue;
        }
        if (!kn_cb_is_signed(m)) continue;
        if ((out++ && kn_buf_addc(&s->canon, '&')) || kn_buf_add(&s->canon, m->key.p, m->key.n) ||
            kn_buf_addc(&s->canon, '=') || kn_buf_add(&s->canon, m->text.p, m->text.n))
            return -1;
    }
    canon->p = s->canon.p ? s->canon.p : "";
    canon->n = s->canon.len;
    return 0;
}

int kn_cb_digest(const char *canon, size_t cn, const char *secret, size_t sn, char hex[33]) {
    MD5_CTX c;
    unsigned char d[16];
    int ok = MD5_Init(&c) == 1 && MD5_Update(&c, canon, cn) == 1 && MD5_Update(&c, "&key=", 5) == 1 &&
             MD5_Update(&c, secret, sn) == 1 && MD5_Final(d, &c) == 1;
    OPENSSL_cleanse(&c, sizeof c);
    if (!ok) return -1;
    kn_hex_upper(d, 16, hex);
    return 0;
}

static int refuse(char *why, size_t whylen, int verdict, const char *msg) {
    if (why && whylen) snprintf(why, whylen, "%s", msg);
    return verdict;
}

int kn_cb_check(kn_cb_scanner *s, const char *body, size_t n, const kn_str *secrets, size_t nsecrets,
                char hex[33], int *index, char *why, size_t whylen) {
    char given_up[32], mine[33];
    kn_str canon, given;
    size_t i;
    int verdict = kn_cb_scan(s, body, n, why, whylen);
    *index = 0;
    if (verdict) return verdict;
    if (kn_cb_canonical(s, &canon, &given)) return refuse(why, whylen, KN_CB_NOMEM, "out of memory");
    if (!given.p || given.n == 0) return refuse(why, whylen, KN_CB_NO_SIGN, "callback body has no sign member");
    for (i = 0; i < 32; i++) { /* either hex case is accepted */
        char c = i < given.n ? given.p[i] : 0;
        given_up[i] = (char)((c >= 'a' && c <= 'f') ? c - 32 : c);
    }
    for (i = 0; i < nsecrets; i++) {
        if (kn_cb_digest(canon.p, canon.n, secrets[i].p, secrets[i].n, mine))
            return refuse(why, whylen, KN_CB_NOMEM, "MD5 failed");
        if (kn_ct_equal(given_up, given.n == 32 ? 32 : 0, mine, 32) && !*index) {
            *index = (int)i + 1;
            memcpy(hex, mine, 33);
        }
    }
    if (!*index)
        return refuse(why, whylen, KN_CB_BAD_SIGN, "callback sign does not match (tampered body or wrong secret)");
    return KN_CB_OK;
}

int kn_cb_convert(kn_cb_scanner *s, const kn_cb_member **members, size_t *count) {
    size_t i, j;
    /* numbers first: the one step that can fail, before any slot changes */
    for (i = 0; i < s->nslots; i++) {
        kn_cb_member *m = &s->members[i];
        if (m->type != KN_CB_NUMBER) continue;
        if (m->is_integer) {
            m->integer = kn_jl_integer(m->text.p, m->text.n);
            m->number = (double)m->integer;
        } else if (kn_jl_double(m->text.p, m->text.n, &m->number)) {
            return -1;
        }
    }
    for (i = 0; i < s->nslots; i++) {
        kn_cb_member *m = &s->members[i];
        const char *k = m->key.p;
        size_t kn = m->key.n;
        unsigned h = 2166136261u; /* FNV-1a */
        if (kn == 0 || kn >= NAME_BYTES) {
            m->name_slot = 0;
            continue;
        }
        for (j = 0; j < kn; j++) h = (h ^ (unsigned char)k[j]) * 16777619u;
        h = (h ^ (h >> 15)) & (NAME_SLOTS - 1);
        if (s->name_len[h] == kn && memcmp(s->names[h], k, kn) == 0) {
            m->name_slot = (int)h + 1;
        } else {
            memcpy(s->names[h], k, kn);
            s->name_len[h] = (unsigned char)kn;
            m->name_slot = -((int)h + 1);
        }
    }
    *members = s->members;
    *count = s->nslots;
    return 0;
}
