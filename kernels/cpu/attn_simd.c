/* AVX-512 and AVX2 kernels of the paged-attention driver (attn.c; see
 * attn_internal.h for what each computes). Built for those ISAs with target
 * attributes and picked at run time, so the library still runs elsewhere.
 *
 * Scores: K comes in 16-token tiles ([head_dim][16], LAM_ATTN_K_TILED), so
 * one vector holds one dim of 16 keys and a score vector is a plain sum of
 * broadcast q[d] times those vectors: no lane reduction, and each K vector
 * is loaded and converted once for up to 8 query rows (a register tile of
 * up to 4 rows x 4 tiles or 8 rows x 2 tiles; AVX2: 2 x 2 in 8-key
 * halves). The next block's K tiles are prefetched a few lines per dim. The
 * softmax works in base 2, keeps its running sums per lane and finds a new
 * maximum with a compare, reducing across lanes only when one appears. Probabilities times
 * V: a tile of up to 4 query rows x 64 dims or 8 rows x 32 dims stays in
 * registers over the key block, and each V vector is loaded from the cache
 * and converted once for all the tile's rows. */
#include "kernels/cpu/attn_internal.h"

#ifdef LAM_ATTN_HAVE_X86

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "common/dtype.h"

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define I512 static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define T256 __attribute__((target("avx2,fma,f16c")))
#define I256 static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* 2^y for y <= 0 (scores already in base 2: the driver scales Q by
 * log2 e): y = n + f, |f| <= 1/2, 2^f by a degree-6 polynomial fitted on
 * Chebyshev nodes (within 2 ulp over [-1/2, 1/2], rounding included).
 * y below -200 counts as -200 (2^-200 is 0 in f32), which also maps -inf
 * to 0; NaN stays NaN. */
#define EXP2_P0 1.000000000e+00f
#define EXP2_P1 6.931472067e-01f
#define EXP2_P2 2.402265121e-01f
#define EXP2_P3 5.550327214e-02f
#define EXP2_P4 9.618025603e-03f
#define EXP2_P5 1.340043217e-03f
#define EXP2_P6 1.546973200e-04f

/* ---- AVX-512 ---------------------------------------------------------- */

I512 __m512 exp2_512(__m512 y)
{
    y = _mm512_max_ps(_mm512_set1_ps(-200.0f), y); /* max(c, NaN) is NaN */
    __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(y, n);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(EXP2_P6), f, _mm512_set1_ps(EXP2_P5));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_P4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_P3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_P2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_P1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_P0));
    return _mm512_scalef_ps(p, n);
}

/* Element d of the 16 keys of a K tile, as f32. */
I512 __m512 ktile512(const uint8_t *tile, int d, int dt)
{
    if (dt == LAM_DT_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(tile + 32 * (size_t)d)));
    if (dt == LAM_DT_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(tile + 32 * (size_t)d))), 16));
    return _mm512_loadu_ps((const float *)(tile + 64 * (size_t)d));
}

/* Raw scores of rows r < nr (Q rows hdp apart) against the 16 keys of each
 * of the nt tiles: S[r][16t + i] = Q[r] . K[16t + i]. Each dim of each tile
 * is converted once for all the rows; nr x nt accumulators, no reduction. */
I512 void qk_tile512(float *S, const float *Q, int hdp, const uint8_t *const *kt, int hd, int nr, int nt, int dt,
                     attn_prefetch_t *pf, int pf_per_d)
{
    __m512 acc[8][4], k[4];
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            acc[r][t] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int d = 0; d < hd; d++) {
        attn_prefetch_lines(pf, pf_per_d);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            k[t] = ktile512(kt[t], d, dt);
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m512 w = _mm512_set1_ps(Q[(size_t)r * hdp + d]);
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++)
                acc[r][t] = _mm512_fmadd_ps(w, k[t], acc[r][t]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            _mm512_store_ps(S + (size_t)r * ATTN_BLOCK + 16 * t, acc[r][t]);
}

/* Up to 4 rows against 4 tiles at a time, 5 to 8 rows against 2: at most
 * 16 accumulators. A block's missing tiles are stood in for by its first
 * (their scores land past nb and are masked). */
#define QK_TILE(NR, NT, DT)                                                                                           \
    qk_tile512(S + (size_t)r0 * ATTN_BLOCK + 16 * t0, Q + (size_t)r0 * hdp, hdp, kq, hd, NR, NT, DT, pf, per_d)
#define QK_ROWS(DT)                                                                                                   \
    switch (nr) {                                                                                                     \
    case 1: QK_TILE(1, 4, DT); break;                                                                                 \
    case 2: QK_TILE(2, 4, DT); break;                                                                                 \
    case 3: QK_TILE(3, 4, DT); break;                                                                                 \
    case 4: QK_TILE(4, 4, DT); break;                                                                                 \
    case 5: QK_TILE(5, 2, DT); break;                                                                                 \
    case 6: QK_TILE(6, 2, DT); break;                                                                                 \
    case 7: QK_TILE(7, 2, DT); break;                                                                                 \
    default: QK_TILE(8, 2, DT); break;                                                                                \
    }

T512 static void qk_scores512(float *S, const float *Q, const uint8_t *const *kt, int dt, int hd, int R, int nb,
                              int hdp, attn_prefetch_t *pf)
{
    int ntb = (nb + 15) / 16, calls = 0;
#define QK_TILE_WIDTH(nr) ((nr) <= 4 ? 4 : 2) /* tiles per call, as QK_ROWS */
    for (int r0 = 0; r0 < R; r0 += 8)
        calls += (ntb + QK_TILE_WIDTH(R - r0) - 1) / QK_TILE_WIDTH(R - r0);
    for (int r0 = 0; r0 < R; r0 += 8) {
        int nr = R - r0 < 8 ? R - r0 : 8, tw = QK_TILE_WIDTH(nr);
        for (int t0 = 0; t0 < ntb; t0 += tw, calls--) {
            const uint8_t *kq[4];
            for (int t = 0; t < tw; t++)
                kq[t] = t0 + t < ntb ? kt[t0 + t] : kt[0];
            /* this call's share of the prefetches, a few lines per dim */
            int per_d = (int)((attn_prefetch_left(pf) + (size_t)calls * hd - 1) / ((size_t)calls * hd));
            if (dt == LAM_DT_F16) {
                QK_ROWS(LAM_DT_F16)
            } else if (dt == LAM_DT_BF16) {
                QK_ROWS(LAM_DT_BF16)
            } else {
                QK_ROWS(LAM_DT_F32)
            }
        }
    }
}
#undef QK_ROWS
#undef QK_TILE
#undef QK_TILE_WIDTH

/* Online-softmax update of one row from its masked scores s[0..ng). The
 * running max only moves when some score exceeds it, which a compare
 * finds without a horizontal reduction; sums stay per lane in lv. */
I512 void softmax_row512(float *p, const __m512 *s, int ng, int ngb, float *m, float *lv, float *alpha)
{
    __m512 mv = _mm512_set1_ps(*m);
    __mmask16 up = 0;
    for (int g = 0; g < ng; g++)
        up |= _mm512_cmp_ps_mask(s[g], mv, _CMP_GT_OQ);
    __m512 sum = _mm512_load_ps(lv);
    *alpha = 1.0f;
    if (up) {
        __m512 mx = s[0];
        for (int g = 1; g < ng; g++)
            mx = _mm512_max_ps(mx, s[g]);
        float mnew = _mm512_reduce_max_ps(mx);
        *alpha = exp2f(*m - mnew);
        *m = mnew;
        mv = _mm512_set1_ps(mnew);
        sum = _mm512_mul_ps(sum, _mm512_set1_ps(*alpha));
    }
    for (int g = 0; g < ng; g++) {
        __m512 e = exp2_512(_mm512_sub_ps(s[g], mv));
        sum = _mm512_add_ps(sum, e);
        _mm512_store_ps(p + 16 * g, e);
    }
    for (int g = ng; g < ngb; g++)
        _mm512_store_ps(p + 16 * g, _mm512_setzero_ps());
    _mm512_store_ps(lv, sum);
}

T512 static void qk_softmax_avx512(float *P, const float *Q, const uint8_t *const *kt, int dt, int hd,
                                   const int *lim, int R, int nb, int hdp, float *m, float *l, float *alpha,
                                   attn_prefetch_t *pf)
{
    qk_scores512(P, Q, kt, dt, hd, R, nb, hdp, pf);
    attn_prefetch_some(pf, pf->n);
    int ngb = (nb + 15) / 16;
    for (int r = 0; r < R; r++) {
        float *p = P + (size_t)r * ATTN_BLOCK, *lv = l + (size_t)r * ATTN_L_LANES;
        int n = lim[r], ng = (n + 15) / 16;
        if (n == 0) {
            alpha[r] = 1.0f;
            for (int g = 0; g < ngb; g++)
                _mm512_store_ps(p + 16 * g, _mm512_setzero_ps());
            continue;
        }
        __m512 s[ATTN_BLOCK / 16];
        for (int g = 0; g < ng; g++) {
            int valid = n - 16 * g;
            __mmask16 km = valid >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << valid) - 1);
            s[g] = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), km, _mm512_load_ps(p + 16 * g));
        }
        softmax_row512(p, s, ng, ngb, &m[r], lv, &alpha[r]);
    }
}

/* Vector c (16 elements) of a V row, zero where mk is clear. */
I512 __m512 vload512(const uint8_t *row, int c, __mmask16 mk, int dt)
{
    if (dt == LAM_DT_F16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, row + 32 * c));
    if (dt == LAM_DT_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, row + 32 * c)), 16));
    return _mm512_maskz_loadu_ps(mk, row + 64 * c);
}

/* nr rows x nv vectors from vector c0: acc = acc * alpha + P V over keys
 * j < n, each V vector converted once for all nr rows. */
I512 void pv_tile512(float *acc, int hda, const float *P, const uint8_t *const *vrow, size_t voff, int c0,
                     const __mmask16 *mk,
                     const float *alpha, int n, int nr, int nv, int dt, attn_prefetch_t *pf)
{
    __m512 a[8][4] = {{_mm512_setzero_ps()}}, v[4];
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int c = 0; c < nv; c++)
            a[r][c] = _mm512_mul_ps(_mm512_load_ps(acc + (size_t)r * hda + 16 * (c0 + c)),
                                    _mm512_set1_ps(alpha[r]));
    /* one row of pf per key, from locals so the loop keeps them in registers */
    int npf = pf->n - pf->next < n ? pf->n - pf->next : n;
    const uint8_t *const *pfr = pf->rows + pf->next;
    size_t pfo = pf->off, pfb = pf->row_bytes;
    pf->next += npf;
    for (int j = 0; j < n; j++) {
        if (j < npf)
            for (size_t b = 0; b < pfb; b += 64)
                __builtin_prefetch(pfr[j] + pfo + b);
#pragma GCC unroll 4
        for (int c = 0; c < nv; c++)
            v[c] = vload512(vrow[j] + voff, c0 + c, mk[c0 + c], dt);
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) {
            __m512 w = _mm512_set1_ps(P[(size_t)r * ATTN_BLOCK + j]);
#pragma GCC unroll 4
            for (int c = 0; c < nv; c++)
                a[r][c] = _mm512_fmadd_ps(w, v[c], a[r][c]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int c = 0; c < nv; c++)
            _mm512_store_ps(acc + (size_t)r * hda + 16 * (c0 + c), a[r][c]);
}

#define PV_TILE(NR, NV, DT) pv_tile512(ac, hda, pr, vrow, voff, c0, mk, al, n, NR, NV, DT, pf)
#define PV_ROWS(DT)                                                                                                   \
    switch (nr + 8 * (nv == 4)) {                                                                                     \
    case 1: PV_TILE(1, 2, DT); break;                                                                                 \
    case 2: PV_TILE(2, 2, DT); break;                                                                                 \
    case 3: PV_TILE(3, 2, DT); break;                                                                                 \
    case 4: PV_TILE(4, 2, DT); break;                                                                                 \
    case 5: PV_TILE(5, 2, DT); break;                                                                                 \
    case 6: PV_TILE(6, 2, DT); break;                                                                                 \
    case 7: PV_TILE(7, 2, DT); break;                                                                                 \
    case 8: PV_TILE(8, 2, DT); break;                                                                                 \
    case 9: PV_TILE(1, 4, DT); break;                                                                                 \
    case 10: PV_TILE(2, 4, DT); break;                                                                                \
    case 11: PV_TILE(3, 4, DT); break;                                                                                \
    default: PV_TILE(4, 4, DT); break;                                                                                \
    }

/* Up to 4 rows: tiles of 64 dims; more: tiles of 8 rows x 32 dims. Either
 * way 16 accumulators, and with up to 8 rows each V vector is loaded and
 * converted once per key. */
T512 static void pv_avx512(float *acc, const float *P, const uint8_t *const *vrow, size_t voff, int dt, int hd,
                           int hda, const float *alpha, const int *lim, int R, attn_prefetch_t *pf)
{
    __mmask16 mk[ATTN_BUF_FLOATS / 16];
    int nvt = hda / 16, nv = R <= 4 ? 4 : 2, rt = R <= 4 ? 4 : 8;
    for (int c = 0; c < nvt; c++) {
        int left = hd - 16 * c;
        mk[c] = (__mmask16)(left >= 16 ? 0xffff : left <= 0 ? 0 : (1u << left) - 1);
    }
    for (int r0 = 0; r0 < R; r0 += rt) {
        int nr = R - r0 < rt ? R - r0 : rt, n = 0;
        for (int r = r0; r < r0 + nr; r++)
            n = lim[r] > n ? lim[r] : n;
        float *ac = acc + (size_t)r0 * hda;
        const float *pr = P + (size_t)r0 * ATTN_BLOCK, *al = alpha + r0;
        for (int c0 = 0; c0 < nvt; c0 += nv) {
            if (dt == LAM_DT_F16) {
                PV_ROWS(LAM_DT_F16)
            } else if (dt == LAM_DT_BF16) {
                PV_ROWS(LAM_DT_BF16)
            } else {
                PV_ROWS(LAM_DT_F32)
            }
        }
    }
    attn_prefetch_some(pf, pf->n);
}
#undef PV_ROWS
#undef PV_TILE

const attn_isa_t lam_attn_isa_avx512 = {
    .name = "avx512",
    .qk_softmax = qk_softmax_avx512,
    .pv = pv_avx512,
    .f32_to_f16 = lam_cvt_f32_to_f16_avx512,
    .f16_to_f32 = lam_cvt_f16_to_f32_avx512,
    .f32_to_bf16 = lam_cvt_f32_to_bf16_avx512,
    .bf16_to_f32 = lam_cvt_bf16_to_f32_avx512,
    .matmul_rows = lam_matmul_rows_avx512,
    .dequant_qw = lam_dequant_qw_avx512,
    .matmul_qw_tile = lam_matmul_qw_tile_avx512,
    .swiglu = lam_swiglu_avx512,
};

/* ---- AVX2 ------------------------------------------------------------- */

/* As exp2_512; 2^n is built in the exponent field, so below -126 the
 * result is 0 rather than subnormal. */
I256 __m256 exp2_256(__m256 y)
{
    __m256 live = _mm256_cmp_ps(y, _mm256_set1_ps(-126.0f), _CMP_NLT_UQ);
    y = _mm256_max_ps(_mm256_set1_ps(-126.0f), y);
    __m256 n = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(y, n);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(EXP2_P6), f, _mm256_set1_ps(EXP2_P5));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_P4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_P3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_P2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_P1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_P0));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), live);
}

I256 float hmax256(__m256 v)
{
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

T256 static void load_rows_avx2(float *dst, const uint8_t *const *src, size_t off, int n, int hd, int hdp, int dtype)
{
    int full = hd / 8;
    for (int j = 0; j < n; j++) {
        float *d = dst + (size_t)j * hdp;
        const uint8_t *s = src[j] + off;
        if (dtype == LAM_DT_F16) {
#pragma GCC unroll 8
            for (int c = 0; c < full; c++)
                _mm256_store_ps(d + 8 * c, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 16 * c))));
        } else if (dtype == LAM_DT_BF16) {
#pragma GCC unroll 8
            for (int c = 0; c < full; c++) {
                __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + 16 * c)));
                _mm256_store_ps(d + 8 * c, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
            }
        } else {
#pragma GCC unroll 8
            for (int c = 0; c < full; c++)
                _mm256_store_ps(d + 8 * c, _mm256_loadu_ps((const float *)(s + 32 * c)));
        }
        for (int i = 8 * full; i < hd; i++) {
            uint16_t h;
            if (dtype == LAM_DT_F32) {
                memcpy(&d[i], s + 4 * (size_t)i, 4);
            } else {
                memcpy(&h, s + 2 * (size_t)i, 2);
                d[i] = dtype == LAM_DT_F16 ? lam_fp16_to_fp32(h) : lam_bf16_to_fp32(h);
            }
        }
        for (int i = hd; i < hdp; i++)
            d[i] = 0.0f;
    }
}

/* Elements d of keys 8h .. 8h+7 of a K tile, as f32. */
I256 __m256 ktile256(const uint8_t *tile, int d, int h, int dt)
{
    if (dt == LAM_DT_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(tile + 32 * (size_t)d + 16 * h)));
    if (dt == LAM_DT_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(tile + 32 * (size_t)d + 16 * h))), 16));
    return _mm256_loadu_ps((const float *)(tile + 64 * (size_t)d + 32 * h));
}

/* As qk_tile512 with 8-key halves: nr <= 2 rows x nt <= 2 tiles, 8 ymm
 * accumulators. */
I256 void qk_tile256(float *S, const float *Q, int hdp, const uint8_t *const *kt, int hd, int nr, int nt, int dt)
{
    __m256 acc[2][4], k[4];
#pragma GCC unroll 2
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int c = 0; c < 2 * nt; c++)
            acc[r][c] = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int d = 0; d < hd; d++) {
#pragma GCC unroll 4
        for (int c = 0; c < 2 * nt; c++)
            k[c] = ktile256(kt[c / 2], d, c % 2, dt);
#pragma GCC unroll 2
        for (int r = 0; r < nr; r++) {
            __m256 w = _mm256_set1_ps(Q[(size_t)r * hdp + d]);
#pragma GCC unroll 4
            for (int c = 0; c < 2 * nt; c++)
                acc[r][c] = _mm256_fmadd_ps(w, k[c], acc[r][c]);
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int c = 0; c < 2 * nt; c++)
            _mm256_store_ps(S + (size_t)r * ATTN_BLOCK + 8 * c, acc[r][c]);
}

T256 static void qk_softmax_avx2(float *P, const float *Q, const uint8_t *const *kt, int dt, int hd, const int *lim,
                                 int R, int nb, int hdp, float *m, float *l, float *alpha, attn_prefetch_t *pf)
{
    attn_prefetch_some(pf, pf->n);
    int ntb = (nb + 15) / 16, ngb = 2 * ntb;
    for (int r0 = 0; r0 < R; r0 += 2)
        for (int t0 = 0; t0 < ntb; t0 += 2) {
            const uint8_t *kq[2] = {kt[t0], t0 + 1 < ntb ? kt[t0 + 1] : kt[0]};
            float *S = P + (size_t)r0 * ATTN_BLOCK + 16 * t0;
            const float *q = Q + (size_t)r0 * hdp;
            if (R - r0 >= 2) {
                if (dt == LAM_DT_F16)
                    qk_tile256(S, q, hdp, kq, hd, 2, 2, LAM_DT_F16);
                else if (dt == LAM_DT_BF16)
                    qk_tile256(S, q, hdp, kq, hd, 2, 2, LAM_DT_BF16);
                else
                    qk_tile256(S, q, hdp, kq, hd, 2, 2, LAM_DT_F32);
            } else {
                if (dt == LAM_DT_F16)
                    qk_tile256(S, q, hdp, kq, hd, 1, 2, LAM_DT_F16);
                else if (dt == LAM_DT_BF16)
                    qk_tile256(S, q, hdp, kq, hd, 1, 2, LAM_DT_BF16);
                else
                    qk_tile256(S, q, hdp, kq, hd, 1, 2, LAM_DT_F32);
            }
        }
    for (int r = 0; r < R; r++) {
        float *p = P + (size_t)r * ATTN_BLOCK, *lv = l + (size_t)r * ATTN_L_LANES;
        int n = lim[r], ng = (n + 7) / 8;
        alpha[r] = 1.0f;
        if (n == 0) {
            for (int g = 0; g < ngb; g++)
                _mm256_store_ps(p + 8 * g, _mm256_setzero_ps());
            continue;
        }
        __m256 s[ATTN_BLOCK / 8], mx = _mm256_set1_ps(-INFINITY);
        const __m256 idx = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
        for (int g = 0; g < ng; g++) {
            __m256 v = _mm256_load_ps(p + 8 * g);
            int valid = n - 8 * g;
            if (valid < 8)
                v = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v,
                                     _mm256_cmp_ps(idx, _mm256_set1_ps((float)valid), _CMP_LT_OQ));
            s[g] = v;
            mx = _mm256_max_ps(mx, v);
        }
        float bm = hmax256(mx);
        __m256 sum = _mm256_load_ps(lv);
        if (bm > m[r]) {
            alpha[r] = exp2f(m[r] - bm);
            m[r] = bm;
            sum = _mm256_mul_ps(sum, _mm256_set1_ps(alpha[r]));
        }
        __m256 mv = _mm256_set1_ps(m[r]);
        for (int g = 0; g < ng; g++) {
            __m256 e = exp2_256(_mm256_sub_ps(s[g], mv));
            sum = _mm256_add_ps(sum, e);
            _mm256_store_ps(p + 8 * g, e);
        }
        for (int g = ng; g < ngb; g++)
            _mm256_store_ps(p + 8 * g, _mm256_setzero_ps());
        _mm256_store_ps(lv, sum);
    }
}

/* 2 rows x 32 dims: 8 accumulators, 4 V vectors, a broadcast (16 ymm) */
I256 void pv_tile256(float *acc, int hda, const float *P, const float *V, int hdp, const float *alpha, int n, int nr,
                     int nv)
{
    __m256 a[2][4] = {{_mm256_setzero_ps()}};
#pragma GCC unroll 2
    for (int r = 0; r < nr; r++) {
        __m256 al = _mm256_set1_ps(alpha[r]);
#pragma GCC unroll 4
        for (int c = 0; c < nv; c++)
            a[r][c] = _mm256_mul_ps(_mm256_load_ps(acc + (size_t)r * hda + 8 * c), al);
    }
    for (int j = 0; j < n; j++) {
        const float *v = V + (size_t)j * hdp;
#pragma GCC unroll 2
        for (int r = 0; r < nr; r++) {
            __m256 w = _mm256_set1_ps(P[(size_t)r * ATTN_BLOCK + j]);
#pragma GCC unroll 4
            for (int c = 0; c < nv; c++)
                a[r][c] = _mm256_fmadd_ps(w, _mm256_load_ps(v + 8 * c), a[r][c]);
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int c = 0; c < nv; c++)
            _mm256_store_ps(acc + (size_t)r * hda + 8 * c, a[r][c]);
}

/* V rows converted into a local [kc][hdp] buffer, kc keys at a time (all
 * of the block unless head_dim is large), then 2-row tiles over them. */
T256 static void pv_avx2(float *acc, const float *P, const uint8_t *const *vrow, size_t voff, int dt, int hd, int hda,
                         const float *alpha, const int *lim, int R, attn_prefetch_t *pf)
{
    attn_prefetch_some(pf, pf->n);
    static const float no_rescale[2] = {1.0f, 1.0f};
    float V[ATTN_BUF_FLOATS] __attribute__((aligned(64)));
    int hdp = (hd + 15) & ~15, nvt = hdp / 8, nmax = 0; /* nvt even */
    int kc = ATTN_BUF_FLOATS / hdp < ATTN_BLOCK ? ATTN_BUF_FLOATS / hdp : ATTN_BLOCK;
    for (int r = 0; r < R; r++)
        nmax = lim[r] > nmax ? lim[r] : nmax;
    for (int j0 = 0; j0 < nmax || j0 == 0; j0 += kc) {
        int nk = nmax - j0 < kc ? nmax - j0 : kc;
        load_rows_avx2(V, vrow + j0, voff, nk, hd, hdp, dt);
        for (int r0 = 0; r0 < R; r0 += 2) {
            int nr = R - r0 < 2 ? R - r0 : 2, n = 0;
            for (int r = r0; r < r0 + nr; r++)
                n = lim[r] - j0 > n ? lim[r] - j0 : n;
            n = n < nk ? n : nk;
            float *ac = acc + (size_t)r0 * hda;
            const float *pr = P + (size_t)r0 * ATTN_BLOCK + j0, *al = j0 ? no_rescale : alpha + r0;
            for (int c0 = 0; c0 < nvt; c0 += 4) {
                if (nvt - c0 >= 4 && nr == 2)
                    pv_tile256(ac + 8 * c0, hda, pr, V + 8 * c0, hdp, al, n, 2, 4);
                else if (nvt - c0 >= 4)
                    pv_tile256(ac + 8 * c0, hda, pr, V + 8 * c0, hdp, al, n, 1, 4);
                else
                    pv_tile256(ac + 8 * c0, hda, pr, V + 8 * c0, hdp, al, n, nr, 2);
            }
        }
    }
}

const attn_isa_t lam_attn_isa_avx2 = {
    .name = "avx2",
    .qk_softmax = qk_softmax_avx2,
    .pv = pv_avx2,
    .f32_to_f16 = lam_cvt_f32_to_f16_avx2,
    .f16_to_f32 = lam_cvt_f16_to_f32_avx2,
    .f32_to_bf16 = lam_cvt_f32_to_bf16_avx2,
    .bf16_to_f32 = lam_cvt_bf16_to_f32_avx2,
    .matmul_rows = lam_matmul_rows_avx2,
    .dequant_qw = lam_dequant_qw_avx2,
    .matmul_qw_tile = lam_matmul_qw_tile_avx2,
    .swiglu = lam_swiglu_avx2,
};

#endif /* LAM_ATTN_HAVE_X86 */
