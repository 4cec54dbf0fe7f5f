/* Encryption at rest, standing in for the seed's AWS KMS key: a key ring
 * kept in a JSON key file (mode 0600), AES-256-GCM sealing of single column
 * values bound to their row and column by associated data, key rotation
 * with a deletion window for retired keys, and HMAC-SHA256 blind indexes
 * for columns that must be looked up while encrypted.
 *
 * Key file (written by this module; hand edits are validated on load):
 *
 *   {"version": 1, "active": 2, "index_key": "<base64 32 bytes>",
 *    "keys": [{"id": 1, "key": "<base64 32 bytes>", "created": <unix>,
 *              "retired": <unix>},
 *             {"id": 2, "key": "...", "created": <unix>, "retired": null}]}
 *
 * Sealed value ("blob"), CRYPTO_BLOB_OVERHEAD bytes longer than the value:
 *
 *   [1 byte version = 1][4 bytes key id, big endian][12 bytes random nonce]
 *   [ciphertext, as long as the value][16 bytes GCM tag]
 *
 * The GCM associated data is the first 5 bytes of the blob (version and key
 * id) followed by the caller's AAD, so neither can be changed unnoticed.
 *
 * Threads: after crypto_keyring_open returns, any number of threads may call
 * crypto_seal, crypto_open, crypto_blind_index, crypto_active_key_id and
 * crypto_key_ids concurrently, also while another thread runs
 * crypto_keyring_rotate or crypto_keyring_destroy_expired (those two are
 * serialised among themselves and swap the in-memory ring only after the
 * file was rewritten). crypto_keyring_free must not race with anything.
 * Processes: one process at a time may rotate or destroy keys; a rewrite is
 * refused when the file changed on disk since this ring loaded or wrote it. */
#ifndef WSGATE_CRYPTO_CRYPTO_H
#define WSGATE_CRYPTO_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/error.h"

#define CRYPTO_KEY_LEN       32 /* AES-256 and HMAC-SHA256 key bytes */
#define CRYPTO_BLOB_VERSION  1
#define CRYPTO_HEADER_LEN    17 /* version + key id + nonce */
#define CRYPTO_TAG_LEN       16
#define CRYPTO_BLOB_OVERHEAD (CRYPTO_HEADER_LEN + CRYPTO_TAG_LEN)
#define CRYPTO_INDEX_HEX_LEN 64 /* crypto_blind_index output, without NUL */

/* crypto_open's errors are the WSG_E_CRYPTO_* codes of WSG_ERRNO_MAP
 * (common/error.h); their texts come from wsg_strerror. */

typedef struct crypto_keyring crypto_keyring;

/* Return the key file path for the configuration: `kms_key_file` when it is
 * non-empty, else "<data_dir>/keys.json". Malloc'd; the caller frees. */
char *crypto_key_file_path(const char *data_dir, const char *kms_key_file);

/* Load the key ring from the key file `path`. When the file does not exist
 * and `create` is true, generate a new ring (one active key and an index
 * key, from RAND_bytes) and write it with mode 0600 atomically (temporary
 * file in the same directory opened O_EXCL with mode 0600, fsync, link into
 * place so that a concurrent creator's file is never overwritten, fsync the
 * directory); the directory must exist. Refused, each with a message naming
 * the file: a missing file when `create` is false, a file with any group or
 * other permission bits, a non-regular or oversized file, malformed JSON,
 * an unknown version, a key that is not base64 of exactly 32 bytes, a
 * duplicate or zero id, an active id not in the ring (or retired).
 * Returns 0 and sets *out (free with crypto_keyring_free); on failure
 * returns a negative code (WSG_E_CRYPTO_NO_KEY_FILE, WSG_E_CRYPTO_KEY_FILE
 * for a refused file, WSG_E_IO, WSG_E_INVAL, WSG_E_CRYPTO_INTERNAL), leaves
 * *out NULL and fills *err (when not NULL) with it and a one-line message. */
int crypto_keyring_open(const char *path, bool create, crypto_keyring **out, wsg_error *err);

/* Add a new key (id = highest id + 1) created at `now`, make it the active
 * key and mark the previously active key retired at `now`; rewrite the key
 * file atomically. The in-memory ring changes only once the file is
 * durable. Returns 0, or a negative code with *err filled (ring and file
 * unchanged; WSG_E_CRYPTO_KEY_FILE_CHANGED when another process rewrote the
 * file, WSG_E_CRYPTO_RING_FULL, WSG_E_IO, WSG_E_CRYPTO_INTERNAL). */
int crypto_keyring_rotate(crypto_keyring *r, time_t now, wsg_error *err);

/* Destroy every retired key retired at least `window_days` days before
 * `now` (0..36500) for which in_use(key_id, ctx) returns false (the store
 * answers whether any row is still sealed with that key). in_use is called
 * without any ring lock held, so it may use the ring (e.g. to read rows);
 * it must not be NULL. The active key is never destroyed. When any key is
 * destroyed the file is rewritten atomically and then the key material is
 * zeroed. Returns the number of keys destroyed (0: file untouched), or a
 * negative code with *err filled (ring and file unchanged; WSG_E_INVAL for
 * a NULL in_use or a window out of range). */
int crypto_keyring_destroy_expired(crypto_keyring *r, time_t now, int64_t window_days,
                                   bool (*in_use)(uint32_t key_id, void *ctx), void *ctx,
                                   wsg_error *err);

/* Return the id of the key new values are sealed with. */
uint32_t crypto_active_key_id(const crypto_keyring *r);

/* Copy up to `max` key ids (ascending) into out; returns how many keys the
 * ring holds (which may exceed max). */
size_t crypto_key_ids(const crypto_keyring *r, uint32_t *out, size_t max);

/* Return the key file path of the ring (owned by the ring). */
const char *crypto_keyring_path(const crypto_keyring *r);

/* Zero all key material (OPENSSL_cleanse) and free the ring. NULL is a
 * no-op. */
void crypto_keyring_free(crypto_keyring *r);

/* Seal `len` bytes of `plain` with the active key, binding `aad` (aad_len
 * bytes; NULL when aad_len is 0) to them. Returns a malloc'd blob of
 * len + CRYPTO_BLOB_OVERHEAD bytes (length in *out_len; the caller frees),
 * or NULL only if OpenSSL fails (random generator or cipher), with *out_len
 * set to 0. */
uint8_t *crypto_seal(const crypto_keyring *r, const void *plain, size_t len, const void *aad,
                     size_t aad_len, size_t *out_len);

/* Open a blob made by crypto_seal with the same `aad`. Returns 0 and sets
 * *plain to a malloc'd copy of the value followed by a NUL (the caller
 * frees; the value may itself contain NULs) and *plain_len to its length.
 * On failure returns one of the negative WSG_E_CRYPTO_* codes, sets *plain to
 * NULL and *plain_len to 0, and never exposes unauthenticated bytes. */
int crypto_open(const crypto_keyring *r, const uint8_t *blob, size_t len, const void *aad,
                size_t aad_len, char **plain, size_t *plain_len);

/* Write into buf a message for crypto_open's failure `code` on `blob` that
 * names the key id when it is useful (e.g. "encrypted with key 3, which is
 * not in the key file"). Returns buf. */
const char *crypto_open_errmsg(int code, const uint8_t *blob, size_t len, char *buf, size_t buflen);

/* Return the key id recorded in a blob, or 0 when the blob is shorter than
 * CRYPTO_BLOB_OVERHEAD or has an unknown version (0 is never a key id). */
uint32_t crypto_blob_key_id(const uint8_t *blob, size_t len);

/* Blind index: out = lowercase hex of HMAC-SHA256(index_key, domain || 0x00
 * || v), 64 characters and a NUL. Deterministic for a ring's index key
 * (never rotated) and separated by `domain` (e.g. "messages.user_id").
 * Aborts if OpenSSL fails (as an allocation failure does). */
void crypto_blind_index(const crypto_keyring *r, const char *domain, const void *v, size_t len,
                        char out[CRYPTO_INDEX_HEX_LEN + 1]);

#endif
