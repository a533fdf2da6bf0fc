/* fuzz_rule: libFuzzer target for permission expressions (rule.c) and the
 * models file's rules around them (model.c, model_access.c). The input is
 * an expression, then optionally a NUL and a JSON value used as auth and
 * as the document. Invariants: compiling either succeeds or says why;
 * rule_eval is deterministic; the filter for doc is a JSON object that the
 * model's sanitizer accepts or refuses without crashing, and RULE_NONE /
 * RULE_ALL agree with evaluation wherever the document does not matter. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "model.h"
#include "rule.h"

static const char MODELS[] = "{\"t\": {\"fields\": {\"a\": \"String\", \"n\": \"Number\", "
                             "\"b\": \"Boolean\", \"tags\": [\"String\"], "
                             "\"m\": {\"x\": \"String\"}, \"o\": \"String\"}}}";
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned roots[] = {RULE_AUTH | RULE_DOC, RULE_AUTH | RULE_OLD | RULE_NEW,
                                     RULE_AUTH};
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    char *text = malloc(tlen + 1), err[256];
    json_t *value = NULL;

    if (text == NULL)
        return 0;
    memcpy(text, data, tlen);
    text[tlen] = '\0';
    if (nul != NULL) {
        char perr[64];
        value = json_parse((const char *)nul + 1, size - tlen - 1, 16, perr, sizeof(perr));
    }
    for (size_t k = 0; k < sizeof(roots) / sizeof(roots[0]); k++) {
        err[0] = '\0';
        rule_t *r = rule_compile(text, roots[k], err, sizeof(err));
        if (r == NULL) {
            if (err[0] == '\0')
                abort(); /* a refusal says why */
            continue;
        }
        rule_env_t env = {.auth = value, .doc = value, .old = value, .new_ = value};
        int once = rule_eval(r, &env);
        if (rule_eval(r, &env) != once)
            abort();
        json_t *f = NULL;
        unsigned target = (roots[k] & RULE_DOC) ? RULE_DOC : RULE_OLD;
        rule_env_t partial = {.auth = value, .new_ = value};
        rule_match_t m = rule_filter(r, target, &partial, &f);
        if ((m == RULE_SOME) != (f != NULL) || (f != NULL && f->type != JSON_OBJECT))
            abort();
        if (m != RULE_SOME && !(rule_roots(r) & target)) {
            /* no field involved: the filter's verdict is the evaluation's */
            rule_env_t alone = {.auth = value, .new_ = value};
            if ((m == RULE_ALL) != rule_eval(r, &alone))
                abort();
        }
        if (f != NULL) {
            json_t *e = NULL;
            bson_t *b = model_sanitize_filter(model_set_at(models, 0), f, NULL, &e);
            if ((b == NULL) == (e == NULL))
                abort();
            if (b != NULL)
                bson_destroy(b);
            json_free(e);
        }
        json_free(f);
        rule_free(r);
    }
    /* the same text as a models file's read rule and channel rule */
    if (tlen < 2048) {
        json_t *file = json_object(), *t = json_object(), *fields = json_object(), *rules = json_object();
        if (file && t && fields && rules && json_object_set(fields, "a", json_string("String")) == 0 &&
            json_object_set(fields, "n", json_string("Number")) == 0 &&
            json_object_set(rules, "read", json_string(text)) == 0 &&
            json_object_set(t, "fields", fields) == 0 && json_object_set(t, "rules", rules) == 0 &&
            json_object_set(file, "t", t) == 0) {
            char *dump = json_dump(file, NULL);
            if (dump != NULL) {
                model_set_t *set = model_set_parse(dump, strlen(dump), err, sizeof(err));
                if (set != NULL) {
                    const model_t *m = model_set_at(set, 0);
                    bson_t *b = NULL;
                    json_t *e = NULL;
                    rule_match_t rm = model_access_filter(m, MODEL_READ, value, NULL, &b, &e);
                    if ((rm == RULE_SOME) != (b != NULL))
                        abort();
                    if (b != NULL)
                        bson_destroy(b);
                    json_free(e);
                    json_t *copy = value ? json_copy(value) : NULL;
                    model_access_hide(m, value, copy);
                    json_free(copy);
                    (void)model_access_channel(set, text, value, MODEL_SUBSCRIBE);
                    model_set_free(set);
                }
                free(dump);
            }
            json_free(file);
        } else {
            json_free(file);
            json_free(t);
            json_free(fields);
            json_free(rules);
        }
    }
    json_free(value);
    free(text);
    return 0;
}
