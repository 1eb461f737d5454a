/* Parser for a raw HTTP/1.x response header block (what libcurl hands the
 * header callback, line by line, for the final response). */
#ifndef KINOT_HEADERS_H
#define KINOT_HEADERS_H
#include <stddef.h>

/* Called once per header field with the name and the value, OWS trimmed and
 * obsolete folded lines joined by single spaces (written into scratch owned
 * by the parser). Return non-zero to stop. */
typedef int (*kn_header_fn)(void *ud, const char *name, size_t nlen, const char *value, size_t vlen);

/* Skips the status line and any line without a colon.  Returns 0, the
 * callback's non-zero value, or -1 when memory ran out. */
int kn_headers_parse(const char *raw, size_t len, kn_header_fn fn, void *ud);

#endif
