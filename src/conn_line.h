/* conn_line: DNode over TCP, one message per line. Splits the input at
 * newlines, enforces max_message_size, and writes each message with its
 * newline (straight to the socket when nothing is queued). Does not parse
 * the messages (the owner does). */
#ifndef DNODED_CONN_LINE_H
#define DNODED_CONN_LINE_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"

struct evbuffer;

/* Newline framing without a connection: hands each complete message in
 * `in` to on_line (without its LF or a CR before it; lines of only spaces,
 * tabs and CRs are keep-alives and skipped), draining it after the call,
 * until on_line returns non-zero or no complete line is left. *scanned
 * counts the leading bytes already searched for a newline; keep it between
 * calls (start at 0). A message over max bytes, or max + 1 bytes buffered
 * without a newline, is CONN_FRAME_OVERSIZED with its size in *oversize;
 * nothing is drained then. */
enum {
    CONN_FRAME_MORE,      /* every complete line handled; waiting for bytes */
    CONN_FRAME_STOPPED,   /* on_line asked to stop */
    CONN_FRAME_OVERSIZED, /* over max: the connection must end */
    CONN_FRAME_NOMEM
};
int conn_frame_lines(struct evbuffer *in, uint32_t *scanned, size_t max,
                     int (*on_line)(void *arg, const char *line, size_t len), void *arg,
                     size_t *oversize);

/* Make c a DNode line stream (kind CONN_LINE). Reading goes on as it was. */
void conn_line_set(conn_t *c);

#endif
