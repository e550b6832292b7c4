/* Row ops on the device against kernels/cpu/ops.c: embed, rmsnorm, rope,
 * swiglu, add, argmax. Outputs sit in guarded, NaN-filled buffers; every
 * check reports the worst error against its budget. */
#include "common/dtype.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/lam_cuda.h"
#include "tests/cuda_kernels/cu_util.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int g_rows[] = {1, 3, 75};

/* Spacing of dtype dt near |v|, an upper bound (for "within one rounding"). */
static double dt_ulp(int dt, double v)
{
    v = fabs(v);
    return dt == LAM_DT_F16 ? v * 0x1p-10 + 0x1p-24 : dt == LAM_DT_BF16 ? v * 0x1p-7 + 0x1p-133 : v * 0x1p-23;
}

static float round_to(int dt, float v)
{
    uint8_t b[4];
    lam_dtype_store(b, (unsigned)dt, v);
    return lam_dtype_load(b, (unsigned)dt);
}

/* ---- embed ------------------------------------------------------------------ */

static void test_embed(void)
{
    const int dims[] = {576, 33, 1};
    for (int dt = 0; dt < LAM_DT_END; dt++)
        for (int di = 0; di < 3; di++)
            for (int ri = 0; ri < 3; ri++) {
                int vocab = 1000, dim = dims[di], n = g_rows[ri];
                size_t esz = lam_dtype_size((unsigned)dt);
                uint8_t *tab = malloc((size_t)vocab * dim * esz);
                for (size_t i = 0; i < (size_t)vocab * dim; i++)
                    lam_dtype_store(tab + i * esz, (unsigned)dt, 3.0f * cu_frand());
                int32_t *tok = malloc(n * sizeof *tok);
                for (int i = 0; i < n; i++)
                    tok[i] = i % 7 == 5 ? (i % 2 ? -1 : vocab) : cu_irand(vocab); /* some out of range */
                cu_buf_t bt, bk, bx;
                void *dtab = cu_alloc(&bt, (size_t)vocab * dim * esz, 0);
                int32_t *dtok = cu_alloc(&bk, n * sizeof *tok, 0);
                float *dx = cu_alloc(&bx, (size_t)n * dim * 4, 0xff);
                cu_up(dtab, tab, (size_t)vocab * dim * esz);
                cu_up(dtok, tok, n * sizeof *tok);
                CU_ASSERT_FATAL(lam_cuda_embed(dx, dtab, dt, vocab, dim, dtok, n, 0) == LAM_OK);
                CU_ASSERT(cu_sync());
                float *x = malloc((size_t)n * dim * 4);
                cu_down(x, dx, (size_t)n * dim * 4);
                bool ok = cu_guards_ok(&bx);
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < dim; j++) {
                        float got = x[(size_t)i * dim + j];
                        if (tok[i] < 0 || tok[i] >= vocab)
                            ok &= isnan(got);
                        else
                            ok &= lam_fp32_to_bits(got) ==
                                  lam_fp32_to_bits(lam_dtype_load(tab + ((size_t)tok[i] * dim + j) * esz, (unsigned)dt));
                    }
                if (!ok)
                    printf("\n  embed %s dim %d n %d: mismatch or guard\n", lam_dtype_name((unsigned)dt), dim, n);
                CU_ASSERT(ok);
                cu_free(&bt);
                cu_free(&bk);
                cu_free(&bx);
                free(tab);
                free(tok);
                free(x);
            }
}

/* ---- rmsnorm --------------------------------------------------------------------- */

static void test_rmsnorm(void)
{
    const int dims[] = {576, 1, 33, 4097};
    for (int di = 0; di < 4; di++)
        for (int ri = 0; ri < 3; ri++)
            for (int lo = 0; lo < LAM_DT_END; lo++)
                for (int inplace = 0; inplace < 2; inplace++) {
                    int dim = dims[di], n = g_rows[ri];
                    size_t ne = (size_t)n * dim, lsz = lam_dtype_size((unsigned)lo);
                    float *x = malloc(ne * 4), *w = malloc(dim * 4), *ref = malloc(ne * 4);
                    float *y = malloc(ne * 4);
                    uint8_t *ylo = malloc(ne * lsz);
                    float xs = (float)(1 + cu_irand(100));
                    for (size_t i = 0; i < ne; i++)
                        x[i] = xs * cu_frand();
                    for (int j = 0; j < dim; j++)
                        w[j] = cu_frand() * 2.0f;
                    for (int i = 0; i < n; i++)
                        lam_rmsnorm_f32(ref + (size_t)i * dim, x + (size_t)i * dim, w, dim, 1e-5f);
                    cu_buf_t bx, bw, by, bl;
                    float *dx = cu_alloc(&bx, ne * 4, 0), *dw = cu_alloc(&bw, dim * 4, 0);
                    float *dy = inplace ? dx : cu_alloc(&by, ne * 4, 0xff);
                    void *dl = cu_alloc(&bl, ne * lsz, 0xff);
                    cu_up(dx, x, ne * 4);
                    cu_up(dw, w, dim * 4);
                    CU_ASSERT_FATAL(lam_cuda_rmsnorm(dy, dl, lo, dx, dw, n, dim, 1e-5f, 0) == LAM_OK);
                    CU_ASSERT(cu_sync());
                    cu_down(y, dy, ne * 4);
                    cu_down(ylo, dl, ne * lsz);
                    bool ok = cu_guards_ok(&bx) && cu_guards_ok(&bl) && (inplace || cu_guards_ok(&by));
                    double err = 0, rmax = 0;
                    for (size_t i = 0; i < ne; i++)
                        rmax = fmax(rmax, fabs(ref[i]));
                    for (size_t i = 0; i < ne; i++) {
                        err = fmax(err, fabs((double)y[i] - ref[i]));
                        /* the low-precision copy is the f32 result rounded */
                        ok &= lam_fp32_to_bits(lam_dtype_load(ylo + i * lsz, (unsigned)lo)) ==
                              lam_fp32_to_bits(round_to(lo, y[i]));
                        ok &= isfinite(y[i]);
                    }
                    double tol = 1e-5 * rmax;
                    if (!ok || !(err <= tol))
                        printf("\n  rmsnorm dim %d n %d lo %s inplace %d: err %.3g (tol %.3g) ok %d\n", dim, n,
                               lam_dtype_name((unsigned)lo), inplace, err, tol, ok);
                    CU_ASSERT(ok && err <= tol);
                    cu_free(&bx);
                    cu_free(&bw);
                    cu_free(&bl);
                    if (!inplace)
                        cu_free(&by);
                    free(x);
                    free(w);
                    free(ref);
                    free(y);
                    free(ylo);
                }
}

/* ---- rope ------------------------------------------------------------------------- */

static void test_rope(void)
{
    for (int c = 0; c < (g_quick ? 12 : 40); c++) {
        int n = g_rows[c % 3], hd = c % 4 == 3 ? 128 : 64;
        int n_heads = c % 5 == 4 ? 1 : 12, n_rot = c % 6 == 5 ? hd / 2 : hd;
        int64_t stride = (int64_t)(n_heads + 3) * hd + (c % 2); /* a fused QKV row: the tail is not touched */
        float theta = c % 3 == 0 ? 1e4f : c % 3 == 1 ? 1e5f : 5e5f;
        float fscale = c % 4 == 2 ? 0.25f : 1.0f;
        int neox = c % 2, use_div = c % 7 == 3;
        int max_pos = c % 4 == 0 ? 100000 : 4096;
        size_t ne = (size_t)n * stride;
        float *x = malloc(ne * 4), *ref = malloc(ne * 4), *y = malloc(ne * 4), *div = malloc(hd * 4);
        int32_t *pos = malloc(n * 4);
        for (size_t i = 0; i < ne; i++)
            x[i] = ref[i] = cu_frand();
        for (int i = 0; i < hd / 2; i++)
            div[i] = 1.0f + 7.0f * (cu_frand() + 1.0f) / 2.0f;
        for (int t = 0; t < n; t++) {
            pos[t] = t == 0 ? max_pos - 1 : cu_irand(max_pos);
            lam_rope_f32(ref + t * stride, n_heads, hd, n_rot, pos[t], theta, fscale, use_div ? div : NULL, neox);
        }
        cu_buf_t bx, bp, bd;
        float *dx = cu_alloc(&bx, ne * 4, 0), *dd = cu_alloc(&bd, hd * 2, 0);
        int32_t *dp = cu_alloc(&bp, n * 4, 0);
        cu_up(dx, x, ne * 4);
        cu_up(dp, pos, n * 4);
        cu_up(dd, div, hd / 2 * 4);
        CU_ASSERT_FATAL(lam_cuda_rope(dx, n, n_heads, hd, stride, n_rot, dp, theta, fscale, use_div ? dd : NULL,
                                      neox, 0) == LAM_OK);
        CU_ASSERT(cu_sync());
        cu_down(y, dx, ne * 4);
        bool ok = cu_guards_ok(&bx);
        double worst = 0;
        /* The device takes the power in f64 and rounds it; where glibc's powf
         * rounds differently by an ulp, the f32 angle at position p moves by
         * up to ~p * 2^-23, and the budget has to allow it. */
        bool same_freq = true;
        for (int i = 0; i < n_rot / 2; i++) {
            float e = -2.0f * (float)i / (float)n_rot;
            same_freq &= powf(theta, e) == (float)pow((double)theta, (double)e);
        }
        for (int t = 0; t < n; t++) {
            double tol = 2e-6 + (same_freq ? 0.0 : 2.0 * (double)pos[t] * fscale * 0x1p-23);
            for (int64_t i = 0; i < stride; i++) {
                size_t k = (size_t)t * stride + i;
                double d = fabs((double)y[k] - ref[k]);
                if (i >= (int64_t)n_heads * hd)
                    ok &= lam_fp32_to_bits(y[k]) == lam_fp32_to_bits(x[k]); /* untouched */
                ok &= isfinite(y[k]);
                worst = fmax(worst, d / tol);
            }
        }
        if (!ok || worst > 1.0)
            printf("\n  rope case %d (n %d heads %d hd %d rot %d theta %g neox %d div %d): err/tol %.3g ok %d\n", c,
                   n, n_heads, hd, n_rot, theta, neox, use_div, worst, ok);
        CU_ASSERT(ok && worst <= 1.0);
        cu_free(&bx);
        cu_free(&bp);
        cu_free(&bd);
        free(x);
        free(ref);
        free(y);
        free(div);
        free(pos);
    }
}

/* ---- swiglu ---------------------------------------------------------------------- */

static void test_swiglu(void)
{
    const int ns[] = {1536, 7, 1};
    for (int dt = 0; dt < LAM_DT_END; dt++)
        for (int ni = 0; ni < 3; ni++)
            for (int ri = 0; ri < 3; ri++) {
                int n = ns[ni], rows = g_rows[ri];
                int64_t stride = 2 * (int64_t)n + 1; /* [gate | up | pad] per row */
                size_t esz = lam_dtype_size((unsigned)dt), nin = (size_t)rows * stride, nout = (size_t)rows * n;
                float *gu = malloc(nin * 4), *ref = malloc(nout * 4);
                uint8_t *y = malloc(nout * esz);
                for (size_t i = 0; i < nin; i++)
                    gu[i] = 12.0f * cu_frand();
                for (int r = 0; r < rows; r++) {
                    memcpy(ref + (size_t)r * n, gu + r * stride, n * 4);
                    lam_swiglu_f32(ref + (size_t)r * n, gu + r * stride + n, n);
                }
                cu_buf_t bi, bo;
                float *din = cu_alloc(&bi, nin * 4, 0);
                void *dout = cu_alloc(&bo, nout * esz, 0xff);
                cu_up(din, gu, nin * 4);
                CU_ASSERT_FATAL(lam_cuda_swiglu(dout, dt, din, stride, din + n, stride, rows, n, 0) == LAM_OK);
                CU_ASSERT(cu_sync());
                cu_down(y, dout, nout * esz);
                bool ok = cu_guards_ok(&bo);
                double worst = 0;
                for (size_t i = 0; i < nout; i++) {
                    float got = lam_dtype_load(y + i * esz, (unsigned)dt);
                    /* CUDA expf and lam_swiglu_f32 (libm or a SIMD e^x) are each a few ulp
                     * off the exact result; then one rounding to dt */
                    double tol = 1e-6 * fabs(ref[i]) + 1e-30 + (dt == LAM_DT_F32 ? 0 : dt_ulp(dt, ref[i]));
                    worst = fmax(worst, fabs((double)got - ref[i]) / tol);
                    ok &= isfinite(got);
                }
                if (!ok || worst > 1.0)
                    printf("\n  swiglu %s n %d rows %d: err/tol %.3g ok %d\n", lam_dtype_name((unsigned)dt), n, rows,
                           worst, ok);
                CU_ASSERT(ok && worst <= 1.0);
                cu_free(&bi);
                cu_free(&bo);
                free(gu);
                free(ref);
                free(y);
            }
}

/* ---- add --------------------------------------------------------------------------- */

static void test_add(void)
{
    const size_t ns[] = {1, 1000, 100003};
    for (int ni = 0; ni < 3; ni++)
        for (int inplace = 0; inplace < 2; inplace++) {
            size_t n = ns[ni];
            float *a = malloc(n * 4), *b = malloc(n * 4), *y = malloc(n * 4);
            for (size_t i = 0; i < n; i++) {
                a[i] = 100.0f * cu_frand();
                b[i] = cu_frand();
            }
            cu_buf_t ba, bb, by;
            float *da = cu_alloc(&ba, n * 4, 0), *db = cu_alloc(&bb, n * 4, 0);
            float *dy = inplace ? da : cu_alloc(&by, n * 4, 0xff);
            cu_up(da, a, n * 4);
            cu_up(db, b, n * 4);
            CU_ASSERT_FATAL(lam_cuda_add(dy, da, db, n, 0) == LAM_OK);
            CU_ASSERT(cu_sync());
            cu_down(y, dy, n * 4);
            bool ok = cu_guards_ok(&ba) && (inplace || cu_guards_ok(&by));
            for (size_t i = 0; i < n; i++)
                ok &= y[i] == a[i] + b[i];
            CU_ASSERT(ok);
            cu_free(&ba);
            cu_free(&bb);
            if (!inplace)
                cu_free(&by);
            free(a);
            free(b);
            free(y);
        }
}

/* ---- argmax ------------------------------------------------------------------------ */

static void test_argmax(void)
{
    const int ns[] = {49152, 1, 33, 1000};
    for (int ni = 0; ni < 4; ni++)
        for (int ri = 0; ri < 3; ri++) {
            int n = ns[ni], rows = g_rows[ri] + 4; /* + the special rows below */
            int64_t stride = n + 5;
            size_t ne = (size_t)rows * stride;
            float *x = malloc(ne * 4);
            for (size_t i = 0; i < ne; i++)
                x[i] = 10.0f * cu_frand();
            for (int r = 0; r < rows; r++) {
                float *xr = x + r * stride;
                switch (r) {
                case 0: /* a NaN at 0: the CPU answer is 0 */
                    xr[0] = NAN;
                    break;
                case 1: /* all -inf */
                    for (int j = 0; j < n; j++)
                        xr[j] = -INFINITY;
                    break;
                case 2: /* NaNs elsewhere, a tie for the max */
                    for (int j = 1; j < n; j += 3)
                        xr[j] = NAN;
                    if (n > 5) {
                        xr[n - 1] = 20.0f;
                        xr[2] = 20.0f;
                    }
                    break;
                case 3: /* -0 and +0 tie */
                    for (int j = 0; j < n; j++)
                        xr[j] = -1.0f;
                    xr[n - 1] = 0.0f;
                    xr[n / 2] = -0.0f;
                    break;
                default: /* ties at random places */
                    if (n > 1) {
                        int a = cu_irand(n), b = cu_irand(n);
                        xr[a] = xr[b] = 11.0f;
                    }
                }
            }
            cu_buf_t bx, bo;
            float *dx = cu_alloc(&bx, ne * 4, 0);
            int32_t *dout = cu_alloc(&bo, rows * 4, 0xff);
            cu_up(dx, x, ne * 4);
            CU_ASSERT_FATAL(lam_cuda_argmax(dout, dx, stride, rows, n, 0) == LAM_OK);
            CU_ASSERT(cu_sync());
            int32_t *out = malloc(rows * 4);
            cu_down(out, dout, rows * 4);
            bool ok = cu_guards_ok(&bo);
            for (int r = 0; r < rows; r++) {
                int32_t want = lam_argmax_f32(x + r * stride, n);
                if (out[r] != want) {
                    printf("\n  argmax n %d row %d: %d, want %d\n", n, r, out[r], want);
                    ok = false;
                }
            }
            CU_ASSERT(ok);
            cu_free(&bx);
            cu_free(&bo);
            free(x);
            free(out);
        }
}

void cu_add_op_tests(void)
{
    CU_pSuite s = CU_add_suite("cuda_ops", NULL, NULL);
    CU_add_test(s, "embed", test_embed);
    CU_add_test(s, "rmsnorm", test_rmsnorm);
    CU_add_test(s, "rope", test_rope);
    CU_add_test(s, "swiglu", test_swiglu);
    CU_add_test(s, "add", test_add);
    CU_add_test(s, "argmax", test_argmax);
}
