/* fuzz_common: helpers shared by the libFuzzer targets (header only, each
 * target is one translation unit). Not part of dnoded. */
#ifndef DNODED_FUZZ_COMMON_H
#define DNODED_FUZZ_COMMON_H

#include <stdlib.h>
#include <string.h>

#include "json.h"

/* Client data reaches the model with DNode callbacks still inside it (the
 * api copies arguments as they came), and json_parse never makes
 * JSON_CALLBACK nodes: turn every string "[Function]" into one so the
 * fuzzer can place callbacks anywhere. Returns 0, or -1 on allocation
 * failure. */
static inline int fuzz_callbackify(json_t *v)
{
    size_t i;

    if (v == NULL)
        return 0;
    if (v->type == JSON_ARRAY) {
        for (i = 0; i < v->u.arr.len; i++) {
            json_t *e = v->u.arr.items[i];
            if (e->type == JSON_STRING && strcmp(e->u.str.s, "[Function]") == 0) {
                json_t *cb = json_callback((int64_t)i);
                if (cb == NULL || json_array_set(v, i, cb) < 0)
                    return -1;
            } else if (fuzz_callbackify(e) < 0) {
                return -1;
            }
        }
    } else if (v->type == JSON_OBJECT) {
        for (i = 0; i < v->u.obj.len; i++) {
            json_t *e = v->u.obj.vals[i];
            if (e->type == JSON_STRING && strcmp(e->u.str.s, "[Function]") == 0) {
                json_t *cb = json_callback((int64_t)i);
                if (cb == NULL)
                    return -1;
                json_free(e);
                v->u.obj.vals[i] = cb;
            } else if (fuzz_callbackify(e) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

#endif
