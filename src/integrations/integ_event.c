#include "integrations/integ_event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app/router.h"
#include "common/alloc.h"
#include "common/base64.h"
#include "http/request.h"
#include "ws/utf8.h"

/* A JSON string of s[0..n): jansson takes UTF-8 only, and a header or a
 * query value is whatever the client sent, so its other bytes become '?'
 * (as the access log does with a User-Agent). */
static json_t *jstr(const char *s, size_t n) {
    if (!s) return json_null();
    if (ws_utf8_valid((const uint8_t *)s, n)) {
        json_t *j = json_stringn(s, n);
        if (j) return j; /* NULL only for an embedded NUL */
    }
    char *copy = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++)
        copy[i] = ((unsigned char)s[i] >= 0x80 || s[i] == '\0') ? '?' : s[i];
    copy[n] = '\0';
    json_t *j = json_stringn(copy, n);
    free(copy);
    return j ? j : json_string("");
}

static json_t *jcstr(const char *s) { return s ? jstr(s, strlen(s)) : json_null(); }

void integ_request_time(int64_t t_ms, char out[32]) {
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(t_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 32, "%02d/%s/%04d:%02d:%02d:%02d +0000", tm.tm_mday, months[tm.tm_mon % 12],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Add value under key as API Gateway's single-value map (the last value
 * wins) and its multi-value twin (every value, in order). */
static void add_multi(json_t *single, json_t *multi, const char *key, json_t *value) {
    json_t *arr = json_object_get(multi, key);
    if (!arr) {
        arr = json_array();
        json_object_set_new(multi, key, arr);
    }
    json_array_append(arr, value);
    json_object_set_new(single, key, value);
}

static void add_headers(json_t *ev, const integ_event *e) {
    if (!e->nheaders) return;
    json_t *single = json_object(), *multi = json_object();
    for (size_t i = 0; i < e->nheaders; i++) {
        const integ_header *h = &e->headers[i];
        json_t *name = jstr(h->name, h->name_len);
        add_multi(single, multi, json_string_value(name), jstr(h->value, h->value_len));
        json_decref(name);
    }
    json_object_set_new(ev, "headers", single);
    json_object_set_new(ev, "multiValueHeaders", multi);
}

/* queryStringParameters and its multi-value twin; absent without a query,
 * as AWS sends them. A parameter whose escapes are bad is skipped. */
static void add_query(json_t *ev, const integ_event *e) {
    if (!e->query || !e->query_len) return;
    json_t *single = json_object(), *multi = json_object();
    const char *p = e->query, *end = e->query + e->query_len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq ? eq : stop;
        if (kend > p) {
            char *k = http_url_decode(p, (size_t)(kend - p));
            char *v = eq ? http_url_decode(eq + 1, (size_t)(stop - eq - 1)) : xstrdup("");
            if (k && v) {
                json_t *kj = jcstr(k);
                add_multi(single, multi, json_string_value(kj), jcstr(v));
                json_decref(kj);
            }
            free(k);
            free(v);
        }
        p = stop + 1;
    }
    if (json_object_size(single) == 0) {
        json_decref(single);
        json_decref(multi);
        return;
    }
    json_object_set_new(ev, "queryStringParameters", single);
    json_object_set_new(ev, "multiValueQueryStringParameters", multi);
}

static json_t *request_context(const integ_event *e, bool with_authorizer) {
    char rt[32];
    integ_request_time(e->request_time_ms, rt);
    json_t *identity = json_object();
    json_object_set_new(identity, "sourceIp", jcstr(e->source_ip));
    if (e->user_agent) json_object_set_new(identity, "userAgent", jcstr(e->user_agent));
    json_t *rc = json_object();
    json_object_set_new(rc, "routeKey", jcstr(e->route_key));
    json_object_set_new(rc, "eventType", jcstr(e->event_type));
    if (e->message_id) json_object_set_new(rc, "messageId", jcstr(e->message_id));
    json_object_set_new(rc, "extendedRequestId", jcstr(e->extended_request_id));
    json_object_set_new(rc, "requestTime", json_string(rt));
    json_object_set_new(rc, "messageDirection", json_string("IN"));
    json_object_set_new(rc, "stage", jcstr(e->stage));
    json_object_set_new(rc, "connectedAt", json_integer(e->connected_at_ms));
    json_object_set_new(rc, "requestTimeEpoch", json_integer(e->request_time_ms));
    json_object_set_new(rc, "identity", identity);
    json_object_set_new(rc, "requestId", jcstr(e->request_id));
    json_object_set_new(rc, "domainName", jcstr(e->domain_name));
    json_object_set_new(rc, "connectionId", jcstr(e->connection_id));
    json_object_set_new(rc, "apiId", jcstr(e->api_id));
    if (e->event_type && strcmp(e->event_type, "DISCONNECT") == 0) {
        json_object_set_new(rc, "disconnectStatusCode", json_integer(e->disconnect_status_code));
        json_object_set_new(rc, "disconnectReason",
                            jcstr(e->disconnect_reason ? e->disconnect_reason : ""));
    }
    if (with_authorizer && json_is_object(e->authorizer))
        json_object_set_new(rc, "authorizer", json_deep_copy(e->authorizer));
    return rc;
}

static char *dump(json_t *j, size_t *len) {
    char *txt = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!txt) abort(); /* only on allocation failure */
    *len = strlen(txt);
    return txt;
}

char *integ_event_json(const integ_event *e, size_t *len) {
    json_t *ev = json_object();
    add_headers(ev, e);
    add_query(ev, e);
    json_object_set_new(ev, "requestContext", request_context(e, true));
    if (e->body) {
        if (e->binary) {
            char *b64 = xmalloc(base64_encoded_len(e->body_len, BASE64_STD) + 1);
            base64_encode(e->body, e->body_len, b64, BASE64_STD);
            json_object_set_new(ev, "body", json_string(b64));
            free(b64);
        } else {
            json_object_set_new(ev, "body", jstr((const char *)e->body, e->body_len));
        }
    }
    json_object_set_new(ev, "isBase64Encoded", json_boolean(e->body && e->binary));
    return dump(ev, len);
}

char *integ_authorizer_event_json(const integ_event *e, const char *method_arn, size_t *len) {
    json_t *ev = json_object();
    json_object_set_new(ev, "type", json_string("REQUEST"));
    json_object_set_new(ev, "methodArn", jcstr(method_arn));
    add_headers(ev, e);
    add_query(ev, e);
    json_object_set_new(ev, "stageVariables", json_object());
    json_object_set_new(ev, "requestContext", request_context(e, false));
    return dump(ev, len);
}

void integ_result_free(integ_result *r) {
    free(r->body);
    json_decref(r->headers);
    memset(r, 0, sizeof(*r));
}

/* Lambda proxy results are small objects; anything nested deeper is not one. */
#define RESULT_MAX_DEPTH 32

static json_t *load(const char *data, size_t len) {
    json_error_t jerr;
    return json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
}

static bool blank(const char *data, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r' && data[i] != '\n') return false;
    return true;
}

int integ_result_parse(long http_status, const char *data, size_t len, integ_result *out) {
    memset(out, 0, sizeof(*out));
    if (http_status < 200 || http_status > 299) {
        if (http_status < 100 || http_status > 599) return WSG_E_INTEG_RESULT;
        out->status = (int)http_status;
        return 0;
    }
    /* A handler that returns nothing: the invocation URL answers "null". */
    if (blank(data, len)) {
        out->status = 200;
        return 0;
    }
    if (!router_depth_ok(data, len, RESULT_MAX_DEPTH)) return WSG_E_INTEG_RESULT;
    json_t *j = load(data, len);
    if (json_is_null(j)) {
        json_decref(j);
        out->status = 200;
        return 0;
    }
    json_t *sc = json_is_object(j) ? json_object_get(j, "statusCode") : NULL;
    json_t *body = sc ? json_object_get(j, "body") : NULL;
    json_t *headers = sc ? json_object_get(j, "headers") : NULL;
    json_t *b64 = sc ? json_object_get(j, "isBase64Encoded") : NULL;
    bool ok =
        json_is_integer(sc) && json_integer_value(sc) >= 100 && json_integer_value(sc) <= 599 &&
        (!body || json_is_string(body) || json_is_null(body)) && (!b64 || json_is_boolean(b64)) &&
        (!headers || json_is_object(headers) || json_is_null(headers));
    if (ok && json_is_object(headers)) {
        const char *k;
        json_t *v;
        json_object_foreach(headers, k, v) if (!json_is_string(v)) ok = false;
    }
    if (!ok) {
        json_decref(j);
        return WSG_E_INTEG_RESULT;
    }
    out->status = (int)json_integer_value(sc);
    if (json_is_string(body)) {
        const char *s = json_string_value(body);
        size_t n = json_string_length(body);
        if (json_is_true(b64)) {
            uint8_t *dec = xmalloc(n / 4 * 3 + 3);
            long m = base64_decode(s, n, dec, n / 4 * 3 + 3, BASE64_STD);
            if (m < 0) {
                free(dec);
                json_decref(j);
                memset(out, 0, sizeof(*out));
                return WSG_E_INTEG_RESULT;
            }
            out->body = (char *)dec;
            out->body_len = (size_t)m;
            out->binary = true;
        } else {
            out->body = xmalloc(n + 1);
            memcpy(out->body, s, n + 1);
            out->body_len = n;
        }
    }
    if (json_is_object(headers)) out->headers = json_incref(headers);
    json_decref(j);
    return 0;
}

/* A context value AWS passes on: string, number or boolean. */
static bool context_ok(const json_t *ctx) {
    if (!ctx || json_is_null(ctx)) return true;
    if (!json_is_object(ctx)) return false;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)ctx, k, v) {
        if (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v)) return false;
    }
    return true;
}

/* Does the policy document allow? An explicit Deny wins, as IAM decides. */
static int policy_allows(const json_t *doc) {
    json_t *st = json_is_object(doc) ? json_object_get(doc, "Statement") : NULL;
    if (json_is_object(st)) {
        /* IAM takes a single statement as well as a list of them. */
        json_t *wrapped = json_pack("{s:[O]}", "Statement", st);
        int res = policy_allows(wrapped);
        json_decref(wrapped);
        return res;
    }
    if (!json_is_array(st) || json_array_size(st) == 0) return -1;
    bool allow = false, deny = false;
    size_t i;
    json_t *s;
    json_array_foreach(st, i, s) {
        json_t *eff = json_is_object(s) ? json_object_get(s, "Effect") : NULL;
        if (!json_is_string(eff)) return -1;
        if (strcasecmp(json_string_value(eff), "Allow") == 0) allow = true;
        else if (strcasecmp(json_string_value(eff), "Deny") == 0) deny = true;
        else return -1;
    }
    return allow && !deny;
}

int integ_auth_parse(const char *data, size_t len, integ_auth_decision *out) {
    memset(out, 0, sizeof(*out));
    if (!router_depth_ok(data, len, RESULT_MAX_DEPTH)) return WSG_E_INTEG_AUTH_RESULT;
    json_t *j = load(data, len);
    if (!json_is_object(j)) {
        json_decref(j);
        return WSG_E_INTEG_AUTH_RESULT;
    }
    json_t *simple = json_object_get(j, "isAuthorized");
    json_t *doc = json_object_get(j, "policyDocument");
    json_t *ctx = json_object_get(j, "context");
    json_t *principal = json_object_get(j, "principalId");
    int allow = -1;
    if (json_is_boolean(simple)) allow = json_is_true(simple);
    else if (doc) allow = policy_allows(doc);
    if (allow < 0 || !context_ok(ctx) ||
        (principal && !json_is_string(principal) && !json_is_null(principal))) {
        json_decref(j);
        return WSG_E_INTEG_AUTH_RESULT;
    }
    out->allow = allow == 1;
    if (out->allow) {
        json_t *c = json_object();
        if (json_is_string(principal)) json_object_set(c, "principalId", principal);
        if (json_is_object(ctx)) json_object_update(c, ctx);
        out->context = c;
    }
    json_decref(j);
    return 0;
}
