/* bus_relay: the single-host carrier (see bus.h and bus_carrier.h). The
 * workers of one host share a log of envelopes in a MAP_SHARED ring, a
 * presence table in the same mapping, and one eventfd per worker slot; the
 * master makes it before forking. Knows nothing of sessions beyond passing
 * them through, nor of Redis. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
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

#include "bus_carrier.h"
#include "log.h"

/* The log holds the last HOST_RING_BYTES of messages; a worker stalled for
 * longer than that loses the oldest (counted). */
#define HOST_RING_BYTES ((uint64_t)16 << 20)
#define HOST_MAX_ENTRY (HOST_RING_BYTES / 4)
#define HOST_SLOTS 65536 /* channels with presence counts on one host */
#define HOST_MAX_WORKERS 1024

/* One presence slot of the host relay: a channel (by 64-bit hash) and the
 * number of its subscribers on each worker. */
typedef struct host_slot {
    uint64_t key;        /* 0 = never used */
    uint64_t offset;     /* the channel's last change (its position in the history) */
    uint64_t last_start; /* where that change is in the log, + 1 (0: none) */
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
    char epoch[24];       /* the epoch of every channel's history on this host */
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
    uint64_t offset; /* a change's place in its channel's history (0: none) */
    uint64_t prev;   /* the channel's change before it in the log, + 1 (0: none) */
    int64_t at_ms;   /* when it was appended (CLOCK_REALTIME) */
} host_entry_t;

/* This worker's side of the relay. */
typedef struct relay {
    bus_host_t *host;
    int own_host;   /* a private relay (serving alone) */
    unsigned index; /* this worker's slot */
    struct event *host_ev;
    uint64_t cursor; /* the next log offset to read */
    char *rbuf;
    size_t rcap;
    char slot_id[16]; /* the slot, as this worker's id in presence counts */
} relay_t;

#define RL(b) ((relay_t *)(b)->cs)

/* ------------------------------------------------------------------------
 * The log
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
    bus_core_new_epoch(h->epoch, sizeof(h->epoch));
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

static int64_t host_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Append one entry; the caller holds the lock. slot: the channel's, for a
 * change that takes the next offset of its history (NULL otherwise). */
static int host_append_locked(bus_host_t *h, const char *chan, size_t chanlen, const char *payload,
                              size_t len, host_slot_t *slot)
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
    memset(&e, 0, sizeof(e));
    e.start = head;
    e.chanlen = (uint32_t)chanlen;
    e.len = (uint32_t)len;
    e.at_ms = host_now_ms();
    if (slot != NULL) {
        e.offset = slot->offset + 1;
        e.prev = slot->last_start;
        slot->last_start = head + 1;
        __atomic_store_n(&slot->offset, e.offset, __ATOMIC_RELEASE); /* relay_position */
    }
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

    for (i = 0; i < RL(b)->host->nslots; i++) {
        if (i == RL(b)->index || __atomic_exchange_n(&RL(b)->host->woken[i], 1, __ATOMIC_SEQ_CST))
            continue;
        if (write(RL(b)->host->efd[i], &one, sizeof(one)) < 0 && errno != EAGAIN)
            log_debug("bus: cannot wake worker %u: %s", i, strerror(errno));
    }
}

/* Read and deliver every entry up to the current head. */
static void host_drain(bus_t *b)
{
    bus_host_t *h = RL(b)->host;

    for (;;) {
        uint64_t head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
        uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
        host_entry_t e;
        size_t need;

        if (RL(b)->cursor >= head)
            return;
        if (RL(b)->cursor < tail) {
            log_warning("bus: this worker fell behind the relay log: messages lost");
            BUS_COUNT(b, lost);
            RL(b)->cursor = tail;
            continue;
        }
        ring_get(h, RL(b)->cursor, &e, sizeof(e));
        need = (size_t)e.chanlen + e.len;
        if (e.start != RL(b)->cursor || e.len > HOST_MAX_ENTRY || e.chanlen > 4096) {
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (RL(b)->cursor >= __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE)) {
                log_error("bus: corrupt relay entry at %" PRIu64 "; skipping to the head",
                          RL(b)->cursor);
                BUS_COUNT(b, lost);
                RL(b)->cursor = head;
            }
            continue; /* else overwritten: the check above resyncs */
        }
        if (need > RL(b)->rcap) {
            char *nb = realloc(RL(b)->rbuf, need);
            if (nb == NULL) {
                log_error("bus: out of memory reading the relay log");
                BUS_COUNT(b, lost);
                RL(b)->cursor += entry_size(e.chanlen, e.len);
                continue;
            }
            RL(b)->rbuf = nb;
            RL(b)->rcap = need;
        }
        ring_get(h, RL(b)->cursor + sizeof(e), RL(b)->rbuf, need);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (RL(b)->cursor < __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE))
            continue; /* overwritten while copying */
        RL(b)->cursor += entry_size(e.chanlen, e.len);
        bus_core_deliver(b, RL(b)->rbuf, e.chanlen, RL(b)->rbuf + e.chanlen, e.len,
                         e.offset > 0 ? h->epoch : NULL, e.offset);
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
    __atomic_exchange_n(&RL(b)->host->woken[RL(b)->index], 0, __ATOMIC_SEQ_CST);
    host_drain(b);
}

static host_slot_t *host_slot(bus_host_t *h, uint64_t key, int create);

/* The slot that keeps the position of the channel whose hash is key, made
 * if need be; NULL when the table is full (the channel's changes then have
 * no history: logged once). The caller holds the lock. */
static host_slot_t *host_slot_for(bus_t *b, uint64_t key)
{
    host_slot_t *slot = host_slot(RL(b)->host, key, 1);

    if (slot == NULL && !RL(b)->host->slots_full_logged) {
        log_warning("bus: channel table full: new channels have no history");
        RL(b)->host->slots_full_logged = 1;
    }
    return slot;
}

static int host_publish(bus_t *b, const char *chan, bus_channel_t *c, const char *payload,
                        size_t len, session_t *from, int marker)
{
    uint64_t key = marker ? 0 : bus_core_hash(chan); /* hashed before taking the lock */
    int rc;

    (void)c;
    (void)from;
    if (host_lock(RL(b)->host) < 0)
        return -1;
    /* A change takes the next offset of its channel; a marker none. Only
     * a channel someone subscribed to (which made its slot) has a
     * history: nobody can hold a position on another, and a publisher
     * naming channels at random does not fill the table. */
    rc = host_append_locked(RL(b)->host, chan, strlen(chan), payload, len,
                            marker ? NULL : host_slot(RL(b)->host, key, 0));
    pthread_mutex_unlock(&RL(b)->host->lock);
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
            __atomic_store_n(&s->key, key, __ATOMIC_RELEASE); /* relay_position reads it */
            return s;
        }
    }
    return NULL;
}

/* Count a join (+1) or leave (-1) on the host and put the presence message
 * in the log under the same lock, so the count matches its place in order. */
static void host_presence(bus_t *b, bus_channel_t *c, int delta)
{
    const char *method = delta > 0 ? "subscribed" : "unsubscribed";
    bus_host_t *h = RL(b)->host;
    uint64_t key = c->hash;
    host_slot_t *slot;
    int64_t total = 0;
    unsigned i;
    char *text;
    size_t len;
    int rc;

    if (host_lock(h) < 0)
        return;
    slot = host_slot(h, key, delta > 0);
    if (slot != NULL) {
        slot->count[RL(b)->index] += delta;
        if (slot->count[RL(b)->index] < 0)
            slot->count[RL(b)->index] = 0;
        for (i = 0; i < h->nslots; i++)
            total += slot->count[i];
    } else {
        if (!h->slots_full_logged)
            log_warning("bus: presence table full: online counts are per worker");
        h->slots_full_logged = 1;
        total = (int64_t)c->nsubs;
    }
    text = bus_core_presence_envelope(b, method, total, &len);
    rc = text != NULL ? host_append_locked(h, c->name, strlen(c->name), text, len, NULL) : -1;
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
    bus_host_t *h = RL(b)->host;
    unsigned long idx = from[0] != '\0' ? strtoul(from, NULL, 10) : ULONG_MAX;
    uint64_t key = c->hash;
    host_slot_t *slot;

    if (host_lock(h) < 0)
        return;
    slot = host_slot(h, key, 1);
    if (slot != NULL) {
        if (idx < h->nslots && idx != RL(b)->index && slot->count[idx] > 0)
            slot->count[idx]--;
        slot->count[RL(b)->index]++;
    }
    pthread_mutex_unlock(&h->lock);
}

/* A (re)started worker forgets what its predecessor at this index counted. */
static void host_forget_worker(bus_t *b)
{
    bus_host_t *h = RL(b)->host;
    size_t i;

    if (host_lock(h) < 0)
        return;
    for (i = 0; i < HOST_SLOTS; i++)
        ((host_slot_t *)(h->slots + i * h->slot_size))->count[RL(b)->index] = 0;
    /* A predecessor that died leaves its flag set: wake-ups resume now. */
    __atomic_store_n(&h->woken[RL(b)->index], 0, __ATOMIC_SEQ_CST);
    RL(b)->cursor = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&h->lock);
}

/* ------------------------------------------------------------------------
 * The carrier
 * ------------------------------------------------------------------------ */

static void relay_joined(bus_t *b, bus_channel_t *c)
{
    (void)b;
    (void)c;
}

static int relay_emptied(bus_t *b, bus_channel_t *c)
{
    (void)b;
    (void)c;
    return 1;
}

static void relay_channel_free(bus_t *b, bus_channel_t *c)
{
    (void)b;
    (void)c;
}

/* The position of a channel that has a slot, read without the lock: an
 * append that races with it makes it one too old, which only means that
 * the subscriber is pushed that change as well (the drain brings it). */
static int relay_position(bus_t *b, const bus_channel_t *c, char *epoch, size_t epochlen,
                          uint64_t *last)
{
    bus_host_t *h = RL(b)->host;
    uint64_t key = c->hash;
    size_t i;

    if (key == 0)
        key = 1;
    for (i = 0; i < 8; i++) { /* a short probe: the locked path finds the rest */
        host_slot_t *s = (host_slot_t *)(h->slots + ((key + i) % HOST_SLOTS) * h->slot_size);
        uint64_t k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
        if (k == 0)
            return 0;
        if (k == key) {
            *last = __atomic_load_n(&s->offset, __ATOMIC_ACQUIRE);
            bus_copy(epoch, epochlen, h->epoch);
            return 1;
        }
    }
    return 0;
}

/* Walk c's changes back from the newest through the log (each entry links
 * to the channel's change before it) down to offset from, and answer with
 * the first of them, oldest first (at most max, and max_bytes of payloads
 * past the first), when all of from..last are there, or none when some
 * are gone (overwritten, older than history_ttl, past history_size).
 * Only the walk over the entries' headers holds the lock; the payloads
 * are copied after it, then checked not to have been overwritten
 * meanwhile (as host_drain reads), so a long replay does not hold up the
 * other workers' publishes. */
static int relay_fetch(bus_t *b, bus_channel_t *c, uint64_t from, size_t max, size_t max_bytes,
                       void *ctx)
{
    bus_host_t *h = RL(b)->host;
    size_t namelen = strlen(c->name), n = 0, nstarts = 0, total = 0, k;
    int64_t oldest = host_now_ms() - (int64_t)b->cfg->history_ttl * 1000;
    uint64_t key = c->hash, *starts = NULL, last, want = 0, at, tail;
    uint32_t *lens = NULL;
    bus_entry_t *entries = NULL;
    char *buf = NULL, *name = NULL;
    host_slot_t *slot;
    int ok = 1;

    if (host_lock(h) < 0) {
        bus_core_fetched(b, ctx, 0, NULL, 0, NULL, 0);
        return 0;
    }
    slot = host_slot_for(b, key);
    if (slot == NULL) {
        pthread_mutex_unlock(&h->lock);
        bus_core_fetched(b, ctx, 0, NULL, 0, NULL, 0);
        return 0;
    }
    last = slot->offset;
    if (from == 0 || from > last || last - from + 1 > b->cfg->history_size) {
        pthread_mutex_unlock(&h->lock);
        goto answer;
    }
    want = last - from + 1;
    starts = malloc((size_t)want * sizeof(*starts));
    lens = malloc((size_t)want * sizeof(*lens));
    name = malloc(namelen + 1);
    if (starts == NULL || lens == NULL || name == NULL) {
        pthread_mutex_unlock(&h->lock);
        ok = 0;
        goto answer;
    }
    at = slot->last_start;
    tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    while (nstarts < want && at != 0 && at - 1 >= tail) {
        host_entry_t e;
        ring_get(h, at - 1, &e, sizeof(e));
        if (e.start != at - 1 || e.offset != last - nstarts || e.at_ms < oldest ||
            e.chanlen != namelen)
            break;
        ring_get(h, at - 1 + sizeof(e), name, namelen);
        if (memcmp(name, c->name, namelen) != 0)
            break;
        lens[nstarts] = e.len;
        starts[nstarts++] = at - 1;
        at = e.prev;
    }
    pthread_mutex_unlock(&h->lock);
    if (nstarts < want)
        goto answer; /* some are gone: nothing */
    n = want < max ? (size_t)want : max;
    for (k = 0; k < n; k++) {
        if (k > 0 && total + lens[want - 1 - k] > max_bytes) {
            n = k; /* the rest in the next batch */
            break;
        }
        total += lens[want - 1 - k];
    }
    entries = calloc(n, sizeof(*entries));
    buf = malloc(total + 1);
    if (entries == NULL || buf == NULL) {
        ok = 0;
        n = 0;
        goto answer;
    }
    total = 0;
    for (k = 0; k < n; k++) {
        size_t len = lens[want - 1 - k];
        ring_get(h, starts[want - 1 - k] + sizeof(host_entry_t) + namelen, buf + total, len);
        entries[k].offset = from + k;
        entries[k].payload = buf + total;
        entries[k].len = len;
        total += len;
    }
    /* The oldest copied entry is still in the log, so is every later one. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (starts[want - 1] < __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE))
        n = 0;
answer:
    bus_core_fetched(b, ctx, ok, h->epoch, last, entries, n);
    free(starts);
    free(lens);
    free(name);
    free(entries);
    free(buf);
    return 0;
}

static int relay_ready(const bus_t *b)
{
    (void)b;
    return 1;
}

static int relay_connected(const bus_t *b)
{
    (void)b;
    return 0;
}

static const char *relay_id(const bus_t *b) { return RL(b)->slot_id; }

static void relay_free(bus_t *b)
{
    relay_t *r = b->cs;

    if (r == NULL)
        return;
    if (r->host_ev != NULL)
        event_free(r->host_ev);
    if (r->own_host)
        bus_host_free(r->host);
    free(r->rbuf);
    free(r);
    b->cs = NULL;
}

static const bus_carrier_t relay_ops = {
    .kind = "relay",
    .publish = host_publish,
    .presence = host_presence,
    .move = host_move,
    .joined = relay_joined,
    .emptied = relay_emptied,
    .channel_free = relay_channel_free,
    .ready = relay_ready,
    .connected = relay_connected,
    .id = relay_id,
    .fetch = relay_fetch,
    .position = relay_position,
    .free = relay_free,
};

int bus_relay_init(bus_t *b, bus_host_t *host, int index, unsigned generation)
{
    relay_t *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return -1;
    b->ops = &relay_ops;
    b->cs = r;
    snprintf(b->carrier, sizeof(b->carrier), "relay");
    r->host = host;
    if (host == NULL) {
        /* Serving alone, or a master that does not share a relay: a
         * private one keeps the delivery path the same. */
        r->host = bus_host_new(1);
        if (r->host == NULL)
            return -1;
        r->own_host = 1;
        r->index = 0;
    } else if (index < 0 || (unsigned)index >= host->nworkers) {
        log_error("bus: worker index %d outside the relay's %u workers", index, host->nworkers);
        return -1;
    } else {
        r->index = (unsigned)index + (generation % 2) * host->nworkers;
    }
    snprintf(r->slot_id, sizeof(r->slot_id), "%u", r->index);
    host_forget_worker(b);
    if (r->host->nslots > 1) {
        r->host_ev =
            event_new(b->base, r->host->efd[r->index], EV_READ | EV_PERSIST, host_event_cb, b);
        if (r->host_ev == NULL || event_add(r->host_ev, NULL) < 0)
            return -1;
    }
    return 0;
}
