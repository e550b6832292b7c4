/* lam_cuda_sample against a plain reference of its definition (the
 * distribution of compute_node/sampler.c: tokens ordered by logit then id,
 * top-k, temperature softmax, the shortest top-p prefix, inverse CDF in that
 * order), with the same fixed-point weights. Three checks: greedy rows are
 * lam_argmax_f32; for random u the drawn token is the reference's, or its
 * neighbour in the order when u falls within rounding of a boundary (expf
 * differs between libm and the device by an ulp or two); and stratified u
 * reproduce the reference distribution to within two draws per token. */
#include "kernels/cpu/ops.h"
#include "kernels/cuda/lam_cuda.h"
#include "tests/cuda_kernels/cu_util.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref_tok {
    float logit;
    int id;
} ref_tok_t;

static int cmp_tok(const void *a, const void *b)
{
    const ref_tok_t *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return x->id - y->id;
}

/* The reference: the order, the kept count and the cumulative fixed-point
 * weights of the kept tokens. */
typedef struct ref_dist {
    ref_tok_t *ord;
    uint64_t *cum;
    int keep;
} ref_dist_t;

static void ref_build(ref_dist_t *r, const float *x, int n, const lam_cuda_sample_row_t *p)
{
    r->ord = malloc(n * sizeof *r->ord);
    r->cum = malloc(n * sizeof *r->cum);
    for (int i = 0; i < n; i++)
        r->ord[i] = (ref_tok_t){isnan(x[i]) ? -INFINITY : x[i], i};
    qsort(r->ord, n, sizeof *r->ord, cmp_tok);
    int cand = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    float mx = r->ord[0].logit;
    uint64_t z = 0;
    for (int i = 0; i < cand; i++) {
        float e = expf((r->ord[i].logit - mx) / p->temperature);
        z += (uint64_t)llrintf(e * 1099511627776.0f);
        r->cum[i] = z;
    }
    r->keep = cand;
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        double t = ceil((double)p->top_p * (double)z);
        for (int i = 0; i < cand; i++)
            if ((double)r->cum[i] >= t) {
                r->keep = i + 1;
                break;
            }
    }
}

/* Position (in the order) of the token drawn with u. */
static int ref_draw(const ref_dist_t *r, float u)
{
    uint64_t mass = r->cum[r->keep - 1];
    double rd = floor((double)u * (double)mass);
    uint64_t t = rd >= (double)mass ? mass - 1 : (uint64_t)rd;
    for (int i = 0; i < r->keep; i++)
        if (r->cum[i] > t)
            return i;
    return r->keep - 1;
}

static void ref_free(ref_dist_t *r)
{
    free(r->ord);
    free(r->cum);
}

static int rank_of(const ref_dist_t *r, int n, int id)
{
    for (int i = 0; i < n; i++)
        if (r->ord[i].id == id)
            return i;
    return -1;
}

/* Runs the kernel on rows x[rows][stride] with params p[rows]. */
static void run_sample(int32_t *out, const float *x, int rows, int n, int64_t stride,
                       const lam_cuda_sample_row_t *p)
{
    cu_buf_t bx, bp, bo;
    float *dx = cu_alloc(&bx, (size_t)rows * stride * 4, 0);
    lam_cuda_sample_row_t *dp = cu_alloc(&bp, rows * sizeof *p, 0);
    int32_t *dout = cu_alloc(&bo, rows * 4, 0xff);
    cu_up(dx, x, (size_t)rows * stride * 4);
    cu_up(dp, p, rows * sizeof *p);
    CU_ASSERT_FATAL(lam_cuda_sample(dout, dx, stride, rows, n, dp, 0) == LAM_OK);
    CU_ASSERT(cu_sync());
    cu_down(out, dout, rows * 4);
    CU_ASSERT(cu_guards_ok(&bo));
    cu_free(&bx);
    cu_free(&bp);
    cu_free(&bo);
}

static void rand_logits(float *x, int n, float spread)
{
    for (int i = 0; i < n; i++)
        x[i] = spread * cu_frand();
    for (int i = 0; i < n / 50; i++) /* ties */
        x[cu_irand(n)] = x[cu_irand(n)];
}

static void test_greedy(void)
{
    const int ns[] = {49152, 1000, 1};
    for (int ni = 0; ni < 3; ni++) {
        int n = ns[ni], rows = 6;
        float *x = malloc((size_t)rows * n * 4);
        lam_cuda_sample_row_t p[6];
        for (int r = 0; r < rows; r++) {
            rand_logits(x + (size_t)r * n, n, 10.0f);
            p[r] = (lam_cuda_sample_row_t){.temperature = r == 5 ? NAN : r == 4 ? -1.0f : 0.0f, .top_k = 5,
                                           .top_p = 0.5f, .u = cu_frand() * 0.5f + 0.5f};
        }
        x[0] = NAN; /* row 0: NaN at 0, argmax semantics say 0 */
        if (n > 3) {
            float *x1 = x + n; /* row 1: a tie for the max */
            x1[1] = x1[n - 1] = 100.0f;
        }
        /* a row with temperature > 0 but no finite max falls back to argmax */
        for (int j = 0; j < n; j++)
            x[3 * (size_t)n + j] = NAN;
        p[3].temperature = 0.8f;
        int32_t out[6];
        run_sample(out, x, rows, n, n, p);
        for (int r = 0; r < rows; r++)
            CU_ASSERT(out[r] == lam_argmax_f32(x + (size_t)r * n, n));
        free(x);
    }
}

static void test_draws(void)
{
    const int ns[] = {1000, 49152, 37};
    int mismatches = 0, total = 0;
    for (int ni = 0; ni < 3; ni++) {
        int n = ns[ni], rows = g_quick ? 40 : 200;
        int64_t stride = n + 3;
        float *x = malloc((size_t)rows * stride * 4);
        lam_cuda_sample_row_t *p = malloc(rows * sizeof *p);
        for (int r = 0; r < rows; r++) {
            rand_logits(x + r * stride, n, r % 3 == 0 ? 3.0f : 15.0f);
            p[r].temperature = r % 4 == 0 ? 0.3f : r % 4 == 1 ? 1.0f : 0.7f;
            p[r].top_k = r % 5 == 0 ? 0 : r % 5 == 1 ? 1 : r % 5 == 2 ? 40 : r % 5 == 3 ? n : 1 + cu_irand(n);
            p[r].top_p = r % 3 == 0 ? 1.0f : r % 3 == 1 ? 0.9f : 0.05f + 0.9f * (cu_frand() + 1.0f) / 2.0f;
            p[r].u = (cu_frand() + 1.0f) / 2.0f;
            if (r == 7)
                p[r].u = 0.0f;
            if (r == 8)
                p[r].u = 0.99999994f;
        }
        int32_t *out = malloc(rows * 4);
        run_sample(out, x, rows, n, stride, p);
        for (int r = 0; r < rows; r++) {
            ref_dist_t d;
            ref_build(&d, x + r * stride, n, &p[r]);
            int want = ref_draw(&d, p[r].u), got = rank_of(&d, n, out[r]);
            total++;
            if (got != want) {
                mismatches++;
                if (got < 0 || abs(got - want) > 1 || got >= d.keep + 1) {
                    printf("\n  sample n %d row %d (T %g k %d p %g u %.9g): rank %d, want %d (kept %d)\n", n, r,
                           p[r].temperature, p[r].top_k, p[r].top_p, p[r].u, got, want, d.keep);
                    CU_FAIL("drawn token is not the reference's nor its neighbour");
                }
            }
            ref_free(&d);
        }
        free(x);
        free(p);
        free(out);
    }
    printf("\n  %d of %d draws differ from the reference by one rank (rounding) ", mismatches, total);
    CU_ASSERT(mismatches * 50 <= total); /* boundary cases are rare: at most 2% */
}

static void test_distribution(void)
{
    int N = g_quick ? 4000 : 20000, n = 300;
    const lam_cuda_sample_row_t cfg[] = {
        {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f},
        {.temperature = 0.7f, .top_k = 40, .top_p = 1.0f},
        {.temperature = 1.3f, .top_k = 0, .top_p = 0.8f},
        {.temperature = 0.5f, .top_k = 25, .top_p = 0.6f},
    };
    float *row = malloc(n * 4), *x = malloc((size_t)N * n * 4);
    lam_cuda_sample_row_t *p = malloc(N * sizeof *p);
    int32_t *out = malloc(N * 4);
    int *count = malloc(n * sizeof *count);
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        rand_logits(row, n, 4.0f);
        for (int i = 0; i < N; i++) {
            memcpy(x + (size_t)i * n, row, n * 4);
            p[i] = cfg[ci];
            p[i].u = ((float)i + 0.5f) / (float)N; /* stratified */
        }
        run_sample(out, x, N, n, n, p);
        ref_dist_t d;
        ref_build(&d, row, n, &cfg[ci]);
        memset(count, 0, n * sizeof *count);
        bool in_range = true;
        for (int i = 0; i < N; i++) {
            if (out[i] < 0 || out[i] >= n) {
                in_range = false;
                continue;
            }
            count[out[i]]++;
        }
        CU_ASSERT(in_range);
        double mass = (double)d.cum[d.keep - 1], worst = 0;
        for (int i = 0; i < n; i++) {
            double pr = i < d.keep ? (double)(d.cum[i] - (i ? d.cum[i - 1] : 0)) / mass : 0.0;
            double dev = fabs(count[d.ord[i].id] - pr * N);
            worst = fmax(worst, dev);
        }
        if (worst > 2.0)
            printf("\n  distribution cfg %zu: a token is %.1f draws off its expected count\n", ci, worst);
        CU_ASSERT(worst <= 2.0);
        ref_free(&d);
    }
    free(row);
    free(x);
    free(p);
    free(out);
    free(count);
}

void cu_add_sample_tests(void)
{
    CU_pSuite s = CU_add_suite("cuda_sample", NULL, NULL);
    CU_add_test(s, "greedy", test_greedy);
    CU_add_test(s, "draws", test_draws);
    CU_add_test(s, "distribution", test_distribution);
}
