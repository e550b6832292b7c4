/* lam_cuda_attn against lam_attn_paged_ref, and lam_cuda_kv_write against
 * the host's own conversion. Caches are one device pool of pages handed out
 * in shuffled order, with padding between heads and blocks, -1 entries
 * between the sequences' page tables, NaN in every byte the kernel must not
 * use, NaN-filled guarded outputs; the pool must come back unchanged. */
#include "common/dtype.h"
#include "kernels/cpu/attn.h"
#include "kernels/cuda/lam_cuda.h"
#include "tests/cuda_kernels/cu_util.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct acase {
    lam_cuda_attn_args_t d;      /* device view */
    lam_attn_args_t h;           /* host view, for the reference */
    uint8_t *pool;               /* host copy of the pool */
    size_t pool_bytes;
    int32_t *row, *pos, *pstart, *ptab;
    int n_ptab;
    uint8_t ***seq_pages;
    float *q, *out, *ref;
    size_t n_out;
    float vmax;
    cu_buf_t b_pool, b_row, b_pos, b_ps, b_pt, b_q, b_out, b_ws;
    void *ws;
    size_t ws_bytes;
} acase_t;

/* n_tok[s] query rows of sequence s at positions pos[s]..; keys are
 * kscale * U(-1,1), values U(-1,1), queries qscale * U(-1,1). fill: write
 * the keys and values of every position (else the pool stays NaN). */
static void ac_init(acase_t *c, int n_seq, const int *n_tok, const int *pos, int pt, int H, int G, int hd, int dt,
                    float qscale, float kscale)
{
    memset(c, 0, sizeof *c);
    size_t esz = lam_dtype_size((unsigned)dt);
    size_t head_stride = (size_t)pt * hd * esz + 16 * (size_t)cu_irand(3);
    size_t k_off = 16 * (size_t)cu_irand(4), v_off = k_off + H * head_stride + 16 * (size_t)cu_irand(4);
    size_t page_bytes = v_off + H * head_stride + 16 * (size_t)cu_irand(3);
    c->row = malloc((n_seq + 1) * sizeof *c->row);
    c->pos = malloc(n_seq * sizeof *c->pos);
    c->pstart = malloc(n_seq * sizeof *c->pstart);
    c->seq_pages = calloc(n_seq, sizeof *c->seq_pages);
    c->row[0] = 0;
    int n_pages = 0, max_rows = 1, max_keys = 1;
    for (int s = 0; s < n_seq; s++) {
        c->row[s + 1] = c->row[s] + n_tok[s];
        c->pos[s] = pos[s];
        int keys = pos[s] + n_tok[s];
        n_pages += (keys + pt - 1) / pt;
        max_rows = n_tok[s] > max_rows ? n_tok[s] : max_rows;
        max_keys = keys > max_keys ? keys : max_keys;
    }
    int pool_pages = n_pages + 1 + cu_irand(4); /* some never used */
    c->pool_bytes = (size_t)pool_pages * page_bytes;
    c->pool = malloc(c->pool_bytes);
    memset(c->pool, 0xff, c->pool_bytes);
    int *perm = malloc(pool_pages * sizeof *perm);
    for (int i = 0; i < pool_pages; i++)
        perm[i] = i;
    for (int i = pool_pages; i > 1; i--) {
        int o = cu_irand(i), t = perm[i - 1];
        perm[i - 1] = perm[o];
        perm[o] = t;
    }
    /* tables with gaps of -1 between them */
    c->ptab = malloc((n_pages + 3 * n_seq + 1) * sizeof *c->ptab);
    int next = 0, at = 0;
    for (int s = 0; s < n_seq; s++) {
        int gap = cu_irand(3);
        for (int i = 0; i < gap; i++)
            c->ptab[at++] = -1;
        c->pstart[s] = at;
        int keys = pos[s] + n_tok[s], np = (keys + pt - 1) / pt;
        c->seq_pages[s] = malloc((np + 1) * sizeof **c->seq_pages);
        for (int p = 0; p < np; p++) {
            c->ptab[at++] = perm[next];
            c->seq_pages[s][p] = c->pool + (size_t)perm[next++] * page_bytes;
        }
        for (int j = 0; j < keys; j++)
            for (int h = 0; h < H; h++) {
                uint8_t *base = c->seq_pages[s][j / pt] + h * head_stride + (size_t)(j % pt) * hd * esz;
                for (int d = 0; d < hd; d++) {
                    lam_dtype_store(base + k_off + d * esz, (unsigned)dt, kscale * cu_frand());
                    lam_dtype_store(base + v_off + d * esz, (unsigned)dt, cu_frand());
                    float v = fabsf(lam_dtype_load(base + v_off + d * esz, (unsigned)dt));
                    c->vmax = v > c->vmax ? v : c->vmax;
                }
            }
    }
    c->ptab[at++] = -1;
    c->n_ptab = at;
    free(perm);
    int T = c->row[n_seq];
    c->n_out = (size_t)T * H * G * hd;
    c->q = malloc(c->n_out * 4 + 4);
    c->out = malloc(c->n_out * 4 + 4);
    c->ref = malloc(c->n_out * 4 + 4);
    for (size_t i = 0; i < c->n_out; i++)
        c->q[i] = qscale * cu_frand();
    /* device copies */
    uint8_t *dpool = cu_alloc(&c->b_pool, c->pool_bytes, 0);
    cu_up(dpool, c->pool, c->pool_bytes);
    int32_t *drow = cu_alloc(&c->b_row, (n_seq + 1) * 4, 0), *dpos = cu_alloc(&c->b_pos, n_seq * 4 + 4, 0);
    int32_t *dps = cu_alloc(&c->b_ps, n_seq * 4 + 4, 0), *dpt = cu_alloc(&c->b_pt, at * 4, 0);
    cu_up(drow, c->row, (n_seq + 1) * 4);
    cu_up(dpos, c->pos, n_seq * 4);
    cu_up(dps, c->pstart, n_seq * 4);
    cu_up(dpt, c->ptab, at * 4);
    float *dq = cu_alloc(&c->b_q, c->n_out * 4 + 4, 0), *dout = cu_alloc(&c->b_out, c->n_out * 4 + 4, 0xff);
    cu_up(dq, c->q, c->n_out * 4);
    c->ws_bytes = lam_cuda_attn_workspace_size(hd);
    c->ws = cu_alloc(&c->b_ws, c->ws_bytes, 0xff);
    c->d = (lam_cuda_attn_args_t){.n_seq = n_seq, .row = drow, .pos = dpos, .page_start = dps, .pages = dpt,
                                  .n_tok = T, .max_rows = max_rows, .max_keys = max_keys, .pool = dpool,
                                  .page_bytes = page_bytes, .n_pages = pool_pages, .k_off = k_off, .v_off = v_off,
                                  .head_stride = head_stride, .page_tokens = pt, .n_kv_heads = H, .group = G,
                                  .head_dim = hd, .kv_dtype = dt, .scale = 1.0f / sqrtf((float)hd), .q = dq,
                                  .out = dout};
    c->h = (lam_attn_args_t){.n_seq = n_seq, .row = c->row, .pos = c->pos,
                             .pages = (uint8_t *const *const *)c->seq_pages, .k_off = k_off, .v_off = v_off,
                             .head_stride = head_stride, .page_tokens = pt, .n_kv_heads = H, .group = G,
                             .head_dim = hd, .kv_dtype = dt, .scale = c->d.scale, .q = c->q, .out = c->ref};
}

static void ac_free(acase_t *c)
{
    cu_buf_t *bs[] = {&c->b_pool, &c->b_row, &c->b_pos, &c->b_ps, &c->b_pt, &c->b_q, &c->b_out, &c->b_ws};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++)
        cu_free(bs[i]);
    for (int s = 0; s < c->d.n_seq; s++)
        free(c->seq_pages[s]);
    free(c->seq_pages);
    free(c->pool);
    free(c->row);
    free(c->pos);
    free(c->pstart);
    free(c->ptab);
    free(c->q);
    free(c->out);
    free(c->ref);
}

static void ac_reference(acase_t *c)
{
    int max_pos = 1;
    for (int s = 0; s < c->h.n_seq; s++)
        if (c->pos[s] + c->row[s + 1] - c->row[s] > max_pos)
            max_pos = c->pos[s] + c->row[s + 1] - c->row[s];
    float *scratch = malloc((max_pos + 1) * sizeof *scratch);
    lam_attn_paged_ref(&c->h, scratch);
    free(scratch);
}

/* Runs the kernel (ws_bytes of the workspace, min_splits) and compares. */
static bool ac_run(acase_t *c, size_t ws_bytes, int min_splits, const char *what)
{
    CU_ASSERT(cudaMemset(c->d.out, 0xff, c->n_out * 4) == cudaSuccess);
    lam_cuda_attn_plan_t plan;
    CU_ASSERT_FATAL(lam_cuda_attn_plan(&c->d, ws_bytes, &plan) == LAM_OK);
    lam_status_t st = lam_cuda_attn(&c->d, ws_bytes ? c->ws : NULL, ws_bytes, min_splits, 0);
    bool ok = st == LAM_OK && cu_sync();
    cu_down(c->out, c->d.out, c->n_out * 4);
    ok &= cu_guards_ok(&c->b_out) && cu_guards_ok(&c->b_ws);
    uint8_t *pool = malloc(c->pool_bytes);
    cu_down(pool, c->d.pool, c->pool_bytes);
    bool pool_same = !memcmp(pool, c->pool, c->pool_bytes) && cu_guards_ok(&c->b_pool);
    free(pool);
    double tol = 1e-4 * (1.0 + c->vmax), err = 0;
    size_t bad = 0, worst = 0;
    for (size_t i = 0; i < c->n_out; i++) {
        if (!isfinite(c->out[i])) {
            bad++;
            continue;
        }
        double d = fabs((double)c->out[i] - c->ref[i]);
        if (d > err) {
            err = d;
            worst = i;
        }
    }
    ok &= pool_same && bad == 0 && err <= tol;
    if (!ok)
        printf("\n  FAIL %s seed=%u: n_seq %d tok %d H %d G %d hd %d %s pt %d max_keys %d (plan: %d splits of %d, "
               "%lld blocks; min_splits %d ws %zu): err %.3g (tol %.3g) at %zu (%g vs %g), %zu non-finite, "
               "pool %s\n",
               what, g_seed, c->d.n_seq, c->d.n_tok, c->d.n_kv_heads, c->d.group, c->d.head_dim,
               lam_dtype_name((unsigned)c->d.kv_dtype), c->d.page_tokens, c->d.max_keys, plan.n_splits,
               plan.split_keys, (long long)plan.n_blocks, min_splits, ws_bytes, err, tol, worst, c->out[worst],
               c->ref[worst], bad, pool_same ? "unchanged" : "CHANGED");
    return ok;
}

/* ---- cases -------------------------------------------------------------------------- */

static const int g_groups[] = {1, 3, 4, 8, 16};
static const int g_hds[] = {64, 128, 256};

static void test_decode(void)
{
    const int batches[] = {1, 3, 75};
    int n_cases = g_quick ? 15 : 45;
    for (int k = 0; k < n_cases; k++) {
        int n_seq = batches[k % 3], G = g_groups[k % 5], hd = g_hds[(k / 5) % 3], dt = (k / 3) % 3;
        int H = 1 + (k % 4 == 1 ? 2 : k % 4 == 2 ? 1 : 0), pt = k % 2 ? 16 : 7;
        if (n_seq == 75 && hd == 256 && G >= 8)
            n_seq = 17; /* keep the reference quick */
        int *nt = malloc(n_seq * sizeof *nt), *pos = malloc(n_seq * sizeof *pos);
        for (int s = 0; s < n_seq; s++) {
            nt[s] = 1;
            pos[s] = cu_irand(k % 4 == 3 ? 700 : 90); /* across page boundaries */
        }
        acase_t c;
        ac_init(&c, n_seq, nt, pos, pt, H, G, hd, dt, 1.0f, 1.0f);
        ac_reference(&c);
        CU_ASSERT(ac_run(&c, c.ws_bytes, 0, "decode"));
        CU_ASSERT(ac_run(&c, 0, 0, "decode/no-split"));
        CU_ASSERT(ac_run(&c, c.ws_bytes, 2 + k % 7, "decode/forced-splits"));
        ac_free(&c);
        free(nt);
        free(pos);
    }
}

static void test_prefill(void)
{
    int n_cases = g_quick ? 8 : 24;
    for (int k = 0; k < n_cases; k++) {
        int n_seq = 1 + k % 3, G = g_groups[k % 5], hd = g_hds[k % 3], dt = k % 3, H = 1 + k % 2;
        int pt = k % 2 ? 16 : 5;
        int nt[3], pos[3];
        for (int s = 0; s < n_seq; s++) {
            nt[s] = s == 1 ? 1 : 1 + cu_irand(37); /* a decode row in a mixed batch */
            pos[s] = k % 4 == 0 ? 0 : cu_irand(200);
        }
        acase_t c;
        ac_init(&c, n_seq, nt, pos, pt, H, G, hd, dt, 1.0f, 1.0f);
        ac_reference(&c);
        CU_ASSERT(ac_run(&c, c.ws_bytes, 0, "prefill"));
        CU_ASSERT(ac_run(&c, c.ws_bytes, 3 + k % 5, "prefill/forced-splits"));
        /* the hints only size the grid: understating them is slow, not wrong */
        c.d.max_rows = 1;
        c.d.max_keys = 1;
        CU_ASSERT(ac_run(&c, c.ws_bytes, 0, "prefill/small-hints"));
        c.d.max_keys = 100000;
        CU_ASSERT(ac_run(&c, c.ws_bytes, 0, "prefill/large-hints"));
        ac_free(&c);
    }
}

/* One long sequence at batch 1: the automatic plan must split it. */
static void test_long(void)
{
    const int dts[] = {LAM_DT_F16, LAM_DT_BF16, LAM_DT_F32};
    for (int k = 0; k < (g_quick ? 1 : 3); k++) {
        int nt = k == 2 ? 3 : 1, pos = (g_quick ? 2000 : 5000) + cu_irand(100);
        int G = k == 1 ? 8 : 3, H = k == 1 ? 1 : 3, hd = k == 2 ? 128 : 64;
        acase_t c;
        ac_init(&c, 1, &nt, &pos, 16, H, G, hd, dts[k], 1.0f, 1.0f);
        ac_reference(&c);
        lam_cuda_attn_plan_t plan;
        CU_ASSERT(lam_cuda_attn_plan(&c.d, c.ws_bytes, &plan) == LAM_OK);
        printf("\n  long context %d keys: %d splits of %d keys, %lld blocks ", c.d.max_keys, plan.n_splits,
               plan.split_keys, (long long)plan.n_blocks);
        CU_ASSERT(plan.n_splits > 1 && plan.ws_used <= c.ws_bytes);
        CU_ASSERT(ac_run(&c, c.ws_bytes, 0, "long"));
        CU_ASSERT(ac_run(&c, 0, 0, "long/no-split"));
        /* a workspace for only a few splits */
        size_t few = (size_t)c.d.n_tok * H * G * (hd + 2) * 4 * 3;
        CU_ASSERT(lam_cuda_attn_plan(&c.d, few, &plan) == LAM_OK);
        CU_ASSERT(plan.n_splits <= 3 && plan.ws_used <= few);
        CU_ASSERT(ac_run(&c, few, 0, "long/small-workspace"));
        ac_free(&c);
    }
}

static void test_large_scores(void)
{
    int nt[2] = {1, 9}, pos[2] = {300, 40};
    for (int dt = 0; dt < LAM_DT_END; dt++) {
        acase_t c;
        ac_init(&c, 2, nt, pos, 16, 2, 4, 64, dt, 30.0f, 30.0f);
        ac_reference(&c);
        CU_ASSERT(ac_run(&c, c.ws_bytes, 0, "large_scores"));
        CU_ASSERT(ac_run(&c, c.ws_bytes, 5, "large_scores/split"));
        ac_free(&c);
    }
}

/* A bad page index makes exactly the rows that need it NaN; a negative
 * position makes its rows NaN; the others are unaffected. */
static void test_bad_tables(void)
{
    int nt[3] = {1, 4, 1}, pos[3] = {40, 30, 20};
    for (int split = 0; split < 2; split++) {
        acase_t c;
        ac_init(&c, 3, nt, pos, 8, 2, 3, 64, LAM_DT_F16, 1.0f, 1.0f);
        ac_reference(&c);
        /* sequence 1: page 4 (keys 32..39) points outside the pool; its rows
         * are at positions 30..33, so rows 2 and 3 (keys up to 32, 33) need it */
        int32_t badidx = split ? (int32_t)c.d.n_pages : -7;
        cu_up((int32_t *)c.d.pages + c.pstart[1] + 4, &badidx, 4);
        int32_t negpos = -1;
        cu_up((int32_t *)c.d.pos + 2, &negpos, 4);
        CU_ASSERT(lam_cuda_attn(&c.d, c.ws, c.ws_bytes, split ? 4 : 0, 0) == LAM_OK);
        CU_ASSERT(cu_sync());
        cu_down(c.out, c.d.out, c.n_out * 4);
        size_t per_row = (size_t)2 * 3 * 64;
        bool ok = true;
        for (int r = 0; r < 6; r++) {
            bool want_nan = r == 3 || r == 4 || r == 5;
            for (size_t i = 0; i < per_row; i++) {
                float v = c.out[r * per_row + i];
                ok &= want_nan ? isnan(v) : fabs(v - c.ref[r * per_row + i]) <= 1e-4 * (1 + c.vmax);
            }
        }
        if (!ok)
            printf("\n  bad tables (split %d): wrong NaN pattern\n", split);
        CU_ASSERT(ok);
        ac_free(&c);
    }
}

/* ---- kv_write ------------------------------------------------------------------------ */

static void test_kv_write(void)
{
    for (int k = 0; k < (g_quick ? 6 : 18); k++) {
        int n_seq = 1 + k % 3, dt = k % 3, sdt = (k / 3) % 3, hd = g_hds[k % 3], H = 1 + k % 3, G = 1 + k % 4;
        int nt[3], pos[3];
        for (int s = 0; s < n_seq; s++) {
            nt[s] = k % 2 ? 1 : 1 + cu_irand(20);
            pos[s] = cu_irand(50);
        }
        acase_t c;
        ac_init(&c, n_seq, nt, pos, 16, H, G, hd, dt, 1.0f, 1.0f);
        /* new rows: overwrite the chunk's positions in the host copy */
        int T = c.d.n_tok;
        int64_t stride = (int64_t)H * hd + 8;
        size_t ss = lam_dtype_size((unsigned)sdt), esz = lam_dtype_size((unsigned)dt);
        uint8_t *kv[2];
        for (int w = 0; w < 2; w++) {
            kv[w] = malloc((size_t)T * stride * ss);
            for (size_t i = 0; i < (size_t)T * stride; i++)
                lam_dtype_store(kv[w] + i * ss, (unsigned)sdt, 2.0f * cu_frand());
        }
        for (int s = 0; s < n_seq; s++)
            for (int r = 0; r < nt[s]; r++) {
                int p = pos[s] + r, row = c.row[s] + r;
                for (int h = 0; h < H; h++) {
                    uint8_t *base = c.seq_pages[s][p / 16] + h * c.h.head_stride + (size_t)(p % 16) * hd * esz;
                    for (int d = 0; d < hd; d++)
                        for (int w = 0; w < 2; w++)
                            lam_dtype_store(base + (w ? c.h.v_off : c.h.k_off) + d * esz, (unsigned)dt,
                                            lam_dtype_load(kv[w] + ((size_t)row * stride + h * hd + d) * ss,
                                                           (unsigned)sdt));
                }
            }
        cu_buf_t bk, bv;
        void *dk = cu_alloc(&bk, (size_t)T * stride * ss, 0), *dv = cu_alloc(&bv, (size_t)T * stride * ss, 0);
        cu_up(dk, kv[0], (size_t)T * stride * ss);
        cu_up(dv, kv[1], (size_t)T * stride * ss);
        CU_ASSERT(lam_cuda_kv_write(&c.d, dk, dv, stride, sdt, 0) == LAM_OK);
        CU_ASSERT(cu_sync());
        uint8_t *pool = malloc(c.pool_bytes);
        cu_down(pool, c.d.pool, c.pool_bytes);
        bool same = !memcmp(pool, c.pool, c.pool_bytes) && cu_guards_ok(&c.b_pool);
        if (!same)
            printf("\n  kv_write case %d: pool differs from the host's writes\n", k);
        CU_ASSERT(same);
        free(pool);
        /* and attention over what was written */
        ac_reference(&c);
        CU_ASSERT(ac_run(&c, c.ws_bytes, 0, "kv_write+attn"));
        cu_free(&bk);
        cu_free(&bv);
        free(kv[0]);
        free(kv[1]);
        ac_free(&c);
    }
}

void cu_add_attn_tests(void)
{
    CU_pSuite s = CU_add_suite("cuda_attn", NULL, NULL);
    CU_add_test(s, "decode", test_decode);
    CU_add_test(s, "prefill", test_prefill);
    CU_add_test(s, "long", test_long);
    CU_add_test(s, "large_scores", test_large_scores);
    CU_add_test(s, "bad_tables", test_bad_tables);
    CU_add_test(s, "kv_write", test_kv_write);
}
