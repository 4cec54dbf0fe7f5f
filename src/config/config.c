#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "config/tfvars.h"
#include "ws/utf8.h"

/* A config file larger than this is surely a mistake (a log, a binary);
 * refusing it keeps a typo in -c from eating memory. */
#define CONFIG_MAX_FILE_BYTES (16u * 1024u * 1024u)

typedef enum cv_type {
    CV_STRING,
    CV_INT,
    CV_BOOL,
    CV_STRLIST,
    CV_STRMAP,
    CV_OBJMAP, /* map of objects whose members are all whole numbers */
} cv_type;

enum {
    CV_NO_EFFECT = 1u << 0, /* an AWS knob: accepted and validated only */
    CV_SECRET = 1u << 1,    /* masked by config_dump */
};

/* One member of a CV_OBJMAP entry: a whole number stored as int64_t at
 * `offset` in the entry's struct, within min..max. Every member is
 * required. */
typedef struct cv_member {
    const char *name;
    size_t offset;
    int64_t min, max;
    const char *rule; /* the message when the value is out of range */
} cv_member;

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
    size_t enum_offset;         /* with one_of: of the int that gets the value's index (0: none) */
    const int64_t *int_set;     /* allowed integers, int_set_len of them */
    size_t int_set_len;
    const char *charset;        /* allowed bytes, "a-z0-9-" style; implies non-empty */
    bool nonempty;
    size_t max_len;             /* strings, list items, map values; 0 = none */
    size_t max_items;           /* lists and maps; 0 = none */
    size_t max_key_len;         /* maps */
    bool (*check)(const char *s);
    const cv_member *members;   /* CV_OBJMAP: NULL-name-terminated */
    size_t elem_size;           /* CV_OBJMAP: size of one entry's struct */
    size_t key_offset;          /* CV_OBJMAP: of the entry's char *key in it */
    const char *key_noun;       /* CV_OBJMAP: what a key names, for messages ("route") */
    unsigned flags;
    const char *help;
    const char *rule;           /* the message when validation fails */
    const char *item_rule;      /* the message when a list item or map entry fails */
} config_var;

#define OFF(f) offsetof(config, f)

static const char *const default_routes[] = {"chat", "join_room", "leave_room",
                                             "private_message", "room_list", NULL};
static const char *const billing_modes[] = {"PROVISIONED", "PAY_PER_REQUEST", NULL};
static const char *const store_sync_modes[] = {"full", "normal", NULL};
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

static const char *const auth_modes[] = {"demo", "jwt", NULL};
static const char *const jwt_algorithms[] = {"HS256", "RS256", "ES256", NULL};

#define ROUTE_OFF(f) offsetof(config_route_throttle, f)
static const cv_member route_throttle_members[] = {
    {.name = "burst_limit", .offset = ROUTE_OFF(burst_limit), .min = 0, .max = 5000,
     .rule = "Route burst limit must be between 0 and 5000."},
    {.name = "rate_limit", .offset = ROUTE_OFF(rate_limit), .min = 0, .max = 10000,
     .rule = "Route rate limit must be between 0 and 10000."},
    {.name = NULL},
};

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
     .one_of = logging_levels, .enum_offset = OFF(logging_level_id), .help = "log level: OFF, ERROR or INFO",
     .rule = "Logging level must be one of: OFF, ERROR, INFO."},
    {.name = "throttling_burst_limit", .type = CV_INT, .offset = OFF(throttling_burst_limit),
     .def_int = 500, .ranged = true, .min = 0, .max = 5000,
     .help = "stage token bucket size (connects and messages)",
     .rule = "Throttling burst limit must be between 0 and 5000."},
    {.name = "throttling_rate_limit", .type = CV_INT, .offset = OFF(throttling_rate_limit),
     .def_int = 1000, .ranged = true, .min = 0, .max = 10000,
     .help = "stage token bucket refill per second",
     .rule = "Throttling rate limit must be between 0 and 10000."},
    {.name = "throttling_enabled", .type = CV_BOOL, .offset = OFF(throttling_enabled),
     .def_bool = true,
     .help = "apply the stage and route token buckets (false: only per-connection and per-address limits)",
     .rule = "throttling_enabled must be true or false."},
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
    {.name = "store_sync", .type = CV_STRING, .offset = OFF(store_sync), .def_str = "full",
     .one_of = store_sync_modes, .enum_offset = OFF(store_sync_id),
     .help = "full: an fsync per group commit; normal: WAL sync at checkpoints only (a crash may lose the last commits)",
     .rule = "store_sync must be \"full\" or \"normal\"."},
    {.name = "message_ttl_days", .type = CV_INT, .offset = OFF(message_ttl_days), .def_int = 0,
     .ranged = true, .min = 0, .max = 36500,
     .help = "days a chat message is kept (0 = forever), like a DynamoDB TTL",
     .rule = "Message TTL must be between 0 and 36500 days."},
    {.name = "idempotency_window_s", .type = CV_INT, .offset = OFF(idempotency_window_s),
     .def_int = 86400, .ranged = true, .min = 0, .max = 2592000,
     .help = "seconds a repeated clientMessageId returns the original message instead of a new one",
     .rule = "Idempotency window must be between 0 and 2592000 seconds."},
    {.name = "store_max_pending", .type = CV_INT, .offset = OFF(store_max_pending), .def_int = 8192,
     .ranged = true, .min = 1, .max = 1000000,
     .help = "store operations waiting at most; past it chats and history get THROTTLED at once (a stalled disk cannot grow memory)",
     .rule = "store_max_pending must be between 1 and 1000000."},
    {.name = "store_max_pending_bytes", .type = CV_INT, .offset = OFF(store_max_pending_bytes),
     .def_int = 2097152, .ranged = true, .min = 1024, .max = 17179869184LL,
     .help = "bytes of chat text waiting for the store at most; past it chats get THROTTLED at once (the default, 2 MiB, keeps a thawed disk's burst within every member's send queue)",
     .rule = "store_max_pending_bytes must be between 1024 and 17179869184."},
    {.name = "store_stall_ms", .type = CV_INT, .offset = OFF(store_stall_ms), .def_int = 2000,
     .ranged = true, .min = 1, .max = 600000,
     .help = "/readyz answers 503 while a store commit has run longer than this (ms)",
     .rule = "store_stall_ms must be between 1 and 600000."},
    {.name = "pitr_retention_days", .type = CV_INT, .offset = OFF(pitr_retention_days),
     .def_int = 35, .ranged = true, .min = 1, .max = 35,
     .help = "point-in-time recovery window in days (DynamoDB's is 35)",
     .rule = "PITR retention must be between 1 and 35 days."},
    {.name = "pitr_snapshot_interval_s", .type = CV_INT, .offset = OFF(pitr_snapshot_interval_s),
     .def_int = 3600, .ranged = true, .min = 60, .max = 604800,
     .help = "seconds between point-in-time recovery base snapshots (a restore replays the change log from the last one)",
     .rule = "pitr_snapshot_interval_s must be between 60 and 604800."},
    {.name = "kms_key_file", .type = CV_STRING, .offset = OFF(kms_key_file), .def_str = "",
     .max_len = 4096,
     .help = "data key file for encryption at rest (empty: DATA_DIR/keys.json, created 0600)",
     .rule = "kms_key_file must be at most 4096 characters."},
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
    {.name = "mode", .type = CV_STRING, .offset = OFF(mode), .def_str = "api", .one_of = modes, .enum_offset = OFF(mode_id),
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
     .help = "unsent bytes a connection may hold before it must drain (slow consumers)",
     .rule = "Maximum queued bytes must be between 1 and 1073741824."},
    {.name = "slow_consumer_timeout_ms", .type = CV_INT, .offset = OFF(slow_consumer_timeout_ms),
     .def_int = 10000, .ranged = true, .min = 1, .max = 3600000,
     .help = "ms a connection's unsent bytes may stay above max_queued_bytes",
     .rule = "Slow consumer timeout must be between 1 and 3600000 milliseconds."},
    {.name = "max_pending_http_bytes", .type = CV_INT, .offset = OFF(max_pending_http_bytes),
     .def_int = 64 * MIB, .ranged = true, .min = 64 * 1024, .max = (int64_t)4096 * MIB,
     .help = "memory all connections not yet upgraded may hold together, bytes (beyond: 503)",
     .rule = "Maximum pending HTTP bytes must be between 65536 and 4294967296."},
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
    {.name = "worker_threads", .type = CV_INT, .offset = OFF(worker_threads), .def_int = 0,
     .ranged = true, .min = 0, .max = 64,
     .help = "event-loop threads sharing the port (SO_REUSEPORT); 0 = auto: one per core",
     .rule = "worker_threads must be between 0 and 64."},
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
    {.name = "permessage_deflate", .type = CV_BOOL, .offset = OFF(permessage_deflate),
     .def_bool = false,
     .help = "accept the permessage-deflate extension (RFC 7692) that browsers offer"},
    {.name = "deflate_server_max_window_bits", .type = CV_INT,
     .offset = OFF(deflate_server_max_window_bits), .def_int = 15, .ranged = true, .min = 8,
     .max = 15, .help = "largest window (2^bits bytes) the server compresses with",
     .rule = "deflate_server_max_window_bits must be between 8 and 15."},
    {.name = "deflate_client_max_window_bits", .type = CV_INT,
     .offset = OFF(deflate_client_max_window_bits), .def_int = 15, .ranged = true, .min = 8,
     .max = 15,
     .help = "largest window clients are asked to compress with; below 15, clients that cannot be limited get no compression",
     .rule = "deflate_client_max_window_bits must be between 8 and 15."},
    {.name = "deflate_level", .type = CV_INT, .offset = OFF(deflate_level), .def_int = 6,
     .ranged = true, .min = 1, .max = 9, .help = "zlib compression level (1 fastest, 9 smallest)",
     .rule = "deflate_level must be between 1 and 9."},
    {.name = "deflate_min_size", .type = CV_INT, .offset = OFF(deflate_min_size), .def_int = 64,
     .ranged = true, .min = 0, .max = 64 * MIB,
     .help = "messages shorter than this many bytes are sent uncompressed",
     .rule = "deflate_min_size must be between 0 and 67108864."},
    {.name = "deflate_client_no_context_takeover", .type = CV_BOOL,
     .offset = OFF(deflate_client_no_context_takeover), .def_bool = true,
     .help = "ask clients to compress each message alone, so the inflate state is released between messages"},

    /* --- protection (throttling, TLS, authorizers, abuse limits) --- */
    {.name = "route_throttling", .type = CV_OBJMAP, .offset = OFF(route_throttling),
     .count_offset = OFF(route_throttling_count), .members = route_throttle_members,
     .elem_size = sizeof(config_route_throttle), .key_offset = ROUTE_OFF(route), .key_noun = "route",
     .max_items = 20, .max_key_len = 128,
     .help = "per-route token buckets, on top of the stage bucket",
     .rule = "At most 20 routes may have their own throttling.",
     .item_rule = "Route names must be 1 to 128 characters."},
    {.name = "connection_rate_limit", .type = CV_INT, .offset = OFF(connection_rate_limit),
     .def_int = 100, .ranged = true, .min = 0, .max = 1000000,
     .help = "messages per second per connection (0 = off)",
     .rule = "Connection rate limit must be between 0 and 1000000."},
    {.name = "connection_burst_limit", .type = CV_INT, .offset = OFF(connection_burst_limit),
     .def_int = 200, .ranged = true, .min = 0, .max = 1000000,
     .help = "per-connection message bucket size",
     .rule = "Connection burst limit must be between 0 and 1000000."},
    {.name = "max_connections_per_ip", .type = CV_INT, .offset = OFF(max_connections_per_ip),
     .def_int = 1000, .ranged = true, .min = 0, .max = 10000000,
     .help = "simultaneous connections per source address (0 = off)",
     .rule = "Maximum connections per IP must be between 0 and 10000000."},
    {.name = "connect_rate_per_ip", .type = CV_INT, .offset = OFF(connect_rate_per_ip),
     .def_int = 50, .ranged = true, .min = 0, .max = 1000000,
     .help = "connects per second per source address (0 = off)",
     .rule = "Connect rate per IP must be between 0 and 1000000."},
    {.name = "connect_burst_per_ip", .type = CV_INT, .offset = OFF(connect_burst_per_ip),
     .def_int = 100, .ranged = true, .min = 0, .max = 1000000,
     .help = "per source address connect bucket size",
     .rule = "Connect burst per IP must be between 0 and 1000000."},
    {.name = "auth_failures_per_minute", .type = CV_INT, .offset = OFF(auth_failures_per_minute),
     .def_int = 20, .ranged = true, .min = 0, .max = 100000,
     .help = "failed authorizations per source address per minute before 429 (0 = off)",
     .rule = "Auth failures per minute must be between 0 and 100000."},
    {.name = "allowed_origins", .type = CV_STRLIST, .offset = OFF(allowed_origins),
     .count_offset = OFF(allowed_origins_count), .max_items = 100, .nonempty = true,
     .max_len = 1024, .help = "exact Origin values allowed to connect (empty: any)",
     .rule = "At most 100 allowed origins are allowed.",
     .item_rule = "Each allowed origin must be a non-empty string of at most 1024 characters."},
    {.name = "auth_mode", .type = CV_STRING, .offset = OFF(auth_mode), .def_str = "demo",
     .one_of = auth_modes, .enum_offset = OFF(auth_mode_id), .help = "$connect authorizer: demo (valid_* tokens) or jwt",
     .rule = "Auth mode must be either demo or jwt."},
    {.name = "jwt_algorithm", .type = CV_STRING, .offset = OFF(jwt_algorithm),
     .def_str = "HS256", .one_of = jwt_algorithms, .help = "JWT signature: HS256, RS256 or ES256",
     .rule = "JWT algorithm must be one of: HS256, RS256, ES256."},
    {.name = "jwt_secret", .type = CV_STRING, .offset = OFF(jwt_secret), .def_str = "",
     .max_len = 4096, .flags = CV_SECRET, .help = "HS256 key of the JWT authorizer",
     .rule = "JWT secret must be at most 4096 characters."},
    {.name = "jwt_public_key_file", .type = CV_STRING, .offset = OFF(jwt_public_key_file),
     .def_str = "", .max_len = 4096, .help = "PEM public key file for RS256/ES256",
     .rule = "JWT public key file must be a path of at most 4096 characters."},
    {.name = "jwt_issuer", .type = CV_STRING, .offset = OFF(jwt_issuer), .def_str = "",
     .max_len = 1024, .help = "required iss claim (empty: not checked)",
     .rule = "JWT issuer must be at most 1024 characters."},
    {.name = "jwt_audience", .type = CV_STRING, .offset = OFF(jwt_audience), .def_str = "",
     .max_len = 1024, .help = "required aud claim (empty: not checked)",
     .rule = "JWT audience must be at most 1024 characters."},
    {.name = "jwt_leeway_s", .type = CV_INT, .offset = OFF(jwt_leeway_s), .def_int = 30,
     .ranged = true, .min = 0, .max = 300, .help = "clock leeway for exp/nbf, seconds",
     .rule = "JWT leeway must be between 0 and 300 seconds."},
    {.name = "jwt_user_id_claim", .type = CV_STRING, .offset = OFF(jwt_user_id_claim),
     .def_str = "sub", .nonempty = true, .max_len = 128, .help = "claim holding the user id",
     .rule = "JWT user id claim must be between 1 and 128 characters."},
    {.name = "jwt_username_claim", .type = CV_STRING, .offset = OFF(jwt_username_claim),
     .def_str = "name", .nonempty = true, .max_len = 128, .help = "claim holding the user name",
     .rule = "JWT username claim must be between 1 and 128 characters."},
    {.name = "max_fragmented_bytes", .type = CV_INT, .offset = OFF(max_fragmented_bytes),
     .def_int = 1048576, .ranged = true, .min = 1, .max = 64 * MIB,
     .help = "bytes buffered for one unfinished fragmented message",
     .rule = "Maximum fragmented bytes must be between 1 and 67108864."},
    {.name = "max_control_frames_per_s", .type = CV_INT,
     .offset = OFF(max_control_frames_per_s), .def_int = 50, .ranged = true, .min = 0,
     .max = 100000, .help = "pings/pongs/closes per second before closing with 1008 (0 = off)",
     .rule = "Maximum control frames per second must be between 0 and 100000."},
    {.name = "max_json_depth", .type = CV_INT, .offset = OFF(max_json_depth), .def_int = 32,
     .ranged = true, .min = 1, .max = 1000, .help = "deepest JSON nesting accepted in messages",
     .rule = "Maximum JSON depth must be between 1 and 1000."},
    {.name = "room_list_max_bytes", .type = CV_INT, .offset = OFF(room_list_max_bytes),
     .def_int = 262144, .ranged = true, .min = 1024, .max = 64 * MIB,
     .help = "bytes of one room_list reply page (also at most half of max_queued_bytes)",
     .rule = "Room list page bytes must be between 1024 and 67108864."},
    {.name = "tls_cert_file", .type = CV_STRING, .offset = OFF(tls_cert_file), .def_str = "",
     .max_len = 4096, .help = "PEM certificate chain for wss:// (empty: plain ws://)",
     .rule = "TLS certificate file must be a path of at most 4096 characters."},
    {.name = "tls_key_file", .type = CV_STRING, .offset = OFF(tls_key_file), .def_str = "",
     .max_len = 4096, .help = "PEM private key for wss://",
     .rule = "TLS key file must be a path of at most 4096 characters."},
    {.name = "allow_demo_auth_in_production", .type = CV_BOOL,
     .offset = OFF(allow_demo_auth_in_production), .def_bool = false,
     .help = "let a prod/production environment run the demo authorizer"},
    {.name = "allow_plaintext_in_production", .type = CV_BOOL,
     .offset = OFF(allow_plaintext_in_production), .def_bool = false,
     .help = "let a prod/production environment serve ws:// on a non-loopback address"},
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

/* CV_OBJMAP: the array of entries is a typed pointer in struct config (e.g.
 * config_route_throttle *); it is read and written through memcpy so no
 * lvalue of another pointer type touches it. */
static char *objmap_get(config *cfg, const config_var *v) {
    void *p;
    memcpy(&p, (char *)cfg + v->offset, sizeof p);
    return p;
}
static void objmap_set(config *cfg, const config_var *v, void *p) {
    memcpy((char *)cfg + v->offset, &p, sizeof p);
}
static char *entry_key(const config_var *v, char *entry) {
    char *k;
    memcpy(&k, entry + v->key_offset, sizeof k);
    return k;
}
static void entry_set_key(const config_var *v, char *entry, char *k) {
    memcpy(entry + v->key_offset, &k, sizeof k);
}
static int64_t *entry_member(char *entry, const cv_member *m) {
    return (int64_t *)(entry + m->offset);
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
    case CV_BOOL:
        break;
    }
}

/* Store s as v's string value, and its index among v->one_of where v has
 * an enum field (s has passed check_string). */
_Static_assert(sizeof(config_mode) == sizeof(int) && sizeof(config_store_sync) == sizeof(int) &&
                   sizeof(config_auth_mode) == sizeof(int) && sizeof(config_logging_level) == sizeof(int),
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
static int item_line(int item, int line) {
    return line == 0 ? 0 : item ? item : line;
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
        set_string(cfg, v, val->string);
        return 0;
    case CV_INT: {
        int64_t x;
        if (!value_to_int(val, &x)) return fail_var(err, origin, line, v, "must be a whole number");
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
            int l = item_line(it->line, line);
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
            int l = item_line(it->line, line);
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
    case CV_OBJMAP: {
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
            bad = check_key(v, val->keys[i]);
            if (!bad) bad = parse_entry(v, val->keys[i], it, arr + i * v->elem_size, msg, sizeof msg, &l);
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
    if (inet_pton(AF_INET, listen, &a4) == 1)
        return ((const unsigned char *)&a4.s_addr)[0] == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, listen, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

static bool empty(const char *s) {
    return !s || !*s;
}

static int check_cross_rules(const config *c, config_error *err) {
    if (c->auth_mode_id == CONFIG_AUTH_JWT) {
        bool hs = !c->jwt_algorithm || strcmp(c->jwt_algorithm, "HS256") == 0;
        if (hs && empty(c->jwt_secret))
            return fail(err, "auth_mode = \"jwt\" with jwt_algorithm = \"HS256\" requires "
                             "jwt_secret (the shared signing key)");
        if (!hs && empty(c->jwt_public_key_file))
            return fail(err, "auth_mode = \"jwt\" with jwt_algorithm = \"%s\" requires "
                             "jwt_public_key_file (a PEM public key)",
                        c->jwt_algorithm);
    }
    if (empty(c->tls_cert_file) != empty(c->tls_key_file))
        return fail(err, "tls_cert_file and tls_key_file must be set together (%s is empty)",
                    empty(c->tls_cert_file) ? "tls_cert_file" : "tls_key_file");
    if (is_production(c->environment)) {
        if (c->auth_mode_id == CONFIG_AUTH_DEMO && !c->allow_demo_auth_in_production)
            return fail(err, "environment \"%s\" refuses the demo authorizer (any token starting "
                             "with valid_ is accepted); set auth_mode = \"jwt\" or "
                             "allow_demo_auth_in_production = true",
                        c->environment);
        if (empty(c->tls_cert_file) && !is_loopback(c->listen) && !c->allow_plaintext_in_production)
            return fail(err, "environment \"%s\" refuses plain ws:// on the non-loopback listen "
                             "address \"%s\"; set tls_cert_file and tls_key_file, listen on "
                             "127.0.0.1, or allow_plaintext_in_production = true",
                        c->environment, c->listen);
    }
    return 0;
}

int config_validate(const config *cfg, config_error *err) {
    /* Fields may have been assigned directly by the CLI, so every single
     * value is checked again before the cross-variable rules. */
    config *c = (config *)cfg; /* read-only use of the accessors */
    char msg[400];
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
        if (bad) return fail(err, "variable \"%s\": %s", v->name, bad);
    }
    return check_cross_rules(cfg, err);
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
        /* Stars for an empty value would claim a secret that is not there;
         * the comment keeps the line loadable tfvars. */
        const char *s = *str_field(cfg, v);
        fputs(s && *s ? "\"********\"" : "\"\" # (not set)", out);
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
    case CV_OBJMAP: {
        char *arr = objmap_get(cfg, v);
        size_t n = *count_field(cfg, v);
        if (!n) {
            fputs("{}", out);
            break;
        }
        fputs("{ ", out);
        for (size_t i = 0; i < n; i++) {
            char *e = arr + i * v->elem_size;
            if (i) fputs(", ", out);
            put_quoted(out, entry_key(v, e));
            fputs(" = {", out);
            for (const cv_member *m = v->members; m->name; m++)
                fprintf(out, "%s %s = %lld", m == v->members ? "" : ",", m->name,
                        (long long)*entry_member(e, m));
            fputs(" }", out);
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
    for (size_t i = 0; i < NVARS; i++)
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

void config_print_warnings(const config *cfg, void *out) {
    /* Data trace logs each message body with its access line, which only
     * exists at INFO. The store encrypts chats at rest; the log would hold
     * the same text in the clear (private messages are redacted). */
    if (cfg->enable_data_trace && cfg->enable_encryption && cfg->logging_level_id == CONFIG_LOG_INFO)
        fprintf(out, "warning: enable_data_trace and enable_encryption are both on: chat message "
                     "bodies will be written to the log in plaintext while the store encrypts "
                     "them (private message bodies are redacted); set enable_data_trace = false "
                     "to keep them out of the log\n");
}
