/* JSON lexing shared by the response reader (json.c) and the callback
 * scanner (cbscan.c): strings with their escapes, numbers, blanks. */
#ifndef KINOT_JSONLEX_H
#define KINOT_JSONLEX_H
#include <stddef.h>
#include "buf.h"

/* skips JSON blanks */
const char *kn_jl_ws(const char *p, const char *end);

/* A string at *pp (its opening quote).  On success *pp is past the closing
 * quote and *s, *n are the decoded bytes: straight from the text when there
 * was no escape, else in scratch (reset first).  NULL, or a reason with *pp
 * at the offending byte. */
const char *kn_jl_string(const char **pp, const char *end, kn_buf *scratch, const char **s, size_t *n);

/* A number at *pp; *is_integer when it has no fraction or exponent and at
 * most 18 digits (always an int64).  NULL, or a reason. */
const char *kn_jl_number(const char **pp, const char *end, int *is_integer);

#endif
