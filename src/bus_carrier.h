/* bus_carrier: the interface between the bus' core (bus.c: channels, local
 * subscribers, envelopes, delivery) and the carriers that move messages
 * between workers and hosts (bus_relay.c: shared memory on one host;
 * bus_redis.c: Redis pub/sub). Internal to the bus: nothing outside the
 * bus_* files includes it. */
#ifndef DNODED_BUS_CARRIER_H
#define DNODED_BUS_CARRIER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <event2/event.h>

#include "bus.h"
#include "config.h"
#include "metrics.h"

/* Copy the string src into dst[0..dstlen), cut to fit, always
 * NUL-terminated (dstlen > 0): snprintf(dst, dstlen, "%s", src) without
 * the cost of a format, on paths taken for every subscribe. */
static inline void bus_copy(char *dst, size_t dstlen, const char *src)
{
    size_t n = strnlen(src, dstlen - 1);

    memmove(dst, src, n);
    dst[n] = '\0';
}

struct bus_pending; /* bus_redis.c: a command held behind a channel's SUBSCRIBE */

/* Where a local subscriber stands on its channel (parallel to subs). */
enum {
    BUS_SUB_LIVE,      /* takes every push past pos */
    BUS_SUB_POSITION,  /* takes pushes; waits for the channel's position to answer */
    BUS_SUB_RECOVERING /* replaying history from pos; live pushes wait in the history */
};
typedef struct bus_sub {
    uint64_t pos;   /* the last offset this subscriber was given (0: none yet) */
    int64_t token;  /* the subscribe call to answer (bus_hooks_t.on_joined), or -1 */
    uint8_t state;  /* BUS_SUB_* */
    uint8_t known;  /* pos belongs to the channel's current epoch */
    uint8_t since;  /* it asked to recover (answer with recovered) */
    uint8_t detail; /* passed back to on_joined */
} bus_sub_t;

#define BUS_EPOCH_MAX 40
#define BUS_FROM_POSITION UINT64_MAX /* a fetch that asks only for the position */

/* One change from a channel's history (bus_core_fetched). */
typedef struct bus_entry {
    uint64_t offset;
    const char *payload; /* the envelope as published */
    size_t len;
} bus_entry_t;

/* A channel this worker has local subscribers on (or is leaving). */
struct bus_channel {
    char *name;
    uint64_t hash;    /* bus_core_hash(name), kept: the carriers key on it too */
    session_t **subs; /* local subscribers, each once, in join order */
    bus_sub_t *st;    /* where each of them stands, parallel to subs */
    size_t nsubs, capsubs;
    /* The channel's position as this worker has delivered it: its epoch
     * (empty until known) and last offset. While a catch-up fetch is out
     * (fetching), live changes are not delivered: they come back in the
     * fetch, or the next one (live_max: the highest seen meanwhile). */
    char epoch[BUS_EPOCH_MAX];
    uint64_t last, live_max;
    int known, fetching, positioning;
    /* The carrier's per-channel state (Redis: where the subscription
     * stands, and the commands held until it is confirmed). */
    int cstate;
    struct bus_pending *pending;
    size_t npending, cappending;
    struct bus_channel *next; /* hash chain */
};
typedef struct bus_channel bus_channel_t;

/* What differs between carriers. The core calls these; a carrier reaches
 * back only through the bus_core_* functions below. */
typedef struct bus_carrier {
    const char *kind; /* "relay" or "redis" */
    /* Put payload (an envelope, len bytes) on channel name in the carrier's
     * single order. c is the channel when this worker has it (NULL
     * otherwise). from: the session that publishes (Redis counts it in
     * from->unconfirmed until confirmed), or NULL. marker: a handoff
     * marker rather than a change. 0, or -1 when it could not be sent. */
    int (*publish)(bus_t *b, const char *name, bus_channel_t *c, const char *payload, size_t len,
                   session_t *from, int marker);
    /* A local session joined (delta +1) or left (-1) c: count it
     * deployment-wide and push subscribed/unsubscribed with the total, at
     * its place in c's order. */
    void (*presence)(bus_t *b, bus_channel_t *c, int delta);
    /* A session's count on c moves from worker from (a bus_id, "" for
     * none) to this one, silently (handoff). */
    void (*move)(bus_t *b, bus_channel_t *c, const char *from);
    /* c has a local subscriber: make sure this worker receives it. */
    void (*joined)(bus_t *b, bus_channel_t *c);
    /* c has no local subscriber left. 1 when the core may drop c now, 0
     * when the carrier drops it later (bus_core_drop). */
    int (*emptied)(bus_t *b, bus_channel_t *c);
    /* Release the carrier's per-channel state (c is being dropped). */
    void (*channel_free)(bus_t *b, bus_channel_t *c);
    /* Whether the carrier can carry messages now. */
    int (*ready)(const bus_t *b);
    /* Whether this is a networked carrier that is connected (stats). */
    int (*connected)(const bus_t *b);
    /* This worker's name in the carrier's presence counts. */
    const char *(*id)(const bus_t *b);
    /* bus_revoked, or NULL for a carrier without a revocation store. */
    int (*revoked)(bus_t *b, const char *jti, const char *sub, int64_t iat,
                   void (*cb)(void *arg, int revoked), void *arg);
    /* Fetch channel c's epoch, last offset and the changes from offset
     * from on (from BUS_FROM_POSITION: none), in the channel's order with
     * everything published after the call: the first of them, at most max
     * and no more payload bytes than max_bytes (but always the first),
     * with no gap; none when the one at from is no longer in the history.
     * A batch that stops short of the last offset says only that there is
     * more to fetch. The carrier answers through bus_core_fetched(b, ctx,
     * ...), now or later, exactly once (also on failure). */
    int (*fetch)(bus_t *b, bus_channel_t *c, uint64_t from, size_t max, size_t max_bytes,
                 void *ctx);
    /* c's epoch (into epoch, epochlen bytes) and last offset when the
     * carrier knows them at once, without a fetch: 1, else 0. May be
     * NULL. */
    int (*position)(bus_t *b, const bus_channel_t *c, char *epoch, size_t epochlen, uint64_t *last);
    /* Stop and release the carrier (the core then drops its channels). */
    void (*free)(bus_t *b);
} bus_carrier_t;

struct bus {
    struct event_base *base;
    const config_t *cfg;
    metrics_slot_t *stats; /* this worker's /metrics slot, or NULL */
    bus_channel_t **table;
    size_t nbuckets, nchannels;
    char origin[96];   /* "<host>:<pid>", the worker's id in envelopes */
    char carrier[320]; /* names the carrier: "relay", or Redis' address, db and prefix */
    bus_stats_t st;
    uint64_t failed_in_outage; /* publishes failed since the carrier was last up */
    int freeing;
    bus_hooks_t hooks;
    const bus_carrier_t *ops;
    void *cs; /* the carrier's state */
};

/* Bump a bus_stats_t field and its twin in the worker's /metrics slot. */
#define BUS_COUNT(b, field)                                                                        \
    do {                                                                                           \
        (b)->st.field++;                                                                           \
        if ((b)->stats != NULL)                                                                    \
            (b)->stats->bus_##field++;                                                             \
    } while (0)

/* The core, for the carriers. */
uint64_t bus_core_hash(const char *s);
double bus_core_now(void);
/* The channel named name (len bytes, not necessarily terminated), made
 * when create is set. NULL when absent or out of memory. */
bus_channel_t *bus_core_find(bus_t *b, const char *name, size_t len, int create);
void bus_core_drop(bus_t *b, bus_channel_t *c);
/* Deliver a message the carrier read on channel name to the local
 * subscribers, in the order the carrier gives. epoch and offset are its
 * place in the channel's history (NULL/0: read from the envelope's "e"
 * and "s", if any). */
void bus_core_deliver(bus_t *b, const char *name, size_t namelen, const char *payload, size_t len,
                      const char *epoch, uint64_t offset);
/* The answer to a fetch (bus_carrier_t.fetch): ok 0 when the carrier could
 * not answer (epoch, last and entries are then unset). */
void bus_core_fetched(bus_t *b, void *ctx, int ok, const char *epoch, uint64_t last,
                      const bus_entry_t *entries, size_t n);
/* Redis came back: changes published meanwhile on c were not delivered;
 * fetch them (or tell its subscribers they are lost). */
void bus_core_catch_up(bus_t *b, bus_channel_t *c);
/* A fresh epoch name for a channel whose history is gone. */
void bus_core_new_epoch(char *out, size_t outlen);
/* A presence envelope (subscribed/unsubscribed with online), malloc'd,
 * its length in *len. NULL on allocation failure. */
char *bus_core_presence_envelope(bus_t *b, const char *method, int64_t online, size_t *len);
/* A publish made on behalf of s is settled (confirmed or lost). */
void bus_core_publish_settled(session_t *s);

/* The carriers' constructors: set b->ops and b->cs and b->carrier. 0 or
 * -1 (logged). */
int bus_relay_init(bus_t *b, bus_host_t *host, int index, unsigned generation);
int bus_redis_init(bus_t *b);

#endif
