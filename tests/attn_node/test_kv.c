/* The attention node's paged KV cache: page layout (as kernels/cpu/attn.h
 * reads it), capacity and sequence-table exhaustion, position and context
 * checks, poisoning, owner release, and the hash under random churn. Random
 * inputs; the seed is printed. */
#include "attention_node/kv.h"
#include "common/dtype.h"
#include "common/log.h"
#include "kernels/cpu/attn.h"
#include "kernels/cpu/ops.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static float frand(void) { return (float)rand() / RAND_MAX * 2.0f - 1.0f; }

static lam_kv_opts_t small_opts(int dtype)
{
    return (lam_kv_opts_t){.n_layers = 3, .n_kv_heads = 2, .head_dim = 8, .page_tokens = 4, .dtype = dtype,
                           .capacity_pages = 16, .max_ctx = 40, .max_seqs = 8};
}

/* What the cache should hold for an f32 source value stored as dtype. */
static float stored(float x, int dtype)
{
    if (dtype == LAM_DT_F16)
        return lam_fp16_to_fp32(lam_fp32_to_fp16(x));
    if (dtype == LAM_DT_BF16)
        return lam_bf16_to_fp32(lam_fp32_to_bf16(x));
    return x;
}

static void test_geometry(void)
{
    for (int dt = 0; dt < LAM_DT_END; dt++) {
        lam_kv_opts_t o = small_opts(dt);
        lam_kv_t *kv = NULL;
        CU_ASSERT_FATAL(lam_kv_create(&o, &kv) == LAM_OK);
        const lam_kv_geom_t *g = lam_kv_geom(kv);
        size_t esz = lam_dtype_size((unsigned)dt);
        CU_ASSERT(g->head_stride == 4 * 8 * esz);
        CU_ASSERT(g->v_off == 2 * g->head_stride);
        CU_ASSERT(g->layer_stride == 2 * 2 * g->head_stride);
        CU_ASSERT(g->page_bytes >= 3 * g->layer_stride && g->page_bytes % 64 == 0);
        CU_ASSERT(g->max_pages_per_seq == 10);
        lam_kv_stats_t st = lam_kv_stats(kv);
        CU_ASSERT(st.pages_total == 16 && st.pages_used == 0 && st.seqs == 0 && st.max_seqs == 8);
        lam_kv_destroy(kv);
    }
}

static void test_bad_opts(void)
{
    lam_log_set_level(LAM_LOG_QUIET);
    lam_kv_t *kv = NULL;
    lam_kv_opts_t o = small_opts(LAM_DT_F16);
    o.n_layers = 0;
    CU_ASSERT(lam_kv_create(&o, &kv) == LAM_ERR_INVALID_ARG);
    o = small_opts(LAM_DT_F16);
    o.dtype = 7;
    CU_ASSERT(lam_kv_create(&o, &kv) == LAM_ERR_INVALID_ARG);
    o = small_opts(LAM_DT_F16);
    o.max_seqs = 0;
    CU_ASSERT(lam_kv_create(&o, &kv) == LAM_ERR_INVALID_ARG);
    o = small_opts(LAM_DT_F16);
    o.k_layout = LAM_ATTN_K_TILED; /* 4-token pages cannot hold 16-token tiles */
    CU_ASSERT(lam_kv_create(&o, &kv) == LAM_ERR_INVALID_ARG);
    o.page_tokens = 24;
    CU_ASSERT(lam_kv_create(&o, &kv) == LAM_ERR_INVALID_ARG);
    o.page_tokens = 16;
    o.k_layout = 7;
    CU_ASSERT(lam_kv_create(&o, &kv) == LAM_ERR_INVALID_ARG);
    o = small_opts(LAM_DT_F16);
    o.capacity_pages = 0;
    o.capacity_bytes = 100; /* less than one page */
    CU_ASSERT(lam_kv_create(&o, &kv) == LAM_ERR_CONFIG);
    lam_log_set_level(LAM_LOG_INFO);
    CU_ASSERT(kv == NULL);
    /* bytes, not pages: rounded down to whole pages, spread over several slabs */
    o = small_opts(LAM_DT_F32);
    o.capacity_pages = 0;
    o.capacity_bytes = 10 * 3 * 2 * 2 * 4 * 8 * 4 + 5;
    o.slab_bytes = 3 * 3 * 2 * 2 * 4 * 8 * 4;
    CU_ASSERT_FATAL(lam_kv_create(&o, &kv) == LAM_OK);
    CU_ASSERT(lam_kv_stats(kv).pages_total == 10);
    lam_kv_destroy(kv);
}

/* Writes random chunks through several layers of several sequences, in all
 * three cache dtypes, from f32 and f16 sources and in both K layouts (rows
 * on 4-token pages, tiles on 16-token pages), then checks every row both
 * with lam_kv_read_row and at the byte offsets the layout contract gives. */
static void test_roundtrip(void)
{
    enum { NS = 3, NL = 3, NKV = 2, HD = 8, CTX = 40 };
    static float ref_k[NS][NL][CTX][NKV][HD], ref_v[NS][NL][CTX][NKV][HD];
    for (int dt = 0; dt < LAM_DT_END; dt++)
        for (int src_dt = 0; src_dt < 4; src_dt++) {
            int src = src_dt % 2 ? LAM_DT_F16 : LAM_DT_F32, layout = src_dt / 2, PT = layout ? 16 : 4;
            lam_kv_opts_t o = small_opts(dt);
            o.k_layout = layout;
            o.page_tokens = PT;
            lam_kv_t *kv = NULL;
            CU_ASSERT_FATAL(lam_kv_create(&o, &kv) == LAM_OK);
            lam_kv_seq_t *s[NS];
            for (int i = 0; i < NS; i++)
                CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, 100 + i, &s[i]) == LAM_OK);
            int chunks[] = {5, 1, 1, 4, 3};
            int pos[NS] = {0};
            for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++)
                for (int i = 0; i < NS; i++) {
                    int n = chunks[c] + i % 2;
                    for (int l = 0; l < NL; l++) {
                        float kf[8][NKV][HD], vf[8][NKV][HD];
                        uint16_t kh[8][NKV][HD], vh[8][NKV][HD];
                        for (int t = 0; t < n; t++)
                            for (int h = 0; h < NKV; h++)
                                for (int d = 0; d < HD; d++) {
                                    kf[t][h][d] = frand();
                                    vf[t][h][d] = frand();
                                    kh[t][h][d] = lam_fp32_to_fp16(kf[t][h][d]);
                                    vh[t][h][d] = lam_fp32_to_fp16(vf[t][h][d]);
                                    float kx = src_dt % 2 ? lam_fp16_to_fp32(kh[t][h][d]) : kf[t][h][d];
                                    float vx = src_dt % 2 ? lam_fp16_to_fp32(vh[t][h][d]) : vf[t][h][d];
                                    ref_k[i][l][pos[i] + t][h][d] = stored(kx, dt);
                                    ref_v[i][l][pos[i] + t][h][d] = stored(vx, dt);
                                }
                        lam_status_t st = src_dt % 2 ? lam_kv_append(kv, s[i], l, pos[i], n, kh, vh, src)
                                                 : lam_kv_append(kv, s[i], l, pos[i], n, kf, vf, src);
                        CU_ASSERT(st == LAM_OK);
                        CU_ASSERT(lam_kv_seq_len(s[i], l) == pos[i] + n);
                    }
                    pos[i] += n;
                }
            const lam_kv_geom_t *g = lam_kv_geom(kv);
            size_t esz = lam_dtype_size((unsigned)dt);
            int bad = 0;
            for (int i = 0; i < NS; i++) {
                CU_ASSERT(lam_kv_seq_pages_held(s[i]) == (pos[i] + PT - 1) / PT);
                uint8_t *const *pages = lam_kv_seq_pages(s[i]);
                for (int l = 0; l < NL; l++)
                    for (int p = 0; p < pos[i]; p++)
                        for (int h = 0; h < NKV; h++) {
                            float k[HD], v[HD];
                            lam_kv_read_row(kv, s[i], l, h, p, k, v);
                            const uint8_t *blk = pages[p / PT] + l * g->layer_stride + h * g->head_stride;
                            const uint8_t *vrow = blk + g->v_off + (size_t)(p % PT) * HD * esz;
                            for (int d = 0; d < HD; d++) {
                                size_t ki = lam_attn_k_index(layout, HD, p % PT, d);
                                bad += k[d] != ref_k[i][l][p][h][d] || v[d] != ref_v[i][l][p][h][d];
                                bad += lam_dtype_load(blk + ki * esz, dt) != ref_k[i][l][p][h][d];
                                bad += lam_dtype_load(vrow + d * esz, dt) != ref_v[i][l][p][h][d];
                            }
                        }
            }
            CU_ASSERT(bad == 0);
            if (bad)
                printf("\n  roundtrip kv %s from %s, K layout %d: %d mismatches\n", lam_dtype_name((unsigned)dt),
                       lam_dtype_name((unsigned)src), layout, bad);
            lam_kv_destroy(kv);
        }
}

static lam_status_t append_rand(lam_kv_t *kv, lam_kv_seq_t *s, int layer, int pos, int n)
{
    static float k[64 * 2 * 8], v[64 * 2 * 8];
    for (int i = 0; i < n * 2 * 8; i++) {
        k[i] = frand();
        v[i] = frand();
    }
    return lam_kv_append(kv, s, layer, pos, n, k, v, LAM_DT_F32);
}

static void test_capacity(void)
{
    lam_kv_opts_t o = small_opts(LAM_DT_F16);
    o.capacity_pages = 5;
    lam_kv_t *kv = NULL;
    CU_ASSERT_FATAL(lam_kv_create(&o, &kv) == LAM_OK);
    lam_kv_seq_t *a, *b, *c, *d;
    CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, 1, &a) == LAM_OK);
    CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, 2, &b) == LAM_OK);
    CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, 3, &c) == LAM_OK);
    CU_ASSERT(append_rand(kv, a, 0, 0, 8) == LAM_OK); /* 2 pages */
    CU_ASSERT(append_rand(kv, a, 1, 0, 8) == LAM_OK); /* same pages, other layer */
    CU_ASSERT(lam_kv_stats(kv).pages_used == 2);
    /* b wants 4 pages, 3 are free: refused whole */
    CU_ASSERT(append_rand(kv, b, 0, 0, 16) == LAM_ERR_KV_FULL);
    CU_ASSERT(lam_kv_stats(kv).pages_used == 2 && lam_kv_seq_pages_held(b) == 0);
    CU_ASSERT(lam_kv_seq_len(b, 0) == 0);
    /* b is poisoned even for a chunk that would fit */
    CU_ASSERT(append_rand(kv, b, 0, 0, 1) == LAM_ERR_KV_FULL);
    CU_ASSERT(lam_kv_seq_poison(b) == LAM_ERR_KV_FULL);
    /* the others carry on */
    CU_ASSERT(append_rand(kv, c, 0, 0, 12) == LAM_OK);
    CU_ASSERT(append_rand(kv, a, 0, 8, 1) == LAM_ERR_KV_FULL);
    CU_ASSERT(append_rand(kv, c, 1, 0, 12) == LAM_OK);
    CU_ASSERT(lam_kv_stats(kv).pages_used == 5);
    /* releasing gives pages back; a fresh sequence can take them */
    lam_kv_release(kv, a);
    CU_ASSERT(lam_kv_stats(kv).pages_used == 3);
    lam_kv_release(kv, b);
    CU_ASSERT(lam_kv_seq_get(kv, 1, 4, &d) == LAM_OK);
    CU_ASSERT(append_rand(kv, d, 0, 0, 8) == LAM_OK);
    CU_ASSERT(lam_kv_stats(kv).pages_used == 5 && lam_kv_stats(kv).seqs == 2);
    /* b's id is free again: a new sequence, not the poisoned one */
    CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, 2, &b) == LAM_OK);
    CU_ASSERT(lam_kv_seq_poison(b) == LAM_OK && lam_kv_seq_len(b, 0) == 0);
    CU_ASSERT(lam_kv_release_id(kv, 1, 3) == LAM_OK);
    CU_ASSERT(lam_kv_release_id(kv, 1, 3) == LAM_ERR_SEQ_UNKNOWN);
    CU_ASSERT(append_rand(kv, b, 0, 0, 12) == LAM_OK);
    lam_kv_release(kv, b);
    lam_kv_release(kv, d);
    CU_ASSERT(lam_kv_stats(kv).pages_used == 0 && lam_kv_stats(kv).seqs == 0);
    lam_kv_destroy(kv);
}

static void test_pos_and_ctx(void)
{
    lam_kv_opts_t o = small_opts(LAM_DT_F32);
    lam_kv_t *kv = NULL;
    CU_ASSERT_FATAL(lam_kv_create(&o, &kv) == LAM_OK);
    lam_kv_seq_t *a, *b;
    CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, 1, &a) == LAM_OK);
    CU_ASSERT(append_rand(kv, a, 0, 0, 3) == LAM_OK);
    CU_ASSERT(append_rand(kv, a, 0, 4, 1) == LAM_ERR_SEQ_POS); /* skips position 3 */
    CU_ASSERT(append_rand(kv, a, 0, 3, 1) == LAM_ERR_SEQ_POS); /* poisoned now */
    CU_ASSERT(append_rand(kv, a, 1, 0, 3) == LAM_ERR_SEQ_POS); /* every layer */
    CU_ASSERT(lam_kv_seq_len(a, 0) == 3 && lam_kv_seq_len(a, 1) == 0);
    /* a caller bug is not the sequence's fault */
    CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, 2, &b) == LAM_OK);
    CU_ASSERT(lam_kv_reserve(kv, b, 3, 0, 1) == LAM_ERR_INVALID_ARG);
    CU_ASSERT(lam_kv_reserve(kv, b, 0, 0, 0) == LAM_ERR_INVALID_ARG);
    CU_ASSERT(lam_kv_seq_poison(b) == LAM_OK);
    /* a layer may not go back either */
    CU_ASSERT(append_rand(kv, b, 0, 0, 2) == LAM_OK);
    CU_ASSERT(append_rand(kv, b, 0, 0, 2) == LAM_ERR_SEQ_POS);
    lam_kv_release(kv, a);
    lam_kv_release(kv, b);

    /* context: max_ctx 40 */
    CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, 3, &a) == LAM_OK);
    CU_ASSERT(append_rand(kv, a, 0, 0, 38) == LAM_OK);
    CU_ASSERT(append_rand(kv, a, 0, 38, 2) == LAM_OK);
    CU_ASSERT(append_rand(kv, a, 1, 0, 40) == LAM_OK);
    CU_ASSERT(append_rand(kv, a, 0, 40, 1) == LAM_ERR_CTX_FULL);
    CU_ASSERT(append_rand(kv, a, 2, 0, 1) == LAM_ERR_CTX_FULL); /* poisoned */
    CU_ASSERT(lam_kv_stats(kv).pages_used == 10);
    lam_kv_release(kv, a);
    CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, 4, &a) == LAM_OK);
    CU_ASSERT(append_rand(kv, a, 0, 0, 41) == LAM_ERR_CTX_FULL);
    CU_ASSERT(lam_kv_stats(kv).pages_used == 0);
    lam_kv_release(kv, a);
    lam_kv_destroy(kv);
}

static void test_owners(void)
{
    lam_kv_opts_t o = small_opts(LAM_DT_BF16);
    lam_kv_t *kv = NULL;
    CU_ASSERT_FATAL(lam_kv_create(&o, &kv) == LAM_OK);
    lam_kv_seq_t *s1[3], *s2[2];
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, (uint64_t)i + 1, &s1[i]) == LAM_OK);
        CU_ASSERT(append_rand(kv, s1[i], 0, 0, 5) == LAM_OK);
    }
    float k[2][8], v[2][8];
    for (int i = 0; i < 16; i++) {
        k[i / 8][i % 8] = (float)i;
        v[i / 8][i % 8] = (float)-i;
    }
    for (int i = 0; i < 2; i++) { /* same ids, other owner: other sequences */
        CU_ASSERT_FATAL(lam_kv_seq_get(kv, 2, (uint64_t)i + 1, &s2[i]) == LAM_OK);
        CU_ASSERT(s2[i] != s1[i]);
        CU_ASSERT(lam_kv_append(kv, s2[i], 0, 0, 1, k, v, LAM_DT_F32) == LAM_OK);
    }
    CU_ASSERT(lam_kv_stats(kv).seqs == 5 && lam_kv_stats(kv).pages_used == 3 * 2 + 2);
    CU_ASSERT(lam_kv_release_owner(kv, 1) == 3);
    CU_ASSERT(lam_kv_stats(kv).seqs == 2 && lam_kv_stats(kv).pages_used == 2);
    CU_ASSERT(lam_kv_seq_find(kv, 1, 1) == NULL);
    CU_ASSERT(lam_kv_seq_find(kv, 2, 1) == s2[0] && lam_kv_seq_find(kv, 2, 2) == s2[1]);
    float kr[8], vr[8];
    lam_kv_read_row(kv, s2[1], 0, 1, 0, kr, vr);
    CU_ASSERT(kr[3] == 11.0f && vr[7] == -15.0f);
    CU_ASSERT(lam_kv_release_owner(kv, 3) == 0);
    CU_ASSERT(lam_kv_release_owner(kv, 2) == 2);
    CU_ASSERT(lam_kv_stats(kv).seqs == 0 && lam_kv_stats(kv).pages_used == 0);
    lam_kv_destroy(kv);
}

static void test_max_seqs(void)
{
    lam_kv_opts_t o = small_opts(LAM_DT_F16);
    o.max_seqs = 4;
    lam_kv_t *kv = NULL;
    CU_ASSERT_FATAL(lam_kv_create(&o, &kv) == LAM_OK);
    lam_kv_seq_t *s[5];
    for (int i = 0; i < 4; i++)
        CU_ASSERT_FATAL(lam_kv_seq_get(kv, 7, (uint64_t)i + 10, &s[i]) == LAM_OK);
    CU_ASSERT(lam_kv_seq_get(kv, 7, 99, &s[4]) == LAM_ERR_KV_FULL);
    CU_ASSERT(lam_kv_seq_get(kv, 7, 12, &s[4]) == LAM_OK && s[4] == s[2]); /* existing ones still found */
    lam_kv_release(kv, s[1]);
    CU_ASSERT(lam_kv_seq_get(kv, 7, 99, &s[4]) == LAM_OK);
    CU_ASSERT(lam_kv_stats(kv).seqs == 4);
    lam_kv_destroy(kv);
}

/* Random create/find/release against a plain array, to exercise the
 * hash's deletion (backward shift) with long probe runs. */
static void test_hash_churn(void)
{
    enum { MAXS = 64, IDS = 200 };
    lam_kv_opts_t o = small_opts(LAM_DT_F16);
    o.max_seqs = MAXS;
    o.capacity_pages = 2 * MAXS;
    lam_kv_t *kv = NULL;
    CU_ASSERT_FATAL(lam_kv_create(&o, &kv) == LAM_OK);
    static lam_kv_seq_t *held[4][IDS];
    memset(held, 0, sizeof held);
    int n = 0, bad = 0;
    for (int it = 0; it < 20000; it++) {
        uint32_t owner = (uint32_t)(rand() % 4);
        int id = rand() % IDS;
        lam_kv_seq_t *f = lam_kv_seq_find(kv, owner, (uint64_t)id);
        bad += f != held[owner][id];
        if (held[owner][id] && rand() % 2) {
            lam_kv_release(kv, held[owner][id]);
            held[owner][id] = NULL;
            n--;
        } else if (!held[owner][id]) {
            lam_kv_seq_t *s = NULL;
            lam_status_t st = lam_kv_seq_get(kv, owner, (uint64_t)id, &s);
            if (n == MAXS)
                bad += st != LAM_ERR_KV_FULL;
            else {
                bad += st != LAM_OK || lam_kv_seq_len(s, 0) != 0 || lam_kv_seq_id(s) != (uint64_t)id;
                bad += append_rand(kv, s, 0, 0, 1 + rand() % 8) != LAM_OK;
                held[owner][id] = s;
                n++;
            }
        }
        if (it % 997 == 0 && rand() % 3 == 0) {
            int r = lam_kv_release_owner(kv, owner);
            for (int i = 0; i < IDS; i++)
                if (held[owner][i]) {
                    held[owner][i] = NULL;
                    r--;
                    n--;
                }
            bad += r != 0;
        }
        bad += lam_kv_stats(kv).seqs != n;
    }
    CU_ASSERT(bad == 0);
    lam_kv_destroy(kv);
}

/* The paged kernels read what the cache wrote: attention over the pages
 * equals attention over contiguous copies of the same keys and values, in
 * both K layouts (the tiled one on the SIMD path, rows on the scalar one). */
static void test_kernel_reads_pages(void)
{
    enum { NL = 2, NKV = 2, G = 3, HD = 16, NQ = NKV * G };
    for (int c = 0; c < 2 * LAM_DT_END; c++) {
        int dt = c % LAM_DT_END, layout = c / LAM_DT_END, PT = layout ? 16 : 4;
        lam_kv_opts_t o = {.n_layers = NL, .n_kv_heads = NKV, .head_dim = HD, .page_tokens = PT, .k_layout = layout,
                           .dtype = dt, .capacity_pages = 64, .max_ctx = 64, .max_seqs = 4};
        lam_kv_t *kv = NULL;
        CU_ASSERT_FATAL(lam_kv_create(&o, &kv) == LAM_OK);
        int lens[2] = {13, 7};
        lam_kv_seq_t *s[2];
        static float K[2][64][NKV * HD], V[2][64][NKV * HD];
        for (int i = 0; i < 2; i++) {
            CU_ASSERT_FATAL(lam_kv_seq_get(kv, 1, (uint64_t)i + 1, &s[i]) == LAM_OK);
            for (int l = 0; l < NL; l++) {
                float k[16][NKV * HD], v[16][NKV * HD];
                for (int t = 0; t < lens[i]; t++)
                    for (int j = 0; j < NKV * HD; j++) {
                        k[t][j] = frand();
                        v[t][j] = frand();
                        if (l == 1) {
                            K[i][t][j] = stored(k[t][j], dt);
                            V[i][t][j] = stored(v[t][j], dt);
                        }
                    }
                CU_ASSERT(lam_kv_append(kv, s[i], l, 0, lens[i], k, v, LAM_DT_F32) == LAM_OK);
            }
        }
        /* the last 3 tokens of sequence 0 and the last token of sequence 1 query layer 1 */
        int32_t row[3] = {0, 3, 4}, pos[2] = {10, 6};
        uint8_t *const *pages[2] = {lam_kv_seq_pages(s[0]), lam_kv_seq_pages(s[1])};
        float q[4][NQ * HD], out[4][NQ * HD], ref[NQ * HD], scratch[64];
        for (int i = 0; i < 4 * NQ * HD; i++)
            q[i / (NQ * HD)][i % (NQ * HD)] = frand();
        const lam_kv_geom_t *g = lam_kv_geom(kv);
        lam_attn_args_t a = {.n_seq = 2, .row = row, .pos = pos, .pages = pages, .k_off = g->layer_stride,
                             .v_off = g->layer_stride + g->v_off, .head_stride = g->head_stride, .page_tokens = PT,
                             .k_layout = layout,
                             .n_kv_heads = NKV, .group = G, .head_dim = HD, .kv_dtype = dt,
                             .scale = 1.0f / sqrtf(HD), .q = &q[0][0], .out = &out[0][0]};
        lam_attn_paged(&a);
        double err = 0;
        for (int r = 0; r < 4; r++) {
            int i = r < 3 ? 0 : 1, p = r < 3 ? 10 + r : 6;
            lam_attn_ref_f32(ref, q[r], &K[i][0][0], &V[i][0][0], p + 1, NQ, NKV, HD, NKV * HD, scratch);
            for (int j = 0; j < NQ * HD; j++)
                err = fmax(err, fabs(out[r][j] - ref[j]));
        }
        CU_ASSERT(err < 1e-5);
        if (err >= 1e-5)
            printf("\n  kernel over pages (%s, K layout %d): max error %g\n", lam_dtype_name((unsigned)dt), layout, err);
        lam_kv_destroy(kv);
    }
}

int main(void)
{
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    printf("kv test seed %u\n", seed);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("attn_node_kv", NULL, NULL);
    CU_add_test(s, "geometry", test_geometry);
    CU_add_test(s, "bad_options", test_bad_opts);
    CU_add_test(s, "roundtrip_all_dtypes", test_roundtrip);
    CU_add_test(s, "capacity", test_capacity);
    CU_add_test(s, "position_and_context", test_pos_and_ctx);
    CU_add_test(s, "owners", test_owners);
    CU_add_test(s, "max_seqs", test_max_seqs);
    CU_add_test(s, "hash_churn", test_hash_churn);
    CU_add_test(s, "kernel_reads_pages", test_kernel_reads_pages);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
