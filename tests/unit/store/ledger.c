/* Unit tests for src/store/ledger.c, the verified-files ledger: its text
 * round-trips, anything cut, altered or out of form is refused whole (a
 * start then checks every file), and a saved file loads back. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/ledger.h"
#include "fixture.h"

static ledger sample(void) {
    ledger l = {0};
    l.has_db = true;
    l.db = (ledger_id){.size = 4096, .ino = 77, .mtime_s = 1796297637, .mtime_ns = 123456789};
    l.has_gen = true;
    l.gen_salt[0] = UINT32_MAX;
    l.gen_salt[1] = 3;
    l.gen_frames = 1ull << 33;
    ledger_file snap = {.name = "snap-1-1796297637762.pitr", .last = 'E', .ended = true};
    snap.id = (ledger_id){.size = 693, .ino = 9, .mtime_s = 1, .mtime_ns = 2};
    ledger_put(&l, &snap);
    ledger_file seg = {.name = "wal-1-0-1796297637770.pitr", .last = 'Z', .has_pos = true};
    seg.id = (ledger_id){.size = 1u << 30, .ino = 10, .mtime_s = -5, .mtime_ns = 999999999};
    seg.pos = (walf){.page_size = 4096,
                     .salt = {0xdeadbeef, 1},
                     .cksum = {2, UINT32_MAX},
                     .big_endian = true,
                     .frames = 1ull << 40,
                     .db_pages = 12345};
    seg.has_close = true;
    for (int i = 0; i < LEDGER_CLOSE_LEN; i++) seg.close[i] = (uint8_t)(i * 37);
    seg.records = 7;
    ledger_put(&l, &seg);
    ledger_file open = {.name = "wal-2-0-1796297637999.pitr", .last = 'K', .records = UINT32_MAX};
    open.open = true;
    open.id = (ledger_id){.size = 65536, .ino = 11};
    ledger_put(&l, &open);
    return l;
}

static void same(const ledger *a, const ledger *b) {
    cr_assert_eq(a->has_db, b->has_db);
    cr_assert(ledger_id_eq(&a->db, &b->db));
    cr_assert_eq(a->has_gen, b->has_gen);
    cr_assert_eq(a->gen_salt[0], b->gen_salt[0]);
    cr_assert_eq(a->gen_salt[1], b->gen_salt[1]);
    cr_assert_eq(a->gen_frames, b->gen_frames);
    cr_assert_eq(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const ledger_file *x = &a->files[i], *y = ledger_find(b, a->files[i].name);
        cr_assert_not_null(y);
        cr_assert(ledger_id_eq(&x->id, &y->id));
        cr_assert_eq(x->last, y->last);
        cr_assert_eq(x->ended, y->ended);
        cr_assert_eq(x->has_pos, y->has_pos);
        cr_assert_eq(memcmp(&x->pos.salt, &y->pos.salt, sizeof(x->pos.salt)), 0);
        cr_assert_eq(memcmp(&x->pos.cksum, &y->pos.cksum, sizeof(x->pos.cksum)), 0);
        cr_assert_eq(x->pos.frames, y->pos.frames);
        cr_assert_eq(x->pos.page_size, y->pos.page_size);
        cr_assert_eq(x->pos.db_pages, y->pos.db_pages);
        cr_assert_eq(x->pos.big_endian, y->pos.big_endian);
        cr_assert_eq(x->has_close, y->has_close);
        cr_assert_eq(memcmp(x->close, y->close, LEDGER_CLOSE_LEN), 0);
        cr_assert_eq(x->records, y->records);
        cr_assert_eq(x->open, y->open);
    }
}

Test(ledger, round_trips) {
    ledger l = sample(), back = {0};
    size_t len;
    char *text = ledger_format(&l, &len);
    cr_assert_eq(ledger_parse(&back, text, len), 0, "%.*s", (int)len, text);
    same(&l, &back);
    free(text);
    ledger_free(&l);
    ledger_free(&back);
}

Test(ledger, an_empty_ledger_is_one) {
    ledger l = {0}, back = sample();
    size_t len;
    char *text = ledger_format(&l, &len);
    cr_assert_eq(ledger_parse(&back, text, len), 0);
    cr_assert_eq(back.n, 0);
    cr_assert(!back.has_db);
    free(text);
}

Test(ledger, anything_cut_or_altered_is_refused_whole) {
    ledger l = sample(), back = {0};
    size_t len;
    char *text = ledger_format(&l, &len);
    /* Every cut short of the whole. */
    for (size_t n = 0; n < len; n++) {
        cr_assert_eq(ledger_parse(&back, text, n), -1, "cut at %zu", n);
        cr_assert_eq(back.n, 0);
    }
    /* Every byte changed: the CRC (or the form) refuses it. */
    for (size_t i = 0; i < len; i++) {
        char keep = text[i];
        text[i] = keep == '7' ? '8' : '7';
        cr_assert_eq(ledger_parse(&back, text, len), -1, "byte %zu", i);
        text[i] = keep;
    }
    /* Something after the end line. */
    char *more = malloc(len + 2);
    memcpy(more, text, len);
    memcpy(more + len, "x\n", 2);
    cr_assert_eq(ledger_parse(&back, more, len + 2), -1);
    free(more);
    free(text);
    ledger_free(&l);
}

Test(ledger, names_that_leave_the_directory_are_refused) {
    ledger l = {0}, back = {0};
    ledger_file f = {.name = "../keys.json"};
    ledger_put(&l, &f);
    size_t len;
    char *text = ledger_format(&l, &len);
    cr_assert_eq(ledger_parse(&back, text, len), -1);
    free(text);
    ledger_free(&l);
}

Test(ledger, put_replaces_and_remove_removes) {
    ledger l = sample();
    ledger_file f = *ledger_find(&l, "snap-1-1796297637762.pitr");
    f.id.size = 1;
    ledger_put(&l, &f);
    cr_assert_eq(l.n, 3);
    cr_assert_eq(ledger_find(&l, f.name)->id.size, 1);
    ledger_remove(&l, f.name);
    cr_assert_eq(l.n, 2);
    cr_assert_null(ledger_find(&l, f.name));
    ledger_free(&l);
}

Test(ledger, saves_and_loads) {
    char dir[64], path[128];
    fx_tmpdir(dir, sizeof dir, "ledger");
    snprintf(path, sizeof path, "%s/verified", dir);
    ledger l = sample(), back = {0};
    cr_assert_eq(ledger_load(&back, path), -1); /* none yet */
    cr_assert_eq(ledger_save(&l, path), 0);
    cr_assert_eq(ledger_load(&back, path), 0);
    same(&l, &back);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    ledger_free(&l);
    ledger_free(&back);
    fx_rmdir(dir);
}
