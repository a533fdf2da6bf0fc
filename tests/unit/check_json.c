/* check_json: unit tests for the JSON tree (src/json.h). They assert what the
 * rest of the daemon relies on: a parsed message serializes back to the same
 * JSON, numbers print the way JavaScript prints them, hostile input (bad
 * UTF-8, deep nesting, trailing bytes) is refused with a reason, and the
 * tree helpers (copy, equal, strip callbacks) behave as documented. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "run_suite.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static json_t *parse_ok(const char *in, size_t len)
{
    char err[128] = "";
    json_t *v = json_parse(in, len, JSON_DEFAULT_MAX_DEPTH, err, sizeof(err));
    ck_assert_msg(v != NULL, "parse of '%s' failed: %s", in, err);
    return v;
}

static json_t *parse_str(const char *in) { return parse_ok(in, strlen(in)); }

/* Parse must fail; returns the reason. */
static void parse_fails(const char *in, size_t len, size_t depth, char *err, size_t errlen)
{
    json_t *v = json_parse(in, len, depth, err, errlen);
    ck_assert_msg(v == NULL, "parse of '%.60s' should have failed", in);
    json_free(v);
    ck_assert_msg(err[0] != '\0', "no reason given for '%.60s'", in);
    ck_assert_msg(strchr(err, '\n') == NULL, "reason is not one line: '%s'", err);
}

/* Dump of the parse of in must be exactly want. */
static void dumps_as(const char *in, const char *want)
{
    json_t *v = parse_str(in);
    size_t len = 0;
    char *out = json_dump(v, &len);
    ck_assert_ptr_nonnull(out);
    ck_assert_str_eq(out, want);
    ck_assert_uint_eq(len, strlen(want));
    free(out);
    json_free(v);
}

static char *dump(const json_t *v)
{
    char *out = json_dump(v, NULL);
    ck_assert_ptr_nonnull(out);
    return out;
}

/* ------------------------------------------------------------------------
 * Round trips
 * ------------------------------------------------------------------------ */

START_TEST(test_parse_dump_round_trip)
{
    const char *in = "{\"method\":\"methods\",\"arguments\":[{\"n\":42,\"x\":1.5,"
                     "\"ok\":true,\"none\":null,\"s\":\"a\\\"b\"}],\"links\":[]}";
    json_t *v = parse_str(in);
    ck_assert_int_eq(v->type, JSON_OBJECT);

    size_t len = 0;
    char *out = json_dump(v, &len);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(len, strlen(out));
    /* Key order and compact form are kept: the output is the input. */
    ck_assert_str_eq(out, in);

    json_t *again = parse_ok(out, len);
    ck_assert(json_equal(v, again));

    const json_t *first = json_array_get(json_object_get(again, "arguments"), 0);
    ck_assert_ptr_nonnull(first);
    const json_t *n = json_object_get(first, "n");
    ck_assert_ptr_nonnull(n);
    ck_assert_int_eq(n->type, JSON_NUMBER);
    ck_assert(n->u.num.is_int);
    ck_assert_int_eq(n->u.num.i, 42);
    ck_assert_str_eq(json_get_string(first, "s"), "a\"b");
    ck_assert(json_is_true(json_object_get(first, "ok")));
    ck_assert_int_eq(json_object_get(first, "none")->type, JSON_NULL);

    free(out);
    json_free(again);
    json_free(v);
}
END_TEST

START_TEST(test_whitespace_and_scalars_at_top)
{
    dumps_as(" \t\r\n[ 1 , { \"a\" : [ ] } , { } ]\r\n ", "[1,{\"a\":[]},{}]");
    dumps_as("\"top\"", "\"top\"");
    dumps_as("null", "null");
    dumps_as("false", "false");
    dumps_as("7", "7");
}
END_TEST

START_TEST(test_escapes_written_back)
{
    /* Control characters are escaped on output; '/' need not be. */
    json_t *v = json_string("tab\there\nnl \"q\" \\ / \x01");
    char *out = dump(v);
    ck_assert_str_eq(out, "\"tab\\there\\nnl \\\"q\\\" \\\\ / \\u0001\"");
    json_t *back = parse_str(out);
    ck_assert(json_equal(v, back));
    free(out);
    json_free(back);
    json_free(v);
}
END_TEST

START_TEST(test_control_characters_escaped)
{
    /* Every byte below 0x20 has an escape (the short one where JSON has
     * it); DEL and '/' go out as they are. The output reads back equal. */
    static const char *const want[32] = {
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b",     "\\t",     "\\n",     "\\u000B", "\\f",     "\\r",     "\\u000E", "\\u000F",
        "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
        "\\u0018", "\\u0019", "\\u001A", "\\u001B", "\\u001C", "\\u001D", "\\u001E", "\\u001F"};
    char in[3], expect[16];
    int c;

    for (c = 0; c < 32; c++) {
        in[0] = 'a';
        in[1] = (char)c;
        in[2] = 'z';
        json_t *v = json_stringn(in, 3);
        char *out = dump(v);
        snprintf(expect, sizeof(expect), "\"a%sz\"", want[c]);
        ck_assert_msg(strcmp(out, expect) == 0, "byte %d written as %s, expected %s", c, out,
                      expect);
        json_t *back = parse_str(out);
        ck_assert(json_equal(v, back));
        json_free(back);
        free(out);
        json_free(v);
    }
    dumps_as("\"\\u007f/\\/\"", "\"\x7f//\"");
    /* In keys too. */
    dumps_as("{\"k\\u0001\\n\":1}", "{\"k\\u0001\\n\":1}");
}
END_TEST

/* A string of n bytes mixing plain text, escapes and multi-byte UTF-8,
 * and (in want) how it must be written, without the quotes. */
static void mixed_text(size_t n, char *text, char *want, size_t *wantlen)
{
    static const char *const pieces[] = {"abc", "\"", "\\", "\n", "\x01", "\xc3\xa9", "/"};
    static const char *const written[] = {"abc", "\\\"", "\\\\", "\\n", "\\u0001", "\xc3\xa9", "/"};
    size_t i = 0, k = 0, w = 0;

    while (i < n) {
        const char *p = pieces[k % 7], *q = written[k % 7];
        size_t plen = strlen(p) > n - i ? n - i : strlen(p);
        if (plen < strlen(p)) { /* the last piece, cut: keep it plain */
            p = "x";
            q = "x";
            plen = 1;
        }
        memcpy(text + i, p, plen);
        memcpy(want + w, q, strlen(q));
        i += plen;
        w += strlen(q);
        k++;
    }
    *wantlen = w;
}

START_TEST(test_writer_large_tree)
{
    /* Thousands of members and long strings with escapes: the one output
     * buffer grows many times and the result is exact. */
    enum { N = 3000, SLEN = 1000 };
    char *text = malloc(SLEN), *want = malloc(SLEN * 6);
    size_t wantlen, i, total;
    json_t *v = json_array();
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(want);
    mixed_text(SLEN, text, want, &wantlen);
    for (i = 0; i < N; i++) {
        json_t *o = json_object();
        ck_assert_int_eq(json_object_set(o, "i", json_int((int64_t)i)), 0);
        ck_assert_int_eq(json_object_set(o, "s", json_stringn(text, SLEN)), 0);
        ck_assert_int_eq(json_array_append(v, o), 0);
    }
    size_t len = 0;
    char *out = json_dump(v, &len);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(len, strlen(out));
    /* Check element by element: {"i":<i>,"s":"<want>"} joined by commas. */
    const char *p = out;
    ck_assert_int_eq(*p++, '[');
    for (i = 0, total = 1; i < N; i++) {
        char head[40];
        int hn = snprintf(head, sizeof(head), "%s{\"i\":%zu,\"s\":\"", i > 0 ? "," : "", i);
        ck_assert_int_eq(strncmp(p, head, (size_t)hn), 0);
        p += hn;
        ck_assert_int_eq(memcmp(p, want, wantlen), 0);
        p += wantlen;
        ck_assert_int_eq(strncmp(p, "\"}", 2), 0);
        p += 2;
        total += (size_t)hn + wantlen + 2;
    }
    ck_assert_str_eq(p, "]");
    ck_assert_uint_eq(len, total + 1);
    json_t *back = parse_ok(out, len);
    ck_assert(json_equal(v, back));
    json_free(back);
    free(out);
    json_free(v);
    free(text);
    free(want);
}
END_TEST

START_TEST(test_writer_deep_tree)
{
    /* Far deeper than any parse limit in use: written whole, and it reads
     * back when the parser is allowed that depth (its frame stack grows
     * past the few levels it keeps inline). */
    enum { DEPTH = 2000 };
    json_t *v = json_string("x\ny");
    size_t i, len = 0;
    for (i = 0; i < DEPTH; i++) {
        json_t *c = (i % 2) ? json_array() : json_object();
        ck_assert_int_eq((i % 2) ? json_array_append(c, v) : json_object_set(c, "k", v), 0);
        v = c;
    }
    char *out = json_dump(v, &len);
    ck_assert_ptr_nonnull(out);
    /* Outermost is an array (i = DEPTH - 1 is odd). */
    ck_assert_int_eq(strncmp(out, "[{\"k\":[{\"k\":", 12), 0);
    ck_assert_ptr_nonnull(strstr(out, "{\"k\":\"x\\ny\"}"));
    ck_assert_uint_eq(len, DEPTH / 2 * (2 + 6) + 6);
    char err[128] = "";
    json_t *back = json_parse(out, len, DEPTH, err, sizeof(err));
    ck_assert_msg(back != NULL, "%s", err);
    ck_assert(json_equal(v, back));
    json_free(back);
    /* One level short of that: refused, and nothing leaks (the sanitizer
     * build checks). */
    ck_assert_ptr_null(json_parse(out, len, DEPTH - 1, err, sizeof(err)));
    ck_assert_str_eq(err, "nesting too deep");
    free(out);
    json_free(v);
}
END_TEST

START_TEST(test_dump_append_after_header)
{
    /* The append form writes after what the buffer already holds and
     * leaves it alone; strings alone go through json_dump_string. */
    json_buf_t b = {NULL, 0, 0};
    json_t *v = parse_str("{\"a\":[1,2.5,\"\\u00e9\"]}");
    ck_assert_int_eq(json_buf_append(&b, "HEAD", 4), 0);
    ck_assert_int_eq(json_dump_append(&b, v), 0);
    ck_assert_int_eq(json_dump_string(&b, "q\"\xff", 3), 0);
    const char want[] = "HEAD{\"a\":[1,2.5,\"\xc3\xa9\"]}\"q\\\"\xef\xbf\xbd\"";
    ck_assert_uint_eq(b.len, sizeof(want) - 1);
    ck_assert_int_eq(memcmp(b.data, want, b.len), 0);
    ck_assert_uint_ge(b.cap, b.len);
    free(b.data);
    json_free(v);
}
END_TEST

START_TEST(test_long_escaped_strings_parse)
{
    /* Strings with escapes are decoded in a buffer yajl grows; past a few
     * KiB it no longer fits the parser's scratch space on the stack. */
    enum { SLEN = 20000 };
    char *text = malloc(SLEN), *want = malloc(SLEN * 6 + 3);
    size_t wantlen;
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(want);
    mixed_text(SLEN, text, want + 1, &wantlen);
    want[0] = '"';
    want[wantlen + 1] = '"';
    json_t *v = parse_ok(want, wantlen + 2);
    ck_assert_int_eq(v->type, JSON_STRING);
    ck_assert_uint_eq(v->u.str.len, SLEN);
    ck_assert_int_eq(memcmp(v->u.str.s, text, SLEN), 0);
    json_free(v);
    free(text);
    free(want);
}
END_TEST

/* ------------------------------------------------------------------------
 * Numbers
 * ------------------------------------------------------------------------ */

START_TEST(test_integers_stay_integers)
{
    json_t *v = parse_str("[0,-1,9007199254740992,9007199254740993,-9223372036854775808,"
                          "9223372036854775807]");
    static const int64_t want[] = {0, -1, 9007199254740992LL, 9007199254740993LL,
                                   INT64_MIN, INT64_MAX};
    size_t i;

    for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const json_t *n = json_array_get(v, i);
        ck_assert_ptr_nonnull(n);
        ck_assert_msg(n->u.num.is_int, "element %zu lost its integer form", i);
        ck_assert_int_eq(n->u.num.i, want[i]);
    }
    json_free(v);
    /* 2^53 and beyond print exactly, without an exponent or a fraction. */
    dumps_as("[9007199254740992,9007199254740993,-9223372036854775808]",
             "[9007199254740992,9007199254740993,-9223372036854775808]");
}
END_TEST

START_TEST(test_doubles_print_shortest)
{
    /* As JavaScript prints them: 0.1 is 0.1, not 0.10000000000000001. */
    dumps_as("[0.1,0.2,1.5,-2.25,3.141592653589793,0.30000000000000004]",
             "[0.1,0.2,1.5,-2.25,3.141592653589793,0.30000000000000004]");
    /* Integral doubles print as integers, as JSON.stringify does. */
    dumps_as("[1.0,-3.0,1e2,2.5e1]", "[1,-3,100,25]");

    json_t *v = parse_str("[0.1,1.0]");
    ck_assert(!json_array_get(v, 0)->u.num.is_int);
    ck_assert(json_array_get(v, 0)->u.num.d == 0.1);
    ck_assert(!json_array_get(v, 1)->u.num.is_int);
    json_free(v);
}
END_TEST

START_TEST(test_big_and_small_doubles_read_back)
{
    /* Whatever form is printed, it must read back as the same double. */
    static const char *const in[] = {"1e300", "-1.7976931348623157e308", "5e-324", "1e-7",
                                     "123456789012345678901234567890", "1e21"};
    size_t i;

    for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        json_t *v = parse_str(in[i]);
        char *out = dump(v);
        json_t *back = parse_str(out);
        ck_assert_msg(back->u.num.d == v->u.num.d, "%s printed as %s reads back differently",
                      in[i], out);
        free(out);
        json_free(back);
        json_free(v);
    }
}
END_TEST

START_TEST(test_negative_zero)
{
    /* JSON.stringify(-0) is "0". */
    dumps_as("-0", "0");
    dumps_as("-0.0", "0");
    json_t *v = json_double(-0.0);
    char *out = dump(v);
    ck_assert_str_eq(out, "0");
    free(out);
    json_free(v);
}
END_TEST

START_TEST(test_non_finite_written_as_null)
{
    json_t *v = json_array();
    ck_assert_int_eq(json_array_append(v, json_double(INFINITY)), 0);
    ck_assert_int_eq(json_array_append(v, json_double(-INFINITY)), 0);
    ck_assert_int_eq(json_array_append(v, json_double(NAN)), 0);
    char *out = dump(v);
    ck_assert_str_eq(out, "[null,null,null]");
    free(out);
    json_free(v);
}
END_TEST

START_TEST(test_constructed_numbers)
{
    json_t *v = json_array();
    ck_assert_int_eq(json_array_append(v, json_int(-42)), 0);
    ck_assert_int_eq(json_array_append(v, json_double(0.5)), 0);
    ck_assert_int_eq(json_array_append(v, json_int(INT64_MAX)), 0);
    char *out = dump(v);
    ck_assert_str_eq(out, "[-42,0.5,9223372036854775807]");
    free(out);
    json_free(v);
}
END_TEST

/* ------------------------------------------------------------------------
 * Strings
 * ------------------------------------------------------------------------ */

START_TEST(test_unicode_escapes_decode_to_utf8)
{
    /* \u00e9 is two bytes of UTF-8, the surrogate pair one 4-byte character. */
    json_t *v = parse_str("\"h\\u00e9llo \\ud83d\\ude00 \\u20ac\"");
    ck_assert_int_eq(v->type, JSON_STRING);
    ck_assert_str_eq(v->u.str.s, "h\xc3\xa9llo \xf0\x9f\x98\x80 \xe2\x82\xac");
    ck_assert_uint_eq(v->u.str.len, strlen(v->u.str.s));
    /* Written back as raw UTF-8, which reads back the same. */
    char *out = dump(v);
    ck_assert_str_eq(out, "\"h\xc3\xa9llo \xf0\x9f\x98\x80 \xe2\x82\xac\"");
    json_t *back = parse_str(out);
    ck_assert(json_equal(v, back));
    free(out);
    json_free(back);
    json_free(v);
}
END_TEST

START_TEST(test_nul_inside_strings)
{
    json_t *v = parse_str("[\"a\\u0000b\",\"a\"]");
    const json_t *s = json_array_get(v, 0);
    ck_assert_uint_eq(s->u.str.len, 3);
    ck_assert_int_eq(memcmp(s->u.str.s, "a\0b", 3), 0);
    /* Not equal to the string the NUL would cut it down to. */
    ck_assert(!json_equal(s, json_array_get(v, 1)));
    char *out = dump(v);
    ck_assert_str_eq(out, "[\"a\\u0000b\",\"a\"]");
    free(out);

    json_t *c = json_stringn("x\0y", 3);
    out = dump(c);
    ck_assert_str_eq(out, "\"x\\u0000y\"");
    free(out);
    json_free(c);
    json_free(v);
}
END_TEST

START_TEST(test_invalid_utf8_repaired_on_output)
{
    /* Text the daemon builds itself (a client's string cut to 60 bytes in
     * the middle of a character) goes out as valid UTF-8, with U+FFFD for
     * each stray byte, in values and in keys. */
    json_t *v = json_object();
    ck_assert_int_eq(json_object_set(v, "m", json_stringn("ab\xc3", 3)), 0);
    ck_assert_int_eq(json_object_set(v, "k\xff", json_string("\xe2\x82\xac\x80x")), 0);
    char *out = dump(v);
    ck_assert_str_eq(out, "{\"m\":\"ab\xef\xbf\xbd\",\"k\xef\xbf\xbd\":\"\xe2\x82\xac\xef\xbf\xbdx\"}");
    json_t *back = parse_str(out); /* and it reads back */
    json_free(back);
    free(out);
    json_free(v);
}
END_TEST

START_TEST(test_nul_in_key_refused)
{
    char err[128];
    const char *in = "{\"a\\u0000b\":1}";
    parse_fails(in, strlen(in), JSON_DEFAULT_MAX_DEPTH, err, sizeof(err));
}
END_TEST

/* json_parse_lenient leaves out members whose key holds a NUL byte, also
 * when their value is an array or an object (parsed, then freed: nothing
 * of it may stay reachable, nothing be used after its free). */
START_TEST(test_lenient_drops_nul_keyed_containers)
{
    static const char *const in[] = {
        "{\"a\\u0000b\":[1,{\"x\":[2]}],\"c\":2}",
        "{\"a\\u0000\":{\"b\\u0000\":{\"d\":[3]},\"e\":4},\"c\":2}",
        "{\"c\":2,\"\\u0000\":[[[]]]}",
    };
    char err[128];
    size_t i, len;

    for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        json_t *v = json_parse_lenient(in[i], strlen(in[i]), 0, err, sizeof(err));
        char *out;

        ck_assert_msg(v != NULL, "'%s': %s", in[i], err);
        out = json_dump(v, &len);
        ck_assert_str_eq(out, "{\"c\":2}");
        free(out);
        json_free(v);
        parse_fails(in[i], strlen(in[i]), 0, err, sizeof(err)); /* strict: refused */
        ck_assert_ptr_nonnull(strstr(err, "NUL byte"));
    }
    /* Stopping inside a left-out container frees it too (ASan checks). */
    ck_assert_ptr_null(json_parse_lenient("{\"\\u0000\":[1,", 13, 0, err, sizeof(err)));
    ck_assert_ptr_null(json_parse_lenient("{\"\\u0000\":[[[[1]]]]}", 20, 3, err, sizeof(err)));
}
END_TEST

/* What the direct parser takes and what it leaves to yajl read the same:
 * escapes, numbers at the edges of int64, whitespace, empty containers,
 * and surrogates (yajl's). */
START_TEST(test_direct_and_fallback_agree)
{
    dumps_as(" {\"a\" : [ 1 , -0 , 1.5e3 , 9223372036854775807 , 12345678901234567890 ] } ",
             "{\"a\":[1,0,1500,9223372036854775807,1.2345678901234567e+19]}");
    dumps_as("[\"\\u00e9\\u20ac\\n\\/\",{},[],true,false,null]",
             "[\"\xc3\xa9\xe2\x82\xac\\n/\",{},[],true,false,null]");
    dumps_as("[\"\\ud83d\\ude00\"]", "[\"\xf0\x9f\x98\x80\"]"); /* yajl's path */
    dumps_as("\v[1]\f", "[1]");                                 /* yajl's whitespace */
}
END_TEST

START_TEST(test_invalid_utf8_refused)
{
    static const char *const bad[] = {
        "\"\xff\"",             /* never valid */
        "\"a\x80z\"",           /* lone continuation byte */
        "\"\xe2\x82\"",         /* truncated 3-byte sequence */
        "\"\xc3\"",             /* truncated 2-byte sequence */
        "{\"k\xfe\":1}",        /* in a key */
        "[\"ok\",\"\xf0\x9f\"]", /* truncated 4-byte sequence, later element */
        "\"\xc0\xaf\"",         /* overlong '/' */
        "\"\xe0\x80\xaf\"",     /* overlong, 3 bytes */
        "\"\xf0\x80\x80\xaf\"", /* overlong, 4 bytes */
        "\"\xed\xa0\x80\"",     /* a UTF-16 surrogate */
        "\"\xf4\x90\x80\x80\"", /* past U+10FFFF */
        "{\"\xc1\xbf\":1}",     /* overlong in a key */
    };
    char err[128];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        parse_fails(bad[i], strlen(bad[i]), JSON_DEFAULT_MAX_DEPTH, err, sizeof(err));

    /* The edges of the valid ranges still parse. */
    json_t *v = parse_str("[\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
                          "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"]");
    ck_assert_uint_eq(json_array_get(v, 0)->u.str.len, 21);
    json_free(v);
}
END_TEST

/* ------------------------------------------------------------------------
 * Refused input
 * ------------------------------------------------------------------------ */

static char *nested(size_t depth)
{
    char *s = malloc(2 * depth + 1);
    ck_assert_ptr_nonnull(s);
    memset(s, '[', depth);
    memset(s + depth, ']', depth);
    s[2 * depth] = '\0';
    return s;
}

START_TEST(test_depth_limit)
{
    char err[128];
    char *ok = nested(JSON_DEFAULT_MAX_DEPTH);
    char *deep = nested(JSON_DEFAULT_MAX_DEPTH + 1);
    json_t *v = json_parse(ok, strlen(ok), JSON_DEFAULT_MAX_DEPTH, err, sizeof(err));

    ck_assert_msg(v != NULL, "%d levels should parse: %s", JSON_DEFAULT_MAX_DEPTH, err);
    json_free(v);
    parse_fails(deep, strlen(deep), JSON_DEFAULT_MAX_DEPTH, err, sizeof(err));
    ck_assert_msg(strstr(err, "deep") != NULL, "reason '%s' does not say why", err);

    /* A caller's own limit; objects count as well as arrays. */
    const char *three = "{\"a\":[{\"b\":1}]}";
    v = json_parse(three, strlen(three), 3, err, sizeof(err));
    ck_assert_ptr_nonnull(v);
    json_free(v);
    parse_fails(three, strlen(three), 2, err, sizeof(err));

    /* A deep document far past the limit fails without exhausting anything. */
    char *huge = nested(100000);
    parse_fails(huge, strlen(huge), JSON_DEFAULT_MAX_DEPTH, err, sizeof(err));
    free(huge);
    free(ok);
    free(deep);
}
END_TEST

START_TEST(test_trailing_garbage_refused)
{
    static const char *const bad[] = {"{} x", "{}{}", "1 2", "[1]]", "\"a\" \"b\"",
                                      "{\"a\":1}\n{\"b\":2}"};
    char err[128];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        parse_fails(bad[i], strlen(bad[i]), JSON_DEFAULT_MAX_DEPTH, err, sizeof(err));
}
END_TEST

START_TEST(test_malformed_refused)
{
    static const char *const bad[] = {
        "",  "   ", "{",          "{\"a\":",  "{\"a\" 1}", "[1,]",  "{'a':1}", "tru",
        "01", "NaN", "[1,2",     "{\"a\":1,}", "\"abc",   "// c\n1", "[-]", "\"\\x\"",
    };
    char err[128];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        parse_fails(bad[i], strlen(bad[i]), JSON_DEFAULT_MAX_DEPTH, err, sizeof(err));
}
END_TEST

START_TEST(test_length_is_respected)
{
    /* Only buf[0..len) is read: no NUL terminator is needed. */
    const char *in = "[1,2]garbage";
    json_t *v = parse_ok(in, 5);
    ck_assert_uint_eq(v->u.arr.len, 2);
    json_free(v);
}
END_TEST

/* json_parse_first: the value at the start, whatever follows it. */
START_TEST(test_parse_first_value)
{
    const char *in = "[1,{\"a\":\"\\u00e9\"}] \t,\"x\":1}";
    size_t used = 0;
    json_t *v = json_parse_first(in, strlen(in), 8, &used), *w;

    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(used, strlen("[1,{\"a\":\"\\u00e9\"}] \t"));
    w = json_parse("[1,{\"a\":\"\xc3\xa9\"}]", strlen("[1,{\"a\":\"\xc3\xa9\"}]"), 8, NULL, 0);
    ck_assert(json_equal(v, w));
    json_free(v);
    json_free(w);
    /* Only what json_parse would take: nothing for bad or too deep input. */
    ck_assert_ptr_null(json_parse_first("[1,]", 4, 8, &used));
    ck_assert_ptr_null(json_parse_first("[\"\xc0\xaf\"]", 6, 8, &used));
    ck_assert_ptr_null(json_parse_first("[[[1]]]", 7, 2, &used));
    ck_assert_ptr_null(json_parse_first("[1", 2, 8, &used));
    ck_assert_ptr_null(json_parse_first("[1]", 3, 0, &used));
    v = json_parse_first("[[[1]]]", 7, 3, &used);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(used, 7);
    json_free(v);
}
END_TEST

START_TEST(test_small_error_buffer)
{
    char err[8];
    memset(err, 'x', sizeof(err));
    ck_assert_ptr_null(json_parse("{", 1, 0, err, sizeof(err)));
    ck_assert_msg(memchr(err, '\0', sizeof(err)) != NULL, "reason not terminated");
    ck_assert_ptr_null(json_parse("{", 1, 0, NULL, 0));
}
END_TEST

START_TEST(test_duplicate_keys_last_wins)
{
    json_t *v = parse_str("{\"a\":1,\"b\":2,\"a\":{\"x\":3}}");
    ck_assert_uint_eq(v->u.obj.len, 2);
    const json_t *a = json_object_get(v, "a");
    ck_assert_int_eq(a->type, JSON_OBJECT);
    ck_assert_int_eq(json_object_get(a, "x")->u.num.i, 3);
    /* JavaScript keeps the first position of a repeated key. */
    char *out = dump(v);
    ck_assert_str_eq(out, "{\"a\":{\"x\":3},\"b\":2}");
    free(out);
    json_free(v);
}
END_TEST

START_TEST(test_large_object_duplicates)
{
    /* Past the first few members the parser indexes keys; duplicates must
     * still replace in place, wherever they fall. */
    size_t n = 3000, i, cap = n * 16 + 64, off = 0;
    char *in = malloc(cap);
    ck_assert_ptr_nonnull(in);
    in[off++] = '{';
    for (i = 0; i < n; i++)
        off += (size_t)snprintf(in + off, cap - off, "\"k%zu\":%zu,", i, i);
    off += (size_t)snprintf(in + off, cap - off, "\"k5\":\"a\",\"k2999\":\"b\",\"k8\":\"c\"}");
    json_t *v = parse_ok(in, off);
    ck_assert_uint_eq(v->u.obj.len, n);
    ck_assert_str_eq(v->u.obj.keys[5], "k5");
    ck_assert_str_eq(json_get_string(v, "k5"), "a");
    ck_assert_str_eq(json_get_string(v, "k2999"), "b");
    ck_assert_str_eq(json_get_string(v, "k8"), "c");
    ck_assert_int_eq(json_object_get(v, "k1234")->u.num.i, 1234);
    for (i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%zu", i);
        ck_assert_str_eq(v->u.obj.keys[i], key);
    }
    /* A copy keeps every member, in order. */
    json_t *c = json_copy(v);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(c->u.obj.len, n);
    ck_assert(json_equal(v, c));
    char *a = dump(v), *b = dump(c);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    json_free(c);
    json_free(v);
    free(in);
}
END_TEST

/* ------------------------------------------------------------------------
 * Tree helpers
 * ------------------------------------------------------------------------ */

START_TEST(test_callback_written_as_function)
{
    json_t *v = json_object();
    ck_assert_int_eq(json_object_set(v, "cb", json_callback(7)), 0);
    char *out = dump(v);
    ck_assert_str_eq(out, "{\"cb\":\"[Function]\"}");
    free(out);
    json_free(v);
}
END_TEST

START_TEST(test_strip_callbacks)
{
    /* {"a":cb,"b":[cb,1,{"c":cb,"d":[cb]}],"e":"x"} */
    json_t *v = json_object();
    json_t *arr = json_array();
    json_t *inner = json_object();
    json_t *innerarr = json_array();
    ck_assert_int_eq(json_object_set(v, "a", json_callback(1)), 0);
    ck_assert_int_eq(json_array_append(innerarr, json_callback(4)), 0);
    ck_assert_int_eq(json_object_set(inner, "c", json_callback(3)), 0);
    ck_assert_int_eq(json_object_set(inner, "d", innerarr), 0);
    ck_assert_int_eq(json_array_append(arr, json_callback(2)), 0);
    ck_assert_int_eq(json_array_append(arr, json_int(1)), 0);
    ck_assert_int_eq(json_array_append(arr, inner), 0);
    ck_assert_int_eq(json_object_set(v, "b", arr), 0);
    ck_assert_int_eq(json_object_set(v, "e", json_string("x")), 0);

    json_strip_callbacks(v);
    char *out = dump(v);
    /* What JSON.stringify gives for the same value with functions. */
    ck_assert_str_eq(out, "{\"b\":[null,1,{\"d\":[null]}],\"e\":\"x\"}");
    free(out);
    json_free(v);

    /* Consecutive callback members are all removed. */
    v = parse_str("{\"x\":1}");
    ck_assert_int_eq(json_object_set(v, "f", json_callback(1)), 0);
    ck_assert_int_eq(json_object_set(v, "g", json_callback(2)), 0);
    ck_assert_int_eq(json_object_set(v, "y", json_int(2)), 0);
    json_strip_callbacks(v);
    out = dump(v);
    ck_assert_str_eq(out, "{\"x\":1,\"y\":2}");
    free(out);
    json_free(v);
    json_strip_callbacks(NULL);
}
END_TEST

START_TEST(test_copy_is_deep_and_equal)
{
    json_t *v = parse_str("{\"a\":[1,2.5,\"s\",null,true,{\"b\":\"c\\u0000d\"}],\"n\":{}}");
    ck_assert_int_eq(json_object_set(v, "cb", json_callback(9)), 0);
    json_t *c = json_copy(v);

    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_ne(c, v);
    ck_assert(json_equal(v, c));
    ck_assert(json_equal(c, v));
    ck_assert_int_eq(json_object_get(c, "cb")->type, JSON_CALLBACK);
    ck_assert_int_eq(json_object_get(c, "cb")->u.callback, 9);

    /* Changing the copy leaves the original alone. */
    json_t *arr = json_object_get(c, "a");
    ck_assert_ptr_ne(arr, json_object_get(v, "a"));
    ck_assert_int_eq(json_array_set(arr, 0, json_int(100)), 0);
    ck_assert(!json_equal(v, c));
    ck_assert_int_eq(json_array_get(json_object_get(v, "a"), 0)->u.num.i, 1);
    json_free(c);
    json_free(v);
    ck_assert_ptr_null(json_copy(NULL));
}
END_TEST

START_TEST(test_equal)
{
    json_t *a = parse_str("{\"x\":1,\"y\":[true,null]}");
    json_t *b = parse_str("{\"y\":[true,null],\"x\":1.0}");
    json_t *c = parse_str("{\"x\":1,\"y\":[true,null],\"z\":0}");
    json_t *d = parse_str("{\"x\":1,\"y\":[true,false]}");
    json_t *e = parse_str("[1,2]");
    json_t *f = parse_str("[2,1]");
    json_t *g = parse_str("{\"x\":1,\"q\":[true,null]}");

    /* Key order does not matter; 1 and 1.0 are the same number. */
    ck_assert(json_equal(a, b));
    ck_assert(!json_equal(a, c));
    ck_assert(!json_equal(c, a));
    ck_assert(!json_equal(a, d));
    ck_assert(!json_equal(e, f)); /* array order does */
    ck_assert(!json_equal(a, g));
    ck_assert(!json_equal(a, e));
    ck_assert(json_equal(NULL, NULL));
    ck_assert(!json_equal(a, NULL));

    json_t *cb1 = json_callback(1), *cb2 = json_callback(2);
    ck_assert(!json_equal(cb1, cb2));
    json_free(cb1);
    json_free(cb2);
    json_free(a);
    json_free(b);
    json_free(c);
    json_free(d);
    json_free(e);
    json_free(f);
    json_free(g);
}
END_TEST

START_TEST(test_object_members)
{
    json_t *v = parse_str("{\"a\":1,\"b\":2,\"c\":3}");

    ck_assert_int_eq(json_object_set(v, "b", json_string("two")), 0); /* replaces */
    ck_assert_uint_eq(v->u.obj.len, 3);
    ck_assert_str_eq(json_get_string(v, "b"), "two");
    json_t *a = json_object_take(v, "a");
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(a->u.num.i, 1);
    json_free(a);
    ck_assert_int_eq(json_object_del(v, "c"), 1);
    ck_assert_int_eq(json_object_del(v, "c"), 0);
    ck_assert_ptr_null(json_object_take(v, "zz"));
    char *out = dump(v);
    ck_assert_str_eq(out, "{\"b\":\"two\"}");
    free(out);
    /* Wrong container: refused, and the value is freed (ASan checks). */
    ck_assert_int_eq(json_array_append(v, json_int(1)), -1);
    ck_assert_int_eq(json_object_set(json_array_get(v, 0), "k", json_int(1)), -1);
    ck_assert_ptr_null(json_get_string(v, "missing"));
    json_free(v);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("json");

    tcase_add_test(tc, test_parse_dump_round_trip);
    tcase_add_test(tc, test_whitespace_and_scalars_at_top);
    tcase_add_test(tc, test_escapes_written_back);
    tcase_add_test(tc, test_control_characters_escaped);
    tcase_add_test(tc, test_writer_large_tree);
    tcase_add_test(tc, test_writer_deep_tree);
    tcase_add_test(tc, test_dump_append_after_header);
    tcase_add_test(tc, test_long_escaped_strings_parse);
    tcase_add_test(tc, test_integers_stay_integers);
    tcase_add_test(tc, test_doubles_print_shortest);
    tcase_add_test(tc, test_big_and_small_doubles_read_back);
    tcase_add_test(tc, test_negative_zero);
    tcase_add_test(tc, test_non_finite_written_as_null);
    tcase_add_test(tc, test_constructed_numbers);
    tcase_add_test(tc, test_unicode_escapes_decode_to_utf8);
    tcase_add_test(tc, test_nul_inside_strings);
    tcase_add_test(tc, test_invalid_utf8_repaired_on_output);
    tcase_add_test(tc, test_nul_in_key_refused);
    tcase_add_test(tc, test_invalid_utf8_refused);
    tcase_add_test(tc, test_lenient_drops_nul_keyed_containers);
    tcase_add_test(tc, test_direct_and_fallback_agree);
    tcase_add_test(tc, test_depth_limit);
    tcase_add_test(tc, test_trailing_garbage_refused);
    tcase_add_test(tc, test_malformed_refused);
    tcase_add_test(tc, test_length_is_respected);
    tcase_add_test(tc, test_small_error_buffer);
    tcase_add_test(tc, test_parse_first_value);
    tcase_add_test(tc, test_duplicate_keys_last_wins);
    tcase_add_test(tc, test_large_object_duplicates);
    tcase_add_test(tc, test_callback_written_as_function);
    tcase_add_test(tc, test_strip_callbacks);
    tcase_add_test(tc, test_copy_is_deep_and_equal);
    tcase_add_test(tc, test_equal);
    tcase_add_test(tc, test_object_members);
    suite_add_tcase(s, tc);

    return check_run(s);
}
