/* model: the model schemas of the models file. Loads and checks the file
 * and looks models up; with a loaded model, model_validate casts and
 * validates documents the way Mongoose does, model_query turns client
 * filters, sorts and projections into safe BSON, and model_cast turns
 * stored documents into JSON (this header includes all three for callers).
 * Pure: no I/O besides reading the models file, no libmongoc, thread-safe
 * once loaded (the DB threads call it concurrently).
 *
 * The model files, lowest first (a file includes only those before it):
 *   model_types.h   the schema's data structures (no .c)
 *   model_regex     "match"/$regex translation and cost guards
 *   model_cast      JavaScript-compatible casts, dates, JSON <-> BSON
 *   model_validate  documents cast and validated (create, update, _id)
 *   model_query     the filter/sort/projection sanitizer
 *   model           the models file and the model set (this header) */
#ifndef DNODED_MODEL_H
#define DNODED_MODEL_H

#include <bson/bson.h>
#include <stddef.h>

#include "json.h"
#include "model_access.h"
#include "model_cast.h"
#include "model_query.h"
#include "model_types.h"
#include "model_validate.h"

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

#endif
