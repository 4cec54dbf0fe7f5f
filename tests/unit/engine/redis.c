/* engine_redis_new reports a Redis URL it cannot use with the one error
 * list (WSG_E_ENGINE_CONFIG, the message from the URL parser), and the
 * engine's answers about remote connections are rows of that list. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "config/config.h"
#include "engine/redis.h"

Test(engine_redis, a_bad_url_is_engine_config) {
    config c;
    config_init_defaults(&c);
    free(c.redis_url);
    c.redis_url = xstrdup("http://localhost:6379");
    wsg_error err = {0};
    cr_assert_null(engine_redis_new(1, NULL, NULL, &c, NULL, &err));
    cr_assert_eq(err.code, WSG_E_ENGINE_CONFIG, "%s", wsg_err_name(err.code));
    cr_assert(err.message[0] != '\0');
    cr_assert_null(engine_redis_new(1, NULL, NULL, &c, NULL, NULL)); /* err may be NULL */
    config_free(&c);
}

Test(engine_redis, remote_answers_are_rows_of_the_list) {
    cr_assert_eq(ENGINE_E_ELSEWHERE, WSG_E_ENGINE_ELSEWHERE);
    cr_assert_eq(wsg_err_http_status(ENGINE_E_TIMEOUT), 504);
    cr_assert_eq(wsg_err_http_status(ENGINE_E_UNAVAILABLE), 503);
    /* never one of engine_send_conn's plain answers (-1 gone, -2 full) */
    cr_assert(ENGINE_E_ELSEWHERE < -2 && ENGINE_E_TIMEOUT < -2 && ENGINE_E_UNAVAILABLE < -2);
}
