/* floor: the least a server can do for what bench/run measures, so that
 * each dnoded figure stands beside the floor of this machine's kernel and
 * cores rather than beside another product.
 *
 *   floor fanout PORT   two forked workers, each with its own SO_REUSEPORT
 *       listener, a socketpair between them. A publish is turned into the
 *       created push by swapping the method name (no JSON parsing), sent
 *       to the other worker as one line and written to each local
 *       subscriber with one write() per subscriber per message. Speaks
 *       what bench/fanout_load expects.
 *   floor rpc PORT      one process, one epoll loop: each request line is
 *       answered with the reply line dnoded sends for a subscribe or
 *       unsubscribe ({"method":<callback id>,"arguments":[null],...}), the
 *       replies of one read in one write. Speaks what bench/ws_load -t tcp
 *       and bench/rpc_load expect.
 *   floor rpc-tls PORT CERT KEY [read-ahead]   the same over TLS, with
 *       OpenSSL itself (no libevent) on the same loop: non-blocking
 *       sockets, the handshake stepped by SSL_do_handshake as the socket
 *       allows, SSL_read until it wants more, the replies of those reads
 *       in one SSL_write. A context as dnoded makes it (TLS_server_method,
 *       TLS 1.2 to 1.3, OpenSSL's ciphers, no session cache) and nothing
 *       more; read-ahead adds SSL_CTX_set_read_ahead (a record's header and
 *       body, and the records behind it, in one read()). No close_notify
 *       is sent. Speaks what bench/ws_load -t tls expects.
 *
 * All greet every connection with dnoded's methods message. Runs until
 * SIGTERM or SIGINT. Not part of the daemon or the tests; every input is
 * still bounded (a line over LINE_MAX_BYTES closes its connection). */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define LINE_MAX_BYTES 65536
#define OUT_MAX (64u << 20) /* a subscriber further behind is dropped */
#define PEER_TAG UINT64_MAX

static const char methods_msg[] =
    "{\"method\":\"methods\",\"arguments\":[{\"create\":\"[Function]\",\"read\":\"[Function]\","
    "\"update\":\"[Function]\",\"delete\":\"[Function]\",\"subscribe\":\"[Function]\","
    "\"unsubscribe\":\"[Function]\",\"publish\":\"[Function]\",\"auth\":\"[Function]\"}],"
    "\"callbacks\":{\"0\":[\"0\",\"create\"],\"1\":[\"0\",\"read\"],\"2\":[\"0\",\"update\"],"
    "\"3\":[\"0\",\"delete\"],\"4\":[\"0\",\"subscribe\"],\"5\":[\"0\",\"unsubscribe\"],"
    "\"6\":[\"0\",\"publish\"],\"7\":[\"0\",\"auth\"]},\"links\":[]}\n";

typedef struct fconn {
    int fd;
    int sub;     /* index in subs, or -1 */
    SSL *ssl;    /* rpc-tls, else NULL */
    int ready;   /* rpc-tls: the handshake is done */
    int out_wants_write; /* rpc-tls: out waits for the socket to take more */
    unsigned events;     /* rpc-tls: what epoll waits for */
    size_t inlen;
    char *out;   /* bytes the socket did not take */
    size_t outlen, outcap;
    char in[LINE_MAX_BYTES];
} fconn_t;

static int ep = -1;
static SSL_CTX *tls_ctx; /* rpc-tls */
static int peer = -1; /* fanout: the other worker */
static fconn_t **subs;
static size_t nsubs, capsubs;
static char *peer_in;
static size_t peer_inlen;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void die(const char *what)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int listen_on(int port)
{
    struct sockaddr_in a;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4096) < 0)
        die("bind/listen");
    return fd;
}

static void conn_free(fconn_t *c)
{
    if (c->sub >= 0) {
        subs[c->sub] = subs[--nsubs];
        subs[c->sub]->sub = c->sub;
    }
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        ERR_clear_error(); /* what it failed on, if it failed */
    }
    close(c->fd); /* also leaves the epoll set */
    free(c->out);
    free(c);
}

/* Keep what the socket did not take, and ask for EPOLLOUT (over TLS the
 * caller asks for what OpenSSL wants). -1: dropped. */
static int conn_keep(fconn_t *c, const char *p, size_t n)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};

    if (c->outlen + n > OUT_MAX)
        return -1;
    if (c->outlen + n > c->outcap) {
        size_t cap = (c->outlen + n) * 2;
        char *o = realloc(c->out, cap);
        if (o == NULL)
            return -1;
        c->out = o;
        c->outcap = cap;
    }
    if (c->outlen == 0 && c->ssl == NULL && epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return -1;
    memcpy(c->out + c->outlen, p, n);
    c->outlen += n;
    return 0;
}

static int tls_write(fconn_t *c, const char *p, size_t n);

/* One write() of p, unless bytes wait already (then behind them). */
static int conn_write(fconn_t *c, const char *p, size_t n)
{
    ssize_t w;

    if (c->outlen > 0)
        return conn_keep(c, p, n);
    if (c->ssl != NULL)
        return tls_write(c, p, n);
    w = write(c->fd, p, n);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        w = 0;
    }
    return (size_t)w < n ? conn_keep(c, p + w, n - (size_t)w) : 0;
}

static int conn_drain(fconn_t *c)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    ssize_t w = write(c->fd, c->out, c->outlen);

    if (w < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    memmove(c->out, c->out + w, c->outlen - (size_t)w);
    c->outlen -= (size_t)w;
    if (c->outlen == 0 && epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return -1;
    return 0;
}

/* The created push to every local subscriber, one write() each. A
 * subscriber that fails leaves the list and is shut down; its next event
 * frees it (it may be the connection being read). */
static void deliver(const char *push, size_t len)
{
    size_t i;

    for (i = 0; i < nsubs;) {
        fconn_t *c = subs[i];

        if (conn_write(c, push, len) < 0) {
            subs[i] = subs[--nsubs]; /* the last one moves to i */
            subs[i]->sub = (int)i;
            c->sub = -1;
            shutdown(c->fd, SHUT_RDWR);
            continue;
        }
        i++;
    }
}

/* The callback id of a request: "callbacks":{"<id>":... -1 without one. */
static long callback_id(const char *line)
{
    const char *p = strstr(line, "\"callbacks\":{\"");

    if (p == NULL)
        return -1;
    p += 14;
    return *p >= '0' && *p <= '9' ? strtol(p, NULL, 10) : -1;
}

static int has_method(const char *line, const char *name, const char *id)
{
    char a[64], b[64];

    snprintf(a, sizeof(a), "{\"method\":\"%s\",", name);
    snprintf(b, sizeof(b), "{\"method\":%s,", id);
    return strncmp(line, a, strlen(a)) == 0 || strncmp(line, b, strlen(b)) == 0;
}

/* One request line (NUL-terminated, without its newline); replies are
 * appended to reply. -1: close the connection. */
static int handle_line(fconn_t *c, char *line, size_t len, char *reply, size_t *rlen, size_t rcap)
{
    static const char pub_head[] = "{\"method\":\"publish\",";
    static const char push_head[] = "{\"method\":\"created\",";
    long cb = callback_id(line);

    if (has_method(line, "methods", "\"methods\""))
        return 0;
    if (peer >= 0 && strncmp(line, pub_head, sizeof(pub_head) - 1) == 0) {
        /* The push is the publish with its method renamed: same length. */
        memcpy(line, push_head, sizeof(push_head) - 1);
        line[len] = '\n';
        if (write(peer, line, len + 1) != (ssize_t)(len + 1))
            die("write to the other worker");
        deliver(line, len + 1);
        line[len] = '\0';
    } else if (peer >= 0 && has_method(line, "subscribe", "4") && c->sub < 0) {
        if (nsubs == capsubs) {
            capsubs = capsubs ? capsubs * 2 : 1024;
            subs = realloc(subs, capsubs * sizeof(*subs));
            if (subs == NULL)
                die("realloc");
        }
        c->sub = (int)nsubs;
        subs[nsubs++] = c;
    }
    if (cb >= 0) {
        int n = snprintf(reply + *rlen, rcap - *rlen,
                         "{\"method\":%ld,\"arguments\":[null],\"callbacks\":{},\"links\":[]}\n", cb);
        if (n < 0 || (size_t)n >= rcap - *rlen)
            return -1;
        *rlen += (size_t)n;
    }
    return 0;
}

/* The n bytes just read after c->in + c->inlen: each complete line is
 * answered into reply (sent when it is nearly full), the rest kept for the
 * next read. -1: close c. */
static int conn_lines(fconn_t *c, size_t n, char *reply, size_t *rlen, size_t rcap)
{
    size_t start = 0, i;

    for (i = c->inlen; i < c->inlen + n; i++) {
        if (c->in[i] != '\n')
            continue;
        c->in[i] = '\0';
        if (*rlen + 256 > rcap) {
            if (conn_write(c, reply, *rlen) < 0)
                return -1;
            *rlen = 0;
        }
        if (i > start && handle_line(c, c->in + start, i - start, reply, rlen, rcap) < 0)
            return -1;
        start = i + 1;
    }
    c->inlen += n;
    if (start > 0) {
        memmove(c->in, c->in + start, c->inlen - start);
        c->inlen -= start;
    }
    return c->inlen >= sizeof(c->in) - 1 ? -1 : 0; /* a line over LINE_MAX_BYTES */
}

/* Read what c sent, answer each complete line; the replies of one read go
 * in one write. -1: close c. */
static int conn_read(fconn_t *c)
{
    char reply[16384];
    size_t rlen = 0;
    ssize_t n = read(c->fd, c->in + c->inlen, sizeof(c->in) - 1 - c->inlen);

    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        return -1;
    if (n < 0)
        return 0;
    if (conn_lines(c, (size_t)n, reply, &rlen, sizeof(reply)) < 0)
        return -1;
    return rlen > 0 ? conn_write(c, reply, rlen) : 0;
}

/* rpc-tls: epoll waits for c to be readable, and writable too if OpenSSL
 * asked for that. */
static int tls_arm(fconn_t *c, int writable)
{
    struct epoll_event ev = {.events = EPOLLIN | (writable ? EPOLLOUT : 0u), .data.ptr = c};

    if (ev.events == c->events)
        return 0;
    c->events = ev.events;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* What one SSL_write of n bytes ended in: 0 written (whole: partial writes
 * are off) or to be retried, -1 failed. */
static int tls_wrote(fconn_t *c, int rc)
{
    int err;

    if (rc > 0) {
        c->out_wants_write = 0;
        return 0;
    }
    err = SSL_get_error(c->ssl, rc);
    if (err != SSL_ERROR_WANT_WRITE && err != SSL_ERROR_WANT_READ)
        return -1;
    c->out_wants_write = err == SSL_ERROR_WANT_WRITE;
    return 1;
}

/* conn_write over TLS with nothing waiting: one SSL_write of p. Bytes it
 * could not send are kept in out and passed again from there (the context
 * accepts a retry from a moved buffer). */
static int tls_write(fconn_t *c, const char *p, size_t n)
{
    int rc = tls_wrote(c, SSL_write(c->ssl, p, (int)n));

    return rc <= 0 ? rc : conn_keep(c, p, n);
}

/* rpc-tls: the retry of what out holds. */
static int tls_flush(fconn_t *c)
{
    int rc = tls_wrote(c, SSL_write(c->ssl, c->out, (int)c->outlen));

    if (rc == 0)
        c->outlen = 0;
    return rc < 0 ? -1 : 0;
}

/* rpc-tls: one pass over c, whatever epoll reported: the handshake while it
 * lasts (then the methods message); else what out holds; then SSL_read
 * until it wants more, the replies of all it read in one SSL_write; then
 * epoll waits for what OpenSSL asked for. -1: close c. */
static int tls_event(fconn_t *c)
{
    char reply[16384];
    size_t rlen = 0;
    int n, err, want_write = 0;

    if (!c->ready) {
        n = SSL_do_handshake(c->ssl);
        if (n != 1) {
            err = SSL_get_error(c->ssl, n);
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
                return -1;
            return tls_arm(c, err == SSL_ERROR_WANT_WRITE);
        }
        c->ready = 1;
        if (conn_write(c, methods_msg, sizeof(methods_msg) - 1) < 0)
            return -1;
    } else if (c->outlen > 0 && tls_flush(c) < 0) {
        return -1;
    }
    while ((n = SSL_read(c->ssl, c->in + c->inlen, (int)(sizeof(c->in) - 1 - c->inlen))) > 0)
        if (conn_lines(c, (size_t)n, reply, &rlen, sizeof(reply)) < 0)
            return -1;
    err = SSL_get_error(c->ssl, n);
    if (err == SSL_ERROR_WANT_WRITE)
        want_write = 1;
    else if (err != SSL_ERROR_WANT_READ)
        return -1; /* closed (with or without close_notify) or failed */
    if (rlen > 0 && conn_write(c, reply, rlen) < 0)
        return -1;
    return tls_arm(c, want_write || (c->outlen > 0 && c->out_wants_write));
}

/* Pushes the other worker forwarded: one line each. */
static void peer_read(void)
{
    size_t start = 0, i, old = peer_inlen;
    ssize_t n = read(peer, peer_in + peer_inlen, LINE_MAX_BYTES * 4 - peer_inlen);

    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        stop = 1; /* the other worker is gone */
        return;
    }
    peer_inlen += (size_t)n;
    for (i = old; i < peer_inlen; i++) {
        if (peer_in[i] != '\n')
            continue;
        deliver(peer_in + start, i + 1 - start);
        start = i + 1;
    }
    memmove(peer_in, peer_in + start, peer_inlen - start);
    peer_inlen -= start;
    if (peer_inlen == LINE_MAX_BYTES * 4)
        die("a line from the other worker too long");
}

static void serve(int lfd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
    int one = 1;

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        die("epoll");
    if (peer >= 0) {
        ev.data.u64 = PEER_TAG;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, peer, &ev) < 0 ||
            (peer_in = malloc(LINE_MAX_BYTES * 4)) == NULL)
            die("epoll peer");
    }
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 500), i;

        for (i = 0; i < n; i++) {
            fconn_t *c = evs[i].data.ptr;

            if (evs[i].data.u64 == PEER_TAG) {
                peer_read();
            } else if (c == NULL) {
                int fd;

                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct epoll_event cev = {.events = EPOLLIN};

                    if ((c = calloc(1, sizeof(*c))) == NULL) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    c->sub = -1;
                    c->events = cev.events;
                    cev.data.ptr = c;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    if (tls_ctx != NULL) {
                        /* The methods message follows the handshake. */
                        if ((c->ssl = SSL_new(tls_ctx)) == NULL || SSL_set_fd(c->ssl, fd) != 1 ||
                            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0)
                            conn_free(c);
                        else
                            SSL_set_accept_state(c->ssl);
                    } else if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0 ||
                               conn_write(c, methods_msg, sizeof(methods_msg) - 1) < 0) {
                        conn_free(c);
                    }
                }
            } else if (c->ssl != NULL) {
                if (tls_event(c) < 0)
                    conn_free(c);
            } else if (((evs[i].events & EPOLLOUT) && conn_drain(c) < 0) ||
                       ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && conn_read(c) < 0)) {
                /* A connection freed here may still be named later in evs
                 * only if it was listed twice, which epoll never does. */
                conn_free(c);
            }
        }
    }
}

/* rpc-tls: the server context, as dnoded's defaults make it. */
static SSL_CTX *tls_context(const char *cert, const char *key, int read_ahead)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        fprintf(stderr, "floor: the TLS context (%s, %s):\n", cert, key);
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER); /* tls_write */
    if (read_ahead)
        SSL_CTX_set_read_ahead(ctx, 1);
    return ctx;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    int port = 0, fanout = 0, tls = 0, sp[2];
    pid_t child;

    if (argc >= 3) {
        fanout = strcmp(argv[1], "fanout") == 0;
        tls = strcmp(argv[1], "rpc-tls") == 0;
        port = atoi(argv[2]);
    }
    if (port <= 0 || port > 65535 ||
        (tls ? argc != 5 && (argc != 6 || strcmp(argv[5], "read-ahead") != 0)
             : argc != 3 || (!fanout && strcmp(argv[1], "rpc") != 0))) {
        fprintf(stderr, "usage: floor fanout|rpc PORT\n"
                        "       floor rpc-tls PORT CERT KEY [read-ahead]\n");
        return 2;
    }
    if (tls)
        tls_ctx = tls_context(argv[3], argv[4], argc == 6);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (!fanout) {
        serve(listen_on(port));
        return 0;
    }
    /* A blocking socketpair: a worker whose peer falls behind waits for it,
     * as dnoded's relay never would, but a floor may. */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        die("socketpair");
    child = fork();
    if (child < 0)
        die("fork");
    peer = sp[child == 0 ? 1 : 0];
    close(sp[child == 0 ? 0 : 1]);
    {
        int size = 4 << 20;
        setsockopt(peer, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    }
    serve(listen_on(port));
    if (child > 0) {
        kill(child, SIGTERM);
        waitpid(child, NULL, 0);
    }
    return 0;
}
