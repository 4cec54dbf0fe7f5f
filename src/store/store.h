/* The embedded store, standing in for the seed's DynamoDB rooms and
 * messages tables: one SQLite file (WAL) written by a store thread that
 * commits queued operations in batches (group commit: one transaction per
 * batch). The event loop never waits on disk: it submits operations and is
 * woken (uv_async) to run each operation's completion, in submission order,
 * once its batch is durable. */
#ifndef WSGATE_STORE_STORE_H
#define WSGATE_STORE_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef enum store_op_kind {
    STORE_OP_CHAT,       /* insert a message (assigning its room sequence number) */
    STORE_OP_ROOM_JOIN,  /* create the room on first join (owner = joiner) */
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
    char message_id[37];     /* UUID, chat only */
    int64_t timestamp;       /* Unix seconds */
    char conn_id[24];        /* the connection that asked, for replies */
    int64_t seq;             /* out: the message's sequence number in its room */
    int status;              /* out: 0 or an SQLite error code */
    store_done_cb done;
    void *ctx;
};

typedef struct store store;

/* Open (creating if needed) the database at path, start the store thread
 * and attach its completion handle to loop. `sync_full` selects
 * synchronous=FULL (an fsync per batch) over NORMAL. Returns the store, or
 * NULL with a message in err. */
store *store_open(const char *path, uv_loop_t *loop, bool sync_full, char *err, size_t errlen);

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
} store_stats;
void store_get_stats(store *s, store_stats *out);

/* Commit what is queued, stop the thread, run the remaining completions and
 * close the database and the loop handle. The store is freed once libuv
 * has closed its handle (keep running the loop). */
void store_close(store *s);

/* Write a new random UUID (version 4) into out. */
void store_uuid(char out[37]);

#endif
