/* Unit tests for src/store/walframe.c, the WAL reader: on a real WAL that
 * SQLite writes (a temp dir, autocheckpoint off, the connection kept open
 * so the log stays), cut, damaged and restarted. And the archive's record
 * splitter (archive.h). */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "store/archive.h"
#include "store/walframe.h"
#include "fixture.h"

typedef struct wal_file {
    char dir[64];
    char path[128];
    sqlite3 *db;
} wal_file;

static void wal_open(wal_file *w) {
    fx_tmpdir(w->dir, sizeof(w->dir), "walf");
    snprintf(w->path, sizeof(w->path), "%s/t.db", w->dir);
    w->db = fx_wal_db(w->path);
}

/* One transaction inserting n rows of `size` bytes. */
static void wal_commit(wal_file *w, int n, int size) { fx_wal_insert(w->db, n, size); }

static uint8_t *wal_read(wal_file *w, size_t *len) {
    char p[160];
    snprintf(p, sizeof(p), "%s-wal", w->path);
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len ? *len : 1);
    cr_assert_eq(fread(buf, 1, *len, f), *len);
    fclose(f);
    return buf;
}

static void wal_close(wal_file *w) {
    sqlite3_close(w->db);
    fx_rmdir(w->dir);
}

/* The commit frames among the first n bytes of frames, as walf_scan counts. */
static int commits_in(const walf *w, const uint8_t *frames, size_t n) {
    int c = 0;
    for (size_t off = 0; off < n; off += walf_frame_len(w))
        if (walf_frame_commit(frames + off)) c++;
    return c;
}

Test(walframe, reads_every_commit_of_a_real_log) {
    wal_file f;
    wal_open(&f);
    wal_commit(&f, 10, 100);
    wal_commit(&f, 40, 500);
    wal_commit(&f, 1, 10);
    size_t len;
    uint8_t *buf = wal_read(&f, &len);
    walf w;
    cr_assert_eq(walf_header(&w, buf, len), 0);
    cr_assert_eq(w.page_size, 4096);
    size_t n = walf_scan(&w, buf + WALF_HEADER_LEN, len - WALF_HEADER_LEN);
    /* Every frame in the file is committed: the whole log is counted. */
    cr_assert_eq(n, len - WALF_HEADER_LEN);
    cr_assert_eq(w.frames, n / walf_frame_len(&w));
    /* The CREATE TABLE and the three inserts. */
    cr_assert_eq(commits_in(&w, buf + WALF_HEADER_LEN, n), 4);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(f.db, "PRAGMA page_count", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(w.db_pages, (uint32_t)sqlite3_column_int(st, 0));
    sqlite3_finalize(st);
    /* Nothing more: a second scan of no bytes leaves it. */
    walf again = w;
    cr_assert_eq(walf_scan(&again, buf, 0), 0);
    cr_assert_eq(again.frames, w.frames);
    free(buf);
    wal_close(&f);
}

Test(walframe, continues_from_where_it_stopped) {
    wal_file f;
    wal_open(&f);
    wal_commit(&f, 20, 300);
    size_t len1;
    uint8_t *buf = wal_read(&f, &len1);
    walf w;
    cr_assert_eq(walf_header(&w, buf, len1), 0);
    cr_assert_eq(walf_scan(&w, buf + WALF_HEADER_LEN, len1 - WALF_HEADER_LEN),
                 len1 - WALF_HEADER_LEN);
    free(buf);
    uint64_t first = w.frames;
    wal_commit(&f, 20, 300);
    size_t len2;
    buf = wal_read(&f, &len2);
    cr_assert_gt(len2, len1);
    /* Only the new frames, with the running checksum carried over. */
    size_t n = walf_scan(&w, buf + len1, len2 - len1);
    cr_assert_eq(n, len2 - len1);
    cr_assert_gt(w.frames, first);
    free(buf);
    wal_close(&f);
}

Test(walframe, stops_at_the_last_whole_commit) {
    wal_file f;
    wal_open(&f);
    wal_commit(&f, 5, 100);
    size_t len1;
    uint8_t *buf1 = wal_read(&f, &len1);
    free(buf1);
    wal_commit(&f, 60, 1000); /* several frames, the last one the commit */
    size_t len;
    uint8_t *buf = wal_read(&f, &len);
    walf w;
    cr_assert_eq(walf_header(&w, buf, len), 0);
    size_t flen = walf_frame_len(&w);
    /* Cut inside the second transaction (its commit frame missing, and
     * half a frame): only the first transaction counts. */
    walf cut = w;
    size_t n = walf_scan(&cut, buf + WALF_HEADER_LEN, len - WALF_HEADER_LEN - flen - flen / 2);
    cr_assert_eq(n, len1 - WALF_HEADER_LEN);
    /* A flipped byte in a page of the second transaction breaks the
     * checksum chain there. */
    walf dmg = w;
    buf[len1 + flen + WALF_FRAME_HEADER_LEN + 77] ^= 1;
    cr_assert_eq(walf_scan(&dmg, buf + WALF_HEADER_LEN, len - WALF_HEADER_LEN),
                 len1 - WALF_HEADER_LEN);
    buf[len1 + flen + WALF_FRAME_HEADER_LEN + 77] ^= 1;
    /* Another generation's salts end the log too. */
    walf other = w;
    other.salt[0]++;
    cr_assert_eq(walf_scan(&other, buf + WALF_HEADER_LEN, len - WALF_HEADER_LEN), 0);
    cr_assert_eq(other.frames, 0);
    free(buf);
    wal_close(&f);
}

Test(walframe, a_restarted_log_has_new_salts) {
    wal_file f;
    wal_open(&f);
    wal_commit(&f, 5, 100);
    size_t len;
    uint8_t *buf = wal_read(&f, &len);
    walf a;
    cr_assert_eq(walf_header(&a, buf, len), 0);
    free(buf);
    cr_assert_eq(sqlite3_wal_checkpoint_v2(f.db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL),
                 SQLITE_OK);
    wal_commit(&f, 1, 10); /* rewrites the log from its start */
    buf = wal_read(&f, &len);
    walf b;
    cr_assert_eq(walf_header(&b, buf, len), 0);
    cr_assert(a.salt[0] != b.salt[0] || a.salt[1] != b.salt[1]);
    /* The old position's salts do not read the new frames. */
    walf stale = a;
    stale.frames = 0;
    cr_assert_eq(walf_scan(&stale, buf + WALF_HEADER_LEN, len - WALF_HEADER_LEN), 0);
    cr_assert_gt(walf_scan(&b, buf + WALF_HEADER_LEN, len - WALF_HEADER_LEN), 0);
    free(buf);
    wal_close(&f);
}

Test(walframe, refuses_bad_headers) {
    wal_file f;
    wal_open(&f);
    wal_commit(&f, 1, 10);
    size_t len;
    uint8_t *buf = wal_read(&f, &len);
    walf w;
    cr_assert_eq(walf_header(&w, buf, WALF_HEADER_LEN - 1), -1);
    for (size_t i = 0; i < 24; i++) {
        buf[i] ^= 0x10; /* every field is covered by the magic, version or checksum */
        cr_assert_eq(walf_header(&w, buf, len), -1, "byte %zu", i);
        buf[i] ^= 0x10;
    }
    cr_assert_eq(walf_header(&w, buf, len), 0);
    free(buf);
    wal_close(&f);
}

Test(archive, record_split) {
    uint8_t rec[8 + 5] = {0, 0, 0, 5, 0, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'};
    walf_put32(rec + 4, (uint32_t)crc32(0, rec + 8, 5));
    const uint8_t *body;
    size_t blen, used;
    cr_assert_eq(archive_record_split(rec, sizeof(rec), &body, &blen, &used), 1);
    cr_assert_eq(blen, 5);
    cr_assert_eq(used, sizeof(rec));
    cr_assert_eq(memcmp(body, "hello", 5), 0);
    /* A tail still being written (or torn). */
    for (size_t n = 0; n < sizeof(rec); n++)
        cr_assert_eq(archive_record_split(rec, n, &body, &blen, &used), 0);
    rec[10] ^= 1;
    cr_assert_eq(archive_record_split(rec, sizeof(rec), &body, &blen, &used), -1);
    walf_put32(rec, ARCHIVE_RECORD_MAX + 1);
    cr_assert_eq(archive_record_split(rec, sizeof(rec), &body, &blen, &used), -1);
}

Test(archive, page_delta_round_trip) {
    enum { PS = 4096 };
    uint8_t old[PS], page[PS], out[PS], back[PS];
    srand(7);
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < PS; i++) old[i] = (uint8_t)rand();
        memcpy(page, old, PS);
        /* A few runs changed, some close together, some at the edges. */
        int changes = rand() % 12;
        for (int c = 0; c < changes; c++) {
            int at = rand() % PS, n = 1 + rand() % 300;
            for (int i = at; i < at + n && i < PS; i++)
                page[i] = (uint8_t)(page[i] + 1 + rand() % 255);
        }
        if (round % 50 == 0) page[0] ^= 1, page[PS - 1] ^= 1;
        size_t d = archive_delta_encode(old, page, PS, out, sizeof(out));
        if (!d) continue; /* more changed than a whole page costs */
        memcpy(back, old, PS);
        cr_assert_eq(archive_delta_apply(back, PS, out, d), (int)d);
        cr_assert_eq(memcmp(back, page, PS), 0, "round %d", round);
        /* Cut anywhere: refused, never read past the end. */
        if (d > 2) cr_assert_eq(archive_delta_apply(back, PS, out, d - 1), -1);
    }
    /* No change: no runs. */
    cr_assert_eq(archive_delta_encode(old, old, PS, out, sizeof(out)), 2);
    /* Everything changed: not worth a delta. */
    for (int i = 0; i < PS; i++) page[i] = (uint8_t)~old[i];
    cr_assert_eq(archive_delta_encode(old, page, PS, out, sizeof(out)), 0);
    /* A run past the page is refused. */
    uint8_t bad[6] = {0, 1, 0x0f, 0xff, 0x00, 0x02};
    cr_assert_eq(archive_delta_apply(back, PS, bad, sizeof(bad)), -1);
}

/* A record's inner bytes (unsealed): type, raw length, then raw compressed
 * with zlib (the first archives) or zstd (type | 0x80, since). */
static size_t inner_record(uint8_t *out, size_t cap, int type, bool zstd, const uint8_t *raw,
                           size_t n) {
    out[0] = (uint8_t)(zstd ? type | 0x80 : type);
    walf_put32(out + 1, (uint32_t)n);
    if (zstd) {
        size_t z = ZSTD_compress(out + 5, cap - 5, raw, n, 1);
        cr_assert(!ZSTD_isError(z));
        return 5 + z;
    }
    uLongf z = cap - 5;
    cr_assert_eq(compress2(out + 5, &z, raw, n, 1), Z_OK);
    return 5 + z;
}

Test(archive, reads_zlib_and_zstd_records) {
    uint8_t raw[3000], rec[4096];
    for (size_t i = 0; i < sizeof(raw); i++) raw[i] = (uint8_t)(i % 7 == 0 ? i * 31 : 0);
    for (int zstd = 0; zstd <= 1; zstd++) {
        size_t n = inner_record(rec, sizeof(rec), 'C', zstd, raw, sizeof(raw));
        int type = 0;
        uint8_t *out = NULL;
        size_t out_len = 0;
        wsg_error err = {0};
        cr_assert_eq(
            archive_record_open(NULL, 0, "wal-1-1-1.pitr", 3, rec, n, &type, &out, &out_len, &err),
            0, "%s", err.message);
        cr_assert_eq(type, 'C');
        cr_assert_eq(out_len, sizeof(raw));
        cr_assert_eq(memcmp(out, raw, sizeof(raw)), 0);
        free(out);
        /* A frame cut short, or a length that does not match, is refused. */
        cr_assert_eq(archive_record_open(NULL, 0, "f", 0, rec, n - 3, &type, &out, &out_len, &err),
                     WSG_E_STORE_ARCHIVE);
        cr_assert_null(out);
        walf_put32(rec + 1, (uint32_t)sizeof(raw) + 1);
        cr_assert_eq(archive_record_open(NULL, 0, "f", 0, rec, n, &type, &out, &out_len, &err),
                     WSG_E_STORE_ARCHIVE);
        cr_assert_null(out);
    }
}
