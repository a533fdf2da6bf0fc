/* check_model: unit tests for the model module (src/model.h). They assert
 * what users rely on: a bad models file is refused with the model and field
 * named, documents are cast and validated the way Mongoose does (every
 * failing path listed), collections are named as Mongoose names them, and
 * client filters, projections and sorts pass only through the allowlist. */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "model.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static json_t *js(const char *text)
{
    char err[128] = "";
    json_t *v = json_parse(text, strlen(text), JSON_DEFAULT_MAX_DEPTH, err, sizeof err);
    ck_assert_msg(v != NULL, "bad test JSON '%s': %s", text, err);
    return v;
}

static model_set_t *load(const char *text)
{
    char err[256] = "";
    model_set_t *set = model_set_parse(text, strlen(text), err, sizeof err);
    ck_assert_msg(set != NULL, "models refused: %s", err);
    return set;
}

/* The file must be refused with one line containing every given word. */
static void load_fails(const char *text, ...)
{
    char err[256] = "";
    model_set_t *set = model_set_parse(text, strlen(text), err, sizeof err);
    ck_assert_msg(set == NULL, "models accepted: %s", text);
    ck_assert_msg(strchr(err, '\n') == NULL && err[0] != '\0', "reason not one line: '%s'", err);
    va_list ap;
    va_start(ap, text);
    for (const char *w = va_arg(ap, const char *); w != NULL; w = va_arg(ap, const char *))
        ck_assert_msg(strstr(err, w) != NULL, "reason '%s' does not mention '%s'", err, w);
    va_end(ap);
}

static const char *const MODELS =
    "{\"blog\": {\"fields\": {"
    "  \"title\": {\"type\": \"String\", \"required\": true, \"maxlength\": 20, \"index\": true},"
    "  \"slug\": {\"type\": \"String\", \"minlength\": 3, \"match\": \"^[a-z\\\\d-]+$\","
    "            \"unique\": true},"
    "  \"state\": {\"type\": \"String\", \"enum\": [\"draft\", \"published\"],"
    "             \"default\": \"draft\"},"
    "  \"count\": {\"type\": \"Number\", \"min\": 0, \"max\": 100, \"default\": 0},"
    "  \"ratio\": \"Number\","
    "  \"done\": \"Boolean\","
    "  \"owner\": \"ObjectId\","
    "  \"created\": {\"type\": \"Date\", \"default\": \"now\"},"
    "  \"due\": {\"type\": \"Date\", \"min\": \"2000-01-01\", \"max\": \"2100-01-01\"},"
    "  \"tags\": [\"String\"],"
    "  \"scores\": [{\"type\": \"Number\", \"max\": 10}],"
    "  \"meta\": {\"author\": \"String\","
    "            \"votes\": {\"type\": \"Number\", \"default\": 1}},"
    "  \"items\": [{\"name\": {\"type\": \"String\", \"required\": true},"
    "              \"qty\": {\"type\": \"Number\", \"default\": 1}}],"
    "  \"extra\": \"Mixed\""
    "}},"
    " \"person\": {\"versioned\": true, \"fields\": {\"name\": \"String\"}},"
    " \"note\": {\"collection\": \"my_notes\", \"fields\": {\"text\": \"string\"}}}";

static model_set_t *set;
static const model_t *blog;

static void setup(void)
{
    set = load(MODELS);
    blog = model_set_find(set, "blog");
    ck_assert_ptr_nonnull(blog);
}

static void teardown(void)
{
    model_set_free(set);
    set = NULL;
}

/* A valid blog document with the fields given in extra merged in. */
static bson_t *create_ok(const char *data)
{
    json_t *d = js(data), *err = NULL;
    bson_t *doc = model_prepare_create(blog, d, &err);
    char *e = err ? json_dump(err, NULL) : NULL;
    ck_assert_msg(doc != NULL, "create of %s failed: %s", data, e ? e : "(no error)");
    free(e);
    json_free(d);
    return doc;
}

static json_t *create_fails(const char *data)
{
    json_t *d = js(data), *err = NULL;
    bson_t *doc = model_prepare_create(blog, d, &err);
    ck_assert_msg(doc == NULL, "create of %s succeeded", data);
    ck_assert_ptr_nonnull(err);
    json_free(d);
    return err;
}

static const json_t *err_at(const json_t *err, const char *path)
{
    const json_t *e = json_object_get(json_object_get(err, "errors"), path);
    char *dump = json_dump(err, NULL);
    ck_assert_msg(e != NULL, "no error at %s in %s", path, dump);
    free(dump);
    return e;
}

static void assert_error_at(const json_t *err, const char *path, const char *kind,
                            const char *message)
{
    const json_t *e = err_at(err, path);
    ck_assert_str_eq(json_get_string(e, "kind"), kind);
    ck_assert_str_eq(json_get_string(e, "path"), path);
    if (message != NULL)
        ck_assert_str_eq(json_get_string(e, "message"), message);
}

static size_t error_count(const json_t *err)
{
    const json_t *errors = json_object_get(err, "errors");
    return errors ? errors->u.obj.len : 0;
}

static bson_type_t type_at(const bson_t *doc, const char *path)
{
    bson_iter_t it, found;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &found))
        return BSON_TYPE_EOD;
    return bson_iter_type(&found);
}

static bson_iter_t iter_at(const bson_t *doc, const char *path)
{
    bson_iter_t it, found;
    ck_assert(bson_iter_init(&it, doc));
    ck_assert_msg(bson_iter_find_descendant(&it, path, &found), "no %s", path);
    return found;
}

static int32_t int32_at(const bson_t *doc, const char *path)
{
    ck_assert_int_eq(type_at(doc, path), BSON_TYPE_INT32);
    bson_iter_t it = iter_at(doc, path);
    return bson_iter_int32(&it);
}

static double double_at(const bson_t *doc, const char *path)
{
    ck_assert_int_eq(type_at(doc, path), BSON_TYPE_DOUBLE);
    bson_iter_t it = iter_at(doc, path);
    return bson_iter_double(&it);
}

static const char *utf8_at(const bson_t *doc, const char *path)
{
    ck_assert_int_eq(type_at(doc, path), BSON_TYPE_UTF8);
    bson_iter_t it = iter_at(doc, path);
    return bson_iter_utf8(&it, NULL);
}

static int64_t date_at(const bson_t *doc, const char *path)
{
    ck_assert_int_eq(type_at(doc, path), BSON_TYPE_DATE_TIME);
    bson_iter_t it = iter_at(doc, path);
    return bson_iter_date_time(&it);
}

/* Relaxed extended JSON of a sanitized filter, or NULL (error in *err). */
static char *filter(const char *query, json_t **err)
{
    json_t *q = js(query);
    model_limits_t lim = {.max_read_limit = 100, .max_query_depth = 6, .max_query_terms = 40,
                          .max_regex_length = 16};
    *err = NULL;
    bson_t *b = model_sanitize_filter(blog, q, &lim, err);
    json_free(q);
    if (b == NULL)
        return NULL;
    char *s = bson_as_relaxed_extended_json(b, NULL);
    bson_destroy(b);
    return s;
}

static void filter_is(const char *query, const char *want)
{
    json_t *err;
    char *got = filter(query, &err);
    char *e = err ? json_dump(err, NULL) : NULL;
    ck_assert_msg(got != NULL, "filter %s refused: %s", query, e ? e : "");
    ck_assert_str_eq(got, want);
    free(e);
    bson_free(got);
}

/* The filter is refused with InvalidRequest whose message contains word. */
static void filter_refused(const char *query, const char *word)
{
    json_t *err;
    char *got = filter(query, &err);
    ck_assert_msg(got == NULL, "filter %s accepted as %s", query, got ? got : "");
    ck_assert_str_eq(json_get_string(err, "name"), "InvalidRequest");
    const char *msg = json_get_string(err, "message");
    ck_assert_msg(strstr(msg, word) != NULL, "message '%s' does not name '%s'", msg, word);
    json_free(err);
}

static char *fields(const char *spec, json_t **err)
{
    json_t *f = js(spec);
    *err = NULL;
    bson_t *b = model_sanitize_fields(blog, f, err);
    json_free(f);
    if (b == NULL)
        return NULL;
    char *s = bson_as_relaxed_extended_json(b, NULL);
    bson_destroy(b);
    return s;
}

static void fields_are(const char *spec, const char *want)
{
    json_t *err;
    char *got = fields(spec, &err);
    ck_assert_msg(got != NULL, "fields %s refused: %s", spec,
                  err ? json_get_string(err, "message") : "");
    ck_assert_str_eq(got, want);
    bson_free(got);
}

static void fields_refused(const char *spec, const char *word)
{
    json_t *err;
    char *got = fields(spec, &err);
    ck_assert_msg(got == NULL, "fields %s accepted as %s", spec, got ? got : "");
    ck_assert_str_eq(json_get_string(err, "name"), "InvalidRequest");
    const char *msg = json_get_string(err, "message");
    ck_assert_msg(strstr(msg, word) != NULL, "message '%s' does not name '%s'", msg, word);
    json_free(err);
}

static int sorting(const char *spec, model_sorting_t *out, json_t **err)
{
    json_t *s = js(spec);
    model_limits_t lim = {.max_read_limit = 100};
    int rc = model_sanitize_sorting(blog, s, &lim, out, err);
    json_free(s);
    return rc;
}

static void sort_is(const char *spec, const char *want)
{
    model_sorting_t out;
    json_t *err = NULL;
    ck_assert_msg(sorting(spec, &out, &err) == 0, "sorting %s refused: %s", spec,
                  err ? json_get_string(err, "message") : "");
    char *got = bson_as_relaxed_extended_json(out.sort, NULL);
    ck_assert_str_eq(got, want);
    bson_free(got);
    model_sorting_clear(&out);
}

static void sort_refused(const char *spec, const char *word)
{
    model_sorting_t out;
    json_t *err = NULL;
    ck_assert_msg(sorting(spec, &out, &err) < 0, "sorting %s accepted", spec);
    ck_assert_ptr_null(out.sort);
    ck_assert_str_eq(json_get_string(err, "name"), "InvalidRequest");
    const char *msg = json_get_string(err, "message");
    ck_assert_msg(strstr(msg, word) != NULL, "message '%s' does not name '%s'", msg, word);
    json_free(err);
}

/* ------------------------------------------------------------------------
 * Loading the models file
 * ------------------------------------------------------------------------ */

START_TEST(test_load_architecture_example)
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
    load_fails("{\"blog\": {\"fields\": {\"meta\": {\"when\": {\"type\": \"Datetime\"}}}}}",
               "blog", "meta.when", "Datetime", NULL);
    load_fails("{\"blog\": {\"fields\": {\"tags\": [\"Strin\"]}}}", "blog", "tags", "Strin",
               NULL);
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
    load_fails("{\"b\": {\"fields\": {\"title\": {\"type\": \"String\", \"min\": 1}}}}",
               "\"b\"", "title", "min", "String", NULL);
    load_fails("{\"b\": {\"fields\": {\"n\": {\"type\": \"Number\", \"maxlength\": 1}}}}",
               "\"b\"", "\"n\"", "maxlength", "Number", NULL);
    load_fails("{\"b\": {\"fields\": {\"ok\": {\"type\": \"Boolean\", \"enum\": [true]}}}}",
               "\"ok\"", "enum", "Boolean", NULL);
    load_fails("{\"b\": {\"fields\": {\"d\": {\"type\": \"Date\", \"match\": \"x\"}}}}",
               "\"d\"", "match", "Date", NULL);
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
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"minlength\": -1}}}}",
               "\"s\"", "minlength", NULL);
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"required\": \"yes\"}}}}",
               "\"s\"", "required", NULL);
}
END_TEST

/* Stacked or nested repetitions make glibc's regcomp copy the repeated part
 * again and again: memory exponential in the pattern's length (a fuzzer
 * found a models file that took gigabytes). They are refused, while
 * ordinary bounded patterns still load. */
START_TEST(test_load_refuses_exploding_patterns)
{
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"match\": "
               "\"r++++++++++++++++++++++++++++++++++++++++(b\"}}}}",
               "\"s\"", "regular expression", "nothing to repeat", NULL);
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"match\": "
               "\"((a{99}){99}){99}\"}}}}",
               "\"s\"", "repetitions", NULL);
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"match\": "
               "\"((((((((((((a*)+)+)+)+)+)+)+)+)+)+)+)+\"}}}}",
               "\"s\"", "repetitions", NULL);
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"match\": "
               "\"r++*+++++++++++\"}}}}",
               "\"s\"", "nothing to repeat", NULL);
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"match\": "
               "\"a{2}*\"}}}}",
               "\"s\"", "nothing to repeat", NULL);
    load_fails("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"match\": "
               "\"(((((((((((((((((((((((((((((((((a)))))))))))))))))))))))))))))))))\"}}}}",
               "\"s\"", "regular expression", NULL);
    model_set_free(load("{\"b\": {\"fields\": {\"s\": {\"type\": \"String\", \"match\": "
                        "\"^[a-z0-9._%+-]+@[a-z0-9.-]+\\\\.[a-z]{2,}$\"}, "
                        "\"t\": {\"type\": \"String\", \"match\": \"^(\\\\d{3}-){2}\\\\d{4}$\"}, "
                        "\"u\": {\"type\": \"String\", "
                        "\"match\": \"^[[:alpha:]{]{1,200}x{,3}$\"}}}}"));
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
    load_fails("{\"b\": {\"collection\": \"system.users\", \"fields\": {}}}", "\"b\"",
               "collection", NULL);
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
    int64_t before = (int64_t)time(NULL) * 1000 - 1000;
    bson_t *d = create_ok("{\"title\": \"t\"}");
    int64_t after = (int64_t)time(NULL) * 1000 + 1000;
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

START_TEST(test_match)
{
    bson_t *d = create_ok("{\"title\": \"t\", \"slug\": \"hello-42\"}");
    bson_destroy(d);
    json_t *err = create_fails("{\"title\": \"t\", \"slug\": \"Hello World\"}");
    assert_error_at(err, "slug", "regexp", "Path `slug` is invalid (Hello World).");
    json_free(err);

    /* \d outside brackets, and the "i" flag */
    model_set_t *s = load("{\"b\": {\"fields\": {\"zip\": {\"type\": \"String\", "
                          "\"match\": \"^\\\\d{5}$\"}, \"code\": {\"type\": \"String\", "
                          "\"match\": [\"^ab$\", \"i\"]}}}}");
    const model_t *m = model_set_find(s, "b");
    json_t *data = js("{\"zip\": \"12345\", \"code\": \"AB\"}");
    d = model_prepare_create(m, data, &err);
    ck_assert_ptr_nonnull(d);
    bson_destroy(d);
    json_free(data);
    data = js("{\"zip\": \"1234d\", \"code\": \"abc\"}");
    ck_assert_ptr_null(model_prepare_create(m, data, &err));
    assert_error_at(err, "zip", "regexp", NULL);
    assert_error_at(err, "code", "regexp", NULL);
    json_free(err);
    json_free(data);
    model_set_free(s);

    /* A lazy quantifier is accepted (whether there is a match does not
     * depend on it), and a brace that starts no bound is a literal one. */
    s = load("{\"b\": {\"fields\": {\"lazy\": {\"type\": \"String\", \"match\": \"^a+?$\"}, "
             "\"brace\": {\"type\": \"String\", \"match\": \"^x{,2}$\"}}}}");
    m = model_set_find(s, "b");
    data = js("{\"lazy\": \"aaa\", \"brace\": \"x{,2}\"}");
    d = model_prepare_create(m, data, &err);
    ck_assert_ptr_nonnull(d);
    bson_destroy(d);
    json_free(data);
    data = js("{\"lazy\": \"ab\", \"brace\": \"xx\"}");
    ck_assert_ptr_null(model_prepare_create(m, data, &err));
    assert_error_at(err, "lazy", "regexp", NULL);
    assert_error_at(err, "brace", "regexp", NULL);
    json_free(err);
    json_free(data);
    model_set_free(s);
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

/* ------------------------------------------------------------------------
 * Collection names
 * ------------------------------------------------------------------------ */

START_TEST(test_pluralize)
{
    /* Mongoose's own results; "status" is on its uncountable list */
    const char *cases[][2] = {
        {"blog", "blogs"},         {"person", "people"},     {"Todo", "todos"},
        {"category", "categories"}, {"news", "news"},         {"mouse", "mice"},
        {"alias", "aliases"},      {"status", "status"},     {"box", "boxes"},
        {"wolf", "wolves"},        {"bus", "buses"},         {"child", "children"},
        {"man", "men"},            {"ox", "oxen"},           {"datum", "data"},
        {"analysis", "analyses"},  {"knife", "knives"},      {"day", "days"},
        {"index", "indexes"},      {"matrixcell", "matricescell"},
        {"quiz", "quizzes"},       {"goose", "geese"},       {"tomato", "tomatoes"},
        {"octopus", "octopi"},     {"hive", "hives"},        {"sheep", "sheep"},
        {"users", "users"},        {"item2", "item2"},       {"UserProfile", "userprofiles"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = model_pluralize(cases[i][0]);
        ck_assert_msg(strcmp(p, cases[i][1]) == 0, "%s -> %s, want %s", cases[i][0], p,
                      cases[i][1]);
        free(p);
    }
}
END_TEST

/* ------------------------------------------------------------------------
 * Filters
 * ------------------------------------------------------------------------ */

START_TEST(test_filter_refuses_operators)
{
    const char *ops[] = {"$where", "$expr", "$function", "$accumulator", "$foo", "$text", "$mod",
                         "$jsonSchema"};
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
    filter_is("{\"tags\": {\"$all\": [\"a\", 1]}}", "{ \"tags\" : { \"$all\" : [ \"a\", \"1\" ] } }");
    filter_is("{\"meta.votes\": \"3\", \"items.qty\": \"2\", \"items.0.name\": \"n\"}",
              "{ \"meta.votes\" : 3, \"items.qty\" : 2, \"items.0.name\" : \"n\" }");
    filter_is("{\"items._id\": \"5f1d7c2e9b1e8a3d4c5b6a79\"}",
              "{ \"items._id\" : { \"$oid\" : \"5f1d7c2e9b1e8a3d4c5b6a79\" } }");
    filter_is("{\"extra.any.thing\": {\"$gt\": 1}}",
              "{ \"extra.any.thing\" : { \"$gt\" : 1 } }");
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
    filter_is("{\"items\": {\"$elemMatch\": {\"name\": \"a\", \"qty\": {\"$gt\": \"1\"}}}}",
              "{ \"items\" : { \"$elemMatch\" : { \"name\" : \"a\", \"qty\" : { \"$gt\" : 1 } } } }");
    filter_is("{\"scores\": {\"$elemMatch\": {\"$gte\": \"2\", \"$lt\": 5}}}",
              "{ \"scores\" : { \"$elemMatch\" : { \"$gte\" : 2, \"$lt\" : 5 } } }");
    filter_refused("{\"items\": {\"$elemMatch\": {\"secret\": 1}}}", "secret");
    filter_refused("{\"title\": {\"$elemMatch\": {\"$eq\": \"a\"}}}", "$elemMatch");
}
END_TEST

START_TEST(test_filter_regex)
{
    filter_is("{\"title\": {\"$regex\": \"^ab\", \"$options\": \"i\"}}",
              "{ \"title\" : { \"$regex\" : \"^ab\", \"$options\" : \"i\" } }");
    filter_is("{\"tags\": {\"$regex\": \"x\"}}", "{ \"tags\" : { \"$regex\" : \"x\" } }");
    filter_refused("{\"title\": {\"$regex\": \"aaaaaaaaaaaaaaaaa\"}}", "16"); /* cap is 16 */
    filter_refused("{\"title\": {\"$regex\": \"a\", \"$options\": \"g\"}}", "$options");
    filter_refused("{\"title\": {\"$options\": \"i\"}}", "$options");
    filter_refused("{\"count\": {\"$regex\": \"1\"}}", "$regex");
    filter_refused("{\"title\": {\"$regex\": 5}}", "$regex");
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
    sort_is("{\"sort\": [[\"count\", -1], [\"title\", 1]]}",
            "{ \"count\" : -1, \"title\" : 1 }");
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
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_load_architecture_example);
    tcase_add_test(tc, test_load_collection_versioned_and_type_case);
    tcase_add_test(tc, test_load_unknown_type_names_model_and_field);
    tcase_add_test(tc, test_load_unknown_option);
    tcase_add_test(tc, test_load_option_on_wrong_type);
    tcase_add_test(tc, test_load_bad_option_values);
    tcase_add_test(tc, test_load_refuses_exploding_patterns);
    tcase_add_test(tc, test_load_refuses_bad_names_and_shapes);
    tcase_add_test(tc, test_load_nested_field_named_type);
    tcase_add_test(tc, test_load_file);
    tcase_add_test(tc, test_indexes_from_index_and_unique);
    tcase_add_test(tc, test_cast_numbers);
    tcase_add_test(tc, test_cast_booleans);
    tcase_add_test(tc, test_cast_dates);
    tcase_add_test(tc, test_cast_objectid);
    tcase_add_test(tc, test_cast_strings);
    tcase_add_test(tc, test_cast_arrays);
    tcase_add_test(tc, test_nested_objects_are_subdocuments);
    tcase_add_test(tc, test_document_arrays);
    tcase_add_test(tc, test_mixed_kept_as_sent);
    tcase_add_test(tc, test_defaults_including_now);
    tcase_add_test(tc, test_required);
    tcase_add_test(tc, test_enum);
    tcase_add_test(tc, test_min_max);
    tcase_add_test(tc, test_minlength_maxlength);
    tcase_add_test(tc, test_match);
    tcase_add_test(tc, test_every_failing_path_listed);
    tcase_add_test(tc, test_null_allowed_when_not_required);
    tcase_add_test(tc, test_unknown_fields_dropped);
    tcase_add_test(tc, test_create_makes_id_and_refuses_client_id);
    tcase_add_test(tc, test_update_merges_over_stored_document);
    tcase_add_test(tc, test_cast_id);
    tcase_add_test(tc, test_to_json);
    tcase_add_test(tc, test_pluralize);
    tcase_add_test(tc, test_filter_refuses_operators);
    tcase_add_test(tc, test_filter_refuses_unknown_paths);
    tcase_add_test(tc, test_filter_casts_values);
    tcase_add_test(tc, test_filter_logical_and_element_operators);
    tcase_add_test(tc, test_filter_regex);
    tcase_add_test(tc, test_filter_depth_and_size_caps);
    tcase_add_test(tc, test_fields_three_forms);
    tcase_add_test(tc, test_fields_refused);
    tcase_add_test(tc, test_sort_forms);
    tcase_add_test(tc, test_limit_and_skip);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
