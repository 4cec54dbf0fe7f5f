/* Unit tests for the point-in-time archive's overwrite guard
 * (archive_guard, after every BEGIN): the archive is made durable before a
 * write that may restart the WAL over frames it holds, whoever ran the
 * checkpoint that allows it, and only then. A real SQLite file and archive
 * in a temp dir. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "store/store.h"
#include "fixture.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int committed;

static void count(store_op *op, void *ctx) {
    (void)ctx;
    pthread_mutex_lock(&mu);
    cr_assert_eq(op->status, 0);
    committed++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    store_op_free(op);
}

/* Submit one chat and wait for its commit. */
static void chat(store *s, int i) {
    store_op *op = fx_chat_op("r", i);
    pthread_mutex_lock(&mu);
    int want = committed + 1;
    pthread_mutex_unlock(&mu);
    store_submit(s, op);
    pthread_mutex_lock(&mu);
    while (committed < want) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static uint64_t syncs(store *s) {
    store_stats st;
    store_get_stats(s, &st);
    return st.archive_syncs;
}

Test(store_guard, syncs_only_when_a_write_may_restart_the_wal) {
    fx_store f;
    fx_store_init(&f, "store-guard");
    char pitr[256];
    snprintf(pitr, sizeof pitr, "%s/pitr", f.dir);
    store_options so = {.sync_full = false,
                        .on_commit = count,
                        .pitr = true,
                        .pitr_dir = pitr,
                        .pitr_snapshot_interval_s = 3600};
    store *s = fx_store_open(&f, &so);
    chat(s, 0);
    /* Nothing has been copied into the database file, so none of the next
     * 40 batches can restart the WAL: the archive has no reason to
     * fdatasync in front of any of them. (The guard before synced in front
     * of each while a checkpointer run was in progress, which under load
     * is most of the time: 40 syncs for these 40 when one was.) */
    uint64_t before = syncs(s);
    for (int i = 1; i <= 40; i++) chat(s, i);
    cr_assert_leq(syncs(s) - before, 1, "%llu archive syncs for 40 batches that cannot restart",
                  (unsigned long long)(syncs(s) - before));
    /* A checkpoint that copies everything, by another connection (as the
     * checkpointer's would when writes pause, or an sqlite3 shell's): the
     * next write restarts the WAL, so it must find every frame archived
     * and on disk first. (The guard before knew only the checkpointer's
     * runs: after this one it let the WAL restart unsynced.) */
    sqlite3 *c;
    cr_assert_eq(sqlite3_open(f.path, &c), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(c, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL), SQLITE_OK);
    int logged = -1, copied = -1;
    cr_assert_eq(sqlite3_wal_checkpoint_v2(c, NULL, SQLITE_CHECKPOINT_PASSIVE, &logged, &copied),
                 SQLITE_OK);
    cr_assert(logged > 0 && copied == logged, "logged %d copied %d", logged, copied);
    sqlite3_close(c);
    before = syncs(s);
    store_stats st;
    store_get_stats(s, &st);
    uint32_t pages = st.wal_pages;
    chat(s, 41);
    store_get_stats(s, &st);
    cr_assert_lt(st.wal_pages, pages, "the write after a complete checkpoint did not restart");
    cr_assert_geq(syncs(s) - before, 1, "the WAL restarted without the archive synced first");
    /* That sync wrote every chat before the restarting write into the
     * archive, the current second's too: the archive keeps a second's
     * pages in memory until the second ends, and once the WAL restarts
     * they are nowhere else on disk. A restore while the store runs has
     * all 41. (Without the early write of the second's bucket it missed
     * the chats of the last second.) */
    char out[300];
    snprintf(out, sizeof out, "%s/restored.db", f.dir);
    wsg_error err = {0};
    cr_assert_eq(store_restore(f.path, pitr, NULL, (int64_t)time(NULL) + 1, out, &err), 0, "%s",
                 err.message);
    cr_assert_eq(sqlite3_open(out, &c), SQLITE_OK);
    sqlite3_stmt *q;
    cr_assert_eq(sqlite3_prepare_v2(c, "SELECT COUNT(*) FROM messages", -1, &q, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    int restored = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(c);
    cr_assert_geq(restored, 41, "%d of the 41 chats before the WAL restart archived", restored);
    fx_store_close(&f);
}
