/* The Redis engine's configuration variables (src/config/config_table.c):
 * defaults, each URL checked by the URL parser at load, the rules between
 * redis_url and redis_urls, and passwords masked in the dump (which still
 * loads back). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static int load_text(config *c, const char *text, wsg_error *err) {
    config_init_defaults(c);
    return config_load_text(c, "test.tfvars", text, strlen(text), err);
}

static int validate_text(const char *text, wsg_error *err) {
    config c;
    int rc = load_text(&c, text, err);
    if (rc == 0) rc = config_validate(&c, err);
    config_free(&c);
    return rc;
}

static char *dump(const config *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    config_dump(c, m);
    fclose(m);
    return buf;
}

Test(config_redis, defaults) {
    config c;
    config_init_defaults(&c);
    cr_assert_str_eq(c.redis_url, "");
    cr_assert_eq(c.redis_urls_count, 0);
    cr_assert_eq(c.redis_min_replicas, 0);
    cr_assert_eq(c.redis_node_timeout_s, 30);
    wsg_error err;
    cr_assert_eq(config_validate(&c, &err), 0, "%s", err.message);
    config_free(&c);
}

Test(config_redis, urls_are_parsed) {
    wsg_error err;
    cr_assert_eq(validate_text("redis_url = \"redis://u:p%40w@10.0.0.5:6380/2\"", &err), 0, "%s",
                 err.message);
    cr_assert_eq(validate_text("redis_urls = [\"redis://a:7000\", \"redis://[::1]:7001/1\"]", &err),
                 0, "%s", err.message);
    cr_assert_eq(validate_text("redis_url = \"rediss://h:6380\"", &err), 0, "%s", err.message);
    cr_assert_lt(validate_text("redis_url = \"redisss://h:6380\"", &err), 0);
    cr_assert(strstr(err.message, "variable \"redis_url\"") && strstr(err.message, "rediss://"),
              "%s", err.message);
    cr_assert_lt(validate_text("redis_urls = [\"redis://a:7000\", \"redis://b:0\"]", &err), 0);
    cr_assert(strstr(err.message, "variable \"redis_urls\""), "%s", err.message);
    cr_assert_lt(validate_text("redis_url = \"localhost:6379\"", &err), 0);
    cr_assert_lt(validate_text("redis_min_replicas = 17", &err), 0);
    cr_assert_lt(validate_text("redis_node_timeout_s = 1", &err), 0);
    cr_assert_eq(validate_text("redis_node_timeout_s = 3600", &err), 0, "%s", err.message);
}

Test(config_redis, rules_between_variables) {
    wsg_error err;
    cr_assert_lt(validate_text("redis_url = \"redis://a\"\nredis_urls = [\"redis://b\"]", &err), 0);
    cr_assert(strstr(err.message, "not both"), "%s", err.message);
    /* The same server twice, written two ways (default port and db). */
    cr_assert_lt(validate_text("redis_urls = [\"redis://a\", \"redis://:pw@a:6379/0\"]", &err), 0);
    cr_assert_str_eq(err.message, "redis_urls lists the Redis server a:6379/0 twice");
    cr_assert_eq(validate_text("redis_urls = [\"redis://a/0\", \"redis://a/1\"]", &err), 0, "%s",
                 err.message);
    /* rediss:// files: readable, and a certificate goes with its key. */
    cr_assert_lt(validate_text("redis_tls_ca_file = \"/nonexistent/ca.pem\"", &err), 0);
    cr_assert(strstr(err.message, "redis_tls_ca_file: cannot read /nonexistent/ca.pem"), "%s",
              err.message);
    cr_assert_lt(validate_text("redis_tls_cert_file = \"/dev/null\"", &err), 0);
    cr_assert(strstr(err.message, "must be set together (redis_tls_key_file is empty)"), "%s",
              err.message);
    cr_assert_eq(validate_text("redis_tls_cert_file = \"/dev/null\"\n"
                               "redis_tls_key_file = \"/dev/null\"\n"
                               "redis_tls_server_name = \"redis.internal\"\n"
                               "redis_tls_insecure_skip_verify = true",
                               &err),
                 0, "%s", err.message);
}

Test(config_redis, dump_masks_passwords_and_loads_back) {
    config c;
    wsg_error err;
    cr_assert_eq(load_text(&c,
                           "redis_url = \"redis://alice:s3cret@h:6380/1\"\n"
                           "redis_urls = []\n",
                           &err),
                 0, "%s", err.message);
    char *text = dump(&c);
    cr_assert_null(strstr(text, "s3cret"));
    cr_assert(strstr(text, "\"redis://alice:********@h:6380/1\""), "%s", text);
    config again;
    cr_assert_eq(load_text(&again, text, &err), 0, "%s", err.message);
    cr_assert_eq(config_validate(&again, &err), 0, "%s", err.message);
    config_free(&again);
    free(text);
    config_free(&c);

    cr_assert_eq(load_text(&c, "redis_urls = [\"redis://:pw1@a\", \"redis://b:1\"]\n", &err), 0,
                 "%s", err.message);
    text = dump(&c);
    cr_assert_null(strstr(text, "pw1"));
    cr_assert(strstr(text, "[\"redis://:********@a\", \"redis://b:1\"]"), "%s", text);
    free(text);
    config_free(&c);
}

Test(config_redis, engine_variable) {
    config c;
    config_init_defaults(&c);
    cr_assert_str_eq(c.engine, "local");
    cr_assert_eq(c.engine_id, CONFIG_ENGINE_LOCAL);
    config_free(&c);
    wsg_error err;
    cr_assert_eq(load_text(&c, "engine = \"redis\"\nredis_url = \"redis://127.0.0.1:6390\"", &err),
                 0, "%s", err.message);
    cr_assert_eq(c.engine_id, CONFIG_ENGINE_REDIS);
    cr_assert_eq(config_validate(&c, &err), 0, "%s", err.message);
    config_free(&c);
    cr_assert_lt(validate_text("engine = \"mongo\"", &err), 0);
    cr_assert(strstr(err.message, "Engine must be one of: local, redis."), "%s", err.message);
    /* The Redis engine needs its server, or its shards. */
    cr_assert_lt(validate_text("engine = \"redis\"", &err), 0);
    cr_assert_str_eq(err.message, "engine = \"redis\" requires redis_url or redis_urls");
    cr_assert_eq(
        validate_text("engine = \"redis\"\nredis_urls = [\"redis://a\", \"redis://b\"]", &err), 0,
        "%s", err.message);
    cr_assert_eq(validate_text("engine = \"redis\"\nredis_urls = [\"redis://a\"]", &err), 0, "%s",
                 err.message);
    cr_assert_lt(
        validate_text("engine = \"redis\"\nredis_urls = [\"redis://a\", \"redis://a:6379\"]", &err),
        0);
    cr_assert_str_eq(err.message, "redis_urls lists the Redis server a:6379/0 twice");
    /* The local engine ignores the Redis settings, as before. */
    cr_assert_eq(validate_text("redis_urls = [\"redis://a\", \"redis://b\"]", &err), 0, "%s",
                 err.message);
}
