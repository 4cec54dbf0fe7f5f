/* Walking the fields of a delimited string in place: query parameters
 * ('&'), SigV4's signed-header list (';'), and HTTP's comma-separated
 * header lists (RFC 9110 5.6.1: Connection, Upgrade, If-None-Match). No
 * copies, no allocation; the fields point into the caller's bytes. */
#ifndef WSGATE_COMMON_FIELDS_H
#define WSGATE_COMMON_FIELDS_H

#include <stdbool.h>
#include <stddef.h>

/* Take the next field of [*p, end), up to the next sep (or end), as it is
 * (no trimming; may be empty): *field and *len set, *p moved past the
 * separator. Returns false when nothing is left (*p == end): a separator
 * at the very end is not followed by an empty field. */
bool fields_next(const char **p, const char *end, char sep, const char **field, size_t *len);

/* Take the next element of an HTTP comma-separated list in [*p, end):
 * empty elements skipped, spaces and tabs around it trimmed. *elem and *len
 * set (len > 0), *p moved past it. Returns false when none is left. */
bool fields_next_list(const char **p, const char *end, const char **elem, size_t *len);

#endif
