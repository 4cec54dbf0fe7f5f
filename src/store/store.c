#include "store/store.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/strmap.h"
#include "log/log.h"

/* Operations committed in one transaction at most. */
#define STORE_MAX_BATCH 1024

struct store {
    sqlite3 *db;
    sqlite3_stmt *insert_message;
    sqlite3_stmt *room_join;
    sqlite3_stmt *room_touch;
    sqlite3_stmt *max_seq;

    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    store_op *in_head, *in_tail;   /* submitted, waiting for the thread */
    store_op *out_head, *out_tail; /* committed, waiting for the loop */
    bool stopping;
    size_t pending;                /* loop thread's count of unfinished ops */
    store_stats stats;

    strmap last_seq;               /* store thread only: room -> last seq (int64 boxed) */
    uv_async_t async;
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS rooms ("
    "  roomId TEXT PRIMARY KEY,"
    "  ownerId TEXT NOT NULL,"
    "  createdAt INTEGER NOT NULL,"
    "  lastActivity INTEGER NOT NULL"
    ");"
    "CREATE TABLE IF NOT EXISTS messages ("
    "  roomId TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  messageId TEXT NOT NULL UNIQUE,"
    "  senderId TEXT NOT NULL,"
    "  senderName TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  timestamp INTEGER NOT NULL,"
    "  PRIMARY KEY (roomId, seq)"
    ") WITHOUT ROWID;";

void store_uuid(char out[37]) {
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1) abort();
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

store_op *store_op_new(store_op_kind kind) {
    store_op *op = xcalloc(1, sizeof(*op));
    op->kind = kind;
    return op;
}

static void op_free(store_op *op) {
    free(op->room_id);
    free(op->user_id);
    free(op->username);
    free(op->message);
    free(op);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void clear_seq_cache(store *s) {
    size_t it = 0;
    void *v;
    while (strmap_next(&s->last_seq, &it, NULL, &v)) free(v);
    strmap_free(&s->last_seq);
    strmap_init(&s->last_seq);
}

/* Return the next sequence number of room (store thread). */
static int next_seq(store *s, const char *room_id, int64_t *seq) {
    int64_t *last = strmap_get(&s->last_seq, room_id);
    if (!last) {
        sqlite3_stmt *st = s->max_seq;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, room_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) return rc;
        last = xmalloc(sizeof(*last));
        *last = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        strmap_put(&s->last_seq, room_id, last, NULL);
    }
    *seq = ++*last;
    return SQLITE_OK;
}

static int apply(store *s, store_op *op) {
    int rc;
    sqlite3_stmt *st;
    switch (op->kind) {
    case STORE_OP_ROOM_JOIN:
        st = s->room_join;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, op->user_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, op->timestamp);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
    case STORE_OP_CHAT:
        rc = next_seq(s, op->room_id, &op->seq);
        if (rc != SQLITE_OK) return rc;
        st = s->insert_message;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, op->seq);
        sqlite3_bind_text(st, 3, op->message_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, op->user_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, op->username, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, op->message, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, op->timestamp);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return rc;
        /* The seed's rooms table: a room posted to exists, owned by the
         * first member seen, and its lastActivity follows its messages. */
        st = s->room_touch;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, op->user_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, op->timestamp);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    return SQLITE_MISUSE;
}

static void commit_batch(store *s, store_op *batch, uint32_t n) {
    double t0 = now_ms();
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (store_op *op = batch; op; op = op->next) {
        op->status = rc == SQLITE_OK ? apply(s, op) : rc;
        /* A failed op is reported alone; the rest of the batch still
         * commits (each op is a single statement group, so a failure
         * leaves nothing half-written except when seq was assigned). */
    }
    if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        clear_seq_cache(s);
        for (store_op *op = batch; op; op = op->next)
            if (op->status == SQLITE_OK) op->status = rc;
        log_msg(LOG_ERROR, "store_error", "batch of %u failed: %s", n, sqlite3_errstr(rc));
    }
    for (store_op *op = batch; op; op = op->next) {
        if (op->status != SQLITE_OK && op->kind == STORE_OP_CHAT) {
            /* Its seq may have been taken from the cache: forget the room's
             * cached value so the next message re-reads the truth. */
            int64_t *v = strmap_remove(&s->last_seq, op->room_id);
            free(v);
        }
    }
    double dt = now_ms() - t0;
    pthread_mutex_lock(&s->lock);
    s->stats.batches++;
    s->stats.ops += n;
    s->stats.last_batch_ms = dt;
    s->stats.last_batch_size = n;
    pthread_mutex_unlock(&s->lock);
}

static void *store_thread(void *arg) {
    store *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (!s->in_head && !s->stopping) pthread_cond_wait(&s->wake, &s->lock);
        if (!s->in_head && s->stopping) {
            pthread_mutex_unlock(&s->lock);
            break;
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

        pthread_mutex_lock(&s->lock);
        if (s->out_tail) s->out_tail->next = batch;
        else s->out_head = batch;
        s->out_tail = last;
        pthread_mutex_unlock(&s->lock);
        uv_async_send(&s->async);
    }
    return NULL;
}

static void run_completions(store *s) {
    pthread_mutex_lock(&s->lock);
    store_op *op = s->out_head;
    s->out_head = s->out_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    while (op) {
        store_op *next = op->next;
        s->pending--;
        if (op->done) op->done(op);
        op_free(op);
        op = next;
    }
}

static void on_async(uv_async_t *h) { run_completions(h->data); }

static int prepare(store *s, const char *sql, sqlite3_stmt **st) {
    return sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
}

store *store_open(const char *path, uv_loop_t *loop, bool sync_full, char *err, size_t errlen) {
    store *s = xcalloc(1, sizeof(*s));
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) goto fail;
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_busy_timeout(s->db, 5000);
    rc = sqlite3_exec(s->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                          NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, SCHEMA, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = prepare(s,
                     "INSERT INTO messages(roomId, seq, messageId, senderId, senderName, message, timestamp)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                     &s->insert_message);
    if (rc == SQLITE_OK)
        rc = prepare(s,
                     "INSERT INTO rooms(roomId, ownerId, createdAt, lastActivity) VALUES (?1, ?2, ?3, ?3)"
                     " ON CONFLICT(roomId) DO NOTHING",
                     &s->room_join);
    if (rc == SQLITE_OK)
        rc = prepare(s,
                     "INSERT INTO rooms(roomId, ownerId, createdAt, lastActivity) VALUES (?1, ?2, ?3, ?3)"
                     " ON CONFLICT(roomId) DO UPDATE SET lastActivity = excluded.lastActivity",
                     &s->room_touch);
    if (rc == SQLITE_OK)
        rc = prepare(s, "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE roomId = ?1", &s->max_seq);
    if (rc != SQLITE_OK) goto fail;

    strmap_init(&s->last_seq);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    uv_async_init(loop, &s->async, on_async);
    s->async.data = s;
    /* Bug fix (shutdown hang): an active async handle kept uv_run() alive
     * forever after SIGTERM had closed the listener and every connection.
     * Unreferenced, it no longer holds the loop open; store_close() still
     * runs whatever completions are left. */
    uv_unref((uv_handle_t *)&s->async);
    if (pthread_create(&s->thread, NULL, store_thread, s) != 0) {
        snprintf(err, errlen, "cannot start the store thread");
        uv_close((uv_handle_t *)&s->async, NULL);
        sqlite3_close(s->db);
        /* The async handle is closed on the loop; the struct leaks only on
         * this fatal start-up path, where the process exits. */
        return NULL;
    }
    return s;
fail:
    snprintf(err, errlen, "cannot open store %s: %s", path,
             s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    sqlite3_finalize(s->insert_message);
    sqlite3_finalize(s->room_join);
    sqlite3_finalize(s->room_touch);
    sqlite3_finalize(s->max_seq);
    sqlite3_close(s->db);
    free(s);
    return NULL;
}

void store_submit(store *s, store_op *op) {
    op->next = NULL;
    s->pending++;
    pthread_mutex_lock(&s->lock);
    if (s->in_tail) s->in_tail->next = op;
    else s->in_head = op;
    s->in_tail = op;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

size_t store_pending(const store *s) { return s->pending; }

void store_get_stats(store *s, store_stats *out) {
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
}

static void on_store_closed(uv_handle_t *h) { free(h->data); }

void store_close(store *s) {
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    run_completions(s);
    clear_seq_cache(s);
    strmap_free(&s->last_seq);
    sqlite3_finalize(s->insert_message);
    sqlite3_finalize(s->room_join);
    sqlite3_finalize(s->room_touch);
    sqlite3_finalize(s->max_seq);
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    uv_close((uv_handle_t *)&s->async, on_store_closed);
}
