#include "jsonfix.h"

static int blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t kn_json_drop_trailing_commas(const char *in, size_t n, char *out) {
    size_t i = 0, o = 0;
    int in_str = 0;
    while (i < n) {
        char c = in[i];
        if (in_str) {
            out[o++] = c;
            if (c == '\\' && i + 1 < n) out[o++] = in[++i];
            else if (c == '"') in_str = 0;
            i++;
            continue;
        }
        if (c == '"') in_str = 1;
        if (c == ',') {
            size_t j = i + 1;
            while (j < n && blank(in[j])) j++;
            if (j < n && (in[j] == '}' || in[j] == ']')) {
                i++; /* drop the comma, keep the blanks */
                continue;
            }
        }
        out[o++] = c;
        i++;
    }
    return o;
}
