/* Paged attention on the CPU: the plain oracle, the blocked online-softmax
 * driver that every ISA shares, the scalar ISA, and the run-time ISA choice.
 * The AVX2 and AVX-512 kernels are in attn_simd.c, conversions in convert.c. */
#include "kernels/cpu/attn.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "kernels/cpu/attn_internal.h"

/* ---- the oracle ------------------------------------------------------- */

/* Element idx of a block of dtype elements, as f32. */
static float kv_elem(const uint8_t *p, size_t idx, int dtype)
{
    uint16_t h;
    float f;
    switch (dtype) {
    case LAM_DT_F16: memcpy(&h, p + 2 * idx, 2); return lam_fp16_to_fp32(h);
    case LAM_DT_BF16: memcpy(&h, p + 2 * idx, 2); return lam_bf16_to_fp32(h);
    default: memcpy(&f, p + 4 * idx, 4); return f;
    }
}

/* Element d of key j (K blocks in either layout) or of value j (rows) of
 * KV head h in sequence s. */
static float key_at(const lam_attn_args_t *a, int s, int h, int j, int d)
{
    const uint8_t *blk = a->pages[s][j / a->page_tokens] + a->k_off + (size_t)h * a->head_stride;
    return kv_elem(blk, lam_attn_k_index(a->k_layout, a->head_dim, j % a->page_tokens, d), a->kv_dtype);
}

static float value_at(const lam_attn_args_t *a, int s, int h, int j, int d)
{
    const uint8_t *blk = a->pages[s][j / a->page_tokens] + a->v_off + (size_t)h * a->head_stride;
    return kv_elem(blk, (size_t)(j % a->page_tokens) * a->head_dim + d, a->kv_dtype);
}

void lam_attn_paged_ref(const lam_attn_args_t *a, float *scratch)
{
    int n_heads = a->n_kv_heads * a->group, hd = a->head_dim;
    for (int s = 0; s < a->n_seq; s++)
        for (int t = a->row[s]; t < a->row[s + 1]; t++) {
            int p = a->pos[s] + (t - a->row[s]);
            for (int qh = 0; qh < n_heads; qh++) {
                int h = qh / a->group;
                const float *q = a->q + ((size_t)t * n_heads + qh) * hd;
                float *out = a->out + ((size_t)t * n_heads + qh) * hd;
                float mx = -INFINITY;
                for (int j = 0; j <= p; j++) {
                    float dot = 0.0f;
                    for (int d = 0; d < hd; d++)
                        dot += q[d] * key_at(a, s, h, j, d);
                    scratch[j] = dot * a->scale;
                    mx = fmaxf(mx, scratch[j]);
                }
                float sum = 0.0f;
                for (int j = 0; j <= p; j++) {
                    scratch[j] = expf(scratch[j] - mx);
                    sum += scratch[j];
                }
                for (int d = 0; d < hd; d++)
                    out[d] = 0.0f;
                for (int j = 0; j <= p; j++) {
                    float w = scratch[j] / sum;
                    for (int d = 0; d < hd; d++)
                        out[d] += w * value_at(a, s, h, j, d);
                }
            }
        }
}

/* ---- the scalar ISA --------------------------------------------------- */

static void qk_softmax_scalar(float *P, const float *Q, const uint8_t *const *kt, int dtype, int hd, const int *lim,
                              int R, int nb, int hdp, float *m, float *l, float *alpha, attn_prefetch_t *pf)
{
    attn_prefetch_some(pf, pf->n);
    int nbp = (nb + 15) & ~15;
    for (int r = 0; r < R; r++) {
        float *p = P + (size_t)r * ATTN_BLOCK;
        const float *q = Q + (size_t)r * hdp;
        int n = lim[r];
        for (int j = n; j < nbp; j++)
            p[j] = 0.0f;
        alpha[r] = 1.0f;
        if (n == 0)
            continue;
        float bm = -INFINITY;
        for (int j = 0; j < n; j++) {
            float dot = 0.0f;
            for (int d = 0; d < hd; d++)
                dot += q[d] * kv_elem(kt[j / LAM_ATTN_K_TILE], (size_t)d * LAM_ATTN_K_TILE + j % LAM_ATTN_K_TILE,
                                      dtype);
            p[j] = dot;
            bm = p[j] > bm ? p[j] : bm;
        }
        float sum = 0.0f;
        if (bm > m[r]) {
            alpha[r] = exp2f(m[r] - bm);
            m[r] = bm;
        }
        for (int j = 0; j < n; j++) {
            p[j] = exp2f(p[j] - m[r]);
            sum += p[j];
        }
        l[(size_t)r * ATTN_L_LANES] = l[(size_t)r * ATTN_L_LANES] * alpha[r] + sum;
    }
}

static void pv_scalar(float *acc, const float *P, const uint8_t *const *vrow, size_t voff, int dtype, int hd, int hda,
                      const float *alpha, const int *lim, int R, attn_prefetch_t *pf)
{
    attn_prefetch_some(pf, pf->n);
    for (int r = 0; r < R; r++) {
        float *o = acc + (size_t)r * hda;
        if (alpha[r] != 1.0f)
            for (int d = 0; d < hd; d++)
                o[d] *= alpha[r];
        for (int j = 0; j < lim[r]; j++) {
            float w = P[(size_t)r * ATTN_BLOCK + j];
            for (int d = 0; d < hd; d++)
                o[d] += w * kv_elem(vrow[j] + voff, (size_t)d, dtype);
        }
    }
}

const attn_isa_t lam_attn_isa_scalar = {
    .name = "scalar",
    .qk_softmax = qk_softmax_scalar,
    .pv = pv_scalar,
    .f32_to_f16 = lam_cvt_f32_to_f16_scalar,
    .f16_to_f32 = lam_cvt_f16_to_f32_scalar,
    .f32_to_bf16 = lam_cvt_f32_to_bf16_scalar,
    .bf16_to_f32 = lam_cvt_bf16_to_f32_scalar,
    .matmul_rows = lam_matmul_rows_scalar,
    .dequant_qw = lam_dequant_qw_scalar,
    .swiglu = lam_swiglu_scalar,
};

/* ---- ISA choice ------------------------------------------------------- */

static const attn_isa_t *g_isa; /* accessed atomically: first callers may race */

static int isa_rank(const attn_isa_t *isa)
{
#ifdef LAM_ATTN_HAVE_X86
    if (isa == &lam_attn_isa_avx512)
        return 2;
    if (isa == &lam_attn_isa_avx2)
        return 1;
#endif
    return 0;
}

static const attn_isa_t *isa_best(void)
{
#ifdef LAM_ATTN_HAVE_X86
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        return &lam_attn_isa_avx512;
    if (avx2)
        return &lam_attn_isa_avx2;
#endif
    return &lam_attn_isa_scalar;
}

static const attn_isa_t *isa_by_name(const char *name)
{
    if (!strcmp(name, "scalar"))
        return &lam_attn_isa_scalar;
#ifdef LAM_ATTN_HAVE_X86
    if (!strcmp(name, "avx2"))
        return &lam_attn_isa_avx2;
    if (!strcmp(name, "avx512"))
        return &lam_attn_isa_avx512;
#endif
    return NULL;
}

const attn_isa_t *lam_attn_isa_get(void)
{
    const attn_isa_t *isa = __atomic_load_n(&g_isa, __ATOMIC_ACQUIRE);
    if (isa)
        return isa;
    isa = isa_best();
    const char *env = getenv("LAMINA_ATTN_ISA");
    const attn_isa_t *want = env ? isa_by_name(env) : NULL;
    if (want && isa_rank(want) < isa_rank(isa))
        isa = want;
    __atomic_store_n(&g_isa, isa, __ATOMIC_RELEASE);
    return isa;
}

int lam_attn_set_isa(const char *name)
{
    const attn_isa_t *want = isa_by_name(name);
    if (!want || isa_rank(want) > isa_rank(isa_best()))
        return -1;
    __atomic_store_n(&g_isa, want, __ATOMIC_RELEASE);
    return 0;
}

const char *lam_attn_isa(void) { return lam_attn_isa_get()->name; }

/* ---- the driver ------------------------------------------------------- */

/* How an item's rows are cut: Rh rows per KV head (flattened token x
 * query-head-in-group index f0 .. f0+Rh of the sequence), nh KV heads. */
typedef struct attn_plan {
    int hdp, hda;
    int rph;       /* rows per head and item (the last chunk may have fewer) */
    int hpi;       /* KV heads per item */
} attn_plan_t;

/* base[j] = the row of key j0 + j in its page, j < n; advances (pi, pr),
 * the page and row of key j0, past the block. */
static void block_rows(const uint8_t **base, uint8_t *const *pages, int pt, size_t row_bytes, int n, int *pi, int *pr)
{
    for (int j = 0; j < n;) {
        int run = pt - *pr < n - j ? pt - *pr : n - j; /* rows left in this page */
        const uint8_t *p = pages[*pi] + (size_t)*pr * row_bytes;
        for (int k = 0; k < run; k++)
            base[j + k] = p + (size_t)k * row_bytes;
        j += run;
        *pr += run;
        if (*pr == pt) {
            *pr = 0;
            ++*pi;
        }
    }
}

/* Rows f0 .. f0+Rh of sequence s for KV heads h0 .. h0+nh: row hi*Rh + i is
 * token (f0 + i) / group, query head (h0+hi) * group + (f0 + i) % group.
 * Positions grow with i, so row Rh-1 of each head sees the most keys. For
 * each block of keys, every head's K rows are converted once and V rows
 * read once for all of that head's rows. */
static void attn_item(const lam_attn_args_t *a, const attn_isa_t *isa, const attn_plan_t *pl, int s, int h0,
                      int nh, int f0, int Rh)
{
    float Q[ATTN_BUF_FLOATS] __attribute__((aligned(64)));   /* [nh*Rh][hdp], scaled */
    float acc[ATTN_BUF_FLOATS] __attribute__((aligned(64))); /* [nh*Rh][hda] */
    float P[ATTN_MAX_ROWS * ATTN_BLOCK] __attribute__((aligned(64)));
    float l[ATTN_MAX_ROWS * ATTN_L_LANES] __attribute__((aligned(64)));
    float m[ATTN_MAX_ROWS], alpha[ATTN_MAX_ROWS];
    int lim[ATTN_MAX_ROWS];
    const uint8_t *bases[2][ATTN_BLOCK]; /* this block's rows, the next's */
    const uint8_t *kt[ATTN_BLOCK / LAM_ATTN_K_TILE], *kt_next[ATTN_BLOCK / LAM_ATTN_K_TILE];

    int G = a->group, n_heads = a->n_kv_heads * G, hd = a->head_dim;
    int hdp = pl->hdp, hda = pl->hda, R = nh * Rh;
    /* scores in base 2: softmax(x) = 2^(x log2 e - max) / sum */
    const float qs = a->scale * 1.44269504088896341f;
    for (int r = 0; r < R; r++) {
        int hi = r / Rh, i = r % Rh, t = (f0 + i) / G, qh = (h0 + hi) * G + (f0 + i) % G;
        const float *q = a->q + ((size_t)(a->row[s] + t) * n_heads + qh) * hd;
        for (int d = 0; d < hd; d++)
            Q[(size_t)r * hdp + d] = q[d] * qs;
        memset(Q + (size_t)r * hdp + hd, 0, (size_t)(hdp - hd) * 4);
        memset(acc + (size_t)r * hda, 0, (size_t)hda * 4);
        memset(l + (size_t)r * ATTN_L_LANES, 0, ATTN_L_LANES * 4);
        m[r] = -INFINITY;
    }

    int pt = a->page_tokens, n_keys = a->pos[s] + (f0 + Rh - 1) / G + 1;
    size_t row_bytes = (size_t)hd * lam_dtype_size((unsigned)a->kv_dtype), tile_bytes = LAM_ATTN_K_TILE * row_bytes;
    uint8_t *const *pages = a->pages[s];
    int pi = 0, pr = 0; /* page and row of the first key not in bases[] yet */
    block_rows(bases[0], pages, pt, row_bytes, n_keys < ATTN_BLOCK ? n_keys : ATTN_BLOCK, &pi, &pr);
    for (int j0 = 0, cur = 0; j0 < n_keys; j0 += ATTN_BLOCK, cur ^= 1) {
        int nb = n_keys - j0 < ATTN_BLOCK ? n_keys - j0 : ATTN_BLOCK;
        int nb_next = n_keys - j0 - nb < ATTN_BLOCK ? n_keys - j0 - nb : ATTN_BLOCK;
        block_rows(bases[!cur], pages, pt, row_bytes, nb_next, &pi, &pr);
        for (int i = 0; i < Rh; i++) {
            int n = a->pos[s] + (f0 + i) / G + 1 - j0;
            lim[i] = n < 0 ? 0 : n > nb ? nb : n;
        }
        /* A block starts on a tile (ATTN_BLOCK and page_tokens are multiples
         * of 16), so a tile's base is the row address of its first key. */
        int nt = (nb + LAM_ATTN_K_TILE - 1) / LAM_ATTN_K_TILE;
        int nt_next = (nb_next + LAM_ATTN_K_TILE - 1) / LAM_ATTN_K_TILE;
        for (int t = 0; t < nt_next; t++)
            kt_next[t] = bases[!cur][LAM_ATTN_K_TILE * t];
        /* Scores of every head, then values, so a page's K blocks are read
         * in address order, then its V blocks. Meanwhile the next block's
         * tiles and rows are prefetched, one head's K or V per call, a few
         * lines at a time from inside the kernels' loops. */
        for (int hi = 0; hi < nh; hi++) {
            size_t ko = a->k_off + (size_t)(h0 + hi) * a->head_stride;
            attn_prefetch_t pf = {.rows = kt_next, .off = ko, .row_bytes = tile_bytes, .n = nt_next};
            for (int t = 0; t < nt; t++)
                kt[t] = bases[cur][LAM_ATTN_K_TILE * t] + ko;
            int r0 = hi * Rh;
            isa->qk_softmax(P + (size_t)r0 * ATTN_BLOCK, Q + (size_t)r0 * hdp, kt, a->kv_dtype, hd, lim, Rh, nb,
                            hdp, m + r0, l + (size_t)r0 * ATTN_L_LANES, alpha + r0, &pf);
        }
        for (int hi = 0; hi < nh; hi++) {
            size_t vo = a->v_off + (size_t)(h0 + hi) * a->head_stride;
            attn_prefetch_t pf = {.rows = bases[!cur], .off = vo, .row_bytes = row_bytes, .n = nb_next};
            int r0 = hi * Rh;
            isa->pv(acc + (size_t)r0 * hda, P + (size_t)r0 * ATTN_BLOCK, bases[cur], vo, a->kv_dtype, hd, hda,
                    alpha + r0, lim, Rh, &pf);
        }
    }

    for (int r = 0; r < R; r++) {
        int hi = r / Rh, i = r % Rh, t = (f0 + i) / G, qh = (h0 + hi) * G + (f0 + i) % G;
        float sum = 0.0f;
        for (int k = 0; k < ATTN_L_LANES; k++)
            sum += l[(size_t)r * ATTN_L_LANES + k];
        float *o = a->out + ((size_t)(a->row[s] + t) * n_heads + qh) * hd, inv = 1.0f / sum;
        for (int d = 0; d < hd; d++)
            o[d] = acc[(size_t)r * hda + d] * inv;
    }
}

/* Row-layout K, or head_dim beyond the stack buffers: one query row at a
 * time, the output row as the accumulator, scalar. The attention node
 * tiles K whenever its pages allow and no model has such heads; this keeps
 * the contract (any layout and head_dim) without a second fast path. */
static void attn_rows_unbuffered(const lam_attn_args_t *a)
{
    int n_heads = a->n_kv_heads * a->group, hd = a->head_dim;
    int64_t n_rows = (int64_t)a->row[a->n_seq] * n_heads;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n_rows; i++) {
        int t = (int)(i / n_heads), qh = (int)(i % n_heads), h = qh / a->group;
        int lo = 0, hi = a->n_seq - 1; /* the sequence holding token t */
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (a->row[mid] <= t)
                lo = mid;
            else
                hi = mid - 1;
        }
        int s = lo, p = a->pos[s] + (t - a->row[s]);
        const float *q = a->q + (size_t)i * hd;
        float *o = a->out + (size_t)i * hd, mx = -INFINITY, sum = 0.0f;
        memset(o, 0, (size_t)hd * 4);
        for (int j = 0; j <= p; j++) {
            float dot = 0.0f;
            for (int d = 0; d < hd; d++)
                dot += q[d] * key_at(a, s, h, j, d);
            dot *= a->scale;
            if (dot > mx) {
                float c = expf(mx - dot);
                for (int d = 0; d < hd; d++)
                    o[d] *= c;
                sum *= c;
                mx = dot;
            }
            float w = expf(dot - mx);
            sum += w;
            for (int d = 0; d < hd; d++)
                o[d] += w * value_at(a, s, h, j, d);
        }
        for (int d = 0; d < hd; d++)
            o[d] /= sum;
    }
}

/* Query tokens per item in prefill: more reuse of each K/V row against
 * finer load balance. */
#define ATTN_ITEM_TOKENS 16
/* Items wanted per thread for dynamic load balance before heads are split
 * across items. */
#define ATTN_ITEMS_PER_THREAD 8

void lam_attn_paged(const lam_attn_args_t *a)
{
    const attn_isa_t *isa = lam_attn_isa_get();
    if (a->head_dim > ATTN_MAX_HEAD_DIM || a->k_layout != LAM_ATTN_K_TILED || a->page_tokens % LAM_ATTN_K_TILE) {
        attn_rows_unbuffered(a);
        return;
    }
    int G = a->group, H = a->n_kv_heads;
    attn_plan_t pl;
    pl.hdp = (a->head_dim + 15) & ~15;
    pl.hda = (a->head_dim + 63) & ~63;
    int rmax = ATTN_BUF_FLOATS / pl.hda < ATTN_MAX_ROWS ? ATTN_BUF_FLOATS / pl.hda : ATTN_MAX_ROWS;
    /* whole tokens' worth of query heads per item when a group fits, else split it */
    int tok = rmax / G < ATTN_ITEM_TOKENS ? rmax / G : ATTN_ITEM_TOKENS;
    pl.rph = G <= rmax ? tok * G : rmax;
    int64_t chunks = 0;
    for (int s = 0; s < a->n_seq; s++)
        chunks += ((int64_t)(a->row[s + 1] - a->row[s]) * G + pl.rph - 1) / pl.rph;
    /* as many KV heads per item as fit, while there are enough items */
    pl.hpi = rmax / pl.rph < H ? rmax / pl.rph : H;
    if (pl.hpi < 1)
        pl.hpi = 1;
    int64_t want = (int64_t)ATTN_ITEMS_PER_THREAD * omp_get_max_threads();
    while (pl.hpi > 1 && chunks * ((H + pl.hpi - 1) / pl.hpi) < want)
        pl.hpi = (pl.hpi + 1) / 2;
    int n_hg = (H + pl.hpi - 1) / pl.hpi; /* head groups */
    int64_t total = chunks * n_hg;

#pragma omp parallel
    {
        int s = 0;
        int64_t base = 0; /* items before sequence s */
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < total; it++) {
            if (it < base) {
                s = 0;
                base = 0;
            }
            int64_t n_rows, n_items;
            for (;;) {
                n_rows = (int64_t)(a->row[s + 1] - a->row[s]) * G;
                n_items = n_hg * ((n_rows + pl.rph - 1) / pl.rph);
                if (it < base + n_items)
                    break;
                base += n_items;
                s++;
            }
            /* the latest rows (most keys) first */
            int64_t local = it - base, chunk = (n_items / n_hg) - 1 - local / n_hg;
            int h0 = (int)(local % n_hg) * pl.hpi, nh = H - h0 < pl.hpi ? H - h0 : pl.hpi;
            int f0 = (int)(chunk * pl.rph), Rh = n_rows - f0 < pl.rph ? (int)(n_rows - f0) : pl.rph;
            attn_item(a, isa, &pl, s, h0, nh, f0, Rh);
        }
    }
}
