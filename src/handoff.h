/* handoff: on reload, a retiring worker moves each idle session to a worker
 * of the new generation instead of closing it. Owns the channel between
 * generations (an AF_UNIX SOCK_SEQPACKET socketpair the master makes before
 * the first fork), the message that carries a session's state with its
 * connection (SCM_RIGHTS), and the markers that let both workers agree where
 * the session's pushes change hands. Does not frame bytes (transport, ws) or
 * carry the markers (bus). HACKING.md ("Reload without closing") has the
 * design. */
#ifndef DNODED_HANDOFF_H
#define DNODED_HANDOFF_H

#include "bus.h"
#include "conn.h"
#include "session.h"

typedef struct handoff handoff_t;           /* one session's move in progress */
typedef struct handoff_chan handoff_chan_t; /* a worker's end of the channel */

/* What the channel works with (the worker's, all outliving the channel). */
typedef struct handoff_deps {
    struct event_base *base;
    const config_t *cfg;
    conn_env_t *conns;             /* adopted connections join these */
    const session_env_t *sessions; /* adopted sessions get this environment */
    bus_t *bus;                    /* carries the markers */
} handoff_deps_t;

/* Make the channel (the master, once, before the first fork): fds[0] is
 * the end workers adopt from, fds[1] the end retiring workers send on.
 * 0, or -1 with errno set. */
int handoff_channel_new(int fds[2]);

/* Start adopting sessions sent on fds (worker_args_t.handoff_fds) once the
 * bus can carry markers; *out is the worker's end. 0, or -1 (logged); fds
 * NULL is a worker without a channel (*out NULL: reload closes sessions). */
int handoff_start(handoff_chan_t **out, const handoff_deps_t *deps, const int *fds);
/* Stop adopting (the worker is stopping or retiring). NULL is fine. */
void handoff_stop_receiving(handoff_chan_t *ch);
/* Release the worker's end (at exit, after every session is torn down). */
void handoff_chan_free(handoff_chan_t *ch);

/* Old side: send idle connection c, with its session s (NULL for a
 * connection that has said nothing yet), to the new generation. It must be
 * idle (no operation in flight, conn_quiet). Returns 0 when sent (s now
 * only delivers pushes until its markers, then closes without a word to
 * the client), 1 when the channel is full (try again later; nothing
 * changed), -1 when c cannot be moved (an HTTP connection, no channel, too
 * large: close it as before). */
int handoff_send(handoff_chan_t *ch, conn_t *c, session_t *s);

/* The bus, for a push on channel to s: whether s takes it. The old side
 * delivers until it sees the session's marker on channel, the adopter only
 * after it. 1 for a session that is not moving. */
int handoff_may_push(const session_t *s, const char *channel);
/* The bus saw marker id on channel, and s is subscribed to it. */
void handoff_marker(session_t *s, const char *channel, const char *id);

/* The session wrote out everything queued (old side: may finish). */
void handoff_output_drained(session_t *s);
/* Teardown: release s's handoff state; on the old side, tell the adopter
 * to go on (without "done" when s ends early). */
void handoff_session_free(session_t *s);

#endif
