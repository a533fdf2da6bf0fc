/* run_suite: how every Check program of tests/unit runs its suite: Check's
 * output as CK_ENV chooses (make check asks for TAP), the exit status from
 * the failures. Header only; not part of dnoded. */
#ifndef DNODED_TEST_RUN_SUITE_H
#define DNODED_TEST_RUN_SUITE_H

#include <check.h>
#include <stdlib.h>

/* Run suite s (and free it): EXIT_SUCCESS when every case passed. */
static inline int check_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* Run the tests fns[0..n-1] as one case of suite name, each between setup
 * and teardown (either may be NULL). */
static inline int check_run_tests(const char *name, void (*setup)(void), void (*teardown)(void),
                                  const TTest *const *fns, size_t n)
{
    Suite *s = suite_create(name);
    TCase *tc = tcase_create(name);
    size_t i;

    if (setup != NULL || teardown != NULL)
        tcase_add_checked_fixture(tc, setup, teardown);
    for (i = 0; i < n; i++)
        tcase_add_test(tc, fns[i]);
    suite_add_tcase(s, tc);
    return check_run(s);
}

#endif
