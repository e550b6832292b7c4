/* The offloaded compute stack both modes of lamina-compute-node run on
 * (serve_run.c, and main.c's --prompt with --attention): the compute
 * backend, the attention-node client, connected and ready, and the
 * micro-batch pipeline over them. */
#ifndef LAM_STACK_H
#define LAM_STACK_H

#include <stdbool.h>

#include "common/gguf.h"
#include "common/model.h"
#include "compute_node/backend.h"
#include "compute_node/pipeline.h"
#include "compute_node/remote.h"

typedef struct lam_stack_cfg {
    const char *attention;        /* host:port[,...] */
    const char *token_file;       /* NULL: $LAMINA_CLUSTER_TOKEN */
    int kv_dtype, wire_dtype;     /* lam_dtype_t */
    int batch, max_seqs;          /* per step */
    int attn_timeout_ms, connect_timeout_ms, spin_us;
    bool cuda;                    /* CUDA (backend_cuda.h) instead of the CPU */
    const lam_gguf_t *gguf;       /* for the CUDA backend's uploads (may be NULL) */
    bool notify;                  /* STATUS to the service manager while connecting */
    /* optional, passed to lam_remote_opts_t */
    void (*on_exchange)(void *ud, int layer, double seconds);
    void *exchange_ud;
} lam_stack_cfg_t;

typedef struct lam_stack {
    int n_nodes;
    lam_backend_t *be;
    lam_remote_t *r;
    lam_pipe_t *p;
} lam_stack_t;

/* Which step failed; the callers turn it into their exit status. */
typedef enum lam_stack_err {
    LAM_STACK_OK = 0,
    LAM_STACK_BAD_ARGS,           /* the address list or the token (logged) */
    LAM_STACK_BAD_REMOTE,         /* lam_remote_create refused the options */
    LAM_STACK_FAILED,             /* the backend, the connection or the pipeline */
} lam_stack_err_t;

/* Sets up *s; on failure *s holds what was made so far, which
 * lam_stack_close releases. */
lam_stack_err_t lam_stack_open(const lam_stack_cfg_t *c, const lam_model_t *m, lam_stack_t *s);
/* Releases what lam_stack_open made; a zeroed *s is fine. */
void lam_stack_close(lam_stack_t *s);

#endif
