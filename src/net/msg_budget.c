/* A relaxed counter is enough: the bound is a memory ceiling, not an exact
 * quota, and a share only moves when its connection's parser buffer grows
 * or is released (never for a frame delivered from the read buffer). */
#include "net/msg_budget.h"

#include <stdatomic.h>
#include <stdint.h>

static _Atomic size_t held_total;

size_t msgbudget_total(void) { return atomic_load_explicit(&held_total, memory_order_relaxed); }

bool msgbudget_set(uint32_t *share, size_t held, int64_t limit) {
    if (held > UINT32_MAX) held = UINT32_MAX; /* beyond any message limit */
    if (held == *share) return false;
    bool grew = held > *share;
    size_t total;
    if (grew) {
        size_t add = held - *share;
        total = atomic_fetch_add_explicit(&held_total, add, memory_order_relaxed) + add;
    } else {
        size_t sub = *share - held;
        total = atomic_fetch_sub_explicit(&held_total, sub, memory_order_relaxed) - sub;
    }
    *share = held;
    return grew && limit > 0 && total > (size_t)limit;
}
