/* The one error list: every code negative and unique (a duplicate would not
 * compile as a switch), its text, close code and HTTP status reached through
 * the accessors, and wsg_error filled as documented. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/error.h"

static const struct {
    int code;
    const char *name;
    uint16_t close;
    int http;
    const char *text;
} ROWS[] = {
#define ROW(name, value, close, http, text) {value, "WSG_E_" #name, close, http, text},
    WSG_ERRNO_MAP(ROW)
#undef ROW
};
#define NROWS (sizeof ROWS / sizeof ROWS[0])

Test(error, every_code_maps_to_its_row) {
    for (size_t i = 0; i < NROWS; i++) {
        cr_assert(ROWS[i].code < 0, "%s", ROWS[i].name);
        cr_assert_str_eq(wsg_strerror(ROWS[i].code), ROWS[i].text);
        cr_assert_str_eq(wsg_err_name(ROWS[i].code), ROWS[i].name);
        cr_assert_eq(wsg_err_close_code(ROWS[i].code), ROWS[i].close, "%s", ROWS[i].name);
        cr_assert_eq(wsg_err_http_status(ROWS[i].code), ROWS[i].http, "%s", ROWS[i].name);
        cr_assert(ROWS[i].text[0] != '\0');
        for (size_t j = 0; j < i; j++)
            cr_assert_neq(ROWS[i].code, ROWS[j].code, "%s = %s", ROWS[i].name, ROWS[j].name);
    }
}

Test(error, close_codes_are_ones_a_server_may_send) {
    for (size_t i = 0; i < NROWS; i++) {
        uint16_t c = ROWS[i].close;
        cr_assert(c == 0 || c == 1002 || c == 1007 || c == 1008 || c == 1009 || c == 1011, "%s: %u",
                  ROWS[i].name, c);
        int h = ROWS[i].http;
        cr_assert(h == 0 || (h >= 400 && h <= 599), "%s: %d", ROWS[i].name, h);
    }
}

Test(error, zero_and_unknown_codes) {
    cr_assert_str_eq(wsg_strerror(0), "success");
    cr_assert_str_eq(wsg_strerror(-99999), "unknown error");
    cr_assert_str_eq(wsg_strerror(7), "unknown error");
    cr_assert_str_eq(wsg_err_name(0), "0");
    cr_assert_str_eq(wsg_err_name(-99999), "WSG_E_UNKNOWN");
    cr_assert_eq(wsg_err_close_code(-99999), 0);
    cr_assert_eq(wsg_err_http_status(-99999), 0);
}

Test(error, known_mappings) {
    cr_assert_eq(wsg_err_close_code(WSG_E_WS_UTF8), 1007);
    cr_assert_eq(wsg_err_close_code(WSG_E_WS_FRAME_TOO_BIG), 1009);
    cr_assert_eq(wsg_err_http_status(WSG_E_AUTH_TOKEN_EXPIRED), 401);
    cr_assert_str_eq(wsg_strerror(WSG_E_AUTH_TOKEN_EXPIRED), "Token expired");
    cr_assert_eq(wsg_err_http_status(WSG_E_AUTH_ROOM_ID), 400);
    cr_assert_eq(wsg_err_http_status(WSG_E_HS_WS_VERSION), 426);
    cr_assert_eq(wsg_err_http_status(WSG_E_SIGV4_SIGNATURE), 403);
}

Test(error, set_fills_code_message_and_position) {
    wsg_error e;
    memset(&e, 0x55, sizeof e);
    cr_assert_eq(wsg_error_set(&e, WSG_E_CONFIG_VALUE, "port: %d is out of range", 70000),
                 WSG_E_CONFIG_VALUE);
    cr_assert_eq(e.code, WSG_E_CONFIG_VALUE);
    cr_assert_eq(e.line, 0);
    cr_assert_eq(e.column, 0);
    cr_assert_str_eq(e.message, "port: 70000 is out of range");
    cr_assert_eq(wsg_error_set_at(&e, WSG_E_CONFIG_SYNTAX, 3, 7, "expected %s", "'='"),
                 WSG_E_CONFIG_SYNTAX);
    cr_assert_eq(e.line, 3);
    cr_assert_eq(e.column, 7);
    cr_assert_str_eq(e.message, "expected '='");
    cr_assert_eq(wsg_error_set(NULL, WSG_E_INVAL, "ignored"), WSG_E_INVAL);
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    wsg_error_set(&e, WSG_E_INVAL, "%s", big);
    cr_assert_eq(strlen(e.message), sizeof e.message - 1); /* truncated, terminated */
}

/* A caller may wrap a message with more context by passing err->message
 * back in: the text is formatted aside, never over its own argument. */
Test(error, a_message_may_wrap_itself) {
    wsg_error e = {0};
    wsg_error_set(&e, WSG_E_STORE_READ, "cannot open %s", "store.db");
    cr_assert_eq(wsg_error_set_at(&e, WSG_E_STORE_ARCHIVE, 3, 4, "restore: %s", e.message),
                 WSG_E_STORE_ARCHIVE);
    cr_assert_str_eq(e.message, "restore: cannot open store.db");
    cr_assert_eq(e.line, 3);
    cr_assert_eq(e.column, 4);
    cr_assert_eq(wsg_error_set(NULL, WSG_E_IO, "x"), WSG_E_IO);
}
