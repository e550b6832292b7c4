/* Hardware catalog: a line-oriented text file.
 *
 *   # comment
 *   [defaults]                      global efficiency factors
 *   eff_compute = 0.6 | why | date
 *   [h100]                          one section per device id
 *   name  = NVIDIA H100 SXM5 80GB
 *   kind  = gpu                     gpu | cpu
 *   flops = 989.4T | source | date  value [| source [| date]]
 *
 * Numbers take SI suffixes (k M G T P, Ki Mi Gi Ti, m u n). Loading a second
 * file overlays the first: a known id overrides only the keys it names. Every
 * error names file:line and quotes the offending text.
 */
#include "tools/estimate/estimate.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct field_info {
    const char *name;
    bool required;
    double lo, hi; /* valid range, lo exclusive */
} field_info_t;

static const field_info_t fields[LAM_EST_F_COUNT] = {
    [LAM_EST_F_FLOPS] = {"flops", true, 0, 1e18},
    [LAM_EST_F_MEM_BW] = {"mem_bw", true, 0, 1e15},
    [LAM_EST_F_MEM_CAP] = {"mem_cap", true, 0, 1e15},
    [LAM_EST_F_NET_BW] = {"net_bw", true, 0, 1e14},
    [LAM_EST_F_NET_LAT] = {"net_lat", true, 0, 1},
    [LAM_EST_F_LINK_BW] = {"link_bw", false, 0, 1e14},
    [LAM_EST_F_LINK_LAT] = {"link_lat", false, 0, 1},
    [LAM_EST_F_POWER] = {"power", true, 0, 1e6},
    [LAM_EST_F_PRICE] = {"price", true, 0, 1e5},
    [LAM_EST_F_EFF_COMPUTE] = {"eff_compute", false, 0, 1},
    [LAM_EST_F_EFF_MEM] = {"eff_mem", false, 0, 1},
    [LAM_EST_F_EFF_ATTN] = {"eff_attn", false, 0, 1},
    [LAM_EST_F_EFF_NET] = {"eff_net", false, 0, 1},
};

/* Built-in defaults, stated in README.md; a catalog [defaults] overrides. */
static const struct {
    const char *name;
    double def; /* NaN = unset */
    double lo, hi;
    const char *why;
} factors[LAM_EST_FACTOR_COUNT] = {
    [LAM_EST_EFF_COMPUTE] = {"eff_compute", 0.60, 0, 1,
                             "built-in default: typical GEMM MFU in LLM serving"},
    [LAM_EST_EFF_MEM] = {"eff_mem", 0.80, 0, 1,
                         "built-in default: achievable share of streaming bandwidth"},
    [LAM_EST_EFF_ATTN] = {"eff_attn", 0.70, 0, 1,
                          "built-in default: paged decode attention vs streaming"},
    [LAM_EST_EFF_NET] = {"eff_net", 0.80, 0, 1, "built-in default: goodput share of link rate"},
    [LAM_EST_MEM_UTIL] = {"mem_util", 0.90, 0, 1,
                          "built-in default: rest kept for activations and runtime"},
    [LAM_EST_RTT] = {"rtt", NAN, 0, 1, "unset: sum of both sides' net_lat"},
};

const char *lam_est_field_name(lam_est_field_t f)
{
    return (f >= 0 && f < LAM_EST_F_COUNT) ? fields[f].name : "?";
}

const char *lam_est_factor_name(lam_est_factor_t f)
{
    return (f >= 0 && f < LAM_EST_FACTOR_COUNT) ? factors[f].name : "?";
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void lam_est_catalog_init(lam_est_catalog_t *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < LAM_EST_FACTOR_COUNT; i++) {
        c->fac[i].v = factors[i].def;
        c->fac[i].set = !isnan(factors[i].def);
        snprintf(c->fac[i].src, sizeof c->fac[i].src, "%s", factors[i].why);
    }
}

void lam_est_catalog_free(lam_est_catalog_t *c)
{
    free(c->dev);
    memset(c, 0, sizeof *c);
}

int lam_est_catalog_find(const lam_est_catalog_t *c, const char *id)
{
    for (int i = 0; i < c->n_dev; i++)
        if (!strcasecmp(c->dev[i].id, id))
            return i;
    return -1;
}

double lam_est_eff(const lam_est_catalog_t *c, const lam_est_device_t *d, lam_est_factor_t f)
{
    static const lam_est_field_t own[] = {
        [LAM_EST_EFF_COMPUTE] = LAM_EST_F_EFF_COMPUTE, [LAM_EST_EFF_MEM] = LAM_EST_F_EFF_MEM,
        [LAM_EST_EFF_ATTN] = LAM_EST_F_EFF_ATTN, [LAM_EST_EFF_NET] = LAM_EST_F_EFF_NET};
    if (d && f <= LAM_EST_EFF_NET && d->f[own[f]].set)
        return d->f[own[f]].v;
    return c->fac[f].v;
}

bool lam_est_parse_number(const char *s, double *out)
{
    static const struct { const char *suf; double mul; } sufs[] = {
        {"Ki", 1024.0}, {"Mi", 1048576.0}, {"Gi", 1073741824.0}, {"Ti", 1099511627776.0},
        {"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15},
        {"m", 1e-3}, {"u", 1e-6}, {"n", 1e-9}, {"", 1.0},
    };
    if (!s || !*s || isspace((unsigned char)*s))
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno == ERANGE || !isfinite(v))
        return false;
    for (size_t i = 0; i < sizeof sufs / sizeof sufs[0]; i++) {
        if (!strcmp(end, sufs[i].suf)) {
            *out = v * sufs[i].mul;
            return true;
        }
    }
    return false;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int field_index(const char *key)
{
    for (int i = 0; i < LAM_EST_F_COUNT; i++)
        if (!strcmp(fields[i].name, key))
            return i;
    return -1;
}

static int factor_index(const char *key)
{
    for (int i = 0; i < LAM_EST_FACTOR_COUNT; i++)
        if (!strcmp(factors[i].name, key))
            return i;
    return -1;
}

static lam_est_device_t *add_device(lam_est_catalog_t *c, const char *id)
{
    if (c->n_dev == c->cap_dev) {
        int ncap = c->cap_dev ? c->cap_dev * 2 : 16;
        lam_est_device_t *nd = realloc(c->dev, (size_t)ncap * sizeof *nd);
        if (!nd)
            return NULL;
        c->dev = nd;
        c->cap_dev = ncap;
    }
    lam_est_device_t *d = &c->dev[c->n_dev++];
    memset(d, 0, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", id);
    return d;
}

/* Sets a numeric figure after checking its range; `where` names the origin. */
static lam_status_t set_value(lam_est_fig_t *fig, const char *name, const char *val, double lo,
                              double hi, const char *src, const char *date, const char *where,
                              const char *text, char *err, size_t errlen)
{
    double v;
    if (!lam_est_parse_number(val, &v)) {
        seterr(err, errlen, "%s: '%s' is not a number: '%s'", where, name, text);
        return LAM_ERR_CONFIG;
    }
    if (!(v > lo) || v > hi) {
        seterr(err, errlen, "%s: '%s' must be in (%g, %g], got %g: '%s'", where, name, lo, hi, v,
               text);
        return LAM_ERR_CONFIG;
    }
    fig->v = v;
    fig->set = true;
    snprintf(fig->src, sizeof fig->src, "%s", src && *src ? src : where);
    snprintf(fig->date, sizeof fig->date, "%s", date ? date : "");
    return LAM_OK;
}

static lam_status_t check_complete(const lam_est_catalog_t *c, int first_new, char *err,
                                   size_t errlen)
{
    for (int i = first_new; i < c->n_dev; i++) {
        const lam_est_device_t *d = &c->dev[i];
        if (!d->kind_set) {
            seterr(err, errlen, "%s: device '%s' lacks required key 'kind' (gpu or cpu)",
                   d->origin, d->id);
            return LAM_ERR_CONFIG;
        }
        for (int f = 0; f < LAM_EST_F_COUNT; f++) {
            if (fields[f].required && !d->f[f].set) {
                seterr(err, errlen, "%s: device '%s' lacks required key '%s'", d->origin, d->id,
                       fields[f].name);
                return LAM_ERR_CONFIG;
            }
        }
    }
    return LAM_OK;
}

static lam_status_t parse_line(lam_est_catalog_t *c, char *line, const char *where,
                               lam_est_device_t **cur, bool *in_defaults, char *err,
                               size_t errlen)
{
    char text[256];
    snprintf(text, sizeof text, "%s", line);
    if (*line == '[') {
        char *close = strchr(line, ']');
        if (!close || *trim(close + 1)) {
            seterr(err, errlen, "%s: bad section header: '%s'", where, text);
            return LAM_ERR_CONFIG;
        }
        *close = '\0';
        char *id = trim(line + 1);
        size_t n = strlen(id);
        if (n == 0 || n >= sizeof((*cur)->id)) {
            seterr(err, errlen, "%s: section name must be 1-31 characters: '%s'", where, text);
            return LAM_ERR_CONFIG;
        }
        for (const char *p = id; *p; p++) {
            if (!isalnum((unsigned char)*p) && !strchr("-_.", *p)) {
                seterr(err, errlen, "%s: bad character '%c' in device id: '%s'", where, *p, text);
                return LAM_ERR_CONFIG;
            }
        }
        *in_defaults = !strcmp(id, "defaults");
        *cur = NULL;
        if (*in_defaults)
            return LAM_OK;
        int idx = lam_est_catalog_find(c, id);
        *cur = idx >= 0 ? &c->dev[idx] : add_device(c, id);
        if (!*cur)
            return LAM_ERR_NO_MEMORY;
        if (idx < 0)
            snprintf((*cur)->origin, sizeof (*cur)->origin, "%s", where);
        return LAM_OK;
    }
    char *eq = strchr(line, '=');
    if (!eq) {
        seterr(err, errlen, "%s: expected 'key = value' or '[section]': '%s'", where, text);
        return LAM_ERR_CONFIG;
    }
    *eq = '\0';
    char *key = trim(line), *val = eq + 1, *src = NULL, *date = NULL;
    char *bar = strchr(val, '|');
    if (bar) {
        *bar = '\0';
        src = bar + 1;
        if ((bar = strchr(src, '|'))) {
            *bar = '\0';
            date = trim(bar + 1);
        }
        src = trim(src);
    }
    val = trim(val);
    if (!*cur && !*in_defaults) {
        seterr(err, errlen, "%s: key outside any [section]: '%s'", where, text);
        return LAM_ERR_CONFIG;
    }
    if (*in_defaults) {
        int fi = factor_index(key);
        if (fi < 0) {
            seterr(err, errlen, "%s: unknown factor '%s' in [defaults]: '%s'", where, key, text);
            return LAM_ERR_CONFIG;
        }
        return set_value(&c->fac[fi], key, val, factors[fi].lo, factors[fi].hi, src, date, where,
                         text, err, errlen);
    }
    lam_est_device_t *d = *cur;
    if (!strcmp(key, "name")) {
        snprintf(d->name, sizeof d->name, "%s", val);
        return LAM_OK;
    }
    if (!strcmp(key, "kind")) {
        if (strcmp(val, "gpu") && strcmp(val, "cpu")) {
            seterr(err, errlen, "%s: kind must be 'gpu' or 'cpu': '%s'", where, text);
            return LAM_ERR_CONFIG;
        }
        d->kind = !strcmp(val, "gpu") ? LAM_EST_GPU : LAM_EST_CPU;
        d->kind_set = true;
        return LAM_OK;
    }
    int fi = field_index(key);
    if (fi < 0) {
        seterr(err, errlen, "%s: unknown key '%s': '%s'", where, key, text);
        return LAM_ERR_CONFIG;
    }
    return set_value(&d->f[fi], key, val, fields[fi].lo, fields[fi].hi, src, date, where, text,
                     err, errlen);
}

lam_status_t lam_est_catalog_parse(lam_est_catalog_t *c, const char *text, const char *origin,
                                   char *err, size_t errlen)
{
    int first_new = c->n_dev;
    lam_est_device_t *cur = NULL;
    bool in_defaults = false;
    int lineno = 0;
    const char *p = text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        lineno++;
        char buf[1024], where[300];
        snprintf(where, sizeof where, "%s:%d", origin, lineno);
        if (len >= sizeof buf) {
            seterr(err, errlen, "%s: line longer than %zu characters", where, sizeof buf - 1);
            return LAM_ERR_CONFIG;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        p += len + (eol ? 1 : 0);
        char *hash = strchr(buf, '#');
        if (hash)
            *hash = '\0';
        char *line = trim(buf);
        if (!*line)
            continue;
        /* c->dev only moves in add_device(), which also resets cur */
        lam_status_t st = parse_line(c, line, where, &cur, &in_defaults, err, errlen);
        if (st != LAM_OK)
            return st;
    }
    return check_complete(c, first_new, err, errlen);
}

lam_status_t lam_est_catalog_load(lam_est_catalog_t *c, const char *path, char *err,
                                  size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        seterr(err, errlen, "%s: cannot open catalog: %s", path, strerror(errno));
        return LAM_ERR_IO;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (n < cap - 1)
            break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (!buf)
        return LAM_ERR_NO_MEMORY;
    buf[n] = '\0';
    if (strlen(buf) != n) {
        free(buf);
        seterr(err, errlen, "%s: contains a NUL byte: not a text catalog", path);
        return LAM_ERR_CONFIG;
    }
    lam_status_t st = lam_est_catalog_parse(c, buf, path, err, errlen);
    free(buf);
    return st;
}

lam_status_t lam_est_catalog_set(lam_est_catalog_t *c, const char *assignment, char *err,
                                 size_t errlen)
{
    char buf[256], where[300];
    snprintf(buf, sizeof buf, "%s", assignment);
    snprintf(where, sizeof where, "--set %s", assignment);
    char *eq = strchr(buf, '=');
    if (!eq) {
        seterr(err, errlen, "%s: expected KEY=VALUE (device.key=value or factor=value)", where);
        return LAM_ERR_INVALID_ARG;
    }
    *eq = '\0';
    char *key = trim(buf), *val = trim(eq + 1);
    char *dot = strchr(key, '.');
    if (!dot) {
        int fi = factor_index(key);
        if (fi < 0) {
            seterr(err, errlen, "%s: unknown factor '%s'", where, key);
            return LAM_ERR_INVALID_ARG;
        }
        return set_value(&c->fac[fi], key, val, factors[fi].lo, factors[fi].hi, "--set", "",
                         where, assignment, err, errlen);
    }
    *dot = '\0';
    int di = lam_est_catalog_find(c, key);
    if (di < 0) {
        seterr(err, errlen, "%s: unknown device '%s'", where, key);
        return LAM_ERR_NOT_FOUND;
    }
    int fi = field_index(dot + 1);
    if (fi < 0) {
        seterr(err, errlen, "%s: unknown device key '%s'", where, dot + 1);
        return LAM_ERR_INVALID_ARG;
    }
    return set_value(&c->dev[di].f[fi], dot + 1, val, fields[fi].lo, fields[fi].hi, "--set", "",
                     where, assignment, err, errlen);
}
