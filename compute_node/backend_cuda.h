/* The CUDA compute backend (the lam_backend_i of backend.h on one GPU) and
 * what the rest of the compute node needs to know about it.
 *
 * Weights live on the GPU in f16 or bf16 (norms, biases in f32): matrices
 * are uploaded as the GGUF file stores them and dequantised on the device
 * when the file is given and the type has a device dequantiser (F32, F16,
 * BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), otherwise converted from the f32 host
 * copy in lam_model_t. GEMMs run through cuBLAS with f32 accumulation; the
 * residual stream and everything between GEMMs is f32.
 *
 * Each micro-batch has its own CUDA stream and cuBLAS handle; a
 * device-to-host and a host-to-device copy stream move q/k/v out and the
 * attention output in, ordered by events, through pinned host buffers
 * (cudaHostAlloc) that attn_in returns and attn_out_buf hands out. Logits
 * come back through a double-buffered pinned staging area in chunks.
 *
 * Without a usable GPU, create returns LAM_ERR_NO_DEVICE after one log line;
 * in a build without CUDA it returns LAM_ERR_UNSUPPORTED ("built without
 * CUDA"). */
#ifndef LAM_BACKEND_CUDA_H
#define LAM_BACKEND_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "common/gguf.h"
#include "common/model.h"
#include "compute_node/backend.h"

typedef struct lam_backend_cuda_opts {
    int device;               /* CUDA device index */
    int wdtype;               /* weights and GEMM inputs: LAM_DT_F16 or LAM_DT_BF16; 0 (f32) means f16 */
    const lam_gguf_t *gguf;   /* the model's file, for quantised uploads; NULL: from the f32 host weights */
    size_t staging_bytes;     /* pinned staging for uploads and logits; 0: 32 MiB */
} lam_backend_cuda_opts_t;

/* LAM_OK if CUDA device `device` can be used (why gets its description),
 * else LAM_ERR_NO_DEVICE (why: the reason) or, in a build without CUDA,
 * LAM_ERR_UNSUPPORTED. Logs nothing: for early refusals and test skips. */
lam_status_t lam_backend_cuda_probe(int device, char *why, size_t n);

/* Uploads the model's weights. The model may be freed afterwards. */
lam_status_t lam_backend_cuda_create(const lam_model_t *m, const lam_backend_cuda_opts_t *o, lam_backend_t **out);

/* A model of shape cfg with random weights made on the device (seeded):
 * for benchmarks of models too large to load from a file here. Matrices
 * are uniform in ±sqrt(3 / inputs), norms 1, no biases, no rope_freqs. */
lam_status_t lam_backend_cuda_create_random(const lam_model_config_t *cfg, const lam_backend_cuda_opts_t *o,
                                            uint64_t seed, lam_backend_t **out);

/* Whether b is a CUDA backend (created by one of the two above). */
bool lam_backend_is_cuda(const lam_backend_t *b);

/* The pinned host memory of a micro-batch (q, k, v out and the attention
 * output in, back to back): where a transport can register memory
 * (ucp_mem_map) to send from and receive into without a bounce copy. */
void lam_backend_cuda_mb_pinned(const lam_backend_mb_t *mb, void **ptr, size_t *len);

/* Device weight bytes (what one batch-1 decode step reads). */
size_t lam_backend_cuda_weight_bytes(const lam_backend_t *b);

#endif
