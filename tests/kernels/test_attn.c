/* lam_attn_paged against lam_attn_paged_ref, and lam_convert against the
 * scalar helpers of common/dtype.h, for every ISA this CPU has (and
 * LAMINA_ATTN_ISA allows). Fresh random inputs each run (the seed is
 * printed; LAMINA_TEST_SEED=N repeats one), caches of separately allocated
 * pages in shuffled order with guard bytes around each page and NaN in
 * every byte the kernel must not use, NaN-filled guarded outputs.
 * LAMINA_TEST_QUICK=1 shrinks the batches (sanitizer builds). */
#include "common/dtype.h"
#include "kernels/cpu/attn.h"
#include "kernels/cpu/attn_internal.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GUARD_BYTES 64
#define GUARD_BYTE 0xa5
#define OUT_GUARD 16
#define OUT_GUARD_VAL 1234.5f

static uint64_t g_rng;
static unsigned g_seed;
static bool g_quick;

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static int irand(int n) { return (int)(rnd() % (uint64_t)n); }
static float frand(void) { return (float)(rnd() >> 40) / (float)(1 << 24) * 2.0f - 1.0f; }

/* ---- the ISAs to test --------------------------------------------------- */

static const char *const g_isa_names[] = {"scalar", "avx2", "avx512"};
static int g_n_isas; /* the first g_n_isas names: up to the one in use at start */

static void find_isas(void)
{
    const char *cur = lam_attn_isa();
    for (int i = 0; i < 3; i++)
        if (!strcmp(cur, g_isa_names[i]))
            g_n_isas = i + 1;
}

/* ---- a random paged cache ---------------------------------------------- */

typedef struct cache {
    lam_attn_args_t a;
    uint8_t **blocks;      /* every page's allocation (guards included) */
    size_t n_blocks, page_bytes;
    uint8_t ***seq_pages;  /* [n_seq][pages] */
    int32_t *row, *pos;
    float *q, *out, *ref, *scratch;
    size_t n_out;
    float vmax;            /* max |v| */
} cache_t;

/* n_tok[s] query tokens of sequence s start at position pos[s]. Key values
 * are kscale * U(-1,1), values U(-1,1), queries qscale * U(-1,1). K is tiled
 * when pt allows (the SIMD path), else in rows (the scalar fallback). */
static void cache_init(cache_t *c, int n_seq, const int *n_tok, const int *pos, int pt, int H, int G, int hd,
                       int dtype, float qscale, float kscale)
{
    memset(c, 0, sizeof *c);
    size_t esz = lam_dtype_size((unsigned)dtype);
    int layout = pt % LAM_ATTN_K_TILE ? LAM_ATTN_K_ROWS : LAM_ATTN_K_TILED;
    size_t head_stride = (size_t)pt * hd * esz + 4 * (size_t)(1 + irand(8)); /* padding between heads */
    size_t k_off = 4 * (size_t)irand(16), v_off = k_off + H * head_stride + 4 * (size_t)irand(16);
    c->page_bytes = v_off + H * head_stride + 4 * (size_t)irand(4);
    c->row = malloc((n_seq + 1) * sizeof *c->row);
    c->pos = malloc(n_seq * sizeof *c->pos);
    c->seq_pages = malloc(n_seq * sizeof *c->seq_pages);
    c->row[0] = 0;
    int max_pos = 0;
    for (int s = 0; s < n_seq; s++) {
        c->row[s + 1] = c->row[s] + n_tok[s];
        c->pos[s] = pos[s];
        int n_pages = (pos[s] + n_tok[s] + pt - 1) / pt;
        c->n_blocks += n_pages;
        c->seq_pages[s] = malloc((n_pages + 1) * sizeof **c->seq_pages);
        if (pos[s] + n_tok[s] > max_pos)
            max_pos = pos[s] + n_tok[s];
    }
    c->blocks = malloc(c->n_blocks * sizeof *c->blocks);
    for (size_t b = 0; b < c->n_blocks; b++) {
        c->blocks[b] = malloc(c->page_bytes + 2 * GUARD_BYTES);
        memset(c->blocks[b], GUARD_BYTE, GUARD_BYTES);
        memset(c->blocks[b] + GUARD_BYTES, 0xff, c->page_bytes); /* NaN in all three types */
        memset(c->blocks[b] + GUARD_BYTES + c->page_bytes, GUARD_BYTE, GUARD_BYTES);
    }
    /* hand pages out in a shuffled order */
    size_t *perm = malloc(c->n_blocks * sizeof *perm);
    for (size_t b = 0; b < c->n_blocks; b++)
        perm[b] = b;
    for (size_t b = c->n_blocks; b > 1; b--) {
        size_t o = rnd() % b, t = perm[b - 1];
        perm[b - 1] = perm[o];
        perm[o] = t;
    }
    size_t next = 0;
    c->vmax = 0.0f;
    for (int s = 0; s < n_seq; s++) {
        int n_keys = pos[s] + n_tok[s];
        for (int pg = 0; pg * pt < n_keys; pg++)
            c->seq_pages[s][pg] = c->blocks[perm[next++]] + GUARD_BYTES;
        for (int j = 0; j < n_keys; j++)
            for (int h = 0; h < H; h++) {
                uint8_t *blk = c->seq_pages[s][j / pt] + h * head_stride;
                uint8_t *vrow = blk + v_off + (size_t)(j % pt) * hd * esz;
                for (int d = 0; d < hd; d++) {
                    lam_dtype_store(blk + k_off + lam_attn_k_index(layout, hd, j % pt, d) * esz, dtype,
                                    kscale * frand());
                    lam_dtype_store(vrow + d * esz, dtype, frand());
                    float v = fabsf(lam_dtype_load(vrow + d * esz, dtype));
                    c->vmax = v > c->vmax ? v : c->vmax;
                }
            }
    }
    free(perm);
    int n_heads = H * G, T = c->row[n_seq];
    c->n_out = (size_t)T * n_heads * hd;
    c->q = malloc(c->n_out * sizeof *c->q);
    for (size_t i = 0; i < c->n_out; i++)
        c->q[i] = qscale * frand();
    c->out = malloc((c->n_out + 2 * OUT_GUARD) * sizeof *c->out);
    for (size_t i = 0; i < c->n_out + 2 * OUT_GUARD; i++)
        c->out[i] = i < OUT_GUARD || i >= c->n_out + OUT_GUARD ? OUT_GUARD_VAL : NAN;
    c->out += OUT_GUARD;
    c->ref = malloc(c->n_out * sizeof *c->ref);
    c->scratch = malloc((max_pos + 1) * sizeof *c->scratch);
    c->a = (lam_attn_args_t){.n_seq = n_seq, .row = c->row, .pos = c->pos,
                             .pages = (uint8_t *const *const *)c->seq_pages, .k_off = k_off, .v_off = v_off,
                             .head_stride = head_stride, .page_tokens = pt, .k_layout = layout,
                             .n_kv_heads = H, .group = G,
                             .head_dim = hd, .kv_dtype = dtype, .scale = 1.0f / sqrtf((float)hd),
                             .q = c->q, .out = c->out};
}

static bool cache_guards_ok(const cache_t *c)
{
    for (size_t b = 0; b < c->n_blocks; b++)
        for (int i = 0; i < GUARD_BYTES; i++)
            if (c->blocks[b][i] != GUARD_BYTE || c->blocks[b][GUARD_BYTES + c->page_bytes + i] != GUARD_BYTE)
                return false;
    for (int i = 1; i <= OUT_GUARD; i++)
        if (c->out[-i] != OUT_GUARD_VAL || c->out[c->n_out + i - 1] != OUT_GUARD_VAL)
            return false;
    return true;
}

static void cache_free(cache_t *c)
{
    for (size_t b = 0; b < c->n_blocks; b++)
        free(c->blocks[b]);
    for (int s = 0; s < c->a.n_seq; s++)
        free(c->seq_pages[s]);
    free(c->blocks);
    free(c->seq_pages);
    free(c->row);
    free(c->pos);
    free(c->q);
    free(c->out - OUT_GUARD);
    free(c->ref);
    free(c->scratch);
}

/* Runs the reference once and the fast kernel under every ISA; returns
 * false (after printing the case) on any mismatch. */
static bool check_case(cache_t *c, const char *what)
{
    lam_attn_paged_ref(&c->a, c->scratch);
    memcpy(c->ref, c->out, c->n_out * sizeof *c->ref);
    double tol = 1e-4 * (1.0 + c->vmax);
    bool ok = true;
    for (int i = 0; i < g_n_isas; i++) {
        lam_attn_set_isa(g_isa_names[i]);
        for (size_t e = 0; e < c->n_out; e++)
            c->out[e] = NAN;
        lam_attn_paged(&c->a);
        double err = 0.0;
        size_t worst = 0, bad = 0;
        for (size_t e = 0; e < c->n_out; e++) {
            if (!isfinite(c->out[e]) || !isfinite(c->ref[e])) {
                bad++;
                continue;
            }
            double d = fabs((double)c->out[e] - c->ref[e]);
            if (d > err) {
                err = d;
                worst = e;
            }
        }
        bool guards = cache_guards_ok(c);
        if (bad || err > tol || !guards) {
            const lam_attn_args_t *a = &c->a;
            printf("\n  FAIL %s isa=%s seed=%u: n_seq=%d tokens=%d H=%d G=%d hd=%d %s pt=%d K%s: max err %.3g "
                   "(tol %.3g) at %zu (%g vs %g), %zu non-finite, guards %s\n",
                   what, g_isa_names[i], g_seed, a->n_seq, a->row[a->n_seq], a->n_kv_heads, a->group, a->head_dim,
                   lam_dtype_name((unsigned)a->kv_dtype), a->page_tokens, a->k_layout ? " tiled" : " rows", err, tol, worst, c->out[worst],
                   c->ref[worst], bad, guards ? "ok" : "BROKEN");
            ok = false;
        }
    }
    lam_attn_set_isa(g_isa_names[g_n_isas - 1]);
    return ok;
}

/* A context length for a page size: on, just off and between boundaries. */
static int pick_ctx(int pt, int max_ctx)
{
    int k = 1 + irand(max_ctx / pt > 1 ? max_ctx / pt : 1);
    switch (irand(5)) {
    case 0: return k * pt;
    case 1: return k * pt + 1;
    case 2: return k * pt > 1 ? k * pt - 1 : 1;
    case 3: return 1 + irand(pt);
    default: return 1 + irand(max_ctx);
    }
}

static const int g_dtypes[] = {LAM_DT_F32, LAM_DT_F16, LAM_DT_BF16};
static const int g_groups[] = {1, 3, 4, 8};
static const int g_odd_hd[] = {17, 40, 72, 1, 8};
static const int g_page_tokens[] = {7, 16, 32}; /* K in rows (scalar path), tiled, tiled */

/* Decode: one token per sequence, batches of 1, 3 and 75. */
static void test_decode(void)
{
    int batches[] = {1, 3, g_quick ? 20 : 75}, cnt = 0;
    for (int di = 0; di < 3; di++)
        for (int hi = 0; hi < 3; hi++)
            for (int gi = 0; gi < 4; gi++, cnt++) {
                int hd = hi == 0 ? 64 : hi == 1 ? 128 : g_odd_hd[irand(5)];
                int n_seq = batches[cnt % 3], pt = g_page_tokens[irand(3)], H = 1 + irand(4);
                int *n_tok = malloc(n_seq * sizeof *n_tok), *pos = malloc(n_seq * sizeof *pos);
                for (int s = 0; s < n_seq; s++) {
                    n_tok[s] = 1;
                    pos[s] = pick_ctx(pt, g_quick ? 100 : 300) - 1;
                }
                cache_t c;
                cache_init(&c, n_seq, n_tok, pos, pt, H, g_groups[gi], hd, g_dtypes[di], 2.0f, 2.0f);
                CU_ASSERT(check_case(&c, "decode"));
                cache_free(&c);
                free(n_tok);
                free(pos);
            }
}

/* Prefill chunks of odd lengths from position 0 and later, mixed with
 * decode rows in one batch. */
static void test_prefill(void)
{
    static const int lens[] = {1, 5, 33, 130}, starts[] = {0, 77};
    for (int di = 0; di < 3; di++)
        for (int gi = 0; gi < 4; gi++) {
            int n_seq = 3 + irand(3), pt = g_page_tokens[irand(3)], H = 1 + irand(4);
            int hd = irand(3) == 0 ? g_odd_hd[irand(5)] : irand(2) ? 64 : 128;
            int *n_tok = malloc(n_seq * sizeof *n_tok), *pos = malloc(n_seq * sizeof *pos);
            for (int s = 0; s < n_seq; s++) {
                n_tok[s] = lens[(s + di + gi) % 4];
                if (g_quick && n_tok[s] > 40)
                    n_tok[s] = 40;
                pos[s] = s % 3 == 2 ? pick_ctx(pt, 200) : starts[(s + gi) % 2];
            }
            cache_t c;
            cache_init(&c, n_seq, n_tok, pos, pt, H, g_groups[gi], hd, g_dtypes[di], 2.0f, 2.0f);
            CU_ASSERT(check_case(&c, "prefill"));
            cache_free(&c);
            free(n_tok);
            free(pos);
        }
}

/* Scores up to ~+-100 (e^100 overflows f32): the online softmax must
 * subtract its running maximum and rescale as that maximum moves. */
static void test_large_scores(void)
{
    for (int di = 0; di < 3; di++) {
        int n_tok[2] = {1, 9}, pos[2] = {300, 150};
        cache_t c;
        /* q.k * scale up to ~ 10 * 10 * hd / sqrt(hd) / 3 ~ 270 for hd 64 */
        cache_init(&c, 2, n_tok, pos, 16, 2, 4, 64, g_dtypes[di], 10.0f, 10.0f);
        CU_ASSERT(check_case(&c, "large_scores"));
        cache_free(&c);
    }
}

/* head_dim beyond the blocked path's buffers, large ones (few rows per
 * item), and tiny ones. */
static void test_head_dims(void)
{
    int hds[] = {ATTN_MAX_HEAD_DIM + 3, 2, 3, 16, 24, 256, 300, 1000};
    for (size_t i = 0; i < sizeof hds / sizeof hds[0]; i++) {
        int n_tok[2] = {1, 3}, pos[2] = {70, 20};
        cache_t c;
        cache_init(&c, 2, n_tok, pos, 16, 2, 3, hds[i], g_dtypes[i % 3], 2.0f, 2.0f);
        CU_ASSERT(check_case(&c, "head_dim"));
        cache_free(&c);
    }
}

/* A NaN in a query shows in that row's output and nowhere else: no clamp
 * in the fast exp or max may hide it. */
static void test_nan_propagates(void)
{
    int n_tok[2] = {1, 2}, pos[2] = {40, 70};
    cache_t c;
    cache_init(&c, 2, n_tok, pos, 16, 2, 4, 64, LAM_DT_F16, 2.0f, 2.0f);
    int hd = 64;
    c.q[5] = NAN; /* token 0, query head 0 */
    for (int i = 0; i < g_n_isas; i++) {
        lam_attn_set_isa(g_isa_names[i]);
        lam_attn_paged(&c.a);
        bool nan_row = false, others_finite = true;
        for (size_t e = 0; e < c.n_out; e++) {
            if (e < (size_t)hd)
                nan_row |= isnan(c.out[e]);
            else
                others_finite &= isfinite(c.out[e]) != 0;
        }
        if (!nan_row || !others_finite)
            printf("\n  NaN query under isa=%s: row NaN %d, others finite %d\n", g_isa_names[i], nan_row,
                   others_finite);
        CU_ASSERT(nan_row && others_finite);
    }
    lam_attn_set_isa(g_isa_names[g_n_isas - 1]);
    cache_free(&c);
}

static void test_isa_names(void)
{
    CU_ASSERT(lam_attn_set_isa("scalar") == 0);
    CU_ASSERT_STRING_EQUAL(lam_attn_isa(), "scalar");
    CU_ASSERT(lam_attn_set_isa("sse9") == -1);
    CU_ASSERT_STRING_EQUAL(lam_attn_isa(), "scalar");
    lam_attn_set_isa(g_isa_names[g_n_isas - 1]);
    CU_ASSERT_STRING_EQUAL(lam_attn_isa(), g_isa_names[g_n_isas - 1]);
}

/* ---- conversions --------------------------------------------------------- */

/* f32 bit patterns that matter to f16/bf16 rounding, plus random ones */
static uint32_t f32_pattern(size_t i)
{
    static const uint32_t special[] = {0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000,
                                       0x7f800001, 0xff812345, 0x7fbfffff, 0x00000001, 0x807fffff, 0x33000000,
                                       0x33000001, 0x387fe000, 0x387ff000, 0x38800000, 0x477fe000, 0x477fefff,
                                       0x477ff000, 0x3f801000, 0x3f803000, 0x3f808000, 0x3f818000, 0x7f7fffff,
                                       0x477fffff, 0x47800000, 0xc77ff000, 0x3f800001};
    size_t ns = sizeof special / sizeof special[0];
    if (i < ns)
        return special[i];
    uint32_t r = (uint32_t)rnd();
    switch (i % 4) {
    case 0: return r;                                             /* anything */
    case 1: return (r & 0x80001fffu) | ((uint32_t)(100 + irand(60)) << 23) | (r & 0x7fe000u); /* f16 range */
    case 2: return (r & 0x8000ffffu) | (0x7f80u << 16) | 1;      /* NaN payloads */
    default: return (r & 0xffff8000u) | (irand(2) ? 0x8000u : 0x7fffu) | (r & 0x10000u); /* ties */
    }
}

static void test_convert_isa(void)
{
    enum { N = 70001 };
    float *f = malloc(N * 4), *f2 = malloc((N + 8) * 4);
    uint16_t *h = malloc(N * 2), *h2 = malloc((N + 16) * 2);
    for (int isa = 0; isa < g_n_isas; isa++) {
        lam_attn_set_isa(g_isa_names[isa]);
        bool ok = true;
        /* f32 -> f16 / bf16 on patterns, every length tail */
        for (size_t i = 0; i < N; i++) {
            uint32_t u = f32_pattern(i);
            memcpy(&f[i], &u, 4);
        }
        for (int dt = LAM_DT_F16; dt <= LAM_DT_BF16; dt++) {
            for (size_t len = 0; len < 40; len++) {
                for (int i = 0; i < 16; i++)
                    h2[len + i] = 0x5a5a;
                lam_convert(h2, dt, f + 7, LAM_DT_F32, len);
                for (size_t i = 0; i < len; i++)
                    ok &= h2[i] == (dt == LAM_DT_F16 ? lam_fp32_to_fp16(f[7 + i]) : lam_fp32_to_bf16(f[7 + i]));
                for (int i = 0; i < 16; i++)
                    ok &= h2[len + i] == 0x5a5a;
            }
            lam_convert(h2, dt, f, LAM_DT_F32, N);
            for (size_t i = 0; i < N; i++)
                if (h2[i] != (dt == LAM_DT_F16 ? lam_fp32_to_fp16(f[i]) : lam_fp32_to_bf16(f[i]))) {
                    if (ok)
                        printf("\n  %s f32 0x%08x -> %s 0x%04x\n", g_isa_names[isa], lam_fp32_to_bits(f[i]),
                               lam_dtype_name((unsigned)dt), h2[i]);
                    ok = false;
                }
        }
        /* f16 / bf16 -> f32: every 16-bit pattern */
        for (int dt = LAM_DT_F16; dt <= LAM_DT_BF16; dt++) {
            for (uint32_t i = 0; i < 65536; i++)
                h[i] = (uint16_t)i;
            for (int i = 0; i < 8; i++)
                f2[65536 + i] = OUT_GUARD_VAL;
            lam_convert(f2, LAM_DT_F32, h, dt, 65536);
            for (uint32_t i = 0; i < 65536; i++) {
                float want = dt == LAM_DT_F16 ? lam_fp16_to_fp32(h[i]) : lam_bf16_to_fp32(h[i]);
                if (lam_fp32_to_bits(f2[i]) != lam_fp32_to_bits(want)) {
                    if (ok)
                        printf("\n  %s %s 0x%04x -> f32 0x%08x\n", g_isa_names[isa], lam_dtype_name((unsigned)dt),
                               i, lam_fp32_to_bits(f2[i]));
                    ok = false;
                }
            }
            for (int i = 0; i < 8; i++)
                ok &= f2[65536 + i] == OUT_GUARD_VAL;
            for (size_t len = 0; len < 40; len++) {
                lam_convert(f2, LAM_DT_F32, h + 31744 + len, dt, len); /* around f16 inf/NaN */
                for (size_t i = 0; i < len; i++) {
                    uint16_t x = h[31744 + len + i];
                    float want = dt == LAM_DT_F16 ? lam_fp16_to_fp32(x) : lam_bf16_to_fp32(x);
                    ok &= lam_fp32_to_bits(f2[i]) == lam_fp32_to_bits(want);
                }
            }
        }
        /* f16 <-> bf16 and same-type copies, on every pattern */
        for (int sd = LAM_DT_F16; sd <= LAM_DT_BF16; sd++)
            for (int dd = LAM_DT_F16; dd <= LAM_DT_BF16; dd++) {
                lam_convert(h2, dd, h, sd, 65536);
                for (uint32_t i = 0; i < 65536; i++) {
                    float x = sd == LAM_DT_F16 ? lam_fp16_to_fp32(h[i]) : lam_bf16_to_fp32(h[i]);
                    uint16_t want = sd == dd ? h[i] : dd == LAM_DT_F16 ? lam_fp32_to_fp16(x) : lam_fp32_to_bf16(x);
                    ok &= h2[i] == want;
                }
            }
        lam_convert(f2, LAM_DT_F32, f, LAM_DT_F32, N);
        ok &= memcmp(f2, f, N * 4) == 0;
        if (!ok)
            printf("\n  conversion mismatch under isa=%s seed=%u\n", g_isa_names[isa], g_seed);
        CU_ASSERT(ok);
    }
    lam_attn_set_isa(g_isa_names[g_n_isas - 1]);
    free(f);
    free(f2);
    free(h);
    free(h2);
}

int main(void)
{
    const char *env = getenv("LAMINA_TEST_SEED");
    g_seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    g_rng = 0x9e3779b97f4a7c15ull ^ g_seed;
    g_quick = getenv("LAMINA_TEST_QUICK") && atoi(getenv("LAMINA_TEST_QUICK"));
    find_isas();
    printf("attention test seed %u, isa %s (testing %d)%s\n", g_seed, lam_attn_isa(), g_n_isas,
           g_quick ? ", quick" : "");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("cpu_attention", NULL, NULL);
    CU_add_test(s, "isa_names", test_isa_names);
    CU_add_test(s, "decode", test_decode);
    CU_add_test(s, "prefill", test_prefill);
    CU_add_test(s, "large_scores", test_large_scores);
    CU_add_test(s, "head_dims", test_head_dims);
    CU_add_test(s, "nan_propagates", test_nan_propagates);
    CU_add_test(s, "convert", test_convert_isa);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
