/* libFuzzer target: the callback body scanner.  Any bytes must scan or be
 * refused with a reason; an accepted body gives a canonical string whose
 * pieces are its own members, numbers that convert exactly as strtod reads
 * them, and the same verdict from kn_cb_check. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../src/cbscan.h"

/* the lexeme as strtod reads it: the reference for kn_cb_convert */
static double reference(kn_str t) {
    char *z = malloc(t.n + 1);
    double d;
    if (!z) abort();
    memcpy(z, t.p, t.n);
    z[t.n] = '\0';
    d = strtod(z, NULL);
    free(z);
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_cb_scanner *s = kn_cb_scanner_new();
    char why[200], hex[33];
    kn_str canon, given, secret = {"k", 1};
    const kn_cb_member *members;
    int verdict, index;
    if (!s) return 0;
    why[0] = '\0';
    verdict = kn_cb_scan(s, (const char *)data, size, why, sizeof why);
    if (verdict == KN_CB_OK) {
        size_t i, n = kn_cb_count(s), count;
        for (i = 0; i < n; i++) {
            const kn_cb_member *m = kn_cb_member_at(s, i);
            if (m->type != KN_CB_STRING && m->text.n == 0) abort(); /* raw text is never empty */
        }
        if (kn_cb_convert(s, &members, &count) == 0) {
            if (count != n) abort();
            for (i = 0; i < n; i++) {
                const kn_cb_member *m = &members[i];
                double want;
                if (m->type != KN_CB_NUMBER) continue;
                want = reference(m->text);
                if (m->number != want && !(m->number != m->number && want != want)) abort();
                if (m->is_integer && (double)m->integer != want) abort();
                if (m->name_slot < -256 || m->name_slot > 256) abort();
            }
        }
        if (kn_cb_canonical(s, &canon, &given) == 0) {
            if (kn_cb_digest(canon.p, canon.n, "k", 1, hex) != 0 || strlen(hex) != 32) abort();
        }
    } else if (why[0] == '\0') {
        abort();
    }
    /* the whole check agrees with the scan's verdict */
    why[0] = '\0';
    index = -1;
    {
        int v = kn_cb_check(s, (const char *)data, size, &secret, 1, hex, &index, why, sizeof why);
        if (verdict != KN_CB_OK ? v != verdict : (v != KN_CB_OK && v != KN_CB_NO_SIGN && v != KN_CB_BAD_SIGN)) abort();
        if ((v == KN_CB_OK) != (index == 1) || (v != KN_CB_OK && why[0] == '\0')) abort();
    }
    kn_cb_scanner_free(s);
    return 0;
}
