/* The data directory's lock (src/cli/datalock.c): its failures are WSG_E_*
 * codes, the detail in the wsg_error message. flock(2) locks belong to the
 * open file description, so a second acquire in this process meets the
 * first one's lock as a second server would. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/datalock.h"
#include "../testdir.h"

Test(datalock, second_holder_is_refused_with_the_pid) {
    char *d = testdir_make("datalock");
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
    testdir_free(d);
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
