/* The offloaded forward pass: one step over a batch of sequence chunks,
 * with the dense work on a compute backend and attention on the attention
 * nodes (lam_remote_t). The batch is split at a sequence boundary into two
 * micro-batches of about equal tokens; per layer, while one micro-batch's
 * attention is remote, the other's dense work runs:
 *
 *   A: qkv0 ─send─┐        ┌ wait o0 ─ post0+qkv1 ─send─┐
 *   B:      qkv0 ─send─┐   │            wait o0 ─ post0+qkv1 ─send ...
 *   nodes:            attn(A,0) attn(B,0)        attn(A,1) ...
 *
 * so a step costs about max(dense, attention + exchange), not the sum. */
#ifndef LAM_PIPELINE_H
#define LAM_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "compute_node/backend.h"
#include "compute_node/remote.h"

typedef struct lam_pipe lam_pipe_t;

typedef struct lam_pipe_opts {
    int max_tokens;      /* tokens per step */
    int max_seqs;        /* sequences per step */
    bool single_mb;      /* no overlap: one micro-batch (for measurements) */
} lam_pipe_opts_t;

/* One step: n_seq chunks; chunk i is seqs[i].n_tok tokens of sequence
 * seqs[i].id starting at position seqs[i].pos; tok holds the chunks' tokens
 * back to back; want[t] asks for token t's logits. */
typedef struct lam_step {
    int n_seq;
    const lam_remote_seq_t *seqs;
    int n_tok;
    const int32_t *tok;
    const uint8_t *want;
} lam_step_t;

typedef struct lam_pipe_stats {
    long steps, tokens;
    double step_s;       /* wall time inside lam_pipe_step */
    double dense_s;      /* time in backend calls */
    double wait_s;       /* time blocked on attention results */
} lam_pipe_stats_t;

lam_status_t lam_pipe_create(lam_backend_t *be, lam_remote_t *r, const lam_pipe_opts_t *o, lam_pipe_t **out);
void lam_pipe_destroy(lam_pipe_t *p);

/* Runs the step. logits [n_out][vocab] for the wanted tokens in order;
 * seq_status [n_seq]: 0, or the attention node's error for that sequence
 * (its logits are then meaningless). Returns LAM_OK, or the failure of the
 * whole step (a node lost: LAM_ERR_CONN_CLOSED / LAM_ERR_TIMEOUT). */
lam_status_t lam_pipe_step(lam_pipe_t *p, const lam_step_t *s, float *logits, int16_t *seq_status);

const lam_pipe_stats_t *lam_pipe_stats(const lam_pipe_t *p);
void lam_pipe_stats_reset(lam_pipe_t *p);

#endif
