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
#include "common/hex.h"
#include "store/internal.h"
#include "store/row.h"

/* Expired messages deleted per sweep step, so a sweep never holds the write
 * lock for long. */
#define STORE_SWEEP_STEP 500
/* The layout version in PRAGMA user_version: 0 for the layout of the
 * first releases (a UNIQUE messageId, a timestamp index, three sealed
 * columns per message), 2 for the compact row (docs/storage.md). */
#define STORE_SCHEMA_VERSION 2

/* The compact row: messageId is 16 bytes (a UUID's) or, for an id that is
 * not a canonical UUID, its text; with encryption on, senderId and
 * senderName are NULL and message is ONE sealed value holding sender, name
 * and text (row.h). senderKey is kept only with a clientMessageId. Rows of
 * the old layout (three sealed columns) are read as they are. No index but
 * the primary key and the idempotency lookup's: history, resume, TTL
 * (per room, from its oldest seq) and restore all walk (roomId, seq). */
#define SQL_CREATE_MESSAGES(name)                                                                  \
    "CREATE TABLE IF NOT EXISTS " name " ("                                                        \
    "  roomId TEXT NOT NULL,"                                                                      \
    "  seq INTEGER NOT NULL,"                                                                      \
    "  messageId NOT NULL,"                                                                        \
    "  senderId,"                                                                                  \
    "  senderName,"                                                                                \
    "  message NOT NULL,"                                                                          \
    "  timestamp INTEGER NOT NULL,"                                                                \
    "  clientMessageId TEXT,"                                                                      \
    "  senderKey,"                                                                                 \
    "  PRIMARY KEY (roomId, seq)"                                                                  \
    ") WITHOUT ROWID;"

static const char SCHEMA[] = "CREATE TABLE IF NOT EXISTS rooms ("
                             "  roomId TEXT PRIMARY KEY,"
                             "  ownerId NOT NULL,"
                             "  createdAt INTEGER NOT NULL,"
                             "  lastActivity INTEGER NOT NULL,"
                             "  lastSeq INTEGER NOT NULL DEFAULT 0"
                             ");" SQL_CREATE_MESSAGES("messages")
    /* The rooms the sweeper may delete, without reading every room. */
    "CREATE INDEX IF NOT EXISTS rooms_idle ON rooms(lastActivity) WHERE lastSeq = 0;"
    "CREATE INDEX IF NOT EXISTS messages_client ON messages(senderKey, clientMessageId)"
    "  WHERE clientMessageId IS NOT NULL;"
    /* The change log for point-in-time recovery, with the time its batch
     * committed, replayable onto a base snapshot. A batch's messages are
     * logged as one (roomId, seq..seqHi) range per room, their content
     * being in messages; a TTL delete logs the row it deletes. */
    "CREATE TABLE IF NOT EXISTS pitr_log ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  t_ms INTEGER NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  roomId TEXT, seq INTEGER, messageId, senderId, senderName, message,"
    "  timestamp INTEGER, clientMessageId TEXT, senderKey, seqHi INTEGER"
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
    /* The change log's range row of this room's messages committed in
     * second log_second (0: none), extended by the later batches of that
     * second; store.log_gen when it was written (a snapshot closes it). */
    int64_t log_id;
    int64_t log_second;
    uint64_t log_gen;
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

/* ---- reading a message row ---- */

int store_read_message(sqlite3_stmt *st, int col, const crypto_keyring *keys, const char *room,
                       int64_t seq, char **sender, char **name, char **text) {
    *sender = *name = *text = NULL;
    int err = 0;
    char aad[512];
    if (sqlite3_column_type(st, col) == SQLITE_NULL) {
        /* The compact row: one sealed value for the three. */
        if (!keys) return CRYPTO_E_UNKNOWN_KEY;
        if (sqlite3_column_type(st, col + 2) != SQLITE_BLOB) return CRYPTO_E_SHORT;
        store_message_aad(aad, sizeof(aad), 'b', room, seq);
        char *body = NULL;
        size_t n = 0;
        err = crypto_open(keys, sqlite3_column_blob(st, col + 2),
                          (size_t)sqlite3_column_bytes(st, col + 2), aad, strlen(aad), &body, &n);
        if (err) return err;
        int rc = store_row_decode((const uint8_t *)body, n, sender, name, text);
        free(body);
        return rc == 0 ? 0 : CRYPTO_E_VERSION;
    }
    /* Plaintext columns, or a row of the old layout sealed column by
     * column. */
    static const char cols[3] = {'s', 'n', 'm'};
    char **out[3] = {sender, name, text};
    for (int i = 0; i < 3 && !err; i++) {
        store_message_aad(aad, sizeof(aad), cols[i], room, seq);
        *out[i] = store_column_value(st, col + i, keys, aad, &err);
    }
    if (err) {
        for (int i = 0; i < 3; i++) {
            free(*out[i]);
            *out[i] = NULL;
        }
    }
    return err;
}

void store_read_message_id(sqlite3_stmt *st, int col, char *out, size_t len) {
    const void *p = sqlite3_column_blob(st, col);
    int n = sqlite3_column_bytes(st, col);
    if (sqlite3_column_type(st, col) == SQLITE_BLOB && n == STORE_ROW_ID_LEN && len >= 37) {
        store_row_id_format(p, out);
        return;
    }
    snprintf(out, len, "%.*s", n, p ? (const char *)p : "");
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

/* One change-log row about a room (point-in-time recovery): its owner as
 * written (sealed bytes included) and lastActivity, or NULL/0. */
static int log_room(store *s, int kind, const char *room, const cell *owner, int64_t ts) {
    if (!s->opt.pitr) return SQLITE_OK;
    sqlite3_stmt *st = s->st.log_insert;
    sqlite3_bind_int64(st, 1, s->batch_ms);
    sqlite3_bind_int(st, 2, kind);
    sqlite3_bind_text(st, 3, room, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, 0);
    if (owner) bind_cell(st, 6, owner);
    sqlite3_bind_int64(st, 9, ts);
    return store_step_done(st);
}

/* A batch's messages, for the change log: the seqs of each room it
 * inserted, as one range (a failed insert in between leaves a seq that
 * restore finds no row for, and skips). */
typedef struct seq_range {
    int64_t lo, hi;
} seq_range;

static void log_message(store *s, const char *room, int64_t seq) {
    if (!s->opt.pitr) return;
    seq_range *r = strmap_get(&s->batch_ranges, room);
    if (!r) {
        r = xmalloc(sizeof(*r));
        r->lo = r->hi = seq;
        strmap_put(&s->batch_ranges, room, r, NULL);
        return;
    }
    if (seq < r->lo) r->lo = seq;
    if (seq > r->hi) r->hi = seq;
}

int store_log_batch(store *s) {
    int rc = SQLITE_OK;
    size_t it = 0;
    const char *room;
    void *v;
    int64_t second = s->batch_ms / 1000;
    while (rc == SQLITE_OK && strmap_next(&s->batch_ranges, &it, &room, &v)) {
        const seq_range *r = v;
        room_cache *c = room_cache_of(s, room);
        sqlite3_stmt *st;
        if (c->log_id && c->log_second == second && c->log_gen == s->log_gen) {
            /* Restore replays to the second: one row per room and second
             * is as exact as one per batch, and far fewer bytes. */
            st = s->st.log_extend;
            sqlite3_bind_int64(st, 1, c->log_id);
            sqlite3_bind_int64(st, 2, r->hi);
            rc = store_step_done(st);
            continue;
        }
        st = s->st.log_insert;
        sqlite3_bind_int64(st, 1, s->batch_ms);
        sqlite3_bind_int(st, 2, LOG_MESSAGES);
        sqlite3_bind_text(st, 3, room, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, r->lo);
        sqlite3_bind_int64(st, 12, r->hi);
        rc = store_step_done(st);
        if (rc == SQLITE_OK) {
            c->log_id = sqlite3_last_insert_rowid(s->db);
            c->log_second = second;
            c->log_gen = s->log_gen;
        }
    }
    store_map_clear(&s->batch_ranges);
    return rc;
}

/* Senders remembered at most (then forgotten all at once): a bound on the
 * memory, far above the senders active in any one second. */
#define SENDER_KEYS_MAX 8192

/* A sender's key for the idempotency lookup: with encryption, the first
 * STORE_SENDER_KEY_LEN bytes of its blind index; without, its id (at most
 * 64 bytes, as the first layout kept it). */
typedef struct sender_key {
    uint8_t b[64];
    int n;
    bool blob;
} sender_key;

static void sender_key_of(store *s, const char *user_id, sender_key *out) {
    if (!s->opt.keys) {
        size_t n = strlen(user_id);
        out->n = (int)(n < sizeof(out->b) ? n : sizeof(out->b));
        memcpy(out->b, user_id, (size_t)out->n);
        out->blob = false;
        return;
    }
    out->n = STORE_SENDER_KEY_LEN;
    out->blob = true;
    /* The blind index is an HMAC, the same for every message of a sender:
     * computed once per sender, not once per message. */
    const uint8_t *known = strmap_get(&s->sender_keys, user_id);
    if (known) {
        memcpy(out->b, known, STORE_SENDER_KEY_LEN);
        return;
    }
    char hex[CRYPTO_INDEX_HEX_LEN + 1];
    crypto_blind_index(s->opt.keys, "senderId", user_id, strlen(user_id), hex);
    hex_decode(hex, 2 * STORE_SENDER_KEY_LEN, out->b, STORE_SENDER_KEY_LEN);
    if (s->sender_keys.count >= SENDER_KEYS_MAX) store_map_clear(&s->sender_keys);
    uint8_t *copy = xmalloc(STORE_SENDER_KEY_LEN);
    memcpy(copy, out->b, STORE_SENDER_KEY_LEN);
    strmap_put(&s->sender_keys, user_id, copy, NULL);
}

static void bind_sender_key(sqlite3_stmt *st, int col, const sender_key *k) {
    if (k->blob) sqlite3_bind_blob(st, col, k->b, k->n, SQLITE_STATIC);
    else sqlite3_bind_text(st, col, (const char *)k->b, k->n, SQLITE_STATIC);
}

/* Fill op from the message it repeats (the row at st's current step:
 * roomId, seq, messageId, senderId, senderName, message, timestamp). */
static int take_original(store *s, store_op *op, sqlite3_stmt *st) {
    char *room = xstrdup((const char *)sqlite3_column_text(st, 0));
    int64_t seq = sqlite3_column_int64(st, 1);
    char *sender, *name, *msg;
    if (store_read_message(st, 3, s->opt.keys, room, seq, &sender, &name, &msg) != 0) {
        free(room);
        return SQLITE_CORRUPT;
    }
    free(sender);
    op->duplicate = true;
    free(op->room_id);
    op->room_id = room;
    op->seq = seq;
    store_read_message_id(st, 2, op->message_id, sizeof(op->message_id));
    free(op->message);
    op->message = msg;
    free(op->username);
    op->username = name;
    op->timestamp = sqlite3_column_int64(st, 6);
    return SQLITE_OK;
}

static int apply_chat(store *s, store_op *op) {
    const crypto_keyring *keys = s->opt.keys;
    sender_key key;
    bool keyed = op->client_message_id != NULL;
    if (keyed) sender_key_of(s, op->user_id, &key);
    int rc;
    if (keyed && s->opt.idempotency_window_s > 0) {
        /* The same sender repeating a clientMessageId within the window gets
         * the original message back, stored once. */
        sqlite3_stmt *st = s->st.find_client_id;
        bind_sender_key(st, 1, &key);
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
    sqlite3_stmt *st = s->st.insert_message;
    sqlite3_bind_text(st, 1, op->room_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, op->seq);
    uint8_t id[STORE_ROW_ID_LEN];
    if (store_row_id_pack(op->message_id, strlen(op->message_id), id))
        sqlite3_bind_blob(st, 3, id, sizeof(id), SQLITE_STATIC);
    else sqlite3_bind_text(st, 3, op->message_id, -1, SQLITE_STATIC);
    uint8_t *sealed = NULL;
    if (keys) {
        /* One sealed value (one nonce, one tag) for sender, name and text,
         * bound to the row; senderId and senderName stay NULL. */
        size_t blen, slen;
        uint8_t *body = store_row_encode(op->user_id, op->username, op->message, &blen);
        char aad[512];
        store_message_aad(aad, sizeof(aad), 'b', op->room_id, op->seq);
        sealed = crypto_seal(keys, body, blen, aad, strlen(aad), &slen);
        free(body);
        if (sealed) sqlite3_bind_blob(st, 6, sealed, (int)slen, SQLITE_STATIC);
    } else {
        sqlite3_bind_text(st, 4, op->user_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, op->username, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, op->message, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 7, op->timestamp);
    if (keyed) {
        sqlite3_bind_text(st, 8, op->client_message_id, -1, SQLITE_STATIC);
        bind_sender_key(st, 9, &key);
    }
    rc = store_step_done(st);
    free(sealed);
    if (rc == SQLITE_OK) log_message(s, op->room_id, op->seq);
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
        if (rc == SQLITE_OK) rc = log_room(s, LOG_ROOM_TOUCH, op->room_id, &owner, op->timestamp);
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
    if (rc == SQLITE_OK) rc = log_room(s, LOG_ROOM_TOUCH, op->room_id, &owner, op->timestamp);
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
        char *sender, *name, *msg;
        err = store_read_message(st, 2, keys, op->room_id, seq, &sender, &name, &msg);
        if (!err) {
            char id[128];
            store_read_message_id(st, 1, id, sizeof(id));
            json_array_append_new(rows,
                                  json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:I}", "messageId", id,
                                            "roomId", op->room_id, "seq", (json_int_t)seq,
                                            "senderId", sender, "senderName", name, "message", msg,
                                            "timestamp", (json_int_t)sqlite3_column_int64(st, 5)));
        }
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

/* Delete one idle room's row (roomId): it holds no message and never gave
 * a seq. */
static int delete_idle_room(store *s, sqlite3_stmt *expired_rooms) {
    char *room = xstrdup((const char *)sqlite3_column_text(expired_rooms, 0));
    sqlite3_stmt *del = s->st.delete_room;
    sqlite3_bind_text(del, 1, room, -1, SQLITE_STATIC);
    int rc = store_step_done(del);
    if (rc == SQLITE_OK) rc = log_room(s, LOG_ROOM_DELETE, room, NULL, 0);
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

/* Rooms whose oldest messages the sweeper looks at per sweep (once a
 * second when idle), continuing where the last sweep stopped: a pass over
 * every room takes (rooms / this) seconds, and costs one seek per room. */
#define STORE_SWEEP_ROOMS 4096

/* Return the next room holding messages after s->sweep_room (the first
 * when NULL), malloc'd, or NULL at the end (then the walk starts over). */
static char *sweep_next_room(store *s) {
    sqlite3_stmt *st = s->sweep_room ? s->st.next_room : s->st.first_room;
    if (s->sweep_room) sqlite3_bind_text(st, 1, s->sweep_room, -1, SQLITE_STATIC);
    char *room = NULL;
    if (sqlite3_step(st) == SQLITE_ROW) room = xstrdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return room;
}

/* Rows within the TTL the sweeper reads past, at a room's head, for
 * expired ones behind them: a room's seq order is its time order only to
 * the second or so (and across a clock step back). */
#define STORE_SWEEP_KEPT_RUN 8

/* Delete the expired head of room: its oldest messages, in seq order, up
 * to STORE_SWEEP_KEPT_RUN in a row within the TTL, at most max of them. A
 * room's oldest messages are its first in (roomId, seq) order, so no index
 * on timestamp is needed; reads never return an expired row the sweeper
 * has not reached yet. With PITR, each deleted row goes to the change log
 * whole: restore may need it back. Returns an SQLite code; the count in
 * *deleted. */
static int sweep_room(store *s, const char *room, int64_t cutoff, int max, int *deleted) {
    sqlite3_stmt *st = s->st.room_head;
    sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
    int64_t hi = 0;
    int n = 0, kept = 0, rc;
    while (n < max && kept < STORE_SWEEP_KEPT_RUN && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_int64(st, 1) < cutoff) {
            hi = sqlite3_column_int64(st, 0);
            n++;
            kept = 0;
        } else {
            kept++;
        }
    }
    if (n == max || kept == STORE_SWEEP_KEPT_RUN) rc = SQLITE_DONE;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    *deleted = n;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return rc;
    if (n == 0) return SQLITE_OK;
    rc = SQLITE_OK;
    if (s->opt.pitr) {
        st = s->st.log_expired;
        sqlite3_bind_int64(st, 1, s->batch_ms);
        sqlite3_bind_text(st, 2, room, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, hi);
        sqlite3_bind_int64(st, 4, cutoff);
        rc = store_step_done(st);
    }
    if (rc == SQLITE_OK) {
        st = s->st.delete_head;
        sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, hi);
        sqlite3_bind_int64(st, 3, cutoff);
        rc = store_step_done(st);
    }
    return rc;
}

/* One step of the message sweep, in one small transaction: rooms from the
 * walk's position until STORE_SWEEP_STEP messages are deleted or *rooms
 * (counted down) are looked at. Returns how many were deleted, or -1;
 * *end is set when the walk passed the last room. */
static int sweep_messages(store *s, int64_t cutoff, int *rooms, bool *end) {
    store_write_begin(s);
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        store_write_end(s, sqlite3_errcode(s->db));
        return -1;
    }
    s->batch_ms = clock_wall_ms();
    int total = 0, rc = SQLITE_OK;
    *end = false;
    while (rc == SQLITE_OK && total<STORE_SWEEP_STEP && * rooms> 0) {
        char *room = sweep_next_room(s);
        if (!room) {
            *end = true;
            free(s->sweep_room);
            s->sweep_room = NULL;
            break;
        }
        (*rooms)--;
        int max = STORE_SWEEP_STEP - total, n = 0;
        rc = sweep_room(s, room, cutoff, max, &n);
        total += n;
        if (n < max) {
            /* The room is done: the walk moves past it. */
            free(s->sweep_room);
            s->sweep_room = room;
        } else {
            free(room);
        }
    }
    if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    store_write_end(s, rc);
    if (rc != SQLITE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return total;
}

/* Return true when writes are waiting (the sweep gives way to them). */
static bool writes_waiting(store *s) {
    pthread_mutex_lock(&s->lock);
    bool busy = s->in_head != NULL;
    pthread_mutex_unlock(&s->lock);
    return busy;
}

/* Sweep expired messages, then idle rooms, while no writes are waiting
 * (store thread). */
void store_sweep(store *s) {
    int64_t cutoff = (int64_t)time(NULL) - s->opt.ttl_days * 86400;
    int rooms = STORE_SWEEP_ROOMS;
    bool end = false;
    while (rooms > 0 && !end) {
        int n = sweep_messages(s, cutoff, &rooms, &end);
        if (n < 0) return;
        if (n > 0) {
            pthread_mutex_lock(&s->lock);
            s->stats.expired += (uint64_t)n;
            pthread_mutex_unlock(&s->lock);
        }
        if (writes_waiting(s)) return; /* writes first; the sweep resumes later */
    }
    for (;;) {
        int n = sweep_step(s, s->st.expired_rooms, cutoff, delete_idle_room);
        if (n > 0) {
            pthread_mutex_lock(&s->lock);
            s->stats.rooms_expired += (uint64_t)n;
            pthread_mutex_unlock(&s->lock);
            if (writes_waiting(s)) return;
        }
        if (n < STORE_SWEEP_STEP) break;
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
         "SELECT roomId, seq, messageId, senderId, senderName, message, timestamp FROM messages"
         " WHERE senderKey = ?1 AND clientMessageId = ?2 AND timestamp >= ?3 LIMIT 1"},
        {offsetof(stmts, history_before),
         "SELECT seq, messageId, senderId, senderName, message, timestamp FROM messages"
         " WHERE roomId = ?1 AND seq < ?2 AND timestamp >= ?3 ORDER BY seq DESC LIMIT ?4"},
        {offsetof(stmts, history_after),
         "SELECT seq, messageId, senderId, senderName, message, timestamp FROM messages"
         " WHERE roomId = ?1 AND seq > ?2 AND timestamp >= ?3 ORDER BY seq ASC LIMIT ?4"},
        {offsetof(stmts, first_room), "SELECT roomId FROM messages ORDER BY roomId LIMIT 1"},
        {offsetof(stmts, next_room),
         "SELECT roomId FROM messages WHERE roomId > ?1 ORDER BY roomId LIMIT 1"},
        {offsetof(stmts, room_head),
         "SELECT seq, timestamp FROM messages WHERE roomId = ?1 ORDER BY seq"},
        {offsetof(stmts, delete_head),
         "DELETE FROM messages WHERE roomId = ?1 AND seq <= ?2 AND timestamp < ?3"},
        {offsetof(stmts, log_expired),
         "INSERT INTO pitr_log(t_ms, kind, roomId, seq, messageId, senderId, senderName, message,"
         " timestamp, clientMessageId, senderKey) SELECT ?1, " LOG_DELETE_SQL ", roomId, seq,"
         " messageId, senderId, senderName, message, timestamp, clientMessageId, senderKey"
         " FROM messages WHERE roomId = ?2 AND seq <= ?3 AND timestamp < ?4"},
        {offsetof(stmts, log_extend),
         "UPDATE pitr_log SET seqHi = ?2 WHERE id = ?1 AND seqHi < ?2"},
        {offsetof(stmts, log_insert),
         "INSERT INTO pitr_log(t_ms, kind, roomId, seq, messageId, senderId, senderName, message,"
         " timestamp, clientMessageId, senderKey, seqHi) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
         " ?9, ?10, ?11, ?12)"},
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

/* SQL wsgate_id_pack(id): a canonical UUID's 16 bytes, any other id as it
 * is. For the migration and the replay of old change-log rows. */
static void sql_id_pack(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    uint8_t id[STORE_ROW_ID_LEN];
    const char *text = (const char *)sqlite3_value_text(argv[0]);
    if (sqlite3_value_type(argv[0]) == SQLITE_TEXT &&
        store_row_id_pack(text, (size_t)sqlite3_value_bytes(argv[0]), id))
        sqlite3_result_blob(ctx, id, sizeof(id), SQLITE_TRANSIENT);
    else sqlite3_result_value(ctx, argv[0]);
}

/* SQL wsgate_key_pack(clientMessageId, senderKey): NULL without a
 * clientMessageId (nothing looks the key up), the first 16 bytes of a
 * blind index written as 64 hex digits, any other key (a plaintext user id)
 * as it is. */
static void sql_key_pack(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    uint8_t mac[32];
    const char *text = (const char *)sqlite3_value_text(argv[1]);
    if (sqlite3_value_type(argv[1]) == SQLITE_TEXT &&
        hex_decode(text, (size_t)sqlite3_value_bytes(argv[1]), mac, sizeof(mac)))
        sqlite3_result_blob(ctx, mac, STORE_SENDER_KEY_LEN, SQLITE_TRANSIENT);
    else sqlite3_result_value(ctx, argv[1]);
}

int store_sql_functions(sqlite3 *db) {
    int rc = sqlite3_create_function(db, "wsgate_id_pack", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                     NULL, sql_id_pack, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "wsgate_key_pack", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                     NULL, sql_key_pack, NULL, NULL);
    return rc;
}

/* Return db's PRAGMA user_version, or -1. */
static int schema_version(sqlite3 *db) {
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) return -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Return whether db has a table called name. */
static bool has_table(sqlite3 *db, const char *name) {
    sqlite3_stmt *st;
    bool found = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1", -1,
                           &st, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

/* A database of the old layout gets the compact table: every row copied
 * (ids packed, sender keys kept only where a lookup needs them, sealed
 * values as they are: no key is needed), the UNIQUE messageId and
 * timestamp indexes gone, the change log a seqHi column. One transaction:
 * all or nothing. */
static int migrate_compact(sqlite3 *db) {
    int rc = sqlite3_exec(db, "SAVEPOINT compact", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return rc;
    static const char sql[] =
        SQL_CREATE_MESSAGES("messages_compact") "INSERT INTO messages_compact SELECT roomId, seq,"
                                                " wsgate_id_pack(messageId), senderId, senderName, "
                                                "message, timestamp, clientMessageId,"
                                                " wsgate_key_pack(clientMessageId, senderKey) FROM "
                                                "messages ORDER BY roomId, seq;"
                                                "DROP TABLE messages;"
                                                "ALTER TABLE messages_compact RENAME TO messages;";
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK && has_table(db, "pitr_log"))
        rc = sqlite3_exec(db, "ALTER TABLE pitr_log ADD COLUMN seqHi INTEGER", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, "RELEASE compact", NULL, NULL, NULL);
    } else {
        sqlite3_exec(db, "ROLLBACK TO compact", NULL, NULL, NULL);
        sqlite3_exec(db, "RELEASE compact", NULL, NULL, NULL);
    }
    return rc;
}

/* Columns added since the first version of the schema, then the compact
 * layout. */
static int migrate(sqlite3 *db) {
    int version = schema_version(db);
    if (version < 0) return SQLITE_ERROR;
    if (version >= STORE_SCHEMA_VERSION || !has_table(db, "messages")) return SQLITE_OK;
    static const char *const adds[] = {"clientMessageId TEXT", "senderKey TEXT"};
    for (size_t i = 0; i < 2; i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "ALTER TABLE messages ADD COLUMN %s", adds[i]);
        sqlite3_exec(db, sql, NULL, NULL, NULL); /* fails harmlessly when present */
    }
    int rc = store_add_last_seq(db);
    if (rc == SQLITE_OK) rc = migrate_compact(db);
    if (rc == SQLITE_OK)
        log_msg(LOG_INFO, "store_migrated",
                "store converted to the compact row layout (version %d)", STORE_SCHEMA_VERSION);
    return rc;
}

int store_schema(sqlite3 *db) {
    int rc = store_sql_functions(db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = migrate(db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, SCHEMA, NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
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
    /* The newest sealed message: the last of the room posted to last, else
     * the last row of the table (no timestamp index to ask; both are one
     * descent of a b-tree). */
    static const char *const probes[] = {
        "SELECT roomId, seq, senderId, senderName, message FROM messages WHERE roomId ="
        " (SELECT roomId FROM rooms WHERE lastSeq > 0 ORDER BY lastActivity DESC LIMIT 1)"
        " AND typeof(message) = 'blob' ORDER BY seq DESC LIMIT 1",
        "SELECT roomId, seq, senderId, senderName, message FROM messages"
        " WHERE typeof(message) = 'blob' ORDER BY roomId DESC, seq DESC LIMIT 1",
    };
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, probes[i], -1, &st, NULL) != SQLITE_OK) return 0;
        int result = 1; /* 1: nothing sealed found, try the next probe */
        if (sqlite3_step(st) == SQLITE_ROW) {
            char *room = xstrdup((const char *)sqlite3_column_text(st, 0));
            char *sender, *name, *text;
            int e = store_read_message(st, 2, s->opt.keys, room, sqlite3_column_int64(st, 1),
                                       &sender, &name, &text);
            free(room);
            free(sender);
            free(name);
            free(text);
            result = 0;
            if (e) {
                snprintf(err, errlen,
                         "stored messages cannot be decrypted with the configured keys: %s",
                         s->opt.keys ? crypto_strerror(e)
                                     : "encryption is off but the store holds encrypted rows (set "
                                       "enable_encryption = true and the key file)");
                result = -1;
            }
        }
        sqlite3_finalize(st);
        if (result <= 0) return result;
    }
    return 0;
}
