/* bus: channels, their local subscribers and delivery (see bus.h). Every
 * message reaches this worker's subscribers from a carrier (bus_carrier.h:
 * bus_relay.c on one host, bus_redis.c across hosts), never directly, so
 * there is one order per channel. Knows sessions only as subscribers
 * (session.h), and reaches a session moving between workers only through
 * the hooks its owner registers. HACKING.md ("The bus") has the design. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bus.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "bus_carrier.h"
#include "hash.h"
#include "log.h"

#define BUS_BUCKETS 1024
#define BUS_ENVELOPE_VERSION 1

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* Keyed (hash.c): clients name channels, and with a public hash they could
 * pick names that all share one bucket of the table, or one presence slot
 * of the host relay. The same in every worker of a host, which the
 * relay's shared slots need. */
uint64_t bus_core_hash(const char *s) { return hash_keyed(s, strlen(s)); }

double bus_core_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bus_which(const char *method)
{
    static const char *const names[] = {"created", "updated", "deleted", "subscribed",
                                        "unsubscribed"};
    static const int which[] = {SESSION_REMOTE_CREATED, SESSION_REMOTE_UPDATED,
                                SESSION_REMOTE_DELETED, SESSION_REMOTE_SUBSCRIBED,
                                SESSION_REMOTE_UNSUBSCRIBED};
    size_t i;

    for (i = 0; method != NULL && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(method, names[i]) == 0)
            return which[i];
    return -1;
}

/* ------------------------------------------------------------------------
 * Channel table
 * ------------------------------------------------------------------------ */

bus_channel_t *bus_core_find(bus_t *b, const char *name, size_t len, int create)
{
    uint64_t hash;
    size_t h;
    bus_channel_t *c;
    char *key = NULL;

    if (name[len] != '\0') { /* names from Redis replies are not terminated */
        key = strndup(name, len);
        if (key == NULL)
            return NULL;
        name = key;
    }
    hash = bus_core_hash(name);
    h = hash % b->nbuckets;
    for (c = b->table[h]; c != NULL; c = c->next)
        if (c->hash == hash && strcmp(c->name, name) == 0)
            break;
    if (c == NULL && create && strlen(name) == len) {
        c = calloc(1, sizeof(*c));
        if (c != NULL && (c->name = strdup(name)) == NULL) {
            free(c);
            c = NULL;
        }
        if (c != NULL) {
            c->hash = hash;
            c->next = b->table[h];
            b->table[h] = c;
            b->nchannels++;
        }
    }
    free(key);
    return c;
}

void bus_core_publish_settled(session_t *s)
{
    if (s != NULL) {
        session_publish_done(s);
        session_unref(s);
    }
}

void bus_core_drop(bus_t *b, bus_channel_t *c)
{
    size_t h = c->hash % b->nbuckets;
    bus_channel_t **pp;

    for (pp = &b->table[h]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            b->nchannels--;
            b->ops->channel_free(b, c);
            free(c->name);
            free(c->subs);
            free(c->st);
            free(c);
            return;
        }
    }
}

/* ------------------------------------------------------------------------
 * Envelopes and local delivery
 *
 * Every message on either carrier is one JSON object:
 *   {"v":1,"m":"created","d":doc,"o":opt[,"t":type[,"p":old]],"origin":"host:pid"}
 *   {"v":1,"m":"subscribed","n":online,"origin":"host:pid"}
 *   {"v":1,"m":"marker","k":id,"origin":"host:pid"}   (handoff; never pushed)
 * A reader ignores versions it does not know (logged at debug), and
 * methods it does not know (so older releases skip markers).
 * ------------------------------------------------------------------------ */

static char *bus_envelope(bus_t *b, const char *method, int change, const json_t *doc,
                          const json_t *opt, const char *type, const json_t *old, int64_t online,
                          size_t *len)
{
    static const char head[] = "{\"v\":1,\"m\":";
    json_buf_t jb = {NULL, 0, 0};
    int rc;

    /* Written straight into one buffer: no copy of doc and opt into a tree. */
    rc = json_buf_append(&jb, head, sizeof(head) - 1);
    rc = rc < 0 ? rc : json_dump_string(&jb, method, strlen(method));
    if (change) {
        static const json_t null_doc = {.type = JSON_NULL};
        static const json_t empty_opt = {.type = JSON_OBJECT};
        rc = rc < 0 ? rc : json_buf_append(&jb, ",\"d\":", 5);
        rc = rc < 0 ? rc : json_dump_append(&jb, doc != NULL ? doc : &null_doc);
        rc = rc < 0 ? rc : json_buf_append(&jb, ",\"o\":", 5);
        rc = rc < 0 ? rc : json_dump_append(&jb, opt != NULL ? opt : &empty_opt);
        if (type != NULL) {
            rc = rc < 0 ? rc : json_buf_append(&jb, ",\"t\":", 5);
            rc = rc < 0 ? rc : json_dump_string(&jb, type, strlen(type));
        }
        if (type != NULL && old != NULL) {
            rc = rc < 0 ? rc : json_buf_append(&jb, ",\"p\":", 5);
            rc = rc < 0 ? rc : json_dump_append(&jb, old);
        }
    } else {
        rc = rc < 0 ? rc : json_buf_append(&jb, ",\"n\":", 5);
        rc = rc < 0 ? rc : json_buf_int(&jb, online);
    }
    rc = rc < 0 ? rc : json_buf_append(&jb, ",\"origin\":", 10);
    rc = rc < 0 ? rc : json_dump_string(&jb, b->origin, strlen(b->origin));
    rc = rc < 0 ? rc : json_buf_append(&jb, "}", 2); /* with a NUL after the brace */
    if (rc < 0) {
        free(jb.data);
        return NULL;
    }
    *len = jb.len - 1;
    return jb.data;
}

char *bus_core_presence_envelope(bus_t *b, const char *method, int64_t online, size_t *len)
{
    return bus_envelope(b, method, 0, NULL, NULL, NULL, NULL, online, len);
}

/* The method of an envelope we wrote ourselves, read from its fixed
 * prefix without parsing it; -1 when the prefix is not ours. */
static int bus_peek_method(const char *payload, size_t len)
{
    static const char head[] = "{\"v\":1,\"m\":\"";
    const char *name = payload + sizeof(head) - 1, *end;
    char buf[16];

    if (len < sizeof(head) + 1 || memcmp(payload, head, sizeof(head) - 1) != 0)
        return -1;
    end = memchr(name, '"', len - (sizeof(head) - 1));
    if (end == NULL || (size_t)(end - name) >= sizeof(buf))
        return -1;
    memcpy(buf, name, (size_t)(end - name));
    buf[end - name] = '\0';
    return bus_which(buf);
}

/* The place in its channel's history that the Redis carrier appends to a
 * change it publishes: ...,"e":"<epoch>","s":<offset>} at the very end.
 * 0 with epoch and *offset set, -1 when the envelope has none. */
static int bus_envelope_position(const char *payload, size_t len, char *epoch, size_t epochlen,
                                 uint64_t *offset)
{
    static const char etag[] = ",\"e\":\"", stag[] = "\",\"s\":";
    size_t end, digits, i, elen;
    uint64_t v = 0;

    if (len < sizeof(etag) + sizeof(stag) || payload[len - 1] != '}')
        return -1;
    end = len - 1;
    for (digits = 0; digits < 20 && digits < end && payload[end - 1 - digits] >= '0' &&
                     payload[end - 1 - digits] <= '9';
         digits++)
        ;
    if (digits == 0 || digits >= 20 || end - digits < sizeof(stag) - 1)
        return -1;
    for (i = end - digits; i < end; i++)
        v = v * 10 + (uint64_t)(payload[i] - '0');
    end -= digits + sizeof(stag) - 1;
    if (memcmp(payload + end, stag, sizeof(stag) - 1) != 0)
        return -1;
    for (elen = 0; elen < epochlen && elen < end && payload[end - 1 - elen] != '"'; elen++)
        ;
    if (elen == 0 || elen >= epochlen || end - elen < sizeof(etag) - 1 ||
        memcmp(payload + end - elen - (sizeof(etag) - 1), etag, sizeof(etag) - 1) != 0)
        return -1;
    memcpy(epoch, payload + end - elen, elen);
    epoch[elen] = '\0';
    *offset = v;
    return 0;
}

static const char bus_marker_head[] = "{\"v\":1,\"m\":\"marker\"";

/* A marker on c: every moving session subscribed to it learns where its
 * pushes change hands. */
static void bus_deliver_marker(bus_t *b, bus_channel_t *c, const char *payload, size_t len)
{
    char err[128];
    json_t *e = json_parse(payload, len, 4, err, sizeof(err));
    const char *id = json_get_string(e, "k");
    size_t i;

    if (id == NULL)
        log_debug("bus: skipped a malformed marker on '%s'", c->name);
    else if (b->hooks.on_marker != NULL)
        for (i = 0; i < c->nsubs; i++)
            b->hooks.on_marker(b->hooks.arg, c->subs[i], c->name, id);
    json_free(e);
}

/* The one way a message reaches a session: the hook may hold it back (a
 * session moving between workers takes each channel's pushes from one
 * side of its marker only), and a session that did not export the method
 * gets nothing. 1 when sent. */
static int bus_push(bus_t *b, bus_channel_t *c, session_t *s, int which, conn_msg_t *m)
{
    if (b->hooks.may_push != NULL && !b->hooks.may_push(b->hooks.arg, s, c->name))
        return 0;
    return session_push(s, which, m) > 0;
}

/* A carrier message made ready to push: parsed once, its call serialized
 * once and shared by every subscriber that may see it as it is. */
typedef struct bus_msg {
    json_t *e;       /* the envelope */
    json_t *args;    /* [doc, opt] or [url, online] */
    conn_msg_t *msg; /* the call */
    int which;       /* SESSION_REMOTE_* */
} bus_msg_t;

static void bus_msg_release(bus_msg_t *m)
{
    conn_msg_unref(m->msg);
    json_free(m->args);
    json_free(m->e);
    memset(m, 0, sizeof(*m));
}

/* Parse payload into m; a change at a place in the channel's history
 * (offset > 0) carries it to clients in its options as epoch and offset.
 * 0, or -1 when there is nothing to push (unknown version or method,
 * malformed, out of memory). */
static int bus_msg_prepare(bus_channel_t *c, const char *payload, size_t len, const char *epoch,
                           uint64_t offset, bus_msg_t *m)
{
    const char *name;
    json_t *n;
    char err[128];

    memset(m, 0, sizeof(*m));
    m->e = json_parse(payload, len, JSON_DEFAULT_MAX_DEPTH + 8, err, sizeof(err));
    n = json_object_get(m->e, "v");
    if (m->e == NULL || n == NULL || n->type != JSON_NUMBER || n->u.num.d != BUS_ENVELOPE_VERSION) {
        log_debug("bus: skipped a message on '%s' (%s)", c->name,
                  m->e == NULL ? err : "unknown envelope version");
        goto fail;
    }
    name = json_get_string(m->e, "m");
    m->which = bus_which(name);
    m->args = json_array();
    if (m->which < 0 || m->args == NULL)
        goto fail;
    if (m->which == SESSION_REMOTE_SUBSCRIBED || m->which == SESSION_REMOTE_UNSUBSCRIBED) {
        n = json_object_take(m->e, "n");
        if (json_array_append(m->args, json_string(c->name)) < 0 ||
            json_array_append(m->args, n != NULL ? n : json_int(0)) < 0)
            goto fail;
    } else {
        json_t *d = json_object_take(m->e, "d"), *o = json_object_take(m->e, "o");
        if (json_array_append(m->args, d != NULL ? d : json_null()) < 0) {
            json_free(o);
            goto fail;
        }
        if (o == NULL || o->type != JSON_OBJECT) {
            json_free(o);
            o = json_object();
        }
        if (json_array_append(m->args, o) < 0)
            goto fail;
        if (offset > 0 && epoch != NULL &&
            (json_object_set(o, "epoch", json_string(epoch)) < 0 ||
             json_object_set(o, "offset", json_int((int64_t)offset)) < 0))
            goto fail;
    }
    m->msg = session_msg_call(name, m->args);
    if (m->msg == NULL)
        goto fail;
    return 0;
fail:
    bus_msg_release(m);
    return -1;
}

/* Push m to subscriber i of c: through the filter hook, each gets the
 * shared call, nothing, or a call of its own (a document with fields it
 * may not see removed, or deleted for a document that left its view). */
static void bus_msg_push(bus_t *b, bus_channel_t *c, size_t i, const bus_msg_t *m)
{
    static const char *const names[] = {"created", "updated", "deleted"};
    const json_t *doc = json_array_get(m->args, 0), *opt = json_array_get(m->args, 1);
    int presence = m->which == SESSION_REMOTE_SUBSCRIBED || m->which == SESSION_REMOTE_UNSUBSCRIBED;
    session_t *s = c->subs[i];
    json_t *custom = NULL, *own = NULL;
    conn_msg_t *mine;
    int w = m->which, r;

    if (b->hooks.filter == NULL) {
        if (bus_push(b, c, s, m->which, m->msg))
            b->st.pushed++;
        return;
    }
    r = b->hooks.filter(b->hooks.filter_arg, s, c->name, &w, json_get_string(m->e, "t"),
                        presence ? NULL : doc, json_object_get(m->e, "p"), &custom);
    if (r == BUS_AS_IS) {
        if (bus_push(b, c, s, m->which, m->msg))
            b->st.pushed++;
        return;
    }
    if (r != BUS_CUSTOM || custom == NULL || w < 0 || w > SESSION_REMOTE_DELETED) {
        json_free(custom);
        return;
    }
    own = json_array();
    if (own == NULL || json_array_append(own, custom) < 0 ||
        json_array_append(own, opt != NULL ? json_copy(opt) : json_object()) < 0) {
        json_free(own);
        return;
    }
    mine = session_msg_call(names[w], own);
    json_free(own);
    if (mine == NULL)
        return;
    if (bus_push(b, c, s, w, mine))
        b->st.pushed++;
    conn_msg_unref(mine);
}

/* ------------------------------------------------------------------------
 * Positions, history and recovery
 *
 * A change published on a channel gets the next offset of the channel's
 * epoch from the carrier, which keeps the last history_size of them. Each
 * local subscriber has the last offset it was given (bus_sub_t.pos): a
 * change at or below it is a duplicate and skipped, so a replay and the
 * live stream can overlap. The channel has the last offset this worker
 * delivered: a live change past the next one means this worker missed
 * some (a Redis reconnect, a relay overrun), which it fetches from the
 * history before going on, or, when they are gone, tells its subscribers
 * with recovered(url, {recovered: false, ...}) so that they refetch.
 * ------------------------------------------------------------------------ */

/* What a fetch is for: the channel's catch-up (s NULL) or one session's
 * recovery from (since_epoch, from - 1). */
typedef struct bus_fetch {
    char *channel;
    session_t *s; /* referenced */
    char since_epoch[BUS_EPOCH_MAX];
    uint64_t from;
} bus_fetch_t;

/* One fetch brings at most this many changes, and payloads of at most
 * this many bytes (past the first change): a longer replay takes several,
 * so a worker (and Redis, building the reply) never holds more than about
 * one batch of a channel's history per fetch. */
#define BUS_FETCH_BATCH 1000
#define BUS_FETCH_BYTES (4u << 20)

static const char bus_lost_head[] = "{\"v\":1,\"m\":\"lost\"";

static int bus_is_lost(const char *payload, size_t len)
{
    return len >= sizeof(bus_lost_head) - 1 &&
           memcmp(payload, bus_lost_head, sizeof(bus_lost_head) - 1) == 0;
}

void bus_core_new_epoch(char *out, size_t outlen)
{
    static unsigned seq;
    struct timespec ts;
    uint64_t x;

    clock_gettime(CLOCK_REALTIME, &ts);
    x = hash_keyed((const char *)&ts, sizeof(ts)) ^ ((uint64_t)getpid() << 32) ^ ++seq;
    snprintf(out, outlen, "%016" PRIx64, x);
}

static ssize_t bus_sub_index(const bus_channel_t *c, const session_t *s)
{
    size_t i;

    for (i = 0; i < c->nsubs; i++)
        if (c->subs[i] == s)
            return (ssize_t)i;
    return -1;
}

/* Answer subscriber i's subscribe, once: its position is st->pos in
 * epoch (NULL: the channel's, if the subscriber has a position). */
static void bus_answer_at(bus_t *b, bus_channel_t *c, size_t i, int recovered, const char *epoch)
{
    bus_sub_t *st = &c->st[i];
    int64_t token = st->token;

    st->token = -1;
    if (st->since && token >= 0 && recovered == 1)
        BUS_COUNT(b, recovered);
    else if (st->since && token >= 0)
        BUS_COUNT(b, not_recovered);
    if (token < 0 || b->hooks.on_joined == NULL)
        return;
    if (epoch == NULL && st->known && c->epoch[0] != '\0')
        epoch = c->epoch;
    b->hooks.on_joined(b->hooks.joined_arg, c->subs[i], c->name, token, epoch, st->pos,
                       st->since ? recovered : -1, st->detail);
}

static void bus_answer(bus_t *b, bus_channel_t *c, size_t i, int recovered)
{
    bus_answer_at(b, c, i, recovered, NULL);
}

/* Tell subscriber i that changes up to offset are lost to it. */
static void bus_tell_lost(bus_t *b, bus_channel_t *c, size_t i, const char *epoch, uint64_t offset)
{
    json_t *args = json_array(), *info = json_object();
    conn_msg_t *m;

    c->st[i].pos = offset;
    c->st[i].known = 1;
    BUS_COUNT(b, not_recovered);
    if (args == NULL || info == NULL || json_object_set(info, "recovered", json_bool(0)) < 0 ||
        json_object_set(info, "epoch", json_string(epoch)) < 0 ||
        json_object_set(info, "offset", json_int((int64_t)offset)) < 0 ||
        json_array_append(args, json_string(c->name)) < 0 || json_array_append(args, info) < 0) {
        if (json_array_get(args, 1) != info)
            json_free(info);
        json_free(args);
        return;
    }
    m = session_msg_call("recovered", args);
    json_free(args);
    if (m != NULL && bus_push(b, c, c->subs[i], SESSION_REMOTE_RECOVERED, m))
        b->st.pushed++;
    conn_msg_unref(m);
}

static int bus_fetch(bus_t *b, bus_channel_t *c, session_t *s, const char *since_epoch,
                     uint64_t from)
{
    bus_fetch_t *f = calloc(1, sizeof(*f));

    if (f == NULL || (f->channel = strdup(c->name)) == NULL) {
        free(f);
        return -1;
    }
    f->s = s != NULL ? session_ref(s) : NULL;
    if (s != NULL)
        session_fetch_begin(s); /* bounded with the session's operations */
    f->from = from;
    if (since_epoch != NULL)
        bus_copy(f->since_epoch, sizeof(f->since_epoch), since_epoch);
    if (s == NULL && from == BUS_FROM_POSITION)
        c->positioning = 1;
    else if (s == NULL)
        c->fetching = 1;
    /* The carrier answers exactly once, possibly before returning. */
    return b->ops->fetch(b, c, from, BUS_FETCH_BATCH, BUS_FETCH_BYTES, f);
}

static void bus_fetch_free(bus_fetch_t *f)
{
    if (f->s != NULL) {
        session_fetch_done(f->s);
        session_unref(f->s);
    }
    free(f->channel);
    free(f);
}

/* Give the change at offset to the subscribers that take it: live or
 * waiting for a position (every one when only is -1), or subscriber only;
 * each once. */
static void bus_give(bus_t *b, bus_channel_t *c, const char *payload, size_t len, const char *epoch,
                     uint64_t offset, ssize_t only)
{
    bus_msg_t m;
    int prepared = 0;
    size_t i;

    /* Sending may close a session, but closing is deferred, so c->subs
     * does not change under this loop. */
    for (i = 0; i < c->nsubs; i++) {
        bus_sub_t *st = &c->st[i];
        if (only >= 0 ? i != (size_t)only : st->state == BUS_SUB_RECOVERING)
            continue;
        if (offset > 0 && st->known && offset <= st->pos)
            continue; /* it has it already */
        if (offset > 0 && bus_is_lost(payload, len)) {
            bus_tell_lost(b, c, i, epoch, offset);
            continue;
        }
        if (offset > 0) {
            st->pos = offset;
            st->known = 1;
        }
        if (!prepared) {
            if (bus_msg_prepare(c, payload, len, epoch, offset, &m) < 0)
                return;
            prepared = 1;
        }
        bus_msg_push(b, c, i, &m);
    }
    if (prepared)
        bus_msg_release(&m);
}

/* The channel's history was lost (a new epoch): every subscriber that had
 * a position in the old one is told, and starts from offset in the new. */
static void bus_new_epoch(bus_t *b, bus_channel_t *c, const char *epoch, uint64_t offset)
{
    size_t i;

    log_info("bus: the history of '%s' was lost (epoch %s -> %s)", c->name, c->epoch, epoch);
    bus_copy(c->epoch, sizeof(c->epoch), epoch);
    c->last = offset;
    for (i = 0; i < c->nsubs; i++)
        if (c->st[i].state != BUS_SUB_RECOVERING && c->st[i].known)
            bus_tell_lost(b, c, i, epoch, offset);
}

void bus_core_catch_up(bus_t *b, bus_channel_t *c)
{
    if (c->fetching || c->positioning)
        return;
    log_debug("bus: catching up on '%s' from %" PRIu64 " (live at %" PRIu64 ")", c->name,
              c->last + 1, c->live_max);
    if (c->known)
        BUS_COUNT(b, catch_ups);
    if (bus_fetch(b, c, NULL, NULL, c->known ? c->last + 1 : BUS_FROM_POSITION) < 0)
        log_warning("bus: cannot catch up on '%s'", c->name);
}

/* The channel-level answer: the position, or the changes this worker
 * missed. */
static void bus_fetched_channel(bus_t *b, bus_channel_t *c, bus_fetch_t *f, int ok,
                                const char *epoch, uint64_t last, const bus_entry_t *entries,
                                size_t n)
{
    size_t i;

    if (f->from == BUS_FROM_POSITION)
        c->positioning = 0;
    else
        c->fetching = 0;
    if (!ok) {
        /* Redis went down: its return brings a catch-up. Whoever waits
         * for a position is answered without one. */
        for (i = 0; i < c->nsubs; i++) {
            if (c->st[i].state == BUS_SUB_POSITION) {
                c->st[i].state = BUS_SUB_LIVE;
                bus_answer(b, c, i, 0);
            }
        }
        return;
    }
    if (!c->known) {
        if (strcmp(epoch, c->epoch) == 0 && c->last > last)
            last = c->last; /* live changes came before the answer */
        bus_copy(c->epoch, sizeof(c->epoch), epoch);
        c->last = last;
        c->known = 1;
    } else if (strcmp(epoch, c->epoch) != 0) {
        bus_new_epoch(b, c, epoch, last);
    } else if (f->from != BUS_FROM_POSITION) {
        uint64_t before = c->last;

        for (i = 0; i < n && c->last < last; i++) {
            if (entries[i].offset <= c->last)
                continue;
            if (entries[i].offset != c->last + 1)
                break; /* the rest is not in the history */
            c->last = entries[i].offset;
            bus_give(b, c, entries[i].payload, entries[i].len, epoch, entries[i].offset, -1);
        }
        if (c->last < last && i == n && c->last > before) {
            bus_core_catch_up(b, c); /* a batch, and more after it */
            return;
        }
        if (c->last < last) {
            log_warning("bus: changes %" PRIu64 "-%" PRIu64 " of '%s' are no longer in its "
                        "history; its subscribers here refetch",
                        c->last + 1, last, c->name);
            c->last = last;
            for (i = 0; i < c->nsubs; i++)
                if (c->st[i].state != BUS_SUB_RECOVERING)
                    bus_tell_lost(b, c, i, epoch, last);
        }
    } else if (last > c->last) {
        c->last = last;
    }
    for (i = 0; i < c->nsubs; i++) {
        bus_sub_t *st = &c->st[i];
        if (st->state == BUS_SUB_POSITION) {
            if (!st->known || st->pos < c->last)
                st->pos = c->last;
            st->known = 1;
            st->state = BUS_SUB_LIVE;
            bus_answer(b, c, i, 0);
        } else if (st->state == BUS_SUB_LIVE && !st->known && f->from != BUS_FROM_POSITION) {
            bus_tell_lost(b, c, i, epoch, c->last); /* subscribed blind, in an outage */
        }
    }
    if (c->live_max > c->last)
        bus_core_catch_up(b, c);
}

/* One session's recovery: all of what it missed, or nothing. */
static void bus_fetched_session(bus_t *b, bus_channel_t *c, bus_fetch_t *f, int ok,
                                const char *epoch, uint64_t last, const bus_entry_t *entries,
                                size_t n)
{
    ssize_t k = bus_sub_index(c, f->s);
    bus_sub_t *st;
    size_t i;
    int whole;

    if (k < 0 || c->st[k].state != BUS_SUB_RECOVERING || f->from != c->st[k].pos + 1)
        return; /* gone, or a fetch of an earlier subscription */
    st = &c->st[k];
    if (!ok) {
        st->state = BUS_SUB_LIVE;
        st->known = 0;
        st->pos = 0;
        bus_answer(b, c, (size_t)k, 0);
        return;
    }
    whole = strcmp(epoch, f->since_epoch) == 0 && st->pos <= last;
    for (i = 0; whole && i < n; i++)
        if (entries[i].offset != st->pos + 1 + i || bus_is_lost(entries[i].payload, entries[i].len))
            whole = 0;
    if (whole && n == 0 && st->pos < last)
        whole = 0; /* missed changes, none of them in the history */
    if (!whole) {
        st->pos = last;
        st->known = 1;
        st->state = BUS_SUB_LIVE;
        bus_answer_at(b, c, (size_t)k, 0, epoch);
        return;
    }
    for (i = 0; i < n; i++)
        bus_give(b, c, entries[i].payload, entries[i].len, epoch, entries[i].offset, k);
    if (n > 0)
        st->pos = entries[n - 1].offset;
    st->known = 1;
    /* Live changes this session skipped while its fetch was out: fetch on
     * until it has reached what the channel delivered. */
    if (st->pos < last || (strcmp(c->epoch, epoch) == 0 && c->last > st->pos)) {
        bus_copy(f->since_epoch, sizeof(f->since_epoch), epoch);
        if (bus_fetch(b, c, f->s, epoch, st->pos + 1) < 0) {
            st->state = BUS_SUB_LIVE;
            bus_answer(b, c, (size_t)k, 0);
        }
        return;
    }
    st->state = BUS_SUB_LIVE;
    bus_answer_at(b, c, (size_t)k, 1, epoch);
}

void bus_core_fetched(bus_t *b, void *ctx, int ok, const char *epoch, uint64_t last,
                      const bus_entry_t *entries, size_t n)
{
    bus_fetch_t *f = ctx;
    bus_channel_t *c = b->freeing ? NULL : bus_core_find(b, f->channel, strlen(f->channel), 0);

    if (c != NULL && ok && (epoch == NULL || strlen(epoch) >= BUS_EPOCH_MAX))
        ok = 0;
    if (c != NULL && f->s == NULL)
        bus_fetched_channel(b, c, f, ok, epoch, last, entries, n);
    else if (c != NULL)
        bus_fetched_session(b, c, f, ok, epoch, last, entries, n);
    bus_fetch_free(f);
}

/* A live change at (epoch, offset) on c: 1 to deliver it now, 0 when it
 * is a duplicate or waits for a catch-up. */
static int bus_live_change(bus_t *b, bus_channel_t *c, const char *epoch, uint64_t offset)
{
    if (!c->known) {
        /* The position is not known yet: take the live stream as it
         * comes; the answer to the position settles it. */
        if (strcmp(epoch, c->epoch) != 0) {
            bus_copy(c->epoch, sizeof(c->epoch), epoch);
            c->last = 0;
        }
        if (offset > c->last)
            c->last = offset;
        return 1;
    }
    if (strcmp(epoch, c->epoch) != 0) {
        bus_new_epoch(b, c, epoch, offset - 1);
        c->live_max = 0;
    }
    if (c->fetching) {
        if (offset > c->live_max)
            c->live_max = offset;
        return 0;
    }
    if (offset <= c->last)
        return 0;
    if (offset > c->last + 1) {
        c->live_max = offset;
        /* The fetch brings this change too (the relay's at once). */
        bus_core_catch_up(b, c);
        return 0;
    }
    c->last = offset;
    return 1;
}

/* Push one carrier message to the local subscribers of channel name. */
void bus_core_deliver(bus_t *b, const char *name, size_t namelen, const char *payload, size_t len,
                      const char *epoch, uint64_t offset)
{
    bus_channel_t *c;
    char ebuf[BUS_EPOCH_MAX];
    bus_msg_t m;
    size_t i;
    int which;

    b->st.received++;
    c = bus_core_find(b, name, namelen, 0);
    if (c == NULL || c->nsubs == 0)
        return;
    if (len >= sizeof(bus_marker_head) - 1 &&
        memcmp(payload, bus_marker_head, sizeof(bus_marker_head) - 1) == 0) {
        bus_deliver_marker(b, c, payload, len);
        return;
    }
    which = bus_peek_method(payload, len);
    if (which == SESSION_REMOTE_SUBSCRIBED || which == SESSION_REMOTE_UNSUBSCRIBED) {
        /* Presence has no place in the history. Most of it goes to
         * clients that do not export the method (plain DNode clients):
         * skip the parse when nobody takes it. */
        for (i = 0; i < c->nsubs && !session_takes(c->subs[i], which); i++)
            ;
        if (i == c->nsubs || bus_msg_prepare(c, payload, len, NULL, 0, &m) < 0)
            return;
        for (i = 0; i < c->nsubs; i++)
            bus_msg_push(b, c, i, &m);
        bus_msg_release(&m);
        return;
    }
    if (epoch == NULL && bus_envelope_position(payload, len, ebuf, sizeof(ebuf), &offset) == 0)
        epoch = ebuf;
    if (epoch == NULL || offset == 0) {
        bus_give(b, c, payload, len, NULL, 0, -1); /* a change outside any history */
        return;
    }
    if (bus_live_change(b, c, epoch, offset))
        bus_give(b, c, payload, len, epoch, offset, -1);
}

/* ------------------------------------------------------------------------
 * Public API
 * ------------------------------------------------------------------------ */

bus_t *bus_new(struct event_base *base, const config_t *cfg, metrics_slot_t *stats, int index,
               bus_host_t *host, unsigned generation)
{
    bus_t *b = calloc(1, sizeof(*b));
    char hostname[64];
    int rc;

    if (b == NULL)
        return NULL;
    b->base = base;
    b->cfg = cfg;
    b->stats = stats;
    b->nbuckets = BUS_BUCKETS;
    b->table = calloc(b->nbuckets, sizeof(*b->table));
    if (b->table == NULL) {
        free(b);
        return NULL;
    }
    if (gethostname(hostname, sizeof(hostname)) < 0)
        snprintf(hostname, sizeof(hostname), "localhost");
    hostname[sizeof(hostname) - 1] = '\0';
    snprintf(b->origin, sizeof(b->origin), "%s:%ld", hostname, (long)getpid());
    if (cfg->redis_url != NULL && cfg->redis_url[0] != '\0')
        rc = bus_redis_init(b);
    else
        rc = bus_relay_init(b, host, index, generation);
    if (rc < 0) {
        bus_free(b);
        return NULL;
    }
    return b;
}

void bus_free(bus_t *b)
{
    size_t i;

    if (b == NULL)
        return;
    b->freeing = 1;
    if (b->ops != NULL)
        b->ops->free(b);
    for (i = 0; b->table != NULL && i < b->nbuckets; i++) {
        while (b->table[i] != NULL)
            bus_core_drop(b, b->table[i]);
    }
    free(b->table);
    free(b);
}

void bus_set_hooks(bus_t *b, const bus_hooks_t *hooks) { b->hooks = *hooks; }

/* Answer a subscribe to c, which s is on already, at once with where s
 * stands (no position while its first subscribe is still being
 * answered); recovered only when since is exactly that position. */
static void bus_answer_again(bus_t *b, bus_channel_t *c, session_t *s, const char *since_epoch,
                             uint64_t since_offset, int64_t token, int detail)
{
    ssize_t j = bus_sub_index(c, s);
    const bus_sub_t *st = j >= 0 ? &c->st[j] : NULL;
    int placed = st != NULL && st->state == BUS_SUB_LIVE && st->known && c->epoch[0] != '\0';
    int recovered = -1;

    if (token < 0 || b->hooks.on_joined == NULL)
        return;
    if (since_epoch != NULL)
        recovered = placed && strcmp(since_epoch, c->epoch) == 0 && since_offset == st->pos;
    b->hooks.on_joined(b->hooks.joined_arg, s, c->name, token, placed ? c->epoch : NULL,
                       placed ? st->pos : 0, recovered, detail);
}

/* Join s to channel; from NULL announces the join, else the session moves
 * from that worker (handoff) and its count moves silently. since_epoch:
 * recover from (since_epoch, since_offset); token: the call to answer. */
static int bus_join(bus_t *b, session_t *s, const char *channel, const char *from,
                    const char *since_epoch, uint64_t since_offset, int64_t token, int detail)
{
    char ep[BUS_EPOCH_MAX];
    bus_channel_t *c;
    uint64_t last = 0;
    bus_sub_t *st;
    size_t i, k;

    for (i = 0; i < s->nsubs; i++) {
        if (strcmp(s->subs[i]->name, channel) == 0) {
            bus_answer_again(b, s->subs[i], s, since_epoch, since_offset, token, detail);
            return 1;
        }
    }
    /* A moving session keeps what it had, even past a max_subscriptions a
     * reload lowered: refusing would cut it off a channel it is on. */
    if (from == NULL && s->nsubs >= b->cfg->max_subscriptions)
        return -1;
    c = bus_core_find(b, channel, strlen(channel), 1);
    if (c == NULL)
        return -1;
    if (c->nsubs == c->capsubs) {
        size_t cap = c->capsubs ? c->capsubs * 2 : 4;
        session_t **subs = realloc(c->subs, cap * sizeof(*subs));
        bus_sub_t *sts;
        if (subs == NULL)
            goto fail;
        c->subs = subs;
        sts = realloc(c->st, cap * sizeof(*sts));
        if (sts == NULL)
            goto fail;
        c->st = sts;
        c->capsubs = cap;
    }
    if (s->nsubs == s->capsubs) {
        uint32_t cap = s->capsubs ? s->capsubs * 2 : 2;
        bus_channel_t **subs = realloc(s->subs, cap * sizeof(*subs));
        if (subs == NULL)
            goto fail;
        s->subs = subs;
        s->capsubs = cap;
    }
    k = c->nsubs;
    st = &c->st[k];
    memset(st, 0, sizeof(*st));
    st->token = token;
    st->since = since_epoch != NULL;
    st->detail = (uint8_t)detail;
    if (from != NULL) {
        st->state = BUS_SUB_LIVE; /* it keeps the position its client has */
    } else if (since_epoch != NULL) {
        st->state = BUS_SUB_RECOVERING;
        st->pos = since_offset;
    } else if (c->known) {
        st->state = BUS_SUB_LIVE;
        st->pos = c->last;
        st->known = 1;
    } else {
        st->state = BUS_SUB_POSITION;
    }
    c->subs[c->nsubs++] = s;
    s->subs[s->nsubs++] = c;
    b->ops->joined(b, c);
    if (from == NULL)
        b->ops->presence(b, c, +1);
    else
        b->ops->move(b, c, from);
    /* Behind the carrier's subscription, so the answer covers everything
     * the live stream does not. The answers may come at once (the relay);
     * they find the session by its place in c. */
    if (!c->known && !c->positioning && !c->fetching && b->ops->position != NULL &&
        b->ops->position(b, c, ep, sizeof(ep), &last)) {
        /* Known at once (the relay): no fetch, nothing to allocate. */
        bus_copy(c->epoch, sizeof(c->epoch), ep);
        c->last = last > c->last ? last : c->last;
        c->known = 1;
        st = &c->st[c->nsubs - 1];
        if (st->state == BUS_SUB_POSITION) {
            st->state = BUS_SUB_LIVE;
            st->pos = c->last;
            st->known = 1;
        }
    }
    if (!c->known && !c->positioning && !c->fetching &&
        bus_fetch(b, c, NULL, NULL, BUS_FROM_POSITION) < 0)
        log_warning("bus: cannot ask the position of '%s'", c->name);
    k = (size_t)bus_sub_index(c, s); /* the answers above keep s in c */
    st = &c->st[k];
    if (st->state == BUS_SUB_LIVE) {
        bus_answer(b, c, k, -1);
    } else if (st->state == BUS_SUB_RECOVERING) {
        if (bus_fetch(b, c, s, since_epoch, since_offset + 1) < 0) {
            st->state = BUS_SUB_LIVE;
            bus_answer(b, c, k, 0);
        }
    } else if (!c->positioning) {
        st->state = BUS_SUB_LIVE; /* the position could not be asked */
        bus_answer(b, c, k, 0);
    }
    return 0;
fail:
    if (c->nsubs == 0 && b->ops->emptied(b, c))
        bus_core_drop(b, c);
    return -1;
}

int bus_subscribe(bus_t *b, session_t *s, const char *channel)
{
    return bus_join(b, s, channel, NULL, NULL, 0, -1, 0);
}

int bus_subscribe_at(bus_t *b, session_t *s, const char *channel, const char *since_epoch,
                     uint64_t since_offset, int64_t token, int detail)
{
    return bus_join(b, s, channel, NULL, since_epoch, since_offset, token, detail);
}

int bus_adopt(bus_t *b, session_t *s, const char *channel, const char *from)
{
    return bus_join(b, s, channel, from, NULL, 0, -1, 0);
}

/* Remove s from c (and c from s), then tell the deployment (unless s was
 * handed off: its count moved with it). */
static void bus_detach(bus_t *b, session_t *s, bus_channel_t *c)
{
    size_t i;

    for (i = 0; i < c->nsubs; i++) {
        if (c->subs[i] == s) {
            bus_answer(b, c, i, 0); /* left before its subscribe was answered */
            /* Keep join order: deliveries walk this array. */
            memmove(&c->subs[i], &c->subs[i + 1], (c->nsubs - i - 1) * sizeof(*c->subs));
            memmove(&c->st[i], &c->st[i + 1], (c->nsubs - i - 1) * sizeof(*c->st));
            c->nsubs--;
            break;
        }
    }
    for (i = 0; i < s->nsubs; i++) {
        if (s->subs[i] == c) {
            s->subs[i] = s->subs[--s->nsubs];
            break;
        }
    }
    if (!session_moved(s)) /* a moved session's count went with it */
        b->ops->presence(b, c, -1);
    if (c->nsubs == 0 && b->ops->emptied(b, c))
        bus_core_drop(b, c);
}

int bus_unsubscribe(bus_t *b, session_t *s, const char *channel)
{
    size_t i;

    for (i = 0; i < s->nsubs; i++) {
        if (strcmp(s->subs[i]->name, channel) == 0) {
            bus_detach(b, s, s->subs[i]);
            return 0;
        }
    }
    return 1;
}

void bus_leave_all(bus_t *b, session_t *s)
{
    while (s->nsubs > 0)
        bus_detach(b, s, s->subs[s->nsubs - 1]);
    free(s->subs);
    s->subs = NULL;
    s->capsubs = 0;
}

int bus_publish(bus_t *b, const char *channel, const char *method, const json_t *doc,
                const json_t *opt)
{
    return bus_publish_from(b, NULL, channel, method, doc, opt);
}

int bus_publish_from(bus_t *b, session_t *from, const char *channel, const char *method,
                     const json_t *doc, const json_t *opt)
{
    return bus_publish_change(b, from, channel, method, doc, opt, NULL, NULL);
}

int bus_publish_change(bus_t *b, session_t *from, const char *channel, const char *method,
                       const json_t *doc, const json_t *opt, const char *type, const json_t *old)
{
    char *payload;
    size_t len;
    int rc = -1;

    if (bus_which(method) < 0 || bus_which(method) > SESSION_REMOTE_DELETED)
        return -1;
    payload = bus_envelope(b, method, 1, doc, opt, type, old, 0, &len);
    if (payload != NULL)
        rc = b->ops->publish(b, channel, bus_core_find(b, channel, strlen(channel), 0), payload,
                             len, from, 0);
    if (rc == 0)
        BUS_COUNT(b, published);
    else
        BUS_COUNT(b, publish_failed);
    free(payload);
    return rc;
}

int bus_marker(bus_t *b, const char *channel, const char *id)
{
    json_buf_t jb = {NULL, 0, 0};
    int rc = -1;

    if (!b->ops->ready(b))
        return -1;
    if (json_buf_append(&jb, bus_marker_head, sizeof(bus_marker_head) - 1) == 0 &&
        json_buf_append(&jb, ",\"k\":", 5) == 0 && json_dump_string(&jb, id, strlen(id)) == 0 &&
        json_buf_append(&jb, ",\"origin\":", 10) == 0 &&
        json_dump_string(&jb, b->origin, strlen(b->origin)) == 0 &&
        json_buf_append(&jb, "}", 1) == 0)
        rc = b->ops->publish(b, channel, bus_core_find(b, channel, strlen(channel), 0), jb.data,
                             jb.len, NULL, 1);
    free(jb.data);
    return rc;
}

const char *bus_channel_name(const bus_channel_t *c) { return c->name; }

int bus_ready(const bus_t *b) { return b->ops->ready(b); }

const char *bus_id(const bus_t *b) { return b->ops->id(b); }

const char *bus_carrier(const bus_t *b) { return b->carrier; }

int bus_revoked(bus_t *b, const char *jti, const char *sub, int64_t iat,
                void (*cb)(void *arg, int revoked), void *arg)
{
    if (b == NULL || b->ops->revoked == NULL)
        return 1;
    return b->ops->revoked(b, jti, sub, iat, cb, arg);
}

size_t bus_online(bus_t *b, const char *channel)
{
    bus_channel_t *c = bus_core_find(b, channel, strlen(channel), 0);
    return c != NULL ? c->nsubs : 0;
}

void bus_get_stats(const bus_t *b, bus_stats_t *out)
{
    *out = b->st;
    out->redis_up = b->ops->connected(b);
}
