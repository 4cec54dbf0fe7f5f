/* AWS Signature Version 4 (AWS4-HMAC-SHA256), as the management API
 * (API Gateway's `@connections` API) needs it: verify requests signed by
 * unmodified boto3/botocore for service `execute-api`, and sign requests
 * (for tests and for wsgate's own outgoing calls).
 *
 * No I/O: a parsed http_request (src/http/request.h) in, a verdict out.
 * The canonical request is built exactly as botocore builds it for non-S3
 * services:
 *
 *   METHOD \n
 *   canonical URI    the path as received, dot segments and empty segments
 *                    removed, then percent-encoded AGAIN (safe: unreserved
 *                    and '/'), so `%3D` becomes `%253D` and `@` `%40`
 *   canonical query  pairs split on '&' and the first '=', each key and
 *                    value percent-decoded then re-encoded (safe: unreserved
 *                    only), sorted by key then value, joined `k=v` with '&'
 *   canonical headers  `name:value\n` for each signed header in SignedHeaders
 *                    order; a repeated header's values are joined with ','
 *                    and each value is trimmed, inner whitespace collapsed
 *   signed headers   the SignedHeaders list \n
 *   payload hash     X-Amz-Content-Sha256 when present, else hex SHA-256 of
 *                    the body
 *
 * String to sign: "AWS4-HMAC-SHA256\n<amz date>\n<scope>\n<hex sha256(CR)>";
 * signing key: HMAC chain "AWS4"+secret -> date -> region -> service ->
 * "aws4_request". Uses OpenSSL 3 (HMAC() one-shot, EVP_Digest). */
#ifndef WSGATE_HTTP_SIGV4_H
#define WSGATE_HTTP_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "common/error.h"
#include "http/request.h"

/* One access key. Both strings are owned by the caller. */
typedef struct sigv4_credentials {
    const char *access_key_id;
    const char *secret_access_key;
} sigv4_credentials;

/* One header to sign (for sigv4_sign); strings owned by the caller. */
typedef struct sigv4_header {
    const char *name; /* any case */
    const char *value;
} sigv4_header;

/* A request to sign (for sigv4_sign); everything owned by the caller. */
typedef struct sigv4_request {
    const char *method;          /* "POST" */
    const char *path;            /* as it will be sent on the wire, e.g.
                                    "/staging/@connections/abc%3D" */
    const char *query;           /* as sent, without '?'; NULL or "" if none */
    const sigv4_header *headers; /* every header to sign besides x-amz-date;
                                    must include host */
    size_t nheaders;
    const void *body; /* may be NULL when body_len is 0 */
    size_t body_len;
} sigv4_request;

/* Length of an X-Amz-Date value, "YYYYMMDDTHHMMSSZ". */
#define SIGV4_AMZ_DATE_LEN 16

/* Verify req's SigV4 Authorization header against the ncreds credentials
 * (the access key id in the credential scope picks the entry; several
 * entries may share an id, e.g. during a secret rotation, and each is
 * tried). The scope's service must equal `service` (e.g. "execute-api");
 * any region is accepted; the scope's date must be the request date's. The
 * request time is X-Amz-Date (YYYYMMDDTHHMMSSZ), else Date (RFC 1123); it
 * must lie within max_skew_s (>= 0) seconds of `now`, and the header that
 * gave it must be signed, as must host. X-Amz-Content-Sha256, when present,
 * is the payload hash and must match the body; UNSIGNED-PAYLOAD and
 * streaming payloads are refused. Signatures are compared in constant time.
 *
 * Returns 0 when the signature is valid for one of the credentials; else
 * a negative WSG_E_SIGV4_* code (common/error.h: its text says why, never
 * built from request bytes; its HTTP status is 403).
 * Allocates nothing that outlives the call; req is not modified. */
int sigv4_verify(const http_request *req, const sigv4_credentials *creds, size_t ncreds,
                 const char *service, time_t now, int max_skew_s);

/* Sign req for `region`/`service` at time `when` with cred. Writes the
 * X-Amz-Date value the caller must send along (SIGV4_AMZ_DATE_LEN chars and
 * a NUL) into amz_date; it is signed as x-amz-date, so req->headers must not
 * contain x-amz-date or date themselves. Every header in req->headers is
 * signed (names lowercased; repeated names joined with ',' in order).
 *
 * Returns the Authorization header value, malloc'd (caller frees), e.g.
 * "AWS4-HMAC-SHA256 Credential=AKID/20240305/us-east-1/execute-api/
 * aws4_request, SignedHeaders=host;x-amz-date, Signature=<64 hex>"; or NULL
 * when req has no host header, contains x-amz-date or date, a header name
 * is empty or contains ';', ':' or whitespace, or `when` is out of range. */
char *sigv4_sign(const sigv4_request *req, const sigv4_credentials *cred, const char *region,
                 const char *service, time_t when, char amz_date[SIGV4_AMZ_DATE_LEN + 1]);

/* Format t (UTC) as an X-Amz-Date value into out (SIGV4_AMZ_DATE_LEN chars
 * and a NUL). Returns 0, or WSG_E_INVAL when t is outside years 0000-9999. */
int sigv4_amz_date(time_t t, char out[SIGV4_AMZ_DATE_LEN + 1]);

/* Return the canonical URI of a raw request path (len bytes, as received),
 * malloc'd and NUL-terminated (caller frees): "/" for an empty path, and,
 * as botocore gives, "" for a relative one that normalises to nothing
 * ("x/.."). Never fails. */
char *sigv4_canonical_uri(const char *path, size_t len);

/* Return the canonical query string of a raw query (len bytes, without the
 * '?'), malloc'd and NUL-terminated (caller frees); "" for an empty query.
 * Invalid %-escapes are taken literally ('%' is then encoded as %25); '+' is
 * not a space. Never fails. */
char *sigv4_canonical_query(const char *query, size_t len);

#endif
