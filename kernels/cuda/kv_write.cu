/* New keys and values into the device page pool (the CUDA side of
 * lam_kv_write): converted from the sender's dtype, rounded as lam_convert. */
#include "kernels/cuda/internal.cuh"

/* Blocks over (sequence, row of it: strided by n_rb); threads over
 * (KV head, dim). */
__global__ void lam_k_kv_write(const lam_cuda_attn_args_t a, const void *k, const void *v, int64_t stride, int sdt,
                               int n_rb)
{
    const int s = blockIdx.x / n_rb, rb0 = blockIdx.x % n_rb;
    if (s >= a.n_seq)
        return;
    const int row0 = a.row[s];
    int rows_s = a.row[s + 1] - row0;
    if (row0 < 0 || row0 >= a.n_tok || rows_s <= 0)
        return;
    if (rows_s > a.n_tok - row0)
        rows_s = a.n_tok - row0;
    const int32_t *ptab = a.pages + a.page_start[s];
    const size_t esz = a.kv_dtype == LAM_DT_F32 ? 4 : 2;
    const int per_row = a.n_kv_heads * a.head_dim;
    for (int r = rb0; r < rows_s; r += n_rb) {
        long long p = (long long)a.pos[s] + r;
        if (p < 0)
            continue;
        int32_t pidx = ptab[p / a.page_tokens];
        if (pidx < 0 || pidx >= a.n_pages)
            continue;
        uint8_t *pg = a.pool + (size_t)pidx * a.page_bytes + (size_t)(p % a.page_tokens) * a.head_dim * esz;
        size_t src_row = (size_t)(row0 + r) * (size_t)stride;
        for (int t = threadIdx.x; t < per_row; t += blockDim.x) {
            int h = t / a.head_dim, d = t % a.head_dim;
            uint8_t *hp = pg + (size_t)h * a.head_stride;
            lam_d_store(hp + a.k_off, d, a.kv_dtype, lam_d_load(k, src_row + t, sdt));
            lam_d_store(hp + a.v_off, d, a.kv_dtype, lam_d_load(v, src_row + t, sdt));
        }
    }
}

extern "C" lam_status_t lam_cuda_kv_write(const lam_cuda_attn_args_t *a, const void *k, const void *v,
                                          int64_t kv_row_stride, int src_dtype, cudaStream_t stream)
{
    lam_status_t st = lam_cu_attn_check(a, "cuda kv_write");
    if (st != LAM_OK)
        return st;
    LAM_CU_ARG(k && v, "cuda kv_write: NULL k or v");
    LAM_CU_ARG(lam_cu_is_dtype(src_dtype), "cuda kv_write: bad source dtype %d", src_dtype);
    LAM_CU_ARG(kv_row_stride >= (int64_t)a->n_kv_heads * a->head_dim, "cuda kv_write: row stride %lld too small",
               (long long)kv_row_stride);
    size_t ss = lam_dtype_size((unsigned)src_dtype);
    LAM_CU_ARG(lam_cu_aligned(k, ss) && lam_cu_aligned(v, ss), "cuda kv_write: misaligned k or v");
    if (a->n_seq == 0 || a->n_tok == 0)
        return LAM_OK;
    int n_rb = a->max_rows < 64 ? a->max_rows : 64;
    int64_t blocks = (int64_t)a->n_seq * n_rb;
    LAM_CU_ARG(blocks <= INT32_MAX, "cuda kv_write: too many sequences");
    int per_row = a->n_kv_heads * a->head_dim;
    unsigned threads = per_row >= 256 ? 256 : 32u * (unsigned)((per_row + 31) / 32);
    lam_k_kv_write<<<(unsigned)blocks, threads, 0, stream>>>(*a, k, v, kv_row_stride, src_dtype, n_rb);
    LAM_CU_LAUNCHED();
    return LAM_OK;
}
