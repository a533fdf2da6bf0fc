/* model_access: what the models file's permissions allow a session whose
 * token claims are `auth` (NULL: anonymous). Per-model rules for create,
 * read, update and delete, as in-memory checks and as database filters;
 * the fields' readonly, hidden and set_from; the options a push may carry;
 * and the "$channels" rules. Pure, like the rest of the model files. A
 * model without "rules" allows every operation (as before rules existed);
 * a model with "rules" refuses the operations they leave out. */
#ifndef DNODED_MODEL_ACCESS_H
#define DNODED_MODEL_ACCESS_H

#include <bson/bson.h>

#include "json.h"
#include "model_types.h"
#include "rule.h"

/* Whether the file has any rules (models' or channels'). */
int model_set_has_rules(const model_set_t *set);
int model_has_rules(const model_t *m);

/* The Forbidden error for op on m ("todo: read is not allowed"). */
json_t *model_access_forbidden(const model_t *m, model_op_t op);

/* In memory: whether op may be done on doc (create, read, delete) or from
 * old to new (update). 1 allowed, 0 not. */
int model_access_check(const model_t *m, model_op_t op, const json_t *auth, const json_t *doc,
                       const json_t *old, const json_t *new_);

/* The rule of op as a filter on the stored document (read, delete; update
 * with new_ known), for auth. RULE_ALL: no filter needed; RULE_NONE: no
 * document can match; RULE_SOME: *filter is a sanitized BSON filter (the
 * caller destroys it). On failure (*error set) returns RULE_NONE. */
rule_match_t model_access_filter(const model_t *m, model_op_t op, const json_t *auth,
                                 const json_t *new_, bson_t **filter, json_t **error);

/* create: fills each set_from field of data (an object, changed in place)
 * from auth, over whatever the client sent. -1 with a Forbidden *error
 * when a claim it needs is absent (an anonymous session, say). */
int model_access_prepare_create(const model_t *m, const json_t *auth, json_t *data, json_t **error);
/* update: drops the readonly and set_from fields from data, so that the
 * stored values stay. */
void model_access_prepare_update(const model_t *m, json_t *data);

/* Removes from doc (changed in place) the fields auth may not see. */
void model_access_hide(const model_t *m, const json_t *auth, json_t *doc);
/* Whether some field could be hidden from some client: documents then go
 * through model_access_hide. */
int model_access_hides(const model_t *m);
/* A read's query, sorting and fields may not name a field hidden from
 * auth (a filter on it would tell its value): 0, or -1 with *error. */
int model_access_query(const model_t *m, const json_t *auth, const json_t *opt, json_t **error);

/* Whether a write of m may ask for no push ("silent"); where not, the
 * change is pushed anyway. */
int model_access_silent(const model_t *m);
/* Whether an option key is pushed with m's changes: url, type, method,
 * client and cid (the browser client's own), and the model's
 * push_options. m NULL: those five only. */
int model_access_push_option(const model_t *m, const char *key);

typedef enum { MODEL_SUBSCRIBE, MODEL_PUBLISH, MODEL_PRESENCE } model_channel_op_t;
/* Whether auth may op on channel. A file without rules: everything.
 * Rules but no "$channels": everything but a publish. With "$channels":
 * the first entry that matches decides (its missing subscribe is allowed,
 * publish refused, presence as subscribe), and a channel no entry matches
 * is refused. */
int model_access_channel(const model_set_t *set, const char *channel, const json_t *auth,
                         model_channel_op_t op);

#endif
