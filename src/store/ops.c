/* The store's operations, run by the store thread inside a batch: the
 * sequence cache, sealing, apply (chats, joins), history reads, the change
 * log's rows and the TTL sweep. See internal.h. */
#include "store/store.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/hex.h"
#include "common/strbuf.h"
#include "common/strmap.h"
#include "log/log.h"
#include "store/internal.h"
#include "store/row.h"

/* Expired messages deleted per sweep step, so a sweep never holds the write
 * lock for long. */
#define STORE_SWEEP_STEP 500
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
        *err = WSG_E_CRYPTO_UNKNOWN_KEY;
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

/* ---- reading a message row ---- */

int store_read_message(sqlite3_stmt *st, int col, const crypto_keyring *keys, const char *room,
                       int64_t seq, char **sender, char **name, char **text) {
    *sender = *name = *text = NULL;
    int err = 0;
    char aad[512];
    if (sqlite3_column_type(st, col) == SQLITE_NULL) {
        /* The compact row: one sealed value for the three. */
        if (!keys) return WSG_E_CRYPTO_UNKNOWN_KEY;
        if (sqlite3_column_type(st, col + 2) != SQLITE_BLOB) return WSG_E_CRYPTO_SHORT;
        store_message_aad(aad, sizeof(aad), 'b', room, seq);
        char *body = NULL;
        size_t n = 0;
        err = crypto_open(keys, sqlite3_column_blob(st, col + 2),
                          (size_t)sqlite3_column_bytes(st, col + 2), aad, strlen(aad), &body, &n);
        if (err) return err;
        int rc = store_row_decode((const uint8_t *)body, n, sender, name, text);
        free(body);
        return rc == 0 ? 0 : WSG_E_CRYPTO_VERSION;
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

int store_tx(sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int store_step_done(sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* A batch's messages per room, for the room's counter: the seqs it
 * inserted, as one range. */
typedef struct seq_range {
    int64_t lo, hi;
} seq_range;

static void log_message(store *s, const char *room, int64_t seq) {
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

int store_finish_batch(store *s) {
    int rc = SQLITE_OK;
    size_t it = 0;
    const char *room;
    void *v;
    while (rc == SQLITE_OK && strmap_next(&s->batch_ranges, &it, &room, &v)) {
        const seq_range *r = v;
        /* One counter write per room and batch, not one per chat. */
        sqlite3_stmt *st = s->st.room_seq;
        sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, r->hi);
        rc = store_step_done(st);
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
        if (rc == SQLITE_OK && cache) {
            cache->touched_at = op->timestamp;
            cache->row_known = true;
        }
        free(owner.p);
    }
    /* The room's counter (rooms.lastSeq) moves once per batch, in
     * store_finish_batch: in the same transaction as the messages, so both
     * commit or neither. */
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
                wsg_strerror(err));
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
    /* The cache must not believe in the row any more, nor the workers
     * that skip joins (store_rooms_gen). */
    free(strmap_remove(&s->last_seq, room));
    atomic_fetch_add_explicit(&s->rooms_gen, 1, memory_order_release);
    free(room);
    return rc;
}

/* Delete up to STORE_SWEEP_STEP rows that `select` (bound to cutoff and the
 * step) finds, each with delete_row, in one small transaction. Returns how
 * many were deleted, or -1 on error. */
static int sweep_step(store *s, sqlite3_stmt *select, int64_t cutoff,
                      int (*delete_row)(store *s, sqlite3_stmt *row)) {
    if (store_begin(s) != SQLITE_OK) {
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
    if (rc == SQLITE_OK) rc = store_tx(s->st.commit);
    store_write_end(s, rc);
    if (rc != SQLITE_OK) {
        store_tx(s->st.rollback);
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
    int n = 0, kept = 0, rc = SQLITE_DONE;
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
    st = s->st.delete_head;
    sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, hi);
    sqlite3_bind_int64(st, 3, cutoff);
    return store_step_done(st);
}

/* One step of the message sweep, in one small transaction: rooms from the
 * walk's position until `step` messages are deleted or *rooms
 * (counted down) are looked at. Returns how many were deleted, or -1;
 * *end is set when the walk passed the last room. */
static int sweep_messages(store *s, int64_t cutoff, int step, int *rooms, bool *end) {
    if (store_begin(s) != SQLITE_OK) {
        store_write_end(s, sqlite3_errcode(s->db));
        return -1;
    }
    s->batch_ms = clock_wall_ms();
    int total = 0, rc = SQLITE_OK;
    *end = false;
    while (rc == SQLITE_OK && total<step && * rooms> 0) {
        char *room = sweep_next_room(s);
        if (!room) {
            *end = true;
            free(s->sweep_room);
            s->sweep_room = NULL;
            break;
        }
        (*rooms)--;
        int max = step - total, n = 0;
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
    if (rc == SQLITE_OK) rc = store_tx(s->st.commit);
    store_write_end(s, rc);
    if (rc != SQLITE_OK) {
        store_tx(s->st.rollback);
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

/* Under load the sweep above gets no turn (it gives way to waiting writes,
 * and a busy store always has some), while chats keep expiring at the
 * rate they were written: between batches, a step of at most this many
 * messages, at most every STORE_SWEEP_BUSY_GAP_MS and never more than a
 * fifth of the store thread's time (a step of 1,000,000 expired rows took
 * a third of a loaded core without that bound), so the sweep keeps up
 * with as many expiring chats a second as the store takes new ones, and
 * costs a batch at most one small extra commit. */
#define STORE_SWEEP_BUSY_STEP   2000
#define STORE_SWEEP_BUSY_GAP_MS 50
#define STORE_SWEEP_BUSY_SHARE  5 /* the gap is at least this many times a step */

void store_sweep_busy(store *s) {
    if (s->opt.ttl_days <= 0) return;
    time_t now = time(NULL);
    if (now != s->last_sweep) {
        /* A new second: messages may have expired since the last pass. */
        s->last_sweep = now;
        s->sweep_more = true;
    }
    double t = clock_mono_ms();
    if (!s->sweep_more || t < s->sweep_next_ms) return;
    int rooms = STORE_SWEEP_ROOMS;
    bool end = false;
    int n = sweep_messages(s, now - s->opt.ttl_days * 86400, STORE_SWEEP_BUSY_STEP, &rooms, &end);
    double took = clock_mono_ms() - t;
    s->sweep_next_ms =
        t + (took * STORE_SWEEP_BUSY_SHARE > STORE_SWEEP_BUSY_GAP_MS ? took * STORE_SWEEP_BUSY_SHARE
                                                                     : STORE_SWEEP_BUSY_GAP_MS);
    if (n > 0) {
        pthread_mutex_lock(&s->lock);
        s->stats.expired += (uint64_t)n;
        pthread_mutex_unlock(&s->lock);
    }
    /* Done for this second once a step came back short at the walk's end. */
    if (n < 0 || (end && n < STORE_SWEEP_BUSY_STEP)) s->sweep_more = false;
}

/* Sweep expired messages, then idle rooms, while no writes are waiting
 * (store thread). */
void store_sweep(store *s) {
    int64_t cutoff = (int64_t)time(NULL) - s->opt.ttl_days * 86400;
    int rooms = STORE_SWEEP_ROOMS;
    bool end = false;
    while (rooms > 0 && !end) {
        int n = sweep_messages(s, cutoff, STORE_SWEEP_STEP, &rooms, &end);
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
