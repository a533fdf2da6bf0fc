/* worker: a worker process's event loop (see worker.h). Creates every
 * library handle after fork, runs until told to stop, and on a graceful
 * stop lets sessions finish what is in flight before closing them. The
 * master (or main, with one in-process worker) owns config and models. */
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
#include "dnode.h"
#include "handoff.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "transport.h"

/* How long a fast stop (TERM, INT) waits for in-flight work. */
#define WORKER_FAST_STOP_SECONDS 2

/* ------------------------------------------------------------------------
 * Deferred teardown
 * ------------------------------------------------------------------------ */

void worker_schedule_teardown(worker_t *w, session_t *s)
{
    if (w->nclosing == w->capclosing) {
        size_t cap = w->capclosing ? w->capclosing * 2 : 64;
        session_t **q = realloc(w->closing, cap * sizeof(*q));
        if (q == NULL) {
            /* Tearing down here could free what our caller still uses.
             * The session stays closed (no reading, no output) and is torn
             * down with the others when the worker exits. */
            log_error("out of memory queueing a session teardown");
            return;
        }
        w->closing = q;
        w->capclosing = cap;
    }
    w->closing[w->nclosing++] = session_ref(s);
    event_active(w->reap, EV_TIMEOUT, 0);
}

void worker_reap(worker_t *w)
{
    size_t i;

    /* Teardown can close more sessions (presence pushes that overflow an
     * output buffer): loop until the queue is empty. */
    for (i = 0; i < w->nclosing; i++) {
        session_teardown(w->closing[i]);
        session_unref(w->closing[i]);
    }
    w->nclosing = 0;
}

static void worker_reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker_reap(arg);
}

/* ------------------------------------------------------------------------
 * Slow consumers
 * ------------------------------------------------------------------------ */

/* Once a second: sessions whose output went over output_soft_limit and has
 * not drained since are checked against output_soft_seconds (a session
 * that is sent nothing more is never checked on send). Walks the list only
 * while some session is marked. */
static void worker_soft_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    uint64_t now;
    session_t *s;

    (void)fd;
    (void)what;
    if (w->nover_soft == 0)
        return;
    now = metrics_now_us();
    for (s = w->sessions; s != NULL; s = s->next) /* closing does not unlink */
        if (s->over_soft_us != 0)
            session_check_soft(s, now);
}

/* ------------------------------------------------------------------------
 * Stopping
 * ------------------------------------------------------------------------ */

static void worker_stop_check_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    session_t *s;

    (void)fd;
    (void)what;
    /* A handoff refused for a full channel is tried again here. */
    if (w->retiring)
        for (s = w->sessions; s != NULL; s = s->next)
            if (!s->closing && !s->handed && !s->held && !s->no_handoff)
                session_drain(s);
    if (w->nsessions == 0 && (w->store == NULL || store_pending(w->store) == 0))
        event_base_loopexit(w->base, NULL);
}

static void worker_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    session_t *s;

    (void)fd;
    (void)what;
    if (w->nsessions > 0)
        log_warning("stop deadline reached: closing %zu sessions", w->nsessions);
    for (s = w->sessions; s != NULL; s = s->next)
        session_close(s, "server stopping");
    event_base_loopexit(w->base, NULL);
}

void worker_stop(worker_t *w, int graceful)
{
    struct timeval deadline = {graceful ? w->cfg->shutdown_timeout : WORKER_FAST_STOP_SECONDS,
                               0};
    struct timeval tick = {0, 50 * 1000};
    session_t *s;

    if (w->stopping && (graceful || w->stopping == 2)) {
        if (!graceful) { /* a second fast stop: exit at once */
            event_base_loopbreak(w->base);
        } else if (w->retiring) {
            if (w->nsessions > 0)
                log_info("graceful stop: sessions not yet handed off close instead");
            w->retiring = 0;
            for (s = w->sessions; s != NULL; s = s->next) /* some waited for a handoff */
                session_drain(s);
        }
        return;
    }
    if (w->stopping && w->retiring) {
        if (w->nsessions > 0)
            log_info("fast stop: sessions not yet handed off close instead");
        w->retiring = 0;
    }
    w->stopping = graceful ? 1 : 2;
    if (!w->retiring) /* worker_retire said what it does */
        log_info("%s stop: %zu sessions", graceful ? "graceful" : "fast", w->nsessions);
    handoff_stop_receiving(w);
    transport_stop_accepting(w);
    for (s = w->sessions; s != NULL; s = s->next)
        session_drain(s);
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
    log_info("retiring: handing %zu sessions to the new generation", w->nsessions);
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

    while (w->sessions != NULL) {
        session_t *s = w->sessions;
        session_close(s, "worker exiting");
        session_teardown(s);
    }
    if (w->reap != NULL)
        worker_reap(w);
    if (w->store != NULL)
        store_free(w->store); /* runs the remaining completions */
    if (w->reap != NULL)
        worker_reap(w);
    if (w->accept_pause != NULL)
        event_free(w->accept_pause);
    handoff_worker_free(w);
    for (i = 0; i < w->nlisteners; i++)
        evconnlistener_free(w->listeners[i]);
    free(w->listeners);
    bus_free(w->bus);
    for (i = 0; i < sizeof(w->signals) / sizeof(w->signals[0]); i++)
        if (w->signals[i] != NULL)
            event_free(w->signals[i]);
    if (w->reap != NULL)
        event_free(w->reap);
    if (w->stop_timer != NULL)
        event_free(w->stop_timer);
    if (w->stop_check != NULL)
        event_free(w->stop_check);
    if (w->soft_timer != NULL)
        event_free(w->soft_timer);
    free(w->closing);
    session_msg_unref(w->methods_msg);
    if (w->base != NULL)
        event_base_free(w->base);
    metrics_release(w->metrics, (int)getpid());
    metrics_free(w->own_metrics);
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
    const struct timeval soft_period = {1, 0};
    sigset_t none;
    worker_t w;
    char err[256];
    size_t len, i;
    char *line;
    int status = 1;

    memset(&w, 0, sizeof(w));
    w.index = args->index;
    w.generation = args->generation;
    w.cfg = cfg;
    w.models = models;
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
    w.reap = event_new(w.base, -1, 0, worker_reap_cb, &w);
    w.stop_timer = evtimer_new(w.base, worker_deadline_cb, &w);
    w.stop_check = event_new(w.base, -1, EV_PERSIST, worker_stop_check_cb, &w);
    w.soft_timer = event_new(w.base, -1, EV_PERSIST, worker_soft_cb, &w);
    if (w.reap == NULL || w.stop_timer == NULL || w.stop_check == NULL || w.soft_timer == NULL ||
        event_add(w.soft_timer, &soft_period) < 0)
        goto done;
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
    line = dnode_build_methods(api_method_names, api_method_count, &len);
    if (line == NULL)
        goto done;
    w.methods_msg = session_msg_new(line, len - 1);
    free(line);
    if (w.methods_msg == NULL)
        goto done;
    w.bus = bus_new(&w, args->bus_host, args->generation);
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
    if (transport_start(&w, args->fds, args->nfds) < 0 ||
        handoff_start(&w, args->handoff_fds) < 0)
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
