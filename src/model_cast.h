/* model_cast: JavaScript-compatible casts of client values to a path's
 * type (Numbers, Booleans, Dates, ObjectIds and Strings the way Mongoose
 * casts them), the Date and Number text forms, JSON into BSON, and stored
 * BSON back to the JSON a client sees. Knows types, not schemas: it neither
 * validates documents (model_validate) nor reads queries (model_query). */
#ifndef DNODED_MODEL_CAST_H
#define DNODED_MODEL_CAST_H

#include <bson/bson.h>
#include <stdbool.h>

#include "model_types.h"

typedef enum { CV_NULL, CV_STRING, CV_NUMBER, CV_BOOL, CV_DATE, CV_OID } cv_kind_t;

/* One cast scalar. s points into the input or into buf. */
typedef struct cval {
    cv_kind_t kind;
    const char *s;
    size_t slen;
    char buf[40];
    double d;
    int b;
    int64_t ms;
    bson_oid_t oid;
} cval_t;

/* The schema name of a type ("String", "Number", ...). */
const char *model_cast_type_name(ftype_t t);

/* v as a short text for error messages (strings as they are, the rest as
 * JSON), truncated to n bytes. */
void model_cast_value_text(const json_t *v, char *buf, size_t n);
/* Length as JavaScript's String.prototype.length counts it (UTF-16 units). */
size_t model_cast_utf16_length(const char *s, size_t len);
/* Whether c is white space as JavaScript's Number() trims it. */
int model_cast_is_space(char c);
/* d as JavaScript's String(d) writes it. */
void model_cast_format_number(double d, char *out, size_t n);
/* A JSON number as a double. */
double model_cast_num(const json_t *v);
/* A JSON number that is an integer in [lo, hi]: 0 with *out, else -1. */
int model_cast_integer(const json_t *v, int64_t lo, int64_t hi, int64_t *out);
/* ms since the epoch as ISO-8601 (UTC, milliseconds, 'Z'). */
void model_cast_format_date(int64_t ms, char *out, size_t n);
/* The current time in ms since the epoch. */
int64_t model_cast_now_ms(void);
/* Casts of v to a Date, or to scalar type t: 0 with *out, -1 when v cannot
 * be cast. */
int model_cast_date(const json_t *v, cval_t *out);
int model_cast_scalar(ftype_t t, const json_t *v, cval_t *out);
/* Append a cast value, or any JSON value (Mixed), under key. The latter
 * refuses keys that start with '$' or hold '.' (*badkey names one): 0 or
 * -1. */
bool model_cast_append_value(bson_t *b, const char *key, const cval_t *c);
int model_cast_safe_key(const char *k);
int model_cast_append_json(bson_t *b, const char *key, const json_t *v, const char **badkey);
/* The BSON value at it as JSON (as model_to_json does for a document). */
json_t *model_cast_bson_iter(bson_iter_t *it);

/* A stored document as the client sees it: _id as 24-hex string, dates as
 * ISO-8601 strings (UTC, milliseconds, 'Z'), ObjectIds as hex, numbers as
 * numbers, __v kept. Returns a new tree or NULL on allocation failure. */
json_t *model_to_json(const bson_t *doc);

#endif
