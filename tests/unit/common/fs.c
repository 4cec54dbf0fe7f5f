/* fs_mkdir_p (src/common/fs.c): WSG_E_IO with the mkdir's errno. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fs.h"
#include "../testdir.h"

Test(fs, mkdir_p_codes) {
    char *d = testdir_make("fs");
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
    testdir_free(d);
}
