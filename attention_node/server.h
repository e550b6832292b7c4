/* The attention node's protocol server: one event-loop thread serving
 * compute nodes over lam_net (proto/net.h) with the messages of
 * proto/wire.h, keeping their KV in a lam_kv_t (kv.h) and running
 * attention on it through an executor (exec.h: CPU or GPU).
 *
 * Per connection: HELLO (fingerprint, shard and KV dtype must match ours)
 * → HELLO_CHALLENGE (our proof) → HELLO_AUTH (theirs) → HELLO_OK; nothing
 * else is accepted before. Then ATTN, SEQ_RELEASE, STATS and ERROR.
 * A message that does not decode, does not fit our configuration or comes
 * out of turn gets an ERROR reply and that connection is closed; the node
 * keeps serving the others. Per-sequence failures (KV full, position,
 * context) are statuses inside ATTN_RESULT and leave the connection open.
 * Sequence ids are scoped to their connection; closing a connection
 * releases its sequences.
 *
 * All buffers are sized at creation from the configuration (max_batch_tokens
 * bounds every ATTN message); per connection, a small pool of reply buffers
 * is taken when it authenticates, grown (to a bound) only while a peer has
 * more replies in flight than the pool holds. */
#ifndef LAM_ATTENTION_NODE_SERVER_H
#define LAM_ATTENTION_NODE_SERVER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Where the KV pages live and attention runs (attention_node/exec.h). */
typedef enum lam_an_device {
    LAM_AN_DEVICE_CPU = 0,
    LAM_AN_DEVICE_CUDA = 1,
} lam_an_device_t;

typedef struct lam_an_config {
    /* the model (whole, not this shard) */
    uint64_t fingerprint;
    int n_layers, n_heads, n_kv_heads, head_dim;
    /* this node */
    int shard_index, shard_count;   /* KV heads [i*n_kv/N, (i+1)*n_kv/N) */
    int kv_dtype;                   /* lam_dtype_t */
    size_t kv_capacity;             /* bytes of KV pages */
    int page_tokens;
    int max_ctx;
    int max_seqs;
    int max_batch_tokens;           /* tokens per ATTN message */
    const char *token;              /* cluster token */
    const char *listen_addr;        /* NULL: 127.0.0.1 */
    int port;                       /* 0: any */
    int recv_bufs;                  /* 0: 8 */
    int send_bufs;                  /* reply buffers per connection; 0: 4 */
    int spin_us;                    /* keep polling this long after the last event before
                                       sleeping in epoll (wake-up latency vs idle CPU); 0: never */
    int device;                     /* lam_an_device_t */
    int cuda_device;                /* GPU index for LAM_AN_DEVICE_CUDA */
} lam_an_config_t;

typedef struct lam_an_server lam_an_server_t;

/* Checks the configuration against itself and the wire limits
 * (LAM_ERR_CONFIG with a logged reason), takes the KV cache, scratch and
 * transport. With LAM_AN_DEVICE_CUDA: LAM_ERR_NO_DEVICE without a usable
 * GPU, LAM_ERR_UNSUPPORTED in a build without CUDA (see exec.h). */
lam_status_t lam_an_server_create(const lam_an_config_t *cfg, lam_an_server_t **out);

/* Largest message this node accepts (HELLO_CHALLENGE.max_msg): an f32 ATTN
 * of max_batch_tokens tokens, one per sequence, with this shard's heads, or
 * a SEQ_RELEASE of LAM_WIRE_MAX_RELEASE ids, whichever is larger. 0 if the
 * configuration exceeds the wire limits. */
size_t lam_an_max_msg(const lam_an_config_t *cfg);

/* Listens on cfg->listen_addr:cfg->port; *bound_port gets the port. */
lam_status_t lam_an_server_listen(lam_an_server_t *s, int *bound_port);

/* Serves until *stop becomes nonzero (LAM_OK), or until the attention
 * executor fails (its status: the GPU is gone or broken). */
lam_status_t lam_an_server_run(lam_an_server_t *s, volatile sig_atomic_t *stop);

/* Closes every connection and frees everything. */
void lam_an_server_destroy(lam_an_server_t *s);

#endif
