/* master: the process model. Owns the running config and models, the
 * listening sockets (opened by main before it calls master_run, never
 * closed until exit), the table of worker processes, the pidfile and the
 * sd_notify state. It runs no event loop and never touches client traffic
 * or any library handle: workers create those after fork (worker.h). */
#ifndef DNODED_MASTER_H
#define DNODED_MASTER_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "auth.h"
#include "tls.h"
#include "model.h"

/* Workers to run for cfg: cfg->workers, or one per online CPU for auto. */
int master_worker_count(const config_t *cfg);

/* Look up cfg->user and cfg->group. *uid and *gid are (uid_t)-1 and
 * (gid_t)-1 when the key is empty (keep the current one); a group left
 * empty while user is set means the user's primary group. 0, or -1 with
 * the reason in err. */
int master_lookup_credentials(const config_t *cfg, uid_t *uid, gid_t *gid, char *err,
                              size_t errlen);

/* Run the master until it is told to stop. Takes ownership of cfg, models,
 * auth, tls and the listening sockets fds[0..nfds) (fds itself is
 * malloc'd; its last ntls are the TLS listeners). Writes
 * the pidfile, forks the workers (which drop privileges to user/group),
 * then sleeps in sigsuspend() and acts on HUP (reload), QUIT (graceful
 * stop), TERM/INT (fast stop; a second one kills the workers), USR1 (log
 * reopen, forwarded to the workers) and SIGCHLD (respawn with backoff; a
 * worker exiting with status 2 is not respawned). Returns the process exit
 * status: 0 after a stop, 1 when it could not start or every worker
 * exited with status 2. */
int master_run(config_t *cfg, model_set_t *models, auth_t *auth, tls_t *tls, int *fds, size_t nfds,
               size_t ntls);

/* `dnoded -s NAME`: send the master named by cfg's pidfile the signal for
 * NAME (reload HUP, quit QUIT, stop TERM, reopen USR1). 0, or -1 with the
 * reason in err. */
int master_send_signal(const config_t *cfg, const char *name, char *err, size_t errlen);

#endif
