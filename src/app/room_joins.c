/* Room joins a worker may leave out: see room_joins.h. */
#include "app/room_joins.h"

#include <stddef.h>

_Static_assert(sizeof(uintptr_t) >= sizeof(uint64_t), "the value is packed into a pointer");

void room_joins_init(room_joins *j) { strmap_init(&j->seen); }

void room_joins_free(room_joins *j) { strmap_free(&j->seen); }

/* The value packs the generation and the time into the pointer itself, so
 * an entry costs its slot and key only. Seconds are kept as 32 bits
 * (unsigned: good until 2106); a value is never NULL because now_s > 0. */
static void *pack(uint32_t gen, int64_t now_s) {
    return (void *)(uintptr_t)(((uint64_t)gen << 32) | (uint32_t)now_s);
}

bool room_joins_due(room_joins *j, const char *room_id, uint32_t gen, int64_t now_s) {
    uint64_t v = (uint64_t)(uintptr_t)strmap_get(&j->seen, room_id);
    if (v && (uint32_t)(v >> 32) == gen) {
        int64_t age = now_s - (int64_t)(uint32_t)v;
        /* A clock stepped back counts as old: the join is sent. */
        if (age >= 0 && age < ROOM_JOINS_WINDOW_S) return false;
    }
    if (!v && j->seen.count >= ROOM_JOINS_MAX) {
        strmap_free(&j->seen);
        strmap_init(&j->seen);
    }
    strmap_put(&j->seen, room_id, pack(gen, now_s), NULL);
    return true;
}
