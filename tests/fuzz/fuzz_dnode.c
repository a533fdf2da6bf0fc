/* fuzz_dnode: libFuzzer target for what a TCP client sends: the newline
 * framer (conn_frame_lines) fed in fragments, then the DNode codec on
 * each message. Checks that fragmenting never changes the messages found,
 * that whatever dnode_parse accepts, dnode_build writes back to a line
 * that parses to the same call, and that the reader of the common request
 * shape agrees with the general one: the same line with one member more
 * (which only the general reader takes, and which it ignores) must be
 * accepted or refused alike, and read to the same call.
 *
 * Input: byte 0 picks max_message_size, byte 1 the JSON depth limit, bytes
 * 2-3 seed the fragment sizes; the rest is the byte stream. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "dnode.h"
#include "json.h"
#include "conn_line.h"

typedef struct lines {
    const uint8_t *stream; /* the whole stream, for the framer's reference */
    size_t len;
    size_t pos;       /* where the reference looks for the next message */
    size_t max;       /* max_message_size */
    size_t max_depth; /* max_json_depth */
    size_t seen;      /* messages handed over */
    int stop_every;   /* on_line asks to stop after each n-th message (0: never) */
} lines_t;

/* The reference framer: the next non-blank message of the whole stream at
 * l->pos, by plain scanning. Returns 1 with *at / *n, or 0 when none. */
static int reference_next(lines_t *l, const uint8_t **at, size_t *n)
{
    while (l->pos < l->len) {
        const uint8_t *p = l->stream + l->pos;
        const uint8_t *nl = memchr(p, '\n', l->len - l->pos);
        size_t k, i;

        if (nl == NULL)
            return 0;
        k = (size_t)(nl - p);
        l->pos += k + 1;
        if (k > 0 && p[k - 1] == '\r')
            k--;
        for (i = 0; i < k && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'); i++)
            ;
        if (i < k) {
            *at = p;
            *n = k;
            return 1;
        }
    }
    return 0;
}

/* json_equal, except that a non-finite number (1e400 parses to infinity)
 * comes back as null: JSON has no form for it, and JSON.stringify writes
 * null too. */
static int same_sent(const json_t *a, const json_t *b)
{
    size_t i;

    if (a->type == JSON_NUMBER && !isfinite(a->u.num.d))
        return b->type == JSON_NULL;
    if (a->type != b->type)
        return 0;
    if (a->type == JSON_ARRAY) {
        if (a->u.arr.len != b->u.arr.len)
            return 0;
        for (i = 0; i < a->u.arr.len; i++)
            if (!same_sent(a->u.arr.items[i], b->u.arr.items[i]))
                return 0;
        return 1;
    }
    if (a->type == JSON_OBJECT) {
        if (a->u.obj.len != b->u.obj.len)
            return 0;
        for (i = 0; i < a->u.obj.len; i++) {
            const json_t *bv = json_object_get(b, a->u.obj.keys[i]);
            if (bv == NULL || !same_sent(a->u.obj.vals[i], bv))
                return 0;
        }
        return 1;
    }
    return json_equal(a, b);
}

/* The callback nodes of v: how many, and whether an id appears twice (a
 * link may copy a callback). */
typedef struct cb_ids {
    int64_t ids[256];
    size_t n;
    int dup; /* an id seen twice, or too many to tell */
} cb_ids_t;

static void collect_callbacks(const json_t *v, cb_ids_t *c)
{
    size_t i;

    if (v->type == JSON_CALLBACK) {
        if (c->n == sizeof(c->ids) / sizeof(c->ids[0])) {
            c->dup = 1;
            return;
        }
        for (i = 0; i < c->n; i++)
            if (c->ids[i] == v->u.callback)
                c->dup = 1;
        c->ids[c->n++] = v->u.callback;
    } else if (v->type == JSON_ARRAY) {
        for (i = 0; i < v->u.arr.len; i++)
            collect_callbacks(v->u.arr.items[i], c);
    } else if (v->type == JSON_OBJECT) {
        for (i = 0; i < v->u.obj.len; i++)
            collect_callbacks(v->u.obj.vals[i], c);
    }
}

/* The line again with a member "~x~":0 first in its object, which sends
 * it to the general reader; 0 when the line is not an object with members. */
static int check_general_agrees(const char *line, size_t len, size_t max_depth,
                                const dnode_msg_t *msg, int rc)
{
    static const char extra[] = "\"~x~\":0,";
    dnode_msg_t other;
    char err[160], *copy;
    size_t i = 0, j;
    int rc2;

    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n'))
        i++;
    if (i == len || line[i] != '{')
        return 0;
    for (j = i + 1; j < len && (line[j] == ' ' || line[j] == '\t' || line[j] == '\r' ||
                                line[j] == '\n');
         j++)
        ;
    if (j == len || line[j] == '}')
        return 0;
    copy = malloc(len + sizeof(extra));
    if (copy == NULL)
        abort();
    memcpy(copy, line, i + 1);
    memcpy(copy + i + 1, extra, sizeof(extra) - 1);
    memcpy(copy + i + sizeof(extra), line + i + 1, len - i - 1);
    rc2 = dnode_parse(copy, len + sizeof(extra) - 1, max_depth, &other, err, sizeof(err));
    if (rc2 != rc) {
        if (getenv("FUZZ_DUMP") != NULL)
            fprintf(stderr, "line:    %.*s (%s)\nsent on: %.*s (%s)\n", (int)len, line,
                    rc == 0 ? "taken" : "refused", (int)(len + sizeof(extra) - 1), copy,
                    rc2 == 0 ? "taken" : err);
        abort(); /* one reader took what the other refused */
    }
    if (rc == 0) {
        if ((msg->method == NULL) != (other.method == NULL) ||
            (msg->method != NULL && strcmp(msg->method, other.method) != 0) ||
            msg->method_id != other.method_id || msg->ncallbacks != other.ncallbacks ||
            !json_equal(msg->args, other.args))
            abort();
        dnode_msg_clear(&other);
    }
    free(copy);
    return 1;
}

static void check_codec(const char *line, size_t len, size_t max_depth)
{
    dnode_msg_t msg, again;
    char err[160];
    char *out;
    size_t outlen;
    cb_ids_t cbs;

    memset(err, 'x', sizeof(err));
    if (dnode_parse(line, len, max_depth, &msg, err, sizeof(err)) < 0) {
        if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0')
            abort(); /* every refusal gives its reason */
        check_general_agrees(line, len, max_depth, NULL, -1);
        return;
    }
    check_general_agrees(line, len, max_depth, &msg, 0);
    if (msg.args == NULL || msg.args->type != JSON_ARRAY)
        abort();
    if ((msg.method == NULL) == (msg.method_id < 0))
        abort();
    out = dnode_build(msg.method, msg.method_id, msg.args, &outlen);
    if (out == NULL)
        abort();
    if (outlen == 0 || out[outlen - 1] != '\n' || memchr(out, '\n', outlen - 1) != NULL)
        abort(); /* one message, one line */
    /* Links may have nested copies deeper than the limit: allow for that. */
    if (dnode_parse(out, outlen - 1, 4 * max_depth + 8, &again, err, sizeof(err)) < 0)
        abort();
    /* ncallbacks counts placements (a later path may overwrite an earlier
     * callback); what comes back is one per callback node. The callbacks
     * map holds one path per id, so a callback copied by a link comes back
     * once only: then the arguments cannot be compared. */
    memset(&cbs, 0, sizeof(cbs));
    collect_callbacks(msg.args, &cbs);
    if ((msg.method == NULL) != (again.method == NULL) ||
        (msg.method != NULL && strcmp(msg.method, again.method) != 0) ||
        msg.method_id != again.method_id ||
        (!cbs.dup && (again.ncallbacks != cbs.n || !same_sent(msg.args, again.args)))) {
        if (getenv("FUZZ_DUMP") != NULL) /* debugging a target: show both lines */
            fprintf(stderr, "in:  %.*s\nout: %.*s", (int)len, line, (int)outlen, out);
        abort();
    }
    free(out);
    dnode_msg_clear(&again);
    dnode_msg_clear(&msg);
}

static int on_line(void *arg, const char *line, size_t len)
{
    lines_t *l = arg;
    const uint8_t *want;
    size_t wantlen;

    if (len == 0 || len > l->max || memchr(line, '\n', len) != NULL)
        abort();
    if (!reference_next(l, &want, &wantlen) || wantlen != len || memcmp(want, line, len) != 0)
        abort(); /* fragmenting changed what was framed */
    check_codec(line, len, l->max_depth);
    l->seen++;
    return l->stop_every > 0 && l->seen % (size_t)l->stop_every == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct evbuffer *in;
    lines_t l;
    uint32_t scanned = 0, rnd;
    size_t off, oversize = 0, extra;
    const uint8_t *want;
    int rc = CONN_FRAME_MORE;

    if (size < 4)
        return 0;
    memset(&l, 0, sizeof(l));
    l.max = 1 + (size_t)data[0] * 16; /* 1 .. 4081 bytes */
    l.max_depth = 1 + data[1] % 64;
    l.stop_every = data[1] >> 6;
    rnd = (uint32_t)data[2] << 8 | data[3];
    l.stream = data + 4;
    l.len = size - 4;
    in = evbuffer_new();
    if (in == NULL)
        abort();
    /* Feed fragments of 1..64 bytes (sizes from a small LCG). */
    for (off = 0; off < l.len;) {
        size_t n;

        rnd = rnd * 1103515245u + 12345u;
        n = 1 + (rnd >> 16) % 64;
        if (n > l.len - off)
            n = l.len - off;
        if (evbuffer_add(in, l.stream + off, n) < 0)
            abort();
        off += n;
        do {
            rc = conn_frame_lines(in, &scanned, l.max, on_line, &l, &oversize);
        } while (rc == CONN_FRAME_STOPPED); /* the session reads on later */
        if (rc == CONN_FRAME_OVERSIZED || rc == CONN_FRAME_NOMEM)
            break;
    }
    if (rc == CONN_FRAME_OVERSIZED) {
        /* Refused only past the limit; what is left is not framed. */
        if (oversize <= l.max)
            abort();
    } else {
        if (rc != CONN_FRAME_MORE)
            abort();
        /* Everything complete was handed over; only a partial line is left. */
        if (reference_next(&l, &want, &extra))
            abort();
        if (evbuffer_get_length(in) > l.max + 1)
            abort();
    }
    evbuffer_free(in);
    return 0;
}
