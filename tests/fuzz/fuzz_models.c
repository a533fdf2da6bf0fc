/* fuzz_models: libFuzzer target for the models-file loader. Feeds arbitrary
 * bytes to model_set_parse and, when a set loads, walks every accessor the
 * worker and the store use at start (names, collections, index specs). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    model_set_t *set = model_set_parse((const char *)data, size, err, sizeof(err));
    size_t i, j;

    if (set == NULL) {
        /* The contract: a failed load always leaves a terminated reason. */
        if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0')
            abort();
        return 0;
    }
    for (i = 0; i < model_set_count(set); i++) {
        const model_t *m = model_set_at(set, i);
        const char *name = model_name(m), *coll = model_collection(m);
        char *plural;

        if (name == NULL || coll == NULL || coll[0] == '\0')
            abort();
        if (model_set_find(set, name) != m)
            abort();
        plural = model_pluralize(name);
        if (plural == NULL)
            abort();
        free(plural);
        (void)model_versioned(m);
        for (j = 0; j < model_index_count(m); j++) {
            const char *path;
            int unique;

            if (model_index_at(m, j, &path, &unique) < 0 || path == NULL)
                abort();
        }
    }
    model_set_free(set);
    return 0;
}
