#include "log/access_line.h"

void access_line_context(log_line *l, const config *cfg, const access_line *a) {
    log_str(l, "requestId", a->request_id);
    log_str(l, "connectionId", a->connection_id);
    log_str(l, "eventType", a->event_type);
    log_str(l, "routeKey", a->route_key);
    log_int(l, "status", a->status);
    log_int(l, "requestTimeEpoch", a->request_time_epoch);
    log_num(l, "integrationLatency", a->latency_ms);
    log_str(l, "identity.sourceIp", a->source_ip);
    if (a->user_agent || !a->user_agent_optional) log_str(l, "identity.userAgent", a->user_agent);
    log_str(l, "stage", cfg->stage_name);
    log_int(l, "worker", a->worker);
}

void access_line_tags(log_line *l, const config *cfg) {
    for (size_t i = 0; i < cfg->additional_tags_count; i++)
        log_str(l, cfg->additional_tags[i].key, cfg->additional_tags[i].value);
}
