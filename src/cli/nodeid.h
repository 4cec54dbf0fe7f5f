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

/* Write the URLs clients dial for the server now serving on DIR (its
 * WebSocket endpoint and its management API's base URL, one a line) to
 * DIR/endpoint, replaced atomically: the port the kernel or a --port of
 * serve chose is known only to that process. Returns 0, or WSG_E_IO. */
int nodeid_write_endpoint(const char *dir, const char *ws_url, const char *mgmt_url);

/* Read what nodeid_write_endpoint wrote into ws (wslen) and mgmt (mlen),
 * NUL terminated. Returns 0; 1 when no server holds DIR's lock (the file,
 * if any, is a past process's); WSG_E_IO when it cannot be read. */
int nodeid_read_endpoint(const char *dir, char *ws, size_t wslen, char *mgmt, size_t mlen);

#endif
