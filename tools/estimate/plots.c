/* The two standard plots, built on svg.c. */
#include "tools/estimate/estimate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Scales every point of a length distribution by f (at least 1 token). */
static void scale_dist(lam_est_dist_t *d, double f)
{
    for (int i = 0; i < d->n; i++)
        d->v[i] = fmax(1, round(d->v[i] * f));
}

lam_status_t lam_est_plot_context(const char *path, const lam_est_model_t *m,
                                  const lam_est_catalog_t *c, const lam_est_workload_t *w,
                                  const lam_est_config_t *cfgs, int n, const double *ctxs,
                                  int n_ctx, char *err, size_t errlen)
{
    lam_est_series_t *s = calloc((size_t)(n ? n : 1), sizeof *s);
    double *ys = calloc((size_t)(n ? n : 1) * (size_t)n_ctx, sizeof *ys);
    if (!s || !ys) {
        free(s);
        free(ys);
        return LAM_ERR_NO_MEMORY;
    }
    double ep = lam_est_dist_mean(&w->prompt), eo = lam_est_dist_mean(&w->output);
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < n_ctx; k++) {
            /* keep the workload's prompt:output proportion at every length */
            lam_est_workload_t wc = *w;
            scale_dist(&wc.prompt, ctxs[k] / (ep + eo));
            scale_dist(&wc.output, ctxs[k] / (ep + eo));
            lam_est_result_t r;
            lam_est_evaluate(m, c, &wc, &cfgs[i], &r, NULL, 0);
            ys[(size_t)i * n_ctx + k] = r.feasible && r.slo_ok ? r.tok_s_per_usd_h : NAN;
        }
        s[i] = (lam_est_series_t){cfgs[i].label, n_ctx, ctxs, &ys[(size_t)i * n_ctx]};
    }
    char title[160];
    snprintf(title, sizeof title, "%s: tokens/s per $/h vs context (prompt:output %.0f:%.0f)",
             m->name, ep, eo);
    lam_est_plot_t p = {title, "context length = prompt + output (tokens)",
                        "output tokens/s per USD/h", true, true, n, s};
    lam_status_t st = lam_est_svg_write(path, &p, err, errlen);
    free(ys);
    free(s);
    return st;
}

lam_status_t lam_est_plot_cost(const char *path, const lam_est_model_t *m,
                               const lam_est_workload_t *w, const lam_est_config_t *cfgs,
                               const lam_est_result_t *res, int n, char *err, size_t errlen)
{
    static const char *modes[] = {"homogeneous", "attention offload", "prefill/decode split"};
    bool per_mode = n > 10;
    int ns = per_mode ? 3 : n;
    lam_est_series_t *s = calloc((size_t)(ns ? ns : 1), sizeof *s);
    double *xs = calloc((size_t)(n ? n : 1) * 2, sizeof *xs);
    if (!s || !xs) {
        free(s);
        free(xs);
        return LAM_ERR_NO_MEMORY;
    }
    double *ys = xs + (n ? n : 1);
    /* per mode: gather the points of each mode into a contiguous run */
    int at = 0;
    for (int k = 0; k < ns; k++) {
        int start = at;
        for (int i = 0; i < n; i++) {
            if (per_mode ? (int)cfgs[i].mode != k : i != k)
                continue;
            bool ok = res[i].feasible && res[i].slo_ok;
            xs[at] = ok ? res[i].usd_per_mtok : NAN;
            ys[at] = ok ? res[i].tpot * 1e3 : NAN;
            at++;
        }
        s[k] = (lam_est_series_t){per_mode ? modes[k] : cfgs[k].label, at - start, xs + start,
                                  ys + start};
    }
    char title[160];
    snprintf(title, sizeof title, "%s: latency vs cost (prompt %.0f, output %.0f)", m->name,
             lam_est_dist_mean(&w->prompt), lam_est_dist_mean(&w->output));
    lam_est_plot_t p = {title, "USD per 1M output tokens", "time per output token (ms)", false,
                        false, ns, s};
    lam_status_t st = lam_est_svg_write(path, &p, err, errlen);
    free(xs);
    free(s);
    return st;
}
