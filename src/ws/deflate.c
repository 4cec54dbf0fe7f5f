/* permessage-deflate: negotiation, whole-message compression, inflater. */
#include "ws/deflate.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "common/alloc.h"
#include "common/error.h"

/* ------------------------------------------------------------ negotiation */

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

/* A cursor over one header value. */
typedef struct {
    const char *s, *end;
} cursor;

static void skip_ows(cursor *c) {
    while (c->s < c->end && is_ows(*c->s)) c->s++;
}

/* Read a token; returns its length (0 = none there). */
static size_t read_token(cursor *c, const char **tok) {
    *tok = c->s;
    while (c->s < c->end && is_tchar((unsigned char)*c->s)) c->s++;
    return (size_t)(c->s - *tok);
}

/* A parameter value as received, unquoted; longer values are kept cut and
 * flagged, which no parameter of this extension accepts anyway. */
typedef struct {
    char text[8];
    size_t len;
    bool too_long;
} param_value;

static void value_add(param_value *v, char ch) {
    if (v->len < sizeof v->text) v->text[v->len++] = ch;
    else v->too_long = true;
}

/* Read a quoted-string after its opening quote. Returns false when it is
 * not closed. */
static bool read_quoted(cursor *c, param_value *v) {
    while (c->s < c->end) {
        char ch = *c->s++;
        if (ch == '"') return true;
        if (ch == '\\') {
            if (c->s == c->end) return false;
            ch = *c->s++;
        }
        value_add(v, ch);
    }
    return false;
}

/* Skip the rest of a malformed element up to its comma (outside quotes). */
static void skip_element(cursor *c) {
    bool quoted = false;
    while (c->s < c->end) {
        char ch = *c->s;
        if (quoted && ch == '\\' && c->s + 1 < c->end) {
            c->s += 2;
            continue;
        }
        if (ch == '"') quoted = !quoted;
        else if (ch == ',' && !quoted) return;
        c->s++;
    }
}

/* "8".."15" with no leading zero (RFC 7692 7.1.2.1); returns 0 when not. */
static int window_bits_value(const param_value *v) {
    if (v->too_long || v->len == 0 || v->len > 2) return 0;
    int x = 0;
    for (size_t i = 0; i < v->len; i++) {
        if (v->text[i] < '0' || v->text[i] > '9') return 0;
        x = x * 10 + (v->text[i] - '0');
    }
    if (v->text[0] == '0' || x < 8 || x > 15) return 0;
    return x;
}

/* One permessage-deflate offer: which parameters it had and their values. */
typedef struct {
    bool server_nct, client_nct;
    bool has_server_bits, has_client_bits;
    int server_bits; /* 8..15 */
    int client_bits; /* 8..15, or 15 when offered without a value */
    bool bad;        /* unknown, duplicate or malformed parameter */
} offer;

static bool name_is(const char *tok, size_t len, const char *name) {
    return strlen(name) == len && strncasecmp(tok, name, len) == 0;
}

/* Record parameter `name` (with or without a value) in o. */
static void offer_param(offer *o, const char *name, size_t nlen, bool has_value,
                        const param_value *v) {
    if (name_is(name, nlen, "server_no_context_takeover")) {
        if (o->server_nct || has_value) o->bad = true;
        o->server_nct = true;
    } else if (name_is(name, nlen, "client_no_context_takeover")) {
        if (o->client_nct || has_value) o->bad = true;
        o->client_nct = true;
    } else if (name_is(name, nlen, "server_max_window_bits")) {
        if (o->has_server_bits || !has_value) o->bad = true;
        o->has_server_bits = true;
        o->server_bits = has_value ? window_bits_value(v) : 0;
        if (!o->server_bits) o->bad = true;
    } else if (name_is(name, nlen, "client_max_window_bits")) {
        if (o->has_client_bits) o->bad = true;
        o->has_client_bits = true;
        o->client_bits = has_value ? window_bits_value(v) : 15;
        if (!o->client_bits) o->bad = true;
    } else {
        o->bad = true;
    }
}

/* Parse the element at c (up to its comma or the end). Returns false for an
 * empty element; else true with *is_deflate telling whether it names this
 * extension and *o its parameters (o->bad for a syntax error too). */
static bool parse_element(cursor *c, bool *is_deflate, offer *o) {
    memset(o, 0, sizeof *o);
    skip_ows(c);
    const char *name;
    size_t nlen = read_token(c, &name);
    skip_ows(c);
    if (nlen == 0) {
        if (c->s == c->end || *c->s == ',') return false;
        o->bad = true;
        skip_element(c);
        *is_deflate = false;
        return true;
    }
    *is_deflate = name_is(name, nlen, "permessage-deflate");
    while (c->s < c->end && *c->s != ',') {
        if (*c->s != ';') goto malformed;
        c->s++;
        skip_ows(c);
        const char *pname;
        size_t plen = read_token(c, &pname);
        if (plen == 0) goto malformed;
        skip_ows(c);
        param_value v = {.len = 0};
        bool has_value = false;
        if (c->s < c->end && *c->s == '=') {
            c->s++;
            skip_ows(c);
            has_value = true;
            if (c->s < c->end && *c->s == '"') {
                c->s++;
                if (!read_quoted(c, &v)) goto malformed;
                /* RFC 6455 9.1: a quoted value must still be a token. */
                for (size_t i = 0; i < v.len; i++)
                    if (!is_tchar((unsigned char)v.text[i])) o->bad = true;
                if (v.len == 0) o->bad = true;
            } else {
                const char *t;
                size_t tl = read_token(c, &t);
                if (tl == 0) goto malformed;
                for (size_t i = 0; i < tl; i++) value_add(&v, t[i]);
            }
            skip_ows(c);
        }
        offer_param(o, pname, plen, has_value, &v);
    }
    return true;
malformed:
    o->bad = true;
    skip_element(c);
    return true;
}

/* Decide on one valid offer. Returns false when cfg cannot honour it. */
static bool accept_offer(const ws_deflate_config *cfg, const offer *o, ws_deflate_params *out,
                         char *response) {
    int server_bits = cfg->server_max_window_bits;
    bool say_server_bits = server_bits < 15;
    if (o->has_server_bits) {
        if (o->server_bits < server_bits) server_bits = o->server_bits;
        say_server_bits = true; /* accepting the parameter means answering it */
    }
    int client_bits = 15;
    bool say_client_bits = false;
    if (o->has_client_bits) {
        client_bits = o->client_bits;
        if (cfg->client_max_window_bits < client_bits) {
            client_bits = cfg->client_max_window_bits;
            say_client_bits = true;
        }
    } else if (cfg->client_max_window_bits < 15) {
        return false; /* the client may use 32 KiB windows; we refuse to hold them */
    }
    out->server_max_window_bits = (uint8_t)server_bits;
    out->client_max_window_bits = (uint8_t)client_bits;
    out->client_no_context_takeover = cfg->client_no_context_takeover || o->client_nct;
    out->level = cfg->level;
    out->min_size = cfg->min_size;

    int n = snprintf(response, WS_DEFLATE_RESPONSE_MAX,
                     "permessage-deflate; server_no_context_takeover");
    if (out->client_no_context_takeover)
        n += snprintf(response + n, WS_DEFLATE_RESPONSE_MAX - (size_t)n,
                      "; client_no_context_takeover");
    if (say_server_bits)
        n += snprintf(response + n, WS_DEFLATE_RESPONSE_MAX - (size_t)n,
                      "; server_max_window_bits=%d", server_bits);
    if (say_client_bits)
        snprintf(response + n, WS_DEFLATE_RESPONSE_MAX - (size_t)n, "; client_max_window_bits=%d",
                 client_bits);
    return true;
}

bool ws_deflate_negotiate(const ws_deflate_config *cfg, const char *const *values,
                          const size_t *lens, size_t n, ws_deflate_params *out, char *response) {
    if (!cfg->enabled) return false;
    for (size_t i = 0; i < n; i++) {
        cursor c = {values[i], values[i] + lens[i]};
        while (c.s < c.end) {
            bool is_deflate = false;
            offer o;
            if (parse_element(&c, &is_deflate, &o) && is_deflate && !o.bad &&
                accept_offer(cfg, &o, out, response))
                return true;
            if (c.s < c.end) c.s++; /* the comma */
        }
    }
    return false;
}

/* ------------------------------------------------------------ compression */

int ws_deflate_compress_bits(const ws_deflate_params *params) {
    return params->server_max_window_bits < 9 ? 9 : params->server_max_window_bits;
}

typedef struct {
    z_stream zs;
    int bits, level; /* 0 = not initialised */
} thread_deflater;

static pthread_key_t deflater_key;
static pthread_once_t deflater_once = PTHREAD_ONCE_INIT;
static _Thread_local thread_deflater *tls_deflater;

static void deflater_release(void *p) {
    thread_deflater *d = p;
    if (d->bits) deflateEnd(&d->zs);
    free(d);
}

static void deflater_key_init(void) {
    if (pthread_key_create(&deflater_key, deflater_release) != 0) {
        fprintf(stderr, "wsgate: pthread_key_create failed\n");
        abort();
    }
}

/* This thread's compressor, set up for bits and level. */
static z_stream *thread_stream(int bits, int level) {
    thread_deflater *d = tls_deflater;
    if (!d) {
        pthread_once(&deflater_once, deflater_key_init);
        d = xcalloc(1, sizeof *d);
        tls_deflater = d;
        pthread_setspecific(deflater_key, d); /* frees it when the thread exits */
    }
    if (d->bits != bits || d->level != level) {
        if (d->bits) deflateEnd(&d->zs);
        memset(&d->zs, 0, sizeof d->zs);
        d->bits = 0;
        /* Negative bits: raw DEFLATE, no zlib header (RFC 7692 7.2.1). */
        if (deflateInit2(&d->zs, level, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            fprintf(stderr, "wsgate: deflateInit2(%d, %d) failed\n", level, bits);
            abort();
        }
        d->bits = bits;
        d->level = level;
    } else {
        deflateReset(&d->zs);
    }
    return &d->zs;
}

uint8_t *ws_deflate_compress(const ws_deflate_params *params, const uint8_t *in, size_t len,
                             size_t *out_len) {
    z_stream *zs = thread_stream(ws_deflate_compress_bits(params), params->level);
    /* deflateBound assumes Z_FINISH; the sync flush's empty stored block
     * and the bits of the last block need a few more bytes. */
    size_t cap = deflateBound(zs, len) + 16, done = 0;
    uint8_t *out = xmalloc(cap);
    /* zlib counts in uInt: feed and drain in slices it can hold. */
    const size_t slice = 1u << 30;
    size_t in_off = 0;
    do {
        size_t take = len - in_off < slice ? len - in_off : slice;
        zs->next_in = (Bytef *)(uintptr_t)(in + in_off);
        zs->avail_in = (uInt)take;
        in_off += take;
        int flush = in_off == len ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        do {
            size_t room = cap - done < slice ? cap - done : slice;
            zs->next_out = out + done;
            zs->avail_out = (uInt)room;
            int rc = deflate(zs, flush);
            done += room - zs->avail_out;
            if (rc == Z_STREAM_ERROR || done == cap) {
                fprintf(stderr, "wsgate: deflate overran its bound (%zu bytes in)\n", len);
                abort();
            }
        } while (zs->avail_out == 0 || zs->avail_in > 0);
    } while (in_off < len);
    /* A sync flush ends with an empty stored block: its 00 00 ff ff goes. */
    if (done < 4 || memcmp(out + done - 4, "\x00\x00\xff\xff", 4) != 0) {
        fprintf(stderr, "wsgate: deflate sync flush without its marker\n");
        abort();
    }
    *out_len = done - 4;
    return out;
}

/* --------------------------------------------------------------- inflater */

struct ws_inflater {
    z_stream zs;
    bool ready;       /* inflateInit2 done */
    bool ended;       /* the message's stream ended with a final block */
    bool has_context; /* a message has been inflated and its window matters */
    bool no_context;  /* client_no_context_takeover */
    int bits;
    size_t bytes; /* heap bytes zlib holds through count_alloc */
};

/* zlib's allocations through a counter: the size is kept in front of each
 * block so the free can subtract it. */
typedef struct {
    size_t size;
    max_align_t align[];
} counted;

static voidpf count_alloc(voidpf opaque, uInt items, uInt size) {
    ws_inflater *z = opaque;
    size_t n = (size_t)items * size;
    counted *c = xmalloc(sizeof *c + n);
    c->size = n;
    z->bytes += n;
    return c->align;
}

static void count_free(voidpf opaque, voidpf p) {
    if (!p) return;
    ws_inflater *z = opaque;
    counted *c = (counted *)((char *)p - offsetof(counted, align));
    z->bytes -= c->size;
    free(c);
}

ws_inflater *ws_inflater_new(const ws_deflate_params *params) {
    ws_inflater *z = xcalloc(1, sizeof *z);
    /* Always the largest window, whatever the client was asked to use:
     * zlib enforces a smaller window only for matches reaching past the
     * output of the current call, so a client overreaching it would pass
     * or fail depending on how its bytes were split. With 15 bits every
     * distance DEFLATE can express is checked against the real history. */
    z->bits = 15;
    z->no_context = params->client_no_context_takeover;
    return z;
}

static void inflater_release(ws_inflater *z) {
    if (z->ready) inflateEnd(&z->zs);
    z->ready = false;
    z->has_context = false;
}

void ws_inflater_free(ws_inflater *z) {
    if (!z) return;
    inflater_release(z);
    free(z);
}

static void inflater_ready(ws_inflater *z) {
    if (z->ready) return;
    memset(&z->zs, 0, sizeof z->zs);
    z->zs.zalloc = count_alloc;
    z->zs.zfree = count_free;
    z->zs.opaque = z;
    if (inflateInit2(&z->zs, -z->bits) != Z_OK) {
        fprintf(stderr, "wsgate: inflateInit2(%d) failed\n", z->bits);
        abort();
    }
    z->ready = true;
}

int ws_inflater_feed(ws_inflater *z, const uint8_t *in, size_t *in_len, uint8_t *out,
                     size_t out_cap, size_t *out_len) {
    *out_len = 0;
    if (z->ended) {
        *in_len = 0; /* what follows a final block is not data (RFC 7692 7.2.3.4) */
        return 2;
    }
    inflater_ready(z);
    z->has_context = !z->no_context;
    const size_t slice = 1u << 30;
    for (;;) {
        size_t in_take = *in_len < slice ? *in_len : slice;
        size_t out_room = out_cap - *out_len < slice ? out_cap - *out_len : slice;
        z->zs.next_in = (Bytef *)(uintptr_t)in;
        z->zs.avail_in = (uInt)in_take;
        z->zs.next_out = out + *out_len;
        z->zs.avail_out = (uInt)out_room;
        int rc = inflate(&z->zs, Z_SYNC_FLUSH);
        size_t used = in_take - z->zs.avail_in;
        in += used;
        *in_len -= used;
        *out_len += out_room - z->zs.avail_out;
        if (rc == Z_STREAM_END) {
            z->ended = true;
            *in_len = 0;
            return 2;
        }
        if (rc == Z_NEED_DICT || rc == Z_DATA_ERROR || rc == Z_STREAM_ERROR)
            return WSG_E_WS_DEFLATE;
        if (rc == Z_MEM_ERROR) {
            fprintf(stderr, "wsgate: inflate out of memory\n");
            abort();
        }
        if (*out_len == out_cap) return 1;
        if (*in_len == 0) return 0;
        if (rc == Z_BUF_ERROR && used == 0)
            return WSG_E_WS_DEFLATE; /* no progress with room on both sides */
    }
}

int ws_inflater_end_message(ws_inflater *z) {
    if (!z->ready) return 0;
    /* After the tail's empty stored block inflate waits for a block header
     * (zlib's data_type bit 128) unless the data was cut inside a block. */
    int rc = z->ended || (z->zs.data_type & 128) ? 0 : WSG_E_WS_DEFLATE;
    if (z->no_context) {
        inflateReset(&z->zs);
        z->has_context = false;
    } else if (z->ended) {
        /* A final block ended the stream but the next message may still
         * refer to this one's window: carry it into a fresh stream. */
        size_t cap = (size_t)1 << z->bits;
        uint8_t *dict = xmalloc(cap);
        uInt n = (uInt)cap;
        inflateGetDictionary(&z->zs, dict, &n);
        inflateReset(&z->zs);
        if (n) inflateSetDictionary(&z->zs, dict, n);
        free(dict);
    }
    z->ended = false;
    return rc;
}

bool ws_inflater_has_context(const ws_inflater *z) { return z->ready && z->has_context; }

void ws_inflater_trim(ws_inflater *z) {
    if (z->ready && !z->has_context) inflater_release(z);
}

size_t ws_inflater_memory(const ws_inflater *z) { return z->bytes; }
