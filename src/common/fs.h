/* Small file-system helpers. */
#ifndef WSGATE_COMMON_FS_H
#define WSGATE_COMMON_FS_H

#include "common/error.h"

/* Create directory `path` and its missing parents (mode 0755). Returns 0 when
 * it exists afterwards, WSG_E_IO with errno set (the mkdir's) otherwise. */
int fs_mkdir_p(const char *path);

#endif
