/* The listen address as serve binds it, shared by `check` and `serve` so
 * that what check accepts, serve can bind. */
#ifndef WSGATE_CONFIG_LISTEN_H
#define WSGATE_CONFIG_LISTEN_H

#include <stddef.h>

#include "common/error.h"

/* Resolve `listen` (an IPv4 or IPv6 address, or a host name such as
 * "localhost", IPv4 preferred) and check that this machine can bind it, by
 * binding a throw-away socket on port 0 (so a running server on the real
 * port does not matter). On success returns 0 and writes the numeric
 * address into numeric (numlen bytes, NUL-terminated), which the server
 * binds; on failure returns WSG_E_CONFIG_LISTEN with *err's message one
 * line naming the address. */
int config_listen_resolve(const char *listen, char *numeric, size_t numlen, wsg_error *err);

#endif
