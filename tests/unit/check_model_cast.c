/* check_model_cast: unit tests for JavaScript-compatible casts (src/model_cast.c): numbers,
 * booleans, dates, ObjectIds, strings and arrays are cast the way Mongoose casts them, and stored
 * documents come back as the JSON clients expect. */
#include "model_fixture.h"

/* ------------------------------------------------------------------------
 * Casting
 * ------------------------------------------------------------------------ */
START_TEST(test_cast_numbers)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"count\": \"42\", \"ratio\": \" 4.5 \"}");
    ck_assert_int_eq(int32_at(d, "count"), 42);
    ck_assert(double_at(d, "ratio") == 4.5);
    bson_destroy(d);

    d = create_ok("{\"title\": \"t\", \"count\": 7.0, \"ratio\": 3000000000}");
    ck_assert_int_eq(int32_at(d, "count"), 7); /* integral values within int32 as int32 */
    ck_assert(double_at(d, "ratio") == 3e9);   /* larger ones as double, like the Node driver */
    bson_destroy(d);

    d = create_ok("{\"title\": \"t\", \"ratio\": true, \"count\": \"1e1\"}");
    ck_assert_int_eq(int32_at(d, "ratio"), 1);
    ck_assert_int_eq(int32_at(d, "count"), 10);
    bson_destroy(d);

    d = create_ok("{\"title\": \"t\", \"ratio\": \"\"}"); /* "" is null, as in Mongoose */
    ck_assert_int_eq(type_at(d, "ratio"), BSON_TYPE_NULL);
    bson_destroy(d);

    json_t *err = create_fails("{\"title\": \"t\", \"ratio\": \"abc\"}");
    ck_assert_str_eq(json_get_string(err, "name"), "ValidationError");
    ck_assert_str_eq(json_get_string(err, "message"), "blog validation failed");
    assert_error_at(err, "ratio", "Number",
                    "Cast to Number failed for value \"abc\" at path \"ratio\"");
    json_free(err);
    err = create_fails("{\"title\": \"t\", \"ratio\": [1]}");
    assert_error_at(err, "ratio", "Number", NULL);
    json_free(err);
}
END_TEST

START_TEST(test_cast_booleans)
{
    const char *yes[] = {"true", "\"true\"", "1", "\"1\"", "\"yes\""};
    const char *no[] = {"false", "\"false\"", "0", "\"0\"", "\"no\""};
    char data[128];
    for (size_t i = 0; i < 5; i++) {
        for (int want = 0; want < 2; want++) {
            snprintf(data, sizeof data, "{\"title\": \"t\", \"done\": %s}", want ? yes[i] : no[i]);
            bson_t *d = create_ok(data);
            ck_assert_int_eq(type_at(d, "done"), BSON_TYPE_BOOL);
            bson_iter_t it = iter_at(d, "done");
            ck_assert_int_eq(bson_iter_bool(&it), want);
            bson_destroy(d);
        }
    }
    json_t *err = create_fails("{\"title\": \"t\", \"done\": \"maybe\"}");
    assert_error_at(err, "done", "Boolean",
                    "Cast to Boolean failed for value \"maybe\" at path \"done\"");
    json_free(err);
    err = create_fails("{\"title\": \"t\", \"done\": 2}");
    assert_error_at(err, "done", "Boolean", NULL);
    json_free(err);
}
END_TEST

START_TEST(test_cast_dates)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"due\": \"2020-05-17T10:20:30.123Z\"}");
    ck_assert_int_eq(date_at(d, "due"), 1589710830123LL);
    bson_destroy(d);
    d = create_ok("{\"title\": \"t\", \"due\": 1589710830123}"); /* epoch milliseconds */
    ck_assert_int_eq(date_at(d, "due"), 1589710830123LL);
    bson_destroy(d);
    d = create_ok("{\"title\": \"t\", \"due\": \"1589710830123\"}"); /* as a string too */
    ck_assert_int_eq(date_at(d, "due"), 1589710830123LL);
    bson_destroy(d);
    d = create_ok("{\"title\": \"t\", \"due\": \"2020-05-17T12:20:30.123+02:00\"}");
    ck_assert_int_eq(date_at(d, "due"), 1589710830123LL);
    bson_destroy(d);
    d = create_ok("{\"title\": \"t\", \"due\": \"2020-05-17\"}"); /* date only: UTC midnight */
    ck_assert_int_eq(date_at(d, "due"), 1589673600000LL);
    bson_destroy(d);
    d = create_ok("{\"title\": \"t\", \"due\": \"2020\"}"); /* a year, not 2020 ms */
    ck_assert_int_eq(date_at(d, "due"), 1577836800000LL);
    bson_destroy(d);

    const char *bad[] = {"\"yesterday\"", "\"2020-13-01\"", "\"2021-02-29\"", "true", "{}"};
    for (size_t i = 0; i < 5; i++) {
        char data[128];
        snprintf(data, sizeof data, "{\"title\": \"t\", \"due\": %s}", bad[i]);
        json_t *err = create_fails(data);
        assert_error_at(err, "due", "date", NULL);
        json_free(err);
    }
}
END_TEST

START_TEST(test_cast_objectid)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"owner\": \"5f1d7c2e9b1e8a3d4c5b6a79\"}");
    ck_assert_int_eq(type_at(d, "owner"), BSON_TYPE_OID);
    bson_iter_t it = iter_at(d, "owner");
    char hex[25];
    bson_oid_to_string(bson_iter_oid(&it), hex);
    ck_assert_str_eq(hex, "5f1d7c2e9b1e8a3d4c5b6a79");
    bson_destroy(d);
    const char *bad[] = {"\"xyz\"", "\"5f1d7c2e9b1e8a3d4c5b6a7\"", "\"5f1d7c2e9b1e8a3d4c5b6a7g\"",
                         "12"};
    for (size_t i = 0; i < 4; i++) {
        char data[128];
        snprintf(data, sizeof data, "{\"title\": \"t\", \"owner\": %s}", bad[i]);
        json_t *err = create_fails(data);
        assert_error_at(err, "owner", "ObjectId", NULL);
        json_free(err);
    }
}
END_TEST

START_TEST(test_cast_strings)
{
    bson_t *d = create_ok("{\"title\": 5}");
    ck_assert_str_eq(utf8_at(d, "title"), "5");
    bson_destroy(d);
    d = create_ok("{\"title\": 4.5e0}");
    ck_assert_str_eq(utf8_at(d, "title"), "4.5");
    bson_destroy(d);
    d = create_ok("{\"title\": true, \"tags\": [1e21, 0.1, false]}");
    ck_assert_str_eq(utf8_at(d, "title"), "true");
    ck_assert_str_eq(utf8_at(d, "tags.0"), "1e+21"); /* as JavaScript's String(n) */
    ck_assert_str_eq(utf8_at(d, "tags.1"), "0.1");
    ck_assert_str_eq(utf8_at(d, "tags.2"), "false");
    bson_destroy(d);
    json_t *err = create_fails("{\"title\": {\"a\": 1}}");
    assert_error_at(err, "title", "string", NULL);
    json_free(err);
}
END_TEST

START_TEST(test_cast_arrays)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"tags\": \"solo\", \"scores\": [1, \"2\", 2.5]}");
    ck_assert_int_eq(type_at(d, "tags"), BSON_TYPE_ARRAY);
    ck_assert_str_eq(utf8_at(d, "tags.0"), "solo"); /* a single value is wrapped */
    ck_assert_int_eq(type_at(d, "tags.1"), BSON_TYPE_EOD);
    ck_assert_int_eq(int32_at(d, "scores.1"), 2);
    ck_assert(double_at(d, "scores.2") == 2.5);
    bson_destroy(d);

    d = create_ok("{\"title\": \"t\"}"); /* arrays start out empty */
    ck_assert_int_eq(type_at(d, "tags"), BSON_TYPE_ARRAY);
    ck_assert_int_eq(type_at(d, "tags.0"), BSON_TYPE_EOD);
    bson_destroy(d);

    json_t *err = create_fails("{\"title\": \"t\", \"scores\": [1, \"x\", 11]}");
    assert_error_at(err, "scores.1", "[Number]",
                    "Cast to [Number] failed for value \"x\" at path \"scores.1\"");
    assert_error_at(err, "scores.2", "max", NULL); /* element validators, per element */
    json_free(err);
}
END_TEST

START_TEST(test_to_json)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"due\": \"2020-05-17T10:20:30.123Z\", "
                          "\"owner\": \"5f1d7c2e9b1e8a3d4c5b6a79\", \"ratio\": 0.5, "
                          "\"meta\": {\"author\": \"a\"}}");
    json_t *j = model_to_json(d);
    ck_assert_ptr_nonnull(j);
    const json_t *id = json_object_get(j, "_id");
    ck_assert_int_eq(id->type, JSON_STRING);
    ck_assert_uint_eq(id->u.str.len, 24);
    ck_assert_str_eq(json_get_string(j, "due"), "2020-05-17T10:20:30.123Z");
    ck_assert_str_eq(json_get_string(j, "owner"), "5f1d7c2e9b1e8a3d4c5b6a79");
    ck_assert_str_eq(json_get_string(json_object_get(j, "meta"), "author"), "a");
    ck_assert(json_object_get(j, "ratio")->u.num.d == 0.5);
    ck_assert_int_eq(json_object_get(j, "__v")->u.num.i, 0);
    ck_assert_int_eq(json_object_get(j, "tags")->type, JSON_ARRAY);
    json_free(j);
    bson_destroy(d);

    bson_t *old = BCON_NEW("d", BCON_DATE_TIME(-62198755200000LL), "big",
                           BCON_INT64(INT64_C(9007199254740993)));
    j = model_to_json(old);
    ck_assert_str_eq(json_get_string(j, "d"), "-000001-01-01T00:00:00.000Z");
    ck_assert_int_eq(json_object_get(j, "big")->u.num.i, INT64_C(9007199254740993));
    json_free(j);
    bson_destroy(old);
}
END_TEST

int main(void)
{
    const TTest *tests[] = {
        test_cast_numbers, test_cast_booleans, test_cast_dates, test_cast_objectid,
        test_cast_strings, test_cast_arrays,   test_to_json,
    };

    return check_run_tests("model_cast", setup, teardown, tests, sizeof(tests) / sizeof(tests[0]));
}
