/* Clocks used for latencies and timestamps, in one place. */
#ifndef WSGATE_COMMON_CLOCK_H
#define WSGATE_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Return monotonic milliseconds (with a fraction), for measuring durations. */
static inline double clock_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Return monotonic nanoseconds, for stamping a message's stages cheaply
 * (one vDSO call, no floating point). */
static inline uint64_t clock_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Return Unix time in whole milliseconds. */
static inline int64_t clock_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
