/* tls: the TLS settings of dnoded.conf (listen_tls, tls_certificate,
 * tls_certificate_key, tls_protocols, tls_ciphers) made into one OpenSSL
 * server context. Loaded where the config is (master, dnoded -t, reload)
 * and shared read-only by the workers it forks, like the token keys; the
 * connections' TLS state is conn_open's and libevent's. */
#ifndef DNODED_TLS_H
#define DNODED_TLS_H

#include <stddef.h>

#include "config.h"

typedef struct tls tls_t;
struct ssl_ctx_st;

/* The context cfg describes. needed: a TLS listener exists (then a
 * certificate and key are required). NULL with a reason naming the file
 * or key in err; a tls_t without a context when nothing is configured. */
tls_t *tls_load(const config_t *cfg, int needed, char *err, size_t errlen);
void tls_free(tls_t *t);
/* The server context, or NULL when TLS is not configured. */
struct ssl_ctx_st *tls_ctx(const tls_t *t);
/* Log what was loaded: the certificate's subject and expiry (info), and
 * tls_warning's text when there is one (warning). Nothing without TLS. */
void tls_log_loaded(const tls_t *t);
/* What an operator should hear about the certificate (it expires within
 * 14 days, or has expired), or NULL. */
const char *tls_warning(const tls_t *t);

#endif
