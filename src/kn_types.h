/* The two plain types every layer of the core passes around: a byte
 * string that does not own its bytes, and a name/value pair of them.
 * Also declared, token for token, by lua/kinot/native.lua (FFI);
 * spec/native_spec.lua holds the two together. */
#ifndef KINOT_TYPES_H
#define KINOT_TYPES_H
#include <stddef.h>

typedef struct kn_str {
    const char *p;
    size_t n;
} kn_str;

typedef struct kn_kv {
    kn_str name, value;
} kn_kv;

#endif
