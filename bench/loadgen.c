/* wsgate-loadgen: a WebSocket load generator on libuv, for loopback
 * benchmarks of wsgate and its peers. Four workloads (--workload):
 *
 * echo (default): N connections, each keeping K messages of P bytes in
 * flight; every echoed message is timed from its send and answered with a
 * new one. Reports throughput and latency percentiles.
 *
 *   wsgate-loadgen --port 8080 --path /staging --conns 50 --inflight 8 \
 *                  --size 32 --duration 10 --server-pid PID
 *
 * Any request/response workload of the API works the same way: --message
 * sets the text sent, --expect the substring that marks its reply, and
 * --room-per-conn connects each connection as user/room lgN, e.g. durable
 * chat (each chat comes back to its sender after its commit):
 *
 *   wsgate-loadgen --room-per-conn --message '{"type":"chat","message":"hi"}' \
 *                  --expect '"type":"chat"' ...
 *
 * fanout: R rooms of M members (--rooms R --members M; member j of room r
 * connects with ?roomId=room<r>&userId=lg<i>). Once every member has its
 * welcome, the first member of each room publishes
 * {"type":"chat","message":"<send-time-ns>:<pad>"} at --rate messages/s
 * (per room). Every delivery to every member (the publisher included) is
 * timed from the send time parsed out of the chat's "message" field. Only
 * messages sent inside the measured window count; after it, publishing
 * stops and deliveries are drained for up to 5 s, so lost deliveries show
 * up as "missing"; a server that falls behind is rated over the time to its
 * last delivery, its CPU read then. Reports deliveries/s and latency
 * percentiles.
 *
 * storm: open and complete as many handshakes as possible for --duration
 * seconds with at most --conns in progress; each connection is closed
 * (close frame, then the server's FIN) right after its 101, or after the
 * first frame containing --expect (e.g. '"type":"welcome"') when given.
 * Reports handshakes/s and errors.
 *
 * idle: open --conns connections (in --rooms rooms), hold them idle for
 * --duration seconds, and report the growth of the server's RSS per
 * connection (needs --server-pid).
 *
 * All workloads: --sources K binds client sockets to 127.0.0.1 .. 127.0.0.K
 * (round robin) so that N may exceed the ~28k ephemeral ports of one
 * address; the soft RLIMIT_NOFILE is raised to the hard limit at start and
 * N beyond it is refused. At most --open-window handshakes are in progress
 * at once while connections are being opened. Given the server's PID,
 * server CPU seconds and RSS are read from /proc. Output: one table line
 * and one JSON line. Every run stops by itself: a watchdog ends it at
 * open-timeout + warmup + duration + 15 s at the latest.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

enum { W_ECHO, W_FANOUT, W_STORM, W_IDLE };
static const char *const workload_names[] = {"echo", "fanout", "storm", "idle"};

typedef struct lg_opts {
    const char *host, *path, *label;
    const char *message;   /* payload text; default: `size` bytes of 'x' */
    const char *expect;    /* only replies containing this count (NULL: all) */
    int room_per_conn;     /* connect as user lgN in room lgN */
    int port, conns, inflight, size, warmup;
    double duration;
    int server_pid;
    int workload;
    int rooms, members;    /* fanout (rooms also spreads storm and idle) */
    double rate;           /* fanout: messages/s per room */
    int sources, sources_set;
    int open_window;       /* handshakes in progress while opening */
    double open_timeout;   /* s to get every connection open (fanout, idle) */
} lg_opts;

/* Log-linear latency histogram: 64 sub-buckets per power of two of
 * microseconds, enough for ~1.5% resolution. */
#define HIST_SUB 64
#define HIST_POW 40
typedef struct hist {
    uint64_t b[HIST_POW * HIST_SUB];
    uint64_t n;
} hist;

static void hist_add(hist *h, uint64_t us) {
    if (us < HIST_SUB) {
        h->b[us]++;
    } else {
        int p = 63 - __builtin_clzll(us); /* us >= 64: p >= 6 */
        int shift = p - 6;
        uint64_t sub = (us >> shift) - HIST_SUB; /* 0..63 */
        int idx = (shift + 1) * HIST_SUB + (int)sub;
        if (idx >= HIST_POW * HIST_SUB) idx = HIST_POW * HIST_SUB - 1;
        h->b[idx]++;
    }
    h->n++;
}

static double hist_pct(const hist *h, double pct) {
    uint64_t want = (uint64_t)((double)h->n * pct / 100.0);
    uint64_t seen = 0;
    for (int i = 0; i < HIST_POW * HIST_SUB; i++) {
        seen += h->b[i];
        if (seen > want) {
            if (i < HIST_SUB) return i;
            int shift = i / HIST_SUB - 1;
            uint64_t sub = (uint64_t)(i % HIST_SUB) + HIST_SUB;
            return (double)(sub << shift);
        }
    }
    return 0;
}

/* Connection states. */
enum { CS_IDLE, CS_CONNECTING, CS_UPGRADED, CS_READY, CS_CLOSING, CS_CLOSED };

typedef struct lg_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    struct lg *lg;
    int idx;       /* index of the slot; storm: attempt number for the query */
    int state;
    int in_use;    /* the tcp handle is initialised and not yet closed */
    int counted;   /* storm: handshake counted */
    int got_close; /* storm: the server's close frame arrived */
    char *rbuf;
    size_t rlen, rcap;
    uint64_t *sent_at; /* echo: ring of send times of in-flight messages */
    int head, count;
} lg_conn;

typedef struct lg {
    lg_opts o;
    uv_loop_t *loop;
    lg_conn *conns;
    int nconns;
    char *frame;       /* echo: one masked client frame, sent over and over */
    size_t frame_len;
    struct sockaddr_in dst;
    struct sockaddr_in *src; /* sources, or NULL: no bind */
    uint64_t received, errors, opened;
    uint64_t ready;        /* fanout/idle/storm: connections past the welcome */
    uint64_t failed;       /* connections that failed while opening */
    int next_open, opening;
    int measuring, stopping;
    uint64_t t_start, t_end; /* us */
    uint64_t t_start_ns, t_end_ns;
    uint64_t t_open0, t_open1; /* us: opening started, every connection ready */
    hist h;
    uv_timer_t timer, pub_timer, watchdog;
    /* fanout */
    uint64_t *room_sent;
    uint64_t pub_t0;      /* ns */
    uint64_t t_last_ns;   /* the last counted delivery */
    uint64_t sent_window, delivered_window, deliveries_all, bad_deliveries;
    /* storm */
    uint64_t attempts, handshakes, attempts_left_open;
    int storm_running;
    /* server /proc readings */
    double cpu0, rss0, cpu1, rss1;
} lg;

static uint64_t now_us(void) { return uv_hrtime() / 1000; }
static const unsigned char mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

static void start_connection(lg *g, lg_conn *c);
static void conn_ready(lg_conn *c);

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
    lg_conn *c = h->data;
    if (c->rcap - c->rlen < 65536) {
        c->rcap = c->rcap ? c->rcap * 2 : 131072;
        c->rbuf = realloc(c->rbuf, c->rcap);
    }
    buf->base = c->rbuf + c->rlen;
    buf->len = c->rcap - c->rlen;
}

typedef struct queued_write {
    uv_write_t w;
    lg_conn *c;
    char data[];
} queued_write;

static void on_written(uv_write_t *w, int status) {
    queued_write *q = (queued_write *)w;
    if (status < 0 && status != UV_ECANCELED) q->c->lg->errors++;
    free(q);
}

/* Write now if the socket takes it, else queue a copy. */
static void send_raw(lg_conn *c, const char *data, size_t len) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)len) return;
    if (r < 0 && r != UV_EAGAIN) {
        c->lg->errors++;
        return;
    }
    size_t done = r > 0 ? (size_t)r : 0;
    queued_write *q = malloc(sizeof(*q) + len - done);
    q->c = c;
    memcpy(q->data, data + done, len - done);
    b = uv_buf_init(q->data, (unsigned)(len - done));
    if (uv_write(&q->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        c->lg->errors++;
        free(q);
    }
}

/* One masked client frame of `len` payload bytes into out (room for
 * len + 14); returns its length. */
static size_t make_frame(unsigned char *out, int opcode, const char *payload, size_t len) {
    size_t hdr;
    out[0] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        out[1] = (unsigned char)(0x80 | len);
        hdr = 2;
    } else if (len < 65536) {
        out[1] = 0x80 | 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        hdr = 4;
    } else {
        out[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        hdr = 10;
    }
    memcpy(out + hdr, mask_key, 4);
    hdr += 4;
    for (size_t i = 0; i < len; i++) out[hdr + i] = (unsigned char)(payload[i] ^ mask_key[i % 4]);
    return hdr + len;
}

static void send_frame(lg_conn *c, int opcode, const char *payload, size_t len) {
    unsigned char stackbuf[512];
    unsigned char *out = len + 14 <= sizeof(stackbuf) ? stackbuf : malloc(len + 14);
    size_t n = make_frame(out, opcode, payload, len);
    send_raw(c, (const char *)out, n);
    if (out != stackbuf) free(out);
}

static void send_message(lg_conn *c) {
    int cap = c->lg->o.inflight;
    c->sent_at[(c->head + c->count) % cap] = now_us();
    c->count++;
    send_raw(c, c->lg->frame, c->lg->frame_len);
}

static int read_proc(int pid, double *cpu_s, double *rss_mb) {
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long utime = 0, stime = 0;
    long rss = 0;
    /* Fields after the command: state(3) ... utime(14) stime(15) ... rss(24). */
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p + 2, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14) utime = strtoul(tok, NULL, 10);
        if (field == 15) stime = strtoul(tok, NULL, 10);
        if (field == 24) {
            rss = strtol(tok, NULL, 10);
            break;
        }
    }
    *cpu_s = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
    *rss_mb = (double)rss * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
    return 0;
}

static void proc_mark(lg *g, double *cpu, double *rss) {
    *cpu = 0;
    *rss = 0;
    if (g->o.server_pid) read_proc(g->o.server_pid, cpu, rss);
}

/* ---- tiny JSON peeking (the frames come from known servers) ---- */

/* The value of the first "key" in p[0..len), after its colon and blanks. */
static const char *json_value(const char *p, size_t len, const char *key) {
    char pat[64];
    int n = snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *end = p + len;
    const char *k = memmem(p, len, pat, (size_t)n);
    if (!k) return NULL;
    k += n;
    while (k < end && (*k == ' ' || *k == '\t' || *k == '\n' || *k == '\r' || *k == ':')) k++;
    return k < end ? k : NULL;
}

static int json_type_is(const char *p, size_t len, const char *type) {
    const char *v = json_value(p, len, "type");
    size_t tl = strlen(type);
    return v && (size_t)(p + len - v) >= tl + 2 && v[0] == '"' && memcmp(v + 1, type, tl) == 0 &&
           v[1 + tl] == '"';
}

/* ---- connections ---- */

static void open_more(lg *g) {
    while (g->opening < g->o.open_window && g->next_open < g->nconns) {
        g->opening++;
        start_connection(g, &g->conns[g->next_open++]);
    }
}

static void all_open(lg *g);

/* A connection that will never be ready (opening phase of echo, fanout, idle). */
static void open_failed(lg_conn *c) {
    lg *g = c->lg;
    g->failed++;
    g->errors++;
    g->opening--;
    open_more(g);
    if (g->ready + g->failed == (uint64_t)g->nconns) all_open(g);
}

static void on_storm_closed(uv_handle_t *h);

static void on_plain_closed(uv_handle_t *h) {
    lg_conn *c = h->data;
    c->in_use = 0;
    c->state = CS_CLOSED;
}

static void conn_close(lg_conn *c) {
    if (!c->in_use || uv_is_closing((uv_handle_t *)&c->tcp)) return;
    uv_close((uv_handle_t *)&c->tcp, c->lg->o.workload == W_STORM ? on_storm_closed : on_plain_closed);
}

/* storm: the handshake is complete; count it and close (the server ends TCP). */
static void storm_done(lg_conn *c) {
    lg *g = c->lg;
    if (g->measuring) g->handshakes++;
    c->counted = 1;
    c->state = CS_CLOSING;
    static const char code[2] = {0x03, (char)0xe8}; /* 1000 */
    send_frame(c, 0x8, code, 2);
}

static void conn_ready(lg_conn *c) {
    lg *g = c->lg;
    if (g->o.workload == W_STORM) {
        storm_done(c);
        return;
    }
    c->state = CS_READY;
    g->ready++;
    if (g->ready + g->failed == (uint64_t)g->nconns) all_open(g);
}

static void on_delivery(lg *g, const char *p, size_t len, uint64_t t_ns) {
    g->deliveries_all++;
    const char *v = json_value(p, len, "message");
    if (!v || *v != '"') {
        g->bad_deliveries++;
        return;
    }
    uint64_t sent = strtoull(v + 1, NULL, 10);
    if (sent < g->t_start_ns || (g->t_end_ns && sent > g->t_end_ns)) return; /* outside the window */
    if (!g->t_start_ns) return;
    g->delivered_window++;
    hist_add(&g->h, t_ns > sent ? (t_ns - sent) / 1000 : 0);
    if (t_ns > g->t_last_ns) g->t_last_ns = t_ns;
    if (!g->measuring && g->stopping && g->delivered_window >= g->sent_window * (uint64_t)g->o.members) {
        proc_mark(g, &g->cpu1, &g->rss1);
        uv_stop(g->loop);
    }
}

static void on_frame(lg_conn *c, int opcode, char *payload, size_t len, uint64_t t_us, uint64_t t_ns) {
    lg *g = c->lg;
    if (opcode == 0x9) { /* ping: pong */
        send_frame(c, 0xA, payload, len);
        return;
    }
    if (opcode == 0x8) {
        if (c->state == CS_CLOSING) {
            c->got_close = 1;
        } else {
            if (!g->stopping) g->errors++;
            if (c->state != CS_READY && g->o.workload != W_STORM && g->o.workload != W_ECHO) {
                c->state = CS_CLOSING;
                open_failed(c);
            }
            c->state = CS_CLOSING;
        }
        return;
    }
    if (opcode != 0x1 && opcode != 0x2) return;
    switch (g->o.workload) {
    case W_ECHO: {
        int reply = 1;
        if (g->o.expect) reply = memmem(payload, len, g->o.expect, strlen(g->o.expect)) != NULL;
        if (!reply) return;
        if (c->count > 0) {
            uint64_t sent = c->sent_at[c->head];
            c->head = (c->head + 1) % g->o.inflight;
            c->count--;
            if (g->measuring) {
                g->received++;
                hist_add(&g->h, t_us - sent);
            }
        }
        send_message(c);
        return;
    }
    case W_FANOUT:
        if (c->state == CS_UPGRADED) {
            if (json_type_is(payload, len, "welcome")) conn_ready(c);
            return;
        }
        if (json_type_is(payload, len, "chat")) on_delivery(g, payload, len, t_ns);
        return;
    case W_STORM:
    case W_IDLE:
        if (c->state == CS_UPGRADED && g->o.expect && memmem(payload, len, g->o.expect, strlen(g->o.expect)))
            conn_ready(c);
        return;
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    lg_conn *c = s->data;
    lg *g = c->lg;
    if (n < 0) {
        if (c->state == CS_CONNECTING) {
            if (g->o.workload == W_STORM) {
                if (g->measuring) g->errors++;
            } else {
                open_failed(c);
            }
        } else if (c->state == CS_UPGRADED && g->o.workload == W_STORM) {
            if (g->measuring) g->errors++;
        } else if (c->state == CS_UPGRADED && g->o.workload != W_ECHO) {
            open_failed(c);
        } else if (c->state != CS_CLOSING && !g->stopping) {
            g->errors++;
        }
        c->state = CS_CLOSED;
        conn_close(c);
        return;
    }
    c->rlen += (size_t)n;
    size_t off = 0;
    if (c->state == CS_CONNECTING) {
        char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (!end) return;
        if (strncmp(c->rbuf, "HTTP/1.1 101", 12) != 0) {
            if (g->o.workload == W_STORM) {
                if (g->measuring) g->errors++;
            } else {
                open_failed(c);
            }
            c->state = CS_CLOSED;
            conn_close(c);
            return;
        }
        off = (size_t)(end + 4 - c->rbuf);
        c->state = CS_UPGRADED;
        if (g->o.workload != W_STORM) {
            g->opened++;
            g->opening--;
            open_more(g);
        }
        if (g->o.workload == W_ECHO) {
            c->state = CS_READY;
            for (int i = 0; i < g->o.inflight; i++) send_message(c);
        } else if ((g->o.workload == W_STORM || g->o.workload == W_IDLE) && !g->o.expect) {
            conn_ready(c);
        }
    }
    uint64_t t_ns = uv_hrtime(), t_us = t_ns / 1000;
    while (c->rlen - off >= 2) {
        unsigned char *p = (unsigned char *)c->rbuf + off;
        uint64_t len = p[1] & 0x7f;
        size_t hdr = 2;
        if (len == 126) {
            if (c->rlen - off < 4) break;
            len = ((uint64_t)p[2] << 8) | p[3];
            hdr = 4;
        } else if (len == 127) {
            if (c->rlen - off < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
            hdr = 10;
        }
        if (c->rlen - off < hdr + len) break;
        off += hdr + len;
        on_frame(c, p[0] & 0x0f, (char *)p + hdr, (size_t)len, t_us, t_ns);
        if (c->state == CS_CLOSED) return; /* closed by the frame */
    }
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
}

static void on_connect(uv_connect_t *req, int status) {
    lg_conn *c = req->data;
    lg *g = c->lg;
    if (status < 0) {
        if (status == UV_ECANCELED) return;
        if (g->o.workload == W_STORM) {
            if (g->measuring) g->errors++;
        } else {
            open_failed(c);
        }
        c->state = CS_CLOSED;
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    char head[1024];
    const lg_opts *o = &g->o;
    char query[128] = "";
    if (o->workload == W_ECHO && o->room_per_conn)
        snprintf(query, sizeof(query), "?userId=lg%d&roomId=lg%d", c->idx, c->idx);
    else if (o->workload == W_FANOUT)
        snprintf(query, sizeof(query), "?roomId=room%d&userId=lg%d", c->idx / o->members, c->idx);
    else if (o->workload == W_STORM || o->workload == W_IDLE)
        snprintf(query, sizeof(query), "?roomId=room%d&userId=lg%d", c->idx % o->rooms, c->idx);
    int n = snprintf(head, sizeof(head),
                     "GET %s%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     o->path, query, o->host, o->port);
    send_raw(c, head, (size_t)n);
}

static void start_connection(lg *g, lg_conn *c) {
    c->lg = g;
    c->rlen = 0;
    c->head = c->count = 0;
    c->counted = c->got_close = 0;
    c->state = CS_CONNECTING;
    if (g->o.workload == W_STORM) c->idx = (int)(g->attempts++ % 1000000000);
    uv_tcp_init(g->loop, &c->tcp);
    c->in_use = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    c->tcp.data = c;
    c->connect_req.data = c;
    int r = 0;
    if (g->src)
        r = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&g->src[c->idx % g->o.sources], 0);
    if (r == 0) r = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&g->dst, on_connect);
    if (r < 0) {
        static int warned;
        if (!warned++) fprintf(stderr, "wsgate-loadgen: connect: %s\n", uv_strerror(r));
        if (g->o.workload == W_STORM) {
            if (g->measuring) g->errors++;
        } else {
            open_failed(c);
        }
        c->state = CS_CLOSED;
        conn_close(c);
    }
}

static void on_storm_closed(uv_handle_t *h) {
    lg_conn *c = h->data;
    lg *g = c->lg;
    c->in_use = 0;
    c->state = CS_CLOSED;
    if (g->storm_running) start_connection(g, c);
}

/* ---- phases ---- */

static void on_end(uv_timer_t *t);

static void start_measuring(lg *g) {
    g->measuring = 1;
    g->t_start_ns = uv_hrtime();
    g->t_start = g->t_start_ns / 1000;
    proc_mark(g, &g->cpu0, &g->rss0);
    uv_timer_start(&g->timer, on_end, (uint64_t)(g->o.duration * 1000), 0);
}

static void on_warm(uv_timer_t *t) { start_measuring(t->data); }

static void on_drained(uv_timer_t *t) {
    lg *g = t->data;
    proc_mark(g, &g->cpu1, &g->rss1);
    uv_stop(g->loop);
}

static void on_end(uv_timer_t *t) {
    lg *g = t->data;
    g->measuring = 0;
    g->stopping = 1;
    g->t_end_ns = uv_hrtime();
    g->t_end = g->t_end_ns / 1000;
    proc_mark(g, &g->cpu1, &g->rss1);
    if (g->o.workload == W_FANOUT) {
        uv_timer_stop(&g->pub_timer);
        if (g->delivered_window >= g->sent_window * (uint64_t)g->o.members) {
            uv_stop(g->loop);
            return;
        }
        uv_timer_start(&g->timer, on_drained, 5000, 0); /* drain what is in flight */
        return;
    }
    g->storm_running = 0;
    uv_stop(g->loop);
}

static void publish(lg *g, int room) {
    lg_conn *c = &g->conns[room * g->o.members];
    if (c->state != CS_READY) return;
    char msg[70000];
    uint64_t ts = uv_hrtime();
    int n = snprintf(msg, sizeof(msg), "{\"type\":\"chat\",\"message\":\"%llu:", (unsigned long long)ts);
    int digits = n - 27;
    int pad = g->o.size - digits - 1;
    if (pad < 1) pad = 1;
    memset(msg + n, 'x', (size_t)pad);
    n += pad;
    memcpy(msg + n, "\"}", 2);
    n += 2;
    if (g->measuring) g->sent_window++;
    send_frame(c, 0x1, msg, (size_t)n);
}

static void on_pub(uv_timer_t *t) {
    lg *g = t->data;
    double el = (double)(uv_hrtime() - g->pub_t0) * 1e-9 * g->o.rate;
    for (int r = 0; r < g->o.rooms; r++) {
        uint64_t due = (uint64_t)(el + (double)r / g->o.rooms); /* rooms spread over the period */
        while (g->room_sent[r] < due) {
            publish(g, r);
            g->room_sent[r]++;
        }
    }
}

static void on_idle_held(uv_timer_t *t) {
    lg *g = t->data;
    g->t_end = now_us();
    proc_mark(g, &g->cpu1, &g->rss1);
    uv_stop(g->loop);
}

/* Every connection is ready or has failed (or the open timeout passed). */
static void all_open(lg *g) {
    if (g->t_open1 || g->o.workload == W_ECHO || g->o.workload == W_STORM) return;
    g->t_open1 = now_us();
    uv_timer_stop(&g->timer);
    if (g->o.workload == W_FANOUT) {
        if (g->ready < (uint64_t)g->nconns) {
            fprintf(stderr, "wsgate-loadgen: fanout: only %llu of %d members joined; not publishing\n",
                    (unsigned long long)g->ready, g->nconns);
            uv_stop(g->loop);
            return;
        }
        g->pub_t0 = uv_hrtime();
        uv_timer_start(&g->pub_timer, on_pub, 1, 1);
        uv_timer_start(&g->timer, on_warm, (uint64_t)g->o.warmup * 1000, 0);
    } else if (g->o.workload == W_IDLE) {
        g->t_start = g->t_open1;
        uv_timer_start(&g->timer, on_idle_held, (uint64_t)(g->o.duration * 1000), 0);
    }
}

static void on_open_timeout(uv_timer_t *t) {
    lg *g = t->data;
    fprintf(stderr, "wsgate-loadgen: open timeout: %llu of %d connections ready\n",
            (unsigned long long)g->ready, g->nconns);
    all_open(g);
}

static void on_watchdog(uv_timer_t *t) {
    fprintf(stderr, "wsgate-loadgen: watchdog: the run did not finish in time, giving up\n");
    exit(3);
}

/* ---- setup ---- */

static int fd_budget(lg *g) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    uint64_t need = (uint64_t)g->nconns + 64;
    if (rl.rlim_cur != RLIM_INFINITY && need > (uint64_t)rl.rlim_cur) {
        fprintf(stderr,
                "wsgate-loadgen: %d connections need about %llu file descriptors, but the limit is %llu "
                "(soft raised to the hard limit); lower --conns or raise the hard limit (ulimit -Hn)\n",
                g->nconns, (unsigned long long)need, (unsigned long long)rl.rlim_cur);
        return -1;
    }
    int lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2) lo = 32768, hi = 60999;
        fclose(f);
    }
    int64_t ports = (int64_t)(hi - lo + 1) * g->o.sources;
    if ((int64_t)g->nconns > ports) {
        fprintf(stderr,
                "wsgate-loadgen: %d connections exceed the %lld ephemeral ports of %d source address(es); "
                "use --sources %lld or more\n",
                g->nconns, (long long)ports, g->o.sources,
                (long long)((g->nconns + (hi - lo)) / (hi - lo + 1)));
        return -1;
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: wsgate-loadgen [--workload echo|fanout|storm|idle] [--host H] [--port N] [--path P]\n"
            "         [--conns N] [--duration S] [--warmup S] [--server-pid PID] [--label L]\n"
            "         [--sources K] [--open-window N] [--open-timeout S]\n"
            "  echo:   [--inflight K] [--size BYTES] [--message TEXT] [--expect STR] [--room-per-conn]\n"
            "  fanout: [--rooms R] [--members M] [--rate MSG/S/ROOM] [--size BYTES]\n"
            "  storm:  [--conns IN_PROGRESS] [--expect STR] [--rooms R]\n"
            "  idle:   [--conns N] [--expect STR] [--rooms R] (needs --server-pid)\n");
}

/* ---- reports ---- */

static int report(lg *g) {
    const lg_opts *o = &g->o;
    double secs = g->t_end > g->t_start ? (double)(g->t_end - g->t_start) / 1e6 : 0;
    /* fanout: a server that falls behind delivers the window's messages late;
     * its rate is over the time to the last delivery, its CPU up to then. */
    if (o->workload == W_FANOUT && g->t_last_ns > g->t_end_ns)
        secs = (double)(g->t_last_ns - g->t_start_ns) / 1e9;
    double cpu = g->o.server_pid && g->cpu1 > 0 ? g->cpu1 - g->cpu0 : 0;
    unsigned long long errors = (unsigned long long)g->errors;
    if (o->workload == W_ECHO || o->workload == W_FANOUT) {
        uint64_t count = o->workload == W_ECHO ? g->received : g->delivered_window;
        double rate = secs > 0 ? (double)count / secs : 0;
        double per = cpu > 0 ? (double)count / cpu : 0;
        double p50 = hist_pct(&g->h, 50), p90 = hist_pct(&g->h, 90), p99 = hist_pct(&g->h, 99),
               p999 = hist_pct(&g->h, 99.9);
        if (o->workload == W_ECHO) {
            printf("%-10s echo conns=%d inflight=%d size=%d: %.0f msg/s, p50 %.0f us, p90 %.0f us, "
                   "p99 %.0f us, p99.9 %.0f us, errors %llu, server cpu %.2f s (%.0f msg per cpu-s), "
                   "rss %.1f MB\n",
                   o->label, o->conns, o->inflight, o->size, rate, p50, p90, p99, p999, errors, cpu, per,
                   g->rss1);
            printf("{\"label\":\"%s\",\"workload\":\"echo\",\"conns\":%d,\"inflight\":%d,\"size\":%d,"
                   "\"seconds\":%.3f,\"messages\":%llu,\"rate\":%.1f,\"p50_us\":%.0f,\"p90_us\":%.0f,"
                   "\"p99_us\":%.0f,\"p999_us\":%.0f,\"errors\":%llu,\"server_cpu_s\":%.3f,"
                   "\"per_cpu_s\":%.1f,\"server_rss_mb\":%.1f,\"opened\":%llu}\n",
                   o->label, o->conns, o->inflight, o->size, secs, (unsigned long long)count, rate, p50, p90,
                   p99, p999, errors, cpu, per, g->rss1, (unsigned long long)g->opened);
            return g->opened == (uint64_t)o->conns && count > 0 ? 0 : 1;
        }
        unsigned long long expected = (unsigned long long)(g->sent_window * (uint64_t)o->members);
        unsigned long long missing = expected - (unsigned long long)g->delivered_window;
        printf("%-10s fanout rooms=%d members=%d rate=%g/s/room size=%d: %.0f deliveries/s "
               "(%llu of %llu, missing %llu), p50 %.0f us, p90 %.0f us, p99 %.0f us, p99.9 %.0f us, "
               "errors %llu, server cpu %.2f s (%.0f deliveries per cpu-s), rss %.1f MB\n",
               o->label, o->rooms, o->members, o->rate, o->size, rate, (unsigned long long)count, expected,
               missing, p50, p90, p99, p999, errors, cpu, per, g->rss1);
        printf("{\"label\":\"%s\",\"workload\":\"fanout\",\"rooms\":%d,\"members\":%d,\"conns\":%d,"
               "\"rate_per_room\":%g,\"size\":%d,\"seconds\":%.3f,\"sent\":%llu,\"expected\":%llu,"
               "\"deliveries\":%llu,\"missing\":%llu,\"rate\":%.1f,\"p50_us\":%.0f,\"p90_us\":%.0f,"
               "\"p99_us\":%.0f,\"p999_us\":%.0f,\"errors\":%llu,\"server_cpu_s\":%.3f,\"per_cpu_s\":%.1f,"
               "\"server_rss_mb\":%.1f,\"opened\":%llu,\"unparsed\":%llu}\n",
               o->label, o->rooms, o->members, g->nconns, o->rate, o->size, secs,
               (unsigned long long)g->sent_window, expected, (unsigned long long)count, missing, rate, p50,
               p90, p99, p999, errors, cpu, per, g->rss1, (unsigned long long)g->opened,
               (unsigned long long)g->bad_deliveries);
        return g->failed == 0 && count > 0 ? 0 : 1;
    }
    if (o->workload == W_STORM) {
        double rate = secs > 0 ? (double)g->handshakes / secs : 0;
        double per = cpu > 0 ? (double)g->handshakes / cpu : 0;
        printf("%-10s storm in-progress=%d%s%s: %.0f handshakes/s (%llu in %.1f s), errors %llu, "
               "server cpu %.2f s (%.0f handshakes per cpu-s), rss %.1f MB\n",
               o->label, o->conns, o->expect ? " until " : "", o->expect ? o->expect : "", rate,
               (unsigned long long)g->handshakes, secs, errors, cpu, per, g->rss1);
        printf("{\"label\":\"%s\",\"workload\":\"storm\",\"conns\":%d,\"seconds\":%.3f,\"handshakes\":%llu,"
               "\"attempts\":%llu,\"rate\":%.1f,\"errors\":%llu,\"server_cpu_s\":%.3f,\"per_cpu_s\":%.1f,"
               "\"server_rss_mb\":%.1f}\n",
               o->label, o->conns, secs, (unsigned long long)g->handshakes, (unsigned long long)g->attempts,
               rate, errors, cpu, per, g->rss1);
        return g->handshakes > 0 ? 0 : 1;
    }
    /* idle */
    double open_s = g->t_open1 > g->t_open0 ? (double)(g->t_open1 - g->t_open0) / 1e6 : 0;
    double bpc = g->ready > 0 ? (g->rss1 - g->rss0) * 1048576.0 / (double)g->ready : 0;
    printf("%-10s idle conns=%d sources=%d: %llu open in %.1f s, server rss %.1f -> %.1f MB after %.0f s: "
           "%.0f bytes per connection, errors %llu\n",
           o->label, g->nconns, o->sources, (unsigned long long)g->ready, open_s, g->rss0, g->rss1, secs,
           bpc, errors);
    printf("{\"label\":\"%s\",\"workload\":\"idle\",\"conns\":%d,\"sources\":%d,\"opened\":%llu,"
           "\"open_seconds\":%.3f,\"held_seconds\":%.3f,\"rss_before_mb\":%.2f,\"rss_after_mb\":%.2f,"
           "\"bytes_per_conn\":%.0f,\"errors\":%llu,\"server_rss_mb\":%.1f}\n",
           o->label, g->nconns, o->sources, (unsigned long long)g->ready, open_s, secs, g->rss0, g->rss1,
           bpc, errors, g->rss1);
    return g->ready == (uint64_t)g->nconns && o->server_pid ? 0 : 1;
}

int main(int argc, char **argv) {
    static lg g; /* the histogram is large */
    g.o = (lg_opts){.host = "127.0.0.1", .path = "/staging", .label = "server", .port = 8080,
                    .conns = 50, .inflight = 8, .size = 32, .duration = 5, .warmup = 1,
                    .workload = W_ECHO, .rooms = 10, .members = 20, .rate = 100, .sources = 1,
                    .open_window = 256, .open_timeout = 60};
    static struct option longopts[] = {
        {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},     {"path", 1, 0, 'P'},
        {"conns", 1, 0, 'c'},    {"inflight", 1, 0, 'k'}, {"size", 1, 0, 's'},
        {"duration", 1, 0, 'd'}, {"server-pid", 1, 0, 'S'}, {"label", 1, 0, 'l'},
        {"warmup", 1, 0, 'w'},   {"message", 1, 0, 'm'}, {"expect", 1, 0, 'e'},
        {"room-per-conn", 0, 0, 'r'}, {"workload", 1, 0, 'W'}, {"rooms", 1, 0, 'R'},
        {"members", 1, 0, 'M'},  {"rate", 1, 0, 'q'},    {"sources", 1, 0, 'K'},
        {"open-window", 1, 0, 'o'}, {"open-timeout", 1, 0, 'T'}, {"help", 0, 0, '?'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': g.o.host = optarg; break;
        case 'p': g.o.port = atoi(optarg); break;
        case 'P': g.o.path = optarg; break;
        case 'c': g.o.conns = atoi(optarg); break;
        case 'k': g.o.inflight = atoi(optarg); break;
        case 's': g.o.size = atoi(optarg); break;
        case 'd': g.o.duration = atof(optarg); break;
        case 'S': g.o.server_pid = atoi(optarg); break;
        case 'l': g.o.label = optarg; break;
        case 'w': g.o.warmup = atoi(optarg); break;
        case 'm': g.o.message = optarg; break;
        case 'e': g.o.expect = optarg; break;
        case 'r': g.o.room_per_conn = 1; break;
        case 'R': g.o.rooms = atoi(optarg); break;
        case 'M': g.o.members = atoi(optarg); break;
        case 'q': g.o.rate = atof(optarg); break;
        case 'K': g.o.sources = atoi(optarg); g.o.sources_set = 1; break;
        case 'o': g.o.open_window = atoi(optarg); break;
        case 'T': g.o.open_timeout = atof(optarg); break;
        case 'W': {
            int found = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(optarg, workload_names[i]) == 0) found = i;
            if (found < 0) {
                fprintf(stderr, "wsgate-loadgen: unknown workload '%s' (echo, fanout, storm, idle)\n", optarg);
                return 2;
            }
            g.o.workload = found;
            break;
        }
        default:
            usage();
            return 2;
        }
    }
    lg_opts *o = &g.o;
    if (o->size > 65535 || o->size < 1 || o->inflight < 1 || o->conns < 1 || o->rooms < 1 ||
        o->members < 1 || o->open_window < 1 || o->duration <= 0 || o->duration > 3600 || o->warmup < 0 ||
        o->open_timeout <= 0 || o->open_timeout > 3600) {
        fprintf(stderr, "wsgate-loadgen: size must be 1..65535; inflight, conns, rooms, members, open-window "
                        ">= 1; duration and open-timeout in (0, 3600]\n");
        return 2;
    }
    if (o->sources < 1 || o->sources > 254) {
        fprintf(stderr, "wsgate-loadgen: --sources must be 1..254 (127.0.0.1 .. 127.0.0.K)\n");
        return 2;
    }
    if (o->workload == W_FANOUT && (o->rate <= 0 || o->rate > 1e6 || (int64_t)o->rooms * o->members > 10000000)) {
        fprintf(stderr, "wsgate-loadgen: fanout needs 0 < --rate <= 1e6 and rooms x members <= 1e7\n");
        return 2;
    }
    if (o->workload == W_IDLE && !o->server_pid) {
        fprintf(stderr, "wsgate-loadgen: idle measures the server's RSS: give --server-pid\n");
        return 2;
    }
    g.nconns = o->workload == W_FANOUT ? o->rooms * o->members : o->conns;
    if (fd_budget(&g) != 0) return 2;

    if (o->workload == W_ECHO) {
        if (o->message) o->size = (int)strlen(o->message);
        char *payload = malloc((size_t)o->size);
        for (int i = 0; i < o->size; i++) payload[i] = o->message ? o->message[i] : 'x';
        g.frame = malloc((size_t)o->size + 14);
        g.frame_len = make_frame((unsigned char *)g.frame, 0x1, payload, (size_t)o->size);
        free(payload);
    }
    if (uv_ip4_addr(o->host, o->port, &g.dst) != 0) {
        fprintf(stderr, "wsgate-loadgen: --host must be an IPv4 address\n");
        return 2;
    }
    if (o->sources_set) {
        g.src = calloc((size_t)o->sources, sizeof(*g.src));
        for (int i = 0; i < o->sources; i++) {
            char a[32];
            snprintf(a, sizeof(a), "127.0.0.%d", i + 1);
            uv_ip4_addr(a, 0, &g.src[i]);
        }
    }

    g.loop = uv_default_loop();
    g.conns = calloc((size_t)g.nconns, sizeof(lg_conn));
    for (int i = 0; i < g.nconns; i++) {
        g.conns[i].lg = &g;
        g.conns[i].idx = i;
        if (o->workload == W_ECHO) g.conns[i].sent_at = calloc((size_t)o->inflight, sizeof(uint64_t));
    }
    if (o->workload == W_FANOUT) g.room_sent = calloc((size_t)o->rooms, sizeof(uint64_t));
    uv_timer_init(g.loop, &g.timer);
    uv_timer_init(g.loop, &g.pub_timer);
    uv_timer_init(g.loop, &g.watchdog);
    g.timer.data = g.pub_timer.data = g.watchdog.data = &g;
    uv_timer_start(&g.watchdog, on_watchdog,
                   (uint64_t)((o->open_timeout + o->warmup + o->duration + 15) * 1000), 0);

    g.t_open0 = now_us();
    switch (o->workload) {
    case W_ECHO:
        open_more(&g);
        uv_timer_start(&g.timer, on_warm, (uint64_t)o->warmup * 1000, 0);
        break;
    case W_FANOUT:
        open_more(&g);
        if (!g.t_open1) uv_timer_start(&g.timer, on_open_timeout, (uint64_t)(o->open_timeout * 1000), 0);
        break;
    case W_IDLE:
        proc_mark(&g, &g.cpu0, &g.rss0);
        open_more(&g);
        if (!g.t_open1) uv_timer_start(&g.timer, on_open_timeout, (uint64_t)(o->open_timeout * 1000), 0);
        break;
    case W_STORM:
        g.storm_running = 1;
        for (int i = 0; i < g.nconns; i++) start_connection(&g, &g.conns[i]);
        uv_timer_start(&g.timer, on_warm, (uint64_t)o->warmup * 1000, 0);
        break;
    }
    uv_run(g.loop, UV_RUN_DEFAULT);
    return report(&g);
}
