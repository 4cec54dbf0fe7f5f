/* The store's operations, run by the store thread inside a batch: the
 * schema and its migrations, the sequence cache, sealing, apply (chats,
 * joins), history reads and the TTL sweep. See internal.h. */
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
#include "store/internal.h"

/* Expired messages deleted per sweep step, so a sweep never holds the write
 * lock for long. */
#define STORE_SWEEP_STEP 500
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
char *store_column_value(sqlite3_stmt *st, int col, const crypto_keyring *keys, const char *aad,
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
void store_map_clear(strmap *m) {
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
        if (s->last_seq.count >= ROOM_CACHE_MAX) store_map_clear(&s->last_seq);
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

int store_step_done(sqlite3_stmt *st) {
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
    return store_step_done(st);
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
    if (s->sender_keys.count >= SENDER_KEYS_MAX) store_map_clear(&s->sender_keys);
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
    char *msg = store_column_value(st, 3, keys, aad, &err);
    store_message_aad(aad, sizeof(aad), 'n', room, seq);
    char *name = store_column_value(st, 5, keys, aad, &err);
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
    rc = store_step_done(st);
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
        rc = store_step_done(st);
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
        rc = store_step_done(st);
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
    int rc = store_step_done(st);
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
        char *sender = store_column_value(st, 2, keys, aad, &err);
        store_message_aad(aad, sizeof(aad), 'n', op->room_id, seq);
        char *name = store_column_value(st, 3, keys, aad, &err);
        store_message_aad(aad, sizeof(aad), 'm', op->room_id, seq);
        char *msg = store_column_value(st, 4, keys, aad, &err);
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
int store_apply(store *s, store_op *op) {
    switch (op->kind) {
    case STORE_OP_CHAT: return apply_chat(s, op);
    case STORE_OP_ROOM_JOIN: return apply_room_join(s, op);
    case STORE_OP_HISTORY: return apply_history(s, op);
    }
    return SQLITE_MISUSE;
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
    int rc = store_step_done(del);
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
    int rc = store_step_done(del);
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
    store_write_begin(s);
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        store_write_end(s, sqlite3_errcode(s->db));
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
    store_write_end(s, rc);
    if (rc != SQLITE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return n;
}

/* Sweep expired messages, then idle rooms, while no writes are waiting
 * (store thread). */
void store_sweep(store *s) {
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
/* ---- opening ---- */

int store_prepare(store *s) {
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

void store_finalize(store *s) {
    sqlite3_stmt **all = (sqlite3_stmt **)&s->st;
    for (size_t i = 0; i < sizeof(s->st) / sizeof(sqlite3_stmt *); i++) sqlite3_finalize(all[i]);
    memset(&s->st, 0, sizeof(s->st));
}

/* Give an existing rooms table its counter, set from the messages it still
 * has (all a database of the first schema knows). Harmless when the column
 * is there or the table is not (the schema creates it). */
int store_add_last_seq(sqlite3 *db) {
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
    return store_add_last_seq(db);
}

int store_schema(sqlite3 *db) {
    int rc = migrate(db);
    return rc == SQLITE_OK ? sqlite3_exec(db, SCHEMA, NULL, NULL, NULL) : rc;
}

/* PRAGMA quick_check: returns 0 when the file is sound. */
int store_check_integrity(sqlite3 *db, char *err, size_t errlen, const char *path) {
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
int store_check_keys(store *s, char *err, size_t errlen) {
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
        char *plain = store_column_value(st, 2, s->opt.keys, aad, &e);
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
