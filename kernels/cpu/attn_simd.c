/* AVX-512 and AVX2 kernels of the paged-attention driver (attn.c; see
 * attn_internal.h for what each computes). Built for those ISAs with target
 * attributes and picked at run time, so the library still runs elsewhere.
 *
 * Scores: each K row is dotted with a query row as 16 (8) lane partial sums,
 * and the partials of 16 (8) keys are reduced together by a shuffle tree
 * whose output lanes are the 16 keys' scores, so no key needs a horizontal
 * sum of its own (AVX-512 also interleaves K rows in pairs when converting
 * them, which saves the tree's first stage for every query row). The
 * softmax keeps its running sums per lane and finds a new maximum with a
 * compare, reducing across lanes only when one appears. Probabilities times
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

/* exp(x) as Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-5 polynomial
 * for (e^r - 1 - r) / r^2; within 1 ulp of the correctly rounded result
 * over all floats in [-87, 0] (checked exhaustively). x < -104 (e^x below
 * half the least subnormal) and -inf give 0; NaN stays NaN. */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f
#define EXP_C2 -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

/* ---- AVX-512 ---------------------------------------------------------- */

I512 __m512 exp512(__m512 x)
{
    __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-104.0f), _CMP_NLT_UQ);
    x = _mm512_min_ps(_mm512_set1_ps(88.7f), x); /* min(c, NaN) is NaN */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_C1), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_C2), r);
    __m512 p = _mm512_set1_ps(EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_scalef_ps(live, p, n);
}

/* Shuffle-tree stages. st1(a, b): 128-bit lanes [a0+a2, a1+a3, b0+b2,
 * b1+b3] (8 partials of each); st2: 4 of each of 4 keys, one per lane;
 * st3, st4 the same within 128-bit lanes. */
I512 __m512 st1(__m512 a, __m512 b)
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
}
I512 __m512 st2(__m512 a, __m512 b)
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xdd));
}
I512 __m512 st3(__m512 a, __m512 b)
{
    return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x44), _mm512_shuffle_ps(a, b, 0xee));
}
I512 __m512 st4(__m512 a, __m512 b)
{
    return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xdd));
}

/* K layouts. Up to PAIR_MAX_HDP, a group of 16 keys is stored as 8 pairs
 * in the order the tree consumes them: pair p interleaves keys A[p], B[p]
 * by 8 dims, [A 8c..8c+7, B 8c..8c+7] for c < hdp/8, so one FMA chain per
 * pair yields st1's output directly and the tree needs three stages, not
 * four. Beyond it the buffer holds fewer than 16 keys and rows are kept
 * whole (all four stages). */
#define PAIR_MAX_HDP 256
static const int8_t g_pair_a[8] = {0, 8, 1, 9, 2, 10, 3, 11};
static const int8_t g_pair_b[8] = {4, 12, 5, 13, 6, 14, 7, 15};

/* 16 values from dims 8c..8c+7 of rows ra and rb; mk selects the dims
 * below head_dim unless all are (full) */
I512 __m512 oct_pair(const uint8_t *ra, const uint8_t *rb, int c, __mmask8 mk, int dt, int full)
{
    if (dt == LAM_DT_F32) {
        __m256 lo = full ? _mm256_loadu_ps((const float *)(ra + 32 * c)) : _mm256_maskz_loadu_ps(mk, ra + 32 * c);
        __m256 hi = full ? _mm256_loadu_ps((const float *)(rb + 32 * c)) : _mm256_maskz_loadu_ps(mk, rb + 32 * c);
        return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                                                   _mm256_castps_pd(hi), 1));
    }
    __m128i lo = full ? _mm_loadu_si128((const __m128i *)(ra + 16 * c)) : _mm_maskz_loadu_epi16(mk, ra + 16 * c);
    __m128i hi = full ? _mm_loadu_si128((const __m128i *)(rb + 16 * c)) : _mm_maskz_loadu_epi16(mk, rb + 16 * c);
    __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    if (dt == LAM_DT_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

I512 void load_k_pairs(float *dst, const uint8_t *const *src, int n, int hd, int hdp, int dt, int full)
{
    static const float zero_row[PAIR_MAX_HDP] __attribute__((aligned(64))); /* keys past n */
    int n8 = hdp / 8;
    __mmask8 mk[PAIR_MAX_HDP / 8];
    for (int c = 0; c < n8; c++) {
        int left = hd - 8 * c;
        mk[c] = (__mmask8)(left >= 8 ? 0xff : left <= 0 ? 0 : (1u << left) - 1);
    }
    for (int g = 0; g < (n + 15) / 16; g++)
        for (int p = 0; p < 8; p++) {
            int ja = 16 * g + g_pair_a[p], jb = 16 * g + g_pair_b[p];
            const uint8_t *ra = ja < n ? src[ja] : (const uint8_t *)zero_row;
            const uint8_t *rb = jb < n ? src[jb] : (const uint8_t *)zero_row;
            float *d = dst + (size_t)(16 * g + 2 * p) * hdp;
#pragma GCC unroll 16
            for (int c = 0; c < n8; c++)
                _mm512_store_ps(d + 16 * c, oct_pair(ra, rb, c, mk[c], dt, full));
        }
}

I512 void load_k_rows(float *dst, const uint8_t *const *src, int n, int hd, int hdp, int dt)
{
    int full = hd / 16, rem = hd % 16;
    __mmask16 tail = (__mmask16)((1u << rem) - 1);
    for (int j = 0; j < n; j++) {
        float *d = dst + (size_t)j * hdp;
        const uint8_t *s = src[j];
        for (int c = 0; c <= full && 16 * c < hdp; c++) {
            __mmask16 mk = c < full ? (__mmask16)0xffff : tail;
            __m512 v;
            if (dt == LAM_DT_F16)
                v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, s + 32 * c));
            else if (dt == LAM_DT_BF16)
                v = _mm512_castsi512_ps(
                    _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, s + 32 * c)), 16));
            else
                v = _mm512_maskz_loadu_ps(mk, s + 64 * c);
            _mm512_store_ps(d + 16 * c, v);
        }
    }
}

T512 static void load_k_avx512(float *dst, const uint8_t *const *src, int n, int hd, int hdp, int dt)
{
    if (hdp > PAIR_MAX_HDP) {
        load_k_rows(dst, src, n, hd, hdp, dt);
        return;
    }
    /* one copy per dtype (and whole octs or not) so that is decided outside the loops */
    if (dt == LAM_DT_F16 && hd == hdp && hd == 64)
        load_k_pairs(dst, src, n, 64, 64, LAM_DT_F16, 1);
    else if (dt == LAM_DT_F16 && hd == hdp)
        load_k_pairs(dst, src, n, hd, hdp, LAM_DT_F16, 1);
    else if (dt == LAM_DT_F16)
        load_k_pairs(dst, src, n, hd, hdp, LAM_DT_F16, 0);
    else if (dt == LAM_DT_BF16)
        load_k_pairs(dst, src, n, hd, hdp, LAM_DT_BF16, hd == hdp);
    else
        load_k_pairs(dst, src, n, hd, hdp, LAM_DT_F32, hd == hdp);
}

/* [q0..q7, q0..q7] */
I512 __m512 bcast8(const float *q)
{
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_load_ps(q))));
}

/* Lane j = q . K[j] for the 16 keys of a pair-interleaved group. */
I512 __m512 scores16_pairs(const float *q, const float *Kg, int hdp, int n8)
{
    __m512 t[8];
    __m512 qc = bcast8(q);
#pragma GCC unroll 8
    for (int p = 0; p < 8; p++)
        t[p] = _mm512_mul_ps(qc, _mm512_load_ps(Kg + (size_t)2 * p * hdp));
#pragma GCC unroll 32
    for (int c = 1; c < n8; c++) {
        qc = bcast8(q + 8 * c);
#pragma GCC unroll 8
        for (int p = 0; p < 8; p++)
            t[p] = _mm512_fmadd_ps(qc, _mm512_load_ps(Kg + (size_t)2 * p * hdp + 16 * c), t[p]);
    }
    return st4(st3(st2(t[0], t[1]), st2(t[2], t[3])), st3(st2(t[4], t[5]), st2(t[6], t[7])));
}

/* 16-lane partial sums of q . k over nv vectors */
I512 __m512 dot_partial512(const float *q, const float *k, int nv)
{
    __m512 t = _mm512_mul_ps(_mm512_load_ps(q), _mm512_load_ps(k));
    for (int c = 1; c < nv; c++)
        t = _mm512_fmadd_ps(_mm512_load_ps(q + 16 * c), _mm512_load_ps(k + 16 * c), t);
    return t;
}

/* Lane j = q . K[j] for whole rows K[j], j < n (<= 16), 0 beyond. The tree
 * leaves key 4a + b in lane 4b + a, so keys go in transposed. */
I512 __m512 scores16_rows(const float *q, const float *K, int hdp, int n)
{
    int nv = hdp / 16;
#define D(j) ((j) < n ? dot_partial512(q, K + (size_t)(j) * hdp, nv) : _mm512_setzero_ps())
    __m512 a = st2(st1(D(0), D(4)), st1(D(8), D(12)));
    __m512 b = st2(st1(D(1), D(5)), st1(D(9), D(13)));
    __m512 c = st2(st1(D(2), D(6)), st1(D(10), D(14)));
    __m512 d = st2(st1(D(3), D(7)), st1(D(11), D(15)));
#undef D
    return st4(st3(a, b), st3(c, d));
}

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
        *alpha = expf(*m - mnew);
        *m = mnew;
        mv = _mm512_set1_ps(mnew);
        sum = _mm512_mul_ps(sum, _mm512_set1_ps(*alpha));
    }
    for (int g = 0; g < ng; g++) {
        __m512 e = exp512(_mm512_sub_ps(s[g], mv));
        sum = _mm512_add_ps(sum, e);
        _mm512_store_ps(p + 16 * g, e);
    }
    for (int g = ng; g < ngb; g++)
        _mm512_store_ps(p + 16 * g, _mm512_setzero_ps());
    _mm512_store_ps(lv, sum);
}

I512 void qk_row512(float *p, const float *q, const float *K, int n, int nb, int hdp, int n8, float scale,
                    float *m, float *lv, float *alpha)
{
    __m512 s[ATTN_BLOCK / 16];
    int ng = (n + 15) / 16;
    for (int g = 0; g < ng; g++) {
        int valid = n - 16 * g;
        __m512 v = hdp <= PAIR_MAX_HDP ? scores16_pairs(q, K + (size_t)16 * g * hdp, hdp, n8)
                                       : scores16_rows(q, K + (size_t)16 * g * hdp, hdp, valid < 16 ? valid : 16);
        __mmask16 km = valid >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << valid) - 1);
        s[g] = _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), km, v, _mm512_set1_ps(scale));
    }
    softmax_row512(p, s, ng, (nb + 15) / 16, m, lv, alpha);
}

T512 static void qk_softmax_avx512(float *P, const float *Q, const float *K, const int *lim, int R, int nb, int hdp,
                                   float scale, float *m, float *l, float *alpha, attn_prefetch_t *pf)
{
    int n8 = hdp / 8;
    for (int r = 0; r < R; r++) {
        float *p = P + (size_t)r * ATTN_BLOCK, *lv = l + (size_t)r * ATTN_L_LANES;
        const float *q = Q + (size_t)r * hdp;
        /* this row's share of the prefetches */
        attn_prefetch_some(pf, (pf->n * (r + 1) + R - 1) / R - pf->next);
        if (lim[r] == 0) {
            alpha[r] = 1.0f;
            for (int g = 0; g < (nb + 15) / 16; g++)
                _mm512_store_ps(p + 16 * g, _mm512_setzero_ps());
        } else if (n8 == 8) {
            qk_row512(p, q, K, lim[r], nb, 64, 8, scale, &m[r], lv, &alpha[r]);
        } else if (n8 == 16) {
            qk_row512(p, q, K, lim[r], nb, 128, 16, scale, &m[r], lv, &alpha[r]);
        } else {
            qk_row512(p, q, K, lim[r], nb, hdp, n8, scale, &m[r], lv, &alpha[r]);
        }
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
I512 void pv_tile512(float *acc, int hda, const float *P, const uint8_t *const *vrow, int c0, const __mmask16 *mk,
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
            v[c] = vload512(vrow[j], c0 + c, mk[c0 + c], dt);
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

#define PV_TILE(NR, NV, DT) pv_tile512(ac, hda, pr, vrow, c0, mk, al, n, NR, NV, DT, pf)
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
T512 static void pv_avx512(float *acc, const float *P, const uint8_t *const *vrow, int dt, int hd, int hda,
                           const float *alpha, const int *lim, int R, attn_prefetch_t *pf)
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
    .load_k = load_k_avx512,
    .qk_softmax = qk_softmax_avx512,
    .pv = pv_avx512,
    .f32_to_f16 = lam_cvt_f32_to_f16_avx512,
    .f16_to_f32 = lam_cvt_f16_to_f32_avx512,
    .f32_to_bf16 = lam_cvt_f32_to_bf16_avx512,
    .bf16_to_f32 = lam_cvt_bf16_to_f32_avx512,
};

/* ---- AVX2 ------------------------------------------------------------- */

/* As exp512; 2^n is built in the exponent field, so below -87.3 (2^-126)
 * the result is 0 rather than subnormal. */
I256 __m256 exp256(__m256 x)
{
    __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_NLT_UQ);
    x = _mm256_min_ps(_mm256_set1_ps(88.3f), x);
    x = _mm256_max_ps(_mm256_set1_ps(-87.3f), x);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_C1), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_C2), r);
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
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

I256 __m256 dot_partial256(const float *q, const float *k, int nv)
{
    __m256 t = _mm256_mul_ps(_mm256_loadu_ps(q), _mm256_load_ps(k));
#pragma GCC unroll 16
    for (int c = 1; c < nv; c++)
        t = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), _mm256_load_ps(k + 8 * c), t);
    return t;
}

/* Lane j = q . K[j] for j < n (<= 8): the classic hadd tree. */
I256 __m256 scores8(const float *q, const float *K, int hdp, int nv, int n)
{
#define D(j) ((j) < n ? dot_partial256(q, K + (size_t)(j) * hdp, nv) : _mm256_setzero_ps())
    __m256 h01 = _mm256_hadd_ps(D(0), D(1)), h23 = _mm256_hadd_ps(D(2), D(3));
    __m256 h45 = _mm256_hadd_ps(D(4), D(5)), h67 = _mm256_hadd_ps(D(6), D(7));
#undef D
    __m256 g0 = _mm256_hadd_ps(h01, h23), g1 = _mm256_hadd_ps(h45, h67);
    return _mm256_add_ps(_mm256_permute2f128_ps(g0, g1, 0x20), _mm256_permute2f128_ps(g0, g1, 0x31));
}

T256 static void load_k_avx2(float *dst, const uint8_t *const *src, int n, int hd, int hdp, int dtype)
{
    int full = hd / 8;
    for (int j = 0; j < n; j++) {
        float *d = dst + (size_t)j * hdp;
        const uint8_t *s = src[j];
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

I256 void qk_row256(float *p, const float *q, const float *K, int n, int nb, int hdp, int nv, float scale,
                    float *m, float *lv, float *alpha)
{
    __m256 s[ATTN_BLOCK / 8];
    int ng = (n + 7) / 8, ngb = (nb + 15) / 16 * 2;
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (int g = 0; g < ng; g++) {
        int valid = n - 8 * g;
        const float *Kg = K + (size_t)8 * g * hdp;
        __m256 v = valid >= 8 ? scores8(q, Kg, hdp, nv, 8) : scores8(q, Kg, hdp, nv, valid);
        v = _mm256_mul_ps(v, _mm256_set1_ps(scale));
        if (valid < 8) {
            __m256 idx = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
            __m256 keep = _mm256_cmp_ps(idx, _mm256_set1_ps((float)valid), _CMP_LT_OQ);
            v = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, keep);
        }
        s[g] = v;
        mx = _mm256_max_ps(mx, v);
    }
    float bm = hmax256(mx);
    __m256 sum = _mm256_load_ps(lv);
    *alpha = 1.0f;
    if (bm > *m) {
        *alpha = expf(*m - bm);
        *m = bm;
        sum = _mm256_mul_ps(sum, _mm256_set1_ps(*alpha));
    }
    __m256 mv = _mm256_set1_ps(*m);
    for (int g = 0; g < ng; g++) {
        __m256 e = exp256(_mm256_sub_ps(s[g], mv));
        sum = _mm256_add_ps(sum, e);
        _mm256_store_ps(p + 8 * g, e);
    }
    for (int g = ng; g < ngb; g++)
        _mm256_store_ps(p + 8 * g, _mm256_setzero_ps());
    _mm256_store_ps(lv, sum);
}

T256 static void qk_softmax_avx2(float *P, const float *Q, const float *K, const int *lim, int R, int nb, int hdp,
                                 float scale, float *m, float *l, float *alpha, attn_prefetch_t *pf)
{
    attn_prefetch_some(pf, pf->n);
    int nv = hdp / 8;
    for (int r = 0; r < R; r++) {
        float *p = P + (size_t)r * ATTN_BLOCK, *lv = l + (size_t)r * ATTN_L_LANES;
        const float *q = Q + (size_t)r * hdp;
        if (lim[r] == 0) {
            alpha[r] = 1.0f;
            for (int g = 0; g < (nb + 15) / 16 * 2; g++)
                _mm256_store_ps(p + 8 * g, _mm256_setzero_ps());
        } else if (nv == 8) {
            qk_row256(p, q, K, lim[r], nb, hdp, 8, scale, &m[r], lv, &alpha[r]);
        } else {
            qk_row256(p, q, K, lim[r], nb, hdp, nv, scale, &m[r], lv, &alpha[r]);
        }
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

/* V rows converted once into a local [n][hdp] buffer, then 2-row tiles. */
T256 static void pv_avx2(float *acc, const float *P, const uint8_t *const *vrow, int dt, int hd, int hda,
                         const float *alpha, const int *lim, int R, attn_prefetch_t *pf)
{
    attn_prefetch_some(pf, pf->n);
    float V[ATTN_BUF_FLOATS] __attribute__((aligned(64)));
    int hdp = (hd + 15) & ~15, nvt = hdp / 8, nmax = 0; /* nvt even */
    for (int r = 0; r < R; r++)
        nmax = lim[r] > nmax ? lim[r] : nmax;
    load_k_avx2(V, vrow, nmax, hd, hdp, dt);
    for (int r0 = 0; r0 < R; r0 += 2) {
        int nr = R - r0 < 2 ? R - r0 : 2, n = 0;
        for (int r = r0; r < r0 + nr; r++)
            n = lim[r] > n ? lim[r] : n;
        float *ac = acc + (size_t)r0 * hda;
        const float *pr = P + (size_t)r0 * ATTN_BLOCK;
        for (int c0 = 0; c0 < nvt; c0 += 4) {
            if (nvt - c0 >= 4 && nr == 2)
                pv_tile256(ac + 8 * c0, hda, pr, V + 8 * c0, hdp, alpha + r0, n, 2, 4);
            else if (nvt - c0 >= 4)
                pv_tile256(ac + 8 * c0, hda, pr, V + 8 * c0, hdp, alpha + r0, n, 1, 4);
            else
                pv_tile256(ac + 8 * c0, hda, pr, V + 8 * c0, hdp, alpha + r0, n, nr, 2);
        }
    }
}

const attn_isa_t lam_attn_isa_avx2 = {
    .name = "avx2",
    .load_k = load_k_avx2,
    .qk_softmax = qk_softmax_avx2,
    .pv = pv_avx2,
    .f32_to_f16 = lam_cvt_f32_to_f16_avx2,
    .f16_to_f32 = lam_cvt_f16_to_f32_avx2,
    .f32_to_bf16 = lam_cvt_f32_to_bf16_avx2,
    .bf16_to_f32 = lam_cvt_bf16_to_f32_avx2,
};

#endif /* LAM_ATTN_HAVE_X86 */
