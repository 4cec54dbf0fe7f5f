/* Tests of src/engine/redis_tls.c: the TLS settings' errors, and the
 * bridge under a real redis-server with a TLS port (a throwaway CA made
 * with the openssl CLI; the server also requires a client certificate):
 * values far larger than the bridge's buffers both ways, a deep pipeline,
 * pub/sub, and a bridge to nowhere that fails and leaves nothing open. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/clock.h"
#include "engine/redis_client.h"
#include "engine/redis_tls.h"
#include "redis_server.h"

static uv_loop_t loop;
static test_redis srv;
static char dir[64];
static char ca[128], other_ca[128], server_pem[128], server_key[128], client_pem[128],
    client_key[128];
static int tls_port;

static void sh(const char *cmd) {
    char full[1024];
    snprintf(full, sizeof full, "cd %s && %s >/dev/null 2>&1", dir, cmd);
    cr_assert_eq(system(full), 0, "%s", cmd);
}

#define EC "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

static void make_pki(void) {
    snprintf(dir, sizeof dir, "/tmp/wsgate-tls-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    sh("openssl req -x509 " EC " -keyout ca.key -out ca.pem -days 2 -subj /CN=ca");
    sh("openssl req -x509 " EC " -keyout other.key -out other.pem -days 2 -subj /CN=other");
    sh("printf 'subjectAltName=IP:127.0.0.1\\n' > srv.ext && "
       "openssl req " EC " -keyout server.key -out server.csr -subj /CN=server && "
       "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
       "-out server.pem -days 2 -extfile srv.ext");
    sh("openssl req " EC " -keyout client.key -out client.csr -subj /CN=client && "
       "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
       "-out client.pem -days 2");
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(other_ca, sizeof other_ca, "%s/other.pem", dir);
    snprintf(server_pem, sizeof server_pem, "%s/server.pem", dir);
    snprintf(server_key, sizeof server_key, "%s/server.key", dir);
    snprintf(client_pem, sizeof client_pem, "%s/client.pem", dir);
    snprintf(client_key, sizeof client_key, "%s/client.key", dir);
}

static void setup(void) {
    signal(SIGPIPE, SIG_IGN); /* as wsgate's main does */
    uv_loop_init(&loop);
    srv = (test_redis){0};
    make_pki();
}

static void teardown(void) {
    uv_run(&loop, UV_RUN_DEFAULT);
    /* Every bridge closed its handles: nothing leaks. */
    cr_expect_eq(uv_loop_close(&loop), 0);
    test_redis_stop(&srv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
}

static void start_tls_redis(void) {
    tls_port = test_redis_free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", tls_port);
    /* The plain port stays for test_redis_start's readiness check; the
     * server wants a client certificate (tls-auth-clients defaults to yes). */
    const char *extra[] = {"--tls-port",
                           port,
                           "--tls-cert-file",
                           server_pem,
                           "--tls-key-file",
                           server_key,
                           "--tls-ca-cert-file",
                           ca,
                           NULL};
    test_redis_start(&srv, extra);
}

static bool run_until(bool (*pred)(void *), void *ctx, int timeout_ms) {
    double end = clock_mono_ms() + timeout_ms;
    while (!pred(ctx)) {
        if (clock_mono_ms() > end) return false;
        uv_run(&loop, UV_RUN_NOWAIT);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

static bool is_up(void *c) { return redis_client_up(c); }
static bool is_true(void *b) { return *(bool *)b; }

static redis_client *tls_client(int port, const char *ca_file, bool with_cert) {
    char s[64];
    snprintf(s, sizeof s, "rediss://127.0.0.1:%d", port);
    redis_client_options o = {.pool_size = 2, .backoff_min_ms = 20, .backoff_max_ms = 100};
    wsg_error err = {0};
    cr_assert_eq(redis_url_parse(s, strlen(s), &o.url, &err), 0, "%s", err.message);
    o.tls.ca_file = ca_file;
    if (with_cert) {
        o.tls.cert_file = client_pem;
        o.tls.key_file = client_key;
    }
    return redis_client_new(&loop, &o);
}

TestSuite(redis_tls, .init = setup, .fini = teardown, .timeout = 60);

Test(redis_tls, settings_errors_name_the_file) {
    wsg_error err = {0};
    redis_tls_options o = {.ca_file = "/nonexistent/ca.pem"};
    cr_assert_null(redis_tls_ctx_new(&o, &err));
    cr_assert_eq(err.code, WSG_E_ENGINE_CONFIG);
    cr_assert(strstr(err.message, "cannot load the CA file /nonexistent/ca.pem"), "%s",
              err.message);
    o = (redis_tls_options){.ca_file = ca, .cert_file = client_pem, .key_file = server_key};
    cr_assert_null(redis_tls_ctx_new(&o, &err));
    /* A key of another certificate: refused, naming the file. */
    cr_assert(strstr(err.message, "client key") && strstr(err.message, server_key), "%s",
              err.message);
    o = (redis_tls_options){.ca_file = ca, .cert_file = client_pem, .key_file = client_key};
    redis_tls_ctx *ctx = redis_tls_ctx_new(&o, &err);
    cr_assert_not_null(ctx, "%s", err.message);
    redis_tls_ctx_free(ctx);
}

typedef struct big_result {
    bool done;
    const char *err;
    int type;
    size_t len;
    bool same;
    const char *want;
} big_result;

static void on_big(redis_client *c, const redisReply *r, const char *err, void *data) {
    big_result *b = data;
    b->done = true;
    b->err = err;
    if (!r) return;
    b->type = r->type;
    b->len = r->len;
    b->same = b->want && r->type == REDIS_REPLY_STRING && memcmp(r->str, b->want, r->len) == 0;
}

typedef struct counter {
    int n, want;
} counter;

static bool counted(void *p) { return ((counter *)p)->n == ((counter *)p)->want; }

static void on_count(redis_client *c, const redisReply *r, const char *err, void *data) {
    counter *k = data;
    if (r && r->type == REDIS_REPLY_INTEGER) k->n++;
}

Test(redis_tls, large_values_and_a_deep_pipeline_cross_the_bridge) {
    start_tls_redis();
    redis_client *c = tls_client(tls_port, ca, true);
    cr_assert(run_until(is_up, c, 15000), "the client never came up over TLS");

    /* 3 MiB: far more than the bridge's 16 KiB buffers and the socket
     * buffers, so both directions go through backpressure. */
    size_t n = 3u << 20;
    char *value = malloc(n);
    for (size_t i = 0; i < n; i++) value[i] = (char)('a' + (i * 7919u) % 26);
    const char *set[3] = {"SET", "big", value};
    size_t setlen[3] = {3, 3, n};
    big_result r1 = {0};
    redis_client_command_argv(c, REDIS_CLIENT_ANY, on_big, &r1, 3, set, setlen);
    cr_assert(run_until(is_true, &r1.done, 20000));
    cr_assert_null(r1.err);
    cr_assert_eq(r1.type, REDIS_REPLY_STATUS);
    const char *get[2] = {"GET", "big"};
    big_result r2 = {.want = value};
    redis_client_command_argv(c, REDIS_CLIENT_ANY, on_big, &r2, 2, get, NULL);
    cr_assert(run_until(is_true, &r2.done, 20000));
    cr_assert_null(r2.err);
    cr_assert_eq(r2.len, n);
    cr_assert(r2.same, "the value came back different");
    free(value);

    /* 5000 commands sent in one loop turn: one burst through the bridge. */
    counter k = {0, 5000};
    const char *incr[2] = {"INCR", "n"};
    for (int i = 0; i < k.want; i++) redis_client_command_argv(c, 7, on_count, &k, 2, incr, NULL);
    cr_assert(run_until(counted, &k, 20000), "%d of %d answered", k.n, k.want);
    redis_client_close(c);
}

typedef struct inbox {
    int count;
    char payload[64];
} inbox;

static void on_message(redis_client *c, const char *ch, size_t chlen, const char *p, size_t plen,
                       void *data) {
    inbox *in = data;
    in->count++;
    snprintf(in->payload, sizeof in->payload, "%.*s", (int)plen, p);
}

static bool got_message(void *p) { return ((inbox *)p)->count > 0; }

Test(redis_tls, pubsub_over_tls) {
    start_tls_redis();
    inbox in = {0};
    char s[64];
    snprintf(s, sizeof s, "rediss://127.0.0.1:%d", tls_port);
    redis_client_options o = {.on_message = on_message, .data = &in};
    cr_assert_eq(redis_url_parse(s, strlen(s), &o.url, NULL), 0);
    o.tls = (redis_tls_options){.ca_file = ca, .cert_file = client_pem, .key_file = client_key};
    redis_client *sub = redis_client_new(&loop, &o);
    redis_client *pub = tls_client(tls_port, ca, true);
    cr_assert(run_until(is_up, sub, 15000));
    cr_assert(run_until(is_up, pub, 15000));
    redis_client_subscribe(sub, "room");
    double end = clock_mono_ms() + 10000;
    while (!redis_client_subscribed(sub, "room") && clock_mono_ms() < end) {
        uv_run(&loop, UV_RUN_NOWAIT);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    const char *argv[3] = {"PUBLISH", "room", "over tls"};
    big_result r = {0};
    redis_client_command_argv(pub, REDIS_CLIENT_ANY, on_big, &r, 3, argv, NULL);
    cr_assert(run_until(got_message, &in, 10000));
    cr_assert_str_eq(in.payload, "over tls");
    redis_client_close(sub);
    redis_client_close(pub);
}

Test(redis_tls, failures_leave_nothing_open) {
    start_tls_redis();
    /* Wrong CA, no client certificate, nobody listening: each stays down
     * and closes cleanly (teardown checks the loop has nothing left). */
    redis_client *wrong = tls_client(tls_port, other_ca, true);
    redis_client *nocert = tls_client(tls_port, ca, false);
    redis_client *nobody = tls_client(test_redis_free_port(), ca, true);
    redis_client *good = tls_client(tls_port, ca, true);
    cr_assert(run_until(is_up, good, 15000));
    redis_client_stats st;
    double end = clock_mono_ms() + 10000;
    for (;;) {
        uint64_t f = 0;
        redis_client_get_stats(wrong, &st);
        f += st.connect_failures > 3;
        redis_client_get_stats(nocert, &st);
        f += st.connect_failures > 3;
        redis_client_get_stats(nobody, &st);
        f += st.connect_failures > 3;
        if (f == 3) break;
        cr_assert(clock_mono_ms() < end, "some client did not keep failing");
        uv_run(&loop, UV_RUN_NOWAIT);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_not(redis_client_up(wrong));
    cr_assert_not(redis_client_up(nocert));
    cr_assert_not(redis_client_up(nobody));
    redis_client_close(wrong);
    redis_client_close(nocert);
    redis_client_close(nobody);
    redis_client_close(good);
}

static bool is_down(void *c) { return !redis_client_up(c); }

Test(redis_tls, a_stopped_server_times_out_and_the_client_comes_back) {
    start_tls_redis();
    char s[64];
    snprintf(s, sizeof s, "rediss://127.0.0.1:%d", tls_port);
    redis_client_options o = {.pool_size = 1,
                              .command_timeout_ms = 500,
                              .connect_timeout_ms = 500,
                              .backoff_min_ms = 20,
                              .backoff_max_ms = 100};
    cr_assert_eq(redis_url_parse(s, strlen(s), &o.url, NULL), 0);
    o.tls = (redis_tls_options){.ca_file = ca, .cert_file = client_pem, .key_file = client_key};
    redis_client *c = redis_client_new(&loop, &o);
    cr_assert(run_until(is_up, c, 15000));
    /* A server that stops answering mid-session: the bridge holds the
     * command in TLS, the client times it out and drops the bridge. */
    kill(srv.pid, SIGSTOP);
    const char *ping[1] = {"PING"};
    big_result r = {0};
    redis_client_command_argv(c, REDIS_CLIENT_ANY, on_big, &r, 1, ping, NULL);
    cr_assert(run_until(is_true, &r.done, 10000));
    cr_assert_eq(r.err, REDIS_CLIENT_E_TIMEOUT);
    cr_assert(run_until(is_down, c, 10000));
    kill(srv.pid, SIGCONT);
    cr_assert(run_until(is_up, c, 15000), "never reconnected over TLS");
    big_result r2 = {0};
    redis_client_command_argv(c, REDIS_CLIENT_ANY, on_big, &r2, 1, ping, NULL);
    cr_assert(run_until(is_true, &r2.done, 10000));
    cr_assert_null(r2.err);
    cr_assert_eq(r2.type, REDIS_REPLY_STATUS);
    redis_client_stats st;
    redis_client_get_stats(c, &st);
    cr_assert_geq(st.reconnects, 1);
    redis_client_close(c);
}

static void on_done(redis_client *c, const redisReply *r, const char *err, void *data) {
    *(bool *)data = true;
}

/* redis_client_flush over rediss://: the command crosses the bridge and
 * reaches Redis before the loop polls again (seen on the plain port by a
 * blocking connection, with our loop not running). */
Test(redis_tls, flush_crosses_the_bridge_before_the_loop_polls) {
    start_tls_redis();
    redis_client *c = tls_client(tls_port, ca, true);
    cr_assert(run_until(is_up, c, 15000), "the client never came up over TLS");
    bool done = false;
    redis_client_command_argv(c, REDIS_CLIENT_ANY, on_done, &done, 3,
                              (const char *[]){"SET", "flushed", "tls"}, NULL);
    redis_client_flush(c);
    redisContext *raw = test_redis_connect(&srv);
    redisReply *got = test_redis_await_string(raw, "flushed");
    cr_assert_not_null(got, "the SET never reached Redis while the loop did not run");
    cr_assert_str_eq(got->str, "tls");
    freeReplyObject(got);
    redisFree(raw);
    cr_assert(run_until(is_true, &done, 10000));
    redis_client_close(c);
}
