/* model_access: the models file's permissions applied (see
 * model_access.h). Rules come compiled from model.c; this file binds
 * them to a session's claims and to documents. */
#include "model_access.h"

#include "error.h"
#include "model_query.h"

static const char *const op_names[MODEL_OPS] = {"create", "read", "update", "delete"};

int model_set_has_rules(const model_set_t *set) { return set != NULL && set->has_rules; }

int model_has_rules(const model_t *m) { return m->has_rules; }

json_t *model_access_forbidden(const model_t *m, model_op_t op)
{
    return error_new(ERROR_FORBIDDEN, NULL, "%s: %s is not allowed", m->name, op_names[op]);
}

int model_access_check(const model_t *m, model_op_t op, const json_t *auth, const json_t *doc,
                       const json_t *old, const json_t *new_)
{
    rule_env_t env = {.auth = auth, .doc = doc, .old = old, .new_ = new_};

    if (!m->has_rules)
        return 1;
    return m->rules[op] != NULL && rule_eval(m->rules[op], &env);
}

/* Filters a rule makes are small, but their values come from claims: the
 * sanitizer still casts them to the fields' types under its own caps. */
static const model_limits_t rule_limits = {.max_read_limit = 0,
                                           .max_query_depth = 2 * RULE_MAX_DEPTH + 4,
                                           .max_query_terms = 8 * RULE_MAX_NODES,
                                           .max_regex_length = 1};

rule_match_t model_access_filter(const model_t *m, model_op_t op, const json_t *auth,
                                 const json_t *new_, bson_t **filter, json_t **error)
{
    rule_env_t env = {.auth = auth, .new_ = new_};
    json_t *f = NULL;
    rule_match_t match;

    *filter = NULL;
    *error = NULL;
    if (!m->has_rules)
        return RULE_ALL;
    if (m->rules[op] == NULL)
        return RULE_NONE;
    match = rule_filter(m->rules[op], op == MODEL_UPDATE ? RULE_OLD : RULE_DOC, &env, &f);
    if (match != RULE_SOME)
        return match;
    *filter = model_sanitize_filter(m, f, &rule_limits, error);
    json_free(f);
    if (*filter == NULL) {
        /* A claim that does not cast to the field's type matches nothing. */
        json_free(*error);
        *error = NULL;
        return RULE_NONE;
    }
    return RULE_SOME;
}

int model_access_prepare_create(const model_t *m, const json_t *auth, json_t *data, json_t **error)
{
    *error = NULL;
    for (size_t i = 0; i < m->root.nkids; i++) {
        const field_t *f = &m->root.kids[i];
        const json_t *v;
        json_t *copy;
        if (f->set_from == NULL)
            continue;
        v = rule_lookup(auth, f->set_from);
        if (v == NULL || v->type == JSON_NULL) {
            *error = error_new(ERROR_FORBIDDEN, NULL,
                               "%s: create needs a token with the claim %s (for %s)", m->name,
                               f->set_from, f->name);
            return -1;
        }
        copy = json_copy(v);
        if (copy == NULL || json_object_set(data, f->name, copy) < 0) {
            *error = error_new(ERROR_UNAVAILABLE, NULL, "out of memory");
            return -1;
        }
    }
    return 0;
}

void model_access_prepare_update(const model_t *m, json_t *data)
{
    for (size_t i = 0; i < m->root.nkids; i++) {
        const field_t *f = &m->root.kids[i];
        if (f->readonly || f->set_from != NULL)
            json_object_del(data, f->name);
    }
}

/* Whether f is hidden from auth in doc (doc NULL: in some document). */
static int hidden_from(const field_t *f, const json_t *auth, const json_t *doc, int any_doc)
{
    rule_env_t env = {.auth = auth, .doc = doc};
    json_t *filter = NULL;

    if (f->hidden)
        return 1;
    if (f->hide_if == NULL)
        return 0;
    if (!any_doc)
        return rule_eval(f->hide_if, &env);
    /* hidden in some document unless the rule is false whatever the document */
    switch (rule_filter(f->hide_if, RULE_DOC, &env, &filter)) {
    case RULE_NONE:
        return 0;
    case RULE_SOME:
        json_free(filter);
        return 1;
    default:
        return 1;
    }
}

int model_access_hides(const model_t *m)
{
    for (size_t i = 0; i < m->root.nkids; i++)
        if (m->root.kids[i].hidden || m->root.kids[i].hide_if != NULL)
            return 1;
    return 0;
}

void model_access_hide(const model_t *m, const json_t *auth, json_t *doc)
{
    if (doc == NULL || doc->type != JSON_OBJECT)
        return;
    for (size_t i = 0; i < m->root.nkids; i++) {
        const field_t *f = &m->root.kids[i];
        if ((f->hidden || f->hide_if != NULL) && hidden_from(f, auth, doc, 0))
            json_object_del(doc, f->name);
    }
}

/* The field named by a path's first segment, if it is one that may be
 * hidden from auth. */
static const field_t *hidden_path(const model_t *m, const json_t *auth, const char *path)
{
    size_t n = strcspn(path, ".");
    for (size_t i = 0; i < m->root.nkids; i++) {
        const field_t *f = &m->root.kids[i];
        if (strlen(f->name) == n && memcmp(f->name, path, n) == 0)
            return hidden_from(f, auth, NULL, 1) ? f : NULL;
    }
    return NULL;
}

/* Every path a filter names, at any depth of $and/$or/$nor. */
static const field_t *filter_hidden(const model_t *m, const json_t *auth, const json_t *q,
                                    int depth)
{
    if (q == NULL || depth > 16)
        return NULL;
    if (q->type == JSON_ARRAY) {
        for (size_t i = 0; i < q->u.arr.len; i++) {
            const field_t *f = filter_hidden(m, auth, q->u.arr.items[i], depth + 1);
            if (f != NULL)
                return f;
        }
        return NULL;
    }
    if (q->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < q->u.obj.len; i++) {
        const char *k = q->u.obj.keys[i];
        const field_t *f = k[0] == '$' ? filter_hidden(m, auth, q->u.obj.vals[i], depth + 1)
                                       : hidden_path(m, auth, k);
        if (f != NULL)
            return f;
    }
    return NULL;
}

int model_access_query(const model_t *m, const json_t *auth, const json_t *opt, json_t **error)
{
    const json_t *sorting = json_object_get(opt, "sorting");
    const field_t *f;

    *error = NULL;
    if (!model_access_hides(m))
        return 0;
    f = filter_hidden(m, auth, json_object_get(opt, "query"), 0);
    if (f == NULL && sorting != NULL && sorting->type == JSON_OBJECT) {
        const json_t *by = json_object_get(sorting, "sort");
        /* {sort: {path: dir}} or {sort: "path"}; any other member names no path */
        if (by != NULL && by->type == JSON_OBJECT)
            for (size_t i = 0; f == NULL && i < by->u.obj.len; i++)
                f = hidden_path(m, auth, by->u.obj.keys[i]);
        else if (by != NULL && by->type == JSON_STRING)
            f = hidden_path(m, auth, by->u.str.s[0] == '-' ? by->u.str.s + 1 : by->u.str.s);
        for (size_t i = 0; f == NULL && i < sorting->u.obj.len; i++)
            if (sorting->u.obj.keys[i][0] != '$' && strcmp(sorting->u.obj.keys[i], "sort") &&
                strcmp(sorting->u.obj.keys[i], "limit") && strcmp(sorting->u.obj.keys[i], "skip"))
                f = hidden_path(m, auth, sorting->u.obj.keys[i]);
    }
    if (f == NULL)
        return 0;
    *error = error_new(ERROR_FORBIDDEN, NULL, "%s: %s may not be queried or sorted on", m->name,
                       f->name);
    return -1;
}

int model_access_silent(const model_t *m) { return !m->has_rules || m->allow_silent; }

int model_access_push_option(const model_t *m, const char *key)
{
    /* client and cid: how dnode.backbone.js knows its own changes (a random
     * page id and a Backbone cid, nothing of the user's) */
    if (strcmp(key, "url") == 0 || strcmp(key, "type") == 0 || strcmp(key, "method") == 0 ||
        strcmp(key, "client") == 0 || strcmp(key, "cid") == 0)
        return 1;
    for (size_t i = 0; m != NULL && i < m->npush_options; i++)
        if (strcmp(m->push_options[i], key) == 0)
            return 1;
    return 0;
}

/* Whether channel c[0..) matches pattern p for auth. */
static int pattern_match(const char *p, const char *c, const json_t *auth, int depth)
{
    if (depth > 64)
        return 0;
    for (;;) {
        if (*p == '\0')
            return *c == '\0';
        if (p[0] == '*' && p[1] == '*')
            return 1;
        if (*p == '*') {
            /* any run without '/': try every length */
            for (const char *e = c;; e++) {
                if (pattern_match(p + 1, e, auth, depth + 1))
                    return 1;
                if (*e == '\0' || *e == '/')
                    return 0;
            }
        }
        if (*p == '{') {
            const char *end = strchr(p, '}');
            char path[128], num[64];
            const json_t *v;
            const char *s;
            size_t n = (size_t)(end - p) - 6; /* past "{auth." */
            if (end == NULL || n >= sizeof path)
                return 0;
            memcpy(path, p + 6, n);
            path[n] = '\0';
            v = rule_lookup(auth, path);
            if (v != NULL && v->type == JSON_STRING && strlen(v->u.str.s) == v->u.str.len) {
                s = v->u.str.s;
            } else if (v != NULL && v->type == JSON_NUMBER && v->u.num.is_int) {
                snprintf(num, sizeof num, "%lld", (long long)v->u.num.i);
                s = num;
            } else {
                return 0; /* an absent claim matches nothing */
            }
            n = strlen(s);
            if (n == 0 || strchr(s, '/') != NULL || strncmp(c, s, n) != 0)
                return 0;
            c += n;
            p = end + 1;
            continue;
        }
        if (*p != *c)
            return 0;
        p++;
        c++;
    }
}

int model_access_channel(const model_set_t *set, const char *channel, const json_t *auth,
                         model_channel_op_t op)
{
    rule_env_t env = {.auth = auth};

    if (set == NULL || !set->has_rules)
        return 1;
    for (size_t i = 0; i < set->nchannels; i++) {
        const model_channel_t *c = &set->channels[i];
        const rule_t *r;
        if (!pattern_match(c->pattern, channel, auth, 0))
            continue;
        r = op == MODEL_SUBSCRIBE ? c->subscribe : op == MODEL_PUBLISH ? c->publish : c->presence;
        if (op == MODEL_PRESENCE && r == NULL)
            r = c->subscribe;
        if (r == NULL)
            return op != MODEL_PUBLISH;
        return rule_eval(r, &env);
    }
    /* listed channels only, once there is a list */
    return set->channels == NULL && op != MODEL_PUBLISH;
}
