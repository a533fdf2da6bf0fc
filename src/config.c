/* config: the table of dnoded.conf keys and the parser that turns a file into
 * a config_t: defaults, value checks, relative paths resolved against the
 * file's directory. The table drives everything (parsing, defaults, freeing,
 * reload checks, documentation). Nothing here opens what the keys name. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"

#include "log.h"

#ifdef DNODED_DATADIR
#define CONFIG_DEFAULT_DOCROOT DNODED_DATADIR "/browser"
#else
#define CONFIG_DEFAULT_DOCROOT "browser"
#endif

#define CONFIG_MAX_FILE (1024 * 1024) /* a config file is a few KiB; refuse junk */
#define CONFIG_MSG_VALUE 80           /* bytes of an offending value quoted in errors */

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)

typedef enum {
    KT_STRING,   /* char *, optionally checked */
    KT_PATH,     /* char *; a relative path from the file is resolved, "" kept */
    KT_INT,      /* int in [min, max] */
    KT_COUNT,    /* size_t in [min, max], digits only */
    KT_SIZE,     /* size_t in [min, max], with k/m/g suffixes (powers of 1024) */
    KT_WORKERS,  /* int: "auto" (0) or [min, max] */
    KT_LOGLEVEL, /* int, LOG_LEVEL_* */
    KT_LIST,     /* char ** at off, size_t count at count_off; words are appended */
} key_type_t;

enum {
    KF_RELOAD = 1 << 0,          /* a reload applies a new value */
    KF_REPEAT = 1 << 1,          /* lists: more lines add entries */
    KF_EMPTY = 1 << 2,           /* "" is a valid value */
    KF_RESOLVE_DEFAULT = 1 << 3, /* the default path is relative to the config too */
    KF_UNIQUE = 1 << 4,          /* lists: an entry given twice is an error */
    KF_SECRET = 1 << 5,          /* may hold a password: never echoed in an error */
};

/* Checks one value (a whole string, or one word of a list): 0 if valid. */
typedef int (*check_fn)(const char *value);

struct ckey {
    config_key_info_t info; /* what config_key_at shows */
    key_type_t type;
    unsigned flags;
    size_t off;       /* of the value in config_t */
    size_t count_off; /* lists only: of the entry count */
    const char *def;  /* default as a value; NULL = info.default_text */
    unsigned long long min, max;
    check_fn check;
    const char *expect; /* what a valid value looks like, for errors */
};

static int check_listen(const char *v);
static int check_mongodb_uri(const char *v);
static int check_redis_url(const char *v);
static int check_word(const char *v);
static int check_origin(const char *v);
static int check_range(const char *v);
static int check_server_name(const char *v);
static int check_alg(const char *v);
static int check_anonymous(const char *v);
static int check_tls_protocol(const char *v);
static int check_ciphers(const char *v);

#define OFF(field) offsetof(config_t, field)
/* The fields every key has; the public info mirrors two of the flags. */
#define KEY(name_, type_, flags_, field_, doc_)                                                    \
    .info = {name_, doc_, ((flags_)&KF_RELOAD) != 0, ((flags_)&KF_REPEAT) != 0}, .type = type_,    \
    .flags = flags_, .off = OFF(field_)

/* Every key of dnoded.conf. etc/dnoded.conf and dnoded.conf(5) document
 * each one (tests/unit/check_config.c and check_docs.c check). */
static const struct ckey config_keys[] = {
    {KEY("listen", KT_LIST, KF_REPEAT | KF_UNIQUE, listen, "127.0.0.1:8080"),
     .count_off = OFF(nlisten), .check = check_listen,
     .expect = "host:port or [ipv6]:port, port from 1 to 65535"},
    {KEY("listen_tls", KT_LIST, KF_REPEAT | KF_UNIQUE | KF_EMPTY, listen_tls, ""),
     .count_off = OFF(nlisten_tls), .check = check_listen,
     .expect = "host:port or [ipv6]:port, port from 1 to 65535"},
    {KEY("tls_certificate", KT_PATH, KF_RELOAD | KF_EMPTY, tls_certificate, ""),
     .expect = "empty or a PEM certificate (chain) file path"},
    {KEY("tls_certificate_key", KT_PATH, KF_RELOAD | KF_EMPTY, tls_certificate_key, ""),
     .expect = "empty or a PEM private key file path"},
    {KEY("tls_protocols", KT_LIST, KF_RELOAD, tls_protocols, "TLSv1.2 TLSv1.3"),
     .count_off = OFF(ntls_protocols), .check = check_tls_protocol,
     .expect = "TLSv1.2 and/or TLSv1.3"},
    {KEY("tls_ciphers", KT_STRING, KF_RELOAD | KF_EMPTY, tls_ciphers, ""), .check = check_ciphers,
     .expect = "empty or an OpenSSL cipher list such as ECDHE+AESGCM:ECDHE+CHACHA20"},
    {KEY("workers", KT_WORKERS, 0, workers, "auto"), .min = 1, .max = 1024,
     .expect = "auto or a number from 1 to 1024"},
    {KEY("models", KT_PATH, KF_RELOAD | KF_RESOLVE_DEFAULT, models,
         "models.json beside the config file"),
     .def = "models.json", .expect = "a file path"},
    {KEY("mongodb_uri", KT_STRING, KF_RELOAD, mongodb_uri, "mongodb://127.0.0.1:27017/dnoded"),
     .check = check_mongodb_uri, .expect = "a URI starting with mongodb:// or mongodb+srv://"},
    {KEY("redis_url", KT_STRING, KF_RELOAD | KF_EMPTY | KF_SECRET, redis_url, ""),
     .check = check_redis_url, .expect = "empty or redis://[[user]:password@]host:port[/db]"},
    {KEY("docroot", KT_PATH, KF_RELOAD, docroot, CONFIG_DEFAULT_DOCROOT),
     .expect = "a directory path"},
    {KEY("pidfile", KT_PATH, KF_EMPTY, pidfile, ""), .expect = "empty or a file path"},
    {KEY("log_level", KT_LOGLEVEL, KF_RELOAD, log_level, "info"),
     .expect = "debug, info, warning or error"},
    {KEY("log_file", KT_PATH, KF_RELOAD | KF_EMPTY, log_file, ""),
     .expect = "empty (stderr) or a file path"},
    {KEY("max_message_size", KT_SIZE, KF_RELOAD, max_message_size, "1048576"), .min = KIB,
     .max = GIB, .expect = "a size such as 1m, from 1k to 1g"},
    {KEY("max_output_buffer", KT_SIZE, KF_RELOAD, max_output_buffer, "8388608"), .min = 4 * KIB,
     .max = 4 * GIB, .expect = "a size such as 8m, from 4k to 4g"},
    {KEY("max_read_limit", KT_COUNT, KF_RELOAD, max_read_limit, "1000"), .min = 1, .max = 1000000,
     .expect = "a number from 1 to 1000000"},
    {KEY("shutdown_timeout", KT_INT, KF_RELOAD, shutdown_timeout, "30"), .min = 1, .max = 86400,
     .expect = "a number of seconds from 1 to 86400"},
    {KEY("redis_prefix", KT_STRING, KF_RELOAD | KF_EMPTY, redis_prefix, "dnoded:"),
     .check = check_word, .expect = "a word without spaces"},
    {KEY("user", KT_STRING, KF_EMPTY, user, ""), .check = check_word,
     .expect = "empty or a user name or id"},
    {KEY("group", KT_STRING, KF_EMPTY, group, ""), .check = check_word,
     .expect = "empty or a group name or id"},
    {KEY("metrics_allow", KT_LIST, KF_RELOAD | KF_REPEAT | KF_EMPTY, metrics_allow,
         "127.0.0.0/8 ::1"),
     .count_off = OFF(nmetrics_allow), .check = check_range,
     .expect = "IP addresses or ranges such as 10.0.0.0/8 or fd00::/8"},
    {KEY("server_names", KT_LIST, KF_RELOAD | KF_REPEAT | KF_EMPTY, server_names, ""),
     .count_off = OFF(nserver_names), .check = check_server_name,
     .expect = "host names or addresses, without port"},
    {KEY("allowed_origins", KT_LIST, KF_RELOAD | KF_REPEAT | KF_EMPTY, allowed_origins, ""),
     .count_off = OFF(nallowed_origins), .check = check_origin,
     .expect = "origins such as https://example.com (lowercase, no path)"},
    {KEY("max_connections", KT_COUNT, KF_RELOAD, max_connections, "10000"), .min = 1,
     .max = 1000000, .expect = "a number from 1 to 1000000"},
    {KEY("max_inflight_per_session", KT_COUNT, KF_RELOAD, max_inflight_per_session, "16"), .min = 0,
     .max = 1000000, .expect = "a number from 0 (no limit) to 1000000"},
    {KEY("max_reply_bytes", KT_SIZE, KF_RELOAD, max_reply_bytes, "8388608"), .min = 4 * KIB,
     .max = 4 * GIB, .expect = "a size such as 8m, from 4k to 4g"},
    {KEY("max_connections_per_ip", KT_COUNT, KF_RELOAD, max_connections_per_ip, "256"), .min = 0,
     .max = 1000000, .expect = "a number from 0 (no limit) to 1000000"},
    {KEY("max_connection_rate_per_ip", KT_COUNT, KF_RELOAD, max_connection_rate_per_ip, "50"),
     .min = 0, .max = 1000000, .expect = "a number from 0 (no limit) to 1000000"},
    {KEY("connection_limit_exempt", KT_LIST, KF_RELOAD | KF_REPEAT | KF_EMPTY,
         connection_limit_exempt, "127.0.0.0/8 ::1"),
     .count_off = OFF(nconnection_limit_exempt), .check = check_range,
     .expect = "IP addresses or ranges such as 10.0.0.0/8 or fd00::/8"},
    {KEY("tcp_keepalive", KT_INT, KF_RELOAD, tcp_keepalive, "60"), .min = 0, .max = 7200,
     .expect = "a number of seconds from 0 (off) to 7200"},
    {KEY("http_header_timeout", KT_INT, KF_RELOAD, http_header_timeout, "10"), .min = 1,
     .max = 3600, .expect = "a number of seconds from 1 to 3600"},
    {KEY("line_timeout", KT_INT, KF_RELOAD, line_timeout, "30"), .min = 1, .max = 3600,
     .expect = "a number of seconds from 1 to 3600"},
    {KEY("ws_ping_interval", KT_INT, KF_RELOAD, ws_ping_interval, "30"), .min = 0, .max = 3600,
     .expect = "a number of seconds from 0 (off) to 3600"},
    {KEY("max_subscriptions", KT_COUNT, KF_RELOAD, max_subscriptions, "256"), .min = 1,
     .max = 1000000, .expect = "a number from 1 to 1000000"},
    {KEY("history_size", KT_COUNT, KF_RELOAD, history_size, "100"), .min = 0, .max = 100000,
     .expect = "a number from 0 (no history) to 100000"},
    {KEY("history_ttl", KT_INT, KF_RELOAD, history_ttl, "300"), .min = 1, .max = 2592000,
     .expect = "a number of seconds from 1 to 2592000"},
    {KEY("max_callbacks", KT_COUNT, KF_RELOAD, max_callbacks, "1024"), .min = 1, .max = 1000000,
     .expect = "a number from 1 to 1000000"},
    {KEY("max_invalid_messages", KT_COUNT, KF_RELOAD, max_invalid_messages, "100"), .min = 0,
     .max = 1000000, .expect = "a number from 0 (no limit) to 1000000"},
    {KEY("max_json_depth", KT_COUNT, KF_RELOAD, max_json_depth, "32"), .min = 4, .max = 256,
     .expect = "a number from 4 to 256"},
    {KEY("output_soft_limit", KT_SIZE, KF_RELOAD, output_soft_limit, "1048576"), .min = 4 * KIB,
     .max = 4 * GIB, .expect = "a size such as 1m, from 4k to 4g"},
    {KEY("output_soft_seconds", KT_INT, KF_RELOAD, output_soft_seconds, "10"), .min = 1,
     .max = 3600, .expect = "a number of seconds from 1 to 3600"},
    {KEY("db_threads", KT_INT, KF_RELOAD, db_threads, "4"), .min = 1, .max = 64,
     .expect = "a number from 1 to 64"},
    {KEY("db_timeout_ms", KT_INT, KF_RELOAD, db_timeout_ms, "5000"), .min = 1, .max = 3600000,
     .expect = "milliseconds from 1 to 3600000"},
    {KEY("db_max_time_ms", KT_INT, KF_RELOAD, db_max_time_ms, "10000"), .min = 1, .max = 3600000,
     .expect = "milliseconds from 1 to 3600000"},
    {KEY("idempotency_window", KT_INT, KF_RELOAD, idempotency_window, "600"), .min = 0,
     .max = 604800, .expect = "a number of seconds from 0 (off) to 604800"},
    {KEY("auth_key", KT_PATH, KF_RELOAD | KF_EMPTY, auth_key, ""),
     .expect = "empty (no tokens) or a key file path"},
    {KEY("auth_key_alg", KT_STRING, KF_RELOAD, auth_key_alg, "HS256"), .check = check_alg,
     .expect = "HS256, RS256 or ES256"},
    {KEY("auth_previous_key", KT_PATH, KF_RELOAD | KF_EMPTY, auth_previous_key, ""),
     .expect = "empty or a key file path"},
    {KEY("auth_previous_key_alg", KT_STRING, KF_RELOAD | KF_EMPTY, auth_previous_key_alg, ""),
     .check = check_alg, .expect = "empty (as auth_key_alg), HS256, RS256 or ES256"},
    {KEY("auth_audience", KT_STRING, KF_RELOAD | KF_EMPTY, auth_audience, ""), .check = check_word,
     .expect = "empty or a word without spaces"},
    {KEY("auth_issuer", KT_STRING, KF_RELOAD | KF_EMPTY, auth_issuer, ""), .check = check_word,
     .expect = "empty or a word without spaces"},
    {KEY("auth_leeway", KT_INT, KF_RELOAD, auth_leeway, "30"), .min = 0, .max = 600,
     .expect = "a number of seconds from 0 to 600"},
    {KEY("auth_anonymous", KT_STRING, KF_RELOAD, auth_anonymous, "allow"), .check = check_anonymous,
     .expect = "allow or deny"},
    {KEY("auth_timeout", KT_INT, KF_RELOAD, auth_timeout, "10"), .min = 1, .max = 3600,
     .expect = "a number of seconds from 1 to 3600"},
    {KEY("auth_expiry_notice", KT_INT, KF_RELOAD, auth_expiry_notice, "60"), .min = 0, .max = 86400,
     .expect = "a number of seconds from 0 (no notice) to 86400"},
    {KEY("auth_grace", KT_INT, KF_RELOAD, auth_grace, "30"), .min = 0, .max = 3600,
     .expect = "a number of seconds from 0 to 3600"},
    {KEY("auth_revocation_ttl", KT_INT, KF_RELOAD, auth_revocation_ttl, "86400"), .min = 60,
     .max = 31536000, .expect = "a number of seconds from 60 to 31536000"},
};

#define NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

typedef enum { SET_OK, SET_BAD, SET_DUP, SET_NOMEM } set_result_t;

/* ---------------------------------------------------------------- helpers */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    if (vsnprintf(err, errlen, fmt, ap) < 0)
        err[0] = '\0';
    va_end(ap);
}

/* A printable, bounded copy of untrusted text for an error message. */
static void quote_for_msg(char *dst, size_t dstlen, const char *s, size_t n)
{
    size_t i, j = 0;

    for (i = 0; i < n && j + 4 < dstlen; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (i < n && j + 3 < dstlen) {
        memcpy(dst + j, "...", 3);
        j += 3;
    }
    dst[j] = '\0';
}

static int is_space(char c) { return c == ' ' || c == '\t'; }

static int has_control(const char *s, int tab_ok)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && !(tab_ok && c == '\t')) || c == 0x7f)
            return 1;
    }
    return 0;
}

/* Digits only (no sign, no spaces); 0 on success, -1 on junk or overflow. */
static int parse_ull(const char *s, size_t n, unsigned long long *out)
{
    unsigned long long v = 0;
    size_t i;

    if (n == 0)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v > (ULLONG_MAX - (unsigned long long)(s[i] - '0')) / 10)
            return -1;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* "4096", "64k", "1M", "2g": powers of 1024. */
static int parse_size(const char *s, unsigned long long *out)
{
    size_t n = strlen(s);
    unsigned long long mult = 1, v;

    if (n > 0) {
        switch (s[n - 1]) {
        case 'k':
        case 'K':
            mult = KIB;
            break;
        case 'm':
        case 'M':
            mult = MIB;
            break;
        case 'g':
        case 'G':
            mult = GIB;
            break;
        default:
            break;
        }
    }
    if (mult != 1)
        n--;
    if (parse_ull(s, n, &v) < 0 || v > ULLONG_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

static char *path_join(const char *dir, const char *rel)
{
    char *out;

    while (rel[0] == '.' && rel[1] == '/')
        rel += 2;
    if (strcmp(rel, ".") == 0 || rel[0] == '\0')
        return strdup(dir);
    if (asprintf(&out, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", rel) < 0)
        return NULL;
    return out;
}

/* Absolute form of path (joined to the current directory, not resolved
 * through symlinks: the file may not exist yet). NULL with errno set. */
static char *path_absolute(const char *path)
{
    char cwd[PATH_MAX];

    if (path[0] == '/')
        return strdup(path);
    if (!getcwd(cwd, sizeof cwd))
        return NULL;
    return path_join(cwd, path);
}

/* The directory part of an absolute path. */
static char *path_dir(const char *abs)
{
    const char *slash = strrchr(abs, '/');
    size_t n = (size_t)(slash - abs);

    return n == 0 ? strdup("/") : strndup(abs, n);
}

/* -------------------------------------------------------------- validators */

static int check_port(const char *s)
{
    unsigned long long port;

    if (strlen(s) > 5 || parse_ull(s, strlen(s), &port) < 0)
        return -1;
    return port >= 1 && port <= 65535 ? 0 : -1;
}

static int check_hostname(const char *h)
{
    const char *p;
    int only_digits_dots = 1;
    struct in_addr a4;

    if (h[0] == '\0' || h[0] == '-' || h[0] == '.')
        return -1;
    for (p = h; *p; p++) {
        char c = *p;
        if (c >= '0' && c <= '9')
            continue;
        if (c == '.')
            continue;
        only_digits_dots = 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_'))
            return -1;
    }
    /* "1.2.3" is neither a host name nor an address: inet_pton decides. */
    if (only_digits_dots && inet_pton(AF_INET, h, &a4) != 1)
        return -1;
    return 0;
}

/* "host:port", "1.2.3.4:port" or "[v6]:port". Bare IPv6 is refused: its
 * last colon would be ambiguous. */
static int check_listen(const char *v)
{
    char host[256];
    const char *colon;
    size_t n;

    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        struct in6_addr a6;

        if (!close || close[1] != ':')
            return -1;
        n = (size_t)(close - v - 1);
        if (n == 0 || n >= sizeof host)
            return -1;
        memcpy(host, v + 1, n);
        host[n] = '\0';
        if (inet_pton(AF_INET6, host, &a6) != 1)
            return -1;
        return check_port(close + 2);
    }
    colon = strchr(v, ':');
    if (!colon || strchr(colon + 1, ':'))
        return -1;
    n = (size_t)(colon - v);
    if (n >= sizeof host)
        return -1;
    memcpy(host, v, n);
    host[n] = '\0';
    if (check_hostname(host) < 0)
        return -1;
    return check_port(colon + 1);
}

static int has_space(const char *s) { return strpbrk(s, " \t") != NULL; }

static int check_mongodb_uri(const char *v)
{
    size_t n;

    if (strncmp(v, "mongodb://", 10) == 0)
        n = 10;
    else if (strncmp(v, "mongodb+srv://", 14) == 0)
        n = 14;
    else
        return -1;
    return v[n] != '\0' && !has_space(v) ? 0 : -1;
}

/* redis://[[user]:password@]host[:port][/db] */
static int check_redis_url(const char *v)
{
    const char *host = v + 8, *at;

    if (v[0] == '\0')
        return 0;
    if (strncmp(v, "redis://", 8) != 0 || has_space(v))
        return -1;
    at = strrchr(host, '@');
    if (at != NULL) {
        const char *colon = memchr(host, ':', (size_t)(at - host));
        if (colon == NULL || colon + 1 == at) /* a password is required with credentials */
            return -1;
        host = at + 1;
    }
    return host[0] != '\0' && host[0] != '/' && host[0] != ':' ? 0 : -1;
}

static int check_word(const char *v) { return has_space(v) ? -1 : 0; }

static int check_alg(const char *v)
{
    return v[0] == '\0' || strcmp(v, "HS256") == 0 || strcmp(v, "RS256") == 0 ||
                   strcmp(v, "ES256") == 0
               ? 0
               : -1;
}

static int check_tls_protocol(const char *v)
{
    return strcmp(v, "TLSv1.2") == 0 || strcmp(v, "TLSv1.3") == 0 ? 0 : -1;
}

/* OpenSSL judges the list itself (tls_load); here only its alphabet. */
static int check_ciphers(const char *v)
{
    for (; *v != '\0'; v++)
        if (!((*v >= 'A' && *v <= 'Z') || (*v >= 'a' && *v <= 'z') || (*v >= '0' && *v <= '9') ||
              strchr("+-!:@=_.,", *v) != NULL))
            return -1;
    return 0;
}

static int check_anonymous(const char *v)
{
    return strcmp(v, "allow") == 0 || strcmp(v, "deny") == 0 ? 0 : -1;
}

/* Browsers send Origin as scheme://host[:port], lowercase, without a path;
 * anything else would never match, so it is refused here. */
/* A host name, an IPv4 address or a bracketed IPv6 one, as a Host header
 * names it without its port. */
static int check_server_name(const char *v)
{
    struct in6_addr a6;
    char host[64];
    size_t n = strlen(v);

    if (v[0] == '[') {
        if (n < 3 || n - 2 >= sizeof(host) || v[n - 1] != ']')
            return -1;
        memcpy(host, v + 1, n - 2);
        host[n - 2] = '\0';
        return inet_pton(AF_INET6, host, &a6) == 1 ? 0 : -1;
    }
    return check_hostname(v);
}

static int check_range(const char *v)
{
    addr_range_t r;

    return addr_range_parse(v, &r);
}

static int check_origin(const char *v)
{
    const char *p;

    if (strncmp(v, "https://", 8) == 0)
        p = v + 8;
    else if (strncmp(v, "http://", 7) == 0)
        p = v + 7;
    else
        return -1;
    if (*p == '\0')
        return -1;
    for (; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == ':' || c == '[' || c == ']'))
            return -1;
    }
    return 0;
}

/* --------------------------------------------------------- typed access */

static char **field_str(config_t *cfg, const struct ckey *k)
{
    return (char **)((char *)cfg + k->off);
}

static int *field_int(config_t *cfg, const struct ckey *k) { return (int *)((char *)cfg + k->off); }

static size_t *field_size(config_t *cfg, const struct ckey *k)
{
    return (size_t *)((char *)cfg + k->off);
}

static char ***field_list(config_t *cfg, const struct ckey *k)
{
    return (char ***)((char *)cfg + k->off);
}

static size_t *field_count(config_t *cfg, const struct ckey *k)
{
    return (size_t *)((char *)cfg + k->count_off);
}

static void list_clear(config_t *cfg, const struct ckey *k)
{
    char **items = *field_list(cfg, k);
    size_t i, n = *field_count(cfg, k);

    for (i = 0; i < n; i++)
        free(items[i]);
    free(items);
    *field_list(cfg, k) = NULL;
    *field_count(cfg, k) = 0;
}

/* Add the space-separated words of value to list k. Entries given twice
 * are dropped, or refused under KF_UNIQUE (a listen address given twice
 * would be bound twice with SO_REUSEPORT, silently). */
static set_result_t list_add(config_t *cfg, const struct ckey *k, const char *value)
{
    const char *p = value;

    for (;;) {
        char **items, *word;
        size_t n, i, len;

        while (is_space(*p))
            p++;
        if (*p == '\0')
            return SET_OK;
        len = strcspn(p, " \t");
        if (!(word = strndup(p, len)))
            return SET_NOMEM;
        p += len;
        if (k->check && k->check(word) < 0) {
            free(word);
            return SET_BAD;
        }
        n = *field_count(cfg, k);
        items = *field_list(cfg, k);
        for (i = 0; i < n; i++) {
            if (strcmp(items[i], word) == 0)
                break;
        }
        if (i < n) {
            free(word);
            if (k->flags & KF_UNIQUE)
                return SET_DUP;
            continue;
        }
        if (!(items = realloc(items, (n + 1) * sizeof *items))) {
            free(word);
            return SET_NOMEM;
        }
        items[n] = word;
        *field_list(cfg, k) = items;
        *field_count(cfg, k) = n + 1;
    }
}

static set_result_t number_in_range(const struct ckey *k, const char *value,
                                    unsigned long long *out)
{
    int rc = k->type == KT_SIZE ? parse_size(value, out) : parse_ull(value, strlen(value), out);

    if (rc < 0 || *out < k->min || *out > k->max)
        return SET_BAD;
    return SET_OK;
}

/* Store value into key k of cfg. base_dir resolves relative paths when not
 * NULL. Lists get the value's words appended. */
static set_result_t key_set(config_t *cfg, const struct ckey *k, const char *value,
                            const char *base_dir)
{
    unsigned long long n;
    char *copy;
    int level;

    if (value[0] == '\0' && !(k->flags & KF_EMPTY))
        return SET_BAD;
    if (has_control(value, k->type == KT_LIST))
        return SET_BAD;
    switch (k->type) {
    case KT_LIST:
        return list_add(cfg, k, value);
    case KT_STRING:
    case KT_PATH:
        if (k->check && k->check(value) < 0)
            return SET_BAD;
        if (k->type == KT_PATH && base_dir && value[0] != '/' && value[0] != '\0')
            copy = path_join(base_dir, value);
        else
            copy = strdup(value);
        if (!copy)
            return SET_NOMEM;
        free(*field_str(cfg, k));
        *field_str(cfg, k) = copy;
        return SET_OK;
    case KT_WORKERS:
        if (strcmp(value, "auto") == 0) {
            *field_int(cfg, k) = 0;
            return SET_OK;
        }
        /* fall through */
    case KT_INT:
        if (number_in_range(k, value, &n) != SET_OK)
            return SET_BAD;
        *field_int(cfg, k) = (int)n;
        return SET_OK;
    case KT_COUNT:
    case KT_SIZE:
        if (number_in_range(k, value, &n) != SET_OK || n > SIZE_MAX)
            return SET_BAD;
        *field_size(cfg, k) = (size_t)n;
        return SET_OK;
    case KT_LOGLEVEL:
        if ((level = log_level_parse(value)) < 0)
            return SET_BAD;
        *field_int(cfg, k) = level;
        return SET_OK;
    }
    return SET_BAD;
}

static const struct ckey *key_find(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < NKEYS; i++) {
        if (strlen(config_keys[i].info.name) == len &&
            memcmp(config_keys[i].info.name, name, len) == 0)
            return &config_keys[i];
    }
    return NULL;
}

/* ------------------------------------------------------------ public API */

config_t *config_new_defaults(const char *base_dir)
{
    config_t *cfg = calloc(1, sizeof *cfg);
    char *cwd = NULL;
    size_t i;

    if (!cfg)
        return NULL;
    if (!base_dir) {
        /* Without a directory the defaults stay relative to wherever we are. */
        cwd = path_absolute(".");
        base_dir = cwd;
    }
    for (i = 0; i < NKEYS; i++) {
        const struct ckey *k = &config_keys[i];
        const char *def = k->def ? k->def : k->info.default_text;

        if (key_set(cfg, k, def, (k->flags & KF_RESOLVE_DEFAULT) ? base_dir : NULL) != SET_OK)
            goto fail; /* the table's defaults are valid: only memory runs out */
    }
    free(cwd);
    return cfg;
fail:
    free(cwd);
    config_free(cfg);
    return NULL;
}

void config_free(config_t *cfg)
{
    size_t i;

    if (!cfg)
        return;
    for (i = 0; i < NKEYS; i++) {
        const struct ckey *k = &config_keys[i];

        if (k->type == KT_LIST)
            list_clear(cfg, k);
        else if (k->type == KT_STRING || k->type == KT_PATH)
            free(*field_str(cfg, k));
    }
    free(cfg->path);
    free(cfg);
}

/* One value after '=' and its blanks: either "quoted" (only \" and \\ are
 * escapes) or bare, where a '#' that begins the value or follows a space or
 * tab starts a comment, and trailing blanks are dropped. Writes the value
 * into out (at least end - p + 1 bytes). Returns NULL, or the reason the
 * line is wrong. */
static const char *value_unquote(const char *p, const char *end, char *out)
{
    if (p < end && *p == '"') {
        for (p++; p < end && *p != '"'; p++) {
            if (*p == '\\' && p + 1 < end && (p[1] == '"' || p[1] == '\\'))
                p++;
            *out++ = *p;
        }
        if (p == end)
            return "missing closing quote";
        for (p++; p < end && is_space(*p); p++)
            ;
        if (p < end && *p != '#')
            return "unexpected text after the closing quote";
        *out = '\0';
        return NULL;
    } else {
        const char *start = p, *stop = end;

        for (; p < end; p++) {
            if (*p == '#' && (p == start || is_space(p[-1]))) {
                stop = p;
                break;
            }
        }
        while (stop > start && is_space(stop[-1]))
            stop--;
        memcpy(out, start, (size_t)(stop - start));
        out[stop - start] = '\0';
        return NULL;
    }
}

config_t *config_parse(const char *text, size_t len, const char *path, char *err, size_t errlen)
{
    unsigned seen[NKEYS] = {0}; /* line where each key was first set */
    const char *name = path ? path : "(config)";
    const char *p = text, *end = text + len, *nul;
    char *abs = NULL, *dir = NULL, *value = NULL;
    char quoted[CONFIG_MSG_VALUE + 4];
    config_t *cfg = NULL;
    unsigned line = 0;

    abs = path_absolute(path ? path : "dnoded.conf");
    if (!abs || !(dir = path_dir(abs))) {
        set_err(err, errlen, "%s: cannot resolve the config's directory: %s", name,
                strerror(errno));
        goto fail;
    }
    if (!(cfg = config_new_defaults(dir)))
        goto nomem;
    if (path) {
        cfg->path = abs;
        abs = NULL;
    }
    if ((nul = memchr(text, '\0', len))) {
        for (p = text, line = 1; p < nul; p++)
            line += *p == '\n';
        set_err(err, errlen, "%s:%u: NUL byte in line", name, line);
        goto fail;
    }
    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3; /* a UTF-8 byte order mark some editors write */

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *lend = eol ? eol : end, *key, *why;
        const struct ckey *k;
        size_t keylen;
        set_result_t rc;

        line++;
        if (lend > p && lend[-1] == '\r')
            lend--;
        while (p < lend && is_space(*p))
            p++;
        if (p == lend || *p == '#')
            goto next;

        key = p;
        while (p < lend && !is_space(*p) && *p != '=')
            p++;
        keylen = (size_t)(p - key);
        while (p < lend && is_space(*p))
            p++;
        if (keylen == 0 || p == lend || *p != '=') {
            quote_for_msg(quoted, sizeof quoted, key, (size_t)(lend - key));
            set_err(err, errlen, "%s:%u: expected 'key = value', got '%s'", name, line, quoted);
            goto fail;
        }
        if (!(k = key_find(key, keylen))) {
            quote_for_msg(quoted, sizeof quoted, key, keylen);
            set_err(err, errlen, "%s:%u: unknown key '%s'", name, line, quoted);
            goto fail;
        }
        for (p++; p < lend && is_space(*p); p++)
            ;
        free(value);
        if (!(value = malloc((size_t)(lend - p) + 1)))
            goto nomem;
        if ((why = value_unquote(p, lend, value))) {
            set_err(err, errlen, "%s:%u: %s", name, line, why);
            goto fail;
        }

        if (seen[k - config_keys]) {
            if (!(k->flags & KF_REPEAT)) {
                set_err(err, errlen, "%s:%u: duplicate key '%s' (first set on line %u)", name, line,
                        k->info.name, seen[k - config_keys]);
                goto fail;
            }
        } else {
            seen[k - config_keys] = line;
            if (k->type == KT_LIST)
                list_clear(cfg, k); /* the file's entries replace the default */
        }
        rc = key_set(cfg, k, value, dir);
        if (rc == SET_NOMEM)
            goto nomem;
        if (rc == SET_DUP) {
            quote_for_msg(quoted, sizeof quoted, value, strlen(value));
            set_err(err, errlen, "%s:%u: %s '%s' repeats an entry given before", name, line,
                    k->info.name, quoted);
            goto fail;
        }
        if (rc == SET_BAD) {
            if (k->flags & KF_SECRET)
                snprintf(quoted, sizeof quoted, "(not shown: it may hold a password)");
            else
                quote_for_msg(quoted, sizeof quoted, value, strlen(value));
            set_err(err, errlen, "%s:%u: bad value for %s: '%s' (expected %s)", name, line,
                    k->info.name, quoted, k->expect);
            goto fail;
        }
    next:
        p = eol ? eol + 1 : end;
    }
    free(value);
    free(dir);
    free(abs);
    return cfg;
nomem:
    set_err(err, errlen, "%s: out of memory", name);
fail:
    free(value);
    free(dir);
    free(abs);
    config_free(cfg);
    return NULL;
}

config_t *config_load(const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    config_t *cfg;
    int fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (!(buf = malloc(CONFIG_MAX_FILE + 1))) {
        set_err(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, CONFIG_MAX_FILE + 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            set_err(err, errlen, "cannot read %s: %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > CONFIG_MAX_FILE) {
            set_err(err, errlen, "%s: larger than %d bytes, not a config file", path,
                    CONFIG_MAX_FILE);
            goto fail;
        }
    }
    close(fd);
    cfg = config_parse(buf, len, path, err, errlen);
    free(buf);
    return cfg;
fail:
    close(fd);
    free(buf);
    return NULL;
}

size_t config_key_count(void) { return NKEYS; }

const config_key_info_t *config_key_at(size_t i) { return i < NKEYS ? &config_keys[i].info : NULL; }

char *config_value_text(const config_t *cfg, size_t i)
{
    const struct ckey *k;
    config_t *c = (config_t *)cfg; /* the field accessors only read here */
    char *out = NULL;
    int rc = 0;

    if (i >= NKEYS)
        return NULL;
    k = &config_keys[i];
    switch (k->type) {
    case KT_STRING:
    case KT_PATH:
        return strdup(*field_str(c, k));
    case KT_WORKERS:
        if (*field_int(c, k) == 0)
            return strdup("auto");
        /* fall through */
    case KT_INT:
        rc = asprintf(&out, "%d", *field_int(c, k));
        break;
    case KT_COUNT:
    case KT_SIZE:
        rc = asprintf(&out, "%zu", *field_size(c, k));
        break;
    case KT_LOGLEVEL:
        return strdup(log_level_name(*field_int(c, k)));
    case KT_LIST: {
        char **items = *field_list(c, k);
        size_t j, n = *field_count(c, k), total = 1;

        for (j = 0; j < n; j++)
            total += strlen(items[j]) + 1;
        if (!(out = malloc(total)))
            return NULL;
        out[0] = '\0';
        for (j = 0; j < n; j++) {
            if (j > 0)
                strcat(out, " ");
            strcat(out, items[j]);
        }
        return out;
    }
    }
    return rc < 0 ? NULL : out;
}

char *config_nonreloadable_changes(const config_t *a, const config_t *b)
{
    char *list = NULL;
    size_t i, len = 0;

    for (i = 0; i < NKEYS; i++) {
        const char *name = config_keys[i].info.name;
        char *va, *vb, *grown;
        int same;

        if (config_keys[i].flags & KF_RELOAD)
            continue;
        va = config_value_text(a, i);
        vb = config_value_text(b, i);
        same = va && vb && strcmp(va, vb) == 0;
        free(va);
        free(vb);
        if (same)
            continue; /* on allocation failure the key is reported as changed */
        if (!(grown = realloc(list, len + strlen(name) + 3)))
            break; /* keep what is listed: a partial answer beats none */
        list = grown;
        len += (size_t)sprintf(list + len, "%s%s", len ? ", " : "", name);
    }
    return list;
}
