/* session: the DNode peer on a connection. Keeps only peer state: the ids
 * of the methods the client exported, the method ids it culled, what its
 * requests hold in flight, the channels it joined and a move in progress.
 * Parses each message with the DNode codec and hands requests to the
 * dispatcher its environment names; what happens when it is idle or torn
 * down is its environment's choice too (the worker's). Calls nothing above
 * it: no API, bus, handoff or worker. Bytes and their framing are the
 * connection's (conn). */
#ifndef DNODED_SESSION_H
#define DNODED_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "json.h"

struct bus_channel;
struct handoff;

/* Methods a client may export and the server calls by name. */
enum {
    SESSION_REMOTE_CREATED,
    SESSION_REMOTE_UPDATED,
    SESSION_REMOTE_DELETED,
    SESSION_REMOTE_SUBSCRIBED,
    SESSION_REMOTE_UNSUBSCRIBED,
    SESSION_REMOTE_ERROR,
    SESSION_REMOTE_AUTH_EXPIRING, /* authExpiring(seconds): refresh the token */
    SESSION_REMOTE_RECOVERED,     /* recovered(url, {recovered: false, ...}): changes were lost */
    SESSION_REMOTE_COUNT
};

typedef struct session session_t;

/* What a session needs from above, given by whoever runs sessions (the
 * worker). The functions may be NULL. */
typedef struct session_env {
    const config_t *cfg;
    metrics_slot_t *stats;
    conn_msg_t *greeting; /* our methods message, sent by session_start */
    /* Our methods: their names in callback-id order. */
    const char *const *methods;
    size_t nmethods;
    /* Run our method idx with args (taken), which hold ncallbacks of the
     * client's callbacks. */
    void (*dispatch)(void *arg, session_t *s, int idx, json_t *args, size_t ncallbacks);
    /* A draining (or moved) session has nothing in flight and may be idle:
     * keep it, hand it off or close it. */
    void (*on_idle)(void *arg, session_t *s);
    /* The connection is being released: let go of what refers to s
     * (channels, a move in progress) before it is gone. */
    void (*on_teardown)(void *arg, session_t *s);
    void *arg;
} session_env_t;

struct session {
    const session_env_t *env;
    conn_t *conn;             /* referenced for the session's life (torn down: no bev) */
    unsigned refs;            /* the connection's, and each operation's in flight */
    unsigned torn_down : 1;   /* the connection was released */
    unsigned got_methods : 1; /* the client sent its methods */
    uint8_t culled;           /* bit i: our method id i was culled */
    int64_t remote[SESSION_REMOTE_COUNT]; /* the client's callback ids, or -1 */
    uint32_t inflight;                    /* operations waiting for the database */
    uint32_t callbacks_held;              /* the client's callbacks those operations hold */
    uint32_t unconfirmed;                 /* its publishes Redis has not confirmed yet (bus) */
    uint32_t fetching;                    /* its history fetches the bus has out (bus) */
    uint32_t invalid;          /* refused messages in the minute of invalid_minute */
    int64_t invalid_minute;
    struct bus_channel **subs;            /* channels joined (the bus keeps this list) */
    uint32_t nsubs, capsubs;
    struct handoff *handoff; /* a move between generations in progress, or NULL */
    json_t *auth;            /* the claims of the token it authenticated with, or NULL */
    int64_t auth_exp;        /* that token's exp (seconds since the epoch); 0: none */
    unsigned auth_warned : 1; /* told authExpiring for this token */
};

/* A session on c, which it owns from now on (c's handlers are the
 * session's). NULL on allocation failure (c is left as it was). */
session_t *session_new(const session_env_t *env, conn_t *c);
/* Send the greeting (our methods message). 0 or -1. */
int session_start(session_t *s);

session_t *session_ref(session_t *s);
void session_unref(session_t *s);

/* Whether s can no longer send or be answered (closing, or torn down). */
int session_closing(const session_t *s);
/* End s's connection (conn_close). Idempotent. */
void session_close(session_t *s, conn_close_t why, const char *detail);
/* End s after what is queued for it, with its transport's goodbye (a
 * WebSocket close frame naming the reason): for a session the server
 * refuses to go on with. */
void session_end(session_t *s, conn_close_t why, const char *detail);
/* The worker is stopping: s's connection is draining; at the first moment
 * nothing is in flight the environment's on_idle decides. Calling it
 * again re-checks. */
void session_drain(session_t *s);

/* An operation's bookkeeping (api): begin counts it and the callbacks its
 * request holds; done releases them and lets a draining session finish. */
void session_op_begin(session_t *s, size_t ncallbacks);
void session_op_done(session_t *s, size_t ncallbacks);
/* A history fetch for this session (subscribe with since) is out, or has
 * come back. They count with the operations against
 * max_inflight_per_session: past it, the client's next requests wait in
 * its socket. Ending one never ends the session's drain by itself. */
void session_fetch_begin(session_t *s);
void session_fetch_done(session_t *s);
/* A publish of s is on its way to Redis (begin), or Redis confirmed or
 * lost it (done; lets a retiring worker move s). */
void session_publish_begin(session_t *s);
void session_publish_done(session_t *s);

/* Output. All return 0, or -1 when s is closing or went over an output
 * limit (closed then). */
int session_send_msg(session_t *s, conn_msg_t *m); /* takes a new ref on m */
/* A named call (e.g. "created") with args, built once for any number of
 * sessions; NULL on allocation failure. */
conn_msg_t *session_msg_call(const char *method, const json_t *args);
/* Call the client's callback id with args (args stay the caller's). */
int session_call(session_t *s, int64_t cb, const json_t *args);
/* session_call with the arguments [null] (a request that succeeded), the
 * most frequent reply: written straight, without a tree or the writer. */
int session_call_null(session_t *s, int64_t cb);
/* Call an exported client method (created, updated, ...) when the client
 * exported it; 0 when it did not (nothing sent), 1 when sent, -1 on error. */
int session_call_remote(session_t *s, int which, const json_t *args);
/* Whether the client exported method which (SESSION_REMOTE_*). */
int session_takes(const session_t *s, int which);
/* Push m (a call of method which, built once for many sessions) when the
 * client exported which: 1 when sent, 0 when it did not export it, -1 on
 * error (closed). */
int session_push(session_t *s, int which, conn_msg_t *m);
/* Whether s's connection was handed to another worker (its presence
 * counts moved with it). */
int session_moved(const session_t *s);
/* Report an error object (taken) to the client: through its callback
 * error_cb when >= 0, else the client's exported error method, else the
 * log. Counted in the errors metric by name. */
void session_report_error(session_t *s, int64_t error_cb, json_t *error);

/* Handle one complete message (without framing), as the connection does.
 * Never frees s. */
void session_handle_message(session_t *s, const char *data, size_t len);

/* A session's peer state as JSON members of into, for moving it to
 * another worker (handoff): "methods", "culled", "remote". s NULL writes
 * the state of a connection that has not become a session yet. 0 or -1. */
int session_export(const session_t *s, json_t *into);
/* Who s is: the claims of its token (taken; NULL: anonymous) and exp. */
void session_set_auth(session_t *s, json_t *claims, int64_t exp);
/* Restore what session_export wrote. 0, or -1 when desc is malformed. */
int session_import(session_t *s, const json_t *desc);

#define slog(level, s, ...) conn_log(level, (s)->conn, __VA_ARGS__)
/* A line the client can cause (rate-limited: conn_log_client). */
#define slog_client(level, s, ...) conn_log_client(level, (s)->conn, __VA_ARGS__)
#define slog_debug(s, ...) slog(LOG_LEVEL_DEBUG, s, __VA_ARGS__)
#define slog_info(s, ...) slog(LOG_LEVEL_INFO, s, __VA_ARGS__)
#define slog_warning(s, ...) slog(LOG_LEVEL_WARNING, s, __VA_ARGS__)
#define slog_error(s, ...) slog(LOG_LEVEL_ERROR, s, __VA_ARGS__)

#endif
