/* api: the backbone-dnode methods (create, read, update, delete,
 * subscribe, unsubscribe, publish). Checks arguments, calls model, store
 * and bus, and answers through the caller's callbacks. Owns no connection
 * state (session, conn) and no wire format (dnode). */
#ifndef DNODED_API_H
#define DNODED_API_H

#include <stddef.h>

#include "auth.h"
#include "bus.h"
#include "config.h"
#include "json.h"
#include "metrics.h"
#include "model.h"
#include "session.h"

struct store;

/* What the methods work with (the worker's; all outlive the api). */
typedef struct api {
    const config_t *cfg;
    metrics_slot_t *stats;
    const model_set_t *models; /* NULL: no models loaded */
    const auth_t *auth;        /* token keys; NULL or none: every session anonymous */
    struct store *store;       /* NULL: no database configured */
    bus_t *bus;
} api_t;

/* Our methods in the order of their callback ids (0..n-1). */
extern const char *const api_method_names[];
extern const size_t api_method_count;

/* Run method idx (an index into api_method_names) for s with args (taken),
 * which hold ncallbacks of the client's callbacks: an operation that
 * waits for the database counts them in s (session_op_begin) until it
 * completes. */
void api_call(api_t *api, session_t *s, int idx, json_t *args, size_t ncallbacks);

/* Once a second for each session (the worker's sweep): closes one that
 * has not authenticated within auth_timeout (auth_anonymous = deny), tells
 * one whose token nears exp authExpiring(seconds), and closes one whose
 * token expired auth_grace ago. now: seconds since the epoch; age_s: how
 * long the connection has been open. */
void api_sweep(api_t *api, session_t *s, int64_t now, uint64_t age_s);

/* A session that started with a token from the WebSocket upgrade: held
 * (nothing taken from it) until the revocation store says the token is
 * not revoked; closed if it is. */
void api_check_offered(api_t *api, session_t *s);
/* Whether a revocation (kind "jti" or "sub", see bus_hooks_t.on_revoke)
 * covers s's token. */
int api_revoke_matches(const session_t *s, const char *kind, const char *value, int64_t before);

/* The bus' on_joined hook (bus_hooks_t; arg an api_t): answers a
 * subscribe(url, opts, fn) with fn(null, {epoch, offset[, recovered]}),
 * and a subscribe(url, fn) with fn(null). */
void api_joined(void *arg, session_t *s, const char *channel, int64_t token, const char *epoch,
                uint64_t offset, int recovered, int detail);

/* The bus' filter hook (bus_hooks_t.filter, arg an api_t): what a
 * subscriber may see of a push under the models file's permissions. */
int api_push_filter(void *arg, const session_t *s, const char *channel, int *which,
                    const char *type, const json_t *doc, const json_t *old, json_t **custom);

#endif
