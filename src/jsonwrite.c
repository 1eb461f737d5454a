#include <math.h>
#include <stdio.h>
#include <string.h>
#include "jsonwrite.h"
#include "jsonlex.h"

/* what each byte becomes inside a JSON string: NULL for itself */
static const char *const ESCAPE[256] = {
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
    "\\b",     "\\t",     "\\n",     "\\u000b", "\\f",     "\\r",     "\\u000e", "\\u000f",
    "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
    "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    NULL,      NULL,      "\\\"",    NULL,      NULL,      NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      "\\\\",    NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,
    NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      NULL,      "\\u007f",
    /* 0x80..0xff: as they are */
};

int kn_jw_string(kn_buf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    char *o;
    /* room for the text as it is and its quotes; each escape then makes
     * sure of room for itself and the rest (so the copying checks nothing) */
    if (n > (size_t)-1 - 3 || kn_buf_reserve(b, n + 2)) return -1;
    o = b->p + b->len;
    *o++ = '"';
    for (;;) {
        const unsigned char *run = p;
        const char *e;
        while (p < end && !ESCAPE[*p]) p++;
        memcpy(o, run, (size_t)(p - run));
        o += p - run;
        if (p == end) break;
        e = ESCAPE[*p++];
        b->len = (size_t)(o - b->p);
        if (kn_buf_reserve(b, 6 + (size_t)(end - p) + 1)) return -1;
        o = b->p + b->len;
        if (e[1] == 'u') {
            memcpy(o, e, 6);
            o += 6;
        } else {
            *o++ = e[0];
            *o++ = e[1];
        }
    }
    *o++ = '"';
    *o = '\0';
    b->len = (size_t)(o - b->p);
    return 0;
}

int kn_jw_integer(kn_buf *b, long long v) {
    char tmp[24], *p = tmp + sizeof tmp;
    /* through unsigned: -LLONG_MIN does not exist as a long long */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    return kn_buf_add(b, p, (size_t)(tmp + sizeof tmp - p));
}

#define SAFE_INTEGER 9007199254740992.0 /* 2^53 */

/* 10^0..10^22: every one exact in a double */
static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The %.15g text of a double that has one of at most 15 significant digits
 * in %g's fixed notation (a reading: 3.659, -48.1, 0.30000000000001), without
 * printf's exact arithmetic; 0 (nothing written) for any other double.
 * Why it is %.15g's text: m / 10^k (m < 10^15, so m and 10^k are exact and
 * the division is correctly rounded) reading back as |d| puts |d| within
 * half an ulp (< 1.2e-16 |d|) of that decimal, and 15-digit decimals are at
 * least 1e-15 |d| apart: it is the one nearest |d|, the one %.15g prints
 * (trailing zeros dropped), and it reads back, so the writer takes it. */
static int short_fixed(double d, char *text) {
    double a = fabs(d), t = 0;
    unsigned long long m, q;
    int k, ndig, i;
    char digits[20], *o = text;
    if (!(a >= 1e-4 && a < 1e15)) return 0;
    for (k = 1; k <= 19; k++) {
        t = a * POW10[k];
        if (t >= 1e15) return 0;
        if (t == floor(t) && (double)(unsigned long long)t / POW10[k] == a) break;
    }
    if (k > 19) return 0;
    for (m = (unsigned long long)t; k > 0 && m % 10 == 0; k--) m /= 10;
    for (ndig = 0, q = m; q; q /= 10) digits[sizeof digits - 1 - ndig++] = (char)('0' + q % 10);
    if (k == 0 || ndig - 1 - k < -4) return 0; /* (integral; %g's exponent notation) */
    if (d < 0) *o++ = '-';
    if (ndig > k) {
        for (i = 0; i < ndig - k; i++) *o++ = digits[sizeof digits - ndig + i];
    } else {
        *o++ = '0';
    }
    *o++ = '.';
    for (i = ndig; i < k; i++) *o++ = '0';
    for (i = ndig > k ? ndig - k : 0; i < ndig; i++) *o++ = digits[sizeof digits - ndig + i];
    return (int)(o - text);
}

int kn_jw_double(kn_buf *b, double d) {
    char text[32];
    int len = 0, prec;
    double back;
    if (isnan(d) || isinf(d)) return 1;
    if (d == floor(d) && d >= -SAFE_INTEGER && d <= SAFE_INTEGER) return kn_jw_integer(b, (long long)d);
    if ((len = short_fixed(d, text))) return kn_buf_add(b, text, (size_t)len);
    /* %.17g always reads back; the reader's own conversion judges the two
     * shorter ones (correctly rounded, as strtod) */
    for (prec = 15; prec <= 17; prec++) {
        len = snprintf(text, sizeof text, "%.*g", prec, d);
        if (len <= 0 || (size_t)len >= sizeof text) return -1;
        if (prec == 17) break;
        if (kn_jl_double(text, (size_t)len, &back)) return -1;
        if (back == d) break;
    }
    return kn_buf_add(b, text, (size_t)len);
}
