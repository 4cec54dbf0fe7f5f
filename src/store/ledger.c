/* The verified-files ledger: see ledger.h. */
#include "store/ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "common/alloc.h"

#define LEDGER_MAGIC    "wsgate-ledger 1"
#define LEDGER_LINE_MAX 512
#define LEDGER_FILE_MAX (64u << 20) /* a ledger larger than this is not one */

ledger_id ledger_id_of(const struct stat *st) {
    return (ledger_id){.size = (uint64_t)st->st_size,
                       .ino = (uint64_t)st->st_ino,
                       .mtime_s = (int64_t)st->st_mtim.tv_sec,
                       .mtime_ns = (int64_t)st->st_mtim.tv_nsec};
}

bool ledger_id_eq(const ledger_id *a, const ledger_id *b) {
    return a->size == b->size && a->ino == b->ino && a->mtime_s == b->mtime_s &&
           a->mtime_ns == b->mtime_ns;
}

/* ---- parsing (I/O-free) ---- */

/* Split line (NUL-terminated, modified) at single spaces into at most max
 * tokens. Returns the count, or -1 when there are more, or an empty one. */
static int split(char *line, char **tok, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == max || *p == '\0' || *p == ' ') return -1;
        tok[n++] = p;
        p = strchr(p, ' ');
        if (!p) return n;
        *p++ = '\0';
    }
}

/* Decimal digits only, no overflow. */
static int get_u64(const char *s, uint64_t *out) {
    uint64_t v = 0;
    if (!*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int get_i64(const char *s, int64_t *out) {
    bool neg = *s == '-';
    uint64_t v;
    if (get_u64(s + neg, &v) != 0 || v > (uint64_t)INT64_MAX) return -1;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

static int get_u32(const char *s, uint32_t *out) {
    uint64_t v;
    if (get_u64(s, &v) != 0 || v > UINT32_MAX) return -1;
    *out = (uint32_t)v;
    return 0;
}

static int get_bool(const char *s, bool *out) {
    if (strcmp(s, "0") != 0 && strcmp(s, "1") != 0) return -1;
    *out = s[0] == '1';
    return 0;
}

static int get_id(char **tok, ledger_id *id) {
    return get_u64(tok[0], &id->size) || get_i64(tok[1], &id->mtime_s) ||
                   get_i64(tok[2], &id->mtime_ns) || get_u64(tok[3], &id->ino)
               ? -1
               : 0;
}

/* An archive file's name: joined to a directory, so nothing but these. */
static bool name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= LEDGER_NAME_MAX || s[0] == '.') return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static int parse_file(char **tok, ledger_file *f) {
    memset(f, 0, sizeof(*f));
    uint64_t last;
    if (!name_ok(tok[1])) return -1;
    memcpy(f->name, tok[1], strlen(tok[1]) + 1);
    if (get_id(tok + 2, &f->id) || get_u64(tok[6], &last) || last > 127 ||
        get_bool(tok[7], &f->ended) || get_bool(tok[8], &f->has_pos) ||
        get_u32(tok[9], &f->pos.salt[0]) || get_u32(tok[10], &f->pos.salt[1]) ||
        get_u64(tok[11], &f->pos.frames) || get_u32(tok[12], &f->pos.page_size) ||
        get_u32(tok[13], &f->pos.db_pages) || get_u32(tok[14], &f->pos.cksum[0]) ||
        get_u32(tok[15], &f->pos.cksum[1]) || get_bool(tok[16], &f->pos.big_endian))
        return -1;
    f->last = (int)last;
    if (get_u32(tok[18], &f->records) || get_bool(tok[19], &f->open)) return -1;
    if (strcmp(tok[17], "-") == 0) return 0;
    if (strlen(tok[17]) != 2 * LEDGER_CLOSE_LEN) return -1;
    for (size_t i = 0; i < LEDGER_CLOSE_LEN; i++) {
        int hi = hexval(tok[17][2 * i]), lo = hexval(tok[17][2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        f->close[i] = (uint8_t)(hi << 4 | lo);
    }
    f->has_close = true;
    return 0;
}

int ledger_parse(ledger *l, const char *text, size_t len) {
    ledger_free(l);
    size_t off = 0, line_no = 0;
    bool ended = false;
    while (off < len && !ended) {
        const char *nl = memchr(text + off, '\n', len - off);
        if (!nl) break; /* a line cut short: not whole */
        size_t n = (size_t)(nl - (text + off));
        char line[LEDGER_LINE_MAX];
        if (n >= sizeof(line) || memchr(text + off, '\0', n)) break;
        memcpy(line, text + off, n);
        line[n] = '\0';
        char *tok[24];
        int nt = split(line, tok, 24);
        int rc = -1;
        if (line_no == 0) {
            rc = n == strlen(LEDGER_MAGIC) && memcmp(text + off, LEDGER_MAGIC, n) == 0 ? 0 : -1;
        } else if (nt == 2 && strcmp(tok[0], "end") == 0 && strlen(tok[1]) == 8) {
            uint32_t crc = 0;
            rc = 0;
            for (int i = 0; i < 8 && rc == 0; i++) {
                int v = hexval(tok[1][i]);
                if (v < 0) rc = -1;
                crc = crc << 4 | (uint32_t)(v & 15);
            }
            if (rc == 0 && crc != (uint32_t)crc32(0, (const Bytef *)text, (uInt)off)) rc = -1;
            ended = rc == 0 && off + n + 1 == len;
            if (!ended) rc = -1;
        } else if (nt == 5 && strcmp(tok[0], "db") == 0 && !l->has_db) {
            rc = get_id(tok + 1, &l->db);
            l->has_db = rc == 0;
        } else if (nt == 4 && strcmp(tok[0], "g") == 0 && !l->has_gen) {
            rc = get_u32(tok[1], &l->gen_salt[0]) || get_u32(tok[2], &l->gen_salt[1]) ||
                         get_u64(tok[3], &l->gen_frames)
                     ? -1
                     : 0;
            l->has_gen = rc == 0;
        } else if (nt == 20 && strcmp(tok[0], "f") == 0) {
            ledger_file f;
            rc = parse_file(tok, &f);
            if (rc == 0 && ledger_find(l, f.name)) rc = -1;
            if (rc == 0) ledger_put(l, &f);
        }
        if (rc != 0) break;
        off += n + 1;
        line_no++;
    }
    if (!ended) {
        ledger_free(l);
        return -1;
    }
    return 0;
}

/* ---- formatting (I/O-free) ---- */

typedef struct outbuf {
    char *p;
    size_t len, cap;
} outbuf;

static void put_line(outbuf *o, const char *line) {
    size_t n = strlen(line);
    if (o->len + n + 1 > o->cap) {
        o->cap = (o->len + n + 1) * 2;
        o->p = xrealloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, line, n + 1);
    o->len += n;
}

char *ledger_format(const ledger *l, size_t *len) {
    outbuf o = {0};
    char line[LEDGER_LINE_MAX];
    put_line(&o, LEDGER_MAGIC "\n");
    if (l->has_db) {
        snprintf(line, sizeof(line), "db %llu %lld %lld %llu\n", (unsigned long long)l->db.size,
                 (long long)l->db.mtime_s, (long long)l->db.mtime_ns,
                 (unsigned long long)l->db.ino);
        put_line(&o, line);
    }
    if (l->has_gen) {
        snprintf(line, sizeof(line), "g %u %u %llu\n", l->gen_salt[0], l->gen_salt[1],
                 (unsigned long long)l->gen_frames);
        put_line(&o, line);
    }
    for (size_t i = 0; i < l->n; i++) {
        const ledger_file *f = &l->files[i];
        char close[2 * LEDGER_CLOSE_LEN + 1] = "-";
        if (f->has_close)
            for (size_t k = 0; k < LEDGER_CLOSE_LEN; k++)
                snprintf(close + 2 * k, 3, "%02x", f->close[k]);
        snprintf(line, sizeof(line),
                 "f %s %llu %lld %lld %llu %d %d %d %u %u %llu %u %u %u %u %d %s %u %d\n", f->name,
                 (unsigned long long)f->id.size, (long long)f->id.mtime_s,
                 (long long)f->id.mtime_ns, (unsigned long long)f->id.ino, f->last, f->ended,
                 f->has_pos, f->pos.salt[0], f->pos.salt[1], (unsigned long long)f->pos.frames,
                 f->pos.page_size, f->pos.db_pages, f->pos.cksum[0], f->pos.cksum[1],
                 f->pos.big_endian, close, f->records, f->open);
        put_line(&o, line);
    }
    snprintf(line, sizeof(line), "end %08x\n", (unsigned)crc32(0, (const Bytef *)o.p, (uInt)o.len));
    put_line(&o, line);
    *len = o.len;
    return o.p;
}

/* ---- the table ---- */

const ledger_file *ledger_find(const ledger *l, const char *name) {
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->files[i].name, name) == 0) return &l->files[i];
    return NULL;
}

void ledger_put(ledger *l, const ledger_file *f) {
    ledger_file *at = (ledger_file *)ledger_find(l, f->name);
    if (!at) {
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 16;
            l->files = xrealloc(l->files, l->cap * sizeof(*l->files));
        }
        at = &l->files[l->n++];
    }
    *at = *f;
}

void ledger_remove(ledger *l, const char *name) {
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->files[i].name, name) != 0) continue;
        l->files[i] = l->files[--l->n];
        return;
    }
}

void ledger_free(ledger *l) {
    free(l->files);
    memset(l, 0, sizeof(*l));
}

/* ---- files ---- */

int ledger_load(ledger *l, const char *path) {
    ledger_free(l);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) == 0 && st.st_size > 0 && (uint64_t)st.st_size <= LEDGER_FILE_MAX) {
        size_t n = (size_t)st.st_size;
        char *buf = xmalloc(n);
        if (pread(fd, buf, n, 0) == (ssize_t)n) rc = ledger_parse(l, buf, n);
        free(buf);
    }
    close(fd);
    return rc;
}

static int save(const ledger *l, const char *path, bool durable) {
    size_t len;
    char *text = ledger_format(l, &len);
    size_t plen = strlen(path) + 8;
    char *tmp = xmalloc(plen);
    snprintf(tmp, plen, "%s.tmp", path);
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        rc = write(fd, text, len) == (ssize_t)len && (!durable || fsync(fd) == 0) ? 0 : -1;
        close(fd);
        if (rc == 0) rc = rename(tmp, path);
        if (rc != 0) unlink(tmp);
    }
    if (rc == 0 && durable) {
        /* The rename made durable: a ledger lost to a power cut only costs
         * the next start a full check. */
        char *dir = xstrdup(path);
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    free(tmp);
    free(text);
    return rc;
}

int ledger_save(const ledger *l, const char *path) { return save(l, path, true); }

int ledger_save_fast(const ledger *l, const char *path) { return save(l, path, false); }
