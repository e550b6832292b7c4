/* Table-driven configuration: values, the config file, the environment and
 * the command line (common/config.h). --help and the dump are in
 * config_print.c. No global state: every call works on the spec and the
 * destination struct it is given. */
#include "common/config.h"
#include "common/config_internal.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef union cfg_val {
    bool b;
    int i;
    uint64_t u;
    float f;
    size_t z;
    char *s;
} cfg_val_t;

static lam_status_t fail(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static lam_status_t fail(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return LAM_ERR_CONFIG;
}

void lam_cfg_quote(char *out, size_t n, const char *text)
{
    size_t o = 0, i = 0;
    assert(n >= 8);
    for (; text[i] && o + 5 < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (o >= 80 && text[i + 1]) /* long texts: the start says enough */
            break;
        if (c < 0x20 || c == 0x7f || c == '\\')
            o += (size_t)snprintf(out + o, n - o, c == '\\' ? "\\\\" : "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    if (text[i] && o + 4 <= n)
        memcpy(out + o, "...", 3), o += 3;
    out[o] = '\0';
}

const lam_cfg_opt_t *lam_cfg_find(const lam_cfg_spec_t *spec, const char *name)
{
    for (int i = 0; i < spec->n_opts; i++)
        if (!strcmp(spec->opts[i].name, name))
            return &spec->opts[i];
    return NULL;
}

void lam_cfg_env_name(const char *name, char *out, size_t n)
{
    size_t o = (size_t)snprintf(out, n, "LAMINA_");
    for (; *name && o + 1 < n; name++)
        out[o++] = *name == '-' ? '_' : (char)toupper((unsigned char)*name);
    out[o] = '\0';
}

/* ---- bounds ------------------------------------------------------------------------ */

/* min == max == 0 in the table: the type's whole range. */
static bool unbounded(const lam_cfg_opt_t *o) { return o->min == 0 && o->max == 0; }

/* A double bound as an unsigned integer, clamped to [0, cap]. */
static uint64_t ubound(double b, uint64_t cap)
{
    if (!(b > 0))
        return 0;
    if (b >= 18446744073709551615.0 || b >= (double)cap)
        return cap;
    return (uint64_t)b;
}

void lam_cfg_bounds_str(const lam_cfg_opt_t *o, char *out, size_t n)
{
    char a[32], b[32];
    switch (o->type) {
    case LAM_CFG_INT:
        snprintf(out, n, "%d to %d", unbounded(o) ? INT_MIN : (int)o->min, unbounded(o) ? INT_MAX : (int)o->max);
        return;
    case LAM_CFG_U64:
        snprintf(out, n, "%llu to %llu", unbounded(o) ? 0ULL : (unsigned long long)ubound(o->min, UINT64_MAX),
                 unbounded(o) ? (unsigned long long)UINT64_MAX : (unsigned long long)ubound(o->max, UINT64_MAX));
        return;
    case LAM_CFG_SIZE:
        lam_cfg_size_str(unbounded(o) ? 0 : (size_t)ubound(o->min, SIZE_MAX), a, sizeof a);
        lam_cfg_size_str(unbounded(o) ? SIZE_MAX : (size_t)ubound(o->max, SIZE_MAX), b, sizeof b);
        snprintf(out, n, "%s to %s", a, b);
        return;
    case LAM_CFG_FLOAT:
        snprintf(out, n, "%g to %g", unbounded(o) ? -FLT_MAX : o->min, unbounded(o) ? FLT_MAX : o->max);
        return;
    default:
        out[0] = '\0';
    }
}

/* ---- values ------------------------------------------------------------------------ */

bool lam_cfg_parse_size(const char *s, size_t *out)
{
    if (*s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return false;
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if (shift && !strcmp(end, "iB"))
        end += 2;
    else if (!strcmp(end, "B"))
        end++;
    if (*end || v > (unsigned long long)(SIZE_MAX >> shift))
        return false;
    *out = (size_t)v << shift;
    return true;
}

void lam_cfg_size_str(size_t v, char *out, size_t n)
{
    static const char units[] = "KMGT";
    int u = -1;
    while (u < 3 && v && !(v & 1023)) /* the largest unit that keeps it exact */
        v >>= 10, u++;
    if (u < 0)
        snprintf(out, n, "%zu", v);
    else
        snprintf(out, n, "%zu%c", v, units[u]);
}

static const char *const g_true[] = {"true", "yes", "on", "1"};
static const char *const g_false[] = {"false", "no", "off", "0"};

/* Digits, then optionally K/M/G/T and B or iB, or just B: the syntax of
 * lam_cfg_parse_size whatever the magnitude. */
static bool size_shaped(const char *s)
{
    size_t d = strspn(s, "0123456789");
    if (!d)
        return false;
    s += d;
    if (*s && strchr("kKmMgGtT", *s)) {
        s++;
        return !*s || !strcmp(s, "B") || !strcmp(s, "iB");
    }
    return !*s || !strcmp(s, "B");
}

/* An optionally negative run of decimal digits and nothing else. */
static bool is_integer(const char *s, bool *negative)
{
    *negative = *s == '-';
    s += *negative;
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static bool parse_value(const lam_cfg_opt_t *o, const char *text, cfg_val_t *v, char *why, size_t n)
{
    char bounds[96];
    lam_cfg_bounds_str(o, bounds, sizeof bounds);
    bool neg;
    switch (o->type) {
    case LAM_CFG_BOOL:
        for (int i = 0; i < 4; i++) {
            if (!strcasecmp(text, g_true[i]))
                return v->b = true, true;
            if (!strcasecmp(text, g_false[i]))
                return v->b = false, true;
        }
        snprintf(why, n, "not a boolean (true/false, yes/no, on/off, 1/0)");
        return false;
    case LAM_CFG_INT: {
        if (!is_integer(text, &neg)) {
            snprintf(why, n, "not an integer");
            return false;
        }
        errno = 0;
        long x = strtol(text, NULL, 10);
        long lo = unbounded(o) ? INT_MIN : (long)o->min, hi = unbounded(o) ? INT_MAX : (long)o->max;
        if (errno == ERANGE || x < lo || x > hi) {
            snprintf(why, n, "out of bounds: must be %s", bounds);
            return false;
        }
        v->i = (int)x;
        return true;
    }
    case LAM_CFG_U64:
    case LAM_CFG_SIZE: {
        bool size = o->type == LAM_CFG_SIZE;
        uint64_t cap = size ? SIZE_MAX : UINT64_MAX;
        uint64_t lo = unbounded(o) ? 0 : ubound(o->min, cap), hi = unbounded(o) ? cap : ubound(o->max, cap);
        uint64_t x;
        if (size) {
            size_t z;
            if (!lam_cfg_parse_size(text, &z)) {
                /* well-formed but negative or too large for size_t: out of bounds */
                bool shaped = size_shaped(text + (text[0] == '-'));
                if (shaped)
                    snprintf(why, n, "out of bounds: must be %s", bounds);
                else
                    snprintf(why, n, "not a size (bytes, with an optional K, M, G or T suffix)");
                return false;
            }
            x = z;
        } else {
            if (!is_integer(text, &neg)) {
                snprintf(why, n, "not an integer");
                return false;
            }
            errno = 0;
            x = neg ? 0 : strtoull(text, NULL, 10);
            if (neg || errno == ERANGE) {
                snprintf(why, n, "out of bounds: must be %s", bounds);
                return false;
            }
        }
        if (x < lo || x > hi) {
            snprintf(why, n, "out of bounds: must be %s", bounds);
            return false;
        }
        if (size)
            v->z = (size_t)x;
        else
            v->u = x;
        return true;
    }
    case LAM_CFG_FLOAT: {
        char *end;
        errno = 0;
        float x = strtof(text, &end);
        if (end == text || *end || isspace((unsigned char)text[0])) {
            snprintf(why, n, "not a number");
            return false;
        }
        double lo = unbounded(o) ? -FLT_MAX : o->min, hi = unbounded(o) ? FLT_MAX : o->max;
        bool range_err = errno == ERANGE && (x > 1.0f || x < -1.0f); /* underflow to ~0 is fine */
        if (range_err || !(x >= lo && x <= hi)) { /* NaN fails too */
            snprintf(why, n, "out of bounds: must be %s", bounds);
            return false;
        }
        v->f = x;
        return true;
    }
    case LAM_CFG_STRING:
        if (strpbrk(text, "\n\r")) { /* a config file could not hold it */
            snprintf(why, n, "contains a line break");
            return false;
        }
        v->s = strdup(text);
        if (!v->s) {
            snprintf(why, n, "out of memory");
            return false;
        }
        return true;
    case LAM_CFG_ENUM: {
        size_t o2 = 0;
        for (int i = 0; o->choices[i]; i++) {
            if (!strcmp(text, o->choices[i]))
                return v->i = i, true;
        }
        o2 = (size_t)snprintf(why, n, "not one of: ");
        for (int i = 0; o->choices[i] && o2 < n; i++)
            o2 += (size_t)snprintf(why + o2, n - o2, "%s%s", i ? ", " : "", o->choices[i]);
        return false;
    }
    }
    snprintf(why, n, "option of unknown type");
    return false;
}

static void store(const lam_cfg_opt_t *o, void *dst, const cfg_val_t *v)
{
    char *f = (char *)dst + o->offset;
    switch (o->type) {
    case LAM_CFG_BOOL: memcpy(f, &v->b, sizeof v->b); break;
    case LAM_CFG_INT:
    case LAM_CFG_ENUM: memcpy(f, &v->i, sizeof v->i); break;
    case LAM_CFG_U64: memcpy(f, &v->u, sizeof v->u); break;
    case LAM_CFG_FLOAT: memcpy(f, &v->f, sizeof v->f); break;
    case LAM_CFG_SIZE: memcpy(f, &v->z, sizeof v->z); break;
    case LAM_CFG_STRING: {
        char *old;
        memcpy(&old, f, sizeof old);
        free(old);
        memcpy(f, &v->s, sizeof v->s);
        break;
    }
    }
}

/* Parses, checks and stores one value. prefix says where the text came
 * from and ends with its own separator ("FILE:3: ", "LAMINA_PORT=",
 * "option --port: "). */
lam_status_t lam_cfg_set_opt(const lam_cfg_opt_t *o, void *dst, const char *text, const char *prefix, char *err,
                             size_t err_len)
{
    cfg_val_t v;
    memset(&v, 0, sizeof v);
    char why[256] = "", q[128];
    bool ok = parse_value(o, text, &v, why, sizeof why);
    if (ok && o->check && !o->check(text, &v, why, sizeof why)) {
        if (o->type == LAM_CFG_STRING)
            free(v.s);
        ok = false;
        if (!why[0])
            snprintf(why, sizeof why, "rejected");
    }
    if (!ok) {
        lam_cfg_quote(q, sizeof q, text);
        return fail(err, err_len, "%s'%s': %s", prefix, q, why);
    }
    store(o, dst, &v);
    return LAM_OK;
}

lam_status_t lam_cfg_set(const lam_cfg_spec_t *spec, void *dst, const char *name, const char *text,
                         const char *source, char *err, size_t err_len)
{
    char prefix[320];
    const lam_cfg_opt_t *o = lam_cfg_find(spec, name);
    if (!o) {
        char q[128];
        lam_cfg_quote(q, sizeof q, name);
        return fail(err, err_len, "%s%sunknown option '%s'", source ? source : "", source ? ": " : "", q);
    }
    if (source)
        snprintf(prefix, sizeof prefix, "%s: ", source);
    else
        snprintf(prefix, sizeof prefix, "option --%s: ", o->name);
    return lam_cfg_set_opt(o, dst, text, prefix, err, err_len);
}

/* ---- the table --------------------------------------------------------------------- */

static const char *const g_builtin[] = {"config", "print-config", "help"};

static bool valid_name(const char *s)
{
    if (!*s || *s == '-')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
            return false;
    return true;
}

/* Programming errors in the table are reported like configuration errors,
 * so that a test (and the first run of a broken build) says which entry. */
static lam_status_t check_table(const lam_cfg_spec_t *spec, char *err, size_t err_len)
{
    const char *prog = spec->prog ? spec->prog : "?";
    if (!spec->prog)
        return fail(err, err_len, "option table: no program name");
    if (spec->n_opts < 0 || (spec->n_opts && !spec->opts))
        return fail(err, err_len, "option table of %s: no options array", prog);
    for (int i = 0; i < spec->n_opts; i++) {
        const lam_cfg_opt_t *o = &spec->opts[i];
        if (!o->name || !valid_name(o->name) || strlen(o->name) > 64)
            return fail(err, err_len, "option table of %s: entry %d: name must be 1-64 of [a-z0-9-]", prog, i);
        for (size_t b = 0; b < sizeof g_builtin / sizeof g_builtin[0]; b++)
            if (!strcmp(o->name, g_builtin[b]))
                return fail(err, err_len, "option table of %s: '%s' is a builtin option", prog, o->name);
        if (o->short_name == 'h' || (o->short_name && !isalnum((unsigned char)o->short_name)))
            return fail(err, err_len, "option table of %s: '%s': bad short name", prog, o->name);
        if ((unsigned)o->type > LAM_CFG_ENUM)
            return fail(err, err_len, "option table of %s: '%s': unknown type", prog, o->name);
        if (o->type == LAM_CFG_ENUM && (!o->choices || !o->choices[0]))
            return fail(err, err_len, "option table of %s: '%s': an enum needs choices", prog, o->name);
        if (!(o->min <= o->max))
            return fail(err, err_len, "option table of %s: '%s': min > max", prog, o->name);
        if ((o->type == LAM_CFG_INT && (o->min < INT_MIN || o->max > INT_MAX)) ||
            (o->type == LAM_CFG_FLOAT && (o->min < -FLT_MAX || o->max > FLT_MAX)))
            return fail(err, err_len, "option table of %s: '%s': bounds outside the type", prog, o->name);
        if (!o->help)
            return fail(err, err_len, "option table of %s: '%s': no help text", prog, o->name);
        for (int j = 0; j < i; j++) {
            const lam_cfg_opt_t *p = &spec->opts[j];
            if (!strcmp(o->name, p->name))
                return fail(err, err_len, "option table of %s: '%s' appears twice", prog, o->name);
            if (o->short_name && o->short_name == p->short_name)
                return fail(err, err_len, "option table of %s: '%s' and '%s' share -%c", prog, p->name, o->name,
                            o->short_name);
            /* --no-X negates a boolean X */
            const lam_cfg_opt_t *b = o->type == LAM_CFG_BOOL ? o : p, *other = b == o ? p : o;
            if (b->type == LAM_CFG_BOOL && !strncmp(other->name, "no-", 3) && !strcmp(other->name + 3, b->name))
                return fail(err, err_len, "option table of %s: '%s' clashes with --no-%s", prog, other->name,
                            b->name);
        }
    }
    return LAM_OK;
}

lam_status_t lam_cfg_set_defaults(const lam_cfg_spec_t *spec, void *dst, char *err, size_t err_len)
{
    lam_status_t st = check_table(spec, err, err_len);
    if (st != LAM_OK)
        return st;
    for (int i = 0; i < spec->n_opts; i++) {
        const lam_cfg_opt_t *o = &spec->opts[i];
        cfg_val_t zero;
        memset(&zero, 0, sizeof zero);
        if (!o->def) {
            store(o, dst, &zero);
            continue;
        }
        char prefix[160];
        snprintf(prefix, sizeof prefix, "option table of %s: default of '%s': ", spec->prog ? spec->prog : "?",
                 o->name);
        if ((st = lam_cfg_set_opt(o, dst, o->def, prefix, err, err_len)) != LAM_OK)
            return st;
    }
    return LAM_OK;
}

void lam_cfg_free(const lam_cfg_spec_t *spec, void *dst)
{
    for (int i = 0; i < spec->n_opts; i++) {
        if (spec->opts[i].type != LAM_CFG_STRING)
            continue;
        char **f = (char **)((char *)dst + spec->opts[i].offset);
        free(*f);
        *f = NULL;
    }
}

/* ---- the environment --------------------------------------------------------------- */

static lam_status_t load_env(const lam_cfg_spec_t *spec, void *dst, char *err, size_t err_len)
{
    for (int i = 0; i < spec->n_opts; i++) {
        char env[96], prefix[100];
        lam_cfg_env_name(spec->opts[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (!v || !*v) /* empty: unset (an EnvironmentFile line "LAMINA_X=") */
            continue;
        snprintf(prefix, sizeof prefix, "%s=", env);
        lam_status_t st = lam_cfg_set_opt(&spec->opts[i], dst, v, prefix, err, err_len);
        if (st != LAM_OK)
            return st;
    }
    return LAM_OK;
}

/* ---- the command line -------------------------------------------------------------- */

enum arg_kind { ARG_NONE, ARG_OPT, ARG_CONFIG, ARG_PRINT, ARG_HELP, ARG_ERROR };

typedef struct cli_arg {
    const lam_cfg_opt_t *opt;
    const char *value;   /* ARG_OPT, ARG_CONFIG */
    char label[96];      /* "option --port" or "option -p (--port)" */
} cli_arg_t;

/* Reads the argument at argv[*i] (and its value, which may be the next
 * one); advances *i past them. */
static enum arg_kind next_arg(const lam_cfg_spec_t *spec, int argc, char **argv, int *i, cli_arg_t *a, char *err,
                              size_t err_len)
{
    const char *s = argv[(*i)++];
    char q[128];
    memset(a, 0, sizeof *a);
    if (s[0] != '-' || !s[1] || !strcmp(s, "--")) {
        if (!strcmp(s, "--")) {
            if (*i >= argc)
                return ARG_NONE; /* a final "--" */
            s = argv[(*i)++];
        }
        lam_cfg_quote(q, sizeof q, s);
        fail(err, err_len, "unexpected argument '%s'", q);
        return ARG_ERROR;
    }
    if (s[1] != '-') { /* -x, -xVALUE, -x VALUE */
        if (s[1] == 'h' && !s[2])
            return ARG_HELP;
        const lam_cfg_opt_t *o = NULL;
        for (int k = 0; k < spec->n_opts && !o; k++)
            if (spec->opts[k].short_name && spec->opts[k].short_name == s[1])
                o = &spec->opts[k];
        if (!o) {
            lam_cfg_quote(q, sizeof q, s);
            fail(err, err_len, "unknown option '%s' (see --help)", q);
            return ARG_ERROR;
        }
        a->opt = o;
        snprintf(a->label, sizeof a->label, "option -%c (--%s)", s[1], o->name);
        if (o->type == LAM_CFG_BOOL) {
            if (s[2]) {
                fail(err, err_len, "%s takes no value", a->label);
                return ARG_ERROR;
            }
            a->value = "true";
        } else if (s[2]) {
            a->value = s + 2;
        } else if (*i < argc) {
            a->value = argv[(*i)++];
        } else {
            fail(err, err_len, "%s needs a value", a->label);
            return ARG_ERROR;
        }
        return ARG_OPT;
    }
    /* --name, --name=VALUE, --name VALUE, --no-name */
    char name[80];
    const char *eq = strchr(s + 2, '=');
    size_t len = eq ? (size_t)(eq - (s + 2)) : strlen(s + 2);
    if (len >= sizeof name) {
        lam_cfg_quote(q, sizeof q, s);
        fail(err, err_len, "unknown option '%s' (see --help)", q);
        return ARG_ERROR;
    }
    memcpy(name, s + 2, len);
    name[len] = '\0';
    if (!strcmp(name, "help") || !strcmp(name, "print-config")) {
        if (eq) {
            fail(err, err_len, "option --%s takes no value", name);
            return ARG_ERROR;
        }
        return name[0] == 'h' ? ARG_HELP : ARG_PRINT;
    }
    bool negated = false;
    const lam_cfg_opt_t *o = lam_cfg_find(spec, name);
    if (!o && !strncmp(name, "no-", 3)) {
        o = lam_cfg_find(spec, name + 3);
        if (o && o->type != LAM_CFG_BOOL)
            o = NULL;
        negated = o != NULL;
    }
    bool config = !o && !strcmp(name, "config");
    if (!o && !config) {
        char hint[128] = "";
        const char *near = lam_cfg_nearest(spec, name);
        if (near)
            snprintf(hint, sizeof hint, "; did you mean --%s?", near);
        lam_cfg_quote(q, sizeof q, s);
        fail(err, err_len, "unknown option '%s' (see --help%s)", q, hint);
        return ARG_ERROR;
    }
    a->opt = o;
    snprintf(a->label, sizeof a->label, "option --%s", name);
    if (o && o->type == LAM_CFG_BOOL) {
        if (negated && eq) {
            fail(err, err_len, "%s takes no value", a->label);
            return ARG_ERROR;
        }
        a->value = eq ? eq + 1 : negated ? "false" : "true";
        return ARG_OPT;
    }
    if (eq) {
        a->value = eq + 1;
    } else if (*i < argc) {
        a->value = argv[(*i)++];
    } else {
        fail(err, err_len, "%s needs a value", a->label);
        return ARG_ERROR;
    }
    return config ? ARG_CONFIG : ARG_OPT;
}

lam_status_t lam_cfg_load(const lam_cfg_spec_t *spec, void *dst, int argc, char **argv, bool *help_shown,
                          char *err, size_t err_len)
{
    lam_status_t st = lam_cfg_set_defaults(spec, dst, err, err_len);
    if (help_shown)
        *help_shown = false;
    if (st != LAM_OK)
        return st;
    /* first pass: the shape of the command line, --help, --config, --print-config */
    const char *config = NULL;
    bool print = false;
    cli_arg_t a;
    for (int i = 1; i < argc;) {
        enum arg_kind k = next_arg(spec, argc, argv, &i, &a, err, err_len);
        if (k == ARG_ERROR)
            return LAM_ERR_CONFIG;
        if (k == ARG_HELP) {
            lam_cfg_print_help(spec, stdout);
            if (help_shown)
                *help_shown = true;
            return LAM_OK;
        }
        if (k == ARG_CONFIG) {
            if (!*a.value)
                return fail(err, err_len, "option --config: '': an empty path");
            config = a.value;
        }
        print |= k == ARG_PRINT;
    }
    if (!config && getenv("LAMINA_CONFIG") && *getenv("LAMINA_CONFIG"))
        config = getenv("LAMINA_CONFIG");
    if (config && (st = lam_cfg_load_file(spec, dst, config, err, err_len)) != LAM_OK)
        return st;
    if ((st = load_env(spec, dst, err, err_len)) != LAM_OK)
        return st;
    for (int i = 1; i < argc;) {
        if (next_arg(spec, argc, argv, &i, &a, err, err_len) != ARG_OPT)
            continue;
        char prefix[100];
        snprintf(prefix, sizeof prefix, "%s: ", a.label);
        if ((st = lam_cfg_set_opt(a.opt, dst, a.value, prefix, err, err_len)) != LAM_OK)
            return st;
    }
    if (print) {
        lam_cfg_dump(spec, dst, stdout);
        fflush(stdout);
        if (help_shown)
            *help_shown = true;
    }
    return LAM_OK;
}
