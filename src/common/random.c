#include "common/random.h"

#include "common/hex.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_SIZE 4096

/* Static thread-local storage: nothing to free when a thread ends. */
static _Thread_local struct {
    uint8_t bytes[POOL_SIZE];
    size_t used; /* bytes already handed out; POOL_SIZE when empty */
    int filled;  /* 0 until the first refill */
} pool;

static void refill(void) {
    if (RAND_bytes(pool.bytes, POOL_SIZE) != 1) {
        fprintf(stderr, "wsgate: OpenSSL's random generator failed\n");
        abort();
    }
    pool.used = 0;
    pool.filled = 1;
}

void random_bytes(void *buf, size_t n) {
    uint8_t *out = buf;
    if (!pool.filled) pool.used = POOL_SIZE;
    while (n > 0) {
        if (pool.used == POOL_SIZE) refill();
        size_t take = POOL_SIZE - pool.used;
        if (take > n) take = n;
        memcpy(out, pool.bytes + pool.used, take);
        /* A handed-out slice must not linger where a later reader of the
         * pool's memory could find it. */
        OPENSSL_cleanse(pool.bytes + pool.used, take);
        pool.used += take;
        out += take;
        n -= take;
    }
}

void random_hex(char *out, size_t n) {
    uint8_t b[64];
    while (n > 0) {
        size_t take = n < sizeof(b) ? n : sizeof(b);
        random_bytes(b, take);
        hex_encode_lower(b, take, out);
        out += 2 * take;
        n -= take;
    }
}

/* Format 16 bytes as 8-4-4-4-12 lowercase hex. */
static void format_uuid(const uint8_t b[16], char out[37]) {
    char hex[33];
    hex_encode_lower(b, 16, hex);
    memcpy(out, hex, 8);
    out[8] = '-';
    memcpy(out + 9, hex + 8, 4);
    out[13] = '-';
    memcpy(out + 14, hex + 12, 4);
    out[18] = '-';
    memcpy(out + 19, hex + 16, 4);
    out[23] = '-';
    memcpy(out + 24, hex + 20, 12);
    out[36] = '\0';
}

void random_uuid(char out[37]) {
    uint8_t b[16];
    random_bytes(b, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    format_uuid(b, out);
}

void random_uuid7(char out[37]) {
    uint8_t b[16];
    random_bytes(b + 6, sizeof(b) - 6);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    for (int i = 5; i >= 0; i--) {
        b[i] = (uint8_t)ms;
        ms >>= 8;
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x70); /* version 7 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    format_uuid(b, out);
}
