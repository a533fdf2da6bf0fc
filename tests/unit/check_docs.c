/* check_docs: dnoded.conf(5) documents every key of the config table, with
 * its default and whether a reload applies it, and etc/dnoded.conf lists
 * every key. Reads the files from $DNODED_SRCDIR (set by make check). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "run_suite.h"

static char *read_source_file(const char *rel)
{
    const char *srcdir = getenv("DNODED_SRCDIR");
    char path[4096];
    FILE *in;
    char *buf;
    long n;

    snprintf(path, sizeof path, "%s/%s", srcdir ? srcdir : ".", rel);
    in = fopen(path, "rb");
    ck_assert_msg(in != NULL, "cannot open %s (set DNODED_SRCDIR)", path);
    ck_assert_int_eq(fseek(in, 0, SEEK_END), 0);
    n = ftell(in);
    ck_assert_int_ge(n, 0);
    rewind(in);
    buf = malloc((size_t)n + 2);
    ck_assert_ptr_nonnull(buf);
    buf[0] = '\n'; /* so a match at the very start still follows a newline */
    ck_assert_int_eq(fread(buf + 1, 1, (size_t)n, in), (size_t)n);
    buf[n + 1] = '\0';
    fclose(in);
    return buf;
}

/* The text documenting key in the man page: from its `.BI "key = "` line
 * to the next .TP or .SH. NULL when the key has no entry. */
static char *man_entry(const char *page, const char *key)
{
    char head[128];
    const char *start, *end, *tp, *sh;
    char *out;

    snprintf(head, sizeof head, "\n.BI \"%s = \"", key);
    start = strstr(page, head);
    if (start == NULL)
        return NULL;
    tp = strstr(start + 1, "\n.TP");
    sh = strstr(start + 1, "\n.SH");
    end = tp == NULL ? sh : sh == NULL ? tp : tp < sh ? tp : sh;
    if (end == NULL)
        end = start + strlen(start);
    out = strndup(start, (size_t)(end - start));
    ck_assert_ptr_nonnull(out);
    return out;
}

START_TEST(test_man_page_documents_every_key)
{
    char *page = read_source_file("man/dnoded.conf.5");
    size_t i, n = config_key_count();

    ck_assert_uint_gt(n, 20);
    for (i = 0; i < n; i++) {
        const config_key_info_t *k = config_key_at(i);
        char *entry = man_entry(page, k->name);

        ck_assert_msg(entry != NULL, "man/dnoded.conf.5 has no entry .BI \"%s = \"", k->name);
        ck_assert_msg(strstr(entry, "Default:") != NULL, "%s: no default in dnoded.conf.5",
                      k->name);
        if (k->default_text[0] == '\0')
            ck_assert_msg(strstr(entry, "Default: empty") != NULL,
                          "%s: dnoded.conf.5 should say the default is empty", k->name);
        else if (strchr(k->default_text, ' ') == NULL &&
                 (strchr(k->default_text, '/') == NULL || strstr(k->default_text, "://")))
            /* a plain value; prose ("... beside the config file") and the
             * build's install path are not compared */
            ck_assert_msg(strstr(entry, k->default_text) != NULL,
                          "%s: dnoded.conf.5 does not give the default %s", k->name,
                          k->default_text);
        if (k->reloadable)
            ck_assert_msg(strstr(entry, "Reload: applies") != NULL,
                          "%s: a reload applies it, dnoded.conf.5 should say so", k->name);
        else
            ck_assert_msg(strstr(entry, "Reload: restart needed") != NULL,
                          "%s: a reload cannot change it, dnoded.conf.5 should say so", k->name);
        if (k->repeatable)
            ck_assert_msg(strstr(entry, "May repeat") != NULL,
                          "%s: dnoded.conf.5 should say it may repeat", k->name);
        free(entry);
    }
    free(page);
}
END_TEST

START_TEST(test_example_config_lists_every_key)
{
    char *conf = read_source_file("etc/dnoded.conf");
    size_t i, n = config_key_count();
    char line[128];

    for (i = 0; i < n; i++) {
        const char *name = config_key_at(i)->name;
        snprintf(line, sizeof line, "\n#%s =", name);
        ck_assert_msg(strstr(conf, line) != NULL, "etc/dnoded.conf does not list '#%s ='", name);
    }
    free(conf);
}
END_TEST

/* dnoded.8 names every -s signal and every signal the master obeys. */
START_TEST(test_daemon_page_lists_signals)
{
    static const char *const words[] = {"reload",  "quit",        "stop",    "reopen",
                                        "SIGHUP",  "SIGQUIT",     "SIGTERM", "SIGINT",
                                        "SIGUSR1", "EXIT STATUS", "FILES",   "EXAMPLES"};
    char *page = read_source_file("man/dnoded.8");
    size_t i;

    for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        ck_assert_msg(strstr(page, words[i]) != NULL, "man/dnoded.8 does not mention %s", words[i]);
    free(page);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("docs");
    TCase *tc = tcase_create("docs");

    tcase_add_test(tc, test_man_page_documents_every_key);
    tcase_add_test(tc, test_example_config_lists_every_key);
    tcase_add_test(tc, test_daemon_page_lists_signals);
    suite_add_tcase(s, tc);
    return check_run(s);
}
