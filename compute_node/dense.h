/* The dense half of a LLaMA-family layer on the CPU: everything but the
 * attention operator. The reference engine (attention local) and the CPU
 * compute backend (attention on attention nodes) both run these, so the
 * offloaded path computes exactly what the oracle computes. */
#ifndef LAM_DENSE_H
#define LAM_DENSE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/model.h"
#include "common/status.h"

/* Activations for up to T tokens. */
typedef struct lam_dense_act {
    int T;
    float *x;           /* [T][dim] residual stream */
    float *xb;          /* [T][dim] normed input */
    float *q;           /* [T][q_dim] rotated queries */
    float *k, *v;       /* [T][kv_dim] rotated keys, values */
    float *att;         /* [T][q_dim] attention output (input of post) */
    float *xo;          /* [T][dim] projection output */
    float *hg, *hu;     /* [T][ffn_dim] gate, up */
    float *xq;          /* [T][max(dim, q_dim, ffn_dim)] rounded matmul input */
    float *xcorr;       /* [T][max(...)/32 + 1] block-sum corrections (lam_act_round_q8_32) */
    /* If set, called after every matrix product (the compute node's network
     * progress between dense operations); NULL for the reference engine. */
    void (*between)(void *arg);
    void *between_arg;
    /* RoPE's cos/sin per token ([T][n_rot]) for the positions rope_pos[0..rope_n)
     * of model rope_model: computed at the first layer, reused by the others */
    float *rope_cs;
    int32_t *rope_pos;
    int rope_n;
    const void *rope_model;
} lam_dense_act_t;

lam_status_t lam_dense_act_alloc(const lam_model_config_t *c, int T, lam_dense_act_t *a);
void lam_dense_act_free(lam_dense_act_t *a);

/* x[t] = embedding of tok[t] */
void lam_dense_embed(const lam_model_t *m, lam_dense_act_t *a, const int32_t *tok, int n);

/* xb = norm(x); q, k, v = xb·W (+bias); RoPE at pos[t]. */
void lam_dense_qkv(const lam_model_t *m, bool quant_act, lam_dense_act_t *a, int layer, const int32_t *pos, int n);

/* x += att·Wo; x += down(silu(gate(xb)) * up(xb)) with xb = norm(x). */
void lam_dense_post(const lam_model_t *m, bool quant_act, lam_dense_act_t *a, int layer, int n);

/* Bytes of weight matrices one pass over every layer and the LM head reads
 * (blocks where the product reads them, f32 rows elsewhere). */
size_t lam_dense_step_bytes(const lam_model_t *m);

/* Final norm and LM head for the rows with want[t] (NULL: all), written in
 * order as logits[n_out][vocab]; returns n_out. */
int lam_dense_logits(const lam_model_t *m, bool quant_act, lam_dense_act_t *a, const uint8_t *want, int n,
                     float *logits);

/* As lam_dense_logits over a's rows, then b's, in one pass over the LM head
 * (the same values as two calls). a's buffers take all the rows: returns -1,
 * doing nothing, where they number more than a->T. */
int lam_dense_logits2(const lam_model_t *m, bool quant_act, lam_dense_act_t *a, const uint8_t *want_a, int n_a,
                      const lam_dense_act_t *b, const uint8_t *want_b, int n_b, float *logits);

#endif
