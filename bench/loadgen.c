/* wsgate-loadgen: a WebSocket load generator on libuv, for loopback
 * benchmarks of wsgate and its peers.
 *
 * Workload "echo": N connections, each keeping K messages of P bytes in
 * flight; every echoed message is timed from its send and answered with a
 * new one. Reports throughput, latency percentiles and, given the server's
 * PID, its CPU seconds and RSS from /proc, as a table and as one JSON line.
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
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

typedef struct lg_opts {
    const char *host, *path, *label;
    const char *message;   /* payload text; default: `size` bytes of 'x' */
    const char *expect;    /* only replies containing this count (NULL: all) */
    int room_per_conn;     /* connect as user lgN in room lgN */
    int port, conns, inflight, size, warmup;
    double duration;
    int server_pid;
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

typedef struct lg_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    struct lg *lg;
    int open;
    char *rbuf;
    size_t rlen, rcap;
    uint64_t *sent_at; /* ring of send times of in-flight messages */
    int head, count;
} lg_conn;

typedef struct lg {
    lg_opts o;
    uv_loop_t *loop;
    lg_conn *conns;
    char *frame;       /* one masked client frame, sent over and over */
    size_t frame_len;
    char *request;
    size_t request_len;
    uint64_t received, errors, opened;
    int measuring;
    uint64_t t_start, t_end;
    hist h;
    uv_timer_t timer;
} lg;

static uint64_t now_us(void) { return uv_hrtime() / 1000; }

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
    lg_conn *c = h->data;
    if (c->rcap - c->rlen < 65536) {
        c->rcap = c->rcap ? c->rcap * 2 : 131072;
        c->rbuf = realloc(c->rbuf, c->rcap);
    }
    buf->base = c->rbuf + c->rlen;
    buf->len = c->rcap - c->rlen;
}

static void on_written(uv_write_t *w, int status) {
    if (status < 0) ((lg_conn *)w->data)->lg->errors++;
    free(w);
}

static void send_raw(lg_conn *c, const char *data, size_t len) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)len) return;
    if (r < 0 && r != UV_EAGAIN) {
        c->lg->errors++;
        return;
    }
    if (r > 0) b = uv_buf_init((char *)data + r, (unsigned)(len - (size_t)r));
    uv_write_t *w = malloc(sizeof(*w));
    w->data = c;
    uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

static void send_message(lg_conn *c) {
    int cap = c->lg->o.inflight;
    c->sent_at[(c->head + c->count) % cap] = now_us();
    c->count++;
    send_raw(c, c->lg->frame, c->lg->frame_len);
}

static void on_close(uv_handle_t *h) {}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    lg_conn *c = s->data;
    lg *g = c->lg;
    if (n < 0) {
        if (c->open) g->errors++;
        c->open = 0;
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    c->rlen += (size_t)n;
    size_t off = 0;
    if (!c->open) {
        char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (!end) return;
        if (strncmp(c->rbuf, "HTTP/1.1 101", 12) != 0) {
            g->errors++;
            uv_close((uv_handle_t *)s, on_close);
            return;
        }
        c->open = 1;
        g->opened++;
        off = (size_t)(end + 4 - c->rbuf);
        for (int i = 0; i < g->o.inflight; i++) send_message(c);
    }
    uint64_t t = now_us();
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
        int opcode = p[0] & 0x0f;
        off += hdr + len;
        int reply = opcode == 0x1 || opcode == 0x2;
        if (reply && g->o.expect)
            reply = memmem(p + hdr, (size_t)len, g->o.expect, strlen(g->o.expect)) != NULL;
        if (reply) {
            if (c->count > 0) {
                uint64_t sent = c->sent_at[c->head];
                c->head = (c->head + 1) % g->o.inflight;
                c->count--;
                if (g->measuring) {
                    g->received++;
                    hist_add(&g->h, t - sent);
                }
            }
            send_message(c);
        }
    }
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
}

static void on_request_written(uv_write_t *w, int status) {
    free(w->data);
    free(w);
}

static void on_connect(uv_connect_t *req, int status) {
    lg_conn *c = req->data;
    if (status < 0) {
        c->lg->errors++;
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->lg->o.room_per_conn) {
        char head[1024];
        int n = snprintf(head, sizeof(head),
                         "GET %s?userId=lg%d&roomId=lg%d HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n",
                         c->lg->o.path, (int)(c - c->lg->conns), (int)(c - c->lg->conns), c->lg->o.host,
                         c->lg->o.port);
        char *copy = malloc((size_t)n);
        memcpy(copy, head, (size_t)n);
        uv_buf_t b = uv_buf_init(copy, (unsigned)n);
        uv_write_t *w = malloc(sizeof(*w));
        w->data = copy;
        uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_request_written);
        return;
    }
    send_raw(c, c->lg->request, c->lg->request_len);
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
    for (char *tok = strtok(p + 2, " "); tok; tok = strtok(NULL, " ")) {
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

static double cpu0, rss0;

static void on_timer(uv_timer_t *t) {
    lg *g = t->data;
    if (!g->measuring) {
        g->measuring = 1;
        g->t_start = now_us();
        if (g->o.server_pid) read_proc(g->o.server_pid, &cpu0, &rss0);
        uv_timer_start(t, on_timer, (uint64_t)(g->o.duration * 1000), 0);
        return;
    }
    g->measuring = 0;
    g->t_end = now_us();
    uv_stop(g->loop);
}

int main(int argc, char **argv) {
    lg g;
    memset(&g, 0, sizeof(g));
    g.o = (lg_opts){.host = "127.0.0.1", .path = "/staging", .label = "server", .port = 8080,
                    .conns = 50, .inflight = 8, .size = 32, .duration = 5, .warmup = 1};
    static struct option longopts[] = {
        {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},     {"path", 1, 0, 'P'},
        {"conns", 1, 0, 'c'},    {"inflight", 1, 0, 'k'}, {"size", 1, 0, 's'},
        {"duration", 1, 0, 'd'}, {"server-pid", 1, 0, 'S'}, {"label", 1, 0, 'l'},
        {"warmup", 1, 0, 'w'},   {"message", 1, 0, 'm'}, {"expect", 1, 0, 'e'},
        {"room-per-conn", 0, 0, 'r'}, {0, 0, 0, 0}};
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
        default:
            fprintf(stderr, "usage: wsgate-loadgen [--host H] [--port N] [--path P] [--conns N] "
                            "[--inflight K] [--size BYTES] [--duration S] [--server-pid PID]\n");
            return 2;
        }
    }
    if (g.o.size > 65535 || g.o.inflight < 1 || g.o.conns < 1) {
        fprintf(stderr, "wsgate-loadgen: size must be <= 65535, inflight and conns >= 1\n");
        return 2;
    }
    if (g.o.message) g.o.size = (int)strlen(g.o.message);
    /* One masked text frame: the message, or `size` bytes of 'x' (mask key 0x37fa213d). */
    size_t hdr = g.o.size < 126 ? 6 : 8;
    g.frame_len = hdr + (size_t)g.o.size;
    g.frame = malloc(g.frame_len);
    unsigned char *f = (unsigned char *)g.frame;
    f[0] = 0x81;
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    if (g.o.size < 126) {
        f[1] = (unsigned char)(0x80 | g.o.size);
        memcpy(f + 2, key, 4);
    } else {
        f[1] = 0x80 | 126;
        f[2] = (unsigned char)(g.o.size >> 8);
        f[3] = (unsigned char)g.o.size;
        memcpy(f + 4, key, 4);
    }
    for (int i = 0; i < g.o.size; i++)
        f[hdr + i] = (unsigned char)((g.o.message ? g.o.message[i] : 'x') ^ key[i % 4]);

    char req[1024];
    g.request_len = (size_t)snprintf(req, sizeof(req),
                                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                     "Sec-WebSocket-Version: 13\r\n\r\n",
                                     g.o.path, g.o.host, g.o.port);
    g.request = req;

    g.loop = uv_default_loop();
    struct sockaddr_in addr;
    uv_ip4_addr(g.o.host, g.o.port, &addr);
    g.conns = calloc((size_t)g.o.conns, sizeof(lg_conn));
    for (int i = 0; i < g.o.conns; i++) {
        lg_conn *c = &g.conns[i];
        c->lg = &g;
        c->sent_at = calloc((size_t)g.o.inflight, sizeof(uint64_t));
        uv_tcp_init(g.loop, &c->tcp);
        uv_tcp_nodelay(&c->tcp, 1);
        c->tcp.data = c;
        c->connect_req.data = c;
        uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&addr, on_connect);
    }
    uv_timer_init(g.loop, &g.timer);
    g.timer.data = &g;
    uv_timer_start(&g.timer, on_timer, (uint64_t)g.o.warmup * 1000, 0);
    uv_run(g.loop, UV_RUN_DEFAULT);

    double secs = (double)(g.t_end - g.t_start) / 1e6;
    double cpu1 = 0, rss1 = 0, cpu = 0;
    if (g.o.server_pid && read_proc(g.o.server_pid, &cpu1, &rss1) == 0) cpu = cpu1 - cpu0;
    double rate = (double)g.received / secs;
    printf("%-10s echo conns=%d inflight=%d size=%d: %.0f msg/s, p50 %.0f us, p90 %.0f us, "
           "p99 %.0f us, p99.9 %.0f us, errors %llu, server cpu %.2f s (%.0f msg per cpu-s), rss %.1f MB\n",
           g.o.label, g.o.conns, g.o.inflight, g.o.size, rate, hist_pct(&g.h, 50), hist_pct(&g.h, 90),
           hist_pct(&g.h, 99), hist_pct(&g.h, 99.9), (unsigned long long)g.errors, cpu,
           cpu > 0 ? (double)g.received / cpu : 0, rss1);
    printf("{\"label\":\"%s\",\"workload\":\"echo\",\"conns\":%d,\"inflight\":%d,\"size\":%d,"
           "\"seconds\":%.3f,\"messages\":%llu,\"rate\":%.1f,\"p50_us\":%.0f,\"p90_us\":%.0f,"
           "\"p99_us\":%.0f,\"p999_us\":%.0f,\"errors\":%llu,\"server_cpu_s\":%.3f,"
           "\"per_cpu_s\":%.1f,\"server_rss_mb\":%.1f,\"opened\":%llu}\n",
           g.o.label, g.o.conns, g.o.inflight, g.o.size, secs, (unsigned long long)g.received, rate,
           hist_pct(&g.h, 50), hist_pct(&g.h, 90), hist_pct(&g.h, 99), hist_pct(&g.h, 99.9),
           (unsigned long long)g.errors, cpu, cpu > 0 ? (double)g.received / cpu : 0, rss1,
           (unsigned long long)g.opened);
    return g.opened == (uint64_t)g.o.conns && g.received > 0 ? 0 : 1;
}
