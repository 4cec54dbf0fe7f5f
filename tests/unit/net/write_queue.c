/* Unit tests for a connection's write queue (src/net/write_queue.c) on a
 * real loopback socket: a worker started with server_start_worker, one
 * client upgraded by hand, frames queued with conn_send and written by
 * the loop. What the client reads is the byte-exact concatenation of the
 * frames, in order, whether the kernel took them at once or a few bytes
 * at a time (partial writes in the middle of a frame); one frame bigger
 * than max_queued_bytes is taken by an empty queue (issue 18); a queue
 * past the ceiling cuts its consumer. Decided by behaviour: waits are
 * bounded generously, never timed. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "app/echo.h"
#include "common/alloc.h"
#include "config/config.h"
#include "log/log.h"
#include "net/conn.h"
#include "net/conn_internal.h"
#include "net/server.h"

static config cfg;
static server srv;
static uv_loop_t loop;
static int client = -1;
static conn *c; /* the server's side of client */

static void set(const char *assignment) {
    wsg_error err;
    cr_assert_eq(config_set(&cfg, assignment, &err), 0, "%s: %s", assignment, err.message);
}

/* Run the loop until done() holds; false if it never does (2 minutes). */
static bool run_until(bool (*done)(void)) {
    time_t give_up = time(NULL) + 120;
    while (!done()) {
        if (time(NULL) > give_up) return false;
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(500);
    }
    return true;
}

static bool upgraded(void) {
    c = srv.conns;
    return c && c->state == CONN_OPEN;
}

/* Read from client until n bytes are in out (the loop runs meanwhile, so
 * the server keeps writing). */
static void read_exactly(uint8_t *out, size_t n) {
    size_t got = 0;
    time_t give_up = time(NULL) + 120;
    while (got < n) {
        ssize_t r = recv(client, out + got, n - got, MSG_DONTWAIT);
        if (r > 0) got += (size_t)r;
        else {
            cr_assert(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "recv: %s",
                      r == 0 ? "EOF" : strerror(errno));
            cr_assert(time(NULL) <= give_up, "read %zu of %zu bytes", got, n);
            uv_run(&loop, UV_RUN_NOWAIT);
            usleep(500);
        }
    }
}

static void start(const char *max_queued, int client_rcvbuf) {
    log_init(LOG_OFF, NULL);
    config_init_defaults(&cfg);
    set("listen=127.0.0.1");
    set("mode=echo");
    set(max_queued);
    set("slow_consumer_timeout_ms=600000");
    uv_loop_init(&loop);
    cr_assert_eq(server_start_worker(&srv, &loop, &cfg, echo_handlers(), NULL, 0, false), 0);
    server_enter(&srv);

    client = socket(AF_INET, SOCK_STREAM, 0);
    if (client_rcvbuf)
        setsockopt(client, SOL_SOCKET, SO_RCVBUF, &client_rcvbuf, sizeof client_rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.bound_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(client, (struct sockaddr *)&a, sizeof a), 0);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     cfg.stage_name);
    cr_assert_eq(send(client, req, (size_t)n, 0), n);
    cr_assert(run_until(upgraded), "the connection never upgraded");
    /* the 101's head, up to its blank line */
    char head[1024];
    size_t hl = 0;
    while (hl < 4 || memcmp(head + hl - 4, "\r\n\r\n", 4) != 0) {
        cr_assert(hl < sizeof head - 1);
        read_exactly((uint8_t *)head + hl, 1);
        hl++;
    }
    cr_assert(strncmp(head, "HTTP/1.1 101", 12) == 0);
}

static bool no_conns(void) { return srv.nconns == 0; }

static void stop(void) {
    close(client);
    run_until(no_conns);
    server_shutdown(&srv);
    server_shutdown(&srv); /* and stop waiting for clients */
    uv_run(&loop, UV_RUN_DEFAULT);
    server_free(&srv);
    if (uv_loop_close(&loop) != 0) {
        uv_walk(&loop, (uv_walk_cb)uv_close, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    config_free(&cfg);
    memset(&srv, 0, sizeof srv);
}

/* The bytes of a server frame (unmasked, FIN, text) carrying len bytes of
 * fill, appended to out; returns the new length. */
static size_t expect_frame(uint8_t *out, size_t at, size_t len, uint8_t fill) {
    out[at++] = 0x81;
    if (len < 126) {
        out[at++] = (uint8_t)len;
    } else if (len < 65536) {
        out[at++] = 126;
        out[at++] = (uint8_t)(len >> 8);
        out[at++] = (uint8_t)len;
    } else {
        out[at++] = 127;
        for (int i = 7; i >= 0; i--) out[at++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memset(out + at, fill, len);
    return at + len;
}

static bool drained(void) { return c->wq_bytes == 0; }

Test(write_queue, frames_go_out_once_in_order) {
    start("max_queued_bytes=1048576", 0);
    size_t cap = 200 * 140, n = 0;
    uint8_t *want = xmalloc(cap), *got = xmalloc(cap);
    char payload[130];
    for (int i = 0; i < 200; i++) {
        size_t len = (size_t)(i % 130);
        memset(payload, 'a' + i % 26, len);
        cr_assert_eq(conn_send_data(c, WS_OP_TEXT, payload, len), 0);
        n = expect_frame(want, n, len, (uint8_t)('a' + i % 26));
    }
    cr_assert(run_until(drained));
    read_exactly(got, n);
    cr_assert_arr_eq(got, want, n);
    cr_assert_eq(recv(client, got, 1, MSG_DONTWAIT), -1, "nothing more than what was sent");
    free(want);
    free(got);
    stop();
}

Test(write_queue, a_slow_reader_gets_every_byte_in_order) {
    /* A tiny send buffer on the server's side and a tiny receive buffer on
     * the client's: the kernel takes a few KiB at a time, so frames are
     * written in pieces and the queue holds the rest. */
    start("max_queued_bytes=67108864", 4096);
    uv_send_buffer_size((uv_handle_t *)&c->tcp, &(int){4096});
    enum { FRAMES = 64, LEN = 16384 };
    size_t cap = FRAMES * (LEN + 4), n = 0;
    uint8_t *want = xmalloc(cap), *got = xmalloc(cap), *payload = xmalloc(LEN);
    for (int i = 0; i < FRAMES; i++) {
        memset(payload, 'A' + i % 26, LEN);
        cr_assert_eq(conn_send_data(c, WS_OP_TEXT, payload, LEN), 0);
        n = expect_frame(want, n, LEN, (uint8_t)('A' + i % 26));
    }
    uv_run(&loop, UV_RUN_NOWAIT); /* one turn: one writev, most of it left */
    cr_assert_gt(c->wq_bytes, 0, "the kernel took %zu bytes at once", n);
    read_exactly(got, n);
    cr_assert_arr_eq(got, want, n);
    cr_assert(run_until(drained));
    free(want);
    free(got);
    free(payload);
    stop();
}

Test(write_queue, one_frame_over_the_limit_is_taken_by_an_empty_queue) {
    start("max_queued_bytes=65536", 0);
    size_t len = 200000;
    uint8_t *payload = xmalloc(len), *want = xmalloc(len + 10), *got = xmalloc(len + 10);
    memset(payload, 'z', len);
    cr_assert_eq(conn_send_data(c, WS_OP_TEXT, payload, len), 0);
    size_t n = expect_frame(want, 0, len, 'z');
    read_exactly(got, n);
    cr_assert_arr_eq(got, want, n);
    free(payload);
    free(want);
    free(got);
    stop();
}

Test(write_queue, a_queue_past_the_ceiling_cuts_its_consumer) {
    start("max_queued_bytes=65536", 4096);
    uv_send_buffer_size((uv_handle_t *)&c->tcp, &(int){4096});
    uint8_t payload[8192];
    memset(payload, 'q', sizeof payload);
    int rc = 0;
    size_t sent = 0;
    /* The client never reads: within the ceiling (4 x 64 KiB) plus what
     * the kernel holds, a send is refused and the connection closes. */
    while (rc == 0 && sent < 64u * 1024 * 1024) {
        rc = conn_send_data(c, WS_OP_TEXT, payload, sizeof payload);
        sent += sizeof payload;
    }
    cr_assert_eq(rc, WSG_E_NET_SLOW_CONSUMER, "%s after %zu bytes", wsg_err_name(rc), sent);
    cr_assert_lt(c->wq_bytes, 65536u * CONN_QUEUE_CEILING + sizeof payload);
    cr_assert_eq(conn_send_data(c, WS_OP_TEXT, "x", 1), WSG_E_NET_NOT_OPEN);
    stop();
}

Test(write_queue, a_backlog_is_not_expired_the_moment_it_starts) {
    start("max_queued_bytes=65536", 4096);
    uv_send_buffer_size((uv_handle_t *)&c->tcp, &(int){4096});
    uint8_t payload[8192];
    memset(payload, 'q', sizeof payload);
    /* The clock started at uv_now | 1 once: on an even millisecond that is
     * a moment in the future, so now - since wrapped and a consumer was cut
     * as "not drained" (stuckMs -1) at once instead of after
     * slow_consumer_timeout_ms. Start the backlog on an even millisecond. */
    do uv_update_time(&loop);
    while (uv_now(&loop) % 2 != 0);
    size_t sent = 0;
    while (c->wq_bytes <= 65536 && sent < 4u * 65536) {
        cr_assert_eq(conn_send_data(c, WS_OP_TEXT, payload, sizeof payload), 0);
        sent += sizeof payload;
    }
    cr_assert_gt(c->wq_bytes, 65536u, "the queue never passed the limit");
    cr_assert_not(conn_backlog_expired(c, uv_now(&loop)));
    cr_assert_not(conn_backlog_expired(c, uv_now(&loop) + 599999));
    cr_assert(conn_backlog_expired(c, uv_now(&loop) + 600000));
    stop();
}

/* [perf16b] A post that arrives while frames wait for the loop's flush
 * (a chat committed while the loop writes the previous one to a room) runs
 * before the flush writes them: what it queues goes out in the same send,
 * after what was queued first. It used to wait until the flush had
 * written everything and then cost every member a second send. */
static size_t queued_when_post_ran;
static bool post_ran;

static void post_second(server *s, server_inbox_item *it, bool dropped) {
    if (dropped) return;
    post_ran = true;
    queued_when_post_ran = c->wq_bytes;
    cr_assert_eq(conn_send(c, it->f), 0);
}

static bool post_written(void) { return post_ran && c->wq_bytes == 0; }

Test(write_queue, a_post_waiting_at_the_flush_joins_its_send) {
    start("max_queued_bytes=1048576", 0);
    cr_assert_eq(conn_send_data(c, WS_OP_TEXT, "first", 5), 0);
    /* The server releases the item's frame reference after the run. */
    server_inbox_item it = {.run = post_second, .f = ws_frame_new(WS_OP_TEXT, "second", 6)};
    server_post(&srv, &it);
    cr_assert(run_until(post_written));
    cr_assert_eq(queued_when_post_ran, 7u, "the first frame was written before the post ran");
    uint8_t want[64], got[64];
    size_t n = 0;
    memcpy(want + n,
           "\x81\x05"
           "first",
           7);
    n += 7;
    memcpy(want + n,
           "\x81\x06"
           "second",
           8);
    n += 8;
    read_exactly(got, n);
    cr_assert_arr_eq(got, want, n);
    stop();
}
