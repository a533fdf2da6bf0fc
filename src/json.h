/* json: the in-memory JSON tree every module passes around (parse with yajl,
 * serialize with our own writer). It also carries one non-JSON node kind,
 * JSON_CALLBACK, which stands for a DNode callback id inside arguments; the
 * dnode codec creates and consumes those. No I/O here. */
#ifndef DNODED_JSON_H
#define DNODED_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    JSON_NULL,
    JSON_BOOL,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
    JSON_CALLBACK /* a DNode callback id; serialized as "[Function]" */
} json_type_t;

typedef struct json json_t;

struct json {
    json_type_t type;
    union {
        int boolean;
        struct {
            double d;     /* always set */
            int64_t i;    /* set when is_int */
            int is_int;   /* the literal was an integer that fits int64 */
        } num;
        struct {
            char *s; /* NUL-terminated; may also contain NULs, see len;
                        in the node's own allocation (never free it) */
            size_t len;
        } str;
        struct {
            json_t **items;
            size_t len, cap;
        } arr;
        struct {
            char **keys; /* NUL-terminated, unique */
            json_t **vals; /* in the same allocation as keys */
            size_t len, cap;
        } obj;
        int64_t callback;
    } u;
};

/* Limits applied while parsing. depth counts nested containers. */
#define JSON_DEFAULT_MAX_DEPTH 64

/* Parse exactly one JSON value from buf[0..len). Returns a new tree, or NULL
 * with a one-line reason in err (always NUL-terminated when errlen > 0).
 * Object keys containing NUL bytes and duplicate keys (last one wins, as in
 * JavaScript) are handled; nesting deeper than max_depth is an error. */
json_t *json_parse(const char *buf, size_t len, size_t max_depth, char *err,
                   size_t errlen);

/* The one value at the start of buf[0..len), which may be followed by
 * anything: *used gets its length and that of the whitespace after it.
 * Only well-formed input the fast one-pass reader takes is read (never
 * anything json_parse would refuse); NULL says nothing more than "not
 * read here", and the caller then parses the whole input with json_parse,
 * which decides and words any error. max_depth as for json_parse, but 0
 * reads nothing. */
json_t *json_parse_first(const char *buf, size_t len, size_t max_depth, size_t *used);

/* json_parse, but members whose key holds a NUL byte are left out instead
 * of failing the parse (to find a refused message's callbacks). */
json_t *json_parse_lenient(const char *buf, size_t len, size_t max_depth, char *err,
                           size_t errlen);

/* Serialize to a new malloc'd, NUL-terminated string (no trailing newline);
 * *len gets its length when len is not NULL. Compact form, members in
 * their order. JSON_CALLBACK nodes are written as the string "[Function]".
 * Integers and integral doubles below 2^53 print as integers, other
 * doubles in the shortest form that reads back the same, non-finite
 * numbers as null. Strings escape '"', '\\' and control characters
 * (\b \f \n \r \t, else \u00XX) and nothing else; bytes that are not
 * valid UTF-8 become U+FFFD. Returns NULL only on allocation failure. */
char *json_dump(const json_t *v, size_t *len);

/* An output buffer the writer appends to: data[0..len) is written, cap is
 * allocated. Start from {NULL, 0, 0}, or from a buffer of the caller's
 * (e.g. with a header already in data[0..len)); data is realloc'd as it
 * grows and the caller frees it. Nothing is NUL-terminated. */
typedef struct json_buf {
    char *data;
    size_t len, cap;
} json_buf_t;

/* Make room for n more bytes; 0, or -1 on allocation failure. */
int json_buf_reserve(json_buf_t *b, size_t n);
/* Append s[0..n); 0 or -1. */
int json_buf_append(json_buf_t *b, const char *s, size_t n);
/* Append v as json_dump writes it; 0, or -1 on allocation failure (then
 * b->len says nothing useful, but b->data is still the caller's to free). */
int json_dump_append(json_buf_t *b, const json_t *v);
/* Append i in decimal; 0 or -1. */
int json_buf_int(json_buf_t *b, int64_t i);
/* Append s[0..len) as a JSON string, as json_dump writes strings; 0 or -1. */
int json_dump_string(json_buf_t *b, const char *s, size_t len);

/* Constructors: return NULL only on allocation failure. */
json_t *json_null(void);
json_t *json_bool(int b);
json_t *json_int(int64_t i);
json_t *json_double(double d);
json_t *json_string(const char *s);
json_t *json_stringn(const char *s, size_t len);
json_t *json_array(void);
json_t *json_object(void);
json_t *json_callback(int64_t id);

/* Containers take ownership of v, also on failure (v is freed then).
 * Return 0, or -1 on allocation failure or wrong container type. */
int json_array_append(json_t *arr, json_t *v);
int json_object_set(json_t *obj, const char *key, json_t *v); /* replaces */

/* Lookups return borrowed pointers or NULL. */
json_t *json_object_get(const json_t *obj, const char *key);
json_t *json_array_get(const json_t *arr, size_t i);
/* Remove key and return its value (caller owns it), or NULL. */
json_t *json_object_take(json_t *obj, const char *key);
/* Remove key and free its value; 1 if it was there, else 0. */
int json_object_del(json_t *obj, const char *key);
/* Replace element i (freeing the old one); takes ownership of v. */
int json_array_set(json_t *arr, size_t i, json_t *v);

/* Convenience accessors: return def / NULL when absent or of another type. */
const char *json_get_string(const json_t *obj, const char *key);
int json_is_true(const json_t *v); /* JSON_BOOL true */

json_t *json_copy(const json_t *v); /* deep copy; NULL on allocation failure */
int json_equal(const json_t *a, const json_t *b);
void json_free(json_t *v); /* NULL is fine */

/* Remove every JSON_CALLBACK node the way JSON.stringify drops functions:
 * object members are deleted, array elements become null. */
void json_strip_callbacks(json_t *v);

#endif
