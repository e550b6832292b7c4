/* Lamina wire format, version 2: what compute nodes and attention nodes say
 * to each other. Every message is one contiguous buffer:
 *
 *   offset  size  field
 *   0       4     magic    0x574D414C ("LAMW" in memory order)
 *   4       2     version  LAM_WIRE_VERSION
 *   6       2     type     lam_msg_type_t
 *   8       4     len      bytes after this 16-byte header
 *   12      4     tag      sender's request number; a reply echoes it
 *   16      len   body     by type, below
 *
 * All integers little-endian, all structs packed (sizes pinned below).
 * Bodies:
 *
 *   HELLO           C→A  lam_wire_hello_t
 *   HELLO_CHALLENGE A→C  lam_wire_challenge_t
 *   HELLO_AUTH      C→A  lam_wire_auth_t
 *   HELLO_OK        A→C  (empty): the connection is authenticated
 *   ATTN            C→A  lam_wire_attn_t, lam_wire_seq_t[n_seq], then
 *                        q [n_tok][n_q_heads][head_dim],
 *                        k [n_tok][n_kv_heads][head_dim],
 *                        v [n_tok][n_kv_heads][head_dim]   (elements of `dtype`)
 *   ATTN_RESULT     A→C  lam_wire_attn_t (same step/layer/mb/shape as the
 *                        request, node_ns set), lam_wire_seq_t[n_seq] with a
 *                        per-sequence status, then o [n_tok][n_q_heads][head_dim].
 *                        Rows of a sequence whose status is not 0 are zero.
 *   SEQ_RELEASE     C→A  lam_wire_release_t, uint64 seq_id[n_seq]
 *   STATS           C→A  (empty)
 *   STATS_REPLY     A→C  lam_wire_stats_t
 *   ERROR           both lam_wire_error_t, then msg_len bytes of text (no NUL)
 *
 * Handshake: the client sends HELLO with a random nonce; the attention node
 * answers with its own nonce, its shard and its proof
 * HMAC-SHA256(token, "lamina-a" ‖ nonce_c ‖ nonce_a); the client checks it and
 * answers with HMAC-SHA256(token, "lamina-c" ‖ nonce_a ‖ nonce_c). Nothing but
 * the HELLO messages is accepted before HELLO_OK.
 *
 * The message enum is append-only: never renumber, never reuse a value.
 * Version 2 gave ATTN_RESULT the node's time for the message (node_ns, the
 * reserved field of version 1, which stays 0 in ATTN). */
#ifndef LAM_PROTO_WIRE_H
#define LAM_PROTO_WIRE_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dtype.h"
#include "common/status.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire format is little-endian; add byte swapping for this host"
#endif

#define LAM_WIRE_MAGIC 0x574D414Cu
#define LAM_WIRE_VERSION 2
#define LAM_WIRE_PACKED __attribute__((packed))

/* Protocol limits, checked by the decoder. */
#define LAM_WIRE_MAX_SEQ 4096u        /* sequences per ATTN message */
#define LAM_WIRE_MAX_TOK 65536u       /* tokens per ATTN message */
#define LAM_WIRE_MAX_HEADS 1024u
#define LAM_WIRE_MAX_HEAD_DIM 1024u
#define LAM_WIRE_MAX_LAYERS 1024u
#define LAM_WIRE_MAX_POS (1u << 24)   /* positions (context) */
#define LAM_WIRE_MAX_RELEASE 65536u
#define LAM_WIRE_MAX_ERROR_TEXT 1024u
#define LAM_WIRE_NONCE 32
#define LAM_WIRE_MAC 32

typedef enum lam_msg_type {
    LAM_MSG_HELLO = 1,
    LAM_MSG_HELLO_CHALLENGE = 2,
    LAM_MSG_HELLO_AUTH = 3,
    LAM_MSG_HELLO_OK = 4,
    LAM_MSG_ATTN = 5,
    LAM_MSG_ATTN_RESULT = 6,
    LAM_MSG_SEQ_RELEASE = 7,
    LAM_MSG_STATS = 8,
    LAM_MSG_STATS_REPLY = 9,
    LAM_MSG_ERROR = 10,
    LAM_MSG_TYPE_END /* one past the last; append above this line */
} lam_msg_type_t;

/* Capability bits in HELLO / HELLO_CHALLENGE. */
enum {
    LAM_CAP_PREFILL_CHUNKS = 1u << 0, /* ATTN chunks longer than one token */
    LAM_CAP_STATS = 1u << 1,
};

typedef struct LAM_WIRE_PACKED lam_wire_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t len;
    uint32_t tag;
} lam_wire_hdr_t;

typedef struct LAM_WIRE_PACKED lam_wire_hello {
    uint32_t caps;
    uint32_t max_msg;          /* largest message the client will send or accept */
    uint64_t model_fingerprint;
    uint16_t shard_index;      /* which of shard_count nodes the client expects this to be */
    uint16_t shard_count;
    uint8_t kv_dtype;          /* lam_dtype_t the client expects the node to store */
    uint8_t act_dtype;         /* q/k/v/o dtype the client will send */
    uint16_t reserved;
    uint8_t nonce[LAM_WIRE_NONCE];
} lam_wire_hello_t;

typedef struct LAM_WIRE_PACKED lam_wire_challenge {
    uint32_t caps;
    uint32_t max_msg;          /* largest message the node accepts */
    uint64_t model_fingerprint;
    uint16_t shard_index;
    uint16_t shard_count;
    uint16_t kv_head_begin;    /* this node's KV heads: [begin, end) */
    uint16_t kv_head_end;
    uint16_t n_layers;
    uint16_t n_heads;          /* query heads of the whole model */
    uint16_t n_kv_heads;       /* KV heads of the whole model */
    uint16_t head_dim;
    uint32_t max_ctx;          /* longest sequence the node holds */
    uint32_t page_tokens;
    uint64_t pages_total;
    uint8_t kv_dtype;
    uint8_t reserved[7];
    uint8_t nonce[LAM_WIRE_NONCE];
    uint8_t mac[LAM_WIRE_MAC];
} lam_wire_challenge_t;

typedef struct LAM_WIRE_PACKED lam_wire_auth {
    uint8_t mac[LAM_WIRE_MAC];
} lam_wire_auth_t;

typedef struct LAM_WIRE_PACKED lam_wire_attn {
    uint64_t step;
    uint16_t layer;
    uint8_t mb;                /* micro-batch, echoed */
    uint8_t dtype;             /* lam_dtype_t of q, k, v (and o in the reply) */
    uint16_t n_seq;
    uint16_t n_q_heads;        /* query heads in this message: the node's share */
    uint16_t n_kv_heads;       /* KV heads in this message: the node's share */
    uint16_t head_dim;
    uint32_t n_tok;            /* Σ seq[i].n_tok */
    uint32_t node_ns;          /* ATTN: 0. ATTN_RESULT: the node's time appending this message's
                                * K/V and running its attention, ns (UINT32_MAX: that or more) */
} lam_wire_attn_t;

typedef struct LAM_WIRE_PACKED lam_wire_seq {
    uint64_t seq_id;           /* chosen by the compute node, unique per connection */
    uint32_t pos;              /* position of the chunk's first token */
    uint16_t n_tok;            /* chunk length (1 for decode) */
    int16_t status;            /* 0 in requests; lam_status_t in results */
} lam_wire_seq_t;

typedef struct LAM_WIRE_PACKED lam_wire_release {
    uint32_t n_seq;
    uint32_t reserved;
} lam_wire_release_t;

typedef struct LAM_WIRE_PACKED lam_wire_stats {
    uint64_t pages_total;
    uint64_t pages_used;
    uint64_t n_seqs;
    uint64_t attn_msgs;        /* ATTN messages served */
    uint64_t attn_tokens;
    uint64_t attn_ns;          /* time appending K/V and running the attention kernel */
    uint64_t bad_msgs;         /* rejected messages, all peers */
} lam_wire_stats_t;

typedef struct LAM_WIRE_PACKED lam_wire_error {
    int32_t code;              /* lam_status_t */
    uint32_t msg_len;
} lam_wire_error_t;

static_assert(sizeof(lam_wire_hdr_t) == 16, "wire header is 16 bytes");
static_assert(sizeof(lam_wire_hello_t) == 56, "HELLO body is 56 bytes");
static_assert(sizeof(lam_wire_challenge_t) == 120, "HELLO_CHALLENGE body is 120 bytes");
static_assert(sizeof(lam_wire_auth_t) == 32, "HELLO_AUTH body is 32 bytes");
static_assert(sizeof(lam_wire_attn_t) == 28, "ATTN fixed part is 28 bytes");
static_assert(sizeof(lam_wire_seq_t) == 16, "sequence entry is 16 bytes");
static_assert(sizeof(lam_wire_release_t) == 8, "SEQ_RELEASE fixed part is 8 bytes");
static_assert(sizeof(lam_wire_stats_t) == 56, "STATS_REPLY body is 56 bytes");
static_assert(sizeof(lam_wire_error_t) == 8, "ERROR fixed part is 8 bytes");

const char *lam_msg_type_name(uint16_t type);

/* A decoded message: copies of the fixed parts, pointers into the buffer
 * for the arrays (which may be unaligned: read them with memcpy or the
 * packed struct types). Valid as long as the buffer is. */
typedef struct lam_msg {
    uint16_t type;
    uint32_t tag;
    union {
        lam_wire_hello_t hello;
        lam_wire_challenge_t challenge;
        lam_wire_auth_t auth;
        lam_wire_stats_t stats;
        struct {
            lam_wire_attn_t h;
            const lam_wire_seq_t *seq;  /* [h.n_seq] */
            const uint8_t *q, *k, *v;   /* ATTN; k, v NULL in ATTN_RESULT */
            const uint8_t *o;           /* ATTN_RESULT */
        } attn;
        struct {
            uint32_t n_seq;
            const uint8_t *ids;         /* n_seq little-endian uint64 */
        } release;
        struct {
            int32_t code;
            uint32_t msg_len;
            const char *msg;            /* not NUL-terminated */
        } error;
    } u;
} lam_msg_t;

/* Checks and decodes one whole message. Structure only: magic, version,
 * known type, exact length for the type, counts within the limits above,
 * Σ chunk lengths == n_tok, chunk lengths >= 1, pos + n_tok within
 * LAM_WIRE_MAX_POS, known dtype, n_q_heads a multiple of n_kv_heads,
 * seq ids unique within the message and nonzero. What the receiver's own
 * configuration allows (its heads, layers, context) is the handler's check.
 * On error writes a one-line reason into why (may be NULL) and returns
 * LAM_ERR_PROTO_VERSION or LAM_ERR_PROTO; *out is then unspecified. */
lam_status_t lam_wire_decode(const void *buf, size_t len, lam_msg_t *out, char *why, size_t why_len);

/* The text of a decoded ERROR message, fit for a log line: the peer's bytes
 * with everything but printable ASCII as '?', NUL-terminated. */
void lam_wire_error_text(const lam_msg_t *m, char out[LAM_WIRE_MAX_ERROR_TEXT + 1]);

/* Encoding. Each *_size function returns the whole message size (header
 * included), or 0 if the arguments exceed the protocol limits. Writers fill
 * a caller-provided buffer of at least that size and return the message
 * length; tensors are written by the caller at the offsets the layout gives
 * (lam_wire_attn_layout). */
size_t lam_wire_put_hdr(void *buf, uint16_t type, uint32_t body_len, uint32_t tag);
size_t lam_wire_put_hello(void *buf, uint32_t tag, const lam_wire_hello_t *b);
size_t lam_wire_put_challenge(void *buf, uint32_t tag, const lam_wire_challenge_t *b);
size_t lam_wire_put_auth(void *buf, uint32_t tag, const lam_wire_auth_t *b);
size_t lam_wire_put_ok(void *buf, uint32_t tag);
size_t lam_wire_put_stats_req(void *buf, uint32_t tag);
size_t lam_wire_put_stats(void *buf, uint32_t tag, const lam_wire_stats_t *b);
size_t lam_wire_error_size(size_t msg_len);
size_t lam_wire_put_error(void *buf, uint32_t tag, int32_t code, const char *msg); /* text cut at LAM_WIRE_MAX_ERROR_TEXT */
size_t lam_wire_release_size(uint32_t n_seq);
size_t lam_wire_put_release(void *buf, uint32_t tag, const uint64_t *ids, uint32_t n_seq);

/* Byte offsets (from the start of the message) of an ATTN or ATTN_RESULT
 * message's parts. */
typedef struct lam_wire_attn_layout {
    size_t seq;                /* lam_wire_seq_t[n_seq] */
    size_t q, k, v;            /* ATTN */
    size_t o;                  /* ATTN_RESULT */
    size_t total;              /* 0: exceeds the limits */
} lam_wire_attn_layout_t;

/* result = 0: ATTN; 1: ATTN_RESULT. */
lam_wire_attn_layout_t lam_wire_attn_layout(const lam_wire_attn_t *h, int result);
/* Writes header, fixed part and sequence table (n_tok is taken from h);
 * returns the total size from the layout, 0 if h is outside the limits. */
size_t lam_wire_put_attn(void *buf, uint32_t tag, int result, const lam_wire_attn_t *h, const lam_wire_seq_t *seq);

#endif
