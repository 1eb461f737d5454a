#include <stdio.h>
#include <string.h>
#include "json.h"

#define MAX_DEPTH 200

typedef struct reader {
    const char *p, *start, *end;
    const kn_json_sink *sink;
    kn_buf *scratch;
    char *why;
    size_t whylen;
} reader;

static int fail(reader *r, const char *msg) {
    snprintf(r->why, r->whylen, "%s at byte %zu", msg, (size_t)(r->p - r->start) + 1);
    return -1;
}

static void ws(reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static int utf8(kn_buf *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    return kn_buf_add(b, u, n);
}

/* A string at r->p (the opening quote).  *s, *n: the bytes, straight from
 * the text when it has no escape, else decoded into the scratch buffer. */
static int string(reader *r, const char **s, size_t *n) {
    const char *run = ++r->p;
    int escaped = 0;
    for (;;) {
        unsigned char c;
        if (r->p >= r->end) return fail(r, "unterminated string");
        c = (unsigned char)*r->p;
        if (c == '"') break;
        if (c < 0x20) return fail(r, "control character in a string");
        if (c != '\\') {
            r->p++;
            continue;
        }
        if (!escaped) {
            escaped = 1;
            kn_buf_reset(r->scratch);
        }
        if (kn_buf_add(r->scratch, run, (size_t)(r->p - run))) return fail(r, "out of memory");
        if (r->p + 1 >= r->end) return fail(r, "unterminated escape");
        r->p++;
        switch (*r->p) {
        case '"': case '\\': case '/':
            if (kn_buf_addc(r->scratch, *r->p)) return fail(r, "out of memory");
            r->p++;
            break;
        case 'b': if (kn_buf_addc(r->scratch, '\b')) return fail(r, "out of memory"); r->p++; break;
        case 'f': if (kn_buf_addc(r->scratch, '\f')) return fail(r, "out of memory"); r->p++; break;
        case 'n': if (kn_buf_addc(r->scratch, '\n')) return fail(r, "out of memory"); r->p++; break;
        case 'r': if (kn_buf_addc(r->scratch, '\r')) return fail(r, "out of memory"); r->p++; break;
        case 't': if (kn_buf_addc(r->scratch, '\t')) return fail(r, "out of memory"); r->p++; break;
        case 'u': {
            unsigned cp, lo;
            if (r->end - r->p < 5 || hex4(r->p + 1, &cp)) return fail(r, "bad \\u escape");
            r->p += 5;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u' || hex4(r->p + 2, &lo) || lo < 0xDC00 ||
                    lo > 0xDFFF)
                    return fail(r, "unpaired surrogate");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                r->p += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(r, "unpaired surrogate");
            }
            if (utf8(r->scratch, cp)) return fail(r, "out of memory");
            break;
        }
        default:
            return fail(r, "bad escape");
        }
        run = r->p;
    }
    if (escaped) {
        if (kn_buf_add(r->scratch, run, (size_t)(r->p - run))) return fail(r, "out of memory");
        *s = r->scratch->p;
        *n = r->scratch->len;
    } else {
        *s = run;
        *n = (size_t)(r->p - run);
    }
    r->p++;
    return 0;
}

static int digits(reader *r) {
    const char *b = r->p;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    return r->p > b ? 0 : -1;
}

static int number(reader *r) {
    const char *b = r->p;
    int integer = 1;
    if (r->p < r->end && *r->p == '-') r->p++;
    if (r->p < r->end && *r->p == '0') r->p++;
    else if (digits(r)) return fail(r, "bad number");
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        integer = 0;
        if (digits(r)) return fail(r, "bad number");
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        integer = 0;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        if (digits(r)) return fail(r, "bad number");
    }
    /* 18 digits always fit an int64; longer ones go as doubles */
    if (r->p - b > 18) integer = 0;
    return r->sink->number(r->sink->ud, b, (size_t)(r->p - b), integer) ? fail(r, "out of memory") : 0;
}

static int literal(reader *r, const char *word, int which) {
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return fail(r, "unexpected character");
    r->p += n;
    return r->sink->literal(r->sink->ud, which) ? fail(r, "out of memory") : 0;
}

static int value(reader *r, int depth);

static int container(reader *r, int depth, int is_object) {
    char close = is_object ? '}' : ']';
    int first = 1;
    if (depth > MAX_DEPTH) return fail(r, "nesting too deep");
    if (r->sink->begin(r->sink->ud, is_object)) return fail(r, "out of memory");
    r->p++;
    for (;;) {
        ws(r);
        if (r->p < r->end && *r->p == close) break;
        if (!first) {
            if (r->p >= r->end || *r->p != ',') return fail(r, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
            r->p++;
            ws(r);
            if (r->p < r->end && *r->p == close) break; /* the tolerated trailing comma */
        }
        first = 0;
        if (is_object) {
            const char *k;
            size_t kn;
            if (r->p >= r->end || *r->p != '"') return fail(r, "expected a key");
            if (string(r, &k, &kn)) return -1;
            if (r->sink->key(r->sink->ud, k, kn)) return fail(r, "out of memory");
            ws(r);
            if (r->p >= r->end || *r->p != ':') return fail(r, "expected ':'");
            r->p++;
            ws(r);
        }
        if (value(r, depth + 1)) return -1;
    }
    r->p++;
    return r->sink->end(r->sink->ud, is_object) ? fail(r, "out of memory") : 0;
}

static int value(reader *r, int depth) {
    if (r->p >= r->end) return fail(r, "unexpected end");
    switch (*r->p) {
    case '{': return container(r, depth, 1);
    case '[': return container(r, depth, 0);
    case '"': {
        const char *s;
        size_t n;
        if (string(r, &s, &n)) return -1;
        return r->sink->string(r->sink->ud, s, n) ? fail(r, "out of memory") : 0;
    }
    case 't': return literal(r, "true", 2);
    case 'f': return literal(r, "false", 1);
    case 'n': return literal(r, "null", 0);
    default:
        if (*r->p == '-' || (*r->p >= '0' && *r->p <= '9')) return number(r);
        return fail(r, "unexpected character");
    }
}

int kn_json_parse(const char *text, size_t n, const kn_json_sink *sink, kn_buf *scratch, char *why, size_t whylen) {
    reader r;
    r.p = r.start = text;
    r.end = text + n;
    r.sink = sink;
    r.scratch = scratch;
    r.why = why;
    r.whylen = whylen;
    ws(&r);
    if (value(&r, 0)) return -1;
    ws(&r);
    if (r.p != r.end) return fail(&r, "trailing characters");
    return 0;
}
