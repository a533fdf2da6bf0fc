/* main: the command line. Parses options, loads and checks the config and
 * models, answers -t and -s, opens the listening sockets, then hands all of
 * it to the master (master.h). Owns nothing after that. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "model.h"
#include "master.h"
#include "transport.h"

#ifndef DNODED_SYSCONFDIR
#define DNODED_SYSCONFDIR "/etc/dnoded"
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dnoded [-c FILE] [-t] [-s reload|quit|stop|reopen] [-v] [-h]\n"
            "  -c FILE   configuration file (default %s/dnoded.conf)\n"
            "  -t        check the configuration and models, then exit 0 or 1\n"
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
    int *fds = calloc(cfg->nlisten, sizeof(*fds));
    size_t i;

    *nfds = 0;
    if (fds == NULL) {
        log_error("out of memory");
        return NULL;
    }
    for (i = 0; i < cfg->nlisten; i++) {
        int fd = transport_listen(cfg->listen[i], err, sizeof(err));
        if (fd < 0) {
            log_error("%s", err);
            while (*nfds > 0)
                close(fds[--*nfds]);
            free(fds);
            return NULL;
        }
        fds[(*nfds)++] = fd;
        log_info("listening on %s", cfg->listen[i]);
    }
    return fds;
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL, *signal_name = NULL;
    int test_only = 0, opt;
    char err[512];
    config_t *cfg = NULL;
    model_set_t *models = NULL;
    int *fds;
    size_t nfds;
    uid_t uid;
    gid_t gid;

    while ((opt = getopt(argc, argv, "c:ts:vh")) != -1) {
        switch (opt) {
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
    if (optind < argc || (test_only && signal_name != NULL)) {
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
    models = model_set_load(cfg->models, err, sizeof(err));
    if (models == NULL) {
        fprintf(stderr, "dnoded: %s: %s\n", cfg->models, err);
        config_free(cfg);
        return 1;
    }
    if (test_only) {
        int rc = master_lookup_credentials(cfg, &uid, &gid, err, sizeof(err));
        if (rc < 0)
            fprintf(stderr, "dnoded: %s: %s\n", conf_path, err);
        else
            printf("dnoded: configuration %s and models %s are ok\n", conf_path, cfg->models);
        model_set_free(models);
        config_free(cfg);
        return rc < 0 ? 1 : 0;
    }
    if (log_open(cfg->log_level, cfg->log_file) < 0) {
        fprintf(stderr, "dnoded: cannot open log file %s: %s\n", cfg->log_file, strerror(errno));
        model_set_free(models);
        config_free(cfg);
        return 1;
    }
    log_set_process("master");
    fds = main_listen(cfg, &nfds);
    if (fds == NULL) {
        model_set_free(models);
        config_free(cfg);
        log_close();
        return 1;
    }
    opt = master_run(cfg, models, fds, nfds); /* owns them all now */
    log_close();
    return opt;
}
