/* rpc_load: a DNode-over-TCP load generator for dnoded (bench/rpc.sh runs
 * it). One libevent loop drives every connection, so one process can keep
 * a server busy where a Node.js client would saturate first.
 *
 *   rpc_load -p PORT -c CONNS -d SECONDS   closed-loop round trips: each
 *       connection alternates subscribe(url, fn) and unsubscribe(url, fn) on
 *       a channel of its own, calling the server's methods by id as npm
 *       dnode does, one request in flight; prints ops/s, p50 and p99.
 *   rpc_load -p PORT -i N                  opens N sessions that complete
 *       the methods exchange, prints "ready N" and holds them open until
 *       its standard input closes (for measuring the server's RSS).
 *
 * Not part of the daemon or the tests; numbers are for bench/ only. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define HIST_MAX_US 2000000 /* latencies past 2 s land in the last bucket */
#define CONNECT_WINDOW 512  /* idle mode: connects in progress at once */

typedef struct conn {
    struct load *load;
    struct bufferevent *bev;
    unsigned idx;
    int ready;         /* got the server's methods */
    int subscribed;    /* next request is unsubscribe */
    uint64_t next_cb;  /* our callback ids count up, as dnode's do */
    uint64_t sent_ns;
} conn_t;

typedef struct load {
    struct event_base *base;
    struct sockaddr_in addr;
    conn_t *conns;
    unsigned nconns, opened, nready, nclosed;
    int idle_mode;
    int measuring, stopped;
    long sub_id, unsub_id; /* the server's method ids */
    uint64_t ops, errors;
    uint32_t *hist; /* microsecond buckets */
    struct event *stdin_ev;
} load_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The id the methods message gives to name: "<id>":["0","<name>"]. */
static long method_id(const char *line, const char *name)
{
    char pat[64];
    const char *p, *q;

    snprintf(pat, sizeof(pat), "\":[\"0\",\"%s\"]", name);
    p = strstr(line, pat);
    if (p == NULL)
        return -1;
    q = p;
    while (q > line && q[-1] >= '0' && q[-1] <= '9')
        q--;
    return q < p ? strtol(q, NULL, 10) : -1;
}

static void send_request(conn_t *c)
{
    load_t *l = c->load;
    long id = c->subscribed ? l->unsub_id : l->sub_id;

    c->sent_ns = now_ns();
    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "{\"method\":%ld,\"arguments\":[\"/bench/%u\",\"[Function]\"],"
                        "\"callbacks\":{\"%llu\":[\"1\"]},\"links\":[]}\n",
                        id, c->idx, (unsigned long long)c->next_cb++);
    c->subscribed = !c->subscribed;
}

static void conn_gone(conn_t *c)
{
    if (c->bev != NULL) {
        bufferevent_free(c->bev);
        c->bev = NULL;
        c->load->nclosed++;
    }
}

static void open_more(load_t *l);

static void read_cb(struct bufferevent *bev, void *arg)
{
    conn_t *c = arg;
    load_t *l = c->load;
    char *line;
    size_t n;

    while ((line = evbuffer_readln(bufferevent_get_input(bev), &n, EVBUFFER_EOL_LF)) != NULL) {
        if (!c->ready) {
            c->ready = 1;
            l->nready++;
            if (l->sub_id < 0) {
                l->sub_id = method_id(line, "subscribe");
                l->unsub_id = method_id(line, "unsubscribe");
            }
            if (l->idle_mode) {
                if (l->nready == l->nconns) {
                    printf("ready %u\n", l->nready);
                    fflush(stdout);
                }
                open_more(l);
            } else if (!l->stopped) {
                send_request(c);
            }
        } else if (!l->idle_mode) {
            /* A reply: {"method":<our callback id>,"arguments":[null],...} */
            uint64_t us = (now_ns() - c->sent_ns) / 1000;
            if (strstr(line, "\"arguments\":[null]") == NULL)
                l->errors++;
            if (l->measuring) {
                l->ops++;
                l->hist[us < HIST_MAX_US ? us : HIST_MAX_US]++;
            }
            if (!l->stopped)
                send_request(c);
        }
        free(line);
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    conn_t *c = arg;
    static const char methods[] =
        "{\"method\":\"methods\",\"arguments\":[{}],\"callbacks\":{},\"links\":[]}\n";

    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        bufferevent_write(bev, methods, sizeof(methods) - 1);
        return;
    }
    if (!c->load->stopped)
        fprintf(stderr, "rpc_load: connection %u %s\n", c->idx,
                (what & BEV_EVENT_EOF) ? "closed by the server"
                                       : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    c->load->errors++;
    conn_gone(c);
    if (c->load->idle_mode)
        open_more(c->load);
}

static int open_one(load_t *l)
{
    conn_t *c = &l->conns[l->opened];

    c->load = l;
    c->idx = l->opened++;
    c->bev = bufferevent_socket_new(l->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL)
        return -1;
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    if (bufferevent_enable(c->bev, EV_READ) < 0 ||
        bufferevent_socket_connect(c->bev, (struct sockaddr *)&l->addr, sizeof(l->addr)) < 0) {
        fprintf(stderr, "rpc_load: connect %u: %s\n", c->idx, strerror(errno));
        conn_gone(c);
        return -1;
    }
    return 0;
}

/* Keep up to CONNECT_WINDOW connects in flight (idle mode) or open all. */
static void open_more(load_t *l)
{
    while (l->opened < l->nconns &&
           (!l->idle_mode || l->opened - l->nready - l->nclosed < CONNECT_WINDOW)) {
        if (open_one(l) < 0) {
            l->errors++;
            break;
        }
    }
}

static void start_cb(evutil_socket_t fd, short what, void *arg)
{
    load_t *l = arg;
    (void)fd;
    (void)what;
    l->measuring = 1;
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    load_t *l = arg;
    (void)fd;
    (void)what;
    l->measuring = 0;
    l->stopped = 1;
    event_base_loopexit(l->base, NULL);
}

static void stdin_cb(evutil_socket_t fd, short what, void *arg)
{
    char buf[256];
    (void)what;
    if (read(fd, buf, sizeof(buf)) <= 0)
        stop_cb(fd, 0, arg);
}

static double percentile(const uint32_t *hist, uint64_t total, double q)
{
    uint64_t want = (uint64_t)((double)total * q), seen = 0;
    size_t i;

    for (i = 0; i <= HIST_MAX_US; i++) {
        seen += hist[i];
        if (seen > want)
            return (double)i / 1000.0;
    }
    return (double)HIST_MAX_US / 1000.0;
}

int main(int argc, char **argv)
{
    load_t l;
    const char *host = "127.0.0.1";
    int port = 0, seconds = 10, warmup = 1, opt;
    unsigned i;
    struct event *start_ev = NULL, *stop_ev = NULL;

    memset(&l, 0, sizeof(l));
    l.sub_id = l.unsub_id = -1;
    while ((opt = getopt(argc, argv, "h:p:c:d:w:i:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': l.nconns = (unsigned)atoi(optarg); break;
        case 'd': seconds = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 'i': l.nconns = (unsigned)atoi(optarg); l.idle_mode = 1; break;
        default:
            fprintf(stderr, "usage: rpc_load -p PORT [-h HOST] (-c CONNS -d SECONDS [-w WARMUP] | "
                            "-i SESSIONS)\n");
            return 2;
        }
    }
    if (port <= 0 || l.nconns == 0) {
        fprintf(stderr, "rpc_load: -p and -c or -i are required\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    l.addr.sin_family = AF_INET;
    l.addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &l.addr.sin_addr) != 1) {
        fprintf(stderr, "rpc_load: bad IPv4 address %s\n", host);
        return 2;
    }
    l.base = event_base_new();
    l.conns = calloc(l.nconns, sizeof(*l.conns));
    l.hist = calloc(HIST_MAX_US + 1, sizeof(*l.hist));
    if (l.base == NULL || l.conns == NULL || l.hist == NULL) {
        fprintf(stderr, "rpc_load: out of memory\n");
        return 1;
    }
    if (l.idle_mode) {
        l.stdin_ev = event_new(l.base, 0, EV_READ | EV_PERSIST, stdin_cb, &l);
        if (l.stdin_ev == NULL || event_add(l.stdin_ev, NULL) < 0)
            return 1;
    } else {
        struct timeval tw = {warmup, 0}, td = {warmup + seconds, 0};
        start_ev = evtimer_new(l.base, start_cb, &l);
        stop_ev = evtimer_new(l.base, stop_cb, &l);
        if (start_ev == NULL || stop_ev == NULL || evtimer_add(start_ev, &tw) < 0 ||
            evtimer_add(stop_ev, &td) < 0)
            return 1;
    }
    open_more(&l);
    event_base_dispatch(l.base);

    if (!l.idle_mode) {
        printf("connections %u  requests %llu  ops/s %.0f  p50 %.3f ms  p99 %.3f ms  "
               "errors %llu\n",
               l.nconns, (unsigned long long)l.ops, (double)l.ops / seconds,
               percentile(l.hist, l.ops, 0.50), percentile(l.hist, l.ops, 0.99),
               (unsigned long long)l.errors);
    } else {
        printf("closing %u sessions (%llu errors)\n", l.nready, (unsigned long long)l.errors);
    }
    for (i = 0; i < l.opened; i++)
        if (l.conns[i].bev != NULL)
            bufferevent_free(l.conns[i].bev);
    if (start_ev != NULL)
        event_free(start_ev);
    if (stop_ev != NULL)
        event_free(stop_ev);
    if (l.stdin_ev != NULL)
        event_free(l.stdin_ev);
    event_base_free(l.base);
    free(l.conns);
    free(l.hist);
    return l.errors > 0 && !l.idle_mode ? 1 : 0;
}
