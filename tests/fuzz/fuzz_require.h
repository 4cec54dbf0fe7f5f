/* require(cond): an invariant of a fuzz target. A violated one prints the
 * condition and aborts, which libFuzzer reports as a crash with the input. */
#ifndef WSGATE_FUZZ_REQUIRE_H
#define WSGATE_FUZZ_REQUIRE_H

#include <stdio.h>
#include <stdlib.h>

#define require(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
