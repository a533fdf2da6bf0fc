/* check_model_query: unit tests for the query sanitizer (src/model_query.c), the security boundary:
 * client filters, projections and sorts pass only through the allowlist,
 * values are cast to each path's type, sizes and depths are capped. */
#include "model_fixture.h"

/* ------------------------------------------------------------------------
 * Filters
 * ------------------------------------------------------------------------ */
START_TEST(test_filter_refuses_operators)
{
    const char *ops[] = {"$where", "$expr", "$function", "$accumulator",
                         "$foo",   "$text", "$mod",      "$jsonSchema"};
    char q[128];
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        snprintf(q, sizeof q, "{\"%s\": \"1\"}", ops[i]);
        filter_refused(q, ops[i]);
        snprintf(q, sizeof q, "{\"count\": {\"%s\": 1}}", ops[i]);
        filter_refused(q, ops[i]);
        snprintf(q, sizeof q, "{\"$or\": [{\"title\": \"a\"}, {\"%s\": 1}]}", ops[i]);
        filter_refused(q, ops[i]);
        snprintf(q, sizeof q, "{\"extra.x\": {\"$not\": {\"%s\": 1}}}", ops[i]);
        filter_refused(q, ops[i]);
    }
    filter_refused("{\"$in\": [1]}", "$in"); /* allowed operators still need a path */
    filter_refused("{\"title\": {\"$and\": [{}]}}", "$and");
    filter_refused("{\"extra\": {\"deep\": {\"$where\": \"1\"}}}", "$where");
}
END_TEST

START_TEST(test_filter_refuses_unknown_paths)
{
    filter_refused("{\"password\": \"x\"}", "password");
    filter_refused("{\"meta.nope\": 1}", "meta.nope");
    filter_refused("{\"title.x\": 1}", "title.x");
    filter_refused("{\"__v\": 1}", "__v");
    filter_refused("{\"items.$\": 1}", "items.$");
    filter_refused("{\"meta\": {\"author\": \"a\", \"who\": 1}}", "who");
    filter_refused("{\"count\": {\"$gt\": 1, \"x\": 2}}", "mix");
}
END_TEST

START_TEST(test_filter_casts_values)
{
    filter_is("{\"_id\": \"5f1d7c2e9b1e8a3d4c5b6a79\"}",
              "{ \"_id\" : { \"$oid\" : \"5f1d7c2e9b1e8a3d4c5b6a79\" } }");
    filter_is("{\"count\": \"42\"}", "{ \"count\" : 42 }");
    filter_is("{\"count\": {\"$gte\": \"1.5\", \"$lt\": 9}}",
              "{ \"count\" : { \"$gte\" : 1.5, \"$lt\" : 9 } }");
    filter_is("{\"done\": \"yes\"}", "{ \"done\" : true }");
    filter_is("{\"title\": 5}", "{ \"title\" : \"5\" }");
    filter_is("{\"due\": {\"$lt\": \"2020-01-01\"}}",
              "{ \"due\" : { \"$lt\" : { \"$date\" : \"2020-01-01T00:00:00Z\" } } }");
    filter_is("{\"count\": {\"$in\": [\"1\", 2]}, \"tags\": \"x\"}",
              "{ \"count\" : { \"$in\" : [ 1, 2 ] }, \"tags\" : \"x\" }");
    filter_is("{\"tags\": {\"$all\": [\"a\", 1]}}",
              "{ \"tags\" : { \"$all\" : [ \"a\", \"1\" ] } }");
    filter_is("{\"meta.votes\": \"3\", \"items.qty\": \"2\", \"items.0.name\": \"n\"}",
              "{ \"meta.votes\" : 3, \"items.qty\" : 2, \"items.0.name\" : \"n\" }");
    filter_is("{\"items._id\": \"5f1d7c2e9b1e8a3d4c5b6a79\"}",
              "{ \"items._id\" : { \"$oid\" : \"5f1d7c2e9b1e8a3d4c5b6a79\" } }");
    filter_is("{\"extra.any.thing\": {\"$gt\": 1}}", "{ \"extra.any.thing\" : { \"$gt\" : 1 } }");
    filter_is("{\"count\": null}", "{ \"count\" : null }");
    filter_is("null", "{ }");
    filter_refused("{\"count\": \"abc\"}", "count");
    filter_refused("{\"_id\": \"xyz\"}", "_id");
    filter_refused("{\"count\": {\"$in\": 5}}", "$in");
}
END_TEST

START_TEST(test_filter_logical_and_element_operators)
{
    filter_is("{\"$or\": [{\"count\": \"1\"}, {\"title\": \"a\"}], \"done\": 0}",
              "{ \"$or\" : [ { \"count\" : 1 }, { \"title\" : \"a\" } ], \"done\" : false }");
    filter_refused("{\"$or\": []}", "$or");
    filter_refused("{\"$and\": {\"title\": \"a\"}}", "$and");
    filter_refused("{\"$nor\": [5]}", "$nor");
    filter_is("{\"slug\": {\"$exists\": true}, \"tags\": {\"$size\": 2}}",
              "{ \"slug\" : { \"$exists\" : true }, \"tags\" : { \"$size\" : 2 } }");
    filter_refused("{\"slug\": {\"$exists\": \"yes\"}}", "$exists");
    filter_refused("{\"tags\": {\"$size\": -1}}", "$size");
    filter_refused("{\"tags\": {\"$size\": 1.5}}", "$size");
    filter_is("{\"count\": {\"$not\": {\"$gt\": \"5\"}}}",
              "{ \"count\" : { \"$not\" : { \"$gt\" : 5 } } }");
    filter_refused("{\"count\": {\"$not\": 5}}", "$not");
    filter_is(
        "{\"items\": {\"$elemMatch\": {\"name\": \"a\", \"qty\": {\"$gt\": \"1\"}}}}",
        "{ \"items\" : { \"$elemMatch\" : { \"name\" : \"a\", \"qty\" : { \"$gt\" : 1 } } } }");
    filter_is("{\"scores\": {\"$elemMatch\": {\"$gte\": \"2\", \"$lt\": 5}}}",
              "{ \"scores\" : { \"$elemMatch\" : { \"$gte\" : 2, \"$lt\" : 5 } } }");
    filter_refused("{\"items\": {\"$elemMatch\": {\"secret\": 1}}}", "secret");
    filter_refused("{\"title\": {\"$elemMatch\": {\"$eq\": \"a\"}}}", "$elemMatch");
}
END_TEST

START_TEST(test_filter_depth_and_size_caps)
{
    /* depth 6 allowed: top object, $or array, object, $or array, object, condition */
    filter_is("{\"$or\": [{\"$or\": [{\"count\": {\"$gt\": 1}}]}]}",
              "{ \"$or\" : [ { \"$or\" : [ { \"count\" : { \"$gt\" : 1 } } ] } ] }");
    filter_refused("{\"$or\": [{\"$or\": [{\"count\": {\"$in\": [1]}}]}]}", "deeper");
    /* 40 terms allowed: "count", "$in" and 38 elements */
    char q[1024];
    size_t o = (size_t)snprintf(q, sizeof q, "{\"count\": {\"$in\": [");
    for (int i = 0; i < 38; i++)
        o += (size_t)snprintf(q + o, sizeof q - o, "%s%d", i ? "," : "", i);
    snprintf(q + o, sizeof q - o, "]}}");
    json_t *err;
    char *ok = filter(q, &err);
    ck_assert_ptr_nonnull(ok);
    bson_free(ok);
    snprintf(q + o, sizeof q - o, ",38]}}");
    filter_refused(q, "terms");
}
END_TEST

/* ------------------------------------------------------------------------
 * Projections and sorting
 * ------------------------------------------------------------------------ */
START_TEST(test_fields_three_forms)
{
    fields_are("[\"title\", \"meta.author\"]", "{ \"title\" : 1, \"meta.author\" : 1 }");
    fields_are("\"title  count -_id\"", "{ \"title\" : 1, \"count\" : 1, \"_id\" : 0 }");
    fields_are("\"-slug -tags\"", "{ \"slug\" : 0, \"tags\" : 0 }");
    fields_are("{\"title\": 1, \"_id\": false, \"done\": true}",
               "{ \"title\" : 1, \"_id\" : 0, \"done\" : 1 }");
    fields_are("null", "{ }");
    fields_are("\"\"", "{ }");
}
END_TEST

START_TEST(test_fields_refused)
{
    fields_refused("{\"tags\": {\"$slice\": 1}}", "$slice");
    fields_refused("{\"items\": {\"$elemMatch\": {\"qty\": 1}}}", "$elemMatch");
    fields_refused("{\"title\": 2}", "0 or 1");
    fields_refused("{\"title\": \"yes\"}", "0 or 1");
    fields_refused("{\"$where\": 1}", "$where");
    fields_refused("{\"title\": 1, \"slug\": 0}", "mix");
    fields_refused("\"title -slug\"", "mix");
    fields_refused("[\"password\"]", "password");
    fields_refused("{\"items.$\": 1}", "items.$");
    fields_refused("[1]", "path");
    fields_refused("5", "fields");
}
END_TEST

START_TEST(test_sort_forms)
{
    sort_is("{\"sort\": [[\"count\", -1], [\"title\", 1]]}", "{ \"count\" : -1, \"title\" : 1 }");
    sort_is("{\"sort\": {\"count\": -1, \"meta.votes\": 1}}",
            "{ \"count\" : -1, \"meta.votes\" : 1 }");
    sort_is("{\"sort\": \"-count title\"}", "{ \"count\" : -1, \"title\" : 1 }");
    sort_is("{\"sort\": {\"title\": \"asc\", \"count\": \"descending\", \"_id\": \"desc\", "
            "\"due\": \"ascending\"}}",
            "{ \"title\" : 1, \"count\" : -1, \"_id\" : -1, \"due\" : 1 }");
    sort_is("null", "{ }");
    sort_refused("{\"sort\": {\"count\": 2}}", "count");
    sort_refused("{\"sort\": {\"count\": {\"$meta\": \"textScore\"}}}", "count");
    sort_refused("{\"sort\": [[\"count\", 0]]}", "count");
    sort_refused("{\"sort\": \"-secret\"}", "secret");
    sort_refused("{\"sort\": [\"count\"]}", "pairs");
    sort_refused("{\"order\": \"count\"}", "order");
}
END_TEST

START_TEST(test_limit_and_skip)
{
    model_sorting_t s;
    json_t *err = NULL;
    ck_assert_int_eq(sorting("{\"limit\": 10, \"skip\": 5}", &s, &err), 0);
    ck_assert_int_eq(s.limit, 10);
    ck_assert_int_eq(s.skip, 5);
    model_sorting_clear(&s);
    ck_assert_int_eq(sorting("{\"limit\": 100000}", &s, &err), 0);
    ck_assert_int_eq(s.limit, 100); /* capped at max_read_limit */
    model_sorting_clear(&s);
    ck_assert_int_eq(sorting("{\"limit\": 0}", &s, &err), 0);
    ck_assert_int_eq(s.limit, 100); /* 0 means the cap, not unlimited */
    model_sorting_clear(&s);
    ck_assert_int_eq(sorting("null", &s, &err), 0);
    ck_assert_int_eq(s.limit, 100);
    ck_assert_int_eq(s.skip, 0);
    ck_assert_ptr_nonnull(s.sort);
    model_sorting_clear(&s);
    sort_refused("{\"limit\": -1}", "limit");
    sort_refused("{\"limit\": 1.5}", "limit");
    sort_refused("{\"limit\": \"10\"}", "limit");
    sort_refused("{\"skip\": -3}", "skip");
    sort_refused("[1]", "sorting");
}
END_TEST

int main(void)
{
    const TTest *tests[] = {
        test_filter_refuses_operators,
        test_filter_refuses_unknown_paths,
        test_filter_casts_values,
        test_filter_logical_and_element_operators,
        test_filter_depth_and_size_caps,
        test_fields_three_forms,
        test_fields_refused,
        test_sort_forms,
        test_limit_and_skip,
    };

    return check_run_tests("model_query", setup, teardown, tests, sizeof(tests) / sizeof(tests[0]));
}
