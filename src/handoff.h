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

#include "session.h"

struct worker;
typedef struct handoff handoff_t;           /* one session's move in progress */
typedef struct handoff_chan handoff_chan_t; /* a worker's end of the channel */

/* Make the channel (the master, once, before the first fork): fds[0] is
 * the end workers adopt from, fds[1] the end retiring workers send on.
 * 0, or -1 with errno set. */
int handoff_channel_new(int fds[2]);

/* Start adopting sessions sent on fds (worker_args_t.handoff_fds) once the
 * worker's bus can carry markers. 0, or -1 (logged); fds NULL is a worker
 * without a channel (w->handoff stays NULL, reload closes sessions). */
int handoff_start(struct worker *w, const int *fds);
/* Stop adopting (the worker is stopping or retiring). */
void handoff_stop_receiving(struct worker *w);
/* Release the worker's end (at exit, after every session is torn down). */
void handoff_worker_free(struct worker *w);

/* Old side: send idle session s to the new generation. s must be idle (no
 * operation in flight, output written, input buffer empty, its transport at
 * a message boundary). Returns 0 when sent (s now only delivers pushes until
 * its markers, then closes without a word to the client), 1 when the
 * channel is full (try again later; nothing changed), -1 when s cannot be
 * moved (an HTTP connection, no channel, too large: close it as before). */
int handoff_send(session_t *s);

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
