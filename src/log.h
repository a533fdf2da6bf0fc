/* log: leveled log lines to stderr or log_file, with the session or
 * connection they concern. Reopened on USR1. Not thread-hot: DB threads
 * may log, a mutex-free single write(2) per line keeps lines whole. */
#ifndef DNODED_LOG_H
#define DNODED_LOG_H

#include <stdint.h>

enum { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARNING, LOG_LEVEL_ERROR };

/* Parse "debug"/"info"/"warning"/"error"; -1 when unknown. */
int log_level_parse(const char *s);
const char *log_level_name(int level);

/* Set the level and destination ("" or NULL = stderr). The file is opened
 * O_APPEND. Returns 0, or -1 with errno (the previous level and destination
 * are kept). Call it, log_close and log_set_process before other threads. */
int log_open(int level, const char *file);
/* Reopen the same file (USR1, after logrotate moved it); a no-op on stderr.
 * Safe while other threads log. Each process holds its own descriptor, so
 * every process that logs must call it. On failure it logs why, keeps
 * writing to the old file and returns -1. */
int log_reopen(void);
void log_set_level(int level);
int log_enabled(int level);
/* A process label put in every line, e.g. "master" or "worker 2". */
void log_set_process(const char *label);
void log_close(void);

/* One line: "2026-11-28T12:00:00.123Z [worker 1] warning: ctx: message".
 * ctx may be NULL; sessions pass their "session 7 127.0.0.1:5000" label.
 * UTC time; control characters and malformed UTF-8 in ctx and message are
 * escaped (\n, \xNN) so client text cannot forge lines; lines longer than
 * 2048 bytes end in "...". Written with one write(2); errno is preserved. */
void log_write(int level, const char *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A budget for log lines a client can cause: at most per_second of them
 * in any one second of the clock, the rest counted in suppressed (the
 * owner reports and resets that count). Zeroed is ready to use. */
typedef struct log_limit {
    int64_t second; /* the second being counted */
    unsigned used;  /* lines taken in it */
    uint64_t suppressed;
} log_limit_t;
/* 1 when one more line fits l's budget (and takes it), else 0 (counted). */
int log_limit_take(log_limit_t *l, unsigned per_second);

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_write(LOG_LEVEL_DEBUG, NULL, __VA_ARGS__);                                         \
    } while (0)
#define log_info(...) log_write(LOG_LEVEL_INFO, NULL, __VA_ARGS__)
#define log_warning(...) log_write(LOG_LEVEL_WARNING, NULL, __VA_ARGS__)
#define log_error(...) log_write(LOG_LEVEL_ERROR, NULL, __VA_ARGS__)

#endif
