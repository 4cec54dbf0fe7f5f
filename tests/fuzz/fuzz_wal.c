/* libFuzzer target for the WAL reader (src/store/walframe.c) and the
 * archive's record splitter (src/store/archive.h). Whatever the input:
 * - walf_scan counts whole frames only, up to a commit frame, never past
 *   the input; scanning the counted prefix again from the header gives the
 *   same state, and the rest after it holds no further commit;
 * - archive_record_split never claims more bytes than it was given, and a
 *   record it accepts is accepted again alone;
 * - a page delta (archive_delta_encode) of two pages taken from the input
 *   applies back to the second exactly, and archive_delta_apply on any
 *   bytes stays inside the page and the input;
 * - archive_record_open of an unsealed record (zlib or zstd) either fails
 *   with nothing allocated or gives exactly the raw length it declares. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_require.h"
#include "store/archive.h"
#include "store/walframe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    walf w;
    if (walf_header(&w, data, size) == 0) {
        require(w.page_size >= 512 && w.page_size <= 65536);
        const uint8_t *frames = data + WALF_HEADER_LEN;
        size_t len = size - WALF_HEADER_LEN, flen = walf_frame_len(&w);
        walf start = w;
        size_t n = walf_scan(&w, frames, len);
        require(n <= len && n % flen == 0);
        require(w.frames == n / flen);
        if (n) {
            require(walf_frame_commit(frames + n - flen) == w.db_pages && w.db_pages != 0);
            walf again = start;
            require(walf_scan(&again, frames, n) == n);
            require(memcmp(&again, &w, sizeof(w)) == 0);
        } else {
            require(memcmp(&start, &w, sizeof(w)) == 0);
        }
        walf rest = w;
        require(walf_scan(&rest, frames + n, len - n) == 0);
        require(memcmp(&rest, &w, sizeof(w)) == 0);
    }
    const uint8_t *body;
    size_t blen, used;
    int r = archive_record_split(data, size, &body, &blen, &used);
    require(r >= -1 && r <= 1);
    if (r == 1) {
        require(used <= size && used == blen + 8 && body == data + 8);
        const uint8_t *b2;
        size_t l2, u2;
        require(archive_record_split(data, used, &b2, &l2, &u2) == 1 && u2 == used);
    }
    /* Declared lengths past 1 MiB only cost the fuzzer time. */
    if (size >= 5 && walf_get32(data + 1) <= (1u << 20)) {
        int type = 0;
        uint8_t *raw = NULL;
        size_t raw_len = 0;
        wsg_error err = {0};
        int o = archive_record_open(NULL, 0, "f", 0, data, size, &type, &raw, &raw_len, &err);
        require(o == 0 || (o == WSG_E_STORE_ARCHIVE && err.code == o && err.message[0]));
        if (o == 0) require(raw && raw_len == walf_get32(data + 1) && type == (data[0] & 0x7f));
        else require(raw == NULL);
        free(raw);
    }
    if (size >= 1024) {
        uint8_t page[512], out[512];
        memcpy(page, data, 512);
        size_t d = archive_delta_encode(data, data + 512, 512, out, sizeof(out));
        if (d) {
            require(archive_delta_apply(page, 512, out, d) == (int)d);
            require(memcmp(page, data + 512, 512) == 0);
        } else {
            require(memcmp(data, data + 512, 512) != 0);
        }
    }
    uint8_t page[512] = {0};
    int applied = archive_delta_apply(page, sizeof(page), data, size);
    require(applied == -1 || (applied >= 2 && (size_t)applied <= size));
    return 0;
}
