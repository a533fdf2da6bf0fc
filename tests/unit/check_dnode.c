/* check_dnode: unit tests for the DNode codec (src/dnode.h). Outgoing
 * messages must be what the npm dnode package (dnode-protocol's scrubber)
 * would send for the same arguments; incoming ones are turned into argument
 * trees with JSON_CALLBACK nodes at their paths, links applied, and anything
 * malformed refused with a reason rather than half applied. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dnode.h"
#include "json.h"
#include "run_suite.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static json_t *jparse(const char *in)
{
    char err[128] = "";
    json_t *v = json_parse(in, strlen(in), JSON_DEFAULT_MAX_DEPTH, err, sizeof(err));
    ck_assert_msg(v != NULL, "test JSON '%s' does not parse: %s", in, err);
    return v;
}

static void parse_ok(const char *line, dnode_msg_t *msg)
{
    char err[200] = "";
    int rc = dnode_parse(line, strlen(line), JSON_DEFAULT_MAX_DEPTH, msg, err, sizeof(err));
    ck_assert_msg(rc == 0, "'%s' refused: %s", line, err);
    ck_assert_ptr_nonnull(msg->args);
    ck_assert_int_eq(msg->args->type, JSON_ARRAY);
}

/* The message must be refused; the reason must contain want (if given). */
static void parse_refused(const char *line, const char *want)
{
    char err[200] = "";
    dnode_msg_t msg;
    int rc = dnode_parse(line, strlen(line), JSON_DEFAULT_MAX_DEPTH, &msg, err, sizeof(err));

    ck_assert_msg(rc == -1, "'%s' should have been refused", line);
    /* Nothing is left behind for the caller to free. */
    ck_assert_ptr_null(msg.method);
    ck_assert_ptr_null(msg.args);
    ck_assert_msg(err[0] != '\0', "no reason for '%s'", line);
    if (want != NULL)
        ck_assert_msg(strstr(err, want) != NULL, "reason for '%s' is '%s', expected '%s'",
                      line, err, want);
}

/* Build a message and parse the line back as plain JSON. */
static json_t *build(const char *method, int64_t id, const json_t *args)
{
    size_t len = 0;
    char *line = dnode_build(method, id, args, &len);
    ck_assert_ptr_nonnull(line);
    ck_assert_uint_eq(len, strlen(line));
    ck_assert_msg(len > 0 && line[len - 1] == '\n', "line not newline-terminated");
    ck_assert_msg(memchr(line, '\n', len - 1) == NULL, "newline inside the message");
    json_t *v = jparse(line);
    free(line);
    return v;
}

static void assert_json(const json_t *v, const char *want)
{
    json_t *w = jparse(want);
    char *got = json_dump(v, NULL);
    ck_assert_msg(json_equal(v, w), "got %s, expected %s", got, want);
    free(got);
    json_free(w);
}

static json_t *at(const json_t *v, const char *key) { return json_object_get(v, key); }

/* ------------------------------------------------------------------------
 * Building (scrub)
 * ------------------------------------------------------------------------ */

START_TEST(test_build_scrubs_nested_callbacks)
{
    /* [{"a":[{"cb":fn0}],"list":[1,fn1]},{"url":"/x","error":fn2},fn3], the
     * arguments of the dnode-protocol request this must match. */
    json_t *args = jparse("[{\"a\":[{}],\"list\":[1]},{\"url\":\"/x\"}]");
    json_t *first = json_array_get(args, 0);
    ck_assert_int_eq(json_object_set(json_array_get(at(first, "a"), 0), "cb",
                                     json_callback(0)), 0);
    ck_assert_int_eq(json_array_append(at(first, "list"), json_callback(1)), 0);
    ck_assert_int_eq(json_object_set(json_array_get(args, 1), "error", json_callback(2)), 0);
    ck_assert_int_eq(json_array_append(args, json_callback(3)), 0);

    json_t *msg = build("publish", -1, args);
    /* Byte for byte what dnode-protocol emits, up to key order. */
    assert_json(msg, "{\"method\":\"publish\",\"arguments\":[{\"a\":[{\"cb\":\"[Function]\"}],"
                     "\"list\":[1,\"[Function]\"]},{\"url\":\"/x\",\"error\":\"[Function]\"},"
                     "\"[Function]\"],\"callbacks\":{\"0\":[\"0\",\"a\",\"0\",\"cb\"],"
                     "\"1\":[\"0\",\"list\",\"1\"],\"2\":[\"1\",\"error\"],\"3\":[\"2\"]},"
                     "\"links\":[]}");
    /* Path elements are strings, as traverse gives them to the scrubber. */
    const json_t *path = at(at(msg, "callbacks"), "1");
    size_t i;
    for (i = 0; i < path->u.arr.len; i++)
        ck_assert_int_eq(path->u.arr.items[i]->type, JSON_STRING);
    /* The caller's tree is left as it was. */
    ck_assert_int_eq(json_array_get(args, 2)->type, JSON_CALLBACK);
    json_free(msg);
    json_free(args);
}
END_TEST

START_TEST(test_build_without_callbacks)
{
    json_t *args = jparse("[\"/todos\",{\"n\":[1,2,{\"x\":null}]}]");
    json_t *msg = build("subscribed", -1, args);
    assert_json(msg, "{\"method\":\"subscribed\",\"arguments\":[\"/todos\",{\"n\":[1,2,"
                     "{\"x\":null}]}],\"callbacks\":{},\"links\":[]}");
    json_free(msg);
    json_free(args);

    /* No arguments at all: an empty array, not null. */
    msg = build("x", -1, NULL);
    assert_json(msg, "{\"method\":\"x\",\"arguments\":[],\"callbacks\":{},\"links\":[]}");
    json_free(msg);
}
END_TEST

START_TEST(test_build_callback_call_by_id)
{
    /* Calling a client's callback: "method" is its numeric id. */
    json_t *args = jparse("[null]");
    json_t *msg = build(NULL, 12, args);
    const json_t *m = at(msg, "method");
    ck_assert_int_eq(m->type, JSON_NUMBER);
    ck_assert(m->u.num.is_int);
    ck_assert_int_eq(m->u.num.i, 12);
    assert_json(at(msg, "arguments"), "[null]");
    json_free(msg);
    json_free(args);
}
END_TEST

START_TEST(test_build_methods)
{
    static const char *const names[] = {"create", "read", "subscribe"};
    size_t len = 0;
    char *line = dnode_build_methods(names, 3, &len);
    ck_assert_ptr_nonnull(line);
    ck_assert_uint_eq(len, strlen(line));
    json_t *msg = jparse(line);
    assert_json(msg, "{\"method\":\"methods\",\"arguments\":[{\"create\":\"[Function]\","
                     "\"read\":\"[Function]\",\"subscribe\":\"[Function]\"}],\"callbacks\":{"
                     "\"0\":[\"0\",\"create\"],\"1\":[\"0\",\"read\"],\"2\":[\"0\",\"subscribe\"]},"
                     "\"links\":[]}");
    json_free(msg);

    /* And our parser reads it back as a methods object of callbacks. */
    dnode_msg_t m;
    line[len - 1] = '\0';
    parse_ok(line, &m);
    ck_assert_str_eq(m.method, "methods");
    ck_assert_uint_eq(m.ncallbacks, 3);
    const json_t *obj = json_array_get(m.args, 0);
    ck_assert_int_eq(at(obj, "subscribe")->type, JSON_CALLBACK);
    ck_assert_int_eq(at(obj, "subscribe")->u.callback, 2);
    dnode_msg_clear(&m);
    free(line);
}
END_TEST

START_TEST(test_build_parse_round_trip)
{
    /* Whatever we build, we parse back to the same tree with callbacks. */
    json_t *args = jparse("[{\"deep\":{\"er\":[[{}]]}},[0,1]]");
    json_t *inner = json_array_get(json_array_get(at(at(json_array_get(args, 0), "deep"), "er"), 0), 0);
    ck_assert_int_eq(json_object_set(inner, "f", json_callback(41)), 0);
    ck_assert_int_eq(json_array_set(json_array_get(args, 1), 1, json_callback(42)), 0);

    char *line = dnode_build("m", -1, args, NULL);
    ck_assert_ptr_nonnull(line);
    dnode_msg_t m;
    line[strlen(line) - 1] = '\0';
    parse_ok(line, &m);
    ck_assert_uint_eq(m.ncallbacks, 2);
    ck_assert(json_equal(m.args, args));
    dnode_msg_clear(&m);
    free(line);
    json_free(args);
}
END_TEST

START_TEST(test_build_append_after_header)
{
    /* The append form writes the same line after the caller's own bytes
     * (a session writes its message header first), for named calls and
     * calls by id, with and without callbacks. */
    json_t *args = jparse("[\"/todos\",{\"n\":[1,2.5,\"\\u0001\"]}]");
    json_t *withcb = jparse("[{\"x\":[0]}]");
    ck_assert_int_eq(json_array_set(at(json_array_get(withcb, 0), "x"), 0, json_callback(7)), 0);
    const struct {
        const char *method;
        int64_t id;
        const json_t *args;
    } cases[] = {{"subscribed", -1, args},
                 {NULL, 9007199254740991LL, args},
                 {"m", -1, withcb},
                 {NULL, 0, NULL}};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_buf_t b = {NULL, 0, 0};
        size_t len = 0;
        char *line = dnode_build(cases[i].method, cases[i].id, cases[i].args, &len);
        ck_assert_ptr_nonnull(line);
        ck_assert_int_eq(json_buf_append(&b, "0123456789abcdef", 16), 0);
        ck_assert_int_eq(dnode_build_append(&b, cases[i].method, cases[i].id, cases[i].args), 0);
        ck_assert_uint_eq(b.len, 16 + len);
        ck_assert_int_eq(memcmp(b.data, "0123456789abcdef", 16), 0);
        ck_assert_int_eq(memcmp(b.data + 16, line, len), 0);
        free(b.data);
        free(line);
    }
    /* Exactly the form the reference implementation's peers read. */
    char *line = dnode_build(NULL, 3, args, NULL);
    ck_assert_str_eq(line, "{\"method\":3,\"arguments\":[\"/todos\",{\"n\":[1,2.5,\"\\u0001\"]}],"
                           "\"callbacks\":{},\"links\":[]}\n");
    free(line);
    line = dnode_build("m", -1, withcb, NULL);
    ck_assert_str_eq(line, "{\"method\":\"m\",\"arguments\":[{\"x\":[\"[Function]\"]}],"
                           "\"callbacks\":{\"7\":[\"0\",\"x\",\"0\"]},\"links\":[]}\n");
    free(line);
    json_free(args);
    json_free(withcb);
}
END_TEST

/* ------------------------------------------------------------------------
 * Parsing (unscrub)
 * ------------------------------------------------------------------------ */

START_TEST(test_unscrub_nested_string_paths)
{
    /* What an npm dnode client sends for publish(model, {url, error: fn}, fn). */
    dnode_msg_t m;
    parse_ok("{\"method\":\"publish\",\"arguments\":[{\"a\":[{\"cb\":\"[Function]\"}],"
             "\"list\":[1,\"[Function]\"]},{\"url\":\"/x\",\"error\":\"[Function]\"},"
             "\"[Function]\"],\"callbacks\":{\"0\":[\"0\",\"a\",\"0\",\"cb\"],"
             "\"1\":[\"0\",\"list\",\"1\"],\"2\":[\"1\",\"error\"],\"3\":[\"2\"]},"
             "\"links\":[]}",
             &m);
    ck_assert_str_eq(m.method, "publish");
    ck_assert_uint_eq(m.ncallbacks, 4);
    const json_t *first = json_array_get(m.args, 0);
    const json_t *cb = at(json_array_get(at(first, "a"), 0), "cb");
    ck_assert_int_eq(cb->type, JSON_CALLBACK);
    ck_assert_int_eq(cb->u.callback, 0);
    cb = json_array_get(at(first, "list"), 1);
    ck_assert_int_eq(cb->type, JSON_CALLBACK);
    ck_assert_int_eq(cb->u.callback, 1);
    ck_assert_int_eq(json_array_get(at(first, "list"), 0)->u.num.i, 1);
    ck_assert_int_eq(at(json_array_get(m.args, 1), "error")->u.callback, 2);
    ck_assert_int_eq(dnode_arg_callback(m.args, 2), 3);
    ck_assert_int_eq(dnode_arg_callback(m.args, 1), -1); /* an object */
    ck_assert_int_eq(dnode_arg_callback(m.args, 9), -1); /* absent */
    dnode_msg_clear(&m);
}
END_TEST

START_TEST(test_unscrub_integer_paths)
{
    /* Other implementations send array indexes as integers; both forms work,
     * also mixed within one path, and an integer names an object key too. */
    dnode_msg_t m;
    parse_ok("{\"method\":\"m\",\"arguments\":[{\"l\":[0,{\"7\":null}]},null],"
             "\"callbacks\":{\"5\":[0,\"l\",1,7],\"6\":[1]}}",
             &m);
    ck_assert_uint_eq(m.ncallbacks, 2);
    const json_t *obj = json_array_get(at(json_array_get(m.args, 0), "l"), 1);
    ck_assert_int_eq(at(obj, "7")->type, JSON_CALLBACK);
    ck_assert_int_eq(at(obj, "7")->u.callback, 5);
    ck_assert_int_eq(dnode_arg_callback(m.args, 1), 6);
    dnode_msg_clear(&m);
}
END_TEST

START_TEST(test_unscrub_new_member_and_next_slot)
{
    /* The last step may add an object member or the next array element, as
     * traverse.set would. */
    dnode_msg_t m;
    parse_ok("{\"method\":\"m\",\"arguments\":[{}],\"callbacks\":{\"1\":[\"0\",\"fn\"],"
             "\"2\":[\"1\"]}}",
             &m);
    ck_assert_int_eq(at(json_array_get(m.args, 0), "fn")->u.callback, 1);
    ck_assert_uint_eq(m.args->u.arr.len, 2);
    ck_assert_int_eq(dnode_arg_callback(m.args, 1), 2);
    dnode_msg_clear(&m);
}
END_TEST

START_TEST(test_callback_ids)
{
    dnode_msg_t m;
    /* The largest id a JavaScript peer can count to. */
    parse_ok("{\"method\":\"m\",\"arguments\":[null],"
             "\"callbacks\":{\"9007199254740991\":[\"0\"]}}",
             &m);
    ck_assert_int_eq(dnode_arg_callback(m.args, 0), DNODE_MAX_CALLBACK_ID);
    dnode_msg_clear(&m);

    parse_refused("{\"method\":\"m\",\"arguments\":[null],\"callbacks\":{\"abc\":[\"0\"]}}",
                  "callback id");
    parse_refused("{\"method\":\"m\",\"arguments\":[null],\"callbacks\":{\"-1\":[\"0\"]}}",
                  "callback id");
    parse_refused("{\"method\":\"m\",\"arguments\":[null],\"callbacks\":{\"1.5\":[\"0\"]}}",
                  "callback id");
    parse_refused("{\"method\":\"m\",\"arguments\":[null],\"callbacks\":{\"\":[\"0\"]}}",
                  "callback id");
    parse_refused("{\"method\":\"m\",\"arguments\":[null],\"callbacks\":{\" 1\":[\"0\"]}}",
                  "callback id");
    parse_refused("{\"method\":\"m\",\"arguments\":[null],"
                  "\"callbacks\":{\"9007199254740992\":[\"0\"]}}",
                  "callback id");
    parse_refused("{\"method\":\"m\",\"arguments\":[null],"
                  "\"callbacks\":{\"99999999999999999999999\":[\"0\"]}}",
                  "callback id");
    parse_refused("{\"method\":\"m\",\"arguments\":[null],\"callbacks\":[[\"0\"]]}",
                  "callbacks");
}
END_TEST

/* A message with n callbacks, each at its own argument index. */
static char *many_callbacks(size_t n)
{
    size_t cap = n * 24 + 64, len = 0, i;
    char *line = malloc(cap);
    ck_assert_ptr_nonnull(line);
    len += (size_t)snprintf(line, cap, "{\"method\":\"m\",\"arguments\":[");
    for (i = 0; i < n; i++)
        len += (size_t)snprintf(line + len, cap - len, "%snull", i ? "," : "");
    len += (size_t)snprintf(line + len, cap - len, "],\"callbacks\":{");
    for (i = 0; i < n; i++)
        len += (size_t)snprintf(line + len, cap - len, "%s\"%zu\":[%zu]", i ? "," : "", i, i);
    len += (size_t)snprintf(line + len, cap - len, "}}");
    ck_assert_uint_lt(len, cap);
    return line;
}

START_TEST(test_callbacks_capped)
{
    dnode_msg_t m;
    char *line = many_callbacks(DNODE_MAX_CALLBACKS);
    parse_ok(line, &m);
    ck_assert_uint_eq(m.ncallbacks, DNODE_MAX_CALLBACKS);
    ck_assert_int_eq(dnode_arg_callback(m.args, DNODE_MAX_CALLBACKS - 1),
                     DNODE_MAX_CALLBACKS - 1);
    dnode_msg_clear(&m);
    free(line);
    line = many_callbacks(DNODE_MAX_CALLBACKS + 1);
    parse_refused(line, "too many callbacks");
    free(line);
}
END_TEST

/* The cap a session passes (what is left of max_callbacks) replaces the
 * default one, both below and above it; 0 refuses any callback. */
START_TEST(test_callbacks_capped_by_caller)
{
    static const char one[] = "{\"method\":\"m\",\"arguments\":[0],\"callbacks\":{\"1\":[\"0\"]}}";
    static const char none[] = "{\"method\":\"m\",\"arguments\":[0]}";
    dnode_msg_t m;
    char err[200];
    char *line = many_callbacks(5);

    ck_assert_int_eq(dnode_parse_capped(line, strlen(line), 32, 5, &m, err, sizeof(err)), 0);
    ck_assert_uint_eq(m.ncallbacks, 5);
    dnode_msg_clear(&m);
    ck_assert_int_eq(dnode_parse_capped(line, strlen(line), 32, 4, &m, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "too many callbacks (5, at most 4)"));
    ck_assert_ptr_null(m.args);
    free(line);
    line = many_callbacks(DNODE_MAX_CALLBACKS + 1);
    ck_assert_int_eq(dnode_parse_capped(line, strlen(line), 32, DNODE_MAX_CALLBACKS + 1, &m, err,
                                        sizeof(err)),
                     0);
    ck_assert_uint_eq(m.ncallbacks, DNODE_MAX_CALLBACKS + 1);
    dnode_msg_clear(&m);
    free(line);
    ck_assert_int_eq(dnode_parse_capped(one, strlen(one), 32, 0, &m, err, sizeof(err)), -1);
    ck_assert_int_eq(dnode_parse_capped(none, strlen(none), 32, 0, &m, err, sizeof(err)), 0);
    dnode_msg_clear(&m);
}
END_TEST

START_TEST(test_bad_callback_paths)
{
    /* Through a missing container. */
    parse_refused("{\"method\":\"m\",\"arguments\":[{}],\"callbacks\":{\"1\":[\"0\",\"no\","
                  "\"x\"]}}",
                  "path");
    /* Through a scalar. */
    parse_refused("{\"method\":\"m\",\"arguments\":[5],\"callbacks\":{\"1\":[\"0\",\"x\"]}}",
                  "path");
    /* Past the end of an array (more than one slot). */
    parse_refused("{\"method\":\"m\",\"arguments\":[],\"callbacks\":{\"1\":[\"3\"]}}", "path");
    /* Not an index into an array. */
    parse_refused("{\"method\":\"m\",\"arguments\":[[1]],\"callbacks\":{\"1\":[\"0\",\"x\"]}}",
                  "path");
    parse_refused("{\"method\":\"m\",\"arguments\":[[1]],\"callbacks\":{\"1\":[\"0\",\"-1\"]}}",
                  "path");
    parse_refused("{\"method\":\"m\",\"arguments\":[[1]],\"callbacks\":{\"1\":[\"0\",\"00\"]}}",
                  "path");
    parse_refused("{\"method\":\"m\",\"arguments\":[[1]],\"callbacks\":{\"1\":[\"0\",0.5]}}",
                  "path");
    /* An index is all of the string: a NUL inside does not end it. */
    parse_refused("{\"method\":\"m\",\"arguments\":[[1,2]],\"callbacks\":{\"1\":[\"0\","
                  "\"1\\u00002\"]}}",
                  "path");
    /* Empty path, wrong element types, not an array. */
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"1\":[]}}", "path");
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"1\":[null]}}", "path");
    parse_refused("{\"method\":\"m\",\"arguments\":[{}],\"callbacks\":{\"1\":[\"0\",true]}}",
                  "path");
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"1\":\"0\"}}", "path");
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"1\":[[\"0\"]]}}", "path");
}
END_TEST

START_TEST(test_links_applied_by_copy)
{
    dnode_msg_t m;
    parse_ok("{\"method\":\"m\",\"arguments\":[{\"a\":{\"x\":[1,2]}},{\"b\":\"[Circular]\"}],"
             "\"callbacks\":{},\"links\":[{\"from\":[\"0\",\"a\"],\"to\":[\"1\",\"b\"]}]}",
             &m);
    json_t *src = at(json_array_get(m.args, 0), "a");
    json_t *dst = at(json_array_get(m.args, 1), "b");
    ck_assert_ptr_nonnull(dst);
    assert_json(dst, "{\"x\":[1,2]}");
    /* A copy, not a shared node: freeing one must not touch the other, and
     * changing one leaves the other as it was. */
    ck_assert_ptr_ne(src, dst);
    ck_assert_int_eq(json_object_set(src, "x", json_int(0)), 0);
    assert_json(dst, "{\"x\":[1,2]}");
    dnode_msg_clear(&m);

    /* A linked value that holds a callback carries it to both places. */
    parse_ok("{\"method\":\"m\",\"arguments\":[{\"f\":\"[Function]\"},null],"
             "\"callbacks\":{\"3\":[\"0\",\"f\"]},\"links\":[{\"from\":[0],\"to\":[1]}]}",
             &m);
    ck_assert_int_eq(at(json_array_get(m.args, 1), "f")->u.callback, 3);
    ck_assert_int_eq(at(json_array_get(m.args, 0), "f")->u.callback, 3);
    dnode_msg_clear(&m);
}
END_TEST

START_TEST(test_circular_link_refused)
{
    /* What npm dnode sends for o = {x: 1}; o.self = o. */
    parse_refused("{\"method\":\"m\",\"arguments\":[{\"x\":1,\"self\":\"[Circular]\"}],"
                  "\"callbacks\":{},\"links\":[{\"from\":[\"0\"],\"to\":[\"0\",\"self\"]}]}",
                  "circular");
    /* Mixed string and integer forms of the same path. */
    parse_refused("{\"method\":\"m\",\"arguments\":[{\"l\":[{\"up\":null}]}],"
                  "\"links\":[{\"from\":[0,\"l\"],\"to\":[\"0\",\"l\",\"0\",\"up\"]}]}",
                  "circular");
    /* A value linked onto itself. */
    parse_refused("{\"method\":\"m\",\"arguments\":[{}],"
                  "\"links\":[{\"from\":[\"0\"],\"to\":[\"0\"]}]}",
                  "circular");
}
END_TEST

START_TEST(test_link_amplification_refused)
{
    /* Each link copies a value that holds the previous copies: without a
     * bound, 40 links of a 2 KB message would ask for 2^40 nodes. */
    char line[4096];
    size_t i, n = 0;
    n += (size_t)snprintf(line + n, sizeof(line) - n,
                          "{\"method\":\"m\",\"arguments\":[{\"x\":1},{}],\"links\":[");
    for (i = 0; i < 20; i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n,
                              "%s{\"from\":[\"0\"],\"to\":[\"1\",\"a%zu\"]},"
                              "{\"from\":[\"1\"],\"to\":[\"0\",\"b%zu\"]}",
                              i ? "," : "", i, i);
    n += (size_t)snprintf(line + n, sizeof(line) - n, "]}");
    ck_assert_uint_lt(n, sizeof(line) - 1);
    parse_refused(line, "link");

    /* Copies that fit in what the arguments hold are still applied. */
    dnode_msg_t m;
    parse_ok("{\"method\":\"m\",\"arguments\":[{\"x\":1},null,null],"
             "\"links\":[{\"from\":[\"0\"],\"to\":[\"1\"]},{\"from\":[\"0\",\"x\"],"
             "\"to\":[\"2\"]}]}",
             &m);
    assert_json(m.args, "[{\"x\":1},{\"x\":1},1]");
    dnode_msg_clear(&m);
}
END_TEST

START_TEST(test_bad_links)
{
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"links\":{}}", "links");
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"links\":[{\"from\":[\"0\"]}]}",
                  "link");
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"links\":[5]}", "link");
    parse_refused("{\"method\":\"m\",\"arguments\":[1,2],"
                  "\"links\":[{\"from\":[\"7\"],\"to\":[\"1\"]}]}",
                  "link");
    parse_refused("{\"method\":\"m\",\"arguments\":[1,2],"
                  "\"links\":[{\"from\":[\"0\"],\"to\":[\"1\",\"x\",\"y\"]}]}",
                  "link");
}
END_TEST

START_TEST(test_cull_parsed)
{
    dnode_msg_t m;
    parse_ok("{\"method\":\"cull\",\"arguments\":[3,4]}", &m);
    ck_assert_str_eq(m.method, "cull");
    ck_assert_int_eq(m.method_id, -1);
    assert_json(m.args, "[3,4]");
    ck_assert_uint_eq(m.ncallbacks, 0);
    dnode_msg_clear(&m);
}
END_TEST

START_TEST(test_method_id_call)
{
    dnode_msg_t m;
    parse_ok("{\"method\":4,\"arguments\":[\"/todos\",\"[Function]\"],\"callbacks\":{\"0\":[1]},"
             "\"links\":[]}",
             &m);
    ck_assert_ptr_null(m.method);
    ck_assert_int_eq(m.method_id, 4);
    ck_assert_int_eq(dnode_arg_callback(m.args, 1), 0);
    dnode_msg_clear(&m);
}
END_TEST

START_TEST(test_arguments_missing_or_null)
{
    dnode_msg_t m;
    parse_ok("{\"method\":\"read\"}", &m);
    ck_assert_uint_eq(m.args->u.arr.len, 0);
    dnode_msg_clear(&m);
    parse_ok("{\"method\":\"read\",\"arguments\":null,\"callbacks\":null,\"links\":null}", &m);
    ck_assert_uint_eq(m.args->u.arr.len, 0);
    dnode_msg_clear(&m);
    parse_refused("{\"method\":\"read\",\"arguments\":{\"0\":1}}", "arguments");
    parse_refused("{\"method\":\"read\",\"arguments\":\"x\"}", "arguments");
}
END_TEST

START_TEST(test_malformed_json)
{
    parse_refused("{\"method\":\"subscribe\",\"arguments\":[\"/x\"", "malformed JSON");
    parse_refused("{\"method\":", "malformed JSON");
    parse_refused("", "malformed JSON");
    parse_refused("{\"method\":\"m\"} trailing", "malformed JSON");
    parse_refused("{\"method\":\"m\",\"arguments\":[\"\xc0\xaf\"]}", "malformed JSON");
    {
        /* An empty message may come without a buffer (a WebSocket frame):
         * refused like any empty input. (Offsetting that null pointer is
         * what clang's UBSan caught in fuzz_ws; gcc's does not flag it.) */
        char err[200] = "";
        dnode_msg_t m;

        ck_assert_int_eq(dnode_parse(NULL, 0, JSON_DEFAULT_MAX_DEPTH, &m, err, sizeof(err)), -1);
        ck_assert_msg(strstr(err, "malformed JSON") != NULL, "reason '%s'", err);
    }

    /* Nesting past the limit is malformed too. */
    char line[300];
    size_t i, n = 0;
    n += (size_t)snprintf(line, sizeof(line), "{\"method\":\"m\",\"arguments\":");
    for (i = 0; i < 100; i++)
        line[n++] = '[';
    for (i = 0; i < 100; i++)
        line[n++] = ']';
    line[n++] = '}';
    line[n] = '\0';
    parse_refused(line, "deep");
}
END_TEST

START_TEST(test_not_an_object)
{
    parse_refused("[\"subscribe\"]", "object");
    parse_refused("\"methods\"", "object");
    parse_refused("null", "object");
    parse_refused("42", "object");
}
END_TEST

START_TEST(test_bad_method_field)
{
    parse_refused("{\"arguments\":[]}", "method");
    parse_refused("{\"method\":null}", "method");
    parse_refused("{\"method\":true}", "method");
    parse_refused("{\"method\":-1}", "method");
    parse_refused("{\"method\":1.5}", "method");
    parse_refused("{\"method\":9007199254740992}", "method");
    parse_refused("{\"method\":\"\"}", "method");
    parse_refused("{\"method\":\"a\\u0000b\"}", "method");
    parse_refused("{\"method\":{}}", "method");
    parse_refused("{\"method\":[\"create\"]}", "method");
}
END_TEST

/* The common request shape is read without a tree for its envelope; the
 * same message with one member more (which that reader leaves to the
 * general one, and which the general one ignores) must come out the same:
 * method, callbacks placed, arguments. */
static void same_as_general(const char *line)
{
    char err[200] = "", other[1024];
    dnode_msg_t a, b;
    const char *brace = strchr(line, '{');
    int rc;

    ck_assert_ptr_nonnull(brace);
    snprintf(other, sizeof(other), "%.*s{\"extra\":{\"a\":[1]},%s", (int)(brace - line), line,
             brace + 1);
    rc = dnode_parse(line, strlen(line), JSON_DEFAULT_MAX_DEPTH, &a, err, sizeof(err));
    ck_assert_msg(rc == 0, "'%s' refused: %s", line, err);
    rc = dnode_parse(other, strlen(other), JSON_DEFAULT_MAX_DEPTH, &b, err, sizeof(err));
    ck_assert_msg(rc == 0, "'%s' refused: %s", other, err);
    ck_assert_msg((a.method == NULL) == (b.method == NULL), "method kind differs for '%s'", line);
    if (a.method != NULL)
        ck_assert_str_eq(a.method, b.method);
    ck_assert_int_eq(a.method_id, b.method_id);
    ck_assert_uint_eq(a.ncallbacks, b.ncallbacks);
    {
        char *ga = json_dump(a.args, NULL), *gb = json_dump(b.args, NULL);
        ck_assert_msg(json_equal(a.args, b.args), "'%s': %s, the general reader %s", line, ga,
                      gb);
        free(ga);
        free(gb);
    }
    dnode_msg_clear(&a);
    dnode_msg_clear(&b);
}

/* line is read with max_depth `enough`, and refused as too deep with one
 * less. */
static void depth_needed(const char *line, size_t enough)
{
    char err[200] = "";
    dnode_msg_t msg;

    ck_assert_int_eq(dnode_parse(line, strlen(line), enough, &msg, err, sizeof(err)), 0);
    dnode_msg_clear(&msg);
    ck_assert_int_eq(dnode_parse(line, strlen(line), enough - 1, &msg, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "deep") != NULL, "reason for '%s' at %zu: '%s'", line, enough - 1,
                  err);
}

START_TEST(test_common_shape_same_as_general)
{
    dnode_msg_t msg;

    same_as_general("{\"method\":\"subscribe\",\"arguments\":[\"/todos\",\"[Function]\"],"
                    "\"callbacks\":{\"3\":[1]},\"links\":[]}");
    same_as_general("{\"method\":\"read\",\"arguments\":[{\"type\":\"todo\"},\"[Function]\"],"
                    "\"callbacks\":{\"12\":[\"1\"]},\"links\":[]}");
    same_as_general(" { \"links\" : [ ] , \"callbacks\" : { \"7\" : [ 2 ] , \"8\" : [\"0\"] } ,"
                    " \"arguments\" : [ \"[Function]\" , {\"a\":\"\\u00e9\\n\"}, 3 ] ,"
                    " \"method\" : \"create\" }\r\n");
    same_as_general("{\"method\":4,\"arguments\":[null,{\"ok\":true}]}");
    same_as_general("{\"arguments\":[],\"method\":0,\"callbacks\":{}}");
    /* The next free index appends; a later entry may then use it. */
    same_as_general("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"1\":[1],\"2\":[2]}}");
    /* Two ids for one index: the later one stays, both are counted. */
    same_as_general("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"1\":[0],\"2\":[0]}}");
    /* Ids with leading zeros, or given twice in two spellings. */
    same_as_general("{\"method\":\"m\",\"arguments\":[1,2],\"callbacks\":{\"007\":[0],\"7\":[1]}}");
    same_as_general("{\"method\":\"m\",\"arguments\":[1,2],\"callbacks\":{\"5\":[0],\"5\":[1]}}");
    /* Shapes the fast reader leaves alone, read the same all the same. */
    same_as_general("{\"method\":\"m\",\"arguments\":[{\"a\":[\"x\"]}],\"callbacks\":{\"1\":[0,\"a\",0]}}");
    same_as_general("{\"method\":\"m\\u0061\",\"arguments\":[[1,[2,[3]]]]}");
    same_as_general("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"1\":[0],\"2\":[0],"
                    "\"3\":[0],\"4\":[0],\"5\":[0],\"6\":[0],\"7\":[0],\"8\":[0],\"9\":[0]}}");
    same_as_general("{\"method\":\"m\",\"arguments\":[1, 2],\"links\":[{\"from\":[0],\"to\":[1]}]}");

    /* Near misses are refused with the general reader's reasons. */
    parse_refused("{\"method\":\"m\",\"arguments\":[1]}x", "malformed JSON");
    parse_refused("{\"method\":\"m\",\"arguments\":[1]]}", "malformed JSON");
    parse_refused("{\"method\":\"m\",\"arguments\":[1],}", "malformed JSON");
    parse_refused("{\"method\":\"m\",\"arguments\":[1,]}", "malformed JSON");
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"1\":[01]}}",
                  "malformed JSON");
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"1\":[2]}}",
                  "invalid path for callback 1");
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"1\":[\"01\"]}}",
                  "invalid path for callback 1");
    parse_refused("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"x\":[0]}}",
                  "invalid callback id");
    parse_refused("{\"method\":\"\",\"arguments\":[1]}", "invalid method name");
    parse_refused("{\"method\":01,\"arguments\":[1]}", "malformed JSON");
    parse_refused("{\"method\":\"m\",\"arguments\":{}}", "arguments must be an array");
    /* The nesting limit counts the envelope, and a callbacks path in it. */
    depth_needed("{\"method\":\"m\",\"arguments\":[[[1]]]}", 4);
    depth_needed("{\"method\":\"m\",\"arguments\":[1],\"callbacks\":{\"3\":[\"0\"]}}", 3);
    {
        /* The callbacks cap holds here too. */
        char err[200] = "";
        const char *line = "{\"method\":\"m\",\"arguments\":[1,2],\"callbacks\":{\"1\":[0],\"2\":[1]}}";

        ck_assert_int_eq(dnode_parse_capped(line, strlen(line), 32, 1, &msg, err, sizeof(err)),
                         -1);
        ck_assert_msg(strstr(err, "too many callbacks") != NULL, "reason '%s'", err);
    }
}
END_TEST

START_TEST(test_msg_clear_twice)
{
    dnode_msg_t m;
    parse_ok("{\"method\":\"m\",\"arguments\":[1]}", &m);
    dnode_msg_clear(&m);
    dnode_msg_clear(&m); /* safe on a cleared message */
    ck_assert_ptr_null(m.args);
}
END_TEST

START_TEST(test_salvage_nul_key)
{
    static const char line[] = "{\"method\":\"read\",\"arguments\":[{\"a\\u0000b\":1,\"type\":\"x\"},"
                               "\"[Function]\"],\"callbacks\":{\"7\":[\"1\"]},\"links\":[]}";
    dnode_msg_t msg;
    char err[128];

    ck_assert_int_eq(dnode_parse(line, sizeof(line) - 1, 32, &msg, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "NUL byte"));
    ck_assert_int_eq(dnode_parse_salvage(line, sizeof(line) - 1, 32, 16, &msg), 0);
    ck_assert_str_eq(msg.method, "read");
    ck_assert_uint_eq(msg.ncallbacks, 1);
    ck_assert_int_eq(json_array_get(msg.args, 1)->type, JSON_CALLBACK);
    ck_assert_ptr_null(json_object_get(json_array_get(msg.args, 0), "a"));
    ck_assert_str_eq(json_get_string(json_array_get(msg.args, 0), "type"), "x");
    dnode_msg_clear(&msg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dnode");
    TCase *build_tc = tcase_create("build");
    TCase *parse_tc = tcase_create("parse");

    tcase_add_test(build_tc, test_build_scrubs_nested_callbacks);
    tcase_add_test(build_tc, test_build_without_callbacks);
    tcase_add_test(build_tc, test_build_callback_call_by_id);
    tcase_add_test(build_tc, test_build_methods);
    tcase_add_test(build_tc, test_build_parse_round_trip);
    tcase_add_test(build_tc, test_build_append_after_header);
    suite_add_tcase(s, build_tc);

    tcase_add_test(parse_tc, test_unscrub_nested_string_paths);
    tcase_add_test(parse_tc, test_unscrub_integer_paths);
    tcase_add_test(parse_tc, test_unscrub_new_member_and_next_slot);
    tcase_add_test(parse_tc, test_callback_ids);
    tcase_add_test(parse_tc, test_callbacks_capped);
    tcase_add_test(parse_tc, test_callbacks_capped_by_caller);
    tcase_add_test(parse_tc, test_bad_callback_paths);
    tcase_add_test(parse_tc, test_links_applied_by_copy);
    tcase_add_test(parse_tc, test_circular_link_refused);
    tcase_add_test(parse_tc, test_link_amplification_refused);
    tcase_add_test(parse_tc, test_bad_links);
    tcase_add_test(parse_tc, test_cull_parsed);
    tcase_add_test(parse_tc, test_method_id_call);
    tcase_add_test(parse_tc, test_arguments_missing_or_null);
    tcase_add_test(parse_tc, test_malformed_json);
    tcase_add_test(parse_tc, test_not_an_object);
    tcase_add_test(parse_tc, test_salvage_nul_key);
    tcase_add_test(parse_tc, test_bad_method_field);
    tcase_add_test(parse_tc, test_msg_clear_twice);
    tcase_add_test(parse_tc, test_common_shape_same_as_general);
    suite_add_tcase(s, parse_tc);

    return check_run(s);
}
