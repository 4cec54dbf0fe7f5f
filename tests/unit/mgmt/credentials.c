/* The management credentials file (src/mgmt/credentials.c): what the CLI
 * and the server are told when it is missing, unreadable or incomplete. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "mgmt/credentials.h"
#include "../testdir.h"

static void write_file(const char *dir, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/management-credentials.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(mgmt_credentials, codes) {
    char *d = testdir_make("creds");
    config cfg;
    config_init_defaults(&cfg);
    free(cfg.data_dir);
    cfg.data_dir = strdup(d);
    mgmt_credentials c;
    wsg_error err = {0};

    /* The CLI never creates keys. */
    cr_assert_eq(mgmt_credentials_read(&cfg, &c, &err), WSG_E_MGMT_NO_CREDENTIALS);
    cr_assert_eq(err.code, WSG_E_MGMT_NO_CREDENTIALS);
    cr_assert_not_null(strstr(err.message, "no credentials in "), "%s", err.message);

    /* The server does, and reads them back. */
    cr_assert_eq(mgmt_credentials_load(&cfg, &c, &err), 0, "%s", err.message);
    mgmt_credentials again;
    cr_assert_eq(mgmt_credentials_read(&cfg, &again, &err), 0, "%s", err.message);
    cr_assert_str_eq(again.bearer_key, c.bearer_key);

    write_file(d, "{\"access_key_id\": \"AKIA\"}");
    cr_assert_eq(mgmt_credentials_read(&cfg, &c, &err), WSG_E_MGMT_CREDENTIALS);
    cr_assert_not_null(
        strstr(err.message, "missing access_key_id, secret_access_key or bearer_key"), "%s",
        err.message);

    write_file(d, "{not json");
    cr_assert_eq(mgmt_credentials_load(&cfg, &c, &err), WSG_E_IO);
    cr_assert(strncmp(err.message, "cannot read ", 12) == 0, "%s", err.message);

    config_free(&cfg);
    testdir_free(d);
}
