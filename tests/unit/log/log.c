/* JSON-lines logging: escaping, truncation, daily rotation and retention
 * (with the clock moved through log_rotate_check). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/json_escape.h"
#include "log/log.h"
#include "../testdir.h"

static bool exists(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static char *slurp(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    if (!f) return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void day_file(time_t t, char *out, size_t len) {
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "wsgate-%Y-%m-%d.log", &tm);
}

Test(log, escapes_control_characters_and_quotes) {
    char out[64];
    size_t n = json_escape(out, sizeof(out), "a\"b\\c\nd\x01", 8, NULL);
    cr_assert_str_eq(out, "a\\\"b\\\\c\\u000ad\\u0001");
    cr_assert_eq(n, strlen(out));
}

Test(log, invalid_utf8_becomes_replacement_character) {
    char out[64];
    json_escape(out, sizeof(out),
                "x\xff"
                "y\xc3\xa9",
                5, NULL);
    cr_assert_str_eq(out, "x\xef\xbf\xbdy\xc3\xa9");
}

Test(log, escape_reports_what_fit) {
    char out[8];
    size_t used;
    /* "\u000a" needs 6 bytes: after "ab" only 5 remain with the NUL. */
    json_escape(out, sizeof(out), "ab\ncd", 5, &used);
    cr_assert_eq(used, 2);
    cr_assert_str_eq(out, "ab");
}

Test(log, overlong_line_is_truncated_not_split) {
    log_line l;
    log_begin(&l, LOG_INFO, "test");
    static char big[20000];
    memset(big, 'x', sizeof(big) - 1);
    log_str(&l, "small", "ok");
    log_str(&l, "big", big);
    cr_assert(l.truncated);
    cr_assert_lt(l.len, sizeof(l.buf));
}

Test(log, rotates_daily_and_prunes_past_retention) {
    char *dir = testdir_make("logtest");
    time_t now = time(NULL);
    cr_assert_eq(log_open_dir(LOG_INFO, dir, 3), 0);
    log_msg(LOG_INFO, "first_day", "hello");
    cr_assert(strstr(slurp(dir, "wsgate.log"), "first_day"));

    /* The next day: yesterday's lines move to wsgate-DAY.log. */
    log_rotate_check(now + 86400);
    char first[64];
    day_file(now, first, sizeof(first));
    cr_assert(exists(dir, first), "%s not rotated", first);
    cr_assert(strstr(slurp(dir, first), "first_day"));
    log_msg(LOG_INFO, "second_day", "hello");
    cr_assert(strstr(slurp(dir, "wsgate.log"), "second_day"));
    cr_assert_null(strstr(slurp(dir, "wsgate.log"), "first_day"));

    /* Within retention the file stays; past it, it is deleted. */
    log_rotate_check(now + 3 * 86400);
    cr_assert(exists(dir, first));
    log_rotate_check(now + 5 * 86400);
    cr_assert_not(exists(dir, first), "%s kept past retention", first);
    log_close();
    testdir_free(dir);
}

/* An event loop thread's lines wait in its buffer until the loop's flush,
 * in order; an ERROR line goes out at once, after the lines before it. */
Test(log, thread_buffer_holds_lines_until_flushed) {
    char *dir = testdir_make("logtest");
    cr_assert_eq(log_open_dir(LOG_INFO, dir, 3), 0);
    log_buffer_thread(true);
    log_msg(LOG_INFO, "buffered_one", "a");
    log_msg(LOG_INFO, "buffered_two", "b");
    cr_assert_null(strstr(slurp(dir, "wsgate.log"), "buffered_one"), "written before the flush");
    log_flush_thread();
    char *text = slurp(dir, "wsgate.log");
    char *one = strstr(text, "buffered_one"), *two = strstr(text, "buffered_two");
    cr_assert(one && two && one < two, "%s", text);

    log_msg(LOG_INFO, "before_error", "c");
    log_msg(LOG_ERROR, "the_error", "d");
    text = slurp(dir, "wsgate.log");
    char *before = strstr(text, "before_error"), *err = strstr(text, "the_error");
    cr_assert(before && err && before < err, "%s", text);

    /* Turning the buffer off writes what it holds. */
    log_msg(LOG_INFO, "at_the_end", "e");
    log_buffer_thread(false);
    cr_assert(strstr(slurp(dir, "wsgate.log"), "at_the_end"));
    log_msg(LOG_INFO, "direct_again", "f");
    cr_assert(strstr(slurp(dir, "wsgate.log"), "direct_again"));
    log_close();
    testdir_free(dir);
}

/* Bug fix: a byte F5..FF followed by two continuation bytes was copied into
 * the line as if it began a 3-byte character, so the JSON log held invalid
 * UTF-8. Every byte of it is a U+FFFD now. */
Test(log, bytes_that_begin_no_character_are_replaced) {
    char out[64];
    size_t used = 0;
    size_t n = json_escape(out, sizeof(out),
                           "\xff\xa9\xa9"
                           "a",
                           4, &used);
    cr_assert_eq(used, 4);
    cr_assert_eq(n, 10);
    cr_assert_eq(memcmp(out,
                        "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                        "a",
                        10),
                 0);
    n = json_escape(out, sizeof(out), "\xf5\x80\x80\x80", 4, &used);
    cr_assert_eq(n, 12);
}
