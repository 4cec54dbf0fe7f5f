/* netaddr_numeric: numeric IPv4 and IPv6 addresses become socket
 * addresses with the port in network order; anything else is refused
 * (the callers must not resolve names). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "common/netaddr.h"

Test(netaddr, ipv4_with_the_port_in_network_order) {
    struct sockaddr_storage ss;
    socklen_t len = netaddr_numeric("127.0.0.1", 6379, &ss);
    cr_assert_eq(len, sizeof(struct sockaddr_in));
    const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
    cr_assert_eq(a->sin_family, AF_INET);
    cr_assert_eq(ntohs(a->sin_port), 6379);
    cr_assert_eq(ntohl(a->sin_addr.s_addr), INADDR_LOOPBACK);
}

Test(netaddr, ipv6_with_the_port_in_network_order) {
    struct sockaddr_storage ss;
    socklen_t len = netaddr_numeric("::1", 65535, &ss);
    cr_assert_eq(len, sizeof(struct sockaddr_in6));
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
    cr_assert_eq(a->sin6_family, AF_INET6);
    cr_assert_eq(ntohs(a->sin6_port), 65535);
    cr_assert(IN6_IS_ADDR_LOOPBACK(&a->sin6_addr));
    cr_assert_eq(a->sin6_scope_id, 0);
}

Test(netaddr, names_and_junk_are_refused) {
    const char *bad[] = {"localhost", "", "1.2.3", "256.0.0.1", "::g", "[::1]", "127.0.0.1:80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct sockaddr_storage ss;
        memset(&ss, 0xab, sizeof ss);
        cr_assert_eq(netaddr_numeric(bad[i], 80, &ss), 0, "%s", bad[i]);
        cr_assert_eq(ss.ss_family, 0, "%s: left half-filled", bad[i]);
    }
}
