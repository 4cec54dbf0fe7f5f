/* The running node's id in the data directory. See nodeid.h. */
#include "cli/nodeid.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int nodeid_write(const char *dir, const char *id) {
    char path[4096], tmp[4112];
    snprintf(path, sizeof(path), "%s/node-id", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return WSG_E_IO;
    bool ok = fprintf(f, "%s\n", id) > 0;
    if (fclose(f) != 0) ok = false;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return WSG_E_IO;
    }
    return 0;
}

/* True when a server holds DIR's lock (datalock.h): a shared flock is
 * refused while its exclusive one is held. Taken and dropped at once. */
static bool server_running(const char *dir) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/wsgate.lock", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

int nodeid_read(const char *dir, char *out, size_t len) {
    if (len) out[0] = '\0';
    if (!server_running(dir)) return 1;
    char path[4096];
    snprintf(path, sizeof(path), "%s/node-id", dir);
    FILE *f = fopen(path, "r");
    if (!f) return WSG_E_IO;
    bool got = len > 1 && fgets(out, (int)len, f) != NULL;
    fclose(f);
    if (!got) return WSG_E_IO;
    out[strcspn(out, "\r\n")] = '\0';
    return out[0] ? 0 : WSG_E_IO;
}
