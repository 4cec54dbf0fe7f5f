/* Tests of src/engine/redis_client.c and redis_script.c against a real
 * redis-server (tests/unit/engine/redis_server.h): the chat script (seq,
 * idempotent retry, trimming by length and age), history pages, pub/sub
 * between two clients, pipelining, AUTH and SELECT, the NOSCRIPT
 * fallback, and the failure behaviour: fail fast while Redis is down,
 * reconnect and resubscribe when it is back, drop an unresponsive server;
 * redis_client_flush, and the on-demand counts read (redis_counts.c). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/clock.h"
#include "common/strmap.h"
#include "engine/redis_client.h"
#include "engine/redis_counts.h"
#include "engine/redis_script.h"
#include "redis_server.h"

static uv_loop_t loop;
static test_redis srv, replica;
static uv_timer_t keepalive;

static void noop_timer(uv_timer_t *t) {}

static void setup(void) {
    uv_loop_init(&loop);
    /* A short repeating timer so that uv_run(ONCE) never blocks long. */
    uv_timer_init(&loop, &keepalive);
    uv_timer_start(&keepalive, noop_timer, 10, 10);
    srv = (test_redis){0};
    replica = (test_redis){0};
}

static redis_client *open_clients[8];

static void track(redis_client *c) {
    for (int i = 0; i < 8; i++)
        if (!open_clients[i]) {
            open_clients[i] = c;
            return;
        }
    cr_assert_fail("too many clients");
}

static void close_client(redis_client *c) {
    for (int i = 0; i < 8; i++)
        if (open_clients[i] == c) open_clients[i] = NULL;
    redis_client_close(c);
}

static void teardown(void) {
    /* A failed assertion leaves clients open: close them so the loop ends. */
    for (int i = 0; i < 8; i++)
        if (open_clients[i]) close_client(open_clients[i]);
    uv_close((uv_handle_t *)&keepalive, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    /* Every handle of every client was closed: nothing leaks. */
    cr_expect_eq(uv_loop_close(&loop), 0);
    test_redis_stop(&srv);
    test_redis_stop(&replica);
}

typedef bool (*pred_fn)(void *);

static bool run_until(pred_fn pred, void *ctx, int timeout_ms) {
    double end = clock_mono_ms() + timeout_ms;
    while (!pred(ctx)) {
        if (clock_mono_ms() > end) return false;
        uv_run(&loop, UV_RUN_ONCE);
    }
    return true;
}

static bool is_up(void *c) { return redis_client_up(c); }
static bool is_down(void *c) { return !redis_client_up(c); }

static redis_url url_of(const char *fmt, int port) {
    char s[256];
    snprintf(s, sizeof s, fmt, port);
    redis_url u;
    wsg_error err = {0};
    cr_assert_eq(redis_url_parse(s, strlen(s), &u, &err), 0, "%s", err.message);
    return u;
}

/* One received pub/sub message, and the options that collect them. */
typedef struct inbox {
    int count;
    char channel[128];
    char payload[512];
    size_t payload_len;
} inbox;

static void on_message(redis_client *c, const char *ch, size_t chlen, const char *p, size_t plen,
                       void *data) {
    inbox *in = data;
    in->count++;
    snprintf(in->channel, sizeof in->channel, "%.*s", (int)chlen, ch);
    in->payload_len = plen < sizeof in->payload ? plen : sizeof in->payload;
    memcpy(in->payload, p, in->payload_len);
}

static redis_client *client(const char *url_fmt, inbox *in) {
    redis_client_options o = {.url = url_of(url_fmt, srv.port),
                              .pool_size = 2,
                              .backoff_min_ms = 20,
                              .backoff_max_ms = 200,
                              .preload_scripts = redis_script_sources(),
                              .on_message = in ? on_message : NULL,
                              .data = in};
    redis_client *c = redis_client_new(&loop, &o);
    track(c);
    cr_assert(run_until(is_up, c, 10000), "client never came up");
    return c;
}

/* A command's outcome, copied out of the callback. */
typedef struct result {
    bool done;
    int type;
    long long integer;
    char str[512];
    size_t len;
    const char *err;   /* compare with the static REDIS_CLIENT_E_* only */
    char errtext[256]; /* the text, which may live only during the callback */
    redis_chat_result chat;
    redis_history_result hist;
    char hist_values[64][32];
} result;

static void on_reply(redis_client *c, const redisReply *r, const char *err, void *data) {
    result *res = data;
    res->done = true;
    res->err = err;
    if (err) snprintf(res->errtext, sizeof res->errtext, "%s", err);
    if (!r) return;
    res->type = r->type;
    res->integer = r->integer;
    if (r->str) {
        res->len = r->len < sizeof res->str - 1 ? r->len : sizeof res->str - 1;
        memcpy(res->str, r->str, res->len);
        res->str[res->len] = '\0';
    }
}

/* The chat's result, its value copied into res->str. */
static void on_chat(redis_client *c, const redis_chat_result *cr, const char *err, void *data) {
    result *res = data;
    res->done = true;
    res->err = err;
    if (err) snprintf(res->errtext, sizeof res->errtext, "%s", err);
    if (!cr) return;
    res->chat = *cr;
    res->len = cr->value_len < sizeof res->str - 1 ? cr->value_len : 0;
    memcpy(res->str, cr->value, res->len);
    res->str[res->len] = '\0';
    res->chat.value = res->str;
}

/* The page, its entries copied (free res->hist.entries) without their
 * bytes; the values as text in hist_values. */
static void on_history(redis_client *c, const redis_history_result *h, const char *err,
                       void *data) {
    result *res = data;
    res->done = true;
    res->err = err;
    if (err) snprintf(res->errtext, sizeof res->errtext, "%s", err);
    if (!h) return;
    res->hist = *h;
    res->hist.entries = calloc(h->count + 1, sizeof *h->entries);
    for (size_t i = 0; i < h->count; i++) {
        res->hist.entries[i] = h->entries[i];
        if (i < 64)
            snprintf(res->hist_values[i], sizeof res->hist_values[i], "%.*s",
                     (int)h->entries[i].value_len, h->entries[i].value);
        res->hist.entries[i].value = NULL;
        res->hist.entries[i].message_id = NULL;
    }
}

static bool is_done(void *r) { return ((result *)r)->done; }

static void wait_done(result *r) { cr_assert(run_until(is_done, r, 10000), "no reply"); }

static result cmd(redis_client *c, const char *a0, const char *a1, const char *a2) {
    const char *argv[3] = {a0, a1, a2};
    int argc = a2 ? 3 : a1 ? 2 : 1;
    result r = {0};
    redis_client_command_argv(c, REDIS_CLIENT_ANY, on_reply, &r, argc, argv, NULL);
    wait_done(&r);
    cr_assert_null(r.err, "%s: %s", a0, r.err);
    return r;
}

static result chat(redis_client *c, const char *room, const char *cmid, const char *mid,
                   int64_t ts_ms, const char *value, int64_t max_len, int64_t cutoff_ms,
                   bool publish) {
    redis_chat m = {.room = room,
                    .sender = "sender-key",
                    .client_message_id = cmid,
                    .idempotency_window_s = 60,
                    .message_id = mid,
                    .ts_ms = ts_ms,
                    .value = value,
                    .value_len = strlen(value),
                    .max_len = max_len,
                    .cutoff_ms = cutoff_ms,
                    .publish = publish,
                    .publish_prefix = "C ",
                    .publish_prefix_len = 2};
    result r = {0};
    cr_assert_eq(redis_script_chat(c, &m, on_chat, &r), 0);
    wait_done(&r);
    cr_assert_null(r.err, "%s", r.errtext);
    return r;
}

static result history(redis_client *c, const char *room, int64_t after, int64_t before, int limit,
                      size_t max_bytes, int64_t cutoff_ms) {
    redis_history h = {.room = room,
                       .after_seq = after,
                       .before_seq = before,
                       .limit = limit,
                       .max_bytes = max_bytes,
                       .cutoff_ms = cutoff_ms};
    result r = {0};
    cr_assert_eq(redis_script_history(c, &h, on_history, &r), 0);
    wait_done(&r);
    cr_assert_null(r.err, "%s", r.errtext);
    return r;
}

typedef struct sub_ctx {
    redis_client *c;
    const char *ch;
} sub_ctx;

static bool subscribed(void *p) {
    sub_ctx *s = p;
    return redis_client_subscribed(s->c, s->ch);
}
static bool got_one(void *p) { return ((inbox *)p)->count >= 1; }
static bool got_marker(void *p) {
    inbox *in = p;
    return in->payload_len == 6 && memcmp(in->payload, "marker", 6) == 0;
}

typedef struct check {
    bool *got;
    const char *want;
    size_t len;
} check;

/* Compares the bytes inside the callback, where the reply lives. */
static void check_cb(redis_client *cl, const redis_history_result *h, const char *err, void *data) {
    check *ck = data;
    cr_assert_null(err, "%s", err);
    cr_assert_eq(h->count, 1);
    cr_assert_eq(h->entries[0].value_len, ck->len);
    cr_assert_eq(memcmp(h->entries[0].value, ck->want, ck->len), 0);
    *ck->got = true;
}

TestSuite(redis_client, .init = setup, .fini = teardown, .timeout = 60);

Test(redis_client, chat_script_sequences_and_retries_are_idempotent) {
    test_redis_start(&srv, NULL);
    redis_client *c = client("redis://127.0.0.1:%d", NULL);
    int64_t now = clock_wall_ms();
    result a = chat(c, "room-1", "cm-1", "mid-1", now, "sealed-1", 0, 0, false);
    result b = chat(c, "room-1", "cm-2", "mid-2", now, "sealed-2", 0, 0, false);
    result other = chat(c, "room-2", "cm-1", "mid-x", now, "sealed-x", 0, 0, false);
    cr_assert_eq(a.chat.seq, 1);
    cr_assert_eq(b.chat.seq, 2);
    cr_assert_eq(other.chat.seq, 1, "each room has its own counter");
    cr_assert_not(a.chat.duplicate);
    cr_assert_str_eq(a.chat.message_id, "mid-1");
    cr_assert_eq(a.chat.ts_ms, now);

    /* A retry of cm-1 returns the original, whatever it now carries. */
    result again = chat(c, "room-1", "cm-1", "mid-retry", now + 5, "other", 0, 0, false);
    cr_assert(again.chat.duplicate);
    cr_assert_eq(again.chat.seq, 1);
    cr_assert_str_eq(again.chat.message_id, "mid-1");
    cr_assert_eq(again.chat.ts_ms, now);
    cr_assert_str_eq(again.str, "sealed-1");
    cr_assert_eq(cmd(c, "XLEN", "wsgate:{room-1}:log", NULL).integer, 2, "stored once");
    cr_assert_str_eq(cmd(c, "GET", "wsgate:{room-1}:seq", NULL).str, "2");
    /* The idempotency key expires with the window. */
    char *idem = redis_script_idem_key("room-1", "sender-key", "cm-1");
    long long ttl = cmd(c, "TTL", idem, NULL).integer;
    cr_assert(ttl > 0 && ttl <= 60, "ttl %lld", ttl);
    free(idem);
    /* A chat without clientMessageId always gets a new seq. */
    result n1 = chat(c, "room-1", NULL, "mid-3", now, "v", 0, 0, false);
    result n2 = chat(c, "room-1", NULL, "mid-4", now, "v", 0, 0, false);
    cr_assert_eq(n1.chat.seq, 3);
    cr_assert_eq(n2.chat.seq, 4);
    close_client(c);
}

Test(redis_client, binary_values_pass_through_unchanged) {
    test_redis_start(&srv, NULL);
    redis_client *c = client("redis://127.0.0.1:%d", NULL);
    char value[40];
    for (size_t i = 0; i < sizeof value; i++) value[i] = (char)(i * 37); /* NULs, high bytes */
    redis_chat m = {.room = "bin",
                    .message_id = "m",
                    .ts_ms = clock_wall_ms(),
                    .value = value,
                    .value_len = sizeof value};
    result r = {0};
    cr_assert_eq(redis_script_chat(c, &m, on_chat, &r), 0);
    wait_done(&r);
    cr_assert_null(r.err);
    redis_history h = {.room = "bin", .after_seq = 0, .limit = 10};
    bool got = false;
    check ck = {&got, value, sizeof value};
    cr_assert_eq(redis_script_history(c, &h, check_cb, &ck), 0);
    double end = clock_mono_ms() + 10000;
    while (!got && clock_mono_ms() < end) uv_run(&loop, UV_RUN_ONCE);
    cr_assert(got);
    close_client(c);
}

Test(redis_client, history_pages) {
    test_redis_start(&srv, NULL);
    redis_client *c = client("redis://127.0.0.1:%d", NULL);
    int64_t now = clock_wall_ms();
    for (int i = 1; i <= 10; i++) {
        char mid[16], v[16];
        snprintf(mid, sizeof mid, "m%d", i);
        snprintf(v, sizeof v, "v%d", i);
        cr_assert_eq(chat(c, "h", NULL, mid, now, v, 0, 0, false).chat.seq, i);
    }
    /* Newest page first, oldest first within it. */
    result p = history(c, "h", -1, 0, 4, 0, 0);
    cr_assert_eq(p.hist.count, 4);
    cr_assert_eq(p.hist.entries[0].seq, 7);
    cr_assert_eq(p.hist.entries[3].seq, 10);
    cr_assert_str_eq(p.hist_values[3], "v10");
    cr_assert(p.hist.has_more);
    cr_assert_eq(p.hist.last_seq, 10);
    cr_assert_eq(p.hist.oldest_seq, 1);
    free(p.hist.entries);
    p = history(c, "h", -1, 7, 4, 0, 0); /* beforeSeq = the first seq received */
    cr_assert_eq(p.hist.count, 4);
    cr_assert_eq(p.hist.entries[0].seq, 3);
    cr_assert_eq(p.hist.entries[3].seq, 6);
    cr_assert(p.hist.has_more);
    free(p.hist.entries);
    p = history(c, "h", -1, 3, 4, 0, 0);
    cr_assert_eq(p.hist.count, 2);
    cr_assert_eq(p.hist.entries[0].seq, 1);
    cr_assert_not(p.hist.has_more);
    free(p.hist.entries);
    /* Resume: everything after seq 8, then after 0 (all) in pages. */
    p = history(c, "h", 8, 0, 50, 0, 0);
    cr_assert_eq(p.hist.count, 2);
    cr_assert_eq(p.hist.entries[0].seq, 9);
    cr_assert_str_eq(p.hist_values[0], "v9");
    cr_assert_not(p.hist.has_more);
    free(p.hist.entries);
    p = history(c, "h", 0, 0, 6, 0, 0);
    cr_assert_eq(p.hist.count, 6);
    cr_assert_eq(p.hist.entries[0].seq, 1);
    cr_assert(p.hist.has_more);
    free(p.hist.entries);
    /* The byte budget cuts the page, but the first message always comes. */
    p = history(c, "h", -1, 0, 10, 1, 0);
    cr_assert_eq(p.hist.count, 1);
    cr_assert_eq(p.hist.entries[0].seq, 10);
    cr_assert(p.hist.has_more);
    free(p.hist.entries);
    /* A room that never had a message. */
    p = history(c, "empty", -1, 0, 10, 0, 0);
    cr_assert_eq(p.hist.count, 0);
    cr_assert_eq(p.hist.last_seq, 0);
    cr_assert_eq(p.hist.oldest_seq, 0);
    cr_assert_not(p.hist.has_more);
    free(p.hist.entries);
    close_client(c);
}

Test(redis_client, trimming_by_length_and_age) {
    test_redis_start(&srv, NULL);
    redis_client *c = client("redis://127.0.0.1:%d", NULL);
    int64_t now = clock_wall_ms();
    for (int i = 0; i < 300; i++) chat(c, "capped", NULL, "m", now, "v", 50, 0, false);
    long long len = cmd(c, "XLEN", "wsgate:{capped}:log", NULL).integer;
    /* MAXLEN ~ trims whole Stream nodes (100 entries by default). */
    cr_assert(len >= 50 && len < 300, "XLEN %lld", len);
    cr_assert_str_eq(cmd(c, "GET", "wsgate:{capped}:seq", NULL).str, "300");

    int64_t day = 86400000;
    for (int i = 0; i < 150; i++) chat(c, "aged", NULL, "old", now - 10 * day, "v", 0, 0, false);
    for (int i = 0; i < 3; i++) chat(c, "aged", NULL, "new", now - day / 2, "v", 0, 0, false);
    /* Reads skip what is past the cut even before it is trimmed ... */
    result p = history(c, "aged", 0, 0, 500, 0, now - day);
    cr_assert_eq(p.hist.count, 3);
    cr_assert_eq(p.hist.entries[0].seq, 151);
    cr_assert_eq(p.hist.oldest_seq, 151);
    cr_assert_eq(p.hist.last_seq, 153);
    free(p.hist.entries);
    /* ... and the trim removed the expired entries. */
    cr_assert_eq(cmd(c, "XLEN", "wsgate:{aged}:log", NULL).integer, 3);
    /* A chat trims too. */
    for (int i = 0; i < 5; i++) chat(c, "aged2", NULL, "old", now - 10 * day, "v", 0, 0, false);
    chat(c, "aged2", NULL, "new", now, "v", 0, now - day, false);
    cr_assert_eq(cmd(c, "XLEN", "wsgate:{aged2}:log", NULL).integer, 1);
    close_client(c);
}

Test(redis_client, publish_reaches_another_client_once) {
    test_redis_start(&srv, NULL);
    inbox in = {0};
    redis_client *sub = client("redis://127.0.0.1:%d", &in);
    redis_client *pub = client("redis://127.0.0.1:%d", NULL);
    char *ch = redis_script_channel(0, "lobby");
    cr_assert_str_eq(ch, "wsgate:0:room:lobby");
    redis_client_subscribe(sub, ch);
    redis_client_subscribe(sub, ch); /* idempotent */
    sub_ctx sc = {sub, ch};
    cr_assert(run_until(subscribed, &sc, 10000));
    result r = chat(pub, "lobby", NULL, "m1", clock_wall_ms(), "sealed", 0, 0, true);
    cr_assert(run_until(got_one, &in, 10000));
    cr_assert_str_eq(in.channel, ch);
    char want[64];
    snprintf(want, sizeof want, "C %lld\nsealed", (long long)r.chat.seq);
    cr_assert_eq(in.payload_len, strlen(want));
    cr_assert_eq(memcmp(in.payload, want, in.payload_len), 0);
    /* A retry is not published again: a marker published after it arrives
     * first on the same connection. */
    in = (inbox){0};
    chat(pub, "lobby", "cm", "m2", clock_wall_ms(), "x", 0, 0, true);
    chat(pub, "lobby", "cm", "m2", clock_wall_ms(), "x", 0, 0, true);
    cmd(pub, "PUBLISH", ch, "marker");
    cr_assert(run_until(got_marker, &in, 10000));
    cr_assert_eq(in.count, 2, "the chat and the marker; its retry published nothing");
    /* After unsubscribing, nothing more is delivered. */
    redis_client_unsubscribe(sub, ch);
    cr_assert_not(redis_client_subscribed(sub, ch));
    char *other = redis_script_channel(0, "other");
    redis_client_subscribe(sub, other);
    sub_ctx so = {sub, other};
    cr_assert(run_until(subscribed, &so, 10000));
    in = (inbox){0};
    cmd(pub, "PUBLISH", ch, "late");
    cmd(pub, "PUBLISH", other, "marker");
    cr_assert(run_until(got_marker, &in, 10000));
    cr_assert_eq(in.count, 1);
    cr_assert_str_eq(in.channel, other);
    redis_client_stats st;
    redis_client_get_stats(sub, &st);
    cr_assert_eq(st.channels, 1);
    free(ch);
    free(other);
    close_client(sub);
    close_client(pub);
}

/* Quickly subscribing and unsubscribing leaves exactly the last wish. */
Test(redis_client, subscribe_unsubscribe_churn_ends_subscribed) {
    test_redis_start(&srv, NULL);
    inbox in = {0};
    redis_client *sub = client("redis://127.0.0.1:%d", &in);
    redis_client *pub = client("redis://127.0.0.1:%d", NULL);
    for (int i = 0; i < 5; i++) {
        redis_client_subscribe(sub, "churn");
        uv_run(&loop, UV_RUN_NOWAIT);
        redis_client_unsubscribe(sub, "churn");
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    redis_client_subscribe(sub, "churn");
    sub_ctx sc = {sub, "churn"};
    cr_assert(run_until(subscribed, &sc, 10000));
    cmd(pub, "PUBLISH", "churn", "marker");
    cr_assert(run_until(got_marker, &in, 10000));
    close_client(sub);
    close_client(pub);
}

typedef struct many {
    int done, ok, in_order, next;
} many;

static void many_cb(redis_client *c, const redisReply *r, const char *err, void *data) {
    many *m = data;
    if (r && r->type == REDIS_REPLY_INTEGER) {
        m->ok++;
        if (r->integer == m->next + 1) m->in_order++;
        m->next = (int)r->integer;
    }
    m->done++;
}

static bool many_done(void *p) { return ((many *)p)->done == 200; }

Test(redis_client, commands_of_one_turn_leave_in_few_writes) {
    test_redis_start(&srv, NULL);
    redis_client *c = client("redis://127.0.0.1:%d", NULL);
    redis_client_stats before, after;
    redis_client_get_stats(c, &before);
    many m = {0};
    const char *argv[2] = {"INCR", "counter"};
    for (int i = 0; i < 200; i++)
        cr_assert_eq(redis_client_command_argv(c, 7, many_cb, &m, 2, argv, NULL), 0);
    cr_assert(run_until(many_done, &m, 10000));
    redis_client_get_stats(c, &after);
    cr_assert_eq(m.ok, 200);
    cr_assert_eq(m.in_order, 200, "one affinity: one connection, answered in order");
    cr_assert_eq(after.commands - before.commands, 200);
    cr_log_info("200 commands in %llu writes", (unsigned long long)(after.writes - before.writes));
    cr_assert(after.writes - before.writes <= 5, "%llu writes for 200 commands",
              (unsigned long long)(after.writes - before.writes));
    cr_assert(after.rtt_count - before.rtt_count == 200);
    close_client(c);
}

Test(redis_client, auth_and_select_from_the_url) {
    const char *extra[] = {"--requirepass", "p@ss word", NULL};
    test_redis_start(&srv, extra);
    redis_client *c = client("redis://default:p%%40ss%%20word@127.0.0.1:%d/3", NULL);
    cmd(c, "SET", "where", "db3");
    redisContext *bc = test_redis_connect(&srv);
    redisReply *r = redisCommand(bc, "AUTH %s", "p@ss word");
    freeReplyObject(r);
    r = redisCommand(bc, "SELECT 3");
    freeReplyObject(r);
    r = redisCommand(bc, "GET where");
    cr_assert_str_eq(r->str, "db3");
    freeReplyObject(r);
    redisFree(bc);
    close_client(c);

    /* A wrong password never comes up, and its commands fail fast. */
    redis_client_options o = {.url = url_of("redis://:wrong@127.0.0.1:%d", srv.port),
                              .backoff_min_ms = 20,
                              .backoff_max_ms = 100};
    redis_client *bad = redis_client_new(&loop, &o);
    track(bad);
    double end = clock_mono_ms() + 1000;
    while (clock_mono_ms() < end) uv_run(&loop, UV_RUN_ONCE);
    cr_assert_not(redis_client_up(bad));
    redis_client_stats st;
    redis_client_get_stats(bad, &st);
    cr_assert(st.connect_failures >= 2, "%llu", (unsigned long long)st.connect_failures);
    cr_assert_eq(st.connects, 0);
    result res = {0};
    const char *argv[1] = {"PING"};
    cr_assert_eq(redis_client_command_argv(bad, REDIS_CLIENT_ANY, on_reply, &res, 1, argv, NULL),
                 -1);
    wait_done(&res);
    cr_assert_eq(res.err, REDIS_CLIENT_E_DOWN);
    close_client(bad);
}

Test(redis_client, noscript_falls_back_to_eval) {
    test_redis_start(&srv, NULL);
    redis_client *c = client("redis://127.0.0.1:%d", NULL);
    cr_assert_eq(chat(c, "s", NULL, "m", clock_wall_ms(), "v", 0, 0, false).chat.seq, 1);
    cmd(c, "SCRIPT", "FLUSH", NULL);
    cr_assert_eq(cmd(c, "SCRIPT", "EXISTS", redis_script_sha(REDIS_SCRIPT_CHAT)).type,
                 REDIS_REPLY_ARRAY);
    cr_assert_eq(chat(c, "s", NULL, "m", clock_wall_ms(), "v", 0, 0, false).chat.seq, 2);
    close_client(c);
}

static bool got_reply_sync;
static void sync_cb(redis_client *c, const redisReply *r, const char *err, void *data) {
    got_reply_sync = true;
    on_reply(c, r, err, data);
}

static bool all_back(void *c) {
    redis_client_stats st;
    redis_client_get_stats(c, &st);
    return st.reconnects == 3;
}

Test(redis_client, fails_fast_while_down_then_reconnects_and_resubscribes) {
    test_redis_start(&srv, NULL);
    inbox in = {0};
    redis_client *c = client("redis://127.0.0.1:%d", &in);
    redis_client_subscribe(c, "room-ch");
    sub_ctx sc = {c, "room-ch"};
    cr_assert(run_until(subscribed, &sc, 10000));
    int port = srv.port;

    test_redis_stop(&srv);
    cr_assert(run_until(is_down, c, 10000));
    cr_assert_not(redis_client_subscribed(c, "room-ch"));
    /* Fail fast: refused at once, answered on the next turn, not inside. */
    result r = {0};
    got_reply_sync = false;
    const char *argv[1] = {"PING"};
    cr_assert_eq(redis_client_command_argv(c, REDIS_CLIENT_ANY, sync_cb, &r, 1, argv, NULL), -1);
    cr_assert_not(got_reply_sync);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert(r.done);
    cr_assert_eq(r.err, REDIS_CLIENT_E_DOWN);
    result ch = {0};
    redis_chat m = {.room = "x", .message_id = "m", .value = "v", .value_len = 1};
    cr_assert_eq(redis_script_chat(c, &m, on_chat, &ch), -1);
    wait_done(&ch);
    cr_assert_eq(ch.err, REDIS_CLIENT_E_DOWN);
    /* Still down a while later: retries keep failing, nothing queues. */
    double end = clock_mono_ms() + 500;
    while (clock_mono_ms() < end) uv_run(&loop, UV_RUN_ONCE);
    cr_assert_not(redis_client_up(c));

    srv.port = port;
    test_redis_start(&srv, NULL);
    cr_assert(run_until(is_up, c, 10000));
    cr_assert(run_until(subscribed, &sc, 10000), "resubscribed after the reconnect");
    cr_assert(run_until(all_back, c, 10000), "all three connections came back");
    redis_client_stats st;
    redis_client_get_stats(c, &st);
    cr_assert(st.failed_fast >= 2);
    redis_client *pub = client("redis://127.0.0.1:%d", NULL);
    cmd(pub, "PUBLISH", "room-ch", "marker");
    cr_assert(run_until(got_marker, &in, 10000));
    cr_assert_eq(chat(c, "x", NULL, "m", clock_wall_ms(), "v", 0, 0, false).chat.seq, 1,
                 "a fresh Redis (no persistence) starts the room again");
    close_client(pub);
    close_client(c);
}

Test(redis_client, unresponsive_server_is_dropped_and_retried) {
    test_redis_start(&srv, NULL);
    redis_client_options o = {.url = url_of("redis://127.0.0.1:%d", srv.port),
                              .command_timeout_ms = 300,
                              .backoff_min_ms = 20,
                              .backoff_max_ms = 100};
    redis_client *c = redis_client_new(&loop, &o);
    track(c);
    cr_assert(run_until(is_up, c, 10000));
    /* Another connection pauses every client's commands for 1.5 s. */
    redisContext *bc = test_redis_connect(&srv);
    redisReply *rep = redisCommand(bc, "CLIENT PAUSE 1500 ALL");
    cr_assert_eq(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    redisFree(bc);
    result r = {0};
    const char *argv[2] = {"GET", "k"};
    cr_assert_eq(redis_client_command_argv(c, REDIS_CLIENT_ANY, on_reply, &r, 2, argv, NULL), 0);
    wait_done(&r);
    cr_assert_eq(r.err, REDIS_CLIENT_E_TIMEOUT);
    redis_client_stats st;
    redis_client_get_stats(c, &st);
    cr_assert_eq(st.timeouts, 1);
    cr_assert_eq(st.dropped, 1);
    /* Once the pause is over it is usable again. */
    cr_assert(run_until(is_up, c, 10000));
    cmd(c, "SET", "k", "v");
    close_client(c);
}

Test(redis_client, close_answers_commands_in_flight) {
    test_redis_start(&srv, NULL);
    redis_client *c = client("redis://127.0.0.1:%d", NULL);
    result r = {0};
    const char *argv[3] = {"BLPOP", "nothing", "5"};
    cr_assert_eq(redis_client_command_argv(c, REDIS_CLIENT_ANY, on_reply, &r, 3, argv, NULL), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    close_client(c);
    cr_assert_not(r.done, "closing is deferred to the next turn");
    wait_done(&r);
    cr_assert_eq(r.err, REDIS_CLIENT_E_CLOSED);
}

Test(redis_client, ipv6_loopback) {
    const char *extra[] = {"--bind", "127.0.0.1", "::1", NULL};
    test_redis_start(&srv, extra);
    redis_client *c = client("redis://[::1]:%d/1", NULL);
    cmd(c, "SET", "v6", "yes");
    cr_assert_str_eq(cmd(c, "GET", "v6", NULL).str, "yes");
    close_client(c);
}

/* A host name is looked up off the loop (libuv's thread pool); one that
 * does not resolve is a failed attempt like a refused connection. */
Test(redis_client, host_names_are_resolved) {
    test_redis_start(&srv, NULL);
    redis_client *c = client("redis://localhost:%d", NULL);
    cr_assert(strncmp(redis_client_name(c), "localhost:", 10) == 0);
    cmd(c, "SET", "named", "yes");
    close_client(c);

    redis_client_options o = {.url = url_of("redis://no-such-host.invalid:%d", srv.port),
                              .connect_timeout_ms = 1000,
                              .backoff_min_ms = 20,
                              .backoff_max_ms = 100};
    redis_client *bad = redis_client_new(&loop, &o);
    track(bad);
    double end = clock_mono_ms() + 15000;
    redis_client_stats st = {0};
    while (clock_mono_ms() < end && st.connect_failures < 2) {
        uv_run(&loop, UV_RUN_ONCE);
        redis_client_get_stats(bad, &st);
    }
    cr_assert(st.connect_failures >= 2, "%llu", (unsigned long long)st.connect_failures);
    cr_assert_not(redis_client_up(bad));
    /* Closed while a lookup may be in flight: freed once it returns. */
    close_client(bad);
}

/* The primary's replication INFO shows a replica online. */
static bool replica_online(const test_redis *primary) {
    redisContext *bc = test_redis_connect(primary);
    redisReply *r = bc && !bc->err ? redisCommand(bc, "INFO replication") : NULL;
    bool online = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "state=online");
    if (r) freeReplyObject(r);
    if (bc) redisFree(bc);
    return online;
}

static result chat_replicated(redis_client *c, const char *mid, int min_replicas) {
    redis_chat m = {.room = "rep",
                    .message_id = mid,
                    .ts_ms = clock_wall_ms(),
                    .value = "v",
                    .value_len = 1,
                    .min_replicas = min_replicas,
                    .wait_timeout_ms = 300};
    result r = {0};
    cr_assert_eq(redis_script_chat(c, &m, on_chat, &r), 0);
    wait_done(&r);
    return r;
}

/* redis_min_replicas: a chat is answered only once a replica has it, and
 * with an error when no replica acknowledged it in time. */
Test(redis_client, chat_waits_for_replicas) {
    test_redis_start(&srv, NULL);
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    const char *extra[] = {"--replicaof", "127.0.0.1", port, NULL};
    test_redis_start(&replica, extra);
    double end = clock_mono_ms() + 15000;
    while (!replica_online(&srv) && clock_mono_ms() < end) usleep(50000);
    cr_assert(replica_online(&srv), "the replica never came online");
    redis_client *c = client("redis://127.0.0.1:%d", NULL);

    result r = chat_replicated(c, "m1", 1);
    cr_assert_null(r.err, "%s", r.errtext);
    cr_assert_eq(r.chat.seq, 1);
    /* It is on the replica. */
    redisContext *bc = test_redis_connect(&replica);
    redisReply *rep = redisCommand(bc, "XLEN wsgate:{rep}:log");
    cr_assert_eq(rep->integer, 1);
    freeReplyObject(rep);
    redisFree(bc);

    /* Two replicas asked, one exists: stored on the primary, reported. */
    r = chat_replicated(c, "m2", 2);
    cr_assert_not_null(r.err);
    cr_assert(strstr(r.errtext, "reached 1 of 2 replicas"), "%s", r.errtext);
    test_redis_stop(&replica);
    r = chat_replicated(c, "m3", 1);
    cr_assert_not_null(r.err);
    cr_assert(strstr(r.errtext, "reached 0 of 1 replicas"), "%s", r.errtext);
    /* Without the option the primary's answer is enough. */
    r = chat_replicated(c, "m4", 0);
    cr_assert_null(r.err, "%s", r.errtext);
    cr_assert_eq(r.chat.seq, 4, "m2 and m3 were stored on the primary");
    close_client(c);
}

/* A command written with redis_client_flush is in Redis before the loop
 * polls again: another connection (blocking, outside the loop) sees it.
 * Without the flush hiredis writes it on the loop's next poll. */
Test(redis_client, flush_writes_before_the_loop_polls) {
    test_redis_start(&srv, NULL);
    redis_client *c = client("redis://127.0.0.1:%d", NULL);
    result r = {0};
    redis_client_command_argv(c, REDIS_CLIENT_ANY, on_reply, &r, 3,
                              (const char *[]){"SET", "flushed", "yes"}, NULL);
    redis_client_subscribe(c, "flush-channel");
    redis_client_flush(c);
    redis_client_flush(c); /* nothing left: no harm */
    redisContext *raw = test_redis_connect(&srv);
    /* Redis runs what reached its socket in order of arrival: poll it a
     * little (it is another process), without running our loop. */
    redisReply *got = test_redis_await_string(raw, "flushed");
    cr_assert_not_null(got, "the SET never reached Redis while the loop did not run");
    cr_assert_str_eq(got->str, "yes");
    freeReplyObject(got);
    redisReply *n = redisCommand(raw, "PUBSUB NUMSUB flush-channel");
    cr_assert(n && n->type == REDIS_REPLY_ARRAY && n->elements == 2);
    cr_assert_eq(n->element[1]->integer, 1, "the SUBSCRIBE was written too");
    freeReplyObject(n);
    redisFree(raw);
    wait_done(&r);
    redis_client_flush(NULL);
}

typedef struct counted {
    bool done;
    int rc;
    char sums[256];
} counted;

static void on_counts(void *data, int rc, const char *err, const strmap *sums) {
    counted *k = data;
    k->done = true;
    k->rc = rc;
    /* room=count in a fixed order of the test's rooms */
    const char *rooms[] = {"a", "b", "c"};
    for (size_t i = 0; rc == 0 && i < 3; i++) {
        size_t len = strlen(k->sums);
        snprintf(k->sums + len, sizeof(k->sums) - len, "%s=%zu ", rooms[i],
                 (size_t)(uintptr_t)strmap_get(sums, rooms[i]));
    }
}

static bool counted_done(void *p) { return ((counted *)p)->done; }

/* The on-demand read: live workers of other nodes only (a stale
 * heartbeat, or this node's own, does not count), summed over servers. */
Test(redis_client, counts_read_sums_live_workers_of_other_nodes) {
    test_redis_start(&srv, NULL);
    redis_client *c = client("redis://127.0.0.1:%d", NULL);
    char now[24], old[24];
    snprintf(now, sizeof now, "%lld", (long long)clock_wall_ms());
    snprintf(old, sizeof old, "%lld", (long long)clock_wall_ms() - 60000);
    cmd(c, "DEL", "wsgate:workers", NULL);
    result r = {0};
    const char *zadd[] = {"ZADD", "wsgate:workers", now, "n1.0",  now, "n1.1",
                          now,    "me.0",           old, "dead.0"};
    redis_client_command_argv(c, REDIS_CLIENT_ANY, on_reply, &r, 10, zadd, NULL);
    wait_done(&r);
    const char *hsets[][4] = {{"HSET", "wsgate:w:n1.0:rooms", "a", "2"},
                              {"HSET", "wsgate:w:n1.1:rooms", "a", "3"},
                              {"HSET", "wsgate:w:n1.1:rooms", "b", "1"},
                              {"HSET", "wsgate:w:me.0:rooms", "c", "7"},
                              {"HSET", "wsgate:w:dead.0:rooms", "b", "9"}};
    for (size_t i = 0; i < 5; i++) {
        r = (result){0};
        redis_client_command_argv(c, REDIS_CLIENT_ANY, on_reply, &r, 4, hsets[i], NULL);
        wait_done(&r);
    }
    /* the same server twice, as two shards: each sum counted per server */
    redis_client *shards[] = {c, c};
    counted k = {0};
    redis_counts_rooms(c, shards, 1, "me", clock_wall_ms() - 30000, on_counts, &k);
    cr_assert_not(k.done, "never from inside the call");
    cr_assert(run_until(counted_done, &k, 10000));
    cr_assert_eq(k.rc, 0);
    cr_assert_str_eq(k.sums, "a=5 b=1 c=0 ");
    k = (counted){0};
    redis_counts_rooms(c, shards, 2, "me", clock_wall_ms() - 30000, on_counts, &k);
    cr_assert(run_until(counted_done, &k, 10000));
    cr_assert_str_eq(k.sums, "a=10 b=2 c=0 ");
    /* a server that cannot be asked fails the read */
    redis_client *broken[] = {c, NULL};
    k = (counted){0};
    redis_counts_rooms(c, broken, 2, "me", clock_wall_ms() - 30000, on_counts, &k);
    cr_assert(run_until(counted_done, &k, 10000));
    cr_assert_eq(k.rc, -1);
}
