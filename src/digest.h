/* One-shot digests and encodings over OpenSSL: MD5, base64, hex, nonces,
 * constant-time comparison. Stateless, so safe from any thread. */
#ifndef KINOT_DIGEST_H
#define KINOT_DIGEST_H
#include <stddef.h>

/* base64 of src into dst (needs 4*((n+2)/3)+1 bytes); returns the length */
size_t kn_base64(const unsigned char *src, size_t n, char *dst);
/* MD5 of data into out[16]; 0 on success */
int kn_md5(const void *data, size_t n, unsigned char out[16]);
/* base64(MD5(body)) into out[25]; 0 on success */
int kn_content_md5(const void *body, size_t n, char out[25]);
/* upper-case hex of n bytes into out (2n+1 bytes) */
void kn_hex_upper(const unsigned char *src, size_t n, char *out);
/* MD5, SHA-1 or SHA-256 of data (alg "md5", "sha1", "sha256"); with a key
 * (key != NULL) the HMAC of data under it.  out gets up to 32 bytes;
 * returns the digest's length, or 0 for an unknown alg or a failure. */
size_t kn_digest(const char *alg, const void *key, size_t keylen, const void *data, size_t n, unsigned char out[32]);
/* random UUID (version 4 form) from OpenSSL's CSPRNG into out[37]; 0 on success */
int kn_uuid4(char out[37]);
/* 1 when equal; time depends on the lengths only */
int kn_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

#endif
