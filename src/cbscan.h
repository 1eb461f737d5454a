/* Scanner for callback bodies (docs/callback-sign.md): a strict JSON object whose
 * top-level members are reported with their raw text, so that a number
 * signs as written (3.6590 stays 3.6590) and a nested object as its bytes.
 * One trailing comma before '}' or ']' is tolerated, as the platform sends
 * it; duplicate top-level keys are refused. */
#ifndef KINOT_CBSCAN_H
#define KINOT_CBSCAN_H
#include <stddef.h>
#include "kn_types.h"

typedef enum kn_cb_type {
    KN_CB_STRING, KN_CB_NUMBER, KN_CB_TRUE, KN_CB_FALSE, KN_CB_NULL, KN_CB_OBJECT, KN_CB_ARRAY
} kn_cb_type;

/* Why a body is refused (kn_cb_scan, kn_cb_check); 0 is success */
typedef enum kn_cb_verdict {
    KN_CB_OK, KN_CB_NOT_JSON, KN_CB_NOT_OBJECT, KN_CB_DUPLICATE_KEY, KN_CB_NO_SIGN, KN_CB_BAD_SIGN, KN_CB_NOMEM
} kn_cb_verdict;

/* Also declared by lua/kinot/native.lua (FFI), token for token
 * (spec/native_spec.lua); its layout is checked at load (ffi_layout.c) */
typedef struct kn_cb_member {
    kn_str key;  /* decoded UTF-8 */
    kn_str text; /* strings: decoded UTF-8; everything else: raw text */
    int type;    /* kn_cb_type */
    int is_integer; /* a number without fraction or exponent, at most 18 digits */
    /* filled by kn_cb_convert: */
    double number;     /* a number's value, correctly rounded */
    long long integer; /* an is_integer number's value, exactly */
    int name_slot;     /* see kn_cb_convert */
} kn_cb_member;

typedef struct kn_cb_scanner kn_cb_scanner;

kn_cb_scanner *kn_cb_scanner_new(void);
void kn_cb_scanner_free(kn_cb_scanner *s);

/* Scans body. Returns KN_CB_OK, or KN_CB_NOT_JSON / KN_CB_NOT_OBJECT /
 * KN_CB_DUPLICATE_KEY / KN_CB_NOMEM with a reason in why ("duplicate key
 * \"locked\"", ...).  The scanner works on its own copy of body: nothing
 * it holds points into the caller's memory, which may go as soon as this
 * returns.  The members stay valid until the next scan or the scanner is
 * freed; they come in body order.  A scanner is one caller's at a time:
 * a binding takes one for the length of a call and never keeps members
 * across a yield (see lua_callback.c and lua/kinot/callback/scanner.lua). */
int kn_cb_scan(kn_cb_scanner *s, const char *body, size_t n, char *why, size_t whylen);
size_t kn_cb_count(const kn_cb_scanner *s);
const kn_cb_member *kn_cb_member_at(const kn_cb_scanner *s, size_t i);

/* After a successful scan: the canonical string (members but "sign", null
 * and "" skipped, sorted byte-wise by key, key=value joined by '&'), and the
 * sign member's text (p == NULL when there is none). */
int kn_cb_canonical(kn_cb_scanner *s, kn_str *canon, kn_str *given);

/* Whether a member is signed: not "sign", not null, not "" (the members
 * kn_cb_canonical joins, and the only ones a binding puts in an event). */
int kn_cb_is_signed(const kn_cb_member *m);

/* After kn_cb_convert: whether a member is a whole number strictly within
 * +-2^53 (exact in a double, and no other text rounds to it: so the same
 * on every runtime; what a field the reference types int must hold), and
 * its value in *out. */
int kn_cb_whole(const kn_cb_member *m, long long *out);

/* upper-case hex MD5 of canon + "&key=" + secret into hex[33] */
int kn_cb_digest(const char *canon, size_t cn, const char *secret, size_t sn, char hex[33]);

/* The whole verification: scan, canonical string, the MD5 for every secret
 * (all of them: the time tells nothing of which matched), constant-time
 * comparison, either hex case.  KN_CB_OK with *index (1-based) and the
 * matching sign in hex; else a verdict and its reason in why.  The members
 * stay in the scanner, as after kn_cb_scan. */
int kn_cb_check(kn_cb_scanner *s, const char *body, size_t n, const kn_str *secrets, size_t nsecrets,
                char hex[33], int *index, char *why, size_t whylen);

/* After a successful scan: each member's number/integer, and its
 * name_slot, for a binding that keeps one string per member name (a
 * callback repeats the same few dozen): > 0, the name is the one last seen
 * in that slot; < 0, a new name now in slot -name_slot; 0, not kept (empty
 * or 32 bytes and over).  Slots are 1..256.  A binding that failed half
 * way may hold a wrong string for a slot: it should check a name it takes
 * from a slot.  0 with the members (body order), or -1 when out of memory
 * (a number lexeme over 63 bytes), before any slot changed. */
int kn_cb_convert(kn_cb_scanner *s, const kn_cb_member **members, size_t *count);

#endif
