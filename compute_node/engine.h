/* Reference engine: a plain CPU forward pass of a LLaMA-family model over a
 * batch of tokens from several sequences ("slots") at different positions.
 * It keeps a contiguous f32 KV cache per slot. This is the oracle the
 * offloaded and CUDA paths are tested against: keep it readable. */
#ifndef LAM_ENGINE_H
#define LAM_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/model.h"
#include "common/status.h"

typedef struct lam_engine_opts {
    int n_slots;          /* concurrent sequences */
    int max_ctx;          /* tokens per sequence (KV cache length) */
    int max_batch_tokens; /* tokens per forward call */
    bool quant_act;       /* false (default): plain f32 arithmetic on the
                             dequantised weights. true: round activations
                             before each matrix product the way llama.cpp's
                             quantised CPU kernels do (lam_act_fmt_t) */
} lam_engine_opts_t;

/* One forward call: n tokens, each with its slot and position. Within a
 * slot, tokens must be consecutive positions continuing that slot's
 * sequence (pos == current length for the first). */
typedef struct lam_batch {
    int n;
    const int32_t *token;   /* [n] */
    const int32_t *pos;     /* [n] */
    const int32_t *slot;    /* [n] */
    const uint8_t *logits;  /* [n] 1 = return logits for this token; NULL = all */
} lam_batch_t;

typedef struct lam_engine lam_engine_t;

lam_status_t lam_engine_create(const lam_model_t *m, const lam_engine_opts_t *opts, lam_engine_t **out);
void lam_engine_free(lam_engine_t *e);

/* Runs the batch. Writes logits [n_out][vocab] for the flagged tokens, in
 * batch order, into `logits` (room for max_batch_tokens rows). Validates
 * tokens, slots and positions first; on error nothing is changed. */
lam_status_t lam_engine_forward(lam_engine_t *e, const lam_batch_t *b, float *logits);

/* Forgets a slot's sequence so the slot can start a new one. */
void lam_engine_slot_reset(lam_engine_t *e, int slot);
int lam_engine_slot_len(const lam_engine_t *e, int slot);
const lam_model_config_t *lam_engine_config(const lam_engine_t *e);
void lam_engine_limits(const lam_engine_t *e, int *n_slots, int *max_ctx, int *max_batch_tokens);

#endif
