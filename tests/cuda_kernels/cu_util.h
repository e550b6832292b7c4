/* Helpers of the CUDA kernel tests: the seeded RNG, guarded device buffers,
 * host<->device copies that fail the test on error. */
#ifndef LAM_TEST_CU_UTIL_H
#define LAM_TEST_CU_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern unsigned g_seed;
extern bool g_quick; /* LAMINA_TEST_QUICK=1: smaller cases */

void cu_seed_init(void);            /* LAMINA_TEST_SEED or the clock; prints it */
uint64_t cu_rnd(void);
int cu_irand(int n);                /* [0, n) */
float cu_frand(void);               /* U(-1, 1) */

/* A device allocation with GUARD bytes of 0xa5 on both sides of the payload
 * (payload 256-byte aligned, filled with `fill` bytes: 0xff = NaN in every
 * float type). */
#define CU_GUARD 256
typedef struct cu_buf {
    uint8_t *base;
    size_t bytes;
} cu_buf_t;
void *cu_alloc(cu_buf_t *b, size_t bytes, int fill);
bool cu_guards_ok(const cu_buf_t *b);
void cu_free(cu_buf_t *b);
void cu_up(void *dst, const void *src, size_t n);
void cu_down(void *dst, const void *src, size_t n);
/* cudaStreamSynchronize(0) + cudaGetLastError(): true when both succeed. */
bool cu_sync(void);

/* Test registration per file. */
void cu_add_bad_arg_tests(void);    /* no device needed */
void cu_add_op_tests(void);
void cu_add_data_tests(void);
void cu_add_attn_tests(void);
void cu_add_sample_tests(void);

#endif
