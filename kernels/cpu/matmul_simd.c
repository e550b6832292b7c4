/* The dense layers' matrix product, y[t][o] = x[t]·W[o] (+ bias[o]), in
 * register tiles of 4 weight rows × NT tokens.
 *
 * Every output is summed in one fixed order that depends on I alone: lane k
 * of one accumulator gathers the products at i ≡ k (mod lanes) in increasing
 * i (the tail through zero-filled masked loads), then the lanes are added
 * by a fixed tree and the bias last. The tile shape, T, O, the row range and
 * the thread count never change a result, so a token computed alone, in a
 * micro-batch or in a whole batch gives the same bits: the compute node's
 * micro-batches reproduce the reference engine exactly. */
#include "kernels/cpu/attn_internal.h"

#ifdef LAM_ATTN_HAVE_X86

#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/ops.h"

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define I512 static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define T256 __attribute__((target("avx2,fma,f16c")))
#define I256 static inline __attribute__((always_inline, target("avx2,fma,f16c")))

#define MM_ROWS 4     /* weight rows per register tile */
#define MM_TCHUNK 64  /* tokens per pass over a row tile: x[chunk] stays in L2 */

/* The tile's row pointers; rows past o1 repeat the last one (computed, not
 * stored). pn: the next tile's rows (up to O), prefetched by the tile's first
 * token group while the weights stream from memory. */
static inline void tile_rows(const float **w, const float **pn, const float *W, int I, int o, int o1, int O)
{
    for (int r = 0; r < MM_ROWS; r++) {
        w[r] = W + (size_t)(o + r < o1 ? o + r : o1 - 1) * I;
        int n = o + MM_ROWS + r;
        pn[r] = W + (size_t)(n < O ? n : O - 1) * I;
    }
}

/* The tile's rows of weight blocks from Wq (its first row); rows past nr
 * repeat the last one, as in tile_rows. */
static inline void tile_block_rows(const uint8_t **src, const uint8_t *Wq, size_t row_bytes, int nr)
{
    for (int r = 0; r < MM_ROWS; r++)
        src[r] = Wq + (size_t)(r < nr ? r : nr - 1) * row_bytes;
}

/* ---- AVX-512 ------------------------------------------------------------ */

/* [Σa, Σb, Σc, Σd], each by the tree ((x_k + x_k+8) + (x_k+4 + x_k+12)) over
 * k, then (k=0 + k=2) + (k=1 + k=3): the same for every row and token. */
I512 __m128 hsum4x512(__m512 a, __m512 b, __m512 c, __m512 d)
{
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
    /* 128-bit blocks: [a0+a2, a1+a3, b0+b2, b1+b3] and the same for c, d */
    __m512 e = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
    /* block r holds row r's four partial sums p0..p3 */
    __m512 f = _mm512_add_ps(e, _mm512_permute_ps(e, _MM_SHUFFLE(1, 0, 3, 2)));
    __m512 g = _mm512_add_ps(f, _mm512_permute_ps(f, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                                            0, 0), g));
}

/* acc[r][j] += w[r] · x[j·I .. j·I + 16) for the tile's rows and NT tokens */
I512 void fma512(__m512 acc[MM_ROWS][4], const __m512 *w, const float *x, int I, const int NT)
{
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++) {
        __m512 xv = _mm512_loadu_ps(x + (size_t)j * I);
#pragma GCC unroll 4
        for (int r = 0; r < MM_ROWS; r++)
            acc[r][j] = _mm512_fmadd_ps(w[r], xv, acc[r][j]);
    }
}

/* y[j][o + r] = Σ acc[r][j] (+ bias[o + r]) for r < nr, j < NT */
I512 void store512(float *y, __m512 acc[MM_ROWS][4], const float *bias, int O, int o, int nr, const int NT)
{
    __mmask8 st = (__mmask8)((1u << nr) - 1);
    __m128 b = bias ? _mm_maskz_loadu_ps(st, bias + o) : _mm_setzero_ps();
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++)
        _mm_mask_storeu_ps(y + (size_t)j * O + o, st,
                           _mm_add_ps(hsum4x512(acc[0][j], acc[1][j], acc[2][j], acc[3][j]), b));
}

I512 void tile512(float *y, const float *x, const float *const *w, const float *const *pn, const float *bias, int I,
                  int O, int o, int nr, int t, const int NT)
{
    __m512 acc[MM_ROWS][4];
    const int ib = I & ~15;
#pragma GCC unroll 4
    for (int r = 0; r < MM_ROWS; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++)
            acc[r][j] = _mm512_setzero_ps();
    for (int i = 0; i < ib; i += 16) {
        __m512 wv[MM_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < MM_ROWS; r++)
            wv[r] = _mm512_loadu_ps(w[r] + i);
        if (pn)
#pragma GCC unroll 4
            for (int r = 0; r < MM_ROWS; r++)
                _mm_prefetch((const char *)(pn[r] + i), _MM_HINT_T0);
        fma512(acc, wv, x + (size_t)t * I + i, I, NT);
    }
    if (ib < I) {
        __mmask16 mk = (__mmask16)((1u << (I - ib)) - 1);
        __m512 wv[MM_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < MM_ROWS; r++)
            wv[r] = _mm512_maskz_loadu_ps(mk, w[r] + ib);
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) {
            __m512 xv = _mm512_maskz_loadu_ps(mk, x + (size_t)(t + j) * I + ib);
#pragma GCC unroll 4
            for (int r = 0; r < MM_ROWS; r++)
                acc[r][j] = _mm512_fmadd_ps(wv[r], xv, acc[r][j]);
        }
    }
    store512(y + (size_t)t * O, acc, bias, O, o, nr, NT);
}

T512 void lam_matmul_rows_avx512(float *y, const float *x, const float *W, const float *bias, int T, int I, int O,
                                 int o0, int o1)
{
    for (int tc = 0; tc < T; tc += MM_TCHUNK) {
        int te = T - tc < MM_TCHUNK ? T : tc + MM_TCHUNK;
        for (int o = o0; o < o1; o += MM_ROWS) {
            const float *w[MM_ROWS], *pn[MM_ROWS];
            tile_rows(w, pn, W, I, o, o1, O);
            int nr = o1 - o < MM_ROWS ? o1 - o : MM_ROWS, t = tc;
            const float *const *p = tc == 0 ? pn : NULL;
            for (; t + 4 <= te; t += 4, p = NULL)
                tile512(y, x, w, p, bias, I, O, o, nr, t, 4);
            if (t + 2 <= te) {
                tile512(y, x, w, p, bias, I, O, o, nr, t, 2);
                t += 2;
                p = NULL;
            }
            if (t < te)
                tile512(y, x, w, p, bias, I, O, o, nr, t, 1);
        }
    }
}

/* [d, m] of a block header (two f16) as f32 */
I512 __m128 block_dm(const uint8_t *src)
{
    int32_t h;
    memcpy(&h, src, sizeof h);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(h));
}

/* One block's 32 weights, [0, 16) in *lo and [16, 32) in *hi,
 * bit-identical to common/dequant.c, which rounds each product and sum (ISO
 * C: no contraction into FMA). Q4_1: nibble * d is exact in f32 (4 + 11
 * significant bits), so fusing it with + m rounds once, as the two
 * operations do. */
I512 void expand_q4_1(const uint8_t *src, __m512 *lo, __m512 *hi)
{
    __m128 dm = block_dm(src);
    __m512 d = _mm512_broadcastss_ps(dm), m = _mm512_broadcastss_ps(_mm_movehdup_ps(dm));
    __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + 4)));
    *lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(q, _mm512_set1_epi32(0xf))), d, m);
    *hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4)), d, m);
}

I512 void expand_q8_0(const uint8_t *src, __m512 *lo, __m512 *hi)
{
    __m512 d = _mm512_broadcastss_ps(block_dm(src)); /* the high half is the first quants: unused */
    __m512 a = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(src + 2))));
    __m512 c = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(src + 18))));
    *lo = _mm512_mul_ps(a, d);
    *hi = _mm512_mul_ps(c, d);
}

/* Weight blocks (lam_dequant_qw) */
T512 void lam_dequant_qw_avx512(float *dst, const uint8_t *src, int type, int n)
{
    int q41 = type == LAM_QW_Q4_1;
    size_t bb = q41 ? 20 : 34;
    for (int b = 0; b < n / 32; b++, dst += 32, src += bb) {
        __m512 lo, hi;
        __builtin_prefetch(src + QW_PREFETCH_AHEAD);
        if (q41)
            expand_q4_1(src, &lo, &hi);
        else
            expand_q8_0(src, &lo, &hi);
        _mm512_storeu_ps(dst, lo);
        _mm512_storeu_ps(dst + 16, hi);
    }
}

/* The first NT tokens of a row tile over weight blocks: each block of the
 * MM_ROWS rows is expanded in registers, multiplied at once and kept in
 * buf (row r at buf + r·I) for the tile's other tokens. Products are
 * summed as in tile512 (lane k: i ≡ k mod 16, increasing i), so the bits
 * are those of expanding first and then lam_matmul_rows_avx512. */
I512 void tile512_blocks(float *y, const float *x, const uint8_t *const *src, const int q41, float *buf,
                         const float *bias, int I, int O, int o, int nr, const int NT)
{
    __m512 acc[MM_ROWS][4];
    const size_t bb = q41 ? 20 : 34;
#pragma GCC unroll 4
    for (int r = 0; r < MM_ROWS; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++)
            acc[r][j] = _mm512_setzero_ps();
    for (int i = 0, b = 0; i < I; i += 32, b++) {
        __m512 lo[MM_ROWS], hi[MM_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < MM_ROWS; r++) {
            const uint8_t *s = src[r] + (size_t)b * bb;
            __builtin_prefetch(s + QW_PREFETCH_AHEAD);
            if (q41)
                expand_q4_1(s, &lo[r], &hi[r]);
            else
                expand_q8_0(s, &lo[r], &hi[r]);
            _mm512_storeu_ps(buf + (size_t)r * I + i, lo[r]);
            _mm512_storeu_ps(buf + (size_t)r * I + i + 16, hi[r]);
        }
        fma512(acc, lo, x + i, I, NT);
        fma512(acc, hi, x + i + 16, I, NT);
    }
    store512(y, acc, bias, O, o, nr, NT);
}

T512 void lam_matmul_qw_tile_avx512(float *y, const float *x, const uint8_t *Wq, size_t row_bytes, int type,
                                    const float *bias, int T, int I, int O, int o, int nr, float *buf)
{
    const uint8_t *src[MM_ROWS];
    tile_block_rows(src, Wq, row_bytes, nr);
    int t = T >= 4 ? 4 : T >= 2 ? 2 : 1;
    /* constant format and token count: one specialised loop each */
    if (type == LAM_QW_Q4_1) {
        if (t == 4)
            tile512_blocks(y, x, src, 1, buf, bias, I, O, o, nr, 4);
        else if (t == 2)
            tile512_blocks(y, x, src, 1, buf, bias, I, O, o, nr, 2);
        else
            tile512_blocks(y, x, src, 1, buf, bias, I, O, o, nr, 1);
    } else if (t == 4)
        tile512_blocks(y, x, src, 0, buf, bias, I, O, o, nr, 4);
    else if (t == 2)
        tile512_blocks(y, x, src, 0, buf, bias, I, O, o, nr, 2);
    else
        tile512_blocks(y, x, src, 0, buf, bias, I, O, o, nr, 1);
    if (t < T)
        lam_matmul_rows_avx512(y + (size_t)t * O + o, x + (size_t)t * I, buf, bias ? bias + o : NULL, T - t, I, O, 0,
                               nr);
}

/* e^x: x = n ln 2 + r (ln 2 in two parts, each step one FMA), |r| <=
 * ln 2 / 2, e^r by its Taylor series to degree 7 (truncation 6e-9
 * relative), times 2^n. x is first clamped to [-104, 89], outside which
 * e^x is 0 or +inf in f32; NaN stays NaN (max/min return their second
 * operand when one is NaN). */
#define EXP_LO -104.0f
#define EXP_HI 89.0f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693145751953125f
#define EXP_LN2_LO 1.42860682030941723e-6f
#define EXP_C2 (1.0f / 2)
#define EXP_C3 (1.0f / 6)
#define EXP_C4 (1.0f / 24)
#define EXP_C5 (1.0f / 120)
#define EXP_C6 (1.0f / 720)
#define EXP_C7 (1.0f / 5040)

I512 __m512 exp512(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), _mm512_max_ps(_mm512_set1_ps(EXP_LO), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(EXP_C7), r, _mm512_set1_ps(EXP_C6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

T512 void lam_swiglu_avx512(float *g, const float *u, size_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 mk = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 gv = _mm512_maskz_loadu_ps(mk, g + i), uv = _mm512_maskz_loadu_ps(mk, u + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        _mm512_mask_storeu_ps(g + i, mk, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), uv));
    }
}

/* ---- AVX2 --------------------------------------------------------------- */

/* As exp512; 2^n, n in [-150, 129], is applied as 2^(n/2) * 2^(n - n/2),
 * both normal, so overflow and underflow round as scaling once would. */
I256 __m256 exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), _mm256_max_ps(_mm256_set1_ps(EXP_LO), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(EXP_C7), r, _mm256_set1_ps(EXP_C6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* NaN converts to INT_MIN: its scale factors are garbage, p stays NaN */
    __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

T256 void lam_swiglu_avx2(float *g, const float *u, size_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i), uv = _mm256_loadu_ps(u + i);
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), uv));
    }
    if (i < n) {
        float gt[8] = {0}, ut[8] = {0};
        memcpy(gt, g + i, (n - i) * sizeof *g);
        memcpy(ut, u + i, (n - i) * sizeof *u);
        lam_swiglu_avx2(gt, ut, 8);
        memcpy(g + i, gt, (n - i) * sizeof *g);
    }
}

T256 void lam_dequant_qw_avx2(float *dst, const uint8_t *src, int type, int n)
{
    for (int b = 0; b < n / 32; b++, dst += 32) {
        __builtin_prefetch(src + QW_PREFETCH_AHEAD);
        uint16_t h[2];
        memcpy(h, src, sizeof h);
        __m256 d = _mm256_set1_ps(_cvtsh_ss(h[0]));
        if (type == LAM_QW_Q4_1) {
            __m256 m = _mm256_set1_ps(_cvtsh_ss(h[1]));
            __m128i qs = _mm_loadu_si128((const __m128i *)(src + 4));
            __m128i lo = _mm_and_si128(qs, _mm_set1_epi8(0xf)), hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0xf));
            __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
            for (int k = 0; k < 4; k++) {
                __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part[k]));
                _mm256_storeu_ps(dst + 8 * k, _mm256_add_ps(_mm256_mul_ps(v, d), m));
            }
            src += 20;
        } else {
            for (int k = 0; k < 4; k++) {
                __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(src + 2 + 8 * k))));
                _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(v, d));
            }
            src += 34;
        }
    }
}

I256 float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

I256 void tile256(float *y, const float *x, const float *const *w, const float *const *pn, const float *bias, int I,
                  int O, int o, int nr, int t, const int NT)
{
    __m256 acc[MM_ROWS][2];
    const int ib = I & ~7;
#pragma GCC unroll 4
    for (int r = 0; r < MM_ROWS; r++)
#pragma GCC unroll 2
        for (int j = 0; j < NT; j++)
            acc[r][j] = _mm256_setzero_ps();
    for (int i = 0; i < ib; i += 8) {
        __m256 wv[MM_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < MM_ROWS; r++)
            wv[r] = _mm256_loadu_ps(w[r] + i);
        if (pn && !(i & 8))
#pragma GCC unroll 4
            for (int r = 0; r < MM_ROWS; r++)
                _mm_prefetch((const char *)(pn[r] + i), _MM_HINT_T0);
#pragma GCC unroll 2
        for (int j = 0; j < NT; j++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)(t + j) * I + i);
#pragma GCC unroll 4
            for (int r = 0; r < MM_ROWS; r++)
                acc[r][j] = _mm256_fmadd_ps(wv[r], xv, acc[r][j]);
        }
    }
    if (ib < I) {
        __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(I - ib), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 wv[MM_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < MM_ROWS; r++)
            wv[r] = _mm256_maskload_ps(w[r] + ib, mk);
#pragma GCC unroll 2
        for (int j = 0; j < NT; j++) {
            __m256 xv = _mm256_maskload_ps(x + (size_t)(t + j) * I + ib, mk);
#pragma GCC unroll 4
            for (int r = 0; r < MM_ROWS; r++)
                acc[r][j] = _mm256_fmadd_ps(wv[r], xv, acc[r][j]);
        }
    }
#pragma GCC unroll 2
    for (int j = 0; j < NT; j++)
#pragma GCC unroll 4
        for (int r = 0; r < MM_ROWS; r++)
            if (r < nr)
                y[(size_t)(t + j) * O + o + r] = hsum256(acc[r][j]) + (bias ? bias[o + r] : 0.0f);
}

T256 void lam_matmul_rows_avx2(float *y, const float *x, const float *W, const float *bias, int T, int I, int O,
                               int o0, int o1)
{
    for (int tc = 0; tc < T; tc += MM_TCHUNK) {
        int te = T - tc < MM_TCHUNK ? T : tc + MM_TCHUNK;
        for (int o = o0; o < o1; o += MM_ROWS) {
            const float *w[MM_ROWS], *pn[MM_ROWS];
            tile_rows(w, pn, W, I, o, o1, O);
            int nr = o1 - o < MM_ROWS ? o1 - o : MM_ROWS, t = tc;
            const float *const *p = tc == 0 ? pn : NULL;
            for (; t + 2 <= te; t += 2, p = NULL)
                tile256(y, x, w, p, bias, I, O, o, nr, t, 2);
            if (t < te)
                tile256(y, x, w, p, bias, I, O, o, nr, t, 1);
        }
    }
}

/* As tile512_blocks with 8-float vectors: a block's 32 weights are four
 * vectors per row, too many registers for four rows at once, so each row's
 * d and m wait in memory for a broadcast load and the vectors are expanded
 * one eighth of a block at a time. Q4_1: nibble · d is exact, so one FMA
 * rounds as common/dequant.c's product and sum do. */
I256 void tile256_blocks(float *y, const float *x, const uint8_t *const *src, const int q41, float *buf,
                         const float *bias, int I, int O, int o, int nr, const int NT)
{
    __m256 acc[MM_ROWS][2];
    const size_t bb = q41 ? 20 : 34;
#pragma GCC unroll 4
    for (int r = 0; r < MM_ROWS; r++)
#pragma GCC unroll 2
        for (int j = 0; j < NT; j++)
            acc[r][j] = _mm256_setzero_ps();
    for (int i = 0, b = 0; i < I; i += 32, b++) {
        float d[MM_ROWS], m[MM_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < MM_ROWS; r++) {
            const uint8_t *s = src[r] + (size_t)b * bb;
            uint16_t h[2];
            __builtin_prefetch(s + QW_PREFETCH_AHEAD);
            memcpy(h, s, sizeof h);
            d[r] = _cvtsh_ss(h[0]);
            m[r] = q41 ? _cvtsh_ss(h[1]) : 0.0f;
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m256 wv[MM_ROWS];
#pragma GCC unroll 4
            for (int r = 0; r < MM_ROWS; r++) {
                const uint8_t *s = src[r] + (size_t)b * bb;
                __m256 v;
                if (q41) {
                    __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(s + 4 + 8 * (k & 1))));
                    q = k < 2 ? _mm256_and_si256(q, _mm256_set1_epi32(0xf)) : _mm256_srli_epi32(q, 4);
                    v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_broadcast_ss(&d[r]), _mm256_broadcast_ss(&m[r]));
                } else {
                    __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(s + 2 + 8 * k)));
                    v = _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_broadcast_ss(&d[r]));
                }
                wv[r] = v;
                _mm256_storeu_ps(buf + (size_t)r * I + i + 8 * k, v);
            }
#pragma GCC unroll 2
            for (int j = 0; j < NT; j++) {
                __m256 xv = _mm256_loadu_ps(x + (size_t)j * I + i + 8 * k);
#pragma GCC unroll 4
                for (int r = 0; r < MM_ROWS; r++)
                    acc[r][j] = _mm256_fmadd_ps(wv[r], xv, acc[r][j]);
            }
        }
    }
#pragma GCC unroll 2
    for (int j = 0; j < NT; j++)
#pragma GCC unroll 4
        for (int r = 0; r < MM_ROWS; r++)
            if (r < nr)
                y[(size_t)j * O + o + r] = hsum256(acc[r][j]) + (bias ? bias[o + r] : 0.0f);
}

T256 void lam_matmul_qw_tile_avx2(float *y, const float *x, const uint8_t *Wq, size_t row_bytes, int type,
                                  const float *bias, int T, int I, int O, int o, int nr, float *buf)
{
    const uint8_t *src[MM_ROWS];
    tile_block_rows(src, Wq, row_bytes, nr);
    int t = T >= 2 ? 2 : 1;
    if (type == LAM_QW_Q4_1) {
        if (t == 2)
            tile256_blocks(y, x, src, 1, buf, bias, I, O, o, nr, 2);
        else
            tile256_blocks(y, x, src, 1, buf, bias, I, O, o, nr, 1);
    } else if (t == 2)
        tile256_blocks(y, x, src, 0, buf, bias, I, O, o, nr, 2);
    else
        tile256_blocks(y, x, src, 0, buf, bias, I, O, o, nr, 1);
    if (t < T)
        lam_matmul_rows_avx2(y + (size_t)t * O + o, x + (size_t)t * I, buf, bias ? bias + o : NULL, T - t, I, O, 0, nr);
}

#endif /* LAM_ATTN_HAVE_X86 */
