/* Inside the CUDA compute backend: the structures backend_cuda.c,
 * backend_cuda_load.c, the monolithic mode (mono_cuda.c) and the GPU
 * benchmarks share. Not for other callers: use backend_cuda.h. */
#ifndef LAM_BACKEND_CUDA_INTERNAL_H
#define LAM_BACKEND_CUDA_INTERNAL_H

#include "compute_node/backend_cuda.h"
#include "kernels/cuda/lam_cuda.h"

typedef struct lam_cb_layer {
    float *attn_norm, *ffn_norm;  /* [dim] f32 */
    void *wqkv;                   /* [q_dim + 2*kv_dim][dim] wdtype: Wq rows, then Wk, then Wv */
    float *bqkv;                  /* [q_dim + 2*kv_dim] f32, or NULL */
    void *wo;                     /* [dim][q_dim] */
    void *wgu;                    /* [2*ffn_dim][dim]: W_gate rows, then W_up */
    void *wdown;                  /* [dim][ffn_dim] */
} lam_cb_layer_t;

typedef struct lam_cb {
    lam_model_config_t cfg;       /* a copy: the model may go away */
    int device;
    int wdtype;                   /* LAM_DT_F16 or LAM_DT_BF16 */
    size_t wsz;                   /* its size */
    int q_dim, kv_dim, qkv_dim, widest; /* widest = max(dim, q_dim, ffn_dim) */

    uint8_t *weights;             /* one device allocation for all of: */
    size_t weight_bytes;
    lam_cb_layer_t *layers;       /* [n_layers] (host array of device pointers) */
    void *tok_embd;               /* [vocab][dim] wdtype */
    void *lm_head;                /* [vocab][dim] wdtype; == tok_embd when tied */
    float *out_norm;              /* [dim] */
    float *rope_freqs;            /* [n_rot/2] or NULL */

    cudaStream_t d2h, h2d;        /* copy streams shared by the micro-batches */

    float *d_logits;              /* [logits_rows][vocab] f32 */
    int logits_rows;
    uint8_t *stage;               /* pinned, 2 x stage_half bytes: logits out (double-buffered) */
    size_t stage_half;
    cudaEvent_t stage_ev[2];
} lam_cb_t;

struct lam_backend_mb {
    int T;
    cudaStream_t s;               /* this micro-batch's compute stream */
    cublasHandle_t blas;          /* bound to s (cuBLAS workspaces are per handle) */
    cudaEvent_t ev_tok;           /* tokens copied in: h_tok reusable */
    cudaEvent_t ev_qkv;           /* q/k/v computed (on s) */
    cudaEvent_t ev_out;           /* q/k/v on the host (on d2h) */
    cudaEvent_t ev_o;             /* attention output on the device (on h2d) */
    cudaEvent_t ev_x;             /* logits input ready (on s) */

    uint8_t *dev;                 /* one device allocation for all of: */
    float *x;                     /* [T][dim] residual stream */
    void *xlo;                    /* [T][widest] wdtype: the next GEMM's input */
    float *qkv;                   /* [T][qkv_dim] q | k | v per token, RoPE applied */
    float *att;                   /* [T][q_dim] attention output */
    float *gu;                    /* [T][2*ffn_dim] gate | up per token */
    float *xg;                    /* [T][dim] rows gathered for the LM head */
    int32_t *d_tok, *d_pos;       /* [T] */

    uint8_t *pinned;              /* one cudaHostAlloc for all of: */
    size_t pinned_bytes;
    float *h_q;                   /* [T][q_dim] */
    float *h_k, *h_v;             /* [T][kv_dim] */
    float *h_o;                   /* [T][q_dim] */
    int32_t *h_tok, *h_pos;       /* [T] */
};

static inline lam_cb_t *lam_cb_of(const lam_backend_t *b) { return (lam_cb_t *)b->ctx; }

/* Allocates c->weights for c->cfg and points the fields into it (with
 * c->lm_head separate unless tied). */
lam_status_t lam_cb_weights_alloc(lam_cb_t *c, bool tied, bool bias, bool rope_freqs);
/* Fills the weights from the model (and its file, if given). */
lam_status_t lam_cb_weights_load(lam_cb_t *c, const lam_model_t *m, const lam_gguf_t *g, size_t staging_bytes);
/* Fills the weights with random values (lam_backend_cuda_create_random). */
lam_status_t lam_cb_weights_random(lam_cb_t *c, uint64_t seed);

/* dst[n] of dtype = uniform in [lo, hi) from (seed, index) (backend_cuda_fill.cu). */
lam_status_t lam_cb_fill_uniform(void *dst, int dtype, size_t n, uint64_t seed, float lo, float hi,
                                 cudaStream_t s);

/* The dense work of one micro-batch on its stream, shared by the backend's
 * vtable and the monolithic mode; n tokens, positions already in mb->d_pos.
 *   qkv:  mb->qkv = rope(norm(x) . Wqkv (+ bias))
 *   post: x += att . Wo; x += down(swiglu(norm(x) . Wgu))  (att in mb->att) */
lam_status_t lam_cb_qkv(lam_cb_t *c, lam_backend_mb_t *mb, int layer, int n);
lam_status_t lam_cb_post(lam_cb_t *c, lam_backend_mb_t *mb, int layer, int n);
/* Embedding of n host tokens into mb->x. */
lam_status_t lam_cb_embed(lam_cb_t *c, lam_backend_mb_t *mb, const int32_t *tok, int n);
/* Final norm and LM head of the rows with want[t] (NULL: all) into host
 * logits[n_out][vocab]. */
lam_status_t lam_cb_logits(lam_cb_t *c, lam_backend_mb_t *mb, const uint8_t *want, int n, float *logits,
                           int *n_out);

#endif
