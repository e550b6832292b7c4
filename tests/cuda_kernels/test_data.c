/* Conversions, GGUF dequantisation (bit-identical to common/), and the
 * cuBLAS GEMM against lam_matmul_f32 on the same rounded inputs. */
#include "common/dtype.h"
#include "common/gguf.h"
#include "common/log.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/lam_cuda.h"
#include "tests/cuda_kernels/cu_util.h"
#include "tests/util/fixtures.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* f32 bit patterns that matter to f16/bf16 rounding, then random ones */
static uint32_t f32_pattern(size_t i)
{
    static const uint32_t special[] = {0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000,
                                       0x7f800001, 0xff812345, 0x7fbfffff, 0x00000001, 0x807fffff, 0x33000000,
                                       0x33000001, 0x387fe000, 0x387ff000, 0x38800000, 0x477fe000, 0x477fefff,
                                       0x477ff000, 0x3f801000, 0x3f803000, 0x3f808000, 0x3f818000, 0x7f7fffff,
                                       0x477fffff, 0x47800000, 0xc77ff000, 0x3f800001};
    size_t ns = sizeof special / sizeof special[0];
    if (i < ns)
        return special[i];
    uint32_t r = (uint32_t)cu_rnd();
    switch (i % 4) {
    case 0: return r;
    case 1: return (r & 0x80001fffu) | ((uint32_t)(100 + cu_irand(60)) << 23) | (r & 0x7fe000u);
    case 2: return (r & 0x8000ffffu) | (0x7f80u << 16) | 1;
    default: return (r & 0xffff8000u) | (cu_irand(2) ? 0x8000u : 0x7fffu) | (r & 0x10000u);
    }
}

/* ---- convert: all nine pairs, bit for bit ---------------------------------------- */

static void test_convert(void)
{
    enum { N = 70001 + 65536 };
    uint8_t *src = malloc((size_t)N * 4), *dst = malloc((size_t)N * 4);
    for (int sdt = 0; sdt < LAM_DT_END; sdt++) {
        size_t ss = lam_dtype_size((unsigned)sdt);
        /* f32: rounding patterns; 16-bit types: every pattern, then random ones */
        for (size_t i = 0; i < N; i++) {
            if (sdt == LAM_DT_F32) {
                uint32_t u = f32_pattern(i);
                memcpy(src + 4 * i, &u, 4);
            } else {
                uint16_t h = i < 65536 ? (uint16_t)i : (uint16_t)cu_rnd();
                memcpy(src + 2 * i, &h, 2);
            }
        }
        for (int ddt = 0; ddt < LAM_DT_END; ddt++) {
            size_t ds = lam_dtype_size((unsigned)ddt);
            cu_buf_t bs, bd;
            void *ds_ = cu_alloc(&bs, N * ss, 0), *dd = cu_alloc(&bd, N * ds, 0x5a);
            cu_up(ds_, src, N * ss);
            CU_ASSERT_FATAL(lam_cuda_convert(dd, ddt, ds_, sdt, N, 0) == LAM_OK);
            CU_ASSERT(cu_sync());
            cu_down(dst, dd, N * ds);
            bool ok = cu_guards_ok(&bd);
            size_t bad = 0;
            for (size_t i = 0; i < N; i++) {
                uint8_t want[4];
                lam_dtype_store(want, (unsigned)ddt, lam_dtype_load(src + i * ss, (unsigned)sdt));
                if (memcmp(want, dst + i * ds, ds)) {
                    if (!bad++)
                        printf("\n  convert %s -> %s: element %zu differs\n", lam_dtype_name((unsigned)sdt),
                               lam_dtype_name((unsigned)ddt), i);
                }
            }
            CU_ASSERT(ok && bad == 0);
            cu_free(&bs);
            cu_free(&bd);
        }
    }
    free(src);
    free(dst);
}

/* ---- dequant ------------------------------------------------------------------------ */

/* A random finite f16 scale: normal, subnormal or zero. */
static uint16_t rand_scale(void)
{
    int k = cu_irand(10);
    if (k == 0)
        return 0;
    if (k == 1)
        return (uint16_t)(cu_irand(0x3ff) + 1); /* subnormal */
    return lam_fp32_to_fp16((cu_frand() + 0.001f) * 0.05f);
}

/* Checks n elements of GGUF data `raw` of `type` against lam_dequant + rounding.
 * `off` bytes of misalignment exercise bytewise reads. */
static bool dequant_case(uint32_t type, const uint8_t *raw, size_t raw_bytes, int64_t n, int ddt, size_t off,
                         const char *what)
{
    size_t ds = lam_dtype_size((unsigned)ddt);
    float *ref = malloc((size_t)n * 4);
    uint8_t *got = malloc((size_t)n * ds);
    if (lam_dequant(type, raw, ref, n) != LAM_OK) {
        free(ref);
        free(got);
        return false;
    }
    cu_buf_t bs, bd;
    uint8_t *dsrc = cu_alloc(&bs, raw_bytes + off, 0);
    void *ddst = cu_alloc(&bd, (size_t)n * ds, 0xff);
    cu_up(dsrc + off, raw, raw_bytes);
    bool ok = lam_cuda_dequant(ddst, ddt, dsrc + off, type, n, 0) == LAM_OK && cu_sync();
    cu_down(got, ddst, (size_t)n * ds);
    ok &= cu_guards_ok(&bd);
    size_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint8_t want[4];
        lam_dtype_store(want, (unsigned)ddt, ref[i]);
        if (memcmp(want, got + i * ds, ds) && !(isnan(ref[i]) && isnan(lam_dtype_load(got + i * ds, (unsigned)ddt))))
            if (!bad++)
                printf("\n  dequant %s %s -> %s: element %lld differs\n", what, lam_ggml_type_name(type),
                       lam_dtype_name((unsigned)ddt), (long long)i);
    }
    cu_free(&bs);
    cu_free(&bd);
    free(ref);
    free(got);
    return ok && bad == 0;
}

static void test_dequant_random(void)
{
    const uint32_t types[] = {LAM_GGML_F32, LAM_GGML_F16, LAM_GGML_BF16, LAM_GGML_Q8_0,
                              LAM_GGML_Q4_0, LAM_GGML_Q4_1, LAM_GGML_Q5_0, LAM_GGML_Q5_1};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t type = types[ti];
        CU_ASSERT(lam_cuda_dequant_supported(type));
        int64_t be, bb;
        CU_ASSERT_FATAL(lam_ggml_type_size(type, &be, &bb));
        int64_t nb = be == 1 ? 32 * 1001 : 1001, n = nb * be;
        size_t bytes = (size_t)(nb * bb);
        uint8_t *raw = malloc(bytes);
        for (size_t i = 0; i < bytes; i++)
            raw[i] = (uint8_t)cu_rnd();
        if (type == LAM_GGML_F32) /* NaN payloads are fine (no arithmetic), keep some ordinary values too */
            for (int64_t i = 0; i < n; i += 2) {
                float f = 100.0f * cu_frand();
                memcpy(raw + 4 * i, &f, 4);
            }
        if (be == 32) /* finite scales: NaN payloads of products are not portable */
            for (int64_t b = 0; b < nb; b++) {
                uint16_t d = rand_scale(), m = rand_scale() ^ (cu_irand(2) ? 0x8000 : 0);
                memcpy(raw + b * bb, &d, 2);
                if (type == LAM_GGML_Q4_1 || type == LAM_GGML_Q5_1)
                    memcpy(raw + b * bb + 2, &m, 2);
            }
        for (int ddt = 0; ddt < LAM_DT_END; ddt++)
            for (size_t off = 0; off < 2; off++)
                CU_ASSERT(dequant_case(type, raw, bytes, n, ddt, off * 3, "random"));
        free(raw);
    }
}

/* Every tensor of the shipped test model the device can dequantise, to f16. */
static void test_dequant_model(void)
{
    char path[4096], err[256];
    bool skip = false;
    if (!fx_model_path(path, sizeof path, &skip)) {
        printf("\n  test model missing: model dequant check skipped\n");
        CU_ASSERT(skip);
        return;
    }
    lam_gguf_t *g = NULL;
    CU_ASSERT_FATAL(lam_gguf_open(path, &g, err, sizeof err) == LAM_OK);
    int checked = 0;
    for (int64_t i = 0; i < lam_gguf_n_tensors(g) && (!g_quick || checked < 4); i++) {
        const lam_gguf_tensor_t *t = lam_gguf_tensor_at(g, i);
        if (!lam_cuda_dequant_supported(t->type))
            continue;
        CU_ASSERT(dequant_case(t->type, t->data, t->nbytes, t->n_elem, LAM_DT_F16, 0, t->name));
        checked++;
    }
    printf("\n  %d model tensors checked ", checked);
    CU_ASSERT(checked > 0);
    lam_gguf_close(g);
}

/* ---- gemm --------------------------------------------------------------------------- */

static void test_gemm(void)
{
    static const int shapes[][3] = {{1, 576, 576}, {3, 64, 1}, {75, 100, 577}, {7, 1536, 576}, {1, 8, 3}};
    cublasHandle_t h;
    CU_ASSERT_FATAL(lam_cuda_blas_create(&h) == LAM_OK);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int ab = LAM_DT_F16; ab <= LAM_DT_BF16; ab++)
            for (int ydt = 0; ydt < LAM_DT_END; ydt++)
                for (int v = 0; v < 3; v++) { /* 0: plain, 1: beta = 1, 2: bias (f32 out only) */
                    if (v == 2 && ydt != LAM_DT_F32)
                        continue;
                    if (ydt != LAM_DT_F32 && ydt != ab) { /* no mixed 16-bit types in cuBLAS */
                        lam_log_level_t lvl = lam_log_get_level();
                        lam_log_set_level(LAM_LOG_QUIET);
                        CU_ASSERT(lam_cuda_gemm(h, (void *)(uintptr_t)0x100000, ydt, (void *)(uintptr_t)0x100000,
                                                (void *)(uintptr_t)0x100000, ab, NULL, 1, 8, 8, 0.0f,
                                                0) == LAM_ERR_UNSUPPORTED);
                        lam_log_set_level(lvl);
                        continue;
                    }
                    int n = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
                    size_t ys = lam_dtype_size((unsigned)ydt);
                    float *x = malloc((size_t)n * in * 4), *W = malloc((size_t)out * in * 4);
                    float *bias = malloc(out * 4), *ref = malloc((size_t)n * out * 4), *y0 = malloc((size_t)n * out * 4);
                    uint16_t *x16 = malloc((size_t)n * in * 2), *W16 = malloc((size_t)out * in * 2);
                    uint8_t *y = malloc((size_t)n * out * ys);
                    for (size_t i = 0; i < (size_t)n * in; i++) {
                        x16[i] = ab == LAM_DT_F16 ? lam_fp32_to_fp16(cu_frand()) : lam_fp32_to_bf16(cu_frand());
                        x[i] = ab == LAM_DT_F16 ? lam_fp16_to_fp32(x16[i]) : lam_bf16_to_fp32(x16[i]);
                    }
                    for (size_t i = 0; i < (size_t)out * in; i++) {
                        W16[i] = ab == LAM_DT_F16 ? lam_fp32_to_fp16(cu_frand()) : lam_fp32_to_bf16(cu_frand());
                        W[i] = ab == LAM_DT_F16 ? lam_fp16_to_fp32(W16[i]) : lam_bf16_to_fp32(W16[i]);
                    }
                    for (int o = 0; o < out; o++)
                        bias[o] = cu_frand();
                    for (size_t i = 0; i < (size_t)n * out; i++) { /* the prior y, as stored */
                        lam_dtype_store(y + i * ys, (unsigned)ydt, 4.0f * cu_frand());
                        y0[i] = lam_dtype_load(y + i * ys, (unsigned)ydt);
                    }
                    lam_matmul_f32(ref, x, W, v == 2 ? bias : NULL, n, in, out);
                    cu_buf_t bx, bw, bb, by;
                    void *dx = cu_alloc(&bx, (size_t)n * in * 2, 0), *dw = cu_alloc(&bw, (size_t)out * in * 2, 0);
                    float *db = cu_alloc(&bb, out * 4, 0);
                    void *dy = cu_alloc(&by, (size_t)n * out * ys, 0);
                    cu_up(dx, x16, (size_t)n * in * 2);
                    cu_up(dw, W16, (size_t)out * in * 2);
                    cu_up(db, bias, out * 4);
                    cu_up(dy, y, (size_t)n * out * ys);
                    float beta = v == 1 ? 1.0f : 0.0f;
                    CU_ASSERT_FATAL(lam_cuda_gemm(h, dy, ydt, dx, dw, ab, v == 2 ? db : NULL, n, in, out, beta, 0) ==
                                    LAM_OK);
                    CU_ASSERT(cu_sync());
                    cu_down(y, dy, (size_t)n * out * ys);
                    bool ok = cu_guards_ok(&by);
                    double worst = 0;
                    for (int t = 0; t < n; t++)
                        for (int o = 0; o < out; o++) {
                            double mag = 0; /* sum |x w|: the scale of accumulation error */
                            for (int k = 0; k < in; k++)
                                mag += fabs((double)x[(size_t)t * in + k] * W[(size_t)o * in + k]);
                            size_t i = (size_t)t * out + o;
                            double want = ref[i] + beta * y0[i];
                            double tol = 1e-4 * (mag + fabs(beta * y0[i]) + (v == 2 ? fabs(bias[o]) : 0)) + 1e-6 +
                                         (ydt == LAM_DT_F16 ? fabs(want) * 0x1p-10 + 0x1p-24
                                          : ydt == LAM_DT_BF16 ? fabs(want) * 0x1p-7 : 0);
                            float got = lam_dtype_load(y + i * ys, (unsigned)ydt);
                            ok &= isfinite(got);
                            worst = fmax(worst, fabs(got - want) / tol);
                        }
                    if (!ok || worst > 1.0)
                        printf("\n  gemm %dx%dx%d %s -> %s v%d: err/tol %.3g ok %d\n", n, in, out,
                               lam_dtype_name((unsigned)ab), lam_dtype_name((unsigned)ydt), v, worst, ok);
                    CU_ASSERT(ok && worst <= 1.0);
                    cu_free(&bx);
                    cu_free(&bw);
                    cu_free(&bb);
                    cu_free(&by);
                    free(x);
                    free(W);
                    free(bias);
                    free(ref);
                    free(y0);
                    free(x16);
                    free(W16);
                    free(y);
                }
    lam_cuda_blas_destroy(h);
}

void cu_add_data_tests(void)
{
    CU_pSuite s = CU_add_suite("cuda_data", NULL, NULL);
    CU_add_test(s, "convert", test_convert);
    CU_add_test(s, "dequant_random", test_dequant_random);
    CU_add_test(s, "dequant_model", test_dequant_model);
    CU_add_test(s, "gemm", test_gemm);
}
