/* Unit tests for the server inbox (src/net/server.c): work other threads
 * post to a worker. Every post runs exactly once, on the owner's thread,
 * in the order each thread posted it; a delivery that runs the inbox again
 * carries on where the outer run was; what is still waiting when the
 * server goes away runs as dropped, so what it holds is released. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "net/server.h"

#define POSTERS    4
#define PER_POSTER 2000

static server srv;
static uv_loop_t loop;
static pthread_t owner;

static void setup(void) {
    memset(&srv, 0, sizeof srv);
    uv_loop_init(&loop);
    srv.loop = &loop;
    server_inbox_init(&srv, &loop);
    owner = pthread_self();
    server_enter(&srv);
}

static void teardown(void) {
    server_free(&srv); /* runs what is still waiting as dropped */
    uv_close((uv_handle_t *)&srv.inbox_async, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

TestSuite(server_inbox, .init = setup, .fini = teardown);

/* ---- many posters ---- */

static int next_seq[POSTERS];
static atomic_int ran, wrong_thread, out_of_order, dropped_runs;

static void record(server *s, server_inbox_item *it, bool dropped) {
    if (dropped) {
        atomic_fetch_add(&dropped_runs, 1);
        return;
    }
    if (!pthread_equal(pthread_self(), owner) || s != &srv) atomic_fetch_add(&wrong_thread, 1);
    int poster = (int)it->flags, seq = (int)it->code;
    if (seq != next_seq[poster]) atomic_fetch_add(&out_of_order, 1);
    next_seq[poster] = seq + 1;
    cr_assert_str_eq(it->key, "held"); /* freed by the server after this */
    atomic_fetch_add(&ran, 1);
}

static void *poster(void *arg) {
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < PER_POSTER; i++) {
        server_inbox_item it = {.run = record, .flags = (uint32_t)id, .code = (uint16_t)i};
        it.key = xstrdup("held");
        server_post(&srv, &it);
    }
    return NULL;
}

static void keep_alive(uv_prepare_t *h) { (void)h; }

Test(server_inbox, posts_from_threads_run_once_in_order_on_the_owner) {
    /* A started handle keeps the loop alive, as a worker's listener does
     * (the inbox's wake-up handle is unreferenced). */
    uv_prepare_t alive;
    uv_prepare_init(&loop, &alive);
    uv_prepare_start(&alive, keep_alive);
    pthread_t t[POSTERS];
    for (int i = 0; i < POSTERS; i++) pthread_create(&t[i], NULL, poster, (void *)(intptr_t)i);
    /* The owner's loop runs what the wake-ups bring; no timing is
     * assumed, only a generous bound on how long it may take. */
    time_t give_up = time(NULL) + 120;
    while (atomic_load(&ran) < POSTERS * PER_POSTER && time(NULL) < give_up) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    for (int i = 0; i < POSTERS; i++) pthread_join(t[i], NULL);
    uv_close((uv_handle_t *)&alive, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(atomic_load(&ran), POSTERS * PER_POSTER);
    cr_assert_eq(atomic_load(&wrong_thread), 0);
    cr_assert_eq(atomic_load(&out_of_order), 0);
    cr_assert_eq(atomic_load(&dropped_runs), 0);
    for (int i = 0; i < POSTERS; i++) cr_assert_eq(next_seq[i], PER_POSTER);
}

/* ---- a nested run ---- */

static char order[16];
static size_t norder;

static void note(server *s, server_inbox_item *it, bool dropped) {
    cr_assert_not(dropped);
    order[norder++] = (char)it->code;
    /* A delivery that ends a connection runs the inbox again from its
     * on_close: the rest of the batch runs there, once. */
    if (it->code == 'a') server_run_inbox(s);
    if (it->code == 'a') order[norder++] = 'A';
}

Test(server_inbox, a_nested_run_carries_on_where_the_outer_one_was) {
    for (char c = 'a'; c <= 'd'; c++) {
        server_inbox_item it = {.run = note, .code = (uint16_t)c};
        server_post(&srv, &it);
    }
    server_run_own_inbox();
    order[norder] = '\0';
    cr_assert_str_eq(order, "abcdA");
    server_run_inbox(&srv); /* nothing left: nothing runs twice */
    cr_assert_eq(norder, 5);
}

/* ---- the server goes away ---- */

static int released;

static void release(server *s, server_inbox_item *it, bool dropped) {
    cr_assert(dropped, "the loop is gone: the post must not be delivered");
    free(it->arg);
    released++;
}

Test(server_inbox, waiting_posts_run_dropped_when_the_server_is_freed) {
    for (int i = 0; i < 3; i++) {
        server_inbox_item it = {.run = release, .arg = xmalloc(32), .key = xstrdup("reason")};
        server_post(&srv, &it);
    }
    server_free(&srv);
    cr_assert_eq(released, 3);
    srv.loop = NULL; /* freed: teardown must not free it again */
}
