/* The CPU compute backend: the reference engine's dense code (dense.c) per
 * micro-batch. */
#include "compute_node/backend.h"
#include "compute_node/dense.h"

#include <stdlib.h>

typedef struct cpu_ctx {
    const lam_model_t *m;
    bool quant_act;
} cpu_ctx_t;

struct lam_backend_mb {
    lam_dense_act_t a;
};

static lam_status_t cpu_mb_create(lam_backend_t *b, int max_tokens, lam_backend_mb_t **out)
{
    lam_backend_mb_t *mb = calloc(1, sizeof *mb);
    if (!mb)
        return LAM_ERR_NO_MEMORY;
    lam_status_t st = lam_dense_act_alloc(b->cfg, max_tokens, &mb->a);
    if (st != LAM_OK) {
        free(mb);
        return st;
    }
    *out = mb;
    return LAM_OK;
}

static void cpu_mb_destroy(lam_backend_t *b, lam_backend_mb_t *mb)
{
    (void)b;
    if (!mb)
        return;
    lam_dense_act_free(&mb->a);
    free(mb);
}

static void set_poll(const lam_backend_t *b, lam_backend_mb_t *mb)
{
    mb->a.between = b->poll;
    mb->a.between_arg = b->poll_arg;
}

static lam_status_t cpu_embed(lam_backend_t *b, lam_backend_mb_t *mb, const int32_t *tok, int n)
{
    cpu_ctx_t *c = b->ctx;
    if (n > mb->a.T)
        return LAM_ERR_INVALID_ARG;
    lam_dense_embed(c->m, &mb->a, tok, n);
    return LAM_OK;
}

static lam_status_t cpu_attn_in(lam_backend_t *b, lam_backend_mb_t *mb, int layer, const int32_t *pos, int n,
                                const float **q, const float **k, const float **v)
{
    cpu_ctx_t *c = b->ctx;
    set_poll(b, mb);
    lam_dense_qkv(c->m, c->quant_act, &mb->a, layer, pos, n);
    *q = mb->a.q;
    *k = mb->a.k;
    *v = mb->a.v;
    return LAM_OK;
}

static float *cpu_attn_out_buf(lam_backend_t *b, lam_backend_mb_t *mb)
{
    (void)b;
    return mb->a.att;
}

static lam_status_t cpu_attn_out(lam_backend_t *b, lam_backend_mb_t *mb, int layer, int n)
{
    cpu_ctx_t *c = b->ctx;
    set_poll(b, mb);
    lam_dense_post(c->m, c->quant_act, &mb->a, layer, n);
    return LAM_OK;
}

static lam_status_t cpu_logits2(lam_backend_t *b, lam_backend_mb_t *mb1, const uint8_t *want1, int n1,
                                lam_backend_mb_t *mb2, const uint8_t *want2, int n2, float *logits, int *n_out)
{
    cpu_ctx_t *c = b->ctx;
    set_poll(b, mb1);
    int n = lam_dense_logits2(c->m, c->quant_act, &mb1->a, want1, n1, &mb2->a, want2, n2, logits);
    if (n < 0)
        return LAM_ERR_INVALID_ARG;
    *n_out = n;
    return LAM_OK;
}

static lam_status_t cpu_logits(lam_backend_t *b, lam_backend_mb_t *mb, const uint8_t *want, int n, float *logits,
                               int *n_out)
{
    cpu_ctx_t *c = b->ctx;
    set_poll(b, mb);
    *n_out = lam_dense_logits(c->m, c->quant_act, &mb->a, want, n, logits);
    return LAM_OK;
}

static void cpu_destroy(lam_backend_t *b)
{
    free(b->ctx);
    free(b);
}

static const lam_backend_i cpu_backend_i = {
    .name = "cpu",
    .mb_create = cpu_mb_create,
    .mb_destroy = cpu_mb_destroy,
    .embed = cpu_embed,
    .attn_in = cpu_attn_in,
    .attn_out_buf = cpu_attn_out_buf,
    .attn_out = cpu_attn_out,
    .logits = cpu_logits,
    .logits2 = cpu_logits2,
    .destroy = cpu_destroy,
};

lam_status_t lam_backend_cpu_create(const lam_model_t *m, bool quant_act, lam_backend_t **out)
{
    lam_backend_t *b = calloc(1, sizeof *b);
    cpu_ctx_t *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return LAM_ERR_NO_MEMORY;
    }
    c->m = m;
    c->quant_act = quant_act;
    b->i = &cpu_backend_i;
    b->cfg = &m->cfg;
    b->polls = true; /* set_poll: after every matrix product */
    b->ctx = c;
    *out = b;
    return LAM_OK;
}
