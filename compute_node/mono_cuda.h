/* Monolithic GPU mode: the whole model on one GPU, attention included (KV
 * cache in device memory, the paged attention kernel of kernels/cuda). It
 * is the baseline attention offload is compared with, and has the
 * reference engine's contract (compute_node/engine.h): a batch of tokens
 * from several slots at consecutive positions per slot, logits for the
 * flagged ones. Within a slot, tokens must continue its sequence; tokens
 * of different slots may interleave.
 *
 * The dense work is the CUDA backend's (backend_cuda.h), on one
 * micro-batch; each slot owns ceil(max_ctx / page_tokens) pages of a
 * device pool laid out as kernels/cpu/attn.h describes. */
#ifndef LAM_MONO_CUDA_H
#define LAM_MONO_CUDA_H

#include "compute_node/backend_cuda.h"
#include "compute_node/engine.h"
#include "compute_node/generate.h"

typedef struct lam_mono_cuda_opts {
    lam_backend_cuda_opts_t be;
    int n_slots;              /* concurrent sequences */
    int max_ctx;              /* tokens per sequence */
    int max_batch_tokens;     /* tokens per forward call */
    int kv_dtype;             /* LAM_DT_F16, LAM_DT_BF16 or LAM_DT_F32 */
    int page_tokens;          /* 0: 16 */
} lam_mono_cuda_opts_t;

typedef struct lam_mono_cuda lam_mono_cuda_t;

/* LAM_ERR_NO_DEVICE without a GPU, LAM_ERR_CUDA_OOM (logged with the sizes)
 * when the weights and KV cache do not fit. */
lam_status_t lam_mono_cuda_create(const lam_model_t *m, const lam_mono_cuda_opts_t *o, lam_mono_cuda_t **out);
/* Same, on random device weights of shape cfg (lam_backend_cuda_create_random). */
lam_status_t lam_mono_cuda_create_random(const lam_model_config_t *cfg, const lam_mono_cuda_opts_t *o, uint64_t seed,
                                         lam_mono_cuda_t **out);
void lam_mono_cuda_destroy(lam_mono_cuda_t *e);

/* As lam_engine_forward: validates first (nothing changes on error), then
 * runs; logits [n_out][vocab] for the flagged tokens in batch order. */
lam_status_t lam_mono_cuda_forward(lam_mono_cuda_t *e, const lam_batch_t *b, float *logits);

void lam_mono_cuda_slot_reset(lam_mono_cuda_t *e, int slot);
int lam_mono_cuda_slot_len(const lam_mono_cuda_t *e, int slot);
void lam_mono_cuda_limits(const lam_mono_cuda_t *e, int *n_slots, int *max_ctx, int *max_batch_tokens);
const lam_model_config_t *lam_mono_cuda_config(const lam_mono_cuda_t *e);

/* e as an engine for lam_generate_batch_on. */
void lam_mono_cuda_gen_engine(lam_mono_cuda_t *e, lam_gen_engine_t *out);

#endif
