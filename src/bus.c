/* bus: channels and their local subscribers (see bus.h). In this version
 * a publish is delivered to the subscribers of this worker only, in the
 * order bus_publish is called; cross-worker and cross-host delivery hang
 * off bus_publish and the channel table. */
#include "bus.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker.h"

typedef struct bus_channel {
    char *name;
    session_t **subs; /* local subscribers, each once */
    size_t nsubs, capsubs;
    struct bus_channel *next; /* hash chain */
} bus_channel_t;

struct bus {
    worker_t *worker;
    bus_channel_t **table;
    size_t nbuckets, nchannels;
};

#define BUS_BUCKETS 1024

static size_t bus_hash(const char *s)
{
    size_t h = 1469598103934665603ULL;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

bus_t *bus_new(worker_t *w)
{
    bus_t *b = calloc(1, sizeof(*b));

    if (b == NULL)
        return NULL;
    b->worker = w;
    b->nbuckets = BUS_BUCKETS;
    b->table = calloc(b->nbuckets, sizeof(*b->table));
    if (b->table == NULL) {
        free(b);
        return NULL;
    }
    return b;
}

static void channel_free(bus_channel_t *c)
{
    free(c->name);
    free(c->subs);
    free(c);
}

void bus_free(bus_t *b)
{
    size_t i;

    if (b == NULL)
        return;
    for (i = 0; i < b->nbuckets; i++) {
        bus_channel_t *c = b->table[i];
        while (c != NULL) {
            bus_channel_t *next = c->next;
            channel_free(c);
            c = next;
        }
    }
    free(b->table);
    free(b);
}

static bus_channel_t *bus_find(bus_t *b, const char *name, int create)
{
    size_t h = bus_hash(name) % b->nbuckets;
    bus_channel_t *c;

    for (c = b->table[h]; c != NULL; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    if (!create)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->name = strdup(name);
    if (c->name == NULL) {
        free(c);
        return NULL;
    }
    c->next = b->table[h];
    b->table[h] = c;
    b->nchannels++;
    return c;
}

static void bus_drop_channel(bus_t *b, bus_channel_t *c)
{
    size_t h = bus_hash(c->name) % b->nbuckets;
    bus_channel_t **pp;

    for (pp = &b->table[h]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            b->nchannels--;
            channel_free(c);
            return;
        }
    }
}

/* Push subscribed/unsubscribed(url, online) to the channel's subscribers. */
static void bus_presence(bus_channel_t *c, int which)
{
    json_t *args = json_array();
    session_msg_t *m;
    size_t i;

    if (args == NULL || json_array_append(args, json_string(c->name)) < 0 ||
        json_array_append(args, json_int((int64_t)c->nsubs)) < 0) {
        json_free(args);
        return;
    }
    m = session_msg_call(which == SESSION_REMOTE_SUBSCRIBED ? "subscribed" : "unsubscribed",
                         args);
    json_free(args);
    if (m == NULL)
        return;
    for (i = 0; i < c->nsubs; i++)
        if (c->subs[i]->remote[which] >= 0)
            session_send_msg(c->subs[i], m);
    session_msg_unref(m);
}

int bus_subscribe(bus_t *b, session_t *s, const char *channel)
{
    bus_channel_t *c;
    size_t i;

    for (i = 0; i < s->nsubs; i++)
        if (strcmp(s->subs[i]->name, channel) == 0)
            return 1;
    if (s->nsubs >= b->worker->cfg->max_subscriptions)
        return -1;
    c = bus_find(b, channel, 1);
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
    bus_presence(c, SESSION_REMOTE_SUBSCRIBED);
    return 0;
fail:
    if (c->nsubs == 0)
        bus_drop_channel(b, c);
    return -1;
}

/* Remove s from c (and c from s). */
static void bus_detach(bus_t *b, session_t *s, bus_channel_t *c, int notify)
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
    if (c->nsubs == 0) {
        bus_drop_channel(b, c);
        return;
    }
    if (notify)
        bus_presence(c, SESSION_REMOTE_UNSUBSCRIBED);
}

int bus_unsubscribe(bus_t *b, session_t *s, const char *channel)
{
    size_t i;

    for (i = 0; i < s->nsubs; i++) {
        if (strcmp(s->subs[i]->name, channel) == 0) {
            bus_detach(b, s, s->subs[i], 1);
            return 0;
        }
    }
    return 1;
}

void bus_leave_all(bus_t *b, session_t *s)
{
    while (s->nsubs > 0)
        bus_detach(b, s, s->subs[s->nsubs - 1], 1);
    free(s->subs);
    s->subs = NULL;
    s->capsubs = 0;
}

int bus_publish(bus_t *b, const char *channel, const char *method, const json_t *doc,
                const json_t *opt)
{
    bus_channel_t *c = bus_find(b, channel, 0);
    json_t *args;
    session_msg_t *m;
    size_t i;
    int which;

    if (c == NULL)
        return 0;
    if (strcmp(method, "created") == 0)
        which = SESSION_REMOTE_CREATED;
    else if (strcmp(method, "updated") == 0)
        which = SESSION_REMOTE_UPDATED;
    else if (strcmp(method, "deleted") == 0)
        which = SESSION_REMOTE_DELETED;
    else
        return -1;
    args = json_array();
    if (args == NULL || json_array_append(args, json_copy(doc)) < 0 ||
        json_array_append(args, opt != NULL ? json_copy(opt) : json_object()) < 0) {
        json_free(args);
        return -1;
    }
    /* Serialized once, shared by every subscriber's output buffer. Clients
     * are called by method name, so the same bytes suit all of them. */
    m = session_msg_call(method, args);
    json_free(args);
    if (m == NULL)
        return -1;
    for (i = 0; i < c->nsubs; i++)
        if (c->subs[i]->remote[which] >= 0)
            session_send_msg(c->subs[i], m);
    session_msg_unref(m);
    return 0;
}

size_t bus_online(bus_t *b, const char *channel)
{
    bus_channel_t *c = bus_find(b, channel, 0);
    return c != NULL ? c->nsubs : 0;
}
