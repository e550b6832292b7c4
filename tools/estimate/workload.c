/* Workload (length distributions, SLOs, dtypes) and configuration specs. */
#include "tools/estimate/estimate.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

void lam_est_dist_fixed(lam_est_dist_t *d, double v)
{
    memset(d, 0, sizeof *d);
    d->n = 1;
    d->v[0] = v;
    d->w[0] = 1;
}

double lam_est_dist_mean(const lam_est_dist_t *d)
{
    double s = 0, w = 0;
    for (int i = 0; i < d->n; i++) {
        s += d->v[i] * d->w[i];
        w += d->w[i];
    }
    return w > 0 ? s / w : 0;
}

double lam_est_dist_moment2(const lam_est_dist_t *d)
{
    double s = 0, w = 0;
    for (int i = 0; i < d->n; i++) {
        s += d->v[i] * d->v[i] * d->w[i];
        w += d->w[i];
    }
    return w > 0 ? s / w : 0;
}

/* A token count: an integer in [1, 10^7]. */
static bool parse_len(const char *s, char **end, double *out)
{
    errno = 0;
    long long v = strtoll(s, end, 10);
    if (*end == s || errno || v < 1 || v > 10000000)
        return false;
    *out = (double)v;
    return true;
}

lam_status_t lam_est_dist_parse(const char *s, lam_est_dist_t *out, char *err, size_t errlen)
{
    lam_est_dist_t d;
    memset(&d, 0, sizeof d);
    char *end;
    if (!strncmp(s, "uniform:", 8)) {
        double lo, hi;
        if (!parse_len(s + 8, &end, &lo) || *end != ':' || !parse_len(end + 1, &end, &hi) ||
            *end || hi < lo) {
            seterr(err, errlen, "bad length distribution '%s': expected uniform:LO:HI with "
                   "1 <= LO <= HI", s);
            return LAM_ERR_INVALID_ARG;
        }
        /* integer-uniform, discretised to at most LAM_EST_DIST_MAX equal-weight points */
        int n = (int)(hi - lo + 1) < LAM_EST_DIST_MAX ? (int)(hi - lo + 1) : LAM_EST_DIST_MAX;
        for (int i = 0; i < n; i++) {
            d.v[i] = n == 1 ? lo : lo + (hi - lo) * i / (n - 1);
            d.w[i] = 1;
        }
        d.n = n;
    } else if (!strncmp(s, "list:", 5)) {
        const char *p = s + 5;
        for (;;) {
            if (d.n == LAM_EST_DIST_MAX || !parse_len(p, &end, &d.v[d.n])) {
                seterr(err, errlen, "bad length distribution '%s': expected list:A,B,... of up "
                       "to %d positive integers", s, LAM_EST_DIST_MAX);
                return LAM_ERR_INVALID_ARG;
            }
            d.w[d.n++] = 1;
            if (!*end)
                break;
            if (*end != ',') {
                seterr(err, errlen, "bad length distribution '%s': unexpected '%c'", s, *end);
                return LAM_ERR_INVALID_ARG;
            }
            p = end + 1;
        }
    } else {
        double v;
        if (!parse_len(s, &end, &v) || *end) {
            seterr(err, errlen, "bad length '%s': expected a positive integer, uniform:LO:HI "
                   "or list:A,B,...", s);
            return LAM_ERR_INVALID_ARG;
        }
        lam_est_dist_fixed(&d, v);
    }
    *out = d;
    return LAM_OK;
}

void lam_est_workload_default(lam_est_workload_t *w)
{
    memset(w, 0, sizeof *w);
    lam_est_dist_fixed(&w->prompt, 1024);
    lam_est_dist_fixed(&w->output, 256);
    w->w_bytes = 2;
    w->kv_bytes = 2;
    w->act_bytes = 2;
    w->pingpong = true;
}

double lam_est_live_context(const lam_est_workload_t *w)
{
    double eo = lam_est_dist_mean(&w->output);
    return lam_est_dist_mean(&w->prompt) + (lam_est_dist_moment2(&w->output) + eo) / (2 * eo);
}

/* "NxID" -> count and device index. */
static lam_status_t parse_part(const lam_est_catalog_t *c, const char *part, const char *spec,
                               int *dev, int *n, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long v = strtol(part, &end, 10);
    if (end == part || (*end != 'x' && *end != 'X') || errno) {
        seterr(err, errlen, "bad configuration '%s': '%s' should be COUNTxDEVICE, e.g. 2xh100",
               spec, part);
        return LAM_ERR_INVALID_ARG;
    }
    if (v < 1 || v > 1024) {
        seterr(err, errlen, "bad configuration '%s': device count %ld must be 1..1024", spec, v);
        return LAM_ERR_INVALID_ARG;
    }
    int idx = lam_est_catalog_find(c, end + 1);
    if (idx < 0) {
        char list[400] = "";
        for (int i = 0; i < c->n_dev; i++) {
            strncat(list, c->dev[i].id, sizeof list - strlen(list) - 3);
            if (i + 1 < c->n_dev)
                strncat(list, ", ", sizeof list - strlen(list) - 1);
        }
        seterr(err, errlen, "bad configuration '%s': unknown device '%s' (catalog has: %s)", spec,
               end + 1, list);
        return LAM_ERR_NOT_FOUND;
    }
    *dev = idx;
    *n = (int)v;
    return LAM_OK;
}

void lam_est_config_label(const lam_est_catalog_t *c, lam_est_config_t *cfg)
{
    const char *a = c->dev[cfg->dev_a].id;
    const char *b = cfg->mode != LAM_EST_HOMO ? c->dev[cfg->dev_b].id : "";
    switch (cfg->mode) {
    case LAM_EST_HOMO:
        snprintf(cfg->label, sizeof cfg->label, "%dx%s", cfg->n_a, a);
        break;
    case LAM_EST_OFFLOAD:
        snprintf(cfg->label, sizeof cfg->label, "%dx%s+%dx%s", cfg->n_a, a, cfg->n_b, b);
        break;
    case LAM_EST_SPLIT:
        snprintf(cfg->label, sizeof cfg->label, "pd:%dx%s/%dx%s", cfg->n_a, a, cfg->n_b, b);
        break;
    }
}

lam_status_t lam_est_config_parse(const lam_est_catalog_t *c, const char *spec,
                                  lam_est_config_t *out, char *err, size_t errlen)
{
    char buf[128];
    if (strlen(spec) >= sizeof buf) {
        seterr(err, errlen, "bad configuration: '%.40s...' is too long", spec);
        return LAM_ERR_INVALID_ARG;
    }
    snprintf(buf, sizeof buf, "%s", spec);
    lam_est_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    char *a = buf, *b = NULL;
    if (!strncmp(buf, "pd:", 3)) {
        cfg.mode = LAM_EST_SPLIT;
        a = buf + 3;
        b = strchr(a, '/');
        if (!b) {
            seterr(err, errlen, "bad configuration '%s': expected pd:PREFILL/DECODE, e.g. "
                   "pd:1xh100/2xh100", spec);
            return LAM_ERR_INVALID_ARG;
        }
        *b++ = '\0';
    } else if ((b = strchr(buf, '+'))) {
        cfg.mode = LAM_EST_OFFLOAD;
        *b++ = '\0';
    } else {
        cfg.mode = LAM_EST_HOMO;
    }
    lam_status_t st = parse_part(c, a, spec, &cfg.dev_a, &cfg.n_a, err, errlen);
    if (st == LAM_OK && b)
        st = parse_part(c, b, spec, &cfg.dev_b, &cfg.n_b, err, errlen);
    if (st != LAM_OK)
        return st;
    lam_est_config_label(c, &cfg);
    *out = cfg;
    return LAM_OK;
}
