/* The WAL-index ("-shm" file) header of an SQLite database in WAL mode, as
 * sqlite.org/walformat.html documents it: two copies of a 48-byte header
 * (version 3007000 at byte 0, isInit at 12, mxFrame at 16), then nBackfill
 * at byte 96, all in the machine's byte order. The archive uses it to know
 * whether the next write may restart the WAL over frames it has not made
 * durable yet: only when every frame has been copied into the database
 * (nBackfill == mxFrame, mxFrame > 0). Not for use outside src/store/. */
#ifndef WSGATE_STORE_WALSHM_H
#define WSGATE_STORE_WALSHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WALSHM_HEADER_LEN 136

typedef struct {
    uint32_t mx_frame; /* committed frames in the WAL */
    uint32_t backfill; /* frames already copied into the database file */
} walshm;

/* Parse the first len bytes of a WAL-index. Returns 0 and fills *out, or -1
 * when they are not a settled, initialised header of this version (too
 * short, not initialised, the two copies differ because a writer is
 * updating them, or nBackfill past mxFrame): the caller must then assume
 * the worst. I/O-free: buf is only read. */
int walshm_parse(walshm *out, const uint8_t *buf, size_t len);

/* True when a write transaction begun now may restart the WAL from its
 * first frame (everything copied into the database file). */
bool walshm_may_restart(const walshm *w);

/* Read the header from the WAL-index file open at fd (pread). Returns 0, or
 * -1 as walshm_parse does, and when the read fails. */
int walshm_read(int fd, walshm *out);

#endif
