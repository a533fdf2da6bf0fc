/* model_types: the loaded models' data structures, shared by the model
 * files (model.c builds them; model_cast, model_validate and model_query
 * read them), and the growable string they all build paths in. Nothing
 * outside the model_* files looks inside these structures: others see
 * model_t and model_set_t only through model.h. */
#ifndef DNODED_MODEL_TYPES_H
#define DNODED_MODEL_TYPES_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "rule.h"

typedef struct model_set model_set_t; /* every model of one models file */
typedef struct model model_t;         /* one model type */

/* Limits a query must respect (from the config). A field left 0 takes the
 * default shown; a NULL limits pointer means all defaults. */
typedef struct model_limits {
    size_t max_read_limit;   /* cap on documents per read (config max_read_limit), 1000 */
    size_t max_query_depth;  /* nesting of filter objects/arrays (top object = 1), 8 */
    size_t max_query_terms;  /* total keys + array elements in a filter, 256 */
    size_t max_regex_length; /* bytes of a $regex, 256 */
} model_limits_t;

typedef enum {
    FT_STRING,
    FT_NUMBER,
    FT_BOOLEAN,
    FT_DATE,
    FT_OBJECTID,
    FT_MIXED,
    FT_ARRAY,  /* elem holds the element spec */
    FT_NESTED, /* kids hold the fields, in file order */
} ftype_t;

typedef struct field field_t;
struct field {
    char *name; /* key in the parent; NULL for an array element spec */
    ftype_t type;
    field_t *elem; /* FT_ARRAY */
    field_t *kids; /* FT_NESTED */
    size_t nkids;
    int has_id; /* FT_NESTED: the root or a subdocument with its own _id */
    int required, unique, index;
    json_t *def;          /* default as written (castable, checked at load) */
    int def_now;          /* Date default "now" */
    json_t *enumv;        /* array of allowed values, already cast */
    int has_min, has_max; /* Number: min/max; Date: min_ms/max_ms */
    double min, max;
    int64_t min_ms, max_ms;
    int has_minlen, has_maxlen;
    size_t minlen, maxlen; /* in UTF-16 code units, as JavaScript counts */
    int has_re;
    regex_t re;
    /* Permissions (top-level fields only; see model_access.h). */
    int readonly;    /* set on create, never changed by an update */
    int hidden;      /* never sent to a client */
    rule_t *hide_if; /* removed from a document sent to a client this holds for */
    char *set_from;  /* an auth path ("sub"): the value on create, then readonly */
};

typedef struct index_spec {
    char *path;
    int unique;
} index_spec_t;

/* What a model's "rules" govern, in the order of model_t.rules. */
typedef enum { MODEL_CREATE, MODEL_READ, MODEL_UPDATE, MODEL_DELETE, MODEL_OPS } model_op_t;

struct model {
    char *name;
    char *collection;
    int versioned;
    /* "rules": when has_rules, an operation whose rule is NULL is refused. */
    int has_rules;
    rule_t *rules[MODEL_OPS];
    int allow_silent;    /* "silent": true lets a write skip its push */
    char **push_options; /* "push_options": option keys pushed besides url, type, method */
    size_t npush_options;
    field_t root; /* FT_NESTED, has_id */
    index_spec_t *idx;
    size_t nidx;
};

/* One entry of "$channels": channels whose name matches pattern, and who
 * may subscribe to them, publish on them, and see their presence. */
typedef struct model_channel {
    char *pattern;
    rule_t *subscribe, *publish, *presence; /* NULL: the default for each */
} model_channel_t;

struct model_set {
    model_t **models;
    size_t n;
    int has_rules; /* a model has "rules", or the file has "$channels" */
    model_channel_t *channels;
    size_t nchannels;
};

/* The kid of nested spec nf named name, or NULL. */
static inline const field_t *find_kid(const field_t *nf, const char *name)
{
    for (size_t i = 0; i < nf->nkids; i++)
        if (strcmp(nf->kids[i].name, name) == 0)
            return &nf->kids[i];
    return NULL;
}

/* ================================================================ paths */

typedef struct strbuf {
    char *s;
    size_t len, cap;
    int oom;
} strbuf_t;

static inline void sb_setlen(strbuf_t *b, size_t len)
{
    b->len = len;
    if (b->s != NULL)
        b->s[len] = '\0';
}

static inline void sb_append(strbuf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

/* Append ".seg" (or "seg" at the start); returns the length to pop back to. */
static inline size_t path_push(strbuf_t *b, const char *seg)
{
    size_t old = b->len;
    if (b->len > 0)
        sb_append(b, ".", 1);
    sb_append(b, seg, strlen(seg));
    return old;
}

static inline size_t path_push_index(strbuf_t *b, size_t i)
{
    char num[24];
    snprintf(num, sizeof num, "%zu", i);
    return path_push(b, num);
}

static inline const char *sb_str(const strbuf_t *b) { return b->s != NULL && !b->oom ? b->s : ""; }

#endif
