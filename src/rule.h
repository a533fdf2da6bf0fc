/* rule: the permission expressions of the models file ("read":
 * "doc.owner == auth.sub || doc.shared"). Compiles one expression, checks
 * it against what its place allows, evaluates it over JSON values, and
 * turns it into a MongoDB filter on one document once the other names are
 * known, so that a read returns only what the rule allows and a write's
 * check and the write are one database step. Pure: no I/O, no model
 * knowledge (the caller checks field names with rule_paths), thread-safe
 * once compiled.
 *
 * Grammar (precedence from low to high):
 *   expr   := or
 *   or     := and ("||" and)*
 *   and    := not ("&&" not)*
 *   not    := "!" not | cmp
 *   cmp    := value (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in") value)?
 *   value  := "(" expr ")" | literal | "[" literal ("," literal)* "]" | path
 *   path   := root ("." name)*    root: auth, doc, old, new
 *   literal:= 'string' | "string" | number | true | false | null
 * Nothing loops, calls or reaches another document. */
#ifndef DNODED_RULE_H
#define DNODED_RULE_H

#include <stddef.h>

#include "json.h"

/* The names an expression may start a path with: a set of these bits. */
enum {
    RULE_AUTH = 1, /* the session's token claims; null when anonymous */
    RULE_DOC = 2,  /* the document read, created or deleted */
    RULE_OLD = 4,  /* update: the stored document */
    RULE_NEW = 8,  /* update: the document as it would be saved */
};

#define RULE_MAX_TEXT 4096 /* bytes of one expression */
#define RULE_MAX_NODES 256 /* terms and operators of one expression */
#define RULE_MAX_DEPTH 32  /* nesting of parentheses and operators */

typedef struct rule rule_t;

/* The values the names stand for; NULL for a name that is absent (a path
 * through it is null). */
typedef struct rule_env {
    const json_t *auth, *doc, *old, *new_;
} rule_env_t;

/* Compile text, whose paths may start only with the roots in `roots`.
 * NULL with a one-line reason in err ("at 12: expected a value", "old is
 * not known here (use auth, doc)", "compares two fields of doc"). */
rule_t *rule_compile(const char *text, unsigned roots, char *err, size_t errlen);
void rule_free(rule_t *r);
const char *rule_text(const rule_t *r);
/* The roots the expression uses (RULE_* bits). */
unsigned rule_roots(const rule_t *r);

/* Each field path the expression reads under root (one of RULE_DOC,
 * RULE_OLD, RULE_NEW), dotted ("owner", "meta.team"), in order; the
 * caller checks they are fields of its model. Returns how many; i in
 * [0, n). */
size_t rule_path_count(const rule_t *r, unsigned root);
const char *rule_path_at(const rule_t *r, unsigned root, size_t i);

/* 1 when the expression holds over env, else 0. Comparisons with a field
 * follow MongoDB's matching: an array field compares element by element,
 * a missing field is null, values of different types are never ordered.
 * A field alone is field == true; a claim alone is truthy as in
 * JavaScript. */
int rule_eval(const rule_t *r, const rule_env_t *env);

typedef enum {
    RULE_NONE, /* holds for no document: nothing to ask the database */
    RULE_ALL,  /* holds for every document: no filter needed */
    RULE_SOME, /* *filter (MongoDB query syntax, for model_sanitize_filter) */
} rule_match_t;

/* The expression as a filter on the document named by root (RULE_DOC or
 * RULE_OLD), the other names taken from env. A value compared with a field
 * must be a string, number, boolean or null (or an array of them for
 * "in"); any other value makes that comparison false, so a claim can never
 * inject a query operator. *filter is set only for RULE_SOME (caller
 * frees); NULL out of memory makes it RULE_NONE. */
rule_match_t rule_filter(const rule_t *r, unsigned root, const rule_env_t *env, json_t **filter);

/* JavaScript truthiness, as a path alone is read in a condition. */
int rule_truthy(const json_t *v);

/* The value at a dotted path inside v (NULL when absent). */
const json_t *rule_lookup(const json_t *v, const char *path);

#endif
