#include "cli/datalock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int datalock_acquire(const char *dir, wsg_error *err) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/wsgate.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return wsg_error_set(err, WSG_E_IO, "cannot open %s: %s", path, strerror(errno));
    }
    /* flock, not fcntl locks: those belong to the process and vanish when
     * any descriptor of the file closes; a flock lives with this fd, and
     * the kernel drops it when the process dies, however it dies. */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno, rc;
        if (e == EWOULDBLOCK) {
            char buf[32] = {0};
            ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
            long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
            if (pid > 0)
                rc = wsg_error_set(
                    err, WSG_E_CLI_DATA_LOCKED,
                    "data directory %s is in use by another wsgate (pid %ld); stop it or "
                    "pass another --data-dir",
                    dir, pid);
            else
                rc = wsg_error_set(err, WSG_E_CLI_DATA_LOCKED,
                                   "data directory %s is in use by another wsgate; stop it or pass "
                                   "another --data-dir",
                                   dir);
        } else {
            rc = wsg_error_set(err, WSG_E_IO, "cannot lock %s: %s", path, strerror(e));
        }
        close(fd);
        return rc;
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    /* The PID is only advice for the error above; failing to write it does
     * not weaken the lock. */
    bool wrote = ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)len, 0) == len;
    (void)wrote;
    return fd;
}

void datalock_release(int fd) {
    if (fd >= 0) close(fd);
}
