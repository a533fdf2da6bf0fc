/* ws: WebSocket (RFC 6455) as a connection variant: the opening
 * handshake's checks and answer, then framing with wslay over the
 * connection's bufferevent: one DNode message per text frame, ping/pong,
 * the closing handshake with its codes. Does not parse HTTP (http) or
 * DNode (the connection's owner). */
#ifndef DNODED_WS_H
#define DNODED_WS_H

#include <stddef.h>

#include "config.h"
#include "conn.h"

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64 of the
 * SHA-1 of key + the RFC's GUID. out gets 28 characters and a NUL (outlen
 * >= 29). 0, or -1 when key is not the base64 of 16 bytes. */
int ws_accept_key(const char *key, char *out, size_t outlen);

/* Whether a browser page from origin may open the socket: origin is one of
 * cfg->allowed_origins (case-insensitive), or it is the request's own
 * origin (the same host and port as its Host header) and names a host the
 * server answers to (server_names; by default localhost, the loopback
 * addresses, this machine's name and the listen hosts). A request without
 * Origin (not from a browser) is allowed. 1 or 0. */
int ws_origin_allowed(const config_t *cfg, const char *origin, const char *host);

/* Write the 101 answer for key and make c a WebSocket DNode stream:
 * framing, then conn_begin_dnode (the owner greets), then any bytes
 * already read. The HTTP state must already be released. 0, or -1 (c is
 * closed then). */
int ws_begin(conn_t *c, const char *key);

/* Make c, a connection another worker handed over (handoff), a WebSocket
 * DNode stream at a frame boundary: no handshake, no greeting (both were
 * sent long ago). 0, or -1 (c is closed then). */
int ws_adopt(conn_t *c);

/* Build the header of an unmasked server frame: returns its length (2, 4
 * or 10 bytes written to hdr, which has room for 10). */
size_t ws_frame_header(unsigned char *hdr, int opcode, size_t len);

#endif
