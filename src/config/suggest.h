/* The "did you mean" of an unknown variable: the closest name in the
 * variable table, for the one-line error a typo gets. No I/O. */
#ifndef WSGATE_CONFIG_SUGGEST_H
#define WSGATE_CONFIG_SUGGEST_H

#include <stddef.h>

/* Return the variable name that name[0..len) most likely meant (a static
 * string of the table, never freed), or NULL when none is close enough to
 * be worth saying. Close means a few typed characters apart (letter case,
 * `-` for `_`, a swapped pair count as one), or name being whole words of
 * one variable's name ("stage" for "stage_name", "region" for
 * "aws_region"). */
const char *config_suggest_var(const char *name, size_t len);

/* Return the entry of the NULL-terminated `names` (a command, a flag, an
 * output name) that `word` most likely meant, by the same typo measure
 * or whole words of one entry, or NULL. The result is one of `names`. */
const char *config_suggest_word(const char *word, const char *const *names);

#endif
