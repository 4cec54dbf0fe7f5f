/* The data directory's lock: one `wsgate serve` per store. */
#ifndef WSGATE_CLI_DATALOCK_H
#define WSGATE_CLI_DATALOCK_H

#include <stddef.h>

#include "common/error.h"

/* Take an exclusive flock(2) on DIR/wsgate.lock (created 0644) and write
 * this process's PID into it. Returns the lock's descriptor, held until
 * datalock_release(); or WSG_E_CLI_DATA_LOCKED when another process holds
 * the lock (err->message names the holder's PID), WSG_E_IO on a system
 * error (err->message names it). *err is the caller's. */
int datalock_acquire(const char *dir, wsg_error *err);

/* Release a lock taken by datalock_acquire (fd < 0: nothing). The file
 * stays: removing it would race with a server starting at that moment. */
void datalock_release(int fd);

#endif
