/* Baseline for bench/sign.lua: raw OpenSSL HMAC-SHA256 + base64 over the
 * same string-to-sign, keyed once, as tight a loop as C allows.
 * usage: hmac_baseline FILE SECONDS -> prints "<signatures per second>" */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    char sts[4096], digest[] = "SHA256";
    unsigned char mac[64], b64[128];
    size_t n, maclen;
    double secs, t0, t;
    long iters = 0;
    FILE *f;
    EVP_MAC *m;
    EVP_MAC_CTX *ctx;
    OSSL_PARAM params[2];
    volatile unsigned char sink = 0;

    if (argc < 3) return 2;
    f = fopen(argv[1], "rb");
    if (!f) return 2;
    n = fread(sts, 1, sizeof sts, f);
    fclose(f);
    secs = atof(argv[2]);
    m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    if (!ctx) return 1;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(ctx, (const unsigned char *)"3f2a9c1e7b6d4e58a0c2b7d9e1f4a6c8", 32, params) != 1) return 1;
    t0 = now();
    do {
        int i;
        for (i = 0; i < 10000; i++) {
            EVP_MAC_init(ctx, NULL, 0, NULL);
            EVP_MAC_update(ctx, (const unsigned char *)sts, n);
            EVP_MAC_final(ctx, mac, &maclen, sizeof mac);
            EVP_EncodeBlock(b64, mac, (int)maclen);
            sink ^= b64[0];
        }
        iters += 10000;
        t = now();
    } while (t - t0 < secs);
    printf("%.0f\n", (double)iters / (t - t0));
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return sink == 255 ? 0 : 0;
}
