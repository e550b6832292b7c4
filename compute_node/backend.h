/* Compute backend: the dense part of the model (embedding, the layer halves
 * around attention, LM head) behind a small vtable, so the micro-batch
 * pipeline does not care whether it runs on the CPU or a GPU. One
 * lam_backend_mb_t holds one micro-batch's activations; the pipeline keeps
 * two and alternates between them.
 *
 * Data the pipeline exchanges with attention nodes lives in host memory:
 * attn_in returns host pointers to q/k/v (f32, RoPE applied), and the
 * attention output is written into the host buffer attn_out_buf returns
 * before attn_out runs. A GPU backend stages through pinned buffers there. */
#ifndef LAM_BACKEND_H
#define LAM_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "common/model.h"
#include "common/status.h"

typedef struct lam_backend lam_backend_t;
typedef struct lam_backend_mb lam_backend_mb_t;

typedef struct lam_backend_i {
    const char *name;
    lam_status_t (*mb_create)(lam_backend_t *b, int max_tokens, lam_backend_mb_t **out);
    void (*mb_destroy)(lam_backend_t *b, lam_backend_mb_t *mb);
    /* x = embedding(tok) for n tokens */
    lam_status_t (*embed)(lam_backend_t *b, lam_backend_mb_t *mb, const int32_t *tok, int n);
    /* q [n][n_heads*head_dim], k, v [n][n_kv_heads*head_dim] of layer l, host f32 */
    lam_status_t (*attn_in)(lam_backend_t *b, lam_backend_mb_t *mb, int layer, const int32_t *pos, int n,
                            const float **q, const float **k, const float **v);
    /* where the attention output [n][n_heads*head_dim] goes (host f32) */
    float *(*attn_out_buf)(lam_backend_t *b, lam_backend_mb_t *mb);
    /* output projection, residual, FFN of layer l */
    lam_status_t (*attn_out)(lam_backend_t *b, lam_backend_mb_t *mb, int layer, int n);
    /* logits [n_out][vocab] for the rows with want[t] (NULL: all); *n_out gets the count */
    lam_status_t (*logits)(lam_backend_t *b, lam_backend_mb_t *mb, const uint8_t *want, int n, float *logits,
                           int *n_out);
    /* Optional (NULL: logits per micro-batch): logits as above for mb1's
     * rows then mb2's, in one pass over the LM head weights. May return
     * LAM_ERR_INVALID_ARG where mb1 cannot hold both (then call logits). */
    lam_status_t (*logits2)(lam_backend_t *b, lam_backend_mb_t *mb1, const uint8_t *want1, int n1,
                            lam_backend_mb_t *mb2, const uint8_t *want2, int n2, float *logits, int *n_out);
    void (*destroy)(lam_backend_t *b);
} lam_backend_i;

struct lam_backend {
    const lam_backend_i *i;
    const lam_model_config_t *cfg;
    void *ctx;
    /* If set, a backend that computes on the calling thread calls it between
     * its operations (the CPU backend: after every matrix product), so that
     * the network moves while the dense part runs; the pipeline sets it. */
    void (*poll)(void *arg);
    void *poll_arg;
    bool polls; /* it does call poll between operations (the CPU backend) */
};

/* CPU backend over a loaded model (f32 weights; quant_act as in
 * lam_engine_opts_t). The model must outlive the backend. */
lam_status_t lam_backend_cpu_create(const lam_model_t *m, bool quant_act, lam_backend_t **out);

static inline void lam_backend_destroy(lam_backend_t *b)
{
    if (b)
        b->i->destroy(b);
}

#endif
