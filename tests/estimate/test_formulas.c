/* lamina-estimate: a hand-computed case for every formula. The arithmetic is
 * written next to each expected value; the fixtures (est_test.h) use round
 * numbers and efficiency factors of 1 so nothing is hidden. */
#include "est_test.h"

/* ---- model sizes ---- */

static void test_kv_bytes_gqa(void)
{
    /* KV/token = 2 * layers * kv_heads * head_dim * e */
    const lam_est_model_t *l3 = lam_est_model_preset("llama-3-70b");
    const lam_est_model_t *l65 = lam_est_model_preset("llama-65b");
    const lam_est_model_t *smol = lam_est_model_preset("smollm2-135m");
    const lam_est_model_t *mis = lam_est_model_preset("Mistral-7B"); /* case-insensitive */
    CU_ASSERT_PTR_NOT_NULL_FATAL(l3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l65);
    CU_ASSERT_PTR_NOT_NULL_FATAL(smol);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mis);
    /* 2*80*8*128*2 = 327,680: GQA with 8 KV heads, not 64 */
    CU_ASSERT_EQUAL(lam_est_kv_bytes_per_token(l3, 2), 327680.0);
    /* same shape without GQA (LLaMA-65B, 64 KV heads): 2*80*64*128*2 = 2,621,440 = 8x */
    CU_ASSERT_EQUAL(lam_est_kv_bytes_per_token(l65, 2), 2621440.0);
    CU_ASSERT_EQUAL(lam_est_kv_bytes_per_token(l65, 2) / lam_est_kv_bytes_per_token(l3, 2), 8.0);
    /* 2*30*3*64*2 = 23,040 */
    CU_ASSERT_EQUAL(lam_est_kv_bytes_per_token(smol, 2), 23040.0);
    /* fp8 KV: 2*32*8*128*1 = 65,536 */
    CU_ASSERT_EQUAL(lam_est_kv_bytes_per_token(mis, 1), 65536.0);
    /* test model: 2*10*2*100*2 = 8,000 */
    CU_ASSERT_EQUAL(lam_est_kv_bytes_per_token(&est_test_model, 2), 8000.0);
}

static void test_params(void)
{
    /* LLaMA-2-7B: attention 4*4096^2 = 67,108,864; FFN 3*4096*11008 = 135,266,304;
     * per layer 202,375,168; x32 = 6,476,005,376; norms (2*32+1)*4096 = 266,240;
     * embedding + LM head 2*32000*4096 = 262,144,000; total 6,738,415,616
     * (the count Hugging Face reports for Llama-2-7b-hf). */
    CU_ASSERT_EQUAL(lam_est_model_params(lam_est_model_preset("llama-2-7b")), 6738415616.0);
    /* SmolLM2-135M (tied): attention 576*576 + 2*576*192 + 576*576 = 884,736;
     * FFN 3*576*1536 = 2,654,208; per layer 3,538,944; x30 = 106,168,320;
     * norms 61*576 = 35,136; embedding (shared with LM head) 49152*576 = 28,311,552;
     * total 134,515,008. */
    CU_ASSERT_EQUAL(lam_est_model_params(lam_est_model_preset("smollm2-135m")), 134515008.0);
    /* test model: attention 1000*1000 + 2*1000*200 + 1000*1000 = 2.4e6; FFN
     * 3*1000*2000 = 6e6; per layer 8.4e6; x10 = 8.4e7; LM head 1e6 -> GEMM
     * params 8.5e7; plus norms 21*1000 and embedding 1e6 -> 86,021,000. */
    CU_ASSERT_EQUAL(lam_est_model_gemm_params(&est_test_model), 8.5e7);
    CU_ASSERT_EQUAL(lam_est_model_params(&est_test_model), 86021000.0);
    /* dense FLOPs/token = 2 * GEMM params = 1.7e8 */
    CU_ASSERT_EQUAL(lam_est_dense_flops_per_token(&est_test_model), 1.7e8);
    /* attention FLOPs/token at ctx 1000 = 4*10*10*100*1000 = 4e7 */
    CU_ASSERT_EQUAL(lam_est_attn_flops_per_token(&est_test_model, 1000), 4e7);
}

static void test_exchange_bytes(void)
{
    /* (2 + 2/G) * e * d: LLaMA-3-70B, G = 8, e = 2, d = 8192:
     * 2.25 * 2 * 8192 = 36,864 = (2*64 + 2*8) * 128 * 2 */
    CU_ASSERT_EQUAL(lam_est_exchange_bytes(lam_est_model_preset("llama-3-70b"), 2), 36864.0);
    /* test model, G = 5: (2 + 0.4) * 2 * 1000 = 4,800 */
    CU_ASSERT_EQUAL(lam_est_exchange_bytes(&est_test_model, 2), 4800.0);
}

static void test_allreduce(void)
{
    /* ring: 2(n-1)/n * bytes/bw + 2(n-1)*lat; n=4, 1 MB, 100 GB/s, 1 us:
     * 1.5 * 1e6/1e11 + 6e-6 = 1.5e-5 + 6e-6 = 2.1e-5 */
    EST_CLOSE(lam_est_allreduce_time(1e6, 4, 1e11, 1e-6), 2.1e-5);
    CU_ASSERT_EQUAL(lam_est_allreduce_time(1e6, 1, 1e11, 1e-6), 0.0);
}

static void test_live_context(void)
{
    lam_est_workload_t w;
    lam_est_workload_default(&w);
    lam_est_dist_fixed(&w.prompt, 1000);
    lam_est_dist_fixed(&w.output, 100);
    /* mean of 1000+j over j = 1..100 = 1050.5 = 1000 + (100^2 + 100)/(2*100) */
    CU_ASSERT_EQUAL(lam_est_live_context(&w), 1050.5);
    char err[256];
    CU_ASSERT_EQUAL(lam_est_dist_parse("list:100,300", &w.output, err, sizeof err), LAM_OK);
    /* step-weighted: (100*1050.5 + 300*1150.5)/400 = 1125.5
     *              = 1000 + (E[O^2] = 50000 + E[O] = 200)/(2*200) */
    CU_ASSERT_EQUAL(lam_est_live_context(&w), 1125.5);
    CU_ASSERT_EQUAL(lam_est_dist_parse("uniform:1:3", &w.output, err, sizeof err), LAM_OK);
    CU_ASSERT_EQUAL(lam_est_dist_mean(&w.output), 2.0);
    CU_ASSERT_DOUBLE_EQUAL(lam_est_dist_moment2(&w.output), 14.0 / 3, 1e-12);
}

/* ---- performance models ---- */

static void workload_1000_100(lam_est_workload_t *w)
{
    lam_est_workload_default(w);
    lam_est_dist_fixed(&w->prompt, 1000);
    lam_est_dist_fixed(&w->output, 100);
    w->max_batch = 10;
}

static void eval(const char *spec, const lam_est_workload_t *w, lam_est_result_t *r,
                 lam_est_term_t *terms)
{
    lam_est_catalog_t c;
    est_test_catalog(&c);
    lam_est_config_t cfg;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(lam_est_config_parse(&c, spec, &cfg, err, sizeof err), LAM_OK);
    lam_est_evaluate(&est_test_model, &c, w, &cfg, r, terms, LAM_EST_MAX_TERMS);
    lam_est_catalog_free(&c);
}

static void test_homogeneous_tp1(void)
{
    lam_est_workload_t w;
    workload_1000_100(&w);
    lam_est_result_t r;
    lam_est_term_t terms[LAM_EST_MAX_TERMS];
    eval("1xt", &w, &r, terms);
    CU_ASSERT_TRUE_FATAL(r.feasible);
    /* capacity: 100e9 - 86,021,000*2 = 99,827,958,000 B; per sequence
     * L*kv = 1050.5*8000 = 8,404,000 B; floor(11878.6) = 11878 */
    CU_ASSERT_EQUAL(r.max_batch, 11878);
    /* batch = min(capacity, max-batch 10) = 10 */
    CU_ASSERT_EQUAL(r.batch, 10);
    CU_ASSERT_STRING_EQUAL(r.batch_limit, "max-batch");
    /* GEMM compute 10*1.7e8/1e14 = 1.7e-5; weight read 1.7e8 B/1e12 = 1.7e-4 */
    EST_CLOSE(est_term(&r, "gemm_compute_time"), 1.7e-5);
    EST_CLOSE(est_term(&r, "weight_read_time"), 1.7e-4);
    /* KV read 10*1050.5*8000/1e12 = 8.404e-5; attention compute
     * 10*(4*10*10*100*1050.5 = 4.202e7)/1e14 = 4.202e-6 */
    EST_CLOSE(est_term(&r, "kv_read_time"), 8.404e-5);
    EST_CLOSE(est_term(&r, "attn_compute_time"), 4.202e-6);
    /* step = max(1.7e-5, 1.7e-4) + max(4.202e-6, 8.404e-5) + 0 = 2.5404e-4 */
    EST_CLOSE(r.t_step, 2.5404e-4);
    CU_ASSERT_STRING_EQUAL(r.bound, "memory");
    /* prefill FLOPs: 1000*(1.7e8 - 2*1000*1000) + 2e6 + 2*10*10*100*(1000^2 + 1000)
     *             = 1.68e11 + 2e6 + 2.002e10 = 1.88022e11; /1e14 = 1.88022e-3 s */
    EST_CLOSE(est_term(&r, "prefill_flops"), 1.88022e11);
    EST_CLOSE(r.t_prefill, 1.88022e-3);
    /* R = 1/(t_p + O*t_step/B) = 1/(1.88022e-3 + 100*2.5404e-4/10) = 1/4.42062e-3 */
    double R = 1 / 4.42062e-3;
    EST_CLOSE(est_term(&r, "request_rate"), R);
    /* TPOT = t_step/(1 - R*t_p) = (B*t_p + O*t_step)/O = 1.88022e-4 + 2.5404e-4 */
    EST_CLOSE(r.tpot, 4.42062e-4);
    /* TTFT = rho*t_p/(2(1-rho)) + t_step/2 + t_p, rho = R*t_p */
    double rho = R * 1.88022e-3;
    EST_CLOSE(r.ttft, rho * 1.88022e-3 / (2 * (1 - rho)) + 2.5404e-4 / 2 + 1.88022e-3);
    /* throughput R*O; 2 USD/h -> USD per 1M = 2/(tok_s*3600)*1e6; 500 W / tok_s */
    EST_CLOSE(r.tok_s, R * 100);
    EST_CLOSE(r.usd_per_mtok, 2 / (R * 100 * 3600) * 1e6);
    EST_CLOSE(r.tok_s_per_usd_h, R * 100 / 2);
    EST_CLOSE(r.j_per_tok, 500 / (R * 100));
}

static void test_homogeneous_tp2(void)
{
    lam_est_workload_t w;
    workload_1000_100(&w);
    lam_est_result_t r;
    lam_est_term_t terms[LAM_EST_MAX_TERMS];
    eval("2xt", &w, &r, terms);
    CU_ASSERT_TRUE_FATAL(r.feasible);
    /* all-reduce: 2 per layer, 10 layers, each of B*d*e = 10*1000*2 = 20,000 B:
     * 20 * (2*1/2 * 2e4/1e11 + 2*1*1e-6) = 20 * (2e-7 + 2e-6) = 4.4e-5 */
    EST_CLOSE(est_term(&r, "allreduce_time"), 4.4e-5);
    /* weights halved: 8.5e-5; KV shard max(1/2, 1/kv_heads=1/2) = 1/2: 4.202e-5 */
    EST_CLOSE(est_term(&r, "weight_read_time"), 8.5e-5);
    EST_CLOSE(est_term(&r, "kv_read_time"), 4.202e-5);
    EST_CLOSE(r.t_step, 8.5e-5 + 4.202e-5 + 4.4e-5);
    /* capacity: 2*100e9 - 1.72042e8 = 199,827,958,000; per sequence 8,404,000 B
     * (each device holds one of the two KV heads) -> floor(23777.7) = 23777 */
    CU_ASSERT_EQUAL(r.max_batch, 23777);
}

static void test_tp_replicated_kv(void)
{
    /* TP 4 over 2 KV heads: each KV head lives on two devices, so the KV per
     * sequence doubles: 8,404,000 * max(1, 4/2) = 16,808,000 B */
    lam_est_workload_t w;
    workload_1000_100(&w);
    lam_est_result_t r;
    lam_est_term_t terms[LAM_EST_MAX_TERMS];
    eval("4xt", &w, &r, terms);
    CU_ASSERT_FALSE(r.feasible); /* 10 query heads are not divisible by 4 */
    CU_ASSERT_PTR_NOT_NULL(strstr(r.why, "does not divide the 10 query heads"));
    eval("2xt", &w, &r, terms);
    EST_CLOSE(est_term(&r, "kv_per_sequence"), 8404000.0);
}

static void test_offload(void)
{
    lam_est_workload_t w;
    workload_1000_100(&w);
    lam_est_result_t r;
    lam_est_term_t terms[LAM_EST_MAX_TERMS];
    eval("1xt+2xt", &w, &r, terms);
    CU_ASSERT_TRUE_FATAL(r.feasible);
    /* capacity: attention devices hold only KV: 2*100e9/8,404,000 = 23798.2 */
    CU_ASSERT_EQUAL(r.max_batch, 23798);
    /* ping-pong: micro-batch ceil(10/2) = 5 */
    CU_ASSERT_EQUAL(est_term(&r, "microbatch"), 5.0);
    /* dense per layer: max(5*1.7e8/10/1e14 = 8.5e-7, 1.7e8/10/1e12 = 1.7e-5) = 1.7e-5 */
    EST_CLOSE(est_term(&r, "layer_gemm_compute"), 8.5e-7);
    EST_CLOSE(est_term(&r, "layer_dense_time"), 1.7e-5);
    /* KV read per layer: 5*1050.5*8000/10/(2*1e12) = 2.101e-6 */
    EST_CLOSE(est_term(&r, "layer_kv_read"), 2.101e-6);
    /* network: min(1*10G, 2*10G) = 10 GB/s; 5*4800/1e10 = 2.4e-6; rtt 10u+10u */
    EST_CLOSE(est_term(&r, "net_bandwidth"), 1e10);
    EST_CLOSE(est_term(&r, "layer_transfer"), 2.4e-6);
    EST_CLOSE(est_term(&r, "layer_round_trip"), 2e-5);
    /* attention side = 2.101e-6 + 2e-5 + 2.4e-6 = 2.4501e-5;
     * period = 2*max(1.7e-5, 2.4501e-5) = 4.9002e-5; step = 10*period */
    EST_CLOSE(est_term(&r, "layer_attn_side"), 2.4501e-5);
    EST_CLOSE(r.t_step, 4.9002e-4);
    CU_ASSERT_STRING_EQUAL(r.bound, "network"); /* round trip + transfer dominate */
    /* prefill: compute 1.88022e-3 s vs KV stream 1000*8000/1e10 = 8e-4 s;
     * t_p = max + 8e-4/10 layers = 1.88022e-3 + 8e-5 */
    EST_CLOSE(r.t_prefill, 1.88022e-3 + 8e-5);
    /* cost: 3 devices * 2 USD/h */
    EST_CLOSE(r.cost_h, 6.0);

    /* without ping-pong: one micro-batch of 10, period = dense + attention side
     * = 1.7e-5 + (4.202e-6 + 2e-5 + 4.8e-6) = 4.6002e-5 */
    w.pingpong = false;
    eval("1xt+2xt", &w, &r, terms);
    EST_CLOSE(r.t_step, 4.6002e-4);

    /* head-level sharding: 3 attention devices cannot split 2 KV heads */
    eval("1xt+3xt", &w, &r, terms);
    CU_ASSERT_FALSE(r.feasible);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.why, "do not divide the 2 KV heads"));
}

static void test_offload_rtt_factor(void)
{
    /* a calibrated rtt replaces net_lat(c) + net_lat(a) */
    lam_est_catalog_t c;
    est_test_catalog(&c);
    char err[256];
    CU_ASSERT_EQUAL(lam_est_catalog_set(&c, "rtt=50u", err, sizeof err), LAM_OK);
    lam_est_workload_t w;
    workload_1000_100(&w);
    lam_est_config_t cfg;
    CU_ASSERT_EQUAL(lam_est_config_parse(&c, "1xt+2xt", &cfg, err, sizeof err), LAM_OK);
    lam_est_result_t r;
    lam_est_term_t terms[LAM_EST_MAX_TERMS];
    lam_est_evaluate(&est_test_model, &c, &w, &cfg, &r, terms, LAM_EST_MAX_TERMS);
    /* period = 2*(2.101e-6 + 5e-5 + 2.4e-6) = 1.09002e-4 */
    EST_CLOSE(r.t_step, 10 * 1.09002e-4);
    lam_est_catalog_free(&c);
}

static void test_split(void)
{
    lam_est_workload_t w;
    workload_1000_100(&w);
    w.rate = 10;
    lam_est_result_t r;
    lam_est_term_t terms[LAM_EST_MAX_TERMS];
    eval("pd:1xt/1xt", &w, &r, terms);
    CU_ASSERT_TRUE_FATAL(r.feasible);
    /* prefill 1.88022e-3 s; KV handoff 1000*8000/1e10 = 8e-4 s overlapped layer
     * by layer: tail = max(0, 8e-4 - 1.88022e-3) + 8e-4/10 + rtt 2e-5 = 1e-4 */
    EST_CLOSE(est_term(&r, "kv_handoff"), 8e-4);
    EST_CLOSE(est_term(&r, "handoff_tail"), 1e-4);
    /* prefill rate 1/1.88022e-3 = 531.9/s -> X = floor(10/531.9) + 1 = 1;
     * decode rate at B=10: 10/(100*2.5404e-4) = 393.6/s -> Y = ceil(10/393.6) = 1 */
    CU_ASSERT_EQUAL(r.instances, 1);
    CU_ASSERT_EQUAL(r.instances_b, 1);
    /* smallest decode batch that keeps up with 10 req/s: B=1 gives
     * 1/(100*(1.7e-4 + 1*1050.5*8000/1e12 = 8.404e-6)) = 56/s >= 10 */
    CU_ASSERT_EQUAL(r.batch, 1);
    EST_CLOSE(r.tpot, 1.78404e-4);
    /* TTFT = M/D/1 wait (rho = 10*1.88022e-3) + t_p + tail */
    double rho = 10 * 1.88022e-3;
    EST_CLOSE(r.ttft, rho * 1.88022e-3 / (2 * (1 - rho)) + 1.88022e-3 + 1e-4);
    /* delivered tokens = rate * E[O] = 1000/s; cost 2 + 2 USD/h */
    EST_CLOSE(r.tok_s, 1000.0);
    EST_CLOSE(r.cost_h, 4.0);
}

static void test_rate_replicas(void)
{
    /* homogeneous at a given rate: instances = ceil(rate / saturated rate);
     * at B = 10 the instance serves 226.2 req/s (test_homogeneous_tp1), so
     * 1000 req/s needs ceil(4.42) = 5 instances */
    lam_est_workload_t w;
    workload_1000_100(&w);
    w.rate = 1000;
    lam_est_result_t r;
    lam_est_term_t terms[LAM_EST_MAX_TERMS];
    eval("1xt", &w, &r, terms);
    CU_ASSERT_EQUAL(r.instances, 5);
    EST_CLOSE(r.cost_h, 10.0);
    EST_CLOSE(r.tok_s, 1000.0 * 100);
}

static void test_weights_do_not_fit(void)
{
    /* LLaMA-3-70B in BF16 (141 GB) on one 100 GB device: infeasible, with why */
    lam_est_catalog_t c;
    est_test_catalog(&c);
    lam_est_workload_t w;
    lam_est_workload_default(&w);
    lam_est_config_t cfg;
    char err[256];
    CU_ASSERT_EQUAL(lam_est_config_parse(&c, "1xt", &cfg, err, sizeof err), LAM_OK);
    lam_est_result_t r;
    lam_est_evaluate(lam_est_model_preset("llama-3-70b"), &c, &w, &cfg, &r, NULL, 0);
    CU_ASSERT_FALSE(r.feasible);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.why, "do not fit"));
    lam_est_catalog_free(&c);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"kv bytes per token (GQA)", test_kv_bytes_gqa},
        {"parameter counts", test_params},
        {"offload exchange bytes", test_exchange_bytes},
        {"ring all-reduce", test_allreduce},
        {"live context", test_live_context},
        {"homogeneous TP1", test_homogeneous_tp1},
        {"homogeneous TP2", test_homogeneous_tp2},
        {"TP head checks", test_tp_replicated_kv},
        {"attention offload", test_offload},
        {"offload with calibrated rtt", test_offload_rtt_factor},
        {"prefill/decode split", test_split},
        {"replicas for a rate", test_rate_replicas},
        {"weights do not fit", test_weights_do_not_fit},
        CU_TEST_INFO_NULL,
    };
    return est_run("estimate-formulas", tests);
}
