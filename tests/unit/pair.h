/* pair: a connection environment over bufferevent pairs for the unit tests
 * of the connection and session layers (check_conn, check_session): no
 * socket, no worker, no bus, no database. The server half of each pair is
 * a conn_t; the client half is where a test writes and reads. Header only;
 * not part of dnoded. */
#ifndef DNODED_TEST_PAIR_H
#define DNODED_TEST_PAIR_H

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "conn.h"
#include "log.h"
#include "metrics.h"
#include "run_suite.h"

typedef struct pair_env {
    struct event_base *base;
    config_t *cfg;
    metrics_t *metrics;
    metrics_slot_t *stats;
    conn_env_t env;
} pair_env_t;

static pair_env_t P;

static void pair_setup(void)
{
    memset(&P, 0, sizeof(P));
    log_set_level(LOG_LEVEL_ERROR);
    P.base = event_base_new();
    P.cfg = config_new_defaults(NULL);
    P.metrics = metrics_new(1);
    ck_assert_ptr_nonnull(P.base);
    ck_assert_ptr_nonnull(P.cfg);
    ck_assert_ptr_nonnull(P.metrics);
    P.stats = metrics_claim(P.metrics, (int)getpid());
    ck_assert_ptr_nonnull(P.stats);
    ck_assert_int_eq(conn_env_init(&P.env, P.base, P.cfg, P.stats, P.metrics), 0);
}

static void pair_teardown(void)
{
    conn_env_free(&P.env);
    config_free(P.cfg);
    metrics_free(P.metrics);
    event_base_free(P.base);
}

/* Run what became ready (deferred teardown included). */
static void pair_pump(void)
{
    int i;

    for (i = 0; i < 4; i++)
        ck_assert_int_ge(event_base_loop(P.base, EVLOOP_NONBLOCK), 0);
}

/* A connection on the server half of a new pair; *client is the other. */
static conn_t *pair_conn(struct bufferevent **client)
{
    struct bufferevent *bp[2];
    conn_t *c;

    ck_assert_int_eq(bufferevent_pair_new(P.base, 0, bp), 0);
    c = conn_new(&P.env, bp[0], "test:1");
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(bufferevent_enable(bp[0], EV_READ | EV_WRITE), 0);
    ck_assert_int_eq(bufferevent_enable(bp[1], EV_READ | EV_WRITE), 0);
    *client = bp[1];
    return c;
}

/* Everything the client half has received so far, as a NUL-terminated
 * string (freed by the caller), drained from its input. */
static char *pair_received(struct bufferevent *client)
{
    struct evbuffer *in;
    size_t n;
    char *s;

    pair_pump();
    in = bufferevent_get_input(client);
    n = evbuffer_get_length(in);
    s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(evbuffer_remove(in, s, n), (int)n);
    s[n] = '\0';
    return s;
}

/* The client hangs up (the server half reads EOF); client is freed. The
 * teardown pass has not run yet. */
static void pair_hangup(struct bufferevent *client)
{
    ck_assert_int_ge(bufferevent_flush(client, EV_WRITE, BEV_FINISHED), 0);
    bufferevent_free(client);
}

/* The client writes text. */
static void pair_send(struct bufferevent *client, const char *text)
{
    ck_assert_int_eq(bufferevent_write(client, text, strlen(text)), 0);
    pair_pump();
}

#endif
