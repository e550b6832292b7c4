/* The two standard plots, built on svg.c. */
#include "tools/estimate/estimate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    lam_est_workload_t wc = *w;
    double eo = round(lam_est_dist_mean(&w->output));
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < n_ctx; k++) {
            double *y = &ys[(size_t)i * n_ctx + k];
            *y = NAN;
            if (ctxs[k] - eo < 1)
                continue;
            lam_est_dist_fixed(&wc.prompt, ctxs[k] - eo);
            lam_est_result_t r;
            lam_est_evaluate(m, c, &wc, &cfgs[i], &r, NULL, 0);
            if (r.feasible && r.slo_ok)
                *y = r.tok_s_per_usd_h;
        }
        s[i] = (lam_est_series_t){cfgs[i].label, n_ctx, ctxs, &ys[(size_t)i * n_ctx]};
    }
    char title[160];
    snprintf(title, sizeof title, "%s: throughput per dollar vs context (output %.0f tokens)",
             m->name, eo);
    lam_est_plot_t p = {title, "context length (tokens)", "output tokens/s per USD/h", true, true,
                        n, s};
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
