/* main: the command line. Parses options, loads and checks the config and
 * models, then hands over to the process model. Owns nothing after that. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "model.h"
#include "store.h"
#include "transport.h"
#include "worker.h"

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

int main(int argc, char **argv)
{
    const char *conf_path = NULL;
    int test_only = 0, opt, status;
    char err[512];
    config_t *cfg = NULL;
    model_set_t *models = NULL;
    int *fds = NULL;
    size_t i, nfds = 0;

    while ((opt = getopt(argc, argv, "c:ts:vh")) != -1) {
        switch (opt) {
        case 'c':
            conf_path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 's':
            fprintf(stderr, "dnoded: -s is not supported yet\n");
            return 1;
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
    if (optind < argc) {
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
    models = model_set_load(cfg->models, err, sizeof(err));
    if (models == NULL) {
        fprintf(stderr, "dnoded: %s: %s\n", cfg->models, err);
        config_free(cfg);
        return 1;
    }
    if (test_only) {
        printf("dnoded: configuration %s and models %s are ok\n", conf_path, cfg->models);
        model_set_free(models);
        config_free(cfg);
        return 0;
    }
    if (log_open(cfg->log_level, cfg->log_file) < 0) {
        fprintf(stderr, "dnoded: cannot open log file %s: %s\n", cfg->log_file,
                strerror(errno));
        model_set_free(models);
        config_free(cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    fds = calloc(cfg->nlisten, sizeof(*fds));
    status = fds == NULL ? 1 : 0;
    for (i = 0; status == 0 && i < cfg->nlisten; i++) {
        int fd = transport_listen(cfg->listen[i], err, sizeof(err));
        if (fd < 0) {
            log_error("%s", err);
            status = 1;
            break;
        }
        fds[nfds++] = fd;
        log_info("listening on %s", cfg->listen[i]);
    }
    if (status == 0) {
        store_global_init();
        log_set_process("worker 0");
        status = worker_run(0, cfg, models, fds, nfds);
        store_global_cleanup();
    }
    for (i = 0; i < nfds; i++)
        close(fds[i]);
    free(fds);
    model_set_free(models);
    config_free(cfg);
    log_close();
    return status;
}
