/* The running node's id file (src/cli/nodeid.c): "no server" is not an
 * error; a server without a readable id, or a file that cannot be written,
 * is WSG_E_IO with errno kept. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/datalock.h"
#include "cli/nodeid.h"
#include "../testdir.h"

Test(nodeid, codes) {
    char *d = testdir_make("nodeid");
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
    testdir_free(d);
}

Test(nodeid, endpoint) {
    char *d = testdir_make("nodeid");
    char ws[128], mgmt[128];
    cr_assert_eq(
        nodeid_write_endpoint(d, "ws://127.0.0.1:9000/staging", "http://127.0.0.1:9000/staging"),
        0);
    /* Written, but no server holds the lock: a past process's URLs. */
    cr_assert_eq(nodeid_read_endpoint(d, ws, sizeof ws, mgmt, sizeof mgmt), 1);
    cr_assert_str_eq(ws, "");
    int fd = datalock_acquire(d, NULL);
    cr_assert_geq(fd, 0);
    cr_assert_eq(nodeid_read_endpoint(d, ws, sizeof ws, mgmt, sizeof mgmt), 0);
    cr_assert_str_eq(ws, "ws://127.0.0.1:9000/staging");
    cr_assert_str_eq(mgmt, "http://127.0.0.1:9000/staging");
    /* The id beside it is a file of its own. */
    cr_assert_eq(nodeid_write(d, "local"), 0);
    cr_assert_eq(nodeid_read_endpoint(d, ws, sizeof ws, mgmt, sizeof mgmt), 0);
    datalock_release(fd);
    testdir_free(d);
}
