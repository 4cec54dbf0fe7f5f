#include "throttle/throttle.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"

#define AUTH_WINDOW_MS 60000

/* Workers share one throttle and each passes its own "now"; a time stored by
 * one caller may be ahead of the next caller's. Elapsed time saturates at 0
 * instead of wrapping to "forever", which would reset a window or forget an
 * address that was just seen. */
static inline uint64_t elapsed_ms(uint64_t now_ms, uint64_t then_ms) {
    return now_ms > then_ms ? now_ms - then_ms : 0;
}

uint64_t throttle_now_ms(void) { return clock_mono_ns() / 1000000u; }

void throttle_bucket_init(throttle_bucket *b, double rate, double burst, bool unlimited,
                          uint64_t now_ms) {
    b->rate = rate;
    b->burst = burst;
    b->tokens = burst;
    b->last_ms = now_ms;
    b->unlimited = unlimited;
}

bool throttle_bucket_take(throttle_bucket *b, uint64_t now_ms) {
    if (b->unlimited) return true;
    /* A positive rate with a burst below one still lets a request through
     * every 1/rate seconds: the bucket holds at least one token. */
    double cap = b->burst < 1.0 && b->rate > 0 ? 1.0 : b->burst;
    if (now_ms > b->last_ms) { /* a clock behind adds nothing, moves nothing */
        b->tokens += (double)(now_ms - b->last_ms) * b->rate / 1000.0;
        if (b->tokens > cap) b->tokens = cap;
        b->last_ms = now_ms;
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return true;
    }
    return false;
}

void throttle_shared_init(throttle_shared_bucket *b, double rate, double burst, bool unlimited,
                          uint64_t now_ms) {
    memset(b, 0, sizeof(*b));
    b->unlimited = unlimited;
    if (rate <= 0) {
        b->no_refill = true;
        atomic_store(&b->left, burst > 0 ? (uint64_t)burst : 0);
        return;
    }
    /* As throttle_bucket_take: a positive rate always holds one token. */
    double cap = burst < 1.0 ? 1.0 : burst;
    double interval = 1e9 / rate;
    b->interval_ns = interval < 1 ? 1 : (uint64_t)interval;
    b->tolerance_ns = (uint64_t)((cap - 1.0) * interval);
    atomic_store(&b->tat_ns, now_ms * 1000000u);
}

bool throttle_shared_take(throttle_shared_bucket *b, uint64_t now_ms) {
    if (b->unlimited) return true;
    if (b->no_refill) {
        uint64_t left = atomic_load_explicit(&b->left, memory_order_relaxed);
        while (left > 0)
            if (atomic_compare_exchange_weak_explicit(&b->left, &left, left - 1,
                                                      memory_order_relaxed, memory_order_relaxed))
                return true;
        return false;
    }
    uint64_t now = now_ms * 1000000u;
    uint64_t tat = atomic_load_explicit(&b->tat_ns, memory_order_relaxed);
    for (;;) {
        /* A caller whose clock reads behind the stored time is just early:
         * the same rule, no wrap-around. */
        uint64_t from = tat > now ? tat : now;
        if (from - now > b->tolerance_ns) return false;
        if (atomic_compare_exchange_weak_explicit(&b->tat_ns, &tat, from + b->interval_ns,
                                                  memory_order_relaxed, memory_order_relaxed))
            return true;
    }
}

void throttle_init(throttle *t, const config *cfg, uint64_t now_ms) {
    memset(t, 0, sizeof(*t));
    t->cfg = cfg;
    throttle_shared_init(&t->stage, (double)cfg->throttling_rate_limit,
                         (double)cfg->throttling_burst_limit, !cfg->throttling_enabled, now_ms);
    t->nroutes = cfg->route_throttling_count;
    t->routes = xcalloc(t->nroutes + 1, sizeof(*t->routes));
    t->route_names = xcalloc(t->nroutes + 1, sizeof(*t->route_names));
    for (size_t i = 0; i < t->nroutes; i++) {
        const config_route_throttle *r = &cfg->route_throttling[i];
        t->route_names[i] = r->route;
        throttle_shared_init(&t->routes[i], (double)r->rate_limit, (double)r->burst_limit,
                             !cfg->throttling_enabled, now_ms);
    }
    pthread_mutex_init(&t->addrs_lock, NULL);
    strmap_init(&t->addrs);
}

void throttle_free(throttle *t) {
    strmap_free_values(&t->addrs, free);
    pthread_mutex_destroy(&t->addrs_lock);
    free(t->routes);
    free(t->route_names);
}

static throttle_addr *addr_get(throttle *t, const char *addr, uint64_t now_ms) {
    throttle_addr *a = strmap_get(&t->addrs, addr);
    if (!a) {
        a = xcalloc(1, sizeof(*a));
        const config *cfg = t->cfg;
        throttle_bucket_init(&a->connects, (double)cfg->connect_rate_per_ip,
                             (double)cfg->connect_burst_per_ip, cfg->connect_rate_per_ip == 0,
                             now_ms);
        a->auth_window_ms = now_ms;
        strmap_put(&t->addrs, addr, a, NULL);
    }
    if (now_ms > a->last_seen_ms) a->last_seen_ms = now_ms;
    return a;
}

static throttle_verdict connect_locked(throttle *t, const char *addr, uint64_t now_ms) {
    const config *cfg = t->cfg;
    throttle_addr *a = addr_get(t, addr, now_ms);
    if (cfg->max_connections_per_ip > 0 && a->connections >= (uint64_t)cfg->max_connections_per_ip)
        return THROTTLE_ADDRESS;
    if (elapsed_ms(now_ms, a->auth_window_ms) >= AUTH_WINDOW_MS) {
        a->auth_window_ms = now_ms;
        a->auth_failures = 0;
    }
    if (cfg->auth_failures_per_minute > 0 &&
        a->auth_failures >= (uint64_t)cfg->auth_failures_per_minute)
        return THROTTLE_ADDRESS;
    if (!throttle_bucket_take(&a->connects, now_ms)) return THROTTLE_ADDRESS;
    return THROTTLE_OK;
}

throttle_verdict throttle_connect(throttle *t, const char *addr, uint64_t now_ms) {
    pthread_mutex_lock(&t->addrs_lock);
    throttle_verdict v = connect_locked(t, addr, now_ms);
    pthread_mutex_unlock(&t->addrs_lock);
    if (v == THROTTLE_OK && !throttle_shared_take(&t->stage, now_ms)) v = THROTTLE_STAGE;
    return v;
}

void throttle_auth_failed(throttle *t, const char *addr, uint64_t now_ms) {
    pthread_mutex_lock(&t->addrs_lock);
    throttle_addr *a = addr_get(t, addr, now_ms);
    if (elapsed_ms(now_ms, a->auth_window_ms) >= AUTH_WINDOW_MS) {
        a->auth_window_ms = now_ms;
        a->auth_failures = 0;
    }
    a->auth_failures++;
    pthread_mutex_unlock(&t->addrs_lock);
}

void throttle_opened(throttle *t, const char *addr, uint64_t now_ms) {
    pthread_mutex_lock(&t->addrs_lock);
    addr_get(t, addr, now_ms)->connections++;
    pthread_mutex_unlock(&t->addrs_lock);
}

void throttle_closed(throttle *t, const char *addr, uint64_t now_ms) {
    pthread_mutex_lock(&t->addrs_lock);
    throttle_addr *a = strmap_get(&t->addrs, addr);
    if (a && a->connections > 0) {
        a->connections--;
        if (now_ms > a->last_seen_ms) a->last_seen_ms = now_ms;
    }
    pthread_mutex_unlock(&t->addrs_lock);
}

/* The largest number of tokens a bucket of rate and burst holds (as
 * throttle_bucket_take: a positive rate with a burst below one still lets
 * a request through every 1/rate seconds). */
static double bucket_cap(double rate, double burst) {
    return burst < 1.0 && rate > 0 ? 1.0 : burst;
}

/* A bucket with `tokens` at time t is full again at t + (cap - tokens) /
 * rate: that one time stands for the token count at any later time. */
void throttle_connection_init(const throttle *t, throttle_conn_bucket *b, uint64_t now_ms) {
    double rate = (double)t->cfg->connection_rate_limit;
    double burst = (double)t->cfg->connection_burst_limit;
    b->full_ms = (double)now_ms;
    if (rate > 0) b->full_ms += (bucket_cap(rate, burst) - burst) * 1000.0 / rate;
}

bool throttle_full_at_take(throttle_conn_bucket *b, int64_t rate, int64_t burst, uint64_t now_ms) {
    if (rate <= 0) return true; /* unlimited */
    double per_token = 1000.0 / (double)rate, now = (double)now_ms;
    double from = b->full_ms > now ? b->full_ms : now;
    /* Tokens now: cap - (from - now) / per_token; one is needed. */
    double cap = bucket_cap((double)rate, (double)burst);
    if ((from - now) / per_token > cap - 1.0) return false;
    b->full_ms = from + per_token;
    return true;
}

bool throttle_conn_take(const throttle *t, throttle_conn_bucket *b, uint64_t now_ms) {
    return throttle_full_at_take(b, t->cfg->connection_rate_limit, t->cfg->connection_burst_limit,
                                 now_ms);
}

throttle_verdict throttle_message(throttle *t, throttle_conn_bucket *conn_bucket,
                                  const char *route_key, uint64_t now_ms) {
    if (!route_key) {
        if (conn_bucket && !throttle_conn_take(t, conn_bucket, now_ms)) return THROTTLE_CONNECTION;
        if (!throttle_shared_take(&t->stage, now_ms)) return THROTTLE_STAGE;
        return THROTTLE_OK;
    }
    for (size_t i = 0; i < t->nroutes; i++)
        if (strcmp(t->route_names[i], route_key) == 0)
            return throttle_shared_take(&t->routes[i], now_ms) ? THROTTLE_OK : THROTTLE_ROUTE;
    return THROTTLE_OK;
}

size_t throttle_gc(throttle *t, uint64_t now_ms, uint64_t idle_ms) {
    /* Collect first: the map must not change while it is walked. */
    pthread_mutex_lock(&t->addrs_lock);
    size_t n = 0, cap = 0, it = 0;
    char **dead = NULL;
    const char *k;
    void *v;
    while (strmap_next(&t->addrs, &it, &k, &v)) {
        throttle_addr *a = v;
        if (a->connections == 0 && elapsed_ms(now_ms, a->last_seen_ms) >= idle_ms) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                dead = xrealloc(dead, cap * sizeof(*dead));
            }
            dead[n++] = xstrdup(k);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(strmap_remove(&t->addrs, dead[i]));
        free(dead[i]);
    }
    pthread_mutex_unlock(&t->addrs_lock);
    free(dead);
    return n;
}
