/* The compact message row's codecs (no I/O): the plaintext of a row's one
 * sealed value, and binary message ids. docs/storage.md describes the row.
 *
 * Sealed value plaintext ("body"):
 *
 *   [LEB128 length s][s bytes senderId][LEB128 length n][n bytes senderName]
 *   [message text: the rest]
 *
 * sealed once (one nonce and tag) under the AAD "messages.b:<room>:<seq>". */
#ifndef WSGATE_STORE_ROW_H
#define WSGATE_STORE_ROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_ROW_ID_LEN 16 /* a messageId as stored: a UUID's 16 bytes */

/* Pack a messageId into out when it is a UUID in canonical lowercase text
 * (8-4-4-4-12), so that store_row_id_format gives back exactly `text`.
 * Returns true then; false (out undefined) for any other id, which is
 * stored as its text. */
bool store_row_id_pack(const char *text, size_t len, uint8_t out[STORE_ROW_ID_LEN]);

/* Write the canonical text of a packed messageId (36 characters and a NUL)
 * into out. */
void store_row_id_format(const uint8_t id[STORE_ROW_ID_LEN], char out[37]);

/* Encode sender, name and text (NUL-terminated) into a body. Returns a
 * malloc'd buffer of *len bytes; the caller frees. */
uint8_t *store_row_encode(const char *sender, const char *name, const char *text, size_t *len);

/* Decode a body of n bytes. Returns 0 with three malloc'd NUL-terminated
 * strings (the caller frees them), or -1 with all three NULL when the body
 * is malformed (a length past the end, an over-long LEB128, a NUL byte). */
int store_row_decode(const uint8_t *p, size_t n, char **sender, char **name, char **text);

#endif
