/* check_store: the store module against a real MongoDB-compatible server
 * (FerretDB in CI), no mocks. DNODED_TEST_MONGODB_URI names the server; the
 * test skips (TAP "1..0 # SKIP", exit 77) without it. Each run works in its
 * own database, dropped at the end. The daemon-level tests cover the same
 * behaviour through the wire API; this one pins the store's own contract. */
#include <check.h>
#include <event2/event.h>
#include <mongoc/mongoc.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "log.h"
#include "model.h"
#include "store.h"

/* Upper bound on any single wait, so a broken store fails instead of hanging. */
#define WAIT_LIMIT_SEC 60

static const char models_text[] =
    "{"
    " \"blog\": {\"collection\": \"blogs\", \"fields\": {"
    "   \"title\": {\"type\": \"String\", \"required\": true, \"unique\": true},"
    "   \"count\": {\"type\": \"Number\"},"
    "   \"batch\": {\"type\": \"String\", \"index\": true},"
    "   \"done\": \"Boolean\"}},"
    " \"note\": {\"versioned\": true, \"fields\": {"
    "   \"text\": {\"type\": \"String\", \"required\": true},"
    "   \"rank\": \"Number\"}}"
    "}";

/* Set once in main, before the test processes are forked. */
static char *test_uri;

/* Per test (checked fixture, so inside the forked test process). */
static struct event_base *base;
static store_t *store;
static model_set_t *models;
static const model_t *blog, *note;
static pthread_t loop_thread;

typedef struct outcome {
    int done;
    int on_loop_thread;
    json_t *result;
    json_t *error;
} outcome_t;

static void on_done(void *arg, json_t *result, json_t *error, json_t *old)
{
    outcome_t *o = arg;
    o->done++;
    o->on_loop_thread = pthread_equal(pthread_self(), loop_thread);
    o->result = result;
    o->error = error;
    json_free(old); /* the plain store_* calls hand none */
}

static void outcome_clear(outcome_t *o)
{
    json_free(o->result);
    json_free(o->error);
    memset(o, 0, sizeof *o);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

/* Run the loop until o is done (or the wait limit passes: test failure). */
static void wait_for(outcome_t *o)
{
    int expired = 0;
    struct timeval tv = {WAIT_LIMIT_SEC, 0};
    struct event *deadline = evtimer_new(base, on_deadline, &expired);
    ck_assert_ptr_nonnull(deadline);
    ck_assert_int_eq(evtimer_add(deadline, &tv), 0);
    while (!o->done && !expired)
        ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
    event_free(deadline);
    ck_assert_msg(o->done, "no completion within %d s", WAIT_LIMIT_SEC);
    ck_assert_int_eq(o->done, 1);
    ck_assert_msg(o->on_loop_thread, "done ran on a DB thread");
    ck_assert_msg((o->result == NULL) != (o->error == NULL),
                  "exactly one of result and error expected");
}

static json_t *parse(const char *text)
{
    char err[128] = "";
    json_t *v = json_parse(text, strlen(text), JSON_DEFAULT_MAX_DEPTH, err, sizeof err);
    ck_assert_msg(v != NULL, "bad test JSON %s: %s", text, err);
    return v;
}

typedef int (*store_op_fn)(store_t *, const model_t *, const json_t *, store_done_fn, void *);

/* Run one operation with arguments given as JSON text; the caller clears o. */
static void run(store_op_fn op, const model_t *m, const char *text, outcome_t *o)
{
    json_t *arg = parse(text);
    memset(o, 0, sizeof *o);
    ck_assert_int_eq(op(store, m, arg, on_done, o), 0);
    json_free(arg); /* the store copied it */
    wait_for(o);
}

/* Same, but with a tree built by the test. */
static void run_tree(store_op_fn op, const model_t *m, const json_t *arg, outcome_t *o)
{
    memset(o, 0, sizeof *o);
    ck_assert_int_eq(op(store, m, arg, on_done, o), 0);
    wait_for(o);
}

static void expect_error(const outcome_t *o, const char *name)
{
    if (!o->error) {
        char *s = json_dump(o->result, NULL);
        ck_abort_msg("expected %s, got result %s", name, s ? s : "?");
    }
    const char *got = json_get_string(o->error, "name");
    char *s = json_dump(o->error, NULL);
    ck_assert_msg(got && strcmp(got, name) == 0, "expected %s, got %s", name, s ? s : "?");
    free(s);
    ck_assert_ptr_nonnull(json_get_string(o->error, "message"));
}

static const json_t *expect_result(const outcome_t *o)
{
    if (o->error) {
        char *s = json_dump(o->error, NULL);
        ck_abort_msg("unexpected error %s", s ? s : "?");
    }
    return o->result;
}

static double num(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    ck_assert_msg(v && v->type == JSON_NUMBER, "%s is not a number", key);
    return v->u.num.d;
}

/* Create a blog and return a copy of the stored document. */
static json_t *create_blog(const char *title, int count, const char *batch)
{
    char text[256];
    outcome_t o;
    snprintf(text, sizeof text, "{\"title\": \"%s\", \"count\": %d, \"batch\": \"%s\"}", title,
             count, batch);
    run(store_create, blog, text, &o);
    json_t *doc = json_copy(expect_result(&o));
    outcome_clear(&o);
    return doc;
}

/* {"_id": id} or {"query": {"_id": id}} for doc. */
static json_t *by_id(const json_t *doc, int as_query)
{
    json_t *q = json_object();
    const char *id = json_get_string(doc, "_id");
    ck_assert_ptr_nonnull(id);
    ck_assert_int_eq(json_object_set(q, "_id", json_string(id)), 0);
    if (!as_query)
        return q;
    json_t *opt = json_object();
    ck_assert_int_eq(json_object_set(opt, "query", q), 0);
    return opt;
}

static store_t *open_store(const char *uri, int threads)
{
    store_config_t cfg = {
        .uri = uri,
        .threads = threads,
        .timeout_ms = 2000,
        .max_time_ms = 5000,
        .limits = {.max_read_limit = 100, .max_query_depth = 8, .max_query_terms = 256,
                   .max_regex_length = 256},
    };
    char err[256] = "";
    store_t *st = store_new(base, &cfg, err, sizeof err);
    ck_assert_msg(st != NULL, "store_new: %s", err);
    return st;
}

static void setup(void)
{
    char err[256] = "";
    loop_thread = pthread_self();
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    models = model_set_parse(models_text, strlen(models_text), err, sizeof err);
    ck_assert_msg(models != NULL, "models: %s", err);
    blog = model_set_find(models, "blog");
    note = model_set_find(models, "note");
    ck_assert(blog && note);
    store = open_store(test_uri, 2);
}

static void teardown(void)
{
    store_free(store);
    store = NULL;
    model_set_free(models);
    event_base_free(base);
}

/* ------------------------------------------------------------------ tests */

START_TEST(test_create_and_read_back)
{
    outcome_t o;
    run(store_create, blog,
        "{\"title\": \"create-1\", \"count\": \"42\", \"batch\": \"create\", \"junk\": 1}", &o);
    const json_t *doc = expect_result(&o);
    const char *id = json_get_string(doc, "_id");
    ck_assert_msg(id && strlen(id) == 24, "_id must be a 24-hex string");
    ck_assert_str_eq(json_get_string(doc, "title"), "create-1");
    ck_assert(num(doc, "count") == 42); /* cast from "42" */
    ck_assert(num(doc, "__v") == 0);
    ck_assert_ptr_null(json_object_get(doc, "junk"));

    json_t *opt = by_id(doc, 1);
    outcome_t r;
    run_tree(store_read, blog, opt, &r);
    const json_t *back = expect_result(&r);
    ck_assert_int_eq(back->type, JSON_OBJECT); /* a query by _id answers one document */
    ck_assert(json_equal(back, doc));
    json_free(opt);
    outcome_clear(&r);
    outcome_clear(&o);
}
END_TEST

/* Titles of an array result, space-separated, in order. */
static void titles(const json_t *arr, char *out, size_t n)
{
    ck_assert_int_eq(arr->type, JSON_ARRAY);
    out[0] = '\0';
    for (size_t i = 0; i < arr->u.arr.len; i++) {
        const char *t = json_get_string(arr->u.arr.items[i], "title");
        ck_assert_ptr_nonnull(t);
        strncat(out, i ? " " : "", n - strlen(out) - 1);
        strncat(out, t, n - strlen(out) - 1);
    }
}

static void expect_titles(const char *opt, const char *want)
{
    outcome_t o;
    char got[256];
    run(store_read, blog, opt, &o);
    titles(expect_result(&o), got, sizeof got);
    ck_assert_msg(strcmp(got, want) == 0, "read %s: got [%s], want [%s]", opt, got, want);
    outcome_clear(&o);
}

START_TEST(test_read_query_and_sorting_forms)
{
    json_free(create_blog("sort-b", 2, "sorting"));
    json_free(create_blog("sort-a", 1, "sorting"));
    json_free(create_blog("sort-c", 3, "sorting"));

    expect_titles("{\"query\": {\"batch\": \"sorting\"},"
                  " \"sorting\": {\"sort\": [[\"count\", -1]]}}",
                  "sort-c sort-b sort-a");
    expect_titles("{\"query\": {\"batch\": \"sorting\"}, \"sorting\": {\"sort\": {\"count\": 1}}}",
                  "sort-a sort-b sort-c");
    expect_titles("{\"query\": {\"batch\": \"sorting\"}, \"sorting\": {\"sort\": \"-count\"}}",
                  "sort-c sort-b sort-a");
    expect_titles("{\"query\": {\"batch\": \"sorting\"},"
                  " \"sorting\": {\"sort\": \"count\", \"limit\": 1, \"skip\": 1}}",
                  "sort-b");
    expect_titles("{\"query\": {\"batch\": \"sorting\", \"count\": {\"$gte\": 2}},"
                  " \"sorting\": {\"sort\": {\"title\": 1}}}",
                  "sort-b sort-c");
    /* No match is an empty array, not NotFound. */
    expect_titles("{\"query\": {\"batch\": \"no-such-batch\"}}", "");
}
END_TEST

static void expect_fields(const char *fields, int want_title, int want_count)
{
    char opt[256];
    outcome_t o;
    snprintf(opt, sizeof opt, "{\"query\": {\"batch\": \"fields\"}, \"fields\": %s}", fields);
    run(store_read, blog, opt, &o);
    const json_t *arr = expect_result(&o);
    ck_assert_int_eq(arr->type, JSON_ARRAY);
    ck_assert_uint_eq(arr->u.arr.len, 1);
    const json_t *doc = arr->u.arr.items[0];
    ck_assert_ptr_nonnull(json_get_string(doc, "_id"));
    ck_assert_msg((json_object_get(doc, "title") != NULL) == want_title, "fields %s: title",
                  fields);
    ck_assert_msg((json_object_get(doc, "count") != NULL) == want_count, "fields %s: count",
                  fields);
    outcome_clear(&o);
}

START_TEST(test_read_fields_forms)
{
    json_free(create_blog("fields-1", 7, "fields"));
    expect_fields("[\"title\"]", 1, 0);
    expect_fields("\"title batch\"", 1, 0);
    expect_fields("{\"count\": 1}", 0, 1);
    expect_fields("\"-count\"", 1, 0);
}
END_TEST

START_TEST(test_update_sets_schema_paths_and_bumps_version)
{
    json_t *doc = create_blog("update-1", 1, "update");
    json_t *data = by_id(doc, 0);
    ck_assert_int_eq(json_object_set(data, "count", json_int(5)), 0);
    ck_assert_int_eq(json_object_set(data, "junk", json_string("dropped")), 0);
    ck_assert_int_eq(json_object_set(data, "__v", json_int(0)), 0);

    outcome_t o;
    run_tree(store_update, blog, data, &o);
    const json_t *upd = expect_result(&o);
    ck_assert_str_eq(json_get_string(upd, "_id"), json_get_string(doc, "_id"));
    ck_assert(num(upd, "count") == 5);
    ck_assert(num(upd, "__v") == 1);
    ck_assert_str_eq(json_get_string(upd, "title"), "update-1"); /* untouched path kept */
    ck_assert_str_eq(json_get_string(upd, "batch"), "update");
    ck_assert_ptr_null(json_object_get(upd, "junk"));

    /* What the update answered is what is stored. */
    json_t *opt = by_id(doc, 1);
    outcome_t r;
    run_tree(store_read, blog, opt, &r);
    ck_assert(json_equal(expect_result(&r), upd));

    /* A second save increments again. */
    outcome_t o2;
    run_tree(store_update, blog, data, &o2);
    ck_assert(num(expect_result(&o2), "__v") == 2);

    outcome_clear(&o2);
    outcome_clear(&r);
    outcome_clear(&o);
    json_free(opt);
    json_free(data);
    json_free(doc);
}
END_TEST

START_TEST(test_delete_answers_removed_document)
{
    json_t *doc = create_blog("delete-1", 3, "delete");
    json_t *data = by_id(doc, 0);
    outcome_t o;
    run_tree(store_delete, blog, data, &o);
    ck_assert(json_equal(expect_result(&o), doc));

    json_t *opt = by_id(doc, 1);
    outcome_t r;
    run_tree(store_read, blog, opt, &r);
    expect_error(&r, "NotFound");

    outcome_t again;
    run_tree(store_delete, blog, data, &again);
    expect_error(&again, "NotFound");

    outcome_clear(&again);
    outcome_clear(&r);
    outcome_clear(&o);
    json_free(opt);
    json_free(data);
    json_free(doc);
}
END_TEST

START_TEST(test_missing_id_is_not_found)
{
    const char *missing = "{\"_id\": \"5f0000000000000000000000\", \"title\": \"x\"}";
    outcome_t o;
    run(store_read, blog, "{\"query\": {\"_id\": \"5f0000000000000000000000\"}}", &o);
    expect_error(&o, "NotFound");
    outcome_clear(&o);
    run(store_update, blog, missing, &o);
    expect_error(&o, "NotFound");
    outcome_clear(&o);
    run(store_delete, blog, missing, &o);
    expect_error(&o, "NotFound");
    outcome_clear(&o);
}
END_TEST

START_TEST(test_stale_version_conflicts_on_versioned_model)
{
    outcome_t o;
    run(store_create, note, "{\"text\": \"v0\"}", &o);
    json_t *doc = json_copy(expect_result(&o));
    outcome_clear(&o);

    json_t *data = by_id(doc, 0);
    ck_assert_int_eq(json_object_set(data, "__v", json_int(0)), 0);
    ck_assert_int_eq(json_object_set(data, "text", json_string("first")), 0);
    run_tree(store_update, note, data, &o);
    ck_assert(num(expect_result(&o), "__v") == 1);
    outcome_clear(&o);

    /* A second browser still holding version 0. */
    ck_assert_int_eq(json_object_set(data, "text", json_string("second")), 0);
    run_tree(store_update, note, data, &o);
    expect_error(&o, "Conflict");
    outcome_clear(&o);
    run_tree(store_delete, note, data, &o);
    expect_error(&o, "Conflict");
    outcome_clear(&o);

    /* Nothing changed. */
    json_t *opt = by_id(doc, 1);
    run_tree(store_read, note, opt, &o);
    ck_assert_str_eq(json_get_string(expect_result(&o), "text"), "first");
    ck_assert(num(o.result, "__v") == 1);
    outcome_clear(&o);

    /* With the current version it goes through. */
    ck_assert_int_eq(json_object_set(data, "__v", json_int(1)), 0);
    run_tree(store_delete, note, data, &o);
    ck_assert_str_eq(json_get_string(expect_result(&o), "text"), "first");
    outcome_clear(&o);

    json_free(opt);
    json_free(data);
    json_free(doc);
}
END_TEST

START_TEST(test_stale_version_saves_on_unversioned_model)
{
    json_t *doc = create_blog("unversioned-1", 1, "unversioned");
    json_t *data = by_id(doc, 0);
    ck_assert_int_eq(json_object_set(data, "count", json_int(2)), 0);
    outcome_t o;
    run_tree(store_update, blog, data, &o);
    ck_assert(num(expect_result(&o), "__v") == 1);
    outcome_clear(&o);
    ck_assert_int_eq(json_object_set(data, "__v", json_int(0)), 0);
    ck_assert_int_eq(json_object_set(data, "count", json_int(3)), 0);
    run_tree(store_update, blog, data, &o);
    ck_assert(num(expect_result(&o), "count") == 3);
    ck_assert(num(o.result, "__v") == 2);
    outcome_clear(&o);
    json_free(data);
    json_free(doc);
}
END_TEST

/* Run the loop until every outcome of o[0..n) is done. */
static void wait_all(outcome_t *o, int n)
{
    for (int i = 0; i < n; i++)
        wait_for(&o[i]);
}

START_TEST(test_concurrent_saves_lose_nothing)
{
    enum { N = 4 };
    outcome_t o[N];

    /* Versioned: two browsers saving the same version at once; exactly one
     * wins, the other is told. */
    run(store_create, note, "{\"text\": \"race\"}", &o[0]);
    json_t *doc = json_copy(expect_result(&o[0]));
    outcome_clear(&o[0]);
    json_t *data = by_id(doc, 0);
    ck_assert_int_eq(json_object_set(data, "__v", json_int(0)), 0);
    memset(o, 0, sizeof o);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(store_update(store, note, data, on_done, &o[i]), 0);
    wait_all(o, 2);
    ck_assert_msg((o[0].error != NULL) + (o[1].error != NULL) == 1, "exactly one save wins");
    expect_error(o[0].error ? &o[0] : &o[1], "Conflict");
    ck_assert(num(o[0].error ? o[1].result : o[0].result, "__v") == 1);
    outcome_clear(&o[0]);
    outcome_clear(&o[1]);
    json_free(data);
    json_free(doc);

    /* Unversioned: concurrent saves all land, one version each. */
    doc = create_blog("race-1", 0, "race");
    data = by_id(doc, 0);
    memset(o, 0, sizeof o);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(store_update(store, blog, data, on_done, &o[i]), 0);
    wait_all(o, N);
    for (int i = 0; i < N; i++) {
        expect_result(&o[i]);
        outcome_clear(&o[i]);
    }
    json_t *opt = by_id(doc, 1);
    run_tree(store_read, blog, opt, &o[0]);
    ck_assert(num(expect_result(&o[0]), "__v") == N);
    outcome_clear(&o[0]);
    json_free(opt);
    json_free(data);
    json_free(doc);
}
END_TEST

START_TEST(test_validation_error_passes_through)
{
    outcome_t o;
    run(store_create, blog, "{\"count\": 1, \"batch\": \"validation\"}", &o);
    expect_error(&o, "ValidationError");
    const json_t *errors = json_object_get(o.error, "errors");
    ck_assert_ptr_nonnull(errors);
    ck_assert_ptr_nonnull(json_object_get(errors, "title"));
    outcome_clear(&o);

    run(store_create, blog, "{\"_id\": \"5f0000000000000000000000\", \"title\": \"with-id\"}",
        &o);
    expect_error(&o, "InvalidRequest");
    outcome_clear(&o);
}
END_TEST

START_TEST(test_refused_operator_is_invalid_request)
{
    outcome_t o;
    run(store_read, blog, "{\"query\": {\"$where\": \"sleep(1000)\"}}", &o);
    expect_error(&o, "InvalidRequest");
    outcome_clear(&o);
    run(store_read, blog, "{\"query\": {\"title\": {\"$expr\": 1}}}", &o);
    expect_error(&o, "InvalidRequest");
    outcome_clear(&o);
    run(store_read, blog, "{\"query\": {\"password\": \"x\"}}", &o);
    expect_error(&o, "InvalidRequest");
    outcome_clear(&o);
}
END_TEST

/* Let the loop run until every queued and running job has finished. */
static void wait_idle(void)
{
    for (int i = 0; i < WAIT_LIMIT_SEC * 100 && store_pending(store) > 0; i++) {
        ck_assert_int_ge(event_base_loop(base, EVLOOP_NONBLOCK), 0);
        usleep(10000);
    }
    ck_assert_uint_eq(store_pending(store), 0);
}

START_TEST(test_duplicate_unique_value_is_conflict)
{
    ck_assert_int_eq(store_ensure_indexes(store, models), 0);
    wait_idle();

    json_t *first = create_blog("unique-1", 1, "unique");
    outcome_t o;
    run(store_create, blog, "{\"title\": \"unique-1\", \"batch\": \"unique\"}", &o);
    expect_error(&o, "Conflict");
    const json_t *errors = json_object_get(o.error, "errors");
    ck_assert_msg(errors && json_object_get(errors, "title"), "Conflict names the path");
    outcome_clear(&o);

    /* Saving another document onto the taken value conflicts too. */
    json_t *second = create_blog("unique-2", 2, "unique");
    json_t *data = by_id(second, 0);
    ck_assert_int_eq(json_object_set(data, "title", json_string("unique-1")), 0);
    run_tree(store_update, blog, data, &o);
    expect_error(&o, "Conflict");
    outcome_clear(&o);

    json_free(data);
    json_free(second);
    json_free(first);
}
END_TEST

/* Nothing listens on port 1; fail fast. */
static const char unreachable_uri[] =
    "mongodb://127.0.0.1:1/dnoded_unreachable?serverSelectionTimeoutMS=300&connectTimeoutMS=300";

START_TEST(test_unreachable_server_is_unavailable)
{
    store_t *down = open_store(unreachable_uri, 1);
    store_t *up = store;
    store = down;
    outcome_t o;
    run(store_create, blog, "{\"title\": \"never\", \"batch\": \"down\"}", &o);
    expect_error(&o, "Unavailable");
    /* The driver's text (hosts, timeouts) stays in the log, under an id. */
    ck_assert_msg(strncmp(json_get_string(o.error, "message"), "database unavailable (id ", 25) == 0,
                  "message: %s", json_get_string(o.error, "message"));
    ck_assert_ptr_null(strstr(json_get_string(o.error, "message"), "127.0.0.1"));
    outcome_clear(&o);
    run(store_read, blog, "{\"query\": {\"batch\": \"down\"}}", &o);
    expect_error(&o, "Unavailable");
    outcome_clear(&o);
    store = up;
    store_free(down);
}
END_TEST

START_TEST(test_free_answers_every_queued_operation)
{
    store_t *down = open_store(unreachable_uri, 1);
    enum { N = 5 };
    outcome_t o[N];
    json_t *data = parse("{\"title\": \"queued\"}");
    memset(o, 0, sizeof o);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(store_create(down, blog, data, on_done, &o[i]), 0);
    ck_assert_uint_eq(store_pending(down), N);
    store_free(down);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(o[i].done, 1);
        ck_assert(o[i].on_loop_thread);
        expect_error(&o[i], "Unavailable");
        outcome_clear(&o[i]);
    }
    json_free(data);
}
END_TEST

/* ------------------------------------------------------------ requestId */

typedef struct once_outcome {
    outcome_t o;
    int replayed;
} once_outcome_t;

static void on_once(void *arg, json_t *result, json_t *error, json_t *old, int replayed)
{
    once_outcome_t *oo = arg;
    oo->replayed = replayed;
    on_done(&oo->o, result, error, old);
}

static void run_once(store_op_t op, const char *scope, const char *id, const char *text,
                     once_outcome_t *oo)
{
    store_once_t once = {scope, id, 600};
    json_t *arg = parse(text);
    memset(oo, 0, sizeof *oo);
    ck_assert_int_eq(store_submit_once(store, NULL, op, blog, arg, NULL, &once, on_once, oo), 0);
    json_free(arg);
    wait_for(&oo->o);
}

START_TEST(test_once_answers_a_retry_with_the_first_answer)
{
    once_outcome_t a, b, c;
    run_once(STORE_CREATE, "a", "id-1", "{\"title\": \"once-1\", \"batch\": \"once\"}", &a);
    ck_assert_int_eq(a.replayed, 0);
    run_once(STORE_CREATE, "a", "id-1", "{\"title\": \"once-2\", \"batch\": \"once\"}", &b);
    ck_assert_int_eq(b.replayed, 1);
    ck_assert(json_equal(expect_result(&a.o), expect_result(&b.o)));
    /* another scope is another request */
    run_once(STORE_CREATE, "u:bob", "id-1", "{\"title\": \"once-3\", \"batch\": \"once\"}", &c);
    ck_assert_int_eq(c.replayed, 0);
    ck_assert_str_eq(json_get_string(expect_result(&c.o), "title"), "once-3");
    outcome_clear(&a.o);
    outcome_clear(&b.o);
    outcome_clear(&c.o);
    /* an error about the request is kept too */
    run_once(STORE_CREATE, "a", "id-2", "{\"count\": 1}", &a);
    expect_error(&a.o, "ValidationError");
    run_once(STORE_CREATE, "a", "id-2", "{\"title\": \"once-4\"}", &b);
    ck_assert_int_eq(b.replayed, 1);
    ck_assert(json_equal(a.o.error, b.o.error));
    outcome_clear(&a.o);
    outcome_clear(&b.o);

    store_once_t once = {"a", "id-3", 600}, off = {"a", "id-3", 0};
    json_t *opt = parse("{}");
    ck_assert_int_eq(
        store_submit_once(store, NULL, STORE_READ, blog, opt, NULL, &once, on_once, &a), -1);
    ck_assert_int_eq(
        store_submit_once(store, NULL, STORE_CREATE, blog, opt, NULL, &off, on_once, &a), -1);
    json_free(opt);
}
END_TEST

/* The claim's _id as store.c makes it. */
static void claim_key(const char *scope, const char *op, const char *type, const char *id,
                      char out[65])
{
    const char *parts[] = {"dnoded-request-1", scope, op, type, id};
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL), 1);
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        size_t n = strlen(parts[i]);
        unsigned char len[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                                (unsigned char)(n >> 8), (unsigned char)n};
        ck_assert_int_eq(EVP_DigestUpdate(ctx, len, 4), 1);
        ck_assert_int_eq(EVP_DigestUpdate(ctx, parts[i], n), 1);
    }
    ck_assert_int_eq(EVP_DigestFinal_ex(ctx, md, &mdlen), 1);
    EVP_MD_CTX_free(ctx);
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

START_TEST(test_free_answers_a_retry_waiting_for_its_first_attempt)
{
    /* A claim another attempt holds and runs for a minute yet. */
    char key[65];
    bson_error_t e;
    claim_key("a", "create", "blog", "running", key);
    mongoc_client_t *client = mongoc_client_new(test_uri);
    ck_assert_ptr_nonnull(client);
    mongoc_collection_t *coll = mongoc_client_get_collection(
        client, mongoc_uri_get_database(mongoc_client_get_uri(client)), STORE_REQUESTS);
    int64_t now = (int64_t)time(NULL) * 1000;
    bson_t *claim =
        BCON_NEW("_id", BCON_UTF8(key), "o", BCON_UTF8("other"), "at", BCON_DATE_TIME(now), "lease",
                 BCON_DATE_TIME(now + 60000), "until", BCON_DATE_TIME(now + 600000));
    ck_assert_msg(mongoc_collection_insert_one(coll, claim, NULL, NULL, &e), "%s", e.message);

    store_once_t once = {"a", "running", 600};
    once_outcome_t oo;
    json_t *data = parse("{\"title\": \"waiting\"}");
    memset(&oo, 0, sizeof oo);
    ck_assert_int_eq(
        store_submit_once(store, NULL, STORE_CREATE, blog, data, NULL, &once, on_once, &oo), 0);
    json_free(data);
    /* run the loop a while: the job reads the claim and parks */
    for (int i = 0; i < 50 && !oo.o.done; i++) {
        struct timeval tv = {0, 20000};
        ck_assert_int_ge(event_base_loopexit(base, &tv), 0);
        ck_assert_int_ge(event_base_dispatch(base), 0);
    }
    ck_assert_int_eq(oo.o.done, 0);
    ck_assert_uint_eq(store_pending(store), 1);
    store_free(store);
    store = NULL;
    ck_assert_int_eq(oo.o.done, 1);
    expect_error(&oo.o, "Unavailable");
    outcome_clear(&oo.o);
    bson_destroy(claim);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
}
END_TEST

START_TEST(test_bad_uri_is_refused)
{
    store_config_t cfg = {.uri = "http://nope", .threads = 1};
    char err[256] = "";
    ck_assert_ptr_null(store_new(base, &cfg, err, sizeof err));
    ck_assert_msg(strlen(err) > 0, "store_new gives a reason");
}
END_TEST

/* ------------------------------------------------------------------ main */

/* DNODED_TEST_MONGODB_URI with a database of our own: the path part of
 * "mongodb://hosts[/db][?options]" replaced (libmongoc cannot re-serialize
 * a URI it parsed). */
static char *private_uri(const char *env, char *dbname, size_t n)
{
    const char *hosts = strstr(env, "://");
    if (!hosts) {
        fprintf(stderr, "check_store: bad DNODED_TEST_MONGODB_URI: %s\n", env);
        return NULL;
    }
    hosts += 3;
    size_t hostlen = strcspn(hosts, "/?");
    const char *options = strchr(hosts + hostlen, '?');
    snprintf(dbname, n, "dnoded_check_store_%ld", (long)getpid());
    char *s = NULL;
    if (asprintf(&s, "%.*s/%s%s", (int)(hosts + hostlen - env), env, dbname,
                 options ? options : "") < 0)
        return NULL;
    bson_error_t e;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(s, &e);
    if (!uri) {
        fprintf(stderr, "check_store: bad DNODED_TEST_MONGODB_URI: %s\n", e.message);
        free(s);
        return NULL;
    }
    mongoc_uri_destroy(uri);
    return s;
}

static int drop_database(const char *uri, const char *dbname)
{
    bson_error_t e;
    mongoc_client_t *client = mongoc_client_new(uri);
    if (!client)
        return -1;
    mongoc_database_t *db = mongoc_client_get_database(client, dbname);
    int rc = mongoc_database_drop(db, &e) ? 0 : -1;
    if (rc < 0)
        fprintf(stderr, "check_store: dropping %s failed: %s\n", dbname, e.message);
    mongoc_database_destroy(db);
    mongoc_client_destroy(client);
    return rc;
}

int main(void)
{
    const char *env = getenv("DNODED_TEST_MONGODB_URI");
    if (!env || !*env) {
        printf("1..0 # SKIP DNODED_TEST_MONGODB_URI is not set\n");
        return 77;
    }
    char dbname[64];
    store_global_init();
    test_uri = private_uri(env, dbname, sizeof dbname);
    if (!test_uri) {
        store_global_cleanup();
        return EXIT_FAILURE;
    }

    Suite *s = suite_create("store");
    TCase *tc = tcase_create("mongodb");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 2 * WAIT_LIMIT_SEC);
    tcase_add_test(tc, test_create_and_read_back);
    tcase_add_test(tc, test_read_query_and_sorting_forms);
    tcase_add_test(tc, test_read_fields_forms);
    tcase_add_test(tc, test_update_sets_schema_paths_and_bumps_version);
    tcase_add_test(tc, test_delete_answers_removed_document);
    tcase_add_test(tc, test_missing_id_is_not_found);
    tcase_add_test(tc, test_stale_version_conflicts_on_versioned_model);
    tcase_add_test(tc, test_stale_version_saves_on_unversioned_model);
    tcase_add_test(tc, test_concurrent_saves_lose_nothing);
    tcase_add_test(tc, test_validation_error_passes_through);
    tcase_add_test(tc, test_refused_operator_is_invalid_request);
    tcase_add_test(tc, test_duplicate_unique_value_is_conflict);
    tcase_add_test(tc, test_unreachable_server_is_unavailable);
    tcase_add_test(tc, test_free_answers_every_queued_operation);
    tcase_add_test(tc, test_bad_uri_is_refused);
    tcase_add_test(tc, test_once_answers_a_retry_with_the_first_answer);
    tcase_add_test(tc, test_free_answers_a_retry_waiting_for_its_first_attempt);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);

    if (drop_database(test_uri, dbname) < 0)
        failed++;
    free(test_uri);
    store_global_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
