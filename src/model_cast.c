/* model_cast: JavaScript-compatible casts, dates and numbers, JSON to BSON
 * and BSON to JSON (see model_cast.h). */
#include "model_cast.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <time.h>

static const char *const type_names[] = {
    [FT_STRING] = "String", [FT_NUMBER] = "Number",     [FT_BOOLEAN] = "Boolean",
    [FT_DATE] = "Date",     [FT_OBJECTID] = "ObjectId", [FT_MIXED] = "Mixed",
    [FT_ARRAY] = "Array",   [FT_NESTED] = "Object",
};

const char *model_cast_type_name(ftype_t t) { return type_names[t]; }

/* A short, printable rendering of a client value for messages: strings as
 * they are, anything else as JSON; cut at about 100 bytes on a UTF-8
 * boundary so an error never echoes a whole megabyte back. */
void model_cast_value_text(const json_t *v, char *buf, size_t n)
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

/* Length as JavaScript's String.prototype.length counts it (UTF-16 units). */
size_t model_cast_utf16_length(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xC0) != 0x80)
            n += c >= 0xF0 ? 2 : 1;
    }
    return n;
}

int model_cast_is_space(char c)
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
    while (len > 0 && model_cast_is_space(*s)) {
        s++;
        len--;
    }
    while (len > 0 && model_cast_is_space(s[len - 1]))
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
void model_cast_format_number(double d, char *out, size_t n)
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

double model_cast_num(const json_t *v) { return v->u.num.is_int ? (double)v->u.num.i : v->u.num.d; }

/* An integral JSON number in [lo, hi]; 0 or -1. */
int model_cast_integer(const json_t *v, int64_t lo, int64_t hi, int64_t *out)
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
            if (digits_at(s, len, &i, 2, &day) < 0 || day < 1 || day > days_in_month(year, mon))
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
void model_cast_format_date(int64_t ms, char *out, size_t n)
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

int64_t model_cast_now_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
        return (int64_t)time(NULL) * 1000;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ================================================================ casting */

static int cast_number(const json_t *v, cval_t *out)
{
    double d;
    switch (v->type) {
    case JSON_NULL:
        out->kind = CV_NULL;
        return 0;
    case JSON_NUMBER:
        d = model_cast_num(v);
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
        double d = model_cast_num(v);
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
            model_cast_format_number(model_cast_num(v), out->buf, sizeof out->buf);
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
int model_cast_date(const json_t *v, cval_t *out)
{
    double d;
    out->kind = CV_DATE;
    switch (v->type) {
    case JSON_NULL:
        out->kind = CV_NULL;
        return 0;
    case JSON_NUMBER:
        d = model_cast_num(v);
        break;
    case JSON_STRING:
        if (v->u.str.len == 0) {
            out->kind = CV_NULL;
            return 0;
        }
        if (js_string_to_number(v->u.str.s, v->u.str.len, &d) == 0 && (d >= 275761 || d < -271820))
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

int model_cast_scalar(ftype_t t, const json_t *v, cval_t *out)
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
        return model_cast_date(v, out);
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

bool model_cast_append_value(bson_t *b, const char *key, const cval_t *c)
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
int model_cast_safe_key(const char *k) { return k[0] != '$' && strchr(k, '.') == NULL; }

/* Copy client JSON into BSON as is (Mixed paths). Callbacks are dropped as
 * JSON.stringify drops functions. Returns 0; -1 with *badkey pointing at a
 * refused field name ('$' prefix or '.'), or with *badkey NULL when the
 * document grew too large. */
int model_cast_append_json(bson_t *b, const char *key, const json_t *v, const char **badkey)
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
        if (!isfinite(model_cast_num(v)))
            return bson_append_null(b, key, -1) ? 0 : -1;
        return append_number(b, key, model_cast_num(v)) ? 0 : -1;
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
            rc = model_cast_append_json(&child, ik, v->u.arr.items[i], badkey);
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
            if (!model_cast_safe_key(v->u.obj.keys[i])) {
                *badkey = v->u.obj.keys[i];
                rc = -1;
                break;
            }
            rc = model_cast_append_json(&child, v->u.obj.keys[i], v->u.obj.vals[i], badkey);
        }
        if (!bson_append_document_end(b, &child))
            rc = -1;
        return rc;
    }
    }
    return -1;
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

json_t *model_cast_bson_iter(bson_iter_t *it);

static json_t *container_to_json(bson_iter_t *child, int array)
{
    json_t *j = array ? json_array() : json_object();
    if (j == NULL)
        return NULL;
    while (bson_iter_next(child)) {
        json_t *v = model_cast_bson_iter(child);
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
json_t *model_cast_bson_iter(bson_iter_t *it)
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
        model_cast_format_date(bson_iter_date_time(it), buf, sizeof buf);
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
