/* The process-wide bound on unfinished messages (max_partial_message_bytes):
 * every connection of every worker may hold up to max_fragmented_bytes of a
 * message it has not finished sending, so without a shared bound N slow or
 * fragmenting clients pin N times that. Each connection keeps its share
 * (what its frame parser holds for its unfinished message) in one counter
 * for the whole process; a connection whose share grows while the total is
 * over the bound is refused. */
#ifndef WSGATE_NET_MSG_BUDGET_H
#define WSGATE_NET_MSG_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes all connections' unfinished messages hold now (every worker). */
size_t msgbudget_total(void);

/* Set a connection's share (*share, the caller's, starting at 0) to held
 * bytes, adjusting the total. Returns true when the share grew and the
 * total is then over limit (limit <= 0: no bound): the caller refuses the
 * connection and releases what it holds (msgbudget_set(share, 0, 0)).
 * Thread-safe; costs nothing when the share does not change. */
bool msgbudget_set(uint32_t *share, size_t held, int64_t limit);

#endif
