/* The point-in-time archive (PITR from the WAL, as Litestream does): the
 * pages of committed WAL frames are appended (each page once per second of
 * commit time, as the second's last commit left it), with the commit
 * times, to a sealed segment file in the PITR directory before SQLite can
 * overwrite them, and a sealed base snapshot (a page-for-page copy of the
 * database) is written every pitr_snapshot_interval_s. A restore decodes the newest snapshot at
 * or before T and writes the archived pages of every commit up to T over
 * it, as a checkpoint would. Not for use outside src/store/.
 *
 * Files (DATA_DIR/pitr/), each a 16-byte header ("WSGPITR1", the sealing
 * key id, 0 when unsealed, 4 bytes zero) then records
 *   [u32 length][u32 CRC-32 of the body][body]
 * whose body is crypto_seal(inner) with the AAD "wsgate.pitr:<file name>:
 * <record index>" (or inner itself when unsealed), inner being
 *   [u8 type | 0x80][u32 raw length][raw, zstd-compressed] (a type
 *   without the 0x80 bit: raw is zlib-deflated, as the first archives
 *   wrote it; still read):
 *   'C' commits:    u64 t_ms of the last, u32 salt-1, u32 salt-2, u64 first
 *                   frame, u32 frames, u32 page size, u32 db pages,
 *                   u32 checksum[2], u32 flags (big-endian checksums), then
 *                   per frame u32 page number, u32 db size after commit
 *                   (0: not a commit frame), when a commit frame u64 its
 *                   commit time (ms), then the page, or with the number's
 *                   top bit set a delta from the page's previous content
 *                   (which a restore has in its file there): u16 runs,
 *                   each u16 offset, u16 length and the new bytes
 *   'K' a second:   what a 'C' record holds (its u32 frames: the WAL frames
 *                   covered), then u32 entries, then that many entries as
 *                   a 'C' record's frames: each page written in one second
 *                   of commit time once, as the second's last commit left
 *                   it; only the last entry is a commit (the second's last:
 *                   size and time); archive_sync may end a second's
 *                   record early (the next one covers the rest of it).
 *                   What archive_wal writes; 'C' is still read.
 *   'S' snapshot:   u64 offset, then the database file's bytes there
 *   'E' its end:    u64 file size, u64 t_ms
 *   snap-<gen>-<t_ms>.pitr          a base snapshot ('S'... 'E')
 *   wal-<gen>-<seq>-<t_ms>.pitr     commits after snapshot <gen> ('K' or 'C'...) */
#ifndef WSGATE_STORE_ARCHIVE_H
#define WSGATE_STORE_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "crypto/crypto.h"

typedef struct store store;

#define ARCHIVE_FILE_HEADER_LEN 16
#define ARCHIVE_RECORD_MAX      (256u << 20) /* a record's body or raw bytes at most */

/* Split one record off the front of buf (len bytes). Returns 1 and sets
 * *body, *body_len and *used (bytes of the record) when a whole record with
 * a matching CRC is there; 0 when buf ends inside it (a torn or growing
 * tail); -1 when it is damaged (CRC, or a length past ARCHIVE_RECORD_MAX).
 * I/O-free: buf is only read. */
int archive_record_split(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len,
                         size_t *used);

/* Encode page as the runs of bytes where it differs from old (ps bytes
 * each) into out (at most max bytes). Returns the bytes written, or 0 when
 * the delta would not fit in max (write the page whole). I/O-free. */
size_t archive_delta_encode(const uint8_t *old, const uint8_t *page, size_t ps, uint8_t *out,
                            size_t max);

/* Apply a delta at in (len bytes available) to page (ps bytes). Returns
 * the delta's length, or -1 when it is malformed (page then undefined).
 * I/O-free. */
int archive_delta_apply(uint8_t *page, size_t ps, const uint8_t *in, size_t len);

/* Decode a record's body (sealed with keys, or plain when keys is NULL and
 * the file is unsealed) of record index of file name into *raw (malloc'd,
 * the caller frees) and its type. Returns 0, or WSG_E_STORE_ARCHIVE with
 * *err (the caller's) naming the file and record. */
int archive_record_open(const crypto_keyring *keys, uint32_t key_id, const char *name,
                        uint32_t index, const uint8_t *body, size_t len, int *type, uint8_t **raw,
                        size_t *raw_len, wsg_error *err);

/* store_open, before the database is opened: allocate s->arch and note
 * the database file as the last run left it. */
void archive_prepare(store *s, const char *db_path);

/* Store thread. archive_start: check the archive files (a damaged one is
 * logged as pitr_damaged): those written since the last record of the
 * verified-files ledger (ledger.h) are read whole now, the others by a
 * background thread after serving starts; open a new segment, archive what the WAL holds
 * that the archive lacks, take a first snapshot when there is none, and
 * convert a pitr_log data directory (its table dropped once a snapshot
 * holds it), then start the archiver thread. Returns 0, or -1 (logged; the
 * store then runs without PITR). */
int archive_start(store *s);

/* Store thread, between batches: true (once) when the background check
 * found a damaged file since the last call, so a fresh snapshot should be
 * taken now (later times then restore without it). False without PITR. */
bool archive_snapshot_wanted(store *s);

/* After a commit on the store connection (its WAL hook; pages: the frames
 * the WAL now holds): note its time. The archiver thread (started by
 * archive_start) reads the commits noted into the bucket of their second
 * of commit time once ARCHIVE_FLUSH_FRAMES frames or ARCHIVE_FLUSH_MS have
 * gathered, 50 ms after the last, or when their second is over, and
 * writes a bucket as one 'K' record when its second ends; archive_guard
 * and archive_sync write what is gathered, the bucket of the current
 * second too, before anything could overwrite their frames. Never
 * archives itself: the hook runs inside COMMIT. */
void archive_commit(store *s, int pages);

/* archive_commit of a commit made at t_ms (wall clock), told later: the
 * pipelined commit tells the archive once the commit is synced (syncer.h). */
void archive_commit_at(store *s, int pages, int64_t t_ms);

/* After BEGIN of a write on the store connection: make the archive durable
 * when this write may restart the WAL over frames whose archive copy is
 * not yet on disk (every frame copied into the database file, read from
 * the WAL-index; or the WAL-index cannot be read). */
void archive_guard(store *s);

/* Archive the commits gathered, write the current second's bucket as far
 * as it got (a 'K' record of part of a second) and make the archive
 * durable (archive_guard, and at close). Waits for a flush of the
 * archiver thread in progress (under the archive's lock). */
void archive_sync(store *s);

/* Ask the archiver thread to archive what is gathered and make the
 * archive durable now, without waiting for it (the store thread, before
 * it checkpoints itself: archive_guard then finds the sync done or
 * waits for the rest of it). */
void archive_sync_start(store *s);

/* Write a base snapshot, start a new generation of segments and drop what
 * fell out of pitr_retention_days (keeping the newest snapshot older than
 * the window). Store thread, between batches. Returns 0 or -1 (logged). */
int archive_snapshot(store *s);

/* After the store connection closed: stop the archiver thread, record the
 * clean stop, sync and free the archive state (store_close). */
void archive_close(store *s);

/* `wsgate restore`, new archive: build out as of to_ms. Returns 0, 1 when
 * no snapshot of this archive is at or before to_ms (*earliest_ms: its
 * earliest snapshot, or -1), or WSG_E_STORE_ARCHIVE with *err (the
 * caller's: a damaged archive, a missing key, I/O). */
int archive_restore(const char *dir, const crypto_keyring *keys, int64_t to_ms, const char *out,
                    int64_t *earliest_ms, wsg_error *err);

/* Decode the oldest snapshot of dir into out (for a restore before the
 * switch from pitr_log: that snapshot holds the old change log). Returns
 * 0, 1 when there is none, or WSG_E_STORE_ARCHIVE with *err. */
int archive_oldest_snapshot(const char *dir, const crypto_keyring *keys, const char *out,
                            int64_t *t_ms, wsg_error *err);

/* Return 1 when a file of dir was sealed with key_id, else 0. */
int archive_key_in_use(const char *dir, uint32_t key_id);

#endif
