/* Unit test for store_rooms_gen: it moves when the TTL sweep deletes an
 * idle room's row, which is what tells the workers that skip recent joins
 * (src/app/room_joins.h) to send the next one again, so a room emptied by
 * the sweep gets its row back on the next connect. A real SQLite file in a
 * temp dir. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#include "common/alloc.h"
#include "store/store.h"
#include "fixture.h"

static void join(store *s, const char *room, int64_t ts) {
    store_op *op = store_op_new(STORE_OP_ROOM_JOIN);
    op->room_id = xstrdup(room);
    op->user_id = xstrdup("u");
    op->timestamp = ts;
    store_submit(s, op);
}

/* Committed ops are handed over on the store thread (no loop to run). */
static void done(store_op *op, void *ctx) {
    (void)ctx;
    store_op_free(op);
}

static void wait_idle(store *s) {
    for (int i = 0; i < 10000 && store_pending(s) != 0; i++) usleep(1000);
    cr_assert_eq(store_pending(s), 0);
}

Test(store_rooms_gen, moves_when_the_sweep_deletes_a_room_and_only_then) {
    fx_store f;
    fx_store_init(&f, "rooms-gen");
    store_options so = {.sync_full = false, .ttl_days = 1, .on_commit = done};
    store *s = fx_store_open(&f, &so);
    uint32_t g0 = store_rooms_gen(s);
    /* A room joined now stays: the sweep (about once a second) leaves it
     * and the generation with it. */
    join(s, "fresh", (int64_t)time(NULL));
    wait_idle(s);
    sleep(2);
    cr_assert_eq(store_rooms_gen(s), g0);
    /* A room last active in 1970 is past a one-day TTL: the sweep deletes
     * its row and the generation moves (bounded wait: a loaded machine). */
    join(s, "stale", 1);
    wait_idle(s);
    for (int i = 0; i < 300 && store_rooms_gen(s) == g0; i++) usleep(100 * 1000);
    cr_assert_neq(store_rooms_gen(s), g0, "the sweep deleted no room within 30 s");
    fx_store_close(&f);
}
