/* tls: dnoded.conf's TLS keys made into an OpenSSL server context. */
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509err.h>

#include "log.h"

/* A peer that closes without close_notify has ended, not failed (browsers
 * and Node often do); OpenSSL 3 reports it as an error unless told. */
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
#define TLS_IGNORE_EOF SSL_OP_IGNORE_UNEXPECTED_EOF
#else
#define TLS_IGNORE_EOF 0
#endif

struct tls {
    SSL_CTX *ctx;
    char about[256];
    char warning[160]; /* the certificate expires soon or has expired, or "" */
};

/* Warned about at start, on reload and by -t when fewer days are left. */
#define TLS_EXPIRY_WARN_DAYS 14

/* err gets what, then OpenSSL's most recent reason (its queue is emptied). */
static void tls_error(char *err, size_t errlen, const char *what, const char *path)
{
    unsigned long e = ERR_peek_last_error();
    char why[200] = "";

    if (e != 0)
        ERR_error_string_n(e, why, sizeof(why));
    ERR_clear_error();
    snprintf(err, errlen, "%s%s%s%s%s", what, path ? " " : "", path ? path : "", why[0] ? ": " : "",
             why);
}

static int tls_version(const char *name)
{
    return strcmp(name, "TLSv1.3") == 0 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

/* Protocol bounds from tls_protocols: the lowest and highest named (a gap
 * cannot be expressed, and with two versions there is none). */
static int tls_set_versions(SSL_CTX *ctx, const config_t *cfg)
{
    int lo = 0, hi = 0;
    size_t i;

    for (i = 0; i < cfg->ntls_protocols; i++) {
        int v = tls_version(cfg->tls_protocols[i]);
        if (lo == 0 || v < lo)
            lo = v;
        if (v > hi)
            hi = v;
    }
    if (lo == 0)
        lo = TLS1_2_VERSION, hi = TLS1_3_VERSION;
    return SSL_CTX_set_min_proto_version(ctx, lo) == 1 &&
                   SSL_CTX_set_max_proto_version(ctx, hi) == 1
               ? 0
               : -1;
}

static void tls_note_certificate(tls_t *t)
{
    X509 *x = SSL_CTX_get0_certificate(t->ctx);
    char subject[160] = "?", until[64] = "?";
    BIO *b;

    if (x == NULL)
        return;
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
    b = BIO_new(BIO_s_mem());
    if (b != NULL && ASN1_TIME_print(b, X509_get0_notAfter(x)) == 1) {
        int n = BIO_read(b, until, sizeof(until) - 1);
        until[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    snprintf(t->about, sizeof(t->about), "certificate %s, valid until %s", subject, until);
    {
        int days = 0, secs = 0;

        if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) == 1) {
            if (days < 0 || (days == 0 && secs <= 0))
                snprintf(t->warning, sizeof(t->warning),
                         "the TLS certificate %s expired on %s: clients will refuse it", subject,
                         until);
            else if (days < TLS_EXPIRY_WARN_DAYS)
                snprintf(t->warning, sizeof(t->warning),
                         "the TLS certificate %s expires in %d day%s (%s)", subject, days,
                         days == 1 ? "" : "s", until);
        }
    }
}

/* OpenSSL asks for a passphrase (an encrypted key): none is given, and
 * *arg (an int) notes that it was asked. */
static int tls_no_passphrase(char *buf, int size, int rwflag, void *arg)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    if (arg != NULL)
        *(int *)arg = 1;
    return 0;
}

tls_t *tls_load(const config_t *cfg, int needed, char *err, size_t errlen)
{
    const char *cert = cfg->tls_certificate, *key = cfg->tls_certificate_key;
    int have_cert = cert != NULL && cert[0] != '\0', have_key = key != NULL && key[0] != '\0';
    int asked_passphrase = 0;
    tls_t *t = calloc(1, sizeof(*t));

    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!have_cert && !have_key) {
        if (!needed)
            return t;
        snprintf(err, errlen, "listen_tls needs tls_certificate and tls_certificate_key");
        goto fail;
    }
    if (have_cert != have_key) {
        snprintf(err, errlen, "tls_certificate and tls_certificate_key go together (%s is empty)",
                 have_cert ? "tls_certificate_key" : "tls_certificate");
        goto fail;
    }
    ERR_clear_error();
    t->ctx = SSL_CTX_new(TLS_server_method());
    if (t->ctx == NULL) {
        tls_error(err, errlen, "cannot create a TLS context", NULL);
        goto fail;
    }
    if (tls_set_versions(t->ctx, cfg) < 0) {
        tls_error(err, errlen, "tls_protocols not supported by this OpenSSL", NULL);
        goto fail;
    }
    if (cfg->tls_ciphers != NULL && cfg->tls_ciphers[0] != '\0' &&
        SSL_CTX_set_cipher_list(t->ctx, cfg->tls_ciphers) != 1) {
        tls_error(err, errlen, "tls_ciphers names no usable cipher:", cfg->tls_ciphers);
        goto fail;
    }
    /* No renegotiation (a client could make us redo the costly half of a
     * handshake as often as it likes) and no compression (CRIME). The
     * server's order of ciphers wins. */
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                    SSL_OP_CIPHER_SERVER_PREFERENCE | TLS_IGNORE_EOF);
    /* Bytes written by reference may move between calls (libevent's
     * buffers): tell OpenSSL a retried write may come from elsewhere. */
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    /* Resumption by tickets only: their keys are made here, before the
     * workers fork, so a ticket from one worker resumes on any other of the
     * generation; a per-process session cache would not span workers and
     * would hold memory a handshake flood can fill. */
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
    /* Never a passphrase prompt: OpenSSL's default reads one from the
     * terminal, which would stop the master in a reload. An encrypted key
     * is refused instead. */
    SSL_CTX_set_default_passwd_cb(t->ctx, tls_no_passphrase);
    SSL_CTX_set_default_passwd_cb_userdata(t->ctx, &asked_passphrase);
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cert) != 1) {
        tls_error(err, errlen, "tls_certificate", cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, key, SSL_FILETYPE_PEM) != 1) {
        int mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;

        tls_error(err, errlen,
                  mismatch           ? "tls_certificate_key does not match tls_certificate:"
                  : asked_passphrase ? "tls_certificate_key is encrypted (dnoded needs it "
                                       "unencrypted, readable by root only):"
                                     : "tls_certificate_key",
                  key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(t->ctx) != 1) {
        tls_error(err, errlen, "tls_certificate_key does not match tls_certificate:", key);
        goto fail;
    }
    SSL_CTX_set_default_passwd_cb_userdata(t->ctx, NULL); /* asked_passphrase is local */
    tls_note_certificate(t);
    return t;
fail:
    tls_free(t);
    return NULL;
}

void tls_free(tls_t *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

struct ssl_ctx_st *tls_ctx(const tls_t *t) { return t != NULL ? t->ctx : NULL; }

void tls_log_loaded(const tls_t *t)
{
    if (t == NULL || t->ctx == NULL)
        return;
    log_info("TLS: %s", t->about);
    if (t->warning[0] != '\0')
        log_warning("%s", t->warning);
}

const char *tls_warning(const tls_t *t) { return t != NULL && t->warning[0] ? t->warning : NULL; }
