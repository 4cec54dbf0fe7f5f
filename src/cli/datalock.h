/* The data directory's lock: one `wsgate serve` per store. */
#ifndef WSGATE_CLI_DATALOCK_H
#define WSGATE_CLI_DATALOCK_H

#include <stddef.h>

/* Take an exclusive flock(2) on DIR/wsgate.lock (created 0644) and write
 * this process's PID into it. Returns the lock's descriptor, held until
 * datalock_release(); or -1 with a message in err naming the holder's PID
 * when another process holds the lock, or the system error. */
int datalock_acquire(const char *dir, char *err, size_t errlen);

/* Release a lock taken by datalock_acquire (fd < 0: nothing). The file
 * stays: removing it would race with a server starting at that moment. */
void datalock_release(int fd);

#endif
