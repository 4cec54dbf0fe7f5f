/* The running node's id in the data directory (DATA_DIR/node-id), for
 * `wsgate outputs`: the Redis engine picks a random id per process; the
 * local engine's one node is "local". */
#ifndef WSGATE_CLI_NODEID_H
#define WSGATE_CLI_NODEID_H

#include <stddef.h>

#include "common/error.h"

/* Write id (and a newline) to DIR/node-id, replacing it atomically
 * (written aside, then renamed). Returns 0, or WSG_E_IO with errno set. */
int nodeid_write(const char *dir, const char *id);

/* Read the id of the server running on DIR into out (len bytes, NUL
 * terminated). Returns 0; 1 when no server holds DIR's lock (none runs
 * there, so the file, if any, is a past process's); WSG_E_IO when one runs
 * but its id cannot be read (an older wsgate, or an error). */
int nodeid_read(const char *dir, char *out, size_t len);

#endif
