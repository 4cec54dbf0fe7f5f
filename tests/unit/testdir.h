/* A temporary directory for a unit test, removed at its end. Shared by the
 * test files that touch the file system; the Makefile builds each .c file
 * under tests/unit/<module>/ as one test, and this header is not one. */
#ifndef WSGATE_TESTS_TESTDIR_H
#define WSGATE_TESTS_TESTDIR_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

/* Makes /tmp/wsgate-<tag>-XXXXXX and returns its path, which the caller
 * owns (free with testdir_free); fails the test if it cannot. */
static inline char *testdir_make(const char *tag) {
    char *d = malloc(64);
    cr_assert_not_null(d);
    snprintf(d, 64, "/tmp/wsgate-%s-XXXXXX", tag);
    cr_assert_not_null(mkdtemp(d), "%s", d);
    return d;
}

/* Removes d and everything below it; fails the test if it cannot. */
static inline void testdir_remove(const char *d) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
}

/* Removes d (as testdir_remove) and frees the path testdir_make gave. */
static inline void testdir_free(char *d) {
    testdir_remove(d);
    free(d);
}

#endif
