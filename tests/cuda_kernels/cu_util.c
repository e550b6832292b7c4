#include "tests/cuda_kernels/cu_util.h"

#include <CUnit/Basic.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

unsigned g_seed;
bool g_quick;
static uint64_t g_rng;

void cu_seed_init(void)
{
    const char *s = getenv("LAMINA_TEST_SEED");
    g_seed = s ? (unsigned)strtoul(s, NULL, 10) : (unsigned)time(NULL);
    g_rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)g_seed << 1 | 1);
    printf("cuda_kernels: seed %u (LAMINA_TEST_SEED=%u repeats it)\n", g_seed, g_seed);
    const char *q = getenv("LAMINA_TEST_QUICK");
    g_quick = q && *q && strcmp(q, "0");
}

uint64_t cu_rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

int cu_irand(int n) { return (int)(cu_rnd() % (uint64_t)n); }
float cu_frand(void) { return (float)(cu_rnd() >> 40) / (float)(1 << 24) * 2.0f - 1.0f; }

void *cu_alloc(cu_buf_t *b, size_t bytes, int fill)
{
    b->bytes = bytes;
    b->base = NULL;
    if (cudaMalloc((void **)&b->base, bytes + 2 * CU_GUARD) != cudaSuccess) {
        CU_FAIL_FATAL("cudaMalloc");
    }
    CU_ASSERT_FATAL(cudaMemset(b->base, 0xa5, CU_GUARD) == cudaSuccess);
    CU_ASSERT_FATAL(cudaMemset(b->base + CU_GUARD, fill, bytes) == cudaSuccess);
    CU_ASSERT_FATAL(cudaMemset(b->base + CU_GUARD + bytes, 0xa5, CU_GUARD) == cudaSuccess);
    return b->base + CU_GUARD;
}

bool cu_guards_ok(const cu_buf_t *b)
{
    uint8_t g[2 * CU_GUARD];
    if (cudaMemcpy(g, b->base, CU_GUARD, cudaMemcpyDeviceToHost) != cudaSuccess ||
        cudaMemcpy(g + CU_GUARD, b->base + CU_GUARD + b->bytes, CU_GUARD, cudaMemcpyDeviceToHost) != cudaSuccess)
        return false;
    for (int i = 0; i < 2 * CU_GUARD; i++)
        if (g[i] != 0xa5)
            return false;
    return true;
}

void cu_free(cu_buf_t *b)
{
    cudaFree(b->base);
    b->base = NULL;
}

void cu_up(void *dst, const void *src, size_t n)
{
    CU_ASSERT_FATAL(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice) == cudaSuccess);
}

void cu_down(void *dst, const void *src, size_t n)
{
    CU_ASSERT_FATAL(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost) == cudaSuccess);
}

bool cu_sync(void)
{
    cudaError_t e = cudaStreamSynchronize(0);
    if (e == cudaSuccess)
        e = cudaGetLastError();
    if (e != cudaSuccess)
        printf("\n  CUDA error: %s\n", cudaGetErrorString(e));
    return e == cudaSuccess;
}
