#include <stdlib.h>
#include <string.h>
#include "jsonlex.h"

static const char OOM[] = "out of memory";


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

/* one escape at *pp (the char after the backslash), decoded into b */
static const char *escape(const char **pp, const char *end, kn_buf *b) {
    const char *p = *pp;
    unsigned cp, lo;
    char c;
    switch (*p) {
    case '"': case '\\': case '/': c = *p; break;
    case 'b': c = '\b'; break;
    case 'f': c = '\f'; break;
    case 'n': c = '\n'; break;
    case 'r': c = '\r'; break;
    case 't': c = '\t'; break;
    case 'u':
        if (end - p < 5 || hex4(p + 1, &cp)) return "bad \\u escape";
        p += 5;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                return "unpaired surrogate in \\u escape";
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return "unpaired surrogate in \\u escape";
        }
        *pp = p;
        return utf8(b, cp) ? OOM : NULL;
    default:
        return "bad escape";
    }
    *pp = p + 1;
    return kn_buf_addc(b, c) ? OOM : NULL;
}

/* bytes that end a run of plain string text: '"', '\\' and controls */
static const unsigned char STOP[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['"'] = 1, ['\\'] = 1,
};

const char *kn_jl_string(const char **pp, const char *end, kn_buf *scratch, const char **s, size_t *n) {
    const char *p = *pp + 1, *run = p, *why;
    int escaped = 0;
    for (;;) {
        unsigned char c;
        while (p < end && !STOP[(unsigned char)*p]) p++; /* the common case: one lookup a byte */
        if (p >= end) {
            *pp = p;
            return "unterminated string";
        }
        c = (unsigned char)*p;
        if (c == '"') break;
        if (c < 0x20) {
            *pp = p;
            return "control character in a string";
        }
        if (c != '\\') {
            p++;
            continue;
        }
        if (!escaped) {
            escaped = 1;
            kn_buf_reset(scratch);
        }
        if (kn_buf_add(scratch, run, (size_t)(p - run))) return OOM;
        if (++p >= end) {
            *pp = p;
            return "unterminated escape";
        }
        if ((why = escape(&p, end, scratch))) {
            *pp = p;
            return why;
        }
        run = p;
    }
    if (escaped) {
        if (kn_buf_add(scratch, run, (size_t)(p - run))) return OOM;
        *s = scratch->p;
        *n = scratch->len;
    } else {
        *s = run;
        *n = (size_t)(p - run);
    }
    *pp = p + 1;
    return NULL;
}

static const char *digits(const char **pp, const char *end) {
    const char *p = *pp;
    while (p < end && *p >= '0' && *p <= '9') p++;
    if (p == *pp) return "bad number";
    *pp = p;
    return NULL;
}

const char *kn_jl_number(const char **pp, const char *end, int *is_integer) {
    const char *start = *pp, *p = *pp;
    *is_integer = 1;
    if (p < end && *p == '-') p++;
    if (p < end && *p == '0') p++;
    else if (digits(&p, end)) goto bad;
    if (p < end && *p == '.') {
        p++;
        *is_integer = 0;
        if (digits(&p, end)) goto bad;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        *is_integer = 0;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (digits(&p, end)) goto bad;
    }
    if (p - start > 18) *is_integer = 0;
    *pp = p;
    return NULL;
bad:
    *pp = p;
    return "bad number";
}

long long kn_jl_integer(const char *p, size_t n) {
    const char *end = p + n;
    int neg = p < end && *p == '-';
    unsigned long long v = 0;
    for (p += neg; p < end; p++) v = v * 10 + (unsigned)(*p - '0'); /* at most 18 digits: no overflow */
    return neg ? -(long long)v : (long long)v;
}

/* 10^0..10^22: every one exact in a double */
static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

int kn_jl_double(const char *p, size_t n, double *out) {
    const char *q = p, *end = p + n;
    unsigned long long m = 0;
    int neg = 0, digits = 0, exp10 = 0;
    char tmp[64], *text = tmp;
    if (q < end && *q == '-') neg = 1, q++;
    for (; q < end && *q >= '0' && *q <= '9'; q++, digits++) m = m * 10 + (unsigned)(*q - '0');
    if (q < end && *q == '.')
        for (q++; q < end && *q >= '0' && *q <= '9'; q++, digits++, exp10--) m = m * 10 + (unsigned)(*q - '0');
    if (q < end && (*q == 'e' || *q == 'E')) {
        int eneg = 0, e = 0;
        q++;
        if (q < end && (*q == '+' || *q == '-')) eneg = *q++ == '-';
        for (; q < end && *q >= '0' && *q <= '9'; q++) e = e < 10000 ? e * 10 + (*q - '0') : e;
        exp10 += eneg ? -e : e;
    }
    /* 19 digits cannot overflow the mantissa; leading zeros count, which
     * only sends a few more numbers to strtod */
    if (q == end && digits <= 19 && m <= (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
        double d = (double)m;
        d = exp10 < 0 ? d / POW10[-exp10] : d * POW10[exp10];
        *out = neg ? -d : d;
        return 0;
    }
    if (n >= sizeof tmp && !(text = malloc(n + 1))) return -1;
    memcpy(text, p, n);
    text[n] = '\0';
    *out = strtod(text, NULL);
    if (text != tmp) free(text);
    return 0;
}
