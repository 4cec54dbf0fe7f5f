/* Unit tests for the process-wide bound on unfinished messages
 * (src/net/msg_budget.c). The counter is the process's: each test returns
 * every share it took, so the total starts and ends at 0. */
#include <criterion/criterion.h>

#include "net/msg_budget.h"

Test(msg_budget, shares_add_up_and_release) {
    uint32_t a = 0, b = 0;
    cr_assert_eq(msgbudget_total(), 0);
    cr_assert_not(msgbudget_set(&a, 4096, 65536));
    cr_assert_not(msgbudget_set(&b, 8192, 65536));
    cr_assert_eq(msgbudget_total(), 4096 + 8192);
    cr_assert_eq(a, 4096);
    /* Shrinking or standing still is never refused. */
    cr_assert_not(msgbudget_set(&a, 4096, 1));
    cr_assert_not(msgbudget_set(&b, 256, 1));
    cr_assert_eq(msgbudget_total(), 4096 + 256);
    msgbudget_set(&a, 0, 0);
    msgbudget_set(&b, 0, 0);
    cr_assert_eq(msgbudget_total(), 0);
}

Test(msg_budget, growth_past_the_limit_is_refused_and_counted_until_released) {
    uint32_t a = 0, b = 0;
    cr_assert_not(msgbudget_set(&a, 60000, 65536));
    /* Exactly at the limit is allowed; one byte past it is not. */
    cr_assert_not(msgbudget_set(&b, 5536, 65536));
    cr_assert(msgbudget_set(&b, 5537, 65536));
    /* The caller releases the refused share. */
    cr_assert_eq(msgbudget_total(), 65537);
    msgbudget_set(&b, 0, 0);
    cr_assert_eq(msgbudget_total(), 60000);
    /* No limit: never refused. */
    cr_assert_not(msgbudget_set(&b, 1u << 30, 0));
    msgbudget_set(&a, 0, 0);
    msgbudget_set(&b, 0, 0);
    cr_assert_eq(msgbudget_total(), 0);
}
