/* Helpers shared by the GPU modes of lamina-bench (bench_gpu.c,
 * bench_gpu_e2e.c): the device check, ceilings measured on the device, and
 * event timing. */
#ifndef LAM_TOOLS_BENCH_GPU_H
#define LAM_TOOLS_BENCH_GPU_H

#include <stddef.h>

#include "common/model.h"

/* 1 if a GPU is usable (prints "<mode> on <device>"); else prints why on
 * stderr and returns 0: the mode then exits 3. */
int bench_gpu_ready(const char *mode, char *why, size_t n);

#ifdef LAMINA_HAVE_CUDA
#include "kernels/cuda/lam_cuda.h"

/* LLaMA-3-8B's shape, for models with random device weights. */
extern const lam_model_config_t bench_llama3_8b;

/* Work enqueued on s; timed between device events. */
typedef lam_status_t (*bench_gpu_fn)(void *ud, cudaStream_t s);
/* Median milliseconds over reps (at most 64) after warm runs; -1 on failure. */
double bench_gpu_time_ms(bench_gpu_fn f, void *ud, cudaStream_t s, int warm, int reps);
/* Device-to-device copy of `bytes`: (read + written) GB/s, or -1. */
double bench_gpu_copy_gbps(size_t bytes);
/* cuBLAS n x n x n GEMM (dtype inputs, f32 output and accumulation): TFLOP/s, or -1. */
double bench_gpu_gemm_tflops(int n, int dtype);
#endif

#endif
