/* ws: WebSocket sessions (see ws.h). wslay parses and checks incoming
 * frames (masking, UTF-8, sizes, control frames) and writes the control
 * frames it answers with; our text frames are written straight to the
 * bufferevent as a header plus a reference to the shared message, so a
 * fan-out to many sessions copies nothing. */
#include "ws.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#include "log.h"
#include "metrics.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* After our close frame is queued, the peer has this long to take what is
 * still buffered before the connection is dropped. */
#define WS_CLOSE_SECONDS 5

typedef struct ws_conn {
    wslay_event_context_ptr ctx;
    conn_t *s;
    struct event *ping;     /* ws_ping_interval: see ws_ping_cb */
    unsigned finishing : 1; /* our close frame is queued: close once it is out */
    unsigned broken : 1;    /* a close could not be queued: drop the connection */
    unsigned heard : 1;     /* bytes arrived since the ping timer last fired */
    unsigned pinged : 1;    /* a ping went out and nothing has arrived since */
    unsigned in_msg : 1;    /* a fragmented message has begun and not ended */
    unsigned oversized : 1; /* the next frame announces more than max_message_size */
    size_t feed;            /* input bytes known to make whole frames, for wslay */
    conn_close_t why;       /* for conn_close once finished */
    char reason[96];
} ws_conn_t;

static const conn_io_t ws_io;

/* ------------------------------------------------------------------------
 * Handshake
 * ------------------------------------------------------------------------ */

int ws_accept_key(const char *key, char *out, size_t outlen)
{
    unsigned char raw[64], digest[SHA_DIGEST_LENGTH];
    char buf[64 + sizeof(WS_GUID)];
    size_t klen = key != NULL ? strlen(key) : 0;
    int n;

    /* 16 bytes encode to 24 base64 characters ending in "==". */
    if (klen != 24 || outlen < 29 || key[22] != '=' || key[23] != '=')
        return -1;
    n = EVP_DecodeBlock(raw, (const unsigned char *)key, (int)klen);
    if (n != 18) /* EVP_DecodeBlock counts the padding as zero bytes */
        return -1;
    memcpy(buf, key, klen);
    memcpy(buf + klen, WS_GUID, sizeof(WS_GUID) - 1);
    if (SHA1((const unsigned char *)buf, klen + sizeof(WS_GUID) - 1, digest) == NULL)
        return -1;
    if (EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH) != 28)
        return -1;
    return 0;
}

/* host[:port] of an origin or Host value, without a default port. */
static void authority(const char *value, int https, char *out, size_t outlen)
{
    const char *p = strstr(value, "://");
    size_t n;

    p = p != NULL ? p + 3 : value;
    n = strcspn(p, "/");
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    if (n > 3 && !https && strcmp(out + n - 3, ":80") == 0)
        out[n - 3] = '\0';
    else if (n > 4 && https && strcmp(out + n - 4, ":443") == 0)
        out[n - 4] = '\0';
}

/* The host part of an authority ("host", "host:port", "[v6]:port"),
 * lowercased into out. */
static void authority_host(const char *a, char *out, size_t outlen)
{
    size_t n;

    if (a[0] == '[') {
        const char *end = strchr(a, ']');
        n = end != NULL ? (size_t)(end - a + 1) : strlen(a);
    } else {
        const char *colon = strrchr(a, ':');
        n = colon != NULL ? (size_t)(colon - a) : strlen(a);
    }
    if (n >= outlen)
        n = outlen - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)((a[i] >= 'A' && a[i] <= 'Z') ? a[i] + 32 : a[i]);
    out[n] = '\0';
}

/* Whether host names one of the n listen addresses (wildcards excepted). */
static int ws_listen_host(char *const *addrs, size_t n, const char *host)
{
    char name[256];
    size_t i;

    for (i = 0; i < n; i++) {
        authority_host(addrs[i], name, sizeof(name));
        if (strcmp(name, "0.0.0.0") != 0 && strcmp(name, "[::]") != 0 &&
            strcmp(name, host) == 0)
            return 1;
    }
    return 0;
}

/* Whether host (no port, lowercase) is one this server answers to:
 * server_names, or when none are configured, localhost, the loopback
 * addresses, this machine's name and the hosts of the listen and
 * listen_tls addresses (wildcards excepted). */
static int ws_server_name(const config_t *cfg, const char *host)
{
    static const char *const loopback[] = {"localhost", "127.0.0.1", "[::1]"};
    char name[256];
    size_t i;

    if (host[0] == '\0')
        return 0;
    if (cfg->nserver_names > 0) {
        for (i = 0; i < cfg->nserver_names; i++)
            if (strcasecmp(cfg->server_names[i], host) == 0)
                return 1;
        return 0;
    }
    for (i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++)
        if (strcmp(loopback[i], host) == 0)
            return 1;
    if (ws_listen_host(cfg->listen, cfg->nlisten, host) ||
        ws_listen_host(cfg->listen_tls, cfg->nlisten_tls, host))
        return 1;
    if (gethostname(name, sizeof(name)) == 0) {
        name[sizeof(name) - 1] = '\0';
        if (strcasecmp(name, host) == 0)
            return 1;
    }
    return 0;
}

int ws_origin_allowed(const config_t *cfg, const char *origin, const char *host)
{
    char a[256], b[256], h[256];
    size_t i, n;
    int https;

    if (origin == NULL || origin[0] == '\0')
        return 1;
    n = strlen(origin);
    if (n > 0 && origin[n - 1] == '/')
        n--;
    for (i = 0; i < cfg->nallowed_origins; i++) {
        const char *allowed = cfg->allowed_origins[i];
        size_t m = strlen(allowed);
        if (m > 0 && allowed[m - 1] == '/')
            m--;
        if (m == n && strncasecmp(allowed, origin, n) == 0)
            return 1;
    }
    if (host == NULL || strncasecmp(origin, "http", 4) != 0)
        return 0; /* "null", file:, extensions: never the same host */
    https = strncasecmp(origin, "https://", 8) == 0;
    authority(origin, https, a, sizeof(a));
    authority(host, https, b, sizeof(b));
    /* Same origin as the request, and a name the server answers to: a
     * page of evil.example that made its name resolve to us (DNS
     * rebinding) sends Host: evil.example and Origin: http://evil.example,
     * which match each other but not our names. */
    authority_host(a, h, sizeof(h));
    return a[0] != '\0' && strcasecmp(a, b) == 0 && ws_server_name(cfg, h);
}

/* ------------------------------------------------------------------------
 * wslay callbacks
 * ------------------------------------------------------------------------ */

/* How many bytes at the start of in make whole frames. wslay is fed only
 * those, so that whenever the input buffer is empty wslay holds no part of
 * a frame either, and the connection can move to another worker (handoff)
 * at that moment. A data frame whose header announces more than
 * max_message_size stops the count there and sets c->oversized: it is
 * refused at its header (ws_read closes with 1009), without waiting for a
 * payload that may never come (2^63 bytes, say). A control frame over its
 * 125 bytes is fed as it comes, for wslay to refuse. */
static size_t ws_whole_frames(ws_conn_t *c, struct evbuffer *in)
{
    size_t have = evbuffer_get_length(in), off = 0;

    while (have - off >= 2) {
        unsigned char h[14];
        size_t n = have - off < sizeof(h) ? have - off : sizeof(h), hl = 2, i;
        struct evbuffer_ptr p;
        uint64_t len;

        if (evbuffer_ptr_set(in, &p, off, EVBUFFER_PTR_SET) < 0 ||
            evbuffer_copyout_from(in, &p, h, n) < (ev_ssize_t)n)
            return have;
        len = h[1] & 0x7f;
        hl += len == 126 ? 2 : len == 127 ? 8 : 0;
        hl += (h[1] & 0x80) ? 4 : 0;
        if (n < hl)
            break;
        if (len == 126) {
            len = ((uint64_t)h[2] << 8) | h[3];
        } else if (len == 127) {
            for (len = 0, i = 0; i < 8; i++)
                len = (len << 8) | h[2 + i];
        }
        if (len > c->s->env->cfg->max_message_size) {
            if (h[0] & 0x8)
                return have;
            c->oversized = 1;
            return off;
        }
        if (have - off - hl < len)
            break;
        off += hl + (size_t)len;
    }
    return off;
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *arg)
{
    ws_conn_t *c = arg;
    struct evbuffer *in;
    int n;

    (void)flags;
    /* Finishing: our close frame is queued, nothing more is read. */
    if (c->s->bev == NULL || c->s->closing || c->s->paused || c->finishing) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    in = bufferevent_get_input(c->s->bev);
    if (evbuffer_get_length(in) > 0)
        c->heard = 1; /* even a frame still incomplete says the peer is there */
    if (c->feed == 0)
        c->feed = ws_whole_frames(c, in);
    n = evbuffer_remove(in, buf, len < c->feed ? len : c->feed);
    if (n <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    c->feed -= (size_t)n;
    return n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *arg)
{
    ws_conn_t *c = arg;

    (void)flags;
    if (c->s->bev == NULL || evbuffer_add(bufferevent_get_output(c->s->bev), data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

/* Queue our close frame. A close already queued or sent is not a failure:
 * one read may hold several frames that each call for a close (found by
 * fuzz_ws: two binary frames dropped the connection without any close
 * frame). 0, or -1 when no close can be sent. */
static int ws_queue_close(wslay_event_context_ptr ctx, uint16_t code, const char *reason,
                          size_t len)
{
    int rc = wslay_event_queue_close(ctx, code, (const uint8_t *)reason, len);

    return rc == 0 || rc == WSLAY_ERR_NO_MORE_MSG ? 0 : -1;
}

/* A frame announcing more than max_message_size is refused at its header,
 * before any of its payload is read (wslay counts only what arrived). */
static void ws_frame_start_cb(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    ws_conn_t *c = user;

    if ((arg->opcode & 0x8) == 0)
        c->in_msg = !arg->fin;
    if ((arg->opcode & 0x8) == 0 && arg->payload_length > c->s->env->cfg->max_message_size &&
        ws_queue_close(ctx, WSLAY_CODE_MESSAGE_TOO_BIG, NULL, 0) < 0)
        c->broken = 1;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    ws_conn_t *c = user;
    conn_t *s = c->s;

    if (s->closing || c->finishing) /* ended: the rest of the read is not carried out */
        return;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        if (s->h != NULL && s->h->on_message != NULL)
            s->h->on_message(s->owner, (const char *)arg->msg, arg->msg_length);
        break;
    case WSLAY_BINARY_FRAME:
        conn_log_client(LOG_LEVEL_WARNING, s, "binary WebSocket message refused");
        if (ws_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA, "text frames only", 16) < 0)
            conn_close(s, CONN_CLOSE_PROTOCOL, "WebSocket protocol error: cannot queue close");
        break;
    default: /* ping (wslay answers it), pong, close (handled in ws_flush) */
        break;
    }
}

/* ------------------------------------------------------------------------
 * Reading and closing
 * ------------------------------------------------------------------------ */

static void ws_set_reason(ws_conn_t *c)
{
    uint16_t sent = wslay_event_get_status_code_sent(c->ctx);
    uint16_t got = wslay_event_get_status_code_received(c->ctx);
    const char *what;

    if (wslay_event_get_close_received(c->ctx)) {
        c->why = CONN_CLOSE_CLIENT;
        snprintf(c->reason, sizeof(c->reason), "WebSocket closed by the client (%u)", got);
        return;
    }
    c->why = CONN_CLOSE_PROTOCOL;
    switch (sent) {
    case WSLAY_CODE_MESSAGE_TOO_BIG:
        c->s->env->stats->oversized++;
        c->why = CONN_CLOSE_OVERSIZED;
        snprintf(c->reason, sizeof(c->reason), "WebSocket message too large (1009)");
        return;
    case WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA:
        what = "invalid UTF-8";
        break;
    case WSLAY_CODE_UNSUPPORTED_DATA:
        what = "binary frame";
        break;
    case WSLAY_CODE_POLICY_VIOLATION:
        what = "policy violation";
        break;
    case WSLAY_CODE_GOING_AWAY:
        c->why = CONN_CLOSE_SHUTDOWN;
        snprintf(c->reason, sizeof(c->reason), "server stopping (WebSocket 1001)");
        return;
    default:
        what = "bad frame";
        break;
    }
    snprintf(c->reason, sizeof(c->reason), "WebSocket protocol error: %s (%u)", what, sent);
}

/* We are closing: stop reading, and give the peer WS_CLOSE_SECONDS to read
 * what is buffered (ws_event_cb closes on the timeout). */
static void ws_finishing(conn_t *s)
{
    ws_conn_t *c = s->io_state;
    struct timeval limit = {WS_CLOSE_SECONDS, 0};

    c->finishing = 1;
    bufferevent_disable(s->bev, EV_READ);
    bufferevent_set_timeouts(s->bev, NULL, &limit);
}

/* Write what wslay queued (pongs, close frames); once our close frame is
 * out, stop reading and close the session when the output has drained. */
static void ws_flush(conn_t *s)
{
    ws_conn_t *c = s->io_state;

    if (s->closing || c == NULL)
        return;
    if (!c->finishing && wslay_event_want_write(c->ctx)) {
        if (wslay_event_send(c->ctx) != 0) {
            conn_close(s, CONN_CLOSE_OTHER, "WebSocket write failed");
            return;
        }
        /* Control frames (pongs, most of all) count like any other output:
         * a ping flood from a peer that never reads is a slow consumer. */
        if (conn_apply_limits(s) < 0)
            return;
    }
    if (!c->finishing && wslay_event_get_close_sent(c->ctx)) {
        ws_set_reason(c);
        ws_finishing(s);
    }
    if (c->finishing && conn_pending_output(s) == 0)
        conn_close(s, c->why, c->reason);
}

/* Close with code on our own, bypassing wslay's queue (it may hold a close
 * without a code, after a framing error it gave up on): the close frame
 * goes after the whole frames already buffered, then we finish. why and
 * reason are for conn_close. */
static void ws_close_with(conn_t *s, int code, conn_close_t why, const char *reason)
{
    ws_conn_t *c = s->io_state;
    unsigned char frame[4] = {0x88, 0x02, (unsigned char)(code >> 8), (unsigned char)code};

    /* Frames a batch holds go before the close (a slow consumer's are over
     * the limit: dropped with the connection). */
    if (!s->closing && !s->slow && !c->finishing && !wslay_event_get_close_sent(c->ctx) &&
        conn_flush(s) < 0)
        return;
    if (wslay_event_get_close_sent(c->ctx) || c->finishing) {
        ws_flush(s);
        return;
    }
    c->why = why;
    snprintf(c->reason, sizeof(c->reason), "%s (%d)", reason, code);
    ws_finishing(s);
    if (evbuffer_add(bufferevent_get_output(s->bev), frame, sizeof(frame)) < 0 ||
        conn_pending_output(s) == 0)
        conn_close(s, c->why, c->reason);
}

static void ws_read(conn_t *s)
{
    ws_conn_t *c = s->io_state;
    int rc;

    if (s->closing || c == NULL || c->finishing)
        return;
    conn_cork(s);
    rc = wslay_event_recv(c->ctx);
    conn_uncork(s); /* the replies to what was read go before any close */
    if (rc == 0 && c->oversized) {
        s->env->stats->oversized++;
        ws_close_with(s, WSLAY_CODE_MESSAGE_TOO_BIG, CONN_CLOSE_OVERSIZED,
                      "WebSocket message too large");
        return;
    }
    if (rc != 0) {
        ws_close_with(s, WSLAY_CODE_PROTOCOL_ERROR, CONN_CLOSE_PROTOCOL,
                      "WebSocket protocol error: bad frame");
        return;
    }
    if (c->broken) {
        conn_close(s, CONN_CLOSE_PROTOCOL, "WebSocket protocol error: cannot queue a close frame");
        return;
    }
    ws_flush(s);
}

static int ws_written(conn_t *s)
{
    ws_conn_t *c = s->io_state;

    if (c == NULL || !c->finishing)
        return 0;
    ws_flush(s);
    return 1;
}

static int ws_event(conn_t *s, short what)
{
    ws_conn_t *c = s->io_state;

    (void)what;
    if (c == NULL || !c->finishing)
        return 0;
    conn_close(s, c->why, c->reason);
    return 1;
}

/* Keepalive. Proxies close WebSocket connections that stay silent (nginx
 * after 60 s by default), and a browser that vanished sends no close. Every
 * ws_ping_interval seconds: a session heard from since the last tick is
 * fine; one silent for a whole interval gets a ping (browsers answer with
 * a pong, which counts as heard); one still silent an interval after its
 * ping is closed. So a dead peer goes within 3 intervals, and a live one
 * costs one small frame per quiet interval. */
static void ws_ping_arm(ws_conn_t *c)
{
    struct timeval every = {c->s->env->cfg->ws_ping_interval, 0};

    if (every.tv_sec > 0 && evtimer_add(c->ping, &every) < 0)
        clog_warning(c->s, "cannot arm the WebSocket ping timer");
}

static void ws_ping_cb(evutil_socket_t fd, short what, void *arg)
{
    ws_conn_t *c = arg;
    conn_t *s = c->s;
    struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"dnoded", 6};

    (void)fd;
    (void)what;
    if (s->closing || c->finishing)
        return;
    if (s->moved || s->held) {
        /* Moving to another worker: reading is off on both sides, so
         * silence means nothing; the adopter's own timer takes over. */
        ws_ping_arm(c);
        return;
    }
    if (c->heard) {
        c->heard = 0;
        c->pinged = 0;
    } else if (c->pinged) {
        conn_close(s, CONN_CLOSE_TIMEOUT, "WebSocket peer silent: no pong to our ping");
        return;
    } else {
        if (wslay_event_queue_msg(c->ctx, &ping) != 0) {
            conn_close(s, CONN_CLOSE_PROTOCOL, "WebSocket protocol error: cannot queue a ping");
            return;
        }
        c->pinged = 1;
        ws_flush(s);
        if (s->closing)
            return;
    }
    ws_ping_arm(c);
}

/* ------------------------------------------------------------------------
 * Session lifecycle and output
 * ------------------------------------------------------------------------ */

/* A WebSocket state for s, at a frame boundary. NULL on allocation failure. */
static ws_conn_t *ws_conn_new(conn_t *s)
{
    static const struct wslay_event_callbacks callbacks = {
        ws_recv_cb, ws_send_cb, NULL, ws_frame_start_cb, NULL, NULL, ws_msg_cb,
    };
    ws_conn_t *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    if (wslay_event_context_server_init(&c->ctx, &callbacks, c) != 0) {
        free(c);
        return NULL;
    }
    c->s = s;
    c->ping = evtimer_new(s->env->base, ws_ping_cb, c);
    if (c->ping == NULL) {
        wslay_event_context_free(c->ctx);
        free(c);
        return NULL;
    }
    wslay_event_config_set_max_recv_msg_length(c->ctx, s->env->cfg->max_message_size);
    return c;
}

static void ws_conn_free(ws_conn_t *c)
{
    event_free(c->ping);
    wslay_event_context_free(c->ctx);
    free(c);
}

int ws_begin(conn_t *s, const char *key)
{
    char accept[32];
    ws_conn_t *c;

    if (ws_accept_key(key, accept, sizeof(accept)) < 0) {
        conn_close(s, CONN_CLOSE_PROTOCOL, "bad Sec-WebSocket-Key");
        return -1;
    }
    c = ws_conn_new(s);
    if (c == NULL) {
        conn_close(s, CONN_CLOSE_OTHER, "out of memory starting a WebSocket");
        return -1;
    }
    if (evbuffer_add_printf(bufferevent_get_output(s->bev),
                            "HTTP/1.1 101 Switching Protocols\r\n"
                            "Upgrade: websocket\r\n"
                            "Connection: Upgrade\r\n"
                            "Sec-WebSocket-Accept: %s\r\n\r\n",
                            accept) < 0) {
        ws_conn_free(c);
        conn_close(s, CONN_CLOSE_OTHER, "out of memory answering a WebSocket handshake");
        return -1;
    }
    conn_set_io(s, CONN_WS, &ws_io, c);
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    clog_debug(s, "WebSocket session started");
    ws_ping_arm(c);
    if (conn_begin_dnode(s) < 0)
        return -1;
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
        ws_read(s);
    return 0;
}

int ws_adopt(conn_t *s)
{
    ws_conn_t *c = ws_conn_new(s);

    if (c == NULL) {
        conn_close(s, CONN_CLOSE_OTHER, "out of memory adopting a WebSocket");
        return -1;
    }
    conn_set_io(s, CONN_WS, &ws_io, c);
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    ws_ping_arm(c);
    return 0;
}

static int ws_idle(const conn_t *s)
{
    const ws_conn_t *c = s->io_state;

    return c != NULL && !c->finishing && !c->broken && !c->in_msg && c->feed == 0 &&
           !wslay_event_want_write(c->ctx) && !wslay_event_get_close_sent(c->ctx) &&
           !wslay_event_get_close_received(c->ctx);
}

size_t ws_frame_header(unsigned char *hdr, int opcode, size_t len)
{
    int i;

    hdr[0] = (unsigned char)(0x80 | (opcode & 0x0f)); /* FIN: never fragmented */
    if (len < 126) {
        hdr[1] = (unsigned char)len;
        return 2;
    }
    if (len <= 0xffff) {
        hdr[1] = 126;
        hdr[2] = (unsigned char)(len >> 8);
        hdr[3] = (unsigned char)len;
        return 4;
    }
    hdr[1] = 127;
    for (i = 0; i < 8; i++)
        hdr[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

/* Each message as one text frame, with one write when nothing is queued;
 * what the socket does not take is queued from the first byte it left
 * (headers copied, messages referenced). */
static int ws_send(conn_t *s, conn_msg_t *const *ms, unsigned n)
{
    ws_conn_t *c = s->io_state;
    unsigned char hdr[CONN_CORK_MAX][10];
    size_t hlen[CONN_CORK_MAX], total = 0;
    struct iovec iov[2 * CONN_CORK_MAX];
    ssize_t done;
    unsigned i;

    if (c == NULL || s->bev == NULL || n > CONN_CORK_MAX)
        return -1;
    if (c->finishing || wslay_event_get_close_sent(c->ctx))
        return 0; /* the connection is ending: nothing more goes out */
    for (i = 0; i < n; i++) {
        hlen[i] = ws_frame_header(hdr[i], WSLAY_TEXT_FRAME, ms[i]->len);
        total += hlen[i] + ms[i]->len;
        iov[2 * i].iov_base = hdr[i];
        iov[2 * i].iov_len = hlen[i];
        iov[2 * i + 1].iov_base = ms[i]->data;
        iov[2 * i + 1].iov_len = ms[i]->len;
    }
    if (conn_pending_output(s) + total > s->env->cfg->max_output_buffer) {
        /* A slow consumer: instead of these frames, a 1008 close after what
         * is buffered; the peer gets WS_CLOSE_SECONDS to read it all. */
        s->env->stats->slow_consumers++;
        s->slow = 1;
        conn_log_client(LOG_LEVEL_WARNING, s, "WebSocket output over max_output_buffer: closing with 1008");
        ws_close_with(s, WSLAY_CODE_POLICY_VIOLATION, CONN_CLOSE_SLOW,
                      "output buffer over max_output_buffer (client too slow)");
        return 0;
    }
    done = conn_write_direct(s, iov, (int)(2 * n));
    if (done < 0)
        return -1;
    for (i = 0; i < n; i++) {
        conn_msg_t *m = ms[i];

        if ((size_t)done >= hlen[i] + m->len) {
            done -= (ssize_t)(hlen[i] + m->len);
            continue;
        }
        if ((size_t)done < hlen[i]) {
            if (evbuffer_add(bufferevent_get_output(s->bev), hdr[i] + done,
                             hlen[i] - (size_t)done) < 0)
                return -1;
            done = 0;
        } else {
            done -= (ssize_t)hlen[i];
        }
        if (conn_queue_ref(s, m, (size_t)done, m->len - (size_t)done) < 0)
            return -1; /* the half-written frame goes with the connection */
        done = 0;
    }
    return 0;
}

static void ws_close_after(conn_t *s, conn_close_t why, const char *reason)
{
    if (s->io_state == NULL || s->bev == NULL) {
        conn_close(s, why, reason);
        return;
    }
    ws_close_with(s, WSLAY_CODE_POLICY_VIOLATION, why, reason);
}

/* Say goodbye with 1001 when leaving without a closing handshake (a stop,
 * a drain) and no frame is half-written: best effort, non-blocking. */
static void ws_release(conn_t *s)
{
    ws_conn_t *c = s->io_state;

    if (c == NULL)
        return;
    if (s->bev != NULL && !s->moved && !s->held && !c->finishing &&
        !wslay_event_get_close_sent(c->ctx) && conn_pending_output(s) == 0) {
        static const unsigned char going_away[] = {0x88, 0x02, 0x03, 0xe9};
        if (s->fd >= 0 && !s->tls && /* over TLS it would be a bare record: none */
            send(s->fd, going_away, sizeof(going_away), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            clog_debug(s, "close frame not sent: %s", strerror(errno));
    }
    ws_conn_free(c);
    s->io_state = NULL;
}

static const conn_io_t ws_io = {
    .name = "ws",
    .read = ws_read,
    .written = ws_written,
    .event = ws_event,
    .send = ws_send,
    .close_after = ws_close_after,
    .idle = ws_idle,
    .release = ws_release,
};
