/* The compute node's service metrics, rendered in the Prometheus text
 * format for GET /metrics. Writers are the HTTP threads (requests by
 * endpoint and status), the scheduler thread (tokens, batch, queue) and
 * the remote comm thread (per-layer exchange latency); every update is a
 * few atomic adds or one short critical section, cheap enough for the
 * step loop. */
#ifndef LAM_METRICS_H
#define LAM_METRICS_H

#include <stdint.h>

#include "compute_node/remote.h"
#include "compute_node/serve_text.h"

typedef struct lam_metrics lam_metrics_t;

/* Endpoints counted separately; anything else is "other". */
typedef enum lam_metrics_ep {
    LAM_EP_COMPLETIONS,
    LAM_EP_CHAT,
    LAM_EP_MODELS,
    LAM_EP_HEALTH,
    LAM_EP_METRICS,
    LAM_EP_OTHER,
    LAM_EP_COUNT
} lam_metrics_ep_t;

/* window_s: span of the tokens/s gauge (seconds, 1..60). */
lam_status_t lam_metrics_create(int window_s, lam_metrics_t **out);
void lam_metrics_destroy(lam_metrics_t *m);

void lam_metrics_request(lam_metrics_t *m, lam_metrics_ep_t ep, int http_status);
void lam_metrics_prompt_tokens(lam_metrics_t *m, long n);
void lam_metrics_gen_tokens(lam_metrics_t *m, long n);
/* After each scheduler step: running sequences, requests waiting. */
void lam_metrics_sched(lam_metrics_t *m, int running, int waiting);
void lam_metrics_ttft(lam_metrics_t *m, double seconds);
/* Matches lam_remote_opts_t.on_exchange (ud: the lam_metrics_t). */
void lam_metrics_exchange(void *ud, int layer, double seconds);

/* Generated tokens per second over the last window (for tests and logs). */
double lam_metrics_tokens_per_s(lam_metrics_t *m);

/* Appends the exposition text; r may be NULL (no attention-node series). */
lam_status_t lam_metrics_render(lam_metrics_t *m, lam_remote_t *r, int n_nodes, lam_serve_str_t *out);

#endif
