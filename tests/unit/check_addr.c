/* check_addr: unit tests for src/addr.c: address ranges as the config
 * writes them, and peers (as connections name them) inside or outside. */
#include <check.h>
#include <stdlib.h>

#include "addr.h"
#include "run_suite.h"

START_TEST(test_ranges_parse)
{
    addr_range_t r;

    ck_assert_int_eq(addr_range_parse("127.0.0.0/8", &r), 0);
    ck_assert_uint_eq(r.bits, 8);
    ck_assert_int_eq(addr_range_parse("10.1.2.3", &r), 0);
    ck_assert_uint_eq(r.bits, 32);
    ck_assert_int_eq(addr_range_parse("::1", &r), 0);
    ck_assert_uint_eq(r.bits, 128);
    ck_assert_int_eq(addr_range_parse("fd00::/8", &r), 0);
    ck_assert_int_eq(addr_range_parse("10.0.0.0/33", &r), -1);
    ck_assert_int_eq(addr_range_parse("10.0.0.0/", &r), -1);
    ck_assert_int_eq(addr_range_parse("10.0.0.0/-1", &r), -1);
    ck_assert_int_eq(addr_range_parse("localhost", &r), -1);
    ck_assert_int_eq(addr_range_parse("", &r), -1);
}
END_TEST

START_TEST(test_peers_allowed)
{
    char *loop[] = {"127.0.0.0/8", "::1"};
    char *lan[] = {"10.0.0.0/8", "192.168.1.128/25", "fd00::/8"};

    ck_assert_int_eq(addr_peer_allowed("127.0.0.1:5000", loop, 2), 1);
    ck_assert_int_eq(addr_peer_allowed("127.9.9.9:1", loop, 2), 1);
    ck_assert_int_eq(addr_peer_allowed("[::1]:5000", loop, 2), 1);
    ck_assert_int_eq(addr_peer_allowed("[::ffff:127.0.0.1]:5000", loop, 2), 1); /* v4-mapped */
    ck_assert_int_eq(addr_peer_allowed("128.0.0.1:5000", loop, 2), 0);
    ck_assert_int_eq(addr_peer_allowed("[::2]:5000", loop, 2), 0);
    ck_assert_int_eq(addr_peer_allowed("10.200.1.1:80", lan, 3), 1);
    ck_assert_int_eq(addr_peer_allowed("192.168.1.200:80", lan, 3), 1);
    ck_assert_int_eq(addr_peer_allowed("192.168.1.100:80", lan, 3), 0);
    ck_assert_int_eq(addr_peer_allowed("[fd12::5]:80", lan, 3), 1);
    ck_assert_int_eq(addr_peer_allowed("local", lan, 3), 0);
    ck_assert_int_eq(addr_peer_allowed("127.0.0.1:5000", lan, 0), 0); /* empty: nobody */
}
END_TEST

int main(void)
{
    const TTest *tests[] = {test_ranges_parse, test_peers_allowed};

    return check_run_tests("addr", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
