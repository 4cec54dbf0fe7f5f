/* The store's pipelined group commit: the WAL's fdatasync on a thread of
 * its own, so the store thread applies and writes batch N+1 while batch
 * N's sync runs. The store connection then runs with synchronous=NORMAL
 * (COMMIT writes its frames and returns) and a batch is handed over only
 * after an fdatasync of the WAL that began after its COMMIT returned: the
 * same promise as synchronous=FULL (a chat anyone saw survives kill -9 and
 * power loss), with the disk's wait off the store thread's path.
 *
 * The point-in-time archive is told of a commit (archive_commit_at) only
 * once it is synced, so it never holds a commit the database could lose;
 * before anything could restart the WAL or snapshot the database, the store
 * thread drains the pipeline (syncer_drain). Not for use outside
 * src/store/. */
#ifndef WSGATE_STORE_SYNCER_H
#define WSGATE_STORE_SYNCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

typedef struct syncer syncer;

/* Hands a synced batch (its ops first..last, in commit order) over to the
 * loop or to on_commit; runs on the syncer's thread, in commit order. */
typedef void (*syncer_deliver_cb)(store *s, store_op *first, store_op *last);

/* Batches committed and not yet synced at most: the store thread writes
 * batch N+1 while N's sync runs, then waits for N before taking N+2. */
#define SYNCER_DEPTH 2

/* Start the syncer of s, whose WAL is the file at wal_path (opened here,
 * kept open: SQLite never deletes the WAL while the store's connections
 * are open). Returns the syncer (the caller stops it with syncer_stop), or
 * NULL when the WAL cannot be opened (the store then keeps
 * synchronous=FULL). */
syncer *syncer_start(store *s, const char *wal_path, syncer_deliver_cb deliver);

/* From the store connection's WAL hook, inside COMMIT (frames: the WAL's
 * frames after it): note the commit, its frames written and not yet synced.
 * Never waits for a sync. */
void syncer_note_commit(syncer *y, int frames);

/* After a batch's COMMIT returned (or failed: it still goes in order):
 * queue first..last for hand-over after the next sync, then wait while
 * SYNCER_DEPTH batches are still unsynced. The syncer owns the ops until it
 * delivers them. */
void syncer_push(syncer *y, store_op *first, store_op *last);

/* Wait until every commit noted so far is synced, told to the archive and
 * its batch delivered (store thread: before a write that may restart the
 * WAL, before a snapshot). */
void syncer_drain(syncer *y);

/* Drain, stop the thread and free y (NULL is ignored). */
void syncer_stop(syncer *y);

#endif
