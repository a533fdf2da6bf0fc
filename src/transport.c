/* transport: listening sockets, accepting, and newline-delimited DNode on
 * TCP (see transport.h). A new connection's first bytes tell a DNode peer
 * from an HTTP client; a peer that says nothing for a moment is taken to be
 * a DNode client waiting for our methods. */
#include "transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "http.h"
#include "log.h"
#include "metrics.h"
#include "session.h"
#include "worker.h"
#include "ws.h"

/* How long a silent new connection waits before we send our methods. A
 * DNode peer sends its own methods at once, so this only serves peers that
 * wait for ours. It must outlast browsers' speculative preconnections:
 * Chromium opens sockets it may use for HTTP seconds later and drops them
 * unused after 10 s; a methods line sent on one of those would corrupt the
 * HTTP response the page then asks for. */
#define TRANSPORT_FIRST_BYTES_MS 15000

/* ------------------------------------------------------------------------
 * Listening sockets (master side)
 * ------------------------------------------------------------------------ */

/* Split "host:port" / "[v6]:port" into host and port. */
static int split_addr(const char *addr, char *host, size_t hostlen, char *port,
                      size_t portlen)
{
    const char *colon;
    size_t n;

    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        n = (size_t)(end - addr - 1);
        colon = end + 1;
        addr++;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return -1;
        n = (size_t)(colon - addr);
    }
    if (n == 0 || n >= hostlen || strlen(colon + 1) == 0 || strlen(colon + 1) >= portlen)
        return -1;
    memcpy(host, addr, n);
    host[n] = '\0';
    snprintf(port, portlen, "%s", colon + 1);
    return 0;
}

int transport_listen(const char *addr, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL, *ai;
    char host[256], port[16];
    int fd = -1, one = 1, rc;

    if (split_addr(addr, host, sizeof(host), port, sizeof(port)) < 0) {
        snprintf(err, errlen, "bad listen address '%s' (expected host:port)", addr);
        return -1;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", addr, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0)
            continue;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0)
            break;
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        fd = -1;
    }
    if (fd < 0 && ai == NULL && res != NULL && err[0] == '\0')
        snprintf(err, errlen, "cannot listen on %s", addr);
    freeaddrinfo(res);
    return fd;
}

/* ------------------------------------------------------------------------
 * Line framing
 * ------------------------------------------------------------------------ */

static void transport_oversized(session_t *s, size_t len)
{
    s->worker->stats->oversized++;
    slog_warning(s, "message of %zu+ bytes is over max_message_size (%zu)", len,
                 s->worker->cfg->max_message_size);
    session_close(s, "message too large");
}

static int transport_begin_dnode(session_t *s)
{
    s->started = 1;
    metrics_session_opened(s->worker->stats, METRICS_TRANSPORT_TCP);
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    return session_start(s);
}

/* Whether the first bytes read look like an HTTP request line. */
static int looks_like_http(const unsigned char *p, size_t n)
{
    static const char *const methods[] = {"GET ", "HEAD ", "POST ", "PUT ", "OPTIONS ",
                                          "DELETE ", "PATCH ", "CONNECT ", "TRACE "};
    size_t i, m;

    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        m = strlen(methods[i]);
        if (memcmp(p, methods[i], n < m ? n : m) == 0)
            return 1;
    }
    return 0;
}

int transport_frame_lines(struct evbuffer *in, uint32_t *scanned, size_t max,
                          int (*on_line)(void *arg, const char *line, size_t len), void *arg,
                          size_t *oversize)
{
    for (;;) {
        struct evbuffer_ptr from, eol;
        size_t buffered = evbuffer_get_length(in);
        unsigned char *line;
        size_t n;
        int stop = 0;

        if (buffered == 0)
            return TRANSPORT_FRAME_MORE;
        evbuffer_ptr_set(in, &from, *scanned, EVBUFFER_PTR_SET);
        eol = evbuffer_search(in, "\n", 1, &from);
        if (eol.pos < 0) {
            *scanned = (uint32_t)buffered;
            if (buffered > max + 1) {
                *oversize = buffered;
                return TRANSPORT_FRAME_OVERSIZED;
            }
            return TRANSPORT_FRAME_MORE;
        }
        n = (size_t)eol.pos;
        if (n > max + 1) { /* + 1: a CR before the LF is not the message's */
            *oversize = n;
            return TRANSPORT_FRAME_OVERSIZED;
        }
        line = evbuffer_pullup(in, (ssize_t)n + 1);
        if (line == NULL)
            return TRANSPORT_FRAME_NOMEM;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (n > max) {
            *oversize = n;
            return TRANSPORT_FRAME_OVERSIZED;
        }
        /* Blank lines are keep-alives some clients send; skip them. */
        if (strspn((const char *)line, " \t\r") < n)
            stop = on_line(arg, (const char *)line, n);
        evbuffer_drain(in, (size_t)eol.pos + 1);
        *scanned = 0;
        if (stop)
            return TRANSPORT_FRAME_STOPPED;
    }
}

static int transport_on_line(void *arg, const char *line, size_t len)
{
    session_t *s = arg;

    session_handle_message(s, line, len);
    return s->closing;
}

static void transport_read_lines(session_t *s)
{
    size_t oversize = 0;
    int rc;

    if (s->closing)
        return;
    session_cork(s);
    rc = transport_frame_lines(bufferevent_get_input(s->bev), &s->scanned,
                               s->worker->cfg->max_message_size, transport_on_line, s, &oversize);
    session_uncork(s);
    switch (rc) {
    case TRANSPORT_FRAME_OVERSIZED:
        transport_oversized(s, oversize);
        break;
    case TRANSPORT_FRAME_NOMEM:
        session_close(s, "out of memory");
        break;
    default:
        break;
    }
}

static void transport_read_cb(struct bufferevent *bev, void *arg)
{
    session_t *s = arg;

    (void)bev;
    if (s->closing)
        return;
    if (!s->started) {
        struct evbuffer *in = bufferevent_get_input(s->bev);
        size_t n = evbuffer_get_length(in);
        unsigned char *p = evbuffer_pullup(in, (ssize_t)(n < 8 ? n : 8));

        if (p != NULL && p[0] != '{' && looks_like_http(p, n < 8 ? n : 8)) {
            if (n < 8 && n < 4) /* wait for enough bytes to decide */
                return;
            if (transport_http_begin(s) < 0)
                session_close(s, "HTTP is not served here");
            return;
        }
        if (transport_begin_dnode(s) < 0)
            return;
    }
    if (s->framing == SESSION_FRAMING_LINE)
        transport_read_lines(s);
    else
        transport_ws_read(s);
    if (s->draining) /* what was read may have needed no reply */
        session_drain(s);
}

static void transport_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    session_output_drained(arg);
}

static void transport_event_cb(struct bufferevent *bev, short what, void *arg)
{
    session_t *s = arg;

    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING)) {
        /* A silent peer: a DNode client waiting for our methods. Once
         * started, a line session has no read timeout: this one fired in
         * the same loop pass as the read that started it (busy worker). */
        if ((s->started || transport_begin_dnode(s) == 0) && !s->closing)
            bufferevent_enable(bev, EV_READ);
        return;
    }
    if (what & BEV_EVENT_EOF)
        session_close(s, "client closed the connection");
    else if (what & BEV_EVENT_ERROR)
        session_close(s, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    else if (what & BEV_EVENT_TIMEOUT)
        session_close(s, "timed out");
}

/* ------------------------------------------------------------------------
 * Accepting
 * ------------------------------------------------------------------------ */

static void peer_name(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(buf, len, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(buf, len, "[%s]:%d", host, port);
    } else {
        snprintf(buf, len, "local");
    }
}

/* Spreading connections over workers. They share the listening sockets and
 * whichever calls accept() first gets the connection, so one that happens
 * to be awake more often takes more: 5,000 connections opened at once split
 * 57/43 over two workers, and a fan-out lasts as long as its busiest
 * worker's share. A worker holding more than its share of the accepting
 * workers' connections (plus 1/128 and 4) stops accepting for
 * TRANSPORT_PAUSE_MS, and the others take what arrives meanwhile. A pause
 * delays a connection by that much at most: nothing is refused. */
#define TRANSPORT_PAUSE_MS 2

static void transport_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    size_t i;

    (void)fd;
    (void)what;
    if (w->stopping)
        return;
    for (i = 0; i < w->nlisteners; i++)
        evconnlistener_enable(w->listeners[i]);
}

static void transport_spread(worker_t *w)
{
    struct timeval pause = {0, TRANSPORT_PAUSE_MS * 1000};
    uint64_t total, mine, share;
    unsigned n;
    size_t i;

    if (w->accept_pause == NULL || w->stopping || evtimer_pending(w->accept_pause, NULL))
        return;
    metrics_accepting_load(w->metrics, &total, &n);
    if (n < 2)
        return;
    mine = w->stats->connections_opened - w->stats->connections_closed;
    share = total / n;
    if (mine <= share + share / 128 + 4)
        return;
    for (i = 0; i < w->nlisteners; i++)
        evconnlistener_disable(w->listeners[i]);
    if (evtimer_add(w->accept_pause, &pause) < 0)
        transport_resume_cb(-1, 0, w);
}

/* A peer that vanished (a laptop shut, a NAT entry dropped) sends no FIN:
 * without probes its session, subscriptions and presence count would stay
 * until a write failed, and on a quiet channel forever. The kernel probes
 * after idle seconds of silence, then every third of that, and resets the
 * connection after 3 unanswered probes (so within about 2 x idle), which
 * closes the session like any lost connection. */
static void transport_keepalive(evutil_socket_t fd, int idle)
{
    int one = 1, intvl = idle / 3 > 0 ? idle / 3 : 1, cnt = 3;

    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) < 0)
        log_debug("cannot set TCP keepalive: %s", strerror(errno));
}

static void transport_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
                                struct sockaddr *sa, int salen, void *arg)
{
    worker_t *w = arg;
    struct bufferevent *bev;
    struct timeval first = {TRANSPORT_FIRST_BYTES_MS / 1000,
                            (TRANSPORT_FIRST_BYTES_MS % 1000) * 1000};
    session_t *s;
    char peer[64];
    int one = 1;

    (void)l;
    (void)salen;
    peer_name(sa, peer, sizeof(peer));
    if (w->stopping || w->nsessions >= w->cfg->max_connections) {
        time_t now = time(NULL);

        w->stats->refused++;
        /* A flood of refusals gets one line a second, with the count. */
        if (now != w->refused_logged_at) {
            log_warning("connection from %s refused: %s (%llu refused since the last "
                        "such line)", peer,
                        w->stopping ? "worker is stopping" : "max_connections reached",
                        (unsigned long long)w->refused_unlogged + 1);
            w->refused_logged_at = now;
            w->refused_unlogged = 0;
        } else {
            w->refused_unlogged++;
        }
        evutil_closesocket(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (w->cfg->tcp_keepalive > 0)
        transport_keepalive(fd, w->cfg->tcp_keepalive);
    bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        log_error("bufferevent_socket_new() failed for %s", peer);
        evutil_closesocket(fd);
        return;
    }
    s = session_new(w, bev, peer, SESSION_FRAMING_LINE);
    if (s == NULL) {
        log_error("out of memory accepting %s", peer);
        return;
    }
    bufferevent_setcb(bev, transport_read_cb, transport_write_cb, transport_event_cb, s);
    bufferevent_set_timeouts(bev, &first, NULL);
    if (bufferevent_enable(bev, EV_READ) < 0)
        session_close(s, "cannot enable reading");
    slog_debug(s, "connected");
    transport_spread(w);
}

static void transport_accept_error_cb(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();

    (void)l;
    (void)arg;
    /* EMFILE/ENFILE and friends: log and keep the listener; libevent retries
     * on the next readiness. */
    log_error("accept() failed: %s", evutil_socket_error_to_string(err));
}

int transport_start(worker_t *w, const int *fds, size_t nfds)
{
    size_t i;

    w->listeners = calloc(nfds ? nfds : 1, sizeof(*w->listeners));
    if (w->listeners == NULL)
        return -1;
    for (i = 0; i < nfds; i++) {
        /* Backlog 0: libevent leaves the socket as the master made it
         * (listen 4096). A negative backlog makes libevent 2.1 call
         * listen(fd, 128), which shrank the shared queue for every worker
         * and dropped SYNs in connection storms. */
        struct evconnlistener *l =
            evconnlistener_new(w->base, transport_accept_cb, w, 0, 0, fds[i]);
        if (l == NULL) {
            log_error("evconnlistener_new() failed on fd %d", fds[i]);
            return -1;
        }
        evconnlistener_set_error_cb(l, transport_accept_error_cb);
        w->listeners[w->nlisteners++] = l;
    }
    w->accept_pause = evtimer_new(w->base, transport_resume_cb, w);
    if (w->accept_pause == NULL)
        return -1;
    __atomic_store_n(&w->stats->accepting, 1, __ATOMIC_RELAXED);
    return 0;
}

void transport_stop_accepting(worker_t *w)
{
    size_t i;

    __atomic_store_n(&w->stats->accepting, 0, __ATOMIC_RELAXED);
    if (w->accept_pause != NULL)
        evtimer_del(w->accept_pause);
    for (i = 0; i < w->nlisteners; i++)
        evconnlistener_disable(w->listeners[i]);
}

/* ------------------------------------------------------------------------
 * Adopting a connection from another worker (handoff.c)
 * ------------------------------------------------------------------------ */

session_t *transport_adopt(worker_t *w, int fd, const char *peer, int kind, uint64_t age_ms)
{
    struct bufferevent *bev;
    session_t *s;

    bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        log_error("bufferevent_socket_new() failed adopting %s", peer);
        evutil_closesocket(fd);
        return NULL;
    }
    s = session_new(w, bev, peer, SESSION_FRAMING_LINE);
    if (s == NULL) {
        log_error("out of memory adopting %s", peer);
        return NULL;
    }
    if (s->accepted_us > age_ms * 1000)
        s->accepted_us -= age_ms * 1000;
    if (kind == TRANSPORT_ADOPT_FRESH) {
        uint64_t left =
            age_ms < TRANSPORT_FIRST_BYTES_MS ? TRANSPORT_FIRST_BYTES_MS - age_ms : 1;
        struct timeval first = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};

        bufferevent_setcb(bev, transport_read_cb, transport_write_cb, transport_event_cb, s);
        bufferevent_set_timeouts(bev, &first, NULL);
        if (bufferevent_enable(bev, EV_READ) < 0)
            session_close(s, "cannot enable reading");
        return s;
    }
    /* Nothing moves until the previous worker has written its last byte. */
    s->held = 1;
    if (bufferevent_disable(bev, EV_READ | EV_WRITE) < 0) {
        session_close(s, "cannot hold the connection");
        return s;
    }
    s->started = 1;
    if (kind == TRANSPORT_ADOPT_WS) {
        if (ws_adopt(s) < 0)
            return s; /* closed by ws_adopt */
    } else {
        bufferevent_setcb(bev, transport_read_cb, transport_write_cb, transport_event_cb, s);
    }
    /* The session was counted as open where it started: only the gauge moves. */
    __atomic_add_fetch(&w->stats->sessions[kind == TRANSPORT_ADOPT_WS
                                               ? METRICS_TRANSPORT_WEBSOCKET
                                               : METRICS_TRANSPORT_TCP],
                       1, __ATOMIC_RELAXED);
    return s;
}

void transport_resume(session_t *s)
{
    s->held = 0;
    if (s->closing || s->bev == NULL)
        return;
    if (bufferevent_enable(s->bev, EV_READ | EV_WRITE) < 0) {
        session_close(s, "cannot enable reading");
        return;
    }
    slog_debug(s, "adopted from the previous generation");
    if (s->draining)
        session_drain(s);
}

int transport_idle(session_t *s)
{
    return s->framing == SESSION_FRAMING_WEBSOCKET ? ws_idle(s) : 1;
}

/* ------------------------------------------------------------------------
 * HTTP and WebSocket (http.c, ws.c)
 * ------------------------------------------------------------------------ */

int transport_http_begin(session_t *s)
{
    return http_begin(s);
}

void transport_ws_read(session_t *s)
{
    ws_read(s);
}

int transport_ws_write(session_t *s, session_msg_t *const *ms, unsigned n)
{
    return ws_write(s, ms, n);
}

void transport_ws_close_policy(session_t *s, const char *reason)
{
    ws_close_policy(s, reason);
}

void transport_session_free(session_t *s)
{
    int ws = s->framing == SESSION_FRAMING_WEBSOCKET;

    if (s->started && s->handed) { /* it goes on elsewhere: only the gauge moves */
        int64_t *g = &s->worker->stats->sessions[ws ? METRICS_TRANSPORT_WEBSOCKET
                                                    : METRICS_TRANSPORT_TCP];
        if (__atomic_load_n(g, __ATOMIC_RELAXED) > 0)
            __atomic_sub_fetch(g, 1, __ATOMIC_RELAXED);
    } else if (s->started)
        metrics_session_closed(s->worker->stats,
                               ws ? METRICS_TRANSPORT_WEBSOCKET : METRICS_TRANSPORT_TCP);
    if (ws)
        ws_session_free(s);
    else
        http_session_free(s);
}
