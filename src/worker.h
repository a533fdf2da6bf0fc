/* worker: one worker process's context and event loop, where the layers
 * are wired together. Owns the event base, the connections' environment
 * (conn) and the sessions' (session), the accepting (transport), the store,
 * the bus, the API and the handoff channel, and decides what the lower
 * layers leave open: what a new DNode stream becomes, what an idle session
 * does while the worker stops or retires, and the teardown order. Handles
 * the worker's signals (via libevent, so handlers may do real work).
 * Everything is created after fork. */
#ifndef DNODED_WORKER_H
#define DNODED_WORKER_H

#include <event2/event.h>
#include <event2/listener.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "api.h"
#include "config.h"
#include "conn.h"
#include "model.h"
#include "session.h"
#include "tls.h"

struct store;
struct bus;
struct bus_host;
struct handoff_chan;
struct transport;

struct metrics;
struct metrics_slot;

typedef struct worker {
    int index;                  /* 0-based worker number */
    unsigned generation;        /* 1 at start, +1 per successful reload */
    struct event_base *base;
    const config_t *cfg;        /* owned by the caller of worker_run */
    const model_set_t *models;  /* owned by the caller of worker_run */
    const auth_t *auth;         /* likewise; NULL: no tokens */
    const tls_t *tls;           /* likewise; NULL or no context: no TLS listeners */
    struct store *store;        /* NULL when the database is not configured */
    struct bus *bus;
    api_t api;                  /* the methods' context */
    conn_env_t conns;           /* every connection */
    session_env_t sessions;     /* what sessions are given */
    struct transport *transport; /* accepting */
    struct event *signals[6];
    struct event *stop_timer;   /* shutdown deadline */
    struct event *stop_check;   /* polls for idle connections while stopping */
    struct event *auth_tick;    /* api_sweep once a second, when tokens are in use */
    int stopping;               /* 0, or 1 graceful, 2 fast */
    int retiring;               /* stopping for a reload: idle sessions are handed off */
    struct handoff_chan *handoff; /* the channel between generations, or NULL */
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
    const auth_t *auth;        /* token keys (auth_load), or NULL: no tokens */
    const tls_t *tls;          /* the TLS context (tls_load), or NULL: none */
    const int *fds;            /* the master's listening sockets, shared */
    size_t nfds;
    size_t ntls;               /* the last ntls of fds are TLS listeners */
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

/* Wire w's layers together: the connections' environment (with its
 * upward hooks), the sessions' (greeting, dispatch to the API, idle and
 * teardown policy) and the API's context, from w->base, cfg, models,
 * stats, metrics, store and bus. worker_run calls it; the fuzz targets
 * use it to run connections over socket pairs. 0 or -1. */
int worker_wire(worker_t *w);

/* Stop: graceful (finish in-flight work, then close) or fast. */
void worker_stop(worker_t *w, int graceful);
/* Stop for a reload (SIGUSR2 from the master): like a graceful stop, but
 * each session is handed to the new generation at its first idle moment
 * instead of closed (handoff.h). Without a channel, a graceful stop. A
 * later QUIT or TERM makes it a plain stop. */
void worker_retire(worker_t *w);

#endif
