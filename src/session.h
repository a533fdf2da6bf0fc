/* session: one connected client. Owns its connection's write side, the ids
 * of the methods the client exported, its subscriptions and its count of
 * operations in flight. Closing goes through session_close only: it marks
 * the session and the worker tears it down later at a safe point; the
 * struct itself is freed when the last reference (in-flight operations,
 * the worker's list) is dropped. Does not parse bytes (transport) or know
 * the backbone-dnode methods (api). */
#ifndef DNODED_SESSION_H
#define DNODED_SESSION_H

#include <event2/bufferevent.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "json.h"

struct worker;
struct bus_channel;

/* Methods a client may export and the server calls by name. */
enum {
    SESSION_REMOTE_CREATED,
    SESSION_REMOTE_UPDATED,
    SESSION_REMOTE_DELETED,
    SESSION_REMOTE_SUBSCRIBED,
    SESSION_REMOTE_UNSUBSCRIBED,
    SESSION_REMOTE_ERROR,
    SESSION_REMOTE_COUNT
};

typedef enum { SESSION_FRAMING_LINE, SESSION_FRAMING_WEBSOCKET } session_framing_t;

/* A message shared by many sessions (fan-out): serialized once, referenced
 * by each output buffer, freed when the last one has written it. data
 * holds len bytes followed by '\n' (line framing writes len + 1). */
typedef struct session_msg {
    unsigned refs;
    size_t len;
    char data[];
} session_msg_t;

session_msg_t *session_msg_new(const char *data, size_t len);
/* Build a named call (e.g. "created") with args; NULL on allocation failure. */
session_msg_t *session_msg_call(const char *method, const json_t *args);
void session_msg_unref(session_msg_t *m);

typedef struct session {
    uint64_t id;
    struct worker *worker;
    struct bufferevent *bev;   /* NULL once torn down */
    evutil_socket_t fd;        /* bev's socket, fixed for its life (-1: none) */
    struct session *prev, *next; /* the worker's list */
    unsigned refs;
    unsigned closing : 1;      /* session_close was called */
    unsigned torn_down : 1;    /* connection released */
    unsigned draining : 1;     /* stopping: close at the first idle moment */
    unsigned got_methods : 1;  /* the client sent its methods */
    unsigned started : 1;      /* the transport decided DNode and sent our methods */
    unsigned slow : 1;         /* being disconnected as a slow consumer */
    unsigned handed : 1;       /* sent to the new generation (handoff.h): pushes until
                                * its markers, then ends without a word to the client */
    unsigned held : 1;         /* adopted, the old worker still writes: no byte in or out */
    unsigned no_handoff : 1;   /* cannot be handed off: close when idle, as a stop does */
    uint32_t scanned;          /* input bytes already searched for a newline */
    session_framing_t framing;
    uint8_t culled;            /* bit i: our method id i was culled */
    int64_t remote[SESSION_REMOTE_COUNT]; /* client's callback ids, or -1 */
    uint32_t inflight;         /* operations waiting for the database */
    uint32_t callbacks_held;   /* the client's callbacks those operations hold */
    uint32_t unconfirmed;      /* its publishes Redis has not confirmed yet (bus) */
    uint64_t over_soft_us;     /* when output went over output_soft_limit, or 0 */
    uint64_t accepted_us;      /* metrics_now_us() when the connection was accepted */
    struct bus_channel **subs; /* channels joined */
    uint32_t nsubs, capsubs;
    void *transport_state;     /* e.g. the WebSocket decoder */
    struct handoff *handoff;   /* a move between generations in progress, or NULL */
    char peer[48];             /* "127.0.0.1:5000" */
} session_t;

/* Create a session for an accepted connection (takes ownership of bev). The
 * caller sends the methods message through session_start. NULL on failure
 * (bev is freed then). */
session_t *session_new(struct worker *w, struct bufferevent *bev, const char *peer,
                       session_framing_t framing);
/* Send our methods message. */
int session_start(session_t *s);

/* Handle one complete received message (without terminator). Never frees s
 * (closing is deferred), so callers may check s->closing afterwards. */
void session_handle_message(session_t *s, const char *data, size_t len);

/* The one way a session ends: logs reason at info (or the given level),
 * stops reading, and schedules the teardown. Idempotent. */
void session_close(session_t *s, const char *reason);
/* The worker is stopping: close s at the first moment nothing is in
 * flight, all output is sent and no request is buffered or unread on the
 * socket. Requests that do arrive meanwhile are still served, so none the
 * client sent before the close is dropped. A retiring worker (reload)
 * hands s to the new generation at that moment instead (handoff.h); then
 * unread bytes stay in the socket for the adopter. Calling it again
 * re-checks. */
void session_drain(session_t *s);

session_t *session_ref(session_t *s);
void session_unref(session_t *s);

/* Label for log lines: "session 12 127.0.0.1:5000". */
const char *session_ctx(const session_t *s, char *buf, size_t len);

/* Output. All return 0, or -1 when the session is closing or went over
 * max_output_buffer (then it has been closed as too slow). A session whose
 * output stays over output_soft_limit for output_soft_seconds is closed as
 * too slow too: checked here on every send and by session_check_soft. */
int session_send_msg(session_t *s, session_msg_t *m); /* takes a new ref on m */
/* Write iov straight to the socket when nothing is queued in out. Returns
 * the bytes written (0 when the caller must queue everything), or -1 on a
 * write error. SIGPIPE is ignored process-wide. */
struct iovec;
ssize_t session_write_direct(session_t *s, struct evbuffer *out, struct iovec *iov,
                             int iovcnt);
/* Gather what is sent to s from session_cork to session_uncork and write
 * it with one writev (lines, or WebSocket frames): a client that pipelines
 * calls costs one write per read rather than one per reply. One session per
 * worker at a time (the transport corks around the messages of one read);
 * at most SESSION_CORK_MAX messages are held, then written. Uncorking
 * applies the output limits, and may close s as usual. */
#define SESSION_CORK_MAX 32
void session_cork(session_t *s);
void session_uncork(session_t *s);
/* Call the client's callback id with args (args stay the caller's). */
int session_call(session_t *s, int64_t cb, const json_t *args);
/* Call an exported client method (created, updated, ...) when the client
 * exported it; 0 when it did not (nothing sent). */
int session_call_remote(session_t *s, int which, const json_t *args);

/* The slow-consumer rule's periodic half (the worker's timer calls it for
 * each session whose over_soft_us is set): closes s when its output has
 * stayed over output_soft_limit for output_soft_seconds, forgets the mark
 * when the output is back under. now_us is metrics_now_us(). */
void session_check_soft(session_t *s, uint64_t now_us);

/* An operation of s finished (api): lets a draining session close. */
void session_op_done(session_t *s);
/* Redis confirmed (or lost) a publish of s (lets a retiring worker move it). */
void session_publish_done(session_t *s);
/* The transport wrote out everything queued (lets a draining session close). */
void session_output_drained(session_t *s);

/* Called by the worker's teardown pass (not for other modules). */
void session_teardown(session_t *s);

#define slog(level, s, ...)                                                  \
    do {                                                                     \
        if (log_enabled(level)) {                                            \
            char slog_ctx_[80];                                              \
            log_write(level, session_ctx((s), slog_ctx_, sizeof(slog_ctx_)), \
                      __VA_ARGS__);                                          \
        }                                                                    \
    } while (0)
#define slog_debug(s, ...) slog(LOG_LEVEL_DEBUG, s, __VA_ARGS__)
#define slog_info(s, ...) slog(LOG_LEVEL_INFO, s, __VA_ARGS__)
#define slog_warning(s, ...) slog(LOG_LEVEL_WARNING, s, __VA_ARGS__)
#define slog_error(s, ...) slog(LOG_LEVEL_ERROR, s, __VA_ARGS__)

#endif
