/* Unit tests for the tfvars parser (src/config/tfvars.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "config/tfvars.h"

/* Parse from an exact-size heap copy, so ASan catches any read past the end
 * (the parser must not rely on a terminating NUL). */
static tfv_doc *parse(const char *text, wsg_error *err) {
    size_t n = strlen(text);
    char *copy = xmalloc(n);
    memcpy(copy, text, n);
    tfv_doc *doc = tfv_parse(copy, n, err);
    free(copy);
    return doc;
}

static tfv_value *parse_one(const char *text, wsg_error *err) {
    size_t n = strlen(text);
    char *copy = xmalloc(n);
    memcpy(copy, text, n);
    tfv_value *v = tfv_parse_value(copy, n, err);
    free(copy);
    return v;
}

static const tfv_value *get(const tfv_doc *doc, const char *name) {
    const tfv_attr *a = tfv_doc_find(doc, name);
    cr_assert_not_null(a, "no attribute %s", name);
    return a->value;
}

/* Assert that text fails to parse at line:col with a message containing
 * `needle`. */
static void expect_error(const char *text, int line, int col, const char *needle) {
    wsg_error err;
    tfv_doc *doc = parse(text, &err);
    cr_assert_null(doc, "expected an error for: %s", text);
    cr_expect_eq(err.code, WSG_E_CONFIG_SYNTAX, "%s for: %s", wsg_err_name(err.code), text);
    cr_expect_eq(err.line, line, "line %d != %d (%s) for: %s", err.line, line, err.message, text);
    cr_expect_eq(err.column, col, "column %d != %d (%s) for: %s", err.column, col, err.message,
                 text);
    cr_expect(strstr(err.message, needle) != NULL, "message \"%s\" lacks \"%s\"", err.message,
              needle);
}

Test(tfvars, empty_and_comments_only) {
    wsg_error err;
    tfv_doc *doc = parse("", &err);
    cr_assert_not_null(doc);
    cr_expect_eq(doc->count, 0);
    tfv_doc_free(doc);
    doc = parse("# one\n// two\n/* three\n four */\n\n", &err);
    cr_assert_not_null(doc, "%s", err.message);
    cr_expect_eq(doc->count, 0);
    tfv_doc_free(doc);
    cr_assert_not_null(doc = tfv_parse(NULL, 0, &err));
    tfv_doc_free(doc);
}

Test(tfvars, scalars_and_lines) {
    wsg_error err;
    tfv_doc *doc = parse("a = \"x\"\n"
                         "b = 42 # trailing comment\n"
                         "c = true // another\n"
                         "d = false /* block */\n"
                         "\n"
                         "e = null\n"
                         "f-g_h = -7\r\n",
                         &err);
    cr_assert_not_null(doc, "%s", err.message);
    cr_assert_eq(doc->count, 6);
    cr_expect_str_eq(get(doc, "a")->string, "x");
    cr_expect_eq(get(doc, "a")->line, 1);
    cr_expect_eq(get(doc, "a")->column, 5);
    cr_expect_eq(get(doc, "b")->type, TFV_NUMBER);
    cr_expect(get(doc, "b")->is_integer);
    cr_expect_eq(get(doc, "b")->integer, 42);
    cr_expect_eq(get(doc, "b")->line, 2);
    cr_expect_eq(get(doc, "c")->type, TFV_BOOL);
    cr_expect(get(doc, "c")->boolean);
    cr_expect_eq(get(doc, "d")->type, TFV_BOOL);
    cr_expect_not(get(doc, "d")->boolean);
    cr_expect_eq(get(doc, "e")->type, TFV_NULL);
    cr_expect_eq(get(doc, "e")->line, 6);
    cr_expect_eq(get(doc, "f-g_h")->integer, -7);
    cr_expect_eq(doc->attrs[5].line, 7);
    tfv_doc_free(doc);
}

Test(tfvars, numbers) {
    struct {
        const char *text;
        double value;
        bool is_int;
        int64_t integer;
    } cases[] = {
        {"0", 0, true, 0},
        {"-12", -12, true, -12},
        {"3.25", 3.25, false, 0},
        {"-0.5", -0.5, false, 0},
        {"1e3", 1000, true, 1000},
        {"2.5E-1", 0.25, false, 0},
        {"1.0", 1, true, 1},
        {"9223372036854775807", 9223372036854775807.0, true, INT64_MAX},
        {"-9223372036854775808", -9223372036854775808.0, true, INT64_MIN},
        {"9223372036854775808", 9223372036854775808.0, false, 0},
        {"1e300", 1e300, false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wsg_error err;
        tfv_value *v = parse_one(cases[i].text, &err);
        cr_assert_not_null(v, "%s: %s", cases[i].text, err.message);
        cr_expect_eq(v->type, TFV_NUMBER);
        cr_expect_eq(v->number, cases[i].value, "%s", cases[i].text);
        cr_expect_eq(v->is_integer, cases[i].is_int, "%s", cases[i].text);
        if (cases[i].is_int) cr_expect_eq(v->integer, cases[i].integer, "%s", cases[i].text);
        tfv_value_free(v);
    }
}

Test(tfvars, bad_numbers) {
    expect_error("a = 1.\n", 1, 5, "digits after '.'");
    expect_error("a = 1e\n", 1, 5, "exponent");
    expect_error("a = 12abc\n", 1, 5, "invalid number");
    expect_error("a = -\n", 1, 5, "number after '-'");
    expect_error("a = 1e999\n", 1, 5, "out of range");
    expect_error("a = 1.2.3\n", 1, 5, "invalid number");
}

Test(tfvars, string_escapes) {
    wsg_error err;
    tfv_value *v =
        parse_one("\"a\\nb\\tc\\rd\\\"e\\\\f\\u00e9\\U0001F600$x %y $${z} %%{w}\"", &err);
    cr_assert_not_null(v, "%s", err.message);
    cr_expect_str_eq(v->string, "a\nb\tc\rd\"e\\f\xc3\xa9\xf0\x9f\x98\x80$x %y ${z} %{w}");
    cr_expect_eq(v->string_len, strlen(v->string));
    tfv_value_free(v);
    v = parse_one("\"$request.body.type\"", &err);
    cr_assert_not_null(v);
    cr_expect_str_eq(v->string, "$request.body.type");
    tfv_value_free(v);
    v = parse_one("\"\"", &err);
    cr_assert_not_null(v);
    cr_expect_str_eq(v->string, "");
    tfv_value_free(v);
    v = parse_one("\"caf\xc3\xa9\"", &err);
    cr_assert_not_null(v);
    cr_expect_str_eq(v->string, "caf\xc3\xa9");
    tfv_value_free(v);
}

Test(tfvars, bad_strings) {
    expect_error("a = \"abc\n", 1, 5, "unterminated string");
    expect_error("x = 1\na = \"abc", 2, 5, "unterminated string");
    expect_error("a = \"abc\\", 1, 5, "unterminated string");
    expect_error("a = \"a\\qb\"\n", 1, 7, "invalid escape sequence '\\q'");
    expect_error("a = \"\\u12\"\n", 1, 6, "4 hex digits");
    expect_error("a = \"\\U0000004\"\n", 1, 6, "8 hex digits");
    expect_error("a = \"\\ud800\"\n", 1, 6, "not a valid Unicode");
    expect_error("a = \"\\U00110000\"\n", 1, 6, "not a valid Unicode");
    expect_error("a = \"\\u0000\"\n", 1, 6, "NUL");
    expect_error("a = \"x${var.y}\"\n", 1, 7, "template sequence");
    expect_error("a = \"%{ if x }\"\n", 1, 6, "template sequence");
    expect_error("a = \"\xff\"\n", 1, 5, "not valid UTF-8");
    expect_error("a = \"\xc0\xaf\"\n", 1, 5, "not valid UTF-8");
    expect_error("a = \"\xed\xa0\x80\"\n", 1, 5, "not valid UTF-8");
}

Test(tfvars, nul_byte_in_string) {
    const char text[] = {'a', '=', '"', 'x', '\0', 'y', '"'};
    wsg_error err;
    char *copy = xmalloc(sizeof text);
    memcpy(copy, text, sizeof text);
    cr_expect_null(tfv_parse(copy, sizeof text, &err));
    cr_expect(strstr(err.message, "NUL") != NULL, "%s", err.message);
    free(copy);
}

Test(tfvars, lists) {
    wsg_error err;
    tfv_doc *doc = parse("a = []\n"
                         "b = [1, \"two\", true, null, [3], {k = 4}]\n"
                         "c = [\n"
                         "  \"x\", # comment\n"
                         "  // another\n"
                         "  \"y\",\n"
                         "]\n",
                         &err);
    cr_assert_not_null(doc, "%s", err.message);
    cr_expect_eq(get(doc, "a")->type, TFV_LIST);
    cr_expect_eq(get(doc, "a")->count, 0);
    const tfv_value *b = get(doc, "b");
    cr_assert_eq(b->count, 6);
    cr_expect_eq(b->items[0]->integer, 1);
    cr_expect_str_eq(b->items[1]->string, "two");
    cr_expect(b->items[2]->boolean);
    cr_expect_eq(b->items[3]->type, TFV_NULL);
    cr_expect_eq(b->items[4]->items[0]->integer, 3);
    cr_expect_str_eq(b->items[5]->keys[0], "k");
    const tfv_value *c = get(doc, "c");
    cr_assert_eq(c->count, 2);
    cr_expect_str_eq(c->items[1]->string, "y");
    cr_expect_eq(c->items[0]->line, 4);
    cr_expect_eq(c->items[1]->line, 6);
    cr_expect_eq(c->items[1]->column, 3);
    tfv_doc_free(doc);
}

Test(tfvars, many_list_items) {
    char text[4096] = "a = [";
    for (int i = 0; i < 300; i++) strcat(text, "1,");
    strcat(text, "]\n");
    wsg_error err;
    tfv_doc *doc = parse(text, &err);
    cr_assert_not_null(doc, "%s", err.message);
    cr_expect_eq(get(doc, "a")->count, 300);
    tfv_doc_free(doc);
}

Test(tfvars, bad_lists) {
    expect_error("a = [\"x\", \"y\"\n", 1, 5, "unterminated list");
    expect_error("a = [1,\n2,\n", 1, 5, "unterminated list");
    expect_error("a = [\"x\" \"y\"]\n", 1, 10, "expected ',' or ']'");
    expect_error("a = [,]\n", 1, 6, "expected a value");
    expect_error("a = [1,,]\n", 1, 8, "expected a value");
}

/* Python's and the shell's quotes are no tfvars string: say which are. */
Test(tfvars, single_quotes_say_double) {
    expect_error("stage_name = 'prod'\n", 1, 14,
                 "expected a value, found ''' (strings take double quotes)");
    expect_error("a = ['x']\n", 1, 6, "(strings take double quotes)");
}

Test(tfvars, maps) {
    wsg_error err;
    tfv_doc *doc = parse("a = {}\n"
                         "b = { x = 1, \"quoted key\" = \"v\", y: true, }\n"
                         "c = {\n"
                         "  Owner       = \"platform-team\"\n"
                         "  CostCenter  = \"engineering\" # why\n"
                         "\n"
                         "  \"a.b\" : [1, 2],\n"
                         "  nested = { deep = { deeper = \"z\" } }\n"
                         "}\n",
                         &err);
    cr_assert_not_null(doc, "%s", err.message);
    cr_expect_eq(get(doc, "a")->type, TFV_MAP);
    cr_expect_eq(get(doc, "a")->count, 0);
    const tfv_value *b = get(doc, "b");
    cr_assert_eq(b->count, 3);
    cr_expect_str_eq(b->keys[1], "quoted key");
    cr_expect_str_eq(b->items[1]->string, "v");
    cr_expect_str_eq(b->keys[2], "y");
    const tfv_value *c = get(doc, "c");
    cr_assert_eq(c->count, 4);
    cr_expect_str_eq(c->keys[0], "Owner");
    cr_expect_str_eq(c->items[1]->string, "engineering");
    cr_expect_eq(c->items[1]->line, 5);
    cr_expect_str_eq(c->keys[2], "a.b");
    cr_expect_eq(c->items[2]->count, 2);
    cr_expect_str_eq(c->items[3]->items[0]->items[0]->string, "z");
    tfv_doc_free(doc);
}

Test(tfvars, bad_maps) {
    expect_error("a = {\n  x = 1\n", 1, 5, "unterminated map");
    expect_error("a = { x = 1 y = 2 }\n", 1, 13, "after a map entry");
    expect_error("a = { x 1 }\n", 1, 9, "expected '=' or ':'");
    expect_error("a = { x = 1, x = 2 }\n", 1, 14, "duplicate map key \"x\"");
    expect_error("a = { [1] = 2 }\n", 1, 7, "expected a map key");
    expect_error("a = { x =\n 1 }\n", 1, 10, "found end of line");
}

Test(tfvars, heredocs) {
    wsg_error err;
    tfv_doc *doc = parse("a = <<EOT\n"
                         "line one \\n stays\n"
                         "  two\n"
                         "EOT\n"
                         "b = <<-EOT\n"
                         "    four\n"
                         "      six\n"
                         "\n"
                         "    EOT\n"
                         "c = 1\n",
                         &err);
    cr_assert_not_null(doc, "%s", err.message);
    cr_expect_str_eq(get(doc, "a")->string, "line one \\n stays\n  two\n");
    cr_expect_str_eq(get(doc, "b")->string, "four\n  six\n\n");
    cr_expect_eq(get(doc, "c")->line, 10);
    tfv_doc_free(doc);
    expect_error("a = <<EOT\nno end\n", 1, 5, "unterminated heredoc");
    expect_error("a = <<EOT x\nEOT\n", 1, 10, "followed by a newline");
    expect_error("a = <<\nEOT\n", 1, 7, "heredoc marker");
    expect_error("x = 1\na = <<EOT\nhi ${x}\nEOT\n", 3, 4, "template sequence");
}

Test(tfvars, comments) {
    wsg_error err;
    tfv_doc *doc = parse("/* lead */ a = /* mid */ 1 /* tail */\n"
                         "b = \"# not a comment // nor this\"\n",
                         &err);
    cr_assert_not_null(doc, "%s", err.message);
    cr_expect_eq(get(doc, "a")->integer, 1);
    cr_expect_str_eq(get(doc, "b")->string, "# not a comment // nor this");
    tfv_doc_free(doc);
    expect_error("a = 1\n/* never\nclosed\n", 2, 1, "unterminated comment");
    expect_error("a = [1, /* x", 1, 9, "unterminated comment");
}

Test(tfvars, structure_errors) {
    expect_error("a = 1\na = 2\n", 2, 1, "duplicate variable \"a\" (first set on line 1)");
    expect_error("a = 1 b = 2\n", 1, 7, "expected a newline");
    expect_error("a 1\n", 1, 3, "expected '='");
    expect_error("a =\n1\n", 1, 4, "found end of line");
    expect_error("a = ", 1, 5, "found end of input");
    expect_error("= 1\n", 1, 1, "expected a variable name");
    expect_error("resource {\n}\n", 1, 1, "blocks are not allowed");
    expect_error("a = var.x\n", 1, 5, "variables and function calls are not allowed");
    expect_error("a = upper(\"x\")\n", 1, 5, "not allowed");
    expect_error("a = @\n", 1, 5, "found '@'");
    expect_error("a = \x01\n", 1, 5, "byte 0x01");
}

Test(tfvars, depth_limit) {
    char text[400];
    size_t n = 0;
    n += (size_t)snprintf(text, sizeof text, "a = ");
    for (int i = 0; i < TFV_MAX_DEPTH; i++) text[n++] = '[';
    for (int i = 0; i < TFV_MAX_DEPTH; i++) text[n++] = ']';
    text[n] = '\0';
    wsg_error err;
    tfv_doc *doc = parse(text, &err);
    cr_assert_not_null(doc, "%s", err.message);
    tfv_doc_free(doc);
    n = 4;
    for (int i = 0; i < TFV_MAX_DEPTH + 1; i++) text[n++] = '[';
    text[n] = '\0';
    doc = parse(text, &err);
    cr_assert_null(doc);
    cr_expect(strstr(err.message, "nested too deeply") != NULL, "%s", err.message);
    cr_expect_eq(err.column, 5 + TFV_MAX_DEPTH);
    /* Maps count toward the same limit. */
    char deep[1200] = "a = ";
    for (int i = 0; i < TFV_MAX_DEPTH + 1; i++) strcat(deep, "{k=");
    doc = parse(deep, &err);
    cr_assert_null(doc);
    cr_expect(strstr(err.message, "nested too deeply") != NULL, "%s", err.message);
}

Test(tfvars, not_nul_terminated) {
    /* "a = 12" followed by bytes that must never be read. */
    const char full[] = "a = 12345";
    wsg_error err;
    char *buf = xmalloc(6);
    memcpy(buf, full, 6);
    tfv_doc *doc = tfv_parse(buf, 6, &err);
    cr_assert_not_null(doc, "%s", err.message);
    cr_expect_eq(get(doc, "a")->integer, 12);
    tfv_doc_free(doc);
    free(buf);
    /* Every prefix of a rich document: errors or success, never a bad read. */
    const char *rich = "a = { k = [\"x\\u00e9\", <<EOT\nhi\nEOT\n, 1.5e3] } /* c */\n";
    size_t len = strlen(rich);
    for (size_t i = 0; i <= len; i++) {
        char *p = xmalloc(i);
        memcpy(p, rich, i);
        tfv_doc_free(tfv_parse(p, i, &err));
        tfv_value_free(tfv_parse_value(p, i, &err));
        free(p);
    }
}

Test(tfvars, parse_value_api) {
    wsg_error err;
    tfv_value *v = parse_one("  [\"a\", \"b\"]  # c\n", &err);
    cr_assert_not_null(v, "%s", err.message);
    cr_expect_eq(v->count, 2);
    tfv_value_free(v);
    cr_expect_null(parse_one("prod", &err));
    cr_expect_null(parse_one("1 2", &err));
    cr_expect(strstr(err.message, "after the value") != NULL, "%s", err.message);
    cr_expect_null(parse_one("", &err));
    cr_expect(strstr(err.message, "end of input") != NULL, "%s", err.message);
    v = tfv_string_new("raw \"text\"", 10);
    cr_expect_str_eq(v->string, "raw \"text\"");
    cr_expect_eq(v->type, TFV_STRING);
    tfv_value_free(v);
}

Test(tfvars, bom_is_skipped) {
    wsg_error err;
    tfv_doc *doc = parse("\xef\xbb\xbf"
                         "a = 1\n",
                         &err);
    cr_assert_not_null(doc, "%s", err.message);
    cr_expect_eq(doc->attrs[0].column, 1);
    tfv_doc_free(doc);
}

Test(tfvars, invalid_utf8_in_a_string_is_refused) {
    wsg_error err;
    cr_expect_null(parse("a = \"\xf4\x90\x80\x80\"\n", &err));
    cr_expect_null(parse("a = \"\xe0\x80\xaf\"\n", &err));
    tfv_doc *doc = parse("a = \"\xf4\x8f\xbf\xbf\"\n", &err);
    cr_expect_not_null(doc, "%s", err.message);
    tfv_doc_free(doc);
    cr_expect_str_eq(tfv_type_name(TFV_MAP), "map");
}
