/* check_model_regex: unit tests for "match" patterns and client $regex values (src/model_regex.c):
 * the JavaScript escapes people write work, and patterns whose matching could explode are refused.
 */
#include "model_fixture.h"

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

int main(void)
{
    const TTest *tests[] = {
        test_load_refuses_exploding_patterns,
        test_match,
        test_filter_regex,
    };

    return check_run_tests("model_regex", setup, teardown, tests, sizeof(tests) / sizeof(tests[0]));
}
