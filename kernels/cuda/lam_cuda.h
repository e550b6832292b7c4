/* CUDA kernels: the public, C-callable interface (C11 includes this file).
 *
 * Conventions for every op below:
 *   - Pointers are DEVICE pointers unless marked "host". Tensors are
 *     row-major and contiguous unless a stride (in elements) is given.
 *   - Dtypes are lam_dtype_t (common/dtype.h): LAM_DT_F32, LAM_DT_F16,
 *     LAM_DT_BF16. Rounding to f16/bf16 is round-to-nearest-even, bit-identical
 *     to lam_fp32_to_fp16 / lam_fp32_to_bf16 (NaN included).
 *   - Each op checks its host-side arguments (NULL pointers, sizes, dtypes,
 *     alignment of pointers and byte offsets that vectorised loads rely on,
 *     32-bit overflow of counts) and returns LAM_ERR_INVALID_ARG (or
 *     LAM_ERR_UNSUPPORTED for a valid but unimplemented case) without
 *     launching anything; the reason is logged once.
 *   - Ops only enqueue work on `stream` (0 = the legacy default stream):
 *     no allocation, no synchronisation, no host<->device copies. LAM_OK
 *     means the launch succeeded; an error during execution shows up at the
 *     caller's next synchronising CUDA call.
 *   - Data that lives on the device (token ids, positions, page tables)
 *     cannot be checked on the host; the kernels range-check what they index
 *     with and write NaN (or a documented value) instead of reading out of
 *     bounds, so a bad table gives a visibly wrong result, never a fault.
 *   - Ops run on the current device (cudaSetDevice is the caller's job).
 *
 * Error handling: LAM_CUDA_CHECK / LAM_CUBLAS_CHECK wrap one call, log the
 * statement, file, line and the CUDA error string on failure and return a
 * lam_status_t from the enclosing function (the _GOTO forms set a status
 * variable and jump to a cleanup label instead).
 *
 * Without a GPU (no driver, no device) lam_cuda_device_count returns 0 and
 * lam_cuda_probe returns LAM_ERR_NO_DEVICE with the reason; nothing crashes.
 *
 * Built when CMake finds nvcc (LAMINA_CUDA=AUTO|ON); code that links
 * lamina_kernels_cuda sees LAMINA_HAVE_CUDA=1. */
#ifndef LAM_KERNELS_CUDA_H
#define LAM_KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "common/dtype.h"
#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ---------------------------------------------------------------- */

/* Log "<stmt> failed: <error name>: <error string>" at file:line and map the
 * error: cudaErrorMemoryAllocation -> LAM_ERR_CUDA_OOM, no device or no
 * (sufficient) driver -> LAM_ERR_NO_DEVICE, anything else -> LAM_ERR_CUDA;
 * cuBLAS: CUBLAS_STATUS_ALLOC_FAILED -> LAM_ERR_CUDA_OOM, else LAM_ERR_CUBLAS.
 * cudaSuccess / CUBLAS_STATUS_SUCCESS give LAM_OK and log nothing. */
lam_status_t lam_cuda_status(cudaError_t e, const char *stmt, const char *file, int line);
lam_status_t lam_cublas_status(cublasStatus_t s, const char *stmt, const char *file, int line);

#define LAM_CUDA_CHECK(stmt)                                                          \
    do {                                                                              \
        cudaError_t lam_e_ = (stmt);                                                  \
        if (lam_e_ != cudaSuccess)                                                    \
            return lam_cuda_status(lam_e_, #stmt, __FILE__, __LINE__);                \
    } while (0)

#define LAM_CUBLAS_CHECK(stmt)                                                        \
    do {                                                                              \
        cublasStatus_t lam_s_ = (stmt);                                               \
        if (lam_s_ != CUBLAS_STATUS_SUCCESS)                                          \
            return lam_cublas_status(lam_s_, #stmt, __FILE__, __LINE__);              \
    } while (0)

/* On failure: st = the mapped status; goto label. */
#define LAM_CUDA_CHECK_GOTO(stmt, st, label)                                          \
    do {                                                                              \
        cudaError_t lam_e_ = (stmt);                                                  \
        if (lam_e_ != cudaSuccess) {                                                  \
            (st) = lam_cuda_status(lam_e_, #stmt, __FILE__, __LINE__);                \
            goto label;                                                               \
        }                                                                             \
    } while (0)

#define LAM_CUBLAS_CHECK_GOTO(stmt, st, label)                                        \
    do {                                                                              \
        cublasStatus_t lam_s_ = (stmt);                                               \
        if (lam_s_ != CUBLAS_STATUS_SUCCESS) {                                        \
            (st) = lam_cublas_status(lam_s_, #stmt, __FILE__, __LINE__);              \
            goto label;                                                               \
        }                                                                             \
    } while (0)

/* ---- devices --------------------------------------------------------------- */

/* Number of usable CUDA devices; 0 when there is no driver or no device.
 * Never logs, never crashes. */
int lam_cuda_device_count(void);

/* Writes a one-line description of device `device` into buf[n] (host), e.g.
 * "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB", and returns LAM_OK.
 * Without a usable device returns LAM_ERR_NO_DEVICE and writes the reason
 * ("cudaGetDeviceCount: <error string>" or "device 1 of 1 does not exist");
 * it does not log: the caller decides how loud that is. */
lam_status_t lam_cuda_probe(int device, char *buf, size_t n);

/* Multiprocessor count of the current device (sizes split work); 0 on error. */
int lam_cuda_sm_count(void);

/* ---- element-wise and row ops ---------------------------------------------- */

/* x[i][0..dim) = table[tok[i]][0..dim) converted to f32, for i < n.
 *   table  [vocab][dim] of table_dtype (f32, f16, bf16)
 *   tok    [n] int32 token ids (device)
 *   x      [n][dim] f32
 * A token id outside [0, vocab) gives a row of NaN. */
lam_status_t lam_cuda_embed(float *x, const void *table, int table_dtype, int64_t vocab, int dim,
                            const int32_t *tok, int n, cudaStream_t stream);

/* Per row i < n_rows: s = 1 / sqrtf(mean_j(x[i][j]^2) + eps);
 * y[i][j] = x[i][j] * s * w[j], as lam_rmsnorm_f32 computes it (the sum of
 * squares is reduced in a different order, so results differ in the last
 * bits). Outputs (at least one non-NULL):
 *   y32    [n_rows][dim] f32 (may equal x: in place)
 *   ylo    [n_rows][dim] of lo_dtype (f16, bf16 or f32): the GEMM input
 *   x      [n_rows][dim] f32;  w [dim] f32 */
lam_status_t lam_cuda_rmsnorm(float *y32, void *ylo, int lo_dtype, const float *x, const float *w, int n_rows,
                              int dim, float eps, cudaStream_t stream);

/* Rotary embedding in place, as lam_rope_f32 for each token t < n_tok:
 *   x       f32; token t's heads start at x + t * row_stride, head h at
 *           + h * head_dim (row_stride >= n_heads * head_dim). With a fused
 *           QKV output [n][(H + 2*Hkv) * head_dim], one call with
 *           n_heads = H + Hkv rotates q and k together.
 *   pos     [n_tok] int32 positions (device)
 *   n_rot   rotated dims (even, <= head_dim); the rest are left alone
 *   angle of pair i = pos * freq_scale * theta^(-2i/n_rot) / freq_div[i]
 *   freq_div [n_rot/2] f32 (device) or NULL
 *   neox = 0: pairs (2i, 2i+1) (GGUF LLaMA); neox = 1: pairs (i, i + n_rot/2).
 * The frequencies and angles are computed in f32 as the CPU does, the
 * power, sine and cosine in f64 then rounded, so the results agree with the
 * CPU's correctly rounded powf/sinf/cosf to an ulp or so even at large
 * positions. */
lam_status_t lam_cuda_rope(float *x, int n_tok, int n_heads, int head_dim, int64_t row_stride, int n_rot,
                           const int32_t *pos, float theta, float freq_scale, const float *freq_div, int neox,
                           cudaStream_t stream);

/* y[i][j] = silu(g[i][j]) * u[i][j] = g / (1 + expf(-g)) * u, rounded to
 * y_dtype, for i < n_rows, j < n:
 *   g      f32, row i at g + i * g_stride (>= n)
 *   u      f32, row i at u + i * u_stride (>= n)
 *   y      [n_rows][n] of y_dtype (f32, f16, bf16): the down GEMM's input */
lam_status_t lam_cuda_swiglu(void *y, int y_dtype, const float *g, int64_t g_stride, const float *u,
                             int64_t u_stride, int n_rows, int n, cudaStream_t stream);

/* y[i] = a[i] + b[i], i < n, f32 (y may equal a or b). */
lam_status_t lam_cuda_add(float *y, const float *a, const float *b, size_t n, cudaStream_t stream);

/* out[i] = the index of the largest x[i][j], j < n, for i < n_rows; row i
 * at x + i * row_stride. Exactly lam_argmax_f32: ties give the lowest index,
 * NaNs are never chosen except that a NaN at j = 0 gives 0 (the CPU loop
 * starts from element 0 and nothing compares greater than NaN). */
lam_status_t lam_cuda_argmax(int32_t *out, const float *x, int64_t row_stride, int n_rows, int n,
                             cudaStream_t stream);

/* ---- sampling ---------------------------------------------------------------- */

/* Per-row sampling parameters (device array, one per row; filled by the host). */
typedef struct lam_cuda_sample_row {
    float temperature; /* <= 0 or NaN: greedy (argmax, as lam_cuda_argmax) */
    int32_t top_k;     /* <= 0 or >= n: off */
    float top_p;       /* outside (0, 1): off (1) */
    float u;           /* the row's uniform number in [0, 1); clamped into it */
} lam_cuda_sample_row_t;

/* out[i] = a token drawn for row i from logits x[i][0..n) (row i at
 * x + i * row_stride) with the row's parameters and its u. The distribution
 * is compute_node/sampler.c's:
 *   order the tokens by (logit descending, id ascending);
 *   candidates = the first top_k of that order (all when off);
 *   w_j = exp((x_j - max) / temperature) over the candidates;
 *   kept = the shortest prefix of the candidates whose weight reaches
 *          top_p * (total candidate weight);
 *   token = the first kept token (in that order) whose cumulative weight
 *          exceeds u * (total kept weight).
 * Weights are held as 64-bit fixed point (w * 2^40) and summed exactly, so
 * the result is deterministic and independent of the reduction order;
 * tokens with w < 2^-41 (logit more than ~28 * temperature below the max)
 * get weight 0 and are never drawn. A row whose max is not finite (all NaN,
 * +inf, all -inf) is answered with its argmax. n < 2^23. */
lam_status_t lam_cuda_sample(int32_t *out, const float *x, int64_t row_stride, int n_rows, int n,
                             const lam_cuda_sample_row_t *params, cudaStream_t stream);

/* ---- dtypes and model weights ------------------------------------------------- */

/* dst[i] = src[i] converted, i < n, as lam_convert (kernels/cpu/attn.h):
 * bit-identical. dst and src must not overlap unless the dtypes are equal
 * and dst == src (then nothing is done). */
lam_status_t lam_cuda_convert(void *dst, int dst_dtype, const void *src, int src_dtype, size_t n,
                              cudaStream_t stream);

/* Dequantises n elements of GGUF tensor data (ggml_type a lam_ggml_type_t),
 * already copied to the device as they are in the file, into dst[n] of
 * dst_dtype (f32, f16, bf16). Bit-identical to lam_dequant
 * (common/dequant.c) followed by rounding to dst_dtype. Types: F32, F16,
 * BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (lam_cuda_dequant_supported says which;
 * others give LAM_ERR_UNSUPPORTED: dequantise those on the host). n must be
 * a multiple of the type's block size. src may have any alignment (blocks
 * are read bytewise); dst needs the alignment of its dtype. */
lam_status_t lam_cuda_dequant(void *dst, int dst_dtype, const void *src, uint32_t ggml_type, int64_t n,
                              cudaStream_t stream);
/* Whether lam_cuda_dequant handles ggml_type. */
int lam_cuda_dequant_supported(uint32_t ggml_type);

/* ---- GEMM (cuBLAS) ------------------------------------------------------------ */

/* cublasCreate with the library's settings (host pointer mode). */
lam_status_t lam_cuda_blas_create(cublasHandle_t *out);
void lam_cuda_blas_destroy(cublasHandle_t h);

/* y[n][out] = x[n][in] . W[out][in]^T  (+ bias[out])  (+ beta * y)
 *   x, W   ab_dtype (f16 or bf16), row-major, contiguous
 *   y      y_dtype: f32 or ab_dtype (else LAM_ERR_UNSUPPORTED), row-major
 *          [n][out], contiguous
 *   bias   f32 [out] or NULL; only with y_dtype f32 (else LAM_ERR_UNSUPPORTED);
 *          added after the product, in f32
 *   beta   0 overwrites y; 1 accumulates (a residual add for free)
 * Products are accumulated in f32 (CUBLAS_COMPUTE_32F). Sets the handle's
 * stream to `stream`. Counts must fit cuBLAS's int. */
lam_status_t lam_cuda_gemm(cublasHandle_t h, void *y, int y_dtype, const void *x, const void *W, int ab_dtype,
                           const float *bias, int n, int in, int out, float beta, cudaStream_t stream);

/* ---- paged attention ----------------------------------------------------------- */

/* The paged KV cache on the device and one batch of query rows. Same page
 * layout and meaning as lam_attn_args_t (kernels/cpu/attn.h), with pages
 * held in ONE device pool and page tables as int32 page indices:
 *
 *   page p             = pool + p * page_bytes, 0 <= p < n_pages
 *   sequence s's table = pages[page_start[s] + 0, 1, ...]
 *   key position j of s is in page pages[page_start[s] + j / page_tokens],
 *   row j % page_tokens; KV head h's K block is the [page_tokens][head_dim]
 *   array of kv_dtype at byte k_off + h * head_stride of the page, its V
 *   block at v_off + h * head_stride.
 *
 * Query rows of sequence s are row[s] .. row[s+1]-1; row r is the token at
 * position pos[s] + (r - row[s]) and attends causally to keys 0 .. that
 * position (keys of all query tokens must already be in the pages: see
 * lam_cuda_kv_write). Query head g*group + i (i < group) uses KV head g.
 *
 * Host-side facts (n_tok, max_rows, max_keys) choose the grid: n_tok must
 * be exactly row[n_seq] (it sizes q, out and the workspace; rows at or past
 * n_tok are never touched); max_rows and max_keys only set how much
 * parallelism is launched: results are correct for any values >= 1, but
 * should be the batch's real maxima (max_rows: most rows of one sequence,
 * 1 for pure decode; max_keys: max over s of pos[s] + rows of s).
 *
 * Device-side checks: a page index outside [0, n_pages) reads no memory and
 * makes the rows that need it NaN; a row with no keys (pos < 0) is NaN.
 *
 * Alignment (checked): pool, q, out, workspace 16 bytes; page_bytes, k_off,
 * v_off, head_stride multiples of 16. head_dim 64, 128 or 256; kv_dtype f16,
 * bf16 or f32; group 1 .. 64. */
typedef struct lam_cuda_attn_args {
    int n_seq;
    const int32_t *row;          /* [n_seq + 1] device, row[0] = 0, nondecreasing */
    const int32_t *pos;          /* [n_seq] device */
    const int32_t *page_start;   /* [n_seq] device: offset of s's table in pages */
    const int32_t *pages;        /* device page indices */
    int n_tok;                   /* host: row[n_seq] */
    int max_rows;                /* host: most query rows of one sequence (>= 1) */
    int max_keys;                /* host: most keys of one sequence (>= 1) */
    uint8_t *pool;               /* device page pool (written by lam_cuda_kv_write only) */
    size_t page_bytes;
    int64_t n_pages;
    size_t k_off, v_off;         /* bytes from page start to KV head 0's K / V block */
    size_t head_stride;          /* bytes between KV heads' blocks */
    int page_tokens;
    int n_kv_heads;
    int group;                   /* query heads per KV head */
    int head_dim;
    int kv_dtype;                /* lam_dtype_t */
    float scale;                 /* score scale, usually 1/sqrt(head_dim) */
    const float *q;              /* [n_tok][n_kv_heads*group][head_dim] f32 */
    float *out;                  /* [n_tok][n_kv_heads*group][head_dim] f32 */
} lam_cuda_attn_args_t;

/* Most split-KV workspace lam_cuda_attn can use on the current device for
 * this head_dim: preallocate it once (cudaMalloc) and pass it to every call.
 * A smaller workspace (or none) is also correct: the call then splits the
 * keys fewer ways (less parallelism for small batches of long contexts). */
size_t lam_cuda_attn_workspace_size(int head_dim);

/* How a call will be run (for benchmarks and tests): the key splits per
 * sequence, keys per split, and blocks in the main kernel. */
typedef struct lam_cuda_attn_plan {
    int n_splits;       /* 1: no merge pass, rows written directly */
    int split_keys;     /* keys per split (the last split takes the rest) */
    int64_t n_blocks;
    size_t ws_used;     /* workspace bytes the call uses */
} lam_cuda_attn_plan_t;
lam_status_t lam_cuda_attn_plan(const lam_cuda_attn_args_t *a, size_t ws_bytes, lam_cuda_attn_plan_t *plan);

/* out = softmax(scale * q . K^T, causal) . V per query row and head, f32
 * arithmetic with an online softmax. Flash-decoding: the keys of each
 * sequence are cut into n_splits ranges, one block per (sequence, KV head,
 * block of query rows, key range) holding the `group` query heads of its KV
 * head, so each K/V row is read once per group (groups above 8 are cut into
 * chunks of 8 heads, one read per chunk); when n_splits > 1 the blocks
 * write partial (max, sum, acc) to the workspace and a second kernel merges
 * them with log-sum-exp weights. ws may be NULL (ws_bytes 0): no splits.
 * min_splits > 0 forces at least that many splits when the workspace
 * allows (tests; 0 = automatic). */
lam_status_t lam_cuda_attn(const lam_cuda_attn_args_t *a, void *ws, size_t ws_bytes, int min_splits,
                           cudaStream_t stream);

/* Writes the new keys and values of every query row into the pages (the
 * rows' pages must be in the tables): for row r of sequence s at position
 * p = pos[s] + (r - row[s]),
 *   K block row of p, KV head h  <-  k[r][h][0..head_dim)   converted from src_dtype
 *   V block row of p, KV head h  <-  v[r][h][0..head_dim)
 * k, v: [n_tok][n_kv_heads][head_dim] of src_dtype (f32, f16, bf16), row r
 * at k + r * kv_row_stride elements (>= n_kv_heads * head_dim), same for v.
 * Uses the batch and cache fields of a (q, out, group, scale are ignored).
 * A page index outside [0, n_pages) skips the row (nothing is written). */
lam_status_t lam_cuda_kv_write(const lam_cuda_attn_args_t *a, const void *k, const void *v, int64_t kv_row_stride,
                               int src_dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
