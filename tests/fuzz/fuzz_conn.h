/* fuzz_conn: a worker without sockets for the connection-level fuzz targets
 * (fuzz_http, fuzz_ws). One connection per input over a bufferevent pair:
 * the server half is a real dnoded connection wired as the worker wires it
 * (conn, http, ws, session, api, bus in single-host mode, no database), the
 * client half is where the fuzzer writes and where the answers are
 * collected. Header only, one target per translation unit; not part of
 * dnoded. */
#ifndef DNODED_FUZZ_CONN_H
#define DNODED_FUZZ_CONN_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bus.h"
#include "config.h"
#include "conn.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

static worker_t fuzz_w;
static config_t *fuzz_cfg;
static char fuzz_docroot[64];

static void fuzz_write_file(const char *rel, const char *text)
{
    char path[128];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", fuzz_docroot, rel);
    f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
        abort();
}

static void fuzz_conn_cleanup(void)
{
    static const char *const files[] = {"index.html", "app.js",  "sub/index.html",
                                        "sub/x.css",  ".hidden", "out"};
    char path[128];
    size_t i;

    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", fuzz_docroot, files[i]);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/sub", fuzz_docroot);
    rmdir(path);
    rmdir(fuzz_docroot);
}

/* A docroot with a few files, a hidden one and a symlink out of it. */
static void fuzz_conn_init(void)
{
    char path[128];

    /* FUZZ_LOG set (debugging a target): every log line, else errors only. */
    log_set_level(getenv("FUZZ_LOG") != NULL ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    snprintf(fuzz_docroot, sizeof(fuzz_docroot), "/tmp/dnoded-fuzz-docroot-XXXXXX");
    if (mkdtemp(fuzz_docroot) == NULL)
        abort();
    snprintf(path, sizeof(path), "%s/sub", fuzz_docroot);
    if (mkdir(path, 0755) < 0)
        abort();
    fuzz_write_file("index.html", "<p>index</p>\n");
    fuzz_write_file("app.js", "var x = 1;\n");
    fuzz_write_file("sub/index.html", "<p>sub</p>\n");
    fuzz_write_file("sub/x.css", "p {}\n");
    fuzz_write_file(".hidden", "secret\n");
    snprintf(path, sizeof(path), "%s/out", fuzz_docroot);
    if (symlink("/etc", path) < 0)
        abort();
    atexit(fuzz_conn_cleanup);

    fuzz_cfg = config_new_defaults(NULL);
    if (fuzz_cfg == NULL)
        abort();
    free(fuzz_cfg->docroot);
    fuzz_cfg->docroot = strdup(fuzz_docroot);
    if (fuzz_cfg->docroot == NULL)
        abort();
    /* Small limits, so inputs of a few KiB reach them. */
    fuzz_cfg->max_message_size = 2048;
    fuzz_cfg->max_output_buffer = 2048;
    fuzz_cfg->max_subscriptions = 8;
    fuzz_cfg->max_callbacks = 16;
    fuzz_cfg->max_json_depth = 16;

    memset(&fuzz_w, 0, sizeof(fuzz_w));
    fuzz_w.generation = 1;
    fuzz_w.cfg = fuzz_cfg;
    fuzz_w.base = event_base_new();
    fuzz_w.metrics = fuzz_w.own_metrics = metrics_new(1);
    if (fuzz_w.base == NULL || fuzz_w.metrics == NULL)
        abort();
    fuzz_w.stats = metrics_claim(fuzz_w.metrics, (int)getpid());
    if (fuzz_w.stats == NULL)
        abort();
    fuzz_w.bus = bus_new(fuzz_w.base, fuzz_cfg, fuzz_w.stats, 0, NULL, 1);
    if (fuzz_w.bus == NULL || worker_wire(&fuzz_w) < 0)
        abort();
}

typedef struct fuzz_conn {
    conn_t *s;                 /* referenced until fuzz_conn_end */
    struct bufferevent *peer;  /* the client's half */
    struct evbuffer *received; /* everything the server sent */
    size_t slow; /* bytes the client lets wait, reading a sixteenth per pump; 0: all */
} fuzz_conn_t;

/* A new HTTP connection, as conn_open makes one on a request line.
 * draining: the worker is stopping. slow: the client takes at most that
 * many bytes off the connection, and reads a sixteenth of them per pump
 * (0: everything at once), so output piles up on the server's side as it
 * does for a slow reader. */
static void fuzz_conn_begin(fuzz_conn_t *c, int draining, size_t slow)
{
    struct bufferevent *pair[2];

    if (bufferevent_pair_new(fuzz_w.base, 0, pair) < 0)
        abort();
    c->peer = pair[1];
    c->received = evbuffer_new();
    c->s = conn_new(&fuzz_w.conns, pair[0], "fuzz");
    if (c->received == NULL || c->s == NULL)
        abort();
    conn_ref(c->s);
    c->s->draining = draining ? 1 : 0;
    if (http_begin(c->s) < 0)
        abort();
    c->slow = slow;
    if (slow > 0)
        bufferevent_setwatermark(pair[1], EV_READ, 0, slow);
    if (bufferevent_enable(pair[0], EV_READ | EV_WRITE) < 0 ||
        bufferevent_enable(pair[1], EV_READ | EV_WRITE) < 0)
        abort();
}

/* Run what became ready and collect what the server wrote. */
static void fuzz_conn_pump(fuzz_conn_t *c)
{
    int i;

    for (i = 0; i < 4; i++)
        if (event_base_loop(fuzz_w.base, EVLOOP_NONBLOCK) < 0)
            abort();
    if (c->peer != NULL && evbuffer_remove_buffer(bufferevent_get_input(c->peer), c->received,
                                                  c->slow > 0 ? c->slow / 16 : SIZE_MAX) < 0)
        abort();
}

/* The client reads everything that is left, at its pace. */
static void fuzz_conn_read_all(fuzz_conn_t *c)
{
    int i;

    c->slow = 0;
    bufferevent_setwatermark(c->peer, EV_READ, 0, 0);
    for (i = 0; i < 64; i++) {
        fuzz_conn_pump(c);
        if (evbuffer_get_length(bufferevent_get_input(c->peer)) == 0)
            break;
    }
}

/* Write bytes as the client; returns 0, or -1 once the server is done
 * with the connection (nothing more is read). */
static int fuzz_conn_send(fuzz_conn_t *c, const uint8_t *data, size_t len)
{
    if (c->s->closing)
        return -1;
    if (bufferevent_write(c->peer, data, len) < 0)
        abort();
    fuzz_conn_pump(c);
    return c->s->closing ? -1 : 0;
}

/* Write len bytes as the client in pieces of 1..max bytes, their sizes
 * drawn from a small LCG seeded with seed, until all are sent or the
 * server is done with the connection. */
static void fuzz_conn_send_pieces(fuzz_conn_t *c, const uint8_t *data, size_t len, uint32_t seed,
                                  size_t max)
{
    size_t off, n;

    for (off = 0; off < len; off += n) {
        seed = seed * 1103515245u + 12345u;
        n = 1 + (seed >> 16) % max;
        if (n > len - off)
            n = len - off;
        if (fuzz_conn_send(c, data + off, n) < 0)
            break;
    }
}

/* With FUZZ_DUMP set (debugging a target), what the server sent goes to
 * stderr. */
static void fuzz_conn_dump(fuzz_conn_t *c)
{
    size_t len = evbuffer_get_length(c->received);

    if (getenv("FUZZ_DUMP") != NULL && len > 0) {
        fwrite(evbuffer_pullup(c->received, -1), 1, len, stderr);
        fputs("\n--- end of answer\n", stderr);
    }
}

/* End the connection the way a client hanging up does, and check that it
 * is gone from the worker. */
static void fuzz_conn_end(fuzz_conn_t *c)
{
    if (!c->s->closing)
        conn_close(c->s, CONN_CLOSE_CLIENT, "fuzz: end of input");
    fuzz_conn_pump(c);
    conn_unref(c->s);
    c->s = NULL;
    bufferevent_free(c->peer);
    c->peer = NULL;
    evbuffer_free(c->received);
    c->received = NULL;
    if (fuzz_w.conns.conns != NULL || fuzz_w.conns.nconns != 0 || fuzz_w.conns.nclosing != 0)
        abort(); /* a connection outlived its end */
}

#endif
