/* CUDA kernels against their C references (kernels/cpu, common/dequant.c,
 * common/dtype.h) on fresh random inputs; the seed is printed and
 * LAMINA_TEST_SEED=N repeats a run. Without a GPU only the tests that need
 * no device run (argument checks, error mapping) and the GPU tests are
 * reported as skipped; the suite passes. */
#include "kernels/cuda/lam_cuda.h"
#include "tests/cuda_kernels/cu_util.h"

#include "common/log.h"

#include <CUnit/Basic.h>
#include <stdio.h>

static void test_probe(void)
{
    char buf[256];
    int n = lam_cuda_device_count();
    lam_status_t st = lam_cuda_probe(0, buf, sizeof buf);
    CU_ASSERT(n >= 0);
    CU_ASSERT((n > 0) == (st == LAM_OK));
    CU_ASSERT(st == LAM_OK || st == LAM_ERR_NO_DEVICE);
    CU_ASSERT(buf[0] != '\0');
    CU_ASSERT(lam_cuda_probe(n, buf, sizeof buf) == LAM_ERR_NO_DEVICE);
    CU_ASSERT(lam_cuda_probe(-1, buf, sizeof buf) == LAM_ERR_NO_DEVICE);
    CU_ASSERT(lam_cuda_probe(0, NULL, 0) == LAM_ERR_INVALID_ARG);
}

static lam_status_t check_macro(cudaError_t e)
{
    LAM_CUDA_CHECK(e);
    return LAM_OK;
}

static lam_status_t check_macro_goto(cublasStatus_t s, int *cleaned)
{
    lam_status_t st = LAM_OK;
    LAM_CUBLAS_CHECK_GOTO(s, st, cleanup);
    return LAM_OK;
cleanup:
    *cleaned = 1;
    return st;
}

static void test_error_mapping(void)
{
    lam_log_level_t lvl = lam_log_get_level();
    lam_log_set_level(LAM_LOG_QUIET);
    CU_ASSERT(check_macro(cudaSuccess) == LAM_OK);
    CU_ASSERT(check_macro(cudaErrorMemoryAllocation) == LAM_ERR_CUDA_OOM);
    CU_ASSERT(check_macro(cudaErrorNoDevice) == LAM_ERR_NO_DEVICE);
    CU_ASSERT(check_macro(cudaErrorInsufficientDriver) == LAM_ERR_NO_DEVICE);
    CU_ASSERT(check_macro(cudaErrorInvalidValue) == LAM_ERR_CUDA);
    int cleaned = 0;
    CU_ASSERT(check_macro_goto(CUBLAS_STATUS_SUCCESS, &cleaned) == LAM_OK && !cleaned);
    CU_ASSERT(check_macro_goto(CUBLAS_STATUS_ALLOC_FAILED, &cleaned) == LAM_ERR_CUDA_OOM && cleaned);
    CU_ASSERT(check_macro_goto(CUBLAS_STATUS_INVALID_VALUE, &cleaned) == LAM_ERR_CUBLAS);
    lam_log_set_level(lvl);
    CU_ASSERT_STRING_EQUAL(lam_status_str(LAM_ERR_NO_DEVICE), "no CUDA device");
    CU_ASSERT_STRING_EQUAL(lam_status_str(LAM_ERR_CUDA_OOM), "out of GPU memory");
}

int main(void)
{
    cu_seed_init();
    char why[256];
    bool gpu = lam_cuda_probe(0, why, sizeof why) == LAM_OK;
    if (gpu)
        printf("cuda_kernels: device 0: %s\n", why);
    else
        printf("cuda_kernels: no CUDA device (%s) -- GPU tests SKIPPED\n", why);
    fflush(stdout);

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("cuda_host", NULL, NULL);
    CU_add_test(s, "probe", test_probe);
    CU_add_test(s, "error_mapping", test_error_mapping);
    cu_add_bad_arg_tests();
    if (gpu) {
        cu_add_op_tests();
        cu_add_data_tests();
        cu_add_attn_tests();
        cu_add_sample_tests();
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    if (!gpu)
        printf("cuda_kernels: GPU tests SKIPPED (no CUDA device); host-side checks passed: %s\n",
               failed ? "no" : "yes");
    return failed ? 1 : 0;
}
