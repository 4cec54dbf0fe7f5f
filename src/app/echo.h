/* Echo mode (`--set mode=echo`): every message is sent back unchanged, text
 * as text and binary as binary, with no routing. For conformance suites
 * (Autobahn) and benchmarks of the codec and write path. */
#ifndef WSGATE_APP_ECHO_H
#define WSGATE_APP_ECHO_H

#include "net/server.h"

/* Return the handlers of echo mode (static storage). */
const server_handlers *echo_handlers(void);

#endif
