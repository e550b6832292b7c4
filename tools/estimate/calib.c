/* Calibration: fit efficiency factors and the per-layer round trip from the
 * JSON that lamina-bench writes. Format (README.md, "Calibration"):
 *
 *   {"machine": "...", "device": "h100",
 *    "results": [{"name": "...", "metric": "gemm_tflops", "value": 600.0,
 *                 "ceiling": ..., "ratio": ..., "device": "h100", params...}, ...]}
 *
 * Metrics used: gemm_tflops -> eff_compute, mem_gbps -> eff_mem,
 * attn_gbps -> eff_attn (each achieved / catalog peak of the result's device),
 * exchange_us with "bytes" -> least-squares t = rtt + bytes/bw, giving rtt
 * and eff_net = bw / min(net_bw of the two sides). Other metrics are ignored.
 */
#include "tools/estimate/estimate.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static const struct {
    const char *metric;
    lam_est_factor_t factor;
    lam_est_field_t peak;
    double scale; /* value unit -> SI */
} metrics[] = {
    {"gemm_tflops", LAM_EST_EFF_COMPUTE, LAM_EST_F_FLOPS, 1e12},
    {"mem_gbps", LAM_EST_EFF_MEM, LAM_EST_F_MEM_BW, 1e9},
    {"attn_gbps", LAM_EST_EFF_ATTN, LAM_EST_F_MEM_BW, 1e9},
};

/* Line of the result named `name` in the text (0 if not found). */
static int line_of(const char *text, const char *name)
{
    if (!text || !name)
        return 0;
    char pat[160];
    snprintf(pat, sizeof pat, "\"%s\"", name);
    const char *p = strstr(text, pat);
    if (!p)
        return 0;
    int n = 1;
    for (const char *q = text; q < p; q++)
        n += *q == '\n';
    return n;
}

static lam_est_calib_dev_t *calib_dev(lam_est_calib_t *cal, const char *id)
{
    for (int i = 0; i < cal->n_dev; i++)
        if (!strcmp(cal->dev[i].id, id))
            return &cal->dev[i];
    if (cal->n_dev == LAM_EST_CALIB_MAX_DEV)
        return NULL;
    lam_est_calib_dev_t *d = &cal->dev[cal->n_dev++];
    snprintf(d->id, sizeof d->id, "%s", id);
    for (int k = 0; k <= LAM_EST_EFF_NET; k++) {
        d->eff[k] = NAN;
        d->lo[k] = INFINITY;
        d->hi[k] = -INFINITY;
    }
    return d;
}

typedef struct xpt {
    double bytes, t;
    double net_bw; /* bottleneck peak of the two sides */
} xpt_t;

static lam_status_t fit_exchange(lam_est_calib_t *cal, const xpt_t *x, int n, double eff_net,
                                 const char *path, char *err, size_t errlen)
{
    cal->n_exchange = n;
    if (n == 0)
        return LAM_OK;
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        sx += x[i].bytes;
        sy += x[i].t;
        sxx += x[i].bytes * x[i].bytes;
        sxy += x[i].bytes * x[i].t;
    }
    double den = n * sxx - sx * sx;
    double slope = den > 0 ? (n * sxy - sx * sy) / den : NAN;
    double icpt;
    if (den > 0 && slope > 0) {
        icpt = (sy - slope * sx) / n;
        cal->net_bw = 1.0 / slope;
    } else {
        /* one size only (or no growth with size): attribute it all to latency
         * after removing the transfer time at the catalog's bandwidth */
        icpt = 0;
        for (int i = 0; i < n; i++)
            icpt += x[i].t - x[i].bytes / (x[i].net_bw * eff_net);
        icpt /= n;
        cal->net_bw = NAN;
    }
    if (!(icpt > 0)) {
        seterr(err, errlen, "%s: exchange_us results give a non-positive round trip (%.3g us): "
               "need sizes from small (latency-bound) to large", path, icpt * 1e6);
        return LAM_ERR_CONFIG;
    }
    cal->rtt = icpt;
    double ss = 0;
    for (int i = 0; i < n; i++) {
        double pred = icpt + (isfinite(cal->net_bw) ? x[i].bytes / cal->net_bw : 0);
        ss += (x[i].t - pred) * (x[i].t - pred);
    }
    cal->rtt_resid = sqrt(ss / n);
    return LAM_OK;
}

static lam_status_t positive(json_t *r, const char *key, double *out, const char *path,
                             const char *text, int idx, const char *name, char *err,
                             size_t errlen)
{
    json_t *v = json_object_get(r, key);
    if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v))) {
        seterr(err, errlen, "%s:%d: results[%d] ('%s'): '%s' must be a positive number", path,
               line_of(text, name), idx, name ? name : "?", key);
        return LAM_ERR_CONFIG;
    }
    *out = json_number_value(v);
    return LAM_OK;
}

lam_status_t lam_est_calib_fit(const char *path, const lam_est_catalog_t *c, const char *device,
                               lam_est_calib_t *out, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        seterr(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        return LAM_ERR_CONFIG;
    }
    /* jansson does not keep positions: reread the text to name lines in errors */
    char *text = NULL;
    FILE *tf = fopen(path, "rb");
    if (tf) {
        fseek(tf, 0, SEEK_END);
        long len = ftell(tf);
        fseek(tf, 0, SEEK_SET);
        text = len >= 0 ? calloc(1, (size_t)len + 1) : NULL;
        if (text && fread(text, 1, (size_t)len, tf) != (size_t)len) {
            free(text);
            text = NULL;
        }
        fclose(tf);
    }
    lam_est_calib_t cal;
    memset(&cal, 0, sizeof cal);
    cal.rtt = cal.net_bw = NAN;
    lam_status_t st = LAM_OK;
    xpt_t *xs = NULL;
    json_t *results = json_object_get(root, "results");
    if (!json_is_object(root) || !json_is_array(results)) {
        seterr(err, errlen, "%s:1: expected an object with a \"results\" array", path);
        st = LAM_ERR_CONFIG;
        goto out;
    }
    const char *machine = json_string_value(json_object_get(root, "machine"));
    snprintf(cal.machine, sizeof cal.machine, "%s", machine ? machine : "unnamed");
    /* the name goes into catalog lines, where '|' and '#' have a meaning */
    for (char *p = cal.machine; *p; p++)
        if (*p == '|' || *p == '#' || *p == '\n' || *p == '\r')
            *p = '_';
    const char *file_dev = json_string_value(json_object_get(root, "device"));
    if (!device)
        device = file_dev;
    size_t n = json_array_size(results);
    xs = calloc(n ? n : 1, sizeof *xs);
    int nx = 0;
    if (!xs) {
        st = LAM_ERR_NO_MEMORY;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(results, i);
        const char *name = json_string_value(json_object_get(r, "name"));
        const char *metric = json_string_value(json_object_get(r, "metric"));
        if (!json_is_object(r) || !metric) {
            seterr(err, errlen, "%s:%d: results[%zu]: each result needs a \"metric\" string",
                   path, line_of(text, name), i);
            st = LAM_ERR_CONFIG;
            goto out;
        }
        cal.n_results++;
        int mi = -1;
        for (size_t k = 0; k < sizeof metrics / sizeof metrics[0]; k++)
            if (!strcmp(metric, metrics[k].metric))
                mi = (int)k;
        bool exch = !strcmp(metric, "exchange_us");
        if (mi < 0 && !exch) {
            cal.n_ignored++;
            continue;
        }
        const char *rdev = json_string_value(json_object_get(r, "device"));
        if (!rdev)
            rdev = device;
        if (!rdev) {
            seterr(err, errlen, "%s:%d: results[%zu] ('%s'): no \"device\" in the result or the "
                   "file, and none given with --device", path, line_of(text, name), i,
                   name ? name : "?");
            st = LAM_ERR_CONFIG;
            goto out;
        }
        int di = lam_est_catalog_find(c, rdev);
        if (di < 0) {
            seterr(err, errlen, "%s:%d: results[%zu] ('%s'): device '%s' is not in the catalog",
                   path, line_of(text, name), i, name ? name : "?", rdev);
            st = LAM_ERR_NOT_FOUND;
            goto out;
        }
        const lam_est_device_t *d = &c->dev[di];
        double value;
        if ((st = positive(r, "value", &value, path, text, (int)i, name, err, errlen)))
            goto out;
        if (exch) {
            double bytes, peer_bw = d->f[LAM_EST_F_NET_BW].v;
            if ((st = positive(r, "bytes", &bytes, path, text, (int)i, name, err, errlen)))
                goto out;
            const char *peer = json_string_value(json_object_get(r, "peer_device"));
            int pi = peer ? lam_est_catalog_find(c, peer) : -1;
            if (pi >= 0 && c->dev[pi].f[LAM_EST_F_NET_BW].v < peer_bw)
                peer_bw = c->dev[pi].f[LAM_EST_F_NET_BW].v;
            xs[nx++] = (xpt_t){bytes, value * 1e-6, peer_bw};
            lam_est_calib_dev_t *cd = calib_dev(&cal, d->id);
            if (!cd) {
                seterr(err, errlen, "%s: more than %d devices", path, LAM_EST_CALIB_MAX_DEV);
                st = LAM_ERR_RANGE;
                goto out;
            }
            cd->n_used[LAM_EST_EFF_NET]++;
            continue;
        }
        double ratio = value * metrics[mi].scale / d->f[metrics[mi].peak].v;
        lam_est_calib_dev_t *cd = calib_dev(&cal, d->id);
        if (!cd) {
            seterr(err, errlen, "%s: more than %d devices", path, LAM_EST_CALIB_MAX_DEV);
            st = LAM_ERR_RANGE;
            goto out;
        }
        lam_est_factor_t fk = metrics[mi].factor;
        int k = cd->n_used[fk]++;
        cd->eff[fk] = k == 0 ? ratio : cd->eff[fk] + (ratio - cd->eff[fk]) / (k + 1);
        cd->lo[fk] = fmin(cd->lo[fk], ratio);
        cd->hi[fk] = fmax(cd->hi[fk], ratio);
    }
    if ((st = fit_exchange(&cal, xs, nx, c->fac[LAM_EST_EFF_NET].v, path, err, errlen)))
        goto out;
    if (nx && isfinite(cal.net_bw)) {
        double peak = INFINITY;
        for (int i = 0; i < nx; i++)
            peak = fmin(peak, xs[i].net_bw);
        /* every device that took part in exchanges gets the fitted eff_net */
        for (int i = 0; i < cal.n_dev; i++) {
            if (!cal.dev[i].n_used[LAM_EST_EFF_NET])
                continue;
            cal.dev[i].eff[LAM_EST_EFF_NET] = cal.net_bw / peak;
            cal.dev[i].lo[LAM_EST_EFF_NET] = cal.dev[i].hi[LAM_EST_EFF_NET] = cal.net_bw / peak;
        }
    }
    /* an efficiency above 1 means the catalog peak is wrong for this machine:
     * keep it in range (the catalog rejects > 1) and say so in the summary */
    for (int i = 0; i < cal.n_dev; i++)
        for (int k = 0; k <= LAM_EST_EFF_NET; k++)
            if (cal.dev[i].eff[k] > 1)
                cal.dev[i].eff[k] = 1;
    *out = cal;
out:
    free(xs);
    free(text);
    json_decref(root);
    return st;
}

static void today(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%d", &tm);
}

void lam_est_calib_write_overlay(FILE *f, const lam_est_calib_t *cal, const char *path)
{
    char date[16], source[256];
    snprintf(source, sizeof source, "%s", path);
    for (char *p = source; *p; p++)
        if (*p == '|' || *p == '#' || *p == '\n' || *p == '\r')
            *p = '_';
    today(date, sizeof date);
    fprintf(f, "# lamina-estimate calibration overlay: from %s (machine '%s')\n", source,
            cal->machine);
    fprintf(f, "# use with: lamina-estimate --catalog-add THIS_FILE ...\n");
    if (isfinite(cal->rtt)) {
        fprintf(f, "[defaults]\nrtt = %.4g | fitted from %d exchange_us results in %s (machine "
                "%s), RMS residual %.3g us | %s\n", cal->rtt, cal->n_exchange, source,
                cal->machine, cal->rtt_resid * 1e6, date);
    }
    for (int i = 0; i < cal->n_dev; i++) {
        const lam_est_calib_dev_t *d = &cal->dev[i];
        fprintf(f, "[%s]\n", d->id);
        for (int k = 0; k <= LAM_EST_EFF_NET; k++) {
            if (!isfinite(d->eff[k]))
                continue;
            fprintf(f, "%s = %.4f | fitted from %d results in %s (machine %s), range %.3f..%.3f "
                    "| %s\n", lam_est_factor_name((lam_est_factor_t)k), d->eff[k], d->n_used[k],
                    source, cal->machine, d->lo[k], d->hi[k], date);
        }
    }
}

void lam_est_calib_print(FILE *f, const lam_est_calib_t *cal)
{
    fprintf(f, "calibration for machine '%s': %d results, %d ignored (unknown metric)\n",
            cal->machine, cal->n_results, cal->n_ignored);
    for (int i = 0; i < cal->n_dev; i++) {
        const lam_est_calib_dev_t *d = &cal->dev[i];
        for (int k = 0; k <= LAM_EST_EFF_NET; k++) {
            if (!isfinite(d->eff[k]))
                continue;
            fprintf(f, "  %-10s %-12s %.3f  (%d samples, %.3f..%.3f)%s\n", d->id,
                    lam_est_factor_name((lam_est_factor_t)k), d->eff[k], d->n_used[k], d->lo[k],
                    d->hi[k], d->hi[k] > 1 ? "  above the catalog peak: check the catalog" : "");
        }
    }
    if (isfinite(cal->rtt))
        fprintf(f, "  per-layer round trip %.2f us, exchange bandwidth %s%.3g GB/s (%d samples, "
                "RMS residual %.2f us)\n", cal->rtt * 1e6, isfinite(cal->net_bw) ? "" : "n/a ",
                isfinite(cal->net_bw) ? cal->net_bw / 1e9 : 0.0, cal->n_exchange,
                cal->rtt_resid * 1e6);
}
