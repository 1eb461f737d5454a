/* Growable byte buffer: the one allocation pattern the core uses.
 * Buffers are owned by long-lived handles and reused, so the hot paths
 * allocate nothing once warm. */
#ifndef KINOT_BUF_H
#define KINOT_BUF_H
#include <stddef.h>
#include <string.h>

typedef struct kn_buf {
    char *p;
    size_t len, cap;
} kn_buf;

void kn_buf_init(kn_buf *b);
void kn_buf_free(kn_buf *b);
/* Each returns 0 on success, -1 when memory ran out (buffer unchanged). */
int kn_buf_reserve(kn_buf *b, size_t extra);
int kn_buf_grow_add(kn_buf *b, const void *p, size_t n);

/* appends; the common case (room already there) stays inline */
static inline int kn_buf_add(kn_buf *b, const void *p, size_t n) {
    if (b->cap - b->len > n) {
        if (n) memcpy(b->p + b->len, p, n);
        b->len += n;
        b->p[b->len] = '\0';
        return 0;
    }
    return kn_buf_grow_add(b, p, n);
}

static inline int kn_buf_addc(kn_buf *b, char c) { return kn_buf_add(b, &c, 1); }
/* keeps capacity, drops content */
#define kn_buf_reset(b) ((b)->len = 0)

#endif
