/* lamina-estimate: monotonic properties, the search, calibration and the
 * machine-readable outputs. */
#include "est_test.h"

#include <jansson.h>
#include <unistd.h>

static const char *specs[] = {"1xh100", "2xh100", "4xh100", "1xh100+2xh20", "2xh100+4xh20",
                              "1xh100+4xcpu-spr", "2xa100+2xl40s", "pd:2xh100/2xh100",
                              "pd:1xh100/4xh20"};
#define N_SPECS (sizeof specs / sizeof specs[0])

static void workload(lam_est_workload_t *w, double prompt, double output)
{
    lam_est_workload_default(w);
    lam_est_dist_fixed(&w->prompt, prompt);
    lam_est_dist_fixed(&w->output, output);
    w->w_bytes = 1; /* fp8 weights so that 70B fits on one H100 */
}

static lam_est_result_t eval_spec(const lam_est_catalog_t *c, const lam_est_model_t *m,
                                  const lam_est_workload_t *w, const char *spec)
{
    lam_est_config_t cfg;
    char err[256];
    lam_est_result_t r;
    CU_ASSERT_EQUAL_FATAL(lam_est_config_parse(c, spec, &cfg, err, sizeof err), LAM_OK);
    lam_est_evaluate(m, c, w, &cfg, &r, NULL, 0);
    return r;
}

/* More bandwidth (memory, network or link) is never slower. */
static void test_more_bandwidth_never_slower(void)
{
    const lam_est_model_t *m = lam_est_model_preset("llama-3-70b");
    static const char *fields[] = {"mem_bw", "net_bw", "link_bw", "flops"};
    static const double slos[] = {0, 0.05, 0.1};
    for (size_t s = 0; s < N_SPECS; s++) {
        for (size_t f = 0; f < 4; f++) {
            for (size_t k = 0; k < 3; k++) {
                lam_est_catalog_t base, fast;
                est_shipped_catalog(&base);
                est_shipped_catalog(&fast);
                char err[256], set[64];
                for (int d = 0; d < fast.n_dev; d++) {
                    if (!fast.dev[d].f[f == 0 ? LAM_EST_F_MEM_BW : f == 1 ? LAM_EST_F_NET_BW :
                                       f == 2 ? LAM_EST_F_LINK_BW : LAM_EST_F_FLOPS].set)
                        continue;
                    snprintf(set, sizeof set, "%s.%s=%.17g", fast.dev[d].id, fields[f],
                             1.5 * fast.dev[d].f[f == 0 ? LAM_EST_F_MEM_BW : f == 1 ?
                             LAM_EST_F_NET_BW : f == 2 ? LAM_EST_F_LINK_BW : LAM_EST_F_FLOPS].v);
                    CU_ASSERT_EQUAL(lam_est_catalog_set(&fast, set, err, sizeof err), LAM_OK);
                }
                lam_est_workload_t w;
                workload(&w, 4096, 512);
                w.tpot_slo = slos[k];
                lam_est_result_t a = eval_spec(&base, m, &w, specs[s]);
                lam_est_result_t b = eval_spec(&fast, m, &w, specs[s]);
                CU_ASSERT_EQUAL(a.feasible, b.feasible);
                if (a.feasible && a.slo_ok) {
                    CU_ASSERT_TRUE(b.slo_ok);
                    /* a split picks its prefill:decode ratio for tokens/s per
                     * $/h, so that is what cannot get worse; one instance of
                     * the other layouts must not produce fewer tokens/s */
                    double va = a.tok_s_per_usd_h, vb = b.tok_s_per_usd_h;
                    if (specs[s][0] != 'p') {
                        va = a.tok_s;
                        vb = b.tok_s;
                    }
                    if (vb < va * (1 - 1e-12))
                        fprintf(stderr, "\n%s %s x1.5 slo %g: %g -> %g\n", specs[s],
                                fields[f], slos[k], va, vb);
                    CU_ASSERT(vb >= va * (1 - 1e-12));
                    CU_ASSERT(b.tpot <= w.tpot_slo || w.tpot_slo == 0);
                }
                /* at a fixed arrival rate the bill never grows */
                w.rate = 20;
                a = eval_spec(&base, m, &w, specs[s]);
                b = eval_spec(&fast, m, &w, specs[s]);
                if (a.feasible && a.slo_ok && b.slo_ok)
                    CU_ASSERT(b.cost_h <= a.cost_h * (1 + 1e-12));
                lam_est_catalog_free(&base);
                lam_est_catalog_free(&fast);
            }
        }
    }
}

/* A longer context never allows a larger batch. */
static void test_longer_context_never_larger_batch(void)
{
    lam_est_catalog_t c;
    est_shipped_catalog(&c);
    const lam_est_model_t *m = lam_est_model_preset("llama-3-70b");
    for (size_t s = 0; s < N_SPECS; s++) {
        int64_t prev_max = INT64_MAX, prev_batch = INT64_MAX;
        for (double ctx = 256; ctx <= 262144; ctx *= 2) {
            lam_est_workload_t w;
            workload(&w, ctx, 128);
            lam_est_result_t r = eval_spec(&c, m, &w, specs[s]);
            if (!r.feasible) {
                prev_max = prev_batch = 0;
                continue;
            }
            CU_ASSERT(r.max_batch <= prev_max);
            /* saturated, no SLO: the batch is the capacity (or what the
             * prefill side can feed, for a split) */
            CU_ASSERT(r.batch <= r.max_batch);
            if (specs[s][0] != 'p')
                CU_ASSERT(r.batch <= prev_batch);
            prev_max = r.max_batch;
            prev_batch = r.batch;
        }
    }
    lam_est_catalog_free(&c);
}

/* Step time grows with the batch; more devices never lower capacity. */
static void test_more_devices_more_capacity(void)
{
    lam_est_catalog_t c;
    est_shipped_catalog(&c);
    const lam_est_model_t *m = lam_est_model_preset("llama-3-70b");
    lam_est_workload_t w;
    workload(&w, 8000, 192);
    lam_est_result_t a = eval_spec(&c, m, &w, "1xh100+2xh20");
    lam_est_result_t b = eval_spec(&c, m, &w, "1xh100+4xh20");
    lam_est_result_t h2 = eval_spec(&c, m, &w, "2xh100");
    lam_est_result_t h4 = eval_spec(&c, m, &w, "4xh100");
    CU_ASSERT(b.max_batch >= 2 * a.max_batch);
    CU_ASSERT(h4.max_batch > h2.max_batch);
    lam_est_catalog_free(&c);
}

static void test_search_meets_slo(void)
{
    lam_est_catalog_t c;
    est_shipped_catalog(&c);
    const lam_est_model_t *m = lam_est_model_preset("llama-3-70b");
    lam_est_workload_t w;
    workload(&w, 2048, 512);
    w.tpot_slo = 0.05;
    w.ttft_slo = 2.0;
    lam_est_search_opts_t o = {NULL, 8, true, true, true};
    lam_est_config_t *cfgs;
    lam_est_result_t *res;
    int n;
    CU_ASSERT_EQUAL_FATAL(lam_est_search(m, &c, &w, &o, &cfgs, &res, &n), LAM_OK);
    CU_ASSERT_FATAL(n > 100);
    /* the best one is feasible and meets both SLOs, and re-evaluating it
     * independently agrees */
    CU_ASSERT_TRUE(res[0].feasible && res[0].slo_ok);
    CU_ASSERT(res[0].tpot <= w.tpot_slo);
    CU_ASSERT(res[0].ttft <= w.ttft_slo);
    lam_est_result_t again;
    lam_est_evaluate(m, &c, &w, &cfgs[0], &again, NULL, 0);
    CU_ASSERT_TRUE(again.slo_ok);
    CU_ASSERT_DOUBLE_EQUAL(again.tok_s_per_usd_h, res[0].tok_s_per_usd_h, 1e-9);
    /* sorted: nothing that meets the SLO beats it */
    for (int i = 1; i < n; i++)
        if (res[i].feasible && res[i].slo_ok)
            CU_ASSERT(res[i].tok_s_per_usd_h <= res[0].tok_s_per_usd_h);
    free(cfgs);
    free(res);

    /* restricted to devices: only those appear */
    o.devices = "h100,cpu-spr";
    CU_ASSERT_EQUAL_FATAL(lam_est_search(m, &c, &w, &o, &cfgs, &res, &n), LAM_OK);
    for (int i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(strcmp(c.dev[cfgs[i].dev_a].id, "h100"), 0);
        if (cfgs[i].mode != LAM_EST_HOMO)
            CU_ASSERT_PTR_NOT_NULL(strstr("h100 cpu-spr", c.dev[cfgs[i].dev_b].id));
    }
    free(cfgs);
    free(res);

    /* an impossible SLO: nothing meets it, and results say so */
    w.tpot_slo = 1e-6;
    o.devices = NULL;
    CU_ASSERT_EQUAL_FATAL(lam_est_search(m, &c, &w, &o, &cfgs, &res, &n), LAM_OK);
    for (int i = 0; i < n; i++)
        CU_ASSERT_FALSE(res[i].slo_ok);
    free(cfgs);
    free(res);
    lam_est_catalog_free(&c);
}

static void sample_path(char *buf, size_t n, const char *name)
{
    const char *src = getenv("LAMINA_SOURCE_DIR");
    snprintf(buf, n, "%s/tests/estimate/data/%s", src ? src : ".", name);
}

static void test_calibration_fit(void)
{
    lam_est_catalog_t c;
    est_shipped_catalog(&c);
    char path[1024], err[512] = "";
    sample_path(path, sizeof path, "bench_sample.json");
    lam_est_calib_t cal;
    lam_status_t st = lam_est_calib_fit(path, &c, NULL, &cal, err, sizeof err);
    if (st)
        fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_EQUAL_FATAL(st, LAM_OK);
    CU_ASSERT_EQUAL(cal.n_results, 8);
    CU_ASSERT_EQUAL(cal.n_ignored, 1); /* tok_s is not a calibration metric */
    CU_ASSERT_EQUAL(cal.n_dev, 2);
    const lam_est_calib_dev_t *h = &cal.dev[0], *cpu = &cal.dev[1];
    CU_ASSERT_STRING_EQUAL(h->id, "h100");
    CU_ASSERT_STRING_EQUAL(cpu->id, "cpu-spr");
    /* eff_compute: mean(593.64/989.4 = 0.6, 692.58/989.4 = 0.7) = 0.65 */
    CU_ASSERT_DOUBLE_EQUAL(h->eff[LAM_EST_EFF_COMPUTE], 0.65, 1e-9);
    /* eff_mem: 2680 GB/s / 3350 GB/s = 0.8 */
    CU_ASSERT_DOUBLE_EQUAL(h->eff[LAM_EST_EFF_MEM], 0.8, 1e-9);
    /* eff_attn on the CPU host: 430.08 / 614.4 = 0.7 */
    CU_ASSERT_DOUBLE_EQUAL(cpu->eff[LAM_EST_EFF_ATTN], 0.7, 1e-9);
    /* exchange: t = 20 us + bytes / 40 GB/s fits all three points exactly:
     * 1 kB -> 20.025 us, 1 MB -> 45 us, 4 MB -> 120 us */
    CU_ASSERT_DOUBLE_EQUAL(cal.rtt, 20e-6, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(cal.net_bw, 40e9, 1e3);
    CU_ASSERT(cal.rtt_resid < 1e-9);
    /* eff_net = 40 GB/s / min(50, 50) GB/s = 0.8 */
    CU_ASSERT_DOUBLE_EQUAL(h->eff[LAM_EST_EFF_NET], 0.8, 1e-9);

    /* the overlay loads back into the catalog and changes the estimate */
    char ov[] = "/tmp/lam_est_ovXXXXXX";
    int fd = mkstemp(ov);
    CU_ASSERT_FATAL(fd >= 0);
    FILE *f = fdopen(fd, "w");
    lam_est_calib_write_overlay(f, &cal, path);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(lam_est_catalog_load(&c, ov, err, sizeof err), LAM_OK);
    int hi = lam_est_catalog_find(&c, "h100");
    CU_ASSERT_DOUBLE_EQUAL(lam_est_eff(&c, &c.dev[hi], LAM_EST_EFF_COMPUTE), 0.65, 1e-4);
    CU_ASSERT_DOUBLE_EQUAL(c.fac[LAM_EST_RTT].v, 20e-6, 1e-9);
    CU_ASSERT_PTR_NOT_NULL(strstr(c.fac[LAM_EST_RTT].src, "fitted from 3 exchange_us"));
    unlink(ov);
    lam_est_catalog_free(&c);
}

static void test_calibration_bad_input(void)
{
    lam_est_catalog_t c;
    est_shipped_catalog(&c);
    static const struct { const char *text, *want; } bad[] = {
        {"{\"results\": [\n", ":2:"},
        {"{\"machine\": \"x\"}", "expected an object with a \"results\" array"},
        {"{\"device\": \"h100\", \"results\": [{\"name\": \"g\"}]}", "needs a \"metric\" string"},
        {"{\"device\": \"h100\", \"results\": [\n{\"name\": \"g1\", \"metric\": \"gemm_tflops\","
         " \"value\": -3}]}", ":2: results[0] ('g1'): 'value' must be a positive number"},
        {"{\"device\": \"h100\", \"results\": [{\"name\": \"e\", \"metric\": \"exchange_us\","
         " \"value\": 3}]}", "results[0] ('e'): 'bytes' must be a positive number"},
        {"{\"results\": [{\"name\": \"g\", \"metric\": \"mem_gbps\", \"value\": 3}]}",
         "no \"device\""},
        {"{\"device\": \"tpu9\", \"results\": [{\"name\": \"g\", \"metric\": \"mem_gbps\","
         " \"value\": 3}]}", "device 'tpu9' is not in the catalog"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char p[] = "/tmp/lam_est_benchXXXXXX";
        int fd = mkstemp(p);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_EQUAL(write(fd, bad[i].text, strlen(bad[i].text)), (ssize_t)strlen(bad[i].text));
        close(fd);
        lam_est_calib_t cal;
        char err[512] = "";
        CU_ASSERT_NOT_EQUAL(lam_est_calib_fit(p, &c, NULL, &cal, err, sizeof err), LAM_OK);
        if (!strstr(err, bad[i].want))
            fprintf(stderr, "\nbench case %zu: got '%s', want '%s'\n", i, err, bad[i].want);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].want));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, p));
        unlink(p);
    }
    lam_est_catalog_free(&c);
}

static void test_outputs(void)
{
    lam_est_catalog_t c;
    est_shipped_catalog(&c);
    const lam_est_model_t *m = lam_est_model_preset("llama-3-70b");
    lam_est_workload_t w;
    workload(&w, 7680, 512);
    lam_est_config_t cfgs[3];
    lam_est_result_t res[3];
    static lam_est_term_t terms[3][LAM_EST_MAX_TERMS];
    const char *sp[3] = {"2xh100", "1xh100+2xh20", "4xh100+3xh20"}; /* last: 3 does not divide 8 */
    char err[512];
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL_FATAL(lam_est_config_parse(&c, sp[i], &cfgs[i], err, sizeof err), LAM_OK);
        lam_est_evaluate(m, &c, &w, &cfgs[i], &res[i], terms[i], LAM_EST_MAX_TERMS);
    }
    /* JSON parses and carries the results and the terms */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CU_ASSERT_EQUAL(lam_est_write_json(f, m, &w, cfgs, res, 3, true), LAM_OK);
    fclose(f);
    json_error_t je;
    json_t *root = json_loads(buf, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    json_t *arr = json_object_get(root, "results");
    CU_ASSERT_EQUAL(json_array_size(arr), 3);
    json_t *r0 = json_array_get(arr, 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r0, "config")), "2xh100");
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(r0, "tok_s")), res[0].tok_s,
                           res[0].tok_s * 1e-5);
    CU_ASSERT(json_array_size(json_object_get(r0, "terms")) > 20);
    json_t *r2 = json_array_get(arr, 2);
    CU_ASSERT_TRUE(json_is_false(json_object_get(r2, "feasible")));
    CU_ASSERT_PTR_NOT_NULL(strstr(json_string_value(json_object_get(r2, "why")), "KV heads"));
    json_decref(root);
    free(buf);
    /* CSV: a header and one line per configuration */
    f = open_memstream(&buf, &len);
    lam_est_write_csv(f, cfgs, res, 3);
    fclose(f);
    int lines = 0;
    for (char *p = buf; *p; p++)
        lines += *p == '\n';
    CU_ASSERT_EQUAL(lines, 4);
    CU_ASSERT_EQUAL(strncmp(buf, "config,mode,feasible", 20), 0);
    free(buf);
    /* SVG plots: written, well-formed enough to hold the series */
    char p1[] = "/tmp/lam_est_svgXXXXXX";
    int fd = mkstemp(p1);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    static const double ctxs[] = {1024, 4096, 16384, 65536};
    CU_ASSERT_EQUAL(lam_est_plot_context(p1, m, &c, &w, cfgs, 3, ctxs, 4, err, sizeof err),
                    LAM_OK);
    f = fopen(p1, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char svg[65536];
    size_t n = fread(svg, 1, sizeof svg - 1, f);
    svg[n] = '\0';
    fclose(f);
    CU_ASSERT_EQUAL(strncmp(svg, "<svg", 4), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(svg, "<polyline"));
    CU_ASSERT_PTR_NOT_NULL(strstr(svg, "1xh100+2xh20"));
    CU_ASSERT_PTR_NOT_NULL(strstr(svg, "</svg>"));
    CU_ASSERT_EQUAL(lam_est_plot_cost(p1, m, &w, cfgs, res, 3, err, sizeof err), LAM_OK);
    unlink(p1);
    lam_est_catalog_free(&c);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"more bandwidth is never slower", test_more_bandwidth_never_slower},
        {"longer context never allows a larger batch", test_longer_context_never_larger_batch},
        {"more devices, more capacity", test_more_devices_more_capacity},
        {"search meets the SLO", test_search_meets_slo},
        {"calibration fit on the sample", test_calibration_fit},
        {"calibration bad input", test_calibration_bad_input},
        {"JSON, CSV and SVG outputs", test_outputs},
        CU_TEST_INFO_NULL,
    };
    return est_run("estimate-search-calib", tests);
}
