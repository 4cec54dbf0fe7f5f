/* The database's clean-stop record and its integrity check after serving
 * starts (docs/storage.md, "What is checked at start").
 *
 * PRAGMA quick_check reads every page of the file: 13 s for a 1.3 GB store
 * of 10 million messages, before the port opened. What it finds is damage
 * to the file itself, which SQLite's WAL recovery after a crash does not
 * repair, and which a file exactly as a clean stop of wsgate left it
 * (same size, mtime and inode, no WAL) had no moment to get but from the
 * disk, nor one that a run of wsgate held when it was killed (a crash
 * leaves the file as consistent as a commit did, and SQLite's recovery
 * replays the WAL): such a start serves first and checks on a thread of
 * its own. A start of a file with no record, or that changed since the
 * last clean stop (anything else wrote it), checks before serving, as
 * always. A damage found in the background is logged
 * (store_damaged), fails /readyz, and leaves no clean-stop record, so the
 * next start refuses the file as before. Not for use outside src/store/. */
#ifndef WSGATE_STORE_CLEANSTOP_H
#define WSGATE_STORE_CLEANSTOP_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

/* How the last run left the database file. */
typedef enum cleanstop_state {
    CLEANSTOP_UNKNOWN, /* no record, or the file changed since: check at start */
    CLEANSTOP_CLEAN,   /* exactly as the last clean stop left it, no WAL */
    CLEANSTOP_CRASHED  /* held by a run of wsgate that did not stop: its WAL is left */
} cleanstop_state;

/* Before the database at db_path is opened: what its records say
 * (DB_PATH-clean, a ledger.h file naming the file's size, mtime and inode
 * at the last clean stop; DB_PATH-running, left by a run that opened the
 * file and has not stopped cleanly). The clean-stop record is removed
 * either way: only a clean stop writes one. */
cleanstop_state cleanstop_consume(const char *db_path);

/* After the database opened sound (checked, or from a known state): note
 * that a run holds it (DB_PATH-running). */
void cleanstop_running(const char *db_path);

/* After the last connection to db_path closed (its WAL checkpointed and
 * removed): unless damaged, record the file as it is now (nothing when a
 * WAL is left); either way the run's mark goes. With damaged, the next
 * start checks the file before serving (and refuses it). */
void cleanstop_record(const char *db_path, bool damaged);

/* The integrity check before serving (a start after a crash, or of a file
 * not as the last clean stop left it), timed and logged (store_check).
 * Returns 0, or WSG_E_STORE_DAMAGED with *err (the caller's). */
int cleanstop_check_now(sqlite3 *db, const char *path, wsg_error *err);

typedef struct cleanstop_check cleanstop_check;

/* Start the integrity check of db_path on a thread of its own (a read-only
 * connection, at nice +19), for a start in state (logged with the
 * result). A check gives way when the WAL passes 64 MiB while it holds its
 * read (it pins the WAL: no checkpoint can restart it), and is tried again
 * a minute later; shm_fd (the caller's, read with walshm_read; -1: not
 * watched) is the WAL-index it reads that from. Damage found removes the
 * run's mark, so that even a crash after it leaves the next start
 * checking before serving. Returns the check (the caller's, for
 * cleanstop_check_end, before shm_fd is closed). */
cleanstop_check *cleanstop_check_start(const char *db_path, cleanstop_state state, int shm_fd);

/* True when the check found the file damaged (why: the message). Any
 * thread. */
bool cleanstop_check_failed(cleanstop_check *c, char *why, size_t len);

/* Interrupt the check if still running, wait for its thread and free c.
 * Returns true when it found the file damaged. */
bool cleanstop_check_end(cleanstop_check *c);

#endif
