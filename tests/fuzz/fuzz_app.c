/* libFuzzer target for the API application: JSON routing (src/app/router.c),
 * the throttling checks and every route handler (src/app/app.c,
 * src/app/handlers.c) with the registry (src/app/registry.c) and the store.
 *
 * Each input builds a fresh app on a fresh loop (SQLite ":memory:" store),
 * a fake server and three fake open connections: alice in "general", bob in
 * "general" and alice again in "lobby" (so rooms, users with two
 * connections and private messages all have somebody to reach). The input
 * is split on 0x00 bytes into messages; each message's first byte picks the
 * session (byte % 3) and, with bit 2 set, a binary opcode; the rest is the
 * message. After each message the store's completions (chat broadcasts) are
 * run and every frame the fake connections were sent is checked and
 * released. At the end the connections close through the app's on_close
 * ($disconnect) and everything is freed, so LeakSanitizer sees no leak. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "app/app.h"
#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "net/conn.h"
#include "net/server.h"
#include "ws/frame.h"

#include "fuzz_harness.h"

#define NCONN 3

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    harness_begin();
    /* Small buckets so that inputs reach the throttled paths too. */
    harness_set("route_throttling={ chat = { burst_limit = 4, rate_limit = 1 }, typing_indicator = "
                "{ burst_limit = 2, rate_limit = 1 } }");
    harness_set("connection_burst_limit=40");
    harness_set("connection_rate_limit=1");
    harness_set("custom_routes=[\"chat\",\"join_room\",\"leave_room\",\"private_message\",\"room_"
                "list\",\"typing_indicator\",\"custom\"]");
    harness_finish();
    return 0;
}

/* Check and release every frame queued on c (nothing writes them). */
static void release_queue(conn *c) {
    for (uint32_t i = 0; i < harness_queue_len(c); i++) {
        ws_frame *f = harness_queued(c, i);
        require(f->len >= 2);
        uint8_t op = f->data[0] & 0x0F;
        require(f->data[0] & 0x80);    /* FIN: the app never fragments */
        require(!(f->data[1] & 0x80)); /* server frames are unmasked */
        if (op == WS_OP_TEXT) {
            /* Everything the app sends is a JSON object with a string "type". */
            size_t n = f->data[1] & 0x7F, off = 2;
            if (n == 126) {
                n = (size_t)f->data[2] << 8 | f->data[3];
                off = 4;
            } else if (n == 127) {
                n = 0;
                for (int k = 0; k < 8; k++) n = n << 8 | f->data[2 + k];
                off = 10;
            }
            require(off + n == f->len);
            json_error_t jerr;
            json_t *j = json_loadb((const char *)f->data + off, n, 0, &jerr);
            require(j && json_is_object(j));
            require(json_is_string(json_object_get(j, "type")));
            json_decref(j);
        } else {
            require(op == WS_OP_CLOSE || op == WS_OP_BINARY);
        }
        ws_frame_unref(f);
    }
    harness_reset_queue(c);
}

static void release_all(server *srv, conn *conns) {
    for (int i = 0; i < NCONN; i++) release_queue(&conns[i]);
    srv->dirty = NULL;
}

static void tick(uv_timer_t *t) {}

/* Run the store's completions (chat broadcasts) until none is pending. The
 * store's wake-up handle is unreferenced (it must not keep a server alive),
 * so a referenced timer keeps uv_run polling meanwhile. */
static void settle(app *a, uv_timer_t *timer) {
    if (store_pending(a->store) > 0) {
        uv_timer_start(timer, tick, 1, 1);
        while (store_pending(a->store) > 0) uv_run(a->loop, UV_RUN_ONCE);
        uv_timer_stop(timer);
    }
    uv_run(a->loop, UV_RUN_NOWAIT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uv_loop_t loop;
    require(uv_loop_init(&loop) == 0);
    app *a = harness_app_new(&loop);
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    server *srv = harness_server(&loop, a);

    static const char *const users[NCONN] = {"alice", "bob", "alice"};
    static const char *const names[NCONN] = {"Alice", "Bob", "Alice2"};
    static const char *const rooms[NCONN] = {"general", "general", "lobby"};
    static const char *const ips[NCONN] = {"127.0.0.1", "127.0.0.2", "::1"};
    conn *conns = calloc(NCONN, sizeof(conn));
    session *sess[NCONN];
    for (int i = 0; i < NCONN; i++) {
        conn *c = &conns[i];
        c->state = CONN_OPEN;
        c->srv = srv;
        c->opened = true;
        snprintf(c->id, sizeof(c->id), "Aconn%011d", i);
        c->source_ip = ips[i];
        c->next = i + 1 < NCONN ? &conns[i + 1] : NULL;
        c->prev = i > 0 ? &conns[i - 1] : NULL;
        sess[i] = harness_open(a, c, users[i], names[i], rooms[i]);
    }
    srv->conns = conns;
    srv->nconns = srv->nopen = NCONN;

    size_t off = 0;
    while (off < size) {
        const uint8_t *msg = data + off;
        const uint8_t *end = memchr(msg, 0, size - off);
        size_t len = end ? (size_t)(end - msg) : size - off;
        off += len + 1;
        if (len == 0) continue;
        uint8_t sel = msg[0];
        int i = sel % NCONN;
        uint8_t op = (sel & 4) ? WS_OP_BINARY : WS_OP_TEXT;
        app_handle_message(app_hub(a, 0), sess[i], op, msg + 1, len - 1);
        settle(a, &timer);
        release_all(srv, conns);
    }

    /* $disconnect for each, through the app's on_close. */
    for (int i = 0; i < NCONN; i++) {
        conn *c = &conns[i];
        c->state = CONN_CLOSED;
        srv->nopen--;
        srv->handlers->on_close(c);
        require(c->app == NULL);
        release_all(srv, conns);
    }
    registry *reg = &app_hub(a, 0)->reg;
    require(reg->by_id.count == 0 && reg->rooms.count == 0 && reg->users.count == 0);
    require(engine_conn_total(a->engine) == 0 && engine_room_total(a->engine) == 0);
    settle(a, &timer);
    release_all(srv, conns);

    uv_close((uv_handle_t *)&timer, NULL);
    app_close(a);
    harness_server_close(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    server_free(srv);
    require(uv_loop_close(&loop) == 0);
    free(a);
    free(conns);
    free(srv);
    return 0;
}
