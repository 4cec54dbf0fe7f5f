/* The data directory's lock and the node id file (src/cli/datalock.c,
 * src/cli/nodeid.c): their failures are WSG_E_* codes, the detail in the
 * wsg_error message. flock(2) locks belong to the open file description,
 * so a second acquire in this process meets the first one's lock as a
 * second server would. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/datalock.h"
#include "cli/nodeid.h"
#include "common/fs.h"

static char *temp_dir(void) {
    char *d = strdup("/tmp/wsgate-datalock-XXXXXX");
    cr_assert_not_null(mkdtemp(d));
    return d;
}

static void remove_dir(char *d) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
    free(d);
}

Test(datalock, second_holder_is_refused_with_the_pid) {
    char *d = temp_dir();
    wsg_error err = {0};
    int fd = datalock_acquire(d, &err);
    cr_assert_geq(fd, 0, "%s", err.message);
    int again = datalock_acquire(d, &err);
    cr_assert_eq(again, WSG_E_CLI_DATA_LOCKED, "%s", wsg_err_name(again));
    cr_assert_eq(err.code, WSG_E_CLI_DATA_LOCKED);
    char pid[64];
    snprintf(pid, sizeof pid, "(pid %ld)", (long)getpid());
    cr_assert_not_null(strstr(err.message, pid), "%s", err.message);
    cr_assert_not_null(strstr(err.message, d), "%s", err.message);
    /* A NULL err is allowed: the code alone. */
    cr_assert_eq(datalock_acquire(d, NULL), WSG_E_CLI_DATA_LOCKED);
    datalock_release(fd);
    fd = datalock_acquire(d, &err);
    cr_assert_geq(fd, 0, "%s", err.message);
    datalock_release(fd);
    remove_dir(d);
}

Test(datalock, missing_directory_is_an_io_error) {
    wsg_error err = {0};
    int rc = datalock_acquire("/nonexistent/wsgate-datalock", &err);
    cr_assert_eq(rc, WSG_E_IO);
    cr_assert_eq(err.code, WSG_E_IO);
    cr_assert(strncmp(err.message, "cannot open /nonexistent/wsgate-datalock/wsgate.lock: ", 54) ==
                  0,
              "%s", err.message);
}

Test(nodeid, codes) {
    char *d = temp_dir();
    char id[64];
    /* No server holds the lock: not an error, 1. */
    cr_assert_eq(nodeid_read(d, id, sizeof id), 1);
    int fd = datalock_acquire(d, NULL);
    cr_assert_geq(fd, 0);
    /* A server runs but wrote no id. */
    cr_assert_eq(nodeid_read(d, id, sizeof id), WSG_E_IO);
    cr_assert_eq(nodeid_write(d, "node-7"), 0);
    cr_assert_eq(nodeid_read(d, id, sizeof id), 0);
    cr_assert_str_eq(id, "node-7");
    datalock_release(fd);
    errno = 0;
    cr_assert_eq(nodeid_write("/nonexistent/wsgate-nodeid", "x"), WSG_E_IO);
    cr_assert_eq(errno, ENOENT);
    remove_dir(d);
}

Test(fs, mkdir_p_codes) {
    char *d = temp_dir();
    char path[256];
    snprintf(path, sizeof path, "%s/a/b/c", d);
    cr_assert_eq(fs_mkdir_p(path), 0);
    cr_assert_eq(fs_mkdir_p(path), 0, "an existing directory is fine");
    /* A parent that is a file. */
    snprintf(path, sizeof path, "%s/file", d);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/file/sub", d);
    errno = 0;
    cr_assert_eq(fs_mkdir_p(path), WSG_E_IO);
    cr_assert_eq(errno, ENOTDIR);
    remove_dir(d);
}
