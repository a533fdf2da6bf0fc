/* transport: bytes in and out. Opens listening sockets (for the master),
 * accepts connections in a worker, splits newline-delimited DNode messages
 * and hands each to its session; enforces max_message_size. Does not
 * interpret messages (session, dnode). */
#ifndef DNODED_TRANSPORT_H
#define DNODED_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

struct worker;

/* Open a non-blocking listening socket on "host:port" or "[v6]:port" with
 * SO_REUSEADDR. Returns the fd, or -1 with a reason in err. */
int transport_listen(const char *addr, char *err, size_t errlen);

/* Start accepting on the worker's inherited sockets. 0 or -1. */
int transport_start(struct worker *w, const int *fds, size_t nfds);
/* Stop accepting (listeners disabled, sockets stay open in the master). */
void transport_stop_accepting(struct worker *w);

struct evbuffer;
/* Newline framing of DNode over TCP, without the session: hands each
 * complete message in `in` to on_line (without its LF or a CR before it;
 * lines of only spaces, tabs and CRs are keep-alives and skipped), draining
 * it after the call, until on_line returns non-zero or no complete line is
 * left. *scanned counts the leading bytes already searched for a newline;
 * keep it between calls (start at 0). A message over max bytes, or
 * max + 1 bytes buffered without a newline, is TRANSPORT_FRAME_OVERSIZED
 * with its size in *oversize; nothing is drained then. */
enum {
    TRANSPORT_FRAME_MORE,      /* every complete line handled; waiting for bytes */
    TRANSPORT_FRAME_STOPPED,   /* on_line asked to stop */
    TRANSPORT_FRAME_OVERSIZED, /* over max: the connection must end */
    TRANSPORT_FRAME_NOMEM
};
int transport_frame_lines(struct evbuffer *in, uint32_t *scanned, size_t max,
                          int (*on_line)(void *arg, const char *line, size_t len), void *arg,
                          size_t *oversize);

struct session;
struct session_msg;
/* Take over a connection whose first bytes are an HTTP request. 0 or -1. */
int transport_http_begin(struct session *s);
/* Read WebSocket frames of an upgraded session. */
void transport_ws_read(struct session *s);
/* Send ms[0..n-1] as WebSocket text frames on s (ws_write). 0 or -1. */
int transport_ws_write(struct session *s, struct session_msg *const *ms, unsigned n);
/* Close a WebSocket session with 1008 after what is queued (slow consumer). */
void transport_ws_close_policy(struct session *s, const char *reason);
/* Release what the transport keeps for s (teardown). */
void transport_session_free(struct session *s);

/* Whether s's framing is at a message boundary, so that its connection can
 * move to another worker: nothing half-parsed or half-written inside the
 * transport (the input and output buffers are the caller's to check). */
int transport_idle(struct session *s);

/* What a connection handed over by another worker was (handoff). */
enum {
    TRANSPORT_ADOPT_FRESH, /* nothing read yet: as if just accepted */
    TRANSPORT_ADOPT_LINE,  /* a DNode session over TCP */
    TRANSPORT_ADOPT_WS     /* a DNode session over WebSocket */
};
/* Make a session for connection fd (taken; closed on failure) as kind.
 * age_ms is how long ago it was accepted (the first-bytes timer of a fresh
 * one goes on from there). A fresh connection starts reading at once;
 * the others start with reading and writing off until transport_resume,
 * and the caller restores their protocol state first. NULL on failure. */
struct session *transport_adopt(struct worker *w, int fd, const char *peer, int kind,
                                uint64_t age_ms);
/* Start moving bytes on an adopted session. */
void transport_resume(struct session *s);

#endif
