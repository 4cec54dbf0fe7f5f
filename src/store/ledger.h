/* The verified-files ledger: what a start may take as checked without
 * reading it again (docs/storage.md, "What is checked at start").
 *
 * Two files use this format: the point-in-time archive's ledger
 * (PITR_DIR/verified: every archive file read whole and found sound, or
 * written and synced by wsgate itself, with its size, mtime and inode and
 * what the start needs from it), and the database's clean-stop record
 * (DB_PATH-clean: the database file as a clean stop left it). A file whose
 * identity differs from its line, or that has no line, is read (checked)
 * at start; one that matches is checked in the background after serving
 * starts. A ledger that does not parse, or whose CRC does not match, is
 * ignored: everything is checked at start, as with no ledger.
 *
 * Text, one line each (numbers decimal):
 *   wsgate-ledger 1
 *   db <size> <mtime s> <mtime ns> <inode>
 *   f <name> <size> <mtime s> <mtime ns> <inode> <last record type>
 *     <snapshot ended 0|1> <has position 0|1> <salt-1> <salt-2> <frames>
 *     <page size> <db pages> <cksum-1> <cksum-2> <big-endian 0|1>
 *     <clean-stop record: 64 hex digits, or -> <records> <open 0|1>
 *                                                        (one line)
 *   g <salt-1> <salt-2> <frames>   (a WAL generation wholly archived)
 *   end <CRC-32 of every byte before this line, 8 hex digits>
 * Parsing and formatting are I/O-free; ledger_load/ledger_save do the I/O. */
#ifndef WSGATE_STORE_LEDGER_H
#define WSGATE_STORE_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "store/walframe.h"

#define LEDGER_NAME_MAX  96
#define LEDGER_CLOSE_LEN 32

/* A file as stat(2) saw it: a write, a truncation or a replacement
 * changes one of these. */
typedef struct ledger_id {
    uint64_t size, ino;
    int64_t mtime_s, mtime_ns;
} ledger_id;

/* What a start needs from one archive file, and its identity when it was
 * found (or written) sound. */
typedef struct ledger_file {
    char name[LEDGER_NAME_MAX];
    ledger_id id;
    int last;     /* the type of its last record ('K', 'Z', 'E'...), 0: none */
    bool ended;   /* a snapshot's end record ('E') was read */
    bool has_pos; /* it holds a commit record: pos is after the last one */
    walf pos;
    bool has_close; /* it holds a clean-stop record ('Z'): close is it */
    uint8_t close[LEDGER_CLOSE_LEN];
    uint32_t records; /* records in it (in its first id.size bytes when open) */
    /* A segment still being appended to: only its first id.size bytes
     * (records records, synced) are vouched for, whatever its mtime; a
     * start reads the rest. */
    bool open;
} ledger_file;

typedef struct ledger {
    bool has_db;
    ledger_id db;
    /* The archive held every committed frame of this WAL generation,
     * synced, when a write that may restart the WAL began: a start that
     * finds the next generation (salt-1 + 1) knows the archive follows on. */
    bool has_gen;
    uint32_t gen_salt[2];
    uint64_t gen_frames;
    ledger_file *files; /* [n], owned */
    size_t n, cap;
} ledger;

/* The identity of the file st describes. */
ledger_id ledger_id_of(const struct stat *st);

/* True when a and b are the same identity. */
bool ledger_id_eq(const ledger_id *a, const ledger_id *b);

/* Parse text (len bytes, not NUL-terminated) into l (emptied first).
 * Returns 0, or -1 when it is not a whole, sound ledger (l then empty).
 * I/O-free. */
int ledger_parse(ledger *l, const char *text, size_t len);

/* Format l as ledger text. Returns a malloc'd buffer (the caller frees) of
 * *len bytes. I/O-free. */
char *ledger_format(const ledger *l, size_t *len);

/* The line of the file named name, or NULL. The pointer is l's, valid until
 * l changes. */
const ledger_file *ledger_find(const ledger *l, const char *name);

/* Add f (copied), replacing a line of the same name. */
void ledger_put(ledger *l, const ledger_file *f);

/* Remove the line of the file named name, if any. */
void ledger_remove(ledger *l, const char *name);

/* Free what l holds and empty it (l itself is the caller's). */
void ledger_free(ledger *l);

/* Read and parse path into l. Returns 0, or -1 when it is missing,
 * unreadable or unsound (l then empty). */
int ledger_load(ledger *l, const char *path);

/* Write l to path durably: a temporary file, fsync, rename, and the
 * directory synced. Returns 0 or -1 (errno). */
int ledger_save(const ledger *l, const char *path);

/* As ledger_save without the fsyncs: survives a crash of the process, and
 * after a power cut leaves the old ledger, the new one, or one whose CRC
 * fails (then ignored). Returns 0 or -1 (errno). */
int ledger_save_fast(const ledger *l, const char *path);

#endif
