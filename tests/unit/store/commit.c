/* Unit tests for the store's hand-over of committed ops
 * (store_options.on_commit): the store thread itself gives every op of a
 * batch to the callback, in commit order, so committed chats reach the
 * workers with no loop in between. A real SQLite file in a temp dir. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "store/store.h"
#include "fixture.h"

#define NCHATS 300

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int64_t seqs[NCHATS];
static int texts[NCHATS];
static size_t got;
static pthread_t caller;
static bool on_caller_thread;

static void collect(store_op *op, void *ctx) {
    (void)ctx;
    pthread_mutex_lock(&mu);
    if (pthread_equal(pthread_self(), caller)) on_caller_thread = true;
    if (op->kind == STORE_OP_CHAT && got < NCHATS) {
        cr_assert_eq(op->status, 0);
        seqs[got] = op->seq;
        texts[got] = atoi(op->message);
        got++;
        pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
    store_op_free(op);
}

Test(store_commit, ops_reach_on_commit_in_commit_order_on_the_store_thread) {
    fx_store f;
    fx_store_init(&f, "store-commit");
    caller = pthread_self();
    store_options so = {.sync_full = false, .on_commit = collect};
    store *s = fx_store_open(&f, &so);
    for (int i = 0; i < NCHATS; i++) {
        store_submit(s, fx_chat_op(i % 2 ? "odd" : "even", i));
    }
    pthread_mutex_lock(&mu);
    while (got < NCHATS) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    /* Commit order is submission order; each room's seq counts 1, 2, 3... */
    for (int i = 0; i < NCHATS; i++) {
        cr_assert_eq(texts[i], i);
        cr_assert_eq(seqs[i], i / 2 + 1, "chat %d got seq %lld", i, (long long)seqs[i]);
    }
    cr_assert(!on_caller_thread, "on_commit ran on the submitting thread");
    /* An op stops counting just after its on_commit returns: wait (bounded)
     * for the last one rather than race it. */
    for (int i = 0; i < 5000 && store_pending(s) != 0; i++) usleep(1000);
    cr_assert_eq(store_pending(s), 0);
    fx_store_close(&f);
}
