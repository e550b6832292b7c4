/* Temperature / top-k / top-p sampling, one block per row, no sorting.
 *
 * Tokens are ordered by a 64-bit key: the logit made order-preserving as an
 * unsigned integer in the high bits, (idmask - id) in the low bits, so a
 * larger key means "earlier" (larger logit, then lower id) and keys are
 * unique. Every selection the sampler needs is "the first token, in key
 * order, whose cumulative weight reaches T": top-k (weight 1, T = k), the
 * top-p cut (T = ceil(top_p * Z)) and the draw itself (T = floor(u * mass)
 * + 1). A radix descent finds it: 8 bits of the key per pass, a 256-bin
 * histogram of weights among the tokens that match the bits chosen so far,
 * then the bin where the running sum from the top crosses T. Weights are
 * fixed point (2^40 = weight 1) in 64-bit integers, so sums are exact and
 * the result does not depend on the order of the atomic adds. */
#include "kernels/cuda/internal.cuh"

#include <float.h>

#define SAMPLE_THREADS 512
#define W_ONE 1099511627776.0f /* 2^40 */

typedef unsigned long long u64;

struct row_ctx {
    const float *x;
    int n;
    int idbits;
    float mx, t; /* row max, temperature */
};

__device__ __forceinline__ u64 key_of(const row_ctx &c, int j)
{
    float v = c.x[j];
    uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v); /* -0 ties with +0, as the CPU compares */
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    if (isnan(v))
        u = 0x007fffffu; /* ordered as -inf */
    u64 idmask = (1ull << c.idbits) - 1;
    return ((u64)u << c.idbits) | (idmask - (u64)j);
}

__device__ __forceinline__ u64 weight_of(const row_ctx &c, int j)
{
    float v = c.x[j];
    if (isnan(v))
        return 0;
    /* as the CPU sampler: expf((logit - max) / temperature) */
    float e = expf((v - c.mx) / c.t);
    return __float2ull_rn(e * W_ONE);
}

/* Shared state of one descent. */
struct descent_smem {
    u64 hist[256];
    u64 sel_above, sel_cum;
    int sel_bin;
};

/* The key of the first token, in key order, whose inclusive cumulative
 * weight reaches target (count: every weight is 1). *cum gets that
 * cumulative weight. target must be in [1, total weight]. */
__device__ u64 descend(const row_ctx &c, bool count, u64 target, descent_smem &sm, u64 *cum)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int keybits = 32 + c.idbits;
    u64 prefix = 0, mask = 0, above = 0, cum_incl = 0;
    for (int shift = ((keybits + 7) / 8 - 1) * 8; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x)
            sm.hist[b] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < c.n; j += blockDim.x) {
            u64 k = key_of(c, j);
            if ((k & mask) == prefix) {
                u64 w = count ? 1 : weight_of(c, j);
                if (w)
                    atomicAdd(&sm.hist[(k >> shift) & 255], w);
            }
        }
        __syncthreads();
        if (warp == 0) {
            /* lane l owns bins 255 - 8l down to 248 - 8l (the top bins first) */
            u64 mine = 0;
            for (int t = 0; t < 8; t++)
                mine += sm.hist[255 - 8 * lane - t];
            u64 incl = mine;
            for (int o = 1; o < 32; o <<= 1) {
                u64 t = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o)
                    incl += t;
            }
            unsigned hit = __ballot_sync(0xffffffffu, above + incl >= target);
            int first = hit ? __ffs(hit) - 1 : 31; /* not reached: only if target > total */
            if (lane == first) {
                u64 run = above + incl - mine;
                int sel = 248 - 8 * lane;
                for (int t = 0; t < 8; t++) {
                    int bin = 255 - 8 * lane - t;
                    if (run + sm.hist[bin] >= target || t == 7) {
                        sel = bin;
                        break;
                    }
                    run += sm.hist[bin];
                }
                sm.sel_bin = sel;
                sm.sel_above = run;
                sm.sel_cum = run + sm.hist[sel];
            }
        }
        __syncthreads();
        prefix |= (u64)sm.sel_bin << shift;
        mask |= 255ull << shift;
        above = sm.sel_above;
        cum_incl = sm.sel_cum;
        __syncthreads(); /* sm is rewritten by the next pass */
    }
    *cum = cum_incl;
    return prefix;
}

__device__ u64 block_sum_u64(u64 v, u64 *red)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
    lam_k_sample(int32_t *out, const float *x, int64_t stride, int n_rows, int n, int idbits,
                 const lam_cuda_sample_row_t *params)
{
    __shared__ descent_smem sm;
    __shared__ float sv[32], fred[32];
    __shared__ int si[32], ires;
    __shared__ u64 ured[32];
    for (int r = blockIdx.x; r < n_rows; r += gridDim.x) {
        row_ctx c;
        c.x = x + (size_t)r * (size_t)stride;
        c.n = n;
        c.idbits = idbits;
        lam_cuda_sample_row_t p = params[r];
        int greedy_tok = lam_d_block_argmax(c.x, n, sv, si, &ires);
        /* the max over non-NaN logits */
        float mx = -INFINITY;
        for (int j = threadIdx.x; j < n; j += blockDim.x)
            mx = fmaxf(mx, c.x[j]);
        for (int o = 16; o > 0; o >>= 1)
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        __syncthreads();
        if ((threadIdx.x & 31) == 0)
            fred[threadIdx.x >> 5] = mx;
        __syncthreads();
        mx = fred[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            mx = fmaxf(mx, fred[w]);
        if (!(p.temperature > 0.0f) || !isfinite(mx)) {
            if (threadIdx.x == 0)
                out[r] = greedy_tok;
            continue;
        }
        c.mx = mx;
        c.t = p.temperature;
        u64 cum;
        /* top-k: candidates are the keys >= kcut */
        u64 kcut = 0;
        if (p.top_k > 0 && p.top_k < n)
            kcut = descend(c, true, (u64)p.top_k, sm, &cum);
        u64 z = 0;
        for (int j = threadIdx.x; j < n; j += blockDim.x)
            if (key_of(c, j) >= kcut)
                z += weight_of(c, j);
        z = block_sum_u64(z, ured);
        /* top-p: the shortest prefix whose weight reaches top_p * z */
        u64 mass = z;
        if (p.top_p > 0.0f && p.top_p < 1.0f) {
            double t = ceil((double)p.top_p * (double)z);
            u64 target = t < 1.0 ? 1 : t >= (double)z ? z : (u64)t;
            descend(c, false, target, sm, &mass);
        }
        /* the draw: first kept token whose cumulative weight exceeds u * mass */
        float u = p.u >= 0.0f ? p.u : 0.0f; /* NaN -> 0 */
        double rd = floor((double)u * (double)mass);
        u64 rr = rd >= (double)mass ? mass - 1 : (u64)rd;
        u64 key = descend(c, false, rr + 1, sm, &cum);
        if (threadIdx.x == 0) {
            u64 idmask = (1ull << idbits) - 1;
            int64_t id = (int64_t)(idmask - (key & idmask));
            out[r] = id >= 0 && id < n ? (int32_t)id : greedy_tok;
        }
    }
}

extern "C" lam_status_t lam_cuda_sample(int32_t *out, const float *x, int64_t row_stride, int n_rows, int n,
                                        const lam_cuda_sample_row_t *params, cudaStream_t stream)
{
    LAM_CU_ARG(out && x && params, "cuda sample: NULL pointer");
    LAM_CU_ARG(n_rows >= 0 && n > 0 && n < (1 << 23) && row_stride >= n, "cuda sample: bad shape %d x %d (stride %lld)",
               n_rows, n, (long long)row_stride);
    LAM_CU_ARG(lam_cu_aligned(out, 4) && lam_cu_aligned(x, 4) && lam_cu_aligned(params, 4),
               "cuda sample: misaligned pointer");
    if (n_rows == 0)
        return LAM_OK;
    int idbits = 1;
    while ((1 << idbits) < n)
        idbits++;
    lam_k_sample<<<lam_cu_blocks((size_t)n_rows, 1, 65535), SAMPLE_THREADS, 0, stream>>>(out, x, row_stride, n_rows,
                                                                                        n, idbits, params);
    LAM_CU_LAUNCHED();
    return LAM_OK;
}
