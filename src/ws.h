/* ws: WebSocket (RFC 6455) for DNode sessions: the opening handshake's
 * checks and answer, then framing with wslay over the session's
 * bufferevent: one DNode message per text frame, ping/pong, the closing
 * handshake with its codes. Does not parse HTTP (http) or DNode (session). */
#ifndef DNODED_WS_H
#define DNODED_WS_H

#include <stddef.h>

#include "config.h"
#include "session.h"

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64 of the
 * SHA-1 of key + the RFC's GUID. out gets 28 characters and a NUL (outlen
 * >= 29). 0, or -1 when key is not the base64 of 16 bytes. */
int ws_accept_key(const char *key, char *out, size_t outlen);

/* Whether a browser page from origin may open the socket: origin must be one
 * of cfg->allowed_origins (case-insensitive), or, with none configured, name
 * the same host and port as the request's Host header. A request without
 * Origin (not from a browser) is allowed. 1 or 0. */
int ws_origin_allowed(const config_t *cfg, const char *origin, const char *host);

/* Write the 101 answer for key and turn s into a WebSocket DNode session:
 * framing, callbacks, our methods message, then any bytes already read.
 * The HTTP state must already be released. 0, or -1 (s is closed then). */
int ws_begin(session_t *s, const char *key);

/* Turn s, a connection another worker handed over (handoff), into a
 * WebSocket DNode session at a frame boundary: no handshake, no methods
 * message (both were sent long ago). 0, or -1 (s is closed then). */
int ws_adopt(session_t *s);
/* Whether s is between messages with nothing of a frame held or queued
 * inside wslay, so that its connection can move to another worker. */
int ws_idle(session_t *s);

/* Handle bytes received on an upgraded session. */
void ws_read(session_t *s);
/* Send ms[0..n-1] as text frames, one per message, with one write when
 * nothing is queued (messages are referenced, not copied; the caller keeps
 * its references). n is at most SESSION_CORK_MAX. 0 or -1. */
int ws_write(session_t *s, session_msg_t *const *ms, unsigned n);
/* Close with 1008 (policy violation) after the frames already queued;
 * reason goes to session_close once the peer has read them or
 * WS_CLOSE_SECONDS passed. */
void ws_close_policy(session_t *s, const char *reason);
/* Release the session's WebSocket state (teardown); sends a 1001 close
 * first when the connection ends without a closing handshake and nothing
 * else is waiting to be written. */
void ws_session_free(session_t *s);

/* Build the header of an unmasked server frame: returns its length (2, 4
 * or 10 bytes written to hdr, which has room for 10). */
size_t ws_frame_header(unsigned char *hdr, int opcode, size_t len);

#endif
