/* bus: channels. Keeps each channel's local subscribers, carries published
 * changes between workers and hosts through a carrier (bus_redis.c: Redis
 * pub/sub with redis_url; bus_relay.c: a shared-memory log between the
 * workers of one host) so that every subscriber sees a channel in one
 * order, and pushes presence (subscribed/unsubscribed with the
 * deployment-wide online count). Knows sessions only as subscribers, and
 * nothing of the wire protocol beyond building the pushed calls, nor of
 * the worker or the handoff (which reach it through bus_hooks_t). */
#ifndef DNODED_BUS_H
#define DNODED_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "json.h"
#include "metrics.h"
#include "session.h"

struct event_base;
typedef struct bus bus_t;

/* The single-host relay shared by the workers of one host (no redis_url):
 * a log in shared memory plus one eventfd per worker slot. The master
 * creates it once, before forking any worker, with its `workers` count, and
 * hands the same pointer to every worker it forks (worker_args_t.bus_host);
 * it frees it after the last worker has exited. It has room for two
 * generations of workers at once (a reload overlaps old and new), so a
 * worker's slot is index + (generation % 2) * nworkers; a respawned worker
 * takes over its predecessor's slot. Not reloadable: nworkers stays fixed
 * for the master's lifetime. NULL on failure (logged). */
typedef struct bus_host bus_host_t;
bus_host_t *bus_host_new(unsigned nworkers);
void bus_host_free(bus_host_t *h);

/* Create the worker's bus after fork, on base, with cfg (redis_url picks
 * the carrier, redis_prefix, max_subscriptions) and the worker's metrics
 * slot stats (or NULL). host is the master's relay, or NULL for a process
 * serving alone (the bus then makes a private one); index is the worker's
 * index, generation its reload generation. In Redis mode host is not
 * used. NULL on failure. */
bus_t *bus_new(struct event_base *base, const config_t *cfg, metrics_slot_t *stats, int index,
               bus_host_t *host, unsigned generation);
void bus_free(bus_t *b);

/* What the bus asks of whoever moves sessions between workers (the
 * worker wires these to the handoff). Either may be NULL.
 * may_push: whether s takes a push on channel now (a moving session takes
 *   a channel's pushes from one side of its marker only); 1 to push.
 * on_marker: a marker id was seen on channel, to which s is subscribed. */
typedef struct bus_hooks {
    int (*may_push)(void *arg, const session_t *s, const char *channel);
    void (*on_marker)(void *arg, session_t *s, const char *channel, const char *id);
    void *arg;
    /* What s may see of a push (the api's permissions), in a separate
     * slot: NULL pushes everything as it is. which is the pushed method
     * (a SESSION_REMOTE_* index); for a change, type is the model the
     * publisher named (NULL for a client's publish), doc the document and
     * old the one before (an update). Returns BUS_SKIP, BUS_AS_IS, or
     * BUS_CUSTOM with *custom (taken) pushed as method *which instead. */
    int (*filter)(void *arg, const session_t *s, const char *channel, int *which,
                  const char *type, const json_t *doc, const json_t *old, json_t **custom);
    void *filter_arg;
    /* A revocation reached this worker (Redis mode): kind "jti" (value a
     * token id) or "sub" (tokens of that subject issued before `before`,
     * seconds since the epoch). May be NULL. */
    void (*on_revoke)(void *arg, const char *kind, const char *value, int64_t before);
    /* Answer a subscribe (bus_subscribe_at's token) once the session has
     * its place in the channel: epoch and offset the channel's position
     * (epoch NULL when the carrier could not tell it now), recovered 1 or
     * 0 when the session asked to recover from a position, -1 when it did
     * not; detail as given to bus_subscribe_at. May be NULL. */
    void (*on_joined)(void *arg, session_t *s, const char *channel, int64_t token,
                      const char *epoch, uint64_t offset, int recovered, int detail);
    void *joined_arg;
} bus_hooks_t;
enum { BUS_SKIP, BUS_AS_IS, BUS_CUSTOM };
void bus_set_hooks(bus_t *b, const bus_hooks_t *hooks);

/* Join/leave a channel. Return 0 on success, 1 when nothing changed
 * (already joined / not joined), -1 on error (limit, allocation). In Redis
 * mode the subscription is in effect once the session has been pushed its
 * own subscribed(url, online); a publish from elsewhere before that may
 * not reach it. */
int bus_subscribe(bus_t *b, session_t *s, const char *channel);
/* bus_subscribe, answered through bus_hooks_t.on_joined with token (now or
 * later, once; never after the session left the channel). With since_epoch
 * (not NULL), the session recovers from that position: the changes it
 * missed after since_offset are pushed first, in order, without gaps or
 * duplicates against the live ones, then it is answered recovered 1; when
 * they are not all in the history (another epoch, too old, too many),
 * nothing is replayed and it is answered recovered 0. Returns as
 * bus_subscribe (1: already subscribed, answered at once). detail is
 * passed through to on_joined (whether the caller wants the position). */
int bus_subscribe_at(bus_t *b, session_t *s, const char *channel, const char *since_epoch,
                     uint64_t since_offset, int64_t token, int detail);
int bus_unsubscribe(bus_t *b, session_t *s, const char *channel);
/* Leave every channel (disconnect). */
void bus_leave_all(bus_t *b, session_t *s);

/* The name of a channel a session joined (session_t.subs). */
struct bus_channel;
const char *bus_channel_name(const struct bus_channel *c);

/* Handoff (a session moving between generations on reload, handoff.h).
 * Whether this worker can carry markers now (Redis mode: connected). */
int bus_ready(const bus_t *b);
/* This worker's name in the presence counts, for bus_adopt's from. */
const char *bus_id(const bus_t *b);
/* Names the carrier (the relay, or a Redis and prefix): two workers see
 * each other's markers only when they name the same one (a reload may
 * change redis_url). */
const char *bus_carrier(const bus_t *b);
/* Join s to channel as bus_subscribe does, without a presence push: the
 * session was subscribed on worker from (a bus_id, or "" when it was on
 * another carrier), and its count moves from there to here. max_subscriptions does not apply (the
 * session keeps what it had). Returns as bus_subscribe. */
int bus_adopt(bus_t *b, session_t *s, const char *channel, const char *from);
/* Put marker id on channel, in the channel's single order: the workers
 * of both generations see it at the same place (bus_hooks_t.on_marker),
 * clients never do. 0, or -1 when it could not be sent. */
int bus_marker(bus_t *b, const char *channel, const char *id);

/* Send method(doc, opt) to every subscriber of channel, each exactly once,
 * in the same order for all of them. opt must already be stripped of
 * callbacks. Local subscribers are served from the relay's (or Redis')
 * copy of the message, never directly, so this worker's order is
 * everyone's order. Returns 0 when the message was handed to the relay,
 * -1 when it was not (Redis down, too large, out of memory): logged and
 * counted in publish_failed. Delivery is at most once: a Redis outage
 * loses what was in flight, and a 0 here is not a receipt (a PUBLISH
 * refused later is logged and counted too). */
int bus_publish(bus_t *b, const char *channel, const char *method, const json_t *doc,
                const json_t *opt);

/* bus_publish on behalf of session from: in Redis mode, from counts the
 * publish in from->unconfirmed until Redis has it, so that a session is
 * not moved to another worker (handoff) while its own publishes could
 * still be overtaken by the ones it makes there. */
int bus_publish_from(bus_t *b, session_t *from, const char *channel, const char *method,
                     const json_t *doc, const json_t *opt);

/* bus_publish_from for a change of a model's document: type (the model)
 * and old (the document before an update; NULL otherwise) travel with it,
 * so that every worker can decide per subscriber what it may see
 * (bus_hooks_t.filter). */
int bus_publish_change(bus_t *b, session_t *from, const char *channel, const char *method,
                       const json_t *doc, const json_t *opt, const char *type, const json_t *old);

/* Revocations (Redis mode; see dnoded -r). Whether a token with this jti
 * (may be NULL), subject and issue time is revoked: cb(arg, 1) revoked,
 * cb(arg, 0) not, cb(arg, -1) when Redis could not answer. Returns 0 when
 * cb will be called (later, on the loop), 1 when there is no revocation
 * store (single-host mode: nothing is revoked; cb is not called), -1 when
 * Redis is down now (cb is not called). */
int bus_revoked(bus_t *b, const char *jti, const char *sub, int64_t iat,
                void (*cb)(void *arg, int revoked), void *arg);

/* dnoded -r: record a revocation in the Redis of cfg (kind "jti" or
 * "sub"; a sub revocation covers tokens issued up to now) for
 * auth_revocation_ttl seconds and tell every worker of every host, which
 * close the sessions it covers. Blocking; for the command line. 0, or -1
 * with err. */
int bus_redis_revoke(const config_t *cfg, const char *kind, const char *value, char *err,
                     size_t errlen);
/* dnoded -t: connect to the Redis of cfg and authenticate as the workers
 * will. 0 (also when redis_url is empty); -1 with err when Redis refused
 * the credentials or the database; -2 with err when it cannot be reached
 * now (not an error of the configuration). Blocking. */
int bus_redis_check(const config_t *cfg, char *err, size_t errlen);

/* Sessions subscribed to channel on this worker. */
size_t bus_online(bus_t *b, const char *channel);

typedef struct bus_stats {
    uint64_t published;      /* handed to Redis or the relay */
    uint64_t publish_failed; /* refused or lost before Redis confirmed it */
    uint64_t received;       /* messages taken from Redis or the relay */
    uint64_t pushed;         /* pushes queued to local sessions */
    uint64_t lost;           /* relay entries overwritten before this worker read them */
    uint64_t reconnects;     /* Redis connections re-established */
    uint64_t recovered;      /* subscribers sent all they missed */
    uint64_t not_recovered;  /* subscribers told recovered: false */
    uint64_t catch_ups;      /* channel fetches of changes this worker missed */
    int redis_up;            /* 1 while both Redis connections work */
} bus_stats_t;
void bus_get_stats(const bus_t *b, bus_stats_t *out);

#endif
