#include "compute_node/dense.h"

#include "common/gguf.h"
#include "kernels/cpu/ops.h"

#include <stdlib.h>
#include <string.h>

static float *alloc_f32(size_t n, bool *ok)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    if (!p)
        *ok = false;
    return p;
}

lam_status_t lam_dense_act_alloc(const lam_model_config_t *c, int T, lam_dense_act_t *a)
{
    memset(a, 0, sizeof *a);
    size_t t = (size_t)T;
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    int widest = c->dim > q_dim ? c->dim : q_dim;
    widest = widest > c->ffn_dim ? widest : c->ffn_dim;
    bool ok = true;
    a->T = T;
    a->x = alloc_f32(t * c->dim, &ok);
    a->xb = alloc_f32(t * c->dim, &ok);
    a->q = alloc_f32(t * q_dim, &ok);
    a->k = alloc_f32(t * kv_dim, &ok);
    a->v = alloc_f32(t * kv_dim, &ok);
    a->att = alloc_f32(t * q_dim, &ok);
    a->xo = alloc_f32(t * c->dim, &ok);
    a->hg = alloc_f32(t * c->ffn_dim, &ok);
    a->hu = alloc_f32(t * c->ffn_dim, &ok);
    a->xq = alloc_f32(t * widest, &ok);
    a->xcorr = alloc_f32(t * (widest / 32 + 1), &ok);
    a->rope_cs = alloc_f32(t * c->n_rot, &ok);
    a->rope_pos = malloc(t * sizeof *a->rope_pos);
    ok = ok && a->rope_pos;
    if (!ok) {
        lam_dense_act_free(a);
        return LAM_ERR_NO_MEMORY;
    }
    return LAM_OK;
}

void lam_dense_act_free(lam_dense_act_t *a)
{
    float *ps[] = {a->x, a->xb, a->q, a->k, a->v, a->att, a->xo, a->hg, a->hu, a->xq, a->xcorr, a->rope_cs};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        free(ps[i]);
    free(a->rope_pos);
    memset(a, 0, sizeof *a);
}

/* One weight matrix: f32, and the file's blocks where the CPU path reads them. */
typedef struct wmat {
    const float *W;
    const uint8_t *blk;
    uint32_t blk_type;
    uint8_t act;
    const float *wmin;
} wmat_t;

static wmat_t layer_w(const lam_layer_t *L, const float *W, int w)
{
    return (wmat_t){W, L->wblk[w], L->wblk_type[w], L->act[w], L->wmin[w]};
}

_Static_assert(LAM_MODEL_BLOCK_ROW_MAX == LAM_MATMUL_Q_MAX_I, "a matrix kept only as blocks must fit lam_matmul_q");

static lam_qw_type_t qw_type(uint32_t ggml_type)
{
    return ggml_type == LAM_GGML_Q4_1 ? LAM_QW_Q4_1 : LAM_QW_Q8_0;
}

/* The loader keeps blocks only of rows of whole blocks (I % 32 == 0), and
 * without f32 only up to LAM_MODEL_BLOCK_ROW_MAX: W or the blocks serve. */
static lam_qw_type_t blocks_of(const wmat_t *w, int I)
{
    if (!w->blk || I % 32 != 0 || I > LAM_MATMUL_Q_MAX_I)
        return LAM_QW_NONE;
    return qw_type(w->blk_type);
}

/* The same bits either way; the blocks are 4-6x fewer bytes to stream, and
 * each tile expanded into L1 multiplies faster than f32 rows from memory at
 * every batch size measured (1 to 128 tokens: 8.9 against 13.6 ms at 1
 * token, 139 against 153 ms at 128, SmolLM2's 30 layers on one core). */
static void product(float *y, const float *x, const wmat_t *w, const float *bias, int T, int I, int O)
{
    lam_qw_type_t qt = blocks_of(w, I);
    if (qt != LAM_QW_NONE)
        lam_matmul_q(y, x, w->blk, qt, bias, T, I, O);
    else
        lam_matmul_f32(y, x, w->W, bias, T, I, O);
}

/* y[T][O] = x[T][I]·Wᵀ, with x first rounded as the weights' format asks. */
static void matmul(const lam_dense_act_t *a, bool quant_act, float *y, const float *x, wmat_t w,
                   const float *bias, int T, int I, int O)
{
    uint8_t act = w.act;
    const float *wmin = w.wmin;
    bool round = quant_act && act != LAM_ACT_F32;
    if (round) {
        for (int t = 0; t < T; t++) {
            const float *xt = x + (size_t)t * I;
            float *qt = a->xq + (size_t)t * I;
            switch (act) {
            case LAM_ACT_F16: lam_act_round_f16(qt, xt, I); break;
            case LAM_ACT_BF16: lam_act_round_bf16(qt, xt, I); break;
            case LAM_ACT_Q8_K: lam_act_round_q8_k(qt, xt, I); break;
            default: lam_act_round_q8_32(qt, xt, I, a->xcorr + (size_t)t * (I / 32)); break;
            }
        }
        x = a->xq;
    }
    product(y, x, &w, bias, T, I, O);
    if (round && wmin && act == LAM_ACT_Q8_32 && I % 32 == 0) {
        int nb = I / 32;
#pragma omp parallel for schedule(static)
        for (int o = 0; o < O; o++)
            for (int t = 0; t < T; t++)
                y[(size_t)t * O + o] += lam_dot_f32(wmin + (size_t)o * nb, a->xcorr + (size_t)t * nb, nb);
    }
    if (a->between)
        a->between(a->between_arg);
}

void lam_dense_embed(const lam_model_t *m, lam_dense_act_t *a, const int32_t *tok, int n)
{
    int dim = m->cfg.dim;
    for (int t = 0; t < n; t++)
        if (m->tok_embd)
            memcpy(a->x + (size_t)t * dim, m->tok_embd + (size_t)tok[t] * dim, dim * sizeof(float));
        else
            lam_dequant_qw(a->x + (size_t)t * dim,
                           m->tok_embd_blk + (size_t)tok[t] * lam_qw_row_bytes(qw_type(m->tok_embd_blk_type), dim),
                           qw_type(m->tok_embd_blk_type), dim);
}

void lam_dense_qkv(const lam_model_t *m, bool quant_act, lam_dense_act_t *a, int l, const int32_t *pos, int n)
{
    const lam_model_config_t *c = &m->cfg;
    const lam_layer_t *L = &m->layers[l];
    const int dim = c->dim, q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    for (int t = 0; t < n; t++)
        lam_rmsnorm_f32(a->xb + (size_t)t * dim, a->x + (size_t)t * dim, L->attn_norm, dim, c->norm_eps);
    matmul(a, quant_act, a->q, a->xb, layer_w(L, L->wq, LAM_W_Q), L->bq, n, dim, q_dim);
    matmul(a, quant_act, a->k, a->xb, layer_w(L, L->wk, LAM_W_K), L->bk, n, dim, kv_dim);
    matmul(a, quant_act, a->v, a->xb, layer_w(L, L->wv, LAM_W_V), L->bv, n, dim, kv_dim);
    int neox = c->rope_type == LAM_ROPE_NEOX;
    /* the angles depend on the position only: once per step, not per layer */
    if (a->rope_model != m || a->rope_n != n || memcmp(a->rope_pos, pos, (size_t)n * sizeof *pos)) {
        for (int t = 0; t < n; t++)
            lam_rope_angles(a->rope_cs + (size_t)t * c->n_rot, c->n_rot, pos[t], c->rope_theta, c->rope_freq_scale,
                            m->rope_freqs);
        memcpy(a->rope_pos, pos, (size_t)n * sizeof *pos);
        a->rope_n = n;
        a->rope_model = m;
    }
    for (int t = 0; t < n; t++) {
        const float *cs = a->rope_cs + (size_t)t * c->n_rot;
        lam_rope_apply_f32(a->q + (size_t)t * q_dim, c->n_heads, c->head_dim, c->n_rot, cs, neox);
        lam_rope_apply_f32(a->k + (size_t)t * kv_dim, c->n_kv_heads, c->head_dim, c->n_rot, cs, neox);
    }
}

void lam_dense_post(const lam_model_t *m, bool quant_act, lam_dense_act_t *a, int l, int n)
{
    const lam_model_config_t *c = &m->cfg;
    const lam_layer_t *L = &m->layers[l];
    const int dim = c->dim, q_dim = c->n_heads * c->head_dim;
    matmul(a, quant_act, a->xo, a->att, layer_w(L, L->wo, LAM_W_O), NULL, n, q_dim, dim);
    for (size_t i = 0; i < (size_t)n * dim; i++)
        a->x[i] += a->xo[i];
    for (int t = 0; t < n; t++)
        lam_rmsnorm_f32(a->xb + (size_t)t * dim, a->x + (size_t)t * dim, L->ffn_norm, dim, c->norm_eps);
    matmul(a, quant_act, a->hg, a->xb, layer_w(L, L->w_gate, LAM_W_GATE), NULL, n, dim, c->ffn_dim);
    matmul(a, quant_act, a->hu, a->xb, layer_w(L, L->w_up, LAM_W_UP), NULL, n, dim, c->ffn_dim);
    lam_swiglu_f32(a->hg, a->hu, n * c->ffn_dim);
    matmul(a, quant_act, a->xo, a->hg, layer_w(L, L->w_down, LAM_W_DOWN), NULL, n, c->ffn_dim, dim);
    for (size_t i = 0; i < (size_t)n * dim; i++)
        a->x[i] += a->xo[i];
}

/* Final norm of src's rows with want[t] into dst->xb from row n_out on;
 * returns the new row count. */
static int norm_wanted(const lam_model_t *m, lam_dense_act_t *dst, int n_out, const lam_dense_act_t *src,
                       const uint8_t *want, int n)
{
    const lam_model_config_t *c = &m->cfg;
    for (int t = 0; t < n; t++) {
        if (want && !want[t])
            continue;
        lam_rmsnorm_f32(dst->xb + (size_t)n_out * c->dim, src->x + (size_t)t * c->dim, m->out_norm, c->dim,
                        c->norm_eps);
        n_out++;
    }
    return n_out;
}

static void lm_head(const lam_model_t *m, bool quant_act, lam_dense_act_t *a, int n_out, float *logits)
{
    if (n_out > 0)
        matmul(a, quant_act, logits, a->xb,
               (wmat_t){m->lm_head, m->lm_head_blk, m->lm_head_blk_type, m->lm_head_act, m->lm_head_min}, NULL, n_out,
               m->cfg.dim, m->cfg.vocab);
}

static size_t matrix_bytes(wmat_t w, int I, int O)
{
    lam_qw_type_t qt = blocks_of(&w, I);
    return qt != LAM_QW_NONE ? lam_qw_row_bytes(qt, I) * (size_t)O : (size_t)I * O * sizeof(float);
}

size_t lam_dense_step_bytes(const lam_model_t *m)
{
    const lam_model_config_t *c = &m->cfg;
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    size_t b = matrix_bytes((wmat_t){m->lm_head, m->lm_head_blk, m->lm_head_blk_type, 0, NULL}, c->dim, c->vocab);
    for (int l = 0; l < c->n_layers; l++) {
        const lam_layer_t *L = &m->layers[l];
        b += matrix_bytes(layer_w(L, L->wq, LAM_W_Q), c->dim, q_dim);
        b += matrix_bytes(layer_w(L, L->wk, LAM_W_K), c->dim, kv_dim);
        b += matrix_bytes(layer_w(L, L->wv, LAM_W_V), c->dim, kv_dim);
        b += matrix_bytes(layer_w(L, L->wo, LAM_W_O), q_dim, c->dim);
        b += matrix_bytes(layer_w(L, L->w_gate, LAM_W_GATE), c->dim, c->ffn_dim);
        b += matrix_bytes(layer_w(L, L->w_up, LAM_W_UP), c->dim, c->ffn_dim);
        b += matrix_bytes(layer_w(L, L->w_down, LAM_W_DOWN), c->ffn_dim, c->dim);
    }
    return b;
}

int lam_dense_logits(const lam_model_t *m, bool quant_act, lam_dense_act_t *a, const uint8_t *want, int n,
                     float *logits)
{
    int n_out = norm_wanted(m, a, 0, a, want, n);
    lm_head(m, quant_act, a, n_out, logits);
    return n_out;
}

int lam_dense_logits2(const lam_model_t *m, bool quant_act, lam_dense_act_t *a, const uint8_t *want_a, int n_a,
                      const lam_dense_act_t *b, const uint8_t *want_b, int n_b, float *logits)
{
    int n_out = norm_wanted(m, a, 0, a, want_a, n_a);
    int wanted_b = 0;
    for (int t = 0; t < n_b; t++)
        wanted_b += !want_b || want_b[t];
    if (n_out + wanted_b > a->T)
        return -1;
    n_out = norm_wanted(m, a, n_out, b, want_b, n_b);
    lm_head(m, quant_act, a, n_out, logits);
    return n_out;
}
