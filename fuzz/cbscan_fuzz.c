/* libFuzzer target: the callback body scanner.  Any bytes must scan or be
 * refused with a reason; an accepted body gives a canonical string made of
 * its signed members (kn_cb_is_signed) and nothing else, numbers that
 * convert exactly as strtod reads them, int values (kn_cb_whole) that are
 * those numbers exactly, and the same verdict from kn_cb_check.  The input
 * is scanned from a copy that is freed before any member is read: the
 * scanner must hold nothing that points into its caller's memory (under
 * ASan, a member that does is a heap-use-after-free). */
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

/* the body in memory of its own, gone as soon as the scan returns */
static int scan_copy(kn_cb_scanner *s, const uint8_t *data, size_t size, char *why, size_t whylen) {
    char *copy = malloc(size ? size : 1);
    int verdict;
    if (!copy) abort();
    if (size) memcpy(copy, data, size);
    verdict = kn_cb_scan(s, copy, size, why, whylen);
    memset(copy, '#', size);
    free(copy);
    return verdict;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_cb_scanner *s = kn_cb_scanner_new();
    char why[200], hex[33];
    kn_str canon, given, secret = {"k", 1};
    const kn_cb_member *members;
    int verdict, index;
    if (!s) return 0;
    why[0] = '\0';
    verdict = scan_copy(s, data, size, why, sizeof why);
    if (verdict == KN_CB_OK) {
        size_t i, n = kn_cb_count(s), count, nsigned = 0, pairs = 0;
        for (i = 0; i < n; i++) {
            const kn_cb_member *m = kn_cb_member_at(s, i);
            if (m->type != KN_CB_STRING && m->text.n == 0) abort(); /* raw text is never empty */
            if (m->key.n && !m->key.p) abort();
            nsigned += kn_cb_is_signed(m) != 0;
        }
        if (kn_cb_convert(s, &members, &count) == 0) {
            if (count != n) abort();
            for (i = 0; i < n; i++) {
                const kn_cb_member *m = &members[i];
                double want;
                long long whole;
                if (m->name_slot < -256 || m->name_slot > 256) abort();
                if (m->type != KN_CB_NUMBER) {
                    if (kn_cb_whole(m, &whole)) abort(); /* only numbers are ints */
                    continue;
                }
                want = reference(m->text);
                if (m->number != want && !(m->number != m->number && want != want)) abort();
                if (m->is_integer && (double)m->integer != want) abort();
                if (kn_cb_whole(m, &whole)) {
                    if ((double)whole != want || whole > 9007199254740992LL || whole < -9007199254740992LL) abort();
                } else if (want >= -9007199254740992.0 && want <= 9007199254740992.0 &&
                           want == (double)(long long)want && !m->is_integer) {
                    abort(); /* a whole number in range refused */
                }
            }
        }
        if (kn_cb_canonical(s, &canon, &given) == 0) {
            size_t j;
            if (kn_cb_digest(canon.p, canon.n, "k", 1, hex) != 0 || strlen(hex) != 32) abort();
            /* one key=value per signed member: count the pairs by their keys' order */
            for (i = 0; i < n; i++) {
                const kn_cb_member *m = kn_cb_member_at(s, i);
                if (!kn_cb_is_signed(m)) continue;
                /* each signed member's "key=" appears in the canonical string */
                for (j = 0; j + m->key.n + 1 <= canon.n; j++)
                    if ((j == 0 || canon.p[j - 1] == '&') && memcmp(canon.p + j, m->key.p, m->key.n) == 0 &&
                        canon.p[j + m->key.n] == '=')
                        break;
                if (j + m->key.n + 1 > canon.n) abort();
                pairs++;
            }
            if (pairs != nsigned || (nsigned == 0 && canon.n != 0)) abort();
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
