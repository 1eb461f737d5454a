/* libFuzzer target: the response-header parser (what libcurl hands us). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../src/headers.h"

static int check(void *ud, const char *name, size_t nlen, const char *value, size_t vlen) {
    size_t i;
    (void)ud;
    if (nlen == 0 || memchr(name, ':', nlen)) abort();
    for (i = 0; i < vlen; i++)
        if (value[i] == '\r' || value[i] == '\n') abort(); /* folded lines are joined */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)kn_headers_parse((const char *)data, size, check, NULL);
    return 0;
}
