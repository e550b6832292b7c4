/* Random device tensors for the CUDA backend's synthetic models
 * (lam_backend_cuda_create_random): uniform values from a counter-based
 * hash of (seed, index), so a model of any size is made on the device in
 * one pass with no host memory and the same seed gives the same weights. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/lam_cuda.h" /* first: its C++ includes stay outside extern "C" */

extern "C" {
#include "common/dtype.h"
#include "common/log.h"
#include "compute_node/backend_cuda_internal.h"
}

/* splitmix64 of the counter: 53 random bits -> [0, 1) */
__device__ __forceinline__ float cb_uniform(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) * (1.0 / 9007199254740992.0));
}

__global__ void cb_k_fill(void *dst, int dtype, size_t n, uint64_t seed, float lo, float hi)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = lo + (hi - lo) * cb_uniform(seed, i);
        if (dtype == LAM_DT_F32)
            ((float *)dst)[i] = v;
        else if (dtype == LAM_DT_F16)
            ((__half *)dst)[i] = __float2half_rn(v);
        else
            ((__nv_bfloat16 *)dst)[i] = __float2bfloat16_rn(v);
    }
}

extern "C" lam_status_t lam_cb_fill_uniform(void *dst, int dtype, size_t n, uint64_t seed, float lo, float hi,
                                            cudaStream_t s)
{
    if (!dst || lam_dtype_size((unsigned)dtype) == 0 || !(lo <= hi)) {
        lam_log_error("cuda fill: bad arguments");
        return LAM_ERR_INVALID_ARG;
    }
    if (n == 0)
        return LAM_OK;
    size_t blocks = (n + 255) / 256;
    cb_k_fill<<<(unsigned)(blocks < 65536 ? blocks : 65536), 256, 0, s>>>(dst, dtype, n, seed, lo, hi);
    LAM_CUDA_CHECK(cudaGetLastError());
    return LAM_OK;
}
