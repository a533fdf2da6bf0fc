/* model_query: the security boundary between a client's read options and
 * the database (see model_query.h): only schema paths, only allowlisted
 * operators, values cast to each path's type, size and depth capped. */
#include "model_query.h"

#include <stdarg.h>

#include "error.h"
#include "model_cast.h"
#include "model_regex.h"

/* Stand-ins the path resolver hands out for paths without their own spec. */
static const field_t id_field = {.type = FT_OBJECTID};
static const field_t mixed_field = {.type = FT_MIXED};

static const model_limits_t default_limits = {
    .max_read_limit = 1000,
    .max_query_depth = 8,
    .max_query_terms = 256,
    .max_regex_length = 256,
};

/* ================================================================ queries */

typedef struct qctx {
    model_limits_t lim;
    json_t *error; /* the first refusal */
} qctx_t;

static int q_fail(qctx_t *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int q_fail(qctx_t *q, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (q->error != NULL)
        return -1;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    q->error = error_new(ERROR_INVALID_REQUEST, NULL, "%s", msg);
    if (q->error == NULL)
        q->error = error_new(ERROR_UNAVAILABLE, NULL, "out of memory");
    return -1;
}

static int q_too_large(qctx_t *q) { return q_fail(q, "query too large"); }

static void limits_init(qctx_t *q, const model_limits_t *lim)
{
    q->lim = lim != NULL ? *lim : default_limits;
    if (q->lim.max_read_limit == 0)
        q->lim.max_read_limit = default_limits.max_read_limit;
    if (q->lim.max_query_depth == 0)
        q->lim.max_query_depth = default_limits.max_query_depth;
    if (q->lim.max_query_terms == 0)
        q->lim.max_query_terms = default_limits.max_query_terms;
    if (q->lim.max_regex_length == 0)
        q->lim.max_regex_length = default_limits.max_regex_length;
    q->error = NULL;
}

static const field_t *find_kid_n(const field_t *nf, const char *name, size_t n)
{
    for (size_t i = 0; i < nf->nkids; i++)
        if (strlen(nf->kids[i].name) == n && memcmp(nf->kids[i].name, name, n) == 0)
            return &nf->kids[i];
    return NULL;
}

static int all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return n > 0;
}

/* The spec at a dotted path below root (root NULL: a Mixed value, where any
 * path goes). As in MongoDB, an array path may be followed by an element
 * index ("items.0.name") or straight by element fields ("items.name").
 * _id is known on the root and on document-array elements. NULL: unknown. */
static const field_t *resolve_path(const field_t *root, const char *path)
{
    const field_t *cur = root != NULL ? root : &mixed_field;
    const char *seg = path;
    for (;;) {
        const char *dot = strchr(seg, '.');
        size_t n = dot != NULL ? (size_t)(dot - seg) : strlen(seg);
        if (n == 0 || seg[0] == '$')
            return NULL;
        for (;;) {
            if (cur->type == FT_MIXED)
                break;
            if (cur->type == FT_ARRAY) {
                cur = cur->elem;
                if (all_digits(seg, n))
                    break;
                continue;
            }
            if (cur->type != FT_NESTED)
                return NULL;
            const field_t *kid = find_kid_n(cur, seg, n);
            if (kid != NULL)
                cur = kid;
            else if (cur->has_id && n == 3 && memcmp(seg, "_id", 3) == 0)
                cur = &id_field;
            else
                return NULL;
            break;
        }
        if (dot == NULL)
            return cur;
        seg = dot + 1;
    }
}

static const char *const allowed_ops[] = {
    "$eq",  "$ne", "$gt",  "$gte", "$lt",  "$lte",       "$in",   "$nin",   "$exists",
    "$and", "$or", "$nor", "$not", "$all", "$elemMatch", "$size", "$regex", "$options",
};

static int op_allowed(const char *k)
{
    for (size_t i = 0; i < sizeof allowed_ops / sizeof allowed_ops[0]; i++)
        if (strcmp(k, allowed_ops[i]) == 0)
            return 1;
    return 0;
}

static int op_logical(const char *k)
{
    return strcmp(k, "$and") == 0 || strcmp(k, "$or") == 0 || strcmp(k, "$nor") == 0;
}

static int is_operator_object(const json_t *v)
{
    return v->type == JSON_OBJECT && v->u.obj.len > 0 && v->u.obj.keys[0][0] == '$';
}

/* Depth and size are measured on the client's tree before anything else:
 * the top-level object is depth 1; every key and array element is a term. */
static int q_measure(qctx_t *q, const json_t *v, size_t depth, size_t *terms)
{
    if (v->type != JSON_OBJECT && v->type != JSON_ARRAY)
        return 0;
    if (depth > q->lim.max_query_depth)
        return q_fail(q, "query nested deeper than %zu levels", q->lim.max_query_depth);
    size_t n = v->type == JSON_OBJECT ? v->u.obj.len : v->u.arr.len;
    *terms += n;
    if (*terms > q->lim.max_query_terms)
        return q_fail(q, "query has more than %zu terms", q->lim.max_query_terms);
    for (size_t i = 0; i < n; i++) {
        const json_t *c = v->type == JSON_OBJECT ? v->u.obj.vals[i] : v->u.arr.items[i];
        if (q_measure(q, c, depth + 1, terms) < 0)
            return -1;
    }
    return 0;
}

static int q_filter(qctx_t *q, const field_t *root, const json_t *filter, bson_t *out);
static int q_ops(qctx_t *q, const field_t *f, const char *path, const json_t *obj, bson_t *out);

/* A value compared with the path: cast to the path's type. On an array path
 * a single value is cast to the element type (MongoDB matches it against
 * the elements) and an array is an exact array of elements. */
static int q_value(qctx_t *q, const field_t *f, const char *path, const char *key, const json_t *v,
                   bson_t *out)
{
    char txt[160], idx[16];
    const char *ik, *bad;
    bson_t child;
    int rc = 0;

    switch (f->type) {
    case FT_ARRAY:
        if (v->type != JSON_ARRAY)
            return q_value(q, f->elem, path, key, v, out);
        if (!bson_append_array_begin(out, key, -1, &child))
            return q_too_large(q);
        for (size_t i = 0; i < v->u.arr.len && rc == 0; i++) {
            bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
            rc = q_value(q, f->elem, path, ik, v->u.arr.items[i], &child);
        }
        if (!bson_append_array_end(out, &child) && rc == 0)
            rc = q_too_large(q);
        return rc;
    case FT_NESTED:
        if (v->type == JSON_NULL)
            return bson_append_null(out, key, -1) ? 0 : q_too_large(q);
        if (v->type != JSON_OBJECT)
            break;
        if (!bson_append_document_begin(out, key, -1, &child))
            return q_too_large(q);
        for (size_t i = 0; i < v->u.obj.len && rc == 0; i++) {
            const char *k = v->u.obj.keys[i];
            const field_t *kid = find_kid(f, k);
            if (kid == NULL && f->has_id && strcmp(k, "_id") == 0)
                kid = &id_field;
            if (kid == NULL) {
                rc = k[0] == '$' ? q_fail(q, "operator %.60s is not allowed here", k)
                                 : q_fail(q, "unknown path \"%.200s.%.100s\"", path, k);
                break;
            }
            if (is_operator_object(v->u.obj.vals[i])) {
                rc = q_fail(q,
                            "operators may not appear inside a subdocument value (path "
                            "\"%.200s\")",
                            path);
                break;
            }
            rc = q_value(q, kid, path, k, v->u.obj.vals[i], &child);
        }
        if (!bson_append_document_end(out, &child) && rc == 0)
            rc = q_too_large(q);
        return rc;
    case FT_MIXED:
        if (model_cast_append_json(out, key, v, &bad) == 0)
            return 0;
        if (bad == NULL)
            return q_too_large(q);
        if (bad[0] == '$')
            return q_fail(q, "operator %.60s is not allowed here", bad);
        return q_fail(q, "field name \"%.100s\" is not allowed in a value", bad);
    default: {
        cval_t cv;
        if (model_cast_scalar(f->type, v, &cv) < 0)
            break;
        return model_cast_append_value(out, key, &cv) ? 0 : q_too_large(q);
    }
    }
    model_cast_value_text(v, txt, sizeof txt);
    return q_fail(q, "cannot cast \"%s\" to %s for path \"%.200s\"", txt,
                  model_cast_type_name(f->type), path);
}

static int q_list(qctx_t *q, const field_t *f, const char *path, const char *op, const json_t *v,
                  bson_t *out)
{
    bson_t arr;
    char idx[16];
    const char *ik;
    int rc = 0;
    if (v->type != JSON_ARRAY)
        return q_fail(q, "%s on \"%.200s\" takes an array", op, path);
    if (!bson_append_array_begin(out, op, -1, &arr))
        return q_too_large(q);
    for (size_t i = 0; i < v->u.arr.len && rc == 0; i++) {
        bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
        rc = q_value(q, f, path, ik, v->u.arr.items[i], &arr);
    }
    if (!bson_append_array_end(out, &arr) && rc == 0)
        rc = q_too_large(q);
    return rc;
}

static int q_regex(qctx_t *q, const field_t *f, const char *path, const json_t *v, bson_t *out)
{
    const field_t *leaf = f;
    while (leaf->type == FT_ARRAY)
        leaf = leaf->elem;
    if (leaf->type != FT_STRING && leaf->type != FT_MIXED)
        return q_fail(q, "$regex applies to String paths (\"%.200s\" is a %s)", path,
                      model_cast_type_name(leaf->type));
    if (v->type != JSON_STRING || strlen(v->u.str.s) != v->u.str.len)
        return q_fail(q, "$regex on \"%.200s\" takes a string", path);
    if (v->u.str.len > q->lim.max_regex_length)
        return q_fail(q, "$regex on \"%.200s\" is longer than %zu characters", path,
                      q->lim.max_regex_length);
    return bson_append_utf8(out, "$regex", -1, v->u.str.s, (int)v->u.str.len) ? 0 : q_too_large(q);
}

static int q_elem_match(qctx_t *q, const field_t *f, const char *path, const json_t *v, bson_t *out)
{
    bson_t child;
    int rc;
    if (f->type != FT_ARRAY && f->type != FT_MIXED)
        return q_fail(q, "$elemMatch applies to array paths (\"%.200s\" is a %s)", path,
                      model_cast_type_name(f->type));
    const field_t *ef = f->type == FT_ARRAY ? f->elem : &mixed_field;
    if (v->type != JSON_OBJECT || v->u.obj.len == 0)
        return q_fail(q, "$elemMatch on \"%.200s\" takes a non-empty object", path);
    if (!bson_append_document_begin(out, "$elemMatch", -1, &child))
        return q_too_large(q);
    if (is_operator_object(v) && !op_logical(v->u.obj.keys[0]))
        rc = q_ops(q, ef, path, v, &child);
    else if (ef->type == FT_NESTED || ef->type == FT_MIXED)
        rc = q_filter(q, ef->type == FT_NESTED ? ef : NULL, v, &child);
    else
        rc = q_fail(q, "$elemMatch on \"%.200s\" (an array of %s) takes operators", path,
                    model_cast_type_name(ef->type));
    if (!bson_append_document_end(out, &child) && rc == 0)
        rc = q_too_large(q);
    return rc;
}

/* {"$op": value, ...} on one path. */
static int q_ops(qctx_t *q, const field_t *f, const char *path, const json_t *obj, bson_t *out)
{
    for (size_t i = 0; i < obj->u.obj.len; i++) {
        const char *k = obj->u.obj.keys[i];
        const json_t *v = obj->u.obj.vals[i];
        int rc = 0;
        int64_t n;
        if (v->type == JSON_CALLBACK)
            continue;
        if (k[0] != '$')
            return q_fail(q, "cannot mix operators and values in the condition on \"%.200s\"",
                          path);
        if (!op_allowed(k))
            return q_fail(q, "operator %.60s is not allowed", k);
        if (op_logical(k))
            return q_fail(q, "operator %s belongs at the top of a filter, not on \"%.200s\"", k,
                          path);
        if (strcmp(k, "$eq") == 0 || strcmp(k, "$ne") == 0 || strcmp(k, "$gt") == 0 ||
            strcmp(k, "$gte") == 0 || strcmp(k, "$lt") == 0 || strcmp(k, "$lte") == 0) {
            rc = q_value(q, f, path, k, v, out);
        } else if (strcmp(k, "$in") == 0 || strcmp(k, "$nin") == 0 || strcmp(k, "$all") == 0) {
            rc = q_list(q, f, path, k, v, out);
        } else if (strcmp(k, "$exists") == 0) {
            int b;
            if (v->type == JSON_BOOL)
                b = v->u.boolean;
            else if (model_cast_integer(v, 0, 1, &n) == 0)
                b = (int)n;
            else
                return q_fail(q, "$exists on \"%.200s\" takes true or false", path);
            rc = bson_append_bool(out, k, -1, b) ? 0 : q_too_large(q);
        } else if (strcmp(k, "$size") == 0) {
            if (model_cast_integer(v, 0, INT32_MAX, &n) < 0)
                return q_fail(q, "$size on \"%.200s\" takes a non-negative integer", path);
            rc = bson_append_int32(out, k, -1, (int32_t)n) ? 0 : q_too_large(q);
        } else if (strcmp(k, "$regex") == 0) {
            rc = q_regex(q, f, path, v, out);
        } else if (strcmp(k, "$options") == 0) {
            if (json_object_get(obj, "$regex") == NULL)
                return q_fail(q, "$options on \"%.200s\" needs $regex", path);
            if (v->type != JSON_STRING || strlen(v->u.str.s) != v->u.str.len ||
                strspn(v->u.str.s, "imsx") != v->u.str.len)
                return q_fail(q, "$options on \"%.200s\" may only hold the flags i, m, s, x", path);
            rc = bson_append_utf8(out, k, -1, v->u.str.s, (int)v->u.str.len) ? 0 : q_too_large(q);
        } else if (strcmp(k, "$not") == 0) {
            bson_t child;
            if (!is_operator_object(v))
                return q_fail(q, "$not on \"%.200s\" takes an operator object", path);
            if (!bson_append_document_begin(out, k, -1, &child))
                return q_too_large(q);
            rc = q_ops(q, f, path, v, &child);
            if (!bson_append_document_end(out, &child) && rc == 0)
                rc = q_too_large(q);
        } else { /* $elemMatch */
            rc = q_elem_match(q, f, path, v, out);
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int q_logical(qctx_t *q, const field_t *root, const char *op, const json_t *v, bson_t *out)
{
    bson_t arr, child;
    char idx[16];
    const char *ik;
    int rc = 0;
    if (v->type != JSON_ARRAY || v->u.arr.len == 0)
        return q_fail(q, "%s takes a non-empty array of filters", op);
    if (!bson_append_array_begin(out, op, -1, &arr))
        return q_too_large(q);
    for (size_t i = 0; i < v->u.arr.len && rc == 0; i++) {
        bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
        if (v->u.arr.items[i]->type != JSON_OBJECT) {
            rc = q_fail(q, "%s takes a non-empty array of filters", op);
            break;
        }
        if (!bson_append_document_begin(&arr, ik, -1, &child)) {
            rc = q_too_large(q);
            break;
        }
        rc = q_filter(q, root, v->u.arr.items[i], &child);
        if (!bson_append_document_end(&arr, &child) && rc == 0)
            rc = q_too_large(q);
    }
    if (!bson_append_array_end(out, &arr) && rc == 0)
        rc = q_too_large(q);
    return rc;
}

static int q_filter(qctx_t *q, const field_t *root, const json_t *filter, bson_t *out)
{
    if (filter->type != JSON_OBJECT)
        return q_fail(q, "a filter must be an object");
    for (size_t i = 0; i < filter->u.obj.len; i++) {
        const char *k = filter->u.obj.keys[i];
        const json_t *v = filter->u.obj.vals[i];
        int rc;
        if (v->type == JSON_CALLBACK)
            continue;
        if (k[0] == '$') {
            if (op_logical(k))
                rc = q_logical(q, root, k, v, out);
            else if (op_allowed(k))
                rc = q_fail(q, "operator %s must be applied to a path", k);
            else
                rc = q_fail(q, "operator %.60s is not allowed", k);
        } else {
            const field_t *f = resolve_path(root, k);
            if (f == NULL)
                return q_fail(q, "unknown path \"%.200s\"", k);
            if (is_operator_object(v)) {
                bson_t child;
                if (!bson_append_document_begin(out, k, -1, &child))
                    return q_too_large(q);
                rc = q_ops(q, f, k, v, &child);
                if (!bson_append_document_end(out, &child) && rc == 0)
                    rc = q_too_large(q);
            } else {
                rc = q_value(q, f, k, k, v, out);
            }
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

bson_t *model_sanitize_filter(const model_t *m, const json_t *query, const model_limits_t *lim,
                              json_t **error)
{
    qctx_t q;
    size_t terms = 0;
    limits_init(&q, lim);
    *error = NULL;
    if (query == NULL || query->type == JSON_NULL)
        return bson_new();
    if (query->type != JSON_OBJECT) {
        *error = error_new(ERROR_INVALID_REQUEST, NULL, "%s: query must be an object", m->name);
        return NULL;
    }
    if (q_measure(&q, query, 1, &terms) < 0) {
        *error = q.error;
        return NULL;
    }
    bson_t *out = bson_new();
    if (q_filter(&q, &m->root, query, out) < 0) {
        bson_destroy(out);
        *error = q.error;
        return NULL;
    }
    return out;
}

/* ================================================================ sort, fields */

/* 1 / -1, or Mongoose's words for them. */
static int sort_direction(const json_t *v, int *dir)
{
    if (v->type == JSON_NUMBER && (model_cast_num(v) == 1 || model_cast_num(v) == -1)) {
        *dir = model_cast_num(v) == 1 ? 1 : -1;
        return 0;
    }
    if (v->type == JSON_STRING) {
        const char *s = v->u.str.s;
        if (strcmp(s, "asc") == 0 || strcmp(s, "ascending") == 0) {
            *dir = 1;
            return 0;
        }
        if (strcmp(s, "desc") == 0 || strcmp(s, "descending") == 0) {
            *dir = -1;
            return 0;
        }
    }
    return -1;
}

static int sort_add(qctx_t *q, const model_t *m, bson_t *sort, const char *path, size_t n, int dir)
{
    char key[512];
    bson_iter_t it;
    if (n == 0 || n >= sizeof key)
        return q_fail(q, "unknown path \"%.*s\" in sort", (int)(n > 200 ? 200 : n), path);
    memcpy(key, path, n);
    key[n] = '\0';
    if (resolve_path(&m->root, key) == NULL)
        return q_fail(q, "unknown path \"%.200s\" in sort", key);
    if (bson_iter_init_find(&it, sort, key))
        return 0; /* the first mention decides */
    if (bson_count_keys(sort) >= q->lim.max_query_terms)
        return q_fail(q, "sort has more than %zu paths", q->lim.max_query_terms);
    return bson_append_int32(sort, key, -1, dir) ? 0 : q_too_large(q);
}

/* "-a b": space-separated paths, '-' for descending. */
static int sort_string(qctx_t *q, const model_t *m, bson_t *sort, const char *s)
{
    while (*s) {
        while (model_cast_is_space(*s))
            s++;
        if (!*s)
            break;
        const char *start = s;
        while (*s && !model_cast_is_space(*s))
            s++;
        int dir = 1;
        if (*start == '-') {
            dir = -1;
            start++;
        }
        if (sort_add(q, m, sort, start, (size_t)(s - start), dir) < 0)
            return -1;
    }
    return 0;
}

static int sort_parse(qctx_t *q, const model_t *m, const json_t *v, bson_t *sort)
{
    int dir;
    char txt[160];
    if (v == NULL || v->type == JSON_NULL)
        return 0;
    if (v->type == JSON_STRING)
        return sort_string(q, m, sort, v->u.str.s);
    if (v->type == JSON_ARRAY) {
        for (size_t i = 0; i < v->u.arr.len; i++) {
            const json_t *pair = v->u.arr.items[i];
            if (pair->type != JSON_ARRAY || pair->u.arr.len != 2 ||
                pair->u.arr.items[0]->type != JSON_STRING)
                return q_fail(q, "sort as an array takes [path, direction] pairs");
            const json_t *p = pair->u.arr.items[0];
            if (sort_direction(pair->u.arr.items[1], &dir) < 0) {
                model_cast_value_text(pair->u.arr.items[1], txt, sizeof txt);
                return q_fail(q, "sort direction \"%s\" for \"%.200s\" is not 1 or -1", txt,
                              p->u.str.s);
            }
            if (sort_add(q, m, sort, p->u.str.s, strlen(p->u.str.s), dir) < 0)
                return -1;
        }
        return 0;
    }
    if (v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->u.obj.len; i++) {
            const char *k = v->u.obj.keys[i];
            if (sort_direction(v->u.obj.vals[i], &dir) < 0) {
                model_cast_value_text(v->u.obj.vals[i], txt, sizeof txt);
                return q_fail(q, "sort direction \"%s\" for \"%.200s\" is not 1 or -1", txt, k);
            }
            if (sort_add(q, m, sort, k, strlen(k), dir) < 0)
                return -1;
        }
        return 0;
    }
    return q_fail(q, "sort is a string, an array of [path, direction] or an object");
}

int model_sanitize_sorting(const model_t *m, const json_t *sorting, const model_limits_t *lim,
                           model_sorting_t *out, json_t **error)
{
    qctx_t q;
    int64_t n;
    limits_init(&q, lim);
    *error = NULL;
    out->sort = bson_new();
    out->limit = (int64_t)q.lim.max_read_limit;
    out->skip = 0;
    if (sorting == NULL || sorting->type == JSON_NULL)
        return 0;
    if (sorting->type != JSON_OBJECT) {
        q_fail(&q, "sorting must be an object {sort, limit, skip}");
        goto fail;
    }
    for (size_t i = 0; i < sorting->u.obj.len; i++) {
        const char *k = sorting->u.obj.keys[i];
        const json_t *v = sorting->u.obj.vals[i];
        if (strcmp(k, "sort") == 0) {
            if (sort_parse(&q, m, v, out->sort) < 0)
                goto fail;
        } else if (strcmp(k, "limit") == 0) {
            if (v->type == JSON_NULL)
                continue;
            if (model_cast_integer(v, 0, INT64_MAX, &n) < 0) {
                q_fail(&q, "limit must be a non-negative integer");
                goto fail;
            }
            if (n > 0 && (uint64_t)n < q.lim.max_read_limit)
                out->limit = n;
        } else if (strcmp(k, "skip") == 0) {
            if (v->type == JSON_NULL)
                continue;
            if (model_cast_integer(v, 0, INT64_MAX, &n) < 0) {
                q_fail(&q, "skip must be a non-negative integer");
                goto fail;
            }
            out->skip = n;
        } else if (v->type != JSON_CALLBACK) {
            q_fail(&q, "unknown sorting option \"%.60s\" (expected sort, limit, skip)", k);
            goto fail;
        }
    }
    return 0;
fail:
    model_sorting_clear(out);
    *error = q.error;
    return -1;
}

void model_sorting_clear(model_sorting_t *s)
{
    if (s->sort != NULL)
        bson_destroy(s->sort);
    s->sort = NULL;
    s->limit = 0;
    s->skip = 0;
}

typedef struct proj {
    bson_t *doc;
    size_t included, excluded; /* not counting _id */
} proj_t;

static int proj_add(qctx_t *q, const model_t *m, proj_t *p, const char *path, int include)
{
    bson_iter_t it;
    if (path[0] == '$')
        return q_fail(q, "projection operator %.60s is not allowed", path);
    if (resolve_path(&m->root, path) == NULL)
        return q_fail(q, "unknown path \"%.200s\" in fields", path);
    if (strcmp(path, "_id") != 0) {
        *(include ? &p->included : &p->excluded) += 1;
        if (p->included && p->excluded)
            return q_fail(q, "fields cannot mix inclusion and exclusion (except for _id)");
    }
    if (bson_iter_init_find(&it, p->doc, path))
        return 0;
    return bson_append_int32(p->doc, path, -1, include) ? 0 : q_too_large(q);
}

/* One word of the string and array forms: "a" includes, "-a" excludes. */
static int proj_word(qctx_t *q, const model_t *m, proj_t *p, const char *w, size_t n)
{
    char key[512];
    int include = 1;
    if (n > 0 && w[0] == '-') {
        include = 0;
        w++;
        n--;
    }
    if (n == 0 || n >= sizeof key)
        return q_fail(q, "unknown path \"%.*s\" in fields", (int)(n > 200 ? 200 : n), w);
    memcpy(key, w, n);
    key[n] = '\0';
    return proj_add(q, m, p, key, include);
}

bson_t *model_sanitize_fields(const model_t *m, const json_t *fields, json_t **error)
{
    qctx_t q;
    char txt[160];
    proj_t p = {.doc = bson_new()};
    limits_init(&q, NULL);
    *error = NULL;
    if (fields == NULL || fields->type == JSON_NULL)
        return p.doc;
    if (fields->type == JSON_STRING) {
        const char *s = fields->u.str.s;
        while (*s) {
            while (model_cast_is_space(*s))
                s++;
            const char *start = s;
            while (*s && !model_cast_is_space(*s))
                s++;
            if (s > start && proj_word(&q, m, &p, start, (size_t)(s - start)) < 0)
                goto fail;
        }
    } else if (fields->type == JSON_ARRAY) {
        for (size_t i = 0; i < fields->u.arr.len; i++) {
            const json_t *w = fields->u.arr.items[i];
            if (w->type != JSON_STRING) {
                q_fail(&q, "fields as an array takes path names");
                goto fail;
            }
            if (proj_word(&q, m, &p, w->u.str.s, strlen(w->u.str.s)) < 0)
                goto fail;
        }
    } else if (fields->type == JSON_OBJECT) {
        for (size_t i = 0; i < fields->u.obj.len; i++) {
            const char *k = fields->u.obj.keys[i];
            const json_t *v = fields->u.obj.vals[i];
            int include;
            if (v->type == JSON_BOOL) {
                include = v->u.boolean;
            } else if (v->type == JSON_NUMBER &&
                       (model_cast_num(v) == 0 || model_cast_num(v) == 1)) {
                include = model_cast_num(v) == 1;
            } else if (is_operator_object(v)) {
                q_fail(&q, "projection operator %.60s is not allowed", v->u.obj.keys[0]);
                goto fail;
            } else {
                model_cast_value_text(v, txt, sizeof txt);
                q_fail(&q, "fields values must be 0 or 1 (\"%.200s\": %s)", k, txt);
                goto fail;
            }
            if (proj_add(&q, m, &p, k, include) < 0)
                goto fail;
        }
    } else {
        q_fail(&q, "fields is an array of paths, a string of paths or an object {path: 0|1}");
        goto fail;
    }
    return p.doc;
fail:
    bson_destroy(p.doc);
    *error = q.error;
    return NULL;
}

int model_path_known(const model_t *m, const char *path)
{
    return resolve_path(&m->root, path) != NULL;
}
