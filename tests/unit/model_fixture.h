/* model_fixture: what the model unit tests share (check_model*.c): a
 * models file with every kind of field, loading it, and helpers to create
 * documents and sanitize queries against it. Header only; not part of
 * dnoded. */
#ifndef DNODED_TEST_MODEL_FIXTURE_H
#define DNODED_TEST_MODEL_FIXTURE_H

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "model.h"
#include "run_suite.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static inline json_t *js(const char *text)
{
    char err[128] = "";
    json_t *v = json_parse(text, strlen(text), JSON_DEFAULT_MAX_DEPTH, err, sizeof err);
    ck_assert_msg(v != NULL, "bad test JSON '%s': %s", text, err);
    return v;
}

static inline model_set_t *load(const char *text)
{
    char err[256] = "";
    model_set_t *set = model_set_parse(text, strlen(text), err, sizeof err);
    ck_assert_msg(set != NULL, "models refused: %s", err);
    return set;
}

/* The file must be refused with one line containing every given word. */
static inline void load_fails(const char *text, ...)
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

static inline void setup(void)
{
    set = load(MODELS);
    blog = model_set_find(set, "blog");
    ck_assert_ptr_nonnull(blog);
}

static inline void teardown(void)
{
    model_set_free(set);
    set = NULL;
}

/* A valid blog document with the fields given in extra merged in. */
static inline bson_t *create_ok(const char *data)
{
    json_t *d = js(data), *err = NULL;
    bson_t *doc = model_prepare_create(blog, d, &err);
    char *e = err ? json_dump(err, NULL) : NULL;
    ck_assert_msg(doc != NULL, "create of %s failed: %s", data, e ? e : "(no error)");
    free(e);
    json_free(d);
    return doc;
}

static inline json_t *create_fails(const char *data)
{
    json_t *d = js(data), *err = NULL;
    bson_t *doc = model_prepare_create(blog, d, &err);
    ck_assert_msg(doc == NULL, "create of %s succeeded", data);
    ck_assert_ptr_nonnull(err);
    json_free(d);
    return err;
}

static inline const json_t *err_at(const json_t *err, const char *path)
{
    const json_t *e = json_object_get(json_object_get(err, "errors"), path);
    char *dump = json_dump(err, NULL);
    ck_assert_msg(e != NULL, "no error at %s in %s", path, dump);
    free(dump);
    return e;
}

static inline void assert_error_at(const json_t *err, const char *path, const char *kind,
                                   const char *message)
{
    const json_t *e = err_at(err, path);
    ck_assert_str_eq(json_get_string(e, "kind"), kind);
    ck_assert_str_eq(json_get_string(e, "path"), path);
    if (message != NULL)
        ck_assert_str_eq(json_get_string(e, "message"), message);
}

static inline size_t error_count(const json_t *err)
{
    const json_t *errors = json_object_get(err, "errors");
    return errors ? errors->u.obj.len : 0;
}

static inline bson_type_t type_at(const bson_t *doc, const char *path)
{
    bson_iter_t it, found;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &found))
        return BSON_TYPE_EOD;
    return bson_iter_type(&found);
}

static inline bson_iter_t iter_at(const bson_t *doc, const char *path)
{
    bson_iter_t it, found;
    ck_assert(bson_iter_init(&it, doc));
    ck_assert_msg(bson_iter_find_descendant(&it, path, &found), "no %s", path);
    return found;
}

static inline int32_t int32_at(const bson_t *doc, const char *path)
{
    ck_assert_int_eq(type_at(doc, path), BSON_TYPE_INT32);
    bson_iter_t it = iter_at(doc, path);
    return bson_iter_int32(&it);
}

static inline double double_at(const bson_t *doc, const char *path)
{
    ck_assert_int_eq(type_at(doc, path), BSON_TYPE_DOUBLE);
    bson_iter_t it = iter_at(doc, path);
    return bson_iter_double(&it);
}

static inline const char *utf8_at(const bson_t *doc, const char *path)
{
    ck_assert_int_eq(type_at(doc, path), BSON_TYPE_UTF8);
    bson_iter_t it = iter_at(doc, path);
    return bson_iter_utf8(&it, NULL);
}

static inline int64_t date_at(const bson_t *doc, const char *path)
{
    ck_assert_int_eq(type_at(doc, path), BSON_TYPE_DATE_TIME);
    bson_iter_t it = iter_at(doc, path);
    return bson_iter_date_time(&it);
}

/* Relaxed extended JSON of a sanitized filter, or NULL (error in *err). */
static inline char *filter(const char *query, json_t **err)
{
    json_t *q = js(query);
    model_limits_t lim = {
        .max_read_limit = 100, .max_query_depth = 6, .max_query_terms = 40, .max_regex_length = 16};
    *err = NULL;
    bson_t *b = model_sanitize_filter(blog, q, &lim, err);
    json_free(q);
    if (b == NULL)
        return NULL;
    char *s = bson_as_relaxed_extended_json(b, NULL);
    bson_destroy(b);
    return s;
}

static inline void filter_is(const char *query, const char *want)
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
static inline void filter_refused(const char *query, const char *word)
{
    json_t *err;
    char *got = filter(query, &err);
    ck_assert_msg(got == NULL, "filter %s accepted as %s", query, got ? got : "");
    ck_assert_str_eq(json_get_string(err, "name"), "InvalidRequest");
    const char *msg = json_get_string(err, "message");
    ck_assert_msg(strstr(msg, word) != NULL, "message '%s' does not name '%s'", msg, word);
    json_free(err);
}

static inline char *fields(const char *spec, json_t **err)
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

static inline void fields_are(const char *spec, const char *want)
{
    json_t *err;
    char *got = fields(spec, &err);
    ck_assert_msg(got != NULL, "fields %s refused: %s", spec,
                  err ? json_get_string(err, "message") : "");
    ck_assert_str_eq(got, want);
    bson_free(got);
}

static inline void fields_refused(const char *spec, const char *word)
{
    json_t *err;
    char *got = fields(spec, &err);
    ck_assert_msg(got == NULL, "fields %s accepted as %s", spec, got ? got : "");
    ck_assert_str_eq(json_get_string(err, "name"), "InvalidRequest");
    const char *msg = json_get_string(err, "message");
    ck_assert_msg(strstr(msg, word) != NULL, "message '%s' does not name '%s'", msg, word);
    json_free(err);
}

static inline int sorting(const char *spec, model_sorting_t *out, json_t **err)
{
    json_t *s = js(spec);
    model_limits_t lim = {.max_read_limit = 100};
    int rc = model_sanitize_sorting(blog, s, &lim, out, err);
    json_free(s);
    return rc;
}

static inline void sort_is(const char *spec, const char *want)
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

static inline void sort_refused(const char *spec, const char *word)
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

/* The wall clock in ms, as the models' "now" default reads it. */
static inline int64_t realtime_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
