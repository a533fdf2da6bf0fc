/* session: one client's DNode peer state (see session.h). Messages arrive
 * already framed by the connection; requests go to the environment's
 * dispatcher. The struct outlives its connection while operations in
 * flight hold references, so their completions find it closed, not freed. */
#include "session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dnode.h"
#include "error.h"
#include "log.h"
#include "metrics.h"

static const char *const remote_names[SESSION_REMOTE_COUNT] = {
    "created",      "updated", "deleted",      "subscribed",
    "unsubscribed", "error",   "authExpiring", "recovered",
};

/* ------------------------------------------------------------------------
 * Messages
 * ------------------------------------------------------------------------ */

/* A DNode message written by the codec straight into the buffer that
 * becomes the conn_msg_t: no intermediate string, no copy. */
static conn_msg_t *session_msg_build(const char *method, int64_t method_id, const json_t *args)
{
    json_buf_t b = {NULL, 0, 0};

    if (json_buf_reserve(&b, CONN_MSG_HEAD + 240) < 0)
        return NULL;
    b.len = CONN_MSG_HEAD;
    if (dnode_build_append(&b, method, method_id, args) < 0 || json_buf_append(&b, "", 1) < 0) {
        free(b.data);
        return NULL;
    }
    return conn_msg_from_buf(&b);
}

conn_msg_t *session_msg_call(const char *method, const json_t *args)
{
    return session_msg_build(method, -1, args);
}

/* ------------------------------------------------------------------------
 * Lifetime
 * ------------------------------------------------------------------------ */

static void session_on_message(void *owner, const char *data, size_t len)
{
    session_handle_message(owner, data, len);
}

/* Draining, nothing in flight: the environment decides. */
static void session_check_idle(session_t *s)
{
    if (s->torn_down || s->inflight > 0 || s->conn->closing)
        return;
    if (!s->conn->draining && !s->conn->moved)
        return;
    if (s->env->on_idle != NULL)
        s->env->on_idle(s->env->arg, s);
}

static void session_on_progress(void *owner) { session_check_idle(owner); }

static void session_on_teardown(void *owner)
{
    session_t *s = owner;

    if (s->torn_down)
        return;
    s->torn_down = 1;
    if (s->env->on_teardown != NULL)
        s->env->on_teardown(s->env->arg, s);
    session_unref(s); /* the connection's */
}

static const conn_handlers_t session_handlers = {
    .on_message = session_on_message,
    .on_progress = session_on_progress,
    .on_teardown = session_on_teardown,
};

session_t *session_new(const session_env_t *env, conn_t *c)
{
    session_t *s = calloc(1, sizeof(*s));
    int i;

    if (s == NULL)
        return NULL;
    s->env = env;
    s->conn = conn_ref(c);
    s->refs = 1; /* the connection's */
    for (i = 0; i < SESSION_REMOTE_COUNT; i++)
        s->remote[i] = -1;
    conn_attach(c, &session_handlers, s);
    return s;
}

int session_start(session_t *s) { return session_send_msg(s, s->env->greeting); }

session_t *session_ref(session_t *s)
{
    s->refs++;
    return s;
}

void session_unref(session_t *s)
{
    if (s == NULL || --s->refs > 0)
        return;
    conn_unref(s->conn);
    free(s->subs);
    json_free(s->auth);
    free(s);
}

int session_closing(const session_t *s) { return s->torn_down || s->conn->closing; }

void session_close(session_t *s, conn_close_t why, const char *detail)
{
    conn_close(s->conn, why, detail);
}

void session_end(session_t *s, conn_close_t why, const char *detail)
{
    conn_end(s->conn, why, detail);
}

void session_drain(session_t *s)
{
    if (session_closing(s))
        return;
    s->conn->draining = 1;
    session_check_idle(s);
}

/* Whether what the session has out (operations and history fetches) has
 * reached max_inflight_per_session (0: no limit). */
static int session_full(const session_t *s)
{
    size_t max = s->env->cfg->max_inflight_per_session;

    return max > 0 && (size_t)s->inflight + s->fetching >= max;
}

void session_op_begin(session_t *s, size_t ncallbacks)
{
    s->inflight++;
    s->callbacks_held += (uint32_t)ncallbacks;
    /* Enough in hand: the client's next requests wait in its socket (a
     * pipelining client is slowed, not refused) until one completes. */
    if (session_full(s) && !s->torn_down)
        conn_pause(s->conn);
}

void session_op_done(session_t *s, size_t ncallbacks)
{
    s->callbacks_held -= ncallbacks < s->callbacks_held ? (uint32_t)ncallbacks : s->callbacks_held;
    if (s->inflight > 0)
        s->inflight--;
    if (!s->torn_down && s->conn->paused && !session_full(s))
        conn_unpause(s->conn);
    session_check_idle(s);
}

void session_fetch_begin(session_t *s)
{
    s->fetching++;
    if (session_full(s) && !s->torn_down)
        conn_pause(s->conn);
}

void session_fetch_done(session_t *s)
{
    if (s->fetching > 0)
        s->fetching--;
    /* Called from inside the bus (a carrier settling its fetches): the
     * requests that waited are read from the loop, not from here. */
    if (!s->torn_down && s->conn->paused && !session_full(s))
        conn_unpause_later(s->conn);
}

void session_publish_begin(session_t *s) { s->unconfirmed++; }

void session_publish_done(session_t *s)
{
    if (s->unconfirmed > 0)
        s->unconfirmed--;
    if (s->unconfirmed == 0)
        session_check_idle(s);
}

/* ------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------ */

int session_send_msg(session_t *s, conn_msg_t *m)
{
    if (session_closing(s))
        return -1;
    return conn_send(s->conn, m);
}

int session_call(session_t *s, int64_t cb, const json_t *args)
{
    conn_msg_t *m;
    int rc;

    if (cb < 0 || session_closing(s))
        return -1;
    m = session_msg_build(NULL, cb, args);
    if (m == NULL)
        return -1;
    rc = session_send_msg(s, m);
    conn_msg_unref(m);
    return rc;
}

int session_call_null(session_t *s, int64_t cb)
{
    static const char head[] = "{\"method\":",
                      tail[] = ",\"arguments\":[null],\"callbacks\":{},\"links\":[]}";
    char text[sizeof(head) + 20 + sizeof(tail)], digits[20];
    uint64_t v = (uint64_t)cb;
    size_t n = 0, len = sizeof(head) - 1;
    conn_msg_t *m;
    int rc;

    if (cb < 0 || session_closing(s))
        return -1;
    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    memcpy(text, head, sizeof(head) - 1);
    while (n > 0)
        text[len++] = digits[--n];
    memcpy(text + len, tail, sizeof(tail) - 1);
    len += sizeof(tail) - 1;
    m = conn_msg_new(text, len);
    if (m == NULL)
        return -1;
    rc = session_send_msg(s, m);
    conn_msg_unref(m);
    return rc;
}

int session_call_remote(session_t *s, int which, const json_t *args)
{
    if (which < 0 || which >= SESSION_REMOTE_COUNT || s->remote[which] < 0)
        return 0;
    return session_call(s, s->remote[which], args) < 0 ? -1 : 1;
}

int session_takes(const session_t *s, int which)
{
    return which >= 0 && which < SESSION_REMOTE_COUNT && s->remote[which] >= 0;
}

int session_push(session_t *s, int which, conn_msg_t *m)
{
    if (!session_takes(s, which))
        return 0;
    if (session_closing(s))
        return -1;
    /* Coalesced with the other pushes of this pass of the loop (conn_push). */
    return conn_push(s->conn, m) < 0 ? -1 : 1;
}

int session_moved(const session_t *s) { return s->conn->moved; }

void session_report_error(session_t *s, int64_t error_cb, json_t *error)
{
    json_t *args;
    int rc = -1;

    if (error == NULL)
        return;
    metrics_error(s->env->stats, error_code_of(error));
    args = json_array();
    if (args == NULL || json_array_append(args, error) < 0) {
        json_free(args);
        return;
    }
    if (error_cb >= 0)
        rc = session_call(s, error_cb, args);
    else if (session_call_remote(s, SESSION_REMOTE_ERROR, args) > 0)
        rc = 0;
    if (rc < 0 && !session_closing(s)) {
        char *text = json_dump(error, NULL);
        slog_client(LOG_LEVEL_INFO, s, "error not delivered (no error callback): %s",
                    text ? text : "?");
        free(text);
    }
    json_free(args);
}

/* ------------------------------------------------------------------------
 * Input
 * ------------------------------------------------------------------------ */

static void session_report(session_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void session_report(session_t *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    session_report_error(s, -1, error_newv(ERROR_INVALID_REQUEST, NULL, fmt, ap));
    va_end(ap);
}

/* The callback a refused request's error goes to: an opt.error among its
 * arguments, else its last callback argument; -1 for none. */
static int64_t session_request_error_cb(const json_t *args)
{
    int64_t last = -1;
    size_t i;

    for (i = 0; args != NULL && args->type == JSON_ARRAY && i < args->u.arr.len; i++) {
        const json_t *a = args->u.arr.items[i];
        const json_t *e = a->type == JSON_OBJECT ? json_object_get(a, "error") : NULL;

        if (e != NULL && e->type == JSON_CALLBACK)
            return e->u.callback;
        if (a->type == JSON_CALLBACK)
            last = a->u.callback;
    }
    return last;
}

/* A refused message, reported to the client as InvalidRequest (detail is
 * printf-formatted). Past max_invalid_messages in one minute the session
 * is told so and closed: a client that sends junk costs a bounded amount
 * of work, output and log. */
static void session_refuse(session_t *s, int64_t error_cb, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void session_refuse(session_t *s, int64_t error_cb, const char *fmt, ...)
{
    size_t max = s->env->cfg->max_invalid_messages;
    int64_t minute = (int64_t)time(NULL) / 60;
    va_list ap;

    if (minute != s->invalid_minute) {
        s->invalid_minute = minute;
        s->invalid = 0;
    }
    if (max > 0 && ++s->invalid > max) {
        session_report(s, "too many invalid messages (max_invalid_messages is %zu a minute)", max);
        session_end(s, CONN_CLOSE_PROTOCOL, "too many invalid messages");
        return;
    }
    va_start(ap, fmt);
    session_report_error(s, error_cb, error_newv(ERROR_INVALID_REQUEST, NULL, fmt, ap));
    va_end(ap);
}

/* The client's "methods" message: remember which of our pushes it takes. */
static void session_take_methods(session_t *s, const json_t *args)
{
    const json_t *obj = json_array_get(args, 0);
    int i;

    for (i = 0; i < SESSION_REMOTE_COUNT; i++) {
        const json_t *v = json_object_get(obj, remote_names[i]);
        s->remote[i] = (v != NULL && v->type == JSON_CALLBACK) ? v->u.callback : -1;
    }
    s->got_methods = 1;
}

static void session_take_cull(session_t *s, const json_t *args)
{
    size_t i;

    for (i = 0; args != NULL && i < args->u.arr.len; i++) {
        const json_t *id = args->u.arr.items[i];
        if (id->type == JSON_NUMBER && id->u.num.is_int && id->u.num.i >= 0 &&
            id->u.num.i < (int64_t)s->env->nmethods && id->u.num.i < 8)
            s->culled |= (uint8_t)(1u << id->u.num.i);
    }
}

/* Index of one of our methods by name, or -1. */
static int session_method_index(const session_t *s, const char *name)
{
    size_t i;

    /* The first byte tells most names apart (this runs for every call). */
    for (i = 0; i < s->env->nmethods; i++)
        if (s->env->methods[i][0] == name[0] && strcmp(s->env->methods[i], name) == 0)
            return (int)i;
    return -1;
}

void session_handle_message(session_t *s, const char *data, size_t len)
{
    const config_t *cfg = s->env->cfg;
    dnode_msg_t msg;
    char err[200];
    size_t budget;
    int idx, is_methods;

    if (session_closing(s))
        return;
    s->env->stats->messages_in++;
    /* max_callbacks counts what the client's requests in flight hold: a
     * request may bring what is left of it. The codec refuses more before
     * placing any, except that a "methods" message (not counted) may bring
     * up to the codec's own default; anything over that is refused too. */
    budget = s->callbacks_held < cfg->max_callbacks ? cfg->max_callbacks - s->callbacks_held : 0;
    if (dnode_parse_capped(data, len, cfg->max_json_depth,
                           budget > DNODE_MAX_CALLBACKS ? budget : DNODE_MAX_CALLBACKS, &msg, err,
                           sizeof(err)) < 0) {
        s->env->stats->malformed++;
        slog_client(LOG_LEVEL_WARNING, s, "message skipped: %s", err);
        /* A key holding a NUL byte fails the parse, but the rest of the
         * request can still be read: its own callback is told. */
        if (strstr(err, "NUL byte") != NULL &&
            dnode_parse_salvage(data, len, cfg->max_json_depth, budget, &msg) == 0) {
            session_refuse(s, session_request_error_cb(msg.args), "message skipped: %s", err);
            dnode_msg_clear(&msg);
            return;
        }
        session_refuse(s, -1, "message skipped: %s", err);
        return;
    }
    is_methods = msg.method != NULL && msg.method[0] == 'm' && strcmp(msg.method, "methods") == 0;
    if (msg.ncallbacks > budget && !is_methods) {
        s->env->stats->malformed++;
        snprintf(err, sizeof(err), "too many callbacks (%zu, at most %zu)", msg.ncallbacks, budget);
        slog_client(LOG_LEVEL_WARNING, s,
                    "message skipped: %s (max_callbacks is %zu, %u held by requests in flight)",
                    err, cfg->max_callbacks, s->callbacks_held);
        session_refuse(s, -1, "message skipped: %s", err);
        dnode_msg_clear(&msg);
        return;
    }
    if (is_methods) {
        session_take_methods(s, msg.args);
    } else if (msg.method != NULL && msg.method[0] == 'c' && strcmp(msg.method, "cull") == 0) {
        session_take_cull(s, msg.args);
    } else {
        if (msg.method != NULL)
            idx = session_method_index(s, msg.method);
        else if (msg.method_id < (int64_t)s->env->nmethods && msg.method_id < 8 &&
                 !(s->culled & (1u << msg.method_id)))
            idx = (int)msg.method_id;
        else
            idx = -1;
        if (idx < 0 || s->env->dispatch == NULL) {
            char name[64];
            if (msg.method != NULL)
                snprintf(name, sizeof(name), "%.60s", msg.method);
            else
                snprintf(name, sizeof(name), "%lld", (long long)msg.method_id);
            s->env->stats->unknown_methods++;
            slog_client(LOG_LEVEL_WARNING, s, "unknown method '%s' skipped", name);
            session_refuse(s, -1, "unknown method '%s'", name);
        } else {
            s->env->dispatch(s->env->arg, s, idx, msg.args, msg.ncallbacks);
            msg.args = NULL; /* the dispatcher owns them now */
        }
    }
    dnode_msg_clear(&msg);
}

/* ------------------------------------------------------------------------
 * Moving to another worker
 * ------------------------------------------------------------------------ */

int session_export(const session_t *s, json_t *into)
{
    json_t *remote = json_array();
    int i;

    if (remote == NULL)
        return -1;
    for (i = 0; i < SESSION_REMOTE_COUNT; i++)
        if (json_array_append(remote, json_int(s != NULL ? s->remote[i] : -1)) < 0) {
            json_free(remote);
            return -1;
        }
    if (json_object_set(into, "remote", remote) < 0 ||
        json_object_set(into, "methods", json_bool(s != NULL && s->got_methods)) < 0 ||
        json_object_set(into, "culled", json_int(s != NULL ? s->culled : 0)) < 0)
        return -1;
    /* who it is moves with it: the new worker does not see the token */
    if (s != NULL && s->auth != NULL) {
        json_t *claims = json_copy(s->auth);
        if (claims == NULL || json_object_set(into, "auth", claims) < 0 ||
            json_object_set(into, "auth_exp", json_int(s->auth_exp)) < 0)
            return -1;
    }
    return 0;
}

void session_set_auth(session_t *s, json_t *claims, int64_t exp)
{
    json_free(s->auth);
    /* told authExpiring already: again only for a token that lives longer */
    if (claims == NULL || exp > s->auth_exp)
        s->auth_warned = 0;
    s->auth = claims;
    s->auth_exp = claims != NULL ? exp : 0;
}

int session_import(session_t *s, const json_t *desc)
{
    const json_t *remote = json_object_get(desc, "remote");
    const json_t *culled = json_object_get(desc, "culled");
    size_t i;

    if (remote == NULL || remote->type != JSON_ARRAY || culled == NULL ||
        culled->type != JSON_NUMBER)
        return -1;
    s->got_methods = json_is_true(json_object_get(desc, "methods"));
    s->culled = (uint8_t)culled->u.num.d;
    for (i = 0; i < SESSION_REMOTE_COUNT; i++) {
        const json_t *id = json_array_get(remote, i);
        s->remote[i] = id != NULL && id->type == JSON_NUMBER && id->u.num.is_int ? id->u.num.i : -1;
    }
    {
        const json_t *claims = json_object_get(desc, "auth"),
                     *exp = json_object_get(desc, "auth_exp");
        if (claims != NULL && claims->type == JSON_OBJECT) {
            json_t *copy = json_copy(claims);
            if (copy == NULL)
                return -1;
            session_set_auth(s, copy,
                             exp != NULL && exp->type == JSON_NUMBER ? (int64_t)exp->u.num.d : 0);
        }
    }
    return 0;
}
