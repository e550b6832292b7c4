/* cuda_attn_bench: lam_cuda_attn's K/V read rate against the device's own
 * copy rate measured in the same run (cudaMemcpy device to device, read +
 * write bytes). Not a test: nothing here is asserted.
 *
 *   cuda_attn_bench [hd H G]      default: sweeps two shapes
 *
 * One line per case: shape, batch, context, split plan, time per call,
 * GB/s of K/V (+ q/out) traffic, and that rate over the copy rate. */
#include "kernels/cuda/lam_cuda.h"

#include <stdio.h>
#include <stdlib.h>

#define CHECK(x)                                                                            \
    do {                                                                                    \
        cudaError_t e_ = (x);                                                               \
        if (e_ != cudaSuccess) {                                                            \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

static double copy_gbps(void)
{
    size_t bytes = (size_t)1 << 30;
    void *a, *b;
    CHECK(cudaMalloc(&a, bytes));
    CHECK(cudaMalloc(&b, bytes));
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    CHECK(cudaEventRecord(e0, 0));
    for (int i = 0; i < 10; i++)
        CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0));
    CHECK(cudaEventRecord(e1, 0));
    CHECK(cudaEventSynchronize(e1));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    cudaFree(a);
    cudaFree(b);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 10.0 * 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
}

/* batch sequences of ctx keys each, decoding one token; f16 cache, 16-token pages. */
static void run_case(int hd, int H, int G, int batch, int ctx, double copy)
{
    const int pt = 16, esz = 2;
    size_t head_stride = (size_t)pt * hd * esz, page_bytes = 2 * (size_t)H * head_stride;
    int pages_per_seq = (ctx + pt - 1) / pt;
    int64_t n_pages = (int64_t)batch * pages_per_seq;
    if ((double)n_pages * page_bytes > 40e9)
        return;
    uint8_t *pool;
    CHECK(cudaMalloc((void **)&pool, (size_t)n_pages * page_bytes));
    CHECK(cudaMemset(pool, 0x2c, (size_t)n_pages * page_bytes)); /* f16 0x2c2c: small finite values */
    int32_t *h_row = malloc((batch + 1) * 4), *h_pos = malloc(batch * 4), *h_ps = malloc(batch * 4);
    int32_t *h_pages = malloc(n_pages * 4);
    for (int s = 0; s <= batch; s++)
        h_row[s] = s;
    for (int s = 0; s < batch; s++) {
        h_pos[s] = ctx - 1;
        h_ps[s] = s * pages_per_seq;
    }
    for (int64_t p = 0; p < n_pages; p++) /* spread a sequence's pages over the pool */
        h_pages[p] = (int32_t)((p * 7919) % n_pages);
    int32_t *d_row, *d_pos, *d_ps, *d_pages;
    float *q, *out;
    size_t nq = (size_t)batch * H * G * hd;
    CHECK(cudaMalloc((void **)&d_row, (batch + 1) * 4));
    CHECK(cudaMalloc((void **)&d_pos, batch * 4));
    CHECK(cudaMalloc((void **)&d_ps, batch * 4));
    CHECK(cudaMalloc((void **)&d_pages, n_pages * 4));
    CHECK(cudaMalloc((void **)&q, nq * 4));
    CHECK(cudaMalloc((void **)&out, nq * 4));
    CHECK(cudaMemset(q, 0, nq * 4));
    CHECK(cudaMemcpy(d_row, h_row, (batch + 1) * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_pos, h_pos, batch * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_ps, h_ps, batch * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_pages, h_pages, n_pages * 4, cudaMemcpyHostToDevice));
    size_t ws_bytes = lam_cuda_attn_workspace_size(hd);
    void *ws;
    CHECK(cudaMalloc(&ws, ws_bytes));
    lam_cuda_attn_args_t a = {.n_seq = batch, .row = d_row, .pos = d_pos, .page_start = d_ps, .pages = d_pages,
                              .n_tok = batch, .max_rows = 1, .max_keys = ctx, .pool = pool, .page_bytes = page_bytes,
                              .n_pages = n_pages, .k_off = 0, .v_off = (size_t)H * head_stride,
                              .head_stride = head_stride, .page_tokens = pt, .n_kv_heads = H, .group = G,
                              .head_dim = hd, .kv_dtype = LAM_DT_F16, .scale = 0.125f, .q = q, .out = out};
    lam_cuda_attn_plan_t plan;
    if (lam_cuda_attn_plan(&a, ws_bytes, &plan) != LAM_OK || lam_cuda_attn(&a, ws, ws_bytes, 0, 0) != LAM_OK)
        exit(1);
    CHECK(cudaDeviceSynchronize());
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    int iters = 50;
    CHECK(cudaEventRecord(e0, 0));
    for (int i = 0; i < iters; i++)
        lam_cuda_attn(&a, ws, ws_bytes, 0, 0);
    CHECK(cudaEventRecord(e1, 0));
    CHECK(cudaEventSynchronize(e1));
    CHECK(cudaGetLastError());
    float ms;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    double t = ms * 1e-3 / iters;
    double bytes = (double)batch * ctx * H * hd * esz * 2 + 2.0 * nq * 4;
    double gbps = bytes / t / 1e9;
    printf("hd %3d H %d G %d batch %4d ctx %6d | %3d splits x %5d keys, %6lld blocks | %8.1f us | %7.1f GB/s | "
           "%.2f of copy\n",
           hd, H, G, batch, ctx, plan.n_splits, plan.split_keys, (long long)plan.n_blocks, t * 1e6, gbps,
           gbps / copy);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(pool);
    cudaFree(d_row);
    cudaFree(d_pos);
    cudaFree(d_ps);
    cudaFree(d_pages);
    cudaFree(q);
    cudaFree(out);
    cudaFree(ws);
    free(h_row);
    free(h_pos);
    free(h_ps);
    free(h_pages);
}

int main(int argc, char **argv)
{
    char name[256];
    if (lam_cuda_probe(0, name, sizeof name) != LAM_OK) {
        printf("cuda_attn_bench: no CUDA device (%s)\n", name);
        return 0;
    }
    double copy = copy_gbps();
    printf("device: %s; device-to-device copy %.1f GB/s (read + write)\n", name, copy);
    int shapes[2][3] = {{64, 3, 3}, {128, 8, 4}}, n_shapes = 2;
    if (argc == 4) {
        shapes[0][0] = atoi(argv[1]);
        shapes[0][1] = atoi(argv[2]);
        shapes[0][2] = atoi(argv[3]);
        n_shapes = 1;
    }
    const int batches[] = {1, 8, 32, 128}, ctxs[] = {1024, 4096, 16384, 65536};
    for (int s = 0; s < n_shapes; s++)
        for (int b = 0; b < 4; b++)
            for (int c = 0; c < 4; c++)
                run_case(shapes[s][0], shapes[s][1], shapes[s][2], batches[b], ctxs[c], copy);
    return 0;
}
