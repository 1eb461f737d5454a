/* libFuzzer target: the JSON reader behind every API response.  Any bytes
 * must parse or be refused with a reason; an accepted text opens and closes
 * its containers in balance and puts a key before every object member. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../src/json.h"

typedef struct state {
    int depth, kinds[256], pending_key;
} state;

static int begin(void *ud, int is_object) {
    state *s = ud;
    if (s->depth > 0 && s->kinds[s->depth - 1] == 1 && !s->pending_key) abort();
    s->pending_key = 0;
    if (s->depth >= 255) abort(); /* the reader's own limit is lower */
    s->kinds[s->depth++] = is_object;
    return 0;
}
static int end(void *ud, int is_object) {
    state *s = ud;
    if (s->depth == 0 || s->kinds[s->depth - 1] != is_object) abort();
    s->depth--;
    return 0;
}
static int key(void *ud, const char *p, size_t n) {
    state *s = ud;
    (void)p, (void)n;
    if (s->depth == 0 || s->kinds[s->depth - 1] != 1 || s->pending_key) abort();
    s->pending_key = 1;
    return 0;
}
static int scalar(state *s) {
    if (s->depth > 0 && s->kinds[s->depth - 1] == 1) {
        if (!s->pending_key) abort();
        s->pending_key = 0;
    }
    return 0;
}
static int string(void *ud, const char *p, size_t n) { (void)p, (void)n; return scalar(ud); }
static int number(void *ud, const char *p, size_t n, int is_integer) {
    if (n == 0 || (is_integer && memchr(p, '.', n))) abort();
    return scalar(ud);
}
static int literal(void *ud, int which) {
    if (which < 0 || which > 2) abort();
    return scalar(ud);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    state s;
    kn_json_sink sink = {&s, begin, end, key, string, number, literal};
    kn_buf scratch;
    char why[160];
    memset(&s, 0, sizeof s);
    kn_buf_init(&scratch);
    why[0] = '\0';
    if (kn_json_parse((const char *)data, size, &sink, &scratch, why, sizeof why) == 0) {
        if (s.depth != 0) abort();
    } else if (why[0] == '\0') {
        abort();
    }
    kn_buf_free(&scratch);
    return 0;
}
