#include "compute_node/engine.h"
#include "common/log.h"
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
    /* activations, T = max_batch_tokens */
    float *x;           /* [T][dim] residual stream */
    float *xb;          /* [T][dim] normed input */
    float *q;           /* [T][q_dim] */
    float *k, *v;       /* [T][kv_dim] */
    float *att;         /* [T][q_dim] attention output */
    float *xo;          /* [T][dim] projection output */
    float *hg, *hu;     /* [T][ffn_dim] gate, up */
    float *xq;          /* [T][max(dim, q_dim, ffn_dim)] rounded matmul input */
    float *xcorr;       /* [T][max(...)/32] fp16 block-sum corrections (lam_act_round_q8_32) */
    float *scores;      /* [n_threads][max_ctx] */
    int n_threads;
};

static float *alloc_f32(size_t n, bool *ok)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    if (!p)
        *ok = false;
    return p;
}

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
    size_t T = (size_t)opts->max_batch_tokens;
    size_t cache = (size_t)c->n_layers * opts->n_slots * opts->max_ctx * e->kv_dim;
    bool ok = true;
    e->slot_len = calloc((size_t)opts->n_slots, sizeof *e->slot_len);
    e->slot_next = calloc((size_t)opts->n_slots, sizeof *e->slot_next);
    ok = e->slot_len != NULL && e->slot_next != NULL;
    e->k_cache = alloc_f32(cache, &ok);
    e->v_cache = alloc_f32(cache, &ok);
    e->x = alloc_f32(T * c->dim, &ok);
    e->xb = alloc_f32(T * c->dim, &ok);
    e->q = alloc_f32(T * e->q_dim, &ok);
    e->k = alloc_f32(T * e->kv_dim, &ok);
    e->v = alloc_f32(T * e->kv_dim, &ok);
    e->att = alloc_f32(T * e->q_dim, &ok);
    e->xo = alloc_f32(T * c->dim, &ok);
    e->hg = alloc_f32(T * c->ffn_dim, &ok);
    e->hu = alloc_f32(T * c->ffn_dim, &ok);
    int widest = c->dim > e->q_dim ? c->dim : e->q_dim;
    widest = widest > c->ffn_dim ? widest : c->ffn_dim;
    e->xq = alloc_f32(T * widest, &ok);
    e->xcorr = alloc_f32(T * (widest / 32 + 1), &ok);
    e->scores = alloc_f32((size_t)e->n_threads * opts->max_ctx, &ok);
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
    float *ps[] = {e->k_cache, e->v_cache, e->x, e->xb, e->q, e->k, e->v,
                   e->att, e->xo, e->hg, e->hu, e->xq, e->xcorr, e->scores};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        free(ps[i]);
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

/* y[T][O] = x[T][I]·Wᵀ, with x first rounded as the weights' format asks. */
static void matmul(lam_engine_t *e, float *y, const float *x, const float *W, const float *bias,
                   int T, int I, int O, uint8_t act, const float *wmin)
{
    bool round = e->o.quant_act && act != LAM_ACT_F32;
    if (round) {
        for (int t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * I;
            float *qt = e->xq + (size_t)t * I;
            switch (act) {
            case LAM_ACT_F16: lam_act_round_f16(qt, xt, I); break;
            case LAM_ACT_BF16: lam_act_round_bf16(qt, xt, I); break;
            case LAM_ACT_Q8_K: lam_act_round_q8_k(qt, xt, I); break;
            default: lam_act_round_q8_32(qt, xt, I, e->xcorr + (size_t)t * (I / 32)); break;
            }
        }
        x = e->xq;
    }
    lam_matmul_f32(y, x, W, bias, T, I, O);
    if (round && wmin && act == LAM_ACT_Q8_32 && I % 32 == 0) {
        int nb = I / 32;
#pragma omp parallel for schedule(static)
        for (int o = 0; o < O; o++)
            for (int t = 0; t < T; t++)
                y[(size_t)t * O + o] += lam_dot_f32(wmin + (size_t)o * nb, e->xcorr + (size_t)t * nb, nb);
    }
}

lam_status_t lam_engine_forward(lam_engine_t *e, const lam_batch_t *b, float *logits)
{
    lam_status_t st = check_batch(e, b);
    if (st != LAM_OK)
        return st;
    const lam_model_t *m = e->m;
    const lam_model_config_t *c = &m->cfg;
    const int n = b->n, dim = c->dim, hd = c->head_dim;
    const size_t slot_stride = (size_t)e->o.max_ctx * e->kv_dim;
    const size_t layer_stride = (size_t)e->o.n_slots * slot_stride;

    for (int t = 0; t < n; t++)
        memcpy(e->x + (size_t)t * dim, m->tok_embd + (size_t)b->token[t] * dim, dim * sizeof(float));

    for (int l = 0; l < c->n_layers; l++) {
        const lam_layer_t *L = &m->layers[l];
        float *kc = e->k_cache + l * layer_stride, *vc = e->v_cache + l * layer_stride;

        /* attention block: xb = norm(x); q,k,v = xb·W; rope; cache; attend; x += att·Wo */
        for (int t = 0; t < n; t++)
            lam_rmsnorm_f32(e->xb + (size_t)t * dim, e->x + (size_t)t * dim, L->attn_norm, dim, c->norm_eps);
        matmul(e, e->q, e->xb, L->wq, L->bq, n, dim, e->q_dim, L->act[LAM_W_Q], L->wmin[LAM_W_Q]);
        matmul(e, e->k, e->xb, L->wk, L->bk, n, dim, e->kv_dim, L->act[LAM_W_K], L->wmin[LAM_W_K]);
        matmul(e, e->v, e->xb, L->wv, L->bv, n, dim, e->kv_dim, L->act[LAM_W_V], L->wmin[LAM_W_V]);
        for (int t = 0; t < n; t++) {
            int neox = c->rope_type == LAM_ROPE_NEOX;
            lam_rope_f32(e->q + (size_t)t * e->q_dim, c->n_heads, hd, c->n_rot, b->pos[t], c->rope_theta,
                         c->rope_freq_scale, m->rope_freqs, neox);
            lam_rope_f32(e->k + (size_t)t * e->kv_dim, c->n_kv_heads, hd, c->n_rot, b->pos[t], c->rope_theta,
                         c->rope_freq_scale, m->rope_freqs, neox);
            size_t at = b->slot[t] * slot_stride + (size_t)b->pos[t] * e->kv_dim;
            memcpy(kc + at, e->k + (size_t)t * e->kv_dim, e->kv_dim * sizeof(float));
            memcpy(vc + at, e->v + (size_t)t * e->kv_dim, e->kv_dim * sizeof(float));
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
                lam_attn_ref_f32(e->att + qo, e->q + qo, kc + kv, vc + kv, b->pos[t] + 1, 1, 1, hd, e->kv_dim,
                                 scratch);
            }
        }
        matmul(e, e->xo, e->att, L->wo, NULL, n, e->q_dim, dim, L->act[LAM_W_O], L->wmin[LAM_W_O]);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            e->x[i] += e->xo[i];

        /* feed-forward block: x += down(silu(gate(xb)) * up(xb)), xb = norm(x) */
        for (int t = 0; t < n; t++)
            lam_rmsnorm_f32(e->xb + (size_t)t * dim, e->x + (size_t)t * dim, L->ffn_norm, dim, c->norm_eps);
        matmul(e, e->hg, e->xb, L->w_gate, NULL, n, dim, c->ffn_dim, L->act[LAM_W_GATE], L->wmin[LAM_W_GATE]);
        matmul(e, e->hu, e->xb, L->w_up, NULL, n, dim, c->ffn_dim, L->act[LAM_W_UP], L->wmin[LAM_W_UP]);
        lam_swiglu_f32(e->hg, e->hu, n * c->ffn_dim);
        matmul(e, e->xo, e->hg, L->w_down, NULL, n, c->ffn_dim, dim, L->act[LAM_W_DOWN], L->wmin[LAM_W_DOWN]);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            e->x[i] += e->xo[i];
    }
    for (int t = 0; t < n; t++)
        e->slot_len[b->slot[t]] = b->pos[t] + 1;

    /* final norm and LM head, only for the rows that want logits */
    int n_out = 0;
    for (int t = 0; t < n; t++) {
        if (b->logits && !b->logits[t])
            continue;
        lam_rmsnorm_f32(e->xb + (size_t)n_out * dim, e->x + (size_t)t * dim, m->out_norm, dim, c->norm_eps);
        n_out++;
    }
    if (n_out > 0)
        matmul(e, logits, e->xb, m->lm_head, NULL, n_out, dim, c->vocab, m->lm_head_act, m->lm_head_min);
    return LAM_OK;
}
