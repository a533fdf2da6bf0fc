/* rule: compile, evaluate and translate the models file's permission
 * expressions (see rule.h for the grammar). A compiled rule is an array
 * of nodes built by a recursive-descent parser bounded in depth and size;
 * evaluation walks it over JSON values, and rule_filter partially
 * evaluates it into a MongoDB filter. */
#include "rule.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { N_LIT, N_PATH, N_NOT, N_AND, N_OR, N_CMP } nkind_t;
typedef enum { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN } op_t;

typedef struct node {
    nkind_t kind;
    op_t op;       /* N_CMP */
    int a, b;      /* operands (node indexes); N_NOT uses a */
    json_t *lit;   /* N_LIT: a literal, or an array of literals */
    unsigned root; /* N_PATH: RULE_* */
    char *path;    /* N_PATH: below the root, dotted; "" for the root itself */
    size_t pos;    /* where it starts in the text, for errors */
} node_t;

struct rule {
    char *text;
    node_t nodes[RULE_MAX_NODES];
    int n, top;
    unsigned roots_used;
};

/* ------------------------------------------------------------------------
 * Parser
 * ------------------------------------------------------------------------ */

typedef struct parser {
    rule_t *r;
    const char *s;
    size_t i, len;
    unsigned roots;
    int depth;
    char *err;
    size_t errlen;
    int failed;
} parser_t;

static int p_fail(parser_t *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int p_fail(parser_t *p, size_t at, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (p->failed)
        return -1;
    p->failed = 1;
    if (p->errlen == 0)
        return -1;
    n = snprintf(p->err, p->errlen, "at %zu: ", at + 1);
    if (n < 0 || (size_t)n >= p->errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static void p_space(parser_t *p)
{
    while (p->i < p->len &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

/* Consume tok (after spaces) when it is next; a word must not run on. */
static int p_take(parser_t *p, const char *tok)
{
    size_t n = strlen(tok);

    p_space(p);
    if (p->len - p->i < n || memcmp(p->s + p->i, tok, n) != 0)
        return 0;
    if (isalpha((unsigned char)tok[0]) && p->i + n < p->len &&
        (isalnum((unsigned char)p->s[p->i + n]) || p->s[p->i + n] == '_'))
        return 0;
    p->i += n;
    return 1;
}

static int p_node(parser_t *p, nkind_t kind, size_t pos)
{
    node_t *nd;

    if (p->r->n >= RULE_MAX_NODES)
        return p_fail(p, pos, "too long (at most %d terms)", RULE_MAX_NODES);
    nd = &p->r->nodes[p->r->n];
    memset(nd, 0, sizeof(*nd));
    nd->kind = kind;
    nd->pos = pos;
    nd->a = nd->b = -1;
    return p->r->n++;
}

/* Names are letters, digits and '_': no '$', so a path can never name a
 * query operator. */
static int is_word(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* A quoted string literal; p->i at the quote. */
static json_t *p_string(parser_t *p)
{
    char q = p->s[p->i];
    size_t start = p->i, cap = 16, n = 0;
    char *buf = malloc(cap);
    json_t *v;

    if (buf == NULL)
        return NULL;
    p->i++;
    while (p->i < p->len && p->s[p->i] != q) {
        char c = p->s[p->i++];
        if (c == '\\') {
            if (p->i >= p->len)
                break;
            c = p->s[p->i++];
            switch (c) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case '\\':
            case '\'':
            case '"':
            case '/':
                break;
            default:
                free(buf);
                p_fail(p, p->i - 2, "unknown escape \\%c", c);
                return NULL;
            }
        } else if (c == '\0') {
            break;
        }
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (nb == NULL) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        buf[n++] = c;
    }
    if (p->i >= p->len || p->s[p->i] != q) {
        free(buf);
        p_fail(p, start, "unterminated string");
        return NULL;
    }
    p->i++;
    v = json_stringn(buf, n);
    free(buf);
    return v;
}

/* A literal (string, number, true, false, null), or NULL (p->failed says
 * whether that was an error). */
static json_t *p_literal(parser_t *p)
{
    char c;

    p_space(p);
    if (p->i >= p->len)
        return NULL;
    c = p->s[p->i];
    if (c == '\'' || c == '"')
        return p_string(p);
    if (isdigit((unsigned char)c) ||
        (c == '-' && p->i + 1 < p->len && isdigit((unsigned char)p->s[p->i + 1]))) {
        char tmp[64], *end;
        size_t start = p->i, k = 0;
        double d;
        if (p->s[p->i] == '-')
            p->i++;
        while (p->i < p->len && (isdigit((unsigned char)p->s[p->i]) || p->s[p->i] == '.' ||
                                 p->s[p->i] == 'e' || p->s[p->i] == 'E' ||
                                 ((p->s[p->i] == '+' || p->s[p->i] == '-') &&
                                  (p->s[p->i - 1] == 'e' || p->s[p->i - 1] == 'E'))))
            p->i++;
        k = p->i - start;
        if (k >= sizeof(tmp) || (p->i < p->len && is_word(p->s[p->i]))) {
            p_fail(p, start, "bad number");
            return NULL;
        }
        memcpy(tmp, p->s + start, k);
        tmp[k] = '\0';
        d = strtod(tmp, &end);
        if (*end != '\0' || d != d) {
            p_fail(p, start, "bad number");
            return NULL;
        }
        if (strchr(tmp, '.') == NULL && strchr(tmp, 'e') == NULL && strchr(tmp, 'E') == NULL &&
            d >= -9007199254740992.0 && d <= 9007199254740992.0)
            return json_int((int64_t)d);
        return json_double(d);
    }
    if (p_take(p, "true"))
        return json_bool(1);
    if (p_take(p, "false"))
        return json_bool(0);
    if (p_take(p, "null"))
        return json_null();
    return NULL;
}

static int p_or(parser_t *p);

static const struct {
    const char *name;
    unsigned bit;
} roots[] = {{"auth", RULE_AUTH}, {"doc", RULE_DOC}, {"old", RULE_OLD}, {"new", RULE_NEW}};

static void roots_text(unsigned set, char *buf, size_t n)
{
    size_t i, used = 0;

    buf[0] = '\0';
    for (i = 0; i < sizeof(roots) / sizeof(roots[0]); i++)
        if (set & roots[i].bit) {
            int k = snprintf(buf + used, n - used, "%s%s", used ? ", " : "", roots[i].name);
            if (k < 0 || (size_t)k >= n - used)
                return;
            used += (size_t)k;
        }
}

static int p_path(parser_t *p)
{
    size_t start = p->i, j, k;
    unsigned bit = 0;
    int id;

    while (p->i < p->len && is_word(p->s[p->i]))
        p->i++;
    for (j = 0; j < sizeof(roots) / sizeof(roots[0]); j++)
        if (strlen(roots[j].name) == p->i - start &&
            memcmp(p->s + start, roots[j].name, p->i - start) == 0)
            bit = roots[j].bit;
    if (p->i == start)
        return p_fail(p, start, "expected a value");
    if (bit == 0)
        return p_fail(p, start, "unknown name '%.*s' (a path starts with auth, doc, old or new)",
                      (int)(p->i - start > 40 ? 40 : p->i - start), p->s + start);
    if (!(p->roots & bit)) {
        char known[64];
        roots_text(p->roots, known, sizeof(known));
        return p_fail(p, start, "%.*s is not known here (use %s)", (int)(p->i - start),
                      p->s + start, known);
    }
    k = p->i;
    while (p->i < p->len && p->s[p->i] == '.') {
        size_t seg = ++p->i;
        while (p->i < p->len && is_word(p->s[p->i]))
            p->i++;
        if (p->i == seg)
            return p_fail(p, seg, "expected a name after '.'");
    }
    id = p_node(p, N_PATH, start);
    if (id < 0)
        return -1;
    p->r->nodes[id].root = bit;
    p->r->roots_used |= bit;
    {
        size_t plen = p->i > k ? p->i - k - 1 : 0;
        char *path = malloc(plen + 1);
        if (path == NULL)
            return p_fail(p, start, "out of memory");
        memcpy(path, p->s + k + (plen ? 1 : 0), plen);
        path[plen] = '\0';
        p->r->nodes[id].path = path;
    }
    return id;
}

static int p_value(parser_t *p)
{
    size_t start;
    json_t *lit;
    int id;

    p_space(p);
    start = p->i;
    if (p->i >= p->len)
        return p_fail(p, start, "expected a value");
    if (p_take(p, "(")) {
        if (++p->depth > RULE_MAX_DEPTH)
            return p_fail(p, start, "nested too deep");
        id = p_or(p);
        p->depth--;
        if (id < 0)
            return -1;
        if (!p_take(p, ")"))
            return p_fail(p, p->i, "expected ')'");
        return id;
    }
    if (p_take(p, "[")) {
        json_t *arr = json_array();
        if (arr == NULL)
            return p_fail(p, start, "out of memory");
        if (!p_take(p, "]")) {
            do {
                size_t at = (p_space(p), p->i);
                json_t *v = p_literal(p);
                if (v == NULL) {
                    json_free(arr);
                    return p_fail(p, at, "a list holds literals only");
                }
                if (json_array_append(arr, v) < 0 || arr->u.arr.len > RULE_MAX_NODES) {
                    json_free(arr);
                    return p_fail(p, at, "list too long");
                }
            } while (p_take(p, ","));
            if (!p_take(p, "]")) {
                json_free(arr);
                return p_fail(p, p->i, "expected ']'");
            }
        }
        id = p_node(p, N_LIT, start);
        if (id < 0) {
            json_free(arr);
            return -1;
        }
        p->r->nodes[id].lit = arr;
        return id;
    }
    lit = p_literal(p);
    if (lit != NULL) {
        id = p_node(p, N_LIT, start);
        if (id < 0) {
            json_free(lit);
            return -1;
        }
        p->r->nodes[id].lit = lit;
        return id;
    }
    if (p->failed)
        return -1;
    return p_path(p);
}

static int p_cmp(parser_t *p)
{
    static const struct {
        const char *tok;
        op_t op;
    } ops[] = {{"==", OP_EQ}, {"!=", OP_NE}, {"<=", OP_LE}, {">=", OP_GE},
               {"<", OP_LT},  {">", OP_GT},  {"in", OP_IN}};
    int a = p_value(p), b, id;
    size_t i, at;

    if (a < 0)
        return -1;
    p_space(p);
    at = p->i;
    for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (p_take(p, ops[i].tok))
            break;
    if (i == sizeof(ops) / sizeof(ops[0])) {
        /* "=" alone is a typo of "==", not an assignment */
        if (p->i < p->len && p->s[p->i] == '=')
            return p_fail(p, p->i, "'=' is not an operator (compare with '==')");
        return a;
    }
    b = p_value(p);
    if (b < 0)
        return -1;
    {
        const node_t *na = &p->r->nodes[a], *nb = &p->r->nodes[b];
        if (na->kind == N_PATH && nb->kind == N_PATH && na->root == nb->root &&
            na->root != RULE_AUTH)
            return p_fail(p, at, "compares two fields of %s (compare a field with a value)",
                          na->root == RULE_DOC   ? "doc"
                          : na->root == RULE_OLD ? "old"
                                                 : "new");
        if (na->kind == N_PATH && na->path[0] == '\0' && na->root != RULE_AUTH)
            return p_fail(p, na->pos, "compare a field of the document, not the whole document");
        if (nb->kind == N_PATH && nb->path[0] == '\0' && nb->root != RULE_AUTH)
            return p_fail(p, nb->pos, "compare a field of the document, not the whole document");
        if (na->kind != N_LIT && na->kind != N_PATH)
            return p_fail(p, at, "compare values, not conditions (add parentheses?)");
        if (nb->kind != N_LIT && nb->kind != N_PATH)
            return p_fail(p, at, "compare values, not conditions (add parentheses?)");
    }
    id = p_node(p, N_CMP, at);
    if (id < 0)
        return -1;
    p->r->nodes[id].op = ops[i].op;
    p->r->nodes[id].a = a;
    p->r->nodes[id].b = b;
    return id;
}

static int p_not(parser_t *p)
{
    size_t at;
    int a, id;

    p_space(p);
    at = p->i;
    if (p->i + 1 < p->len && p->s[p->i] == '!' && p->s[p->i + 1] == '=')
        return p_fail(p, at, "expected a value");
    if (!p_take(p, "!"))
        return p_cmp(p);
    if (++p->depth > RULE_MAX_DEPTH)
        return p_fail(p, at, "nested too deep");
    a = p_not(p);
    p->depth--;
    if (a < 0)
        return -1;
    id = p_node(p, N_NOT, at);
    if (id >= 0)
        p->r->nodes[id].a = a;
    return id;
}

/* Left-associative chains of && (and of ||, one level up). */
static int p_chain(parser_t *p, const char *tok, nkind_t kind, int (*sub)(parser_t *))
{
    int a = sub(p), b, id;
    size_t at;

    if (a < 0)
        return -1;
    for (;;) {
        p_space(p);
        at = p->i;
        if (!p_take(p, tok))
            return a;
        b = sub(p);
        if (b < 0)
            return -1;
        id = p_node(p, kind, at);
        if (id < 0)
            return -1;
        p->r->nodes[id].a = a;
        p->r->nodes[id].b = b;
        a = id;
    }
}

static int p_and(parser_t *p) { return p_chain(p, "&&", N_AND, p_not); }

static int p_or(parser_t *p) { return p_chain(p, "||", N_OR, p_and); }

rule_t *rule_compile(const char *text, unsigned roots_allowed, char *err, size_t errlen)
{
    parser_t p;
    rule_t *r;
    size_t len = text != NULL ? strlen(text) : 0;

    if (errlen > 0)
        err[0] = '\0';
    if (len == 0 || len > RULE_MAX_TEXT) {
        if (errlen > 0)
            snprintf(err, errlen, len ? "longer than %d bytes" : "empty", RULE_MAX_TEXT);
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->text = strdup(text)) == NULL) {
        free(r);
        if (errlen > 0)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memset(&p, 0, sizeof(p));
    p.r = r;
    p.s = r->text;
    p.len = len;
    p.roots = roots_allowed;
    p.err = err;
    p.errlen = errlen;
    r->top = p_or(&p);
    if (r->top >= 0) {
        p_space(&p);
        if (p.i < p.len)
            p_fail(&p, p.i, "unexpected '%.20s'", p.s + p.i);
    }
    if (p.failed || r->top < 0) {
        if (!p.failed && errlen > 0)
            snprintf(err, errlen, "cannot compile");
        rule_free(r);
        return NULL;
    }
    return r;
}

void rule_free(rule_t *r)
{
    int i;

    if (r == NULL)
        return;
    for (i = 0; i < r->n; i++) {
        json_free(r->nodes[i].lit);
        free(r->nodes[i].path);
    }
    free(r->text);
    free(r);
}

const char *rule_text(const rule_t *r) { return r->text; }

unsigned rule_roots(const rule_t *r) { return r->roots_used; }

size_t rule_path_count(const rule_t *r, unsigned root)
{
    size_t n = 0;
    int i;

    for (i = 0; i < r->n; i++)
        if (r->nodes[i].kind == N_PATH && r->nodes[i].root == root && r->nodes[i].path[0])
            n++;
    return n;
}

const char *rule_path_at(const rule_t *r, unsigned root, size_t k)
{
    int i;

    for (i = 0; i < r->n; i++)
        if (r->nodes[i].kind == N_PATH && r->nodes[i].root == root && r->nodes[i].path[0] &&
            k-- == 0)
            return r->nodes[i].path;
    return NULL;
}

/* ------------------------------------------------------------------------
 * Evaluation
 * ------------------------------------------------------------------------ */

const json_t *rule_lookup(const json_t *v, const char *path)
{
    const char *seg = path;

    while (v != NULL && *seg) {
        const char *dot = strchr(seg, '.');
        size_t n = dot ? (size_t)(dot - seg) : strlen(seg);
        char key[128];
        if (v->type != JSON_OBJECT || n >= sizeof(key))
            return NULL;
        memcpy(key, seg, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        seg += n + (dot ? 1 : 0);
    }
    return v;
}

int rule_truthy(const json_t *v)
{
    if (v == NULL)
        return 0;
    switch (v->type) {
    case JSON_NULL:
        return 0;
    case JSON_BOOL:
        return v->u.boolean;
    case JSON_NUMBER:
        return v->u.num.d != 0 && v->u.num.d == v->u.num.d;
    case JSON_STRING:
        return v->u.str.len > 0;
    default:
        return 1;
    }
}

static const json_t null_value = {.type = JSON_NULL};

static const json_t *root_value(const rule_env_t *env, unsigned root)
{
    switch (root) {
    case RULE_AUTH:
        return env->auth;
    case RULE_DOC:
        return env->doc;
    case RULE_OLD:
        return env->old;
    default:
        return env->new_;
    }
}

static const json_t *node_value(const rule_t *r, const node_t *nd, const rule_env_t *env)
{
    const json_t *v;

    (void)r;
    if (nd->kind == N_LIT)
        return nd->lit;
    v = rule_lookup(root_value(env, nd->root), nd->path);
    return v != NULL ? v : &null_value;
}

/* Scalars equal as JavaScript's === would have them (numbers by value). */
static int scalar_equal(const json_t *a, const json_t *b)
{
    if (a->type == JSON_NUMBER && b->type == JSON_NUMBER)
        return a->u.num.d == b->u.num.d;
    return json_equal(a, b);
}

/* a op b for two single values (no array expansion). */
static int compare_one(op_t op, const json_t *a, const json_t *b)
{
    double x, y;
    int c;

    switch (op) {
    case OP_EQ:
        return scalar_equal(a, b);
    case OP_NE:
        return !scalar_equal(a, b);
    default:
        break;
    }
    if (a->type == JSON_NUMBER && b->type == JSON_NUMBER) {
        x = a->u.num.d;
        y = b->u.num.d;
        c = x < y ? -1 : x > y ? 1 : 0;
        if (x != x || y != y)
            return 0;
    } else if (a->type == JSON_STRING && b->type == JSON_STRING) {
        size_t n = a->u.str.len < b->u.str.len ? a->u.str.len : b->u.str.len;
        c = memcmp(a->u.str.s, b->u.str.s, n);
        if (c == 0)
            c = a->u.str.len < b->u.str.len ? -1 : a->u.str.len > b->u.str.len ? 1 : 0;
    } else {
        return 0; /* never ordered across types */
    }
    switch (op) {
    case OP_LT:
        return c < 0;
    case OP_LE:
        return c <= 0;
    case OP_GT:
        return c > 0;
    default:
        return c >= 0;
    }
}

static int contains(const json_t *arr, const json_t *v)
{
    size_t i;

    if (arr->type != JSON_ARRAY)
        return 0;
    for (i = 0; i < arr->u.arr.len; i++)
        if (scalar_equal(arr->u.arr.items[i], v))
            return 1;
    return 0;
}

/* A field's value matched as MongoDB matches it: an array field holds when
 * one of its elements does (or, for == and in, the array as a whole). */
static int field_any(op_t op, const json_t *field, const json_t *v, int field_left)
{
    size_t i;

    if (op == OP_NE)
        return !field_any(OP_EQ, field, v, field_left);
    if (op == OP_IN) {
        if (field_left) { /* doc.f in [..] */
            if (v->type != JSON_ARRAY)
                return 0;
            if (field->type == JSON_ARRAY) {
                for (i = 0; i < field->u.arr.len; i++)
                    if (contains(v, field->u.arr.items[i]))
                        return 1;
                return contains(v, field);
            }
            return contains(v, field);
        }
        /* x in doc.f: the field (an array) holds x */
        if (field->type == JSON_ARRAY)
            return contains(field, v);
        return scalar_equal(field, v);
    }
    if (field->type == JSON_ARRAY && v->type != JSON_ARRAY) {
        for (i = 0; i < field->u.arr.len; i++)
            if (field_left ? compare_one(op, field->u.arr.items[i], v)
                           : compare_one(op, v, field->u.arr.items[i]))
                return 1;
        return 0;
    }
    return field_left ? compare_one(op, field, v) : compare_one(op, v, field);
}

static int is_doc_path(const node_t *nd) { return nd->kind == N_PATH && nd->root != RULE_AUTH; }

static int eval_cmp(const rule_t *r, const node_t *nd, const rule_env_t *env)
{
    const node_t *na = &r->nodes[nd->a], *nb = &r->nodes[nd->b];
    const json_t *a = node_value(r, na, env), *b = node_value(r, nb, env);

    if (is_doc_path(na))
        return field_any(nd->op, a, b, 1);
    if (is_doc_path(nb))
        return field_any(nd->op, b, a, 0);
    if (nd->op == OP_IN)
        return b->type == JSON_ARRAY && contains(b, a);
    return compare_one(nd->op, a, b);
}

/* A path alone as a condition: a claim is read as JavaScript would; a
 * field alone is field == true, which the database can match the same way. */
static int path_holds(const rule_t *r, const node_t *nd, const rule_env_t *env)
{
    static const json_t yes = {.type = JSON_BOOL, .u.boolean = 1};

    if (is_doc_path(nd))
        return field_any(OP_EQ, node_value(r, nd, env), &yes, 1);
    return rule_truthy(node_value(r, nd, env));
}

static int eval_node(const rule_t *r, int id, const rule_env_t *env)
{
    const node_t *nd = &r->nodes[id];

    switch (nd->kind) {
    case N_LIT:
        return rule_truthy(nd->lit);
    case N_PATH:
        return path_holds(r, nd, env);
    case N_NOT:
        return !eval_node(r, nd->a, env);
    case N_AND:
        return eval_node(r, nd->a, env) && eval_node(r, nd->b, env);
    case N_OR:
        return eval_node(r, nd->a, env) || eval_node(r, nd->b, env);
    case N_CMP:
        return eval_cmp(r, nd, env);
    }
    return 0;
}

int rule_eval(const rule_t *r, const rule_env_t *env)
{
    return r != NULL && eval_node(r, r->top, env);
}

/* ------------------------------------------------------------------------
 * Filters
 * ------------------------------------------------------------------------ */

typedef struct pe {
    rule_match_t m;
    json_t *f; /* RULE_SOME */
} pe_t;

static pe_t pe_const(int holds)
{
    pe_t p = {holds ? RULE_ALL : RULE_NONE, NULL};
    return p;
}

static pe_t pe_some(json_t *f)
{
    pe_t p = {f != NULL ? RULE_SOME : RULE_NONE, f};
    return p;
}

static int filter_scalar(const json_t *v)
{
    return v->type == JSON_NULL || v->type == JSON_BOOL || v->type == JSON_NUMBER ||
           v->type == JSON_STRING;
}

static int filter_list(const json_t *v)
{
    size_t i;

    if (v->type != JSON_ARRAY)
        return 0;
    for (i = 0; i < v->u.arr.len; i++)
        if (!filter_scalar(v->u.arr.items[i]))
            return 0;
    return 1;
}

/* {path: {op: value}} */
static json_t *field_filter(const char *path, const char *op, const json_t *value)
{
    json_t *inner = json_object(), *outer = json_object(), *copy = json_copy(value);

    if (inner == NULL || outer == NULL || copy == NULL || json_object_set(inner, op, copy) < 0) {
        if (inner == NULL || outer == NULL)
            json_free(copy);
        json_free(inner);
        json_free(outer);
        return NULL;
    }
    if (json_object_set(outer, path, inner) < 0) {
        json_free(outer);
        return NULL;
    }
    return outer;
}

static pe_t pe_cmp(const rule_t *r, const node_t *nd, unsigned root, const rule_env_t *env)
{
    const node_t *na = &r->nodes[nd->a], *nb = &r->nodes[nd->b];
    const node_t *field, *other;
    const json_t *v;
    int field_left;
    op_t op = nd->op;
    static const char *const names[] = {"$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in"};

    if (na->kind == N_PATH && na->root == root) {
        field = na;
        other = nb;
        field_left = 1;
    } else if (nb->kind == N_PATH && nb->root == root) {
        field = nb;
        other = na;
        field_left = 0;
    } else {
        return pe_const(eval_cmp(r, nd, env));
    }
    v = node_value(r, other, env);
    if (op == OP_IN) {
        if (field_left) /* field in list */
            return filter_list(v) ? pe_some(field_filter(field->path, "$in", v)) : pe_const(0);
        /* value in field (an array field holding it) */
        if (filter_scalar(v))
            return pe_some(field_filter(field->path, "$eq", v));
        if (filter_list(v))
            return pe_some(field_filter(field->path, "$in", v));
        return pe_const(0);
    }
    if (!filter_scalar(v))
        return pe_const(op == OP_NE); /* a field never equals an object */
    if (!field_left) {                /* v < field is field > v */
        switch (op) {
        case OP_LT:
            op = OP_GT;
            break;
        case OP_LE:
            op = OP_GE;
            break;
        case OP_GT:
            op = OP_LT;
            break;
        case OP_GE:
            op = OP_LE;
            break;
        default:
            break;
        }
    }
    return pe_some(field_filter(field->path, names[op], v));
}

/* {"$and"|"$or"|"$nor": [a, b...]}; takes a and b (b may be NULL). */
static json_t *combine(const char *op, json_t *a, json_t *b)
{
    json_t *arr = json_array(), *obj = json_object();

    if (arr == NULL || obj == NULL) {
        json_free(arr);
        json_free(obj);
        json_free(a);
        json_free(b);
        return NULL;
    }
    if (json_array_append(arr, a) < 0 || (b != NULL && json_array_append(arr, b) < 0)) {
        if (b != NULL && arr->u.arr.len == 0)
            json_free(b);
        json_free(arr);
        json_free(obj);
        return NULL;
    }
    if (json_object_set(obj, op, arr) < 0) {
        json_free(obj);
        return NULL;
    }
    return obj;
}

static pe_t pe_node(const rule_t *r, int id, unsigned root, const rule_env_t *env)
{
    const node_t *nd = &r->nodes[id];
    pe_t a, b;

    switch (nd->kind) {
    case N_LIT:
        return pe_const(rule_truthy(nd->lit));
    case N_PATH:
        if (nd->root != root)
            return pe_const(path_holds(r, nd, env));
        {
            static const json_t yes = {.type = JSON_BOOL, .u.boolean = 1};
            return pe_some(field_filter(nd->path, "$eq", &yes)); /* a field alone: == true */
        }
    case N_CMP:
        return pe_cmp(r, nd, root, env);
    case N_NOT:
        a = pe_node(r, nd->a, root, env);
        if (a.m != RULE_SOME)
            return pe_const(a.m == RULE_NONE);
        return pe_some(combine("$nor", a.f, NULL));
    case N_AND:
    case N_OR: {
        int is_and = nd->kind == N_AND;
        a = pe_node(r, nd->a, root, env);
        if (a.m == (is_and ? RULE_NONE : RULE_ALL))
            return a;
        b = pe_node(r, nd->b, root, env);
        if (b.m == (is_and ? RULE_NONE : RULE_ALL)) {
            json_free(a.f);
            return b;
        }
        if (a.m != RULE_SOME)
            return b;
        if (b.m != RULE_SOME)
            return a;
        return pe_some(combine(is_and ? "$and" : "$or", a.f, b.f));
    }
    }
    return pe_const(0);
}

rule_match_t rule_filter(const rule_t *r, unsigned root, const rule_env_t *env, json_t **filter)
{
    pe_t p;

    *filter = NULL;
    if (r == NULL)
        return RULE_NONE;
    p = pe_node(r, r->top, root, env);
    if (p.m == RULE_SOME)
        *filter = p.f;
    return p.m;
}
