/* check_conn: unit tests for the connection layer (src/conn.c and the line
 * variant src/conn_line.c) over bufferevent pairs: message framing across
 * partial reads, corking and coalescing, the output limits, close reasons and their
 * counts, deferred teardown and the handler table. No worker, session, bus
 * or database. */
#include "pair.h"

#include "conn_line.h"

/* An owner that records what the connection tells it. */
typedef struct owner {
    char messages[16][64];
    size_t nmessages;
    unsigned progress, teardowns;
} owner_t;

static void owner_message(void *arg, const char *data, size_t len)
{
    owner_t *o = arg;

    ck_assert_uint_lt(o->nmessages, 16);
    ck_assert_uint_lt(len, 64);
    memcpy(o->messages[o->nmessages], data, len);
    o->messages[o->nmessages][len] = '\0';
    o->nmessages++;
}

static void owner_progress(void *arg) { ((owner_t *)arg)->progress++; }

static void owner_teardown(void *arg) { ((owner_t *)arg)->teardowns++; }

static const conn_handlers_t owner_handlers = {owner_message, owner_progress, owner_teardown};

/* A DNode line connection owned by o. */
static conn_t *line_conn(owner_t *o, struct bufferevent **client)
{
    conn_t *c = pair_conn(client);

    memset(o, 0, sizeof(*o));
    conn_line_set(c);
    conn_attach(c, &owner_handlers, o);
    ck_assert_int_eq(conn_begin_dnode(c), 0);
    return c;
}

START_TEST(test_lines_across_partial_reads)
{
    struct bufferevent *client;
    static owner_t o; /* outlives the test: torn down by the fixture */
    conn_t *c = line_conn(&o, &client);

    pair_send(client, "{\"a\":");
    ck_assert_uint_eq(o.nmessages, 0);
    pair_send(client, "1}\r\n  \n{\"b\"");
    ck_assert_uint_eq(o.nmessages, 1);
    ck_assert_str_eq(o.messages[0], "{\"a\":1}"); /* the CR is not the message's */
    pair_send(client, ":2}\n\n{\"c\":3}\n");
    ck_assert_uint_eq(o.nmessages, 3); /* blank lines are keep-alives */
    ck_assert_str_eq(o.messages[1], "{\"b\":2}");
    ck_assert_str_eq(o.messages[2], "{\"c\":3}");
    ck_assert_uint_ge(o.progress, 3); /* every read is reported */
    ck_assert(!c->closing);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_oversized_line_closes)
{
    struct bufferevent *client;
    static owner_t o; /* outlives the test: torn down by the fixture */
    conn_t *c;
    char big[200];

    P.cfg->max_message_size = 64;
    c = line_conn(&o, &client);
    conn_ref(c);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    pair_send(client, "{\"ok\":1}\n");
    pair_send(client, big); /* no newline: 199 bytes buffered is over 64 + 1 */
    ck_assert_uint_eq(o.nmessages, 1);
    ck_assert(c->closing);
    ck_assert_uint_eq(P.stats->oversized, 1);
    ck_assert_uint_eq(P.stats->disconnects[CONN_CLOSE_OVERSIZED], 1);
    ck_assert_uint_eq(o.teardowns, 1);
    ck_assert_ptr_null(c->bev);
    conn_unref(c);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_cork_writes_once)
{
    struct bufferevent *client;
    static owner_t o; /* outlives the test: torn down by the fixture */
    conn_t *c = line_conn(&o, &client);
    conn_msg_t *a = conn_msg_new("[1]", 3), *b = conn_msg_new("[2]", 3);
    char *got;

    conn_cork(c);
    ck_assert_int_eq(conn_send(c, a), 0);
    ck_assert_int_eq(conn_send(c, b), 0);
    ck_assert_int_eq(conn_send(c, a), 0);
    ck_assert_uint_eq(conn_pending_output(c), 0); /* held by the cork */
    ck_assert(!conn_quiet(c));                    /* replies still to write */
    conn_uncork(c);
    got = pair_received(client);
    ck_assert_str_eq(got, "[1]\n[2]\n[1]\n");
    ck_assert_uint_eq(P.stats->messages_out, 3);
    ck_assert(conn_quiet(c));
    free(got);
    conn_msg_unref(a);
    conn_msg_unref(b);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_corks_nest)
{
    struct bufferevent *ca, *cb;
    static owner_t oa, ob;
    conn_t *a = line_conn(&oa, &ca), *b = line_conn(&ob, &cb);
    conn_msg_t *x = conn_msg_new("[x]", 3), *y = conn_msg_new("[y]", 3);
    char *got;

    conn_cork(a);
    ck_assert_int_eq(conn_send(a, x), 0);
    conn_cork(b); /* a read of b inside a's: both batched */
    ck_assert_int_eq(conn_send(b, y), 0);
    ck_assert_int_eq(conn_send(a, y), 0);
    conn_uncork(b); /* b's replies go at once; a's wait for a's uncork */
    ck_assert_uint_eq(conn_pending_output(a), 0);
    got = pair_received(cb);
    ck_assert_str_eq(got, "[y]\n");
    free(got);
    conn_uncork(a);
    got = pair_received(ca);
    ck_assert_str_eq(got, "[x]\n[y]\n");
    free(got);
    conn_msg_unref(x);
    conn_msg_unref(y);
    bufferevent_free(ca);
    bufferevent_free(cb);
}
END_TEST

START_TEST(test_pushes_coalesce_within_a_pass)
{
    struct bufferevent *ca, *cb;
    static owner_t oa, ob;
    conn_t *a = line_conn(&oa, &ca), *b = line_conn(&ob, &cb);
    conn_msg_t *m1 = conn_msg_new("[1]", 3), *m2 = conn_msg_new("[2]", 3),
               *r = conn_msg_new("[r]", 3);
    char *got;
    unsigned i;

    ck_assert_int_eq(conn_push(a, m1), 0);
    ck_assert_int_eq(conn_push(b, m1), 0);
    ck_assert_int_eq(conn_push(a, m2), 0);
    ck_assert_int_eq(conn_send(a, r), 0); /* a reply waits behind a's pushes */
    ck_assert_uint_eq(conn_pending_output(a), 0);
    ck_assert_uint_eq(conn_pending_output(b), 0);
    ck_assert(!conn_quiet(a));
    got = pair_received(ca); /* the loop's pass writes the batch */
    ck_assert_str_eq(got, "[1]\n[2]\n[r]\n");
    free(got);
    got = pair_received(cb);
    ck_assert_str_eq(got, "[1]\n");
    free(got);
    ck_assert(conn_quiet(a));
    ck_assert_uint_eq(P.stats->messages_out, 4);
    /* More than a queue holds: written CONN_CORK_MAX at a time, in order. */
    for (i = 0; i < CONN_CORK_MAX + 3; i++)
        ck_assert_int_eq(conn_push(b, i % 2 ? m2 : m1), 0);
    got = pair_received(cb);
    ck_assert_uint_eq(strlen(got), 4 * (CONN_CORK_MAX + 3));
    for (i = 0; i < CONN_CORK_MAX + 3; i++)
        ck_assert_int_eq(got[4 * i + 1], i % 2 ? '2' : '1');
    free(got);
    conn_msg_unref(m1);
    conn_msg_unref(m2);
    conn_msg_unref(r);
    bufferevent_free(ca);
    bufferevent_free(cb);
}
END_TEST

START_TEST(test_batched_output_obeys_max_output_buffer)
{
    struct bufferevent *client;
    static owner_t o;
    conn_t *c;
    conn_msg_t *m = conn_msg_new("[\"0123456789\"]", 14);

    P.cfg->max_output_buffer = 40; /* three lines of 15 bytes are over it */
    P.cfg->output_soft_limit = 100000;
    c = line_conn(&o, &client);
    conn_ref(c);
    bufferevent_disable(client, EV_READ); /* a client that never reads */
    bufferevent_setwatermark(client, EV_READ, 0, 1);
    ck_assert_int_eq(conn_push(c, m), 0);
    ck_assert_int_eq(conn_push(c, m), 0);
    ck_assert_int_eq(conn_push(c, m), 0);
    ck_assert(!c->closing); /* nothing counted until the batch is written */
    pair_pump();
    ck_assert(c->closing);
    ck_assert_uint_eq(P.stats->disconnects[CONN_CLOSE_SLOW], 1);
    ck_assert_int_eq(conn_push(c, m), -1);
    conn_unref(c);
    conn_msg_unref(m);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_close_drops_the_batch)
{
    struct bufferevent *client;
    static owner_t o;
    conn_t *c = line_conn(&o, &client);
    conn_msg_t *m = conn_msg_new("[1]", 3);
    char *got;

    ck_assert_int_eq(conn_push(c, m), 0);
    conn_close(c, CONN_CLOSE_OTHER, "test");
    got = pair_received(client); /* teardown and the batch's end, in either order */
    ck_assert_str_eq(got, "");
    free(got);
    ck_assert_uint_eq(m->refs, 1);
    conn_msg_unref(m);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_max_output_buffer_drops_slow_consumer)
{
    struct bufferevent *client;
    static owner_t o; /* outlives the test: torn down by the fixture */
    conn_t *c;
    conn_msg_t *m;
    char body[100];
    int i, rc = 0;

    P.cfg->max_output_buffer = 1000;
    P.cfg->output_soft_limit = 100000;
    c = line_conn(&o, &client);
    conn_ref(c);
    bufferevent_disable(client, EV_READ); /* a client that never reads */
    bufferevent_setwatermark(client, EV_READ, 0, 1);
    memset(body, 'y', sizeof(body));
    m = conn_msg_new(body, sizeof(body));
    for (i = 0; i < 20 && rc == 0; i++)
        rc = conn_send(c, m);
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(i, 10); /* the tenth message takes it over 1000 bytes */
    ck_assert(c->closing);
    ck_assert(c->slow);
    ck_assert_uint_eq(P.stats->slow_consumers, 1);
    pair_pump();
    ck_assert_uint_eq(P.stats->disconnects[CONN_CLOSE_SLOW], 1);
    ck_assert_int_eq(conn_send(c, m), -1); /* nothing more once closing */
    conn_msg_unref(m);
    conn_unref(c);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_soft_limit_drops_after_its_seconds)
{
    struct bufferevent *client;
    static owner_t o; /* outlives the test: torn down by the fixture */
    conn_t *c;
    conn_msg_t *m;
    char body[100];

    P.cfg->max_output_buffer = 100000;
    P.cfg->output_soft_limit = 150;
    P.cfg->output_soft_seconds = 0; /* over it at two sends is too long */
    c = line_conn(&o, &client);
    conn_ref(c);
    bufferevent_disable(client, EV_READ);
    bufferevent_setwatermark(client, EV_READ, 0, 1);
    memset(body, 'z', sizeof(body));
    m = conn_msg_new(body, sizeof(body));
    ck_assert_int_eq(conn_send(c, m), 0); /* 101 bytes: under */
    ck_assert_uint_eq(c->over_soft_us, 0);
    ck_assert_int_eq(conn_send(c, m), 0); /* 202: over, marked */
    ck_assert_uint_ne(c->over_soft_us, 0);
    ck_assert_uint_eq(P.env.nover_soft, 1);
    ck_assert_int_eq(conn_send(c, m), -1); /* still over: dropped */
    ck_assert_uint_eq(P.env.nover_soft, 0);
    pair_pump();
    ck_assert_uint_eq(P.stats->disconnects[CONN_CLOSE_SLOW_SOFT], 1);
    conn_msg_unref(m);
    conn_unref(c);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_close_is_deferred_and_idempotent)
{
    struct bufferevent *client;
    static owner_t o;
    conn_t *c = line_conn(&o, &client);

    conn_close(c, CONN_CLOSE_TIMEOUT, "test");
    ck_assert(c->closing);
    ck_assert_uint_eq(o.teardowns, 0); /* deferred to a safe point */
    ck_assert_uint_eq(P.env.nconns, 1);
    conn_close(c, CONN_CLOSE_OTHER, "again"); /* idempotent */
    pair_pump();
    ck_assert_uint_eq(o.teardowns, 1);
    ck_assert_uint_eq(P.env.nconns, 0);
    ck_assert_uint_eq(P.stats->disconnects[CONN_CLOSE_TIMEOUT], 1);
    ck_assert_uint_eq(P.stats->disconnects[CONN_CLOSE_OTHER], 0);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_client_hangup_is_counted_as_client)
{
    struct bufferevent *client;
    static owner_t o;
    conn_t *c = line_conn(&o, &client);

    conn_ref(c);
    pair_hangup(client); /* the peer goes: EOF */
    pair_pump();
    ck_assert(c->closing);
    ck_assert_uint_eq(o.teardowns, 1);
    ck_assert_uint_eq(P.stats->disconnects[CONN_CLOSE_CLIENT], 1);
    ck_assert_uint_eq(P.stats->connections_opened, 1);
    ck_assert_uint_eq(P.stats->connections_closed, 1);
    ck_assert_int_eq(P.stats->sessions[METRICS_TRANSPORT_TCP], 0);
    ck_assert_uint_eq(P.stats->sessions_closed[METRICS_TRANSPORT_TCP], 1);
    conn_unref(c);
}
END_TEST

START_TEST(test_moved_connection_is_no_disconnect)
{
    struct bufferevent *client;
    static owner_t o; /* outlives the test: torn down by the fixture */
    conn_t *c = line_conn(&o, &client);
    int i;

    conn_set_moved(c);
    conn_close(c, CONN_CLOSE_MOVED, "handed off");
    pair_pump();
    for (i = 0; i < METRICS_DISC_COUNT; i++)
        ck_assert_uint_eq(P.stats->disconnects[i], 0);
    ck_assert_uint_eq(P.stats->sessions_closed[METRICS_TRANSPORT_TCP], 0); /* it goes on */
    ck_assert_int_eq(P.stats->sessions[METRICS_TRANSPORT_TCP], 0);         /* not here */
    bufferevent_free(client);
}
END_TEST

/* The env's upward hooks: a DNode stream is announced; a draining
 * connection without an owner asks whether it may end. */
static conn_t *announced;
static unsigned idle_asked;

static int hook_dnode(void *arg, conn_t *c)
{
    (void)arg;
    announced = c;
    return 0;
}

static void hook_idle(void *arg, conn_t *c)
{
    (void)arg;
    if (conn_quiet(c))
        idle_asked++;
}

/* A variant that takes every byte and makes nothing of it. */
static void sink_read(conn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);

    evbuffer_drain(in, evbuffer_get_length(in));
}

static const conn_io_t sink_io = {.name = "sink", .read = sink_read};

START_TEST(test_env_hooks)
{
    struct bufferevent *client, *first;
    conn_t *c;

    P.env.on_dnode = hook_dnode;
    P.env.on_idle = hook_idle;
    announced = NULL;
    idle_asked = 0;
    c = pair_conn(&first);
    conn_line_set(c);
    ck_assert_int_eq(conn_begin_dnode(c), 0);
    ck_assert_ptr_eq(announced, c);
    ck_assert_int_eq(P.stats->sessions[METRICS_TRANSPORT_TCP], 1);

    c = pair_conn(&client);
    conn_set_io(c, CONN_HTTP, &sink_io, NULL);
    pair_send(client, "GET");
    ck_assert_uint_eq(idle_asked, 0); /* not draining */
    c->draining = 1;
    pair_send(client, " / HTTP/1.1");
    ck_assert_uint_eq(idle_asked, 1); /* no owner: the env decides */
    conn_close(c, CONN_CLOSE_SHUTDOWN, "drained");
    ck_assert(!conn_quiet(c)); /* closing is never quiet */
    pair_pump();
    ck_assert_uint_eq(P.stats->disconnects[CONN_CLOSE_SHUTDOWN], 0); /* not a DNode stream */
    bufferevent_free(first);
    bufferevent_free(client);
}
END_TEST

START_TEST(test_frame_lines_oversized_without_newline)
{
    struct evbuffer *in = evbuffer_new();
    uint32_t scanned = 0;
    size_t oversize = 0;

    ck_assert_int_eq(evbuffer_add(in, "0123456789", 10), 0);
    ck_assert_int_eq(conn_frame_lines(in, &scanned, 8, NULL, NULL, &oversize),
                     CONN_FRAME_OVERSIZED);
    ck_assert_uint_eq(oversize, 10);
    ck_assert_uint_eq(evbuffer_get_length(in), 10); /* nothing drained */
    evbuffer_free(in);
}
END_TEST

int main(void)
{
    const TTest *tests[] = {
        test_lines_across_partial_reads,
        test_oversized_line_closes,
        test_cork_writes_once,
        test_corks_nest,
        test_pushes_coalesce_within_a_pass,
        test_batched_output_obeys_max_output_buffer,
        test_close_drops_the_batch,
        test_max_output_buffer_drops_slow_consumer,
        test_soft_limit_drops_after_its_seconds,
        test_close_is_deferred_and_idempotent,
        test_client_hangup_is_counted_as_client,
        test_moved_connection_is_no_disconnect,
        test_env_hooks,
        test_frame_lines_oversized_without_newline,
    };

    return check_run_tests("conn", pair_setup, pair_teardown, tests,
                           sizeof(tests) / sizeof(tests[0]));
}
