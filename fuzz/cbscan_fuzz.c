/* libFuzzer target: the callback body scanner.  Any bytes must scan or be
 * refused with a reason; an accepted body gives a canonical string whose
 * pieces are its own members. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../src/cbscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_cb_scanner *s = kn_cb_scanner_new();
    char why[200], hex[33];
    kn_str canon, given;
    if (!s) return 0;
    why[0] = '\0';
    if (kn_cb_scan(s, (const char *)data, size, why, sizeof why) == 0) {
        size_t i, n = kn_cb_count(s);
        for (i = 0; i < n; i++) {
            const kn_cb_member *m = kn_cb_member_at(s, i);
            if (m->type != KN_CB_STRING && m->text.n == 0) abort(); /* raw text is never empty */
        }
        if (kn_cb_canonical(s, &canon, &given) == 0) {
            if (kn_cb_digest(canon.p, canon.n, "k", 1, hex) != 0 || strlen(hex) != 32) abort();
        }
    } else if (why[0] == '\0') {
        abort();
    }
    kn_cb_scanner_free(s);
    return 0;
}
