/* The CPU attention executor (exec.h): host pages (kv.c), K/V rows
 * converted into them as they are added, queries converted to f32, one
 * lam_attn_paged call per message, outputs converted back. */
#include "attention_node/exec.h"

#include "common/dtype.h"
#include "common/log.h"
#include "kernels/cpu/attn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct cpu_exec {
    lam_an_exec_t base;
    int n_kv, group, head_dim, kv_dtype;
    size_t qrow;                 /* elements per query row: n_q * head_dim */
    int layer, dtype;
    /* one message */
    int n_seq, n_rows;
    float *q32, *o32;            /* [max_tokens][qrow] */
    int32_t *row, *pos;          /* [max_seqs + 1], [max_seqs] */
    uint8_t *const **pages;      /* [max_seqs] */
    void **o;                    /* [max_seqs] where each sequence's output goes */
} cpu_exec_t;

static void cpu_begin(lam_an_exec_t *x, int layer, int dtype)
{
    cpu_exec_t *e = (cpu_exec_t *)x;
    e->layer = layer;
    e->dtype = dtype;
    e->n_seq = 0;
    e->n_rows = 0;
}

static void cpu_add(lam_an_exec_t *x, lam_kv_seq_t *s, int pos, int n, const void *q, const void *k, const void *v,
                    void *o)
{
    cpu_exec_t *e = (cpu_exec_t *)x;
    lam_kv_write(x->kv, s, e->layer, pos, n, k, v, e->dtype);
    lam_convert(e->q32 + (size_t)e->n_rows * e->qrow, LAM_DT_F32, q, e->dtype, (size_t)n * e->qrow);
    e->row[e->n_seq] = e->n_rows;
    e->pos[e->n_seq] = pos;
    e->pages[e->n_seq] = lam_kv_seq_pages(s);
    e->o[e->n_seq] = o;
    e->n_seq++;
    e->n_rows += n;
}

static lam_status_t cpu_run(lam_an_exec_t *x)
{
    cpu_exec_t *e = (cpu_exec_t *)x;
    if (!e->n_seq)
        return LAM_OK;
    e->row[e->n_seq] = e->n_rows;
    const lam_kv_geom_t *g = lam_kv_geom(x->kv);
    lam_attn_args_t a = {
        .n_seq = e->n_seq, .row = e->row, .pos = e->pos, .pages = e->pages,
        .k_off = (size_t)e->layer * g->layer_stride, .v_off = (size_t)e->layer * g->layer_stride + g->v_off,
        .head_stride = g->head_stride, .page_tokens = g->page_tokens, .k_layout = g->k_layout, .n_kv_heads = e->n_kv,
        .group = e->group, .head_dim = e->head_dim, .kv_dtype = e->kv_dtype,
        .scale = 1.0f / sqrtf((float)e->head_dim), .q = e->q32, .out = e->o32,
    };
    lam_attn_paged(&a);
    for (int i = 0; i < e->n_seq; i++)
        lam_convert(e->o[i], e->dtype, e->o32 + (size_t)e->row[i] * e->qrow, LAM_DT_F32,
                    (size_t)(e->row[i + 1] - e->row[i]) * e->qrow);
    return LAM_OK;
}

static void cpu_destroy(lam_an_exec_t *x)
{
    cpu_exec_t *e = (cpu_exec_t *)x;
    lam_kv_destroy(x->kv);
    free(e->q32);
    free(e->o32);
    free(e->row);
    free(e->pos);
    free(e->pages);
    free(e->o);
    free(e);
}

static const lam_an_exec_i cpu_exec_i = {
    .name = "cpu", .begin = cpu_begin, .add = cpu_add, .run = cpu_run, .destroy = cpu_destroy,
};

lam_status_t lam_an_exec_cpu_create(const lam_an_exec_opts_t *o, lam_an_exec_t **out)
{
    cpu_exec_t *e = calloc(1, sizeof *e);
    if (!e)
        return LAM_ERR_NO_MEMORY;
    e->base.i = &cpu_exec_i;
    e->n_kv = o->kv.n_kv_heads;
    e->group = o->group;
    e->head_dim = o->kv.head_dim;
    e->kv_dtype = o->kv.dtype;
    e->qrow = (size_t)e->n_kv * o->group * o->kv.head_dim;
    snprintf(e->base.kernel, sizeof e->base.kernel, "cpu %s", lam_attn_isa());
    size_t rows = (size_t)o->max_tokens * e->qrow, seqs = (size_t)o->max_seqs;
    e->q32 = malloc(rows * sizeof *e->q32);
    e->o32 = malloc(rows * sizeof *e->o32);
    e->row = malloc((seqs + 1) * sizeof *e->row);
    e->pos = malloc(seqs * sizeof *e->pos);
    e->pages = malloc(seqs * sizeof *e->pages);
    e->o = malloc(seqs * sizeof *e->o);
    if (!e->q32 || !e->o32 || !e->row || !e->pos || !e->pages || !e->o) {
        cpu_destroy(&e->base);
        return LAM_ERR_NO_MEMORY;
    }
    lam_kv_opts_t ko = o->kv;
    ko.page_pool = NULL;
    /* K in 16-token tiles when the pages allow: the SIMD kernels need it */
    int pt = ko.page_tokens ? ko.page_tokens : LAM_KV_DEFAULT_PAGE_TOKENS;
    ko.k_layout = pt % LAM_ATTN_K_TILE == 0 ? LAM_ATTN_K_TILED : LAM_ATTN_K_ROWS;
    if (ko.k_layout != LAM_ATTN_K_TILED)
        lam_log_warn("attention node: --page-tokens %d is not a multiple of %d, so attention runs one query row "
                     "at a time without SIMD (many times slower)",
                     pt, LAM_ATTN_K_TILE);
    lam_status_t st = lam_kv_create(&ko, &e->base.kv);
    if (st != LAM_OK) {
        cpu_destroy(&e->base);
        return st;
    }
    *out = &e->base;
    return LAM_OK;
}
