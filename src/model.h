/* model: the model schemas of the models file. Loads and checks the file,
 * validates and casts documents the way Mongoose does, and turns client
 * filters, sorts and projections into safe BSON. Pure: no I/O besides
 * reading the models file, no libmongoc, thread-safe once loaded (the DB
 * threads call it concurrently). */
#ifndef DNODED_MODEL_H
#define DNODED_MODEL_H

#include <bson/bson.h>
#include <stddef.h>

#include "json.h"

typedef struct model_set model_set_t; /* every model of one models file */
typedef struct model model_t;         /* one model type */

/* Limits a query must respect (from the config). A field left 0 takes the
 * default shown; a NULL limits pointer means all defaults. */
typedef struct model_limits {
    size_t max_read_limit;  /* cap on documents per read (config max_read_limit), 1000 */
    size_t max_query_depth; /* nesting of filter objects/arrays (top object = 1), 8 */
    size_t max_query_terms; /* total keys + array elements in a filter, 256 */
    size_t max_regex_length; /* bytes of a $regex, 256 */
} model_limits_t;

/* Load and check a models file. On error returns NULL and writes one line
 * naming the model and field concerned into err. "match" patterns are POSIX
 * extended regular expressions (glibc regcomp) after \d, \D and the bracket
 * forms of \d \s \w are rewritten; ["pattern", "i"] matches without case. */
model_set_t *model_set_load(const char *path, char *err, size_t errlen);
/* Same from a JSON text already in memory (tests, fuzzing). */
model_set_t *model_set_parse(const char *text, size_t len, char *err, size_t errlen);
void model_set_free(model_set_t *set);

const model_t *model_set_find(const model_set_t *set, const char *type);
size_t model_set_count(const model_set_t *set);
const model_t *model_set_at(const model_set_t *set, size_t i);

const char *model_name(const model_t *m);
const char *model_collection(const model_t *m); /* explicit or Mongoose plural */
int model_versioned(const model_t *m);          /* "versioned": true */

/* Mongoose's pluralization of a model name ("person" -> "people",
 * "blog" -> "blogs", "Todo" -> "todos"). Returns a malloc'd string. */
char *model_pluralize(const char *name);

/* Index specs to ensure at start: for each field with "index" or "unique",
 * *keys gets {path: 1} and *unique says whether it is unique. Returns the
 * number of indexes; i in [0, n). */
size_t model_index_count(const model_t *m);
int model_index_at(const model_t *m, size_t i, const char **path, int *unique);

/* Errors: every function below that fails returns NULL / -1 and sets *error
 * to a new error object of ARCHITECTURE.md, e.g.
 * {"name":"ValidationError","message":"todo validation failed",
 *  "errors":{"title":{"kind":"required","path":"title","message":"..."}}}
 * or {"name":"InvalidRequest","message":"operator $where is not allowed"}.
 * The caller owns *error. */

/* A new document from client data: refuses data carrying _id
 * (InvalidRequest), drops unknown fields, casts, applies defaults
 * ("now" for dates), validates every path (all failures listed). The result
 * has a fresh ObjectId _id first and __v: 0. Caller owns the bson_t. */
bson_t *model_prepare_create(const model_t *m, const json_t *data, json_t **error);

/* An update: merge the schema paths present in data (unknown fields and _id,
 * __v ignored) over the stored document `current`, cast and validate the
 * result as a whole. A nested object sent in data replaces the stored one
 * (Mongoose's set). Returns the full new document (same _id, __v as in
 * current or 0 when it has none; the store increments __v; stored fields the
 * schema does not know are kept) or NULL with *error. */
bson_t *model_prepare_update(const model_t *m, const bson_t *current, const json_t *data,
                             json_t **error);

/* Cast a client _id (24-hex string, or {"$oid": ...}) to an ObjectId.
 * Returns 0, or -1 with *error (InvalidRequest). */
int model_cast_id(const json_t *id, bson_oid_t *out, json_t **error);

/* Sanitize a client filter (opt.query): only schema paths (dotted paths into
 * nested objects allowed) and _id, only the allowlisted operators, values cast
 * to the path's type, limits enforced. NULL/absent query gives {}.
 * Returns a new bson_t, or NULL with *error (InvalidRequest naming the
 * operator or path). */
bson_t *model_sanitize_filter(const model_t *m, const json_t *query,
                              const model_limits_t *lim, json_t **error);

/* opt.sorting -> sort document, limit and skip. sort in any of three forms:
 * [["field", -1]], {"field": -1}, "-field other". limit is capped at
 * lim->max_read_limit (0 or absent means the cap). */
typedef struct model_sorting {
    bson_t *sort; /* never NULL; may be empty */
    int64_t limit;
    int64_t skip;
} model_sorting_t;
int model_sanitize_sorting(const model_t *m, const json_t *sorting,
                           const model_limits_t *lim, model_sorting_t *out, json_t **error);
void model_sorting_clear(model_sorting_t *s);

/* opt.fields in three forms: ["a","b"], "a b -c", {"a":1}. 0/1 only, known
 * paths only. Returns a new projection (possibly empty = everything). */
bson_t *model_sanitize_fields(const model_t *m, const json_t *fields, json_t **error);

/* A stored document as the client sees it: _id as 24-hex string, dates as
 * ISO-8601 strings (UTC, milliseconds, 'Z'), ObjectIds as hex, numbers as
 * numbers, __v kept. Returns a new tree or NULL on allocation failure. */
json_t *model_to_json(const bson_t *doc);

/* Build an error object {"name":name,"message":message[,"errors":errors]};
 * takes ownership of errors (may be NULL). */
json_t *model_error_new(const char *name, const char *message, json_t *errors);

#endif
