/* Unit tests for room_joins_due (src/app/room_joins.c): a worker sends a
 * room's join to the store the first time, again after the window, again
 * whenever the store's room generation moved or the clock went back, and
 * never holds more than ROOM_JOINS_MAX rooms. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "app/room_joins.h"

Test(room_joins, first_join_is_due_then_skipped_within_the_window) {
    room_joins j;
    room_joins_init(&j);
    int64_t t = 1700000000;
    cr_assert(room_joins_due(&j, "lobby", 7, t));
    cr_assert_not(room_joins_due(&j, "lobby", 7, t));
    cr_assert_not(room_joins_due(&j, "lobby", 7, t + ROOM_JOINS_WINDOW_S - 1));
    /* Another room is its own. */
    cr_assert(room_joins_due(&j, "lobby2", 7, t));
    /* Past the window the join goes again, and starts a new window. */
    cr_assert(room_joins_due(&j, "lobby", 7, t + ROOM_JOINS_WINDOW_S));
    cr_assert_not(room_joins_due(&j, "lobby", 7, t + ROOM_JOINS_WINDOW_S + 1));
    room_joins_free(&j);
}

Test(room_joins, a_new_store_generation_or_a_clock_going_back_sends_it_again) {
    room_joins j;
    room_joins_init(&j);
    int64_t t = 1700000000;
    cr_assert(room_joins_due(&j, "r", 0, t));
    cr_assert(room_joins_due(&j, "r", 1, t), "the store may have lost the row");
    cr_assert_not(room_joins_due(&j, "r", 1, t));
    cr_assert(room_joins_due(&j, "r", 1, t - 1), "clock stepped back");
    /* The generation wraps like any counter: only equality matters. */
    cr_assert(room_joins_due(&j, "r", UINT32_MAX, t));
    cr_assert_not(room_joins_due(&j, "r", UINT32_MAX, t + 1));
    room_joins_free(&j);
}

Test(room_joins, never_holds_more_than_the_maximum) {
    room_joins j;
    room_joins_init(&j);
    char id[32];
    for (int i = 0; i < ROOM_JOINS_MAX + 10; i++) {
        snprintf(id, sizeof id, "room-%d", i);
        cr_assert(room_joins_due(&j, id, 1, 1700000000));
        cr_assert_leq(j.seen.count, ROOM_JOINS_MAX);
    }
    /* The set started over: an early room is due again. */
    cr_assert(room_joins_due(&j, "room-0", 1, 1700000000));
    room_joins_free(&j);
}
