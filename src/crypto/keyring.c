/* The key ring: the key file (parse, render, atomic durable writes),
 * opening, rotation and destruction of retired keys. See crypto.h for the
 * formats and the threading rules, internal.h for the ring's structure. */
#include "crypto/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/error.h"
#include "crypto/internal.h"

/* ------------------------------------------------------------ helpers */

static void keyset_free(keyset *s) {
    if (!s) return;
    if (s->keys) {
        OPENSSL_cleanse(s->keys, s->n * sizeof(*s->keys));
        free(s->keys);
    }
    free(s);
}

static int key_cmp(const void *a, const void *b) {
    uint32_t x = ((const ring_key *)a)->id, y = ((const ring_key *)b)->id;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------ key file text */

/* Parse keys[i] of the key file at path into *rk. Returns 0, or
 * WSG_E_CRYPTO_KEY_FILE with err filled. */
static int parse_key(const char *path, json_t *k, size_t i, ring_key *rk, wsg_error *err) {
    json_t *id = json_object_get(k, "id"); /* NULL when k is not an object */
    if (!json_is_object(k) || !json_is_integer(id) || json_integer_value(id) < 1 ||
        json_integer_value(id) > (json_int_t)UINT32_MAX) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                      "key file %s: keys[%zu] needs an \"id\" in 1..%" PRIu32, path, i, UINT32_MAX);
        return WSG_E_CRYPTO_KEY_FILE;
    }
    rk->id = (uint32_t)json_integer_value(id);
    json_t *kv = json_object_get(k, "key");
    if (!json_is_string(kv)) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                      "key file %s: key %" PRIu32 " has no \"key\" string", path, rk->id);
        return WSG_E_CRYPTO_KEY_FILE;
    }
    uint8_t tmp[CRYPTO_KEY_LEN + 3];
    long got =
        base64_decode(json_string_value(kv), json_string_length(kv), tmp, sizeof(tmp), BASE64_STD);
    if (got >= 0 && got == CRYPTO_KEY_LEN) memcpy(rk->key, tmp, CRYPTO_KEY_LEN);
    OPENSSL_cleanse(tmp, sizeof(tmp));
    if (got != CRYPTO_KEY_LEN) {
        if (got < 0)
            wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                          "key file %s: key %" PRIu32 " is not base64 of %d bytes", path, rk->id,
                          CRYPTO_KEY_LEN);
        else
            wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                          "key file %s: key %" PRIu32 " is %ld bytes, expected %d", path, rk->id,
                          got, CRYPTO_KEY_LEN);
        return WSG_E_CRYPTO_KEY_FILE;
    }
    json_t *cr = json_object_get(k, "created");
    if (!json_is_integer(cr)) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                      "key file %s: key %" PRIu32 " needs an integer \"created\"", path, rk->id);
        return WSG_E_CRYPTO_KEY_FILE;
    }
    rk->created = json_integer_value(cr);
    json_t *rt = json_object_get(k, "retired");
    if (rt && !json_is_null(rt)) {
        if (!json_is_integer(rt)) {
            wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                          "key file %s: key %" PRIu32 " \"retired\" must be a Unix time or null",
                          path, rk->id);
            return WSG_E_CRYPTO_KEY_FILE;
        }
        rk->retired = true;
        rk->retired_at = json_integer_value(rt);
    }
    return 0;
}

/* Parse and validate key file text. Returns 0 with *out and index_key set,
 * or -1 with err filled (naming `path`). */
static int parse_ring(const char *path, const char *text, size_t n, keyset **out,
                      uint8_t index_key[CRYPTO_KEY_LEN], wsg_error *err) {
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    keyset *s = NULL;
    if (!root) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE, "key file %s: malformed JSON at line %d: %s",
                      path, jerr.line, jerr.text);
        return WSG_E_CRYPTO_KEY_FILE;
    }
    if (!json_is_object(root)) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE, "key file %s: expected a JSON object", path);
        goto fail;
    }
    json_t *ver = json_object_get(root, "version");
    if (!json_is_integer(ver) || json_integer_value(ver) != 1) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE, "key file %s: \"version\" must be 1", path);
        goto fail;
    }
    json_t *act = json_object_get(root, "active");
    if (!json_is_integer(act) || json_integer_value(act) < 1 ||
        json_integer_value(act) > (json_int_t)UINT32_MAX) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                      "key file %s: \"active\" must be a key id (1..%" PRIu32 ")", path,
                      UINT32_MAX);
        goto fail;
    }
    json_t *ik = json_object_get(root, "index_key");
    if (!json_is_string(ik) ||
        base64_decode(json_string_value(ik), json_string_length(ik), index_key, CRYPTO_KEY_LEN,
                      BASE64_STD) != CRYPTO_KEY_LEN) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                      "key file %s: \"index_key\" must be base64 of %d bytes", path,
                      CRYPTO_KEY_LEN);
        goto fail;
    }
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_array(keys) || json_array_size(keys) == 0 ||
        json_array_size(keys) > RING_MAX_KEYS) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                      "key file %s: \"keys\" must be an array of 1..%d keys", path, RING_MAX_KEYS);
        goto fail;
    }
    s = xcalloc(1, sizeof(*s));
    s->n = json_array_size(keys);
    s->keys = xcalloc(s->n, sizeof(*s->keys));
    s->active = (uint32_t)json_integer_value(act);
    for (size_t i = 0; i < s->n; i++)
        if (parse_key(path, json_array_get(keys, i), i, &s->keys[i], err) != 0) goto fail;
    qsort(s->keys, s->n, sizeof(*s->keys), key_cmp);
    for (size_t i = 1; i < s->n; i++) {
        if (s->keys[i].id == s->keys[i - 1].id) {
            wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE, "key file %s: duplicate key id %" PRIu32,
                          path, s->keys[i].id);
            goto fail;
        }
    }
    const ring_key *a = keyset_find(s, s->active);
    if (!a) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                      "key file %s: active key %" PRIu32 " is not in \"keys\"", path, s->active);
        goto fail;
    }
    if (a->retired) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                      "key file %s: active key %" PRIu32 " is marked retired", path, s->active);
        goto fail;
    }
    json_decref(root);
    *out = s;
    return 0;
fail:
    OPENSSL_cleanse(index_key, CRYPTO_KEY_LEN);
    keyset_free(s);
    json_decref(root);
    return WSG_E_CRYPTO_KEY_FILE;
}

/* Render a key file; malloc'd, NUL-terminated, *len set. The caller
 * cleanses and frees it. */
static char *render_ring(const keyset *s, const uint8_t index_key[CRYPTO_KEY_LEN], size_t *len) {
    size_t cap = 256 + s->n * 192;
    char *buf = xmalloc(cap);
    char b64[4 * ((CRYPTO_KEY_LEN + 2) / 3) + 1];
    size_t o = 0;
    base64_encode(index_key, CRYPTO_KEY_LEN, b64, BASE64_STD);
    o += (size_t)snprintf(buf + o, cap - o,
                          "{\n  \"version\": 1,\n  \"active\": %" PRIu32
                          ",\n  \"index_key\": \"%s\",\n  \"keys\": [\n",
                          s->active, b64);
    for (size_t i = 0; i < s->n; i++) {
        const ring_key *k = &s->keys[i];
        char retired[24] = "null";
        if (k->retired) snprintf(retired, sizeof(retired), "%" PRId64, k->retired_at);
        base64_encode(k->key, CRYPTO_KEY_LEN, b64, BASE64_STD);
        o += (size_t)snprintf(buf + o, cap - o,
                              "    {\"id\": %" PRIu32 ", \"key\": \"%s\", \"created\": %" PRId64
                              ", \"retired\": %s}%s\n",
                              k->id, b64, k->created, retired, i + 1 < s->n ? "," : "");
    }
    o += (size_t)snprintf(buf + o, cap - o, "  ]\n}\n");
    OPENSSL_cleanse(b64, sizeof(b64));
    *len = o;
    return buf;
}

/* ------------------------------------------------------------ key file I/O */

static void ident_from_stat(file_ident *id, const struct stat *st) {
    id->dev = st->st_dev;
    id->ino = st->st_ino;
    id->size = st->st_size;
    id->mtime = st->st_mtim;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    return xstrndup(path, (size_t)(slash - path));
}

static int fsync_dir(const char *path, wsg_error *err) {
    char *dir = dir_of(path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || fsync(fd) != 0) {
        rc = wsg_error_set(err, WSG_E_IO, "key file %s: cannot sync directory %s: %s", path, dir,
                           strerror(errno));
    }
    if (fd >= 0) close(fd);
    free(dir);
    return rc;
}

/* Write `text` to `path` atomically with mode 0600. With `exclusive` the
 * file is linked into place only if `path` does not exist (returns 1 when it
 * does); otherwise renamed over it. Returns 0 with *ident describing the new
 * file, 1 (exclusive only), or -1 with err filled. */
static int write_key_file(const char *path, const char *text, size_t n, bool exclusive,
                          file_ident *ident, wsg_error *err) {
    size_t tlen = strlen(path) + 48;
    char *tmp = xmalloc(tlen);
    int fd = -1;
    for (int attempt = 0; attempt < 16 && fd < 0; attempt++) {
        uint8_t rnd[6];
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) memset(rnd, attempt, sizeof(rnd));
        snprintf(tmp, tlen, "%s.tmp-%ld-%02x%02x%02x%02x%02x%02x", path, (long)getpid(), rnd[0],
                 rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        int rc = wsg_error_set(err, WSG_E_IO, "cannot create key file %s (temporary %s): %s", path,
                               tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    const char *what = "write";
    struct stat st;
    if (fchmod(fd, 0600) != 0) {
        what = "chmod";
        goto fail;
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            goto fail;
        }
        off += (size_t)w;
    }
    what = "fsync";
    if (fsync(fd) != 0) goto fail;
    what = "stat";
    if (fstat(fd, &st) != 0) goto fail;
    what = "close";
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) goto fail;
    if (exclusive) {
        what = "link";
        if (link(tmp, path) != 0) {
            if (errno == EEXIST) {
                unlink(tmp);
                free(tmp);
                return 1;
            }
            goto fail;
        }
        unlink(tmp);
    } else {
        what = "rename";
        if (rename(tmp, path) != 0) goto fail;
    }
    free(tmp);
    ident_from_stat(ident, &st);
    return fsync_dir(path, err);
fail:
    wsg_error_set(err, WSG_E_IO, "cannot write key file %s (%s of %s): %s", path, what, tmp,
                  strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return WSG_E_IO;
}

/* Read and validate the key file. Returns 0 (loaded), 1 (the file does not
 * exist; err untouched) or -1 with err filled. */
static int load_key_file(const char *path, keyset **out, uint8_t index_key[CRYPTO_KEY_LEN],
                         file_ident *ident, wsg_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 1;
        return wsg_error_set(err, WSG_E_IO, "cannot open key file %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        wsg_error_set(err, WSG_E_IO, "cannot stat key file %s: %s", path, strerror(errno));
        close(fd);
        return WSG_E_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE, "key file %s is not a regular file", path);
        close(fd);
        return WSG_E_CRYPTO_KEY_FILE;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                      "key file %s must not be readable by group or others (chmod 600)", path);
        close(fd);
        return WSG_E_CRYPTO_KEY_FILE;
    }
    if (st.st_size > KEY_FILE_MAX) {
        wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE,
                      "key file %s is too large (%lld bytes, at most %d)", path,
                      (long long)st.st_size, KEY_FILE_MAX);
        close(fd);
        return WSG_E_CRYPTO_KEY_FILE;
    }
    size_t cap = (size_t)st.st_size, n = 0;
    char *buf = xmalloc(cap + 1);
    while (n < cap) {
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            wsg_error_set(err, WSG_E_IO, "cannot read key file %s: %s", path, strerror(errno));
            OPENSSL_cleanse(buf, n);
            free(buf);
            close(fd);
            return WSG_E_IO;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    int rc = parse_ring(path, buf, n, out, index_key, err);
    OPENSSL_cleanse(buf, cap + 1);
    free(buf);
    if (rc == 0) ident_from_stat(ident, &st);
    return rc;
}

/* Fail when the key file is not the one this ring last read or wrote. */
static int check_ident(const crypto_keyring *r, wsg_error *err) {
    struct stat st;
    if (stat(r->path, &st) != 0) {
        return wsg_error_set(err, WSG_E_IO, "cannot stat key file %s: %s", r->path,
                             strerror(errno));
    }
    file_ident now;
    ident_from_stat(&now, &st);
    if (now.dev != r->ident.dev || now.ino != r->ident.ino || now.size != r->ident.size ||
        now.mtime.tv_sec != r->ident.mtime.tv_sec || now.mtime.tv_nsec != r->ident.mtime.tv_nsec) {
        return wsg_error_set(err, WSG_E_CRYPTO_KEY_FILE_CHANGED,
                             "key file %s changed on disk since it was loaded (another process?); "
                             "reload it and retry",
                             r->path);
    }
    return 0;
}

/* ------------------------------------------------------------ key ring */

char *crypto_key_file_path(const char *data_dir, const char *kms_key_file) {
    if (kms_key_file && *kms_key_file) return xstrdup(kms_key_file);
    if (!data_dir || !*data_dir) data_dir = ".";
    size_t dl = strlen(data_dir);
    while (dl > 1 && data_dir[dl - 1] == '/') dl--;
    const char *sep = data_dir[dl - 1] == '/' ? "" : "/";
    size_t n = dl + strlen(sep) + sizeof("keys.json");
    char *p = xmalloc(n);
    snprintf(p, n, "%.*s%skeys.json", (int)dl, data_dir, sep);
    return p;
}

static keyset *generate_set(time_t now) {
    keyset *s = xcalloc(1, sizeof(*s));
    s->n = 1;
    s->keys = xcalloc(1, sizeof(*s->keys));
    s->keys[0].id = 1;
    s->keys[0].created = (int64_t)now;
    s->active = 1;
    if (RAND_bytes(s->keys[0].key, CRYPTO_KEY_LEN) != 1) {
        keyset_free(s);
        return NULL;
    }
    return s;
}

int crypto_keyring_open(const char *path, bool create, crypto_keyring **out, wsg_error *err) {
    *out = NULL;
    if (!path || !*path) {
        return wsg_error_set(err, WSG_E_INVAL, "no key file path given");
    }
    keyset *set = NULL;
    uint8_t index_key[CRYPTO_KEY_LEN];
    file_ident ident;
    memset(&ident, 0, sizeof(ident));
    int rc = 1;
    for (int attempt = 0; attempt < 2 && rc == 1; attempt++) {
        rc = load_key_file(path, &set, index_key, &ident, err);
        if (rc != 1) break;
        if (!create) {
            return wsg_error_set(err, WSG_E_CRYPTO_NO_KEY_FILE,
                                 "key file %s does not exist (encryption is enabled; without the "
                                 "key file encrypted data cannot be read); check kms_key_file and "
                                 "--data-dir (with kms_key_file empty, serve creates "
                                 "DATA_DIR/keys.json on its first start)",
                                 path);
        }
        set = generate_set(time(NULL));
        if (!set || RAND_bytes(index_key, CRYPTO_KEY_LEN) != 1) {
            keyset_free(set);
            OPENSSL_cleanse(index_key, sizeof(index_key));
            return wsg_error_set(err, WSG_E_CRYPTO_INTERNAL,
                                 "cannot create key file %s: random generator failed", path);
        }
        size_t n;
        char *text = render_ring(set, index_key, &n);
        rc = write_key_file(path, text, n, true, &ident, err);
        OPENSSL_cleanse(text, n);
        free(text);
        if (rc != 0) { /* 1: created meanwhile by someone else: load theirs */
            keyset_free(set);
            set = NULL;
            OPENSSL_cleanse(index_key, sizeof(index_key));
        }
    }
    if (rc == 1)
        return wsg_error_set(err, WSG_E_IO, "key file %s keeps appearing and vanishing", path);
    if (rc < 0) return rc;

    crypto_keyring *r = xcalloc(1, sizeof(*r));
    r->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    r->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!r->gcm || !r->hmac) {
        EVP_CIPHER_free(r->gcm);
        EVP_MAC_free(r->hmac);
        free(r);
        keyset_free(set);
        OPENSSL_cleanse(index_key, sizeof(index_key));
        return wsg_error_set(err, WSG_E_CRYPTO_INTERNAL,
                             "key file %s: OpenSSL offers no AES-256-GCM or HMAC", path);
    }
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* Rotation must not starve behind a steady stream of seals. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&r->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&r->write_mu, NULL);
    pthread_mutex_init(&r->cache_mu, NULL);
    r->path = xstrdup(path);
    r->set = set;
    memcpy(r->index_key, index_key, CRYPTO_KEY_LEN);
    OPENSSL_cleanse(index_key, sizeof(index_key));
    r->ident = ident;
    *out = r;
    return 0;
}

/* Make `next` durable in the key file and then the ring's key set. Called
 * with write_mu held. Takes ownership of `next`. */
static int publish(crypto_keyring *r, keyset *next, wsg_error *err) {
    int rc = check_ident(r, err);
    if (rc < 0) {
        keyset_free(next);
        return rc;
    }
    size_t n;
    char *text = render_ring(next, r->index_key, &n);
    file_ident ident;
    rc = write_key_file(r->path, text, n, false, &ident, err);
    OPENSSL_cleanse(text, n);
    free(text);
    if (rc < 0) {
        keyset_free(next);
        return rc;
    }
    pthread_rwlock_wrlock(&r->lock);
    keyset *old = r->set;
    r->set = next;
    /* No seal or open runs now (they hold the read lock), and the cached
     * schedules may belong to keys the new set no longer has. */
    pthread_mutex_lock(&r->cache_mu);
    r->seal_cache.keyed = false;
    r->open_cache.keyed = false;
    pthread_mutex_unlock(&r->cache_mu);
    pthread_rwlock_unlock(&r->lock);
    r->ident = ident;
    keyset_free(old);
    return 0;
}

int crypto_keyring_rotate(crypto_keyring *r, time_t now, wsg_error *err) {
    pthread_mutex_lock(&r->write_mu);
    const keyset *cur = r->set; /* only writers replace it, and we are the writer */
    uint32_t top = cur->keys[cur->n - 1].id;
    if (top == UINT32_MAX || cur->n >= RING_MAX_KEYS) {
        pthread_mutex_unlock(&r->write_mu);
        return wsg_error_set(err, WSG_E_CRYPTO_RING_FULL, "key file %s: no room for another key",
                             r->path);
    }
    keyset *next = xcalloc(1, sizeof(*next));
    next->n = cur->n + 1;
    next->keys = xcalloc(next->n, sizeof(*next->keys));
    memcpy(next->keys, cur->keys, cur->n * sizeof(*cur->keys));
    for (size_t i = 0; i < cur->n; i++) {
        if (next->keys[i].id == cur->active && !next->keys[i].retired) {
            next->keys[i].retired = true;
            next->keys[i].retired_at = (int64_t)now;
        }
    }
    ring_key *k = &next->keys[cur->n];
    k->id = top + 1;
    k->created = (int64_t)now;
    next->active = k->id;
    if (RAND_bytes(k->key, CRYPTO_KEY_LEN) != 1) {
        keyset_free(next);
        pthread_mutex_unlock(&r->write_mu);
        return wsg_error_set(err, WSG_E_CRYPTO_INTERNAL, "key file %s: random generator failed",
                             r->path);
    }
    int rc = publish(r, next, err);
    pthread_mutex_unlock(&r->write_mu);
    return rc;
}

int crypto_keyring_destroy_expired(crypto_keyring *r, time_t now, int64_t window_days,
                                   bool (*in_use)(uint32_t key_id, void *ctx), void *ctx,
                                   wsg_error *err) {
    if (!in_use) {
        return wsg_error_set(err, WSG_E_INVAL, "key file %s: destroying keys needs an in-use check",
                             r->path);
    }
    if (window_days < 0 || window_days > MAX_WINDOW_DAYS) {
        return wsg_error_set(err, WSG_E_INVAL,
                             "key file %s: deletion window %" PRId64 " days is out of range",
                             r->path, window_days);
    }
    pthread_mutex_lock(&r->write_mu);
    const keyset *cur = r->set;
    bool *doomed = xcalloc(cur->n, sizeof(*doomed));
    size_t count = 0;
    int64_t cutoff; /* retired at or before cutoff: past the window */
    if (__builtin_sub_overflow((int64_t)now, window_days * 86400, &cutoff)) cutoff = INT64_MIN;
    for (size_t i = 0; i < cur->n; i++) {
        const ring_key *k = &cur->keys[i];
        if (k->id == cur->active || !k->retired || k->retired_at > cutoff) continue;
        if (!in_use(k->id, ctx)) {
            doomed[i] = true;
            count++;
        }
    }
    int rc = 0;
    if (count > 0) {
        keyset *next = xcalloc(1, sizeof(*next));
        next->n = cur->n - count;
        next->keys = xcalloc(next->n, sizeof(*next->keys));
        next->active = cur->active;
        for (size_t i = 0, j = 0; i < cur->n; i++)
            if (!doomed[i]) next->keys[j++] = cur->keys[i];
        rc = publish(r, next, err);
    }
    free(doomed);
    pthread_mutex_unlock(&r->write_mu);
    return rc < 0 ? rc : (int)count;
}

uint32_t crypto_active_key_id(const crypto_keyring *r) {
    crypto_keyring *m = (crypto_keyring *)r; /* the lock is the only mutable part */
    pthread_rwlock_rdlock(&m->lock);
    uint32_t id = r->set->active;
    pthread_rwlock_unlock(&m->lock);
    return id;
}

size_t crypto_key_ids(const crypto_keyring *r, uint32_t *out, size_t max) {
    crypto_keyring *m = (crypto_keyring *)r;
    pthread_rwlock_rdlock(&m->lock);
    size_t n = r->set->n;
    for (size_t i = 0; i < n && i < max; i++) out[i] = r->set->keys[i].id;
    pthread_rwlock_unlock(&m->lock);
    return n;
}

const char *crypto_keyring_path(const crypto_keyring *r) { return r->path; }

void crypto_keyring_free(crypto_keyring *r) {
    if (!r) return;
    keyset_free(r->set);
    OPENSSL_cleanse(r->index_key, sizeof(r->index_key));
    EVP_CIPHER_free(r->gcm);
    EVP_MAC_free(r->hmac);
    EVP_CIPHER_CTX_free(r->seal_cache.ctx);
    EVP_CIPHER_CTX_free(r->open_cache.ctx);
    EVP_MAC_CTX_free(r->index_mac);
    pthread_mutex_destroy(&r->cache_mu);
    pthread_rwlock_destroy(&r->lock);
    pthread_mutex_destroy(&r->write_mu);
    free(r->path);
    free(r);
}
