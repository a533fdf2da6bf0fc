/* check_http: unit tests for the pure parts of src/http.c: request path
 * decoding (what may and may not name a file under the docroot) and
 * Content-Type by extension. Serving, realpath containment and symlinks
 * are covered by tests/integration/http.test.js against the daemon. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "run_suite.h"

static int decode(const char *path, char *out, size_t outlen)
{
    return http_decode_path(path, strlen(path), out, outlen);
}

START_TEST(test_decode_plain_and_encoded)
{
    char out[256];

    ck_assert_int_eq(decode("/", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "/");
    ck_assert_int_eq(decode("/app.js", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "/app.js");
    ck_assert_int_eq(decode("/a%20b/c%2Ejs", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "/a b/c.js");
    ck_assert_int_eq(decode("/sub/", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "/sub/");
    ck_assert_int_eq(decode("/x..y/a.b..c", out, sizeof(out)), 0); /* dots inside names */
    ck_assert_str_eq(out, "/x..y/a.b..c");
    ck_assert_int_eq(decode("/%C3%BC.txt", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "/\xc3\xbc.txt");
}
END_TEST

START_TEST(test_decode_refuses_escapes)
{
    static const char *const forbidden[] = {
        "/..",       "/../x",     "/a/../../x", "/.",     "/./x",
        "/%2e%2e/x", "/%2E%2e/x", "/.%2e/x",    "/%2e/x", "/a%2f..%2fx",
        "/a%2Fb",    "/..%5cx",   "/a\\b",      "/%00",   "/a%00.html",
    };
    char out[256];
    size_t i;

    for (i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++)
        ck_assert_msg(decode(forbidden[i], out, sizeof(out)) == 403, "%s allowed", forbidden[i]);
}
END_TEST

START_TEST(test_decode_bad_and_hidden)
{
    char out[16];

    ck_assert_int_eq(decode("", out, sizeof(out)), 400);
    ck_assert_int_eq(decode("x", out, sizeof(out)), 400);
    ck_assert_int_eq(decode("/%", out, sizeof(out)), 400);
    ck_assert_int_eq(decode("/%4", out, sizeof(out)), 400);
    ck_assert_int_eq(decode("/%zz", out, sizeof(out)), 400);
    ck_assert_int_eq(decode("/.git/config", out, sizeof(out)), 404);
    ck_assert_int_eq(decode("/.hidden", out, sizeof(out)), 404);
    ck_assert_int_eq(decode("/a/.env", out, sizeof(out)), 404);
    ck_assert_int_eq(decode("/%2ehtaccess", out, sizeof(out)), 404);
    ck_assert_int_eq(decode("/this/is/far/too/long", out, sizeof(out)), 404);
}
END_TEST

START_TEST(test_mime_types)
{
    ck_assert_str_eq(http_mime_type("/x/index.html"), "text/html; charset=utf-8");
    ck_assert_str_eq(http_mime_type("/x/app.JS"), "text/javascript; charset=utf-8");
    ck_assert_str_eq(http_mime_type("a.css"), "text/css; charset=utf-8");
    ck_assert_str_eq(http_mime_type("models.json"), "application/json");
    ck_assert_str_eq(http_mime_type("logo.svg"), "image/svg+xml");
    ck_assert_str_eq(http_mime_type("x.png"), "image/png");
    ck_assert_str_eq(http_mime_type("README"), "application/octet-stream");
    ck_assert_str_eq(http_mime_type("/dir.js/file"), "application/octet-stream");
    ck_assert_str_eq(http_mime_type("archive.tar.gz"), "application/octet-stream");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("http");

    tcase_add_test(tc, test_decode_plain_and_encoded);
    tcase_add_test(tc, test_decode_refuses_escapes);
    tcase_add_test(tc, test_decode_bad_and_hidden);
    tcase_add_test(tc, test_mime_types);
    suite_add_tcase(s, tc);
    return check_run(s);
}
