/* dnode: the DNode protocol without I/O. Turns one received line into a
 * request (method name or callback id, arguments with callbacks as
 * JSON_CALLBACK nodes and links applied), and builds outgoing lines
 * (scrubbing JSON_CALLBACK nodes into the callbacks map). Knows nothing of
 * sessions, sockets or the backbone-dnode methods. */
#ifndef DNODED_DNODE_H
#define DNODED_DNODE_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"

/* Upper bound on callback ids we accept from peers; dnode clients count up
 * from 0 per connection, so anything past this is garbage or abuse. */
#define DNODE_MAX_CALLBACK_ID 9007199254740991LL /* 2^53 - 1 */

/* Most entries a message's callbacks map may have when dnode_parse is used;
 * more are refused before any is applied. Sessions parse with
 * dnode_parse_capped and what is left of max_callbacks when that is more. */
#define DNODE_MAX_CALLBACKS 1024

typedef struct dnode_msg {
    char *method;      /* named method ("methods", "cull", "create", ...), or NULL */
    int64_t method_id; /* when method is NULL: a callback id of the receiver */
    json_t *args;      /* a JSON_ARRAY; owned by the message */
    size_t ncallbacks; /* JSON_CALLBACK nodes placed into args */
} dnode_msg_t;

/* Parse one message (without its line terminator). On success fills msg
 * (free with dnode_msg_clear) and returns 0. On failure returns -1 with a
 * one-line reason in err: malformed JSON, not an object, a bad method field,
 * arguments not an array, a callbacks entry whose id or path is invalid
 * (paths may use string or integer elements and must lead through existing
 * objects/arrays), or a link that is malformed or circular (a circular
 * structure has no JSON form, so it is refused rather than cut). */
int dnode_parse(const char *line, size_t len, size_t max_depth, dnode_msg_t *msg, char *err,
                size_t errlen);
/* dnode_parse with the callbacks map capped at max_callbacks entries
 * (dnode_parse uses DNODE_MAX_CALLBACKS): a larger map is refused, with
 * "too many callbacks" in err, before any entry is applied. */
/* A message dnode_parse refused for a key holding a NUL byte, parsed
 * without the members such keys name, so that its callbacks can be told
 * it was refused. 0 with msg, or -1. */
int dnode_parse_salvage(const char *line, size_t len, size_t max_depth, size_t max_callbacks,
                        dnode_msg_t *msg);
int dnode_parse_capped(const char *line, size_t len, size_t max_depth, size_t max_callbacks,
                       dnode_msg_t *msg, char *err, size_t errlen);
void dnode_msg_clear(dnode_msg_t *msg);

/* Build one outgoing message, newline-terminated, into a new malloc'd
 * buffer. method names the remote method, or is NULL to call the remote
 * callback method_id. args must be a JSON_ARRAY; each JSON_CALLBACK node in
 * it becomes a "[Function]" placeholder and an entry of the callbacks map
 * with its path (elements as strings, as the reference implementation sends
 * them). Returns NULL on allocation failure. */
char *dnode_build(const char *method, int64_t method_id, const json_t *args, size_t *len);

/* dnode_build into b: appends the same bytes (newline included, no NUL),
 * so a caller can write a message after a header of its own in one
 * buffer. 0, or -1 on allocation failure (b->data stays the caller's). */
int dnode_build_append(json_buf_t *b, const char *method, int64_t method_id, const json_t *args);

/* The first message a peer sends: "methods" with an object whose members
 * names[i] are callbacks with ids 0..n-1. */
char *dnode_build_methods(const char *const *names, size_t n, size_t *len);

/* Return the JSON_CALLBACK id at args[index] (when it is a callback), or -1. */
int64_t dnode_arg_callback(const json_t *args, size_t index);

#endif
