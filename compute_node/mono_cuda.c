/* Monolithic GPU mode; see mono_cuda.h. One forward call on one stream:
 *
 *   embed; per layer: norm, Wqkv, RoPE (lam_cb_qkv); K/V rows into the
 *   slots' pages; paged attention; Wo, FFN (lam_cb_post); LM head.
 *
 * A maximal run of consecutive batch tokens of one slot is one "sequence"
 * of the attention kernel, with the slot's page table; two runs of the
 * same slot in one batch are two entries sharing it, and since every K/V
 * row is written before attention runs, the second run sees the first. */
#include "compute_node/mono_cuda.h"
#include "compute_node/backend_cuda_internal.h"

#include "common/dtype.h"
#include "common/log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MONO_DEFAULT_PAGE_TOKENS 16

struct lam_mono_cuda {
    lam_backend_t *be;
    lam_cb_t *c;
    lam_backend_mb_t *mb;
    lam_mono_cuda_opts_t o;
    int *slot_len;             /* [n_slots] tokens in each slot's cache */
    int *slot_next;            /* [n_slots] scratch for validation */

    uint8_t *pool;             /* device: n_slots * pages_per_slot pages */
    int64_t n_pages;
    int pages_per_slot;
    size_t page_bytes, head_stride, layer_stride, v_off;
    int32_t *d_pages;          /* [n_pages] device: page i is entry i */
    void *ws;                  /* attention split workspace */
    size_t ws_bytes;
    float *d_q;                /* [T][q_dim] dense queries for the kernel */

    /* per call, one entry per run: row[n_run + 1], pos[n_run], page_start[n_run] */
    int32_t *h_meta;           /* pinned, 3 * T + 1 */
    int32_t *d_meta;
    cudaEvent_t ev_meta;       /* last copy out of h_meta done */
};

void lam_mono_cuda_destroy(lam_mono_cuda_t *e)
{
    if (!e)
        return;
    if (e->c)
        cudaSetDevice(e->c->device);
    if (e->mb)
        e->be->i->mb_destroy(e->be, e->mb);
    if (e->ev_meta)
        cudaEventDestroy(e->ev_meta);
    cudaFree(e->pool);
    cudaFree(e->d_pages);
    cudaFree(e->ws);
    cudaFree(e->d_q);
    cudaFree(e->d_meta);
    cudaFreeHost(e->h_meta);
    lam_backend_destroy(e->be);
    free(e->slot_len);
    free(e->slot_next);
    free(e);
}

/* Everything but the backend: KV pool, tables, scratch. */
static lam_status_t mono_setup(lam_mono_cuda_t *e)
{
    const lam_model_config_t *g = &e->c->cfg;
    const lam_mono_cuda_opts_t *o = &e->o;
    const int P = o->page_tokens;
    const size_t esz = lam_dtype_size((unsigned)o->kv_dtype), T = (size_t)o->max_batch_tokens;
    lam_status_t st = LAM_OK;
    e->slot_len = calloc((size_t)o->n_slots, sizeof *e->slot_len);
    e->slot_next = calloc((size_t)o->n_slots, sizeof *e->slot_next);
    if (!e->slot_len || !e->slot_next)
        return LAM_ERR_NO_MEMORY;
    if ((st = e->be->i->mb_create(e->be, o->max_batch_tokens, &e->mb)) != LAM_OK)
        return st;

    /* page = [layer][K|V][kv_head][P][head_dim], as attention_node/kv.h */
    e->head_stride = (size_t)P * g->head_dim * esz;
    e->v_off = (size_t)g->n_kv_heads * e->head_stride;
    e->layer_stride = 2 * e->v_off;
    e->page_bytes = ((size_t)g->n_layers * e->layer_stride + 255) / 256 * 256;
    e->pages_per_slot = (o->max_ctx + P - 1) / P;
    e->n_pages = (int64_t)o->n_slots * e->pages_per_slot;
    if (e->n_pages > INT32_MAX) {
        lam_log_error("monolithic GPU mode: %lld KV pages exceed the kernel's int32 page indices",
                      (long long)e->n_pages);
        return LAM_ERR_INVALID_ARG;
    }
    size_t pool = (size_t)e->n_pages * e->page_bytes;
    LAM_CUDA_CHECK_GOTO(cudaMalloc((void **)&e->pool, pool), st, oom);
    int32_t *ident = malloc((size_t)e->n_pages * sizeof *ident);
    if (!ident)
        return LAM_ERR_NO_MEMORY;
    for (int64_t i = 0; i < e->n_pages; i++)
        ident[i] = (int32_t)i;
    st = LAM_OK;
    cudaError_t ce = cudaMalloc((void **)&e->d_pages, (size_t)e->n_pages * sizeof *ident);
    if (ce == cudaSuccess)
        ce = cudaMemcpy(e->d_pages, ident, (size_t)e->n_pages * sizeof *ident, cudaMemcpyHostToDevice);
    free(ident);
    if (ce != cudaSuccess)
        return lam_cuda_status(ce, "page table", __FILE__, __LINE__);

    e->ws_bytes = lam_cuda_attn_workspace_size(g->head_dim);
    if (e->ws_bytes)
        LAM_CUDA_CHECK_GOTO(cudaMalloc(&e->ws, e->ws_bytes), st, oom);
    LAM_CUDA_CHECK_GOTO(cudaMalloc((void **)&e->d_q, T * e->c->q_dim * sizeof(float)), st, oom);
    LAM_CUDA_CHECK_GOTO(cudaMalloc((void **)&e->d_meta, (3 * T + 1) * sizeof(int32_t)), st, oom);
    LAM_CUDA_CHECK(cudaHostAlloc((void **)&e->h_meta, (3 * T + 1) * sizeof(int32_t), cudaHostAllocPortable));
    LAM_CUDA_CHECK(cudaEventCreateWithFlags(&e->ev_meta, cudaEventDisableTiming));
    lam_log_info("monolithic GPU mode: %d slots x %d tokens, %s KV in %lld pages of %d tokens (%.1f MiB)",
                 o->n_slots, o->max_ctx, lam_dtype_name((unsigned)o->kv_dtype), (long long)e->n_pages, P,
                 pool / 1048576.0);
    return LAM_OK;
oom:
    lam_log_error("monolithic GPU mode: cannot allocate the KV cache (%d slots x %d tokens, %.1f MiB) and scratch",
                  o->n_slots, o->max_ctx, pool / 1048576.0);
    return st;
}

static lam_status_t mono_check_opts(const lam_mono_cuda_opts_t *o)
{
    if (o->n_slots < 1 || o->max_ctx < 1 || o->max_batch_tokens < 1 || o->page_tokens < 0 ||
        (o->kv_dtype != LAM_DT_F16 && o->kv_dtype != LAM_DT_BF16 && o->kv_dtype != LAM_DT_F32)) {
        lam_log_error("monolithic GPU mode: invalid options (slots %d, ctx %d, batch %d, KV dtype %d)", o->n_slots,
                      o->max_ctx, o->max_batch_tokens, o->kv_dtype);
        return LAM_ERR_INVALID_ARG;
    }
    return LAM_OK;
}

static lam_status_t mono_finish(lam_backend_t *be, const lam_mono_cuda_opts_t *o, lam_mono_cuda_t **out)
{
    lam_mono_cuda_t *e = calloc(1, sizeof *e);
    if (!e) {
        lam_backend_destroy(be);
        return LAM_ERR_NO_MEMORY;
    }
    e->be = be;
    e->c = lam_cb_of(be);
    e->o = *o;
    if (!e->o.page_tokens)
        e->o.page_tokens = MONO_DEFAULT_PAGE_TOKENS;
    lam_status_t st = mono_setup(e);
    if (st != LAM_OK) {
        lam_mono_cuda_destroy(e);
        return st;
    }
    *out = e;
    return LAM_OK;
}

lam_status_t lam_mono_cuda_create(const lam_model_t *m, const lam_mono_cuda_opts_t *o, lam_mono_cuda_t **out)
{
    lam_status_t st = mono_check_opts(o);
    lam_backend_t *be = NULL;
    if (st == LAM_OK)
        st = lam_backend_cuda_create(m, &o->be, &be);
    return st == LAM_OK ? mono_finish(be, o, out) : st;
}

lam_status_t lam_mono_cuda_create_random(const lam_model_config_t *cfg, const lam_mono_cuda_opts_t *o, uint64_t seed,
                                         lam_mono_cuda_t **out)
{
    lam_status_t st = mono_check_opts(o);
    lam_backend_t *be = NULL;
    if (st == LAM_OK)
        st = lam_backend_cuda_create_random(cfg, &o->be, seed, &be);
    return st == LAM_OK ? mono_finish(be, o, out) : st;
}

void lam_mono_cuda_slot_reset(lam_mono_cuda_t *e, int slot)
{
    if (slot >= 0 && slot < e->o.n_slots)
        e->slot_len[slot] = 0;
}

int lam_mono_cuda_slot_len(const lam_mono_cuda_t *e, int slot) { return e->slot_len[slot]; }
const lam_model_config_t *lam_mono_cuda_config(const lam_mono_cuda_t *e) { return &e->c->cfg; }

void lam_mono_cuda_limits(const lam_mono_cuda_t *e, int *n_slots, int *max_ctx, int *max_batch_tokens)
{
    *n_slots = e->o.n_slots;
    *max_ctx = e->o.max_ctx;
    *max_batch_tokens = e->o.max_batch_tokens;
}

static lam_status_t gen_forward(void *e, const lam_batch_t *b, float *logits)
{
    return lam_mono_cuda_forward(e, b, logits);
}
static void gen_slot_reset(void *e, int slot) { lam_mono_cuda_slot_reset(e, slot); }
static void gen_limits(const void *e, int *n_slots, int *max_ctx, int *max_batch_tokens)
{
    lam_mono_cuda_limits(e, n_slots, max_ctx, max_batch_tokens);
}

void lam_mono_cuda_gen_engine(lam_mono_cuda_t *e, lam_gen_engine_t *out)
{
    *out = (lam_gen_engine_t){e, &e->c->cfg, gen_forward, gen_slot_reset, gen_limits};
}

/* As the reference engine's check: nothing changes on error. */
static lam_status_t check_batch(lam_mono_cuda_t *e, const lam_batch_t *b)
{
    if (b->n < 1 || b->n > e->o.max_batch_tokens) {
        lam_log_error("monolithic GPU mode: batch of %d tokens (1..%d allowed)", b->n, e->o.max_batch_tokens);
        return LAM_ERR_INVALID_ARG;
    }
    int *next = e->slot_next;
    memcpy(next, e->slot_len, (size_t)e->o.n_slots * sizeof *next);
    for (int i = 0; i < b->n; i++) {
        int s = b->slot[i];
        if (b->token[i] < 0 || b->token[i] >= e->c->cfg.vocab) {
            lam_log_error("monolithic GPU mode: token %d out of range [0, %d)", b->token[i], e->c->cfg.vocab);
            return LAM_ERR_RANGE;
        }
        if (s < 0 || s >= e->o.n_slots) {
            lam_log_error("monolithic GPU mode: slot %d out of range [0, %d)", s, e->o.n_slots);
            return LAM_ERR_RANGE;
        }
        if (b->pos[i] != next[s] || b->pos[i] >= e->o.max_ctx) {
            lam_log_error("monolithic GPU mode: slot %d: position %d, expected %d (context %d)", s, b->pos[i],
                          next[s], e->o.max_ctx);
            return LAM_ERR_RANGE;
        }
        next[s]++;
    }
    return LAM_OK;
}

lam_status_t lam_mono_cuda_forward(lam_mono_cuda_t *e, const lam_batch_t *b, float *logits)
{
    lam_status_t st = check_batch(e, b);
    if (st != LAM_OK)
        return st;
    lam_cb_t *c = e->c;
    lam_backend_mb_t *mb = e->mb;
    const lam_model_config_t *g = &c->cfg;
    const int n = b->n, T = e->o.max_batch_tokens;
    LAM_CUDA_CHECK(cudaSetDevice(c->device));

    /* runs of one slot -> kernel sequences; h_meta = row | pos | page_start */
    LAM_CUDA_CHECK(cudaEventSynchronize(e->ev_meta));
    int32_t *row = e->h_meta, *pos = row + T + 1, *start = pos + T;
    int n_run = 0, max_rows = 1, max_keys = 1;
    for (int t = 0; t < n;) {
        int t1 = t + 1;
        while (t1 < n && b->slot[t1] == b->slot[t])
            t1++;
        row[n_run] = t;
        pos[n_run] = b->pos[t];
        start[n_run] = b->slot[t] * e->pages_per_slot;
        max_rows = t1 - t > max_rows ? t1 - t : max_rows;
        max_keys = b->pos[t] + (t1 - t) > max_keys ? b->pos[t] + (t1 - t) : max_keys;
        n_run++;
        t = t1;
    }
    row[n_run] = n;
    memcpy(mb->h_pos, b->pos, (size_t)n * sizeof *b->pos);
    int32_t *d_row = e->d_meta, *d_pos = d_row + T + 1, *d_start = d_pos + T;
    LAM_CUDA_CHECK(cudaMemcpyAsync(e->d_meta, e->h_meta, (3 * (size_t)T + 1) * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, mb->s));
    LAM_CUDA_CHECK(cudaMemcpyAsync(mb->d_pos, mb->h_pos, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, mb->s));
    LAM_CUDA_CHECK(cudaEventRecord(e->ev_meta, mb->s));

    lam_cuda_attn_args_t a = {
        .n_seq = n_run, .row = d_row, .pos = d_pos, .page_start = d_start, .pages = e->d_pages, .n_tok = n,
        .max_rows = max_rows, .max_keys = max_keys, .pool = e->pool, .page_bytes = e->page_bytes,
        .n_pages = e->n_pages, .head_stride = e->head_stride, .page_tokens = e->o.page_tokens,
        .n_kv_heads = g->n_kv_heads, .group = g->n_heads / g->n_kv_heads, .head_dim = g->head_dim,
        .kv_dtype = e->o.kv_dtype, .scale = 1.0f / sqrtf((float)g->head_dim), .q = e->d_q, .out = mb->att,
    };
    const size_t qw = (size_t)c->q_dim * sizeof(float), pitch = (size_t)c->qkv_dim * sizeof(float);
    st = lam_cb_embed(c, mb, b->token, n);
    for (int l = 0; l < g->n_layers && st == LAM_OK; l++) {
        a.k_off = (size_t)l * e->layer_stride;
        a.v_off = a.k_off + e->v_off;
        if ((st = lam_cb_qkv(c, mb, l, n)) != LAM_OK)
            break;
        LAM_CUDA_CHECK(cudaMemcpy2DAsync(e->d_q, qw, mb->qkv, pitch, qw, (size_t)n, cudaMemcpyDeviceToDevice, mb->s));
        if ((st = lam_cuda_kv_write(&a, mb->qkv + c->q_dim, mb->qkv + c->q_dim + c->kv_dim, c->qkv_dim, LAM_DT_F32,
                                    mb->s)) != LAM_OK ||
            (st = lam_cuda_attn(&a, e->ws, e->ws_bytes, 0, mb->s)) != LAM_OK)
            break;
        st = lam_cb_post(c, mb, l, n);
    }
    if (st != LAM_OK) {
        /* the slots' caches may hold part of this batch: their lengths did not move, so the rows are rewritten */
        return st;
    }
    for (int t = 0; t < n; t++)
        e->slot_len[b->slot[t]] = b->pos[t] + 1;
    int n_out = 0;
    return lam_cb_logits(c, mb, b->logits, n, logits, &n_out);
}
