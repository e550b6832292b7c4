#include "compute_node/engine.h"
#include "common/log.h"
#include "compute_node/dense.h"
#include "kernels/cpu/ops.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

struct lam_engine {
    const lam_model_t *m;
    lam_engine_opts_t o;
    int q_dim, kv_dim;
    int *slot_len;      /* [n_slots] tokens in each slot's cache */
    int *slot_next;     /* [n_slots] scratch for batch validation */
    float *k_cache;     /* [n_layers][n_slots][max_ctx][kv_dim] */
    float *v_cache;     /* [n_layers][n_slots][max_ctx][kv_dim] */
    lam_dense_act_t a;  /* activations for max_batch_tokens tokens */
    float *scores;      /* [n_threads][max_ctx] */
    int n_threads;
};

lam_status_t lam_engine_create(const lam_model_t *m, const lam_engine_opts_t *opts, lam_engine_t **out)
{
    const lam_model_config_t *c = &m->cfg;
    if (opts->n_slots < 1 || opts->max_ctx < 1 || opts->max_batch_tokens < 1) {
        lam_log_error("engine: n_slots, max_ctx and max_batch_tokens must be positive");
        return LAM_ERR_INVALID_ARG;
    }
    lam_engine_t *e = calloc(1, sizeof *e);
    if (!e)
        return LAM_ERR_NO_MEMORY;
    e->m = m;
    e->o = *opts;
    e->q_dim = c->n_heads * c->head_dim;
    e->kv_dim = c->n_kv_heads * c->head_dim;
    e->n_threads = omp_get_max_threads();
    size_t cache = (size_t)c->n_layers * opts->n_slots * opts->max_ctx * e->kv_dim;
    e->slot_len = calloc((size_t)opts->n_slots, sizeof *e->slot_len);
    e->slot_next = calloc((size_t)opts->n_slots, sizeof *e->slot_next);
    e->k_cache = calloc(cache, sizeof(float));
    e->v_cache = calloc(cache, sizeof(float));
    e->scores = calloc((size_t)e->n_threads * opts->max_ctx, sizeof(float));
    bool ok = e->slot_len && e->slot_next && e->k_cache && e->v_cache && e->scores &&
              lam_dense_act_alloc(c, opts->max_batch_tokens, &e->a) == LAM_OK;
    if (!ok) {
        lam_log_error("engine: out of memory (KV cache %.1f MiB)", 2.0 * cache * 4 / (1 << 20));
        lam_engine_free(e);
        return LAM_ERR_NO_MEMORY;
    }
    *out = e;
    return LAM_OK;
}

void lam_engine_free(lam_engine_t *e)
{
    if (!e)
        return;
    lam_dense_act_free(&e->a);
    free(e->k_cache);
    free(e->v_cache);
    free(e->scores);
    free(e->slot_len);
    free(e->slot_next);
    free(e);
}

void lam_engine_slot_reset(lam_engine_t *e, int slot)
{
    if (slot >= 0 && slot < e->o.n_slots)
        e->slot_len[slot] = 0;
}

int lam_engine_slot_len(const lam_engine_t *e, int slot) { return e->slot_len[slot]; }
const lam_model_config_t *lam_engine_config(const lam_engine_t *e) { return &e->m->cfg; }

void lam_engine_limits(const lam_engine_t *e, int *n_slots, int *max_ctx, int *max_batch_tokens)
{
    *n_slots = e->o.n_slots;
    *max_ctx = e->o.max_ctx;
    *max_batch_tokens = e->o.max_batch_tokens;
}

/* Checks the batch against the slots' current lengths without changing them. */
static lam_status_t check_batch(lam_engine_t *e, const lam_batch_t *b)
{
    if (b->n < 1 || b->n > e->o.max_batch_tokens) {
        lam_log_error("engine: batch of %d tokens (1..%d allowed)", b->n, e->o.max_batch_tokens);
        return LAM_ERR_INVALID_ARG;
    }
    int *next = e->slot_next;
    memcpy(next, e->slot_len, (size_t)e->o.n_slots * sizeof *next);
    lam_status_t st = LAM_OK;
    for (int i = 0; i < b->n && st == LAM_OK; i++) {
        int s = b->slot[i];
        if (b->token[i] < 0 || b->token[i] >= e->m->cfg.vocab) {
            lam_log_error("engine: token %d out of range [0, %d)", b->token[i], e->m->cfg.vocab);
            st = LAM_ERR_RANGE;
        } else if (s < 0 || s >= e->o.n_slots) {
            lam_log_error("engine: slot %d out of range [0, %d)", s, e->o.n_slots);
            st = LAM_ERR_RANGE;
        } else if (b->pos[i] != next[s] || b->pos[i] >= e->o.max_ctx) {
            lam_log_error("engine: slot %d: position %d, expected %d (context %d)", s, b->pos[i],
                          next[s], e->o.max_ctx);
            st = LAM_ERR_RANGE;
        } else {
            next[s]++;
        }
    }
    return st;
}

lam_status_t lam_engine_forward(lam_engine_t *e, const lam_batch_t *b, float *logits)
{
    lam_status_t st = check_batch(e, b);
    if (st != LAM_OK)
        return st;
    const lam_model_t *m = e->m;
    const lam_model_config_t *c = &m->cfg;
    const int n = b->n, hd = c->head_dim;
    const size_t slot_stride = (size_t)e->o.max_ctx * e->kv_dim;
    const size_t layer_stride = (size_t)e->o.n_slots * slot_stride;

    lam_dense_act_t *a = &e->a;
    const bool qa = e->o.quant_act;
    lam_dense_embed(m, a, b->token, n);
    for (int l = 0; l < c->n_layers; l++) {
        float *kc = e->k_cache + l * layer_stride, *vc = e->v_cache + l * layer_stride;
        lam_dense_qkv(m, qa, a, l, b->pos, n);
        for (int t = 0; t < n; t++) {
            size_t at = b->slot[t] * slot_stride + (size_t)b->pos[t] * e->kv_dim;
            memcpy(kc + at, a->k + (size_t)t * e->kv_dim, e->kv_dim * sizeof(float));
            memcpy(vc + at, a->v + (size_t)t * e->kv_dim, e->kv_dim * sizeof(float));
        }
        /* every token of the batch is in the cache now: token t sees positions 0..pos[t];
         * one (token, query head) pair per iteration, its KV head h / group */
        const int group = c->n_heads / c->n_kv_heads;
#pragma omp parallel for collapse(2) schedule(dynamic)
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < c->n_heads; h++) {
                float *scratch = e->scores + (size_t)omp_get_thread_num() * e->o.max_ctx;
                size_t kv = b->slot[t] * slot_stride + (size_t)(h / group) * hd;
                size_t qo = (size_t)t * e->q_dim + (size_t)h * hd;
                lam_attn_ref_f32(a->att + qo, a->q + qo, kc + kv, vc + kv, b->pos[t] + 1, 1, 1, hd, e->kv_dim,
                                 scratch);
            }
        }
        lam_dense_post(m, qa, a, l, n);
    }
    for (int t = 0; t < n; t++)
        e->slot_len[b->slot[t]] = b->pos[t] + 1;
    lam_dense_logits(m, qa, a, b->logits, n, logits);
    return LAM_OK;
}
