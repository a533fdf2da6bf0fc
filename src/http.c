/* http: HTTP requests on the DNode port (see http.h). One request is
 * answered at a time: the parser pauses at the end of each message, the
 * answer is queued on the connection's output, and parsing resumes, so
 * pipelined requests are answered in order. Static files are resolved with
 * realpath() and must stay under the docroot's own realpath. */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <http_parser.h>

#include "addr.h"
#include "auth.h"
#include "log.h"
#include "metrics.h"
#include "ws.h"

/* An idle keep-alive connection is closed after this long. */
#define HTTP_IDLE_SECONDS 15
#define HTTP_MAX_URL 4096
#define HTTP_MAX_HEADER 1024
#define HTTP_MAX_BODY 65536

/* Where /dnode.js, /dnode.backbone.js and /vendor/... come from when the
 * docroot does not have them: the installed browser files, then (for a
 * build that is not installed) the build and source trees. */
static const char *const fallback_dirs[] = {
#ifdef DNODED_DATADIR
    DNODED_DATADIR "/browser",
#endif
#ifdef DNODED_BUILD_BROWSERDIR
    DNODED_BUILD_BROWSERDIR,
#endif
#ifdef DNODED_SRC_BROWSERDIR
    DNODED_SRC_BROWSERDIR,
#endif
    NULL,
};

enum {
    H_HOST,
    H_ORIGIN,
    H_IF_NONE_MATCH,
    H_IF_MODIFIED_SINCE,
    H_UPGRADE,
    H_WS_KEY,
    H_WS_VERSION,
    H_COUNT
};

static const char *const header_names[H_COUNT] = {
    "host",
    "origin",
    "if-none-match",
    "if-modified-since",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
};

typedef struct http_conn {
    http_parser parser;
    conn_t *conn;
    char url[HTTP_MAX_URL + 1];
    size_t urllen;
    char field[32];
    size_t fieldlen;
    int in_value; /* the last callback was a header value */
    int cur;      /* header being collected, or -1 */
    char hdr[H_COUNT][HTTP_MAX_HEADER + 1];
    size_t hdrlen[H_COUNT];
    size_t body;           /* body bytes seen (discarded) */
    int too_large;         /* 414/431/413 to answer */
    unsigned complete : 1; /* a whole request is waiting for its answer */
    unsigned keep_alive : 1;
    unsigned closing : 1; /* close once the output has drained */
    unsigned waiting : 1; /* an answer is being written: reading is off until it is out */
} http_conn_t;

/* ------------------------------------------------------------------------
 * Parser callbacks
 * ------------------------------------------------------------------------ */

static int on_message_begin(http_parser *p)
{
    http_conn_t *c = p->data;

    c->urllen = c->fieldlen = c->body = 0;
    c->in_value = 0;
    c->cur = -1;
    c->too_large = 0;
    memset(c->hdrlen, 0, sizeof(c->hdrlen));
    /* A request must arrive whole within http_header_timeout of its first
     * byte: one trickled a byte at a time would hold the connection
     * forever (the idle timeout restarts with every byte). */
    if (conn_deadline_set(c->conn, c->conn->env->cfg->http_header_timeout,
                          "HTTP request not complete within http_header_timeout") < 0)
        return -1;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;

    if (c->urllen + len > HTTP_MAX_URL) {
        c->too_large = 414;
        return 0;
    }
    memcpy(c->url + c->urllen, at, len);
    c->urllen += len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;

    if (c->in_value) {
        c->fieldlen = 0;
        c->in_value = 0;
    }
    if (c->fieldlen + len >= sizeof(c->field)) {
        c->fieldlen = sizeof(c->field); /* too long to be one we read */
        return 0;
    }
    memcpy(c->field + c->fieldlen, at, len);
    c->fieldlen += len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;
    size_t *n;
    int i;

    if (!c->in_value) {
        c->in_value = 1;
        c->cur = -1;
        for (i = 0; i < H_COUNT && c->fieldlen < sizeof(c->field); i++)
            if (strlen(header_names[i]) == c->fieldlen &&
                strncasecmp(header_names[i], c->field, c->fieldlen) == 0)
                c->cur = i;
        if (c->cur >= 0 && c->hdrlen[c->cur] > 0) { /* repeated: join as a list */
            n = &c->hdrlen[c->cur];
            if (*n + 2 > HTTP_MAX_HEADER) {
                c->too_large = 431;
                return 0;
            }
            memcpy(c->hdr[c->cur] + *n, ", ", 2);
            *n += 2;
        }
    }
    if (c->cur < 0)
        return 0;
    n = &c->hdrlen[c->cur];
    if (*n + len > HTTP_MAX_HEADER) {
        c->too_large = 431;
        return 0;
    }
    memcpy(c->hdr[c->cur] + *n, at, len);
    *n += len;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    http_conn_t *c = p->data;

    (void)at;
    c->body += len;
    if (c->body > HTTP_MAX_BODY) {
        c->too_large = 413;
        return -1; /* stop parsing: answered and closed */
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_conn_t *c = p->data;
    int i;

    conn_deadline_clear(c->conn);

    for (i = 0; i < H_COUNT; i++)
        c->hdr[i][c->hdrlen[i]] = '\0';
    c->url[c->urllen] = '\0';
    c->keep_alive = http_should_keep_alive(p) != 0;
    c->complete = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------------------------
 * Paths and types
 * ------------------------------------------------------------------------ */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int http_decode_path(const char *path, size_t len, char *out, size_t outlen)
{
    size_t i, o = 0, seg = 0;

    if (len == 0 || path[0] != '/')
        return 400;
    for (i = 0; i < len; i++) {
        int ch = (unsigned char)path[i];
        if (ch == '%') {
            int hi = i + 2 < len ? hexval(path[i + 1]) : -1;
            int lo = i + 2 < len ? hexval(path[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return 400;
            ch = hi * 16 + lo;
            i += 2;
            if (ch == '/' || ch == '\\' || ch == 0)
                return 403; /* an encoded separator is always an escape attempt */
        } else if (ch == '\\') {
            return 403;
        }
        if (o + 1 >= outlen)
            return 404;
        if (ch == '/' && path[i] == '/') {
            /* A segment ends: refuse ".", ".." and hidden names. */
            if (o > seg && out[seg] == '.')
                return (o - seg <= 2 && (o - seg == 1 || out[seg + 1] == '.')) ? 403 : 404;
            out[o++] = '/';
            seg = o;
            continue;
        }
        out[o++] = (char)ch;
    }
    if (o > seg && out[seg] == '.')
        return (o - seg <= 2 && (o - seg == 1 || out[seg + 1] == '.')) ? 403 : 404;
    out[o] = '\0';
    return 0;
}

const char *http_mime_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"txt", "text/plain; charset=utf-8"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"webp", "image/webp"},
        {"ico", "image/x-icon"},
        {"woff", "font/woff"},
        {"woff2", "font/woff2"},
        {"wasm", "application/wasm"},
        {"xml", "application/xml"},
    };
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash != NULL ? slash : name, '.');
    size_t i;

    if (dot != NULL)
        for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

/* Resolve rel (decoded, starting with '/') under root into an open file.
 * Returns the fd (with *st filled), or -(HTTP status). */
static int open_under(const char *root, const char *rel, struct stat *st, char *real,
                      size_t reallen)
{
    char rootreal[PATH_MAX], path[PATH_MAX * 2];
    size_t rootlen;
    int fd, tries;

    if (realpath(root, rootreal) == NULL)
        return -404;
    rootlen = strlen(rootreal);
    if (rootlen == 1) /* a docroot of "/" */
        rootlen = 0;
    snprintf(path, sizeof(path), "%s%s", rootreal, rel);
    for (tries = 0; tries < 2; tries++) {
        if (strlen(path) >= PATH_MAX || realpath(path, real) == NULL)
            return errno == EACCES ? -403 : -404;
        if (strncmp(real, rootreal, rootlen) != 0 || (real[rootlen] != '/' && real[rootlen] != 0))
            return -403; /* a symlink that leads out of the docroot */
        if (stat(real, st) < 0)
            return -404;
        if (!S_ISDIR(st->st_mode))
            break;
        snprintf(path, sizeof(path), "%s/index.html", real);
    }
    if (!S_ISREG(st->st_mode) || strlen(real) >= reallen)
        return -404;
    fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == EACCES ? -403 : -404;
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return -404;
    }
    return fd;
}

/* The client files served even when the docroot lacks them. */
static int has_fallback(const char *rel)
{
    return strcmp(rel, "/dnode.js") == 0 || strcmp(rel, "/dnode.backbone.js") == 0 ||
           strncmp(rel, "/vendor/", 8) == 0;
}

/* ------------------------------------------------------------------------
 * Answers
 * ------------------------------------------------------------------------ */

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

static void http_date(time_t t, char *buf, size_t len)
{
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
        snprintf(buf, len, "Thu, 01 Jan 1970 00:00:00 GMT");
}

/* Queue a whole answer. body is len bytes of memory, or fd (taken) with len
 * bytes; neither goes out for HEAD or 304. extra: more header lines, each
 * ending in CRLF, or NULL. 0 or -1. */
static int http_answer(conn_t *s, http_conn_t *c, int status, const char *type,
                       const char *extra, const char *body, size_t len, int fd)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    int head = c->parser.method == HTTP_HEAD;
    char date[64];

    metrics_http_request(s->env->stats, status);
    if (status >= 400)
        clog_debug(s, "HTTP %d for %s", status, c->url);
    http_date(time(NULL), date, sizeof(date));
    if (evbuffer_add_printf(out,
                            "HTTP/1.1 %d %s\r\n"
                            "Server: dnoded\r\n"
                            "Date: %s\r\n"
                            "%s%s%s"
                            "Content-Length: %zu\r\n"
                            "X-Content-Type-Options: nosniff\r\n"
                            "Connection: %s\r\n"
                            "%s\r\n",
                            status, status_text(status), date, type ? "Content-Type: " : "",
                            type ? type : "", type ? "\r\n" : "", status == 304 ? 0 : len,
                            c->keep_alive ? "keep-alive" : "close", extra ? extra : "") < 0)
        goto fail;
    if (head || status == 304 || len == 0) {
        if (fd >= 0)
            close(fd);
    } else if (fd >= 0) {
        if (evbuffer_add_file(out, fd, 0, (ev_off_t)len) < 0) {
            fd = -1; /* evbuffer_add_file closes it on failure */
            goto fail;
        }
    } else if (evbuffer_add(out, body, len) < 0) {
        goto fail;
    }
    if (!c->keep_alive) {
        c->closing = 1;
        bufferevent_disable(s->bev, EV_READ);
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    conn_close(s, CONN_CLOSE_OTHER, "out of memory answering HTTP");
    return -1;
}

static int http_error(conn_t *s, http_conn_t *c, int status, const char *extra)
{
    char body[96];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, status_text(status));

    if (status >= 400 && status != 404 && status != 304 && status != 403)
        c->keep_alive = 0; /* after a malformed request the stream may be out of step */
    return http_answer(s, c, status, "text/plain; charset=utf-8", extra, body, (size_t)n, -1);
}

/* Whether the comma-separated list in value holds token (case-insensitive). */
static int has_token(const char *value, const char *token)
{
    size_t n = strlen(token);

    while (*value != '\0') {
        value += strspn(value, " \t,");
        if (strncasecmp(value, token, n) == 0 && strchr(" \t,", value[n]) != NULL)
            return 1;
        value += strcspn(value, ",");
    }
    return 0;
}

static int http_static(conn_t *s, http_conn_t *c, const char *rel)
{
    const char *docroot = s->env->cfg->docroot;
    char real[PATH_MAX], etag[64], modified[64], extra[256];
    struct stat st;
    int fd = -404, fresh;
    size_t i;

    if (docroot != NULL && docroot[0] != '\0')
        fd = open_under(docroot, rel, &st, real, sizeof(real));
    for (i = 0; fd == -404 && has_fallback(rel) && fallback_dirs[i] != NULL; i++)
        fd = open_under(fallback_dirs[i], rel, &st, real, sizeof(real));
    if (fd < 0)
        return http_error(s, c, -fd, NULL);
    snprintf(etag, sizeof(etag), "\"%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)st.st_mtim.tv_nsec);
    http_date(st.st_mtim.tv_sec, modified, sizeof(modified));
    if (c->hdrlen[H_IF_NONE_MATCH] > 0) {
        fresh = strstr(c->hdr[H_IF_NONE_MATCH], etag) != NULL ||
                strcmp(c->hdr[H_IF_NONE_MATCH], "*") == 0;
    } else if (c->hdrlen[H_IF_MODIFIED_SINCE] > 0) {
        struct tm tm;
        const char *end;
        memset(&tm, 0, sizeof(tm));
        end = strptime(c->hdr[H_IF_MODIFIED_SINCE], "%a, %d %b %Y %H:%M:%S GMT", &tm);
        fresh = end != NULL && *end == '\0' && timegm(&tm) >= st.st_mtim.tv_sec;
    } else {
        fresh = 0;
    }
    snprintf(extra, sizeof(extra), "ETag: %s\r\nLast-Modified: %s\r\nCache-Control: no-cache\r\n",
             etag, modified);
    if (fresh) {
        close(fd);
        return http_answer(s, c, 304, NULL, extra, NULL, 0, -1);
    }
    return http_answer(s, c, 200, http_mime_type(real), extra, NULL, (size_t)st.st_size, fd);
}

static int http_metrics(conn_t *s, http_conn_t *c)
{
    struct evbuffer *body = evbuffer_new();
    size_t len;
    int rc;

    if (body == NULL || metrics_render(s->env->metrics, body) < 0) {
        if (body != NULL)
            evbuffer_free(body);
        return http_error(s, c, 500, NULL);
    }
    len = evbuffer_get_length(body);
    rc = http_answer(s, c, 200, "text/plain; version=0.0.4; charset=utf-8",
                     "Cache-Control: no-store\r\n",
                     (const char *)evbuffer_pullup(body, (ssize_t)len), len, -1);
    evbuffer_free(body);
    return rc;
}

/* The value of parameter name in query[0..len) (percent-decoded into out),
 * 1 when present, 0 absent, -1 malformed or too long. */
static int query_param(const char *query, size_t len, const char *name, char *out, size_t outlen)
{
    size_t n = strlen(name), i = 0;

    while (i < len) {
        size_t end = i;
        while (end < len && query[end] != '&')
            end++;
        if (end - i > n && memcmp(query + i, name, n) == 0 && query[i + n] == '=') {
            size_t o = 0, k;
            for (k = i + n + 1; k < end; k++) {
                int ch = (unsigned char)query[k];
                if (ch == '%') {
                    int hi = k + 2 < end ? hexval(query[k + 1]) : -1;
                    int lo = k + 2 < end ? hexval(query[k + 2]) : -1;
                    if (hi < 0 || lo < 0)
                        return -1;
                    ch = hi * 16 + lo;
                    k += 2;
                }
                if (ch == 0 || o + 1 >= outlen)
                    return -1;
                out[o++] = (char)ch;
            }
            out[o] = '\0';
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

/* A token in the upgrade request (/dnode?token=...): verified now, so that
 * a page learns at once (401) and its session starts authenticated. 0 (no
 * token, or a good one kept in s), or -1 for one that is refused. */
static int http_upgrade_token(conn_t *s, http_conn_t *c, const struct http_parser_url *u)
{
    char token[AUTH_MAX_TOKEN + 1], why[160];
    int rc;

    if (!(u->field_set & (1 << UF_QUERY)))
        return 0;
    rc = query_param(c->url + u->field_data[UF_QUERY].off, u->field_data[UF_QUERY].len, "token",
                     token, sizeof(token));
    if (rc == 0)
        return 0;
    if (rc < 0)
        snprintf(why, sizeof(why), "malformed token");
    else
        s->offered_auth = auth_verify(s->env->auth, token, strlen(token), (int64_t)time(NULL),
                                      &s->offered_exp, why, sizeof(why));
    if (s->offered_auth != NULL)
        return 0;
    conn_log_client(LOG_LEVEL_INFO, s, "WebSocket token refused: %s", why);
    c->keep_alive = 0;
    return -1;
}

/* An upgrade request at /dnode: check it, then hand the connection to ws.
 * Returns 1 when s is now a WebSocket stream (c is freed), else as
 * http_answer. */
static int http_upgrade(conn_t *s, http_conn_t *c, const struct http_parser_url *u)
{
    char key[HTTP_MAX_HEADER + 1], accept[32];

    if (c->parser.method != HTTP_GET || !has_token(c->hdr[H_UPGRADE], "websocket"))
        return http_error(s, c, 400, NULL);
    if (s->draining) /* this worker is stopping: the client retries elsewhere */
        return http_error(s, c, 503, "Retry-After: 1\r\n");
    if (strcmp(c->hdr[H_WS_VERSION], "13") != 0)
        return http_error(s, c, 426, "Sec-WebSocket-Version: 13\r\n");
    if (ws_accept_key(c->hdr[H_WS_KEY], accept, sizeof(accept)) < 0)
        return http_error(s, c, 400, NULL);
    if (!ws_origin_allowed(s->env->cfg, c->hdr[H_ORIGIN],
                           c->hdrlen[H_HOST] ? c->hdr[H_HOST] : NULL)) {
        conn_log_client(LOG_LEVEL_WARNING, s, "WebSocket from origin '%s' refused (allowed_origins)", c->hdr[H_ORIGIN]);
        c->keep_alive = 0;
        return http_error(s, c, 403, NULL);
    }
    if (http_upgrade_token(s, c, u) < 0)
        return http_error(s, c, 401, NULL);
    metrics_http_request(s->env->stats, 101);
    memcpy(key, c->hdr[H_WS_KEY], c->hdrlen[H_WS_KEY] + 1);
    ws_begin(s, key); /* releases c */
    return 1;
}

/* Answer the request in c. 1 when the connection became a WebSocket one. */
static int http_respond(conn_t *s, http_conn_t *c)
{
    struct http_parser_url u;
    char rel[HTTP_MAX_URL + 1];
    const char *path;
    size_t pathlen;
    int rc;

    if (s->draining)
        c->keep_alive = 0; /* the worker is stopping */
    if (c->too_large)
        return http_error(s, c, c->too_large, NULL);
    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url, c->urllen, c->parser.method == HTTP_CONNECT, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH)))
        return http_error(s, c, 400, NULL);
    path = c->url + u.field_data[UF_PATH].off;
    pathlen = u.field_data[UF_PATH].len;
    if (pathlen == 6 && memcmp(path, "/dnode", 6) == 0) {
        if (c->parser.upgrade)
            return http_upgrade(s, c, &u);
        return http_error(s, c, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    if (c->parser.upgrade) /* an upgrade elsewhere: answer plainly, then close */
        c->keep_alive = 0;
    if (c->parser.method != HTTP_GET && c->parser.method != HTTP_HEAD)
        return http_error(s, c, 405, "Allow: GET, HEAD\r\n");
    if (pathlen == 8 && memcmp(path, "/healthz", 8) == 0)
        return http_answer(s, c, 200, "text/plain; charset=utf-8", "Cache-Control: no-store\r\n",
                           "ok\n", 3, -1);
    if (pathlen == 8 && memcmp(path, "/metrics", 8) == 0) {
        /* Counters say a lot about a deployment: only where they are
         * allowed (metrics_allow, loopback by default). */
        if (!addr_peer_allowed(s->peer, s->env->cfg->metrics_allow,
                               s->env->cfg->nmetrics_allow))
            return http_error(s, c, 403, NULL);
        return http_metrics(s, c);
    }
    rc = http_decode_path(path, pathlen, rel, sizeof(rel));
    if (rc != 0) {
        conn_log_client(LOG_LEVEL_INFO, s, "HTTP path refused (%d): %.200s", rc, c->url);
        return http_error(s, c, rc, NULL);
    }
    return http_static(s, c, rel);
}

/* ------------------------------------------------------------------------
 * Connection
 * ------------------------------------------------------------------------ */

static void http_read(conn_t *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);

    while (!s->closing && s->kind == CONN_HTTP) {
        http_conn_t *c = s->io_state;
        struct evbuffer_iovec v;
        size_t n;
        enum http_errno err;

        if (c->closing || c->waiting || evbuffer_peek(in, -1, NULL, &v, 1) < 1 ||
            v.iov_len == 0)
            break;
        n = http_parser_execute(&c->parser, &parser_settings, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        err = HTTP_PARSER_ERRNO(&c->parser);
        if (c->complete) {
            c->complete = 0;
            http_parser_pause(&c->parser, 0);
            if (http_respond(s, c) != 0)
                return; /* upgraded, or closed */
            /* One answer at a time: pipelined requests wait, unread, until
             * this one is out, so a client that never reads holds one
             * answer (and at most one open file), not one per request. */
            if (!c->closing && conn_pending_output(s) > 0) {
                c->waiting = 1;
                if (bufferevent_disable(s->bev, EV_READ) < 0)
                    conn_close(s, CONN_CLOSE_OTHER, "cannot pause reading");
                return;
            }
            continue;
        }
        if (err != HPE_OK) {
            c->keep_alive = 0;
            if (http_error(s, c, c->too_large ? c->too_large : 400, NULL) == 0)
                conn_log_client(LOG_LEVEL_INFO, s, "bad HTTP request: %s", http_errno_description(err));
            return;
        }
        if (n < v.iov_len)
            break; /* cannot happen without an error; do not spin */
    }
}

/* An answer is out: close when it ended the connection, else go on with
 * the requests that waited behind it. */
static int http_written(conn_t *s)
{
    http_conn_t *c = s->io_state;

    if (c == NULL || conn_pending_output(s) > 0)
        return 0;
    if (c->closing) {
        conn_close(s, CONN_CLOSE_CLIENT, "HTTP connection done");
        return 1;
    }
    if (c->waiting) {
        c->waiting = 0;
        if (bufferevent_enable(s->bev, EV_READ) < 0) {
            conn_close(s, CONN_CLOSE_OTHER, "cannot enable reading");
            return 1;
        }
        http_read(s);
        if (s->closing || s->kind != CONN_HTTP)
            return 1; /* closed, or upgraded: nothing more of HTTP's */
    }
    return 0;
}

static int http_event(conn_t *s, short what)
{
    if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) || !(what & BEV_EVENT_TIMEOUT))
        return 0;
    conn_close(s, CONN_CLOSE_TIMEOUT, "idle HTTP connection");
    return 1;
}

static void http_release(conn_t *s)
{
    free(s->io_state);
    s->io_state = NULL;
}

static const conn_io_t http_io = {
    .name = "http",
    .read = http_read,
    .written = http_written,
    .event = http_event,
    .release = http_release,
};

int http_begin(conn_t *s)
{
    struct timeval idle = {HTTP_IDLE_SECONDS, 0};
    http_conn_t *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->conn = s;
    c->cur = -1;
    conn_set_io(s, CONN_HTTP, &http_io, c);
    bufferevent_set_timeouts(s->bev, &idle, &idle);
    http_read(s);
    return 0;
}
