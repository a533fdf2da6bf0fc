/* model_validate: client documents cast and validated against their model
 * as Mongoose does it (create and update), and client _ids. Reads the
 * schema (model_types), casts through model_cast; does no database I/O. */
#ifndef DNODED_MODEL_VALIDATE_H
#define DNODED_MODEL_VALIDATE_H

#include <bson/bson.h>

#include "model_types.h"

/* Errors: every function below that fails returns NULL / -1 and sets *error
 * to a new error object (error.h), e.g.
 * {"name":"ValidationError","message":"todo validation failed",
 *  "errors":{"title":{"kind":"required","path":"title","message":"..."}}}
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

#endif
