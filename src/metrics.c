/* metrics: per-worker counter slots in shared memory and their Prometheus
 * rendering (see metrics.h). Each slot has one writer, its worker's loop
 * thread; readers in other processes load 64-bit words that are written
 * whole (aligned), so a sum may lag a little but never tears. */
#include "metrics.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>

#include <event2/buffer.h>

struct metrics {
    size_t nslots;
    size_t maplen;
    metrics_slot_t slots[];
};

static const double bucket_bounds[METRICS_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
};

static const char *const disconnect_names[METRICS_DISC_COUNT] = {
    "client_closed",      "protocol_error", "oversized", "slow_consumer",
    "slow_consumer_soft", "timeout",        "shutdown",  "other",
};

static const char *const transport_names[METRICS_TRANSPORT_COUNT] = {"tcp", "websocket"};

metrics_t *metrics_new(size_t max_workers)
{
    size_t len = sizeof(metrics_t) + (max_workers ? max_workers : 1) * sizeof(metrics_slot_t);
    metrics_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (m == MAP_FAILED)
        return NULL;
    /* Anonymous mappings start zeroed. */
    m->nslots = max_workers ? max_workers : 1;
    m->maplen = len;
    return m;
}

void metrics_free(metrics_t *m)
{
    if (m != NULL)
        munmap(m, m->maplen);
}

static void reset_gauges(metrics_slot_t *s)
{
    int t;

    for (t = 0; t < METRICS_TRANSPORT_COUNT; t++)
        __atomic_store_n(&s->sessions[t], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->accepting, 0, __ATOMIC_RELAXED);
}

metrics_slot_t *metrics_claim(metrics_t *m, int pid)
{
    size_t i;
    int pass;

    if (m == NULL || pid <= 0)
        return NULL;
    /* First a free slot, then one whose owner died without a release. */
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < m->nslots; i++) {
            int32_t owner = __atomic_load_n(&m->slots[i].owner, __ATOMIC_ACQUIRE);
            if (pass == 0 ? owner != 0 : (owner == 0 || kill(owner, 0) == 0 || errno != ESRCH))
                continue;
            if (__atomic_compare_exchange_n(&m->slots[i].owner, &owner, pid, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                reset_gauges(&m->slots[i]);
                return &m->slots[i];
            }
        }
    }
    return NULL;
}

void metrics_release(metrics_t *m, int pid)
{
    size_t i;

    for (i = 0; m != NULL && pid > 0 && i < m->nslots; i++) {
        if (__atomic_load_n(&m->slots[i].owner, __ATOMIC_ACQUIRE) == pid) {
            reset_gauges(&m->slots[i]);
            __atomic_store_n(&m->slots[i].owner, 0, __ATOMIC_RELEASE);
        }
    }
}

void metrics_accepting_load(const metrics_t *m, uint64_t *connections, unsigned *workers)
{
    size_t i;

    *connections = 0;
    *workers = 0;
    for (i = 0; m != NULL && i < m->nslots; i++) {
        const metrics_slot_t *s = &m->slots[i];
        uint64_t opened, closed;

        if (__atomic_load_n(&s->owner, __ATOMIC_ACQUIRE) == 0 ||
            !__atomic_load_n(&s->accepting, __ATOMIC_RELAXED))
            continue;
        opened = __atomic_load_n(&s->connections_opened, __ATOMIC_RELAXED);
        closed = __atomic_load_n(&s->connections_closed, __ATOMIC_RELAXED);
        *connections += opened > closed ? opened - closed : 0;
        (*workers)++;
    }
}

uint64_t metrics_now_us(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void metrics_observe(metrics_hist_t *h, uint64_t elapsed_us)
{
    double secs = (double)elapsed_us / 1e6;
    size_t i = 0;

    while (i < METRICS_BUCKETS && secs > bucket_bounds[i])
        i++;
    h->le[i]++;
    h->count++;
    h->sum_us += elapsed_us;
}

void metrics_error(metrics_slot_t *s, int code)
{
    if (s != NULL)
        s->errors[code >= 0 && code < ERROR_TOP_COUNT ? code : METRICS_ERR_OTHER]++;
}

void metrics_disconnect(metrics_slot_t *s, int klass)
{
    if (s != NULL && klass >= 0 && klass < METRICS_DISC_COUNT)
        s->disconnects[klass]++;
}

void metrics_session_opened(metrics_slot_t *s, int transport)
{
    if (s == NULL || transport < 0 || transport >= METRICS_TRANSPORT_COUNT)
        return;
    s->sessions_opened[transport]++;
    __atomic_add_fetch(&s->sessions[transport], 1, __ATOMIC_RELAXED);
}

void metrics_session_closed(metrics_slot_t *s, int transport)
{
    if (s == NULL || transport < 0 || transport >= METRICS_TRANSPORT_COUNT)
        return;
    s->sessions_closed[transport]++;
    /* The master may have zeroed the gauge meanwhile: never go below 0. */
    if (__atomic_load_n(&s->sessions[transport], __ATOMIC_RELAXED) > 0)
        __atomic_sub_fetch(&s->sessions[transport], 1, __ATOMIC_RELAXED);
}

void metrics_http_request(metrics_slot_t *s, int status)
{
    int klass = status / 100;

    if (s != NULL)
        s->http_requests[klass >= 1 && klass <= 5 ? klass : 0]++;
}

/* ------------------------------------------------------------------------
 * Rendering
 * ------------------------------------------------------------------------ */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)

/* Sum of the uint64_t at byte offset off of every slot. */
static uint64_t sum_at(const metrics_t *m, size_t off)
{
    uint64_t total = 0;
    size_t i;

    for (i = 0; i < m->nslots; i++)
        total += LOAD((const uint64_t *)((const char *)&m->slots[i] + off));
    return total;
}

#define SUM(field) sum_at(m, offsetof(metrics_slot_t, field))

static int head(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    return evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int counter(struct evbuffer *out, const char *name, const char *help, uint64_t v)
{
    if (head(out, name, "counter", help) < 0)
        return -1;
    return evbuffer_add_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

static int histogram(struct evbuffer *out, const metrics_t *m, size_t off, const char *name,
                     const char *help)
{
    uint64_t cum = 0;
    size_t b;

    if (head(out, name, "histogram", help) < 0)
        return -1;
    for (b = 0; b <= METRICS_BUCKETS; b++) {
        cum += sum_at(m, off + offsetof(metrics_hist_t, le) + b * sizeof(uint64_t));
        if (b < METRICS_BUCKETS) {
            if (evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_bounds[b],
                                    (unsigned long long)cum) < 0)
                return -1;
        } else if (evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name,
                                       (unsigned long long)cum) < 0) {
            return -1;
        }
    }
    if (evbuffer_add_printf(out, "%s_sum %.6f\n%s_count %llu\n", name,
                            (double)sum_at(m, off + offsetof(metrics_hist_t, sum_us)) / 1e6, name,
                            (unsigned long long)sum_at(m, off + offsetof(metrics_hist_t, count))) <
        0)
        return -1;
    return 0;
}

int metrics_render(const metrics_t *m, struct evbuffer *out)
{
    int64_t gauge;
    size_t i;
    int t, k, rc = 0;

    rc |= head(out, "dnoded_sessions", "gauge",
               "DNode sessions open now (TCP and WebSocket; plain HTTP not counted).");
    for (t = 0; t < METRICS_TRANSPORT_COUNT; t++) {
        for (gauge = 0, i = 0; i < m->nslots; i++)
            gauge += LOAD(&m->slots[i].sessions[t]);
        rc |= evbuffer_add_printf(out, "dnoded_sessions{transport=\"%s\"} %lld\n",
                                  transport_names[t], (long long)gauge);
    }
    rc |= head(out, "dnoded_sessions_opened_total", "counter", "DNode sessions started.");
    for (t = 0; t < METRICS_TRANSPORT_COUNT; t++)
        rc |= evbuffer_add_printf(
            out, "dnoded_sessions_opened_total{transport=\"%s\"} %llu\n", transport_names[t],
            (unsigned long long)sum_at(m, offsetof(metrics_slot_t, sessions_opened) +
                                              (size_t)t * sizeof(uint64_t)));
    rc |= head(out, "dnoded_sessions_closed_total", "counter", "DNode sessions ended.");
    for (t = 0; t < METRICS_TRANSPORT_COUNT; t++)
        rc |= evbuffer_add_printf(
            out, "dnoded_sessions_closed_total{transport=\"%s\"} %llu\n", transport_names[t],
            (unsigned long long)sum_at(m, offsetof(metrics_slot_t, sessions_closed) +
                                              (size_t)t * sizeof(uint64_t)));
    rc |=
        counter(out, "dnoded_connections_opened_total",
                "Connections accepted (DNode, WebSocket and plain HTTP).", SUM(connections_opened));
    rc |= counter(out, "dnoded_connections_closed_total", "Connections closed.",
                  SUM(connections_closed));
    rc |= counter(out, "dnoded_connections_refused_total",
                  "Connections refused at accept (max_connections, max_connections_per_ip, "
                  "max_connection_rate_per_ip, or stopping).",
                  SUM(refused));
    rc |= counter(out, "dnoded_messages_received_total", "DNode messages received.",
                  SUM(messages_in));
    rc |= counter(out, "dnoded_messages_sent_total", "DNode messages sent.", SUM(messages_out));
    rc |= head(out, "dnoded_messages_rejected_total", "counter",
               "Received messages refused, by reason.");
    rc |= evbuffer_add_printf(out,
                              "dnoded_messages_rejected_total{reason=\"malformed\"} %llu\n"
                              "dnoded_messages_rejected_total{reason=\"unknown_method\"} %llu\n"
                              "dnoded_messages_rejected_total{reason=\"oversized\"} %llu\n",
                              (unsigned long long)SUM(malformed),
                              (unsigned long long)SUM(unknown_methods),
                              (unsigned long long)SUM(oversized));
    rc |= counter(out, "dnoded_slow_consumers_total",
                  "Sessions disconnected as too slow (max_output_buffer or output_soft_limit).",
                  SUM(slow_consumers));
    rc |= counter(out, "dnoded_tls_handshakes_total",
                  "TLS handshakes completed on listen_tls addresses.", SUM(tls_handshakes));
    rc |= counter(out, "dnoded_tls_handshakes_failed_total",
                  "TLS handshakes that did not complete (bad or no TLS, refused protocol or "
                  "cipher, not finished within http_header_timeout, abandoned).",
                  SUM(tls_handshakes_failed));
    rc |= counter(out, "dnoded_bus_published_total",
                  "Changes handed to Redis or the single-host relay.", SUM(bus_published));
    rc |= counter(out, "dnoded_bus_publish_failed_total",
                  "Changes not published (Redis down or refusing, too large).",
                  SUM(bus_publish_failed));
    rc |= counter(out, "dnoded_bus_lost_total",
                  "Times a worker fell behind the single-host relay and lost messages.",
                  SUM(bus_lost));
    rc |= counter(out, "dnoded_bus_redis_reconnects_total",
                  "Redis connections re-established after an outage.", SUM(bus_reconnects));
    rc |= counter(out, "dnoded_bus_recovered_total",
                  "Subscribers back with a position that were sent every change they missed.",
                  SUM(bus_recovered));
    rc |= counter(out, "dnoded_bus_not_recovered_total",
                  "Subscribers told recovered: false (changes no longer in the history).",
                  SUM(bus_not_recovered));
    rc |= counter(out, "dnoded_bus_catch_ups_total",
                  "Fetches from a channel's history by a worker that missed changes.",
                  SUM(bus_catch_ups));
    rc |= head(out, "dnoded_errors_total", "counter", "Errors reported to clients, by name.");
    for (k = 0; k < METRICS_ERR_COUNT; k++)
        rc |= evbuffer_add_printf(out, "dnoded_errors_total{name=\"%s\"} %llu\n",
                                  k < ERROR_TOP_COUNT ? error_name((error_code_t)k) : "other",
                                  (unsigned long long)sum_at(m, offsetof(metrics_slot_t, errors) +
                                                                    (size_t)k * sizeof(uint64_t)));
    rc |= head(out, "dnoded_disconnects_total", "counter", "DNode sessions ended, by reason.");
    for (k = 0; k < METRICS_DISC_COUNT; k++)
        rc |= evbuffer_add_printf(
            out, "dnoded_disconnects_total{reason=\"%s\"} %llu\n", disconnect_names[k],
            (unsigned long long)sum_at(m, offsetof(metrics_slot_t, disconnects) +
                                              (size_t)k * sizeof(uint64_t)));
    rc |= head(out, "dnoded_http_requests_total", "counter",
               "HTTP requests answered, by status class.");
    for (k = 1; k <= 5; k++)
        rc |= evbuffer_add_printf(
            out, "dnoded_http_requests_total{code=\"%dxx\"} %llu\n", k,
            (unsigned long long)sum_at(m, offsetof(metrics_slot_t, http_requests) +
                                              (size_t)k * sizeof(uint64_t)));
    if (rc < 0)
        return -1;
    if (histogram(out, m, offsetof(metrics_slot_t, db), "dnoded_db_latency_seconds",
                  "Time from a CRUD request to its database completion.") < 0 ||
        histogram(out, m, offsetof(metrics_slot_t, bus), "dnoded_bus_publish_seconds",
                  "Time to hand a change to the bus (with local fan-out).") < 0)
        return -1;
    return 0;
}
