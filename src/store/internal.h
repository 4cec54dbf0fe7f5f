/* The store's private parts, shared by its three layers (as SQLite's
 * btree, pager and wal):
 *
 *   store.c  the thread and the queue: submission (bounded), the group
 *            commit loop, the checkpointer, completions or on_commit;
 *            syncer.c, the pipelined commit's sync thread (syncer.h);
 *   ops.c    the operations inside a batch: the sequence cache, sealing,
 *            apply, history, the change log's rows, the TTL sweep; with
 *   schema.c the tables and their migrations, the statements, the checks
 *            at open; and row.c, the compact row's codecs (row.h);
 *   archive.c point-in-time recovery from the WAL: committed frames and
 *            base snapshots archived, sealed (archive.h), and their
 *            restore; walframe.c, the WAL reader it uses (I/O-free);
 *   pitr.c   the CLI's backup, restore (the archive's, or the first
 *            design's pitr_log replay for older times), export and key check.
 *
 * store.c calls ops.c, schema.c and archive.c; ops.c calls store.c only for
 * the health marks and BEGIN; pitr.c calls archive.c, ops.c's row readers
 * and schema.c. Not for use outside src/store/. */
#ifndef WSGATE_STORE_INTERNAL_H
#define WSGATE_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <time.h>

#include "common/strmap.h"
#include "store/store.h"

/* Statements shared by the live store and by restore's replay of the change
 * log (the log's columns bind in this order: ?1 roomId, ?2 seq, ?3
 * messageId, ?4 senderId or the room's owner, ?5 senderName, ?6 message,
 * ?7 timestamp, ?8 clientMessageId, ?9 senderKey). */
#define SQL_INSERT_MESSAGE                                                                         \
    "INSERT INTO messages(roomId, seq, messageId, senderId, senderName, message, timestamp,"       \
    " clientMessageId, senderKey) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
#define SQL_ROOM_JOIN                                                                              \
    "INSERT INTO rooms(roomId, ownerId, createdAt, lastActivity) VALUES (?1, ?4, ?7, ?7)"          \
    " ON CONFLICT(roomId) DO NOTHING"
#define SQL_ROOM_TOUCH                                                                             \
    "INSERT INTO rooms(roomId, ownerId, createdAt, lastActivity) VALUES (?1, ?4, ?7, ?7)"          \
    " ON CONFLICT(roomId) DO UPDATE SET lastActivity = excluded.lastActivity"
#define SQL_DELETE_MESSAGE "DELETE FROM messages WHERE roomId = ?1 AND seq = ?2"
/* Only a room that never gave a seq is ever deleted: its counter is the
 * promise that a seq is never reused (docs/storage.md). */
#define SQL_DELETE_ROOM "DELETE FROM rooms WHERE roomId = ?1 AND lastSeq = 0"

/* Kinds of rows of pitr_log, the change log of the first PITR design, no
 * longer written: restore replays it for times before the switch to the
 * WAL archive (archive.h). A room's lastSeq is
 * not logged: restore derives it from the logged messages. */
enum {
    LOG_MESSAGE = 1,     /* the first layout: one message, all its columns */
    LOG_ROOM_JOIN = 2,   /* roomId, owner (senderId), timestamp */
    LOG_ROOM_TOUCH = 3,  /* the same, updating lastActivity */
    LOG_DELETE = 4,      /* roomId, seq; since the compact row, with the
                          * deleted row's columns (restore may need it) */
    LOG_ROOM_DELETE = 5, /* roomId */
    LOG_MESSAGES = 6     /* roomId, seq..seqHi: the room's messages committed
                          * in the second of t_ms, whose columns are in
                          * messages (or in the LOG_DELETE row that removed
                          * them) */
};
#define LOG_DELETE_SQL "4" /* LOG_DELETE in SQL text */

typedef struct stmts {
    /* Prepared once: sqlite3_exec would parse them again for every batch
     * (7% of the store thread's instructions when batches are small). */
    sqlite3_stmt *begin; /* BEGIN IMMEDIATE */
    sqlite3_stmt *commit;
    sqlite3_stmt *rollback;
    sqlite3_stmt *insert_message;
    sqlite3_stmt *room_touch;
    sqlite3_stmt *max_seq;
    sqlite3_stmt *room_seq;
    sqlite3_stmt *oldest_seq;
    sqlite3_stmt *expired_rooms;
    sqlite3_stmt *delete_room;
    sqlite3_stmt *probe;
    sqlite3_stmt *find_client_id;
    sqlite3_stmt *history_before;
    sqlite3_stmt *history_after;
    sqlite3_stmt *first_room; /* the TTL sweep's walk over rooms */
    sqlite3_stmt *next_room;
    sqlite3_stmt *room_head;   /* a room's oldest messages */
    sqlite3_stmt *delete_head; /* ... deleted */
} stmts;

struct store {
    sqlite3 *db;
    stmts st;
    store_options opt;
    char *pitr_dir;
    struct archive *arch; /* the point-in-time archive (archive.c); NULL: PITR off */
    /* The WAL-index ("-shm") opened read-only, for archive_guard to see
     * whether a write may restart the WAL (walshm.h); -1 when not open.
     * Closed only after the connections are: closing a descriptor of a
     * file drops every POSIX lock the process holds on it, SQLite's too. */
    int shm_fd;
    _Atomic uint64_t archive_syncs; /* store_stats.archive_syncs */
    /* The pipelined commit (syncer.h), store thread's while it runs; NULL
     * with store_sync=normal or when it could not start. For store_health:
     * when the sync in progress began (monotonic ms, 0: none) and how the
     * last one ended (an SQLite code). */
    struct syncer *sync;
    _Atomic int64_t sync_since_ms;
    _Atomic int sync_rc;

    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    /* The checkpointer: its own connection and thread, woken (under lock)
     * when a commit leaves STORE_CHECKPOINT_PAGES or more in the WAL. */
    sqlite3 *ckpt_db;
    pthread_t ckpt_thread;
    pthread_cond_t ckpt_wake;
    bool ckpt_wanted;
    bool ckpt_running;
    uint32_t ckpt_copied;          /* WAL frames copied by the last run (0: none
                                    * in this generation of the WAL) */
    bool ckpt_here;                /* store thread only: checkpoint after this batch */
    store_op *in_head, *in_tail;   /* submitted, waiting for the thread */
    store_op *out_head, *out_tail; /* committed, waiting for the loop */
    bool stopping;
    _Atomic size_t pending;       /* unfinished ops (submitted by any worker) */
    _Atomic uint64_t rejected;    /* refused by store_submit_bounded */
    _Atomic size_t pending_bytes; /* chat text of the unfinished bounded ops */
    _Atomic uint32_t rooms_gen;   /* store_rooms_gen: bumped when a room's row may be gone */
    /* Health, for /readyz: when the write in progress started (monotonic
     * ms, 0 when none) and the result of the last one (an SQLite code). */
    _Atomic int64_t write_since_ms;
    _Atomic int last_write_rc;
    store_stats stats;

    strmap last_seq;     /* store thread only: room -> room_cache */
    strmap sender_keys;  /* store thread only: user id -> STORE_SENDER_KEY_LEN bytes */
    strmap batch_ranges; /* store thread only: room -> seq_range of this batch */
    char *sweep_room;    /* store thread only: the TTL walk's last room (NULL: start) */
    int64_t batch_ms;    /* commit time of the batch being written */
    time_t last_sweep;
    time_t last_snapshot;
    uv_async_t async;

    /* Store thread only, the TTL under load (store_sweep_busy): expired
     * messages may be left this second; when it may step again. */
    bool sweep_more;
    double sweep_next_ms;

    /* The checks at start (cleanstop.h): the database file's path, how the
     * last run left it (known: its integrity check runs in the background,
     * db_check, NULL when none). */
    char *db_path;
    int db_state; /* cleanstop_state */
    struct cleanstop_check *db_check;
};

/* ---- schema.c ---- */

/* Create or migrate the schema of db (a new file, or one written by an
 * older layout), and register the SQL functions the migration and the
 * replay of old change-log rows use (wsgate_id_pack, wsgate_key_pack).
 * Returns an SQLite code. */
int store_schema(sqlite3 *db);

/* PRAGMA quick_check: returns 0 when the file is sound, else
 * WSG_E_STORE_DAMAGED with err filled (err may be NULL). */
int store_check_integrity(sqlite3 *db, wsg_error *err, const char *path);

/* Copy the database open in from (main) page for page into a new file at
 * path (the caller unlinks any old one first). The caller keeps from; the
 * copy is closed on return. Returns an SQLite code. */
int store_copy_db(sqlite3 *from, const char *path);

/* Prepare (store_prepare) or finalize (store_finalize) s->st. */
int store_prepare(store *s);
void store_finalize(store *s);

/* With encryption on, the newest sealed message must open. Returns 0, or
 * WSG_E_STORE_KEYS with err filled (err may be NULL). */
int store_check_keys(store *s, wsg_error *err);

/* ---- ops.c ---- */

/* Bytes of a sender's blind index kept in senderKey (of the 32 of its
 * HMAC-SHA256): a lookup key among one sender's clientMessageIds. */
#define STORE_SENDER_KEY_LEN 16

/* Run one op inside the open batch transaction (store thread). Returns an
 * SQLite code (op->status). */
int store_apply(store *s, store_op *op);

/* Delete expired messages, then idle rooms, while no writes wait. */
void store_sweep(store *s);

/* Between two batches (store thread): while messages may have expired,
 * delete a bounded step of them, at most every few tens of ms, so the TTL
 * keeps up under a load that never leaves store_sweep a turn. */
void store_sweep_busy(store *s);

/* Read the message at columns col (senderId), col + 1 (senderName) and
 * col + 2 (message) of st's row, message seq of room: a compact row (one
 * sealed value), plaintext columns, or a row of the first layout sealed
 * column by column. Returns 0 with three malloc'd strings (the caller
 * frees), or a WSG_E_CRYPTO_* code with all three NULL. */
int store_read_message(sqlite3_stmt *st, int col, const crypto_keyring *keys, const char *room,
                       int64_t seq, char **sender, char **name, char **text);

/* Write the messageId at column col of st's row into out (len bytes, at
 * least 37): a packed id as its UUID text, any other as stored. */
void store_read_message_id(sqlite3_stmt *st, int col, char *out, size_t len);

/* The batch's per-room writes, before its COMMIT: each room's counter
 * raised to its last seq, and its message range in the change log; then
 * forget them. Returns an SQLite code. */
int store_finish_batch(store *s);

/* Empty a map whose values are plain allocations. */
void store_map_clear(strmap *m);

/* Run a prepared transaction statement (s->st.begin, commit, rollback).
 * Returns an SQLite code. */
int store_tx(sqlite3_stmt *st);

/* Step a write statement, then reset it and clear its bindings. */
int store_step_done(sqlite3_stmt *st);

/* Read a column that may be sealed: TEXT is plaintext, BLOB is sealed.
 * Returns malloc'd text, or NULL with a WSG_E_CRYPTO_* code in *err. */
char *store_column_value(sqlite3_stmt *st, int col, const crypto_keyring *keys, const char *aad,
                         int *err);

/* ---- store.c ---- */

/* Mark the start and the result of a write transaction (store thread),
 * for store_health. */
void store_write_begin(store *s);
void store_write_end(store *s, int rc);

/* BEGIN IMMEDIATE a write transaction (store thread), marked for
 * store_health, and make the archive durable when SQLite may restart the
 * WAL (archive_guard). Returns an SQLite code. */
int store_begin(store *s);

#endif
