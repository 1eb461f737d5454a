/* Alibaba Cloud API Gateway request signing (docs/signing.md).
 *
 * A kn_signer holds an HMAC key already absorbed into OpenSSL contexts, plus
 * the scratch space one signature needs, so signing a request allocates
 * nothing once warm. One signer per client; not shared between threads. */
#ifndef KINOT_SIGN_H
#define KINOT_SIGN_H
#include <stddef.h>
#include "kn_types.h"

typedef struct kn_sign_req {
    kn_str method, path;
    const kn_kv *headers;      /* every header that will be sent, names as sent */
    size_t nheaders;
    const kn_str *sign_headers; /* extra names to sign besides X-Ca-* */
    size_t nsign;
    const kn_kv *query;        /* raw values, in order */
    size_t nquery;
    const kn_kv *form;         /* raw values, in order; wins over query */
    size_t nform;
} kn_sign_req;

enum kn_hmac { KN_HMAC_SHA256 = 0, KN_HMAC_SHA1 = 1 };

typedef struct kn_signer kn_signer;

/* NULL when memory or OpenSSL failed */
kn_signer *kn_signer_new(const void *secret, size_t n);
void kn_signer_free(kn_signer *s);

/* Builds the string-to-sign and the signature.  Returns 0, or -1 (the
 * request is wrong: a bad header, path or method) or KN_SIGN_NOMEM, with
 * kn_signer_error() naming the problem. */
#define KN_SIGN_NOMEM (-2)
int kn_sign(kn_signer *s, const kn_sign_req *req, enum kn_hmac alg);

/* Results of the last successful kn_sign, valid until the next call. */
const char *kn_signer_string(const kn_signer *s, size_t *len);
const char *kn_signer_signature(const kn_signer *s, size_t *len);
/* indices into req->headers, in string-to-sign order */
const size_t *kn_signer_signed(const kn_signer *s, size_t *count);
const char *kn_signer_error(const kn_signer *s);

/* Validation shared with the HTTP layer: 0 when acceptable, else -1 and a
 * message in err (size errlen) that names the header but never its value. */
int kn_check_header(kn_str name, kn_str value, char *err, size_t errlen);

#endif
