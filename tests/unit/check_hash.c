/* check_hash: unit tests for src/hash.c and the channel table's use of it:
 * channel names a client picks to share one slot under a public hash
 * spread under the keyed one, and every process forked after hash_init
 * computes the same values (the bus relay's slots in shared memory depend
 * on it). */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus_carrier.h"
#include "hash.h"
#include "run_suite.h"

#define BUCKETS 1024
#define NAMES 256

/* FNV-1a 64, the public hash the channel table used before. */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

/* NAMES channel names whose FNV-1a values share one bucket of BUCKETS:
 * what an attacker computes offline. */
static char (*colliding_names(void))[32]
{
    char (*names)[32] = calloc(NAMES, sizeof(*names));
    unsigned long i;
    int n = 0;

    ck_assert_ptr_nonnull(names);
    for (i = 0; n < NAMES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "/todos/%lx", i);
        if (fnv1a(name) % BUCKETS == 7)
            memcpy(names[n++], name, sizeof(name));
    }
    return names;
}

START_TEST(test_public_collisions_spread)
{
    char(*names)[32] = colliding_names();
    static unsigned char used[BUCKETS];
    int i, distinct = 0;

    memset(used, 0, sizeof(used));
    for (i = 0; i < NAMES; i++) {
        uint64_t b = bus_core_hash(names[i]) % BUCKETS;
        if (!used[b]++)
            distinct++;
    }
    /* 256 names over 1024 buckets at random: about 226 distinct; all in
     * one bucket only if the hash were the public one. */
    ck_assert_int_gt(distinct, 150);
    free(names);
}
END_TEST

START_TEST(test_same_after_fork)
{
    const char *name = "/todos/shared";
    uint64_t mine, theirs = 0;
    int fds[2], status;
    pid_t pid;

    hash_init();
    mine = hash_keyed(name, strlen(name));
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        uint64_t h = hash_keyed(name, strlen(name));
        _exit(write(fds[1], &h, sizeof(h)) == (ssize_t)sizeof(h) ? 0 : 1);
    }
    ck_assert_int_eq(read(fds[0], &theirs, sizeof(theirs)), (ssize_t)sizeof(theirs));
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    close(fds[0]);
    close(fds[1]);
    ck_assert(mine == theirs);
    /* and it depends on every byte */
    ck_assert(hash_keyed("/todos/sharee", 13) != mine);
}
END_TEST

int main(void)
{
    const TTest *tests[] = {test_public_collisions_spread, test_same_after_fork};

    return check_run_tests("hash", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
