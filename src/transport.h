/* transport: listening sockets and accepting. Opens the listening sockets
 * (for the master), accepts connections on a worker's inherited ones
 * (max_connections, TCP options, spreading connections evenly over the
 * workers) and hands each new socket to conn_open. Does not read or write
 * a connection's bytes (conn and its variants). */
#ifndef DNODED_TRANSPORT_H
#define DNODED_TRANSPORT_H

#include <stddef.h>

#include "conn.h"
#include "metrics.h"

typedef struct transport transport_t;

/* Open a non-blocking listening socket on "host:port" or "[v6]:port" with
 * SO_REUSEADDR. Returns the fd, or -1 with a reason in err. */
int transport_listen(const char *addr, char *err, size_t errlen);

/* Start accepting on fds (the master's listening sockets, shared) into
 * env's connections; the last ntls of them are TLS listeners (env->tls_ctx
 * is their context). metrics is every worker's counters (to spread
 * connections; env->stats is this worker's slot). NULL on failure. */
transport_t *transport_start(conn_env_t *env, struct metrics *metrics, const int *fds, size_t nfds,
                             size_t ntls);
/* Stop accepting for good (listeners disabled; the sockets stay open in
 * the master). A connection accepted meanwhile is refused. */
void transport_stop_accepting(transport_t *t);
void transport_free(transport_t *t);

#endif
