/* An I/O-free reader of SQLite's write-ahead log (the -wal file), for the
 * point-in-time archive: it validates the 32-byte header and the frames
 * after it (24-byte frame header + one page) the way SQLite's own recovery
 * does (salts equal to the header's, the running checksum unbroken) and
 * says how far the committed frames go. A frame is committed when it, or a
 * later valid frame, is a commit frame (non-zero "database size after
 * commit"); valid frames after the last commit frame belong to a
 * transaction still being written (or torn) and are not counted.
 *
 * Layouts (all integers big-endian), from https://sqlite.org/fileformat.html:
 *   header: magic (0x377f0682: checksums over little-endian words,
 *           0x377f0683: big-endian), version 3007000, page size,
 *           checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2
 *   frame:  page number, db size after commit (0: not a commit), salt-1,
 *           salt-2, checksum-1, checksum-2, then the page. */
#ifndef WSGATE_STORE_WALFRAME_H
#define WSGATE_STORE_WALFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WALF_HEADER_LEN       32
#define WALF_FRAME_HEADER_LEN 24

/* Where a reader stands in one generation of a WAL (a generation ends when
 * SQLite restarts the log with new salts). */
typedef struct walf {
    uint32_t page_size;
    uint32_t salt[2];
    uint32_t cksum[2]; /* the running checksum after the last counted frame */
    bool big_endian;   /* checksum words are big-endian (magic 0x377f0683) */
    uint64_t frames;   /* committed frames counted so far in this generation */
    uint32_t db_pages; /* database size after the last counted commit */
} walf;

/* Read the WAL header in buf (len bytes, at least WALF_HEADER_LEN) into w,
 * which then stands before the first frame. Returns 0, or -1 when it is not
 * a valid header (magic, version, page size or checksum wrong). */
int walf_header(walf *w, const uint8_t *buf, size_t len);

/* Return the bytes of one frame (header and page) of w's log. */
size_t walf_frame_len(const walf *w);

/* Count the committed frames at the start of buf, which holds the log's
 * bytes from frame w->frames on (len bytes, any length: a partial frame at
 * the end is ignored). Returns the number of bytes of whole frames up to
 * and including the last valid commit frame (0: none) and advances w past
 * them; frames after it leave w as it was. buf is only read. */
size_t walf_scan(walf *w, const uint8_t *buf, size_t len);

/* Of a frame at f (as counted by walf_scan): its page number, its "db size
 * after commit" (0 unless a commit frame), and its page (w->page_size
 * bytes). */
uint32_t walf_frame_pgno(const uint8_t *f);
uint32_t walf_frame_commit(const uint8_t *f);
const uint8_t *walf_frame_page(const uint8_t *f);

/* Big-endian 32-bit read and write, shared with the archive's codec. */
uint32_t walf_get32(const uint8_t *p);
void walf_put32(uint8_t *p, uint32_t v);

#endif
