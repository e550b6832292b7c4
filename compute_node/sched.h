/* Continuous batching over the offloaded pipeline. Requests queue up and
 * join at step boundaries; every step carries one token of each decoding
 * sequence plus prompt chunks (at most `chunk` tokens of one prompt) up to
 * max_step_tokens; sequences leave when done and are released on the
 * attention nodes. A failed attention node loses the KV of every active
 * request (sharding is by head). By default those requests fail with a
 * clear status; with recompute_on_loss they go back to the head of the
 * queue and, once the node is back, their prompt and the tokens already
 * generated are prefilled again under a new sequence id (the KV rebuilt by
 * recomputation), after which generation goes on where it stopped: clients
 * see a pause, and the same tokens as without the loss (greedy, or the
 * same seed: the sampler's state is kept). Queued requests wait for the
 * node to come back. */
#ifndef LAM_SCHED_H
#define LAM_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "compute_node/pipeline.h"
#include "compute_node/sampler.h"

typedef struct lam_sched lam_sched_t;

typedef struct lam_sched_opts {
    int max_seqs;          /* active sequences at once */
    int max_queue;         /* requests waiting at most (beyond: refused) */
    int chunk;             /* prompt tokens per sequence per step */
    int max_step_tokens;   /* tokens per step (<= the pipeline's max_tokens) */
    int max_ctx;           /* prompt + generated tokens per sequence */
    double queue_timeout_s;/* a request waiting longer fails (0: never) */
    int recompute_on_loss; /* times a request's KV is rebuilt after node losses
                              before it fails (0: fail at the first loss) */
} lam_sched_opts_t;

typedef struct lam_sched_hooks {
    void (*on_token)(void *ud, int req, int32_t tok);
    /* last call for req: LAM_OK when it finished normally */
    void (*on_done)(void *ud, int req, lam_status_t st);
    bool (*is_eog)(void *ud, int32_t tok); /* NULL: never */
    void *ud;
} lam_sched_hooks_t;

lam_status_t lam_sched_create(lam_pipe_t *p, lam_remote_t *r, int vocab, const lam_sched_opts_t *o,
                              const lam_sched_hooks_t *h, lam_sched_t **out);
void lam_sched_destroy(lam_sched_t *s);

/* Queues a request (the prompt is copied). Returns its id (>= 0), or a
 * negative lam_status_t: LAM_ERR_RANGE (does not fit the context),
 * LAM_ERR_INVALID_ARG (bad tokens or sampler), LAM_ERR_NO_MEMORY (queue full). */
int lam_sched_submit(lam_sched_t *s, const int32_t *prompt, int n_prompt, int max_new,
                     const lam_sampler_params_t *sp);

/* Runs one step. Returns the tokens processed (0: nothing could run, e.g.
 * idle or waiting for attention nodes). */
int lam_sched_step(lam_sched_t *s);

/* Requests queued or running. */
int lam_sched_pending(const lam_sched_t *s);
/* Requests running (admitted, holding a sequence on the attention nodes). */
int lam_sched_active(const lam_sched_t *s);

/* Removes request `req` (queued or running) between steps: call it from
 * the thread that steps, never from a hook. A running request's sequence
 * is released on the attention nodes at once; on_done is not called (the
 * caller asked). Returns LAM_OK, or LAM_ERR_NOT_FOUND if req is not
 * pending (already finished, or never submitted). */
lam_status_t lam_sched_cancel(lam_sched_t *s, int req);

#endif
