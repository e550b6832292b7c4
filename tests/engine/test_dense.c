/* The dense half's LM head over two micro-batches at once against one call
 * per micro-batch (the same bits, rows of the first then the second), its
 * capacity check, and the hook called between matrix products. A small
 * random model built in memory; fresh random inputs each run. */
#include "compute_node/dense.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static float frand(void) { return (float)rand() / RAND_MAX * 2.0f - 1.0f; }

static float *rand_f32(size_t n)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

static int g_calls;
static void count_call(void *arg) { (void)arg, g_calls++; }

static void test_logits2(void)
{
    lam_model_t m;
    memset(&m, 0, sizeof m);
    lam_model_config_t *c = &m.cfg;
    c->dim = 96, c->n_heads = 2, c->n_kv_heads = 1, c->head_dim = 48, c->ffn_dim = 160, c->vocab = 301;
    c->norm_eps = 1e-5f;
    m.out_norm = rand_f32((size_t)c->dim);
    m.lm_head = rand_f32((size_t)c->vocab * c->dim);
    for (int round = 0; round < 2; round++) {
        m.lm_head_act = round ? LAM_ACT_Q8_32 : LAM_ACT_F32;
        bool quant = round == 1;
        lam_dense_act_t a, b;
        const int Ta = 9, na = 5, nb = 4;
        CU_ASSERT_FATAL(lam_dense_act_alloc(c, Ta, &a) == LAM_OK);
        CU_ASSERT_FATAL(lam_dense_act_alloc(c, nb, &b) == LAM_OK);
        for (int i = 0; i < na * c->dim; i++) a.x[i] = frand() * 3;
        for (int i = 0; i < nb * c->dim; i++) b.x[i] = frand() * 3;
        uint8_t wa[5] = {1, 0, 1, 1, 0}, wb[4] = {0, 1, 1, 1};
        size_t vs = (size_t)c->vocab;
        float *one = malloc(9 * vs * sizeof *one), *two = malloc(9 * vs * sizeof *two);
        int n1 = lam_dense_logits(&m, quant, &a, wa, na, one);
        int n2 = lam_dense_logits(&m, quant, &b, wb, nb, one + (size_t)n1 * vs);
        CU_ASSERT(n1 == 3 && n2 == 3);
        a.between = count_call;
        g_calls = 0;
        int n = lam_dense_logits2(&m, quant, &a, wa, na, &b, wb, nb, two);
        CU_ASSERT(n == n1 + n2);
        CU_ASSERT(g_calls == 1);
        CU_ASSERT(!memcmp(one, two, (size_t)n * vs * sizeof *one));
        /* every row wanted: 5 + 4 = 9 = a's capacity */
        n1 = lam_dense_logits(&m, quant, &a, NULL, na, one);
        n2 = lam_dense_logits(&m, quant, &b, NULL, nb, one + (size_t)n1 * vs);
        n = lam_dense_logits2(&m, quant, &a, NULL, na, &b, NULL, nb, two);
        CU_ASSERT(n == 9 && n1 + n2 == 9);
        CU_ASSERT(!memcmp(one, two, 9 * vs * sizeof *one));
        /* b's rows past a's capacity: refused, nothing written */
        lam_dense_act_t small;
        CU_ASSERT_FATAL(lam_dense_act_alloc(c, 6, &small) == LAM_OK);
        memcpy(small.x, a.x, (size_t)na * c->dim * sizeof *a.x);
        two[0] = 12345.0f;
        CU_ASSERT(lam_dense_logits2(&m, quant, &small, NULL, na, &b, wb, nb, two) == -1);
        CU_ASSERT(two[0] == 12345.0f);
        CU_ASSERT(lam_dense_logits2(&m, quant, &small, wa, na, &b, wb, nb, two) == 6);
        lam_dense_act_free(&small);
        lam_dense_act_free(&a);
        lam_dense_act_free(&b);
        free(one);
        free(two);
    }
    free(m.out_norm);
    free(m.lm_head);
}

int main(void)
{
    unsigned seed = (unsigned)time(NULL);
    printf("seed %u\n", seed);
    srand(seed);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("dense", NULL, NULL);
    CU_add_test(s, "LM head over two micro-batches", test_logits2);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
