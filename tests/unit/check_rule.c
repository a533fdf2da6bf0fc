/* check_rule: unit tests for src/rule.c: the permission expressions of
 * the models file, compiled, evaluated over documents and claims, and
 * turned into MongoDB filters that select exactly what they allow. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "rule.h"
#include "run_suite.h"

static json_t *J(const char *text)
{
    char err[128];
    json_t *v = json_parse(text, strlen(text), 32, err, sizeof(err));

    ck_assert_msg(v != NULL, "bad test JSON %s: %s", text, err);
    return v;
}

static rule_t *compile(const char *text, unsigned roots)
{
    char err[200];
    rule_t *r = rule_compile(text, roots, err, sizeof(err));

    ck_assert_msg(r != NULL, "%s: %s", text, err);
    return r;
}

/* The reason compiling text fails. */
static const char *refused(const char *text, unsigned roots)
{
    static char err[200];
    rule_t *r = rule_compile(text, roots, err, sizeof(err));

    ck_assert_msg(r == NULL, "%s compiled", text);
    ck_assert_msg(err[0] != '\0', "%s: no reason", text);
    return err;
}

static int holds(const char *text, const char *auth, const char *doc)
{
    rule_t *r = compile(text, RULE_AUTH | RULE_DOC);
    json_t *a = auth ? J(auth) : NULL, *d = doc ? J(doc) : NULL;
    rule_env_t env = {.auth = a, .doc = d};
    int rc = rule_eval(r, &env);

    rule_free(r);
    json_free(a);
    json_free(d);
    return rc;
}

/* rule_filter over doc with auth, dumped ("ALL", "NONE" or the JSON). */
static char *filter_of(const char *text, const char *auth)
{
    rule_t *r = compile(text, RULE_AUTH | RULE_DOC);
    json_t *a = auth ? J(auth) : NULL, *f = NULL;
    rule_env_t env = {.auth = a};
    rule_match_t m = rule_filter(r, RULE_DOC, &env, &f);
    char *out = m == RULE_SOME ? json_dump(f, NULL) : strdup(m == RULE_ALL ? "ALL" : "NONE");

    ck_assert_int_eq(m == RULE_SOME, f != NULL);
    json_free(f);
    json_free(a);
    rule_free(r);
    return out;
}

#define ck_filter(text, auth, want)                                                                \
    do {                                                                                           \
        char *got_ = filter_of(text, auth);                                                        \
        ck_assert_str_eq(got_, want);                                                              \
        free(got_);                                                                                \
    } while (0)

START_TEST(test_owner_rule)
{
    const char *rule = "doc.owner == auth.sub";

    ck_assert_int_eq(holds(rule, "{\"sub\":\"ann\"}", "{\"owner\":\"ann\"}"), 1);
    ck_assert_int_eq(holds(rule, "{\"sub\":\"bob\"}", "{\"owner\":\"ann\"}"), 0);
    /* anonymous: auth is null, auth.sub is null; a document without an
     * owner (null) would match it, which is why rules say auth.sub != null */
    ck_assert_int_eq(holds(rule, NULL, "{\"owner\":\"ann\"}"), 0);
    ck_assert_int_eq(holds("auth.sub != null && doc.owner == auth.sub", NULL, "{}"), 0);
    ck_filter(rule, "{\"sub\":\"ann\"}", "{\"owner\":{\"$eq\":\"ann\"}}");
}
END_TEST

START_TEST(test_logic_and_literals)
{
    ck_assert_int_eq(holds("doc.shared || doc.owner == auth.sub", "{\"sub\":\"x\"}",
                           "{\"shared\":true,\"owner\":\"y\"}"),
                     1);
    ck_assert_int_eq(holds("!(doc.n > 3) && doc.n >= 1", NULL, "{\"n\":2}"), 1);
    ck_assert_int_eq(holds("!(doc.n > 3) && doc.n >= 1", NULL, "{\"n\":4}"), 0);
    ck_assert_int_eq(holds("doc.kind in ['a', \"b\"]", NULL, "{\"kind\":\"b\"}"), 1);
    ck_assert_int_eq(holds("doc.kind in ['a', 'b']", NULL, "{\"kind\":\"c\"}"), 0);
    ck_assert_int_eq(holds("'admin' in auth.roles", "{\"roles\":[\"user\",\"admin\"]}", "{}"), 1);
    ck_assert_int_eq(holds("'admin' in auth.roles", "{\"roles\":\"admin\"}", "{}"), 0);
    ck_assert_int_eq(holds("auth.level >= 2.5", "{\"level\":3}", "{}"), 1);
    ck_assert_int_eq(holds("auth.level >= -1e3", "{\"level\":-999}", "{}"), 1);
    ck_assert_int_eq(holds("true && !false && null == null", NULL, NULL), 1);
    /* different types are never ordered */
    ck_assert_int_eq(holds("doc.n < 'z'", NULL, "{\"n\":1}"), 0);
    ck_assert_int_eq(holds("doc.s < 'b'", NULL, "{\"s\":\"a\"}"), 1);
    /* an array field matches as MongoDB matches it */
    ck_assert_int_eq(holds("doc.tags == 'x'", NULL, "{\"tags\":[\"w\",\"x\"]}"), 1);
    ck_assert_int_eq(
        holds("auth.sub in doc.editors", "{\"sub\":\"ann\"}", "{\"editors\":[\"bob\",\"ann\"]}"),
        1);
    ck_assert_int_eq(
        holds("doc.meta.team == auth.team", "{\"team\":7}", "{\"meta\":{\"team\":7.0}}"), 1);
    /* && binds tighter than || */
    ck_assert_int_eq(holds("true || false && false", NULL, NULL), 1);
}
END_TEST

START_TEST(test_filters)
{
    ck_filter(
        "doc.public || doc.owner == auth.sub", "{\"sub\":\"ann\"}",
        "{\"$or\":[{\"public\":{\"$eq\":true}},{\"owner\":{\"$eq\":\"ann\"}}]}");
    /* what depends on auth alone is decided before the database is asked */
    ck_filter("'admin' in auth.roles || doc.owner == auth.sub", "{\"roles\":[\"admin\"]}", "ALL");
    ck_filter("auth.sub != null && doc.owner == auth.sub", NULL, "NONE");
    ck_filter("auth.sub != null && doc.owner == auth.sub", "{\"sub\":\"b\"}",
              "{\"owner\":{\"$eq\":\"b\"}}");
    ck_filter("!(doc.n < 3)", NULL, "{\"$nor\":[{\"n\":{\"$lt\":3}}]}");
    ck_filter("3 < doc.n", NULL, "{\"n\":{\"$gt\":3}}");
    ck_filter("doc.k in ['a', 'b'] && doc.n != 1", NULL,
              "{\"$and\":[{\"k\":{\"$in\":[\"a\",\"b\"]}},{\"n\":{\"$ne\":1}}]}");
    ck_filter("auth.sub in doc.editors", "{\"sub\":\"x\"}", "{\"editors\":{\"$eq\":\"x\"}}");
    ck_filter("doc.team in auth.teams", "{\"teams\":[1,2]}", "{\"team\":{\"$in\":[1,2]}}");
    /* a claim that is an object is never put in a filter: no operator
     * injection through a token */
    ck_filter("doc.owner == auth.sub", "{\"sub\":{\"$gt\":\"\"}}", "NONE");
    ck_filter("doc.owner != auth.sub", "{\"sub\":{\"$gt\":\"\"}}", "ALL");
    ck_filter("doc.team in auth.teams", "{\"teams\":[{\"$ne\":1}]}", "NONE");
    ck_filter("doc.team in auth.teams", "{\"teams\":\"x\"}", "NONE");
}
END_TEST

START_TEST(test_update_roots)
{
    rule_t *r =
        compile("old.owner == auth.sub && new.owner == old.owner", RULE_AUTH | RULE_OLD | RULE_NEW);
    json_t *auth = J("{\"sub\":\"ann\"}"), *old = J("{\"owner\":\"ann\"}");
    json_t *keep = J("{\"owner\":\"ann\"}"), *give = J("{\"owner\":\"bob\"}"), *f = NULL;
    rule_env_t env = {.auth = auth, .old = old, .new_ = keep};
    char *s;

    ck_assert_int_eq(rule_eval(r, &env), 1);
    env.new_ = give;
    ck_assert_int_eq(rule_eval(r, &env), 0);
    /* the conditions on the stored document, with new known: the write's filter */
    env.new_ = keep;
    env.old = NULL;
    ck_assert_int_eq(rule_filter(r, RULE_OLD, &env, &f), RULE_SOME);
    s = json_dump(f, NULL);
    ck_assert_str_eq(s, "{\"$and\":[{\"owner\":{\"$eq\":\"ann\"}},{\"owner\":{\"$eq\":\"ann\"}}]}");
    free(s);
    json_free(f);
    ck_assert_uint_eq(rule_path_count(r, RULE_OLD), 2);
    ck_assert_str_eq(rule_path_at(r, RULE_NEW, 0), "owner");
    ck_assert_uint_eq(rule_roots(r), RULE_AUTH | RULE_OLD | RULE_NEW);
    rule_free(r);
    json_free(auth);
    json_free(old);
    json_free(keep);
    json_free(give);
}
END_TEST

START_TEST(test_compile_errors)
{
    unsigned read = RULE_AUTH | RULE_DOC;

    ck_assert_ptr_nonnull(
        strstr(refused("old.owner == auth.sub", read), "old is not known here (use auth, doc)"));
    ck_assert_ptr_nonnull(strstr(refused("doc.a == doc.b", read), "compares two fields of doc"));
    ck_assert_ptr_nonnull(strstr(refused("doc.a = 1", read), "'=' is not an operator"));
    ck_assert_ptr_nonnull(strstr(refused("user.id == 1", read), "unknown name 'user'"));
    ck_assert_ptr_nonnull(strstr(refused("doc.a == ", read), "expected a value"));
    ck_assert_ptr_nonnull(strstr(refused("(doc.a == 1", read), "expected ')'"));
    ck_assert_ptr_nonnull(strstr(refused("doc.a == 'x", read), "unterminated string"));
    ck_assert_ptr_nonnull(strstr(refused("doc.a in [doc.b]", read), "literals only"));
    ck_assert_ptr_nonnull(strstr(refused("doc.a == 1 2", read), "unexpected '2'"));
    ck_assert_ptr_nonnull(strstr(refused("doc.$where == 1", read), "expected a name"));
    ck_assert_ptr_nonnull(strstr(refused("doc == 1", read), "not the whole document"));
    ck_assert_ptr_nonnull(strstr(refused("(doc.a == 1) == true", read), "compare values"));
    ck_assert_ptr_nonnull(strstr(refused("1.2.3 == doc.a", read), "bad number"));
    ck_assert_ptr_nonnull(strstr(refused("", read), "empty"));
    ck_assert_str_eq(refused("doc.a ==", read), "at 9: expected a value"); /* the end */
}
END_TEST

START_TEST(test_bounds)
{
    char deep[200], *long_rule;
    size_t i, n = 0;

    for (i = 0; i < 40; i++)
        deep[n++] = '(';
    memcpy(deep + n, "true", 4);
    n += 4;
    for (i = 0; i < 40; i++)
        deep[n++] = ')';
    deep[n] = '\0';
    ck_assert_ptr_nonnull(strstr(refused(deep, RULE_AUTH), "nested too deep"));

    long_rule = malloc(RULE_MAX_TEXT);
    ck_assert_ptr_nonnull(long_rule);
    n = 0;
    while (n + 8 < RULE_MAX_TEXT - 8) {
        memcpy(long_rule + n, "true || ", 8);
        n += 8;
    }
    memcpy(long_rule + n, "true", 5);
    ck_assert_ptr_nonnull(strstr(refused(long_rule, RULE_AUTH), "too long"));
    free(long_rule);
}
END_TEST

int main(void)
{
    const TTest *tests[] = {test_owner_rule,   test_logic_and_literals, test_filters,
                            test_update_roots, test_compile_errors,     test_bounds};

    return check_run_tests("rule", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
