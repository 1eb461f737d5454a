/* HTTP over libcurl.  A kn_http owns a connection pool (a CURLSH shared by
 * all its easy handles) so connections stay alive across calls, whether a
 * request goes alone (kn_http_perform) or in a concurrent batch
 * (kn_http_perform_many, over curl-multi). */
#ifndef KINOT_HTTP_H
#define KINOT_HTTP_H
#include <stddef.h>
#include "buf.h"
#include "kn_types.h"

enum kn_http_kind {
    KN_HTTP_OK = 0,
    KN_HTTP_NETWORK,
    KN_HTTP_TIMEOUT,
    KN_HTTP_TLS,
    KN_HTTP_TOO_LARGE,
    KN_HTTP_INVALID, /* the request itself is unacceptable (bad header, ...) */
    KN_HTTP_NOMEM,
    KN_HTTP_INTERRUPTED /* Ctrl-C under the CLI's handler (interrupt.h): stopped, not finished */
};

typedef struct kn_http_req {
    const char *method; /* "GET", "POST", ... */
    const char *url;
    const kn_kv *headers;
    size_t nheaders;
    const char *body; /* NULL for none */
    size_t body_len;
    long timeout_ms, connect_timeout_ms;
    size_t max_body;    /* 0 = no cap */
    int verify_tls;
    const char *ca_file; /* NULL = system store */
    const char *proxy;   /* NULL = none (environment proxies are ignored) */
} kn_http_req;

typedef struct kn_http_result {
    enum kn_http_kind kind;
    long status;
    int not_sent;        /* provably no byte of the request left this host */
    kn_buf head;         /* raw header block of the final response */
    kn_buf body;
    double total_time;   /* seconds */
    char msg[384];
    /* private */
    size_t max_body;
    int too_large;
    int once;            /* not idempotent: written at most once per perform */
    int prereqs;         /* times libcurl was about to write the request */
    size_t head_lines;      /* lines of the current head so far */
    int head_done;          /* its empty line has come */
    const char *head_limit; /* which cap on the head was passed, if one was */
} kn_http_result;

typedef struct kn_http kn_http;

/* once per process: libcurl's global init */
int kn_http_global_init(void);

kn_http *kn_http_new(void);
void kn_http_free(kn_http *h);

void kn_http_result_init(kn_http_result *r);
void kn_http_result_free(kn_http_result *r);

/* Returns r->kind; r->status, head and body are filled on KN_HTTP_OK.
 * KN_HTTP_INTERRUPTED: SIGINT came under the CLI's handler (interrupt.h)
 * and the transfer was stopped (within libcurl's next progress call). */
int kn_http_perform(kn_http *h, const kn_http_req *req, kn_http_result *r);

/* Runs n requests at once; results[i] answers reqs[i].  Returns 0, or -1
 * when the batch could not run at all (each result then says why).  A
 * stream whose n requests all start at once (the one concurrent path). */
int kn_http_perform_many(kn_http *h, const kn_http_req *reqs, kn_http_result *results, size_t n);

/* A stream: up to `slots` transfers at once over curl-multi, each slot
 * given a new request as soon as its last one ended (no round waits for
 * its slowest).  The caller drives it:
 *   add(slot, req)   starts req on a free slot.  Everything of req is
 *                    copied: nothing it points to is read once add
 *                    returns.  -1: it could not start; the slot's result
 *                    says why (KN_HTTP_INVALID: the request is unacceptable,
 *                    nothing sent) and the next wait hands it back.
 *   wait(ms, done)   runs the transfers until one or more ended (their
 *                    slots in done[], their results in result(slot)) or ms
 *                    passed (0 back; ms < 0: no limit, but 0 at once when
 *                    none runs).  A slot in done[] is free again.
 *                    -1: SIGINT came under the CLI's handler (interrupt.h),
 *                    before or during the wait: nothing handed back, the
 *                    transfers still running are left to free.
 *   free             a transfer still running is abandoned (its connection
 *                    closed; what the server made of it, no one knows).
 * One stream of a kn_http keeps its handles for the next (warm). */
typedef struct kn_http_stream kn_http_stream;
kn_http_stream *kn_http_stream_new(kn_http *h, size_t slots); /* NULL: out of memory */
int kn_http_stream_add(kn_http_stream *s, size_t slot, const kn_http_req *req);
int kn_http_stream_wait(kn_http_stream *s, long timeout_ms, size_t *done);
kn_http_result *kn_http_stream_result(kn_http_stream *s, size_t slot);
size_t kn_http_stream_slots(const kn_http_stream *s);
size_t kn_http_stream_running(const kn_http_stream *s);
void kn_http_stream_free(kn_http_stream *s);

/* Removes from msg (NUL-terminated, cap bytes) the userinfo of every
 * "scheme://user:pw@..." it holds and every piece of the userinfo of `url`
 * (which may have no scheme, as a proxy may not), even where msg was cut
 * short inside it; each becomes "<redacted>".  url may be NULL. */
void kn_redact_userinfo(char *msg, size_t cap, const char *url);

/* libcurl's version string, for diagnostics */
const char *kn_http_version(void);

#endif
