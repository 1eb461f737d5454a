/* MD5 through the low-level API: deprecated in OpenSSL 3 but shipped, and
 * free of the per-call provider fetch and allocation of EVP_Digest, which
 * costs more than hashing a callback body. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <string.h>
#include <openssl/md5.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include "digest.h"

size_t kn_base64(const unsigned char *src, size_t n, char *dst) {
    /* EVP_EncodeBlock takes an int length; our inputs are digests and bodies
     * far below INT_MAX, but stay correct past it by encoding in chunks of
     * whole 3-byte groups. */
    size_t out = 0;
    const size_t chunk = 3u * 1024u * 1024u;
    while (n > chunk) {
        out += (size_t)EVP_EncodeBlock((unsigned char *)dst + out, src, (int)chunk);
        src += chunk;
        n -= chunk;
    }
    out += (size_t)EVP_EncodeBlock((unsigned char *)dst + out, src, (int)n);
    return out;
}

int kn_md5(const void *data, size_t n, unsigned char out[16]) {
    MD5_CTX c;
    if (MD5_Init(&c) != 1 || MD5_Update(&c, data, n) != 1 || MD5_Final(out, &c) != 1) return -1;
    return 0;
}

int kn_content_md5(const void *body, size_t n, char out[25]) {
    unsigned char d[16];
    if (kn_md5(body, n, d)) return -1;
    kn_base64(d, 16, out);
    return 0;
}

void kn_hex_upper(const unsigned char *src, size_t n, char *out) {
    static const char hex[] = "0123456789ABCDEF";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = hex[src[i] >> 4];
        out[2 * i + 1] = hex[src[i] & 15];
    }
    out[2 * n] = '\0';
}

size_t kn_digest(const char *alg, const void *key, size_t keylen, const void *data, size_t n, unsigned char out[32]) {
    const EVP_MD *md = strcmp(alg, "md5") == 0 ? EVP_md5()
                     : strcmp(alg, "sha1") == 0 ? EVP_sha1()
                     : strcmp(alg, "sha256") == 0 ? EVP_sha256() : NULL;
    unsigned len = 0;
    if (!md || EVP_MD_size(md) > 32) return 0;
    if (!key) return EVP_Digest(data, n, out, &len, md, NULL) == 1 ? len : 0;
    if (keylen > INT_MAX) return 0;
    /* HMAC() takes a NULL key as "reuse the last one": an empty key is "" */
    return HMAC(md, keylen ? key : "", (int)keylen, data, n, out, &len) ? len : 0;
}

int kn_uuid4(char out[37]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char r[16];
    int i, o = 0;
    if (RAND_bytes(r, sizeof r) != 1) return -1;
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* version 4 */
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[r[i] >> 4];
        out[o++] = hex[r[i] & 15];
    }
    out[o] = '\0';
    return 0;
}

int kn_ct_equal(const void *a, size_t alen, const void *b, size_t blen) {
    if (alen != blen) return 0;
    return CRYPTO_memcmp(a, b, alen) == 0;
}
