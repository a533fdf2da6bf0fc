/* model: the schemas of the models file and everything derived from them:
 * loading and checking the file, Mongoose-style casting and validation of
 * documents, the allowlist sanitizer for client filters, sorts and
 * projections, and BSON -> JSON for answers. It does no database I/O and
 * keeps no state beyond the loaded (then immutable) model set. */
#include "model.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ================================================================ schema */

typedef enum {
    FT_STRING,
    FT_NUMBER,
    FT_BOOLEAN,
    FT_DATE,
    FT_OBJECTID,
    FT_MIXED,
    FT_ARRAY,  /* elem holds the element spec */
    FT_NESTED, /* kids hold the fields, in file order */
} ftype_t;

typedef struct field field_t;
struct field {
    char *name; /* key in the parent; NULL for an array element spec */
    ftype_t type;
    field_t *elem;                  /* FT_ARRAY */
    field_t *kids;                  /* FT_NESTED */
    size_t nkids;
    int has_id;                     /* FT_NESTED: the root or a subdocument with its own _id */
    int required, unique, index;
    json_t *def;                    /* default as written (castable, checked at load) */
    int def_now;                    /* Date default "now" */
    json_t *enumv;                  /* array of allowed values, already cast */
    int has_min, has_max;           /* Number: min/max; Date: min_ms/max_ms */
    double min, max;
    int64_t min_ms, max_ms;
    int has_minlen, has_maxlen;
    size_t minlen, maxlen;          /* in UTF-16 code units, as JavaScript counts */
    int has_re;
    regex_t re;
};

typedef struct index_spec {
    char *path;
    int unique;
} index_spec_t;

struct model {
    char *name;
    char *collection;
    int versioned;
    field_t root; /* FT_NESTED, has_id */
    index_spec_t *idx;
    size_t nidx;
};

struct model_set {
    model_t **models;
    size_t n;
};

/* Stand-ins the path resolver hands out for paths without their own spec. */
static const field_t id_field = {.type = FT_OBJECTID};
static const field_t mixed_field = {.type = FT_MIXED};

static const model_limits_t default_limits = {
    .max_read_limit = 1000,
    .max_query_depth = 8,
    .max_query_terms = 256,
    .max_regex_length = 256,
};

static const char *const type_names[] = {
    [FT_STRING] = "String",   [FT_NUMBER] = "Number", [FT_BOOLEAN] = "Boolean",
    [FT_DATE] = "Date",       [FT_OBJECTID] = "ObjectId", [FT_MIXED] = "Mixed",
    [FT_ARRAY] = "Array",     [FT_NESTED] = "Object",
};

/* Mongoose's CastError kinds are not consistent in case; these are its own. */
static const char *const cast_kinds[] = {
    [FT_STRING] = "string",   [FT_NUMBER] = "Number", [FT_BOOLEAN] = "Boolean",
    [FT_DATE] = "date",       [FT_OBJECTID] = "ObjectId", [FT_MIXED] = "Mixed",
    [FT_ARRAY] = "Array",     [FT_NESTED] = "Object",
};

static void field_clear(field_t *f)
{
    if (f == NULL)
        return;
    free(f->name);
    if (f->elem != NULL) {
        field_clear(f->elem);
        free(f->elem);
    }
    for (size_t i = 0; i < f->nkids; i++)
        field_clear(&f->kids[i]);
    free(f->kids);
    json_free(f->def);
    json_free(f->enumv);
    if (f->has_re)
        regfree(&f->re);
    memset(f, 0, sizeof *f);
}

static void model_free(model_t *m)
{
    if (m == NULL)
        return;
    free(m->name);
    free(m->collection);
    field_clear(&m->root);
    for (size_t i = 0; i < m->nidx; i++)
        free(m->idx[i].path);
    free(m->idx);
    free(m);
}

void model_set_free(model_set_t *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->n; i++)
        model_free(set->models[i]);
    free(set->models);
    free(set);
}

const model_t *model_set_find(const model_set_t *set, const char *type)
{
    if (set == NULL || type == NULL)
        return NULL;
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->models[i]->name, type) == 0)
            return set->models[i];
    return NULL;
}

size_t model_set_count(const model_set_t *set) { return set ? set->n : 0; }

const model_t *model_set_at(const model_set_t *set, size_t i)
{
    return set && i < set->n ? set->models[i] : NULL;
}

const char *model_name(const model_t *m) { return m->name; }
const char *model_collection(const model_t *m) { return m->collection; }
int model_versioned(const model_t *m) { return m->versioned; }
size_t model_index_count(const model_t *m) { return m->nidx; }

int model_index_at(const model_t *m, size_t i, const char **path, int *unique)
{
    if (i >= m->nidx)
        return -1;
    *path = m->idx[i].path;
    *unique = m->idx[i].unique;
    return 0;
}

/* ================================================================ errors */

json_t *model_error_new(const char *name, const char *message, json_t *errors)
{
    json_t *e = json_object();
    if (e == NULL || json_object_set(e, "name", json_string(name)) < 0 ||
        json_object_set(e, "message", json_string(message)) < 0)
        goto fail;
    if (errors != NULL) {
        json_t *tmp = errors;
        errors = NULL;
        if (json_object_set(e, "errors", tmp) < 0)
            goto fail;
    }
    return e;
fail:
    json_free(errors);
    json_free(e);
    return NULL;
}

static json_t *error_fmt(const char *name, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static json_t *error_fmt(const char *name, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return model_error_new(name, msg, NULL);
}

static json_t *error_nomem(void) { return model_error_new("Unavailable", "out of memory", NULL); }

/* A short, printable rendering of a client value for messages: strings as
 * they are, anything else as JSON; cut at about 100 bytes on a UTF-8
 * boundary so an error never echoes a whole megabyte back. */
static void value_text(const json_t *v, char *buf, size_t n)
{
    const char *s = NULL;
    char *dump = NULL;
    size_t len;

    if (v != NULL && v->type == JSON_STRING) {
        s = v->u.str.s;
        len = v->u.str.len;
    } else {
        dump = v != NULL ? json_dump(v, &len) : NULL;
        s = dump != NULL ? dump : "?";
        len = dump != NULL ? len : 1;
    }
    size_t max = n > 4 ? n - 4 : 0;
    if (max > 100)
        max = 100;
    if (len > max) {
        len = max;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--;
        snprintf(buf, n, "%.*s...", (int)len, s);
    } else {
        snprintf(buf, n, "%.*s", (int)len, s);
    }
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    free(dump);
}

/* ================================================================ small helpers */

typedef struct strbuf {
    char *s;
    size_t len, cap;
    int oom;
} strbuf_t;

static void sb_setlen(strbuf_t *b, size_t len)
{
    b->len = len;
    if (b->s != NULL)
        b->s[len] = '\0';
}

static void sb_append(strbuf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

/* Append ".seg" (or "seg" at the start); returns the length to pop back to. */
static size_t path_push(strbuf_t *b, const char *seg)
{
    size_t old = b->len;
    if (b->len > 0)
        sb_append(b, ".", 1);
    sb_append(b, seg, strlen(seg));
    return old;
}

static size_t path_push_index(strbuf_t *b, size_t i)
{
    char num[24];
    snprintf(num, sizeof num, "%zu", i);
    return path_push(b, num);
}

static const char *sb_str(const strbuf_t *b) { return b->s != NULL && !b->oom ? b->s : ""; }

/* Length as JavaScript's String.prototype.length counts it (UTF-16 units). */
static size_t utf16_length(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xC0) != 0x80)
            n += c >= 0xF0 ? 2 : 1;
    }
    return n;
}

static int is_js_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* JavaScript's Number(string): surrounding white space ignored, "" -> 0,
 * decimal with exponent, 0x/0o/0b integers, Infinity. Returns 0 with *out,
 * or -1 where JavaScript gives NaN. */
static int js_string_to_number(const char *s, size_t len, double *out)
{
    if (memchr(s, '\0', len) != NULL)
        return -1;
    while (len > 0 && is_js_space(*s)) {
        s++;
        len--;
    }
    while (len > 0 && is_js_space(s[len - 1]))
        len--;
    if (len == 0) {
        *out = 0;
        return 0;
    }
    char buf[512];
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';

    if (len > 2 && buf[0] == '0' && strchr("xXoObB", buf[1]) != NULL) {
        int base = (buf[1] == 'x' || buf[1] == 'X') ? 16 : (buf[1] == 'o' || buf[1] == 'O') ? 8 : 2;
        double v = 0;
        for (size_t i = 2; i < len; i++) {
            int d;
            char c = buf[i];
            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (c >= 'a' && c <= 'f')
                d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                d = c - 'A' + 10;
            else
                return -1;
            if (d >= base)
                return -1;
            v = v * base + d;
        }
        *out = v;
        return 0;
    }
    const char *p = buf;
    int neg = 0;
    if (*p == '+' || *p == '-') {
        neg = *p == '-';
        p++;
    }
    if (strcmp(p, "Infinity") == 0) {
        *out = neg ? -INFINITY : INFINITY;
        return 0;
    }
    /* [digits][.digits][(e|E)[+-]digits], with at least one mantissa digit */
    const char *q = p;
    size_t mant = 0;
    while (*q >= '0' && *q <= '9') {
        q++;
        mant++;
    }
    if (*q == '.') {
        q++;
        while (*q >= '0' && *q <= '9') {
            q++;
            mant++;
        }
    }
    if (mant == 0)
        return -1;
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-')
            q++;
        if (!(*q >= '0' && *q <= '9'))
            return -1;
        while (*q >= '0' && *q <= '9')
            q++;
    }
    if (*q != '\0')
        return -1;
    *out = strtod(buf, NULL); /* overflow gives +-HUGE_VAL = Infinity, as in JS */
    return 0;
}

/* JavaScript's Number.prototype.toString() for finite d: the shortest digits
 * that read back as d, in fixed notation for 1e-7 < |d| < 1e21. */
static void js_number_format(double d, char *out, size_t n)
{
    if (isnan(d)) {
        snprintf(out, n, "NaN");
        return;
    }
    if (isinf(d)) {
        snprintf(out, n, d < 0 ? "-Infinity" : "Infinity");
        return;
    }
    if (d == 0) {
        snprintf(out, n, "0");
        return;
    }
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    const char *p = tmp;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    char digits[24];
    int k = 0;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && k < (int)sizeof digits - 1)
            digits[k++] = *p;
    while (k > 1 && digits[k - 1] == '0')
        k--;
    digits[k] = '\0';
    int e = *p == 'e' ? atoi(p + 1) : 0;
    int nn = e + 1; /* position of the decimal point */
    char buf[64];
    size_t o = 0;
#define PUT(c) (o < sizeof buf - 1 ? (void)(buf[o++] = (c)) : (void)0)
    if (neg)
        PUT('-');
    if (k <= nn && nn <= 21) {
        for (int i = 0; i < k; i++)
            PUT(digits[i]);
        for (int i = k; i < nn; i++)
            PUT('0');
    } else if (0 < nn && nn <= 21) {
        for (int i = 0; i < k; i++) {
            if (i == nn)
                PUT('.');
            PUT(digits[i]);
        }
    } else if (-6 < nn && nn <= 0) {
        PUT('0');
        PUT('.');
        for (int i = 0; i < -nn; i++)
            PUT('0');
        for (int i = 0; i < k; i++)
            PUT(digits[i]);
    } else {
        PUT(digits[0]);
        if (k > 1) {
            PUT('.');
            for (int i = 1; i < k; i++)
                PUT(digits[i]);
        }
        char ex[16];
        snprintf(ex, sizeof ex, "e%c%d", nn - 1 < 0 ? '-' : '+', abs(nn - 1));
        for (char *x = ex; *x; x++)
            PUT(*x);
    }
#undef PUT
    buf[o] = '\0';
    snprintf(out, n, "%s", buf);
}

static double json_num(const json_t *v)
{
    return v->u.num.is_int ? (double)v->u.num.i : v->u.num.d;
}

/* An integral JSON number in [lo, hi]; 0 or -1. */
static int json_integer(const json_t *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (v == NULL || v->type != JSON_NUMBER)
        return -1;
    if (v->u.num.is_int) {
        if (v->u.num.i < lo || v->u.num.i > hi)
            return -1;
        *out = v->u.num.i;
        return 0;
    }
    double d = v->u.num.d;
    /* 2^63 and above do not convert; (double)INT64_MAX rounds up to 2^63 */
    if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi || d >= 0x1p63)
        return -1;
    *out = (int64_t)d;
    return 0;
}

/* ================================================================ dates */

/* Days since 1970-01-01 of a proleptic Gregorian date (civil calendar,
 * computed through 400-year eras). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

#define DATE_MAX_MS 8640000000000000LL /* JavaScript's Date range */

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int64_t y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

static int digits_at(const char *s, size_t len, size_t *i, int n, int *out)
{
    int v = 0;
    for (int k = 0; k < n; k++) {
        if (*i >= len || s[*i] < '0' || s[*i] > '9')
            return -1;
        v = v * 10 + (s[(*i)++] - '0');
    }
    *out = v;
    return 0;
}

/* ISO-8601 as JavaScript's Date reads it: YYYY[-MM[-DD]] or +-YYYYYY...,
 * optionally followed by (T| )HH:mm[:ss[.sss]] and Z or +-HH[:]mm. A
 * date-time without an offset is taken as UTC (JavaScript would use the
 * server's local zone; a server must not depend on that). */
static int parse_iso_date(const char *s, size_t len, int64_t *ms)
{
    size_t i = 0;
    int64_t year;
    int v, mon = 1, day = 1, hh = 0, mm = 0, ss = 0, frac = 0;

    if (len > 0 && (s[0] == '+' || s[0] == '-')) {
        int neg = s[0] == '-';
        i = 1;
        int hi, lo;
        if (digits_at(s, len, &i, 2, &hi) < 0 || digits_at(s, len, &i, 4, &lo) < 0)
            return -1;
        year = (int64_t)hi * 10000 + lo;
        if (neg && year == 0)
            return -1;
        year = neg ? -year : year;
    } else {
        if (digits_at(s, len, &i, 4, &v) < 0)
            return -1;
        year = v;
    }
    if (i < len && s[i] == '-') {
        i++;
        if (digits_at(s, len, &i, 2, &mon) < 0 || mon < 1 || mon > 12)
            return -1;
        if (i < len && s[i] == '-') {
            i++;
            if (digits_at(s, len, &i, 2, &day) < 0 || day < 1 ||
                day > days_in_month(year, mon))
                return -1;
        }
    }
    int64_t offset_min = 0;
    if (i < len && (s[i] == 'T' || s[i] == 't' || s[i] == ' ')) {
        i++;
        if (digits_at(s, len, &i, 2, &hh) < 0 || i >= len || s[i++] != ':' ||
            digits_at(s, len, &i, 2, &mm) < 0)
            return -1;
        if (i < len && s[i] == ':') {
            i++;
            if (digits_at(s, len, &i, 2, &ss) < 0)
                return -1;
            if (i < len && s[i] == '.') {
                i++;
                int nd = 0;
                while (i < len && s[i] >= '0' && s[i] <= '9') {
                    if (nd < 3)
                        frac = frac * 10 + (s[i] - '0');
                    nd++;
                    i++;
                }
                if (nd == 0)
                    return -1;
                for (; nd < 3; nd++)
                    frac *= 10;
            }
        }
        if (hh > 24 || mm > 59 || ss > 59 || (hh == 24 && (mm || ss || frac)))
            return -1;
        if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
            i++;
        } else if (i < len && (s[i] == '+' || s[i] == '-')) {
            int sign = s[i++] == '-' ? -1 : 1, oh, om;
            if (digits_at(s, len, &i, 2, &oh) < 0)
                return -1;
            if (i < len && s[i] == ':')
                i++;
            if (digits_at(s, len, &i, 2, &om) < 0 || oh > 23 || om > 59)
                return -1;
            offset_min = sign * (oh * 60 + om);
        }
    }
    if (i != len)
        return -1;
    int64_t t = days_from_civil(year, mon, day) * 86400000LL + hh * 3600000LL + mm * 60000LL +
                ss * 1000LL + frac - offset_min * 60000LL;
    if (t > DATE_MAX_MS || t < -DATE_MAX_MS)
        return -1;
    *ms = t;
    return 0;
}

/* Date.prototype.toISOString: YYYY-MM-DDTHH:mm:ss.sssZ, +-YYYYYY outside
 * years 0..9999. */
static void format_iso_date(int64_t ms, char *out, size_t n)
{
    int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
    int64_t rem = ms - days * 86400000;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    int hh = (int)(rem / 3600000), mi = (int)(rem / 60000 % 60), ss = (int)(rem / 1000 % 60);
    int frac = (int)(rem % 1000);
    if (y >= 0 && y <= 9999)
        snprintf(out, n, "%04" PRId64 "-%02d-%02dT%02d:%02d:%02d.%03dZ", y, m, d, hh, mi, ss, frac);
    else
        snprintf(out, n, "%c%06" PRId64 "-%02d-%02dT%02d:%02d:%02d.%03dZ", y < 0 ? '-' : '+',
                 y < 0 ? -y : y, m, d, hh, mi, ss, frac);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
        return (int64_t)time(NULL) * 1000;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ================================================================ casting */

typedef enum { CV_NULL, CV_STRING, CV_NUMBER, CV_BOOL, CV_DATE, CV_OID } cv_kind_t;

/* One cast scalar. s points into the input or into buf. */
typedef struct cval {
    cv_kind_t kind;
    const char *s;
    size_t slen;
    char buf[40];
    double d;
    int b;
    int64_t ms;
    bson_oid_t oid;
} cval_t;

static int cast_number(const json_t *v, cval_t *out)
{
    double d;
    switch (v->type) {
    case JSON_NULL:
        out->kind = CV_NULL;
        return 0;
    case JSON_NUMBER:
        d = json_num(v);
        break;
    case JSON_BOOL:
        d = v->u.boolean ? 1 : 0;
        break;
    case JSON_STRING:
        if (v->u.str.len == 0) { /* Mongoose casts "" to null */
            out->kind = CV_NULL;
            return 0;
        }
        if (js_string_to_number(v->u.str.s, v->u.str.len, &d) < 0)
            return -1;
        break;
    default:
        return -1;
    }
    /* Infinity would be stored but could never be sent back as JSON. */
    if (!isfinite(d))
        return -1;
    out->kind = CV_NUMBER;
    out->d = d == 0 ? 0 : d; /* no -0 */
    return 0;
}

static int cast_boolean(const json_t *v, cval_t *out)
{
    out->kind = CV_BOOL;
    switch (v->type) {
    case JSON_NULL:
        out->kind = CV_NULL;
        return 0;
    case JSON_BOOL:
        out->b = v->u.boolean != 0;
        return 0;
    case JSON_NUMBER: {
        double d = json_num(v);
        if (d != 1 && d != 0)
            return -1;
        out->b = d == 1;
        return 0;
    }
    case JSON_STRING: {
        static const char *const yes[] = {"true", "1", "yes"}, *const no[] = {"false", "0", "no"};
        for (size_t i = 0; i < 3; i++) {
            if (strlen(yes[i]) == v->u.str.len && memcmp(v->u.str.s, yes[i], v->u.str.len) == 0) {
                out->b = 1;
                return 0;
            }
            if (strlen(no[i]) == v->u.str.len && memcmp(v->u.str.s, no[i], v->u.str.len) == 0) {
                out->b = 0;
                return 0;
            }
        }
        return -1;
    }
    default:
        return -1;
    }
}

static int cast_string(const json_t *v, cval_t *out)
{
    out->kind = CV_STRING;
    switch (v->type) {
    case JSON_NULL:
        out->kind = CV_NULL;
        return 0;
    case JSON_STRING:
        out->s = v->u.str.s;
        out->slen = v->u.str.len;
        return 0;
    case JSON_NUMBER:
        if (v->u.num.is_int && llabs(v->u.num.i) <= (1LL << 53))
            snprintf(out->buf, sizeof out->buf, "%" PRId64, v->u.num.i);
        else
            js_number_format(json_num(v), out->buf, sizeof out->buf);
        out->s = out->buf;
        out->slen = strlen(out->buf);
        return 0;
    case JSON_BOOL:
        out->s = v->u.boolean ? "true" : "false";
        out->slen = strlen(out->s);
        return 0;
    case JSON_OBJECT: { /* a populated document stands for its string _id */
        const json_t *id = json_object_get(v, "_id");
        if (id != NULL && id->type == JSON_STRING)
            return cast_string(id, out);
        return -1;
    }
    default:
        return -1;
    }
}

/* Mongoose's date cast: numbers are epoch milliseconds; a numeric string is
 * milliseconds only when it cannot be a year (>= 275761 or < -271820), so
 * "2020" is the year 2020; other strings are ISO-8601. */
static int cast_date(const json_t *v, cval_t *out)
{
    double d;
    out->kind = CV_DATE;
    switch (v->type) {
    case JSON_NULL:
        out->kind = CV_NULL;
        return 0;
    case JSON_NUMBER:
        d = json_num(v);
        break;
    case JSON_STRING:
        if (v->u.str.len == 0) {
            out->kind = CV_NULL;
            return 0;
        }
        if (js_string_to_number(v->u.str.s, v->u.str.len, &d) == 0 &&
            (d >= 275761 || d < -271820))
            break;
        return parse_iso_date(v->u.str.s, v->u.str.len, &out->ms);
    default:
        return -1;
    }
    if (!isfinite(d) || fabs(d) > (double)DATE_MAX_MS)
        return -1;
    out->ms = (int64_t)trunc(d);
    return 0;
}

static int cast_objectid(const json_t *v, cval_t *out)
{
    out->kind = CV_OID;
    switch (v->type) {
    case JSON_NULL:
        out->kind = CV_NULL;
        return 0;
    case JSON_STRING:
        if (v->u.str.len != 24 || !bson_oid_is_valid(v->u.str.s, 24))
            return -1;
        bson_oid_init_from_string(&out->oid, v->u.str.s);
        return 0;
    case JSON_OBJECT: { /* {"$oid": hex} (extended JSON) or a populated document */
        const json_t *id = json_object_get(v, "$oid");
        if (id == NULL)
            id = json_object_get(v, "_id");
        if (id == NULL || id->type == JSON_OBJECT)
            return -1;
        return cast_objectid(id, out);
    }
    default: /* numbers: bson would take them as a timestamp; refuse */
        return -1;
    }
}

static int cast_scalar(ftype_t t, const json_t *v, cval_t *out)
{
    memset(out, 0, sizeof *out);
    switch (t) {
    case FT_STRING:
        return cast_string(v, out);
    case FT_NUMBER:
        return cast_number(v, out);
    case FT_BOOLEAN:
        return cast_boolean(v, out);
    case FT_DATE:
        return cast_date(v, out);
    case FT_OBJECTID:
        return cast_objectid(v, out);
    default:
        return -1;
    }
}

/* Numbers as the Node.js driver stores them: integral values that fit int32
 * as int32, everything else as double. */
static bool append_number(bson_t *b, const char *key, double d)
{
    if (d == floor(d) && d >= INT32_MIN && d <= INT32_MAX)
        return bson_append_int32(b, key, -1, (int32_t)d);
    return bson_append_double(b, key, -1, d);
}

static bool append_cval(bson_t *b, const char *key, const cval_t *c)
{
    switch (c->kind) {
    case CV_NULL:
        return bson_append_null(b, key, -1);
    case CV_STRING:
        return c->slen <= INT_MAX && bson_append_utf8(b, key, -1, c->s, (int)c->slen);
    case CV_NUMBER:
        return append_number(b, key, c->d);
    case CV_BOOL:
        return bson_append_bool(b, key, -1, c->b);
    case CV_DATE:
        return bson_append_date_time(b, key, -1, c->ms);
    case CV_OID:
        return bson_append_oid(b, key, -1, &c->oid);
    }
    return false;
}

/* A field name a client may put into a Mixed value or literal. */
static int safe_key(const char *k) { return k[0] != '$' && strchr(k, '.') == NULL; }

/* Copy client JSON into BSON as is (Mixed paths). Callbacks are dropped as
 * JSON.stringify drops functions. Returns 0; -1 with *badkey pointing at a
 * refused field name ('$' prefix or '.'), or with *badkey NULL when the
 * document grew too large. */
static int append_json(bson_t *b, const char *key, const json_t *v, const char **badkey)
{
    char idx[16];
    const char *ik;
    *badkey = NULL;
    switch (v->type) {
    case JSON_NULL:
    case JSON_CALLBACK:
        return bson_append_null(b, key, -1) ? 0 : -1;
    case JSON_BOOL:
        return bson_append_bool(b, key, -1, v->u.boolean) ? 0 : -1;
    case JSON_NUMBER:
        if (!isfinite(json_num(v)))
            return bson_append_null(b, key, -1) ? 0 : -1;
        return append_number(b, key, json_num(v)) ? 0 : -1;
    case JSON_STRING:
        if (v->u.str.len > INT_MAX)
            return -1;
        return bson_append_utf8(b, key, -1, v->u.str.s, (int)v->u.str.len) ? 0 : -1;
    case JSON_ARRAY: {
        bson_t child;
        int rc = 0;
        if (!bson_append_array_begin(b, key, -1, &child))
            return -1;
        for (size_t i = 0; i < v->u.arr.len && rc == 0; i++) {
            bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
            rc = append_json(&child, ik, v->u.arr.items[i], badkey);
        }
        if (!bson_append_array_end(b, &child))
            rc = -1;
        return rc;
    }
    case JSON_OBJECT: {
        bson_t child;
        int rc = 0;
        if (!bson_append_document_begin(b, key, -1, &child))
            return -1;
        for (size_t i = 0; i < v->u.obj.len && rc == 0; i++) {
            if (v->u.obj.vals[i]->type == JSON_CALLBACK)
                continue;
            if (!safe_key(v->u.obj.keys[i])) {
                *badkey = v->u.obj.keys[i];
                rc = -1;
                break;
            }
            rc = append_json(&child, v->u.obj.keys[i], v->u.obj.vals[i], badkey);
        }
        if (!bson_append_document_end(b, &child))
            rc = -1;
        return rc;
    }
    }
    return -1;
}

/* ================================================================ loading */

typedef struct loader {
    const char *model;
    strbuf_t path; /* the field being read, for messages */
    char *err;
    size_t errlen;
} loader_t;

static int load_fail(loader_t *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes one line naming the model and field into L->err; returns -1. */
static int load_fail(loader_t *L, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (L->err == NULL || L->errlen == 0)
        return -1;
    if (L->model != NULL && L->path.len > 0)
        snprintf(L->err, L->errlen, "model \"%.100s\", field \"%.200s\": %s", L->model,
                 sb_str(&L->path), msg);
    else if (L->model != NULL)
        snprintf(L->err, L->errlen, "model \"%.100s\": %s", L->model, msg);
    else
        snprintf(L->err, L->errlen, "%s", msg);
    return -1;
}

/* Mongoose upper-cases the first letter of a type name, so "string" works. */
static int parse_type_name(const char *s, ftype_t *t)
{
    static const ftype_t scalars[] = {FT_STRING, FT_NUMBER,   FT_BOOLEAN,
                                      FT_DATE,   FT_OBJECTID, FT_MIXED};
    for (size_t i = 0; i < sizeof scalars / sizeof scalars[0]; i++) {
        const char *name = type_names[scalars[i]];
        if (strcmp(s, name) == 0 ||
            (s[0] == name[0] + ('a' - 'A') && strcmp(s + 1, name + 1) == 0)) {
            *t = scalars[i];
            return 0;
        }
    }
    return -1;
}

static int check_field_name(loader_t *L, const char *name, int has_id, int root)
{
    if (name[0] == '\0')
        return load_fail(L, "empty field name");
    if (!safe_key(name))
        return load_fail(L, "field names may not start with '$' or contain '.'");
    if (has_id && strcmp(name, "_id") == 0)
        return load_fail(L, "_id is reserved (every document gets an ObjectId _id)");
    if (root && strcmp(name, "__v") == 0)
        return load_fail(L, "__v is reserved for the version key");
    return 0;
}

static int parse_spec(loader_t *L, const json_t *v, field_t *f);

static int parse_nested(loader_t *L, const json_t *obj, field_t *f, int root)
{
    f->type = FT_NESTED;
    if (obj->u.obj.len == 0)
        return 0;
    f->kids = calloc(obj->u.obj.len, sizeof *f->kids);
    if (f->kids == NULL)
        return load_fail(L, "out of memory");
    for (size_t i = 0; i < obj->u.obj.len; i++) {
        const char *key = obj->u.obj.keys[i];
        size_t old = path_push(&L->path, key);
        field_t *kid = &f->kids[f->nkids++];
        if (check_field_name(L, key, f->has_id, root) < 0)
            return -1;
        kid->name = strdup(key);
        if (kid->name == NULL)
            return load_fail(L, "out of memory");
        if (parse_spec(L, obj->u.obj.vals[i], kid) < 0)
            return -1;
        sb_setlen(&L->path, old);
    }
    return 0;
}

/* [] is an array of Mixed, [spec] an array of spec; an element that is a
 * nested object makes a document array whose elements get their own _id. */
static int parse_array(loader_t *L, const json_t *arr, field_t *f)
{
    f->type = FT_ARRAY;
    f->elem = calloc(1, sizeof *f->elem);
    if (f->elem == NULL)
        return load_fail(L, "out of memory");
    if (arr->u.arr.len == 0) {
        f->elem->type = FT_MIXED;
        return 0;
    }
    if (arr->u.arr.len > 1)
        return load_fail(L, "an array type lists exactly one element type");
    const json_t *e = arr->u.arr.items[0];
    int nested = 0;
    if (e->type == JSON_OBJECT) {
        const json_t *t = json_object_get(e, "type");
        nested = e->u.obj.len > 0 && (t == NULL || t->type == JSON_OBJECT);
    }
    if (nested) {
        f->elem->has_id = 1;
        return parse_nested(L, e, f->elem, 0);
    }
    return parse_spec(L, e, f->elem);
}

/* A value a default (or an enum entry) must cast to; 0 or -1. */
static int castable(const field_t *f, const json_t *v)
{
    cval_t c;
    const char *bad;
    switch (f->type) {
    case FT_MIXED: {
        bson_t scratch = BSON_INITIALIZER;
        int rc = append_json(&scratch, "v", v, &bad);
        bson_destroy(&scratch);
        return rc;
    }
    case FT_ARRAY:
        if (v->type == JSON_NULL)
            return 0;
        if (v->type != JSON_ARRAY)
            return castable(f->elem, v);
        for (size_t i = 0; i < v->u.arr.len; i++)
            if (castable(f->elem, v->u.arr.items[i]) < 0)
                return -1;
        return 0;
    case FT_NESTED:
        if (v->type == JSON_NULL)
            return 0;
        if (v->type != JSON_OBJECT)
            return -1;
        for (size_t i = 0; i < f->nkids; i++) {
            const json_t *kv = json_object_get(v, f->kids[i].name);
            if (kv != NULL && castable(&f->kids[i], kv) < 0)
                return -1;
        }
        return 0;
    default:
        return cast_scalar(f->type, v, &c);
    }
}

/* glibc's regcomp copies a repeated sub-expression once per repetition it
 * may need ("a+" becomes "aa*", "a{2,5}" five copies) and copies copies for
 * nested repetitions, and the time it then spends grows faster than the
 * copies when they can match empty: "((((a*)+)+)...)+" with eleven groups
 * takes seconds, "((a{99}){99}){99}" gigabytes (both found by fuzzing the
 * loader). Estimate the copies on the POSIX pattern; past
 * REGEX_MAX_COPIES, or past REGEX_MAX_NESTING groups, it is refused. A
 * bound like {1,1000} is the most a single repetition may ask for; longer
 * strings are what maxlength is for. */
#define REGEX_MAX_COPIES 1000.0
#define REGEX_MAX_NESTING 32

/* Skip a bracket expression starting at p ('['); returns the character
 * after its ']', or the terminating NUL when there is none. */
static const char *regex_skip_bracket(const char *p)
{
    p++;
    if (*p == '^')
        p++;
    if (*p == ']')
        p++;
    while (*p != '\0' && *p != ']') {
        if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
            const char *end = strchr(p + 2, p[1]);
            while (end != NULL && end[1] != ']')
                end = strchr(end + 1, p[1]);
            if (end == NULL)
                return p + strlen(p);
            p = end + 2;
        } else {
            p++;
        }
    }
    return *p == ']' ? p + 1 : p;
}

static const char *regex_number(const char *q, double *n)
{
    for (*n = 0; *q >= '0' && *q <= '9'; q++)
        *n = *n > 1e6 ? *n : *n * 10 + (*q - '0');
    return q;
}

/* Reads a "{n}", "{n,}", "{,m}" (glibc's) or "{n,m}" bound at p; returns how many copies it
 * asks for and sets *end past it, or returns 0 when p is no bound. */
static double regex_bound(const char *p, const char **end)
{
    double n, m = -1;
    const char *q = p + 1;

    if ((*q < '0' || *q > '9') && *q != ',') /* glibc reads "{,m}" as "{0,m}" */
        return 0;
    q = regex_number(q, &n);
    if (*q == ',') {
        q++;
        if (*q >= '0' && *q <= '9')
            q = regex_number(q, &m);
        else
            m = n + 1; /* {n,}: n copies and a starred one */
    }
    if (*q != '}')
        return 0;
    *end = q + 1;
    if (m < n)
        m = n;
    return m < 1 ? 1 : m;
}

static int regex_too_big(const char *p)
{
    double sum[REGEX_MAX_NESTING + 1], last[REGEX_MAX_NESTING + 1];
    size_t depth = 0;

    sum[0] = last[0] = 0;
    while (*p != '\0') {
        double atom = 1, copies;
        const char *end;

        switch (*p) {
        case '(':
            if (++depth > REGEX_MAX_NESTING)
                return 1;
            sum[depth] = last[depth] = 0;
            p++;
            continue;
        case ')':
            p++;
            if (depth > 0) {
                atom = sum[depth] > 1 ? sum[depth] : 1;
                depth--;
            }
            break;
        case '|':
            p++;
            last[depth] = 0;
            continue;
        case '*':
        case '+':
        case '?':
        case '{':
            copies = *p == '+' ? 2 : 1;
            end = p + 1;
            if (*p == '{' && (copies = regex_bound(p, &end)) == 0) {
                p++; /* a literal brace */
                break;
            }
            p = end;
            sum[depth] += last[depth] * (copies - 1);
            last[depth] *= copies;
            if (sum[depth] > REGEX_MAX_COPIES)
                return 1;
            continue;
        case '[':
            p = regex_skip_bracket(p);
            break;
        case '\\':
            p += p[1] != '\0' ? 2 : 1;
            break;
        default:
            p++;
            break;
        }
        sum[depth] += atom;
        last[depth] = atom;
        if (sum[depth] > REGEX_MAX_COPIES)
            return 1;
    }
    return 0;
}

/* JavaScript regular expressions as written in Mongoose schemas, rewritten
 * into POSIX extended syntax (glibc regcomp with REG_EXTENDED; glibc also
 * knows \w \W \s \S \b \B). \d and \D become [0-9] and [^0-9]; inside
 * brackets \d \s \w become 0-9 [:space:] [:alnum:]_. Escapes POSIX cannot say
 * the same way (\] \- \^ \D \S \W inside brackets, \uXXXX, ...) are refused
 * rather than silently changing meaning; lookarounds fail in regcomp. */
static int translate_regex(const char *src, strbuf_t *out, char *why, size_t whylen)
{
    int in_bracket = 0, quant = 0; /* quant: 1 after a quantifier, 2 after its lazy '?' */
    for (const char *p = src; *p; p++) {
        char c = *p;
        const char *end = p + 1;
        if (!in_bracket && (c == '*' || c == '+' || c == '?' ||
                            (c == '{' && p[1] >= '0' && p[1] <= '9' && regex_bound(p, &end) > 0))) {
            /* JavaScript refuses a quantifier on a quantifier ("nothing to
             * repeat"), except '?' making it lazy, which changes which match
             * is found but not whether there is one: it is dropped (POSIX
             * would read "a+?" as "(a+)?"). */
            if (quant == 1 && c == '?') {
                quant = 2;
                continue;
            }
            if (quant != 0) {
                snprintf(why, whylen, "nothing to repeat before '%c'", c);
                return -1;
            }
            sb_append(out, p, (size_t)(end - p));
            p = end - 1;
            quant = 1;
            continue;
        }
        quant = 0;
        if (!in_bracket && c == '{') {
            sb_append(out, "\\{", 2); /* no bound: a literal brace, as in JavaScript */
            continue;
        }
        if (c != '\\') {
            if (!in_bracket && c == '[') {
                in_bracket = 1;
                sb_append(out, p, 1);
                if (p[1] == '^')
                    sb_append(out, ++p, 1);
                if (p[1] == ']') {
                    snprintf(why, whylen, "empty bracket expression");
                    return -1;
                }
            } else {
                if (in_bracket && c == ']')
                    in_bracket = 0;
                sb_append(out, p, 1);
            }
            continue;
        }
        char e = *++p;
        if (e == '\0') {
            snprintf(why, whylen, "trailing backslash");
            return -1;
        }
        const char *rep = NULL;
        char lit[3] = {'\\', e, '\0'};
        if (e == 'n' || e == 't' || e == 'r' || e == 'f' || e == 'v') {
            lit[0] = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'f' ? '\f' : '\v';
            lit[1] = '\0';
            rep = lit;
        } else if (in_bracket) {
            if (e == 'd')
                rep = "0-9";
            else if (e == 's')
                rep = "[:space:]";
            else if (e == 'w')
                rep = "[:alnum:]_";
            else if (e == '\\')
                rep = "\\";
            else if (strchr(".*+?(){}|/$[", e) != NULL) {
                lit[0] = e;
                lit[1] = '\0';
                rep = lit;
            }
        } else if (e == 'd') {
            rep = "[0-9]";
        } else if (e == 'D') {
            rep = "[^0-9]";
        } else if (strchr("wWsSbB", e) != NULL || (e >= '1' && e <= '9') ||
                   strchr(".*+?(){}|/$^[]\\-", e) != NULL) {
            rep = lit;
        }
        if (rep == NULL) {
            snprintf(why, whylen, "unsupported escape \\%c%s", e, in_bracket ? " inside [...]" : "");
            return -1;
        }
        sb_append(out, rep, strlen(rep));
    }
    if (out->oom) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    return 0;
}

static int parse_match(loader_t *L, const json_t *v, field_t *f)
{
    const json_t *pat = v, *flags = NULL;
    int cflags = REG_EXTENDED | REG_NOSUB;
    if (v->type == JSON_ARRAY && (v->u.arr.len == 1 || v->u.arr.len == 2)) {
        pat = v->u.arr.items[0];
        flags = v->u.arr.len == 2 ? v->u.arr.items[1] : NULL;
    }
    if (pat->type != JSON_STRING || strlen(pat->u.str.s) != pat->u.str.len)
        return load_fail(L, "match must be a pattern string or [pattern, flags]");
    if (flags != NULL) {
        if (flags->type != JSON_STRING)
            return load_fail(L, "match flags must be a string");
        for (const char *p = flags->u.str.s; *p; p++) {
            if (*p != 'i')
                return load_fail(L, "match flag '%c' is not supported (only \"i\")", *p);
            cflags |= REG_ICASE;
        }
    }
    strbuf_t re = {0};
    char why[128];
    if (translate_regex(pat->u.str.s, &re, why, sizeof why) < 0) {
        free(re.s);
        return load_fail(L, "bad regular expression in match: %s", why);
    }
    if (re.s != NULL && regex_too_big(re.s)) {
        free(re.s);
        return load_fail(L, "bad regular expression in match: too many repetitions");
    }
    int rc = regcomp(&f->re, re.s != NULL ? re.s : "", cflags);
    free(re.s);
    if (rc != 0) {
        regerror(rc, &f->re, why, sizeof why);
        return load_fail(L, "bad regular expression in match: %s", why);
    }
    f->has_re = 1;
    return 0;
}

static int parse_bool_opt(loader_t *L, const char *opt, const json_t *v, int *out)
{
    if (v->type != JSON_BOOL)
        return load_fail(L, "%s must be true or false", opt);
    *out = v->u.boolean;
    return 0;
}

static int parse_length_opt(loader_t *L, const char *opt, const json_t *v, size_t *out)
{
    int64_t n;
    if (json_integer(v, 0, INT32_MAX, &n) < 0)
        return load_fail(L, "%s must be a non-negative integer", opt);
    *out = (size_t)n;
    return 0;
}

static int parse_bound(loader_t *L, const char *opt, const json_t *v, field_t *f, int is_max)
{
    if (f->type == FT_NUMBER) {
        if (v->type != JSON_NUMBER)
            return load_fail(L, "%s must be a number", opt);
        *(is_max ? &f->max : &f->min) = json_num(v);
    } else {
        cval_t c;
        if (cast_date(v, &c) < 0 || c.kind != CV_DATE)
            return load_fail(L, "%s must be a date (ISO-8601 string or epoch milliseconds)", opt);
        *(is_max ? &f->max_ms : &f->min_ms) = c.ms;
    }
    *(is_max ? &f->has_max : &f->has_min) = 1;
    return 0;
}

static int parse_enum(loader_t *L, const json_t *v, field_t *f)
{
    if (v->type != JSON_ARRAY || v->u.arr.len == 0)
        return load_fail(L, "enum must be a non-empty array");
    f->enumv = json_array();
    if (f->enumv == NULL)
        return load_fail(L, "out of memory");
    for (size_t i = 0; i < v->u.arr.len; i++) {
        cval_t c;
        char txt[128];
        json_t *e;
        if (cast_scalar(f->type, v->u.arr.items[i], &c) < 0 || c.kind == CV_NULL) {
            value_text(v->u.arr.items[i], txt, sizeof txt);
            return load_fail(L, "enum value \"%s\" is not a %s", txt, type_names[f->type]);
        }
        e = c.kind == CV_STRING ? json_stringn(c.s, c.slen) : json_double(c.d);
        if (json_array_append(f->enumv, e) < 0)
            return load_fail(L, "out of memory");
    }
    return 0;
}

/* {"type": T, options...}. Which options apply to which type follows
 * Mongoose: enum on String and Number, min/max on Number and Date,
 * minlength/maxlength/match on String, ref (ignored) on ObjectId. */
static int parse_options(loader_t *L, const json_t *obj, field_t *f)
{
    const json_t *t = json_object_get(obj, "type");
    if (t->type == JSON_ARRAY) {
        if (parse_array(L, t, f) < 0)
            return -1;
    } else if (parse_type_name(t->u.str.s, &f->type) < 0) {
        return load_fail(L, "unknown type \"%.60s\"", t->u.str.s);
    }
    const json_t *def = NULL;
    for (size_t i = 0; i < obj->u.obj.len; i++) {
        const char *k = obj->u.obj.keys[i];
        const json_t *v = obj->u.obj.vals[i];
        ftype_t ty = f->type;
        int ok_here;
        if (strcmp(k, "type") == 0)
            continue;
        if (strcmp(k, "required") == 0) {
            if (parse_bool_opt(L, k, v, &f->required) < 0)
                return -1;
            continue;
        }
        if (strcmp(k, "unique") == 0 || strcmp(k, "index") == 0) {
            if (parse_bool_opt(L, k, v, k[0] == 'u' ? &f->unique : &f->index) < 0)
                return -1;
            continue;
        }
        if (strcmp(k, "default") == 0) {
            def = v;
            continue;
        }
        if (strcmp(k, "enum") == 0)
            ok_here = ty == FT_STRING || ty == FT_NUMBER;
        else if (strcmp(k, "min") == 0 || strcmp(k, "max") == 0)
            ok_here = ty == FT_NUMBER || ty == FT_DATE;
        else if (strcmp(k, "minlength") == 0 || strcmp(k, "maxlength") == 0 ||
                 strcmp(k, "match") == 0)
            ok_here = ty == FT_STRING;
        else if (strcmp(k, "ref") == 0)
            ok_here = ty == FT_OBJECTID;
        else
            return load_fail(L, "unknown option \"%.60s\"", k);
        if (!ok_here && ty == FT_ARRAY)
            return load_fail(L, "option \"%s\" does not apply to an array; put it on the element "
                                "type, as in [{\"type\": ..., \"%s\": ...}]",
                             k, k);
        if (!ok_here)
            return load_fail(L, "option \"%s\" does not apply to a %s", k, type_names[ty]);
        int rc = 0;
        if (strcmp(k, "enum") == 0)
            rc = parse_enum(L, v, f);
        else if (strcmp(k, "min") == 0 || strcmp(k, "max") == 0)
            rc = parse_bound(L, k, v, f, k[1] == 'a');
        else if (strcmp(k, "minlength") == 0)
            rc = parse_length_opt(L, k, v, &f->minlen), f->has_minlen = 1;
        else if (strcmp(k, "maxlength") == 0)
            rc = parse_length_opt(L, k, v, &f->maxlen), f->has_maxlen = 1;
        else if (strcmp(k, "match") == 0)
            rc = parse_match(L, v, f);
        else if (v->type != JSON_STRING) /* ref */
            rc = load_fail(L, "ref must be a model name");
        if (rc < 0)
            return -1;
    }
    if (f->has_min && f->has_max &&
        (f->type == FT_NUMBER ? f->min > f->max : f->min_ms > f->max_ms))
        return load_fail(L, "min is greater than max");
    if (f->has_minlen && f->has_maxlen && f->minlen > f->maxlen)
        return load_fail(L, "minlength is greater than maxlength");
    if (def != NULL) {
        char txt[128];
        if (f->type == FT_DATE && def->type == JSON_STRING && strcmp(def->u.str.s, "now") == 0) {
            f->def_now = 1;
            return 0;
        }
        if (castable(f, def) < 0) {
            value_text(def, txt, sizeof txt);
            return load_fail(L, "default \"%s\" cannot be cast to %s", txt, type_names[f->type]);
        }
        f->def = json_copy(def);
        if (f->def == NULL)
            return load_fail(L, "out of memory");
    }
    return 0;
}

/* A type name, [spec], a nested object of specs (no "type", or a "type"
 * that is itself a spec object, i.e. a field named type), or options. */
static int parse_spec(loader_t *L, const json_t *v, field_t *f)
{
    if (v->type == JSON_STRING) {
        if (parse_type_name(v->u.str.s, &f->type) < 0)
            return load_fail(L, "unknown type \"%.60s\"", v->u.str.s);
        return 0;
    }
    if (v->type == JSON_ARRAY)
        return parse_array(L, v, f);
    if (v->type != JSON_OBJECT)
        return load_fail(L, "a field is a type name, an array or an object");
    const json_t *t = json_object_get(v, "type");
    if (v->u.obj.len == 0) {
        f->type = FT_MIXED;
        return 0;
    }
    if (t == NULL || t->type == JSON_OBJECT)
        return parse_nested(L, v, f, 0);
    if (t->type != JSON_STRING && t->type != JSON_ARRAY)
        return load_fail(L, "\"type\" must be a type name or an array");
    return parse_options(L, v, f);
}

static int add_index(model_t *m, const char *path, int unique)
{
    index_spec_t *n = realloc(m->idx, (m->nidx + 1) * sizeof *n);
    if (n == NULL)
        return -1;
    m->idx = n;
    n[m->nidx].path = strdup(path);
    if (n[m->nidx].path == NULL)
        return -1;
    n[m->nidx++].unique = unique;
    return 0;
}

static int collect_indexes(model_t *m, const field_t *f, strbuf_t *path)
{
    if ((f->index || f->unique) && add_index(m, sb_str(path), f->unique) < 0)
        return -1;
    if (f->type == FT_ARRAY)
        return collect_indexes(m, f->elem, path);
    for (size_t i = 0; i < f->nkids; i++) {
        size_t old = path_push(path, f->kids[i].name);
        int rc = path->oom ? -1 : collect_indexes(m, &f->kids[i], path);
        sb_setlen(path, old);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int check_collection(const char *c)
{
    return c[0] != '\0' && strchr(c, '$') == NULL && strncmp(c, "system.", 7) != 0 &&
           strlen(c) <= 200;
}

static model_t *parse_model(loader_t *L, const char *name, const json_t *spec)
{
    model_t *m = calloc(1, sizeof *m);
    strbuf_t path = {0};
    if (m == NULL) {
        load_fail(L, "out of memory");
        return NULL;
    }
    m->root.type = FT_NESTED;
    m->root.has_id = 1;
    if (name[0] == '\0') {
        load_fail(L, "empty model name");
        goto fail;
    }
    if (spec->type != JSON_OBJECT) {
        load_fail(L, "a model is an object with \"fields\"");
        goto fail;
    }
    const json_t *fields = NULL;
    for (size_t i = 0; i < spec->u.obj.len; i++) {
        const char *k = spec->u.obj.keys[i];
        const json_t *v = spec->u.obj.vals[i];
        if (strcmp(k, "collection") == 0) {
            if (v->type != JSON_STRING || strlen(v->u.str.s) != v->u.str.len ||
                !check_collection(v->u.str.s)) {
                load_fail(L, "\"collection\" must be a valid collection name");
                goto fail;
            }
            if ((m->collection = strdup(v->u.str.s)) == NULL)
                goto nomem;
        } else if (strcmp(k, "versioned") == 0) {
            if (parse_bool_opt(L, "\"versioned\"", v, &m->versioned) < 0)
                goto fail;
        } else if (strcmp(k, "fields") == 0) {
            fields = v;
        } else {
            load_fail(L, "unknown key \"%.60s\" (expected collection, versioned, fields)", k);
            goto fail;
        }
    }
    if (fields == NULL || fields->type != JSON_OBJECT) {
        load_fail(L, "\"fields\" must be an object of field specs");
        goto fail;
    }
    if ((m->name = strdup(name)) == NULL)
        goto nomem;
    if (parse_nested(L, fields, &m->root, 1) < 0)
        goto fail;
    if (m->collection == NULL) {
        if ((m->collection = model_pluralize(name)) == NULL)
            goto nomem;
        if (!check_collection(m->collection)) {
            load_fail(L, "\"%.100s\" is not a valid collection name; set \"collection\"",
                      m->collection);
            goto fail;
        }
    }
    if (collect_indexes(m, &m->root, &path) < 0)
        goto nomem;
    free(path.s);
    return m;
nomem:
    load_fail(L, "out of memory");
fail:
    free(path.s);
    model_free(m);
    return NULL;
}

model_set_t *model_set_parse(const char *text, size_t len, char *err, size_t errlen)
{
    loader_t L = {.err = err, .errlen = errlen};
    char perr[256];
    model_set_t *set = NULL;
    json_t *root = json_parse(text, len, JSON_DEFAULT_MAX_DEPTH, perr, sizeof perr);

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (root == NULL) {
        load_fail(&L, "models: %s", perr);
        return NULL;
    }
    if (root->type != JSON_OBJECT) {
        load_fail(&L, "models: the file must hold one JSON object, model name -> model");
        goto fail;
    }
    set = calloc(1, sizeof *set);
    if (set == NULL || (root->u.obj.len > 0 &&
                        (set->models = calloc(root->u.obj.len, sizeof *set->models)) == NULL)) {
        load_fail(&L, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < root->u.obj.len; i++) {
        L.model = root->u.obj.keys[i];
        sb_setlen(&L.path, 0);
        model_t *m = parse_model(&L, root->u.obj.keys[i], root->u.obj.vals[i]);
        if (m == NULL)
            goto fail;
        set->models[set->n++] = m;
    }
    free(L.path.s);
    json_free(root);
    return set;
fail:
    free(L.path.s);
    json_free(root);
    model_set_free(set);
    return NULL;
}

#define MODELS_FILE_MAX (16 * 1024 * 1024)

model_set_t *model_set_load(const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    model_set_t *set = NULL;

    if (fp == NULL) {
        snprintf(err, errlen, "cannot open models file %s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= MODELS_FILE_MAX) {
                snprintf(err, errlen, "models file %s is larger than %d bytes", path,
                         MODELS_FILE_MAX);
                goto out;
            }
            cap = cap ? cap * 2 : 65536;
            char *n = realloc(buf, cap);
            if (n == NULL) {
                snprintf(err, errlen, "out of memory reading %s", path);
                goto out;
            }
            buf = n;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) {
            if (ferror(fp)) {
                snprintf(err, errlen, "cannot read models file %s: %s", path, strerror(errno));
                goto out;
            }
            break;
        }
    }
    set = model_set_parse(buf ? buf : "", len, err, errlen);
out:
    fclose(fp);
    free(buf);
    return set;
}

/* ================================================================ BSON -> JSON */

static json_t *base64_json(const uint8_t *p, uint32_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t olen = ((size_t)n + 2) / 3 * 4;
    char *out = malloc(olen + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (uint32_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    json_t *j = json_stringn(out, o);
    free(out);
    return j;
}

static json_t *iter_to_json(bson_iter_t *it);

static json_t *container_to_json(bson_iter_t *child, int array)
{
    json_t *j = array ? json_array() : json_object();
    if (j == NULL)
        return NULL;
    while (bson_iter_next(child)) {
        json_t *v = iter_to_json(child);
        int rc = array ? json_array_append(j, v) : json_object_set(j, bson_iter_key(child), v);
        if (v == NULL || rc < 0) {
            json_free(j);
            return NULL;
        }
    }
    return j;
}

/* One BSON value as the client sees it (see model_to_json). Types JSON has
 * no word for: Decimal128 as its string, binary as base64, regex as
 * "/pattern/options", timestamps as their 64-bit number; the rest null. */
static json_t *iter_to_json(bson_iter_t *it)
{
    uint32_t len;
    char buf[64];
    bson_iter_t child;
    switch (bson_iter_type(it)) {
    case BSON_TYPE_DOUBLE:
        return json_double(bson_iter_double(it));
    case BSON_TYPE_INT32:
        return json_int(bson_iter_int32(it));
    case BSON_TYPE_INT64:
        return json_int(bson_iter_int64(it));
    case BSON_TYPE_BOOL:
        return json_bool(bson_iter_bool(it));
    case BSON_TYPE_UTF8: {
        const char *s = bson_iter_utf8(it, &len);
        return json_stringn(s, len);
    }
    case BSON_TYPE_SYMBOL: {
        const char *s = bson_iter_symbol(it, &len);
        return json_stringn(s, len);
    }
    case BSON_TYPE_OID:
        bson_oid_to_string(bson_iter_oid(it), buf);
        return json_string(buf);
    case BSON_TYPE_DATE_TIME:
        format_iso_date(bson_iter_date_time(it), buf, sizeof buf);
        return json_string(buf);
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY:
        if (!bson_iter_recurse(it, &child))
            return json_null();
        return container_to_json(&child, bson_iter_type(it) == BSON_TYPE_ARRAY);
    case BSON_TYPE_DECIMAL128: {
        bson_decimal128_t dec;
        char dbuf[BSON_DECIMAL128_STRING];
        if (!bson_iter_decimal128(it, &dec))
            return json_null();
        bson_decimal128_to_string(&dec, dbuf);
        return json_string(dbuf);
    }
    case BSON_TYPE_BINARY: {
        bson_subtype_t sub;
        const uint8_t *bin;
        bson_iter_binary(it, &sub, &len, &bin);
        return base64_json(bin, len);
    }
    case BSON_TYPE_REGEX: {
        const char *opts;
        const char *re = bson_iter_regex(it, &opts);
        char *s = bson_strdup_printf("/%s/%s", re, opts ? opts : "");
        json_t *j = s != NULL ? json_string(s) : NULL;
        bson_free(s);
        return j;
    }
    case BSON_TYPE_TIMESTAMP: {
        uint32_t t, inc;
        bson_iter_timestamp(it, &t, &inc);
        return json_int((int64_t)t << 32 | inc);
    }
    default:
        return json_null();
    }
}

json_t *model_to_json(const bson_t *doc)
{
    bson_iter_t it;
    if (doc == NULL || !bson_iter_init(&it, doc))
        return NULL;
    return container_to_json(&it, 0);
}

/* ================================================================ documents */

typedef struct doc_ctx {
    const model_t *m;
    json_t *errors;  /* path -> error; made on the first failure */
    json_t *fatal;   /* InvalidRequest / too large / out of memory: stops everything */
    int defaults;    /* fill absent paths from their defaults */
    int64_t now;
    strbuf_t path;   /* the path being cast, "items.0.name" */
} doc_ctx_t;

static int doc_fatal(doc_ctx_t *c, json_t *e)
{
    if (c->fatal == NULL)
        c->fatal = e != NULL ? e : error_nomem();
    else
        json_free(e);
    return -1;
}

static int too_large(doc_ctx_t *c)
{
    return doc_fatal(c, error_fmt("InvalidRequest", "%s: document too large", c->m->name));
}

static void add_error(doc_ctx_t *c, const char *name, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record the first failure of the current path (Mongoose reports one per
 * path). Allocation failures become c->fatal. */
static void add_error(doc_ctx_t *c, const char *name, const char *kind, const char *fmt, ...)
{
    char msg[512];
    const char *path = sb_str(&c->path);
    va_list ap;
    json_t *e = NULL;

    if (c->path.oom) {
        doc_fatal(c, NULL);
        return;
    }
    if (c->errors == NULL && (c->errors = json_object()) == NULL) {
        doc_fatal(c, NULL);
        return;
    }
    if (json_object_get(c->errors, path) != NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    e = json_object();
    if (e == NULL || json_object_set(e, "name", json_string(name)) < 0 ||
        json_object_set(e, "kind", json_string(kind)) < 0 ||
        json_object_set(e, "path", json_string(path)) < 0 ||
        json_object_set(e, "message", json_string(msg)) < 0) {
        json_free(e);
        doc_fatal(c, NULL);
        return;
    }
    if (json_object_set(c->errors, path, e) < 0)
        doc_fatal(c, NULL);
}

static void required_error(doc_ctx_t *c)
{
    add_error(c, "ValidatorError", "required", "Path `%s` is required.", sb_str(&c->path));
}

/* kind is the element type's cast kind in brackets for array elements,
 * "[Number]", as Mongoose reports them. */
static void cast_error(doc_ctx_t *c, const char *kind, int in_array, const json_t *v)
{
    char txt[160], k[32];
    value_text(v, txt, sizeof txt);
    snprintf(k, sizeof k, in_array ? "[%s]" : "%s", kind);
    add_error(c, "CastError", k, "Cast to %s failed for value \"%s\" at path \"%s\"", k, txt,
              sb_str(&c->path));
}

static int enum_has(const field_t *f, const cval_t *v)
{
    for (size_t i = 0; i < f->enumv->u.arr.len; i++) {
        const json_t *e = f->enumv->u.arr.items[i];
        if (v->kind == CV_STRING && e->type == JSON_STRING && e->u.str.len == v->slen &&
            memcmp(e->u.str.s, v->s, v->slen) == 0)
            return 1;
        if (v->kind == CV_NUMBER && e->type == JSON_NUMBER && json_num(e) == v->d)
            return 1;
    }
    return 0;
}

static int regex_matches(const field_t *f, const cval_t *v)
{
    regmatch_t pm[1] = {{.rm_so = 0, .rm_eo = (regoff_t)v->slen}};
    return regexec(&f->re, v->s, 1, pm, REG_STARTEND) == 0;
}

/* Mongoose's built-in validators with its messages. null passes everything
 * but required; "" fails required on a String, as in Mongoose. */
static void validate_scalar(doc_ctx_t *c, const field_t *f, const cval_t *v)
{
    const char *p = sb_str(&c->path);
    char val[160], lim[64];

    if (v->kind == CV_NULL || (v->kind == CV_STRING && v->slen == 0 && f->required)) {
        if (f->required)
            required_error(c);
        return;
    }
    if (v->kind == CV_STRING) {
        json_t tmp = {.type = JSON_STRING};
        tmp.u.str.s = (char *)v->s;
        tmp.u.str.len = v->slen;
        value_text(&tmp, val, sizeof val);
        size_t len = utf16_length(v->s, v->slen);
        if (f->enumv != NULL && !enum_has(f, v))
            add_error(c, "ValidatorError", "enum", "`%s` is not a valid enum value for path `%s`.",
                      val, p);
        else if (f->has_re && v->slen > 0 && !regex_matches(f, v))
            add_error(c, "ValidatorError", "regexp", "Path `%s` is invalid (%s).", p, val);
        else if (f->has_minlen && len < f->minlen)
            add_error(c, "ValidatorError", "minlength",
                      "Path `%s` (`%s`) is shorter than the minimum allowed length (%zu).", p, val,
                      f->minlen);
        else if (f->has_maxlen && len > f->maxlen)
            add_error(c, "ValidatorError", "maxlength",
                      "Path `%s` (`%s`) is longer than the maximum allowed length (%zu).", p, val,
                      f->maxlen);
    } else if (v->kind == CV_NUMBER) {
        js_number_format(v->d, val, sizeof val);
        if (f->enumv != NULL && !enum_has(f, v)) {
            add_error(c, "ValidatorError", "enum", "`%s` is not a valid enum value for path `%s`.",
                      val, p);
        } else if (f->has_min && v->d < f->min) {
            js_number_format(f->min, lim, sizeof lim);
            add_error(c, "ValidatorError", "min",
                      "Path `%s` (%s) is less than minimum allowed value (%s).", p, val, lim);
        } else if (f->has_max && v->d > f->max) {
            js_number_format(f->max, lim, sizeof lim);
            add_error(c, "ValidatorError", "max",
                      "Path `%s` (%s) is more than maximum allowed value (%s).", p, val, lim);
        }
    } else if (v->kind == CV_DATE) {
        format_iso_date(v->ms, val, sizeof val);
        if (f->has_min && v->ms < f->min_ms) {
            format_iso_date(f->min_ms, lim, sizeof lim);
            add_error(c, "ValidatorError", "min",
                      "Path `%s` (%s) is before minimum allowed value (%s).", p, val, lim);
        } else if (f->has_max && v->ms > f->max_ms) {
            format_iso_date(f->max_ms, lim, sizeof lim);
            add_error(c, "ValidatorError", "max",
                      "Path `%s` (%s) is after maximum allowed value (%s).", p, val, lim);
        }
    }
}

static int doc_fields(doc_ctx_t *c, const field_t *nf, const json_t *data, const bson_t *cur,
                      bson_t *out);
static int doc_array(doc_ctx_t *c, const field_t *f, const json_t *v, bson_t *out,
                     const char *key);

static int doc_scalar(doc_ctx_t *c, const field_t *f, const json_t *v, bson_t *out,
                      const char *key, int in_array)
{
    cval_t cv;
    if (cast_scalar(f->type, v, &cv) < 0) {
        cast_error(c, cast_kinds[f->type], in_array, v);
        return 0;
    }
    validate_scalar(c, f, &cv);
    return append_cval(out, key, &cv) ? 0 : too_large(c);
}

static int doc_mixed(doc_ctx_t *c, const field_t *f, const json_t *v, bson_t *out,
                     const char *key)
{
    const char *bad;
    if (f->required && v->type == JSON_NULL)
        required_error(c);
    if (append_json(out, key, v, &bad) == 0)
        return 0;
    if (bad == NULL)
        return too_large(c);
    return doc_fatal(c, error_fmt("InvalidRequest",
                                  "field name \"%.100s\" is not allowed (in %.200s): names may "
                                  "not start with '$' or contain '.'",
                                  bad, sb_str(&c->path)));
}

/* Subpaths are cast into their own document, stored only when something is
 * in it (Mongoose's minimize). */
static int doc_nested(doc_ctx_t *c, const field_t *f, const json_t *data, const bson_t *cur,
                      bson_t *out, const char *key)
{
    bson_t sub = BSON_INITIALIZER;
    int rc = doc_fields(c, f, data, cur, &sub);
    if (rc == 0 && !bson_empty(&sub) && !bson_append_document(out, key, -1, &sub))
        rc = too_large(c);
    bson_destroy(&sub);
    return rc;
}

/* An element of a document array: a subdocument with its own _id (kept
 * when the client sends one, new otherwise) and defaults applied, as
 * Mongoose does for every subdocument it creates. */
static int doc_subdoc(doc_ctx_t *c, const field_t *ef, const json_t *v, bson_t *out,
                      const char *key)
{
    bson_t sub = BSON_INITIALIZER;
    const json_t *id = json_object_get(v, "_id");
    cval_t cv;
    int rc = 0;

    size_t old = path_push(&c->path, "_id");
    if (id != NULL && id->type != JSON_NULL && id->type != JSON_CALLBACK) {
        if (cast_scalar(FT_OBJECTID, id, &cv) < 0)
            cast_error(c, cast_kinds[FT_OBJECTID], 0, id);
        else if (!append_cval(&sub, "_id", &cv))
            rc = too_large(c);
    } else {
        bson_oid_t oid;
        bson_oid_init(&oid, NULL);
        if (!bson_append_oid(&sub, "_id", -1, &oid))
            rc = too_large(c);
    }
    sb_setlen(&c->path, old);
    if (rc == 0) {
        int saved = c->defaults;
        c->defaults = 1;
        rc = doc_fields(c, ef, v, NULL, &sub);
        c->defaults = saved;
    }
    if (rc == 0 && !bson_append_document(out, key, -1, &sub))
        rc = too_large(c);
    bson_destroy(&sub);
    return rc;
}

static int doc_element(doc_ctx_t *c, const field_t *ef, const json_t *e, bson_t *out,
                       const char *key)
{
    switch (ef->type) {
    case FT_NESTED:
        if (e->type == JSON_NULL)
            return bson_append_null(out, key, -1) ? 0 : too_large(c);
        if (e->type != JSON_OBJECT) {
            cast_error(c, "Embedded", 0, e);
            return 0;
        }
        return doc_subdoc(c, ef, e, out, key);
    case FT_ARRAY:
        return doc_array(c, ef, e, out, key);
    case FT_MIXED:
        return doc_mixed(c, ef, e, out, key);
    default:
        return doc_scalar(c, ef, e, out, key, 1);
    }
}

/* Each element cast to the element type; a single value is wrapped into a
 * one-element array, as Mongoose does. */
static int doc_array(doc_ctx_t *c, const field_t *f, const json_t *v, bson_t *out,
                     const char *key)
{
    bson_t arr;
    int rc = 0;
    char idx[16];
    const char *ik;
    static const json_t null_value = {.type = JSON_NULL};

    if (v->type == JSON_NULL) {
        if (f->required)
            required_error(c);
        return bson_append_null(out, key, -1) ? 0 : too_large(c);
    }
    if (!bson_append_array_begin(out, key, -1, &arr))
        return too_large(c);
    size_t n = v->type == JSON_ARRAY ? v->u.arr.len : 1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const json_t *e = v->type == JSON_ARRAY ? v->u.arr.items[i] : v;
        if (e->type == JSON_CALLBACK)
            e = &null_value;
        bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
        size_t old = path_push_index(&c->path, i);
        rc = doc_element(c, f->elem, e, &arr, ik);
        sb_setlen(&c->path, old);
    }
    if (!bson_append_array_end(out, &arr) && rc == 0)
        rc = too_large(c);
    return rc;
}

static int doc_value(doc_ctx_t *c, const field_t *f, const json_t *v, bson_t *out,
                     const char *key)
{
    switch (f->type) {
    case FT_NESTED:
        if (v->type == JSON_NULL)
            return doc_nested(c, f, NULL, NULL, out, key);
        if (v->type != JSON_OBJECT) {
            cast_error(c, cast_kinds[FT_NESTED], 0, v);
            return 0;
        }
        return doc_nested(c, f, v, NULL, out, key);
    case FT_ARRAY:
        return doc_array(c, f, v, out, key);
    case FT_MIXED:
        return doc_mixed(c, f, v, out, key);
    default:
        return doc_scalar(c, f, v, out, key, 0);
    }
}

/* A path the client did not send, kept from the stored document. Mixed
 * values (and arrays of them) are copied byte for byte; typed ones go
 * through the same cast and validators again, which is lossless for them. */
static int doc_stored(doc_ctx_t *c, const field_t *f, bson_iter_t *it, bson_t *out,
                      const char *key)
{
    if (f->type == FT_MIXED || (f->type == FT_ARRAY && f->elem->type == FT_MIXED)) {
        if (f->required && BSON_ITER_HOLDS_NULL(it))
            required_error(c);
        return bson_append_iter(out, key, -1, it) ? 0 : too_large(c);
    }
    if (f->type == FT_NESTED) {
        bson_t sub;
        uint32_t len;
        const uint8_t *data;
        if (BSON_ITER_HOLDS_DOCUMENT(it)) {
            bson_iter_document(it, &len, &data);
            if (bson_init_static(&sub, data, len))
                return doc_nested(c, f, NULL, &sub, out, key);
        }
        return doc_nested(c, f, NULL, NULL, out, key);
    }
    json_t *j = iter_to_json(it);
    if (j == NULL)
        return doc_fatal(c, NULL);
    int rc = doc_value(c, f, j, out, key);
    json_free(j);
    return rc;
}

static int doc_absent(doc_ctx_t *c, const field_t *f, bson_t *out, const char *key)
{
    if (f->type == FT_NESTED)
        return doc_nested(c, f, NULL, NULL, out, key);
    if (c->defaults) {
        if (f->def_now) {
            cval_t cv = {.kind = CV_DATE, .ms = c->now};
            validate_scalar(c, f, &cv);
            return append_cval(out, key, &cv) ? 0 : too_large(c);
        }
        if (f->def != NULL)
            return doc_value(c, f, f->def, out, key);
        if (f->type == FT_ARRAY) { /* Mongoose arrays start out empty */
            bson_t empty = BSON_INITIALIZER;
            bool ok = bson_append_array(out, key, -1, &empty);
            bson_destroy(&empty);
            return ok ? 0 : too_large(c);
        }
    }
    if (f->required)
        required_error(c);
    return 0;
}

static const field_t *find_kid(const field_t *nf, const char *name)
{
    for (size_t i = 0; i < nf->nkids; i++)
        if (strcmp(nf->kids[i].name, name) == 0)
            return &nf->kids[i];
    return NULL;
}

/* The fields of nf in schema order: from data when present there, else
 * from the stored document cur, else absent (defaults, required). */
static int doc_fields(doc_ctx_t *c, const field_t *nf, const json_t *data, const bson_t *cur,
                      bson_t *out)
{
    for (size_t i = 0; i < nf->nkids; i++) {
        const field_t *f = &nf->kids[i];
        const json_t *v = data != NULL ? json_object_get(data, f->name) : NULL;
        bson_iter_t it;
        int rc;
        if (v != NULL && v->type == JSON_CALLBACK)
            v = NULL;
        size_t old = path_push(&c->path, f->name);
        if (c->path.oom)
            return doc_fatal(c, NULL);
        if (v != NULL)
            rc = doc_value(c, f, v, out, f->name);
        else if (cur != NULL && bson_iter_init_find(&it, cur, f->name))
            rc = doc_stored(c, f, &it, out, f->name);
        else
            rc = doc_absent(c, f, out, f->name);
        sb_setlen(&c->path, old);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Hand the document or the error out; frees what is not handed out. */
static bson_t *doc_finish(doc_ctx_t *c, bson_t *doc, int rc, json_t **error)
{
    free(c->path.s);
    if (rc == 0 && c->fatal == NULL && c->errors == NULL)
        return doc;
    bson_destroy(doc);
    if (c->fatal != NULL) {
        json_free(c->errors);
        *error = c->fatal;
        return NULL;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "%s validation failed", c->m->name);
    *error = model_error_new("ValidationError", msg, c->errors);
    if (*error == NULL)
        *error = error_nomem();
    return NULL;
}

bson_t *model_prepare_create(const model_t *m, const json_t *data, json_t **error)
{
    doc_ctx_t c = {.m = m, .defaults = 1, .now = now_ms()};
    bson_oid_t oid;
    int rc = 0;

    *error = NULL;
    if (data == NULL || data->type != JSON_OBJECT) {
        *error = error_fmt("InvalidRequest", "%s: data must be an object", m->name);
        return NULL;
    }
    const json_t *id = json_object_get(data, "_id");
    if (id != NULL && id->type != JSON_CALLBACK) {
        *error = error_fmt("InvalidRequest",
                           "%s: data must not carry _id (create makes a new document)", m->name);
        return NULL;
    }
    bson_t *doc = bson_new();
    bson_oid_init(&oid, NULL);
    if (!bson_append_oid(doc, "_id", -1, &oid))
        rc = too_large(&c);
    if (rc == 0)
        rc = doc_fields(&c, &m->root, data, NULL, doc);
    if (rc == 0 && !bson_append_int32(doc, "__v", -1, 0))
        rc = too_large(&c);
    return doc_finish(&c, doc, rc, error);
}

/* Stored fields the schema does not know (written by other programs) are
 * kept: Mongoose would only $set the paths it changed. */
bson_t *model_prepare_update(const model_t *m, const bson_t *current, const json_t *data,
                             json_t **error)
{
    doc_ctx_t c = {.m = m, .defaults = 0, .now = now_ms()};
    bson_iter_t it;
    int rc = 0;

    *error = NULL;
    if (data == NULL || data->type != JSON_OBJECT) {
        *error = error_fmt("InvalidRequest", "%s: data must be an object", m->name);
        return NULL;
    }
    bson_t *doc = bson_new();
    if (bson_iter_init_find(&it, current, "_id") && !bson_append_iter(doc, "_id", -1, &it))
        rc = too_large(&c);
    if (rc == 0)
        rc = doc_fields(&c, &m->root, data, current, doc);
    if (rc == 0 && bson_iter_init(&it, current)) {
        while (rc == 0 && bson_iter_next(&it)) {
            const char *k = bson_iter_key(&it);
            if (strcmp(k, "_id") == 0 || strcmp(k, "__v") == 0 || find_kid(&m->root, k))
                continue;
            if (!bson_append_iter(doc, k, -1, &it))
                rc = too_large(&c);
        }
    }
    if (rc == 0) {
        bool ok = bson_iter_init_find(&it, current, "__v") ? bson_append_iter(doc, "__v", -1, &it)
                                                          : bson_append_int32(doc, "__v", -1, 0);
        if (!ok)
            rc = too_large(&c);
    }
    return doc_finish(&c, doc, rc, error);
}

int model_cast_id(const json_t *id, bson_oid_t *out, json_t **error)
{
    cval_t cv;
    char txt[160];
    *error = NULL;
    if (id != NULL && (id->type == JSON_STRING || id->type == JSON_OBJECT) &&
        cast_scalar(FT_OBJECTID, id, &cv) == 0 && cv.kind == CV_OID) {
        bson_oid_copy(&cv.oid, out);
        return 0;
    }
    value_text(id, txt, sizeof txt);
    *error = error_fmt("InvalidRequest", "invalid _id \"%s\" (expected 24 hex digits)", txt);
    return -1;
}

/* ================================================================ queries */

typedef struct qctx {
    model_limits_t lim;
    json_t *error; /* the first refusal */
} qctx_t;

static int q_fail(qctx_t *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int q_fail(qctx_t *q, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (q->error != NULL)
        return -1;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    q->error = model_error_new("InvalidRequest", msg, NULL);
    if (q->error == NULL)
        q->error = error_nomem();
    return -1;
}

static int q_too_large(qctx_t *q) { return q_fail(q, "query too large"); }

static void limits_init(qctx_t *q, const model_limits_t *lim)
{
    q->lim = lim != NULL ? *lim : default_limits;
    if (q->lim.max_read_limit == 0)
        q->lim.max_read_limit = default_limits.max_read_limit;
    if (q->lim.max_query_depth == 0)
        q->lim.max_query_depth = default_limits.max_query_depth;
    if (q->lim.max_query_terms == 0)
        q->lim.max_query_terms = default_limits.max_query_terms;
    if (q->lim.max_regex_length == 0)
        q->lim.max_regex_length = default_limits.max_regex_length;
    q->error = NULL;
}

static const field_t *find_kid_n(const field_t *nf, const char *name, size_t n)
{
    for (size_t i = 0; i < nf->nkids; i++)
        if (strlen(nf->kids[i].name) == n && memcmp(nf->kids[i].name, name, n) == 0)
            return &nf->kids[i];
    return NULL;
}

static int all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return n > 0;
}

/* The spec at a dotted path below root (root NULL: a Mixed value, where any
 * path goes). As in MongoDB, an array path may be followed by an element
 * index ("items.0.name") or straight by element fields ("items.name").
 * _id is known on the root and on document-array elements. NULL: unknown. */
static const field_t *resolve_path(const field_t *root, const char *path)
{
    const field_t *cur = root != NULL ? root : &mixed_field;
    const char *seg = path;
    for (;;) {
        const char *dot = strchr(seg, '.');
        size_t n = dot != NULL ? (size_t)(dot - seg) : strlen(seg);
        if (n == 0 || seg[0] == '$')
            return NULL;
        for (;;) {
            if (cur->type == FT_MIXED)
                break;
            if (cur->type == FT_ARRAY) {
                cur = cur->elem;
                if (all_digits(seg, n))
                    break;
                continue;
            }
            if (cur->type != FT_NESTED)
                return NULL;
            const field_t *kid = find_kid_n(cur, seg, n);
            if (kid != NULL)
                cur = kid;
            else if (cur->has_id && n == 3 && memcmp(seg, "_id", 3) == 0)
                cur = &id_field;
            else
                return NULL;
            break;
        }
        if (dot == NULL)
            return cur;
        seg = dot + 1;
    }
}

static const char *const allowed_ops[] = {
    "$eq",  "$ne",  "$gt",     "$gte", "$lt",  "$lte", "$in",        "$nin",  "$exists",
    "$and", "$or",  "$nor",    "$not", "$all", "$elemMatch", "$size", "$regex", "$options",
};

static int op_allowed(const char *k)
{
    for (size_t i = 0; i < sizeof allowed_ops / sizeof allowed_ops[0]; i++)
        if (strcmp(k, allowed_ops[i]) == 0)
            return 1;
    return 0;
}

static int op_logical(const char *k)
{
    return strcmp(k, "$and") == 0 || strcmp(k, "$or") == 0 || strcmp(k, "$nor") == 0;
}

static int is_operator_object(const json_t *v)
{
    return v->type == JSON_OBJECT && v->u.obj.len > 0 && v->u.obj.keys[0][0] == '$';
}

/* Depth and size are measured on the client's tree before anything else:
 * the top-level object is depth 1; every key and array element is a term. */
static int q_measure(qctx_t *q, const json_t *v, size_t depth, size_t *terms)
{
    if (v->type != JSON_OBJECT && v->type != JSON_ARRAY)
        return 0;
    if (depth > q->lim.max_query_depth)
        return q_fail(q, "query nested deeper than %zu levels", q->lim.max_query_depth);
    size_t n = v->type == JSON_OBJECT ? v->u.obj.len : v->u.arr.len;
    *terms += n;
    if (*terms > q->lim.max_query_terms)
        return q_fail(q, "query has more than %zu terms", q->lim.max_query_terms);
    for (size_t i = 0; i < n; i++) {
        const json_t *c = v->type == JSON_OBJECT ? v->u.obj.vals[i] : v->u.arr.items[i];
        if (q_measure(q, c, depth + 1, terms) < 0)
            return -1;
    }
    return 0;
}

static int q_filter(qctx_t *q, const field_t *root, const json_t *filter, bson_t *out);
static int q_ops(qctx_t *q, const field_t *f, const char *path, const json_t *obj, bson_t *out);

/* A value compared with the path: cast to the path's type. On an array path
 * a single value is cast to the element type (MongoDB matches it against
 * the elements) and an array is an exact array of elements. */
static int q_value(qctx_t *q, const field_t *f, const char *path, const char *key,
                   const json_t *v, bson_t *out)
{
    char txt[160], idx[16];
    const char *ik, *bad;
    bson_t child;
    int rc = 0;

    switch (f->type) {
    case FT_ARRAY:
        if (v->type != JSON_ARRAY)
            return q_value(q, f->elem, path, key, v, out);
        if (!bson_append_array_begin(out, key, -1, &child))
            return q_too_large(q);
        for (size_t i = 0; i < v->u.arr.len && rc == 0; i++) {
            bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
            rc = q_value(q, f->elem, path, ik, v->u.arr.items[i], &child);
        }
        if (!bson_append_array_end(out, &child) && rc == 0)
            rc = q_too_large(q);
        return rc;
    case FT_NESTED:
        if (v->type == JSON_NULL)
            return bson_append_null(out, key, -1) ? 0 : q_too_large(q);
        if (v->type != JSON_OBJECT)
            break;
        if (!bson_append_document_begin(out, key, -1, &child))
            return q_too_large(q);
        for (size_t i = 0; i < v->u.obj.len && rc == 0; i++) {
            const char *k = v->u.obj.keys[i];
            const field_t *kid = find_kid(f, k);
            if (kid == NULL && f->has_id && strcmp(k, "_id") == 0)
                kid = &id_field;
            if (kid == NULL) {
                rc = k[0] == '$' ? q_fail(q, "operator %.60s is not allowed here", k)
                                 : q_fail(q, "unknown path \"%.200s.%.100s\"", path, k);
                break;
            }
            if (is_operator_object(v->u.obj.vals[i])) {
                rc = q_fail(q, "operators may not appear inside a subdocument value (path "
                               "\"%.200s\")", path);
                break;
            }
            rc = q_value(q, kid, path, k, v->u.obj.vals[i], &child);
        }
        if (!bson_append_document_end(out, &child) && rc == 0)
            rc = q_too_large(q);
        return rc;
    case FT_MIXED:
        if (append_json(out, key, v, &bad) == 0)
            return 0;
        if (bad == NULL)
            return q_too_large(q);
        if (bad[0] == '$')
            return q_fail(q, "operator %.60s is not allowed here", bad);
        return q_fail(q, "field name \"%.100s\" is not allowed in a value", bad);
    default: {
        cval_t cv;
        if (cast_scalar(f->type, v, &cv) < 0)
            break;
        return append_cval(out, key, &cv) ? 0 : q_too_large(q);
    }
    }
    value_text(v, txt, sizeof txt);
    return q_fail(q, "cannot cast \"%s\" to %s for path \"%.200s\"", txt, type_names[f->type],
                  path);
}

static int q_list(qctx_t *q, const field_t *f, const char *path, const char *op,
                  const json_t *v, bson_t *out)
{
    bson_t arr;
    char idx[16];
    const char *ik;
    int rc = 0;
    if (v->type != JSON_ARRAY)
        return q_fail(q, "%s on \"%.200s\" takes an array", op, path);
    if (!bson_append_array_begin(out, op, -1, &arr))
        return q_too_large(q);
    for (size_t i = 0; i < v->u.arr.len && rc == 0; i++) {
        bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
        rc = q_value(q, f, path, ik, v->u.arr.items[i], &arr);
    }
    if (!bson_append_array_end(out, &arr) && rc == 0)
        rc = q_too_large(q);
    return rc;
}

static int q_regex(qctx_t *q, const field_t *f, const char *path, const json_t *v, bson_t *out)
{
    const field_t *leaf = f;
    while (leaf->type == FT_ARRAY)
        leaf = leaf->elem;
    if (leaf->type != FT_STRING && leaf->type != FT_MIXED)
        return q_fail(q, "$regex applies to String paths (\"%.200s\" is a %s)", path,
                      type_names[leaf->type]);
    if (v->type != JSON_STRING || strlen(v->u.str.s) != v->u.str.len)
        return q_fail(q, "$regex on \"%.200s\" takes a string", path);
    if (v->u.str.len > q->lim.max_regex_length)
        return q_fail(q, "$regex on \"%.200s\" is longer than %zu characters", path,
                      q->lim.max_regex_length);
    return bson_append_utf8(out, "$regex", -1, v->u.str.s, (int)v->u.str.len) ? 0
                                                                              : q_too_large(q);
}

static int q_elem_match(qctx_t *q, const field_t *f, const char *path, const json_t *v,
                        bson_t *out)
{
    bson_t child;
    int rc;
    if (f->type != FT_ARRAY && f->type != FT_MIXED)
        return q_fail(q, "$elemMatch applies to array paths (\"%.200s\" is a %s)", path,
                      type_names[f->type]);
    const field_t *ef = f->type == FT_ARRAY ? f->elem : &mixed_field;
    if (v->type != JSON_OBJECT || v->u.obj.len == 0)
        return q_fail(q, "$elemMatch on \"%.200s\" takes a non-empty object", path);
    if (!bson_append_document_begin(out, "$elemMatch", -1, &child))
        return q_too_large(q);
    if (is_operator_object(v) && !op_logical(v->u.obj.keys[0]))
        rc = q_ops(q, ef, path, v, &child);
    else if (ef->type == FT_NESTED || ef->type == FT_MIXED)
        rc = q_filter(q, ef->type == FT_NESTED ? ef : NULL, v, &child);
    else
        rc = q_fail(q, "$elemMatch on \"%.200s\" (an array of %s) takes operators", path,
                    type_names[ef->type]);
    if (!bson_append_document_end(out, &child) && rc == 0)
        rc = q_too_large(q);
    return rc;
}

/* {"$op": value, ...} on one path. */
static int q_ops(qctx_t *q, const field_t *f, const char *path, const json_t *obj, bson_t *out)
{
    for (size_t i = 0; i < obj->u.obj.len; i++) {
        const char *k = obj->u.obj.keys[i];
        const json_t *v = obj->u.obj.vals[i];
        int rc = 0;
        int64_t n;
        if (v->type == JSON_CALLBACK)
            continue;
        if (k[0] != '$')
            return q_fail(q, "cannot mix operators and values in the condition on \"%.200s\"",
                          path);
        if (!op_allowed(k))
            return q_fail(q, "operator %.60s is not allowed", k);
        if (op_logical(k))
            return q_fail(q, "operator %s belongs at the top of a filter, not on \"%.200s\"", k,
                          path);
        if (strcmp(k, "$eq") == 0 || strcmp(k, "$ne") == 0 || strcmp(k, "$gt") == 0 ||
            strcmp(k, "$gte") == 0 || strcmp(k, "$lt") == 0 || strcmp(k, "$lte") == 0) {
            rc = q_value(q, f, path, k, v, out);
        } else if (strcmp(k, "$in") == 0 || strcmp(k, "$nin") == 0 || strcmp(k, "$all") == 0) {
            rc = q_list(q, f, path, k, v, out);
        } else if (strcmp(k, "$exists") == 0) {
            int b;
            if (v->type == JSON_BOOL)
                b = v->u.boolean;
            else if (json_integer(v, 0, 1, &n) == 0)
                b = (int)n;
            else
                return q_fail(q, "$exists on \"%.200s\" takes true or false", path);
            rc = bson_append_bool(out, k, -1, b) ? 0 : q_too_large(q);
        } else if (strcmp(k, "$size") == 0) {
            if (json_integer(v, 0, INT32_MAX, &n) < 0)
                return q_fail(q, "$size on \"%.200s\" takes a non-negative integer", path);
            rc = bson_append_int32(out, k, -1, (int32_t)n) ? 0 : q_too_large(q);
        } else if (strcmp(k, "$regex") == 0) {
            rc = q_regex(q, f, path, v, out);
        } else if (strcmp(k, "$options") == 0) {
            if (json_object_get(obj, "$regex") == NULL)
                return q_fail(q, "$options on \"%.200s\" needs $regex", path);
            if (v->type != JSON_STRING || strlen(v->u.str.s) != v->u.str.len ||
                strspn(v->u.str.s, "imsx") != v->u.str.len)
                return q_fail(q, "$options on \"%.200s\" may only hold the flags i, m, s, x",
                              path);
            rc = bson_append_utf8(out, k, -1, v->u.str.s, (int)v->u.str.len) ? 0
                                                                             : q_too_large(q);
        } else if (strcmp(k, "$not") == 0) {
            bson_t child;
            if (!is_operator_object(v))
                return q_fail(q, "$not on \"%.200s\" takes an operator object", path);
            if (!bson_append_document_begin(out, k, -1, &child))
                return q_too_large(q);
            rc = q_ops(q, f, path, v, &child);
            if (!bson_append_document_end(out, &child) && rc == 0)
                rc = q_too_large(q);
        } else { /* $elemMatch */
            rc = q_elem_match(q, f, path, v, out);
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int q_logical(qctx_t *q, const field_t *root, const char *op, const json_t *v,
                     bson_t *out)
{
    bson_t arr, child;
    char idx[16];
    const char *ik;
    int rc = 0;
    if (v->type != JSON_ARRAY || v->u.arr.len == 0)
        return q_fail(q, "%s takes a non-empty array of filters", op);
    if (!bson_append_array_begin(out, op, -1, &arr))
        return q_too_large(q);
    for (size_t i = 0; i < v->u.arr.len && rc == 0; i++) {
        bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
        if (v->u.arr.items[i]->type != JSON_OBJECT) {
            rc = q_fail(q, "%s takes a non-empty array of filters", op);
            break;
        }
        if (!bson_append_document_begin(&arr, ik, -1, &child)) {
            rc = q_too_large(q);
            break;
        }
        rc = q_filter(q, root, v->u.arr.items[i], &child);
        if (!bson_append_document_end(&arr, &child) && rc == 0)
            rc = q_too_large(q);
    }
    if (!bson_append_array_end(out, &arr) && rc == 0)
        rc = q_too_large(q);
    return rc;
}

static int q_filter(qctx_t *q, const field_t *root, const json_t *filter, bson_t *out)
{
    if (filter->type != JSON_OBJECT)
        return q_fail(q, "a filter must be an object");
    for (size_t i = 0; i < filter->u.obj.len; i++) {
        const char *k = filter->u.obj.keys[i];
        const json_t *v = filter->u.obj.vals[i];
        int rc;
        if (v->type == JSON_CALLBACK)
            continue;
        if (k[0] == '$') {
            if (op_logical(k))
                rc = q_logical(q, root, k, v, out);
            else if (op_allowed(k))
                rc = q_fail(q, "operator %s must be applied to a path", k);
            else
                rc = q_fail(q, "operator %.60s is not allowed", k);
        } else {
            const field_t *f = resolve_path(root, k);
            if (f == NULL)
                return q_fail(q, "unknown path \"%.200s\"", k);
            if (is_operator_object(v)) {
                bson_t child;
                if (!bson_append_document_begin(out, k, -1, &child))
                    return q_too_large(q);
                rc = q_ops(q, f, k, v, &child);
                if (!bson_append_document_end(out, &child) && rc == 0)
                    rc = q_too_large(q);
            } else {
                rc = q_value(q, f, k, k, v, out);
            }
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

bson_t *model_sanitize_filter(const model_t *m, const json_t *query, const model_limits_t *lim,
                              json_t **error)
{
    qctx_t q;
    size_t terms = 0;
    limits_init(&q, lim);
    *error = NULL;
    if (query == NULL || query->type == JSON_NULL)
        return bson_new();
    if (query->type != JSON_OBJECT) {
        *error = error_fmt("InvalidRequest", "%s: query must be an object", m->name);
        return NULL;
    }
    if (q_measure(&q, query, 1, &terms) < 0) {
        *error = q.error;
        return NULL;
    }
    bson_t *out = bson_new();
    if (q_filter(&q, &m->root, query, out) < 0) {
        bson_destroy(out);
        *error = q.error;
        return NULL;
    }
    return out;
}

/* ================================================================ sort, fields */

/* 1 / -1, or Mongoose's words for them. */
static int sort_direction(const json_t *v, int *dir)
{
    if (v->type == JSON_NUMBER && (json_num(v) == 1 || json_num(v) == -1)) {
        *dir = json_num(v) == 1 ? 1 : -1;
        return 0;
    }
    if (v->type == JSON_STRING) {
        const char *s = v->u.str.s;
        if (strcmp(s, "asc") == 0 || strcmp(s, "ascending") == 0) {
            *dir = 1;
            return 0;
        }
        if (strcmp(s, "desc") == 0 || strcmp(s, "descending") == 0) {
            *dir = -1;
            return 0;
        }
    }
    return -1;
}

static int sort_add(qctx_t *q, const model_t *m, bson_t *sort, const char *path, size_t n,
                    int dir)
{
    char key[512];
    bson_iter_t it;
    if (n == 0 || n >= sizeof key)
        return q_fail(q, "unknown path \"%.*s\" in sort", (int)(n > 200 ? 200 : n), path);
    memcpy(key, path, n);
    key[n] = '\0';
    if (resolve_path(&m->root, key) == NULL)
        return q_fail(q, "unknown path \"%.200s\" in sort", key);
    if (bson_iter_init_find(&it, sort, key))
        return 0; /* the first mention decides */
    if (bson_count_keys(sort) >= q->lim.max_query_terms)
        return q_fail(q, "sort has more than %zu paths", q->lim.max_query_terms);
    return bson_append_int32(sort, key, -1, dir) ? 0 : q_too_large(q);
}

/* "-a b": space-separated paths, '-' for descending. */
static int sort_string(qctx_t *q, const model_t *m, bson_t *sort, const char *s)
{
    while (*s) {
        while (is_js_space(*s))
            s++;
        if (!*s)
            break;
        const char *start = s;
        while (*s && !is_js_space(*s))
            s++;
        int dir = 1;
        if (*start == '-') {
            dir = -1;
            start++;
        }
        if (sort_add(q, m, sort, start, (size_t)(s - start), dir) < 0)
            return -1;
    }
    return 0;
}

static int sort_parse(qctx_t *q, const model_t *m, const json_t *v, bson_t *sort)
{
    int dir;
    char txt[160];
    if (v == NULL || v->type == JSON_NULL)
        return 0;
    if (v->type == JSON_STRING)
        return sort_string(q, m, sort, v->u.str.s);
    if (v->type == JSON_ARRAY) {
        for (size_t i = 0; i < v->u.arr.len; i++) {
            const json_t *pair = v->u.arr.items[i];
            if (pair->type != JSON_ARRAY || pair->u.arr.len != 2 ||
                pair->u.arr.items[0]->type != JSON_STRING)
                return q_fail(q, "sort as an array takes [path, direction] pairs");
            const json_t *p = pair->u.arr.items[0];
            if (sort_direction(pair->u.arr.items[1], &dir) < 0) {
                value_text(pair->u.arr.items[1], txt, sizeof txt);
                return q_fail(q, "sort direction \"%s\" for \"%.200s\" is not 1 or -1", txt,
                              p->u.str.s);
            }
            if (sort_add(q, m, sort, p->u.str.s, strlen(p->u.str.s), dir) < 0)
                return -1;
        }
        return 0;
    }
    if (v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->u.obj.len; i++) {
            const char *k = v->u.obj.keys[i];
            if (sort_direction(v->u.obj.vals[i], &dir) < 0) {
                value_text(v->u.obj.vals[i], txt, sizeof txt);
                return q_fail(q, "sort direction \"%s\" for \"%.200s\" is not 1 or -1", txt, k);
            }
            if (sort_add(q, m, sort, k, strlen(k), dir) < 0)
                return -1;
        }
        return 0;
    }
    return q_fail(q, "sort is a string, an array of [path, direction] or an object");
}

int model_sanitize_sorting(const model_t *m, const json_t *sorting, const model_limits_t *lim,
                           model_sorting_t *out, json_t **error)
{
    qctx_t q;
    int64_t n;
    limits_init(&q, lim);
    *error = NULL;
    out->sort = bson_new();
    out->limit = (int64_t)q.lim.max_read_limit;
    out->skip = 0;
    if (sorting == NULL || sorting->type == JSON_NULL)
        return 0;
    if (sorting->type != JSON_OBJECT) {
        q_fail(&q, "sorting must be an object {sort, limit, skip}");
        goto fail;
    }
    for (size_t i = 0; i < sorting->u.obj.len; i++) {
        const char *k = sorting->u.obj.keys[i];
        const json_t *v = sorting->u.obj.vals[i];
        if (strcmp(k, "sort") == 0) {
            if (sort_parse(&q, m, v, out->sort) < 0)
                goto fail;
        } else if (strcmp(k, "limit") == 0) {
            if (v->type == JSON_NULL)
                continue;
            if (json_integer(v, 0, INT64_MAX, &n) < 0) {
                q_fail(&q, "limit must be a non-negative integer");
                goto fail;
            }
            if (n > 0 && (uint64_t)n < q.lim.max_read_limit)
                out->limit = n;
        } else if (strcmp(k, "skip") == 0) {
            if (v->type == JSON_NULL)
                continue;
            if (json_integer(v, 0, INT64_MAX, &n) < 0) {
                q_fail(&q, "skip must be a non-negative integer");
                goto fail;
            }
            out->skip = n;
        } else if (v->type != JSON_CALLBACK) {
            q_fail(&q, "unknown sorting option \"%.60s\" (expected sort, limit, skip)", k);
            goto fail;
        }
    }
    return 0;
fail:
    model_sorting_clear(out);
    *error = q.error;
    return -1;
}

void model_sorting_clear(model_sorting_t *s)
{
    if (s->sort != NULL)
        bson_destroy(s->sort);
    s->sort = NULL;
    s->limit = 0;
    s->skip = 0;
}

typedef struct proj {
    bson_t *doc;
    size_t included, excluded; /* not counting _id */
} proj_t;

static int proj_add(qctx_t *q, const model_t *m, proj_t *p, const char *path, int include)
{
    bson_iter_t it;
    if (path[0] == '$')
        return q_fail(q, "projection operator %.60s is not allowed", path);
    if (resolve_path(&m->root, path) == NULL)
        return q_fail(q, "unknown path \"%.200s\" in fields", path);
    if (strcmp(path, "_id") != 0) {
        *(include ? &p->included : &p->excluded) += 1;
        if (p->included && p->excluded)
            return q_fail(q, "fields cannot mix inclusion and exclusion (except for _id)");
    }
    if (bson_iter_init_find(&it, p->doc, path))
        return 0;
    return bson_append_int32(p->doc, path, -1, include) ? 0 : q_too_large(q);
}

/* One word of the string and array forms: "a" includes, "-a" excludes. */
static int proj_word(qctx_t *q, const model_t *m, proj_t *p, const char *w, size_t n)
{
    char key[512];
    int include = 1;
    if (n > 0 && w[0] == '-') {
        include = 0;
        w++;
        n--;
    }
    if (n == 0 || n >= sizeof key)
        return q_fail(q, "unknown path \"%.*s\" in fields", (int)(n > 200 ? 200 : n), w);
    memcpy(key, w, n);
    key[n] = '\0';
    return proj_add(q, m, p, key, include);
}

bson_t *model_sanitize_fields(const model_t *m, const json_t *fields, json_t **error)
{
    qctx_t q;
    char txt[160];
    proj_t p = {.doc = bson_new()};
    limits_init(&q, NULL);
    *error = NULL;
    if (fields == NULL || fields->type == JSON_NULL)
        return p.doc;
    if (fields->type == JSON_STRING) {
        const char *s = fields->u.str.s;
        while (*s) {
            while (is_js_space(*s))
                s++;
            const char *start = s;
            while (*s && !is_js_space(*s))
                s++;
            if (s > start && proj_word(&q, m, &p, start, (size_t)(s - start)) < 0)
                goto fail;
        }
    } else if (fields->type == JSON_ARRAY) {
        for (size_t i = 0; i < fields->u.arr.len; i++) {
            const json_t *w = fields->u.arr.items[i];
            if (w->type != JSON_STRING) {
                q_fail(&q, "fields as an array takes path names");
                goto fail;
            }
            if (proj_word(&q, m, &p, w->u.str.s, strlen(w->u.str.s)) < 0)
                goto fail;
        }
    } else if (fields->type == JSON_OBJECT) {
        for (size_t i = 0; i < fields->u.obj.len; i++) {
            const char *k = fields->u.obj.keys[i];
            const json_t *v = fields->u.obj.vals[i];
            int include;
            if (v->type == JSON_BOOL) {
                include = v->u.boolean;
            } else if (v->type == JSON_NUMBER && (json_num(v) == 0 || json_num(v) == 1)) {
                include = json_num(v) == 1;
            } else if (is_operator_object(v)) {
                q_fail(&q, "projection operator %.60s is not allowed", v->u.obj.keys[0]);
                goto fail;
            } else {
                value_text(v, txt, sizeof txt);
                q_fail(&q, "fields values must be 0 or 1 (\"%.200s\": %s)", k, txt);
                goto fail;
            }
            if (proj_add(&q, m, &p, k, include) < 0)
                goto fail;
        }
    } else {
        q_fail(&q, "fields is an array of paths, a string of paths or an object {path: 0|1}");
        goto fail;
    }
    return p.doc;
fail:
    bson_destroy(p.doc);
    *error = q.error;
    return NULL;
}

/* ================================================================ pluralization */

/* Mongoose's default collection naming (its legacy pluralize helper, still
 * the default in Mongoose 8): lower-case the name; uncountable words stay;
 * otherwise the FIRST matching rule of the ordered table below rewrites the
 * end of the word. The order matters and is Mongoose's: "index" ends in x,
 * so it becomes "indexes" before the matrix/vertex rule is reached. */
static const char *const uncountables[] = {
    "advice",  "energy", "excretion", "digestion",   "cooperation", "health",  "justice",
    "labour",  "machinery", "equipment", "information", "pollution", "sewage", "paper",
    "money",   "species", "series",   "rain",        "rice",        "fish",    "sheep",
    "moose",   "deer",   "news",      "expertise",   "status",      "media",
};

static int ends_with(const char *s, size_t n, const char *suf)
{
    size_t k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

static int is_vowel_y(char c) { return strchr("aeiouy", c) != NULL; }

/* Returns how many trailing bytes to drop and sets *add to what to append,
 * or -1 when no rule matches. */
static int plural_rule(const char *s, size_t n, const char **add)
{
#define RULE(suffix, drop, text)                                                               \
    if (ends_with(s, n, suffix)) {                                                             \
        *add = text;                                                                           \
        return drop;                                                                           \
    }
    RULE("man", 2, "en")          /* (m)an$ -> men */
    RULE("person", 4, "ople")     /* (pe)rson$ -> people */
    RULE("child", 0, "ren")       /* (child)$ -> children */
    if (n == 2 && memcmp(s, "ox", 2) == 0) {
        *add = "en";
        return 0;
    }
    RULE("axis", 2, "es")         /* (ax|test)is$ */
    RULE("testis", 2, "es")
    RULE("octopus", 2, "i")       /* (octop|vir)us$ */
    RULE("virus", 2, "i")
    RULE("alias", 0, "es")        /* (alias|status)$ */
    RULE("status", 0, "es")
    RULE("bus", 0, "es")          /* (bu)s$ -> buses */
    RULE("buffalo", 0, "es")      /* (buffal|tomat|potat)o$ */
    RULE("tomato", 0, "es")
    RULE("potato", 0, "es")
    if (n >= 3 && ends_with(s, n, "um") && (s[n - 3] == 't' || s[n - 3] == 'i')) {
        *add = "a"; /* ([ti])um$ */
        return 2;
    }
    RULE("sis", 3, "ses")
    if (n >= 3 && ends_with(s, n, "fe") && s[n - 3] != 'f') {
        *add = "ves"; /* ([^f])fe$ */
        return 2;
    }
    if (n >= 2 && s[n - 1] == 'f' && (s[n - 2] == 'l' || s[n - 2] == 'r')) {
        *add = "ves"; /* ([lr])f$ */
        return 1;
    }
    RULE("hive", 0, "s")
    if (n >= 2 && s[n - 1] == 'y' && (!is_vowel_y(s[n - 2]) || ends_with(s, n, "quy"))) {
        *add = "ies"; /* ([^aeiouy]|qu)y$ */
        return 1;
    }
    RULE("x", 0, "es")            /* (x|ch|ss|sh)$ */
    RULE("ch", 0, "es")
    RULE("ss", 0, "es")
    RULE("sh", 0, "es")
#undef RULE
    return -1;
}

char *model_pluralize(const char *name)
{
    size_t n = strlen(name);
    char *s = malloc(n + 8);
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        s[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
    for (size_t i = 0; i < sizeof uncountables / sizeof uncountables[0]; i++)
        if (strcmp(s, uncountables[i]) == 0)
            return s;

    const char *add;
    int drop = plural_rule(s, n, &add);
    if (drop >= 0) {
        strcpy(s + n - (size_t)drop, add);
        return s;
    }
    /* (matr|vert|ind)ix|ex$ : reached only by words that do not end in x,
     * so only the unanchored alternative can match; the global JavaScript
     * replace rewrites every "matrix", "vertix" and "indix" in the word. */
    static const char *const ices[] = {"matrix", "vertix", "indix"};
    if (strstr(s, ices[0]) || strstr(s, ices[1]) || strstr(s, ices[2])) {
        strbuf_t b = {0};
        const char *p = s;
        for (;;) {
            const char *best = NULL;
            size_t blen = 0;
            for (size_t j = 0; j < 3; j++) {
                const char *h = strstr(p, ices[j]);
                if (h != NULL && (best == NULL || h < best)) {
                    best = h;
                    blen = strlen(ices[j]);
                }
            }
            if (best == NULL)
                break;
            sb_append(&b, p, (size_t)(best - p) + blen - 2);
            sb_append(&b, "ices", 4);
            p = best + blen;
        }
        sb_append(&b, p, strlen(p));
        free(s);
        if (b.oom) {
            free(b.s);
            return NULL;
        }
        return b.s;
    }
    /* (m|l)ouse$ (Mongoose writes the class as [m|l], which also admits '|').
     * Its (kn|w|l)ife$ rule is never reached: ([^f])fe$ above takes those. */
    if (n >= 5 && ends_with(s, n, "ouse") && strchr("ml|", s[n - 5]) != NULL) {
        strcpy(s + n - 4, "ice");
        return s;
    }
    if (ends_with(s, n, "quiz")) {
        strcpy(s + n, "zes");
        return s;
    }
    if (strcmp(s, "goose") == 0) {
        strcpy(s, "geese");
        return s;
    }
    if (n > 0 && (s[n - 1] == 's' || !(s[n - 1] >= 'a' && s[n - 1] <= 'z')))
        return s; /* s$ -> s; ([^a-z])$ stays */
    strcpy(s + n, "s");
    return s;
}
