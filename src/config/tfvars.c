#include "config/tfvars.h"

#include <errno.h>
#include <math.h> /* isfinite, a macro: no -lm needed */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/bytebuf.h"
#include "common/hex.h"
#include "common/strmap.h"
#include "ws/utf8.h"

typedef struct tfv_parser {
    const char *s;
    size_t len;
    size_t pos;
    int line;
    size_t line_start; /* offset of the first byte of the current line */
    int depth;
    wsg_error *err;
} tfv_parser;

/* ---------- positions and errors ---------- */

static int p_col(const tfv_parser *p) {
    size_t c = p->pos - p->line_start + 1;
    return c > 1000000000 ? 1000000000 : (int)c;
}

static int peek(const tfv_parser *p) { return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1; }

static int peek_at(const tfv_parser *p, size_t k) {
    return p->pos + k < p->len ? (unsigned char)p->s[p->pos + k] : -1;
}

static void advance(tfv_parser *p) {
    if (p->s[p->pos] == '\n') {
        p->line++;
        p->line_start = p->pos + 1;
    }
    p->pos++;
}

static int fail_at(tfv_parser *p, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_at(tfv_parser *p, int line, int column, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    wsg_error_vset_at(p->err, WSG_E_CONFIG_SYNTAX, line, column, fmt, ap);
    va_end(ap);
    return WSG_E_CONFIG_SYNTAX;
}

/* Describe the byte at the cursor for "found X" in messages. */
static const char *describe(const tfv_parser *p, char *buf, size_t size) {
    int c = peek(p);
    if (c < 0) return "end of input";
    if (c == '\n') return "end of line";
    if (c > 0x20 && c < 0x7f) snprintf(buf, size, "'%c'", c);
    else snprintf(buf, size, "byte 0x%02x", (unsigned)c);
    return buf;
}

static bool is_ident_start(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_ident_char(int c) { return is_ident_start(c) || (c >= '0' && c <= '9') || c == '-'; }

static bool is_digit(int c) { return c >= '0' && c <= '9'; }

static void put_utf8(bytebuf *b, uint32_t cp) {
    char out[4];
    size_t n;
    if (cp < 0x80) {
        out[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        out[0] = (char)(0xf0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    bytebuf_put(b, out, n);
}

/* ---------- whitespace and comments ---------- */

/* Skip blanks and comments; newlines too when `newlines` (inside brackets
 * they are layout, at the top level and in map entries they end things). A
 * line comment stops before its newline so that newline still counts. */
static int skip_space(tfv_parser *p, bool newlines) {
    for (;;) {
        int c = peek(p);
        if (c == ' ' || c == '\t' || c == '\r') {
            p->pos++;
        } else if (c == '\n') {
            if (!newlines) return 0;
            advance(p);
        } else if (c == '#' || (c == '/' && peek_at(p, 1) == '/')) {
            while (p->pos < p->len && p->s[p->pos] != '\n') p->pos++;
        } else if (c == '/' && peek_at(p, 1) == '*') {
            int line = p->line, col = p_col(p);
            p->pos += 2;
            for (;;) {
                if (p->pos >= p->len)
                    return fail_at(p, line, col, "unterminated comment: missing '*/'");
                if (p->s[p->pos] == '*' && peek_at(p, 1) == '/') {
                    p->pos += 2;
                    break;
                }
                advance(p);
            }
        } else {
            return 0;
        }
    }
}

/* ---------- values ---------- */

static tfv_value *value_new(tfv_type type, int line, int column) {
    tfv_value *v = xcalloc(1, sizeof *v);
    v->type = type;
    v->line = line;
    v->column = column;
    return v;
}

void tfv_value_free(tfv_value *v) {
    if (!v) return;
    for (size_t i = 0; i < v->count; i++) {
        tfv_value_free(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    free(v);
}

tfv_value *tfv_string_new(const char *s, size_t len) {
    tfv_value *v = value_new(TFV_STRING, 0, 0);
    v->string = xstrndup(s, len);
    v->string_len = len;
    return v;
}

const char *tfv_type_name(tfv_type type) {
    switch (type) {
    case TFV_NULL: return "null";
    case TFV_BOOL: return "bool";
    case TFV_NUMBER: return "number";
    case TFV_STRING: return "string";
    case TFV_LIST: return "list";
    case TFV_MAP: return "map";
    }
    return "?";
}

static void push_item(tfv_value *v, tfv_value *item, char *key) {
    /* Grow by doubling, tracking capacity implicitly as the next power of
     * two at or above count, so the struct needs no capacity field. */
    size_t n = v->count;
    if ((n & (n - 1)) == 0) {
        size_t cap = n ? n * 2 : 4;
        if (n == 0 || n >= 4) {
            v->items = xrealloc(v->items, cap * sizeof *v->items);
            if (v->type == TFV_MAP) v->keys = xrealloc(v->keys, cap * sizeof *v->keys);
        }
    }
    v->items[n] = item;
    if (v->type == TFV_MAP) v->keys[n] = key;
    v->count = n + 1;
}

/* Copy s[from..to) into b, turning $${ and %%{ into their literal forms and
 * rejecting ${ and %{, which would be template interpolation Terraform does
 * not allow in a tfvars file. `line`/`col0` locate s[from] for errors. */
static int copy_template_text(tfv_parser *p, bytebuf *b, size_t from, size_t to, int line,
                              int col0) {
    for (size_t i = from; i < to; i++) {
        char c = p->s[i];
        if ((c == '$' || c == '%') && i + 1 < to && p->s[i + 1] == '{')
            return fail_at(p, line, col0 + (int)(i - from),
                           "template sequence '%c{' is not allowed in a tfvars value "
                           "(write %c%c{ for a literal %c{)",
                           c, c, c, c);
        if ((c == '$' || c == '%') && i + 2 < to && p->s[i + 1] == c && p->s[i + 2] == '{') {
            bytebuf_putc(b, c);
            bytebuf_putc(b, '{');
            i += 2;
            continue;
        }
        if (c == '\0') return fail_at(p, line, col0 + (int)(i - from), "NUL byte in string");
        bytebuf_putc(b, c);
    }
    return 0;
}

/* Parse a quoted string at the cursor into *out (NUL-terminated). */
static int parse_string(tfv_parser *p, char **out, size_t *out_len) {
    int line = p->line, col = p_col(p);
    bytebuf b = {0};
    bytebuf_put(&b, "", 0);
    p->pos++;
    for (;;) {
        if (p->pos >= p->len) {
            free(b.d);
            return fail_at(p, line, col, "unterminated string: missing closing '\"'");
        }
        char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c == '\n') {
            free(b.d);
            return fail_at(p, line, col,
                           "unterminated string: a quoted string cannot span lines (use \\n)");
        }
        if (c == '\\') {
            int ecol = p_col(p);
            int e = peek_at(p, 1);
            size_t ndig = 0;
            switch (e) {
            case 'n': bytebuf_putc(&b, '\n'); break;
            case 't': bytebuf_putc(&b, '\t'); break;
            case 'r': bytebuf_putc(&b, '\r'); break;
            case '"': bytebuf_putc(&b, '"'); break;
            case '\\': bytebuf_putc(&b, '\\'); break;
            case 'u': ndig = 4; break;
            case 'U': ndig = 8; break;
            case -1:
                free(b.d);
                return fail_at(p, line, col, "unterminated string: missing closing '\"'");
            default:
                free(b.d);
                if (e > 0x20 && e < 0x7f)
                    return fail_at(p, p->line, ecol, "invalid escape sequence '\\%c'", e);
                return fail_at(p, p->line, ecol, "invalid escape sequence (byte 0x%02x after '\\')",
                               (unsigned)e);
            }
            if (ndig) {
                uint32_t cp = 0;
                for (size_t k = 0; k < ndig; k++) {
                    int h = hex_digit_value(peek_at(p, 2 + k));
                    if (h < 0) {
                        free(b.d);
                        return fail_at(p, p->line, ecol,
                                       "invalid '\\%c' escape: expected %zu hex digits", e, ndig);
                    }
                    cp = cp * 16 + (uint32_t)h;
                }
                if (cp == 0) {
                    free(b.d);
                    return fail_at(p, p->line, ecol, "'\\%c' escape of NUL is not allowed", e);
                }
                if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
                    free(b.d);
                    return fail_at(p, p->line, ecol,
                                   "'\\%c' escape is not a valid Unicode code point", e);
                }
                put_utf8(&b, cp);
            }
            p->pos += 2 + ndig;
            continue;
        }
        /* Copy a run of plain bytes in one go, stopping at anything special. */
        size_t start = p->pos;
        int run_col = p_col(p);
        while (p->pos < p->len) {
            char d = p->s[p->pos];
            if (d == '"' || d == '\n' || d == '\\') break;
            p->pos++;
        }
        if (copy_template_text(p, &b, start, p->pos, p->line, run_col) < 0) {
            free(b.d);
            return WSG_E_CONFIG_SYNTAX;
        }
    }
    if (!ws_utf8_valid((const uint8_t *)b.d, b.n)) {
        free(b.d);
        return fail_at(p, line, col, "string is not valid UTF-8");
    }
    *out = b.d;
    *out_len = b.n;
    return 0;
}

/* Parse <<ID or <<-ID ... ID at the cursor. Backslashes are literal in a
 * heredoc, as in HCL; <<- strips the smallest indentation of its lines. */
static int parse_heredoc(tfv_parser *p, char **out, size_t *out_len) {
    int line = p->line, col = p_col(p);
    p->pos += 2;
    bool strip = false;
    if (peek(p) == '-') {
        strip = true;
        p->pos++;
    }
    size_t mstart = p->pos;
    if (!is_ident_start(peek(p)))
        return fail_at(p, p->line, p_col(p), "expected a heredoc marker name after '<<'");
    while (is_ident_char(peek(p))) p->pos++;
    size_t mlen = p->pos - mstart;
    const char *marker = p->s + mstart;
    if (peek(p) == '\r') p->pos++;
    if (peek(p) != '\n')
        return fail_at(p, p->line, p_col(p), "a heredoc marker must be followed by a newline");
    advance(p);

    /* Offsets of each content line [start, end) where end includes '\n'. */
    size_t *starts = NULL, *ends = NULL, nlines = 0, cap = 0;
    int first_line = p->line;
    for (;;) {
        if (p->pos >= p->len) {
            free(starts);
            free(ends);
            return fail_at(p, line, col, "unterminated heredoc: missing closing '%.*s'",
                           (int)(mlen > 40 ? 40 : mlen), marker);
        }
        size_t ls = p->pos, le = ls;
        while (le < p->len && p->s[le] != '\n') le++;
        size_t a = ls, z = le;
        while (a < z && (p->s[a] == ' ' || p->s[a] == '\t')) a++;
        while (z > a && (p->s[z - 1] == ' ' || p->s[z - 1] == '\t' || p->s[z - 1] == '\r')) z--;
        if (z - a == mlen && memcmp(p->s + a, marker, mlen) == 0) {
            p->pos = le; /* the newline after the marker ends the attribute */
            break;
        }
        if (nlines == cap) {
            cap = cap ? cap * 2 : 8;
            starts = xrealloc(starts, cap * sizeof *starts);
            ends = xrealloc(ends, cap * sizeof *ends);
        }
        starts[nlines] = ls;
        ends[nlines] = le < p->len ? le + 1 : le;
        nlines++;
        p->pos = ls;
        while (p->pos < ends[nlines - 1]) advance(p);
    }

    size_t indent = 0;
    if (strip) {
        indent = (size_t)-1;
        for (size_t i = 0; i < nlines; i++) {
            size_t k = starts[i];
            while (k < ends[i] && (p->s[k] == ' ' || p->s[k] == '\t')) k++;
            bool blank = k >= ends[i] || p->s[k] == '\n' || p->s[k] == '\r';
            if (!blank && k - starts[i] < indent) indent = k - starts[i];
        }
        if (indent == (size_t)-1) indent = 0;
    }
    bytebuf b = {0};
    bytebuf_put(&b, "", 0);
    for (size_t i = 0; i < nlines; i++) {
        size_t k = starts[i], skipped = 0;
        while (skipped < indent && k < ends[i] && (p->s[k] == ' ' || p->s[k] == '\t')) {
            k++;
            skipped++;
        }
        if (copy_template_text(p, &b, k, ends[i], first_line + (int)i, (int)(k - starts[i]) + 1) <
            0) {
            free(b.d);
            free(starts);
            free(ends);
            return WSG_E_CONFIG_SYNTAX;
        }
    }
    free(starts);
    free(ends);
    if (!ws_utf8_valid((const uint8_t *)b.d, b.n)) {
        free(b.d);
        return fail_at(p, line, col, "heredoc is not valid UTF-8");
    }
    *out = b.d;
    *out_len = b.n;
    return 0;
}

static int parse_number(tfv_parser *p, tfv_value *v) {
    size_t start = p->pos;
    bool whole = true;
    if (peek(p) == '-') p->pos++;
    if (!is_digit(peek(p))) {
        p->pos = start;
        return fail_at(p, v->line, v->column, "expected a number after '-'");
    }
    while (is_digit(peek(p))) p->pos++;
    if (peek(p) == '.') {
        p->pos++;
        if (!is_digit(peek(p)))
            return fail_at(p, v->line, v->column, "invalid number: expected digits after '.'");
        while (is_digit(peek(p))) p->pos++;
        whole = false;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        p->pos++;
        if (peek(p) == '+' || peek(p) == '-') p->pos++;
        if (!is_digit(peek(p)))
            return fail_at(p, v->line, v->column,
                           "invalid number: expected digits in the exponent");
        while (is_digit(peek(p))) p->pos++;
        whole = false;
    }
    if (is_ident_char(peek(p)) || peek(p) == '.')
        return fail_at(p, v->line, v->column, "invalid number");
    size_t n = p->pos - start;
    char tmp[320];
    if (n >= sizeof tmp) return fail_at(p, v->line, v->column, "number literal is too long");
    memcpy(tmp, p->s + start, n);
    tmp[n] = '\0';
    errno = 0;
    double d = strtod(tmp, NULL);
    bool underflow = errno == ERANGE && d == 0.0;
    if (!isfinite(d)) return fail_at(p, v->line, v->column, "number is out of range");
    v->number = d;
    if (whole) {
        errno = 0;
        long long ll = strtoll(tmp, NULL, 10);
        if (errno == 0) {
            v->is_integer = true;
            v->integer = ll;
        }
    } else if (!underflow && d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
               d == (double)(int64_t)d) {
        /* The range test comes first: converting an out-of-range double to
         * an integer is undefined. */
        v->is_integer = true;
        v->integer = (int64_t)d;
    }
    return 0;
}

static tfv_value *parse_value(tfv_parser *p);

static tfv_value *parse_list(tfv_parser *p, tfv_value *v) {
    p->pos++;
    for (;;) {
        if (skip_space(p, true) < 0) goto fail;
        if (p->pos >= p->len) {
            fail_at(p, v->line, v->column, "unterminated list: missing ']'");
            goto fail;
        }
        if (peek(p) == ']') break;
        tfv_value *item = parse_value(p);
        if (!item) goto fail;
        push_item(v, item, NULL);
        if (skip_space(p, true) < 0) goto fail;
        if (p->pos >= p->len) {
            fail_at(p, v->line, v->column, "unterminated list: missing ']'");
            goto fail;
        }
        if (peek(p) == ',') {
            p->pos++;
            continue;
        }
        if (peek(p) == ']') break;
        char d[16];
        fail_at(p, p->line, p_col(p), "expected ',' or ']' after a list element, found %s",
                describe(p, d, sizeof d));
        goto fail;
    }
    p->pos++;
    return v;
fail:
    tfv_value_free(v);
    return NULL;
}

static tfv_value *parse_map(tfv_parser *p, tfv_value *v) {
    /* Keys seen, for duplicates: a scan of the earlier keys made a map of
     * n keys cost n^2 / 2 comparisons (a 16 MiB file: hours). */
    strmap seen;
    strmap_init_borrowed(&seen);
    p->pos++;
    for (;;) {
        if (skip_space(p, true) < 0) goto fail;
        if (p->pos >= p->len) {
            fail_at(p, v->line, v->column, "unterminated map: missing '}'");
            goto fail;
        }
        if (peek(p) == '}') break;
        int kline = p->line, kcol = p_col(p);
        char *key;
        if (peek(p) == '"') {
            size_t klen;
            if (parse_string(p, &key, &klen) < 0) goto fail;
        } else if (is_ident_start(peek(p))) {
            size_t ks = p->pos;
            while (is_ident_char(peek(p))) p->pos++;
            key = xstrndup(p->s + ks, p->pos - ks);
        } else {
            char d[16];
            fail_at(p, kline, kcol, "expected a map key (a name or a quoted string), found %s",
                    describe(p, d, sizeof d));
            goto fail;
        }
        if (strmap_get(&seen, key)) {
            fail_at(p, kline, kcol, "duplicate map key \"%.60s\"", key);
            free(key);
            goto fail;
        }
        if (skip_space(p, false) < 0) {
            free(key);
            goto fail;
        }
        if (peek(p) != '=' && peek(p) != ':') {
            char d[16];
            fail_at(p, p->line, p_col(p), "expected '=' or ':' after map key, found %s",
                    describe(p, d, sizeof d));
            free(key);
            goto fail;
        }
        p->pos++;
        if (skip_space(p, false) < 0) {
            free(key);
            goto fail;
        }
        tfv_value *item = parse_value(p);
        if (!item) {
            free(key);
            goto fail;
        }
        push_item(v, item, key);
        strmap_put(&seen, key, item, NULL); /* key is v's now, as long as v */
        if (skip_space(p, false) < 0) goto fail;
        if (p->pos >= p->len) {
            fail_at(p, v->line, v->column, "unterminated map: missing '}'");
            goto fail;
        }
        if (peek(p) == '}') break;
        if (peek(p) == ',' || peek(p) == '\n') {
            advance(p);
            continue;
        }
        char d[16];
        fail_at(p, p->line, p_col(p), "expected ',', a newline or '}' after a map entry, found %s",
                describe(p, d, sizeof d));
        goto fail;
    }
    p->pos++;
    strmap_free(&seen);
    return v;
fail:
    strmap_free(&seen);
    tfv_value_free(v);
    return NULL;
}

/* Parse one value at the cursor (no leading blanks). NULL on error. */
static tfv_value *parse_value(tfv_parser *p) {
    int line = p->line, col = p_col(p);
    int c = peek(p);
    if (c == '"' || (c == '<' && peek_at(p, 1) == '<')) {
        char *s;
        size_t n;
        int rc = c == '"' ? parse_string(p, &s, &n) : parse_heredoc(p, &s, &n);
        if (rc < 0) return NULL;
        tfv_value *v = value_new(TFV_STRING, line, col);
        v->string = s;
        v->string_len = n;
        return v;
    }
    if (c == '[' || c == '{') {
        if (p->depth >= TFV_MAX_DEPTH) {
            fail_at(p, line, col, "lists and maps are nested too deeply (limit %d)", TFV_MAX_DEPTH);
            return NULL;
        }
        p->depth++;
        tfv_value *v = c == '[' ? parse_list(p, value_new(TFV_LIST, line, col))
                                : parse_map(p, value_new(TFV_MAP, line, col));
        p->depth--;
        return v;
    }
    if (c == '-' || is_digit(c)) {
        tfv_value *v = value_new(TFV_NUMBER, line, col);
        if (parse_number(p, v) < 0) {
            tfv_value_free(v);
            return NULL;
        }
        return v;
    }
    if (is_ident_start(c)) {
        size_t s = p->pos;
        while (is_ident_char(peek(p))) p->pos++;
        size_t n = p->pos - s;
        const char *w = p->s + s;
        if (n == 4 && memcmp(w, "true", 4) == 0) {
            tfv_value *v = value_new(TFV_BOOL, line, col);
            v->boolean = true;
            return v;
        }
        if (n == 5 && memcmp(w, "false", 5) == 0) return value_new(TFV_BOOL, line, col);
        if (n == 4 && memcmp(w, "null", 4) == 0) return value_new(TFV_NULL, line, col);
        fail_at(p, line, col,
                "unexpected name \"%.*s\": variables and function calls are not allowed in tfvars "
                "(quote strings)",
                (int)(n > 40 ? 40 : n), w);
        return NULL;
    }
    char d[16];
    fail_at(p, line, col, "expected a value, found %s%s", describe(p, d, sizeof d),
            c == '\'' ? " (strings take double quotes)" : "");
    return NULL;
}

static void parser_init(tfv_parser *p, const char *text, size_t len, wsg_error *err) {
    memset(p, 0, sizeof *p);
    p->s = text;
    p->len = text ? len : 0;
    p->line = 1;
    p->err = err;
    if (err) {
        err->code = 0;
        err->line = 0;
        err->column = 0;
        err->message[0] = '\0';
    }
    /* Editors on Windows may save a byte-order mark; it is not content. */
    if (p->len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        p->pos = 3;
        p->line_start = 3;
    }
}

/* ---------- documents ---------- */

void tfv_doc_free(tfv_doc *doc) {
    if (!doc) return;
    for (size_t i = 0; i < doc->count; i++) {
        free(doc->attrs[i].name);
        tfv_value_free(doc->attrs[i].value);
    }
    free(doc->attrs);
    free(doc);
}

const tfv_attr *tfv_doc_find(const tfv_doc *doc, const char *name) {
    for (size_t i = 0; doc && i < doc->count; i++)
        if (strcmp(doc->attrs[i].name, name) == 0) return &doc->attrs[i];
    return NULL;
}

tfv_doc *tfv_parse(const char *text, size_t len, wsg_error *err) {
    tfv_parser p;
    parser_init(&p, text, len, err);
    tfv_doc *doc = xcalloc(1, sizeof *doc);
    size_t cap = 0;
    /* Names set so far -> their attr's index + 1, for duplicates in one
     * lookup each (see parse_map). */
    strmap seen;
    strmap_init_borrowed(&seen);
    for (;;) {
        if (skip_space(&p, true) < 0) goto fail;
        if (p.pos >= p.len) break;
        int line = p.line, col = p_col(&p);
        if (!is_ident_start(peek(&p))) {
            char d[16];
            fail_at(&p, line, col, "expected a variable name, found %s", describe(&p, d, sizeof d));
            goto fail;
        }
        size_t ns = p.pos;
        while (is_ident_char(peek(&p))) p.pos++;
        size_t nlen = p.pos - ns;
        char *name = xstrndup(p.s + ns, nlen);
        uintptr_t first = (uintptr_t)strmap_get(&seen, name);
        free(name);
        if (first) {
            fail_at(&p, line, col, "duplicate variable \"%.*s\" (first set on line %d)",
                    (int)(nlen > 60 ? 60 : nlen), p.s + ns, doc->attrs[first - 1].line);
            goto fail;
        }
        if (skip_space(&p, false) < 0) goto fail;
        if (peek(&p) == '{' || peek(&p) == '"') {
            fail_at(&p, line, col, "blocks are not allowed in a tfvars file");
            goto fail;
        }
        if (peek(&p) != '=') {
            char d[16];
            fail_at(&p, p.line, p_col(&p), "expected '=' after \"%.*s\", found %s",
                    (int)(nlen > 60 ? 60 : nlen), p.s + ns, describe(&p, d, sizeof d));
            goto fail;
        }
        p.pos++;
        if (skip_space(&p, false) < 0) goto fail;
        tfv_value *v = parse_value(&p);
        if (!v) goto fail;
        if (doc->count == cap) {
            cap = cap ? cap * 2 : 16;
            doc->attrs = xrealloc(doc->attrs, cap * sizeof *doc->attrs);
        }
        tfv_attr *a = &doc->attrs[doc->count++];
        a->name = xstrndup(p.s + ns, nlen);
        /* Keyed by the name's own string, which does not move when attrs
         * is reallocated. */
        strmap_put(&seen, a->name, (void *)(uintptr_t)doc->count, NULL);
        a->line = line;
        a->column = col;
        a->value = v;
        if (skip_space(&p, false) < 0) goto fail;
        if (p.pos < p.len && peek(&p) != '\n') {
            char d[16];
            fail_at(&p, p.line, p_col(&p), "expected a newline after the value of \"%s\", found %s",
                    a->name, describe(&p, d, sizeof d));
            goto fail;
        }
    }
    strmap_free(&seen);
    return doc;
fail:
    strmap_free(&seen);
    tfv_doc_free(doc);
    return NULL;
}

tfv_value *tfv_parse_value(const char *text, size_t len, wsg_error *err) {
    tfv_parser p;
    parser_init(&p, text, len, err);
    if (skip_space(&p, true) < 0) return NULL;
    tfv_value *v = parse_value(&p);
    if (!v) return NULL;
    if (skip_space(&p, true) < 0 || p.pos < p.len) {
        if (p.pos < p.len) {
            char d[16];
            fail_at(&p, p.line, p_col(&p), "unexpected %s after the value",
                    describe(&p, d, sizeof d));
        }
        tfv_value_free(v);
        return NULL;
    }
    return v;
}
