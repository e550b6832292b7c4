/* lamina-compute-node's serving mode: connect to the attention nodes, run
 * the serving loop (serve.h) behind the HTTP API (http.h) until SIGTERM or
 * SIGINT, then drain and exit. */
#ifndef LAM_SERVE_RUN_H
#define LAM_SERVE_RUN_H

#include <stdbool.h>
#include <stddef.h>

#include "common/gguf.h"
#include "common/model.h"
#include "common/tokenizer.h"
#include "compute_node/sampler.h"

typedef struct lam_serve_cfg {
    /* attention nodes */
    const char *attention;        /* host:port[,...] */
    const char *token_file;       /* NULL: $LAMINA_CLUSTER_TOKEN */
    int kv_dtype, wire_dtype;     /* lam_dtype_t */
    int attn_timeout_ms, connect_timeout_ms, spin_us;
    /* scheduling */
    int ctx, batch, max_seqs, max_queue;
    int recompute_on_loss;        /* lam_sched_opts_t's */
    int threads;                  /* OpenMP threads for the dense work (0: all cores) */
    /* requests */
    int default_max_tokens;
    lam_sampler_params_t defaults;
    /* HTTP */
    const char *http_listen;
    int http_port;
    const char *api_key;          /* NULL: none */
    const char *model_name;
    size_t max_body;
    int drain_timeout_s;
    /* the compute backend */
    bool cuda;                    /* CUDA (backend_cuda.h) instead of the CPU */
    const lam_gguf_t *gguf;       /* the model's file, for the CUDA backend's uploads (may be NULL) */
} lam_serve_cfg_t;

/* Serves until a termination signal; returns the exit status (0 after a
 * clean shutdown, 1 when the service could not start, 2 for a
 * configuration that cannot work). */
int lam_serve_run(const lam_serve_cfg_t *c, const lam_model_t *m, const lam_tok_t *tok);

#endif
