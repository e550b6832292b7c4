/* Shared fixtures for the lamina-estimate tests: a device and a model with
 * round numbers, so every expected value can be worked out by hand. */
#ifndef LAM_EST_TEST_H
#define LAM_EST_TEST_H

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/estimate/estimate.h"

/* Device "t": 100 TFLOP/s, 1 TB/s, 100 GB, 10 GB/s network with 10 us
 * latency, 100 GB/s link with 1 us latency, 500 W, 2 USD/h. All efficiency
 * factors and mem_util are 1, so the formulas show through unchanged. */
#define EST_TEST_CATALOG                                                                  \
    "[defaults]\n"                                                                        \
    "eff_compute = 1\neff_mem = 1\neff_attn = 1\neff_net = 1\nmem_util = 1\n"             \
    "[t]\nname = test device\nkind = gpu\nflops = 100T\nmem_bw = 1T\nmem_cap = 100G\n"    \
    "net_bw = 10G\nnet_lat = 10u\nlink_bw = 100G\nlink_lat = 1u\npower = 500\nprice = 2\n" \
    "[c]\nname = test cpu\nkind = cpu\nflops = 10T\nmem_bw = 0.5T\nmem_cap = 1000G\n"     \
    "net_bw = 10G\nnet_lat = 10u\npower = 800\nprice = 1\n"

/* 10 layers, d 1000, ffn 2000, 10 heads, 2 KV heads (G = 5), head_dim 100,
 * vocab 1000, untied. */
static const lam_est_model_t est_test_model = {
    "test", "llama", 10, 1000, 2000, 10, 2, 100, 1000, false, false};

static inline void est_test_catalog(lam_est_catalog_t *c)
{
    char err[512] = "";
    lam_est_catalog_init(c);
    lam_status_t st = lam_est_catalog_parse(c, EST_TEST_CATALOG, "test-catalog", err, sizeof err);
    if (st != LAM_OK)
        fprintf(stderr, "test catalog: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(st, LAM_OK);
}

/* Loads the shipped catalog from the source tree. */
static inline void est_shipped_catalog(lam_est_catalog_t *c)
{
    char path[1024], err[512] = "";
    const char *src = getenv("LAMINA_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tools/estimate/catalog.txt", src ? src : ".");
    lam_est_catalog_init(c);
    lam_status_t st = lam_est_catalog_load(c, path, err, sizeof err);
    if (st != LAM_OK)
        fprintf(stderr, "shipped catalog: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(st, LAM_OK);
}

static inline double est_term(const lam_est_result_t *r, const char *name)
{
    const lam_est_term_t *t = lam_est_result_term(r, name);
    if (!t)
        fprintf(stderr, "missing term '%s'\n", name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    return t->value;
}

/* Relative closeness. */
#define EST_CLOSE(a, b) CU_ASSERT_DOUBLE_EQUAL((a) / (b), 1.0, 1e-9)

static inline int est_run(const char *name, CU_TestInfo *tests)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_SuiteInfo suites[] = {{name, NULL, NULL, NULL, NULL, tests}, CU_SUITE_INFO_NULL};
    CU_register_suites(suites);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}

#endif
