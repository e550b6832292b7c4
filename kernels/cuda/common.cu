/* Error mapping, device discovery. */
#include "kernels/cuda/internal.cuh"

#include <stdio.h>

extern "C" lam_status_t lam_cuda_status(cudaError_t e, const char *stmt, const char *file, int line)
{
    if (e == cudaSuccess)
        return LAM_OK;
    lam_log_msg(LAM_LOG_ERROR, file, line, "%s failed: %s: %s", stmt, cudaGetErrorName(e), cudaGetErrorString(e));
    switch (e) {
    case cudaErrorMemoryAllocation:
        return LAM_ERR_CUDA_OOM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
        return LAM_ERR_NO_DEVICE;
    default:
        return LAM_ERR_CUDA;
    }
}

static const char *cublas_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
    }
}

extern "C" lam_status_t lam_cublas_status(cublasStatus_t s, const char *stmt, const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return LAM_OK;
    lam_log_msg(LAM_LOG_ERROR, file, line, "%s failed: %s (%d)", stmt, cublas_name(s), (int)s);
    return s == CUBLAS_STATUS_ALLOC_FAILED ? LAM_ERR_CUDA_OOM : LAM_ERR_CUBLAS;
}

extern "C" int lam_cuda_device_count(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* not sticky: leave no error behind for the next check */
        return 0;
    }
    return n;
}

extern "C" lam_status_t lam_cuda_probe(int device, char *buf, size_t n)
{
    if (!buf || n == 0)
        return LAM_ERR_INVALID_ARG;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        snprintf(buf, n, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return LAM_ERR_NO_DEVICE;
    }
    if (device < 0 || device >= count) {
        snprintf(buf, n, "device %d of %d does not exist", device, count);
        return LAM_ERR_NO_DEVICE;
    }
    cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) {
        cudaGetLastError();
        snprintf(buf, n, "cudaGetDeviceProperties(%d): %s", device, cudaGetErrorString(e));
        return LAM_ERR_NO_DEVICE;
    }
    snprintf(buf, n, "%s, sm_%d%d, %d SMs, %.1f GiB", p.name, p.major, p.minor, p.multiProcessorCount,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return LAM_OK;
}

extern "C" int lam_cuda_sm_count(void)
{
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}
