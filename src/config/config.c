#include "config/config.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "config/tfvars.h"

/* A config file larger than this is surely a mistake (a log, a binary);
 * refusing it keeps a typo in -c from eating memory. */
#define CONFIG_MAX_FILE_BYTES (16u * 1024u * 1024u)

typedef enum cv_type {
    CV_STRING,
    CV_INT,
    CV_BOOL,
    CV_STRLIST,
    CV_STRMAP,
} cv_type;

enum {
    CV_NO_EFFECT = 1u << 0, /* an AWS knob: accepted and validated only */
    CV_SECRET = 1u << 1,    /* masked by config_dump */
};

/* One variable: everything defaults, parsing, validation, dump and help
 * need, so adding a variable is adding one row. */
typedef struct config_var {
    const char *name;
    cv_type type;
    size_t offset;       /* of the value in struct config */
    size_t count_offset; /* CV_STRLIST / CV_STRMAP: of the size_t count */
    const char *def_str;
    int64_t def_int;
    bool def_bool;
    const char *const *def_list; /* NULL-terminated */
    bool ranged;
    int64_t min, max;
    const char *const *one_of;  /* NULL-terminated allowed strings */
    const int64_t *int_set;     /* allowed integers, int_set_len of them */
    size_t int_set_len;
    const char *charset;        /* allowed bytes, "a-z0-9-" style; implies non-empty */
    bool nonempty;
    size_t max_len;             /* strings, list items, map values; 0 = none */
    size_t max_items;           /* lists and maps; 0 = none */
    size_t max_key_len;         /* maps */
    bool (*check)(const char *s);
    unsigned flags;
    const char *help;
    const char *rule;           /* the message when validation fails */
    const char *item_rule;      /* the message when a list item or map entry fails */
} config_var;

#define OFF(f) offsetof(config, f)

static const char *const default_routes[] = {"chat", "join_room", "leave_room",
                                             "private_message", "room_list", NULL};
static const char *const billing_modes[] = {"PROVISIONED", "PAY_PER_REQUEST", NULL};
static const char *const table_classes[] = {"STANDARD", "STANDARD_INFREQUENT_ACCESS", NULL};
static const char *const runtimes[] = {"python3.8", "python3.9", "python3.10", "python3.11", NULL};
static const char *const logging_levels[] = {"OFF", "ERROR", "INFO", NULL};
static const char *const modes[] = {"api", "echo", NULL};
static const int64_t retention_days[] = {1,   3,   5,   7,   14,  30,   60,  90, 120,
                                         150, 180, 365, 400, 545, 731, 1827, 3653};

/* $request.body.PATH where PATH is dot-separated JSON member names. */
static bool check_route_selection(const char *s) {
    static const char prefix[] = "$request.body.";
    if (strncmp(s, prefix, sizeof prefix - 1) != 0) return false;
    s += sizeof prefix - 1;
    size_t seg = 0;
    for (; *s; s++) {
        char c = *s;
        if (c == '.') {
            if (seg == 0) return false;
            seg = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '-') {
            seg++;
        } else {
            return false;
        }
    }
    return seg > 0;
}

#define MIB (1024 * 1024)

static bool check_http_url(const char *s) {
    return *s == '\0' || strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

static const config_var config_vars[] = {
    /* --- the seed's variables --- */
    {.name = "aws_region", .type = CV_STRING, .offset = OFF(aws_region), .def_str = "us-east-1",
     .charset = "a-z0-9-", .max_len = 64,
     .help = "AWS region; a label in outputs, log lines and metrics",
     .rule = "AWS region must contain only lowercase letters, digits and hyphens."},
    {.name = "environment", .type = CV_STRING, .offset = OFF(environment), .def_str = "dev",
     .charset = "a-zA-Z0-9-", .max_len = 64,
     .help = "environment name; prod/production enable production safety checks",
     .rule = "Environment name must contain only alphanumeric characters and hyphens."},
    {.name = "project_name", .type = CV_STRING, .offset = OFF(project_name),
     .def_str = "websocket-api", .charset = "a-zA-Z0-9-", .max_len = 64,
     .help = "project name; part of data file and table names",
     .rule = "Project name must contain only alphanumeric characters and hyphens."},
    {.name = "api_name", .type = CV_STRING, .offset = OFF(api_name), .def_str = "websocket-api",
     .nonempty = true, .max_len = 128, .help = "the API's name in outputs and metrics",
     .rule = "API name must be between 1 and 128 characters."},
    {.name = "api_description", .type = CV_STRING, .offset = OFF(api_description),
     .def_str = "Real-time WebSocket API for chat and messaging", .max_len = 1024,
     .help = "description shown in outputs and the dashboard",
     .rule = "API description must be at most 1024 characters."},
    {.name = "stage_name", .type = CV_STRING, .offset = OFF(stage_name), .def_str = "staging",
     .charset = "a-zA-Z0-9_-", .max_len = 128, .help = "stage; the endpoint path is /{stage_name}",
     .rule = "Stage name must contain only alphanumeric characters, hyphens and underscores."},
    {.name = "route_selection_expression", .type = CV_STRING,
     .offset = OFF(route_selection_expression), .def_str = "$request.body.type",
     .check = check_route_selection, .help = "JSON member of each message that selects its route",
     .rule = "Route selection expression must be of the form $request.body.PATH."},
    {.name = "custom_routes", .type = CV_STRLIST, .offset = OFF(custom_routes),
     .count_offset = OFF(custom_routes_count), .def_list = default_routes, .max_items = 10,
     .nonempty = true, .max_len = 128, .help = "routes to create besides $connect/$disconnect/$default",
     .rule = "Maximum of 10 custom routes allowed.",
     .item_rule = "Each custom route must be a non-empty string of at most 128 characters."},
    {.name = "dynamodb_billing_mode", .type = CV_STRING, .offset = OFF(dynamodb_billing_mode),
     .def_str = "PROVISIONED", .one_of = billing_modes, .flags = CV_NO_EFFECT,
     .help = "AWS only: accepted, no effect",
     .rule = "DynamoDB billing mode must be either PROVISIONED or PAY_PER_REQUEST."},
    {.name = "dynamodb_read_capacity", .type = CV_INT, .offset = OFF(dynamodb_read_capacity),
     .def_int = 5, .ranged = true, .min = 1, .max = 40000, .flags = CV_NO_EFFECT,
     .help = "AWS only: accepted, no effect",
     .rule = "DynamoDB read capacity must be between 1 and 40000."},
    {.name = "dynamodb_write_capacity", .type = CV_INT, .offset = OFF(dynamodb_write_capacity),
     .def_int = 5, .ranged = true, .min = 1, .max = 40000, .flags = CV_NO_EFFECT,
     .help = "AWS only: accepted, no effect",
     .rule = "DynamoDB write capacity must be between 1 and 40000."},
    {.name = "dynamodb_table_class", .type = CV_STRING, .offset = OFF(dynamodb_table_class),
     .def_str = "STANDARD", .one_of = table_classes, .flags = CV_NO_EFFECT,
     .help = "AWS only: accepted, no effect",
     .rule = "DynamoDB table class must be either STANDARD or STANDARD_INFREQUENT_ACCESS."},
    {.name = "enable_dynamodb_point_in_time_recovery", .type = CV_BOOL,
     .offset = OFF(enable_dynamodb_point_in_time_recovery), .def_bool = true,
     .help = "continuous backup of the store with point-in-time restore"},
    {.name = "lambda_runtime", .type = CV_STRING, .offset = OFF(lambda_runtime),
     .def_str = "python3.11", .one_of = runtimes, .flags = CV_NO_EFFECT,
     .help = "AWS only: accepted, no effect (handlers are native)",
     .rule = "Lambda runtime must be a supported Python version (python3.8 through python3.11)."},
    {.name = "lambda_memory_size", .type = CV_INT, .offset = OFF(lambda_memory_size),
     .def_int = 256, .ranged = true, .min = 128, .max = 10240, .flags = CV_NO_EFFECT,
     .help = "AWS only: accepted, no effect",
     .rule = "Lambda memory size must be between 128 and 10240 MB."},
    {.name = "lambda_message_memory_size", .type = CV_INT,
     .offset = OFF(lambda_message_memory_size), .def_int = 512, .ranged = true, .min = 128,
     .max = 10240, .flags = CV_NO_EFFECT, .help = "AWS only: accepted, no effect",
     .rule = "Lambda message memory size must be between 128 and 10240 MB."},
    {.name = "lambda_timeout", .type = CV_INT, .offset = OFF(lambda_timeout), .def_int = 30,
     .ranged = true, .min = 1, .max = 900,
     .help = "seconds allowed to $connect/$disconnect handlers",
     .rule = "Lambda timeout must be between 1 and 900 seconds."},
    {.name = "lambda_message_timeout", .type = CV_INT, .offset = OFF(lambda_message_timeout),
     .def_int = 60, .ranged = true, .min = 1, .max = 900,
     .help = "seconds allowed to message-route handlers and integrations",
     .rule = "Lambda message timeout must be between 1 and 900 seconds."},
    {.name = "enable_detailed_metrics", .type = CV_BOOL, .offset = OFF(enable_detailed_metrics),
     .def_bool = true, .help = "per-route metric series"},
    {.name = "enable_data_trace", .type = CV_BOOL, .offset = OFF(enable_data_trace),
     .def_bool = true, .help = "log message bodies (truncated, escaped) at INFO"},
    {.name = "logging_level", .type = CV_STRING, .offset = OFF(logging_level), .def_str = "INFO",
     .one_of = logging_levels, .help = "log level: OFF, ERROR or INFO",
     .rule = "Logging level must be one of: OFF, ERROR, INFO."},
    {.name = "throttling_burst_limit", .type = CV_INT, .offset = OFF(throttling_burst_limit),
     .def_int = 500, .ranged = true, .min = 0, .max = 5000,
     .help = "stage token bucket size (connects and messages)",
     .rule = "Throttling burst limit must be between 0 and 5000."},
    {.name = "throttling_rate_limit", .type = CV_INT, .offset = OFF(throttling_rate_limit),
     .def_int = 1000, .ranged = true, .min = 0, .max = 10000,
     .help = "stage token bucket refill per second",
     .rule = "Throttling rate limit must be between 0 and 10000."},
    {.name = "log_retention_days", .type = CV_INT, .offset = OFF(log_retention_days),
     .def_int = 14, .int_set = retention_days,
     .int_set_len = sizeof retention_days / sizeof retention_days[0],
     .help = "log files older than this many days are deleted",
     .rule = "Log retention days must be one of the valid CloudWatch retention periods."},
    {.name = "enable_xray_tracing", .type = CV_BOOL, .offset = OFF(enable_xray_tracing),
     .def_bool = true, .help = "trace id on every connect and message"},
    {.name = "enable_encryption", .type = CV_BOOL, .offset = OFF(enable_encryption),
     .def_bool = true, .help = "encrypt stored data with a local key file"},
    {.name = "kms_key_deletion_window", .type = CV_INT, .offset = OFF(kms_key_deletion_window),
     .def_int = 7, .ranged = true, .min = 7, .max = 30,
     .help = "days a retired key is kept after rotation",
     .rule = "KMS key deletion window must be between 7 and 30 days."},
    {.name = "additional_tags", .type = CV_STRMAP, .offset = OFF(additional_tags),
     .count_offset = OFF(additional_tags_count), .max_items = 50, .max_key_len = 128,
     .max_len = 256, .help = "labels on metrics and fields on log lines",
     .rule = "At most 50 additional tags are allowed.",
     .item_rule = "Tag keys must be 1 to 128 characters and tag values at most 256 characters."},

    /* --- wsgate's own --- */
    {.name = "listen", .type = CV_STRING, .offset = OFF(listen), .def_str = "127.0.0.1",
     .charset = "a-zA-Z0-9.:_-", .max_len = 255, .help = "address to listen on",
     .rule = "Listen address must be a host name or an IPv4/IPv6 address."},
    {.name = "port", .type = CV_INT, .offset = OFF(port), .def_int = 8080, .ranged = true,
     .min = 0, .max = 65535, .help = "TCP port (0 = any free port)",
     .rule = "Port must be between 0 and 65535."},
    {.name = "data_dir", .type = CV_STRING, .offset = OFF(data_dir), .def_str = "./data",
     .nonempty = true, .max_len = 4096, .help = "directory for the store, keys and logs",
     .rule = "Data directory must be a non-empty path."},
    {.name = "mode", .type = CV_STRING, .offset = OFF(mode), .def_str = "api", .one_of = modes,
     .help = "api (the seed's chat API) or echo (echo every message)",
     .rule = "Mode must be either api or echo."},
    {.name = "max_frame_size", .type = CV_INT, .offset = OFF(max_frame_size), .def_int = 131072,
     .ranged = true, .min = 1, .max = 64 * MIB, .help = "largest frame payload accepted, bytes",
     .rule = "Maximum frame size must be between 1 and 67108864 bytes."},
    {.name = "max_message_size", .type = CV_INT, .offset = OFF(max_message_size),
     .def_int = 131072, .ranged = true, .min = 1, .max = 64 * MIB,
     .help = "largest reassembled message accepted, bytes",
     .rule = "Maximum message size must be between 1 and 67108864 bytes."},
    {.name = "max_header_bytes", .type = CV_INT, .offset = OFF(max_header_bytes), .def_int = 8192,
     .ranged = true, .min = 1024, .max = MIB, .help = "handshake request header budget, bytes",
     .rule = "Maximum header bytes must be between 1024 and 1048576."},
    {.name = "max_headers", .type = CV_INT, .offset = OFF(max_headers), .def_int = 100,
     .ranged = true, .min = 8, .max = 10000, .help = "most header lines in a handshake",
     .rule = "Maximum headers must be between 8 and 10000."},
    {.name = "handshake_timeout_ms", .type = CV_INT, .offset = OFF(handshake_timeout_ms),
     .def_int = 10000, .ranged = true, .min = 0, .max = 3600000,
     .help = "ms to complete the handshake (0 = no limit)",
     .rule = "Handshake timeout must be between 0 and 3600000 milliseconds."},
    {.name = "idle_timeout_s", .type = CV_INT, .offset = OFF(idle_timeout_s), .def_int = 600,
     .ranged = true, .min = 0, .max = 86400,
     .help = "close a connection idle this many seconds (0 = never)",
     .rule = "Idle timeout must be between 0 and 86400 seconds."},
    {.name = "ping_interval_s", .type = CV_INT, .offset = OFF(ping_interval_s), .def_int = 30,
     .ranged = true, .min = 0, .max = 3600, .help = "seconds between server pings (0 = none)",
     .rule = "Ping interval must be between 0 and 3600 seconds."},
    {.name = "pong_timeout_s", .type = CV_INT, .offset = OFF(pong_timeout_s), .def_int = 10,
     .ranged = true, .min = 0, .max = 3600,
     .help = "seconds to wait for a pong (0 = never close for it)",
     .rule = "Pong timeout must be between 0 and 3600 seconds."},
    {.name = "max_connection_duration_s", .type = CV_INT,
     .offset = OFF(max_connection_duration_s), .def_int = 0, .ranged = true, .min = 0,
     .max = 31536000, .help = "close connections older than this (0 = unlimited)",
     .rule = "Maximum connection duration must be between 0 and 31536000 seconds."},
    {.name = "max_queued_bytes", .type = CV_INT, .offset = OFF(max_queued_bytes),
     .def_int = 1048576, .ranged = true, .min = 1, .max = 1024 * MIB,
     .help = "per-connection write queue cap, bytes",
     .rule = "Maximum queued bytes must be between 1 and 1073741824."},
    {.name = "shutdown_timeout_ms", .type = CV_INT, .offset = OFF(shutdown_timeout_ms),
     .def_int = 5000, .ranged = true, .min = 0, .max = 600000,
     .help = "ms to drain connections on shutdown",
     .rule = "Shutdown timeout must be between 0 and 600000 milliseconds."},
    {.name = "max_connections", .type = CV_INT, .offset = OFF(max_connections),
     .def_int = 100000, .ranged = true, .min = 1, .max = 10000000,
     .help = "most simultaneous connections",
     .rule = "Maximum connections must be between 1 and 10000000."},
    {.name = "otlp_endpoint", .type = CV_STRING, .offset = OFF(otlp_endpoint), .def_str = "",
     .max_len = 1024, .check = check_http_url,
     .help = "OTLP/HTTP endpoint for spans when enable_xray_tracing (empty: no export)",
     .rule = "OTLP endpoint must be empty or an http:// or https:// URL."},
    {.name = "management_access_key_id", .type = CV_STRING,
     .offset = OFF(management_access_key_id), .def_str = "", .max_len = 128,
     .help = "SigV4 access key id of the management API (empty: generated into the data directory)",
     .rule = "Management access key id must be at most 128 characters."},
    {.name = "management_secret_access_key", .type = CV_STRING,
     .offset = OFF(management_secret_access_key), .def_str = "", .max_len = 128, .flags = CV_SECRET,
     .help = "SigV4 secret of the management API (empty: generated into the data directory)",
     .rule = "Management secret access key must be at most 128 characters."},
    {.name = "management_bearer_key", .type = CV_STRING, .offset = OFF(management_bearer_key),
     .def_str = "", .max_len = 256, .flags = CV_SECRET,
     .help = "bearer key for the management API (empty: generated into the data directory)",
     .rule = "Management bearer key must be at most 256 characters."},
};

#define NVARS (sizeof config_vars / sizeof config_vars[0])

/* ---------- field access ---------- */

static char **str_field(config *cfg, const config_var *v) {
    return (char **)((char *)cfg + v->offset);
}
static int64_t *int_field(config *cfg, const config_var *v) {
    return (int64_t *)((char *)cfg + v->offset);
}
static bool *bool_field(config *cfg, const config_var *v) {
    return (bool *)((char *)cfg + v->offset);
}
static char ***list_field(config *cfg, const config_var *v) {
    return (char ***)((char *)cfg + v->offset);
}
static config_kv **map_field(config *cfg, const config_var *v) {
    return (config_kv **)((char *)cfg + v->offset);
}
static size_t *count_field(config *cfg, const config_var *v) {
    return (size_t *)((char *)cfg + v->count_offset);
}

static const config_var *find_var(const char *name, size_t len) {
    for (size_t i = 0; i < NVARS; i++)
        if (strlen(config_vars[i].name) == len && memcmp(config_vars[i].name, name, len) == 0)
            return &config_vars[i];
    return NULL;
}

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
    case CV_INT:
    case CV_BOOL:
        break;
    }
}

static void set_default(config *cfg, const config_var *v) {
    free_field(cfg, v);
    switch (v->type) {
    case CV_STRING: *str_field(cfg, v) = xstrdup(v->def_str); break;
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
    }
}

void config_init_defaults(config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NVARS; i++) set_default(cfg, &config_vars[i]);
}

void config_free(config *cfg) {
    if (!cfg) return;
    for (size_t i = 0; i < NVARS; i++) free_field(cfg, &config_vars[i]);
}

/* ---------- errors ---------- */

static int fail(config_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(config_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* "origin:line: " for files, "origin: " where there are no lines. */
static void where(char *buf, size_t size, const char *origin, int line) {
    if (line > 0)
        snprintf(buf, size, "%s:%d: ", origin, line);
    else
        snprintf(buf, size, "%s: ", origin);
}

static int fail_var(config_error *err, const char *origin, int line, const config_var *v,
                    const char *rule) {
    char w[300];
    where(w, sizeof w, origin, line);
    return fail(err, "%svariable \"%s\": %s", w, v->name, rule);
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
    if (!tfv_utf8_valid(s, n)) return "must be valid UTF-8";
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
    if (!tfv_utf8_valid(s, n)) return "must be valid UTF-8";
    if ((v->nonempty && n == 0) || (v->max_len && n > v->max_len)) return v->item_rule;
    return NULL;
}

static const char *check_key(const config_var *v, const char *k) {
    size_t n = strlen(k);
    if (!tfv_utf8_valid(k, n)) return "must be valid UTF-8";
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

/* ---------- applying one value ---------- */

/* Convert, validate and store val into variable v. *cfg is untouched on
 * failure. line 0 means the origin has no lines (environment, --set). */
static int apply_value(config *cfg, const config_var *v, const tfv_value *val,
                       const char *origin, int line, config_error *err) {
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
        free(*str_field(cfg, v));
        *str_field(cfg, v) = xstrdup(val->string);
        return 0;
    case CV_INT: {
        int64_t x;
        if (val->type == TFV_NUMBER && val->is_integer)
            x = val->integer;
        else if (val->type == TFV_STRING && string_to_int(val->string, val->string_len, &x))
            ;
        else
            return fail_var(err, origin, line, v, "must be a whole number");
        if ((bad = check_int(v, x))) return fail_var(err, origin, line, v, bad);
        *int_field(cfg, v) = x;
        return 0;
    }
    case CV_BOOL:
        if (val->type == TFV_BOOL)
            *bool_field(cfg, v) = val->boolean;
        else if (val->type == TFV_STRING && strcmp(val->string, "true") == 0)
            *bool_field(cfg, v) = true;
        else if (val->type == TFV_STRING && strcmp(val->string, "false") == 0)
            *bool_field(cfg, v) = false;
        else
            return fail_var(err, origin, line, v, "must be true or false");
        return 0;
    case CV_STRLIST: {
        if (val->type != TFV_LIST) return fail_var(err, origin, line, v, "must be a list of strings");
        for (size_t i = 0; i < val->count; i++) {
            const tfv_value *it = val->items[i];
            int l = it->line ? it->line : line;
            if (it->type != TFV_STRING)
                return fail_var(err, origin, l, v, "must be a list of strings");
            if ((bad = check_item(v, it->string))) return fail_var(err, origin, l, v, bad);
        }
        if (v->max_items && val->count > v->max_items) return fail_var(err, origin, line, v, v->rule);
        char **list = xcalloc(val->count + 1, sizeof *list);
        for (size_t i = 0; i < val->count; i++) list[i] = xstrdup(val->items[i]->string);
        free_field(cfg, v);
        *list_field(cfg, v) = list;
        *count_field(cfg, v) = val->count;
        return 0;
    }
    case CV_STRMAP: {
        if (val->type != TFV_MAP) return fail_var(err, origin, line, v, "must be a map of strings");
        for (size_t i = 0; i < val->count; i++) {
            const tfv_value *it = val->items[i];
            int l = it->line ? it->line : line;
            if (it->type != TFV_STRING)
                return fail_var(err, origin, l, v, "must be a map of strings");
            if ((bad = check_key(v, val->keys[i])) || (bad = check_item(v, it->string)))
                return fail_var(err, origin, l, v, bad);
        }
        if (v->max_items && val->count > v->max_items) return fail_var(err, origin, line, v, v->rule);
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
    }
    return 0;
}

/* Apply text from the environment or the command line. A string variable
 * takes the text verbatim unless it is a quoted tfvars string (so
 * `stage_name=prod` and `stage_name=2024` both mean what they say); other
 * types parse it as a tfvars value and fall back to the raw text, which then
 * fails the type check with a clear message. */
static int apply_text(config *cfg, const config_var *v, const char *text, const char *origin,
                      config_error *err) {
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

int config_load_text(config *cfg, const char *origin, const char *text, size_t len,
                     config_error *err) {
    tfv_error perr;
    tfv_doc *doc = tfv_parse(text, len, &perr);
    if (!doc) return fail(err, "%s:%d:%d: %s", origin, perr.line, perr.column, perr.message);
    int rc = 0;
    for (size_t i = 0; i < doc->count && rc == 0; i++) {
        const tfv_attr *a = &doc->attrs[i];
        const config_var *v = find_var(a->name, strlen(a->name));
        if (!v)
            rc = fail(err, "%s:%d: unknown variable \"%.100s\"", origin, a->line, a->name);
        else
            rc = apply_value(cfg, v, a->value, origin, a->line, err);
    }
    tfv_doc_free(doc);
    return rc;
}

int config_load_file(config *cfg, const char *path, config_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, "cannot read %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len == cap) {
            if (cap >= CONFIG_MAX_FILE_BYTES) {
                fclose(f);
                free(buf);
                return fail(err, "cannot read %s: file is larger than %u bytes", path,
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
        return fail(err, "cannot read %s: %s", path, strerror(e ? e : EIO));
    }
    fclose(f);
    int rc = config_load_text(cfg, path, buf, len, err);
    free(buf);
    return rc;
}

int config_load_env(config *cfg, char **envp, config_error *err) {
    static const char prefix[] = "TF_VAR_";
    for (size_t i = 0; envp && envp[i]; i++) {
        const char *e = envp[i];
        if (strncmp(e, prefix, sizeof prefix - 1) != 0) continue;
        const char *name = e + sizeof prefix - 1;
        const char *eq = strchr(name, '=');
        if (!eq) continue;
        const config_var *v = find_var(name, (size_t)(eq - name));
        if (!v) continue; /* Terraform ignores TF_VAR_ for undeclared variables */
        char origin[200];
        snprintf(origin, sizeof origin, "TF_VAR_%s", v->name);
        if (apply_text(cfg, v, eq + 1, origin, err) < 0) return -1;
    }
    return 0;
}

int config_set_var(config *cfg, const char *origin, const char *name, const char *value,
                   config_error *err) {
    const config_var *v = find_var(name, strlen(name));
    if (!v) return fail(err, "%s: unknown variable \"%.100s\"", origin, name);
    return apply_text(cfg, v, value, origin, err);
}

int config_set(config *cfg, const char *assignment, config_error *err) {
    const char *eq = strchr(assignment, '=');
    if (!eq) return fail(err, "--set: expected name=value, got \"%.100s\"", assignment);
    const char *a = assignment, *z = eq;
    while (a < z && (*a == ' ' || *a == '\t')) a++;
    while (z > a && (z[-1] == ' ' || z[-1] == '\t')) z--;
    const config_var *v = find_var(a, (size_t)(z - a));
    if (!v) return fail(err, "--set: unknown variable \"%.*s\"", (int)((z - a) > 100 ? 100 : z - a), a);
    return apply_text(cfg, v, eq + 1, "--set", err);
}

int config_validate(const config *cfg, config_error *err) {
    /* Fields may have been assigned directly by the CLI, so every single
     * value is checked again before the cross-variable rules. */
    config *c = (config *)cfg; /* read-only use of the accessors */
    for (size_t i = 0; i < NVARS; i++) {
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
        }
        if (bad) return fail(err, "variable \"%s\": %s", v->name, bad);
    }
    return 0;
}

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
            if (c < 0x20 || c == 0x7f)
                fprintf(out, "\\u%04x", c);
            else
                fputc(c, out);
        }
    }
    fputc('"', out);
}

static void put_value(FILE *out, config *cfg, const config_var *v) {
    if (v->flags & CV_SECRET) {
        fputs("\"********\"", out);
        return;
    }
    switch (v->type) {
    case CV_STRING: put_quoted(out, *str_field(cfg, v) ? *str_field(cfg, v) : ""); break;
    case CV_INT: fprintf(out, "%lld", (long long)*int_field(cfg, v)); break;
    case CV_BOOL: fputs(*bool_field(cfg, v) ? "true" : "false", out); break;
    case CV_STRLIST: {
        char **list = *list_field(cfg, v);
        fputc('[', out);
        for (size_t i = 0; i < *count_field(cfg, v); i++) {
            if (i) fputs(", ", out);
            put_quoted(out, list[i]);
        }
        fputc(']', out);
        break;
    }
    case CV_STRMAP: {
        config_kv *kv = *map_field(cfg, v);
        size_t n = *count_field(cfg, v);
        if (!n) {
            fputs("{}", out);
            break;
        }
        fputs("{ ", out);
        for (size_t i = 0; i < n; i++) {
            if (i) fputs(", ", out);
            put_quoted(out, kv[i].key);
            fputs(" = ", out);
            put_quoted(out, kv[i].value);
        }
        fputs(" }", out);
        break;
    }
    }
}

static int name_width(void) {
    size_t w = 0;
    for (size_t i = 0; i < NVARS; i++)
        if (strlen(config_vars[i].name) > w) w = strlen(config_vars[i].name);
    return (int)w;
}

void config_dump(const config *cfg, void *out) {
    FILE *f = out;
    int w = name_width();
    for (size_t i = 0; i < NVARS; i++) {
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
        /* Values are bytes; a string that is not UTF-8 is shown escaped. */
        json_t *j = json_string(s ? s : "");
        return j ? j : json_string("(not UTF-8)");
    }
    case CV_INT: return json_integer((json_int_t)*int_field(cfg, v));
    case CV_BOOL: return json_boolean(*bool_field(cfg, v));
    case CV_STRLIST: {
        json_t *arr = json_array();
        char **list = *list_field(cfg, v);
        for (size_t i = 0; i < *count_field(cfg, v); i++) {
            json_t *item = json_string(list[i]);
            json_array_append_new(arr, item ? item : json_string("(not UTF-8)"));
        }
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
    }
    return json_null();
}

json_t *config_to_json(const config *cfg) {
    json_t *vars = json_object();
    for (size_t i = 0; i < NVARS; i++)
        json_object_set_new(vars, config_vars[i].name, value_json((config *)cfg, &config_vars[i]));
    return vars;
}

static const char *type_name(cv_type t) {
    switch (t) {
    case CV_STRING: return "string";
    case CV_INT: return "number";
    case CV_BOOL: return "bool";
    case CV_STRLIST: return "list(string)";
    case CV_STRMAP: return "map(string)";
    }
    return "?";
}

void config_print_help(void *out) {
    FILE *f = out;
    config defaults;
    config_init_defaults(&defaults);
    /* Defaults are rendered once into strings so their column can be sized. */
    char *defs[NVARS];
    int dw = 7;
    for (size_t i = 0; i < NVARS; i++) {
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
    for (size_t i = 0; i < NVARS; i++) {
        const config_var *v = &config_vars[i];
        fprintf(f, "%-*s  %-12s  %-*s  %s\n", w, v->name, type_name(v->type), dw, defs[i], v->help);
        free(defs[i]);
    }
    config_free(&defaults);
}

void config_print_no_effect(const config *cfg, void *out) {
    config defaults;
    config_init_defaults(&defaults);
    for (size_t i = 0; i < NVARS; i++) {
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
            fprintf(out, "note: variable \"%s\" is accepted for compatibility but has no effect "
                         "in wsgate\n",
                    v->name);
    }
    config_free(&defaults);
}
