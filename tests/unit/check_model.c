/* check_model: unit tests for the models file and the model set (src/model.c): a bad file is
 * refused with the model and field named, indexes come from index/unique, and collections are named
 * as Mongoose names them. */
#include "model_fixture.h"

START_TEST(test_load_documented_example)
{
    model_set_t *s = load("{\"blog\": {\"collection\": \"blogs\", \"fields\": {"
                          "\"title\": {\"type\": \"String\", \"required\": true, "
                          "\"maxlength\": 200, \"index\": true},"
                          "\"count\": {\"type\": \"Number\", \"min\": 0, \"default\": 0},"
                          "\"done\": \"Boolean\", \"tags\": [\"String\"],"
                          "\"created\": {\"type\": \"Date\", \"default\": \"now\"}}}}");
    ck_assert_uint_eq(model_set_count(s), 1);
    const model_t *m = model_set_at(s, 0);
    ck_assert_str_eq(model_name(m), "blog");
    ck_assert_str_eq(model_collection(m), "blogs");
    ck_assert_int_eq(model_versioned(m), 0);
    ck_assert_ptr_null(model_set_find(s, "other"));
    ck_assert_ptr_null(model_set_at(s, 1));
    model_set_free(s);
}
END_TEST

START_TEST(test_load_collection_versioned_and_type_case)
{
    ck_assert_str_eq(model_collection(model_set_find(set, "note")), "my_notes");
    ck_assert_str_eq(model_collection(blog), "blogs");
    ck_assert_str_eq(model_collection(model_set_find(set, "person")), "people");
    ck_assert_int_eq(model_versioned(model_set_find(set, "person")), 1);
    ck_assert_int_eq(model_versioned(blog), 0);
}
END_TEST

START_TEST(test_load_unknown_type_names_model_and_field)
{
    load_fails("{\"blog\": {\"fields\": {\"title\": \"Text\"}}}", "blog", "title", "Text", NULL);
    load_fails("{\"blog\": {\"fields\": {\"meta\": {\"when\": {\"type\": \"Datetime\"}}}}}", "blog",
               "meta.when", "Datetime", NULL);
    load_fails("{\"blog\": {\"fields\": {\"tags\": [\"Strin\"]}}}", "blog", "tags", "Strin", NULL);
    load_fails("{\"blog\": {\"fields\": {\"n\": 5}}}", "blog", "\"n\"", NULL);
}
END_TEST

START_TEST(test_load_unknown_option)
{
    load_fails("{\"blog\": {\"fields\": {\"title\": {\"type\": \"String\", \"maxlen\": 3}}}}",
               "blog", "title", "unknown option", "maxlen", NULL);
    load_fails("{\"blog\": {\"colection\": \"x\", \"fields\": {}}}", "blog", "colection", NULL);
}
END_TEST

START_TEST(test_load_option_on_wrong_type)
{
    load_fails("{\"b\": {\"fields\": {\"title\": {\"type\": \"String\", \"min\": 1}}}}", "\"b\"",
               "title", "min", "String", NULL);
    load_fails("{\"b\": {\"fields\": {\"n\": {\"type\": \"Number\", \"maxlength\": 1}}}}", "\"b\"",
               "\"n\"", "maxlength", "Number", NULL);
    load_fails("{\"b\": {\"fields\": {\"ok\": {\"type\": \"Boolean\", \"enum\": [true]}}}}",
               "\"ok\"", "enum", "Boolean", NULL);
    load_fails("{\"b\": {\"fields\": {\"d\": {\"type\": \"Date\", \"match\": \"x\"}}}}", "\"d\"",
               "match", "Date", NULL);
    /* validators of elements go on the element, not on the array */
    load_fails("{\"b\": {\"fields\": {\"t\": {\"type\": [\"String\"], \"maxlength\": 3}}}}",
               "\"t\"", "maxlength", "array", NULL);
    model_set_free(load("{\"b\": {\"fields\": {\"t\": {\"type\": [{\"type\": \"String\", "
                        "\"maxlength\": 3}], \"required\": true}}}}"));
}
END_TEST

START_TEST(test_load_bad_option_values)
{
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"match\": \"a(b\"}}}}",
               "\"s\"", "regular expression", NULL);
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"match\": \"(?=a)\"}}}}",
               "\"s\"", "regular expression", NULL);
    load_fails("{\"b\": {\"fields\": {\"n\": {\"type\": \"Number\", \"enum\": [1, \"two\"]}}}}",
               "\"n\"", "enum", "two", NULL);
    load_fails("{\"b\": {\"fields\": {\"n\": {\"type\": \"Number\", \"default\": \"ten\"}}}}",
               "\"n\"", "default", "ten", NULL);
    load_fails("{\"b\": {\"fields\": {\"d\": {\"type\": \"Date\", \"default\": \"soon\"}}}}",
               "\"d\"", "default", "soon", NULL);
    load_fails("{\"b\": {\"fields\": {\"t\": {\"type\": [\"Number\"], \"default\": [\"x\"]}}}}",
               "\"t\"", "default", NULL);
    load_fails("{\"b\": {\"fields\": {\"n\": {\"type\": \"Number\", \"min\": 5, \"max\": 1}}}}",
               "\"n\"", "min", NULL);
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"minlength\": -1}}}}", "\"s\"",
               "minlength", NULL);
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"required\": \"yes\"}}}}",
               "\"s\"", "required", NULL);
}
END_TEST

START_TEST(test_load_refuses_bad_names_and_shapes)
{
    load_fails("{\"b\": {\"fields\": {\"_id\": \"String\"}}}", "\"b\"", "_id", NULL);
    load_fails("{\"b\": {\"fields\": {\"__v\": \"Number\"}}}", "\"b\"", "__v", NULL);
    load_fails("{\"b\": {\"fields\": {\"a.b\": \"Number\"}}}", "\"b\"", "a.b", NULL);
    load_fails("{\"b\": {\"fields\": {\"$where\": \"Number\"}}}", "\"b\"", "$where", NULL);
    load_fails("{\"b\": {}}", "\"b\"", "fields", NULL);
    load_fails("{\"b\": {\"fields\": {\"t\": [\"String\", \"Number\"]}}}", "\"t\"", "one", NULL);
    load_fails("{\"b\": {\"collection\": \"system.users\", \"fields\": {}}}", "\"b\"", "collection",
               NULL);
    load_fails("[1]", "models", NULL);
    load_fails("{\"b\": ", "models", NULL);
}
END_TEST

START_TEST(test_load_nested_field_named_type)
{
    /* "type" whose value is itself a spec object is a field called type */
    model_set_t *s = load("{\"b\": {\"fields\": {\"asset\": {\"type\": {\"type\": \"String\"},"
                          "\"size\": \"Number\"}}}}");
    const model_t *m = model_set_find(s, "b");
    json_t *d = js("{\"asset\": {\"type\": \"image\", \"size\": \"12\"}}"), *err = NULL;
    bson_t *doc = model_prepare_create(m, d, &err);
    ck_assert_ptr_nonnull(doc);
    ck_assert_str_eq(utf8_at(doc, "asset.type"), "image");
    ck_assert_int_eq(int32_at(doc, "asset.size"), 12);
    bson_destroy(doc);
    json_free(d);
    model_set_free(s);
}
END_TEST

START_TEST(test_load_file)
{
    char path[] = "/tmp/check_model_XXXXXX", err[256] = "";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *text = "{\"todo\": {\"fields\": {\"title\": \"String\"}}}";
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    model_set_t *s = model_set_load(path, err, sizeof err);
    ck_assert_msg(s != NULL, "%s", err);
    ck_assert_str_eq(model_collection(model_set_find(s, "todo")), "todos");
    model_set_free(s);
    unlink(path);
    ck_assert_ptr_null(model_set_load(path, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, path));
}
END_TEST

START_TEST(test_indexes_from_index_and_unique)
{
    model_set_t *s = load("{\"b\": {\"fields\": {\"a\": {\"type\": \"String\", \"index\": true},"
                          "\"m\": {\"k\": {\"type\": \"Number\", \"unique\": true}},"
                          "\"t\": [{\"type\": \"String\", \"index\": true}],"
                          "\"items\": [{\"sku\": {\"type\": \"String\", \"unique\": true}}],"
                          "\"plain\": \"String\"}}}");
    const model_t *m = model_set_find(s, "b");
    const char *path;
    int unique;
    ck_assert_uint_eq(model_index_count(m), 4);
    const char *want[] = {"a", "m.k", "t", "items.sku"};
    const int want_unique[] = {0, 1, 0, 1};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(model_index_at(m, i, &path, &unique), 0);
        ck_assert_str_eq(path, want[i]);
        ck_assert_int_eq(unique, want_unique[i]);
    }
    ck_assert_int_eq(model_index_at(m, 4, &path, &unique), -1);
    model_set_free(s);
}
END_TEST

/* ------------------------------------------------------------------------
 * Collection names
 * ------------------------------------------------------------------------ */
START_TEST(test_pluralize)
{
    /* Mongoose's own results; "status" is on its uncountable list */
    const char *cases[][2] = {
        {"blog", "blogs"},
        {"person", "people"},
        {"Todo", "todos"},
        {"category", "categories"},
        {"news", "news"},
        {"mouse", "mice"},
        {"alias", "aliases"},
        {"status", "status"},
        {"box", "boxes"},
        {"wolf", "wolves"},
        {"bus", "buses"},
        {"child", "children"},
        {"man", "men"},
        {"ox", "oxen"},
        {"datum", "data"},
        {"analysis", "analyses"},
        {"knife", "knives"},
        {"day", "days"},
        {"index", "indexes"},
        {"matrixcell", "matricescell"},
        {"quiz", "quizzes"},
        {"goose", "geese"},
        {"tomato", "tomatoes"},
        {"octopus", "octopi"},
        {"hive", "hives"},
        {"sheep", "sheep"},
        {"users", "users"},
        {"item2", "item2"},
        {"UserProfile", "userprofiles"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = model_pluralize(cases[i][0]);
        ck_assert_msg(strcmp(p, cases[i][1]) == 0, "%s -> %s, want %s", cases[i][0], p,
                      cases[i][1]);
        free(p);
    }
}
END_TEST

int main(void)
{
    const TTest *tests[] = {
        test_load_documented_example,
        test_load_collection_versioned_and_type_case,
        test_load_unknown_type_names_model_and_field,
        test_load_unknown_option,
        test_load_option_on_wrong_type,
        test_load_bad_option_values,
        test_load_refuses_bad_names_and_shapes,
        test_load_nested_field_named_type,
        test_load_file,
        test_indexes_from_index_and_unique,
        test_pluralize,
    };

    return check_run_tests("model", setup, teardown, tests, sizeof(tests) / sizeof(tests[0]));
}
