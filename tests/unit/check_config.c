/* check_config: unit tests for the config table and parser (src/config.c):
 * defaults, every key, the file syntax, value checks, error messages that
 * name file and line, and that etc/dnoded.conf documents every key with
 * its true default. */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "run_suite.h"

#define CONF "/srv/app/dnoded.conf"

static config_t *parse_ok(const char *text)
{
    char err[256] = "";
    config_t *cfg = config_parse(text, strlen(text), CONF, err, sizeof err);

    ck_assert_msg(cfg != NULL, "parse of \"%s\" failed: %s", text, err);
    return cfg;
}

/* Parses text, which must fail with exactly the message want. */
static void parse_fails(const char *text, const char *want)
{
    char err[256] = "";
    config_t *cfg = config_parse(text, strlen(text), CONF, err, sizeof err);

    ck_assert_msg(cfg == NULL, "\"%s\" was accepted", text);
    ck_assert_str_eq(err, want);
}

/* One "key = value" line that must be refused as a bad value for key. */
static void value_refused(const char *key, const char *value)
{
    char text[256], want[64], err[256] = "";
    config_t *cfg;

    snprintf(text, sizeof text, "%s = %s\n", key, value);
    snprintf(want, sizeof want, CONF ":1: bad value for %s: '", key);
    cfg = config_parse(text, strlen(text), CONF, err, sizeof err);
    ck_assert_msg(cfg == NULL, "\"%s\" was accepted", text);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "\"%s\": unexpected error \"%s\"",
                  text, err);
    ck_assert_msg(strstr(err, "(expected ") != NULL, "no expectation in \"%s\"", err);
}

static size_t key_index(const char *name)
{
    size_t i;

    for (i = 0; i < config_key_count(); i++) {
        if (strcmp(config_key_at(i)->name, name) == 0)
            return i;
    }
    ck_abort_msg("no key %s in the table", name);
    return 0;
}

START_TEST(test_defaults)
{
    config_t *cfg = config_new_defaults("/etc/dnoded");

    ck_assert_ptr_nonnull(cfg);
    ck_assert_ptr_null(cfg->path);
    ck_assert_uint_eq(cfg->nlisten, 1);
    ck_assert_str_eq(cfg->listen[0], "127.0.0.1:8080");
    ck_assert_int_eq(cfg->workers, 0);
    ck_assert_str_eq(cfg->models, "/etc/dnoded/models.json");
    ck_assert_str_eq(cfg->mongodb_uri, "mongodb://127.0.0.1:27017/dnoded");
    ck_assert_str_eq(cfg->redis_url, "");
    ck_assert_str_eq(cfg->redis_prefix, "dnoded:");
#ifdef DNODED_DATADIR
    ck_assert_str_eq(cfg->docroot, DNODED_DATADIR "/browser");
#else
    ck_assert_str_eq(cfg->docroot, "browser");
#endif
    ck_assert_str_eq(cfg->pidfile, "");
    ck_assert_int_eq(cfg->log_level, LOG_LEVEL_INFO);
    ck_assert_str_eq(cfg->log_file, "");
    ck_assert_str_eq(cfg->user, "");
    ck_assert_str_eq(cfg->group, "");
    ck_assert_uint_eq(cfg->nallowed_origins, 0);
    ck_assert_uint_eq(cfg->nserver_names, 0);
    ck_assert_uint_eq(cfg->nmetrics_allow, 2);
    ck_assert_str_eq(cfg->metrics_allow[0], "127.0.0.0/8");
    ck_assert_str_eq(cfg->metrics_allow[1], "::1");
    ck_assert_uint_eq(cfg->max_message_size, 1048576);
    ck_assert_uint_eq(cfg->max_output_buffer, 8388608);
    ck_assert_uint_eq(cfg->max_read_limit, 1000);
    ck_assert_uint_eq(cfg->max_reply_bytes, 8388608);
    ck_assert_uint_eq(cfg->max_inflight_per_session, 16);
    ck_assert_uint_eq(cfg->max_connections, 10000);
    ck_assert_uint_eq(cfg->max_connections_per_ip, 256);
    ck_assert_uint_eq(cfg->nconnection_limit_exempt, 2);
    ck_assert_int_eq(cfg->tcp_keepalive, 60);
    ck_assert_int_eq(cfg->ws_ping_interval, 30);
    ck_assert_int_eq(cfg->http_header_timeout, 10);
    ck_assert_int_eq(cfg->line_timeout, 30);
    ck_assert_uint_eq(cfg->max_subscriptions, 256);
    ck_assert_uint_eq(cfg->max_callbacks, 1024);
    ck_assert_uint_eq(cfg->max_invalid_messages, 100);
    ck_assert_uint_eq(cfg->max_json_depth, 32);
    ck_assert_uint_eq(cfg->output_soft_limit, 1048576);
    ck_assert_int_eq(cfg->output_soft_seconds, 10);
    ck_assert_int_eq(cfg->shutdown_timeout, 30);
    ck_assert_int_eq(cfg->db_threads, 4);
    ck_assert_int_eq(cfg->db_timeout_ms, 5000);
    ck_assert_int_eq(cfg->db_max_time_ms, 10000);
    ck_assert_int_eq(cfg->idempotency_window, 600);
    config_free(cfg);
}
END_TEST

START_TEST(test_empty_file_gives_defaults_beside_it)
{
    config_t *cfg = parse_ok("");

    ck_assert_str_eq(cfg->path, CONF);
    ck_assert_str_eq(cfg->models, "/srv/app/models.json");
    ck_assert_uint_eq(cfg->nlisten, 1);
    ck_assert_str_eq(cfg->listen[0], "127.0.0.1:8080");
    config_free(cfg);
}
END_TEST

START_TEST(test_every_key)
{
    config_t *cfg = parse_ok("listen = 0.0.0.0:9000\n"
                             "workers = 3\n"
                             "models = /opt/m.json\n"
                             "mongodb_uri = mongodb+srv://db.example.com/app\n"
                             "redis_url = redis://127.0.0.1:6379/2\n"
                             "redis_prefix = app1:\n"
                             "docroot = /var/www\n"
                             "pidfile = /run/dnoded.pid\n"
                             "log_level = debug\n"
                             "log_file = /var/log/dnoded.log\n"
                             "user = www-data\n"
                             "group = 33\n"
                             "allowed_origins = https://a.example.com\n"
                             "max_message_size = 2048\n"
                             "max_output_buffer = 65536\n"
                             "max_read_limit = 50\n"
                             "max_reply_bytes = 64k\n"
                             "max_inflight_per_session = 4\n"
                             "max_connections = 12\n"
                             "max_connections_per_ip = 3\n"
                             "connection_limit_exempt = 10.1.2.3\n"
                             "tcp_keepalive = 0\n"
                             "ws_ping_interval = 7\n"
                             "http_header_timeout = 5\n"
                             "line_timeout = 6\n"
                             "max_subscriptions = 13\n"
                             "max_callbacks = 14\n"
                             "metrics_allow = 10.0.0.0/8\n"
                             "server_names = app.example.com [::1]\n"
                             "max_invalid_messages = 0\n"
                             "max_json_depth = 15\n"
                             "output_soft_limit = 32k\n"
                             "output_soft_seconds = 20\n"
                             "shutdown_timeout = 16\n"
                             "db_threads = 17\n"
                             "db_timeout_ms = 18\n"
                             "db_max_time_ms = 19\n"
                             "idempotency_window = 0\n"
                             "listen_tls = 0.0.0.0:9443 [::]:9443\n"
                             "tls_certificate = /etc/ssl/a.pem\n"
                             "tls_certificate_key = /etc/ssl/a.key\n"
                             "tls_protocols = TLSv1.3\n"
                             "tls_ciphers = ECDHE+AESGCM:!aNULL\n"
                             "max_connection_rate_per_ip = 7\n");

    ck_assert_uint_eq(cfg->max_connection_rate_per_ip, 7);

    ck_assert_uint_eq(cfg->nlisten_tls, 2);
    ck_assert_str_eq(cfg->listen_tls[1], "[::]:9443");
    ck_assert_str_eq(cfg->tls_certificate, "/etc/ssl/a.pem");
    ck_assert_str_eq(cfg->tls_certificate_key, "/etc/ssl/a.key");
    ck_assert_uint_eq(cfg->ntls_protocols, 1);
    ck_assert_str_eq(cfg->tls_protocols[0], "TLSv1.3");
    ck_assert_str_eq(cfg->tls_ciphers, "ECDHE+AESGCM:!aNULL");
    ck_assert_uint_eq(cfg->nlisten, 1);
    ck_assert_str_eq(cfg->listen[0], "0.0.0.0:9000");
    ck_assert_int_eq(cfg->workers, 3);
    ck_assert_str_eq(cfg->models, "/opt/m.json");
    ck_assert_str_eq(cfg->mongodb_uri, "mongodb+srv://db.example.com/app");
    ck_assert_str_eq(cfg->redis_url, "redis://127.0.0.1:6379/2");
    ck_assert_str_eq(cfg->redis_prefix, "app1:");
    ck_assert_str_eq(cfg->docroot, "/var/www");
    ck_assert_str_eq(cfg->pidfile, "/run/dnoded.pid");
    ck_assert_int_eq(cfg->log_level, LOG_LEVEL_DEBUG);
    ck_assert_str_eq(cfg->log_file, "/var/log/dnoded.log");
    ck_assert_str_eq(cfg->user, "www-data");
    ck_assert_str_eq(cfg->group, "33");
    ck_assert_uint_eq(cfg->nallowed_origins, 1);
    ck_assert_str_eq(cfg->allowed_origins[0], "https://a.example.com");
    ck_assert_uint_eq(cfg->nmetrics_allow, 1);
    ck_assert_str_eq(cfg->metrics_allow[0], "10.0.0.0/8");
    ck_assert_uint_eq(cfg->nserver_names, 2);
    ck_assert_str_eq(cfg->server_names[1], "[::1]");
    ck_assert_uint_eq(cfg->max_message_size, 2048);
    ck_assert_uint_eq(cfg->max_output_buffer, 65536);
    ck_assert_uint_eq(cfg->max_read_limit, 50);
    ck_assert_uint_eq(cfg->max_reply_bytes, 65536);
    ck_assert_uint_eq(cfg->max_inflight_per_session, 4);
    ck_assert_uint_eq(cfg->max_connections, 12);
    ck_assert_uint_eq(cfg->max_connections_per_ip, 3);
    ck_assert_uint_eq(cfg->nconnection_limit_exempt, 1);
    ck_assert_int_eq(cfg->tcp_keepalive, 0);
    ck_assert_int_eq(cfg->ws_ping_interval, 7);
    ck_assert_int_eq(cfg->http_header_timeout, 5);
    ck_assert_int_eq(cfg->line_timeout, 6);
    ck_assert_uint_eq(cfg->max_subscriptions, 13);
    ck_assert_uint_eq(cfg->max_callbacks, 14);
    ck_assert_uint_eq(cfg->max_invalid_messages, 0);
    ck_assert_uint_eq(cfg->max_json_depth, 15);
    ck_assert_uint_eq(cfg->output_soft_limit, 32768);
    ck_assert_int_eq(cfg->output_soft_seconds, 20);
    ck_assert_int_eq(cfg->shutdown_timeout, 16);
    ck_assert_int_eq(cfg->db_threads, 17);
    ck_assert_int_eq(cfg->db_timeout_ms, 18);
    ck_assert_int_eq(cfg->db_max_time_ms, 19);
    ck_assert_int_eq(cfg->idempotency_window, 0);
    /* the table lists exactly the keys this test sets */
    ck_assert_uint_eq(config_key_count(), 58);
    config_free(cfg);
}
END_TEST

START_TEST(test_syntax)
{
    config_t *cfg = parse_ok("\xef\xbb\xbf# a comment line\r\n"
                             "\r\n"
                             "   \t\n"
                             "  # an indented comment\n"
                             "workers=2\r\n"
                             "\tdb_threads   =\t5  # trailing comment\n"
                             "redis_prefix = a#b\n"
                             "docroot = \"/srv/my files\"  # quoted, spaces kept\n"
                             "pidfile = \"/run/x#1.pid\"\n"
                             "log_file = \"/tmp/q\\\"uote\\\\\"\r\n"
                             "user = \n"
                             "log_level = warning"); /* no final newline */

    ck_assert_int_eq(cfg->workers, 2);
    ck_assert_int_eq(cfg->db_threads, 5);
    ck_assert_str_eq(cfg->redis_prefix, "a#b");
    ck_assert_str_eq(cfg->docroot, "/srv/my files");
    ck_assert_str_eq(cfg->pidfile, "/run/x#1.pid");
    ck_assert_str_eq(cfg->log_file, "/tmp/q\"uote\\");
    ck_assert_str_eq(cfg->user, "");
    ck_assert_int_eq(cfg->log_level, LOG_LEVEL_WARNING);
    config_free(cfg);

    cfg = parse_ok("pidfile = \"\"\ngroup = # nobody\n");
    ck_assert_str_eq(cfg->pidfile, "");
    ck_assert_str_eq(cfg->group, "");
    config_free(cfg);
}
END_TEST

START_TEST(test_syntax_errors)
{
    parse_fails("\n\nworkers 4\n", CONF ":3: expected 'key = value', got 'workers 4'");
    parse_fails("= 4\n", CONF ":1: expected 'key = value', got '= 4'");
    parse_fails("# ok\ndocroot = \"/srv\n", CONF ":2: missing closing quote");
    parse_fails("docroot = \"/srv\" x\n", CONF ":1: unexpected text after the closing quote");
}
END_TEST

START_TEST(test_nul_byte)
{
    static const char text[] = "workers = 2\nlog_level = info\0\n";
    char err[256] = "";

    ck_assert_ptr_null(config_parse(text, sizeof text - 1, CONF, err, sizeof err));
    ck_assert_str_eq(err, CONF ":2: NUL byte in line");
}
END_TEST

START_TEST(test_size_suffixes)
{
    static const struct {
        const char *text;
        size_t want;
    } cases[] = {
        {"1024", 1024},          {"1k", 1024},        {"2K", 2048},
        {"1m", 1048576},         {"3M", 3145728},     {"1g", 1073741824},
        {"1G", 1073741824},
    };
    static const char *const bad[] = {"abc", "1.5m", "1t", "m", "1 m", "-1k", "1kb",
                                      "1023", "2g", "99999999999999999999k", "0x400"};
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[64];
        config_t *cfg;

        snprintf(text, sizeof text, "max_message_size = %s\n", cases[i].text);
        cfg = parse_ok(text);
        ck_assert_uint_eq(cfg->max_message_size, cases[i].want);
        config_free(cfg);
    }
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        value_refused("max_message_size", bad[i]);
    parse_fails("max_message_size = abc\n",
                CONF ":1: bad value for max_message_size: 'abc' "
                     "(expected a size such as 1m, from 1k to 1g)");
}
END_TEST

START_TEST(test_workers)
{
    config_t *cfg = parse_ok("workers = auto\n");

    ck_assert_int_eq(cfg->workers, 0);
    config_free(cfg);
    cfg = parse_ok("workers = 1024\n");
    ck_assert_int_eq(cfg->workers, 1024);
    config_free(cfg);
    value_refused("workers", "0");
    value_refused("workers", "1025");
    value_refused("workers", "-1");
    value_refused("workers", "AUTO");
    value_refused("workers", "");
    value_refused("workers", "4 cpus");
}
END_TEST

START_TEST(test_listen_repeats_and_replaces_default)
{
    config_t *cfg = parse_ok("listen = 127.0.0.1:9001\n"
                             "listen = [::1]:9002 localhost:9003\n");

    ck_assert_uint_eq(cfg->nlisten, 3);
    ck_assert_str_eq(cfg->listen[0], "127.0.0.1:9001");
    ck_assert_str_eq(cfg->listen[1], "[::1]:9002");
    ck_assert_str_eq(cfg->listen[2], "localhost:9003");
    config_free(cfg);

    parse_fails("listen = 127.0.0.1:9001\nlisten = 127.0.0.1:9001\n",
                CONF ":2: listen '127.0.0.1:9001' repeats an entry given before");
    /* the default is replaced, so naming it once is fine */
    cfg = parse_ok("listen = 127.0.0.1:8080\n");
    ck_assert_uint_eq(cfg->nlisten, 1);
    config_free(cfg);
}
END_TEST

START_TEST(test_listen_values)
{
    static const char *const good[] = {"0.0.0.0:1", "[::]:65535", "[::1]:80", "example.com:80"};
    static const char *const bad[] = {"8080", ":8080", "host:", "host:0", "host:65536",
                                      "[fe80::1%lo]:80", /* zone ids are not supported */
                                      "host:80x", "::1:8080", "[::1]8080", "[zz]:80",
                                      "1.2.3:80", "999.1.1.1:80", "*:80", "a b:80", ""};
    size_t i;

    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        char text[64];
        config_t *cfg;

        snprintf(text, sizeof text, "listen = %s\n", good[i]);
        cfg = parse_ok(text);
        ck_assert_str_eq(cfg->listen[0], good[i]);
        config_free(cfg);
    }
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        value_refused("listen", bad[i]);
}
END_TEST

START_TEST(test_value_checks)
{
    value_refused("mongodb_uri", "http://127.0.0.1/x");
    value_refused("mongodb_uri", "mongodb://");
    value_refused("mongodb_uri", "");
    value_refused("redis_url", "127.0.0.1:6379");
    value_refused("tls_protocols", "SSLv3");
    value_refused("tls_protocols", "TLSv1.1");
    value_refused("tls_ciphers", "ECDHE;rm");
    value_refused("listen_tls", "9443");
    value_refused("redis_url", "redis://");
    value_refused("log_level", "verbose");
    value_refused("log_level", "INFO");
    value_refused("allowed_origins", "https://a.example.com/");
    value_refused("allowed_origins", "https://A.example.com");
    value_refused("allowed_origins", "a.example.com");
    value_refused("user", "two words");
    value_refused("models", "");
    value_refused("docroot", "");
    value_refused("max_read_limit", "0");
    value_refused("max_read_limit", "1k"); /* counts take no suffix */
    value_refused("max_output_buffer", "4095");
    value_refused("max_json_depth", "3");
    value_refused("output_soft_limit", "4095");
    value_refused("output_soft_seconds", "0");
    value_refused("shutdown_timeout", "0");
    value_refused("db_threads", "65");
    value_refused("db_max_time_ms", "0");
    value_refused("idempotency_window", "-1");
    value_refused("idempotency_window", "604801");
}
END_TEST

START_TEST(test_allowed_origins_list)
{
    config_t *cfg = parse_ok("allowed_origins = https://a.example.com http://localhost:3000\n"
                             "allowed_origins = https://a.example.com\thttp://[::1]:8080\n");

    ck_assert_uint_eq(cfg->nallowed_origins, 3);
    ck_assert_str_eq(cfg->allowed_origins[0], "https://a.example.com");
    ck_assert_str_eq(cfg->allowed_origins[1], "http://localhost:3000");
    ck_assert_str_eq(cfg->allowed_origins[2], "http://[::1]:8080");
    config_free(cfg);
}
END_TEST

START_TEST(test_error_messages)
{
    parse_fails("workers = 2\n\nfoo = 1\n", CONF ":3: unknown key 'foo'");
    parse_fails("Workers = 2\n", CONF ":1: unknown key 'Workers'");
    parse_fails("# x\nworkers = 2\nlog_level = info\n\nworkers = 3\n",
                CONF ":5: duplicate key 'workers' (first set on line 2)");
    parse_fails("pidfile = /a\r\npidfile = /a\r\n",
                CONF ":2: duplicate key 'pidfile' (first set on line 1)");
    parse_fails("log_level = loud\n",
                CONF ":1: bad value for log_level: 'loud' "
                     "(expected debug, info, warning or error)");
    parse_fails("workers = 4\x01\n",
                CONF ":1: bad value for workers: '4?' (expected auto or a number from 1 to 1024)");
}
END_TEST

START_TEST(test_missing_file)
{
    char err[256] = "";
    config_t *cfg = config_load("/nonexistent/dnoded.conf", err, sizeof err);

    ck_assert_ptr_null(cfg);
    ck_assert_str_eq(err, "cannot open /nonexistent/dnoded.conf: No such file or directory");
    /* a NULL err is allowed */
    ck_assert_ptr_null(config_load("/nonexistent/dnoded.conf", NULL, 0));
}
END_TEST

START_TEST(test_relative_paths)
{
    config_t *cfg = parse_ok("models = schemas/m.json\n"
                             "docroot = ./public\n"
                             "log_file = ../log/d.log\n"
                             "pidfile = /run/d.pid\n");
    char cwd[PATH_MAX], want[PATH_MAX + 64];

    ck_assert_str_eq(cfg->models, "/srv/app/schemas/m.json");
    ck_assert_str_eq(cfg->docroot, "/srv/app/public");
    ck_assert_str_eq(cfg->log_file, "/srv/app/../log/d.log");
    ck_assert_str_eq(cfg->pidfile, "/run/d.pid");
    config_free(cfg);

    /* a config named relatively is placed in the current directory */
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    cfg = config_parse("", 0, "conf/d.conf", NULL, 0);
    ck_assert_ptr_nonnull(cfg);
    snprintf(want, sizeof want, "%s/conf/d.conf", cwd);
    ck_assert_str_eq(cfg->path, want);
    snprintf(want, sizeof want, "%s/conf/models.json", cwd);
    ck_assert_str_eq(cfg->models, want);
    config_free(cfg);
}
END_TEST

START_TEST(test_load_file)
{
    char dir[] = "/tmp/check_config.XXXXXX", path[64], err[256] = "";
    config_t *cfg;
    FILE *f;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/d.conf", dir);
    ck_assert_ptr_nonnull(f = fopen(path, "w"));
    ck_assert_int_ge(fputs("workers = 2\nmodels = m.json\n", f), 0);
    ck_assert_int_eq(fclose(f), 0);

    cfg = config_load(path, err, sizeof err);
    ck_assert_msg(cfg != NULL, "load failed: %s", err);
    ck_assert_str_eq(cfg->path, path);
    ck_assert_int_eq(cfg->workers, 2);
    snprintf(path, sizeof path, "%s/m.json", dir);
    ck_assert_str_eq(cfg->models, path);
    config_free(cfg);

    snprintf(path, sizeof path, "%s/d.conf", dir);
    ck_assert_ptr_nonnull(f = fopen(path, "w"));
    ck_assert_int_ge(fputs("workers = 2\nbogus = 1\n", f), 0);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_ptr_null(config_load(path, err, sizeof err));
    ck_assert_msg(strstr(err, "/d.conf:2: unknown key 'bogus'") != NULL, "got \"%s\"", err);

    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

START_TEST(test_nonreloadable_changes)
{
    config_t *a = parse_ok("workers = 2\nlog_level = info\n");
    config_t *b = parse_ok("workers = 2\nlog_level = debug\nmax_read_limit = 5\n");
    config_t *c = parse_ok("workers = 3\nlisten = 127.0.0.1:9000\nuser = nobody\n"
                           "pidfile = /run/x.pid\n");
    char *changes;

    ck_assert_ptr_null(config_nonreloadable_changes(a, a));
    ck_assert_ptr_null(config_nonreloadable_changes(a, b));
    changes = config_nonreloadable_changes(a, c);
    ck_assert_ptr_nonnull(changes);
    ck_assert_str_eq(changes, "listen, workers, pidfile, user");
    free(changes);
    config_free(a);
    config_free(b);
    config_free(c);
}
END_TEST

START_TEST(test_key_table)
{
    size_t i, j, n = config_key_count();
    config_t *cfg = parse_ok("listen = 127.0.0.1:1 [::1]:2\nworkers = 6\n");
    char *text;

    ck_assert_ptr_null(config_key_at(n));
    for (i = 0; i < n; i++) {
        const config_key_info_t *k = config_key_at(i);

        ck_assert_ptr_nonnull(k);
        ck_assert_ptr_nonnull(k->default_text);
        for (j = 0; j < i; j++)
            ck_assert_str_ne(config_key_at(j)->name, k->name);
    }
    ck_assert(!config_key_at(key_index("listen"))->reloadable);
    ck_assert(config_key_at(key_index("listen"))->repeatable);
    ck_assert(!config_key_at(key_index("workers"))->reloadable);
    ck_assert(!config_key_at(key_index("group"))->reloadable);
    ck_assert(config_key_at(key_index("log_level"))->reloadable);
    ck_assert(!config_key_at(key_index("log_level"))->repeatable);

    text = config_value_text(cfg, key_index("listen"));
    ck_assert_str_eq(text, "127.0.0.1:1 [::1]:2");
    free(text);
    text = config_value_text(cfg, key_index("workers"));
    ck_assert_str_eq(text, "6");
    free(text);
    text = config_value_text(cfg, key_index("log_level"));
    ck_assert_str_eq(text, "info");
    free(text);
    ck_assert_ptr_null(config_value_text(cfg, n));
    config_free(cfg);
}
END_TEST

/* etc/dnoded.conf shows every key as "#key = default": uncommented, those
 * lines must parse and give exactly the built-in defaults. */
START_TEST(test_example_conf_documents_every_key)
{
    const char *srcdir = getenv("DNODED_SRCDIR");
    char path[PATH_MAX], line[512], err[256] = "";
    char *text = NULL;
    size_t len = 0, i;
    FILE *in, *out;
    config_t *cfg, *defaults;

    snprintf(path, sizeof path, "%s/etc/dnoded.conf", srcdir ? srcdir : ".");
    in = fopen(path, "r");
    ck_assert_msg(in != NULL, "cannot open %s (set DNODED_SRCDIR)", path);
    ck_assert_ptr_nonnull(out = open_memstream(&text, &len));
    while (fgets(line, sizeof line, in)) {
        size_t k = 1;

        while ((line[k] >= 'a' && line[k] <= 'z') || line[k] == '_')
            k++;
        if (line[0] == '#' && k > 1 && strncmp(line + k, " =", 2) == 0)
            ck_assert_int_ge(fputs(line + 1, out), 0);
    }
    ck_assert_int_eq(fclose(in), 0);
    ck_assert_int_eq(fclose(out), 0);

    cfg = config_parse(text, len, path, err, sizeof err);
    ck_assert_msg(cfg != NULL, "uncommented %s: %s", path, err);
    defaults = config_new_defaults(NULL);
    ck_assert_ptr_nonnull(defaults);
    for (i = 0; i < config_key_count(); i++) {
        const char *name = config_key_at(i)->name;
        char *want, *got, needle[64];

        snprintf(needle, sizeof needle, "\n%s =", name);
        ck_assert_msg(strstr(text, needle) || strncmp(text, needle + 1, strlen(needle + 1)) == 0,
                      "%s does not show '#%s = ...'", path, name);
        if (strcmp(name, "docroot") == 0 || strcmp(name, "models") == 0)
            continue; /* install-dependent, and relative to the file */
        want = config_value_text(defaults, i);
        got = config_value_text(cfg, i);
        ck_assert_ptr_nonnull(want);
        ck_assert_ptr_nonnull(got);
        ck_assert_msg(strcmp(want, got) == 0, "%s shows %s = %s, the default is %s", path, name,
                      got, want);
        free(want);
        free(got);
    }
    config_free(defaults);
    config_free(cfg);
    free(text);
}
END_TEST

START_TEST(test_log_level_parse)
{
    ck_assert_int_eq(log_level_parse("debug"), LOG_LEVEL_DEBUG);
    ck_assert_int_eq(log_level_parse("info"), LOG_LEVEL_INFO);
    ck_assert_int_eq(log_level_parse("warning"), LOG_LEVEL_WARNING);
    ck_assert_int_eq(log_level_parse("error"), LOG_LEVEL_ERROR);
    ck_assert_int_eq(log_level_parse("warn"), -1);
    ck_assert_int_eq(log_level_parse(""), -1);
    ck_assert_int_eq(log_level_parse(NULL), -1);
    ck_assert_str_eq(log_level_name(LOG_LEVEL_WARNING), "warning");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");

    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_empty_file_gives_defaults_beside_it);
    tcase_add_test(tc, test_every_key);
    tcase_add_test(tc, test_syntax);
    tcase_add_test(tc, test_syntax_errors);
    tcase_add_test(tc, test_nul_byte);
    tcase_add_test(tc, test_size_suffixes);
    tcase_add_test(tc, test_workers);
    tcase_add_test(tc, test_listen_repeats_and_replaces_default);
    tcase_add_test(tc, test_listen_values);
    tcase_add_test(tc, test_value_checks);
    tcase_add_test(tc, test_allowed_origins_list);
    tcase_add_test(tc, test_error_messages);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_relative_paths);
    tcase_add_test(tc, test_load_file);
    tcase_add_test(tc, test_nonreloadable_changes);
    tcase_add_test(tc, test_key_table);
    tcase_add_test(tc, test_example_conf_documents_every_key);
    tcase_add_test(tc, test_log_level_parse);
    suite_add_tcase(s, tc);

    return check_run(s);
}
