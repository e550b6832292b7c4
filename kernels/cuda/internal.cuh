/* Helpers shared by the .cu files of kernels/cuda (not part of the C API):
 * argument checks that log and return, the launch check, and bit-exact
 * device ports of common/dtype.h's conversions. */
#ifndef LAM_KERNELS_CUDA_INTERNAL_CUH
#define LAM_KERNELS_CUDA_INTERNAL_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/cuda/lam_cuda.h"

extern "C" {
#include "common/dtype.h"
#include "common/log.h"
}

/* Host side: reject a bad argument with one log line, before any launch. */
#define LAM_CU_ARG(cond, ...)                                                          \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            lam_log_error(__VA_ARGS__);                                                \
            return LAM_ERR_INVALID_ARG;                                                \
        }                                                                              \
    } while (0)

/* After a <<<>>> launch: configuration errors surface here. */
#define LAM_CU_LAUNCHED() LAM_CUDA_CHECK(cudaGetLastError())

static inline bool lam_cu_is_dtype(int dt) { return dt == LAM_DT_F32 || dt == LAM_DT_F16 || dt == LAM_DT_BF16; }

static inline bool lam_cu_aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* Blocks for n items at `per_block` each, capped (kernels stride over the rest). */
static inline unsigned lam_cu_blocks(size_t n, unsigned per_block, unsigned cap)
{
    size_t b = (n + per_block - 1) / per_block;
    return b < 1 ? 1u : b > cap ? cap : (unsigned)b;
}

/* Host checks of the cache and batch fields shared by attn.cu and kv_write.cu
 * (op names the caller in the log line). */
lam_status_t lam_cu_attn_check(const lam_cuda_attn_args_t *a, const char *op);

/* ---- device: dtype conversions, bit-identical to common/dtype.h ------------ */

__device__ __forceinline__ float lam_d_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f)
        return __uint_as_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return __uint_as_float(sign);
        float f = __fmul_rn((float)man, 1.0f / 16777216.0f); /* exact */
        return sign ? -f : f;
    }
    return __uint_as_float(sign | ((exp + 112) << 23) | (man << 13));
}

__device__ __forceinline__ uint16_t lam_d_f32_to_f16(float f)
{
    uint32_t x = __float_as_uint(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) {
        float t = __fadd_rn(__uint_as_float(ax), 0.5f);
        return (uint16_t)(sign | (__float_as_uint(t) - 0x3f000000u));
    }
    uint32_t mant_odd = (ax >> 13) & 1;
    ax += 0xc8000fffu + mant_odd;
    return (uint16_t)(sign | (ax >> 13));
}

__device__ __forceinline__ float lam_d_bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

__device__ __forceinline__ uint16_t lam_d_f32_to_bf16(float f)
{
    uint32_t x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* Element i of an array of dtype dt, as f32 / stored from f32. */
__device__ __forceinline__ float lam_d_load(const void *p, size_t i, int dt)
{
    if (dt == LAM_DT_F32)
        return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return dt == LAM_DT_F16 ? lam_d_f16_to_f32(h) : lam_d_bf16_to_f32(h);
}

__device__ __forceinline__ void lam_d_store(void *p, size_t i, int dt, float v)
{
    if (dt == LAM_DT_F32)
        ((float *)p)[i] = v;
    else
        ((uint16_t *)p)[i] = dt == LAM_DT_F16 ? lam_d_f32_to_f16(v) : lam_d_f32_to_bf16(v);
}

/* ---- device: block reductions (blockDim.x a multiple of 32, <= 1024) ------ */

__device__ __forceinline__ float lam_d_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block; every thread gets it. `red` is __shared__ float[32]. */
__device__ __forceinline__ float lam_d_block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = lam_d_warp_sum(v);
    __syncthreads(); /* red may still be read from a previous call */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return lam_d_warp_sum(v);
}

/* ---- device: argmax with lam_argmax_f32's semantics ---------------------- */

/* (value, index) candidates; index -1 = none. NaN values never become
 * candidates; among equal values the lower index wins. */
__device__ __forceinline__ void lam_d_amax_merge(float &v, int &i, float ov, int oi)
{
    if (oi >= 0 && (i < 0 || ov > v || (ov == v && oi < i))) {
        v = ov;
        i = oi;
    }
}

/* Index of the largest of xr[0..n) for the whole block (every thread gets
 * it): ties to the lowest index, NaNs skipped, but a NaN at 0 gives 0 as the
 * CPU loop does (nothing compares greater than its starting NaN).
 * sv, si: __shared__ [32]; red: __shared__ int. */
__device__ __forceinline__ int lam_d_block_argmax(const float *xr, int n, float *sv, int *si, int *res)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float v = 0.0f;
    int i = -1;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float xv = xr[j];
        if (!isnan(xv))
            lam_d_amax_merge(v, i, xv, j);
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        lam_d_amax_merge(v, i, ov, oi);
    }
    __syncthreads(); /* earlier readers of sv/si/res are done */
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < nw; w++)
            lam_d_amax_merge(v, i, sv[w], si[w]);
        *res = (i < 0 || isnan(xr[0])) ? 0 : i;
    }
    __syncthreads();
    return *res;
}

#endif
