/* fuzz_tls: libFuzzer target for a TLS listener's connections. Each input
 * is one connection accepted the way transport accepts one on listen_tls
 * (conn_open_accepted over a real socket, the context from tls_load), on
 * the worker of fuzz_conn.h, with the client on the other end of a
 * socketpair.
 *
 * Input: byte 0 chooses. Bit 0 clear: the rest is written raw, in
 * fragments (bytes 1-2 seed their sizes): ClientHellos, alerts and records
 * as an attacker crafts them, for the server's side of the handshake.
 * Bit 0 set: a real client (OpenSSL, TLS 1.3, or 1.2 with bit 1) finishes a
 * handshake, then sends the rest as plaintext in fragments: the record
 * path carrying HTTP, WebSocket or DNode to the sniffing and framing above
 * it; with bit 2, the last eighth of it goes raw after the records instead
 * (a forged or cut record mid-session). Checks: the real client's
 * handshake always succeeds, and the connection is gone from the worker
 * once it ends. */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "conn_open.h"
#include "fuzz_conn.h"
#include "tls.h"

static tls_t *fuzz_tls;
static SSL_CTX *fuzz_client[2]; /* TLS 1.3, TLS 1.2 */
static char fuzz_cert[96], fuzz_key[96];

static void fuzz_tls_cleanup(void)
{
    unlink(fuzz_cert);
    unlink(fuzz_key);
    tls_free(fuzz_tls);
    SSL_CTX_free(fuzz_client[0]);
    SSL_CTX_free(fuzz_client[1]);
}

/* A self-signed P-256 certificate for localhost, written beside the
 * docroot. */
static void fuzz_make_certificate(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    FILE *f;

    if (k == NULL || x == NULL)
        abort();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
    X509_set_pubkey(x, k);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    if (X509_sign(x, k, EVP_sha256()) <= 0)
        abort();
    snprintf(fuzz_cert, sizeof(fuzz_cert), "%s.cert.pem", fuzz_docroot);
    snprintf(fuzz_key, sizeof(fuzz_key), "%s.key.pem", fuzz_docroot);
    f = fopen(fuzz_cert, "w");
    if (f == NULL || PEM_write_X509(f, x) != 1 || fclose(f) != 0)
        abort();
    f = fopen(fuzz_key, "w");
    if (f == NULL || PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) != 1 || fclose(f) != 0)
        abort();
    X509_free(x);
    EVP_PKEY_free(k);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    int i;

    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN); /* as dnoded does: a peer gone is an error, not a signal */
    fuzz_conn_init();
    fuzz_make_certificate();
    free(fuzz_cfg->tls_certificate);
    free(fuzz_cfg->tls_certificate_key);
    fuzz_cfg->tls_certificate = strdup(fuzz_cert);
    fuzz_cfg->tls_certificate_key = strdup(fuzz_key);
    fuzz_tls = tls_load(fuzz_cfg, 1, err, sizeof(err));
    if (fuzz_tls == NULL) {
        fprintf(stderr, "fuzz_tls: %s\n", err);
        abort();
    }
    fuzz_w.conns.tls_ctx = tls_ctx(fuzz_tls);
    for (i = 0; i < 2; i++) {
        /* The client checks the server against its own certificate. */
        fuzz_client[i] = SSL_CTX_new(TLS_client_method());
        if (fuzz_client[i] == NULL ||
            SSL_CTX_load_verify_locations(fuzz_client[i], fuzz_cert, NULL) != 1 ||
            SSL_CTX_set_max_proto_version(fuzz_client[i],
                                          i == 0 ? TLS1_3_VERSION : TLS1_2_VERSION) != 1)
            abort();
        SSL_CTX_set_verify(fuzz_client[i], SSL_VERIFY_PEER, NULL);
    }
    atexit(fuzz_tls_cleanup);
    return 0;
}

static void pump(void)
{
    int i;

    for (i = 0; i < 4; i++)
        if (event_base_loop(fuzz_w.base, EVLOOP_NONBLOCK) < 0)
            abort();
}

/* Whatever the server wrote, read and dropped (the raw client). */
static void drain(int fd)
{
    char buf[4096];

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

/* Write len raw bytes in fragments; stops when the server has closed. */
static void send_raw(conn_t *s, int fd, const uint8_t *data, size_t len, uint32_t seed)
{
    size_t off = 0, n;
    int stuck = 0;

    while (off < len && !s->closing && stuck < 64) {
        ssize_t w;

        seed = seed * 1103515245u + 12345u;
        n = 1 + (seed >> 16) % 256;
        if (n > len - off)
            n = len - off;
        w = write(fd, data + off, n);
        if (w > 0)
            off += (size_t)w, stuck = 0;
        else if (w < 0 && errno != EAGAIN)
            break;
        else
            stuck++;
        pump();
        drain(fd);
    }
}

/* One step of an SSL call on the client: 1 done, 0 again after a pump,
 * -1 failed. */
static int client_step(SSL *cl, int rc)
{
    int e;

    if (rc > 0)
        return 1;
    e = SSL_get_error(cl, rc);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/* Read what the server sent over the session (and drop it). */
static void client_read(SSL *cl)
{
    char buf[4096];

    while (SSL_read(cl, buf, sizeof(buf)) > 0)
        ;
}

static void send_tls(conn_t *s, int fd, const uint8_t *data, size_t len, int flags,
                     uint32_t seed)
{
    SSL *cl = SSL_new(fuzz_client[(flags & 2) ? 1 : 0]);
    size_t raw = (flags & 4) ? len / 8 : 0, off = 0, n;
    int i, rc = 0;

    if (cl == NULL || SSL_set_fd(cl, fd) != 1 || SSL_set_tlsext_host_name(cl, "localhost") != 1)
        abort();
    for (i = 0; i < 64 && (rc = client_step(cl, SSL_connect(cl))) == 0; i++)
        pump();
    if (rc != 1 || s->closing)
        abort(); /* a well-behaved client must always get through */
    while (off < len - raw && !s->closing) {
        seed = seed * 1103515245u + 12345u;
        n = 1 + (seed >> 16) % 512;
        if (n > len - raw - off)
            n = len - raw - off;
        for (i = 0; i < 64 && (rc = client_step(cl, SSL_write(cl, data + off, (int)n))) == 0; i++) {
            pump();
            client_read(cl);
        }
        if (rc != 1)
            break;
        off += n;
        pump();
        client_read(cl);
    }
    if (raw > 0)
        send_raw(s, fd, data + len - raw, raw, seed);
    SSL_free(cl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    conn_t *s;

    if (size < 3)
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    s = conn_open_accepted(&fuzz_w.conns, sv[0], "fuzz", 1);
    if (s == NULL)
        abort();
    conn_ref(s);
    pump();
    if (data[0] & 1)
        send_tls(s, sv[1], data + 3, size - 3, data[0], (uint32_t)data[1] << 8 | data[2]);
    else
        send_raw(s, sv[1], data + 3, size - 3, (uint32_t)data[1] << 8 | data[2]);
    close(sv[1]);
    pump();
    if (!s->closing)
        conn_close(s, CONN_CLOSE_CLIENT, "fuzz: end of input");
    pump();
    conn_unref(s);
    if (fuzz_w.conns.conns != NULL || fuzz_w.conns.nconns != 0 || fuzz_w.conns.nclosing != 0)
        abort(); /* a connection outlived its end */
    return 0;
}
