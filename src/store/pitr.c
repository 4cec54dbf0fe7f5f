/* Point-in-time recovery (base snapshots, the change log and its replay)
 * and the CLI's tools on a database file: backup, restore, export and the
 * key-in-use check. See internal.h. */
#include "store/store.h"

#include <dirent.h>
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

#include "common/alloc.h"
#include "common/strbuf.h"
#include "common/clock.h"
#include "common/strmap.h"
#include "log/log.h"
#include "store/internal.h"

/* ---- point-in-time recovery: base snapshots ---- */

typedef struct base_file {
    int64_t t_ms;
    int64_t last_id;
    char name[256];
} base_file;

static size_t list_bases(const char *dir, base_file **out) {
    DIR *d = opendir(dir);
    *out = NULL;
    if (!d) return 0;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        long long t, id;
        char tail[8];
        if (sscanf(de->d_name, "base-%lld-%lld%7s", &t, &id, tail) != 3 || strcmp(tail, ".db") != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = xrealloc(*out, cap * sizeof(**out));
        }
        (*out)[n].t_ms = t;
        (*out)[n].last_id = id;
        snprintf((*out)[n].name, sizeof((*out)[n].name), "%s", de->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static int copy_db(sqlite3 *from, const char *to_path) {
    sqlite3 *to = NULL;
    int rc = sqlite3_open(to_path, &to);
    if (rc == SQLITE_OK) {
        sqlite3_backup *b = sqlite3_backup_init(to, "main", from, "main");
        if (!b) {
            rc = sqlite3_errcode(to);
        } else {
            sqlite3_backup_step(b, -1);
            rc = sqlite3_backup_finish(b);
        }
    }
    sqlite3_close(to);
    return rc;
}

/* Take a base snapshot of the live database (store thread, between
 * batches, so it holds exactly the log rows up to last_id), then drop the
 * bases and log rows that fell out of the recovery window. */
void store_snapshot(store *s) {
    sqlite3_stmt *st;
    int64_t last_id = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT COALESCE(MAX(id), 0) FROM pitr_log", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) last_id = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    int64_t now = clock_wall_ms();
    char tmp[4200], dst[4096];
    snprintf(dst, sizeof(dst), "%s/base-%lld-%lld.db", s->pitr_dir, (long long)now,
             (long long)last_id);
    snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
    if (copy_db(s->db, tmp) != SQLITE_OK || rename(tmp, dst) != 0) {
        unlink(tmp);
        log_msg(LOG_ERROR, "pitr_error", "cannot write base snapshot %s", dst);
        return;
    }
    base_file *bases;
    size_t n = list_bases(s->pitr_dir, &bases);
    int64_t window_start = now - s->opt.pitr_retention_days * 86400000LL;
    /* The anchor: the newest base at or before the window's start (restores
     * to the window's first second start from it). */
    base_file *anchor = NULL;
    for (size_t i = 0; i < n; i++)
        if (bases[i].t_ms <= window_start && (!anchor || bases[i].t_ms > anchor->t_ms))
            anchor = &bases[i];
    if (anchor) {
        for (size_t i = 0; i < n; i++) {
            if (bases[i].t_ms < anchor->t_ms) {
                char p[4096];
                snprintf(p, sizeof(p), "%s/%s", s->pitr_dir, bases[i].name);
                unlink(p);
            }
        }
        char sql[128];
        snprintf(sql, sizeof(sql), "DELETE FROM pitr_log WHERE id <= %lld",
                 (long long)anchor->last_id);
        sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    }
    free(bases);
    s->last_snapshot = time(NULL);
}
void store_pitr_start(store *s) {
    base_file *bases;
    size_t n = list_bases(s->pitr_dir, &bases);
    free(bases);
    if (n == 0) store_snapshot(s);
    else s->last_snapshot = time(NULL);
}

/* ---- backup and restore (the CLI) ---- */

static int open_readonly(const char *path, sqlite3 **db, char *err, size_t errlen) {
    int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path,
                 *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(*db, 5000);
    return 0;
}

/* The copy at out keeps the tables, not the change log (it starts a new
 * history when served). */
static int finish_copy(const char *out, char *err, size_t errlen) {
    sqlite3 *db = NULL;
    if (sqlite3_open(out, &db) != SQLITE_OK ||
        sqlite3_exec(db, "DELETE FROM pitr_log; PRAGMA journal_mode=DELETE; VACUUM;", NULL, NULL,
                     NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot finish %s: %s", out,
                 db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_close(db);
    return 0;
}

/* Copy the database at path (read-only, consistent) to a new file out.
 * Returns 0 or -1 with err. */
static int copy_file(const char *path, const char *out, char *err, size_t errlen) {
    sqlite3 *src;
    if (open_readonly(path, &src, err, errlen) != 0) return -1;
    unlink(out);
    int rc = copy_db(src, out);
    sqlite3_close(src);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot write %s: %s", out, sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

int store_backup(const char *path, const char *out, char *err, size_t errlen) {
    if (copy_file(path, out, err, errlen) != 0) return -1;
    return finish_copy(out, err, errlen);
}

/* Apply one change-log row (the live store's writes, replayed verbatim). */
static int replay_row(sqlite3 *db, sqlite3_stmt *row) {
    static const char *const sql[] = {
        [LOG_MESSAGE] = SQL_INSERT_MESSAGE,  [LOG_ROOM_JOIN] = SQL_ROOM_JOIN,
        [LOG_ROOM_TOUCH] = SQL_ROOM_TOUCH,   [LOG_DELETE] = SQL_DELETE_MESSAGE,
        [LOG_ROOM_DELETE] = SQL_DELETE_ROOM,
    };
    int kind = sqlite3_column_int(row, 1);
    if (kind < LOG_MESSAGE || kind > LOG_ROOM_DELETE) return SQLITE_CORRUPT;
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql[kind], -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    /* Row columns: t_ms, kind, roomId, seq, messageId, senderId, senderName,
     * message, timestamp, clientMessageId, senderKey -> ?1..?9. */
    for (int i = 0; i < 9; i++) {
        int col = 2 + i;
        if (i + 1 > sqlite3_bind_parameter_count(st)) break;
        sqlite3_bind_value(st, i + 1, sqlite3_column_value(row, col));
    }
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The counters are not logged: every message replayed from the log (ids
 * from_id.., up to to_ms) raises its room's counter in dst, even one that
 * a later TTL delete removed. */
static int raise_last_seqs(sqlite3 *live, sqlite3 *dst, int64_t from_id, int64_t to_ms) {
    sqlite3_stmt *q = NULL, *up = NULL;
    int rc = sqlite3_prepare_v2(live,
                                "SELECT roomId, MAX(seq) FROM pitr_log WHERE id > ?1 AND t_ms <= ?2"
                                " AND kind = 1 GROUP BY roomId",
                                -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(
            dst, "UPDATE rooms SET lastSeq = ?2 WHERE roomId = ?1 AND lastSeq < ?2", -1, &up, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, from_id);
        sqlite3_bind_int64(q, 2, to_ms);
        while (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
            sqlite3_bind_value(up, 1, sqlite3_column_value(q, 0));
            sqlite3_bind_value(up, 2, sqlite3_column_value(q, 1));
            rc = store_step_done(up);
        }
    }
    sqlite3_finalize(q);
    sqlite3_finalize(up);
    return rc;
}

int store_restore(const char *path, const char *pitr_dir, int64_t to, const char *out, char *err,
                  size_t errlen) {
    int64_t to_ms = to * 1000 + 999; /* the whole second `to` */
    base_file *bases;
    size_t n = list_bases(pitr_dir, &bases);
    base_file *base = NULL, *earliest = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!earliest || bases[i].t_ms < earliest->t_ms) earliest = &bases[i];
        if (bases[i].t_ms <= to_ms && (!base || bases[i].t_ms > base->t_ms)) base = &bases[i];
    }
    if (!base) {
        if (earliest)
            snprintf(err, errlen,
                     "%lld is before the recovery window, which starts at %lld (Unix seconds)",
                     (long long)to, (long long)(earliest->t_ms / 1000));
        else
            snprintf(err, errlen,
                     "no base snapshot in %s: is enable_dynamodb_point_in_time_recovery on?",
                     pitr_dir);
        free(bases);
        return -1;
    }
    char base_path[4096];
    snprintf(base_path, sizeof(base_path), "%s/%s", pitr_dir, base->name);
    int64_t from_id = base->last_id;
    free(bases);
    sqlite3 *live;
    if (copy_file(base_path, out, err, errlen) != 0) return -1;
    if (open_readonly(path, &live, err, errlen) != 0) return -1;
    sqlite3 *dst = NULL;
    sqlite3_open(out, &dst);
    sqlite3_stmt *rows = NULL;
    int rc = sqlite3_prepare_v2(
        live,
        "SELECT t_ms, kind, roomId, seq, messageId, senderId, senderName, message, timestamp,"
        " clientMessageId, senderKey FROM pitr_log WHERE id > ?1 AND t_ms <= ?2 ORDER BY id",
        -1, &rows, NULL);
    /* A base written before rooms had a counter gets it here. */
    if (rc == SQLITE_OK) rc = store_add_last_seq(dst);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(rows, 1, from_id);
        sqlite3_bind_int64(rows, 2, to_ms);
        sqlite3_exec(dst, "BEGIN", NULL, NULL, NULL);
        int step;
        while (rc == SQLITE_OK && (step = sqlite3_step(rows)) == SQLITE_ROW) {
            /* replay_row binds by position: map row columns onto ?1..?9 as
             * roomId, seq, messageId, senderId(owner), senderName, message,
             * timestamp, clientMessageId, senderKey. */
            rc = replay_row(dst, rows);
        }
        if (rc == SQLITE_OK) rc = raise_last_seqs(live, dst, from_id, to_ms);
        if (rc == SQLITE_OK) rc = sqlite3_exec(dst, "COMMIT", NULL, NULL, NULL);
        else sqlite3_exec(dst, "ROLLBACK", NULL, NULL, NULL);
    }
    sqlite3_finalize(rows);
    sqlite3_close(live);
    sqlite3_close(dst);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot replay the change log into %s: %s", out, sqlite3_errstr(rc));
        return -1;
    }
    return finish_copy(out, err, errlen);
}

int store_key_in_use(const char *path, uint32_t key_id) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return access(path, F_OK) == 0 ? -1 : 0; /* no database yet: nothing uses it */
    }
    sqlite3_busy_timeout(db, 5000);
    static const char sql[] =
        "SELECT 1 FROM messages WHERE substr(message, 2, 4) = ?1 OR substr(senderId, 2, 4) = ?1"
        " OR substr(senderName, 2, 4) = ?1"
        " UNION ALL SELECT 1 FROM rooms WHERE substr(ownerId, 2, 4) = ?1"
        " UNION ALL SELECT 1 FROM pitr_log WHERE substr(message, 2, 4) = ?1 OR substr(senderId, 2, "
        "4) = ?1"
        " OR substr(senderName, 2, 4) = ?1 LIMIT 1";
    sqlite3_stmt *st;
    int result = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        uint8_t id[4] = {(uint8_t)(key_id >> 24), (uint8_t)(key_id >> 16), (uint8_t)(key_id >> 8),
                         (uint8_t)key_id};
        sqlite3_bind_blob(st, 1, id, 4, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        result = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
    } else {
        result = 0; /* tables not created yet */
    }
    sqlite3_close(db);
    return result;
}

/* ---- export (the CLI) ---- */

/* Write text as one CSV field (RFC 4180: quoted when it holds a comma, a
 * quote or a line break; quotes doubled). */
static void csv_field(FILE *out, const char *text) {
    if (!strpbrk(text, ",\"\r\n")) {
        fputs(text, out);
        return;
    }
    fputc('"', out);
    for (const char *p = text; *p; p++) {
        if (*p == '"') fputc('"', out);
        fputc(*p, out);
    }
    fputc('"', out);
}

long store_export(const char *path, const crypto_keyring *keys, const char *room, int64_t since,
                  int64_t ttl_days, store_export_format format, FILE *out, char *err,
                  size_t errlen) {
    if (access(path, F_OK) != 0) {
        snprintf(err, errlen, "no store at %s (is --data-dir right?)", path);
        return -1;
    }
    sqlite3 *db;
    if (open_readonly(path, &db, err, errlen) != 0) return -1;
    int64_t cutoff = ttl_days > 0 ? (int64_t)time(NULL) - ttl_days * 86400 : INT64_MIN;
    if (since > cutoff) cutoff = since;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            db,
            "SELECT seq, messageId, senderId, senderName, message, timestamp FROM messages"
            " WHERE roomId = ?1 AND timestamp >= ?2 ORDER BY seq",
            -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot read %s: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, cutoff);
    if (format == STORE_EXPORT_CSV)
        fputs("seq,timestamp,messageId,senderId,senderName,message\r\n", out);
    long n = 0;
    int rc, e = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        char aad[512];
        store_message_aad(aad, sizeof(aad), 's', room, seq);
        char *sender = store_column_value(st, 2, keys, aad, &e);
        store_message_aad(aad, sizeof(aad), 'n', room, seq);
        char *name = store_column_value(st, 3, keys, aad, &e);
        store_message_aad(aad, sizeof(aad), 'm', room, seq);
        char *msg = store_column_value(st, 4, keys, aad, &e);
        const char *id = (const char *)sqlite3_column_text(st, 1);
        int64_t ts = sqlite3_column_int64(st, 5);
        if (sender && name && msg) {
            if (format == STORE_EXPORT_CSV) {
                fprintf(out, "%lld,%lld,%s,", (long long)seq, (long long)ts, id);
                csv_field(out, sender);
                fputc(',', out);
                csv_field(out, name);
                fputc(',', out);
                csv_field(out, msg);
                fputs("\r\n", out);
            } else {
                json_t *j =
                    json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:I}", "messageId", id, "roomId", room,
                              "seq", (json_int_t)seq, "senderId", sender, "senderName", name,
                              "message", msg, "timestamp", (json_int_t)ts);
                char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
                if (line) fprintf(out, "%s\n", line);
                free(line);
                json_decref(j);
            }
            n++;
        }
        free(sender);
        free(name);
        free(msg);
        if (e) break;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (e) {
        snprintf(err, errlen, "cannot decrypt message of room %s: %s%s", room, crypto_strerror(e),
                 keys ? ""
                      : " (the store is encrypted: set enable_encryption = true and the key file)");
        return -1;
    }
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "cannot read %s: %s", path, sqlite3_errstr(rc));
        return -1;
    }
    return n;
}
