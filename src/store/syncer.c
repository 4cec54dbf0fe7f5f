/* The pipelined group commit's sync thread (syncer.h). */
#include "store/syncer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "log/log.h"
#include "store/archive.h"
#include "store/internal.h"

/* A commit noted by the WAL hook: told to the archive once synced. */
typedef struct noted {
    uint64_t frames;
    int64_t t_ms;
} noted;

/* A committed batch waiting for its sync. */
typedef struct pending_batch {
    struct pending_batch *next;
    store_op *first, *last;
    uint64_t commit_no; /* commits noted when it was pushed: synced once
                         * y->synced reaches it */
} pending_batch;

struct syncer {
    store *s;
    int fd; /* the WAL, for fdatasync */
    syncer_deliver_cb deliver;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the thread: a commit or a batch, or stop */
    pthread_cond_t done; /* the store thread: a round delivered */
    /* Under mu. Counts of commits since start: noted by the hook, covered
     * by a finished fdatasync, told to the archive. */
    uint64_t n_noted, n_synced, n_archived;
    noted *ent; /* commits noted and not yet taken by the thread */
    size_t nent, cap;
    pending_batch *head, *tail;
    size_t inflight; /* batches pushed and not yet delivered */
    bool stop;
};

/* Mark a batch's ops failed after a failed sync: their commit may not be
 * on disk, so nobody is told it is. */
static void fail_ops(store_op *op, int rc) {
    for (; op; op = op->next)
        if (op->status == SQLITE_OK && op->kind != STORE_OP_HISTORY) op->status = rc;
}

/* One round: sync what was noted, then tell the archive and deliver the
 * batches the sync covers. Called and returns with y->mu held. */
static void sync_round(syncer *y) {
    store *s = y->s;
    uint64_t target = y->n_noted;
    noted *ent = y->ent;
    size_t nent = y->nent;
    y->ent = NULL;
    y->nent = y->cap = 0;
    int err = 0;
    if (target > y->n_synced) {
        pthread_mutex_unlock(&y->mu);
        int64_t now = (int64_t)clock_mono_ms();
        atomic_store(&s->sync_since_ms, now > 0 ? now : 1);
        if (fdatasync(y->fd) != 0) err = errno;
        atomic_store(&s->sync_since_ms, 0);
        atomic_store(&s->sync_rc, err ? SQLITE_IOERR_FSYNC : SQLITE_OK);
        if (err) log_msg(LOG_ERROR, "store_error", "sync of the WAL failed: %s", strerror(err));
        pthread_mutex_lock(&y->mu);
        y->n_synced = target;
    }
    /* The batches this sync covers: pushed after their COMMIT, so their
     * commit_no is at most what was noted when the sync began. */
    pending_batch *ready = NULL, **tail = &ready;
    size_t k = 0;
    while (y->head && y->head->commit_no <= y->n_synced) {
        pending_batch *b = y->head;
        y->head = b->next;
        b->next = NULL;
        *tail = b;
        tail = &b->next;
        k++;
    }
    if (!y->head) y->tail = NULL;
    pthread_mutex_unlock(&y->mu);
    /* In commit order, and before the batches: a restore beside the
     * server never sees a chat the database could still lose. */
    for (size_t i = 0; i < nent; i++) archive_commit_at(s, (int)ent[i].frames, ent[i].t_ms);
    free(ent);
    uint64_t t = clock_mono_ns();
    while (ready) {
        pending_batch *b = ready;
        ready = b->next;
        for (store_op *op = b->first; op; op = op->next) op->t_committed = t;
        if (err) fail_ops(b->first, SQLITE_IOERR_FSYNC);
        y->deliver(s, b->first, b->last);
        free(b);
    }
    pthread_mutex_lock(&y->mu);
    y->n_archived = target > y->n_archived ? target : y->n_archived;
    y->inflight -= k;
    pthread_cond_broadcast(&y->done);
}

static void *syncer_run(void *arg) {
    syncer *y = arg;
    pthread_mutex_lock(&y->mu);
    for (;;) {
        while (!y->stop && y->n_noted == y->n_synced && !y->head)
            pthread_cond_wait(&y->wake, &y->mu);
        if (y->n_noted == y->n_synced && !y->head) break; /* stop, and nothing left */
        sync_round(y);
    }
    pthread_mutex_unlock(&y->mu);
    return NULL;
}

syncer *syncer_start(store *s, const char *wal_path, syncer_deliver_cb deliver) {
    int fd = open(wal_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    syncer *y = xcalloc(1, sizeof(*y));
    y->s = s;
    y->fd = fd;
    y->deliver = deliver;
    pthread_mutex_init(&y->mu, NULL);
    pthread_cond_init(&y->wake, NULL);
    pthread_cond_init(&y->done, NULL);
    if (pthread_create(&y->thread, NULL, syncer_run, y) != 0) {
        close(fd);
        pthread_mutex_destroy(&y->mu);
        pthread_cond_destroy(&y->wake);
        pthread_cond_destroy(&y->done);
        free(y);
        return NULL;
    }
    pthread_setname_np(y->thread, "wsgate-sync");
    return y;
}

void syncer_note_commit(syncer *y, int frames) {
    int64_t now = clock_wall_ms();
    pthread_mutex_lock(&y->mu);
    if (y->nent == y->cap) {
        y->cap = y->cap ? y->cap * 2 : 64;
        y->ent = xrealloc(y->ent, y->cap * sizeof(*y->ent));
    }
    y->ent[y->nent++] = (noted){.frames = (uint64_t)(frames > 0 ? frames : 0), .t_ms = now};
    y->n_noted++;
    pthread_cond_signal(&y->wake);
    pthread_mutex_unlock(&y->mu);
}

void syncer_push(syncer *y, store_op *first, store_op *last) {
    pending_batch *b = xcalloc(1, sizeof(*b));
    b->first = first;
    b->last = last;
    pthread_mutex_lock(&y->mu);
    b->commit_no = y->n_noted;
    if (y->tail) y->tail->next = b;
    else y->head = b;
    y->tail = b;
    y->inflight++;
    pthread_cond_signal(&y->wake);
    while (y->inflight >= SYNCER_DEPTH) pthread_cond_wait(&y->done, &y->mu);
    pthread_mutex_unlock(&y->mu);
}

void syncer_drain(syncer *y) {
    pthread_mutex_lock(&y->mu);
    uint64_t want = y->n_noted;
    pthread_cond_signal(&y->wake);
    while (y->n_archived < want || y->head) pthread_cond_wait(&y->done, &y->mu);
    pthread_mutex_unlock(&y->mu);
}

void syncer_stop(syncer *y) {
    if (!y) return;
    pthread_mutex_lock(&y->mu);
    y->stop = true;
    pthread_cond_signal(&y->wake);
    pthread_mutex_unlock(&y->mu);
    pthread_join(y->thread, NULL);
    close(y->fd);
    free(y->ent);
    pthread_mutex_destroy(&y->mu);
    pthread_cond_destroy(&y->wake);
    pthread_cond_destroy(&y->done);
    free(y);
}
