/* SwiGLU: y = silu(gate) * up, rounded to the down projection's input dtype. */
#include "kernels/cuda/internal.cuh"

__global__ void lam_k_swiglu(void *y, int y_dt, const float *g, int64_t gs, const float *u, int64_t us, int n_rows,
                             int n)
{
    size_t total = (size_t)n_rows * (size_t)n;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t r = idx / (size_t)n, j = idx % (size_t)n;
        float gv = g[r * (size_t)gs + j], uv = u[r * (size_t)us + j];
        /* as lam_swiglu_f32: g / (1 + expf(-g)) * u */
        lam_d_store(y, idx, y_dt, __fmul_rn(__fdiv_rn(gv, __fadd_rn(1.0f, expf(-gv))), uv));
    }
}

extern "C" lam_status_t lam_cuda_swiglu(void *y, int y_dtype, const float *g, int64_t g_stride, const float *u,
                                        int64_t u_stride, int n_rows, int n, cudaStream_t stream)
{
    LAM_CU_ARG(y && g && u, "cuda swiglu: NULL pointer");
    LAM_CU_ARG(lam_cu_is_dtype(y_dtype), "cuda swiglu: bad output dtype %d", y_dtype);
    LAM_CU_ARG(n_rows >= 0 && n > 0 && g_stride >= n && u_stride >= n, "cuda swiglu: bad shape %d x %d (strides %lld %lld)",
               n_rows, n, (long long)g_stride, (long long)u_stride);
    LAM_CU_ARG(lam_cu_aligned(g, 4) && lam_cu_aligned(u, 4) && lam_cu_aligned(y, lam_dtype_size((unsigned)y_dtype)),
               "cuda swiglu: misaligned pointer");
    if (n_rows == 0)
        return LAM_OK;
    size_t total = (size_t)n_rows * (size_t)n;
    lam_k_swiglu<<<lam_cu_blocks(total, 256, 8192), 256, 0, stream>>>(y, y_dtype, g, g_stride, u, u_stride, n_rows,
                                                                     n);
    LAM_CU_LAUNCHED();
    return LAM_OK;
}
