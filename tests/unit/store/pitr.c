/* The store's CLI entry points (src/store/pitr.c) and store_open report
 * with the one error list: each failure returns its WSG_E_STORE_* code and
 * fills a wsg_error whose message names the file. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "store/store.h"
#include "fixture.h"

static char dir[64];

static void setup(void) { fx_tmpdir(dir, sizeof dir, "store-pitr"); }

static void teardown(void) { fx_rmdir(dir); }

static void path_in(char *out, size_t len, const char *name) {
    snprintf(out, len, "%s/%s", dir, name);
}

TestSuite(store_pitr, .init = setup, .fini = teardown);

Test(store_pitr, open_of_a_damaged_file_is_store_damaged) {
    char path[128];
    path_in(path, sizeof path, "store.db");
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 512; i++) fputs("not a database, not at all; ", f);
    fclose(f);
    uv_loop_t loop;
    uv_loop_init(&loop);
    store_options so = {0};
    wsg_error err = {0};
    cr_assert_null(store_open(path, &loop, &so, &err));
    cr_assert_eq(err.code, WSG_E_STORE_DAMAGED, "%s: %s", wsg_err_name(err.code), err.message);
    cr_assert_not_null(strstr(err.message, path), "%s", err.message);
    cr_assert_null(store_open(path, &loop, &so, NULL)); /* err may be NULL */
    uv_loop_close(&loop);
}

Test(store_pitr, export_of_no_file_is_store_missing) {
    char path[128];
    path_in(path, sizeof path, "absent.db");
    wsg_error err = {0};
    long n = store_export(path, NULL, "room", 0, 0, STORE_EXPORT_JSONL, stdout, &err);
    cr_assert_eq(n, WSG_E_STORE_MISSING);
    cr_assert_eq(err.code, WSG_E_STORE_MISSING);
    cr_assert_not_null(strstr(err.message, "no store at"), "%s", err.message);
}

Test(store_pitr, backup_of_no_file_is_store_read) {
    char path[128], out[128];
    path_in(path, sizeof path, "absent.db");
    path_in(out, sizeof out, "copy.db");
    wsg_error err = {0};
    cr_assert_eq(store_backup(path, out, &err), WSG_E_STORE_READ);
    cr_assert_eq(err.code, WSG_E_STORE_READ);
    cr_assert_not_null(strstr(err.message, path), "%s", err.message);
}

Test(store_pitr, restore_with_no_snapshot_is_store_window) {
    char path[128], pitr[128], out[128];
    path_in(path, sizeof path, "store.db");
    path_in(pitr, sizeof pitr, "pitr");
    path_in(out, sizeof out, "restored.db");
    cr_assert_eq(mkdir(pitr, 0700), 0);
    wsg_error err = {0};
    cr_assert_eq(store_restore(path, pitr, NULL, 1700000000, out, &err), WSG_E_STORE_WINDOW);
    cr_assert_eq(err.code, WSG_E_STORE_WINDOW);
    cr_assert_not_null(strstr(err.message, "no base snapshot"), "%s", err.message);
}

Test(store_pitr, backup_of_a_new_store_succeeds) {
    char path[128], out[128];
    path_in(path, sizeof path, "store.db");
    path_in(out, sizeof out, "copy.db");
    uv_loop_t loop;
    uv_loop_init(&loop);
    store_options so = {0};
    wsg_error err = {0};
    store *s = store_open(path, &loop, &so, &err);
    cr_assert_not_null(s, "%s", err.message);
    store_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    cr_assert_eq(store_backup(path, out, &err), 0, "%s", err.message);
    cr_assert_eq(access(out, F_OK), 0);
    FILE *sink = fopen("/dev/null", "w");
    cr_assert_not_null(sink);
    long n = store_export(out, NULL, "room", 0, 0, STORE_EXPORT_CSV, sink, &err);
    fclose(sink);
    cr_assert_eq(n, 0, "%s", err.message);
}
