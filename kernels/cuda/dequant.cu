/* GGUF tensor data -> f32/f16/bf16 on the device, bit-identical to
 * common/dequant.c followed by rounding. One thread per output element;
 * blocks are read bytewise (GGUF data has no alignment guarantee), and the
 * arithmetic uses the _rn intrinsics so no FMA contraction changes a bit. */
#include "kernels/cuda/internal.cuh"

extern "C" {
#include "common/gguf.h"
}

__device__ __forceinline__ float lam_d_half_at(const uint8_t *p)
{
    return lam_d_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

/* Element e (0..31) of one 32-element block of type `type` at b. */
__device__ __forceinline__ float lam_d_dq32(uint32_t type, const uint8_t *b, int e)
{
    int lo = e & 15, high = e >> 4;
    switch (type) {
    case LAM_GGML_Q4_0: {
        int q = high ? b[2 + lo] >> 4 : b[2 + lo] & 0xf;
        return __fmul_rn((float)(q - 8), lam_d_half_at(b));
    }
    case LAM_GGML_Q4_1: {
        int q = high ? b[4 + lo] >> 4 : b[4 + lo] & 0xf;
        return __fadd_rn(__fmul_rn((float)q, lam_d_half_at(b)), lam_d_half_at(b + 2));
    }
    case LAM_GGML_Q5_0: {
        uint32_t qh = b[2] | (b[3] << 8) | (b[4] << 16) | ((uint32_t)b[5] << 24);
        int q = (high ? b[6 + lo] >> 4 : b[6 + lo] & 0xf) | (int)(((qh >> e) & 1) << 4);
        return __fmul_rn((float)(q - 16), lam_d_half_at(b));
    }
    case LAM_GGML_Q5_1: {
        uint32_t qh = b[4] | (b[5] << 8) | (b[6] << 16) | ((uint32_t)b[7] << 24);
        int q = (high ? b[8 + lo] >> 4 : b[8 + lo] & 0xf) | (int)(((qh >> e) & 1) << 4);
        return __fadd_rn(__fmul_rn((float)q, lam_d_half_at(b)), lam_d_half_at(b + 2));
    }
    default: /* Q8_0 */
        return __fmul_rn((float)(int8_t)b[2 + e], lam_d_half_at(b));
    }
}

__global__ void lam_k_dequant(void *dst, int ddt, const uint8_t *src, uint32_t type, int block_bytes, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v;
        switch (type) {
        case LAM_GGML_F32: {
            const uint8_t *p = src + 4 * i;
            v = __uint_as_float(p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24));
            break;
        }
        case LAM_GGML_F16: v = lam_d_half_at(src + 2 * i); break;
        case LAM_GGML_BF16: v = lam_d_bf16_to_f32((uint16_t)(src[2 * i] | (src[2 * i + 1] << 8))); break;
        default: v = lam_d_dq32(type, src + (i / 32) * (size_t)block_bytes, (int)(i % 32)); break;
        }
        lam_d_store(dst, i, ddt, v);
    }
}

/* Block bytes of the types handled here, 0 for the rest. */
static int dq_block_bytes(uint32_t type)
{
    switch (type) {
    case LAM_GGML_F32: return 4;
    case LAM_GGML_F16: return 2;
    case LAM_GGML_BF16: return 2;
    case LAM_GGML_Q4_0: return 18;
    case LAM_GGML_Q4_1: return 20;
    case LAM_GGML_Q5_0: return 22;
    case LAM_GGML_Q5_1: return 24;
    case LAM_GGML_Q8_0: return 34;
    default: return 0;
    }
}

extern "C" int lam_cuda_dequant_supported(uint32_t ggml_type) { return dq_block_bytes(ggml_type) != 0; }

extern "C" lam_status_t lam_cuda_dequant(void *dst, int dst_dtype, const void *src, uint32_t ggml_type, int64_t n,
                                         cudaStream_t stream)
{
    LAM_CU_ARG(dst && src, "cuda dequant: NULL pointer");
    LAM_CU_ARG(lam_cu_is_dtype(dst_dtype), "cuda dequant: bad output dtype %d", dst_dtype);
    LAM_CU_ARG(lam_cu_aligned(dst, lam_dtype_size((unsigned)dst_dtype)), "cuda dequant: misaligned output");
    int bb = dq_block_bytes(ggml_type);
    if (!bb) {
        lam_log_error("cuda dequant: type %s (%u) not supported on the device", lam_ggml_type_name(ggml_type),
                      ggml_type);
        return LAM_ERR_UNSUPPORTED;
    }
    int block_elems = bb <= 4 ? 1 : 32;
    LAM_CU_ARG(n >= 0 && n % block_elems == 0 && n <= (INT64_MAX / 8),
               "cuda dequant: %lld elements is not a whole number of %s blocks", (long long)n,
               lam_ggml_type_name(ggml_type));
    if (n == 0)
        return LAM_OK;
    lam_k_dequant<<<lam_cu_blocks((size_t)n, 256, 16384), 256, 0, stream>>>(dst, dst_dtype, (const uint8_t *)src,
                                                                          ggml_type, bb, (size_t)n);
    LAM_CU_LAUNCHED();
    return LAM_OK;
}
