/* model_validate: documents against their schema, the way Mongoose casts
 * and validates them (see model_validate.h): every path cast to its type,
 * defaults applied, validators run, every failure listed. */
#include "model_validate.h"

#include <stdarg.h>

#include "error.h"
#include "model_cast.h"

/* Mongoose's CastError kinds are not consistent in case; these are its own. */
static const char *const cast_kinds[] = {
    [FT_STRING] = "string", [FT_NUMBER] = "Number",     [FT_BOOLEAN] = "Boolean",
    [FT_DATE] = "date",     [FT_OBJECTID] = "ObjectId", [FT_MIXED] = "Mixed",
    [FT_ARRAY] = "Array",   [FT_NESTED] = "Object",
};

/* ================================================================ documents */

typedef struct doc_ctx {
    const model_t *m;
    json_t *errors; /* path -> error; made on the first failure */
    json_t *fatal;  /* InvalidRequest / too large / out of memory: stops everything */
    int defaults;   /* fill absent paths from their defaults */
    int64_t now;
    strbuf_t path; /* the path being cast, "items.0.name" */
} doc_ctx_t;

static int doc_fatal(doc_ctx_t *c, json_t *e)
{
    if (c->fatal == NULL)
        c->fatal = e != NULL ? e : error_new(ERROR_UNAVAILABLE, NULL, "out of memory");
    else
        json_free(e);
    return -1;
}

static int too_large(doc_ctx_t *c)
{
    return doc_fatal(c,
                     error_new(ERROR_INVALID_REQUEST, NULL, "%s: document too large", c->m->name));
}

static void add_error(doc_ctx_t *c, error_code_t code, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record the first failure of the current path (Mongoose reports one per
 * path). Allocation failures become c->fatal. */
static void add_error(doc_ctx_t *c, error_code_t code, const char *kind, const char *fmt, ...)
{
    char msg[512];
    const char *path = sb_str(&c->path);
    va_list ap;
    json_t *e = NULL;

    if (c->path.oom) {
        doc_fatal(c, NULL);
        return;
    }
    if (c->errors == NULL && (c->errors = json_object()) == NULL) {
        doc_fatal(c, NULL);
        return;
    }
    if (json_object_get(c->errors, path) != NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    e = json_object();
    if (e == NULL || json_object_set(e, "name", json_string(error_name(code))) < 0 ||
        json_object_set(e, "kind", json_string(kind)) < 0 ||
        json_object_set(e, "path", json_string(path)) < 0 ||
        json_object_set(e, "message", json_string(msg)) < 0) {
        json_free(e);
        doc_fatal(c, NULL);
        return;
    }
    if (json_object_set(c->errors, path, e) < 0)
        doc_fatal(c, NULL);
}

static void required_error(doc_ctx_t *c)
{
    add_error(c, ERROR_VALIDATOR, "required", "Path `%s` is required.", sb_str(&c->path));
}

/* kind is the element type's cast kind in brackets for array elements,
 * "[Number]", as Mongoose reports them. */
static void cast_error(doc_ctx_t *c, const char *kind, int in_array, const json_t *v)
{
    char txt[160], k[32];
    model_cast_value_text(v, txt, sizeof txt);
    snprintf(k, sizeof k, in_array ? "[%s]" : "%s", kind);
    add_error(c, ERROR_CAST, k, "Cast to %s failed for value \"%s\" at path \"%s\"", k, txt,
              sb_str(&c->path));
}

static int enum_has(const field_t *f, const cval_t *v)
{
    for (size_t i = 0; i < f->enumv->u.arr.len; i++) {
        const json_t *e = f->enumv->u.arr.items[i];
        if (v->kind == CV_STRING && e->type == JSON_STRING && e->u.str.len == v->slen &&
            memcmp(e->u.str.s, v->s, v->slen) == 0)
            return 1;
        if (v->kind == CV_NUMBER && e->type == JSON_NUMBER && model_cast_num(e) == v->d)
            return 1;
    }
    return 0;
}

static int regex_matches(const field_t *f, const cval_t *v)
{
    regmatch_t pm[1] = {{.rm_so = 0, .rm_eo = (regoff_t)v->slen}};
    return regexec(&f->re, v->s, 1, pm, REG_STARTEND) == 0;
}

/* Mongoose's built-in validators with its messages. null passes everything
 * but required; "" fails required on a String, as in Mongoose. */
static void validate_scalar(doc_ctx_t *c, const field_t *f, const cval_t *v)
{
    const char *p = sb_str(&c->path);
    char val[160], lim[64];

    if (v->kind == CV_NULL || (v->kind == CV_STRING && v->slen == 0 && f->required)) {
        if (f->required)
            required_error(c);
        return;
    }
    if (v->kind == CV_STRING) {
        json_t tmp = {.type = JSON_STRING};
        tmp.u.str.s = (char *)v->s;
        tmp.u.str.len = v->slen;
        model_cast_value_text(&tmp, val, sizeof val);
        size_t len = model_cast_utf16_length(v->s, v->slen);
        if (f->enumv != NULL && !enum_has(f, v))
            add_error(c, ERROR_VALIDATOR, "enum", "`%s` is not a valid enum value for path `%s`.",
                      val, p);
        else if (f->has_re && v->slen > 0 && !regex_matches(f, v))
            add_error(c, ERROR_VALIDATOR, "regexp", "Path `%s` is invalid (%s).", p, val);
        else if (f->has_minlen && len < f->minlen)
            add_error(c, ERROR_VALIDATOR, "minlength",
                      "Path `%s` (`%s`) is shorter than the minimum allowed length (%zu).", p, val,
                      f->minlen);
        else if (f->has_maxlen && len > f->maxlen)
            add_error(c, ERROR_VALIDATOR, "maxlength",
                      "Path `%s` (`%s`) is longer than the maximum allowed length (%zu).", p, val,
                      f->maxlen);
    } else if (v->kind == CV_NUMBER) {
        model_cast_format_number(v->d, val, sizeof val);
        if (f->enumv != NULL && !enum_has(f, v)) {
            add_error(c, ERROR_VALIDATOR, "enum", "`%s` is not a valid enum value for path `%s`.",
                      val, p);
        } else if (f->has_min && v->d < f->min) {
            model_cast_format_number(f->min, lim, sizeof lim);
            add_error(c, ERROR_VALIDATOR, "min",
                      "Path `%s` (%s) is less than minimum allowed value (%s).", p, val, lim);
        } else if (f->has_max && v->d > f->max) {
            model_cast_format_number(f->max, lim, sizeof lim);
            add_error(c, ERROR_VALIDATOR, "max",
                      "Path `%s` (%s) is more than maximum allowed value (%s).", p, val, lim);
        }
    } else if (v->kind == CV_DATE) {
        model_cast_format_date(v->ms, val, sizeof val);
        if (f->has_min && v->ms < f->min_ms) {
            model_cast_format_date(f->min_ms, lim, sizeof lim);
            add_error(c, ERROR_VALIDATOR, "min",
                      "Path `%s` (%s) is before minimum allowed value (%s).", p, val, lim);
        } else if (f->has_max && v->ms > f->max_ms) {
            model_cast_format_date(f->max_ms, lim, sizeof lim);
            add_error(c, ERROR_VALIDATOR, "max",
                      "Path `%s` (%s) is after maximum allowed value (%s).", p, val, lim);
        }
    }
}

static int doc_fields(doc_ctx_t *c, const field_t *nf, const json_t *data, const bson_t *cur,
                      bson_t *out);
static int doc_array(doc_ctx_t *c, const field_t *f, const json_t *v, bson_t *out, const char *key);

static int doc_scalar(doc_ctx_t *c, const field_t *f, const json_t *v, bson_t *out, const char *key,
                      int in_array)
{
    cval_t cv;
    if (model_cast_scalar(f->type, v, &cv) < 0) {
        cast_error(c, cast_kinds[f->type], in_array, v);
        return 0;
    }
    validate_scalar(c, f, &cv);
    return model_cast_append_value(out, key, &cv) ? 0 : too_large(c);
}

static int doc_mixed(doc_ctx_t *c, const field_t *f, const json_t *v, bson_t *out, const char *key)
{
    const char *bad;
    if (f->required && v->type == JSON_NULL)
        required_error(c);
    if (model_cast_append_json(out, key, v, &bad) == 0)
        return 0;
    if (bad == NULL)
        return too_large(c);
    return doc_fatal(c, error_new(ERROR_INVALID_REQUEST, NULL,
                                  "field name \"%.100s\" is not allowed (in %.200s): names may "
                                  "not start with '$' or contain '.'",
                                  bad, sb_str(&c->path)));
}

/* Subpaths are cast into their own document, stored only when something is
 * in it (Mongoose's minimize). */
static int doc_nested(doc_ctx_t *c, const field_t *f, const json_t *data, const bson_t *cur,
                      bson_t *out, const char *key)
{
    bson_t sub = BSON_INITIALIZER;
    int rc = doc_fields(c, f, data, cur, &sub);
    if (rc == 0 && !bson_empty(&sub) && !bson_append_document(out, key, -1, &sub))
        rc = too_large(c);
    bson_destroy(&sub);
    return rc;
}

/* An element of a document array: a subdocument with its own _id (kept
 * when the client sends one, new otherwise) and defaults applied, as
 * Mongoose does for every subdocument it creates. */
static int doc_subdoc(doc_ctx_t *c, const field_t *ef, const json_t *v, bson_t *out,
                      const char *key)
{
    bson_t sub = BSON_INITIALIZER;
    const json_t *id = json_object_get(v, "_id");
    cval_t cv;
    int rc = 0;

    size_t old = path_push(&c->path, "_id");
    if (id != NULL && id->type != JSON_NULL && id->type != JSON_CALLBACK) {
        if (model_cast_scalar(FT_OBJECTID, id, &cv) < 0)
            cast_error(c, cast_kinds[FT_OBJECTID], 0, id);
        else if (!model_cast_append_value(&sub, "_id", &cv))
            rc = too_large(c);
    } else {
        bson_oid_t oid;
        bson_oid_init(&oid, NULL);
        if (!bson_append_oid(&sub, "_id", -1, &oid))
            rc = too_large(c);
    }
    sb_setlen(&c->path, old);
    if (rc == 0) {
        int saved = c->defaults;
        c->defaults = 1;
        rc = doc_fields(c, ef, v, NULL, &sub);
        c->defaults = saved;
    }
    if (rc == 0 && !bson_append_document(out, key, -1, &sub))
        rc = too_large(c);
    bson_destroy(&sub);
    return rc;
}

static int doc_element(doc_ctx_t *c, const field_t *ef, const json_t *e, bson_t *out,
                       const char *key)
{
    switch (ef->type) {
    case FT_NESTED:
        if (e->type == JSON_NULL)
            return bson_append_null(out, key, -1) ? 0 : too_large(c);
        if (e->type != JSON_OBJECT) {
            cast_error(c, "Embedded", 0, e);
            return 0;
        }
        return doc_subdoc(c, ef, e, out, key);
    case FT_ARRAY:
        return doc_array(c, ef, e, out, key);
    case FT_MIXED:
        return doc_mixed(c, ef, e, out, key);
    default:
        return doc_scalar(c, ef, e, out, key, 1);
    }
}

/* Each element cast to the element type; a single value is wrapped into a
 * one-element array, as Mongoose does. */
static int doc_array(doc_ctx_t *c, const field_t *f, const json_t *v, bson_t *out, const char *key)
{
    bson_t arr;
    int rc = 0;
    char idx[16];
    const char *ik;
    static const json_t null_value = {.type = JSON_NULL};

    if (v->type == JSON_NULL) {
        if (f->required)
            required_error(c);
        return bson_append_null(out, key, -1) ? 0 : too_large(c);
    }
    if (!bson_append_array_begin(out, key, -1, &arr))
        return too_large(c);
    size_t n = v->type == JSON_ARRAY ? v->u.arr.len : 1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const json_t *e = v->type == JSON_ARRAY ? v->u.arr.items[i] : v;
        if (e->type == JSON_CALLBACK)
            e = &null_value;
        bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
        size_t old = path_push_index(&c->path, i);
        rc = doc_element(c, f->elem, e, &arr, ik);
        sb_setlen(&c->path, old);
    }
    if (!bson_append_array_end(out, &arr) && rc == 0)
        rc = too_large(c);
    return rc;
}

static int doc_value(doc_ctx_t *c, const field_t *f, const json_t *v, bson_t *out, const char *key)
{
    switch (f->type) {
    case FT_NESTED:
        if (v->type == JSON_NULL)
            return doc_nested(c, f, NULL, NULL, out, key);
        if (v->type != JSON_OBJECT) {
            cast_error(c, cast_kinds[FT_NESTED], 0, v);
            return 0;
        }
        return doc_nested(c, f, v, NULL, out, key);
    case FT_ARRAY:
        return doc_array(c, f, v, out, key);
    case FT_MIXED:
        return doc_mixed(c, f, v, out, key);
    default:
        return doc_scalar(c, f, v, out, key, 0);
    }
}

/* A path the client did not send, kept from the stored document. Mixed
 * values (and arrays of them) are copied byte for byte; typed ones go
 * through the same cast and validators again, which is lossless for them. */
static int doc_stored(doc_ctx_t *c, const field_t *f, bson_iter_t *it, bson_t *out, const char *key)
{
    if (f->type == FT_MIXED || (f->type == FT_ARRAY && f->elem->type == FT_MIXED)) {
        if (f->required && BSON_ITER_HOLDS_NULL(it))
            required_error(c);
        return bson_append_iter(out, key, -1, it) ? 0 : too_large(c);
    }
    if (f->type == FT_NESTED) {
        bson_t sub;
        uint32_t len;
        const uint8_t *data;
        if (BSON_ITER_HOLDS_DOCUMENT(it)) {
            bson_iter_document(it, &len, &data);
            if (bson_init_static(&sub, data, len))
                return doc_nested(c, f, NULL, &sub, out, key);
        }
        return doc_nested(c, f, NULL, NULL, out, key);
    }
    json_t *j = model_cast_bson_iter(it);
    if (j == NULL)
        return doc_fatal(c, NULL);
    int rc = doc_value(c, f, j, out, key);
    json_free(j);
    return rc;
}

static int doc_absent(doc_ctx_t *c, const field_t *f, bson_t *out, const char *key)
{
    if (f->type == FT_NESTED)
        return doc_nested(c, f, NULL, NULL, out, key);
    if (c->defaults) {
        if (f->def_now) {
            cval_t cv = {.kind = CV_DATE, .ms = c->now};
            validate_scalar(c, f, &cv);
            return model_cast_append_value(out, key, &cv) ? 0 : too_large(c);
        }
        if (f->def != NULL)
            return doc_value(c, f, f->def, out, key);
        if (f->type == FT_ARRAY) { /* Mongoose arrays start out empty */
            bson_t empty = BSON_INITIALIZER;
            bool ok = bson_append_array(out, key, -1, &empty);
            bson_destroy(&empty);
            return ok ? 0 : too_large(c);
        }
    }
    if (f->required)
        required_error(c);
    return 0;
}

/* The fields of nf in schema order: from data when present there, else
 * from the stored document cur, else absent (defaults, required). */
static int doc_fields(doc_ctx_t *c, const field_t *nf, const json_t *data, const bson_t *cur,
                      bson_t *out)
{
    for (size_t i = 0; i < nf->nkids; i++) {
        const field_t *f = &nf->kids[i];
        const json_t *v = data != NULL ? json_object_get(data, f->name) : NULL;
        bson_iter_t it;
        int rc;
        if (v != NULL && v->type == JSON_CALLBACK)
            v = NULL;
        size_t old = path_push(&c->path, f->name);
        if (c->path.oom)
            return doc_fatal(c, NULL);
        if (v != NULL)
            rc = doc_value(c, f, v, out, f->name);
        else if (cur != NULL && bson_iter_init_find(&it, cur, f->name))
            rc = doc_stored(c, f, &it, out, f->name);
        else
            rc = doc_absent(c, f, out, f->name);
        sb_setlen(&c->path, old);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Hand the document or the error out; frees what is not handed out. */
static bson_t *doc_finish(doc_ctx_t *c, bson_t *doc, int rc, json_t **error)
{
    free(c->path.s);
    if (rc == 0 && c->fatal == NULL && c->errors == NULL)
        return doc;
    bson_destroy(doc);
    if (c->fatal != NULL) {
        json_free(c->errors);
        *error = c->fatal;
        return NULL;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "%s validation failed", c->m->name);
    *error = error_new(ERROR_VALIDATION, c->errors, "%s", msg);
    if (*error == NULL)
        *error = error_new(ERROR_UNAVAILABLE, NULL, "out of memory");
    return NULL;
}

bson_t *model_prepare_create(const model_t *m, const json_t *data, json_t **error)
{
    doc_ctx_t c = {.m = m, .defaults = 1, .now = model_cast_now_ms()};
    bson_oid_t oid;
    int rc = 0;

    *error = NULL;
    if (data == NULL || data->type != JSON_OBJECT) {
        *error = error_new(ERROR_INVALID_REQUEST, NULL, "%s: data must be an object", m->name);
        return NULL;
    }
    const json_t *id = json_object_get(data, "_id");
    if (id != NULL && id->type != JSON_CALLBACK) {
        *error = error_new(ERROR_INVALID_REQUEST, NULL,
                           "%s: data must not carry _id (create makes a new document)", m->name);
        return NULL;
    }
    bson_t *doc = bson_new();
    bson_oid_init(&oid, NULL);
    if (!bson_append_oid(doc, "_id", -1, &oid))
        rc = too_large(&c);
    if (rc == 0)
        rc = doc_fields(&c, &m->root, data, NULL, doc);
    if (rc == 0 && !bson_append_int32(doc, "__v", -1, 0))
        rc = too_large(&c);
    return doc_finish(&c, doc, rc, error);
}

/* Stored fields the schema does not know (written by other programs) are
 * kept: Mongoose would only $set the paths it changed. */
bson_t *model_prepare_update(const model_t *m, const bson_t *current, const json_t *data,
                             json_t **error)
{
    doc_ctx_t c = {.m = m, .defaults = 0, .now = model_cast_now_ms()};
    bson_iter_t it;
    int rc = 0;

    *error = NULL;
    if (data == NULL || data->type != JSON_OBJECT) {
        *error = error_new(ERROR_INVALID_REQUEST, NULL, "%s: data must be an object", m->name);
        return NULL;
    }
    bson_t *doc = bson_new();
    if (bson_iter_init_find(&it, current, "_id") && !bson_append_iter(doc, "_id", -1, &it))
        rc = too_large(&c);
    if (rc == 0)
        rc = doc_fields(&c, &m->root, data, current, doc);
    if (rc == 0 && bson_iter_init(&it, current)) {
        while (rc == 0 && bson_iter_next(&it)) {
            const char *k = bson_iter_key(&it);
            if (strcmp(k, "_id") == 0 || strcmp(k, "__v") == 0 || find_kid(&m->root, k))
                continue;
            if (!bson_append_iter(doc, k, -1, &it))
                rc = too_large(&c);
        }
    }
    if (rc == 0) {
        bool ok = bson_iter_init_find(&it, current, "__v") ? bson_append_iter(doc, "__v", -1, &it)
                                                           : bson_append_int32(doc, "__v", -1, 0);
        if (!ok)
            rc = too_large(&c);
    }
    return doc_finish(&c, doc, rc, error);
}

int model_cast_id(const json_t *id, bson_oid_t *out, json_t **error)
{
    cval_t cv;
    char txt[160];
    *error = NULL;
    if (id != NULL && (id->type == JSON_STRING || id->type == JSON_OBJECT) &&
        model_cast_scalar(FT_OBJECTID, id, &cv) == 0 && cv.kind == CV_OID) {
        bson_oid_copy(&cv.oid, out);
        return 0;
    }
    model_cast_value_text(id, txt, sizeof txt);
    *error =
        error_new(ERROR_INVALID_REQUEST, NULL, "invalid _id \"%s\" (expected 24 hex digits)", txt);
    return -1;
}
