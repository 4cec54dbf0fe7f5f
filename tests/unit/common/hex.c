/* Unit tests for src/common/hex.h: the one hex encoder and decoder. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/hex.h"

Test(hex, digit_values) {
    for (int c = 0; c < 256; c++) {
        int want = c >= '0' && c <= '9'   ? c - '0'
                   : c >= 'a' && c <= 'f' ? c - 'a' + 10
                   : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                          : -1;
        cr_assert_eq(hex_digit_value(c), want, "%d", c);
    }
}

Test(hex, round_trip_every_byte) {
    uint8_t in[256], back[256];
    char text[513];
    for (int i = 0; i < 256; i++) in[i] = (uint8_t)i;
    hex_encode_lower(in, sizeof(in), text);
    cr_assert_eq(strlen(text), 512);
    cr_assert_eq(strncmp(text, "000102", 6), 0);
    cr_assert_str_eq(text + 506, "fdfeff");
    cr_assert(hex_decode(text, 512, back, sizeof(back)));
    cr_assert_eq(memcmp(in, back, sizeof(in)), 0);
}

Test(hex, decode_refuses_bad_input) {
    uint8_t out[2];
    cr_assert(hex_decode("AbCd", 4, out, 2));
    cr_assert_eq(out[0], 0xab);
    cr_assert_eq(out[1], 0xcd);
    cr_assert_not(hex_decode("abc", 3, out, 2));    /* odd length */
    cr_assert_not(hex_decode("abcdef", 6, out, 2)); /* too long */
    cr_assert_not(hex_decode("abgd", 4, out, 2));   /* not a digit */
    cr_assert_not(hex_decode("ab d", 4, out, 2));
}
