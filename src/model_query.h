/* model_query: client filters, sorts and projections turned into safe
 * BSON: schema paths only, an allowlist of operators, values cast to each
 * path's type, limits on size, depth and regex length. This is the
 * security boundary between clients and the database; it reads the schema
 * (model_types) and casts through model_cast. */
#ifndef DNODED_MODEL_QUERY_H
#define DNODED_MODEL_QUERY_H

#include <bson/bson.h>

#include "model_types.h"

/* Sanitize a client filter (opt.query): only schema paths (dotted paths into
 * nested objects allowed) and _id, only the allowlisted operators, values cast
 * to the path's type, limits enforced. NULL/absent query gives {}.
 * Returns a new bson_t, or NULL with *error (InvalidRequest naming the
 * operator or path). */
bson_t *model_sanitize_filter(const model_t *m, const json_t *query, const model_limits_t *lim,
                              json_t **error);

/* opt.sorting -> sort document, limit and skip. sort in any of three forms:
 * [["field", -1]], {"field": -1}, "-field other". limit is capped at
 * lim->max_read_limit (0 or absent means the cap). */
typedef struct model_sorting {
    bson_t *sort; /* never NULL; may be empty */
    int64_t limit;
    int64_t skip;
} model_sorting_t;
int model_sanitize_sorting(const model_t *m, const json_t *sorting, const model_limits_t *lim,
                           model_sorting_t *out, json_t **error);
void model_sorting_clear(model_sorting_t *s);

/* opt.fields in three forms: ["a","b"], "a b -c", {"a":1}. 0/1 only, known
 * paths only. Returns a new projection (possibly empty = everything). */
bson_t *model_sanitize_fields(const model_t *m, const json_t *fields, json_t **error);

/* Whether a dotted path names a field of m (or _id), as a filter may. */
int model_path_known(const model_t *m, const char *path);

#endif
