/* `wsgate outputs`: what `terraform output` printed for the seed, computed
 * from the configuration. */
#ifndef WSGATE_CLI_OUTPUTS_H
#define WSGATE_CLI_OUTPUTS_H

#include <stdbool.h>
#include <stdio.h>

#include "config/config.h"

typedef enum outputs_format { OUTPUTS_TEXT, OUTPUTS_JSON, OUTPUTS_RAW } outputs_format;

/* Print the outputs of cfg to out in `format`; for OUTPUTS_RAW only the
 * value of `name`. Never writes state: the management keys are read from
 * the configuration or the data directory (which file, or why there are
 * none, is said on stderr). Returns 0; 2 (usage, with a message on stderr)
 * when name is not an output; 1 when the output asked for with -raw has no
 * value (the management keys before the server's first start). */
int outputs_print(const config *cfg, outputs_format format, const char *name, FILE *out);

/* Write "SCHEME://HOST:PORT" into buf: the address clients dial for cfg
 * (loopback when listening on every address), ws/wss, or http/https when
 * `web`, by tls_cert_file. */
void outputs_base_url(const config *cfg, long long port, bool web, char *buf, size_t len);

/* Write the API's stable 10-character id (websocket_api_id, the events'
 * apiId) into out. */
void outputs_api_id(const config *cfg, char out[11]);

/* Write the path of the store's database file for cfg into buf. */
void outputs_data_file(const config *cfg, char *buf, size_t len);

#endif
