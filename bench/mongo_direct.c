/* mongo_direct: the reference for dnoded's CRUD row in bench/run. THREADS
 * threads over one mongoc_client_pool_t, as the store's DB threads are, each
 * with one operation in flight, alternate insert_one of a document shaped
 * as dnoded stores a todo ({_id, title, completed, order, created, __v})
 * and find by that _id (limit 1), both with maxTimeMS as the store sends it.
 * Every call pops a client from the pool and pushes it back, as a store job
 * does. No JSON, no event loop, no network hop in between: what is left is
 * the cost of MongoDB itself.
 *
 *   mongo_direct -u URI -c THREADS -d SECONDS [-w WARMUP]
 *
 * Prints "direct <threads> conns: N ops/s, p50 X us, p99 Y us" as ws_load
 * does. Not part of the daemon or the tests. */
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#define HIST_MAX_US 2000000
#define MAX_TIME_MS 10000

typedef struct run {
    mongoc_client_pool_t *pool;
    const char *db;
    int measuring, stopped; /* read and written with __atomic */
} run_t;

typedef struct worker {
    run_t *run;
    unsigned idx;
    pthread_t thread;
    uint64_t ops, errors;
    uint32_t *hist;
} worker_t;

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void note(worker_t *w, uint64_t started, int ok)
{
    uint64_t us = now_us() - started;

    if (!ok)
        w->errors++;
    if (__atomic_load_n(&w->run->measuring, __ATOMIC_RELAXED)) {
        w->ops++;
        w->hist[us < HIST_MAX_US ? us : HIST_MAX_US]++;
    }
}

static int insert_todo(run_t *r, unsigned idx, uint64_t n, bson_oid_t *oid)
{
    mongoc_client_t *client = mongoc_client_pool_pop(r->pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, r->db, "todos");
    bson_t *doc = bson_new(), opts = BSON_INITIALIZER;
    char title[64];
    struct timeval tv;
    bson_error_t e;
    bool ok;

    gettimeofday(&tv, NULL);
    snprintf(title, sizeof(title), "bench %u %llu", idx, (unsigned long long)n);
    bson_oid_init(oid, NULL);
    BSON_APPEND_OID(doc, "_id", oid);
    BSON_APPEND_UTF8(doc, "title", title);
    BSON_APPEND_BOOL(doc, "completed", false);
    BSON_APPEND_INT32(doc, "order", 0);
    BSON_APPEND_DATE_TIME(doc, "created", (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000);
    BSON_APPEND_INT32(doc, "__v", 0);
    BSON_APPEND_INT64(&opts, "maxTimeMS", MAX_TIME_MS);
    ok = mongoc_collection_insert_one(coll, doc, &opts, NULL, &e);
    if (!ok)
        fprintf(stderr, "mongo_direct: insert: %s\n", e.message);
    bson_destroy(&opts);
    bson_destroy(doc);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(r->pool, client);
    return ok ? 0 : -1;
}

static int find_todo(run_t *r, const bson_oid_t *oid)
{
    mongoc_client_t *client = mongoc_client_pool_pop(r->pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, r->db, "todos");
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    mongoc_cursor_t *cur;
    const bson_t *doc;
    bson_error_t e;
    int rc = -1;

    BSON_APPEND_OID(&filter, "_id", oid);
    BSON_APPEND_INT64(&opts, "limit", 1);
    BSON_APPEND_INT64(&opts, "maxTimeMS", MAX_TIME_MS);
    cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
    if (mongoc_cursor_next(cur, &doc))
        rc = 0;
    else if (mongoc_cursor_error(cur, &e))
        fprintf(stderr, "mongo_direct: find: %s\n", e.message);
    else
        fprintf(stderr, "mongo_direct: find: the document just inserted is missing\n");
    mongoc_cursor_destroy(cur);
    bson_destroy(&opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(r->pool, client);
    return rc;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    run_t *r = w->run;
    uint64_t n = 0, t;
    bson_oid_t oid;
    int ok;

    while (!__atomic_load_n(&r->stopped, __ATOMIC_RELAXED)) {
        t = now_us();
        ok = insert_todo(r, w->idx, n++, &oid) == 0;
        note(w, t, ok);
        if (!ok)
            continue;
        t = now_us();
        note(w, t, find_todo(r, &oid) == 0);
    }
    return NULL;
}

static uint64_t percentile(const uint32_t *hist, uint64_t total, double p)
{
    uint64_t want = (uint64_t)((double)total * p), seen = 0, us;

    for (us = 0; us <= HIST_MAX_US; us++) {
        seen += hist[us];
        if (seen > want)
            return us;
    }
    return HIST_MAX_US;
}

int main(int argc, char **argv)
{
    run_t r;
    worker_t *ws = NULL;
    const char *uri_text = NULL;
    unsigned nthreads = 4, i, started = 0;
    int seconds = 10, warmup = 2, opt, status = 1;
    uint64_t ops = 0, errors = 0, us;
    uint32_t *hist = NULL;
    mongoc_uri_t *uri = NULL;
    bson_error_t e;

    memset(&r, 0, sizeof(r));
    while ((opt = getopt(argc, argv, "u:c:d:w:")) != -1) {
        switch (opt) {
        case 'u': uri_text = optarg; break;
        case 'c': nthreads = (unsigned)atoi(optarg); break;
        case 'd': seconds = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: mongo_direct -u URI -c THREADS -d SECONDS [-w WARMUP]\n");
            return 2;
        }
    }
    if (uri_text == NULL || nthreads == 0 || seconds <= 0 || warmup < 0) {
        fprintf(stderr, "mongo_direct: need -u URI, -c > 0 and -d > 0\n");
        return 2;
    }
    mongoc_init();
    uri = mongoc_uri_new_with_error(uri_text, &e);
    if (uri == NULL) {
        fprintf(stderr, "mongo_direct: %s\n", e.message);
        goto out;
    }
    r.db = mongoc_uri_get_database(uri);
    if (r.db == NULL || r.db[0] == '\0')
        r.db = "bench";
    r.pool = mongoc_client_pool_new_with_error(uri, &e);
    ws = calloc(nthreads, sizeof(*ws));
    hist = calloc(HIST_MAX_US + 1, sizeof(*hist));
    if (r.pool == NULL || ws == NULL || hist == NULL) {
        fprintf(stderr, "mongo_direct: cannot set up (%s)\n", r.pool ? "out of memory" : e.message);
        goto out;
    }
    mongoc_client_pool_set_error_api(r.pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_max_size(r.pool, nthreads);
    for (i = 0; i < nthreads; i++) {
        ws[i].run = &r;
        ws[i].idx = i;
        ws[i].hist = calloc(HIST_MAX_US + 1, sizeof(*ws[i].hist));
        if (ws[i].hist == NULL || pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, "mongo_direct: cannot start thread %u\n", i);
            __atomic_store_n(&r.stopped, 1, __ATOMIC_RELAXED);
            break;
        }
        started++;
    }
    if (started == nthreads) {
        sleep((unsigned)warmup);
        __atomic_store_n(&r.measuring, 1, __ATOMIC_RELAXED);
        sleep((unsigned)seconds);
        __atomic_store_n(&r.measuring, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&r.stopped, 1, __ATOMIC_RELAXED);
    }
    for (i = 0; i < started; i++) {
        pthread_join(ws[i].thread, NULL);
        ops += ws[i].ops;
        errors += ws[i].errors;
        for (us = 0; us <= HIST_MAX_US; us++)
            hist[us] += ws[i].hist[us];
    }
    if (started == nthreads) {
        printf("%-9s %4u conns: %8.0f ops/s, p50 %5llu us, p99 %6llu us%s\n", "direct", nthreads,
               (double)ops / seconds, (unsigned long long)percentile(hist, ops, 0.50),
               (unsigned long long)percentile(hist, ops, 0.99),
               errors ? " (errors, see stderr)" : "");
        status = errors ? 1 : 0;
    }
out:
    for (i = 0; ws != NULL && i < nthreads; i++)
        free(ws[i].hist);
    free(ws);
    free(hist);
    if (r.pool != NULL)
        mongoc_client_pool_destroy(r.pool);
    if (uri != NULL)
        mongoc_uri_destroy(uri);
    mongoc_cleanup();
    return status;
}
