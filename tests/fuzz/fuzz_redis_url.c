/* libFuzzer target for the Redis URL parser: any input either fails with a
 * message or yields a URL that, written back out (credentials
 * percent-encoded where needed), parses again to the same fields. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytebuf.h"
#include "engine/redis_url.h"
#include "fuzz_require.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Percent-encode what the parser must not see raw in a credential. */
static void put_encoded(bytebuf *b, const char *s, bool user) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == 0x7f || c == '%' || c == '@' || c == '/' || c == '?' || c == '#' ||
            (user && c == ':'))
            bytebuf_printf(b, "%%%02X", c);
        else bytebuf_putc(b, (char)c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    redis_url u;
    wsg_error err = {0};
    if (redis_url_parse(text, size, &u, &err) != 0) {
        require(err.code == WSG_E_ENGINE_CONFIG && err.message[0] != '\0');
        free(text);
        return 0;
    }
    require(u.port >= 1 && u.port <= 65535);
    require(u.db >= 0 && u.db <= 65535);
    require(u.host[0] != '\0');
    require(u.has_password || (u.user[0] == '\0' && u.password[0] == '\0'));

    bytebuf b = {0};
    bytebuf_puts(&b, "redis://");
    if (u.has_password) {
        put_encoded(&b, u.user, true);
        bytebuf_putc(&b, ':');
        put_encoded(&b, u.password, false);
        bytebuf_putc(&b, '@');
    }
    char name[REDIS_URL_MAX_HOST + 32];
    bytebuf_puts(&b, redis_url_name(&u, name, sizeof name));
    /* Written out with the default port and db it may pass the length
     * limit; only a URL within it must parse again. */
    if (b.n > REDIS_URL_MAX_LEN) {
        free(b.d);
        free(text);
        return 0;
    }
    redis_url again;
    if (redis_url_parse(b.d, b.n, &again, &err) != 0) {
        fprintf(stderr, "%s does not parse again: %s\n", b.d, err.message);
        abort();
    }
    require(strcmp(u.host, again.host) == 0 && u.port == again.port && u.db == again.db);
    require(strcmp(u.user, again.user) == 0 && strcmp(u.password, again.password) == 0);
    require(u.ipv6 == again.ipv6 && u.has_password == again.has_password);
    free(b.d);
    free(text);
    return 0;
}
