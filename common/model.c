#include "common/model.h"

#include "common/dtype.h"
#include "common/log.h"
#include "common/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static lam_status_t cfg_int(const lam_gguf_t *g, const char *arch, const char *suffix, int *out,
                            bool required, int def, int lo, int hi)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v;
    lam_status_t st = lam_gguf_get_u32(g, key, &v);
    if (st == LAM_ERR_NOT_FOUND && !required) {
        *out = def;
        return LAM_OK;
    }
    if (st == LAM_ERR_NOT_FOUND) {
        lam_log_error("model: required metadata key '%s' is missing", key);
        return LAM_ERR_MODEL_CONFIG;
    }
    if (st != LAM_OK || v < (uint32_t)lo || v > (uint32_t)hi) {
        lam_log_error("model: metadata key '%s' must be an integer in [%d, %d]", key, lo, hi);
        return LAM_ERR_MODEL_CONFIG;
    }
    *out = (int)v;
    return LAM_OK;
}

static lam_status_t cfg_float(const lam_gguf_t *g, const char *arch, const char *suffix, float *out,
                              float def, float lo, float hi)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    float v;
    lam_status_t st = lam_gguf_get_f32(g, key, &v);
    if (st == LAM_ERR_NOT_FOUND) {
        *out = def;
        return LAM_OK;
    }
    if (st != LAM_OK || !(v >= lo && v <= hi)) {
        lam_log_error("model: metadata key '%s' must be a float in [%g, %g]", key, lo, hi);
        return LAM_ERR_MODEL_CONFIG;
    }
    *out = v;
    return LAM_OK;
}

lam_status_t lam_model_config_from_gguf(const lam_gguf_t *g, lam_model_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    lam_gguf_str_t a;
    if (lam_gguf_get_str(g, "general.architecture", &a) != LAM_OK || a.len == 0 ||
        a.len >= sizeof cfg->arch) {
        lam_log_error("model: general.architecture is missing or not a short string");
        return LAM_ERR_MODEL_CONFIG;
    }
    memcpy(cfg->arch, a.ptr, a.len);
    cfg->arch[a.len] = 0;
    const char *arch = cfg->arch;
    if (strcmp(arch, "llama") && strcmp(arch, "qwen2")) {
        lam_log_error("model: architecture '%s' is not supported (llama, qwen2)", arch);
        return LAM_ERR_UNSUPPORTED;
    }
    const int BIG = 1 << 20;
    lam_status_t st;
    if ((st = cfg_int(g, arch, "block_count", &cfg->n_layers, true, 0, 1, 4096)) ||
        (st = cfg_int(g, arch, "embedding_length", &cfg->dim, true, 0, 1, BIG)) ||
        (st = cfg_int(g, arch, "feed_forward_length", &cfg->ffn_dim, true, 0, 1, BIG)) ||
        (st = cfg_int(g, arch, "attention.head_count", &cfg->n_heads, true, 0, 1, 4096)) ||
        (st = cfg_int(g, arch, "attention.head_count_kv", &cfg->n_kv_heads, false, cfg->n_heads, 1, 4096)) ||
        (st = cfg_int(g, arch, "context_length", &cfg->max_ctx, false, 4096, 1, BIG * 16)))
        return st;
    if (cfg->n_heads % cfg->n_kv_heads) {
        lam_log_error("model: %d query heads are not a multiple of %d KV heads", cfg->n_heads, cfg->n_kv_heads);
        return LAM_ERR_MODEL_CONFIG;
    }
    int def_hd = cfg->dim % cfg->n_heads ? 0 : cfg->dim / cfg->n_heads;
    if ((st = cfg_int(g, arch, "attention.key_length", &cfg->head_dim, def_hd == 0, def_hd, 2, 1024)))
        return st;
    if (cfg->head_dim % 2) {
        lam_log_error("model: head_dim %d is odd", cfg->head_dim);
        return LAM_ERR_MODEL_CONFIG;
    }
    if ((st = cfg_int(g, arch, "rope.dimension_count", &cfg->n_rot, false, cfg->head_dim, 2, cfg->head_dim)))
        return st;
    if (cfg->n_rot % 2) {
        lam_log_error("model: rope.dimension_count %d is odd", cfg->n_rot);
        return LAM_ERR_MODEL_CONFIG;
    }
    if ((st = cfg_float(g, arch, "rope.freq_base", &cfg->rope_theta, 10000.0f, 1.0f, 1e12f)) ||
        (st = cfg_float(g, arch, "attention.layer_norm_rms_epsilon", &cfg->norm_eps, 1e-5f, 0.0f, 1.0f)))
        return st;
    cfg->rope_freq_scale = 1.0f;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    lam_gguf_str_t stype;
    if (lam_gguf_get_str(g, key, &stype) == LAM_OK && !(stype.len == 4 && !memcmp(stype.ptr, "none", 4))) {
        if (!(stype.len == 6 && !memcmp(stype.ptr, "linear", 6))) {
            lam_log_error("model: rope scaling '%.*s' is not supported (linear only)", (int)stype.len, stype.ptr);
            return LAM_ERR_UNSUPPORTED;
        }
        float factor;
        if ((st = cfg_float(g, arch, "rope.scaling.factor", &factor, 1.0f, 1e-3f, 1e6f)))
            return st;
        cfg->rope_freq_scale = 1.0f / factor;
    }
    cfg->rope_type = strcmp(arch, "qwen2") ? LAM_ROPE_NORM : LAM_ROPE_NEOX;
    cfg->qkv_bias = !strcmp(arch, "qwen2");

    const lam_gguf_tensor_t *emb = lam_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2 || emb->ne[0] != cfg->dim || emb->ne[1] > BIG * 4) {
        lam_log_error("model: token_embd.weight is missing or not [%d, vocab]", cfg->dim);
        return LAM_ERR_MODEL_CONFIG;
    }
    cfg->vocab = (int)emb->ne[1];
    int vocab_kv;
    if ((st = cfg_int(g, arch, "vocab_size", &vocab_kv, false, cfg->vocab, 1, BIG * 4)))
        return st;
    if (vocab_kv != cfg->vocab) {
        lam_log_error("model: %s.vocab_size %d disagrees with token_embd.weight (%d rows)", arch, vocab_kv, cfg->vocab);
        return LAM_ERR_MODEL_CONFIG;
    }
    cfg->tied_embeddings = lam_gguf_find_tensor(g, "output.weight") == NULL;
    return LAM_OK;
}

typedef struct loader {
    const lam_gguf_t *g;
    lam_model_t *m;
    int done, total;
    bool tty;
    bool blocks_only; /* lam_model_load_opts_t */
} loader_t;

static void progress(loader_t *ld)
{
    ld->done++;
    if (ld->tty && (ld->done % 8 == 0 || ld->done == ld->total))
        fprintf(stderr, "\rloading weights: %d/%d tensors (%3d%%)%s", ld->done, ld->total,
                100 * ld->done / ld->total, ld->done == ld->total ? "\n" : "");
}

/* Dequantises tensor `name`, which must have shape ne0 × ne1 (ne1 = 1 for vectors). */
lam_act_fmt_t lam_act_fmt_for(uint32_t type)
{
    switch (type) {
    case LAM_GGML_F32: return LAM_ACT_F32;
    case LAM_GGML_F16: return LAM_ACT_F16;
    case LAM_GGML_BF16: return LAM_ACT_BF16;
    case LAM_GGML_Q2_K: case LAM_GGML_Q3_K: case LAM_GGML_Q4_K: case LAM_GGML_Q5_K:
    case LAM_GGML_Q6_K: return LAM_ACT_Q8_K;
    default: return LAM_ACT_Q8_32;
    }
}

/* Q4_1 and Q5_1 blocks start {f16 d; f16 m}: keep each block's m. */
static float *block_mins(const lam_gguf_tensor_t *t)
{
    if (t->type != LAM_GGML_Q4_1 && t->type != LAM_GGML_Q5_1)
        return NULL;
    int64_t be, bb;
    lam_ggml_type_size(t->type, &be, &bb);
    int64_t nb = t->n_elem / be;
    float *m = malloc((size_t)nb * sizeof *m);
    if (!m)
        return NULL;
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < nb; i++) {
        uint16_t h;
        memcpy(&h, p + i * bb + 2, 2);
        m[i] = lam_fp16_to_fp32(h);
    }
    return m;
}

/* A copy of t's blocks where the CPU dense path reads that type directly
 * (Q4_1, Q8_0 rows of whole blocks); *blk stays NULL otherwise. */
static lam_status_t keep_blocks(loader_t *ld, const lam_gguf_tensor_t *t, uint8_t **blk, uint32_t *type)
{
    *blk = NULL;
    if (!t || (t->type != LAM_GGML_Q4_1 && t->type != LAM_GGML_Q8_0) || t->ne[0] % 32 != 0)
        return LAM_OK;
    int64_t be, bb;
    lam_ggml_type_size(t->type, &be, &bb);
    size_t bytes = (size_t)(t->n_elem / be * bb);
    *blk = malloc(bytes);
    if (!*blk) {
        lam_log_error("model: out of memory for the blocks of tensor '%s'", t->name);
        return LAM_ERR_NO_MEMORY;
    }
    memcpy(*blk, t->data, bytes);
    *type = t->type;
    ld->m->weight_bytes += bytes;
    return LAM_OK;
}

/* Matrices of 2 MiB and more start on a huge page and are advised to use
 * them: the dense layers stream every weight each step, and with 4 KiB pages
 * a row tile of a large matrix walks a new page every few rows. */
static float *weight_alloc(size_t bytes)
{
    if (bytes < LAM_HUGE_PAGE)
        return malloc(bytes);
    size_t n = (bytes + LAM_HUGE_PAGE - 1) & ~(LAM_HUGE_PAGE - 1);
    float *w = aligned_alloc(LAM_HUGE_PAGE, n);
    if (w)
        lam_advise_huge(w, n);
    return w;
}

/* Tensor `name` of ne1 rows of ne0: f32 in *out (NULL where only blocks are
 * kept), and with blk, its blocks (keep_blocks). */
static lam_status_t load_act(loader_t *ld, const char *name, int64_t ne0, int64_t ne1, bool required,
                             float **out, uint8_t *act, float **mins, uint8_t **blk, uint32_t *blk_type)
{
    const lam_gguf_tensor_t *t = lam_gguf_find_tensor(ld->g, name);
    *out = NULL;
    if (t && act)
        *act = (uint8_t)lam_act_fmt_for(t->type);
    if (t && mins && t->n_elem == ne0 * ne1 && t->ne[0] == ne0 && (*mins = block_mins(t)) != NULL)
        ld->m->weight_bytes += (size_t)(t->n_elem / 32) * sizeof(float);
    if (!t) {
        if (!required)
            return LAM_OK;
        lam_log_error("model: tensor '%s' is missing", name);
        return LAM_ERR_MODEL_CONFIG;
    }
    if (t->ne[0] != ne0 || t->n_elem != ne0 * ne1) {
        lam_log_error("model: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name,
                      (long long)t->ne[0], (long long)t->ne[1], (long long)ne0, (long long)ne1);
        return LAM_ERR_GGUF_BAD_SHAPE;
    }
    if (!lam_dequant_supported(t->type)) {
        lam_log_error("model: tensor '%s' has type %s, which cannot be loaded", name, lam_ggml_type_name(t->type));
        return LAM_ERR_GGUF_BAD_TYPE;
    }
    if (blk) {
        lam_status_t st = keep_blocks(ld, t, blk, blk_type);
        if (st != LAM_OK)
            return st;
        if (*blk && ld->blocks_only && ne0 <= LAM_MODEL_BLOCK_ROW_MAX) {
            progress(ld);
            return LAM_OK;
        }
    }
    float *w = weight_alloc((size_t)(ne0 * ne1) * sizeof *w);
    if (!w) {
        lam_log_error("model: out of memory for tensor '%s'", name);
        return LAM_ERR_NO_MEMORY;
    }
    int64_t be, bb;
    lam_ggml_type_size(t->type, &be, &bb);
    const uint8_t *src = t->data;
    int64_t row_bytes = ne0 / be * bb;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < ne1; r++)
        lam_dequant(t->type, src + r * row_bytes, w + r * ne0, ne0);
    ld->m->weight_bytes += (size_t)(ne0 * ne1) * sizeof *w;
    *out = w;
    progress(ld);
    return LAM_OK;
}

static lam_status_t load(loader_t *ld, const char *name, int64_t ne0, int64_t ne1, bool required, float **out)
{
    return load_act(ld, name, ne0, ne1, required, out, NULL, NULL, NULL, NULL);
}

lam_status_t lam_model_load(const lam_gguf_t *g, lam_model_t **out)
{
    return lam_model_load_opts(g, NULL, out);
}

lam_status_t lam_model_load_opts(const lam_gguf_t *g, const lam_model_load_opts_t *o, lam_model_t **out)
{
    lam_model_t *m = calloc(1, sizeof *m);
    if (!m)
        return LAM_ERR_NO_MEMORY;
    lam_status_t st = lam_model_config_from_gguf(g, &m->cfg);
    if (st != LAM_OK) {
        free(m);
        return st;
    }
    const lam_model_config_t *c = &m->cfg;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        free(m);
        return LAM_ERR_NO_MEMORY;
    }
    m->fingerprint = lam_gguf_fingerprint(g);
    loader_t ld = {.g = g, .m = m, .total = 3 + 9 * c->n_layers, .tty = isatty(2), .blocks_only = o && o->blocks_only};
    int64_t q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    if ((st = load_act(&ld, "token_embd.weight", c->dim, c->vocab, true, &m->tok_embd, NULL, NULL, &m->tok_embd_blk,
                       &m->tok_embd_blk_type)) ||
        (st = load(&ld, "output_norm.weight", c->dim, 1, true, &m->out_norm)) ||
        (st = load(&ld, "rope_freqs.weight", c->n_rot / 2, 1, false, &m->rope_freqs)))
        goto err;
    if (c->tied_embeddings) {
        m->lm_head = m->tok_embd;
        const lam_gguf_tensor_t *te = lam_gguf_find_tensor(g, "token_embd.weight");
        m->lm_head_act = (uint8_t)lam_act_fmt_for(te->type);
        m->lm_head_min = block_mins(te);
        m->lm_head_blk = m->tok_embd_blk;
        m->lm_head_blk_type = m->tok_embd_blk_type;
        progress(&ld);
    } else if ((st = load_act(&ld, "output.weight", c->dim, c->vocab, true, &m->lm_head, &m->lm_head_act,
                              &m->lm_head_min, &m->lm_head_blk, &m->lm_head_blk_type))) {
        goto err;
    }
    for (int l = 0; l < c->n_layers; l++) {
        lam_layer_t *L = &m->layers[l];
        char n[96];
#define LOAD(field, suffix, ne0, ne1, req)                                   \
        snprintf(n, sizeof n, "blk.%d.%s", l, suffix);                       \
        if ((st = load_act(&ld, n, ne0, ne1, req, &L->field, NULL, NULL, NULL, NULL)) != LAM_OK) \
            goto err;
#define LOADA(field, suffix, ne0, ne1, req, w)                                 \
        snprintf(n, sizeof n, "blk.%d.%s", l, suffix);                       \
        if ((st = load_act(&ld, n, ne0, ne1, req, &L->field, &L->act[w], &L->wmin[w], &L->wblk[w], \
                           &L->wblk_type[w])) != LAM_OK)                         \
            goto err;
        LOAD(attn_norm, "attn_norm.weight", c->dim, 1, true)
        LOADA(wq, "attn_q.weight", c->dim, q_dim, true, LAM_W_Q)
        LOADA(wk, "attn_k.weight", c->dim, kv_dim, true, LAM_W_K)
        LOADA(wv, "attn_v.weight", c->dim, kv_dim, true, LAM_W_V)
        LOAD(bq, "attn_q.bias", q_dim, 1, c->qkv_bias)
        LOAD(bk, "attn_k.bias", kv_dim, 1, c->qkv_bias)
        LOAD(bv, "attn_v.bias", kv_dim, 1, c->qkv_bias)
        LOADA(wo, "attn_output.weight", q_dim, c->dim, true, LAM_W_O)
        LOAD(ffn_norm, "ffn_norm.weight", c->dim, 1, true)
        LOADA(w_gate, "ffn_gate.weight", c->dim, c->ffn_dim, true, LAM_W_GATE)
        LOADA(w_up, "ffn_up.weight", c->dim, c->ffn_dim, true, LAM_W_UP)
        LOADA(w_down, "ffn_down.weight", c->ffn_dim, c->dim, true, LAM_W_DOWN)
#undef LOAD
#undef LOADA
    }
    *out = m;
    return LAM_OK;
err:
    lam_model_free(m);
    return st;
}

void lam_model_free(lam_model_t *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            lam_layer_t *L = &m->layers[l];
            float *ps[] = {L->attn_norm, L->wq, L->wk, L->wv, L->bq, L->bk, L->bv,
                           L->wo, L->ffn_norm, L->w_gate, L->w_up, L->w_down};
            for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
                free(ps[i]);
            for (int w = 0; w < LAM_W_COUNT; w++) {
                free(L->wmin[w]);
                free(L->wblk[w]);
            }
        }
    }
    if (m->lm_head != m->tok_embd)
        free(m->lm_head);
    free(m->tok_embd);
    free(m->out_norm);
    free(m->lm_head_min);
    if (m->lm_head_blk != m->tok_embd_blk)
        free(m->lm_head_blk);
    free(m->tok_embd_blk);
    free(m->rope_freqs);
    free(m->layers);
    free(m);
}

const char *lam_model_default_path(char *buf, size_t len)
{
    const char *dir = getenv("LAMINA_MODEL_DIR");
    const char *home = getenv("HOME");
    if (dir && *dir)
        snprintf(buf, len, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", dir);
    else
        snprintf(buf, len, "%s/.cache/lamina/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : ".");
    return buf;
}
