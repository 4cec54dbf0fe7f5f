#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/strmap.h"
#include "log/log.h"

static void port_unclaim(int port);

/* Shared by every worker: max_connections holds for the process. */
static _Atomic int64_t open_total;

int64_t server_open_total(void) { return atomic_load_explicit(&open_total, memory_order_relaxed); }

void server_open_add(int delta) {
    atomic_fetch_add_explicit(&open_total, delta, memory_order_relaxed);
}

/* Shared by every worker: max_pending_http_bytes holds for the process. */
static _Atomic size_t pending_http;

size_t server_pending_http_bytes(void) {
    return atomic_load_explicit(&pending_http, memory_order_relaxed);
}

void server_pending_http_add(ssize_t delta) {
    atomic_fetch_add_explicit(&pending_http, (size_t)delta, memory_order_relaxed);
}

/* Accepted sockets per source address, every worker's: an address's
 * connections that have not upgraded count against max_connections_per_ip
 * too. The map is created on first use and emptied as sockets close. */
static pthread_mutex_t addr_mu = PTHREAD_MUTEX_INITIALIZER;
static strmap addr_sockets;
static bool addr_sockets_ready;

size_t server_addr_acquire(const char *ip) {
    pthread_mutex_lock(&addr_mu);
    if (!addr_sockets_ready) {
        strmap_init(&addr_sockets);
        addr_sockets_ready = true;
    }
    uintptr_t n = (uintptr_t)strmap_get(&addr_sockets, ip) + 1;
    strmap_put(&addr_sockets, ip, (void *)n, NULL);
    pthread_mutex_unlock(&addr_mu);
    return (size_t)n;
}

void server_addr_release(const char *ip) {
    pthread_mutex_lock(&addr_mu);
    uintptr_t n = addr_sockets_ready ? (uintptr_t)strmap_get(&addr_sockets, ip) : 0;
    if (n > 1) strmap_put(&addr_sockets, ip, (void *)(n - 1), NULL);
    else if (n == 1) strmap_remove(&addr_sockets, ip);
    if (addr_sockets_ready && addr_sockets.count == 0) {
        /* Nothing left: no memory is kept past the last socket (leak
         * checkers see an empty process). */
        strmap_free(&addr_sockets);
        addr_sockets_ready = false;
    }
    pthread_mutex_unlock(&addr_mu);
}

/* The server whose loop runs on this thread (NULL until one enters). */
static _Thread_local server *current;

void server_enter(server *srv) { current = srv; }

/* Fails closed: a thread that entered no server (the store thread, a
 * tool) owns no connection; what it sends travels as a post by id. */
bool server_owns(const conn *c) { return current && c->srv == current; }

server *server_current(void) { return current; }

static void release_item(server_inbox_item *it) {
    if (it->f) ws_frame_unref(it->f);
    free(it->key);
}

void server_post(server *srv, const server_inbox_item *item) {
    pthread_mutex_lock(&srv->inbox_mu);
    if (srv->inbox_closed) {
        pthread_mutex_unlock(&srv->inbox_mu);
        server_inbox_item it = *item;
        it.run(srv, &it, true);
        release_item(&it);
        return;
    }
    if (srv->inbox_len == srv->inbox_cap) {
        srv->inbox_cap = srv->inbox_cap ? srv->inbox_cap * 2 : 64;
        srv->inbox = xrealloc(srv->inbox, srv->inbox_cap * sizeof(*srv->inbox));
    }
    srv->inbox[srv->inbox_len++] = *item;
    atomic_store_explicit(&srv->inbox_waiting, srv->inbox_len, memory_order_relaxed);
    /* Later posts ride on the same wake-up. Sent under the lock, so the
     * owner cannot close the handle in between (close_inbox takes it). */
    if (srv->inbox_len == 1) uv_async_send(&srv->inbox_async);
    pthread_mutex_unlock(&srv->inbox_mu);
}

void server_run_inbox(server *srv) {
    for (;;) {
        if (srv->running_pos == srv->running_len) {
            free(srv->running);
            pthread_mutex_lock(&srv->inbox_mu);
            srv->running = srv->inbox;
            srv->running_len = srv->inbox_len;
            srv->running_pos = 0;
            srv->inbox = NULL;
            srv->inbox_len = srv->inbox_cap = 0;
            atomic_store_explicit(&srv->inbox_waiting, 0, memory_order_relaxed);
            pthread_mutex_unlock(&srv->inbox_mu);
            if (srv->running_len == 0) return;
        }
        /* A copy: a nested run may finish this batch and free it. */
        server_inbox_item it = srv->running[srv->running_pos++];
        it.run(srv, &it, false);
        release_item(&it);
    }
}

void server_run_own_inbox(void) {
    /* Called on every app_lock: an empty inbox costs one relaxed load, not
     * a mutex round trip. A post made under the app lock before we took it
     * is visible here through that lock. */
    if (!current) return;
    if (current->running_pos == current->running_len &&
        atomic_load_explicit(&current->inbox_waiting, memory_order_relaxed) == 0)
        return;
    server_run_inbox(current);
}

static void on_inbox(uv_async_t *h) { server_run_inbox(h->data); }

void server_inbox_init(server *srv, uv_loop_t *loop) {
    pthread_mutex_init(&srv->inbox_mu, NULL);
    uv_async_init(loop, &srv->inbox_async, on_inbox);
    srv->inbox_async.data = srv;
    uv_unref((uv_handle_t *)&srv->inbox_async); /* never what keeps the loop running */
}

/* The loop is going away: waiting posts and later ones are run as
 * dropped (releasing what they hold). */
static void close_inbox(server *srv) {
    pthread_mutex_lock(&srv->inbox_mu);
    srv->inbox_closed = true;
    server_inbox_item *waiting = srv->inbox;
    size_t n = srv->inbox_len;
    srv->inbox = NULL;
    srv->inbox_len = srv->inbox_cap = 0;
    atomic_store_explicit(&srv->inbox_waiting, 0, memory_order_relaxed);
    pthread_mutex_unlock(&srv->inbox_mu);
    for (size_t i = srv->running_pos; i < srv->running_len; i++) {
        srv->running[i].run(srv, &srv->running[i], true);
        release_item(&srv->running[i]);
    }
    free(srv->running);
    srv->running = NULL;
    srv->running_len = srv->running_pos = 0;
    for (size_t i = 0; i < n; i++) {
        waiting[i].run(srv, &waiting[i], true);
        release_item(&waiting[i]);
    }
    free(waiting);
}

size_t server_queued_bytes(server *srv) {
    if (current && current != srv)
        return atomic_load_explicit(&srv->queued_sample, memory_order_relaxed);
    size_t queued = 0;
    for (conn *c = srv->conns; c; c = c->next) queued += conn_queued_bytes(c);
    return queued;
}

size_t server_parser_bytes(server *srv) {
    if (current && current != srv)
        return atomic_load_explicit(&srv->parser_sample, memory_order_relaxed);
    size_t n = 0;
    for (conn *c = srv->conns; c; c = c->next)
        if (c->parser) n += ws_parser_memory(c->parser);
    return n;
}

static void on_connection(uv_stream_t *listener, int status) {
    server *srv = listener->data;
    if (status < 0) {
        log_msg(LOG_ERROR, "accept_error", "%s", uv_strerror(status));
        return;
    }
    conn_accept(srv);
}

void server_mark_dirty(server *srv, conn *c) {
    c->dirty = true;
    c->dirty_next = srv->dirty;
    srv->dirty = c;
}

/* [perf16b] How many times one flush may stop to run posts that arrived
 * while it writes. A post that lands mid-flush (a chat committed while the
 * loop writes the previous one to 1,000 sockets) used to wait for the whole
 * flush and then cost a second send per member; run at once, its frames
 * join the queues not yet written (one send carries both chats) and only
 * the members already written are visited again. Bounded so that a flood
 * of posts cannot keep the loop from polling its sockets. */
#define FLUSH_INBOX_RUNS 16

/* Flush every queue written to since the last flush: one writev per socket
 * per loop turn, however many frames were queued in between. */
static void flush_dirty(server *srv) {
    /* This turn's log lines first: they describe what is about to be sent. */
    log_flush_thread();
    uint64_t first = srv->flush_cb ? clock_mono_ns() : 0;
    unsigned runs = 0;
    while (srv->dirty) {
        conn *list = srv->dirty;
        srv->dirty = NULL;
        while (list) {
            if (runs < FLUSH_INBOX_RUNS &&
                atomic_load_explicit(&srv->inbox_waiting, memory_order_relaxed) != 0) {
                /* Connections still on list keep their dirty mark: what the
                 * posts queue for them goes out in their send below. */
                runs++;
                server_run_inbox(srv);
                if (!first && srv->flush_cb) first = clock_mono_ns();
            }
            conn *c = list;
            list = c->dirty_next;
            c->dirty = false;
            c->dirty_next = NULL;
            conn_flush(c);
        }
    }
    server_flush_cb cb = srv->flush_cb;
    if (cb) {
        srv->flush_cb = NULL;
        cb(srv->flush_ctx, first, clock_mono_ns());
    }
}

void server_time_next_flush(server_flush_cb cb, void *ctx) {
    if (!current) return;
    current->flush_cb = cb;
    current->flush_ctx = ctx;
}

static void on_prepare(uv_prepare_t *h) { flush_dirty(h->data); }
static void on_check(uv_check_t *h) { flush_dirty(h->data); }

void server_conn_freed(server *srv, conn *c) {
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->nconns--;
    if (c->dirty) {
        /* Unlink from the flush list. */
        conn **pp = &srv->dirty;
        while (*pp && *pp != c) pp = &(*pp)->dirty_next;
        if (*pp) *pp = c->dirty_next;
    }
}

static void close_server_handles(server *srv) {
    uv_close((uv_handle_t *)&srv->sweep_timer, NULL);
    uv_close((uv_handle_t *)&srv->flush_prepare, NULL);
    uv_close((uv_handle_t *)&srv->flush_check, NULL);
    uv_close((uv_handle_t *)&srv->sig_term, NULL);
    uv_close((uv_handle_t *)&srv->sig_int, NULL);
    uv_close((uv_handle_t *)&srv->sig_hup, NULL);
    close_inbox(srv);
    uv_close((uv_handle_t *)&srv->inbox_async, NULL);
}

/* Hand freed heap pages back to the system. Not under a sanitizer: its
 * allocator replaces glibc's, and glibc's malloc_trim called on a worker
 * thread then leaves glibc's arena bookkeeping inconsistent, which aborts
 * the process when that thread exits. */
static void trim_heap(void) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return;
#else
    malloc_trim(0);
#endif
#else
    malloc_trim(0);
#endif
}

static void on_sweep(uv_timer_t *t) {
    server *srv = t->data;
    uint64_t now = uv_now(srv->loop);
    conn *c = srv->conns;
    size_t queued = 0, parsers = 0;
    unsigned released = 0;
    while (c) {
        conn *next = c->next; /* c is not freed here: uv_close defers it */
        released += conn_sweep(c, now);
        queued += conn_queued_bytes(c);
        if (c->parser) parsers += ws_parser_memory(c->parser);
        c = next;
    }
    atomic_store_explicit(&srv->queued_sample, queued, memory_order_relaxed);
    atomic_store_explicit(&srv->parser_sample, parsers, memory_order_relaxed);
    /* Many connections went idle at once (a burst of connects, the end of
     * a busy spell): hand the freed pages back to the system, or the
     * process keeps its high-water mark of buffers no one uses. */
    if (released >= 1024) trim_heap();
    /* [idle memory] Releases below that threshold add up; the first sweep
     * that releases nothing after them trims too, so a server that has
     * gone quiet holds no freed pages whatever the pace of its connects. */
    srv->untrimmed += released;
    if (released >= 1024) srv->untrimmed = 0;
    else if (released == 0 && srv->untrimmed > 0) {
        trim_heap();
        srv->untrimmed = 0;
    }
    if (srv->shutting_down) {
        if (now >= srv->shutdown_deadline_ms) {
            for (c = srv->conns; c; c = c->next) conn_abort(c);
        }
        if (srv->nconns == 0) {
            close_server_handles(srv);
        }
    }
}

void server_shutdown(server *srv) {
    if (srv->shutting_down) {
        /* A second signal: stop waiting for clients. */
        srv->shutdown_deadline_ms = 0;
        return;
    }
    srv->shutting_down = true;
    srv->shutdown_deadline_ms = uv_now(srv->loop) + (uint64_t)srv->cfg->shutdown_timeout_ms;
    log_msg(LOG_INFO, "shutdown", "closing %zu connections", srv->nconns);
    uv_close((uv_handle_t *)&srv->listener, NULL);
    for (conn *c = srv->conns; c; c = c->next) {
        if (c->state == CONN_OPEN) conn_close(c, WS_CLOSE_GOING_AWAY, "server shutting down");
        else if (c->state == CONN_HTTP) conn_abort(c);
    }
    /* Check often while draining. */
    uv_timer_start(&srv->sweep_timer, on_sweep, 20, 20);
}

static void on_signal(uv_signal_t *h, int signum) { server_shutdown(h->data); }

/* SIGHUP: load the certificate and key again. New connections use the new
 * ones; open connections keep theirs (each holds its own reference). A
 * failed reload keeps the old pair and says why. */
static void on_hup(uv_signal_t *h, int signum) {
    server *srv = h->data;
    if (!srv->tls) return;
    wsg_error err;
    tls_ctx *fresh = tls_ctx_new(srv->cfg->tls_cert_file, srv->cfg->tls_key_file, &err);
    if (!fresh) {
        log_msg(LOG_ERROR, "tls_reload_error", "%s (keeping the previous certificate)",
                err.message);
        return;
    }
    tls_ctx_free(srv->tls);
    srv->tls = fresh;
    log_msg(LOG_INFO, "tls_reloaded", "certificate %s reloaded", srv->cfg->tls_cert_file);
}

void server_free(server *srv) {
    if (srv->claimed_port) port_unclaim(srv->claimed_port);
    srv->claimed_port = 0;
    tls_ctx_free(srv->tls);
    srv->tls = NULL;
    slab_destroy(&srv->conn_slab);
    if (srv->loop) {
        close_inbox(srv); /* started: the mutex exists */
        pthread_mutex_destroy(&srv->inbox_mu);
    }
}

static uint64_t sweep_interval_ms(const config *cfg) {
    uint64_t iv = 1000;
    uint64_t cand[] = {(uint64_t)cfg->handshake_timeout_ms / 4,
                       (uint64_t)cfg->ping_interval_s * 250, (uint64_t)cfg->pong_timeout_s * 250,
                       (uint64_t)cfg->idle_timeout_s * 250,
                       (uint64_t)cfg->slow_consumer_timeout_ms / 4};
    for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]); i++)
        if (cand[i] > 0 && cand[i] < iv) iv = cand[i];
    return iv < 50 ? 50 : iv;
}

int server_start(server *srv, uv_loop_t *loop, const config *cfg, const server_handlers *handlers,
                 void *app) {
    return server_start_worker(srv, loop, cfg, handlers, app, (int)cfg->port, false);
}

/* Ports this process listens on in a SO_REUSEPORT group: its later
 * workers join them, and no other process may (see bind_shared). Workers
 * are started one after the other, but tests may run servers side by side. */
static pthread_mutex_t claimed_mu = PTHREAD_MUTEX_INITIALIZER;
static int claimed_ports[16];
static size_t nclaimed;

static bool port_claimed(int port) {
    pthread_mutex_lock(&claimed_mu);
    bool found = false;
    for (size_t i = 0; i < nclaimed && !found; i++) found = claimed_ports[i] == port;
    pthread_mutex_unlock(&claimed_mu);
    return found;
}

static bool port_claim(int port) {
    pthread_mutex_lock(&claimed_mu);
    bool ok = nclaimed < sizeof(claimed_ports) / sizeof(claimed_ports[0]);
    if (ok) claimed_ports[nclaimed++] = port;
    pthread_mutex_unlock(&claimed_mu);
    return ok;
}

static void port_unclaim(int port) {
    pthread_mutex_lock(&claimed_mu);
    for (size_t i = 0; i < nclaimed; i++) {
        if (claimed_ports[i] == port) {
            claimed_ports[i] = claimed_ports[--nclaimed];
            break;
        }
    }
    pthread_mutex_unlock(&claimed_mu);
}

static int addr_port(const struct sockaddr *addr) {
    return ntohs(addr->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)addr)->sin6_port
                                             : ((const struct sockaddr_in *)addr)->sin_port);
}

/* A listening socket that other workers' sockets may share (SO_REUSEPORT:
 * the kernel spreads new connections over them). Returns a libuv error.
 *
 * Only this process's workers may join the group. Linux lets any socket of
 * the same user join a group, so the first worker binds WITHOUT
 * SO_REUSEPORT: that bind fails (EADDRINUSE) while any other process
 * listens on the port, and, being one atomic step, leaves no window for
 * another process to slip in between a check and the bind. The option is
 * set only once the bind succeeded, so this process's later workers can
 * join; another wsgate makes the same first bind and gets EADDRINUSE. */
static int bind_shared(server *srv, const struct sockaddr *addr) {
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return uv_translate_sys_error(errno);
    int one = 1;
    socklen_t len =
        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int port = addr_port(addr);
    bool join = port != 0 && port_claimed(port);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (join && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, addr, len) != 0 ||
        (!join && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)) {
        int e = errno;
        close(fd);
        return uv_translate_sys_error(e);
    }
    if (!join) {
        struct sockaddr_storage bound;
        socklen_t blen = sizeof(bound);
        if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0 &&
            port_claim(addr_port((struct sockaddr *)&bound)))
            srv->claimed_port = addr_port((struct sockaddr *)&bound);
    }
    int r = uv_tcp_open(&srv->listener, fd);
    if (r != 0) close(fd);
    return r;
}

/* Bind srv's listening socket to cfg->listen:port (port 0: the kernel
 * chooses; shared: SO_REUSEPORT after the first bind) and listen; sets
 * srv->bound_port. Returns 0 or libuv's code (logged). */
static int start_listener(server *srv, uv_loop_t *loop, const config *cfg, int port, bool shared) {
    struct sockaddr_storage addr;
    int r;
    if (strchr(cfg->listen, ':')) r = uv_ip6_addr(cfg->listen, port, (struct sockaddr_in6 *)&addr);
    else r = uv_ip4_addr(cfg->listen, port, (struct sockaddr_in *)&addr);
    if (r != 0) {
        log_msg(LOG_ERROR, "listen_error", "bad listen address %s: %s", cfg->listen,
                uv_strerror(r));
        return r;
    }
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    r = shared ? bind_shared(srv, (struct sockaddr *)&addr)
               : uv_tcp_bind(&srv->listener, (struct sockaddr *)&addr, 0);
    if (r == 0) r = uv_listen((uv_stream_t *)&srv->listener, 4096, on_connection);
    if (r == UV_EADDRINUSE) {
        /* Most often a second wsgate (or a stale one) on the same port. */
        log_msg(LOG_ERROR, "listen_error", "port %d is already in use by another process (%s)",
                port, cfg->listen);
        fprintf(stderr, "wsgate: port %d is already in use by another process (%s)\n", port,
                cfg->listen);
    } else if (r != 0) {
        log_msg(LOG_ERROR, "listen_error", "cannot listen on %s:%d: %s", cfg->listen, port,
                uv_strerror(r));
        /* For people too, whatever logging_level says (OFF printed nothing). */
        fprintf(stderr, "wsgate: cannot listen on %s:%d: %s%s\n", cfg->listen, port, uv_strerror(r),
                r == UV_EACCES ? " (a port below 1024 needs root or CAP_NET_BIND_SERVICE; "
                                 "pass --port 8080 or another above 1023)"
                               : "");
    }
    if (r != 0) {
        uv_close((uv_handle_t *)&srv->listener, NULL);
        return r;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
    srv->bound_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

/* The loop's handles: the flush around each turn, the idle sweep, and the
 * signals that stop (SIGTERM, SIGINT) or reopen logs (SIGHUP). */
static void start_loop_handles(server *srv, uv_loop_t *loop, const config *cfg) {
    uv_prepare_init(loop, &srv->flush_prepare);
    srv->flush_prepare.data = srv;
    uv_prepare_start(&srv->flush_prepare, on_prepare);
    uv_check_init(loop, &srv->flush_check);
    srv->flush_check.data = srv;
    uv_check_start(&srv->flush_check, on_check);

    uv_timer_init(loop, &srv->sweep_timer);
    srv->sweep_timer.data = srv;
    uint64_t iv = sweep_interval_ms(cfg);
    uv_timer_start(&srv->sweep_timer, on_sweep, iv, iv);

    uv_signal_init(loop, &srv->sig_term);
    srv->sig_term.data = srv;
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_init(loop, &srv->sig_int);
    srv->sig_int.data = srv;
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    uv_signal_init(loop, &srv->sig_hup);
    srv->sig_hup.data = srv;
    uv_signal_start(&srv->sig_hup, on_hup, SIGHUP);
}

int server_start_worker(server *srv, uv_loop_t *loop, const config *cfg,
                        const server_handlers *handlers, void *app, int port, bool shared) {
    memset(srv, 0, offsetof(server, read_buf));
    slab_init(&srv->conn_slab, sizeof(conn));
    srv->loop = loop;
    server_inbox_init(srv, loop);
    srv->cfg = cfg;
    srv->deflate = (ws_deflate_config){
        .enabled = cfg->permessage_deflate,
        .server_max_window_bits = (uint8_t)cfg->deflate_server_max_window_bits,
        .client_max_window_bits = (uint8_t)cfg->deflate_client_max_window_bits,
        .level = (uint8_t)cfg->deflate_level,
        .min_size = (uint32_t)cfg->deflate_min_size,
        .client_no_context_takeover = cfg->deflate_client_no_context_takeover,
    };
    srv->handlers = handlers;
    srv->app = app;
    snprintf(srv->stage_path, sizeof(srv->stage_path), "/%s", cfg->stage_name);

    if (cfg->tls_cert_file && cfg->tls_cert_file[0]) {
        wsg_error err;
        srv->tls = tls_ctx_new(cfg->tls_cert_file, cfg->tls_key_file, &err);
        if (!srv->tls) {
            log_msg(LOG_ERROR, "startup_error", "%s", err.message);
            fprintf(stderr, "wsgate: %s\n", err.message); /* at any logging_level */
            return UV_EINVAL;
        }
    }
    int r = start_listener(srv, loop, cfg, port, shared);
    if (r != 0) return r;
    start_loop_handles(srv, loop, cfg);
    log_line l;
    log_begin(&l, LOG_INFO, "listening");
    log_str(&l, "address", cfg->listen);
    log_int(&l, "port", srv->bound_port);
    log_str(&l, "stage", cfg->stage_name);
    log_str(&l, "mode", cfg->mode);
    log_str(&l, "scheme", srv->tls ? "wss" : "ws");
    log_end(&l);
    return 0;
}
