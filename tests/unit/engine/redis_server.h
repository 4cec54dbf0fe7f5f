/* A real redis-server for a test: started on a free loopback port with
 * persistence off, killed by its pid at the end (and by the kernel if the
 * test process dies first: PR_SET_PDEATHSIG). Header-only, for the unit
 * tests that talk to Redis. */
#ifndef WSGATE_TESTS_REDIS_SERVER_H
#define WSGATE_TESTS_REDIS_SERVER_H

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct test_redis {
    pid_t pid;
    int port;
} test_redis;

static inline int test_redis_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* A blocking connection to the test server (for setup and checks). */
static inline redisContext *test_redis_connect(const test_redis *r) {
    struct timeval tv = {2, 0};
    return redisConnectWithTimeout("127.0.0.1", r->port, tv);
}

/* GET `key` on the blocking connection `raw` until it is a string, for
 * about 2 s (Redis is another process: what a client wrote reaches it
 * later); returns the reply, which the caller frees, or NULL if it never
 * was one. */
static inline redisReply *test_redis_await_string(redisContext *raw, const char *key) {
    for (int i = 0; i < 200; i++) {
        redisReply *got = redisCommand(raw, "GET %s", key);
        if (got && got->type == REDIS_REPLY_STRING) return got;
        if (got) freeReplyObject(got);
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Start redis-server on r->port (0: a free port) with the extra
 * arguments (NULL-terminated, at most 8); wait until it answers PING
 * (requirepass: NOAUTH counts as an answer). */
static inline void test_redis_start(test_redis *r, const char *const *extra) {
    if (!r->port) r->port = test_redis_free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", r->port);
    const char *argv[32] = {"redis-server", "--port", port,    "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no",     "--dir", "/tmp"};
    int argc = 11;
    for (int i = 0; extra && extra[i] && i < 8; i++) argv[argc++] = extra[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    r->pid = pid;
    for (int i = 0; i < 400; i++) { /* 10 s */
        redisContext *c = test_redis_connect(r);
        if (c && !c->err) {
            redisReply *rep = redisCommand(c, "PING");
            bool ok = rep != NULL;
            if (rep) freeReplyObject(rep);
            redisFree(c);
            if (ok) return;
        } else if (c) {
            redisFree(c);
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, WNOHANG), 0, "redis-server exited (is it installed?)");
        struct timespec ts = {0, 25 * 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_fail("redis-server on port %d did not answer", r->port);
}

static inline void test_redis_stop(test_redis *r) {
    if (r->pid <= 0) return;
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

#endif
