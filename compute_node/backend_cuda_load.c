/* Weights of the CUDA backend: one device allocation carved into tensors,
 * filled from the GGUF file's own bytes (dequantised on the device), from
 * the f32 host copy, or with random values. Uploads go through two pinned
 * staging halves: the host copies chunk i+1 into one while chunk i is
 * copied to the device and dequantised from the other. */
#include "compute_node/backend_cuda_internal.h"

#include "common/dtype.h"
#include "common/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CB_ALIGN 256

static size_t align_up(size_t x) { return (x + CB_ALIGN - 1) / CB_ALIGN * CB_ALIGN; }

/* ---- layout ------------------------------------------------------------------- */

typedef struct carve {
    uint8_t *base;   /* NULL: only counting */
    size_t used;
} carve_t;

static void *take(carve_t *cv, size_t bytes)
{
    void *p = cv->base ? cv->base + cv->used : NULL;
    cv->used += align_up(bytes);
    return p;
}

/* Points every weight into cv (or only counts, when cv->base is NULL). */
static void layout(lam_cb_t *c, carve_t *cv, bool tied, bool bias, bool rope_freqs)
{
    const lam_model_config_t *g = &c->cfg;
    const size_t f = sizeof(float), w = c->wsz, dim = (size_t)g->dim, ffn = (size_t)g->ffn_dim;
    c->tok_embd = take(cv, (size_t)g->vocab * dim * w);
    c->lm_head = tied ? c->tok_embd : take(cv, (size_t)g->vocab * dim * w);
    c->out_norm = take(cv, dim * f);
    c->rope_freqs = rope_freqs ? take(cv, (size_t)(g->n_rot / 2) * f) : NULL;
    for (int l = 0; l < g->n_layers; l++) {
        lam_cb_layer_t *L = &c->layers[l];
        L->attn_norm = take(cv, dim * f);
        L->ffn_norm = take(cv, dim * f);
        L->wqkv = take(cv, (size_t)c->qkv_dim * dim * w);
        L->bqkv = bias ? take(cv, (size_t)c->qkv_dim * f) : NULL;
        L->wo = take(cv, dim * (size_t)c->q_dim * w);
        L->wgu = take(cv, 2 * ffn * dim * w);
        L->wdown = take(cv, dim * ffn * w);
    }
}

lam_status_t lam_cb_weights_alloc(lam_cb_t *c, bool tied, bool bias, bool rope_freqs)
{
    c->layers = calloc((size_t)c->cfg.n_layers, sizeof *c->layers);
    if (!c->layers)
        return LAM_ERR_NO_MEMORY;
    carve_t count = {0};
    layout(c, &count, tied, bias, rope_freqs);
    lam_status_t st = LAM_OK;
    size_t free_b = 0, total_b = 0;
    LAM_CUDA_CHECK_GOTO(cudaMalloc((void **)&c->weights, count.used), st, fail);
    carve_t cv = {c->weights, 0};
    layout(c, &cv, tied, bias, rope_freqs);
    c->weight_bytes = count.used;
    return LAM_OK;
fail:
    cudaMemGetInfo(&free_b, &total_b);
    lam_log_error("cuda backend: cannot allocate %.1f MiB of weights on the device (%.1f of %.1f MiB free)",
                  count.used / 1048576.0, free_b / 1048576.0, total_b / 1048576.0);
    return st;
}

/* ---- uploads --------------------------------------------------------------------- */

typedef struct upload {
    cudaStream_t s;
    uint8_t *stage;        /* pinned, 2 x half */
    uint8_t *raw;          /* device, 2 x half: the file's bytes before dequantisation */
    size_t half;
    cudaEvent_t ev[2];
    int cur;
    int from_file, from_host;
} upload_t;

static void upload_free(upload_t *u)
{
    if (u->s)
        cudaStreamSynchronize(u->s);
    for (int i = 0; i < 2; i++)
        if (u->ev[i])
            cudaEventDestroy(u->ev[i]);
    if (u->s)
        cudaStreamDestroy(u->s);
    cudaFree(u->raw);
    cudaFreeHost(u->stage);
}

static lam_status_t upload_init(upload_t *u, size_t staging)
{
    memset(u, 0, sizeof *u);
    u->half = staging / 2 / CB_ALIGN * CB_ALIGN;
    if (u->half < (1u << 20))
        u->half = 1u << 20;
    LAM_CUDA_CHECK(cudaStreamCreateWithFlags(&u->s, cudaStreamNonBlocking));
    for (int i = 0; i < 2; i++)
        LAM_CUDA_CHECK(cudaEventCreateWithFlags(&u->ev[i], cudaEventDisableTiming));
    LAM_CUDA_CHECK(cudaHostAlloc((void **)&u->stage, 2 * u->half, cudaHostAllocPortable));
    LAM_CUDA_CHECK(cudaMalloc((void **)&u->raw, 2 * u->half));
    return LAM_OK;
}

/* dst[n] (device, dst_dtype) = the n elements of ggml type `type` at host
 * src, whole blocks per chunk. */
static lam_status_t upload(upload_t *u, void *dst, int dst_dtype, const void *src, uint32_t type, int64_t n)
{
    int64_t be, bb;
    if (!lam_ggml_type_size(type, &be, &bb) || n % be)
        return LAM_ERR_INVALID_ARG;
    const int64_t blocks = n / be, per_chunk = (int64_t)(u->half / (size_t)bb);
    const size_t dsz = lam_dtype_size((unsigned)dst_dtype);
    for (int64_t b0 = 0; b0 < blocks; b0 += per_chunk) {
        int64_t nb = blocks - b0 < per_chunk ? blocks - b0 : per_chunk;
        int j = u->cur;
        u->cur ^= 1;
        uint8_t *stage = u->stage + (size_t)j * u->half, *raw = u->raw + (size_t)j * u->half;
        /* this half's last copy and dequantisation are done */
        LAM_CUDA_CHECK(cudaEventSynchronize(u->ev[j]));
        memcpy(stage, (const uint8_t *)src + b0 * bb, (size_t)(nb * bb));
        LAM_CUDA_CHECK(cudaMemcpyAsync(raw, stage, (size_t)(nb * bb), cudaMemcpyHostToDevice, u->s));
        lam_status_t st = lam_cuda_dequant((uint8_t *)dst + (size_t)(b0 * be) * dsz, dst_dtype, raw, type, nb * be,
                                           u->s);
        if (st != LAM_OK)
            return st;
        LAM_CUDA_CHECK(cudaEventRecord(u->ev[j], u->s));
    }
    return LAM_OK;
}

/* A matrix [ne1][ne0] into dst (wdtype): the file's tensor `name` when the
 * device can dequantise it, else the model's f32 copy. */
static lam_status_t upload_matrix(upload_t *u, const lam_cb_t *c, const lam_gguf_t *g, const char *name, void *dst,
                                  const float *host, int64_t ne0, int64_t ne1)
{
    const lam_gguf_tensor_t *t = g ? lam_gguf_find_tensor(g, name) : NULL;
    if (t && t->ne[0] == ne0 && t->n_elem == ne0 * ne1 && lam_cuda_dequant_supported(t->type)) {
        u->from_file++;
        return upload(u, dst, c->wdtype, t->data, t->type, ne0 * ne1);
    }
    u->from_host++;
    return upload(u, dst, c->wdtype, host, LAM_GGML_F32, ne0 * ne1);
}

static lam_status_t upload_f32(upload_t *u, float *dst, const float *host, int64_t n)
{
    return upload(u, dst, LAM_DT_F32, host, LAM_GGML_F32, n);
}

lam_status_t lam_cb_weights_load(lam_cb_t *c, const lam_model_t *m, const lam_gguf_t *g, size_t staging_bytes)
{
    const lam_model_config_t *cfg = &c->cfg;
    const int64_t dim = cfg->dim, ffn = cfg->ffn_dim, q = c->q_dim, kv = c->kv_dim;
    const size_t w = c->wsz;
    upload_t u;
    lam_status_t st = upload_init(&u, staging_bytes);
    char n[96];
    if (st == LAM_OK)
        st = upload_matrix(&u, c, g, "token_embd.weight", c->tok_embd, m->tok_embd, dim, cfg->vocab);
    if (st == LAM_OK && c->lm_head != c->tok_embd)
        st = upload_matrix(&u, c, g, "output.weight", c->lm_head, m->lm_head, dim, cfg->vocab);
    if (st == LAM_OK)
        st = upload_f32(&u, c->out_norm, m->out_norm, dim);
    if (st == LAM_OK && c->rope_freqs)
        st = upload_f32(&u, c->rope_freqs, m->rope_freqs, cfg->n_rot / 2);
    for (int l = 0; l < cfg->n_layers && st == LAM_OK; l++) {
        const lam_layer_t *L = &m->layers[l];
        lam_cb_layer_t *D = &c->layers[l];
        uint8_t *qkv = D->wqkv, *gu = D->wgu;
#define MAT(suffix, dst, host, ne0, ne1)                                                   \
        if (st == LAM_OK) {                                                                \
            snprintf(n, sizeof n, "blk.%d.%s", l, suffix);                                 \
            st = upload_matrix(&u, c, g, n, dst, host, ne0, ne1);                          \
        }
        MAT("attn_q.weight", qkv, L->wq, dim, q)
        MAT("attn_k.weight", qkv + (size_t)(q * dim) * w, L->wk, dim, kv)
        MAT("attn_v.weight", qkv + (size_t)((q + kv) * dim) * w, L->wv, dim, kv)
        MAT("attn_output.weight", D->wo, L->wo, q, dim)
        MAT("ffn_gate.weight", gu, L->w_gate, dim, ffn)
        MAT("ffn_up.weight", gu + (size_t)(ffn * dim) * w, L->w_up, dim, ffn)
        MAT("ffn_down.weight", D->wdown, L->w_down, ffn, dim)
#undef MAT
        if (st == LAM_OK)
            st = upload_f32(&u, D->attn_norm, L->attn_norm, dim);
        if (st == LAM_OK)
            st = upload_f32(&u, D->ffn_norm, L->ffn_norm, dim);
        if (st == LAM_OK && D->bqkv) {
            if ((st = upload_f32(&u, D->bqkv, L->bq, q)) == LAM_OK &&
                (st = upload_f32(&u, D->bqkv + q, L->bk, kv)) == LAM_OK)
                st = upload_f32(&u, D->bqkv + q + kv, L->bv, kv);
        }
    }
    if (st == LAM_OK)
        LAM_CUDA_CHECK_GOTO(cudaStreamSynchronize(u.s), st, done);
    if (st == LAM_OK)
        lam_log_info("cuda backend: %d matrices dequantised on the device from the file's bytes, %d converted from "
                     "the f32 host copy",
                     u.from_file, u.from_host);
done:
    upload_free(&u);
    return st;
}

/* ---- random weights -------------------------------------------------------------- */

lam_status_t lam_cb_weights_random(lam_cb_t *c, uint64_t seed)
{
    const lam_model_config_t *g = &c->cfg;
    const size_t dim = (size_t)g->dim, ffn = (size_t)g->ffn_dim;
    cudaStream_t s = 0; /* the legacy stream: synchronised below */
    lam_status_t st = LAM_OK;
    uint64_t k = seed * 1000003u;
#define FILL(p, dt, n, a)                                                                    \
    if (st == LAM_OK)                                                                        \
        st = lam_cb_fill_uniform(p, dt, n, ++k, -(a), (a), s);
#define ONES(p, n)                                                                           \
    if (st == LAM_OK)                                                                        \
        st = lam_cb_fill_uniform(p, LAM_DT_F32, n, ++k, 1.0f, 1.0f, s);
    FILL(c->tok_embd, c->wdtype, (size_t)g->vocab * dim, 1.0f)
    if (c->lm_head != c->tok_embd)
        FILL(c->lm_head, c->wdtype, (size_t)g->vocab * dim, sqrtf(3.0f / (float)dim))
    ONES(c->out_norm, dim)
    for (int l = 0; l < g->n_layers; l++) {
        lam_cb_layer_t *L = &c->layers[l];
        ONES(L->attn_norm, dim)
        ONES(L->ffn_norm, dim)
        FILL(L->wqkv, c->wdtype, (size_t)c->qkv_dim * dim, sqrtf(3.0f / (float)dim))
        FILL(L->wo, c->wdtype, dim * (size_t)c->q_dim, sqrtf(3.0f / (float)c->q_dim))
        FILL(L->wgu, c->wdtype, 2 * ffn * dim, sqrtf(3.0f / (float)dim))
        FILL(L->wdown, c->wdtype, dim * ffn, sqrtf(3.0f / (float)ffn))
    }
#undef FILL
#undef ONES
    if (st == LAM_OK)
        LAM_CUDA_CHECK(cudaStreamSynchronize(s));
    return st;
}
