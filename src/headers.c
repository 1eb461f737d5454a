#include <string.h>
#include "headers.h"
#include "buf.h"

static int is_ws(char c) { return c == ' ' || c == '\t'; }

/* end of the logical line that starts at i: CRLF or LF, continuation lines
 * (starting with SP/HT) belong to it */
static size_t line_end(const char *raw, size_t len, size_t i, size_t *next) {
    size_t e = i;
    for (;;) {
        while (e < len && raw[e] != '\n') e++;
        if (e >= len) {
            *next = len;
            return len;
        }
        if (e + 1 < len && is_ws(raw[e + 1])) { /* obs-fold */
            e++;
            continue;
        }
        *next = e + 1;
        return e;
    }
}

int kn_headers_parse(const char *raw, size_t len, kn_header_fn fn, void *ud) {
    size_t i = 0, next, e;
    kn_buf val;
    int rc = 0;
    kn_buf_init(&val);
    while (i < len) {
        size_t colon, vs, ve, k;
        e = line_end(raw, len, i, &next);
        colon = i;
        while (colon < e && raw[colon] != ':') colon++;
        /* status line, blank line, or garbage: not a field */
        if (colon == e || colon == i || (e - i >= 5 && memcmp(raw + i, "HTTP/", 5) == 0)) {
            i = next;
            continue;
        }
        vs = colon + 1;
        ve = e;
        while (vs < ve && (is_ws(raw[vs]) || raw[vs] == '\r' || raw[vs] == '\n')) vs++;
        while (ve > vs && (is_ws(raw[ve - 1]) || raw[ve - 1] == '\r' || raw[ve - 1] == '\n')) ve--;
        kn_buf_reset(&val);
        /* unfold: CR/LF plus following blanks become one space */
        for (k = vs; k < ve; k++) {
            char c = raw[k];
            if (c == '\r' || c == '\n') {
                while (k + 1 < ve && (raw[k + 1] == '\r' || raw[k + 1] == '\n' || is_ws(raw[k + 1]))) k++;
                c = ' ';
            }
            if (kn_buf_addc(&val, c)) {
                rc = -1;
                goto done;
            }
        }
        {
            size_t ns = i, ne = colon;
            while (ns < ne && is_ws(raw[ns])) ns++;
            while (ne > ns && is_ws(raw[ne - 1])) ne--;
            /* a field needs a name: " : x" is garbage, not a header */
            if (ne > ns) rc = fn(ud, raw + ns, ne - ns, val.p ? val.p : "", val.len);
        }
        if (rc) goto done;
        i = next;
    }
done:
    kn_buf_free(&val);
    return rc;
}
