/* ws_load: DNode round trips against dnoded over plain TCP (one JSON message
 * per line), over TLS (the same lines, -t tls) or over WebSocket (/dnode,
 * one message per masked text frame),
 * with the same driver for both so the figures compare (bench/ws.sh and
 * bench/run run it). One libevent loop drives every connection; each
 * connection keeps one request in flight (-P N: N, each sent as soon as a
 * reply frees its place, as a page firing several calls at once does) and
 * times each reply:
 *   -o pubsub (default): subscribe(url, fn) and unsubscribe(url, fn) in
 *       turn on a channel of its own;
 *   -o crud: create(data, {type: 'todo'}, fn), then read({type: 'todo',
 *       query: {_id}}, fn) of the document just created, in turn; each
 *       call passes opt.error so that a refusal comes back as an answer.
 *
 *   -H: new connections instead: each connection connects (and, over
 *       TLS, does a full handshake, no resumption), waits for the
 *       server's methods message, closes and starts again; an op is one
 *       such connection, timed from connect() to the methods message.
 *
 *   ws_load -p PORT -t tcp|tls|ws -c CONNS -d SECONDS [-w WARMUP]
 *           [-o pubsub|crud] [-P DEPTH] [-H]
 *
 * DEPTH > 1 is for pubsub only (crud reads what the previous create made).
 * The server answers a connection's calls in order, so the send times are
 * kept in a ring per connection.
 *
 * Prints "<transport> <conns> conns: N ops/s, p50 X us, p99 Y us".
 * Not part of the daemon or the tests. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#define HIST_MAX_US 2000000
#define MAX_DEPTH 64

typedef struct conn {
    struct load *load;
    struct bufferevent *bev;
    unsigned idx;
    int state;      /* 0 handshake (ws), 1 waiting for methods, 2 running */
    int methods_sent; /* ours went out (TCP: at once, as npm dnode does) */
    int subscribed; /* the next request is unsubscribe (pubsub), read (crud) */
    uint64_t next_cb;
    uint64_t fn_cb, err_cb; /* crud: the ids of the call in flight */
    char id[25];            /* crud: the _id the last create answered */
    uint64_t sent_ns;
    uint64_t connect_ns; /* -H: when this connection's connect() started */
    uint64_t sent[MAX_DEPTH]; /* send times of the calls in flight, oldest first */
    unsigned first, inflight;
} conn_t;

typedef struct load {
    struct event_base *base;
    struct sockaddr_in addr;
    int ws;
    int crud;
    int churn;        /* -H */
    SSL_CTX *ssl_ctx; /* -t tls */
    conn_t *conns;
    unsigned nconns;
    unsigned depth;
    int measuring;
    uint64_t ops, errors;
    uint32_t *hist;
} load_t;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Send one DNode message: a line, or a masked text frame. */
static void send_msg(conn_t *c, const char *text, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);

    if (!c->load->ws) {
        evbuffer_add(out, text, len);
        evbuffer_add(out, "\n", 1);
        return;
    }
    {
        unsigned char hdr[14], key[4], *body = malloc(len ? len : 1);
        size_t n = 2, i;
        uint32_t r = (uint32_t)rand();

        if (body == NULL)
            return;
        hdr[0] = 0x81;
        if (len < 126) {
            hdr[1] = (unsigned char)(0x80 | len);
        } else if (len <= 0xffff) {
            hdr[1] = 0x80 | 126;
            hdr[2] = (unsigned char)(len >> 8);
            hdr[3] = (unsigned char)len;
            n = 4;
        } else {
            hdr[1] = 0x80 | 127;
            for (i = 0; i < 8; i++)
                hdr[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
            n = 10;
        }
        memcpy(key, &r, 4);
        memcpy(hdr + n, key, 4);
        n += 4;
        for (i = 0; i < len; i++)
            body[i] = (unsigned char)text[i] ^ key[i & 3];
        evbuffer_add(out, hdr, n);
        evbuffer_add(out, body, len);
        free(body);
    }
}

static void send_crud(conn_t *c)
{
    char msg[320];
    int n;

    c->err_cb = c->next_cb++;
    c->fn_cb = c->next_cb++;
    if (!c->subscribed)
        n = snprintf(msg, sizeof(msg),
                     "{\"method\":\"create\",\"arguments\":[{\"title\":\"bench %u %llu\"},"
                     "{\"type\":\"todo\",\"error\":\"[Function]\"},\"[Function]\"],"
                     "\"callbacks\":{\"%llu\":[\"1\",\"error\"],\"%llu\":[\"2\"]},\"links\":[]}",
                     c->idx, (unsigned long long)c->fn_cb, (unsigned long long)c->err_cb,
                     (unsigned long long)c->fn_cb);
    else
        n = snprintf(msg, sizeof(msg),
                     "{\"method\":\"read\",\"arguments\":[{\"type\":\"todo\",\"query\":"
                     "{\"_id\":\"%s\"},\"error\":\"[Function]\"},\"[Function]\"],"
                     "\"callbacks\":{\"%llu\":[\"0\",\"error\"],\"%llu\":[\"1\"]},\"links\":[]}",
                     c->id, (unsigned long long)c->err_cb, (unsigned long long)c->fn_cb);
    c->subscribed = !c->subscribed;
    c->sent_ns = now_ns();
    send_msg(c, msg, (size_t)n);
}

/* crud: the answer to the call in flight: 0 when it is the expected
 * document (a create's _id kept for the read), -1 when refused. */
static int crud_answer(conn_t *c, const char *msg, size_t len)
{
    uint64_t id = strtoull(msg + 10, NULL, 10);
    const char *p = memmem(msg, len, "\"_id\":\"", 7);

    if (id != c->fn_cb || p == NULL || (size_t)(msg + len - p) < 7 + 24 + 1) {
        if (c->load->errors++ == 0)
            fprintf(stderr, "ws_load: connection %u: %.*s\n", c->idx, (int)len, msg);
        return -1;
    }
    if (c->subscribed) { /* the create's answer: read that document next */
        memcpy(c->id, p + 7, 24);
        c->id[24] = '\0';
    } else if (memcmp(c->id, p + 7, 24) != 0) {
        c->load->errors++;
        return -1;
    }
    return 0;
}

static void send_request(conn_t *c)
{
    char msg[256];
    int n;

    if (c->load->crud) {
        send_crud(c);
        return;
    }
    n = snprintf(msg, sizeof(msg),
                     "{\"method\":\"%s\",\"arguments\":[\"bench-%u\",\"[Function]\"],"
                     "\"callbacks\":{\"%llu\":[1]},\"links\":[]}",
                     c->subscribed ? "unsubscribe" : "subscribe", c->idx,
                     (unsigned long long)c->next_cb++);

    c->subscribed = !c->subscribed;
    c->sent[(c->first + c->inflight++) % MAX_DEPTH] = now_ns();
    send_msg(c, msg, (size_t)n);
}

static void send_methods(conn_t *c)
{
    static const char methods[] =
        "{\"method\":\"methods\",\"arguments\":[{}],\"callbacks\":{},\"links\":[]}";
    send_msg(c, methods, sizeof(methods) - 1);
    c->methods_sent = 1;
}

static void conn_start(conn_t *c);

static void handle_msg(conn_t *c, const char *msg, size_t len)
{
    load_t *l = c->load;

    if (c->state == 1 && l->churn) { /* connected and greeted: count, again */
        uint64_t us = (now_ns() - c->connect_ns) / 1000;
        if (l->measuring) {
            l->ops++;
            l->hist[us < HIST_MAX_US ? us : HIST_MAX_US]++;
        }
        c->state = -1; /* read_cb restarts it */
        return;
    }
    if (c->state == 1) { /* the server's methods: answer with ours, start */
        if (!c->methods_sent)
            send_methods(c);
        c->state = 2;
        for (unsigned i = 0; i < (l->crud ? 1 : l->depth); i++)
            send_request(c);
        return;
    }
    /* A reply calls one of our callbacks by number. */
    if (len > 10 && memcmp(msg, "{\"method\":", 10) == 0 && msg[10] >= '0' && msg[10] <= '9') {
        uint64_t sent = c->sent_ns;
        uint64_t us;
        if (!l->crud && c->inflight > 0) {
            sent = c->sent[c->first];
            c->first = (c->first + 1) % MAX_DEPTH;
            c->inflight--;
        }
        us = (now_ns() - sent) / 1000;
        if (l->crud) {
            if (crud_answer(c, msg, len) < 0)
                c->subscribed = 0; /* start over with a create */
        } else if (memmem(msg, len, "\"arguments\":[null]", 18) == NULL) {
            l->errors++; /* the server refused the call */
        }
        if (l->measuring) {
            l->ops++;
            l->hist[us < HIST_MAX_US ? us : HIST_MAX_US]++;
        }
        send_request(c);
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    if (c->state == 0) {
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0)
            return;
        evbuffer_drain(in, (size_t)end.pos + 4);
        c->state = 1;
    }
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        if (!c->load->ws) {
            size_t n;
            char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
            if (line == NULL)
                break;
            handle_msg(c, line, n);
            free(line);
        } else {
            unsigned char *h;
            size_t hl = 2, pl;
            if (avail < 2)
                break;
            h = evbuffer_pullup(in, avail < 10 ? (ssize_t)avail : 10);
            pl = h[1] & 0x7f;
            if (pl == 126) {
                if (avail < 4)
                    break;
                pl = ((size_t)h[2] << 8) | h[3];
                hl = 4;
            } else if (pl == 127) {
                if (avail < 10)
                    break;
                pl = 0;
                for (int i = 0; i < 8; i++)
                    pl = (pl << 8) | h[2 + i];
                hl = 10;
            }
            if (avail < hl + pl)
                break;
            h = evbuffer_pullup(in, (ssize_t)(hl + pl));
            if ((h[0] & 0x0f) == 0x1)
                handle_msg(c, (const char *)h + hl, pl);
            else if ((h[0] & 0x0f) == 0x8) {
                fprintf(stderr, "ws_load: connection %u closed by the server\n", c->idx);
                c->load->errors++;
            }
            evbuffer_drain(in, hl + pl);
        }
        if (c->state == -1)
            break;
    }
    if (c->state == -1) { /* -H: this one is done, the next one starts */
        bufferevent_free(c->bev);
        c->bev = NULL;
        conn_start(c);
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    conn_t *c = arg;

    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (c->load->churn) { /* our methods, then the server's greeting ends it */
            c->state = 1;
            send_methods(c);
            return;
        }
        if (c->load->ws) {
            evbuffer_add_printf(bufferevent_get_output(bev),
                                "GET /dnode HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Sec-WebSocket-Version: 13\r\n\r\n");
        } else {
            /* A DNode peer sends its methods at once; dnoded, which shares
             * the port with HTTP, waits for a client's first bytes. */
            c->state = 1;
            send_methods(c);
        }
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        fprintf(stderr, "ws_load: connection %u lost\n", c->idx);
        c->load->errors++;
        bufferevent_free(bev);
        c->bev = NULL;
    }
}

/* Connect c (again, with -H), over TLS with -t tls. */
static void conn_start(conn_t *c)
{
    load_t *l = c->load;

    c->state = 0;
    c->methods_sent = 0;
    c->subscribed = 0;
    c->first = c->inflight = 0;
    c->connect_ns = now_ns();
    if (l->ssl_ctx != NULL) {
        SSL *ssl = SSL_new(l->ssl_ctx);
        c->bev = ssl != NULL ? bufferevent_openssl_socket_new(l->base, -1, ssl,
                                                              BUFFEREVENT_SSL_CONNECTING,
                                                              BEV_OPT_CLOSE_ON_FREE)
                             : NULL;
        if (c->bev != NULL)
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(l->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (c->bev == NULL) {
        l->errors++;
        return;
    }
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    bufferevent_enable(c->bev, EV_READ);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&l->addr, sizeof(l->addr)) < 0) {
        l->errors++;
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
}

static void phase_cb(evutil_socket_t fd, short what, void *arg)
{
    load_t *l = arg;

    (void)fd;
    (void)what;
    if (!l->measuring) {
        l->measuring = 1;
        return;
    }
    event_base_loopbreak(l->base);
}

static uint64_t percentile(const load_t *l, double p)
{
    uint64_t want = (uint64_t)((double)l->ops * p), seen = 0;
    uint64_t us;

    for (us = 0; us <= HIST_MAX_US; us++) {
        seen += l->hist[us];
        if (seen > want)
            return us;
    }
    return HIST_MAX_US;
}

int main(int argc, char **argv)
{
    load_t l;
    int port = 0, seconds = 10, warmup = 2, opt;
    unsigned i;
    struct event *warm, *stop;
    struct timeval tw, td;

    memset(&l, 0, sizeof(l));
    l.nconns = 1;
    int tls = 0;

    while ((opt = getopt(argc, argv, "p:t:c:d:w:o:P:H")) != -1) {
        switch (opt) {
        case 'p':
            port = atoi(optarg);
            break;
        case 't':
            l.ws = strcmp(optarg, "ws") == 0;
            tls = strcmp(optarg, "tls") == 0;
            break;
        case 'H':
            l.churn = 1;
            break;
        case 'c':
            l.nconns = (unsigned)atoi(optarg);
            break;
        case 'd':
            seconds = atoi(optarg);
            break;
        case 'w':
            warmup = atoi(optarg);
            break;
        case 'o':
            l.crud = strcmp(optarg, "crud") == 0;
            break;
        case 'P':
            l.depth = (unsigned)atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: ws_load -p PORT -t tcp|tls|ws -c CONNS -d SECONDS [-w WARMUP] "
                            "[-o pubsub|crud] [-P DEPTH] [-H]\n");
            return 2;
        }
    }
    if (port <= 0 || l.nconns == 0 || seconds <= 0) {
        fprintf(stderr, "ws_load: need -p PORT, -c > 0 and -d > 0\n");
        return 2;
    }
    if (l.depth == 0)
        l.depth = 1;
    if (l.churn && l.ws) {
        fprintf(stderr, "ws_load: -H is for -t tcp and -t tls\n");
        return 2;
    }
    if (l.depth > MAX_DEPTH || (l.crud && l.depth > 1)) {
        fprintf(stderr, "ws_load: -P is 1..%d, and 1 with -o crud\n", MAX_DEPTH);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)now_ns());
    l.base = event_base_new();
    l.conns = calloc(l.nconns, sizeof(*l.conns));
    l.hist = calloc(HIST_MAX_US + 1, sizeof(*l.hist));
    if (l.base == NULL || l.conns == NULL || l.hist == NULL)
        return 1;
    l.addr.sin_family = AF_INET;
    l.addr.sin_port = htons((uint16_t)port);
    l.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (tls) {
        /* A load generator, not a client anyone relies on: the server's
         * certificate is not checked (the tests do that). */
        l.ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (l.ssl_ctx == NULL)
            return 1;
        SSL_CTX_set_session_cache_mode(l.ssl_ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(l.ssl_ctx, SSL_OP_NO_TICKET);
    }
    for (i = 0; i < l.nconns; i++) {
        conn_t *c = &l.conns[i];
        c->load = &l;
        c->idx = i;
        conn_start(c);
        if (c->bev == NULL)
            return 1;
    }
    tw.tv_sec = warmup;
    tw.tv_usec = 0;
    td.tv_sec = warmup + seconds;
    td.tv_usec = 0;
    warm = evtimer_new(l.base, phase_cb, &l);
    stop = evtimer_new(l.base, phase_cb, &l);
    evtimer_add(warm, &tw);
    evtimer_add(stop, &td);
    event_base_dispatch(l.base);
    printf("%-9s %4u conns: %8.0f ops/s, p50 %5llu us, p99 %6llu us%s\n",
           l.churn ? (tls ? "tls-new" : "tcp-new") : l.ws ? "websocket" : tls ? "tls" : "tcp", l.nconns, (double)l.ops / seconds,
           (unsigned long long)percentile(&l, 0.50), (unsigned long long)percentile(&l, 0.99),
           l.errors ? " (errors, see stderr)" : "");
    for (i = 0; i < l.nconns; i++)
        if (l.conns[i].bev != NULL)
            bufferevent_free(l.conns[i].bev);
    event_free(warm);
    event_free(stop);
    event_base_free(l.base);
    SSL_CTX_free(l.ssl_ctx);
    free(l.conns);
    free(l.hist);
    return l.errors ? 1 : 0;
}
