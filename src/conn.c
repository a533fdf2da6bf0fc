/* conn: one accepted socket and its output (see conn.h). Teardown is
 * deferred to a pass of the env's reap event, so that nothing running on
 * behalf of a connection (a fan-out, a database reply) sees it freed. */
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "hash.h"

/* ------------------------------------------------------------------------
 * Shared messages
 * ------------------------------------------------------------------------ */

conn_msg_t *conn_msg_new(const char *data, size_t len)
{
    conn_msg_t *m = malloc(sizeof(*m) + len + 2);

    if (m == NULL)
        return NULL;
    m->refs = 1;
    m->len = len;
    memcpy(m->data, data, len);
    m->data[len] = '\n';
    m->data[len + 1] = '\0';
    return m;
}

conn_msg_t *conn_msg_from_buf(json_buf_t *b)
{
    conn_msg_t *m;

    if (b->data == NULL || b->len < CONN_MSG_HEAD + 2 || b->data[b->len - 1] != '\0' ||
        b->data[b->len - 2] != '\n') {
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
        return NULL;
    }
    /* A message can wait in many output buffers: give back the slack of a
     * large one (shrinking in place never fails in practice; if it does,
     * the larger block is kept). */
    if (b->cap - b->len > 4096) {
        char *fit = realloc(b->data, b->len);
        if (fit != NULL)
            b->data = fit;
    }
    m = (conn_msg_t *)(void *)b->data;
    m->refs = 1;
    m->len = b->len - CONN_MSG_HEAD - 2;
    b->data = NULL;
    b->len = b->cap = 0;
    return m;
}

conn_msg_t *conn_msg_ref(conn_msg_t *m)
{
    m->refs++;
    return m;
}

void conn_msg_unref(conn_msg_t *m)
{
    if (m != NULL && --m->refs == 0)
        free(m);
}

static void conn_msg_release(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    conn_msg_unref(arg);
}

/* ------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------ */

/* After a read or a drained output: a draining connection may be idle. */
static void conn_progress(conn_t *c)
{
    if (c->closing)
        return;
    if (c->h != NULL && c->h->on_progress != NULL)
        c->h->on_progress(c->owner);
    else if (c->owner == NULL && c->draining && c->env->on_idle != NULL)
        c->env->on_idle(c->env->arg, c);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    conn_t *c = arg;

    (void)bev;
    if (c->closing || c->io == NULL || c->io->read == NULL)
        return;
    c->reading = 1;
    c->io->read(c);
    c->reading = 0;
    conn_progress(c);
}

static void conn_soft_clear(conn_t *c)
{
    if (c->over_soft_us != 0) {
        c->over_soft_us = 0;
        c->env->nover_soft--;
    }
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    conn_t *c = arg;

    (void)bev;
    if (c->io != NULL && c->io->written != NULL && c->io->written(c))
        return;
    conn_soft_clear(c);
    conn_progress(c);
}

void conn_close_event(conn_t *c, short what)
{
    unsigned long tls_err;

    if (what & BEV_EVENT_EOF) {
        conn_close(c, CONN_CLOSE_CLIENT, "client closed the connection");
    } else if ((what & BEV_EVENT_ERROR) && c->tls && c->bev != NULL &&
               (tls_err = bufferevent_get_openssl_error(c->bev)) != 0) {
        char detail[160] = "TLS: ";

        /* A failed handshake (a port scan, a client that does not trust
         * us, plain text on the TLS port) or a bad record. */
        ERR_error_string_n(tls_err, detail + 5, sizeof(detail) - 5);
        while (bufferevent_get_openssl_error(c->bev) != 0)
            ;
        conn_close(c, CONN_CLOSE_PROTOCOL, detail);
    } else if (what & BEV_EVENT_ERROR) {
        int err = EVUTIL_SOCKET_ERROR();
        conn_close(c, err == ECONNRESET || err == EPIPE ? CONN_CLOSE_CLIENT : CONN_CLOSE_OTHER,
                   evutil_socket_error_to_string(err));
    } else if (what & BEV_EVENT_TIMEOUT) {
        conn_close(c, CONN_CLOSE_TIMEOUT, "timed out");
    }
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    conn_t *c = arg;

    (void)bev;
    if (c->io != NULL && c->io->event != NULL && c->io->event(c, what))
        return;
    conn_close_event(c, what);
}

/* ------------------------------------------------------------------------
 * Slow consumers
 * ------------------------------------------------------------------------ */

void conn_drop_slow(conn_t *c, conn_close_t why, const char *detail)
{
    if (c->slow || c->closing)
        return;
    c->slow = 1;
    conn_soft_clear(c);
    c->env->stats->slow_consumers++;
    conn_log_client(LOG_LEVEL_WARNING, c, "%s: disconnecting", detail);
    conn_end(c, why, detail);
}

void conn_end(conn_t *c, conn_close_t why, const char *detail)
{
    if (c->closing)
        return;
    /* A moved connection is the adopter's now: no goodbye from here. */
    if (c->io != NULL && c->io->close_after != NULL && !c->moved && c->bev != NULL) {
        c->io->close_after(c, why, detail);
        return;
    }
    /* No goodbye: what a batch holds for c (the report of why, the replies
     * before it) is written first, as far as the socket takes it. */
    if (!c->moved && c->bev != NULL)
        conn_flush(c);
    if (!c->closing)
        conn_close(c, why, detail);
}

/* The soft rule at now_us for len bytes of output. 0, or -1 when c was
 * dropped. */
static int conn_soft_rule(conn_t *c, size_t len, uint64_t now_us)
{
    const config_t *cfg = c->env->cfg;
    char detail[96];

    if (len <= cfg->output_soft_limit) {
        conn_soft_clear(c);
        return 0;
    }
    if (c->over_soft_us == 0) {
        c->over_soft_us = now_us > 0 ? now_us : 1;
        c->env->nover_soft++;
        return 0;
    }
    if (now_us - c->over_soft_us < (uint64_t)cfg->output_soft_seconds * 1000000)
        return 0;
    snprintf(detail, sizeof(detail), "output over output_soft_limit for %d s (client too slow)",
             cfg->output_soft_seconds);
    conn_drop_slow(c, CONN_CLOSE_SLOW_SOFT, detail);
    return -1;
}

/* After queueing: the hard limit, then the soft rule. 0, or -1 when c was
 * dropped. The clock is read only while the output is over the soft limit. */
int conn_apply_limits(conn_t *c)
{
    size_t len;

    if (c->slow)
        return -1;
    len = conn_pending_output(c);
    if (len > c->env->cfg->max_output_buffer) {
        conn_drop_slow(c, CONN_CLOSE_SLOW,
                       "output buffer over max_output_buffer (client too slow)");
        return -1;
    }
    if (len <= c->env->cfg->output_soft_limit && c->over_soft_us == 0)
        return 0;
    return conn_soft_rule(c, len, metrics_now_us());
}

int conn_log_allowed(conn_t *c)
{
    if (!log_limit_take(&c->log_limit, CONN_LOG_PER_SECOND)) {
        c->env->log_limit.suppressed++; /* one sum for the summary line */
        return 0;
    }
    return log_limit_take(&c->env->log_limit, ENV_LOG_PER_SECOND);
}

/* Once a second: the summary of what the log limits held back, and the
 * connections whose output went over output_soft_limit and has not drained
 * since (one that is sent nothing more is never checked on send), walking
 * the list only while some connection is marked. */
static void conn_soft_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_env_t *env = arg;
    uint64_t now;
    conn_t *c;

    (void)fd;
    (void)what;
    if (env->log_limit.suppressed > 0) {
        log_warning("%llu log lines about clients held back in the last second "
                    "(at most %d a second per connection, %d per worker)",
                    (unsigned long long)env->log_limit.suppressed, CONN_LOG_PER_SECOND,
                    ENV_LOG_PER_SECOND);
        env->log_limit.suppressed = 0;
    }
    if (env->nover_soft == 0)
        return;
    now = metrics_now_us();
    for (c = env->conns; c != NULL; c = c->next) /* closing does not unlink */
        if (c->over_soft_us != 0 && !c->closing && !c->slow && c->bev != NULL)
            conn_soft_rule(c, conn_pending_output(c), now);
}

/* ------------------------------------------------------------------------
 * The environment
 * ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------
 * Connections per address
 * ------------------------------------------------------------------------ */

/* One peer address and how many of the env's connections come from it.
 * Buckets are chained and hashed with hash_keyed: clients choose their
 * addresses (an IPv6 /64 holds many), so they must not choose the chains. */
struct conn_addr {
    struct conn_addr *next;
    size_t count;
    char ip[48];
};

#define CONN_ADDR_BUCKETS 4096

/* The address part of a peer name ("1.2.3.4:5000" -> "1.2.3.4",
 * "[::1]:5000" -> "[::1]"). */
static void conn_peer_ip(const char *peer, char *out, size_t outlen)
{
    const char *colon = strrchr(peer, ':');
    size_t n = colon != NULL && colon != peer ? (size_t)(colon - peer) : strlen(peer);

    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, peer, n);
    out[n] = '\0';
}

static struct conn_addr **conn_addr_slot(const conn_env_t *env, const char *ip)
{
    struct conn_addr **pp = &env->addrs[hash_keyed(ip, strlen(ip)) % env->naddr_buckets];

    while (*pp != NULL && strcmp((*pp)->ip, ip) != 0)
        pp = &(*pp)->next;
    return pp;
}

size_t conn_env_count_from(const conn_env_t *env, const char *peer)
{
    struct conn_addr **pp;
    char ip[48];

    if (env->addrs == NULL)
        return 0;
    conn_peer_ip(peer, ip, sizeof(ip));
    pp = conn_addr_slot(env, ip);
    return *pp != NULL ? (*pp)->count : 0;
}

/* Count c in (delta 1) or out (-1). Best effort: without memory for an
 * entry the address goes uncounted. */
static void conn_addr_count(conn_env_t *env, const char *peer, int delta)
{
    struct conn_addr **pp, *a;
    char ip[48];

    if (env->addrs == NULL)
        return;
    conn_peer_ip(peer, ip, sizeof(ip));
    pp = conn_addr_slot(env, ip);
    if (*pp == NULL) {
        if (delta < 0 || (a = calloc(1, sizeof(*a))) == NULL)
            return;
        snprintf(a->ip, sizeof(a->ip), "%s", ip);
        *pp = a;
    }
    a = *pp;
    if (delta > 0) {
        a->count++;
    } else if (a->count <= 1) {
        *pp = a->next;
        free(a);
    } else {
        a->count--;
    }
}

static void conn_flush_cb(evutil_socket_t fd, short what, void *arg);
static void conn_flush_dirty(conn_env_t *env);
static int conn_flush_queue(conn_t *c);

static void conn_reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_env_reap(arg);
}

int conn_env_init(conn_env_t *env, struct event_base *base, const config_t *cfg,
                  metrics_slot_t *stats, struct metrics *metrics)
{
    const struct timeval period = {1, 0};

    memset(env, 0, sizeof(*env));
    env->base = base;
    env->cfg = cfg;
    env->stats = stats;
    env->metrics = metrics;
    env->naddr_buckets = CONN_ADDR_BUCKETS;
    env->addrs = calloc(env->naddr_buckets, sizeof(*env->addrs));
    env->reap = event_new(base, -1, 0, conn_reap_cb, env);
    env->soft_timer = event_new(base, -1, EV_PERSIST, conn_soft_cb, env);
    env->flush = event_new(base, -1, 0, conn_flush_cb, env);
    if (env->addrs == NULL || env->reap == NULL || env->soft_timer == NULL || env->flush == NULL ||
        event_add(env->soft_timer, &period) < 0)
        return -1;
    return 0;
}

static void conn_teardown(conn_t *c);

void conn_env_reap(conn_env_t *env)
{
    size_t i;

    /* Teardown can close more connections (presence pushes that overflow
     * an output buffer): loop until the queue is empty. */
    for (i = 0; i < env->nclosing; i++) {
        conn_teardown(env->closing[i]);
        conn_unref(env->closing[i]);
    }
    env->nclosing = 0;
}

void conn_env_free(conn_env_t *env)
{
    while (env->conns != NULL) {
        conn_t *c = env->conns;
        conn_close(c, CONN_CLOSE_SHUTDOWN, "worker exiting");
        conn_teardown(c);
    }
    conn_env_reap(env);
    env->batch = 0;
    env->deferred = 0;
    conn_flush_dirty(env); /* every connection is closed: this only releases */
    if (env->flush != NULL)
        event_free(env->flush);
    env->flush = NULL;
    free(env->spare);
    env->spare = NULL;
    if (env->reap != NULL)
        event_free(env->reap);
    if (env->soft_timer != NULL)
        event_free(env->soft_timer);
    free(env->closing);
    free(env->addrs); /* every entry went with its connections */
    env->addrs = NULL;
    env->reap = env->soft_timer = NULL;
    env->closing = NULL;
    env->capclosing = 0;
}

/* Queue c for the next teardown pass. */
static void conn_schedule_teardown(conn_t *c)
{
    conn_env_t *env = c->env;

    if (env->nclosing == env->capclosing) {
        size_t cap = env->capclosing ? env->capclosing * 2 : 64;
        conn_t **q = realloc(env->closing, cap * sizeof(*q));
        if (q == NULL) {
            /* Tearing down here could free what our caller still uses.
             * The connection stays closed (no reading, no output) and is
             * torn down with the others when the env is freed. */
            log_error("out of memory queueing a connection teardown");
            return;
        }
        env->closing = q;
        env->capclosing = cap;
    }
    env->closing[env->nclosing++] = conn_ref(c);
    if (env->reap != NULL)
        event_active(env->reap, EV_TIMEOUT, 0);
}

/* ------------------------------------------------------------------------
 * Lifetime
 * ------------------------------------------------------------------------ */

conn_t *conn_new(conn_env_t *env, struct bufferevent *bev, const char *peer)
{
    conn_t *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        bufferevent_free(bev);
        return NULL;
    }
    c->id = ++env->next_id;
    c->env = env;
    c->bev = bev;
    /* Read once: bufferevent_getfd takes the bufferevent's lock, and the
     * direct write of every fan-out delivery needs the fd. */
    c->fd = bufferevent_getfd(bev);
    c->refs = 1; /* env's list */
    c->kind = CONN_NEW;
    c->accepted_us = metrics_now_us();
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    c->next = env->conns;
    if (env->conns != NULL)
        env->conns->prev = c;
    env->conns = c;
    env->nconns++;
    conn_addr_count(env, c->peer, 1);
    env->stats->connections_opened++;
    bufferevent_setcb(bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    return c;
}

conn_t *conn_ref(conn_t *c)
{
    c->refs++;
    return c;
}

void conn_unref(conn_t *c)
{
    if (c == NULL || --c->refs > 0)
        return;
    free(c);
}

const char *conn_ctx(const conn_t *c, char *buf, size_t len)
{
    snprintf(buf, len, "session %llu %s", (unsigned long long)c->id, c->peer);
    return buf;
}

static void conn_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;

    (void)fd;
    (void)what;
    conn_close(c, CONN_CLOSE_TIMEOUT, c->deadline_detail);
}

int conn_deadline_set(conn_t *c, int seconds, const char *detail)
{
    struct timeval tv = {seconds, 0};

    if (seconds <= 0 || c->closing)
        return 0;
    if (c->deadline == NULL && (c->deadline = evtimer_new(c->env->base, conn_deadline_cb, c)) == NULL)
        return -1;
    if (evtimer_pending(c->deadline, NULL))
        return 0;
    c->deadline_detail = detail;
    return evtimer_add(c->deadline, &tv);
}

void conn_deadline_clear(conn_t *c)
{
    if (c->deadline != NULL)
        evtimer_del(c->deadline);
}

void conn_set_io(conn_t *c, conn_kind_t kind, const conn_io_t *io, void *state)
{
    if (c->io != NULL && c->io->release != NULL)
        c->io->release(c);
    conn_deadline_clear(c); /* a deadline is the previous framing's */
    c->kind = kind;
    c->io = io;
    c->io_state = state;
}

void conn_attach(conn_t *c, const conn_handlers_t *h, void *owner)
{
    c->h = h;
    c->owner = owner;
}

static int conn_is_dnode(const conn_t *c) { return c->kind == CONN_LINE || c->kind == CONN_WS; }

static int conn_transport(const conn_t *c)
{
    return c->kind == CONN_WS ? METRICS_TRANSPORT_WEBSOCKET : METRICS_TRANSPORT_TCP;
}

int conn_begin_dnode(conn_t *c)
{
    metrics_session_opened(c->env->stats, conn_transport(c));
    if (c->env->on_dnode != NULL && c->env->on_dnode(c->env->arg, c) < 0) {
        conn_close(c, CONN_CLOSE_OTHER, "cannot start a session");
        return -1;
    }
    return c->closing ? -1 : 0;
}

void conn_close(conn_t *c, conn_close_t why, const char *detail)
{
    if (c->closing)
        return;
    if (c->tls && !conn_tls_established(c))
        c->env->stats->tls_handshakes_failed++;
    c->closing = 1;
    /* The address may connect again as soon as this one is closing. */
    conn_addr_count(c->env, c->peer, -1);
    if (c->moved || why == CONN_CLOSE_MOVED) {
        /* The connection lives on in another worker. */
        clog_debug(c, "released: %s", detail);
    } else {
        /* Charged to the worker's budget only: a connection's last line
         * says why it ended, whatever it logged before. */
        if (log_enabled(LOG_LEVEL_INFO) &&
            log_limit_take(&c->env->log_limit, ENV_LOG_PER_SECOND))
            clog_info(c, "closed: %s", detail);
        if (conn_is_dnode(c))
            metrics_disconnect(c->env->stats, (int)why);
    }
    if (c->bev != NULL)
        bufferevent_disable(c->bev, EV_READ);
    conn_schedule_teardown(c);
}

void conn_set_moved(conn_t *c) { c->moved = 1; }

void conn_pause(conn_t *c)
{
    if (c->paused || c->closing || c->bev == NULL)
        return;
    c->paused = 1;
    bufferevent_disable(c->bev, EV_READ);
}

/* Reading back on after conn_pause. What waited in the buffer is taken at
 * once (later: from the loop's next pass instead). */
static void conn_read_again(conn_t *c, int later)
{
    if (!c->paused)
        return;
    c->paused = 0;
    if (c->closing || c->bev == NULL || c->held || c->moved)
        return;
    if (bufferevent_enable(c->bev, EV_READ) < 0) {
        conn_close(c, CONN_CLOSE_OTHER, "cannot enable reading");
        return;
    }
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
        return;
    if (later) {
        bufferevent_trigger(c->bev, EV_READ,
                            BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
        return;
    }
    /* Inside a read of c (an operation refused at once), that read goes on
     * by itself. */
    if (!c->reading && c->io != NULL && c->io->read != NULL) {
        c->reading = 1;
        c->io->read(c);
        c->reading = 0;
        conn_progress(c);
    }
}

void conn_unpause(conn_t *c) { conn_read_again(c, 0); }

void conn_unpause_later(conn_t *c) { conn_read_again(c, 1); }

int conn_resume(conn_t *c)
{
    c->held = 0;
    if (c->closing || c->bev == NULL)
        return -1;
    if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0) {
        conn_close(c, CONN_CLOSE_OTHER, "cannot enable reading");
        return -1;
    }
    return 0;
}

/* Release c (the teardown pass, or conn_env_free): its owner first, then
 * the variant, then the socket. */
static void conn_teardown(conn_t *c)
{
    conn_env_t *env = c->env;

    if (c->torn_down)
        return;
    c->torn_down = 1;
    conn_flush_queue(c); /* closing: releases what the batch held (c stays on the
                          * dirty list, with its reference, until the batch ends) */
    conn_soft_clear(c);
    if (c->h != NULL && c->h->on_teardown != NULL)
        c->h->on_teardown(c->owner);
    c->h = NULL;
    c->owner = NULL;
    if (conn_is_dnode(c)) {
        int64_t *g = &env->stats->sessions[conn_transport(c)];

        if (!c->moved)
            metrics_session_closed(env->stats, conn_transport(c));
        else if (__atomic_load_n(g, __ATOMIC_RELAXED) > 0) /* it goes on elsewhere */
            __atomic_sub_fetch(g, 1, __ATOMIC_RELAXED);
    }
    if (c->io != NULL && c->io->release != NULL)
        c->io->release(c);
    c->io = NULL;
    c->io_state = NULL;
    if (c->deadline != NULL) {
        event_free(c->deadline);
        c->deadline = NULL;
    }
    json_free(c->offered_auth);
    c->offered_auth = NULL;
    if (c->bev != NULL) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    c->fd = -1;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        env->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    env->nconns--;
    env->stats->connections_closed++;
    conn_unref(c); /* env's list */
}

int conn_tls_established(const conn_t *c)
{
    SSL *ssl = c->tls && c->bev != NULL ? bufferevent_openssl_get_ssl(c->bev) : NULL;

    return ssl != NULL && SSL_is_init_finished(ssl);
}

size_t conn_pending_output(const conn_t *c)
{
    return c->bev != NULL ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
}

int conn_quiet(const conn_t *c)
{
    if (c->closing || c->held || c->bev == NULL)
        return 0;
    if (c->nq > 0)
        return 0; /* batched, not yet written: writing it reports progress */
    if (conn_pending_output(c) > 0)
        return 0; /* the write callback reports progress */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        return 0; /* a partial message: the read callback reports progress */
    return c->io == NULL || c->io->idle == NULL || c->io->idle(c);
}

int conn_unread(const conn_t *c)
{
    int unread = 0;

    return c->fd >= 0 && ioctl(c->fd, FIONREAD, &unread) == 0 && unread > 0;
}

/* ------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------ */

/* The TLS form of a direct write: one SSL_write of the iovecs (copied
 * together when there are several), so a reply or a push goes out in the
 * call that made it, as over plain TCP, instead of arming the write event
 * and waiting a loop pass (two epoll_ctl calls each).
 *
 * OpenSSL's rule for a write it could not finish (WANT_WRITE: part of a
 * record is out) is that the next SSL_write passes the same bytes again.
 * The bytes then go to the output buffer as one chain of at most
 * CONN_TLS_DIRECT_MAX bytes, which is exactly what libevent's next write
 * passes (it writes at most 16 KiB a call, chain by chain), and
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets their address differ. Anything
 * larger takes the buffered path. Skipped while libevent has a TLS write of
 * its own to finish (a read that needed to write). Returns len (written,
 * or queued here), 0 (nothing done: the caller queues), or -1. */
#define CONN_TLS_DIRECT_MAX 16384

static ssize_t conn_tls_write_direct(conn_t *c, struct iovec *iov, int iovcnt)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    unsigned char copy[CONN_TLS_DIRECT_MAX];
    const void *data = iov[0].iov_base;
    size_t len = 0;
    int i, rc, err;

    if (ssl == NULL || !SSL_is_init_finished(ssl) || SSL_want(ssl) == SSL_WRITING)
        return 0;
    for (i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (len == 0 || len > CONN_TLS_DIRECT_MAX)
        return 0;
    if (iovcnt > 1) {
        size_t off = 0;

        for (i = 0; i < iovcnt; i++) {
            memcpy(copy + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        data = copy;
    }
    ERR_clear_error();
    rc = SSL_write(ssl, data, (int)len);
    if (rc > 0)
        return rc; /* whole: partial writes are not enabled */
    err = SSL_get_error(ssl, rc);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
        /* Retried by libevent with these same bytes, in one chain. */
        if (evbuffer_add(bufferevent_get_output(c->bev), data, len) < 0)
            return -1;
        return (ssize_t)len;
    }
    ERR_clear_error();
    return -1;
}

ssize_t conn_write_direct(conn_t *c, struct iovec *iov, int iovcnt)
{
    ssize_t n;

    /* Only an idle connection may skip the buffer: anything queued must go
     * out first. Writing at once saves the two epoll_ctl() calls and the
     * loop pass that arming the write event costs, which dominates fan-out
     * to thousands of subscribers. */
    if (c->fd < 0 || c->held || c->bev == NULL || conn_pending_output(c) > 0)
        return 0;
    if (c->tls)
        return conn_tls_write_direct(c, iov, iovcnt);
    do
        n = writev(c->fd, iov, iovcnt);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    return n;
}

int conn_queue_ref(conn_t *c, conn_msg_t *m, size_t offset, size_t len)
{
    conn_msg_ref(m);
    if (evbuffer_add_reference(bufferevent_get_output(c->bev), m->data + offset, len,
                               conn_msg_release, m) < 0) {
        m->refs--;
        return -1;
    }
    return 0;
}

/* Send ms[0..n-1] through the variant, then apply the limits. 0, or -1
 * when c was closed. */
static int conn_send_now(conn_t *c, conn_msg_t *const *ms, unsigned n)
{
    if (c->io == NULL || c->io->send == NULL || c->io->send(c, ms, n) < 0) {
        if (!c->closing)
            conn_close(c, CONN_CLOSE_OTHER, "cannot queue output");
        return -1;
    }
    return c->closing ? -1 : conn_apply_limits(c);
}

/* ------------------------------------------------------------------------
 * Coalescing
 *
 * While a batch is open (a read's cork, or the pass of the loop in which
 * pushes were made), conn_send appends to the connection's queue instead
 * of writing; each connection is written once when the batch ends, all of
 * its messages in one writev (the variant frames them). A connection's
 * messages keep one order: once something waits in its queue, everything
 * after it waits too. The limits are applied when the queue is written,
 * at most CONN_CORK_MAX messages later.
 * ------------------------------------------------------------------------ */

/* Give back a queue: the env keeps one, so that the replies of one read
 * (the common batch) cost no allocation. */
static void conn_queue_free(conn_env_t *env, conn_msg_t **q)
{
    if (env->spare == NULL)
        env->spare = q;
    else
        free(q);
}

/* Write what c's queue holds, releasing the queue. 0, or -1 when c was
 * closed (its messages are dropped then, as a closing connection's are). */
static int conn_flush_queue(conn_t *c)
{
    conn_msg_t **q = c->q;
    unsigned i, n = c->nq;
    int rc;

    c->nq = 0;
    c->q = NULL;
    if (q == NULL)
        return c->closing ? -1 : 0;
    rc = (n == 0 || c->closing || c->bev == NULL) ? (c->closing ? -1 : 0) : conn_send_now(c, q, n);
    for (i = 0; i < n; i++)
        conn_msg_unref(q[i]);
    conn_queue_free(c->env, q);
    return rc;
}

/* Write every dirty connection's queue. The batch stays open meanwhile, so
 * what the writing causes (a progress report that sends) queues behind and
 * is written by the same loop. */
static void conn_flush_dirty(conn_env_t *env)
{
    conn_t *c;

    env->batch++;
    while ((c = env->dirty) != NULL) {
        env->dirty = c->qnext;
        c->qnext = NULL;
        c->queued = 0;
        if (c->nq > 0 && conn_flush_queue(c) == 0 && !c->reading && conn_pending_output(c) == 0)
            conn_progress(c); /* conn_quiet said no while it waited */
        conn_unref(c);
    }
    env->batch--;
}

static void conn_batch_end(conn_env_t *env)
{
    if (env->batch > 0 && --env->batch == 0)
        conn_flush_dirty(env);
}

static void conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_env_t *env = arg;

    (void)fd;
    (void)what;
    if (!env->deferred)
        return;
    env->deferred = 0;
    conn_batch_end(env);
}

/* Append m to c's queue (a new reference). 0, or -1 when c was closed. */
static int conn_enqueue(conn_t *c, conn_msg_t *m)
{
    conn_env_t *env = c->env;

    if (c->nq == CONN_CORK_MAX && conn_flush_queue(c) < 0)
        return -1;
    if (c->q == NULL) {
        c->q = env->spare != NULL ? env->spare : malloc(CONN_CORK_MAX * sizeof(*c->q));
        env->spare = NULL;
        if (c->q == NULL) {
            conn_close(c, CONN_CLOSE_OTHER, "out of memory");
            return -1;
        }
    }
    c->q[c->nq++] = conn_msg_ref(m);
    if (!c->queued) {
        c->queued = 1;
        c->qnext = env->dirty;
        env->dirty = conn_ref(c);
    }
    return 0;
}

void conn_cork(conn_t *c) { c->env->batch++; }

int conn_flush(conn_t *c) { return c->nq > 0 ? conn_flush_queue(c) : (c->closing ? -1 : 0); }

void conn_uncork(conn_t *c)
{
    /* The replies to a read go now, whatever else the batch holds. */
    if (c->nq > 0)
        conn_flush_queue(c);
    conn_batch_end(c->env);
}

int conn_send(conn_t *c, conn_msg_t *m)
{
    if (c->closing || c->bev == NULL || m == NULL)
        return -1;
    c->env->stats->messages_out++;
    if (c->env->batch > 0 || c->nq > 0)
        return conn_enqueue(c, m);
    return conn_send_now(c, &m, 1);
}

int conn_push(conn_t *c, conn_msg_t *m)
{
    conn_env_t *env = c->env;

    if (c->closing || c->bev == NULL || m == NULL)
        return -1;
    if (env->batch == 0 && env->flush != NULL) {
        /* Ended by conn_flush_cb later in this pass of the loop. */
        env->batch++;
        env->deferred = 1;
        event_active(env->flush, EV_TIMEOUT, 0);
    }
    return conn_send(c, m);
}
