/* Test helper: a fake attention node, for tests of the compute side
 * (compute_node/remote.c) without attention-node processes.
 *
 * One loopback UCX listener, progressed by its own thread, plays every
 * shard of a small synthetic model (FN_* below): whichever shard a HELLO
 * asks for. It does the real handshake (cluster token proofs, fingerprint,
 * shard) and answers ATTN with plain f32 causal attention (fn_ref_attn) over
 * the q/k/v it received, keeping each sequence's keys and values per
 * connection and dropping them on SEQ_RELEASE or when the connection
 * closes. Activations and KV are f32 on the wire.
 *
 * A test arms one misbehaviour at a time, done by shard FN_BAD_SHARD to the
 * next ATTN or HELLO it gets; fn_counts says what happened. Call
 * np_loopback_env and lam_auth_init first. */
#ifndef LAM_TEST_FAKE_NODE_H
#define LAM_TEST_FAKE_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* the synthetic model: shard i of 2 holds KV head i and query heads 2i, 2i+1 */
#define FN_LAYERS 2
#define FN_HEADS 4
#define FN_KV_HEADS 2
#define FN_HEAD_DIM 8
#define FN_SHARDS 2
#define FN_Q_DIM (FN_HEADS * FN_HEAD_DIM)
#define FN_KV_DIM (FN_KV_HEADS * FN_HEAD_DIM)
#define FN_MAX_CTX 32
#define FN_MAX_TOK 16                /* tokens per ATTN it takes */
#define FN_MAX_SEQS 4                /* sequences per ATTN it takes */
#define FN_FINGERPRINT 0x6c616d696e612d31ull
#define FN_BAD_SHARD 1               /* the shard that misbehaves when armed */
/* the node time a well-behaved shard reports in ATTN_RESULT */
#define FN_NODE_NS(shard, layer) (1000u * (uint32_t)((shard) + 1) + (uint32_t)(layer))

/* What FN_BAD_SHARD does with the armed ATTN. */
typedef enum fn_attn_bad {
    FN_BAD_CUT,             /* the right result, last byte missing */
    FN_BAD_HEADER_ONLY,     /* its first 8 bytes */
    FN_BAD_MAGIC,
    FN_BAD_VERSION,
    FN_BAD_TYPE_REQUEST,    /* type ATTN (a request) on a result body */
    FN_BAD_TYPE_UNKNOWN,
    FN_BAD_HELLO_OK,        /* a well-formed HELLO_OK instead of the result */
    FN_BAD_TAG_FUTURE,      /* a tag never issued */
    FN_BAD_TAG_ZERO,        /* a tag older than the connection */
    FN_BAD_STEP,
    FN_BAD_LAYER,
    FN_BAD_MB,              /* the other micro-batch's number on this request's tag */
    FN_BAD_MB_UNSUBMITTED,  /* the other micro-batch, with the next (unissued) tag */
    FN_BAD_SEQ_FEWER,       /* last sequence left out (n_seq, n_tok, o consistent) */
    FN_BAD_SEQ_MORE,        /* one sequence more */
    FN_BAD_SEQ_UNKNOWN,     /* a sequence id that was not asked for */
    FN_BAD_SEQ_ORDER,       /* the first two entries swapped */
    FN_BAD_SEQ_POS,
    FN_BAD_SEQ_SPLIT,       /* same total, different chunk lengths */
    FN_BAD_DTYPE_F16,       /* o in f16 (sized for it) where f32 was asked */
    FN_BAD_DTYPE_UNKNOWN,
    FN_BAD_O_SHORT,         /* 4 bytes of o missing, header length agrees */
    FN_BAD_O_LONG,          /* 4 bytes more */
    FN_BAD_Q_HEADS,         /* twice the shard's query heads (o sized for it) */
    FN_BAD_KV_HEADS,
    FN_BAD_HEAD_DIM,
    FN_BAD_STATUS_POSITIVE,
    FN_BAD_STATUS_BELOW,    /* -1000: below every status group */
    FN_BAD_STATUS_NOT_SEQ,  /* LAM_ERR_PROTO: a status, but not a per-sequence one */
    FN_BAD_DUPLICATE,       /* the right result, twice */
    FN_BAD_EXTRA_RESULT,    /* the right result, then one for the other micro-batch, never submitted */
    FN_BAD_OVERSIZE,        /* a 64 KiB message */
    FN_BAD_ERROR_OPEN,      /* ERROR (text with control characters), connection left open */
    FN_BAD_ERROR_CLOSE,     /* ERROR, then closed */
    FN_BAD_CLOSE,           /* closed without an answer */
    FN_BAD_SILENT,          /* no answer */
    FN_OK_NAN_INF,          /* the right result with o[0] NaN, o[row + 3] +Inf, the last -Inf
                               (indices in this shard's o: [n_tok][2 heads][head_dim]) */
    FN_OK_SEQ_KV_FULL,      /* second sequence LAM_ERR_KV_FULL, its rows zero */
} fn_attn_bad_t;

/* What FN_BAD_SHARD does with the armed HELLO. */
typedef enum fn_hs_bad {
    FN_HS_MAC,              /* proof made with another token */
    FN_HS_FINGERPRINT,
    FN_HS_SHARD,
    FN_HS_KV_RANGE,
    FN_HS_LAYERS,
    FN_HS_HEAD_DIM,
    FN_HS_KV_DTYPE,
    FN_HS_MAX_MSG,          /* 256 bytes: below one micro-batch */
    FN_HS_TRUNCATED,
    FN_HS_OK_FIRST,         /* HELLO_OK without a challenge */
    FN_HS_RESULT_FIRST,     /* an ATTN_RESULT before authentication */
    FN_HS_STATS_FIRST,      /* a STATS_REPLY before authentication, then a good challenge */
    FN_HS_ERROR,            /* ERROR, connection left open */
    FN_HS_CHALLENGE_TWICE,  /* after HELLO_AUTH a second challenge instead of HELLO_OK */
    FN_HS_SILENT,           /* no reply */
} fn_hs_bad_t;

typedef struct fn_node fn_node_t;

typedef struct fn_counts {
    int authed[FN_SHARDS];  /* handshakes completed */
    int closed[FN_SHARDS];  /* connections closed after HELLO */
    int bad_closed;         /* connections closed after misbehaving */
    int bad_auth;           /* HELLO_AUTH after a challenge the compute side had to refuse */
    int seqs;               /* sequences held, all connections */
    int errors;             /* what the compute side sent and should not have */
    char first_error[160];
} fn_counts_t;

/* Listens on 127.0.0.1 (any free port) and starts its thread; 0 or -1. */
int fn_start(const char *token, fn_node_t **out);
/* Stops the thread and closes everything; destroy the compute side first
 * (its graceful closes need this side to progress). */
void fn_stop(fn_node_t *f);
int fn_port(const fn_node_t *f);

/* The next ATTN on FN_BAD_SHARD gets `how`. hold: the other shard's answer
 * to that request is held back until the misbehaving connection closes (by
 * then the compute side must treat it as stale). */
void fn_arm_attn(fn_node_t *f, fn_attn_bad_t how, bool hold);
/* The next HELLO on FN_BAD_SHARD gets `how`. auth_ok: the compute side may
 * still answer with HELLO_AUTH (it has no reason to refuse before). kick:
 * close FN_BAD_SHARD's authenticated connection now, so a HELLO follows. */
void fn_arm_hello(fn_node_t *f, fn_hs_bad_t how, bool auth_ok, bool kick);
/* Disarms; returns whether the armed misbehaviour happened. */
bool fn_disarm(fn_node_t *f);

void fn_counts(fn_node_t *f, fn_counts_t *out);
/* Waits until bad_closed >= want, at most cap_s; returns bad_closed. */
int fn_wait_bad_closed(fn_node_t *f, int want, double cap_s);

/* Causal attention, plain f32: n_tok new tokens at positions pos.. of one
 * sequence attend to its keys and values [0, pos + n_tok), scale
 * 1/sqrt(FN_HEAD_DIM). q and o rows hold n_q heads, q_stride / o_stride
 * floats apart; k and v rows hold n_kv heads, kv_stride apart, one per
 * position. Query head h reads KV head h / (n_q / n_kv). */
void fn_ref_attn(int n_q, int n_kv, int pos, int n_tok, const float *q, size_t q_stride, const float *k,
                 const float *v, size_t kv_stride, float *o, size_t o_stride);

#endif
