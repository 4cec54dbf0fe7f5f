/* The clean-stop record and the background integrity check: see
 * cleanstop.h. */
#include "store/cleanstop.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/error.h"
#include "log/log.h"
#include "store/internal.h"
#include "store/ledger.h"
#include "store/walshm.h"

static char *side_path(const char *db_path, const char *suffix) {
    size_t n = strlen(db_path) + strlen(suffix) + 1;
    char *p = xmalloc(n);
    snprintf(p, n, "%s%s", db_path, suffix);
    return p;
}

static bool wal_left(const char *db_path) {
    char wal[4200];
    struct stat st;
    snprintf(wal, sizeof(wal), "%s-wal", db_path);
    return stat(wal, &st) == 0 && st.st_size > 0;
}

cleanstop_state cleanstop_consume(const char *db_path) {
    char *rec = side_path(db_path, "-clean"), *run = side_path(db_path, "-running");
    ledger l = {0};
    struct stat st;
    cleanstop_state state = CLEANSTOP_UNKNOWN;
    bool wal = wal_left(db_path);
    if (ledger_load(&l, rec) == 0 && l.has_db && stat(db_path, &st) == 0 && !wal) {
        ledger_id now = ledger_id_of(&st);
        if (ledger_id_eq(&now, &l.db)) state = CLEANSTOP_CLEAN;
    }
    if (state == CLEANSTOP_UNKNOWN && wal && stat(run, &st) == 0) state = CLEANSTOP_CRASHED;
    unlink(rec);
    ledger_free(&l);
    free(rec);
    free(run);
    return state;
}

void cleanstop_running(const char *db_path) {
    char *run = side_path(db_path, "-running");
    ledger l = {0};
    ledger_save(&l, run);
    free(run);
}

void cleanstop_record(const char *db_path, bool damaged) {
    struct stat st;
    if (!damaged && stat(db_path, &st) == 0 && !wal_left(db_path)) {
        ledger l = {.has_db = true, .db = ledger_id_of(&st)};
        char *rec = side_path(db_path, "-clean");
        ledger_save(&l, rec);
        free(rec);
    }
    char *run = side_path(db_path, "-running");
    unlink(run);
    free(run);
}

int cleanstop_check_now(sqlite3 *db, const char *path, wsg_error *err) {
    int64_t t0 = clock_mono_ms();
    int rc = store_check_integrity(db, err, path);
    if (rc == 0)
        log_msg(LOG_INFO, "store_check",
                "integrity check of %s: ok in %lld ms, at start (no record of the last stop, or"
                " the file changed since)",
                path, (long long)(clock_mono_ms() - t0));
    return rc;
}

struct cleanstop_check {
    char *path;
    cleanstop_state state;
    int shm_fd; /* the store's WAL-index descriptor (-1: none; never closed here) */
    pthread_t thread;
    pthread_mutex_t mu; /* with wake: the wait between tries */
    pthread_cond_t wake;
    atomic_bool stop, failed;
    char why[512]; /* written before failed is set */
};

/* A reader pins the WAL: while the check's read transaction lasts, no
 * checkpoint can let the WAL restart, and under load it grew to 650 MB
 * during a 30 s check (which the next start after a crash then had to
 * recover). Past this many frames (64 MiB of 4 KiB pages, twice the point
 * where the store thread checkpoints itself) the check gives way and is
 * tried again after CHECK_RETRY_MS. */
#define CHECK_MAX_WAL_FRAMES 16384
#define CHECK_RETRY_MS       60000

/* One quick_check on its own connection and thread: the statement is one
 * VM step that reads the whole file (SQLite calls no progress handler
 * inside it), so the check thread watches from outside and uses
 * sqlite3_interrupt, which it honours between pages. */
typedef struct check_try {
    const char *path;
    sqlite3 *db;
    int rc;
    wsg_error err;
    atomic_bool done;
} check_try;

static void *try_run(void *arg) {
    check_try *t = arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    t->rc = store_check_integrity(t->db, &t->err, t->path);
    atomic_store(&t->done, true);
    return NULL;
}

/* One try: 0 ok, 1 gave way to the WAL (or stopped), else damaged (*err). */
static int check_once(cleanstop_check *c, wsg_error *err) {
    check_try t = {.path = c->path};
    int rc = sqlite3_open_v2(c->path, &t.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_close(t.db);
        return wsg_error_set(err, WSG_E_STORE_DAMAGED, "store %s cannot be opened to check it: %s",
                             c->path, sqlite3_errstr(rc));
    }
    sqlite3_busy_timeout(t.db, 5000);
    pthread_t th;
    if (pthread_create(&th, NULL, try_run, &t) != 0) abort();
    bool interrupted = false;
    pthread_mutex_lock(&c->mu);
    while (!atomic_load(&t.done)) {
        walshm w;
        if (!interrupted &&
            (atomic_load(&c->stop) || (c->shm_fd >= 0 && walshm_read(c->shm_fd, &w) == 0 &&
                                       w.mx_frame > CHECK_MAX_WAL_FRAMES))) {
            interrupted = true;
            sqlite3_interrupt(t.db);
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->wake, &c->mu, &until);
    }
    pthread_mutex_unlock(&c->mu);
    pthread_join(th, NULL);
    sqlite3_close(t.db);
    if (t.rc && interrupted) return 1;
    if (t.rc) *err = t.err;
    return t.rc;
}

static void *check_run(void *arg) {
    cleanstop_check *c = arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    int64_t t0 = clock_mono_ms();
    for (;;) {
        wsg_error err = {0};
        int rc = check_once(c, &err);
        if (rc == 0) {
            log_msg(LOG_INFO, "store_check",
                    "integrity check of %s: ok in %lld ms, in the background (%s)", c->path,
                    (long long)(clock_mono_ms() - t0),
                    c->state == CLEANSTOP_CLEAN
                        ? "the last stop was clean"
                        : "the last run was killed; SQLite replayed its WAL");
            return NULL;
        }
        if (rc != 1) {
            snprintf(c->why, sizeof(c->why), "%s", err.message);
            char *run = side_path(c->path, "-running");
            unlink(run);
            free(run);
            atomic_store(&c->failed, true);
            log_msg(LOG_ERROR, "store_damaged", "%s", err.message);
            return NULL;
        }
        /* Stopped (unfinished: the next start checks again), or gave way. */
        if (atomic_load(&c->stop)) return NULL;
        log_msg(LOG_INFO, "store_check",
                "integrity check of %s: deferred, the WAL passed %d frames while it ran; again in"
                " %d s",
                c->path, CHECK_MAX_WAL_FRAMES, CHECK_RETRY_MS / 1000);
        pthread_mutex_lock(&c->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += CHECK_RETRY_MS / 1000;
        while (!atomic_load(&c->stop) &&
               pthread_cond_timedwait(&c->wake, &c->mu, &until) != ETIMEDOUT) {
        }
        pthread_mutex_unlock(&c->mu);
        if (atomic_load(&c->stop)) return NULL;
    }
}

cleanstop_check *cleanstop_check_start(const char *db_path, cleanstop_state state, int shm_fd) {
    cleanstop_check *c = xcalloc(1, sizeof(*c));
    c->path = xstrdup(db_path);
    c->state = state;
    c->shm_fd = shm_fd;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->wake, NULL);
    if (pthread_create(&c->thread, NULL, check_run, c) != 0) {
        log_msg(LOG_ERROR, "store_error", "cannot start the store's background integrity check");
        abort();
    }
    pthread_setname_np(c->thread, "wsgate-dbcheck");
    return c;
}

bool cleanstop_check_failed(cleanstop_check *c, char *why, size_t len) {
    if (!c || !atomic_load(&c->failed)) return false;
    snprintf(why, len, "%s", c->why);
    return true;
}

bool cleanstop_check_end(cleanstop_check *c) {
    if (!c) return false;
    pthread_mutex_lock(&c->mu);
    atomic_store(&c->stop, true); /* the progress handler ends the check */
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    bool failed = atomic_load(&c->failed);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->wake);
    free(c->path);
    free(c);
    return failed;
}
