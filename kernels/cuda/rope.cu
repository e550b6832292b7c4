/* Rotary position embedding in place on f32 rows (adjacent-pair / NeoX). */
#include "kernels/cuda/internal.cuh"

/* One thread per (token, pair), looping over heads so the angle is computed
 * once. Products and sums use the _rn intrinsics: no FMA contraction, the
 * same arithmetic as lam_rope_f32. */
__global__ void lam_k_rope(float *x, int n_tok, int n_heads, int head_dim, int64_t row_stride, int n_rot,
                           const int32_t *pos, float theta, float freq_scale, const float *freq_div, int neox)
{
    int half = n_rot / 2;
    size_t total = (size_t)n_tok * (size_t)half;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int t = (int)(idx / (size_t)half), i = (int)(idx % (size_t)half);
        float e = __fdiv_rn(__fmul_rn(-2.0f, (float)i), (float)n_rot);
        float freq = (float)pow((double)theta, (double)e);
        if (freq_div)
            freq = __fdiv_rn(freq, freq_div[i]);
        float ang = __fmul_rn(__fmul_rn((float)pos[t], freq_scale), freq);
        float c = (float)cos((double)ang), s = (float)sin((double)ang);
        int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        float *xt = x + (size_t)t * (size_t)row_stride;
        for (int h = 0; h < n_heads; h++) {
            float *xh = xt + (size_t)h * head_dim;
            float x0 = xh[a], x1 = xh[b];
            xh[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
            xh[b] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
        }
    }
}

extern "C" lam_status_t lam_cuda_rope(float *x, int n_tok, int n_heads, int head_dim, int64_t row_stride, int n_rot,
                                      const int32_t *pos, float theta, float freq_scale, const float *freq_div,
                                      int neox, cudaStream_t stream)
{
    LAM_CU_ARG(x && pos, "cuda rope: NULL pointer");
    LAM_CU_ARG(n_tok >= 0 && n_heads > 0 && head_dim > 0, "cuda rope: bad shape %d x %d x %d", n_tok, n_heads,
               head_dim);
    LAM_CU_ARG(n_rot > 0 && n_rot % 2 == 0 && n_rot <= head_dim, "cuda rope: bad n_rot %d (head_dim %d)", n_rot,
               head_dim);
    LAM_CU_ARG(row_stride >= (int64_t)n_heads * head_dim, "cuda rope: row stride %lld < %d heads x %d",
               (long long)row_stride, n_heads, head_dim);
    LAM_CU_ARG(theta > 0.0f && isfinite(theta) && isfinite(freq_scale), "cuda rope: bad theta / freq_scale");
    LAM_CU_ARG(neox == 0 || neox == 1, "cuda rope: neox must be 0 or 1");
    LAM_CU_ARG(lam_cu_aligned(x, 4) && lam_cu_aligned(pos, 4) && lam_cu_aligned(freq_div, 4),
               "cuda rope: misaligned pointer");
    if (n_tok == 0)
        return LAM_OK;
    size_t total = (size_t)n_tok * (size_t)(n_rot / 2);
    lam_k_rope<<<lam_cu_blocks(total, 128, 8192), 128, 0, stream>>>(x, n_tok, n_heads, head_dim, row_stride, n_rot,
                                                                   pos, theta, freq_scale, freq_div, neox);
    LAM_CU_LAUNCHED();
    return LAM_OK;
}
