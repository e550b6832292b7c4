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

static const uint8_t *kv_row(const lam_attn_args_t *a, int s, int h, size_t off, int j)
{
    size_t row_bytes = (size_t)a->head_dim * lam_dtype_size((unsigned)a->kv_dtype);
    return a->pages[s][j / a->page_tokens] + off + (size_t)h * a->head_stride +
           (size_t)(j % a->page_tokens) * row_bytes;
}

static float kv_elem(const uint8_t *row, int i, int dtype)
{
    uint16_t h;
    float f;
    switch (dtype) {
    case LAM_DT_F16: memcpy(&h, row + 2 * (size_t)i, 2); return lam_fp16_to_fp32(h);
    case LAM_DT_BF16: memcpy(&h, row + 2 * (size_t)i, 2); return lam_bf16_to_fp32(h);
    default: memcpy(&f, row + 4 * (size_t)i, 4); return f;
    }
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
                    const uint8_t *k = kv_row(a, s, h, a->k_off, j);
                    float dot = 0.0f;
                    for (int d = 0; d < hd; d++)
                        dot += q[d] * kv_elem(k, d, a->kv_dtype);
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
                    const uint8_t *v = kv_row(a, s, h, a->v_off, j);
                    float w = scratch[j] / sum;
                    for (int d = 0; d < hd; d++)
                        out[d] += w * kv_elem(v, d, a->kv_dtype);
                }
            }
        }
}

/* ---- the scalar ISA --------------------------------------------------- */

static void load_k_scalar(float *dst, const uint8_t *const *src, int n, int hd, int hdp, int dtype)
{
    for (int j = 0; j < n; j++) {
        float *d = dst + (size_t)j * hdp;
        for (int i = 0; i < hd; i++)
            d[i] = kv_elem(src[j], i, dtype);
        for (int i = hd; i < hdp; i++)
            d[i] = 0.0f;
    }
}

static void qk_softmax_scalar(float *P, const float *Q, const float *K, const int *lim, int R, int nb, int hdp,
                              float scale, float *m, float *l, float *alpha, attn_prefetch_t *pf)
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
            const float *k = K + (size_t)j * hdp;
            float dot = 0.0f;
            for (int d = 0; d < hdp; d++)
                dot += q[d] * k[d];
            p[j] = dot * scale;
            bm = p[j] > bm ? p[j] : bm;
        }
        float sum = 0.0f;
        if (bm > m[r]) {
            alpha[r] = expf(m[r] - bm);
            m[r] = bm;
        }
        for (int j = 0; j < n; j++) {
            p[j] = expf(p[j] - m[r]);
            sum += p[j];
        }
        l[(size_t)r * ATTN_L_LANES] = l[(size_t)r * ATTN_L_LANES] * alpha[r] + sum;
    }
}

static void pv_scalar(float *acc, const float *P, const uint8_t *const *vrow, int dtype, int hd, int hda,
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
                o[d] += w * kv_elem(vrow[j], d, dtype);
        }
    }
}

const attn_isa_t lam_attn_isa_scalar = {
    .name = "scalar",
    .load_k = load_k_scalar,
    .qk_softmax = qk_softmax_scalar,
    .pv = pv_scalar,
    .f32_to_f16 = lam_cvt_f32_to_f16_scalar,
    .f16_to_f32 = lam_cvt_f16_to_f32_scalar,
    .f32_to_bf16 = lam_cvt_f32_to_bf16_scalar,
    .bf16_to_f32 = lam_cvt_bf16_to_f32_scalar,
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
    int hdp, hda, nbmax;
    int rph;       /* rows per head and item (the last chunk may have fewer) */
    int hpi;       /* KV heads per item */
} attn_plan_t;

/* base[j] = the row of key j0 + j in its page, j < n; advances (pi, pr),
 * the page and row of key j0, past the block. */
static void block_rows(const uint8_t **base, uint8_t *const *pages, int pt, size_t row_bytes, int n, int *pi, int *pr)
{
    for (int j = 0; j < n; j++) {
        base[j] = pages[*pi] + (size_t)*pr * row_bytes;
        if (++*pr == pt) {
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
    float Q[ATTN_BUF_FLOATS] __attribute__((aligned(64)));   /* [nh*Rh][hdp] */
    float acc[ATTN_BUF_FLOATS] __attribute__((aligned(64))); /* [nh*Rh][hda] */
    float K[ATTN_BUF_FLOATS] __attribute__((aligned(64)));   /* load_k's layout */
    float P[ATTN_MAX_ROWS * ATTN_BLOCK] __attribute__((aligned(64)));
    float l[ATTN_MAX_ROWS * ATTN_L_LANES] __attribute__((aligned(64)));
    float m[ATTN_MAX_ROWS], alpha[ATTN_MAX_ROWS];
    int lim[ATTN_MAX_ROWS];
    const uint8_t *kp[ATTN_BLOCK], *vp[ATTN_BLOCK], *bases[2][ATTN_BLOCK]; /* this block's rows, the next's */

    int G = a->group, n_heads = a->n_kv_heads * G, hd = a->head_dim;
    int hdp = pl->hdp, hda = pl->hda, R = nh * Rh;
    for (int r = 0; r < R; r++) {
        int hi = r / Rh, i = r % Rh, t = (f0 + i) / G, qh = (h0 + hi) * G + (f0 + i) % G;
        memcpy(Q + (size_t)r * hdp, a->q + ((size_t)(a->row[s] + t) * n_heads + qh) * hd, (size_t)hd * 4);
        memset(Q + (size_t)r * hdp + hd, 0, (size_t)(hdp - hd) * 4);
        memset(acc + (size_t)r * hda, 0, (size_t)hda * 4);
        memset(l + (size_t)r * ATTN_L_LANES, 0, ATTN_L_LANES * 4);
        m[r] = -INFINITY;
    }

    int pt = a->page_tokens, n_keys = a->pos[s] + (f0 + Rh - 1) / G + 1, nbmax = pl->nbmax;
    size_t row_bytes = (size_t)hd * lam_dtype_size((unsigned)a->kv_dtype);
    uint8_t *const *pages = a->pages[s];
    int pi = 0, pr = 0; /* page and row of the first key not in bases[] yet */
    block_rows(bases[0], pages, pt, row_bytes, n_keys < nbmax ? n_keys : nbmax, &pi, &pr);
    for (int j0 = 0, cur = 0; j0 < n_keys; j0 += nbmax, cur ^= 1) {
        int nb = n_keys - j0 < nbmax ? n_keys - j0 : nbmax;
        int nb_next = n_keys - j0 - nb < nbmax ? n_keys - j0 - nb : nbmax;
        block_rows(bases[!cur], pages, pt, row_bytes, nb_next, &pi, &pr);
        for (int i = 0; i < Rh; i++) {
            int n = a->pos[s] + (f0 + i) / G + 1 - j0;
            lim[i] = n < 0 ? 0 : n > nb ? nb : n;
        }
        /* Scores of every head, then values, so a page's K blocks are read
         * in address order, then its V blocks. Meanwhile the next block's
         * rows are prefetched, one head's K or V per call, a few lines at
         * a time from inside the kernels' loops. */
        for (int hi = 0; hi < nh; hi++) {
            size_t ko = a->k_off + (size_t)(h0 + hi) * a->head_stride;
            attn_prefetch_t pf = {.rows = bases[!cur], .off = ko, .row_bytes = row_bytes, .n = nb_next};
            for (int j = 0; j < nb; j++)
                kp[j] = bases[cur][j] + ko;
            int r0 = hi * Rh;
            isa->load_k(K, kp, nb, hd, hdp, a->kv_dtype);
            isa->qk_softmax(P + (size_t)r0 * ATTN_BLOCK, Q + (size_t)r0 * hdp, K, lim, Rh, nb, hdp, a->scale,
                            m + r0, l + (size_t)r0 * ATTN_L_LANES, alpha + r0, &pf);
        }
        for (int hi = 0; hi < nh; hi++) {
            size_t vo = a->v_off + (size_t)(h0 + hi) * a->head_stride;
            attn_prefetch_t pf = {.rows = bases[!cur], .off = vo, .row_bytes = row_bytes, .n = nb_next};
            for (int j = 0; j < nb; j++)
                vp[j] = bases[cur][j] + vo;
            int r0 = hi * Rh;
            isa->pv(acc + (size_t)r0 * hda, P + (size_t)r0 * ATTN_BLOCK, vp, a->kv_dtype, hd, hda, alpha + r0, lim,
                    Rh, &pf);
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

/* head_dim beyond the stack buffers: one query row at a time, the output
 * row as the accumulator, scalar. No model has such heads; this keeps the
 * contract (any head_dim) without a second set of limits. */
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
            const uint8_t *k = kv_row(a, s, h, a->k_off, j), *v = kv_row(a, s, h, a->v_off, j);
            float dot = 0.0f;
            for (int d = 0; d < hd; d++)
                dot += q[d] * kv_elem(k, d, a->kv_dtype);
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
                o[d] += w * kv_elem(v, d, a->kv_dtype);
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
    if (a->head_dim > ATTN_MAX_HEAD_DIM) {
        attn_rows_unbuffered(a);
        return;
    }
    int G = a->group, H = a->n_kv_heads;
    attn_plan_t pl;
    pl.hdp = (a->head_dim + 15) & ~15;
    pl.hda = (a->head_dim + 63) & ~63;
    pl.nbmax = ATTN_BUF_FLOATS / pl.hdp < ATTN_BLOCK ? ATTN_BUF_FLOATS / pl.hdp : ATTN_BLOCK;
    if (pl.nbmax >= 16)
        pl.nbmax &= ~15;
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
