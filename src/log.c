/* log: formats each line on the stack and hands it to one write(2) on stderr
 * or the O_APPEND log file, so lines from DB threads and from processes that
 * share the file never interleave. Owns the destination, level and process
 * label (process-wide by nature); knows sessions only as the ctx text. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dup3 */
#endif
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Longest line written, newline included; longer ones end in "...". Below
 * PIPE_BUF, so a line to a pipe (journald, a supervisor) is atomic too. */
#define LOG_LINE_MAX 2048

/* The level and fd are atomics so that log_set_level and log_reopen may run
 * while DB threads log; log_reopen keeps the fd number (dup3), so a writer
 * never sees a closed one. log_open, log_close and log_set_process run at
 * start-up or right after fork, before other threads exist. */
static atomic_int log_min_level = LOG_LEVEL_INFO;
static atomic_int log_fd = STDERR_FILENO;
static char *log_path; /* NULL while logging to stderr */
static char log_label[32];

static const char *const log_names[] = {"debug", "info", "warning", "error"};

int log_level_parse(const char *s)
{
    int i;

    for (i = LOG_LEVEL_DEBUG; s && i <= LOG_LEVEL_ERROR; i++) {
        if (strcmp(s, log_names[i]) == 0)
            return i;
    }
    return -1;
}

const char *log_level_name(int level)
{
    return level >= LOG_LEVEL_DEBUG && level <= LOG_LEVEL_ERROR ? log_names[level] : "unknown";
}

static int log_open_file(const char *file)
{
    return open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int log_open(int level, const char *file)
{
    int fd = STDERR_FILENO, old;
    char *path = NULL;

    if (level < LOG_LEVEL_DEBUG || level > LOG_LEVEL_ERROR) {
        errno = EINVAL;
        return -1;
    }
    if (file && file[0] != '\0') {
        if (!(path = strdup(file)))
            return -1;
        if ((fd = log_open_file(file)) < 0) {
            free(path);
            return -1;
        }
    }
    old = atomic_exchange(&log_fd, fd);
    if (old != STDERR_FILENO && old != fd)
        close(old);
    free(log_path);
    log_path = path;
    atomic_store(&log_min_level, level);
    return 0;
}

int log_reopen(void)
{
    int fd, cur = atomic_load(&log_fd);

    if (!log_path)
        return 0;
    if ((fd = log_open_file(log_path)) < 0) {
        log_error("cannot reopen log file %s: %s", log_path, strerror(errno));
        return -1;
    }
    if (dup3(fd, cur, O_CLOEXEC) < 0) {
        int saved = errno;

        close(fd);
        log_error("cannot reopen log file %s: dup3: %s", log_path, strerror(saved));
        errno = saved;
        return -1;
    }
    close(fd);
    return 0;
}

void log_set_level(int level)
{
    if (level >= LOG_LEVEL_DEBUG && level <= LOG_LEVEL_ERROR)
        atomic_store(&log_min_level, level);
}

int log_limit_take(log_limit_t *l, unsigned per_second)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    if (ts.tv_sec != l->second) {
        l->second = ts.tv_sec;
        l->used = 0;
    }
    if (l->used < per_second) {
        l->used++;
        return 1;
    }
    l->suppressed++;
    return 0;
}

int log_enabled(int level)
{
    return level >= atomic_load_explicit(&log_min_level, memory_order_relaxed);
}

void log_set_process(const char *label)
{
    size_t i, j = 0;

    for (i = 0; label && label[i] && j + 1 < sizeof log_label; i++) {
        unsigned char c = (unsigned char)label[i];
        if (c >= 0x20 && c < 0x7f)
            log_label[j++] = (char)c;
    }
    log_label[j] = '\0';
}

void log_close(void)
{
    int old = atomic_exchange(&log_fd, STDERR_FILENO);

    if (old != STDERR_FILENO)
        close(old);
    free(log_path);
    log_path = NULL;
}

/* ------------------------------------------------------------ formatting */

/* A line under construction. Once something does not fit the line is full
 * and takes nothing more; escapes and UTF-8 sequences go in whole or not
 * at all, plain text as far as it fits. */
struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    size_t cap; /* leaves room for "...\n" */
    int full;
};

static void line_add(struct line *l, const char *s, size_t n)
{
    if (l->full || n > l->cap - l->len) {
        l->full = 1;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

/* Length of the well-formed UTF-8 sequence of 2-4 bytes at s, or 0. C1
 * controls (U+0080..U+009F) count as malformed: some terminals obey them. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t len, i;

    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (s[0] == 0xc2)
        lo = 0xa0;
    else if (s[0] == 0xe0)
        lo = 0xa0; /* overlong */
    else if (s[0] == 0xed)
        hi = 0x9f; /* surrogates */
    else if (s[0] == 0xf0)
        lo = 0x90; /* overlong */
    else if (s[0] == 0xf4)
        hi = 0x8f; /* above U+10FFFF */
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return len;
}

/* Copy text that may come from a client: control characters and malformed
 * UTF-8 become \n, \r, \t or \xNN, so nobody can start a forged line or
 * drive the terminal of whoever reads the log. Backslashes pass unchanged. */
static void line_add_escaped(struct line *l, const char *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;

    while (i < n && !l->full) {
        unsigned char c = s[i];
        char esc[5];
        size_t u;

        if (c >= 0x20 && c < 0x7f) {
            size_t run = 1;

            while (i + run < n && s[i + run] >= 0x20 && s[i + run] < 0x7f)
                run++;
            if (run > l->cap - l->len) {
                run = l->cap - l->len;
                l->full = 1;
            }
            memcpy(l->buf + l->len, text + i, run);
            l->len += run;
            i += run;
            continue;
        }
        if (c >= 0x80 && (u = utf8_len(s + i, n - i)) > 0) {
            line_add(l, text + i, u);
            i += u;
            continue;
        }
        if (c == '\n')
            line_add(l, "\\n", 2);
        else if (c == '\r')
            line_add(l, "\\r", 2);
        else if (c == '\t')
            line_add(l, "\\t", 2);
        else {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            line_add(l, esc, 4);
        }
        i++;
    }
}

static void line_add_time(struct line *l)
{
    struct timespec ts = {0, 0};
    struct tm tm;
    char buf[64];
    int n;

    if (clock_gettime(CLOCK_REALTIME, &ts) < 0 || !gmtime_r(&ts.tv_sec, &tm))
        memset(&tm, 0, sizeof tm);
    n = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000L);
    if (n > 0)
        line_add(l, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* One write(2) per line; a short write (a signal, a full disk) gets a few
 * more tries for the rest. Failures are dropped: a logger has nowhere
 * else to report them. */
static void log_emit(const char *buf, size_t len)
{
    int fd = atomic_load(&log_fd), tries;

    for (tries = 0; len > 0 && tries < 4; tries++) {
        ssize_t n = write(fd, buf, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

void log_write(int level, const char *ctx, const char *fmt, ...)
{
    int saved_errno = errno; /* callers log, then still look at errno */
    char msg[LOG_LINE_MAX];
    struct line l;
    va_list ap;
    int n, truncated;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0; /* an encoding error: write the prefix, no message */

    truncated = (size_t)n >= sizeof msg;
    if (truncated)
        n = (int)sizeof msg - 1;

    l.len = 0;
    l.cap = sizeof l.buf - 4;
    l.full = 0;
    line_add_time(&l);
    if (log_label[0] != '\0') {
        line_add(&l, "[", 1);
        line_add(&l, log_label, strlen(log_label));
        line_add(&l, "] ", 2);
    }
    line_add(&l, log_level_name(level), strlen(log_level_name(level)));
    line_add(&l, ": ", 2);
    if (ctx) {
        line_add_escaped(&l, ctx, strlen(ctx));
        line_add(&l, ": ", 2);
    }
    line_add_escaped(&l, msg, (size_t)n);
    if (l.full || truncated) {
        memcpy(l.buf + l.len, "...", 3);
        l.len += 3;
    }
    l.buf[l.len++] = '\n';
    log_emit(l.buf, l.len);
    errno = saved_errno;
}
