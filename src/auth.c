/* auth: token keys from dnoded.conf, and tokens verified with them (the
 * signature work is jwt.c's). */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

struct auth {
    jwt_key_t *keys[2]; /* current, previous */
    size_t nkeys;
    char *audience, *issuer;
    int64_t leeway;
};

static int auth_load_key(auth_t *a, const char *path, const char *alg_name, const char *what,
                         char *err, size_t errlen)
{
    jwt_alg_t alg;
    char why[256];

    if (jwt_alg_parse(alg_name, &alg) < 0) {
        snprintf(err, errlen, "%s: unknown algorithm %s", what, alg_name);
        return -1;
    }
    a->keys[a->nkeys] = jwt_key_load(path, alg, why, sizeof(why));
    if (a->keys[a->nkeys] == NULL) {
        snprintf(err, errlen, "%s %s: %s", what, path, why);
        return -1;
    }
    a->nkeys++;
    return 0;
}

static char *auth_dup_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

auth_t *auth_load(const config_t *cfg, char *err, size_t errlen)
{
    auth_t *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->leeway = cfg->auth_leeway;
    if ((cfg->auth_audience != NULL && cfg->auth_audience[0] != '\0' &&
         (a->audience = auth_dup_or_null(cfg->auth_audience)) == NULL) ||
        (cfg->auth_issuer != NULL && cfg->auth_issuer[0] != '\0' &&
         (a->issuer = auth_dup_or_null(cfg->auth_issuer)) == NULL)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (cfg->auth_key == NULL || cfg->auth_key[0] == '\0') {
        if (cfg->auth_previous_key != NULL && cfg->auth_previous_key[0] != '\0') {
            snprintf(err, errlen, "auth_previous_key is set but auth_key is not");
            goto fail;
        }
        return a;
    }
    if (auth_load_key(a, cfg->auth_key, cfg->auth_key_alg, "auth_key", err, errlen) < 0)
        goto fail;
    if (cfg->auth_previous_key != NULL && cfg->auth_previous_key[0] != '\0' &&
        auth_load_key(a, cfg->auth_previous_key,
                      cfg->auth_previous_key_alg != NULL && cfg->auth_previous_key_alg[0] != '\0'
                          ? cfg->auth_previous_key_alg
                          : cfg->auth_key_alg,
                      "auth_previous_key", err, errlen) < 0)
        goto fail;
    return a;
fail:
    auth_free(a);
    return NULL;
}

void auth_free(auth_t *a)
{
    size_t i;

    if (a == NULL)
        return;
    for (i = 0; i < a->nkeys; i++)
        jwt_key_free(a->keys[i]);
    free(a->audience);
    free(a->issuer);
    free(a);
}

int auth_enabled(const auth_t *a) { return a != NULL && a->nkeys > 0; }

json_t *auth_verify(const auth_t *a, const char *token, size_t len, int64_t now, int64_t *exp,
                    char *why, size_t whylen)
{
    jwt_verify_t v;
    json_t *claims = NULL;
    const json_t *sub;

    if (!auth_enabled(a)) {
        snprintf(why, whylen, "this server takes no tokens");
        return NULL;
    }
    if (len == 0 || len > AUTH_MAX_TOKEN) {
        snprintf(why, whylen, "malformed token");
        return NULL;
    }
    memset(&v, 0, sizeof(v));
    v.keys = (const jwt_key_t *const *)a->keys;
    v.nkeys = a->nkeys;
    v.audience = a->audience;
    v.issuer = a->issuer;
    v.now = now;
    v.leeway = a->leeway;
    if (jwt_verify_token(token, len, &v, &claims, exp, why, whylen) != JWT_OK)
        return NULL;
    /* The rules compare sub as a string: a token without one is anonymous
     * in all but name, so it is refused. */
    sub = json_object_get(claims, "sub");
    if (sub == NULL || sub->type != JSON_STRING || sub->u.str.len == 0 ||
        strlen(sub->u.str.s) != sub->u.str.len) {
        json_free(claims);
        snprintf(why, whylen, "the token has no sub");
        return NULL;
    }
    return claims;
}
