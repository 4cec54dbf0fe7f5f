/* The database's clean-stop record and its integrity check after serving
 * starts (docs/storage.md, "What is checked at start").
 *
 * PRAGMA quick_check reads every page of the file: 13 s for a 1.3 GB store
 * of 10 million messages, before the port opened. What it finds is damage
 * to the file itself, which SQLite's WAL recovery after a crash does not
 * repair, and which a file exactly as a clean stop of wsgate left it
 * (same size, mtime and inode, no WAL) had no moment to get but from the
 * disk: so such a start serves first and checks on a thread of its own; a
 * start after a crash, or of a file that anything else wrote, checks
 * before serving, as always. A damage found in the background is logged
 * (store_damaged), fails /readyz, and leaves no clean-stop record, so the
 * next start refuses the file as before. Not for use outside src/store/. */
#ifndef WSGATE_STORE_CLEANSTOP_H
#define WSGATE_STORE_CLEANSTOP_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

/* Before the database at db_path is opened: true when it is exactly as
 * the last clean stop left it (DB_PATH-clean, a ledger.h file, names its
 * size, mtime and inode, and no WAL is left). The record is removed either
 * way: a run that does not stop cleanly leaves none. */
bool cleanstop_consume(const char *db_path);

/* After the last connection to db_path closed (its WAL checkpointed and
 * removed): record the file as it is now. Nothing when a WAL is left. */
void cleanstop_record(const char *db_path);

/* The integrity check before serving (a start after a crash, or of a file
 * not as the last clean stop left it), timed and logged (store_check).
 * Returns 0, or WSG_E_STORE_DAMAGED with *err (the caller's). */
int cleanstop_check_now(sqlite3 *db, const char *path, wsg_error *err);

typedef struct cleanstop_check cleanstop_check;

/* Start the integrity check of db_path on a thread of its own (a read-only
 * connection, at nice +19). Returns the check (the caller's, for
 * cleanstop_check_end). */
cleanstop_check *cleanstop_check_start(const char *db_path);

/* True when the check found the file damaged (why: the message). Any
 * thread. */
bool cleanstop_check_failed(cleanstop_check *c, char *why, size_t len);

/* Interrupt the check if still running, wait for its thread and free c.
 * Returns true when it found the file damaged. */
bool cleanstop_check_end(cleanstop_check *c);

#endif
