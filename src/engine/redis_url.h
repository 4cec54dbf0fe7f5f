/* Redis server addresses as the configuration gives them:
 *
 *   redis://[[user]:password@]host[:port][/db]
 *   rediss://...  (the same, over TLS: see redis_tls.h)
 *
 * host is a name, an IPv4 address or an IPv6 address in brackets
 * ("[::1]"); port defaults to 6379 and db to 0. user and password are
 * percent-decoded (a password holding '@', ':' or '/' is written %40, %3A,
 * %2F). No I/O, no allocation: the parsed fields live in the struct. */
#ifndef WSGATE_ENGINE_REDIS_URL_H
#define WSGATE_ENGINE_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

#define REDIS_URL_MAX_HOST     256 /* with the NUL; an IPv6 address without brackets */
#define REDIS_URL_MAX_CRED     256 /* user or password, decoded, with the NUL */
#define REDIS_URL_MAX_LEN      1024
#define REDIS_URL_DEFAULT_PORT 6379

typedef struct redis_url {
    char host[REDIS_URL_MAX_HOST];     /* without brackets */
    bool ipv6;                         /* host was written in brackets */
    int port;                          /* 1..65535 */
    int db;                            /* 0..65535 (Redis's own limit is its `databases`) */
    char user[REDIS_URL_MAX_CRED];     /* "" = none (AUTH password alone: the default user) */
    char password[REDIS_URL_MAX_CRED]; /* "" = no AUTH */
    bool has_password;                 /* an empty password after ':' still sends AUTH */
    bool tls;                          /* rediss:// */
} redis_url;

/* Parse the len bytes of s into *out. Returns 0, or WSG_E_ENGINE_CONFIG
 * with a one-line message in *err (the caller's; may be NULL) naming what
 * is wrong; *out is then undefined. */
int redis_url_parse(const char *s, size_t len, redis_url *out, wsg_error *err);

/* Write the server's identity "host:port/db" (IPv6 in brackets) into out
 * (len bytes, cut to fit, NUL-terminated): what logs name and what the
 * shard ring hashes, so it carries no credentials. Returns out. */
char *redis_url_name(const redis_url *u, char *out, size_t len);

/* Return true when s is empty or a valid URL: the configuration's check. */
bool redis_url_check(const char *s);

#endif
