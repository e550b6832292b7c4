/* Per-row argmax with lam_argmax_f32's exact semantics. */
#include "kernels/cuda/internal.cuh"

/* One block per row (grid-stride over rows). */
__global__ void lam_k_argmax(int32_t *out, const float *x, int64_t stride, int n_rows, int n)
{
    __shared__ float sv[32];
    __shared__ int si[32], res;
    for (int r = blockIdx.x; r < n_rows; r += gridDim.x) {
        int i = lam_d_block_argmax(x + (size_t)r * (size_t)stride, n, sv, si, &res);
        if (threadIdx.x == 0)
            out[r] = i;
    }
}

extern "C" lam_status_t lam_cuda_argmax(int32_t *out, const float *x, int64_t row_stride, int n_rows, int n,
                                        cudaStream_t stream)
{
    LAM_CU_ARG(out && x, "cuda argmax: NULL pointer");
    LAM_CU_ARG(n_rows >= 0 && n > 0 && row_stride >= n, "cuda argmax: bad shape %d x %d (stride %lld)", n_rows, n,
               (long long)row_stride);
    LAM_CU_ARG(lam_cu_aligned(out, 4) && lam_cu_aligned(x, 4), "cuda argmax: misaligned pointer");
    if (n_rows == 0)
        return LAM_OK;
    unsigned threads = n >= 4096 ? 1024 : n >= 256 ? 256 : 32u * (unsigned)((n + 31) / 32);
    lam_k_argmax<<<lam_cu_blocks((size_t)n_rows, 1, 65535), threads, 0, stream>>>(out, x, row_stride, n_rows, n);
    LAM_CU_LAUNCHED();
    return LAM_OK;
}
