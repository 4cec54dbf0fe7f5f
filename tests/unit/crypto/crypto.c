/* Unit tests for encryption at rest (src/crypto/): the key file
 * (creation with mode 0600, reload, every refusal naming the file), sealing
 * and opening column values (sizes, nonces, tampering, AAD binding), key
 * rotation, destruction of retired keys after the deletion window, blind
 * indexes and concurrent use. Every test works in its own directory under
 * /tmp, removed afterwards. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/crypto.h"

#define K32A "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define K32B "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
#define K31  "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg=="
#define KIDX "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
#define DAY  86400
/* A hand-written key file: key 3 retired, key 7 active. */
#define KEYS_3_AND_7                                                                               \
    "{\"version\":1,\"active\":7,\"index_key\":\"" KIDX "\",\"keys\":["                            \
    "{\"id\":3,\"key\":\"" K32A "\",\"created\":100,\"retired\":200},"                             \
    "{\"id\":7,\"key\":\"" K32B "\",\"created\":200}]}"

static char tmpdir[64];
static char keypath[128];
static crypto_keyring *RING;

static void init(void) {
    strcpy(tmpdir, "/tmp/wsgate_crypto_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(keypath, sizeof(keypath), "%s/keys.json", tmpdir);
}

static void fini(void) {
    crypto_keyring_free(RING);
    RING = NULL;
    if (tmpdir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        cr_assert_eq(system(cmd), 0);
        tmpdir[0] = '\0';
    }
}

TestSuite(crypto, .init = init, .fini = fini);

/* ---------------------------------------------------------------- helpers */

static void write_text(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(path, mode), 0);
}

static crypto_keyring *open_ok(const char *path, bool create) {
    wsg_error werr = {0};
    char *err = werr.message;
    crypto_keyring *r = NULL;
    int rc = crypto_keyring_open(path, create, &r, &werr);
    cr_assert_eq(rc, 0, "open %s: %s", path, err);
    cr_assert_not_null(r);
    return r;
}

/* Write `text` as the key file (mode 0600 unless given) and expect a
 * refusal whose message names the file and contains `needle`. */
static void expect_refused(const char *text, mode_t mode, const char *needle) {
    write_text(keypath, text, mode);
    wsg_error werr = {0};
    char *err = werr.message;
    crypto_keyring *r = (crypto_keyring *)1;
    int rc = crypto_keyring_open(keypath, true, &r, &werr);
    cr_assert_lt(rc, 0, "accepted: %s", text);
    cr_assert_eq(werr.code, rc);
    cr_assert_null(r);
    cr_assert_not_null(strstr(err, keypath), "message does not name the file: %s", err);
    cr_assert_not_null(strstr(err, needle), "message lacks '%s': %s", needle, err);
}

static uint8_t *seal_str(crypto_keyring *r, const char *s, const char *aad, size_t *n) {
    uint8_t *b = crypto_seal(r, s, strlen(s), aad, aad ? strlen(aad) : 0, n);
    cr_assert_not_null(b);
    cr_assert_eq(*n, strlen(s) + CRYPTO_BLOB_OVERHEAD);
    return b;
}

static int open_str(crypto_keyring *r, const uint8_t *b, size_t n, const char *aad, char **out) {
    size_t len = 99;
    int rc = crypto_open(r, b, n, aad, aad ? strlen(aad) : 0, out, &len);
    if (rc != 0) {
        cr_assert_null(*out);
        cr_assert_eq(len, 0);
    } else {
        cr_assert_eq(strlen(*out), len);
    }
    return rc;
}

static void expect_ids(crypto_keyring *r, const uint32_t *want, size_t n) {
    uint32_t got[16];
    size_t have = crypto_key_ids(r, got, 16);
    cr_assert_eq(have, n, "ring holds %zu keys, expected %zu", have, n);
    for (size_t i = 0; i < n; i++) cr_assert_eq(got[i], want[i]);
}

static json_t *load_json(const char *path) {
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    cr_assert_not_null(j, "%s: %s", path, e.text);
    return j;
}

/* ---------------------------------------------------------------- key file */

Test(crypto, create_writes_0600_and_reopen_reads_same_keys) {
    RING = open_ok(keypath, true);
    struct stat st;
    cr_assert_eq(stat(keypath, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
    cr_assert_eq(crypto_active_key_id(RING), 1);
    expect_ids(RING, (uint32_t[]){1}, 1);
    cr_assert_str_eq(crypto_keyring_path(RING), keypath);

    json_t *j = load_json(keypath);
    cr_assert_eq(json_integer_value(json_object_get(j, "version")), 1);
    cr_assert_eq(json_integer_value(json_object_get(j, "active")), 1);
    cr_assert_eq(json_string_length(json_object_get(j, "index_key")), 44);
    json_t *k = json_array_get(json_object_get(j, "keys"), 0);
    cr_assert_eq(json_string_length(json_object_get(k, "key")), 44);
    cr_assert(json_is_null(json_object_get(k, "retired")));
    cr_assert(llabs((long long)json_integer_value(json_object_get(k, "created")) -
                    (long long)time(NULL)) < 60);
    json_decref(j);

    /* No temporary files are left behind. */
    char cmd[192];
    snprintf(cmd, sizeof(cmd), "test $(ls -A '%s' | wc -l) -eq 1", tmpdir);
    cr_assert_eq(system(cmd), 0);

    /* Reopening (create or not) reads the same keys, not new ones. */
    crypto_keyring *again = open_ok(keypath, false);
    crypto_keyring *third = open_ok(keypath, true);
    size_t n;
    uint8_t *b = seal_str(RING, "hello", "aad", &n);
    char *p = NULL;
    cr_assert_eq(open_str(again, b, n, "aad", &p), 0);
    cr_assert_str_eq(p, "hello");
    free(p);
    cr_assert_eq(open_str(third, b, n, "aad", &p), 0);
    free(p);
    char i1[65], i2[65];
    crypto_blind_index(RING, "d", "v", 1, i1);
    crypto_blind_index(again, "d", "v", 1, i2);
    cr_assert_str_eq(i1, i2);
    free(b);
    crypto_keyring_free(again);
    crypto_keyring_free(third);
}

Test(crypto, loads_hand_written_file) {
    write_text(keypath, KEYS_3_AND_7, 0600);
    RING = open_ok(keypath, false);
    cr_assert_eq(crypto_active_key_id(RING), 7);
    expect_ids(RING, (uint32_t[]){3, 7}, 2);
    size_t n;
    uint8_t *b = seal_str(RING, "x", NULL, &n);
    cr_assert_eq(crypto_blob_key_id(b, n), 7);
    free(b);
    /* Known answer for the blind index: HMAC-SHA256(7*32, "d\0v"). */
    char idx[65];
    crypto_blind_index(RING, "d", "v", 1, idx);
    cr_assert_str_eq(idx, "5b080b3ee1c987c4fa0013fe7242be222564e18adae285b85c818ff436a7ae98");
    /* Later calls reuse the keyed HMAC context: the answers must not drift
     * (the state is reset, the key kept). */
    crypto_blind_index(RING, "messages.user_id", "user-1", 6, idx);
    cr_assert_str_eq(idx, "16e8016b17207c559d5523e5fe1809ada1d656a10cd45b0b33012a5e68cf3565");
    crypto_blind_index(RING, "d", "v", 1, idx);
    cr_assert_str_eq(idx, "5b080b3ee1c987c4fa0013fe7242be222564e18adae285b85c818ff436a7ae98");
}

/* Sealing and opening keep a keyed context between calls; it must follow
 * each blob's key and each rotation, and a failed open must not spoil it. */
Test(crypto, cached_contexts_follow_keys_and_survive_failures) {
    write_text(keypath, KEYS_3_AND_7, 0600);
    RING = open_ok(keypath, false);
    size_t n7, n;
    uint8_t *b7 = seal_str(RING, "under seven", "aad", &n7);
    wsg_error werr = {0};
    char *err = werr.message;
    cr_assert_eq(crypto_keyring_rotate(RING, 1700000000, &werr), 0, "%s", err);
    uint8_t *b8 = seal_str(RING, "under eight", "aad", &n);
    cr_assert_eq(crypto_blob_key_id(b7, n7), 7);
    cr_assert_eq(crypto_blob_key_id(b8, n), 8);
    char *p = NULL;
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(open_str(RING, b7, n7, "aad", &p), 0);
        cr_assert_str_eq(p, "under seven");
        free(p);
        cr_assert_eq(open_str(RING, b8, n, "aad", &p), 0);
        cr_assert_str_eq(p, "under eight");
        free(p);
        /* A tag that fails to verify leaves the context usable. */
        b8[n - 1] ^= 1;
        cr_assert_eq(open_str(RING, b8, n, "aad", &p), WSG_E_CRYPTO_AUTH);
        b8[n - 1] ^= 1;
    }
    /* A fresh ring (no cached state) reads what the cached one sealed. */
    crypto_keyring *again = open_ok(keypath, false);
    cr_assert_eq(open_str(again, b8, n, "aad", &p), 0);
    cr_assert_str_eq(p, "under eight");
    free(p);
    crypto_keyring_free(again);
    free(b7);
    free(b8);
}

Test(crypto, missing_file_without_create_fails) {
    wsg_error werr = {0};
    char *err = werr.message;
    crypto_keyring *r = (crypto_keyring *)1;
    cr_assert_eq(crypto_keyring_open(keypath, false, &r, &werr), WSG_E_CRYPTO_NO_KEY_FILE);
    cr_assert_null(r);
    cr_assert_not_null(strstr(err, keypath), "%s", err);
    cr_assert_not_null(strstr(err, "does not exist"), "%s", err);
    cr_assert_neq(access(keypath, F_OK), 0);
}

Test(crypto, missing_directory_fails_clearly) {
    char path[192];
    wsg_error werr = {0};
    char *err = werr.message;
    snprintf(path, sizeof(path), "%s/nodir/keys.json", tmpdir);
    crypto_keyring *r = NULL;
    cr_assert_eq(crypto_keyring_open(path, true, &r, &werr), WSG_E_IO);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_eq(crypto_keyring_open("", true, &r, &werr), WSG_E_INVAL);
}

Test(crypto, refuses_group_or_world_readable_file) {
    RING = open_ok(keypath, true);
    crypto_keyring_free(RING);
    RING = NULL;
    wsg_error werr = {0};
    char *err = werr.message;
    crypto_keyring *r = NULL;
    const mode_t modes[] = {0644, 0640, 0604, 0660, 0602};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        cr_assert_eq(chmod(keypath, modes[i]), 0);
        cr_assert_eq(crypto_keyring_open(keypath, true, &r, &werr), WSG_E_CRYPTO_KEY_FILE);
        cr_assert_null(r);
        char want[256];
        snprintf(want, sizeof(want),
                 "key file %s must not be readable by group or others (chmod 600)", keypath);
        cr_assert_str_eq(err, want);
    }
    cr_assert_eq(chmod(keypath, 0400), 0);
    RING = open_ok(keypath, false);
}

Test(crypto, refuses_malformed_json) {
    expect_refused("{\"version\":1,", 0600, "malformed JSON");
    expect_refused("", 0600, "malformed JSON");
    expect_refused("[]", 0600, "object");
    expect_refused("{\"version\":1,\"version\":1}", 0600, "malformed JSON"); /* duplicate key */
}

Test(crypto, refuses_wrong_key_lengths) {
    expect_refused("{\"version\":1,\"active\":1,\"index_key\":\"" KIDX "\",\"keys\":["
                   "{\"id\":1,\"key\":\"" K31 "\",\"created\":1,\"retired\":null}]}",
                   0600, "key 1 is 31 bytes, expected 32");
    expect_refused("{\"version\":1,\"active\":1,\"index_key\":\"" K31 "\",\"keys\":["
                   "{\"id\":1,\"key\":\"" K32A "\",\"created\":1,\"retired\":null}]}",
                   0600, "index_key");
    expect_refused("{\"version\":1,\"active\":1,\"index_key\":\"" KIDX "\",\"keys\":["
                   "{\"id\":1,\"key\":\"" K32A "AAAA\",\"created\":1}]}",
                   0600, "key 1");
    expect_refused("{\"version\":1,\"active\":1,\"index_key\":\"" KIDX "\",\"keys\":["
                   "{\"id\":1,\"key\":\"not base64!\",\"created\":1}]}",
                   0600, "not base64");
}

Test(crypto, refuses_duplicate_ids_and_bad_active) {
    expect_refused("{\"version\":1,\"active\":1,\"index_key\":\"" KIDX "\",\"keys\":["
                   "{\"id\":1,\"key\":\"" K32A "\",\"created\":1,\"retired\":null},"
                   "{\"id\":1,\"key\":\"" K32B "\",\"created\":2,\"retired\":null}]}",
                   0600, "duplicate key id 1");
    expect_refused("{\"version\":1,\"active\":5,\"index_key\":\"" KIDX "\",\"keys\":["
                   "{\"id\":1,\"key\":\"" K32A "\",\"created\":1,\"retired\":null}]}",
                   0600, "active key 5 is not in");
    expect_refused("{\"version\":1,\"active\":1,\"index_key\":\"" KIDX "\",\"keys\":["
                   "{\"id\":1,\"key\":\"" K32A "\",\"created\":1,\"retired\":5}]}",
                   0600, "retired");
    expect_refused("{\"version\":2,\"active\":1,\"index_key\":\"" KIDX "\",\"keys\":["
                   "{\"id\":1,\"key\":\"" K32A "\",\"created\":1}]}",
                   0600, "version");
    expect_refused("{\"version\":1,\"active\":1,\"index_key\":\"" KIDX "\",\"keys\":[]}", 0600,
                   "keys");
    expect_refused("{\"version\":1,\"active\":0,\"index_key\":\"" KIDX "\",\"keys\":["
                   "{\"id\":0,\"key\":\"" K32A "\",\"created\":1}]}",
                   0600, "active");
    expect_refused("{\"version\":1,\"active\":1,\"index_key\":\"" KIDX "\",\"keys\":["
                   "{\"id\":1,\"key\":\"" K32A "\",\"created\":\"yesterday\"}]}",
                   0600, "created");
}

/* ---------------------------------------------------------------- sealing */

Test(crypto, seal_open_round_trip_sizes) {
    RING = open_ok(keypath, true);
    const char *aad = "messages.message:room-1:42";
    size_t sizes[] = {0, 1, 5, 15, 16, 17, 1000, 1024 * 1024};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t len = sizes[s];
        uint8_t *plain = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++) plain[i] = (uint8_t)(i * 31 + 7); /* includes NULs */
        size_t n = 0;
        uint8_t *b = crypto_seal(RING, len ? plain : NULL, len, aad, strlen(aad), &n);
        cr_assert_not_null(b);
        cr_assert_eq(n, len + CRYPTO_BLOB_OVERHEAD);
        cr_assert_eq(b[0], 1);
        cr_assert_eq(b[1] | b[2] | b[3], 0);
        cr_assert_eq(b[4], 1);
        cr_assert_eq(crypto_blob_key_id(b, n), 1);
        if (len >= 16) cr_assert_neq(memcmp(b + CRYPTO_HEADER_LEN, plain, 16), 0);
        char *out = NULL;
        size_t outlen = 0;
        cr_assert_eq(crypto_open(RING, b, n, aad, strlen(aad), &out, &outlen), 0);
        cr_assert_eq(outlen, len);
        cr_assert_eq(memcmp(out, plain, len), 0);
        cr_assert_eq(out[len], '\0');
        free(out);
        free(b);
        free(plain);
    }
}

Test(crypto, nonces_differ) {
    RING = open_ok(keypath, true);
    size_t n1, n2;
    uint8_t *a = seal_str(RING, "same value", "aad", &n1);
    uint8_t *b = seal_str(RING, "same value", "aad", &n2);
    cr_assert_neq(memcmp(a + 5, b + 5, 12), 0, "nonce reused");
    cr_assert_neq(memcmp(a + CRYPTO_HEADER_LEN, b + CRYPTO_HEADER_LEN, n1 - CRYPTO_HEADER_LEN), 0);
    free(a);
    free(b);
}

Test(crypto, tampering_any_byte_fails) {
    RING = open_ok(keypath, true);
    cr_assert_eq(crypto_keyring_rotate(RING, time(NULL), NULL), 0); /* keys 1 and 2 */
    size_t n;
    uint8_t *b = seal_str(RING, "the quick brown fox", "messages.message:r:1", &n);
    uint8_t *t = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(t, b, n);
            t[i] ^= (uint8_t)(1u << bit);
            char *p = NULL;
            int rc = open_str(RING, t, n, "messages.message:r:1", &p);
            if (i == 0) cr_assert_eq(rc, WSG_E_CRYPTO_VERSION);
            else if (i < 5 && crypto_blob_key_id(t, n) != 1 && crypto_blob_key_id(t, n) != 2)
                cr_assert_eq(rc, WSG_E_CRYPTO_UNKNOWN_KEY, "byte %zu bit %d: %d", i, bit, rc);
            else cr_assert_eq(rc, WSG_E_CRYPTO_AUTH, "byte %zu bit %d: %d", i, bit, rc);
        }
    }
    /* Truncated and extended blobs. */
    char *p = NULL;
    for (size_t len = 0; len < n; len++) {
        int rc = open_str(RING, b, len, "messages.message:r:1", &p);
        cr_assert_eq(rc, len < CRYPTO_BLOB_OVERHEAD ? WSG_E_CRYPTO_SHORT : WSG_E_CRYPTO_AUTH);
    }
    memcpy(t, b, n);
    t[n] = 0;
    cr_assert_eq(open_str(RING, t, n + 1, "messages.message:r:1", &p), WSG_E_CRYPTO_AUTH);
    cr_assert_eq(open_str(RING, NULL, 0, NULL, &p), WSG_E_CRYPTO_SHORT);
    free(t);
    free(b);
}

Test(crypto, wrong_aad_fails) {
    RING = open_ok(keypath, true);
    size_t n;
    uint8_t *b = seal_str(RING, "hi", "messages.message:room1:1", &n);
    char *p = NULL;
    cr_assert_eq(open_str(RING, b, n, "messages.message:room1:2", &p), WSG_E_CRYPTO_AUTH);
    cr_assert_eq(open_str(RING, b, n, "messages.message:room2:1", &p), WSG_E_CRYPTO_AUTH);
    cr_assert_eq(open_str(RING, b, n, "messages.username:room1:1", &p), WSG_E_CRYPTO_AUTH);
    cr_assert_eq(open_str(RING, b, n, NULL, &p), WSG_E_CRYPTO_AUTH);
    cr_assert_eq(open_str(RING, b, n, "messages.message:room1:1", &p), 0);
    cr_assert_str_eq(p, "hi");
    free(p);
    free(b);
    /* Sealed without AAD: only opens without AAD. */
    b = seal_str(RING, "hi", NULL, &n);
    cr_assert_eq(open_str(RING, b, n, "x", &p), WSG_E_CRYPTO_AUTH);
    cr_assert_eq(open_str(RING, b, n, NULL, &p), 0);
    free(p);
    free(b);
}

Test(crypto, other_ring_cannot_open) {
    RING = open_ok(keypath, true);
    char other[192];
    snprintf(other, sizeof(other), "%s/other.json", tmpdir);
    crypto_keyring *o = open_ok(other, true); /* also key id 1, different key */
    size_t n;
    uint8_t *b = seal_str(RING, "secret", "a", &n);
    char *p = NULL;
    cr_assert_eq(open_str(o, b, n, "a", &p), WSG_E_CRYPTO_AUTH);
    free(b);
    crypto_keyring_free(o);
}

/* ---------------------------------------------------------------- rotation */

Test(crypto, rotation_keeps_old_blobs_readable) {
    RING = open_ok(keypath, true);
    size_t n1, n2;
    uint8_t *old = seal_str(RING, "before", "aad", &n1);
    wsg_error werr = {0};
    char *err = werr.message;
    time_t now = 1700000000;
    cr_assert_eq(crypto_keyring_rotate(RING, now, &werr), 0, "%s", err);
    cr_assert_eq(crypto_active_key_id(RING), 2);
    expect_ids(RING, (uint32_t[]){1, 2}, 2);
    uint8_t *fresh = seal_str(RING, "after", "aad", &n2);
    cr_assert_eq(crypto_blob_key_id(old, n1), 1);
    cr_assert_eq(crypto_blob_key_id(fresh, n2), 2);
    char *p = NULL;
    cr_assert_eq(open_str(RING, old, n1, "aad", &p), 0);
    cr_assert_str_eq(p, "before");
    free(p);

    /* The file says so too, still 0600, and a reload reads both. */
    struct stat st;
    cr_assert_eq(stat(keypath, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    json_t *j = load_json(keypath);
    cr_assert_eq(json_integer_value(json_object_get(j, "active")), 2);
    json_t *k1 = json_array_get(json_object_get(j, "keys"), 0);
    json_t *k2 = json_array_get(json_object_get(j, "keys"), 1);
    cr_assert_eq(json_integer_value(json_object_get(k1, "retired")), now);
    cr_assert(json_is_null(json_object_get(k2, "retired")));
    cr_assert_eq(json_integer_value(json_object_get(k2, "created")), now);
    json_decref(j);
    crypto_keyring *again = open_ok(keypath, false);
    cr_assert_eq(crypto_active_key_id(again), 2);
    cr_assert_eq(open_str(again, old, n1, "aad", &p), 0);
    free(p);
    cr_assert_eq(open_str(again, fresh, n2, "aad", &p), 0);
    cr_assert_str_eq(p, "after");
    free(p);

    /* Blind indexes do not change with rotation. */
    char a[65], b[65];
    crypto_blind_index(RING, "messages.user_id", "u1", 2, a);
    crypto_blind_index(again, "messages.user_id", "u1", 2, b);
    cr_assert_str_eq(a, b);
    crypto_keyring_free(again);

    cr_assert_eq(crypto_keyring_rotate(RING, now + 10, &werr), 0, "%s", err);
    expect_ids(RING, (uint32_t[]){1, 2, 3}, 3);
    cr_assert_eq(open_str(RING, old, n1, "aad", &p), 0);
    free(p);
    free(old);
    free(fresh);
}

Test(crypto, rewrite_refused_when_file_changed_on_disk) {
    RING = open_ok(keypath, true);
    crypto_keyring *other = open_ok(keypath, false);
    wsg_error werr = {0};
    char *err = werr.message;
    cr_assert_eq(crypto_keyring_rotate(other, 1000, &werr), 0, "%s", err);
    cr_assert_eq(crypto_keyring_rotate(RING, 2000, &werr), WSG_E_CRYPTO_KEY_FILE_CHANGED);
    cr_assert_not_null(strstr(err, "changed on disk"), "%s", err);
    cr_assert_not_null(strstr(err, keypath), "%s", err);
    cr_assert_eq(crypto_active_key_id(RING), 1); /* unchanged */
    crypto_keyring_free(other);
    crypto_keyring *fresh = open_ok(keypath, false);
    cr_assert_eq(crypto_active_key_id(fresh), 2); /* the other process's rotation survived */
    crypto_keyring_free(fresh);
}

/* ---------------------------------------------------------------- destruction */

typedef struct use_ctx {
    uint32_t busy; /* this id is reported in use */
    uint32_t asked[16];
    size_t nasked;
} use_ctx;

static bool in_use_cb(uint32_t id, void *ctx) {
    use_ctx *u = ctx;
    if (u->nasked < 16) u->asked[u->nasked++] = id;
    return id == u->busy;
}

Test(crypto, destroy_expired_honours_window_and_in_use) {
    RING = open_ok(keypath, true);
    wsg_error werr = {0};
    char *err = werr.message;
    time_t t0 = 1700000000;
    size_t n1, n2;
    uint8_t *b1 = seal_str(RING, "one", "aad", &n1);
    cr_assert_eq(crypto_keyring_rotate(RING, t0, &werr), 0, "%s", err);
    uint8_t *b2 = seal_str(RING, "two", "aad", &n2);
    cr_assert_eq(crypto_keyring_rotate(RING, t0 + 3 * DAY, &werr), 0, "%s", err);
    expect_ids(RING, (uint32_t[]){1, 2, 3}, 3);

    /* Inside the window: nothing is asked, nothing destroyed. */
    use_ctx u = {0};
    cr_assert_eq(crypto_keyring_destroy_expired(RING, t0 + 7 * DAY - 1, 7, in_use_cb, &u, &werr), 0,
                 "%s", err);
    cr_assert_eq(u.nasked, 0);
    expect_ids(RING, (uint32_t[]){1, 2, 3}, 3);

    /* Key 1 past the window but still in use: kept. */
    u = (use_ctx){.busy = 1};
    cr_assert_eq(crypto_keyring_destroy_expired(RING, t0 + 7 * DAY, 7, in_use_cb, &u, &werr), 0,
                 "%s", err);
    cr_assert_eq(u.nasked, 1);
    cr_assert_eq(u.asked[0], 1);
    expect_ids(RING, (uint32_t[]){1, 2, 3}, 3);

    /* No longer in use: destroyed; key 2 (retired 3 days later) is not yet
     * due, key 3 is active. */
    u = (use_ctx){0};
    cr_assert_eq(crypto_keyring_destroy_expired(RING, t0 + 7 * DAY, 7, in_use_cb, &u, &werr), 1,
                 "%s", err);
    expect_ids(RING, (uint32_t[]){2, 3}, 2);
    cr_assert_eq(crypto_active_key_id(RING), 3);

    char *p = NULL;
    cr_assert_eq(open_str(RING, b1, n1, "aad", &p), WSG_E_CRYPTO_UNKNOWN_KEY);
    char msg[128];
    cr_assert_str_eq(crypto_open_errmsg(WSG_E_CRYPTO_UNKNOWN_KEY, b1, n1, msg, sizeof(msg)),
                     "encrypted with key 1, which is not in the key file");
    cr_assert_eq(open_str(RING, b2, n2, "aad", &p), 0);
    cr_assert_str_eq(p, "two");
    free(p);

    /* The file no longer holds key 1. */
    crypto_keyring *again = open_ok(keypath, false);
    expect_ids(again, (uint32_t[]){2, 3}, 2);
    cr_assert_eq(open_str(again, b1, n1, "aad", &p), WSG_E_CRYPTO_UNKNOWN_KEY);
    crypto_keyring_free(again);

    /* With a 30-day window key 2 waits; the active key is never offered. */
    u = (use_ctx){0};
    cr_assert_eq(crypto_keyring_destroy_expired(RING, t0 + 32 * DAY, 30, in_use_cb, &u, &werr), 0);
    cr_assert_eq(u.nasked, 0);
    u = (use_ctx){0};
    cr_assert_eq(crypto_keyring_destroy_expired(RING, t0 + 33 * DAY, 30, in_use_cb, &u, &werr), 1);
    cr_assert_eq(u.nasked, 1);
    cr_assert_eq(u.asked[0], 2);
    expect_ids(RING, (uint32_t[]){3}, 1);
    cr_assert_eq(crypto_keyring_destroy_expired(RING, t0 + 3650 * DAY, 7, in_use_cb, &u, &werr), 0);
    expect_ids(RING, (uint32_t[]){3}, 1);

    /* A new key after destruction never reuses an id still in the ring. */
    cr_assert_eq(crypto_keyring_rotate(RING, t0 + 40 * DAY, &werr), 0);
    cr_assert_eq(crypto_active_key_id(RING), 4);

    /* Bad arguments. */
    cr_assert_eq(crypto_keyring_destroy_expired(RING, t0, 7, NULL, NULL, &werr), WSG_E_INVAL);
    cr_assert_eq(crypto_keyring_destroy_expired(RING, t0, -1, in_use_cb, &u, &werr), WSG_E_INVAL);
    free(b1);
    free(b2);
}

/* ---------------------------------------------------------------- blind index */

Test(crypto, blind_index_deterministic_and_domain_separated) {
    RING = open_ok(keypath, true);
    char a[65], b[65], c[65], d[65], e[65];
    crypto_blind_index(RING, "messages.user_id", "user-1", 6, a);
    crypto_blind_index(RING, "messages.user_id", "user-1", 6, b);
    cr_assert_str_eq(a, b);
    cr_assert_eq(strlen(a), 64);
    cr_assert_eq(strspn(a, "0123456789abcdef"), 64);
    crypto_blind_index(RING, "messages.client_message_id", "user-1", 6, c);
    cr_assert_str_neq(a, c);
    crypto_blind_index(RING, "messages.user_id", "user-2", 6, c);
    cr_assert_str_neq(a, c);
    /* The separator keeps ("ab", "c") apart from ("a", "bc"). */
    crypto_blind_index(RING, "ab", "c", 1, d);
    crypto_blind_index(RING, "a", "bc", 2, e);
    cr_assert_str_neq(d, e);
    crypto_blind_index(RING, "d", NULL, 0, d);
    cr_assert_eq(strlen(d), 64);
    /* Another ring's index key gives other indexes. */
    char other[192];
    snprintf(other, sizeof(other), "%s/other.json", tmpdir);
    crypto_keyring *o = open_ok(other, true);
    crypto_blind_index(o, "messages.user_id", "user-1", 6, c);
    cr_assert_str_neq(a, c);
    crypto_keyring_free(o);
}

/* ---------------------------------------------------------------- misc */

Test(crypto, error_texts_and_key_ids) {
    cr_assert_str_eq(wsg_strerror(WSG_E_CRYPTO_AUTH),
                     "authentication failed: wrong key or tampered data");
    cr_assert_str_eq(wsg_strerror(0), "success");
    cr_assert_str_eq(wsg_strerror(-99), "unknown error");
    cr_assert_str_neq(wsg_strerror(WSG_E_CRYPTO_SHORT), "unknown error");
    cr_assert_str_neq(wsg_strerror(WSG_E_CRYPTO_VERSION), "unknown error");
    cr_assert_str_neq(wsg_strerror(WSG_E_CRYPTO_UNKNOWN_KEY), "unknown error");
    uint8_t blob[CRYPTO_BLOB_OVERHEAD] = {1, 0, 0, 1, 2};
    cr_assert_eq(crypto_blob_key_id(blob, sizeof(blob)), 258);
    cr_assert_eq(crypto_blob_key_id(blob, sizeof(blob) - 1), 0);
    blob[0] = 2;
    cr_assert_eq(crypto_blob_key_id(blob, sizeof(blob)), 0);
    char msg[96];
    cr_assert_str_eq(crypto_open_errmsg(WSG_E_CRYPTO_VERSION, blob, sizeof(blob), msg, sizeof(msg)),
                     "encrypted value has unknown format version 2");
    cr_assert_str_eq(crypto_open_errmsg(WSG_E_CRYPTO_AUTH, blob, sizeof(blob), msg, sizeof(msg)),
                     wsg_strerror(WSG_E_CRYPTO_AUTH));
}

Test(crypto, key_file_path) {
    char *p = crypto_key_file_path("/var/lib/wsgate", "");
    cr_assert_str_eq(p, "/var/lib/wsgate/keys.json");
    free(p);
    p = crypto_key_file_path("data/", NULL);
    cr_assert_str_eq(p, "data/keys.json");
    free(p);
    p = crypto_key_file_path("/", "");
    cr_assert_str_eq(p, "/keys.json");
    free(p);
    p = crypto_key_file_path("data", "/etc/wsgate/keys.json");
    cr_assert_str_eq(p, "/etc/wsgate/keys.json");
    free(p);
}

/* ---------------------------------------------------------------- threads */

typedef struct worker {
    crypto_keyring *r;
    int id;
    int failures;
} worker;

static void *seal_open_loop(void *arg) {
    worker *w = arg;
    char value[64], aad[64];
    for (int i = 0; i < 400; i++) {
        snprintf(value, sizeof(value), "value %d/%d", w->id, i);
        snprintf(aad, sizeof(aad), "messages.message:room%d:%d", w->id, i);
        size_t n;
        uint8_t *b = crypto_seal(w->r, value, strlen(value), aad, strlen(aad), &n);
        char *p = NULL;
        size_t len;
        if (!b || crypto_open(w->r, b, n, aad, strlen(aad), &p, &len) != 0 || strcmp(p, value) != 0)
            w->failures++;
        free(p);
        free(b);
    }
    return NULL;
}

Test(crypto, concurrent_seal_open_during_rotation) {
    RING = open_ok(keypath, true);
    pthread_t th[4];
    worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){.r = RING, .id = i};
        cr_assert_eq(pthread_create(&th[i], NULL, seal_open_loop, &w[i]), 0);
    }
    wsg_error werr = {0};
    char *err = werr.message;
    for (int i = 0; i < 5; i++)
        cr_assert_eq(crypto_keyring_rotate(RING, 1000 + i, &werr), 0, "%s", err);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].failures, 0);
    }
    cr_assert_eq(crypto_active_key_id(RING), 6);
}
