/* http: HTTP/1.1 on the DNode port, for connections whose first bytes are a
 * request. Parses requests with http-parser (keep-alive, pipelining),
 * serves static files from docroot, /healthz and /metrics, and hands
 * /dnode upgrades to ws. A plain HTTP connection is not a DNode session: it
 * never gets our methods and closes when idle. Does not frame WebSocket
 * (ws) or count anything itself beyond the HTTP status classes (metrics). */
#ifndef DNODED_HTTP_H
#define DNODED_HTTP_H

#include <stddef.h>

#include "session.h"

/* Take over s: its bufferevent callbacks and timeouts become HTTP's, and
 * the bytes already read are parsed. 0, or -1 when s could not be set up
 * (the caller closes it). */
int http_begin(session_t *s);
/* Release the HTTP state of s (teardown, or before an upgrade). */
void http_session_free(session_t *s);

/* Decode a request path (percent-encoding) into out, refusing what could
 * escape the docroot or name something other than a plain file path:
 * encoded '/' or '\', NUL, "." and ".." segments, hidden ("." prefixed)
 * names. 0, or the HTTP status to answer (400, 403 or 404). */
int http_decode_path(const char *path, size_t len, char *out, size_t outlen);

/* Content-Type for a file name, by extension. */
const char *http_mime_type(const char *name);

#endif
