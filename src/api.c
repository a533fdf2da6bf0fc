/* api: the backbone-dnode methods (see api.h, and README.md's
 * "The wire API"). Each handler checks its arguments, starts the work (store, bus)
 * and answers through the caller's callbacks. An operation waiting for the
 * database holds a session reference, so its completion may arrive after
 * the client has gone: it is then dropped quietly. */
#include "api.h"

#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "dnode.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "store.h"

enum {
    API_CREATE,
    API_READ,
    API_UPDATE,
    API_DELETE,
    API_SUBSCRIBE,
    API_UNSUBSCRIBE,
    API_PUBLISH,
    API_AUTH
};

const char *const api_method_names[] = {
    "create", "read", "update", "delete", "subscribe", "unsubscribe", "publish", "auth",
};
const size_t api_method_count = sizeof(api_method_names) / sizeof(api_method_names[0]);

/* ------------------------------------------------------------------------
 * Replies
 * ------------------------------------------------------------------------ */

/* fn(value) where value is taken (may be NULL for null). */
static void api_reply(session_t *s, int64_t fn, json_t *value)
{
    json_t *args;

    if (fn < 0) {
        json_free(value);
        return;
    }
    if (value == NULL) {
        session_call_null(s, fn); /* success: the common reply, no tree */
        return;
    }
    args = json_array();
    if (args == NULL) {
        json_free(value);
        return;
    }
    if (json_array_append(args, value) < 0) {
        json_free(args);
        return;
    }
    session_call(s, fn, args);
    json_free(args);
}

static void api_reply_string(session_t *s, int64_t fn, const char *text)
{
    api_reply(s, fn, text != NULL ? json_string(text) : NULL);
}

/* The callback id at opt.error, or -1. */
static int64_t api_error_cb(const json_t *opt)
{
    const json_t *e = json_object_get(opt, "error");
    return (e != NULL && e->type == JSON_CALLBACK) ? e->u.callback : -1;
}

/* ------------------------------------------------------------------------
 * Pub/sub
 * ------------------------------------------------------------------------ */

static const char *api_channel_arg(const json_t *args, size_t i)
{
    const json_t *url = json_array_get(args, i);
    if (url == NULL || url->type != JSON_STRING || url->u.str.len == 0 ||
        memchr(url->u.str.s, '\0', url->u.str.len) != NULL || url->u.str.len > 1024)
        return NULL;
    return url->u.str.s;
}

/* subscribe's options: {since: {epoch, offset}} to recover from there.
 * 0 with *epoch (NULL: none) and *offset, -1 when malformed. */
static int api_since(const json_t *opts, const char **epoch, uint64_t *offset)
{
    const json_t *since = json_object_get(opts, "since"), *e, *o;
    size_t i;

    *epoch = NULL;
    *offset = 0;
    if (since == NULL || since->type == JSON_NULL)
        return 0;
    e = json_object_get(since, "epoch");
    o = json_object_get(since, "offset");
    if (since->type != JSON_OBJECT || e == NULL || e->type != JSON_STRING || e->u.str.len == 0 ||
        e->u.str.len > 32 || o == NULL || o->type != JSON_NUMBER || o->u.num.d < 0 ||
        o->u.num.d > 9007199254740991.0 || o->u.num.d != (double)(uint64_t)o->u.num.d)
        return -1;
    for (i = 0; i < e->u.str.len; i++)
        if (!((e->u.str.s[i] >= '0' && e->u.str.s[i] <= '9') ||
              (e->u.str.s[i] >= 'a' && e->u.str.s[i] <= 'z') ||
              (e->u.str.s[i] >= 'A' && e->u.str.s[i] <= 'Z') || e->u.str.s[i] == '-'))
            return -1;
    *epoch = e->u.str.s;
    *offset = (uint64_t)o->u.num.d;
    return 0;
}

/* subscribe(url, [opts], fn), unsubscribe(url, fn). */
static void api_subscribe(api_t *api, session_t *s, json_t *args, int join)
{
    const char *url = api_channel_arg(args, 0), *since_epoch = NULL;
    const json_t *opts = json_array_get(args, 1);
    int64_t fn = dnode_arg_callback(args, 1);
    uint64_t since_offset = 0;
    bus_t *bus = api->bus;
    int rc;

    if (fn < 0 && opts != NULL && opts->type == JSON_OBJECT)
        fn = dnode_arg_callback(args, 2);
    else
        opts = NULL;
    if (url == NULL) {
        api_reply_string(s, fn, "missing parameters");
        return;
    }
    if (join && api_since(opts, &since_epoch, &since_offset) < 0) {
        api_reply_string(s, fn, "invalid since: expected {epoch: string, offset: integer}");
        return;
    }
    if (join && !model_access_channel(api->models, url, s->auth, MODEL_SUBSCRIBE)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "Forbidden: subscribing to %.100s is not allowed", url);
        api_reply_string(s, fn, msg);
        return;
    }
    /* A join is answered by the bus (api_joined), once the session has its
     * place in the channel's history. */
    rc = join ? bus_subscribe_at(bus, s, url, since_epoch, since_offset, fn, opts != NULL)
              : bus_unsubscribe(bus, s, url);
    if (rc < 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "too many subscriptions (max_subscriptions is %zu)",
                 api->cfg->max_subscriptions);
        slog_client(LOG_LEVEL_WARNING, s, "subscribe refused: %s", msg);
        api_reply_string(s, fn, msg);
        return;
    }
    if (!join)
        api_reply(s, fn, NULL);
}

void api_joined(void *arg, session_t *s, const char *channel, int64_t token, const char *epoch,
                uint64_t offset, int recovered, int detail)
{
    json_t *args, *info;

    (void)arg;
    (void)channel;
    if (!detail) { /* subscribe(url, fn): fn(null), as it always was */
        api_reply(s, token, NULL);
        return;
    }
    args = json_array();
    info = json_object();
    if (args == NULL || info == NULL ||
        (recovered >= 0 && json_object_set(info, "recovered", json_bool(recovered)) < 0) ||
        (epoch != NULL && (json_object_set(info, "epoch", json_string(epoch)) < 0 ||
                           json_object_set(info, "offset", json_int((int64_t)offset)) < 0)) ||
        json_array_append(args, json_null()) < 0) {
        json_free(info);
        json_free(args);
        return;
    }
    if (json_array_append(args, info) < 0) {
        json_free(args);
        return;
    }
    session_call(s, token, args);
    json_free(args);
}

/* "create" -> "created", ...; NULL for anything else. */
static const char *api_past_tense(const char *method)
{
    if (method == NULL)
        return NULL;
    if (strcmp(method, "create") == 0)
        return "created";
    if (strcmp(method, "update") == 0)
        return "updated";
    if (strcmp(method, "delete") == 0)
        return "deleted";
    return NULL;
}

/* The options pushed with a change: url, type, method and the model's
 * push_options (m NULL: the three), never the writer's other keys (a
 * token, say). NULL out of memory. */
static json_t *api_pushed_options(const model_t *m, const json_t *opt)
{
    json_t *pushed = json_object();
    size_t i;

    for (i = 0; pushed != NULL && opt != NULL && opt->type == JSON_OBJECT && i < opt->u.obj.len;
         i++) {
        json_t *v;
        /* requestId is the writer's alone (its retries' key), whatever
         * push_options lists */
        if (opt->u.obj.vals[i]->type == JSON_CALLBACK ||
            strcmp(opt->u.obj.keys[i], "requestId") == 0 ||
            !model_access_push_option(m, opt->u.obj.keys[i]))
            continue;
        v = json_copy(opt->u.obj.vals[i]);
        if (v == NULL || json_object_set(pushed, opt->u.obj.keys[i], v) < 0) {
            json_free(pushed);
            return NULL;
        }
    }
    if (pushed != NULL)
        json_strip_callbacks(pushed);
    return pushed;
}

/* Publish doc on opt.url as `event`, with the options a push may carry.
 * m is the model of a change (NULL: a client's publish); old the document
 * before an update. */
static int api_broadcast(api_t *api, session_t *s, const model_t *m, const json_t *opt,
                         const char *event, const json_t *doc, const json_t *old)
{
    const char *url = json_get_string(opt, "url");
    json_t *pushed;
    uint64_t started;
    int rc;

    if (url == NULL || url[0] == '\0')
        return 0;
    pushed = api_pushed_options(m, opt);
    if (pushed == NULL)
        return -1;
    started = metrics_now_us();
    rc = bus_publish_change(api->bus, s, url, event, doc, pushed, m != NULL ? model_name(m) : NULL,
                            old);
    metrics_observe(&api->stats->bus, metrics_now_us() - started);
    json_free(pushed);
    if (rc < 0)
        slog_client(LOG_LEVEL_WARNING, s, "publish on '%s' failed", url);
    return rc;
}

static void api_publish(api_t *api, session_t *s, json_t *args)
{
    const json_t *model = json_array_get(args, 0);
    const json_t *opt = json_array_get(args, 1);
    int64_t fn = dnode_arg_callback(args, 2);
    const char *event = api_past_tense(json_get_string(opt, "method"));
    const char *url = json_get_string(opt, "url");
    json_t *doc;

    if (model == NULL || opt == NULL || opt->type != JSON_OBJECT || event == NULL || url == NULL ||
        url[0] == '\0') {
        /* As backbone-dnode does: opt.error('missing parameters') when the
         * caller gave one; else its final callback, for DNode clients that
         * pass no options callbacks. */
        int64_t error_cb = api_error_cb(opt);
        api_reply_string(s, error_cb >= 0 ? error_cb : fn, "missing parameters");
        return;
    }
    /* A client's publish is a claim nobody checked: the channel's publish
     * rule decides (refused by default once the models file has rules). */
    if (!model_access_channel(api->models, url, s->auth, MODEL_PUBLISH)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "publishing on %.100s is not allowed", url);
        if (api_error_cb(opt) >= 0)
            session_report_error(s, api_error_cb(opt), error_new(ERROR_FORBIDDEN, NULL, "%s", msg));
        else
            api_reply_string(s, fn, "Forbidden: publishing is not allowed");
        return;
    }
    doc = json_copy(model);
    if (doc == NULL)
        return;
    json_strip_callbacks(doc);
    if (api_broadcast(api, s, NULL, opt, event, doc, NULL) < 0)
        api_reply_string(s, fn, "publish failed");
    else
        api_reply(s, fn, NULL);
    json_free(doc);
}

/* ------------------------------------------------------------------------
 * CRUD
 * ------------------------------------------------------------------------ */

typedef struct api_op {
    api_t *api;
    session_t *session; /* a reference */
    const model_t *model;
    int method;
    int64_t fn, error_cb;
    json_t *opt;         /* the caller's options, for publishing */
    uint32_t callbacks;  /* counted in the session's callbacks_held */
    uint64_t started_us; /* for the DB latency histogram */
} api_op_t;

static void api_op_free(api_op_t *op)
{
    json_free(op->opt);
    free(op);
}

/* Removes from a result (a document, or an array of them) what s may not
 * see. */
static void api_hide(const model_t *m, const session_t *s, json_t *result)
{
    size_t i;

    if (result == NULL || !model_access_hides(m))
        return;
    if (result->type == JSON_ARRAY)
        for (i = 0; i < result->u.arr.len; i++)
            model_access_hide(m, s->auth, result->u.arr.items[i]);
    else
        model_access_hide(m, s->auth, result);
}

/* What a write's store operation answered; replayed: an earlier attempt
 * of the same requestId answered it, and it was published then. */
static void api_crud_finish(api_op_t *op, json_t *result, json_t *error, json_t *old, int replayed)
{
    session_t *s = op->session;
    static const char *const events[] = {"created", NULL, "updated", "deleted"};

    metrics_observe(&op->api->stats->db, metrics_now_us() - op->started_us);
    /* The store hands over neither only when it ran out of memory. */
    if (error == NULL && result == NULL)
        error = error_new(ERROR_UNAVAILABLE, NULL, "out of memory");
    if (replayed)
        slog_client(LOG_LEVEL_DEBUG, s, "%s answered as its requestId's first attempt was",
                    api_method_names[op->method]);
    /* When the client has gone there is nobody to answer, but a committed
     * change is still published so that other subscribers stay in sync. */
    if (error != NULL) {
        if (!session_closing(s))
            session_report_error(s, op->error_cb, error);
        else
            json_free(error);
    } else {
        /* silent is honoured only where the model allows it: a change to
         * a ruled model is otherwise pushed (filtered per subscriber) */
        if (events[op->method] != NULL && !replayed &&
            !(json_is_true(json_object_get(op->opt, "silent")) && model_access_silent(op->model)))
            api_broadcast(op->api, s, op->model, op->opt, events[op->method], result, old);
        api_hide(op->model, s, result);
        if (!session_closing(s))
            api_reply(s, op->fn, result);
        else
            json_free(result);
    }
    json_free(old);
    session_op_done(s, op->callbacks);
    session_unref(s);
    api_op_free(op);
}

static void api_crud_done(void *arg, json_t *result, json_t *error, json_t *old)
{
    api_crud_finish(arg, result, error, old, 0);
}

static void api_crud_once_done(void *arg, json_t *result, json_t *error, json_t *old, int replayed)
{
    api_crud_finish(arg, result, error, old, replayed);
}

/* The longest requestId a write may carry. */
#define API_REQUEST_ID_MAX 128

/* opt.requestId of a write: 1 with *id when it is 1 to 128 printable
 * ASCII characters, 0 when absent, -1 (with msg) for anything else. */
static int api_request_id(const json_t *opt, const char **id, char *msg, size_t msglen)
{
    const json_t *v = json_object_get(opt, "requestId");
    size_t i;

    if (v == NULL)
        return 0;
    if (v->type != JSON_STRING || v->u.str.len == 0 || v->u.str.len > API_REQUEST_ID_MAX) {
        snprintf(msg, msglen, "options.requestId must be a string of 1 to %d printable characters",
                 API_REQUEST_ID_MAX);
        return -1;
    }
    for (i = 0; i < v->u.str.len; i++) {
        unsigned char c = (unsigned char)v->u.str.s[i];
        if (c < 0x20 || c > 0x7e) {
            snprintf(msg, msglen,
                     "options.requestId must be printable ASCII (character %zu is not)", i + 1);
            return -1;
        }
    }
    *id = v->u.str.s;
    return 1;
}

/* Whose retries share answers (store_once_t.scope): "u:<sub>" for an
 * authenticated session (a token always has a sub, auth.c), "a" for every
 * anonymous one. malloc'd; NULL out of memory. */
static char *api_request_scope(const session_t *s)
{
    const char *sub = s->auth != NULL ? json_get_string(s->auth, "sub") : NULL;
    size_t n = (sub != NULL ? strlen(sub) : 0) + 3;
    char *scope = malloc(n);

    if (scope != NULL)
        snprintf(scope, n, "%s%s", s->auth != NULL ? "u:" : "a", sub != NULL ? sub : "");
    return scope;
}

static void api_crud(api_t *api, session_t *s, int method, json_t *args, size_t ncallbacks)
{
    int with_data = method != API_READ;
    const json_t *data = with_data ? json_array_get(args, 0) : NULL;
    const json_t *opt = json_array_get(args, with_data ? 1 : 0);
    int64_t fn = dnode_arg_callback(args, with_data ? 2 : 1);
    int64_t error_cb = api_error_cb(opt);
    const char *type = json_get_string(opt, "type");
    const model_t *m;
    api_op_t *op;
    json_t *input = NULL;          /* data as the store is given it */
    const char *request_id = NULL; /* opt.requestId of a write */
    char msg[200];
    int rc;

    if (opt == NULL || opt->type != JSON_OBJECT ||
        (with_data && (data == NULL || data->type != JSON_OBJECT))) {
        snprintf(msg, sizeof(msg), "%s expects %s", api_method_names[method],
                 with_data ? "(data, options, callback)" : "(options, callback)");
        session_report_error(s, error_cb, error_new(ERROR_INVALID_REQUEST, NULL, "%s", msg));
        return;
    }
    if (with_data && api_request_id(opt, &request_id, msg, sizeof(msg)) < 0) {
        session_report_error(s, error_cb, error_new(ERROR_INVALID_REQUEST, NULL, "%s", msg));
        return;
    }
    m = (type != NULL && api->models != NULL) ? model_set_find(api->models, type) : NULL;
    if (m == NULL) {
        snprintf(msg, sizeof(msg),
                 type ? "unknown model type '%.100s'" : "options.type must name a model%.0s",
                 type ? type : "");
        session_report_error(s, error_cb, error_new(ERROR_INVALID_REQUEST, NULL, "%s", msg));
        return;
    }
    if (api->store == NULL) {
        session_report_error(s, error_cb,
                             error_new(ERROR_UNAVAILABLE, NULL, "no database configured"));
        return;
    }
    {
        /* What the permissions say before the database is asked. */
        json_t *refusal = NULL;
        if (method == API_READ)
            model_access_query(m, s->auth, opt, &refusal);
        if (refusal != NULL) {
            session_report_error(s, error_cb, refusal);
            return;
        }
        if (with_data) {
            input = json_copy(data);
            if (input == NULL) {
                session_report_error(s, error_cb,
                                     error_new(ERROR_UNAVAILABLE, NULL, "out of memory"));
                return;
            }
            if (method == API_CREATE &&
                model_access_prepare_create(m, s->auth, input, &refusal) < 0) {
                session_report_error(s, error_cb, refusal);
                json_free(input);
                return;
            }
            if (method == API_UPDATE)
                model_access_prepare_update(m, input);
        }
    }
    op = calloc(1, sizeof(*op));
    if (op == NULL || (op->opt = json_copy(opt)) == NULL) {
        free(op);
        json_free(input);
        session_report_error(s, error_cb, error_new(ERROR_UNAVAILABLE, NULL, "out of memory"));
        return;
    }
    op->api = api;
    op->model = m;
    op->session = session_ref(s);
    op->method = method;
    op->started_us = metrics_now_us();
    op->fn = fn;
    op->error_cb = error_cb;
    op->callbacks = (uint32_t)ncallbacks; /* at most max_callbacks */
    session_op_begin(s, op->callbacks);
    {
        static const store_op_t ops[] = {[API_CREATE] = STORE_CREATE,
                                         [API_READ] = STORE_READ,
                                         [API_UPDATE] = STORE_UPDATE,
                                         [API_DELETE] = STORE_DELETE};
        /* The session is the store's owner: sessions take turns. */
        if (request_id != NULL && api->cfg->idempotency_window > 0) {
            char *scope = api_request_scope(s);
            store_once_t once = {scope, request_id, api->cfg->idempotency_window};
            rc = scope == NULL ? -1
                               : store_submit_once(api->store, s, ops[method], m, input, s->auth,
                                                   &once, api_crud_once_done, op);
            free(scope);
        } else {
            rc = store_submit(api->store, s, ops[method], m, with_data ? input : opt, s->auth,
                              api_crud_done, op);
        }
        json_free(input);
    }
    if (rc < 0) {
        session_report_error(s, error_cb,
                             error_new(ERROR_UNAVAILABLE, NULL, "cannot queue the operation"));
        session_op_done(s, op->callbacks);
        session_unref(s);
        api_op_free(op);
    }
}

/* ------------------------------------------------------------------------
 * Identity
 * ------------------------------------------------------------------------ */

/* fn(error) with {name: "Unauthorized", message}. */
static void api_unauthorized(session_t *s, int64_t fn, const char *why)
{
    json_t *args = json_array(), *e = error_new(ERROR_UNAUTHORIZED, NULL, "%s", why);

    if (args == NULL || e == NULL || json_array_append(args, e) < 0) {
        if (args == NULL)
            json_free(e);
        json_free(args);
        return;
    }
    if (fn >= 0)
        session_call(s, fn, args);
    json_free(args);
}

/* The issue time of claims (0 without one: older than any revocation). */
static int64_t api_iat(const json_t *claims)
{
    const json_t *iat = json_object_get(claims, "iat");
    return iat != NULL && iat->type == JSON_NUMBER ? (int64_t)iat->u.num.d : 0;
}

/* An auth waiting for the revocation store's answer. */
typedef struct api_auth_op {
    api_t *api;
    session_t *session; /* a reference */
    int64_t fn, exp;
    json_t *claims;
} api_auth_op_t;

static void api_auth_finish(api_t *api, session_t *s, int64_t fn, json_t *claims, int64_t exp);

static void api_auth_checked(void *arg, int revoked)
{
    api_auth_op_t *op = arg;
    session_t *s = op->session;

    if (session_closing(s)) {
        json_free(op->claims);
    } else if (revoked != 0) {
        slog_client(LOG_LEVEL_INFO, s, "token refused: %s",
                    revoked > 0 ? "revoked" : "revocations cannot be checked");
        api_unauthorized(s, op->fn,
                         revoked > 0 ? "token revoked"
                                     : "cannot check revocations now (Redis is unreachable)");
        json_free(op->claims);
    } else {
        api_auth_finish(op->api, s, op->fn, op->claims, op->exp);
    }
    session_op_done(s, 0);
    session_unref(s);
    free(op);
}

/* Asks the revocation store about claims, then api_auth_finish. */
static void api_auth_check(api_t *api, session_t *s, int64_t fn, json_t *claims, int64_t exp)
{
    api_auth_op_t *op = calloc(1, sizeof(*op));
    int rc;

    if (op == NULL) {
        json_free(claims);
        api_unauthorized(s, fn, "out of memory");
        return;
    }
    op->api = api;
    op->session = session_ref(s);
    op->fn = fn;
    op->exp = exp;
    op->claims = claims;
    session_op_begin(s, 0);
    rc = bus_revoked(api->bus, json_get_string(claims, "jti"), json_get_string(claims, "sub"),
                     api_iat(claims), api_auth_checked, op);
    if (rc != 0)
        api_auth_checked(op, rc > 0 ? 0 : -1); /* no store: nothing revoked; -1: down */
}

/* auth(token, fn): fn(null, {sub, exp}) or fn({name: "Unauthorized", ...}).
 * A refresh (a session already authenticated) must keep the sub. */
static void api_auth(api_t *api, session_t *s, json_t *args)
{
    const json_t *token = json_array_get(args, 0);
    int64_t fn = dnode_arg_callback(args, 1), exp = 0;
    json_t *claims;
    char why[200];

    if (token == NULL || token->type != JSON_STRING) {
        api_unauthorized(s, fn, "auth expects (token, callback)");
        return;
    }
    claims = auth_verify(api->auth, token->u.str.s, token->u.str.len, (int64_t)time(NULL), &exp,
                         why, sizeof(why));
    if (claims == NULL) {
        slog_client(LOG_LEVEL_INFO, s, "token refused: %s", why);
        api_unauthorized(s, fn, why);
        return;
    }
    api_auth_check(api, s, fn, claims, exp);
}

static void api_auth_finish(api_t *api, session_t *s, int64_t fn, json_t *claims, int64_t exp)
{
    json_t *reply, *info;

    (void)api;
    if (s->auth != NULL) {
        const char *was = json_get_string(s->auth, "sub"), *now = json_get_string(claims, "sub");
        if (was == NULL || now == NULL || strcmp(was, now) != 0) {
            json_free(claims);
            api_unauthorized(s, fn, "a refresh must keep the sub");
            return;
        }
    }
    info = json_object();
    reply = json_array();
    if (info == NULL || reply == NULL ||
        json_object_set(info, "sub", json_copy(json_object_get(claims, "sub"))) < 0 ||
        json_object_set(info, "exp", json_int(exp)) < 0 ||
        json_array_append(reply, json_null()) < 0) {
        json_free(info);
        json_free(reply);
        json_free(claims);
        return;
    }
    if (json_array_append(reply, info) < 0) { /* info is freed with the failure */
        json_free(reply);
        json_free(claims);
        return;
    }
    session_set_auth(s, claims, exp);
    if (fn >= 0)
        session_call(s, fn, reply);
    json_free(reply);
}

/* With auth_anonymous = deny, a session that has not authenticated may
 * call nothing but auth. 1 when idx may run. */
static int api_admitted(api_t *api, session_t *s, int idx, const json_t *args)
{
    const json_t *opt;
    int64_t fn;

    if (idx == API_AUTH || s->auth != NULL || api->cfg->auth_anonymous == NULL ||
        strcmp(api->cfg->auth_anonymous, "deny") != 0)
        return 1;
    if (idx == API_SUBSCRIBE || idx == API_UNSUBSCRIBE) {
        api_reply_string(s, dnode_arg_callback(args, 1), "Unauthorized: authenticate first");
        return 0;
    }
    opt = json_array_get(args, idx == API_READ ? 0 : 1);
    fn = api_error_cb(opt);
    session_report_error(s, fn,
                         error_new(ERROR_UNAUTHORIZED, NULL,
                                   "authenticate first (this server takes no anonymous calls)"));
    return 0;
}

void api_sweep(api_t *api, session_t *s, int64_t now, uint64_t age_s)
{
    const config_t *cfg = api->cfg;

    if (session_closing(s))
        return;
    if (s->auth == NULL) {
        if (cfg->auth_anonymous != NULL && strcmp(cfg->auth_anonymous, "deny") == 0 &&
            age_s >= (uint64_t)cfg->auth_timeout)
            session_end(s, CONN_CLOSE_TIMEOUT, "not authenticated within auth_timeout");
        return;
    }
    if (s->auth_exp <= 0)
        return;
    if (now >= s->auth_exp + cfg->auth_grace) {
        session_end(s, CONN_CLOSE_TIMEOUT, "token expired and was not refreshed");
        return;
    }
    if (!s->auth_warned && cfg->auth_expiry_notice > 0 &&
        now >= s->auth_exp - cfg->auth_expiry_notice) {
        json_t *args = json_array();
        s->auth_warned = 1;
        if (args != NULL &&
            json_array_append(args, json_int(s->auth_exp > now ? s->auth_exp - now : 0)) == 0)
            session_call_remote(s, SESSION_REMOTE_AUTH_EXPIRING, args);
        json_free(args);
    }
}

void api_call(api_t *api, session_t *s, int idx, json_t *args, size_t ncallbacks)
{
    if (!api_admitted(api, s, idx, args)) {
        json_free(args);
        return;
    }
    switch (idx) {
    case API_CREATE:
    case API_READ:
    case API_UPDATE:
    case API_DELETE:
        api_crud(api, s, idx, args, ncallbacks);
        break;
    case API_SUBSCRIBE:
        api_subscribe(api, s, args, 1);
        break;
    case API_UNSUBSCRIBE:
        api_subscribe(api, s, args, 0);
        break;
    case API_PUBLISH:
        api_publish(api, s, args);
        break;
    case API_AUTH:
        api_auth(api, s, args);
        break;
    default:
        break;
    }
    json_free(args);
}

/* ------------------------------------------------------------------------
 * What each subscriber may see of a push
 * ------------------------------------------------------------------------ */

int api_push_filter(void *arg, const session_t *s, const char *channel, int *which,
                    const char *type, const json_t *doc, const json_t *old, json_t **custom)
{
    api_t *api = arg;
    const model_t *m;
    const json_t *shown = doc;
    int now, before;

    if (!model_set_has_rules(api->models))
        return BUS_AS_IS;
    if (*which == SESSION_REMOTE_SUBSCRIBED || *which == SESSION_REMOTE_UNSUBSCRIBED)
        return model_access_channel(api->models, channel, s->auth, MODEL_PRESENCE) ? BUS_AS_IS
                                                                                   : BUS_SKIP;
    m = type != NULL ? model_set_find(api->models, type) : NULL;
    if (m == NULL || (!model_has_rules(m) && !model_access_hides(m)))
        return BUS_AS_IS;
    /* The read rule, in memory: the change's documents are at hand. */
    now = model_access_check(m, MODEL_READ, s->auth, doc, NULL, NULL);
    before = old != NULL && model_access_check(m, MODEL_READ, s->auth, old, NULL, NULL);
    if (*which == SESSION_REMOTE_UPDATED && old != NULL && now != before) {
        /* it left this subscriber's view, or came into it */
        *which = now ? SESSION_REMOTE_CREATED : SESSION_REMOTE_DELETED;
        shown = now ? doc : old;
    } else if (!now) {
        return BUS_SKIP;
    }
    if (shown == doc && !model_access_hides(m))
        return BUS_AS_IS;
    *custom = json_copy(shown);
    if (*custom == NULL)
        return BUS_SKIP;
    model_access_hide(m, s->auth, *custom);
    return BUS_CUSTOM;
}

/* ------------------------------------------------------------------------
 * Revocation
 * ------------------------------------------------------------------------ */

static void api_offered_checked(void *arg, int revoked)
{
    session_t *s = arg;

    if (!session_closing(s)) {
        if (revoked != 0)
            session_end(s, CONN_CLOSE_OTHER,
                        revoked > 0 ? "token revoked" : "token not checked: revocations unreachable");
        else
            conn_unpause(s->conn);
    }
    session_unref(s);
}

void api_check_offered(api_t *api, session_t *s)
{
    int rc;

    if (s->auth == NULL)
        return;
    /* nothing it sends is taken until the answer */
    conn_pause(s->conn);
    rc = bus_revoked(api->bus, json_get_string(s->auth, "jti"), json_get_string(s->auth, "sub"),
                     api_iat(s->auth), api_offered_checked, session_ref(s));
    if (rc != 0)
        api_offered_checked(s, rc > 0 ? 0 : -1);
}

int api_revoke_matches(const session_t *s, const char *kind, const char *value, int64_t before)
{
    const char *v;

    if (s->auth == NULL)
        return 0;
    if (strcmp(kind, "jti") == 0)
        return (v = json_get_string(s->auth, "jti")) != NULL && strcmp(v, value) == 0;
    return (v = json_get_string(s->auth, "sub")) != NULL && strcmp(v, value) == 0 &&
           api_iat(s->auth) < before;
}
