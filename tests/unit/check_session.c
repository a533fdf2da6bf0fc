/* check_session: unit tests for the DNode session layer (src/session.c)
 * on line connections over bufferevent pairs, with a stub environment in
 * place of the worker: the greeting, the client's methods and culls,
 * dispatch by name and by id, malformed messages and unknown methods
 * answered as InvalidRequest, the callback budget, the idle and teardown
 * callbacks, and export/import for a move. No API, bus or database. */
#include "pair.h"

#include "conn_line.h"
#include "error.h"
#include "session.h"

static const char *const methods[] = {"create", "read", "update"};

/* What the stub environment saw. */
static struct {
    int idx[8];
    size_t ncallbacks[8];
    unsigned ncalls, idle, teardowns;
    session_t *last;
} seen;

static void stub_dispatch(void *arg, session_t *s, int idx, json_t *args, size_t ncallbacks)
{
    (void)arg;
    ck_assert_uint_lt(seen.ncalls, 8);
    seen.idx[seen.ncalls] = idx;
    seen.ncallbacks[seen.ncalls] = ncallbacks;
    seen.ncalls++;
    seen.last = s;
    json_free(args);
}

static void stub_idle(void *arg, session_t *s)
{
    (void)arg;
    (void)s;
    seen.idle++;
}

static void stub_teardown(void *arg, session_t *s)
{
    (void)arg;
    (void)s;
    seen.teardowns++;
}

static session_env_t senv;

static void session_setup(void)
{
    pair_setup();
    memset(&seen, 0, sizeof(seen));
    memset(&senv, 0, sizeof(senv));
    senv.cfg = P.cfg;
    senv.stats = P.stats;
    senv.greeting = conn_msg_new("{\"method\":\"methods\"}", 20);
    senv.methods = methods;
    senv.nmethods = 3;
    senv.dispatch = stub_dispatch;
    senv.on_idle = stub_idle;
    senv.on_teardown = stub_teardown;
}

static void session_teardown_fixture(void)
{
    pair_teardown();
    conn_msg_unref(senv.greeting);
}

/* A started session on a new line connection. */
static session_t *new_session(struct bufferevent **client)
{
    conn_t *c = pair_conn(client);
    session_t *s;
    char *got;

    conn_line_set(c);
    s = session_new(&senv, c);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(session_start(s), 0);
    got = pair_received(*client);
    ck_assert_str_eq(got, "{\"method\":\"methods\"}\n");
    free(got);
    return s;
}

START_TEST(test_dispatch_by_name_and_id)
{
    struct bufferevent *client;
    session_t *s = new_session(&client);

    pair_send(client, "{\"method\":\"read\",\"arguments\":[{},\"[Function]\"],"
                      "\"callbacks\":{\"7\":[\"1\"]},\"links\":[]}\n");
    pair_send(client, "{\"method\":0,\"arguments\":[],\"callbacks\":{},\"links\":[]}\n");
    ck_assert_uint_eq(seen.ncalls, 2);
    ck_assert_int_eq(seen.idx[0], 1);
    ck_assert_uint_eq(seen.ncallbacks[0], 1);
    ck_assert_int_eq(seen.idx[1], 0);
    ck_assert_ptr_eq(seen.last, s);
    ck_assert_uint_eq(P.stats->messages_in, 2);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_null_reply_is_the_general_one)
{
    struct bufferevent *client;
    session_t *s = new_session(&client);
    json_t *args = json_array();
    char *fast, *general;
    static const int64_t ids[] = {0, 7, 10, 4294967296LL, INT64_MAX};
    size_t i;

    ck_assert_int_eq(json_array_append(args, json_null()), 0);
    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        ck_assert_int_eq(session_call_null(s, ids[i]), 0);
        fast = pair_received(client);
        ck_assert_int_eq(session_call(s, ids[i], args), 0);
        general = pair_received(client);
        ck_assert_str_eq(fast, general);
        free(fast);
        free(general);
    }
    ck_assert_int_eq(session_call_null(s, -1), -1);
    json_free(args);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_culled_and_unknown_methods_are_invalid_requests)
{
    struct bufferevent *client;
    char *got;

    new_session(&client);
    /* The client exports error() as its callback 3. */
    pair_send(client, "{\"method\":\"methods\",\"arguments\":[{\"error\":\"[Function]\"}],"
                      "\"callbacks\":{\"3\":[\"0\",\"error\"]},\"links\":[]}\n");
    pair_send(client, "{\"method\":\"cull\",\"arguments\":[1],\"callbacks\":{},\"links\":[]}\n");
    pair_send(client, "{\"method\":1,\"arguments\":[],\"callbacks\":{},\"links\":[]}\n");
    pair_send(client, "{\"method\":\"frobnicate\",\"arguments\":[],\"callbacks\":{},"
                      "\"links\":[]}\n");
    ck_assert_uint_eq(seen.ncalls, 0);
    ck_assert_uint_eq(P.stats->unknown_methods, 2);
    got = pair_received(client);
    ck_assert_ptr_nonnull(strstr(got, "\"method\":3"));
    ck_assert_ptr_nonnull(strstr(got, "unknown method '1'"));
    ck_assert_ptr_nonnull(strstr(got, "unknown method 'frobnicate'"));
    ck_assert_ptr_nonnull(strstr(got, "\"name\":\"InvalidRequest\""));
    ck_assert_uint_eq(P.stats->errors[ERROR_INVALID_REQUEST], 2);
    free(got);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_malformed_message_skipped_session_goes_on)
{
    struct bufferevent *client;
    session_t *s = new_session(&client);

    pair_send(client, "{not json\n");
    ck_assert_uint_eq(P.stats->malformed, 1);
    ck_assert(!session_closing(s));
    pair_send(client, "{\"method\":\"create\",\"arguments\":[],\"callbacks\":{},\"links\":[]}\n");
    ck_assert_uint_eq(seen.ncalls, 1);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_callback_budget_counts_what_is_in_flight)
{
    struct bufferevent *client;
    session_t *s;

    P.cfg->max_callbacks = 2;
    s = new_session(&client);
    session_op_begin(s, 2); /* a request in flight holds both */
    pair_send(client, "{\"method\":\"read\",\"arguments\":[\"[Function]\"],"
                      "\"callbacks\":{\"1\":[\"0\"]},\"links\":[]}\n");
    ck_assert_uint_eq(seen.ncalls, 0);
    ck_assert_uint_eq(P.stats->malformed, 1);
    session_op_done(s, 2);
    pair_send(client, "{\"method\":\"read\",\"arguments\":[\"[Function]\"],"
                      "\"callbacks\":{\"1\":[\"0\"]},\"links\":[]}\n");
    ck_assert_uint_eq(seen.ncalls, 1);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_idle_waits_for_operations)
{
    struct bufferevent *client;
    session_t *s = new_session(&client);

    session_op_begin(s, 0);
    session_drain(s);
    ck_assert(s->conn->draining);
    ck_assert_uint_eq(seen.idle, 0); /* an operation is in flight */
    session_op_done(s, 0);
    ck_assert_uint_eq(seen.idle, 1);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_teardown_once_and_session_outlives_it)
{
    struct bufferevent *client;
    session_t *s = new_session(&client);

    session_ref(s); /* an operation in flight */
    pair_hangup(client);
    pair_pump();
    ck_assert(session_closing(s));
    ck_assert_uint_eq(seen.teardowns, 1);
    ck_assert_uint_eq(seen.teardowns, 1);
    ck_assert(s->torn_down);
    ck_assert_int_eq(session_call(s, 1, NULL), -1); /* nobody to answer */
    session_report_error(s, -1, error_new(ERROR_NOT_FOUND, NULL, "late"));
    session_unref(s);
}
END_TEST

START_TEST(test_export_import_round_trip)
{
    struct bufferevent *ca, *cb;
    session_t *a = new_session(&ca), *b = new_session(&cb);
    json_t *desc = json_object();

    pair_send(ca, "{\"method\":\"methods\",\"arguments\":[{\"created\":\"[Function]\","
                  "\"error\":\"[Function]\"}],\"callbacks\":{\"4\":[\"0\",\"created\"],"
                  "\"5\":[\"0\",\"error\"]},\"links\":[]}\n");
    pair_send(ca, "{\"method\":\"cull\",\"arguments\":[2],\"callbacks\":{},\"links\":[]}\n");
    ck_assert_int_eq(session_export(a, desc), 0);
    ck_assert_int_eq(session_import(b, desc), 0);
    ck_assert(b->got_methods);
    ck_assert_int_eq(b->remote[SESSION_REMOTE_CREATED], 4);
    ck_assert_int_eq(b->remote[SESSION_REMOTE_ERROR], 5);
    ck_assert_int_eq(b->remote[SESSION_REMOTE_DELETED], -1);
    ck_assert_uint_eq(b->culled, 1u << 2);
    json_free(desc);
    desc = json_object();
    ck_assert_int_eq(session_export(NULL, desc), 0); /* never a session */
    ck_assert_int_eq(session_import(b, desc), 0);
    ck_assert(!b->got_methods);
    ck_assert_int_eq(b->remote[SESSION_REMOTE_CREATED], -1);
    json_free(desc);
    bufferevent_free(ca);
    bufferevent_free(cb);
}
END_TEST

START_TEST(test_invalid_messages_budget)
{
    struct bufferevent *client;
    session_t *s;
    char *got;
    int i;

    P.cfg->max_invalid_messages = 3;
    s = new_session(&client);
    pair_send(client, "{\"method\":\"methods\",\"arguments\":[{\"error\":\"[Function]\"}],"
                      "\"callbacks\":{\"3\":[\"0\",\"error\"]},\"links\":[]}\n");
    for (i = 0; i < 3; i++)
        pair_send(client, "not json\n");
    ck_assert(!session_closing(s)); /* three are allowed, each answered */
    got = pair_received(client);
    for (i = 0; i < 3; i++) {
        char *at = strstr(got, "message skipped");
        ck_assert_ptr_nonnull(at);
        memset(at, '-', 7);
    }
    free(got);
    session_ref(s); /* the teardown would free it */
    pair_send(client, "still not json\n");
    ck_assert(session_closing(s));
    ck_assert_uint_eq(P.stats->disconnects[CONN_CLOSE_PROTOCOL], 1);
    session_unref(s);
    bufferevent_free(client);
}
END_TEST

int main(void)
{
    const TTest *tests[] = {
        test_dispatch_by_name_and_id,
        test_null_reply_is_the_general_one,
        test_culled_and_unknown_methods_are_invalid_requests,
        test_malformed_message_skipped_session_goes_on,
        test_callback_budget_counts_what_is_in_flight,
        test_idle_waits_for_operations,
        test_teardown_once_and_session_outlives_it,
        test_export_import_round_trip,
        test_invalid_messages_budget,
    };

    return check_run_tests("session", session_setup, session_teardown_fixture, tests,
                           sizeof(tests) / sizeof(tests[0]));
}
