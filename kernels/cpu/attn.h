/* Attention over a paged KV cache, on the CPU, and dtype conversion.
 *
 * The cache is a set of pages of page_tokens tokens. For one sequence, key
 * position j lives in page pages[j / page_tokens] at row j % page_tokens.
 * Inside a page, KV head h's values are a [page_tokens][head_dim] block at
 * byte offset v_off + h * head_stride (elements of kv_dtype); its keys a
 * block of the same size at k_off + h * head_stride, in one of two layouts
 * (k_layout):
 *   LAM_ATTN_K_ROWS   [page_tokens][head_dim], like the values;
 *   LAM_ATTN_K_TILED  tiles of LAM_ATTN_K_TILE tokens, each [head_dim][16]:
 *                     element d of 16 consecutive keys side by side, so the
 *                     SIMD lanes of a score vector are keys and no lane
 *                     reduction is needed. page_tokens must be a multiple
 *                     of 16.
 * lam_attn_k_index gives an element's place in either. The attention node's
 * KV cache (attention_node/kv.h) lays pages out this way, tiled on CPU nodes;
 * these kernels only read.
 *
 * Queries come as f32 rows [n_tok][n_kv_heads * group][head_dim]: the rows of
 * sequence i are row[i] .. row[i+1]-1, and its row r is the token at position
 * pos[i] + (r - row[i]), which attends causally to keys 0 .. that position.
 * The keys and values of every query token must already be in the pages.
 * Query head g*group .. g*group+group-1 share KV head g (GQA). */
#ifndef LAM_KERNELS_CPU_ATTN_H
#define LAM_KERNELS_CPU_ATTN_H

#include <stddef.h>
#include <stdint.h>

enum { LAM_ATTN_K_ROWS = 0, LAM_ATTN_K_TILED = 1 };
#define LAM_ATTN_K_TILE 16

/* Element index of key j (row j of its page) and dim d in a K block. */
static inline size_t lam_attn_k_index(int k_layout, int head_dim, int j, int d)
{
    if (k_layout == LAM_ATTN_K_TILED)
        return ((size_t)(j / LAM_ATTN_K_TILE) * (size_t)head_dim + (size_t)d) * LAM_ATTN_K_TILE +
               (size_t)(j % LAM_ATTN_K_TILE);
    return (size_t)j * (size_t)head_dim + (size_t)d;
}

typedef struct lam_attn_args {
    int n_seq;
    const int32_t *row;            /* [n_seq + 1], row[0] = 0, increasing */
    const int32_t *pos;            /* [n_seq] */
    uint8_t *const *const *pages;  /* [n_seq] -> page pointers of that sequence */
    size_t k_off, v_off;           /* bytes from page start to KV head 0's K / V block */
    size_t head_stride;            /* bytes between KV heads' blocks */
    int page_tokens;
    int k_layout;                  /* LAM_ATTN_K_ROWS (0) or LAM_ATTN_K_TILED */
    int n_kv_heads;
    int group;                     /* query heads per KV head */
    int head_dim;
    int kv_dtype;                  /* lam_dtype_t */
    float scale;                   /* score scale, usually 1/sqrt(head_dim) */
    const float *q;                /* [n_tok][n_kv_heads*group][head_dim] */
    float *out;                    /* [n_tok][n_kv_heads*group][head_dim] */
} lam_attn_args_t;

/* Plain C oracle: one query row at a time, scores for all keys, then a
 * two-pass softmax and the weighted sum, all in f32 arithmetic (no f64).
 * scratch holds at least (max position + 1) floats. */
void lam_attn_paged_ref(const lam_attn_args_t *a, float *scratch);

/* Fast path: OpenMP over (sequence, KV head, block of query rows), SIMD
 * inner loops (AVX-512 or AVX2 with F16C, chosen once at run time; scalar
 * otherwise), online softmax in f32, each K/V row read once per GQA group
 * and block of query rows. No allocation. It needs the tiled K layout (and
 * head_dim <= 4096); anything else takes a correct but slow scalar path,
 * one query row at a time. */
void lam_attn_paged(const lam_attn_args_t *a);

/* Which instruction set lam_attn_paged uses: "avx512", "avx2" or "scalar".
 * LAMINA_ATTN_ISA=avx2|scalar forces a narrower one (tests, benchmarks). */
const char *lam_attn_isa(void);

/* dst[i] = src[i] converted between lam_dtype_t element types (round to
 * nearest even, as common/dtype.h). dst and src must not overlap unless
 * the types are equal. */
void lam_convert(void *dst, int dst_dtype, const void *src, int src_dtype, size_t n);

#endif
