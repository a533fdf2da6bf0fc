/* dnode: parse and build DNode protocol messages (see dnode.h). The paths
 * of callbacks and links address the arguments array: each element is an
 * object key or an array index, sent as a string or an integer. No I/O. */
#include "dnode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Paths
 * ------------------------------------------------------------------------ */

/* A canonical array index written in decimal: digits only, no leading
 * zero, at most 15 of them (so under 2^53). As *v; 0 or -1. Paths in both
 * readers go through it, so that they agree on what an index is. */
static int index_digits(const char *s, size_t n, int64_t *v)
{
    size_t i;

    if (n == 0 || n > 15 || (s[0] == '0' && n > 1))
        return -1;
    *v = 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        *v = *v * 10 + (s[i] - '0');
    }
    return 0;
}

/* A path element as an array index: integers, or strings holding a
 * canonical decimal integer. Returns 0 and sets *idx, or -1. */
static int path_index(const json_t *el, size_t *idx)
{
    int64_t v;

    if (el->type == JSON_NUMBER) {
        if (!el->u.num.is_int || el->u.num.i < 0)
            return -1;
        *idx = (size_t)el->u.num.i;
        return 0;
    }
    if (el->type == JSON_STRING && index_digits(el->u.str.s, el->u.str.len, &v) == 0) {
        *idx = (size_t)v;
        return 0;
    }
    return -1;
}

/* A path element as an object key, written into buf. Returns buf or NULL. */
static const char *path_key(const json_t *el, char *buf, size_t buflen)
{
    if (el->type == JSON_STRING)
        return memchr(el->u.str.s, '\0', el->u.str.len) == NULL ? el->u.str.s : NULL;
    if (el->type == JSON_NUMBER && el->u.num.is_int) {
        snprintf(buf, buflen, "%lld", (long long)el->u.num.i);
        return buf;
    }
    return NULL;
}

static int path_valid(const json_t *path)
{
    size_t i;

    if (path == NULL || path->type != JSON_ARRAY || path->u.arr.len == 0)
        return 0;
    for (i = 0; i < path->u.arr.len; i++) {
        const json_t *el = path->u.arr.items[i];
        if (el->type != JSON_STRING && !(el->type == JSON_NUMBER && el->u.num.is_int))
            return 0;
    }
    return 1;
}

/* Follow path[0..n) from root; NULL when some step does not exist. */
static json_t *path_get(json_t *root, const json_t *path, size_t n)
{
    json_t *cur = root;
    char buf[32];
    size_t i, idx;

    for (i = 0; i < n && cur != NULL; i++) {
        const json_t *el = path->u.arr.items[i];
        if (cur->type == JSON_ARRAY) {
            cur = path_index(el, &idx) == 0 ? json_array_get(cur, idx) : NULL;
        } else if (cur->type == JSON_OBJECT) {
            const char *key = path_key(el, buf, sizeof(buf));
            cur = key != NULL ? json_object_get(cur, key) : NULL;
        } else {
            cur = NULL;
        }
    }
    return cur;
}

/* Put v at path (the parent must exist; the last step may name a missing
 * object key or the next array slot). Takes ownership of v. */
static int path_set(json_t *root, const json_t *path, json_t *v)
{
    size_t n = path->u.arr.len, idx;
    json_t *parent = path_get(root, path, n - 1);
    const json_t *last = path->u.arr.items[n - 1];
    char buf[32];

    if (parent != NULL && parent->type == JSON_ARRAY && path_index(last, &idx) == 0) {
        if (idx < parent->u.arr.len)
            return json_array_set(parent, idx, v);
        if (idx == parent->u.arr.len)
            return json_array_append(parent, v);
    } else if (parent != NULL && parent->type == JSON_OBJECT) {
        const char *key = path_key(last, buf, sizeof(buf));
        if (key != NULL)
            return json_object_set(parent, key, v);
    }
    json_free(v);
    return -1;
}

/* Whether path a is a prefix of (or equal to) path b, element-wise with
 * string and integer forms of an index treated alike. */
static int path_is_prefix(const json_t *a, const json_t *b)
{
    char ba[32], bb[32];
    size_t i;

    if (a->u.arr.len > b->u.arr.len)
        return 0;
    for (i = 0; i < a->u.arr.len; i++) {
        const char *ka = path_key(a->u.arr.items[i], ba, sizeof(ba));
        const char *kb = path_key(b->u.arr.items[i], bb, sizeof(bb));
        if (ka == NULL || kb == NULL || strcmp(ka, kb) != 0)
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------
 * Parsing
 * ------------------------------------------------------------------------ */

/* A callback id: the key of a callbacks entry, s[0..n), digits only
 * (leading zeros allowed, as it is a string), at most
 * DNODE_MAX_CALLBACK_ID. 0 or -1. */
static int parse_callback_id(const char *s, size_t n, int64_t *id)
{
    int64_t v = 0;
    size_t i;

    if (n == 0)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
        if (v > DNODE_MAX_CALLBACK_ID)
            return -1;
    }
    *id = v;
    return 0;
}

static int apply_callbacks(dnode_msg_t *msg, const json_t *callbacks, size_t max, char *err,
                           size_t errlen)
{
    size_t i;

    if (callbacks == NULL || callbacks->type == JSON_NULL)
        return 0;
    if (callbacks->type != JSON_OBJECT) {
        snprintf(err, errlen, "callbacks must be an object");
        return -1;
    }
    /* Checked before any is applied: each is placed by a search of its
     * parent, so a huge map into a huge object would hold the loop. */
    if (callbacks->u.obj.len > max) {
        snprintf(err, errlen, "too many callbacks (%zu, at most %zu)", callbacks->u.obj.len,
                 max);
        return -1;
    }
    for (i = 0; i < callbacks->u.obj.len; i++) {
        const char *sid = callbacks->u.obj.keys[i];
        const json_t *path = callbacks->u.obj.vals[i];
        int64_t id;

        if (parse_callback_id(sid, strlen(sid), &id) < 0) {
            snprintf(err, errlen, "invalid callback id '%.32s'", sid);
            return -1;
        }
        if (!path_valid(path) || path_set(msg->args, path, json_callback(id)) < 0) {
            snprintf(err, errlen, "invalid path for callback %lld", (long long)id);
            return -1;
        }
        msg->ncallbacks++;
    }
    return 0;
}

/* Nodes in v, counting at most limit + 1 of them. */
static size_t count_nodes(const json_t *v, size_t limit)
{
    size_t n = 1, i, len;

    if (v->type != JSON_ARRAY && v->type != JSON_OBJECT)
        return 1;
    len = v->type == JSON_ARRAY ? v->u.arr.len : v->u.obj.len;
    for (i = 0; i < len && n <= limit; i++)
        n += count_nodes(v->type == JSON_ARRAY ? v->u.arr.items[i] : v->u.obj.vals[i],
                         limit - n);
    return n;
}

/* Links copy values, and a chain of them (a into b, then b into a, ...)
 * doubles the arguments each time: a message of a few hundred bytes could
 * take gigabytes and seconds of the loop. The reference implementation only
 * sends links for circular structures, which are refused anyway, so all the
 * links of one message together may copy no more nodes than the arguments
 * held before them. */
static int apply_links(dnode_msg_t *msg, const json_t *links, char *err, size_t errlen)
{
    size_t i, budget;

    if (links == NULL || links->type == JSON_NULL)
        return 0;
    if (links->type != JSON_ARRAY) {
        snprintf(err, errlen, "links must be an array");
        return -1;
    }
    budget = links->u.arr.len > 0 ? count_nodes(msg->args, SIZE_MAX - 1) : 0;
    for (i = 0; i < links->u.arr.len; i++) {
        const json_t *link = links->u.arr.items[i];
        const json_t *from = json_object_get(link, "from");
        const json_t *to = json_object_get(link, "to");
        json_t *value;
        size_t n;

        if (!path_valid(from) || !path_valid(to)) {
            snprintf(err, errlen, "link %zu: from and to must be paths", i);
            return -1;
        }
        if (path_is_prefix(from, to)) {
            snprintf(err, errlen, "link %zu: circular references are not supported", i);
            return -1;
        }
        value = path_get(msg->args, from, from->u.arr.len);
        if (value == NULL) {
            snprintf(err, errlen, "link %zu: nothing at its from path", i);
            return -1;
        }
        n = count_nodes(value, budget);
        if (n > budget) {
            snprintf(err, errlen, "link %zu: links copy more than the arguments hold", i);
            return -1;
        }
        budget -= n;
        if (path_set(msg->args, to, json_copy(value)) < 0) {
            snprintf(err, errlen, "link %zu: invalid to path", i);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * The common shape, read without a tree for the envelope
 *
 * Nearly every request a client sends looks the same:
 *   {"method":"read","arguments":[...],"callbacks":{"12":[2]},"links":[]}
 * Building a tree for the envelope only to take it apart costs a dozen
 * allocations a message, more than the arguments themselves. This reader
 * takes exactly that shape: the four members, each once, in any order,
 * with plain keys; a method name of printable ASCII without escapes, or a
 * callback id; arguments an array (read by json_parse_first); callbacks
 * entries whose id is plain digits and whose path is one array index into
 * the arguments (a number or a string of digits, as clients send it);
 * links empty. Anything else, well-formed or not, is handed untouched to
 * the general reader below, which decides and words every error, so the
 * two always agree: this one accepts a subset of what that one accepts,
 * with the same result.
 * ------------------------------------------------------------------------ */

#define COMMON_CALLBACKS 8 /* more in one message: the general reader */

typedef struct common {
    const char *p, *end;
} common_t;

static void common_ws(common_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

static int common_char(common_t *c, char ch)
{
    common_ws(c);
    if (c->p == c->end || *c->p != ch)
        return -1;
    c->p++;
    return 0;
}

/* A string without escapes of bytes 0x20..0x7e: *s, *n point into the
 * line. 0 or -1. */
static int common_plain_string(common_t *c, const char **s, size_t *n)
{
    const char *q;

    if (common_char(c, '"') < 0)
        return -1;
    for (q = c->p; q < c->end && *q != '"'; q++)
        if (*q == '\\' || (unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e)
            return -1;
    if (q == c->end)
        return -1;
    *s = c->p;
    *n = (size_t)(q - c->p);
    c->p = q + 1;
    return 0;
}

/* A number token of canonical digits, ended as JSON ends one. 0 or -1. */
static int common_number(common_t *c, int64_t *v)
{
    const char *q;

    common_ws(c);
    for (q = c->p; q < c->end && *q >= '0' && *q <= '9'; q++)
        ;
    if (index_digits(c->p, (size_t)(q - c->p), v) < 0)
        return -1;
    if (q < c->end && *q != ',' && *q != '}' && *q != ']' && *q != ' ' && *q != '\n' &&
        *q != '\r' && *q != '\t')
        return -1;
    c->p = q;
    return 0;
}

/* One of the four member names, quoted: its index in common_keys, or -1. */
static const struct {
    const char *text; /* with the closing quote */
    size_t len;
} common_keys[] = {{"method\"", 7}, {"arguments\"", 10}, {"callbacks\"", 10}, {"links\"", 6}};

static int common_key(common_t *c)
{
    size_t i;

    if (common_char(c, '"') < 0)
        return -1;
    for (i = 0; i < sizeof(common_keys) / sizeof(common_keys[0]); i++) {
        if ((size_t)(c->end - c->p) >= common_keys[i].len &&
            memcmp(c->p, common_keys[i].text, common_keys[i].len) == 0) {
            c->p += common_keys[i].len;
            return (int)i;
        }
    }
    return -1;
}

typedef struct common_cb {
    int64_t id;
    size_t index;
} common_cb_t;

/* {"<id>":[<index>], ...} into cbs; the count, or -1. */
static int common_callbacks(common_t *c, common_cb_t *cbs)
{
    const char *s;
    size_t n;
    int count = 0, i;

    if (common_char(c, '{') < 0)
        return -1;
    common_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return 0;
    }
    for (;;) {
        int64_t id, index;

        if (count == COMMON_CALLBACKS || common_plain_string(c, &s, &n) < 0 ||
            parse_callback_id(s, n, &id) < 0)
            return -1;
        for (i = 0; i < count; i++)
            if (cbs[i].id == id)
                return -1; /* a repeated key: the last wins there */
        if (common_char(c, ':') < 0 || common_char(c, '[') < 0)
            return -1;
        common_ws(c);
        if (c->p < c->end && *c->p == '"') {
            if (common_plain_string(c, &s, &n) < 0 || index_digits(s, n, &index) < 0)
                return -1;
        } else if (common_number(c, &index) < 0) {
            return -1;
        }
        if (common_char(c, ']') < 0)
            return -1;
        cbs[count].id = id;
        cbs[count].index = (size_t)index;
        count++;
        common_ws(c);
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            return count;
        }
        if (common_char(c, ',') < 0)
            return -1;
    }
}

/* 1 with msg filled, or 0: not the common shape (msg untouched). */
static int dnode_parse_common(const char *line, size_t len, size_t max_depth,
                              size_t max_callbacks, dnode_msg_t *msg)
{
    enum { KEY_METHOD, KEY_ARGUMENTS, KEY_CALLBACKS, KEY_LINKS }; /* as in common_keys */
    common_t c = {line, line};
    common_cb_t cbs[COMMON_CALLBACKS];
    const char *name = NULL;
    size_t namelen = 0, used;
    int64_t method_id = -1;
    json_t *args = NULL;
    int seen = 0, ncbs = 0, i;

    /* A callbacks path sits three levels deep (the message, the map, the
     * path), and counts against max_depth in the general reader too. An
     * empty message may come without a buffer (a WebSocket frame). */
    if (line == NULL || len == 0 || max_depth < 3)
        return 0;
    c.end = line + len;
    if (common_char(&c, '{') < 0)
        return 0;
    for (;;) {
        int k = common_key(&c);

        if (k < 0 || (seen & (1 << k)) || common_char(&c, ':') < 0)
            goto no;
        seen |= 1 << k;
        common_ws(&c);
        if (k == KEY_METHOD) {
            if (c.p < c.end && *c.p == '"') {
                if (common_plain_string(&c, &name, &namelen) < 0 || namelen == 0)
                    goto no;
            } else if (common_number(&c, &method_id) < 0) {
                goto no;
            }
        } else if (k == KEY_ARGUMENTS) {
            if (c.p == c.end || *c.p != '[')
                goto no;
            args = json_parse_first(c.p, (size_t)(c.end - c.p), max_depth - 1, &used);
            if (args == NULL)
                goto no;
            c.p += used;
        } else if (k == KEY_CALLBACKS) {
            ncbs = common_callbacks(&c, cbs);
            if (ncbs < 0 || (size_t)ncbs > max_callbacks)
                goto no;
        } else {
            if (common_char(&c, '[') < 0 || common_char(&c, ']') < 0)
                goto no;
        }
        common_ws(&c);
        if (c.p < c.end && *c.p == '}')
            break;
        if (common_char(&c, ',') < 0)
            goto no;
    }
    c.p++;
    common_ws(&c);
    if (c.p != c.end || !(seen & (1 << KEY_METHOD)) || !(seen & (1 << KEY_ARGUMENTS)))
        goto no;
    /* As the general reader places them: in order, each at an existing
     * index or the next one. */
    for (i = 0; i < ncbs; i++) {
        json_t *cb;

        if (cbs[i].index > args->u.arr.len)
            goto no;
        cb = json_callback(cbs[i].id);
        if (cbs[i].index < args->u.arr.len ? json_array_set(args, cbs[i].index, cb) < 0
                                           : json_array_append(args, cb) < 0)
            goto no;
    }
    if (name != NULL) {
        msg->method = strndup(name, namelen);
        if (msg->method == NULL)
            goto no;
    } else {
        msg->method_id = method_id;
    }
    msg->args = args;
    msg->ncallbacks = (size_t)ncbs;
    return 1;
no:
    json_free(args);
    return 0;
}

static int dnode_parse_opts(const char *line, size_t len, size_t max_depth, size_t max_callbacks,
                            int lenient, dnode_msg_t *msg, char *err, size_t errlen);

int dnode_parse_capped(const char *line, size_t len, size_t max_depth, size_t max_callbacks,
                       dnode_msg_t *msg, char *err, size_t errlen)
{
    return dnode_parse_opts(line, len, max_depth, max_callbacks, 0, msg, err, errlen);
}

int dnode_parse_salvage(const char *line, size_t len, size_t max_depth, size_t max_callbacks,
                        dnode_msg_t *msg)
{
    char err[128];

    return dnode_parse_opts(line, len, max_depth, max_callbacks, 1, msg, err, sizeof(err));
}

int dnode_parse(const char *line, size_t len, size_t max_depth, dnode_msg_t *msg, char *err,
                size_t errlen)
{
    return dnode_parse_capped(line, len, max_depth, DNODE_MAX_CALLBACKS, msg, err, errlen);
}

static int dnode_parse_opts(const char *line, size_t len, size_t max_depth, size_t max_callbacks,
                            int lenient, dnode_msg_t *msg, char *err, size_t errlen)
{
    char jerr[128];
    json_t *root = NULL;
    json_t *method;

    memset(msg, 0, sizeof(*msg));
    msg->method_id = -1;
    if (!lenient && dnode_parse_common(line, len, max_depth, max_callbacks, msg))
        return 0;
    root = lenient ? json_parse_lenient(line, len, max_depth, jerr, sizeof(jerr))
                   : json_parse(line, len, max_depth, jerr, sizeof(jerr));
    if (root == NULL) {
        snprintf(err, errlen, "malformed JSON: %s", jerr);
        return -1;
    }
    if (root->type != JSON_OBJECT) {
        snprintf(err, errlen, "a message must be a JSON object");
        goto fail;
    }
    method = json_object_get(root, "method");
    if (method != NULL && method->type == JSON_STRING) {
        if (method->u.str.len == 0 || memchr(method->u.str.s, '\0', method->u.str.len)) {
            snprintf(err, errlen, "invalid method name");
            goto fail;
        }
        msg->method = strdup(method->u.str.s);
        if (msg->method == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    } else if (method != NULL && method->type == JSON_NUMBER && method->u.num.is_int &&
               method->u.num.i >= 0 && method->u.num.i <= DNODE_MAX_CALLBACK_ID) {
        msg->method_id = method->u.num.i;
    } else {
        snprintf(err, errlen, "method must be a name or a callback id");
        goto fail;
    }
    msg->args = json_object_take(root, "arguments");
    if (msg->args == NULL || msg->args->type == JSON_NULL) {
        json_free(msg->args);
        msg->args = json_array();
        if (msg->args == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    } else if (msg->args->type != JSON_ARRAY) {
        snprintf(err, errlen, "arguments must be an array");
        goto fail;
    }
    if (apply_callbacks(msg, json_object_get(root, "callbacks"), max_callbacks, err, errlen) < 0)
        goto fail;
    if (apply_links(msg, json_object_get(root, "links"), err, errlen) < 0)
        goto fail;
    json_free(root);
    return 0;
fail:
    json_free(root);
    dnode_msg_clear(msg);
    return -1;
}

void dnode_msg_clear(dnode_msg_t *msg)
{
    free(msg->method);
    json_free(msg->args);
    memset(msg, 0, sizeof(*msg));
    msg->method_id = -1;
}

int64_t dnode_arg_callback(const json_t *args, size_t index)
{
    const json_t *v = json_array_get(args, index);
    return (v != NULL && v->type == JSON_CALLBACK) ? v->u.callback : -1;
}

/* ------------------------------------------------------------------------
 * Building
 * ------------------------------------------------------------------------ */

/* Walk args, adding {"id": [path...]} to callbacks for each JSON_CALLBACK.
 * path holds the elements leading to v (as strings). */
static int scrub(const json_t *v, json_t *path, json_t *callbacks)
{
    char buf[32], idbuf[32];
    size_t i;
    int rc = 0;

    if (v->type == JSON_CALLBACK) {
        snprintf(idbuf, sizeof(idbuf), "%lld", (long long)v->u.callback);
        return json_object_set(callbacks, idbuf, json_copy(path));
    }
    if (v->type != JSON_ARRAY && v->type != JSON_OBJECT)
        return 0;
    for (i = 0; rc == 0 && i < (v->type == JSON_ARRAY ? v->u.arr.len : v->u.obj.len); i++) {
        const char *key;
        const json_t *child;
        if (v->type == JSON_ARRAY) {
            snprintf(buf, sizeof(buf), "%zu", i);
            key = buf;
            child = v->u.arr.items[i];
        } else {
            key = v->u.obj.keys[i];
            child = v->u.obj.vals[i];
        }
        if (child->type != JSON_CALLBACK && child->type != JSON_ARRAY &&
            child->type != JSON_OBJECT)
            continue;
        if (json_array_append(path, json_string(key)) < 0)
            return -1;
        rc = scrub(child, path, callbacks);
        json_free(path->u.arr.items[--path->u.arr.len]);
    }
    return rc;
}

/* Whether v holds a JSON_CALLBACK node anywhere. */
static int has_callback(const json_t *v)
{
    size_t i;

    if (v->type == JSON_CALLBACK)
        return 1;
    if (v->type == JSON_ARRAY) {
        for (i = 0; i < v->u.arr.len; i++)
            if (has_callback(v->u.arr.items[i]))
                return 1;
    } else if (v->type == JSON_OBJECT) {
        for (i = 0; i < v->u.obj.len; i++)
            if (has_callback(v->u.obj.vals[i]))
                return 1;
    }
    return 0;
}

/* The callbacks map of args. Almost every message the server sends has
 * none, so the map is only built as a tree (ids kept unique the way
 * json_object_set keeps them) when there is one. */
static int append_callbacks(json_buf_t *b, const json_t *args)
{
    json_t *callbacks, *path;
    int rc = -1;

    if (args == NULL || !has_callback(args))
        return json_buf_append(b, "{}", 2);
    callbacks = json_object();
    path = json_array();
    if (callbacks != NULL && path != NULL && scrub(args, path, callbacks) == 0)
        rc = json_dump_append(b, callbacks);
    json_free(callbacks);
    json_free(path);
    return rc;
}

int dnode_build_append(json_buf_t *b, const char *method, int64_t method_id, const json_t *args)
{
    static const char head[] = "{\"method\":", argsep[] = ",\"arguments\":",
                      cbsep[] = ",\"callbacks\":", tail[] = ",\"links\":[]}\n";
    json_t id = {.type = JSON_NUMBER};

    if (json_buf_append(b, head, sizeof(head) - 1) < 0)
        return -1;
    if (method != NULL) {
        if (json_dump_string(b, method, strlen(method)) < 0)
            return -1;
    } else {
        id.u.num.i = method_id;
        id.u.num.d = (double)method_id;
        id.u.num.is_int = 1;
        if (json_dump_append(b, &id) < 0)
            return -1;
    }
    /* The writer puts "[Function]" where a callback is, so the arguments
     * are written as they are; the map says where those are. */
    if (json_buf_append(b, argsep, sizeof(argsep) - 1) < 0 ||
        (args != NULL ? json_dump_append(b, args) : json_buf_append(b, "[]", 2)) < 0 ||
        json_buf_append(b, cbsep, sizeof(cbsep) - 1) < 0 || append_callbacks(b, args) < 0 ||
        json_buf_append(b, tail, sizeof(tail) - 1) < 0)
        return -1;
    return 0;
}

char *dnode_build(const char *method, int64_t method_id, const json_t *args, size_t *len)
{
    json_buf_t b = {NULL, 0, 0};

    if (dnode_build_append(&b, method, method_id, args) < 0 || json_buf_append(&b, "", 1) < 0) {
        free(b.data);
        return NULL;
    }
    if (len != NULL)
        *len = b.len - 1;
    return b.data;
}

char *dnode_build_methods(const char *const *names, size_t n, size_t *len)
{
    json_t *args = json_array();
    json_t *obj = json_object();
    char *line = NULL;
    size_t i;

    if (args == NULL || obj == NULL) {
        json_free(args);
        json_free(obj);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        if (json_object_set(obj, names[i], json_callback((int64_t)i)) < 0) {
            json_free(obj);
            goto done;
        }
    }
    if (json_array_append(args, obj) < 0)
        goto done;
    line = dnode_build("methods", -1, args, len);
done:
    json_free(args);
    return line;
}
