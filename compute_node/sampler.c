#include "compute_node/sampler.h"
#include "kernels/cpu/ops.h"

#include <math.h>
#include <stdlib.h>

lam_status_t lam_sampler_init(lam_sampler_t *s, const lam_sampler_params_t *p, int vocab)
{
    if (vocab < 1 || !(p->temperature >= 0.0f) || p->top_k < 0 || !(p->top_p > 0.0f && p->top_p <= 1.0f))
        return LAM_ERR_INVALID_ARG;
    s->p = *p;
    s->vocab = vocab;
    /* splitmix64 seeding so that nearby seeds give unrelated streams */
    uint64_t z = p->seed + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    s->rng = (z ^ (z >> 31)) | 1;
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    s->prob = malloc((size_t)vocab * sizeof *s->prob);
    if (!s->cand || !s->prob) {
        lam_sampler_free(s);
        return LAM_ERR_NO_MEMORY;
    }
    return LAM_OK;
}

void lam_sampler_free(lam_sampler_t *s)
{
    free(s->cand);
    free(s->prob);
    s->cand = NULL;
    s->prob = NULL;
}

float lam_sampler_uniform(lam_sampler_t *s)
{
    /* xorshift64* */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545f4914f6cdd1dull) >> 40) / 16777216.0f;
}

typedef struct lam_cand cand_t;

/* Larger logit first; ties: lower id first (matches greedy argmax). */
static int cand_before(const cand_t *a, const cand_t *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_cand(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    return cand_before(x, y) ? -1 : cand_before(y, x) ? 1 : 0;
}

/* Min-heap sift-down: the root is the worst of the kept k candidates. */
static void sift_down(cand_t *h, int k, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < k && cand_before(&h[w], &h[l]))
            w = l;
        if (r < k && cand_before(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        cand_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* Leaves the best n (or k) candidates sorted at the front; returns their count. */
static int select_top(lam_sampler_t *s, const float *logits, int k)
{
    int n = s->vocab;
    cand_t *c = s->cand;
    if (k <= 0 || k >= n) {
        for (int i = 0; i < n; i++)
            c[i] = (cand_t){logits[i], i};
        qsort(c, (size_t)n, sizeof *c, cmp_cand);
        return n;
    }
    for (int i = 0; i < k; i++)
        c[i] = (cand_t){logits[i], i};
    for (int i = k / 2 - 1; i >= 0; i--)
        sift_down(c, k, i);
    for (int i = k; i < n; i++) {
        cand_t x = {logits[i], i};
        if (cand_before(&x, &c[0])) {
            c[0] = x;
            sift_down(c, k, 0);
        }
    }
    qsort(c, (size_t)k, sizeof *c, cmp_cand);
    return k;
}

int32_t lam_sampler_sample(lam_sampler_t *s, const float *logits)
{
    if (s->p.temperature == 0.0f)
        return lam_argmax_f32(logits, s->vocab);
    int n = select_top(s, logits, s->p.top_k);
    const cand_t *c = s->cand;
    /* softmax with temperature over the candidates */
    float max = c[0].logit, sum = 0.0f;
    for (int i = 0; i < n; i++) {
        s->prob[i] = expf((c[i].logit - max) / s->p.temperature);
        sum += s->prob[i];
    }
    /* nucleus: smallest prefix whose mass reaches top_p */
    float cum = 0.0f;
    int keep = n;
    for (int i = 0; i < n; i++) {
        s->prob[i] /= sum;
        cum += s->prob[i];
        if (cum >= s->p.top_p) {
            keep = i + 1;
            break;
        }
    }
    float mass = 0.0f;
    for (int i = 0; i < keep; i++)
        mass += s->prob[i];
    float r = lam_sampler_uniform(s) * mass;
    for (int i = 0; i < keep; i++) {
        r -= s->prob[i];
        if (r < 0.0f)
            return c[i].id;
    }
    return c[keep - 1].id;
}
