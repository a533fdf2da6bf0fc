/* transport: bytes in and out. Opens listening sockets (for the master),
 * accepts connections in a worker, splits newline-delimited DNode messages
 * and hands each to its session; enforces max_message_size. Does not
 * interpret messages (session, dnode). */
#ifndef DNODED_TRANSPORT_H
#define DNODED_TRANSPORT_H

#include <stddef.h>

struct worker;

/* Open a non-blocking listening socket on "host:port" or "[v6]:port" with
 * SO_REUSEADDR. Returns the fd, or -1 with a reason in err. */
int transport_listen(const char *addr, char *err, size_t errlen);

/* Start accepting on the worker's inherited sockets. 0 or -1. */
int transport_start(struct worker *w, const int *fds, size_t nfds);
/* Stop accepting (listeners disabled, sockets stay open in the master). */
void transport_stop_accepting(struct worker *w);

struct session;
struct session_msg;
/* Take over a connection whose first bytes are an HTTP request. 0 or -1. */
int transport_http_begin(struct session *s);
/* Read WebSocket frames of an upgraded session. */
void transport_ws_read(struct session *s);
/* Queue m as one WebSocket text frame on s. 0 or -1. */
int transport_ws_write(struct session *s, struct session_msg *m);
/* Release what the transport keeps for s (teardown). */
void transport_session_free(struct session *s);

#endif
