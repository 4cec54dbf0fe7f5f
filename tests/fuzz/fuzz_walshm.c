/* libFuzzer target for the WAL-index header reader (src/store/walshm.c).
 * Whatever the input: walshm_parse reads only the 136 bytes of a header
 * and no more, accepts only a header whose two copies agree, and what it
 * accepts never has nBackfill past mxFrame; "may restart" is said only of
 * a WAL with frames, all of them copied. */
#include <stdint.h>
#include <string.h>

#include "fuzz_require.h"
#include "store/walshm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    walshm w = {0xdeadbeef, 0xdeadbeef};
    int r = walshm_parse(&w, data, size);
    require(r == 0 || r == -1);
    if (r == -1) {
        require(w.mx_frame == 0xdeadbeef && w.backfill == 0xdeadbeef);
        return 0;
    }
    require(size >= WALSHM_HEADER_LEN);
    require(memcmp(data, data + 48, 48) == 0);
    require(w.backfill <= w.mx_frame);
    require(walshm_may_restart(&w) == (w.mx_frame > 0 && w.backfill == w.mx_frame));
    walshm again;
    require(walshm_parse(&again, data, WALSHM_HEADER_LEN) == 0);
    require(again.mx_frame == w.mx_frame && again.backfill == w.backfill);
    return 0;
}
