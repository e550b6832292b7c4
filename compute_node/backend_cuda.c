/* The CUDA compute backend: lam_backend_i on one GPU. See backend_cuda.h
 * for the design; weights are loaded in backend_cuda_load.c.
 *
 * Stream use for one micro-batch and layer (the pipeline calls attn_out
 * then attn_in of the next layer back to back):
 *
 *   h2d:  o (pinned) -> att ─ev_o─┐
 *   s:                            wait ─ Wo, FFN, norm, Wqkv, RoPE ─ev_qkv─┐
 *   d2h:                                                                 wait ─ q, k, v -> pinned ─ev_out
 *   host: ........................................................................... sync ev_out, return
 *
 * While the host waits here, the other micro-batch's attention runs on the
 * attention nodes: the GPU's dense work and the remote attention overlap. */
#include "compute_node/backend_cuda_internal.h"

#include "common/dtype.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>

#define CB_DEFAULT_STAGING (32u << 20)
#define CB_ALIGN 256

static size_t align_up(size_t x) { return (x + CB_ALIGN - 1) / CB_ALIGN * CB_ALIGN; }

/* ---- the dense work, shared with mono_cuda.c ----------------------------------- */

lam_status_t lam_cb_embed(lam_cb_t *c, lam_backend_mb_t *mb, const int32_t *tok, int n)
{
    if (n < 1 || n > mb->T)
        return LAM_ERR_INVALID_ARG;
    LAM_CUDA_CHECK(cudaSetDevice(c->device));
    /* the last copy out of h_tok must be done before it is overwritten */
    LAM_CUDA_CHECK(cudaEventSynchronize(mb->ev_tok));
    memcpy(mb->h_tok, tok, (size_t)n * sizeof *tok);
    LAM_CUDA_CHECK(cudaMemcpyAsync(mb->d_tok, mb->h_tok, (size_t)n * sizeof *tok, cudaMemcpyHostToDevice, mb->s));
    LAM_CUDA_CHECK(cudaEventRecord(mb->ev_tok, mb->s));
    return lam_cuda_embed(mb->x, c->tok_embd, c->wdtype, c->cfg.vocab, c->cfg.dim, mb->d_tok, n, mb->s);
}

lam_status_t lam_cb_qkv(lam_cb_t *c, lam_backend_mb_t *mb, int layer, int n)
{
    const lam_model_config_t *g = &c->cfg;
    const lam_cb_layer_t *L = &c->layers[layer];
    lam_status_t st;
    if ((st = lam_cuda_rmsnorm(NULL, mb->xlo, c->wdtype, mb->x, L->attn_norm, n, g->dim, g->norm_eps, mb->s)) ||
        (st = lam_cuda_gemm(mb->blas, mb->qkv, LAM_DT_F32, mb->xlo, L->wqkv, c->wdtype, L->bqkv, n, g->dim,
                            c->qkv_dim, 0.0f, mb->s)))
        return st;
    /* q and k heads are adjacent in each row: one call rotates both */
    return lam_cuda_rope(mb->qkv, n, g->n_heads + g->n_kv_heads, g->head_dim, c->qkv_dim, g->n_rot, mb->d_pos,
                         g->rope_theta, g->rope_freq_scale, c->rope_freqs, g->rope_type == LAM_ROPE_NEOX, mb->s);
}

lam_status_t lam_cb_post(lam_cb_t *c, lam_backend_mb_t *mb, int layer, int n)
{
    const lam_model_config_t *g = &c->cfg;
    const lam_cb_layer_t *L = &c->layers[layer];
    const int ffn = g->ffn_dim;
    lam_status_t st;
    if ((st = lam_cuda_convert(mb->xlo, c->wdtype, mb->att, LAM_DT_F32, (size_t)n * c->q_dim, mb->s)) ||
        /* beta 1: the residual add comes with the product */
        (st = lam_cuda_gemm(mb->blas, mb->x, LAM_DT_F32, mb->xlo, L->wo, c->wdtype, NULL, n, c->q_dim, g->dim,
                            1.0f, mb->s)) ||
        (st = lam_cuda_rmsnorm(NULL, mb->xlo, c->wdtype, mb->x, L->ffn_norm, n, g->dim, g->norm_eps, mb->s)) ||
        (st = lam_cuda_gemm(mb->blas, mb->gu, LAM_DT_F32, mb->xlo, L->wgu, c->wdtype, NULL, n, g->dim, 2 * ffn,
                            0.0f, mb->s)) ||
        (st = lam_cuda_swiglu(mb->xlo, c->wdtype, mb->gu, 2 * ffn, mb->gu + ffn, 2 * ffn, n, ffn, mb->s)))
        return st;
    return lam_cuda_gemm(mb->blas, mb->x, LAM_DT_F32, mb->xlo, L->wdown, c->wdtype, NULL, n, ffn, g->dim, 1.0f,
                         mb->s);
}

/* Device logits rows [0, rows) -> host dst, through the two pinned staging
 * halves: while one half is being filled by the copy engine, the host
 * copies the other one out. */
static lam_status_t logits_out(lam_cb_t *c, float *dst, size_t bytes)
{
    const uint8_t *src = (const uint8_t *)c->d_logits;
    size_t half = c->stage_half, n_chunks = (bytes + half - 1) / half;
    for (size_t i = 0; i < n_chunks && i < 2; i++) {
        size_t len = bytes - i * half < half ? bytes - i * half : half;
        LAM_CUDA_CHECK(cudaMemcpyAsync(c->stage + i * half, src + i * half, len, cudaMemcpyDeviceToHost, c->d2h));
        LAM_CUDA_CHECK(cudaEventRecord(c->stage_ev[i], c->d2h));
    }
    for (size_t i = 0; i < n_chunks; i++) {
        int j = (int)(i % 2);
        size_t off = i * half, len = bytes - off < half ? bytes - off : half;
        LAM_CUDA_CHECK(cudaEventSynchronize(c->stage_ev[j]));
        memcpy((uint8_t *)dst + off, c->stage + (size_t)j * half, len);
        size_t next = i + 2;
        if (next < n_chunks) {
            size_t noff = next * half, nlen = bytes - noff < half ? bytes - noff : half;
            LAM_CUDA_CHECK(cudaMemcpyAsync(c->stage + (size_t)j * half, src + noff, nlen, cudaMemcpyDeviceToHost,
                                           c->d2h));
            LAM_CUDA_CHECK(cudaEventRecord(c->stage_ev[j], c->d2h));
        }
    }
    return LAM_OK;
}

lam_status_t lam_cb_logits(lam_cb_t *c, lam_backend_mb_t *mb, const uint8_t *want, int n, float *logits,
                           int *n_out)
{
    const lam_model_config_t *g = &c->cfg;
    const size_t row = (size_t)g->dim * sizeof(float);
    if (n < 1 || n > mb->T)
        return LAM_ERR_INVALID_ARG;
    LAM_CUDA_CHECK(cudaSetDevice(c->device));
    /* gather the wanted rows, one copy per run of consecutive rows */
    int rows = 0;
    for (int t = 0; t < n;) {
        if (want && !want[t]) {
            t++;
            continue;
        }
        int t1 = t;
        while (t1 < n && (!want || want[t1]))
            t1++;
        LAM_CUDA_CHECK(cudaMemcpyAsync(mb->xg + (size_t)rows * g->dim, mb->x + (size_t)t * g->dim,
                                       (size_t)(t1 - t) * row, cudaMemcpyDeviceToDevice, mb->s));
        rows += t1 - t;
        t = t1;
    }
    *n_out = rows;
    if (rows == 0)
        return LAM_OK;
    lam_status_t st = lam_cuda_rmsnorm(NULL, mb->xlo, c->wdtype, mb->xg, c->out_norm, rows, g->dim, g->norm_eps,
                                       mb->s);
    /* in pieces of logits_rows rows (the device buffer), each copied out */
    for (int r0 = 0; r0 < rows && st == LAM_OK; r0 += c->logits_rows) {
        int nr = rows - r0 < c->logits_rows ? rows - r0 : c->logits_rows;
        st = lam_cuda_gemm(mb->blas, c->d_logits, LAM_DT_F32, (const uint8_t *)mb->xlo + (size_t)r0 * g->dim * c->wsz,
                           c->lm_head, c->wdtype, NULL, nr, g->dim, g->vocab, 0.0f, mb->s);
        if (st != LAM_OK)
            break;
        LAM_CUDA_CHECK(cudaEventRecord(mb->ev_x, mb->s));
        LAM_CUDA_CHECK(cudaStreamWaitEvent(c->d2h, mb->ev_x, 0));
        st = logits_out(c, logits + (size_t)r0 * g->vocab, (size_t)nr * g->vocab * sizeof(float));
        /* logits_out returned after the last copy out: the next piece may overwrite d_logits */
    }
    return st;
}

/* ---- the vtable ------------------------------------------------------------------ */

static void cb_mb_destroy(lam_backend_t *b, lam_backend_mb_t *mb)
{
    (void)b;
    if (!mb)
        return;
    if (mb->s)
        cudaStreamSynchronize(mb->s);
    cudaEvent_t evs[] = {mb->ev_tok, mb->ev_qkv, mb->ev_out, mb->ev_o, mb->ev_x};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            cudaEventDestroy(evs[i]);
    lam_cuda_blas_destroy(mb->blas);
    if (mb->s)
        cudaStreamDestroy(mb->s);
    cudaFree(mb->dev);
    cudaFreeHost(mb->pinned);
    free(mb);
}

static lam_status_t cb_mb_create(lam_backend_t *b, int max_tokens, lam_backend_mb_t **out)
{
    lam_cb_t *c = lam_cb_of(b);
    const lam_model_config_t *g = &c->cfg;
    if (max_tokens < 1)
        return LAM_ERR_INVALID_ARG;
    LAM_CUDA_CHECK(cudaSetDevice(c->device));
    lam_backend_mb_t *mb = calloc(1, sizeof *mb);
    if (!mb)
        return LAM_ERR_NO_MEMORY;
    lam_status_t st = LAM_OK;
    const size_t T = (size_t)max_tokens;
    mb->T = max_tokens;

    size_t off[8], total = 0, f = sizeof(float);
    size_t sizes[8] = {T * g->dim * f, T * c->widest * c->wsz, T * c->qkv_dim * f, T * c->q_dim * f,
                       T * 2 * g->ffn_dim * f, T * g->dim * f, T * sizeof(int32_t), T * sizeof(int32_t)};
    for (int i = 0; i < 8; i++) {
        off[i] = total;
        total += align_up(sizes[i]);
    }
    LAM_CUDA_CHECK_GOTO(cudaMalloc((void **)&mb->dev, total), st, fail);
    mb->x = (float *)(mb->dev + off[0]);
    mb->xlo = mb->dev + off[1];
    mb->qkv = (float *)(mb->dev + off[2]);
    mb->att = (float *)(mb->dev + off[3]);
    mb->gu = (float *)(mb->dev + off[4]);
    mb->xg = (float *)(mb->dev + off[5]);
    mb->d_tok = (int32_t *)(mb->dev + off[6]);
    mb->d_pos = (int32_t *)(mb->dev + off[7]);

    size_t psz[6] = {T * c->q_dim * f, T * c->kv_dim * f, T * c->kv_dim * f, T * c->q_dim * f,
                     T * sizeof(int32_t), T * sizeof(int32_t)}, poff[6];
    total = 0;
    for (int i = 0; i < 6; i++) {
        poff[i] = total;
        total += align_up(psz[i]);
    }
    LAM_CUDA_CHECK_GOTO(cudaHostAlloc((void **)&mb->pinned, total, cudaHostAllocPortable), st, fail);
    mb->pinned_bytes = poff[4]; /* q, k, v, o: the part a transport touches */
    mb->h_q = (float *)(mb->pinned + poff[0]);
    mb->h_k = (float *)(mb->pinned + poff[1]);
    mb->h_v = (float *)(mb->pinned + poff[2]);
    mb->h_o = (float *)(mb->pinned + poff[3]);
    mb->h_tok = (int32_t *)(mb->pinned + poff[4]);
    mb->h_pos = (int32_t *)(mb->pinned + poff[5]);

    LAM_CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&mb->s, cudaStreamNonBlocking), st, fail);
    cudaEvent_t *evs[] = {&mb->ev_tok, &mb->ev_qkv, &mb->ev_out, &mb->ev_o, &mb->ev_x};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        LAM_CUDA_CHECK_GOTO(cudaEventCreateWithFlags(evs[i], cudaEventDisableTiming), st, fail);
    if ((st = lam_cuda_blas_create(&mb->blas)) != LAM_OK)
        goto fail;

    /* the LM head's output buffer is shared: sized for the largest micro-batch */
    if (max_tokens > c->logits_rows) {
        int rows = max_tokens < 256 ? max_tokens : 256;
        if (rows > c->logits_rows) {
            cudaFree(c->d_logits);
            c->d_logits = NULL;
            c->logits_rows = 0;
            LAM_CUDA_CHECK_GOTO(cudaMalloc((void **)&c->d_logits, (size_t)rows * g->vocab * f), st, fail);
            c->logits_rows = rows;
        }
    }
    *out = mb;
    return LAM_OK;
fail:
    if (st == LAM_ERR_CUDA_OOM)
        lam_log_error("cuda backend: out of GPU memory for a micro-batch of %d tokens", max_tokens);
    cb_mb_destroy(b, mb);
    return st;
}

static lam_status_t cb_embed(lam_backend_t *b, lam_backend_mb_t *mb, const int32_t *tok, int n)
{
    return lam_cb_embed(lam_cb_of(b), mb, tok, n);
}

static lam_status_t cb_attn_in(lam_backend_t *b, lam_backend_mb_t *mb, int layer, const int32_t *pos, int n,
                               const float **q, const float **k, const float **v)
{
    lam_cb_t *c = lam_cb_of(b);
    if (n < 1 || n > mb->T || layer < 0 || layer >= c->cfg.n_layers)
        return LAM_ERR_INVALID_ARG;
    /* h_pos was last read by a copy on s that finished before the last ev_out */
    memcpy(mb->h_pos, pos, (size_t)n * sizeof *pos);
    LAM_CUDA_CHECK(cudaMemcpyAsync(mb->d_pos, mb->h_pos, (size_t)n * sizeof *pos, cudaMemcpyHostToDevice, mb->s));
    lam_status_t st = lam_cb_qkv(c, mb, layer, n);
    if (st != LAM_OK)
        return st;
    LAM_CUDA_CHECK(cudaEventRecord(mb->ev_qkv, mb->s));
    LAM_CUDA_CHECK(cudaStreamWaitEvent(c->d2h, mb->ev_qkv, 0));
    /* q | k | v rows on the device become three dense host arrays */
    const size_t f = sizeof(float), pitch = (size_t)c->qkv_dim * f, qw = (size_t)c->q_dim * f,
                 kw = (size_t)c->kv_dim * f;
    LAM_CUDA_CHECK(cudaMemcpy2DAsync(mb->h_q, qw, mb->qkv, pitch, qw, (size_t)n, cudaMemcpyDeviceToHost, c->d2h));
    LAM_CUDA_CHECK(cudaMemcpy2DAsync(mb->h_k, kw, mb->qkv + c->q_dim, pitch, kw, (size_t)n, cudaMemcpyDeviceToHost,
                                     c->d2h));
    LAM_CUDA_CHECK(cudaMemcpy2DAsync(mb->h_v, kw, mb->qkv + c->q_dim + c->kv_dim, pitch, kw, (size_t)n,
                                     cudaMemcpyDeviceToHost, c->d2h));
    LAM_CUDA_CHECK(cudaEventRecord(mb->ev_out, c->d2h));
    LAM_CUDA_CHECK(cudaEventSynchronize(mb->ev_out));
    *q = mb->h_q;
    *k = mb->h_k;
    *v = mb->h_v;
    return LAM_OK;
}

static float *cb_attn_out_buf(lam_backend_t *b, lam_backend_mb_t *mb)
{
    (void)b;
    return mb->h_o;
}

static lam_status_t cb_attn_out(lam_backend_t *b, lam_backend_mb_t *mb, int layer, int n)
{
    lam_cb_t *c = lam_cb_of(b);
    if (n < 1 || n > mb->T || layer < 0 || layer >= c->cfg.n_layers)
        return LAM_ERR_INVALID_ARG;
    LAM_CUDA_CHECK(cudaMemcpyAsync(mb->att, mb->h_o, (size_t)n * c->q_dim * sizeof(float), cudaMemcpyHostToDevice,
                                   c->h2d));
    LAM_CUDA_CHECK(cudaEventRecord(mb->ev_o, c->h2d));
    LAM_CUDA_CHECK(cudaStreamWaitEvent(mb->s, mb->ev_o, 0));
    return lam_cb_post(c, mb, layer, n);
}

static lam_status_t cb_logits(lam_backend_t *b, lam_backend_mb_t *mb, const uint8_t *want, int n, float *logits,
                              int *n_out)
{
    return lam_cb_logits(lam_cb_of(b), mb, want, n, logits, n_out);
}

static void cb_free(lam_cb_t *c)
{
    if (!c)
        return;
    cudaSetDevice(c->device);
    cudaDeviceSynchronize();
    for (int i = 0; i < 2; i++)
        if (c->stage_ev[i])
            cudaEventDestroy(c->stage_ev[i]);
    if (c->d2h)
        cudaStreamDestroy(c->d2h);
    if (c->h2d)
        cudaStreamDestroy(c->h2d);
    cudaFree(c->d_logits);
    cudaFree(c->weights);
    cudaFreeHost(c->stage);
    free(c->layers);
    free(c);
}

static void cb_destroy(lam_backend_t *b)
{
    cb_free(lam_cb_of(b));
    free(b);
}

static const lam_backend_i cuda_backend_i = {
    .name = "cuda",
    .mb_create = cb_mb_create,
    .mb_destroy = cb_mb_destroy,
    .embed = cb_embed,
    .attn_in = cb_attn_in,
    .attn_out_buf = cb_attn_out_buf,
    .attn_out = cb_attn_out,
    .logits = cb_logits,
    .destroy = cb_destroy,
};

bool lam_backend_is_cuda(const lam_backend_t *b) { return b && b->i == &cuda_backend_i; }

void lam_backend_cuda_mb_pinned(const lam_backend_mb_t *mb, void **ptr, size_t *len)
{
    *ptr = mb->pinned;
    *len = mb->pinned_bytes;
}

size_t lam_backend_cuda_weight_bytes(const lam_backend_t *b) { return lam_cb_of(b)->weight_bytes; }

/* ---- creation ------------------------------------------------------------------------ */

lam_status_t lam_backend_cuda_probe(int device, char *why, size_t n)
{
    return lam_cuda_probe(device, why, n) == LAM_OK ? LAM_OK : LAM_ERR_NO_DEVICE;
}

/* Checks the device and the options, makes the context with its streams,
 * handle and staging; the weights come next. */
static lam_status_t cb_begin(const lam_model_config_t *cfg, const lam_backend_cuda_opts_t *o, lam_cb_t **out)
{
    char why[256];
    lam_status_t st = lam_cuda_probe(o ? o->device : 0, why, sizeof why);
    if (st != LAM_OK) {
        lam_log_error("cuda backend: no usable CUDA device: %s", why);
        return LAM_ERR_NO_DEVICE;
    }
    int wdtype = o && o->wdtype ? o->wdtype : LAM_DT_F16;
    if (wdtype != LAM_DT_F16 && wdtype != LAM_DT_BF16) {
        lam_log_error("cuda backend: weights must be f16 or bf16, not %s", lam_dtype_name((unsigned)wdtype));
        return LAM_ERR_INVALID_ARG;
    }
    if (cfg->n_heads % cfg->n_kv_heads || cfg->n_rot > cfg->head_dim || cfg->n_rot % 2) {
        lam_log_error("cuda backend: unsupported head layout");
        return LAM_ERR_UNSUPPORTED;
    }
    lam_log_info("cuda backend: %s, weights %s", why, lam_dtype_name((unsigned)wdtype));
    lam_cb_t *c = calloc(1, sizeof *c);
    if (!c)
        return LAM_ERR_NO_MEMORY;
    c->cfg = *cfg;
    c->device = o ? o->device : 0;
    c->wdtype = wdtype;
    c->wsz = lam_dtype_size((unsigned)wdtype);
    c->q_dim = cfg->n_heads * cfg->head_dim;
    c->kv_dim = cfg->n_kv_heads * cfg->head_dim;
    c->qkv_dim = c->q_dim + 2 * c->kv_dim;
    c->widest = cfg->dim > c->q_dim ? cfg->dim : c->q_dim;
    c->widest = c->widest > cfg->ffn_dim ? c->widest : cfg->ffn_dim;
    size_t staging = o && o->staging_bytes ? o->staging_bytes : CB_DEFAULT_STAGING;
    c->stage_half = staging / 2 / CB_ALIGN * CB_ALIGN;
    if (c->stage_half < CB_ALIGN)
        c->stage_half = CB_ALIGN;
    LAM_CUDA_CHECK_GOTO(cudaSetDevice(c->device), st, fail);
    LAM_CUDA_CHECK_GOTO(cudaHostAlloc((void **)&c->stage, 2 * c->stage_half, cudaHostAllocPortable), st, fail);
    LAM_CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&c->d2h, cudaStreamNonBlocking), st, fail);
    LAM_CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&c->h2d, cudaStreamNonBlocking), st, fail);
    for (int i = 0; i < 2; i++)
        LAM_CUDA_CHECK_GOTO(cudaEventCreateWithFlags(&c->stage_ev[i], cudaEventDisableTiming), st, fail);
    *out = c;
    return LAM_OK;
fail:
    cb_free(c);
    return st;
}

static lam_status_t cb_finish(lam_cb_t *c, lam_backend_t **out)
{
    lam_backend_t *b = calloc(1, sizeof *b);
    if (!b) {
        cb_free(c);
        return LAM_ERR_NO_MEMORY;
    }
    b->i = &cuda_backend_i;
    b->cfg = &c->cfg;
    b->ctx = c;
    *out = b;
    return LAM_OK;
}

lam_status_t lam_backend_cuda_create(const lam_model_t *m, const lam_backend_cuda_opts_t *o, lam_backend_t **out)
{
    lam_cb_t *c = NULL;
    lam_status_t st = cb_begin(&m->cfg, o, &c);
    if (st != LAM_OK)
        return st;
    const lam_gguf_t *g = o ? o->gguf : NULL;
    if (g && lam_gguf_fingerprint(g) != m->fingerprint) {
        lam_log_warn("cuda backend: the GGUF handle is not the model's file; uploading the f32 weights");
        g = NULL;
    }
    double t0 = lam_now_s();
    if ((st = lam_cb_weights_alloc(c, m->lm_head == m->tok_embd, m->cfg.qkv_bias, m->rope_freqs != NULL)) ||
        (st = lam_cb_weights_load(c, m, g, o && o->staging_bytes ? o->staging_bytes : CB_DEFAULT_STAGING))) {
        cb_free(c);
        return st;
    }
    lam_log_info("cuda backend: %.1f MiB of weights on the device in %.2f s", c->weight_bytes / 1048576.0,
                 lam_now_s() - t0);
    return cb_finish(c, out);
}

lam_status_t lam_backend_cuda_create_random(const lam_model_config_t *cfg, const lam_backend_cuda_opts_t *o,
                                            uint64_t seed, lam_backend_t **out)
{
    lam_cb_t *c = NULL;
    lam_status_t st = cb_begin(cfg, o, &c);
    if (st != LAM_OK)
        return st;
    c->cfg.qkv_bias = false;
    if ((st = lam_cb_weights_alloc(c, cfg->tied_embeddings, false, false)) ||
        (st = lam_cb_weights_random(c, seed))) {
        cb_free(c);
        return st;
    }
    lam_log_info("cuda backend: %.1f MiB of random weights on the device", c->weight_bytes / 1048576.0);
    return cb_finish(c, out);
}
