/* Small file-system helpers. */
#ifndef WSGATE_COMMON_FS_H
#define WSGATE_COMMON_FS_H

/* Create directory `path` and its missing parents (mode 0755). Returns 0 when
 * it exists afterwards, -1 with errno set otherwise. */
int fs_mkdir_p(const char *path);

#endif
