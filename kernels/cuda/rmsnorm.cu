/* RMSNorm: f32 rows in, f32 and/or f16/bf16/f32 rows out. */
#include "kernels/cuda/internal.cuh"

/* One block per row (grid-stride over rows). */
__global__ void lam_k_rmsnorm(float *y32, void *ylo, int lo_dt, const float *x, const float *w, int n_rows, int dim,
                              float eps)
{
    __shared__ float red[32];
    for (int r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const float *xr = x + (size_t)r * dim;
        float ss = 0.0f;
        for (int j = threadIdx.x; j < dim; j += blockDim.x)
            ss = fmaf(xr[j], xr[j], ss);
        ss = lam_d_block_sum(ss, red);
        float scale = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int j = threadIdx.x; j < dim; j += blockDim.x) {
            float v = xr[j] * scale * w[j];
            if (y32)
                y32[(size_t)r * dim + j] = v;
            if (ylo)
                lam_d_store(ylo, (size_t)r * dim + j, lo_dt, v);
        }
    }
}

extern "C" lam_status_t lam_cuda_rmsnorm(float *y32, void *ylo, int lo_dtype, const float *x, const float *w,
                                         int n_rows, int dim, float eps, cudaStream_t stream)
{
    LAM_CU_ARG(x && w && (y32 || ylo), "cuda rmsnorm: NULL pointer");
    LAM_CU_ARG(!ylo || lam_cu_is_dtype(lo_dtype), "cuda rmsnorm: bad output dtype %d", lo_dtype);
    LAM_CU_ARG(n_rows >= 0 && dim > 0, "cuda rmsnorm: bad shape %d x %d", n_rows, dim);
    LAM_CU_ARG(eps >= 0.0f, "cuda rmsnorm: bad eps");
    LAM_CU_ARG(lam_cu_aligned(x, 4) && lam_cu_aligned(w, 4) && lam_cu_aligned(y32, 4) &&
                   (!ylo || lam_cu_aligned(ylo, lam_dtype_size((unsigned)lo_dtype))),
               "cuda rmsnorm: misaligned pointer");
    if (n_rows == 0)
        return LAM_OK;
    /* in place on x is fine: each thread reads its elements before writing them
     * and the sum is complete (block barrier) before any write */
    unsigned threads = dim >= 1024 ? 1024 : dim >= 256 ? 256 : 32u * (unsigned)((dim + 31) / 32);
    lam_k_rmsnorm<<<lam_cu_blocks((size_t)n_rows, 1, 65535), threads, 0, stream>>>(y32, ylo, lo_dtype, x, w,
                                                                                 n_rows, dim, eps);
    LAM_CU_LAUNCHED();
    return LAM_OK;
}
