/* `wsgate check`'s look at the files `serve` opens before it listens. */
#ifndef WSGATE_CLI_PREFLIGHT_H
#define WSGATE_CLI_PREFLIGHT_H

#include "common/error.h"
#include "config/config.h"

/* Open what `serve` would open at start (the data directory first, by
 * preflight_data_dir) from cfg (already validated) and
 * close it again: the TLS certificate and key (and that they match), the
 * JWT authorizer's public key, the data key file (a configured
 * kms_key_file, or DATA_DIR/keys.json when it exists; a missing default
 * one is created by serve, so it is no error here). Reads only; creates
 * and writes nothing. Returns 0, or the opener's negative code with *err
 * (the caller's) filled with its one-line message, which names the file. */
int preflight_files(const config *cfg, wsg_error *err);

/* Whether `serve` can use `dir` as its data directory: an existing one
 * must be a directory it may write in; a missing one must have a nearest
 * existing ancestor that is a directory it may write in. Creates nothing.
 * Returns 0, or WSG_E_IO with *err (the caller's) filled with a one-line
 * message naming the directory and what to do. */
int preflight_data_dir(const char *dir, wsg_error *err);

/* Whether this process may bind `port` on the numeric address `addr` (as
 * the listen check resolved it): a port below the system's unprivileged
 * start needs root or CAP_NET_BIND_SERVICE, which a test bind on another
 * port cannot tell. A port in use is no error here (serve beside a live
 * server is checked as it will be used, after that server stops). Returns
 * 0, or WSG_E_CONFIG_LISTEN with *err filled (the message gives the fix). */
int preflight_port(const char *addr, int port, wsg_error *err);

/* Whether `port` on the numeric `addr` is free now, by a bind made as the
 * first worker's (SO_REUSEADDR, no SO_REUSEPORT) and closed at once. serve
 * asks before it creates the data directory, the keys and the store, so a
 * start on a busy port leaves nothing behind; the real bind still decides.
 * Port 0 and non-numeric addresses are no error. Returns 0, or
 * WSG_E_CONFIG_LISTEN with *err (the caller's) filled with the one-line
 * message the listener itself would print. */
int preflight_port_free(const char *addr, int port, wsg_error *err);

/* Whether the offline commands (backup, restore, export, rotate-key) find
 * what `serve` left in cfg->data_dir: the directory, and when `store` the
 * store file in it. Asked first, so a wrong or missing --data-dir is said
 * as such rather than as a missing key file or an unopenable database.
 * Creates nothing. Returns 0, or WSG_E_STORE_MISSING with *err (the
 * caller's) filled with a one-line message naming the path. */
int preflight_existing(const config *cfg, bool store, wsg_error *err);

/* Whether `path` can be the new file of backup's or restore's --out: not a
 * directory, and in a directory that exists. SQLite says only "unable to
 * open database file" of either. Creates nothing. Returns 0, or WSG_E_IO
 * with *err (the caller's) filled with a one-line message. */
int preflight_out_file(const char *path, wsg_error *err);

#endif
