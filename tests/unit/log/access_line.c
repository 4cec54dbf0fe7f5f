/* Unit tests for src/log/access_line.h: the $context fields both kinds of
 * access line start with, in the documented order (docs/operations.md), and
 * the one difference between them, identity.userAgent for a client that sent
 * none (null on a built-in route's line, left out of an integration call's). */
#include <criterion/criterion.h>
#include <string.h>

#include "log/access_line.h"

static const char *fields_of(const log_line *l) {
    const char *p = strstr(l->buf, "\"requestId\"");
    cr_assert_not_null(p);
    return p;
}

static access_line sample(const char *ua, bool optional) {
    return (access_line){.request_id = "r-1",
                         .connection_id = "c-1",
                         .event_type = "MESSAGE",
                         .route_key = "chat",
                         .status = 200,
                         .request_time_epoch = 1700000000123,
                         .latency_ms = 1.5,
                         .source_ip = "127.0.0.1",
                         .user_agent = ua,
                         .user_agent_optional = optional,
                         .worker = 2};
}

Test(access_line, context_fields_in_order) {
    config cfg;
    config_init_defaults(&cfg);
    config_kv tags[] = {{"team", "chat"}, {"env", "t"}};
    config_kv *saved = cfg.additional_tags;
    size_t nsaved = cfg.additional_tags_count;
    cfg.additional_tags = tags;
    cfg.additional_tags_count = 2;

    log_line l;
    log_begin(&l, LOG_INFO, "access");
    access_line a = sample("ua/1", false);
    access_line_context(&l, &cfg, &a);
    access_line_tags(&l, &cfg);
    l.buf[l.len] = '\0';
    cr_assert_str_eq(fields_of(&l),
                     "\"requestId\":\"r-1\",\"connectionId\":\"c-1\",\"eventType\":\"MESSAGE\","
                     "\"routeKey\":\"chat\",\"status\":200,\"requestTimeEpoch\":1700000000123,"
                     "\"integrationLatency\":1.500,\"identity.sourceIp\":\"127.0.0.1\","
                     "\"identity.userAgent\":\"ua/1\",\"stage\":\"staging\",\"worker\":2,"
                     "\"team\":\"chat\",\"env\":\"t\"");

    cfg.additional_tags = saved;
    cfg.additional_tags_count = nsaved;
    config_free(&cfg);
}

Test(access_line, missing_user_agent_null_or_left_out) {
    config cfg;
    config_init_defaults(&cfg);
    log_line l;
    log_begin(&l, LOG_INFO, "access");
    access_line a = sample(NULL, false);
    access_line_context(&l, &cfg, &a);
    l.buf[l.len] = '\0';
    cr_assert_not_null(strstr(l.buf, "\"identity.userAgent\":null,\"stage\""));

    log_begin(&l, LOG_INFO, "access");
    a = sample(NULL, true);
    access_line_context(&l, &cfg, &a);
    l.buf[l.len] = '\0';
    cr_assert_null(strstr(l.buf, "userAgent"));
    cr_assert_not_null(strstr(l.buf, "\"identity.sourceIp\":\"127.0.0.1\",\"stage\""));
    config_free(&cfg);
}
