/* error: the wire API's error vocabulary. One enum for the names a client
 * sees in an error object ({name, message[, errors]}) and one constructor
 * for that object, so every module reports errors the same way and metrics
 * counts them by code rather than by string. Knows JSON values, nothing of
 * sessions or of who receives the object. */
#ifndef DNODED_ERROR_H
#define DNODED_ERROR_H

#include <stdarg.h>

#include "json.h"

typedef enum {
    /* Top-level names: the `name` of an error object handed to a callback. */
    ERROR_INVALID_REQUEST, /* malformed message, bad arguments, forbidden operator */
    ERROR_VALIDATION,      /* a document failed its model (see `errors`) */
    ERROR_NOT_FOUND,       /* no document with that _id */
    ERROR_FORBIDDEN,       /* the rules refuse it */
    ERROR_UNAUTHORIZED,    /* a token refused, or none where one is required */
    ERROR_CONFLICT,        /* duplicate key, version conflict */
    ERROR_DATABASE,        /* the database failed the operation */
    ERROR_UNAVAILABLE,     /* the database cannot be reached */
    ERROR_TOP_COUNT,
    /* Per-path names inside a ValidationError's `errors` (Mongoose's). */
    ERROR_VALIDATOR = ERROR_TOP_COUNT, /* a validator (required, min, enum, ...) failed */
    ERROR_CAST,                        /* the value cannot be cast to the path's type */
    ERROR_COUNT
} error_code_t;

/* The wire name of code ("InvalidRequest", ...); "Error" for a code out of
 * range. */
const char *error_name(error_code_t code);
/* The code of a wire name, or -1 for a name that is not ours. */
int error_code(const char *name);
/* The top-level code of an error object (its `name`), or -1 when it has
 * none of ours. */
int error_code_of(const json_t *error);

/* {name, message[, errors]}: message is printf-formatted (at most 511
 * bytes are kept); errors (taken, may be NULL) becomes the `errors` member.
 * NULL on allocation failure (errors is freed then). */
json_t *error_new(error_code_t code, json_t *errors, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
json_t *error_newv(error_code_t code, json_t *errors, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
