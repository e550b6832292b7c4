/* LLaMA-family model: configuration from GGUF metadata and weights
 * dequantised to float32 at load. Weight matrices are row-major
 * [out][in] (GGUF ne[0] = in), so y = W·x reads each row contiguously. */
#ifndef LAM_MODEL_H
#define LAM_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/gguf.h"
#include "common/status.h"

typedef enum lam_rope_type {
    LAM_ROPE_NORM = 0, /* rotate adjacent pairs (x[2i], x[2i+1]): GGUF LLaMA (Q/K rows permuted) */
    LAM_ROPE_NEOX = 2, /* rotate halves (x[i], x[i+n/2]): Qwen2 and HF-ordered weights */
} lam_rope_type_t;

typedef struct lam_model_config {
    char arch[32];
    int n_layers;
    int dim;          /* hidden size */
    int n_heads;      /* query heads */
    int n_kv_heads;   /* key/value heads (GQA when < n_heads) */
    int head_dim;
    int ffn_dim;
    int vocab;
    int max_ctx;      /* training context length */
    int n_rot;        /* rotary dimensions per head (<= head_dim) */
    float rope_theta;
    float rope_freq_scale; /* linear scaling: positions multiplied by this (1 = none) */
    lam_rope_type_t rope_type;
    float norm_eps;
    bool tied_embeddings;
    bool qkv_bias;
} lam_model_config_t;

/* How a matrix's weights were stored decides how llama.cpp-style kernels
 * round the activations multiplied with them: block-quantised weights meet
 * activations quantised to 8 bits (blocks of 32 for Q4_0..Q8_0, 256 for
 * K-quants), F16/BF16 weights meet F16/BF16 activations. The reference
 * engine can emulate this (lam_engine_opts_t.quant_act) so
 * that it agrees with llama.cpp token for token; see kernels/cpu/ops.h. */
typedef enum lam_act_fmt {
    LAM_ACT_F32 = 0, LAM_ACT_F16, LAM_ACT_BF16, LAM_ACT_Q8_32, LAM_ACT_Q8_K,
} lam_act_fmt_t;

enum { LAM_W_Q, LAM_W_K, LAM_W_V, LAM_W_O, LAM_W_GATE, LAM_W_UP, LAM_W_DOWN, LAM_W_COUNT };

typedef struct lam_layer {
    float *attn_norm;   /* [dim] */
    float *wq;          /* [n_heads*head_dim][dim] */
    float *wk;          /* [n_kv_heads*head_dim][dim] */
    float *wv;          /* [n_kv_heads*head_dim][dim] */
    float *bq, *bk, *bv; /* [q_dim], [kv_dim], [kv_dim] or NULL */
    float *wo;          /* [dim][n_heads*head_dim] */
    float *ffn_norm;    /* [dim] */
    float *w_gate;      /* [ffn_dim][dim] */
    float *w_up;        /* [ffn_dim][dim] */
    float *w_down;      /* [dim][ffn_dim] */
    uint8_t act[LAM_W_COUNT]; /* lam_act_fmt_t of each matrix, by LAM_W_* */
    float *wmin[LAM_W_COUNT]; /* [out][in/32] block minimums of Q4_1/Q5_1 matrices, else NULL */
    /* The file's blocks of Q4_1 and Q8_0 matrices (the types the CPU dense
     * path multiplies without expanding the whole matrix), else NULL;
     * wblk_type is the GGUF type. */
    uint8_t *wblk[LAM_W_COUNT];
    uint32_t wblk_type[LAM_W_COUNT];
} lam_layer_t;

typedef struct lam_model {
    lam_model_config_t cfg;
    float *tok_embd;    /* [vocab][dim] */
    float *out_norm;    /* [dim] */
    float *lm_head;     /* [vocab][dim]; == tok_embd when tied */
    uint8_t lm_head_act;/* lam_act_fmt_t */
    float *lm_head_min; /* [vocab][dim/32] as lam_layer_t.wmin */
    uint8_t *lm_head_blk; /* as lam_layer_t.wblk; == tok_embd_blk when tied */
    uint32_t lm_head_blk_type;
    uint8_t *tok_embd_blk; /* as lam_layer_t.wblk */
    uint32_t tok_embd_blk_type;
    float *rope_freqs;  /* [n_rot/2] frequency divisors (LLaMA-3 style scaling) or NULL */
    lam_layer_t *layers;/* [n_layers] */
    uint64_t fingerprint; /* hash of metadata and tensor table: same file <=> same value */
    size_t weight_bytes;
} lam_model_t;

lam_act_fmt_t lam_act_fmt_for(uint32_t ggml_type);

/* Reads and checks the configuration (every dimension positive, heads
 * dividing, head_dim even...). Errors name the offending key. */
lam_status_t lam_model_config_from_gguf(const lam_gguf_t *g, lam_model_config_t *cfg);

/* Loads all weights (dequantised to f32); checks each tensor's shape. */
lam_status_t lam_model_load(const lam_gguf_t *g, lam_model_t **out);

/* Rows longer than this are always expanded to f32 (the CPU product keeps
 * one expanded tile of them on the stack). */
#define LAM_MODEL_BLOCK_ROW_MAX 8192

typedef struct lam_model_load_opts {
    /* Matrices whose blocks are kept (wblk, lm_head_blk, tok_embd_blk) are
     * not expanded: their f32 pointer is NULL. For the CPU dense path, which
     * reads the blocks (a fifth of the memory for Q4_1); the CUDA backend
     * uploads from f32 and needs the full load. */
    bool blocks_only;
} lam_model_load_opts_t;

/* lam_model_load with options (NULL: the defaults, as lam_model_load). */
lam_status_t lam_model_load_opts(const lam_gguf_t *g, const lam_model_load_opts_t *o, lam_model_t **out);
void lam_model_free(lam_model_t *m);

/* Default model path: $LAMINA_MODEL_DIR (or ~/.cache/lamina)/SmolLM2-135M-Instruct.Q4_1.gguf */
const char *lam_model_default_path(char *buf, size_t len);

#endif
