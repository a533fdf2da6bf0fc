/* store: MongoDB for one worker. Owns the client pool, the DB threads, the job
 * queue and the hand-off of completions to the event loop through an eventfd.
 * It does not validate or cast documents (model does) and knows nothing of
 * sessions: whoever passed `arg` decides whether a completion still matters. */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <mongoc/mongoc.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"

/* Fallbacks when the caller leaves a setting at 0. */
#define STORE_OWNER_BUCKETS 1024
#define STORE_DEFAULT_MAX_REPLY ((size_t)8 << 20)
/* What a read asks the server for at once: about this many bytes of
 * documents, and at most this many documents. */
#define STORE_BATCH_BYTES ((size_t)1 << 20)
#define STORE_BATCH_MAX_DOCS 1000
#define STORE_DEFAULT_DOC_BYTES ((size_t)1 << 20)
#define STORE_DEFAULT_THREADS 4
#define STORE_DEFAULT_TIMEOUT_MS 5000
#define STORE_DEFAULT_MAX_TIME_MS 10000
#define STORE_DEFAULT_DATABASE "dnoded"
#define STORE_APPNAME "dnoded"
/* Read-merge-write attempts of an unversioned update racing with other
 * writers before it gives up with Conflict. */
#define STORE_WRITE_ATTEMPTS 3
/* Striped locks that serialize this worker's read-modify-write of one
 * document (see struct store). */
#define STORE_DOC_LOCKS 64

typedef enum { JOB_CREATE, JOB_READ, JOB_UPDATE, JOB_DELETE, JOB_INDEXES } job_kind_t;

typedef struct job {
    struct job *next;
    const void *owner; /* whose queue it waits in (store_submit) */
    job_kind_t kind;
    const model_t *model;       /* JOB_INDEXES: NULL */
    const model_set_t *models;  /* JOB_INDEXES only */
    json_t *input;              /* a copy of data (create/update/delete) or opt (read) */
    store_done_fn done;         /* NULL for internal jobs (indexes) */
    void *arg;
    json_t *result;             /* built on the DB thread, handed to done */
    json_t *error;
    json_t *auth;               /* the session's claims (a copy), NULL: anonymous */
    json_t *old;                /* update: the document before, handed to done */
    struct store *st;

    /* An idempotent write (store_submit_once): once_done replaces done. */
    store_once_fn once_done;
    int once;            /* under a marker of STORE_REQUESTS */
    char once_key[65];   /* the marker's _id: hex SHA-256 of who, op, model, id */
    char once_token[33]; /* this attempt's mark on the marker it claims */
    char *once_id;       /* the client's requestId, for messages */
    int window_s;
    int replayed;       /* the answer is an earlier attempt's */
    int not_the_server; /* its Unavailable says nothing of the server */
    int once_seen;      /* a marker was found running: poll it, do not claim */
    int64_t wait_until; /* monotonic ms: stop waiting for that attempt */
    int backoff_ms;
    /* Set by a DB thread when the job waits for another attempt: the loop
     * parks it that long (a timer, not a DB thread), then queues it again. */
    int park_ms;
    struct event *timer;
    struct job *pprev, *pnext; /* the store's parked jobs (loop thread) */
} job_t;

struct store {
    struct event_base *base;
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    char *dbname;
    int max_time_ms;
    model_limits_t limits;

    pthread_t *threads;
    int nthreads; /* started successfully */

    /* Held by a DB thread across the read and the conditional write of an
     * update or delete, by hash of _id. The conditional write on {_id, __v}
     * alone is atomic on MongoDB, but FerretDB 1.24 (SQLite) runs it as a
     * find then a write, so concurrent writers of the same __v all
     * succeed there; the lock makes that safe at least within one worker. */
    pthread_mutex_t doc_locks[STORE_DOC_LOCKS];

    size_t max_reply_bytes; /* a read's documents, summed as stored */
    /* The size of the documents recent reads met (__atomic, relaxed): it
     * sizes a read's first batch (read_batch). It starts at the largest
     * document a client can write, rises at once to a bigger average and
     * falls by half the difference per read, so big documents are asked
     * for a few at a time from the first read on, and small ones soon in
     * one batch. */
    size_t doc_size_est;

    /* Idempotent writes: the wall-clock ms after which the next one sweeps
     * expired markers (__atomic; 0: sweep and create the index first). */
    int64_t once_next_sweep;
    int once_indexed; /* until_1 exists (tried again at each sweep until it does) */

    /* Failures whose details stay in the log: each gets an id the client
     * is given instead (error_hidden). */
    uint32_t error_salt;
    uint32_t error_seq; /* __atomic */
    log_limit_t error_log; /* guarded by mu */

    /* Everything below up to the loop-only fields is guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Waiting for a DB thread: one queue per owner (a client session), and
     * the owners with work in a ring the threads serve in turn, so one
     * owner's backlog delays another's next operation by at most one
     * operation per thread. */
    struct owner_q *owners[STORE_OWNER_BUCKETS]; /* by owner, chained */
    struct owner_q *ring_head, *ring_tail;
    job_t *done_head, *done_tail;   /* finished, waiting for the loop */
    size_t queued, running, undelivered;
    int stopping;    /* store_free began: threads exit, new work refused */
    /* While the server is known to be unreachable (monotonic ms), queued
     * operations answer Unavailable at once instead of each waiting out
     * the timeout in turn; one operation at a time probes when it ends. */
    int64_t down_until;
    int probe_ms;
    int timeout_ms; /* how long one probe may take */
    int wake_sent;   /* the eventfd was written since the loop last drained it */

    /* Set before the threads start, closed after they are joined. */
    int wake_fd;

    /* Loop thread only. */
    struct event *wake_ev;
    job_t *parked; /* waiting for another attempt of their request */
    size_t nparked;
    int closing;        /* store_free entered */
    int delivering;     /* inside store_on_wake's delivery loop */
    int free_requested; /* store_free was called from a done callback */
};

/* ------------------------------------------------------------------------ */
/* Process-wide setup                                                         */

/* libmongoc's own messages go to our log. FerretDB 1.24 has no endSessions
 * command, so libmongoc warns about it whenever a pool that ran operations is
 * destroyed; that one is harmless and logged at debug level. */
static void mongoc_log_to_ours(mongoc_log_level_t level, const char *domain, const char *message,
                               void *data)
{
    int ours;
    (void)data;
    switch (level) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL:
        ours = LOG_LEVEL_ERROR;
        break;
    case MONGOC_LOG_LEVEL_WARNING:
        ours = strstr(message, "endSessions") ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARNING;
        break;
    case MONGOC_LOG_LEVEL_MESSAGE:
    case MONGOC_LOG_LEVEL_INFO:
        ours = LOG_LEVEL_INFO;
        break;
    default:
        ours = LOG_LEVEL_DEBUG;
        break;
    }
    if (log_enabled(ours))
        log_write(ours, NULL, "mongoc %s: %s", domain, message);
}

void store_global_init(void)
{
    mongoc_log_set_handler(mongoc_log_to_ours, NULL);
    mongoc_init();
}

void store_global_cleanup(void)
{
    mongoc_cleanup();
}

/* ------------------------------------------------------------------------ */
/* Error objects (built on the DB thread)                                     */

/* Server error codes that mean "this server cannot serve right now" rather
 * than "your operation is wrong": shutdown, stepdown, network trouble. */
static int server_code_unavailable(uint32_t code)
{
    switch (code) {
    case 6:     /* HostUnreachable */
    case 7:     /* HostNotFound */
    case 89:    /* NetworkTimeout */
    case 91:    /* ShutdownInProgress */
    case 189:   /* PrimarySteppedDown */
    case 9001:  /* SocketException */
    case 10107: /* NotWritablePrimary */
    case 11600: /* InterruptedAtShutdown */
    case 11602: /* InterruptedDueToReplStateChange */
    case 13435: /* NotPrimaryNoSecondaryOk */
    case 13436: /* NotPrimaryOrSecondary */
        return 1;
    default:
        return 0;
    }
}

/* Copy into out (size n) the identifier that starts at s: a dotted field path,
 * possibly quoted. Returns 1 when one was found. */
static int copy_path(const char *s, char *out, size_t n)
{
    size_t i = 0;
    while (*s == ' ' || *s == '"')
        s++;
    while (*s && *s != ':' && *s != '"' && *s != ' ' && *s != '}' && i + 1 < n)
        out[i++] = *s++;
    out[i] = '\0';
    return i > 0;
}

/* Whether the index named in msg is the one of path: MongoDB writes
 * "index: path_1 dup key", FerretDB/SQLite "index 'coll_1a2b3c4d_path_1'". */
static int names_index_of(const char *msg, const char *path)
{
    char a[160], b[160];
    snprintf(a, sizeof a, "index: %s_1 ", path);
    snprintf(b, sizeof b, "_%s_1'", path);
    return strstr(msg, a) || strstr(msg, b);
}

/* The field a duplicate-key error is about, best effort: the reply's
 * keyPattern (MongoDB 4.4+; top level for findAndModify, in writeErrors for
 * insert), else the "dup key: { path: ..." part of MongoDB's message, else
 * the index name matched against the model's unique indexes, else the
 * model's only unique index (FerretDB 1.24's insert reports no index). */
static int duplicate_path(const model_t *m, const bson_t *reply, const char *msg, char *out,
                          size_t n)
{
    static const char *const where[] = {"keyPattern", "writeErrors.0.keyPattern"};
    bson_iter_t it, sub;
    for (size_t i = 0; reply && i < sizeof where / sizeof *where; i++) {
        if (bson_iter_init(&it, reply) && bson_iter_find_descendant(&it, where[i], &sub) &&
            BSON_ITER_HOLDS_DOCUMENT(&sub) && bson_iter_recurse(&sub, &it) &&
            bson_iter_next(&it)) {
            snprintf(out, n, "%s", bson_iter_key(&it));
            return 1;
        }
    }
    const char *p = strstr(msg, "dup key: {");
    if (p && copy_path(p + strlen("dup key: {"), out, n))
        return 1;
    if (!m)
        return 0;
    size_t count = model_index_count(m), nunique = 0;
    const char *only = NULL;
    for (size_t i = 0; i < count; i++) {
        const char *path;
        int unique;
        if (model_index_at(m, i, &path, &unique) < 0 || !unique)
            continue;
        nunique++;
        only = path;
        if (names_index_of(msg, path)) {
            snprintf(out, n, "%s", path);
            return 1;
        }
    }
    if (nunique == 1) {
        snprintf(out, n, "%s", only);
        return 1;
    }
    return 0;
}

/* A duplicate key: code 11000 (MongoDB, and FerretDB on insert), or
 * FerretDB 1.24's InternalError (code 1) carrying SQLite's unique-constraint
 * message on update/findAndModify. */
static int is_duplicate(const bson_error_t *e)
{
    return e->code == 11000 || e->code == 11001 ||
           (e->code == 1 && strstr(e->message, "UNIQUE constraint failed"));
}

/* A failure whose details are for the operator, not the client: the
 * driver's text can name hosts, source lines and document contents. The
 * log gets it under an id (at most 10 such lines a second per store, the
 * rest counted in the next one), the client the id. */
static json_t *error_hidden(store_t *st, error_code_t code, const char *what,
                            const bson_error_t *e)
{
    uint32_t seq = __atomic_add_fetch(&st->error_seq, 1, __ATOMIC_RELAXED);
    uint64_t held = 0;
    char id[24];
    int log_it;

    snprintf(id, sizeof id, "%08x%04x", st->error_salt, seq & 0xffff);
    pthread_mutex_lock(&st->mu);
    log_it = log_limit_take(&st->error_log, 10);
    if (log_it) {
        held = st->error_log.suppressed;
        st->error_log.suppressed = 0;
    }
    pthread_mutex_unlock(&st->mu);
    if (log_it)
        log_warning("%s (id %s): %s (domain %u, code %u)%s%llu%s", what, id, e->message,
                    e->domain, e->code, held ? "; " : "", (unsigned long long)held,
                    held ? " more not logged" : "");
    return error_new(code, NULL, "%s (id %s)", what, id);
}

/* Map a libmongoc failure to an error object (error.h):
 * no server / connection trouble -> Unavailable, duplicate key -> Conflict
 * (with errors.<path> when the path is known), anything else ->
 * DatabaseError. reply may be NULL. */
/* Set on the DB thread when a failure left it unknown whether the server
 * did the operation (the connection broke after it was sent): an
 * idempotent write then keeps its claim (run_once). */
static _Thread_local int store_outcome_unknown;

static json_t *error_from_mongoc(store_t *st, const model_t *m, const bson_error_t *e,
                                 const bson_t *reply)
{
    if (e->domain == MONGOC_ERROR_STREAM)
        store_outcome_unknown = 1;
    if (e->domain == MONGOC_ERROR_SERVER_SELECTION || e->domain == MONGOC_ERROR_STREAM ||
        (e->domain == MONGOC_ERROR_SERVER && server_code_unavailable(e->code)))
        return error_hidden(st, ERROR_UNAVAILABLE, "database unavailable", e);
    if (!is_duplicate(e))
        return error_hidden(st, ERROR_DATABASE, "database error", e);
    char path[128];
    if (!duplicate_path(m, reply, e->message, path, sizeof path))
        return error_new(ERROR_CONFLICT, NULL, "duplicate key");
    json_t *one = json_object(), *errors = NULL;
    if (one && (json_object_set(one, "kind", json_string("unique")) < 0 ||
                json_object_set(one, "path", json_string(path)) < 0 ||
                json_object_set(one, "message", json_string("value is already taken")) < 0)) {
        json_free(one);
        one = NULL;
    }
    if (one) {
        errors = json_object();
        if (!errors)
            json_free(one);
        else if (json_object_set(errors, path, one) < 0) { /* frees one */
            json_free(errors);
            errors = NULL;
        }
    }
    return error_new(ERROR_CONFLICT, errors, "duplicate key on %s", path);
}

static json_t *error_nomem(void)
{
    return error_new(ERROR_DATABASE, NULL, "out of memory");
}

/* ------------------------------------------------------------------------ */
/* Small BSON helpers (DB thread)                                             */

/* The stored __v; *present says whether the document has a numeric one. */
static int64_t doc_version(const bson_t *doc, int *present)
{
    bson_iter_t it;
    *present = 0;
    if (bson_iter_init_find(&it, doc, "__v") && BSON_ITER_HOLDS_NUMBER(&it)) {
        *present = 1;
        return bson_iter_as_int64(&it);
    }
    return 0;
}

/* data.__v when it is a number; returns 1 and sets *v, else 0. */
static int data_version(const json_t *data, int64_t *v)
{
    const json_t *jv = data ? json_object_get(data, "__v") : NULL;
    if (!jv || jv->type != JSON_NUMBER)
        return 0;
    if (jv->u.num.is_int)
        *v = jv->u.num.i;
    else if (jv->u.num.d >= -9e18 && jv->u.num.d <= 9e18) /* false for NaN */
        *v = (int64_t)jv->u.num.d;
    else
        return 0;
    return 1;
}

/* {_id: oid} and, when with_version, the __v the document had when read
 * ({__v: v}, or {__v: {$exists: false}} for documents written without one). */
static void filter_by_id(bson_t *f, const bson_oid_t *oid, int with_version, int present,
                         int64_t v)
{
    bson_init(f);
    BSON_APPEND_OID(f, "_id", oid);
    if (!with_version)
        return;
    if (present) {
        BSON_APPEND_INT64(f, "__v", v);
    } else {
        bson_t sub;
        BSON_APPEND_DOCUMENT_BEGIN(f, "__v", &sub);
        BSON_APPEND_BOOL(&sub, "$exists", false);
        bson_append_document_end(f, &sub);
    }
}

/* {$and: [a, b]} into out (initialised here). */
static void filter_and(bson_t *out, const bson_t *a, const bson_t *b)
{
    bson_t arr;

    bson_init(out);
    BSON_APPEND_ARRAY_BEGIN(out, "$and", &arr);
    BSON_APPEND_DOCUMENT(&arr, "0", a);
    BSON_APPEND_DOCUMENT(&arr, "1", b);
    bson_append_array_end(out, &arr);
}

/* A copy of doc with __v set to v (in place if present, else appended).
 * Stored as int32 when it fits, as Mongoose does. */
static bson_t *with_version(const bson_t *doc, int64_t v)
{
    bson_t *out = bson_new();
    bson_iter_t it;
    int done = 0;
    if (!bson_iter_init(&it, doc))
        goto fail;
    while (bson_iter_next(&it)) {
        if (strcmp(bson_iter_key(&it), "__v") == 0) {
            if (done)
                continue;
            done = 1;
            if (v >= INT32_MIN && v <= INT32_MAX)
                BSON_APPEND_INT32(out, "__v", (int32_t)v);
            else
                BSON_APPEND_INT64(out, "__v", v);
        } else if (!bson_append_iter(out, NULL, 0, &it)) {
            goto fail;
        }
    }
    if (!done) {
        if (v >= INT32_MIN && v <= INT32_MAX)
            BSON_APPEND_INT32(out, "__v", (int32_t)v);
        else
            BSON_APPEND_INT64(out, "__v", v);
    }
    return out;
fail:
    bson_destroy(out);
    return NULL;
}

static json_t *doc_to_json(const bson_t *doc, json_t **error)
{
    json_t *j = model_to_json(doc);
    if (!j)
        *error = error_nomem();
    return j;
}

/* Read the document with this _id into *out (initialised by this function
 * when found). Returns 1 found, 0 absent, -1 with *error. */
static int find_by_id(store_t *st, const model_t *m, mongoc_collection_t *coll,
                      const bson_oid_t *oid, bson_t *out, json_t **error)
{
    bson_t filter, opts = BSON_INITIALIZER;
    bson_error_t e;
    const bson_t *doc, *reply;
    int rc = 0;

    bson_init(&filter);
    BSON_APPEND_OID(&filter, "_id", oid);
    BSON_APPEND_INT64(&opts, "limit", 1);
    BSON_APPEND_INT64(&opts, "maxTimeMS", st->max_time_ms);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
    if (mongoc_cursor_next(cur, &doc)) {
        bson_copy_to(doc, out);
        rc = 1;
    } else if (mongoc_cursor_error_document(cur, &e, &reply)) {
        *error = error_from_mongoc(st, m, &e, reply);
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(&filter);
    bson_destroy(&opts);
    return rc;
}

/* data._id as an ObjectId, or -1 with *error (InvalidRequest). */
static int data_id(const model_t *m, const json_t *data, bson_oid_t *oid, json_t **error)
{
    const json_t *id = data && data->type == JSON_OBJECT ? json_object_get(data, "_id") : NULL;
    if (!id) {
        *error = error_new(ERROR_INVALID_REQUEST, NULL, "%s: missing _id", model_name(m));
        return -1;
    }
    return model_cast_id(id, oid, error);
}

static json_t *not_found(const model_t *m, const bson_oid_t *oid)
{
    char hex[25];
    bson_oid_to_string(oid, hex);
    return error_new(ERROR_NOT_FOUND, NULL, "no %s with _id %s", model_name(m), hex);
}

static json_t *stale(int64_t stored, int64_t theirs)
{
    return error_new(ERROR_CONFLICT, NULL,
                     "document was modified by someone else (version %" PRId64
                     ", yours %" PRId64 ")",
                     stored, theirs);
}

/* ------------------------------------------------------------------------ */
/* Operations (DB thread)                                                     */

static void run_create(store_t *st, mongoc_client_t *client, job_t *job)
{
    bson_t *doc = model_prepare_create(job->model, job->input, &job->error);
    if (!doc)
        return;
    if (model_has_rules(job->model)) {
        /* the rule sees the document as it would be stored */
        json_t *j = doc_to_json(doc, &job->error);
        int ok = j && model_access_check(job->model, MODEL_CREATE, job->auth, j, NULL, NULL);
        json_free(j);
        if (!ok) {
            if (!job->error)
                job->error = model_access_forbidden(job->model, MODEL_CREATE);
            bson_destroy(doc);
            return;
        }
    }
    mongoc_collection_t *coll =
        mongoc_client_get_collection(client, st->dbname, model_collection(job->model));
    bson_t reply, opts = BSON_INITIALIZER;
    bson_error_t e;
    /* libmongoc puts insert_one's unknown options at the command's top
     * level, where maxTimeMS belongs (MongoDB and FerretDB accept it). */
    BSON_APPEND_INT64(&opts, "maxTimeMS", st->max_time_ms);
    if (mongoc_collection_insert_one(coll, doc, &opts, &reply, &e))
        job->result = doc_to_json(doc, &job->error);
    else
        job->error = error_from_mongoc(st, job->model, &e, &reply);
    bson_destroy(&opts);
    bson_destroy(&reply);
    mongoc_collection_destroy(coll);
    bson_destroy(doc);
}

/* opt.query is exactly {_id: "<hex>"} (or {_id: {$oid: "<hex>"}}). */
static const json_t *single_id(const json_t *opt)
{
    const json_t *q = opt ? json_object_get(opt, "query") : NULL;
    if (!q || q->type != JSON_OBJECT || q->u.obj.len != 1 || strcmp(q->u.obj.keys[0], "_id"))
        return NULL;
    const json_t *id = q->u.obj.vals[0];
    if (id->type == JSON_STRING)
        return id;
    if (id->type == JSON_OBJECT && id->u.obj.len == 1 && !strcmp(id->u.obj.keys[0], "$oid"))
        return id;
    return NULL;
}

/* How many documents a read's next batch asks for: as many as fit in
 * STORE_BATCH_BYTES and in what is left of max_reply_bytes, given the
 * documents' expected size, at least one and at most `left` (the
 * documents the limit still allows; 0 when there is no limit). The
 * server's reply to a batch is held whole in the worker, so this is what
 * keeps a read of big documents small in memory, not only the answer's
 * cap. (A batch is never over 16 MiB whatever is asked: the protocol's
 * bound, met only by documents far bigger than the ones before them.) */
static uint32_t read_batch(size_t budget, size_t avg, int64_t left)
{
    size_t bytes = budget < STORE_BATCH_BYTES ? budget : STORE_BATCH_BYTES;
    size_t n = bytes / (avg ? avg : 1) + 1;
    if (n > STORE_BATCH_MAX_DOCS)
        n = STORE_BATCH_MAX_DOCS;
    if (left > 0 && (size_t)left < n)
        n = (size_t)left;
    return (uint32_t)n;
}

static void run_read(store_t *st, mongoc_client_t *client, job_t *job)
{
    const model_t *m = job->model;
    const json_t *opt = job->input && job->input->type == JSON_OBJECT ? job->input : NULL;
    const json_t *id = single_id(opt);
    bson_t *filter = NULL, *proj = NULL, opts = BSON_INITIALIZER;
    model_sorting_t sorting = {0};
    mongoc_collection_t *coll = NULL;
    mongoc_cursor_t *cur = NULL;
    json_t *arr = NULL;
    bson_oid_t oid;
    size_t total = 0, count = 0; /* the documents' bytes as stored, and how many */

    memset(&oid, 0, sizeof oid);
    if (id) {
        if (model_cast_id(id, &oid, &job->error) < 0)
            goto done;
        filter = bson_new();
        BSON_APPEND_OID(filter, "_id", &oid);
    } else {
        filter = model_sanitize_filter(m, opt ? json_object_get(opt, "query") : NULL,
                                       &st->limits, &job->error);
        if (!filter)
            goto done;
    }
    if (model_has_rules(m)) {
        /* the read rule joins the filter: exactly the readable documents */
        bson_t *rf = NULL, both;
        rule_match_t rm = model_access_filter(m, MODEL_READ, job->auth, NULL, &rf, &job->error);
        if (job->error)
            goto done;
        if (rm == RULE_NONE) {
            if (id)
                job->error = not_found(m, &oid);
            else if (!(job->result = json_array()))
                job->error = error_nomem();
            goto done;
        }
        if (rm == RULE_SOME) {
            filter_and(&both, filter, rf);
            bson_destroy(rf);
            bson_destroy(filter);
            filter = bson_copy(&both);
            bson_destroy(&both);
        }
    }
    if (model_sanitize_sorting(m, opt ? json_object_get(opt, "sorting") : NULL, &st->limits,
                               &sorting, &job->error) < 0)
        goto done;
    proj = model_sanitize_fields(m, opt ? json_object_get(opt, "fields") : NULL, &job->error);
    if (!proj)
        goto done;

    if (!bson_empty(proj))
        BSON_APPEND_DOCUMENT(&opts, "projection", proj);
    if (id) {
        BSON_APPEND_INT64(&opts, "limit", 1);
    } else {
        if (sorting.sort && !bson_empty(sorting.sort))
            BSON_APPEND_DOCUMENT(&opts, "sort", sorting.sort);
        /* model caps the limit; the store keeps the cap even if it did not */
        int64_t cap = (int64_t)st->limits.max_read_limit, limit = sorting.limit;
        if (cap > 0 && (limit <= 0 || limit > cap))
            limit = cap;
        if (limit > 0)
            BSON_APPEND_INT64(&opts, "limit", limit);
        if (sorting.skip > 0)
            BSON_APPEND_INT64(&opts, "skip", sorting.skip);
        size_t est = __atomic_load_n(&st->doc_size_est, __ATOMIC_RELAXED);
        BSON_APPEND_INT64(&opts, "batchSize", read_batch(st->max_reply_bytes, est, limit));
        sorting.limit = limit;
    }
    BSON_APPEND_INT64(&opts, "maxTimeMS", st->max_time_ms);

    coll = mongoc_client_get_collection(client, st->dbname, model_collection(m));
    cur = mongoc_collection_find_with_opts(coll, filter, &opts, NULL);
    const bson_t *doc, *reply;
    bson_error_t e;
    if (id) {
        if (mongoc_cursor_next(cur, &doc)) {
            job->result = doc_to_json(doc, &job->error);
        } else if (mongoc_cursor_error_document(cur, &e, &reply)) {
            job->error = error_from_mongoc(st, m, &e, reply);
        } else {
            job->error = not_found(m, &oid);
        }
        goto done;
    }
    arr = json_array();
    if (!arr) {
        job->error = error_nomem();
        goto done;
    }
    while (mongoc_cursor_next(cur, &doc)) {
        /* The answer is built here and queued whole for the client: past
         * max_reply_bytes, refuse it rather than build it. */
        total += doc->len;
        count++;
        if (total <= st->max_reply_bytes)
            mongoc_cursor_set_batch_size(
                cur, read_batch(st->max_reply_bytes - total, total / count,
                                sorting.limit > 0 ? sorting.limit - (int64_t)count : 0));
        if (total > st->max_reply_bytes) {
            job->error = error_new(ERROR_INVALID_REQUEST, NULL,
                                   "%s: the answer would be over max_reply_bytes (%zu bytes): "
                                   "ask for fewer documents (sorting.limit) or fields",
                                   model_name(m), st->max_reply_bytes);
            goto done;
        }
        json_t *j = model_to_json(doc);
        if (!j || json_array_append(arr, j) < 0) {
            job->error = error_nomem();
            goto done;
        }
    }
    if (mongoc_cursor_error_document(cur, &e, &reply)) {
        job->error = error_from_mongoc(st, m, &e, reply);
        goto done;
    }
    job->result = arr;
    arr = NULL;
done:
    if (count) {
        /* Drift toward what this read met, refused or not: the next read's
         * first batch is sized by it. Races between threads only blur it. */
        size_t est = __atomic_load_n(&st->doc_size_est, __ATOMIC_RELAXED), avg = total / count;
        __atomic_store_n(&st->doc_size_est, avg >= est ? avg : avg + (est - avg) / 2,
                         __ATOMIC_RELAXED);
    }
    json_free(arr);
    if (cur)
        mongoc_cursor_destroy(cur);
    if (coll)
        mongoc_collection_destroy(coll);
    bson_destroy(&opts);
    if (filter)
        bson_destroy(filter);
    if (proj)
        bson_destroy(proj);
    model_sorting_clear(&sorting);
}

/* findAndModify on {_id[, __v]}: replace with `update`, or remove when it is
 * NULL. findAndModify rather than replace_one/delete_one because it takes
 * maxTimeMS as a command option (libmongoc puts unknown replace_one options
 * inside the update statement, where servers refuse them) and answers the
 * exact document written or removed. Returns 1 with job->result, 0 when
 * nothing matched (nothing written), -1 with job->error. */
static int find_and_modify(store_t *st, mongoc_collection_t *coll, job_t *job,
                           const bson_t *filter, const bson_t *update)
{
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    bson_t reply;
    bson_error_t e;
    bson_iter_t it;
    int rc = -1;

    if (update) {
        if (!mongoc_find_and_modify_opts_set_update(fam, update))
            goto nomem;
        mongoc_find_and_modify_opts_set_flags(fam, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    } else {
        mongoc_find_and_modify_opts_set_flags(fam, MONGOC_FIND_AND_MODIFY_REMOVE);
    }
    if (!mongoc_find_and_modify_opts_set_max_time_ms(fam, (uint32_t)st->max_time_ms))
        goto nomem;
    if (!mongoc_collection_find_and_modify_with_opts(coll, filter, fam, &reply, &e)) {
        job->error = error_from_mongoc(st, job->model, &e, &reply);
    } else if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len;
        const uint8_t *data;
        bson_t doc;
        bson_iter_document(&it, &len, &data);
        if (bson_init_static(&doc, data, len)) {
            job->result = doc_to_json(&doc, &job->error);
            rc = job->result ? 1 : -1;
        } else {
            job->error = error_new(ERROR_DATABASE, NULL, "database error: bad reply");
        }
    } else {
        rc = 0;
    }
    bson_destroy(&reply);
    mongoc_find_and_modify_opts_destroy(fam);
    return rc;
nomem:
    mongoc_find_and_modify_opts_destroy(fam);
    job->error = error_nomem();
    return -1;
}

/* The rules of m for a write of the stored document current (and next,
 * the document an update would save; NULL for a delete): NotFound when
 * the session may not read it, Forbidden when the write's rule refuses.
 * Otherwise the rule's filter on the stored document goes into *filter
 * (which already selects it by _id and __v), so that the check and the
 * write are one database step even against writers outside dnoded; *old
 * gets current as JSON. 0, or -1 with job->error. */
static int write_rules(job_t *job, const bson_oid_t *oid, const bson_t *current,
                       const bson_t *next, bson_t *filter, json_t **old)
{
    const model_t *m = job->model;
    model_op_t op = next ? MODEL_UPDATE : MODEL_DELETE;
    json_t *cur = NULL, *nj = NULL;
    bson_t *rf = NULL, both;
    int rc = -1;

    if (!model_has_rules(m))
        return 0;
    if (!(cur = doc_to_json(current, &job->error)) || (next && !(nj = doc_to_json(next, &job->error))))
        goto out;
    if (!model_access_check(m, MODEL_READ, job->auth, cur, NULL, NULL)) {
        job->error = not_found(m, oid);
        goto out;
    }
    if (!model_access_check(m, op, job->auth, cur, cur, nj)) {
        job->error = model_access_forbidden(m, op);
        goto out;
    }
    switch (model_access_filter(m, op, job->auth, nj, &rf, &job->error)) {
    case RULE_ALL:
        break;
    case RULE_NONE:
        if (!job->error)
            job->error = model_access_forbidden(m, op);
        goto out;
    case RULE_SOME:
        filter_and(&both, filter, rf);
        bson_destroy(filter);
        bson_copy_to(&both, filter);
        bson_destroy(&both);
        bson_destroy(rf);
        break;
    }
    *old = cur;
    cur = NULL;
    rc = 0;
out:
    json_free(cur);
    json_free(nj);
    return rc;
}

/* One read-merge-write attempt. Returns 1 when written, 0 when the document
 * changed between the read and the write (nothing written, no error), -1
 * with job->error. */
static int update_once(store_t *st, mongoc_collection_t *coll, job_t *job, const bson_oid_t *oid)
{
    const model_t *m = job->model;
    bson_t current, filter;
    bson_t *merged = NULL, *next = NULL;
    int rc = -1, present;
    int64_t theirs;

    int found = find_by_id(st, m, coll, oid, &current, &job->error);
    if (found < 0)
        return -1;
    if (found == 0) {
        job->error = not_found(m, oid);
        return -1;
    }
    int64_t stored = doc_version(&current, &present);
    if (model_versioned(m) && !data_version(job->input, &theirs)) {
        /* Without the version it was read at, an update of a versioned
         * model would overwrite whatever was saved meanwhile. */
        job->error = error_new(ERROR_CONFLICT, NULL,
                               "%s is versioned: an update must carry __v (stored __v is %lld)",
                               model_name(m), (long long)stored);
        goto out;
    }
    if (model_versioned(m) && theirs < stored) {
        job->error = stale(stored, theirs);
        goto out;
    }
    if (stored == INT64_MAX) {
        job->error = error_new(ERROR_DATABASE, NULL, "database error: __v overflow");
        goto out;
    }
    merged = model_prepare_update(m, &current, job->input, &job->error);
    if (!merged)
        goto out;
    next = with_version(merged, stored + 1);
    if (!next) {
        job->error = error_nomem();
        goto out;
    }
    filter_by_id(&filter, oid, 1, present, stored);
    json_free(job->old);
    job->old = NULL;
    if (write_rules(job, oid, &current, next, &filter, &job->old) < 0) {
        bson_destroy(&filter);
        goto out;
    }
    rc = find_and_modify(st, coll, job, &filter, next);
    bson_destroy(&filter);
out:
    bson_destroy(&current);
    if (merged)
        bson_destroy(merged);
    if (next)
        bson_destroy(next);
    return rc;
}

static pthread_mutex_t *doc_lock(store_t *st, const bson_oid_t *oid)
{
    return &st->doc_locks[bson_oid_hash(oid) % STORE_DOC_LOCKS];
}

static void run_update(store_t *st, mongoc_client_t *client, job_t *job)
{
    const model_t *m = job->model;
    bson_oid_t oid;
    if (data_id(m, job->input, &oid, &job->error) < 0)
        return;
    mongoc_collection_t *coll =
        mongoc_client_get_collection(client, st->dbname, model_collection(m));
    int attempts = model_versioned(m) ? 1 : STORE_WRITE_ATTEMPTS, rc = 0;
    pthread_mutex_lock(doc_lock(st, &oid));
    for (int i = 0; i < attempts; i++) {
        rc = update_once(st, coll, job, &oid);
        if (rc != 0)
            break;
    }
    pthread_mutex_unlock(doc_lock(st, &oid));
    if (rc == 0)
        job->error = error_new(ERROR_CONFLICT, NULL,
                               "document was modified by someone else while saving");
    mongoc_collection_destroy(coll);
}

/* Delete: read first (NotFound, and the versioned __v check), then remove
 * with findAndModify so the answer is exactly the document that was
 * removed. Versioned models remove only the version that was checked;
 * unversioned ones remove by _id alone. */
static int delete_once(store_t *st, mongoc_collection_t *coll, job_t *job, const bson_oid_t *oid)
{
    const model_t *m = job->model;
    bson_t current, filter;
    int present;
    int64_t theirs;
    int versioned = model_versioned(m);

    int found = find_by_id(st, m, coll, oid, &current, &job->error);
    if (found < 0)
        return -1;
    if (found == 0) {
        job->error = not_found(m, oid);
        return -1;
    }
    int64_t stored = doc_version(&current, &present);
    if (versioned && data_version(job->input, &theirs) && theirs < stored) {
        bson_destroy(&current);
        job->error = stale(stored, theirs);
        return -1;
    }
    /* with rules, the version too: the rule was checked on this version */
    filter_by_id(&filter, oid, versioned || model_has_rules(m), present, stored);
    json_t *old = NULL;
    int rc = write_rules(job, oid, &current, NULL, &filter, &old);
    bson_destroy(&current);
    json_free(old);
    if (rc == 0)
        rc = find_and_modify(st, coll, job, &filter, NULL);
    bson_destroy(&filter);
    return rc;
}

static void run_delete(store_t *st, mongoc_client_t *client, job_t *job)
{
    const model_t *m = job->model;
    bson_oid_t oid;
    if (data_id(m, job->input, &oid, &job->error) < 0)
        return;
    mongoc_collection_t *coll =
        mongoc_client_get_collection(client, st->dbname, model_collection(m));
    pthread_mutex_lock(doc_lock(st, &oid));
    int rc = delete_once(st, coll, job, &oid);
    pthread_mutex_unlock(doc_lock(st, &oid));
    if (rc == 0) {
        /* Gone (unversioned: it was removed by someone else meanwhile) or
         * saved again since the check (versioned). */
        if (model_versioned(m))
            job->error = error_new(ERROR_CONFLICT, NULL,
                                   "document was modified by someone else while deleting");
        else
            job->error = not_found(m, &oid);
    }
    mongoc_collection_destroy(coll);
}

/* createIndexes for every indexed field of every model, one command per
 * index so that one conflicting index does not hide the others. Named
 * "path_1" as Mongoose names them, so an existing Mongoose index is found as
 * it is. Failures are logged only. */
/* Ensure the ascending index "<path>_1" on coll (named collname in the log
 * lines), unique if asked. 0, or -1 with a warning logged. */
static int ensure_index(store_t *st, mongoc_collection_t *coll, const char *collname,
                        const char *path, int unique)
{
    bson_t cmd = BSON_INITIALIZER, indexes, spec, key, reply;
    bson_error_t e;
    char name[256];
    int rc = 0;

    snprintf(name, sizeof name, "%s_1", path);
    BSON_APPEND_UTF8(&cmd, "createIndexes", collname);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &indexes);
    BSON_APPEND_DOCUMENT_BEGIN(&indexes, "0", &spec);
    BSON_APPEND_DOCUMENT_BEGIN(&spec, "key", &key);
    BSON_APPEND_INT32(&key, path, 1);
    bson_append_document_end(&spec, &key);
    BSON_APPEND_UTF8(&spec, "name", name);
    if (unique)
        BSON_APPEND_BOOL(&spec, "unique", true);
    bson_append_document_end(&indexes, &spec);
    bson_append_array_end(&cmd, &indexes);
    if (!mongoc_collection_write_command_with_opts(coll, &cmd, NULL, &reply, &e)) {
        log_warning("store: cannot create index %s on %s.%s: %s", name, st->dbname, collname,
                    e.message);
        rc = -1;
    } else {
        log_debug("store: index %s on %s.%s ensured", name, st->dbname, collname);
    }
    bson_destroy(&reply);
    bson_destroy(&cmd);
    return rc;
}

static void run_indexes(store_t *st, mongoc_client_t *client, job_t *job)
{
    size_t nmodels = model_set_count(job->models);
    for (size_t i = 0; i < nmodels; i++) {
        const model_t *m = model_set_at(job->models, i);
        size_t n = model_index_count(m);
        if (n == 0)
            continue;
        mongoc_collection_t *coll =
            mongoc_client_get_collection(client, st->dbname, model_collection(m));
        for (size_t k = 0; k < n; k++) {
            const char *path;
            int unique;
            if (model_index_at(m, k, &path, &unique) == 0)
                ensure_index(st, coll, model_collection(m), path, unique);
        }
        mongoc_collection_destroy(coll);
    }
}

/* Run job's operation itself; exactly one of result and error is set
 * afterwards when it has a done callback. */
static void job_run_op(store_t *st, mongoc_client_t *client, job_t *job)
{
    switch (job->kind) {
    case JOB_CREATE:
        run_create(st, client, job);
        break;
    case JOB_READ:
        run_read(st, client, job);
        break;
    case JOB_UPDATE:
        run_update(st, client, job);
        break;
    case JOB_DELETE:
        run_delete(st, client, job);
        break;
    case JOB_INDEXES:
        run_indexes(st, client, job);
        break;
    }
    if (job->result && job->error) {
        json_free(job->result);
        job->result = NULL;
    }
    if (!job->result && !job->error && (job->done || job->once_done))
        job->error = error_nomem();
}

/* ------------------------------------------------------------------------ */
/* Idempotent writes (DB thread; see store_submit_once)                       */

/* A request has up to two documents in STORE_REQUESTS:
 *   the claim   {_id: key, o: token of the attempt that claimed it,
 *                at: when, lease: until when that attempt may run,
 *                until: when the claim expires (the later of lease and
 *                at plus the window)}
 *   the answer  {_id: key + "/a", o: the same token, ok: true (r is the
 *                document) | false (r is the error), r: JSON text,
 *                until: at plus the window}
 * Two documents rather than one updated in place because the first
 * attempt then only inserts: FerretDB 1.24 (SQLite) scans the collection
 * for every find, update and delete, even by _id, but not for an insert,
 * so among 2,000 markers an update made each write about 14 ms slower,
 * and an insert costs the same whatever the collection holds. Every
 * reader compares the dates with its own clock. */

#define ONCE_CLAIMS 4         /* claims in one pass, racing other takers */
#define ONCE_FIRST_POLL_MS 25 /* waiting for a running attempt: first pause, */
#define ONCE_MAX_POLL_MS 1000 /* doubling up to this */
#define ONCE_SWEEP_MS 60000   /* how often a store removes expired markers */
#define ONCE_MAX_DEPTH 256    /* a stored answer's JSON nesting (max_json_depth's cap) */
#define ONCE_MAX_ANSWER (1 << 20) /* a longer answer is kept as a Conflict saying so */
#define STORE_MAX_PARKED 256      /* retries waiting for their first attempt, per store */

static int64_t store_now_ms(void);

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The longest an attempt of job can run once it has claimed its request:
 * each database step it may take at the socket timeout. */
static int64_t once_lease_ms(const store_t *st, const job_t *job)
{
    int steps = 2; /* the claim and the answer */

    switch (job->kind) {
    case JOB_CREATE:
        steps += 1;
        break;
    case JOB_DELETE:
        steps += 2;
        break;
    case JOB_UPDATE:
        steps += 2 * (model_versioned(job->model) ? 1 : STORE_WRITE_ATTEMPTS);
        break;
    default:
        break;
    }
    return (int64_t)steps * (st->max_time_ms + st->timeout_ms);
}

/* One of a request's documents, as read. */
typedef struct once_doc {
    char o[33];
    int64_t lease; /* the claim's (wall-clock ms) */
    int64_t until;
    int ok;  /* the answer's: r is a result (else an error) */
    char *r; /* the answer's, malloc'd JSON text */
    uint32_t rlen;
} once_doc_t;

/* key + "/a": the answer's _id. */
static void once_answer_key(const job_t *job, char out[68])
{
    snprintf(out, 68, "%s/a", job->once_key);
}

/* A warning about one request, through the store's log limit (a client
 * sends as many requests as it likes). */
static void once_warn(store_t *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void once_warn(store_t *st, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int log_it;

    pthread_mutex_lock(&st->mu);
    log_it = log_limit_take(&st->error_log, 10);
    pthread_mutex_unlock(&st->mu);
    if (!log_it)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_warning("store: %s", line);
}

/* Every so often (ONCE_SWEEP_MS per store), remove the documents past
 * their `until`; the first time, also make sure `until` is indexed.
 * Failures are logged only: expired documents count as absent anyway. */
static void once_sweep(store_t *st, mongoc_collection_t *coll, int64_t now)
{
    int64_t next = __atomic_load_n(&st->once_next_sweep, __ATOMIC_RELAXED);
    bson_t filter = BSON_INITIALIZER, lt, reply;
    bson_error_t e;

    if (now < next || !__atomic_compare_exchange_n(&st->once_next_sweep, &next, now + ONCE_SWEEP_MS,
                                                   0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return;
    /* A plain index: FerretDB 1.24 has no TTL indexes (expireAfterSeconds
     * is "not implemented yet"). */
    if (!__atomic_load_n(&st->once_indexed, __ATOMIC_RELAXED) &&
        ensure_index(st, coll, STORE_REQUESTS, "until", 0) == 0)
        __atomic_store_n(&st->once_indexed, 1, __ATOMIC_RELAXED);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "until", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", now);
    bson_append_document_end(&filter, &lt);
    if (!mongoc_collection_delete_many(coll, &filter, NULL, &reply, &e))
        log_warning("store: cannot remove expired markers from %s.%s: %s", st->dbname,
                    STORE_REQUESTS, e.message);
    bson_destroy(&reply);
    bson_destroy(&filter);
}

/* Insert doc. 1 inserted, 0 when its _id exists, -1 with job->error. */
static int once_insert(store_t *st, mongoc_collection_t *coll, job_t *job, const bson_t *doc)
{
    bson_t opts = BSON_INITIALIZER, reply;
    bson_error_t e;
    int rc = 1;

    BSON_APPEND_INT64(&opts, "maxTimeMS", st->max_time_ms);
    if (!mongoc_collection_insert_one(coll, doc, &opts, &reply, &e)) {
        if (is_duplicate(&e)) {
            rc = 0;
        } else {
            job->error = error_from_mongoc(st, NULL, &e, &reply);
            rc = -1;
        }
    }
    bson_destroy(&reply);
    bson_destroy(&opts);
    return rc;
}

/* Claim job's request at now. 1 claimed, 0 when it is claimed already, -1
 * with job->error. */
static int once_claim(store_t *st, mongoc_collection_t *coll, job_t *job, int64_t now)
{
    int64_t lease = now + once_lease_ms(st, job), kept = now + (int64_t)job->window_s * 1000;
    bson_t doc = BSON_INITIALIZER;
    int rc;

    BSON_APPEND_UTF8(&doc, "_id", job->once_key);
    BSON_APPEND_UTF8(&doc, "o", job->once_token);
    BSON_APPEND_DATE_TIME(&doc, "at", now);
    BSON_APPEND_DATE_TIME(&doc, "lease", lease);
    BSON_APPEND_DATE_TIME(&doc, "until", lease > kept ? lease : kept);
    rc = once_insert(st, coll, job, &doc);
    bson_destroy(&doc);
    return rc;
}

/* Read the document _id of job's request into *d. 1 found, 0 absent, -1
 * with job->error. By _id alone, one document at a time: FerretDB 1.24
 * scans for {_id: {$in: [claim, answer]}} eight times as long as for one
 * _id. */
static int once_read(store_t *st, mongoc_collection_t *coll, job_t *job, const char *id,
                     once_doc_t *d)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    const bson_t *doc, *reply;
    bson_error_t e;
    bson_iter_t it;
    int rc = 0;

    memset(d, 0, sizeof *d);
    BSON_APPEND_UTF8(&filter, "_id", id);
    BSON_APPEND_INT64(&opts, "limit", 1);
    BSON_APPEND_INT64(&opts, "maxTimeMS", st->max_time_ms);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
    if (mongoc_cursor_next(cur, &doc)) {
        rc = 1;
        if (bson_iter_init(&it, doc)) {
            while (bson_iter_next(&it)) {
                const char *k = bson_iter_key(&it);
                if (!strcmp(k, "o") && BSON_ITER_HOLDS_UTF8(&it))
                    snprintf(d->o, sizeof d->o, "%s", bson_iter_utf8(&it, NULL));
                else if (!strcmp(k, "lease") && BSON_ITER_HOLDS_DATE_TIME(&it))
                    d->lease = bson_iter_date_time(&it);
                else if (!strcmp(k, "until") && BSON_ITER_HOLDS_DATE_TIME(&it))
                    d->until = bson_iter_date_time(&it);
                else if (!strcmp(k, "ok") && BSON_ITER_HOLDS_BOOL(&it))
                    d->ok = bson_iter_bool(&it);
                else if (!strcmp(k, "r") && BSON_ITER_HOLDS_UTF8(&it) && !d->r) {
                    const char *r = bson_iter_utf8(&it, &d->rlen);
                    if ((d->r = malloc((size_t)d->rlen + 1)) == NULL) {
                        job->error = error_nomem();
                        rc = -1;
                        break;
                    }
                    memcpy(d->r, r, (size_t)d->rlen + 1);
                }
            }
        }
    } else if (mongoc_cursor_error_document(cur, &e, &reply)) {
        job->error = error_from_mongoc(st, NULL, &e, reply);
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(&opts);
    bson_destroy(&filter);
    return rc;
}

/* Remove the document _id that attempt token wrote (a claim after a
 * transient failure, or an expired claim or answer before claiming
 * again); the token keeps a racing taker from removing a fresh claim.
 * Failures are logged only: the document then expires by itself. */
static void once_remove(store_t *st, mongoc_collection_t *coll, const char *id, const char *token)
{
    bson_t filter = BSON_INITIALIZER, reply;
    bson_error_t e;

    BSON_APPEND_UTF8(&filter, "_id", id);
    BSON_APPEND_UTF8(&filter, "o", token);
    if (!mongoc_collection_delete_one(coll, &filter, NULL, &reply, &e))
        json_free(error_hidden(st, ERROR_DATABASE, "cannot remove a request marker", &e));
    bson_destroy(&reply);
    bson_destroy(&filter);
}

/* Store job's answer for the request it claimed at `at`, for window_s
 * seconds. A failure is logged: the answer still goes to the client, and
 * the claim counts as running until its lease ends (then a retry runs the
 * write again). */
static void once_answer(store_t *st, mongoc_collection_t *coll, job_t *job, int64_t at)
{
    const json_t *answer = job->error ? job->error : job->result;
    bson_t doc = BSON_INITIALIZER;
    json_t *error = NULL;
    char akey[68];
    size_t len;
    char *text = json_dump(answer, &len);
    int ok = job->error == NULL;

    if (text != NULL && len > ONCE_MAX_ANSWER) {
        /* A retry is told the request was done, not sent a large copy of
         * its answer: a client does not fill this collection with its
         * documents. */
        json_t *note = error_new(ERROR_CONFLICT, NULL,
                                 "request %s was done already; its answer was too large to keep "
                                 "(read the document again)",
                                 job->once_id);
        free(text);
        text = note != NULL ? json_dump(note, &len) : NULL;
        json_free(note);
        ok = 0;
    }
    if (text == NULL) {
        log_debug("store: out of memory recording request %s", job->once_id);
        return;
    }
    once_answer_key(job, akey);
    BSON_APPEND_UTF8(&doc, "_id", akey);
    BSON_APPEND_UTF8(&doc, "o", job->once_token);
    BSON_APPEND_BOOL(&doc, "ok", ok);
    bson_append_utf8(&doc, "r", 1, text, (int)len);
    BSON_APPEND_DATE_TIME(&doc, "until", at + (int64_t)job->window_s * 1000);
    {
        /* once_insert reports through job->error, which holds the answer */
        json_t *kept = job->error;
        job->error = NULL;
        if (once_insert(st, coll, job, &doc) == 0) {
            /* an answer of an earlier window nobody removed */
            bson_t old = BSON_INITIALIZER, lt, reply;
            bson_error_t e;
            BSON_APPEND_UTF8(&old, "_id", akey);
            BSON_APPEND_DOCUMENT_BEGIN(&old, "until", &lt);
            BSON_APPEND_DATE_TIME(&lt, "$lte", at);
            bson_append_document_end(&old, &lt);
            if (!mongoc_collection_delete_one(coll, &old, NULL, &reply, &e) ||
                once_insert(st, coll, job, &doc) == 0)
                once_warn(st, "request %s was answered twice", job->once_id);
            bson_destroy(&reply);
            bson_destroy(&old);
        }
        error = job->error;
        job->error = kept;
    }
    if (error != NULL) /* its details are logged under its id */
        once_warn(st, "the answer of request %s was not kept (%s): a retry after its "
                    "lease writes again",
                    job->once_id,
                    json_get_string(error, "message") ? json_get_string(error, "message") : "?");
    json_free(error);
    bson_destroy(&doc);
    free(text);
}

/* An answer that says nothing about the request itself (the database
 * failed or could not be reached): not kept, a retry runs again. */
static int once_transient(const json_t *error)
{
    int code = error_code_of(error);
    return code < 0 || code == ERROR_DATABASE || code == ERROR_UNAVAILABLE;
}

/* The answer the database holds becomes job's. */
static void once_replay(store_t *st, job_t *job, const once_doc_t *answer)
{
    char why[128];
    json_t *v = json_parse(answer->r ? answer->r : "", answer->r ? answer->rlen : 0, ONCE_MAX_DEPTH,
                           why, sizeof why);

    if (!v) {
        once_warn(st, "the stored answer of request %s cannot be read: %s", job->once_id, why);
        job->error = error_new(ERROR_DATABASE, NULL, "database error: unreadable stored answer");
        return;
    }
    job->replayed = 1;
    if (answer->ok)
        job->result = v;
    else
        job->error = v;
}

/* Another attempt holds the claim and is running: park job for a while
 * (the loop queues it again), or give up once it has waited
 * db_max_time_ms + db_timeout_ms. */
static void once_wait(store_t *st, job_t *job)
{
    int64_t mono = store_now_ms();

    if (job->wait_until == 0) {
        job->wait_until = mono + st->max_time_ms + st->timeout_ms;
        log_debug("store: request %s waits for its first attempt", job->once_id);
    }
    if (mono >= job->wait_until) {
        job->error = error_new(ERROR_UNAVAILABLE, NULL,
                               "request %s is still running: its first attempt did not finish "
                               "within %d ms; retry later",
                               job->once_id, st->max_time_ms + st->timeout_ms);
        job->not_the_server = 1;
        return;
    }
    job->backoff_ms = job->backoff_ms == 0 ? ONCE_FIRST_POLL_MS : job->backoff_ms * 2;
    if (job->backoff_ms > ONCE_MAX_POLL_MS)
        job->backoff_ms = ONCE_MAX_POLL_MS;
    job->park_ms = job->backoff_ms;
    if (job->wait_until - mono < job->park_ms)
        job->park_ms = (int)(job->wait_until - mono);
    if (job->park_ms < 1)
        job->park_ms = 1;
    job->once_seen = 1;
}

static void run_once(store_t *st, mongoc_client_t *client, job_t *job)
{
    mongoc_collection_t *coll = mongoc_client_get_collection(client, st->dbname, STORE_REQUESTS);
    int64_t now = wall_ms();
    int claim = !job->once_seen;
    once_doc_t d;
    char akey[68];

    job->once_seen = 0;
    once_answer_key(job, akey);
    once_sweep(st, coll, now);
    for (int i = 0; i < ONCE_CLAIMS; i++, claim = 1) {
        int rc;
        /* The lease runs from the claim, not from the start of this pass
         * (the sweep and the reads before it take time). */
        now = wall_ms();
        rc = claim ? once_claim(st, coll, job, now) : 0;
        if (rc < 0)
            goto out;
        if (rc == 1) {
            store_outcome_unknown = 0;
            job_run_op(st, client, job);
            if (job->error && once_transient(job->error) && store_outcome_unknown)
                /* It may have been written: a retry waits for the lease
                 * to end rather than write it again now. */
                log_debug("store: request %s may have been written; its claim stays until "
                          "its lease ends",
                          job->once_id);
            else if (job->error && once_transient(job->error))
                once_remove(st, coll, job->once_key, job->once_token);
            else
                once_answer(st, coll, job, now);
            goto out;
        }
        /* Claimed already: answered (the common retry), or not yet. */
        rc = once_read(st, coll, job, akey, &d);
        if (rc == 1 && d.until > now)
            once_replay(st, job, &d);
        free(d.r);
        if (rc < 0 || job->replayed || job->error)
            goto out;
        char answered[sizeof d.o] = ""; /* the attempt that answered */
        if (rc == 1) {                  /* past its window: of no use to anyone */
            memcpy(answered, d.o, sizeof answered);
            once_remove(st, coll, akey, d.o);
        }
        rc = once_read(st, coll, job, job->once_key, &d);
        free(d.r);
        if (rc < 0)
            goto out;
        /* Running: claimed, within its lease, and not by the attempt that
         * answered (with a window shorter than the lease, an answer expires
         * before its claim's lease ends; a claim by another attempt is a
         * taker's, running). */
        if (rc == 1 && d.lease > now && strcmp(d.o, answered) != 0) {
            once_wait(st, job);
            goto out;
        }
        /* Absent (removed meanwhile), or its attempt ended without an
         * answer (a crash) or its answer expired: claim it afresh. */
        if (rc == 1)
            once_remove(st, coll, job->once_key, d.o);
    }
    job->error =
        error_new(ERROR_UNAVAILABLE, NULL, "request %s is contended; retry later", job->once_id);
    job->not_the_server = 1;
out:
    mongoc_collection_destroy(coll);
}

static void job_run(store_t *st, job_t *job)
{
    mongoc_client_t *client = mongoc_client_pool_pop(st->pool);

    if (job->once)
        run_once(st, client, job);
    else
        job_run_op(st, client, job);
    mongoc_client_pool_push(st->pool, client);
}

static int64_t store_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether job failed because the server could not be reached. */
static int job_unreachable(const job_t *job)
{
    const char *name = json_get_string(job->error, "name");
    return name != NULL && strcmp(name, "Unavailable") == 0;
}

/* Decide, under mu, whether job may try the server now. When the server
 * is down and another operation is already probing, the job is answered
 * Unavailable at once. Index jobs always run (nobody waits for them). */
static int job_may_run(store_t *st, job_t *job)
{
    int64_t now;

    if (st->down_until == 0 || job->kind == JOB_INDEXES)
        return 1;
    now = store_now_ms();
    if (now >= st->down_until) {
        /* This job probes; the others keep failing fast until its outcome
         * is known (job_note_outcome), at the latest after its timeout. */
        st->down_until = now + st->timeout_ms + st->probe_ms;
        return 1;
    }
    job->error = error_new(ERROR_UNAVAILABLE, NULL,
                           "database unavailable (the last attempt failed; retrying shortly)");
    return 0;
}

/* Record what a finished job says of the server, under mu. */
static void job_note_outcome(store_t *st, const job_t *job)
{
    if (job->kind == JOB_INDEXES || job->not_the_server)
        return;
    if (job_unreachable(job)) {
        if (st->down_until == 0)
            log_warning("store: database unreachable: failing operations fast, "
                        "probing every %d ms", st->probe_ms);
        st->down_until = store_now_ms() + st->probe_ms;
    } else if (st->down_until != 0) {
        st->down_until = 0;
        log_info("store: database reachable again");
    }
}

static void job_free(job_t *job)
{
    if (!job)
        return;
    json_free(job->input);
    json_free(job->result);
    json_free(job->error);
    json_free(job->auth);
    json_free(job->old);
    free(job->once_id);
    if (job->timer)
        event_free(job->timer);
    free(job);
}

/* ------------------------------------------------------------------------ */
/* The queue: one FIFO per owner, served round-robin (all under mu)         */

typedef struct owner_q {
    const void *owner;
    job_t *head, *tail;
    struct owner_q *hnext; /* hash chain */
    struct owner_q *rnext; /* the ring of owners with work */
} owner_q_t;

static owner_q_t **owner_slot(store_t *st, const void *owner)
{
    uintptr_t h = (uintptr_t)owner;
    owner_q_t **pp;

    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15ULL;
    pp = &st->owners[(h >> 32) % STORE_OWNER_BUCKETS];
    while (*pp != NULL && (*pp)->owner != owner)
        pp = &(*pp)->hnext;
    return pp;
}

/* Queue job behind its owner's others. 0, or -1 out of memory. */
static int queue_add(store_t *st, job_t *job)
{
    owner_q_t **pp = owner_slot(st, job->owner), *q = *pp;

    if (q == NULL) {
        q = calloc(1, sizeof(*q));
        if (q == NULL)
            return -1;
        q->owner = job->owner;
        *pp = q;
        if (st->ring_tail != NULL)
            st->ring_tail->rnext = q;
        else
            st->ring_head = q;
        st->ring_tail = q;
    }
    if (q->tail != NULL)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    st->queued++;
    return 0;
}

/* The next job in turn: the first of the owner at the head of the ring,
 * which then goes to the ring's tail (or leaves it, with nothing left). */
static job_t *queue_take(store_t *st)
{
    owner_q_t *q = st->ring_head;
    job_t *job;

    if (q == NULL)
        return NULL;
    job = q->head;
    q->head = job->next;
    job->next = NULL;
    st->queued--;
    st->ring_head = q->rnext;
    if (st->ring_head == NULL)
        st->ring_tail = NULL;
    q->rnext = NULL;
    if (q->head != NULL) {
        if (st->ring_tail != NULL)
            st->ring_tail->rnext = q;
        else
            st->ring_head = q;
        st->ring_tail = q;
    } else {
        *owner_slot(st, q->owner) = q->hnext;
        free(q);
    }
    return job;
}

/* ------------------------------------------------------------------------ */
/* Threads and hand-off                                                       */

static void *db_thread_main(void *p)
{
    store_t *st = p;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (!st->stopping && !st->ring_head)
            pthread_cond_wait(&st->cv, &st->mu);
        if (st->stopping)
            break; /* what is still queued is answered by store_free */
        job_t *job = queue_take(st);
        st->running++;
        int run = job_may_run(st, job);
        pthread_mutex_unlock(&st->mu);

        if (run)
            job_run(st, job);

        int wake = 0, handed = 0;
        pthread_mutex_lock(&st->mu);
        if (run)
            job_note_outcome(st, job);
        st->running--;
        if (job->done || job->once_done) {
            /* Once on the done list the job is the loop thread's, which
             * may free it as soon as the lock is released. */
            handed = 1;
            if (st->done_tail)
                st->done_tail->next = job;
            else
                st->done_head = job;
            st->done_tail = job;
            st->undelivered++;
            if (!st->wake_sent) {
                st->wake_sent = 1;
                wake = 1;
            }
        }
        pthread_mutex_unlock(&st->mu);
        if (!handed)
            job_free(job);
        if (wake) {
            uint64_t one = 1;
            /* Only EAGAIN (counter saturated) can fail here, and then the
             * loop is already due to wake. */
            ssize_t w = write(st->wake_fd, &one, sizeof one);
            (void)w;
        }
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* Pop one finished job, or NULL. */
static job_t *done_pop(store_t *st)
{
    pthread_mutex_lock(&st->mu);
    job_t *job = st->done_head;
    if (job) {
        st->done_head = job->next;
        if (!st->done_head)
            st->done_tail = NULL;
        job->next = NULL;
        st->undelivered--;
    }
    pthread_mutex_unlock(&st->mu);
    return job;
}

static void job_deliver(store_t *st, job_t *job);
static int queue_push(store_t *st, job_t *job);
static void store_destroy(store_t *st);

/* A parked job's pause is over: back in its owner's queue. */
static void store_on_unpark(evutil_socket_t fd, short what, void *arg)
{
    job_t *job = arg;
    store_t *st = job->st;
    (void)fd;
    (void)what;

    if (job->pprev)
        job->pprev->pnext = job->pnext;
    else
        st->parked = job->pnext;
    if (job->pnext)
        job->pnext->pprev = job->pprev;
    job->pprev = job->pnext = NULL;
    st->nparked--;
    if (queue_push(st, job) == 0)
        return;
    job->error = error_new(ERROR_UNAVAILABLE, NULL, "out of memory");
    /* as store_on_wake: done may call store_free */
    st->delivering++;
    job_deliver(st, job);
    st->delivering--;
    if (st->free_requested && !st->delivering)
        store_destroy(st);
}

/* Park job for job->park_ms (loop thread). 0, or -1 when no timer. */
static int job_park(store_t *st, job_t *job)
{
    struct timeval tv = {job->park_ms / 1000, (job->park_ms % 1000) * 1000};

    job->park_ms = 0;
    if (!job->timer && !(job->timer = evtimer_new(st->base, store_on_unpark, job)))
        return -1;
    if (evtimer_add(job->timer, &tv) < 0)
        return -1;
    job->pnext = st->parked;
    if (st->parked)
        st->parked->pprev = job;
    st->parked = job;
    st->nparked++;
    return 0;
}

/* Hand result/error to done, or park a job that waits for another attempt
 * (answered Unavailable instead when the store is closing). The job counts
 * as delivered before done runs, so a done callback that asks
 * store_pending() does not see itself. */
static void job_deliver(store_t *st, job_t *job)
{
    if (job->park_ms > 0) {
        /* Each parked job polls the database: a client pipelining retries
         * of running requests gets no more than STORE_MAX_PARKED of them
         * waiting on this worker. */
        int full = st->nparked >= STORE_MAX_PARKED;
        if (!st->closing && !full && job_park(st, job) == 0)
            return;
        job->park_ms = 0;
        job->error = error_new(ERROR_UNAVAILABLE, NULL, "%s",
                               st->closing ? "database unavailable: shutting down"
                               : full      ? "too many retries wait for their first attempt; "
                                             "retry later"
                                           : "out of memory");
        if (!job->error)
            job->error = json_object(); /* still an error, never a success */
    }
    json_t *result = job->result, *error = job->error, *old = error ? NULL : job->old;
    job->result = job->error = NULL;
    if (old != NULL)
        job->old = NULL;
    if (job->once_done)
        job->once_done(job->arg, result, error, old, job->replayed);
    else
        job->done(job->arg, result, error, old);
    job_free(job);
}

/* The first n doc locks, and mu and cv. */
static void store_locks_destroy(store_t *st, int n)
{
    for (int i = 0; i < n; i++)
        pthread_mutex_destroy(&st->doc_locks[i]);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
}

static int store_locks_init(store_t *st)
{
    struct timespec ts;

    /* Ids of hidden errors differ across workers and restarts. */
    clock_gettime(CLOCK_REALTIME, &ts);
    st->error_salt = (uint32_t)getpid() * 2654435761u ^ (uint32_t)ts.tv_nsec;
    if (pthread_mutex_init(&st->mu, NULL) != 0)
        return -1;
    if (pthread_cond_init(&st->cv, NULL) != 0) {
        pthread_mutex_destroy(&st->mu);
        return -1;
    }
    for (int i = 0; i < STORE_DOC_LOCKS; i++) {
        if (pthread_mutex_init(&st->doc_locks[i], NULL) != 0) {
            store_locks_destroy(st, i);
            return -1;
        }
    }
    return 0;
}

static void store_destroy(store_t *st)
{
    if (st->wake_ev)
        event_free(st->wake_ev);
    if (st->wake_fd >= 0)
        close(st->wake_fd);
    /* Ends the server sessions the clients used; may wait up to the
     * server selection timeout when the server is gone. */
    if (st->pool)
        mongoc_client_pool_destroy(st->pool);
    if (st->uri)
        mongoc_uri_destroy(st->uri);
    store_locks_destroy(st, STORE_DOC_LOCKS);
    free(st->threads);
    free(st->dbname);
    free(st);
}

static void store_on_wake(evutil_socket_t fd, short what, void *arg)
{
    store_t *st = arg;
    uint64_t n;
    (void)what;
    pthread_mutex_lock(&st->mu);
    /* Reset under the lock: a thread that finishes after this writes again. */
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_warning("store: read(eventfd) failed: %s", strerror(errno));
    st->wake_sent = 0;
    pthread_mutex_unlock(&st->mu);

    st->delivering++;
    job_t *job;
    while (!st->closing && (job = done_pop(st)))
        job_deliver(st, job);
    st->delivering--;
    if (st->free_requested && !st->delivering)
        store_destroy(st);
}

/* ------------------------------------------------------------------------ */
/* Public API (loop thread)                                                   */

/* Set a timeout option from timeout_ms unless the URI already has one. */
static int uri_default_int(mongoc_uri_t *uri, const char *key, int value)
{
    if (mongoc_uri_has_option(uri, key))
        return 0;
    return mongoc_uri_set_option_as_int32(uri, key, value) ? 0 : -1;
}

store_t *store_new(struct event_base *base, const store_config_t *cfg, char *err,
                   size_t errlen)
{
    store_t *st = calloc(1, sizeof *st);
    bson_error_t e;
    int timeout;

    if (!st) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->wake_fd = -1;
    st->base = base;
    st->limits = cfg->limits;
    st->max_time_ms = cfg->max_time_ms > 0 ? cfg->max_time_ms : STORE_DEFAULT_MAX_TIME_MS;
    st->max_reply_bytes = cfg->max_reply_bytes > 0 ? cfg->max_reply_bytes : STORE_DEFAULT_MAX_REPLY;
    st->doc_size_est = cfg->max_doc_bytes > 0 ? cfg->max_doc_bytes : STORE_DEFAULT_DOC_BYTES;
    timeout = cfg->timeout_ms > 0 ? cfg->timeout_ms : STORE_DEFAULT_TIMEOUT_MS;
    st->probe_ms = timeout < 500 ? timeout : 500;
    st->timeout_ms = timeout;
    if (store_locks_init(st) < 0) {
        free(st);
        snprintf(err, errlen, "pthread_mutex_init() failed");
        return NULL;
    }

    st->uri = mongoc_uri_new_with_error(cfg->uri ? cfg->uri : "", &e);
    if (!st->uri) {
        snprintf(err, errlen, "bad mongodb_uri: %s", e.message);
        goto fail;
    }
    /* A socket must outlive the longest operation the server may run
     * (maxTimeMS), or a legitimate slow query would be cut as a network error;
     * a dead server is still detected within timeout_ms by server selection
     * and connect. */
    if (uri_default_int(st->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, timeout) < 0 ||
        uri_default_int(st->uri, MONGOC_URI_CONNECTTIMEOUTMS, timeout) < 0 ||
        uri_default_int(st->uri, MONGOC_URI_SOCKETTIMEOUTMS, timeout + st->max_time_ms) < 0) {
        snprintf(err, errlen, "bad mongodb_uri: cannot set timeouts");
        goto fail;
    }
    /* The driver would retry a read once after a network error, so a
     * frozen server would hold a read for twice the socket timeout; the
     * client is told Unavailable instead and may retry itself. A URI's own
     * retryReads=true keeps the driver's retry (useful across a replica
     * set election). */
    if (!mongoc_uri_has_option(st->uri, MONGOC_URI_RETRYREADS) &&
        !mongoc_uri_set_option_as_bool(st->uri, MONGOC_URI_RETRYREADS, false)) {
        snprintf(err, errlen, "bad mongodb_uri: cannot set retryReads");
        goto fail;
    }
    if (!mongoc_uri_get_appname(st->uri) && !mongoc_uri_set_appname(st->uri, STORE_APPNAME)) {
        snprintf(err, errlen, "bad mongodb_uri: cannot set appname");
        goto fail;
    }
    const char *db = mongoc_uri_get_database(st->uri);
    st->dbname = strdup(db && *db ? db : STORE_DEFAULT_DATABASE);
    if (!st->dbname) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    st->pool = mongoc_client_pool_new_with_error(st->uri, &e);
    if (!st->pool) {
        snprintf(err, errlen, "bad mongodb_uri: %s", e.message);
        goto fail;
    }
    if (!mongoc_client_pool_set_error_api(st->pool, MONGOC_ERROR_API_VERSION_2)) {
        snprintf(err, errlen, "mongoc_client_pool_set_error_api() failed");
        goto fail;
    }

    /* Completions come back through an eventfd rather than event_active()
     * from the DB threads: it works on any event_base, whether or not
     * libevent's threading support was enabled before the base was made. */
    st->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (st->wake_fd < 0) {
        snprintf(err, errlen, "eventfd() failed: %s", strerror(errno));
        goto fail;
    }
    st->wake_ev = event_new(base, st->wake_fd, EV_READ | EV_PERSIST, store_on_wake, st);
    if (!st->wake_ev || event_add(st->wake_ev, NULL) < 0) {
        snprintf(err, errlen, "cannot watch the store's eventfd");
        goto fail;
    }

    int want = cfg->threads > 0 ? cfg->threads : STORE_DEFAULT_THREADS;
    st->threads = calloc((size_t)want, sizeof *st->threads);
    if (!st->threads) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (; st->nthreads < want; st->nthreads++) {
        int rc = pthread_create(&st->threads[st->nthreads], NULL, db_thread_main, st);
        if (rc != 0) {
            snprintf(err, errlen, "pthread_create() failed: %s", strerror(rc));
            goto fail;
        }
    }
    return st;

fail:
    pthread_mutex_lock(&st->mu);
    st->stopping = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    for (int i = 0; i < st->nthreads; i++)
        pthread_join(st->threads[i], NULL);
    store_destroy(st);
    return NULL;
}

void store_free(store_t *st)
{
    if (!st || st->closing)
        return;
    st->closing = 1;

    pthread_mutex_lock(&st->mu);
    st->stopping = 1;
    /* Dropped jobs stay counted until their done has run. */
    st->undelivered += st->queued;
    job_t *dropped = NULL, **tail = &dropped, *j;
    while ((j = queue_take(st)) != NULL) {
        *tail = j;
        tail = &j->next;
    }
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);

    for (int i = 0; i < st->nthreads; i++)
        pthread_join(st->threads[i], NULL);
    st->nthreads = 0;

    job_t *job;
    while ((job = done_pop(st)))
        job_deliver(st, job);
    /* Jobs waiting for another attempt: answered Unavailable (closing). */
    while ((job = st->parked)) {
        st->parked = job->pnext;
        job->pnext = job->pprev = NULL;
        st->nparked--;
        job->park_ms = 1;
        job_deliver(st, job);
    }
    while ((job = dropped)) {
        dropped = job->next;
        job->next = NULL;
        pthread_mutex_lock(&st->mu);
        st->undelivered--;
        pthread_mutex_unlock(&st->mu);
        if (!job->done && !job->once_done) {
            job_free(job);
            continue;
        }
        json_free(job->result);
        job->result = NULL;
        json_free(job->error);
        job->error = error_new(ERROR_UNAVAILABLE, NULL, "database unavailable: shutting down");
        if (!job->error)
            job->error = json_object(); /* still an error, never a success */
        job_deliver(st, job);
    }

    if (st->delivering)
        st->free_requested = 1; /* called from a done callback: store_on_wake frees */
    else
        store_destroy(st);
}

static int queue_push(store_t *st, job_t *job)
{
    int rc;

    pthread_mutex_lock(&st->mu);
    rc = queue_add(st, job);
    if (rc == 0)
        pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* A job for an operation, with copies of input and auth; NULL when the
 * store is closing or memory ran out. */
static job_t *job_new(store_t *st, const void *owner, job_kind_t kind, const model_t *m,
                      const json_t *input, const json_t *auth)
{
    if (!st || st->closing || !m)
        return NULL;
    job_t *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->st = st;
    job->kind = kind;
    job->owner = owner;
    job->model = m;
    if ((input && !(job->input = json_copy(input))) || (auth && !(job->auth = json_copy(auth)))) {
        job_free(job);
        return NULL;
    }
    return job;
}

static int enqueue(store_t *st, const void *owner, job_kind_t kind, const model_t *m,
                   const json_t *input, const json_t *auth, store_done_fn done, void *arg)
{
    job_t *job = done ? job_new(st, owner, kind, m, input, auth) : NULL;

    if (!job)
        return -1;
    job->done = done;
    job->arg = arg;
    if (queue_push(st, job) < 0) {
        job_free(job);
        return -1;
    }
    return 0;
}

static const job_kind_t store_op_kinds[] = {[STORE_CREATE] = JOB_CREATE,
                                            [STORE_READ] = JOB_READ,
                                            [STORE_UPDATE] = JOB_UPDATE,
                                            [STORE_DELETE] = JOB_DELETE};

int store_submit(store_t *st, const void *owner, store_op_t op, const model_t *m,
                 const json_t *input, const json_t *auth, store_done_fn done, void *arg)
{
    if ((unsigned)op > STORE_DELETE)
        return -1;
    return enqueue(st, owner, store_op_kinds[op], m, input, auth, done, arg);
}

/* Append s as a 4-byte big-endian length and its bytes. */
static int once_key_part(EVP_MD_CTX *ctx, const char *s)
{
    size_t n = strlen(s);
    unsigned char len[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 8), (unsigned char)n};

    return EVP_DigestUpdate(ctx, len, sizeof len) == 1 && EVP_DigestUpdate(ctx, s, n) == 1 ? 0 : -1;
}

/* The marker's _id: the hex SHA-256 of who, what and which request, each
 * part length-prefixed, so that no two tuples share a key and the key's
 * size does not depend on the client's. 0 or -1. */
static int once_key(job_t *job, const store_once_t *once, const char *op)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             once_key_part(ctx, "dnoded-request-1") == 0 && once_key_part(ctx, once->scope) == 0 &&
             once_key_part(ctx, op) == 0 && once_key_part(ctx, model_name(job->model)) == 0 &&
             once_key_part(ctx, once->request_id) == 0 &&
             EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32;

    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    for (unsigned int i = 0; i < mdlen; i++) {
        job->once_key[2 * i] = hex[md[i] >> 4];
        job->once_key[2 * i + 1] = hex[md[i] & 15];
    }
    job->once_key[2 * mdlen] = '\0';
    return 0;
}

/* A token no other attempt has: 16 random bytes in hex (getrandom; should
 * it fail, the time, the pid and a counter). */
static void once_token(store_t *st, char out[33])
{
    unsigned char b[16];

    if (getrandom(b, sizeof b, GRND_NONBLOCK) != (ssize_t)sizeof b) {
        struct timespec ts;
        uint32_t seq = __atomic_add_fetch(&st->error_seq, 1, __ATOMIC_RELAXED);
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(out, 33, "%08x%08x%08x%08x", (uint32_t)ts.tv_sec, (uint32_t)ts.tv_nsec,
                 (uint32_t)getpid(), seq);
        return;
    }
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

int store_submit_once(store_t *st, const void *owner, store_op_t op, const model_t *m,
                      const json_t *input, const json_t *auth, const store_once_t *once,
                      store_once_fn done, void *arg)
{
    static const char *const names[] = {[STORE_CREATE] = "create",
                                        [STORE_READ] = "read",
                                        [STORE_UPDATE] = "update",
                                        [STORE_DELETE] = "delete"};
    job_t *job;

    if ((unsigned)op > STORE_DELETE || op == STORE_READ || !done || !once || !once->scope ||
        !once->request_id || once->window_s <= 0)
        return -1;
    job = job_new(st, owner, store_op_kinds[op], m, input, auth);
    if (!job)
        return -1;
    job->once_done = done;
    job->arg = arg;
    job->once = 1;
    job->window_s = once->window_s;
    once_token(st, job->once_token);
    if (once_key(job, once, names[op]) < 0 || !(job->once_id = strdup(once->request_id)) ||
        queue_push(st, job) < 0) {
        job_free(job);
        return -1;
    }
    return 0;
}

int store_create(store_t *st, const model_t *m, const json_t *data, store_done_fn done,
                 void *arg)
{
    return enqueue(st, NULL, JOB_CREATE, m, data, NULL, done, arg);
}

int store_read(store_t *st, const model_t *m, const json_t *opt, store_done_fn done, void *arg)
{
    return enqueue(st, NULL, JOB_READ, m, opt, NULL, done, arg);
}

int store_update(store_t *st, const model_t *m, const json_t *data, store_done_fn done,
                 void *arg)
{
    return enqueue(st, NULL, JOB_UPDATE, m, data, NULL, done, arg);
}

int store_delete(store_t *st, const model_t *m, const json_t *data, store_done_fn done,
                 void *arg)
{
    return enqueue(st, NULL, JOB_DELETE, m, data, NULL, done, arg);
}

int store_ensure_indexes(store_t *st, const model_set_t *models)
{
    if (!st || st->closing || !models)
        return -1;
    job_t *job = calloc(1, sizeof *job);
    if (!job)
        return -1;
    job->kind = JOB_INDEXES;
    job->models = models;
    if (queue_push(st, job) < 0) {
        free(job);
        return -1;
    }
    return 0;
}

size_t store_pending(const store_t *st)
{
    store_t *s = (store_t *)st; /* locking is not a logical mutation */
    pthread_mutex_lock(&s->mu);
    size_t n = s->queued + s->running + s->undelivered + s->nparked;
    pthread_mutex_unlock(&s->mu);
    return n;
}
