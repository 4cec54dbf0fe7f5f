/* Unit tests for the store's operations (src/store/ops.c): sequence
 * numbers, idempotent retries, history pages, sealing at rest and the TTL
 * sweep, through the public API against a real SQLite file in a temp dir.
 * Completions run on the test's loop (no on_commit), one op at a time, so
 * each test reads an op's results as the server would. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/alloc.h"
#include "crypto/crypto.h"
#include "store/store.h"
#include "fixture.h"

/* What the last completed op left: its out fields, copied before the store
 * frees it. */
static struct {
    bool done;
    int status;
    int64_t seq;
    bool duplicate;
    char message_id[37];
    char message[64];
    json_t *messages; /* owned here (history) */
    bool has_more;
} last;

static void on_done(store_op *op) {
    last.done = true;
    last.status = op->status;
    last.seq = op->seq;
    last.duplicate = op->duplicate;
    snprintf(last.message_id, sizeof last.message_id, "%s", op->message_id);
    snprintf(last.message, sizeof last.message, "%s", op->message ? op->message : "");
    json_decref(last.messages);
    last.messages = op->messages ? json_incref(op->messages) : NULL;
    last.has_more = op->has_more;
}

static void tick(uv_timer_t *t) { (void)t; }

/* Submit op and run f's loop until its completion ran; fails the test on a
 * store error. The store's wake-up handle is unref'd (it must not keep a
 * server's loop alive), so a timer keeps this loop polling meanwhile. */
static void run_op(fx_store *f, store_op *op) {
    last.done = false;
    op->done = on_done;
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    uv_timer_start(&t, tick, 10, 10);
    store_submit(f->s, op);
    for (int i = 0; i < 6000 && !last.done; i++) uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&t);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    cr_assert(last.done, "the op did not complete within 60 s");
    cr_assert_eq(last.status, 0, "store status %d", last.status);
}

/* A chat (text i) in room at time ts, with clientMessageId cid (NULL:
 * none); returns its seq. */
static int64_t chat(fx_store *f, const char *room, int i, int64_t ts, const char *cid) {
    store_op *op = fx_chat_op(room, i);
    op->timestamp = ts;
    if (cid) op->client_message_id = xstrdup(cid);
    run_op(f, op);
    return last.seq;
}

/* Read room's history, newest page before before_seq (0: none), at most
 * limit; the page is in last.messages. */
static void history(fx_store *f, const char *room, int64_t before_seq, int limit) {
    store_op *op = store_op_new(STORE_OP_HISTORY);
    op->room_id = xstrdup(room);
    op->after_seq = -1;
    op->before_seq = before_seq;
    op->limit = limit;
    run_op(f, op);
    cr_assert_not_null(last.messages);
}

static int64_t page_seq(size_t i) {
    return json_integer_value(json_object_get(json_array_get(last.messages, i), "seq"));
}

/* Close the store but keep its file (fx_store_close removes the dir). */
static void close_keep(fx_store *f) {
    store_close(f->s);
    f->s = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

/* Run one query returning one integer on the database file at path,
 * through a connection of the test's own. */
static int64_t sql_int(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sql);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sql);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void reset_last(void) {
    json_decref(last.messages);
    memset(&last, 0, sizeof last);
}

Test(store_ops, seqs_count_per_room_and_survive_a_reopen, .fini = reset_last) {
    fx_store f;
    fx_store_init(&f, "ops-seq");
    store_options so = {.sync_full = false};
    fx_store_open(&f, &so);
    int64_t now = (int64_t)time(NULL);
    for (int i = 0; i < 5; i++) cr_assert_eq(chat(&f, "a", i, now, NULL), i + 1);
    for (int i = 0; i < 3; i++) cr_assert_eq(chat(&f, "b", 10 + i, now, NULL), i + 1);
    cr_assert_eq(chat(&f, "a", 5, now, NULL), 6);
    close_keep(&f);
    /* A new store has no cache: the seqs go on from the file's counter. */
    fx_store_open(&f, &so);
    cr_assert_eq(chat(&f, "a", 6, now, NULL), 7);
    cr_assert_eq(chat(&f, "b", 13, now, NULL), 4);
    cr_assert_eq(chat(&f, "c", 20, now, NULL), 1);
    fx_store_close(&f);
}

Test(store_ops, a_retry_returns_the_first_message_and_stores_nothing, .fini = reset_last) {
    fx_store f;
    fx_store_init(&f, "ops-idem");
    store_options so = {.sync_full = false, .idempotency_window_s = 300};
    fx_store_open(&f, &so);
    int64_t now = (int64_t)time(NULL);
    cr_assert_eq(chat(&f, "r", 1, now, "cid-1"), 1);
    cr_assert(!last.duplicate);
    char first_id[37];
    snprintf(first_id, sizeof first_id, "%s", last.message_id);
    /* The retry carries a new message id and text: both are replaced by the
     * original's. */
    cr_assert_eq(chat(&f, "r", 2, now + 1, "cid-1"), 1);
    cr_assert(last.duplicate);
    cr_assert_str_eq(last.message_id, first_id);
    cr_assert_str_eq(last.message, "1");
    /* Another clientMessageId is a new message, and the counter did not
     * move for the retry. */
    cr_assert_eq(chat(&f, "r", 3, now + 1, "cid-2"), 2);
    cr_assert(!last.duplicate);
    history(&f, "r", 0, 10);
    cr_assert_eq(json_array_size(last.messages), 2);
    close_keep(&f);
    cr_assert_eq(sql_int(f.path, "SELECT COUNT(*) FROM messages"), 2);
    fx_store_close(&f);
}

Test(store_ops, history_pages_are_exact, .fini = reset_last) {
    fx_store f;
    fx_store_init(&f, "ops-hist");
    store_options so = {.sync_full = false};
    fx_store_open(&f, &so);
    int64_t now = (int64_t)time(NULL);
    for (int i = 1; i <= 10; i++) chat(&f, "h", i, now, NULL);
    chat(&f, "other", 99, now, NULL);
    /* The newest page, oldest first. */
    history(&f, "h", 0, 4);
    cr_assert_eq(json_array_size(last.messages), 4);
    for (size_t i = 0; i < 4; i++) cr_assert_eq(page_seq(i), 7 + (int64_t)i);
    cr_assert(last.has_more);
    /* Paging back with beforeSeq = the page's oldest. */
    history(&f, "h", 7, 4);
    cr_assert_eq(json_array_size(last.messages), 4);
    for (size_t i = 0; i < 4; i++) cr_assert_eq(page_seq(i), 3 + (int64_t)i);
    cr_assert(last.has_more);
    /* The last page holds what is left and says so. */
    history(&f, "h", 3, 4);
    cr_assert_eq(json_array_size(last.messages), 2);
    cr_assert_eq(page_seq(0), 1);
    cr_assert_eq(page_seq(1), 2);
    cr_assert(!last.has_more);
    /* A limit that is exactly the room's size: all of it, no more. */
    history(&f, "h", 0, 10);
    cr_assert_eq(json_array_size(last.messages), 10);
    cr_assert(!last.has_more);
    json_t *m = json_array_get(last.messages, 9);
    cr_assert_str_eq(json_string_value(json_object_get(m, "message")), "10");
    cr_assert_str_eq(json_string_value(json_object_get(m, "roomId")), "h");
    cr_assert_str_eq(json_string_value(json_object_get(m, "senderId")), "u");
    fx_store_close(&f);
}

#define MARKER "plaintext-marker-7f3a9c"

/* Return true when any file in dir holds MARKER. */
static bool marker_in_dir(const char *dir) {
    char cmd[200];
    snprintf(cmd, sizeof cmd, "grep -rqa -- '%s' %s", MARKER, dir);
    return system(cmd) == 0;
}

/* Store one chat whose text is MARKER, with keys or without, close the
 * store and return whether MARKER is in its files; the history read before
 * the close must give the text back either way. */
static bool marker_stored(bool sealed) {
    fx_store f;
    fx_store_init(&f, "ops-seal");
    crypto_keyring *keys = NULL;
    if (sealed) {
        char kpath[160];
        snprintf(kpath, sizeof kpath, "%s/keys.json", f.dir);
        wsg_error err = {0};
        cr_assert_eq(crypto_keyring_open(kpath, true, &keys, &err), 0, "%s", err.message);
    }
    store_options so = {.sync_full = false, .keys = keys};
    fx_store_open(&f, &so);
    store_op *op = fx_chat_op("sealed", 1);
    free(op->message);
    op->message = xstrdup(MARKER);
    op->timestamp = (int64_t)time(NULL);
    run_op(&f, op);
    history(&f, "sealed", 0, 10);
    cr_assert_eq(json_array_size(last.messages), 1);
    cr_assert_str_eq(
        json_string_value(json_object_get(json_array_get(last.messages, 0), "message")), MARKER);
    close_keep(&f);
    bool found = marker_in_dir(f.dir);
    f.s = NULL;
    fx_store_close(&f);
    crypto_keyring_free(keys);
    return found;
}

Test(store_ops, values_are_sealed_at_rest, .fini = reset_last) {
    /* The control: without keys the text is in the file, so the grep can
     * see it. */
    cr_assert(marker_stored(false));
    cr_assert(!marker_stored(true), "the plaintext is in the store's files");
}

Test(store_ops, the_sweep_deletes_expired_rows_and_keeps_the_rest, .fini = reset_last) {
    fx_store f;
    fx_store_init(&f, "ops-ttl");
    store_options so = {.sync_full = false, .ttl_days = 1};
    store *s = fx_store_open(&f, &so);
    int64_t now = (int64_t)time(NULL);
    uint32_t g0 = store_rooms_gen(s);
    /* Room t: two messages from 1970 (past a one-day TTL), then one of
     * now. Room keep: only a message of now. */
    chat(&f, "t", 1, 1, NULL);
    chat(&f, "t", 2, 2, NULL);
    chat(&f, "t", 3, now, NULL);
    chat(&f, "keep", 4, now, NULL);
    /* Room idle: joined in 1970, no message; room old: joined in 1970
     * with a message of 1970, so it gave a seq. */
    store_op *op = store_op_new(STORE_OP_ROOM_JOIN);
    op->room_id = xstrdup("idle");
    op->user_id = xstrdup("u");
    op->timestamp = 1;
    run_op(&f, op);
    chat(&f, "old", 5, 1, NULL);
    /* The sweep runs about once a second on an idle store: wait (bounded,
     * a loaded machine) until it deleted the three expired messages and
     * the idle room. */
    store_stats st;
    for (int i = 0; i < 300; i++) {
        store_get_stats(s, &st);
        if (st.expired >= 3 && st.rooms_expired >= 1) break;
        usleep(100 * 1000);
    }
    cr_assert_eq(st.expired, 3, "expired %llu", (unsigned long long)st.expired);
    cr_assert_eq(st.rooms_expired, 1, "rooms expired %llu", (unsigned long long)st.rooms_expired);
    cr_assert_neq(store_rooms_gen(s), g0);
    history(&f, "t", 0, 10);
    cr_assert_eq(json_array_size(last.messages), 1);
    cr_assert_eq(page_seq(0), 3);
    history(&f, "keep", 0, 10);
    cr_assert_eq(json_array_size(last.messages), 1);
    /* A room that gave a seq keeps its row (its counter), and the counter
     * goes on past the expired messages. */
    cr_assert_eq(chat(&f, "old", 6, now, NULL), 2);
    close_keep(&f);
    cr_assert_eq(sql_int(f.path, "SELECT COUNT(*) FROM messages WHERE roomId = 't'"), 1);
    cr_assert_eq(sql_int(f.path, "SELECT COUNT(*) FROM messages WHERE timestamp < 100"), 0);
    cr_assert_eq(sql_int(f.path, "SELECT COUNT(*) FROM rooms WHERE roomId = 'idle'"), 0);
    cr_assert_eq(sql_int(f.path, "SELECT COUNT(*) FROM rooms WHERE roomId IN ('t', 'keep', 'old')"),
                 3);
    fx_store_close(&f);
}
