/* CPU kernels against plain double-precision references on fresh random
 * inputs (the seed is printed), awkward shapes, NaN/Inf checks and guard
 * values around every output. */
#include "common/dtype.h"
#include "kernels/cpu/attn.h"
#include "kernels/cpu/attn_internal.h"
#include "kernels/cpu/ops.h"

#include <omp.h>
#include <CUnit/Basic.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GUARD 16
#define GUARD_VAL 1234.5f

static float frand(void) { return (float)rand() / RAND_MAX * 2.0f - 1.0f; }

static float *guarded(size_t n)
{
    float *p = malloc((n + 2 * GUARD) * sizeof *p);
    for (size_t i = 0; i < n + 2 * GUARD; i++)
        p[i] = GUARD_VAL;
    return p + GUARD;
}

static bool guards_ok(const float *p, size_t n)
{
    for (int i = 1; i <= GUARD; i++)
        if (p[-i] != GUARD_VAL || p[n + i - 1] != GUARD_VAL)
            return false;
    return true;
}

static void guarded_free(float *p) { free(p - GUARD); }

/* Normalised mean squared error, as ggml's backend tests use. */
static double nmse(const float *y, const double *ref, size_t n)
{
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        e += (y[i] - ref[i]) * (y[i] - ref[i]);
        r += ref[i] * ref[i];
    }
    return r > 0 ? e / r : e;
}

static bool all_finite(const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(y[i]))
            return false;
    return true;
}

/* Every ISA against a double reference; then the batch split and the
 * thread count must not change a bit: each token alone, and the rows in
 * two ranges on one thread, give what the whole call gave. */
static void test_matmul(void)
{
    static const char *const isas[] = {"scalar", "avx2", "avx512"};
    int shapes[][3] = {{1, 576, 192}, {3, 37, 5},   {75, 64, 33},  {1, 1, 1},    {16, 1536, 7},
                       {5, 100, 129}, {8, 576, 67}, {130, 17, 21}, {9, 15, 4},   {6, 8, 3}};
    int n_isa = 0;
    for (int k = 0; k < 3; k++)
        if (!strcmp(lam_attn_isa(), isas[k]))
            n_isa = k + 1;
    CU_ASSERT_FATAL(n_isa > 0);
    for (int k = 0; k < n_isa; k++) {
        CU_ASSERT_FATAL(lam_attn_set_isa(isas[k]) == 0);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int T = shapes[s][0], I = shapes[s][1], O = shapes[s][2];
            float *x = malloc((size_t)T * I * 4), *W = malloc((size_t)O * I * 4), *bias = malloc(O * 4);
            float *y = guarded((size_t)T * O), *y1 = guarded((size_t)O);
            double *ref = malloc((size_t)T * O * sizeof *ref);
            for (int i = 0; i < T * I; i++) x[i] = frand();
            for (int i = 0; i < O * I; i++) W[i] = frand();
            for (int i = 0; i < O; i++) bias[i] = frand();
            for (int t = 0; t < T; t++)
                for (int o = 0; o < O; o++) {
                    double acc = bias[o];
                    for (int i = 0; i < I; i++)
                        acc += (double)x[t * I + i] * W[o * I + i];
                    ref[t * O + o] = acc;
                }
            lam_matmul_f32(y, x, W, bias, T, I, O);
            CU_ASSERT(guards_ok(y, (size_t)T * O));
            CU_ASSERT(all_finite(y, (size_t)T * O));
            double e = nmse(y, ref, (size_t)T * O);
            if (!(e < 1e-10))
                printf("\n  FAIL matmul isa=%s T=%d I=%d O=%d: nmse %.3g\n", isas[k], T, I, O, e);
            CU_ASSERT(e < 1e-10);
            int same = 1;
            for (int t = 0; t < T; t++) {
                lam_matmul_f32(y1, x + (size_t)t * I, W, bias, 1, I, O);
                same &= guards_ok(y1, (size_t)O) && !memcmp(y1, y + (size_t)t * O, (size_t)O * 4);
            }
            omp_set_num_threads(1);
            float *y2 = guarded((size_t)T * O);
            lam_matmul_f32(y2, x, W, bias, T, I, O);
            same &= !memcmp(y2, y, (size_t)T * O * 4);
            omp_set_num_threads(omp_get_num_procs());
            guarded_free(y2);
            if (!same)
                printf("\n  FAIL matmul isa=%s T=%d I=%d O=%d: results depend on the split\n", isas[k], T, I, O);
            CU_ASSERT(same);
            lam_matmul_f32(y, x, W, NULL, T, I, O);
            double e0 = 0;
            for (int t = 0; t < T; t++)
                for (int o = 0; o < O; o++)
                    e0 = fmax(e0, fabs(y[t * O + o] - (ref[t * O + o] - bias[o])));
            CU_ASSERT(e0 < 1e-3 * sqrt((double)I));
            free(x); free(W); free(bias); free(ref);
            guarded_free(y);
            guarded_free(y1);
        }
    }
    lam_attn_set_isa(isas[n_isa - 1]);
}

/* Random blocks: finite f16 scales (and Q4_1 minimums), random quants. */
static void rand_blocks(uint8_t *p, lam_qw_type_t type, int rows, int I)
{
    size_t rb = lam_qw_row_bytes(type, I), bb = type == LAM_QW_Q4_1 ? 20 : 34;
    for (size_t b = 0; b < (size_t)rows * rb / bb; b++, p += bb) {
        uint16_t d = lam_fp32_to_fp16(frand() * 0.05f), m = lam_fp32_to_fp16(frand() * 0.5f);
        memcpy(p, &d, 2);
        if (type == LAM_QW_Q4_1)
            memcpy(p + 2, &m, 2);
        for (size_t j = type == LAM_QW_Q4_1 ? 4 : 2; j < bb; j++)
            p[j] = (uint8_t)rand();
    }
}

/* lam_matmul_q against lam_matmul_f32 over the expanded rows, and the
 * expansion against ggml's formulas: the same bits, every ISA. */
static void test_matmul_blocks(void)
{
    static const char *const isas[] = {"scalar", "avx2", "avx512"};
    int shapes[][3] = {{1, 576, 192}, {3, 32, 5}, {16, 1536, 67}, {70, 64, 9}, {8, 576, 1}, {5, 96, 130},
                       {2, 64, 7}, {4, 160, 4}};
    int n_isa = 0;
    for (int k = 0; k < 3; k++)
        if (!strcmp(lam_attn_isa(), isas[k]))
            n_isa = k + 1;
    for (int qt = LAM_QW_Q4_1; qt <= LAM_QW_Q8_0; qt++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int T = shapes[s][0], I = shapes[s][1], O = shapes[s][2];
            size_t rb = lam_qw_row_bytes((lam_qw_type_t)qt, I);
            uint8_t *Wq = malloc((size_t)O * rb);
            rand_blocks(Wq, (lam_qw_type_t)qt, O, I);
            float *W = malloc((size_t)O * I * 4), *W2 = malloc((size_t)O * I * 4), *x = malloc((size_t)T * I * 4);
            float *bias = malloc((size_t)O * 4), *y = guarded((size_t)T * O), *yq = guarded((size_t)T * O);
            for (int i = 0; i < T * I; i++) x[i] = frand();
            for (int i = 0; i < O; i++) bias[i] = frand();
            /* ggml's formulas in float, each operation rounded (as common/dequant.c) */
            for (int o = 0; o < O; o++)
                for (int b = 0; b < I / 32; b++) {
                    const uint8_t *p = Wq + (size_t)o * rb + (size_t)b * (qt == LAM_QW_Q4_1 ? 20 : 34);
                    uint16_t h[2];
                    memcpy(h, p, 4);
                    float d = lam_fp16_to_fp32(h[0]), mn = lam_fp16_to_fp32(h[1]);
                    for (int j = 0; j < 32; j++) {
                        float q = qt == LAM_QW_Q4_1 ? (float)(j < 16 ? p[4 + j] & 0xf : p[4 + j - 16] >> 4)
                                                    : (float)(int8_t)p[2 + j];
                        float v = q * d;
                        W2[(size_t)o * I + b * 32 + j] = qt == LAM_QW_Q4_1 ? v + mn : v;
                    }
                }
            for (int k = 0; k < n_isa; k++) {
                CU_ASSERT_FATAL(lam_attn_set_isa(isas[k]) == 0);
                for (int o = 0; o < O; o++)
                    lam_dequant_qw(W + (size_t)o * I, Wq + (size_t)o * rb, (lam_qw_type_t)qt, I);
                bool exp_ok = !memcmp(W, W2, (size_t)O * I * 4);
                CU_ASSERT(exp_ok);
                lam_matmul_f32(y, x, W, bias, T, I, O);
                lam_matmul_q(yq, x, Wq, (lam_qw_type_t)qt, bias, T, I, O);
                bool same = guards_ok(yq, (size_t)T * O) && !memcmp(y, yq, (size_t)T * O * 4);
                if (!same || !exp_ok)
                    printf("\n  FAIL matmul_q isa=%s %s T=%d I=%d O=%d: product %s, expansion %s\n", isas[k],
                           qt == LAM_QW_Q4_1 ? "Q4_1" : "Q8_0", T, I, O, same ? "same" : "DIFFERENT",
                           exp_ok ? "same" : "DIFFERENT");
                CU_ASSERT(same);
                lam_matmul_q(yq, x, Wq, (lam_qw_type_t)qt, NULL, T, I, O);
                lam_matmul_f32(y, x, W, NULL, T, I, O);
                CU_ASSERT(!memcmp(y, yq, (size_t)T * O * 4));
            }
            lam_attn_set_isa(isas[n_isa - 1]);
            free(Wq); free(W); free(W2); free(x); free(bias);
            guarded_free(y);
            guarded_free(yq);
        }
}

static void test_rmsnorm_swiglu_softmax(void)
{
    int n = 577;
    float *x = malloc(n * 4), *w = malloc(n * 4), *y = guarded(n), *u = malloc(n * 4);
    double *ref = malloc(n * sizeof *ref);
    for (int i = 0; i < n; i++) { x[i] = frand() * 3; w[i] = frand(); u[i] = frand(); }
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    for (int i = 0; i < n; i++) ref[i] = x[i] / sqrt(ss / n + 1e-5) * w[i];
    lam_rmsnorm_f32(y, x, w, n, 1e-5f);
    CU_ASSERT(guards_ok(y, n) && nmse(y, ref, n) < 1e-12);

    memcpy(y, x, n * 4);
    for (int i = 0; i < n; i++) ref[i] = x[i] / (1 + exp(-(double)x[i])) * u[i];
    lam_swiglu_f32(y, u, n);
    CU_ASSERT(guards_ok(y, n) && nmse(y, ref, n) < 1e-12);

    memcpy(y, x, n * 4);
    y[3] = 80.0f; /* large logit: must not overflow */
    double mx = 80.0, sum = 0;
    for (int i = 0; i < n; i++) sum += exp((i == 3 ? 80.0 : x[i]) - mx);
    for (int i = 0; i < n; i++) ref[i] = exp((i == 3 ? 80.0 : x[i]) - mx) / sum;
    lam_softmax_f32(y, n);
    CU_ASSERT(guards_ok(y, n) && all_finite(y, n) && nmse(y, ref, n) < 1e-12);
    free(x); free(w); free(u); free(ref);
    guarded_free(y);
}

/* Every ISA: random gates over the range where SiLU bends, large ones
 * where e^-g over- or underflows, and the special values; within 4 ulp of
 * the double result, infinite where that is beyond f32, NaN where it is
 * NaN, and no element past n written. */
static void test_swiglu(void)
{
    static const char *const isas[] = {"scalar", "avx2", "avx512"};
    static const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 88.5f, -88.5f, 87.0f, -87.0f, 89.5f,
                                    -89.5f, 103.0f, -103.0f, 105.0f, -105.0f, 1e-30f, -1e-30f, 3e38f, -3e38f};
    const int ns = (int)(sizeof special / sizeof special[0]);
    int n_isa = 0;
    for (int k = 0; k < 3; k++)
        if (!strcmp(lam_attn_isa(), isas[k]))
            n_isa = k + 1;
    CU_ASSERT_FATAL(n_isa > 0);
    const int sizes[] = {1, 7, 8, 15, 16, 17, 33, 1000};
    for (int k = 0; k < n_isa; k++) {
        CU_ASSERT_FATAL(lam_attn_set_isa(isas[k]) == 0);
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            int n = sizes[z];
            float *g = guarded(n), *u = malloc(n * sizeof *u), *g0 = malloc(n * sizeof *g0);
            for (int i = 0; i < n; i++) {
                g0[i] = i % 5 == 4 ? special[(i / 5 + (int)z) % ns] : i % 3 ? frand() * 12 : frand() * 120;
                u[i] = i % 7 == 6 ? 1.0f : frand() * 4;
            }
            memcpy(g, g0, n * sizeof *g);
            lam_swiglu_f32(g, u, n);
            int bad = 0;
            for (int i = 0; i < n; i++) {
                double ref = (double)g0[i] / (1 + exp(-(double)g0[i])) * u[i];
                if (isnan(ref)) {
                    bad += !isnan(g[i]);
                    continue;
                }
                if (isinf((float)ref)) { /* beyond f32 */
                    bad += g[i] != (float)ref;
                    continue;
                }
                /* below 1e-35 in magnitude: the f32 formula's 1 + e^-g
                 * overflows first (g < -88.7) and gives a signed zero */
                double tol = 4 * ldexp(fabs(ref), -23) + 1e-35;
                if (!(fabs(g[i] - ref) <= tol)) {
                    if (bad < 4)
                        printf("\n  %s: swiglu(%g, %g) = %.9g, want %.9g", isas[k], g0[i], u[i], g[i], ref);
                    bad++;
                }
            }
            CU_ASSERT(bad == 0);
            CU_ASSERT(guards_ok(g, n));
            guarded_free(g);
            free(u);
            free(g0);
        }
    }
    lam_attn_set_isa(isas[n_isa - 1]);
}

static void test_rope(void)
{
    int heads = 3, hd = 64, n_rot = 64;
    float theta = 100000.0f;
    for (int neox = 0; neox <= 1; neox++)
        for (int pos = 0; pos < 300; pos += 37) {
            float *x = guarded((size_t)heads * hd);
            double *ref = malloc((size_t)heads * hd * sizeof *ref);
            for (int i = 0; i < heads * hd; i++) x[i] = frand();
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < n_rot / 2; i++) {
                    int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
                    double ang = pos * pow(theta, -2.0 * i / n_rot);
                    double x0 = x[h * hd + a], x1 = x[h * hd + b];
                    ref[h * hd + a] = x0 * cos(ang) - x1 * sin(ang);
                    ref[h * hd + b] = x0 * sin(ang) + x1 * cos(ang);
                }
            lam_rope_f32(x, heads, hd, n_rot, pos, theta, 1.0f, NULL, neox);
            CU_ASSERT(guards_ok(x, (size_t)heads * hd));
            CU_ASSERT(nmse(x, ref, (size_t)heads * hd) < 1e-9);
            free(ref);
            guarded_free(x);
        }
}

static void test_attention(void)
{
    int cases[][4] = {{9, 3, 64, 1}, {9, 3, 64, 37}, {8, 1, 16, 75}, {4, 4, 8, 3}, {24, 3, 32, 129}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int H = cases[c][0], KV = cases[c][1], hd = cases[c][2], n = cases[c][3], stride = KV * hd;
        float *q = malloc((size_t)H * hd * 4), *K = malloc((size_t)n * stride * 4), *V = malloc((size_t)n * stride * 4);
        float *out = guarded((size_t)H * hd), *scratch = malloc(n * 4);
        double *ref = calloc((size_t)H * hd, sizeof *ref), *p = malloc(n * sizeof *p);
        for (int i = 0; i < H * hd; i++) q[i] = frand() * 2;
        for (int i = 0; i < n * stride; i++) { K[i] = frand() * 2; V[i] = frand(); }
        for (int h = 0; h < H; h++) {
            int g = h / (H / KV);
            double mx = -1e300, sum = 0;
            for (int t = 0; t < n; t++) {
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)q[h * hd + d] * K[t * stride + g * hd + d];
                p[t] = s / sqrt((double)hd);
                mx = fmax(mx, p[t]);
            }
            for (int t = 0; t < n; t++) { p[t] = exp(p[t] - mx); sum += p[t]; }
            for (int t = 0; t < n; t++)
                for (int d = 0; d < hd; d++) ref[h * hd + d] += p[t] / sum * V[t * stride + g * hd + d];
        }
        lam_attn_ref_f32(out, q, K, V, n, H, KV, hd, stride, scratch);
        CU_ASSERT(guards_ok(out, (size_t)H * hd) && all_finite(out, (size_t)H * hd));
        CU_ASSERT(nmse(out, ref, (size_t)H * hd) < 1e-10);
        free(q); free(K); free(V); free(scratch); free(ref); free(p);
        guarded_free(out);
    }
}

static void test_act_round(void)
{
    int n = 512;
    float *x = malloc(n * 4), *y = guarded(n), *corr = malloc((n / 32) * 4);
    for (int i = 0; i < n; i++) x[i] = frand() * 5;
    lam_act_round_q8_32(y, x, n, corr);
    CU_ASSERT(guards_ok(y, n));
    for (int b = 0; b < n; b += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b + j]));
        float d = lam_fp16_to_fp32(lam_fp32_to_fp16(amax / 127));
        for (int j = 0; j < 32; j++) {
            float q = y[b + j] / d;
            CU_ASSERT(fabsf(q - rintf(q)) < 1e-3f && fabsf(q) <= 127.5f); /* an integer multiple of d */
            CU_ASSERT(fabsf(y[b + j] - x[b + j]) <= 0.51f * amax / 127 + 1e-3f * amax);
        }
    }
    lam_act_round_q8_k(y, x, n);
    CU_ASSERT(guards_ok(y, n));
    for (int i = 0; i < n; i++)
        CU_ASSERT(fabsf(y[i] - x[i]) <= 5.0f / 127 * 0.51f + 1e-4f);
    free(x); free(corr);
    guarded_free(y);
}

static void test_fp16_roundtrip(void)
{
    /* every fp16 value converts to float and back unchanged (NaNs stay NaN) */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lam_fp16_to_fp32((uint16_t)h);
        uint16_t back = lam_fp32_to_fp16(f);
        if (isnan(f)) {
            CU_ASSERT(isnan(lam_fp16_to_fp32(back)));
        } else {
            CU_ASSERT(back == h);
        }
    }
    CU_ASSERT(lam_fp32_to_fp16(65520.0f) == 0x7c00);            /* rounds to inf */
    CU_ASSERT(lam_fp32_to_fp16(1.0f + 1.0f / 2048) == 0x3c00);  /* tie to even */
    CU_ASSERT(lam_fp32_to_fp16(5.9604645e-08f) == 0x0001);       /* smallest subnormal */
    CU_ASSERT(lam_bf16_to_fp32(lam_fp32_to_bf16(1.5f)) == 1.5f);
}

int main(void)
{
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    printf("kernel test seed %u\n", seed);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("cpu_kernels", NULL, NULL);
    CU_add_test(s, "matmul", test_matmul);
    CU_add_test(s, "matmul_blocks", test_matmul_blocks);
    CU_add_test(s, "rmsnorm_swiglu_softmax", test_rmsnorm_swiglu_softmax);
    CU_add_test(s, "swiglu", test_swiglu);
    CU_add_test(s, "rope", test_rope);
    CU_add_test(s, "attention", test_attention);
    CU_add_test(s, "activation_rounding", test_act_round);
    CU_add_test(s, "fp16_roundtrip", test_fp16_roundtrip);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
