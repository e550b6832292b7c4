/* The compute node's side of attention offload: connections to N attention
 * nodes (node i holds shard i: KV heads [i·n_kv/N, (i+1)·n_kv/N) and their
 * query heads). The compute thread submits a micro-batch's q/k/v for one
 * layer (lam_remote_submit) and later collects the attention output
 * (lam_remote_wait); in between it is free to run the other micro-batch's
 * dense work. The UCX worker is shared under a lock: lam_remote_submit packs
 * and sends from the calling thread when the worker is free, lam_remote_wait
 * polls it for up to spin_us, and a communication thread, asleep on the
 * worker's event fd otherwise, takes in answers that arrive while the
 * compute thread is busy, reconnects, and runs timers.
 *
 * Failure model: if a node's connection drops (or it misses the result
 * deadline) every micro-batch in flight fails with LAM_ERR_CONN_CLOSED
 * (LAM_ERR_TIMEOUT). A node that breaks the protocol (a malformed or
 * unexpected ATTN_RESULT, an ERROR message) is dropped the same way and
 * also reads as LAM_ERR_CONN_CLOSED; NaN/Inf in o and per-sequence KV
 * statuses are data, not violations. The node's KV is gone, and lam_remote_epoch() moves
 * on: sequences started before that are dead everywhere and the caller
 * fails their requests. The comm thread keeps reconnecting (and redoing the
 * handshake) every reconnect_ms; lam_remote_ready() tells when all nodes
 * are back. */
#ifndef LAM_REMOTE_H
#define LAM_REMOTE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/model.h"
#include "common/status.h"
#include "proto/wire.h"

typedef struct lam_remote lam_remote_t;

typedef struct lam_remote_addr {
    char host[256];
    int port;
} lam_remote_addr_t;

typedef struct lam_remote_opts {
    int n_nodes;                    /* must divide cfg->n_kv_heads */
    const lam_remote_addr_t *addrs; /* [n_nodes], node i serves shard i */
    const char *token;              /* shared cluster token */
    uint64_t fingerprint;           /* the model's, checked against each node's */
    const lam_model_config_t *cfg;
    int kv_dtype;                   /* lam_dtype_t the nodes must store */
    int act_dtype;                  /* q/k/v/o on the wire */
    int max_tokens;                 /* tokens per micro-batch */
    int max_seqs;                   /* sequences per micro-batch */
    int timeout_ms;                 /* per-layer result deadline (default 30000) */
    int reconnect_ms;               /* retry period for lost nodes (default 500) */
    int spin_us;                    /* lam_remote_wait polls the network from the calling
                                       thread this long before sleeping (wake-up latency
                                       vs CPU; 0: always sleep) */
    /* optional, for metrics: called on the thread running the network (the
     * comm thread, or one inside lam_remote_submit/wait) when every node has
     * answered a micro-batch, with the time from lam_remote_submit to the
     * last answer; must be cheap and must not call back into lam_remote */
    void (*on_exchange)(void *ud, int layer, double seconds);
    void *exchange_ud;
} lam_remote_opts_t;

typedef struct lam_remote_seq {
    uint64_t id;                    /* nonzero, unique while the sequence lives */
    int32_t pos;                    /* position of the chunk's first token */
    int32_t n_tok;                  /* chunk length */
} lam_remote_seq_t;

typedef struct lam_remote_node_info {
    bool up;
    char peer[300];
    lam_wire_stats_t stats;         /* last STATS_REPLY (zero until one came) */
    uint64_t losses;                /* connections lost so far */
} lam_remote_node_info_t;

/* Checks the options, starts the comm thread and starts connecting. Does
 * not wait: see lam_remote_wait_ready. */
lam_status_t lam_remote_create(const lam_remote_opts_t *o, lam_remote_t **out);
void lam_remote_destroy(lam_remote_t *r);

bool lam_remote_ready(lam_remote_t *r);
/* Waits until every node is connected and authenticated. */
lam_status_t lam_remote_wait_ready(lam_remote_t *r, int timeout_ms);
/* Increments whenever a node is lost. */
uint64_t lam_remote_epoch(lam_remote_t *r);

/* Starts micro-batch mb (0 or 1) of one layer: q [n_tok][n_heads*head_dim],
 * k, v [n_tok][n_kv_heads*head_dim] in f32, rows in seqs order; the output
 * o [n_tok][n_heads*head_dim] (f32) is written by the network thread as the
 * nodes answer. seqs, q, k, v must stay unchanged, and o untouched, until
 * lam_remote_wait(mb) returns. Fails at once (LAM_ERR_CONN_CLOSED) if a
 * node is down. */
lam_status_t lam_remote_submit(lam_remote_t *r, int mb, uint64_t step, int layer, const lam_remote_seq_t *seqs,
                               int n_seq, int n_tok, const float *q, const float *k, const float *v, float *o);

/* Waits for micro-batch mb: o is complete, and seq_status [n_seq] gets per
 * sequence 0 or the node's error for it (LAM_ERR_KV_FULL, ...). Returns
 * LAM_OK, or the failure of the whole micro-batch. */
lam_status_t lam_remote_wait(lam_remote_t *r, int mb, int16_t *seq_status);

/* After lam_remote_wait(mb) and until the next submit of mb: the longest
 * time one node reported spending on it (K/V append and attention, ns): the
 * part of the round trip that is not exchange. */
uint32_t lam_remote_node_ns(lam_remote_t *r, int mb);

/* From the compute thread between dense operations (lam_backend_t.poll,
 * arg = r): while a micro-batch is in flight, one non-blocking round of
 * network work if the comm thread is not in one, so requests and answers
 * move without waiting for that thread to be scheduled on a busy core. */
void lam_remote_poll(void *arg);

/* From the compute thread: polled = true promises that it calls
 * lam_remote_poll between its operations while it computes with a
 * micro-batch in flight (the CPU backend does, after every matrix product).
 * UCX activity then no longer wakes the comm thread during that work: on a
 * shared core each wake-up preempts the computing thread, and the answers
 * are taken in at its next poll anyway (measured on 2 cores: the products
 * of a micro-batch whose partner's attention was remote took 28% longer
 * with the comm thread waking beside them). The comm thread still runs its
 * timers every 20 ms and takes over whenever the compute thread sleeps in
 * lam_remote_wait. */
void lam_remote_set_polled(lam_remote_t *r, bool polled);

/* Tells every connected node to drop these sequences. Never blocks. */
void lam_remote_release(lam_remote_t *r, const uint64_t *ids, int n);

/* Asks every node for STATS (answers arrive in the background) and copies
 * what is known of node i. */
void lam_remote_node_info(lam_remote_t *r, int i, lam_remote_node_info_t *out);
void lam_remote_request_stats(lam_remote_t *r);

/* Parses "host:port[,host:port...]" into addrs (at most max); returns the
 * count or -1 with a message in why. */
int lam_remote_parse_addrs(const char *s, lam_remote_addr_t *addrs, int max, char *why, size_t why_len);

#endif
