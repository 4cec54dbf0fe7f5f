/* The point-in-time archive: see archive.h (formats) and docs/storage.md
 * (why). */
#include "store/archive.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "log/log.h"
#include "store/internal.h"
#include "store/ledger.h"
#include "store/syncer.h"
#include "store/walframe.h"
#include "store/walshm.h"

#define ARCHIVE_MAGIC       "WSGPITR1"
#define ARCHIVE_CHUNK       (1u << 20) /* snapshot bytes per record */
#define ARCHIVE_COMMIT_HEAD 48         /* a 'C' record's fixed part */

struct archive {
    char *dir;
    char *db_path, *wal_path;
    struct stat db_at_open; /* the database file before the store opened it */
    bool db_stat_ok, wal_at_open;
    int fd;        /* the open segment, -1 when none */
    char name[96]; /* its file name */
    uint32_t records;
    uint32_t key_id;
    int64_t gen, seq;
    int wal_fd;
    walf w;
    bool have_w;
    bool dirty; /* records written since the last fsync */
    uint8_t *buf;
    size_t cap;
    /* The last archived image of recently written pages (direct-mapped by
     * page number): a page found here is archived as the runs of bytes
     * that differ from this image (a chat changes a few hundred bytes of a
     * 4 KiB leaf). Emptied at every snapshot. */
    uint32_t *cache_pgno; /* 0: empty slot */
    /* Commits not archived yet (frames in the WAL after each, and its
     * time), taken from a->in by archive_flush and archived together. */
    struct pending_commit {
        uint64_t frames;
        int64_t t_ms;
    } * pend;
    size_t npend, pend_cap;
    uint8_t *cache_img;
    uint32_t cache_page_size;
    ZSTD_CCtx *zc; /* write_record's compressor, kept between records */
    /* The commits of one second of commit time read from the WAL and not
     * yet written: each page once, as the last of them left it (what a
     * checkpoint of those commits writes). A restore stops at whole
     * seconds, so the intermediate images are never needed; a page split
     * rewrites a few pages whole each time, and keeping each page once a
     * second instead of once per commit is most of the archive's bytes. */
    struct bucket {
        int64_t sec;     /* its commits' second (Unix time) */
        uint32_t n, cap; /* pages held */
        uint32_t *pgno;  /* [n] */
        uint8_t *img;    /* [n * page size] */
        uint32_t *index; /* open addressing, pgno -> position + 1 (0: empty) */
        uint32_t mask;   /* index slots - 1 */
        uint64_t first;  /* the first WAL frame it covers */
        walf end;        /* the WAL position after its last commit */
        int64_t t_ms;    /* its last commit's time */
    } bk;
    /* The archiver thread (archive_run). mu is held by whoever archives or
     * syncs (that thread, or the store thread in archive_sync and
     * archive_snapshot): everything above is theirs under it. in_mu guards
     * only what follows, so the WAL hook (inside COMMIT) never waits for a
     * flush: the commits noted since the last flush, and the stop flag. */
    pthread_mutex_t mu, in_mu;
    pthread_cond_t in_wake;
    struct pending_commit *in;
    size_t nin, in_cap;
    bool stop, started;
    bool sync_wanted; /* archive_sync_start: flush and fdatasync now */
    pthread_t thread;
    /* The verified-files ledger (ledger.h; under mu once the threads run):
     * files found sound at start or written and synced here, so the next
     * start reads only what came after. cur: the open segment's summary,
     * kept as its records are written. */
    char *ledger_path;
    ledger led, led_at_open;
    ledger_file cur;
    int64_t noted_ms; /* when note_progress last noted cur (monotonic) */
    /* The background check of the files the ledger vouched for at start
     * (archive_verify_run): its list, and what it asks of the store thread. */
    ledger_file *bg;
    size_t nbg;
    pthread_t bg_thread;
    bool bg_started;
    atomic_bool bg_stop, snapshot_wanted;
};

/* Commits are archived together, one record for all, once this many WAL
 * frames or this many ms have gathered (or before anything could restart
 * the WAL, and when idle): a record per commit cost a seal, a deflate and
 * a write(2) each, the most of the archive's CPU when batches are small. */
#define ARCHIVE_FLUSH_FRAMES 256
#define ARCHIVE_FLUSH_MS     1000
/* How often the open segment's synced length is noted in the ledger. */
#define ARCHIVE_NOTE_MS 10000

/* Pages a bucket holds at most: a second that writes more (16 MiB) is
 * written as more than one record. */
#define ARCHIVE_BUCKET_PAGES 4096
/* A record of one bucket: a 'C' record's head, then u32 entries. */
#define ARCHIVE_BUCKET_HEAD (ARCHIVE_COMMIT_HEAD + 4)

/* Pages the delta cache holds (x page size bytes: 8 MiB of 4 KiB pages). */
#define ARCHIVE_CACHE_SLOTS 2048
/* In a commit record's page number: the page is stored as a delta
 * (archive_delta_encode) from the page's previous content. */
#define ARCHIVE_DELTA 0x80000000u
/* A record's type byte with this bit set: raw is a zstd frame (since
 * archives of the compact store); without it, zlib (the first archives,
 * still read). */
#define ARCHIVE_ZSTD 0x80u
/* zstd level 1: on these records (pages and deltas, mostly sealed values)
 * it gave 1.77:1 at 390 MB/s where zlib level 1 gave 1.53:1 at 43 MB/s;
 * deflate was half of the server's CPU at 20,000 durable chats/s. */
#define ARCHIVE_ZSTD_LEVEL 1

/* ---- the record codec (I/O-free) ---- */

static void put64(uint8_t *p, uint64_t v) {
    walf_put32(p, (uint32_t)(v >> 32));
    walf_put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const uint8_t *p) {
    return (uint64_t)walf_get32(p) << 32 | walf_get32(p + 4);
}

/* Note one record of a file in its ledger summary f, as the start needs
 * it: its type as the last so far, a snapshot's end, where the WAL stands
 * after a commit record, a clean-stop record. The same for a record read
 * back (verify) and one just written (the open segment's summary). */
static void summarize(ledger_file *f, int type, const uint8_t *raw, size_t len) {
    f->last = type;
    if (type == 'E') f->ended = true;
    if (type == 'Z' && len == LEDGER_CLOSE_LEN) {
        memcpy(f->close, raw, LEDGER_CLOSE_LEN);
        f->has_close = true;
    }
    if ((type == 'C' && len >= ARCHIVE_COMMIT_HEAD) ||
        (type == 'K' && len >= ARCHIVE_BUCKET_HEAD)) {
        f->pos.salt[0] = walf_get32(raw + 8);
        f->pos.salt[1] = walf_get32(raw + 12);
        f->pos.frames = get64(raw + 16) + walf_get32(raw + 24);
        f->pos.page_size = walf_get32(raw + 28);
        f->pos.db_pages = walf_get32(raw + 32);
        f->pos.cksum[0] = walf_get32(raw + 36);
        f->pos.cksum[1] = walf_get32(raw + 40);
        f->pos.big_endian = raw[44] != 0;
        f->has_pos = true;
    }
}

int archive_record_split(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len,
                         size_t *used) {
    if (len < 8) return 0;
    uint32_t n = walf_get32(buf);
    if (n > ARCHIVE_RECORD_MAX) return -1;
    if (len - 8 < n) return 0;
    if ((uint32_t)crc32(0, buf + 8, n) != walf_get32(buf + 4)) return -1;
    *body = buf + 8;
    *body_len = n;
    *used = 8 + (size_t)n;
    return 1;
}

static void record_aad(char *out, size_t len, const char *name, uint32_t index) {
    snprintf(out, len, "wsgate.pitr:%s:%u", name, index);
}

int archive_record_open(const crypto_keyring *keys, uint32_t key_id, const char *name,
                        uint32_t index, const uint8_t *body, size_t len, int *type, uint8_t **raw,
                        size_t *raw_len, wsg_error *err) {
    *raw = NULL;
    char *plain = NULL;
    size_t plen = len;
    const uint8_t *inner = body;
    if (key_id) {
        if (!keys) {
            return wsg_error_set(err, WSG_E_STORE_ARCHIVE,
                                 "%s is sealed (key %u): the key file is needed", name, key_id);
        }
        char aad[160];
        record_aad(aad, sizeof(aad), name, index);
        int e = crypto_open(keys, body, len, aad, strlen(aad), &plain, &plen);
        if (e) {
            char msg[160];
            return wsg_error_set(err, WSG_E_STORE_ARCHIVE, "%s record %u: %s", name, index,
                                 crypto_open_errmsg(e, body, len, msg, sizeof(msg)));
        }
        inner = (const uint8_t *)plain;
    }
    int rc = WSG_E_STORE_ARCHIVE; /* until the record is read; err says why */
    if (plen < 5) {
        wsg_error_set(err, WSG_E_STORE_ARCHIVE, "%s record %u: too short", name, index);
    } else {
        uLongf n = walf_get32(inner + 1);
        if (n > ARCHIVE_RECORD_MAX) {
            wsg_error_set(err, WSG_E_STORE_ARCHIVE, "%s record %u: too long", name, index);
        } else {
            *raw = xmalloc(n ? n : 1);
            bool ok;
            if (inner[0] & ARCHIVE_ZSTD) {
                size_t z = ZSTD_decompress(*raw, n, inner + 5, plen - 5);
                ok = !ZSTD_isError(z) && z == n;
            } else {
                ok =
                    uncompress(*raw, &n, inner + 5, plen - 5) == Z_OK && n == walf_get32(inner + 1);
            }
            if (!ok) {
                wsg_error_set(err, WSG_E_STORE_ARCHIVE, "%s record %u: cannot inflate", name,
                              index);
                free(*raw);
                *raw = NULL;
            } else {
                *type = inner[0] & ~ARCHIVE_ZSTD;
                *raw_len = n;
                rc = 0;
            }
        }
    }
    free(plain);
    return rc;
}

size_t archive_delta_encode(const uint8_t *old, const uint8_t *page, size_t ps, uint8_t *out,
                            size_t max) {
    size_t o = 2, runs = 0, i = 0;
    while (i < ps) {
        /* Most of a page is unchanged: skip it a word at a time (the byte
         * loop was 4% of the server's CPU at 20,000 chats/s). */
        while (i + 8 <= ps && memcmp(old + i, page + i, 8) == 0) i += 8;
        if (i >= ps) break;
        if (old[i] == page[i]) {
            i++;
            continue;
        }
        /* A run ends at 8 equal bytes: shorter gaps cost less inside it
         * than a run header. */
        size_t start = i, end = i, same = 0;
        while (end < ps && same < 8) {
            same = old[end] == page[end] ? same + 1 : 0;
            end++;
        }
        size_t len = end - start - same;
        if (o + 4 + len > max || runs == 0xffff) return 0;
        walf_put32(out + o, (uint32_t)(start << 16 | len));
        memcpy(out + o + 4, page + start, len);
        o += 4 + len;
        runs++;
        i = start + len;
    }
    out[0] = (uint8_t)(runs >> 8);
    out[1] = (uint8_t)runs;
    return o;
}

int archive_delta_apply(uint8_t *page, size_t ps, const uint8_t *in, size_t len) {
    if (len < 2) return -1;
    size_t runs = (size_t)in[0] << 8 | in[1], o = 2;
    for (size_t r = 0; r < runs; r++) {
        if (len - o < 4) return -1;
        uint32_t h = walf_get32(in + o);
        size_t at = h >> 16, n = h & 0xffff;
        if (at > ps || n > ps - at || len - o - 4 < n) return -1;
        memcpy(page + at, in + o + 4, n);
        o += 4 + n;
    }
    return (int)o;
}

/* Append one record (type, raw) to fd, the file name, as its record index,
 * compressed with zc (NULL: a context made for this record). Returns 0 or
 * -1 (errno). */
static int write_record(int fd, ZSTD_CCtx *zc, const crypto_keyring *keys, const char *name,
                        uint32_t index, int type, const uint8_t *raw, size_t raw_len) {
    size_t zlen = ZSTD_compressBound(raw_len);
    uint8_t *inner = xmalloc(5 + zlen);
    inner[0] = (uint8_t)(type | ARCHIVE_ZSTD);
    walf_put32(inner + 1, (uint32_t)raw_len);
    ZSTD_CCtx *own = zc ? NULL : ZSTD_createCCtx();
    zlen = ZSTD_compressCCtx(zc ? zc : own, inner + 5, zlen, raw, raw_len, ARCHIVE_ZSTD_LEVEL);
    ZSTD_freeCCtx(own);
    if (ZSTD_isError(zlen)) {
        free(inner);
        errno = EIO;
        return -1;
    }
    size_t len = 5 + zlen;
    uint8_t *body = inner;
    if (keys) {
        char aad[160];
        record_aad(aad, sizeof(aad), name, index);
        body = crypto_seal(keys, inner, len, aad, strlen(aad), &len);
        free(inner);
        if (!body) {
            errno = EIO;
            return -1;
        }
    }
    uint8_t head[8];
    walf_put32(head, (uint32_t)len);
    walf_put32(head + 4, (uint32_t)crc32(0, body, (uInt)len));
    int rc = 0;
    struct part {
        const void *p;
        size_t n;
    } parts[2] = {{head, 8}, {body, len}};
    for (int i = 0; i < 2 && rc == 0; i++) {
        const uint8_t *p = parts[i].p;
        size_t left = parts[i].n;
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                rc = -1;
                break;
            }
            p += w;
            left -= (size_t)w;
        }
    }
    free(body);
    return rc;
}

/* The archive's compression context, made on first use (NULL when there
 * is no archive: write_record then makes its own). */
static ZSTD_CCtx *archive_zctx(struct archive *a) {
    if (a && !a->zc) a->zc = ZSTD_createCCtx();
    return a ? a->zc : NULL;
}

/* ---- reading files ---- */

typedef struct file_reader {
    FILE *f;
    const char *name;
    uint32_t key_id;
    uint32_t index;
    uint8_t *buf;
    size_t cap;
} file_reader;

/* Open dir/name and read its header. Returns 0, or WSG_E_STORE_ARCHIVE
 * with *err. */
static int reader_open(file_reader *r, const char *dir, const char *name, wsg_error *err) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    memset(r, 0, sizeof(*r));
    r->name = name;
    r->f = fopen(path, "rb");
    if (!r->f) {
        return wsg_error_set(err, WSG_E_STORE_ARCHIVE, "cannot open %s: %s", path, strerror(errno));
    }
    uint8_t h[ARCHIVE_FILE_HEADER_LEN];
    if (fread(h, 1, sizeof(h), r->f) != sizeof(h) || memcmp(h, ARCHIVE_MAGIC, 8) != 0) {
        fclose(r->f);
        r->f = NULL;
        return wsg_error_set(err, WSG_E_STORE_ARCHIVE, "%s is damaged: not an archive file header",
                             name);
    }
    r->key_id = walf_get32(h + 8);
    return 0;
}

/* The next record of r: 1 with *type and *raw (malloc'd), 0 at the end
 * (or a torn tail: *torn set), WSG_E_STORE_ARCHIVE with *err when damaged. */
static int reader_next(file_reader *r, const crypto_keyring *keys, int *type, uint8_t **raw,
                       size_t *raw_len, bool *torn, wsg_error *err) {
    uint8_t head[8];
    size_t got = fread(head, 1, 8, r->f);
    *torn = false;
    if (got == 0) return 0;
    if (got < 8) {
        *torn = true;
        return 0;
    }
    uint32_t n = walf_get32(head);
    if (n > ARCHIVE_RECORD_MAX) {
        return wsg_error_set(err, WSG_E_STORE_ARCHIVE, "%s is damaged at record %u: bad length",
                             r->name, r->index);
    }
    if (r->cap < 8 + (size_t)n) {
        r->cap = 8 + (size_t)n;
        r->buf = xrealloc(r->buf, r->cap);
    }
    memcpy(r->buf, head, 8);
    got = fread(r->buf + 8, 1, n, r->f);
    const uint8_t *body;
    size_t blen, used;
    int sp = archive_record_split(r->buf, 8 + got, &body, &blen, &used);
    if (sp == 0) {
        *torn = true;
        return 0;
    }
    if (sp < 0) {
        return wsg_error_set(err, WSG_E_STORE_ARCHIVE,
                             "%s is damaged at record %u: checksum mismatch", r->name, r->index);
    }
    int rc = archive_record_open(keys, r->key_id, r->name, r->index, body, blen, type, raw, raw_len,
                                 err);
    if (rc != 0) return rc;
    r->index++;
    return 1;
}

static void reader_close(file_reader *r) {
    if (r->f) fclose(r->f);
    free(r->buf);
}

/* ---- listing ---- */

typedef struct arch_file {
    bool snap;
    int64_t gen, seq, t_ms;
    char name[96];
} arch_file;

static int cmp_files(const void *a, const void *b) {
    const arch_file *x = a, *y = b;
    if (x->gen != y->gen) return x->gen < y->gen ? -1 : 1;
    if (x->snap != y->snap) return x->snap ? -1 : 1; /* a generation's snapshot first */
    if (x->seq != y->seq) return x->seq < y->seq ? -1 : 1;
    return 0;
}

/* The archive files of dir, in replay order. Returns their count. */
static size_t list_files(const char *dir, arch_file **out) {
    DIR *d = opendir(dir);
    *out = NULL;
    if (!d) return 0;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        long long g, q, t;
        char tail[8];
        arch_file f = {0};
        if (sscanf(de->d_name, "snap-%lld-%lld%7s", &g, &t, tail) == 3 &&
            strcmp(tail, ".pitr") == 0) {
            f = (arch_file){.snap = true, .gen = g, .t_ms = t};
        } else if (sscanf(de->d_name, "wal-%lld-%lld-%lld%7s", &g, &q, &t, tail) == 4 &&
                   strcmp(tail, ".pitr") == 0) {
            f = (arch_file){.gen = g, .seq = q, .t_ms = t};
        } else {
            continue;
        }
        size_t len = strlen(de->d_name);
        if (len >= sizeof(f.name)) continue;
        memcpy(f.name, de->d_name, len + 1);
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xrealloc(*out, cap * sizeof(**out));
        }
        (*out)[n++] = f;
    }
    closedir(d);
    if (n) qsort(*out, n, sizeof(**out), cmp_files);
    return n;
}

static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* ---- writing (store thread) ---- */

static void save_ledger(store *s, bool durable);

static const crypto_keyring *seal_keys(store *s) { return s->opt.keys; }

/* Create dir/name with the file header. Returns the fd or -1. */
static int create_file(store *s, const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    uint8_t h[ARCHIVE_FILE_HEADER_LEN] = {0};
    memcpy(h, ARCHIVE_MAGIC, 8);
    walf_put32(h + 8, s->opt.keys ? crypto_active_key_id(s->opt.keys) : 0);
    if (write(fd, h, sizeof(h)) != (ssize_t)sizeof(h)) {
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

/* Close the open segment (synced); its summary goes in the ledger: the
 * file is whole and never written again. */
static void close_segment(store *s) {
    struct archive *a = s->arch;
    if (a->fd < 0) return;
    struct stat st;
    int rc = fdatasync(a->fd);
    if (rc == 0 && a->cur.name[0] && fstat(a->fd, &st) == 0) {
        a->cur.id = ledger_id_of(&st);
        a->cur.records = a->records;
        a->cur.open = false;
        ledger_put(&a->led, &a->cur);
    }
    close(a->fd);
    a->fd = -1;
    a->dirty = false;
}

/* Open segment seq of generation gen. Returns 0 or -1 (logged). */
static int open_segment(store *s, int64_t gen, int64_t seq) {
    struct archive *a = s->arch;
    close_segment(s);
    snprintf(a->name, sizeof(a->name), "wal-%lld-%lld-%lld.pitr", (long long)gen, (long long)seq,
             (long long)clock_wall_ms());
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", a->dir, a->name);
    a->fd = create_file(s, path);
    if (a->fd < 0) {
        log_msg(LOG_ERROR, "pitr_error", "cannot create archive segment %s: %s", path,
                strerror(errno));
        return -1;
    }
    sync_dir(a->dir);
    a->gen = gen;
    a->seq = seq;
    a->records = 0;
    memset(&a->cur, 0, sizeof(a->cur));
    memcpy(a->cur.name, a->name, sizeof(a->cur.name));
    return 0;
}

static uint8_t *reserve(struct archive *a, size_t n) {
    if (a->cap < n) {
        a->cap = n;
        a->buf = xrealloc(a->buf, n);
    }
    return a->buf;
}

/* The commit time of the commit whose frame brings the WAL to frames: the
 * WAL hook's record of it, or now for a commit it did not see (the
 * schema's at open, a crash's leftovers). */
static int64_t commit_time(struct archive *a, size_t *k, uint64_t frames, int64_t now) {
    while (*k < a->npend && a->pend[*k].frames < frames) (*k)++;
    return *k < a->npend && a->pend[*k].frames == frames ? a->pend[*k].t_ms : now;
}

/* The second of commit time a bucket gathers (floor, also before 1970). */
static int64_t bucket_sec(int64_t t_ms) { return t_ms >= 0 ? t_ms / 1000 : -((999 - t_ms) / 1000); }

/* Keep page pgno's image in the bucket (its last one, over an earlier). */
static void bucket_put(struct archive *a, uint32_t pgno, const uint8_t *page, uint32_t ps) {
    struct bucket *b = &a->bk;
    if ((b->n + 1) * 2 > b->mask + 1 || !b->index) {
        /* Grow the index (and rehash) to keep it at most half full. */
        uint32_t slots = b->index ? (b->mask + 1) * 2 : 1024;
        free(b->index);
        b->index = xcalloc(slots, sizeof(uint32_t));
        b->mask = slots - 1;
        for (uint32_t i = 0; i < b->n; i++) {
            uint32_t h = (b->pgno[i] * 2654435761u) & b->mask;
            while (b->index[h]) h = (h + 1) & b->mask;
            b->index[h] = i + 1;
        }
    }
    uint32_t h = (pgno * 2654435761u) & b->mask;
    while (b->index[h] && b->pgno[b->index[h] - 1] != pgno) h = (h + 1) & b->mask;
    uint32_t at;
    if (b->index[h]) {
        at = b->index[h] - 1;
    } else {
        if (b->n == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 256;
            b->pgno = xrealloc(b->pgno, b->cap * sizeof(uint32_t));
            b->img = xrealloc(b->img, (size_t)b->cap * ps);
        }
        at = b->n++;
        b->pgno[at] = pgno;
        b->index[h] = at + 1;
    }
    memcpy(b->img + (size_t)at * ps, page, ps);
}

/* Write the bucket as one 'K' record: its pages, each whole or as a delta
 * from its last archived image (the delta cache), the last one carrying
 * the bucket's last commit (database size and time). Empties it. */
static void bucket_emit(store *s) {
    struct archive *a = s->arch;
    struct bucket *b = &a->bk;
    if (!b->n) return;
    uint32_t ps = b->end.page_size;
    if (a->cache_page_size != ps) {
        free(a->cache_img);
        a->cache_img = xmalloc((size_t)ARCHIVE_CACHE_SLOTS * ps);
        if (!a->cache_pgno) a->cache_pgno = xmalloc(ARCHIVE_CACHE_SLOTS * sizeof(uint32_t));
        memset(a->cache_pgno, 0, ARCHIVE_CACHE_SLOTS * sizeof(uint32_t));
        a->cache_page_size = ps;
    }
    uint8_t *raw = reserve(a, ARCHIVE_BUCKET_HEAD + (size_t)b->n * (16 + ps));
    put64(raw, (uint64_t)b->t_ms);
    walf_put32(raw + 8, b->end.salt[0]);
    walf_put32(raw + 12, b->end.salt[1]);
    put64(raw + 16, b->first);
    walf_put32(raw + 24, (uint32_t)(b->end.frames - b->first));
    walf_put32(raw + 28, ps);
    walf_put32(raw + 32, b->end.db_pages);
    walf_put32(raw + 36, b->end.cksum[0]);
    walf_put32(raw + 40, b->end.cksum[1]);
    walf_put32(raw + 44, b->end.big_endian ? 1u << 24 : 0);
    walf_put32(raw + 48, b->n);
    uint8_t *p = raw + ARCHIVE_BUCKET_HEAD;
    for (uint32_t i = 0; i < b->n; i++) {
        uint32_t pgno = b->pgno[i];
        const uint8_t *page = b->img + (size_t)i * ps;
        size_t slot = pgno % ARCHIVE_CACHE_SLOTS;
        uint8_t *img = a->cache_img + slot * ps;
        bool last = i + 1 == b->n;
        size_t head = last ? 16 : 8, d = 0;
        if (a->cache_pgno[slot] == pgno && pgno < ARCHIVE_DELTA)
            d = archive_delta_encode(img, page, ps, p + head, ps);
        walf_put32(p, d ? pgno | ARCHIVE_DELTA : pgno);
        walf_put32(p + 4, last ? b->end.db_pages : 0);
        if (last) put64(p + 8, (uint64_t)b->t_ms);
        if (!d) memcpy(p + head, page, ps);
        p += head + (d ? d : ps);
        memcpy(img, page, ps);
        a->cache_pgno[slot] = pgno;
    }
    size_t raw_len = (size_t)(p - raw);
    b->n = 0;
    memset(b->index, 0, ((size_t)b->mask + 1) * sizeof(uint32_t));
    if (write_record(a->fd, archive_zctx(a), seal_keys(s), a->name, a->records, 'K', raw,
                     raw_len) != 0) {
        /* The archive no longer follows the log: restores past here would
         * be wrong. Stop archiving; the next snapshot starts afresh. */
        log_msg(LOG_ERROR, "pitr_error", "cannot append to archive %s/%s: %s", a->dir, a->name,
                strerror(errno));
        close(a->fd);
        a->fd = -1;
        a->have_w = false;
        a->cache_page_size = 0;
        a->cur.name[0] = '\0'; /* not whole: never vouched for */
        return;
    }
    a->records++;
    a->dirty = true;
    summarize(&a->cur, 'K', raw, raw_len);
    /* Start writing it out now: archive_guard's fdatasync, which every chat
     * of a batch waits for, then finds the data on its way to the disk
     * instead of the megabytes gathered since the last checkpoint (75-480
     * ms on a busy disk). Asynchronous: waits for nothing. */
    sync_file_range(a->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

/* Archive the committed frames the WAL holds past a->w (up to the end of
 * the file) as one record, each commit with its time. */
static void archive_wal(store *s) {
    struct archive *a = s->arch;
    if (!a || a->fd < 0) return;
    if (a->wal_fd < 0) {
        a->wal_fd = open(a->wal_path, O_RDONLY | O_CLOEXEC);
        if (a->wal_fd < 0) return; /* no WAL yet: nothing committed to it */
    }
    uint8_t h[WALF_HEADER_LEN];
    walf hw;
    if (pread(a->wal_fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
        walf_header(&hw, h, sizeof(h)) != 0)
        return; /* an empty (just reset) WAL */
    if (!a->have_w || hw.salt[0] != a->w.salt[0] || hw.salt[1] != a->w.salt[1] ||
        hw.page_size != a->w.page_size) {
        /* A new generation of the log: SQLite restarted it after a complete
         * checkpoint, so the previous one's frames were all archived. */
        a->w = hw;
        a->have_w = true;
    }
    size_t flen = walf_frame_len(&a->w);
    struct stat st;
    if (fstat(a->wal_fd, &st) != 0) return;
    uint64_t upto =
        st.st_size > WALF_HEADER_LEN ? (uint64_t)(st.st_size - WALF_HEADER_LEN) / flen : 0;
    /* SQLite restarts the WAL without truncating it: past the last commit
     * the file holds the old generation's frames, which walf_scan would
     * reject only after they were read and checksummed (megabytes on every
     * archiving after a restart). The WAL hook saw the last commit's end. */
    if (a->npend > 0) {
        uint64_t last = a->pend[a->npend - 1].frames;
        if (last > a->w.frames && last < upto) upto = last;
    }
    if (upto <= a->w.frames) return;
    size_t want = (size_t)(upto - a->w.frames) * flen;
    uint8_t *wal = xmalloc(want);
    ssize_t got = pread(a->wal_fd, wal, want, WALF_HEADER_LEN + (off_t)(a->w.frames * flen));
    walf before = a->w;
    size_t n = got > 0 ? walf_scan(&a->w, wal, (size_t)got) : 0;
    if (n == 0) {
        free(wal);
        return;
    }
    uint32_t frames = (uint32_t)(n / flen), ps = a->w.page_size;
    int64_t now = clock_wall_ms();
    size_t k = 0;
    uint32_t tx = 0; /* the first frame of the transaction being read */
    for (uint32_t i = 0; i < frames && a->fd >= 0; i++) {
        const uint8_t *f = wal + (size_t)i * flen;
        uint32_t commit = walf_frame_commit(f);
        if (!commit) continue;
        /* A whole transaction, frames tx..i, committed at t. */
        int64_t t = commit_time(a, &k, before.frames + i + 1, now);
        if (a->bk.n && (bucket_sec(t) != a->bk.sec || a->bk.end.salt[0] != a->w.salt[0] ||
                        a->bk.end.salt[1] != a->w.salt[1] || a->bk.n >= ARCHIVE_BUCKET_PAGES))
            bucket_emit(s);
        if (a->fd < 0) break;
        if (!a->bk.n) {
            a->bk.sec = bucket_sec(t);
            a->bk.first = before.frames + tx;
        }
        for (uint32_t j = tx; j <= i; j++) {
            const uint8_t *g = wal + (size_t)j * flen;
            bucket_put(a, walf_frame_pgno(g), walf_frame_page(g), ps);
        }
        /* The position after this commit, as walf_scan would leave it (a
         * frame's stored checksum is the running one after it). */
        a->bk.end = a->w;
        a->bk.end.frames = before.frames + i + 1;
        a->bk.end.db_pages = commit;
        a->bk.end.cksum[0] = walf_get32(f + 16);
        a->bk.end.cksum[1] = walf_get32(f + 20);
        a->bk.t_ms = t;
        tx = i + 1;
    }
    free(wal);
}

/* Read the commits gathered so far into the bucket, and write the bucket
 * when its second has passed, or with `all` (archive_sync: before anything
 * could overwrite frames it holds; at a snapshot). The caller holds a->mu:
 * the archiver thread, or the store thread in archive_sync and
 * archive_snapshot. Commits the WAL hook notes meanwhile wait in a->in for
 * the next flush. */
static void archive_flush(store *s, bool all) {
    struct archive *a = s->arch;
    if (!a) return;
    pthread_mutex_lock(&a->in_mu);
    if (a->npend + a->nin > a->pend_cap) {
        a->pend_cap = a->npend + a->nin + 64;
        a->pend = xrealloc(a->pend, a->pend_cap * sizeof(*a->pend));
    }
    if (a->nin) memcpy(a->pend + a->npend, a->in, a->nin * sizeof(*a->in));
    a->npend += a->nin;
    a->nin = 0;
    pthread_mutex_unlock(&a->in_mu);
    if (a->npend > 0) archive_wal(s);
    a->npend = 0;
    if (a->bk.n && (all || bucket_sec(clock_wall_ms()) != a->bk.sec)) bucket_emit(s);
}

void archive_commit(store *s, int pages) { archive_commit_at(s, pages, clock_wall_ms()); }

void archive_commit_at(store *s, int pages, int64_t now) {
    struct archive *a = s->arch;
    if (!a) return;
    pthread_mutex_lock(&a->in_mu);
    if (a->nin == a->in_cap) {
        a->in_cap = a->in_cap ? a->in_cap * 2 : 64;
        a->in = xrealloc(a->in, a->in_cap * sizeof(*a->in));
    }
    a->in[a->nin++] =
        (struct pending_commit){.frames = (uint64_t)(pages > 0 ? pages : 0), .t_ms = now};
    /* The first commit arms the thread's timers; a full record's worth
     * wakes it at once. */
    if (a->nin == 1 || a->in[a->nin - 1].frames - a->in[0].frames + 1 >= ARCHIVE_FLUSH_FRAMES ||
        a->in[a->nin - 1].frames < a->in[0].frames)
        pthread_cond_signal(&a->in_wake);
    pthread_mutex_unlock(&a->in_mu);
}

void archive_sync(store *s) {
    struct archive *a = s->arch;
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    /* The second's bucket too, however far it got: its pages exist
     * nowhere else once the WAL restarts. */
    archive_flush(s, true);
    if (a->fd >= 0 && a->dirty) {
        fdatasync(a->fd);
        atomic_fetch_add_explicit(&s->archive_syncs, 1, memory_order_relaxed);
        a->dirty = false;
    }
    pthread_mutex_unlock(&a->mu);
}

void archive_sync_start(store *s) {
    struct archive *a = s->arch;
    if (!a) return;
    pthread_mutex_lock(&a->in_mu);
    a->sync_wanted = true;
    pthread_cond_signal(&a->in_wake);
    pthread_mutex_unlock(&a->in_mu);
}

/* ---- the archiver thread ---- */

/* Commits gathered for this long with no new one are archived (when
 * writes pause, a restore soon sees them). */
#define ARCHIVE_IDLE_MS 50

/* When the commits in a->in are due (caller holds a->in_mu): a record's
 * worth of frames, the WAL restarted, the second of the oldest over (its
 * bucket is then whole), the oldest ARCHIVE_FLUSH_MS old, or
 * ARCHIVE_IDLE_MS without a commit. Else 0 and *wait_ms until the first
 * of the times. */
static bool in_due(const struct archive *a, int64_t now, int64_t *wait_ms) {
    const struct pending_commit *first = &a->in[0], *last = &a->in[a->nin - 1];
    if (last->frames < first->frames || last->frames - first->frames + 1 >= ARCHIVE_FLUSH_FRAMES)
        return true;
    int64_t w1 = first->t_ms + ARCHIVE_FLUSH_MS - now, w2 = last->t_ms + ARCHIVE_IDLE_MS - now;
    int64_t w3 = (bucket_sec(first->t_ms) + 1) * 1000 - now;
    *wait_ms = w1 < w2 ? w1 : w2;
    if (w3 < *wait_ms) *wait_ms = w3;
    return *wait_ms <= 0 || bucket_sec(now) != bucket_sec(first->t_ms);
}

/* Every ARCHIVE_NOTE_MS, the open segment's synced part goes in the
 * ledger (archiver thread, under a->mu): a start after a crash then reads
 * only what was written after it, not the whole segment (up to an hour of
 * commits, 7 GB at 15,000 chats/s). */
static void note_progress(store *s) {
    struct archive *a = s->arch;
    int64_t now = clock_mono_ms();
    if (a->fd < 0 || !a->cur.name[0] || a->records == 0 || now - a->noted_ms < ARCHIVE_NOTE_MS)
        return;
    a->noted_ms = now;
    struct stat st;
    if ((a->dirty && fdatasync(a->fd) != 0) || fstat(a->fd, &st) != 0) return;
    a->dirty = false;
    ledger_file f = a->cur;
    f.id = ledger_id_of(&st);
    f.records = a->records;
    f.open = true;
    ledger_put(&a->led, &f);
    save_ledger(s, true);
}

/* Reads, compresses, seals and writes the WAL's committed frames, off the
 * store thread: in a batch's path this was a few ms per 256 frames, and up
 * to 300 ms when write(2) or the writeback it starts waited for a busy
 * disk. A frame is still never overwritten unarchived: archive_guard
 * flushes (under a->mu, after this thread's flush in progress) before any
 * write that may restart the WAL. So this thread keeps the normal
 * priority: the store thread may wait for a flush it holds a->mu for,
 * and at nice +10 (as the checkpointer) on a machine busy with other
 * work it was preempted for up to 2 s holding it, a WAL restart and
 * every chat behind it waiting that long. */
static void *archive_run(void *arg) {
    store *s = arg;
    struct archive *a = s->arch;
    /* The second of the bucket this thread's last flush left open, to
     * write it when that second ends even if no commit follows; none when
     * it left none (only this thread leaves one: archive_sync and
     * archive_snapshot write theirs whole, so at worst this wakes once
     * for a bucket already written). */
    bool bucket_open = false;
    int64_t open_sec = 0;
    pthread_mutex_lock(&a->in_mu);
    while (!a->stop) {
        if (a->sync_wanted) {
            a->sync_wanted = false;
            pthread_mutex_unlock(&a->in_mu);
            archive_sync(s);
            bucket_open = false;
            pthread_mutex_lock(&a->in_mu);
            continue;
        }
        int64_t now = clock_wall_ms(), wait_ms = -1, w;
        bool due = false;
        if (bucket_open) {
            w = (open_sec + 1) * 1000 - now;
            due = w <= 0 || bucket_sec(now) != open_sec; /* (also a clock set back) */
            wait_ms = w;
        }
        if (!due && a->nin > 0) {
            due = in_due(a, now, &w);
            if (wait_ms < 0 || w < wait_ms) wait_ms = w;
        }
        if (!due && wait_ms < 0) {
            pthread_cond_wait(&a->in_wake, &a->in_mu);
            continue;
        }
        if (!due) {
            /* At most ARCHIVE_FLUSH_MS: a wall clock set back does not
             * hold a second's bucket for as long. */
            if (wait_ms > ARCHIVE_FLUSH_MS) wait_ms = ARCHIVE_FLUSH_MS;
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += wait_ms / 1000;
            until.tv_nsec += (wait_ms % 1000) * 1000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&a->in_wake, &a->in_mu, &until);
            continue;
        }
        pthread_mutex_unlock(&a->in_mu);
        pthread_mutex_lock(&a->mu);
        archive_flush(s, false);
        note_progress(s);
        bucket_open = a->bk.n > 0;
        open_sec = a->bk.sec;
        pthread_mutex_unlock(&a->mu);
        pthread_mutex_lock(&a->in_mu);
    }
    pthread_mutex_unlock(&a->in_mu);
    return NULL;
}

void archive_guard(store *s) {
    struct archive *a = s->arch;
    if (!a) return;
    /* A write restarts the WAL only when its read began with every frame
     * copied into the database file, read here from the WAL-index
     * (walshm.h); checked after BEGIN, the frames being overwritten only
     * when this write commits, and a checkpoint that completes after the
     * BEGIN shows here too (a sync too many, never one too few). Any
     * checkpoint counts: the checkpointer's, the store thread's own, a
     * backup's or an sqlite3 shell's. A checkpointer run under load never
     * copies every frame, and the rule this replaces (sync while a run is
     * active or after one that copied all) put an fdatasync in front of
     * every batch for the whole of such a run: 1.6 s of a 5 s run at
     * 25,000 chats/s, up to 480 ms before one batch, on this busy disk. */
    walshm w;
    bool known = walshm_read(s->shm_fd, &w) == 0;
    if (known && !walshm_may_restart(&w)) return;
    /* The pipelined commit tells the archive of a commit only once it is
     * synced (syncer.h): every commit must be told before the sync. */
    if (s->sync) syncer_drain(s->sync);
    archive_sync(s);
    if (!known) return;
    /* The archive now holds every committed frame of this generation,
     * synced, and this write may restart the WAL: noted in the ledger, so
     * a start after a crash that finds the next generation knows the
     * archive follows on (archive_start) instead of taking a snapshot (11
     * s at 820 MB, before serving chats). Not fsynced: once per WAL
     * restart, in front of a batch; a note lost to a power cut costs that
     * start the snapshot, as before. */
    pthread_mutex_lock(&a->mu);
    if (a->fd >= 0 && a->have_w && !a->dirty && a->w.frames == w.mx_frame &&
        !(a->led.has_gen && a->led.gen_salt[0] == a->w.salt[0] &&
          a->led.gen_salt[1] == a->w.salt[1] && a->led.gen_frames == a->w.frames)) {
        a->led.has_gen = true;
        a->led.gen_salt[0] = a->w.salt[0];
        a->led.gen_salt[1] = a->w.salt[1];
        a->led.gen_frames = a->w.frames;
        save_ledger(s, false);
    }
    pthread_mutex_unlock(&a->mu);
}

/* ---- snapshots ---- */

/* Seal the file at plain into dir/name. Returns 0 or -1. */
static int seal_snapshot(store *s, const char *plain, const char *name, int64_t t_ms) {
    struct archive *a = s->arch;
    char path[4200], tmp[4300];
    snprintf(path, sizeof(path), "%s/%s", a->dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int in = open(plain, O_RDONLY | O_CLOEXEC);
    int fd = in >= 0 ? create_file(s, tmp) : -1;
    int rc = fd >= 0 ? 0 : -1;
    uint8_t *chunk = xmalloc(8 + ARCHIVE_CHUNK);
    uint64_t off = 0;
    uint32_t index = 0;
    while (rc == 0) {
        ssize_t n = pread(in, chunk + 8, ARCHIVE_CHUNK, (off_t)off);
        if (n < 0) rc = -1;
        if (n <= 0) break;
        put64(chunk, off);
        rc = write_record(fd, archive_zctx(s->arch), seal_keys(s), name, index++, 'S', chunk,
                          8 + (size_t)n);
        off += (uint64_t)n;
    }
    if (rc == 0) {
        put64(chunk, off);
        put64(chunk + 8, (uint64_t)t_ms);
        rc = write_record(fd, archive_zctx(s->arch), seal_keys(s), name, index, 'E', chunk, 16);
    }
    free(chunk);
    if (rc == 0) rc = fdatasync(fd);
    if (fd >= 0) close(fd);
    if (in >= 0) close(in);
    if (rc == 0) rc = rename(tmp, path);
    if (rc != 0) unlink(tmp);
    else sync_dir(a->dir);
    struct stat st;
    if (rc == 0 && stat(path, &st) == 0) {
        ledger_file f = {.id = ledger_id_of(&st), .last = 'E', .ended = true};
        snprintf(f.name, sizeof(f.name), "%s", name);
        ledger_put(&a->led, &f);
    }
    return rc;
}

/* Write the ledger with the files that are still as noted (pruned ones
 * leave it). Caller holds a->mu (or the threads are not running). */
static void save_ledger(store *s, bool durable) {
    struct archive *a = s->arch;
    for (size_t i = 0; i < a->led.n;) {
        char p[4200];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", a->dir, a->led.files[i].name);
        ledger_id now = {0};
        if (stat(p, &st) == 0) now = ledger_id_of(&st);
        const ledger_file *f = &a->led.files[i];
        if (ledger_id_eq(&now, &f->id) ||
            (f->open && now.ino == f->id.ino && now.size >= f->id.size)) {
            i++;
            continue;
        }
        ledger_remove(&a->led, a->led.files[i].name);
    }
    if ((durable ? ledger_save : ledger_save_fast)(&a->led, a->ledger_path) != 0)
        log_msg(LOG_ERROR, "pitr_error", "cannot write %s: %s (the next start checks every file)",
                a->ledger_path, strerror(errno));
}

/* Drop snapshots and segments older than the newest snapshot at or before
 * the window's start (the anchor), and pitr_log's base files once the
 * snapshot that holds that change log is gone. Of the snapshots after the
 * anchor only the last of each day and the newest are kept: the segments
 * stay whole, so no recovery point is lost, and a restore replays at most
 * a day of them (at an hourly interval 35 days would keep 840 copies of
 * the database). */
static void prune(store *s, int64_t now_ms) {
    struct archive *a = s->arch;
    arch_file *files;
    size_t n = list_files(a->dir, &files);
    int64_t window_start = now_ms - s->opt.pitr_retention_days * 86400000LL;
    int64_t anchor = -1, newest = -1, oldest = -1;
    for (size_t i = 0; i < n; i++) {
        if (!files[i].snap) continue;
        if (files[i].t_ms <= window_start) anchor = files[i].gen;
        if (oldest < 0) oldest = files[i].gen;
        newest = files[i].gen;
    }
    bool pruned = false;
    for (size_t i = 0; i < n; i++) {
        bool drop = anchor >= 0 && files[i].gen < anchor;
        /* The oldest may hold an old pitr_log (restores before the switch). */
        if (!drop && files[i].snap && files[i].gen != anchor && files[i].gen != newest &&
            files[i].gen != oldest) {
            /* A later snapshot of the same day makes this one redundant. */
            for (size_t j = i + 1; j < n && !drop; j++)
                drop = files[j].snap && files[j].t_ms / 86400000 == files[i].t_ms / 86400000;
        }
        if (!drop) continue;
        char p[4200];
        snprintf(p, sizeof(p), "%s/%s", a->dir, files[i].name);
        if (unlink(p) == 0 && files[i].gen < anchor) pruned = true;
    }
    if (pruned) {
        /* The oldest snapshot left is past the switch from pitr_log (that
         * snapshot, the first, is gone): the old bases serve nothing. */
        DIR *d = opendir(a->dir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (strncmp(de->d_name, "base-", 5) != 0) continue;
            char p[4200];
            snprintf(p, sizeof(p), "%s/%s", a->dir, de->d_name);
            unlink(p);
        }
        if (d) closedir(d);
    }
    free(files);
}

int archive_snapshot(store *s) {
    struct archive *a = s->arch;
    if (!a) return -1;
    pthread_mutex_lock(&a->mu);
    int64_t now = clock_wall_ms();
    int64_t gen = a->gen + 1;
    char plain[4200], name[96];
    snprintf(plain, sizeof(plain), "%s/.snapshot.db", a->dir);
    snprintf(name, sizeof(name), "snap-%lld-%lld.pitr", (long long)gen, (long long)now);
    unlink(plain);
    archive_flush(s, true);
    /* Between batches: the copy is the database as of the last archived
     * commit, so the new generation's segments start exactly after it. */
    int rc = store_copy_db(s->db, plain);
    if (rc == SQLITE_OK && seal_snapshot(s, plain, name, now) == 0) {
        unlink(plain);
        open_segment(s, gen, 0);
        /* Deltas start afresh from what the snapshot holds. */
        a->cache_page_size = 0;
        log_msg(LOG_INFO, "pitr_snapshot", "base snapshot %s/%s written", a->dir, name);
        prune(s, now);
        save_ledger(s, true);
        rc = 0;
    } else {
        unlink(plain);
        log_msg(LOG_ERROR, "pitr_error", "cannot write base snapshot %s/%s", a->dir, name);
        rc = -1;
    }
    s->last_snapshot = time(NULL);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* ---- start ---- */

/* What a clean stop leaves as its segment's last record ('Z'): the
 * database file as the closing connection left it, with no WAL. */
#define ARCHIVE_CLOSE_LEN 32
_Static_assert(ARCHIVE_CLOSE_LEN == LEDGER_CLOSE_LEN, "the ledger keeps the clean-stop record");
static void file_id(const struct stat *st, uint8_t out[ARCHIVE_CLOSE_LEN]) {
    put64(out, (uint64_t)st->st_size);
    put64(out + 8, (uint64_t)st->st_mtim.tv_sec);
    put64(out + 16, (uint64_t)st->st_mtim.tv_nsec);
    put64(out + 24, (uint64_t)st->st_ino);
}

/* Read one archive file whole (each record's CRC and seal, a snapshot's
 * end record) into the summary f. Returns 0 when it is sound (*torn: it
 * ends in a record cut by a crash), or -1 with *err when it is damaged. */
static int read_whole(const char *dir, const arch_file *file, const crypto_keyring *keys,
                      const ledger_file *from, ledger_file *f, bool *torn, const atomic_bool *stop,
                      wsg_error *err) {
    file_reader r;
    int got = -1;
    memset(f, 0, sizeof(*f));
    if (from) *f = *from;
    snprintf(f->name, sizeof(f->name), "%s", file->name);
    *torn = false;
    if (reader_open(&r, dir, file->name, err) == 0) {
        uint8_t *raw;
        size_t len;
        int type;
        if (from && fseeko(r.f, (off_t)from->id.size, SEEK_SET) == 0) r.index = from->records;
        else if (from) memset(f, 0, sizeof(*f)); /* (never: the caller saw the size) */
        while ((got = reader_next(&r, keys, &type, &raw, &len, torn, err)) == 1) {
            summarize(f, type, raw, len);
            free(raw);
            if (stop && atomic_load(stop)) {
                got = 0;
                break;
            }
        }
        f->records = r.index;
        f->open = false;
        reader_close(&r);
    }
    if (got == 0 && file->snap && !f->ended && !(stop && atomic_load(stop))) {
        wsg_error_set(err, WSG_E_STORE_ARCHIVE, "%s is damaged: the snapshot is cut short",
                      file->name);
        got = -1;
    }
    return got == 0 ? 0 : -1;
}

static void log_damaged(const char *dir, const char *name, const wsg_error *err) {
    log_msg(LOG_ERROR, "pitr_damaged",
            "point-in-time archive %s/%s: %s (restores that need it will fail)", dir, name,
            err->message);
}

/* What verify read at start, and what it left to the background check. */
typedef struct verify_tally {
    int damaged;
    size_t nread;
    uint64_t bytes_read, bytes_trusted;
} verify_tally;

/* Read an archive file the ledger does not vouch for, whole; or, for a
 * segment the last run was still writing (noted: its ledger line), only
 * what follows the noted part, which goes to the background check. Counts
 * into *t, reports damage (pitr_damaged) and a torn end (pitr_torn).
 * Returns whether the file is sound; *f is what it holds, with id. */
static bool read_unvouched(store *s, const arch_file *file, const ledger_file *noted,
                           const ledger_id *id, ledger_file *f, bool *torn, verify_tally *t) {
    struct archive *a = s->arch;
    wsg_error err = {0};
    bool ok = read_whole(a->dir, file, s->opt.keys, noted, f, torn, NULL, &err) == 0;
    t->nread++;
    t->bytes_read += id->size - (noted ? noted->id.size : 0);
    if (noted) {
        a->bg[a->nbg++] = *noted;
        t->bytes_trusted += noted->id.size;
    }
    if (!ok) {
        t->damaged++;
        log_damaged(a->dir, file->name, &err);
    } else if (*torn) {
        log_msg(LOG_INFO, "pitr_torn",
                "point-in-time archive %s/%s ends in a torn record (cut by a crash); the"
                " WAL is archived again from there",
                a->dir, file->name);
    }
    f->id = *id;
    return ok;
}

/* Check the archive files: each one the ledger does not vouch for (no
 * line, or not the size, mtime and inode it noted: written since the last
 * record, by a run that crashed, or by anything else) is read whole (CRC,
 * seal, a snapshot's end); the others are taken from the ledger and left
 * for the background check (a->bg). Sets where the archive stands (the
 * next segment, and from the newest commit record, where it is in the
 * WAL); *continuous when the last run stopped cleanly and nothing wrote
 * the database since. Returns the number of damaged files. */
static int verify(store *s, walf *pos, bool *have_pos, bool *have_snap, bool *continuous) {
    struct archive *a = s->arch;
    arch_file *files;
    size_t n = list_files(a->dir, &files);
    verify_tally t = {0};
    int64_t t0 = clock_mono_ms();
    *have_pos = *have_snap = *continuous = false;
    a->gen = 0;
    a->seq = -1;
    a->bg = n ? xmalloc(n * sizeof(*a->bg)) : NULL;
    a->nbg = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", a->dir, files[i].name);
        ledger_id id = {0};
        if (stat(path, &st) == 0) id = ledger_id_of(&st);
        const ledger_file *known = ledger_find(&a->led_at_open, files[i].name);
        ledger_file f;
        bool ok, torn = false;
        /* A segment the last run was still writing: its synced part was
         * noted, the rest (what a crash may have cut) is read now. */
        bool prefix = known && known->open && !files[i].snap && known->id.ino == id.ino &&
                      id.size >= known->id.size;
        if (known && !known->open && ledger_id_eq(&known->id, &id) &&
            (!files[i].snap || known->ended)) {
            f = *known;
            ok = true;
            a->bg[a->nbg++] = f;
            t.bytes_trusted += id.size;
        } else {
            ok = read_unvouched(s, &files[i], prefix ? known : NULL, &id, &f, &torn, &t);
        }
        /* Sound and whole: the next start need not read it again (a torn
         * or damaged file is read, and reported, at every start). */
        if (ok && !torn) ledger_put(&a->led, &f);
        if (ok && f.has_pos) {
            *pos = f.pos;
            *have_pos = true;
        }
        if (files[i].snap && ok) *have_snap = true;
        /* The newest file says how the last run ended. */
        bool closed = false;
        if (f.has_close) {
            uint8_t now[ARCHIVE_CLOSE_LEN];
            file_id(&a->db_at_open, now);
            closed = a->db_stat_ok && !a->wal_at_open && memcmp(now, f.close, sizeof(now)) == 0;
        }
        *continuous = !files[i].snap && ok && f.last == 'Z' && closed;
    }
    if (n > 0) {
        a->gen = files[n - 1].gen;
        a->seq = files[n - 1].snap ? -1 : files[n - 1].seq;
        /* A snapshot as the newest file: nothing was written after it. */
        if (files[n - 1].snap) *continuous = false;
    }
    log_msg(LOG_INFO, "pitr_check",
            "point-in-time archive %s: %zu of %zu files read at start (%llu bytes, %lld ms, %d"
            " damaged); %zu unchanged since the last record (%llu bytes) are checked in the"
            " background",
            a->dir, t.nread, n, (unsigned long long)t.bytes_read, (long long)(clock_mono_ms() - t0),
            t.damaged, a->nbg, (unsigned long long)t.bytes_trusted);
    free(files);
    return t.damaged;
}

/* The background check (thread wsgate-verify, at nice +19): reads whole
 * the files the ledger vouched for at start, as verify does the others.
 * A damaged one is reported as at start (pitr_damaged), leaves the
 * ledger (the next start reads and reports it again) and asks the store
 * thread for a fresh snapshot, so later times restore. */
static void *verify_run(void *arg) {
    store *s = arg;
    struct archive *a = s->arch;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    int64_t t0 = clock_mono_ms();
    size_t checked = 0;
    int damaged = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < a->nbg && !atomic_load(&a->bg_stop); i++) {
        arch_file file = {.snap = strncmp(a->bg[i].name, "snap-", 5) == 0};
        snprintf(file.name, sizeof(file.name), "%s", a->bg[i].name);
        char path[4200];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", a->dir, file.name);
        if (stat(path, &st) != 0) continue; /* pruned since the start */
        ledger_file f;
        bool torn;
        wsg_error err = {0};
        int rc = read_whole(a->dir, &file, s->opt.keys, NULL, &f, &torn, &a->bg_stop, &err);
        if (atomic_load(&a->bg_stop)) break;
        if (rc == 0 && torn) {
            /* A file vouched for as whole now ends short: changed under it. */
            wsg_error_set(&err, WSG_E_STORE_ARCHIVE, "%s is damaged: cut short", file.name);
            rc = -1;
        }
        checked++;
        bytes += (uint64_t)st.st_size;
        if (rc == 0) continue;
        damaged++;
        log_damaged(a->dir, file.name, &err);
        pthread_mutex_lock(&a->mu);
        ledger_remove(&a->led, file.name);
        save_ledger(s, true);
        pthread_mutex_unlock(&a->mu);
        atomic_store(&a->snapshot_wanted, true);
    }
    if (!atomic_load(&a->bg_stop))
        log_msg(damaged ? LOG_ERROR : LOG_INFO, "pitr_verified",
                "point-in-time archive %s: background check of %zu files (%llu bytes) done in %lld"
                " ms: %d damaged",
                a->dir, checked, (unsigned long long)bytes, (long long)(clock_mono_ms() - t0),
                damaged);
    return NULL;
}

bool archive_snapshot_wanted(store *s) {
    return s->arch && atomic_exchange(&s->arch->snapshot_wanted, false);
}

static bool has_table(sqlite3 *db, const char *name) {
    sqlite3_stmt *st;
    bool yes = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        yes = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    return yes;
}

void archive_prepare(store *s, const char *db_path) {
    struct archive *a = xcalloc(1, sizeof(*a));
    a->dir = xstrdup(s->pitr_dir);
    a->db_path = xstrdup(db_path);
    size_t plen = strlen(db_path) + 5;
    a->wal_path = xmalloc(plen);
    snprintf(a->wal_path, plen, "%s-wal", db_path);
    a->fd = a->wal_fd = -1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->in_mu, NULL);
    pthread_cond_init(&a->in_wake, NULL);
    a->db_stat_ok = stat(db_path, &a->db_at_open) == 0;
    struct stat w;
    a->wal_at_open = stat(a->wal_path, &w) == 0 && w.st_size > 0;
    size_t llen = strlen(a->dir) + 10;
    a->ledger_path = xmalloc(llen);
    snprintf(a->ledger_path, llen, "%s/verified", a->dir);
    /* Missing or unsound: every file is read at start, as before it. */
    ledger_load(&a->led_at_open, a->ledger_path);
    s->arch = a;
}

int archive_start(store *s) {
    struct archive *a = s->arch;
    walf pos = {0};
    bool have_pos, have_snap, continuous;
    int damaged = verify(s, &pos, &have_pos, &have_snap, &continuous);
    if (open_segment(s, a->gen, a->seq + 1) != 0) return -1;
    if (have_pos && a->wal_at_open) {
        /* Go on from the last archived commit when the WAL is still the
         * generation it was in (a crash, not a clean stop, left it). */
        a->w = pos;
        a->have_w = true;
    }
    /* Commits the archive lacks (the schema's at open, or what a crash
     * left unarchived): their commit time is not known, now is the bound. */
    archive_wal(s);
    bucket_emit(s);
    if (have_pos && a->wal_at_open && a->have_w && a->w.salt[0] == pos.salt[0] &&
        a->w.salt[1] == pos.salt[1])
        continuous = true;
    /* Or the WAL restarted once since the archive's last record (SQLite
     * adds 1 to salt-1 at a restart), and that record ends the generation
     * the ledger noted as wholly archived when the restarting write began:
     * the frames of this generation are all that followed it. */
    const ledger *g = &a->led_at_open;
    if (have_pos && a->wal_at_open && a->have_w && g->has_gen && g->gen_salt[0] == pos.salt[0] &&
        g->gen_salt[1] == pos.salt[1] && g->gen_frames == pos.frames &&
        a->w.salt[0] == pos.salt[0] + 1u)
        continuous = true;
    bool legacy = has_table(s->db, "pitr_log");
    /* Without a proof that the archive follows on from the last run (a
     * version without it, or PITR off, may have written since), restores
     * past here start from a new snapshot. */
    int rc = 0;
    if (!have_snap || legacy || damaged || !continuous) rc = archive_snapshot(s);
    else s->last_snapshot = time(NULL);
    /* What was read now, and the snapshot if one was taken: a crash from
     * here on costs the next start only the files written after it. */
    save_ledger(s, true);
    ledger_free(&a->led_at_open);
    if (legacy && rc == 0) {
        /* The snapshot just written holds the old change log, which
         * restores to a time before it read from there: the live table
         * goes. */
        rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE; DROP TABLE pitr_log; COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        log_msg(rc == SQLITE_OK ? LOG_INFO : LOG_ERROR, "pitr_migrated",
                "change log pitr_log moved into base snapshot %lld of %s: %s", (long long)a->gen,
                a->dir, rc == SQLITE_OK ? "done" : sqlite3_errstr(rc));
    }
    if (pthread_create(&a->thread, NULL, archive_run, s) != 0) {
        log_msg(LOG_ERROR, "pitr_error", "cannot start the archiver thread");
        abort();
    }
    pthread_setname_np(a->thread, "wsgate-archive");
    a->started = true;
    if (a->nbg > 0) {
        if (pthread_create(&a->bg_thread, NULL, verify_run, s) != 0) {
            log_msg(LOG_ERROR, "pitr_error", "cannot start the archive's background check");
            abort();
        }
        pthread_setname_np(a->bg_thread, "wsgate-verify");
        a->bg_started = true;
    }
    return 0;
}

void archive_close(store *s) {
    struct archive *a = s->arch;
    if (!a) return;
    if (a->bg_started) {
        /* Unfinished, it is not lost: the files stay in the ledger, and
         * the next start checks them in the background again. */
        atomic_store(&a->bg_stop, true);
        pthread_join(a->bg_thread, NULL);
    }
    if (a->started) {
        pthread_mutex_lock(&a->in_mu);
        a->stop = true;
        pthread_cond_signal(&a->in_wake);
        pthread_mutex_unlock(&a->in_mu);
        pthread_join(a->thread, NULL);
    }
    /* store_close's archive_sync wrote the last bucket; one left (no sync
     * since the last commit) goes before the stop's record. */
    if (a->fd >= 0 && a->bk.n) bucket_emit(s);
    if (a->fd >= 0) {
        /* After the store connection closed (its last checkpoint copied
         * the WAL, all archived, into the file and removed the WAL): the
         * file as it is now lets the next start go on without a snapshot. */
        struct stat st, w;
        if (stat(a->db_path, &st) == 0 && stat(a->wal_path, &w) != 0) {
            uint8_t id[ARCHIVE_CLOSE_LEN];
            file_id(&st, id);
            if (write_record(a->fd, archive_zctx(a), seal_keys(s), a->name, a->records++, 'Z', id,
                             sizeof(id)) == 0)
                summarize(&a->cur, 'Z', id, sizeof(id));
        }
    }
    close_segment(s);
    if (a->started) save_ledger(s, true);
    if (a->wal_fd >= 0) close(a->wal_fd);
    free(a->ledger_path);
    ledger_free(&a->led);
    ledger_free(&a->led_at_open);
    free(a->bg);
    free(a->dir);
    free(a->db_path);
    free(a->wal_path);
    free(a->buf);
    free(a->cache_pgno);
    free(a->cache_img);
    free(a->bk.pgno);
    free(a->bk.img);
    free(a->bk.index);
    free(a->pend);
    free(a->in);
    ZSTD_freeCCtx(a->zc);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->in_mu);
    pthread_cond_destroy(&a->in_wake);
    free(a);
    s->arch = NULL;
}

/* ---- restore ---- */

/* Decode snapshot name of dir into the open file out. Returns 0 or
 * WSG_E_STORE_ARCHIVE with *err. */
static int decode_snapshot(const char *dir, const char *name, const crypto_keyring *keys, int out,
                           wsg_error *err) {
    file_reader r;
    int rc = reader_open(&r, dir, name, err);
    if (rc != 0) return rc;
    rc = WSG_E_STORE_ARCHIVE; /* until its end record is written */
    int got, type;
    uint8_t *raw;
    size_t len;
    bool torn;
    while ((got = reader_next(&r, keys, &type, &raw, &len, &torn, err)) == 1) {
        bool ok = len >= 16;
        if (ok && type == 'S') {
            ok = pwrite(out, raw + 8, len - 8, (off_t)get64(raw)) == (ssize_t)(len - 8);
        } else if (ok && type == 'E') {
            ok = ftruncate(out, (off_t)get64(raw)) == 0;
            rc = ok ? 0 : WSG_E_STORE_ARCHIVE;
        }
        free(raw);
        if (!ok) {
            rc = wsg_error_set(err, WSG_E_STORE_ARCHIVE, "cannot write the snapshot %s: %s", name,
                               strerror(errno));
            break;
        }
    }
    if (got == 0 && rc != 0)
        rc = wsg_error_set(err, WSG_E_STORE_ARCHIVE, "%s is damaged: the snapshot is cut short",
                           name);
    if (got < 0) rc = got;
    reader_close(&r);
    return rc;
}

/* Frame i of a commit record at raw + *o: sets its page number, delta
 * flag, commit size and time, and where its page or delta starts; advances
 * *o past it. Returns 0, or -1 when malformed. */
typedef struct rec_frame {
    uint32_t pgno, commit;
    bool delta;
    int64_t t_ms;
    const uint8_t *data;
    size_t len;
} rec_frame;

static int next_frame(const uint8_t *raw, size_t len, size_t *o, uint32_t ps, rec_frame *f) {
    if (len - *o < 8) return -1;
    uint32_t h = walf_get32(raw + *o);
    f->pgno = h & ~ARCHIVE_DELTA;
    f->delta = (h & ARCHIVE_DELTA) != 0;
    f->commit = walf_get32(raw + *o + 4);
    *o += 8;
    if (f->commit) {
        if (len - *o < 8) return -1;
        f->t_ms = (int64_t)get64(raw + *o);
        *o += 8;
    }
    f->data = raw + *o;
    if (f->delta) {
        /* The delta's length is its runs': walk them. */
        if (len - *o < 2) return -1;
        size_t runs = (size_t)raw[*o] << 8 | raw[*o + 1], q = *o + 2;
        for (size_t r = 0; r < runs; r++) {
            if (len - q < 4) return -1;
            size_t n = walf_get32(raw + q) & 0xffff;
            if (len - q - 4 < n) return -1;
            q += 4 + n;
        }
        f->len = q - *o;
    } else {
        if (len - *o < ps) return -1;
        f->len = ps;
    }
    *o += f->len;
    return f->pgno ? 0 : -1;
}

/* Write the pages of a commit record's commits at or before to_ms into out
 * (a delta over what out holds there: the page as the previous commit left
 * it). Sets *applied and *db_pages (the last applied commit's size), and
 * *later when a commit after to_ms was reached. Returns 0 or -1. */
static int apply_commits(int out, int type, const uint8_t *raw, size_t len, int64_t to_ms,
                         uint32_t *page_size, uint32_t *db_pages, bool *applied, bool *later) {
    /* A 'C' record holds every frame; a 'K' record (a bucket) fewer
     * entries than the WAL frames it covers, and one commit, its last. */
    size_t head = type == 'K' ? ARCHIVE_BUCKET_HEAD : ARCHIVE_COMMIT_HEAD;
    uint32_t frames = walf_get32(raw + (type == 'K' ? 48 : 24)), ps = walf_get32(raw + 28);
    if (ps < 512 || ps > 65536) return -1;
    /* First the end of the last commit at or before to_ms. */
    size_t o = head;
    uint32_t upto_frames = 0;
    rec_frame f;
    for (uint32_t i = 0; i < frames; i++) {
        if (next_frame(raw, len, &o, ps, &f) != 0) return -1;
        if (f.commit && f.t_ms > to_ms) {
            *later = true;
            break;
        }
        if (f.commit) upto_frames = i + 1;
    }
    if (!*later && o != len) return -1;
    uint8_t *page = xmalloc(ps);
    int rc = 0;
    o = head;
    for (uint32_t i = 0; rc == 0 && i < upto_frames; i++) {
        if (next_frame(raw, len, &o, ps, &f) != 0) {
            rc = -1;
            break;
        }
        off_t at = (off_t)(f.pgno - 1) * ps;
        if (f.delta) {
            ssize_t got = pread(out, page, ps, at);
            if (got < 0) got = 0;
            memset(page + got, 0, ps - (size_t)got);
            if (archive_delta_apply(page, ps, f.data, f.len) != (int)f.len ||
                pwrite(out, page, ps, at) != (ssize_t)ps)
                rc = -1;
        } else if (pwrite(out, f.data, ps, at) != (ssize_t)ps) {
            rc = -1;
        }
        if (f.commit) {
            *db_pages = f.commit;
            *applied = true;
        }
    }
    free(page);
    *page_size = ps;
    return rc;
}

/* Where a restore's replay stands: the file it writes, the page size and
 * length its last applied commit left, and the end of the last record in
 * the WAL (salts and frame count), where the next one of that generation
 * must start. */
typedef struct restore_state {
    int fd;
    int64_t to_ms;
    uint32_t page_size, db_pages;
    bool applied, done, have_at;
    walf at;
} restore_state;

/* The snapshot a restore to to_ms starts from: the newest taken at or
 * before it. Sets *earliest_ms to the oldest snapshot's time (-1 with
 * none). Returns a pointer into files, or NULL when none is that old. */
static const arch_file *restore_base(const arch_file *files, size_t n, int64_t to_ms,
                                     int64_t *earliest_ms) {
    const arch_file *snap = NULL;
    *earliest_ms = -1;
    for (size_t i = 0; i < n; i++) {
        if (!files[i].snap) continue;
        if (*earliest_ms < 0 || files[i].t_ms < *earliest_ms) *earliest_ms = files[i].t_ms;
        if (files[i].t_ms <= to_ms && (!snap || files[i].gen > snap->gen)) snap = &files[i];
    }
    return snap;
}

/* Apply one commit or bucket record (index of segment name) onto st->fd,
 * refusing a gap in the WAL's frames; marks st->done after the last commit
 * at or before st->to_ms, or on an error. Returns 0, or WSG_E_STORE_ARCHIVE with *err
 * filled. raw stays the caller's. */
static int restore_record(restore_state *st, const char *name, uint32_t index, int type,
                          const uint8_t *raw, size_t len, wsg_error *err) {
    uint32_t s0 = walf_get32(raw + 8), s1 = walf_get32(raw + 12);
    uint64_t first = get64(raw + 16);
    bool later = false;
    int rc = 0;
    /* Within one generation of the WAL, frames follow on: a gap means a
     * lost record, and replaying past it would mix states. */
    if (st->have_at && s0 == st->at.salt[0] && s1 == st->at.salt[1] && first != st->at.frames) {
        rc = wsg_error_set(
            err, WSG_E_STORE_ARCHIVE,
            "%s record %u: frames %llu..%llu of the WAL are missing from the archive", name, index,
            (unsigned long long)st->at.frames, (unsigned long long)first);
    } else if ((errno = 0, apply_commits(st->fd, type, raw, len, st->to_ms, &st->page_size,
                                         &st->db_pages, &st->applied, &later)) != 0) {
        rc = wsg_error_set(err, WSG_E_STORE_ARCHIVE, "%s record %u: cannot apply (%s)", name, index,
                           errno ? strerror(errno) : "malformed");
    }
    /* Commits are archived in order: after a later one, all are. */
    if (later || rc != 0) st->done = true;
    st->at.salt[0] = s0;
    st->at.salt[1] = s1;
    st->at.frames = first + walf_get32(raw + 24);
    st->have_at = true;
    return rc;
}

/* Replay the commit and bucket records of segment dir/name onto st->fd
 * (other records are skipped). Returns 0, or WSG_E_STORE_ARCHIVE with *err. */
static int restore_segment(restore_state *st, const char *dir, const char *name,
                           const crypto_keyring *keys, wsg_error *err) {
    file_reader r;
    int rc = reader_open(&r, dir, name, err);
    if (rc != 0) return rc;
    int got = 0, type;
    uint8_t *raw;
    size_t len;
    bool torn;
    while (!st->done && (got = reader_next(&r, keys, &type, &raw, &len, &torn, err)) == 1) {
        if ((type == 'C' && len >= ARCHIVE_COMMIT_HEAD) ||
            (type == 'K' && len >= ARCHIVE_BUCKET_HEAD))
            rc = restore_record(st, name, r.index - 1, type, raw, len, err);
        free(raw);
    }
    if (got < 0) rc = got;
    reader_close(&r);
    return rc;
}

/* Leave the file at out as a checkpoint of the applied commits leaves it
 * (cut to their length), synced, and close st->fd. Returns rc, or
 * WSG_E_STORE_ARCHIVE with *err when rc was 0 and this fails. */
static int restore_finish(const restore_state *st, const char *out, int rc, wsg_error *err) {
    if (rc == 0 && st->applied && ftruncate(st->fd, (off_t)st->db_pages * st->page_size) != 0) {
        rc =
            wsg_error_set(err, WSG_E_STORE_ARCHIVE, "cannot truncate %s: %s", out, strerror(errno));
    }
    if (fsync(st->fd) != 0 && rc == 0) {
        rc = wsg_error_set(err, WSG_E_STORE_ARCHIVE, "cannot sync %s: %s", out, strerror(errno));
    }
    close(st->fd);
    return rc;
}

int archive_restore(const char *dir, const crypto_keyring *keys, int64_t to_ms, const char *out,
                    int64_t *earliest_ms, wsg_error *err) {
    arch_file *files;
    size_t n = list_files(dir, &files);
    const arch_file *snap = restore_base(files, n, to_ms, earliest_ms);
    if (!snap) {
        free(files);
        return 1;
    }
    unlink(out);
    restore_state st = {.fd = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600),
                        .to_ms = to_ms};
    if (st.fd < 0) {
        int e =
            wsg_error_set(err, WSG_E_STORE_ARCHIVE, "cannot create %s: %s", out, strerror(errno));
        free(files);
        return e;
    }
    int rc = decode_snapshot(dir, snap->name, keys, st.fd, err);
    for (size_t i = 0; rc == 0 && !st.done && i < n; i++) {
        if (files[i].snap || files[i].gen < snap->gen) continue;
        rc = restore_segment(&st, dir, files[i].name, keys, err);
    }
    rc = restore_finish(&st, out, rc, err);
    free(files);
    return rc;
}

int archive_oldest_snapshot(const char *dir, const crypto_keyring *keys, const char *out,
                            int64_t *t_ms, wsg_error *err) {
    arch_file *files;
    size_t n = list_files(dir, &files);
    const arch_file *snap = NULL;
    for (size_t i = 0; i < n && !snap; i++)
        if (files[i].snap) snap = &files[i];
    int rc = 1;
    if (snap) {
        *t_ms = snap->t_ms;
        int fd = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            rc = wsg_error_set(err, WSG_E_STORE_ARCHIVE, "cannot create %s: %s", out,
                               strerror(errno));
        } else {
            rc = decode_snapshot(dir, snap->name, keys, fd, err);
            close(fd);
        }
    }
    free(files);
    return rc;
}

int archive_key_in_use(const char *dir, uint32_t key_id) {
    arch_file *files;
    size_t n = list_files(dir, &files);
    int used = 0;
    for (size_t i = 0; i < n && !used; i++) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
        FILE *f = fopen(path, "rb");
        uint8_t h[ARCHIVE_FILE_HEADER_LEN];
        if (f && fread(h, 1, sizeof(h), f) == sizeof(h) && walf_get32(h + 8) == key_id) used = 1;
        if (f) fclose(f);
    }
    free(files);
    return used;
}
