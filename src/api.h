/* api: the backbone-dnode methods. Checks arguments, calls model, store and
 * bus, and answers through the caller's callbacks. Owns no connection
 * state (session) and no wire format (dnode). */
#ifndef DNODED_API_H
#define DNODED_API_H

#include <stddef.h>

#include "json.h"
#include "session.h"

/* Our methods in the order of their callback ids (0..n-1). */
extern const char *const api_method_names[];
extern const size_t api_method_count;

/* Index of a method name, or -1. */
int api_method_index(const char *name);

/* Run method idx with args (ownership passes to api), which hold
 * ncallbacks of the client's callbacks: an operation that waits for the
 * database counts them in s->callbacks_held until it completes. */
void api_call(session_t *s, int idx, json_t *args, size_t ncallbacks);

/* Report an error object (takes ownership) to the caller: opt.error when
 * it is a callback, else the client's exported error method, else the log. */
void api_report_error(session_t *s, int64_t error_cb, json_t *error);

#endif
