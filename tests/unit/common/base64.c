/* Unit tests for src/common/base64.c: RFC 4648 vectors, both variants, the
 * strictness the key file, the handshake and JWTs rely on, and agreement
 * with OpenSSL's encoder on every length up to 300 bytes. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <string.h>

#include "common/base64.h"
#include "common/error.h"

static void round_trip(const char *plain, const char *std, const char *url) {
    size_t n = strlen(plain);
    char out[64];
    base64_encode((const uint8_t *)plain, n, out, BASE64_STD);
    cr_assert_str_eq(out, std);
    cr_assert_eq(base64_encoded_len(n, BASE64_STD), strlen(std));
    base64_encode((const uint8_t *)plain, n, out, BASE64_URL);
    cr_assert_str_eq(out, url);
    cr_assert_eq(base64_encoded_len(n, BASE64_URL), strlen(url));
    uint8_t back[64];
    cr_assert_eq(base64_decode(std, strlen(std), back, sizeof(back), BASE64_STD), (long)n);
    cr_assert_eq(memcmp(back, plain, n), 0);
    cr_assert_eq(base64_decode(url, strlen(url), back, sizeof(back), BASE64_URL), (long)n);
    cr_assert_eq(memcmp(back, plain, n), 0);
}

Test(base64, rfc4648_vectors) {
    round_trip("", "", "");
    round_trip("f", "Zg==", "Zg");
    round_trip("fo", "Zm8=", "Zm8");
    round_trip("foo", "Zm9v", "Zm9v");
    round_trip("foob", "Zm9vYg==", "Zm9vYg");
    round_trip("fooba", "Zm9vYmE=", "Zm9vYmE");
    round_trip("foobar", "Zm9vYmFy", "Zm9vYmFy");
    round_trip("\xfb\xff", "+/8=", "-_8");
}

static long dec(const char *s, base64_variant v) {
    uint8_t out[32];
    return base64_decode(s, strlen(s), out, sizeof(out), v);
}

Test(base64, strict_standard) {
    cr_assert_eq(dec("Zg=", BASE64_STD), WSG_E_PARSE);  /* not a multiple of 4 */
    cr_assert_eq(dec("Zg", BASE64_STD), WSG_E_PARSE);   /* padding missing */
    cr_assert_eq(dec("Zh==", BASE64_STD), WSG_E_PARSE); /* non-zero unused bits */
    cr_assert_eq(dec("Zm9=", BASE64_STD), WSG_E_PARSE);
    cr_assert_eq(dec("Z===", BASE64_STD), WSG_E_PARSE); /* 6 bits: no byte */
    cr_assert_eq(dec("====", BASE64_STD), WSG_E_PARSE);
    cr_assert_eq(dec("Zg=A", BASE64_STD), WSG_E_PARSE);     /* data after padding */
    cr_assert_eq(dec("Zg==Zg==", BASE64_STD), WSG_E_PARSE); /* padding inside */
    cr_assert_eq(dec("Zm9v\n", BASE64_STD), WSG_E_PARSE);   /* whitespace */
    cr_assert_eq(dec("-_8=", BASE64_STD), WSG_E_PARSE);     /* url alphabet */
    uint8_t small[2];
    cr_assert_eq(base64_decode("Zm9v", 4, small, sizeof(small), BASE64_STD),
                 WSG_E_INVAL); /* too long */
}

Test(base64, strict_url) {
    cr_assert_eq(dec("Zg==", BASE64_URL), WSG_E_PARSE); /* padding refused */
    cr_assert_eq(dec("Z", BASE64_URL), WSG_E_PARSE);
    cr_assert_eq(dec("Zh", BASE64_URL), WSG_E_PARSE);  /* non-zero unused bits */
    cr_assert_eq(dec("+/8", BASE64_URL), WSG_E_PARSE); /* standard alphabet */
    cr_assert_eq(dec("-_8", BASE64_URL), 2);
}

Test(base64, agrees_with_openssl) {
    uint8_t in[300], back[300];
    for (size_t i = 0; i < sizeof(in); i++) in[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof(in); n++) {
        char ours[512], theirs[512];
        base64_encode(in, n, ours, BASE64_STD);
        EVP_EncodeBlock((unsigned char *)theirs, in, (int)n);
        cr_assert_str_eq(ours, theirs, "length %zu", n);
        cr_assert_eq(base64_decode(ours, strlen(ours), back, sizeof(back), BASE64_STD), (long)n);
        cr_assert_eq(memcmp(back, in, n), 0);
    }
}
