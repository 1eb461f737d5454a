/* The platform's JSON sometimes carries a trailing comma before '}' or ']'
 * (see the reference's examples). Strict decoders refuse it; this removes
 * such commas outside strings so a strict decoder can take the rest. */
#ifndef KINOT_JSONFIX_H
#define KINOT_JSONFIX_H
#include <stddef.h>

/* Writes the relaxed text into out (at least n bytes); returns its length.
 * Only commas followed by optional blanks and a closing bracket go. */
size_t kn_json_drop_trailing_commas(const char *in, size_t n, char *out);

#endif
