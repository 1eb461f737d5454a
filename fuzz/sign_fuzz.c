/* libFuzzer target: the request signer.  The input is split on NUL bytes
 * into method, path, then header name/value pairs, then query pairs; every
 * combination must either sign or be refused with a message, never crash,
 * and a signed string must start with the method line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../src/sign.h"

#define MAXF 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_str f[MAXF];
    size_t nf = 0, i, start = 0, nh, nq;
    kn_kv headers[MAXF / 2], query[MAXF / 2];
    kn_str sign_names[2];
    kn_sign_req req;
    kn_signer *s;
    for (i = 0; i <= size && nf < MAXF; i++) {
        if (i == size || data[i] == 0) {
            f[nf].p = (const char *)data + start;
            f[nf].n = i - start;
            nf++;
            start = i + 1;
        }
    }
    if (nf < 2) return 0;
    memset(&req, 0, sizeof req);
    req.method = f[0];
    req.path = f[1];
    nh = (nf - 2) / 2;
    if (nh > 6) nh = 6;
    for (i = 0; i < nh; i++) headers[i] = (kn_kv){f[2 + 2 * i], f[3 + 2 * i]};
    nq = 0;
    for (i = 2 + 2 * nh; i + 1 < nf && nq < MAXF / 2; i += 2) query[nq++] = (kn_kv){f[i], f[i + 1]};
    sign_names[0] = nh ? headers[0].name : (kn_str){"x-extra", 7};
    sign_names[1] = (kn_str){"Date", 4};
    req.headers = headers;
    req.nheaders = nh;
    req.query = query;
    req.nquery = nq / 2;
    req.form = query + nq / 2;
    req.nform = nq - nq / 2;
    req.sign_headers = sign_names;
    req.nsign = 2;
    s = kn_signer_new(data, size < 80 ? size : 80);
    if (!s) return 0;
    if (kn_sign(s, &req, (size & 1) ? KN_HMAC_SHA1 : KN_HMAC_SHA256) == 0) {
        size_t len, count;
        const char *sts = kn_signer_string(s, &len);
        const size_t *idx = kn_signer_signed(s, &count);
        if (len < req.method.n + 1 || memcmp(sts, req.method.p, req.method.n) != 0) abort();
        for (i = 0; i < count; i++)
            if (idx[i] >= nh) abort();
        (void)kn_signer_signature(s, &len);
        if (len != 28 && len != 44) abort();
    } else if (kn_signer_error(s)[0] == '\0') {
        abort(); /* a refusal always says why */
    }
    kn_signer_free(s);
    return 0;
}
