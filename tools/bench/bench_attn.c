/* lamina-bench attention: batched decode through lam_attn_paged over an fp16
 * paged KV cache much larger than the last-level cache, as K+V bytes read
 * per second against the streaming-read ceiling measured in the same run.
 *
 * Shapes: head_dim 64, pages (--page-tokens, default the attention node's)
 * holding every KV head's K then V blocks, K in 16-token tiles
 * (attention_node/kv.h's layout for one layer on a CPU node), from memory
 * advised for transparent huge pages as the node's is, page tables in
 * shuffled order; GQA 3 (3 KV heads x 3, SmolLM2-shaped) and GQA 8 (8 x 8,
 * LLaMA-3-8B-shaped). Each call covers enough sequences for >= 512 MiB of
 * K+V (every sequence's ctx keys of every KV head), the achieved rate being
 * those bytes over the call's time; the best of several calls counts.
 *
 * Second ceiling, for the shapes that are arithmetic-bound: the fp32 FMA
 * rate of the same threads (independent chains, the kernel's ISA), over the
 * kernel's FMAs per K+V byte (2 * group * head_dim per 4 * head_dim bytes of
 * fp16 K and V: group / 2). */
#include "common/dtype.h"
#include "common/mem.h"
#include "compute_node/generate.h"
#include "kernels/cpu/attn.h"
#include "tools/bench/bench.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATTN_BENCH_HD 64
#define ATTN_BENCH_PAGE_DEFAULT 64 /* the attention node's --page-tokens default */
#define ATTN_BENCH_CALL_BYTES ((size_t)512 << 20)

typedef struct attn_shape {
    const char *name;
    int n_kv_heads, group;
} attn_shape_t;

typedef struct attn_result {
    double gbps, ms;
    int n_seq;
    size_t bytes;
} attn_result_t;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* One shape and context: builds the cache, runs reps calls, keeps the best. */
static int run_attn(const attn_shape_t *sh, int ctx, int pt, int reps, attn_result_t *res)
{
    int H = sh->n_kv_heads, G = sh->group, hd = ATTN_BENCH_HD;
    size_t head_stride = (size_t)pt * hd * 2, page_bytes = 2 * H * head_stride;
    size_t seq_bytes = (size_t)ctx * H * hd * 2 * 2; /* K and V */
    int n_seq = (int)((ATTN_BENCH_CALL_BYTES + seq_bytes - 1) / seq_bytes);
    int pages_per_seq = (ctx + pt - 1) / pt;
    size_t n_pages = (size_t)n_seq * pages_per_seq;
    size_t pool_bytes = (n_pages * page_bytes + LAM_HUGE_PAGE - 1) / LAM_HUGE_PAGE * LAM_HUGE_PAGE;
    uint8_t *pool = aligned_alloc(LAM_HUGE_PAGE, pool_bytes);
    if (pool)
        lam_advise_huge(pool, pool_bytes);
    uint8_t **table = malloc(n_pages * sizeof *table);
    uint8_t ***pages = malloc(n_seq * sizeof *pages);
    int32_t *row = malloc((n_seq + 1) * sizeof *row), *pos = malloc(n_seq * sizeof *pos);
    size_t n_q = (size_t)n_seq * H * G * hd;
    float *q = malloc(n_q * sizeof *q), *out = malloc(n_q * sizeof *out);
    if (!pool || !table || !pages || !row || !pos || !q || !out) {
        fprintf(stderr, "lamina-bench: out of memory for the attention cache (%zu MiB)\n",
                n_pages * page_bytes >> 20);
        free(pool), free(table), free(pages), free(row), free(pos), free(q), free(out);
        return 1;
    }
    /* f16 values of either sign in [0.25, 1), written by the threads that
     * will read them */
#pragma omp parallel
    {
        uint64_t st = 1234567 + (uint64_t)omp_get_thread_num();
#pragma omp for schedule(static)
        for (size_t p = 0; p < n_pages; p++) {
            uint16_t *h = (uint16_t *)(pool + p * page_bytes);
            for (size_t i = 0; i < page_bytes / 2; i += 4) {
                uint64_t r = splitmix(&st);
                for (int k = 0; k < 4; k++)
                    h[i + k] = (uint16_t)(((r >> (16 * k)) & 0x83ff) | (r >> (16 * k + 10) & 1 ? 0x3400 : 0x3800));
            }
        }
    }
    uint64_t st = 42;
    for (size_t i = 0; i < n_pages; i++)
        table[i] = pool + i * page_bytes;
    for (size_t i = n_pages; i > 1; i--) {
        size_t o = splitmix(&st) % i;
        uint8_t *t = table[i - 1];
        table[i - 1] = table[o];
        table[o] = t;
    }
    for (int s = 0; s < n_seq; s++) {
        pages[s] = table + (size_t)s * pages_per_seq;
        row[s] = s;
        pos[s] = ctx - 1;
    }
    row[n_seq] = n_seq;
    for (size_t i = 0; i < n_q; i++)
        q[i] = (float)(splitmix(&st) >> 40) / (float)(1 << 24) * 2.0f - 1.0f;

    lam_attn_args_t a = {.n_seq = n_seq, .row = row, .pos = pos, .pages = (uint8_t *const *const *)pages,
                         .k_off = 0, .v_off = H * head_stride, .head_stride = head_stride, .page_tokens = pt,
                         .k_layout = pt % LAM_ATTN_K_TILE ? LAM_ATTN_K_ROWS : LAM_ATTN_K_TILED, .n_kv_heads = H, .group = G, .head_dim = hd, .kv_dtype = LAM_DT_F16,
                         .scale = 1.0f / sqrtf((float)hd), .q = q, .out = out};
    lam_attn_paged(&a); /* warm-up */
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        double t0 = lam_now_s();
        lam_attn_paged(&a);
        double dt = lam_now_s() - t0;
        best = dt < best ? dt : best;
    }
    res->n_seq = n_seq;
    res->bytes = (size_t)n_seq * seq_bytes;
    res->ms = best * 1e3;
    res->gbps = best > 0 ? (double)res->bytes / best / 1e9 : 0.0;
    free(pool), free(table), free(pages), free(row), free(pos), free(q), free(out);
    return 0;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define FMA_CHAINS 12
__attribute__((target("avx512f"))) static double fma_lanes_avx512(long iters)
{
    __m512 a[FMA_CHAINS], x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < FMA_CHAINS; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < iters; n++)
        for (int i = 0; i < FMA_CHAINS; i++)
            a[i] = _mm512_fmadd_ps(a[i], x, y);
    __m512 t = a[0];
    for (int i = 1; i < FMA_CHAINS; i++)
        t = _mm512_add_ps(t, a[i]);
    return _mm512_reduce_add_ps(t);
}
__attribute__((target("avx2,fma"))) static double fma_lanes_avx2(long iters)
{
    __m256 a[FMA_CHAINS], x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < FMA_CHAINS; i++)
        a[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < iters; n++)
        for (int i = 0; i < FMA_CHAINS; i++)
            a[i] = _mm256_fmadd_ps(a[i], x, y);
    float v[8];
    __m256 t = a[0];
    for (int i = 1; i < FMA_CHAINS; i++)
        t = _mm256_add_ps(t, a[i]);
    _mm256_storeu_ps(v, t);
    return v[0];
}
#endif

/* fp32 FMA lanes per second over all threads with the kernel's ISA (0 if
 * it has no vector FMA), best of 3. */
static volatile double g_fma_sink; /* keeps the chains' results alive */

static double fma_ceiling(void)
{
#if defined(__x86_64__)
    int w = !strcmp(lam_attn_isa(), "avx512") ? 16 : !strcmp(lam_attn_isa(), "avx2") ? 8 : 0;
    if (!w)
        return 0.0;
    const long iters = 20000000;
    double best = 0.0, acc = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = lam_now_s();
        int nt = 1;
#pragma omp parallel reduction(+ : acc)
        {
#pragma omp single
            nt = omp_get_num_threads();
            acc += w == 16 ? fma_lanes_avx512(iters) : fma_lanes_avx2(iters);
        }
        double dt = lam_now_s() - t0, rate = (double)nt * iters * FMA_CHAINS * w / dt;
        best = rate > best ? rate : best;
    }
    g_fma_sink = acc;
    return best;
#else
    return 0.0;
#endif
}

int bench_attention(const bench_opts_t *o)
{
    static const attn_shape_t shapes[] = {{"gqa3", 3, 3}, {"gqa8", 8, 8}};
    static const int ctxs_full[] = {512, 1024, 2048, 4096, 8192, 16384, 32768};
    static const int ctxs_quick[] = {1024, 8192};
    enum { N_SHAPES = sizeof shapes / sizeof shapes[0], MAX_CTX = sizeof ctxs_full / sizeof ctxs_full[0] };
    const int *ctxs = o->quick ? ctxs_quick : ctxs_full;
    int n_ctx = o->quick ? 2 : MAX_CTX, reps = o->quick ? 2 : 5;

    /* The ceiling is measured between the shapes, and each shape's ratio is
     * over the higher of the two around it: this VM's bandwidth drifts by
     * up to a third within a run (36.8 -> 51.9 GB/s seen), and a ceiling
     * from minutes away misstates the ratio either way; on a shared
     * machine one of the two may be depressed by a neighbour */
    size_t stream_bytes = (size_t)1 << 30;
    int pt = o->page_tokens ? o->page_tokens : ATTN_BENCH_PAGE_DEFAULT;
    double fma = fma_ceiling();
    attn_result_t r[N_SHAPES][MAX_CTX];
    double ceil_at[N_SHAPES * MAX_CTX + 1];
    int ok[N_SHAPES][MAX_CTX], rc = 0, k = 0;
    ceil_at[k++] = bench_stream_read_gbps(stream_bytes);
    for (int s = 0; s < N_SHAPES; s++)
        for (int c = 0; c < n_ctx; c++) {
            ok[s][c] = run_attn(&shapes[s], ctxs[c], pt, reps, &r[s][c]) == 0;
            rc |= !ok[s][c];
            ceil_at[k++] = bench_stream_read_gbps(stream_bytes);
        }
    double cmin = ceil_at[0], cmax = ceil_at[0];
    for (int i = 1; i < k; i++) {
        cmin = ceil_at[i] < cmin ? ceil_at[i] : cmin;
        cmax = ceil_at[i] > cmax ? ceil_at[i] : cmax;
    }

    printf("paged attention, batched decode: fp16 KV, head_dim %d, %d-token pages, %d threads, isa %s\n",
           ATTN_BENCH_HD, pt, o->threads, lam_attn_isa());
    printf("%-22s %.2f-%.2f GB/s over the run (measured between shapes)\n", "stream_read (1 GiB)", cmin, cmax);
    printf("%-22s %8.1f G fp32 FMA lanes/s\n", "fma_peak", fma / 1e9);
    printf("%-6s %8s %6s %7s %6s %9s %9s %8s %8s %8s %10s %8s\n", "shape", "kv_heads", "group", "ctx", "seqs",
           "MiB/call", "ms/call", "GB/s", "ceiling", "ratio", "fma GB/s", "of fma");
    json_t *res = json_array();
    json_t *cj = json_array();
    for (int i = 0; i < k; i++)
        json_array_append_new(cj, json_real(ceil_at[i]));
    json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:f, s:o, s:I, s:i}", "name", "stream_read", "metric",
                                         "stream_read_gbps", "value", cmax, "min", cmin, "max", cmax, "series", cj,
                                         "bytes", (json_int_t)stream_bytes, "threads", o->threads));
    for (int s = 0, i = 0; s < N_SHAPES; s++)
        for (int c = 0; c < n_ctx; c++, i++) {
            if (!ok[s][c])
                continue;
            const attn_result_t *x = &r[s][c];
            double ceiling = ceil_at[i] > ceil_at[i + 1] ? ceil_at[i] : ceil_at[i + 1];
            double ratio = ceiling > 0 ? x->gbps / ceiling : 0.0;
            /* the K+V bytes/s the FMA rate alone allows: group / 2 FMAs per byte */
            double fma_gbps = fma / (shapes[s].group / 2.0) / 1e9, fma_ratio = fma_gbps > 0 ? x->gbps / fma_gbps : 0;
            printf("%-6s %8d %6d %7d %6d %9.0f %9.2f %8.2f %8.2f %8.3f %10.2f %8.3f\n", shapes[s].name,
                   shapes[s].n_kv_heads, shapes[s].group, ctxs[c], x->n_seq, x->bytes / 1048576.0, x->ms, x->gbps,
                   ceiling, ratio, fma_gbps, fma_ratio);
            char name[64];
            snprintf(name, sizeof name, "decode_%s_ctx%d", shapes[s].name, ctxs[c]);
            json_array_append_new(
                res, json_pack("{s:s, s:s, s:f, s:f, s:s, s:f, s:i, s:i, s:i, s:i, s:s, s:i, s:I, s:s, s:i, s:f, s:f}",
                               "name", name, "metric", "attn_gbps", "value", x->gbps, "ceiling", ceiling,
                               "ceiling_name", "stream_read", "ratio", ratio, "ctx", ctxs[c], "group",
                               shapes[s].group, "kv_heads", shapes[s].n_kv_heads, "head_dim", ATTN_BENCH_HD, "kv_dtype",
                               "f16", "threads", o->threads, "bytes", (json_int_t)x->bytes, "isa", lam_attn_isa(),
                               "page_tokens", pt, "fma_bound_gbps", fma_gbps, "fma_ratio", fma_ratio));
        }
    if (o->json)
        rc |= bench_write_json(o, "attention", res);
    else
        json_decref(res);
    return rc;
}
