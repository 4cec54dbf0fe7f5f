#include "cli/export.h"

#include <stdlib.h>
#include <string.h>

#include "cli/outputs.h"
#include "crypto/crypto.h"
#include "store/store.h"

int export_run(const config *cfg, const char *room, long long since, const char *format,
               FILE *out) {
    store_export_format fmt;
    if (!format || strcmp(format, "jsonl") == 0) fmt = STORE_EXPORT_JSONL;
    else if (strcmp(format, "csv") == 0) fmt = STORE_EXPORT_CSV;
    else {
        fprintf(stderr, "wsgate: --format %s: use jsonl or csv\n", format);
        return 2;
    }
    char db[4096];
    wsg_error err = {0};
    outputs_data_file(cfg, db, sizeof(db));
    crypto_keyring *keys = NULL;
    if (cfg->enable_encryption) {
        /* Never create a key here: a missing key file is the user's error. */
        char *kpath = crypto_key_file_path(cfg->data_dir, cfg->kms_key_file);
        wsg_error kerr;
        int rc = crypto_keyring_open(kpath, false, &keys, &kerr);
        free(kpath);
        if (rc < 0) {
            fprintf(stderr, "wsgate: %s\n", kerr.message);
            return 1;
        }
    }
    long n = store_export(db, keys, room, since, cfg->message_ttl_days, fmt, out, &err);
    crypto_keyring_free(keys);
    if (n < 0) {
        fprintf(stderr, "wsgate: %s\n", err.message);
        return 1;
    }
    if (n == 0) fprintf(stderr, "wsgate: no stored messages in room %s\n", room);
    return 0;
}
