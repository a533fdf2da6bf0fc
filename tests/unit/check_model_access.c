/* check_model_access: unit tests for the models file's permissions
 * (model.c loading them, model_access.c applying them): rules per
 * operation, readonly / hidden / set_from fields, push options, and the
 * "$channels" patterns. */
#include "model_fixture.h"

static const char *const RULED =
    "{\"todo\": {\"fields\": {"
    "   \"title\": \"String\", \"done\": \"Boolean\", \"shared\": \"Boolean\","
    "   \"owner\": {\"type\": \"String\", \"set_from\": \"auth.sub\"},"
    "   \"created_by_app\": {\"type\": \"String\", \"readonly\": true},"
    "   \"secret\": {\"type\": \"String\", \"hidden\": true},"
    "   \"notes\": {\"type\": \"String\", \"hidden\": \"doc.owner != auth.sub\"}},"
    "  \"rules\": {\"read\": \"doc.shared || doc.owner == auth.sub\","
    "              \"create\": \"auth.sub != null\","
    "              \"update\": \"old.owner == auth.sub && new.title != 'locked'\"},"
    "  \"push_options\": [\"source\"]},"
    " \"open\": {\"fields\": {\"x\": \"Number\"}},"
    " \"$channels\": ["
    "   {\"match\": \"/todos/{auth.sub}\", \"publish\": \"true\"},"
    "   {\"match\": \"/admin/**\", \"subscribe\": \"'admin' in auth.roles\"},"
    "   {\"match\": \"/rooms/*\", \"presence\": false}"
    " ]}";

static model_set_t *rset;
static const model_t *todo, *open_m;
static json_t *ann, *bob;

static void rsetup(void)
{
    rset = load(RULED);
    todo = model_set_find(rset, "todo");
    open_m = model_set_find(rset, "open");
    ck_assert_ptr_nonnull(todo);
    ann = js("{\"sub\":\"ann\",\"roles\":[\"admin\"]}");
    bob = js("{\"sub\":\"bob\"}");
}

static void rteardown(void)
{
    json_free(ann);
    json_free(bob);
    model_set_free(rset);
}

static char *bson_text(const bson_t *b)
{
    char *s = bson_as_relaxed_extended_json(b, NULL);
    char *out = strdup(s);
    bson_free(s);
    return out;
}

START_TEST(test_rules_per_operation)
{
    json_t *mine = js("{\"owner\":\"ann\",\"title\":\"t\"}");
    json_t *locked = js("{\"owner\":\"ann\",\"title\":\"locked\"}");
    bson_t *f = NULL;
    json_t *err = NULL;
    char *s;

    ck_assert(model_set_has_rules(rset));
    ck_assert(!model_has_rules(open_m));
    /* a model without rules allows everything */
    ck_assert_int_eq(model_access_check(open_m, MODEL_DELETE, NULL, mine, NULL, NULL), 1);
    ck_assert_int_eq(model_access_check(todo, MODEL_CREATE, ann, mine, NULL, NULL), 1);
    ck_assert_int_eq(model_access_check(todo, MODEL_CREATE, NULL, mine, NULL, NULL), 0);
    ck_assert_int_eq(model_access_check(todo, MODEL_UPDATE, ann, NULL, mine, mine), 1);
    ck_assert_int_eq(model_access_check(todo, MODEL_UPDATE, ann, NULL, mine, locked), 0);
    ck_assert_int_eq(model_access_check(todo, MODEL_UPDATE, bob, NULL, mine, mine), 0);
    /* left out of "rules": refused */
    ck_assert_int_eq(model_access_check(todo, MODEL_DELETE, ann, mine, NULL, NULL), 0);
    ck_assert_int_eq(model_access_filter(todo, MODEL_DELETE, ann, NULL, &f, &err), RULE_NONE);
    ck_assert_int_eq(model_access_filter(open_m, MODEL_READ, NULL, NULL, &f, &err), RULE_ALL);

    ck_assert_int_eq(model_access_filter(todo, MODEL_READ, bob, NULL, &f, &err), RULE_SOME);
    s = bson_text(f);
    ck_assert_str_eq(s, "{ \"$or\" : [ { \"shared\" : { \"$eq\" : true } }, "
                        "{ \"owner\" : { \"$eq\" : \"bob\" } } ] }");
    free(s);
    bson_destroy(f);
    /* update: the stored document's conditions, new known */
    ck_assert_int_eq(model_access_filter(todo, MODEL_UPDATE, ann, mine, &f, &err), RULE_SOME);
    s = bson_text(f);
    ck_assert_str_eq(s, "{ \"owner\" : { \"$eq\" : \"ann\" } }");
    free(s);
    bson_destroy(f);
    ck_assert_int_eq(model_access_filter(todo, MODEL_UPDATE, ann, locked, &f, &err), RULE_NONE);

    err = model_access_forbidden(todo, MODEL_DELETE);
    ck_assert_str_eq(json_get_string(err, "name"), "Forbidden");
    ck_assert_str_eq(json_get_string(err, "message"), "todo: delete is not allowed");
    json_free(err);
    json_free(mine);
    json_free(locked);
}
END_TEST

START_TEST(test_fields)
{
    json_t *data = js("{\"title\":\"t\",\"owner\":\"mallory\",\"created_by_app\":\"x\"}");
    json_t *doc, *err = NULL;

    ck_assert_int_eq(model_access_prepare_create(todo, bob, data, &err), 0);
    ck_assert_str_eq(json_get_string(data, "owner"), "bob"); /* not what was sent */
    ck_assert_str_eq(json_get_string(data, "created_by_app"), "x");
    ck_assert_int_eq(model_access_prepare_create(todo, NULL, data, &err), -1);
    ck_assert_str_eq(json_get_string(err, "name"), "Forbidden");
    json_free(err);
    model_access_prepare_update(todo, data);
    ck_assert_ptr_null(json_object_get(data, "owner"));
    ck_assert_ptr_null(json_object_get(data, "created_by_app"));
    ck_assert_str_eq(json_get_string(data, "title"), "t");
    json_free(data);

    doc = js("{\"title\":\"t\",\"owner\":\"ann\",\"secret\":\"s\",\"notes\":\"n\"}");
    model_access_hide(todo, ann, doc);
    ck_assert_ptr_null(json_object_get(doc, "secret"));
    ck_assert_str_eq(json_get_string(doc, "notes"), "n");
    model_access_hide(todo, bob, doc);
    ck_assert_ptr_null(json_object_get(doc, "notes"));
    ck_assert_str_eq(json_get_string(doc, "title"), "t");
    json_free(doc);
}
END_TEST

static int query_refused(const json_t *auth, const char *opt)
{
    json_t *o = js(opt), *err = NULL;
    int rc = model_access_query(todo, auth, o, &err);

    ck_assert_int_eq(rc < 0, err != NULL);
    json_free(err);
    json_free(o);
    return rc < 0;
}

START_TEST(test_hidden_fields_not_queried)
{
    ck_assert(!query_refused(bob, "{\"query\":{\"title\":\"x\"}}"));
    ck_assert(query_refused(bob, "{\"query\":{\"secret\":{\"$regex\":\"^a\"}}}"));
    ck_assert(query_refused(ann, "{\"query\":{\"$or\":[{\"x\":1},{\"secret\":\"a\"}]}}"));
    /* notes is hidden from whoever does not own the document */
    ck_assert(query_refused(bob, "{\"query\":{\"notes.x\":1}}"));
    ck_assert(query_refused(bob, "{\"sorting\":{\"sort\":{\"notes\":1}}}"));
    ck_assert(query_refused(bob, "{\"sorting\":{\"sort\":\"-secret\"}}"));
    ck_assert(!query_refused(bob, "{\"sorting\":{\"sort\":{\"title\":1},\"limit\":2}}"));
}
END_TEST

START_TEST(test_push_options)
{
    ck_assert(model_access_push_option(todo, "url"));
    ck_assert(model_access_push_option(todo, "source"));
    ck_assert(!model_access_push_option(todo, "authToken"));
    ck_assert(!model_access_push_option(NULL, "source"));
    ck_assert(!model_access_silent(todo));
    ck_assert(model_access_silent(open_m));
}
END_TEST

START_TEST(test_channels)
{
    json_t *num = js("{\"sub\":42}");

    ck_assert(model_access_channel(rset, "/todos/ann", ann, MODEL_SUBSCRIBE));
    ck_assert(!model_access_channel(rset, "/todos/ann", bob, MODEL_SUBSCRIBE));
    ck_assert(!model_access_channel(rset, "/todos/ann", NULL, MODEL_SUBSCRIBE));
    ck_assert(model_access_channel(rset, "/todos/ann", ann, MODEL_PUBLISH));
    ck_assert(!model_access_channel(rset, "/todos/ann/x", ann, MODEL_SUBSCRIBE));
    ck_assert(model_access_channel(rset, "/todos/42", num, MODEL_SUBSCRIBE));
    ck_assert(model_access_channel(rset, "/admin/a/b", ann, MODEL_SUBSCRIBE));
    ck_assert(model_access_channel(rset, "/admin/a/b", ann, MODEL_PRESENCE));
    ck_assert(!model_access_channel(rset, "/admin/a/b", bob, MODEL_SUBSCRIBE));
    ck_assert(!model_access_channel(rset, "/admin/a/b", ann, MODEL_PUBLISH));
    ck_assert(model_access_channel(rset, "/rooms/1", bob, MODEL_SUBSCRIBE));
    ck_assert(!model_access_channel(rset, "/rooms/1", bob, MODEL_PRESENCE));
    ck_assert(!model_access_channel(rset, "/rooms/1/2", bob, MODEL_PRESENCE));
    /* no entry matches: nothing */
    ck_assert(!model_access_channel(rset, "/other", ann, MODEL_SUBSCRIBE));
    ck_assert(!model_access_channel(rset, "/other", ann, MODEL_PRESENCE));
    ck_assert(!model_access_channel(rset, "/other", ann, MODEL_PUBLISH));
    /* a file without rules: everything, as before */
    ck_assert(model_access_channel(set, "/other", NULL, MODEL_PUBLISH));
    json_free(num);
}
END_TEST

START_TEST(test_load_errors)
{
    load_fails("{\"t\": {\"fields\": {\"a\": \"String\"}, \"rules\": {\"read\": \"doc.b == 1\"}}}",
               "model \"t\"", "rules.read", "\"b\" is not a field", NULL);
    load_fails("{\"t\": {\"fields\": {\"a\": \"String\"}, \"rules\": {\"read\": \"old.a == 1\"}}}",
               "rules.read", "old is not known here", NULL);
    load_fails("{\"t\": {\"fields\": {\"a\": \"String\"}, \"rules\": {\"list\": true}}}",
               "unknown operation \"list\"", NULL);
    load_fails("{\"t\": {\"fields\": {\"a\": \"String\"}, \"rules\": {\"read\": \"doc.a ==\"}}}",
               "rules.read", "expected a value", NULL);
    load_fails("{\"t\": {\"fields\": {\"a\": {\"b\": {\"type\": \"String\", \"hidden\": true}}}}}",
               "field \"a.b\"", "not to those of a subdocument", NULL);
    load_fails("{\"t\": {\"fields\": {\"a\": {\"type\": \"String\", \"set_from\": \"sub\"}}}}",
               "set_from must name a claim", NULL);
    load_fails("{\"t\": {\"fields\": {\"a\": {\"type\": \"String\", \"hidden\": \"doc.zz\"}}}}",
               "hidden", "\"zz\" is not a field", NULL);
    load_fails("{\"t\": {\"fields\": {\"a\": \"String\"}, \"push_options\": [\"error\"]}}",
               "is a callback", NULL);
    load_fails("{\"$channels\": [{\"match\": \"/a/**/b\"}]}", "** may only end", NULL);
    load_fails("{\"$channels\": [{\"match\": \"/a/{sub}\"}]}", "placeholder names a claim", NULL);
    load_fails("{\"$channels\": [{\"match\": \"/a\", \"subscribe\": \"doc.x\"}]}",
               "$channels \"/a\": subscribe", "doc is not known here", NULL);
    load_fails("{\"$channels\": [{\"match\": \"/a\", \"join\": true}]}", "unknown key \"join\"",
               NULL);
    load_fails("{\"$x\": {\"fields\": {}}}", "may not start with '$'", NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_access");
    TCase *plain = tcase_create("plain"), *ruled = tcase_create("ruled");

    tcase_add_checked_fixture(plain, setup, teardown);
    tcase_add_checked_fixture(ruled, rsetup, rteardown);
    tcase_add_checked_fixture(ruled, setup, teardown);
    tcase_add_test(ruled, test_rules_per_operation);
    tcase_add_test(ruled, test_fields);
    tcase_add_test(ruled, test_hidden_fields_not_queried);
    tcase_add_test(ruled, test_push_options);
    tcase_add_test(ruled, test_channels);
    tcase_add_test(plain, test_load_errors);
    suite_add_tcase(s, ruled);
    suite_add_tcase(s, plain);
    return check_run(s);
}
