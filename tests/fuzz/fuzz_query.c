/* fuzz_query: libFuzzer target for what clients send into the model layer:
 * filters, sortings and projections (model_sanitize_*), ids, and documents
 * for create and update (model_prepare_create/_update), against one fixed
 * models file that uses every type and validator. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

#include "fuzz_common.h"
#include "json.h"
#include "model.h"

static const char MODELS[] =
    "{\"post\": {\"fields\": {"
    " \"title\": {\"type\": \"String\", \"required\": true, \"maxlength\": 40, \"index\": true},"
    " \"slug\": {\"type\": \"String\", \"match\": [\"^[a-z0-9\\\\d_-]{2,}$\", \"i\"],"
    "          \"unique\": true, \"minlength\": 2},"
    " \"kind\": {\"type\": \"String\", \"enum\": [\"a\", \"b\", \"c\"], \"default\": \"a\"},"
    " \"n\": {\"type\": \"Number\", \"min\": -5, \"max\": 1e6, \"default\": 0},"
    " \"f\": \"Number\", \"ok\": \"Boolean\", \"by\": \"ObjectId\", \"any\": \"Mixed\","
    " \"at\": {\"type\": \"Date\", \"default\": \"now\"},"
    " \"due\": {\"type\": \"Date\", \"min\": \"1990-01-01\", \"max\": \"2200-12-31\"},"
    " \"tags\": [\"String\"], \"ids\": [\"ObjectId\"], \"when\": [\"Date\"],"
    " \"marks\": [{\"type\": \"Number\", \"min\": 0, \"max\": 9}],"
    " \"who\": {\"name\": {\"type\": \"String\", \"required\": true},"
    "         \"age\": {\"type\": \"Number\", \"default\": 1},"
    "         \"deep\": {\"x\": {\"type\": \"Boolean\", \"default\": true}}},"
    " \"rows\": [{\"k\": {\"type\": \"String\", \"required\": true},"
    "            \"v\": {\"type\": \"Number\", \"default\": 2}}]"
    "}},"
    " \"doc\": {\"versioned\": true, \"collection\": \"docs_v\", \"fields\": {\"t\": \"String\"}}}";

static model_set_t *models;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];

    (void)argc;
    (void)argv;
    models = model_set_parse(MODELS, sizeof(MODELS) - 1, err, sizeof(err));
    if (models == NULL)
        abort();
    return 0;
}

/* A function that fails must say why; one that succeeds must not. */
static void check_error(int failed, json_t **error)
{
    if (failed != (*error != NULL))
        abort();
    if (*error != NULL) {
        if (json_get_string(*error, "name") == NULL || json_get_string(*error, "message") == NULL)
            abort();
        json_free(*error);
        *error = NULL;
    }
}

static void round_trip(const bson_t *doc)
{
    json_t *j = model_to_json(doc);

    if (j == NULL)
        abort();
    json_free(j);
}

static void exercise(const model_t *m, const json_t *in, const model_limits_t *lim)
{
    const json_t *query = in, *sorting = in, *fields = in, *data = in, *id = in;
    json_t *error = NULL;
    model_sorting_t s;
    bson_t *b, *created;
    bson_oid_t oid;
    int rc;

    if (in != NULL && in->type == JSON_OBJECT) {
        if (json_object_get(in, "query") != NULL)
            query = json_object_get(in, "query");
        if (json_object_get(in, "sorting") != NULL)
            sorting = json_object_get(in, "sorting");
        if (json_object_get(in, "fields") != NULL)
            fields = json_object_get(in, "fields");
        if (json_object_get(in, "data") != NULL)
            data = json_object_get(in, "data");
        if (json_object_get(in, "_id") != NULL)
            id = json_object_get(in, "_id");
    }

    b = model_sanitize_filter(m, query, lim, &error);
    check_error(b == NULL, &error);
    bson_destroy(b);

    memset(&s, 0, sizeof(s));
    rc = model_sanitize_sorting(m, sorting, lim, &s, &error);
    check_error(rc < 0, &error);
    if (rc == 0) {
        if (s.sort == NULL || s.limit < 0 || s.skip < 0)
            abort();
        if (lim != NULL && lim->max_read_limit > 0 && s.limit > (int64_t)lim->max_read_limit)
            abort();
    }
    model_sorting_clear(&s);

    b = model_sanitize_fields(m, fields, &error);
    check_error(b == NULL, &error);
    bson_destroy(b);

    rc = model_cast_id(id, &oid, &error);
    check_error(rc < 0, &error);

    if (data == NULL || data->type != JSON_OBJECT)
        return;
    created = model_prepare_create(m, data, &error);
    check_error(created == NULL, &error);
    if (created == NULL)
        return;
    round_trip(created);
    /* Updating what was just created with the same data must succeed:
     * create validated the very same values. */
    b = model_prepare_update(m, created, data, &error);
    check_error(b == NULL, &error);
    if (b != NULL) {
        round_trip(b);
        bson_destroy(b);
    }
    bson_destroy(created);
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
    static const model_limits_t tight = {5, 3, 8, 16};
    char err[128];
    json_t *in;
    const model_t *m;
    const char *type;

    if (size < 1)
        return 0;
    in = json_parse((const char *)buf + 1, size - 1, JSON_DEFAULT_MAX_DEPTH, err, sizeof(err));
    if (in == NULL)
        return 0;
    if (fuzz_callbackify(in) < 0)
        abort();
    type = in->type == JSON_OBJECT ? json_get_string(in, "type") : NULL;
    m = model_set_find(models, type != NULL ? type : "post");
    if (m == NULL)
        m = model_set_at(models, 0);
    /* The first byte picks the limits: defaults or tight ones. */
    exercise(m, in, (buf[0] & 1) ? &tight : NULL);
    json_free(in);
    return 0;
}
