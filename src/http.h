/* http: HTTP/1.1 on the DNode port as a connection variant, for
 * connections whose first bytes are a request. Parses requests with
 * http-parser (keep-alive, pipelining), serves static files from docroot,
 * /healthz and /metrics, and hands /dnode upgrades to ws. A plain HTTP
 * connection has no owner (it is no DNode session): it never gets our
 * methods and closes when idle. Does not frame WebSocket (ws) or count
 * anything itself beyond the HTTP status classes (metrics). */
#ifndef DNODED_HTTP_H
#define DNODED_HTTP_H

#include <stddef.h>

#include "conn.h"

/* Make c an HTTP connection: its framing and timeouts become HTTP's, and
 * the bytes already read are parsed. 0, or -1 when c could not be set up
 * (the caller closes it). */
int http_begin(conn_t *c);

/* Decode a request path (percent-encoding) into out, refusing what could
 * escape the docroot or name something other than a plain file path:
 * encoded '/' or '\', NUL, "." and ".." segments, hidden ("." prefixed)
 * names. 0, or the HTTP status to answer (400, 403 or 404). */
int http_decode_path(const char *path, size_t len, char *out, size_t outlen);

/* Content-Type for a file name, by extension. */
const char *http_mime_type(const char *name);

#endif
