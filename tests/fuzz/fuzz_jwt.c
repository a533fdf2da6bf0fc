/* fuzz_jwt: libFuzzer target for token verification (jwt.c): the input is
 * a token, checked against an HS256 secret, an ES256 key and an RS256 public
 * key. Invariants: a verdict is JWT_OK exactly when claims come back, a
 * refusal says why, and the same input gets the same verdict; then the
 * input as claims (when it is a JSON object) signed with the HS256 and
 * ES256 keys must verify back to the same claims. The keys are for this
 * target only. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "jwt.h"

static const char SECRET[] = "fuzzing-secret-of-at-least-thirty-two-bytes";
static const char ES_PRIVATE[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXjrxereQFnJ2mEXV\n"
    "hz18MWchSDue2ZIwAXc+uk7RRcOhRANCAARJ5qeecrTBd5/p9pzZhdbRVGVz4FII\n"
    "qbtRr4GUhgJFOBkoVAFLi4tSEjr159YOO7PiweVo6gP9EZb4yPHehTmV\n"
    "-----END PRIVATE KEY-----\n";
static const char RS_PUBLIC[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAm0gfpi1BuEspkiUhBBsj\n"
    "ZhsADONTFJZmlpW9RVDwXCBjdA/LTrMb0lh625NYebKSCwBISXqY7AWbG3NrmpsR\n"
    "noZzk8URaLKyJTvQiRlCHi0WPQ1gwjueOsjGMcNetnrOUbwVvqvOctU4HhoLVKF4\n"
    "sHn2QxcvD3sCN7sukBS0VZniYIIo9VeLs6lvosOOmxjlKau/w26t75KEkuYgLO7L\n"
    "lQXeqoP6AcTwFLJj3Dj569dJGQBFofSZvbyNSRjfL0Ly1r020KR5T9z3OiIps86v\n"
    "hEDmWJgjfblyv2c8VzoXLVNN4Q64/8gLnzxpIsKMOnUTGSsT+yB4xXOWMUjRyafS\n"
    "cwIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

static jwt_key_t *keys[3];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[128];

    (void)argc;
    (void)argv;
    keys[0] = jwt_key_from_mem(SECRET, sizeof(SECRET) - 1, JWT_HS256, err, sizeof(err));
    keys[1] = jwt_key_from_mem(ES_PRIVATE, sizeof(ES_PRIVATE) - 1, JWT_ES256, err, sizeof(err));
    keys[2] = jwt_key_from_mem(RS_PUBLIC, sizeof(RS_PUBLIC) - 1, JWT_RS256, err, sizeof(err));
    if (keys[0] == NULL || keys[1] == NULL || keys[2] == NULL)
        abort();
    return 0;
}

static jwt_status_t verify(const char *tok, size_t len, json_t **claims)
{
    jwt_verify_t v = {.keys = (const jwt_key_t *const *)keys, .nkeys = 3, .now = 1700000000,
                      .leeway = 30, .audience = NULL, .issuer = NULL};
    char why[128] = "";
    int64_t exp = 0;
    jwt_status_t st = jwt_verify_token(tok, len, &v, claims, &exp, why, sizeof(why));

    if ((st == JWT_OK) != (*claims != NULL))
        abort();
    if (st != JWT_OK && why[0] == '\0')
        abort();
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *claims = NULL, *again = NULL, *input;
    char err[128];
    jwt_status_t st = verify((const char *)data, size, &claims);

    if (verify((const char *)data, size, &again) != st)
        abort();
    json_free(claims);
    json_free(again);

    input = json_parse((const char *)data, size, 16, err, sizeof(err));
    if (input != NULL && input->type == JSON_OBJECT) {
        json_object_set(input, "exp", json_int(1800000000));
        json_object_del(input, "nbf");
        json_object_del(input, "iat");
        for (int k = 0; k < 2; k++) {
            char *tok = jwt_sign(keys[k], input, err, sizeof(err));
            json_t *back = NULL;
            if (tok == NULL)
                abort();
            if (verify(tok, strlen(tok), &back) != JWT_OK)
                abort();
            /* compared as written: a number JSON cannot hold reads back null */
            char *a = json_dump(back, NULL), *b = json_dump(input, NULL);
            if (a == NULL || b == NULL || strcmp(a, b) != 0)
                abort();
            free(a);
            free(b);
            json_free(back);
            free(tok);
        }
    }
    json_free(input);
    return 0;
}
