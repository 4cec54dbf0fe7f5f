/* The CLI's tools on a database file: backup, restore (from the WAL
 * archive, archive.c; or, for a time before a data directory switched to
 * it, the first design's base files and pitr_log change log, replayed
 * here), export and the key-in-use check. See internal.h. */
#include "store/store.h"

#include <dirent.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "log/log.h"
#include "store/archive.h"
#include "store/internal.h"

/* ---- the first design's base snapshots (base-<t_ms>-<last log id>.db) ---- */

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

/* ---- backup and restore (the CLI) ---- */

static int open_readonly(const char *path, sqlite3 **db, wsg_error *err) {
    int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        wsg_error_set(err, WSG_E_STORE_READ, "cannot open %s: %s", path,
                      *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        sqlite3_close(*db);
        *db = NULL;
        return WSG_E_STORE_READ;
    }
    sqlite3_busy_timeout(*db, 5000);
    return 0;
}

/* The copy at out keeps the tables, not an old change log (it starts a
 * new history when served), in one file (no WAL), checked. */
static int finish_copy(const char *out, wsg_error *err) {
    sqlite3 *db = NULL;
    if (sqlite3_open(out, &db) != SQLITE_OK ||
        sqlite3_exec(db, "DROP TABLE IF EXISTS pitr_log; PRAGMA journal_mode=DELETE; VACUUM;", NULL,
                     NULL, NULL) != SQLITE_OK) {
        wsg_error_set(err, WSG_E_STORE_WRITE, "cannot finish %s: %s", out,
                      db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return WSG_E_STORE_WRITE;
    }
    int rc = store_check_integrity(db, err, out);
    sqlite3_close(db);
    return rc;
}

/* Copy the database at path (read-only, consistent) to a new file out.
 * Returns 0 or a WSG_E_STORE_* code with err filled. */
static int copy_file(const char *path, const char *out, wsg_error *err) {
    sqlite3 *src;
    int rc = open_readonly(path, &src, err);
    if (rc != 0) return rc;
    unlink(out);
    rc = store_copy_db(src, out);
    sqlite3_close(src);
    if (rc != SQLITE_OK)
        return wsg_error_set(err, WSG_E_STORE_WRITE, "cannot write %s: %s", out,
                             sqlite3_errstr(rc));
    return 0;
}

int store_backup(const char *path, const char *out, wsg_error *err) {
    int rc = copy_file(path, out, err);
    return rc != 0 ? rc : finish_copy(out, err);
}

/* Change-log rows as restore reads them (with the columns a live store of
 * the first layout lacks read as NULL). */
#define REPLAY_COLUMNS                                                                             \
    "t_ms, kind, roomId, seq, messageId, senderId, senderName, message, timestamp,"                \
    " clientMessageId, senderKey, "
enum { R_T_MS, R_KIND, R_ROOM, R_SEQ, R_FIRST_VALUE = R_ROOM, R_SEQ_HI = 11 };

/* What the replay of a change log onto a base snapshot holds open. */
typedef struct replay {
    sqlite3 *live, *dst;
    sqlite3_stmt *by_kind[LOG_MESSAGES + 1]; /* on dst, prepared on first use */
    sqlite3_stmt *live_range;                /* on live: a range's rows */
    sqlite3_stmt *insert;                    /* on dst: one row */
    sqlite3_stmt *dead_range;                /* on dst: a range's rows from temp.dead */
} replay;

/* The SQL that replays a row of each kind, bound ?1..?9 to the row's
 * roomId .. senderKey. A first-layout message gets the compact id and key
 * (its sealed columns stay as they are: they still open). */
static const char *const replay_sql[] = {
    [LOG_MESSAGE] = "INSERT OR IGNORE INTO messages(roomId, seq, messageId, senderId, senderName,"
                    " message, timestamp, clientMessageId, senderKey) VALUES (?1, ?2,"
                    " wsgate_id_pack(?3), ?4, ?5, ?6, ?7, ?8, wsgate_key_pack(?8, ?9))",
    [LOG_ROOM_JOIN] = SQL_ROOM_JOIN,
    [LOG_ROOM_TOUCH] = SQL_ROOM_TOUCH,
    [LOG_DELETE] = SQL_DELETE_MESSAGE,
    [LOG_ROOM_DELETE] = SQL_DELETE_ROOM,
};

/* Insert the messages seq..hi of room into dst: those the live table still
 * holds, then those a TTL delete moved into the log (temp.dead). A seq of
 * neither was never committed (a failed insert inside the range). */
static int replay_range(replay *r, sqlite3_value *room, sqlite3_value *lo, sqlite3_value *hi) {
    sqlite3_stmt *q = r->live_range;
    sqlite3_bind_value(q, 1, room);
    sqlite3_bind_value(q, 2, lo);
    sqlite3_bind_value(q, 3, hi);
    int rc = SQLITE_OK, step;
    while (rc == SQLITE_OK && (step = sqlite3_step(q)) == SQLITE_ROW) {
        for (int i = 0; i < 9; i++)
            sqlite3_bind_value(r->insert, i + 1, sqlite3_column_value(q, i));
        rc = store_step_done(r->insert);
    }
    if (rc == SQLITE_OK && step != SQLITE_DONE) rc = step;
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_value(r->dead_range, 1, room);
    sqlite3_bind_value(r->dead_range, 2, lo);
    sqlite3_bind_value(r->dead_range, 3, hi);
    return store_step_done(r->dead_range);
}

/* Apply one change-log row (the live store's writes, replayed verbatim). */
static int replay_row(replay *r, sqlite3_stmt *row) {
    int kind = sqlite3_column_int(row, R_KIND);
    if (kind == LOG_MESSAGES)
        return replay_range(r, sqlite3_column_value(row, R_ROOM), sqlite3_column_value(row, R_SEQ),
                            sqlite3_column_value(row, R_SEQ_HI));
    if (kind < LOG_MESSAGE || kind > LOG_ROOM_DELETE) return SQLITE_CORRUPT;
    if (!r->by_kind[kind]) {
        int rc = sqlite3_prepare_v2(r->dst, replay_sql[kind], -1, &r->by_kind[kind], NULL);
        if (rc != SQLITE_OK) return rc;
    }
    sqlite3_stmt *st = r->by_kind[kind];
    int params = sqlite3_bind_parameter_count(st);
    for (int i = 0; i < 9 && i < params; i++)
        sqlite3_bind_value(st, i + 1, sqlite3_column_value(row, R_FIRST_VALUE + i));
    return store_step_done(st);
}

/* Copy the rows TTL deleted after the base (the log keeps them whole)
 * into dst's temp.dead, where replay_range finds them. */
static int load_dead(replay *r, int64_t from_id) {
    int rc = sqlite3_exec(r->dst,
                          "CREATE TEMP TABLE dead (roomId, seq, messageId, senderId, senderName,"
                          " message, timestamp, clientMessageId, senderKey,"
                          " PRIMARY KEY (roomId, seq)) WITHOUT ROWID",
                          NULL, NULL, NULL);
    sqlite3_stmt *q = NULL, *ins = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(r->live,
                                "SELECT roomId, seq, messageId, senderId, senderName, message,"
                                " timestamp, clientMessageId, senderKey FROM pitr_log"
                                " WHERE id > ?1 AND kind = " LOG_DELETE_SQL
                                " AND message IS NOT NULL",
                                -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc =
            sqlite3_prepare_v2(r->dst,
                               "INSERT OR IGNORE INTO temp.dead VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
                               " ?8, ?9)",
                               -1, &ins, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, from_id);
        while (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
            for (int i = 0; i < 9; i++) sqlite3_bind_value(ins, i + 1, sqlite3_column_value(q, i));
            rc = store_step_done(ins);
        }
    }
    sqlite3_finalize(q);
    sqlite3_finalize(ins);
    return rc;
}

static int replay_prepare(replay *r) {
    int rc = sqlite3_prepare_v2(r->live,
                                "SELECT roomId, seq, messageId, senderId, senderName, message,"
                                " timestamp, clientMessageId, senderKey FROM messages"
                                " WHERE roomId = ?1 AND seq BETWEEN ?2 AND ?3",
                                -1, &r->live_range, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(r->dst,
                                "INSERT OR IGNORE INTO messages(roomId, seq, messageId, senderId,"
                                " senderName, message, timestamp, clientMessageId, senderKey)"
                                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                                -1, &r->insert, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(r->dst,
                                "INSERT OR IGNORE INTO messages SELECT roomId, seq, messageId,"
                                " senderId, senderName, message, timestamp, clientMessageId,"
                                " senderKey FROM temp.dead WHERE roomId = ?1 AND seq BETWEEN ?2"
                                " AND ?3",
                                -1, &r->dead_range, NULL);
    return rc;
}

static void replay_finish(replay *r) {
    for (size_t i = 0; i < sizeof(r->by_kind) / sizeof(r->by_kind[0]); i++)
        sqlite3_finalize(r->by_kind[i]);
    sqlite3_finalize(r->live_range);
    sqlite3_finalize(r->insert);
    sqlite3_finalize(r->dead_range);
}

/* The counters are not logged: every message replayed from the log (ids
 * from_id.., up to to_ms) raises its room's counter in dst, even one that
 * a later TTL delete removed. seq_hi: the range's end column ("seqHi", or
 * "seq" for a log of the first layout, which has none). */
static int raise_last_seqs(replay *r, const char *seq_hi, int64_t from_id, int64_t to_ms) {
    sqlite3_stmt *q = NULL, *up = NULL;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT roomId, MAX(CASE kind WHEN %d THEN %s ELSE seq END) FROM pitr_log"
             " WHERE id > ?1 AND t_ms <= ?2 AND kind IN (%d, %d) GROUP BY roomId",
             LOG_MESSAGES, seq_hi, LOG_MESSAGE, LOG_MESSAGES);
    int rc = sqlite3_prepare_v2(r->live, sql, -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(r->dst,
                                "UPDATE rooms SET lastSeq = ?2 WHERE roomId = ?1 AND lastSeq < ?2",
                                -1, &up, NULL);
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

/* Replay the log rows after from_id up to to_ms from live onto dst (a base
 * snapshot brought to the current layout). Returns an SQLite code. */
static int replay_log(sqlite3 *live, sqlite3 *dst, int64_t from_id, int64_t to_ms) {
    replay r = {.live = live, .dst = dst};
    /* A live store not yet opened by this version has the first layout's
     * log: no seqHi, and only rows a first-layout server wrote. */
    const char *seq_hi = "seqHi";
    sqlite3_stmt *rows = NULL;
    int rc = sqlite3_prepare_v2(live,
                                "SELECT " REPLAY_COLUMNS "seqHi FROM pitr_log WHERE id > ?1"
                                " AND t_ms <= ?2 ORDER BY id",
                                -1, &rows, NULL);
    if (rc != SQLITE_OK) {
        seq_hi = "seq";
        rc = sqlite3_prepare_v2(live,
                                "SELECT " REPLAY_COLUMNS "NULL FROM pitr_log WHERE id > ?1"
                                " AND t_ms <= ?2 ORDER BY id",
                                -1, &rows, NULL);
    }
    if (rc == SQLITE_OK) rc = load_dead(&r, from_id);
    if (rc == SQLITE_OK) rc = replay_prepare(&r);
    if (rc == SQLITE_OK) rc = sqlite3_exec(dst, "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(rows, 1, from_id);
        sqlite3_bind_int64(rows, 2, to_ms);
        int step = SQLITE_DONE;
        while (rc == SQLITE_OK && (step = sqlite3_step(rows)) == SQLITE_ROW)
            rc = replay_row(&r, rows);
        if (rc == SQLITE_OK && step != SQLITE_DONE) rc = step;
        if (rc == SQLITE_OK) rc = raise_last_seqs(&r, seq_hi, from_id, to_ms);
        if (rc == SQLITE_OK) rc = sqlite3_exec(dst, "COMMIT", NULL, NULL, NULL);
        else sqlite3_exec(dst, "ROLLBACK", NULL, NULL, NULL);
    }
    sqlite3_finalize(rows);
    replay_finish(&r);
    return rc;
}

static bool has_pitr_log(sqlite3 *db) {
    sqlite3_stmt *st;
    bool yes = false;
    if (sqlite3_prepare_v2(db,
                           "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pitr_log'",
                           -1, &st, NULL) == SQLITE_OK) {
        yes = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    return yes;
}

/* A restore to before the archive's first snapshot: the first design's
 * newest base at or before to_ms, and the change log as it was when the
 * data directory switched to the archive (kept in that first snapshot), or
 * in the live database of a directory this version has not opened yet.
 * arch_earliest: the archive's first snapshot (-1: none). */
static int restore_legacy(const char *path, const char *pitr_dir, const crypto_keyring *keys,
                          int64_t to, int64_t to_ms, int64_t arch_earliest, const char *out,
                          wsg_error *err) {
    base_file *bases;
    size_t n = list_bases(pitr_dir, &bases);
    base_file *base = NULL;
    int64_t earliest = arch_earliest;
    for (size_t i = 0; i < n; i++) {
        if (earliest < 0 || bases[i].t_ms < earliest) earliest = bases[i].t_ms;
        if (bases[i].t_ms <= to_ms && (!base || bases[i].t_ms > base->t_ms)) base = &bases[i];
    }
    if (!base) {
        if (earliest >= 0)
            wsg_error_set(err, WSG_E_STORE_WINDOW,
                          "%lld is before the recovery window, which starts at %lld (Unix seconds)",
                          (long long)to, (long long)(earliest / 1000));
        else
            wsg_error_set(err, WSG_E_STORE_WINDOW,
                          "no base snapshot in %s: is enable_dynamodb_point_in_time_recovery on?",
                          pitr_dir);
        free(bases);
        return WSG_E_STORE_WINDOW;
    }
    char base_path[4096], log_path[4200];
    snprintf(base_path, sizeof(base_path), "%s/%s", pitr_dir, base->name);
    int64_t from_id = base->last_id;
    free(bases);
    const char *live_path = path;
    snprintf(log_path, sizeof(log_path), "%s.pitr_log", out);
    if (arch_earliest >= 0) {
        int64_t t;
        int rc = archive_oldest_snapshot(pitr_dir, keys, log_path, &t, err);
        if (rc != 0) {
            unlink(log_path);
            return rc;
        }
        live_path = log_path;
    }
    sqlite3 *live = NULL, *dst = NULL;
    int rc = copy_file(base_path, out, err);
    if (rc == 0) rc = open_readonly(live_path, &live, err);
    if (rc == 0) {
        if (!has_pitr_log(live)) {
            rc = wsg_error_set(
                err, WSG_E_STORE_WINDOW,
                "%lld is before the point-in-time archive's first snapshot and the old change"
                " log is no longer kept",
                (long long)to);
        } else {
            int src = sqlite3_open(out, &dst);
            /* A base of an older layout (a snapshot taken before an upgrade)
             * is brought to the current one first, as the live store was. */
            if (src == SQLITE_OK) src = store_schema(dst);
            if (src == SQLITE_OK) src = replay_log(live, dst, from_id, to_ms);
            if (src != SQLITE_OK)
                rc = wsg_error_set(
                    err, WSG_E_STORE_WRITE, "cannot replay the change log into %s: %s (%s)", out,
                    sqlite3_errstr(src), dst ? sqlite3_errmsg(dst) : "out of memory");
        }
    }
    sqlite3_close(live);
    sqlite3_close(dst);
    if (live_path == log_path) unlink(log_path);
    return rc != 0 ? rc : finish_copy(out, err);
}

int store_restore(const char *path, const char *pitr_dir, const crypto_keyring *keys, int64_t to,
                  const char *out, wsg_error *err) {
    int64_t to_ms = to * 1000 + 999; /* the whole second `to` */
    int64_t earliest;
    int rc = archive_restore(pitr_dir, keys, to_ms, out, &earliest, err);
    if (rc == 0) return finish_copy(out, err);
    if (rc < 0) {
        unlink(out);
        return rc;
    }
    return restore_legacy(path, pitr_dir, keys, to, to_ms, earliest, out, err);
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
        " UNION ALL SELECT 1 FROM rooms WHERE substr(ownerId, 2, 4) = ?1 LIMIT 1";
    /* A data directory not yet switched to the WAL archive. */
    static const char sql_log[] =
        "SELECT 1 FROM messages WHERE substr(message, 2, 4) = ?1 OR substr(senderId, 2, 4) = ?1"
        " OR substr(senderName, 2, 4) = ?1"
        " UNION ALL SELECT 1 FROM rooms WHERE substr(ownerId, 2, 4) = ?1"
        " UNION ALL SELECT 1 FROM pitr_log WHERE substr(message, 2, 4) = ?1 OR substr(senderId, 2, "
        "4) = ?1"
        " OR substr(senderName, 2, 4) = ?1 LIMIT 1";
    sqlite3_stmt *st;
    int result = -1;
    if (sqlite3_prepare_v2(db, has_pitr_log(db) ? sql_log : sql, -1, &st, NULL) == SQLITE_OK) {
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
    if (result == 0) {
        /* The archive's files are sealed with the key active when each was
         * written (DATA_DIR/pitr beside the database). */
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) snprintf(slash + 1, sizeof(dir) - (size_t)(slash + 1 - dir), "pitr");
        else snprintf(dir, sizeof(dir), "pitr");
        result = archive_key_in_use(dir, key_id);
    }
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
                  int64_t ttl_days, store_export_format format, FILE *out, wsg_error *err) {
    if (access(path, F_OK) != 0)
        return wsg_error_set(err, WSG_E_STORE_MISSING, "no store at %s (is --data-dir right?)",
                             path);
    sqlite3 *db;
    int orc = open_readonly(path, &db, err);
    if (orc != 0) return orc;
    int64_t cutoff = ttl_days > 0 ? (int64_t)time(NULL) - ttl_days * 86400 : INT64_MIN;
    if (since > cutoff) cutoff = since;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            db,
            "SELECT seq, messageId, senderId, senderName, message, timestamp FROM messages"
            " WHERE roomId = ?1 AND timestamp >= ?2 ORDER BY seq",
            -1, &st, NULL) != SQLITE_OK) {
        wsg_error_set(err, WSG_E_STORE_READ, "cannot read %s: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return WSG_E_STORE_READ;
    }
    sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, cutoff);
    if (format == STORE_EXPORT_CSV)
        fputs("seq,timestamp,messageId,senderId,senderName,message\r\n", out);
    long n = 0;
    int rc, e = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        char *sender, *name, *msg;
        e = store_read_message(st, 2, keys, room, seq, &sender, &name, &msg);
        char idbuf[128];
        store_read_message_id(st, 1, idbuf, sizeof(idbuf));
        const char *id = idbuf;
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
    if (e)
        return wsg_error_set(
            err, WSG_E_STORE_KEYS, "cannot decrypt message of room %s: %s%s", room, wsg_strerror(e),
            keys ? "" : " (the store is encrypted: set enable_encryption = true and the key file)");
    if (rc != SQLITE_DONE)
        return wsg_error_set(err, WSG_E_STORE_READ, "cannot read %s: %s", path, sqlite3_errstr(rc));
    return n;
}
