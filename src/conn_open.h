/* conn_open: how a connection starts. An accepted socket's first bytes tell
 * an HTTP client (http) from a DNode peer (conn_line); a peer that says
 * nothing for a while is taken to be a DNode client waiting for our
 * methods. A connection handed over by another worker (handoff) starts as
 * what it was there. Does not accept sockets (transport) or move them
 * (handoff). */
#ifndef DNODED_CONN_OPEN_H
#define DNODED_CONN_OPEN_H

#include <stdint.h>

#include "conn.h"

/* How long a silent new connection waits before we send our methods, in
 * milliseconds. A DNode peer sends its own methods at once, so this only
 * serves peers that wait for ours. It must outlast browsers' speculative
 * preconnections: Chromium opens sockets it may use for HTTP seconds later
 * and drops them unused after 10 s; a methods line sent on one of those
 * would corrupt the HTTP response the page then asks for. */
#define CONN_FIRST_BYTES_MS 15000

/* A connection for accepted socket fd (taken; closed on failure), reading
 * its first bytes. NULL on failure (logged). */
conn_t *conn_open_accepted(conn_env_t *env, int fd, const char *peer, int tls);

/* What a connection handed over by another worker was. */
typedef enum {
    CONN_ADOPT_FRESH, /* nothing read yet: as if just accepted */
    CONN_ADOPT_LINE,  /* a DNode stream over TCP */
    CONN_ADOPT_WS     /* a DNode stream over WebSocket */
} conn_adopt_t;

/* A connection for fd (taken; closed on failure) handed over as kind.
 * age_ms is how long ago it was accepted (the first-bytes timer of a fresh
 * one goes on from there). A fresh one starts reading at once, with no
 * owner; the others start held (no reading or writing until conn_resume),
 * counted as open sessions without a greeting, and the caller attaches
 * their owner. NULL on failure (logged). */
conn_t *conn_open_adopted(conn_env_t *env, int fd, const char *peer, conn_adopt_t kind,
                          uint64_t age_ms);

#endif
