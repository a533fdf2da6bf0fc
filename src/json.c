/* json: the JSON tree (see json.h). Parsing builds our own nodes through
 * one set of callbacks, so that depth is capped while parsing and numbers
 * keep their integer form: a direct one-pass parser drives them for
 * well-formed input, yajl's callback parser for everything else (it
 * decides what is refused and says why); output is our own writer into
 * one growable buffer. Knows nothing of DNode beyond carrying JSON_CALLBACK
 * nodes. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <yajl/yajl_parse.h>

#include "hash.h"

/* ------------------------------------------------------------------------
 * Construction and containers
 * ------------------------------------------------------------------------ */

/* malloc rather than calloc: glibc's calloc skips its per-thread cache,
 * and nodes are the most frequent allocation of a message. */
static json_t *json_alloc(json_type_t type)
{
    json_t *v = malloc(sizeof(*v));
    if (v != NULL) {
        memset(v, 0, sizeof(*v));
        v->type = type;
    }
    return v;
}

json_t *json_null(void) { return json_alloc(JSON_NULL); }

json_t *json_bool(int b)
{
    json_t *v = json_alloc(JSON_BOOL);
    if (v != NULL)
        v->u.boolean = b ? 1 : 0;
    return v;
}

json_t *json_int(int64_t i)
{
    json_t *v = json_alloc(JSON_NUMBER);
    if (v != NULL) {
        v->u.num.i = i;
        v->u.num.d = (double)i;
        v->u.num.is_int = 1;
    }
    return v;
}

json_t *json_double(double d)
{
    json_t *v = json_alloc(JSON_NUMBER);
    if (v != NULL)
        v->u.num.d = d;
    return v;
}

/* The characters live in the same block, right after the node: one
 * allocation per string. json_free frees u.str.s only when it points
 * elsewhere. */
json_t *json_stringn(const char *s, size_t len)
{
    json_t *v;

    if (len > SIZE_MAX - sizeof(*v) - 1)
        return NULL;
    v = malloc(sizeof(*v) + len + 1);
    if (v == NULL)
        return NULL;
    memset(v, 0, sizeof(*v));
    v->type = JSON_STRING;
    v->u.str.s = (char *)(v + 1);
    if (len > 0)
        memcpy(v->u.str.s, s, len);
    v->u.str.s[len] = '\0';
    v->u.str.len = len;
    return v;
}

json_t *json_string(const char *s) { return json_stringn(s, strlen(s)); }
json_t *json_array(void) { return json_alloc(JSON_ARRAY); }
json_t *json_object(void) { return json_alloc(JSON_OBJECT); }

json_t *json_callback(int64_t id)
{
    json_t *v = json_alloc(JSON_CALLBACK);
    if (v != NULL)
        v->u.callback = id;
    return v;
}

void json_free(json_t *v)
{
    size_t i;

    if (v == NULL)
        return;
    switch (v->type) {
    case JSON_STRING:
        if (v->u.str.s != (char *)(v + 1))
            free(v->u.str.s);
        break;
    case JSON_ARRAY:
        for (i = 0; i < v->u.arr.len; i++)
            json_free(v->u.arr.items[i]);
        free(v->u.arr.items);
        break;
    case JSON_OBJECT:
        for (i = 0; i < v->u.obj.len; i++) {
            free(v->u.obj.keys[i]);
            json_free(v->u.obj.vals[i]);
        }
        free(v->u.obj.keys); /* vals share its block */
        break;
    default:
        break;
    }
    free(v);
}

int json_array_append(json_t *arr, json_t *v)
{
    if (v == NULL)
        return -1;
    if (arr == NULL || arr->type != JSON_ARRAY)
        goto fail;
    if (arr->u.arr.len == arr->u.arr.cap) {
        size_t cap = arr->u.arr.cap ? arr->u.arr.cap * 2 : 4;
        json_t **items = realloc(arr->u.arr.items, cap * sizeof(*items));
        if (items == NULL)
            goto fail;
        arr->u.arr.items = items;
        arr->u.arr.cap = cap;
    }
    arr->u.arr.items[arr->u.arr.len++] = v;
    return 0;
fail:
    json_free(v);
    return -1;
}

static ssize_t json_object_index(const json_t *obj, const char *key)
{
    size_t i;

    if (obj == NULL || obj->type != JSON_OBJECT)
        return -1;
    for (i = 0; i < obj->u.obj.len; i++)
        if (strcmp(obj->u.obj.keys[i], key) == 0)
            return (ssize_t)i;
    return -1;
}

/* Append member k (malloc'd, not already in obj) without looking for it:
 * callers that know the key is new (copies, the parser's own index) avoid
 * the linear search that makes building a large object quadratic. Takes
 * ownership of k and v, also on failure. */
static int json_object_push(json_t *obj, char *k, json_t *v)
{
    if (obj->u.obj.len == obj->u.obj.cap) {
        /* keys and vals are one block: cap keys, then cap values. */
        size_t cap = obj->u.obj.cap ? obj->u.obj.cap * 2 : 4;
        void *block;
        if (cap > SIZE_MAX / (sizeof(char *) + sizeof(json_t *)))
            goto fail;
        block = realloc(obj->u.obj.keys, cap * (sizeof(char *) + sizeof(json_t *)));
        if (block == NULL)
            goto fail;
        obj->u.obj.keys = block;
        obj->u.obj.vals = (json_t **)(obj->u.obj.keys + cap);
        if (obj->u.obj.len > 0)
            memmove(obj->u.obj.vals, obj->u.obj.keys + obj->u.obj.cap,
                    obj->u.obj.len * sizeof(json_t *));
        obj->u.obj.cap = cap;
    }
    obj->u.obj.keys[obj->u.obj.len] = k;
    obj->u.obj.vals[obj->u.obj.len] = v;
    obj->u.obj.len++;
    return 0;
fail:
    free(k);
    json_free(v);
    return -1;
}

/* Like json_object_set but with a key of known length; keys with an
 * embedded NUL are refused (they cannot be schema paths or method names). */
static int json_object_setn(json_t *obj, const char *key, size_t keylen, json_t *v)
{
    char *k = NULL;
    ssize_t at;

    if (v == NULL)
        return -1;
    if (obj == NULL || obj->type != JSON_OBJECT || memchr(key, '\0', keylen) != NULL)
        goto fail;
    k = malloc(keylen + 1);
    if (k == NULL)
        goto fail;
    memcpy(k, key, keylen);
    k[keylen] = '\0';
    at = json_object_index(obj, k);
    if (at >= 0) {
        free(k);
        json_free(obj->u.obj.vals[at]);
        obj->u.obj.vals[at] = v;
        return 0;
    }
    return json_object_push(obj, k, v);
fail:
    free(k);
    json_free(v);
    return -1;
}

int json_object_set(json_t *obj, const char *key, json_t *v)
{
    if (key == NULL) {
        json_free(v);
        return -1;
    }
    return json_object_setn(obj, key, strlen(key), v);
}

json_t *json_object_get(const json_t *obj, const char *key)
{
    ssize_t at = json_object_index(obj, key);
    return at < 0 ? NULL : obj->u.obj.vals[at];
}

json_t *json_object_take(json_t *obj, const char *key)
{
    ssize_t at = json_object_index(obj, key);
    json_t *v;
    size_t n;

    if (at < 0)
        return NULL;
    v = obj->u.obj.vals[at];
    free(obj->u.obj.keys[at]);
    n = obj->u.obj.len - (size_t)at - 1;
    memmove(&obj->u.obj.keys[at], &obj->u.obj.keys[at + 1], n * sizeof(char *));
    memmove(&obj->u.obj.vals[at], &obj->u.obj.vals[at + 1], n * sizeof(json_t *));
    obj->u.obj.len--;
    return v;
}

int json_object_del(json_t *obj, const char *key)
{
    json_t *v = json_object_take(obj, key);
    if (v == NULL)
        return 0;
    json_free(v);
    return 1;
}

json_t *json_array_get(const json_t *arr, size_t i)
{
    if (arr == NULL || arr->type != JSON_ARRAY || i >= arr->u.arr.len)
        return NULL;
    return arr->u.arr.items[i];
}

int json_array_set(json_t *arr, size_t i, json_t *v)
{
    if (v == NULL)
        return -1;
    if (arr == NULL || arr->type != JSON_ARRAY || i >= arr->u.arr.len) {
        json_free(v);
        return -1;
    }
    json_free(arr->u.arr.items[i]);
    arr->u.arr.items[i] = v;
    return 0;
}

const char *json_get_string(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return (v != NULL && v->type == JSON_STRING) ? v->u.str.s : NULL;
}

int json_is_true(const json_t *v)
{
    return v != NULL && v->type == JSON_BOOL && v->u.boolean;
}

json_t *json_copy(const json_t *v)
{
    json_t *c;
    size_t i;

    if (v == NULL)
        return NULL;
    switch (v->type) {
    case JSON_NULL:
        return json_null();
    case JSON_BOOL:
        return json_bool(v->u.boolean);
    case JSON_NUMBER:
        c = json_alloc(JSON_NUMBER);
        if (c != NULL)
            c->u.num = v->u.num;
        return c;
    case JSON_STRING:
        return json_stringn(v->u.str.s, v->u.str.len);
    case JSON_CALLBACK:
        return json_callback(v->u.callback);
    case JSON_ARRAY:
        c = json_array();
        if (c == NULL)
            return NULL;
        for (i = 0; i < v->u.arr.len; i++) {
            if (json_array_append(c, json_copy(v->u.arr.items[i])) < 0) {
                json_free(c);
                return NULL;
            }
        }
        return c;
    case JSON_OBJECT:
        c = json_object();
        if (c == NULL)
            return NULL;
        for (i = 0; i < v->u.obj.len; i++) {
            json_t *val = json_copy(v->u.obj.vals[i]);
            char *k = strdup(v->u.obj.keys[i]);
            /* The source's keys are unique: no search needed. */
            if (val == NULL || k == NULL || json_object_push(c, k, val) < 0) {
                if (val == NULL || k == NULL) {
                    free(k);
                    json_free(val);
                }
                json_free(c);
                return NULL;
            }
        }
        return c;
    }
    return NULL;
}

int json_equal(const json_t *a, const json_t *b)
{
    size_t i;

    if (a == NULL || b == NULL)
        return a == b;
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case JSON_NULL:
        return 1;
    case JSON_BOOL:
        return a->u.boolean == b->u.boolean;
    case JSON_NUMBER:
        if (a->u.num.is_int && b->u.num.is_int)
            return a->u.num.i == b->u.num.i;
        return a->u.num.d == b->u.num.d;
    case JSON_STRING:
        return a->u.str.len == b->u.str.len &&
               memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0;
    case JSON_CALLBACK:
        return a->u.callback == b->u.callback;
    case JSON_ARRAY:
        if (a->u.arr.len != b->u.arr.len)
            return 0;
        for (i = 0; i < a->u.arr.len; i++)
            if (!json_equal(a->u.arr.items[i], b->u.arr.items[i]))
                return 0;
        return 1;
    case JSON_OBJECT:
        if (a->u.obj.len != b->u.obj.len)
            return 0;
        for (i = 0; i < a->u.obj.len; i++)
            if (!json_equal(a->u.obj.vals[i], json_object_get(b, a->u.obj.keys[i])))
                return 0;
        return 1;
    }
    return 0;
}

void json_strip_callbacks(json_t *v)
{
    size_t i;

    if (v == NULL)
        return;
    if (v->type == JSON_ARRAY) {
        for (i = 0; i < v->u.arr.len; i++) {
            json_t *item = v->u.arr.items[i];
            if (item->type == JSON_CALLBACK) {
                item->type = JSON_NULL; /* a callback node owns nothing */
            } else {
                json_strip_callbacks(item);
            }
        }
    } else if (v->type == JSON_OBJECT) {
        i = 0;
        while (i < v->u.obj.len) {
            if (v->u.obj.vals[i]->type == JSON_CALLBACK) {
                json_object_del(v, v->u.obj.keys[i]);
                continue;
            }
            json_strip_callbacks(v->u.obj.vals[i]);
            i++;
        }
    }
}

/* ------------------------------------------------------------------------
 * Parsing
 * ------------------------------------------------------------------------ */

typedef struct parse_frame {
    json_t *container;
    char *key; /* pending object key */
    size_t keylen;
    /* For objects past a few members: an open-addressing index of their
     * keys (member index + 1, 0 = empty), so that finding duplicates stays
     * linear in the size of the message rather than quadratic. */
    size_t *slots;
    size_t nslots; /* a power of two, or 0 */
    /* json_parse_lenient: the container is the value of a member left out
     * (its key holds a NUL), linked to nothing; freed when it ends. */
    int orphan;
} parse_frame_t;

/* Frames held in the parse state itself; deeper documents move the stack
 * to the heap (most messages nest a few levels, max_depth may be large). */
#define PARSE_STACK_INLINE 16

typedef struct parse_state {
    parse_frame_t *stack; /* inline_stack, or malloc'd once deeper */
    size_t depth, cap, max_depth;
    json_t *root;
    const char *error; /* set by callbacks that stop the parse */
    int drop_nul_keys; /* json_parse_lenient: members whose key holds a NUL are left out */
    parse_frame_t inline_stack[PARSE_STACK_INLINE];
} parse_state_t;

#define PARSE_INDEX_FROM 8 /* members before an object gets an index */

/* The index's hash is keyed with a per-process secret (hash.c): with a
 * fixed, public hash (FNV-1a before), keys that all land on one slot can
 * be computed offline, and linear probing then costs n^2/2 comparisons:
 * 75,000 such keys held a worker for 18 s. */
static size_t key_hash(const char *k)
{
    return (size_t)hash_keyed(k, strlen(k));
}

/* The slot where key is, or the empty slot where it would go. */
static size_t index_find(const parse_frame_t *f, const char *key)
{
    const json_t *obj = f->container;
    size_t mask = f->nslots - 1, i = key_hash(key) & mask;

    while (f->slots[i] != 0 && strcmp(obj->u.obj.keys[f->slots[i] - 1], key) != 0)
        i = (i + 1) & mask;
    return i;
}

/* (Re)build the index with room for at least twice len + 1 members. */
static int index_grow(parse_frame_t *f)
{
    const json_t *obj = f->container;
    size_t n = 32, i;

    while (n < 2 * (obj->u.obj.len + 1))
        n *= 2;
    free(f->slots);
    f->slots = calloc(n, sizeof(*f->slots));
    f->nslots = f->slots != NULL ? n : 0;
    if (f->slots == NULL)
        return -1;
    for (i = 0; i < obj->u.obj.len; i++)
        f->slots[index_find(f, obj->u.obj.keys[i])] = i + 1;
    return 0;
}

/* Set the pending key of the object frame f to v (last duplicate wins, in
 * the first one's place, as in JavaScript). Takes v; 0 or -1. */
static int parse_object_put(parse_frame_t *f, json_t *v, int drop_nul_keys)
{
    json_t *obj = f->container;
    char *k = f->key;
    size_t slot;

    f->key = NULL;
    if (memchr(k, '\0', f->keylen) != NULL) {
        if (!drop_nul_keys)
            goto fail;
        free(k);
        json_free(v);
        return 0;
    }
    if (obj->u.obj.len < PARSE_INDEX_FROM) {
        ssize_t at = json_object_index(obj, k);
        if (at >= 0) {
            free(k);
            json_free(obj->u.obj.vals[at]);
            obj->u.obj.vals[at] = v;
            return 0;
        }
        return json_object_push(obj, k, v);
    }
    if (2 * (obj->u.obj.len + 1) > f->nslots && index_grow(f) < 0)
        goto fail;
    slot = index_find(f, k);
    if (f->slots[slot] != 0) {
        free(k);
        json_free(obj->u.obj.vals[f->slots[slot] - 1]);
        obj->u.obj.vals[f->slots[slot] - 1] = v;
        return 0;
    }
    if (json_object_push(obj, k, v) < 0)
        return -1;
    f->slots[slot] = obj->u.obj.len;
    return 0;
fail:
    free(k);
    json_free(v);
    return -1;
}

/* Attach a finished value to the current container (or make it the root). */
static int parse_add(parse_state_t *ps, json_t *v)
{
    parse_frame_t *top;
    int rc;

    if (v == NULL) {
        ps->error = "out of memory";
        return 0;
    }
    if (ps->depth == 0) {
        ps->root = v;
        return 1;
    }
    top = &ps->stack[ps->depth - 1];
    if (top->container->type == JSON_ARRAY) {
        rc = json_array_append(top->container, v);
    } else {
        rc = parse_object_put(top, v, ps->drop_nul_keys);
    }
    if (rc < 0) {
        ps->error = "object key contains a NUL byte or out of memory";
        return 0;
    }
    return 1;
}

static int parse_push(parse_state_t *ps, json_t *container)
{
    parse_frame_t *top;
    int orphan = 0;

    if (container == NULL) {
        ps->error = "out of memory";
        return 0;
    }
    if (ps->depth >= ps->max_depth) {
        json_free(container);
        ps->error = "nesting too deep";
        return 0;
    }
    if (ps->depth == ps->cap) {
        size_t cap = ps->cap * 2 < ps->max_depth ? ps->cap * 2 : ps->max_depth;
        parse_frame_t *stack;
        if (ps->stack == ps->inline_stack) {
            stack = malloc(cap * sizeof(*stack));
            if (stack != NULL)
                memcpy(stack, ps->stack, ps->depth * sizeof(*stack));
        } else {
            stack = realloc(ps->stack, cap * sizeof(*stack));
        }
        if (stack == NULL) {
            json_free(container);
            ps->error = "out of memory";
            return 0;
        }
        ps->stack = stack;
        ps->cap = cap;
    }
    /* The container is linked into its parent first so that one free of the
     * root releases everything if the parse stops half way; one that is the
     * value of a member json_parse_lenient leaves out is parsed all the
     * same, unlinked, and freed when it ends (or by parse_frames_free). */
    top = ps->depth > 0 ? &ps->stack[ps->depth - 1] : NULL;
    if (top != NULL && ps->drop_nul_keys && top->container->type == JSON_OBJECT &&
        top->key != NULL && memchr(top->key, '\0', top->keylen) != NULL) {
        free(top->key);
        top->key = NULL;
        orphan = 1;
    } else if (!parse_add(ps, container)) {
        return 0;
    }
    ps->stack[ps->depth].orphan = orphan;
    ps->stack[ps->depth].container = container;
    ps->stack[ps->depth].key = NULL;
    ps->stack[ps->depth].keylen = 0;
    ps->stack[ps->depth].slots = NULL;
    ps->stack[ps->depth].nslots = 0;
    ps->depth++;
    return 1;
}

static int cb_null(void *ctx) { return parse_add(ctx, json_null()); }
static int cb_boolean(void *ctx, int b) { return parse_add(ctx, json_bool(b)); }

static int cb_number(void *ctx, const char *s, size_t len)
{
    char buf[64];
    char *end;
    int is_int = 1;
    size_t i;

    /* yajl has checked the syntax already: an optional '-', digits, maybe
     * a fraction and an exponent. Up to 18 digits cannot overflow int64;
     * anything else takes the strtoll/strtod path below. */
    if (len <= 19) {
        size_t k = s[0] == '-' ? 1 : 0;
        uint64_t u = 0;
        for (i = k; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            u = u * 10 + (uint64_t)(s[i] - '0');
        if (i == len && len > k && len - k <= 18)
            return parse_add(ctx, json_int(k ? -(int64_t)u : (int64_t)u));
    }
    if (len >= sizeof(buf)) {
        /* Long literals: keep them as doubles through strtod on a copy. */
        char *tmp = malloc(len + 1);
        double d;
        if (tmp == NULL)
            return parse_add(ctx, NULL);
        memcpy(tmp, s, len);
        tmp[len] = '\0';
        d = strtod(tmp, NULL);
        free(tmp);
        return parse_add(ctx, json_double(d));
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    for (i = 0; i < len; i++)
        if (buf[i] == '.' || buf[i] == 'e' || buf[i] == 'E')
            is_int = 0;
    if (is_int) {
        long long ll;
        errno = 0;
        ll = strtoll(buf, &end, 10);
        if (errno == 0 && *end == '\0')
            return parse_add(ctx, json_int((int64_t)ll));
    }
    return parse_add(ctx, json_double(strtod(buf, NULL)));
}

/* Strict UTF-8 (RFC 3629). yajl only checks the shape of each sequence and
 * lets overlong forms, surrogates and code points past U+10FFFF through;
 * those would be forwarded to other clients, and a browser fails a
 * WebSocket whose text frame holds them. */
/* Length of the valid UTF-8 sequence at s[0..len), or 0 if there is none. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n, k;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (len <= n || s[1] < lo || s[1] > hi)
        return 0;
    for (k = 2; k <= n; k++)
        if (s[k] < 0x80 || s[k] > 0xBF)
            return 0;
    return n + 1;
}

static int utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0, n;

    while (i < len) {
        n = utf8_seq(s + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

static int cb_string(void *ctx, const unsigned char *s, size_t len)
{
    if (!utf8_valid(s, len)) {
        ((parse_state_t *)ctx)->error = "invalid UTF-8 in a string";
        return 0;
    }
    return parse_add(ctx, json_stringn((const char *)s, len));
}

static int cb_start_map(void *ctx) { return parse_push(ctx, json_object()); }

static int cb_map_key(void *ctx, const unsigned char *key, size_t len)
{
    parse_state_t *ps = ctx;
    parse_frame_t *top = &ps->stack[ps->depth - 1];

    if (!utf8_valid(key, len)) {
        ps->error = "invalid UTF-8 in an object key";
        return 0;
    }
    free(top->key);
    top->key = malloc(len + 1);
    if (top->key == NULL) {
        ps->error = "out of memory";
        return 0;
    }
    memcpy(top->key, key, len);
    top->key[len] = '\0';
    top->keylen = len;
    return 1;
}

static int cb_end(void *ctx)
{
    parse_state_t *ps = ctx;
    ps->depth--;
    if (ps->stack[ps->depth].orphan)
        json_free(ps->stack[ps->depth].container);
    free(ps->stack[ps->depth].key);
    ps->stack[ps->depth].key = NULL;
    free(ps->stack[ps->depth].slots);
    ps->stack[ps->depth].slots = NULL;
    ps->stack[ps->depth].nslots = 0;
    return 1;
}

static int cb_start_array(void *ctx) { return parse_push(ctx, json_array()); }

/* yajl's own allocations for one parse (handle, lexer, buffers, state
 * stack: a few hundred bytes, plus 2 KiB once a string has escapes) come
 * from a block on the caller's stack instead of the heap; what does not fit
 * goes to malloc. Per call, so parsers on several threads share nothing.
 * Each block is preceded by its size (for realloc); only the last block
 * is given back by free. */
#define ARENA_BYTES 4096
#define ARENA_ALIGN 16

typedef struct parse_arena {
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char mem[ARENA_BYTES];
} parse_arena_t;

static int arena_owns(const parse_arena_t *a, const void *p)
{
    uintptr_t u = (uintptr_t)p, lo = (uintptr_t)a->mem;
    return u >= lo && u < lo + ARENA_BYTES;
}

static size_t arena_size(const void *p)
{
    size_t n;
    memcpy(&n, (const unsigned char *)p - ARENA_ALIGN, sizeof(n));
    return n;
}

static void *arena_malloc(void *ctx, size_t n)
{
    parse_arena_t *a = ctx;
    size_t need;
    unsigned char *p;

    if (n > ARENA_BYTES)
        return malloc(n);
    need = ARENA_ALIGN + ((n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1));
    if (need > ARENA_BYTES - a->used)
        return malloc(n);
    p = a->mem + a->used + ARENA_ALIGN;
    memcpy(p - ARENA_ALIGN, &n, sizeof(n));
    a->used += need;
    return p;
}

/* Whether p is the block most recently handed out. */
static int arena_is_last(const parse_arena_t *a, const void *p)
{
    size_t n = arena_size(p);
    size_t end = (size_t)((const unsigned char *)p - a->mem) +
                 ((n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1));
    return end == a->used;
}

static void arena_free(void *ctx, void *p)
{
    parse_arena_t *a = ctx;

    if (p == NULL)
        return;
    if (!arena_owns(a, p)) {
        free(p);
        return;
    }
    if (arena_is_last(a, p))
        a->used = (size_t)((unsigned char *)p - a->mem) - ARENA_ALIGN;
}

static void *arena_realloc(void *ctx, void *p, size_t n)
{
    parse_arena_t *a = ctx;
    size_t old;
    void *q;

    if (p == NULL)
        return arena_malloc(ctx, n);
    if (!arena_owns(a, p))
        return realloc(p, n);
    old = arena_size(p);
    if (n <= old)
        return p;
    if (arena_is_last(a, p)) {
        /* Grow in place when the arena has room after it. */
        size_t start = (size_t)((unsigned char *)p - a->mem);
        size_t rounded = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
        if (n <= ARENA_BYTES && rounded <= ARENA_BYTES - start) {
            memcpy((unsigned char *)p - ARENA_ALIGN, &n, sizeof(n));
            a->used = start + rounded;
            return p;
        }
    }
    q = arena_malloc(ctx, n);
    if (q != NULL)
        memcpy(q, p, old);
    return q;
}

/* ------------------------------------------------------------------------
 * The direct parser
 *
 * Most input is well-formed: a DNode request of a hundred bytes, a bus
 * envelope. This parser reads it in one pass and builds the tree through
 * the same callbacks yajl drives, so depth, duplicate keys, numbers and
 * UTF-8 come out the same. It only ever accepts what yajl accepts: on
 * anything it does not take (a syntax error, a surrogate escape, a
 * whitespace byte other than space, tab, CR and LF) or any error at all,
 * it gives up and the input is parsed again by yajl, which then decides
 * and words the error. Costs: one pass and no yajl handle for good input;
 * two passes for bad input (each linear).
 * ------------------------------------------------------------------------ */

typedef struct direct {
    const unsigned char *p, *end;
    unsigned char *scratch; /* decoded strings with escapes */
    size_t scratchcap;
} direct_t;

static void direct_ws(direct_t *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static int hex4(const unsigned char *s, unsigned *out)
{
    unsigned v = 0;
    int i;

    for (i = 0; i < 4; i++) {
        unsigned char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* The string at d->p (its opening quote): *s and *len are its bytes,
 * unescaped (pointing into the input when it has no escape). 0 or -1. */
static int direct_string(direct_t *d, const unsigned char **s, size_t *len)
{
    const unsigned char *start = ++d->p, *q = start;
    size_t n = 0;

    while (q < d->end && *q != '"' && *q != '\\' && *q >= 0x20)
        q++;
    if (q < d->end && *q == '"') {
        *s = start;
        *len = (size_t)(q - start);
        d->p = q + 1;
        return 0;
    }
    if (q == d->end || *q != '\\')
        return -1; /* unterminated, or a control byte */
    /* Escapes: decoded into scratch, which the raw length bounds. */
    for (q = start; q < d->end && *q != '"'; q++)
        if (*q == '\\' && ++q == d->end)
            break;
    if (q >= d->end)
        return -1;
    if ((size_t)(q - start) > d->scratchcap) {
        unsigned char *b = realloc(d->scratch, (size_t)(q - start));
        if (b == NULL)
            return -1;
        d->scratch = b;
        d->scratchcap = (size_t)(q - start);
    }
    for (q = start; *q != '"'; q++) {
        unsigned c = *q, cp;

        if (c < 0x20)
            return -1;
        if (c != '\\') {
            d->scratch[n++] = (unsigned char)c;
            continue;
        }
        switch (*++q) {
        case '"':
        case '\\':
        case '/':
            d->scratch[n++] = *q;
            break;
        case 'b':
            d->scratch[n++] = '\b';
            break;
        case 'f':
            d->scratch[n++] = '\f';
            break;
        case 'n':
            d->scratch[n++] = '\n';
            break;
        case 'r':
            d->scratch[n++] = '\r';
            break;
        case 't':
            d->scratch[n++] = '\t';
            break;
        case 'u':
            /* Four hex digits before the closing quote; a surrogate is
             * left to yajl (its pairing rules are its own). */
            if (d->end - q < 6 || hex4(q + 1, &cp) < 0 || (cp >= 0xD800 && cp <= 0xDFFF))
                return -1;
            q += 4;
            if (cp < 0x80) {
                d->scratch[n++] = (unsigned char)cp;
            } else if (cp < 0x800) {
                d->scratch[n++] = (unsigned char)(0xC0 | (cp >> 6));
                d->scratch[n++] = (unsigned char)(0x80 | (cp & 0x3F));
            } else {
                d->scratch[n++] = (unsigned char)(0xE0 | (cp >> 12));
                d->scratch[n++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                d->scratch[n++] = (unsigned char)(0x80 | (cp & 0x3F));
            }
            break;
        default:
            return -1;
        }
    }
    *s = d->scratch;
    *len = n;
    d->p = q + 1;
    return 0;
}

/* A number as yajl's lexer takes it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int direct_number(direct_t *d, parse_state_t *ps)
{
    const unsigned char *s = d->p, *q = s;

    if (q < d->end && *q == '-')
        q++;
    if (q < d->end && *q == '0')
        q++;
    else if (q < d->end && *q >= '1' && *q <= '9')
        while (q < d->end && *q >= '0' && *q <= '9')
            q++;
    else
        return -1;
    if (q < d->end && *q == '.') {
        if (++q == d->end || *q < '0' || *q > '9')
            return -1;
        while (q < d->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < d->end && (*q == 'e' || *q == 'E')) {
        if (++q < d->end && (*q == '+' || *q == '-'))
            q++;
        if (q == d->end || *q < '0' || *q > '9')
            return -1;
        while (q < d->end && *q >= '0' && *q <= '9')
            q++;
    }
    /* yajl would lex "01" or "1x" as two tokens and then fail. */
    if (q < d->end &&
        ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' || *q == '-' || *q == '+'))
        return -1;
    d->p = q;
    return cb_number(ps, (const char *)s, (size_t)(q - s)) ? 0 : -1;
}

static int direct_literal(direct_t *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return -1;
    d->p += n;
    /* "nullx" is one bad token to yajl. */
    if (d->p < d->end && ((*d->p >= 'a' && *d->p <= 'z') || (*d->p >= 'A' && *d->p <= 'Z') ||
                          (*d->p >= '0' && *d->p <= '9')))
        return -1;
    return 0;
}

/* Parse buf into ps (set up as for yajl): 0 with ps->root set, or -1 with
 * whatever was built still hanging off ps->root (freed by the caller,
 * who then lets yajl decide). With used, the value may be followed by
 * anything: *used gets the length of the value and the whitespace after
 * it. */
static int direct_parse(parse_state_t *ps, const char *buf, size_t len, size_t *used)
{
    enum { VALUE, FIRST_VALUE, KEY, FIRST_KEY, AFTER } state = VALUE;
    direct_t d = {(const unsigned char *)buf, (const unsigned char *)buf, NULL, 0};
    const unsigned char *s;
    size_t n;
    int rc = -1;

    if (buf == NULL)
        return -1; /* no input (len 0): yajl says so */
    d.end += len;

    for (;;) {
        direct_ws(&d);
        if (state == AFTER) {
            const json_t *top;

            if (ps->depth == 0) {
                if (used != NULL)
                    *used = (size_t)(d.p - (const unsigned char *)buf);
                rc = used != NULL || d.p == d.end ? 0 : -1; /* trailing bytes */
                break;
            }
            if (d.p == d.end)
                break;
            top = ps->stack[ps->depth - 1].container;
            if (*d.p == ',') {
                d.p++;
                state = top->type == JSON_ARRAY ? VALUE : KEY;
                continue;
            }
            if (*d.p != (top->type == JSON_ARRAY ? ']' : '}'))
                break;
            d.p++;
            if (!cb_end(ps))
                break;
            continue;
        }
        if (d.p == d.end)
            break;
        if (state == FIRST_KEY || state == KEY) {
            if (state == FIRST_KEY && *d.p == '}') {
                d.p++;
                if (!cb_end(ps))
                    break;
                state = AFTER;
                continue;
            }
            if (*d.p != '"' || direct_string(&d, &s, &n) < 0 || !cb_map_key(ps, s, n))
                break;
            direct_ws(&d);
            if (d.p == d.end || *d.p != ':')
                break;
            d.p++;
            state = VALUE;
            continue;
        }
        if (state == FIRST_VALUE && *d.p == ']') {
            d.p++;
            if (!cb_end(ps))
                break;
            state = AFTER;
            continue;
        }
        switch (*d.p) {
        case '{':
            d.p++;
            if (!cb_start_map(ps))
                goto out;
            state = FIRST_KEY;
            continue;
        case '[':
            d.p++;
            if (!cb_start_array(ps))
                goto out;
            state = FIRST_VALUE;
            continue;
        case '"':
            if (direct_string(&d, &s, &n) < 0 || !cb_string(ps, s, n))
                goto out;
            break;
        case 't':
            if (direct_literal(&d, "true", 4) < 0 || !cb_boolean(ps, 1))
                goto out;
            break;
        case 'f':
            if (direct_literal(&d, "false", 5) < 0 || !cb_boolean(ps, 0))
                goto out;
            break;
        case 'n':
            if (direct_literal(&d, "null", 4) < 0 || !cb_null(ps))
                goto out;
            break;
        default:
            if (direct_number(&d, ps) < 0)
                goto out;
            break;
        }
        state = AFTER;
    }
out:
    free(d.scratch);
    return rc;
}

/* The frames still open when a parse stops: their keys, indexes and
 * unlinked containers (what is linked goes with the root). */
static void parse_frames_free(parse_state_t *ps)
{
    size_t i;

    for (i = 0; i < ps->depth; i++) {
        free(ps->stack[i].key);
        free(ps->stack[i].slots);
        if (ps->stack[i].orphan)
            json_free(ps->stack[i].container);
    }
}

/* Undo a direct parse that gave up: every frame and the partial tree. */
static void parse_state_reset(parse_state_t *ps)
{
    parse_frames_free(ps);
    json_free(ps->root);
    ps->root = NULL;
    ps->depth = 0;
    ps->error = NULL;
}

static const yajl_callbacks parse_callbacks = {
    cb_null, cb_boolean, NULL, NULL, cb_number, cb_string,
    cb_start_map, cb_map_key, cb_end, cb_start_array, cb_end,
};

static json_t *json_parse_opts(const char *buf, size_t len, size_t max_depth, int drop_nul_keys,
                               char *err, size_t errlen)
{
    parse_state_t ps;
    parse_arena_t arena;
    yajl_alloc_funcs funcs = {arena_malloc, arena_realloc, arena_free, &arena};
    yajl_handle h;
    yajl_status st;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    ps.stack = ps.inline_stack;
    ps.depth = 0;
    ps.cap = PARSE_STACK_INLINE;
    ps.max_depth = max_depth ? max_depth : JSON_DEFAULT_MAX_DEPTH;
    ps.root = NULL;
    ps.error = NULL;
    ps.drop_nul_keys = drop_nul_keys;
    if (direct_parse(&ps, buf, len, NULL) == 0 && ps.root != NULL) {
        if (ps.stack != ps.inline_stack)
            free(ps.stack);
        return ps.root;
    }
    parse_state_reset(&ps); /* yajl decides, and words the error */
    arena.used = 0;
    h = yajl_alloc(&parse_callbacks, &funcs, &ps);
    if (h == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* Reject invalid UTF-8 (yajl checks by default) and anything after the
     * first value. */
    st = yajl_parse(h, (const unsigned char *)buf, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    if (st != yajl_status_ok || ps.root == NULL) {
        if (err != NULL && errlen > 0) {
            if (ps.error != NULL) {
                snprintf(err, errlen, "%s", ps.error);
            } else if (st == yajl_status_ok) {
                snprintf(err, errlen, "empty input");
            } else {
                unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
                size_t n;
                snprintf(err, errlen, "%s", msg != NULL ? (char *)msg : "invalid JSON");
                if (msg != NULL)
                    yajl_free_error(h, msg);
                /* yajl ends its messages with a newline */
                n = strlen(err);
                while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
                    err[--n] = '\0';
            }
        }
        /* Frames above depth were cleared when their container ended. */
        parse_frames_free(&ps);
        json_free(ps.root);
        ps.root = NULL;
    }
    yajl_free(h);
    if (ps.stack != ps.inline_stack)
        free(ps.stack);
    return ps.root;
}

/* ------------------------------------------------------------------------
 * Serialization
 *
 * Our own writer rather than yajl_gen: the whole output goes into one
 * growable buffer the caller may own (a DNode message is written straight
 * into the buffer that becomes the shared message), with no generator
 * state to allocate per call and no depth cap of its own.
 * ------------------------------------------------------------------------ */

int json_buf_reserve(json_buf_t *b, size_t n)
{
    size_t cap;
    char *data;

    if (b->cap - b->len >= n)
        return 0;
    if (n > SIZE_MAX / 2 || b->len > SIZE_MAX / 2 - n)
        return -1;
    cap = b->cap > 0 ? b->cap : 128;
    while (cap - b->len < n)
        cap *= 2;
    data = realloc(b->data, cap);
    if (data == NULL)
        return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

/* The writer's append: the room check inline, growth out of line. */
static inline int buf_put(json_buf_t *b, const char *s, size_t n)
{
    if (b->cap - b->len < n && json_buf_reserve(b, n) < 0)
        return -1;
    if (n > 0)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

int json_buf_append(json_buf_t *b, const char *s, size_t n) { return buf_put(b, s, n); }

/* Append a literal: sizeof includes the NUL, which is not written. */
#define BUF_LIT(b, lit) buf_put((b), (lit), sizeof(lit) - 1)

static int buf_int(json_buf_t *b, int64_t i)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    uint64_t u = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;

    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (i < 0)
        *--p = '-';
    return buf_put(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

int json_buf_int(json_buf_t *b, int64_t i) { return buf_int(b, i); }

/* The shortest decimal form that reads back as the same double, as
 * JavaScript prints numbers (17 digits would always be exact but long). */
static int buf_double(json_buf_t *b, double d)
{
    char tmp[40];
    int prec, n = 0;

    for (prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    return buf_put(b, tmp, (size_t)n);
}

/* Per RFC 8259: '"' and '\\' escaped, control characters as their short
 * escape or \u00XX, everything else (including '/' and DEL) as it is. */
static const char *escape_short(unsigned char c)
{
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    default:
        return NULL;
    }
}

/* Write a string, replacing each byte that is not part of valid UTF-8 by
 * U+FFFD. Parsed strings are valid already; this covers text the daemon
 * builds itself, such as a message that cut a client's string with
 * "%.60s" in the middle of a character. A browser fails the WebSocket on a
 * text frame that is not UTF-8, so nothing invalid may go out. */
/* What a byte needs in a string: 0 nothing, 1 an escape, 2 a check that
 * it starts a valid UTF-8 sequence. */
static const unsigned char string_class[256] = {
    [0 ... 0x1F] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xFF] = 2,
};

int json_dump_string(json_buf_t *b, const char *text, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, run = 0, n;

    /* Room for the common case (nothing to escape) in one step. */
    if (len > SIZE_MAX - 2 || json_buf_reserve(b, len + 2) < 0)
        return -1;
    b->data[b->len++] = '"';
    while (i < len) {
        unsigned char c = s[i];
        if (string_class[c] == 0) {
            i++;
            continue;
        }
        if (string_class[c] == 2) {
            n = utf8_seq(s + i, len - i);
            if (n > 0) {
                i += n;
                continue;
            }
        }
        if (buf_put(b, text + run, i - run) < 0)
            return -1;
        if (c >= 0x80) {
            if (BUF_LIT(b, "\xEF\xBF\xBD") < 0)
                return -1;
        } else {
            const char *esc = escape_short(c);
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (esc != NULL ? buf_put(b, esc, 2) < 0 : buf_put(b, u, 6) < 0)
                return -1;
        }
        run = ++i;
    }
    if (buf_put(b, text + run, len - run) < 0)
        return -1;
    return BUF_LIT(b, "\"");
}

int json_dump_append(json_buf_t *b, const json_t *v)
{
    size_t i;

    switch (v->type) {
    case JSON_NULL:
        return BUF_LIT(b, "null");
    case JSON_BOOL:
        return v->u.boolean ? BUF_LIT(b, "true") : BUF_LIT(b, "false");
    case JSON_NUMBER:
        if (v->u.num.is_int)
            return buf_int(b, v->u.num.i);
        if (!isfinite(v->u.num.d))
            return BUF_LIT(b, "null");
        /* Integral doubles print as integers (so -0 is 0), as in JavaScript. */
        if (v->u.num.d == floor(v->u.num.d) && fabs(v->u.num.d) < 9007199254740992.0)
            return buf_int(b, (int64_t)v->u.num.d);
        return buf_double(b, v->u.num.d);
    case JSON_STRING:
        return json_dump_string(b, v->u.str.s, v->u.str.len);
    case JSON_CALLBACK:
        return BUF_LIT(b, "\"[Function]\"");
    case JSON_ARRAY:
        if (BUF_LIT(b, "[") < 0)
            return -1;
        for (i = 0; i < v->u.arr.len; i++) {
            if ((i > 0 && BUF_LIT(b, ",") < 0) || json_dump_append(b, v->u.arr.items[i]) < 0)
                return -1;
        }
        return BUF_LIT(b, "]");
    case JSON_OBJECT:
        if (BUF_LIT(b, "{") < 0)
            return -1;
        for (i = 0; i < v->u.obj.len; i++) {
            const char *k = v->u.obj.keys[i];
            if ((i > 0 && BUF_LIT(b, ",") < 0) || json_dump_string(b, k, strlen(k)) < 0 ||
                BUF_LIT(b, ":") < 0 || json_dump_append(b, v->u.obj.vals[i]) < 0)
                return -1;
        }
        return BUF_LIT(b, "}");
    }
    return -1;
}

char *json_dump(const json_t *v, size_t *len)
{
    json_buf_t b = {NULL, 0, 0};

    if (v == NULL)
        return NULL;
    if (json_dump_append(&b, v) < 0 || BUF_LIT(&b, "\0") < 0) {
        free(b.data);
        return NULL;
    }
    if (len != NULL)
        *len = b.len - 1;
    return b.data;
}

/* The first value of buf through the direct parser alone (see json.h). */
json_t *json_parse_first(const char *buf, size_t len, size_t max_depth, size_t *used)
{
    parse_state_t ps;

    ps.stack = ps.inline_stack;
    ps.depth = 0;
    ps.cap = PARSE_STACK_INLINE;
    ps.max_depth = max_depth;
    ps.root = NULL;
    ps.error = NULL;
    ps.drop_nul_keys = 0;
    if (max_depth == 0 || len == 0 || direct_parse(&ps, buf, len, used) < 0 || ps.root == NULL) {
        parse_state_reset(&ps);
        if (ps.stack != ps.inline_stack)
            free(ps.stack);
        return NULL;
    }
    if (ps.stack != ps.inline_stack)
        free(ps.stack);
    return ps.root;
}

json_t *json_parse(const char *buf, size_t len, size_t max_depth, char *err, size_t errlen)
{
    return json_parse_opts(buf, len, max_depth, 0, err, errlen);
}

json_t *json_parse_lenient(const char *buf, size_t len, size_t max_depth, char *err,
                           size_t errlen)
{
    return json_parse_opts(buf, len, max_depth, 1, err, errlen);
}
