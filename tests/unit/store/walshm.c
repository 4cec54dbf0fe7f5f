/* Unit tests for src/store/walshm.c, the WAL-index header reader: against
 * the "-shm" file of a real SQLite database (a temp dir, autocheckpoint
 * off), whose frame counts are checked against what SQLite itself reports
 * (the WAL hook, sqlite3_wal_checkpoint_v2), and whose "may restart"
 * answer is checked against what the next write really does. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/walshm.h"
#include "fixture.h"

typedef struct db_dir {
    char dir[64];
    char path[128];
    sqlite3 *db;    /* the writer */
    sqlite3 *ckpt;  /* checkpoints, as the store's checkpointer thread */
    int shm;        /* the -shm file, read-only */
    int hook_pages; /* the WAL hook's count after the last commit */
} db_dir;

static int on_commit(void *arg, sqlite3 *db, const char *name, int pages) {
    (void)db;
    (void)name;
    ((db_dir *)arg)->hook_pages = pages;
    return SQLITE_OK;
}

static void db_open(db_dir *d) {
    memset(d, 0, sizeof(*d));
    fx_tmpdir(d->dir, sizeof(d->dir), "walshm");
    snprintf(d->path, sizeof(d->path), "%s/t.db", d->dir);
    d->db = fx_wal_db(d->path);
    sqlite3_wal_hook(d->db, on_commit, d);
    cr_assert_eq(sqlite3_open(d->path, &d->ckpt), SQLITE_OK);
    /* As the store sets up its checkpointer's connection. A connection that
     * has run nothing has not opened the WAL: its checkpoints do nothing. */
    cr_assert_eq(sqlite3_exec(d->ckpt, "PRAGMA synchronous=FULL", NULL, NULL, NULL), SQLITE_OK);
    char shm[160];
    snprintf(shm, sizeof(shm), "%s-shm", d->path);
    d->shm = open(shm, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(d->shm, 0);
}

static void db_commit(db_dir *d, int rows) { fx_wal_insert(d->db, rows, 1000); }

static void db_close(db_dir *d) {
    sqlite3_close(d->ckpt);
    sqlite3_close(d->db);
    close(d->shm); /* after the connections: it would drop their locks */
    fx_rmdir(d->dir);
}

Test(walshm, counts_match_what_sqlite_reports) {
    db_dir d;
    db_open(&d);
    walshm w;
    db_commit(&d, 50);
    cr_assert_eq(walshm_read(d.shm, &w), 0);
    cr_assert_eq(w.mx_frame, (uint32_t)d.hook_pages);
    cr_assert_eq(w.backfill, 0);
    cr_assert(!walshm_may_restart(&w));
    db_commit(&d, 30);
    cr_assert_eq(walshm_read(d.shm, &w), 0);
    cr_assert_eq(w.mx_frame, (uint32_t)d.hook_pages);
    int logged = -1, copied = -1;
    cr_assert_eq(
        sqlite3_wal_checkpoint_v2(d.ckpt, NULL, SQLITE_CHECKPOINT_PASSIVE, &logged, &copied),
        SQLITE_OK);
    cr_assert_eq(walshm_read(d.shm, &w), 0);
    cr_assert_eq(w.mx_frame, (uint32_t)logged);
    cr_assert_eq(w.backfill, (uint32_t)copied);
    cr_assert_eq(copied, logged);
    cr_assert(walshm_may_restart(&w));
    db_close(&d);
}

/* The guard's promise: when walshm says no, the next write appends (its
 * frames follow the old ones); when it says yes, the write may start over. */
Test(walshm, may_restart_predicts_the_next_write) {
    db_dir d;
    db_open(&d);
    walshm w;
    db_commit(&d, 40);
    /* A reader holding an old snapshot: the checkpoint cannot copy past it. */
    sqlite3 *reader;
    cr_assert_eq(sqlite3_open(d.path, &reader), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM t", NULL, NULL, NULL),
                 SQLITE_OK);
    db_commit(&d, 40);
    int before = d.hook_pages, logged = -1, copied = -1;
    cr_assert_eq(
        sqlite3_wal_checkpoint_v2(d.ckpt, NULL, SQLITE_CHECKPOINT_PASSIVE, &logged, &copied),
        SQLITE_OK);
    cr_assert_lt(copied, logged);
    cr_assert_eq(walshm_read(d.shm, &w), 0);
    cr_assert_eq(w.backfill, (uint32_t)copied);
    cr_assert(!walshm_may_restart(&w));
    cr_assert_eq(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    db_commit(&d, 1);
    cr_assert_gt(d.hook_pages, before, "the write restarted the WAL although walshm said no");
    /* Now copy everything: the next write starts the WAL over. */
    cr_assert_eq(
        sqlite3_wal_checkpoint_v2(d.ckpt, NULL, SQLITE_CHECKPOINT_PASSIVE, &logged, &copied),
        SQLITE_OK);
    cr_assert_eq(copied, logged);
    cr_assert_eq(walshm_read(d.shm, &w), 0);
    cr_assert(walshm_may_restart(&w));
    before = d.hook_pages;
    db_commit(&d, 1);
    cr_assert_lt(d.hook_pages, before, "a write after a complete checkpoint did not restart");
    cr_assert_eq(walshm_read(d.shm, &w), 0);
    cr_assert_eq(w.backfill, 0);
    cr_assert(!walshm_may_restart(&w));
    sqlite3_close(reader);
    db_close(&d);
}

Test(walshm, refuses_what_it_cannot_trust) {
    db_dir d;
    db_open(&d);
    db_commit(&d, 5);
    uint8_t buf[WALSHM_HEADER_LEN], bad[WALSHM_HEADER_LEN];
    cr_assert_eq(pread(d.shm, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
    walshm w;
    cr_assert_eq(walshm_parse(&w, buf, sizeof(buf)), 0);
    cr_assert_eq(walshm_parse(&w, buf, sizeof(buf) - 1), -1);
    memcpy(bad, buf, sizeof(bad));
    bad[12] = 0; /* isInit, both copies */
    bad[48 + 12] = 0;
    cr_assert_eq(walshm_parse(&w, bad, sizeof(bad)), -1);
    memcpy(bad, buf, sizeof(bad));
    bad[16] ^= 1; /* mxFrame in the first copy only: a header being written */
    cr_assert_eq(walshm_parse(&w, bad, sizeof(bad)), -1);
    memcpy(bad, buf, sizeof(bad));
    uint32_t big = w.mx_frame + 1; /* nBackfill past mxFrame */
    memcpy(bad + 96, &big, sizeof(big));
    cr_assert_eq(walshm_parse(&w, bad, sizeof(bad)), -1);
    memcpy(bad, buf, sizeof(bad));
    bad[0] ^= 0xff; /* another version */
    bad[48] ^= 0xff;
    cr_assert_eq(walshm_parse(&w, bad, sizeof(bad)), -1);
    cr_assert_eq(walshm_read(-1, &w), -1);
    db_close(&d);
}
