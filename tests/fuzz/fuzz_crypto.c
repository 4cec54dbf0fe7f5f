/* libFuzzer target for encryption at rest (src/crypto/).
 *
 * The first input byte picks what the rest is:
 *   mode 0 (byte & 3 == 0): [aad length k][k bytes of AAD][blob], opened
 *     against a fixed ring (keys 1 and 2 below). Invariants: the answer is 0
 *     or one of the WSG_E_CRYPTO_* codes; on failure no plaintext is returned;
 *     success only for a (blob, AAD) pair in SEEDS, byte for byte, with its
 *     plaintext (the seeds were sealed once with this ring).
 *   mode 1: the rest is a value; sealed with the fixed ring and opened again
 *     (round trip), then opened with one byte flipped (must fail) and with
 *     another AAD (must fail with WSG_E_CRYPTO_AUTH).
 *   mode 2/3: the rest is a key file, written to a temporary file with mode
 *     0600 and loaded. A ring that loads must be consistent (active key in
 *     its ids, round trip, deterministic blind index); when bit 7 of the
 *     first byte is set it is also rotated and reloaded.
 * Leaks are caught by LeakSanitizer. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"

#include "fuzz_require.h"

static const char RING_JSON[] =
    "{\"version\":1,\"active\":2,"
    "\"index_key\":\"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\",\"keys\":["
    "{\"id\":1,\"key\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\","
    "\"created\":1600000000,\"retired\":1700000000},"
    "{\"id\":2,\"key\":\"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\","
    "\"created\":1700000000,\"retired\":null}]}";

typedef struct seed {
    const char *aad;
    const char *plain;
    const char *blob;
    size_t blob_len;
} seed;

#define BLOB(s) s, sizeof(s) - 1
static const seed SEEDS[] = {
    {"messages.message:room-1:1", "hello, room",
     BLOB("\x01\x00\x00\x00\x02\xc5\x46\x29\xb2\x5f\x4a\x45\x97\x14\xa6\xfd\xd3\xaf\x59\xe5\xb8"
          "\xea\x34\x21\x13\x57\xc9\x3d\x63\x79\x2e\x31\xb1\xfd\x57\x14\x5d\x64\x02\x8e\x47\x59"
          "\x2e\xc5")},
    {"messages.message:room-1:2", "",
     BLOB("\x01\x00\x00\x00\x02\xee\x4d\x58\x3a\x82\xcb\x65\xc9\x77\x1c\xbf\x6b\xd9\xaa\x41\x74"
          "\xe5\x5c\x0d\xb5\xc3\xc5\x2c\xaa\x8b\x2a\xc1\xca")},
    {"", "x",
     BLOB("\x01\x00\x00\x00\x02\x28\x48\x21\x27\xc9\x50\x87\xe1\xe3\x49\xe8\x86\x21\xff\x60\x8c"
          "\x71\xb8\x5a\x9e\xf9\x07\xc3\x17\x5a\x18\xdd\xde\x81")},
    {"messages.message:room-1:1", "hello, room",
     BLOB("\x01\x00\x00\x00\x01\x41\x5a\xcd\x8a\x1d\xbd\x64\xa4\x38\x3d\xd2\xec\xc4\x3d\x49\x09"
          "\x20\x8f\xaf\x79\xe2\x84\x8b\xba\x04\xb5\x22\x51\x02\x81\xfc\x3f\x60\xdc\xfc\x11\x45"
          "\x82\x11")},
};
#define NSEEDS (sizeof(SEEDS) / sizeof(SEEDS[0]))

static crypto_keyring *RING;
static char DIR_[64];
static char RING_PATH[128];
static char INPUT_PATH[128];

static void cleanup(void) {
    crypto_keyring_free(RING);
    RING = NULL;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", DIR_);
    if (DIR_[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", DIR_);
}

static void write_file(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    require(fd >= 0);
    require(fchmod(fd, 0600) == 0);
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, (const char *)data + off, n - off);
        require(w > 0);
        off += (size_t)w;
    }
    require(close(fd) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    strcpy(DIR_, "/tmp/fuzz_crypto_XXXXXX");
    require(mkdtemp(DIR_) != NULL);
    snprintf(RING_PATH, sizeof(RING_PATH), "%s/ring.json", DIR_);
    snprintf(INPUT_PATH, sizeof(INPUT_PATH), "%s/input.json", DIR_);
    write_file(RING_PATH, RING_JSON, strlen(RING_JSON));
    require(crypto_keyring_open(RING_PATH, false, &RING, NULL) == 0);
    /* The seeds really open (guards against a stale table). */
    for (size_t i = 0; i < NSEEDS; i++) {
        char *p = NULL;
        size_t n = 0;
        require(crypto_open(RING, (const uint8_t *)SEEDS[i].blob, SEEDS[i].blob_len, SEEDS[i].aad,
                            strlen(SEEDS[i].aad), &p, &n) == 0);
        require(n == strlen(SEEDS[i].plain) && memcmp(p, SEEDS[i].plain, n) == 0);
        free(p);
    }
    atexit(cleanup);
    return 0;
}

static bool known_code(int rc) {
    return rc == WSG_E_CRYPTO_SHORT || rc == WSG_E_CRYPTO_VERSION ||
           rc == WSG_E_CRYPTO_UNKNOWN_KEY || rc == WSG_E_CRYPTO_AUTH;
}

static void open_blob(const uint8_t *d, size_t n) {
    size_t k = 0;
    if (n > 0) {
        k = d[0];
        d++;
        n--;
        if (k > n) k = n;
    }
    const uint8_t *aad = d, *blob = d + k;
    size_t blen = n - k;
    char *p = (char *)1;
    size_t plen = 99;
    int rc = crypto_open(RING, blob, blen, aad, k, &p, &plen);
    char msg[128];
    require(crypto_open_errmsg(rc, blob, blen, msg, sizeof(msg)) == msg);
    if (rc != 0) {
        require(known_code(rc));
        require(p == NULL && plen == 0);
        require(strcmp(wsg_strerror(rc), "unknown error") != 0);
        uint32_t id = crypto_blob_key_id(blob, blen);
        if (rc == WSG_E_CRYPTO_UNKNOWN_KEY) require(id != 1 && id != 2);
        if (rc == WSG_E_CRYPTO_SHORT) require(blen < CRYPTO_BLOB_OVERHEAD && id == 0);
        if (rc == WSG_E_CRYPTO_VERSION) require(id == 0);
        return;
    }
    bool found = false;
    for (size_t i = 0; i < NSEEDS && !found; i++) {
        const seed *s = &SEEDS[i];
        if (s->blob_len == blen && memcmp(s->blob, blob, blen) == 0 && strlen(s->aad) == k &&
            memcmp(s->aad, aad, k) == 0) {
            require(plen == strlen(s->plain) && memcmp(p, s->plain, plen) == 0);
            found = true;
        }
    }
    require(found); /* opened something that was never sealed: forgery */
    require(p[plen] == '\0');
    free(p);
}

static void round_trip(const uint8_t *d, size_t n) {
    static const char aad[] = "messages.message:fuzz:1";
    size_t blen = 0;
    uint8_t *b = crypto_seal(RING, d, n, aad, sizeof(aad) - 1, &blen);
    require(b != NULL && blen == n + CRYPTO_BLOB_OVERHEAD);
    require(crypto_blob_key_id(b, blen) == 2);
    char *p = NULL;
    size_t plen = 0;
    require(crypto_open(RING, b, blen, aad, sizeof(aad) - 1, &p, &plen) == 0);
    require(plen == n && (n == 0 || memcmp(p, d, n) == 0) && p[n] == '\0');
    free(p);
    require(crypto_open(RING, b, blen, aad, sizeof(aad) - 2, &p, &plen) == WSG_E_CRYPTO_AUTH);
    require(p == NULL);
    size_t at = n ? d[0] % blen : blen - 1;
    b[at] ^= (uint8_t)(n ? (d[n - 1] | 1) : 0x80);
    int rc = crypto_open(RING, b, blen, aad, sizeof(aad) - 1, &p, &plen);
    require(rc != 0 && known_code(rc) && p == NULL);
    free(b);
}

static void key_file(const uint8_t *d, size_t n, bool rotate) {
    write_file(INPUT_PATH, d, n);
    crypto_keyring *r = NULL;
    wsg_error err = {0};
    int rc = crypto_keyring_open(INPUT_PATH, false, &r, &err);
    if (rc != 0) {
        require(rc < 0 && rc == err.code && r == NULL);
        require(strstr(err.message, INPUT_PATH) != NULL); /* every message names the file */
        return;
    }
    uint32_t ids[64];
    size_t nids = crypto_key_ids(r, ids, 64);
    require(nids >= 1);
    uint32_t active = crypto_active_key_id(r);
    bool has_active = false;
    for (size_t i = 0; i < nids && i < 64; i++) {
        require(ids[i] != 0);
        if (i > 0) require(ids[i] > ids[i - 1]);
        if (ids[i] == active) has_active = true;
    }
    require(has_active || nids > 64);
    size_t blen = 0;
    uint8_t *b = crypto_seal(r, d, n, "a", 1, &blen);
    require(b != NULL && crypto_blob_key_id(b, blen) == active);
    char *p = NULL;
    size_t plen = 0;
    require(crypto_open(r, b, blen, "a", 1, &p, &plen) == 0 && plen == n);
    free(p);
    char i1[65], i2[65];
    crypto_blind_index(r, "fuzz", d, n, i1);
    if (rotate && active < UINT32_MAX && nids < 4096) {
        require(crypto_keyring_rotate(r, 1800000000, &err) == 0);
        crypto_keyring *again = NULL;
        require(crypto_keyring_open(INPUT_PATH, false, &again, &err) == 0);
        require(crypto_active_key_id(again) == crypto_active_key_id(r));
        require(crypto_active_key_id(again) > active);
        require(crypto_open(again, b, blen, "a", 1, &p, &plen) == 0 && plen == n);
        free(p);
        crypto_blind_index(again, "fuzz", d, n, i2);
        require(strcmp(i1, i2) == 0);
        crypto_keyring_free(again);
    } else {
        crypto_blind_index(r, "fuzz", d, n, i2);
        require(strcmp(i1, i2) == 0);
    }
    free(b);
    crypto_keyring_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    uint8_t sel = data[0];
    switch (sel & 3) {
    case 0: open_blob(data + 1, size - 1); break;
    case 1: round_trip(data + 1, size - 1); break;
    default: key_file(data + 1, size - 1, (sel & 0x80) != 0); break;
    }
    return 0;
}
