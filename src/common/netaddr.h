/* Numeric IP addresses to socket addresses, in one place: the preflight's
 * port check and the Redis TLS bridge's connect both take an address
 * that must already be numeric (no resolver). No allocation, no I/O. */
#ifndef WSGATE_COMMON_NETADDR_H
#define WSGATE_COMMON_NETADDR_H

#include <sys/socket.h>

/* Fill *out (zeroed first) with the IPv4 or IPv6 address `ip` in numeric
 * form and `port` (1..65535, the caller checks). Returns the length to
 * pass to bind or connect, or 0 when ip is neither form (no hostnames). */
socklen_t netaddr_numeric(const char *ip, int port, struct sockaddr_storage *out);

#endif
