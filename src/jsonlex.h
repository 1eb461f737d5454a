/* JSON lexing shared by the response reader (json.c) and the callback
 * scanner (cbscan.c): strings with their escapes, numbers, blanks. */
#ifndef KINOT_JSONLEX_H
#define KINOT_JSONLEX_H
#include <stddef.h>
#include "buf.h"

/* skips JSON blanks; inline: it runs between every two tokens */
static inline const char *kn_jl_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* A string at *pp (its opening quote).  On success *pp is past the closing
 * quote and *s, *n are the decoded bytes: straight from the text when there
 * was no escape, else in scratch (reset first).  NULL, or a reason with *pp
 * at the offending byte. */
const char *kn_jl_string(const char **pp, const char *end, kn_buf *scratch, const char **s, size_t *n);

/* A number at *pp; *is_integer when it has no fraction or exponent and at
 * most 18 digits (always an int64).  NULL, or a reason. */
const char *kn_jl_number(const char **pp, const char *end, int *is_integer);

/* The value of a number lexeme that kn_jl_number accepted: an integer (as
 * it judged one) exactly; any number correctly rounded into *out, in one
 * IEEE operation when mantissa and power of ten are both exact (Clinger's
 * fast path), else by strtod.  -1: out of memory (a lexeme over 63 bytes). */
long long kn_jl_integer(const char *p, size_t n);
int kn_jl_double(const char *p, size_t n, double *out);

#endif
