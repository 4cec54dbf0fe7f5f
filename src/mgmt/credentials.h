/* The management API's credentials ("IAM in miniature"): a SigV4 key pair
 * and a bearer key, from the configuration or, when not configured,
 * generated on first start into the data directory (mode 0600) and reused
 * afterwards. */
#ifndef WSGATE_MGMT_CREDENTIALS_H
#define WSGATE_MGMT_CREDENTIALS_H

#include <stddef.h>

#include "common/error.h"
#include "config/config.h"

typedef struct mgmt_credentials {
    char access_key_id[129];
    char secret_access_key[129];
    char bearer_key[257];
} mgmt_credentials;

/* Fill *out from cfg, generating and saving the missing values in
 * DATA_DIR/management-credentials.json (created 0600; read back when it
 * exists). Returns 0, or with *err (caller's) filled WSG_E_IO (the file
 * cannot be read or written) or WSG_E_MGMT_CREDENTIALS (it lacks a key). */
int mgmt_credentials_load(const config *cfg, mgmt_credentials *out, wsg_error *err);

/* As mgmt_credentials_load, but never writes: values not configured come
 * from DATA_DIR/management-credentials.json, and when that file does not
 * exist returns WSG_E_MGMT_NO_CREDENTIALS ("no credentials in DIR: ..." in
 * err->message). For the CLI. */
int mgmt_credentials_read(const config *cfg, mgmt_credentials *out, wsg_error *err);

#endif
