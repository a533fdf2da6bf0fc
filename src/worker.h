/* worker: one worker process's context and event loop. Owns the event
 * base, the listeners on the inherited sockets, the session list, the
 * store and the bus, and the worker's signal handling (via libevent, so
 * handlers may do real work). Everything is created after fork. */
#ifndef DNODED_WORKER_H
#define DNODED_WORKER_H

#include <event2/event.h>
#include <event2/listener.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "model.h"
#include "session.h"

struct store;
struct bus;

typedef struct worker_stats {
    uint64_t sessions_opened, sessions_closed;
    uint64_t messages_in, messages_out;
    uint64_t malformed, unknown_methods, oversized;
    uint64_t slow_consumers;
    uint64_t refused;
} worker_stats_t;

typedef struct worker {
    int index;                  /* 0-based worker number */
    struct event_base *base;
    const config_t *cfg;        /* owned by the caller of worker_run */
    const model_set_t *models;  /* owned by the caller of worker_run */
    struct store *store;        /* NULL when the database is not configured */
    struct bus *bus;
    struct evconnlistener **listeners;
    size_t nlisteners;
    session_t *sessions;        /* doubly linked list of live sessions */
    size_t nsessions;
    uint64_t next_session_id;
    session_t **closing;        /* sessions waiting for teardown */
    size_t nclosing, capclosing;
    struct event *reap;         /* runs the teardown pass */
    struct event *signals[5];
    struct event *stop_timer;   /* shutdown deadline */
    struct event *stop_check;   /* polls for idle sessions while stopping */
    int stopping;               /* 0, or 1 graceful, 2 fast */
    session_msg_t *methods_msg; /* our methods message, built once */
    worker_stats_t stats;
} worker_t;

/* Run a worker on the listening sockets fds until it is told to stop.
 * Returns the process exit status: 0 after a stop, 2 for a fatal
 * configuration error (the master does not respawn it), 1 otherwise. */
int worker_run(int index, const config_t *cfg, const model_set_t *models, const int *fds,
               size_t nfds);

/* Queue a closing session for teardown at the next safe point. */
void worker_schedule_teardown(worker_t *w, session_t *s);
/* Stop: graceful (finish in-flight work, then close) or fast. */
void worker_stop(worker_t *w, int graceful);

#endif
