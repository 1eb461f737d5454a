/* Scanner for callback bodies (DESIGN §7): a strict JSON object whose
 * top-level members are reported with their raw text, so that a number
 * signs as written (3.6590 stays 3.6590) and a nested object as its bytes.
 * One trailing comma before '}' or ']' is tolerated, as the platform sends
 * it; duplicate top-level keys are refused. */
#ifndef KINOT_CBSCAN_H
#define KINOT_CBSCAN_H
#include <stddef.h>
#include "sign.h" /* kn_str */

typedef enum kn_cb_type {
    KN_CB_STRING, KN_CB_NUMBER, KN_CB_TRUE, KN_CB_FALSE, KN_CB_NULL, KN_CB_OBJECT, KN_CB_ARRAY
} kn_cb_type;

typedef struct kn_cb_member {
    kn_str key;  /* decoded UTF-8 */
    kn_str text; /* strings: decoded UTF-8; everything else: raw text */
    kn_cb_type type;
} kn_cb_member;

typedef struct kn_cb_scanner kn_cb_scanner;

kn_cb_scanner *kn_cb_scanner_new(void);
void kn_cb_scanner_free(kn_cb_scanner *s);

/* Scans body. Returns 0, or -1 with a reason in why ("duplicate key
 * \"locked\"", "body is not a JSON object", ...). The members stay valid
 * until the next scan or the scanner is freed; they come in body order. */
int kn_cb_scan(kn_cb_scanner *s, const char *body, size_t n, char *why, size_t whylen);
size_t kn_cb_count(const kn_cb_scanner *s);
const kn_cb_member *kn_cb_member_at(const kn_cb_scanner *s, size_t i);

/* After a successful scan: the canonical string (members but "sign", null
 * and "" skipped, sorted byte-wise by key, key=value joined by '&'), and the
 * sign member's text (p == NULL when there is none). */
int kn_cb_canonical(kn_cb_scanner *s, kn_str *canon, kn_str *given);

/* upper-case hex MD5 of canon + "&key=" + secret into hex[33] */
int kn_cb_digest(const char *canon, size_t cn, const char *secret, size_t sn, char hex[33]);

#endif
