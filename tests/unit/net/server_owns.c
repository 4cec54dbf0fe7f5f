/* Unit test for server_owns (src/net/server.c): ownership fails closed. A
 * thread that entered no server owns no connection, so its sends go
 * through the owner's inbox instead of touching another loop's state. */
#include <criterion/criterion.h>
#include <pthread.h>

#include "net/server.h"

static server a, b;
static conn ca = {.srv = &a}, cb = {.srv = &b};

static void *fresh_thread(void *arg) {
    *(bool *)arg = server_owns(&ca) || server_owns(&cb);
    return NULL;
}

Test(server_owns, fails_closed) {
    /* Before the fix a thread with no server owned every connection. */
    bool owned = true;
    pthread_t t;
    pthread_create(&t, NULL, fresh_thread, &owned);
    pthread_join(t, NULL);
    cr_assert_not(owned);

    server_enter(&a);
    cr_assert(server_owns(&ca));
    cr_assert_not(server_owns(&cb));
    server_enter(&b);
    cr_assert_not(server_owns(&ca));
    cr_assert(server_owns(&cb));
}
