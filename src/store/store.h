/* The embedded store, standing in for the seed's DynamoDB rooms and
 * messages tables (with TTL, point-in-time recovery and KMS encryption):
 * one SQLite file (WAL) written by a store thread that commits queued
 * operations in batches (group commit: one transaction, one fsync per
 * batch). The event loop never waits on disk: it submits operations and is
 * woken (uv_async) to run each operation's completion, in submission order,
 * once its batch is durable. Reads (history) go through the same queue, so
 * a read sees every write submitted before it and none after. */
#ifndef WSGATE_STORE_STORE_H
#define WSGATE_STORE_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "common/error.h"
#include "crypto/crypto.h"

typedef enum store_op_kind {
    STORE_OP_CHAT,      /* insert a message (assigning its room sequence number) */
    STORE_OP_ROOM_JOIN, /* create the room on first join (owner = joiner) */
    STORE_OP_HISTORY,   /* read a room's messages */
} store_op_kind;

typedef struct store_op store_op;

/* Runs on the loop thread after the op's batch committed (status 0) or
 * failed (status = an SQLite error code). The op is freed after it returns. */
typedef void (*store_done_cb)(store_op *op);

struct store_op {
    store_op *next;
    store_op_kind kind;
    char *room_id;           /* owned by the op */
    char *user_id;           /* sender (chat) or joiner (room join); owned */
    char *username;          /* owned, chat only */
    char *message;           /* owned, chat only */
    char *client_message_id; /* owned, chat only, may be NULL */
    char message_id[37];     /* UUID, chat only */
    int64_t timestamp;       /* Unix seconds */
    char conn_id[24];        /* the connection that asked, for replies */
    int64_t seq;             /* out (chat): the message's sequence number in its room */
    bool duplicate;          /* out (chat): clientMessageId seen before; the fields
                              * now hold the original message */
    int64_t after_seq;       /* history: only seq > after_seq (-1: no bound) */
    int64_t before_seq;      /* history: only seq < before_seq (0: no bound) */
    int limit;               /* history: at most this many (newest when before_seq
                              * or unbounded, oldest when after_seq) */
    size_t max_bytes;        /* history: stop (has_more) once the page's message
                              * text would pass this many bytes; 0: no bound.
                              * The first message is always taken. */
    bool bounds;             /* history: also fill oldest_seq and last_seq */
    int64_t oldest_seq;      /* out (history with bounds): the room's oldest kept
                              * message (past the TTL cut), 0 when none */
    int64_t last_seq;        /* out (history with bounds): the room's counter,
                              * the highest seq ever given (0: none) */
    json_t *messages;        /* out (history): chat data objects, oldest first */
    bool has_more;           /* out (history) */
    uint64_t gen;            /* the caller's tag, untouched */
    size_t charged;          /* store's: message bytes counted by store_submit_bounded */
    int status;              /* out: 0 or an SQLite error code */
    /* Stage stamps (clock_mono_ns), for wsgate_chat_stage_seconds: received
     * is the caller's (0: not stamped), the others the store's. */
    uint64_t t_received;  /* the message was read, before the app lock */
    uint64_t t_submitted; /* store_submit queued it */
    uint64_t t_batch;     /* its batch began (BEGIN) */
    uint64_t t_applied;   /* its batch's statements ran, COMMIT called */
    uint64_t t_committed; /* its batch's COMMIT returned (fsync done) */
    store_done_cb done;
    void *ctx;
};

typedef struct store_options {
    bool sync_full;               /* synchronous=FULL (else NORMAL) */
    int64_t ttl_days;             /* 0: messages are kept forever */
    int64_t idempotency_window_s; /* clientMessageId de-duplication window */
    bool pitr;                    /* continuous backup for point-in-time restore */
    int64_t pitr_retention_days;
    const char *pitr_dir;             /* where base snapshots go */
    int64_t pitr_snapshot_interval_s; /* how often a new base snapshot is taken */
    crypto_keyring *keys;             /* borrowed; NULL: no encryption at rest */
    size_t max_pending;       /* store_submit_bounded refuses past this many ops (0: no bound) */
    size_t max_pending_bytes; /* ... or past this many bytes of chat text (0: no bound) */
    /* When set, the store thread itself (with sync_full, its sync thread,
     * once the batch is synced: src/store/syncer.h) hands every op of a
     * committed (or failed) batch to on_commit, one by one in commit order, instead of
     * waking the loop to run op->done: ownership of the op passes to
     * on_commit (free it with store_op_free). This is how committed chats
     * reach the workers with no hub loop in between. */
    void (*on_commit)(store_op *op, void *ctx);
    void *on_commit_ctx;
} store_options;

typedef struct store store;

/* Open (creating if needed) the database at path, check its integrity,
 * start the store thread and attach its completion handle to loop. Returns
 * the store, or NULL with err filled (err may be NULL): WSG_E_STORE_DAMAGED
 * (a corrupt file), WSG_E_STORE_KEYS (a key that does not open its rows),
 * WSG_E_STORE_OPEN (an unwritable path, any other SQLite failure). */
store *store_open(const char *path, uv_loop_t *loop, const store_options *opt, wsg_error *err);

/* Return a new zeroed op of `kind` (caller fills it and submits it). */
store_op *store_op_new(store_op_kind kind);

/* Free an op that was never submitted (store_submit_bounded refused it). */
void store_op_free(store_op *op);

/* Queue op for the store thread; its done callback runs later on the loop
 * thread (or the op goes to store_options.on_commit). Ownership of op
 * passes to the store. Any thread. */
void store_submit(store *s, store_op *op);

/* Queue op like store_submit unless max_pending operations, or chats
 * holding max_pending_bytes of text, are already unfinished: then return -1
 * at once, op untouched and still the caller's (counted in
 * store_stats.rejected). Returns 0 when queued. For work a
 * client can repeat at will (chats, history reads), so a stalled disk
 * cannot grow memory without bound. */
int store_submit_bounded(store *s, store_op *op);

/* Return operations submitted and not yet completed. */
size_t store_pending(const store *s);

/* Return the store's room generation (any thread): it changes whenever a
 * room's row may have gone (the TTL sweep deleted one, a failed batch
 * rolled joins back), so a worker that skips joins of rooms it joined
 * recently (src/app/room_joins.h) sends them again. */
uint32_t store_rooms_gen(const store *s);

/* Return 0 while the store can commit; else -1 with the reason in why (the
 * last commit failed and no later one has succeeded, or the commit in
 * progress has been running for more than stall_ms). Any thread. */
int store_health(store *s, int64_t stall_ms, char *why, size_t len);

/* Statistics of the last committed batch. */
typedef struct store_stats {
    uint64_t batches;
    uint64_t ops;
    double last_batch_ms;
    uint32_t last_batch_size;
    uint64_t expired;            /* messages deleted by the TTL sweeper */
    uint64_t rooms_expired;      /* rooms rows deleted by the TTL sweeper */
    uint64_t rejected;           /* refused by store_submit_bounded */
    uint64_t checkpoints;        /* WAL checkpoints run by the checkpointer thread */
    uint32_t wal_pages;          /* pages in the WAL after the last commit */
    uint64_t archive_syncs;      /* fdatasyncs of the point-in-time archive */
    uint64_t inline_checkpoints; /* of checkpoints, those the store thread ran itself */
} store_stats;
void store_get_stats(store *s, store_stats *out);

/* Commit what is queued, stop the thread, run the remaining completions and
 * close the database and the loop handle. The store is freed once libuv
 * has closed its handle (keep running the loop). */
void store_close(store *s);

/* Write the encryption AAD of column col of message seq in room into out
 * (len bytes, cut to fit, NUL terminated): "messages.<col>:<room>:<seq>".
 * col is 'b' for the compact row's one sealed value (sender, name and text
 * together); 's' sender, 'n' name and 'm' message for rows of the first
 * layout, sealed column by column. Every stored value is bound to these
 * bytes, so they must never change. Exposed for its unit test. */
void store_message_aad(char *out, size_t len, char col, const char *room, int64_t seq);

/* `wsgate backup`: copy the live database at path (a consistent snapshot,
 * safe while the server runs) to out. Returns 0 or a negative WSG_E_STORE_*
 * code with err filled. */
int store_backup(const char *path, const char *out, wsg_error *err);

/* `wsgate restore`: build at `out` the database exactly as it was at Unix
 * time `to` (to the end of that second) from the newest base snapshot in
 * pitr_dir taken at or before `to` and the archived WAL frames of the
 * commits up to then, opened with keys (NULL: the archive must be
 * unsealed); for a time before the data directory switched to the WAL
 * archive, from the first design's base files and change log (pitr_log)
 * of the live database at path. Returns 0 or a negative WSG_E_STORE_* code
 * with err filled (WSG_E_STORE_WINDOW: `to` before the recovery window;
 * WSG_E_STORE_ARCHIVE: a damaged archive file). */
int store_restore(const char *path, const char *pitr_dir, const crypto_keyring *keys, int64_t to,
                  const char *out, wsg_error *err);

/* Return 1 when any stored value (messages, rooms, an old change log) in
 * the database at path, or a file of the point-in-time archive beside it
 * (DATA_DIR/pitr), was sealed with key_id, 0 when none, -1 when the file
 * cannot be read (counted as in use by callers that destroy keys). */
int store_key_in_use(const char *path, uint32_t key_id);

typedef enum store_export_format { STORE_EXPORT_JSONL, STORE_EXPORT_CSV } store_export_format;

/* `wsgate export`: write the messages of room with timestamp >= since (and
 * not past ttl_days, 0 = forever) to out, oldest first, decrypted with keys
 * (NULL: the store must hold no sealed values), as JSON lines (the chat
 * data objects) or CSV with a header. Reads the database at path read-only
 * (safe while the server runs). Returns the number of messages written, or
 * a negative WSG_E_STORE_* code with err filled (WSG_E_STORE_MISSING: no
 * file at path; WSG_E_STORE_KEYS: a value does not open). */
long store_export(const char *path, const crypto_keyring *keys, const char *room, int64_t since,
                  int64_t ttl_days, store_export_format format, FILE *out, wsg_error *err);

/* Decrypt a stored column value for the CLI and tests: blob/len as stored,
 * aad as the store builds it. Returns a malloc'd string or NULL. */
char *store_open_value(const crypto_keyring *keys, const void *blob, size_t len, const char *aad);

#endif
