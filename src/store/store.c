/* The store's thread and queue: submission (bounded), the group commit
 * loop, the checkpointer thread, and the hand-over of committed ops (the
 * loop's completions, or store_options.on_commit). See internal.h. */
#include "store/store.h"

#include <pthread.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "log/log.h"
#include "store/archive.h"
#include "store/cleanstop.h"
#include "store/internal.h"
#include "store/syncer.h"

/* Operations committed in one transaction at most. */
#define STORE_MAX_BATCH 8192
/* WAL pages (4 KiB each) after which the checkpointer thread copies the
 * WAL into the database file. SQLite's own autocheckpoint ran inside the
 * COMMIT that crossed its threshold (8192 pages here, then), on the store
 * thread: every chat queued behind it waited for 32 MB to be copied and,
 * with store_sync=normal, for the whole unsynced WAL to be fsynced first
 * (the p99 of 137 ms). Off that path, the size is a trade: every
 * checkpoint copies the hot index pages again and fsyncs the database, so
 * 4 MiB cost 7% of the closed-loop durable throughput; 8 MiB costs ~1%.
 * 16 MiB: the WAL restarts half as often, and each restart costs a pause
 * of the store thread (the tail below: 14-260 ms measured at 25,000
 * chats/s on this busy machine, 11 in 5 s at 8 MiB). */
#define STORE_CHECKPOINT_PAGES 4096
/* The checkpointer copies while commits go on, so under continuous writes
 * the WAL always has frames past its copy and never restarts: it would grow
 * without bound. When a checkpointer run has left at most this many frames
 * uncopied, the store thread copies them itself, between two batches (a
 * short copy and one fsync), and the next commit restarts the WAL. */
#define STORE_CHECKPOINT_TAIL 256
/* A checkpointer that cannot keep up (a starved core): past this many WAL
 * pages the store thread checkpoints between batches, as SQLite did. */
#define STORE_CHECKPOINT_MAX_PAGES (2 * STORE_CHECKPOINT_PAGES)

store_op *store_op_new(store_op_kind kind) {
    store_op *op = xcalloc(1, sizeof(*op));
    op->kind = kind;
    op->after_seq = -1;
    return op;
}

void store_op_free(store_op *op) {
    free(op->room_id);
    free(op->user_id);
    free(op->username);
    free(op->message);
    free(op->client_message_id);
    json_decref(op->messages);
    free(op);
}
/* ---- health ---- */

/* Mark the start and the result of a write transaction (store thread), for
 * store_health. */
void store_write_begin(store *s) {
    int64_t now = (int64_t)clock_mono_ms();
    atomic_store(&s->write_since_ms, now > 0 ? now : 1);
}

void store_write_end(store *s, int rc) {
    atomic_store(&s->write_since_ms, 0);
    atomic_store(&s->last_write_rc, rc);
}

int store_begin(store *s) {
    store_write_begin(s);
    int rc = store_tx(s->st.begin);
    if (rc == SQLITE_OK) archive_guard(s);
    return rc;
}

/* While the last write failed, try a one-row write when idle, so readiness
 * comes back with the disk and not only with the next chat. */
static void probe_write(store *s) {
    int rc = store_begin(s);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s->st.probe, 1, (int64_t)time(NULL));
        rc = store_step_done(s->st.probe);
        if (rc == SQLITE_OK) rc = store_tx(s->st.commit);
        if (rc != SQLITE_OK) store_tx(s->st.rollback);
    }
    store_write_end(s, rc);
}

int store_health(store *s, int64_t stall_ms, char *why, size_t len) {
    if (cleanstop_check_failed(s->db_check, why, len)) return -1;
    int64_t since = atomic_load(&s->write_since_ms);
    int rc = atomic_load(&s->last_write_rc);
    /* The pipelined commit's sync (syncer.h) is part of the write. */
    int64_t sync_since = atomic_load(&s->sync_since_ms);
    if (sync_since && (!since || sync_since < since)) since = sync_since;
    if (rc == SQLITE_OK) rc = atomic_load(&s->sync_rc);
    int64_t running = since ? (int64_t)clock_mono_ms() - since : 0;
    if (since && stall_ms > 0 && running > stall_ms) {
        snprintf(why, len, "store commit running for %lld ms", (long long)running);
        return -1;
    }
    if (rc != SQLITE_OK) {
        snprintf(why, len, "last store commit failed: %s", sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}
/* ---- the store thread ---- */

static void commit_batch(store *s, store_op *batch, uint32_t n) {
    uint64_t t0 = clock_mono_ns();
    s->batch_ms = clock_wall_ms();
    int rc = store_begin(s);
    for (store_op *op = batch; op; op = op->next) {
        op->t_batch = t0;
        if (rc != SQLITE_OK) {
            op->status = rc;
            continue;
        }
        op->status = store_apply(s, op);
    }
    uint64_t ta = clock_mono_ns();
    /* Per room, not per chat: the counter, the change log's range. */
    int lrc = store_finish_batch(s);
    if (rc == SQLITE_OK) rc = lrc;
    if (rc == SQLITE_OK) rc = store_tx(s->st.commit);
    store_write_end(s, rc);
    if (rc != SQLITE_OK) {
        store_tx(s->st.rollback);
        store_map_clear(&s->last_seq);
        atomic_fetch_add_explicit(&s->rooms_gen, 1, memory_order_release);
        for (store_op *op = batch; op; op = op->next)
            if (op->status == SQLITE_OK && op->kind != STORE_OP_HISTORY) op->status = rc;
        log_msg(LOG_ERROR, "store_error", "batch of %u failed: %s", n, sqlite3_errstr(rc));
    }
    uint64_t t1 = clock_mono_ns();
    for (store_op *op = batch; op; op = op->next) {
        op->t_applied = ta;
        op->t_committed = t1;
        if (op->status != SQLITE_OK && op->kind == STORE_OP_CHAT) {
            /* Its seq may have been taken from the cache: forget the room's
             * cached value so the next message re-reads the truth. */
            free(strmap_remove(&s->last_seq, op->room_id));
        }
    }
    double dt = (double)(t1 - t0) / 1e6;
    pthread_mutex_lock(&s->lock);
    s->stats.batches++;
    s->stats.ops += n;
    s->stats.last_batch_ms = dt;
    s->stats.last_batch_size = n;
    pthread_mutex_unlock(&s->lock);
}

/* One op (charged bytes) leaves the store's accounting: it no longer
 * counts against store_submit_bounded's limits. */
static void op_finished(store *s, size_t charged) {
    atomic_fetch_sub_explicit(&s->pending_bytes, charged, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->pending, 1, memory_order_relaxed);
}

/* Give a committed batch's ops to on_commit, in commit order (store
 * thread). */
static void hand_over(store *s, store_op *op) {
    while (op) {
        store_op *next = op->next;
        op->next = NULL;
        size_t charged = op->charged;
        /* Counted as pending until handed over: once store_pending says 0,
         * every completion has been posted. */
        s->opt.on_commit(op, s->opt.on_commit_ctx);
        op_finished(s, charged);
        op = next;
    }
}

/* Hand a durable batch's ops (first..last) to on_commit or to the loop's
 * completions, in commit order: the store thread, or the syncer's thread
 * (syncer.h) when the commit is pipelined. */
static void deliver_batch(store *s, store_op *first, store_op *last) {
    if (s->opt.on_commit) {
        hand_over(s, first);
        return;
    }
    pthread_mutex_lock(&s->lock);
    if (s->out_tail) s->out_tail->next = first;
    else s->out_head = first;
    s->out_tail = last;
    pthread_mutex_unlock(&s->lock);
    uv_async_send(&s->async);
}

/* With store_sync=full, pipeline the commit (syncer.h): COMMIT writes the
 * WAL (synchronous=NORMAL) and the syncer's fdatasync, which a batch's
 * hand-over waits for, overlaps the next batch. Before, each batch's
 * COMMIT waited for its fsync on the store thread (commit p50 1.7 ms at
 * 30,000 chats/s), and every chat arriving meanwhile waited for it and
 * then for its own. Store thread, after the archive started: commits
 * before this (migrations, the archive's catch-up) were synced by SQLite. */
static void pipeline_start(store *s) {
    if (!s->opt.sync_full) return;
    const char *db = sqlite3_db_filename(s->db, "main");
    if (!db || !*db) return;
    char wal[4200];
    snprintf(wal, sizeof(wal), "%s-wal", db);
    s->sync = syncer_start(s, wal, deliver_batch);
    if (s->sync &&
        sqlite3_exec(s->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) != SQLITE_OK) {
        syncer_stop(s->sync);
        s->sync = NULL;
    }
}

/* Every commit synced and handed over, then the thread stopped; the
 * connection syncs every commit itself again (what is left runs at
 * close). */
static void pipeline_stop(store *s) {
    if (!s->sync) return;
    syncer *y = s->sync;
    syncer_drain(y);
    s->sync = NULL;
    syncer_stop(y);
    sqlite3_exec(s->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
}

static void *store_thread(void *arg) {
    store *s = arg;
    if (s->arch && archive_start(s) != 0) archive_close(s);
    pipeline_start(s);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        if (!s->in_head && !s->stopping) {
            /* Wake at least once a second for the TTL sweep and snapshots. */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&s->wake, &s->lock, &until);
        }
        if (!s->in_head) {
            bool stop = s->stopping;
            pthread_mutex_unlock(&s->lock);
            if (stop) break;
            time_t now = time(NULL);
            if (atomic_load(&s->last_write_rc) != SQLITE_OK) probe_write(s);
            if (s->opt.ttl_days > 0 && now != s->last_sweep) {
                s->last_sweep = now;
                store_sweep(s);
            }
            if (s->arch && (now - s->last_snapshot >= s->opt.pitr_snapshot_interval_s ||
                            archive_snapshot_wanted(s))) {
                /* The copy must hold only commits the archive was told. */
                if (s->sync) syncer_drain(s->sync);
                archive_snapshot(s);
            }
            continue;
        }
        /* Take up to STORE_MAX_BATCH ops: all that arrived while the last
         * batch was committing go into this one. */
        store_op *batch = s->in_head, *last = batch;
        uint32_t n = 1;
        while (last->next && n < STORE_MAX_BATCH) {
            last = last->next;
            n++;
        }
        s->in_head = last->next;
        if (!s->in_head) s->in_tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&s->lock);

        commit_batch(s, batch, n);

        if (s->sync) syncer_push(s->sync, batch, last); /* handed over once synced */
        else deliver_batch(s, batch, last);
        if (s->ckpt_here) {
            /* After the batch's completions are on their way: only the
             * batches behind this one wait for it. The archive's sync,
             * needed before the write that restarts the WAL (archive_guard
             * waits for it there), runs on the archiver thread meanwhile:
             * the two fsync chains overlap instead of adding up. */
            s->ckpt_here = false;
            archive_sync_start(s);
            int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            pthread_mutex_lock(&s->lock);
            s->ckpt_copied = 0;
            if (rc == SQLITE_OK) s->stats.checkpoints++;
            s->stats.inline_checkpoints++;
            pthread_mutex_unlock(&s->lock);
        }
        store_sweep_busy(s); /* the TTL under load (ops.c) */
    }
    pipeline_stop(s);
    return NULL;
}

/* The store connection's WAL hook, after every commit (store thread):
 * wake the checkpointer once the WAL holds enough pages. Replaces SQLite's
 * autocheckpoint, which would run on this thread. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages) {
    store *s = arg;
    /* The point-in-time archive notes the commit; its frames are archived
     * by the archiver thread, and always before a later write could
     * restart the WAL over them (archive_guard). */
    if (s->sync) syncer_note_commit(s->sync, pages); /* told once synced */
    else archive_commit(s, pages);
    uint32_t n = (uint32_t)pages;
    pthread_mutex_lock(&s->lock);
    s->stats.wal_pages = n;
    if (n < s->ckpt_copied) s->ckpt_copied = 0; /* the WAL restarted */
    if (n >= STORE_CHECKPOINT_MAX_PAGES && !s->ckpt_running) {
        s->ckpt_here = true;
    } else if (n >= STORE_CHECKPOINT_PAGES && !s->ckpt_wanted && !s->ckpt_running) {
        if (s->ckpt_copied && n - s->ckpt_copied <= STORE_CHECKPOINT_TAIL) {
            s->ckpt_here = true;
        } else {
            s->ckpt_wanted = true;
            pthread_cond_signal(&s->ckpt_wake);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return SQLITE_OK;
}

/* The checkpointer thread: a PASSIVE checkpoint (never waits for the
 * writer, never blocks it) on its own connection each time it is woken.
 * Commits go on meanwhile; the WAL restarts from its first frame at the
 * first commit after a checkpoint that copied everything. At nice +10: on
 * a busy core the loop and the store thread, whose work is on a chat's
 * path, run first. */
static void *ckpt_thread(void *arg) {
    store *s = arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->ckpt_wanted && !s->stopping) pthread_cond_wait(&s->ckpt_wake, &s->lock);
        if (s->stopping) break;
        s->ckpt_wanted = false;
        s->ckpt_running = true;
        pthread_mutex_unlock(&s->lock);
        int copied = 0, logged = 0;
        int rc = sqlite3_wal_checkpoint_v2(s->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &logged,
                                           &copied);
        pthread_mutex_lock(&s->lock);
        s->ckpt_running = false;
        if (rc == SQLITE_OK) {
            s->stats.checkpoints++;
            s->ckpt_copied = copied > 0 ? (uint32_t)copied : 0;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Run completions in order until max of them, or of chats carrying
 * max_bytes of text in all, have run; the rest stay queued. Returns true
 * when some are left. */
static bool run_completions(store *s, size_t max, size_t max_bytes) {
    pthread_mutex_lock(&s->lock);
    store_op *op = s->out_head, *tail = s->out_tail;
    s->out_head = s->out_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    size_t bytes = 0;
    for (size_t n = 0; op && n < max && bytes < max_bytes; n++) {
        store_op *next = op->next;
        if (op->kind == STORE_OP_CHAT && op->message) bytes += strlen(op->message);
        op_finished(s, op->charged);
        if (op->done) op->done(op);
        store_op_free(op);
        op = next;
    }
    if (!op) return false;
    /* Put the rest back in front of what committed meanwhile. */
    pthread_mutex_lock(&s->lock);
    tail->next = s->out_head;
    if (!s->out_head) s->out_tail = tail;
    s->out_head = op;
    pthread_mutex_unlock(&s->lock);
    return true;
}

/* Completions (and chat text) run per loop turn at most: after a stall
 * thousands may be ready at once, and broadcasting them all in one turn
 * would queue every member's share before any socket is written (cutting
 * readers as slow consumers). Between turns the loop writes what was
 * queued. */
#define STORE_COMPLETIONS_PER_TURN      256
#define STORE_COMPLETION_BYTES_PER_TURN (256 * 1024)

static void on_async(uv_async_t *h) {
    store *s = h->data;
    if (run_completions(s, STORE_COMPLETIONS_PER_TURN, STORE_COMPLETION_BYTES_PER_TURN))
        uv_async_send(&s->async);
}
/* Open the store's own connection to path: checked, tuned, migrated, its
 * statements prepared and its keys checked. Returns 0, or -1 with err
 * filled (s->db, when open, is left for the caller to close). */
static int open_main_db(store *s, const char *path, wsg_error *err) {
    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) goto fail;
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_busy_timeout(s->db, 5000);
    if (s->db_state == CLEANSTOP_UNKNOWN && cleanstop_check_now(s->db, path, err) != 0) return -1;
    rc = sqlite3_exec(s->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(
            s->db, s->opt.sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", NULL,
            NULL, NULL);
    /* SQLite's default 2 MB page cache made every busy batch re-read index
     * pages from the file (one pread per message): 64 MB holds the hot
     * parts of the indexes of a busy server. Temporary b-trees in memory. */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(
            s->db,
            "PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=0", NULL,
            NULL, NULL);
    if (rc == SQLITE_OK) {
        /* A database made by the first schema lacks the newer columns: add
         * them before the indexes that use them (no-ops on a new file). */
        rc = store_schema(s->db);
    }
    if (rc == SQLITE_OK) rc = store_prepare(s);
    if (rc != SQLITE_OK) goto fail;
    return store_check_keys(s, err) != 0 ? -1 : 0;
fail:
    wsg_error_set(err, WSG_E_STORE_OPEN, "cannot open store %s: %s", path,
                  s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    return -1;
}

/* Open the checkpointer's connection to path (s->ckpt_db). Returns 0, or
 * -1 with err filled and nothing left open. */
static int open_ckpt_db(store *s, const char *path, wsg_error *err) {
    int rc = sqlite3_open_v2(path, &s->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    /* The checkpoint syncs as the store does (both levels sync the WAL and
     * the database file at a checkpoint). */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(
            s->ckpt_db, s->opt.sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
            NULL, NULL, NULL);
    if (rc == SQLITE_OK) return 0;
    wsg_error_set(err, WSG_E_STORE_OPEN, "cannot open store %s for checkpoints: %s", path,
                  s->ckpt_db ? sqlite3_errmsg(s->ckpt_db) : sqlite3_errstr(rc));
    sqlite3_close(s->ckpt_db);
    s->ckpt_db = NULL;
    return -1;
}

/* Set up what the loop and the two threads share, and start the store
 * and checkpoint threads (a failure to start them aborts). */
static void start_threads(store *s, uv_loop_t *loop, wsg_error *err) {
    strmap_init(&s->last_seq);
    strmap_init(&s->sender_keys);
    strmap_init(&s->batch_ranges);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->ckpt_wake, NULL);
    uv_async_init(loop, &s->async, on_async);
    s->async.data = s;
    /* Bug fix: the async handle kept uv_run alive after every connection
     * closed, so SIGTERM never ended the loop. Pending completions are run
     * by store_close. */
    uv_unref((uv_handle_t *)&s->async);
    if (pthread_create(&s->thread, NULL, store_thread, s) != 0 ||
        pthread_create(&s->ckpt_thread, NULL, ckpt_thread, s) != 0) {
        wsg_error_set(err, WSG_E_INTERNAL, "cannot start the store threads");
        abort();
    }
    /* Named for top -H and profiles (bench/store_bytes.py reads their CPU). */
    pthread_setname_np(s->thread, "wsgate-store");
    pthread_setname_np(s->ckpt_thread, "wsgate-ckpt");
}

store *store_open(const char *path, uv_loop_t *loop, const store_options *opt, wsg_error *err) {
    store *s = xcalloc(1, sizeof(*s));
    s->opt = *opt;
    s->shm_fd = -1;
    s->db_path = xstrdup(path);
    s->db_state = cleanstop_consume(path);
    if (opt->pitr) {
        s->pitr_dir = xstrdup(opt->pitr_dir);
        mkdir(s->pitr_dir, 0700);
        if (s->opt.pitr_snapshot_interval_s <= 0) s->opt.pitr_snapshot_interval_s = 3600;
        archive_prepare(s, path);
    }
    if (open_main_db(s, path, err) != 0 || open_ckpt_db(s, path, err) != 0) {
        store_finalize(s);
        sqlite3_close(s->db);
        archive_close(s);
        free(s->pitr_dir);
        free(s->db_path);
        free(s);
        return NULL;
    }
    sqlite3_wal_hook(s->db, on_wal_commit, s);
    /* For archive_guard (walshm.h); without it the guard syncs whenever a
     * checkpoint ran, as it did before it could tell. */
    char shm[4200];
    snprintf(shm, sizeof(shm), "%s-shm", path);
    s->shm_fd = open(shm, O_RDONLY | O_CLOEXEC);
    start_threads(s, loop, err);
    cleanstop_running(path);
    if (s->db_state != CLEANSTOP_UNKNOWN)
        s->db_check = cleanstop_check_start(path, s->db_state, s->shm_fd);
    return s;
}

void store_submit(store *s, store_op *op) {
    op->next = NULL;
    op->t_submitted = clock_mono_ns();
    atomic_fetch_add_explicit(&s->pending, 1, memory_order_relaxed);
    pthread_mutex_lock(&s->lock);
    if (s->in_tail) s->in_tail->next = op;
    else s->in_head = op;
    s->in_tail = op;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

int store_submit_bounded(store *s, store_op *op) {
    size_t max = s->opt.max_pending, max_bytes = s->opt.max_pending_bytes;
    size_t size = op->message ? strlen(op->message) : 0;
    size_t held = atomic_load_explicit(&s->pending_bytes, memory_order_relaxed);
    /* One message larger than the byte bound still goes through an empty
     * queue: the bound is on the backlog, not on a message. */
    if ((max && atomic_load_explicit(&s->pending, memory_order_relaxed) >= max) ||
        (max_bytes && held > 0 && held + size > max_bytes)) {
        atomic_fetch_add_explicit(&s->rejected, 1, memory_order_relaxed);
        return -1;
    }
    op->charged = size;
    atomic_fetch_add_explicit(&s->pending_bytes, size, memory_order_relaxed);
    store_submit(s, op);
    return 0;
}

uint32_t store_rooms_gen(const store *s) {
    return atomic_load_explicit(&s->rooms_gen, memory_order_acquire);
}

size_t store_pending(const store *s) {
    return atomic_load_explicit(&((store *)s)->pending, memory_order_relaxed);
}

void store_get_stats(store *s, store_stats *out) {
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
    out->rejected = atomic_load_explicit(&s->rejected, memory_order_relaxed);
    out->archive_syncs = atomic_load_explicit(&s->archive_syncs, memory_order_relaxed);
}

static void on_store_closed(uv_handle_t *h) { free(h->data); }

void store_close(store *s) {
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_signal(&s->wake);
    pthread_cond_signal(&s->ckpt_wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_join(s->ckpt_thread, NULL);
    /* Damage found leaves no clean-stop record: the next start refuses. */
    bool damaged = cleanstop_check_end(s->db_check);
    /* Closed first: the store connection, closed last, then checkpoints
     * the whole WAL and removes it. */
    sqlite3_close(s->ckpt_db);
    run_completions(s, SIZE_MAX, SIZE_MAX);
    store_map_clear(&s->last_seq);
    strmap_free(&s->last_seq);
    store_map_clear(&s->sender_keys);
    strmap_free(&s->sender_keys);
    store_map_clear(&s->batch_ranges);
    strmap_free(&s->batch_ranges);
    free(s->sweep_room);
    store_finalize(s);
    archive_sync(s);
    sqlite3_close(s->db);
    cleanstop_record(s->db_path, damaged);
    free(s->db_path);
    if (s->shm_fd >= 0) close(s->shm_fd);
    archive_close(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->ckpt_wake);
    free(s->pitr_dir);
    uv_close((uv_handle_t *)&s->async, on_store_closed);
}
