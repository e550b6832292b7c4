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
} lam_status_t;

const char *lam_status_str(lam_status_t st);

#endif
