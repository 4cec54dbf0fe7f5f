/* One table of command help, so each command's --help says what that
 * command takes rather than the general text. */
#include "cli/help.h"

#include <string.h>

typedef struct help_entry {
    const char *name;
    const char *synopsis;
    const char *summary;
    const char *options; /* the command's own flags, one per line; NULL: none */
    const char *example;
    bool variables;
} help_entry;

static const help_entry help_table[] = {
    {"serve", "wsgate serve [options]", "Start the server (WebSocket API, management API, web UI)",
     NULL, "wsgate serve -c terraform.tfvars --port 9000", true},
    {"check", "wsgate check [options]",
     "Validate the configuration, test-bind the port and explain the result; exits 2 on an "
     "error",
     NULL, "wsgate check -c terraform.tfvars --set max_connections=50000", true},
    {"outputs", "wsgate outputs [options] [-json | -raw NAME]",
     "The deployment's outputs, as `terraform output` prints them",
     "  -json               all outputs as one JSON object\n"
     "  -raw NAME           only the value of output NAME, unquoted\n",
     "wsgate outputs -c terraform.tfvars -raw websocket_api_endpoint", false},
    {"backup", "wsgate backup --out FILE [options]",
     "A consistent online backup of the store (the server may be running)",
     "  --out FILE          the new database file to write (not the store itself)\n",
     "wsgate backup --data-dir ./data --out /backups/wsgate.db", false},
    {"restore", "wsgate restore --to TIME --out FILE [options]",
     "The store as it was at TIME, from the point-in-time recovery archive",
     "  --to TIME           Unix seconds or YYYY-MM-DDTHH:MM:SSZ (UTC)\n"
     "  --out FILE          the new database file to write\n",
     "wsgate restore --to 2026-11-25T21:05:00Z --out restored.db", false},
    {"rotate-key", "wsgate rotate-key [options]",
     "Start a new data key for new writes; older keys stay readable", NULL,
     "wsgate rotate-key --data-dir ./data", false},
    {"export", "wsgate export --room ROOM [--since TIME] [--format jsonl|csv] [options]",
     "A room's stored messages, decrypted, to stdout",
     "  --room ROOM         the room to export (required)\n"
     "  --since TIME        only messages from TIME: Unix seconds or YYYY-MM-DDTHH:MM:SSZ\n"
     "  --format jsonl|csv  output format (default jsonl)\n",
     "wsgate export --room general --since 2026-11-25T00:00:00Z --format csv", false},
};

static const char common_options[] =
    "  -c FILE             config file: terraform.tfvars syntax, or .tfvars.json\n"
    "  --set NAME=VALUE    set one variable (repeatable; highest precedence)\n"
    "  --listen ADDR       listen address (default 127.0.0.1)\n"
    "  --port N            listen port (default 8080)\n"
    "  --data-dir DIR      data directory (default ./data)\n"
    "  -h, --help          this text\n";

int help_print_command(FILE *out, const char *command, bool *variables) {
    if (strcmp(command, "output") == 0) command = "outputs";
    for (size_t i = 0; i < sizeof(help_table) / sizeof(help_table[0]); i++) {
        const help_entry *h = &help_table[i];
        if (strcmp(h->name, command) != 0) continue;
        fprintf(out, "Usage: %s\n\n%s.\n\n", h->synopsis, h->summary);
        if (h->options) fprintf(out, "Options:\n%s\n", h->options);
        fprintf(out, "Common options:\n%s\n", common_options);
        fprintf(out, "Example:\n  %s\n", h->example);
        if (variables) *variables = h->variables;
        return 0;
    }
    return -1;
}
