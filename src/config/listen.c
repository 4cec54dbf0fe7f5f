#include "config/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* First address of `family` for name; numeric_only refuses DNS. Returns 0
 * or getaddrinfo's error. */
static int lookup(const char *name, int family, bool numeric_only, struct sockaddr_storage *out,
                  socklen_t *outlen) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = numeric_only ? AI_NUMERICHOST : 0;
    int r = getaddrinfo(name, NULL, &hints, &res);
    if (r != 0) return r;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *outlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int config_listen_resolve(const char *listen, char *numeric, size_t numlen, wsg_error *err) {
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    if (!listen || !*listen) {
        return wsg_error_set(err, WSG_E_CONFIG_LISTEN,
                             "variable \"listen\": the listen address is empty");
    }
    /* A name resolves to IPv4 first: the default, 127.0.0.1, is IPv4, and
     * clients that dial "localhost" try both families anyway. */
    int r = lookup(listen, AF_UNSPEC, true, &ss, &sl);
    if (r != 0) r = lookup(listen, AF_INET, false, &ss, &sl);
    if (r != 0) r = lookup(listen, AF_INET6, false, &ss, &sl);
    if (r != 0) {
        return wsg_error_set(err, WSG_E_CONFIG_LISTEN,
                             "variable \"listen\": \"%.255s\" is neither an IP address nor a host "
                             "name that resolves (%s)",
                             listen, gai_strerror(r));
    }
    const void *a = ss.ss_family == AF_INET6
                        ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                        : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
    char text[INET6_ADDRSTRLEN];
    inet_ntop(ss.ss_family, a, text, sizeof(text));
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return wsg_error_set(err, WSG_E_CONFIG_LISTEN,
                             "variable \"listen\": cannot listen on \"%.255s\"%s%s%s: %s", listen,
                             strcmp(text, listen) ? " (" : "", strcmp(text, listen) ? text : "",
                             strcmp(text, listen) ? ")" : "",
                             e == EADDRNOTAVAIL ? "not an address of this machine" : strerror(e));
    }
    close(fd);
    snprintf(numeric, numlen, "%s", text);
    return 0;
}
