/* Attention executors of the attention node: where the KV pages live and
 * what runs attention over them, chosen once at startup (--device) so the
 * message path never asks which one it has.
 *
 *   cpu   pages in host memory (a jemalloc arena, kv.c), lam_attn_paged
 *         (kernels/cpu/attn.h) with OpenMP and SIMD
 *   cuda  pages in one device pool that lam_kv only keeps the books of
 *         (lam_kv_opts_t.page_pool), lam_cuda_kv_write + lam_cuda_attn
 *         (kernels/cuda/lam_cuda.h); q/k/v go in and o comes out through
 *         pinned host buffers, one copy each way per message
 *
 * The server (server.c) owns the protocol and the books: per ATTN message
 * it calls begin, then for every sequence whose chunk was reserved in the
 * cache add (before lam_kv_commit), then run, after which every added
 * output row is filled. Executors never see the wire and never fail on
 * what a peer sent; run fails only when the device does. */
#ifndef LAM_ATTENTION_NODE_EXEC_H
#define LAM_ATTENTION_NODE_EXEC_H

#include "attention_node/kv.h"
#include "common/status.h"

typedef struct lam_an_exec lam_an_exec_t;

typedef struct lam_an_exec_opts {
    lam_kv_opts_t kv;          /* the cache (this shard's KV heads); page_pool is the executor's business */
    int group;                 /* query heads per KV head */
    int max_tokens;            /* rows per message */
    int max_seqs;              /* sequences per message */
    int device;                /* CUDA device index (cuda) */
} lam_an_exec_opts_t;

typedef struct lam_an_exec_i {
    const char *name;
    /* A message for `layer` whose rows are of `dtype` (lam_dtype_t). */
    void (*begin)(lam_an_exec_t *x, int layer, int dtype);
    /* The chunk [pos, pos + n) of sequence s, reserved in the cache: its
     * rows q [n][n_q][head_dim], k, v [n][n_kv][head_dim] in the message's
     * dtype; after run, o [n][n_q][head_dim] (same dtype) holds its output.
     * The pointers must stay valid until run returns. */
    void (*add)(lam_an_exec_t *x, lam_kv_seq_t *s, int pos, int n, const void *q, const void *k, const void *v,
                void *o);
    /* Stores the added K/V rows, runs attention, fills every o. */
    lam_status_t (*run)(lam_an_exec_t *x);
    void (*destroy)(lam_an_exec_t *x);
} lam_an_exec_i;

struct lam_an_exec {
    const lam_an_exec_i *i;
    lam_kv_t *kv;              /* the cache, made by the executor */
    char kernel[64];           /* for the startup log: "cpu avx512", "cuda <device>" */
};

/* Takes the cache (lam_kv_create's errors) and scratch for o->max_tokens rows. */
lam_status_t lam_an_exec_cpu_create(const lam_an_exec_opts_t *o, lam_an_exec_t **out);
/* Same on a GPU. LAM_ERR_NO_DEVICE without a usable GPU and
 * LAM_ERR_UNSUPPORTED in a build without CUDA (both logged), LAM_ERR_CONFIG
 * for a head_dim the kernel lacks or a capacity below one page,
 * LAM_ERR_CUDA_OOM when the pool does not fit. */
lam_status_t lam_an_exec_cuda_create(const lam_an_exec_opts_t *o, lam_an_exec_t **out);

static inline void lam_an_exec_destroy(lam_an_exec_t *x)
{
    if (x)
        x->i->destroy(x);
}

#endif
