/* Unit tests for src/engine/redis_url.c: the forms the configuration
 * accepts, their defaults, percent-decoding of credentials, IPv6, and the
 * URLs refused with a reason (TLS among them). */
#include <criterion/criterion.h>
#include <string.h>

#include "engine/redis_url.h"

static redis_url ok(const char *s) {
    redis_url u;
    wsg_error err = {0};
    int rc = redis_url_parse(s, strlen(s), &u, &err);
    cr_assert_eq(rc, 0, "%s: %s", s, err.message);
    return u;
}

static void refused(const char *s, const char *why) {
    redis_url u;
    wsg_error err = {0};
    cr_assert_eq(redis_url_parse(s, strlen(s), &u, &err), WSG_E_ENGINE_CONFIG, "%s was accepted",
                 s);
    cr_assert_eq(err.code, WSG_E_ENGINE_CONFIG);
    cr_assert(strstr(err.message, why), "%s: \"%s\" lacks \"%s\"", s, err.message, why);
    cr_assert_not(redis_url_check(s));
}

Test(redis_url, defaults) {
    redis_url u = ok("redis://localhost");
    cr_assert_str_eq(u.host, "localhost");
    cr_assert_eq(u.port, 6379);
    cr_assert_eq(u.db, 0);
    cr_assert_str_eq(u.user, "");
    cr_assert_not(u.has_password);
    cr_assert_not(u.ipv6);
    u = ok("redis://127.0.0.1/");
    cr_assert_eq(u.port, 6379);
    cr_assert_eq(u.db, 0);
    cr_assert(redis_url_check(""));
}

Test(redis_url, full_form) {
    redis_url u = ok("redis://alice:s3cret@redis-1.example.com:6380/3");
    cr_assert_str_eq(u.user, "alice");
    cr_assert_str_eq(u.password, "s3cret");
    cr_assert(u.has_password);
    cr_assert_str_eq(u.host, "redis-1.example.com");
    cr_assert_eq(u.port, 6380);
    cr_assert_eq(u.db, 3);
    char name[64];
    cr_assert_str_eq(redis_url_name(&u, name, sizeof name), "redis-1.example.com:6380/3");
    u = ok("REDIS://h:1/65535");
    cr_assert_eq(u.port, 1);
    cr_assert_eq(u.db, 65535);
}

Test(redis_url, password_only_and_percent_decoding) {
    redis_url u = ok("redis://:p%40ss%3Aw%2Fd%25@h");
    cr_assert_str_eq(u.user, "");
    cr_assert_str_eq(u.password, "p@ss:w/d%");
    cr_assert(u.has_password);
    u = ok("redis://us%65r:@h");
    cr_assert_str_eq(u.user, "user");
    cr_assert_str_eq(u.password, "");
    cr_assert(u.has_password, "an empty password after ':' still means AUTH");
    /* Only the first ':' splits user from password. */
    u = ok("redis://u:a:b@h");
    cr_assert_str_eq(u.password, "a:b");
}

Test(redis_url, ipv6) {
    redis_url u = ok("redis://[::1]:7000/2");
    cr_assert_str_eq(u.host, "::1");
    cr_assert(u.ipv6);
    cr_assert_eq(u.port, 7000);
    cr_assert_eq(u.db, 2);
    char name[64];
    cr_assert_str_eq(redis_url_name(&u, name, sizeof name), "[::1]:7000/2");
    u = ok("redis://[fe80::1:2]");
    cr_assert_eq(u.port, 6379);
    refused("redis://[::1", "without ']'");
    refused("redis://[nothex]:1", "not an IPv6 address");
    refused("redis://[::1]x", "after ']'");
    refused("redis://[]:1", "IPv6");
}

Test(redis_url, tls) {
    redis_url u = ok("rediss://alice:s3cret@redis-1.example.com:6380/3");
    cr_assert(u.tls);
    cr_assert_str_eq(u.user, "alice");
    cr_assert_str_eq(u.password, "s3cret");
    cr_assert_str_eq(u.host, "redis-1.example.com");
    cr_assert_eq(u.port, 6380);
    cr_assert_eq(u.db, 3);
    /* The ring places a server by its name: switching it to TLS must not
     * move its rooms to another shard. */
    char name[64];
    cr_assert_str_eq(redis_url_name(&u, name, sizeof name), "redis-1.example.com:6380/3");
    u = ok("REDISS://[::1]");
    cr_assert(u.tls);
    cr_assert(u.ipv6);
    cr_assert_eq(u.port, 6379);
    cr_assert_not(ok("redis://h").tls);
    refused("redisss://h", "must start with redis:// or rediss://");
    refused("rediss:/h", "must start with");
    refused("rediss://", "no host");
}

Test(redis_url, refused) {
    refused("http://h", "must start with redis://");
    refused("redis:/h", "must start with redis://");
    refused("redis://", "no host");
    refused("redis://:pw@", "no host");
    refused("redis://h:", "port");
    refused("redis://h:0", "port");
    refused("redis://h:65536", "port");
    refused("redis://h:12ab", "port");
    refused("redis://h/16x", "database number");
    refused("redis://h/-1", "database number");
    refused("redis://h/0/1", "database number");
    refused("redis://h/1?timeout=3", "query");
    refused("redis://h#x", "query");
    refused("redis://user@h", "need a password");
    refused("redis://u:p@ss@h", "%40");
    refused("redis://u:p%4@h", "percent escape");
    refused("redis://u:p%zz@h", "percent escape");
    refused("redis://u:p%00@h", "NUL");
    refused("redis://u:p w@h", "space");
    refused("redis://h st", "host");
    refused("redis://h!", "host");
    char big[1100];
    memset(big, 'a', sizeof big);
    memcpy(big, "redis://", 8);
    big[sizeof big - 1] = '\0';
    refused(big, "longer than");
    redis_url u;
    wsg_error err = {0};
    cr_assert_eq(redis_url_parse("redis://h\0x", 11, &u, &err), WSG_E_ENGINE_CONFIG);
}

Test(redis_url, long_credentials) {
    char s[600];
    strcpy(s, "redis://:");
    memset(s + 9, 'p', 255);
    strcpy(s + 9 + 255, "@h");
    redis_url u = ok(s);
    cr_assert_eq(strlen(u.password), 255);
    memset(s + 9, 'p', 256);
    strcpy(s + 9 + 256, "@h");
    refused(s, "too long");
}
