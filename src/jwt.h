/* jwt: JSON Web Tokens (compact JWS) signed with HS256, RS256 or ES256,
 * verified and made with OpenSSL's primitives. A key is loaded for one
 * algorithm and only ever used with it: a token's header cannot turn a
 * public key into an HMAC secret, and "none" is never accepted. No I/O
 * but reading key files; thread-safe. */
#ifndef DNODED_JWT_H
#define DNODED_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"

typedef enum { JWT_HS256, JWT_RS256, JWT_ES256 } jwt_alg_t;
typedef struct jwt_key jwt_key_t;

#define JWT_MAX_TOKEN 8192

/* "HS256", "RS256" or "ES256" (exactly); -1 for anything else. */
int jwt_alg_parse(const char *name, jwt_alg_t *alg);
const char *jwt_alg_name(jwt_alg_t alg);

/* A key for alg from a file. HS256: the file's bytes are the secret (one
 * trailing newline dropped), at least 32 of them, and not a PEM key.
 * RS256: a PEM RSA public or private key of at least 2048 bits. ES256: a
 * PEM P-256 public or private key. NULL with a one-line reason in err. */
jwt_key_t *jwt_key_load(const char *path, jwt_alg_t alg, char *err, size_t errlen);
/* The same from memory. */
jwt_key_t *jwt_key_from_mem(const void *data, size_t len, jwt_alg_t alg, char *err, size_t errlen);
jwt_alg_t jwt_key_alg(const jwt_key_t *k);
int jwt_key_can_sign(const jwt_key_t *k); /* HS256, or a private RS/ES key */
void jwt_key_free(jwt_key_t *k);

typedef struct jwt_verify {
    const jwt_key_t *const *keys; /* tried in order (current, then previous) */
    size_t nkeys;
    const char *audience; /* NULL: not checked; else aud (a string or an array) holds it */
    const char *issuer;   /* NULL: not checked; else iss equals it */
    int64_t now;          /* seconds since the epoch */
    int64_t leeway;       /* seconds allowed on exp and nbf */
} jwt_verify_t;

typedef enum {
    JWT_OK = 0,
    JWT_MALFORMED,     /* not header.payload.signature of base64url JSON objects */
    JWT_BAD_ALG,       /* alg missing, none, or no key of it; or a crit header */
    JWT_BAD_SIGNATURE, /* no key of the header's alg verifies it */
    JWT_EXPIRED,       /* exp + leeway <= now */
    JWT_NOT_YET,       /* nbf - leeway > now */
    JWT_NO_EXP,        /* no numeric exp */
    JWT_BAD_CLAIM,     /* aud, iss, or a claim of the wrong type */
} jwt_status_t;

/* Verify token[0..len). JWT_OK: *claims is the payload (caller frees) and
 * *exp its exp. Otherwise *claims is NULL and why (whylen > 0) says what
 * failed in words safe to send to the client. The signature is checked
 * before any claim is read. */
jwt_status_t jwt_verify_token(const char *token, size_t len, const jwt_verify_t *v, json_t **claims,
                              int64_t *exp, char *why, size_t whylen);

/* A compact JWS of claims (an object) signed with k (jwt_key_can_sign);
 * malloc'd, or NULL with err. */
char *jwt_sign(const jwt_key_t *k, const json_t *claims, char *err, size_t errlen);

#endif
