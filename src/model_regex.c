/* model_regex: pattern translation and cost guards (see model_regex.h). */
#include "model_regex.h"

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

int model_regex_too_big(const char *p)
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
int model_regex_translate(const char *src, strbuf_t *out, char *why, size_t whylen)
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
            snprintf(why, whylen, "unsupported escape \\%c%s", e,
                     in_bracket ? " inside [...]" : "");
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
