/* What the store unit tests share: a temp dir of their own, removed at
 * the end; a store opened in it on a loop of the test's; a bare SQLite
 * file in WAL mode with automatic checkpoints off, filled by the test.
 * The Makefile builds each .c file in tests/unit/store as one test; this
 * header is not one. */
#ifndef WSGATE_TESTS_STORE_FIXTURE_H
#define WSGATE_TESTS_STORE_FIXTURE_H

#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "../testdir.h"
#include "common/alloc.h"
#include "store/store.h"

/* Makes /tmp/wsgate-<tag>-XXXXXX into dir (len bytes); fails the test if
 * it cannot. */
static inline void fx_tmpdir(char *dir, size_t len, const char *tag) {
    snprintf(dir, len, "/tmp/wsgate-%s-XXXXXX", tag);
    cr_assert_not_null(mkdtemp(dir), "%s", dir);
}

/* Removes dir and all below it; fails the test if it cannot. */
static inline void fx_rmdir(const char *dir) { testdir_remove(dir); }

/* A store at <dir>/store.db on a loop of the fixture's own. */
typedef struct fx_store {
    char dir[64];
    char path[128];
    uv_loop_t loop;
    store *s;
} fx_store;

/* Makes f's temp dir and loop; the test may then put paths in the dir
 * into the options before fx_store_open. */
static inline void fx_store_init(fx_store *f, const char *tag) {
    fx_tmpdir(f->dir, sizeof f->dir, tag);
    snprintf(f->path, sizeof f->path, "%s/store.db", f->dir);
    uv_loop_init(&f->loop);
    f->s = NULL;
}

/* Opens the store with `so` (which must outlive it) and returns it, also
 * kept in f->s; fails the test with the store's message if it cannot. */
static inline store *fx_store_open(fx_store *f, const store_options *so) {
    wsg_error err = {0};
    f->s = store_open(f->path, &f->loop, so, &err);
    cr_assert_not_null(f->s, "%s", err.message);
    return f->s;
}

/* Closes the store, runs the loop out (the close's last callbacks), closes
 * it and removes the dir. */
static inline void fx_store_close(fx_store *f) {
    if (f->s) store_close(f->s);
    f->s = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
    fx_rmdir(f->dir);
}

/* A new chat op from user u in `room`: its message is i in decimal and its
 * message id ends in i, so a test can tell which chat a commit was. The
 * caller submits it (the store then owns it). */
static inline store_op *fx_chat_op(const char *room, int i) {
    store_op *op = store_op_new(STORE_OP_CHAT);
    op->room_id = xstrdup(room);
    op->user_id = xstrdup("u");
    op->username = xstrdup("U");
    char txt[16];
    snprintf(txt, sizeof txt, "%d", i);
    op->message = xstrdup(txt);
    snprintf(op->message_id, sizeof op->message_id, "00000000-0000-7000-8000-%012d", i);
    op->timestamp = 1;
    return op;
}

/* Opens `path` as a fresh SQLite file in WAL mode with automatic
 * checkpoints off and one table t (x); the caller closes what it returns. */
static inline sqlite3 *fx_wal_db(const char *path) {
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
                              " CREATE TABLE t (x)",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    return db;
}

/* One transaction inserting `rows` rows of `size` random bytes into t. */
static inline void fx_wal_insert(sqlite3 *db, int rows, int size) {
    char sql[160];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < %d)"
             " INSERT INTO t SELECT randomblob(%d) FROM c",
             rows, size);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
}

#endif
