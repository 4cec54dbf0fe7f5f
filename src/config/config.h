/* wsgate configuration: one table of variables (the seed's Terraform
 * variables plus wsgate's own), filled from built-in defaults, a tfvars
 * file, TF_VAR_<name> environment variables and --set overrides, in that
 * order of precedence. See docs/configuration.md. */
#ifndef WSGATE_CONFIG_CONFIG_H
#define WSGATE_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct config_kv {
    char *key;
    char *value;
} config_kv;

/* One route's throttling override (route_throttling = { chat = {...} }). */
typedef struct config_route_throttle {
    char *route;
    int64_t burst_limit;
    int64_t rate_limit;
} config_route_throttle;

/* String variables with a fixed set of values are also parsed once into
 * these (the `_id` fields), in the order of their names in config.c, so
 * no code compares the strings at each use (as Redis's enum configs). */
typedef enum config_logging_level {
    CONFIG_LOG_OFF,
    CONFIG_LOG_ERROR,
    CONFIG_LOG_INFO /* = log_level's values */
} config_logging_level;
typedef enum config_store_sync { CONFIG_SYNC_FULL, CONFIG_SYNC_NORMAL } config_store_sync;
typedef enum config_mode { CONFIG_MODE_API, CONFIG_MODE_ECHO } config_mode;
typedef enum config_auth_mode {
    CONFIG_AUTH_DEMO,
    CONFIG_AUTH_JWT,
    CONFIG_AUTH_HTTP
} config_auth_mode;
typedef enum config_engine { CONFIG_ENGINE_LOCAL, CONFIG_ENGINE_REDIS } config_engine;

typedef struct config {
    /* --- the seed's variables (CONFIG.md) --- */
    char *aws_region;
    char *environment;
    char *project_name;
    char *api_name;
    char *api_description;
    char *stage_name;
    char *route_selection_expression;
    char **custom_routes; /* NULL-terminated list */
    size_t custom_routes_count;
    char *dynamodb_billing_mode;
    int64_t dynamodb_read_capacity;
    int64_t dynamodb_write_capacity;
    char *dynamodb_table_class;
    bool enable_dynamodb_point_in_time_recovery;
    char *lambda_runtime;
    int64_t lambda_memory_size;
    int64_t lambda_message_memory_size;
    int64_t lambda_timeout;
    int64_t lambda_message_timeout;
    bool enable_detailed_metrics;
    bool enable_data_trace;
    char *logging_level;                   /* "OFF", "ERROR" or "INFO" */
    config_logging_level logging_level_id; /* the same, parsed once */
    int64_t throttling_burst_limit;
    int64_t throttling_rate_limit;
    bool throttling_enabled; /* wsgate's own: stage + route buckets on/off */
    int64_t log_retention_days;
    bool enable_xray_tracing;
    bool enable_encryption;
    int64_t kms_key_deletion_window;
    /* wsgate's own store settings */
    char *store_sync; /* "full" (default) or "normal" */
    config_store_sync store_sync_id;
    int64_t message_ttl_days;         /* 0 = keep forever */
    int64_t idempotency_window_s;     /* default 86400 */
    int64_t store_max_pending;        /* store operations queued at most (chats, history) */
    int64_t store_max_pending_bytes;  /* chat text queued for the store at most */
    int64_t store_stall_ms;           /* /readyz: a commit running longer is a stall */
    int64_t pitr_retention_days;      /* default 35 */
    int64_t pitr_snapshot_interval_s; /* default 3600 */
    char *kms_key_file;               /* "" = DATA_DIR/keys.json */
    config_kv *additional_tags;       /* array of additional_tags_count pairs */
    size_t additional_tags_count;

    /* --- wsgate's own --- */
    char *listen;   /* listen address, default 127.0.0.1 */
    int64_t port;   /* default 8080 */
    char *data_dir; /* default ./data */
    char *mode;     /* "api" (default) or "echo" */
    config_mode mode_id;
    int64_t max_frame_size;            /* bytes, default 131072 */
    int64_t max_message_size;          /* bytes, default 131072 */
    int64_t max_header_bytes;          /* handshake header budget, default 8192 */
    int64_t max_headers;               /* default 100 */
    int64_t handshake_timeout_ms;      /* default 10000 */
    int64_t idle_timeout_s;            /* default 600 */
    int64_t ping_interval_s;           /* default 30 (0 = no server pings) */
    int64_t pong_timeout_s;            /* default 10 */
    int64_t max_connection_duration_s; /* default 0 = unlimited */
    int64_t max_queued_bytes;          /* per-connection write queue cap, default 1048576 */
    int64_t
        slow_consumer_timeout_ms; /* longest a queue may stay above max_queued_bytes, default 10000 */
    int64_t
        max_pending_http_bytes; /* memory of connections not upgraded, all workers; default 64 MiB */
    int64_t shutdown_timeout_ms;            /* default 5000 */
    int64_t max_connections;                /* default 100000 */
    int64_t worker_threads;                 /* event loops; 0 = auto (one per core) */
    char *otlp_endpoint;                    /* "" = spans are not exported */
    char *management_access_key_id;         /* "" = generated into the data dir */
    char *management_secret_access_key;     /* "" = generated into the data dir */
    char *management_bearer_key;            /* "" = generated into the data dir */
    bool permessage_deflate;                /* offer RFC 7692 compression, default false */
    int64_t deflate_server_max_window_bits; /* 8..15, default 15 */
    int64_t deflate_client_max_window_bits; /* 8..15, default 15 */
    int64_t deflate_level;                  /* zlib level 1..9, default 6 */
    int64_t deflate_min_size; /* bytes; smaller messages go uncompressed, default 64 */
    bool deflate_client_no_context_takeover; /* default true */

    /* --- protection (throttling, TLS, authorizers, abuse limits) --- */
    config_route_throttle *route_throttling; /* per-route token buckets */
    size_t route_throttling_count;
    int64_t connection_rate_limit;    /* messages/s per connection, default 100 (0 = off) */
    int64_t connection_burst_limit;   /* default 200 */
    int64_t max_connections_per_ip;   /* concurrent, default 1000 (0 = off) */
    int64_t connect_rate_per_ip;      /* connects/s per source address, default 50 (0 = off) */
    int64_t connect_burst_per_ip;     /* default 100 */
    int64_t auth_failures_per_minute; /* per source address before 429, default 20 */
    char **allowed_origins;           /* NULL-terminated; empty = any Origin */
    size_t allowed_origins_count;
    char *auth_mode; /* "demo" (default), "jwt" or "http" */
    config_auth_mode auth_mode_id;
    char *jwt_algorithm;          /* "HS256" (default), "RS256" or "ES256" */
    char *jwt_secret;             /* HS256 key (secret) */
    char *jwt_public_key_file;    /* PEM for RS256/ES256 */
    char *jwt_issuer;             /* "" = not checked */
    char *jwt_audience;           /* "" = not checked */
    int64_t jwt_leeway_s;         /* clock leeway for exp/nbf, default 30 (0..300) */
    char *jwt_user_id_claim;      /* default "sub" */
    char *jwt_username_claim;     /* default "name" */
    int64_t max_fragmented_bytes; /* held for one unfinished fragmented message, default 1048576 */
    int64_t max_partial_message_bytes; /* every unfinished message, all workers; 64 MiB */
    int64_t presence_rate_limit;       /* typing/join/leave per connection per s, default 5 */
    int64_t presence_burst_limit;      /* that bucket's size, default 20 */
    int64_t max_control_frames_per_s;  /* pings/pongs/closes per second, default 50 (0 = off) */
    int64_t max_json_depth;            /* default 32 */
    int64_t room_list_max_bytes;       /* one room_list page, default 262144 */
    char *tls_cert_file;               /* "" = plain ws:// */
    char *tls_key_file;
    bool allow_demo_auth_in_production; /* default false */
    bool allow_plaintext_in_production; /* default false */
    /* --- HTTP integrations (docs/integrations.md) --- */
    config_kv *route_integrations; /* route key -> http(s) URL */
    size_t route_integrations_count;
    char **route_responses; /* two-way routes: the result's body goes back */
    size_t route_responses_count;
    char *authorizer_url;               /* auth_mode = "http" */
    char **authorizer_identity_sources; /* route.request.header.X / route.request.querystring.Y */
    size_t authorizer_identity_sources_count;
    int64_t authorizer_cache_ttl_s;             /* default 300 (0 = no cache) */
    int64_t integration_max_concurrency;        /* requests in flight per integration and worker */
    int64_t integration_connection_concurrency; /* message calls in flight, default 16 */
    int64_t integration_max_response_bytes;     /* default 131072 */
    char *integration_domain_name;              /* events' domainName; "": the Host header */
    /* The engine (docs/redis.md): "local" (default) or "redis". */
    char *engine;
    config_engine engine_id;
    /* The Redis engine's settings (docs/redis.md). */
    char *redis_url;   /* "" = none */
    char **redis_urls; /* several servers, sharded; empty = redis_url alone */
    size_t redis_urls_count;
    int64_t redis_min_replicas;   /* WAIT for this many replicas per chat, default 0 */
    int64_t redis_node_timeout_s; /* a silent node is gone after this, default 30 */
    /* rediss:// (docs/redis.md "TLS"): "" = the default. */
    char *redis_tls_ca_file;             /* PEM CA bundle; "": the system's CA store */
    char *redis_tls_server_name;         /* name the certificate must carry; "": the URL host */
    bool redis_tls_insecure_skip_verify; /* accept any certificate (logged at WARN) */
    char *redis_tls_cert_file;           /* client certificate (tls-auth-clients) */
    char *redis_tls_key_file;            /* its key */
} config;

/* The config functions return 0 or a negative code and fill a wsg_error
 * (common/error.h) whose `message` is one line that names the source
 * (file:line, environment variable or --set), the variable and the rule
 * broken; `line` (and `column` for syntax errors) where the source has
 * lines. Codes: WSG_E_CONFIG_SYNTAX (tfvars syntax, a --set without '='),
 * WSG_E_CONFIG_UNKNOWN (unknown variable), WSG_E_CONFIG_VALUE (a value
 * breaks its variable's rule), WSG_E_CONFIG_RULE (a rule across variables),
 * WSG_E_IO (the file cannot be read). */

/* Fill *cfg with the built-in defaults. Every string in *cfg is owned by it
 * and released by config_free(). Never fails. */
void config_init_defaults(config *cfg);

/* Apply a tfvars file. Returns 0 on success; on failure returns a negative
 * code, fills *err and leaves *cfg valid (possibly partly updated). */
int config_load_file(config *cfg, const char *path, wsg_error *err);

/* Apply the tfvars text `text` (len bytes) as if read from file `origin`
 * (used in messages); an origin ending in ".json" is read as Terraform's
 * JSON variable file (terraform.tfvars.json: one object of name: value).
 * Returns 0 or a negative code with *err filled. */
int config_load_text(config *cfg, const char *origin, const char *text, size_t len, wsg_error *err);

/* Apply every TF_VAR_<name> variable of `envp` (NULL-terminated, as environ)
 * whose name is a known variable. Values are parsed as tfvars values when
 * they look like one (lists, maps, numbers, bools), else as raw strings, as
 * Terraform does. Returns 0 or a negative code with *err filled. */
int config_load_env(config *cfg, char **envp, wsg_error *err);

/* Apply one `name=value` override (from --set). Same value rules as
 * config_load_env. Returns 0 or a negative code with *err filled (unknown name included). */
int config_set(config *cfg, const char *assignment, wsg_error *err);

/* Apply `value` to the variable `name` as config_set does, naming `origin`
 * (e.g. "-p" for a CLI short flag) in messages. Returns 0 or a negative code with *err
 * filled (unknown name included). */
int config_set_var(config *cfg, const char *origin, const char *name, const char *value,
                   wsg_error *err);

/* Check the cross-variable rules that single values cannot (e.g.
 * max_frame_size <= max_message_size is NOT required; see docs). Returns 0 or
 * a negative code with *err filled. */
int config_validate(const config *cfg, wsg_error *err);

/* Write every variable and its effective value, one `name = value` line each
 * in tfvars syntax, to `out` (a FILE*). Secrets are masked. */
void config_dump(const config *cfg, void *out);

struct json_t;

/* Return a new JSON object (caller owns the reference) mapping every
 * variable's name to its effective value: strings, numbers, booleans,
 * arrays of strings and objects of strings, in table order. Secrets are
 * masked as "********", as config_dump masks them. */
struct json_t *config_to_json(const config *cfg);

/* Write the variable table (name, type, default, help) to `out` (a FILE*),
 * for `wsgate serve --help`. */
void config_print_help(void *out);

/* Write one `note:` line to `out` (a FILE*) for each AWS-only variable
 * (DynamoDB capacity and billing, Lambda runtime and memory) whose value
 * differs from its default: it is accepted and validated but has no effect
 * in wsgate. For `wsgate check`. */
void config_print_no_effect(const config *cfg, void *out);

/* Write one `warning:` line to `out` (a FILE*) for each combination of
 * valid settings that likely defeats its purpose (data trace with
 * encryption at rest: chat text in the log in the clear). For `wsgate
 * check`, which still exits 0. */
void config_print_warnings(const config *cfg, void *out);

/* Write one `warning:` line to `out` (a FILE*) for each TF_VAR_ variable of
 * envp (a NULL-terminated environ) that names no variable but is a typo of
 * one (TF_VAR_stage_nam): it is ignored, as Terraform ignores undeclared
 * ones, so the user should hear what it was likely meant to set. Unknown
 * names that resemble none stay silent (other Terraform variables). */
void config_print_env_typos(char **envp, void *out);

/* Release everything owned by *cfg. */
void config_free(config *cfg);

#endif
