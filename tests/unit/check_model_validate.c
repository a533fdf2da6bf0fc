/* check_model_validate: unit tests for documents against their schema (src/model_validate.c):
 * defaults, validators, subdocuments and arrays as Mongoose does them, every failing path listed,
 * updates merged over the stored document. */
#include "model_fixture.h"

START_TEST(test_nested_objects_are_subdocuments)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"meta\": {\"author\": \"ann\", \"x\": 1}}");
    ck_assert_int_eq(type_at(d, "meta"), BSON_TYPE_DOCUMENT);
    ck_assert_str_eq(utf8_at(d, "meta.author"), "ann");
    ck_assert_int_eq(int32_at(d, "meta.votes"), 1); /* default inside */
    ck_assert_int_eq(type_at(d, "meta.x"), BSON_TYPE_EOD);
    bson_destroy(d);

    d = create_ok("{\"title\": \"t\", \"meta\": null}");
    ck_assert_int_eq(int32_at(d, "meta.votes"), 1);
    bson_destroy(d);
    json_t *err = create_fails("{\"title\": \"t\", \"meta\": 5}");
    assert_error_at(err, "meta", "Object", NULL);
    json_free(err);

    /* required inside a nested object, also when the object is not sent */
    model_set_t *s = load("{\"b\": {\"fields\": {\"meta\": {\"author\": "
                          "{\"type\": \"String\", \"required\": true}, \"n\": \"Number\"}}}}");
    const char *cases[] = {"{}", "{\"meta\": {\"n\": 1}}"};
    for (size_t i = 0; i < 2; i++) {
        json_t *data = js(cases[i]);
        ck_assert_ptr_null(model_prepare_create(model_set_find(s, "b"), data, &err));
        assert_error_at(err, "meta.author", "required", "Path `meta.author` is required.");
        json_free(err);
        json_free(data);
    }
    model_set_free(s);
}
END_TEST

START_TEST(test_document_arrays)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"items\": "
                          "[{\"name\": \"x\"}, {\"name\": \"y\", \"qty\": \"3\", "
                          "\"_id\": \"5f1d7c2e9b1e8a3d4c5b6a79\"}]}");
    ck_assert_int_eq(type_at(d, "items.0._id"), BSON_TYPE_OID); /* each gets its own _id */
    ck_assert_int_eq(int32_at(d, "items.0.qty"), 1);
    ck_assert_int_eq(int32_at(d, "items.1.qty"), 3);
    bson_iter_t it = iter_at(d, "items.1._id");
    char hex[25];
    bson_oid_to_string(bson_iter_oid(&it), hex);
    ck_assert_str_eq(hex, "5f1d7c2e9b1e8a3d4c5b6a79"); /* kept when sent */
    bson_destroy(d);

    json_t *err = create_fails("{\"title\": \"t\", \"items\": [{\"qty\": 1}, 7]}");
    assert_error_at(err, "items.0.name", "required", "Path `items.0.name` is required.");
    assert_error_at(err, "items.1", "Embedded", NULL);
    json_free(err);
}
END_TEST

START_TEST(test_mixed_kept_as_sent)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"extra\": {\"a\": [1, \"b\", null], \"n\": 2.5}}");
    ck_assert_int_eq(int32_at(d, "extra.a.0"), 1);
    ck_assert_str_eq(utf8_at(d, "extra.a.1"), "b");
    ck_assert(double_at(d, "extra.n") == 2.5);
    bson_destroy(d);
    /* operator-like or dotted names cannot be smuggled into the database */
    json_t *err = create_fails("{\"title\": \"t\", \"extra\": {\"x\": {\"$where\": \"1\"}}}");
    ck_assert_str_eq(json_get_string(err, "name"), "InvalidRequest");
    ck_assert_ptr_nonnull(strstr(json_get_string(err, "message"), "$where"));
    json_free(err);
    err = create_fails("{\"title\": \"t\", \"extra\": {\"a.b\": 1}}");
    ck_assert_str_eq(json_get_string(err, "name"), "InvalidRequest");
    json_free(err);
}
END_TEST

/* ------------------------------------------------------------------------
 * Defaults and validators
 * ------------------------------------------------------------------------ */
START_TEST(test_defaults_including_now)
{
    /* The same clock as the default's: time() reads a coarser one that
     * can still be in the previous second when CLOCK_REALTIME is not. */
    int64_t before = realtime_ms();
    bson_t *d = create_ok("{\"title\": \"t\"}");
    int64_t after = realtime_ms();
    ck_assert_str_eq(utf8_at(d, "state"), "draft");
    ck_assert_int_eq(int32_at(d, "count"), 0);
    int64_t created = date_at(d, "created");
    ck_assert_int_ge(created, before);
    ck_assert_int_le(created, after);
    ck_assert_int_eq(type_at(d, "ratio"), BSON_TYPE_EOD); /* no default: absent */
    bson_destroy(d);

    d = create_ok("{\"title\": \"t\", \"count\": 5, \"created\": \"2001-01-01\"}");
    ck_assert_int_eq(int32_at(d, "count"), 5); /* a sent value beats the default */
    ck_assert_int_eq(date_at(d, "created"), 978307200000LL);
    bson_destroy(d);
}
END_TEST

START_TEST(test_required)
{
    const char *cases[] = {"{}", "{\"title\": null}", "{\"title\": \"\"}"};
    for (size_t i = 0; i < 3; i++) {
        json_t *err = create_fails(cases[i]);
        assert_error_at(err, "title", "required", "Path `title` is required.");
        json_free(err);
    }
}
END_TEST

START_TEST(test_enum)
{
    json_t *err = create_fails("{\"title\": \"t\", \"state\": \"gone\"}");
    assert_error_at(err, "state", "enum", "`gone` is not a valid enum value for path `state`.");
    json_free(err);
    bson_t *d = create_ok("{\"title\": \"t\", \"state\": \"published\"}");
    bson_destroy(d);

    model_set_t *s = load("{\"b\": {\"fields\": {\"n\": {\"type\": \"Number\", "
                          "\"enum\": [1, \"2\"]}}}}");
    json_t *data = js("{\"n\": \"2\"}");
    d = model_prepare_create(model_set_find(s, "b"), data, &err);
    ck_assert_ptr_nonnull(d);
    bson_destroy(d);
    json_free(data);
    data = js("{\"n\": 3}");
    ck_assert_ptr_null(model_prepare_create(model_set_find(s, "b"), data, &err));
    assert_error_at(err, "n", "enum", NULL);
    json_free(err);
    json_free(data);
    model_set_free(s);
}
END_TEST

START_TEST(test_min_max)
{
    json_t *err = create_fails("{\"title\": \"t\", \"count\": -1}");
    assert_error_at(err, "count", "min",
                    "Path `count` (-1) is less than minimum allowed value (0).");
    json_free(err);
    err = create_fails("{\"title\": \"t\", \"count\": \"100.5\"}");
    assert_error_at(err, "count", "max",
                    "Path `count` (100.5) is more than maximum allowed value (100).");
    json_free(err);
    bson_t *d = create_ok("{\"title\": \"t\", \"count\": 100}");
    bson_destroy(d);

    err = create_fails("{\"title\": \"t\", \"due\": \"1999-12-31\"}");
    assert_error_at(err, "due", "min", NULL);
    json_free(err);
    err = create_fails("{\"title\": \"t\", \"due\": \"2100-01-02\"}");
    assert_error_at(err, "due", "max", NULL);
    json_free(err);
}
END_TEST

START_TEST(test_minlength_maxlength)
{
    json_t *err = create_fails("{\"title\": \"t\", \"slug\": \"ab\"}");
    assert_error_at(err, "slug", "minlength",
                    "Path `slug` (`ab`) is shorter than the minimum allowed length (3).");
    json_free(err);
    err = create_fails("{\"title\": \"123456789012345678901\"}");
    assert_error_at(err, "title", "maxlength", NULL);
    json_free(err);
    /* lengths count as JavaScript does: "é" is 1, an emoji is 2 */
    bson_t *d = create_ok("{\"title\": \"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                          "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                          "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}");
    bson_destroy(d);
    d = create_ok("{\"title\": \"123456789012345678\xf0\x9f\x98\x80\"}"); /* 20 */
    bson_destroy(d);
    err = create_fails("{\"title\": \"1234567890123456789\xf0\x9f\x98\x80\"}"); /* 21 */
    assert_error_at(err, "title", "maxlength", NULL);
    json_free(err);
}
END_TEST

START_TEST(test_every_failing_path_listed)
{
    json_t *err = create_fails("{\"count\": 500, \"done\": \"x\", \"state\": \"no\", "
                               "\"items\": [{}], \"scores\": [99]}");
    ck_assert_str_eq(json_get_string(err, "name"), "ValidationError");
    assert_error_at(err, "title", "required", NULL);
    assert_error_at(err, "count", "max", NULL);
    assert_error_at(err, "done", "Boolean", NULL);
    assert_error_at(err, "state", "enum", NULL);
    assert_error_at(err, "items.0.name", "required", NULL);
    assert_error_at(err, "scores.0", "max", NULL);
    ck_assert_uint_eq(error_count(err), 6);
    json_free(err);
}
END_TEST

START_TEST(test_null_allowed_when_not_required)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"count\": null, \"slug\": null, \"due\": null, "
                          "\"state\": null, \"tags\": null}");
    ck_assert_int_eq(type_at(d, "count"), BSON_TYPE_NULL);
    ck_assert_int_eq(type_at(d, "state"), BSON_TYPE_NULL);
    ck_assert_int_eq(type_at(d, "tags"), BSON_TYPE_NULL);
    bson_destroy(d);
}
END_TEST

START_TEST(test_unknown_fields_dropped)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"admin\": true, \"__v\": 9, \"id\": \"x\"}");
    ck_assert_int_eq(type_at(d, "admin"), BSON_TYPE_EOD);
    ck_assert_int_eq(type_at(d, "id"), BSON_TYPE_EOD);
    ck_assert_int_eq(int32_at(d, "__v"), 0);
    bson_destroy(d);
}
END_TEST

START_TEST(test_create_makes_id_and_refuses_client_id)
{
    bson_t *d = create_ok("{\"title\": \"t\"}");
    bson_iter_t it;
    ck_assert(bson_iter_init(&it, d) && bson_iter_next(&it));
    ck_assert_str_eq(bson_iter_key(&it), "_id"); /* first, as MongoDB expects */
    ck_assert_int_eq(bson_iter_type(&it), BSON_TYPE_OID);
    bson_destroy(d);

    json_t *err = create_fails("{\"title\": \"t\", \"_id\": \"5f1d7c2e9b1e8a3d4c5b6a79\"}");
    ck_assert_str_eq(json_get_string(err, "name"), "InvalidRequest");
    ck_assert_ptr_nonnull(strstr(json_get_string(err, "message"), "_id"));
    json_free(err);
    err = create_fails("[1]");
    ck_assert_str_eq(json_get_string(err, "name"), "InvalidRequest");
    json_free(err);
}
END_TEST

START_TEST(test_update_merges_over_stored_document)
{
    bson_t *cur = create_ok("{\"title\": \"old\", \"count\": 3, \"extra\": {\"k\": 1}, "
                            "\"meta\": {\"author\": \"ann\"}}");
    BSON_APPEND_UTF8(cur, "legacy", "kept"); /* written by some other program */
    bson_iter_t it = iter_at(cur, "_id");
    bson_oid_t id;
    bson_oid_copy(bson_iter_oid(&it), &id);

    json_t *data = js("{\"_id\": \"000000000000000000000000\", \"__v\": 7, \"title\": \"new\", "
                      "\"admin\": 1, \"done\": \"yes\"}"),
           *err = NULL;
    bson_t *next = model_prepare_update(blog, cur, data, &err);
    ck_assert_ptr_nonnull(next);
    it = iter_at(next, "_id");
    ck_assert(bson_oid_equal(bson_iter_oid(&it), &id)); /* _id in data ignored */
    ck_assert_str_eq(utf8_at(next, "title"), "new");
    ck_assert_int_eq(int32_at(next, "count"), 3); /* not sent: kept */
    ck_assert_str_eq(utf8_at(next, "meta.author"), "ann");
    ck_assert_int_eq(int32_at(next, "extra.k"), 1);
    ck_assert_int_eq(type_at(next, "done"), BSON_TYPE_BOOL);
    ck_assert_int_eq(type_at(next, "created"), BSON_TYPE_DATE_TIME);
    ck_assert_int_eq(type_at(next, "admin"), BSON_TYPE_EOD);
    ck_assert_str_eq(utf8_at(next, "legacy"), "kept");
    ck_assert_int_eq(int32_at(next, "__v"), 0); /* as stored; the store increments */
    bson_destroy(next);
    json_free(data);

    /* the result is validated as a whole */
    data = js("{\"title\": null, \"count\": 1000}");
    ck_assert_ptr_null(model_prepare_update(blog, cur, data, &err));
    assert_error_at(err, "title", "required", NULL);
    assert_error_at(err, "count", "max", NULL);
    json_free(err);
    json_free(data);
    bson_destroy(cur);
}
END_TEST

START_TEST(test_cast_id)
{
    bson_oid_t oid;
    json_t *err = NULL, *id = js("\"5f1d7c2e9b1e8a3d4c5b6a79\"");
    char hex[25];
    ck_assert_int_eq(model_cast_id(id, &oid, &err), 0);
    bson_oid_to_string(&oid, hex);
    ck_assert_str_eq(hex, "5f1d7c2e9b1e8a3d4c5b6a79");
    json_free(id);
    id = js("{\"$oid\": \"5f1d7c2e9b1e8a3d4c5b6a79\"}");
    ck_assert_int_eq(model_cast_id(id, &oid, &err), 0);
    json_free(id);
    id = js("\"nope\"");
    ck_assert_int_eq(model_cast_id(id, &oid, &err), -1);
    ck_assert_str_eq(json_get_string(err, "name"), "InvalidRequest");
    json_free(err);
    json_free(id);
}
END_TEST

int main(void)
{
    const TTest *tests[] = {
        test_nested_objects_are_subdocuments,
        test_document_arrays,
        test_mixed_kept_as_sent,
        test_defaults_including_now,
        test_required,
        test_enum,
        test_min_max,
        test_minlength_maxlength,
        test_every_failing_path_listed,
        test_null_allowed_when_not_required,
        test_unknown_fields_dropped,
        test_create_makes_id_and_refuses_client_id,
        test_update_merges_over_stored_document,
        test_cast_id,
    };

    return check_run_tests("model_validate", setup, teardown, tests,
                           sizeof(tests) / sizeof(tests[0]));
}
