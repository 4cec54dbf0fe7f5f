/* The running node's id in the data directory. See nodeid.h. */
#include "cli/nodeid.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* Write text to DIR/name through a file aside and a rename, so a reader
 * never sees half of it. Returns 0, or WSG_E_IO with errno set. */
static int write_atomic(const char *dir, const char *name, const char *text) {
    char path[4096], tmp[4112];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return WSG_E_IO;
    bool ok = fputs(text, f) >= 0;
    if (fclose(f) != 0) ok = false;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return WSG_E_IO;
    }
    return 0;
}

int nodeid_write(const char *dir, const char *id) {
    char line[256];
    snprintf(line, sizeof line, "%s\n", id);
    return write_atomic(dir, "node-id", line);
}

int nodeid_write_endpoint(const char *dir, const char *ws_url, const char *mgmt_url) {
    char text[2048];
    snprintf(text, sizeof text, "%s\n%s\n", ws_url, mgmt_url);
    return write_atomic(dir, "endpoint", text);
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

/* One line of f into out (len bytes) without its newline; false when none. */
static bool read_line(FILE *f, char *out, size_t len) {
    if (len < 2 || !fgets(out, (int)len, f)) return false;
    out[strcspn(out, "\r\n")] = '\0';
    return out[0] != '\0';
}

int nodeid_read_endpoint(const char *dir, char *ws, size_t wslen, char *mgmt, size_t mlen) {
    if (wslen) ws[0] = '\0';
    if (mlen) mgmt[0] = '\0';
    if (!server_running(dir)) return 1;
    char path[4096];
    snprintf(path, sizeof(path), "%s/endpoint", dir);
    FILE *f = fopen(path, "r");
    if (!f) return WSG_E_IO;
    bool got = read_line(f, ws, wslen) && read_line(f, mgmt, mlen);
    fclose(f);
    return got ? 0 : WSG_E_IO;
}
