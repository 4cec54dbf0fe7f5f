/* Peer addresses as text, one copy per address per worker thread: every
 * connection from 127.0.0.1 points at the same string instead of carrying
 * 46 bytes of its own (issue 16, idle memory). A connection is accepted and
 * freed on its worker's thread, so each thread keeps its own table and no
 * lock is taken; other threads only read the text of a live connection. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/keytab.h"
#include "net/conn_internal.h"

typedef struct conn_addr {
    uint32_t refs;
    char text[];
} conn_addr;

static const char *addr_key(const void *v) { return ((const conn_addr *)v)->text; }

static _Thread_local keytab addrs;
static _Thread_local bool addrs_ready;

const char *conn_addr_intern(const char *text) {
    if (!addrs_ready) {
        keytab_init(&addrs, addr_key);
        addrs_ready = true;
    }
    conn_addr *a = keytab_get(&addrs, text);
    if (!a) {
        size_t n = strlen(text) + 1;
        a = xmalloc(sizeof(*a) + n);
        a->refs = 0;
        memcpy(a->text, text, n);
        keytab_put(&addrs, a);
    }
    a->refs++;
    return a->text;
}

void conn_addr_release(const char *text) {
    if (!text) return;
    conn_addr *a = (conn_addr *)(void *)(text - offsetof(conn_addr, text));
    if (--a->refs > 0) return;
    /* The last connection from it: the table empties with the server
     * (keytab_remove frees the slots with the last entry). */
    keytab_remove(&addrs, a->text);
    free(a);
}
