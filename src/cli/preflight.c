#include "cli/preflight.h"

#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "app/auth.h"
#include "crypto/crypto.h"
#include "net/tls.h"

static bool set(const char *s) { return s && *s; }

int preflight_files(const config *cfg, wsg_error *err) {
    /* The same openers serve uses, so check says what serve would say. */
    if (set(cfg->tls_cert_file)) {
        tls_ctx *t = tls_ctx_new(cfg->tls_cert_file, cfg->tls_key_file, err);
        if (!t) return err->code < 0 ? err->code : WSG_E_CONFIG_VALUE;
        tls_ctx_free(t);
    }
    if (cfg->auth_mode_id == CONFIG_AUTH_JWT) {
        authorizer *a = auth_jwt_new(cfg, err);
        if (!a) return err->code < 0 ? err->code : WSG_E_CONFIG_VALUE;
        a->destroy(a);
    }
    if (cfg->enable_encryption) {
        char *path = crypto_key_file_path(cfg->data_dir, cfg->kms_key_file);
        int rc = 0;
        /* Never create: serve creates the default file on its first start. */
        if (set(cfg->kms_key_file) || access(path, F_OK) == 0) {
            crypto_keyring *r = NULL;
            rc = crypto_keyring_open(path, false, &r, err);
            crypto_keyring_free(r);
        }
        free(path);
        if (rc < 0) return rc;
    }
    return 0;
}
