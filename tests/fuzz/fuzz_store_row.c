/* libFuzzer target for the compact row's codecs (src/store/row.c). Whatever
 * the input:
 * - store_row_decode either refuses it (all outputs NULL) or returns three
 *   strings that store_row_encode turns back into exactly the input, when
 *   the input's lengths are minimal (canonical LEB128);
 * - store_row_id_pack accepts it only when store_row_id_format gives it
 *   back byte for byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_require.h"
#include "store/row.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s, *n, *t;
    if (store_row_decode(data, size, &s, &n, &t) == 0) {
        require(s && n && t);
        size_t len;
        uint8_t *again = store_row_encode(s, n, t, &len);
        /* Every decoded body re-encodes to itself or, when the input spent
         * more LEB128 bytes than needed, to something shorter. */
        require(len <= size);
        if (len == size) require(memcmp(again, data, size) == 0);
        char *s2, *n2, *t2;
        require(store_row_decode(again, len, &s2, &n2, &t2) == 0);
        require(strcmp(s, s2) == 0 && strcmp(n, n2) == 0 && strcmp(t, t2) == 0);
        free(again);
        free(s2);
        free(n2);
        free(t2);
        free(s);
        free(n);
        free(t);
    } else {
        require(!s && !n && !t);
    }
    uint8_t id[STORE_ROW_ID_LEN];
    if (store_row_id_pack((const char *)data, size, id)) {
        char back[37];
        store_row_id_format(id, back);
        require(size == 36 && memcmp(back, data, 36) == 0);
    }
    return 0;
}
