/* libFuzzer target: the JSON writer's scalars (jsonwrite.h), read back by
 * the reader (json.h, jsonlex.h) on the C level:
 *   - the input as a string: written, then lexed back to the same bytes;
 *   - each 8 bytes of it as a double: written (or refused: NaN, inf), the
 *     text a JSON number that reads back as the same double, and the text
 *     printf's (the shortest of %.15g, %.16g, %.17g that reads back; an
 *     integral one within 2^53 as its digits): the writer's own short path
 *     must agree with it;
 *   - the input as JSON: each value the reader reports is written again;
 *     that text must parse, and written again from its own reading give
 *     the same bytes (decode(encode(x)) == x). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/json.h"
#include "../src/jsonlex.h"
#include "../src/jsonwrite.h"

typedef struct writer {
    kn_buf out;
    int depth, first[256];
} writer;

static int sep(writer *w) {
    if (w->depth > 0) {
        if (!w->first[w->depth - 1] && kn_buf_addc(&w->out, ',')) return -1;
        w->first[w->depth - 1] = 0;
    }
    return 0;
}
static int begin(void *ud, int is_object) {
    writer *w = ud;
    if (w->depth >= 255) abort(); /* the reader's own limit is lower */
    if (sep(w) || kn_buf_addc(&w->out, is_object ? '{' : '[')) return -1;
    w->first[w->depth++] = 1;
    return 0;
}
static int end(void *ud, int is_object) {
    writer *w = ud;
    w->depth--;
    return kn_buf_addc(&w->out, is_object ? '}' : ']');
}
static int key(void *ud, const char *s, size_t n) {
    writer *w = ud;
    if (sep(w) || kn_jw_string(&w->out, s, n) || kn_buf_addc(&w->out, ':')) return -1;
    w->first[w->depth - 1] = 1; /* the value that follows takes no comma */
    return 0;
}
static int string(void *ud, const char *s, size_t n) {
    writer *w = ud;
    return sep(w) || kn_jw_string(&w->out, s, n);
}
static int number(void *ud, const char *p, size_t n, int is_integer) {
    writer *w = ud;
    double d;
    int rc;
    if (sep(w)) return -1;
    if (is_integer) return kn_jw_integer(&w->out, kn_jl_integer(p, n));
    if (kn_jl_double(p, n, &d)) return -1;
    if (isinf(d)) return kn_buf_add(&w->out, "null", 4); /* 1e400: JSON has no infinity */
    rc = kn_jw_double(&w->out, d);
    if (rc == 1) abort(); /* a finite double refused */
    return rc;
}
static int literal(void *ud, int which) {
    writer *w = ud;
    static const char *const word[] = {"null", "false", "true"};
    return sep(w) || kn_buf_add(&w->out, word[which], strlen(word[which]));
}

/* the text the writer must give for d: printf's */
static void printf_text(double d, char *out, size_t n) {
    int p;
    if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
        snprintf(out, n, "%lld", (long long)d);
        return;
    }
    for (p = 15; p <= 17; p++) {
        snprintf(out, n, "%.*g", p, d);
        if (p == 17 || strtod(out, NULL) == d) return;
    }
}

static void check_double(double d) {
    kn_buf b;
    const char *p;
    char want[40];
    int is_integer, rc;
    kn_buf_init(&b);
    rc = kn_jw_double(&b, d);
    if (rc < 0) abort();
    if (rc == 1) {
        if (!isnan(d) && !isinf(d)) abort();
        kn_buf_free(&b);
        return;
    }
    p = b.p;
    if (kn_jl_number(&p, b.p + b.len, &is_integer) || p != b.p + b.len) abort(); /* one JSON number */
    if (is_integer) {
        if ((double)kn_jl_integer(b.p, b.len) != d) abort();
    } else {
        double back;
        if (kn_jl_double(b.p, b.len, &back) || back != d) abort();
    }
    printf_text(d, want, sizeof want);
    if (strcmp(want, b.p) != 0) abort();
    kn_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_buf b, scratch;
    writer w1, w2;
    const char *p, *s;
    size_t n, i;
    char why[160];

    /* a string of any bytes */
    kn_buf_init(&b);
    kn_buf_init(&scratch);
    if (kn_jw_string(&b, (const char *)data, size)) abort();
    p = b.p;
    if (kn_jl_string(&p, b.p + b.len, &scratch, &s, &n) || p != b.p + b.len) abort();
    if (n != size || (size && memcmp(s, data, size) != 0)) abort();
    for (i = 0; i < b.len; i++)
        if ((unsigned char)b.p[i] < 0x20 || b.p[i] == 0x7f) abort(); /* every control byte escaped */

    /* doubles */
    for (i = 0; i + 8 <= size && i < 64; i += 8) {
        double d;
        memcpy(&d, data + i, 8);
        check_double(d);
    }

    /* JSON: written from its reading, read and written again */
    memset(&w1, 0, sizeof w1);
    memset(&w2, 0, sizeof w2);
    kn_buf_init(&w1.out);
    kn_buf_init(&w2.out);
    {
        kn_json_sink s1 = {&w1, begin, end, key, string, number, literal};
        kn_json_sink s2 = {&w2, begin, end, key, string, number, literal};
        if (kn_json_parse((const char *)data, size, &s1, &scratch, why, sizeof why) == 0) {
            if (kn_json_parse(w1.out.p, w1.out.len, &s2, &scratch, why, sizeof why) != 0) abort();
            if (w1.out.len != w2.out.len || memcmp(w1.out.p, w2.out.p, w1.out.len) != 0) abort();
        }
    }
    kn_buf_free(&w1.out);
    kn_buf_free(&w2.out);
    kn_buf_free(&b);
    kn_buf_free(&scratch);
    return 0;
}
