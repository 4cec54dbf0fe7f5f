#include "mgmt/credentials.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void random_string(char *out, size_t n, const char *alphabet) {
    size_t al = strlen(alphabet);
    unsigned char rnd[256];
    if (n > sizeof(rnd) || RAND_bytes(rnd, (int)n) != 1) abort();
    for (size_t i = 0; i < n; i++) out[i] = alphabet[rnd[i] % al];
    out[n] = '\0';
}

static void copy(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

/* create: generate and save the file when it does not exist (the server);
 * without it a missing file is an error (the CLI, which must not make keys
 * a server elsewhere would never accept). */
static int load(const config *cfg, mgmt_credentials *out, bool create, wsg_error *err) {
    memset(out, 0, sizeof(*out));
    copy(out->access_key_id, sizeof(out->access_key_id), cfg->management_access_key_id);
    copy(out->secret_access_key, sizeof(out->secret_access_key), cfg->management_secret_access_key);
    copy(out->bearer_key, sizeof(out->bearer_key), cfg->management_bearer_key);
    if (*out->access_key_id && *out->secret_access_key && *out->bearer_key) return 0;

    char path[4096];
    snprintf(path, sizeof(path), "%s/management-credentials.json", cfg->data_dir);
    json_error_t jerr;
    json_t *saved = json_load_file(path, 0, &jerr);
    if (!saved) {
        if (access(path, F_OK) == 0) {
            return wsg_error_set(err, WSG_E_IO, "cannot read %s: %s", path, jerr.text);
        }
        if (!create) {
            return wsg_error_set(err, WSG_E_MGMT_NO_CREDENTIALS,
                                 "no credentials in %s: start the server first or pass --data-dir",
                                 cfg->data_dir);
        }
        /* First start: make a key pair shaped like AWS's and a bearer key. */
        char akid[21], secret[41], bearer[44];
        memcpy(akid, "AKIA", 4);
        random_string(akid + 4, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
        random_string(secret, 40,
                      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
        random_string(bearer, 43,
                      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
        saved = json_pack("{s:s,s:s,s:s}", "access_key_id", akid, "secret_access_key", secret,
                          "bearer_key", bearer);
        char *txt = json_dumps(saved, JSON_INDENT(2));
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EEXIST) {
            /* Another process made it first: use theirs. */
            free(txt);
            json_decref(saved);
            return load(cfg, out, create, err);
        }
        size_t len = strlen(txt);
        bool ok = fd >= 0 && write(fd, txt, len) == (ssize_t)len && write(fd, "\n", 1) == 1 &&
                  fsync(fd) == 0;
        if (fd >= 0) close(fd);
        free(txt);
        if (!ok) {
            wsg_error_set(err, WSG_E_IO, "cannot write %s: %s", path, strerror(errno));
            json_decref(saved);
            return WSG_E_IO;
        }
    }
    const char *a = json_string_value(json_object_get(saved, "access_key_id"));
    const char *s = json_string_value(json_object_get(saved, "secret_access_key"));
    const char *b = json_string_value(json_object_get(saved, "bearer_key"));
    if (!a || !s || !b) {
        wsg_error_set(err, WSG_E_MGMT_CREDENTIALS,
                      "%s: missing access_key_id, secret_access_key or bearer_key", path);
        json_decref(saved);
        return WSG_E_MGMT_CREDENTIALS;
    }
    /* Configured values win over saved ones, one by one. */
    if (!*out->access_key_id || !*out->secret_access_key) {
        copy(out->access_key_id, sizeof(out->access_key_id), a);
        copy(out->secret_access_key, sizeof(out->secret_access_key), s);
    }
    if (!*out->bearer_key) copy(out->bearer_key, sizeof(out->bearer_key), b);
    json_decref(saved);
    return 0;
}

int mgmt_credentials_load(const config *cfg, mgmt_credentials *out, wsg_error *err) {
    return load(cfg, out, true, err);
}

int mgmt_credentials_read(const config *cfg, mgmt_credentials *out, wsg_error *err) {
    return load(cfg, out, false, err);
}
