/* conn_line: newline-delimited DNode messages on a connection (see
 * conn_line.h). */
#include "conn_line.h"

#include <string.h>
#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/event.h>

int conn_frame_lines(struct evbuffer *in, uint32_t *scanned, size_t max,
                     int (*on_line)(void *arg, const char *line, size_t len), void *arg,
                     size_t *oversize)
{
    for (;;) {
        struct evbuffer_ptr from, eol;
        size_t buffered = evbuffer_get_length(in);
        unsigned char *line;
        size_t n;
        int stop = 0;

        if (buffered == 0)
            return CONN_FRAME_MORE;
        evbuffer_ptr_set(in, &from, *scanned, EVBUFFER_PTR_SET);
        eol = evbuffer_search(in, "\n", 1, &from);
        if (eol.pos < 0) {
            *scanned = (uint32_t)buffered;
            if (buffered > max + 1) {
                *oversize = buffered;
                return CONN_FRAME_OVERSIZED;
            }
            return CONN_FRAME_MORE;
        }
        n = (size_t)eol.pos;
        if (n > max + 1) { /* + 1: a CR before the LF is not the message's */
            *oversize = n;
            return CONN_FRAME_OVERSIZED;
        }
        line = evbuffer_pullup(in, (ssize_t)n + 1);
        if (line == NULL)
            return CONN_FRAME_NOMEM;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (n > max) {
            *oversize = n;
            return CONN_FRAME_OVERSIZED;
        }
        /* Blank lines are keep-alives some clients send; skip them. */
        if (strspn((const char *)line, " \t\r") < n)
            stop = on_line(arg, (const char *)line, n);
        evbuffer_drain(in, (size_t)eol.pos + 1);
        *scanned = 0;
        if (stop)
            return CONN_FRAME_STOPPED;
    }
}

static int line_on_line(void *arg, const char *line, size_t len)
{
    conn_t *c = arg;

    if (c->h != NULL && c->h->on_message != NULL)
        c->h->on_message(c->owner, line, len);
    return c->closing || c->paused;
}

static void line_read(conn_t *c)
{
    size_t oversize = 0;
    int rc;

    conn_cork(c);
    rc = conn_frame_lines(bufferevent_get_input(c->bev), &c->scanned, c->env->cfg->max_message_size,
                          line_on_line, c, &oversize);
    conn_uncork(c);
    /* Part of a message waits for the rest: it must come within
     * line_timeout of the part's first byte (a line trickled byte by byte,
     * or never ended, would hold its memory and the connection forever). */
    if (rc == CONN_FRAME_MORE && !c->closing && !c->paused) {
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
            if (conn_deadline_set(c, c->env->cfg->line_timeout,
                                  "a message not finished within line_timeout") < 0)
                conn_close(c, CONN_CLOSE_OTHER, "cannot arm a timer");
        } else {
            conn_deadline_clear(c);
        }
    }
    switch (rc) {
    case CONN_FRAME_OVERSIZED:
        c->env->stats->oversized++;
        conn_log_client(LOG_LEVEL_WARNING, c, "message of %zu+ bytes is over max_message_size (%zu)", oversize,
                     c->env->cfg->max_message_size);
        conn_close(c, CONN_CLOSE_OVERSIZED, "message too large");
        break;
    case CONN_FRAME_NOMEM:
        conn_close(c, CONN_CLOSE_OTHER, "out of memory");
        break;
    default:
        break;
    }
}

/* Each message with its newline, in one writev; what the socket does not
 * take is queued by reference from the first byte it left. */
static int line_send(conn_t *c, conn_msg_t *const *ms, unsigned n)
{
    struct iovec iov[CONN_CORK_MAX];
    ssize_t done;
    unsigned i;

    for (i = 0; i < n; i++) {
        iov[i].iov_base = ms[i]->data;
        iov[i].iov_len = ms[i]->len + 1;
    }
    done = conn_write_direct(c, iov, (int)n);
    if (done < 0) {
        conn_close(c, CONN_CLOSE_OTHER, "write error");
        return -1;
    }
    for (i = 0; i < n; i++) {
        size_t size = ms[i]->len + 1;

        if ((size_t)done >= size) {
            done -= (ssize_t)size;
            continue;
        }
        if (conn_queue_ref(c, ms[i], (size_t)done, size - (size_t)done) < 0)
            return -1;
        done = 0;
    }
    return 0;
}

/* A line stream has no read timeout: one that fires was armed for the
 * first bytes and went off in the loop pass that started the stream (a
 * busy worker). Reading goes on. */
static int line_event(conn_t *c, short what)
{
    if (!(what & BEV_EVENT_TIMEOUT) || !(what & BEV_EVENT_READING))
        return 0;
    if (!c->closing)
        bufferevent_enable(c->bev, EV_READ);
    return 1;
}

static const conn_io_t line_io = {
    .name = "line",
    .read = line_read,
    .event = line_event,
    .send = line_send,
};

void conn_line_set(conn_t *c) { conn_set_io(c, CONN_LINE, &line_io, NULL); }
