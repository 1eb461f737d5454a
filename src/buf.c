#include <stdlib.h>
#include <string.h>
#include "buf.h"

void kn_buf_init(kn_buf *b) { b->p = NULL; b->len = b->cap = 0; }

void kn_buf_free(kn_buf *b) {
    free(b->p);
    kn_buf_init(b);
}

int kn_buf_reserve(kn_buf *b, size_t extra) {
    size_t need, cap;
    char *np;
    if (extra > (size_t)-1 - b->len - 1) return -1;
    need = b->len + extra + 1; /* room for a terminating NUL */
    if (need <= b->cap) return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
    np = realloc(b->p, cap);
    if (!np) return -1;
    b->p = np;
    b->cap = cap;
    return 0;
}

int kn_buf_grow_add(kn_buf *b, const void *p, size_t n) {
    if (kn_buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}
