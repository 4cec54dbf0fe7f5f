/* Unit tests for the local engine's routing (src/engine/local.c), with no
 * sockets: two servers built by hand on one uv loop (their inboxes only,
 * as the fuzz harness builds its server), fake connections registered in
 * the engine as their workers would, and delivery callbacks that record
 * what each worker is handed. The test thread enters no server (as the
 * store thread), so everything it sends is posted; each server's inbox is
 * then run with server_run_inbox and the records are checked: which
 * worker, which ids and flags, in which order. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "engine/engine.h"
#include "net/conn.h"
#include "net/server.h"
#include "ws/frame.h"

/* ---- what the workers are handed ---- */

typedef enum { D_ROOM, D_USER, D_CONN, D_CLOSE, D_CALL } d_kind;

typedef struct delivery {
    d_kind kind;
    char key[64];    /* room, user or connection id */
    char except[32]; /* "" for NULL */
    ws_frame *f;     /* compared by identity (the test holds a reference) */
    unsigned flags;
    bool counted;
    uint16_t code;
    char reason[64];
    bool on_own_thread; /* the callback ran with the worker's server entered */
} delivery;

typedef struct hub_rec {
    int index;
    delivery d[8192];
    int n;
} hub_rec;

static uv_loop_t loop;
static server *srv[2];
static hub_rec hubs[2];
static engine *eng;
/* The thread that runs the inboxes: set to each worker while its inbox
 * runs, as a worker thread would have entered its server. */
static int running_worker = -1;

static delivery *add(void *hub, d_kind kind) {
    hub_rec *h = hub;
    cr_assert_lt(h->n, 8192);
    delivery *d = &h->d[h->n++];
    memset(d, 0, sizeof(*d));
    d->kind = kind;
    d->on_own_thread = running_worker == h->index || server_current() == srv[h->index];
    return d;
}

static void rec_room(void *hub, const char *room_id, ws_frame *f, const char *except,
                     unsigned flags) {
    delivery *d = add(hub, D_ROOM);
    snprintf(d->key, sizeof(d->key), "%s", room_id);
    snprintf(d->except, sizeof(d->except), "%s", except ? except : "");
    cr_assert(except == NULL || *except, "an empty except is passed as NULL");
    d->f = f;
    d->flags = flags;
}

static void rec_user(void *hub, const char *user_id, ws_frame *f) {
    delivery *d = add(hub, D_USER);
    snprintf(d->key, sizeof(d->key), "%s", user_id);
    d->f = f;
}

static void rec_conn(void *hub, const char *conn_id, ws_frame *f, bool counted) {
    delivery *d = add(hub, D_CONN);
    snprintf(d->key, sizeof(d->key), "%s", conn_id);
    d->f = f;
    d->counted = counted;
}

static void rec_close(void *hub, const char *conn_id, uint16_t code, const char *reason) {
    delivery *d = add(hub, D_CLOSE);
    snprintf(d->key, sizeof(d->key), "%s", conn_id);
    d->code = code;
    snprintf(d->reason, sizeof(d->reason), "%s", reason ? reason : "");
}

static const engine_deliver rec_deliver = {
    .room = rec_room, .user = rec_user, .conn = rec_conn, .close = rec_close};

/* ---- fixtures ---- */

/* Fake connections: worker 0 owns ids starting with 'A', worker 1 'B'. */
static conn c0a, c0b, c1a, c1b;
static directory_conn rec_c0a, rec_c0b, rec_c1a, rec_c1b; /* their records, as sessions hold them */

static void fake(conn *c, int worker, const char *id) {
    memset(c, 0, sizeof(*c));
    c->srv = srv[worker];
    memcpy(c->id, id, CONN_ID_LEN + 1);
    c->source_ip = worker == 0 ? "10.0.0.1" : "10.0.0.2";
    c->connected_at = 1700000000 + worker;
}

static void setup(void) {
    cr_assert_eq(uv_loop_init(&loop), 0);
    eng = engine_local_new(2, &rec_deliver, NULL);
    for (int i = 0; i < 2; i++) {
        srv[i] = calloc(1, sizeof(server));
        cr_assert_not_null(srv[i]);
        srv[i]->loop = &loop;
        srv[i]->worker_index = i;
        memset(&hubs[i], 0, sizeof(hubs[i]));
        hubs[i].index = i;
        srv[i]->app = &hubs[i];
        server_inbox_init(srv[i], &loop);
        engine_local_attach(eng, i, srv[i]);
    }
    fake(&c0a, 0, "Aaaaaaaaaaaaaaaa");
    fake(&c0b, 0, "Abbbbbbbbbbbbbbb");
    fake(&c1a, 1, "Baaaaaaaaaaaaaaa");
    fake(&c1b, 1, "Bbbbbbbbbbbbbbbb");
    /* As the workers register them: alice on both workers, bob on 1. */
    engine_conn_opened(eng, &rec_c0a, &c0a, 0, "alice", "Alice", true);
    engine_conn_opened(eng, &rec_c0b, &c0b, 0, "carol", "Carol", true);
    engine_conn_opened(eng, &rec_c1a, &c1a, 1, "alice", "Alice", true);
    engine_conn_opened(eng, &rec_c1b, &c1b, 1, "bob", "Bob", true);
    cr_assert_not_null(engine_room_joined(eng, c0a.id, "lobby", 0, true));
    cr_assert_eq(engine_room_count(eng, "lobby", NULL), 1);
    cr_assert_not_null(engine_room_joined(eng, c1a.id, "lobby", 1, true));
    cr_assert_eq(engine_room_count(eng, "lobby", NULL), 2);
    cr_assert_not_null(engine_room_joined(eng, c1b.id, "lobby", 1, false));
    cr_assert_eq(engine_room_count(eng, "lobby", NULL), 3);
    cr_assert_not_null(engine_room_joined(eng, c0b.id, "zero-only", 0, true));
    cr_assert_eq(engine_room_count(eng, "zero-only", NULL), 1);
}

/* Run worker i's inbox as its thread would. */
static void run_inbox(int i) {
    running_worker = i;
    server_enter(srv[i]);
    server_run_inbox(srv[i]);
    server_enter(NULL);
    running_worker = -1;
}

static void teardown(void) {
    server_enter(NULL);
    for (int i = 0; i < 2; i++) {
        server_free(srv[i]); /* runs what is left as dropped */
        uv_close((uv_handle_t *)&srv[i]->inbox_async, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    for (int i = 0; i < 2; i++) free(srv[i]);
    engine_free(eng);
}

static ws_frame *text(const char *s) { return ws_frame_new(WS_OP_TEXT, s, strlen(s)); }

TestSuite(engine_local, .init = setup, .fini = teardown);

/* ---- rooms ---- */

Test(engine_local, publish_room_posts_to_each_worker_with_members) {
    ws_frame *f1 = text("one"), *f2 = text("two");
    cr_assert_eq(engine_publish_room(eng, "lobby", NULL, f1, c1a.id, ENGINE_SKIP_RESUMING), 3);
    cr_assert_eq(engine_publish_room(eng, "lobby", NULL, f2, NULL, 0), 3);
    /* Nothing runs on the caller's thread: it entered no server. */
    cr_assert_eq(hubs[0].n, 0);
    cr_assert_eq(hubs[1].n, 0);
    /* One post per worker and frame, however many members there. */
    cr_assert_eq(ws_frame_refcount(f1), 3);

    run_inbox(1);
    cr_assert_eq(hubs[1].n, 2);
    cr_assert_eq(hubs[1].d[0].kind, D_ROOM);
    cr_assert_str_eq(hubs[1].d[0].key, "lobby");
    cr_assert_eq(hubs[1].d[0].f, f1);
    cr_assert_str_eq(hubs[1].d[0].except, c1a.id);
    cr_assert_eq(hubs[1].d[0].flags, ENGINE_SKIP_RESUMING);
    cr_assert(hubs[1].d[0].on_own_thread);
    cr_assert_eq(hubs[1].d[1].f, f2);
    cr_assert_str_eq(hubs[1].d[1].except, "");
    cr_assert_eq(hubs[1].d[1].flags, 0);
    cr_assert_eq(hubs[0].n, 0, "worker 0's inbox has not run");

    run_inbox(0);
    cr_assert_eq(hubs[0].n, 2);
    cr_assert_eq(hubs[0].d[0].f, f1);
    cr_assert_eq(hubs[0].d[1].f, f2);
    /* The posts' references are released once run. */
    cr_assert_eq(ws_frame_refcount(f1), 1);
    cr_assert_eq(ws_frame_refcount(f2), 1);
    ws_frame_unref(f1);
    ws_frame_unref(f2);
}

Test(engine_local, publish_room_skips_workers_without_members) {
    ws_frame *f = text("z");
    cr_assert_eq(engine_publish_room(eng, "zero-only", NULL, f, NULL, 0), 1);
    cr_assert_eq(engine_publish_room(eng, "no-such-room", NULL, f, NULL, 0), 0);
    run_inbox(0);
    run_inbox(1);
    cr_assert_eq(hubs[0].n, 1);
    cr_assert_str_eq(hubs[0].d[0].key, "zero-only");
    cr_assert_eq(hubs[1].n, 0);
    /* Worker 1's last member leaves the lobby: it is no longer posted to. */
    engine_room_left(eng, c1a.id, "lobby", 1, false);
    engine_room_left(eng, c1b.id, "lobby", 1, true);
    cr_assert_eq(engine_room_count(eng, "lobby", NULL), 1);
    cr_assert_eq(engine_publish_room(eng, "lobby", NULL, f, NULL, 0), 1);
    run_inbox(1);
    cr_assert_eq(hubs[1].n, 0);
    run_inbox(0);
    cr_assert_eq(hubs[0].n, 2);
    cr_assert_str_eq(hubs[0].d[1].key, "lobby");
    ws_frame_unref(f);
}

Test(engine_local, own_share_is_delivered_at_once) {
    /* On worker 0's thread: its members now, worker 1's by post. */
    server_enter(srv[0]);
    ws_frame *f = text("mine");
    cr_assert_eq(engine_publish_room(eng, "lobby", NULL, f, c0a.id, 0), 3);
    cr_assert_eq(hubs[0].n, 1);
    cr_assert(hubs[0].d[0].on_own_thread);
    cr_assert_str_eq(hubs[0].d[0].except, c0a.id);
    cr_assert_eq(hubs[1].n, 0);
    cr_assert_eq(engine_publish_user(eng, "carol", f), 0);
    cr_assert_eq(hubs[0].n, 2);
    cr_assert_eq(hubs[0].d[1].kind, D_USER);
    server_enter(NULL);
    run_inbox(1);
    cr_assert_eq(hubs[1].n, 1);
    cr_assert_eq(hubs[1].d[0].f, f);
    run_inbox(0); /* nothing was posted to worker 0 */
    cr_assert_eq(hubs[0].n, 2);
    ws_frame_unref(f);
}

/* ---- users ---- */

Test(engine_local, publish_user_goes_by_the_users_workers) {
    ws_frame *f = text("pm");
    cr_assert_eq(engine_publish_user(eng, "alice", f), 0);
    cr_assert_eq(engine_publish_user(eng, "bob", f), 0);
    cr_assert_eq(engine_publish_user(eng, "nobody", f), -1);
    run_inbox(0);
    run_inbox(1);
    cr_assert_eq(hubs[0].n, 1);
    cr_assert_eq(hubs[0].d[0].kind, D_USER);
    cr_assert_str_eq(hubs[0].d[0].key, "alice");
    cr_assert_eq(hubs[1].n, 2);
    cr_assert_str_eq(hubs[1].d[0].key, "alice");
    cr_assert_str_eq(hubs[1].d[1].key, "bob");
    /* alice's last connection on worker 0 closes: only worker 1 is left. */
    engine_conn_closed(eng, c0a.id, "alice", 0, true);
    cr_assert_eq(engine_publish_user(eng, "alice", f), 0);
    run_inbox(0);
    run_inbox(1);
    cr_assert_eq(hubs[0].n, 1);
    cr_assert_eq(hubs[1].n, 3);
    engine_conn_closed(eng, c1a.id, "alice", 1, true);
    cr_assert_eq(engine_publish_user(eng, "alice", f), -1);
    ws_frame_unref(f);
}

/* ---- one connection ---- */

Test(engine_local, send_conn_posts_to_the_owner_and_counts_bytes) {
    ws_frame *f = text("direct");
    cr_assert_eq(engine_send_conn(eng, c1b.id, f, 0), 0);
    /* Counted before the owner queues it, so a backlog shows at once. */
    cr_assert_eq(c1b.posted_bytes, f->len);
    engine_conn_info info;
    cr_assert_eq(engine_conn_lookup(eng, c1b.id, &info), 0);
    cr_assert_eq(info.queued_bytes, f->len);
    cr_assert_str_eq(info.source_ip, "10.0.0.2");
    cr_assert_eq(info.connected_at, 1700000001);
    cr_assert_null(info.user_agent);
    run_inbox(0);
    cr_assert_eq(hubs[0].n, 0);
    run_inbox(1);
    cr_assert_eq(hubs[1].n, 1);
    cr_assert_eq(hubs[1].d[0].kind, D_CONN);
    cr_assert_str_eq(hubs[1].d[0].key, c1b.id);
    cr_assert(hubs[1].d[0].counted);
    cr_assert_eq(hubs[1].d[0].f, f);

    /* On the owner's thread it is handed over at once, not counted. */
    server_enter(srv[1]);
    cr_assert_eq(engine_send_conn(eng, c1b.id, f, 0), 0);
    server_enter(NULL);
    cr_assert_eq(hubs[1].n, 2);
    cr_assert_not(hubs[1].d[1].counted);
    cr_assert_eq(c1b.posted_bytes, f->len, "unchanged: the test's callback takes nothing off");
    ws_frame_unref(f);
}

Test(engine_local, send_conn_refuses_a_full_queue) {
    ws_frame *f = text("x");
    c0b.wq_bytes = 1000;
    cr_assert_eq(engine_send_conn(eng, c0b.id, f, 1000), 0, "at the limit: taken");
    cr_assert_eq(c0b.posted_bytes, f->len);
    cr_assert_eq(engine_send_conn(eng, c0b.id, f, 1000), -2, "above it: refused");
    cr_assert_eq(c0b.posted_bytes, f->len, "nothing counted for a refusal");
    cr_assert_eq(engine_send_conn(eng, c0b.id, f, 0), 0, "0: no check");
    run_inbox(0);
    cr_assert_eq(hubs[0].n, 2);
    ws_frame_unref(f);
}

Test(engine_local, stale_and_foreign_ids) {
    ws_frame *f = text("x");
    /* Right worker, no such connection. */
    cr_assert_eq(engine_send_conn(eng, "Azzzzzzzzzzzzzzz", f, 0), -1);
    cr_assert_eq(engine_close_conn(eng, "Azzzzzzzzzzzzzzz", 1000, "r"), -1);
    engine_conn_info info;
    cr_assert_eq(engine_conn_lookup(eng, "Azzzzzzzzzzzzzzz", &info), -1);
    /* A worker this engine does not have ('C' is worker 2). */
    cr_assert_eq(engine_send_conn(eng, "Caaaaaaaaaaaaaaa", f, 0), -1);
    cr_assert_eq(engine_call_owner(eng, "Caaaaaaaaaaaaaaa", NULL, NULL), -1);
    /* Not an id at all. */
    cr_assert_eq(engine_send_conn(eng, "A", f, 0), -1);
    cr_assert_eq(engine_send_conn(eng, "", f, 0), -1);
    cr_assert_eq(engine_send_conn(eng, "!aaaaaaaaaaaaaaa", f, 0), -1);
    /* A connection that closed is stale from then on. */
    engine_conn_closed(eng, c1b.id, "bob", 1, true);
    cr_assert_eq(engine_send_conn(eng, c1b.id, f, 0), -1);
    cr_assert_eq(engine_conn_lookup(eng, c1b.id, &info), -1);
    run_inbox(0);
    run_inbox(1);
    cr_assert_eq(hubs[0].n + hubs[1].n, 0, "nothing was posted");
    cr_assert_eq(ws_frame_refcount(f), 1);
    ws_frame_unref(f);
}

typedef struct listed {
    int n;
    bool saw_c1a;
} listed;

static void list_each(const directory_conn *rec, void *ctx) {
    listed *l = ctx;
    l->n++;
    if (strcmp(rec->c->id, c1a.id) == 0) l->saw_c1a = true;
}

Test(engine_local, close_conn_is_gone_at_once) {
    cr_assert_eq(engine_close_conn(eng, c1a.id, 1000, "closed by the management API"), 0);
    /* Gone to the management API before the owner has even run it. */
    engine_conn_info info;
    cr_assert_eq(engine_conn_lookup(eng, c1a.id, &info), -1);
    ws_frame *f = text("late");
    cr_assert_eq(engine_send_conn(eng, c1a.id, f, 0), -1);
    cr_assert_eq(engine_close_conn(eng, c1a.id, 1000, "again"), -1);
    listed l = {0};
    engine_conn_each(eng, list_each, &l);
    cr_assert_eq(l.n, 3);
    cr_assert_not(l.saw_c1a);
    /* Still counted until its worker closes it. */
    cr_assert_eq(engine_conn_total(eng), 4);
    run_inbox(1);
    cr_assert_eq(hubs[1].n, 1);
    cr_assert_eq(hubs[1].d[0].kind, D_CLOSE);
    cr_assert_str_eq(hubs[1].d[0].key, c1a.id);
    cr_assert_eq(hubs[1].d[0].code, 1000);
    cr_assert_str_eq(hubs[1].d[0].reason, "closed by the management API");
    engine_conn_closed(eng, c1a.id, "alice", 1, true);
    cr_assert_eq(engine_conn_total(eng), 3);
    /* Room deliveries do not look at the mark: the owner still has it as
     * a member until it is closed. */
    ws_frame_unref(f);
}

/* ---- order ---- */

static void call_fn(void *hub, void *arg) {
    delivery *d = add(hub, D_CALL);
    snprintf(d->key, sizeof(d->key), "%s", (const char *)arg);
}

Test(engine_local, one_threads_posts_arrive_in_order) {
    ws_frame *f[4] = {text("a"), text("b"), text("c"), text("d")};
    engine_publish_room(eng, "lobby", NULL, f[0], NULL, 0);
    engine_send_conn(eng, c1b.id, f[1], 0);
    engine_publish_user(eng, "bob", f[2]);
    cr_assert_eq(engine_call_owner(eng, c1b.id, call_fn, "done"), 0);
    engine_publish_room(eng, "lobby", NULL, f[3], NULL, 0);
    engine_close_conn(eng, c1b.id, 1001, "bye");
    run_inbox(1);
    cr_assert_eq(hubs[1].n, 6);
    d_kind kinds[] = {D_ROOM, D_CONN, D_USER, D_CALL, D_ROOM, D_CLOSE};
    for (int i = 0; i < 6; i++) cr_assert_eq(hubs[1].d[i].kind, kinds[i], "item %d", i);
    cr_assert_eq(hubs[1].d[0].f, f[0]);
    cr_assert_eq(hubs[1].d[1].f, f[1]);
    cr_assert_eq(hubs[1].d[2].f, f[2]);
    cr_assert_str_eq(hubs[1].d[3].key, "done");
    cr_assert(hubs[1].d[3].on_own_thread);
    cr_assert_eq(hubs[1].d[4].f, f[3]);
    cr_assert_eq(hubs[1].d[5].code, 1001);
    for (int i = 0; i < 4; i++) ws_frame_unref(f[i]);
}

#define THREAD_POSTS 2000

static void *publisher(void *arg) {
    const char *tag = arg;
    for (int i = 0; i < THREAD_POSTS; i++) {
        ws_frame *f = ws_frame_new(WS_OP_TEXT, tag, strlen(tag));
        /* The post's `except` id carries the thread's tag and sequence
         * number (no member has that id). */
        char seq[CONN_ID_LEN + 1];
        snprintf(seq, sizeof(seq), "%s%015d", tag, i);
        engine_publish_room(eng, "lobby", NULL, f, seq, 0);
        ws_frame_unref(f);
    }
    return NULL;
}

Test(engine_local, each_threads_posts_stay_in_order) {
    /* Two threads that entered no server (two store-like threads) publish
     * at once: each one's frames reach each worker in its order. */
    static char tag_a[] = "A", tag_b[] = "B";
    pthread_t t1, t2;
    pthread_create(&t1, NULL, publisher, tag_a);
    pthread_create(&t2, NULL, publisher, tag_b);
    /* Meanwhile worker 1 runs its inbox as posts come in. */
    int seen = 0, next[2] = {0, 0};
    while (seen < 2 * THREAD_POSTS) {
        hubs[1].n = 0;
        run_inbox(1);
        for (int i = 0; i < hubs[1].n; i++) {
            const char *ex = hubs[1].d[i].except;
            int who = ex[0] == 'A' ? 0 : 1;
            cr_assert_eq(atoi(ex + 1), next[who], "thread %c: got %s", ex[0], ex);
            next[who]++;
            seen++;
        }
    }
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    hubs[1].n = 0;
    run_inbox(1);
    cr_assert_eq(hubs[1].n, 0);
    cr_assert_eq(next[0], THREAD_POSTS);
    cr_assert_eq(next[1], THREAD_POSTS);
}

/* ---- after a worker's loop is gone ---- */

static void count_call(void *hub, void *arg) {
    int *calls = arg;
    calls[hub ? 0 : 1]++;
}

Test(engine_local, posts_to_a_stopped_worker_are_dropped) {
    int calls[2] = {0, 0};
    ws_frame *f = text("x");
    engine_publish_room(eng, "lobby", NULL, f, NULL, 0);
    cr_assert_eq(engine_call_owner(eng, c1b.id, count_call, calls), 0);
    server_free(srv[1]); /* its loop stopped: what waits is dropped */
    cr_assert_eq(hubs[1].n, 0, "no delivery to a stopped worker");
    cr_assert_eq(calls[0], 0);
    cr_assert_eq(calls[1], 1, "the call is told (hub NULL) so it can release its argument");
    /* Later posts are dropped at once. */
    cr_assert_eq(engine_call_owner(eng, c1b.id, count_call, calls), 0);
    cr_assert_eq(calls[1], 2);
    cr_assert_eq(ws_frame_refcount(f), 2, "the dropped post released its reference");
    /* Worker 0 is unaffected. */
    run_inbox(0);
    cr_assert_eq(hubs[0].n, 1);
    cr_assert_eq(ws_frame_refcount(f), 1);
    ws_frame_unref(f);
    srv[1]->loop = NULL; /* teardown: freed already */
}

/* ---- listings ---- */

Test(engine_local, counts_and_sorted_rooms) {
    cr_assert_eq(engine_room_count(eng, "lobby", NULL), 3);
    cr_assert_eq(engine_room_count(eng, "zero-only", NULL), 1);
    cr_assert_eq(engine_room_count(eng, "none", NULL), 0);
    cr_assert_eq(engine_room_total(eng), 2);
    cr_assert_eq(engine_conn_total(eng), 4);
    directory_room_entry *rooms;
    size_t n = engine_rooms(eng, &rooms);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(rooms[0].id, "lobby");
    cr_assert_eq(rooms[0].count, 3);
    cr_assert_str_eq(rooms[1].id, "zero-only");
    cr_assert_eq(rooms[1].count, 1);
    directory_rooms_free(rooms, n);
}

/* ---- ids ---- */

Test(conn_id, worker_from_first_character) {
    cr_assert_eq(conn_id_worker("Aaaaaaaaaaaaaaaa"), 0);
    cr_assert_eq(conn_id_worker("Baaaaaaaaaaaaaaa"), 1);
    cr_assert_eq(conn_id_worker("aaaaaaaaaaaaaaaa"), 26);
    cr_assert_eq(conn_id_worker("9aaaaaaaaaaaaaaa"), 61);
    cr_assert_eq(conn_id_worker("_aaaaaaaaaaaaaaa"), 63);
    cr_assert_eq(conn_id_worker("Aaaaaaaaaaaaaaa"), WSG_E_INVAL, "15 characters");
    cr_assert_eq(conn_id_worker("Aaaaaaaaaaaaaaaaa"), WSG_E_INVAL, "17 characters");
    cr_assert_eq(conn_id_worker("!aaaaaaaaaaaaaaa"), WSG_E_INVAL);
    cr_assert_eq(conn_id_worker(NULL), WSG_E_INVAL);
}
