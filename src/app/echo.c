#include "app/echo.h"

static void echo_message(conn *c, uint8_t opcode, const uint8_t *data, size_t len) {
    conn_send_data(c, opcode, data, len);
}

static const server_handlers echo = {
    .on_message = echo_message,
};

const server_handlers *echo_handlers(void) { return &echo; }
