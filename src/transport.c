/* transport: listening sockets and accepting (see transport.h). */
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
#include <event2/event.h>
#include <event2/listener.h>

#include "addr.h"
#include "conn_open.h"
#include "hash.h"
#include "log.h"

/* New connections per address: a token bucket per slot of a table indexed
 * by the keyed hash of the address (so no client can aim at another's
 * slot); addresses that share a slot share a bucket. */
#define TRANSPORT_RATE_SLOTS 4096

typedef struct transport_rate {
    double tokens;
    uint64_t at_us; /* last refill; 0: never used */
} transport_rate_t;

struct transport {
    conn_env_t *env;
    struct metrics *metrics;
    struct evconnlistener **listeners;
    size_t nlisteners;
    struct event *pause; /* ends a pause taken to spread connections */
    int stopped;
    time_t refused_logged_at;  /* last "connection refused" log line */
    uint64_t refused_unlogged; /* refusals since that line */
    transport_rate_t *rate;    /* TRANSPORT_RATE_SLOTS buckets, made on first use */
};

/* ------------------------------------------------------------------------
 * Listening sockets (master side)
 * ------------------------------------------------------------------------ */

/* Split "host:port" / "[v6]:port" into host and port. */
static int split_addr(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
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
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
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
    transport_t *t = arg;
    size_t i;

    (void)fd;
    (void)what;
    if (t->stopped)
        return;
    for (i = 0; i < t->nlisteners; i++)
        evconnlistener_enable(t->listeners[i]);
}

static void transport_spread(transport_t *t)
{
    struct timeval pause = {0, TRANSPORT_PAUSE_MS * 1000};
    metrics_slot_t *stats = t->env->stats;
    uint64_t total, mine, share;
    unsigned n;
    size_t i;

    if (t->stopped || evtimer_pending(t->pause, NULL))
        return;
    metrics_accepting_load(t->metrics, &total, &n);
    if (n < 2)
        return;
    mine = stats->connections_opened - stats->connections_closed;
    share = total / n;
    if (mine <= share + share / 128 + 4)
        return;
    for (i = 0; i < t->nlisteners; i++)
        evconnlistener_disable(t->listeners[i]);
    if (evtimer_add(t->pause, &pause) < 0)
        transport_resume_cb(-1, 0, t);
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

/* Whether peer's address already holds max_connections_per_ip of this
 * worker's connections (addresses in connection_limit_exempt, such as a
 * reverse proxy's, never do). */
static int transport_over_ip_limit(const transport_t *t, const char *peer)
{
    const config_t *cfg = t->env->cfg;

    return cfg->max_connections_per_ip > 0 &&
           conn_env_count_from(t->env, peer) >= cfg->max_connections_per_ip;
}

/* Whether peer's address (for IPv6, its /64) has used up
 * max_connection_rate_per_ip (a second, with bursts of up to twice that)
 * on this worker: a client
 * reconnecting in a loop, or making us do TLS handshakes (each costs the
 * server a signature and a key exchange) as fast as it can, gets refused
 * at accept. The caller skips connection_limit_exempt addresses, which so
 * take no tokens from the addresses sharing their slot. */
static int transport_over_rate(transport_t *t, const struct sockaddr *sa)
{
    const config_t *cfg = t->env->cfg;
    double rate = (double)cfg->max_connection_rate_per_ip, burst = 2 * rate;
    uint64_t now = metrics_now_us(), h;
    transport_rate_t *r;

    if (cfg->max_connection_rate_per_ip == 0)
        return 0;
    if (t->rate == NULL && (t->rate = calloc(TRANSPORT_RATE_SLOTS, sizeof(*t->rate))) == NULL)
        return 0;
    /* An IPv6 host usually holds a whole /64: its prefix is the address
     * here (an IPv4-mapped one stays whole). */
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        h = hash_keyed(a6->s6_addr, IN6_IS_ADDR_V4MAPPED(a6) ? 16 : 8);
    } else if (sa->sa_family == AF_INET) {
        h = hash_keyed(&((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else {
        h = 0;
    }
    r = &t->rate[h % TRANSPORT_RATE_SLOTS];
    if (r->at_us == 0 || now < r->at_us)
        r->tokens = burst;
    else
        r->tokens += (double)(now - r->at_us) * rate / 1e6;
    if (r->tokens > burst)
        r->tokens = burst;
    r->at_us = now;
    if (r->tokens >= 1) {
        r->tokens -= 1;
        return 0;
    }
    return 1;
}

static void transport_accept(transport_t *t, evutil_socket_t fd, struct sockaddr *sa, int tls)
{
    const char *why = NULL;
    const config_t *cfg = t->env->cfg;
    conn_t *c;
    char peer[64];
    int one = 1;

    peer_name(sa, peer, sizeof(peer));
    if (t->stopped)
        why = "worker is stopping";
    else if (t->env->nconns >= cfg->max_connections)
        why = "max_connections reached";
    else if ((cfg->max_connections_per_ip > 0 || cfg->max_connection_rate_per_ip > 0) &&
             !addr_peer_allowed(peer, cfg->connection_limit_exempt,
                                cfg->nconnection_limit_exempt)) {
        if (transport_over_ip_limit(t, peer))
            why = "max_connections_per_ip reached";
        else if (transport_over_rate(t, sa))
            why = "max_connection_rate_per_ip reached";
    }
    if (why != NULL) {
        time_t now = time(NULL);

        t->env->stats->refused++;
        /* A flood of refusals gets one line a second, with the count. */
        if (now != t->refused_logged_at) {
            log_warning("connection from %s refused: %s (%llu refused since the last "
                        "such line)",
                        peer, why, (unsigned long long)t->refused_unlogged + 1);
            t->refused_logged_at = now;
            t->refused_unlogged = 0;
        } else {
            t->refused_unlogged++;
        }
        evutil_closesocket(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (cfg->tcp_keepalive > 0)
        transport_keepalive(fd, cfg->tcp_keepalive);
    c = conn_open_accepted(t->env, fd, peer, tls);
    if (c == NULL)
        return;
    clog_debug(c, "connected%s", tls ? " (TLS)" : "");
    transport_spread(t);
}

static void transport_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                                int salen, void *arg)
{
    (void)l;
    (void)salen;
    transport_accept(arg, fd, sa, 0);
}

static void transport_accept_tls_cb(struct evconnlistener *l, evutil_socket_t fd,
                                    struct sockaddr *sa, int salen, void *arg)
{
    (void)l;
    (void)salen;
    transport_accept(arg, fd, sa, 1);
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

transport_t *transport_start(conn_env_t *env, struct metrics *metrics, const int *fds, size_t nfds,
                             size_t ntls)
{
    transport_t *t = calloc(1, sizeof(*t));
    size_t i;

    if (t == NULL)
        return NULL;
    t->env = env;
    t->metrics = metrics;
    t->listeners = calloc(nfds ? nfds : 1, sizeof(*t->listeners));
    t->pause = evtimer_new(env->base, transport_resume_cb, t);
    if (t->listeners == NULL || t->pause == NULL)
        goto fail;
    if (ntls > 0 && env->tls_ctx == NULL) {
        log_error("TLS listeners without a TLS context");
        goto fail;
    }
    for (i = 0; i < nfds; i++) {
        /* Backlog 0: libevent leaves the socket as the master made it
         * (listen 4096). A negative backlog makes libevent 2.1 call
         * listen(fd, 128), which shrank the shared queue for every worker
         * and dropped SYNs in connection storms. */
        int tls = i + ntls >= nfds;
        struct evconnlistener *l = evconnlistener_new(
            env->base, tls ? transport_accept_tls_cb : transport_accept_cb, t, 0, 0, fds[i]);
        if (l == NULL) {
            log_error("evconnlistener_new() failed on fd %d", fds[i]);
            goto fail;
        }
        evconnlistener_set_error_cb(l, transport_accept_error_cb);
        t->listeners[t->nlisteners++] = l;
    }
    __atomic_store_n(&env->stats->accepting, 1, __ATOMIC_RELAXED);
    return t;
fail:
    transport_free(t);
    return NULL;
}

void transport_stop_accepting(transport_t *t)
{
    size_t i;

    if (t == NULL)
        return;
    t->stopped = 1;
    __atomic_store_n(&t->env->stats->accepting, 0, __ATOMIC_RELAXED);
    evtimer_del(t->pause);
    for (i = 0; i < t->nlisteners; i++)
        evconnlistener_disable(t->listeners[i]);
}

void transport_free(transport_t *t)
{
    size_t i;

    if (t == NULL)
        return;
    if (t->pause != NULL)
        event_free(t->pause);
    free(t->rate);
    for (i = 0; i < t->nlisteners; i++)
        evconnlistener_free(t->listeners[i]);
    free(t->listeners);
    free(t);
}
