/* config: the dnoded.conf table of keys (name, type, default, whether a
 * reload may change it), parsing `key = value` files into a config_t, and
 * nothing else: it does not open sockets or files named by the keys. */
#ifndef DNODED_CONFIG_H
#define DNODED_CONFIG_H

#include <stddef.h>

typedef struct config {
    char *path;        /* the file it came from (absolute), or NULL */
    char **listen;     /* "host:port" entries, at least one */
    size_t nlisten;
    char **listen_tls; /* "host:port" entries served over TLS; may be empty */
    size_t nlisten_tls;
    char *tls_certificate;     /* PEM chain file; "" = none */
    char *tls_certificate_key; /* PEM private key file; "" = none */
    char **tls_protocols;      /* "TLSv1.2", "TLSv1.3" */
    size_t ntls_protocols;
    char *tls_ciphers;         /* OpenSSL cipher list for TLS 1.2; "" = OpenSSL's default */
    int workers;       /* 0 = auto (one per CPU) */
    char *models;      /* absolute; default models.json beside the config */
    char *mongodb_uri;
    char *redis_url;   /* "" = single-host mode */
    char *redis_prefix; /* default "dnoded:" */
    char *docroot;
    char *pidfile;     /* "" = none */
    int log_level;     /* LOG_LEVEL_* of log.h */
    char *log_file;    /* "" = stderr */
    char *user, *group; /* "" = keep */
    char **allowed_origins; /* WebSocket Origin allowlist; empty = same host only */
    size_t nallowed_origins;
    char **server_names;    /* hosts the server answers to (same-origin WebSockets) */
    size_t nserver_names;
    char **metrics_allow;   /* who may read /metrics: addresses and ranges */
    size_t nmetrics_allow;
    size_t max_message_size;
    size_t max_output_buffer;
    size_t output_soft_limit;      /* output over this for output_soft_seconds */
    int output_soft_seconds;       /* disconnects a session as too slow */
    size_t max_read_limit;
    size_t max_reply_bytes;        /* a read's answer, as stored */
    size_t max_inflight_per_session; /* database operations; 0 = no limit */
    size_t max_connections;        /* per worker */
    size_t max_connections_per_ip; /* per worker and peer address; 0 = no limit */
    size_t max_connection_rate_per_ip; /* new ones a second, per worker and address; 0 = none */
    char **connection_limit_exempt; /* addresses max_connections_per_ip spares */
    size_t nconnection_limit_exempt;
    int tcp_keepalive;             /* idle seconds before keepalive probes; 0 = off */
    int ws_ping_interval;          /* seconds of WebSocket silence before a ping; 0 = off */
    int http_header_timeout;       /* seconds for an HTTP request to arrive whole */
    int line_timeout;              /* seconds for a started DNode message to end */
    size_t max_subscriptions;      /* per session */
    size_t history_size;           /* changes kept per channel for recovery (0: none) */
    int history_ttl;               /* seconds a change stays in a channel's history */
    size_t max_callbacks;          /* per session, remote callbacks held */
    size_t max_invalid_messages;   /* per session and minute; 0 = no limit */
    size_t max_json_depth;
    int shutdown_timeout;          /* seconds */
    int db_threads;
    int db_timeout_ms;
    int db_max_time_ms;
    int idempotency_window; /* seconds a write's answer is kept for retries
                             * of its requestId; 0 = off */
    /* Identity (auth.h): token keys and how sessions authenticate. */
    char *auth_key;              /* file of the current key; "" = no tokens */
    char *auth_key_alg;          /* HS256, RS256 or ES256 */
    char *auth_previous_key;     /* file of the key being rotated out; "" = none */
    char *auth_previous_key_alg; /* its alg; "" = auth_key_alg */
    char *auth_audience;         /* aud a token must name; "" = not checked */
    char *auth_issuer;           /* iss a token must have; "" = not checked */
    int auth_leeway;             /* seconds of clock skew allowed on exp and nbf */
    char *auth_anonymous;        /* allow | deny */
    int auth_timeout;            /* deny: seconds a session has to authenticate */
    int auth_expiry_notice;      /* seconds before exp a session is told authExpiring */
    int auth_grace;              /* seconds after exp before a session is closed */
    int auth_revocation_ttl;     /* seconds a revocation (dnoded -r) is kept in Redis */
} config_t;

/* Defaults for every key (models resolved against base_dir, which may be
 * NULL for the current directory). NULL on allocation failure. */
config_t *config_new_defaults(const char *base_dir);

/* Read and check a file. Errors (missing file, unknown key, bad value, a
 * repeated non-repeatable key) return NULL with "FILE:LINE: reason" in err. */
config_t *config_load(const char *path, char *err, size_t errlen);
/* Same from memory; path is used in messages and to resolve relative paths. */
config_t *config_parse(const char *text, size_t len, const char *path, char *err,
                       size_t errlen);
void config_free(config_t *cfg);

/* The table itself, for documentation checks and `dnoded -t` output. */
typedef struct config_key_info {
    const char *name;
    const char *default_text; /* as documented */
    int reloadable;           /* 1 when HUP applies a new value */
    int repeatable;           /* 1 when lines add to a list instead of clashing */
} config_key_info_t;
size_t config_key_count(void);
const config_key_info_t *config_key_at(size_t i); /* NULL when i is out of range */

/* The effective value of key i in cfg as text ("auto" for workers = 0, list
 * entries joined by one space): malloc'd, NULL on allocation failure or a
 * bad index. */
char *config_value_text(const config_t *cfg, size_t i);

/* Names of keys whose values differ between a and b and that a reload cannot
 * apply (listen, workers, user, group, pidfile): returns a malloc'd list
 * such as "listen, workers", or NULL when there is none (or, as far as
 * it got, when memory runs out). */
char *config_nonreloadable_changes(const config_t *a, const config_t *b);

#endif
