/* Per-command help: `wsgate COMMAND --help` prints that command's usage,
 * its own options, the options every command takes, and one example. */
#ifndef WSGATE_CLI_HELP_H
#define WSGATE_CLI_HELP_H

#include <stdbool.h>
#include <stdio.h>

/* Print the help of `command` ("serve", "check", "outputs" or its alias
 * "output", "backup", "restore", "rotate-key", "export") to out. Returns
 * 0, or -1 (nothing printed) for a name without an entry. *variables is
 * set when the caller should append the list of every variable (serve and
 * check explain the configuration, so their help carries it). */
int help_print_command(FILE *out, const char *command, bool *variables);

#endif
