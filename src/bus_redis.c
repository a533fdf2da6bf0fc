/* bus_redis: the Redis carrier (see bus.h and bus_carrier.h): two
 * hiredis async connections per worker (a subscriber and a command one),
 * presence kept in Redis by Lua scripts, heartbeats, liveness probes and
 * reconnects with backoff. Redis delivers one channel's messages to every
 * subscriber in the order it ran the PUBLISHes, which gives all hosts one
 * order. Knows nothing of the single-host relay. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "bus_carrier.h"
#include "log.h"

/* A crashed worker's presence counts vanish within REDIS_HEARTBEAT_TTL +
 * REDIS_REAP_EVERY seconds (12 s; documented as 15). */
#define REDIS_TICK_MS 500
#define REDIS_PROBE_EVERY 1.0   /* seconds between liveness probes */
#define REDIS_PROBE_TIMEOUT 3.0 /* no echo for this long: drop and reconnect */
#define REDIS_CONNECT_TIMEOUT 3.0
#define REDIS_HEARTBEAT_EVERY 2.0
#define REDIS_HEARTBEAT_TTL 10
#define REDIS_REAP_EVERY 2.0
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 5000

/* Where a channel's Redis subscription stands on this worker (cstate). */
enum { R_NONE, R_SUBSCRIBING, R_SUBSCRIBED, R_UNSUBSCRIBING };

/* What a command on the Redis command connection was for (reply privdata). */
enum {
    K_PUBLISH = 1,
    K_PRESENCE,
    K_HEARTBEAT,
    K_REAP,
    K_SYNC,
    K_PROBE,
    K_SELECT,
    K_MARKER,
    K_FETCH
};

/* A change on its way to Redis: whom it counts against, and its channel
 * (remembered if the change is lost, see lost below). */
typedef struct bus_pub {
    session_t *from; /* a publish on behalf of this session (referenced), or NULL */
    char name[];
} bus_pub_t;

/* A command held until the channel's SUBSCRIBE is confirmed, so that this
 * worker's own subscribers get their echo, and a fetch covers everything
 * the subscription does not. */
typedef struct bus_pending {
    char *cmd;
    size_t len;
    int kind;
    void *ctx; /* K_PUBLISH: a bus_pub_t; K_FETCH: the core's fetch; else NULL */
} bus_pending_t;

/* Channels whose changes this worker failed to publish: once Redis is
 * back, each gets a "lost" change in its history, so that its subscribers
 * everywhere learn that they missed something. */
#define REDIS_LOST_MAX 4096

/* This worker's side of Redis. */
typedef struct redis {
    char *rhost;
    int rport, rdb;
    char *ruser, *rpass; /* AUTH [user] password on every connection; NULL: none */
    const char *prefix;
    char *ctl; /* this worker's control channel (probes) */
    size_t ctllen;
    char *revoke; /* the revocations channel */
    size_t revokelen;
    redisAsyncContext *sub, *cmd;
    int sub_ok, cmd_ok, up;
    struct event *tick, *retry;
    unsigned backoff_ms;
    unsigned seed;
    double attempt_at, probe_at, heartbeat_at, reap_at, down_at, sub_seen, last_tick;
    int probe_out, probe_cmd_ok, probe_sub_ok, ever_up, need_sync;
    const char *broken; /* a failure seen inside a hiredis callback: the tick drops */
    char **lost;        /* channel names (see REDIS_LOST_MAX) */
    size_t nlost;
    int lost_overflow;
} redis_t;

#define RD(b) ((redis_t *)(b)->cs)

/* Remember that a change on channel name never reached Redis. */
static void bus_lost_add(bus_t *b, const char *name)
{
    size_t i;

    if (b->freeing)
        return;
    for (i = RD(b)->nlost; i > 0; i--)
        if (strcmp(RD(b)->lost[i - 1], name) == 0)
            return;
    if (RD(b)->nlost == REDIS_LOST_MAX) {
        if (!RD(b)->lost_overflow)
            log_warning("bus: changes on more than %d channels were lost in this outage; "
                        "only the first are marked in their history",
                        REDIS_LOST_MAX);
        RD(b)->lost_overflow = 1;
        return;
    }
    if (RD(b)->lost == NULL && (RD(b)->lost = calloc(REDIS_LOST_MAX, sizeof(char *))) == NULL)
        return;
    if ((RD(b)->lost[RD(b)->nlost] = strdup(name)) != NULL)
        RD(b)->nlost++;
}

/* A command that will not be answered: settle what waits for it. lost: a
 * publish that did not reach Redis. */
static void bus_ctx_fail(bus_t *b, int kind, void *ctx)
{
    if (kind == K_PUBLISH && ctx != NULL) {
        bus_pub_t *pub = ctx;
        bus_lost_add(b, pub->name);
        bus_core_publish_settled(pub->from);
        free(pub);
    } else if (kind == K_FETCH) {
        bus_core_fetched(b, ctx, 0, NULL, 0, NULL, 0);
    }
}

static void bus_pending_clear(bus_t *b, bus_channel_t *c)
{
    size_t i;

    for (i = 0; i < c->npending; i++) {
        if (c->pending[i].kind == K_PUBLISH) {
            BUS_COUNT(b, publish_failed);
            b->failed_in_outage++;
        }
        free(c->pending[i].cmd);
        bus_ctx_fail(b, c->pending[i].kind, c->pending[i].ctx);
    }
    c->npending = 0;
}

/* ------------------------------------------------------------------------
 * Keys and scripts
 *
 * Under the prefix P:
 *   P c:<url>     pub/sub channel of a url
 *   P w:<wid>     a worker's control channel (its own liveness probes)
 *   P p:<url>     hash: worker id -> subscribers of url on that worker
 *   P wc:<wid>    set: urls the worker counts subscribers on
 *   P workers     set: worker ids with presence entries
 *   P hb:<wid>    heartbeat, expires REDIS_HEARTBEAT_TTL s after the last beat
 *   P revoke      pub/sub channel of revocations ("jti <id>" or "sub <sub> <T>")
 *   P rv:jti:<id> a revoked token id (value: when), expires with the revocation
 *   P rv:sub:<s>  tokens of subject s issued before the value are revoked
 * Scripts run atomically, so a presence message carries the count as of its
 * place in the channel's order. Totals count only workers whose heartbeat
 * is alive. (Keys are built inside scripts: single Redis, not Cluster.)
 * ------------------------------------------------------------------------ */

/* ARGV: prefix, wid, url, delta, method, origin. Returns the total. */
static const char bus_lua_presence[] =
    "local p, wid, url = ARGV[1], ARGV[2], ARGV[3]\n"
    "local h = p .. 'p:' .. url\n"
    "local n = redis.call('HINCRBY', h, wid, ARGV[4])\n"
    "if n <= 0 then\n"
    "  redis.call('HDEL', h, wid)\n"
    "  redis.call('SREM', p .. 'wc:' .. wid, url)\n"
    "else\n"
    "  redis.call('SADD', p .. 'wc:' .. wid, url)\n"
    "end\n"
    "redis.call('SADD', p .. 'workers', wid)\n"
    "local total, all = 0, redis.call('HGETALL', h)\n"
    "for i = 1, #all, 2 do\n"
    "  if all[i] == wid or redis.call('EXISTS', p .. 'hb:' .. all[i]) == 1 then\n"
    "    total = total + tonumber(all[i + 1])\n"
    "  end\n"
    "end\n"
    "redis.call('PUBLISH', p .. 'c:' .. url,\n"
    "  cjson.encode({v = 1, m = ARGV[5], n = total, origin = ARGV[6]}))\n"
    "return total\n";

/* Drop the presence entries of workers whose heartbeat expired (ARGV[2]
 * empty), or of worker ARGV[2]. With ARGV[3] = '1' each affected channel is
 * told unsubscribed(url, new total). ARGV: prefix, wid or '', publish. */
static const char bus_lua_drop[] =
    "local p, only, pub = ARGV[1], ARGV[2], ARGV[3] == '1'\n"
    "local dead = {}\n"
    "if only ~= '' then dead = {only} else\n"
    "  for _, w in ipairs(redis.call('SMEMBERS', p .. 'workers')) do\n"
    "    if redis.call('EXISTS', p .. 'hb:' .. w) == 0 then dead[#dead + 1] = w end\n"
    "  end\n"
    "end\n"
    "for _, w in ipairs(dead) do\n"
    "  for _, url in ipairs(redis.call('SMEMBERS', p .. 'wc:' .. w)) do\n"
    "    local h = p .. 'p:' .. url\n"
    "    redis.call('HDEL', h, w)\n"
    "    if pub then\n"
    "      local total, all = 0, redis.call('HGETALL', h)\n"
    "      for i = 1, #all, 2 do\n"
    "        if redis.call('EXISTS', p .. 'hb:' .. all[i]) == 1 then\n"
    "          total = total + tonumber(all[i + 1])\n"
    "        end\n"
    "      end\n"
    "      redis.call('PUBLISH', p .. 'c:' .. url,\n"
    "        cjson.encode({v = 1, m = 'unsubscribed', n = total, origin = w}))\n"
    "    end\n"
    "  end\n"
    "  redis.call('DEL', p .. 'wc:' .. w)\n"
    "  redis.call('SREM', p .. 'workers', w)\n"
    "end\n"
    "return #dead\n";

/* A session's count on url moves from worker ARGV[2] to ARGV[3], without a
 * presence message (handoff). ARGV: prefix, from, wid, url. */
static const char bus_lua_move[] = "local p, from, wid, url = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
                                   "local h = p .. 'p:' .. url\n"
                                   "if from ~= wid and redis.call('HEXISTS', h, from) == 1 then\n"
                                   "  if redis.call('HINCRBY', h, from, -1) <= 0 then\n"
                                   "    redis.call('HDEL', h, from)\n"
                                   "    redis.call('SREM', p .. 'wc:' .. from, url)\n"
                                   "  end\n"
                                   "end\n"
                                   "redis.call('HINCRBY', h, wid, 1)\n"
                                   "redis.call('SADD', p .. 'wc:' .. wid, url)\n"
                                   "redis.call('SADD', p .. 'workers', wid)\n"
                                   "return 1\n";

/* ARGV: prefix, wid, ttl. Returns 1 when the heartbeat was still there, 0
 * when it had expired or Redis lost it (the caller then re-registers). */
static const char bus_lua_heartbeat[] = "local k = ARGV[1] .. 'hb:' .. ARGV[2]\n"
                                        "local had = redis.call('EXISTS', k)\n"
                                        "redis.call('SET', k, '1', 'EX', ARGV[3])\n"
                                        "redis.call('SADD', ARGV[1] .. 'workers', ARGV[2])\n"
                                        "return had\n";

/* A change: the next offset of the channel's history, kept in a stream of
 * at least history_size entries (when not 0), and published with its
 * place appended to the envelope: ...,"e":"<epoch>","s":<offset>}. A
 * channel whose position is gone (flushed, expired) starts a new epoch.
 * Stream ids are <offset>-1, each entry m (the message) and t (ms).
 * ARGV: prefix, url, envelope, history_size, history_ttl, meta_ttl,
 * new epoch, now (ms). Returns the offset. */
static const char bus_lua_change[] =
    "local p, url = ARGV[1], ARGV[2]\n"
    "local meta, hist = p .. 'o:' .. url, p .. 'h:' .. url\n"
    "local e = redis.call('HGET', meta, 'e')\n"
    "if not e then\n"
    "  e = ARGV[7]\n"
    "  redis.call('HSET', meta, 'e', e, 'n', 0)\n"
    "  redis.call('DEL', hist)\n"
    "end\n"
    "local n = redis.call('HINCRBY', meta, 'n', 1)\n"
    "local msg = string.sub(ARGV[3], 1, -2) .. ',\"e\":\"' .. e .. '\",\"s\":' .. n .. '}'\n"
    "if tonumber(ARGV[4]) > 0 then\n"
    "  redis.call('XADD', hist, 'MAXLEN', '~', ARGV[4], n .. '-1', 'm', msg, 't', ARGV[8])\n"
    "  redis.call('EXPIRE', hist, ARGV[5])\n"
    "end\n"
    "redis.call('EXPIRE', meta, ARGV[6])\n"
    "redis.call('PUBLISH', p .. 'c:' .. url, msg)\n"
    "return n\n";

/* A channel's epoch and last offset, and its changes from offset ARGV[3]
 * on when all of them are still in the history: no more than ARGV[7]
 * back, none older than ARGV[8] (ms). Of those, the first ARGV[4] at most,
 * and no more message bytes than ARGV[9] past the first. ARGV: prefix,
 * url, from, count, new epoch, meta_ttl, history_size, oldest, bytes.
 * Returns {epoch, last, id, message, id, message, ...}. */
static const char bus_lua_fetch[] =
    "local p, url = ARGV[1], ARGV[2]\n"
    "local meta, hist = p .. 'o:' .. url, p .. 'h:' .. url\n"
    "local e = redis.call('HGET', meta, 'e')\n"
    "if not e then\n"
    "  e = ARGV[5]\n"
    "  redis.call('HSET', meta, 'e', e, 'n', 0)\n"
    "  redis.call('DEL', hist)\n"
    "end\n"
    "redis.call('EXPIRE', meta, ARGV[6])\n"
    "local n = tonumber(redis.call('HGET', meta, 'n'))\n"
    "local from = tonumber(ARGV[3])\n"
    "local out = {e, n}\n"
    "if from < 1 or from > n or n - from + 1 > tonumber(ARGV[7]) then return out end\n"
    "local r = redis.call('XRANGE', hist, ARGV[3], '+', 'COUNT', ARGV[4])\n"
    "if #r == 0 or tonumber(r[1][2][4]) < tonumber(ARGV[8]) then return out end\n"
    "local cap, bytes = tonumber(ARGV[9]), 0\n"
    "for i = 1, #r do\n"
    "  local m = r[i][2][2]\n"
    "  if i > 1 and bytes + #m > cap then break end\n"
    "  bytes = bytes + #m\n"
    "  out[#out + 1] = r[i][1]\n"
    "  out[#out + 1] = m\n"
    "end\n"
    "return out\n";

/* How long a channel's epoch and offset outlive its last change: a client
 * that missed nothing recovers even after the history itself expired. */
#define REDIS_META_TTL 2592000

/* "<prefix><kind><rest>" as a new string. */
static char *bus_key(const bus_t *b, const char *kind, const char *rest, size_t *len)
{
    char *k;
    int n = asprintf(&k, "%s%s%s", RD(b)->prefix, kind, rest);

    if (n < 0)
        return NULL;
    if (len != NULL)
        *len = (size_t)n;
    return k;
}

/* ------------------------------------------------------------------------
 * Redis: connections
 * ------------------------------------------------------------------------ */

static void bus_redis_down(bus_t *b, const redisAsyncContext *dying, const char *why);
static void bus_sub_cb(redisAsyncContext *ac, void *r, void *privdata);
static void bus_mark_lost(bus_t *b);

static void bus_cmd_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    bus_t *b = ac->data;
    redisReply *reply = r;
    int kind = (int)(intptr_t)privdata;

    if (b == NULL || b->freeing)
        return;
    if (reply == NULL) { /* the connection went away before the answer */
        if (kind == K_PUBLISH) {
            BUS_COUNT(b, publish_failed);
            b->failed_in_outage++;
        }
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        if (kind == K_PUBLISH)
            BUS_COUNT(b, publish_failed);
        log_warning("bus: Redis refused a command (kind %d): %s", kind, reply->str);
        return;
    }
    if (kind == K_PROBE && ac == RD(b)->cmd)
        RD(b)->probe_cmd_ok = 1;
    if (kind == K_HEARTBEAT && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0 &&
        RD(b)->ever_up && !RD(b)->need_sync) {
        /* Our heartbeat had gone (a long stall, or Redis lost its data):
         * others may have dropped our counts, so register them again. */
        log_warning("bus: Redis had lost this worker's heartbeat; re-registering presence");
        RD(b)->need_sync = 1;
    }
}

/* The reply to a change's script (privdata: its bus_pub_t). A change
 * whose connection went before the answer may or may not have been
 * published: it is marked lost, which at worst makes subscribers refetch
 * once. */
static void bus_publish_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    bus_t *b = ac->data;
    bus_pub_t *pub = privdata;

    bus_cmd_cb(ac, r, (void *)(intptr_t)K_PUBLISH);
    if (r == NULL && b != NULL)
        bus_lost_add(b, pub->name);
    bus_core_publish_settled(pub->from);
    free(pub);
}

/* The reply to a fetch: {epoch, last, id, message, ...}. */
static void bus_fetch_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    bus_t *b = ac->data;
    redisReply *reply = r;
    bus_entry_t *entries = NULL;
    char epoch[BUS_EPOCH_MAX];
    size_t i, n = 0;
    uint64_t last;

    if (b == NULL)
        return; /* hiredis is being freed without a bus: nothing waits */
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[0]->len >= sizeof(epoch) ||
        reply->element[1]->type != REDIS_REPLY_INTEGER || reply->element[1]->integer < 0) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            log_warning("bus: Redis refused a history fetch: %.200s", reply->str);
        bus_core_fetched(b, privdata, 0, NULL, 0, NULL, 0);
        return;
    }
    memcpy(epoch, reply->element[0]->str, reply->element[0]->len);
    epoch[reply->element[0]->len] = '\0';
    last = (uint64_t)reply->element[1]->integer;
    if (reply->elements > 2) {
        entries = calloc((reply->elements - 2) / 2, sizeof(*entries));
        for (i = 2; entries != NULL && i + 1 < reply->elements; i += 2) {
            const redisReply *id = reply->element[i], *m = reply->element[i + 1];
            if (id->type != REDIS_REPLY_STRING || m->type != REDIS_REPLY_STRING)
                break;
            entries[n].offset = strtoull(id->str, NULL, 10);
            entries[n].payload = m->str;
            entries[n].len = m->len;
            n++;
        }
    }
    bus_core_fetched(b, privdata, entries != NULL || reply->elements == 2, epoch, last, entries, n);
    free(entries);
}

/* Send a command on the command connection; 0, or -1 when it is down (ctx
 * is then the caller's to settle). ctx: a K_PUBLISH's bus_pub_t or a
 * K_FETCH's fetch, which the reply callback takes over. */
static int bus_command_ctx(bus_t *b, int kind, const char *cmd, size_t len, void *ctx)
{
    redisCallbackFn *fn = kind == K_PUBLISH && ctx != NULL ? bus_publish_cb
                          : kind == K_FETCH                ? bus_fetch_cb
                                                           : bus_cmd_cb;

    if (RD(b)->cmd == NULL || !RD(b)->up)
        return -1;
    if (fn == bus_cmd_cb)
        ctx = (void *)(intptr_t)kind;
    return redisAsyncFormattedCommand(RD(b)->cmd, fn, ctx, cmd, len) == REDIS_OK ? 0 : -1;
}

static int bus_command(bus_t *b, int kind, const char *cmd, size_t len)
{
    return bus_command_ctx(b, kind, cmd, len, NULL);
}

/* Send, or hold while the channel's (UN)SUBSCRIBE is in flight, so that
 * this worker's subscribers get the echo of their own presence and of this
 * worker's publishes, and a fetch covers what the subscription does not.
 * Takes cmd and ctx (see bus_command_ctx) whatever happens: on -1 ctx has
 * been settled. */
static int bus_channel_command_ctx(bus_t *b, bus_channel_t *c, int kind, char *cmd, size_t len,
                                   void *ctx)
{
    int rc;

    if (c != NULL && (c->cstate == R_SUBSCRIBING || c->cstate == R_UNSUBSCRIBING)) {
        if (c->npending == c->cappending) {
            size_t cap = c->cappending ? c->cappending * 2 : 4;
            bus_pending_t *p = realloc(c->pending, cap * sizeof(*p));
            if (p == NULL) {
                free(cmd);
                bus_ctx_fail(b, kind, ctx);
                return -1;
            }
            c->pending = p;
            c->cappending = cap;
        }
        c->pending[c->npending].cmd = cmd;
        c->pending[c->npending].len = len;
        c->pending[c->npending].kind = kind;
        c->pending[c->npending].ctx = ctx;
        c->npending++;
        return 0;
    }
    rc = bus_command_ctx(b, kind, cmd, len, ctx);
    free(cmd);
    if (rc < 0)
        bus_ctx_fail(b, kind, ctx);
    return rc;
}

static int bus_channel_command(bus_t *b, bus_channel_t *c, int kind, char *cmd, size_t len)
{
    return bus_channel_command_ctx(b, c, kind, cmd, len, NULL);
}

static void bus_flush_pending(bus_t *b, bus_channel_t *c)
{
    size_t i, n = c->npending;

    /* Settling a failure may reach the core, which may hold more commands
     * on c: take the list first. */
    bus_pending_t *list = c->pending;
    c->pending = NULL;
    c->npending = c->cappending = 0;
    for (i = 0; i < n; i++) {
        bus_pending_t *p = &list[i];
        if (bus_command_ctx(b, p->kind, p->cmd, p->len, p->ctx) < 0) {
            if (p->kind == K_PUBLISH)
                BUS_COUNT(b, publish_failed);
            bus_ctx_fail(b, p->kind, p->ctx);
        }
        free(p->cmd);
    }
    free(list);
}

static int bus_sub_command(bus_t *b, const char *verb, const char *key, size_t keylen)
{
    if (RD(b)->sub == NULL)
        return -1;
    return redisAsyncCommand(RD(b)->sub, bus_sub_cb, NULL, "%s %b", verb, key, keylen) == REDIS_OK
               ? 0
               : -1;
}

static int bus_channel_subscribe(bus_t *b, bus_channel_t *c, int on)
{
    size_t len;
    char *key = bus_key(b, "c:", c->name, &len);
    int rc;

    if (key == NULL)
        return -1;
    rc = bus_sub_command(b, on ? "SUBSCRIBE" : "UNSUBSCRIBE", key, len);
    free(key);
    if (rc == 0)
        c->cstate = on ? R_SUBSCRIBING : R_UNSUBSCRIBING;
    return rc;
}

static void bus_presence_redis(bus_t *b, bus_channel_t *c, int delta, const char *method)
{
    char *cmd = NULL, d[8];
    int len;

    if (!RD(b)->up)
        return; /* re-registered in bulk when Redis is back */
    snprintf(d, sizeof(d), "%d", delta);
    len = redisFormatCommand(&cmd, "EVAL %s 0 %s %s %s %s %s %s", bus_lua_presence, RD(b)->prefix,
                             b->origin, c->name, d, method, b->origin);
    if (len < 0 || bus_channel_command(b, c, K_PRESENCE, cmd, (size_t)len) < 0)
        log_warning("bus: cannot send the presence change of '%s' to Redis", c->name);
}

static void bus_eval_simple(bus_t *b, int kind, const char *script, const char *a2, const char *a3)
{
    char *cmd = NULL;
    int len = redisFormatCommand(&cmd, "EVAL %s 0 %s %s %s", script, RD(b)->prefix, a2, a3);

    if (len < 0 || bus_command(b, kind, cmd, (size_t)len) < 0)
        log_debug("bus: cannot send a maintenance script (kind %d)", kind);
    free(cmd);
}

/* Register this worker's presence afresh: forget what Redis holds for it,
 * then set the current count of every channel with local subscribers. */
static void bus_sync_presence(bus_t *b)
{
    char ttl[16];
    size_t i;

    RD(b)->need_sync = 0;
    snprintf(ttl, sizeof(ttl), "%d", REDIS_HEARTBEAT_TTL);
    bus_eval_simple(b, K_SYNC, bus_lua_drop, b->origin, "0");
    bus_eval_simple(b, K_SYNC, bus_lua_heartbeat, b->origin, ttl);
    RD(b)->heartbeat_at = bus_core_now();
    for (i = 0; i < b->nbuckets; i++) {
        bus_channel_t *c;
        for (c = b->table[i]; c != NULL; c = c->next) {
            char *h, *set, *cmd = NULL, count[24];
            int len;
            if (c->nsubs == 0)
                continue;
            h = bus_key(b, "p:", c->name, NULL);
            set = bus_key(b, "wc:", b->origin, NULL);
            if (h != NULL && set != NULL) {
                snprintf(count, sizeof(count), "%zu", c->nsubs);
                len = redisFormatCommand(&cmd, "HSET %s %s %s", h, b->origin, count);
                if (len >= 0)
                    bus_command(b, K_SYNC, cmd, (size_t)len);
                free(cmd);
                cmd = NULL;
                len = redisFormatCommand(&cmd, "SADD %s %s", set, c->name);
                if (len >= 0)
                    bus_command(b, K_SYNC, cmd, (size_t)len);
                free(cmd);
            }
            free(h);
            free(set);
        }
    }
}

/* Both connections work and the control channel is subscribed. */
static void bus_redis_up(bus_t *b)
{
    size_t i;

    RD(b)->up = 1;
    RD(b)->backoff_ms = REDIS_BACKOFF_MIN_MS;
    RD(b)->probe_out = 0;
    RD(b)->probe_at = RD(b)->reap_at = bus_core_now();
    if (RD(b)->ever_up) {
        BUS_COUNT(b, reconnects);
        log_info("bus: Redis is back after %.1f s (%" PRIu64
                 " publishes failed meanwhile); resubscribing",
                 bus_core_now() - RD(b)->down_at, b->failed_in_outage);
    } else {
        log_info("bus: connected to Redis at %s:%d", RD(b)->rhost, RD(b)->rport);
    }
    RD(b)->ever_up = 1;
    b->failed_in_outage = 0;
    bus_sync_presence(b);
    for (i = 0; i < b->nbuckets; i++) {
        bus_channel_t *c;
        for (c = b->table[i]; c != NULL; c = c->next) {
            if (c->nsubs == 0 || c->cstate != R_NONE)
                continue;
            if (bus_channel_subscribe(b, c, 1) < 0)
                log_warning("bus: cannot resubscribe '%s'", c->name);
            else
                bus_core_catch_up(b, c); /* held behind the SUBSCRIBE */
        }
    }
    bus_mark_lost(b);
}

/* The answer to AUTH: a refusal is the operator's to fix, said plainly
 * (user name, never the password); the connections are dropped and tried
 * again with backoff. */
static void bus_auth_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    bus_t *b = ac->data;
    redisReply *reply = r;

    (void)privdata;
    if (b == NULL || b->freeing || reply == NULL || reply->type != REDIS_REPLY_ERROR)
        return;
    log_error("bus: Redis refused AUTH%s%s: %.200s (check the credentials in redis_url)",
              RD(b)->ruser != NULL ? " for user " : "", RD(b)->ruser != NULL ? RD(b)->ruser : "",
              reply->str);
    RD(b)->broken = "Redis refused AUTH";
}

static void bus_connect_cb(const redisAsyncContext *ac, int status)
{
    bus_t *b = ac->data;

    if (b == NULL || b->freeing || (ac != RD(b)->sub && ac != RD(b)->cmd))
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this returns. */
        bus_redis_down(b, ac, ac->errstr);
        return;
    }
    redisEnableKeepAlive((redisContext *)&ac->c);
    /* Credentials first, on each connection: what follows is queued behind
     * them (hiredis sends in order). */
    if (RD(b)->rpass != NULL &&
        (RD(b)->ruser != NULL ? redisAsyncCommand((redisAsyncContext *)ac, bus_auth_cb, NULL,
                                                  "AUTH %s %s", RD(b)->ruser, RD(b)->rpass)
                              : redisAsyncCommand((redisAsyncContext *)ac, bus_auth_cb, NULL,
                                                  "AUTH %s", RD(b)->rpass)) != REDIS_OK) {
        RD(b)->broken = "cannot send AUTH";
        return;
    }
    if (ac == RD(b)->sub)
        RD(b)->sub_ok = 1;
    else
        RD(b)->cmd_ok = 1;
    if (!RD(b)->sub_ok || !RD(b)->cmd_ok)
        return;
    /* hiredis still uses ac after this callback: failures here are left
     * to the tick, which drops the connections from outside. */
    if (RD(b)->rdb != 0 && redisAsyncCommand(RD(b)->cmd, bus_cmd_cb, (void *)(intptr_t)K_SELECT,
                                             "SELECT %d", RD(b)->rdb) != REDIS_OK) {
        RD(b)->broken = "cannot send SELECT";
        return;
    }
    if (bus_sub_command(b, "SUBSCRIBE", RD(b)->revoke, RD(b)->revokelen) < 0 ||
        bus_sub_command(b, "SUBSCRIBE", RD(b)->ctl, RD(b)->ctllen) < 0)
        RD(b)->broken = "cannot send SUBSCRIBE";
}

static void bus_disconnect_cb(const redisAsyncContext *ac, int status)
{
    bus_t *b = ac->data;

    (void)status;
    if (b == NULL || b->freeing || (ac != RD(b)->sub && ac != RD(b)->cmd))
        return;
    bus_redis_down(b, ac, ac->errstr[0] ? ac->errstr : "connection closed");
}

static redisAsyncContext *bus_redis_open(bus_t *b)
{
    redisAsyncContext *ac = redisAsyncConnect(RD(b)->rhost, RD(b)->rport);

    if (ac == NULL)
        return NULL;
    if (ac->err) {
        log_debug("bus: Redis connect: %s", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = b;
    if (redisLibeventAttach(ac, b->base) != REDIS_OK ||
        redisAsyncSetConnectCallback(ac, bus_connect_cb) != REDIS_OK ||
        redisAsyncSetDisconnectCallback(ac, bus_disconnect_cb) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        return NULL;
    }
    return ac;
}

static void bus_redis_connect(bus_t *b)
{
    RD(b)->attempt_at = bus_core_now();
    RD(b)->sub_ok = RD(b)->cmd_ok = 0;
    RD(b)->sub = bus_redis_open(b);
    RD(b)->cmd = RD(b)->sub != NULL ? bus_redis_open(b) : NULL;
    if (RD(b)->sub == NULL || RD(b)->cmd == NULL)
        bus_redis_down(b, NULL, "cannot start connecting");
}

static void bus_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    bus_redis_connect(arg);
}

/* Drop both connections (except `dying`, which hiredis is freeing) and
 * schedule the next attempt: backoff doubling from 100 ms to 5 s, +-20 %
 * jitter so that workers and hosts do not reconnect in step. */
static void bus_redis_down(bus_t *b, const redisAsyncContext *dying, const char *why)
{
    redisAsyncContext *sub = RD(b)->sub, *cmd = RD(b)->cmd;
    struct timeval tv;
    unsigned ms;
    size_t i;

    if (b->freeing || evtimer_pending(RD(b)->retry, NULL))
        return;
    RD(b)->sub = RD(b)->cmd = NULL;
    RD(b)->sub_ok = RD(b)->cmd_ok = 0;
    RD(b)->broken = NULL;
    if (RD(b)->up || RD(b)->down_at == 0) {
        RD(b)->down_at = bus_core_now();
        log_warning("bus: Redis at %s:%d unavailable (%s): publishes fail until it is back",
                    RD(b)->rhost, RD(b)->rport, why != NULL ? why : "?");
    } else {
        log_debug("bus: Redis still unavailable (%s)", why != NULL ? why : "?");
    }
    RD(b)->up = 0;
    for (i = 0; i < b->nbuckets; i++) {
        bus_channel_t *c = b->table[i], *next;
        for (; c != NULL; c = next) {
            next = c->next;
            bus_pending_clear(b, c);
            c->cstate = R_NONE;
            if (c->nsubs == 0)
                bus_core_drop(b, c);
        }
    }
    if (sub != NULL && sub != dying)
        redisAsyncFree(sub);
    if (cmd != NULL && cmd != dying)
        redisAsyncFree(cmd);
    ms = RD(b)->backoff_ms;
    ms = (unsigned)(ms * (0.8 + 0.4 * ((double)rand_r(&RD(b)->seed) / RAND_MAX)));
    RD(b)->backoff_ms =
        RD(b)->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS : RD(b)->backoff_ms * 2;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    if (evtimer_add(RD(b)->retry, &tv) < 0)
        log_error("bus: cannot schedule a Redis reconnect");
}

static void bus_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    bus_t *b = arg;
    double now = bus_core_now();
    int stalled = RD(b)->last_tick > 0 && now - RD(b)->last_tick > REDIS_PROBE_TIMEOUT / 2;
    char ttl[16];

    (void)fd;
    (void)what;
    RD(b)->last_tick = now;
    if (RD(b)->broken != NULL) {
        bus_redis_down(b, NULL, RD(b)->broken);
        return;
    }
    if (!RD(b)->up) {
        if ((RD(b)->sub != NULL || RD(b)->cmd != NULL) &&
            now - RD(b)->attempt_at > REDIS_CONNECT_TIMEOUT)
            bus_redis_down(b, NULL, "connect timed out");
        return;
    }
    if (RD(b)->probe_out) {
        /* A busy subscriber connection counts as alive even when the echo
         * is still queued behind messages; the command connection must
         * answer. A late tick means this loop stalled, not Redis. */
        int sub_alive = RD(b)->probe_sub_ok || now - RD(b)->sub_seen < REDIS_PROBE_TIMEOUT;
        if (RD(b)->probe_cmd_ok && RD(b)->probe_sub_ok) {
            RD(b)->probe_out = 0;
        } else if (stalled) {
            RD(b)->probe_at = now;
        } else if (now - RD(b)->probe_at > REDIS_PROBE_TIMEOUT &&
                   (!RD(b)->probe_cmd_ok || !sub_alive)) {
            bus_redis_down(b, NULL, "no answer to the liveness probe (half-open connection?)");
            return;
        }
    }
    if (!RD(b)->probe_out && now - RD(b)->probe_at >= REDIS_PROBE_EVERY) {
        /* Goes out on the command connection and comes back on the
         * subscriber one: proves both work end to end. */
        if (redisAsyncCommand(RD(b)->cmd, bus_cmd_cb, (void *)(intptr_t)K_PROBE, "PUBLISH %b p",
                              RD(b)->ctl, RD(b)->ctllen) == REDIS_OK) {
            RD(b)->probe_out = 1;
            RD(b)->probe_cmd_ok = RD(b)->probe_sub_ok = 0;
            RD(b)->probe_at = now;
        }
    }
    if (RD(b)->need_sync) {
        bus_sync_presence(b);
    } else if (now - RD(b)->heartbeat_at >= REDIS_HEARTBEAT_EVERY) {
        snprintf(ttl, sizeof(ttl), "%d", REDIS_HEARTBEAT_TTL);
        bus_eval_simple(b, K_HEARTBEAT, bus_lua_heartbeat, b->origin, ttl);
        RD(b)->heartbeat_at = now;
    }
    if (now - RD(b)->reap_at >= REDIS_REAP_EVERY) {
        bus_eval_simple(b, K_REAP, bus_lua_drop, "", "1");
        RD(b)->reap_at = now;
    }
}

/* Every reply of the subscriber connection lands here, whichever way
 * hiredis routes it (per-channel callbacks or the reply queue). */
/* "jti <id>" or "sub <sub> <before>" from the revocations channel. */
static void bus_redis_revocation(bus_t *b, const char *msg, size_t len)
{
    char buf[600], *kind, *value, *before, *save = NULL;

    if (len >= sizeof(buf) || b->hooks.on_revoke == NULL)
        return;
    memcpy(buf, msg, len);
    buf[len] = '\0';
    kind = strtok_r(buf, " ", &save);
    value = strtok_r(NULL, " ", &save);
    before = strtok_r(NULL, " ", &save);
    if (kind == NULL || value == NULL || (strcmp(kind, "jti") != 0 && strcmp(kind, "sub") != 0)) {
        log_debug("bus: skipped a malformed revocation");
        return;
    }
    b->hooks.on_revoke(b->hooks.arg, kind, value, before != NULL ? strtoll(before, NULL, 10) : 0);
}

typedef struct revoked_q {
    void (*cb)(void *arg, int revoked);
    void *arg;
    int64_t iat;
} revoked_q_t;

/* The reply to MGET rv:jti:<id> rv:sub:<sub>. */
static void bus_revoked_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    revoked_q_t *q = privdata;
    int revoked = 0;

    (void)ac;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        revoked = -1;
    } else {
        const redisReply *jti = reply->element[0], *sub = reply->element[1];
        if (jti->type == REDIS_REPLY_STRING)
            revoked = 1;
        if (sub->type == REDIS_REPLY_STRING && q->iat < strtoll(sub->str, NULL, 10))
            revoked = 1;
    }
    q->cb(q->arg, revoked);
    free(q);
}

static int redis_revoked(bus_t *b, const char *jti, const char *sub, int64_t iat,
                         void (*cb)(void *arg, int revoked), void *arg)
{
    revoked_q_t *q;
    char *kj, *ks;
    size_t lj, ls;
    int rc;

    if (RD(b)->cmd == NULL || !RD(b)->up)
        return -1;
    q = malloc(sizeof(*q));
    /* an absent jti asks for a key nobody sets (ids are not empty) */
    kj = bus_key(b, "rv:jti:", jti != NULL ? jti : "", &lj);
    ks = bus_key(b, "rv:sub:", sub, &ls);
    if (q == NULL || kj == NULL || ks == NULL) {
        free(q);
        free(kj);
        free(ks);
        return -1;
    }
    q->cb = cb;
    q->arg = arg;
    q->iat = iat;
    rc = redisAsyncCommand(RD(b)->cmd, bus_revoked_cb, q, "MGET %b %b", kj, lj, ks, ls) == REDIS_OK
             ? 0
             : -1;
    if (rc < 0)
        free(q);
    free(kj);
    free(ks);
    return rc;
}

static void bus_sub_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    bus_t *b = ac->data;
    redisReply *reply = r;
    const char *type, *name;
    size_t namelen, plen;
    bus_channel_t *c;

    (void)privdata;
    if (b == NULL || b->freeing || reply == NULL || ac != RD(b)->sub)
        return;
    RD(b)->sub_seen = bus_core_now();
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    type = reply->element[0]->str;
    name = reply->element[1]->str;
    namelen = reply->element[1]->len;
    if (namelen == RD(b)->revokelen && memcmp(name, RD(b)->revoke, namelen) == 0) {
        if (strcmp(type, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING)
            bus_redis_revocation(b, reply->element[2]->str, reply->element[2]->len);
        return;
    }
    if (namelen == RD(b)->ctllen && memcmp(name, RD(b)->ctl, namelen) == 0) {
        if (strcmp(type, "message") == 0)
            RD(b)->probe_sub_ok = 1;
        else if (strcmp(type, "subscribe") == 0 && !RD(b)->up)
            bus_redis_up(b);
        return;
    }
    plen = strlen(RD(b)->prefix) + 2;
    if (namelen < plen || memcmp(name, RD(b)->prefix, plen - 2) != 0 ||
        memcmp(name + plen - 2, "c:", 2) != 0)
        return;
    name += plen;
    namelen -= plen;
    if (strcmp(type, "message") == 0) {
        if (reply->element[2]->type == REDIS_REPLY_STRING)
            bus_core_deliver(b, name, namelen, reply->element[2]->str, reply->element[2]->len, NULL,
                             0);
        return;
    }
    c = bus_core_find(b, name, namelen, 0);
    if (c == NULL)
        return;
    if (strcmp(type, "subscribe") == 0 && c->cstate == R_SUBSCRIBING) {
        if (c->nsubs > 0) {
            c->cstate = R_SUBSCRIBED;
            bus_flush_pending(b, c);
        } else {
            bus_flush_pending(b, c);
            if (bus_channel_subscribe(b, c, 0) < 0)
                c->cstate = R_NONE;
        }
    } else if (strcmp(type, "unsubscribe") == 0 && c->cstate == R_UNSUBSCRIBING) {
        /* Resubscribing only now keeps one SUBSCRIBE/UNSUBSCRIBE in flight
         * per channel, which hiredis' per-channel callbacks need. */
        if (c->nsubs > 0) {
            if (bus_channel_subscribe(b, c, 1) < 0)
                c->cstate = R_NONE;
        } else {
            bus_flush_pending(b, c);
            c->cstate = R_NONE;
            bus_core_drop(b, c);
        }
    }
}

static int bus_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A percent-decoded copy of s[0..n) (passwords may hold reserved
 * characters), or NULL. */
static char *bus_url_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t i, o = 0;

    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        int hi = i + 2 < n ? bus_hexval(s[i + 1]) : -1, lo = i + 2 < n ? bus_hexval(s[i + 2]) : -1;
        if (s[i] == '%' && hi >= 0 && lo >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* Parse redis://[[user]:password@]host[:port][/db]. */
static int bus_parse_url(bus_t *b, const char *url)
{
    const char *p = url + 8, *colon, *slash, *at;
    size_t hostlen;

    if (strncmp(url, "redis://", 8) != 0)
        return -1;
    at = strrchr(p, '@');
    if (at != NULL) {
        const char *sep = memchr(p, ':', (size_t)(at - p));
        if (sep == NULL)
            return -1;
        if (sep > p && (RD(b)->ruser = bus_url_decode(p, (size_t)(sep - p))) == NULL)
            return -1;
        if ((RD(b)->rpass = bus_url_decode(sep + 1, (size_t)(at - sep - 1))) == NULL)
            return -1;
        p = at + 1;
    }
    slash = strchr(p, '/');
    colon = strchr(p, ':');
    if (colon != NULL && slash != NULL && colon > slash)
        colon = NULL;
    hostlen = colon != NULL ? (size_t)(colon - p) : slash != NULL ? (size_t)(slash - p) : strlen(p);
    RD(b)->rhost = strndup(hostlen > 0 ? p : "127.0.0.1", hostlen > 0 ? hostlen : 9);
    RD(b)->rport = colon != NULL ? atoi(colon + 1) : 6379;
    RD(b)->rdb = slash != NULL ? atoi(slash + 1) : 0;
    return RD(b)->rhost != NULL && RD(b)->rport > 0 && RD(b)->rport < 65536 ? 0 : -1;
}

/* Best effort at a clean exit: tell the deployment this worker's
 * subscribers are gone, with a short blocking connection (the event loop
 * has stopped by now). Otherwise the heartbeat bound applies. */
static void bus_redis_goodbye(bus_t *b)
{
    struct timeval tv = {0, 500 * 1000};
    redisContext *c;
    redisReply *r;
    char *hb;

    if (!RD(b)->ever_up)
        return;
    c = redisConnectWithTimeout(RD(b)->rhost, RD(b)->rport, tv);
    if (c == NULL || c->err || redisSetTimeout(c, tv) != REDIS_OK)
        goto done;
    if (RD(b)->rdb != 0 && (r = redisCommand(c, "SELECT %d", RD(b)->rdb)) != NULL)
        freeReplyObject(r);
    r = redisCommand(c, "EVAL %s 0 %s %s %s", bus_lua_drop, RD(b)->prefix, b->origin, "1");
    if (r != NULL)
        freeReplyObject(r);
    hb = bus_key(b, "hb:", b->origin, NULL);
    if (hb != NULL && (r = redisCommand(c, "DEL %s", hb)) != NULL)
        freeReplyObject(r);
    free(hb);
done:
    if (c != NULL)
        redisFree(c);
}

/* ------------------------------------------------------------------------
 * The carrier
 * ------------------------------------------------------------------------ */

static void redis_presence(bus_t *b, bus_channel_t *c, int delta)
{
    bus_presence_redis(b, c, delta, delta > 0 ? "subscribed" : "unsubscribed");
}

static void redis_move(bus_t *b, bus_channel_t *c, const char *from)
{
    char *cmd = NULL;
    int len;

    if (!RD(b)->up)
        return; /* registered in bulk when Redis is back */
    len = redisFormatCommand(&cmd, "EVAL %s 0 %s %s %s %s", bus_lua_move, RD(b)->prefix, from,
                             b->origin, c->name);
    if (len < 0 || bus_channel_command(b, c, K_PRESENCE, cmd, (size_t)len) < 0)
        log_warning("bus: cannot move a presence count of '%s' in Redis", c->name);
}

static void redis_joined(bus_t *b, bus_channel_t *c)
{
    if (RD(b)->up && c->cstate == R_NONE && bus_channel_subscribe(b, c, 1) < 0)
        log_warning("bus: cannot subscribe '%s' in Redis", c->name);
}

static int redis_emptied(bus_t *b, bus_channel_t *c)
{
    switch (c->cstate) {
    case R_SUBSCRIBED:
        if (bus_channel_subscribe(b, c, 0) < 0) {
            c->cstate = R_NONE;
            return 1;
        }
        return 0;
    case R_NONE:
        return 1;
    default:
        /* SUBSCRIBING: the confirmation sends the UNSUBSCRIBE and the
         * held presence messages; UNSUBSCRIBING: its reply drops c. */
        return 0;
    }
}

static void redis_channel_free(bus_t *b, bus_channel_t *c)
{
    bus_pending_clear(b, c);
    free(c->pending);
    c->pending = NULL;
    c->cappending = 0;
}

/* The change script's command for payload on channel name, in *cmd. */
static int bus_format_change(bus_t *b, char **cmd, const char *name, const char *payload,
                             size_t len)
{
    char size[24], ttl[24], mttl[24], epoch[BUS_EPOCH_MAX], now[24];
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(size, sizeof(size), "%zu", b->cfg->history_size);
    snprintf(ttl, sizeof(ttl), "%d", b->cfg->history_ttl);
    snprintf(mttl, sizeof(mttl), "%d", REDIS_META_TTL);
    snprintf(now, sizeof(now), "%lld", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    bus_core_new_epoch(epoch, sizeof(epoch));
    return redisFormatCommand(cmd, "EVAL %s 0 %s %s %b %s %s %s %s %s", bus_lua_change,
                              RD(b)->prefix, name, payload, len, size, ttl, mttl, epoch, now);
}

static int redis_publish(bus_t *b, const char *name, bus_channel_t *c, const char *payload,
                         size_t len, session_t *from, int marker)
{
    char *key, *cmd = NULL;
    bus_pub_t *pub;
    size_t keylen;
    int n;

    if (!RD(b)->up) {
        if (!marker) {
            b->failed_in_outage++; /* the outage itself was logged once by bus_redis_down */
            bus_lost_add(b, name);
        }
        return -1;
    }
    if (marker) {
        key = bus_key(b, "c:", name, &keylen);
        if (key == NULL)
            return -1;
        n = redisFormatCommand(&cmd, "PUBLISH %b %b", key, keylen, payload, len);
        free(key);
        return n < 0 ? -1 : bus_channel_command(b, c, K_MARKER, cmd, (size_t)n);
    }
    pub = malloc(sizeof(*pub) + strlen(name) + 1);
    if (pub == NULL)
        return -1;
    strcpy(pub->name, name);
    pub->from = NULL;
    n = bus_format_change(b, &cmd, name, payload, len);
    if (n < 0) {
        free(pub);
        return -1;
    }
    if (from != NULL) {
        pub->from = session_ref(from);
        session_publish_begin(from);
    }
    return bus_channel_command_ctx(b, c, K_PUBLISH, cmd, (size_t)n, pub);
}

static int redis_fetch(bus_t *b, bus_channel_t *c, uint64_t from, size_t max, size_t max_bytes,
                       void *ctx)
{
    char f[24], count[24], epoch[BUS_EPOCH_MAX], mttl[24], size[24], oldest[24], bytes[24];
    char *cmd = NULL;
    struct timespec ts;
    int n;

    if (!RD(b)->up) {
        bus_core_fetched(b, ctx, 0, NULL, 0, NULL, 0);
        return 0;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(f, sizeof(f), "%" PRIu64, from);
    snprintf(count, sizeof(count), "%zu", max);
    snprintf(bytes, sizeof(bytes), "%zu", max_bytes);
    snprintf(mttl, sizeof(mttl), "%d", REDIS_META_TTL);
    snprintf(size, sizeof(size), "%zu", b->cfg->history_size);
    snprintf(oldest, sizeof(oldest), "%lld",
             ((long long)ts.tv_sec - b->cfg->history_ttl) * 1000 + ts.tv_nsec / 1000000);
    bus_core_new_epoch(epoch, sizeof(epoch));
    n = redisFormatCommand(&cmd, "EVAL %s 0 %s %s %s %s %s %s %s %s %s", bus_lua_fetch,
                           RD(b)->prefix, c->name, f, count, epoch, mttl, size, oldest, bytes);
    if (n < 0) {
        bus_core_fetched(b, ctx, 0, NULL, 0, NULL, 0);
        return 0;
    }
    bus_channel_command_ctx(b, c, K_FETCH, cmd, (size_t)n, ctx); /* settles ctx on failure */
    return 0;
}

/* Mark the channels whose changes were lost in the outage (see lost). */
static void bus_mark_lost(bus_t *b)
{
    static const char lost[] = "{\"v\":1,\"m\":\"lost\"}";
    size_t i;

    if (RD(b)->nlost > 0)
        log_warning("bus: changes on %zu channel(s) were lost while Redis was away; their "
                    "subscribers are told to refetch",
                    RD(b)->nlost);
    for (i = 0; i < RD(b)->nlost; i++) {
        char *cmd = NULL;
        int n = bus_format_change(b, &cmd, RD(b)->lost[i], lost, sizeof(lost) - 1);
        if (n >= 0)
            bus_channel_command(b, bus_core_find(b, RD(b)->lost[i], strlen(RD(b)->lost[i]), 0),
                                K_PUBLISH, cmd, (size_t)n);
        free(RD(b)->lost[i]);
    }
    RD(b)->nlost = 0;
    RD(b)->lost_overflow = 0;
}

static int redis_ready(const bus_t *b) { return RD(b)->up; }

static const char *redis_id(const bus_t *b) { return b->origin; }

static void redis_free(bus_t *b)
{
    redis_t *r = b->cs;

    if (r == NULL)
        return;
    bus_redis_goodbye(b);
    if (r->sub != NULL)
        redisAsyncFree(r->sub);
    if (r->cmd != NULL)
        redisAsyncFree(r->cmd);
    if (r->tick != NULL)
        event_free(r->tick);
    if (r->retry != NULL)
        event_free(r->retry);
    while (r->nlost > 0)
        free(r->lost[--r->nlost]);
    free(r->lost);
    free(r->rhost);
    free(r->ctl);
    free(r->revoke);
    free(r->ruser);
    if (r->rpass != NULL) {
        memset(r->rpass, 0, strlen(r->rpass));
        free(r->rpass);
    }
    free(r);
    b->cs = NULL;
}

static const bus_carrier_t redis_ops = {
    .kind = "redis",
    .publish = redis_publish,
    .presence = redis_presence,
    .move = redis_move,
    .joined = redis_joined,
    .emptied = redis_emptied,
    .channel_free = redis_channel_free,
    .ready = redis_ready,
    .connected = redis_ready,
    .id = redis_id,
    .revoked = redis_revoked,
    .fetch = redis_fetch,
    .free = redis_free,
};

int bus_redis_init(bus_t *b)
{
    struct timeval tick = {0, REDIS_TICK_MS * 1000};
    redis_t *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return -1;
    b->ops = &redis_ops;
    b->cs = r;
    r->seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    r->prefix = b->cfg->redis_prefix != NULL ? b->cfg->redis_prefix : "dnoded:";
    if (bus_parse_url(b, b->cfg->redis_url) < 0) {
        log_error("bus: bad redis_url (not shown: it may hold a password)");
        return -1;
    }
    snprintf(b->carrier, sizeof(b->carrier), "redis %s:%d/%d %s", r->rhost, r->rport, r->rdb,
             r->prefix);
    r->ctl = bus_key(b, "w:", b->origin, &r->ctllen);
    r->revoke = bus_key(b, "revoke", "", &r->revokelen);
    r->tick = event_new(b->base, -1, EV_PERSIST, bus_tick_cb, b);
    r->retry = evtimer_new(b->base, bus_retry_cb, b);
    if (r->ctl == NULL || r->revoke == NULL || r->tick == NULL || r->retry == NULL ||
        event_add(r->tick, &tick) < 0)
        return -1;
    r->backoff_ms = REDIS_BACKOFF_MIN_MS;
    bus_redis_connect(b); /* failures retry on the timer */
    return 0;
}

/* A blocking connection to the Redis of cfg for the command line (-r, -t):
 * parsed URL in *r (the caller frees its strings), connected, AUTH sent
 * when the URL has a password, the database selected. 0; -1 with err when
 * Redis answered with a refusal (AUTH, SELECT); -2 when it cannot be
 * reached or the URL is bad. */
static int redis_sync_open(const config_t *cfg, bus_t *fake, redis_t *r, redisContext **out,
                           char *err, size_t errlen)
{
    struct timeval tv = {3, 0};
    redisContext *ctx;
    redisReply *reply;

    memset(fake, 0, sizeof(*fake));
    memset(r, 0, sizeof(*r));
    fake->cs = r;
    *out = NULL;
    r->prefix = cfg->redis_prefix != NULL ? cfg->redis_prefix : "";
    if (bus_parse_url(fake, cfg->redis_url) < 0) {
        snprintf(err, errlen, "bad redis_url");
        return -2;
    }
    ctx = redisConnectWithTimeout(r->rhost, r->rport, tv);
    if (ctx == NULL || ctx->err) {
        snprintf(err, errlen, "cannot reach Redis at %s:%d: %s", r->rhost, r->rport,
                 ctx != NULL ? ctx->errstr : "out of memory");
        if (ctx != NULL)
            redisFree(ctx);
        return -2;
    }
    *out = ctx;
    if (r->rpass != NULL) {
        reply = r->ruser != NULL ? redisCommand(ctx, "AUTH %s %s", r->ruser, r->rpass)
                                 : redisCommand(ctx, "AUTH %s", r->rpass);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "Redis refused AUTH%s%s: %.200s", r->ruser ? " as user " : "",
                     r->ruser ? r->ruser : "", reply != NULL ? reply->str : ctx->errstr);
            freeReplyObject(reply);
            return reply != NULL ? -1 : -2;
        }
        freeReplyObject(reply);
    }
    if (r->rdb != 0) {
        reply = redisCommand(ctx, "SELECT %d", r->rdb);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "Redis refused SELECT %d: %.200s", r->rdb,
                     reply != NULL ? reply->str : ctx->errstr);
            freeReplyObject(reply);
            return reply != NULL ? -1 : -2;
        }
        freeReplyObject(reply);
    }
    return 0;
}

static void redis_sync_close(redis_t *r, redisContext *ctx)
{
    if (ctx != NULL)
        redisFree(ctx);
    free(r->rhost);
    free(r->ruser);
    free(r->rpass);
}

int bus_redis_check(const config_t *cfg, char *err, size_t errlen)
{
    bus_t fake;
    redis_t r;
    redisContext *ctx;
    int rc;

    if (cfg->redis_url == NULL || cfg->redis_url[0] == '\0')
        return 0;
    rc = redis_sync_open(cfg, &fake, &r, &ctx, err, errlen);
    redis_sync_close(&r, ctx);
    return rc;
}

int bus_redis_revoke(const config_t *cfg, const char *kind, const char *value, char *err,
                     size_t errlen)
{
    bus_t fake;
    redis_t r;
    redisContext *ctx = NULL;
    redisReply *reply;
    char when[32], *key = NULL, *chan = NULL, *msg = NULL;
    int rc = -1;

    if (cfg->redis_url == NULL || cfg->redis_url[0] == '\0') {
        snprintf(err, errlen, "revocations need redis_url (they are kept in Redis)");
        return -1;
    }
    if (value[0] == '\0' || strchr(value, ' ') != NULL || strlen(value) > 400) {
        snprintf(err, errlen, "a %s to revoke is a word of at most 400 bytes", kind);
        return -1;
    }
    if (redis_sync_open(cfg, &fake, &r, &ctx, err, errlen) < 0)
        goto out;
    /* a revocation of a sub covers what was issued up to this second */
    snprintf(when, sizeof(when), "%lld", (long long)time(NULL) + (strcmp(kind, "sub") == 0));
    if (asprintf(&key, "%srv:%s:%s", r.prefix, kind, value) < 0)
        key = NULL;
    if (asprintf(&chan, "%srevoke", r.prefix) < 0)
        chan = NULL;
    if (asprintf(&msg, "%s %s %s", kind, value, when) < 0)
        msg = NULL;
    if (key == NULL || chan == NULL || msg == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    reply = redisCommand(ctx, "SET %s %s EX %d", key, when, cfg->auth_revocation_ttl);
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "Redis refused the revocation: %s",
                 reply != NULL ? reply->str : ctx->errstr);
        freeReplyObject(reply);
        goto out;
    }
    freeReplyObject(reply);
    reply = redisCommand(ctx, "PUBLISH %s %s", chan, msg);
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "the revocation is stored but could not be broadcast");
        freeReplyObject(reply);
        goto out;
    }
    freeReplyObject(reply);
    rc = 0;
out:
    redis_sync_close(&r, ctx);
    free(key);
    free(chan);
    free(msg);
    return rc;
}
