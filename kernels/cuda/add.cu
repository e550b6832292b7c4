/* Residual add, f32. */
#include "kernels/cuda/internal.cuh"

__global__ void lam_k_add(float *y, const float *a, const float *b, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

extern "C" lam_status_t lam_cuda_add(float *y, const float *a, const float *b, size_t n, cudaStream_t stream)
{
    LAM_CU_ARG(y && a && b, "cuda add: NULL pointer");
    LAM_CU_ARG(lam_cu_aligned(y, 4) && lam_cu_aligned(a, 4) && lam_cu_aligned(b, 4), "cuda add: misaligned pointer");
    if (n == 0)
        return LAM_OK;
    lam_k_add<<<lam_cu_blocks(n, 256, 4096), 256, 0, stream>>>(y, a, b, n);
    LAM_CU_LAUNCHED();
    return LAM_OK;
}
