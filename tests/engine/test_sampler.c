/* Sampling: greedy, temperature, top-k, top-p, seeds. Statistical checks use
 * enough draws that a correct sampler fails with negligible probability. */
#include "compute_node/sampler.h"
#include "kernels/cpu/ops.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static unsigned g_seed;

static void random_logits(float *x, int n)
{
    for (int i = 0; i < n; i++)
        x[i] = (float)rand() / RAND_MAX * 10.0f - 5.0f;
}

static void test_greedy_is_argmax(void)
{
    int n = 1000;
    float *x = malloc(n * sizeof *x);
    lam_sampler_t s;
    lam_sampler_params_t p = {.temperature = 0.0f, .top_p = 1.0f, .seed = g_seed};
    CU_ASSERT_FATAL(lam_sampler_init(&s, &p, n) == LAM_OK);
    for (int r = 0; r < 20; r++) {
        random_logits(x, n);
        CU_ASSERT(lam_sampler_sample(&s, x) == lam_argmax_f32(x, n));
    }
    /* top_k = 1 and a tiny top_p are greedy too, at any temperature */
    lam_sampler_t k1, p0;
    lam_sampler_params_t pk = {.temperature = 1.5f, .top_k = 1, .top_p = 1.0f, .seed = g_seed};
    lam_sampler_params_t pp = {.temperature = 1.5f, .top_k = 0, .top_p = 1e-6f, .seed = g_seed};
    CU_ASSERT_FATAL(lam_sampler_init(&k1, &pk, n) == LAM_OK);
    CU_ASSERT_FATAL(lam_sampler_init(&p0, &pp, n) == LAM_OK);
    for (int r = 0; r < 20; r++) {
        random_logits(x, n);
        int32_t a = lam_argmax_f32(x, n);
        CU_ASSERT(lam_sampler_sample(&k1, x) == a);
        CU_ASSERT(lam_sampler_sample(&p0, x) == a);
    }
    lam_sampler_free(&s);
    lam_sampler_free(&k1);
    lam_sampler_free(&p0);
    free(x);
}

static void test_seed_reproducible(void)
{
    int n = 500;
    float *x = malloc(n * sizeof *x);
    random_logits(x, n);
    lam_sampler_params_t p = {.temperature = 1.0f, .top_k = 50, .top_p = 0.9f, .seed = g_seed};
    lam_sampler_t a, b, c;
    lam_sampler_init(&a, &p, n);
    lam_sampler_init(&b, &p, n);
    p.seed++;
    lam_sampler_init(&c, &p, n);
    int differ = 0;
    for (int r = 0; r < 200; r++) {
        int32_t ta = lam_sampler_sample(&a, x), tb = lam_sampler_sample(&b, x), tc = lam_sampler_sample(&c, x);
        CU_ASSERT(ta == tb);
        differ += ta != tc;
    }
    CU_ASSERT(differ > 0);
    lam_sampler_free(&a);
    lam_sampler_free(&b);
    lam_sampler_free(&c);
    free(x);
}

static void test_distribution(void)
{
    /* p = .5 .3 .2 (+ a negligible 4th); temperature 1 */
    float x[4] = {logf(0.5f), logf(0.3f), logf(0.2f), -1e9f};
    int counts[4] = {0};
    const int N = 40000;
    lam_sampler_params_t p = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = g_seed};
    lam_sampler_t s;
    lam_sampler_init(&s, &p, 4);
    for (int i = 0; i < N; i++)
        counts[lam_sampler_sample(&s, x)]++;
    /* 6 sigma of a binomial at N = 40000 is about 0.015 */
    CU_ASSERT(fabs(counts[0] / (double)N - 0.5) < 0.015);
    CU_ASSERT(fabs(counts[1] / (double)N - 0.3) < 0.015);
    CU_ASSERT(fabs(counts[2] / (double)N - 0.2) < 0.015);
    CU_ASSERT(counts[3] == 0);
    lam_sampler_free(&s);

    /* top_k = 2 renormalises over {0, 1}: .625 / .375 */
    int c2[4] = {0};
    p.top_k = 2;
    lam_sampler_init(&s, &p, 4);
    for (int i = 0; i < N; i++)
        c2[lam_sampler_sample(&s, x)]++;
    CU_ASSERT(c2[2] == 0 && c2[3] == 0);
    CU_ASSERT(fabs(c2[0] / (double)N - 0.625) < 0.015);
    lam_sampler_free(&s);

    /* top_p = 0.6: .5 < .6 <= .8, keeps {0, 1} */
    int c3[4] = {0};
    p.top_k = 0;
    p.top_p = 0.6f;
    lam_sampler_init(&s, &p, 4);
    for (int i = 0; i < N; i++)
        c3[lam_sampler_sample(&s, x)]++;
    CU_ASSERT(c3[2] == 0 && c3[3] == 0 && c3[1] > 0);
    lam_sampler_free(&s);

    /* low temperature sharpens: T = 0.25 gives p0 = .5^4 / (.5^4+.3^4+.2^4) = .0625/.0722 = .866 */
    int c4[4] = {0};
    p.top_p = 1.0f;
    p.temperature = 0.25f;
    lam_sampler_init(&s, &p, 4);
    for (int i = 0; i < N; i++)
        c4[lam_sampler_sample(&s, x)]++;
    CU_ASSERT(fabs(c4[0] / (double)N - 0.0625 / (0.0625 + 0.0081 + 0.0016)) < 0.015);
    lam_sampler_free(&s);
}

static void test_bad_params(void)
{
    lam_sampler_t s;
    lam_sampler_params_t bad[] = {
        {.temperature = -1.0f, .top_p = 1.0f}, {.temperature = NAN, .top_p = 1.0f},
        {.temperature = 1.0f, .top_p = 0.0f}, {.temperature = 1.0f, .top_p = 1.5f},
        {.temperature = 1.0f, .top_k = -3, .top_p = 1.0f},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT(lam_sampler_init(&s, &bad[i], 10) == LAM_ERR_INVALID_ARG);
    lam_sampler_params_t ok = {.temperature = 1.0f, .top_p = 1.0f};
    CU_ASSERT(lam_sampler_init(&s, &ok, 0) == LAM_ERR_INVALID_ARG);
}

int main(void)
{
    g_seed = (unsigned)time(NULL);
    srand(g_seed);
    printf("sampler test seed %u\n", g_seed);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("sampler", NULL, NULL);
    CU_add_test(s, "greedy_is_argmax", test_greedy_is_argmax);
    CU_add_test(s, "seed_reproducible", test_seed_reproducible);
    CU_add_test(s, "distribution", test_distribution);
    CU_add_test(s, "bad_params", test_bad_params);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
