/* wsgate: the command line. serve, check, outputs, version. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "app/app.h"
#include "app/echo.h"
#include "cli/outputs.h"
#include "common/alloc.h"
#include "common/fs.h"
#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "net/server.h"

#ifndef WSGATE_VERSION
#define WSGATE_VERSION "0.1.0"
#endif

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
            "  wsgate version             print the version\n"
            "  wsgate --help              this text; `wsgate serve --help` lists every variable\n"
            "\n"
            "Options:\n"
            "  -c FILE             configuration file in terraform.tfvars syntax\n"
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
    config_error err;
    const char *file = NULL;
    config_init_defaults(cfg);
    for (int i = from; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "wsgate: %s needs a file\n", argv[i]);
                exit(2);
            }
            file = argv[++i];
        }
    }
    if (file && config_load_file(cfg, file, &err) != 0) goto fail;
    if (config_load_env(cfg, environ, &err) != 0) goto fail;
    for (int i = from; i < argc; i++) {
        const char *a = argv[i];
        const char *var = NULL;
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            i++;
            continue;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            printf("\nVariables:\n");
            config_print_help(stdout);
            return 1;
        } else if (strcmp(a, "--set") == 0) {
            var = "";
        } else if (strcmp(a, "--listen") == 0) {
            var = "listen";
        } else if (strcmp(a, "--port") == 0) {
            var = "port";
        } else if (strcmp(a, "--data-dir") == 0) {
            var = "data_dir";
        } else {
            fprintf(stderr, "wsgate: unknown option %s (see wsgate --help)\n", a);
            exit(2);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "wsgate: %s needs a value\n", a);
            exit(2);
        }
        const char *val = argv[++i];
        int r;
        if (*var) {
            size_t n = strlen(var) + strlen(val) + 2;
            char *assign = xmalloc(n);
            snprintf(assign, n, "%s=%s", var, val);
            r = config_set(cfg, assign, &err);
            free(assign);
        } else {
            r = config_set(cfg, val, &err);
        }
        if (r != 0) goto fail;
    }
    if (config_validate(cfg, &err) != 0) goto fail;
    return 0;
fail:
    fprintf(stderr, "wsgate: %s\n", err.message);
    config_free(cfg);
    exit(2);
}

static int cmd_serve(int argc, char **argv) {
    config cfg;
    if (load_config(&cfg, argc, argv, 2) == 1) {
        config_free(&cfg);
        return 0;
    }
    if (fs_mkdir_p(cfg.data_dir) != 0) {
        fprintf(stderr, "wsgate: cannot create data directory %s: %s\n", cfg.data_dir,
                strerror(errno));
        config_free(&cfg);
        return 1;
    }
    if (log_open_dir(log_level_parse(cfg.logging_level), cfg.data_dir, (int)cfg.log_retention_days) != 0)
        log_msg(LOG_ERROR, "log_error", "cannot open %s/wsgate.log: %s", cfg.data_dir, strerror(errno));

    metrics_global_init(&cfg, WSGATE_VERSION);
    uv_loop_t loop;
    uv_loop_init(&loop);
    bool echo = strcmp(cfg.mode, "echo") == 0;
    app *a = NULL;
    int rc = 0;
    if (!echo) {
        char dbpath[4096], err[512];
        outputs_data_file(&cfg, dbpath, sizeof(dbpath));
        a = xmalloc(sizeof(*a));
        if (app_init(a, &cfg, &loop, dbpath, err, sizeof(err)) != 0) {
            log_msg(LOG_ERROR, "startup_error", "%s", err);
            fprintf(stderr, "wsgate: %s\n", err);
            free(a);
            a = NULL;
            rc = 1;
        }
    }
    server *srv = xcalloc(1, sizeof(*srv)); /* zeroed: server_free runs even when start-up failed */
    if (rc == 0) {
        const server_handlers *handlers = echo ? echo_handlers() : app_handlers();
        if (a) app_attach(a, srv);
        if (server_start(srv, &loop, &cfg, handlers, a) != 0) {
            rc = 1;
        } else {
            uv_run(&loop, UV_RUN_DEFAULT);
            log_msg(LOG_INFO, "stopped", "wsgate stopped");
        }
    }
    if (a) {
        app_close(a);
        uv_run(&loop, UV_RUN_DEFAULT);
        free(a);
    }
    /* Let every close callback run, then release the loop. */
    uv_run(&loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&loop) != 0) {
        uv_walk(&loop, (uv_walk_cb)uv_close, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    server_free(srv);
    free(srv);
    metrics_global_free();
    log_close();
    config_free(&cfg);
    return rc;
}

static int cmd_outputs(int argc, char **argv) {
    outputs_format fmt = OUTPUTS_TEXT;
    const char *name = NULL;
    /* Pull out -json / -raw NAME, hand the rest to the config loader. */
    char **rest = xcalloc((size_t)argc + 1, sizeof(*rest));
    int n = 0;
    rest[n++] = argv[0];
    rest[n++] = argv[1];
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-json") == 0 || strcmp(argv[i], "--json") == 0) {
            fmt = OUTPUTS_JSON;
        } else if (strcmp(argv[i], "-raw") == 0 || strcmp(argv[i], "--raw") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "wsgate: -raw needs an output name\n");
                free(rest);
                return 2;
            }
            fmt = OUTPUTS_RAW;
            name = argv[++i];
        } else if (strncmp(argv[i], "-raw=", 5) == 0) {
            fmt = OUTPUTS_RAW;
            name = argv[i] + 5;
        } else {
            rest[n++] = argv[i];
        }
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

static int cmd_check(int argc, char **argv) {
    config cfg;
    if (load_config(&cfg, argc, argv, 2) == 1) {
        config_free(&cfg);
        return 0;
    }
    printf("configuration is valid\n");
    config_print_no_effect(&cfg, stdout);
    config_dump(&cfg, stdout);
    config_free(&cfg);
    return 0;
}

int main(int argc, char **argv) {
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
    fprintf(stderr, "wsgate: unknown command '%s' (see wsgate --help)\n", cmd);
    return 2;
}
