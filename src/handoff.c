/* handoff: moving idle sessions to the new generation on reload (see
 * handoff.h). The old worker sends the connection and a JSON description
 * of the session; a worker of the new generation that reads it makes a
 * session of it and joins its channels. Where a channel's pushes change
 * hands is a marker the adopter puts in the channel's order: the old worker
 * delivers up to it, the adopter after it, and the adopter moves no byte
 * until the old worker says "done" on a reply socket sent along. */
#include "handoff.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bus.h"
#include "conn_open.h"
#include "log.h"
#include "metrics.h"

#define HANDOFF_VERSION 1
/* A message carries a session's subscriptions: max_subscriptions names. */
#define HANDOFF_MAX_MESSAGE (256 * 1024)
/* Room asked for in the channel's send buffer (the kernel may cap it). */
#define HANDOFF_SNDBUF (4 * 1024 * 1024)
/* How often an adopter whose bus is not ready (Redis down) looks again,
 * and for how long it leaves the channel to others before adopting anyway. */
#define HANDOFF_RETRY_MS 200
#define HANDOFF_BUS_WAIT_US (3 * 1000000ULL)
/* Past shutdown_timeout, an adopter stops waiting for the old worker. */
#define HANDOFF_WAIT_SLACK_SECONDS 10

enum { HANDOFF_OLD, HANDOFF_ADOPTER };

struct handoff {
    int role;
    int reply;        /* the reply socket, or -1 */
    struct event *ev; /* reading it */
    char id[80];      /* the marker */
    size_t nchan;     /* the session's channels at the move */
    size_t pending;   /* markers not yet seen */
    char **chan;
    unsigned char *seen;
};

struct handoff_chan {
    handoff_deps_t d;
    int in, out;         /* the master's socketpair: adopt from in, send on out */
    struct event *ev;    /* in is readable */
    struct event *retry; /* the bus was not ready: look again */
    int receiving;
    uint64_t seq;
    uint64_t unready_since; /* metrics_now_us() when the bus was first seen down, or 0 */
    char *buf;
};

static const char *const kind_names[] = {"fresh", "line", "ws"};

/* ------------------------------------------------------------------------
 * Per-session state
 * ------------------------------------------------------------------------ */

static handoff_t *handoff_new(int role, const char *id)
{
    handoff_t *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return NULL;
    h->role = role;
    h->reply = -1;
    snprintf(h->id, sizeof(h->id), "%s", id);
    return h;
}

/* Add channel name (not yet marked). 0 or -1. */
static int handoff_add_channel(handoff_t *h, const char *name)
{
    char **chan = realloc(h->chan, (h->nchan + 1) * sizeof(*chan));
    unsigned char *seen;

    if (chan == NULL)
        return -1;
    h->chan = chan;
    seen = realloc(h->seen, h->nchan + 1);
    if (seen == NULL)
        return -1;
    h->seen = seen;
    if ((h->chan[h->nchan] = strdup(name)) == NULL)
        return -1;
    h->seen[h->nchan] = 0;
    h->nchan++;
    h->pending++;
    return 0;
}

static void handoff_free(handoff_t *h)
{
    size_t i;

    if (h == NULL)
        return;
    if (h->ev != NULL)
        event_free(h->ev);
    if (h->reply >= 0)
        close(h->reply);
    for (i = 0; i < h->nchan; i++)
        free(h->chan[i]);
    free(h->chan);
    free(h->seen);
    free(h);
}

static void handoff_mark(handoff_t *h, size_t i)
{
    if (!h->seen[i]) {
        h->seen[i] = 1;
        h->pending--;
    }
}

static size_t handoff_find(const handoff_t *h, const char *channel)
{
    size_t i;

    for (i = 0; i < h->nchan; i++)
        if (strcmp(h->chan[i], channel) == 0)
            return i;
    return h->nchan;
}

int handoff_may_push(const session_t *s, const char *channel)
{
    const handoff_t *h = s->handoff;
    size_t i;

    if (h == NULL || (i = handoff_find(h, channel)) == h->nchan)
        return 1;
    return h->role == HANDOFF_OLD ? !h->seen[i] : h->seen[i];
}

/* Old side: every marker seen and every byte written: tell the adopter and
 * let go of the connection. */
static void handoff_finish(session_t *s)
{
    handoff_t *h = s->handoff;

    if (session_closing(s) || h == NULL || h->role != HANDOFF_OLD || h->pending > 0)
        return;
    /* The socket goes to the adopter: what a batch holds is written first. */
    if (conn_flush(s->conn) < 0 || conn_pending_output(s->conn) > 0)
        return; /* the write callback calls us again */
    if (h->reply >= 0 && write(h->reply, "d", 1) != 1)
        slog_warning(s, "cannot tell the adopting worker to go on: %s", strerror(errno));
    session_close(s, CONN_CLOSE_MOVED, "handed off to the new generation");
}

void handoff_output_drained(session_t *s) { handoff_finish(s); }

void handoff_marker(session_t *s, const char *channel, const char *id)
{
    handoff_t *h = s->handoff;
    size_t i;

    if (h == NULL || strcmp(h->id, id) != 0 || (i = handoff_find(h, channel)) == h->nchan)
        return;
    handoff_mark(h, i);
    if (h->role == HANDOFF_OLD) {
        handoff_finish(s);
    } else if (h->pending == 0 && h->reply < 0) {
        handoff_free(h); /* resumed and every channel is ours: nothing left to filter */
        s->handoff = NULL;
        if (s->conn->draining) /* this worker retires too: the session may move on */
            session_drain(s);
    }
}

void handoff_session_free(session_t *s)
{
    handoff_free(s->handoff);
    s->handoff = NULL;
}

/* ------------------------------------------------------------------------
 * Old side
 * ------------------------------------------------------------------------ */

/* What the adopter says on the reply socket: 'x' when it could not put a
 * marker on some channel (stop its pushes here at once), EOF when it went
 * away (the connection goes with it). */
static void handoff_old_reply_cb(evutil_socket_t fd, short what, void *arg)
{
    session_t *s = arg;
    handoff_t *h = s->handoff;
    char buf[16];
    ssize_t n;
    size_t i;

    (void)what;
    n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (event_add(h->ev, NULL) < 0)
            session_close(s, CONN_CLOSE_OTHER, "cannot watch the adopting worker");
        return;
    }
    if (n > 0) {
        slog_info(s, "the adopting worker cannot place every marker (see its log): pushes "
                     "stop here now");
        for (i = 0; i < h->nchan; i++)
            handoff_mark(h, i);
        if (event_add(h->ev, NULL) < 0)
            slog_debug(s, "cannot watch the adopting worker any more");
        handoff_finish(s);
        return;
    }
    session_close(s, CONN_CLOSE_OTHER, "the adopting worker went away");
}

int handoff_send(handoff_chan_t *ch, conn_t *c, session_t *s)
{
    json_t *m = NULL, *subs = NULL;
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(2 * sizeof(int))];
    } cm;
    struct msghdr mh;
    struct iovec iov;
    struct cmsghdr *cmsg;
    handoff_t *h = NULL;
    char id[80], *text = NULL;
    int kind, rp[2] = {-1, -1}, fds[2], nfds = 1, rc = -1, i;
    size_t len;
    uint64_t now = metrics_now_us();

    if (ch == NULL || c->fd < 0 || c->bev == NULL)
        return -1;
    if (s != NULL && s->handoff != NULL)
        return 1; /* still arriving from an earlier move: its markers first */
    switch (c->kind) {
    case CONN_NEW:
        kind = CONN_ADOPT_FRESH;
        break;
    case CONN_LINE:
        kind = CONN_ADOPT_LINE;
        break;
    case CONN_WS:
        kind = CONN_ADOPT_WS;
        break;
    default:
        return -1; /* plain HTTP: closes when idle, as before */
    }
    if (kind != CONN_ADOPT_FRESH && s == NULL)
        return -1;
    snprintf(id, sizeof(id), "%ld.%llu.%llu.%llu", (long)getpid(), (unsigned long long)c->id,
             (unsigned long long)++ch->seq, (unsigned long long)now);
    m = json_object();
    if (m == NULL || json_object_set(m, "subs", json_array()) < 0)
        goto oom;
    subs = json_object_get(m, "subs"); /* borrowed from m */
    if (subs == NULL)
        goto oom;
    if (s != NULL) {
        if (session_export(s, m) < 0)
            goto oom;
        if (s->nsubs > 0 && (h = handoff_new(HANDOFF_OLD, id)) == NULL)
            goto oom;
        for (i = 0; i < (int)s->nsubs; i++) {
            const char *name = bus_channel_name(s->subs[i]);
            if (json_array_append(subs, json_string(name)) < 0 ||
                handoff_add_channel(h, name) < 0)
                goto oom;
        }
    } else if (session_export(NULL, m) < 0) {
        goto oom;
    }
    if (json_object_set(m, "v", json_int(HANDOFF_VERSION)) < 0 ||
        json_object_set(m, "kind", json_string(kind_names[kind])) < 0 ||
        json_object_set(m, "peer", json_string(c->peer)) < 0 ||
        json_object_set(
            m, "age_ms",
            json_int((int64_t)(now > c->accepted_us ? now - c->accepted_us : 0) / 1000)) < 0 ||
        json_object_set(m, "marker", json_string(id)) < 0 ||
        json_object_set(m, "from", json_string(bus_id(ch->d.bus))) < 0 ||
        json_object_set(m, "carrier", json_string(bus_carrier(ch->d.bus))) < 0)
        goto oom;
    text = json_dump(m, &len);
    if (text == NULL)
        goto oom;
    if (len > HANDOFF_MAX_MESSAGE) {
        clog_warning(c, "cannot hand off: its state (%zu bytes) is too large", len);
        goto done;
    }
    if (h != NULL && socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, rp) < 0) {
        clog_warning(c, "cannot hand off: socketpair() failed: %s", strerror(errno));
        goto done;
    }
    fds[0] = c->fd;
    if (rp[1] >= 0)
        fds[nfds++] = rp[1];
    memset(&mh, 0, sizeof(mh));
    memset(&cm, 0, sizeof(cm));
    iov.iov_base = text;
    iov.iov_len = len;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cm.buf;
    mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
    cmsg = CMSG_FIRSTHDR(&mh);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, (size_t)nfds * sizeof(int));
    /* From here on no byte is taken from the socket: what the client sends
     * waits there for the adopter. */
    if (bufferevent_disable(c->bev, EV_READ) < 0)
        goto done;
    if (sendmsg(ch->out, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR) {
            rc = 1;
        } else {
            clog_warning(c, "cannot hand off: sendmsg() failed: %s", strerror(errno));
        }
        if (bufferevent_enable(c->bev, EV_READ) < 0)
            conn_close(c, CONN_CLOSE_OTHER, "cannot enable reading");
        goto done;
    }
    rc = 0;
    conn_set_moved(c);
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    clog_debug(c, "handed off (%s, %u channels, marker %s)", kind_names[kind],
               s != NULL ? s->nsubs : 0, id);
    if (h == NULL) {
        conn_close(c, CONN_CLOSE_MOVED, "handed off to the new generation");
        goto done;
    }
    close(rp[1]);
    rp[1] = -1;
    h->reply = rp[0];
    rp[0] = -1;
    s->handoff = h;
    h->ev = event_new(ch->d.base, h->reply, EV_READ, handoff_old_reply_cb, s);
    if (h->ev == NULL || event_add(h->ev, NULL) < 0)
        slog_warning(s, "cannot watch the adopting worker");
    if (!bus_ready(ch->d.bus)) {
        /* Redis is down here: no push reaches this worker, so none can be
         * repeated; the adopter goes on from its markers at once. */
        slog_info(s, "handed off while Redis is unavailable: pushes in flight may be lost");
        for (i = 0; i < (int)h->nchan; i++)
            handoff_mark(h, (size_t)i);
        h = NULL;
        handoff_finish(s);
        goto done;
    }
    h = NULL;
    goto done;
oom:
    clog_warning(c, "cannot hand off: out of memory");
done:
    if (rp[0] >= 0)
        close(rp[0]);
    if (rp[1] >= 0)
        close(rp[1]);
    handoff_free(h);
    free(text);
    json_free(m);
    return rc;
}

/* ------------------------------------------------------------------------
 * Adopting
 * ------------------------------------------------------------------------ */

/* Start moving bytes on an adopted session. */
static void handoff_resume(session_t *s)
{
    if (conn_resume(s->conn) < 0)
        return;
    slog_debug(s, "adopted from the previous generation");
    if (s->conn->draining)
        session_drain(s);
}

/* The old worker is done with the connection (its 'd'), gone (EOF), or
 * late: the session starts moving bytes here, pushes held first. */
static void handoff_reply_cb(evutil_socket_t fd, short what, void *arg)
{
    session_t *s = arg;
    handoff_t *h = s->handoff;
    char c = 0;
    ssize_t n = 0;

    if (what & EV_TIMEOUT) {
        slog_warning(s, "the previous worker did not let go in time: going on");
    } else {
        n = read(fd, &c, 1);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (event_add(h->ev, NULL) < 0)
                session_close(s, CONN_CLOSE_OTHER, "cannot watch the previous worker");
            return;
        }
        if (n == 1 && c == 'd')
            slog_debug(s, "the previous worker let go");
        else
            slog_info(s, "the previous worker ended before letting go: going on");
    }
    if (c != 'd') {
        /* It may never have seen the markers (or they were lost with a
         * Redis connection): from now on every push is ours, a repeat
         * being better than a channel that stays silent. */
        size_t i;
        for (i = 0; i < h->nchan; i++)
            handoff_mark(h, i);
    }
    event_free(h->ev);
    h->ev = NULL;
    close(h->reply);
    h->reply = -1;
    if (h->pending == 0) {
        handoff_free(h);
        s->handoff = NULL;
    }
    handoff_resume(s);
}

/* Ask the old worker to stop its pushes now: a marker could not be put. */
static void handoff_abandon_markers(session_t *s)
{
    handoff_t *h = s->handoff;

    if (h->reply >= 0 && write(h->reply, "x", 1) != 1 && errno != EPIPE)
        slog_warning(s, "cannot reach the previous worker: %s", strerror(errno));
}

static int handoff_all_strings(const json_t *arr)
{
    size_t i;

    for (i = 0; i < arr->u.arr.len; i++)
        if (arr->u.arr.items[i]->type != JSON_STRING)
            return 0;
    return 1;
}

/* Make a session of message data with connection conn and reply socket
 * reply (-1 when none came). Takes both descriptors. */
static void handoff_adopt(handoff_chan_t *ch, const char *data, size_t len, int conn, int reply)
{
    struct timeval wait = {ch->d.cfg->shutdown_timeout + HANDOFF_WAIT_SLACK_SECONDS, 0};
    char err[128];
    json_t *m = json_parse(data, len, 8, err, sizeof(err));
    const json_t *v = json_object_get(m, "v"), *remote = json_object_get(m, "remote"),
                 *subs = json_object_get(m, "subs"), *age = json_object_get(m, "age_ms"),
                 *culled = json_object_get(m, "culled");
    const char *kind = json_get_string(m, "kind"), *peer = json_get_string(m, "peer"),
               *marker = json_get_string(m, "marker"), *from = json_get_string(m, "from"),
               *carrier = json_get_string(m, "carrier");
    session_t *s;
    handoff_t *h;
    conn_t *c;
    int k, failed = 0, same;
    size_t i;

    for (k = 0; kind != NULL && k < 3 && strcmp(kind, kind_names[k]) != 0; k++)
        ;
    if (m == NULL || v == NULL || v->type != JSON_NUMBER || v->u.num.d != HANDOFF_VERSION ||
        kind == NULL || k == 3 || peer == NULL || marker == NULL || from == NULL ||
        remote == NULL || remote->type != JSON_ARRAY || remote->u.arr.len != SESSION_REMOTE_COUNT ||
        subs == NULL || subs->type != JSON_ARRAY || age == NULL || age->type != JSON_NUMBER ||
        culled == NULL || culled->type != JSON_NUMBER || !handoff_all_strings(subs)) {
        log_error("handoff: a message this worker cannot read (%s): connection closed",
                  m == NULL ? err : "unknown version or fields");
        close(conn);
        if (reply >= 0)
            close(reply);
        json_free(m);
        return;
    }
    c = conn_open_adopted(ch->d.conns, conn, peer, (conn_adopt_t)k,
                          age->u.num.d > 0 ? (uint64_t)age->u.num.d : 0);
    s = (c == NULL || k == CONN_ADOPT_FRESH || c->closing) ? NULL
                                                           : session_new(ch->d.sessions, c);
    if (s == NULL || session_import(s, m) < 0) {
        if (c != NULL && k != CONN_ADOPT_FRESH)
            conn_close(c, CONN_CLOSE_OTHER, "out of memory adopting a session");
        if (reply >= 0)
            close(reply);
        json_free(m);
        return;
    }
    if (subs->u.arr.len == 0 || reply < 0) {
        if (reply >= 0)
            close(reply);
        json_free(m);
        handoff_resume(s);
        return;
    }
    h = handoff_new(HANDOFF_ADOPTER, marker);
    if (h == NULL) {
        close(reply);
        json_free(m);
        session_close(s, CONN_CLOSE_OTHER, "out of memory adopting a session");
        return;
    }
    s->handoff = h;
    h->reply = reply;
    h->ev = event_new(ch->d.base, reply, EV_READ, handoff_reply_cb, s);
    if (h->ev == NULL || event_add(h->ev, &wait) < 0) {
        json_free(m);
        session_close(s, CONN_CLOSE_OTHER, "cannot watch the previous worker");
        return;
    }
    /* A reload that changed redis_url: no marker of ours reaches the old
     * worker, nor its count. The session joins here as a newcomer would,
     * silently, and the old worker stops its pushes now. */
    same = carrier != NULL && strcmp(carrier, bus_carrier(ch->d.bus)) == 0;
    if (!same) {
        slog_info(s,
                  "moved from another carrier (%s): pushes in flight may repeat or be "
                  "missed",
                  carrier != NULL ? carrier : "?");
        from = "";
        failed = 1;
    }
    for (i = 0; i < subs->u.arr.len; i++) {
        const char *name = subs->u.arr.items[i]->u.str.s;
        if (handoff_add_channel(h, name) < 0 || bus_adopt(ch->d.bus, s, name, from) < 0) {
            slog_warning(s, "cannot rejoin channel '%s' after a handoff", name);
            if (h->nchan > 0 && strcmp(h->chan[h->nchan - 1], name) == 0)
                handoff_mark(h, h->nchan - 1);
            failed = 1;
        } else if (!same) {
            handoff_mark(h, h->nchan - 1);
        } else if (bus_marker(ch->d.bus, name, marker) < 0) {
            slog_warning(s,
                         "cannot mark channel '%s' for a handoff: pushes may repeat or "
                         "be missed there",
                         name);
            handoff_mark(h, h->nchan - 1);
            failed = 1;
        }
    }
    if (failed)
        handoff_abandon_markers(s);
    slog_debug(s, "adopted (%s, %zu channels, marker %s)", kind, h->nchan, marker);
    json_free(m);
}

static void handoff_recv_cb(evutil_socket_t fd, short what, void *arg)
{
    handoff_chan_t *ch = arg;
    struct timeval later = {0, HANDOFF_RETRY_MS * 1000};
    int k;

    (void)what;
    for (k = 0; k < 64 && ch->receiving; k++) {
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(4 * sizeof(int))];
        } cm;
        struct msghdr mh;
        struct iovec iov = {ch->buf, HANDOFF_MAX_MESSAGE};
        struct cmsghdr *cmsg;
        int fds[4], nfds = 0, i;
        ssize_t n;

        if (bus_ready(ch->d.bus)) {
            ch->unready_since = 0;
        } else if (ch->unready_since == 0 ||
                   metrics_now_us() - ch->unready_since < HANDOFF_BUS_WAIT_US) {
            /* No marker could be put (a new worker still connecting to
             * Redis, or Redis down): leave the message to a worker whose
             * bus works, or to us once ours does, for a while. */
            if (ch->unready_since == 0)
                ch->unready_since = metrics_now_us();
            event_del(ch->ev);
            if (evtimer_add(ch->retry, &later) < 0)
                log_error("handoff: cannot schedule a retry: not adopting sessions");
            return;
        }
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cm.buf;
        mh.msg_controllen = sizeof(cm.buf);
        n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_error("handoff: recvmsg() failed: %s", strerror(errno));
            return;
        }
        for (cmsg = CMSG_FIRSTHDR(&mh); cmsg != NULL; cmsg = CMSG_NXTHDR(&mh, cmsg)) {
            size_t cnt;
            if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
                continue;
            cnt = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (i = 0; i < (int)cnt && nfds < 4; i++)
                memcpy(&fds[nfds++], CMSG_DATA(cmsg) + (size_t)i * sizeof(int), sizeof(int));
        }
        if (nfds == 0 || nfds > 2 || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
            log_error("handoff: a truncated or malformed message (%zd bytes, %d descriptors): "
                      "dropped",
                      n, nfds);
            for (i = 0; i < nfds; i++)
                close(fds[i]);
            continue;
        }
        handoff_adopt(ch, ch->buf, (size_t)n, fds[0], nfds > 1 ? fds[1] : -1);
    }
}

static void handoff_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    handoff_chan_t *ch = arg;

    (void)fd;
    (void)what;
    if (ch->receiving && event_add(ch->ev, NULL) < 0)
        log_error("handoff: cannot watch the channel: not adopting sessions");
}

/* ------------------------------------------------------------------------
 * The channel
 * ------------------------------------------------------------------------ */

int handoff_channel_new(int fds[2])
{
    int size = HANDOFF_SNDBUF;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
        return -1;
    /* Many sessions move at once on reload; a full channel only delays them. */
    if (setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)) < 0)
        log_debug("handoff: SO_SNDBUF: %s", strerror(errno));
    return 0;
}

int handoff_start(handoff_chan_t **out, const handoff_deps_t *deps, const int *fds)
{
    handoff_chan_t *ch;

    *out = NULL;
    if (fds == NULL || fds[0] < 0 || fds[1] < 0)
        return 0;
    ch = calloc(1, sizeof(*ch));
    if (ch == NULL)
        return -1;
    *out = ch;
    ch->d = *deps;
    ch->in = fds[0];
    ch->out = fds[1];
    ch->buf = malloc(HANDOFF_MAX_MESSAGE);
    ch->ev = event_new(deps->base, ch->in, EV_READ | EV_PERSIST, handoff_recv_cb, ch);
    ch->retry = evtimer_new(deps->base, handoff_retry_cb, ch);
    if (ch->buf == NULL || ch->ev == NULL || ch->retry == NULL || event_add(ch->ev, NULL) < 0) {
        log_error("handoff: cannot watch the channel");
        return -1;
    }
    ch->receiving = 1;
    return 0;
}

void handoff_stop_receiving(handoff_chan_t *ch)
{
    if (ch == NULL)
        return;
    ch->receiving = 0;
    if (ch->ev != NULL)
        event_del(ch->ev);
    if (ch->retry != NULL)
        event_del(ch->retry);
}

void handoff_chan_free(handoff_chan_t *ch)
{
    if (ch == NULL)
        return;
    if (ch->ev != NULL)
        event_free(ch->ev);
    if (ch->retry != NULL)
        event_free(ch->retry);
    free(ch->buf);
    free(ch); /* the descriptors are the master's, inherited: closed at exit */
}
