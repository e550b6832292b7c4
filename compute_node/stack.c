#include "compute_node/stack.h"
#include "common/log.h"
#include "common/notify.h"
#include "compute_node/backend_cuda.h"
#include "proto/auth.h"

#include <string.h>

lam_stack_err_t lam_stack_open(const lam_stack_cfg_t *c, const lam_model_t *m, lam_stack_t *s)
{
    char token[512], why[256];
    lam_remote_addr_t addrs[64];
    memset(s, 0, sizeof *s);
    int n_nodes = lam_remote_parse_addrs(c->attention, addrs, 64, why, sizeof why);
    if (n_nodes < 0) {
        lam_log_error("--attention: %s", why);
        return LAM_STACK_BAD_ARGS;
    }
    if (lam_auth_load_token(c->token_file, token, sizeof token) != LAM_OK)
        return LAM_STACK_BAD_ARGS;
    s->n_nodes = n_nodes;
    lam_remote_opts_t ro = {.n_nodes = n_nodes, .addrs = addrs, .token = token, .fingerprint = m->fingerprint,
                            .cfg = &m->cfg, .kv_dtype = c->kv_dtype, .act_dtype = c->wire_dtype,
                            .max_tokens = c->batch, .max_seqs = c->max_seqs, .timeout_ms = c->attn_timeout_ms,
                            .spin_us = c->spin_us, .on_exchange = c->on_exchange, .exchange_ud = c->exchange_ud};
    lam_pipe_opts_t po = {.max_tokens = c->batch, .max_seqs = c->max_seqs};
    lam_backend_cuda_opts_t bo = {.gguf = c->gguf};
    if ((c->cuda ? lam_backend_cuda_create(m, &bo, &s->be) : lam_backend_cpu_create(m, false, &s->be)) != LAM_OK)
        return LAM_STACK_FAILED;
    if (lam_remote_create(&ro, &s->r) != LAM_OK)
        return LAM_STACK_BAD_REMOTE;
    if (c->notify)
        lam_notify_status("Connecting to %d attention node(s)", n_nodes);
    if (lam_remote_wait_ready(s->r, c->connect_timeout_ms) != LAM_OK)
        return LAM_STACK_FAILED;
    if (lam_pipe_create(s->be, s->r, &po, &s->p) != LAM_OK)
        return LAM_STACK_FAILED;
    return LAM_STACK_OK;
}

void lam_stack_close(lam_stack_t *s)
{
    lam_pipe_destroy(s->p);
    lam_remote_destroy(s->r);
    lam_backend_destroy(s->be);
    memset(s, 0, sizeof *s);
}
