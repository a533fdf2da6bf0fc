/* api: the backbone-dnode methods (see api.h, and README.md's
 * "The wire API"). Each handler checks its arguments, starts the work (store, bus)
 * and answers through the caller's callbacks. An operation waiting for the
 * database holds a session reference, so its completion may arrive after
 * the client has gone: it is then dropped quietly. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "dnode.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "store.h"

enum { API_CREATE, API_READ, API_UPDATE, API_DELETE, API_SUBSCRIBE, API_UNSUBSCRIBE, API_PUBLISH };

const char *const api_method_names[] = {
    "create", "read", "update", "delete", "subscribe", "unsubscribe", "publish",
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
    args = json_array();
    if (args == NULL || json_array_append(args, value != NULL ? value : json_null()) < 0) {
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

static void api_subscribe(api_t *api, session_t *s, json_t *args, int join)
{
    const char *url = api_channel_arg(args, 0);
    int64_t fn = dnode_arg_callback(args, 1);
    bus_t *bus = api->bus;
    int rc;

    if (url == NULL) {
        api_reply_string(s, fn, "missing parameters");
        return;
    }
    rc = join ? bus_subscribe(bus, s, url) : bus_unsubscribe(bus, s, url);
    if (rc < 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "too many subscriptions (max_subscriptions is %zu)",
                 api->cfg->max_subscriptions);
        slog_client(LOG_LEVEL_WARNING, s, "subscribe refused: %s", msg);
        api_reply_string(s, fn, msg);
        return;
    }
    api_reply(s, fn, NULL);
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

/* Publish doc on opt.url as `event` with opt's callbacks removed. */
static int api_broadcast(api_t *api, session_t *s, const json_t *opt, const char *event,
                         const json_t *doc)
{
    const char *url = json_get_string(opt, "url");
    json_t *pushed;
    uint64_t started;
    int rc;

    if (url == NULL || url[0] == '\0')
        return 0;
    pushed = json_copy(opt);
    if (pushed == NULL)
        return -1;
    json_strip_callbacks(pushed);
    started = metrics_now_us();
    rc = bus_publish_from(api->bus, s, url, event, doc, pushed);
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
    doc = json_copy(model);
    if (doc == NULL)
        return;
    json_strip_callbacks(doc);
    if (api_broadcast(api, s, opt, event, doc) < 0)
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

static void api_crud_done(void *arg, json_t *result, json_t *error)
{
    api_op_t *op = arg;
    session_t *s = op->session;
    static const char *const events[] = {"created", NULL, "updated", "deleted"};

    metrics_observe(&op->api->stats->db, metrics_now_us() - op->started_us);
    /* The store hands over neither only when it ran out of memory. */
    if (error == NULL && result == NULL)
        error = error_new(ERROR_UNAVAILABLE, NULL, "out of memory");
    /* When the client has gone there is nobody to answer, but a committed
     * change is still published so that other subscribers stay in sync. */
    if (error != NULL) {
        if (!session_closing(s))
            session_report_error(s, op->error_cb, error);
        else
            json_free(error);
    } else {
        if (events[op->method] != NULL && !json_is_true(json_object_get(op->opt, "silent")))
            api_broadcast(op->api, s, op->opt, events[op->method], result);
        if (!session_closing(s))
            api_reply(s, op->fn, result);
        else
            json_free(result);
    }
    session_op_done(s, op->callbacks);
    session_unref(s);
    api_op_free(op);
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
    char msg[200];
    int rc;

    if (opt == NULL || opt->type != JSON_OBJECT ||
        (with_data && (data == NULL || data->type != JSON_OBJECT))) {
        snprintf(msg, sizeof(msg), "%s expects %s", api_method_names[method],
                 with_data ? "(data, options, callback)" : "(options, callback)");
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
        session_report_error(s, error_cb, error_new(ERROR_UNAVAILABLE, NULL, "no database configured"));
        return;
    }
    op = calloc(1, sizeof(*op));
    if (op == NULL || (op->opt = json_copy(opt)) == NULL) {
        free(op);
        session_report_error(s, error_cb, error_new(ERROR_UNAVAILABLE, NULL, "out of memory"));
        return;
    }
    op->api = api;
    op->session = session_ref(s);
    op->method = method;
    op->started_us = metrics_now_us();
    op->fn = fn;
    op->error_cb = error_cb;
    op->callbacks = (uint32_t)ncallbacks; /* at most max_callbacks */
    session_op_begin(s, op->callbacks);
    {
        static const store_op_t ops[] = {[API_CREATE] = STORE_CREATE, [API_READ] = STORE_READ,
                                         [API_UPDATE] = STORE_UPDATE,
                                         [API_DELETE] = STORE_DELETE};
        /* The session is the store's owner: sessions take turns. */
        rc = store_submit(api->store, s, ops[method], m, with_data ? data : opt, api_crud_done,
                          op);
    }
    if (rc < 0) {
        session_report_error(s, error_cb,
                             error_new(ERROR_UNAVAILABLE, NULL, "cannot queue the operation"));
        session_op_done(s, op->callbacks);
        session_unref(s);
        api_op_free(op);
    }
}

void api_call(api_t *api, session_t *s, int idx, json_t *args, size_t ncallbacks)
{
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
    default:
        break;
    }
    json_free(args);
}
