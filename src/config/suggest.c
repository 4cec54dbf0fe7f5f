#include "config/suggest.h"

#include <stdbool.h>
#include <string.h>

#include "config/config_table.h"

/* Names longer than this are no typo of a variable worth measuring. */
#define SUGGEST_MAX_LEN 64

static char fold(char c) {
    if (c >= 'A' && c <= 'Z') return (char)(c - 'A' + 'a');
    return c == '-' ? '_' : c; /* Terraform-ish spellings with hyphens */
}

/* Optimal string alignment distance (Levenshtein plus adjacent swaps) on
 * folded characters; both lengths are at most SUGGEST_MAX_LEN. */
static size_t distance(const char *a, size_t la, const char *b, size_t lb) {
    size_t d[SUGGEST_MAX_LEN + 1][SUGGEST_MAX_LEN + 1];
    for (size_t i = 0; i <= la; i++) d[i][0] = i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = fold(a[i - 1]) == fold(b[j - 1]) ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best) best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && fold(a[i - 1]) == fold(b[j - 2]) &&
                fold(a[i - 2]) == fold(b[j - 1]) && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* name[0..len) is a run of whole `_`-separated words of var: "stage" in
 * "stage_name", "region" in "aws_region", "burst_limit" in
 * "throttling_burst_limit". */
static bool whole_words_of(const char *name, size_t len, const char *var) {
    size_t lv = strlen(var);
    for (size_t at = 0; at + len <= lv; at++) {
        if (at > 0 && var[at - 1] != '_') continue;
        if (at + len < lv && var[at + len] != '_') continue;
        size_t k = 0;
        while (k < len && fold(name[k]) == var[at + k]) k++;
        if (k == len) return true;
    }
    return false;
}

/* The closest of n names (name_at(ctx, i)), by distance, else by whole
 * words when only one name has them. */
static const char *closest(const char *name, size_t len,
                           const char *(*name_at)(const void *, size_t), const void *ctx,
                           size_t n) {
    if (!name || len == 0 || len > SUGGEST_MAX_LEN) return NULL;
    /* One typo in four characters, at least one and at most three. */
    size_t limit = len / 4 < 1 ? 1 : len / 4 > 3 ? 3 : len / 4;
    const char *best = NULL, *by_words = NULL;
    size_t best_d = limit + 1, nwords = 0;
    for (size_t i = 0; i < n; i++) {
        const char *v = name_at(ctx, i);
        size_t lv = strlen(v);
        if (lv <= SUGGEST_MAX_LEN) {
            size_t d = distance(name, len, v, lv);
            if (d < best_d) {
                best_d = d;
                best = v;
            }
        }
        if (whole_words_of(name, len, v) && nwords++ == 0) by_words = v;
    }
    /* Words shared by several names ("timeout", "limit") mean none of them. */
    return best ? best : nwords == 1 ? by_words : NULL;
}

static const char *var_at(const void *ctx, size_t i) {
    (void)ctx;
    return config_vars[i].name;
}

static const char *list_at(const void *ctx, size_t i) { return ((const char *const *)ctx)[i]; }

const char *config_suggest_var(const char *name, size_t len) {
    return closest(name, len, var_at, NULL, config_nvars);
}

const char *config_suggest_word(const char *word, const char *const *names) {
    size_t n = 0;
    while (names && names[n]) n++;
    return closest(word, word ? strlen(word) : 0, list_at, names, n);
}
