/* wsgate-loadgen: a WebSocket load generator on libuv, for loopback
 * benchmarks of wsgate and its peers. Five workloads (--workload):
 *
 * echo (default): N connections (--conns), each keeping K messages of P
 * bytes in flight (--inflight, --size); every echoed message is timed from
 * its send and answered with a new one. Once every connection is open,
 * --warmup seconds pass, then --duration seconds are measured. Reports
 * throughput and latency percentiles (p50/p90/p99/p99.9).
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
 * connects with ?roomId=room<r>&userId=lg<r*M+j>). Once every member has its
 * welcome, the first member of each room publishes
 * {"type":"chat","message":"<send-time-ns>:<pad>"} at --rate messages/s
 * (per room; the chat's text is --size bytes). Every delivery to every
 * member (the publisher included) is timed from the send time parsed out of
 * the chat's "message" field. Only messages sent inside the measured window
 * (after --warmup) count; after it, publishing stops and deliveries are
 * drained for up to --drain seconds (5), so lost deliveries show up as
 * "missing"; a server that falls behind is rated over the time to its last
 * delivery, its CPU read then. Reports deliveries/s and latency percentiles.
 *
 * durable: stored-then-broadcast chat at rising rates. Rooms and members as
 * in fanout; --rates "1000,5000,10000,20000,50000" lists total chats/s
 * across all rooms, one step per rate (each publisher sends rate/R). Each
 * step publishes for --warmup + --duration seconds, measures the chats sent
 * in the --duration window, then stops publishing and drains (--drain) so
 * the next step starts from an idle server. Per step: offered chats/s,
 * achieved stored+broadcast chats/s (chats of the window that came back to
 * their own publisher: the server echoes a chat to its sender after the
 * commit), deliveries/s to all members, p50/p90/p99/p99.9 latency of every
 * delivery, missing deliveries, and the continuity of each member's "seq"
 * (every chat broadcast carries one, +1 per message in a room: gaps and
 * out-of-order counts). Stepping stops at the first step the server does
 * not sustain: achieved < 90% of offered, p99 > 1 s, or more than 0.1% of
 * the deliveries missing (or the load generator itself sent < 90% of the
 * offered rate: the reason says so). Prints a table line and a JSON line
 * per step ("workload":"durable","step":k,"offered","rate",...), then a
 * summary table line and JSON line ("summary":true, "rate": achieved
 * chats/s at the highest sustained step, "max_sustained_offered",
 * "stopped_at", "stop_reason").
 *
 * storm: open and complete as many handshakes as possible for --duration
 * seconds (after --warmup) with at most --conns in progress; each
 * connection is closed (close frame, then the server's FIN) right after its
 * 101, or after the first frame containing --expect (e.g.
 * '"type":"welcome"') when given. Reports handshakes/s and errors.
 *
 * idle: open --conns connections (in --rooms rooms; ready at the 101, or at
 * the first frame containing --expect), hold them idle for --duration
 * seconds, and report the growth of the server's RSS per connection (needs
 * --server-pid).
 *
 * All workloads: --sources K binds client sockets to 127.0.0.1 .. 127.0.0.K
 * (round robin; IP_BIND_ADDRESS_NO_PORT, so that the port is picked at
 * connect) so that N may exceed the ~28k ephemeral ports of one address.
 * The soft RLIMIT_NOFILE is raised to the hard limit; one process takes at
 * most (hard limit - 100) connections. --procs P (or, without it, more
 * connections than one process may hold) forks P child processes, each
 * with its share of the connections (fanout and durable: whole rooms, the
 * publishing rate splitting with them); the parent holds no connection.
 * Every child reports "connected" over a pipe; the parent then starts every
 * child's round (each durable step is a round) at once, and each child
 * sends back its counters and latency histogram (a binary blob) when its
 * round ends. The parent sums throughput and errors, merges the histograms,
 * and reads the server's CPU and RSS itself, once, over the same window
 * (the first child's window start to the last child's end). At most
 * --open-window (256) handshakes are in progress per process while
 * connections are being opened; opening gives up after --open-timeout
 * seconds (60). Given the server's PID (--server-pid), server CPU seconds
 * and RSS are read from /proc; --server-pid A,B,C sums them over several
 * processes, and --ports A,B,C spreads the connections over several
 * servers (connection i, i.e. member i of a room workload, dials the
 * (i mod n)-th): a cluster's nodes, as bench/cluster_fanout.sh runs them. --label names the server in the output.
 * Output: one table line and one JSON line (durable: one of each per step,
 * plus the summary); every JSON line has "procs", and table lines show
 * procs=P when P > 1. Every run stops by itself: each process has a
 * watchdog that ends it at open-timeout + rounds x (warmup + duration +
 * drain + 2) + 15 s at the latest (drain: fanout and durable only), the
 * parent 10 s later (ending its children); a child whose parent goes away
 * exits.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* Linux 4.2 */
#endif

enum { W_ECHO, W_FANOUT, W_STORM, W_IDLE, W_DURABLE, W_COUNT };
static const char *const workload_names[W_COUNT] = {"echo", "fanout", "storm", "idle", "durable"};

/* Who runs the rounds: one process alone, a child of a parent, or the
 * parent of several children. */
enum { MODE_SINGLE, MODE_CHILD, MODE_PARENT };

#define MAX_RATES   32
#define MAX_PROCS   256
#define FD_HEADROOM 100
#define MAX_NODES   16 /* --ports, --server-pid: several servers (a cluster's nodes) */

typedef struct lg_opts {
    const char *host, *path, *label;
    const char *message; /* payload text; default: `size` bytes of 'x' */
    const char *expect;  /* only replies containing this count (NULL: all) */
    int room_per_conn;   /* connect as user lgN in room lgN */
    int port, conns, inflight, size, warmup;
    double duration;
    int server_pid;
    int workload;
    int rooms, members;      /* fanout, durable (rooms also spreads storm and idle) */
    double rate;             /* fanout: messages/s per room */
    double rates[MAX_RATES]; /* durable: total chats/s, one step each */
    int nrates;
    double drain; /* fanout, durable: s to wait for late deliveries */
    int sources, sources_set;
    int open_window;      /* handshakes in progress while opening */
    double open_timeout;  /* s to get every connection open */
    int procs;            /* --procs (0: as many as the descriptors need) */
    int ports[MAX_NODES]; /* --ports: connection i dials ports[i % nports] (0: --port) */
    int nports;
    int pids[MAX_NODES]; /* --server-pid A,B,...: CPU and RSS summed over them */
    int npids;
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

/* Everything a round produces: what a child sends to its parent (as is, a
 * binary blob: parent and children are the same program) and what the
 * parent adds up. Counters marked "round" restart with every round. */
typedef struct lg_stats {
    uint64_t opened;                 /* 101s received while opening */
    uint64_t ready;                  /* connections past the welcome (or the 101) */
    uint64_t failed;                 /* connections that failed while opening */
    uint64_t errors;                 /* transport errors and error frames, whole run */
    uint64_t server_errors;          /* {"type":"error"} frames (fanout, durable), whole run */
    uint64_t seq_gaps;               /* chats skipped in a member's seq, whole run */
    uint64_t seq_disorder;           /* a seq not above the member's last, whole run */
    uint64_t no_seq;                 /* chats without a seq, whole run */
    uint64_t received;               /* round, echo: replies in the window */
    uint64_t sent_window;            /* round, fanout/durable: chats sent in the window */
    uint64_t delivered_window;       /* round: deliveries of those chats */
    uint64_t echoed;                 /* round, durable: of those, back at their publisher */
    uint64_t deliveries_all;         /* round: every chat frame */
    uint64_t bad_deliveries;         /* round: chats whose message had no send time */
    uint64_t attempts;               /* storm: connections started */
    uint64_t handshakes;             /* round, storm: completed in the window */
    uint64_t t_open0_ns, t_open1_ns; /* opening started, every connection ready */
    uint64_t t_start_ns, t_end_ns;   /* round: the measured window */
    uint64_t t_last_ns;              /* round: the last counted delivery */
    hist h;                          /* round */
} lg_stats;

/* Restart the round's counters. */
static void stats_new_round(lg_stats *s) {
    s->received = s->sent_window = s->delivered_window = s->echoed = 0;
    s->deliveries_all = s->bad_deliveries = s->handshakes = 0;
    s->t_start_ns = s->t_end_ns = s->t_last_ns = 0;
    memset(&s->h, 0, sizeof(s->h));
}

static uint64_t min_nz(uint64_t a, uint64_t b) { return !a ? b : !b ? a : a < b ? a : b; }
static uint64_t max_u(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* Add a child's round to the parent's sum: counts add up, histograms merge,
 * the window spans from the first start to the last end. */
static void stats_merge(lg_stats *d, const lg_stats *s) {
    d->opened += s->opened;
    d->ready += s->ready;
    d->failed += s->failed;
    d->errors += s->errors;
    d->server_errors += s->server_errors;
    d->seq_gaps += s->seq_gaps;
    d->seq_disorder += s->seq_disorder;
    d->no_seq += s->no_seq;
    d->received += s->received;
    d->sent_window += s->sent_window;
    d->delivered_window += s->delivered_window;
    d->echoed += s->echoed;
    d->deliveries_all += s->deliveries_all;
    d->bad_deliveries += s->bad_deliveries;
    d->attempts += s->attempts;
    d->handshakes += s->handshakes;
    d->t_open0_ns = min_nz(d->t_open0_ns, s->t_open0_ns);
    d->t_open1_ns = max_u(d->t_open1_ns, s->t_open1_ns);
    d->t_start_ns = min_nz(d->t_start_ns, s->t_start_ns);
    d->t_end_ns = max_u(d->t_end_ns, s->t_end_ns);
    d->t_last_ns = max_u(d->t_last_ns, s->t_last_ns);
    for (int i = 0; i < HIST_POW * HIST_SUB; i++) d->h.b[i] += s->h.b[i];
    d->h.n += s->h.n;
}

/* Connection states. */
enum { CS_IDLE, CS_CONNECTING, CS_UPGRADED, CS_READY, CS_CLOSING, CS_CLOSED };

typedef struct lg_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    struct lg *lg;
    int idx; /* global index of the connection; storm: attempt number for the query */
    int state;
    int in_use;    /* the tcp handle is initialised and not yet closed */
    int counted;   /* storm: handshake counted */
    int got_close; /* storm: the server's close frame arrived */
    char *rbuf;
    size_t rlen, rcap;
    uint64_t *sent_at; /* echo: ring of send times of in-flight messages */
    int head, count;
    int64_t last_seq; /* fanout/durable: the last chat seq seen (-1: none yet) */
} lg_conn;

/* Messages between parent and children, over one pipe each way. */
enum { MSG_READY = 1, MSG_START, MSG_END }; /* child -> parent, each followed by len bytes */
enum { CMD_GO = 1, CMD_QUIT };              /* parent -> child */
typedef struct ctl_msg {
    uint32_t type, round;
    uint64_t len;
} ctl_msg;
typedef struct ctl_cmd {
    uint32_t cmd, round;
} ctl_cmd;

/* Durable: what the controller keeps of one step. */
typedef struct step_result {
    double offered, rate, delivery_rate, p50, p90, p99, p999, cpu, per;
    uint64_t missing;
} step_result;

typedef struct lg {
    lg_opts o;
    int mode, procs, proc_id;
    int conn_base;         /* global index of conns[0] */
    int room_base, nrooms; /* fanout/durable: this process's rooms */
    uv_loop_t *loop;
    lg_conn *conns;
    int nconns;      /* this process's connections */
    int total_conns; /* across every process */
    char *frame;     /* echo: one masked client frame, sent over and over */
    size_t frame_len;
    struct sockaddr_in dst;
    struct sockaddr_in dsts[MAX_NODES]; /* --ports */
    struct sockaddr_in *src;            /* sources, or NULL: no bind */
    lg_stats st;
    int next_open, opening;
    int all_opened; /* the opening phase is over */
    int measuring, stopping, round_open, round;
    double room_rate; /* fanout/durable: chats/s per room in this round */
    uv_timer_t timer, pub_timer, watchdog;
    uv_poll_t ctl_poll;
    int ctl_in, ctl_out; /* child: commands in, messages out */
    uint64_t *room_sent;
    uint64_t pub_t0; /* ns */
    int storm_running;
    double cpu0, rss0, cpu1, rss1; /* server /proc readings around the window */
    /* the controller (single process or parent) */
    int exit_code;
    uint64_t prev_errors, prev_gaps, prev_disorder;
    int best_step, steps_run;
    step_result best;
    double stopped_at;
    char stop_reason[160];
    uint64_t total_missing;
} lg;

static lg g; /* the histogram is large */
static char who[32] = "wsgate-loadgen";

__attribute__((format(printf, 1, 2))) static void lg_warn(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", who, line);
}

static int room_workload(int w) { return w == W_FANOUT || w == W_DURABLE; }

static uint64_t now_ns(void) { return uv_hrtime(); }
static const unsigned char mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

static void start_connection(lg *l, lg_conn *c);
static void conn_ready(lg_conn *c);
static void round_done(lg *l);

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
    (void)sz;
    lg_conn *c = h->data;
    if (c->rcap - c->rlen < 8192) {
        c->rcap = c->rcap ? c->rcap * 2 : 16384;
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
    if (status < 0 && status != UV_ECANCELED) q->c->lg->st.errors++;
    free(q);
}

/* Write now if the socket takes it, else queue a copy. */
static void send_raw(lg_conn *c, const char *data, size_t len) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)len) return;
    if (r < 0 && r != UV_EAGAIN) {
        c->lg->st.errors++;
        return;
    }
    size_t done = r > 0 ? (size_t)r : 0;
    queued_write *q = malloc(sizeof(*q) + len - done);
    q->c = c;
    memcpy(q->data, data + done, len - done);
    b = uv_buf_init(q->data, (unsigned)(len - done));
    if (uv_write(&q->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        c->lg->st.errors++;
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
    c->sent_at[(c->head + c->count) % cap] = now_ns() / 1000;
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

static void proc_mark(lg *l, double *cpu, double *rss) {
    *cpu = 0;
    *rss = 0;
    for (int i = 0; i < l->o.npids; i++) {
        double c = 0, r = 0;
        if (read_proc(l->o.pids[i], &c, &r) == 0) {
            *cpu += c;
            *rss += r;
        }
    }
}

/* ---- parent/child pipes ---- */

static int write_full(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_full(int fd, void *p, size_t n) {
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Child: one message to the parent (the pipe stays blocking). */
static void child_send(lg *l, uint32_t type, const void *payload, size_t len) {
    ctl_msg m = {.type = type, .round = (uint32_t)l->round, .len = len};
    if (write_full(l->ctl_out, &m, sizeof(m)) != 0 ||
        (len && write_full(l->ctl_out, payload, len) != 0)) {
        lg_warn("the parent is gone; exiting");
        _exit(4);
    }
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

static void open_more(lg *l) {
    while (l->opening < l->o.open_window && l->next_open < l->nconns) {
        l->opening++;
        start_connection(l, &l->conns[l->next_open++]);
    }
}

static void all_open(lg *l);

/* A connection that will never be ready (opening phase of echo, fanout,
 * durable, idle). */
static void open_failed(lg_conn *c) {
    lg *l = c->lg;
    l->st.failed++;
    l->st.errors++;
    l->opening--;
    open_more(l);
    if (l->st.ready + l->st.failed == (uint64_t)l->nconns) all_open(l);
}

static void on_storm_closed(uv_handle_t *h);

static void on_plain_closed(uv_handle_t *h) {
    lg_conn *c = h->data;
    c->in_use = 0;
    c->state = CS_CLOSED;
}

static void conn_close(lg_conn *c) {
    if (!c->in_use || uv_is_closing((uv_handle_t *)&c->tcp)) return;
    uv_close((uv_handle_t *)&c->tcp,
             c->lg->o.workload == W_STORM ? on_storm_closed : on_plain_closed);
}

/* storm: the handshake is complete; count it and close (the server ends TCP). */
static void storm_done(lg_conn *c) {
    lg *l = c->lg;
    if (l->measuring) l->st.handshakes++;
    c->counted = 1;
    c->state = CS_CLOSING;
    static const char code[2] = {0x03, (char)0xe8}; /* 1000 */
    send_frame(c, 0x8, code, 2);
}

static void conn_ready(lg_conn *c) {
    lg *l = c->lg;
    if (l->o.workload == W_STORM) {
        storm_done(c);
        return;
    }
    c->state = CS_READY;
    l->st.ready++;
    if (l->st.ready + l->st.failed == (uint64_t)l->nconns) all_open(l);
}

/* Every window chat has reached every member of its room. */
static int all_delivered(const lg *l) {
    return l->st.delivered_window >= l->st.sent_window * (uint64_t)l->o.members;
}

/* fanout/durable: a chat frame reached member c. */
static void on_delivery(lg_conn *c, const char *p, size_t len, uint64_t t_ns) {
    lg *l = c->lg;
    lg_stats *s = &l->st;
    s->deliveries_all++;
    const char *q = json_value(p, len, "seq");
    if (q && *q >= '0' && *q <= '9') {
        int64_t seq = strtoll(q, NULL, 10);
        if (c->last_seq >= 0) {
            if (seq > c->last_seq + 1) s->seq_gaps += (uint64_t)(seq - c->last_seq - 1);
            else if (seq <= c->last_seq) s->seq_disorder++;
        }
        c->last_seq = seq;
    } else {
        s->no_seq++;
    }
    const char *v = json_value(p, len, "message");
    if (!v || *v != '"') {
        s->bad_deliveries++;
        return;
    }
    uint64_t sent = strtoull(v + 1, NULL, 10);
    if (!s->t_start_ns || sent < s->t_start_ns || (s->t_end_ns && sent > s->t_end_ns))
        return; /* outside the window */
    s->delivered_window++;
    if (c->idx % l->o.members == 0) s->echoed++; /* the publisher's own chat */
    hist_add(&s->h, t_ns > sent ? (t_ns - sent) / 1000 : 0);
    if (t_ns > s->t_last_ns) s->t_last_ns = t_ns;
    if (!l->measuring && l->stopping && l->round_open && all_delivered(l)) round_done(l);
}

static void on_frame(lg_conn *c, int opcode, char *payload, size_t len, uint64_t t_ns) {
    lg *l = c->lg;
    if (opcode == 0x9) { /* ping: pong */
        send_frame(c, 0xA, payload, len);
        return;
    }
    if (opcode == 0x8) {
        if (c->state == CS_CLOSING) {
            c->got_close = 1;
        } else {
            if (!l->stopping) l->st.errors++;
            if (c->state != CS_READY && l->o.workload != W_STORM) {
                c->state = CS_CLOSING;
                open_failed(c);
            }
            c->state = CS_CLOSING;
        }
        return;
    }
    if (opcode != 0x1 && opcode != 0x2) return;
    switch (l->o.workload) {
    case W_ECHO: {
        int reply = 1;
        if (l->o.expect) reply = memmem(payload, len, l->o.expect, strlen(l->o.expect)) != NULL;
        if (!reply) return;
        if (c->count > 0) {
            uint64_t sent = c->sent_at[c->head];
            c->head = (c->head + 1) % l->o.inflight;
            c->count--;
            if (l->measuring) {
                l->st.received++;
                uint64_t t_us = t_ns / 1000;
                hist_add(&l->st.h, t_us > sent ? t_us - sent : 0);
            }
        }
        if (!l->stopping) send_message(c);
        return;
    }
    case W_FANOUT:
    case W_DURABLE:
        if (c->state == CS_UPGRADED) {
            if (json_type_is(payload, len, "welcome")) conn_ready(c);
            return;
        }
        if (json_type_is(payload, len, "chat")) {
            on_delivery(c, payload, len, t_ns);
        } else if (json_type_is(payload, len, "error")) {
            l->st.server_errors++;
            l->st.errors++;
        }
        return;
    case W_STORM:
    case W_IDLE:
        if (c->state == CS_UPGRADED && l->o.expect &&
            memmem(payload, len, l->o.expect, strlen(l->o.expect)))
            conn_ready(c);
        return;
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    (void)buf; /* c->rbuf */
    lg_conn *c = s->data;
    lg *l = c->lg;
    if (n < 0) {
        if (c->state == CS_CONNECTING) {
            if (l->o.workload == W_STORM) {
                if (l->measuring) l->st.errors++;
            } else {
                open_failed(c);
            }
        } else if (c->state == CS_UPGRADED && l->o.workload == W_STORM) {
            if (l->measuring) l->st.errors++;
        } else if (c->state == CS_UPGRADED) {
            open_failed(c);
        } else if (c->state != CS_CLOSING && !l->stopping) {
            l->st.errors++;
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
            if (l->o.workload == W_STORM) {
                if (l->measuring) l->st.errors++;
            } else {
                open_failed(c);
            }
            c->state = CS_CLOSED;
            conn_close(c);
            return;
        }
        off = (size_t)(end + 4 - c->rbuf);
        c->state = CS_UPGRADED;
        if (l->o.workload != W_STORM) {
            l->st.opened++;
            l->opening--;
            open_more(l);
        }
        if (l->o.workload == W_ECHO) {
            for (int i = 0; i < l->o.inflight; i++) send_message(c);
            conn_ready(c);
        } else if ((l->o.workload == W_STORM || l->o.workload == W_IDLE) && !l->o.expect) {
            conn_ready(c);
        }
    }
    uint64_t t_ns = now_ns();
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
        on_frame(c, p[0] & 0x0f, (char *)p + hdr, (size_t)len, t_ns);
        if (c->state == CS_CLOSED) return; /* closed by the frame */
    }
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
    if (c->rlen == 0 && l->o.workload == W_IDLE) { /* thousands of idle buffers add up */
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
}

static void on_connect(uv_connect_t *req, int status) {
    lg_conn *c = req->data;
    lg *l = c->lg;
    if (status < 0) {
        if (status == UV_ECANCELED) return;
        if (l->o.workload == W_STORM) {
            if (l->measuring) l->st.errors++;
        } else {
            open_failed(c);
        }
        c->state = CS_CLOSED;
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    char head[1024];
    const lg_opts *o = &l->o;
    char query[128] = "";
    if (o->workload == W_ECHO && o->room_per_conn)
        snprintf(query, sizeof(query), "?userId=lg%d&roomId=lg%d", c->idx, c->idx);
    else if (room_workload(o->workload))
        snprintf(query, sizeof(query), "?roomId=room%d&userId=lg%d", c->idx / o->members, c->idx);
    else if (o->workload == W_STORM || o->workload == W_IDLE)
        snprintf(query, sizeof(query), "?roomId=room%d&userId=lg%d", c->idx % o->rooms, c->idx);
    int n = snprintf(head, sizeof(head),
                     "GET %s%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     o->path, query, o->host, o->nports ? o->ports[c->idx % o->nports] : o->port);
    send_raw(c, head, (size_t)n);
}

/* A socket bound to c's source address, its port left to connect(): with
 * IP_BIND_ADDRESS_NO_PORT the kernel picks a port unique for the 4-tuple
 * (as for an unbound connect), where bind() to port 0 would search for a
 * port free for every destination: slow, and short of ports, once tens of
 * thousands are in use or in TIME_WAIT from an earlier run. */
static int bind_source(lg *l, lg_conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)); /* best effort */
    const struct sockaddr_in *src = &l->src[c->idx % l->o.sources];
    int r = 0;
    if (bind(fd, (const struct sockaddr *)src, sizeof(*src)) != 0) r = -errno;
    if (r == 0) r = uv_tcp_open(&c->tcp, fd);
    if (r != 0) close(fd);
    return r;
}

static void start_connection(lg *l, lg_conn *c) {
    c->lg = l;
    c->rlen = 0;
    c->head = c->count = 0;
    c->counted = c->got_close = 0;
    c->state = CS_CONNECTING;
    if (l->o.workload == W_STORM) /* unique user ids across processes */
        c->idx = (int)((l->st.attempts++ * (uint64_t)l->procs + (uint64_t)l->proc_id) % 1000000000);
    uv_tcp_init(l->loop, &c->tcp);
    c->in_use = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    c->tcp.data = c;
    c->connect_req.data = c;
    int r = 0;
    if (l->src) r = bind_source(l, c);
    if (r == 0)
        r = uv_tcp_connect(
            &c->connect_req, &c->tcp,
            (const struct sockaddr *)(l->o.nports ? &l->dsts[c->idx % l->o.nports] : &l->dst),
            on_connect);
    if (r < 0) {
        static int warned;
        if (!warned++) lg_warn("connect: %s", uv_strerror(r));
        if (l->o.workload == W_STORM) {
            if (l->measuring) l->st.errors++;
        } else {
            open_failed(c);
        }
        c->state = CS_CLOSED;
        conn_close(c);
    }
}

static void on_storm_closed(uv_handle_t *h) {
    lg_conn *c = h->data;
    lg *l = c->lg;
    c->in_use = 0;
    c->state = CS_CLOSED;
    if (l->storm_running) start_connection(l, c);
}

/* ---- phases ----
 * Opening (every workload but storm): open every connection, each ready at
 * its welcome (or 101). Then the rounds: one for echo, fanout, storm and
 * idle, one per rate for durable. A single process starts its first round
 * as soon as it is open; a child tells its parent and waits for the
 * parent's go, so that every child measures over the same window. */

static void on_end(uv_timer_t *t);
static void begin_round(lg *l, int round);
static int round_finished(lg *l, const lg_stats *s);
static void abort_run(lg *l, const lg_stats *s, const char *why);

static void start_measuring(lg *l) {
    l->measuring = 1;
    l->st.t_start_ns = now_ns();
    if (l->mode == MODE_CHILD) child_send(l, MSG_START, NULL, 0);
    else proc_mark(l, &l->cpu0, &l->rss0);
    uv_timer_start(&l->timer, on_end, (uint64_t)(l->o.duration * 1000), 0);
}

static void on_warm(uv_timer_t *t) { start_measuring(t->data); }

static void on_drained(uv_timer_t *t) { round_done(t->data); }

static void on_end(uv_timer_t *t) {
    lg *l = t->data;
    l->measuring = 0;
    l->stopping = 1;
    l->st.t_end_ns = now_ns();
    if (room_workload(l->o.workload)) {
        uv_timer_stop(&l->pub_timer);
        if (all_delivered(l)) {
            round_done(l);
            return;
        }
        uv_timer_start(&l->timer, on_drained, (uint64_t)(l->o.drain * 1000),
                       0); /* drain what is in flight */
        return;
    }
    round_done(l);
}

/* fanout/durable: `count` chats from the publisher of local room `room`,
 * in one write. */
static void publish(lg *l, int room, uint64_t count) {
    lg_conn *c = &l->conns[room * l->o.members];
    if (c->state != CS_READY || count == 0) return;
    size_t one = (size_t)l->o.size + 64 + 14;
    uint64_t most = 4194304 / one + 1; /* a loop that stalled does not catch up all at once */
    if (count > most) count = most;
    char *buf = malloc(one * count), msg[70000];
    size_t used = 0;
    for (uint64_t k = 0; k < count; k++) {
        int n = snprintf(msg, sizeof(msg),
                         "{\"type\":\"chat\",\"message\":\"%llu:", (unsigned long long)now_ns());
        int digits = n - 27;
        int pad = l->o.size - digits - 1;
        if (pad < 1) pad = 1;
        memset(msg + n, 'x', (size_t)pad);
        n += pad;
        memcpy(msg + n, "\"}", 2);
        n += 2;
        if (l->measuring) l->st.sent_window++;
        used += make_frame((unsigned char *)buf + used, 0x1, msg, (size_t)n);
    }
    send_raw(c, buf, used);
    free(buf);
}

static void on_pub(uv_timer_t *t) {
    lg *l = t->data;
    double el = (double)(now_ns() - l->pub_t0) * 1e-9 * l->room_rate;
    for (int r = 0; r < l->nrooms; r++) {
        /* rooms spread over the period */
        uint64_t due = (uint64_t)(el + (double)(l->room_base + r) / l->o.rooms);
        if (l->room_sent[r] < due) {
            publish(l, r, due - l->room_sent[r]);
            l->room_sent[r] = due;
        }
    }
}

static void on_idle_held(uv_timer_t *t) {
    lg *l = t->data;
    l->st.t_end_ns = now_ns();
    round_done(l);
}

static void begin_round(lg *l, int round) {
    const lg_opts *o = &l->o;
    l->round = round;
    l->round_open = 1;
    l->measuring = 0;
    l->stopping = 0;
    stats_new_round(&l->st);
    switch (o->workload) {
    case W_ECHO: /* the connections have been sending since they opened */
        uv_timer_start(&l->timer, on_warm, (uint64_t)o->warmup * 1000, 0);
        break;
    case W_STORM:
        l->storm_running = 1;
        for (int i = 0; i < l->nconns; i++) start_connection(l, &l->conns[i]);
        uv_timer_start(&l->timer, on_warm, (uint64_t)o->warmup * 1000, 0);
        break;
    case W_IDLE:
        l->st.t_start_ns = now_ns();
        uv_timer_start(&l->timer, on_idle_held, (uint64_t)(o->duration * 1000), 0);
        break;
    case W_FANOUT:
    case W_DURABLE:
        l->room_rate = o->workload == W_FANOUT ? o->rate : o->rates[round] / o->rooms;
        memset(l->room_sent, 0, sizeof(uint64_t) * (size_t)l->nrooms);
        l->pub_t0 = now_ns();
        uv_timer_start(&l->pub_timer, on_pub, 1, 1);
        uv_timer_start(&l->timer, on_warm, (uint64_t)o->warmup * 1000, 0);
        break;
    }
}

/* The round's numbers are final. */
static void round_done(lg *l) {
    if (!l->round_open) return;
    l->round_open = 0;
    l->measuring = 0;
    l->stopping = 1;
    l->storm_running = 0;
    uv_timer_stop(&l->timer);
    uv_timer_stop(&l->pub_timer);
    if (l->mode == MODE_CHILD) {
        child_send(l, MSG_END, &l->st, sizeof(l->st));
        return; /* the parent says what comes next */
    }
    proc_mark(l, &l->cpu1, &l->rss1);
    if (round_finished(l, &l->st)) begin_round(l, l->round + 1);
    else uv_stop(l->loop);
}

/* Every connection is ready or has failed (or the open timeout passed). */
static void all_open(lg *l) {
    if (l->all_opened) return;
    l->all_opened = 1;
    l->st.t_open1_ns = now_ns();
    uv_timer_stop(&l->timer);
    if (l->mode == MODE_CHILD) {
        child_send(l, MSG_READY, &l->st, sizeof(l->st));
        return;
    }
    if (room_workload(l->o.workload) && l->st.ready < (uint64_t)l->nconns) {
        char why[160];
        snprintf(why, sizeof(why), "only %llu of %d members joined; not publishing",
                 (unsigned long long)l->st.ready, l->nconns);
        proc_mark(l, &l->cpu1, &l->rss1);
        abort_run(l, &l->st, why);
        uv_stop(l->loop);
        return;
    }
    begin_round(l, 0);
}

static void on_open_timeout(uv_timer_t *t) {
    lg *l = t->data;
    lg_warn("open timeout: %llu of %d connections ready", (unsigned long long)l->st.ready,
            l->nconns);
    all_open(l);
}

static void on_watchdog(uv_timer_t *t) {
    (void)t;
    lg_warn("watchdog: the run did not finish in time, giving up");
    _exit(3);
}

/* Child: a command from the parent. */
static void on_ctl(uv_poll_t *p, int status, int events) {
    (void)status;
    (void)events;
    lg *l = p->data;
    ctl_cmd cmd;
    ssize_t r = read(l->ctl_in, &cmd, sizeof(cmd));
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r != (ssize_t)sizeof(cmd) || cmd.cmd == CMD_QUIT) _exit(r == (ssize_t)sizeof(cmd) ? 0 : 4);
    if (cmd.cmd == CMD_GO) begin_round(l, (int)cmd.round);
}

/* The rounds a run has, and the longest it may take. */
static int run_rounds(const lg_opts *o) { return o->workload == W_DURABLE ? o->nrates : 1; }

static double run_budget_s(const lg_opts *o) {
    double drain = room_workload(o->workload) ? o->drain : 0;
    return o->open_timeout + run_rounds(o) * (o->warmup + o->duration + drain + 2) + 15;
}

/* Run this process's connections (single process or child) until the end. */
static void run_loop(lg *l) {
    const lg_opts *o = &l->o;
    l->loop = uv_default_loop();
    l->conns = calloc((size_t)l->nconns, sizeof(lg_conn));
    for (int i = 0; i < l->nconns; i++) {
        l->conns[i].lg = l;
        l->conns[i].idx = l->conn_base + i;
        l->conns[i].last_seq = -1;
        if (o->workload == W_ECHO)
            l->conns[i].sent_at = calloc((size_t)o->inflight, sizeof(uint64_t));
    }
    if (room_workload(o->workload)) l->room_sent = calloc((size_t)l->nrooms, sizeof(uint64_t));
    uv_timer_init(l->loop, &l->timer);
    uv_timer_init(l->loop, &l->pub_timer);
    uv_timer_init(l->loop, &l->watchdog);
    l->timer.data = l->pub_timer.data = l->watchdog.data = l;
    uv_timer_start(&l->watchdog, on_watchdog, (uint64_t)(run_budget_s(o) * 1000), 0);
    if (l->mode == MODE_CHILD) {
        uv_poll_init(l->loop, &l->ctl_poll, l->ctl_in);
        l->ctl_poll.data = l;
        uv_poll_start(&l->ctl_poll, UV_READABLE, on_ctl);
    }

    l->st.t_open0_ns = now_ns();
    if (o->workload == W_STORM) { /* nothing to open */
        all_open(l);
    } else {
        if (o->workload == W_IDLE && l->mode == MODE_SINGLE) proc_mark(l, &l->cpu0, &l->rss0);
        open_more(l);
        if (l->nconns == 0) all_open(l);
        if (!l->all_opened)
            uv_timer_start(&l->timer, on_open_timeout, (uint64_t)(o->open_timeout * 1000), 0);
    }
    uv_run(l->loop, UV_RUN_DEFAULT);
}

/* ---- reports (single process, or the parent over its children's sums) ---- */

static double server_cpu(const lg *l) {
    return l->o.server_pid && l->cpu1 > 0 ? l->cpu1 - l->cpu0 : 0;
}

/* " procs=P" in table lines when the load came from several processes. */
static const char *procs_note(const lg *l) {
    static char b[32];
    b[0] = 0;
    if (l->procs > 1) snprintf(b, sizeof(b), " procs=%d", l->procs);
    return b;
}

static int report(lg *l, const lg_stats *s) {
    const lg_opts *o = &l->o;
    double secs = s->t_end_ns > s->t_start_ns ? (double)(s->t_end_ns - s->t_start_ns) / 1e9 : 0;
    /* fanout: a server that falls behind delivers the window's messages late;
     * its rate is over the time to the last delivery, its CPU up to then. */
    if (o->workload == W_FANOUT && s->t_start_ns && s->t_last_ns > s->t_end_ns)
        secs = (double)(s->t_last_ns - s->t_start_ns) / 1e9;
    double cpu = server_cpu(l);
    unsigned long long errors = (unsigned long long)s->errors;
    if (o->workload == W_ECHO || o->workload == W_FANOUT) {
        uint64_t count = o->workload == W_ECHO ? s->received : s->delivered_window;
        double rate = secs > 0 ? (double)count / secs : 0;
        double per = cpu > 0 ? (double)count / cpu : 0;
        double p50 = hist_pct(&s->h, 50), p90 = hist_pct(&s->h, 90), p99 = hist_pct(&s->h, 99),
               p999 = hist_pct(&s->h, 99.9);
        if (o->workload == W_ECHO) {
            printf(
                "%-10s echo conns=%d inflight=%d size=%d%s: %.0f msg/s, p50 %.0f us, p90 %.0f us, "
                "p99 %.0f us, p99.9 %.0f us, errors %llu, server cpu %.2f s (%.0f msg per cpu-s), "
                "rss %.1f MB\n",
                o->label, o->conns, o->inflight, o->size, procs_note(l), rate, p50, p90, p99, p999,
                errors, cpu, per, l->rss1);
            printf(
                "{\"label\":\"%s\",\"workload\":\"echo\",\"conns\":%d,\"inflight\":%d,\"size\":%d,"
                "\"seconds\":%.3f,\"messages\":%llu,\"rate\":%.1f,\"p50_us\":%.0f,\"p90_us\":%.0f,"
                "\"p99_us\":%.0f,\"p999_us\":%.0f,\"errors\":%llu,\"server_cpu_s\":%.3f,"
                "\"per_cpu_s\":%.1f,\"server_rss_mb\":%.1f,\"opened\":%llu,\"procs\":%d}\n",
                o->label, o->conns, o->inflight, o->size, secs, (unsigned long long)count, rate,
                p50, p90, p99, p999, errors, cpu, per, l->rss1, (unsigned long long)s->opened,
                l->procs);
            return s->opened == (uint64_t)o->conns && count > 0 ? 0 : 1;
        }
        unsigned long long expected = (unsigned long long)(s->sent_window * (uint64_t)o->members);
        unsigned long long missing =
            expected > s->delivered_window ? expected - (unsigned long long)s->delivered_window : 0;
        printf(
            "%-10s fanout rooms=%d members=%d rate=%g/s/room size=%d%s: %.0f deliveries/s "
            "(%llu of %llu, missing %llu), p50 %.0f us, p90 %.0f us, p99 %.0f us, p99.9 %.0f us, "
            "errors %llu, server cpu %.2f s (%.0f deliveries per cpu-s), rss %.1f MB\n",
            o->label, o->rooms, o->members, o->rate, o->size, procs_note(l), rate,
            (unsigned long long)count, expected, missing, p50, p90, p99, p999, errors, cpu, per,
            l->rss1);
        printf("{\"label\":\"%s\",\"workload\":\"fanout\",\"rooms\":%d,\"members\":%d,\"conns\":%d,"
               "\"rate_per_room\":%g,\"size\":%d,\"seconds\":%.3f,\"sent\":%llu,\"expected\":%llu,"
               "\"deliveries\":%llu,\"missing\":%llu,\"rate\":%.1f,\"p50_us\":%.0f,\"p90_us\":%.0f,"
               "\"p99_us\":%.0f,\"p999_us\":%.0f,\"errors\":%llu,\"seq_gaps\":%llu,\"seq_"
               "disorder\":%llu,"
               "\"server_cpu_s\":%.3f,\"per_cpu_s\":%.1f,\"server_rss_mb\":%.1f,\"opened\":%llu,"
               "\"unparsed\":%llu,\"procs\":%d}\n",
               o->label, o->rooms, o->members, l->total_conns, o->rate, o->size, secs,
               (unsigned long long)s->sent_window, expected, (unsigned long long)count, missing,
               rate, p50, p90, p99, p999, errors, (unsigned long long)s->seq_gaps,
               (unsigned long long)s->seq_disorder, cpu, per, l->rss1,
               (unsigned long long)s->opened, (unsigned long long)s->bad_deliveries, l->procs);
        return s->failed == 0 && count > 0 ? 0 : 1;
    }
    if (o->workload == W_STORM) {
        double rate = secs > 0 ? (double)s->handshakes / secs : 0;
        double per = cpu > 0 ? (double)s->handshakes / cpu : 0;
        printf("%-10s storm in-progress=%d%s%s%s: %.0f handshakes/s (%llu in %.1f s), errors %llu, "
               "server cpu %.2f s (%.0f handshakes per cpu-s), rss %.1f MB\n",
               o->label, o->conns, o->expect ? " until " : "", o->expect ? o->expect : "",
               procs_note(l), rate, (unsigned long long)s->handshakes, secs, errors, cpu, per,
               l->rss1);
        printf("{\"label\":\"%s\",\"workload\":\"storm\",\"conns\":%d,\"seconds\":%.3f,"
               "\"handshakes\":%llu,"
               "\"attempts\":%llu,\"rate\":%.1f,\"errors\":%llu,\"server_cpu_s\":%.3f,\"per_cpu_"
               "s\":%.1f,"
               "\"server_rss_mb\":%.1f,\"procs\":%d}\n",
               o->label, o->conns, secs, (unsigned long long)s->handshakes,
               (unsigned long long)s->attempts, rate, errors, cpu, per, l->rss1, l->procs);
        return s->handshakes > 0 ? 0 : 1;
    }
    /* idle */
    double open_s =
        s->t_open1_ns > s->t_open0_ns ? (double)(s->t_open1_ns - s->t_open0_ns) / 1e9 : 0;
    double bpc = s->ready > 0 ? (l->rss1 - l->rss0) * 1048576.0 / (double)s->ready : 0;
    printf("%-10s idle conns=%d sources=%d%s: %llu open in %.1f s, server rss %.1f -> %.1f MB "
           "after %.0f s: "
           "%.0f bytes per connection, errors %llu\n",
           o->label, l->total_conns, o->sources, procs_note(l), (unsigned long long)s->ready,
           open_s, l->rss0, l->rss1, secs, bpc, errors);
    printf(
        "{\"label\":\"%s\",\"workload\":\"idle\",\"conns\":%d,\"sources\":%d,\"opened\":%llu,"
        "\"open_seconds\":%.3f,\"held_seconds\":%.3f,\"rss_before_mb\":%.2f,\"rss_after_mb\":%.2f,"
        "\"bytes_per_conn\":%.0f,\"errors\":%llu,\"server_rss_mb\":%.1f,\"procs\":%d}\n",
        o->label, l->total_conns, o->sources, (unsigned long long)s->ready, open_s, secs, l->rss0,
        l->rss1, bpc, errors, l->rss1, l->procs);
    return s->ready == (uint64_t)l->total_conns && o->server_pid ? 0 : 1;
}

/* durable: the rates as a JSON array body, "1000,5000,...". */
static const char *rates_list(const lg_opts *o) {
    static char b[MAX_RATES * 24];
    size_t n = 0;
    b[0] = 0;
    for (int i = 0; i < o->nrates; i++)
        n += (size_t)snprintf(b + n, sizeof(b) - n, "%s%g", i ? "," : "", o->rates[i]);
    return b;
}

/* durable: report one step; returns 1 when the next step should run. */
static int durable_step(lg *l, const lg_stats *s) {
    const lg_opts *o = &l->o;
    int step = l->round;
    double offered = o->rates[step];
    double win = s->t_end_ns > s->t_start_ns ? (double)(s->t_end_ns - s->t_start_ns) / 1e9 : 0;
    double secs = win;
    if (s->t_start_ns && s->t_last_ns > s->t_end_ns)
        secs = (double)(s->t_last_ns - s->t_start_ns) / 1e9;
    double sent_rate = win > 0 ? (double)s->sent_window / win : 0;
    double rate = secs > 0 ? (double)s->echoed / secs : 0;
    double drate = secs > 0 ? (double)s->delivered_window / secs : 0;
    uint64_t expected = s->sent_window * (uint64_t)o->members;
    uint64_t missing = expected > s->delivered_window ? expected - s->delivered_window : 0;
    double cpu = server_cpu(l), per = cpu > 0 ? (double)s->echoed / cpu : 0;
    double p50 = hist_pct(&s->h, 50), p90 = hist_pct(&s->h, 90), p99 = hist_pct(&s->h, 99),
           p999 = hist_pct(&s->h, 99.9);
    unsigned long long errors = (unsigned long long)(s->errors - l->prev_errors),
                       gaps = (unsigned long long)(s->seq_gaps - l->prev_gaps),
                       disorder = (unsigned long long)(s->seq_disorder - l->prev_disorder);
    l->prev_errors = s->errors;
    l->prev_gaps = s->seq_gaps;
    l->prev_disorder = s->seq_disorder;
    const char *why = NULL;
    if (s->sent_window == 0 || sent_rate < 0.9 * offered)
        why = "the load generator sent < 90% of offered";
    else if (rate < 0.9 * offered) why = "achieved < 90% of offered";
    else if (p99 > 1e6) why = "p99 > 1 s";
    else if (missing * 1000 > expected) why = "more than 0.1% of the deliveries missing";
    l->steps_run++;
    l->total_missing += missing;
    printf("%-10s durable rooms=%d members=%d size=%d%s step %d/%d offered %.0f chats/s (sent "
           "%.0f/s): "
           "%.0f chats/s stored+broadcast (%llu of %llu back at the publisher), %.0f deliveries/s "
           "(missing %llu), p50 %.0f us, p90 %.0f us, p99 %.0f us, p99.9 %.0f us, errors %llu, seq "
           "gaps %llu, "
           "server cpu %.2f s (%.0f chats per cpu-s), rss %.1f MB: %s\n",
           o->label, o->rooms, o->members, o->size, procs_note(l), step + 1, o->nrates, offered,
           sent_rate, rate, (unsigned long long)s->echoed, (unsigned long long)s->sent_window,
           drate, (unsigned long long)missing, p50, p90, p99, p999, errors, gaps + disorder, cpu,
           per, l->rss1, why ? why : "sustained");
    printf("{\"label\":\"%s\",\"workload\":\"durable\",\"step\":%d,\"rooms\":%d,\"members\":%d,"
           "\"conns\":%d,"
           "\"size\":%d,\"offered\":%.1f,\"sent_rate\":%.1f,\"seconds\":%.3f,\"sent\":%llu,"
           "\"echoed\":%llu,"
           "\"rate\":%.1f,\"expected\":%llu,\"deliveries\":%llu,\"delivery_rate\":%.1f,\"missing\":"
           "%llu,"
           "\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,\"p999_us\":%.0f,\"errors\":%llu,"
           "\"server_errors\":%llu,\"seq_gaps\":%llu,\"seq_disorder\":%llu,\"server_cpu_s\":%.3f,"
           "\"per_cpu_s\":%.1f,\"server_rss_mb\":%.1f,\"sustained\":%s,\"procs\":%d}\n",
           o->label, step + 1, o->rooms, o->members, l->total_conns, o->size, offered, sent_rate,
           secs, (unsigned long long)s->sent_window, (unsigned long long)s->echoed, rate,
           (unsigned long long)expected, (unsigned long long)s->delivered_window, drate,
           (unsigned long long)missing, p50, p90, p99, p999, errors,
           (unsigned long long)s->server_errors, gaps, disorder, cpu, per, l->rss1,
           why ? "false" : "true", l->procs);
    fflush(stdout);
    if (why) {
        l->stopped_at = offered;
        snprintf(l->stop_reason, sizeof(l->stop_reason), "%s", why);
        return 0;
    }
    l->best_step = step;
    l->best = (step_result){.offered = offered,
                            .rate = rate,
                            .delivery_rate = drate,
                            .p50 = p50,
                            .p90 = p90,
                            .p99 = p99,
                            .p999 = p999,
                            .cpu = cpu,
                            .per = per,
                            .missing = missing};
    return step + 1 < o->nrates;
}

/* durable: the summary, the line run.sh compares. */
static int durable_summary(lg *l, const lg_stats *s) {
    const lg_opts *o = &l->o;
    const step_result *b = &l->best;
    int ok = l->best_step >= 0;
    if (!ok && !l->stop_reason[0]) snprintf(l->stop_reason, sizeof(l->stop_reason), "no step ran");
    char stop[256] = "every rate sustained";
    if (l->stopped_at > 0)
        snprintf(stop, sizeof(stop), "stopped at %.0f: %s", l->stopped_at, l->stop_reason);
    else if (l->stop_reason[0]) snprintf(stop, sizeof(stop), "%s", l->stop_reason);
    if (ok)
        printf("%-10s durable rooms=%d members=%d size=%d%s: max sustained %.0f chats/s offered: "
               "%.0f chats/s "
               "stored+broadcast, %.0f deliveries/s, p50 %.0f us, p90 %.0f us, p99 %.0f us, p99.9 "
               "%.0f us, "
               "%.0f chats per server cpu-s; %s\n",
               o->label, o->rooms, o->members, o->size, procs_note(l), b->offered, b->rate,
               b->delivery_rate, b->p50, b->p90, b->p99, b->p999, b->per, stop);
    else
        printf("%-10s durable rooms=%d members=%d size=%d%s: no rate sustained; %s\n", o->label,
               o->rooms, o->members, o->size, procs_note(l), stop);
    printf("{\"label\":\"%s\",\"workload\":\"durable\",\"summary\":true,\"rooms\":%d,\"members\":%"
           "d,\"conns\":%d,"
           "\"size\":%d,\"duration\":%g,\"rates\":[%s],\"steps_run\":%d,\"max_sustained_offered\":%"
           ".1f,"
           "\"rate\":%.1f,\"delivery_rate\":%.1f,\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,"
           "\"p999_us\":%.0f,\"server_cpu_s\":%.3f,\"per_cpu_s\":%.1f,\"stopped_at\":",
           o->label, o->rooms, o->members, l->total_conns, o->size, o->duration, rates_list(o),
           l->steps_run, ok ? b->offered : 0, ok ? b->rate : 0, ok ? b->delivery_rate : 0,
           ok ? b->p50 : 0, ok ? b->p90 : 0, ok ? b->p99 : 0, ok ? b->p999 : 0, ok ? b->cpu : 0,
           ok ? b->per : 0);
    if (l->stopped_at > 0) printf("%.1f", l->stopped_at);
    else printf("null");
    printf(",\"stop_reason\":\"%s\",\"missing\":%llu,\"errors\":%llu,\"server_errors\":%llu,\"seq_"
           "gaps\":%llu,"
           "\"seq_disorder\":%llu,\"no_seq\":%llu,\"opened\":%llu,\"server_rss_mb\":%.1f,\"procs\":"
           "%d}\n",
           l->stop_reason, (unsigned long long)l->total_missing, (unsigned long long)s->errors,
           (unsigned long long)s->server_errors, (unsigned long long)s->seq_gaps,
           (unsigned long long)s->seq_disorder, (unsigned long long)s->no_seq,
           (unsigned long long)s->opened, l->rss1, l->procs);
    return ok && s->failed == 0 ? 0 : 1;
}

/* A round is over with these numbers: report it; 1 when another round follows. */
static int round_finished(lg *l, const lg_stats *s) {
    if (l->o.workload == W_DURABLE) {
        if (durable_step(l, s)) return 1;
        l->exit_code = durable_summary(l, s);
        return 0;
    }
    l->exit_code = report(l, s);
    return 0;
}

/* The run cannot go on (members missing): report what there is. */
static void abort_run(lg *l, const lg_stats *s, const char *why) {
    lg_warn("%s", why);
    if (l->o.workload == W_DURABLE) {
        snprintf(l->stop_reason, sizeof(l->stop_reason), "%s", why);
        durable_summary(l, s);
    } else {
        report(l, s);
    }
    l->exit_code = 1;
}

/* ---- several processes: the parent ---- */

typedef struct child {
    pid_t pid;
    int cmd_fd, msg_fd; /* the parent's ends */
} child;

static child kids[MAX_PROCS];
static uint64_t parent_deadline_ns;

static void reap_children(lg *l, int grace_ms) {
    for (int k = 0; k < l->procs; k++) {
        if (!kids[k].pid) continue;
        int waited = 0;
        while (waitpid(kids[k].pid, NULL, WNOHANG) == 0) {
            if (waited >= grace_ms) {
                kill(kids[k].pid, SIGKILL);
                waitpid(kids[k].pid, NULL, 0);
                break;
            }
            usleep(10000);
            waited += 10;
        }
        kids[k].pid = 0;
    }
}

static void parent_fail(lg *l, const char *why, int k) {
    if (k >= 0) lg_warn("child %d: %s; ending the run", k, why);
    else lg_warn("%s; ending the run", why);
    reap_children(l, 0);
    exit(3);
}

static void parent_send(lg *l, uint32_t cmd, int round) {
    ctl_cmd c = {.cmd = cmd, .round = (uint32_t)round};
    for (int k = 0; k < l->procs; k++)
        if (write_full(kids[k].cmd_fd, &c, sizeof(c)) != 0 && cmd != CMD_QUIT)
            parent_fail(l, "gone", k);
}

/* Wait until every child has sent a message of `type` (its stats, into
 * out[k]). While waiting for the round's end, the first child to start its
 * window marks the start of the server's CPU window. */
static void parent_collect(lg *l, uint32_t type, lg_stats *out) {
    int have[MAX_PROCS] = {0}, left = l->procs, started = 0;
    while (left > 0) {
        struct pollfd pf[MAX_PROCS];
        int map[MAX_PROCS], n = 0;
        for (int k = 0; k < l->procs; k++)
            if (!have[k]) {
                pf[n] = (struct pollfd){.fd = kids[k].msg_fd, .events = POLLIN};
                map[n++] = k;
            }
        uint64_t now = now_ns();
        if (now >= parent_deadline_ns)
            parent_fail(l, "watchdog: the run did not finish in time", -1);
        int r = poll(pf, (nfds_t)n, (int)((parent_deadline_ns - now) / 1000000 + 1));
        if (r < 0 && errno != EINTR) parent_fail(l, "poll failed", -1);
        for (int i = 0; r > 0 && i < n; i++) {
            if (!pf[i].revents) continue;
            int k = map[i];
            ctl_msg m;
            if (read_full(kids[k].msg_fd, &m, sizeof(m)) != 0) parent_fail(l, "exited early", k);
            if (m.type == MSG_START && m.len == 0) {
                if (!started && type == MSG_END && l->o.workload != W_IDLE)
                    proc_mark(l, &l->cpu0, &l->rss0);
                started = 1;
                continue;
            }
            if (m.type != type || m.len != sizeof(lg_stats) ||
                read_full(kids[k].msg_fd, &out[k], sizeof(lg_stats)) != 0)
                parent_fail(l, "unexpected message", k);
            have[k] = 1;
            left--;
        }
    }
}

/* Process k's share: whole rooms for fanout/durable, else connections. */
static void slice(const lg_opts *o, int total, int procs, int k, int *conn_base, int *nconns,
                  int *room_base, int *nrooms) {
    if (room_workload(o->workload)) {
        int per = o->rooms / procs, extra = o->rooms % procs;
        *room_base = k * per + (k < extra ? k : extra);
        *nrooms = per + (k < extra);
        *conn_base = *room_base * o->members;
        *nconns = *nrooms * o->members;
        return;
    }
    int per = total / procs, extra = total % procs;
    *conn_base = k * per + (k < extra ? k : extra);
    *nconns = per + (k < extra);
    *room_base = 0;
    *nrooms = 0;
}

static int parent_run(lg *l) {
    const lg_opts *o = &l->o;
    if (o->workload == W_IDLE) proc_mark(l, &l->cpu0, &l->rss0); /* before any connection */
    fflush(stdout);
    fflush(stderr);
    pid_t me = getpid();
    for (int k = 0; k < l->procs; k++) {
        int cmdp[2], msgp[2];
        if (pipe(cmdp) != 0 || pipe(msgp) != 0) parent_fail(l, "pipe failed", -1);
        pid_t pid = fork();
        if (pid < 0) parent_fail(l, "fork failed", -1);
        if (pid == 0) {
            for (int j = 0; j < k; j++) {
                close(kids[j].cmd_fd);
                close(kids[j].msg_fd);
            }
            close(cmdp[1]);
            close(msgp[0]);
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* and the pipe's EOF ends it too */
            if (getppid() != me) _exit(4);
            l->mode = MODE_CHILD;
            l->proc_id = k;
            l->ctl_in = cmdp[0];
            l->ctl_out = msgp[1];
            slice(o, l->total_conns, l->procs, k, &l->conn_base, &l->nconns, &l->room_base,
                  &l->nrooms);
            snprintf(who, sizeof(who), "wsgate-loadgen[%d]", k);
            run_loop(l);
            _exit(0);
        }
        close(cmdp[0]);
        close(msgp[1]);
        kids[k] = (child){.pid = pid, .cmd_fd = cmdp[1], .msg_fd = msgp[0]};
    }
    parent_deadline_ns = now_ns() + (uint64_t)((run_budget_s(o) + 10) * 1e9);
    lg_stats *per = calloc((size_t)l->procs, sizeof(lg_stats));
    lg_stats *agg = calloc(1, sizeof(lg_stats));
    parent_collect(l, MSG_READY, per);
    for (int k = 0; k < l->procs; k++) stats_merge(agg, &per[k]);
    if (room_workload(o->workload) && agg->ready < (uint64_t)l->total_conns) {
        char why[160];
        snprintf(why, sizeof(why), "only %llu of %d members joined; not publishing",
                 (unsigned long long)agg->ready, l->total_conns);
        abort_run(l, agg, why);
    } else {
        for (int round = 0;; round++) {
            l->round = round;
            parent_send(l, CMD_GO, round);
            parent_collect(l, MSG_END, per);
            proc_mark(l, &l->cpu1, &l->rss1); /* every child still holds its connections */
            memset(agg, 0, sizeof(*agg));
            for (int k = 0; k < l->procs; k++) stats_merge(agg, &per[k]);
            if (!round_finished(l, agg)) break;
        }
    }
    fflush(stdout);
    parent_send(l, CMD_QUIT, 0);
    reap_children(l, 5000);
    free(per);
    free(agg);
    return l->exit_code;
}

/* ---- setup ---- */

/* The processes the run needs: each takes at most (hard RLIMIT_NOFILE -
 * 100) connections; fanout and durable split by whole rooms. Also checks
 * the ephemeral ports of the source addresses. */
static int plan_procs(lg *l) {
    const lg_opts *o = &l->o;
    struct rlimit rl;
    uint64_t cap = UINT64_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY)
            cap = rl.rlim_cur > FD_HEADROOM ? (uint64_t)rl.rlim_cur - FD_HEADROOM : 1;
    }
    int room = room_workload(o->workload);
    int units = room ? o->rooms : l->total_conns; /* what can be split */
    int p = o->procs ? o->procs : 1;
    for (;;) {
        uint64_t share = room ? (uint64_t)((o->rooms + p - 1) / p) * (uint64_t)o->members
                              : (uint64_t)((l->total_conns + p - 1) / p);
        if (share <= cap) break;
        if (p >= MAX_PROCS || p >= units) {
            lg_warn("%d connections need more than %d processes of %llu connections each (the hard "
                    "RLIMIT_NOFILE less %d)%s; raise the hard limit (ulimit -Hn)",
                    l->total_conns, p, (unsigned long long)cap, FD_HEADROOM,
                    room ? ", a room's members staying in one process" : "");
            return -1;
        }
        p++;
    }
    if (p > units) {
        lg_warn("--procs %d is more than the %d %s to split", p, units,
                room ? "rooms" : "connections");
        return -1;
    }
    if (o->procs && p > o->procs)
        lg_warn("--procs %d raised to %d for the descriptor limit", o->procs, p);
    l->procs = p;

    int lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2) lo = 32768, hi = 60999;
        fclose(f);
    }
    int64_t ports = (int64_t)(hi - lo + 1) * o->sources;
    if ((int64_t)l->total_conns > ports) {
        lg_warn("%d connections exceed the %lld ephemeral ports of %d source address(es); use "
                "--sources %lld "
                "or more",
                l->total_conns, (long long)ports, o->sources,
                (long long)((l->total_conns + (hi - lo)) / (hi - lo + 1)));
        return -1;
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: wsgate-loadgen [--workload echo|fanout|storm|idle|durable] [--host H] [--port "
            "N] [--path P]\n"
            "         [--conns N] [--duration S] [--warmup S] [--server-pid PID[,PID...]] [--label "
            "L]\n"
            "         [--ports N,N,... (connection i dials the (i mod n)-th: a cluster's nodes)]\n"
            "         [--sources K] [--open-window N] [--open-timeout S] [--procs P]\n"
            "  echo:    [--inflight K] [--size BYTES] [--message TEXT] [--expect STR] "
            "[--room-per-conn]\n"
            "  fanout:  [--rooms R] [--members M] [--rate MSG/S/ROOM] [--size BYTES] [--drain S]\n"
            "  durable: [--rooms R] [--members M] [--rates TOTAL/S,TOTAL/S,...] [--size BYTES] "
            "[--drain S]\n"
            "  storm:   [--conns IN_PROGRESS] [--expect STR] [--rooms R]\n"
            "  idle:    [--conns N] [--expect STR] [--rooms R] (needs --server-pid)\n");
}

static int parse_rates(lg_opts *o, const char *arg) {
    const char *p = arg;
    o->nrates = 0;
    while (*p) {
        char *e;
        double v = strtod(p, &e);
        if (e == p || v <= 0 || v > 1e7 || o->nrates == MAX_RATES) return -1;
        o->rates[o->nrates++] = v;
        p = e;
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return o->nrates > 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    g.o = (lg_opts){.host = "127.0.0.1",
                    .path = "/staging",
                    .label = "server",
                    .port = 8080,
                    .conns = 50,
                    .inflight = 8,
                    .size = 32,
                    .duration = 5,
                    .warmup = 1,
                    .workload = W_ECHO,
                    .rooms = 10,
                    .members = 20,
                    .rate = 100,
                    .drain = 5,
                    .sources = 1,
                    .open_window = 256,
                    .open_timeout = 60};
    static struct option longopts[] = {{"host", 1, 0, 'h'},        {"port", 1, 0, 'p'},
                                       {"path", 1, 0, 'P'},        {"conns", 1, 0, 'c'},
                                       {"inflight", 1, 0, 'k'},    {"size", 1, 0, 's'},
                                       {"duration", 1, 0, 'd'},    {"server-pid", 1, 0, 'S'},
                                       {"ports", 1, 0, 'O'},       {"label", 1, 0, 'l'},
                                       {"warmup", 1, 0, 'w'},      {"message", 1, 0, 'm'},
                                       {"expect", 1, 0, 'e'},      {"room-per-conn", 0, 0, 'r'},
                                       {"workload", 1, 0, 'W'},    {"rooms", 1, 0, 'R'},
                                       {"members", 1, 0, 'M'},     {"rate", 1, 0, 'q'},
                                       {"rates", 1, 0, 'Q'},       {"sources", 1, 0, 'K'},
                                       {"open-window", 1, 0, 'o'}, {"open-timeout", 1, 0, 'T'},
                                       {"procs", 1, 0, 'N'},       {"drain", 1, 0, 'D'},
                                       {"help", 0, 0, '?'},        {0, 0, 0, 0}};
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
        case 'S':
        case 'O': {
            int *v = ch == 'S' ? g.o.pids : g.o.ports, *n = ch == 'S' ? &g.o.npids : &g.o.nports;
            *n = 0;
            for (char *e, *q = optarg; *q; q = *e == ',' ? e + 1 : e) {
                long x = strtol(q, &e, 10);
                if (e == q || x <= 0 || x > 4194304 || *n == MAX_NODES || (*e && *e != ',')) {
                    lg_warn("--%s takes up to %d numbers, comma-separated",
                            ch == 'S' ? "server-pid" : "ports", MAX_NODES);
                    return 2;
                }
                v[(*n)++] = (int)x;
            }
            if (ch == 'S') g.o.server_pid = *n ? v[0] : 0;
            break;
        }
        case 'l': g.o.label = optarg; break;
        case 'w': g.o.warmup = atoi(optarg); break;
        case 'm': g.o.message = optarg; break;
        case 'e': g.o.expect = optarg; break;
        case 'r': g.o.room_per_conn = 1; break;
        case 'R': g.o.rooms = atoi(optarg); break;
        case 'M': g.o.members = atoi(optarg); break;
        case 'q': g.o.rate = atof(optarg); break;
        case 'Q':
            if (parse_rates(&g.o, optarg) != 0) {
                lg_warn("--rates takes up to %d positive chats/s (<= 1e7), comma-separated",
                        MAX_RATES);
                return 2;
            }
            break;
        case 'K':
            g.o.sources = atoi(optarg);
            g.o.sources_set = 1;
            break;
        case 'o': g.o.open_window = atoi(optarg); break;
        case 'T': g.o.open_timeout = atof(optarg); break;
        case 'N': g.o.procs = atoi(optarg); break;
        case 'D': g.o.drain = atof(optarg); break;
        case 'W': {
            int found = -1;
            for (int i = 0; i < W_COUNT; i++)
                if (strcmp(optarg, workload_names[i]) == 0) found = i;
            if (found < 0) {
                lg_warn("unknown workload '%s' (echo, fanout, storm, idle, durable)", optarg);
                return 2;
            }
            g.o.workload = found;
            break;
        }
        default: usage(); return 2;
        }
    }
    if (optind < argc) {
        usage();
        return 2;
    }
    lg_opts *o = &g.o;
    if (o->size > 65535 || o->size < 1 || o->inflight < 1 || o->conns < 1 || o->rooms < 1 ||
        o->members < 1 || o->open_window < 1 || o->duration <= 0 || o->duration > 3600 ||
        o->warmup < 0 || o->warmup > 3600 || o->open_timeout <= 0 || o->open_timeout > 3600 ||
        o->drain < 0 || o->drain > 600 || o->procs < 0 || o->procs > MAX_PROCS) {
        lg_warn(
            "size must be 1..65535; inflight, conns, rooms, members, open-window >= 1; duration, "
            "warmup and open-timeout in (0, 3600]; drain in [0, 600]; procs in 0..%d",
            MAX_PROCS);
        return 2;
    }
    if (o->sources < 1 || o->sources > 254) {
        lg_warn("--sources must be 1..254 (127.0.0.1 .. 127.0.0.K)");
        return 2;
    }
    if (room_workload(o->workload) && (int64_t)o->rooms * o->members > 10000000) {
        lg_warn("%s needs rooms x members <= 1e7", workload_names[o->workload]);
        return 2;
    }
    if (o->workload == W_FANOUT && (o->rate <= 0 || o->rate > 1e6)) {
        lg_warn("fanout needs 0 < --rate <= 1e6");
        return 2;
    }
    if (o->workload == W_DURABLE && o->nrates == 0) {
        static const double defaults[] = {1000, 5000, 10000, 20000, 50000};
        o->nrates = (int)(sizeof(defaults) / sizeof(defaults[0]));
        memcpy(o->rates, defaults, sizeof(defaults));
    }
    if (o->workload == W_IDLE && !o->server_pid) {
        lg_warn("idle measures the server's RSS: give --server-pid");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g.total_conns = room_workload(o->workload) ? o->rooms * o->members : o->conns;
    if (plan_procs(&g) != 0) return 2;

    if (o->workload == W_ECHO) {
        if (o->message) o->size = (int)strlen(o->message);
        char *payload = malloc((size_t)o->size);
        for (int i = 0; i < o->size; i++) payload[i] = o->message ? o->message[i] : 'x';
        g.frame = malloc((size_t)o->size + 14);
        g.frame_len = make_frame((unsigned char *)g.frame, 0x1, payload, (size_t)o->size);
        free(payload);
    }
    if (uv_ip4_addr(o->host, o->port, &g.dst) != 0) {
        lg_warn("--host must be an IPv4 address");
        return 2;
    }
    for (int i = 0; i < o->nports; i++) uv_ip4_addr(o->host, o->ports[i], &g.dsts[i]);
    if (o->sources_set) {
        g.src = calloc((size_t)o->sources, sizeof(*g.src));
        for (int i = 0; i < o->sources; i++) {
            char a[32];
            snprintf(a, sizeof(a), "127.0.0.%d", i + 1);
            uv_ip4_addr(a, 0, &g.src[i]);
        }
    }
    g.exit_code = 1;
    g.best_step = -1;
    if (g.procs > 1) {
        g.mode = MODE_PARENT;
        return parent_run(&g);
    }
    g.mode = MODE_SINGLE;
    slice(o, g.total_conns, 1, 0, &g.conn_base, &g.nconns, &g.room_base, &g.nrooms);
    run_loop(&g);
    return g.exit_code;
}
