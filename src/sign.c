#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* The low-level digest API is deprecated in OpenSSL 3 yet still shipped and
 * assembly-backed.  It is used on purpose: OpenSSL 3's EVP HMAC allocates a
 * provider context on every re-init, which costs more than hashing a
 * string-to-sign; precomputed inner/outer states copied by value do not. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include "buf.h"
#include "sign.h"
#include "digest.h"

/* A query or form parameter while the Url is being built. */
typedef struct param {
    kn_str name, value;
    unsigned rank;  /* 0 form, 1 query: form wins for the same name */
    size_t order;   /* position within its list: the first value wins */
} param;

/* HMAC (RFC 2104) with the key absorbed once: the states after hashing
 * key^ipad and key^opad, copied for every signature. */
typedef struct hmac256 {
    SHA256_CTX inner, outer;
} hmac256;

typedef struct hmac1 {
    SHA_CTX inner, outer;
} hmac1;

struct kn_signer {
    hmac256 h256;
    hmac1 h1;
    kn_buf sts;            /* string-to-sign */
    size_t *signed_idx;    /* headers in signing order */
    size_t nsigned, signed_cap;
    param *params;
    size_t params_cap;
    char sig[64];
    size_t sig_len;
    char err[200];
};

/* pads[64] = key (hashed first when longer than the block) XOR pad byte */
static void make_pad(const unsigned char *key, size_t n, int sha1, unsigned char pad, unsigned char out[64]) {
    unsigned char k[64];
    size_t i, kl = n;
    memset(k, 0, sizeof k);
    if (n > 64) {
        if (sha1) SHA1(key, n, k), kl = 20;
        else SHA256(key, n, k), kl = 32;
    } else if (n) {
        memcpy(k, key, n);
    }
    (void)kl;
    for (i = 0; i < 64; i++) out[i] = (unsigned char)(k[i] ^ pad);
    OPENSSL_cleanse(k, sizeof k);
}

kn_signer *kn_signer_new(const void *secret, size_t n) {
    unsigned char ipad[64], opad[64];
    kn_signer *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    make_pad(secret, n, 0, 0x36, ipad);
    make_pad(secret, n, 0, 0x5c, opad);
    SHA256_Init(&s->h256.inner);
    SHA256_Update(&s->h256.inner, ipad, 64);
    SHA256_Init(&s->h256.outer);
    SHA256_Update(&s->h256.outer, opad, 64);
    make_pad(secret, n, 1, 0x36, ipad);
    make_pad(secret, n, 1, 0x5c, opad);
    SHA1_Init(&s->h1.inner);
    SHA1_Update(&s->h1.inner, ipad, 64);
    SHA1_Init(&s->h1.outer);
    SHA1_Update(&s->h1.outer, opad, 64);
    OPENSSL_cleanse(ipad, sizeof ipad);
    OPENSSL_cleanse(opad, sizeof opad);
    kn_buf_init(&s->sts);
    return s;
}

void kn_signer_free(kn_signer *s) {
    if (!s) return;
    OPENSSL_cleanse(&s->h256, sizeof s->h256);
    OPENSSL_cleanse(&s->h1, sizeof s->h1);
    kn_buf_free(&s->sts);
    free(s->signed_idx);
    free(s->params);
    free(s);
}

/* returns the MAC length */
static size_t hmac(const kn_signer *s, enum kn_hmac alg, const void *data, size_t n, unsigned char *mac) {
    if (alg == KN_HMAC_SHA1) {
        SHA_CTX c = s->h1.inner;
        unsigned char in[20];
        SHA1_Update(&c, data, n);
        SHA1_Final(in, &c);
        c = s->h1.outer;
        SHA1_Update(&c, in, sizeof in);
        SHA1_Final(mac, &c);
        OPENSSL_cleanse(&c, sizeof c);
        return 20;
    } else {
        SHA256_CTX c = s->h256.inner;
        unsigned char in[32];
        SHA256_Update(&c, data, n);
        SHA256_Final(in, &c);
        c = s->h256.outer;
        SHA256_Update(&c, in, sizeof in);
        SHA256_Final(mac, &c);
        OPENSSL_cleanse(&c, sizeof c);
        return 32;
    }
}

/* a.n must already equal strlen(lit) or be shorter/longer: checked here */
static int ieq(kn_str a, const char *lit) {
    size_t i;
    for (i = 0; i < a.n; i++) {
        if (!lit[i]) return 0;
        unsigned char c = (unsigned char)a.p[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (c != (unsigned char)lit[i]) return 0;
    }
    return lit[a.n] == '\0';
}

static int ieq_str(kn_str a, kn_str b) {
    size_t i;
    if (a.n != b.n) return 0;
    for (i = 0; i < a.n; i++) {
        unsigned char x = (unsigned char)a.p[i], y = (unsigned char)b.p[i];
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y + 32);
        if (x != y) return 0;
    }
    return 1;
}

static int bytecmp(kn_str a, kn_str b) {
    size_t n = a.n < b.n ? a.n : b.n;
    int c = n ? memcmp(a.p, b.p, n) : 0;
    if (c) return c;
    return a.n < b.n ? -1 : a.n > b.n;
}

/* RFC 9110 token characters */
static const unsigned char TOKEN[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,
    ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1,
    ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1,
    ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1,
    ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
    ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

int kn_check_header(kn_str name, kn_str value, char *err, size_t errlen) {
    size_t i;
    if (name.n == 0) {
        snprintf(err, errlen, "a header name is empty");
        return -1;
    }
    for (i = 0; i < name.n; i++) {
        unsigned char c = (unsigned char)name.p[i];
        if (!TOKEN[c]) {
            snprintf(err, errlen, "header name '%.*s' contains a character not allowed in a header name",
                     (int)(name.n > 60 ? 60 : name.n), name.p);
            /* never echo control bytes back */
            for (i = 0; err[i]; i++)
                if ((unsigned char)err[i] < 32 || (unsigned char)err[i] == 127) err[i] = '?';
            return -1;
        }
    }
    /* eight bytes at a time: only bytes <= '\r' can be CR, LF or NUL */
    i = 0;
    while (i + 8 <= value.n) {
        uint64_t w;
        memcpy(&w, value.p + i, 8);
        /* high bit of a byte set where that byte is < 0x0e */
        if (((w - 0x0e0e0e0e0e0e0e0eULL) & ~w & 0x8080808080808080ULL) != 0) break;
        i += 8;
    }
    for (; i < value.n; i++) {
        char c = value.p[i];
        if ((unsigned char)c > '\r') continue;
        if (c == '\r' || c == '\n' || c == '\0') {
            snprintf(err, errlen, "header '%.*s' value contains %s", (int)(name.n > 60 ? 60 : name.n), name.p,
                     c == '\0' ? "a NUL byte" : "CR or LF");
            return -1;
        }
    }
    return 0;
}

/* What a header is to the string-to-sign, judged by length first (no
 * strlen, no case folding for most names). */
enum hclass { H_OTHER = -1, H_ACCEPT = 0, H_MD5 = 1, H_TYPE = 2, H_DATE = 3, H_SKIP = 4, H_SIGNED = 5 };

static enum hclass classify(const kn_sign_req *req, kn_str name) {
    size_t i;
    switch (name.n) {
    case 4: if (ieq(name, "date")) return H_DATE; break;
    case 6: if (ieq(name, "accept")) return H_ACCEPT; break;
    case 11: if (ieq(name, "content-md5")) return H_MD5; break;
    case 12: if (ieq(name, "content-type")) return H_TYPE; break;
    case 14: if (ieq(name, "x-ca-signature")) return H_SKIP; break;
    case 22: if (ieq(name, "x-ca-signature-headers")) return H_SKIP; break;
    default: break;
    }
    if (name.n >= 5 && ieq((kn_str){name.p, 5}, "x-ca-")) return H_SIGNED;
    for (i = 0; i < req->nsign; i++)
        if (ieq_str(name, req->sign_headers[i])) return H_SIGNED;
    return H_OTHER;
}

static int param_cmp(const void *pa, const void *pb) {
    const param *a = pa, *b = pb;
    int c = bytecmp(a->name, b->name);
    if (c) return c;
    if (a->rank != b->rank) return a->rank < b->rank ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* Signed headers are few (four to eight): insertion sort beats qsort here. */
static void sort_signed(kn_signer *s, const kn_sign_req *req) {
    size_t i, j;
    for (i = 1; i < s->nsigned; i++) {
        size_t v = s->signed_idx[i];
        for (j = i; j > 0 && bytecmp(req->headers[s->signed_idx[j - 1]].name, req->headers[v].name) > 0; j--)
            s->signed_idx[j] = s->signed_idx[j - 1];
        s->signed_idx[j] = v;
    }
}

static int oom(kn_signer *s) {
    snprintf(s->err, sizeof s->err, "out of memory while signing");
    return KN_SIGN_NOMEM;
}

static int add_str(kn_buf *b, kn_str v) { return kn_buf_add(b, v.p, v.n); }

static int build_url(kn_signer *s, const kn_sign_req *req) {
    size_t n = req->nquery + req->nform, i, k = 0, out = 0;
    if (add_str(&s->sts, req->path)) return oom(s);
    if (n == 0) return 0;
    if (n > s->params_cap) {
        param *np = realloc(s->params, n * sizeof *np);
        if (!np) return oom(s);
        s->params = np;
        s->params_cap = n;
    }
    for (i = 0; i < req->nform; i++)
        s->params[k++] = (param){req->form[i].name, req->form[i].value, 0, i};
    for (i = 0; i < req->nquery; i++)
        s->params[k++] = (param){req->query[i].name, req->query[i].value, 1, i};
    if (k > 16) {
        qsort(s->params, k, sizeof *s->params, param_cmp);
    } else { /* the usual two or three parameters: no qsort call */
        size_t a, b;
        for (a = 1; a < k; a++) {
            param v = s->params[a];
            for (b = a; b > 0 && param_cmp(&s->params[b - 1], &v) > 0; b--) s->params[b] = s->params[b - 1];
            s->params[b] = v;
        }
    }
    for (i = 0; i < k; i++) {
        const param *p = &s->params[i];
        if (p->name.n == 0) continue;
        if (i > 0 && bytecmp(p->name, s->params[i - 1].name) == 0) continue;
        if (kn_buf_addc(&s->sts, out++ ? '&' : '?') || add_str(&s->sts, p->name)) return oom(s);
        if (p->value.n && (kn_buf_addc(&s->sts, '=') || add_str(&s->sts, p->value))) return oom(s);
    }
    return 0;
}

static int check_path(kn_signer *s, const kn_sign_req *req) {
    size_t i;
    if (req->path.n == 0 || req->path.p[0] != '/') {
        snprintf(s->err, sizeof s->err, "path must start with '/'");
        return -1;
    }
    for (i = 0; i < req->path.n; i++) {
        unsigned char c = (unsigned char)req->path.p[i];
        if (c <= 32 || c == 127) {
            snprintf(s->err, sizeof s->err, "path contains %s at byte %zu",
                     c == 0 ? "a NUL byte" : (c == '\r' || c == '\n') ? "CR or LF" : "a space or control byte", i + 1);
            return -1;
        }
    }
    for (i = 0; i < req->method.n; i++) {
        unsigned char c = (unsigned char)req->method.p[i];
        if (c < 'A' || c > 'Z') {
            snprintf(s->err, sizeof s->err, "method must be upper-case letters (GET, POST, ...)");
            return -1;
        }
    }
    if (req->method.n == 0) {
        snprintf(s->err, sizeof s->err, "method is empty");
        return -1;
    }
    return 0;
}

int kn_sign(kn_signer *s, const kn_sign_req *req, enum kn_hmac alg) {
    kn_str fixed[4]; /* Accept, Content-MD5, Content-Type, Date as sent */
    unsigned char mac[32];
    size_t i, maclen, need;

    s->err[0] = '\0';
    kn_buf_reset(&s->sts);
    s->nsigned = 0;
    if (check_path(s, req)) return -1;

    if (req->nheaders > s->signed_cap) {
        size_t *ni = realloc(s->signed_idx, req->nheaders * sizeof *ni);
        if (!ni) return oom(s);
        s->signed_idx = ni;
        s->signed_cap = req->nheaders;
    }
    for (i = 0; i < 4; i++) fixed[i] = (kn_str){"", 0};
    for (i = 0; i < req->nheaders; i++) {
        enum hclass c;
        if (kn_check_header(req->headers[i].name, req->headers[i].value, s->err, sizeof s->err)) return -1;
        c = classify(req, req->headers[i].name);
        if (c == H_SIGNED) s->signed_idx[s->nsigned++] = i;
        else if (c <= H_DATE && c != H_OTHER) fixed[c] = req->headers[i].value;
    }
    sort_signed(s, req);

    /* one reservation up front: the appends below then never reallocate */
    need = req->method.n + req->path.n + 16;
    for (i = 0; i < req->nheaders; i++) need += req->headers[i].name.n + req->headers[i].value.n + 2;
    for (i = 0; i < req->nquery; i++) need += req->query[i].name.n + req->query[i].value.n + 2;
    for (i = 0; i < req->nform; i++) need += req->form[i].name.n + req->form[i].value.n + 2;
    if (kn_buf_reserve(&s->sts, need)) return oom(s);

    if (add_str(&s->sts, req->method) || kn_buf_addc(&s->sts, '\n')) return oom(s);
    for (i = 0; i < 4; i++)
        if (add_str(&s->sts, fixed[i]) || kn_buf_addc(&s->sts, '\n')) return oom(s);
    for (i = 0; i < s->nsigned; i++) {
        const kn_kv *h = &req->headers[s->signed_idx[i]];
        if (add_str(&s->sts, h->name) || kn_buf_addc(&s->sts, ':') || add_str(&s->sts, h->value) ||
            kn_buf_addc(&s->sts, '\n'))
            return oom(s);
    }
    if (build_url(s, req)) return KN_SIGN_NOMEM; /* its only failure */

    maclen = hmac(s, alg, s->sts.p, s->sts.len, mac);
    s->sig_len = kn_base64(mac, maclen, s->sig);
    return 0;
}

const char *kn_signer_string(const kn_signer *s, size_t *len) {
    *len = s->sts.len;
    return s->sts.p ? s->sts.p : "";
}

const char *kn_signer_signature(const kn_signer *s, size_t *len) {
    *len = s->sig_len;
    return s->sig;
}

const size_t *kn_signer_signed(const kn_signer *s, size_t *count) {
    *count = s->nsigned;
    return s->signed_idx;
}

const char *kn_signer_error(const kn_signer *s) { return s->err; }
