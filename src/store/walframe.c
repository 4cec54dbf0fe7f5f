/* The WAL reader: see walframe.h. */
#include "store/walframe.h"

#include <string.h>

#define WALF_MAGIC_LE 0x377f0682u
#define WALF_MAGIC_BE 0x377f0683u
#define WALF_VERSION  3007000u

uint32_t walf_get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void walf_put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32_le(const uint8_t *p) {
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* SQLite's WAL checksum, continued from ck over n bytes (n a multiple of
 * 8): two sums over pairs of 32-bit words, each feeding the other. */
static void checksum(bool big_endian, const uint8_t *p, size_t n, uint32_t ck[2]) {
    uint32_t s0 = ck[0], s1 = ck[1];
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint32_t x0 = big_endian ? walf_get32(p + i) : get32_le(p + i);
        uint32_t x1 = big_endian ? walf_get32(p + i + 4) : get32_le(p + i + 4);
        s0 += x0 + s1;
        s1 += x1 + s0;
    }
    ck[0] = s0;
    ck[1] = s1;
}

int walf_header(walf *w, const uint8_t *buf, size_t len) {
    if (len < WALF_HEADER_LEN) return -1;
    uint32_t magic = walf_get32(buf);
    if (magic != WALF_MAGIC_LE && magic != WALF_MAGIC_BE) return -1;
    if (walf_get32(buf + 4) != WALF_VERSION) return -1;
    uint32_t ps = walf_get32(buf + 8);
    /* A power of two from 512 to 65536. */
    if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0) return -1;
    walf n = {.page_size = ps, .big_endian = magic == WALF_MAGIC_BE};
    checksum(n.big_endian, buf, 24, n.cksum);
    if (n.cksum[0] != walf_get32(buf + 24) || n.cksum[1] != walf_get32(buf + 28)) return -1;
    n.salt[0] = walf_get32(buf + 16);
    n.salt[1] = walf_get32(buf + 20);
    *w = n;
    return 0;
}

size_t walf_frame_len(const walf *w) { return WALF_FRAME_HEADER_LEN + (size_t)w->page_size; }

size_t walf_scan(walf *w, const uint8_t *buf, size_t len) {
    size_t flen = walf_frame_len(w), off = 0, committed = 0;
    uint32_t ck[2] = {w->cksum[0], w->cksum[1]};
    uint64_t frames = w->frames;
    while (len - off >= flen) {
        const uint8_t *f = buf + off;
        /* A frame of another generation (old salts), or one whose checksum
         * breaks the chain, ends the log as SQLite's recovery sees it. */
        if (walf_get32(f) == 0 || walf_get32(f + 8) != w->salt[0] ||
            walf_get32(f + 12) != w->salt[1])
            break;
        checksum(w->big_endian, f, 8, ck);
        checksum(w->big_endian, f + WALF_FRAME_HEADER_LEN, w->page_size, ck);
        if (ck[0] != walf_get32(f + 16) || ck[1] != walf_get32(f + 20)) break;
        off += flen;
        frames++;
        uint32_t commit = walf_get32(f + 4);
        if (commit) {
            committed = off;
            w->cksum[0] = ck[0];
            w->cksum[1] = ck[1];
            w->frames = frames;
            w->db_pages = commit;
        }
    }
    return committed;
}

uint32_t walf_frame_pgno(const uint8_t *f) { return walf_get32(f); }
uint32_t walf_frame_commit(const uint8_t *f) { return walf_get32(f + 4); }
const uint8_t *walf_frame_page(const uint8_t *f) { return f + WALF_FRAME_HEADER_LEN; }
