/* check_ws: unit tests for the pure parts of src/ws.c: the handshake's
 * Sec-WebSocket-Accept, the Origin policy (allowed_origins or same host),
 * and the headers of the frames we write. Framing on a live connection is
 * covered by tests/integration/websocket.test.js. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ws.h"
#include "run_suite.h"

START_TEST(test_accept_key_rfc_example)
{
    char out[32];

    /* RFC 6455, section 1.3. */
    ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
END_TEST

START_TEST(test_accept_key_refuses_bad_keys)
{
    char out[32];

    ck_assert_int_eq(ws_accept_key(NULL, out, sizeof(out)), -1);
    ck_assert_int_eq(ws_accept_key("", out, sizeof(out)), -1);
    ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ", out, sizeof(out)), -1);
    ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==x", out, sizeof(out)), -1);
    ck_assert_int_eq(ws_accept_key("!!!!!!!!!!!!!!!!!!!!!!==", out, sizeof(out)), -1);
    /* 17 bytes of base64 padding the wrong way. */
    ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=A", out, sizeof(out)), -1);
    ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out, 20), -1);
}
END_TEST

/* Restores what the test borrowed before freeing the config. */
static void config_done(config_t *cfg, char **saved, size_t nsaved)
{
    cfg->allowed_origins = saved;
    cfg->nallowed_origins = nsaved;
    config_free(cfg);
}

START_TEST(test_origin_same_host_without_list)
{
    config_t *cfg = config_new_defaults(NULL);
    char **saved;
    size_t nsaved;

    ck_assert_ptr_nonnull(cfg);
    saved = cfg->allowed_origins;
    nsaved = cfg->nallowed_origins;

    cfg->nallowed_origins = 0;
    /* Without server_names: localhost, the loopback addresses, this
     * machine's name and the listen hosts. */
    ck_assert_int_eq(ws_origin_allowed(cfg, NULL, "127.0.0.1:8080"), 1);
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://localhost:8080", "localhost:8080"), 1);
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://[::1]:8080", "[::1]:8080"), 1);
    /* DNS rebinding: a page of evil.example whose name now resolves to us. */
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://evil.example", "evil.example"), 0);
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://example.com", "example.com:80"), 0);
    {
        char *names[] = {"example.com"};
        char **saved_names = cfg->server_names;
        size_t nsaved_names = cfg->nserver_names;

        cfg->server_names = names;
        cfg->nserver_names = 1;
        ck_assert_int_eq(ws_origin_allowed(cfg, "http://Example.COM", "example.com:80"), 1);
        ck_assert_int_eq(ws_origin_allowed(cfg, "https://example.com", "example.com:443"), 1);
        ck_assert_int_eq(ws_origin_allowed(cfg, "https://example.com/", "example.com"), 1);
        ck_assert_int_eq(ws_origin_allowed(cfg, "http://evil.example", "evil.example"), 0);
        /* With names configured, only they count. */
        ck_assert_int_eq(ws_origin_allowed(cfg, "http://localhost:8080", "localhost:8080"), 0);
        cfg->server_names = saved_names;
        cfg->nserver_names = nsaved_names;
    }
    ck_assert_int_eq(ws_origin_allowed(cfg, "", "127.0.0.1:8080"), 1);
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://127.0.0.1:8080", "127.0.0.1:8080"), 1);
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://evil.example", "127.0.0.1:8080"), 0);
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://127.0.0.1:8081", "127.0.0.1:8080"), 0);
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://127.0.0.1:8080.evil", "127.0.0.1:8080"), 0);
    ck_assert_int_eq(ws_origin_allowed(cfg, "null", "127.0.0.1:8080"), 0);
    ck_assert_int_eq(ws_origin_allowed(cfg, "file://", "127.0.0.1:8080"), 0);
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://127.0.0.1:8080", NULL), 0);
    config_done(cfg, saved, nsaved);
}
END_TEST

START_TEST(test_origin_list)
{
    char *list[] = {"http://good.example", "https://also.example:8443/"};
    config_t *cfg = config_new_defaults(NULL);
    char **saved;
    size_t nsaved;

    ck_assert_ptr_nonnull(cfg);
    saved = cfg->allowed_origins;
    nsaved = cfg->nallowed_origins;

    cfg->allowed_origins = list;
    cfg->nallowed_origins = 2;
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://good.example", "x"), 1);
    ck_assert_int_eq(ws_origin_allowed(cfg, "HTTP://GOOD.EXAMPLE", "x"), 1);
    ck_assert_int_eq(ws_origin_allowed(cfg, "https://also.example:8443", "x"), 1);
    ck_assert_int_eq(ws_origin_allowed(cfg, "https://good.example", "x"), 0);
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://good.example.evil", "x"), 0);
    /* The list is in addition to the server's own origin. */
    ck_assert_int_eq(ws_origin_allowed(cfg, "http://127.0.0.1:8080", "127.0.0.1:8080"), 1);
    ck_assert_int_eq(ws_origin_allowed(cfg, NULL, "x"), 1);
    config_done(cfg, saved, nsaved);
}
END_TEST

START_TEST(test_frame_headers)
{
    unsigned char h[10];

    ck_assert_uint_eq(ws_frame_header(h, 1, 0), 2);
    ck_assert_uint_eq(h[0], 0x81);
    ck_assert_uint_eq(h[1], 0);
    ck_assert_uint_eq(ws_frame_header(h, 1, 125), 2);
    ck_assert_uint_eq(h[1], 125);
    ck_assert_uint_eq(ws_frame_header(h, 1, 126), 4);
    ck_assert_uint_eq(h[1], 126);
    ck_assert_uint_eq(h[2], 0);
    ck_assert_uint_eq(h[3], 126);
    ck_assert_uint_eq(ws_frame_header(h, 1, 65535), 4);
    ck_assert_uint_eq(h[2], 0xff);
    ck_assert_uint_eq(h[3], 0xff);
    ck_assert_uint_eq(ws_frame_header(h, 1, 65536), 10);
    ck_assert_uint_eq(h[1], 127);
    ck_assert_mem_eq(h + 2, "\0\0\0\0\0\1\0\0", 8);
    ck_assert_uint_eq(ws_frame_header(h, 8, 2), 2);
    ck_assert_uint_eq(h[0], 0x88);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ws");
    TCase *tc = tcase_create("ws");

    tcase_add_test(tc, test_accept_key_rfc_example);
    tcase_add_test(tc, test_accept_key_refuses_bad_keys);
    tcase_add_test(tc, test_origin_same_host_without_list);
    tcase_add_test(tc, test_origin_list);
    tcase_add_test(tc, test_frame_headers);
    suite_add_tcase(s, tc);
    return check_run(s);
}
