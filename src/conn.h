/* conn: one accepted socket. Owns its bufferevent and fd, the peer's name,
 * what is queued for it (shared messages, corking, direct writes), the
 * output limits and the slow-consumer rules, the single mapping from socket
 * events to a close reason, and deferred teardown. The bytes' framing is a
 * variant behind an I/O table (conn_line, ws, http); whoever owns the
 * connection (a DNode session) is reached only through a handler table.
 * Knows nothing of DNode, sessions, channels or the worker. */
#ifndef DNODED_CONN_H
#define DNODED_CONN_H

#include <event2/bufferevent.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "json.h"
#include "log.h"
#include "metrics.h"

typedef struct conn conn_t;
typedef struct conn_env conn_env_t;

/* ------------------------------------------------------------------------
 * Shared messages
 * ------------------------------------------------------------------------ */

/* A message many connections may send (fan-out): built once, referenced by
 * each output buffer, freed when the last one has written it. data holds
 * len bytes followed by '\n' (line framing writes len + 1) and a NUL. */
typedef struct conn_msg {
    unsigned refs;
    size_t len;
    char data[];
} conn_msg_t;

/* Bytes a builder reserves in front of the message (conn_msg_from_buf). */
#define CONN_MSG_HEAD offsetof(conn_msg_t, data)

conn_msg_t *conn_msg_new(const char *data, size_t len);
/* Turn b into a message without copying: b->data starts with CONN_MSG_HEAD
 * reserved bytes, then the message, then "\n" and a NUL. Takes b->data
 * (b is emptied). NULL (b freed) on a malformed buffer. */
conn_msg_t *conn_msg_from_buf(json_buf_t *b);
conn_msg_t *conn_msg_ref(conn_msg_t *m);
void conn_msg_unref(conn_msg_t *m);

/* ------------------------------------------------------------------------
 * Close reasons
 * ------------------------------------------------------------------------ */

/* Why a connection ended. The values are metrics' disconnect classes, so
 * /metrics counts them as they are; CONN_CLOSE_MOVED (handed to another
 * worker) is no disconnect and is not counted. */
typedef enum {
    CONN_CLOSE_CLIENT = METRICS_DISC_CLIENT,       /* the peer closed or reset it */
    CONN_CLOSE_PROTOCOL = METRICS_DISC_PROTOCOL,   /* framing violation */
    CONN_CLOSE_OVERSIZED = METRICS_DISC_OVERSIZED, /* a message over max_message_size */
    CONN_CLOSE_SLOW = METRICS_DISC_SLOW,           /* output over max_output_buffer */
    CONN_CLOSE_SLOW_SOFT = METRICS_DISC_SLOW_SOFT, /* over output_soft_limit too long */
    CONN_CLOSE_TIMEOUT = METRICS_DISC_TIMEOUT,     /* silent or idle too long */
    CONN_CLOSE_SHUTDOWN = METRICS_DISC_SHUTDOWN,   /* stop, drain, deadline */
    CONN_CLOSE_OTHER = METRICS_DISC_OTHER,         /* socket errors, out of memory */
    CONN_CLOSE_MOVED = METRICS_DISC_COUNT          /* handed to another worker */
} conn_close_t;

/* ------------------------------------------------------------------------
 * Variants and owners
 * ------------------------------------------------------------------------ */

typedef enum {
    CONN_NEW,  /* nothing decided yet (the first bytes tell) */
    CONN_HTTP, /* plain HTTP requests: no owner, closes when idle */
    CONN_LINE, /* DNode over TCP, one message per line */
    CONN_WS    /* DNode over WebSocket, one message per text frame */
} conn_kind_t;

/* A framing variant. Every member but name may be NULL. */
typedef struct conn_io {
    const char *name;
    /* Bytes arrived: frame them and hand each message to the owner. */
    void (*read)(conn_t *c);
    /* The output buffer drained. Non-zero when the variant took the event
     * (e.g. a closing handshake finishing); else the owner is told. */
    int (*written)(conn_t *c);
    /* A bufferevent event (BEV_EVENT_*). Non-zero when the variant took it;
     * else conn maps it to a close reason. */
    int (*event)(conn_t *c, short what);
    /* Frame and write (or queue) ms[0..n-1], n <= CONN_CORK_MAX; the
     * caller keeps its references. 0, or -1 on failure (the caller closes). */
    int (*send)(conn_t *c, conn_msg_t *const *ms, unsigned n);
    /* End after what is queued with the protocol's goodbye (WebSocket:
     * 1008). NULL: conn_close at once. */
    void (*close_after)(conn_t *c, conn_close_t why, const char *detail);
    /* Whether nothing of a message is half-parsed or half-written inside
     * the variant (the buffers are conn_quiet's to check). NULL: always. */
    int (*idle)(const conn_t *c);
    /* Release the variant's state (teardown, or before switching). */
    void (*release)(conn_t *c);
} conn_io_t;

/* How a connection reaches its owner. Every member may be NULL. */
typedef struct conn_handlers {
    /* One complete message (without its framing). */
    void (*on_message)(void *owner, const char *data, size_t len);
    /* A read was handled, or the output drained (a draining owner may be
     * idle now). */
    void (*on_progress)(void *owner);
    /* The connection is being released (deferred, at a safe point): the
     * owner drops its pointer to it. */
    void (*on_teardown)(void *owner);
} conn_handlers_t;

/* The per-worker state all connections share. */
struct conn_env {
    struct event_base *base;
    const config_t *cfg;
    metrics_slot_t *stats;   /* this worker's counters */
    struct metrics *metrics; /* everyone's, for /metrics */
    conn_t *conns;           /* every live connection, newest first */
    size_t nconns;
    uint64_t next_id;
    conn_t **closing; /* closed, waiting for teardown */
    size_t nclosing, capclosing;
    struct event *reap;       /* runs the teardown pass */
    struct event *soft_timer; /* once a second while some output is over the soft limit */
    size_t nover_soft;
    log_limit_t log_limit; /* lines about clients, all connections together */
    struct conn_addr **addrs; /* connections per peer address (chained by hash) */
    size_t naddr_buckets;
    /* Coalescing (conn_cork, conn_push): while batch > 0, what is sent
     * waits in each connection's queue; the connections with a queue are
     * on the dirty list, written once each when batch returns to 0. */
    unsigned batch;
    unsigned deferred : 1; /* flush is active and holds one batch count */
    conn_t *dirty;         /* connections with a queue, chained by qnext */
    struct event *flush;   /* ends the batch conn_push opened */
    conn_msg_t **spare;    /* one queue kept for the next (a read's replies) */
    /* Upward, to whoever runs the connections (the worker), or NULL:
     * on_dnode: c just became a DNode stream (CONN_LINE or CONN_WS); attach
     *   an owner (conn_attach) and greet. 0, or -1 to close c.
     * on_idle: a draining connection without an owner may be idle now. */
    int (*on_dnode)(void *arg, conn_t *c);
    const struct auth *auth; /* token keys, for a token in an upgrade request; NULL: none */
    struct ssl_ctx_st *tls_ctx; /* for connections accepted on a TLS listener; NULL: none */
    void (*on_idle)(void *arg, conn_t *c);
    void *arg;
};
#define CONN_CORK_MAX 32

struct conn {
    uint64_t id;
    conn_env_t *env;
    struct bufferevent *bev; /* NULL once torn down */
    evutil_socket_t fd;      /* bev's socket (-1: none) */
    conn_t *prev, *next;     /* env->conns */
    unsigned refs;
    conn_kind_t kind;
    const conn_io_t *io;
    void *io_state;
    const conn_handlers_t *h;
    void *owner;
    unsigned closing : 1;   /* conn_close was called */
    unsigned torn_down : 1; /* released */
    unsigned draining : 1;  /* the worker stops: end at the first idle moment */
    unsigned slow : 1;      /* being dropped as a slow consumer */
    unsigned held : 1;      /* adopted, the previous worker still writes: no byte in or out */
    unsigned moved : 1;     /* handed to another worker: ends without a word to the peer */
    unsigned unmovable : 1; /* a handoff failed: close it when idle instead */
    unsigned paused : 1;    /* conn_pause: no message is taken until conn_unpause */
    unsigned reading : 1;   /* inside the variant's read */
    unsigned tls : 1;       /* over TLS: direct writes are SSL_write, and the session
                             * cannot move to another process */
    unsigned queued : 1;    /* on env->dirty (holds a reference) */
    uint32_t scanned;       /* line framing: input bytes already searched */
    unsigned nq;            /* messages waiting in q (at most CONN_CORK_MAX) */
    conn_msg_t **q;         /* while batched: allocated on first use, freed when written */
    conn_t *qnext;          /* env->dirty */
    struct event *deadline; /* conn_deadline_set, made on first use */
    const char *deadline_detail;
    log_limit_t log_limit;  /* lines about this connection */
    uint64_t over_soft_us;  /* when output went over output_soft_limit, or 0 */
    uint64_t accepted_us;   /* metrics_now_us() at accept */
    char peer[48];          /* "127.0.0.1:5000" */
    /* Claims of a token the WebSocket upgrade request carried (verified),
     * for the session to take (NULL: none), and its exp. */
    json_t *offered_auth;
    int64_t offered_exp;
};

/* ------------------------------------------------------------------------
 * The environment
 * ------------------------------------------------------------------------ */

/* Set up env on base (events for teardown and the soft rule). 0 or -1. */
int conn_env_init(conn_env_t *env, struct event_base *base, const config_t *cfg,
                  metrics_slot_t *stats, struct metrics *metrics);
/* Tear down every closed connection now (the reap event runs it; call it
 * only where nothing up the stack still uses those connections). */
void conn_env_reap(conn_env_t *env);
/* Close and release every connection, then env's events. */
void conn_env_free(conn_env_t *env);

/* ------------------------------------------------------------------------
 * Lifetime
 * ------------------------------------------------------------------------ */

/* A connection for bev (taken; freed on failure), kind CONN_NEW, no
 * variant and no owner yet, nothing enabled. NULL on failure. */
conn_t *conn_new(conn_env_t *env, struct bufferevent *bev, const char *peer);
conn_t *conn_ref(conn_t *c);
void conn_unref(conn_t *c);

/* Switch the framing: releases the previous variant's state. */
void conn_set_io(conn_t *c, conn_kind_t kind, const conn_io_t *io, void *state);
/* Make owner the one messages and events go to. */
void conn_attach(conn_t *c, const conn_handlers_t *h, void *owner);
/* c became a DNode stream: counted as a session and handed to env's
 * on_dnode. 0, or -1 when c was closed. */
int conn_begin_dnode(conn_t *c);

/* The one way a connection ends: logged (info, with detail; debug for a
 * moved one), counted for a DNode stream, reading stopped, teardown
 * scheduled. Idempotent. */
void conn_close(conn_t *c, conn_close_t why, const char *detail);
/* Close on a bufferevent event (EOF, error, timeout): the one mapping from
 * socket events to close reasons. */
void conn_close_event(conn_t *c, short what);
/* The connection is about to be handed to another worker: it ends without
 * a word to the peer (no close frame, no direct writes after its last). */
void conn_set_moved(conn_t *c);
/* Start moving bytes on a connection adopted with held set. 0 or -1
 * (closed). */
int conn_resume(conn_t *c);

/* Close c as timed out (detail says what was too slow) seconds from now,
 * unless conn_deadline_clear comes first. A deadline already running is
 * kept (it counts from when it was first set); seconds <= 0: none. 0 or
 * -1. */
int conn_deadline_set(conn_t *c, int seconds, const char *detail);
void conn_deadline_clear(conn_t *c);

/* How many of env's connections come from the address of peer ("ip:port"
 * as conn names it; the port is ignored). */
size_t conn_env_count_from(const conn_env_t *env, const char *peer);

/* Take no more messages from c (the owner has enough in hand): reading
 * stops, and a variant stops handing over what is already buffered. */
void conn_pause(conn_t *c);
/* Take messages again, starting with those already buffered. */
void conn_unpause(conn_t *c);
/* conn_unpause for a caller that must not see c's next messages handled
 * inside its own call (one in the middle of the bus' bookkeeping): those
 * already buffered are taken from the loop's next pass. */
void conn_unpause_later(conn_t *c);

/* Whether c has nothing in flight at its level: not closing or held,
 * nothing corked, no output queued, no input buffered, its variant idle. */
int conn_quiet(const conn_t *c);
/* Whether the socket has bytes we have not read (FIONREAD). */
int conn_unread(const conn_t *c);
/* Whether c is over TLS and its handshake is done. */
int conn_tls_established(const conn_t *c);
/* Whether the output buffer holds anything. */
size_t conn_pending_output(const conn_t *c);

/* ------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------ */

/* Send m (a new reference is taken) through the variant. 0, or -1 when c
 * is closing or went over an output limit (closed as too slow then). A
 * connection over output_soft_limit for output_soft_seconds is closed too:
 * checked here and by the env's timer (for a batched message: when the
 * batch is written). Written at once unless a batch is open or c still has
 * batched messages (which go first). */
int conn_send(conn_t *c, conn_msg_t *m);
/* conn_send for a push (fan-out): when no batch is open, opens one that
 * the env's flush event ends when the loop comes round to it, within the
 * same pass and without a timer. Every push that pass makes (a carrier
 * draining several messages) then waits, and each connection gets all of
 * its messages in one write: under load the writes per delivery fall with
 * the backlog, and one message alone still goes out in that pass. */
int conn_push(conn_t *c, conn_msg_t *m);
/* Write iov straight to the socket when nothing is queued. Returns the
 * bytes written (0: queue everything), or -1 on a write error. */
struct iovec;
ssize_t conn_write_direct(conn_t *c, struct iovec *iov, int iovcnt);
/* Queue the bytes of m from offset on c's output, by reference. 0 or -1. */
int conn_queue_ref(conn_t *c, conn_msg_t *m, size_t offset, size_t len);
/* Open a batch around the messages of one read of c: what is sent to any
 * connection meanwhile is held and written with one writev per connection
 * (a client that pipelines costs one write per read, not one per reply).
 * At most CONN_CORK_MAX are held per connection, then written. conn_uncork
 * writes what c holds at once, and everyone else's when the last batch
 * ends; pairs nest. Uncorking applies the output limits and may close c
 * (or another connection whose queue it wrote). */
void conn_cork(conn_t *c);
void conn_uncork(conn_t *c);
/* Write what a batch holds for c now: whoever is about to put bytes of
 * its own behind c's messages (a close frame) or to let go of the socket
 * (a handoff) calls it first. 0, or -1 when c was closed. */
int conn_flush(conn_t *c);
/* Apply the output limits to what is queued on c now (a variant that
 * queues bytes of its own, such as WebSocket control frames, calls it). 0,
 * or -1 when c was dropped as too slow. */
int conn_apply_limits(conn_t *c);
/* Drop c as a slow consumer: counted, logged, and ended through the
 * variant's close_after. */
void conn_drop_slow(conn_t *c, conn_close_t why, const char *detail);
/* End c after what is queued, with the variant's goodbye (WebSocket: a
 * close frame with the reason), or at once when it has none. */
void conn_end(conn_t *c, conn_close_t why, const char *detail);

/* Label for log lines: "session 12 127.0.0.1:5000". */
const char *conn_ctx(const conn_t *c, char *buf, size_t len);

#define conn_log(level, c, ...)                                                                    \
    do {                                                                                           \
        if (log_enabled(level)) {                                                                  \
            char conn_ctx_[80];                                                                    \
            log_write(level, conn_ctx((c), conn_ctx_, sizeof(conn_ctx_)), __VA_ARGS__);            \
        }                                                                                          \
    } while (0)
/* Lines a client can cause, however many it sends: at most
 * CONN_LOG_PER_SECOND a second about one connection and ENV_LOG_PER_SECOND
 * about all of a worker's together. What they hold back is summed in one
 * line a second (the env's timer). */
#define CONN_LOG_PER_SECOND 10
#define ENV_LOG_PER_SECOND 100
int conn_log_allowed(conn_t *c);
#define conn_log_client(level, c, ...)                                        \
    do {                                                                      \
        if (log_enabled(level) && conn_log_allowed(c))                        \
            conn_log(level, c, __VA_ARGS__);                                  \
    } while (0)

#define clog_debug(c, ...) conn_log(LOG_LEVEL_DEBUG, c, __VA_ARGS__)
#define clog_info(c, ...) conn_log(LOG_LEVEL_INFO, c, __VA_ARGS__)
#define clog_warning(c, ...) conn_log(LOG_LEVEL_WARNING, c, __VA_ARGS__)
#define clog_error(c, ...) conn_log(LOG_LEVEL_ERROR, c, __VA_ARGS__)

#endif
