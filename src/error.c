/* error: names and constructor of the wire API's error objects (see
 * error.h). */
#include "error.h"

#include <stdio.h>
#include <string.h>

static const char *const error_names[ERROR_COUNT] = {
    [ERROR_INVALID_REQUEST] = "InvalidRequest",
    [ERROR_VALIDATION] = "ValidationError",
    [ERROR_NOT_FOUND] = "NotFound",
    [ERROR_FORBIDDEN] = "Forbidden",
    [ERROR_UNAUTHORIZED] = "Unauthorized",
    [ERROR_CONFLICT] = "Conflict",
    [ERROR_DATABASE] = "DatabaseError",
    [ERROR_UNAVAILABLE] = "Unavailable",
    [ERROR_VALIDATOR] = "ValidatorError",
    [ERROR_CAST] = "CastError",
};

const char *error_name(error_code_t code)
{
    return (unsigned)code < ERROR_COUNT ? error_names[code] : "Error";
}

int error_code(const char *name)
{
    int i;

    for (i = 0; name != NULL && i < ERROR_COUNT; i++)
        if (strcmp(name, error_names[i]) == 0)
            return i;
    return -1;
}

int error_code_of(const json_t *error)
{
    int code = error_code(json_get_string(error, "name"));

    return code >= 0 && code < ERROR_TOP_COUNT ? code : -1;
}

json_t *error_newv(error_code_t code, json_t *errors, const char *fmt, va_list ap)
{
    char message[512];
    json_t *e = json_object();

    vsnprintf(message, sizeof(message), fmt, ap);
    if (e == NULL || json_object_set(e, "name", json_string(error_name(code))) < 0 ||
        json_object_set(e, "message", json_string(message)) < 0)
        goto fail;
    if (errors != NULL) {
        json_t *tmp = errors;

        errors = NULL;
        if (json_object_set(e, "errors", tmp) < 0)
            goto fail;
    }
    return e;
fail:
    json_free(errors);
    json_free(e);
    return NULL;
}

json_t *error_new(error_code_t code, json_t *errors, const char *fmt, ...)
{
    va_list ap;
    json_t *e;

    va_start(ap, fmt);
    e = error_newv(code, errors, fmt, ap);
    va_end(ap);
    return e;
}
