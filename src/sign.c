#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include "sign.h"
#include "digest.h"

/* A query or form parameter while the Url is being built. */
typedef struct param {
    kn_str name, value;
    unsigned rank;  /* 0 form, 1 query: form wins for the same name */
    size_t order;   /* position within its list: the first value wins */
} param;

struct kn_signer {
    EVP_MAC_CTX *ctx[2];   /* keyed HMAC-SHA256, HMAC-SHA1 (made on first use) */
    unsigned char *key;
    size_t keylen;
    kn_buf sts;            /* string-to-sign */
    size_t *signed_idx;    /* headers in signing order */
    size_t nsigned, signed_cap;
    param *params;
    size_t params_cap;
    char sig[64];
    size_t sig_len;
    char err[200];
};

kn_signer *kn_signer_new(const void *secret, size_t n) {
    kn_signer *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->key = malloc(n ? n : 1);
    if (!s->key) {
        free(s);
        return NULL;
    }
    if (n) memcpy(s->key, secret, n);
    s->keylen = n;
    kn_buf_init(&s->sts);
    return s;
}

void kn_signer_free(kn_signer *s) {
    if (!s) return;
    EVP_MAC_CTX_free(s->ctx[0]);
    EVP_MAC_CTX_free(s->ctx[1]);
    if (s->key) OPENSSL_cleanse(s->key, s->keylen);
    free(s->key);
    kn_buf_free(&s->sts);
    free(s->signed_idx);
    free(s->params);
    free(s);
}

static EVP_MAC_CTX *keyed_ctx(kn_signer *s, enum kn_hmac alg) {
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx;
    OSSL_PARAM params[2];
    char digest[8];

    if (s->ctx[alg]) return s->ctx[alg];
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac) return NULL;
    ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context keeps its own reference */
    if (!ctx) return NULL;
    strcpy(digest, alg == KN_HMAC_SHA1 ? "SHA1" : "SHA256");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    /* HMAC wants a key buffer even when it is empty */
    if (EVP_MAC_init(ctx, s->keylen ? s->key : (const unsigned char *)"", s->keylen, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    s->ctx[alg] = ctx;
    return ctx;
}

static int ieq(kn_str a, const char *lit) {
    size_t i, n = strlen(lit);
    if (a.n != n) return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a.p[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (c != (unsigned char)lit[i]) return 0;
    }
    return 1;
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

int kn_check_header(kn_str name, kn_str value, char *err, size_t errlen) {
    size_t i;
    if (name.n == 0) {
        snprintf(err, errlen, "a header name is empty");
        return -1;
    }
    for (i = 0; i < name.n; i++) {
        unsigned char c = (unsigned char)name.p[i];
        /* RFC 9110 token characters only */
        if (c <= 32 || c >= 127 || strchr("\"(),/:;<=>?@[\\]{}", c)) {
            snprintf(err, errlen, "header name '%.*s' contains a character not allowed in a header name",
                     (int)(name.n > 60 ? 60 : name.n), name.p);
            /* never echo control bytes back */
            for (i = 0; err[i]; i++)
                if ((unsigned char)err[i] < 32 || (unsigned char)err[i] == 127) err[i] = '?';
            return -1;
        }
    }
    for (i = 0; i < value.n; i++) {
        char c = value.p[i];
        if (c == '\r' || c == '\n' || c == '\0') {
            snprintf(err, errlen, "header '%.*s' value contains %s", (int)(name.n > 60 ? 60 : name.n), name.p,
                     c == '\0' ? "a NUL byte" : "CR or LF");
            return -1;
        }
    }
    return 0;
}

static int is_excluded(kn_str name) {
    return ieq(name, "x-ca-signature") || ieq(name, "x-ca-signature-headers") || ieq(name, "accept") ||
           ieq(name, "content-md5") || ieq(name, "content-type") || ieq(name, "date");
}

static int wants_signing(const kn_sign_req *req, kn_str name) {
    size_t i;
    if (is_excluded(name)) return 0;
    if (name.n >= 5 && ieq((kn_str){name.p, 5}, "x-ca-")) return 1;
    for (i = 0; i < req->nsign; i++)
        if (ieq_str(name, req->sign_headers[i])) return 1;
    return 0;
}

static kn_str header_value(const kn_sign_req *req, const char *name) {
    size_t i;
    for (i = 0; i < req->nheaders; i++)
        if (ieq(req->headers[i].name, name)) return req->headers[i].value;
    return (kn_str){"", 0};
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
    return -1;
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
    if (k > 1) qsort(s->params, k, sizeof *s->params, param_cmp);
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
    static const char *const fixed[] = {"accept", "content-md5", "content-type", "date"};
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t i, maclen = 0;
    EVP_MAC_CTX *ctx;

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
    for (i = 0; i < req->nheaders; i++) {
        if (kn_check_header(req->headers[i].name, req->headers[i].value, s->err, sizeof s->err)) return -1;
        if (wants_signing(req, req->headers[i].name)) s->signed_idx[s->nsigned++] = i;
    }
    sort_signed(s, req);

    if (add_str(&s->sts, req->method) || kn_buf_addc(&s->sts, '\n')) return oom(s);
    for (i = 0; i < 4; i++)
        if (add_str(&s->sts, header_value(req, fixed[i])) || kn_buf_addc(&s->sts, '\n')) return oom(s);
    for (i = 0; i < s->nsigned; i++) {
        const kn_kv *h = &req->headers[s->signed_idx[i]];
        if (add_str(&s->sts, h->name) || kn_buf_addc(&s->sts, ':') || add_str(&s->sts, h->value) ||
            kn_buf_addc(&s->sts, '\n'))
            return oom(s);
    }
    if (build_url(s, req)) return -1;

    ctx = keyed_ctx(s, alg);
    if (!ctx || EVP_MAC_init(ctx, NULL, 0, NULL) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)s->sts.p, s->sts.len) != 1 ||
        EVP_MAC_final(ctx, mac, &maclen, sizeof mac) != 1) {
        snprintf(s->err, sizeof s->err, "OpenSSL HMAC failed");
        return -1;
    }
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
