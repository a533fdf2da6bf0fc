/* conn_open: the first moments of a connection (see conn_open.h). */
#include "conn_open.h"

#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "conn_line.h"
#include "http.h"
#include "log.h"
#include "ws.h"

/* Whether the first bytes read look like an HTTP request line. */
static int looks_like_http(const unsigned char *p, size_t n)
{
    static const char *const methods[] = {"GET ",    "HEAD ",  "POST ",    "PUT ",  "OPTIONS ",
                                          "DELETE ", "PATCH ", "CONNECT ", "TRACE "};
    size_t i, m;

    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        m = strlen(methods[i]);
        if (memcmp(p, methods[i], n < m ? n : m) == 0)
            return 1;
    }
    return 0;
}

/* Our methods go out, and the connection becomes a DNode line stream. */
static int open_dnode(conn_t *c)
{
    conn_line_set(c);
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    return conn_begin_dnode(c);
}

static void open_read(conn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t n = evbuffer_get_length(in);
    unsigned char *p = evbuffer_pullup(in, (ssize_t)(n < 8 ? n : 8));

    if (p != NULL && p[0] != '{' && looks_like_http(p, n < 8 ? n : 8)) {
        if (n < 8 && n < 4) /* wait for enough bytes to decide */
            return;
        if (http_begin(c) < 0)
            conn_close(c, CONN_CLOSE_OTHER, "HTTP is not served here");
        return;
    }
    if (open_dnode(c) == 0 && c->io != NULL && c->io->read != NULL)
        c->io->read(c);
}

static conn_t *open_probe(conn_t *c, uint64_t left_ms);

/* A silent peer: a DNode client waiting for our methods. Over TLS, the
 * handshake ending first: the wait for the first bytes starts then. */
static int open_event(conn_t *c, short what)
{
    if ((what & BEV_EVENT_CONNECTED) && c->tls) {
        /* libevent goes on with a handshake while the connection waits for
         * teardown (disabling does not stop one): nothing starts then. */
        if (c->closing)
            return 1;
        c->env->stats->tls_handshakes++;
        conn_deadline_clear(c);
        open_probe(c, CONN_FIRST_BYTES_MS);
        return 1;
    }
    if (!(what & BEV_EVENT_TIMEOUT) || !(what & BEV_EVENT_READING))
        return 0;
    if (open_dnode(c) == 0 && !c->closing)
        bufferevent_enable(c->bev, EV_READ);
    return 1;
}

static const conn_io_t open_io = {
    .name = "new",
    .read = open_read,
    .event = open_event,
};

/* A connection for fd on env, or NULL (fd closed, logged). tls: the
 * server side of a TLS handshake comes first (env->tls_ctx). */
static conn_t *open_conn(conn_env_t *env, int fd, const char *peer, const char *what, int tls)
{
    struct bufferevent *bev;
    conn_t *c;

    if (tls) {
        SSL *ssl = env->tls_ctx != NULL ? SSL_new(env->tls_ctx) : NULL;

        if (ssl == NULL) {
            log_error("cannot set up a TLS connection %s %s", what, peer);
            evutil_closesocket(fd);
            return NULL;
        }
        /* From here libevent owns ssl, and with BEV_OPT_CLOSE_ON_FREE the
         * fd once the bufferevent exists. When it cannot make one it frees
         * ssl, but its socket BIO does not close fd: we do. */
        bev = bufferevent_openssl_socket_new(env->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (bev == NULL) {
            log_error("cannot set up a TLS connection %s %s", what, peer);
            evutil_closesocket(fd);
            return NULL;
        }
        /* A client that closes without close_notify has ended, not failed:
         * browsers and Node often do. */
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(env->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        log_error("bufferevent_socket_new() failed %s %s", what, peer);
        evutil_closesocket(fd);
        return NULL;
    }
    c = conn_new(env, bev, peer);
    if (c == NULL)
        log_error("out of memory %s %s", what, peer);
    else
        c->tls = tls != 0;
    return c;
}

/* Read the first bytes of c within left_ms. */
static conn_t *open_probe(conn_t *c, uint64_t left_ms)
{
    struct timeval first = {(time_t)(left_ms / 1000), (suseconds_t)(left_ms % 1000) * 1000};

    conn_set_io(c, CONN_NEW, &open_io, NULL);
    bufferevent_set_timeouts(c->bev, &first, NULL);
    if (bufferevent_enable(c->bev, EV_READ) < 0)
        conn_close(c, CONN_CLOSE_OTHER, "cannot enable reading");
    return c;
}

conn_t *conn_open_accepted(conn_env_t *env, int fd, const char *peer, int tls)
{
    conn_t *c = open_conn(env, fd, peer, "accepting", tls);

    if (c == NULL || !tls)
        return c != NULL ? open_probe(c, CONN_FIRST_BYTES_MS) : NULL;
    /* The handshake has http_header_timeout to finish (a peer that starts
     * one and stalls holds a descriptor, like a slow HTTP header); the
     * wait for the first bytes starts when it has (open_event). */
    conn_set_io(c, CONN_NEW, &open_io, NULL);
    if (conn_deadline_set(c, env->cfg->http_header_timeout, "TLS handshake not finished") < 0 ||
        bufferevent_enable(c->bev, EV_READ) < 0)
        conn_close(c, CONN_CLOSE_OTHER, "cannot start the TLS handshake");
    return c;
}

conn_t *conn_open_adopted(conn_env_t *env, int fd, const char *peer, conn_adopt_t kind,
                          uint64_t age_ms)
{
    conn_t *c = open_conn(env, fd, peer, "adopting", 0);

    if (c == NULL)
        return NULL;
    if (c->accepted_us > age_ms * 1000)
        c->accepted_us -= age_ms * 1000;
    if (kind == CONN_ADOPT_FRESH)
        return open_probe(c, age_ms < CONN_FIRST_BYTES_MS ? CONN_FIRST_BYTES_MS - age_ms : 1);
    /* Nothing moves until the previous worker has written its last byte. */
    c->held = 1;
    if (bufferevent_disable(c->bev, EV_READ | EV_WRITE) < 0) {
        conn_close(c, CONN_CLOSE_OTHER, "cannot hold the connection");
        return c;
    }
    if (kind == CONN_ADOPT_WS) {
        if (ws_adopt(c) < 0)
            return c; /* closed by ws_adopt */
    } else {
        conn_line_set(c);
    }
    /* The session was counted as open where it started: only the gauge moves. */
    __atomic_add_fetch(&env->stats->sessions[kind == CONN_ADOPT_WS ? METRICS_TRANSPORT_WEBSOCKET
                                                                   : METRICS_TRANSPORT_TCP],
                       1, __ATOMIC_RELAXED);
    return c;
}
