/* The store's schema: the tables, the migrations from older layouts (the
 * compact row, docs/storage.md), the prepared statements, and the checks
 * at open (integrity, keys). See internal.h. */
#include "store/store.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hex.h"
#include "log/log.h"
#include "store/internal.h"
#include "store/row.h"

/* The layout version in PRAGMA user_version: 0 for the layout of the
 * first releases (a UNIQUE messageId, a timestamp index, three sealed
 * columns per message), 2 for the compact row (docs/storage.md). */
#define STORE_SCHEMA_VERSION 2

/* The compact row: messageId is 16 bytes (a UUID's) or, for an id that is
 * not a canonical UUID, its text; with encryption on, senderId and
 * senderName are NULL and message is ONE sealed value holding sender, name
 * and text (row.h). senderKey is kept only with a clientMessageId. Rows of
 * the old layout (three sealed columns) are read as they are. No index but
 * the primary key and the idempotency lookup's: history, resume, TTL
 * (per room, from its oldest seq) and restore all walk (roomId, seq). */
#define SQL_CREATE_MESSAGES(name)                                                                  \
    "CREATE TABLE IF NOT EXISTS " name " ("                                                        \
    "  roomId TEXT NOT NULL,"                                                                      \
    "  seq INTEGER NOT NULL,"                                                                      \
    "  messageId NOT NULL,"                                                                        \
    "  senderId,"                                                                                  \
    "  senderName,"                                                                                \
    "  message NOT NULL,"                                                                          \
    "  timestamp INTEGER NOT NULL,"                                                                \
    "  clientMessageId TEXT,"                                                                      \
    "  senderKey,"                                                                                 \
    "  PRIMARY KEY (roomId, seq)"                                                                  \
    ") WITHOUT ROWID;"

static const char SCHEMA[] = "CREATE TABLE IF NOT EXISTS rooms ("
                             "  roomId TEXT PRIMARY KEY,"
                             "  ownerId NOT NULL,"
                             "  createdAt INTEGER NOT NULL,"
                             "  lastActivity INTEGER NOT NULL,"
                             "  lastSeq INTEGER NOT NULL DEFAULT 0"
                             ");" SQL_CREATE_MESSAGES("messages")
    /* The rooms the sweeper may delete, without reading every room. */
    "CREATE INDEX IF NOT EXISTS rooms_idle ON rooms(lastActivity) WHERE lastSeq = 0;"
    "CREATE INDEX IF NOT EXISTS messages_client ON messages(senderKey, clientMessageId)"
    "  WHERE clientMessageId IS NOT NULL;"
    /* One row rewritten to learn whether a failing store can commit again. */
    "CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, t INTEGER);";

/* ---- opening ---- */

int store_prepare(store *s) {
    static const struct {
        size_t off;
        const char *sql;
    } table[] = {
        {offsetof(stmts, begin), "BEGIN IMMEDIATE"},
        {offsetof(stmts, commit), "COMMIT"},
        {offsetof(stmts, rollback), "ROLLBACK"},
        {offsetof(stmts, insert_message), SQL_INSERT_MESSAGE},
        {offsetof(stmts, room_touch), SQL_ROOM_TOUCH},
        {offsetof(stmts, max_seq),
         "SELECT MAX(COALESCE((SELECT lastSeq FROM rooms WHERE roomId = ?1), 0),"
         " COALESCE((SELECT MAX(seq) FROM messages WHERE roomId = ?1), 0))"},
        {offsetof(stmts, room_seq),
         "UPDATE rooms SET lastSeq = ?2 WHERE roomId = ?1 AND lastSeq < ?2"},
        {offsetof(stmts, oldest_seq),
         "SELECT COALESCE(MIN(seq), 0) FROM messages WHERE roomId = ?1 AND timestamp >= ?2"},
        {offsetof(stmts, expired_rooms),
         "SELECT roomId FROM rooms WHERE lastSeq = 0 AND lastActivity < ?1 AND NOT EXISTS"
         " (SELECT 1 FROM messages m WHERE m.roomId = rooms.roomId) LIMIT ?2"},
        {offsetof(stmts, delete_room), SQL_DELETE_ROOM},
        {offsetof(stmts, probe), "INSERT OR REPLACE INTO store_probe(id, t) VALUES (1, ?1)"},
        {offsetof(stmts, find_client_id),
         "SELECT roomId, seq, messageId, senderId, senderName, message, timestamp FROM messages"
         " WHERE senderKey = ?1 AND clientMessageId = ?2 AND timestamp >= ?3 LIMIT 1"},
        {offsetof(stmts, history_before),
         "SELECT seq, messageId, senderId, senderName, message, timestamp FROM messages"
         " WHERE roomId = ?1 AND seq < ?2 AND timestamp >= ?3 ORDER BY seq DESC LIMIT ?4"},
        {offsetof(stmts, history_after),
         "SELECT seq, messageId, senderId, senderName, message, timestamp FROM messages"
         " WHERE roomId = ?1 AND seq > ?2 AND timestamp >= ?3 ORDER BY seq ASC LIMIT ?4"},
        {offsetof(stmts, first_room), "SELECT roomId FROM messages ORDER BY roomId LIMIT 1"},
        {offsetof(stmts, next_room),
         "SELECT roomId FROM messages WHERE roomId > ?1 ORDER BY roomId LIMIT 1"},
        {offsetof(stmts, room_head),
         "SELECT seq, timestamp FROM messages WHERE roomId = ?1 ORDER BY seq"},
        {offsetof(stmts, delete_head),
         "DELETE FROM messages WHERE roomId = ?1 AND seq <= ?2 AND timestamp < ?3"},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        sqlite3_stmt **st = (sqlite3_stmt **)((char *)&s->st + table[i].off);
        int rc = sqlite3_prepare_v3(s->db, table[i].sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

void store_finalize(store *s) {
    sqlite3_stmt **all = (sqlite3_stmt **)&s->st;
    for (size_t i = 0; i < sizeof(s->st) / sizeof(sqlite3_stmt *); i++) sqlite3_finalize(all[i]);
    memset(&s->st, 0, sizeof(s->st));
}

/* Give an existing rooms table its counter, set from the messages it still
 * has (all a database of the first schema knows). Harmless when the column
 * is there or the table is not (the schema creates it). */
static int add_last_seq(sqlite3 *db) {
    if (sqlite3_exec(db, "ALTER TABLE rooms ADD COLUMN lastSeq INTEGER NOT NULL DEFAULT 0", NULL,
                     NULL, NULL) != SQLITE_OK)
        return SQLITE_OK;
    return sqlite3_exec(db,
                        "UPDATE rooms SET lastSeq = (SELECT COALESCE(MAX(seq), 0) FROM messages m"
                        " WHERE m.roomId = rooms.roomId)",
                        NULL, NULL, NULL);
}

/* SQL wsgate_id_pack(id): a canonical UUID's 16 bytes, any other id as it
 * is. For the migration and the replay of old change-log rows. */
static void sql_id_pack(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    uint8_t id[STORE_ROW_ID_LEN];
    const char *text = (const char *)sqlite3_value_text(argv[0]);
    if (sqlite3_value_type(argv[0]) == SQLITE_TEXT &&
        store_row_id_pack(text, (size_t)sqlite3_value_bytes(argv[0]), id))
        sqlite3_result_blob(ctx, id, sizeof(id), SQLITE_TRANSIENT);
    else sqlite3_result_value(ctx, argv[0]);
}

/* SQL wsgate_key_pack(clientMessageId, senderKey): NULL without a
 * clientMessageId (nothing looks the key up), the first 16 bytes of a
 * blind index written as 64 hex digits, any other key (a plaintext user id)
 * as it is. */
static void sql_key_pack(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    uint8_t mac[32];
    const char *text = (const char *)sqlite3_value_text(argv[1]);
    if (sqlite3_value_type(argv[1]) == SQLITE_TEXT &&
        hex_decode(text, (size_t)sqlite3_value_bytes(argv[1]), mac, sizeof(mac)))
        sqlite3_result_blob(ctx, mac, STORE_SENDER_KEY_LEN, SQLITE_TRANSIENT);
    else sqlite3_result_value(ctx, argv[1]);
}

static int sql_functions(sqlite3 *db) {
    int rc = sqlite3_create_function(db, "wsgate_id_pack", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                     NULL, sql_id_pack, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "wsgate_key_pack", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                     NULL, sql_key_pack, NULL, NULL);
    return rc;
}

/* Return db's PRAGMA user_version, or -1. */
static int schema_version(sqlite3 *db) {
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) return -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Return whether db has a table called name. */
static bool has_table(sqlite3 *db, const char *name) {
    sqlite3_stmt *st;
    bool found = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1", -1,
                           &st, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

/* A database of the old layout gets the compact table: every row copied
 * (ids packed, sender keys kept only where a lookup needs them, sealed
 * values as they are: no key is needed), the UNIQUE messageId and
 * timestamp indexes gone, the change log a seqHi column. One transaction:
 * all or nothing. */
static int migrate_compact(sqlite3 *db) {
    int rc = sqlite3_exec(db, "SAVEPOINT compact", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return rc;
    static const char sql[] =
        SQL_CREATE_MESSAGES("messages_compact") "INSERT INTO messages_compact SELECT roomId, seq,"
                                                " wsgate_id_pack(messageId), senderId, senderName, "
                                                "message, timestamp, clientMessageId,"
                                                " wsgate_key_pack(clientMessageId, senderKey) FROM "
                                                "messages ORDER BY roomId, seq;"
                                                "DROP TABLE messages;"
                                                "ALTER TABLE messages_compact RENAME TO messages;";
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK && has_table(db, "pitr_log"))
        rc = sqlite3_exec(db, "ALTER TABLE pitr_log ADD COLUMN seqHi INTEGER", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, "RELEASE compact", NULL, NULL, NULL);
    } else {
        sqlite3_exec(db, "ROLLBACK TO compact", NULL, NULL, NULL);
        sqlite3_exec(db, "RELEASE compact", NULL, NULL, NULL);
    }
    return rc;
}

/* Columns added since the first version of the schema, then the compact
 * layout. */
static int migrate(sqlite3 *db) {
    int version = schema_version(db);
    if (version < 0) return SQLITE_ERROR;
    if (version >= STORE_SCHEMA_VERSION || !has_table(db, "messages")) return SQLITE_OK;
    static const char *const adds[] = {"clientMessageId TEXT", "senderKey TEXT"};
    for (size_t i = 0; i < 2; i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "ALTER TABLE messages ADD COLUMN %s", adds[i]);
        sqlite3_exec(db, sql, NULL, NULL, NULL); /* fails harmlessly when present */
    }
    int rc = add_last_seq(db);
    if (rc == SQLITE_OK) rc = migrate_compact(db);
    if (rc == SQLITE_OK)
        log_msg(LOG_INFO, "store_migrated",
                "store converted to the compact row layout (version %d)", STORE_SCHEMA_VERSION);
    return rc;
}

int store_schema(sqlite3 *db) {
    int rc = sql_functions(db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = migrate(db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, SCHEMA, NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* PRAGMA quick_check: returns 0 when the file is sound. */
int store_check_integrity(sqlite3 *db, wsg_error *err, const char *path) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL) != SQLITE_OK) {
        return wsg_error_set(
            err, WSG_E_STORE_DAMAGED,
            "store %s is not a usable database: %s (restore it from a backup: wsgate restore)",
            path, sqlite3_errmsg(db));
    }
    int rc = sqlite3_step(st);
    const char *res = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (!res || strcmp(res, "ok") != 0) {
        wsg_error_set(
            err, WSG_E_STORE_DAMAGED,
            "store %s failed its integrity check: %s (restore it from a backup: wsgate restore)",
            path, res ? res : sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return WSG_E_STORE_DAMAGED;
    }
    sqlite3_finalize(st);
    return 0;
}

/* sqlite3_backup rather than VACUUM INTO: the copy keeps the page
 * numbers, which the WAL archive's frames (archive.c) are applied to. */
int store_copy_db(sqlite3 *from, const char *path) {
    sqlite3 *to = NULL;
    int rc = sqlite3_open(path, &to);
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

/* With encryption on, the newest sealed message must open: a wrong or
 * missing key is a start-up error, never garbage later. */
int store_check_keys(store *s, wsg_error *err) {
    /* The newest sealed message: the last of the room posted to last, else
     * the last row of the table (no timestamp index to ask; both are one
     * descent of a b-tree). */
    static const char *const probes[] = {
        "SELECT roomId, seq, senderId, senderName, message FROM messages WHERE roomId ="
        " (SELECT roomId FROM rooms WHERE lastSeq > 0 ORDER BY lastActivity DESC LIMIT 1)"
        " AND typeof(message) = 'blob' ORDER BY seq DESC LIMIT 1",
        "SELECT roomId, seq, senderId, senderName, message FROM messages"
        " WHERE typeof(message) = 'blob' ORDER BY roomId DESC, seq DESC LIMIT 1",
    };
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, probes[i], -1, &st, NULL) != SQLITE_OK) return 0;
        int result = 1; /* 1: nothing sealed found, try the next probe */
        if (sqlite3_step(st) == SQLITE_ROW) {
            char *room = xstrdup((const char *)sqlite3_column_text(st, 0));
            char *sender, *name, *text;
            int e = store_read_message(st, 2, s->opt.keys, room, sqlite3_column_int64(st, 1),
                                       &sender, &name, &text);
            free(room);
            free(sender);
            free(name);
            free(text);
            result = 0;
            if (e) {
                wsg_error_set(err, WSG_E_STORE_KEYS,
                              "stored messages cannot be decrypted with the configured keys: %s",
                              s->opt.keys
                                  ? wsg_strerror(e)
                                  : "encryption is off but the store holds encrypted rows (set "
                                    "enable_encryption = true and the key file)");
                result = WSG_E_STORE_KEYS;
            }
        }
        sqlite3_finalize(st);
        if (result <= 0) return result;
    }
    return 0;
}
