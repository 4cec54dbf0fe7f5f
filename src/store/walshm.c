/* The WAL-index header reader (walshm.h). */
#include "store/walshm.h"

#include <string.h>
#include <unistd.h>

#define WALSHM_VERSION   3007000u
#define WALSHM_COPY_LEN  48
#define WALSHM_OFF_INIT  12
#define WALSHM_OFF_MX    16
#define WALSHM_OFF_BACKF 96

static uint32_t native32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

int walshm_parse(walshm *out, const uint8_t *buf, size_t len) {
    if (len < WALSHM_HEADER_LEN) return -1;
    if (native32(buf) != WALSHM_VERSION || buf[WALSHM_OFF_INIT] != 1) return -1;
    /* SQLite writes the second copy first and the first copy last: copies
     * that differ are a header being rewritten, with nothing to trust. */
    if (memcmp(buf, buf + WALSHM_COPY_LEN, WALSHM_COPY_LEN) != 0) return -1;
    uint32_t mx = native32(buf + WALSHM_OFF_MX), backfill = native32(buf + WALSHM_OFF_BACKF);
    if (backfill > mx) return -1;
    out->mx_frame = mx;
    out->backfill = backfill;
    return 0;
}

bool walshm_may_restart(const walshm *w) { return w->mx_frame > 0 && w->backfill == w->mx_frame; }

int walshm_read(int fd, walshm *out) {
    uint8_t buf[WALSHM_HEADER_LEN];
    if (fd < 0 || pread(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf)) return -1;
    return walshm_parse(out, buf, sizeof(buf));
}
