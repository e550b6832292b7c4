/* The GPU attention executor (exec.h): KV pages in one device pool that
 * lam_kv keeps the books of, lam_cuda_kv_write and lam_cuda_attn
 * (kernels/cuda/lam_cuda.h) per message.
 *
 * add() only copies host-side: the sequence's q/k/v rows (in the message's
 * dtype) into a pinned staging area and its page table (page addresses
 * turned into pool indices) next to them. run() moves the staging to the
 * device in a few copies, writes K/V, converts q to f32 if needed, runs
 * attention, converts o back to the message's dtype, copies it into pinned
 * memory and from there into each sequence's reply rows. One stream; the
 * event loop waits for it, since the reply goes out right after. */
#include "attention_node/exec.h"

#include "common/dtype.h"
#include "common/log.h"
#include "kernels/cuda/lam_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XC_ALIGN 256

typedef struct cuda_exec {
    lam_an_exec_t base;
    int device;
    int n_kv, group, head_dim, kv_dtype;
    size_t qrow, kvrow;          /* elements per row of q (and o), of k (and v) */
    int max_tokens, max_seqs;
    int64_t max_pages;           /* page-table entries per message */
    lam_kv_geom_t g;
    uint8_t *pool;               /* device: n_pages pages */
    int64_t n_pages;
    cudaStream_t s;
    void *ws;
    size_t ws_bytes;

    /* staging, same layout on the host (pinned) and the device:
     * q [T][qrow] | k [T][kvrow] | v [T][kvrow] (4-byte elements at most)
     * | row [S+1] | pos [S] | start [S] | pages [max_pages] */
    uint8_t *h_in, *d_in;
    size_t off_k, off_v, off_meta, off_pages, in_bytes;
    float *d_q32, *d_o32;        /* [T][qrow] */
    uint8_t *d_o, *h_o;          /* [T][qrow] in the message's dtype */

    /* the message being built */
    int layer, dtype;
    size_t esz;
    int n_seq, n_rows, max_rows, max_keys;
    int64_t n_tab;
    void **o;                    /* [max_seqs] reply rows of each sequence */
} cuda_exec_t;

static size_t align_up(size_t x) { return (x + XC_ALIGN - 1) / XC_ALIGN * XC_ALIGN; }

static int32_t *meta_row(cuda_exec_t *e, uint8_t *base) { return (int32_t *)(base + e->off_meta); }

static void xc_begin(lam_an_exec_t *x, int layer, int dtype)
{
    cuda_exec_t *e = (cuda_exec_t *)x;
    e->layer = layer;
    e->dtype = dtype;
    e->esz = lam_dtype_size((unsigned)dtype);
    e->n_seq = e->n_rows = 0;
    e->max_rows = e->max_keys = 1;
    e->n_tab = 0;
}

static void xc_add(lam_an_exec_t *x, lam_kv_seq_t *s, int pos, int n, const void *q, const void *k, const void *v,
                   void *o)
{
    cuda_exec_t *e = (cuda_exec_t *)x;
    const size_t at_q = (size_t)e->n_rows * e->qrow * e->esz, at_kv = (size_t)e->n_rows * e->kvrow * e->esz;
    memcpy(e->h_in + at_q, q, (size_t)n * e->qrow * e->esz);
    memcpy(e->h_in + e->off_k + at_kv, k, (size_t)n * e->kvrow * e->esz);
    memcpy(e->h_in + e->off_v + at_kv, v, (size_t)n * e->kvrow * e->esz);
    int32_t *row = meta_row(e, e->h_in), *p = row + e->max_seqs + 1, *start = p + e->max_seqs;
    int32_t *tab = (int32_t *)(e->h_in + e->off_pages);
    uint8_t *const *pages = lam_kv_seq_pages(s);
    int need = (pos + n + e->g.page_tokens - 1) / e->g.page_tokens;
    row[e->n_seq] = e->n_rows;
    p[e->n_seq] = pos;
    start[e->n_seq] = (int32_t)e->n_tab;
    for (int i = 0; i < need; i++)
        tab[e->n_tab + i] = (int32_t)(((uintptr_t)pages[i] - (uintptr_t)e->pool) / e->g.page_bytes);
    e->n_tab += need;
    e->o[e->n_seq] = o;
    e->n_seq++;
    e->n_rows += n;
    e->max_rows = n > e->max_rows ? n : e->max_rows;
    e->max_keys = pos + n > e->max_keys ? pos + n : e->max_keys;
}

static lam_status_t xc_run(lam_an_exec_t *x)
{
    cuda_exec_t *e = (cuda_exec_t *)x;
    if (!e->n_seq)
        return LAM_OK;
    const size_t nq = (size_t)e->n_rows * e->qrow, nkv = (size_t)e->n_rows * e->kvrow, S = (size_t)e->max_seqs;
    meta_row(e, e->h_in)[e->n_seq] = e->n_rows;
    LAM_CUDA_CHECK(cudaSetDevice(e->device));
    const enum cudaMemcpyKind h2d = cudaMemcpyHostToDevice;
    LAM_CUDA_CHECK(cudaMemcpyAsync(e->d_in, e->h_in, nq * e->esz, h2d, e->s));
    LAM_CUDA_CHECK(cudaMemcpyAsync(e->d_in + e->off_k, e->h_in + e->off_k, nkv * e->esz, h2d, e->s));
    LAM_CUDA_CHECK(cudaMemcpyAsync(e->d_in + e->off_v, e->h_in + e->off_v, nkv * e->esz, h2d, e->s));
    LAM_CUDA_CHECK(cudaMemcpyAsync(e->d_in + e->off_meta, e->h_in + e->off_meta, (3 * S + 1) * sizeof(int32_t), h2d,
                                   e->s));
    LAM_CUDA_CHECK(cudaMemcpyAsync(e->d_in + e->off_pages, e->h_in + e->off_pages, (size_t)e->n_tab * sizeof(int32_t),
                                   h2d, e->s));
    const int32_t *row = meta_row(e, e->d_in);
    const float *q32 = e->dtype == LAM_DT_F32 ? (const float *)e->d_in : e->d_q32;
    lam_cuda_attn_args_t a = {
        .n_seq = e->n_seq, .row = row, .pos = row + S + 1, .page_start = row + 2 * S + 1,
        .pages = (const int32_t *)(e->d_in + e->off_pages), .n_tok = e->n_rows, .max_rows = e->max_rows,
        .max_keys = e->max_keys, .pool = e->pool, .page_bytes = e->g.page_bytes, .n_pages = e->n_pages,
        .k_off = (size_t)e->layer * e->g.layer_stride, .v_off = (size_t)e->layer * e->g.layer_stride + e->g.v_off,
        .head_stride = e->g.head_stride, .page_tokens = e->g.page_tokens, .n_kv_heads = e->n_kv, .group = e->group,
        .head_dim = e->head_dim, .kv_dtype = e->kv_dtype, .scale = 1.0f / sqrtf((float)e->head_dim), .q = q32,
        .out = e->d_o32,
    };
    lam_status_t st;
    if ((st = lam_cuda_kv_write(&a, e->d_in + e->off_k, e->d_in + e->off_v, (int64_t)e->kvrow, e->dtype, e->s)))
        return st;
    if (e->dtype != LAM_DT_F32 && (st = lam_cuda_convert(e->d_q32, LAM_DT_F32, e->d_in, e->dtype, nq, e->s)))
        return st;
    if ((st = lam_cuda_attn(&a, e->ws, e->ws_bytes, 0, e->s)))
        return st;
    const void *out = e->d_o32;
    if (e->dtype != LAM_DT_F32) {
        if ((st = lam_cuda_convert(e->d_o, e->dtype, e->d_o32, LAM_DT_F32, nq, e->s)))
            return st;
        out = e->d_o;
    }
    LAM_CUDA_CHECK(cudaMemcpyAsync(e->h_o, out, nq * e->esz, cudaMemcpyDeviceToHost, e->s));
    LAM_CUDA_CHECK(cudaStreamSynchronize(e->s));
    const int32_t *hrow = meta_row(e, e->h_in);
    for (int i = 0; i < e->n_seq; i++)
        memcpy(e->o[i], e->h_o + (size_t)hrow[i] * e->qrow * e->esz,
               (size_t)(hrow[i + 1] - hrow[i]) * e->qrow * e->esz);
    return LAM_OK;
}

static void xc_destroy(lam_an_exec_t *x)
{
    cuda_exec_t *e = (cuda_exec_t *)x;
    lam_kv_destroy(x->kv);
    if (e->s) {
        cudaStreamSynchronize(e->s);
        cudaStreamDestroy(e->s);
    }
    cudaFree(e->pool);
    cudaFree(e->ws);
    cudaFree(e->d_in);
    cudaFree(e->d_q32);
    cudaFree(e->d_o32);
    cudaFree(e->d_o);
    cudaFreeHost(e->h_in);
    cudaFreeHost(e->h_o);
    free(e->o);
    free(e);
}

static const lam_an_exec_i cuda_exec_i = {
    .name = "cuda", .begin = xc_begin, .add = xc_add, .run = xc_run, .destroy = xc_destroy,
};

/* Device memory and staging; the cache's books come after (they need the pool). */
static lam_status_t xc_alloc(cuda_exec_t *e)
{
    const size_t T = (size_t)e->max_tokens, S = (size_t)e->max_seqs, f = sizeof(float);
    e->off_k = align_up(T * e->qrow * f);
    e->off_v = e->off_k + align_up(T * e->kvrow * f);
    e->off_meta = e->off_v + align_up(T * e->kvrow * f);
    e->off_pages = e->off_meta + align_up((3 * S + 1) * sizeof(int32_t));
    e->in_bytes = e->off_pages + align_up((size_t)e->max_pages * sizeof(int32_t));
    size_t pool = (size_t)e->n_pages * e->g.page_bytes;
    LAM_CUDA_CHECK(cudaStreamCreateWithFlags(&e->s, cudaStreamNonBlocking));
    cudaError_t ce = cudaMalloc((void **)&e->pool, pool);
    if (ce != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        lam_log_error("attention node: cannot allocate %.1f MiB of KV pages on the GPU (%.1f of %.1f MiB free): "
                      "lower --kv-capacity",
                      pool / 1048576.0, free_b / 1048576.0, total_b / 1048576.0);
        return lam_cuda_status(ce, "cudaMalloc(KV pool)", __FILE__, __LINE__);
    }
    /* as the host cache touches its pages: no first-use cost in the hot path */
    LAM_CUDA_CHECK(cudaMemsetAsync(e->pool, 0, pool, e->s));
    e->ws_bytes = lam_cuda_attn_workspace_size(e->head_dim);
    if (e->ws_bytes)
        LAM_CUDA_CHECK(cudaMalloc(&e->ws, e->ws_bytes));
    LAM_CUDA_CHECK(cudaMalloc((void **)&e->d_in, e->in_bytes));
    LAM_CUDA_CHECK(cudaHostAlloc((void **)&e->h_in, e->in_bytes, cudaHostAllocPortable));
    LAM_CUDA_CHECK(cudaMalloc((void **)&e->d_q32, T * e->qrow * f));
    LAM_CUDA_CHECK(cudaMalloc((void **)&e->d_o32, T * e->qrow * f));
    LAM_CUDA_CHECK(cudaMalloc((void **)&e->d_o, T * e->qrow * f));
    LAM_CUDA_CHECK(cudaHostAlloc((void **)&e->h_o, T * e->qrow * f, cudaHostAllocPortable));
    LAM_CUDA_CHECK(cudaStreamSynchronize(e->s));
    e->o = malloc(S * sizeof *e->o);
    return e->o ? LAM_OK : LAM_ERR_NO_MEMORY;
}

lam_status_t lam_an_exec_cuda_create(const lam_an_exec_opts_t *o, lam_an_exec_t **out)
{
    char why[256];
    if (lam_cuda_probe(o->device, why, sizeof why) != LAM_OK) {
        lam_log_error("attention node: --device cuda: no usable CUDA device: %s", why);
        return LAM_ERR_NO_DEVICE;
    }
    const int hd = o->kv.head_dim;
    if (hd != 64 && hd != 128 && hd != 256) {
        lam_log_error("attention node: --device cuda: the GPU kernel takes head_dim 64, 128 or 256, the model has %d",
                      hd);
        return LAM_ERR_CONFIG;
    }
    lam_kv_geom_t g = lam_kv_geom_for(&o->kv);
    if (g.page_bytes == 0)
        return LAM_ERR_INVALID_ARG;
    int64_t n_pages = o->kv.capacity_pages > 0 ? o->kv.capacity_pages : (int64_t)(o->kv.capacity_bytes / g.page_bytes);
    if (n_pages < 1 || n_pages > INT32_MAX) {
        lam_log_error("attention node: a KV capacity of %zu bytes gives %lld pages of %zu bytes (1..%d possible)",
                      o->kv.capacity_bytes, (long long)n_pages, g.page_bytes, INT32_MAX);
        return LAM_ERR_CONFIG;
    }
    cuda_exec_t *e = calloc(1, sizeof *e);
    if (!e)
        return LAM_ERR_NO_MEMORY;
    e->base.i = &cuda_exec_i;
    e->device = o->device;
    e->n_kv = o->kv.n_kv_heads;
    e->group = o->group;
    e->head_dim = hd;
    e->kv_dtype = o->kv.dtype;
    e->qrow = (size_t)e->n_kv * o->group * hd;
    e->kvrow = (size_t)e->n_kv * hd;
    e->max_tokens = o->max_tokens;
    e->max_seqs = o->max_seqs;
    e->max_pages = (int64_t)o->max_seqs * g.max_pages_per_seq;
    e->g = g;
    e->n_pages = n_pages;
    snprintf(e->base.kernel, sizeof e->base.kernel, "cuda (%.50s)", why);
    lam_status_t st = cudaSetDevice(o->device) == cudaSuccess ? xc_alloc(e) : LAM_ERR_CUDA;
    if (st == LAM_OK) {
        lam_kv_opts_t ko = o->kv;
        ko.page_pool = e->pool;
        ko.capacity_pages = n_pages;
        st = lam_kv_create(&ko, &e->base.kv);
    }
    if (st != LAM_OK) {
        xc_destroy(&e->base);
        return st;
    }
    lam_log_info("attention node: KV cache on %s: %lld pages, %.1f MiB; %.1f MiB of staging", why,
                 (long long)n_pages, (double)n_pages * g.page_bytes / 1048576.0, e->in_bytes / 1048576.0);
    *out = &e->base;
    return LAM_OK;
}
