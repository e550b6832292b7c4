/* Bad arguments to every op entry: an error, and nothing launched (these run
 * without a device, with pointers that must never be dereferenced). Empty
 * batches are fine and launch nothing either. */
#include "common/gguf.h"
#include "common/log.h"
#include "kernels/cuda/lam_cuda.h"
#include "tests/cuda_kernels/cu_util.h"

#include <CUnit/Basic.h>
#include <math.h>

#define P ((void *)(uintptr_t)0x100000)        /* aligned, never dereferenced */
#define PF ((float *)P)
#define PI ((int32_t *)P)
#define ODD ((void *)(uintptr_t)0x100002)      /* 2-byte aligned only */
#define INV LAM_ERR_INVALID_ARG

static lam_log_level_t g_lvl;
static int quiet(void)
{
    g_lvl = lam_log_get_level();
    lam_log_set_level(LAM_LOG_QUIET);
    return 0;
}
static int loud(void)
{
    lam_log_set_level(g_lvl);
    return 0;
}

static void test_rows_ops(void)
{
    cudaStream_t st = 0;
    /* embed */
    CU_ASSERT(lam_cuda_embed(NULL, P, LAM_DT_F16, 10, 8, PI, 1, st) == INV);
    CU_ASSERT(lam_cuda_embed(PF, P, 7, 10, 8, PI, 1, st) == INV);
    CU_ASSERT(lam_cuda_embed(PF, P, LAM_DT_F16, 0, 8, PI, 1, st) == INV);
    CU_ASSERT(lam_cuda_embed(PF, P, LAM_DT_F16, 10, 0, PI, 1, st) == INV);
    CU_ASSERT(lam_cuda_embed(PF, P, LAM_DT_F16, 10, 8, PI, -1, st) == INV);
    CU_ASSERT(lam_cuda_embed(PF, ODD, LAM_DT_F32, 10, 8, PI, 1, st) == INV);
    CU_ASSERT(lam_cuda_embed(PF, P, LAM_DT_F16, 10, 8, PI, 0, st) == LAM_OK);
    /* rmsnorm */
    CU_ASSERT(lam_cuda_rmsnorm(NULL, NULL, LAM_DT_F16, PF, PF, 1, 8, 1e-5f, st) == INV);
    CU_ASSERT(lam_cuda_rmsnorm(PF, NULL, LAM_DT_F16, NULL, PF, 1, 8, 1e-5f, st) == INV);
    CU_ASSERT(lam_cuda_rmsnorm(PF, P, 9, PF, PF, 1, 8, 1e-5f, st) == INV);
    CU_ASSERT(lam_cuda_rmsnorm(PF, NULL, 0, PF, PF, 1, 0, 1e-5f, st) == INV);
    CU_ASSERT(lam_cuda_rmsnorm(PF, NULL, 0, PF, PF, -2, 8, 1e-5f, st) == INV);
    CU_ASSERT(lam_cuda_rmsnorm(PF, NULL, 0, PF, PF, 1, 8, -1.0f, st) == INV);
    CU_ASSERT(lam_cuda_rmsnorm(PF, NULL, 0, PF, PF, 1, 8, NAN, st) == INV);
    CU_ASSERT(lam_cuda_rmsnorm((float *)ODD, NULL, 0, PF, PF, 1, 8, 1e-5f, st) == INV);
    CU_ASSERT(lam_cuda_rmsnorm(PF, NULL, 0, PF, PF, 0, 8, 1e-5f, st) == LAM_OK);
    /* rope */
    CU_ASSERT(lam_cuda_rope(NULL, 1, 2, 64, 128, 64, PI, 1e4f, 1.0f, NULL, 0, st) == INV);
    CU_ASSERT(lam_cuda_rope(PF, 1, 2, 64, 128, 63, PI, 1e4f, 1.0f, NULL, 0, st) == INV);
    CU_ASSERT(lam_cuda_rope(PF, 1, 2, 64, 128, 66, PI, 1e4f, 1.0f, NULL, 0, st) == INV);
    CU_ASSERT(lam_cuda_rope(PF, 1, 2, 64, 127, 64, PI, 1e4f, 1.0f, NULL, 0, st) == INV);
    CU_ASSERT(lam_cuda_rope(PF, 1, 2, 64, 128, 64, PI, 0.0f, 1.0f, NULL, 0, st) == INV);
    CU_ASSERT(lam_cuda_rope(PF, 1, 2, 64, 128, 64, PI, 1e4f, INFINITY, NULL, 0, st) == INV);
    CU_ASSERT(lam_cuda_rope(PF, 1, 2, 64, 128, 64, PI, 1e4f, 1.0f, NULL, 2, st) == INV);
    CU_ASSERT(lam_cuda_rope(PF, -1, 2, 64, 128, 64, PI, 1e4f, 1.0f, NULL, 0, st) == INV);
    CU_ASSERT(lam_cuda_rope(PF, 0, 2, 64, 128, 64, PI, 1e4f, 1.0f, NULL, 1, st) == LAM_OK);
    /* swiglu */
    CU_ASSERT(lam_cuda_swiglu(P, LAM_DT_F16, NULL, 8, PF, 8, 1, 8, st) == INV);
    CU_ASSERT(lam_cuda_swiglu(P, 3, PF, 8, PF, 8, 1, 8, st) == INV);
    CU_ASSERT(lam_cuda_swiglu(P, LAM_DT_F16, PF, 7, PF, 8, 1, 8, st) == INV);
    CU_ASSERT(lam_cuda_swiglu(P, LAM_DT_F16, PF, 8, PF, 8, 1, 0, st) == INV);
    CU_ASSERT(lam_cuda_swiglu(ODD, LAM_DT_F32, PF, 8, PF, 8, 1, 8, st) == INV);
    CU_ASSERT(lam_cuda_swiglu(P, LAM_DT_F16, PF, 8, PF, 8, 0, 8, st) == LAM_OK);
    /* add */
    CU_ASSERT(lam_cuda_add(NULL, PF, PF, 4, st) == INV);
    CU_ASSERT(lam_cuda_add(PF, (float *)ODD, PF, 4, st) == INV);
    CU_ASSERT(lam_cuda_add(PF, PF, PF, 0, st) == LAM_OK);
    /* argmax */
    CU_ASSERT(lam_cuda_argmax(NULL, PF, 8, 1, 8, st) == INV);
    CU_ASSERT(lam_cuda_argmax(PI, PF, 7, 1, 8, st) == INV);
    CU_ASSERT(lam_cuda_argmax(PI, PF, 8, 1, 0, st) == INV);
    CU_ASSERT(lam_cuda_argmax(PI, PF, 8, -1, 8, st) == INV);
    CU_ASSERT(lam_cuda_argmax(PI, PF, 8, 0, 8, st) == LAM_OK);
    /* sample */
    lam_cuda_sample_row_t *sp = P;
    CU_ASSERT(lam_cuda_sample(PI, PF, 8, 1, 8, NULL, st) == INV);
    CU_ASSERT(lam_cuda_sample(PI, PF, 1 << 23, 1, 1 << 23, sp, st) == INV);
    CU_ASSERT(lam_cuda_sample(PI, PF, 4, 1, 8, sp, st) == INV);
    CU_ASSERT(lam_cuda_sample(PI, PF, 8, 0, 8, sp, st) == LAM_OK);
}

static void test_data_ops(void)
{
    cudaStream_t st = 0;
    /* convert */
    CU_ASSERT(lam_cuda_convert(NULL, LAM_DT_F16, P, LAM_DT_F32, 4, st) == INV);
    CU_ASSERT(lam_cuda_convert(P, 5, P, LAM_DT_F32, 4, st) == INV);
    CU_ASSERT(lam_cuda_convert(P, LAM_DT_F32, ODD, LAM_DT_F32, 4, st) == INV);
    uint8_t *b = P;
    CU_ASSERT(lam_cuda_convert(b + 4, LAM_DT_F32, b, LAM_DT_F16, 8, st) == INV); /* overlap */
    CU_ASSERT(lam_cuda_convert(b, LAM_DT_F16, b, LAM_DT_F32, 8, st) == INV);     /* in place, other type */
    CU_ASSERT(lam_cuda_convert(b, LAM_DT_F32, b, LAM_DT_F32, 8, st) == LAM_OK);  /* same: nothing to do */
    CU_ASSERT(lam_cuda_convert(b, LAM_DT_F16, b + 64, LAM_DT_F32, 0, st) == LAM_OK);
    /* dequant */
    CU_ASSERT(lam_cuda_dequant(NULL, LAM_DT_F32, P, LAM_GGML_Q4_1, 32, st) == INV);
    CU_ASSERT(lam_cuda_dequant(P, 4, P, LAM_GGML_Q4_1, 32, st) == INV);
    CU_ASSERT(lam_cuda_dequant(P, LAM_DT_F32, P, LAM_GGML_Q4_1, 33, st) == INV);
    CU_ASSERT(lam_cuda_dequant(P, LAM_DT_F32, P, LAM_GGML_Q8_0, -32, st) == INV);
    CU_ASSERT(lam_cuda_dequant(ODD, LAM_DT_F32, P, LAM_GGML_F16, 4, st) == INV);
    CU_ASSERT(lam_cuda_dequant(P, LAM_DT_F32, P, LAM_GGML_Q6_K, 256, st) == LAM_ERR_UNSUPPORTED);
    CU_ASSERT(lam_cuda_dequant(P, LAM_DT_F32, P, 999, 32, st) == LAM_ERR_UNSUPPORTED);
    CU_ASSERT(lam_cuda_dequant(P, LAM_DT_BF16, ODD, LAM_GGML_Q4_0, 0, st) == LAM_OK);
    CU_ASSERT(lam_cuda_dequant_supported(LAM_GGML_Q4_1) && lam_cuda_dequant_supported(LAM_GGML_Q8_0) &&
              lam_cuda_dequant_supported(LAM_GGML_BF16) && !lam_cuda_dequant_supported(LAM_GGML_Q4_K));
    /* gemm: the handle is never used on these paths */
    cublasHandle_t h = (cublasHandle_t)P;
    CU_ASSERT(lam_cuda_gemm(NULL, P, LAM_DT_F32, P, P, LAM_DT_F16, NULL, 1, 8, 8, 0.0f, st) == INV);
    CU_ASSERT(lam_cuda_gemm(h, P, LAM_DT_F32, P, P, LAM_DT_F32, NULL, 1, 8, 8, 0.0f, st) == INV);
    CU_ASSERT(lam_cuda_gemm(h, P, 9, P, P, LAM_DT_F16, NULL, 1, 8, 8, 0.0f, st) == INV);
    CU_ASSERT(lam_cuda_gemm(h, P, LAM_DT_F32, P, P, LAM_DT_F16, NULL, 1, 0, 8, 0.0f, st) == INV);
    CU_ASSERT(lam_cuda_gemm(h, P, LAM_DT_F32, P, P, LAM_DT_F16, NULL, -1, 8, 8, 0.0f, st) == INV);
    CU_ASSERT(lam_cuda_gemm(h, P, LAM_DT_F32, P, P, LAM_DT_F16, NULL, 1, 8, 8, NAN, st) == INV);
    CU_ASSERT(lam_cuda_gemm(h, P, LAM_DT_F16, P, P, LAM_DT_F16, PF, 1, 8, 8, 0.0f, st) == LAM_ERR_UNSUPPORTED);
    CU_ASSERT(lam_cuda_gemm(h, P, LAM_DT_BF16, P, P, LAM_DT_F16, NULL, 1, 8, 8, 0.0f, st) == LAM_ERR_UNSUPPORTED);
    CU_ASSERT(lam_cuda_gemm(h, P, LAM_DT_F32, P, P, LAM_DT_BF16, PF, 0, 8, 8, 1.0f, st) == LAM_OK);
}

/* A valid description of a small batch; each case below breaks one field. */
static lam_cuda_attn_args_t good_attn(void)
{
    return (lam_cuda_attn_args_t){.n_seq = 2, .row = PI, .pos = PI, .page_start = PI, .pages = PI, .n_tok = 2,
                                  .max_rows = 1, .max_keys = 40, .pool = P, .page_bytes = 2 * 2 * 16 * 64 * 2,
                                  .n_pages = 8, .k_off = 0, .v_off = 2 * 16 * 64 * 2, .head_stride = 16 * 64 * 2,
                                  .page_tokens = 16, .n_kv_heads = 2, .group = 3, .head_dim = 64,
                                  .kv_dtype = LAM_DT_F16, .scale = 0.125f, .q = PF, .out = PF};
}

static void test_attn_args(void)
{
    cudaStream_t st = 0;
    lam_cuda_attn_args_t a;
    lam_cuda_attn_plan_t plan;
#define BAD(field_edit)                                                                                    \
    do {                                                                                                   \
        a = good_attn();                                                                                   \
        field_edit;                                                                                        \
        CU_ASSERT(lam_cuda_attn(&a, NULL, 0, 0, st) == INV);                                               \
        CU_ASSERT(lam_cuda_attn_plan(&a, 0, &plan) == INV);                                                \
        CU_ASSERT(lam_cuda_kv_write(&a, P, P, 128, LAM_DT_F32, st) == INV);                                \
    } while (0)
    BAD(a.row = NULL);
    BAD(a.pages = NULL);
    BAD(a.pool = NULL);
    BAD(a.n_seq = -1);
    BAD(a.max_rows = 0);
    BAD(a.max_keys = 0);
    BAD(a.head_dim = 96);
    BAD(a.head_dim = 0);
    BAD(a.kv_dtype = 3);
    BAD(a.group = 0);
    BAD(a.group = 65);
    BAD(a.n_kv_heads = 0);
    BAD(a.page_tokens = 0);
    BAD(a.n_pages = 0);
    BAD(a.head_stride = 16 * 64 * 2 - 16);           /* heads overlap */
    BAD(a.v_off = 16 * 64 * 2 * 2 + 16);              /* V blocks run past the page */
    BAD(a.k_off = 8);                                 /* not a multiple of 16 */
    BAD(a.page_bytes += 8);
    BAD(a.pool = (uint8_t *)P + 8);
    BAD(a.pages = (int32_t *)ODD);
    BAD(a.n_pages = INT64_MAX);                       /* pool size overflows */
#undef BAD
    a = good_attn();
    CU_ASSERT(lam_cuda_attn(NULL, NULL, 0, 0, st) == INV);
    CU_ASSERT(lam_cuda_attn_plan(&a, 0, NULL) == INV);
    a.q = NULL;
    CU_ASSERT(lam_cuda_attn(&a, NULL, 0, 0, st) == INV);
    a = good_attn();
    a.out = (float *)ODD;
    CU_ASSERT(lam_cuda_attn(&a, NULL, 0, 0, st) == INV);
    a = good_attn();
    CU_ASSERT(lam_cuda_attn(&a, NULL, 4096, 0, st) == INV);          /* NULL workspace with a size */
    CU_ASSERT(lam_cuda_attn(&a, (uint8_t *)P + 4, 4096, 0, st) == INV); /* misaligned workspace */
    CU_ASSERT(lam_cuda_attn(&a, NULL, 0, -1, st) == INV);
    CU_ASSERT(lam_cuda_kv_write(&a, NULL, P, 128, LAM_DT_F32, st) == INV);
    CU_ASSERT(lam_cuda_kv_write(&a, P, P, 127, LAM_DT_F32, st) == INV);
    CU_ASSERT(lam_cuda_kv_write(&a, P, P, 128, 7, st) == INV);
    CU_ASSERT(lam_cuda_kv_write(&a, ODD, P, 128, LAM_DT_F32, st) == INV);
    /* empty batches launch nothing */
    a.n_seq = 0;
    a.n_tok = 0;
    CU_ASSERT(lam_cuda_attn(&a, NULL, 0, 0, st) == LAM_OK);
    CU_ASSERT(lam_cuda_kv_write(&a, P, P, 128, LAM_DT_F32, st) == LAM_OK);
    CU_ASSERT(lam_cuda_attn_workspace_size(64) > 0);
    CU_ASSERT(lam_cuda_attn_workspace_size(0) == 0);
}

void cu_add_bad_arg_tests(void)
{
    CU_pSuite s = CU_add_suite("cuda_bad_args", quiet, loud);
    CU_add_test(s, "row_ops", test_rows_ops);
    CU_add_test(s, "data_ops", test_data_ops);
    CU_add_test(s, "attn", test_attn_args);
}
