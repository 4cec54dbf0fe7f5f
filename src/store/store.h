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
#include <uv.h>

#include "store/crypto.h"

typedef enum store_op_kind {
    STORE_OP_CHAT,       /* insert a message (assigning its room sequence number) */
    STORE_OP_ROOM_JOIN,  /* create the room on first join (owner = joiner) */
    STORE_OP_HISTORY,    /* read a room's messages */
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
    json_t *messages;        /* out (history): chat data objects, oldest first */
    bool has_more;           /* out (history) */
    uint64_t gen;            /* the caller's tag, untouched */
    int status;              /* out: 0 or an SQLite error code */
    store_done_cb done;
    void *ctx;
};

typedef struct store_options {
    bool sync_full;                  /* synchronous=FULL (else NORMAL) */
    int64_t ttl_days;                /* 0: messages are kept forever */
    int64_t idempotency_window_s;    /* clientMessageId de-duplication window */
    bool pitr;                       /* continuous backup for point-in-time restore */
    int64_t pitr_retention_days;
    const char *pitr_dir;            /* where base snapshots go */
    int64_t pitr_snapshot_interval_s;/* how often a new base snapshot is taken */
    crypto_keyring *keys;            /* borrowed; NULL: no encryption at rest */
} store_options;

typedef struct store store;

/* Open (creating if needed) the database at path, check its integrity,
 * start the store thread and attach its completion handle to loop. Returns
 * the store, or NULL with a message in err (a corrupt file, a key that does
 * not open its rows, an unwritable path). */
store *store_open(const char *path, uv_loop_t *loop, const store_options *opt, char *err,
                  size_t errlen);

/* Return a new zeroed op of `kind` (caller fills it and submits it). */
store_op *store_op_new(store_op_kind kind);

/* Queue op for the store thread; its done callback runs later on the loop
 * thread. Ownership of op passes to the store. Loop thread only. */
void store_submit(store *s, store_op *op);

/* Return operations submitted and not yet completed. */
size_t store_pending(const store *s);

/* Statistics of the last committed batch. */
typedef struct store_stats {
    uint64_t batches;
    uint64_t ops;
    double last_batch_ms;
    uint32_t last_batch_size;
    uint64_t expired;                /* messages deleted by the TTL sweeper */
} store_stats;
void store_get_stats(store *s, store_stats *out);

/* Commit what is queued, stop the thread, run the remaining completions and
 * close the database and the loop handle. The store is freed once libuv
 * has closed its handle (keep running the loop). */
void store_close(store *s);

/* Write the encryption AAD of column col ('s' sender, 'n' name, 'm'
 * message) of message seq in room into out (len bytes, cut to fit, NUL
 * terminated): "messages.<col>:<room>:<seq>". Every stored value is bound
 * to these bytes, so they must never change. Exposed for its unit test. */
void store_message_aad(char *out, size_t len, char col, const char *room, int64_t seq);

/* `wsgate backup`: copy the live database at path (a consistent snapshot,
 * safe while the server runs) to out. Returns 0 or -1 with err. */
int store_backup(const char *path, const char *out, char *err, size_t errlen);

/* `wsgate restore`: build at `out` the database exactly as it was at Unix
 * time `to` (to the second) from the newest base snapshot in pitr_dir taken
 * at or before `to` and the change log kept in the live database at path.
 * Returns 0 or -1 with err (e.g. `to` before the recovery window). */
int store_restore(const char *path, const char *pitr_dir, int64_t to, const char *out, char *err,
                  size_t errlen);

/* Return 1 when any stored value (messages, rooms, the change log) in the
 * database at path was sealed with key_id, 0 when none, -1 when the file
 * cannot be read (counted as in use by callers that destroy keys). */
int store_key_in_use(const char *path, uint32_t key_id);

/* Decrypt a stored column value for the CLI and tests: blob/len as stored,
 * aad as the store builds it. Returns a malloc'd string or NULL. */
char *store_open_value(const crypto_keyring *keys, const void *blob, size_t len, const char *aad);

#endif
