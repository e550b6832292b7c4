/* Private to kernels/cpu/attn*.c, convert.c and their tests: the per-ISA
 * building blocks of lam_attn_paged and lam_convert.
 *
 * lam_attn_paged (attn.c) splits the work into items: one sequence, one or
 * more KV heads and up to ATTN_MAX_ROWS query rows (tokens x query heads).
 * For each block of up to ATTN_BLOCK keys and each KV head of the item, the
 * driver calls two kernels of the chosen ISA:
 *   qk_softmax  scores of every row against every key of the block, read
 *               from the cache's K tiles (LAM_ATTN_K_TILED: a vector of 16
 *               keys per dim), the causal mask, and the online-softmax
 *               update (running max m, running sums l, accumulator rescale
 *               factor alpha); leaves the probabilities in P
 *   pv          acc[r] = acc[r] * alpha[r] + P[r] . V, reading the V rows
 *               straight from the cache
 * so each K/V element is read from the cache and converted once per item
 * and block of rows. Q rows come scaled by the score scale times log2 e,
 * so scores are in base 2 and the softmax takes 2^x; hdp is
 * head_dim rounded up to 16 (Q rows, zero padded), hda to 64 (acc rows). */
#ifndef LAM_KERNELS_CPU_ATTN_INTERNAL_H
#define LAM_KERNELS_CPU_ATTN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define ATTN_BLOCK 64          /* keys per block (P row stride) */
#define ATTN_MAX_ROWS 64       /* query rows per item */
#define ATTN_BUF_FLOATS 4096   /* each of the Q and acc stack buffers */
#define ATTN_L_LANES 16        /* partial softmax sums kept per row */
/* Larger head_dim takes a one-row-at-a-time path without buffers. */
#define ATTN_MAX_HEAD_DIM ATTN_BUF_FLOATS

/* Rows the driver wants in cache for the next step, prefetched a line or
 * a few at a time from inside the kernels' loops: a burst of them would
 * fill the core's miss buffers and stall the computation behind it. */
typedef struct attn_prefetch {
    const uint8_t *const *rows; /* row bases */
    size_t off, row_bytes;      /* prefetch rows[j] + off, row_bytes long */
    int n, next;                /* rows; the next one to prefetch */
    size_t at;                  /* bytes of rows[next] already prefetched */
} attn_prefetch_t;

/* The next k cache lines. */
static inline void attn_prefetch_lines(attn_prefetch_t *pf, int k)
{
    for (; k > 0 && pf->next < pf->n; k--) {
        __builtin_prefetch(pf->rows[pf->next] + pf->off + pf->at);
        pf->at += 64;
        if (pf->at >= pf->row_bytes) {
            pf->at = 0;
            pf->next++;
        }
    }
}

/* Lines not prefetched yet. */
static inline size_t attn_prefetch_left(const attn_prefetch_t *pf)
{
    if (pf->next >= pf->n)
        return 0;
    size_t per_row = (pf->row_bytes + 63) / 64;
    return (size_t)(pf->n - pf->next) * per_row - pf->at / 64;
}

/* The rest of the current row and k - 1 more (k rows when at a row start). */
static inline void attn_prefetch_some(attn_prefetch_t *pf, int k)
{
    for (; k > 0 && pf->next < pf->n; k--)
        do
            attn_prefetch_lines(pf, 1);
        while (pf->at);
}

typedef struct attn_isa {
    const char *name;
    /* Rows r < R (Q[r] hdp floats, scaled): s_j = Q[r].K[j] for j < lim[r],
     * masked beyond, K[j] being element j % 16 of tile kt[j / 16] (hd
     * vectors of 16 elements of dtype, j < nb); m[r] = max(m[r], max s),
     * alpha[r] = 2^(m_old - m_new), l[r][..] = l[r][..] * alpha[r] +
     * partial sums of p (ATTN_L_LANES of them, summed by the caller at the
     * end), P[r][j] = 2^(s_j - m_new) for j < round16(nb), 0 where masked.
     * lim[r] = 0: alpha[r] = 1. Keys past lim may hold anything, NaN
     * included. Prefetches all of pf along the way. */
    void (*qk_softmax)(float *P, const float *Q, const uint8_t *const *kt, int dtype, int hd, const int *lim, int R,
                       int nb, int hdp, float *m, float *l, float *alpha, attn_prefetch_t *pf);
    /* acc[r][0..hda) = acc[r] * alpha[r] + sum_{j < lim[r]} P[r][j] V_j,
     * V_j = the row at vrow[j] + voff (hd elements of dtype, zero beyond).
     * Prefetches all of pf along the way. */
    void (*pv)(float *acc, const float *P, const uint8_t *const *vrow, size_t voff, int dtype, int hd, int hda,
               const float *alpha, const int *lim, int R, attn_prefetch_t *pf);
    /* n elements between dtypes (lam_convert) */
    void (*f32_to_f16)(uint16_t *dst, const float *src, size_t n);
    void (*f16_to_f32)(float *dst, const uint16_t *src, size_t n);
    void (*f32_to_bf16)(uint16_t *dst, const float *src, size_t n);
    void (*bf16_to_f32)(float *dst, const uint16_t *src, size_t n);
    /* y[t][o] = x[t].W[o] + bias[o] (bias may be NULL) for rows o0 <= o < o1
     * and every t < T (lam_matmul_f32's row range); each output's summation
     * order depends on I alone. */
    void (*matmul_rows)(float *y, const float *x, const float *W, const float *bias, int T, int I, int O, int o0,
                        int o1);
    /* lam_dequant_qw (type is an lam_qw_type_t); prefetches the blocks
     * QW_PREFETCH_AHEAD bytes on */
    void (*dequant_qw)(float *dst, const uint8_t *src, int type, int n);
    /* Optional (NULL: dequant_qw, then matmul_rows): rows [o, o + nr),
     * nr <= 4, of lam_matmul_q, Wq at row o, I a multiple of 32; buf
     * (8·I floats) gets the expanded rows. Expands each block while it
     * multiplies the first tokens, so the expansion overlaps the
     * arithmetic instead of preceding it; the same bits. */
    void (*matmul_qw_tile)(float *y, const float *x, const uint8_t *Wq, size_t row_bytes, int type,
                           const float *bias, int T, int I, int O, int o, int nr, float *buf);
    /* lam_swiglu_f32: g[i] = g[i] / (1 + e^-g[i]) * u[i]; the SIMD ISAs
     * with their own e^x (the whole op within 2.4 ulp of exact, measured;
     * the scalar ISA's libm expf gives 2.3) */
    void (*swiglu)(float *g, const float *u, size_t n);
} attn_isa_t;

extern const attn_isa_t lam_attn_isa_scalar;
#if defined(__x86_64__)
extern const attn_isa_t lam_attn_isa_avx2;
extern const attn_isa_t lam_attn_isa_avx512;
#define LAM_ATTN_HAVE_X86 1
#endif

/* The ISA in use (chosen on first call from the CPU and LAMINA_ATTN_ISA). */
const attn_isa_t *lam_attn_isa_get(void);

/* Forces "avx512", "avx2" or "scalar" for later calls (tests, benchmarks).
 * Returns 0, or -1 if the CPU lacks it or the name is unknown (unchanged). */
int lam_attn_set_isa(const char *name);

/* Conversion loops (convert.c), bit-identical to common/dtype.h. */
void lam_cvt_f32_to_f16_scalar(uint16_t *dst, const float *src, size_t n);
void lam_cvt_f16_to_f32_scalar(float *dst, const uint16_t *src, size_t n);
void lam_cvt_f32_to_bf16_scalar(uint16_t *dst, const float *src, size_t n);
void lam_cvt_bf16_to_f32_scalar(float *dst, const uint16_t *src, size_t n);

/* Matrix product row ranges and weight block expansion (ops.c, matmul_simd.c). */
void lam_matmul_rows_scalar(float *y, const float *x, const float *W, const float *bias, int T, int I, int O, int o0,
                            int o1);
/* How far ahead of the block it expands lam_dequant_qw prefetches, in
 * bytes. The hardware prefetcher alone left the expansion waiting on
 * memory: one core over SmolLM2's 30 layers of Q4_1 blocks took 12 -> 7 ms
 * at 1 token, 18 -> 13 at 8 and 28 -> 22.5 at 16 with it (medians of 5;
 * 2 KiB ahead was slower at 1 token, 8 KiB no better). Rows are read in
 * order, so the distance runs on into the next tile's rows. */
#define QW_PREFETCH_AHEAD 4096

void lam_dequant_qw_scalar(float *dst, const uint8_t *src, int type, int n);
void lam_swiglu_scalar(float *g, const float *u, size_t n);
#ifdef LAM_ATTN_HAVE_X86
void lam_swiglu_avx2(float *g, const float *u, size_t n);
void lam_swiglu_avx512(float *g, const float *u, size_t n);
void lam_dequant_qw_avx2(float *dst, const uint8_t *src, int type, int n);
void lam_dequant_qw_avx512(float *dst, const uint8_t *src, int type, int n);
void lam_matmul_qw_tile_avx2(float *y, const float *x, const uint8_t *Wq, size_t row_bytes, int type,
                             const float *bias, int T, int I, int O, int o, int nr, float *buf);
void lam_matmul_qw_tile_avx512(float *y, const float *x, const uint8_t *Wq, size_t row_bytes, int type,
                               const float *bias, int T, int I, int O, int o, int nr, float *buf);
void lam_matmul_rows_avx2(float *y, const float *x, const float *W, const float *bias, int T, int I, int O, int o0,
                          int o1);
void lam_matmul_rows_avx512(float *y, const float *x, const float *W, const float *bias, int T, int I, int O, int o0,
                            int o1);
#endif
#ifdef LAM_ATTN_HAVE_X86
void lam_cvt_f32_to_f16_avx2(uint16_t *dst, const float *src, size_t n);
void lam_cvt_f16_to_f32_avx2(float *dst, const uint16_t *src, size_t n);
void lam_cvt_f32_to_bf16_avx2(uint16_t *dst, const float *src, size_t n);
void lam_cvt_bf16_to_f32_avx2(float *dst, const uint16_t *src, size_t n);
void lam_cvt_f32_to_f16_avx512(uint16_t *dst, const float *src, size_t n);
void lam_cvt_f16_to_f32_avx512(float *dst, const uint16_t *src, size_t n);
void lam_cvt_f32_to_bf16_avx512(uint16_t *dst, const float *src, size_t n);
void lam_cvt_bf16_to_f32_avx512(float *dst, const uint16_t *src, size_t n);
#endif

#endif
