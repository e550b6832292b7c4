/* Embedding lookup: rows of a [vocab][dim] table (f32/f16/bf16) to f32. */
#include "kernels/cuda/internal.cuh"

/* One block per token row (grid-stride over rows), threads over dims. */
__global__ void lam_k_embed(float *x, const void *table, int dt, int64_t vocab, int dim, const int32_t *tok, int n)
{
    for (int i = blockIdx.x; i < n; i += gridDim.x) {
        int32_t t = tok[i];
        float *xi = x + (size_t)i * dim;
        if (t < 0 || t >= vocab) {
            for (int j = threadIdx.x; j < dim; j += blockDim.x)
                xi[j] = __int_as_float(0x7fc00000);
            continue;
        }
        size_t base = (size_t)t * (size_t)dim;
        for (int j = threadIdx.x; j < dim; j += blockDim.x)
            xi[j] = lam_d_load(table, base + j, dt);
    }
}

extern "C" lam_status_t lam_cuda_embed(float *x, const void *table, int table_dtype, int64_t vocab, int dim,
                                       const int32_t *tok, int n, cudaStream_t stream)
{
    LAM_CU_ARG(x && table && tok, "cuda embed: NULL pointer");
    LAM_CU_ARG(lam_cu_is_dtype(table_dtype), "cuda embed: bad table dtype %d", table_dtype);
    LAM_CU_ARG(vocab > 0 && dim > 0 && n >= 0, "cuda embed: bad shape vocab %lld dim %d n %d", (long long)vocab,
               dim, n);
    LAM_CU_ARG(lam_cu_aligned(table, lam_dtype_size((unsigned)table_dtype)) && lam_cu_aligned(x, 4),
               "cuda embed: misaligned pointer");
    if (n == 0)
        return LAM_OK;
    unsigned threads = dim >= 256 ? 256 : 32u * (unsigned)((dim + 31) / 32);
    lam_k_embed<<<lam_cu_blocks((size_t)n, 1, 65535), threads, 0, stream>>>(x, table, table_dtype, vocab, dim, tok,
                                                                          n);
    LAM_CU_LAUNCHED();
    return LAM_OK;
}
