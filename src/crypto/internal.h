/* The key ring's private parts, shared by its two halves: keyring.c (the
 * key file, rotation, destruction) and aead.c (AES-256-GCM sealing and the
 * blind index). Not for use outside src/crypto/.
 *
 * The ring's keys live in an immutable `keyset` that readers use under a
 * read lock; rotation and destruction build a new keyset, make the key file
 * durable, then swap the pointer under the write lock, so a reader never
 * sees a key that is not on disk and a failed rewrite changes nothing. */
#ifndef WSGATE_CRYPTO_INTERNAL_H
#define WSGATE_CRYPTO_INTERNAL_H

#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "crypto/crypto.h"

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

static inline void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Return the key with id in s (keys sorted by id), or NULL. */
static inline const ring_key *keyset_find(const keyset *s, uint32_t id) {
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->keys[mid].id == id) return &s->keys[mid];
        if (s->keys[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

#endif
