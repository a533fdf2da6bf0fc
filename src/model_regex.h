/* model_regex: the "match" patterns of the models file and client $regex
 * values: translation from the JavaScript forms people write (\\d, \\s,
 * \\w and their bracket forms) to POSIX extended expressions, and the cost
 * guards that refuse patterns whose matching could explode. Knows nothing
 * of schemas or documents. */
#ifndef DNODED_MODEL_REGEX_H
#define DNODED_MODEL_REGEX_H

#include <stddef.h>

#include "model_types.h"

/* Whether pattern p could cost too much to match (bounded repetition
 * copies past a limit, or nesting too deep): 1 to refuse it. */
int model_regex_too_big(const char *p);
/* Translate src into out (POSIX ERE). 0, or -1 with why. */
int model_regex_translate(const char *src, strbuf_t *out, char *why, size_t whylen);

#endif
