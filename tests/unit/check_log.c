/* check_log: unit tests for src/log.c: the line format, levels, escaping of
 * client text, truncation, reopening after a rename, and whole lines when
 * several processes append to one file. Each test logs to its own file in a
 * fresh temporary directory (Check forks per test, so state does not leak). */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "run_suite.h"

static char dir[64];
static char file[128];

static void setup(void)
{
    strcpy(dir, "/tmp/check_log.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/dnoded.log", dir);
}

static void teardown(void)
{
    char moved[160];

    log_close();
    snprintf(moved, sizeof moved, "%s.1", file);
    ck_assert(unlink(file) == 0 || errno == ENOENT);
    ck_assert(unlink(moved) == 0 || errno == ENOENT);
    ck_assert_int_eq(rmdir(dir), 0);
}

/* The whole content of path, malloc'd and NUL-terminated. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long n;

    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    ck_assert_int_ge(n, 0);
    rewind(f);
    ck_assert_ptr_nonnull(buf = malloc((size_t)n + 1));
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    ck_assert_int_eq(fclose(f), 0);
    return buf;
}

static size_t count_char(const char *s, char c)
{
    size_t n = 0;

    for (; *s; s++)
        n += *s == c;
    return n;
}

/* "2026-11-28T12:00:00.123Z " */
static int is_timestamp(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ ";
    size_t i;

    for (i = 0; shape[i]; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return 0;
    }
    return 1;
}

START_TEST(test_line_format)
{
    char *text, *second;

    ck_assert_int_eq(log_open(LOG_LEVEL_INFO, file), 0);
    log_set_process("worker 2");
    log_write(LOG_LEVEL_WARNING, "session 7 127.0.0.1:5000", "slow client, %d bytes queued",
              42);
    log_set_process(NULL);
    log_error("plain %s", "message");
    text = slurp(file);
    second = strchr(text, '\n') + 1;
    ck_assert_msg(is_timestamp(text), "bad timestamp in \"%s\"", text);
    ck_assert_int_eq(strncmp(text + 25, "[worker 2] warning: session 7 127.0.0.1:5000: "
                                        "slow client, 42 bytes queued\n", second - text - 25), 0);
    ck_assert_msg(is_timestamp(second), "bad timestamp in \"%s\"", second);
    ck_assert_str_eq(second + 25, "error: plain message\n");
    free(text);
}
END_TEST

START_TEST(test_levels)
{
    char *text;

    ck_assert_int_eq(log_open(LOG_LEVEL_WARNING, file), 0);
    ck_assert(!log_enabled(LOG_LEVEL_INFO));
    ck_assert(log_enabled(LOG_LEVEL_ERROR));
    log_debug("not shown %d", 1);
    log_info("not shown %d", 2);
    log_warning("shown %d", 3);
    log_set_level(LOG_LEVEL_DEBUG);
    log_debug("shown %d", 4);
    text = slurp(file);
    ck_assert_uint_eq(count_char(text, '\n'), 2);
    ck_assert_ptr_null(strstr(text, "not shown"));
    ck_assert_ptr_nonnull(strstr(text, "warning: shown 3\n"));
    ck_assert_ptr_nonnull(strstr(text, "debug: shown 4\n"));
    free(text);
    ck_assert_int_eq(log_open(99, file), -1);
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(test_escapes_client_text)
{
    char *text;

    ck_assert_int_eq(log_open(LOG_LEVEL_INFO, file), 0);
    /* a method name from a client trying to forge a second line */
    log_write(LOG_LEVEL_INFO, "ses\rsion", "unknown method '%s'",
              "x\n2026-01-01T00:00:00.000Z error: forged\ttab\x1b[31m");
    log_info("utf-8 kept: %s, broken: %s, C1: %s", "caf\xc3\xa9 \xe2\x82\xac", "\xc3(\xff",
             "\xc2\x9b");
    text = slurp(file);
    ck_assert_uint_eq(count_char(text, '\n'), 2);
    ck_assert_ptr_nonnull(strstr(text, "info: ses\\rsion: unknown method 'x\\n2026-01-01T00:00:"
                                       "00.000Z error: forged\\ttab\\x1b[31m'\n"));
    ck_assert_ptr_nonnull(strstr(text, "utf-8 kept: caf\xc3\xa9 \xe2\x82\xac, broken: \\xc3(\\xff,"
                                       " C1: \\xc2\\x9b\n"));
    free(text);
}
END_TEST

START_TEST(test_truncates_long_lines)
{
    char *big = malloc(10000), *text;
    size_t len;

    ck_assert_ptr_nonnull(big);
    memset(big, 'a', 9999);
    big[9999] = '\0';
    big[2030] = '\n'; /* an escape right at the limit must not overflow */
    ck_assert_int_eq(log_open(LOG_LEVEL_INFO, file), 0);
    log_info("%s", big);
    memset(big, '\n', 9999); /* every byte grows to two */
    log_info("%s", big);
    log_info("after");
    text = slurp(file);
    ck_assert_uint_eq(count_char(text, '\n'), 3);
    len = (size_t)(strchr(text, '\n') - text) + 1;
    ck_assert_uint_le(len, 2048);
    ck_assert(len > 2000);
    ck_assert_int_eq(strncmp(text + len - 4, "...\n", 4), 0);
    ck_assert_ptr_nonnull(strstr(text, "\\n\\n...\n"));
    ck_assert_ptr_nonnull(strstr(text, "info: after\n"));
    free(text);
    free(big);
}
END_TEST

START_TEST(test_reopen_after_rename)
{
    char moved[160], *old_text, *new_text;

    snprintf(moved, sizeof moved, "%s.1", file);
    ck_assert_int_eq(log_open(LOG_LEVEL_INFO, file), 0);
    log_info("before rotation");
    ck_assert_int_eq(rename(file, moved), 0);
    log_info("still to the old file");
    ck_assert_int_eq(log_reopen(), 0);
    log_info("after rotation");
    old_text = slurp(moved);
    new_text = slurp(file);
    ck_assert_ptr_nonnull(strstr(old_text, "before rotation\n"));
    ck_assert_ptr_nonnull(strstr(old_text, "still to the old file\n"));
    ck_assert_ptr_null(strstr(old_text, "after rotation"));
    ck_assert_uint_eq(count_char(new_text, '\n'), 1);
    ck_assert_ptr_nonnull(strstr(new_text, "info: after rotation\n"));
    free(old_text);
    free(new_text);
}
END_TEST

START_TEST(test_failed_open_keeps_destination)
{
    char bad[160], *text;

    snprintf(bad, sizeof bad, "%s/missing/dir.log", dir);
    ck_assert_int_eq(log_open(LOG_LEVEL_INFO, file), 0);
    ck_assert_int_eq(log_open(LOG_LEVEL_DEBUG, bad), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert(!log_enabled(LOG_LEVEL_DEBUG));
    log_info("kept");
    text = slurp(file);
    ck_assert_ptr_nonnull(strstr(text, "info: kept\n"));
    free(text);
}
END_TEST

/* Never truncate or overwrite: the file may hold earlier runs, and other
 * processes may have it open too. */
START_TEST(test_appends_to_existing_file)
{
    FILE *f = fopen(file, "w");
    char *text;

    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs("an earlier line\n", f), 0);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(log_open(LOG_LEVEL_INFO, file), 0);
    log_info("appended");
    text = slurp(file);
    ck_assert_int_eq(strncmp(text, "an earlier line\n", 16), 0);
    ck_assert_ptr_nonnull(strstr(text + 16, "info: appended\n"));
    free(text);
}
END_TEST

START_TEST(test_preserves_errno)
{
    ck_assert_int_eq(log_open(LOG_LEVEL_INFO, file), 0);
    errno = EAGAIN;
    log_info("x");
    ck_assert_int_eq(errno, EAGAIN);
}
END_TEST

/* Writers in several processes appending to one file: every line arrives
 * whole. Bounded: 4 processes x 200 lines of ~1.5 KiB. */
START_TEST(test_concurrent_writers_keep_lines_whole)
{
    enum { PROCS = 4, LINES = 200, BODY = 1500 };
    char body[BODY + 1], *text, *line;
    size_t n = 0;
    int i;

    ck_assert_int_eq(log_open(LOG_LEVEL_INFO, file), 0);
    for (i = 0; i < PROCS; i++) {
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            int j;

            memset(body, 'a' + i, BODY);
            body[BODY] = '\0';
            for (j = 0; j < LINES; j++)
                log_info("%d %s", i, body);
            _exit(0);
        }
    }
    for (i = 0; i < PROCS; i++) {
        int status;

        ck_assert_int_gt(wait(&status), 0);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    text = slurp(file);
    for (line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *msg = strstr(line, "info: ");
        size_t k;
        int who;

        ck_assert_ptr_nonnull(msg);
        ck_assert_int_eq(sscanf(msg, "info: %d ", &who), 1);
        msg += strlen("info: 0 ");
        ck_assert_uint_eq(strlen(msg), BODY);
        for (k = 0; k < BODY; k++)
            ck_assert_int_eq(msg[k], 'a' + who);
        n++;
    }
    ck_assert_uint_eq(n, PROCS * LINES);
    free(text);
}
END_TEST

START_TEST(test_limit_budget_per_second)
{
    log_limit_t l;
    int i, took = 0;

    memset(&l, 0, sizeof(l));
    for (i = 0; i < 25; i++)
        took += log_limit_take(&l, 10);
    /* 25 lines within a second or two of the clock: at most twice the
     * budget when the second turned meanwhile, and what was refused is
     * counted. */
    ck_assert_int_ge(took, 10);
    ck_assert_int_le(took, 20);
    ck_assert_uint_eq(l.suppressed, (uint64_t)(25 - took));
    l.second -= 5; /* a later second: the budget is whole again */
    ck_assert_int_eq(log_limit_take(&l, 10), 1);
    ck_assert_uint_eq(l.used, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_line_format);
    tcase_add_test(tc, test_levels);
    tcase_add_test(tc, test_escapes_client_text);
    tcase_add_test(tc, test_truncates_long_lines);
    tcase_add_test(tc, test_reopen_after_rename);
    tcase_add_test(tc, test_failed_open_keeps_destination);
    tcase_add_test(tc, test_limit_budget_per_second);
    tcase_add_test(tc, test_appends_to_existing_file);
    tcase_add_test(tc, test_preserves_errno);
    tcase_add_test(tc, test_concurrent_writers_keep_lines_whole);
    suite_add_tcase(s, tc);

    return check_run(s);
}
