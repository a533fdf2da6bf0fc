/* main: the command line. Parses options, loads and checks the config and
 * models, answers -t and -s, opens the listening sockets, then hands all of
 * it to the master (master.h). Owns nothing after that. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "bus.h"
#include "config.h"
#include "jwt.h"
#include "log.h"
#include "model.h"
#include "master.h"
#include "tls.h"
#include "transport.h"

#ifndef DNODED_SYSCONFDIR
#define DNODED_SYSCONFDIR "/etc/dnoded"
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dnoded [-c FILE] [-t] [-s reload|quit|stop|reopen] [-m CLAIMS] [-v] [-h]\n"
            "  -c FILE   configuration file (default %s/dnoded.conf)\n"
            "  -t        check the configuration, models and token keys, then exit 0 or 1\n"
            "  -m CLAIMS print a token for CLAIMS (JSON) signed with auth_key, valid\n"
            "            for an hour unless CLAIMS has exp; for development only\n"
            "  -r jti=ID|sub=SUB  revoke a token, or every token of SUB issued so far,\n"
            "            on every host (through redis_url); sessions holding one close\n"
            "  -s SIGNAL send a signal to the running master (via the pidfile)\n"
            "  -v        print the version and exit\n"
            "  -h        print this help and exit\n",
            DNODED_SYSCONFDIR);
}

/* Listening sockets for every listen address, opened once here and kept
 * by the master for its whole life. NULL (after logging) on failure. */
static int *main_listen(const config_t *cfg, size_t *nfds)
{
    char err[512];
    size_t n = cfg->nlisten + cfg->nlisten_tls;
    int *fds = calloc(n, sizeof(*fds));
    size_t i;

    *nfds = 0;
    if (fds == NULL) {
        log_error("out of memory");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        int tls = i >= cfg->nlisten;
        const char *addr = tls ? cfg->listen_tls[i - cfg->nlisten] : cfg->listen[i];
        int fd = transport_listen(addr, err, sizeof(err));
        if (fd < 0) {
            log_error("%s", err);
            while (*nfds > 0)
                close(fds[--*nfds]);
            free(fds);
            return NULL;
        }
        fds[(*nfds)++] = fd;
        log_info("listening on %s%s", addr, tls ? " (TLS)" : "");
    }
    return fds;
}

/* -m: a token for claims, signed with auth_key (which must be able to
 * sign: an HS256 secret, or an RS256/ES256 private key). Development only:
 * whoever holds the key can be anyone. */
static int main_mint(const config_t *cfg, const char *claims_text)
{
    char err[256];
    jwt_alg_t alg;
    jwt_key_t *key;
    json_t *claims;
    char *token;
    int rc;

    if (cfg->auth_key == NULL || cfg->auth_key[0] == '\0') {
        fprintf(stderr, "dnoded: -m needs auth_key in the configuration\n");
        return 1;
    }
    claims = json_parse(claims_text, strlen(claims_text), 16, err, sizeof(err));
    if (claims == NULL || claims->type != JSON_OBJECT) {
        fprintf(stderr, "dnoded: -m takes a JSON object of claims%s%s\n", claims ? "" : ": ",
                claims ? "" : err);
        json_free(claims);
        return 1;
    }
    if (json_object_get(claims, "exp") == NULL &&
        json_object_set(claims, "exp", json_int((int64_t)time(NULL) + 3600)) < 0) {
        json_free(claims);
        return 1;
    }
    if (json_object_get(claims, "iat") == NULL)
        json_object_set(claims, "iat", json_int((int64_t)time(NULL)));
    if (cfg->auth_audience != NULL && cfg->auth_audience[0] != '\0' &&
        json_object_get(claims, "aud") == NULL)
        json_object_set(claims, "aud", json_string(cfg->auth_audience));
    if (cfg->auth_issuer != NULL && cfg->auth_issuer[0] != '\0' &&
        json_object_get(claims, "iss") == NULL)
        json_object_set(claims, "iss", json_string(cfg->auth_issuer));
    if (jwt_alg_parse(cfg->auth_key_alg, &alg) < 0 ||
        (key = jwt_key_load(cfg->auth_key, alg, err, sizeof(err))) == NULL) {
        fprintf(stderr, "dnoded: auth_key %s: %s\n", cfg->auth_key, err);
        json_free(claims);
        return 1;
    }
    token = jwt_key_can_sign(key) ? jwt_sign(key, claims, err, sizeof(err)) : NULL;
    rc = token != NULL ? 0 : 1;
    if (token == NULL)
        fprintf(stderr, "dnoded: cannot sign with auth_key %s: %s\n", cfg->auth_key,
                jwt_key_can_sign(key) ? err : "it holds no private key");
    else
        printf("%s\n", token);
    free(token);
    jwt_key_free(key);
    json_free(claims);
    return rc;
}

/* Secrets readable by every user of the machine: the config when a URI
 * in it holds credentials, the HS256 key file, the TLS private key.
 * Warned about (log or stderr), not refused. */
static void main_check_secrets(const config_t *cfg, const char *conf_path, int to_stderr)
{
    struct stat st;
    const char *what[3] = {NULL, NULL, NULL};

    if (((cfg->redis_url != NULL && strchr(cfg->redis_url, '@') != NULL) ||
         (cfg->mongodb_uri != NULL && strchr(cfg->mongodb_uri, '@') != NULL)) &&
        stat(conf_path, &st) == 0 && (st.st_mode & S_IROTH))
        what[0] = conf_path;
    if (cfg->auth_key != NULL && cfg->auth_key[0] != '\0' && cfg->auth_key_alg != NULL &&
        strcmp(cfg->auth_key_alg, "HS256") == 0 && stat(cfg->auth_key, &st) == 0 &&
        (st.st_mode & S_IROTH))
        what[1] = cfg->auth_key;
    if (cfg->tls_certificate_key != NULL && cfg->tls_certificate_key[0] != '\0' &&
        stat(cfg->tls_certificate_key, &st) == 0 && (st.st_mode & S_IROTH))
        what[2] = cfg->tls_certificate_key;
    for (int i = 0; i < 3; i++) {
        if (what[i] == NULL)
            continue;
        if (to_stderr)
            fprintf(stderr,
                    "dnoded: warning: %s holds a secret and every user can read it "
                    "(chmod o-r %s)\n",
                    what[i], what[i]);
        else
            log_warning("%s holds a secret and every user can read it (chmod o-r %s)", what[i],
                        what[i]);
    }
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL, *signal_name = NULL, *mint = NULL, *revoke = NULL;
    int test_only = 0, opt;
    char err[512];
    config_t *cfg = NULL;
    model_set_t *models = NULL;
    auth_t *auth = NULL;
    tls_t *tls = NULL;
    int *fds;
    size_t nfds;
    uid_t uid;
    gid_t gid;

    while ((opt = getopt(argc, argv, "c:ts:m:r:vh")) != -1) {
        switch (opt) {
        case 'r':
            revoke = optarg;
            break;
        case 'm':
            mint = optarg;
            break;
        case 'c':
            conf_path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 's':
            signal_name = optarg;
            break;
        case 'v':
            printf("dnoded %s\n", PACKAGE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc || (test_only && signal_name != NULL) ||
        (mint != NULL && (test_only || signal_name != NULL)) ||
        (revoke != NULL && (test_only || signal_name != NULL || mint != NULL))) {
        usage(stderr);
        return 1;
    }
    if (conf_path == NULL)
        conf_path = DNODED_SYSCONFDIR "/dnoded.conf";
    cfg = config_load(conf_path, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "dnoded: %s\n", err);
        return 1;
    }
    if (signal_name != NULL) {
        int rc = master_send_signal(cfg, signal_name, err, sizeof(err));
        if (rc < 0)
            fprintf(stderr, "dnoded: %s\n", err);
        config_free(cfg);
        return rc < 0 ? 1 : 0;
    }
    if (mint != NULL) {
        int rc = main_mint(cfg, mint);
        config_free(cfg);
        return rc;
    }
    if (revoke != NULL) {
        int rc = -1;
        if (strncmp(revoke, "jti=", 4) == 0 || strncmp(revoke, "sub=", 4) == 0) {
            char kind[4] = {revoke[0], revoke[1], revoke[2], '\0'};
            rc = bus_redis_revoke(cfg, kind, revoke + 4, err, sizeof(err));
        } else {
            snprintf(err, sizeof(err), "-r takes jti=ID or sub=SUB");
        }
        if (rc < 0)
            fprintf(stderr, "dnoded: %s\n", err);
        else
            printf("dnoded: revoked %s\n", revoke);
        config_free(cfg);
        return rc < 0 ? 1 : 0;
    }
    models = model_set_load(cfg->models, err, sizeof(err));
    if (models == NULL) {
        fprintf(stderr, "dnoded: %s: %s\n", cfg->models, err);
        config_free(cfg);
        return 1;
    }
    auth = auth_load(cfg, err, sizeof(err));
    if (auth == NULL) {
        fprintf(stderr, "dnoded: %s: %s\n", conf_path, err);
        model_set_free(models);
        config_free(cfg);
        return 1;
    }
    tls = tls_load(cfg, cfg->nlisten_tls > 0, err, sizeof(err));
    if (tls == NULL) {
        fprintf(stderr, "dnoded: %s: %s\n", conf_path, err);
        auth_free(auth);
        model_set_free(models);
        config_free(cfg);
        return 1;
    }
    if (test_only) {
        int rc = master_lookup_credentials(cfg, &uid, &gid, err, sizeof(err)), redis;
        main_check_secrets(cfg, conf_path, 1);
        if (rc < 0)
            fprintf(stderr, "dnoded: %s: %s\n", conf_path, err);
        if (tls_warning(tls) != NULL)
            fprintf(stderr, "dnoded: warning: %s\n", tls_warning(tls));
        /* The credentials in redis_url, tried as the workers will send them;
         * a Redis that is down now is no error of the file. */
        redis = rc < 0 ? 0 : bus_redis_check(cfg, err, sizeof(err));
        if (redis == -1) {
            fprintf(stderr, "dnoded: %s: redis_url: %s\n", conf_path, err);
            rc = -1;
        } else if (redis == -2) {
            fprintf(stderr, "dnoded: warning: redis_url not checked: %s\n", err);
        }
        if (rc == 0)
            printf("dnoded: configuration %s and models %s are ok\n", conf_path, cfg->models);
        model_set_free(models);
        auth_free(auth);
        tls_free(tls);
        config_free(cfg);
        return rc < 0 ? 1 : 0;
    }
    if (log_open(cfg->log_level, cfg->log_file) < 0) {
        fprintf(stderr, "dnoded: cannot open log file %s: %s\n", cfg->log_file, strerror(errno));
        model_set_free(models);
        auth_free(auth);
        tls_free(tls);
        config_free(cfg);
        return 1;
    }
    log_set_process("master");
    main_check_secrets(cfg, conf_path, 0);
    fds = main_listen(cfg, &nfds);
    if (fds == NULL) {
        model_set_free(models);
        auth_free(auth);
        tls_free(tls);
        config_free(cfg);
        log_close();
        return 1;
    }
    tls_log_loaded(tls);
    opt = master_run(cfg, models, auth, tls, fds, nfds, cfg->nlisten_tls); /* owns them all now */
    log_close();
    return opt;
}
