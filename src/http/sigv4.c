#include "http/sigv4.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/alloc.h"
#include "common/bytebuf.h"
#include "common/error.h"
#include "common/fields.h"
#include "common/hex.h"

#define ALGORITHM  "AWS4-HMAC-SHA256"
#define TERMINATOR "aws4_request"

/* ---- encoding ---- */

static const char HEX_UPPER[] = "0123456789ABCDEF";

static bool is_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

/* Percent-encode s as Python's urllib.parse.quote does (uppercase hex);
 * '/' stays when slash_safe. */
static void pct_encode(bytebuf *b, const char *s, size_t n, bool slash_safe) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c) || (slash_safe && c == '/')) {
            bytebuf_putc(b, (char)c);
        } else {
            char e[3] = {'%', HEX_UPPER[c >> 4], HEX_UPPER[c & 15]};
            bytebuf_put(b, e, 3);
        }
    }
}

/* Append the %XX-decoded s (invalid escapes kept literally; '+' kept). */
static void pct_decode(bytebuf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n) {
            int hi = hex_digit_value((unsigned char)s[i + 1]),
                lo = hex_digit_value((unsigned char)s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                bytebuf_putc(b, (char)(hi * 16 + lo));
                i += 2;
                continue;
            }
        }
        bytebuf_putc(b, s[i]);
    }
}

/* ---- crypto ---- */

static bool sha256(const void *data, size_t n, unsigned char out[32]) {
    unsigned int len = 0;
    if (!EVP_Digest(n ? data : "", n, out, &len, EVP_sha256(), NULL)) return false;
    return len == 32;
}

static bool sha256_hex(const void *data, size_t n, char out[65]) {
    unsigned char md[32];
    if (!sha256(data, n, md)) return false;
    hex_encode_lower(md, 32, out);
    return true;
}

static bool hmac(const void *key, size_t keylen, const void *msg, size_t n, unsigned char out[32]) {
    unsigned int len = 0;
    if (keylen > INT_MAX) return false;
    if (!HMAC(EVP_sha256(), key, (int)keylen, n ? msg : (const void *)"", n, out, &len))
        return false;
    return len == 32;
}

/* The signing key for (secret, date, region, service) into out. */
static bool signing_key(const char *secret, const char *date, size_t date_len, const char *region,
                        size_t region_len, const char *service, size_t service_len,
                        unsigned char out[32]) {
    size_t sl = strlen(secret);
    char *k = xmalloc(sl + 5);
    memcpy(k, "AWS4", 4);
    memcpy(k + 4, secret, sl + 1);
    unsigned char a[32], b[32];
    bool ok = hmac(k, sl + 4, date, date_len, a) && hmac(a, 32, region, region_len, b) &&
              hmac(b, 32, service, service_len, a) &&
              hmac(a, 32, TERMINATOR, strlen(TERMINATOR), out);
    OPENSSL_cleanse(k, sl + 4);
    OPENSSL_cleanse(a, sizeof a);
    OPENSSL_cleanse(b, sizeof b);
    free(k);
    return ok;
}

/* ---- canonical pieces ---- */

char *sigv4_canonical_uri(const char *path, size_t len) {
    /* botocore's remove_dot_segments: drop empty and "." segments, ".."
     * pops; keep a leading '/', and a trailing one when anything is left. */
    if (len == 0) return xstrdup("/");
    size_t nseg = 1;
    for (size_t i = 0; i < len; i++) nseg += path[i] == '/';
    size_t *off = xmalloc(nseg * sizeof(*off)), *sl = xmalloc(nseg * sizeof(*sl));
    size_t top = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && path[i] != '/') continue;
        size_t n = i - start;
        const char *s = path + start;
        if (n == 0 || (n == 1 && s[0] == '.')) {
            /* skipped */
        } else if (n == 2 && s[0] == '.' && s[1] == '.') {
            if (top) top--;
        } else {
            off[top] = start;
            sl[top] = n;
            top++;
        }
        start = i + 1;
    }
    bytebuf b = {0};
    if (path[0] == '/') bytebuf_putc(&b, '/');
    for (size_t i = 0; i < top; i++) {
        if (i) bytebuf_putc(&b, '/');
        pct_encode(&b, path + off[i], sl[i], false);
    }
    if (path[len - 1] == '/' && top) bytebuf_putc(&b, '/');
    free(off);
    free(sl);
    return bytebuf_take(&b);
}

typedef struct {
    char *k, *v;
    size_t kl, vl;
} qpair;

static int span_cmp(const char *a, size_t al, const char *b, size_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c) return c;
    return al < bl ? -1 : al > bl;
}

static int qpair_cmp(const void *x, const void *y) {
    const qpair *a = x, *b = y;
    int c = span_cmp(a->k, a->kl, b->k, b->kl);
    return c ? c : span_cmp(a->v, a->vl, b->v, b->vl);
}

/* reencode: decode %XX then encode (the canonical form; botocore's for
 * params). Otherwise take keys and values as they are (botocore's for a
 * query already in the URL, which is how boto3 signs). */
static char *canon_query(const char *q, size_t len, bool reencode) {
    if (len == 0) return xstrdup("");
    size_t npairs = 1;
    for (size_t i = 0; i < len; i++) npairs += q[i] == '&';
    qpair *p = xcalloc(npairs, sizeof(*p));
    size_t start = 0, np = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && q[i] != '&') continue;
        const char *s = q + start;
        size_t n = i - start;
        const char *eq = memchr(s, '=', n);
        size_t kl = eq ? (size_t)(eq - s) : n;
        const char *v = eq ? eq + 1 : s + n;
        size_t vl = eq ? n - kl - 1 : 0;
        qpair *pp = &p[np++];
        if (reencode) {
            bytebuf dk = {0}, dv = {0}, ek = {0}, ev = {0};
            pct_decode(&dk, s, kl);
            pct_decode(&dv, v, vl);
            pct_encode(&ek, dk.d, dk.n, false);
            pct_encode(&ev, dv.d, dv.n, false);
            free(dk.d);
            free(dv.d);
            pp->kl = ek.n;
            pp->vl = ev.n;
            pp->k = bytebuf_take(&ek);
            pp->v = bytebuf_take(&ev);
        } else {
            pp->k = xstrndup(s, kl);
            pp->v = xstrndup(v, vl);
            pp->kl = kl;
            pp->vl = vl;
        }
        start = i + 1;
    }
    qsort(p, np, sizeof(*p), qpair_cmp);
    bytebuf b = {0};
    for (size_t i = 0; i < np; i++) {
        if (i) bytebuf_putc(&b, '&');
        bytebuf_put(&b, p[i].k, p[i].kl);
        bytebuf_putc(&b, '=');
        bytebuf_put(&b, p[i].v, p[i].vl);
        free(p[i].k);
        free(p[i].v);
    }
    free(p);
    return bytebuf_take(&b);
}

char *sigv4_canonical_query(const char *query, size_t len) { return canon_query(query, len, true); }

/* Whitespace as Python's str.split() sees it, ASCII part. */
static bool is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r' ||
           (c >= 0x1c && c <= 0x1f);
}

/* Append value trimmed, inner whitespace runs collapsed to one space. */
static void put_trimall(bytebuf *b, const char *v, size_t n) {
    size_t i = 0;
    bool first = true;
    while (i < n) {
        while (i < n && is_ws((unsigned char)v[i])) i++;
        if (i == n) break;
        size_t s = i;
        while (i < n && !is_ws((unsigned char)v[i])) i++;
        if (!first) bytebuf_putc(b, ' ');
        bytebuf_put(b, v + s, i - s);
        first = false;
    }
}

/* Build the string to sign and the signature for the given canonical
 * request, into sig. */
static bool compute_signature(const char *canonical, size_t clen, const char *amz_date,
                              const char *secret, const char *date, const char *region,
                              size_t region_len, const char *service, unsigned char sig[32]) {
    char crhash[65];
    if (!sha256_hex(canonical, clen, crhash)) return false;
    bytebuf sts = {0};
    bytebuf_puts(&sts, ALGORITHM "\n");
    bytebuf_puts(&sts, amz_date);
    bytebuf_putc(&sts, '\n');
    bytebuf_put(&sts, date, 8);
    bytebuf_putc(&sts, '/');
    bytebuf_put(&sts, region, region_len);
    bytebuf_putc(&sts, '/');
    bytebuf_puts(&sts, service);
    bytebuf_puts(&sts, "/" TERMINATOR "\n");
    bytebuf_puts(&sts, crhash);
    unsigned char key[32];
    bool ok = signing_key(secret, date, 8, region, region_len, service, strlen(service), key) &&
              hmac(key, 32, sts.d, sts.n, sig);
    OPENSSL_cleanse(key, sizeof key);
    free(sts.d);
    return ok;
}

/* ---- dates ---- */

static bool digits(const char *s, size_t n, int *out) {
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Convert broken-down UTC fields to time_t, refusing out-of-range fields
 * (e.g. 31 February). */
static bool make_time(int year, int mon, int day, int hh, int mm, int ss, time_t *out) {
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 59) return false;
    struct tm tm = {0};
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    time_t t = timegm(&tm);
    struct tm back;
    if (!gmtime_r(&t, &back)) return false;
    if (back.tm_year != year - 1900 || back.tm_mon != mon - 1 || back.tm_mday != day ||
        back.tm_hour != hh || back.tm_min != mm || back.tm_sec != ss)
        return false;
    *out = t;
    return true;
}

/* "YYYYMMDDTHHMMSSZ" */
static bool parse_amz_date(const char *s, size_t n, time_t *out) {
    int y, mo, d, h, mi, se;
    if (n != SIGV4_AMZ_DATE_LEN || s[8] != 'T' || s[15] != 'Z') return false;
    if (!digits(s, 4, &y) || !digits(s + 4, 2, &mo) || !digits(s + 6, 2, &d) ||
        !digits(s + 9, 2, &h) || !digits(s + 11, 2, &mi) || !digits(s + 13, 2, &se))
        return false;
    return make_time(y, mo, d, h, mi, se, out);
}

/* RFC 1123 "Tue, 05 Mar 2024 06:07:08 GMT" (also UT, UTC, Z, +0000,
 * -0000, as Python's email.utils.formatdate writes it). */
static bool parse_http_date(const char *s, size_t n, time_t *out) {
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    size_t i = 0;
    if (n < 5 || s[3] != ',' || s[4] != ' ') return false;
    bool dayok = false;
    for (int k = 0; k < 7; k++) dayok |= strncmp(s, days + 3 * k, 3) == 0;
    if (!dayok) return false;
    i = 5;
    size_t ds = i;
    while (i < n && s[i] >= '0' && s[i] <= '9' && i - ds < 2) i++;
    int day, year, hh, mm, ss, mon = 0;
    if (i == ds || !digits(s + ds, i - ds, &day)) return false;
    if (n - i < 1 + 3 + 1 + 4 + 1 + 8 + 1 || s[i] != ' ') return false;
    i++;
    for (int k = 0; k < 12; k++)
        if (strncmp(s + i, months + 3 * k, 3) == 0) mon = k + 1;
    if (!mon || s[i + 3] != ' ') return false;
    i += 4;
    if (!digits(s + i, 4, &year) || s[i + 4] != ' ') return false;
    i += 5;
    if (!digits(s + i, 2, &hh) || s[i + 2] != ':' || !digits(s + i + 3, 2, &mm) ||
        s[i + 5] != ':' || !digits(s + i + 6, 2, &ss) || s[i + 8] != ' ')
        return false;
    i += 9;
    const char *z = s + i;
    size_t zl = n - i;
    static const char *const zones[] = {"GMT", "UT", "UTC", "Z", "+0000", "-0000"};
    bool zok = false;
    for (size_t k = 0; k < sizeof zones / sizeof zones[0]; k++)
        zok |= strlen(zones[k]) == zl && memcmp(z, zones[k], zl) == 0;
    if (!zok) return false;
    return make_time(year, mon, day, hh, mm, ss, out);
}

int sigv4_amz_date(time_t t, char out[SIGV4_AMZ_DATE_LEN + 1]) {
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900) return WSG_E_INVAL;
    if (strftime(out, SIGV4_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != SIGV4_AMZ_DATE_LEN)
        return WSG_E_INVAL;
    return 0;
}

/* ---- verification ---- */

typedef struct {
    const char *akid, *date, *region, *service, *signed_headers, *signature;
    size_t akid_len, date_len, region_len, service_len, signed_headers_len, signature_len;
} auth_parts;

static void trim_span(const char **s, size_t *n) {
    while (*n && (**s == ' ' || **s == '\t')) (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) (*n)--;
}

/* Parse an Authorization value into parts (pointers into v). Returns 0
 * when well-formed, else a negative WSG_E_SIGV4_* code. */
static int parse_authorization(const char *v, size_t n, auth_parts *a) {
    memset(a, 0, sizeof(*a));
    size_t al = strlen(ALGORITHM);
    if (n < al || memcmp(v, ALGORITHM, al) != 0) return WSG_E_SIGV4_ALGORITHM;
    if (n == al || (v[al] != ' ' && v[al] != '\t'))
        return n == al ? WSG_E_SIGV4_MALFORMED : WSG_E_SIGV4_ALGORITHM;
    const char *p = v + al, *end = v + n;
    bool have_cred = false, have_sh = false, have_sig = false;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *s = p;
        size_t sl = (size_t)(e - p);
        trim_span(&s, &sl);
        p = comma ? comma + 1 : end;
        const char *eq = memchr(s, '=', sl);
        if (!eq) return WSG_E_SIGV4_MALFORMED;
        size_t kl = (size_t)(eq - s);
        const char *val = eq + 1;
        size_t vl = sl - kl - 1;
        if (kl == 10 && memcmp(s, "Credential", 10) == 0) {
            if (have_cred) return WSG_E_SIGV4_MALFORMED;
            have_cred = true;
            /* AKID/DATE/REGION/SERVICE/aws4_request, split from the right. */
            const char *slash[4];
            size_t found = 0;
            for (size_t i = vl; i-- > 0 && found < 4;)
                if (val[i] == '/') slash[found++] = val + i;
            if (found < 4) return WSG_E_SIGV4_MALFORMED;
            const char *term = slash[0] + 1;
            size_t tl = (size_t)(val + vl - term);
            if (tl != strlen(TERMINATOR) || memcmp(term, TERMINATOR, tl) != 0)
                return WSG_E_SIGV4_MALFORMED;
            a->akid = val;
            a->akid_len = (size_t)(slash[3] - val);
            a->date = slash[3] + 1;
            a->date_len = (size_t)(slash[2] - a->date);
            a->region = slash[2] + 1;
            a->region_len = (size_t)(slash[1] - a->region);
            a->service = slash[1] + 1;
            a->service_len = (size_t)(slash[0] - a->service);
            int dummy;
            if (!a->akid_len || !a->region_len || !a->service_len || a->date_len != 8 ||
                !digits(a->date, 8, &dummy))
                return WSG_E_SIGV4_MALFORMED;
        } else if (kl == 13 && memcmp(s, "SignedHeaders", 13) == 0) {
            if (have_sh) return WSG_E_SIGV4_MALFORMED;
            have_sh = true;
            a->signed_headers = val;
            a->signed_headers_len = vl;
        } else if (kl == 9 && memcmp(s, "Signature", 9) == 0) {
            if (have_sig) return WSG_E_SIGV4_MALFORMED;
            have_sig = true;
            a->signature = val;
            a->signature_len = vl;
        } else {
            return WSG_E_SIGV4_MALFORMED;
        }
    }
    if (!have_cred || !have_sh || !have_sig) return WSG_E_SIGV4_MALFORMED;
    /* SignedHeaders: lowercase token names, strictly ascending. */
    if (!a->signed_headers_len) return WSG_E_SIGV4_MALFORMED;
    const char *prev = NULL;
    size_t prev_len = 0;
    const char *sh = a->signed_headers, *shend = sh + a->signed_headers_len;
    while (sh <= shend) {
        const char *semi = memchr(sh, ';', (size_t)(shend - sh));
        const char *e = semi ? semi : shend;
        size_t nl = (size_t)(e - sh);
        if (!nl) return WSG_E_SIGV4_MALFORMED;
        for (size_t i = 0; i < nl; i++) {
            unsigned char c = (unsigned char)sh[i];
            if (c <= ' ' || c >= 0x7f || (c >= 'A' && c <= 'Z') || c == ':' || c == ',')
                return WSG_E_SIGV4_MALFORMED;
        }
        if (prev && span_cmp(prev, prev_len, sh, nl) >= 0) return WSG_E_SIGV4_MALFORMED;
        prev = sh;
        prev_len = nl;
        if (!semi) break;
        sh = semi + 1;
    }
    return 0;
}

static bool header_name_is(const http_request *r, const http_header *h, const char *name,
                           size_t nl) {
    return h->name_len == nl && strncasecmp(r->raw + h->name_off, name, nl) == 0;
}

static size_t header_count(const http_request *r, const char *name) {
    size_t n = 0, nl = strlen(name);
    for (size_t i = 0; i < r->nheaders; i++) n += header_name_is(r, &r->headers[i], name, nl);
    return n;
}

static bool signed_list_has(const auth_parts *a, const char *name) {
    size_t nl = strlen(name), fl;
    const char *sh = a->signed_headers, *end = sh + a->signed_headers_len, *f;
    while (fields_next(&sh, end, ';', &f, &fl))
        if (fl == nl && memcmp(f, name, nl) == 0) return true;
    return false;
}

/* Append "name:v1,v2\n" for every signed header. Returns false when one is
 * absent from the request. */
static bool put_canonical_headers(bytebuf *b, const http_request *r, const auth_parts *a) {
    const char *sh = a->signed_headers, *end = sh + a->signed_headers_len, *name;
    size_t nl;
    while (fields_next(&sh, end, ';', &name, &nl)) {
        bytebuf_put(b, name, nl);
        bytebuf_putc(b, ':');
        bool found = false;
        for (size_t i = 0; i < r->nheaders; i++) {
            const http_header *h = &r->headers[i];
            if (h->name_len != nl || strncasecmp(r->raw + h->name_off, name, nl) != 0) continue;
            if (found) bytebuf_putc(b, ',');
            found = true;
            if (h->value_len) put_trimall(b, r->raw + h->value_off, h->value_len);
        }
        if (!found) return false;
        bytebuf_putc(b, '\n');
    }
    return true;
}

/* The request time: X-Amz-Date, else Date. Returns 0 with *t and
 * *date_header (the header's lowercase name) set, or a WSG_E_SIGV4_* code. */
static int request_time(const http_request *req, time_t *t, const char **date_header) {
    size_t dl = 0;
    const char *dv = http_request_header(req, "x-amz-date", &dl);
    if (dv) {
        *date_header = "x-amz-date";
        return parse_amz_date(dv, dl, t) ? 0 : WSG_E_SIGV4_BAD_DATE;
    }
    if ((dv = http_request_header(req, "date", &dl)) != NULL) {
        *date_header = "date";
        return parse_http_date(dv, dl, t) ? 0 : WSG_E_SIGV4_BAD_DATE;
    }
    return WSG_E_SIGV4_NO_DATE;
}

/* The payload hash the signature covers: x-amz-content-sha256 as sent
 * (it must match the body), else the body's own, written to body_hash.
 * Returns 0 with *ph and *phl set, or a WSG_E_SIGV4_* code. */
static int payload_hash(const http_request *req, char body_hash[65], const char **ph, size_t *phl) {
    if (!sha256_hex(req->body, req->body_len, body_hash)) return WSG_E_SIGV4_CRYPTO;
    *ph = http_request_header(req, "x-amz-content-sha256", phl);
    if (!*ph) {
        *ph = body_hash;
        *phl = 64;
        return 0;
    }
    if ((*phl == 16 && memcmp(*ph, "UNSIGNED-PAYLOAD", 16) == 0) ||
        (*phl >= 10 && memcmp(*ph, "STREAMING-", 10) == 0))
        return WSG_E_SIGV4_UNSIGNED_PAYLOAD;
    if (*phl != 64 || strncasecmp(*ph, body_hash, 64) != 0) return WSG_E_SIGV4_PAYLOAD_HASH;
    return 0;
}

static bool is_akid(const sigv4_credentials *cred, const auth_parts *a) {
    return strlen(cred->access_key_id) == a->akid_len &&
           memcmp(cred->access_key_id, a->akid, a->akid_len) == 0;
}

/* Compare the signature given with the one each secret of the access key
 * makes over the canonical request, with the query in its canonical form
 * and, should the client have sent a non-canonical encoding, as it was
 * sent (what botocore signs for a query already in the URL). Returns 0 on
 * a match, else a WSG_E_SIGV4_* code. */
static int match_signature(const http_request *req, const sigv4_credentials *creds, size_t ncreds,
                           const char *service, const auth_parts *a, const char *amz_date,
                           const char *ph, size_t phl, const unsigned char given[32]) {
    size_t pl, ql;
    const char *path = http_request_path(req, &pl);
    const char *query = http_request_query(req, &ql);
    char *uri = sigv4_canonical_uri(path, pl);
    char *queries[2] = {canon_query(query, ql, true), canon_query(query, ql, false)};
    int nq = strcmp(queries[0], queries[1]) == 0 ? 1 : 2;
    bytebuf tail = {0}; /* everything after the query */
    bytebuf_putc(&tail, '\n');
    bool present = put_canonical_headers(&tail, req, a);
    bytebuf_putc(&tail, '\n');
    bytebuf_put(&tail, a->signed_headers, a->signed_headers_len);
    bytebuf_putc(&tail, '\n');
    bytebuf_put(&tail, ph, phl);

    int result = WSG_E_SIGV4_SIGNATURE;
    if (!present) result = WSG_E_SIGV4_MISSING_HEADER;
    for (int qi = 0; qi < nq && result == WSG_E_SIGV4_SIGNATURE; qi++) {
        bytebuf cr = {0};
        bytebuf_puts(&cr, http_request_method(req));
        bytebuf_putc(&cr, '\n');
        bytebuf_puts(&cr, uri);
        bytebuf_putc(&cr, '\n');
        bytebuf_puts(&cr, queries[qi]);
        bytebuf_put(&cr, tail.d, tail.n);
        for (size_t i = 0; i < ncreds && result == WSG_E_SIGV4_SIGNATURE; i++) {
            if (!is_akid(&creds[i], a)) continue;
            unsigned char want[32];
            if (!compute_signature(cr.d, cr.n, amz_date, creds[i].secret_access_key, a->date,
                                   a->region, a->region_len, service, want)) {
                result = WSG_E_SIGV4_CRYPTO;
                break;
            }
            if (CRYPTO_memcmp(want, given, 32) == 0) result = 0;
        }
        free(cr.d);
    }
    free(uri);
    free(queries[0]);
    free(queries[1]);
    free(tail.d);
    return result;
}

int sigv4_verify(const http_request *req, const sigv4_credentials *creds, size_t ncreds,
                 const char *service, time_t now, int max_skew_s) {
    size_t authn = header_count(req, "authorization");
    if (authn == 0) return WSG_E_SIGV4_NO_AUTH;
    if (authn > 1) return WSG_E_SIGV4_MALFORMED;
    size_t av_len = 0;
    const char *av = http_request_header(req, "authorization", &av_len);
    auth_parts a;
    int rc = parse_authorization(av, av_len, &a);
    if (rc < 0) return rc;
    unsigned char given[32];
    if (!hex_decode(a.signature, a.signature_len, given, sizeof given))
        return WSG_E_SIGV4_MALFORMED;

    if (a.service_len != strlen(service) || memcmp(a.service, service, a.service_len) != 0)
        return WSG_E_SIGV4_SERVICE;
    bool known = false;
    for (size_t i = 0; i < ncreds && !known; i++) known = is_akid(&creds[i], &a);
    if (!known) return WSG_E_SIGV4_UNKNOWN_KEY;

    char amz_date[SIGV4_AMZ_DATE_LEN + 1];
    const char *date_header;
    time_t t;
    rc = request_time(req, &t, &date_header);
    if (rc < 0) return rc;
    if (sigv4_amz_date(t, amz_date) != 0) return WSG_E_SIGV4_BAD_DATE;
    if (memcmp(a.date, amz_date, 8) != 0) return WSG_E_SIGV4_SCOPE_DATE;
    int64_t diff;
    if (__builtin_sub_overflow((int64_t)now, (int64_t)t, &diff) || diff > max_skew_s ||
        diff < -(int64_t)max_skew_s || max_skew_s < 0)
        return WSG_E_SIGV4_SKEW;

    if (!signed_list_has(&a, "host")) return WSG_E_SIGV4_HOST_UNSIGNED;
    if (!signed_list_has(&a, date_header)) return WSG_E_SIGV4_DATE_UNSIGNED;

    char body_hash[65];
    const char *ph;
    size_t phl = 0;
    rc = payload_hash(req, body_hash, &ph, &phl);
    if (rc < 0) return rc;
    return match_signature(req, creds, ncreds, service, &a, amz_date, ph, phl, given);
}

/* ---- signing ---- */

typedef struct {
    char *name; /* lowercased, owned */
    const char *value;
    size_t order;
} sign_header;

static int sign_header_cmp(const void *x, const void *y) {
    const sign_header *a = x, *b = y;
    int c = strcmp(a->name, b->name);
    if (c) return c;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* The request's headers, names lowercased, and x-amz-date last (n: the
 * count, req->nheaders + 1). Returns the array (the caller frees it and
 * each name), *payload set to the first x-amz-content-sha256 value sent
 * (NULL: none), or NULL (*n still set) when a name cannot be signed or
 * Host is missing. */
static sign_header *sign_headers(const sigv4_request *req, const char *amz_date, size_t *n,
                                 const char **payload) {
    *n = req->nheaders + 1;
    sign_header *h = xcalloc(*n, sizeof(*h));
    bool ok = true, has_host = false;
    *payload = NULL;
    for (size_t i = 0; i < req->nheaders; i++) {
        const char *nm = req->headers[i].name;
        size_t nl = strlen(nm);
        h[i].name = xmalloc(nl + 1);
        for (size_t j = 0; j <= nl; j++) {
            unsigned char c = (unsigned char)nm[j];
            h[i].name[j] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
            if (j < nl && (c <= ' ' || c >= 0x7f || c == ';' || c == ':' || c == ',')) ok = false;
        }
        h[i].value = req->headers[i].value ? req->headers[i].value : "";
        h[i].order = i;
        if (nl == 0 || strcmp(h[i].name, "x-amz-date") == 0 || strcmp(h[i].name, "date") == 0)
            ok = false;
        if (strcmp(h[i].name, "host") == 0) has_host = true;
        if (strcmp(h[i].name, "x-amz-content-sha256") == 0 && !*payload) *payload = h[i].value;
    }
    h[*n - 1].name = xstrdup("x-amz-date");
    h[*n - 1].value = amz_date;
    h[*n - 1].order = *n - 1;
    if (ok && has_host) return h;
    for (size_t i = 0; i < *n; i++) free(h[i].name);
    free(h);
    return NULL;
}

/* The Authorization header's value for signature sig; malloc'd. */
static char *authorization_value(const sigv4_credentials *cred, const char *amz_date,
                                 const char *region, const char *service, const bytebuf *sh,
                                 const unsigned char sig[32]) {
    char hex[65];
    hex_encode_lower(sig, 32, hex);
    bytebuf o = {0};
    bytebuf_puts(&o, ALGORITHM " Credential=");
    bytebuf_puts(&o, cred->access_key_id);
    bytebuf_putc(&o, '/');
    bytebuf_put(&o, amz_date, 8);
    bytebuf_putc(&o, '/');
    bytebuf_puts(&o, region);
    bytebuf_putc(&o, '/');
    bytebuf_puts(&o, service);
    bytebuf_puts(&o, "/" TERMINATOR ", SignedHeaders=");
    bytebuf_put(&o, sh->d, sh->n);
    bytebuf_puts(&o, ", Signature=");
    bytebuf_puts(&o, hex);
    return bytebuf_take(&o);
}

char *sigv4_sign(const sigv4_request *req, const sigv4_credentials *cred, const char *region,
                 const char *service, time_t when, char amz_date[SIGV4_AMZ_DATE_LEN + 1]) {
    if (sigv4_amz_date(when, amz_date) != 0) return NULL;
    size_t n;
    const char *payload;
    sign_header *h = sign_headers(req, amz_date, &n, &payload);
    if (!h) return NULL;
    qsort(h, n, sizeof(*h), sign_header_cmp);
    bytebuf cr = {0}, sh = {0};
    bytebuf_puts(&cr, req->method);
    bytebuf_putc(&cr, '\n');
    char *uri = sigv4_canonical_uri(req->path, strlen(req->path));
    bytebuf_puts(&cr, uri);
    free(uri);
    bytebuf_putc(&cr, '\n');
    char *q =
        sigv4_canonical_query(req->query ? req->query : "", req->query ? strlen(req->query) : 0);
    bytebuf_puts(&cr, q);
    free(q);
    bytebuf_putc(&cr, '\n');
    for (size_t i = 0; i < n; i++) {
        bool same = i > 0 && strcmp(h[i].name, h[i - 1].name) == 0;
        if (same) {
            bytebuf_putc(&cr, ',');
        } else {
            if (i) {
                bytebuf_putc(&cr, '\n');
                bytebuf_putc(&sh, ';');
            }
            bytebuf_puts(&cr, h[i].name);
            bytebuf_putc(&cr, ':');
            bytebuf_puts(&sh, h[i].name);
        }
        put_trimall(&cr, h[i].value, strlen(h[i].value));
    }
    bytebuf_puts(&cr, "\n\n");
    bytebuf_put(&cr, sh.d, sh.n);
    bytebuf_putc(&cr, '\n');
    char body_hash[65];
    if (!payload && sha256_hex(req->body, req->body_len, body_hash)) payload = body_hash;
    char *out = NULL;
    unsigned char sig[32];
    if (payload) {
        bytebuf_puts(&cr, payload);
        if (compute_signature(cr.d, cr.n, amz_date, cred->secret_access_key, amz_date, region,
                              strlen(region), service, sig))
            out = authorization_value(cred, amz_date, region, service, &sh, sig);
    }
    free(cr.d);
    free(sh.d);
    for (size_t i = 0; i < n; i++) free(h[i].name);
    free(h);
    return out;
}
