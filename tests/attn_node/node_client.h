/* Test helpers for the attention node: a tiny model file, starting and
 * stopping a real lamina-attention-node process, and a compute-node side
 * built on lam_net + lam_wire that keeps every message it receives. */
#ifndef LAM_TEST_NODE_CLIENT_H
#define LAM_TEST_NODE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/net.h"
#include "proto/wire.h"

#define NC_TOKEN "attention-node-test-token-0123456789"

/* The tiny model: 2 layers, 4 query heads, 2 KV heads, head_dim 16,
 * context 256. Returns the path of a temporary GGUF file (config only). */
const char *nc_tiny_model(void);
enum { NC_LAYERS = 2, NC_HEADS = 4, NC_KV_HEADS = 2, NC_HEAD_DIM = 16, NC_CTX = 256 };
/* Fingerprint of a model file (lam_gguf_fingerprint). */
uint64_t nc_fingerprint(const char *path);

/* Sets the UCX environment for loopback tests (this process and children). */
void nc_env(void);

typedef struct nc_node {
    pid_t pid;
    int port;
    int out_fd;     /* its stdout */
} nc_node_t;

/* Starts the node with --model model --port 0 --log-level warn and the
 * given extra arguments (NULL-terminated), and waits for its listening
 * line. false (after printing why) if it did not come within 30 s. */
bool nc_node_start(nc_node_t *n, const char *model, const char *const *extra);
/* SIGTERM, then waits; returns the exit status (128 + signal if killed,
 * -1 on timeout: then it is killed). */
int nc_node_stop(nc_node_t *n);

/* Runs the binary with args to completion (10 s); returns its exit status
 * and its stderr in err (may be NULL). */
int nc_run(const char *const *args, char *err, size_t errlen);

/* A connection to a node, on the process-wide lam_net_t. */
typedef struct nc_conn nc_conn_t;

bool nc_init(void);
void nc_shutdown(void);
/* Connects; NULL if the connection did not come up within 5 s. */
nc_conn_t *nc_connect(int port);
/* Closes (if still open) and frees. */
void nc_free(nc_conn_t *c);
bool nc_closed(const nc_conn_t *c);
/* Sends a copy of buf. */
bool nc_send(nc_conn_t *c, const void *buf, size_t len);
/* Next received message (caller frees *buf), waiting up to timeout_ms;
 * false on timeout or when the connection closed with nothing queued. */
bool nc_recv(nc_conn_t *c, void **buf, size_t *len, int timeout_ms);
/* Next message decoded into m (its buffer kept in c until the next
 * nc_recv_msg); false on timeout, close or decode error. */
bool nc_recv_msg(nc_conn_t *c, lam_msg_t *m, int timeout_ms);
/* Waits until the node closes c. */
bool nc_wait_closed(nc_conn_t *c, int timeout_ms);

/* HELLO with defaults from the arguments; *out gets the challenge. */
lam_wire_hello_t nc_hello_default(uint64_t fingerprint, int shard_index, int shard_count, int kv_dtype,
                                  int act_dtype);
bool nc_hello(nc_conn_t *c, const lam_wire_hello_t *h, lam_wire_challenge_t *out);
/* Full handshake with token; true when HELLO_OK came back and the node's
 * proof checked out. */
bool nc_handshake(nc_conn_t *c, const lam_wire_hello_t *h, const char *token, lam_wire_challenge_t *out);
/* Expects an ERROR with `code` (any of PROTO / PROTO_VERSION if code is
 * LAM_ERR_PROTO and proto_any) and then the connection closed. */
bool nc_expect_error_close(nc_conn_t *c, int code, bool proto_any);

/* Builds an ATTN message: q [n_tok][n_q][hd], k, v [n_tok][n_kv][hd] f32,
 * converted to dtype. Caller frees. */
void *nc_attn_build(const lam_wire_attn_t *h, const lam_wire_seq_t *seq, const float *q, const float *k,
                    const float *v, uint32_t tag, size_t *len);
/* STATS round trip. */
bool nc_stats(nc_conn_t *c, lam_wire_stats_t *out);

#endif
