#include "cli/outputs.h"

#include <jansson.h>
#include <stdbool.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "cli/nodeid.h"
#include "common/alloc.h"
#include "config/suggest.h"
#include "mgmt/credentials.h"

void outputs_data_file(const config *cfg, char *buf, size_t len) {
    snprintf(buf, len, "%s/%s-%s.db", cfg->data_dir, cfg->project_name, cfg->environment);
}

/* The host clients should dial: the listen address, or loopback when
 * listening on every address. */
static const char *dial_host(const config *cfg, char *buf, size_t len) {
    if (strcmp(cfg->listen, "0.0.0.0") == 0) return "127.0.0.1";
    if (strcmp(cfg->listen, "::") == 0) return "[::1]";
    if (strchr(cfg->listen, ':')) {
        snprintf(buf, len, "[%s]", cfg->listen);
        return buf;
    }
    return cfg->listen;
}

void outputs_base_url(const config *cfg, long long port, bool web, char *buf, size_t len) {
    char hostbuf[128];
    bool tls = cfg->tls_cert_file && cfg->tls_cert_file[0];
    const char *scheme = web ? (tls ? "https" : "http") : (tls ? "wss" : "ws");
    snprintf(buf, len, "%s://%s:%lld", scheme, dial_host(cfg, hostbuf, sizeof(hostbuf)), port);
}

/* A stable id for the API, like API Gateway's 10-character api id, derived
 * from the names that identify a deployment. */
static void api_id(const config *cfg, char out[11]) {
    char src[1024];
    snprintf(src, sizeof(src), "%s/%s/%s/%s", cfg->project_name, cfg->environment, cfg->api_name,
             cfg->aws_region);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    EVP_Digest(src, strlen(src), d, &dl, EVP_sha256(), NULL);
    static const char a[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (int i = 0; i < 10; i++) out[i] = a[d[i] % 36];
    out[10] = '\0';
}

void outputs_api_id(const config *cfg, char out[11]) { api_id(cfg, out); }

/* The values `wsgate outputs` derives from the configuration alone. */
typedef struct derived {
    char endpoint[512], test_url[1024], id[11], data_file[4096], mgmt[600];
    char conn_tbl[300], rooms_tbl[300], msgs_tbl[300], fn_connect[300], fn_message[300],
        fn_disconnect[300];
} derived;

static void derive(const config *cfg, derived *d) {
    char hostbuf[128];
    const char *host = dial_host(cfg, hostbuf, sizeof(hostbuf));
    bool tls = cfg->tls_cert_file && cfg->tls_cert_file[0];
    snprintf(d->endpoint, sizeof(d->endpoint), "%s://%s:%lld/%s", tls ? "wss" : "ws", host,
             (long long)cfg->port, cfg->stage_name);
    snprintf(d->test_url, sizeof(d->test_url),
             "%s?userId=testuser&username=TestUser&roomId=general&token=valid_test_token",
             d->endpoint);
    api_id(cfg, d->id);
    outputs_data_file(cfg, d->data_file, sizeof(d->data_file));
    snprintf(d->mgmt, sizeof(d->mgmt), "%s://%s:%lld/%s", tls ? "https" : "http", host,
             (long long)cfg->port, cfg->stage_name);
    const char *pe[] = {cfg->project_name, cfg->environment};
    snprintf(d->conn_tbl, sizeof(d->conn_tbl), "%s-%s-connections", pe[0], pe[1]);
    snprintf(d->rooms_tbl, sizeof(d->rooms_tbl), "%s-%s-rooms", pe[0], pe[1]);
    snprintf(d->msgs_tbl, sizeof(d->msgs_tbl), "%s-%s-messages", pe[0], pe[1]);
    snprintf(d->fn_connect, sizeof(d->fn_connect), "%s-%s-connect", pe[0], pe[1]);
    snprintf(d->fn_message, sizeof(d->fn_message), "%s-%s-message", pe[0], pe[1]);
    snprintf(d->fn_disconnect, sizeof(d->fn_disconnect), "%s-%s-disconnect", pe[0], pe[1]);
}

/* The management API's keys: configured, or read from the data directory
 * where the server generated them on its first start. Never generated
 * here: keys this command made would not be the ones a server running
 * elsewhere checks. -raw of another output stays silent about keys it does
 * not print. */
static void read_credentials(const config *cfg, outputs_format format, const char *name,
                             mgmt_credentials *creds) {
    wsg_error cerr;
    memset(creds, 0, sizeof(*creds));
    bool wants_creds = format != OUTPUTS_RAW || (strncmp(name, "management_", 11) == 0 &&
                                                 strcmp(name, "management_api_url") != 0);
    if (wants_creds && mgmt_credentials_read(cfg, creds, &cerr) < 0) {
        fprintf(stderr, "wsgate: %s\n", cerr.message);
    } else if (wants_creds &&
               (!*cfg->management_access_key_id || !*cfg->management_secret_access_key ||
                !*cfg->management_bearer_key)) {
        char *abs = realpath(cfg->data_dir, NULL);
        fprintf(stderr,
                "wsgate: reading management credentials from %s/management-credentials.json\n",
                abs ? abs : cfg->data_dir);
        free(abs);
    }
}

/* The running server's node id: only a server knows it (random per process
 * with engine = "redis"); node_id stays "" when there is none. */
static void read_node_id(const config *cfg, outputs_format format, const char *name, char *node_id,
                         size_t len) {
    if (format == OUTPUTS_RAW && strcmp(name, "node_id") != 0) return;
    int nrc = nodeid_read(cfg->data_dir, node_id, len);
    if (nrc == 1)
        fprintf(stderr,
                "wsgate: no server running on %s: node_id is chosen when wsgate serve "
                "starts\n",
                cfg->data_dir);
    else if (nrc != 0)
        fprintf(stderr, "wsgate: cannot read the running server's node id from %s/node-id\n",
                cfg->data_dir);
}

/* The URLs of the server running on the data directory, when they are not
 * what this configuration says (serve started with other flags, or port
 * 0): a client must dial the running one, as terraform output shows the
 * deployed state rather than the variables. Said on stderr. */
static void use_running_endpoint(const config *cfg, outputs_format format, const char *name,
                                 derived *d) {
    if (format == OUTPUTS_RAW && strcmp(name, "websocket_api_endpoint") != 0 &&
        strcmp(name, "test_connection_url") != 0 && strcmp(name, "management_api_url") != 0)
        return;
    char ws[sizeof d->endpoint], mgmt[sizeof d->mgmt];
    if (nodeid_read_endpoint(cfg->data_dir, ws, sizeof ws, mgmt, sizeof mgmt) != 0 ||
        (strcmp(ws, d->endpoint) == 0 && strcmp(mgmt, d->mgmt) == 0))
        return;
    fprintf(stderr,
            "wsgate: the server running on %s serves %s, not %s as this configuration says; "
            "these outputs use the running server's\n",
            cfg->data_dir, ws, d->endpoint);
    snprintf(d->endpoint, sizeof d->endpoint, "%s", ws);
    snprintf(d->mgmt, sizeof d->mgmt, "%s", mgmt);
    snprintf(d->test_url, sizeof(d->test_url),
             "%s?userId=testuser&username=TestUser&roomId=general&token=valid_test_token",
             d->endpoint);
}

typedef struct output_row {
    const char *name;
    const char *value;
    bool sensitive;
} output_row;

/* -raw NAME: the value alone. */
static int print_raw(const output_row *rows, size_t n, const char *name, FILE *out) {
    for (size_t i = 0; i < n; i++) {
        if (strcmp(rows[i].name, name) == 0) {
            /* An empty key would pass for a value in `$(...)`. */
            if (!*rows[i].value) return 1;
            fputs(rows[i].value, out);
            return 0;
        }
    }
    const char **names = xcalloc(n + 1, sizeof *names);
    for (size_t i = 0; i < n; i++) names[i] = rows[i].name;
    const char *meant = config_suggest_word(name, names);
    fprintf(stderr, "wsgate: no output named \"%s\"%s%s%s (see wsgate outputs)\n", name,
            meant ? "; did you mean " : "", meant ? meant : "", meant ? "?" : "");
    free(names);
    return 2;
}

static void print_json(const output_row *rows, size_t n, FILE *out) {
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(o, rows[i].name,
                            json_pack("{s:b,s:s,s:s}", "sensitive", rows[i].sensitive, "type",
                                      "string", "value", rows[i].value));
    char *txt = json_dumps(o, JSON_INDENT(2));
    fprintf(out, "%s\n", txt);
    free(txt);
    json_decref(o);
}

static void print_text(const output_row *rows, size_t n, FILE *out) {
    for (size_t i = 0; i < n; i++) {
        if (rows[i].sensitive) {
            /* As terraform output does: shown only with -raw or -json. */
            fprintf(out, "%s = <sensitive>\n", rows[i].name);
            continue;
        }
        json_t *s = json_string(rows[i].value);
        char *q = json_dumps(s, JSON_ENCODE_ANY);
        fprintf(out, "%s = %s\n", rows[i].name, q);
        free(q);
        json_decref(s);
    }
}

int outputs_print(const config *cfg, outputs_format format, const char *name, FILE *out) {
    derived d;
    derive(cfg, &d);
    use_running_endpoint(cfg, format, name, &d);
    mgmt_credentials creds;
    read_credentials(cfg, format, name, &creds);
    char node_id[64] = "";
    read_node_id(cfg, format, name, node_id, sizeof(node_id));
    const output_row rows[] = {
        {"connect_function_name", d.fn_connect, false},
        {"connections_table_name", d.conn_tbl, false},
        {"data_file", d.data_file, false},
        {"disconnect_function_name", d.fn_disconnect, false},
        {"management_access_key_id", creds.access_key_id, false},
        {"management_api_url", d.mgmt, false},
        {"management_bearer_key", creds.bearer_key, true},
        {"management_secret_access_key", creds.secret_access_key, true},
        {"message_function_name", d.fn_message, false},
        {"messages_table_name", d.msgs_tbl, false},
        {"node_id", node_id, false},
        {"rooms_table_name", d.rooms_tbl, false},
        {"stage_name", cfg->stage_name, false},
        {"test_connection_url", d.test_url, false},
        {"websocket_api_endpoint", d.endpoint, false},
        {"websocket_api_id", d.id, false},
    };
    size_t n = sizeof(rows) / sizeof(rows[0]);
    if (format == OUTPUTS_RAW) return print_raw(rows, n, name, out);
    if (format == OUTPUTS_JSON) print_json(rows, n, out);
    else print_text(rows, n, out);
    return 0;
}
