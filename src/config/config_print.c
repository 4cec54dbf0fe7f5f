/* Printing the configuration: the dump `check` shows (tfvars that load
 * back), the help text, the JSON of the management API, and the notes and
 * warnings of `check`. */
#include "config/config_table.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "config/suggest.h"

/* ---------- dump and help ---------- */

/* Write s as a tfvars quoted string that parses back to exactly s. */
static void put_quoted(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        case '$':
        case '%':
            /* A literal ${ or %{ must be doubled or it would read back as a
             * template sequence. */
            fputc(c, out);
            if (s[1] == '{') fputc(c, out);
            break;
        default:
            if (c < 0x20 || c == 0x7f) fprintf(out, "\\u%04x", c);
            else fputc(c, out);
        }
    }
    fputc('"', out);
}

/* Return a malloc'd copy of the URL s with the password of its userinfo
 * ("scheme://user:password@host...") replaced by stars, so that a dump can
 * be shown and still loads back (the stars are a valid password). */
static char *mask_url_password(const char *s) {
    const char *auth = strstr(s, "://");
    if (!auth) return xstrdup(s);
    auth += 3;
    size_t auth_len = strcspn(auth, "/");
    const char *at = memchr(auth, '@', auth_len);
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon || colon + 1 == at) return xstrdup(s);
    size_t head = (size_t)(colon + 1 - s);
    char *out = xmalloc(head + 8 + strlen(at) + 1);
    memcpy(out, s, head);
    memcpy(out + head, "********", 8);
    strcpy(out + head + 8, at);
    return out;
}

static void put_text(FILE *out, const config_var *v, const char *s) {
    if (!(v->flags & CV_URL_SECRET)) {
        put_quoted(out, s);
        return;
    }
    char *masked = mask_url_password(s);
    put_quoted(out, masked);
    free(masked);
}

static json_t *text_json(const config_var *v, const char *s) {
    char *masked = v->flags & CV_URL_SECRET ? mask_url_password(s) : NULL;
    json_t *j = json_string(masked ? masked : s);
    free(masked);
    /* Values are bytes; a string that is not UTF-8 is shown escaped. */
    return j ? j : json_string("(not UTF-8)");
}

/* Write entry i of v's map, of strings or of objects, as `key = value`. */
static void put_map_entry(FILE *out, config *cfg, const config_var *v, size_t i) {
    if (v->type == CV_STRMAP) {
        const config_kv *kv = &(*map_field(cfg, v))[i];
        put_quoted(out, kv->key);
        fputs(" = ", out);
        put_quoted(out, kv->value);
        return;
    }
    char *e = objmap_get(cfg, v) + i * v->elem_size;
    put_quoted(out, entry_key(v, e));
    fputs(" = {", out);
    for (const cv_member *m = v->members; m->name; m++)
        fprintf(out, "%s %s = %lld", m == v->members ? "" : ",", m->name,
                (long long)*entry_member(e, m));
    fputs(" }", out);
}

static void put_value(FILE *out, config *cfg, const config_var *v) {
    if (v->flags & CV_SECRET) {
        /* Stars for an empty value would claim a secret that is not there;
         * the comment keeps the line loadable tfvars. */
        const char *s = *str_field(cfg, v);
        fputs(s && *s ? "\"********\"" : "\"\" # (not set)", out);
        return;
    }
    switch (v->type) {
    case CV_STRING: put_text(out, v, *str_field(cfg, v) ? *str_field(cfg, v) : ""); break;
    case CV_INT: fprintf(out, "%lld", (long long)*int_field(cfg, v)); break;
    case CV_BOOL: fputs(*bool_field(cfg, v) ? "true" : "false", out); break;
    case CV_STRLIST: {
        char **list = *list_field(cfg, v);
        fputc('[', out);
        for (size_t i = 0; i < *count_field(cfg, v); i++) {
            if (i) fputs(", ", out);
            put_text(out, v, list[i]);
        }
        fputc(']', out);
        break;
    }
    case CV_STRMAP:
    case CV_OBJMAP: {
        size_t n = *count_field(cfg, v);
        if (!n) {
            fputs("{}", out);
            break;
        }
        fputs("{ ", out);
        for (size_t i = 0; i < n; i++) {
            if (i) fputs(", ", out);
            put_map_entry(out, cfg, v, i);
        }
        fputs(" }", out);
        break;
    }
    }
}

static int name_width(void) {
    size_t w = 0;
    for (size_t i = 0; i < config_nvars; i++)
        if (strlen(config_vars[i].name) > w) w = strlen(config_vars[i].name);
    return (int)w;
}

void config_dump(const config *cfg, void *out) {
    FILE *f = out;
    int w = name_width();
    for (size_t i = 0; i < config_nvars; i++) {
        fprintf(f, "%-*s = ", w, config_vars[i].name);
        put_value(f, (config *)cfg, &config_vars[i]);
        fputc('\n', f);
    }
}

static json_t *value_json(config *cfg, const config_var *v) {
    if (v->flags & CV_SECRET) return json_string("********");
    switch (v->type) {
    case CV_STRING: {
        const char *s = *str_field(cfg, v);
        return text_json(v, s ? s : "");
    }
    case CV_INT: return json_integer((json_int_t)*int_field(cfg, v));
    case CV_BOOL: return json_boolean(*bool_field(cfg, v));
    case CV_STRLIST: {
        json_t *arr = json_array();
        char **list = *list_field(cfg, v);
        for (size_t i = 0; i < *count_field(cfg, v); i++)
            json_array_append_new(arr, text_json(v, list[i]));
        return arr;
    }
    case CV_STRMAP: {
        json_t *obj = json_object();
        config_kv *kv = *map_field(cfg, v);
        for (size_t i = 0; i < *count_field(cfg, v); i++) {
            json_t *item = json_string(kv[i].value);
            json_object_set_new(obj, kv[i].key, item ? item : json_string("(not UTF-8)"));
        }
        return obj;
    }
    case CV_OBJMAP: {
        json_t *obj = json_object();
        char *arr = objmap_get(cfg, v);
        for (size_t i = 0; i < *count_field(cfg, v); i++) {
            char *e = arr + i * v->elem_size;
            json_t *entry = json_object();
            for (const cv_member *m = v->members; m->name; m++)
                json_object_set_new(entry, m->name, json_integer((json_int_t)*entry_member(e, m)));
            json_object_set_new(obj, entry_key(v, e), entry);
        }
        return obj;
    }
    }
    return json_null();
}

json_t *config_to_json(const config *cfg) {
    json_t *vars = json_object();
    for (size_t i = 0; i < config_nvars; i++)
        json_object_set_new(vars, config_vars[i].name, value_json((config *)cfg, &config_vars[i]));
    return vars;
}

static const char *type_name(const config_var *v, char *buf, size_t size) {
    switch (v->type) {
    case CV_STRING: return "string";
    case CV_INT: return "number";
    case CV_BOOL: return "bool";
    case CV_STRLIST: return "list(string)";
    case CV_STRMAP: return "map(string)";
    case CV_OBJMAP: {
        /* map(object({burst_limit=number,rate_limit=number})) */
        size_t at = (size_t)snprintf(buf, size, "map(object({");
        for (const cv_member *m = v->members; m->name && at < size; m++)
            at += (size_t)snprintf(buf + at, size - at, "%s%s=number", m == v->members ? "" : ",",
                                   m->name);
        if (at < size) snprintf(buf + at, size - at, "}))");
        return buf;
    }
    }
    return "?";
}

void config_print_help(void *out) {
    FILE *f = out;
    config defaults;
    config_init_defaults(&defaults);
    /* Defaults are rendered once into strings so their column can be sized. */
    char *defs[config_nvars];
    int dw = 7;
    for (size_t i = 0; i < config_nvars; i++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (!m) abort();
        put_value(m, &defaults, &config_vars[i]);
        fclose(m);
        defs[i] = buf;
        if ((int)len > dw) dw = (int)len;
    }
    if (dw > 48) dw = 48;
    int w = name_width();
    fprintf(f, "%-*s  %-12s  %-*s  %s\n", w, "VARIABLE", "TYPE", dw, "DEFAULT", "DESCRIPTION");
    for (size_t i = 0; i < config_nvars; i++) {
        const config_var *v = &config_vars[i];
        char tb[160];
        fprintf(f, "%-*s  %-12s  %-*s  %s\n", w, v->name, type_name(v, tb, sizeof tb), dw, defs[i],
                v->help);
        free(defs[i]);
    }
    config_free(&defaults);
}

void config_print_no_effect(const config *cfg, void *out) {
    config defaults;
    config_init_defaults(&defaults);
    for (size_t i = 0; i < config_nvars; i++) {
        const config_var *v = &config_vars[i];
        if (!(v->flags & CV_NO_EFFECT)) continue;
        bool same;
        if (v->type == CV_STRING) {
            const char *s = *str_field((config *)cfg, v);
            same = s && strcmp(s, *str_field(&defaults, v)) == 0;
        } else {
            same = *int_field((config *)cfg, v) == *int_field(&defaults, v);
        }
        if (!same)
            fprintf(out,
                    "note: variable \"%s\" is accepted for compatibility but has no effect "
                    "in wsgate\n",
                    v->name);
    }
    config_free(&defaults);
}

void config_print_warnings(const config *cfg, void *out) {
    /* Data trace logs each message body with its access line, which only
     * exists at INFO. The store encrypts chats at rest; the log would hold
     * the same text in the clear (private messages are redacted). */
    if (cfg->enable_data_trace && cfg->enable_encryption &&
        cfg->logging_level_id == CONFIG_LOG_INFO)
        fprintf(out, "warning: enable_data_trace and enable_encryption are both on: chat message "
                     "bodies will be written to the log in plaintext while the store encrypts "
                     "them (private message bodies are redacted); set enable_data_trace = false "
                     "to keep them out of the log\n");
    /* rediss:// without verification looks like TLS but stops no one on
     * the path: say so where the operator reads the configuration. */
    if (cfg->redis_tls_insecure_skip_verify && cfg->engine_id == CONFIG_ENGINE_REDIS)
        fprintf(out, "warning: redis_tls_insecure_skip_verify = true: rediss:// connections do not "
                     "check the Redis server's certificate (anyone on the path can read and "
                     "change the data); set redis_tls_ca_file instead\n");
}

void config_print_env_typos(char **envp, void *out) {
    static const char prefix[] = "TF_VAR_";
    for (size_t i = 0; envp && envp[i]; i++) {
        if (strncmp(envp[i], prefix, sizeof prefix - 1) != 0) continue;
        const char *name = envp[i] + sizeof prefix - 1;
        const char *eq = strchr(name, '=');
        if (!eq) continue;
        size_t len = (size_t)(eq - name);
        if (config_find_var(name, len)) continue;
        const char *meant = config_suggest_var(name, len);
        if (meant)
            fprintf(out,
                    "warning: TF_VAR_%.*s is ignored: wsgate has no variable \"%.*s\"; did you "
                    "mean TF_VAR_%s?\n",
                    (int)(len > 100 ? 100 : len), name, (int)(len > 100 ? 100 : len), name, meant);
    }
}
