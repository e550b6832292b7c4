/* dtype conversion on the device, bit-identical to lam_convert. */
#include "kernels/cuda/internal.cuh"

__global__ void lam_k_convert(void *dst, int ddt, const void *src, int sdt, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        lam_d_store(dst, i, ddt, lam_d_load(src, i, sdt));
}

extern "C" lam_status_t lam_cuda_convert(void *dst, int dst_dtype, const void *src, int src_dtype, size_t n,
                                         cudaStream_t stream)
{
    LAM_CU_ARG(dst && src, "cuda convert: NULL pointer");
    LAM_CU_ARG(lam_cu_is_dtype(dst_dtype) && lam_cu_is_dtype(src_dtype), "cuda convert: bad dtype %d -> %d",
               src_dtype, dst_dtype);
    size_t ds = lam_dtype_size((unsigned)dst_dtype), ss = lam_dtype_size((unsigned)src_dtype);
    LAM_CU_ARG(lam_cu_aligned(dst, ds) && lam_cu_aligned(src, ss), "cuda convert: misaligned pointer");
    LAM_CU_ARG(n <= SIZE_MAX / 4, "cuda convert: n too large");
    if (n == 0 || (dst == src && dst_dtype == src_dtype))
        return LAM_OK;
    /* [dst, dst + n*ds) and [src, src + n*ss) must not overlap */
    uintptr_t d0 = (uintptr_t)dst, s0 = (uintptr_t)src;
    LAM_CU_ARG(d0 + n * ds <= s0 || s0 + n * ss <= d0, "cuda convert: dst and src overlap");
    lam_k_convert<<<lam_cu_blocks(n, 256, 4096), 256, 0, stream>>>(dst, dst_dtype, src, src_dtype, n);
    LAM_CU_LAUNCHED();
    return LAM_OK;
}
