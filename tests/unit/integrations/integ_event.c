/* Unit tests for the integrations' I/O-free JSON (src/integrations/
 * integ_event.c): the API Gateway WebSocket event, the Lambda proxy result
 * and the REQUEST authorizer's event and answer. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "integrations/integ_event.h"

static json_t *parse(const char *txt, size_t len) {
    json_error_t e;
    json_t *j = json_loadb(txt, len, 0, &e);
    cr_assert_not_null(j, "%s: %s", txt, e.text);
    return j;
}

static integ_event base_event(void) {
    integ_event ev = {
        .route_key = "order",
        .event_type = "MESSAGE",
        .connection_id = "abcdefghijklmnop",
        .request_id = "11111111-2222-4333-8444-555555555555",
        .extended_request_id = "XYZ=",
        .message_id = "MID=",
        .domain_name = "127.0.0.1:8080",
        .stage = "staging",
        .api_id = "a1b2c3d4e5",
        .connected_at_ms = 1700000000000,
        .request_time_ms = 1700000001234,
        .source_ip = "10.0.0.1",
        .user_agent = "ua/1",
    };
    return ev;
}

Test(integ_event, message_event_fields) {
    integ_event ev = base_event();
    ev.body = (const uint8_t *)"{\"type\":\"order\"}";
    ev.body_len = strlen((const char *)ev.body);
    size_t len;
    char *txt = integ_event_json(&ev, &len);
    json_t *j = parse(txt, len);
    json_t *rc = json_object_get(j, "requestContext");
    cr_assert_str_eq(json_string_value(json_object_get(rc, "routeKey")), "order");
    cr_assert_str_eq(json_string_value(json_object_get(rc, "eventType")), "MESSAGE");
    cr_assert_str_eq(json_string_value(json_object_get(rc, "messageId")), "MID=");
    cr_assert_str_eq(json_string_value(json_object_get(rc, "messageDirection")), "IN");
    cr_assert_str_eq(json_string_value(json_object_get(rc, "requestTime")),
                     "14/Nov/2023:22:13:21 +0000");
    cr_assert_eq(json_integer_value(json_object_get(rc, "requestTimeEpoch")), 1700000001234);
    cr_assert_eq(json_integer_value(json_object_get(rc, "connectedAt")), 1700000000000);
    json_t *id = json_object_get(rc, "identity");
    cr_assert_str_eq(json_string_value(json_object_get(id, "sourceIp")), "10.0.0.1");
    cr_assert_str_eq(json_string_value(json_object_get(id, "userAgent")), "ua/1");
    cr_assert_null(json_object_get(rc, "disconnectStatusCode"));
    cr_assert_null(json_object_get(rc, "authorizer"));
    cr_assert_str_eq(json_string_value(json_object_get(j, "body")), "{\"type\":\"order\"}");
    cr_assert(json_is_false(json_object_get(j, "isBase64Encoded")));
    cr_assert_null(json_object_get(j, "headers"));
    json_decref(j);
    free(txt);
}

Test(integ_event, binary_body_is_base64) {
    integ_event ev = base_event();
    ev.body = (const uint8_t *)"\x00\xff";
    ev.body_len = 2;
    ev.binary = true;
    size_t len;
    char *txt = integ_event_json(&ev, &len);
    json_t *j = parse(txt, len);
    cr_assert_str_eq(json_string_value(json_object_get(j, "body")), "AP8=");
    cr_assert(json_is_true(json_object_get(j, "isBase64Encoded")));
    json_decref(j);
    free(txt);
}

Test(integ_event, connect_headers_query_and_bad_utf8) {
    integ_event ev = base_event();
    ev.route_key = "$connect";
    ev.event_type = "CONNECT";
    ev.message_id = NULL;
    integ_header h[] = {
        {"Host", 4, "h", 1}, {"X-A", 3, "1", 1}, {"X-A", 3, "2", 1}, {"X-Bad", 5, "\xff\xfe", 2}};
    ev.headers = h;
    ev.nheaders = 4;
    ev.query = "a=1&a=2&b=%C3%A9&bad=%zz&empty=&flag";
    ev.query_len = strlen(ev.query);
    json_t *authz = json_pack("{s:s,s:i}", "principalId", "p", "n", 3);
    ev.authorizer = authz;
    size_t len;
    char *txt = integ_event_json(&ev, &len);
    json_t *j = parse(txt, len);
    json_t *hs = json_object_get(j, "headers"), *mh = json_object_get(j, "multiValueHeaders");
    cr_assert_str_eq(json_string_value(json_object_get(hs, "X-A")), "2");
    cr_assert_eq(json_array_size(json_object_get(mh, "X-A")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(hs, "X-Bad")), "??");
    json_t *q = json_object_get(j, "queryStringParameters");
    json_t *mq = json_object_get(j, "multiValueQueryStringParameters");
    cr_assert_str_eq(json_string_value(json_object_get(q, "a")), "2");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(mq, "a"), 0)), "1");
    cr_assert_str_eq(json_string_value(json_object_get(q, "b")), "\xc3\xa9");
    cr_assert_null(json_object_get(q, "bad"));
    cr_assert_str_eq(json_string_value(json_object_get(q, "empty")), "");
    cr_assert_str_eq(json_string_value(json_object_get(q, "flag")), "");
    cr_assert_null(json_object_get(j, "body"));
    json_t *rc = json_object_get(j, "requestContext");
    cr_assert(json_equal(json_object_get(rc, "authorizer"), authz));
    cr_assert_null(json_object_get(rc, "messageId"));
    json_decref(authz);
    json_decref(j);
    free(txt);
}

Test(integ_event, disconnect_fields) {
    integ_event ev = base_event();
    ev.route_key = "$disconnect";
    ev.event_type = "DISCONNECT";
    ev.message_id = NULL;
    ev.disconnect_status_code = 1001;
    size_t len;
    char *txt = integ_event_json(&ev, &len);
    json_t *j = parse(txt, len);
    json_t *rc = json_object_get(j, "requestContext");
    cr_assert_eq(json_integer_value(json_object_get(rc, "disconnectStatusCode")), 1001);
    cr_assert_str_eq(json_string_value(json_object_get(rc, "disconnectReason")), "");
    json_decref(j);
    free(txt);
}

static int result(long http, const char *body, integ_result *r) {
    return integ_result_parse(http, body, strlen(body), r);
}

Test(integ_result, proxy_forms) {
    integ_result r;
    cr_assert_eq(result(200, "{\"statusCode\":201,\"body\":\"hi\",\"headers\":{\"a\":\"b\"}}", &r),
                 0);
    cr_assert_eq(r.status, 201);
    cr_assert_eq(r.body_len, 2);
    cr_assert_str_eq(r.body, "hi");
    cr_assert_not_null(r.headers);
    integ_result_free(&r);
    cr_assert_eq(result(200, "{\"statusCode\":200,\"body\":\"AP8=\",\"isBase64Encoded\":true}", &r),
                 0);
    cr_assert(r.binary && r.body_len == 2 && (unsigned char)r.body[1] == 0xff);
    integ_result_free(&r);
    cr_assert_eq(result(200, "null", &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_null(r.body);
    cr_assert_eq(result(204, "", &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(result(200, "{\"statusCode\":403}", &r), 0);
    cr_assert_eq(r.status, 403);
    cr_assert_null(r.body);
    /* The plain HTTP form: a non-2xx status is the answer, whatever the body. */
    cr_assert_eq(result(401, "whatever", &r), 0);
    cr_assert_eq(r.status, 401);
    cr_assert_null(r.body);
}

Test(integ_result, garbage_is_refused) {
    static const char *const bad[] = {
        "not json",
        "{\"body\":\"x\"}",
        "{\"statusCode\":\"200\"}",
        "{\"statusCode\":99}",
        "{\"statusCode\":600}",
        "{\"statusCode\":200,\"body\":{\"a\":1}}",
        "{\"statusCode\":200,\"headers\":{\"a\":1}}",
        "{\"statusCode\":200,\"headers\":[]}",
        "{\"statusCode\":200,\"isBase64Encoded\":\"yes\"}",
        "{\"statusCode\":200,\"body\":\"!!\",\"isBase64Encoded\":true}",
        "{\"errorMessage\":\"boom\",\"errorType\":\"Exception\"}",
        "[1,2]",
        "\"text\"",
        "{\"statusCode\":200,\"statusCode\":201}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        integ_result r;
        cr_assert_eq(result(200, bad[i], &r), WSG_E_INTEG_RESULT, "%s", bad[i]);
        cr_assert_null(r.body);
        cr_assert_null(r.headers);
    }
    integ_result r;
    cr_assert_eq(result(700, "", &r), WSG_E_INTEG_RESULT);
}

static int auth(const char *body, integ_auth_decision *d) {
    return integ_auth_parse(body, strlen(body), d);
}

Test(integ_auth, simple_and_policy_forms) {
    integ_auth_decision d;
    cr_assert_eq(auth("{\"isAuthorized\":true,\"context\":{\"a\":\"b\",\"n\":1}}", &d), 0);
    cr_assert(d.allow);
    cr_assert_str_eq(json_string_value(json_object_get(d.context, "a")), "b");
    json_decref(d.context);
    cr_assert_eq(auth("{\"isAuthorized\":false}", &d), 0);
    cr_assert(!d.allow);
    cr_assert_null(d.context);
    const char *allow = "{\"principalId\":\"u1\",\"policyDocument\":{\"Version\":\"2012-10-17\","
                        "\"Statement\":[{\"Action\":\"execute-api:Invoke\",\"Effect\":\"Allow\","
                        "\"Resource\":\"*\"}]},\"context\":{\"org\":\"x\"}}";
    cr_assert_eq(auth(allow, &d), 0);
    cr_assert(d.allow);
    cr_assert_str_eq(json_string_value(json_object_get(d.context, "principalId")), "u1");
    cr_assert_str_eq(json_string_value(json_object_get(d.context, "org")), "x");
    json_decref(d.context);
    /* One statement as an object; an explicit Deny wins over an Allow. */
    cr_assert_eq(auth("{\"policyDocument\":{\"Statement\":{\"Effect\":\"Allow\"}}}", &d), 0);
    cr_assert(d.allow);
    json_decref(d.context);
    cr_assert_eq(auth("{\"policyDocument\":{\"Statement\":[{\"Effect\":\"Allow\"},"
                      "{\"Effect\":\"Deny\"}]}}",
                      &d),
                 0);
    cr_assert(!d.allow);
}

Test(integ_auth, garbage_is_refused) {
    static const char *const bad[] = {
        "",
        "nope",
        "{}",
        "{\"isAuthorized\":\"yes\"}",
        "{\"isAuthorized\":true,\"context\":{\"nested\":{}}}",
        "{\"isAuthorized\":true,\"context\":[1]}",
        "{\"policyDocument\":{\"Statement\":[]}}",
        "{\"policyDocument\":{\"Statement\":[{\"Effect\":\"Maybe\"}]}}",
        "{\"policyDocument\":{}}",
        "{\"principalId\":5,\"isAuthorized\":true}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        integ_auth_decision d;
        cr_assert_eq(auth(bad[i], &d), WSG_E_INTEG_AUTH_RESULT, "%s", bad[i]);
        cr_assert_null(d.context);
    }
}

Test(integ_auth, authorizer_event_shape) {
    integ_event ev = base_event();
    ev.route_key = "$connect";
    ev.event_type = "CONNECT";
    ev.message_id = NULL;
    json_t *authz = json_object();
    ev.authorizer = authz; /* never in the authorizer's own event */
    integ_header h[] = {{"Authorization", 13, "tok", 3}};
    ev.headers = h;
    ev.nheaders = 1;
    ev.query = "t=1";
    ev.query_len = 3;
    size_t len;
    char *txt = integ_authorizer_event_json(&ev, "arn:aws:execute-api:r:0:id/s/$connect", &len);
    json_t *j = parse(txt, len);
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "REQUEST");
    cr_assert_str_eq(json_string_value(json_object_get(j, "methodArn")),
                     "arn:aws:execute-api:r:0:id/s/$connect");
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(j, "headers"), "Authorization")), "tok");
    cr_assert_eq(json_object_size(json_object_get(j, "stageVariables")), 0);
    cr_assert_null(json_object_get(json_object_get(j, "requestContext"), "authorizer"));
    json_decref(authz);
    json_decref(j);
    free(txt);
}
