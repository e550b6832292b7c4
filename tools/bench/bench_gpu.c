/* lamina-bench GPU modes: each number is a ratio over a ceiling measured on
 * the same device in the same run (device events, medians).
 *
 *   gpu-attention  paged attention (lam_cuda_attn), decode rows over
 *                  contexts 512..32k, two head layouts (SmolLM2's 64 x 3
 *                  KV heads, group 3; LLaMA-3-8B's 128 x 8, group 4):
 *                  K/V bytes read per second over the device-to-device
 *                  copy bandwidth (bytes read + written per second)
 *   gpu-dense      the CUDA backend's dense work for one decode step: at
 *                  batch 1, weight bytes per second over the copy
 *                  bandwidth; at batch 256, achieved TFLOP/s over a
 *                  cuBLAS 8192^3 GEMM's; on --model (SmolLM2, or the
 *                  synthetic stand-in) and on a LLaMA-3-8B-shaped model
 *                  with random weights made on the device
 *
 * Exit status: 0, 1 on failure, 3 without a usable GPU or CUDA (a message
 * says which). gpu-e2e lives in bench_gpu_e2e.c. */
#include "tools/bench/bench.h"
#include "tools/bench/bench_gpu.h"

#include "common/dtype.h"
#include "common/log.h"
#include "compute_node/backend_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bench_gpu_ready(const char *mode, char *why, size_t n)
{
    if (lam_backend_cuda_probe(0, why, n) != LAM_OK) {
        fprintf(stderr, "lamina-bench %s: no usable GPU: %s\n", mode, why);
        return 0;
    }
    printf("%s on %s\n", mode, why);
    return 1;
}

#ifdef LAMINA_HAVE_CUDA

#include "compute_node/backend_cuda_internal.h"

const lam_model_config_t bench_llama3_8b = {
    .arch = "llama", .n_layers = 32, .dim = 4096, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128,
    .ffn_dim = 14336, .vocab = 128256, .max_ctx = 32768, .n_rot = 128, .rope_theta = 500000.0f,
    .rope_freq_scale = 1.0f, .rope_type = LAM_ROPE_NORM, .norm_eps = 1e-5f,
};

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

double bench_gpu_time_ms(bench_gpu_fn f, void *ud, cudaStream_t s, int warm, int reps)
{
    cudaEvent_t a, b;
    float t[64];
    if (reps > 64)
        reps = 64;
    if (cudaEventCreate(&a) != cudaSuccess || cudaEventCreate(&b) != cudaSuccess)
        return -1;
    double med = -1;
    for (int i = 0; i < warm; i++)
        if (f(ud, s) != LAM_OK)
            goto out;
    for (int i = 0; i < reps; i++) {
        if (cudaEventRecord(a, s) != cudaSuccess || f(ud, s) != LAM_OK || cudaEventRecord(b, s) != cudaSuccess ||
            cudaEventSynchronize(b) != cudaSuccess || cudaEventElapsedTime(&t[i], a, b) != cudaSuccess)
            goto out;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_float);
    med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
out:
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return med;
}

/* ---- ceilings ------------------------------------------------------------------- */

typedef struct copy_ud {
    void *dst;
    const void *src;
    size_t bytes;
} copy_ud_t;

static lam_status_t do_copy(void *ud, cudaStream_t s)
{
    copy_ud_t *c = ud;
    LAM_CUDA_CHECK(cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, s));
    return LAM_OK;
}

double bench_gpu_copy_gbps(size_t bytes)
{
    void *a = NULL, *b = NULL;
    cudaStream_t s = NULL;
    double gbps = -1;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess ||
        cudaStreamCreate(&s) != cudaSuccess)
        goto out;
    /* random contents: never time on zeros */
    if (lam_cb_fill_uniform(a, LAM_DT_F32, bytes / 4, 7, -1.0f, 1.0f, s) != LAM_OK)
        goto out;
    copy_ud_t c = {b, a, bytes};
    double ms = bench_gpu_time_ms(do_copy, &c, s, 3, 20);
    if (ms > 0)
        gbps = 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
out:
    if (s)
        cudaStreamDestroy(s);
    cudaFree(a);
    cudaFree(b);
    return gbps;
}

typedef struct gemm_ud {
    cublasHandle_t h;
    float *y;
    void *x, *w;
    int n, dtype;
} gemm_ud_t;

static lam_status_t do_gemm(void *ud, cudaStream_t s)
{
    gemm_ud_t *g = ud;
    return lam_cuda_gemm(g->h, g->y, LAM_DT_F32, g->x, g->w, g->dtype, NULL, g->n, g->n, g->n, 0.0f, s);
}

double bench_gpu_gemm_tflops(int n, int dtype)
{
    gemm_ud_t g = {.n = n, .dtype = dtype};
    cudaStream_t s = NULL;
    size_t nn = (size_t)n * n;
    double tf = -1;
    if (cudaStreamCreate(&s) != cudaSuccess || lam_cuda_blas_create(&g.h) != LAM_OK ||
        cudaMalloc((void **)&g.y, nn * 4) != cudaSuccess || cudaMalloc(&g.x, nn * 2) != cudaSuccess ||
        cudaMalloc(&g.w, nn * 2) != cudaSuccess)
        goto out;
    if (lam_cb_fill_uniform(g.x, dtype, nn, 11, -1.0f, 1.0f, s) != LAM_OK ||
        lam_cb_fill_uniform(g.w, dtype, nn, 12, -1.0f, 1.0f, s) != LAM_OK)
        goto out;
    double ms = bench_gpu_time_ms(do_gemm, &g, s, 3, 10);
    if (ms > 0)
        tf = 2.0 * (double)nn * n / (ms * 1e-3) / 1e12;
out:
    cudaFree(g.y);
    cudaFree(g.x);
    cudaFree(g.w);
    lam_cuda_blas_destroy(g.h);
    if (s)
        cudaStreamDestroy(s);
    return tf;
}

/* ---- gpu-attention ------------------------------------------------------------------ */

typedef struct attn_shape {
    const char *name;
    int head_dim, n_kv, group;
} attn_shape_t;

typedef struct attn_ud {
    lam_cuda_attn_args_t a;
    void *ws;
    size_t ws_bytes;
} attn_ud_t;

static lam_status_t do_attn(void *ud, cudaStream_t s)
{
    attn_ud_t *u = ud;
    return lam_cuda_attn(&u->a, u->ws, u->ws_bytes, 0, s);
}

/* B decode rows, each attending to ctx keys of its own sequence, pages in a
 * shuffled order; one layer. Returns K/V GB/s read, or -1. */
static double attn_gbps(const attn_shape_t *sh, int ctx, int B, int *splits)
{
    const int P = 16, pps = (ctx + P - 1) / P;
    const size_t esz = 2, head_stride = (size_t)P * sh->head_dim * esz;
    const size_t page_bytes = 2 * (size_t)sh->n_kv * head_stride;
    const int64_t n_pages = (int64_t)B * pps;
    const size_t qn = (size_t)B * sh->n_kv * sh->group * sh->head_dim;
    attn_ud_t u = {0};
    uint8_t *pool = NULL;
    int32_t *d_meta = NULL, *d_pages = NULL;
    float *q = NULL, *out = NULL;
    cudaStream_t s = NULL;
    double gbps = -1;
    int32_t *meta = malloc((3 * (size_t)B + 1) * sizeof *meta), *pages = malloc((size_t)n_pages * sizeof *pages);
    if (!meta || !pages || cudaStreamCreate(&s) != cudaSuccess ||
        cudaMalloc((void **)&pool, (size_t)n_pages * page_bytes) != cudaSuccess ||
        cudaMalloc((void **)&d_meta, (3 * (size_t)B + 1) * sizeof *meta) != cudaSuccess ||
        cudaMalloc((void **)&d_pages, (size_t)n_pages * sizeof *pages) != cudaSuccess ||
        cudaMalloc((void **)&q, qn * 4) != cudaSuccess || cudaMalloc((void **)&out, qn * 4) != cudaSuccess)
        goto out;
    /* scattered pages, as a long-running cache hands them out */
    uint64_t r = 12345;
    for (int64_t i = 0; i < n_pages; i++)
        pages[i] = (int32_t)i;
    for (int64_t i = n_pages - 1; i > 0; i--) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int64_t j = (int64_t)((r >> 33) % (uint64_t)(i + 1));
        int32_t t = pages[i];
        pages[i] = pages[j];
        pages[j] = t;
    }
    int32_t *row = meta, *pos = row + B + 1, *start = pos + B;
    for (int i = 0; i <= B; i++)
        row[i] = i;
    for (int i = 0; i < B; i++) {
        pos[i] = ctx - 1;
        start[i] = i * pps;
    }
    if (cudaMemcpy(d_meta, meta, (3 * (size_t)B + 1) * sizeof *meta, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(d_pages, pages, (size_t)n_pages * sizeof *pages, cudaMemcpyHostToDevice) != cudaSuccess ||
        lam_cb_fill_uniform(pool, LAM_DT_F16, (size_t)n_pages * page_bytes / 2, 21, -1.0f, 1.0f, s) != LAM_OK ||
        lam_cb_fill_uniform(q, LAM_DT_F32, qn, 22, -1.0f, 1.0f, s) != LAM_OK)
        goto out;
    u.ws_bytes = lam_cuda_attn_workspace_size(sh->head_dim);
    if (u.ws_bytes && cudaMalloc(&u.ws, u.ws_bytes) != cudaSuccess)
        goto out;
    u.a = (lam_cuda_attn_args_t){
        .n_seq = B, .row = d_meta, .pos = d_meta + B + 1, .page_start = d_meta + 2 * B + 1, .pages = d_pages,
        .n_tok = B, .max_rows = 1, .max_keys = ctx, .pool = pool, .page_bytes = page_bytes, .n_pages = n_pages,
        .k_off = 0, .v_off = (size_t)sh->n_kv * head_stride, .head_stride = head_stride, .page_tokens = P,
        .n_kv_heads = sh->n_kv, .group = sh->group, .head_dim = sh->head_dim, .kv_dtype = LAM_DT_F16,
        .scale = 0.125f, .q = q, .out = out,
    };
    lam_cuda_attn_plan_t plan;
    if (lam_cuda_attn_plan(&u.a, u.ws_bytes, &plan) == LAM_OK)
        *splits = plan.n_splits;
    double ms = bench_gpu_time_ms(do_attn, &u, s, 3, 20);
    if (ms > 0)
        gbps = (double)B * ctx * sh->n_kv * sh->head_dim * 2 * esz / (ms * 1e-3) / 1e9;
out:
    if (s)
        cudaStreamDestroy(s);
    cudaFree(pool);
    cudaFree(d_meta);
    cudaFree(d_pages);
    cudaFree(q);
    cudaFree(out);
    cudaFree(u.ws);
    free(meta);
    free(pages);
    return gbps;
}

int bench_gpu_attention(const bench_opts_t *o)
{
    char why[256];
    if (!bench_gpu_ready("gpu-attention", why, sizeof why))
        return 3;
    double copy = bench_gpu_copy_gbps((size_t)1 << 30);
    if (copy <= 0) {
        fprintf(stderr, "lamina-bench gpu-attention: the copy ceiling could not be measured\n");
        return 1;
    }
    static const attn_shape_t shapes[] = {{"smollm2 hd64 kv3 g3", 64, 3, 3}, {"llama3-8b hd128 kv8 g4", 128, 8, 4}};
    static const int ctxs[] = {512, 1024, 2048, 4096, 8192, 16384, 32768}, quick[] = {512, 4096, 32768};
    const int *cl = o->quick ? quick : ctxs;
    int n_ctx = o->quick ? 3 : 7;
    printf("device copy bandwidth (1 GiB, read + write): %.1f GB/s\n", copy);
    printf("%-24s %7s %5s %7s %12s %8s\n", "shape (one layer)", "context", "batch", "splits", "K+V GB/s", "ratio");
    json_t *res = json_array();
    json_array_append_new(res, json_pack("{s:s, s:s, s:f}", "name", "gpu_copy", "metric", "gpu_copy_gbps", "value",
                                         copy));
    int rc = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int ci = 0; ci < n_ctx; ci++) {
            const attn_shape_t *sh = &shapes[si];
            int ctx = cl[ci];
            size_t per_seq = (size_t)ctx * sh->n_kv * sh->head_dim * 2 * 2, fit = ((size_t)1 << 30) / per_seq;
            int big = fit < 1 ? 1 : fit > 256 ? 256 : (int)fit;
            int batches[2] = {big, 1};
            for (int bi = 0; bi < (big > 1 ? 2 : 1); bi++) {
                int B = batches[bi], splits = 0;
                double g = attn_gbps(sh, ctx, B, &splits);
                if (g <= 0) {
                    fprintf(stderr, "lamina-bench gpu-attention: %s at %d x %d failed\n", sh->name, B, ctx);
                    rc = 1;
                    continue;
                }
                printf("%-24s %7d %5d %7d %12.1f %8.3f\n", sh->name, ctx, B, splits, g, g / copy);
                json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:s, s:f, s:i, s:i, s:i}", "name",
                                                     sh->name, "metric", "gpu_attn_kv_gbps", "value", g, "ceiling",
                                                     copy, "ceiling_name", "gpu_copy", "ratio", g / copy, "context",
                                                     ctx, "batch", B, "splits", splits));
            }
        }
    if (o->json && bench_write_json(o, "gpu-attention", res) != 0)
        rc = 1;
    else if (!o->json)
        json_decref(res);
    return rc;
}

/* ---- gpu-dense ---------------------------------------------------------------------- */

typedef struct dense_ud {
    lam_cb_t *c;
    lam_backend_mb_t *mb;
    int n;
} dense_ud_t;

/* One decode step's dense work: every layer without attention, then the LM head. */
static lam_status_t do_dense(void *ud, cudaStream_t s)
{
    dense_ud_t *d = ud;
    lam_cb_t *c = d->c;
    lam_status_t st = LAM_OK;
    (void)s;
    for (int l = 0; l < c->cfg.n_layers && st == LAM_OK; l++)
        if ((st = lam_cb_qkv(c, d->mb, l, d->n)) == LAM_OK)
            st = lam_cb_post(c, d->mb, l, d->n);
    if (st == LAM_OK)
        st = lam_cuda_gemm(d->mb->blas, c->d_logits, LAM_DT_F32, d->mb->xlo, c->lm_head, c->wdtype, NULL,
                           d->n < c->logits_rows ? d->n : c->logits_rows, c->cfg.dim, c->cfg.vocab, 0.0f, d->mb->s);
    return st;
}

/* Weight elements the matrices of one step multiply with. */
static double matrix_params(const lam_cb_t *c)
{
    const lam_model_config_t *g = &c->cfg;
    double per_layer = (double)c->qkv_dim * g->dim + (double)g->dim * c->q_dim + 3.0 * g->ffn_dim * g->dim;
    return per_layer * g->n_layers + (double)g->vocab * g->dim;
}

static int dense_one(const char *name, lam_backend_t *be, double copy, double peak, json_t *res)
{
    lam_cb_t *c = lam_cb_of(be);
    lam_backend_mb_t *mb = NULL;
    int rc = 1;
    if (be->i->mb_create(be, 256, &mb) != LAM_OK)
        return 1;
    if (lam_cb_fill_uniform(mb->x, LAM_DT_F32, (size_t)256 * c->cfg.dim, 31, -1.0f, 1.0f, mb->s) != LAM_OK ||
        lam_cb_fill_uniform(mb->att, LAM_DT_F32, (size_t)256 * c->q_dim, 32, -1.0f, 1.0f, mb->s) != LAM_OK ||
        cudaMemsetAsync(mb->d_pos, 0, 256 * sizeof(int32_t), mb->s) != cudaSuccess)
        goto out;
    /* bytes one batch-1 step reads: every matrix once (an untied embedding table only for one row) */
    double bytes = (double)matrix_params(c) * (double)c->wsz;
    for (int n = 1; n <= 256; n += 255) {
        dense_ud_t d = {c, mb, n};
        double ms = bench_gpu_time_ms(do_dense, &d, mb->s, 2, 10);
        if (ms <= 0)
            goto out;
        if (n == 1) {
            double gbps = bytes / (ms * 1e-3) / 1e9;
            printf("%-22s %6d %10.3f %14.1f GB/s %10.1f %8.3f\n", name, n, ms, gbps, copy, gbps / copy);
            json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:s, s:f, s:i, s:f}", "name", name, "metric",
                                                 "gpu_dense_weight_gbps", "value", gbps, "ceiling", copy,
                                                 "ceiling_name", "gpu_copy", "ratio", gbps / copy, "batch", n,
                                                 "step_ms", ms));
        } else {
            double tflops = 2.0 * n * matrix_params(c) / (ms * 1e-3) / 1e12;
            printf("%-22s %6d %10.3f %14.1f TF/s %10.1f %8.3f\n", name, n, ms, tflops, peak, tflops / peak);
            json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:s, s:f, s:i, s:f}", "name", name, "metric",
                                                 "gpu_dense_tflops", "value", tflops, "ceiling", peak,
                                                 "ceiling_name", "cublas_gemm_8192", "ratio", tflops / peak, "batch",
                                                 n, "step_ms", ms));
        }
    }
    rc = 0;
out:
    be->i->mb_destroy(be, mb);
    return rc;
}

int bench_gpu_dense(const bench_opts_t *o)
{
    char why[256];
    if (!bench_gpu_ready("gpu-dense", why, sizeof why))
        return 3;
    double copy = bench_gpu_copy_gbps((size_t)1 << 30), peak = bench_gpu_gemm_tflops(8192, LAM_DT_F16);
    if (copy <= 0 || peak <= 0) {
        fprintf(stderr, "lamina-bench gpu-dense: the ceilings could not be measured\n");
        return 1;
    }
    printf("ceilings: device copy %.1f GB/s (read + write), cuBLAS f16 GEMM 8192^3 %.1f TFLOP/s\n", copy, peak);
    printf("%-22s %6s %10s %19s %10s %8s\n", "model (f16 weights)", "batch", "step ms", "achieved", "ceiling",
           "ratio");
    json_t *res = json_array();
    json_array_append_new(res, json_pack("{s:s, s:s, s:f}", "name", "gpu_copy", "metric", "gpu_copy_gbps", "value",
                                         copy));
    json_array_append_new(res, json_pack("{s:s, s:s, s:f}", "name", "cublas_gemm_8192", "metric", "gpu_gemm_tflops",
                                         "value", peak));
    int rc = 0;
    lam_gguf_t *g = NULL;
    lam_model_t *m = NULL;
    lam_backend_t *be = NULL;
    if (bench_open_model(o, false, &g, &m) == 0) {
        lam_backend_cuda_opts_t bo = {.gguf = g};
        if (lam_backend_cuda_create(m, &bo, &be) == LAM_OK)
            rc |= dense_one("model file", be, copy, peak, res);
        else
            rc = 1;
        lam_backend_destroy(be);
        be = NULL;
        lam_model_free(m);
        lam_gguf_close(g);
    } else {
        fprintf(stderr, "lamina-bench gpu-dense: cannot load %s; only the synthetic 8B runs\n", o->model);
        rc = 1;
    }
    lam_backend_cuda_opts_t bo = {0};
    if (lam_backend_cuda_create_random(&bench_llama3_8b, &bo, 8, &be) == LAM_OK)
        rc |= dense_one("llama3-8b (random)", be, copy, peak, res);
    else
        rc = 1;
    lam_backend_destroy(be);
    if (o->json && bench_write_json(o, "gpu-dense", res) != 0)
        rc = 1;
    else if (!o->json)
        json_decref(res);
    return rc;
}

#else /* no CUDA in this build */

int bench_gpu_attention(const bench_opts_t *o)
{
    (void)o;
    fprintf(stderr, "lamina-bench gpu-attention: built without CUDA\n");
    return 3;
}

int bench_gpu_dense(const bench_opts_t *o)
{
    (void)o;
    fprintf(stderr, "lamina-bench gpu-dense: built without CUDA\n");
    return 3;
}

#endif
