/* check_metrics: unit tests for src/metrics.c: slots claimed and released
 * by pid, sums over every slot (also across fork, which is the point of
 * the shared mapping), disconnect reasons, histograms and the text format. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "metrics.h"
#include "run_suite.h"

/* The rendering as a NUL-terminated string (caller frees). */
static char *render(metrics_t *m)
{
    struct evbuffer *out = evbuffer_new();
    size_t n;
    char *text;

    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(metrics_render(m, out), 0);
    n = evbuffer_get_length(out);
    text = malloc(n + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(evbuffer_remove(out, text, n), (int)n);
    text[n] = '\0';
    evbuffer_free(out);
    return text;
}

static void assert_line(const char *text, const char *line)
{
    const char *p = strstr(text, line);

    ck_assert_msg(p != NULL && (p == text || p[-1] == '\n') && p[strlen(line)] == '\n',
                  "no line \"%s\" in:\n%s", line, text);
}

START_TEST(test_claim_and_release)
{
    metrics_t *m = metrics_new(2);
    metrics_slot_t *a, *b;

    ck_assert_ptr_nonnull(m);
    a = metrics_claim(m, getpid());
    ck_assert_ptr_nonnull(a);
    b = metrics_claim(m, 1); /* init: alive, so its slot is never reclaimed */
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_ne(a, b);
    ck_assert_ptr_null(metrics_claim(m, 1)); /* full, every owner alive */
    metrics_session_opened(a, METRICS_TRANSPORT_WEBSOCKET);
    metrics_release(m, getpid());
    /* Released: the gauge is gone, the counter stays, the slot is free. */
    {
        char *text = render(m);
        assert_line(text, "dnoded_sessions{transport=\"websocket\"} 0");
        assert_line(text, "dnoded_sessions_opened_total{transport=\"websocket\"} 1");
        free(text);
    }
    ck_assert_ptr_eq(metrics_claim(m, getpid()), a);
    metrics_free(m);
}
END_TEST

START_TEST(test_dead_owner_slot_is_reused)
{
    metrics_t *m = metrics_new(1);
    pid_t child;
    int status;

    ck_assert_ptr_nonnull(m);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        metrics_slot_t *s = metrics_claim(m, getpid());
        if (s == NULL)
            _exit(1);
        s->messages_in += 5;
        metrics_session_opened(s, METRICS_TRANSPORT_TCP);
        _exit(0); /* dies without a release */
    }
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    {
        char *text = render(m);
        assert_line(text, "dnoded_messages_received_total 5");
        assert_line(text, "dnoded_sessions{transport=\"tcp\"} 1");
        free(text);
    }
    ck_assert_ptr_nonnull(metrics_claim(m, getpid()));
    {
        char *text = render(m);
        assert_line(text, "dnoded_messages_received_total 5"); /* counters stay */
        assert_line(text, "dnoded_sessions{transport=\"tcp\"} 0");
        free(text);
    }
    metrics_free(m);
}
END_TEST

START_TEST(test_sums_every_slot)
{
    metrics_t *m = metrics_new(4);
    metrics_slot_t *a = metrics_claim(m, getpid());
    metrics_slot_t *b = metrics_claim(m, 1);
    char *text;

    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    a->messages_out = 3;
    b->messages_out = 4;
    metrics_error(a, ERROR_VALIDATION);
    metrics_error(b, ERROR_VALIDATION);
    metrics_error(b, error_code("SomethingElse"));
    metrics_error(b, -1);
    metrics_disconnect(a, METRICS_DISC_CLIENT);
    metrics_disconnect(b, METRICS_DISC_SLOW);
    metrics_disconnect(b, METRICS_DISC_SLOW_SOFT);
    metrics_disconnect(b, METRICS_DISC_OVERSIZED);
    metrics_disconnect(b, METRICS_DISC_PROTOCOL);
    metrics_disconnect(b, METRICS_DISC_CLIENT);
    metrics_disconnect(b, METRICS_DISC_SHUTDOWN);
    metrics_disconnect(b, METRICS_DISC_OTHER);
    metrics_disconnect(b, METRICS_DISC_COUNT); /* not a disconnect (a moved session) */
    metrics_disconnect(b, -1);
    metrics_http_request(a, 200);
    metrics_http_request(b, 404);
    metrics_http_request(b, 304);
    metrics_observe(&a->db, 300);     /* 0.3 ms */
    metrics_observe(&b->db, 20000);   /* 20 ms */
    metrics_observe(&b->db, 9000000); /* 9 s: only +Inf */
    text = render(m);
    assert_line(text, "dnoded_messages_sent_total 7");
    assert_line(text, "dnoded_errors_total{name=\"ValidationError\"} 2");
    assert_line(text, "dnoded_errors_total{name=\"other\"} 2");
    assert_line(text, "dnoded_disconnects_total{reason=\"client_closed\"} 2");
    assert_line(text, "dnoded_disconnects_total{reason=\"slow_consumer\"} 1");
    assert_line(text, "dnoded_disconnects_total{reason=\"slow_consumer_soft\"} 1");
    assert_line(text, "dnoded_disconnects_total{reason=\"oversized\"} 1");
    assert_line(text, "dnoded_disconnects_total{reason=\"protocol_error\"} 1");
    assert_line(text, "dnoded_disconnects_total{reason=\"shutdown\"} 1");
    assert_line(text, "dnoded_disconnects_total{reason=\"other\"} 1");
    assert_line(text, "dnoded_http_requests_total{code=\"2xx\"} 1");
    assert_line(text, "dnoded_http_requests_total{code=\"3xx\"} 1");
    assert_line(text, "dnoded_http_requests_total{code=\"4xx\"} 1");
    assert_line(text, "dnoded_db_latency_seconds_bucket{le=\"0.0005\"} 1");
    assert_line(text, "dnoded_db_latency_seconds_bucket{le=\"0.01\"} 1");
    assert_line(text, "dnoded_db_latency_seconds_bucket{le=\"0.025\"} 2");
    assert_line(text, "dnoded_db_latency_seconds_bucket{le=\"5\"} 2");
    assert_line(text, "dnoded_db_latency_seconds_bucket{le=\"+Inf\"} 3");
    assert_line(text, "dnoded_db_latency_seconds_count 3");
    assert_line(text, "dnoded_db_latency_seconds_sum 9.020300");
    assert_line(text, "# TYPE dnoded_db_latency_seconds histogram");
    assert_line(text, "# TYPE dnoded_sessions gauge");
    free(text);
    metrics_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");

    tcase_add_test(tc, test_claim_and_release);
    tcase_add_test(tc, test_dead_owner_slot_is_reused);
    tcase_add_test(tc, test_sums_every_slot);
    suite_add_tcase(s, tc);
    return check_run(s);
}
