/* `wsgate check`'s look at the files `serve` opens before it listens. */
#ifndef WSGATE_CLI_PREFLIGHT_H
#define WSGATE_CLI_PREFLIGHT_H

#include "common/error.h"
#include "config/config.h"

/* Open what `serve` would open at start from cfg (already validated) and
 * close it again: the TLS certificate and key (and that they match), the
 * JWT authorizer's public key, the data key file (a configured
 * kms_key_file, or DATA_DIR/keys.json when it exists; a missing default
 * one is created by serve, so it is no error here). Reads only; creates
 * and writes nothing. Returns 0, or the opener's negative code with *err
 * (the caller's) filled with its one-line message, which names the file. */
int preflight_files(const config *cfg, wsg_error *err);

#endif
