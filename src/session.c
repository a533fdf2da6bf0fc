/* session: one client's protocol state and output (see session.h). Input
 * bytes arrive already split into messages by the transport; requests go
 * to api. Teardown is deferred to the worker so that nothing running on
 * behalf of a session (a bus fan-out, an api reply) sees it freed. */
#include "session.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#include <event2/buffer.h>

#include "api.h"
#include "bus.h"
#include "dnode.h"
#include "error.h"
#include "handoff.h"
#include "log.h"
#include "metrics.h"
#include "transport.h"
#include "worker.h"

static const char *const remote_names[SESSION_REMOTE_COUNT] = {
    "created", "updated", "deleted", "subscribed", "unsubscribed", "error",
};

/* ------------------------------------------------------------------------
 * Shared messages
 * ------------------------------------------------------------------------ */

session_msg_t *session_msg_new(const char *data, size_t len)
{
    session_msg_t *m = malloc(sizeof(*m) + len + 2);

    if (m == NULL)
        return NULL;
    m->refs = 1;
    m->len = len;
    memcpy(m->data, data, len);
    m->data[len] = '\n';
    m->data[len + 1] = '\0';
    return m;
}

/* A DNode message written by the codec straight into the buffer that
 * becomes the session_msg_t: no intermediate string, no copy. */
static session_msg_t *session_msg_build(const char *method, int64_t method_id, const json_t *args)
{
    const size_t head = offsetof(session_msg_t, data);
    json_buf_t b = {NULL, 0, 0};
    session_msg_t *m;

    if (json_buf_reserve(&b, head + 240) < 0)
        return NULL;
    b.len = head;
    if (dnode_build_append(&b, method, method_id, args) < 0 || json_buf_append(&b, "", 1) < 0) {
        free(b.data);
        return NULL;
    }
    /* A message can wait in many output buffers: give back the slack of a
     * large one (shrinking in place never fails in practice; if it does,
     * the larger block is kept). */
    if (b.cap - b.len > 4096) {
        char *fit = realloc(b.data, b.len);
        if (fit != NULL)
            b.data = fit;
    }
    m = (session_msg_t *)(void *)b.data;
    m->refs = 1;
    m->len = b.len - head - 2; /* data ends with '\n' and a NUL */
    return m;
}

session_msg_t *session_msg_call(const char *method, const json_t *args)
{
    return session_msg_build(method, -1, args);
}

void session_msg_unref(session_msg_t *m)
{
    if (m != NULL && --m->refs == 0)
        free(m);
}

static void msg_release(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    session_msg_unref(arg);
}

/* ------------------------------------------------------------------------
 * Lifetime
 * ------------------------------------------------------------------------ */

session_t *session_new(worker_t *w, struct bufferevent *bev, const char *peer,
                       session_framing_t framing)
{
    session_t *s = calloc(1, sizeof(*s));
    int i;

    if (s == NULL) {
        bufferevent_free(bev);
        return NULL;
    }
    s->id = ++w->next_session_id;
    s->worker = w;
    s->bev = bev;
    /* Read once: bufferevent_getfd takes the bufferevent's lock, and the
     * direct write of every fan-out delivery needs the fd. */
    s->fd = bufferevent_getfd(bev);
    s->refs = 1; /* the worker's list */
    s->framing = framing;
    s->accepted_us = metrics_now_us();
    for (i = 0; i < SESSION_REMOTE_COUNT; i++)
        s->remote[i] = -1;
    snprintf(s->peer, sizeof(s->peer), "%s", peer);
    s->next = w->sessions;
    if (w->sessions != NULL)
        w->sessions->prev = s;
    w->sessions = s;
    w->nsessions++;
    w->stats->connections_opened++;
    return s;
}

int session_start(session_t *s) { return session_send_msg(s, s->worker->methods_msg); }

session_t *session_ref(session_t *s)
{
    s->refs++;
    return s;
}

void session_unref(session_t *s)
{
    if (s == NULL || --s->refs > 0)
        return;
    free(s->subs);
    free(s);
}

const char *session_ctx(const session_t *s, char *buf, size_t len)
{
    snprintf(buf, len, "session %llu %s", (unsigned long long)s->id, s->peer);
    return buf;
}

void session_close(session_t *s, const char *reason)
{
    if (s->closing)
        return;
    s->closing = 1;
    if (s->handed) {
        /* The connection lives on in the new generation. */
        slog_debug(s, "released: %s", reason);
    } else {
        slog_info(s, "closed: %s", reason);
        if (s->started) /* a DNode session, not a plain HTTP connection */
            metrics_disconnect(s->worker->stats, reason);
    }
    if (s->bev != NULL)
        bufferevent_disable(s->bev, EV_READ);
    worker_schedule_teardown(s->worker, s);
}

/* Close once nothing is in flight, every byte has been written, and no
 * request is waiting to be read, neither in our input buffer nor in the
 * socket: a request the client sent before we closed is still answered.
 * (One sent in the instant between this check and close(2) cannot be; the
 * protocol has no way to announce the close first.) A retiring worker
 * hands the session off at that moment instead: what the client sends
 * meanwhile waits in the socket for the adopter, so nothing is lost. */
static void session_close_when_idle(session_t *s)
{
    int unread = 0, rc;
    evutil_socket_t fd;

    if (s->closing || s->handed || s->held || s->inflight > 0 || s->bev == NULL)
        return;
    if (s->worker->corked == s && s->worker->ncork > 0)
        return; /* replies not yet written: uncorking is followed by a drain */
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
        return; /* the transport's write callback calls us again */
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
        return; /* a partial message: the read callback calls us again */
    if (s->worker->retiring && !s->no_handoff) {
        /* Its own publishes must reach Redis before any it makes from the
         * new worker, or subscribers could see them out of order. */
        if (s->callbacks_held > 0 || s->unconfirmed > 0 || !transport_idle(s))
            return; /* the read callback or session_publish_done calls us again */
        if (s->handoff != NULL)
            return; /* adopted, some markers still to come: handoff_marker calls us */
        rc = handoff_send(s);
        if (rc >= 0)
            return; /* sent, or the channel is full: the stop tick retries */
        s->no_handoff = 1;
    }
    fd = bufferevent_getfd(s->bev);
    if (fd >= 0 && ioctl(fd, FIONREAD, &unread) == 0 && unread > 0)
        return;
    session_close(s, "drained");
}

void session_drain(session_t *s)
{
    if (s->closing)
        return;
    s->draining = 1;
    session_close_when_idle(s);
}

static void session_soft_clear(session_t *s)
{
    if (s->over_soft_us != 0) {
        s->over_soft_us = 0;
        s->worker->nover_soft--;
    }
}

void session_output_drained(session_t *s)
{
    session_soft_clear(s);
    if (s->handed)
        handoff_output_drained(s);
    else if (s->draining)
        session_close_when_idle(s);
}

void session_publish_done(session_t *s)
{
    if (s->unconfirmed > 0)
        s->unconfirmed--;
    if (s->draining && s->unconfirmed == 0)
        session_close_when_idle(s);
}

void session_op_done(session_t *s)
{
    if (s->inflight > 0)
        s->inflight--;
    if (s->draining)
        session_close_when_idle(s);
}

void session_teardown(session_t *s)
{
    worker_t *w = s->worker;

    if (s->torn_down)
        return;
    s->torn_down = 1;
    if (w->corked == s)
        session_uncork(s); /* closing: releases what the cork held */
    session_soft_clear(s);
    if (w->bus != NULL)
        bus_leave_all(w->bus, s);
    transport_session_free(s);
    handoff_session_free(s);
    if (s->bev != NULL) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    w->nsessions--;
    w->stats->connections_closed++;
    session_unref(s); /* the worker's list */
}

/* ------------------------------------------------------------------------
 * Slow consumers
 * ------------------------------------------------------------------------ */

/* Disconnect s as too slow: counted, logged with the reason, and closed
 * (a WebSocket with 1008, after the frames already queued). */
static void session_drop_slow(session_t *s, const char *reason)
{
    if (s->slow || s->closing)
        return;
    s->slow = 1;
    session_soft_clear(s);
    s->worker->stats->slow_consumers++;
    slog_warning(s, "%s: disconnecting", reason);
    /* A handed-off connection is the adopter's now: no close frame from here. */
    if (s->framing == SESSION_FRAMING_WEBSOCKET && !s->handed)
        transport_ws_close_policy(s, reason);
    else
        session_close(s, reason);
}

/* The soft rule at time now_us for output of len bytes. 0, or -1 when s
 * was dropped. */
static int session_soft_rule(session_t *s, size_t len, uint64_t now_us)
{
    const config_t *cfg = s->worker->cfg;
    char reason[96];

    if (len <= cfg->output_soft_limit) {
        session_soft_clear(s);
        return 0;
    }
    if (s->over_soft_us == 0) {
        s->over_soft_us = now_us > 0 ? now_us : 1;
        s->worker->nover_soft++;
        return 0;
    }
    if (now_us - s->over_soft_us < (uint64_t)cfg->output_soft_seconds * 1000000)
        return 0;
    snprintf(reason, sizeof(reason), "output over output_soft_limit for %d s (client too slow)",
             cfg->output_soft_seconds);
    session_drop_slow(s, reason);
    return -1;
}

void session_check_soft(session_t *s, uint64_t now_us)
{
    if (s->over_soft_us == 0 || s->closing || s->slow || s->bev == NULL)
        return;
    session_soft_rule(s, evbuffer_get_length(bufferevent_get_output(s->bev)), now_us);
}

/* After queueing: the hard limit, then the soft rule. 0, or -1 when s was
 * dropped. The clock is read only while the output is over the soft limit. */
static int session_check_output(session_t *s, size_t len)
{
    if (s->slow)
        return -1;
    if (len > s->worker->cfg->max_output_buffer) {
        session_drop_slow(s, "output buffer over max_output_buffer (client too slow)");
        return -1;
    }
    if (len <= s->worker->cfg->output_soft_limit && s->over_soft_us == 0)
        return 0;
    return session_soft_rule(s, len, metrics_now_us());
}

/* ------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------ */

ssize_t session_write_direct(session_t *s, struct evbuffer *out, struct iovec *iov, int iovcnt)
{
    evutil_socket_t fd;
    ssize_t n;

    /* Only an idle connection may skip the buffer: anything queued must go
     * out first. Writing at once saves the two epoll_ctl() calls and the
     * loop pass that arming the write event costs, which dominates fan-out
     * to thousands of subscribers. */
    if ((fd = s->fd) < 0 || s->held || evbuffer_get_length(out) > 0)
        return 0;
    do
        n = writev(fd, iov, iovcnt);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    return n;
}

/* Write out what the cork holds for s, queueing what the socket does not
 * take. 0, or -1 when s was closed (error, or an output limit). */
static int session_flush_cork(session_t *s)
{
    worker_t *w = s->worker;
    struct iovec iov[SESSION_CORK_MAX];
    struct evbuffer *out;
    unsigned i, n = w->ncork;
    ssize_t done = 0;

    w->ncork = 0;
    if (n == 0)
        return 0;
    if (s->closing || s->bev == NULL) {
        for (i = 0; i < n; i++)
            session_msg_unref(w->cork[i]);
        return -1;
    }
    out = bufferevent_get_output(s->bev);
    if (s->framing == SESSION_FRAMING_WEBSOCKET) {
        int rc = transport_ws_write(s, w->cork, n);

        for (i = 0; i < n; i++)
            session_msg_unref(w->cork[i]);
        if (rc < 0) {
            session_close(s, "cannot queue output");
            return -1;
        }
        return s->closing ? -1 : session_check_output(s, evbuffer_get_length(out));
    }
    for (i = 0; i < n; i++) {
        iov[i].iov_base = w->cork[i]->data;
        iov[i].iov_len = w->cork[i]->len + 1;
    }
    done = session_write_direct(s, out, iov, (int)n);
    for (i = 0; i < n; i++) {
        session_msg_t *m = w->cork[i];
        size_t size = m->len + 1;

        if (done >= 0 && (size_t)done >= size) {
            done -= (ssize_t)size;
            session_msg_unref(m);
            continue;
        }
        /* The cork's reference passes to the output buffer. */
        if (done < 0 || s->closing ||
            evbuffer_add_reference(out, m->data + done, size - (size_t)done, msg_release, m) < 0) {
            session_msg_unref(m);
            if (!s->closing)
                session_close(s, done < 0 ? "write error" : "cannot queue output");
            continue;
        }
        done = 0;
    }
    if (s->closing)
        return -1;
    return session_check_output(s, evbuffer_get_length(out));
}

void session_cork(session_t *s)
{
    worker_t *w = s->worker;

    if (w->corked != NULL && w->corked != s)
        session_uncork(w->corked);
    w->corked = s;
}

void session_uncork(session_t *s)
{
    worker_t *w = s->worker;

    if (w->corked != s)
        return;
    w->corked = NULL;
    session_flush_cork(s);
}

int session_send_msg(session_t *s, session_msg_t *m)
{
    struct evbuffer *out;
    worker_t *w = s->worker;

    if (s->closing || s->bev == NULL || m == NULL)
        return -1;
    if (w->corked == s) {
        if (w->ncork == SESSION_CORK_MAX && session_flush_cork(s) < 0)
            return -1;
        m->refs++;
        w->cork[w->ncork++] = m;
        w->stats->messages_out++;
        return 0;
    }
    out = bufferevent_get_output(s->bev);
    if (s->framing == SESSION_FRAMING_WEBSOCKET) {
        if (transport_ws_write(s, &m, 1) < 0) {
            session_close(s, "cannot queue output");
            return -1;
        }
    } else {
        struct iovec iov = {m->data, m->len + 1};
        ssize_t n = session_write_direct(s, out, &iov, 1);

        if (n < 0) {
            session_close(s, "write error");
            return -1;
        }
        if ((size_t)n < m->len + 1) {
            m->refs++;
            if (evbuffer_add_reference(out, m->data + n, m->len + 1 - (size_t)n, msg_release, m) <
                0) {
                m->refs--;
                session_close(s, "cannot queue output");
                return -1;
            }
        }
    }
    s->worker->stats->messages_out++;
    return session_check_output(s, evbuffer_get_length(out));
}

int session_call(session_t *s, int64_t cb, const json_t *args)
{
    session_msg_t *m;
    int rc;

    if (cb < 0 || s->closing)
        return -1;
    m = session_msg_build(NULL, cb, args);
    if (m == NULL)
        return -1;
    rc = session_send_msg(s, m);
    session_msg_unref(m);
    return rc;
}

int session_call_remote(session_t *s, int which, const json_t *args)
{
    if (which < 0 || which >= SESSION_REMOTE_COUNT || s->remote[which] < 0)
        return 0;
    return session_call(s, s->remote[which], args) < 0 ? -1 : 1;
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
    api_report_error(s, -1, error_newv(ERROR_INVALID_REQUEST, NULL, fmt, ap));
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
            id->u.num.i < (int64_t)api_method_count)
            s->culled |= (uint8_t)(1u << id->u.num.i);
    }
}

void session_handle_message(session_t *s, const char *data, size_t len)
{
    worker_t *w = s->worker;
    dnode_msg_t msg;
    char err[200];
    size_t budget;
    int idx;

    if (s->closing)
        return;
    w->stats->messages_in++;
    /* max_callbacks counts what the client's requests in flight hold: a
     * request may bring what is left of it. The codec refuses more before
     * placing any, except that a "methods" message (not counted) may bring
     * up to the codec's own default; anything over that is refused too. */
    budget =
        s->callbacks_held < w->cfg->max_callbacks ? w->cfg->max_callbacks - s->callbacks_held : 0;
    if (dnode_parse_capped(data, len, w->cfg->max_json_depth,
                           budget > DNODE_MAX_CALLBACKS ? budget : DNODE_MAX_CALLBACKS, &msg, err,
                           sizeof(err)) < 0) {
        w->stats->malformed++;
        slog_warning(s, "message skipped: %s", err);
        session_report(s, "message skipped: %s", err);
        return;
    }
    if (msg.ncallbacks > budget && (msg.method == NULL || strcmp(msg.method, "methods") != 0)) {
        w->stats->malformed++;
        snprintf(err, sizeof(err), "too many callbacks (%zu, at most %zu)", msg.ncallbacks, budget);
        slog_warning(s, "message skipped: %s (max_callbacks is %zu, %u held by requests in flight)",
                     err, w->cfg->max_callbacks, s->callbacks_held);
        session_report(s, "message skipped: %s", err);
        dnode_msg_clear(&msg);
        return;
    }
    if (msg.method != NULL && strcmp(msg.method, "methods") == 0) {
        session_take_methods(s, msg.args);
    } else if (msg.method != NULL && strcmp(msg.method, "cull") == 0) {
        session_take_cull(s, msg.args);
    } else {
        if (msg.method != NULL)
            idx = api_method_index(msg.method);
        else if (msg.method_id < (int64_t)api_method_count && !(s->culled & (1u << msg.method_id)))
            idx = (int)msg.method_id;
        else
            idx = -1;
        if (idx < 0) {
            char name[64];
            if (msg.method != NULL)
                snprintf(name, sizeof(name), "%.60s", msg.method);
            else
                snprintf(name, sizeof(name), "%lld", (long long)msg.method_id);
            w->stats->unknown_methods++;
            slog_warning(s, "unknown method '%s' skipped", name);
            session_report(s, "unknown method '%s'", name);
        } else {
            api_call(s, idx, msg.args, msg.ncallbacks);
            msg.args = NULL; /* api owns them now */
        }
    }
    dnode_msg_clear(&msg);
}
