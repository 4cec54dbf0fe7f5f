/* Cryptographically strong random bytes for the hot path: ids, nonces and
 * trace ids. OpenSSL's RAND_bytes costs a few thousand instructions a call
 * (DRBG locking and parameter lookups) whatever the size asked, so each
 * thread draws 4 KiB at a time into its own pool and hands out slices; every
 * byte is handed out once. */
#ifndef WSGATE_COMMON_RANDOM_H
#define WSGATE_COMMON_RANDOM_H

#include <stddef.h>

/* Fill buf with n random bytes from the calling thread's pool (refilled
 * from RAND_bytes). Aborts if OpenSSL's generator fails. */
void random_bytes(void *buf, size_t n);

/* Write n random bytes as 2n lowercase hex digits and a NUL into out
 * (which must hold 2n + 1 bytes). */
void random_hex(char *out, size_t n);

/* Write a random (version 4) UUID, 36 characters and a NUL, into out. */
void random_uuid(char out[37]);

/* Write a time-ordered (version 7, RFC 9562) UUID into out: 48 bits of Unix
 * milliseconds, then 74 random bits. Ids made later sort after earlier ones
 * (to the millisecond), so a database index on them grows at its right
 * edge instead of touching a random page per insert. */
void random_uuid7(char out[37]);

#endif
