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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    size_t h;
    bus_channel_t *c;
    char *key = NULL;

    if (name[len] != '\0') { /* names from Redis replies are not terminated */
        key = strndup(name, len);
        if (key == NULL)
            return NULL;
        name = key;
    }
    h = bus_core_hash(name) % b->nbuckets;
    for (c = b->table[h]; c != NULL; c = c->next)
        if (strcmp(c->name, name) == 0)
            break;
    if (c == NULL && create && strlen(name) == len) {
        c = calloc(1, sizeof(*c));
        if (c != NULL && (c->name = strdup(name)) == NULL) {
            free(c);
            c = NULL;
        }
        if (c != NULL) {
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
    size_t h = bus_core_hash(c->name) % b->nbuckets;
    bus_channel_t **pp;

    for (pp = &b->table[h]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            b->nchannels--;
            b->ops->channel_free(b, c);
            free(c->name);
            free(c->subs);
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
    char num[32];
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
        int n = snprintf(num, sizeof(num), ",\"n\":%lld", (long long)online);
        rc = rc < 0 ? rc : json_buf_append(&jb, num, (size_t)n);
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

/* Delivery through the filter hook: each subscriber gets the shared msg,
 * nothing, or a call of its own (a document with fields it may not see
 * removed, or deleted for a document that left its view). args holds the
 * shared call's [doc, opt]. */
static void bus_deliver_filtered(bus_t *b, bus_channel_t *c, int which, const char *type,
                                 const json_t *old, const json_t *args, conn_msg_t *msg)
{
    static const char *const names[] = {"created", "updated", "deleted", "subscribed",
                                        "unsubscribed"};
    const json_t *doc = json_array_get(args, 0), *opt = json_array_get(args, 1);
    int presence = which == SESSION_REMOTE_SUBSCRIBED || which == SESSION_REMOTE_UNSUBSCRIBED;
    size_t i;

    for (i = 0; i < c->nsubs; i++) {
        session_t *s = c->subs[i];
        json_t *custom = NULL, *own = NULL;
        int w = which, r;
        conn_msg_t *m;
        r = b->hooks.filter(b->hooks.filter_arg, s, c->name, &w, type, presence ? NULL : doc, old,
                            &custom);
        if (r == BUS_AS_IS) {
            if (bus_push(b, c, s, which, msg))
                b->st.pushed++;
            continue;
        }
        if (r != BUS_CUSTOM || custom == NULL || w < 0 || w > SESSION_REMOTE_DELETED) {
            json_free(custom);
            continue;
        }
        own = json_array();
        if (own == NULL || json_array_append(own, custom) < 0 ||
            json_array_append(own, opt != NULL ? json_copy(opt) : json_object()) < 0) {
            json_free(own);
            continue;
        }
        m = session_msg_call(names[w], own);
        json_free(own);
        if (m == NULL)
            continue;
        if (bus_push(b, c, s, w, m))
            b->st.pushed++;
        conn_msg_unref(m);
    }
}

/* Push one carrier message to the local subscribers of channel name: the
 * call is serialized once and shared by all of them. */
void bus_core_deliver(bus_t *b, const char *name, size_t namelen, const char *payload, size_t len)
{
    bus_channel_t *c;
    json_t *e = NULL, *args = NULL, *n;
    const char *m;
    conn_msg_t *msg;
    char err[128];
    int which;
    size_t i;

    b->st.received++;
    c = bus_core_find(b, name, namelen, 0);
    if (c == NULL || c->nsubs == 0)
        return;
    if (len >= sizeof(bus_marker_head) - 1 &&
        memcmp(payload, bus_marker_head, sizeof(bus_marker_head) - 1) == 0) {
        bus_deliver_marker(b, c, payload, len);
        return;
    }
    /* Most pushes of presence go to clients that do not export the
     * method (plain DNode clients): skip the parse when nobody takes it. */
    which = bus_peek_method(payload, len);
    if (which >= 0) {
        for (i = 0; i < c->nsubs && !session_takes(c->subs[i], which); i++)
            ;
        if (i == c->nsubs)
            return;
    }
    e = json_parse(payload, len, JSON_DEFAULT_MAX_DEPTH + 8, err, sizeof(err));
    n = json_object_get(e, "v");
    if (e == NULL || n == NULL || n->type != JSON_NUMBER || n->u.num.d != BUS_ENVELOPE_VERSION) {
        log_debug("bus: skipped a message on '%s' (%s)", c->name,
                  e == NULL ? err : "unknown envelope version");
        goto done;
    }
    m = json_get_string(e, "m");
    which = bus_which(m);
    args = json_array();
    if (which < 0 || args == NULL)
        goto done;
    if (which == SESSION_REMOTE_SUBSCRIBED || which == SESSION_REMOTE_UNSUBSCRIBED) {
        n = json_object_take(e, "n");
        if (json_array_append(args, json_string(c->name)) < 0 ||
            json_array_append(args, n != NULL ? n : json_int(0)) < 0)
            goto done;
    } else {
        json_t *d = json_object_take(e, "d"), *o = json_object_take(e, "o");
        if (json_array_append(args, d != NULL ? d : json_null()) < 0) {
            json_free(o);
            goto done;
        }
        if (json_array_append(args, o != NULL ? o : json_object()) < 0)
            goto done;
    }
    msg = session_msg_call(m, args);
    if (msg == NULL)
        goto done;
    /* Sending may close a session, but closing is deferred, so c->subs
     * does not change under this loop. */
    if (b->hooks.filter != NULL)
        bus_deliver_filtered(b, c, which, json_get_string(e, "t"), json_object_get(e, "p"), args,
                             msg);
    else
        for (i = 0; i < c->nsubs; i++)
            if (bus_push(b, c, c->subs[i], which, msg))
                b->st.pushed++;
    conn_msg_unref(msg);
done:
    json_free(args);
    json_free(e);
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

/* Join s to channel; from NULL announces the join, else the session moves
 * from that worker (handoff) and its count moves silently. */
static int bus_join(bus_t *b, session_t *s, const char *channel, const char *from)
{
    bus_channel_t *c;
    size_t i;

    for (i = 0; i < s->nsubs; i++)
        if (strcmp(s->subs[i]->name, channel) == 0)
            return 1;
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
        if (subs == NULL)
            goto fail;
        c->subs = subs;
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
    c->subs[c->nsubs++] = s;
    s->subs[s->nsubs++] = c;
    b->ops->joined(b, c);
    if (from == NULL)
        b->ops->presence(b, c, +1);
    else
        b->ops->move(b, c, from);
    return 0;
fail:
    if (c->nsubs == 0 && b->ops->emptied(b, c))
        bus_core_drop(b, c);
    return -1;
}

int bus_subscribe(bus_t *b, session_t *s, const char *channel)
{
    return bus_join(b, s, channel, NULL);
}

int bus_adopt(bus_t *b, session_t *s, const char *channel, const char *from)
{
    return bus_join(b, s, channel, from);
}

/* Remove s from c (and c from s), then tell the deployment (unless s was
 * handed off: its count moved with it). */
static void bus_detach(bus_t *b, session_t *s, bus_channel_t *c)
{
    size_t i;

    for (i = 0; i < c->nsubs; i++) {
        if (c->subs[i] == s) {
            /* Keep join order: deliveries walk this array. */
            memmove(&c->subs[i], &c->subs[i + 1], (c->nsubs - i - 1) * sizeof(*c->subs));
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
