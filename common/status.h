/* Lamina status codes: one enum for the whole project.
 * LAM_OK is zero; errors are negative and grouped by area (hundreds). */
#ifndef LAM_STATUS_H
#define LAM_STATUS_H

typedef enum lam_status {
    LAM_OK = 0,
    /* generic */
    LAM_ERR_INVALID_ARG = -1,
    LAM_ERR_NO_MEMORY = -2,
    LAM_ERR_IO = -3,
    LAM_ERR_UNSUPPORTED = -4,
    LAM_ERR_OVERFLOW = -5,
    LAM_ERR_NOT_FOUND = -6,
    LAM_ERR_RANGE = -7,
    /* model files (GGUF) */
    LAM_ERR_GGUF_MAGIC = -100,
    LAM_ERR_GGUF_VERSION = -101,
    LAM_ERR_GGUF_TRUNCATED = -102,
    LAM_ERR_GGUF_BAD_TYPE = -103,
    LAM_ERR_GGUF_BAD_SHAPE = -104,
    LAM_ERR_GGUF_BAD_OFFSET = -105,
    LAM_ERR_GGUF_BAD_KEY = -106,
    LAM_ERR_MODEL_CONFIG = -120,
    /* tokenizer */
    LAM_ERR_TOKENIZER = -200,
    /* configuration */
    LAM_ERR_CONFIG = -300,
    /* wire protocol (a peer sent something we reject) */
    LAM_ERR_PROTO = -400,          /* malformed message */
    LAM_ERR_PROTO_VERSION = -401,  /* magic or protocol version mismatch */
    LAM_ERR_AUTH = -402,           /* cluster token challenge failed */
    LAM_ERR_MODEL_MISMATCH = -403, /* peers loaded different models or shards */
    /* transport */
    LAM_ERR_NET = -500,            /* UCX or socket failure */
    LAM_ERR_CONN_CLOSED = -501,    /* peer went away */
    LAM_ERR_TIMEOUT = -502,
    /* KV cache and sequences (per-sequence errors on the wire) */
    LAM_ERR_KV_FULL = -600,        /* no free pages left */
    LAM_ERR_SEQ_UNKNOWN = -601,    /* sequence id not held by this node */
    LAM_ERR_SEQ_POS = -602,        /* chunk does not continue the sequence */
    LAM_ERR_CTX_FULL = -603,       /* sequence longer than the node's context limit */
    /* CUDA devices (kernels/cuda) */
    LAM_ERR_CUDA = -700,           /* a CUDA runtime call failed */
    LAM_ERR_CUDA_OOM = -701,       /* device memory exhausted */
    LAM_ERR_NO_DEVICE = -702,      /* no CUDA driver or device */
    LAM_ERR_CUBLAS = -703,         /* a cuBLAS call failed */
} lam_status_t;

const char *lam_status_str(lam_status_t st);

#endif
