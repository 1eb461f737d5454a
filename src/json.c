#include <stdio.h>
#include <string.h>
#include "json.h"
#include "jsonlex.h"

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

static void ws(reader *r) { r->p = kn_jl_ws(r->p, r->end); }

static int string(reader *r, const char **s, size_t *n) {
    const char *why = kn_jl_string(&r->p, r->end, r->scratch, s, n);
    return why ? fail(r, why) : 0;
}

static int number(reader *r) {
    const char *b = r->p, *why;
    int integer;
    if ((why = kn_jl_number(&r->p, r->end, &integer))) return fail(r, why);
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
