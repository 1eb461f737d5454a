/* A JSON reader that reports what it reads to a set of callbacks (SAX
 * style), so the Lua binding can build tables without this file knowing
 * Lua.  It tolerates the platform's quirk, a trailing comma before '}' or
 * ']', and is strict otherwise.  Numbers are reported as their lexeme with
 * a flag saying whether they are integers. */
#ifndef KINOT_JSON_H
#define KINOT_JSON_H
#include <stddef.h>
#include "buf.h"

typedef struct kn_json_sink {
    void *ud;
    /* each returns 0 to go on, non-zero to stop (e.g. out of memory) */
    int (*begin)(void *ud, int is_object);
    int (*end)(void *ud, int is_object);
    int (*key)(void *ud, const char *s, size_t n);
    int (*string)(void *ud, const char *s, size_t n);
    int (*number)(void *ud, const char *lexeme, size_t n, int is_integer);
    int (*literal)(void *ud, int which); /* 0 null, 1 false, 2 true */
} kn_json_sink;

/* Parses text; scratch holds decoded strings (reused between calls).
 * Returns 0, or -1 with a reason in why (naming the byte offset). */
int kn_json_parse(const char *text, size_t n, const kn_json_sink *sink, kn_buf *scratch, char *why, size_t whylen);

#endif
