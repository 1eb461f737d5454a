/* JSON text out: the scalars of the SDK's one writer (the table walk is
 * the Lua binding's, lua_json.c), plain C so that the fuzzer can read them
 * back with the reader's own lexer (jsonlex.h).  The rules are the ones
 * kinot.json documents:
 *   - a string: '"' and '\' escaped, \b \f \n \r \t by name, any other
 *     byte below 0x20 and DEL as \u00XX; every other byte as it is
 *     ('/' and UTF-8, valid or not, are not touched);
 *   - an integer: its exact digits;
 *   - a double: NaN and +-inf refused; an integral one within +-2^53 as the
 *     integer it is (-0.0 is 0); any other as the shortest of %.15g, %.16g,
 *     %.17g that reads back as the same double. */
#ifndef KINOT_JSONWRITE_H
#define KINOT_JSONWRITE_H
#include <stddef.h>
#include "buf.h"

/* Each returns 0, or -1 when memory ran out (what was written so far of
 * the value may stay in b: the caller drops the whole text). */
int kn_jw_string(kn_buf *b, const char *s, size_t n);
int kn_jw_integer(kn_buf *b, long long v);
/* ... and 1 for NaN or an infinity (nothing written) */
int kn_jw_double(kn_buf *b, double d);

#endif
