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
#include <time.h>

#include "config.h"
#include "model.h"
#include "session.h"

struct store;
struct bus;
struct bus_host;
struct handoff_chan;

struct metrics;
struct metrics_slot;

typedef struct worker {
    int index;                  /* 0-based worker number */
    unsigned generation;        /* 1 at start, +1 per successful reload */
    struct event_base *base;
    const config_t *cfg;        /* owned by the caller of worker_run */
    const model_set_t *models;  /* owned by the caller of worker_run */
    struct store *store;        /* NULL when the database is not configured */
    struct bus *bus;
    struct evconnlistener **listeners;
    size_t nlisteners;
    struct event *accept_pause; /* ends a pause taken to spread connections */
    session_t *sessions;        /* doubly linked list of live sessions */
    size_t nsessions;
    uint64_t next_session_id;
    session_t **closing;        /* sessions waiting for teardown */
    size_t nclosing, capclosing;
    struct event *reap;         /* runs the teardown pass */
    struct event *signals[6];
    struct event *stop_timer;   /* shutdown deadline */
    struct event *stop_check;   /* polls for idle sessions while stopping */
    struct event *soft_timer;   /* once a second: the slow-consumer soft rule */
    size_t nover_soft;          /* sessions with over_soft_us set */
    int stopping;               /* 0, or 1 graceful, 2 fast */
    int retiring;               /* stopping for a reload: idle sessions are handed off */
    struct handoff_chan *handoff; /* the channel between generations, or NULL */
    time_t refused_logged_at;   /* last "connection refused" log line */
    uint64_t refused_unlogged;  /* refusals since that line */
    session_msg_t *methods_msg; /* our methods message, built once */
    session_t *corked;          /* session_cork: whose messages cork holds */
    session_msg_t *cork[SESSION_CORK_MAX];
    unsigned ncork;
    struct metrics *metrics;    /* the host's shared counters, for /metrics */
    struct metrics_slot *stats; /* this worker's slot in them (metrics.h) */
    struct metrics *own_metrics; /* private counters when none were handed in */
} worker_t;

/* What the master hands a worker it forked (all owned by the caller). */
typedef struct worker_args {
    int index;                 /* 0-based slot in the master's process table */
    unsigned generation;       /* which reload the worker belongs to */
    const config_t *cfg;
    const model_set_t *models;
    const int *fds;            /* the master's listening sockets, shared */
    size_t nfds;
    struct metrics *metrics;   /* shared-memory counters (metrics_new before any
                                * fork), or NULL: the worker keeps its own */
    struct bus_host *bus_host; /* single-host relay (bus_host_new before any
                                * fork), or NULL: the worker serves alone */
    const int *handoff_fds;    /* the channel between generations (handoff_channel_new
                                * before any fork), or NULL: reload closes sessions */
    /* Called once the worker accepts on every socket (the master counts
     * a reload's new generation as started only then), or NULL. */
    void (*on_ready)(void *arg);
    void *ready_arg;
} worker_args_t;

/* Run a worker on the listening sockets until it is told to stop. The
 * caller may enter with signals blocked (the master's mask after fork):
 * the worker installs its libevent signal events first, then unblocks
 * every signal, so a QUIT sent right after fork is not lost. Returns the
 * process exit status: 0 after a stop, 2 for a fatal configuration error
 * (the master does not respawn it), 1 otherwise. */
int worker_run(const worker_args_t *args);

/* Queue a closing session for teardown at the next safe point. */
void worker_schedule_teardown(worker_t *w, session_t *s);
/* Tear down every queued session now (the loop's reap event runs this;
 * call it only where no caller up the stack still uses those sessions). */
void worker_reap(worker_t *w);
/* Stop: graceful (finish in-flight work, then close) or fast. */
void worker_stop(worker_t *w, int graceful);
/* Stop for a reload (SIGUSR2 from the master): like a graceful stop, but
 * each session is handed to the new generation at its first idle moment
 * instead of closed (handoff.h). Without a channel, a graceful stop. A
 * later QUIT or TERM makes it a plain stop. */
void worker_retire(worker_t *w);

#endif
