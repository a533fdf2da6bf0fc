/* jwt: compact JWS tokens with HS256, RS256 and ES256 (see jwt.h). The
 * base64url codec is ours and strict (no padding, no stray bytes, no
 * non-canonical final bits); the cryptography is OpenSSL's EVP and HMAC. */
#include "jwt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#define JWT_MIN_SECRET 32
#define JWT_MAX_KEY_FILE 65536

struct jwt_key {
    jwt_alg_t alg;
    unsigned char *secret; /* HS256 */
    size_t secret_len;
    EVP_PKEY *pkey; /* RS256, ES256 */
    int can_sign;
};

static const char *const alg_names[] = {"HS256", "RS256", "ES256"};

int jwt_alg_parse(const char *name, jwt_alg_t *alg)
{
    size_t i;

    for (i = 0; name != NULL && i < sizeof(alg_names) / sizeof(alg_names[0]); i++)
        if (strcmp(name, alg_names[i]) == 0) {
            *alg = (jwt_alg_t)i;
            return 0;
        }
    return -1;
}

const char *jwt_alg_name(jwt_alg_t alg) { return (unsigned)alg < 3 ? alg_names[alg] : "?"; }

/* ------------------------------------------------------------------------
 * base64url
 * ------------------------------------------------------------------------ */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decode s[0..n) into a new buffer (*out, *outlen; NUL-terminated for
 * convenience). -1 on any character outside the alphabet, a length that
 * cannot be base64 (n % 4 == 1), or unused bits that are not zero. */
static int b64url_decode(const char *s, size_t n, unsigned char **out, size_t *outlen)
{
    unsigned char *buf;
    size_t i, o = 0;
    uint32_t acc = 0;
    int bits = 0;

    if (n % 4 == 1)
        return -1;
    buf = malloc(n * 3 / 4 + 2);
    if (buf == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) {
            free(buf);
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) { /* leftover bits must be zero: one encoding per value */
        free(buf);
        return -1;
    }
    buf[o] = '\0';
    *out = buf;
    *outlen = o;
    return 0;
}

static char *b64url_encode(const unsigned char *p, size_t n)
{
    char *out = malloc(n * 4 / 3 + 4);
    size_t i, o = 0;
    uint32_t acc = 0;
    int bits = 0;

    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = b64url[(acc >> bits) & 63];
        }
        acc &= (1u << bits) - 1;
    }
    if (bits > 0)
        out[o++] = b64url[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    return out;
}

/* ------------------------------------------------------------------------
 * Keys
 * ------------------------------------------------------------------------ */

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

jwt_key_t *jwt_key_from_mem(const void *data, size_t len, jwt_alg_t alg, char *err, size_t errlen)
{
    jwt_key_t *k;
    BIO *bio;

    if ((unsigned)alg > JWT_ES256) {
        set_err(err, errlen, "unknown algorithm");
        return NULL;
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    k->alg = alg;
    if (alg == JWT_HS256) {
        const char *s = data;
        if (len > 0 && s[len - 1] == '\n')
            len--;
        if (len > 0 && s[len - 1] == '\r')
            len--;
        if (len < JWT_MIN_SECRET) {
            set_err(err, errlen, "an HS256 secret needs at least 32 bytes");
            goto fail;
        }
        if (memmem(s, len, "-----BEGIN", 10) != NULL) {
            set_err(err, errlen, "a PEM key is not an HS256 secret");
            goto fail;
        }
        k->secret = malloc(len);
        if (k->secret == NULL) {
            set_err(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(k->secret, s, len);
        k->secret_len = len;
        k->can_sign = 1;
        return k;
    }
    if (len > INT32_MAX || (bio = BIO_new_mem_buf(data, (int)len)) == NULL) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    k->pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    if (k->pkey != NULL) {
        k->can_sign = 1;
    } else {
        (void)BIO_reset(bio);
        k->pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    }
    BIO_free(bio);
    if (k->pkey == NULL) {
        set_err(err, errlen, "not a PEM public or private key");
        goto fail;
    }
    if (alg == JWT_RS256) {
        if (EVP_PKEY_get_base_id(k->pkey) != EVP_PKEY_RSA) {
            set_err(err, errlen, "RS256 needs an RSA key");
            goto fail;
        }
        if (EVP_PKEY_get_bits(k->pkey) < 2048) {
            set_err(err, errlen, "an RSA key needs at least 2048 bits");
            goto fail;
        }
    } else {
        char group[64] = "";
        size_t glen = 0;
        if (EVP_PKEY_get_base_id(k->pkey) != EVP_PKEY_EC ||
            !EVP_PKEY_get_utf8_string_param(k->pkey, "group", group, sizeof(group), &glen) ||
            strcmp(group, "prime256v1") != 0) {
            set_err(err, errlen, "ES256 needs an EC key on P-256");
            goto fail;
        }
    }
    return k;
fail:
    jwt_key_free(k);
    return NULL;
}

jwt_key_t *jwt_key_load(const char *path, jwt_alg_t alg, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    unsigned char *buf;
    size_t n;
    jwt_key_t *k;

    if (fp == NULL) {
        if (errlen > 0)
            snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    buf = malloc(JWT_MAX_KEY_FILE + 1);
    if (buf == NULL) {
        fclose(fp);
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    n = fread(buf, 1, JWT_MAX_KEY_FILE + 1, fp);
    if (ferror(fp) || n > JWT_MAX_KEY_FILE) {
        set_err(err, errlen, ferror(fp) ? "cannot read" : "larger than 64 KiB");
        fclose(fp);
        OPENSSL_cleanse(buf, JWT_MAX_KEY_FILE + 1);
        free(buf);
        return NULL;
    }
    fclose(fp);
    k = jwt_key_from_mem(buf, n, alg, err, errlen);
    OPENSSL_cleanse(buf, n);
    free(buf);
    return k;
}

jwt_alg_t jwt_key_alg(const jwt_key_t *k) { return k->alg; }

int jwt_key_can_sign(const jwt_key_t *k) { return k != NULL && k->can_sign; }

void jwt_key_free(jwt_key_t *k)
{
    if (k == NULL)
        return;
    if (k->secret != NULL) {
        OPENSSL_cleanse(k->secret, k->secret_len);
        free(k->secret);
    }
    EVP_PKEY_free(k->pkey);
    free(k);
}

/* ------------------------------------------------------------------------
 * Signatures
 * ------------------------------------------------------------------------ */

/* Whether sig verifies input under k. */
static int jwt_check(const jwt_key_t *k, const char *input, size_t n, const unsigned char *sig,
                     size_t siglen)
{
    if (k->alg == JWT_HS256) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int maclen = 0;
        if (HMAC(EVP_sha256(), k->secret, (int)k->secret_len, (const unsigned char *)input, n, mac,
                 &maclen) == NULL)
            return 0;
        return siglen == maclen && CRYPTO_memcmp(mac, sig, maclen) == 0;
    }
    unsigned char *der = NULL;
    const unsigned char *use = sig;
    size_t uselen = siglen;
    int ok = 0;
    if (k->alg == JWT_ES256) {
        /* JWS carries r || s, 32 bytes each; OpenSSL verifies DER */
        ECDSA_SIG *es;
        BIGNUM *r, *s;
        int len;
        if (siglen != 64)
            return 0;
        es = ECDSA_SIG_new();
        r = BN_bin2bn(sig, 32, NULL);
        s = BN_bin2bn(sig + 32, 32, NULL);
        if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
            BN_free(r);
            BN_free(s);
            ECDSA_SIG_free(es);
            return 0;
        }
        len = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
        if (len <= 0)
            return 0;
        use = der;
        uselen = (size_t)len;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
        EVP_DigestVerify(ctx, use, uselen, (const unsigned char *)input, n) == 1)
        ok = 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return ok;
}

/* The signature of input under k, in JWS form; malloc'd. */
static unsigned char *jwt_make(const jwt_key_t *k, const char *input, size_t n, size_t *siglen)
{
    unsigned char *sig = NULL;

    if (k->alg == JWT_HS256) {
        unsigned int len = 0;
        sig = malloc(EVP_MAX_MD_SIZE);
        if (sig == NULL || HMAC(EVP_sha256(), k->secret, (int)k->secret_len,
                                (const unsigned char *)input, n, sig, &len) == NULL) {
            free(sig);
            return NULL;
        }
        *siglen = len;
        return sig;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t len = 0;
    if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) != 1 ||
        EVP_DigestSign(ctx, NULL, &len, (const unsigned char *)input, n) != 1 ||
        (sig = malloc(len)) == NULL ||
        EVP_DigestSign(ctx, sig, &len, (const unsigned char *)input, n) != 1) {
        EVP_MD_CTX_free(ctx);
        free(sig);
        return NULL;
    }
    EVP_MD_CTX_free(ctx);
    if (k->alg == JWT_ES256) {
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
        const BIGNUM *r, *s;
        unsigned char *raw = malloc(64);
        free(sig);
        if (es == NULL || raw == NULL) {
            ECDSA_SIG_free(es);
            free(raw);
            return NULL;
        }
        ECDSA_SIG_get0(es, &r, &s);
        if (BN_bn2binpad(r, raw, 32) != 32 || BN_bn2binpad(s, raw + 32, 32) != 32) {
            ECDSA_SIG_free(es);
            free(raw);
            return NULL;
        }
        ECDSA_SIG_free(es);
        *siglen = 64;
        return raw;
    }
    *siglen = len;
    return sig;
}

/* ------------------------------------------------------------------------
 * Tokens
 * ------------------------------------------------------------------------ */

static jwt_status_t fail(jwt_status_t st, char *why, size_t whylen, const char *msg)
{
    set_err(why, whylen, msg);
    return st;
}

/* A NumericDate claim: 1 present and a number, 0 absent, -1 not a number. */
static int numeric_claim(const json_t *claims, const char *name, int64_t *out)
{
    const json_t *v = json_object_get(claims, name);

    if (v == NULL)
        return 0;
    if (v->type != JSON_NUMBER || v->u.num.d != v->u.num.d || v->u.num.d > 9.2e18 ||
        v->u.num.d < -9.2e18)
        return -1;
    *out = (int64_t)v->u.num.d;
    return 1;
}

static json_t *parse_part(const char *s, size_t n)
{
    unsigned char *raw;
    size_t len;
    char err[64];
    json_t *v;

    if (b64url_decode(s, n, &raw, &len) < 0)
        return NULL;
    v = json_parse((const char *)raw, len, 16, err, sizeof(err));
    free(raw);
    if (v != NULL && v->type != JSON_OBJECT) {
        json_free(v);
        return NULL;
    }
    return v;
}

jwt_status_t jwt_verify_token(const char *token, size_t len, const jwt_verify_t *v, json_t **claims,
                              int64_t *exp, char *why, size_t whylen)
{
    const char *dot1, *dot2, *alg_name;
    json_t *header = NULL, *payload = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0, i;
    jwt_status_t st;
    jwt_alg_t alg;
    int64_t t = 0;
    int tried = 0, ok = 0, rc;

    *claims = NULL;
    if (len == 0 || len > JWT_MAX_TOKEN || memchr(token, '\0', len) != NULL)
        return fail(JWT_MALFORMED, why, whylen, "malformed token");
    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot1 == NULL || dot2 == NULL ||
        memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return fail(JWT_MALFORMED, why, whylen, "malformed token");
    header = parse_part(token, (size_t)(dot1 - token));
    if (header == NULL)
        return fail(JWT_MALFORMED, why, whylen, "malformed token header");
    alg_name = json_get_string(header, "alg");
    if (alg_name == NULL || jwt_alg_parse(alg_name, &alg) < 0) {
        st = fail(JWT_BAD_ALG, why, whylen, "the token's alg is not accepted");
        goto out;
    }
    if (json_object_get(header, "crit") != NULL) {
        st = fail(JWT_BAD_ALG, why, whylen, "the token has critical extensions");
        goto out;
    }
    if (b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), &sig, &siglen) < 0) {
        st = fail(JWT_MALFORMED, why, whylen, "malformed token signature");
        goto out;
    }
    /* Only keys loaded for the header's algorithm are tried. */
    for (i = 0; i < v->nkeys && !ok; i++) {
        if (v->keys[i] == NULL || v->keys[i]->alg != alg)
            continue;
        tried = 1;
        ok = jwt_check(v->keys[i], token, (size_t)(dot2 - token), sig, siglen);
    }
    if (!tried) {
        if (whylen > 0)
            snprintf(why, whylen, "alg %s is not accepted", jwt_alg_name(alg));
        st = JWT_BAD_ALG;
        goto out;
    }
    if (!ok) {
        st = fail(JWT_BAD_SIGNATURE, why, whylen, "signature does not verify");
        goto out;
    }
    payload = parse_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (payload == NULL) {
        st = fail(JWT_MALFORMED, why, whylen, "malformed token payload");
        goto out;
    }
    rc = numeric_claim(payload, "exp", &t);
    if (rc <= 0) {
        st = fail(JWT_NO_EXP, why, whylen, "the token has no exp");
        goto out;
    }
    *exp = t;
    if (t + v->leeway <= v->now) {
        st = fail(JWT_EXPIRED, why, whylen, "token expired");
        goto out;
    }
    {
        int64_t nbf = 0, iat = 0;
        int has_nbf = numeric_claim(payload, "nbf", &nbf);
        if (has_nbf < 0 || numeric_claim(payload, "iat", &iat) < 0) {
            st = fail(JWT_BAD_CLAIM, why, whylen, "nbf and iat must be numbers");
            goto out;
        }
        if (has_nbf > 0 && nbf - v->leeway > v->now) {
            st = fail(JWT_NOT_YET, why, whylen, "token not valid yet");
            goto out;
        }
    }
    if (v->issuer != NULL) {
        const char *iss = json_get_string(payload, "iss");
        if (iss == NULL || strcmp(iss, v->issuer) != 0) {
            st = fail(JWT_BAD_CLAIM, why, whylen, "wrong issuer");
            goto out;
        }
    }
    if (v->audience != NULL) {
        const json_t *aud = json_object_get(payload, "aud");
        int found = 0;
        if (aud != NULL && aud->type == JSON_STRING)
            found = strcmp(aud->u.str.s, v->audience) == 0;
        for (i = 0; aud != NULL && aud->type == JSON_ARRAY && i < aud->u.arr.len; i++) {
            const json_t *a = aud->u.arr.items[i];
            if (a->type == JSON_STRING && strcmp(a->u.str.s, v->audience) == 0)
                found = 1;
        }
        if (!found) {
            st = fail(JWT_BAD_CLAIM, why, whylen, "wrong audience");
            goto out;
        }
    }
    *claims = payload;
    payload = NULL;
    st = JWT_OK;
out:
    json_free(header);
    json_free(payload);
    free(sig);
    return st;
}

char *jwt_sign(const jwt_key_t *k, const json_t *claims, char *err, size_t errlen)
{
    char header[64], *h64 = NULL, *p64 = NULL, *s64 = NULL, *out = NULL, *payload = NULL;
    unsigned char *sig = NULL;
    size_t plen = 0, siglen = 0, n;

    if (!jwt_key_can_sign(k) || claims == NULL || claims->type != JSON_OBJECT) {
        set_err(err, errlen,
                k != NULL && !k->can_sign ? "the key holds no private key"
                                          : "claims must be an object");
        return NULL;
    }
    snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", jwt_alg_name(k->alg));
    payload = json_dump(claims, &plen);
    h64 = b64url_encode((const unsigned char *)header, strlen(header));
    p64 = payload ? b64url_encode((const unsigned char *)payload, plen) : NULL;
    if (h64 == NULL || p64 == NULL)
        goto nomem;
    n = strlen(h64) + 1 + strlen(p64);
    out = malloc(n + 1 + 4 * 512 / 3 + 4);
    if (out == NULL)
        goto nomem;
    snprintf(out, n + 1, "%s.%s", h64, p64);
    sig = jwt_make(k, out, n, &siglen);
    if (sig == NULL || siglen > 512) {
        set_err(err, errlen, "signing failed");
        free(out);
        out = NULL;
        goto done;
    }
    s64 = b64url_encode(sig, siglen);
    if (s64 == NULL)
        goto nomem;
    out[n] = '.';
    memcpy(out + n + 1, s64, strlen(s64) + 1);
    goto done;
nomem:
    set_err(err, errlen, "out of memory");
    free(out);
    out = NULL;
done:
    free(h64);
    free(p64);
    free(s64);
    free(sig);
    free(payload);
    return out;
}
