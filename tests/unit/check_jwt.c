/* check_jwt: unit tests for src/jwt.c: keys accepted and refused at
 * load, tokens made and verified with each algorithm, the strict base64url,
 * and the refusals that keep an algorithm to its own keys. Keys are made
 * here with OpenSSL, in memory. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "json.h"
#include "jwt.h"
#include "run_suite.h"

static const char SECRET[] = "unit-test-secret-of-at-least-thirty-two-bytes";

/* A PEM of a new key: "RSA" with bits, or "EC" with a curve name. */
static char *pem_of(EVP_PKEY *k, int private_key)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    ck_assert_ptr_nonnull(b);
    ck_assert(private_key ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)
                          : PEM_write_bio_PUBKEY(b, k));
    n = BIO_get_mem_data(b, &data);
    out = strndup(data, (size_t)n);
    BIO_free(b);
    return out;
}

static jwt_key_t *key_from(const char *pem, jwt_alg_t alg, char *err, size_t errlen)
{
    return jwt_key_from_mem(pem, strlen(pem), alg, err, errlen);
}

static jwt_status_t verify(const char *tok, jwt_key_t *const *keys, size_t n, int64_t now,
                           json_t **claims, char *why)
{
    jwt_verify_t v = {.keys = (const jwt_key_t *const *)keys, .nkeys = n, .now = now, .leeway = 10};
    int64_t exp = 0;

    return jwt_verify_token(tok, strlen(tok), &v, claims, &exp, why, 128);
}

static json_t *claims_of(const char *text)
{
    char err[64];
    json_t *c = json_parse(text, strlen(text), 8, err, sizeof(err));

    ck_assert_ptr_nonnull(c);
    return c;
}

START_TEST(test_keys_refused_at_load)
{
    char err[128];
    EVP_PKEY *rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *small = pem_of(rsa1024, 0), *wrong_curve = pem_of(p384, 0), *ec = pem_of(p256, 0);

    ck_assert_ptr_null(jwt_key_from_mem("short secret", 12, JWT_HS256, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "at least 32 bytes"));
    ck_assert_ptr_null(key_from(ec, JWT_HS256, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "PEM key is not an HS256 secret"));
    ck_assert_ptr_null(key_from(small, JWT_RS256, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "2048 bits"));
    ck_assert_ptr_null(key_from(wrong_curve, JWT_ES256, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "P-256"));
    ck_assert_ptr_null(key_from(ec, JWT_RS256, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "RSA"));
    ck_assert_ptr_null(key_from("not a key at all", JWT_ES256, err, sizeof(err)));
    ck_assert_int_eq(jwt_alg_parse("none", &(jwt_alg_t){0}), -1);
    ck_assert_int_eq(jwt_alg_parse("hs256", &(jwt_alg_t){0}), -1);
    free(small);
    free(wrong_curve);
    free(ec);
    EVP_PKEY_free(rsa1024);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(p256);
}
END_TEST

START_TEST(test_round_trips_and_confusion)
{
    char err[128], why[128];
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *rsa_priv = pem_of(rsa, 1), *rsa_pub = pem_of(rsa, 0), *ec_priv = pem_of(ec, 1),
         *ec_pub = pem_of(ec, 0);
    jwt_key_t *hs = jwt_key_from_mem(SECRET, sizeof(SECRET) - 1, JWT_HS256, err, sizeof(err));
    jwt_key_t *rs_sign = key_from(rsa_priv, JWT_RS256, err, sizeof(err));
    jwt_key_t *rs = key_from(rsa_pub, JWT_RS256, err, sizeof(err));
    jwt_key_t *es_sign = key_from(ec_priv, JWT_ES256, err, sizeof(err));
    jwt_key_t *es = key_from(ec_pub, JWT_ES256, err, sizeof(err));
    /* the RS public key's PEM, as an attacker would use it as an HMAC secret */
    jwt_key_t *confused = jwt_key_from_mem(rsa_pub, strlen(rsa_pub), JWT_HS256, err, sizeof(err));
    json_t *c = claims_of("{\"sub\":\"ann\",\"exp\":2000000000,\"roles\":[\"a\"]}"), *got = NULL;
    jwt_key_t *verifiers[] = {rs, es};
    char *t;

    ck_assert_ptr_nonnull(hs);
    ck_assert_ptr_nonnull(rs_sign);
    ck_assert_ptr_nonnull(rs);
    ck_assert_ptr_nonnull(es_sign);
    ck_assert_ptr_nonnull(es);
    ck_assert_ptr_null(confused); /* refused at load already */
    ck_assert(!jwt_key_can_sign(rs));
    ck_assert_ptr_null(jwt_sign(rs, c, err, sizeof(err)));

    jwt_key_t *signers[] = {hs, rs_sign, es_sign};
    for (size_t i = 0; i < 3; i++) {
        jwt_key_t *ver[] = {signers[i] == hs ? hs : signers[i] == rs_sign ? rs : es};
        t = jwt_sign(signers[i], c, err, sizeof(err));
        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(verify(t, ver, 1, 1700000000, &got, why), JWT_OK);
        ck_assert(json_equal(got, c));
        json_free(got);
        /* a key of another algorithm never verifies it */
        jwt_key_t *other[] = {signers[i] == hs ? rs : hs};
        ck_assert_int_eq(verify(t, other, 1, 1700000000, &got, why), JWT_BAD_ALG);
        ck_assert_ptr_null(got);
        free(t);
    }
    /* an ES256 token with its signature in DER instead of r||s */
    t = jwt_sign(es_sign, c, err, sizeof(err));
    {
        char *dot = strrchr(t, '.'), bad[2048];
        snprintf(bad, sizeof(bad), "%.*s.MEUCIQDx", (int)(dot - t), t);
        ck_assert_int_eq(verify(bad, verifiers, 2, 1700000000, &got, why), JWT_BAD_SIGNATURE);
    }
    free(t);
    /* expired, and within the leeway */
    ck_assert_int_eq(verify("", verifiers, 2, 1700000000, &got, why), JWT_MALFORMED);
    json_t *old = claims_of("{\"sub\":\"ann\",\"exp\":1700000005}");
    t = jwt_sign(hs, old, err, sizeof(err));
    jwt_key_t *hk[] = {hs};
    ck_assert_int_eq(verify(t, hk, 1, 1700000000, &got, why), JWT_OK);
    json_free(got);
    ck_assert_int_eq(verify(t, hk, 1, 1700000016, &got, why), JWT_EXPIRED);
    ck_assert_str_eq(why, "token expired");
    free(t);
    json_free(old);
    json_free(c);
    free(rsa_priv);
    free(rsa_pub);
    free(ec_priv);
    free(ec_pub);
    jwt_key_free(hs);
    jwt_key_free(rs_sign);
    jwt_key_free(rs);
    jwt_key_free(es_sign);
    jwt_key_free(es);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}
END_TEST

START_TEST(test_strict_encoding)
{
    char err[128], why[128];
    jwt_key_t *hs = jwt_key_from_mem(SECRET, sizeof(SECRET) - 1, JWT_HS256, err, sizeof(err));
    jwt_key_t *keys[] = {hs};
    json_t *c = claims_of("{\"sub\":\"ann\",\"exp\":2000000000}"), *got = NULL;
    char *t = jwt_sign(hs, c, err, sizeof(err)), buf[2048];
    size_t n = strlen(t);

    ck_assert_int_eq(verify(t, keys, 1, 1700000000, &got, why), JWT_OK);
    json_free(got);
    /* padding, a space, a fourth part, a standard-alphabet character */
    snprintf(buf, sizeof(buf), "%s=", t);
    ck_assert_int_eq(verify(buf, keys, 1, 1700000000, &got, why), JWT_MALFORMED);
    snprintf(buf, sizeof(buf), " %s", t);
    ck_assert_int_eq(verify(buf, keys, 1, 1700000000, &got, why), JWT_MALFORMED);
    snprintf(buf, sizeof(buf), "%s.x", t);
    ck_assert_int_eq(verify(buf, keys, 1, 1700000000, &got, why), JWT_MALFORMED);
    memcpy(buf, t, n + 1);
    buf[n - 2] = '+';
    ck_assert_int_eq(verify(buf, keys, 1, 1700000000, &got, why), JWT_MALFORMED);
    /* the same signature bytes spelled with non-zero spare bits */
    memcpy(buf, t, n + 1);
    {
        /* a 32-byte HMAC is 43 characters: the last holds 2 spare bits */
        char *last = buf + n - 1;
        const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        int v = (int)(strchr(alpha, *last) - alpha);
        *last = alpha[v | 1];
        if (*last != t[n - 1])
            ck_assert_int_eq(verify(buf, keys, 1, 1700000000, &got, why), JWT_MALFORMED);
    }
    ck_assert_ptr_null(got);
    free(t);
    json_free(c);
    jwt_key_free(hs);
}
END_TEST

int main(void)
{
    const TTest *tests[] = {test_keys_refused_at_load, test_round_trips_and_confusion,
                            test_strict_encoding};

    return check_run_tests("jwt", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
