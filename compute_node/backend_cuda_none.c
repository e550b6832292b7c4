/* The CUDA entry points of the compute node in a build without CUDA (no
 * nvcc at configure time, or LAMINA_CUDA=OFF): each says so and fails, so
 * that callers need no #ifdef and `--device cuda` gets a clear answer. */
#include "compute_node/backend_cuda.h"
#include "compute_node/mono_cuda.h"

#include "common/log.h"

#include <stdio.h>

static lam_status_t no_cuda(const char *what)
{
    lam_log_error("%s: built without CUDA (rebuild with nvcc installed, LAMINA_CUDA=ON)", what);
    return LAM_ERR_UNSUPPORTED;
}

lam_status_t lam_backend_cuda_probe(int device, char *why, size_t n)
{
    (void)device;
    snprintf(why, n, "built without CUDA");
    return LAM_ERR_UNSUPPORTED;
}

lam_status_t lam_backend_cuda_create(const lam_model_t *m, const lam_backend_cuda_opts_t *o, lam_backend_t **out)
{
    (void)m, (void)o, (void)out;
    return no_cuda("cuda backend");
}

lam_status_t lam_backend_cuda_create_random(const lam_model_config_t *cfg, const lam_backend_cuda_opts_t *o,
                                            uint64_t seed, lam_backend_t **out)
{
    (void)cfg, (void)o, (void)seed, (void)out;
    return no_cuda("cuda backend");
}

bool lam_backend_is_cuda(const lam_backend_t *b)
{
    (void)b;
    return false;
}

void lam_backend_cuda_mb_pinned(const lam_backend_mb_t *mb, void **ptr, size_t *len)
{
    (void)mb;
    *ptr = NULL;
    *len = 0;
}

size_t lam_backend_cuda_weight_bytes(const lam_backend_t *b)
{
    (void)b;
    return 0;
}

lam_status_t lam_mono_cuda_create(const lam_model_t *m, const lam_mono_cuda_opts_t *o, lam_mono_cuda_t **out)
{
    (void)m, (void)o, (void)out;
    return no_cuda("monolithic GPU mode");
}

lam_status_t lam_mono_cuda_create_random(const lam_model_config_t *cfg, const lam_mono_cuda_opts_t *o, uint64_t seed,
                                         lam_mono_cuda_t **out)
{
    (void)cfg, (void)o, (void)seed, (void)out;
    return no_cuda("monolithic GPU mode");
}

void lam_mono_cuda_destroy(lam_mono_cuda_t *e) { (void)e; }

lam_status_t lam_mono_cuda_forward(lam_mono_cuda_t *e, const lam_batch_t *b, float *logits)
{
    (void)e, (void)b, (void)logits;
    return LAM_ERR_UNSUPPORTED;
}

void lam_mono_cuda_slot_reset(lam_mono_cuda_t *e, int slot) { (void)e, (void)slot; }

int lam_mono_cuda_slot_len(const lam_mono_cuda_t *e, int slot)
{
    (void)e, (void)slot;
    return 0;
}

void lam_mono_cuda_limits(const lam_mono_cuda_t *e, int *n_slots, int *max_ctx, int *max_batch_tokens)
{
    (void)e;
    *n_slots = *max_ctx = *max_batch_tokens = 0;
}

const lam_model_config_t *lam_mono_cuda_config(const lam_mono_cuda_t *e)
{
    (void)e;
    return NULL;
}

void lam_mono_cuda_gen_engine(lam_mono_cuda_t *e, lam_gen_engine_t *out)
{
    (void)e;
    *out = (lam_gen_engine_t){0};
}
