/* y = x . W^T (+ bias) (+ beta y) through cublasGemmEx, f32 accumulation.
 *
 * Row-major y[n][out] is, to column-major cuBLAS, the matrix y^T (out x n,
 * ld out); W[out][in] row-major is W^T column-major (in x out, ld in), and
 * x[n][in] is x^T (in x n, ld in). So y^T = op(W^T) . x^T with op = T:
 * m = out, n = n, k = in, A = W (lda in, transposed), B = x (ldb in). */
#include "kernels/cuda/internal.cuh"

#include <limits.h>

static cudaDataType_t cu_type(int dt)
{
    return dt == LAM_DT_F32 ? CUDA_R_32F : dt == LAM_DT_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

/* y[r][o] += bias[o], y f32 */
__global__ void lam_k_bias(float *y, const float *bias, int n, int out)
{
    size_t total = (size_t)n * (size_t)out;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] += bias[i % (size_t)out];
}

extern "C" lam_status_t lam_cuda_blas_create(cublasHandle_t *out)
{
    if (!out)
        return LAM_ERR_INVALID_ARG;
    cublasHandle_t h = NULL;
    lam_status_t st = LAM_OK;
    LAM_CUBLAS_CHECK(cublasCreate(&h));
    LAM_CUBLAS_CHECK_GOTO(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST), st, fail_handle);
    *out = h;
    return LAM_OK;
fail_handle:
    cublasDestroy(h);
    return st;
}

extern "C" void lam_cuda_blas_destroy(cublasHandle_t h)
{
    if (h)
        cublasDestroy(h);
}

extern "C" lam_status_t lam_cuda_gemm(cublasHandle_t h, void *y, int y_dtype, const void *x, const void *W,
                                      int ab_dtype, const float *bias, int n, int in, int out, float beta,
                                      cudaStream_t stream)
{
    LAM_CU_ARG(h && y && x && W, "cuda gemm: NULL pointer");
    LAM_CU_ARG(ab_dtype == LAM_DT_F16 || ab_dtype == LAM_DT_BF16, "cuda gemm: inputs must be f16 or bf16, not %s",
               lam_dtype_name((unsigned)ab_dtype));
    LAM_CU_ARG(lam_cu_is_dtype(y_dtype), "cuda gemm: bad output dtype %d", y_dtype);
    LAM_CU_ARG(n >= 0 && in > 0 && out > 0, "cuda gemm: bad shape n %d in %d out %d", n, in, out);
    LAM_CU_ARG(isfinite(beta), "cuda gemm: beta must be finite");
    LAM_CU_ARG(lam_cu_aligned(x, 2) && lam_cu_aligned(W, 2) && lam_cu_aligned(y, lam_dtype_size((unsigned)y_dtype)) &&
                   lam_cu_aligned(bias, 4),
               "cuda gemm: misaligned pointer");
    if (y_dtype != LAM_DT_F32 && y_dtype != ab_dtype) { /* cuBLAS has no f16 x f16 -> bf16 (or reverse) */
        lam_log_error("cuda gemm: %s inputs give f32 or %s, not %s", lam_dtype_name((unsigned)ab_dtype),
                      lam_dtype_name((unsigned)ab_dtype), lam_dtype_name((unsigned)y_dtype));
        return LAM_ERR_UNSUPPORTED;
    }
    if (bias && y_dtype != LAM_DT_F32) {
        lam_log_error("cuda gemm: a bias needs an f32 output (got %s)", lam_dtype_name((unsigned)y_dtype));
        return LAM_ERR_UNSUPPORTED;
    }
    if (n == 0)
        return LAM_OK;
    const float alpha = 1.0f;
    LAM_CUBLAS_CHECK(cublasSetStream(h, stream));
    LAM_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha, W, cu_type(ab_dtype), in, x,
                                  cu_type(ab_dtype), in, &beta, y, cu_type(y_dtype), out, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
    if (bias) {
        size_t total = (size_t)n * (size_t)out;
        lam_k_bias<<<lam_cu_blocks(total, 256, 8192), 256, 0, stream>>>((float *)y, bias, n, out);
        LAM_CU_LAUNCHED();
    }
    return LAM_OK;
}
