/* metrics: counters kept in one shared memory region (one slot per worker),
 * so that /metrics answered by any worker sums every worker of the host, and
 * their rendering in the Prometheus text format. Does not decide what is
 * counted when (its callers do) and does no I/O besides the rendering. */
#ifndef DNODED_METRICS_H
#define DNODED_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct evbuffer;

/* errors[] is indexed by error_code_t (top-level names), then one for
 * anything else. */
#define METRICS_ERR_OTHER ERROR_TOP_COUNT
#define METRICS_ERR_COUNT (ERROR_TOP_COUNT + 1)

/* Why a DNode session ended (conn.h's close reasons take these values). */
enum {
    METRICS_DISC_CLIENT,    /* the client closed or reset the connection */
    METRICS_DISC_PROTOCOL,  /* framing violation (WebSocket protocol, bad UTF-8) */
    METRICS_DISC_OVERSIZED, /* a message over max_message_size */
    METRICS_DISC_SLOW,      /* output over max_output_buffer */
    METRICS_DISC_SLOW_SOFT, /* output over output_soft_limit for output_soft_seconds */
    METRICS_DISC_TIMEOUT,
    METRICS_DISC_SHUTDOWN, /* stop, reload, drain */
    METRICS_DISC_OTHER,
    METRICS_DISC_COUNT
};

enum { METRICS_TRANSPORT_TCP, METRICS_TRANSPORT_WEBSOCKET, METRICS_TRANSPORT_COUNT };

/* Latency buckets (upper bounds in seconds) shared by every histogram. */
#define METRICS_BUCKETS 12

typedef struct metrics_hist {
    uint64_t le[METRICS_BUCKETS + 1]; /* non-cumulative; the last one is +Inf */
    uint64_t count;
    uint64_t sum_us;
} metrics_hist_t;

/* One worker's counters. Only that worker writes its slot (from its loop
 * thread); any worker reads all of them. The plain fields are bumped with
 * ++ by their owners (session, transport); the rest through the functions
 * below. */
typedef struct metrics_slot {
    int32_t owner;                                   /* pid of the worker using it, or 0 */
    uint64_t connections_opened, connections_closed; /* every accepted socket */
    uint32_t accepting;                              /* 1 while its listeners are on */
    uint64_t refused;                                /* max_connections, stopping */
    uint64_t messages_in, messages_out;              /* DNode messages */
    uint64_t malformed, unknown_methods, oversized;  /* messages refused */
    uint64_t slow_consumers;                         /* either slow-consumer limit */
    uint64_t tls_handshakes, tls_handshakes_failed;  /* on TLS listeners */
    int64_t sessions[METRICS_TRANSPORT_COUNT];       /* gauge: DNode sessions open */
    uint64_t sessions_opened[METRICS_TRANSPORT_COUNT];
    uint64_t sessions_closed[METRICS_TRANSPORT_COUNT];
    uint64_t errors[METRICS_ERR_COUNT];
    uint64_t disconnects[METRICS_DISC_COUNT];
    uint64_t http_requests[6];                  /* by status class: [2] = 2xx */
    uint64_t bus_published, bus_publish_failed; /* changes handed to the bus, or not */
    uint64_t bus_lost;                          /* relay entries overwritten unread */
    uint64_t bus_reconnects;                    /* Redis connections re-established */
    uint64_t bus_recovered, bus_not_recovered;  /* subscribers sent what they missed, or not */
    uint64_t bus_catch_ups;                     /* a worker fetching changes it missed */
    metrics_hist_t db;                          /* request to DB completion */
    metrics_hist_t bus;                         /* handing a change to the bus */
} metrics_slot_t;

typedef struct metrics metrics_t;

/* Connections open on the workers whose slots say they are accepting, and
 * how many such workers there are (for spreading connections, transport). */
void metrics_accepting_load(const metrics_t *m, uint64_t *connections, unsigned *workers);

/* Map a zeroed MAP_SHARED|MAP_ANONYMOUS region with nslots slots. The
 * master calls it once BEFORE forking any worker, so that every worker
 * shares it, and keeps it across reloads (counters keep growing, as
 * Prometheus expects). nslots must cover every worker alive at once: old
 * and new generations during a reload, and respawns (e.g. 4 x workers).
 * NULL on failure (errno set). */
metrics_t *metrics_new(size_t nslots);
/* Unmap (the master at exit, after its workers are gone). */
void metrics_free(metrics_t *m);

/* A worker takes a slot for itself (pid = getpid()) when it starts: a free
 * one, else one whose owner no longer exists. Counters left by an earlier
 * owner stay (they are summed anyway); gauges start at 0. NULL when every
 * slot belongs to a live process. */
metrics_slot_t *metrics_claim(metrics_t *m, int pid);
/* Free pid's slot and zero its gauges: the worker at exit, and the master
 * when it reaps a worker (so a crashed one stops counting as online). */
void metrics_release(metrics_t *m, int pid);

/* Monotonic clock in microseconds, for latencies. */
uint64_t metrics_now_us(void);

void metrics_observe(metrics_hist_t *h, uint64_t elapsed_us);
/* Count an error by its code (error_code_of; -1 counts as "other"). */
void metrics_error(metrics_slot_t *s, int code);
/* Count a DNode session's disconnect by class (METRICS_DISC_*, which
 * conn_close_t's values are); anything else is not counted. */
void metrics_disconnect(metrics_slot_t *s, int klass);
void metrics_session_opened(metrics_slot_t *s, int transport);
void metrics_session_closed(metrics_slot_t *s, int transport);
void metrics_http_request(metrics_slot_t *s, int status);

/* Append every counter, summed over all slots, to out in the Prometheus
 * text exposition format 0.0.4. 0, or -1 when out could not grow. */
int metrics_render(const metrics_t *m, struct evbuffer *out);

#endif
