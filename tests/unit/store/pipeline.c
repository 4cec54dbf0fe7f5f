/* Unit tests for the pipelined group commit (src/store/syncer.h): with
 * store_sync=full a batch's COMMIT no longer syncs, the syncer thread's
 * fdatasync does, and nothing may be handed over before it. The WAL's page
 * cache tells: when a chat is handed over, none of the WAL's pages may be
 * dirty or still under writeback (Linux's cachestat(2), 6.5 and later;
 * the test is skipped where the kernel lacks it). A real SQLite file in a
 * temp dir. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include "store/store.h"
#include "fixture.h"

#ifndef SYS_cachestat
#define SYS_cachestat 451 /* x86_64, aarch64 and the generic table */
#endif

/* cachestat(2)'s structures, as include/uapi/linux/mman.h has them. */
struct cs_range {
    uint64_t off, len;
};
struct cs_stat {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/* Pages of the file at fd dirty or under writeback; -1 when the kernel
 * cannot tell (errno set). */
static long unsynced_pages(int fd) {
    struct cs_range r = {0, 0}; /* len 0: to the end of the file */
    struct cs_stat st;
    if (syscall(SYS_cachestat, fd, &r, &st, 0) != 0) return -1;
    return (long)(st.nr_dirty + st.nr_writeback);
}

#define NCHATS 120

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int wal_fd = -1;
static int done_count;
static long worst; /* the most unsynced WAL pages seen at a hand-over */
static int failed;

static void on_commit(store_op *op, void *ctx) {
    (void)ctx;
    long n = wal_fd >= 0 ? unsynced_pages(wal_fd) : 0;
    pthread_mutex_lock(&mu);
    if (op->kind == STORE_OP_CHAT) {
        if (op->status != 0) failed++;
        if (n > worst) worst = n;
        done_count++;
        pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
    store_op_free(op);
}

static void wait_for(int n) {
    pthread_mutex_lock(&mu);
    while (done_count < n) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

Test(store_pipeline, a_chat_is_handed_over_only_once_its_wal_frames_are_on_disk) {
    fx_store f;
    fx_store_init(&f, "store-pipeline");
    store_options so = {.sync_full = true, .on_commit = on_commit};
    store *s = fx_store_open(&f, &so);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f.path);
    wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
    cr_assert(wal_fd >= 0, "%s: %s", wal, strerror(errno));
    if (unsynced_pages(wal_fd) < 0) {
        close(wal_fd);
        wal_fd = -1;
        fx_store_close(&f);
        cr_skip_test("cachestat(2) not available: %s", strerror(errno));
    }
    /* One chat at a time: when one is handed over nothing else is being
     * written, so every WAL page must be clean. Then bursts, which keep a
     * batch committing while the one before it syncs: the WAL then has
     * the next batch's frames, so only the one-at-a-time part is checked
     * page by page, and the bursts for order and status. */
    for (int i = 0; i < NCHATS; i++) {
        store_submit(s, fx_chat_op("solo", i));
        wait_for(i + 1);
    }
    pthread_mutex_lock(&mu);
    long solo_worst = worst;
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 10 * NCHATS; i++) store_submit(s, fx_chat_op(i % 3 ? "a" : "b", i));
    wait_for(11 * NCHATS);
    cr_assert_eq(solo_worst, 0, "a chat was handed over with %ld WAL pages not yet on disk",
                 solo_worst);
    cr_assert_eq(failed, 0);
    close(wal_fd);
    wal_fd = -1;
    fx_store_close(&f);
}
