/* libFuzzer target for the integrations' JSON (src/integrations/
 * integ_event.c).
 *
 * The input is an answer body: it is read as a Lambda proxy result (2xx and
 * a plain non-2xx status) and as an authorizer's answer, and each accepted
 * result must be self-consistent. The same bytes are then the message body
 * (text and binary), a header value and the query string of an event,
 * which must always be JSON that parses back with the body intact. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "integrations/integ_event.h"
#include "ws/utf8.h"

#include "fuzz_require.h"

static void check_event(const uint8_t *data, size_t size, bool binary) {
    integ_header h = {"X-Fuzz", 6, (const char *)data, size};
    integ_event ev = {.route_key = "r",
                      .event_type = "MESSAGE",
                      .connection_id = "c",
                      .request_id = "q",
                      .extended_request_id = "x",
                      .message_id = "m",
                      .domain_name = "d",
                      .stage = "s",
                      .api_id = "a",
                      .source_ip = "1.2.3.4",
                      .body = data,
                      .body_len = size,
                      .binary = binary,
                      .headers = &h,
                      .nheaders = 1,
                      .query = (const char *)data,
                      .query_len = size};
    size_t len;
    char *txt = integ_event_json(&ev, &len);
    require(txt && strlen(txt) == len);
    json_error_t e;
    json_t *j = json_loadb(txt, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
    require(json_is_object(j));
    json_t *body = json_object_get(j, "body");
    require(json_is_string(body));
    if (binary) {
        uint8_t *back = malloc(size + 3);
        long n = base64_decode(json_string_value(body), json_string_length(body), back, size + 3,
                               BASE64_STD);
        require(n == (long)size && memcmp(back, data, size) == 0);
        free(back);
    } else if (ws_utf8_valid(data, size)) {
        require(json_string_length(body) == size &&
                memcmp(json_string_value(body), data, size) == 0);
    }
    json_decref(j);
    free(txt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    integ_result r;
    if (integ_result_parse(200, s, size, &r) == 0) {
        require(r.status >= 100 && r.status <= 599);
        require(r.body || r.body_len == 0);
        require(!r.binary || r.body);
        require(!r.headers || json_is_object(r.headers));
        integ_result_free(&r);
    } else {
        require(!r.body && !r.headers);
    }
    require(integ_result_parse(502, s, size, &r) == 0 && r.status == 502 && !r.body);
    integ_auth_decision d;
    if (integ_auth_parse(s, size, &d) == 0) {
        require(d.allow ? json_is_object(d.context) : d.context == NULL);
        json_decref(d.context);
    } else {
        require(!d.context);
    }
    check_event(data, size, false);
    check_event(data, size, true);
    return 0;
}
