/* Unit tests for the unknown variable's suggestion (src/config/suggest.c)
 * and the messages that carry it (src/config/config.c). */
#include <criterion/criterion.h>
#include <string.h>

#include "config/config.h"
#include "config/suggest.h"

static const char *suggest(const char *name) { return config_suggest_var(name, strlen(name)); }

static void expect_suggests(const char *typed, const char *meant) {
    const char *got = suggest(typed);
    cr_expect(got && strcmp(got, meant) == 0, "%s: got %s, expected %s", typed,
              got ? got : "(none)", meant);
}

Test(suggest, typos_case_hyphens_and_swaps) {
    expect_suggests("stage_nme", "stage_name");
    expect_suggests("Stage_Name", "stage_name");
    expect_suggests("stage-name", "stage_name");
    expect_suggests("prot", "port");
    expect_suggests("enviroment", "environment");
    expect_suggests("throttling_burts_limit", "throttling_burst_limit");
    expect_suggests("log_retention_day", "log_retention_days");
}

Test(suggest, whole_words_of_one_name) {
    expect_suggests("stage", "stage_name");
    expect_suggests("region", "aws_region");
}

Test(suggest, nothing_close_says_nothing) {
    cr_expect_null(suggest("foo"));
    cr_expect_null(suggest("nope"));
    cr_expect_null(suggest("completely_unrelated_setting"));
    cr_expect_null(suggest("timeout")); /* a word of several names */
    cr_expect_null(config_suggest_var("", 0));
    char long_name[200];
    memset(long_name, 'a', sizeof long_name);
    cr_expect_null(config_suggest_var(long_name, sizeof long_name));
}

Test(suggest, every_source_names_the_suggestion) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    static const char text[] = "stage_name = \"prod\"\n\nstage = \"x\"\n";
    cr_expect_lt(config_load_text(&c, "t.tfvars", text, sizeof text - 1, &err), 0);
    cr_expect_str_eq(err.message,
                     "t.tfvars:3: unknown variable \"stage\" (did you mean \"stage_name\"?)");
    cr_expect_lt(config_set(&c, " stage_nme = prod", &err), 0);
    cr_expect_str_eq(err.message,
                     "--set: unknown variable \"stage_nme\" (did you mean \"stage_name\"?)");
    cr_expect_lt(config_set_var(&c, "TF_VAR_x", "prot", "1", &err), 0);
    cr_expect_str_eq(err.message, "TF_VAR_x: unknown variable \"prot\" (did you mean \"port\"?)");
    cr_expect_lt(config_set(&c, "nope=1", &err), 0);
    cr_expect_str_eq(err.message, "--set: unknown variable \"nope\"");
    config_free(&c);
}

Test(suggest, words_of_a_list) {
    static const char *const commands[] = {"serve", "check", "outputs", "rotate-key", NULL};
    cr_expect_str_eq(config_suggest_word("serv", commands), "serve");
    cr_expect_str_eq(config_suggest_word("rotatekey", commands), "rotate-key");
    cr_expect_str_eq(config_suggest_word("Check", commands), "check");
    cr_expect_null(config_suggest_word("frobnicate", commands));
    cr_expect_null(config_suggest_word("", commands));
    cr_expect_null(config_suggest_word(NULL, commands));
    static const char *const outputs[] = {"test_connection_url", "websocket_api_endpoint", NULL};
    cr_expect_str_eq(config_suggest_word("test_connection", outputs), "test_connection_url");
    static const char *const flags[] = {"--port", "--data-dir", NULL};
    cr_expect_str_eq(config_suggest_word("--data_dir", flags), "--data-dir");
    cr_expect_str_eq(config_suggest_word("--prot", flags), "--port");
}
