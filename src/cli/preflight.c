#include "cli/preflight.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/auth.h"
#include "cli/outputs.h"
#include "common/netaddr.h"
#include "crypto/crypto.h"
#include "net/tls.h"

static bool set(const char *s) { return s && *s; }

int preflight_data_dir(const char *dir, wsg_error *err) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return wsg_error_set(err, WSG_E_IO,
                                 "data directory %s is not a directory; pass --data-dir DIR (a "
                                 "directory, or a path to create)",
                                 dir);
        if (access(dir, W_OK | X_OK) != 0)
            return wsg_error_set(err, WSG_E_IO,
                                 "data directory %s is not writable (%s); fix its permissions or "
                                 "pass another --data-dir",
                                 dir, strerror(errno));
        return 0;
    }
    if (errno != ENOENT && errno != ENOTDIR) /* ENOTDIR: a file on the way, said below */
        return wsg_error_set(err, WSG_E_IO, "data directory %s: %s", dir, strerror(errno));
    /* serve creates it: look at the nearest ancestor that exists. */
    char up[4096];
    snprintf(up, sizeof up, "%s", dir);
    for (;;) {
        char *slash = strrchr(up, '/');
        while (slash && slash > up && slash[1] == '\0') { /* "a/b/" */
            *slash = '\0';
            slash = strrchr(up, '/');
        }
        if (!slash) snprintf(up, sizeof up, ".");
        else if (slash == up) up[1] = '\0'; /* "/" */
        else *slash = '\0';
        if (stat(up, &st) == 0) break;
        if ((errno != ENOENT && errno != ENOTDIR) || strcmp(up, ".") == 0 || strcmp(up, "/") == 0)
            return wsg_error_set(err, WSG_E_IO, "cannot create data directory %s: %s: %s", dir, up,
                                 strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return wsg_error_set(err, WSG_E_IO,
                             "cannot create data directory %s: %s is not a directory; pass "
                             "another --data-dir",
                             dir, up);
    if (access(up, W_OK | X_OK) != 0)
        return wsg_error_set(err, WSG_E_IO,
                             "cannot create data directory %s: %s is not writable (%s); create "
                             "it yourself or pass another --data-dir",
                             dir, up, strerror(errno));
    return 0;
}

int preflight_files(const config *cfg, wsg_error *err) {
    int drc = preflight_data_dir(cfg->data_dir, err);
    if (drc < 0) return drc;
    /* The same openers serve uses, so check says what serve would say. */
    if (set(cfg->tls_cert_file)) {
        tls_ctx *t = tls_ctx_new(cfg->tls_cert_file, cfg->tls_key_file, err);
        if (!t) return err->code < 0 ? err->code : WSG_E_CONFIG_VALUE;
        tls_ctx_free(t);
    }
    if (cfg->auth_mode_id == CONFIG_AUTH_JWT) {
        authorizer *a = auth_jwt_new(cfg, err);
        if (!a) return err->code < 0 ? err->code : WSG_E_CONFIG_VALUE;
        a->destroy(a);
    }
    if (cfg->enable_encryption) {
        char *path = crypto_key_file_path(cfg->data_dir, cfg->kms_key_file);
        int rc = 0;
        /* Never create: serve creates the default file on its first start. */
        if (set(cfg->kms_key_file) || access(path, F_OK) == 0) {
            crypto_keyring *r = NULL;
            rc = crypto_keyring_open(path, false, &r, err);
            crypto_keyring_free(r);
        }
        free(path);
        if (rc < 0) return rc;
    }
    return 0;
}

/* The errno of a test bind to addr:port (SO_REUSEADDR, as serve binds), or
 * 0 when it succeeds or cannot be tried (an out-of-range port, a name that
 * is not a numeric address: the listen check says what is wrong there). */
static int test_bind_errno(const char *addr, int port) {
    if (port <= 0 || port > 65535) return 0;
    struct sockaddr_storage ss;
    socklen_t len = netaddr_numeric(addr, port, &ss);
    if (len == 0) return 0;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (struct sockaddr *)&ss, len) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

int preflight_port(const char *addr, int port, wsg_error *err) {
    if (test_bind_errno(addr, port) != EACCES) return 0;
    return wsg_error_set(err, WSG_E_CONFIG_LISTEN,
                         "cannot listen on %s:%d: permission denied (a port below 1024 needs root "
                         "or CAP_NET_BIND_SERVICE; pass --port 8080 or another above 1023)",
                         addr, port);
}

int preflight_port_free(const char *addr, int port, wsg_error *err) {
    if (test_bind_errno(addr, port) != EADDRINUSE) return 0;
    return wsg_error_set(err, WSG_E_CONFIG_LISTEN,
                         "port %d is already in use by another process (%s)", port, addr);
}

int preflight_existing(const config *cfg, bool store, wsg_error *err) {
    struct stat st;
    if (stat(cfg->data_dir, &st) != 0)
        return wsg_error_set(err, WSG_E_STORE_MISSING,
                             "no data directory %s: is --data-dir right? (wsgate serve creates it "
                             "on its first start)",
                             cfg->data_dir);
    if (!S_ISDIR(st.st_mode))
        return wsg_error_set(err, WSG_E_STORE_MISSING,
                             "data directory %s is not a directory: is --data-dir right?",
                             cfg->data_dir);
    char db[4096];
    outputs_data_file(cfg, db, sizeof db);
    if (store && access(db, F_OK) != 0)
        return wsg_error_set(err, WSG_E_STORE_MISSING,
                             "no store at %s: is --data-dir right, and project_name and "
                             "environment as serve had them? (wsgate serve creates it on its "
                             "first start)",
                             db);
    return 0;
}

int preflight_out_file(const char *path, wsg_error *err) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return wsg_error_set(err, WSG_E_IO, "--out %s is a directory; name a file (%s/backup.db)",
                             path, path);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return 0; /* the current directory */
    if (slash == dir) slash[1] = '\0';
    else *slash = '\0';
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return wsg_error_set(err, WSG_E_IO, "--out %s: directory %s does not exist", path, dir);
    return 0;
}
