#include "common/fs.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "common/alloc.h"

int fs_mkdir_p(const char *path) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            errno = e;
            return WSG_E_IO;
        }
        *s = '/';
    }
    int r = mkdir(p, 0755);
    int e = errno;
    free(p);
    errno = e;
    return (r == 0 || e == EEXIST) ? 0 : WSG_E_IO;
}
