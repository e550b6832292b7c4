/* Token sampling: greedy, temperature, top-k, top-p, with a seeded RNG so a
 * given seed reproduces the same output. */
#ifndef LAM_SAMPLER_H
#define LAM_SAMPLER_H

#include <stdint.h>

#include "common/status.h"

typedef struct lam_sampler_params {
    float temperature; /* 0 = greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    uint64_t seed;
} lam_sampler_params_t;

typedef struct lam_sampler {
    lam_sampler_params_t p;
    uint64_t rng;
    int vocab;
    struct lam_cand { float logit; int32_t id; } *cand; /* [vocab] candidates */
    float *prob;       /* [vocab] */
} lam_sampler_t;

lam_status_t lam_sampler_init(lam_sampler_t *s, const lam_sampler_params_t *p, int vocab);
void lam_sampler_free(lam_sampler_t *s);
/* Picks a token from logits[vocab] (logits are not modified). */
int32_t lam_sampler_sample(lam_sampler_t *s, const float *logits);
/* Uniform in [0, 1) from the sampler's stream. */
float lam_sampler_uniform(lam_sampler_t *s);

#endif
