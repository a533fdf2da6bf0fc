/* master: forks and supervises the workers (see master.h). Signals are
 * blocked except inside sigsuspend(); handlers only set flags, and the
 * loop acts on them. A table of processes (pid, slot, generation, exiting)
 * tells a crash to respawn from an old generation finishing its stop.
 * Reload builds the new config and models before touching anything. */
#include "master.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "auth.h"
#include "tls.h"
#include "bus.h"
#include "handoff.h"
#include "hash.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "worker.h"

/* A worker that ran this long before dying starts its backoff afresh. */
#define MASTER_STABLE_SECONDS 10.0
/* Respawn delays: the first retry is at once, then 0.1 s doubling to 10 s. */
#define MASTER_BACKOFF_FIRST 0.1
#define MASTER_BACKOFF_MAX 10.0
/* Slack past a worker's own stop deadline before the master kills it. */
#define MASTER_KILL_SLACK_SECONDS 5
/* Metrics slots: old and new generations overlap during a reload, and a
 * crashed worker's slot is only reclaimed once its pid is gone. */
#define MASTER_METRICS_SLOTS_PER_WORKER 4
/* How long a reload waits for every new worker to accept before giving up
 * and keeping the running generation. */
#define MASTER_READY_SECONDS 15.0
/* A worker's own fast-stop deadline (worker.c) plus slack. */
#define MASTER_FAST_STOP_SECONDS (2 + MASTER_KILL_SLACK_SECONDS)

typedef struct master_proc {
    pid_t pid;
    int index; /* slot */
    unsigned generation;
    double started;       /* monotonic seconds */
    unsigned exiting : 1; /* told to stop: its exit is expected */
    unsigned ready : 1;   /* it said it accepts on every socket */
} master_proc_t;

/* One per worker of the current generation. */
typedef struct master_slot {
    unsigned failures;  /* unexpected exits in a row */
    double respawn_at;  /* monotonic seconds; 0 = nothing scheduled */
    unsigned fatal : 1; /* exited with status 2: left empty */
} master_slot_t;

typedef struct master {
    pid_t pid;
    config_t *cfg;
    model_set_t *models;
    auth_t *auth;           /* token keys, loaded with the config */
    tls_t *tls;             /* the TLS context, likewise */
    int *fds;
    size_t nfds;
    size_t ntls; /* the last ntls of fds listen for TLS (fixed at start) */
    int nworkers; /* fixed at start (workers is not reloadable) */
    unsigned generation;
    master_proc_t *procs;
    size_t nprocs, capprocs;
    master_slot_t *slots;
    metrics_t *metrics;   /* shared counters, created before the first fork */
    bus_host_t *bus_host; /* the single-host relay, likewise */
    int handoff[2];       /* the channel between generations, likewise (or -1) */
    char *pidfile;        /* fixed at start; NULL = none */
    char *user;           /* for initgroups(); NULL = keep credentials */
    uid_t uid;
    gid_t gid;
    int ready_pipe[2]; /* workers write their pid when ready (then SIGUSR2) */
    int started;       /* READY=1 sent once the first generation was ready */
    /* A reload in progress: generation is the new one, and the previous
     * state is kept until every new worker is ready (commit) or one of
     * them fails (rollback). */
    int reloading;
    double reload_deadline;
    config_t *prev_cfg;
    model_set_t *prev_models;
    auth_t *prev_auth;
    tls_t *prev_tls;
    master_slot_t *prev_slots;
    char reload_failure[160]; /* why the reload in progress failed, or "" */
    int stopping;             /* 0, 1 graceful, 2 fast */
    double stop_deadline;     /* then the remaining workers get SIGKILL */
    int status;
} master_t;

/* The only state shared with signal handlers. */
static volatile sig_atomic_t master_sig_reload, master_sig_quit, master_sig_terminate,
    master_sig_reopen, master_sig_child, master_sig_alarm, master_sig_ready;

static const int master_signals[] = {SIGHUP,  SIGQUIT, SIGTERM, SIGINT,
                                     SIGUSR1, SIGUSR2, SIGCHLD, SIGALRM};
#define MASTER_NSIGNALS (sizeof(master_signals) / sizeof(master_signals[0]))

static void master_signal_handler(int sig)
{
    switch (sig) {
    case SIGHUP:
        master_sig_reload = 1;
        break;
    case SIGQUIT:
        master_sig_quit = 1;
        break;
    case SIGTERM:
    case SIGINT:
        if (master_sig_terminate < 2)
            master_sig_terminate++; /* counts: a second one kills */
        break;
    case SIGUSR1:
        master_sig_reopen = 1;
        break;
    case SIGCHLD:
        master_sig_child = 1;
        break;
    case SIGALRM:
        master_sig_alarm = 1;
        break;
    case SIGUSR2: /* a worker wrote to the ready pipe */
        master_sig_ready = 1;
        break;
    default:
        break;
    }
}

static double master_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* sd_notify when built with libsystemd and run by systemd; else nothing. */
static void master_notify(const char *state)
{
#ifdef HAVE_LIBSYSTEMD
    int rc = sd_notify(0, state);
    if (rc < 0)
        log_warning("sd_notify() failed: %s", strerror(-rc));
#else
    (void)state;
#endif
}

/* ------------------------------------------------------------------------
 * Credentials, pidfile, -s
 * ------------------------------------------------------------------------ */

int master_worker_count(const config_t *cfg)
{
    long n;

    if (cfg->workers > 0)
        return cfg->workers;
    n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > 1024 ? 1024 : (int)n;
}

/* A name or a decimal id. */
static int master_parse_id(const char *s, unsigned long *id)
{
    char *end;

    if (s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    *id = strtoul(s, &end, 10);
    return errno == 0 && *end == '\0' ? 0 : -1;
}

int master_lookup_credentials(const config_t *cfg, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
    unsigned long id;

    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (cfg->user != NULL && cfg->user[0] != '\0') {
        struct passwd *pw;
        errno = 0;
        pw = master_parse_id(cfg->user, &id) == 0 ? getpwuid((uid_t)id) : getpwnam(cfg->user);
        if (pw == NULL) {
            snprintf(err, errlen, "user '%s' does not exist%s%s", cfg->user, errno ? ": " : "",
                     errno ? strerror(errno) : "");
            return -1;
        }
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
    }
    if (cfg->group != NULL && cfg->group[0] != '\0') {
        struct group *gr;
        errno = 0;
        gr = master_parse_id(cfg->group, &id) == 0 ? getgrgid((gid_t)id) : getgrnam(cfg->group);
        if (gr == NULL) {
            snprintf(err, errlen, "group '%s' does not exist%s%s", cfg->group, errno ? ": " : "",
                     errno ? strerror(errno) : "");
            return -1;
        }
        *gid = gr->gr_gid;
    }
    return 0;
}

static int master_write_pidfile(master_t *m)
{
    char buf[32];
    int fd, n;

    if (m->pidfile == NULL)
        return 0;
    fd = open(m->pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_error("cannot create pidfile %s: %s", m->pidfile, strerror(errno));
        return -1;
    }
    n = snprintf(buf, sizeof(buf), "%ld\n", (long)m->pid);
    if (write(fd, buf, (size_t)n) != n) {
        log_error("cannot write pidfile %s: %s", m->pidfile, strerror(errno));
        close(fd);
        return -1;
    }
    if (close(fd) < 0) {
        log_error("cannot write pidfile %s: %s", m->pidfile, strerror(errno));
        return -1;
    }
    return 0;
}

/* The pid in path, or -1 with the reason in err. */
static long master_read_pidfile(const char *path, char *err, size_t errlen)
{
    char buf[32], *end;
    ssize_t n;
    long pid;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(err, errlen, "cannot open pidfile %s: %s", path, strerror(errno));
        return -1;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "cannot read pidfile %s: %s", path, strerror(errno));
        return -1;
    }
    buf[n] = '\0';
    errno = 0;
    pid = strtol(buf, &end, 10);
    if (errno != 0 || end == buf || (*end != '\n' && *end != '\0') || pid <= 1) {
        snprintf(err, errlen, "pidfile %s holds no pid", path);
        return -1;
    }
    return pid;
}

/* Remove the pidfile if it still names this master. */
static void master_remove_pidfile(master_t *m)
{
    char err[256];

    if (m->pidfile == NULL)
        return;
    if (master_read_pidfile(m->pidfile, err, sizeof(err)) != (long)m->pid)
        return;
    if (unlink(m->pidfile) < 0)
        log_warning("cannot remove pidfile %s: %s", m->pidfile, strerror(errno));
}

int master_send_signal(const config_t *cfg, const char *name, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"reload", SIGHUP}, {"quit", SIGQUIT}, {"stop", SIGTERM}, {"reopen", SIGUSR1}};
    size_t i;
    long pid;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(name, names[i].name) == 0)
            break;
    if (i == sizeof(names) / sizeof(names[0])) {
        snprintf(err, errlen, "unknown signal '%s' (expected reload, quit, stop or reopen)", name);
        return -1;
    }
    if (cfg->pidfile == NULL || cfg->pidfile[0] == '\0') {
        snprintf(err, errlen, "%s sets no pidfile, so -s cannot find the master",
                 cfg->path ? cfg->path : "the configuration");
        return -1;
    }
    pid = master_read_pidfile(cfg->pidfile, err, errlen);
    if (pid < 0)
        return -1;
    if (kill((pid_t)pid, names[i].sig) < 0) {
        snprintf(err, errlen, "cannot signal process %ld (from %s): %s", pid, cfg->pidfile,
                 strerror(errno));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * The process table
 * ------------------------------------------------------------------------ */

static size_t master_live(const master_t *m) { return m->nprocs; }

static void master_signal_all(master_t *m, int sig, int mark_exiting)
{
    size_t i;

    for (i = 0; i < m->nprocs; i++) {
        if (kill(m->procs[i].pid, sig) < 0 && errno != ESRCH)
            log_error("kill(%ld, %d) failed: %s", (long)m->procs[i].pid, sig, strerror(errno));
        if (mark_exiting)
            m->procs[i].exiting = 1;
    }
}

/* In a worker, once it accepts: tell the master (worker_args_t.on_ready). */
static void master_worker_ready(void *arg)
{
    master_t *m = arg;
    int32_t pid = (int32_t)getpid();

    /* A write of 4 bytes to a pipe is atomic; the signal only wakes the
     * master, so signals merging does not lose a worker. */
    if (write(m->ready_pipe[1], &pid, sizeof(pid)) != (ssize_t)sizeof(pid))
        log_warning("cannot tell the master this worker is ready: %s", strerror(errno));
    if (kill(m->pid, SIGUSR2) < 0)
        log_warning("cannot wake the master: %s", strerror(errno));
    close(m->ready_pipe[1]);
    m->ready_pipe[1] = -1;
}

/* In the child: become worker index, never return. */
static void master_worker_main(master_t *m, int index) __attribute__((noreturn));
static void master_worker_main(master_t *m, int index)
{
    worker_args_t args;
    char label[32];
    size_t i;
    int status;

    /* Still blocked: the worker installs its own handlers, then unblocks. */
    for (i = 0; i < MASTER_NSIGNALS; i++)
        signal(master_signals[i], SIG_DFL);
    snprintf(label, sizeof(label), "worker %d", index);
    log_set_process(label);
#ifdef __linux__
    /* A master killed outright takes its workers down gracefully. */
    if (prctl(PR_SET_PDEATHSIG, SIGQUIT) < 0)
        log_warning("prctl(PR_SET_PDEATHSIG) failed: %s", strerror(errno));
    if (getppid() != m->pid)
        exit(0);
#endif
    free(m->procs);
    m->procs = NULL;
    close(m->ready_pipe[0]);
    m->ready_pipe[0] = -1;
    /* The previous state of a reload in progress is the master's only. */
    model_set_free(m->prev_models);
    auth_free(m->prev_auth);
    tls_free(m->prev_tls);
    config_free(m->prev_cfg);
    free(m->prev_slots);
    status = 0;
    /* Root drops to user/group now, before any library handle exists;
     * anyone else was checked by master_run to need no change. */
    if (geteuid() == 0) {
        if (m->gid != (gid_t)-1 && setgid(m->gid) < 0) {
            log_error("setgid(%ld) failed: %s", (long)m->gid, strerror(errno));
            status = 2;
        } else if (m->user != NULL && initgroups(m->user, m->gid) < 0) {
            log_error("initgroups(%s) failed: %s", m->user, strerror(errno));
            status = 2;
        } else if (m->user == NULL && m->gid != (gid_t)-1 && setgroups(0, NULL) < 0) {
            log_error("setgroups() failed: %s", strerror(errno));
            status = 2;
        } else if (m->uid != (uid_t)-1 && setuid(m->uid) < 0) {
            log_error("setuid(%ld) failed: %s", (long)m->uid, strerror(errno));
            status = 2;
        }
    }
    if (status == 0) {
        memset(&args, 0, sizeof(args));
        args.index = index;
        args.generation = m->generation;
        args.cfg = m->cfg;
        args.models = m->models;
        args.auth = m->auth;
        args.tls = m->tls;
        args.fds = m->fds;
        args.nfds = m->nfds;
        args.ntls = m->ntls;
        args.metrics = m->metrics;
        args.bus_host = m->bus_host;
        args.handoff_fds = m->handoff[0] >= 0 ? m->handoff : NULL;
        args.on_ready = master_worker_ready;
        args.ready_arg = m;
        store_global_init();
        status = worker_run(&args);
        store_global_cleanup();
    }
    model_set_free(m->models);
    auth_free(m->auth);
    tls_free(m->tls);
    config_free(m->cfg);
    free(m->slots);
    free(m->pidfile);
    free(m->user);
    /* The shared areas stay mapped until exit: the other processes use them. */
    for (i = 0; i < m->nfds; i++)
        close(m->fds[i]);
    free(m->fds);
    for (i = 0; i < 2; i++)
        if (m->handoff[i] >= 0)
            close(m->handoff[i]);
    if (m->ready_pipe[1] >= 0)
        close(m->ready_pipe[1]);
    log_close();
    exit(status);
}

static int master_spawn(master_t *m, int index)
{
    pid_t pid;

    if (m->nprocs == m->capprocs) {
        size_t cap = m->capprocs ? m->capprocs * 2 : 16;
        master_proc_t *p = realloc(m->procs, cap * sizeof(*p));
        if (p == NULL) {
            log_error("out of memory while spawning worker %d", index);
            return -1;
        }
        m->procs = p;
        m->capprocs = cap;
    }
    pid = fork();
    if (pid < 0) {
        log_error("fork() failed while spawning worker %d: %s", index, strerror(errno));
        return -1;
    }
    if (pid == 0)
        master_worker_main(m, index);
    m->procs[m->nprocs].pid = pid;
    m->procs[m->nprocs].index = index;
    m->procs[m->nprocs].generation = m->generation;
    m->procs[m->nprocs].started = master_now();
    m->procs[m->nprocs].exiting = 0;
    m->procs[m->nprocs].ready = 0;
    m->nprocs++;
    m->slots[index].respawn_at = 0;
    log_info("worker %d started (pid %ld, generation %u)", index, (long)pid, m->generation);
    return 0;
}

/* A spawn that failed is retried like a crash. */
static void master_schedule_respawn(master_t *m, int index, double uptime)
{
    master_slot_t *slot = &m->slots[index];
    double delay = 0;
    unsigned k;

    if (uptime >= MASTER_STABLE_SECONDS)
        slot->failures = 0;
    slot->failures++;
    if (slot->failures > 1) {
        delay = MASTER_BACKOFF_FIRST;
        for (k = 2; k < slot->failures && delay < MASTER_BACKOFF_MAX; k++)
            delay *= 2;
        if (delay > MASTER_BACKOFF_MAX)
            delay = MASTER_BACKOFF_MAX;
    }
    slot->respawn_at = master_now() + delay;
    if (delay > 0)
        log_info("worker %d will be respawned in %.1f s", index, delay);
}

static void master_describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "was killed by signal %d%s", WTERMSIG(status),
                 WCOREDUMP(status) ? " (core dumped)" : "");
    else
        snprintf(buf, len, "ended with wait status %d", status);
}

static void master_reap(master_t *m)
{
    char what[64];
    pid_t pid;
    int status;
    size_t i;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        master_proc_t p;

        for (i = 0; i < m->nprocs; i++)
            if (m->procs[i].pid == pid)
                break;
        if (i == m->nprocs)
            continue;
        p = m->procs[i];
        m->procs[i] = m->procs[--m->nprocs];
        if (m->metrics != NULL)
            metrics_release(m->metrics, (int)pid);
        master_describe_status(status, what, sizeof(what));
        if (p.exiting || m->stopping) {
            log_info("worker %d (pid %ld, generation %u) %s", p.index, (long)pid, p.generation,
                     what);
            continue;
        }
        if (m->reloading && p.generation == m->generation && !p.ready) {
            snprintf(m->reload_failure, sizeof(m->reload_failure),
                     "new worker %d %s before it accepted (see its log lines above)", p.index,
                     what);
            continue;
        }
        if (m->reloading && p.generation + 1 == m->generation) {
            /* The running generation lost a worker while a reload is
             * pending: respawned only if the reload is rolled back. */
            log_error("worker %d (pid %ld) %s unexpectedly during a reload", p.index, (long)pid,
                      what);
            m->prev_slots[p.index].respawn_at = master_now();
            continue;
        }
        if (p.generation != m->generation)
            continue; /* cannot happen: older generations are all exiting */
        if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {
            log_error("worker %d (pid %ld) exited with status 2, a fatal configuration "
                      "error (see its log lines above): not respawned",
                      p.index, (long)pid);
            m->slots[p.index].fatal = 1;
            continue;
        }
        log_error("worker %d (pid %ld) %s unexpectedly: respawning", p.index, (long)pid, what);
        master_schedule_respawn(m, p.index, master_now() - p.started);
    }
    if (pid < 0 && errno != ECHILD)
        log_error("waitpid() failed: %s", strerror(errno));
}

/* Every slot of the current generation gave up with status 2. */
static int master_all_fatal(const master_t *m)
{
    int i;

    for (i = 0; i < m->nworkers; i++)
        if (!m->slots[i].fatal)
            return 0;
    return 1;
}

static void master_respawn_due(master_t *m)
{
    double now = master_now();
    int i;

    for (i = 0; i < m->nworkers; i++) {
        master_slot_t *slot = &m->slots[i];
        if (slot->respawn_at == 0 || slot->respawn_at > now)
            continue;
        if (master_spawn(m, i) < 0)
            master_schedule_respawn(m, i, 0);
    }
}

/* Arm SIGALRM for the next respawn or stop deadline (or disarm it). */
static void master_arm_timer(master_t *m)
{
    struct itimerval it;
    double next = 0, now = master_now(), delay;
    int i;

    memset(&it, 0, sizeof(it));
    if (m->stopping)
        next = m->stop_deadline;
    else if (m->reloading)
        next = m->reload_deadline;
    if (!m->stopping)
        for (i = 0; i < m->nworkers; i++)
            if (m->slots[i].respawn_at > 0 && (next == 0 || m->slots[i].respawn_at < next))
                next = m->slots[i].respawn_at;
    if (next > 0) {
        delay = next - now;
        if (delay < 0.001)
            delay = 0.001;
        it.it_value.tv_sec = (time_t)delay;
        it.it_value.tv_usec = (suseconds_t)((delay - (double)(time_t)delay) * 1e6);
        if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0)
            it.it_value.tv_usec = 1000;
    }
    if (setitimer(ITIMER_REAL, &it, NULL) < 0)
        log_error("setitimer() failed: %s", strerror(errno));
}

/* ------------------------------------------------------------------------
 * Reload, stop, reopen
 * ------------------------------------------------------------------------ */

/* Whether cfg logs elsewhere or at another level than the running one. */
static int master_log_changed(const config_t *a, const config_t *b)
{
    return a->log_level != b->log_level ||
           strcmp(a->log_file ? a->log_file : "", b->log_file ? b->log_file : "") != 0;
}

/* HUP: build the new state, then start its workers. The running state is
 * kept until every new worker is ready (master_reload_commit) or one of
 * them fails (master_reload_rollback). */
static void master_reload(master_t *m)
{
    char err[512], buf[80];
    config_t *cfg = NULL;
    model_set_t *models = NULL;
    auth_t *auth = NULL;
    tls_t *tls = NULL;
    master_slot_t *slots = NULL;
    char *changes;
    int w;

    snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)(master_now() * 1e6));
    master_notify(buf);
    log_info("reloading %s", m->cfg->path);
    cfg = config_load(m->cfg->path, err, sizeof(err));
    if (cfg == NULL) {
        log_error("reload failed, still running the previous configuration: %s", err);
        goto fail;
    }
    models = model_set_load(cfg->models, err, sizeof(err));
    if (models == NULL) {
        log_error("reload failed, still running the previous configuration: %s: %s", cfg->models,
                  err);
        goto fail;
    }
    auth = auth_load(cfg, err, sizeof(err));
    if (auth == NULL) {
        log_error("reload failed, still running the previous configuration: %s", err);
        goto fail;
    }
    tls = tls_load(cfg, m->ntls > 0, err, sizeof(err));
    if (tls == NULL) {
        log_error("reload failed, still running the previous configuration: %s", err);
        goto fail;
    }
    tls_log_loaded(tls);
    slots = calloc((size_t)m->nworkers, sizeof(*slots));
    if (slots == NULL) {
        log_error("reload failed, still running the previous configuration: out of memory");
        goto fail;
    }
    if (master_log_changed(m->cfg, cfg) && log_open(cfg->log_level, cfg->log_file) < 0) {
        log_error("reload failed, still running the previous configuration: cannot open "
                  "log file %s: %s",
                  cfg->log_file, strerror(errno));
        goto fail;
    }
    changes = config_nonreloadable_changes(m->cfg, cfg);
    if (changes != NULL) {
        log_warning("reload: %s changed; restart dnoded to apply (keeping the running values)",
                    changes);
        free(changes);
    }
    m->prev_cfg = m->cfg;
    m->prev_models = m->models;
    m->prev_auth = m->auth;
    m->prev_tls = m->tls;
    m->prev_slots = m->slots;
    m->cfg = cfg;
    m->models = models;
    m->auth = auth;
    m->tls = tls;
    m->slots = slots;
    m->reloading = 1;
    m->reload_deadline = master_now() + MASTER_READY_SECONDS;
    m->reload_failure[0] = '\0';
    m->generation++;
    for (w = 0; w < m->nworkers; w++)
        if (master_spawn(m, w) < 0)
            snprintf(m->reload_failure, sizeof(m->reload_failure), "cannot fork worker %d", w);
    return;
fail:
    free(slots);
    model_set_free(models);
    auth_free(auth);
    tls_free(tls);
    config_free(cfg);
    master_notify("READY=1");
}

/* Every worker of the new generation accepts: the previous one retires. */
static void master_reload_commit(master_t *m)
{
    int retire = m->handoff[0] >= 0 ? SIGUSR2 : SIGQUIT;
    size_t i;

    /* The new generation accepts on the same sockets; what the old one has
     * not accepted waits in the listen queue, so nothing is refused. With
     * the handoff channel, the old one hands its sessions over (SIGUSR2)
     * instead of closing them (SIGQUIT). */
    for (i = 0; i < m->nprocs; i++) {
        master_proc_t *p = &m->procs[i];
        if (p->generation == m->generation)
            continue;
        if (!p->exiting) {
            p->exiting = 1;
            if (kill(p->pid, retire) < 0 && errno != ESRCH)
                log_error("kill(%ld, %d) failed: %s", (long)p->pid, retire, strerror(errno));
        } else if (p->generation + 2 == m->generation) {
            /* Two generations at most share the bus relay's slots (bus.h):
             * one still draining from two reloads ago stops fast now. */
            log_warning("worker %d (pid %ld) of generation %u is still stopping: fast stop",
                        p->index, (long)p->pid, p->generation);
            if (kill(p->pid, SIGTERM) < 0 && errno != ESRCH)
                log_error("kill(%ld, SIGTERM) failed: %s", (long)p->pid, strerror(errno));
        }
    }
    config_free(m->prev_cfg);
    model_set_free(m->prev_models);
    auth_free(m->prev_auth);
    tls_free(m->prev_tls);
    free(m->prev_slots);
    m->prev_cfg = NULL;
    m->prev_models = NULL;
    m->prev_auth = NULL;
    m->prev_tls = NULL;
    m->prev_slots = NULL;
    m->reloading = 0;
    log_info("reloaded: generation %u started, the previous one is stopping", m->generation);
    master_notify("READY=1");
}

/* A new worker failed before it was ready: stop the new generation and go
 * on with the previous state, which never stopped serving. */
static void master_reload_rollback(master_t *m, const char *why)
{
    size_t i;

    log_error("reload failed, still running the previous configuration: %s", why);
    for (i = 0; i < m->nprocs; i++) {
        master_proc_t *p = &m->procs[i];
        if (p->generation != m->generation)
            continue;
        p->exiting = 1;
        if (kill(p->pid, SIGTERM) < 0 && errno != ESRCH)
            log_error("kill(%ld, SIGTERM) failed: %s", (long)p->pid, strerror(errno));
    }
    if (master_log_changed(m->cfg, m->prev_cfg) &&
        log_open(m->prev_cfg->log_level, m->prev_cfg->log_file) < 0)
        log_error("cannot reopen the previous log file %s: %s", m->prev_cfg->log_file,
                  strerror(errno));
    config_free(m->cfg);
    model_set_free(m->models);
    free(m->slots);
    m->cfg = m->prev_cfg;
    m->models = m->prev_models;
    auth_free(m->auth);
    m->auth = m->prev_auth;
    tls_free(m->tls);
    m->tls = m->prev_tls;
    m->slots = m->prev_slots;
    m->prev_cfg = NULL;
    m->prev_models = NULL;
    m->prev_auth = NULL;
    m->prev_tls = NULL;
    m->prev_slots = NULL;
    m->reloading = 0;
    m->generation--;
    master_notify("READY=1");
}

/* Read the pids workers wrote to the ready pipe. */
static void master_read_ready(master_t *m)
{
    int32_t pids[64];
    ssize_t n;
    size_t i, k;

    while ((n = read(m->ready_pipe[0], pids, sizeof(pids))) > 0) {
        for (k = 0; k < (size_t)n / sizeof(pids[0]); k++)
            for (i = 0; i < m->nprocs; i++)
                if (m->procs[i].pid == (pid_t)pids[k])
                    m->procs[i].ready = 1;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        log_error("cannot read the ready pipe: %s", strerror(errno));
}

/* Ready workers and fatal slots of the current generation. */
static void master_count_ready(const master_t *m, int *ready, int *fatal)
{
    size_t i;
    int w;

    *ready = *fatal = 0;
    for (i = 0; i < m->nprocs; i++)
        if (m->procs[i].generation == m->generation && m->procs[i].ready && !m->procs[i].exiting)
            (*ready)++;
    for (w = 0; w < m->nworkers; w++)
        if (m->slots[w].fatal)
            (*fatal)++;
}

/* Commit or roll back a reload, and tell systemd the first start is done. */
static void master_check_ready(master_t *m)
{
    int ready, fatal;

    master_count_ready(m, &ready, &fatal);
    if (m->reloading) {
        if (m->reload_failure[0] != '\0')
            master_reload_rollback(m, m->reload_failure);
        else if (ready == m->nworkers)
            master_reload_commit(m);
        else if (master_now() >= m->reload_deadline)
            master_reload_rollback(m, "the new workers did not start accepting in time");
    } else if (!m->started && ready > 0 && ready + fatal >= m->nworkers) {
        m->started = 1;
        log_info("master %ld running %d workers", (long)m->pid, ready);
        master_notify("READY=1");
    }
}

static void master_stop(master_t *m, int graceful)
{
    if (graceful && m->stopping)
        return;
    m->stopping = graceful ? 1 : 2;
    m->reloading = 0; /* its state is freed at exit */
    m->stop_deadline = master_now() + (graceful ? m->cfg->shutdown_timeout : 0) +
                       (graceful ? MASTER_KILL_SLACK_SECONDS : MASTER_FAST_STOP_SECONDS);
    log_info("%s stop: %zu workers", graceful ? "graceful" : "fast", master_live(m));
    master_notify("STOPPING=1");
    master_signal_all(m, graceful ? SIGQUIT : SIGTERM, 1);
}

static void master_reopen(master_t *m)
{
    if (log_reopen() < 0)
        return; /* logged; the workers keep their old file too */
    log_info("reopened the log file");
    /* Created by us (as root, perhaps): the workers must be able to open it. */
    if (m->cfg->log_file != NULL && m->cfg->log_file[0] != '\0' &&
        (m->uid != (uid_t)-1 || m->gid != (gid_t)-1) && geteuid() == 0 &&
        chown(m->cfg->log_file, m->uid, m->gid) < 0)
        log_warning("cannot give %s to the workers' user: %s", m->cfg->log_file, strerror(errno));
    master_signal_all(m, SIGUSR1, 0);
}

/* Kill what is left and wait for it (second TERM, or a missed deadline). */
static void master_kill_all(master_t *m)
{
    if (master_live(m) > 0)
        log_warning("killing %zu workers", master_live(m));
    master_signal_all(m, SIGKILL, 1);
    while (m->nprocs > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        size_t i;
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (i = 0; i < m->nprocs; i++)
            if (m->procs[i].pid == pid)
                m->procs[i] = m->procs[--m->nprocs];
    }
    m->nprocs = 0;
}

/* ------------------------------------------------------------------------
 * Running
 * ------------------------------------------------------------------------ */

static int master_setup_signals(sigset_t *blocked)
{
    struct sigaction sa;
    size_t i;

    sigemptyset(blocked);
    for (i = 0; i < MASTER_NSIGNALS; i++)
        sigaddset(blocked, master_signals[i]);
    if (sigprocmask(SIG_BLOCK, blocked, NULL) < 0) {
        log_error("sigprocmask() failed: %s", strerror(errno));
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = master_signal_handler;
    sa.sa_mask = *blocked;
    for (i = 0; i < MASTER_NSIGNALS; i++) {
        if (sigaction(master_signals[i], &sa, NULL) < 0) {
            log_error("sigaction(%d) failed: %s", master_signals[i], strerror(errno));
            return -1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static void master_loop(master_t *m)
{
    sigset_t wait_mask;

    sigemptyset(&wait_mask);
    for (;;) {
        if (m->stopping && master_live(m) == 0)
            break;
        master_arm_timer(m);
        sigsuspend(&wait_mask);
        if (master_sig_child) {
            master_sig_child = 0;
            master_reap(m);
        }
        if (master_sig_terminate > 0) {
            int n = master_sig_terminate;
            master_sig_terminate = 0;
            if (m->stopping == 2 && n > 0) {
                master_kill_all(m); /* a second TERM/INT: at once */
                break;
            }
            master_stop(m, 0);
            if (n > 1) {
                master_kill_all(m);
                break;
            }
        }
        if (master_sig_quit) {
            master_sig_quit = 0;
            master_stop(m, 1);
        }
        if (master_sig_reopen) {
            master_sig_reopen = 0;
            master_reopen(m);
        }
        if (master_sig_ready) {
            master_sig_ready = 0;
            master_read_ready(m);
        }
        /* A HUP during a reload waits for it to finish. */
        if (master_sig_reload && !m->reloading) {
            master_sig_reload = 0;
            if (m->stopping)
                log_info("reload ignored: stopping");
            else
                master_reload(m);
        }
        if (master_sig_alarm) {
            master_sig_alarm = 0;
            if (m->stopping && master_now() >= m->stop_deadline) {
                log_warning("workers did not stop in time");
                master_kill_all(m);
                break;
            }
        }
        if (!m->stopping) {
            master_check_ready(m);
            master_respawn_due(m);
            if (master_all_fatal(m)) {
                log_error("every worker exited with status 2 (fatal configuration error): "
                          "exiting");
                m->status = 1;
                master_stop(m, 0);
            }
        }
    }
}

int master_run(config_t *cfg, model_set_t *models, auth_t *auth, tls_t *tls, int *fds, size_t nfds,
               size_t ntls)
{
    sigset_t blocked;
    master_t m;
    char err[256];
    size_t i;
    int w;

    memset(&m, 0, sizeof(m));
    m.pid = getpid();
    m.cfg = cfg;
    m.models = models;
    m.auth = auth;
    m.tls = tls;
    m.fds = fds;
    m.nfds = nfds;
    m.ntls = ntls;
    m.generation = 1;
    m.status = 1;
    m.ready_pipe[0] = m.ready_pipe[1] = -1;
    m.handoff[0] = m.handoff[1] = -1;
    m.nworkers = master_worker_count(cfg);
    log_set_process("master");
    if (master_lookup_credentials(cfg, &m.uid, &m.gid, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto done;
    }
    if (geteuid() != 0 && ((m.uid != (uid_t)-1 && m.uid != geteuid()) ||
                           (m.gid != (gid_t)-1 && m.gid != getegid()))) {
        log_error("user and group can only be changed when dnoded starts as root");
        goto done;
    }
    if (m.uid != (uid_t)-1) {
        struct passwd *pw = getpwuid(m.uid);
        if (pw == NULL || (m.user = strdup(pw->pw_name)) == NULL) {
            log_error("cannot find the name of user '%s'", cfg->user);
            goto done;
        }
    }
    m.slots = calloc((size_t)m.nworkers, sizeof(*m.slots));
    if (m.slots == NULL)
        goto done;
    if (cfg->pidfile != NULL && cfg->pidfile[0] != '\0' &&
        (m.pidfile = strdup(cfg->pidfile)) == NULL)
        goto done;
    if (master_setup_signals(&blocked) < 0)
        goto done;
    if (pipe2(m.ready_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        log_error("pipe2() failed: %s", strerror(errno));
        goto done;
    }
    if (master_write_pidfile(&m) < 0) {
        free(m.pidfile); /* not ours to remove */
        m.pidfile = NULL;
        goto done;
    }
    if (cfg->log_file != NULL && cfg->log_file[0] != '\0' && m.uid != (uid_t)-1 && geteuid() == 0 &&
        chown(cfg->log_file, m.uid, m.gid) < 0)
        log_warning("cannot give %s to the workers' user: %s", cfg->log_file, strerror(errno));
    hash_init(); /* one secret for every worker: the relay's shared slots use it */
    m.metrics = metrics_new((size_t)m.nworkers * MASTER_METRICS_SLOTS_PER_WORKER);
    if (m.metrics == NULL) {
        log_error("cannot map the shared metrics area: %s", strerror(errno));
        goto done;
    }
    m.bus_host = bus_host_new((unsigned)m.nworkers);
    if (m.bus_host == NULL)
        goto done;
    if (handoff_channel_new(m.handoff) < 0) {
        /* Reloads still work; they close sessions instead of moving them. */
        log_warning("socketpair() failed for the handoff channel: %s; reloads will close "
                    "sessions", strerror(errno));
        m.handoff[0] = m.handoff[1] = -1;
    }
    for (w = 0; w < m.nworkers; w++)
        if (master_spawn(&m, w) < 0)
            master_schedule_respawn(&m, w, 0);
    /* READY=1 once they accept (master_check_ready). */
    m.status = 0;
    master_loop(&m);
    log_info("master exiting");
done:
    if (m.nprocs > 0)
        master_kill_all(&m);
    master_remove_pidfile(&m);
    for (i = 0; i < m.nfds; i++)
        close(m.fds[i]);
    free(m.fds);
    free(m.procs);
    free(m.slots);
    free(m.prev_slots);
    free(m.pidfile);
    free(m.user);
    if (m.ready_pipe[0] >= 0)
        close(m.ready_pipe[0]);
    if (m.ready_pipe[1] >= 0)
        close(m.ready_pipe[1]);
    for (i = 0; i < 2; i++)
        if (m.handoff[i] >= 0)
            close(m.handoff[i]);
    model_set_free(m.prev_models);
    auth_free(m.prev_auth);
    tls_free(m.prev_tls);
    config_free(m.prev_cfg);
    if (m.bus_host != NULL)
        bus_host_free(m.bus_host);
    if (m.metrics != NULL)
        metrics_free(m.metrics);
    model_set_free(m.models);
    auth_free(m.auth);
    tls_free(m.tls);
    config_free(m.cfg);
    return m.status;
}
