/* How the frame fuzzers split one input into reads: whole (mode 0), a byte
 * at a time (mode 1), or pseudo-random chunk sizes drawn from seed (mode
 * 2). The parser must come to the same result every way. */
#ifndef WSGATE_FUZZ_CHUNKS_H
#define WSGATE_FUZZ_CHUNKS_H

#include <stddef.h>
#include <stdint.h>

/* Start the chunk sizes of a run with seed. */
static inline uint32_t fuzz_chunks_init(uint8_t seed) { return seed * 2654435761u + 1; }

/* Return the size of the next read when `left` bytes remain. */
static inline size_t fuzz_next_chunk(int mode, uint8_t seed, uint32_t *rng, size_t left) {
    if (mode == 1) return 1;
    if (mode == 2) {
        *rng = *rng * 1103515245u + 12345u;
        size_t want = (*rng >> 16) % (seed % 64 + 2) + 1;
        if (want < left) return want;
    }
    return left;
}

#endif
