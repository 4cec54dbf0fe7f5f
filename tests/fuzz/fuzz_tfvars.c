/* libFuzzer target for the tfvars parser and the config layer on top of it:
 * the input is parsed as a document and as a single value, then applied to a
 * fresh config (as a tfvars file and as a .tfvars.json one); a successful
 * tfvars load must also dump to text that loads again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "config/config.h"
#include "config/tfvars.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* An exact-size copy so ASan flags any read past the end: libFuzzer's
     * own buffer is also exact, but this keeps the guarantee explicit. */
    char *text = xmalloc(size);
    if (size) memcpy(text, data, size);

    wsg_error perr;
    tfv_doc *doc = tfv_parse(text, size, &perr);
    if (!doc && (perr.code != WSG_E_CONFIG_SYNTAX || perr.line < 1 || perr.column < 1)) abort();
    tfv_doc_free(doc);
    tfv_value_free(tfv_parse_value(text, size, &perr));

    config cfg;
    wsg_error err;
    config_init_defaults(&cfg);
    int lrc = config_load_text(&cfg, "fuzz.tfvars", text, size, &err);
    if (lrc < 0 && (lrc != err.code || (lrc != WSG_E_CONFIG_SYNTAX && lrc != WSG_E_CONFIG_UNKNOWN &&
                                        lrc != WSG_E_CONFIG_VALUE)))
        abort();
    if (lrc == 0) {
        /* Every loaded value passes its own rule again. Cross-variable rules
         * (production safety, jwt/tls pairs) may refuse a loaded file; their
         * messages never start with `variable "`. */
        int rc = config_validate(&cfg, &err);
        if (rc != 0 && (rc != WSG_E_CONFIG_RULE || err.code != rc ||
                        strncmp(err.message, "variable \"", 10) == 0))
            abort();
        char *dump = NULL;
        size_t dump_len = 0;
        FILE *m = open_memstream(&dump, &dump_len);
        if (!m) abort();
        config_dump(&cfg, m);
        fclose(m);
        config again;
        config_init_defaults(&again);
        if (config_load_text(&again, "dump", dump, dump_len, &err) != 0) {
            fprintf(stderr, "dump does not load back: %s\n%s", err.message, dump);
            abort();
        }
        char *dump2 = NULL;
        size_t dump2_len = 0;
        m = open_memstream(&dump2, &dump2_len);
        if (!m) abort();
        config_dump(&again, m);
        fclose(m);
        if (dump_len != dump2_len || memcmp(dump, dump2, dump_len) != 0) abort();
        free(dump2);
        free(dump);
        config_free(&again);
    }
    config_free(&cfg);

    /* The same bytes as a terraform.tfvars.json file: the same codes. */
    config_init_defaults(&cfg);
    lrc = config_load_text(&cfg, "fuzz.tfvars.json", text, size, &err);
    if (lrc < 0 && (lrc != err.code || (lrc != WSG_E_CONFIG_SYNTAX && lrc != WSG_E_CONFIG_UNKNOWN &&
                                        lrc != WSG_E_CONFIG_VALUE)))
        abort();
    config_free(&cfg);

    /* The same bytes as a --set value, when they form a C string. */
    if (size < 512 && !memchr(text, '\0', size)) {
        char *s = xstrndup(text, size);
        config_init_defaults(&cfg);
        config_set(&cfg, s, &err);
        config_free(&cfg);
        free(s);
    }
    free(text);
    return 0;
}
