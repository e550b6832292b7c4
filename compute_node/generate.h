/* Generation loop over the reference engine: prefill several prompts
 * (packed into batches of up to max_batch_tokens), then decode all live
 * sequences together, one token each per step, until each stops. */
#ifndef LAM_GENERATE_H
#define LAM_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/log.h" /* lam_now_s */
#include "compute_node/engine.h"
#include "compute_node/sampler.h"

typedef struct lam_gen_seq {
    const int32_t *prompt;      /* [n_prompt] */
    int n_prompt;
    int max_new;                /* tokens to generate at most */
    lam_sampler_params_t sp;
    int32_t *out;               /* [max_new] generated tokens */
    int n_out;                  /* set by lam_generate_batch */
} lam_gen_seq_t;

typedef struct lam_gen_hooks {
    bool (*is_eog)(void *ud, int32_t tok);              /* stop after this token; NULL = never */
    void (*on_token)(void *ud, int seq, int32_t tok);    /* streaming; may be NULL */
    void *ud;
} lam_gen_hooks_t;

typedef struct lam_gen_stats {
    double prefill_s, decode_s;
    long prefill_tokens, decode_tokens, decode_steps;
} lam_gen_stats_t;

/* Sequence i runs in slot i (n <= n_slots); slots are reset first. */
lam_status_t lam_generate_batch(lam_engine_t *e, lam_gen_seq_t *seqs, int n, const lam_gen_hooks_t *hooks,
                                lam_gen_stats_t *stats);

/* What the loop drives: the reference engine above, or another engine with
 * its contract (slots, lam_batch_t, logits of the flagged rows), such as
 * the monolithic GPU mode (mono_cuda.h). */
typedef struct lam_gen_engine {
    void *e;
    const lam_model_config_t *cfg;
    lam_status_t (*forward)(void *e, const lam_batch_t *b, float *logits);
    void (*slot_reset)(void *e, int slot);
    void (*limits)(const void *e, int *n_slots, int *max_ctx, int *max_batch_tokens);
} lam_gen_engine_t;

lam_status_t lam_generate_batch_on(const lam_gen_engine_t *eng, lam_gen_seq_t *seqs, int n,
                                   const lam_gen_hooks_t *hooks, lam_gen_stats_t *stats);


#endif
