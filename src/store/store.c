#include "store/store.h"

#include <dirent.h>
#include <pthread.h>
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
#include "common/strbuf.h"
#include "common/clock.h"
#include "common/strmap.h"
#include "log/log.h"

/* Operations committed in one transaction at most. */
#define STORE_MAX_BATCH 8192
/* WAL pages (4 KiB each) after which the checkpointer thread copies the
 * WAL into the database file. SQLite's own autocheckpoint ran inside the
 * COMMIT that crossed its threshold (8192 pages here, then), on the store
 * thread: every chat queued behind it waited for 32 MB to be copied and,
 * with store_sync=normal, for the whole unsynced WAL to be fsynced first
 * (the p99 of 137 ms). Off that path, the size is a trade: every
 * checkpoint copies the hot index pages again and fsyncs the database, so
 * 4 MiB cost 7% of the closed-loop durable throughput; 8 MiB costs ~1%. */
#define STORE_CHECKPOINT_PAGES 2048
/* The checkpointer copies while commits go on, so under continuous writes
 * the WAL always has frames past its copy and never restarts: it would grow
 * without bound. When a checkpointer run has left at most this many frames
 * uncopied, the store thread copies them itself, between two batches (a
 * short copy and one fsync), and the next commit restarts the WAL. */
#define STORE_CHECKPOINT_TAIL 256
/* A checkpointer that cannot keep up (a starved core): past this many WAL
 * pages the store thread checkpoints between batches, as SQLite did. */
#define STORE_CHECKPOINT_MAX_PAGES (2 * STORE_CHECKPOINT_PAGES)

/* Expired messages deleted per sweep step, so a sweep never holds the write
 * lock for long. */
#define STORE_SWEEP_STEP 500

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

/* Kinds of change-log rows (point-in-time recovery). A room's lastSeq is
 * not logged: restore derives it from the logged messages. */
enum {
    LOG_MESSAGE = 1,
    LOG_ROOM_JOIN = 2,
    LOG_ROOM_TOUCH = 3,
    LOG_DELETE = 4,
    LOG_ROOM_DELETE = 5
};

typedef struct stmts {
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
    sqlite3_stmt *expired;
    sqlite3_stmt *delete_message;
    sqlite3_stmt *log_insert;
    sqlite3_stmt *key_in_use;
} stmts;

struct store {
    sqlite3 *db;
    stmts st;
    store_options opt;
    char *pitr_dir;

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
    /* Health, for /readyz: when the write in progress started (monotonic
     * ms, 0 when none) and the result of the last one (an SQLite code). */
    _Atomic int64_t write_since_ms;
    _Atomic int last_write_rc;
    store_stats stats;

    strmap last_seq;    /* store thread only: room -> room_cache */
    strmap sender_keys; /* store thread only: user id -> blind index (65 bytes) */
    int64_t batch_ms;   /* commit time of the batch being written */
    time_t last_sweep;
    time_t last_snapshot;
    uv_async_t async;
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS rooms ("
    "  roomId TEXT PRIMARY KEY,"
    "  ownerId NOT NULL,"
    "  createdAt INTEGER NOT NULL,"
    "  lastActivity INTEGER NOT NULL,"
    "  lastSeq INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE IF NOT EXISTS messages ("
    "  roomId TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  messageId TEXT NOT NULL UNIQUE,"
    "  senderId NOT NULL,"
    "  senderName NOT NULL,"
    "  message NOT NULL,"
    "  timestamp INTEGER NOT NULL,"
    "  clientMessageId TEXT,"
    "  senderKey TEXT,"
    "  PRIMARY KEY (roomId, seq)"
    ") WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS messages_timestamp ON messages(timestamp);"
    /* The rooms the sweeper may delete, without reading every room. */
    "CREATE INDEX IF NOT EXISTS rooms_idle ON rooms(lastActivity) WHERE lastSeq = 0;"
    "CREATE INDEX IF NOT EXISTS messages_client ON messages(senderKey, clientMessageId)"
    "  WHERE clientMessageId IS NOT NULL;"
    /* The change log for point-in-time recovery: every write, with the time
     * its batch committed, replayable onto a base snapshot. */
    "CREATE TABLE IF NOT EXISTS pitr_log ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  t_ms INTEGER NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  roomId TEXT, seq INTEGER, messageId TEXT, senderId, senderName, message,"
    "  timestamp INTEGER, clientMessageId TEXT, senderKey TEXT"
    ");"
    /* One row rewritten to learn whether a failing store can commit again. */
    "CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, t INTEGER);";

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

/* ---- column encryption ---- */

char *store_open_value(const crypto_keyring *keys, const void *blob, size_t len, const char *aad) {
    if (!keys) return xstrndup(blob ? blob : "", len);
    char *plain = NULL;
    size_t plen;
    if (crypto_open(keys, blob, len, aad, strlen(aad), &plain, &plen) != 0) return NULL;
    return plain;
}

/* Read a column that may be sealed: TEXT is plaintext (written before
 * encryption was on), BLOB is sealed. Returns malloc'd text or NULL. */
static char *column_value(sqlite3_stmt *st, int col, const crypto_keyring *keys, const char *aad,
                          int *err) {
    const void *p = sqlite3_column_blob(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    if (sqlite3_column_type(st, col) != SQLITE_BLOB) return xstrndup(p ? p : "", n);
    if (!keys) {
        *err = CRYPTO_E_UNKNOWN_KEY;
        return NULL;
    }
    char *plain = NULL;
    size_t plen;
    int rc = crypto_open(keys, p, n, aad, strlen(aad), &plain, &plen);
    if (rc != 0) {
        *err = rc;
        return NULL;
    }
    return plain;
}

void store_message_aad(char *out, size_t len, char col, const char *room, int64_t seq) {
    strbuf b;
    strbuf_init(&b, out, len);
    strbuf_puts(&b, "messages.");
    strbuf_putc(&b, col);
    strbuf_putc(&b, ':');
    strbuf_puts(&b, room);
    strbuf_putc(&b, ':');
    strbuf_i64(&b, seq);
}

/* "rooms.o:<room>": the AAD of a room's sealed owner. */
static void owner_aad(char *out, size_t len, const char *room) {
    strbuf b;
    strbuf_init(&b, out, len);
    strbuf_puts(&b, "rooms.o:");
    strbuf_puts(&b, room);
}

/* ---- sequence numbers ---- */

/* Empty a map whose values are plain allocations. */
static void clear_owned(strmap *m) {
    size_t it = 0;
    void *v;
    while (strmap_next(m, &it, NULL, &v)) free(v);
    strmap_free(m);
    strmap_init(m);
}

/* What the store thread remembers of a room between batches. Dropped with
 * a failed batch, so it never runs ahead of what was committed. */
typedef struct room_cache {
    int64_t last_seq; /* valid when seq_known */
    bool seq_known;
    bool row_known;     /* its rooms row exists (the sweeper, which deletes
                          * rows, empties the cache) */
    int64_t touched_at; /* lastActivity written in a committed or current
                          * batch (Unix seconds; 0 = not known) */
} room_cache;

/* Rooms remembered at most: past that the cache starts over (it only saves
 * re-reading a room's last seq), so invented room ids cannot grow it
 * without bound. */
#define ROOM_CACHE_MAX 65536

/* Return room's cache entry (store thread), made empty on first use. The
 * pointer stays valid until the next call. */
static room_cache *room_cache_of(store *s, const char *room_id) {
    room_cache *c = strmap_get(&s->last_seq, room_id);
    if (!c) {
        if (s->last_seq.count >= ROOM_CACHE_MAX) clear_owned(&s->last_seq);
        c = xcalloc(1, sizeof(*c));
        strmap_put(&s->last_seq, room_id, c, NULL);
    }
    return c;
}

/* Return the next sequence number of room (store thread), and its cache
 * entry in *cache. The truth is the room's counter (rooms.lastSeq), which
 * TTL never lowers; the messages' MAX(seq) only matters for a database
 * written before the counter existed. */
static int next_seq(store *s, const char *room_id, int64_t *seq, room_cache **cache) {
    room_cache *last = room_cache_of(s, room_id);
    if (!last->seq_known) {
        sqlite3_stmt *st = s->st.max_seq;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, room_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) return rc;
        last->last_seq = sqlite3_column_int64(st, 0);
        last->seq_known = true;
        sqlite3_reset(st);
    }
    *seq = ++last->last_seq;
    *cache = last;
    return SQLITE_OK;
}

/* ---- writes ---- */

/* A column value as written: plaintext, or sealed bytes. */
typedef struct cell {
    void *p;
    size_t n;
    bool blob;
} cell;

static cell seal(const crypto_keyring *keys, const char *text, const char *aad) {
    cell c;
    if (!keys) {
        c.p = xstrdup(text);
        c.n = strlen(text);
        c.blob = false;
    } else {
        c.p = crypto_seal(keys, text, strlen(text), aad, strlen(aad), &c.n);
        c.blob = true;
    }
    return c;
}

static void bind_cell(sqlite3_stmt *st, int col, const cell *c) {
    if (c->blob) sqlite3_bind_blob(st, col, c->p, (int)c->n, SQLITE_STATIC);
    else sqlite3_bind_text(st, col, c->p, (int)c->n, SQLITE_STATIC);
}

static int step_done(sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* One change-log row (point-in-time recovery): the values exactly as they
 * were written, sealed bytes included. NULL/0 for unused columns. */
static int log_change(store *s, int kind, const char *room, int64_t seq, const char *message_id,
                      const cell *sender, const cell *name, const cell *msg, int64_t ts,
                      const char *client_id, const char *sender_key) {
    if (!s->opt.pitr) return SQLITE_OK;
    sqlite3_stmt *st = s->st.log_insert;
    sqlite3_bind_int64(st, 1, s->batch_ms);
    sqlite3_bind_int(st, 2, kind);
    if (room) sqlite3_bind_text(st, 3, room, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, seq);
    if (message_id) sqlite3_bind_text(st, 5, message_id, -1, SQLITE_STATIC);
    if (sender) bind_cell(st, 6, sender);
    if (name) bind_cell(st, 7, name);
    if (msg) bind_cell(st, 8, msg);
    sqlite3_bind_int64(st, 9, ts);
    if (client_id) sqlite3_bind_text(st, 10, client_id, -1, SQLITE_STATIC);
    if (sender_key) sqlite3_bind_text(st, 11, sender_key, -1, SQLITE_STATIC);
    return step_done(st);
}

/* Senders remembered at most (then forgotten all at once): a bound on the
 * memory, far above the senders active in any one second. */
#define SENDER_KEYS_MAX 8192

static void sender_key_of(store *s, const char *user_id, char out[65]) {
    if (!s->opt.keys) {
        snprintf(out, 65, "%.64s", user_id);
        return;
    }
    /* The blind index is an HMAC, the same for every message of a sender:
     * computed once per sender, not once per message. */
    const char *known = strmap_get(&s->sender_keys, user_id);
    if (known) {
        memcpy(out, known, 65);
        return;
    }
    crypto_blind_index(s->opt.keys, "senderId", user_id, strlen(user_id), out);
    if (s->sender_keys.count >= SENDER_KEYS_MAX) clear_owned(&s->sender_keys);
    char *copy = xmalloc(65);
    memcpy(copy, out, 65);
    strmap_put(&s->sender_keys, user_id, copy, NULL);
}

/* Fill op from the message it repeats (the row at st's current step). */
static int take_original(store *s, store_op *op, sqlite3_stmt *st) {
    const crypto_keyring *keys = s->opt.keys;
    const char *room = (const char *)sqlite3_column_text(st, 0);
    int64_t seq = sqlite3_column_int64(st, 1);
    char aad[512];
    int err = 0;
    store_message_aad(aad, sizeof(aad), 'm', room, seq);
    char *msg = column_value(st, 3, keys, aad, &err);
    store_message_aad(aad, sizeof(aad), 'n', room, seq);
    char *name = column_value(st, 5, keys, aad, &err);
    if (!msg || !name) {
        free(msg);
        free(name);
        return SQLITE_CORRUPT;
    }
    op->duplicate = true;
    free(op->room_id);
    op->room_id = xstrdup(room);
    op->seq = seq;
    snprintf(op->message_id, sizeof(op->message_id), "%s",
             (const char *)sqlite3_column_text(st, 2));
    free(op->message);
    op->message = msg;
    free(op->username);
    op->username = name;
    op->timestamp = sqlite3_column_int64(st, 4);
    return SQLITE_OK;
}

static int apply_chat(store *s, store_op *op) {
    const crypto_keyring *keys = s->opt.keys;
    char sender_key[65];
    sender_key_of(s, op->user_id, sender_key);
    int rc;
    if (op->client_message_id && s->opt.idempotency_window_s > 0) {
        /* The same sender repeating a clientMessageId within the window gets
         * the original message back, stored once. */
        sqlite3_stmt *st = s->st.find_client_id;
        sqlite3_bind_text(st, 1, sender_key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, op->client_message_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, op->timestamp - s->opt.idempotency_window_s);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) rc = take_original(s, op, st);
        else if (rc == SQLITE_DONE) rc = SQLITE_OK;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_OK || op->duplicate) return rc;
    }
    room_cache *cache = NULL;
    rc = next_seq(s, op->room_id, &op->seq, &cache);
    if (rc != SQLITE_OK) return rc;
    char aad[512];
    store_message_aad(aad, sizeof(aad), 's', op->room_id, op->seq);
    cell sender = seal(keys, op->user_id, aad);
    store_message_aad(aad, sizeof(aad), 'n', op->room_id, op->seq);
    cell name = seal(keys, op->username, aad);
    store_message_aad(aad, sizeof(aad), 'm', op->room_id, op->seq);
    cell msg = seal(keys, op->message, aad);
    sqlite3_stmt *st = s->st.insert_message;
    sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, op->seq);
    sqlite3_bind_text(st, 3, op->message_id, -1, SQLITE_STATIC);
    bind_cell(st, 4, &sender);
    bind_cell(st, 5, &name);
    bind_cell(st, 6, &msg);
    sqlite3_bind_int64(st, 7, op->timestamp);
    if (op->client_message_id) sqlite3_bind_text(st, 8, op->client_message_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, sender_key, -1, SQLITE_STATIC);
    rc = step_done(st);
    if (rc == SQLITE_OK)
        rc = log_change(s, LOG_MESSAGE, op->room_id, op->seq, op->message_id, &sender, &name, &msg,
                        op->timestamp, op->client_message_id, sender_key);
    if (rc == SQLITE_OK && (!cache || cache->touched_at != op->timestamp)) {
        /* The seed's rooms table: a room posted to exists, owned by the
         * first member seen, and its lastActivity follows its messages.
         * Timestamps are whole seconds: once a second per room is enough
         * (under load this upsert and its sealed owner cost as much as the
         * message itself). */
        char oaad[300];
        owner_aad(oaad, sizeof(oaad), op->room_id);
        cell owner = seal(keys, op->user_id, oaad);
        st = s->st.room_touch;
        sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
        bind_cell(st, 4, &owner);
        sqlite3_bind_int64(st, 7, op->timestamp);
        rc = step_done(st);
        if (rc == SQLITE_OK)
            rc = log_change(s, LOG_ROOM_TOUCH, op->room_id, 0, NULL, &owner, NULL, NULL,
                            op->timestamp, NULL, NULL);
        if (rc == SQLITE_OK && cache) {
            cache->touched_at = op->timestamp;
            cache->row_known = true;
        }
        free(owner.p);
    }
    if (rc == SQLITE_OK) {
        /* The counter moves in the same transaction as the message: both
         * commit or neither. */
        st = s->st.room_seq;
        sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, op->seq);
        rc = step_done(st);
    }
    free(sender.p);
    free(name.p);
    free(msg.p);
    return rc;
}

/* A join refreshes its room's lastActivity at most this often (seconds):
 * the TTL sweeper deletes rooms idle for the TTL, not rooms in use. */
#define ROOM_JOIN_TOUCH_S 3600

static int apply_room_join(store *s, store_op *op) {
    /* Every connect joins a room: the first join creates its row (owner =
     * joiner) and later ones refresh lastActivity at most hourly, so most
     * joins skip the write (and its sealed owner). */
    room_cache *cache = room_cache_of(s, op->room_id);
    if (cache->row_known && cache->touched_at &&
        op->timestamp - cache->touched_at < ROOM_JOIN_TOUCH_S)
        return SQLITE_OK;
    char aad[300];
    owner_aad(aad, sizeof(aad), op->room_id);
    cell owner = seal(s->opt.keys, op->user_id, aad);
    sqlite3_stmt *st = s->st.room_touch;
    sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
    bind_cell(st, 4, &owner);
    sqlite3_bind_int64(st, 7, op->timestamp);
    int rc = step_done(st);
    if (rc == SQLITE_OK)
        rc = log_change(s, LOG_ROOM_TOUCH, op->room_id, 0, NULL, &owner, NULL, NULL, op->timestamp,
                        NULL, NULL);
    if (rc == SQLITE_OK) {
        cache->touched_at = op->timestamp;
        cache->row_known = true;
    }
    free(owner.p);
    return rc;
}

/* ---- reads ---- */

/* Fill op->oldest_seq (the oldest message kept, past the TTL cut at
 * cutoff) and op->last_seq (the room's counter). */
static int room_bounds(store *s, store_op *op, int64_t cutoff) {
    room_cache *c = strmap_get(&s->last_seq, op->room_id);
    sqlite3_stmt *st;
    int rc;
    if (c && c->seq_known) {
        op->last_seq = c->last_seq;
    } else {
        st = s->st.max_seq;
        sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) op->last_seq = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_ROW) return rc;
    }
    st = s->st.oldest_seq;
    sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, cutoff);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) op->oldest_seq = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int apply_history(store *s, store_op *op) {
    const crypto_keyring *keys = s->opt.keys;
    int64_t cutoff =
        s->opt.ttl_days > 0 ? (int64_t)time(NULL) - s->opt.ttl_days * 86400 : INT64_MIN;
    bool forward = op->after_seq >= 0;
    sqlite3_stmt *st = forward ? s->st.history_after : s->st.history_before;
    sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2,
                       forward ? op->after_seq : (op->before_seq > 0 ? op->before_seq : INT64_MAX));
    sqlite3_bind_int64(st, 3, cutoff);
    sqlite3_bind_int(st, 4, op->limit + 1);
    json_t *rows = json_array();
    int rc, err = 0;
    size_t bytes = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((int)json_array_size(rows) == op->limit) {
            op->has_more = true;
            break;
        }
        /* The byte budget: the stored sizes (sealed values are a few bytes
         * longer than their text) plus the fields around them. */
        size_t size = 160 + (size_t)sqlite3_column_bytes(st, 2) +
                      (size_t)sqlite3_column_bytes(st, 3) + (size_t)sqlite3_column_bytes(st, 4);
        if (op->max_bytes && json_array_size(rows) > 0 && bytes + size > op->max_bytes) {
            op->has_more = true;
            break;
        }
        bytes += size;
        int64_t seq = sqlite3_column_int64(st, 0);
        char aad[512];
        store_message_aad(aad, sizeof(aad), 's', op->room_id, seq);
        char *sender = column_value(st, 2, keys, aad, &err);
        store_message_aad(aad, sizeof(aad), 'n', op->room_id, seq);
        char *name = column_value(st, 3, keys, aad, &err);
        store_message_aad(aad, sizeof(aad), 'm', op->room_id, seq);
        char *msg = column_value(st, 4, keys, aad, &err);
        if (sender && name && msg)
            json_array_append_new(rows,
                                  json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:I}", "messageId",
                                            (const char *)sqlite3_column_text(st, 1), "roomId",
                                            op->room_id, "seq", (json_int_t)seq, "senderId", sender,
                                            "senderName", name, "message", msg, "timestamp",
                                            (json_int_t)sqlite3_column_int64(st, 5)));
        free(sender);
        free(name);
        free(msg);
        if (err) break;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (err) {
        log_msg(LOG_ERROR, "store_error", "cannot read room %s: %s", op->room_id,
                crypto_strerror(err));
        json_decref(rows);
        return SQLITE_CORRUPT;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        json_decref(rows);
        return rc;
    }
    if (op->bounds) {
        rc = room_bounds(s, op, cutoff);
        if (rc != SQLITE_OK) {
            json_decref(rows);
            return rc;
        }
    }
    if (!forward) {
        /* Read newest first to find the page; answer oldest first. */
        size_t n = json_array_size(rows);
        json_t *asc = json_array();
        for (size_t i = n; i > 0; i--) json_array_append(asc, json_array_get(rows, i - 1));
        json_decref(rows);
        rows = asc;
    }
    op->messages = rows;
    return SQLITE_OK;
}

/* ---- health ---- */

/* Mark the start and the result of a write transaction (store thread), for
 * store_health. */
static void write_begin(store *s) {
    int64_t now = (int64_t)clock_mono_ms();
    atomic_store(&s->write_since_ms, now > 0 ? now : 1);
}

static void write_end(store *s, int rc) {
    atomic_store(&s->write_since_ms, 0);
    atomic_store(&s->last_write_rc, rc);
}

/* While the last write failed, try a one-row write when idle, so readiness
 * comes back with the disk and not only with the next chat. */
static void probe_write(store *s) {
    write_begin(s);
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s->st.probe, 1, (int64_t)time(NULL));
        rc = step_done(s->st.probe);
        if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
    write_end(s, rc);
}

int store_health(store *s, int64_t stall_ms, char *why, size_t len) {
    int64_t since = atomic_load(&s->write_since_ms);
    int rc = atomic_load(&s->last_write_rc);
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

/* ---- TTL ---- */

/* Delete one expired message: the row `expired` stands on (roomId, seq). */
static int delete_expired_message(store *s, sqlite3_stmt *expired) {
    /* A copy: the selecting statement's text may not outlive the delete. */
    char *room = xstrdup((const char *)sqlite3_column_text(expired, 0));
    int64_t seq = sqlite3_column_int64(expired, 1);
    sqlite3_stmt *del = s->st.delete_message;
    sqlite3_bind_text(del, 1, room, -1, SQLITE_STATIC);
    sqlite3_bind_int64(del, 2, seq);
    int rc = step_done(del);
    if (rc == SQLITE_OK)
        rc = log_change(s, LOG_DELETE, room, seq, NULL, NULL, NULL, NULL, 0, NULL, NULL);
    free(room);
    return rc;
}

/* Delete one idle room's row (roomId): it holds no message and never gave
 * a seq. */
static int delete_idle_room(store *s, sqlite3_stmt *expired_rooms) {
    char *room = xstrdup((const char *)sqlite3_column_text(expired_rooms, 0));
    sqlite3_stmt *del = s->st.delete_room;
    sqlite3_bind_text(del, 1, room, -1, SQLITE_STATIC);
    int rc = step_done(del);
    if (rc == SQLITE_OK)
        rc = log_change(s, LOG_ROOM_DELETE, room, 0, NULL, NULL, NULL, NULL, 0, NULL, NULL);
    /* The cache must not believe in the row any more. */
    free(strmap_remove(&s->last_seq, room));
    free(room);
    return rc;
}

/* Delete up to STORE_SWEEP_STEP rows that `select` (bound to cutoff and the
 * step) finds, each with delete_row, in one small transaction. Returns how
 * many were deleted, or -1 on error. */
static int sweep_step(store *s, sqlite3_stmt *select, int64_t cutoff,
                      int (*delete_row)(store *s, sqlite3_stmt *row)) {
    write_begin(s);
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        write_end(s, sqlite3_errcode(s->db));
        return -1;
    }
    s->batch_ms = clock_wall_ms();
    sqlite3_bind_int64(select, 1, cutoff);
    sqlite3_bind_int(select, 2, STORE_SWEEP_STEP);
    int n = 0, rc = SQLITE_OK;
    while (rc == SQLITE_OK && sqlite3_step(select) == SQLITE_ROW) {
        rc = delete_row(s, select);
        n++;
    }
    sqlite3_reset(select);
    sqlite3_clear_bindings(select);
    if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    write_end(s, rc);
    if (rc != SQLITE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return n;
}

/* Sweep expired messages, then idle rooms, while no writes are waiting
 * (store thread). */
static void sweep(store *s) {
    int64_t cutoff = (int64_t)time(NULL) - s->opt.ttl_days * 86400;
    for (int rooms = 0; rooms < 2; rooms++) {
        for (;;) {
            int n = rooms ? sweep_step(s, s->st.expired_rooms, cutoff, delete_idle_room)
                          : sweep_step(s, s->st.expired, cutoff, delete_expired_message);
            if (n > 0) {
                pthread_mutex_lock(&s->lock);
                if (rooms) s->stats.rooms_expired += (uint64_t)n;
                else s->stats.expired += (uint64_t)n;
                bool busy = s->in_head != NULL;
                pthread_mutex_unlock(&s->lock);
                if (busy) return; /* writes first; the sweep resumes later */
            }
            if (n < STORE_SWEEP_STEP) break;
        }
    }
}

/* ---- point-in-time recovery: base snapshots ---- */

typedef struct base_file {
    int64_t t_ms;
    int64_t last_id;
    char name[256];
} base_file;

static size_t list_bases(const char *dir, base_file **out) {
    DIR *d = opendir(dir);
    *out = NULL;
    if (!d) return 0;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        long long t, id;
        char tail[8];
        if (sscanf(de->d_name, "base-%lld-%lld%7s", &t, &id, tail) != 3 || strcmp(tail, ".db") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = xrealloc(*out, cap * sizeof(**out));
        }
        (*out)[n].t_ms = t;
        (*out)[n].last_id = id;
        snprintf((*out)[n].name, sizeof((*out)[n].name), "%s", de->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static int copy_db(sqlite3 *from, const char *to_path) {
    sqlite3 *to = NULL;
    int rc = sqlite3_open(to_path, &to);
    if (rc == SQLITE_OK) {
        sqlite3_backup *b = sqlite3_backup_init(to, "main", from, "main");
        if (!b) {
            rc = sqlite3_errcode(to);
        } else {
            sqlite3_backup_step(b, -1);
            rc = sqlite3_backup_finish(b);
        }
    }
    sqlite3_close(to);
    return rc;
}

/* Take a base snapshot of the live database (store thread, between
 * batches, so it holds exactly the log rows up to last_id), then drop the
 * bases and log rows that fell out of the recovery window. */
static void snapshot(store *s) {
    sqlite3_stmt *st;
    int64_t last_id = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT COALESCE(MAX(id), 0) FROM pitr_log", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) last_id = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    int64_t now = clock_wall_ms();
    char tmp[4200], dst[4096];
    snprintf(dst, sizeof(dst), "%s/base-%lld-%lld.db", s->pitr_dir, (long long)now,
             (long long)last_id);
    snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
    if (copy_db(s->db, tmp) != SQLITE_OK || rename(tmp, dst) != 0) {
        unlink(tmp);
        log_msg(LOG_ERROR, "pitr_error", "cannot write base snapshot %s", dst);
        return;
    }
    base_file *bases;
    size_t n = list_bases(s->pitr_dir, &bases);
    int64_t window_start = now - s->opt.pitr_retention_days * 86400000LL;
    /* The anchor: the newest base at or before the window's start (restores
     * to the window's first second start from it). */
    base_file *anchor = NULL;
    for (size_t i = 0; i < n; i++)
        if (bases[i].t_ms <= window_start && (!anchor || bases[i].t_ms > anchor->t_ms))
            anchor = &bases[i];
    if (anchor) {
        for (size_t i = 0; i < n; i++) {
            if (bases[i].t_ms < anchor->t_ms) {
                char p[4096];
                snprintf(p, sizeof(p), "%s/%s", s->pitr_dir, bases[i].name);
                unlink(p);
            }
        }
        char sql[128];
        snprintf(sql, sizeof(sql), "DELETE FROM pitr_log WHERE id <= %lld",
                 (long long)anchor->last_id);
        sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    }
    free(bases);
    s->last_snapshot = time(NULL);
}

/* ---- the store thread ---- */

static void commit_batch(store *s, store_op *batch, uint32_t n) {
    uint64_t t0 = clock_mono_ns();
    s->batch_ms = clock_wall_ms();
    write_begin(s);
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (store_op *op = batch; op; op = op->next) {
        op->t_batch = t0;
        if (rc != SQLITE_OK) {
            op->status = rc;
            continue;
        }
        switch (op->kind) {
        case STORE_OP_CHAT: op->status = apply_chat(s, op); break;
        case STORE_OP_ROOM_JOIN: op->status = apply_room_join(s, op); break;
        case STORE_OP_HISTORY: op->status = apply_history(s, op); break;
        }
    }
    uint64_t ta = clock_mono_ns();
    if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    write_end(s, rc);
    if (rc != SQLITE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        clear_owned(&s->last_seq);
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

static void *store_thread(void *arg) {
    store *s = arg;
    if (s->opt.pitr) {
        base_file *bases;
        size_t n = list_bases(s->pitr_dir, &bases);
        free(bases);
        if (n == 0) snapshot(s);
        else s->last_snapshot = time(NULL);
    }
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
                sweep(s);
            }
            if (s->opt.pitr && now - s->last_snapshot >= s->opt.pitr_snapshot_interval_s)
                snapshot(s);
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

        if (s->opt.on_commit) {
            hand_over(s, batch);
        } else {
            pthread_mutex_lock(&s->lock);
            if (s->out_tail) s->out_tail->next = batch;
            else s->out_head = batch;
            s->out_tail = last;
            pthread_mutex_unlock(&s->lock);
            uv_async_send(&s->async);
        }
        if (s->ckpt_here) {
            /* After the batch's completions are on their way: only the
             * batches behind this one wait for it. */
            s->ckpt_here = false;
            int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            pthread_mutex_lock(&s->lock);
            s->ckpt_copied = 0;
            if (rc == SQLITE_OK) s->stats.checkpoints++;
            pthread_mutex_unlock(&s->lock);
        }
    }
    return NULL;
}

/* The store connection's WAL hook, after every commit (store thread):
 * wake the checkpointer once the WAL holds enough pages. Replaces SQLite's
 * autocheckpoint, which would run on this thread. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages) {
    store *s = arg;
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
        int copied = 0;
        int rc =
            sqlite3_wal_checkpoint_v2(s->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, &copied);
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

/* ---- opening ---- */

static int prepare_all(store *s) {
    static const struct {
        size_t off;
        const char *sql;
    } table[] = {
        {offsetof(stmts, insert_message), SQL_INSERT_MESSAGE},
        {offsetof(stmts, room_touch), SQL_ROOM_TOUCH},
        {offsetof(stmts, max_seq),
         "SELECT MAX(COALESCE((SELECT lastSeq FROM rooms WHERE roomId = ?1), 0),"
         " COALESCE((SELECT MAX(seq) FROM messages WHERE roomId = ?1), 0))"},
        {offsetof(stmts, room_seq),
         "UPDATE rooms SET lastSeq = ?2 WHERE roomId = ?1 AND lastSeq < ?2"},
        {offsetof(stmts, oldest_seq),
         "SELECT COALESCE(MIN(seq), 0) FROM messages WHERE roomId = ?1 AND timestamp >= ?2"},
        {offsetof(stmts, expired_rooms),
         "SELECT roomId FROM rooms WHERE lastSeq = 0 AND lastActivity < ?1 AND NOT EXISTS"
         " (SELECT 1 FROM messages m WHERE m.roomId = rooms.roomId) LIMIT ?2"},
        {offsetof(stmts, delete_room), SQL_DELETE_ROOM},
        {offsetof(stmts, probe), "INSERT OR REPLACE INTO store_probe(id, t) VALUES (1, ?1)"},
        {offsetof(stmts, find_client_id),
         "SELECT roomId, seq, messageId, message, timestamp, senderName FROM messages"
         " WHERE senderKey = ?1 AND clientMessageId = ?2 AND timestamp >= ?3 LIMIT 1"},
        {offsetof(stmts, history_before),
         "SELECT seq, messageId, senderId, senderName, message, timestamp FROM messages"
         " WHERE roomId = ?1 AND seq < ?2 AND timestamp >= ?3 ORDER BY seq DESC LIMIT ?4"},
        {offsetof(stmts, history_after),
         "SELECT seq, messageId, senderId, senderName, message, timestamp FROM messages"
         " WHERE roomId = ?1 AND seq > ?2 AND timestamp >= ?3 ORDER BY seq ASC LIMIT ?4"},
        {offsetof(stmts, expired),
         "SELECT roomId, seq FROM messages WHERE timestamp < ?1 LIMIT ?2"},
        {offsetof(stmts, delete_message), SQL_DELETE_MESSAGE},
        {offsetof(stmts, log_insert),
         "INSERT INTO pitr_log(t_ms, kind, roomId, seq, messageId, senderId, senderName, message,"
         " timestamp, clientMessageId, senderKey) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
         "?11)"},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        sqlite3_stmt **st = (sqlite3_stmt **)((char *)&s->st + table[i].off);
        int rc = sqlite3_prepare_v3(s->db, table[i].sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

static void finalize_all(store *s) {
    sqlite3_stmt **all = (sqlite3_stmt **)&s->st;
    for (size_t i = 0; i < sizeof(s->st) / sizeof(sqlite3_stmt *); i++) sqlite3_finalize(all[i]);
    memset(&s->st, 0, sizeof(s->st));
}

/* Give an existing rooms table its counter, set from the messages it still
 * has (all a database of the first schema knows). Harmless when the column
 * is there or the table is not (the schema creates it). */
static int add_last_seq(sqlite3 *db) {
    if (sqlite3_exec(db, "ALTER TABLE rooms ADD COLUMN lastSeq INTEGER NOT NULL DEFAULT 0", NULL,
                     NULL, NULL) != SQLITE_OK)
        return SQLITE_OK;
    return sqlite3_exec(db,
                        "UPDATE rooms SET lastSeq = (SELECT COALESCE(MAX(seq), 0) FROM messages m"
                        " WHERE m.roomId = rooms.roomId)",
                        NULL, NULL, NULL);
}

/* Columns added since the first version of the schema. */
static int migrate(sqlite3 *db) {
    static const char *const adds[] = {"clientMessageId TEXT", "senderKey TEXT"};
    for (size_t i = 0; i < 2; i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "ALTER TABLE messages ADD COLUMN %s", adds[i]);
        sqlite3_exec(db, sql, NULL, NULL, NULL); /* fails harmlessly when present */
    }
    return add_last_seq(db);
}

/* PRAGMA quick_check: returns 0 when the file is sound. */
static int check_integrity(sqlite3 *db, char *err, size_t errlen, const char *path) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen,
                 "store %s is not a usable database: %s (restore it from a backup: wsgate restore)",
                 path, sqlite3_errmsg(db));
        return -1;
    }
    int rc = sqlite3_step(st);
    const char *res = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (!res || strcmp(res, "ok") != 0) {
        snprintf(
            err, errlen,
            "store %s failed its integrity check: %s (restore it from a backup: wsgate restore)",
            path, res ? res : sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

/* With encryption on, the newest sealed message must open: a wrong or
 * missing key is a start-up error, never garbage later. */
static int check_keys(store *s, char *err, size_t errlen) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            s->db,
            "SELECT roomId, seq, message FROM messages WHERE typeof(message) = 'blob'"
            " ORDER BY timestamp DESC LIMIT 1",
            -1, &st, NULL) != SQLITE_OK)
        return 0;
    int result = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        char aad[512];
        store_message_aad(aad, sizeof(aad), 'm', (const char *)sqlite3_column_text(st, 0),
                          sqlite3_column_int64(st, 1));
        int e = 0;
        char *plain = column_value(st, 2, s->opt.keys, aad, &e);
        if (!plain) {
            snprintf(err, errlen,
                     "stored messages cannot be decrypted with the configured keys: %s",
                     s->opt.keys ? crypto_strerror(e)
                                 : "encryption is off but the store holds encrypted rows (set "
                                   "enable_encryption = true and the key file)");
            result = -1;
        }
        free(plain);
    }
    sqlite3_finalize(st);
    return result;
}

store *store_open(const char *path, uv_loop_t *loop, const store_options *opt, char *err,
                  size_t errlen) {
    store *s = xcalloc(1, sizeof(*s));
    s->opt = *opt;
    if (opt->pitr) {
        s->pitr_dir = xstrdup(opt->pitr_dir);
        mkdir(s->pitr_dir, 0700);
        if (s->opt.pitr_snapshot_interval_s <= 0) s->opt.pitr_snapshot_interval_s = 3600;
    }
    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) goto fail;
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_busy_timeout(s->db, 5000);
    if (check_integrity(s->db, err, errlen, path) != 0) goto fail_msg;
    rc = sqlite3_exec(s->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db,
                          opt->sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                          NULL, NULL, NULL);
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
        rc = migrate(s->db);
        if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, SCHEMA, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) rc = prepare_all(s);
    if (rc != SQLITE_OK) goto fail;
    if (check_keys(s, err, errlen) != 0) goto fail_msg;
    rc = sqlite3_open_v2(path, &s->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    /* The checkpoint syncs as the store does (both levels sync the WAL and
     * the database file at a checkpoint). */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->ckpt_db,
                          opt->sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open store %s for checkpoints: %s", path,
                 s->ckpt_db ? sqlite3_errmsg(s->ckpt_db) : sqlite3_errstr(rc));
        sqlite3_close(s->ckpt_db);
        goto fail_msg;
    }
    sqlite3_wal_hook(s->db, on_wal_commit, s);

    strmap_init(&s->last_seq);
    strmap_init(&s->sender_keys);
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
        snprintf(err, errlen, "cannot start the store threads");
        abort();
    }
    return s;
fail:
    snprintf(err, errlen, "cannot open store %s: %s", path,
             s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
fail_msg:
    finalize_all(s);
    sqlite3_close(s->db);
    free(s->pitr_dir);
    free(s);
    return NULL;
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

size_t store_pending(const store *s) {
    return atomic_load_explicit(&((store *)s)->pending, memory_order_relaxed);
}

void store_get_stats(store *s, store_stats *out) {
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
    out->rejected = atomic_load_explicit(&s->rejected, memory_order_relaxed);
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
    /* Closed first: the store connection, closed last, then checkpoints
     * the whole WAL and removes it. */
    sqlite3_close(s->ckpt_db);
    run_completions(s, SIZE_MAX, SIZE_MAX);
    clear_owned(&s->last_seq);
    strmap_free(&s->last_seq);
    clear_owned(&s->sender_keys);
    strmap_free(&s->sender_keys);
    finalize_all(s);
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->ckpt_wake);
    free(s->pitr_dir);
    uv_close((uv_handle_t *)&s->async, on_store_closed);
}

/* ---- backup and restore (the CLI) ---- */

static int open_readonly(const char *path, sqlite3 **db, char *err, size_t errlen) {
    int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path,
                 *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(*db, 5000);
    return 0;
}

/* The copy at out keeps the tables, not the change log (it starts a new
 * history when served). */
static int finish_copy(const char *out, char *err, size_t errlen) {
    sqlite3 *db = NULL;
    if (sqlite3_open(out, &db) != SQLITE_OK ||
        sqlite3_exec(db, "DELETE FROM pitr_log; PRAGMA journal_mode=DELETE; VACUUM;", NULL, NULL,
                     NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot finish %s: %s", out,
                 db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_close(db);
    return 0;
}

/* Copy the database at path (read-only, consistent) to a new file out.
 * Returns 0 or -1 with err. */
static int copy_file(const char *path, const char *out, char *err, size_t errlen) {
    sqlite3 *src;
    if (open_readonly(path, &src, err, errlen) != 0) return -1;
    unlink(out);
    int rc = copy_db(src, out);
    sqlite3_close(src);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot write %s: %s", out, sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

int store_backup(const char *path, const char *out, char *err, size_t errlen) {
    if (copy_file(path, out, err, errlen) != 0) return -1;
    return finish_copy(out, err, errlen);
}

/* Apply one change-log row (the live store's writes, replayed verbatim). */
static int replay_row(sqlite3 *db, sqlite3_stmt *row) {
    static const char *const sql[] = {
        [LOG_MESSAGE] = SQL_INSERT_MESSAGE,  [LOG_ROOM_JOIN] = SQL_ROOM_JOIN,
        [LOG_ROOM_TOUCH] = SQL_ROOM_TOUCH,   [LOG_DELETE] = SQL_DELETE_MESSAGE,
        [LOG_ROOM_DELETE] = SQL_DELETE_ROOM,
    };
    int kind = sqlite3_column_int(row, 1);
    if (kind < LOG_MESSAGE || kind > LOG_ROOM_DELETE) return SQLITE_CORRUPT;
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql[kind], -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    /* Row columns: t_ms, kind, roomId, seq, messageId, senderId, senderName,
     * message, timestamp, clientMessageId, senderKey -> ?1..?9. */
    for (int i = 0; i < 9; i++) {
        int col = 2 + i;
        if (i + 1 > sqlite3_bind_parameter_count(st)) break;
        sqlite3_bind_value(st, i + 1, sqlite3_column_value(row, col));
    }
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The counters are not logged: every message replayed from the log (ids
 * from_id.., up to to_ms) raises its room's counter in dst, even one that
 * a later TTL delete removed. */
static int raise_last_seqs(sqlite3 *live, sqlite3 *dst, int64_t from_id, int64_t to_ms) {
    sqlite3_stmt *q = NULL, *up = NULL;
    int rc = sqlite3_prepare_v2(live,
                                "SELECT roomId, MAX(seq) FROM pitr_log WHERE id > ?1 AND t_ms <= ?2"
                                " AND kind = 1 GROUP BY roomId",
                                -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(
            dst, "UPDATE rooms SET lastSeq = ?2 WHERE roomId = ?1 AND lastSeq < ?2", -1, &up, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, from_id);
        sqlite3_bind_int64(q, 2, to_ms);
        while (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
            sqlite3_bind_value(up, 1, sqlite3_column_value(q, 0));
            sqlite3_bind_value(up, 2, sqlite3_column_value(q, 1));
            rc = step_done(up);
        }
    }
    sqlite3_finalize(q);
    sqlite3_finalize(up);
    return rc;
}

int store_restore(const char *path, const char *pitr_dir, int64_t to, const char *out, char *err,
                  size_t errlen) {
    int64_t to_ms = to * 1000 + 999; /* the whole second `to` */
    base_file *bases;
    size_t n = list_bases(pitr_dir, &bases);
    base_file *base = NULL, *earliest = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!earliest || bases[i].t_ms < earliest->t_ms) earliest = &bases[i];
        if (bases[i].t_ms <= to_ms && (!base || bases[i].t_ms > base->t_ms)) base = &bases[i];
    }
    if (!base) {
        if (earliest)
            snprintf(err, errlen,
                     "%lld is before the recovery window, which starts at %lld (Unix seconds)",
                     (long long)to, (long long)(earliest->t_ms / 1000));
        else
            snprintf(err, errlen,
                     "no base snapshot in %s: is enable_dynamodb_point_in_time_recovery on?",
                     pitr_dir);
        free(bases);
        return -1;
    }
    char base_path[4096];
    snprintf(base_path, sizeof(base_path), "%s/%s", pitr_dir, base->name);
    int64_t from_id = base->last_id;
    free(bases);
    sqlite3 *live;
    if (copy_file(base_path, out, err, errlen) != 0) return -1;
    if (open_readonly(path, &live, err, errlen) != 0) return -1;
    sqlite3 *dst = NULL;
    sqlite3_open(out, &dst);
    sqlite3_stmt *rows = NULL;
    int rc = sqlite3_prepare_v2(
        live,
        "SELECT t_ms, kind, roomId, seq, messageId, senderId, senderName, message, timestamp,"
        " clientMessageId, senderKey FROM pitr_log WHERE id > ?1 AND t_ms <= ?2 ORDER BY id",
        -1, &rows, NULL);
    /* A base written before rooms had a counter gets it here. */
    if (rc == SQLITE_OK) rc = add_last_seq(dst);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(rows, 1, from_id);
        sqlite3_bind_int64(rows, 2, to_ms);
        sqlite3_exec(dst, "BEGIN", NULL, NULL, NULL);
        int step;
        while (rc == SQLITE_OK && (step = sqlite3_step(rows)) == SQLITE_ROW) {
            /* replay_row binds by position: map row columns onto ?1..?9 as
             * roomId, seq, messageId, senderId(owner), senderName, message,
             * timestamp, clientMessageId, senderKey. */
            rc = replay_row(dst, rows);
        }
        if (rc == SQLITE_OK) rc = raise_last_seqs(live, dst, from_id, to_ms);
        if (rc == SQLITE_OK) rc = sqlite3_exec(dst, "COMMIT", NULL, NULL, NULL);
        else sqlite3_exec(dst, "ROLLBACK", NULL, NULL, NULL);
    }
    sqlite3_finalize(rows);
    sqlite3_close(live);
    sqlite3_close(dst);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot replay the change log into %s: %s", out, sqlite3_errstr(rc));
        return -1;
    }
    return finish_copy(out, err, errlen);
}

int store_key_in_use(const char *path, uint32_t key_id) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return access(path, F_OK) == 0 ? -1 : 0; /* no database yet: nothing uses it */
    }
    sqlite3_busy_timeout(db, 5000);
    static const char sql[] =
        "SELECT 1 FROM messages WHERE substr(message, 2, 4) = ?1 OR substr(senderId, 2, 4) = ?1"
        " OR substr(senderName, 2, 4) = ?1"
        " UNION ALL SELECT 1 FROM rooms WHERE substr(ownerId, 2, 4) = ?1"
        " UNION ALL SELECT 1 FROM pitr_log WHERE substr(message, 2, 4) = ?1 OR substr(senderId, 2, "
        "4) = ?1"
        " OR substr(senderName, 2, 4) = ?1 LIMIT 1";
    sqlite3_stmt *st;
    int result = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        uint8_t id[4] = {(uint8_t)(key_id >> 24), (uint8_t)(key_id >> 16), (uint8_t)(key_id >> 8),
                         (uint8_t)key_id};
        sqlite3_bind_blob(st, 1, id, 4, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        result = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
    } else {
        result = 0; /* tables not created yet */
    }
    sqlite3_close(db);
    return result;
}

/* ---- export (the CLI) ---- */

/* Write text as one CSV field (RFC 4180: quoted when it holds a comma, a
 * quote or a line break; quotes doubled). */
static void csv_field(FILE *out, const char *text) {
    if (!strpbrk(text, ",\"\r\n")) {
        fputs(text, out);
        return;
    }
    fputc('"', out);
    for (const char *p = text; *p; p++) {
        if (*p == '"') fputc('"', out);
        fputc(*p, out);
    }
    fputc('"', out);
}

long store_export(const char *path, const crypto_keyring *keys, const char *room, int64_t since,
                  int64_t ttl_days, store_export_format format, FILE *out, char *err,
                  size_t errlen) {
    if (access(path, F_OK) != 0) {
        snprintf(err, errlen, "no store at %s (is --data-dir right?)", path);
        return -1;
    }
    sqlite3 *db;
    if (open_readonly(path, &db, err, errlen) != 0) return -1;
    int64_t cutoff = ttl_days > 0 ? (int64_t)time(NULL) - ttl_days * 86400 : INT64_MIN;
    if (since > cutoff) cutoff = since;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            db,
            "SELECT seq, messageId, senderId, senderName, message, timestamp FROM messages"
            " WHERE roomId = ?1 AND timestamp >= ?2 ORDER BY seq",
            -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot read %s: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, cutoff);
    if (format == STORE_EXPORT_CSV)
        fputs("seq,timestamp,messageId,senderId,senderName,message\r\n", out);
    long n = 0;
    int rc, e = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        char aad[512];
        store_message_aad(aad, sizeof(aad), 's', room, seq);
        char *sender = column_value(st, 2, keys, aad, &e);
        store_message_aad(aad, sizeof(aad), 'n', room, seq);
        char *name = column_value(st, 3, keys, aad, &e);
        store_message_aad(aad, sizeof(aad), 'm', room, seq);
        char *msg = column_value(st, 4, keys, aad, &e);
        const char *id = (const char *)sqlite3_column_text(st, 1);
        int64_t ts = sqlite3_column_int64(st, 5);
        if (sender && name && msg) {
            if (format == STORE_EXPORT_CSV) {
                fprintf(out, "%lld,%lld,%s,", (long long)seq, (long long)ts, id);
                csv_field(out, sender);
                fputc(',', out);
                csv_field(out, name);
                fputc(',', out);
                csv_field(out, msg);
                fputs("\r\n", out);
            } else {
                json_t *j =
                    json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:I}", "messageId", id, "roomId", room,
                              "seq", (json_int_t)seq, "senderId", sender, "senderName", name,
                              "message", msg, "timestamp", (json_int_t)ts);
                char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
                if (line) fprintf(out, "%s\n", line);
                free(line);
                json_decref(j);
            }
            n++;
        }
        free(sender);
        free(name);
        free(msg);
        if (e) break;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (e) {
        snprintf(err, errlen, "cannot decrypt message of room %s: %s%s", room, crypto_strerror(e),
                 keys ? ""
                      : " (the store is encrypted: set enable_encryption = true and the key file)");
        return -1;
    }
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "cannot read %s: %s", path, sqlite3_errstr(rc));
        return -1;
    }
    return n;
}
