/* AES-256-GCM sealing of single values and the HMAC-SHA256 blind index,
 * under a key ring's keys (keyring.c). See crypto.h for the blob format. */
#include "crypto/crypto.h"

#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/random.h"
#include "crypto/internal.h"

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
 * with the ring's read lock held. Returns 0, WSG_E_CRYPTO_AUTH or
 * WSG_E_CRYPTO_INTERNAL. */
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
    int rc = WSG_E_CRYPTO_INTERNAL;
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
        rc = EVP_CipherFinal_ex(ctx, out + len, &outl) == 1 ? 0 : WSG_E_CRYPTO_AUTH;
    }
done:
    if (c) {
        /* After an internal failure the context's state is unknown. */
        if (rc == WSG_E_CRYPTO_INTERNAL) c->keyed = false;
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
    if (!blob || len < CRYPTO_BLOB_OVERHEAD) return WSG_E_CRYPTO_SHORT;
    if (blob[0] != CRYPTO_BLOB_VERSION) return WSG_E_CRYPTO_VERSION;
    size_t n = len - CRYPTO_BLOB_OVERHEAD;
    uint8_t tag[CRYPTO_TAG_LEN];
    memcpy(tag, blob + CRYPTO_HEADER_LEN + n, CRYPTO_TAG_LEN);
    crypto_keyring *m = (crypto_keyring *)r;
    pthread_rwlock_rdlock(&m->lock);
    const ring_key *k = keyset_find(r->set, get_be32(blob + 1));
    if (!k) {
        pthread_rwlock_unlock(&m->lock);
        return WSG_E_CRYPTO_UNKNOWN_KEY;
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

const char *crypto_open_errmsg(int code, const uint8_t *blob, size_t len, char *buf,
                               size_t buflen) {
    if (!buf || buflen == 0) return "";
    if (code == WSG_E_CRYPTO_UNKNOWN_KEY && blob && len >= CRYPTO_BLOB_OVERHEAD)
        snprintf(buf, buflen, "encrypted with key %" PRIu32 ", which is not in the key file",
                 get_be32(blob + 1));
    else if (code == WSG_E_CRYPTO_VERSION && blob && len > 0)
        snprintf(buf, buflen, "encrypted value has unknown format version %u", blob[0]);
    else snprintf(buf, buflen, "%s", wsg_strerror(code));
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
