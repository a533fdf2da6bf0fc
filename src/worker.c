/* worker: a worker process's event loop (see worker.h). Creates every
 * library handle after fork, wires the layers together, runs until told to
 * stop, and on a graceful stop lets sessions finish what is in flight
 * before closing them. The master (or main, with one in-process worker)
 * owns config and models. */
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/thread.h>

#include "api.h"
#include "bus.h"
#include "conn.h"
#include "dnode.h"
#include "handoff.h"
#include "log.h"
#include "metrics.h"
#include "session.h"
#include "store.h"
#include "transport.h"

/* How long a fast stop (TERM, INT) waits for in-flight work. */
#define WORKER_FAST_STOP_SECONDS 2

/* ------------------------------------------------------------------------
 * What the lower layers leave to the worker
 * ------------------------------------------------------------------------ */

/* A draining connection's first idle moment: a retiring worker hands it to
 * the new generation (what the client sends meanwhile waits in the socket
 * for the adopter, so nothing is lost); otherwise it closes once no request
 * is waiting to be read, neither in our input buffer nor in the socket, so
 * a request the client sent before we closed is still answered. (One sent
 * in the instant between this check and close(2) cannot be; the protocol
 * has no way to announce the close first.) s is c's session, or NULL. */
/* A TLS connection's keys live in this process' OpenSSL state and cannot
 * move: a session, or a connection still in its handshake or before its
 * first bytes, stays with a retiring worker (an HTTPS one closes when
 * idle). */
static int worker_keeps(const conn_t *c) { return c->tls && c->kind != CONN_HTTP; }

static void worker_idle(worker_t *w, conn_t *c, session_t *s)
{
    if (!conn_quiet(c))
        return; /* the connection reports progress again */
    /* A TLS connection's keys live in this process' OpenSSL state and
     * cannot move: a session, or a connection still in its handshake or
     * before its first bytes, stays here, served as before (pushes
     * included), until the client leaves or the stop deadline
     * (shutdown_timeout) closes it. An HTTPS connection closes when idle. */
    if (w->retiring && worker_keeps(c))
        return;
    if (w->retiring && !c->unmovable && !c->tls) {
        int rc;

        /* Its own publishes must reach Redis before any it makes from the
         * new worker, or subscribers could see them out of order. */
        if (s != NULL && (s->callbacks_held > 0 || s->unconfirmed > 0))
            return; /* session_op_done or session_publish_done calls us again */
        if (s != NULL && s->handoff != NULL)
            return; /* adopted, some markers still to come: handoff_marker calls us */
        rc = handoff_send(w->handoff, c, s);
        if (rc >= 0)
            return; /* sent, or the channel is full: the stop tick retries */
        c->unmovable = 1;
    }
    if (conn_unread(c))
        return;
    conn_close(c, CONN_CLOSE_SHUTDOWN, "drained");
}

static void worker_session_idle(void *arg, session_t *s)
{
    if (s->conn->moved) /* handed off: it ends once its last push is out */
        handoff_output_drained(s);
    else
        worker_idle(arg, s->conn, s);
}

static void worker_conn_idle(void *arg, conn_t *c) { worker_idle(arg, c, NULL); }

/* A connection became a DNode stream: it gets a session, which greets. */
static int worker_on_dnode(void *arg, conn_t *c)
{
    worker_t *w = arg;
    session_t *s = session_new(&w->sessions, c);

    if (s == NULL)
        return -1;
    if (c->offered_auth != NULL) { /* a token in the WebSocket upgrade */
        session_set_auth(s, c->offered_auth, c->offered_exp);
        c->offered_auth = NULL;
        api_check_offered(&w->api, s);
    }
    return session_start(s);
}

static void worker_dispatch(void *arg, session_t *s, int idx, json_t *args, size_t ncallbacks)
{
    worker_t *w = arg;

    api_call(&w->api, s, idx, args, ncallbacks);
}

/* Teardown order: the channels first (presence pushes to the others), then
 * a move in progress (the adopter is told to go on). */
static void worker_session_teardown(void *arg, session_t *s)
{
    worker_t *w = arg;

    if (w->bus != NULL)
        bus_leave_all(w->bus, s);
    handoff_session_free(s);
}

/* The bus' hooks: a session moving between generations takes a channel's
 * pushes from one side of its marker only (handoff.c). */
static int worker_may_push(void *arg, const session_t *s, const char *channel)
{
    (void)arg;
    return s->handoff == NULL || handoff_may_push(s, channel);
}

static void worker_on_marker(void *arg, session_t *s, const char *channel, const char *id)
{
    (void)arg;
    if (s->handoff != NULL)
        handoff_marker(s, channel, id);
}

/* Start draining c (the worker stops or retires). */
static void worker_drain(worker_t *w, conn_t *c)
{
    if (c->closing)
        return;
    c->draining = 1;
    if (c->owner != NULL)
        session_drain(c->owner);
    else
        worker_idle(w, c, NULL);
}

/* ------------------------------------------------------------------------
 * Stopping
 * ------------------------------------------------------------------------ */

static void worker_stop_check_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    conn_t *c;

    (void)fd;
    (void)what;
    /* A handoff refused for a full channel is tried again here. */
    if (w->retiring)
        for (c = w->conns.conns; c != NULL; c = c->next)
            if (!c->closing && !c->moved && !c->held && !c->unmovable && !worker_keeps(c))
                worker_drain(w, c);
    if (w->conns.nconns == 0 && (w->store == NULL || store_pending(w->store) == 0))
        event_base_loopexit(w->base, NULL);
}

/* Once a second: tokens nearing or past exp, and (auth_anonymous = deny)
 * sessions that never authenticated (api_sweep). */
static void worker_auth_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    int64_t now = (int64_t)time(NULL);
    uint64_t now_us = metrics_now_us();
    conn_t *c;

    (void)fd;
    (void)what;
    for (c = w->conns.conns; c != NULL; c = c->next)
        if ((c->kind == CONN_LINE || c->kind == CONN_WS) && c->owner != NULL && !c->closing &&
            !c->moved && !c->held)
            api_sweep(&w->api, c->owner, now, (now_us - c->accepted_us) / 1000000);
}

/* A revocation from Redis: every session whose token it covers ends. */
static void worker_on_revoke(void *arg, const char *kind, const char *value, int64_t before)
{
    worker_t *w = arg;
    size_t n = 0;
    conn_t *c;

    for (c = w->conns.conns; c != NULL; c = c->next)
        if ((c->kind == CONN_LINE || c->kind == CONN_WS) && c->owner != NULL && !c->closing &&
            !c->moved && api_revoke_matches(c->owner, kind, value, before)) {
            conn_end(c, CONN_CLOSE_OTHER, "token revoked");
            n++;
        }
    if (n > 0)
        log_info("revocation of %s %s: %zu sessions closed", kind, value, n);
}

static void worker_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    conn_t *c;

    (void)fd;
    (void)what;
    if (w->conns.nconns > 0)
        log_warning("stop deadline reached: closing %zu sessions", w->conns.nconns);
    for (c = w->conns.conns; c != NULL; c = c->next)
        conn_close(c, CONN_CLOSE_SHUTDOWN,
                   w->retiring && worker_keeps(c)
                       ? "reload: a TLS session stays with its worker until "
                         "shutdown_timeout, which has passed"
                       : "server stopping");
    event_base_loopexit(w->base, NULL);
}

void worker_stop(worker_t *w, int graceful)
{
    struct timeval deadline = {graceful ? w->cfg->shutdown_timeout : WORKER_FAST_STOP_SECONDS, 0};
    struct timeval tick = {0, 50 * 1000};
    conn_t *c;

    if (w->stopping && (graceful || w->stopping == 2)) {
        if (!graceful) { /* a second fast stop: exit at once */
            event_base_loopbreak(w->base);
        } else if (w->retiring) {
            if (w->conns.nconns > 0)
                log_info("graceful stop: sessions not yet handed off close instead");
            w->retiring = 0;
            for (c = w->conns.conns; c != NULL; c = c->next) /* some waited for a handoff */
                worker_drain(w, c);
        }
        return;
    }
    if (w->stopping && w->retiring) {
        if (w->conns.nconns > 0)
            log_info("fast stop: sessions not yet handed off close instead");
        w->retiring = 0;
    }
    w->stopping = graceful ? 1 : 2;
    if (!w->retiring) /* worker_retire said what it does */
        log_info("%s stop: %zu sessions", graceful ? "graceful" : "fast", w->conns.nconns);
    handoff_stop_receiving(w->handoff);
    transport_stop_accepting(w->transport);
    for (c = w->conns.conns; c != NULL; c = c->next)
        worker_drain(w, c);
    event_add(w->stop_timer, &deadline);
    event_add(w->stop_check, &tick);
}

void worker_retire(worker_t *w)
{
    if (w->stopping)
        return;
    if (w->handoff == NULL) {
        worker_stop(w, 1);
        return;
    }
    {
        size_t ntls = 0;
        conn_t *c;

        for (c = w->conns.conns; c != NULL; c = c->next)
            ntls += worker_keeps(c);
        log_info("retiring: handing %zu sessions to the new generation%s", w->conns.nconns - ntls,
                 ntls > 0 ? "; TLS sessions stay here until they end or shutdown_timeout" : "");
    }
    w->retiring = 1;
    worker_stop(w, 1);
}

static void worker_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    worker_t *w = arg;

    (void)what;
    switch (sig) {
    case SIGQUIT:
        worker_stop(w, 1);
        break;
    case SIGTERM:
    case SIGINT:
        worker_stop(w, 0);
        break;
    case SIGUSR1:
        log_reopen(); /* reports its own failure */
        break;
    case SIGUSR2:
        worker_retire(w);
        break;
    case SIGHUP:
        /* Reload is the master's business; a lone worker ignores it. */
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------------
 * Running
 * ------------------------------------------------------------------------ */

static void worker_free(worker_t *w)
{
    size_t i;

    transport_free(w->transport);
    if (w->conns.reap != NULL) {
        conn_env_free(&w->conns);
        if (w->store != NULL)
            store_free(w->store); /* runs the remaining completions */
        conn_env_reap(&w->conns);
    } else if (w->store != NULL) {
        store_free(w->store);
    }
    handoff_chan_free(w->handoff);
    bus_free(w->bus);
    for (i = 0; i < sizeof(w->signals) / sizeof(w->signals[0]); i++)
        if (w->signals[i] != NULL)
            event_free(w->signals[i]);
    if (w->stop_timer != NULL)
        event_free(w->stop_timer);
    if (w->stop_check != NULL)
        event_free(w->stop_check);
    if (w->auth_tick != NULL)
        event_free(w->auth_tick);
    conn_msg_unref(w->sessions.greeting);
    if (w->base != NULL)
        event_base_free(w->base);
    metrics_release(w->metrics, (int)getpid());
    metrics_free(w->own_metrics);
}

int worker_wire(worker_t *w)
{
    const bus_hooks_t hooks = {worker_may_push, worker_on_marker, w,          api_push_filter,
                               &w->api,         worker_on_revoke, api_joined, &w->api};
    size_t len;
    char *line;

    if (conn_env_init(&w->conns, w->base, w->cfg, w->stats, w->metrics) < 0)
        return -1;
    w->conns.on_dnode = worker_on_dnode;
    w->conns.auth = w->auth;
    w->conns.tls_ctx = tls_ctx(w->tls);
    w->conns.on_idle = worker_conn_idle;
    w->conns.arg = w;
    line = dnode_build_methods(api_method_names, api_method_count, &len);
    if (line == NULL)
        return -1;
    w->sessions.greeting = conn_msg_new(line, len - 1);
    free(line);
    if (w->sessions.greeting == NULL)
        return -1;
    w->sessions.cfg = w->cfg;
    w->sessions.stats = w->stats;
    w->sessions.methods = api_method_names;
    w->sessions.nmethods = api_method_count;
    w->sessions.dispatch = worker_dispatch;
    w->sessions.on_idle = worker_session_idle;
    w->sessions.on_teardown = worker_session_teardown;
    w->sessions.arg = w;
    w->api.cfg = w->cfg;
    w->api.stats = w->stats;
    w->api.models = w->models;
    w->api.auth = w->auth;
    w->api.store = w->store;
    w->api.bus = w->bus;
    if (w->bus != NULL)
        bus_set_hooks(w->bus, &hooks);
    return 0;
}

/* This worker's counters: a slot in the master's shared region, else (no
 * region handed in, or every slot taken) a private one. 0 or -1. */
static int worker_claim_metrics(worker_t *w, struct metrics *shared)
{
    w->metrics = shared;
    w->stats = metrics_claim(shared, (int)getpid());
    if (w->stats != NULL)
        return 0;
    if (shared != NULL)
        log_warning("no free metrics slot: /metrics of this worker shows its own counters only");
    w->own_metrics = w->metrics = metrics_new(1);
    w->stats = metrics_claim(w->metrics, (int)getpid());
    return w->stats != NULL ? 0 : -1;
}

int worker_run(const worker_args_t *args)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGHUP};
    const config_t *cfg = args->cfg;
    const model_set_t *models = args->models;
    handoff_deps_t hd;
    sigset_t none;
    worker_t w;
    char err[256];
    size_t i;
    int status = 1;

    memset(&w, 0, sizeof(w));
    w.index = args->index;
    w.generation = args->generation;
    w.cfg = cfg;
    w.models = models;
    w.auth = args->auth;
    w.tls = args->tls;
    if (evthread_use_pthreads() < 0) {
        log_error("evthread_use_pthreads() failed");
        return 1;
    }
    w.base = event_base_new();
    if (w.base == NULL) {
        log_error("event_base_new() failed");
        return 1;
    }
    if (worker_claim_metrics(&w, args->metrics) < 0) {
        log_error("cannot set up the metrics counters");
        goto done;
    }
    w.stop_timer = evtimer_new(w.base, worker_deadline_cb, &w);
    w.stop_check = event_new(w.base, -1, EV_PERSIST, worker_stop_check_cb, &w);
    if (w.stop_timer == NULL || w.stop_check == NULL)
        goto done;
    if (auth_enabled(w.auth) || strcmp(w.cfg->auth_anonymous, "deny") == 0) {
        struct timeval second = {1, 0};
        w.auth_tick = event_new(w.base, -1, EV_PERSIST, worker_auth_tick_cb, &w);
        if (w.auth_tick == NULL || event_add(w.auth_tick, &second) < 0)
            goto done;
    }
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        w.signals[i] = evsignal_new(w.base, sigs[i], worker_signal_cb, &w);
        if (w.signals[i] == NULL || event_add(w.signals[i], NULL) < 0)
            goto done;
    }
    /* Handlers are in place: signals the master sent since fork arrive now. */
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0) {
        log_error("sigprocmask() failed: %s", strerror(errno));
        goto done;
    }
    w.bus = bus_new(w.base, cfg, w.stats, w.index, args->bus_host, args->generation);
    if (w.bus == NULL)
        goto done;
    if (cfg->mongodb_uri != NULL && cfg->mongodb_uri[0] != '\0') {
        store_config_t sc;
        memset(&sc, 0, sizeof(sc));
        sc.uri = cfg->mongodb_uri;
        sc.threads = cfg->db_threads;
        sc.timeout_ms = cfg->db_timeout_ms;
        sc.max_time_ms = cfg->db_max_time_ms;
        sc.limits.max_read_limit = cfg->max_read_limit;
        sc.max_reply_bytes = cfg->max_reply_bytes;
        sc.max_doc_bytes = cfg->max_message_size;
        sc.limits.max_query_depth = 8;
        sc.limits.max_query_terms = 256;
        sc.limits.max_regex_length = 256;
        w.store = store_new(w.base, &sc, err, sizeof(err));
        if (w.store == NULL) {
            log_error("database: %s", err);
            status = 2;
            goto done;
        }
        if (models != NULL && store_ensure_indexes(w.store, models) < 0)
            log_warning("cannot queue index creation: indexes are not ensured");
    }
    if (worker_wire(&w) < 0)
        goto done;
    hd.base = w.base;
    hd.cfg = cfg;
    hd.conns = &w.conns;
    hd.sessions = &w.sessions;
    hd.bus = w.bus;
    w.transport = transport_start(&w.conns, w.metrics, args->fds, args->nfds, args->ntls);
    if (w.transport == NULL || handoff_start(&w.handoff, &hd, args->handoff_fds) < 0)
        goto done;
    log_info("worker %d (generation %u) serving", w.index, w.generation);
    if (args->on_ready != NULL)
        args->on_ready(args->ready_arg);
    event_base_dispatch(w.base);
    status = 0;
    log_info("worker %d (generation %u) exiting", w.index, w.generation);
done:
    worker_free(&w);
    return status;
}
