#include <stdio.h>
#include <string.h>
#include "ffi_layout.h"
#include "kn_types.h"
#include "sign.h"
#include "cbscan.h"

typedef struct layout_entry {
    const char *name;
    size_t value;
} layout_entry;

#define SIZE(T) {#T, sizeof(T)}
#define AT(T, f) {#T "." #f, offsetof(T, f)}

static const layout_entry LAYOUT[] = {
    SIZE(kn_str), AT(kn_str, p), AT(kn_str, n),
    SIZE(kn_kv), AT(kn_kv, name), AT(kn_kv, value),
    SIZE(kn_sign_req), AT(kn_sign_req, method), AT(kn_sign_req, path), AT(kn_sign_req, headers),
    AT(kn_sign_req, nheaders), AT(kn_sign_req, sign_headers), AT(kn_sign_req, nsign), AT(kn_sign_req, query),
    AT(kn_sign_req, nquery), AT(kn_sign_req, form), AT(kn_sign_req, nform),
    SIZE(kn_cb_member), AT(kn_cb_member, key), AT(kn_cb_member, text), AT(kn_cb_member, type),
    AT(kn_cb_member, is_integer), AT(kn_cb_member, number), AT(kn_cb_member, integer), AT(kn_cb_member, name_slot),
};

size_t kn_ffi_layout(char *buf, size_t cap) {
    size_t i, len = 0;
    char line[80];
    if (cap) buf[0] = '\0';
    for (i = 0; i < sizeof LAYOUT / sizeof LAYOUT[0]; i++) {
        int n = snprintf(line, sizeof line, "%s %lu\n", LAYOUT[i].name, (unsigned long)LAYOUT[i].value);
        if (n < 0) continue;
        if (len + (size_t)n < cap) memcpy(buf + len, line, (size_t)n + 1);
        else if (len < cap) buf[len] = '\0';
        len += (size_t)n;
    }
    return len;
}
