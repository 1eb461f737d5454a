#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include "http.h"
#include "sign.h" /* kn_check_header */
#include "interrupt.h"

struct kn_http {
    CURLSH *share;        /* one connection pool, DNS and TLS-session cache */
    CURL *easy;           /* for single requests */
    kn_http_stream *idle; /* the handles of the last stream, for the next */
};

/* one transfer of a stream, and the copy of its request it owns */
typedef struct stream_slot {
    CURL *easy;                  /* made on first use, kept with the stream */
    struct curl_slist *headers;  /* live while the transfer runs */
    kn_http_req req;             /* points into the copies below */
    char *url, *proxy, *ca_file;
    kn_buf body;
    char errbuf[CURL_ERROR_SIZE];
    kn_http_result result;
    int state;                   /* FREE, RUNNING, ENDED (to be handed back) */
} stream_slot;

enum { SLOT_FREE = 0, SLOT_RUNNING, SLOT_ENDED };

struct kn_http_stream {
    kn_http *h;
    CURLM *multi;
    stream_slot *slot;
    size_t cap;     /* slots allocated */
    size_t nslots;  /* slots in use by this stream */
    size_t running;
    int ended;      /* slots ENDED and not yet handed back */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int kn_http_global_init(void) {
    pthread_once(&global_once, global_init);
    return global_rc == CURLE_OK ? 0 : -1;
}

const char *kn_http_version(void) { return curl_version(); }

void kn_http_result_init(kn_http_result *r) {
    memset(r, 0, sizeof *r);
    kn_buf_init(&r->head);
    kn_buf_init(&r->body);
}

void kn_http_result_free(kn_http_result *r) {
    kn_buf_free(&r->head);
    kn_buf_free(&r->body);
}

kn_http *kn_http_new(void) {
    kn_http *h;
    if (kn_http_global_init()) return NULL;
    h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->share = curl_share_init();
    h->easy = curl_easy_init();
    if (!h->share || !h->easy ||
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK ||
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
        kn_http_free(h);
        return NULL;
    }
    return h;
}

void kn_http_free(kn_http *h) {
    if (!h) return;
    /* easy handles go before the share they use */
    if (h->easy) curl_easy_cleanup(h->easy);
    if (h->idle) {
        kn_http_stream *s = h->idle;
        h->idle = NULL;
        s->h = NULL; /* freed, not parked again */
        kn_http_stream_free(s);
    }
    if (h->share) curl_share_cleanup(h->share);
    free(h);
}

/* ------------------------------------------------------------ redaction */

static const char REDACTED[] = "<redacted>";

/* replaces msg[from, to) with "<redacted>", keeping msg NUL-terminated
 * within cap (what does not fit is dropped from the end) */
static size_t splice_redacted(char *msg, size_t cap, size_t from, size_t to) {
    size_t len = strlen(msg), rl = sizeof REDACTED - 1, tail = len - to, room;
    if (from + rl >= cap) { /* not even the marker fits: cut the message there */
        msg[from] = '\0';
        return from;
    }
    room = cap - 1 - (from + rl);
    if (tail > room) tail = room;
    memmove(msg + from + rl, msg + to, tail);
    memcpy(msg + from, REDACTED, rl);
    msg[from + rl + tail] = '\0';
    return from + rl;
}

/* where the userinfo of s starts (after "scheme://", or at 0) and its
 * length up to the LAST '@': a careless '@' or '/' in a password is still
 * inside it, and redacting too much is harmless */
static size_t userinfo_of(const char *s, size_t *off) {
    const char *a = strstr(s, "://"), *at = strrchr(s, '@');
    a = a ? a + 3 : s;
    if (!at || at < a) return 0;
    *off = (size_t)(a - s);
    return (size_t)(at - a);
}

static void redact_known(char *msg, size_t cap, const char *s, size_t off, size_t ulen) {
    size_t i = 0, slen = strlen(s);
    while (msg[i]) {
        size_t L = 0;
        while (L < slen && msg[i + L] && msg[i + L] == s[L]) L++;
        /* the whole userinfo and its '@' (so that a short one such as
         * "a" does not take every "a" with it), or a message cut short
         * inside it */
        if (L > off && (L > off + ulen || (msg[i + L] == '\0' && L - off >= 2))) {
            size_t to = i + (L < off + ulen ? L : off + ulen);
            i = splice_redacted(msg, cap, i + off, to);
        } else {
            i++;
        }
    }
}

void kn_redact_userinfo(char *msg, size_t cap, const char *url) {
    size_t i = 0, off = 0, ulen;
    if (!msg || cap == 0) return;
    if (url && (ulen = userinfo_of(url, &off)) > 0) {
        redact_known(msg, cap, url, off, ulen);
        redact_known(msg, cap, url + off, 0, ulen); /* quoted without its scheme */
    }
    /* any other "scheme://userinfo@" in the text, whoever wrote it */
    while (msg[i]) {
        if (msg[i] == ':' && msg[i + 1] == '/' && msg[i + 2] == '/') {
            size_t a = i + 3, e = a, at = 0;
            while (msg[e] && msg[e] != ' ' && msg[e] != '\'' && msg[e] != '"' && msg[e] != '\n' && msg[e] != '`') {
                if (msg[e] == '@') at = e;
                e++;
            }
            if (at > a && strncmp(msg + a, REDACTED, sizeof REDACTED - 1) != 0) {
                i = splice_redacted(msg, cap, a, at);
                continue;
            }
            i = a;
            continue;
        }
        i++;
    }
}

/* ------------------------------------------------------------ callbacks */

/* libcurl calls this each time it is about to write the request on a
 * connection.  A second time within one perform is its own "retry on a
 * fresh connection" after a reused one died: for a request that is not
 * idempotent the first copy may already have been acted on, so it stops. */
static int on_prereq(void *ud, char *ip, char *local_ip, int port, int local_port) {
    kn_http_result *r = ud;
    (void)ip, (void)local_ip, (void)port, (void)local_port;
    r->prereqs++;
    return r->once && r->prereqs > 1 ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

/* libcurl calls this at least about once a second, and often while bytes
 * move: a Ctrl-C under the CLI's handler (interrupt.h) stops the transfer
 * (curl_easy_perform would otherwise poll again after the signal's EINTR,
 * to the transfer's end or its timeout) */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)ud, (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return kn_interrupted() ? 1 : 0;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
    kn_http_result *r = ud;
    size_t n = size * nmemb;
    if (r->max_body && r->body.len + n > r->max_body) {
        r->too_large = 1;
        return 0; /* abort the transfer */
    }
    return kn_buf_add(&r->body, p, n) ? 0 : n;
}

/* The caps on a response's head, the same as the resty transport's (see
 * lua/kinot/transport/resty.lua for why these figures): a line, the
 * number of header lines, the whole head.  libcurl itself refuses a line
 * over CURL_MAX_HTTP_HEADER (100 KiB) before this callback sees it. */
#define HEAD_LINE_MAX (16 * 1024)
#define HEAD_LINES_MAX 100
#define HEAD_MAX (64 * 1024)

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud) {
    kn_http_result *r = ud;
    size_t n = size * nmemb;
    int end;
    /* a new status line (after 1xx or a proxy CONNECT) starts a new block */
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        kn_buf_reset(&r->head);
        r->head_lines = 0;
        r->head_done = 0;
    }
    end = n > 0 && n <= 2 && (p[0] == '\r' || p[0] == '\n');
    if (n > HEAD_LINE_MAX)
        r->head_limit = "a header line longer than 16384 bytes";
    else if (!end && ++r->head_lines > HEAD_LINES_MAX + 1) /* the status line is not a header */
        r->head_limit = "more than 100 header lines";
    else if (r->head.len + n > HEAD_MAX)
        r->head_limit = "a head larger than 65536 bytes";
    if (r->head_limit) {
        r->too_large = 1;
        return 0;
    }
    if (end) r->head_done = 1;
    return kn_buf_add(&r->head, p, n) ? 0 : n;
}

/* Builds libcurl's header list.  Every header is checked first, so a bad
 * one means nothing is sent at all. */
static int make_headers(const kn_http_req *req, struct curl_slist **out, kn_http_result *r) {
    struct curl_slist *list = NULL, *tmp;
    kn_buf line;
    size_t i;
    int has_ct = 0;
    for (i = 0; i < req->nheaders; i++)
        if (kn_check_header(req->headers[i].name, req->headers[i].value, r->msg, sizeof r->msg)) {
            r->kind = KN_HTTP_INVALID;
            return -1;
        }
    kn_buf_init(&line);
    for (i = 0; i <= req->nheaders + 1; i++) {
        kn_buf_reset(&line);
        if (i < req->nheaders) {
            const kn_kv *hv = &req->headers[i];
            if (hv->name.n == 12 && strncasecmp(hv->name.p, "content-type", 12) == 0) has_ct = 1;
            /* "Name;" is libcurl's way to send a header with an empty value */
            if (kn_buf_add(&line, hv->name.p, hv->name.n) ||
                (hv->value.n ? kn_buf_add(&line, ": ", 2) || kn_buf_add(&line, hv->value.p, hv->value.n)
                             : kn_buf_addc(&line, ';')))
                goto nomem;
        } else if (i == req->nheaders) {
            /* no "Expect: 100-continue" round trip on larger bodies */
            if (kn_buf_add(&line, "Expect:", 7)) goto nomem;
        } else {
            if (has_ct) continue;
            /* libcurl would add a form Content-Type the request never signed,
             * to a POST without a body too */
            if (kn_buf_add(&line, "Content-Type:", 13)) goto nomem;
        }
        tmp = curl_slist_append(list, line.p);
        if (!tmp) goto nomem;
        list = tmp;
    }
    kn_buf_free(&line);
    *out = list;
    return 0;
nomem:
    kn_buf_free(&line);
    curl_slist_free_all(list);
    r->kind = KN_HTTP_NOMEM;
    snprintf(r->msg, sizeof r->msg, "out of memory building the request");
    return -1;
}

static int setup(kn_http *h, CURL *c, const kn_http_req *req, kn_http_result *r, struct curl_slist *hl) {
    CURLcode rc = CURLE_OK;
    curl_easy_reset(c); /* live connections survive a reset */
    kn_buf_reset(&r->head);
    kn_buf_reset(&r->body);
    r->max_body = req->max_body;
    r->too_large = 0;
    r->head_lines = 0;
    r->head_done = 0;
    r->head_limit = NULL;
    r->kind = KN_HTTP_OK;
    r->status = 0;
    r->not_sent = 0;
    r->msg[0] = '\0';
    r->prereqs = 0;
    r->once = strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0;

#define SET(opt, val) \
    if (rc == CURLE_OK) rc = curl_easy_setopt(c, opt, val)
    SET(CURLOPT_SHARE, h->share);
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_HTTPHEADER, hl);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, r);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, r);
    SET(CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 0L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 0L);
#if LIBCURL_VERSION_NUM >= 0x075700
    /* CURLOPT_TIMEOUT_MS bounds the whole transfer, name resolution
     * included (the threaded resolver, "AsynchDNS"), but on a resolve
     * timeout libcurl then waits for its resolver thread to return from
     * getaddrinfo (resolv.conf's timeout x attempts: 150 s were seen).
     * QUICK_EXIT leaves that thread to finish and free itself instead. */
    SET(CURLOPT_QUICK_EXIT, 1L);
#endif
    SET(CURLOPT_SSL_VERIFYPEER, req->verify_tls ? 1L : 0L);
    SET(CURLOPT_SSL_VERIFYHOST, req->verify_tls ? 2L : 0L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    /* no silent replay of a POST on a new connection (see on_prereq); the
     * warm connection is kept: no extra connect per command */
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
    SET(CURLOPT_PREREQDATA, r);
    SET(CURLOPT_XFERINFOFUNCTION, on_progress);
    SET(CURLOPT_NOPROGRESS, 0L);
    /* an explicit empty proxy also disables the *_proxy environment */
    SET(CURLOPT_PROXY, req->proxy ? req->proxy : "");
    if (req->ca_file) SET(CURLOPT_CAINFO, req->ca_file);
    if (req->max_body) SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_body);
    if (strcmp(req->method, "GET") == 0) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(req->method, "POST") == 0) {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
        SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
    } else if (strcmp(req->method, "HEAD") == 0) {
        /* not a custom method: libcurl would wait for the body that the
         * answer's Content-Length announces and a HEAD never gets */
        SET(CURLOPT_NOBODY, 1L);
    } else {
        SET(CURLOPT_CUSTOMREQUEST, req->method);
        /* PUT and PATCH say "Content-Length: 0" without a body, as a POST
         * does (RFC 9110 8.6) and as the resty transport sends them */
        if (req->body || strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0) {
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
            SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
        }
    }
#undef SET
    if (rc != CURLE_OK) {
        r->kind = KN_HTTP_INVALID;
        snprintf(r->msg, sizeof r->msg, "libcurl refused an option: %s", curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

static enum kn_http_kind kind_of(CURLcode rc) {
    switch (rc) {
    case CURLE_OK: return KN_HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT: return KN_HTTP_TIMEOUT;
    case CURLE_FILESIZE_EXCEEDED: return KN_HTTP_TOO_LARGE;
    case CURLE_OUT_OF_MEMORY: return KN_HTTP_NOMEM;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
        return KN_HTTP_TLS;
    default: return KN_HTTP_NETWORK;
    }
}

/* Fills the result from a finished transfer. */
static void finish(CURL *c, CURLcode rc, const char *errbuf, const kn_http_req *req, kn_http_result *r) {
    long status = 0, reqsize = 0;
    double t = 0;
    char why_curl[CURL_ERROR_SIZE];
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &reqsize);
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &t);
    r->total_time = t;
    r->status = status;
    if (rc == CURLE_WRITE_ERROR && r->too_large) rc = CURLE_FILESIZE_EXCEEDED;
    /* libcurl answers a header line over its own 100 KiB limit with
     * "out of memory": in the middle of a head, that is what it means */
    if (rc == CURLE_OUT_OF_MEMORY && status && !r->head_done) {
        rc = CURLE_FILESIZE_EXCEEDED;
        r->head_limit = "a header line longer than libcurl's 100 KiB limit";
    }
    r->kind = kind_of(rc);
    if (rc == CURLE_ABORTED_BY_CALLBACK && kn_interrupted()) r->kind = KN_HTTP_INTERRUPTED;
    if (rc == CURLE_OK) return;
    /* libcurl counts the bytes it handed to the socket: none means the
     * server cannot have seen this request.  For one that is not
     * idempotent, only a request libcurl never got as far as writing
     * counts as not sent: a stricter test, which does not depend on what
     * that count holds after libcurl's own retry on a new connection. */
    r->not_sent = r->once ? r->prereqs == 0 : reqsize == 0;
    if (r->kind == KN_HTTP_INTERRUPTED) {
        snprintf(r->msg, sizeof r->msg, "interrupted");
        return;
    }
    if (r->once && r->prereqs > 1 && rc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(r->msg, sizeof r->msg,
                 "the connection closed after the request was written, before any answer "
                 "(libcurl was stopped from writing it again on a new connection)");
        return;
    }
    /* libcurl quotes a proxy it cannot parse, password and all, and may cut
     * the quote short: redacted here, where a cut still ends the text */
    snprintf(why_curl, sizeof why_curl, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
    kn_redact_userinfo(why_curl, sizeof why_curl, req->proxy);
    kn_redact_userinfo(why_curl, sizeof why_curl, req->url);
    switch (r->kind) {
    case KN_HTTP_TOO_LARGE:
        if (r->head_limit)
            snprintf(r->msg, sizeof r->msg, "reading headers: %s", r->head_limit);
        else
            snprintf(r->msg, sizeof r->msg, "response larger than the %zu-byte cap (max_body)", req->max_body);
        break;
    case KN_HTTP_TIMEOUT:
        snprintf(r->msg, sizeof r->msg, "%s (connect_timeout %ld ms, timeout %ld ms)",
                 why_curl, req->connect_timeout_ms, req->timeout_ms);
        break;
    case KN_HTTP_TLS:
        snprintf(r->msg, sizeof r->msg, "TLS failure: %s%s", why_curl,
                 req->ca_file ? "" : " (set ca_file to trust a private CA)");
        break;
    default: {
        long oserr = 0;
        char why[96];
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &oserr);
        if (oserr && strerror_r((int)oserr, why, sizeof why) == 0)
            snprintf(r->msg, sizeof r->msg, "%s (%s)", why_curl, why);
        else
            snprintf(r->msg, sizeof r->msg, "%s", why_curl);
    }
    }
    /* and whatever else the message took in */
    kn_redact_userinfo(r->msg, sizeof r->msg, req->proxy);
    kn_redact_userinfo(r->msg, sizeof r->msg, req->url);
}

int kn_http_perform(kn_http *h, const kn_http_req *req, kn_http_result *r) {
    struct curl_slist *hl = NULL;
    char errbuf[CURL_ERROR_SIZE];
    CURLcode rc;
    r->kind = KN_HTTP_OK;
    if (make_headers(req, &hl, r)) return r->kind;
    if (setup(h, h->easy, req, r, hl)) {
        curl_slist_free_all(hl);
        return r->kind;
    }
    errbuf[0] = '\0';
    curl_easy_setopt(h->easy, CURLOPT_ERRORBUFFER, errbuf);
    rc = curl_easy_perform(h->easy);
    finish(h->easy, rc, errbuf, req, r);
    curl_easy_setopt(h->easy, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hl);
    return r->kind;
}

/* ------------------------------------------------------------ streams */

static void slot_release(stream_slot *sl) {
    curl_slist_free_all(sl->headers);
    sl->headers = NULL;
    free(sl->url);
    free(sl->proxy);
    free(sl->ca_file);
    sl->url = sl->proxy = sl->ca_file = NULL;
    kn_buf_reset(&sl->body);
    if (sl->easy) {
        curl_easy_setopt(sl->easy, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(sl->easy, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(sl->easy, CURLOPT_POSTFIELDS, NULL);
    }
}

kn_http_stream *kn_http_stream_new(kn_http *h, size_t slots) {
    kn_http_stream *s = h->idle;
    size_t i;
    if (slots == 0) slots = 1;
    if (s && s->cap >= slots) {
        h->idle = NULL;
    } else {
        stream_slot *ns;
        if (!s) {
            s = calloc(1, sizeof *s);
            if (!s) return NULL;
            s->h = h;
        } else {
            h->idle = NULL;
        }
        ns = realloc(s->slot, slots * sizeof *ns);
        if (!ns) {
            kn_http_stream_free(s); /* parks it again: nothing lost */
            return NULL;
        }
        s->slot = ns;
        for (i = s->cap; i < slots; i++) {
            memset(&ns[i], 0, sizeof ns[i]);
            kn_buf_init(&ns[i].body);
            kn_http_result_init(&ns[i].result);
        }
        s->cap = slots;
    }
    if (!s->multi && !(s->multi = curl_multi_init())) {
        kn_http_stream_free(s);
        return NULL;
    }
    s->nslots = slots;
    s->running = 0;
    s->ended = 0;
    return s;
}

size_t kn_http_stream_slots(const kn_http_stream *s) { return s->nslots; }
size_t kn_http_stream_running(const kn_http_stream *s) { return s->running; }

kn_http_result *kn_http_stream_result(kn_http_stream *s, size_t slot) {
    return slot < s->nslots ? &s->slot[slot].result : NULL;
}

static char *dup_or_null(const char *p) {
    size_t n;
    char *d;
    if (!p) return NULL;
    n = strlen(p) + 1;
    d = malloc(n);
    if (d) memcpy(d, p, n);
    return d;
}

/* a request that could not start: ended at once, handed back by the next wait */
static int slot_failed(kn_http_stream *s, stream_slot *sl) {
    slot_release(sl);
    sl->result.not_sent = 1; /* nothing of it reached libcurl's loop */
    sl->state = SLOT_ENDED;
    s->ended++;
    return -1;
}

int kn_http_stream_add(kn_http_stream *s, size_t slot, const kn_http_req *req) {
    stream_slot *sl;
    kn_http_result *r;
    if (slot >= s->nslots || s->slot[slot].state != SLOT_FREE) return -2; /* the caller's mistake */
    sl = &s->slot[slot];
    r = &sl->result;
    r->kind = KN_HTTP_OK;
    r->msg[0] = '\0';
    r->not_sent = 1;
    /* the copy: the caller's strings may go once this returns */
    sl->req = *req;
    sl->req.headers = NULL; /* read by make_headers below only */
    sl->url = dup_or_null(req->url);
    sl->proxy = dup_or_null(req->proxy);
    sl->ca_file = dup_or_null(req->ca_file);
    if (!sl->url || (req->proxy && !sl->proxy) || (req->ca_file && !sl->ca_file) ||
        (req->body && kn_buf_add(&sl->body, req->body, req->body_len))) {
        r->kind = KN_HTTP_NOMEM;
        snprintf(r->msg, sizeof r->msg, "out of memory starting a request");
        return slot_failed(s, sl);
    }
    sl->req.url = sl->url;
    sl->req.proxy = sl->proxy;
    sl->req.ca_file = sl->ca_file;
    sl->req.body = req->body ? (sl->body.len ? sl->body.p : "") : NULL;
    if (!sl->easy && !(sl->easy = curl_easy_init())) {
        r->kind = KN_HTTP_NOMEM;
        snprintf(r->msg, sizeof r->msg, "out of memory creating a connection");
        return slot_failed(s, sl);
    }
    if (make_headers(req, &sl->headers, r)) return slot_failed(s, sl);
    if (setup(s->h, sl->easy, &sl->req, r, sl->headers)) return slot_failed(s, sl);
    sl->errbuf[0] = '\0';
    curl_easy_setopt(sl->easy, CURLOPT_ERRORBUFFER, sl->errbuf);
    curl_easy_setopt(sl->easy, CURLOPT_PRIVATE, (void *)sl);
    if (curl_multi_add_handle(s->multi, sl->easy) != CURLM_OK) {
        r->kind = KN_HTTP_NOMEM;
        r->not_sent = 1;
        snprintf(r->msg, sizeof r->msg, "libcurl refused to start this request");
        return slot_failed(s, sl);
    }
    sl->state = SLOT_RUNNING;
    s->running++;
    return 0;
}

static long ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)((t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000);
}

/* a transfer ended: its result filled, its handle out of the multi */
static void slot_end(kn_http_stream *s, stream_slot *sl, CURLcode rc) {
    finish(sl->easy, rc, sl->errbuf, &sl->req, &sl->result);
    curl_multi_remove_handle(s->multi, sl->easy);
    slot_release(sl);
    sl->state = SLOT_ENDED;
    s->running--;
    s->ended++;
}

/* hands back every ENDED slot */
static int collect(kn_http_stream *s, size_t *done) {
    size_t i;
    int n = 0;
    for (i = 0; i < s->nslots && s->ended; i++) {
        if (s->slot[i].state != SLOT_ENDED) continue;
        s->slot[i].state = SLOT_FREE;
        s->ended--;
        done[n++] = i;
    }
    return n;
}

int kn_http_stream_wait(kn_http_stream *s, long timeout_ms, size_t *done) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int running = 0, left;
        CURLMsg *m;
        if (kn_interrupted()) return -1; /* (Ctrl-C: the caller frees what runs) */
        if (s->running) {
            CURLMcode mc = curl_multi_perform(s->multi, &running);
            if (mc == CURLM_OK) {
                while ((m = curl_multi_info_read(s->multi, &left))) {
                    if (m->msg == CURLMSG_DONE) {
                        stream_slot *sl = NULL;
                        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&sl);
                        slot_end(s, sl, m->data.result);
                    }
                }
            } else {
                /* the loop itself failed: every transfer ends with it */
                size_t i;
                for (i = 0; i < s->nslots; i++) {
                    stream_slot *sl = &s->slot[i];
                    if (sl->state != SLOT_RUNNING) continue;
                    slot_end(s, sl, CURLE_OK);
                    sl->result.kind = KN_HTTP_NOMEM;
                    sl->result.not_sent = 0; /* it may have left */
                    snprintf(sl->result.msg, sizeof sl->result.msg, "libcurl multi loop failed: %s",
                             curl_multi_strerror(mc));
                }
            }
        }
        if (s->ended) return collect(s, done);
        if (!s->running && timeout_ms < 0) return 0;
        {
            long left_ms = timeout_ms < 0 ? 1000 : timeout_ms - ms_since(&t0);
            if (left_ms <= 0) return 0;
            if (left_ms > 1000) left_ms = 1000;
            /* (with no transfer, curl_multi_poll waits the whole time: a sleep) */
            if (curl_multi_poll(s->multi, NULL, 0, (int)left_ms, NULL) != CURLM_OK && !s->running) return 0;
        }
    }
}

void kn_http_stream_free(kn_http_stream *s) {
    size_t i;
    kn_http *h;
    if (!s) return;
    for (i = 0; i < s->cap; i++) {
        stream_slot *sl = &s->slot[i];
        if (sl->state == SLOT_RUNNING) curl_multi_remove_handle(s->multi, sl->easy); /* abandoned */
        slot_release(sl);
        sl->state = SLOT_FREE;
    }
    s->running = 0;
    s->ended = 0;
    h = s->h;
    /* kept warm for the next stream of this handle, the larger of two */
    if (h && (!h->idle || h->idle->cap < s->cap)) {
        kn_http_stream *old = h->idle;
        h->idle = s;
        s = old;
        if (!s) return;
        s->h = NULL;
    }
    for (i = 0; i < s->cap; i++) {
        if (s->slot[i].easy) curl_easy_cleanup(s->slot[i].easy);
        kn_buf_free(&s->slot[i].body);
        kn_http_result_free(&s->slot[i].result);
    }
    free(s->slot);
    if (s->multi) curl_multi_cleanup(s->multi);
    free(s);
}

static void fail_all(kn_http_result *results, size_t n, const char *why) {
    size_t i;
    for (i = 0; i < n; i++) {
        results[i].kind = KN_HTTP_NOMEM;
        results[i].not_sent = 1;
        snprintf(results[i].msg, sizeof results[i].msg, "%s", why);
    }
}

int kn_http_perform_many(kn_http *h, const kn_http_req *reqs, kn_http_result *results, size_t n) {
    kn_http_stream *s;
    size_t i, *done, got = 0;
    if (n == 0) return 0;
    done = malloc(n * sizeof *done);
    s = done ? kn_http_stream_new(h, n) : NULL;
    if (!s) {
        free(done);
        fail_all(results, n, "out of memory starting a batch");
        return -1;
    }
    for (i = 0; i < n; i++) kn_http_stream_add(s, i, &reqs[i]);
    while (got < n) {
        int k = kn_http_stream_wait(s, -1, done), j;
        if (k <= 0) break; /* (none running: cannot happen while got < n; or Ctrl-C: the binding raises) */
        for (j = 0; j < k; j++) {
            /* the result moves to the caller; the slot keeps the caller's
             * old buffers for its next use */
            kn_http_result tmp = results[done[j]];
            results[done[j]] = s->slot[done[j]].result;
            s->slot[done[j]].result = tmp;
        }
        got += (size_t)k;
    }
    kn_http_stream_free(s);
    free(done);
    return 0;
}
