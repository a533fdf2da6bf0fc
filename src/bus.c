/* bus: channels, their local subscribers and the way messages travel
 * between workers and hosts (see bus.h). Two carriers: Redis pub/sub
 * (redis_url set) and, without Redis, a shared-memory log written by every
 * worker of the host and read by each. Either way a worker serves its local
 * subscribers only from the carrier's copy, so there is one order per
 * channel. HACKING.md ("The bus") explains the design and its limits. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bus.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "handoff.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

/* ------------------------------------------------------------------------
 * Tunables
 * ------------------------------------------------------------------------ */

#define BUS_BUCKETS 1024
#define BUS_ENVELOPE_VERSION 1

/* Single-host relay. The log holds the last HOST_RING_BYTES of messages; a
 * worker stalled for longer than that loses the oldest (counted). */
#define HOST_RING_BYTES ((uint64_t)16 << 20)
#define HOST_MAX_ENTRY (HOST_RING_BYTES / 4)
#define HOST_SLOTS 65536 /* channels with presence counts on one host */
#define HOST_MAX_WORKERS 1024

/* Redis. A crashed worker's presence counts vanish within
 * REDIS_HEARTBEAT_TTL + REDIS_REAP_EVERY seconds (12 s; documented as 15). */
#define REDIS_TICK_MS 500
#define REDIS_PROBE_EVERY 1.0   /* seconds between liveness probes */
#define REDIS_PROBE_TIMEOUT 3.0 /* no echo for this long: drop and reconnect */
#define REDIS_CONNECT_TIMEOUT 3.0
#define REDIS_HEARTBEAT_EVERY 2.0
#define REDIS_HEARTBEAT_TTL 10
#define REDIS_REAP_EVERY 2.0
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 5000

/* ------------------------------------------------------------------------
 * Types
 * ------------------------------------------------------------------------ */

/* Where a channel's Redis subscription stands on this worker. */
enum { R_NONE, R_SUBSCRIBING, R_SUBSCRIBED, R_UNSUBSCRIBING };

/* What a command on the Redis command connection was for (reply privdata). */
enum { K_PUBLISH = 1, K_PRESENCE, K_HEARTBEAT, K_REAP, K_SYNC, K_PROBE, K_SELECT, K_MARKER };

/* A command held until the channel's SUBSCRIBE is confirmed, so that this
 * worker's own subscribers get their echo. */
typedef struct bus_pending {
    char *cmd;
    size_t len;
    int kind;
    session_t *from; /* a publish on behalf of this session (referenced), or NULL */
} bus_pending_t;

typedef struct bus_channel {
    char *name;
    session_t **subs; /* local subscribers, each once, in join order */
    size_t nsubs, capsubs;
    int rstate;
    bus_pending_t *pending;
    size_t npending, cappending;
    struct bus_channel *next; /* hash chain */
} bus_channel_t;

/* One presence slot of the host relay: a channel (by 64-bit hash) and the
 * number of its subscribers on each worker. */
typedef struct host_slot {
    uint64_t key; /* 0 = never used */
    int32_t count[];
} host_slot_t;

/* Lives in a MAP_SHARED mapping made before fork; fields after `lock` are
 * read and written by every worker. head and tail are absolute byte
 * offsets into the log, accessed with __atomic builtins. */
struct bus_host {
    size_t map_len;
    unsigned nworkers; /* per generation; there are 2 * nworkers slots */
    unsigned nslots;
    size_t slot_size;
    unsigned char *slots; /* HOST_SLOTS * slot_size */
    unsigned char *ring;  /* HOST_RING_BYTES */
    int efd[HOST_MAX_WORKERS];
    /* 1 once a worker slot was woken and has not yet begun to drain since:
     * further appends need not write its eventfd again. A slot nobody
     * serves stays at 1, so a dead or unused slot costs one write. */
    uint32_t woken[HOST_MAX_WORKERS];
    pthread_mutex_t lock; /* process-shared, robust: serializes appends */
    uint64_t head, tail;
    int slots_full_logged;
};

/* Header of a log entry; the channel name and the payload follow, and the
 * entry is padded to 8 bytes. */
typedef struct host_entry {
    uint64_t start; /* its own absolute offset, to detect being overwritten */
    uint32_t chanlen;
    uint32_t len;
} host_entry_t;

struct bus {
    worker_t *worker;
    bus_channel_t **table;
    size_t nbuckets, nchannels;
    char origin[96]; /* "<host>:<pid>", the worker's id in envelopes and Redis */
    char slot_id[16]; /* the relay slot, the worker's id in the host's presence table */
    char carrier[320]; /* which carrier: "relay", or the Redis address, db and prefix */
    bus_stats_t st;
    int freeing;

    /* single-host relay */
    bus_host_t *host;
    int own_host;
    unsigned index;
    struct event *host_ev;
    uint64_t cursor;
    char *rbuf;
    size_t rcap;

    /* Redis */
    int redis;
    char *rhost;
    int rport, rdb;
    const char *prefix;
    char *ctl; /* this worker's control channel (probes) */
    size_t ctllen;
    redisAsyncContext *sub, *cmd;
    int sub_ok, cmd_ok, up;
    struct event *tick, *retry;
    unsigned backoff_ms;
    unsigned seed;
    double attempt_at, probe_at, heartbeat_at, reap_at, down_at, sub_seen, last_tick;
    int probe_out, probe_cmd_ok, probe_sub_ok, ever_up, need_sync;
    const char *broken; /* a failure seen inside a hiredis callback: the tick drops */
    uint64_t failed_in_outage;
};

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* Bump a bus_stats_t field and its twin in the worker's /metrics slot. */
#define BUS_COUNT(b, field)                                                                        \
    do {                                                                                           \
        (b)->st.field++;                                                                           \
        if ((b)->worker->stats != NULL)                                                            \
            (b)->worker->stats->bus_##field++;                                                     \
    } while (0)

static uint64_t bus_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

static double bus_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bus_which(const char *method)
{
    static const char *const names[] = {"created", "updated", "deleted", "subscribed",
                                        "unsubscribed"};
    static const int which[] = {SESSION_REMOTE_CREATED, SESSION_REMOTE_UPDATED,
                                SESSION_REMOTE_DELETED, SESSION_REMOTE_SUBSCRIBED,
                                SESSION_REMOTE_UNSUBSCRIBED};
    size_t i;

    for (i = 0; method != NULL && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(method, names[i]) == 0)
            return which[i];
    return -1;
}

/* ------------------------------------------------------------------------
 * Channel table
 * ------------------------------------------------------------------------ */

static bus_channel_t *bus_find(bus_t *b, const char *name, size_t len, int create)
{
    size_t h;
    bus_channel_t *c;
    char *key = NULL;

    if (name[len] != '\0') { /* names from Redis replies are not terminated */
        key = strndup(name, len);
        if (key == NULL)
            return NULL;
        name = key;
    }
    h = bus_hash(name) % b->nbuckets;
    for (c = b->table[h]; c != NULL; c = c->next)
        if (strcmp(c->name, name) == 0)
            break;
    if (c == NULL && create && strlen(name) == len) {
        c = calloc(1, sizeof(*c));
        if (c != NULL && (c->name = strdup(name)) == NULL) {
            free(c);
            c = NULL;
        }
        if (c != NULL) {
            c->next = b->table[h];
            b->table[h] = c;
            b->nchannels++;
        }
    }
    free(key);
    return c;
}

/* A publish made on behalf of s is settled (confirmed or lost): drop the
 * reference its command held. */
static void bus_publish_settled(session_t *s)
{
    if (s != NULL) {
        session_publish_done(s);
        session_unref(s);
    }
}

static void bus_pending_clear(bus_t *b, bus_channel_t *c)
{
    size_t i;

    for (i = 0; i < c->npending; i++) {
        if (c->pending[i].kind == K_PUBLISH) {
            BUS_COUNT(b, publish_failed);
            b->failed_in_outage++;
        }
        free(c->pending[i].cmd);
        bus_publish_settled(c->pending[i].from);
    }
    c->npending = 0;
}

static void bus_drop_channel(bus_t *b, bus_channel_t *c)
{
    size_t h = bus_hash(c->name) % b->nbuckets;
    bus_channel_t **pp;

    for (pp = &b->table[h]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            b->nchannels--;
            bus_pending_clear(b, c);
            free(c->pending);
            free(c->name);
            free(c->subs);
            free(c);
            return;
        }
    }
}

/* ------------------------------------------------------------------------
 * Envelopes and local delivery
 *
 * Every message on either carrier is one JSON object:
 *   {"v":1,"m":"created","d":doc,"o":opt,"origin":"host:pid"}
 *   {"v":1,"m":"subscribed","n":online,"origin":"host:pid"}
 *   {"v":1,"m":"marker","k":id,"origin":"host:pid"}   (handoff; never pushed)
 * A reader ignores versions it does not know (logged at debug), and
 * methods it does not know (so older releases skip markers).
 * ------------------------------------------------------------------------ */

static char *bus_envelope(bus_t *b, const char *method, int change, const json_t *doc,
                          const json_t *opt, int64_t online, size_t *len)
{
    static const char head[] = "{\"v\":1,\"m\":";
    json_buf_t jb = {NULL, 0, 0};
    char num[32];
    int rc;

    /* Written straight into one buffer: no copy of doc and opt into a tree. */
    rc = json_buf_append(&jb, head, sizeof(head) - 1);
    rc = rc < 0 ? rc : json_dump_string(&jb, method, strlen(method));
    if (change) {
        static const json_t null_doc = {.type = JSON_NULL};
        static const json_t empty_opt = {.type = JSON_OBJECT};
        rc = rc < 0 ? rc : json_buf_append(&jb, ",\"d\":", 5);
        rc = rc < 0 ? rc : json_dump_append(&jb, doc != NULL ? doc : &null_doc);
        rc = rc < 0 ? rc : json_buf_append(&jb, ",\"o\":", 5);
        rc = rc < 0 ? rc : json_dump_append(&jb, opt != NULL ? opt : &empty_opt);
    } else {
        int n = snprintf(num, sizeof(num), ",\"n\":%lld", (long long)online);
        rc = rc < 0 ? rc : json_buf_append(&jb, num, (size_t)n);
    }
    rc = rc < 0 ? rc : json_buf_append(&jb, ",\"origin\":", 10);
    rc = rc < 0 ? rc : json_dump_string(&jb, b->origin, strlen(b->origin));
    rc = rc < 0 ? rc : json_buf_append(&jb, "}", 2); /* with a NUL after the brace */
    if (rc < 0) {
        free(jb.data);
        return NULL;
    }
    *len = jb.len - 1;
    return jb.data;
}

/* The method of an envelope we wrote ourselves, read from its fixed
 * prefix without parsing it; -1 when the prefix is not ours. */
static int bus_peek_method(const char *payload, size_t len)
{
    static const char head[] = "{\"v\":1,\"m\":\"";
    const char *name = payload + sizeof(head) - 1, *end;
    char buf[16];

    if (len < sizeof(head) + 1 || memcmp(payload, head, sizeof(head) - 1) != 0)
        return -1;
    end = memchr(name, '"', len - (sizeof(head) - 1));
    if (end == NULL || (size_t)(end - name) >= sizeof(buf))
        return -1;
    memcpy(buf, name, (size_t)(end - name));
    buf[end - name] = '\0';
    return bus_which(buf);
}

static const char bus_marker_head[] = "{\"v\":1,\"m\":\"marker\"";

/* A marker on c: every moving session subscribed to it learns where its
 * pushes change hands. */
static void bus_deliver_marker(bus_t *b, bus_channel_t *c, const char *payload, size_t len)
{
    char err[128];
    json_t *e = json_parse(payload, len, 4, err, sizeof(err));
    const char *id = json_get_string(e, "k");
    size_t i;

    if (id == NULL) {
        log_debug("bus: skipped a malformed marker on '%s'", c->name);
    } else {
        for (i = 0; i < c->nsubs; i++)
            if (c->subs[i]->handoff != NULL)
                handoff_marker(c->subs[i], c->name, id);
    }
    (void)b;
    json_free(e);
}

/* Push one carrier message to the local subscribers of channel name: the
 * call is serialized once and shared by all of them. */
static void bus_deliver(bus_t *b, const char *name, size_t namelen, const char *payload, size_t len)
{
    bus_channel_t *c;
    json_t *e = NULL, *args = NULL, *n;
    const char *m;
    conn_msg_t *msg;
    char err[128];
    int which;
    size_t i;

    b->st.received++;
    c = bus_find(b, name, namelen, 0);
    if (c == NULL || c->nsubs == 0)
        return;
    if (len >= sizeof(bus_marker_head) - 1 &&
        memcmp(payload, bus_marker_head, sizeof(bus_marker_head) - 1) == 0) {
        bus_deliver_marker(b, c, payload, len);
        return;
    }
    /* Most pushes of presence go to clients that do not export the
     * method (plain DNode clients): skip the parse when nobody takes it. */
    which = bus_peek_method(payload, len);
    if (which >= 0) {
        for (i = 0; i < c->nsubs && c->subs[i]->remote[which] < 0; i++)
            ;
        if (i == c->nsubs)
            return;
    }
    e = json_parse(payload, len, JSON_DEFAULT_MAX_DEPTH + 8, err, sizeof(err));
    n = json_object_get(e, "v");
    if (e == NULL || n == NULL || n->type != JSON_NUMBER || n->u.num.d != BUS_ENVELOPE_VERSION) {
        log_debug("bus: skipped a message on '%s' (%s)", c->name,
                  e == NULL ? err : "unknown envelope version");
        goto done;
    }
    m = json_get_string(e, "m");
    which = bus_which(m);
    args = json_array();
    if (which < 0 || args == NULL)
        goto done;
    if (which == SESSION_REMOTE_SUBSCRIBED || which == SESSION_REMOTE_UNSUBSCRIBED) {
        n = json_object_take(e, "n");
        if (json_array_append(args, json_string(c->name)) < 0 ||
            json_array_append(args, n != NULL ? n : json_int(0)) < 0)
            goto done;
    } else {
        json_t *d = json_object_take(e, "d"), *o = json_object_take(e, "o");
        if (json_array_append(args, d != NULL ? d : json_null()) < 0) {
            json_free(o);
            goto done;
        }
        if (json_array_append(args, o != NULL ? o : json_object()) < 0)
            goto done;
    }
    msg = session_msg_call(m, args);
    if (msg == NULL)
        goto done;
    /* session_send_msg may close a session, but closing is deferred, so
     * c->subs does not change under this loop. */
    for (i = 0; i < c->nsubs; i++) {
        session_t *s = c->subs[i];
        if (s->remote[which] >= 0 && (s->handoff == NULL || handoff_may_push(s, c->name)) &&
            session_send_msg(s, msg) == 0)
            b->st.pushed++;
    }
    conn_msg_unref(msg);
done:
    json_free(args);
    json_free(e);
}

/* ------------------------------------------------------------------------
 * Single-host relay
 *
 * Appends are serialized by a robust process-shared mutex (a worker dying
 * inside leaves no half entry: head only moves once the entry is whole).
 * Readers never lock: each keeps a cursor, copies an entry out, then checks
 * that the writers' tail has not passed it meanwhile (seqlock style).
 * ------------------------------------------------------------------------ */

static void ring_put(bus_host_t *h, uint64_t off, const void *src, size_t n)
{
    size_t pos = (size_t)(off % HOST_RING_BYTES);
    size_t first = n < HOST_RING_BYTES - pos ? n : (size_t)(HOST_RING_BYTES - pos);

    memcpy(h->ring + pos, src, first);
    if (n > first)
        memcpy(h->ring, (const char *)src + first, n - first);
}

static void ring_get(const bus_host_t *h, uint64_t off, void *dst, size_t n)
{
    size_t pos = (size_t)(off % HOST_RING_BYTES);
    size_t first = n < HOST_RING_BYTES - pos ? n : (size_t)(HOST_RING_BYTES - pos);

    memcpy(dst, h->ring + pos, first);
    if (n > first)
        memcpy((char *)dst + first, h->ring, n - first);
}

static uint64_t entry_size(uint32_t chanlen, uint32_t len)
{
    return ((uint64_t)sizeof(host_entry_t) + chanlen + len + 7) & ~(uint64_t)7;
}

bus_host_t *bus_host_new(unsigned nworkers)
{
    pthread_mutexattr_t attr;
    size_t slot_size, len;
    bus_host_t *h;
    unsigned i;
    int rc;

    if (nworkers == 0 || nworkers > HOST_MAX_WORKERS / 2) {
        log_error("bus: %u workers is out of range for the single-host relay", nworkers);
        return NULL;
    }
    slot_size = (sizeof(host_slot_t) + 2 * nworkers * sizeof(int32_t) + 7) & ~(size_t)7;
    len = ((sizeof(*h) + 63) & ~(size_t)63) + HOST_SLOTS * slot_size + HOST_RING_BYTES;
    h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED) {
        log_error("bus: mmap() of %zu bytes failed: %s", len, strerror(errno));
        return NULL;
    }
    h->map_len = len;
    h->nworkers = nworkers;
    h->nslots = 2 * nworkers;
    h->slot_size = slot_size;
    h->slots = (unsigned char *)h + ((sizeof(*h) + 63) & ~(size_t)63);
    h->ring = h->slots + HOST_SLOTS * slot_size;
    for (i = 0; i < h->nslots; i++)
        h->efd[i] = -1;
    for (i = 0; i < h->nslots; i++) {
        h->efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (h->efd[i] < 0) {
            log_error("bus: eventfd() failed: %s", strerror(errno));
            goto fail;
        }
    }
    if ((rc = pthread_mutexattr_init(&attr)) != 0)
        goto fail_mutex;
    if ((rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)) != 0 ||
        (rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)) != 0 ||
        (rc = pthread_mutex_init(&h->lock, &attr)) != 0) {
        pthread_mutexattr_destroy(&attr);
        goto fail_mutex;
    }
    pthread_mutexattr_destroy(&attr);
    return h;
fail_mutex:
    log_error("bus: cannot make a process-shared mutex: %s", strerror(rc));
fail:
    for (i = 0; i < h->nslots; i++)
        if (h->efd[i] >= 0)
            close(h->efd[i]);
    munmap(h, len);
    return NULL;
}

void bus_host_free(bus_host_t *h)
{
    unsigned i;

    if (h == NULL)
        return;
    for (i = 0; i < h->nslots; i++)
        if (h->efd[i] >= 0)
            close(h->efd[i]);
    munmap(h, h->map_len);
}

static int host_lock(bus_host_t *h)
{
    int rc = pthread_mutex_lock(&h->lock);

    if (rc == EOWNERDEAD) {
        /* A worker died while appending: its entry never became visible
         * (head had not moved), so the log is consistent as it stands. */
        log_warning("bus: a worker died holding the relay lock; recovered");
        rc = pthread_mutex_consistent(&h->lock);
    }
    if (rc != 0) {
        log_error("bus: relay lock failed: %s", strerror(rc));
        return -1;
    }
    return 0;
}

/* Append one entry; the caller holds the lock. */
static int host_append_locked(bus_host_t *h, const char *chan, size_t chanlen, const char *payload,
                              size_t len)
{
    host_entry_t e;
    uint64_t head = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
    uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
    uint64_t need;

    if (len > HOST_MAX_ENTRY || chanlen > 4096)
        return -1;
    need = entry_size((uint32_t)chanlen, (uint32_t)len);
    if (head + need - tail > HOST_RING_BYTES) {
        while (head + need - tail > HOST_RING_BYTES) {
            host_entry_t old;
            ring_get(h, tail, &old, sizeof(old));
            tail += entry_size(old.chanlen, old.len);
        }
        __atomic_store_n(&h->tail, tail, __ATOMIC_RELEASE);
    }
    /* Readers must see the new tail before any byte of it is overwritten. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    e.start = head;
    e.chanlen = (uint32_t)chanlen;
    e.len = (uint32_t)len;
    ring_put(h, head, &e, sizeof(e));
    ring_put(h, head + sizeof(e), chan, chanlen);
    ring_put(h, head + sizeof(e) + chanlen, payload, len);
    __atomic_store_n(&h->head, head + need, __ATOMIC_RELEASE);
    return 0;
}

/* Wake every other worker of the host that is not already awake for the
 * log: one eventfd write per drain, however many entries are appended
 * meanwhile. The head was stored (release) before this is called; the
 * exchange pairs with the reader's in host_event_cb, so a reader that
 * cleared its flag after our exchange reads a head at least as new. */
static void host_notify(bus_t *b)
{
    uint64_t one = 1;
    unsigned i;

    for (i = 0; i < b->host->nslots; i++) {
        if (i == b->index || __atomic_exchange_n(&b->host->woken[i], 1, __ATOMIC_SEQ_CST))
            continue;
        if (write(b->host->efd[i], &one, sizeof(one)) < 0 && errno != EAGAIN)
            log_debug("bus: cannot wake worker %u: %s", i, strerror(errno));
    }
}

/* Read and deliver every entry up to the current head. */
static void host_drain(bus_t *b)
{
    bus_host_t *h = b->host;

    for (;;) {
        uint64_t head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
        uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
        host_entry_t e;
        size_t need;

        if (b->cursor >= head)
            return;
        if (b->cursor < tail) {
            log_warning("bus: this worker fell behind the relay log: messages lost");
            BUS_COUNT(b, lost);
            b->cursor = tail;
            continue;
        }
        ring_get(h, b->cursor, &e, sizeof(e));
        need = (size_t)e.chanlen + e.len;
        if (e.start != b->cursor || e.len > HOST_MAX_ENTRY || e.chanlen > 4096) {
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (b->cursor >= __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE)) {
                log_error("bus: corrupt relay entry at %" PRIu64 "; skipping to the head",
                          b->cursor);
                BUS_COUNT(b, lost);
                b->cursor = head;
            }
            continue; /* else overwritten: the check above resyncs */
        }
        if (need > b->rcap) {
            char *nb = realloc(b->rbuf, need);
            if (nb == NULL) {
                log_error("bus: out of memory reading the relay log");
                BUS_COUNT(b, lost);
                b->cursor += entry_size(e.chanlen, e.len);
                continue;
            }
            b->rbuf = nb;
            b->rcap = need;
        }
        ring_get(h, b->cursor + sizeof(e), b->rbuf, need);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (b->cursor < __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE))
            continue; /* overwritten while copying */
        b->cursor += entry_size(e.chanlen, e.len);
        bus_deliver(b, b->rbuf, e.chanlen, b->rbuf + e.chanlen, e.len);
    }
}

static void host_event_cb(evutil_socket_t fd, short what, void *arg)
{
    bus_t *b = arg;
    uint64_t n;

    (void)what;
    if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        log_debug("bus: eventfd read failed: %s", strerror(errno));
    /* Clear before reading the head: an append after this wakes us again. */
    __atomic_exchange_n(&b->host->woken[b->index], 0, __ATOMIC_SEQ_CST);
    host_drain(b);
}

static int host_publish(bus_t *b, const char *chan, const char *payload, size_t len)
{
    int rc;

    if (host_lock(b->host) < 0)
        return -1;
    rc = host_append_locked(b->host, chan, strlen(chan), payload, len);
    pthread_mutex_unlock(&b->host->lock);
    if (rc < 0) {
        log_warning("bus: message of %zu bytes on '%s' is too large for the relay", len, chan);
        return -1;
    }
    host_notify(b);
    host_drain(b);
    return 0;
}

/* The presence slot of a channel, created when create is set; NULL when
 * the table is full (then counts are this worker's only). */
static host_slot_t *host_slot(bus_host_t *h, uint64_t key, int create)
{
    size_t i, idx;

    if (key == 0)
        key = 1;
    for (i = 0; i < HOST_SLOTS; i++) {
        host_slot_t *s;
        idx = (size_t)((key + i) % HOST_SLOTS);
        s = (host_slot_t *)(h->slots + idx * h->slot_size);
        if (s->key == key)
            return s;
        if (s->key == 0) {
            if (!create)
                return NULL;
            s->key = key;
            return s;
        }
    }
    return NULL;
}

/* Count a join (+1) or leave (-1) on the host and put the presence message
 * in the log under the same lock, so the count matches its place in order. */
static void host_presence(bus_t *b, bus_channel_t *c, int delta, const char *method)
{
    bus_host_t *h = b->host;
    host_slot_t *slot;
    int64_t total = 0;
    unsigned i;
    char *text;
    size_t len;
    int rc;

    if (host_lock(h) < 0)
        return;
    slot = host_slot(h, bus_hash(c->name), delta > 0);
    if (slot != NULL) {
        slot->count[b->index] += delta;
        if (slot->count[b->index] < 0)
            slot->count[b->index] = 0;
        for (i = 0; i < h->nslots; i++)
            total += slot->count[i];
    } else {
        if (!h->slots_full_logged)
            log_warning("bus: presence table full: online counts are per worker");
        h->slots_full_logged = 1;
        total = (int64_t)c->nsubs;
    }
    text = bus_envelope(b, method, 0, NULL, NULL, total, &len);
    rc = text != NULL ? host_append_locked(h, c->name, strlen(c->name), text, len) : -1;
    pthread_mutex_unlock(&h->lock);
    free(text);
    if (rc < 0)
        return;
    host_notify(b);
    host_drain(b);
}

/* A session's count on c moves from slot `from` (a relay slot number, see
 * bus_id; "" for none) to this worker, without a presence message: nobody
 * joined. */
static void host_move(bus_t *b, bus_channel_t *c, const char *from)
{
    bus_host_t *h = b->host;
    unsigned long idx = from[0] != '\0' ? strtoul(from, NULL, 10) : ULONG_MAX;
    host_slot_t *slot;

    if (host_lock(h) < 0)
        return;
    slot = host_slot(h, bus_hash(c->name), 1);
    if (slot != NULL) {
        if (idx < h->nslots && idx != b->index && slot->count[idx] > 0)
            slot->count[idx]--;
        slot->count[b->index]++;
    }
    pthread_mutex_unlock(&h->lock);
}

/* A (re)started worker forgets what its predecessor at this index counted. */
static void host_forget_worker(bus_t *b)
{
    bus_host_t *h = b->host;
    size_t i;

    if (host_lock(h) < 0)
        return;
    for (i = 0; i < HOST_SLOTS; i++)
        ((host_slot_t *)(h->slots + i * h->slot_size))->count[b->index] = 0;
    /* A predecessor that died leaves its flag set: wake-ups resume now. */
    __atomic_store_n(&h->woken[b->index], 0, __ATOMIC_SEQ_CST);
    b->cursor = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&h->lock);
}

/* ------------------------------------------------------------------------
 * Redis: keys and scripts
 *
 * Under the prefix P:
 *   P c:<url>     pub/sub channel of a url
 *   P w:<wid>     a worker's control channel (its own liveness probes)
 *   P p:<url>     hash: worker id -> subscribers of url on that worker
 *   P wc:<wid>    set: urls the worker counts subscribers on
 *   P workers     set: worker ids with presence entries
 *   P hb:<wid>    heartbeat, expires REDIS_HEARTBEAT_TTL s after the last beat
 * Scripts run atomically, so a presence message carries the count as of its
 * place in the channel's order. Totals count only workers whose heartbeat
 * is alive. (Keys are built inside scripts: single Redis, not Cluster.)
 * ------------------------------------------------------------------------ */

/* ARGV: prefix, wid, url, delta, method, origin. Returns the total. */
static const char bus_lua_presence[] =
    "local p, wid, url = ARGV[1], ARGV[2], ARGV[3]\n"
    "local h = p .. 'p:' .. url\n"
    "local n = redis.call('HINCRBY', h, wid, ARGV[4])\n"
    "if n <= 0 then\n"
    "  redis.call('HDEL', h, wid)\n"
    "  redis.call('SREM', p .. 'wc:' .. wid, url)\n"
    "else\n"
    "  redis.call('SADD', p .. 'wc:' .. wid, url)\n"
    "end\n"
    "redis.call('SADD', p .. 'workers', wid)\n"
    "local total, all = 0, redis.call('HGETALL', h)\n"
    "for i = 1, #all, 2 do\n"
    "  if all[i] == wid or redis.call('EXISTS', p .. 'hb:' .. all[i]) == 1 then\n"
    "    total = total + tonumber(all[i + 1])\n"
    "  end\n"
    "end\n"
    "redis.call('PUBLISH', p .. 'c:' .. url,\n"
    "  cjson.encode({v = 1, m = ARGV[5], n = total, origin = ARGV[6]}))\n"
    "return total\n";

/* Drop the presence entries of workers whose heartbeat expired (ARGV[2]
 * empty), or of worker ARGV[2]. With ARGV[3] = '1' each affected channel is
 * told unsubscribed(url, new total). ARGV: prefix, wid or '', publish. */
static const char bus_lua_drop[] =
    "local p, only, pub = ARGV[1], ARGV[2], ARGV[3] == '1'\n"
    "local dead = {}\n"
    "if only ~= '' then dead = {only} else\n"
    "  for _, w in ipairs(redis.call('SMEMBERS', p .. 'workers')) do\n"
    "    if redis.call('EXISTS', p .. 'hb:' .. w) == 0 then dead[#dead + 1] = w end\n"
    "  end\n"
    "end\n"
    "for _, w in ipairs(dead) do\n"
    "  for _, url in ipairs(redis.call('SMEMBERS', p .. 'wc:' .. w)) do\n"
    "    local h = p .. 'p:' .. url\n"
    "    redis.call('HDEL', h, w)\n"
    "    if pub then\n"
    "      local total, all = 0, redis.call('HGETALL', h)\n"
    "      for i = 1, #all, 2 do\n"
    "        if redis.call('EXISTS', p .. 'hb:' .. all[i]) == 1 then\n"
    "          total = total + tonumber(all[i + 1])\n"
    "        end\n"
    "      end\n"
    "      redis.call('PUBLISH', p .. 'c:' .. url,\n"
    "        cjson.encode({v = 1, m = 'unsubscribed', n = total, origin = w}))\n"
    "    end\n"
    "  end\n"
    "  redis.call('DEL', p .. 'wc:' .. w)\n"
    "  redis.call('SREM', p .. 'workers', w)\n"
    "end\n"
    "return #dead\n";

/* A session's count on url moves from worker ARGV[2] to ARGV[3], without a
 * presence message (handoff). ARGV: prefix, from, wid, url. */
static const char bus_lua_move[] =
    "local p, from, wid, url = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
    "local h = p .. 'p:' .. url\n"
    "if from ~= wid and redis.call('HEXISTS', h, from) == 1 then\n"
    "  if redis.call('HINCRBY', h, from, -1) <= 0 then\n"
    "    redis.call('HDEL', h, from)\n"
    "    redis.call('SREM', p .. 'wc:' .. from, url)\n"
    "  end\n"
    "end\n"
    "redis.call('HINCRBY', h, wid, 1)\n"
    "redis.call('SADD', p .. 'wc:' .. wid, url)\n"
    "redis.call('SADD', p .. 'workers', wid)\n"
    "return 1\n";

/* ARGV: prefix, wid, ttl. Returns 1 when the heartbeat was still there, 0
 * when it had expired or Redis lost it (the caller then re-registers). */
static const char bus_lua_heartbeat[] = "local k = ARGV[1] .. 'hb:' .. ARGV[2]\n"
                                        "local had = redis.call('EXISTS', k)\n"
                                        "redis.call('SET', k, '1', 'EX', ARGV[3])\n"
                                        "redis.call('SADD', ARGV[1] .. 'workers', ARGV[2])\n"
                                        "return had\n";

/* "<prefix><kind><rest>" as a new string. */
static char *bus_key(const bus_t *b, const char *kind, const char *rest, size_t *len)
{
    char *k;
    int n = asprintf(&k, "%s%s%s", b->prefix, kind, rest);

    if (n < 0)
        return NULL;
    if (len != NULL)
        *len = (size_t)n;
    return k;
}

/* ------------------------------------------------------------------------
 * Redis: connections
 * ------------------------------------------------------------------------ */

static void bus_redis_down(bus_t *b, const redisAsyncContext *dying, const char *why);
static void bus_sub_cb(redisAsyncContext *ac, void *r, void *privdata);

static void bus_cmd_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    bus_t *b = ac->data;
    redisReply *reply = r;
    int kind = (int)(intptr_t)privdata;

    if (b == NULL || b->freeing)
        return;
    if (reply == NULL) { /* the connection went away before the answer */
        if (kind == K_PUBLISH) {
            BUS_COUNT(b, publish_failed);
            b->failed_in_outage++;
        }
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        if (kind == K_PUBLISH)
            BUS_COUNT(b, publish_failed);
        log_warning("bus: Redis refused a command (kind %d): %s", kind, reply->str);
        return;
    }
    if (kind == K_PROBE && ac == b->cmd)
        b->probe_cmd_ok = 1;
    if (kind == K_HEARTBEAT && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0 &&
        b->ever_up && !b->need_sync) {
        /* Our heartbeat had gone (a long stall, or Redis lost its data):
         * others may have dropped our counts, so register them again. */
        log_warning("bus: Redis had lost this worker's heartbeat; re-registering presence");
        b->need_sync = 1;
    }
}

/* The reply to a PUBLISH made on behalf of a session (privdata, which the
 * command referenced). */
static void bus_publish_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    bus_cmd_cb(ac, r, (void *)(intptr_t)K_PUBLISH);
    bus_publish_settled(privdata);
}

/* Send a command on the command connection; 0, or -1 when it is down. A
 * publish on behalf of session from keeps a reference to it until Redis
 * answers (from takes over the caller's reference only on success). */
static int bus_command_from(bus_t *b, int kind, const char *cmd, size_t len, session_t *from)
{
    if (b->cmd == NULL || !b->up)
        return -1;
    if (from != NULL)
        return redisAsyncFormattedCommand(b->cmd, bus_publish_cb, from, cmd, len) == REDIS_OK
                   ? 0
                   : -1;
    if (redisAsyncFormattedCommand(b->cmd, bus_cmd_cb, (void *)(intptr_t)kind, cmd, len) !=
        REDIS_OK)
        return -1;
    return 0;
}

static int bus_command(bus_t *b, int kind, const char *cmd, size_t len)
{
    return bus_command_from(b, kind, cmd, len, NULL);
}

/* Send, or hold while the channel's (UN)SUBSCRIBE is in flight, so that
 * this worker's subscribers get the echo of their own presence and of this
 * worker's publishes. Takes cmd, and the reference on from (a publishing
 * session, or NULL) whatever happens. */
static int bus_channel_command_from(bus_t *b, bus_channel_t *c, int kind, char *cmd, size_t len,
                                    session_t *from)
{
    int rc;

    if (c != NULL && (c->rstate == R_SUBSCRIBING || c->rstate == R_UNSUBSCRIBING)) {
        if (c->npending == c->cappending) {
            size_t cap = c->cappending ? c->cappending * 2 : 4;
            bus_pending_t *p = realloc(c->pending, cap * sizeof(*p));
            if (p == NULL) {
                free(cmd);
                bus_publish_settled(from);
                return -1;
            }
            c->pending = p;
            c->cappending = cap;
        }
        c->pending[c->npending].cmd = cmd;
        c->pending[c->npending].len = len;
        c->pending[c->npending].kind = kind;
        c->pending[c->npending].from = from;
        c->npending++;
        return 0;
    }
    rc = bus_command_from(b, kind, cmd, len, from);
    free(cmd);
    if (rc < 0)
        bus_publish_settled(from);
    return rc;
}

static int bus_channel_command(bus_t *b, bus_channel_t *c, int kind, char *cmd, size_t len)
{
    return bus_channel_command_from(b, c, kind, cmd, len, NULL);
}

static void bus_flush_pending(bus_t *b, bus_channel_t *c)
{
    size_t i;

    for (i = 0; i < c->npending; i++) {
        bus_pending_t *p = &c->pending[i];
        if (bus_command_from(b, p->kind, p->cmd, p->len, p->from) < 0) {
            if (p->kind == K_PUBLISH)
                BUS_COUNT(b, publish_failed);
            bus_publish_settled(p->from);
        }
        free(p->cmd);
    }
    c->npending = 0;
}

static int bus_sub_command(bus_t *b, const char *verb, const char *key, size_t keylen)
{
    if (b->sub == NULL)
        return -1;
    return redisAsyncCommand(b->sub, bus_sub_cb, NULL, "%s %b", verb, key, keylen) == REDIS_OK ? 0
                                                                                               : -1;
}

static int bus_channel_subscribe(bus_t *b, bus_channel_t *c, int on)
{
    size_t len;
    char *key = bus_key(b, "c:", c->name, &len);
    int rc;

    if (key == NULL)
        return -1;
    rc = bus_sub_command(b, on ? "SUBSCRIBE" : "UNSUBSCRIBE", key, len);
    free(key);
    if (rc == 0)
        c->rstate = on ? R_SUBSCRIBING : R_UNSUBSCRIBING;
    return rc;
}

static void bus_presence_redis(bus_t *b, bus_channel_t *c, int delta, const char *method)
{
    char *cmd = NULL, d[8];
    int len;

    if (!b->up)
        return; /* re-registered in bulk when Redis is back */
    snprintf(d, sizeof(d), "%d", delta);
    len = redisFormatCommand(&cmd, "EVAL %s 0 %s %s %s %s %s %s", bus_lua_presence, b->prefix,
                             b->origin, c->name, d, method, b->origin);
    if (len < 0 || bus_channel_command(b, c, K_PRESENCE, cmd, (size_t)len) < 0)
        log_warning("bus: cannot send the presence change of '%s' to Redis", c->name);
}

static void bus_eval_simple(bus_t *b, int kind, const char *script, const char *a2, const char *a3)
{
    char *cmd = NULL;
    int len = redisFormatCommand(&cmd, "EVAL %s 0 %s %s %s", script, b->prefix, a2, a3);

    if (len < 0 || bus_command(b, kind, cmd, (size_t)len) < 0)
        log_debug("bus: cannot send a maintenance script (kind %d)", kind);
    free(cmd);
}

/* Register this worker's presence afresh: forget what Redis holds for it,
 * then set the current count of every channel with local subscribers. */
static void bus_sync_presence(bus_t *b)
{
    char ttl[16];
    size_t i;

    b->need_sync = 0;
    snprintf(ttl, sizeof(ttl), "%d", REDIS_HEARTBEAT_TTL);
    bus_eval_simple(b, K_SYNC, bus_lua_drop, b->origin, "0");
    bus_eval_simple(b, K_SYNC, bus_lua_heartbeat, b->origin, ttl);
    b->heartbeat_at = bus_now();
    for (i = 0; i < b->nbuckets; i++) {
        bus_channel_t *c;
        for (c = b->table[i]; c != NULL; c = c->next) {
            char *h, *set, *cmd = NULL, count[24];
            int len;
            if (c->nsubs == 0)
                continue;
            h = bus_key(b, "p:", c->name, NULL);
            set = bus_key(b, "wc:", b->origin, NULL);
            if (h != NULL && set != NULL) {
                snprintf(count, sizeof(count), "%zu", c->nsubs);
                len = redisFormatCommand(&cmd, "HSET %s %s %s", h, b->origin, count);
                if (len >= 0)
                    bus_command(b, K_SYNC, cmd, (size_t)len);
                free(cmd);
                cmd = NULL;
                len = redisFormatCommand(&cmd, "SADD %s %s", set, c->name);
                if (len >= 0)
                    bus_command(b, K_SYNC, cmd, (size_t)len);
                free(cmd);
            }
            free(h);
            free(set);
        }
    }
}

/* Both connections work and the control channel is subscribed. */
static void bus_redis_up(bus_t *b)
{
    size_t i;

    b->up = 1;
    b->backoff_ms = REDIS_BACKOFF_MIN_MS;
    b->probe_out = 0;
    b->probe_at = b->reap_at = bus_now();
    if (b->ever_up) {
        BUS_COUNT(b, reconnects);
        log_info("bus: Redis is back after %.1f s (%" PRIu64
                 " publishes failed meanwhile); resubscribing",
                 bus_now() - b->down_at, b->failed_in_outage);
    } else {
        log_info("bus: connected to Redis at %s:%d", b->rhost, b->rport);
    }
    b->ever_up = 1;
    b->failed_in_outage = 0;
    bus_sync_presence(b);
    for (i = 0; i < b->nbuckets; i++) {
        bus_channel_t *c;
        for (c = b->table[i]; c != NULL; c = c->next)
            if (c->nsubs > 0 && c->rstate == R_NONE && bus_channel_subscribe(b, c, 1) < 0)
                log_warning("bus: cannot resubscribe '%s'", c->name);
    }
}

static void bus_connect_cb(const redisAsyncContext *ac, int status)
{
    bus_t *b = ac->data;

    if (b == NULL || b->freeing || (ac != b->sub && ac != b->cmd))
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this returns. */
        bus_redis_down(b, ac, ac->errstr);
        return;
    }
    redisEnableKeepAlive((redisContext *)&ac->c);
    if (ac == b->sub)
        b->sub_ok = 1;
    else
        b->cmd_ok = 1;
    if (!b->sub_ok || !b->cmd_ok)
        return;
    /* hiredis still uses ac after this callback: failures here are left
     * to the tick, which drops the connections from outside. */
    if (b->rdb != 0 && redisAsyncCommand(b->cmd, bus_cmd_cb, (void *)(intptr_t)K_SELECT,
                                         "SELECT %d", b->rdb) != REDIS_OK) {
        b->broken = "cannot send SELECT";
        return;
    }
    if (bus_sub_command(b, "SUBSCRIBE", b->ctl, b->ctllen) < 0)
        b->broken = "cannot send SUBSCRIBE";
}

static void bus_disconnect_cb(const redisAsyncContext *ac, int status)
{
    bus_t *b = ac->data;

    (void)status;
    if (b == NULL || b->freeing || (ac != b->sub && ac != b->cmd))
        return;
    bus_redis_down(b, ac, ac->errstr[0] ? ac->errstr : "connection closed");
}

static redisAsyncContext *bus_redis_open(bus_t *b)
{
    redisAsyncContext *ac = redisAsyncConnect(b->rhost, b->rport);

    if (ac == NULL)
        return NULL;
    if (ac->err) {
        log_debug("bus: Redis connect: %s", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = b;
    if (redisLibeventAttach(ac, b->worker->base) != REDIS_OK ||
        redisAsyncSetConnectCallback(ac, bus_connect_cb) != REDIS_OK ||
        redisAsyncSetDisconnectCallback(ac, bus_disconnect_cb) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        return NULL;
    }
    return ac;
}

static void bus_redis_connect(bus_t *b)
{
    b->attempt_at = bus_now();
    b->sub_ok = b->cmd_ok = 0;
    b->sub = bus_redis_open(b);
    b->cmd = b->sub != NULL ? bus_redis_open(b) : NULL;
    if (b->sub == NULL || b->cmd == NULL)
        bus_redis_down(b, NULL, "cannot start connecting");
}

static void bus_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    bus_redis_connect(arg);
}

/* Drop both connections (except `dying`, which hiredis is freeing) and
 * schedule the next attempt: backoff doubling from 100 ms to 5 s, +-20 %
 * jitter so that workers and hosts do not reconnect in step. */
static void bus_redis_down(bus_t *b, const redisAsyncContext *dying, const char *why)
{
    redisAsyncContext *sub = b->sub, *cmd = b->cmd;
    struct timeval tv;
    unsigned ms;
    size_t i;

    if (b->freeing || evtimer_pending(b->retry, NULL))
        return;
    b->sub = b->cmd = NULL;
    b->sub_ok = b->cmd_ok = 0;
    b->broken = NULL;
    if (b->up || b->down_at == 0) {
        b->down_at = bus_now();
        log_warning("bus: Redis at %s:%d unavailable (%s): publishes fail until it is back",
                    b->rhost, b->rport, why != NULL ? why : "?");
    } else {
        log_debug("bus: Redis still unavailable (%s)", why != NULL ? why : "?");
    }
    b->up = 0;
    for (i = 0; i < b->nbuckets; i++) {
        bus_channel_t *c = b->table[i], *next;
        for (; c != NULL; c = next) {
            next = c->next;
            bus_pending_clear(b, c);
            c->rstate = R_NONE;
            if (c->nsubs == 0)
                bus_drop_channel(b, c);
        }
    }
    if (sub != NULL && sub != dying)
        redisAsyncFree(sub);
    if (cmd != NULL && cmd != dying)
        redisAsyncFree(cmd);
    ms = b->backoff_ms;
    ms = (unsigned)(ms * (0.8 + 0.4 * ((double)rand_r(&b->seed) / RAND_MAX)));
    b->backoff_ms =
        b->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS : b->backoff_ms * 2;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    if (evtimer_add(b->retry, &tv) < 0)
        log_error("bus: cannot schedule a Redis reconnect");
}

static void bus_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    bus_t *b = arg;
    double now = bus_now();
    int stalled = b->last_tick > 0 && now - b->last_tick > REDIS_PROBE_TIMEOUT / 2;
    char ttl[16];

    (void)fd;
    (void)what;
    b->last_tick = now;
    if (b->broken != NULL) {
        bus_redis_down(b, NULL, b->broken);
        return;
    }
    if (!b->up) {
        if ((b->sub != NULL || b->cmd != NULL) && now - b->attempt_at > REDIS_CONNECT_TIMEOUT)
            bus_redis_down(b, NULL, "connect timed out");
        return;
    }
    if (b->probe_out) {
        /* A busy subscriber connection counts as alive even when the echo
         * is still queued behind messages; the command connection must
         * answer. A late tick means this loop stalled, not Redis. */
        int sub_alive = b->probe_sub_ok || now - b->sub_seen < REDIS_PROBE_TIMEOUT;
        if (b->probe_cmd_ok && b->probe_sub_ok) {
            b->probe_out = 0;
        } else if (stalled) {
            b->probe_at = now;
        } else if (now - b->probe_at > REDIS_PROBE_TIMEOUT && (!b->probe_cmd_ok || !sub_alive)) {
            bus_redis_down(b, NULL, "no answer to the liveness probe (half-open connection?)");
            return;
        }
    }
    if (!b->probe_out && now - b->probe_at >= REDIS_PROBE_EVERY) {
        /* Goes out on the command connection and comes back on the
         * subscriber one: proves both work end to end. */
        if (redisAsyncCommand(b->cmd, bus_cmd_cb, (void *)(intptr_t)K_PROBE, "PUBLISH %b p", b->ctl,
                              b->ctllen) == REDIS_OK) {
            b->probe_out = 1;
            b->probe_cmd_ok = b->probe_sub_ok = 0;
            b->probe_at = now;
        }
    }
    if (b->need_sync) {
        bus_sync_presence(b);
    } else if (now - b->heartbeat_at >= REDIS_HEARTBEAT_EVERY) {
        snprintf(ttl, sizeof(ttl), "%d", REDIS_HEARTBEAT_TTL);
        bus_eval_simple(b, K_HEARTBEAT, bus_lua_heartbeat, b->origin, ttl);
        b->heartbeat_at = now;
    }
    if (now - b->reap_at >= REDIS_REAP_EVERY) {
        bus_eval_simple(b, K_REAP, bus_lua_drop, "", "1");
        b->reap_at = now;
    }
}

/* Every reply of the subscriber connection lands here, whichever way
 * hiredis routes it (per-channel callbacks or the reply queue). */
static void bus_sub_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    bus_t *b = ac->data;
    redisReply *reply = r;
    const char *type, *name;
    size_t namelen, plen;
    bus_channel_t *c;

    (void)privdata;
    if (b == NULL || b->freeing || reply == NULL || ac != b->sub)
        return;
    b->sub_seen = bus_now();
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    type = reply->element[0]->str;
    name = reply->element[1]->str;
    namelen = reply->element[1]->len;
    if (namelen == b->ctllen && memcmp(name, b->ctl, namelen) == 0) {
        if (strcmp(type, "message") == 0)
            b->probe_sub_ok = 1;
        else if (strcmp(type, "subscribe") == 0 && !b->up)
            bus_redis_up(b);
        return;
    }
    plen = strlen(b->prefix) + 2;
    if (namelen < plen || memcmp(name, b->prefix, plen - 2) != 0 ||
        memcmp(name + plen - 2, "c:", 2) != 0)
        return;
    name += plen;
    namelen -= plen;
    if (strcmp(type, "message") == 0) {
        if (reply->element[2]->type == REDIS_REPLY_STRING)
            bus_deliver(b, name, namelen, reply->element[2]->str, reply->element[2]->len);
        return;
    }
    c = bus_find(b, name, namelen, 0);
    if (c == NULL)
        return;
    if (strcmp(type, "subscribe") == 0 && c->rstate == R_SUBSCRIBING) {
        if (c->nsubs > 0) {
            c->rstate = R_SUBSCRIBED;
            bus_flush_pending(b, c);
        } else {
            bus_flush_pending(b, c);
            if (bus_channel_subscribe(b, c, 0) < 0)
                c->rstate = R_NONE;
        }
    } else if (strcmp(type, "unsubscribe") == 0 && c->rstate == R_UNSUBSCRIBING) {
        /* Resubscribing only now keeps one SUBSCRIBE/UNSUBSCRIBE in flight
         * per channel, which hiredis' per-channel callbacks need. */
        if (c->nsubs > 0) {
            if (bus_channel_subscribe(b, c, 1) < 0)
                c->rstate = R_NONE;
        } else {
            bus_flush_pending(b, c);
            c->rstate = R_NONE;
            bus_drop_channel(b, c);
        }
    }
}

/* Parse redis://host[:port][/db]. */
static int bus_parse_url(bus_t *b, const char *url)
{
    const char *p = url + 8, *colon, *slash;
    size_t hostlen;

    if (strncmp(url, "redis://", 8) != 0)
        return -1;
    slash = strchr(p, '/');
    colon = strchr(p, ':');
    if (colon != NULL && slash != NULL && colon > slash)
        colon = NULL;
    hostlen = colon != NULL ? (size_t)(colon - p) : slash != NULL ? (size_t)(slash - p) : strlen(p);
    b->rhost = strndup(hostlen > 0 ? p : "127.0.0.1", hostlen > 0 ? hostlen : 9);
    b->rport = colon != NULL ? atoi(colon + 1) : 6379;
    b->rdb = slash != NULL ? atoi(slash + 1) : 0;
    return b->rhost != NULL && b->rport > 0 && b->rport < 65536 ? 0 : -1;
}

/* Best effort at a clean exit: tell the deployment this worker's
 * subscribers are gone, with a short blocking connection (the event loop
 * has stopped by now). Otherwise the heartbeat bound applies. */
static void bus_redis_goodbye(bus_t *b)
{
    struct timeval tv = {0, 500 * 1000};
    redisContext *c;
    redisReply *r;
    char *hb;

    if (!b->ever_up)
        return;
    c = redisConnectWithTimeout(b->rhost, b->rport, tv);
    if (c == NULL || c->err || redisSetTimeout(c, tv) != REDIS_OK)
        goto done;
    if (b->rdb != 0 && (r = redisCommand(c, "SELECT %d", b->rdb)) != NULL)
        freeReplyObject(r);
    r = redisCommand(c, "EVAL %s 0 %s %s %s", bus_lua_drop, b->prefix, b->origin, "1");
    if (r != NULL)
        freeReplyObject(r);
    hb = bus_key(b, "hb:", b->origin, NULL);
    if (hb != NULL && (r = redisCommand(c, "DEL %s", hb)) != NULL)
        freeReplyObject(r);
    free(hb);
done:
    if (c != NULL)
        redisFree(c);
}

/* ------------------------------------------------------------------------
 * Public API
 * ------------------------------------------------------------------------ */

bus_t *bus_new(worker_t *w, bus_host_t *host, unsigned generation)
{
    bus_t *b = calloc(1, sizeof(*b));
    char hostname[64];
    struct timeval tick = {0, REDIS_TICK_MS * 1000};

    if (b == NULL)
        return NULL;
    b->worker = w;
    b->nbuckets = BUS_BUCKETS;
    b->table = calloc(b->nbuckets, sizeof(*b->table));
    if (b->table == NULL)
        goto fail;
    if (gethostname(hostname, sizeof(hostname)) < 0)
        snprintf(hostname, sizeof(hostname), "localhost");
    hostname[sizeof(hostname) - 1] = '\0';
    snprintf(b->origin, sizeof(b->origin), "%s:%ld", hostname, (long)getpid());
    snprintf(b->slot_id, sizeof(b->slot_id), "-");
    snprintf(b->carrier, sizeof(b->carrier), "relay");
    b->seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    if (w->cfg->redis_url != NULL && w->cfg->redis_url[0] != '\0') {
        b->redis = 1;
        b->prefix = w->cfg->redis_prefix != NULL ? w->cfg->redis_prefix : "dnoded:";
        if (bus_parse_url(b, w->cfg->redis_url) < 0) {
            log_error("bus: bad redis_url '%s'", w->cfg->redis_url);
            goto fail;
        }
        snprintf(b->carrier, sizeof(b->carrier), "redis %s:%d/%d %s", b->rhost, b->rport,
                 b->rdb, b->prefix);
        b->ctl = bus_key(b, "w:", b->origin, &b->ctllen);
        b->tick = event_new(w->base, -1, EV_PERSIST, bus_tick_cb, b);
        b->retry = evtimer_new(w->base, bus_retry_cb, b);
        if (b->ctl == NULL || b->tick == NULL || b->retry == NULL || event_add(b->tick, &tick) < 0)
            goto fail;
        b->backoff_ms = REDIS_BACKOFF_MIN_MS;
        bus_redis_connect(b); /* failures retry on the timer */
        return b;
    }
    b->host = host;
    if (host == NULL) {
        /* Serving alone, or a master that does not share a relay: a
         * private one keeps the delivery path the same. */
        b->host = bus_host_new(1);
        if (b->host == NULL)
            goto fail;
        b->own_host = 1;
        b->index = 0;
    } else if (w->index < 0 || (unsigned)w->index >= host->nworkers) {
        log_error("bus: worker index %d outside the relay's %u workers", w->index, host->nworkers);
        goto fail;
    } else {
        b->index = (unsigned)w->index + (generation % 2) * host->nworkers;
    }
    snprintf(b->slot_id, sizeof(b->slot_id), "%u", b->index);
    host_forget_worker(b);
    if (b->host->nslots > 1) {
        b->host_ev =
            event_new(w->base, b->host->efd[b->index], EV_READ | EV_PERSIST, host_event_cb, b);
        if (b->host_ev == NULL || event_add(b->host_ev, NULL) < 0)
            goto fail;
    }
    return b;
fail:
    bus_free(b);
    return NULL;
}

void bus_free(bus_t *b)
{
    size_t i;

    if (b == NULL)
        return;
    if (b->redis)
        bus_redis_goodbye(b);
    b->freeing = 1;
    if (b->sub != NULL)
        redisAsyncFree(b->sub);
    if (b->cmd != NULL)
        redisAsyncFree(b->cmd);
    if (b->tick != NULL)
        event_free(b->tick);
    if (b->retry != NULL)
        event_free(b->retry);
    if (b->host_ev != NULL)
        event_free(b->host_ev);
    if (b->own_host)
        bus_host_free(b->host);
    for (i = 0; b->table != NULL && i < b->nbuckets; i++) {
        while (b->table[i] != NULL)
            bus_drop_channel(b, b->table[i]);
    }
    free(b->table);
    free(b->rbuf);
    free(b->rhost);
    free(b->ctl);
    free(b);
}

/* The session's count changed by delta on c: tell the deployment. */
static void bus_presence(bus_t *b, bus_channel_t *c, int delta)
{
    const char *method = delta > 0 ? "subscribed" : "unsubscribed";

    if (b->redis)
        bus_presence_redis(b, c, delta, method);
    else
        host_presence(b, c, delta, method);
}

/* The count of a moving session on c moves from worker from to here. */
static void bus_move(bus_t *b, bus_channel_t *c, const char *from)
{
    char *cmd = NULL;
    int len;

    if (!b->redis) {
        host_move(b, c, from);
        return;
    }
    if (!b->up)
        return; /* registered in bulk when Redis is back */
    len = redisFormatCommand(&cmd, "EVAL %s 0 %s %s %s %s", bus_lua_move, b->prefix, from,
                             b->origin, c->name);
    if (len < 0 || bus_channel_command(b, c, K_PRESENCE, cmd, (size_t)len) < 0)
        log_warning("bus: cannot move a presence count of '%s' in Redis", c->name);
}

/* Join s to channel; from NULL announces the join, else the session moves
 * from that worker (handoff) and its count moves silently. */
static int bus_join(bus_t *b, session_t *s, const char *channel, const char *from)
{
    bus_channel_t *c;
    size_t i;

    for (i = 0; i < s->nsubs; i++)
        if (strcmp(s->subs[i]->name, channel) == 0)
            return 1;
    /* A moving session keeps what it had, even past a max_subscriptions a
     * reload lowered: refusing would cut it off a channel it is on. */
    if (from == NULL && s->nsubs >= b->worker->cfg->max_subscriptions)
        return -1;
    c = bus_find(b, channel, strlen(channel), 1);
    if (c == NULL)
        return -1;
    if (c->nsubs == c->capsubs) {
        size_t cap = c->capsubs ? c->capsubs * 2 : 4;
        session_t **subs = realloc(c->subs, cap * sizeof(*subs));
        if (subs == NULL)
            goto fail;
        c->subs = subs;
        c->capsubs = cap;
    }
    if (s->nsubs == s->capsubs) {
        uint32_t cap = s->capsubs ? s->capsubs * 2 : 2;
        bus_channel_t **subs = realloc(s->subs, cap * sizeof(*subs));
        if (subs == NULL)
            goto fail;
        s->subs = subs;
        s->capsubs = cap;
    }
    c->subs[c->nsubs++] = s;
    s->subs[s->nsubs++] = c;
    if (b->redis && b->up && c->rstate == R_NONE && bus_channel_subscribe(b, c, 1) < 0)
        log_warning("bus: cannot subscribe '%s' in Redis", c->name);
    if (from == NULL)
        bus_presence(b, c, +1);
    else
        bus_move(b, c, from);
    return 0;
fail:
    if (c->nsubs == 0 && (!b->redis || c->rstate == R_NONE))
        bus_drop_channel(b, c);
    return -1;
}

int bus_subscribe(bus_t *b, session_t *s, const char *channel)
{
    return bus_join(b, s, channel, NULL);
}

int bus_adopt(bus_t *b, session_t *s, const char *channel, const char *from)
{
    return bus_join(b, s, channel, from);
}

/* Remove s from c (and c from s), then tell the deployment (unless s was
 * handed off: its count moved with it). */
static void bus_detach(bus_t *b, session_t *s, bus_channel_t *c)
{
    size_t i;

    for (i = 0; i < c->nsubs; i++) {
        if (c->subs[i] == s) {
            /* Keep join order: deliveries walk this array. */
            memmove(&c->subs[i], &c->subs[i + 1], (c->nsubs - i - 1) * sizeof(*c->subs));
            c->nsubs--;
            break;
        }
    }
    for (i = 0; i < s->nsubs; i++) {
        if (s->subs[i] == c) {
            s->subs[i] = s->subs[--s->nsubs];
            break;
        }
    }
    if (!s->conn->moved) /* a moved session's count went with it */
        bus_presence(b, c, -1);
    if (c->nsubs > 0)
        return;
    if (!b->redis) {
        bus_drop_channel(b, c);
        return;
    }
    switch (c->rstate) {
    case R_SUBSCRIBED:
        if (bus_channel_subscribe(b, c, 0) < 0) {
            c->rstate = R_NONE;
            bus_drop_channel(b, c);
        }
        break;
    case R_NONE:
        bus_drop_channel(b, c);
        break;
    default:
        /* SUBSCRIBING: the confirmation sends the UNSUBSCRIBE and the
         * held presence messages; UNSUBSCRIBING: its reply drops c. */
        break;
    }
}

int bus_unsubscribe(bus_t *b, session_t *s, const char *channel)
{
    size_t i;

    for (i = 0; i < s->nsubs; i++) {
        if (strcmp(s->subs[i]->name, channel) == 0) {
            bus_detach(b, s, s->subs[i]);
            return 0;
        }
    }
    return 1;
}

void bus_leave_all(bus_t *b, session_t *s)
{
    while (s->nsubs > 0)
        bus_detach(b, s, s->subs[s->nsubs - 1]);
    free(s->subs);
    s->subs = NULL;
    s->capsubs = 0;
}

int bus_publish(bus_t *b, const char *channel, const char *method, const json_t *doc,
                const json_t *opt)
{
    return bus_publish_from(b, NULL, channel, method, doc, opt);
}

int bus_publish_from(bus_t *b, session_t *from, const char *channel, const char *method,
                     const json_t *doc, const json_t *opt)
{
    char *payload, *key = NULL, *cmd = NULL;
    size_t len, keylen;
    int n, rc = -1;

    if (bus_which(method) < 0 || bus_which(method) > SESSION_REMOTE_DELETED)
        return -1;
    if (b->redis && !b->up) {
        BUS_COUNT(b, publish_failed);
        b->failed_in_outage++;
        return -1; /* the outage itself was logged once by bus_redis_down */
    }
    payload = bus_envelope(b, method, 1, doc, opt, 0, &len);
    if (payload == NULL)
        goto done;
    if (!b->redis) {
        rc = host_publish(b, channel, payload, len);
        goto done;
    }
    key = bus_key(b, "c:", channel, &keylen);
    if (key == NULL)
        goto done;
    n = redisFormatCommand(&cmd, "PUBLISH %b %b", key, keylen, payload, len);
    if (n < 0)
        goto done;
    if (from != NULL) {
        session_ref(from);
        from->unconfirmed++;
    }
    rc = bus_channel_command_from(b, bus_find(b, channel, strlen(channel), 0), K_PUBLISH, cmd,
                                  (size_t)n, from);
done:
    if (rc == 0)
        BUS_COUNT(b, published);
    else
        BUS_COUNT(b, publish_failed);
    free(payload);
    free(key);
    return rc;
}

int bus_marker(bus_t *b, const char *channel, const char *id)
{
    json_buf_t jb = {NULL, 0, 0};
    char *key = NULL, *cmd = NULL;
    size_t keylen;
    int n, rc = -1;

    if (b->redis && !b->up)
        return -1;
    if (json_buf_append(&jb, bus_marker_head, sizeof(bus_marker_head) - 1) < 0 ||
        json_buf_append(&jb, ",\"k\":", 5) < 0 || json_dump_string(&jb, id, strlen(id)) < 0 ||
        json_buf_append(&jb, ",\"origin\":", 10) < 0 ||
        json_dump_string(&jb, b->origin, strlen(b->origin)) < 0 || json_buf_append(&jb, "}", 1) < 0)
        goto done;
    if (!b->redis) {
        rc = host_publish(b, channel, jb.data, jb.len);
        goto done;
    }
    key = bus_key(b, "c:", channel, &keylen);
    if (key == NULL)
        goto done;
    n = redisFormatCommand(&cmd, "PUBLISH %b %b", key, keylen, jb.data, jb.len);
    if (n >= 0)
        rc = bus_channel_command(b, bus_find(b, channel, strlen(channel), 0), K_MARKER, cmd,
                                 (size_t)n);
done:
    free(jb.data);
    free(key);
    return rc;
}

const char *bus_channel_name(const bus_channel_t *c)
{
    return c->name;
}

int bus_ready(const bus_t *b)
{
    return !b->redis || b->up;
}

const char *bus_id(const bus_t *b)
{
    return b->redis ? b->origin : b->slot_id;
}

const char *bus_carrier(const bus_t *b)
{
    return b->carrier;
}

size_t bus_online(bus_t *b, const char *channel)
{
    bus_channel_t *c = bus_find(b, channel, strlen(channel), 0);
    return c != NULL ? c->nsubs : 0;
}

void bus_get_stats(const bus_t *b, bus_stats_t *out)
{
    *out = b->st;
    out->redis_up = b->up;
}
