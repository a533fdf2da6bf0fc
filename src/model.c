/* model: the models file and the set of models it defines (see model.h):
 * loading and checking the file (types, options, validators, indexes),
 * lookups, and Mongoose's collection names. The jobs done with a loaded
 * model live beside it: model_cast, model_validate, model_query. It keeps
 * no state beyond the loaded (then immutable) model set. */
#include "model.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>

#include "model_cast.h"
#include "model_regex.h"

static void field_clear(field_t *f)
{
    if (f == NULL)
        return;
    free(f->name);
    if (f->elem != NULL) {
        field_clear(f->elem);
        free(f->elem);
    }
    for (size_t i = 0; i < f->nkids; i++)
        field_clear(&f->kids[i]);
    free(f->kids);
    json_free(f->def);
    json_free(f->enumv);
    if (f->has_re)
        regfree(&f->re);
    rule_free(f->hide_if);
    free(f->set_from);
    memset(f, 0, sizeof *f);
}

static void model_free(model_t *m)
{
    if (m == NULL)
        return;
    free(m->name);
    free(m->collection);
    field_clear(&m->root);
    for (size_t i = 0; i < m->nidx; i++)
        free(m->idx[i].path);
    free(m->idx);
    for (size_t i = 0; i < MODEL_OPS; i++)
        rule_free(m->rules[i]);
    for (size_t i = 0; i < m->npush_options; i++)
        free(m->push_options[i]);
    free(m->push_options);
    free(m);
}

void model_set_free(model_set_t *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->n; i++)
        model_free(set->models[i]);
    free(set->models);
    for (size_t i = 0; i < set->nchannels; i++) {
        model_channel_t *c = &set->channels[i];
        free(c->pattern);
        rule_free(c->subscribe);
        rule_free(c->publish);
        rule_free(c->presence);
    }
    free(set->channels);
    free(set);
}

const model_t *model_set_find(const model_set_t *set, const char *type)
{
    if (set == NULL || type == NULL)
        return NULL;
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->models[i]->name, type) == 0)
            return set->models[i];
    return NULL;
}

size_t model_set_count(const model_set_t *set) { return set ? set->n : 0; }

const model_t *model_set_at(const model_set_t *set, size_t i)
{
    return set && i < set->n ? set->models[i] : NULL;
}

const char *model_name(const model_t *m) { return m->name; }
const char *model_collection(const model_t *m) { return m->collection; }
int model_versioned(const model_t *m) { return m->versioned; }
size_t model_index_count(const model_t *m) { return m->nidx; }

int model_index_at(const model_t *m, size_t i, const char **path, int *unique)
{
    if (i >= m->nidx)
        return -1;
    *path = m->idx[i].path;
    *unique = m->idx[i].unique;
    return 0;
}

/* ================================================================ loading */

typedef struct loader {
    const char *model;
    strbuf_t path; /* the field being read, for messages */
    int top;       /* reading a field of the document itself, not of a subdocument */
    char *err;
    size_t errlen;
} loader_t;

static int load_fail(loader_t *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes one line naming the model and field into L->err; returns -1. */
static int load_fail(loader_t *L, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (L->err == NULL || L->errlen == 0)
        return -1;
    if (L->model != NULL && L->path.len > 0)
        snprintf(L->err, L->errlen, "model \"%.100s\", field \"%.200s\": %s", L->model,
                 sb_str(&L->path), msg);
    else if (L->model != NULL)
        snprintf(L->err, L->errlen, "model \"%.100s\": %s", L->model, msg);
    else
        snprintf(L->err, L->errlen, "%s", msg);
    return -1;
}

/* Mongoose upper-cases the first letter of a type name, so "string" works. */
static int parse_type_name(const char *s, ftype_t *t)
{
    static const ftype_t scalars[] = {FT_STRING, FT_NUMBER,   FT_BOOLEAN,
                                      FT_DATE,   FT_OBJECTID, FT_MIXED};
    for (size_t i = 0; i < sizeof scalars / sizeof scalars[0]; i++) {
        const char *name = model_cast_type_name(scalars[i]);
        if (strcmp(s, name) == 0 ||
            (s[0] == name[0] + ('a' - 'A') && strcmp(s + 1, name + 1) == 0)) {
            *t = scalars[i];
            return 0;
        }
    }
    return -1;
}

static int check_field_name(loader_t *L, const char *name, int has_id, int root)
{
    if (name[0] == '\0')
        return load_fail(L, "empty field name");
    if (!model_cast_safe_key(name))
        return load_fail(L, "field names may not start with '$' or contain '.'");
    if (has_id && strcmp(name, "_id") == 0)
        return load_fail(L, "_id is reserved (every document gets an ObjectId _id)");
    if (root && strcmp(name, "__v") == 0)
        return load_fail(L, "__v is reserved for the version key");
    return 0;
}

static int parse_spec(loader_t *L, const json_t *v, field_t *f);

static int parse_nested(loader_t *L, const json_t *obj, field_t *f, int root)
{
    f->type = FT_NESTED;
    if (obj->u.obj.len == 0)
        return 0;
    f->kids = calloc(obj->u.obj.len, sizeof *f->kids);
    if (f->kids == NULL)
        return load_fail(L, "out of memory");
    for (size_t i = 0; i < obj->u.obj.len; i++) {
        const char *key = obj->u.obj.keys[i];
        size_t old = path_push(&L->path, key);
        field_t *kid = &f->kids[f->nkids++];
        if (check_field_name(L, key, f->has_id, root) < 0)
            return -1;
        kid->name = strdup(key);
        if (kid->name == NULL)
            return load_fail(L, "out of memory");
        int was_top = L->top;
        L->top = root;
        int rc = parse_spec(L, obj->u.obj.vals[i], kid);
        L->top = was_top;
        if (rc < 0)
            return -1;
        sb_setlen(&L->path, old);
    }
    return 0;
}

/* [] is an array of Mixed, [spec] an array of spec; an element that is a
 * nested object makes a document array whose elements get their own _id. */
static int parse_array(loader_t *L, const json_t *arr, field_t *f)
{
    f->type = FT_ARRAY;
    f->elem = calloc(1, sizeof *f->elem);
    if (f->elem == NULL)
        return load_fail(L, "out of memory");
    if (arr->u.arr.len == 0) {
        f->elem->type = FT_MIXED;
        return 0;
    }
    if (arr->u.arr.len > 1)
        return load_fail(L, "an array type lists exactly one element type");
    const json_t *e = arr->u.arr.items[0];
    int nested = 0;
    if (e->type == JSON_OBJECT) {
        const json_t *t = json_object_get(e, "type");
        nested = e->u.obj.len > 0 && (t == NULL || t->type == JSON_OBJECT);
    }
    int was_top = L->top, rc;
    L->top = 0; /* permissions go on the array field, not its elements */
    if (nested) {
        f->elem->has_id = 1;
        rc = parse_nested(L, e, f->elem, 0);
    } else {
        rc = parse_spec(L, e, f->elem);
    }
    L->top = was_top;
    return rc;
}

/* A value a default (or an enum entry) must cast to; 0 or -1. */
static int castable(const field_t *f, const json_t *v)
{
    cval_t c;
    const char *bad;
    switch (f->type) {
    case FT_MIXED: {
        bson_t scratch = BSON_INITIALIZER;
        int rc = model_cast_append_json(&scratch, "v", v, &bad);
        bson_destroy(&scratch);
        return rc;
    }
    case FT_ARRAY:
        if (v->type == JSON_NULL)
            return 0;
        if (v->type != JSON_ARRAY)
            return castable(f->elem, v);
        for (size_t i = 0; i < v->u.arr.len; i++)
            if (castable(f->elem, v->u.arr.items[i]) < 0)
                return -1;
        return 0;
    case FT_NESTED:
        if (v->type == JSON_NULL)
            return 0;
        if (v->type != JSON_OBJECT)
            return -1;
        for (size_t i = 0; i < f->nkids; i++) {
            const json_t *kv = json_object_get(v, f->kids[i].name);
            if (kv != NULL && castable(&f->kids[i], kv) < 0)
                return -1;
        }
        return 0;
    default:
        return model_cast_scalar(f->type, v, &c);
    }
}

static int parse_match(loader_t *L, const json_t *v, field_t *f)
{
    const json_t *pat = v, *flags = NULL;
    int cflags = REG_EXTENDED | REG_NOSUB;
    if (v->type == JSON_ARRAY && (v->u.arr.len == 1 || v->u.arr.len == 2)) {
        pat = v->u.arr.items[0];
        flags = v->u.arr.len == 2 ? v->u.arr.items[1] : NULL;
    }
    if (pat->type != JSON_STRING || strlen(pat->u.str.s) != pat->u.str.len)
        return load_fail(L, "match must be a pattern string or [pattern, flags]");
    if (flags != NULL) {
        if (flags->type != JSON_STRING)
            return load_fail(L, "match flags must be a string");
        for (const char *p = flags->u.str.s; *p; p++) {
            if (*p != 'i')
                return load_fail(L, "match flag '%c' is not supported (only \"i\")", *p);
            cflags |= REG_ICASE;
        }
    }
    strbuf_t re = {0};
    char why[128];
    if (model_regex_translate(pat->u.str.s, &re, why, sizeof why) < 0) {
        free(re.s);
        return load_fail(L, "bad regular expression in match: %s", why);
    }
    if (re.s != NULL && model_regex_too_big(re.s)) {
        free(re.s);
        return load_fail(L, "bad regular expression in match: too many repetitions");
    }
    int rc = regcomp(&f->re, re.s != NULL ? re.s : "", cflags);
    free(re.s);
    if (rc != 0) {
        regerror(rc, &f->re, why, sizeof why);
        return load_fail(L, "bad regular expression in match: %s", why);
    }
    f->has_re = 1;
    return 0;
}

static int parse_bool_opt(loader_t *L, const char *opt, const json_t *v, int *out)
{
    if (v->type != JSON_BOOL)
        return load_fail(L, "%s must be true or false", opt);
    *out = v->u.boolean;
    return 0;
}

static int parse_length_opt(loader_t *L, const char *opt, const json_t *v, size_t *out)
{
    int64_t n;
    if (model_cast_integer(v, 0, INT32_MAX, &n) < 0)
        return load_fail(L, "%s must be a non-negative integer", opt);
    *out = (size_t)n;
    return 0;
}

static int parse_bound(loader_t *L, const char *opt, const json_t *v, field_t *f, int is_max)
{
    if (f->type == FT_NUMBER) {
        if (v->type != JSON_NUMBER)
            return load_fail(L, "%s must be a number", opt);
        *(is_max ? &f->max : &f->min) = model_cast_num(v);
    } else {
        cval_t c;
        if (model_cast_date(v, &c) < 0 || c.kind != CV_DATE)
            return load_fail(L, "%s must be a date (ISO-8601 string or epoch milliseconds)", opt);
        *(is_max ? &f->max_ms : &f->min_ms) = c.ms;
    }
    *(is_max ? &f->has_max : &f->has_min) = 1;
    return 0;
}

static int parse_enum(loader_t *L, const json_t *v, field_t *f)
{
    if (v->type != JSON_ARRAY || v->u.arr.len == 0)
        return load_fail(L, "enum must be a non-empty array");
    f->enumv = json_array();
    if (f->enumv == NULL)
        return load_fail(L, "out of memory");
    for (size_t i = 0; i < v->u.arr.len; i++) {
        cval_t c;
        char txt[128];
        json_t *e;
        if (model_cast_scalar(f->type, v->u.arr.items[i], &c) < 0 || c.kind == CV_NULL) {
            model_cast_value_text(v->u.arr.items[i], txt, sizeof txt);
            return load_fail(L, "enum value \"%s\" is not a %s", txt,
                             model_cast_type_name(f->type));
        }
        e = c.kind == CV_STRING ? json_stringn(c.s, c.slen) : json_double(c.d);
        if (json_array_append(f->enumv, e) < 0)
            return load_fail(L, "out of memory");
    }
    return 0;
}

/* {"type": T, options...}. Which options apply to which type follows
 * Mongoose: enum on String and Number, min/max on Number and Date,
 * minlength/maxlength/match on String, ref (ignored) on ObjectId. */
/* A rule as the models file writes it: an expression, or true / false.
 * roots: the names it may use. NULL with the reason in L. */
static rule_t *parse_rule(loader_t *L, const char *what, const json_t *v, unsigned roots)
{
    char err[200];
    const char *text;
    rule_t *r;

    if (v->type == JSON_BOOL)
        text = v->u.boolean ? "true" : "false";
    else if (v->type == JSON_STRING && strlen(v->u.str.s) == v->u.str.len)
        text = v->u.str.s;
    else {
        load_fail(L, "%s must be an expression (a string) or true/false", what);
        return NULL;
    }
    r = rule_compile(text, roots, err, sizeof err);
    if (r == NULL)
        load_fail(L, "%s: %s", what, err);
    return r;
}

/* readonly, hidden, set_from. */
static int parse_access_opt(loader_t *L, const char *k, const json_t *v, field_t *f)
{
    if (strcmp(k, "readonly") == 0)
        return parse_bool_opt(L, k, v, &f->readonly);
    if (strcmp(k, "hidden") == 0) {
        if (v->type == JSON_BOOL) {
            f->hidden = v->u.boolean;
            return 0;
        }
        f->hide_if = parse_rule(L, "hidden", v, RULE_AUTH | RULE_DOC);
        return f->hide_if != NULL ? 0 : -1;
    }
    /* set_from: "auth.<claim>" */
    if (v->type != JSON_STRING || strncmp(v->u.str.s, "auth.", 5) != 0 || v->u.str.s[5] == '\0' ||
        strlen(v->u.str.s) != v->u.str.len || strlen(v->u.str.s) > 200)
        return load_fail(L, "set_from must name a claim of the token, as in \"auth.sub\"");
    for (const char *c = v->u.str.s + 5; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '_' || (*c == '.' && c[1] != '.' && c[1])))
            return load_fail(L, "set_from must name a claim of the token, as in \"auth.sub\"");
    if (f->type != FT_STRING && f->type != FT_NUMBER && f->type != FT_MIXED && f->type != FT_ARRAY)
        return load_fail(L, "set_from applies to a String, Number, Mixed or array field");
    f->set_from = strdup(v->u.str.s + 5);
    return f->set_from != NULL ? 0 : load_fail(L, "out of memory");
}

static int parse_options(loader_t *L, const json_t *obj, field_t *f)
{
    const json_t *t = json_object_get(obj, "type");
    if (t->type == JSON_ARRAY) {
        if (parse_array(L, t, f) < 0)
            return -1;
    } else if (parse_type_name(t->u.str.s, &f->type) < 0) {
        return load_fail(L, "unknown type \"%.60s\"", t->u.str.s);
    }
    const json_t *def = NULL;
    for (size_t i = 0; i < obj->u.obj.len; i++) {
        const char *k = obj->u.obj.keys[i];
        const json_t *v = obj->u.obj.vals[i];
        ftype_t ty = f->type;
        int ok_here;
        if (strcmp(k, "type") == 0)
            continue;
        if (strcmp(k, "required") == 0) {
            if (parse_bool_opt(L, k, v, &f->required) < 0)
                return -1;
            continue;
        }
        if (strcmp(k, "unique") == 0 || strcmp(k, "index") == 0) {
            if (parse_bool_opt(L, k, v, k[0] == 'u' ? &f->unique : &f->index) < 0)
                return -1;
            continue;
        }
        if (strcmp(k, "default") == 0) {
            def = v;
            continue;
        }
        if (strcmp(k, "readonly") == 0 || strcmp(k, "hidden") == 0 || strcmp(k, "set_from") == 0) {
            if (!L->top)
                return load_fail(L,
                                 "\"%s\" applies to the fields of the document itself, "
                                 "not to those of a subdocument or array element",
                                 k);
            if (parse_access_opt(L, k, v, f) < 0)
                return -1;
            continue;
        }
        if (strcmp(k, "enum") == 0)
            ok_here = ty == FT_STRING || ty == FT_NUMBER;
        else if (strcmp(k, "min") == 0 || strcmp(k, "max") == 0)
            ok_here = ty == FT_NUMBER || ty == FT_DATE;
        else if (strcmp(k, "minlength") == 0 || strcmp(k, "maxlength") == 0 ||
                 strcmp(k, "match") == 0)
            ok_here = ty == FT_STRING;
        else if (strcmp(k, "ref") == 0)
            ok_here = ty == FT_OBJECTID;
        else
            return load_fail(L, "unknown option \"%.60s\"", k);
        if (!ok_here && ty == FT_ARRAY)
            return load_fail(L,
                             "option \"%s\" does not apply to an array; put it on the element "
                             "type, as in [{\"type\": ..., \"%s\": ...}]",
                             k, k);
        if (!ok_here)
            return load_fail(L, "option \"%s\" does not apply to a %s", k,
                             model_cast_type_name(ty));
        int rc = 0;
        if (strcmp(k, "enum") == 0)
            rc = parse_enum(L, v, f);
        else if (strcmp(k, "min") == 0 || strcmp(k, "max") == 0)
            rc = parse_bound(L, k, v, f, k[1] == 'a');
        else if (strcmp(k, "minlength") == 0)
            rc = parse_length_opt(L, k, v, &f->minlen), f->has_minlen = 1;
        else if (strcmp(k, "maxlength") == 0)
            rc = parse_length_opt(L, k, v, &f->maxlen), f->has_maxlen = 1;
        else if (strcmp(k, "match") == 0)
            rc = parse_match(L, v, f);
        else if (v->type != JSON_STRING) /* ref */
            rc = load_fail(L, "ref must be a model name");
        if (rc < 0)
            return -1;
    }
    if (f->has_min && f->has_max &&
        (f->type == FT_NUMBER ? f->min > f->max : f->min_ms > f->max_ms))
        return load_fail(L, "min is greater than max");
    if (f->has_minlen && f->has_maxlen && f->minlen > f->maxlen)
        return load_fail(L, "minlength is greater than maxlength");
    if (def != NULL) {
        char txt[128];
        if (f->type == FT_DATE && def->type == JSON_STRING && strcmp(def->u.str.s, "now") == 0) {
            f->def_now = 1;
            return 0;
        }
        if (castable(f, def) < 0) {
            model_cast_value_text(def, txt, sizeof txt);
            return load_fail(L, "default \"%s\" cannot be cast to %s", txt,
                             model_cast_type_name(f->type));
        }
        f->def = json_copy(def);
        if (f->def == NULL)
            return load_fail(L, "out of memory");
    }
    return 0;
}

/* A type name, [spec], a nested object of specs (no "type", or a "type"
 * that is itself a spec object, i.e. a field named type), or options. */
static int parse_spec(loader_t *L, const json_t *v, field_t *f)
{
    if (v->type == JSON_STRING) {
        if (parse_type_name(v->u.str.s, &f->type) < 0)
            return load_fail(L, "unknown type \"%.60s\"", v->u.str.s);
        return 0;
    }
    if (v->type == JSON_ARRAY)
        return parse_array(L, v, f);
    if (v->type != JSON_OBJECT)
        return load_fail(L, "a field is a type name, an array or an object");
    const json_t *t = json_object_get(v, "type");
    if (v->u.obj.len == 0) {
        f->type = FT_MIXED;
        return 0;
    }
    if (t == NULL || t->type == JSON_OBJECT)
        return parse_nested(L, v, f, 0);
    if (t->type != JSON_STRING && t->type != JSON_ARRAY)
        return load_fail(L, "\"type\" must be a type name or an array");
    return parse_options(L, v, f);
}

static int add_index(model_t *m, const char *path, int unique)
{
    index_spec_t *n = realloc(m->idx, (m->nidx + 1) * sizeof *n);
    if (n == NULL)
        return -1;
    m->idx = n;
    n[m->nidx].path = strdup(path);
    if (n[m->nidx].path == NULL)
        return -1;
    n[m->nidx++].unique = unique;
    return 0;
}

static int collect_indexes(model_t *m, const field_t *f, strbuf_t *path)
{
    if ((f->index || f->unique) && add_index(m, sb_str(path), f->unique) < 0)
        return -1;
    if (f->type == FT_ARRAY)
        return collect_indexes(m, f->elem, path);
    for (size_t i = 0; i < f->nkids; i++) {
        size_t old = path_push(path, f->kids[i].name);
        int rc = path->oom ? -1 : collect_indexes(m, &f->kids[i], path);
        sb_setlen(path, old);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int check_collection(const char *c)
{
    return c[0] != '\0' && strchr(c, '$') == NULL && strncmp(c, "system.", 7) != 0 &&
           strlen(c) <= 200;
}

/* Every field a rule reads must be one of the model's. */
static int check_rule_paths(loader_t *L, const model_t *m, const char *what, const rule_t *r)
{
    static const unsigned roots[] = {RULE_DOC, RULE_OLD, RULE_NEW};
    for (size_t k = 0; k < sizeof roots / sizeof roots[0]; k++)
        for (size_t i = 0; i < rule_path_count(r, roots[k]); i++) {
            const char *p = rule_path_at(r, roots[k], i);
            if (!model_path_known(m, p))
                return load_fail(L, "%s: \"%.100s\" is not a field of the model", what, p);
        }
    return 0;
}

static int check_field_rules(loader_t *L, const model_t *m)
{
    for (size_t i = 0; i < m->root.nkids; i++) {
        const field_t *f = &m->root.kids[i];
        if (f->hide_if != NULL) {
            char what[160];
            snprintf(what, sizeof what, "field \"%.100s\": hidden", f->name);
            if (check_rule_paths(L, m, what, f->hide_if) < 0)
                return -1;
        }
    }
    return 0;
}

/* "rules": {"read": rule, "create": ..., "update": ..., "delete": ...};
 * an operation left out is refused. */
static int parse_rules(loader_t *L, const json_t *v, model_t *m)
{
    static const char *const names[MODEL_OPS] = {"create", "read", "update", "delete"};
    static const unsigned roots[MODEL_OPS] = {RULE_AUTH | RULE_DOC, RULE_AUTH | RULE_DOC,
                                              RULE_AUTH | RULE_OLD | RULE_NEW,
                                              RULE_AUTH | RULE_DOC};
    if (v->type != JSON_OBJECT)
        return load_fail(L, "\"rules\" must be an object: read, create, update, delete");
    m->has_rules = 1;
    for (size_t i = 0; i < v->u.obj.len; i++) {
        const char *k = v->u.obj.keys[i];
        size_t op;
        for (op = 0; op < MODEL_OPS && strcmp(k, names[op]) != 0; op++)
            ;
        if (op == MODEL_OPS)
            return load_fail(L, "rules: unknown operation \"%.60s\" (read, create, update, delete)",
                             k);
        char what[40];
        snprintf(what, sizeof what, "rules.%s", names[op]);
        m->rules[op] = parse_rule(L, what, v->u.obj.vals[i], roots[op]);
        if (m->rules[op] == NULL || check_rule_paths(L, m, what, m->rules[op]) < 0)
            return -1;
    }
    return 0;
}

static int parse_push_options(loader_t *L, const json_t *v, model_t *m)
{
    if (v->type != JSON_ARRAY || v->u.arr.len > 32)
        return load_fail(L, "\"push_options\" must be an array of at most 32 option names");
    m->push_options = calloc(v->u.arr.len ? v->u.arr.len : 1, sizeof *m->push_options);
    if (m->push_options == NULL)
        return load_fail(L, "out of memory");
    for (size_t i = 0; i < v->u.arr.len; i++) {
        const json_t *s = v->u.arr.items[i];
        if (s->type != JSON_STRING || s->u.str.len == 0 || strlen(s->u.str.s) != s->u.str.len ||
            s->u.str.len > 100 || s->u.str.s[0] == '$')
            return load_fail(L, "\"push_options\" must be an array of option names");
        if (strcmp(s->u.str.s, "error") == 0 || strcmp(s->u.str.s, "success") == 0)
            return load_fail(L, "push_options: \"%s\" is a callback, never pushed", s->u.str.s);
        if ((m->push_options[m->npush_options] = strdup(s->u.str.s)) == NULL)
            return load_fail(L, "out of memory");
        m->npush_options++;
    }
    return 0;
}

static model_t *parse_model(loader_t *L, const char *name, const json_t *spec)
{
    model_t *m = calloc(1, sizeof *m);
    strbuf_t path = {0};
    if (m == NULL) {
        load_fail(L, "out of memory");
        return NULL;
    }
    m->root.type = FT_NESTED;
    m->root.has_id = 1;
    if (name[0] == '\0') {
        load_fail(L, "empty model name");
        goto fail;
    }
    if (spec->type != JSON_OBJECT) {
        load_fail(L, "a model is an object with \"fields\"");
        goto fail;
    }
    const json_t *fields = NULL, *rules = NULL;
    for (size_t i = 0; i < spec->u.obj.len; i++) {
        const char *k = spec->u.obj.keys[i];
        const json_t *v = spec->u.obj.vals[i];
        if (strcmp(k, "collection") == 0) {
            if (v->type != JSON_STRING || strlen(v->u.str.s) != v->u.str.len ||
                !check_collection(v->u.str.s)) {
                load_fail(L, "\"collection\" must be a valid collection name");
                goto fail;
            }
            if ((m->collection = strdup(v->u.str.s)) == NULL)
                goto nomem;
        } else if (strcmp(k, "versioned") == 0) {
            if (parse_bool_opt(L, "\"versioned\"", v, &m->versioned) < 0)
                goto fail;
        } else if (strcmp(k, "fields") == 0) {
            fields = v;
        } else if (strcmp(k, "rules") == 0) {
            rules = v;
        } else if (strcmp(k, "silent") == 0) {
            if (parse_bool_opt(L, "\"silent\"", v, &m->allow_silent) < 0)
                goto fail;
        } else if (strcmp(k, "push_options") == 0) {
            if (parse_push_options(L, v, m) < 0)
                goto fail;
        } else {
            load_fail(L,
                      "unknown key \"%.60s\" (expected collection, versioned, fields, rules, "
                      "silent, push_options)",
                      k);
            goto fail;
        }
    }
    if (fields == NULL || fields->type != JSON_OBJECT) {
        load_fail(L, "\"fields\" must be an object of field specs");
        goto fail;
    }
    if ((m->name = strdup(name)) == NULL)
        goto nomem;
    if (parse_nested(L, fields, &m->root, 1) < 0)
        goto fail;
    if (m->collection == NULL) {
        if ((m->collection = model_pluralize(name)) == NULL)
            goto nomem;
        if (!check_collection(m->collection)) {
            load_fail(L, "\"%.100s\" is not a valid collection name; set \"collection\"",
                      m->collection);
            goto fail;
        }
    }
    if (collect_indexes(m, &m->root, &path) < 0)
        goto nomem;
    if (rules != NULL && parse_rules(L, rules, m) < 0)
        goto fail;
    if (check_field_rules(L, m) < 0)
        goto fail;
    free(path.s);
    return m;
nomem:
    load_fail(L, "out of memory");
fail:
    free(path.s);
    model_free(m);
    return NULL;
}

/* A channel pattern: literal text, '*' (any run of characters but '/'),
 * "**" (anything, at the end only), and {auth.claim} (exactly the claim's
 * value, which must be a string or number without '/'). */
static int check_pattern(loader_t *L, const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 1024)
        return load_fail(L, "$channels: \"match\" must be a channel pattern of 1 to 1024 bytes");
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '*' && p[i + 1] == '*' && p[i + 2] != '\0')
            return load_fail(L, "$channels: \"%.100s\": ** may only end a pattern", p);
        if (p[i] == '}')
            return load_fail(L, "$channels: \"%.100s\": unbalanced }", p);
        if (p[i] != '{')
            continue;
        size_t j = i + 1;
        if (strncmp(p + j, "auth.", 5) != 0)
            return load_fail(L,
                             "$channels: \"%.100s\": a placeholder names a claim, as in "
                             "{auth.sub}",
                             p);
        for (j += 5; p[j] && p[j] != '}'; j++)
            if (!(isalnum((unsigned char)p[j]) || p[j] == '_' || p[j] == '.'))
                return load_fail(L, "$channels: \"%.100s\": bad placeholder", p);
        if (p[j] != '}' || j == i + 6)
            return load_fail(L, "$channels: \"%.100s\": bad placeholder", p);
        i = j;
    }
    return 0;
}

/* "$channels": [{"match": pattern, "subscribe": rule, "publish": rule,
 * "presence": rule}, ...]: the first entry whose pattern matches a
 * channel decides for it. */
static int parse_channels(loader_t *L, const json_t *v, model_set_t *set)
{
    if (v->type != JSON_ARRAY || v->u.arr.len > 256 || set->channels != NULL)
        return load_fail(L, "\"$channels\" must be an array of at most 256 channel rules");
    set->has_rules = 1;
    set->channels = calloc(v->u.arr.len ? v->u.arr.len : 1, sizeof *set->channels);
    if (set->channels == NULL)
        return load_fail(L, "out of memory");
    for (size_t i = 0; i < v->u.arr.len; i++) {
        const json_t *e = v->u.arr.items[i];
        model_channel_t *c = &set->channels[set->nchannels++];
        const char *match = json_get_string(e, "match");
        if (e->type != JSON_OBJECT || match == NULL)
            return load_fail(L, "$channels: each entry is an object with \"match\"");
        if (check_pattern(L, match) < 0)
            return -1;
        if ((c->pattern = strdup(match)) == NULL)
            return load_fail(L, "out of memory");
        for (size_t k = 0; k < e->u.obj.len; k++) {
            const char *key = e->u.obj.keys[k];
            rule_t **slot = strcmp(key, "subscribe") == 0  ? &c->subscribe
                            : strcmp(key, "publish") == 0  ? &c->publish
                            : strcmp(key, "presence") == 0 ? &c->presence
                                                           : NULL;
            char what[160];
            if (strcmp(key, "match") == 0)
                continue;
            if (slot == NULL)
                return load_fail(L,
                                 "$channels \"%.100s\": unknown key \"%.40s\" (subscribe, "
                                 "publish, presence)",
                                 match, key);
            snprintf(what, sizeof what, "$channels \"%.100s\": %s", match, key);
            if ((*slot = parse_rule(L, what, e->u.obj.vals[k], RULE_AUTH)) == NULL)
                return -1;
        }
    }
    return 0;
}

model_set_t *model_set_parse(const char *text, size_t len, char *err, size_t errlen)
{
    loader_t L = {.err = err, .errlen = errlen};
    char perr[256];
    model_set_t *set = NULL;
    json_t *root = json_parse(text, len, JSON_DEFAULT_MAX_DEPTH, perr, sizeof perr);

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (root == NULL) {
        load_fail(&L, "models: %s", perr);
        return NULL;
    }
    if (root->type != JSON_OBJECT) {
        load_fail(&L, "models: the file must hold one JSON object, model name -> model");
        goto fail;
    }
    set = calloc(1, sizeof *set);
    if (set == NULL || (root->u.obj.len > 0 &&
                        (set->models = calloc(root->u.obj.len, sizeof *set->models)) == NULL)) {
        load_fail(&L, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < root->u.obj.len; i++) {
        sb_setlen(&L.path, 0);
        if (strcmp(root->u.obj.keys[i], "$channels") == 0) {
            L.model = NULL;
            if (parse_channels(&L, root->u.obj.vals[i], set) < 0)
                goto fail;
            continue;
        }
        L.model = root->u.obj.keys[i];
        if (L.model[0] == '$') {
            load_fail(&L,
                      "model names may not start with '$' (\"$channels\" is the only such key)");
            goto fail;
        }
        model_t *m = parse_model(&L, root->u.obj.keys[i], root->u.obj.vals[i]);
        if (m == NULL)
            goto fail;
        set->models[set->n++] = m;
        if (m->has_rules)
            set->has_rules = 1;
    }
    free(L.path.s);
    json_free(root);
    return set;
fail:
    free(L.path.s);
    json_free(root);
    model_set_free(set);
    return NULL;
}

#define MODELS_FILE_MAX (16 * 1024 * 1024)

model_set_t *model_set_load(const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    model_set_t *set = NULL;

    if (fp == NULL) {
        snprintf(err, errlen, "cannot open models file %s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= MODELS_FILE_MAX) {
                snprintf(err, errlen, "models file %s is larger than %d bytes", path,
                         MODELS_FILE_MAX);
                goto out;
            }
            cap = cap ? cap * 2 : 65536;
            char *n = realloc(buf, cap);
            if (n == NULL) {
                snprintf(err, errlen, "out of memory reading %s", path);
                goto out;
            }
            buf = n;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) {
            if (ferror(fp)) {
                snprintf(err, errlen, "cannot read models file %s: %s", path, strerror(errno));
                goto out;
            }
            break;
        }
    }
    set = model_set_parse(buf ? buf : "", len, err, errlen);
out:
    fclose(fp);
    free(buf);
    return set;
}

/* ================================================================ pluralization */

/* Mongoose's default collection naming (its legacy pluralize helper, still
 * the default in Mongoose 8): lower-case the name; uncountable words stay;
 * otherwise the FIRST matching rule of the ordered table below rewrites the
 * end of the word. The order matters and is Mongoose's: "index" ends in x,
 * so it becomes "indexes" before the matrix/vertex rule is reached. */
static const char *const uncountables[] = {
    "advice", "energy",    "excretion", "digestion",   "cooperation", "health", "justice",
    "labour", "machinery", "equipment", "information", "pollution",   "sewage", "paper",
    "money",  "species",   "series",    "rain",        "rice",        "fish",   "sheep",
    "moose",  "deer",      "news",      "expertise",   "status",      "media",
};

static int ends_with(const char *s, size_t n, const char *suf)
{
    size_t k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

static int is_vowel_y(char c) { return strchr("aeiouy", c) != NULL; }

/* Returns how many trailing bytes to drop and sets *add to what to append,
 * or -1 when no rule matches. */
static int plural_rule(const char *s, size_t n, const char **add)
{
#define RULE(suffix, drop, text)                                                                   \
    if (ends_with(s, n, suffix)) {                                                                 \
        *add = text;                                                                               \
        return drop;                                                                               \
    }
    RULE("man", 2, "en")      /* (m)an$ -> men */
    RULE("person", 4, "ople") /* (pe)rson$ -> people */
    RULE("child", 0, "ren")   /* (child)$ -> children */
    if (n == 2 && memcmp(s, "ox", 2) == 0) {
        *add = "en";
        return 0;
    }
    RULE("axis", 2, "es") /* (ax|test)is$ */
    RULE("testis", 2, "es")
    RULE("octopus", 2, "i") /* (octop|vir)us$ */
    RULE("virus", 2, "i")
    RULE("alias", 0, "es") /* (alias|status)$ */
    RULE("status", 0, "es")
    RULE("bus", 0, "es")     /* (bu)s$ -> buses */
    RULE("buffalo", 0, "es") /* (buffal|tomat|potat)o$ */
    RULE("tomato", 0, "es")
    RULE("potato", 0, "es")
    if (n >= 3 && ends_with(s, n, "um") && (s[n - 3] == 't' || s[n - 3] == 'i')) {
        *add = "a"; /* ([ti])um$ */
        return 2;
    }
    RULE("sis", 3, "ses")
    if (n >= 3 && ends_with(s, n, "fe") && s[n - 3] != 'f') {
        *add = "ves"; /* ([^f])fe$ */
        return 2;
    }
    if (n >= 2 && s[n - 1] == 'f' && (s[n - 2] == 'l' || s[n - 2] == 'r')) {
        *add = "ves"; /* ([lr])f$ */
        return 1;
    }
    RULE("hive", 0, "s")
    if (n >= 2 && s[n - 1] == 'y' && (!is_vowel_y(s[n - 2]) || ends_with(s, n, "quy"))) {
        *add = "ies"; /* ([^aeiouy]|qu)y$ */
        return 1;
    }
    RULE("x", 0, "es") /* (x|ch|ss|sh)$ */
    RULE("ch", 0, "es")
    RULE("ss", 0, "es")
    RULE("sh", 0, "es")
#undef RULE
    return -1;
}

char *model_pluralize(const char *name)
{
    size_t n = strlen(name);
    char *s = malloc(n + 8);
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        s[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
    for (size_t i = 0; i < sizeof uncountables / sizeof uncountables[0]; i++)
        if (strcmp(s, uncountables[i]) == 0)
            return s;

    const char *add;
    int drop = plural_rule(s, n, &add);
    if (drop >= 0) {
        strcpy(s + n - (size_t)drop, add);
        return s;
    }
    /* (matr|vert|ind)ix|ex$ : reached only by words that do not end in x,
     * so only the unanchored alternative can match; the global JavaScript
     * replace rewrites every "matrix", "vertix" and "indix" in the word. */
    static const char *const ices[] = {"matrix", "vertix", "indix"};
    if (strstr(s, ices[0]) || strstr(s, ices[1]) || strstr(s, ices[2])) {
        strbuf_t b = {0};
        const char *p = s;
        for (;;) {
            const char *best = NULL;
            size_t blen = 0;
            for (size_t j = 0; j < 3; j++) {
                const char *h = strstr(p, ices[j]);
                if (h != NULL && (best == NULL || h < best)) {
                    best = h;
                    blen = strlen(ices[j]);
                }
            }
            if (best == NULL)
                break;
            sb_append(&b, p, (size_t)(best - p) + blen - 2);
            sb_append(&b, "ices", 4);
            p = best + blen;
        }
        sb_append(&b, p, strlen(p));
        free(s);
        if (b.oom) {
            free(b.s);
            return NULL;
        }
        return b.s;
    }
    /* (m|l)ouse$ (Mongoose writes the class as [m|l], which also admits '|').
     * Its (kn|w|l)ife$ rule is never reached: ([^f])fe$ above takes those. */
    if (n >= 5 && ends_with(s, n, "ouse") && strchr("ml|", s[n - 5]) != NULL) {
        strcpy(s + n - 4, "ice");
        return s;
    }
    if (ends_with(s, n, "quiz")) {
        strcpy(s + n, "zes");
        return s;
    }
    if (strcmp(s, "goose") == 0) {
        strcpy(s, "geese");
        return s;
    }
    if (n > 0 && (s[n - 1] == 's' || !(s[n - 1] >= 'a' && s[n - 1] <= 'z')))
        return s; /* s$ -> s; ([^a-z])$ stays */
    strcpy(s + n, "s");
    return s;
}
