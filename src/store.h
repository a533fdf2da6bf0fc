/* store: MongoDB for one worker. Owns the mongoc_client_pool_t (created after
 * fork), a few DB threads that run blocking libmongoc calls, and the hand-off
 * of completions back to the worker's event loop. The loop thread never calls
 * libmongoc. Knows nothing of sessions: a completion's owner decides whether
 * it still cares (see store_done_fn). */
#ifndef DNODED_STORE_H
#define DNODED_STORE_H

#include <event2/event.h>
#include <stdint.h>

#include "json.h"
#include "model.h"

typedef struct store store_t;

/* libmongoc's process-wide setup and teardown. main calls store_global_init()
 * once at start, before any store_new() (it opens no connection, so doing it
 * before forking the workers is fine), and store_global_cleanup() once at
 * exit, after every store of the process is freed. */
void store_global_init(void);
void store_global_cleanup(void);

typedef struct store_config {
    const char *uri;       /* mongodb_uri; database from its path, else "dnoded" */
    int threads;           /* db_threads; 0 = 4 */
    int timeout_ms;        /* db_timeout_ms; 0 = 5000. serverSelectionTimeoutMS and
                            * connectTimeoutMS, unless the URI sets them;
                            * socketTimeoutMS = timeout_ms + max_time_ms */
    int max_time_ms;       /* maxTimeMS put on every operation; 0 = 10000 */
    model_limits_t limits; /* query caps */
    size_t max_reply_bytes; /* a read's documents, as stored; 0 = 8 MiB */
    size_t max_doc_bytes;   /* the largest document a client can write (the
                             * message cap): sizes reads until they have
                             * seen real documents; 0 = 1 MiB */
} store_config_t;

/* Create the pool and start the DB threads. Returns NULL with a reason in
 * err on a bad URI or thread failure; an unreachable server is not an error
 * here (operations answer Unavailable until it is back). */
store_t *store_new(struct event_base *base, const store_config_t *cfg, char *err,
                   size_t errlen);
/* Stop accepting work, let the threads finish what they run, drop queued work
 * (their done callbacks run with Unavailable before this returns), join the
 * threads and free the pool. Call from the loop thread; it blocks while the
 * running operations finish, so a graceful stop first waits for
 * store_pending() to reach 0. May be called from a done callback (the memory
 * is released once that delivery returns). The store keeps a persistent
 * event on base, so the loop does not run out of events while it lives. */
void store_free(store_t *st);

/* Ensure the indexes of every model (in the background; failures logged).
 * models must outlive the store. Returns -1 when it could not be queued. */
int store_ensure_indexes(store_t *st, const model_set_t *models);

/* Operations. Each copies what it needs from its arguments (the caller may
 * free them right after the call), runs on a DB thread, and then calls done
 * ON THE LOOP THREAD exactly once with either a result or an error object
 * (an error.h object; names DatabaseError, Unavailable, NotFound,
 * Conflict, ValidationError, InvalidRequest, Forbidden). Ownership of
 * result, error and old (NULL but after a successful update) passes to done (both are NULL only when memory ran out building the
 * error: treat that as an error). A server that cannot be reached within
 * timeout_ms answers Unavailable; a duplicate value of a unique path answers
 * Conflict with errors.<path> when the path is known. The model_t must
 * outlive the operation (models are freed only after every store using them
 * is freed). Return 0, or -1 when the operation could not be queued (then
 * done is never called). */
typedef void (*store_done_fn)(void *arg, json_t *result, json_t *error, json_t *old);

/* create(data): validate/cast via model_prepare_create, insert; result is
 * the stored document as JSON (model_to_json). */
int store_create(store_t *st, const model_t *m, const json_t *data, store_done_fn done,
                 void *arg);
/* read(opt): opt.query/opt.sorting/opt.fields. When the filter is exactly
 * by _id (opt.query._id a string/ObjectId and nothing else) the result is
 * one document (NotFound when none), otherwise an array. */
int store_read(store_t *st, const model_t *m, const json_t *opt, store_done_fn done,
               void *arg);
/* update(data): data._id names the document; merge schema paths
 * (model_prepare_update), save with __v incremented. When the model is
 * versioned and data.__v is older than the stored one: Conflict, nothing
 * changed. Concurrent writers never lose an update silently (the save is
 * conditional on the __v that was read; retry a few times when unversioned). */
int store_update(store_t *st, const model_t *m, const json_t *data, store_done_fn done,
                 void *arg);
/* delete(data): by data._id (versioned: data.__v checked as above);
 * result is the removed document; NotFound when absent. */
int store_delete(store_t *st, const model_t *m, const json_t *data, store_done_fn done,
                 void *arg);

/* The four operations above on behalf of owner (a client session, or any
 * key; NULL is one owner too): each owner's operations run in the order
 * they came, and the DB threads serve owners in turn, so one owner's
 * backlog delays another's next operation by at most one operation per
 * thread. 0 or -1 as above.
 * auth (copied; NULL: anonymous) is whom the model's rules are checked for
 * (model_access.h), in the same database step as the operation: a read
 * returns only the documents the read rule allows (an _id it does not
 * allow is NotFound), a create is checked after validation, and an
 * update or delete is written only while the stored document still
 * passes its rule (Forbidden otherwise; NotFound when the session may not
 * even read it). An update hands done the document as it was before
 * (old), for pushes filtered per subscriber. */
typedef enum { STORE_CREATE, STORE_READ, STORE_UPDATE, STORE_DELETE } store_op_t;
int store_submit(store_t *st, const void *owner, store_op_t op, const model_t *m,
                 const json_t *input, const json_t *auth, store_done_fn done, void *arg);

/* Idempotent writes (README.md, "The wire API": opt.requestId). A create,
 * update or delete submitted with a store_once_t runs at most once per
 * (scope, op, model, request_id) within window_s seconds, across workers
 * and hosts sharing the database: a claim in the STORE_REQUESTS
 * collection is inserted before the write (a duplicate key means another
 * attempt has it), and the answer beside it afterwards. A later
 * attempt then gets that answer with replayed = 1 and writes nothing; one that finds
 * the first still running waits for it, polling with backoff for at most
 * db_max_time_ms + db_timeout_ms, then answers Unavailable. An answer
 * that is DatabaseError or Unavailable is not kept (the claim is
 * removed: a retry runs again). Both carry their expiry (`until`) and
 * are swept by every worker that uses them; one past it counts as
 * absent, and a claim a crash left behind blocks its id only for the
 * attempt's worst-case time (HACKING.md, "Idempotent writes"). */
#define STORE_REQUESTS "dnoded_requests"

typedef struct store_once {
    const char *scope;      /* whose request: callers keep identities apart
                             * (the token's sub, or anonymous) */
    const char *request_id; /* the client's requestId, already checked */
    int window_s;           /* > 0: how long an answer is kept */
} store_once_t;

/* done for store_submit_once: as store_done_fn, plus replayed = 1 when
 * the answer is an earlier attempt's (nothing was written now; old is
 * NULL then). */
typedef void (*store_once_fn)(void *arg, json_t *result, json_t *error, json_t *old, int replayed);

/* store_submit of STORE_CREATE, STORE_UPDATE or STORE_DELETE under once
 * (copied). 0, or -1 as store_submit (also for STORE_READ). */
int store_submit_once(store_t *st, const void *owner, store_op_t op, const model_t *m,
                      const json_t *input, const json_t *auth, const store_once_t *once,
                      store_once_fn done, void *arg);

/* Operations queued, running or waiting for an earlier attempt right now
 * (for graceful shutdown). */
size_t store_pending(const store_t *st);

#endif
