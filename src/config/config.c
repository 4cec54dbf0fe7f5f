#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/alloc.h"
#include "config/config_table.h"
#include "config/suggest.h"
#include "config/tfvars.h"
#include "engine/redis_url.h"
#include "ws/utf8.h"

/* A config file larger than this is surely a mistake (a log, a binary);
 * refusing it keeps a typo in -c from eating memory. */
#define CONFIG_MAX_FILE_BYTES (16u * 1024u * 1024u)

static void free_field(config *cfg, const config_var *v) {
    switch (v->type) {
    case CV_STRING:
        free(*str_field(cfg, v));
        *str_field(cfg, v) = NULL;
        break;
    case CV_STRLIST: {
        char **list = *list_field(cfg, v);
        for (size_t i = 0; list && list[i]; i++) free(list[i]);
        free(list);
        *list_field(cfg, v) = NULL;
        *count_field(cfg, v) = 0;
        break;
    }
    case CV_STRMAP: {
        config_kv *kv = *map_field(cfg, v);
        for (size_t i = 0; i < *count_field(cfg, v); i++) {
            free(kv[i].key);
            free(kv[i].value);
        }
        free(kv);
        *map_field(cfg, v) = NULL;
        *count_field(cfg, v) = 0;
        break;
    }
    case CV_OBJMAP: {
        char *arr = objmap_get(cfg, v);
        for (size_t i = 0; arr && i < *count_field(cfg, v); i++)
            free(entry_key(v, arr + i * v->elem_size));
        free(arr);
        objmap_set(cfg, v, NULL);
        *count_field(cfg, v) = 0;
        break;
    }
    case CV_INT:
    case CV_BOOL: break;
    }
}

/* Store s as v's string value, and its index among v->one_of where v has
 * an enum field (s has passed check_string). */
_Static_assert(sizeof(config_mode) == sizeof(int) && sizeof(config_store_sync) == sizeof(int) &&
                   sizeof(config_auth_mode) == sizeof(int) &&
                   sizeof(config_logging_level) == sizeof(int),
               "enum fields are written as int");

static void set_string(config *cfg, const config_var *v, const char *s) {
    free(*str_field(cfg, v));
    *str_field(cfg, v) = xstrdup(s);
    if (v->enum_offset) {
        int i = 0;
        while (v->one_of[i] && strcmp(v->one_of[i], s) != 0) i++;
        *(int *)((char *)cfg + v->enum_offset) = i;
    }
}

static void set_default(config *cfg, const config_var *v) {
    free_field(cfg, v);
    switch (v->type) {
    case CV_STRING: set_string(cfg, v, v->def_str); break;
    case CV_INT: *int_field(cfg, v) = v->def_int; break;
    case CV_BOOL: *bool_field(cfg, v) = v->def_bool; break;
    case CV_STRLIST: {
        size_t n = 0;
        while (v->def_list && v->def_list[n]) n++;
        char **list = xcalloc(n + 1, sizeof *list);
        for (size_t i = 0; i < n; i++) list[i] = xstrdup(v->def_list[i]);
        *list_field(cfg, v) = list;
        *count_field(cfg, v) = n;
        break;
    }
    case CV_STRMAP: break; /* defaults to {} */
    case CV_OBJMAP: break; /* defaults to {} */
    }
}

void config_init_defaults(config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < config_nvars; i++) set_default(cfg, &config_vars[i]);
}

void config_free(config *cfg) {
    if (!cfg) return;
    for (size_t i = 0; i < config_nvars; i++) free_field(cfg, &config_vars[i]);
}

/* ---------- errors ---------- */

/* A rule across variables is broken: the message names them. */
#define fail(err, ...) wsg_error_set_at((err), WSG_E_CONFIG_RULE, 0, 0, __VA_ARGS__)

/* "origin:line: " for files, "origin: " where there are no lines. */
static void where(char *buf, size_t size, const char *origin, int line) {
    if (line > 0) snprintf(buf, size, "%s:%d: ", origin, line);
    else snprintf(buf, size, "%s: ", origin);
}

/* No variable is named name[0..len): say so, with the name it most likely
 * meant when one is close (config/suggest.c). */
static int fail_unknown(wsg_error *err, const char *origin, int line, const char *name,
                        size_t len) {
    char at[300];
    where(at, sizeof at, origin, line);
    const char *meant = config_suggest_var(name, len);
    return wsg_error_set_at(err, WSG_E_CONFIG_UNKNOWN, line, 0, "%sunknown variable \"%.*s\"%s%s%s",
                            at, (int)(len > 100 ? 100 : len), name,
                            meant ? " (did you mean \"" : "", meant ? meant : "",
                            meant ? "\"?)" : "");
}

static int fail_var(wsg_error *err, const char *origin, int line, const config_var *v,
                    const char *rule) {
    char w[300];
    where(w, sizeof w, origin, line);
    return wsg_error_set_at(err, WSG_E_CONFIG_VALUE, line, 0, "%svariable \"%s\": %s", w, v->name,
                            rule);
}

/* ---------- validation ---------- */

static bool in_charset(const char *set, unsigned char c) {
    for (size_t i = 0; set[i]; i++) {
        if (set[i + 1] == '-' && set[i + 2]) {
            if (c >= (unsigned char)set[i] && c <= (unsigned char)set[i + 2]) return true;
            i += 2;
        } else if ((unsigned char)set[i] == c) {
            return true;
        }
    }
    return false;
}

/* Return the rule text a string breaks for variable v, or NULL. */
static const char *check_string(const config_var *v, const char *s) {
    size_t n = strlen(s);
    if (!ws_utf8_valid((const uint8_t *)s, n)) return "must be valid UTF-8";
    if ((v->nonempty || v->charset) && n == 0) return v->rule;
    if (v->max_len && n > v->max_len) return v->rule;
    if (v->charset)
        for (size_t i = 0; i < n; i++)
            if (!in_charset(v->charset, (unsigned char)s[i])) return v->rule;
    if (v->one_of) {
        size_t i = 0;
        while (v->one_of[i] && strcmp(v->one_of[i], s) != 0) i++;
        if (!v->one_of[i]) return v->rule;
    }
    if (v->check && !v->check(s)) return v->rule;
    return NULL;
}

static const char *check_int(const config_var *v, int64_t x) {
    if (v->ranged && (x < v->min || x > v->max)) return v->rule;
    if (v->int_set) {
        size_t i = 0;
        while (i < v->int_set_len && v->int_set[i] != x) i++;
        if (i == v->int_set_len) return v->rule;
    }
    return NULL;
}

static const char *check_item(const config_var *v, const char *s) {
    size_t n = strlen(s);
    if (!ws_utf8_valid((const uint8_t *)s, n)) return "must be valid UTF-8";
    if ((v->nonempty && n == 0) || (v->max_len && n > v->max_len)) return v->item_rule;
    if (v->check && !v->check(s)) return v->item_rule; /* lists and maps: each item */
    return NULL;
}

static const char *check_key(const config_var *v, const char *k) {
    size_t n = strlen(k);
    if (!ws_utf8_valid((const uint8_t *)k, n)) return "must be valid UTF-8";
    if (n == 0 || (v->max_key_len && n > v->max_key_len)) return v->item_rule;
    return NULL;
}

/* Terraform converts a string holding a number to a number variable; so do
 * we. Returns true with *out set when s is a whole number literal. */
static bool string_to_int(const char *s, size_t len, int64_t *out) {
    tfv_value *n = tfv_parse_value(s, len, NULL);
    bool ok = n && n->type == TFV_NUMBER && n->is_integer;
    if (ok) *out = n->integer;
    tfv_value_free(n);
    return ok;
}

/* A number variable's value: a whole number, or a string holding one. */
static bool value_to_int(const tfv_value *val, int64_t *out) {
    if (val->type == TFV_NUMBER && val->is_integer) {
        *out = val->integer;
        return true;
    }
    return val->type == TFV_STRING && string_to_int(val->string, val->string_len, out);
}

/* Copy user text (a map key or member name) into buf for a one-line
 * message: at most 64 bytes, cut at a UTF-8 boundary, control bytes shown
 * as '?'. */
static const char *printable(char *buf, size_t size, const char *s) {
    size_t n = 0, max = size - 1 < 64 ? size - 1 : 64;
    for (; s[n] && n < max; n++) {
        unsigned char c = (unsigned char)s[n];
        buf[n] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (s[n]) /* cut: back off a partial UTF-8 sequence */
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--;
    buf[n] = '\0';
    return buf;
}

/* "burst_limit, rate_limit": the members of a CV_OBJMAP entry. */
static void member_list(const config_var *v, char *buf, size_t size) {
    size_t at = 0;
    buf[0] = '\0';
    for (const cv_member *m = v->members; m->name && at < size; m++) {
        int r = snprintf(buf + at, size - at, "%s%s", m == v->members ? "" : ", ", m->name);
        if (r < 0) break;
        at += (size_t)r;
    }
}

/* Check one CV_OBJMAP entry as stored (key and member ranges). Returns NULL
 * or the message, written into msg. */
static const char *check_entry(const config_var *v, char *entry, char *msg, size_t size) {
    const char *k = entry_key(v, entry);
    const char *bad;
    if (!k) return v->item_rule;
    if ((bad = check_key(v, k))) return bad;
    for (const cv_member *m = v->members; m->name; m++) {
        int64_t x = *entry_member(entry, m);
        if (x < m->min || x > m->max) {
            char kb[72];
            snprintf(msg, size, "%s \"%s\": %s", v->key_noun, printable(kb, sizeof kb, k), m->rule);
            return msg;
        }
    }
    return NULL;
}

/* Convert and check one CV_OBJMAP entry `it` named `key` into entry (whose
 * key is not set). Returns NULL, or the message with *bad_line set to the
 * line of the offending value. */
static const char *parse_entry(const config_var *v, const char *key, const tfv_value *it,
                               char *entry, char *msg, size_t size, int *bad_line) {
    char kb[72], mb[72], list[200];
    printable(kb, sizeof kb, key);
    member_list(v, list, sizeof list);
    *bad_line = it->line;
    if (it->type != TFV_MAP) {
        snprintf(msg, size, "%s \"%s\": must be an object with %s", v->key_noun, kb, list);
        return msg;
    }
    for (size_t j = 0; j < it->count; j++) {
        const cv_member *m = v->members;
        while (m->name && strcmp(m->name, it->keys[j]) != 0) m++;
        if (!m->name) {
            *bad_line = it->items[j]->line ? it->items[j]->line : it->line;
            snprintf(msg, size, "%s \"%s\": unknown member \"%s\" (expected %s)", v->key_noun, kb,
                     printable(mb, sizeof mb, it->keys[j]), list);
            return msg;
        }
    }
    for (const cv_member *m = v->members; m->name; m++) {
        size_t j = 0;
        while (j < it->count && strcmp(it->keys[j], m->name) != 0) j++;
        if (j == it->count) {
            *bad_line = it->line;
            snprintf(msg, size, "%s \"%s\": missing member \"%s\" (expected %s)", v->key_noun, kb,
                     m->name, list);
            return msg;
        }
        const tfv_value *mv = it->items[j];
        if (mv->line) *bad_line = mv->line;
        int64_t x;
        if (!value_to_int(mv, &x)) {
            snprintf(msg, size, "%s \"%s\": member \"%s\" must be a whole number", v->key_noun, kb,
                     m->name);
            return msg;
        }
        if (x < m->min || x > m->max) {
            snprintf(msg, size, "%s \"%s\": %s", v->key_noun, kb, m->rule);
            return msg;
        }
        *entry_member(entry, m) = x;
    }
    return NULL;
}

/* The line to report for an element found at item_line of a value given at
 * `line`: text from the environment or --set (line 0) has no lines, even
 * when its value spans several. */
static int item_line(int item, int line) { return line == 0 ? 0 : item ? item : line; }

/* ---------- applying one value ---------- */

/* Check that val is a `type` (a list or a map) of strings that v's rules
 * accept, keys included for a map. Returns 0, or fail_var's code with err
 * set (`what` is the rule a wrong type breaks). */
static int check_strings(const config_var *v, const tfv_value *val, tfv_type type, const char *what,
                         const char *origin, int line, wsg_error *err) {
    const char *bad;
    if (val->type != type) return fail_var(err, origin, line, v, what);
    for (size_t i = 0; i < val->count; i++) {
        const tfv_value *it = val->items[i];
        int l = item_line(it->line, line);
        if (it->type != TFV_STRING) return fail_var(err, origin, l, v, what);
        if ((type == TFV_MAP && (bad = check_key(v, val->keys[i]))) ||
            (bad = check_item(v, it->string)))
            return fail_var(err, origin, l, v, bad);
    }
    if (v->max_items && val->count > v->max_items) return fail_var(err, origin, line, v, v->rule);
    return 0;
}

/* apply_value for a list of strings. */
static int apply_list(config *cfg, const config_var *v, const tfv_value *val, const char *origin,
                      int line, wsg_error *err) {
    int rc = check_strings(v, val, TFV_LIST, "must be a list of strings", origin, line, err);
    if (rc != 0) return rc;
    char **list = xcalloc(val->count + 1, sizeof *list);
    for (size_t i = 0; i < val->count; i++) list[i] = xstrdup(val->items[i]->string);
    free_field(cfg, v);
    *list_field(cfg, v) = list;
    *count_field(cfg, v) = val->count;
    return 0;
}

/* apply_value for a map of strings. */
static int apply_map(config *cfg, const config_var *v, const tfv_value *val, const char *origin,
                     int line, wsg_error *err) {
    int rc = check_strings(v, val, TFV_MAP, "must be a map of strings", origin, line, err);
    if (rc != 0) return rc;
    config_kv *kv = val->count ? xcalloc(val->count, sizeof *kv) : NULL;
    for (size_t i = 0; i < val->count; i++) {
        kv[i].key = xstrdup(val->keys[i]);
        kv[i].value = xstrdup(val->items[i]->string);
    }
    free_field(cfg, v);
    *map_field(cfg, v) = kv;
    *count_field(cfg, v) = val->count;
    return 0;
}

/* apply_value for a map of objects (each entry parsed by the variable's
 * member table). */
static int apply_objmap(config *cfg, const config_var *v, const tfv_value *val, const char *origin,
                        int line, wsg_error *err) {
    char list[200], msg[400];
    if (val->type != TFV_MAP) {
        member_list(v, list, sizeof list);
        snprintf(msg, sizeof msg, "must be a map of objects with %s", list);
        return fail_var(err, origin, line, v, msg);
    }
    char *arr = val->count ? xcalloc(val->count, v->elem_size) : NULL;
    for (size_t i = 0; i < val->count; i++) {
        const tfv_value *it = val->items[i];
        int l = 0;
        const char *bad = check_key(v, val->keys[i]);
        if (!bad)
            bad = parse_entry(v, val->keys[i], it, arr + i * v->elem_size, msg, sizeof msg, &l);
        if (bad) {
            free(arr);
            return fail_var(err, origin, item_line(l ? l : it->line, line), v, bad);
        }
    }
    if (v->max_items && val->count > v->max_items) {
        free(arr);
        return fail_var(err, origin, line, v, v->rule);
    }
    for (size_t i = 0; i < val->count; i++)
        entry_set_key(v, arr + i * v->elem_size, xstrdup(val->keys[i]));
    free_field(cfg, v);
    objmap_set(cfg, v, arr);
    *count_field(cfg, v) = val->count;
    return 0;
}

/* Convert, validate and store val into variable v. *cfg is untouched on
 * failure. line 0 means the origin has no lines (environment, --set). */
/* The type rule of a number variable: its unit is in its name, which "30s"
 * or "64KiB" repeat in a way no number parser takes. */
static const char *int_type_rule(const config_var *v) {
    static const struct {
        const char *suffix, *rule;
    } units[] = {
        {"_per_s", "must be a whole number (a count per second, no unit suffix)"},
        {"_ms", "must be a whole number of milliseconds (no unit suffix)"},
        {"_s", "must be a whole number of seconds (no unit suffix)"},
        {"_days", "must be a whole number of days (no unit suffix)"},
        {"_bytes", "must be a whole number of bytes (no unit suffix such as KiB)"},
    };
    size_t n = strlen(v->name);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        size_t k = strlen(units[i].suffix);
        if (n > k && strcmp(v->name + n - k, units[i].suffix) == 0) return units[i].rule;
    }
    return "must be a whole number";
}

static int apply_value(config *cfg, const config_var *v, const tfv_value *val, const char *origin,
                       int line, wsg_error *err) {
    const char *bad;
    if (val->type == TFV_NULL) {
        /* null means "not set": the default applies. */
        set_default(cfg, v);
        return 0;
    }
    switch (v->type) {
    case CV_STRING:
        if (val->type != TFV_STRING) return fail_var(err, origin, line, v, "must be a string");
        if ((bad = check_string(v, val->string))) return fail_var(err, origin, line, v, bad);
        set_string(cfg, v, val->string);
        return 0;
    case CV_INT: {
        int64_t x;
        if (!value_to_int(val, &x)) return fail_var(err, origin, line, v, int_type_rule(v));
        if ((bad = check_int(v, x))) return fail_var(err, origin, line, v, bad);
        *int_field(cfg, v) = x;
        return 0;
    }
    case CV_BOOL:
        if (val->type == TFV_BOOL) *bool_field(cfg, v) = val->boolean;
        else if (val->type == TFV_STRING && strcmp(val->string, "true") == 0)
            *bool_field(cfg, v) = true;
        else if (val->type == TFV_STRING && strcmp(val->string, "false") == 0)
            *bool_field(cfg, v) = false;
        else return fail_var(err, origin, line, v, "must be true or false");
        return 0;
    case CV_STRLIST: return apply_list(cfg, v, val, origin, line, err);
    case CV_STRMAP: return apply_map(cfg, v, val, origin, line, err);
    case CV_OBJMAP: return apply_objmap(cfg, v, val, origin, line, err);
    }
    return 0;
}

/* Apply text from the environment or the command line. A string variable
 * takes the text verbatim unless it is a quoted tfvars string (so
 * `stage_name=prod` and `stage_name=2024` both mean what they say); other
 * types parse it as a tfvars value and fall back to the raw text, which then
 * fails the type check with a clear message. */
static int apply_text(config *cfg, const config_var *v, const char *text, const char *origin,
                      wsg_error *err) {
    size_t n = strlen(text);
    tfv_value *val = NULL;
    if (v->type == CV_STRING) {
        const char *t = text;
        while (*t == ' ' || *t == '\t') t++;
        if (*t == '"' || (t[0] == '<' && t[1] == '<')) {
            val = tfv_parse_value(text, n, NULL);
            if (val && val->type != TFV_STRING) {
                tfv_value_free(val);
                val = NULL;
            }
        }
    } else {
        val = tfv_parse_value(text, n, NULL);
    }
    if (!val) val = tfv_string_new(text, n);
    int rc = apply_value(cfg, v, val, origin, 0, err);
    tfv_value_free(val);
    return rc;
}

/* ---------- sources ---------- */

/* A syntax error of the file `origin`, at the parser's line and column. */
static int fail_syntax(wsg_error *err, const char *origin, const wsg_error *perr) {
    wsg_error_set_at(err, WSG_E_CONFIG_SYNTAX, perr->line, 0, "%s:%d:%d: %.400s", origin,
                     perr->line, perr->column, perr->message);
    if (err) err->column = perr->column;
    return WSG_E_CONFIG_SYNTAX;
}

/* Terraform's other variable file, terraform.tfvars.json: one JSON object
 * of name: value. JSON's objects, arrays, strings, numbers and literals are
 * tfvars values too, so the tfvars value parser reads it, with positions. */
static int load_json_text(config *cfg, const char *origin, const char *text, size_t len,
                          wsg_error *err) {
    wsg_error perr;
    tfv_value *doc = tfv_parse_value(text, len, &perr);
    if (!doc) return fail_syntax(err, origin, &perr);
    int rc = 0;
    if (doc->type != TFV_MAP) {
        rc = wsg_error_set_at(err, WSG_E_CONFIG_SYNTAX, doc->line, 0,
                              "%s:%d:%d: a .json variable file holds one JSON object of variables "
                              "({\"name\": value, ...})",
                              origin, doc->line, doc->column);
        if (err) err->column = doc->column;
    }
    for (size_t i = 0; i < doc->count && rc == 0 && doc->type == TFV_MAP; i++) {
        const char *name = doc->keys[i];
        const config_var *v = config_find_var(name, strlen(name));
        if (!v) rc = fail_unknown(err, origin, doc->items[i]->line, name, strlen(name));
        else rc = apply_value(cfg, v, doc->items[i], origin, doc->items[i]->line, err);
    }
    tfv_value_free(doc);
    return rc;
}

int config_load_text(config *cfg, const char *origin, const char *text, size_t len,
                     wsg_error *err) {
    size_t olen = strlen(origin);
    if (olen >= 5 && strcmp(origin + olen - 5, ".json") == 0)
        return load_json_text(cfg, origin, text, len, err);
    wsg_error perr;
    tfv_doc *doc = tfv_parse(text, len, &perr);
    if (!doc) return fail_syntax(err, origin, &perr);
    int rc = 0;
    for (size_t i = 0; i < doc->count && rc == 0; i++) {
        const tfv_attr *a = &doc->attrs[i];
        const config_var *v = config_find_var(a->name, strlen(a->name));
        if (!v) rc = fail_unknown(err, origin, a->line, a->name, strlen(a->name));
        else rc = apply_value(cfg, v, a->value, origin, a->line, err);
    }
    tfv_doc_free(doc);
    return rc;
}

int config_load_file(config *cfg, const char *path, wsg_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return wsg_error_set_at(err, WSG_E_IO, 0, 0, "cannot read %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len == cap) {
            if (cap >= CONFIG_MAX_FILE_BYTES) {
                fclose(f);
                free(buf);
                return wsg_error_set_at(err, WSG_E_IO, 0, 0,
                                        "cannot read %s: file is larger than %u bytes", path,
                                        CONFIG_MAX_FILE_BYTES);
            }
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        int e = errno;
        fclose(f);
        free(buf);
        return wsg_error_set_at(err, WSG_E_IO, 0, 0, "cannot read %s: %s", path,
                                strerror(e ? e : EIO));
    }
    fclose(f);
    int rc = config_load_text(cfg, path, buf, len, err);
    free(buf);
    return rc;
}

int config_load_env(config *cfg, char **envp, wsg_error *err) {
    static const char prefix[] = "TF_VAR_";
    for (size_t i = 0; envp && envp[i]; i++) {
        const char *e = envp[i];
        if (strncmp(e, prefix, sizeof prefix - 1) != 0) continue;
        const char *name = e + sizeof prefix - 1;
        const char *eq = strchr(name, '=');
        if (!eq) continue;
        const config_var *v = config_find_var(name, (size_t)(eq - name));
        if (!v) continue; /* Terraform ignores TF_VAR_ for undeclared variables */
        char origin[200];
        snprintf(origin, sizeof origin, "TF_VAR_%s", v->name);
        int rc = apply_text(cfg, v, eq + 1, origin, err);
        if (rc < 0) return rc;
    }
    return 0;
}

int config_set_var(config *cfg, const char *origin, const char *name, const char *value,
                   wsg_error *err) {
    const config_var *v = config_find_var(name, strlen(name));
    if (!v) return fail_unknown(err, origin, 0, name, strlen(name));
    return apply_text(cfg, v, value, origin, err);
}

int config_set(config *cfg, const char *assignment, wsg_error *err) {
    const char *eq = strchr(assignment, '=');
    if (!eq)
        return wsg_error_set_at(err, WSG_E_CONFIG_SYNTAX, 0, 0,
                                "--set: expected name=value, got \"%.100s\"", assignment);
    const char *a = assignment, *z = eq;
    while (a < z && (*a == ' ' || *a == '\t')) a++;
    while (z > a && (z[-1] == ' ' || z[-1] == '\t')) z--;
    const config_var *v = config_find_var(a, (size_t)(z - a));
    if (!v) return fail_unknown(err, "--set", 0, a, (size_t)(z - a));
    return apply_text(cfg, v, eq + 1, "--set", err);
}

/* ---------- cross-variable rules ---------- */

/* Messages of these rules name the variables involved and never start with
 * `variable "`, which marks a single value's rule (the tfvars fuzzer relies
 * on that to tell the two apart). */

static bool is_production(const char *env) {
    return env && (strcasecmp(env, "prod") == 0 || strcasecmp(env, "production") == 0);
}

/* 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) and localhost. Anything else,
 * host names included, may be reachable from other machines. */
static bool is_loopback(const char *listen) {
    if (!listen) return false;
    if (strcasecmp(listen, "localhost") == 0) return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, listen, &a4) == 1) return ((const unsigned char *)&a4.s_addr)[0] == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, listen, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

static bool empty(const char *s) { return !s || !*s; }

static bool is_route_key(const config *c, const char *k) {
    if (strcmp(k, "$connect") == 0 || strcmp(k, "$disconnect") == 0 || strcmp(k, "$default") == 0)
        return true;
    for (size_t i = 0; i < c->custom_routes_count; i++)
        if (strcmp(c->custom_routes[i], k) == 0) return true;
    return false;
}

/* The route that an unknown route key most likely meant ("chats" for
 * "chat"), or NULL. */
static const char *suggest_route(const config *c, const char *key) {
    const char **names = xcalloc(c->custom_routes_count + 4, sizeof *names);
    size_t n = 0;
    names[n++] = "$connect";
    names[n++] = "$disconnect";
    names[n++] = "$default";
    for (size_t i = 0; i < c->custom_routes_count; i++) names[n++] = c->custom_routes[i];
    const char *meant = config_suggest_word(key, names);
    free(names);
    return meant;
}

/* route_integrations name routes that exist; two-way routes have an
 * integration; auth_mode "http" has a URL. */
static int check_integration_rules(const config *c, wsg_error *err) {
    for (size_t i = 0; i < c->route_integrations_count; i++)
        if (!is_route_key(c, c->route_integrations[i].key)) {
            const char *meant = suggest_route(c, c->route_integrations[i].key);
            return fail(err,
                        "route_integrations: \"%s\" is not a route (%s%s%suse $connect, "
                        "$disconnect, $default or one of custom_routes, or add it to "
                        "custom_routes)",
                        c->route_integrations[i].key, meant ? "did you mean \"" : "",
                        meant ? meant : "", meant ? "\"? " : "");
        }
    for (size_t i = 0; i < c->route_responses_count; i++) {
        const char *r = c->route_responses[i];
        bool found = false;
        for (size_t k = 0; k < c->route_integrations_count; k++)
            found |= strcmp(c->route_integrations[k].key, r) == 0;
        if (!found || strcmp(r, "$connect") == 0 || strcmp(r, "$disconnect") == 0)
            return fail(err,
                        "route_responses: \"%s\" must be a message route listed in "
                        "route_integrations",
                        r);
    }
    if (c->auth_mode_id == CONFIG_AUTH_HTTP && empty(c->authorizer_url))
        return fail(err, "auth_mode = \"http\" requires authorizer_url (the REQUEST authorizer)");
    return 0;
}

/* The rediss:// files: a node must not find out at its first connection
 * that a path is wrong. Whether the PEM inside is good is the TLS
 * library's to say, when the engine starts. */
static int check_redis_tls_rules(const config *c, wsg_error *err) {
    if (empty(c->redis_tls_cert_file) != empty(c->redis_tls_key_file))
        return fail(err,
                    "redis_tls_cert_file and redis_tls_key_file must be set together (%s is empty)",
                    empty(c->redis_tls_cert_file) ? "redis_tls_cert_file" : "redis_tls_key_file");
    const struct {
        const char *name, *path;
    } files[] = {{"redis_tls_ca_file", c->redis_tls_ca_file},
                 {"redis_tls_cert_file", c->redis_tls_cert_file},
                 {"redis_tls_key_file", c->redis_tls_key_file}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (!empty(files[i].path) && access(files[i].path, R_OK) != 0)
            return fail(err, "%s: cannot read %s: %s", files[i].name, files[i].path,
                        strerror(errno));
    return 0;
}

/* redis_url or redis_urls, not both; no server twice in redis_urls (the
 * shard ring places servers by "host:port/db"). Each URL was parsed by
 * its own rule already. */
static int check_redis_rules(const config *c, wsg_error *err) {
    if (!empty(c->redis_url) && c->redis_urls_count > 0)
        return fail(err, "set redis_url (one Redis server) or redis_urls (several, sharded), "
                         "not both");
    for (size_t i = 0; i < c->redis_urls_count; i++)
        for (size_t j = i + 1; j < c->redis_urls_count; j++) {
            redis_url a, b;
            char na[REDIS_URL_MAX_HOST + 32], nb[REDIS_URL_MAX_HOST + 32];
            if (redis_url_parse(c->redis_urls[i], strlen(c->redis_urls[i]), &a, NULL) < 0 ||
                redis_url_parse(c->redis_urls[j], strlen(c->redis_urls[j]), &b, NULL) < 0)
                continue;
            if (strcmp(redis_url_name(&a, na, sizeof na), redis_url_name(&b, nb, sizeof nb)) == 0)
                return fail(err, "redis_urls lists the Redis server %s twice", na);
        }
    if (c->engine_id == CONFIG_ENGINE_REDIS && empty(c->redis_url) && c->redis_urls_count == 0)
        return fail(err, "engine = \"redis\" requires redis_url or redis_urls");
    return check_redis_tls_rules(c, err);
}

static int check_cross_rules(const config *c, wsg_error *err) {
    if (c->auth_mode_id == CONFIG_AUTH_JWT) {
        bool hs = !c->jwt_algorithm || strcmp(c->jwt_algorithm, "HS256") == 0;
        if (hs && empty(c->jwt_secret))
            return fail(err, "auth_mode = \"jwt\" with jwt_algorithm = \"HS256\" requires "
                             "jwt_secret (the shared signing key)");
        if (!hs && empty(c->jwt_public_key_file))
            return fail(err,
                        "auth_mode = \"jwt\" with jwt_algorithm = \"%s\" requires "
                        "jwt_public_key_file (a PEM public key)",
                        c->jwt_algorithm);
    }
    int rc = check_integration_rules(c, err);
    if (rc < 0) return rc;
    if ((rc = check_redis_rules(c, err)) < 0) return rc;
    if (empty(c->tls_cert_file) != empty(c->tls_key_file))
        return fail(err, "tls_cert_file and tls_key_file must be set together (%s is empty)",
                    empty(c->tls_cert_file) ? "tls_cert_file" : "tls_key_file");
    if (is_production(c->environment)) {
        if (c->auth_mode_id == CONFIG_AUTH_DEMO && !c->allow_demo_auth_in_production)
            return fail(err,
                        "environment \"%s\" refuses the demo authorizer (any token starting "
                        "with valid_ is accepted); set auth_mode = \"jwt\" or "
                        "allow_demo_auth_in_production = true",
                        c->environment);
        if (empty(c->tls_cert_file) && !is_loopback(c->listen) && !c->allow_plaintext_in_production)
            return fail(err,
                        "environment \"%s\" refuses plain ws:// on the non-loopback listen "
                        "address \"%s\"; set tls_cert_file and tls_key_file, listen on "
                        "127.0.0.1, or allow_plaintext_in_production = true",
                        c->environment, c->listen);
    }
    return 0;
}

int config_validate(const config *cfg, wsg_error *err) {
    /* Fields may have been assigned directly by the CLI, so every single
     * value is checked again before the cross-variable rules. */
    config *c = (config *)cfg; /* read-only use of the accessors */
    char msg[400];
    for (size_t i = 0; i < config_nvars; i++) {
        const config_var *v = &config_vars[i];
        const char *bad = NULL;
        switch (v->type) {
        case CV_STRING:
            bad = *str_field(c, v) ? check_string(v, *str_field(c, v)) : "must be a string";
            break;
        case CV_INT: bad = check_int(v, *int_field(c, v)); break;
        case CV_BOOL: break;
        case CV_STRLIST: {
            size_t n = *count_field(c, v);
            char **list = *list_field(c, v);
            if (n && !list) bad = "must be a list of strings";
            for (size_t k = 0; !bad && k < n; k++) bad = check_item(v, list[k]);
            if (!bad && v->max_items && n > v->max_items) bad = v->rule;
            break;
        }
        case CV_STRMAP: {
            size_t n = *count_field(c, v);
            config_kv *kv = *map_field(c, v);
            if (n && !kv) bad = "must be a map of strings";
            for (size_t k = 0; !bad && k < n; k++)
                if (!(bad = check_key(v, kv[k].key))) bad = check_item(v, kv[k].value);
            if (!bad && v->max_items && n > v->max_items) bad = v->rule;
            break;
        }
        case CV_OBJMAP: {
            size_t n = *count_field(c, v);
            char *arr = objmap_get(c, v);
            if (n && !arr) bad = "must be a map of objects";
            for (size_t k = 0; !bad && k < n; k++)
                bad = check_entry(v, arr + k * v->elem_size, msg, sizeof msg);
            if (!bad && v->max_items && n > v->max_items) bad = v->rule;
            break;
        }
        }
        if (bad)
            return wsg_error_set_at(err, WSG_E_CONFIG_VALUE, 0, 0, "variable \"%s\": %s", v->name,
                                    bad);
    }
    return check_cross_rules(cfg, err);
}
