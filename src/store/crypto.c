/* Encryption at rest: key ring file, AES-256-GCM column values, blind
 * indexes. See crypto.h for the formats and the threading rules.
 *
 * The ring's keys live in an immutable `keyset` that readers use under a
 * read lock; rotation and destruction build a new keyset, make the key file
 * durable, then swap the pointer under the write lock, so a reader never
 * sees a key that is not on disk and a failed rewrite changes nothing. */
#include "store/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/random.h"

#define KEY_FILE_MAX    (1024 * 1024) /* bytes; a ring of 4096 keys is ~0.6 MiB */
#define RING_MAX_KEYS   4096
#define NONCE_LEN       12
#define AAD_HDR_LEN     5         /* version + key id: authenticated too */
#define GCM_CHUNK       (1 << 30) /* EVP update calls take an int length */
#define MAX_WINDOW_DAYS 36500

typedef struct ring_key {
    uint32_t id;
    bool retired;
    int64_t created;
    int64_t retired_at; /* valid when retired */
    uint8_t key[CRYPTO_KEY_LEN];
} ring_key;

/* Never modified once published in a ring; keys sorted by ascending id. */
typedef struct keyset {
    ring_key *keys;
    size_t n;
    uint32_t active;
} keyset;

/* An AES-256-GCM context with one key's schedule already set up. */
typedef struct gcm_cache {
    EVP_CIPHER_CTX *ctx; /* NULL until first use */
    uint32_t key_id;
    bool keyed; /* ctx holds key_id's key of the current set */
} gcm_cache;

/* What the key file looked like when this ring last read or wrote it. */
typedef struct file_ident {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_ident;

struct crypto_keyring {
    char *path;
    pthread_rwlock_t lock;    /* guards `set` (the pointer) */
    pthread_mutex_t write_mu; /* serialises rotate / destroy_expired */
    keyset *set;
    uint8_t index_key[CRYPTO_KEY_LEN]; /* never changes after open */
    EVP_CIPHER *gcm;
    EVP_MAC *hmac;
    file_ident ident; /* guarded by write_mu */
    /* Keyed contexts kept between calls: setting up AES-GCM or HMAC from
     * scratch (allocation, key schedule, provider lookups) costs several
     * times the encryption of a chat message. Guarded by cache_mu; a thread
     * that finds it taken builds a one-off context instead of waiting. */
    pthread_mutex_t cache_mu;
    gcm_cache seal_cache, open_cache;
    EVP_MAC_CTX *index_mac; /* keyed with index_key; NULL until first use */
};

/* ------------------------------------------------------------ helpers */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void keyset_free(keyset *s) {
    if (!s) return;
    if (s->keys) {
        OPENSSL_cleanse(s->keys, s->n * sizeof(*s->keys));
        free(s->keys);
    }
    free(s);
}

static const ring_key *keyset_find(const keyset *s, uint32_t id) {
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->keys[mid].id == id) return &s->keys[mid];
        if (s->keys[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int key_cmp(const void *a, const void *b) {
    uint32_t x = ((const ring_key *)a)->id, y = ((const ring_key *)b)->id;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------ key file text */

/* Parse and validate key file text. Returns 0 with *out and index_key set,
 * or -1 with err filled (naming `path`). */
static int parse_ring(const char *path, const char *text, size_t n, keyset **out,
                      uint8_t index_key[CRYPTO_KEY_LEN], char *err, size_t errlen) {
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    keyset *s = NULL;
    if (!root) {
        seterr(err, errlen, "key file %s: malformed JSON at line %d: %s", path, jerr.line,
               jerr.text);
        return -1;
    }
    if (!json_is_object(root)) {
        seterr(err, errlen, "key file %s: expected a JSON object", path);
        goto fail;
    }
    json_t *ver = json_object_get(root, "version");
    if (!json_is_integer(ver) || json_integer_value(ver) != 1) {
        seterr(err, errlen, "key file %s: \"version\" must be 1", path);
        goto fail;
    }
    json_t *act = json_object_get(root, "active");
    if (!json_is_integer(act) || json_integer_value(act) < 1 ||
        json_integer_value(act) > (json_int_t)UINT32_MAX) {
        seterr(err, errlen, "key file %s: \"active\" must be a key id (1..%" PRIu32 ")", path,
               UINT32_MAX);
        goto fail;
    }
    json_t *ik = json_object_get(root, "index_key");
    if (!json_is_string(ik) ||
        base64_decode(json_string_value(ik), json_string_length(ik), index_key, CRYPTO_KEY_LEN,
                      BASE64_STD) != CRYPTO_KEY_LEN) {
        seterr(err, errlen, "key file %s: \"index_key\" must be base64 of %d bytes", path,
               CRYPTO_KEY_LEN);
        goto fail;
    }
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_array(keys) || json_array_size(keys) == 0 ||
        json_array_size(keys) > RING_MAX_KEYS) {
        seterr(err, errlen, "key file %s: \"keys\" must be an array of 1..%d keys", path,
               RING_MAX_KEYS);
        goto fail;
    }
    s = xcalloc(1, sizeof(*s));
    s->n = json_array_size(keys);
    s->keys = xcalloc(s->n, sizeof(*s->keys));
    s->active = (uint32_t)json_integer_value(act);
    for (size_t i = 0; i < s->n; i++) {
        json_t *k = json_array_get(keys, i);
        ring_key *rk = &s->keys[i];
        json_t *id = json_object_get(k, "id"); /* NULL when k is not an object */
        if (!json_is_object(k) || !json_is_integer(id) || json_integer_value(id) < 1 ||
            json_integer_value(id) > (json_int_t)UINT32_MAX) {
            seterr(err, errlen, "key file %s: keys[%zu] needs an \"id\" in 1..%" PRIu32, path, i,
                   UINT32_MAX);
            goto fail;
        }
        rk->id = (uint32_t)json_integer_value(id);
        json_t *kv = json_object_get(k, "key");
        if (!json_is_string(kv)) {
            seterr(err, errlen, "key file %s: key %" PRIu32 " has no \"key\" string", path, rk->id);
            goto fail;
        }
        uint8_t tmp[CRYPTO_KEY_LEN + 3];
        long got = base64_decode(json_string_value(kv), json_string_length(kv), tmp, sizeof(tmp),
                                 BASE64_STD);
        if (got >= 0 && got == CRYPTO_KEY_LEN) memcpy(rk->key, tmp, CRYPTO_KEY_LEN);
        OPENSSL_cleanse(tmp, sizeof(tmp));
        if (got != CRYPTO_KEY_LEN) {
            if (got < 0)
                seterr(err, errlen, "key file %s: key %" PRIu32 " is not base64 of %d bytes", path,
                       rk->id, CRYPTO_KEY_LEN);
            else
                seterr(err, errlen, "key file %s: key %" PRIu32 " is %ld bytes, expected %d", path,
                       rk->id, got, CRYPTO_KEY_LEN);
            goto fail;
        }
        json_t *cr = json_object_get(k, "created");
        if (!json_is_integer(cr)) {
            seterr(err, errlen, "key file %s: key %" PRIu32 " needs an integer \"created\"", path,
                   rk->id);
            goto fail;
        }
        rk->created = json_integer_value(cr);
        json_t *rt = json_object_get(k, "retired");
        if (rt && !json_is_null(rt)) {
            if (!json_is_integer(rt)) {
                seterr(err, errlen,
                       "key file %s: key %" PRIu32 " \"retired\" must be a Unix time or null", path,
                       rk->id);
                goto fail;
            }
            rk->retired = true;
            rk->retired_at = json_integer_value(rt);
        }
    }
    qsort(s->keys, s->n, sizeof(*s->keys), key_cmp);
    for (size_t i = 1; i < s->n; i++) {
        if (s->keys[i].id == s->keys[i - 1].id) {
            seterr(err, errlen, "key file %s: duplicate key id %" PRIu32, path, s->keys[i].id);
            goto fail;
        }
    }
    const ring_key *a = keyset_find(s, s->active);
    if (!a) {
        seterr(err, errlen, "key file %s: active key %" PRIu32 " is not in \"keys\"", path,
               s->active);
        goto fail;
    }
    if (a->retired) {
        seterr(err, errlen, "key file %s: active key %" PRIu32 " is marked retired", path,
               s->active);
        goto fail;
    }
    json_decref(root);
    *out = s;
    return 0;
fail:
    OPENSSL_cleanse(index_key, CRYPTO_KEY_LEN);
    keyset_free(s);
    json_decref(root);
    return -1;
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

static int fsync_dir(const char *path, char *err, size_t errlen) {
    char *dir = dir_of(path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || fsync(fd) != 0) {
        seterr(err, errlen, "key file %s: cannot sync directory %s: %s", path, dir,
               strerror(errno));
        rc = -1;
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
                          file_ident *ident, char *err, size_t errlen) {
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
        seterr(err, errlen, "cannot create key file %s (temporary %s): %s", path, tmp,
               strerror(errno));
        free(tmp);
        return -1;
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
    return fsync_dir(path, err, errlen);
fail:
    seterr(err, errlen, "cannot write key file %s (%s of %s): %s", path, what, tmp,
           strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return -1;
}

/* Read and validate the key file. Returns 0 (loaded), 1 (the file does not
 * exist; err untouched) or -1 with err filled. */
static int load_key_file(const char *path, keyset **out, uint8_t index_key[CRYPTO_KEY_LEN],
                         file_ident *ident, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 1;
        seterr(err, errlen, "cannot open key file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        seterr(err, errlen, "cannot stat key file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        seterr(err, errlen, "key file %s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        seterr(err, errlen, "key file %s must not be readable by group or others (chmod 600)",
               path);
        close(fd);
        return -1;
    }
    if (st.st_size > KEY_FILE_MAX) {
        seterr(err, errlen, "key file %s is too large (%lld bytes, at most %d)", path,
               (long long)st.st_size, KEY_FILE_MAX);
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size, n = 0;
    char *buf = xmalloc(cap + 1);
    while (n < cap) {
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            seterr(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
            OPENSSL_cleanse(buf, n);
            free(buf);
            close(fd);
            return -1;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    int rc = parse_ring(path, buf, n, out, index_key, err, errlen);
    OPENSSL_cleanse(buf, cap + 1);
    free(buf);
    if (rc == 0) ident_from_stat(ident, &st);
    return rc;
}

/* Fail when the key file is not the one this ring last read or wrote. */
static int check_ident(const crypto_keyring *r, char *err, size_t errlen) {
    struct stat st;
    if (stat(r->path, &st) != 0) {
        seterr(err, errlen, "cannot stat key file %s: %s", r->path, strerror(errno));
        return -1;
    }
    file_ident now;
    ident_from_stat(&now, &st);
    if (now.dev != r->ident.dev || now.ino != r->ident.ino || now.size != r->ident.size ||
        now.mtime.tv_sec != r->ident.mtime.tv_sec || now.mtime.tv_nsec != r->ident.mtime.tv_nsec) {
        seterr(err, errlen,
               "key file %s changed on disk since it was loaded (another process?); "
               "reload it and retry",
               r->path);
        return -1;
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

int crypto_keyring_open(const char *path, bool create, crypto_keyring **out, char *err,
                        size_t errlen) {
    *out = NULL;
    if (!path || !*path) {
        seterr(err, errlen, "no key file path given");
        return -1;
    }
    keyset *set = NULL;
    uint8_t index_key[CRYPTO_KEY_LEN];
    file_ident ident;
    memset(&ident, 0, sizeof(ident));
    int rc = 1;
    for (int attempt = 0; attempt < 2 && rc == 1; attempt++) {
        rc = load_key_file(path, &set, index_key, &ident, err, errlen);
        if (rc != 1) break;
        if (!create) {
            seterr(err, errlen,
                   "key file %s does not exist (encryption is enabled; without the key file "
                   "encrypted data cannot be read)",
                   path);
            return -1;
        }
        set = generate_set(time(NULL));
        if (!set || RAND_bytes(index_key, CRYPTO_KEY_LEN) != 1) {
            seterr(err, errlen, "cannot create key file %s: random generator failed", path);
            keyset_free(set);
            OPENSSL_cleanse(index_key, sizeof(index_key));
            return -1;
        }
        size_t n;
        char *text = render_ring(set, index_key, &n);
        rc = write_key_file(path, text, n, true, &ident, err, errlen);
        OPENSSL_cleanse(text, n);
        free(text);
        if (rc != 0) { /* 1: created meanwhile by someone else: load theirs */
            keyset_free(set);
            set = NULL;
            OPENSSL_cleanse(index_key, sizeof(index_key));
        }
    }
    if (rc != 0) {
        if (rc == 1) seterr(err, errlen, "key file %s keeps appearing and vanishing", path);
        return -1;
    }

    crypto_keyring *r = xcalloc(1, sizeof(*r));
    r->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    r->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!r->gcm || !r->hmac) {
        seterr(err, errlen, "key file %s: OpenSSL offers no AES-256-GCM or HMAC", path);
        EVP_CIPHER_free(r->gcm);
        EVP_MAC_free(r->hmac);
        free(r);
        keyset_free(set);
        OPENSSL_cleanse(index_key, sizeof(index_key));
        return -1;
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
static int publish(crypto_keyring *r, keyset *next, char *err, size_t errlen) {
    if (check_ident(r, err, errlen) != 0) {
        keyset_free(next);
        return -1;
    }
    size_t n;
    char *text = render_ring(next, r->index_key, &n);
    file_ident ident;
    int rc = write_key_file(r->path, text, n, false, &ident, err, errlen);
    OPENSSL_cleanse(text, n);
    free(text);
    if (rc != 0) {
        keyset_free(next);
        return -1;
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

int crypto_keyring_rotate(crypto_keyring *r, time_t now, char *err, size_t errlen) {
    pthread_mutex_lock(&r->write_mu);
    const keyset *cur = r->set; /* only writers replace it, and we are the writer */
    uint32_t top = cur->keys[cur->n - 1].id;
    if (top == UINT32_MAX || cur->n >= RING_MAX_KEYS) {
        seterr(err, errlen, "key file %s: no room for another key", r->path);
        pthread_mutex_unlock(&r->write_mu);
        return -1;
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
        seterr(err, errlen, "key file %s: random generator failed", r->path);
        keyset_free(next);
        pthread_mutex_unlock(&r->write_mu);
        return -1;
    }
    int rc = publish(r, next, err, errlen);
    pthread_mutex_unlock(&r->write_mu);
    return rc;
}

int crypto_keyring_destroy_expired(crypto_keyring *r, time_t now, int64_t window_days,
                                   bool (*in_use)(uint32_t key_id, void *ctx), void *ctx, char *err,
                                   size_t errlen) {
    if (!in_use) {
        seterr(err, errlen, "key file %s: destroying keys needs an in-use check", r->path);
        return -1;
    }
    if (window_days < 0 || window_days > MAX_WINDOW_DAYS) {
        seterr(err, errlen, "key file %s: deletion window %" PRId64 " days is out of range",
               r->path, window_days);
        return -1;
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
        rc = publish(r, next, err, errlen);
    }
    free(doomed);
    pthread_mutex_unlock(&r->write_mu);
    return rc == 0 ? (int)count : -1;
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

/* ------------------------------------------------------------ AES-256-GCM */

/* Feed n bytes to the cipher in int-sized chunks; out NULL: AAD. */
static bool gcm_update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t n) {
    size_t off = 0;
    while (off < n) {
        size_t chunk = n - off < GCM_CHUNK ? n - off : GCM_CHUNK;
        int outl = 0;
        if (EVP_CipherUpdate(ctx, out ? out + off : NULL, &outl, in + off, (int)chunk) != 1)
            return false;
        if (out && (size_t)outl != chunk) return false;
        off += chunk;
    }
    return true;
}

/* Point ctx at a new message under key k: only the nonce when the cached
 * context already holds k's schedule, else from scratch. Called with the
 * ring's read lock held. Returns true on success. */
static bool gcm_begin(crypto_keyring *r, gcm_cache *c, EVP_CIPHER_CTX *ctx, const ring_key *k,
                      bool enc, const uint8_t *nonce) {
    if (c && c->keyed && c->key_id == k->id)
        return EVP_CipherInit_ex2(ctx, NULL, NULL, nonce, enc ? 1 : 0, NULL) == 1;
    if (c) c->keyed = false;
    if (EVP_CipherInit_ex2(ctx, r->gcm, k->key, nonce, enc ? 1 : 0, NULL) != 1) return false;
    if (c) {
        c->keyed = true;
        c->key_id = k->id;
    }
    return true;
}

/* Encrypt (enc) or decrypt-and-verify `len` bytes from in to out under key
 * k. `hdr` is the blob's first AAD_HDR_LEN bytes, `nonce` its NONCE_LEN
 * bytes, `tag` its CRYPTO_TAG_LEN bytes (written when encrypting). Called
 * with the ring's read lock held. Returns 0, CRYPTO_E_AUTH or
 * CRYPTO_E_INTERNAL. */
static int gcm_run(crypto_keyring *r, const ring_key *k, bool enc, const uint8_t *hdr,
                   const uint8_t *nonce, const void *aad, size_t aad_len, const uint8_t *in,
                   size_t len, uint8_t *out, uint8_t *tag) {
    gcm_cache *c = NULL;
    EVP_CIPHER_CTX *ctx;
    if (pthread_mutex_trylock(&r->cache_mu) == 0) {
        c = enc ? &r->seal_cache : &r->open_cache;
        if (!c->ctx) c->ctx = EVP_CIPHER_CTX_new();
        ctx = c->ctx;
    } else {
        ctx = EVP_CIPHER_CTX_new();
    }
    int rc = CRYPTO_E_INTERNAL;
    if (!ctx) goto done;
    if (!gcm_begin(r, c, ctx, k, enc, nonce)) goto done;
    if (!gcm_update(ctx, NULL, hdr, AAD_HDR_LEN)) goto done;
    if (aad_len && !gcm_update(ctx, NULL, aad, aad_len)) goto done;
    if (len && !gcm_update(ctx, out, in, len)) goto done;
    if (enc) {
        int outl = 0;
        if (EVP_CipherFinal_ex(ctx, out + len, &outl) != 1 || outl != 0) goto done;
        OSSL_PARAM get[2] = {
            OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, CRYPTO_TAG_LEN),
            OSSL_PARAM_construct_end()};
        if (EVP_CIPHER_CTX_get_params(ctx, get) != 1) goto done;
        rc = 0;
    } else {
        OSSL_PARAM set[2] = {
            OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, CRYPTO_TAG_LEN),
            OSSL_PARAM_construct_end()};
        if (EVP_CIPHER_CTX_set_params(ctx, set) != 1) goto done;
        int outl = 0;
        rc = EVP_CipherFinal_ex(ctx, out + len, &outl) == 1 ? 0 : CRYPTO_E_AUTH;
    }
done:
    if (c) {
        /* After an internal failure the context's state is unknown. */
        if (rc == CRYPTO_E_INTERNAL) c->keyed = false;
        pthread_mutex_unlock(&r->cache_mu);
    } else {
        EVP_CIPHER_CTX_free(ctx);
    }
    return rc;
}

uint8_t *crypto_seal(const crypto_keyring *r, const void *plain, size_t len, const void *aad,
                     size_t aad_len, size_t *out_len) {
    *out_len = 0;
    if (len > SIZE_MAX - CRYPTO_BLOB_OVERHEAD - 1) return NULL;
    uint8_t *blob = xmalloc(len + CRYPTO_BLOB_OVERHEAD);
    crypto_keyring *m = (crypto_keyring *)r;
    pthread_rwlock_rdlock(&m->lock);
    const ring_key *k = keyset_find(r->set, r->set->active);
    blob[0] = CRYPTO_BLOB_VERSION;
    put_be32(blob + 1, k->id);
    random_bytes(blob + AAD_HDR_LEN, NONCE_LEN);
    int rc = gcm_run(m, k, true, blob, blob + AAD_HDR_LEN, aad, aad_len, plain, len,
                     blob + CRYPTO_HEADER_LEN, blob + CRYPTO_HEADER_LEN + len);
    pthread_rwlock_unlock(&m->lock);
    if (rc != 0) {
        OPENSSL_cleanse(blob, len + CRYPTO_BLOB_OVERHEAD);
        free(blob);
        return NULL;
    }
    *out_len = len + CRYPTO_BLOB_OVERHEAD;
    return blob;
}

int crypto_open(const crypto_keyring *r, const uint8_t *blob, size_t len, const void *aad,
                size_t aad_len, char **plain, size_t *plain_len) {
    *plain = NULL;
    *plain_len = 0;
    if (!blob || len < CRYPTO_BLOB_OVERHEAD) return CRYPTO_E_SHORT;
    if (blob[0] != CRYPTO_BLOB_VERSION) return CRYPTO_E_VERSION;
    size_t n = len - CRYPTO_BLOB_OVERHEAD;
    uint8_t tag[CRYPTO_TAG_LEN];
    memcpy(tag, blob + CRYPTO_HEADER_LEN + n, CRYPTO_TAG_LEN);
    crypto_keyring *m = (crypto_keyring *)r;
    pthread_rwlock_rdlock(&m->lock);
    const ring_key *k = keyset_find(r->set, get_be32(blob + 1));
    if (!k) {
        pthread_rwlock_unlock(&m->lock);
        return CRYPTO_E_UNKNOWN_KEY;
    }
    char *out = xmalloc(n + 1);
    int rc = gcm_run(m, k, false, blob, blob + AAD_HDR_LEN, aad, aad_len, blob + CRYPTO_HEADER_LEN,
                     n, (uint8_t *)out, tag);
    pthread_rwlock_unlock(&m->lock);
    if (rc != 0) {
        OPENSSL_cleanse(out, n + 1);
        free(out);
        return rc;
    }
    out[n] = '\0';
    *plain = out;
    *plain_len = n;
    return 0;
}

const char *crypto_strerror(int code) {
    if (code == 0) return "success";
    switch (code) {
#define CRYPTO_ERRNO_TEXT(name, num, text)                                                         \
    case CRYPTO_E_##name: return text;
        CRYPTO_ERRNO_MAP(CRYPTO_ERRNO_TEXT)
#undef CRYPTO_ERRNO_TEXT
    }
    return "unknown error";
}

const char *crypto_open_errmsg(int code, const uint8_t *blob, size_t len, char *buf,
                               size_t buflen) {
    if (!buf || buflen == 0) return "";
    if (code == CRYPTO_E_UNKNOWN_KEY && blob && len >= CRYPTO_BLOB_OVERHEAD)
        snprintf(buf, buflen, "encrypted with key %" PRIu32 ", which is not in the key file",
                 get_be32(blob + 1));
    else if (code == CRYPTO_E_VERSION && blob && len > 0)
        snprintf(buf, buflen, "encrypted value has unknown format version %u", blob[0]);
    else snprintf(buf, buflen, "%s", crypto_strerror(code));
    return buf;
}

uint32_t crypto_blob_key_id(const uint8_t *blob, size_t len) {
    if (!blob || len < CRYPTO_BLOB_OVERHEAD || blob[0] != CRYPTO_BLOB_VERSION) return 0;
    return get_be32(blob + 1);
}

/* ------------------------------------------------------------ blind index */

/* HMAC-SHA256 of domain, a zero byte and v under the index key into mac. */
static bool index_mac(crypto_keyring *r, const char *domain, const void *v, size_t len,
                      uint8_t mac[32]) {
    static const uint8_t sep = 0;
    char digest[] = "SHA256";
    OSSL_PARAM params[2] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                            OSSL_PARAM_construct_end()};
    bool cached = pthread_mutex_trylock(&r->cache_mu) == 0;
    EVP_MAC_CTX *ctx;
    bool init_ok;
    if (cached && r->index_mac) {
        ctx = r->index_mac;
        init_ok = EVP_MAC_init(ctx, NULL, 0, NULL) == 1; /* same key, fresh state */
    } else {
        ctx = EVP_MAC_CTX_new(r->hmac);
        init_ok = ctx && EVP_MAC_init(ctx, r->index_key, CRYPTO_KEY_LEN, params) == 1;
        if (cached && init_ok) r->index_mac = ctx;
    }
    size_t maclen = 0;
    bool ok = init_ok &&
              EVP_MAC_update(ctx, (const uint8_t *)(domain ? domain : ""),
                             domain ? strlen(domain) : 0) == 1 &&
              EVP_MAC_update(ctx, &sep, 1) == 1 && (!len || EVP_MAC_update(ctx, v, len) == 1) &&
              EVP_MAC_final(ctx, mac, &maclen, 32) == 1 && maclen == 32;
    if (cached) {
        if (!ok && ctx == r->index_mac) {
            EVP_MAC_CTX_free(ctx);
            r->index_mac = NULL;
        } else if (!r->index_mac) {
            EVP_MAC_CTX_free(ctx);
        }
        pthread_mutex_unlock(&r->cache_mu);
    } else {
        EVP_MAC_CTX_free(ctx);
    }
    return ok;
}

void crypto_blind_index(const crypto_keyring *r, const char *domain, const void *v, size_t len,
                        char out[CRYPTO_INDEX_HEX_LEN + 1]) {
    static const char hex[] = "0123456789abcdef";
    uint8_t mac[32];
    if (!index_mac((crypto_keyring *)r, domain, v, len, mac)) {
        fprintf(stderr, "wsgate: HMAC-SHA256 failed in crypto_blind_index\n");
        abort();
    }
    for (size_t i = 0; i < sizeof(mac); i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[CRYPTO_INDEX_HEX_LEN] = '\0';
}
