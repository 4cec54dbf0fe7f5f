/* wsgate: the command line. serve, check, outputs, backup, restore, export,
 * rotate-key, version; each command's --help comes from cli/help.c. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <uv.h>

#include "app/app.h"
#include "app/echo.h"
#include "cli/datalock.h"
#include "cli/nodeid.h"
#include "engine/redis.h"
#include "cli/export.h"
#include "cli/help.h"
#include "common/version.h"
#include "cli/outputs.h"
#include "cli/preflight.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "config/config.h"
#include "config/suggest.h"
#include "config/listen.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "crypto/crypto.h"
#include "store/store.h"
#include "net/server.h"

extern char **environ;

static void usage(FILE *out) {
    fprintf(out,
            "wsgate %s: a self-hosted real-time WebSocket API server\n"
            "\n"
            "Usage:\n"
            "  wsgate serve   [options]   start the server\n"
            "  wsgate check   [options]   validate the configuration and explain it\n"
            "  wsgate outputs [options] [-json | -raw NAME]\n"
            "                             the deployment's outputs (as terraform output)\n"
            "  wsgate backup  --out FILE [options]   a consistent online backup of the store\n"
            "  wsgate restore --to TIME --out FILE [options]\n"
            "                             the store as it was at TIME (Unix seconds or\n"
            "                             YYYY-MM-DDTHH:MM:SSZ), from point-in-time recovery\n"
            "  wsgate rotate-key [options] start a new data key for new writes\n"
            "  wsgate export --room ROOM [--since TIME] [--format jsonl|csv] [options]\n"
            "                             a room's stored messages, decrypted, to stdout\n"
            "  wsgate version             print the version\n"
            "  wsgate --help              this text; `wsgate serve --help` lists every variable\n"
            "\n"
            "Options:\n"
            "  -c FILE             config file: terraform.tfvars syntax, or .tfvars.json\n"
            "  --set NAME=VALUE    set one variable (repeatable; highest precedence)\n"
            "  --listen ADDR       listen address (default 127.0.0.1)\n"
            "  --port N            listen port (default 8080)\n"
            "  --data-dir DIR      data directory (default ./data)\n"
            "\n"
            "Precedence, lowest first: defaults, -c FILE, TF_VAR_<name> environment\n"
            "variables, --set and the flags above. See docs/configuration.md.\n",
            WSGATE_VERSION);
}

/* Build the configuration from defaults, -c, the environment and the flags
 * in argv[from..argc). Returns 0, 1 when --help was shown, or exits with
 * status 2 on a configuration error. */
static int load_config(config *cfg, int argc, char **argv, int from) {
    wsg_error err;
    config_init_defaults(cfg);
    /* Every -c in order, later files over earlier ones, as Terraform takes
     * several -var-file (only the last was read, the others in silence). */
    for (int i = from; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "wsgate: %s needs a file\n", argv[i]);
                exit(2);
            }
            if (config_load_file(cfg, argv[++i], &err) != 0) goto fail;
        }
    }
    if (config_load_env(cfg, environ, &err) != 0) goto fail;
    config_print_env_typos(environ, stderr);
    for (int i = from; i < argc; i++) {
        const char *a = argv[i];
        const char *var = NULL;
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            i++;
            continue;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            bool variables = true; /* a command without an entry: the general text */
            if (help_print_command(stdout, argv[1], &variables) != 0) usage(stdout);
            if (variables) {
                printf("\nVariables:\n");
                config_print_help(stdout);
            }
            return 1;
        } else if (strcmp(a, "--set") == 0) {
            var = "";
        } else if (strcmp(a, "--listen") == 0) {
            var = "listen";
        } else if (strcmp(a, "--port") == 0 || strcmp(a, "-p") == 0) {
            var = "port";
        } else if (strcmp(a, "--data-dir") == 0) {
            var = "data_dir";
        } else {
            static const char *const flags[] = {"-c",     "--config",   "--set",  "--listen",
                                                "--port", "--data-dir", "--help", NULL};
            const char *meant = config_suggest_word(a, flags);
            fprintf(stderr, "wsgate: unknown option %s%s%s%s (see wsgate --help)\n", a,
                    meant ? "; did you mean " : "", meant ? meant : "", meant ? "?" : "");
            exit(2);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "wsgate: %s needs a value\n", a);
            exit(2);
        }
        const char *val = argv[++i];
        int r;
        if (*var) {
            r = config_set_var(cfg, a, var, val, &err); /* errors name the flag used */
        } else {
            r = config_set(cfg, val, &err);
        }
        if (r != 0) goto fail;
    }
    /* The production rules guard what serve exposes to clients; outputs,
     * export, backup, restore and rotate-key serve nothing and must read a
     * production file as it stands (the seed's terraform.tfvars). */
    if (strcmp(argv[1], "serve") != 0 && strcmp(argv[1], "check") != 0)
        cfg->allow_demo_auth_in_production = cfg->allow_plaintext_in_production = true;
    if (config_validate(cfg, &err) != 0) goto fail;
    return 0;
fail:
    fprintf(stderr, "wsgate: %s\n", err.message);
    config_free(cfg);
    exit(2);
}

/* Resolve and test-bind cfg->listen as config_listen_resolve does, for
 * check and serve alike. Returns 0 and, when `replace`, swaps cfg->listen
 * for the numeric address the server binds; or prints the error and
 * returns -1. */
static int resolve_listen(config *cfg, bool replace, char *numeric, size_t numlen) {
    wsg_error err;
    if (config_listen_resolve(cfg->listen, numeric, numlen, &err) < 0) {
        fprintf(stderr, "wsgate: %s\n", err.message);
        return -1;
    }
    if (replace && strcmp(numeric, cfg->listen) != 0) {
        free(cfg->listen);
        cfg->listen = xstrdup(numeric);
    }
    return 0;
}

/* The start serve and check share: load_config, then resolve_listen into
 * numeric. Returns -1 to go on with cfg loaded, else the exit status (0
 * after --help, 2 after a printed error) with cfg already freed. */
static int load_and_resolve(config *cfg, int argc, char **argv, bool replace, char *numeric,
                            size_t numlen) {
    if (load_config(cfg, argc, argv, 2) == 1) {
        config_free(cfg);
        return 0;
    }
    if (resolve_listen(cfg, replace, numeric, numlen) != 0) {
        config_free(cfg);
        return 2;
    }
    return -1;
}

/* ---- the workers: one event loop per thread, one port ---- */

typedef struct worker {
    uv_loop_t loop;
    server *srv;
    app *app;   /* API mode: the one application every worker runs */
    bool first; /* runs on the main thread and carries the store */
    uv_thread_t thread;
    bool started;
} worker;

static void run_worker(void *arg) {
    worker *w = arg;
    if (w->app) app_worker_enter(w->app, w->srv, w->first);
    else server_enter(w->srv);
    /* Log lines are written once per loop turn (the server's flush), not
     * under the application's lock. */
    log_buffer_thread(true);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    log_buffer_thread(false);
    if (w->app && !w->first) app_worker_leave(w->app);
}

static void close_loop(uv_loop_t *loop) {
    uv_run(loop, UV_RUN_NOWAIT);
    if (uv_loop_close(loop) != 0) {
        uv_walk(loop, (uv_walk_cb)uv_close, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
    }
}

/* One line for people on stdout, whatever the number of workers; the JSON
 * `listening` events stay on the log stream for machines. */
static void say_where(const config *cfg, int port, bool echo) {
    char ws[600], web[600];
    outputs_base_url(cfg, port, false, ws, sizeof(ws));
    outputs_base_url(cfg, port, true, web, sizeof(web));
    if (echo) printf("wsgate echo server on %s/%s\n", ws, cfg->stage_name);
    else
        printf("wsgate serving %s/%s  chat page %s/  dashboard %s/dashboard\n", ws, cfg->stage_name,
               web, web);
    fflush(stdout);
    /* For `wsgate outputs` run without serve's flags (make run ARGS=...). */
    char ws_url[700], mgmt_url[700];
    snprintf(ws_url, sizeof ws_url, "%s/%s", ws, cfg->stage_name);
    snprintf(mgmt_url, sizeof mgmt_url, "%s/%s", web, cfg->stage_name);
    if (nodeid_write_endpoint(cfg->data_dir, ws_url, mgmt_url) != 0)
        log_msg(LOG_ERROR, "node_id_error", "cannot write %s/endpoint: %s", cfg->data_dir,
                strerror(errno));
}

/* API mode: the one application every worker runs, its store woken by
 * loop 0. Returns it, or NULL when start-up failed (logged and said). */
static app *start_app(const config *cfg, worker *w, unsigned n) {
    char dbpath[4096];
    wsg_error err;
    outputs_data_file(cfg, dbpath, sizeof(dbpath));
    app *a = xmalloc(sizeof(*a));
    if (app_init(a, cfg, &w[0].loop, dbpath, n, &err) < 0) {
        log_msg(LOG_ERROR, "startup_error", "%s", err.message);
        fprintf(stderr, "wsgate: %s\n", err.message);
        free(a);
        return NULL;
    }
    return a;
}

/* Start worker i's server on its loop; port 0 for the first lets the
 * kernel choose, and the others share what it chose. Returns 0 or -1 (the
 * workers started before stay started). */
static int start_workers(const config *cfg, worker *w, unsigned n, app *a, bool echo) {
    const server_handlers *handlers = echo ? echo_handlers() : app_handlers();
    int port = (int)cfg->port;
    for (unsigned i = 0; i < n; i++) {
        /* zeroed: server_free runs even when start-up failed */
        w[i].srv = xcalloc(1, sizeof(*w[i].srv));
        w[i].app = a;
        w[i].first = i == 0;
        if (a) app_attach(a, i, w[i].srv);
        /* API mode: each worker's server carries its own hub */
        void *ctx = a ? (void *)app_hub(a, i) : NULL;
        if (server_start_worker(w[i].srv, &w[i].loop, cfg, handlers, ctx, port, n > 1) != 0)
            return -1;
        w[i].started = true;
        w[i].srv->worker_index = (int)i;
        port = w[i].srv->bound_port;
    }
    return 0;
}

/* Every loop has stopped: run each loop's last callbacks as that loop's
 * own (they may still touch its connections), the other loops before the
 * application closes (their last close callbacks may still reach it);
 * closing the store runs its last completions on loop 0. Then free all. */
static void close_workers(worker *w, unsigned n, app *a) {
    for (unsigned i = 1; i < n; i++) {
        if (w[i].srv) server_enter(w[i].srv);
        close_loop(&w[i].loop);
    }
    if (w[0].srv) server_enter(w[0].srv);
    if (a) {
        app_close(a);
        uv_run(&w[0].loop, UV_RUN_DEFAULT);
        free(a);
    }
    close_loop(&w[0].loop);
    for (unsigned i = 0; i < n; i++) {
        if (w[i].srv) {
            server_free(w[i].srv);
            free(w[i].srv);
        }
    }
    free(w);
}

/* Start n servers on n loops (sharing the port with SO_REUSEPORT when n >
 * 1), run loop 0 on this thread and the others on their own, and wait for
 * all to stop (each stops on SIGTERM/SIGINT). In API mode one application
 * serves every worker; its store wakes loop 0. Returns the exit status. */
static int serve(const config *cfg, unsigned n, bool echo) {
    /* Each worker watches SIGTERM, SIGINT and SIGHUP with its own handle,
     * and libuv hands a signal only to the handles started when it comes:
     * one sent while the first workers listen and the later ones are not
     * yet started would stop only some loops, and the process would hang.
     * So they wait, blocked, until every worker is started; every thread
     * started from here on (workers, the store's) keeps them blocked, as it
     * inherits this mask, and this thread takes them for all. */
    sigset_t stop_signals, old_mask;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
    worker *w = xcalloc(n, sizeof(*w));
    for (unsigned i = 0; i < n; i++) uv_loop_init(&w[i].loop);
    int rc = 0;
    app *a = NULL;
    if (!echo && !(a = start_app(cfg, w, n))) rc = 1;
    /* For `wsgate outputs` (cli/nodeid.h), in every mode, so that no past
     * process's id is shown; serving goes on without it. */
    if (rc == 0 && nodeid_write(cfg->data_dir, a && cfg->engine_id == CONFIG_ENGINE_REDIS
                                                   ? engine_redis_node(a->engine)
                                                   : "local") != 0)
        log_msg(LOG_ERROR, "node_id_error", "cannot write %s/node-id: %s", cfg->data_dir,
                strerror(errno));
    if (rc == 0 && start_workers(cfg, w, n, a, echo) != 0) rc = 1;
    if (rc == 0) say_where(cfg, w[0].srv->bound_port, echo);
    if (rc != 0) {
        /* Stop the ones that did start, as SIGTERM would. */
        for (unsigned i = 0; i < n; i++)
            if (w[i].started) server_shutdown(w[i].srv);
    }
    for (unsigned i = 1; i < n; i++)
        if (w[i].started) uv_thread_create(&w[i].thread, run_worker, &w[i]);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    if (w[0].started) run_worker(&w[0]);
    for (unsigned i = 1; i < n; i++)
        if (w[i].started) uv_thread_join(&w[i].thread);
    if (rc == 0) {
        if (n > 1) log_msg(LOG_INFO, "stopped", "wsgate stopped (%u workers)", n);
        else log_msg(LOG_INFO, "stopped", "wsgate stopped");
    }
    close_workers(w, n, a);
    return rc;
}

static int cmd_serve(int argc, char **argv) {
    /* A peer that goes away mid-write is an error return (EPIPE) for the
     * server, not a signal; other commands keep the default (`| head`). */
    signal(SIGPIPE, SIG_IGN);
    config cfg;
    char addr[64];
    int done = load_and_resolve(&cfg, argc, argv, true, addr, sizeof(addr));
    if (done >= 0) return done;
    wsg_error derr;
    /* Before anything is created: a start on a busy port leaves no store. */
    if (preflight_port_free(addr, (int)cfg.port, &derr) < 0 ||
        preflight_data_dir(cfg.data_dir, &derr) < 0) { /* a file, or not writable */
        fprintf(stderr, "wsgate: %s\n", derr.message);
        config_free(&cfg);
        return 1;
    }
    if (fs_mkdir_p(cfg.data_dir) < 0) {
        fprintf(stderr, "wsgate: cannot create data directory %s: %s\n", cfg.data_dir,
                strerror(errno));
        config_free(&cfg);
        return 1;
    }
    /* Before the log and the store: a second server must not touch either. */
    wsg_error lerr;
    int lock = datalock_acquire(cfg.data_dir, &lerr);
    if (lock < 0) {
        fprintf(stderr, "wsgate: %s\n", lerr.message);
        config_free(&cfg);
        return 1;
    }
    if (log_open_dir((log_level)cfg.logging_level_id, cfg.data_dir, (int)cfg.log_retention_days) <
        0)
        log_msg(LOG_ERROR, "log_error", "cannot open %s/wsgate.log: %s", cfg.data_dir,
                strerror(errno));

    metrics_global_init(&cfg, WSGATE_VERSION);
    bool echo = cfg.mode_id == CONFIG_MODE_ECHO;
    unsigned workers = (unsigned)cfg.worker_threads;
    /* Auto: one per core, at most the 64 a worker set (and a connection
     * id's worker character) can name. */
    if (workers == 0) workers = uv_available_parallelism();
    if (workers > 64) workers = 64;
    int rc = serve(&cfg, workers, echo);
    metrics_global_free();
    log_close();
    datalock_release(lock);
    config_free(&cfg);
    return rc;
}

static int cmd_outputs(int argc, char **argv) {
    outputs_format fmt = OUTPUTS_TEXT;
    const char *name = NULL;
    bool json_too = false; /* -json and -raw both given */
    /* Pull out -json / -raw NAME, hand the rest to the config loader. */
    char **rest = xcalloc((size_t)argc + 1, sizeof(*rest));
    int n = 0;
    rest[n++] = argv[0];
    rest[n++] = argv[1];
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-json") == 0 || strcmp(argv[i], "--json") == 0) {
            json_too = fmt == OUTPUTS_RAW;
            if (!json_too) fmt = OUTPUTS_JSON;
        } else if (strcmp(argv[i], "-raw") == 0 || strcmp(argv[i], "--raw") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "wsgate: -raw needs an output name\n");
                free(rest);
                return 2;
            }
            json_too = json_too || fmt == OUTPUTS_JSON;
            fmt = OUTPUTS_RAW;
            name = argv[++i];
        } else if (strncmp(argv[i], "-raw=", 5) == 0) {
            json_too = json_too || fmt == OUTPUTS_JSON;
            fmt = OUTPUTS_RAW;
            name = argv[i] + 5;
        } else {
            rest[n++] = argv[i];
        }
    }
    if (fmt != OUTPUTS_TEXT && json_too) {
        /* As terraform output: which of the two was meant is a guess. */
        fprintf(stderr, "wsgate: -json and -raw cannot be used together\n");
        free(rest);
        return 2;
    }
    config cfg;
    if (load_config(&cfg, n, rest, 2) == 1) {
        config_free(&cfg);
        free(rest);
        return 0;
    }
    int rc = outputs_print(&cfg, fmt, name, stdout);
    config_free(&cfg);
    free(rest);
    return rc;
}

/* Split `--NAME VALUE` pairs for the names in `wanted` out of argv; the rest
 * (from argv[2]) is left for load_config in *rest (caller frees). */
static int take_flags(int argc, char **argv, const char *const *wanted, const char **values,
                      char ***rest) {
    *rest = xcalloc((size_t)argc + 1, sizeof(**rest));
    int n = 0;
    (*rest)[n++] = argv[0];
    (*rest)[n++] = argv[1];
    for (int i = 2; i < argc; i++) {
        bool taken = false;
        for (int w = 0; wanted[w]; w++) {
            if (strcmp(argv[i], wanted[w]) == 0) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "wsgate: %s needs a value\n", argv[i]);
                    exit(2);
                }
                values[w] = argv[++i];
                taken = true;
            }
        }
        if (!taken) (*rest)[n++] = argv[i];
    }
    return n;
}

/* A command with flags of its own (`wanted`, their values into `values`)
 * and the common configuration flags: returns load_config's 0, or 1 when
 * --help was shown (cfg is then already released). */
static int load_command(int argc, char **argv, const char *const *wanted, const char **values,
                        config *cfg) {
    char **rest;
    int n = take_flags(argc, argv, wanted, values, &rest);
    int r = load_config(cfg, n, rest, 2);
    free(rest);
    if (r == 1) config_free(cfg);
    return r;
}

/* Parse Unix seconds or an ISO-8601 UTC time ("2026-11-25T21:05:00Z").
 * Returns 0 or -1. A time without its zone is refused, not taken as UTC: a
 * reader would take it for local time. */
static int parse_time(const char *s, int64_t *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s && *end == '\0') {
        *out = v;
        return 0;
    }
    struct tm tm = {0};
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest || (strcmp(rest, "Z") != 0 && strcmp(rest, "+00:00") != 0)) return -1;
    *out = (int64_t)timegm(&tm);
    return 0;
}

/* True when paths a and b name the same existing file. */
static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* `wsgate restore` with the key ring, which opens the sealed point-in-time
 * archive (a store without encryption archives unsealed). Returns 0, or the
 * key ring's or the store's code with err filled. */
static int restore_run(const config *cfg, const char *db, const char *pitr, int64_t to,
                       const char *out, wsg_error *err) {
    crypto_keyring *keys = NULL;
    char *path = crypto_key_file_path(cfg->data_dir, cfg->kms_key_file);
    if (access(path, F_OK) == 0) {
        int krc = crypto_keyring_open(path, false, &keys, err);
        if (krc < 0) {
            free(path);
            return krc;
        }
    }
    free(path);
    int rc = store_restore(db, pitr, keys, to, out, err);
    crypto_keyring_free(keys);
    return rc;
}

static int cmd_backup_restore(int argc, char **argv, bool restore) {
    static const char *const wanted[] = {"--out", "--to", NULL};
    const char *values[2] = {NULL, NULL};
    config cfg;
    if (load_command(argc, argv, wanted, values, &cfg) == 1) return 0;
    int rc = 0;
    char db[4096], pitr[4096];
    wsg_error err = {0};
    outputs_data_file(&cfg, db, sizeof(db));
    snprintf(pitr, sizeof(pitr), "%s/pitr", cfg.data_dir);
    int64_t to = 0;
    if (!values[0] || (restore && !values[1])) {
        fprintf(stderr, "wsgate: usage: wsgate %s\n",
                restore ? "restore --to TIME --out FILE [options]" : "backup --out FILE [options]");
        rc = 2;
    } else if (preflight_existing(&cfg, !restore, &err) < 0) {
        fprintf(stderr, "wsgate: %s\n", err.message);
        rc = 1;
    } else if (preflight_out_file(values[0], &err) < 0) {
        fprintf(stderr, "wsgate: %s\n", err.message);
        rc = 2;
    } else if (same_file(values[0], db)) {
        /* The copy starts by unlinking its target: that would be the store. */
        fprintf(stderr, "wsgate: --out %s is the store itself; name a new file\n", values[0]);
        rc = 2;
    } else if (restore && parse_time(values[1], &to) != 0) {
        fprintf(stderr, "wsgate: --to %s: not Unix seconds nor YYYY-MM-DDTHH:MM:SSZ (UTC)\n",
                values[1]);
        rc = 2;
    } else if (restore ? restore_run(&cfg, db, pitr, to, values[0], &err)
                       : store_backup(db, values[0], &err)) {
        fprintf(stderr, "wsgate: %s\n", err.message);
        rc = 1;
    } else if (restore) {
        /* A TIME still to come restores what is committed now, not then. */
        int64_t now = (int64_t)time(NULL), at = to > now ? now : to;
        time_t t = (time_t)at;
        struct tm tm;
        char iso[32] = "";
        if (gmtime_r(&t, &tm)) strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("restored %s as of %lld (%s%s) into %s\n", db, (long long)at, iso,
               to > now ? "; --to is in the future: the store as it is now" : "", values[0]);
    } else {
        printf("backed up %s into %s\n", db, values[0]);
    }
    config_free(&cfg);
    return rc;
}

static int cmd_rotate_key(int argc, char **argv) {
    config cfg;
    if (load_config(&cfg, argc, argv, 2) == 1) {
        config_free(&cfg);
        return 0;
    }
    char *path = crypto_key_file_path(cfg.data_dir, cfg.kms_key_file);
    crypto_keyring *keys = NULL;
    wsg_error err;
    int rc = 0;
    if (preflight_existing(&cfg, false, &err) < 0 ||
        crypto_keyring_open(path, false, &keys, &err) < 0 ||
        crypto_keyring_rotate(keys, time(NULL), &err) < 0) {
        fprintf(stderr, "wsgate: %s\n", err.message);
        rc = 1;
    } else {
        printf("key %u is now active in %s; older keys stay readable and are destroyed %lld days "
               "after\n"
               "retirement once no stored value uses them\n",
               crypto_active_key_id(keys), path, (long long)cfg.kms_key_deletion_window);
    }
    crypto_keyring_free(keys);
    free(path);
    config_free(&cfg);
    return rc;
}

static int cmd_export(int argc, char **argv) {
    static const char *const wanted[] = {"--room", "--since", "--format", NULL};
    const char *values[3] = {NULL, NULL, NULL};
    config cfg;
    if (load_command(argc, argv, wanted, values, &cfg) == 1) return 0;
    int64_t since = 0;
    int rc;
    wsg_error err;
    if (!values[0] || !*values[0]) {
        fprintf(stderr, "wsgate: usage: wsgate export --room ROOM [--since TIME] [--format "
                        "jsonl|csv] [options]\n");
        rc = 2;
    } else if (values[1] && parse_time(values[1], &since) != 0) {
        fprintf(stderr, "wsgate: --since %s: not Unix seconds nor YYYY-MM-DDTHH:MM:SSZ (UTC)\n",
                values[1]);
        rc = 2;
    } else if (preflight_existing(&cfg, true, &err) < 0) {
        fprintf(stderr, "wsgate: %s\n", err.message);
        rc = 1;
    } else {
        rc = export_run(&cfg, values[0], (long long)since, values[2], stdout);
    }
    config_free(&cfg);
    return rc;
}

static int cmd_check(int argc, char **argv) {
    config cfg;
    char addr[64];
    int done = load_and_resolve(&cfg, argc, argv, false, addr, sizeof(addr));
    if (done >= 0) return done;
    wsg_error ferr;
    if (preflight_port(addr, (int)cfg.port, &ferr) < 0 || preflight_files(&cfg, &ferr) < 0) {
        fprintf(stderr, "wsgate: %s\n", ferr.message);
        config_free(&cfg);
        return 2;
    }
    printf("configuration is valid\n");
    if (strcmp(addr, cfg.listen) != 0) printf("note: listen = \"%s\" binds %s\n", cfg.listen, addr);
    /* Not an error (a live server here may be stopped before serve runs),
     * but check passing and serve failing at once on it surprised users. */
    if (preflight_port_free(addr, (int)cfg.port, &ferr) < 0)
        printf("note: %s now; serve will fail unless it is free by then\n", ferr.message);
    config_print_no_effect(&cfg, stdout);
    config_print_warnings(&cfg, stderr);
    config_dump(&cfg, stdout);
    config_free(&cfg);
    return 0;
}

/* argv with each `--name=value` of an option that takes a value split in
 * two, as GNU tools take it (`--port=9000` was an unknown option). The
 * array and the split copies stay reachable from here until exit. */
static char **split_args;
static char **split_owned;

static char **split_long_options(int argc, char **argv, int *out_argc) {
    static const char *const valued[] = {"--set",    "--port",   "--listen", "--data-dir",
                                         "--config", "--out",    "--to",     "--room",
                                         "--since",  "--format", "--raw",    NULL};
    split_args = xcalloc(2 * (size_t)argc + 1, sizeof *split_args);
    split_owned = xcalloc((size_t)argc + 1, sizeof *split_owned);
    int n = 0, owned = 0;
    for (int i = 0; i < argc; i++) {
        const char *eq = i > 1 ? strchr(argv[i], '=') : NULL;
        bool known = false;
        for (int k = 0; eq && valued[k]; k++)
            known |= strlen(valued[k]) == (size_t)(eq - argv[i]) &&
                     strncmp(argv[i], valued[k], (size_t)(eq - argv[i])) == 0;
        if (!known) {
            split_args[n++] = argv[i];
            continue;
        }
        char *copy = xstrdup(argv[i]);
        copy[eq - argv[i]] = '\0';
        split_owned[owned++] = copy;
        split_args[n++] = copy;
        split_args[n++] = copy + (eq - argv[i]) + 1;
    }
    *out_argc = n;
    return split_args;
}

static int run_command(int argc, char **argv);

int main(int argc, char **argv) {
    int n;
    char **args = split_long_options(argc, argv, &n);
    int rc = run_command(n, args);
    for (int i = 0; split_owned[i]; i++) free(split_owned[i]);
    free(split_owned);
    free(split_args);
    return rc;
}

static int run_command(int argc, char **argv) {
    /* `wsgate help serve`, as `git help` and `go help` take it. */
    if (argc == 3 && strcmp(argv[1], "help") == 0) {
        bool variables = false;
        if (help_print_command(stdout, argv[2], &variables) == 0) {
            if (variables) {
                printf("\nVariables:\n");
                config_print_help(stdout);
            }
            return 0;
        }
    }
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("wsgate %s (libuv %s)\n", WSGATE_VERSION, uv_version_string());
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc, argv);
    if (strcmp(cmd, "check") == 0) return cmd_check(argc, argv);
    if (strcmp(cmd, "outputs") == 0 || strcmp(cmd, "output") == 0) return cmd_outputs(argc, argv);
    if (strcmp(cmd, "backup") == 0) return cmd_backup_restore(argc, argv, false);
    if (strcmp(cmd, "restore") == 0) return cmd_backup_restore(argc, argv, true);
    if (strcmp(cmd, "rotate-key") == 0) return cmd_rotate_key(argc, argv);
    if (strcmp(cmd, "export") == 0) return cmd_export(argc, argv);
    static const char *const commands[] = {"serve",      "check",  "outputs", "backup", "restore",
                                           "rotate-key", "export", "version", NULL};
    const char *meant = config_suggest_word(cmd, commands);
    fprintf(stderr, "wsgate: unknown command '%s'%s%s%s (see wsgate --help)\n", cmd,
            meant ? "; did you mean '" : "", meant ? meant : "", meant ? "'?" : "");
    return 2;
}
