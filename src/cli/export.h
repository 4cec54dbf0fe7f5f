/* `wsgate export`: a room's stored messages, decrypted, as JSON lines or
 * CSV (the README's way to read the store, whose values are sealed). */
#ifndef WSGATE_CLI_EXPORT_H
#define WSGATE_CLI_EXPORT_H

#include <stdio.h>

#include "config/config.h"

/* Write the messages of room (timestamp >= since, Unix seconds) of cfg's
 * store to out in format ("jsonl" or "csv"), opening cfg's key file when
 * encryption is on. Returns the exit status: 0, 1 (with a message on
 * stderr: no store, unreadable key, undecryptable rows) or 2 (an unknown
 * format). */
int export_run(const config *cfg, const char *room, long long since, const char *format, FILE *out);

#endif
