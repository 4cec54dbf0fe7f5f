/* libFuzzer target for the verified-files ledger's parser
 * (src/store/ledger.c). Whatever the input: ledger_parse accepts it whole
 * or leaves the ledger empty; what it accepts has only names that stay in
 * their directory, formats to a text that parses back to the same lines,
 * and that text is stable (formatting it again gives the same bytes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_require.h"
#include "store/ledger.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ledger l = {0}, back = {0};
    int r = ledger_parse(&l, (const char *)data, size);
    require(r == 0 || r == -1);
    if (r == -1) {
        require(l.n == 0 && !l.has_db);
        return 0;
    }
    for (size_t i = 0; i < l.n; i++) {
        require(strchr(l.files[i].name, '/') == NULL && l.files[i].name[0] != '.');
        require(l.files[i].last >= 0 && l.files[i].last <= 127);
    }
    size_t len, len2;
    char *text = ledger_format(&l, &len);
    require(ledger_parse(&back, text, len) == 0);
    require(back.n == l.n && back.has_db == l.has_db && back.has_gen == l.has_gen);
    char *again = ledger_format(&back, &len2);
    require(len2 == len && memcmp(again, text, len) == 0);
    free(text);
    free(again);
    ledger_free(&l);
    ledger_free(&back);
    return 0;
}
