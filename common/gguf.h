/* GGUF reader (versions 2 and 3).
 *
 * The file is mmap'ed read-only. lam_gguf_open() parses the header, every
 * metadata key/value and every tensor descriptor, and validates them against
 * the file before returning: string and array lengths, value types, tensor
 * ranks and dimensions, element-count overflow, data offsets, alignment and
 * bounds. Anything wrong gives one error line (also copied to `err`) and a
 * negative status; nothing from the file is trusted after that.
 *
 * Accessors never fail on a valid handle except by "not found" or "wrong
 * type"; tensor data pointers point into the mapping and live until close.
 */
#ifndef LAM_GGUF_H
#define LAM_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define LAM_GGUF_MAX_DIMS 4

/* Metadata value types, as numbered in the file. */
typedef enum lam_gguf_vtype {
    LAM_GGUF_UINT8 = 0, LAM_GGUF_INT8 = 1, LAM_GGUF_UINT16 = 2, LAM_GGUF_INT16 = 3,
    LAM_GGUF_UINT32 = 4, LAM_GGUF_INT32 = 5, LAM_GGUF_FLOAT32 = 6, LAM_GGUF_BOOL = 7,
    LAM_GGUF_STRING = 8, LAM_GGUF_ARRAY = 9, LAM_GGUF_UINT64 = 10, LAM_GGUF_INT64 = 11,
    LAM_GGUF_FLOAT64 = 12,
    LAM_GGUF_VTYPE_COUNT
} lam_gguf_vtype_t;

/* Tensor types, as numbered by ggml. Only those listed in lam_ggml_type_info
 * with a dequantiser can be loaded. */
typedef enum lam_ggml_type {
    LAM_GGML_F32 = 0, LAM_GGML_F16 = 1, LAM_GGML_Q4_0 = 2, LAM_GGML_Q4_1 = 3,
    LAM_GGML_Q5_0 = 6, LAM_GGML_Q5_1 = 7, LAM_GGML_Q8_0 = 8, LAM_GGML_Q8_1 = 9,
    LAM_GGML_Q2_K = 10, LAM_GGML_Q3_K = 11, LAM_GGML_Q4_K = 12, LAM_GGML_Q5_K = 13,
    LAM_GGML_Q6_K = 14, LAM_GGML_Q8_K = 15, LAM_GGML_BF16 = 30,
} lam_ggml_type_t;

typedef struct lam_gguf_str {
    const char *ptr; /* NOT NUL-terminated: points into the file */
    uint64_t len;
} lam_gguf_str_t;

typedef struct lam_gguf_tensor {
    char *name;                     /* NUL-terminated copy */
    uint32_t type;                  /* lam_ggml_type_t */
    uint32_t n_dims;
    int64_t ne[LAM_GGUF_MAX_DIMS];  /* ne[0] is the contiguous (row) dimension; unused = 1 */
    int64_t n_elem;
    uint64_t offset;                /* relative to the data section */
    uint64_t nbytes;
    const void *data;               /* into the mapping */
} lam_gguf_tensor_t;

typedef struct lam_gguf lam_gguf_t;

/* Opens and validates `path`. On failure returns a negative status and, if
 * err != NULL, writes a one-line reason into err[errlen]. */
lam_status_t lam_gguf_open(const char *path, lam_gguf_t **out, char *err, size_t errlen);
void lam_gguf_close(lam_gguf_t *g);

uint32_t lam_gguf_version(const lam_gguf_t *g);
uint64_t lam_gguf_file_size(const lam_gguf_t *g);
/* File offset of the tensor data section (tensor offsets count from it). */
uint64_t lam_gguf_data_offset(const lam_gguf_t *g);
/* FNV-1a 64 of the header (metadata and tensor table): identifies the model. */
uint64_t lam_gguf_fingerprint(const lam_gguf_t *g);

/* ---- metadata ---- */
int64_t lam_gguf_n_kv(const lam_gguf_t *g);
int64_t lam_gguf_find_key(const lam_gguf_t *g, const char *key); /* -1 if absent */
lam_gguf_str_t lam_gguf_key_at(const lam_gguf_t *g, int64_t i);
lam_gguf_vtype_t lam_gguf_kv_type(const lam_gguf_t *g, int64_t i);

/* Scalars: convert between integer widths when the value fits, else
 * LAM_ERR_RANGE; LAM_ERR_NOT_FOUND if absent; LAM_ERR_GGUF_BAD_TYPE on a
 * type mismatch (e.g. string asked as int). */
lam_status_t lam_gguf_get_u64(const lam_gguf_t *g, const char *key, uint64_t *out);
lam_status_t lam_gguf_get_u32(const lam_gguf_t *g, const char *key, uint32_t *out);
lam_status_t lam_gguf_get_i64(const lam_gguf_t *g, const char *key, int64_t *out);
lam_status_t lam_gguf_get_f32(const lam_gguf_t *g, const char *key, float *out); /* float32/64 */
lam_status_t lam_gguf_get_bool(const lam_gguf_t *g, const char *key, bool *out);
lam_status_t lam_gguf_get_str(const lam_gguf_t *g, const char *key, lam_gguf_str_t *out);

/* Arrays: element type and count. Numeric arrays have contiguous data (in
 * file byte order = little endian); string arrays are read by index. */
lam_status_t lam_gguf_get_arr(const lam_gguf_t *g, const char *key, lam_gguf_vtype_t *elem_type,
                              uint64_t *n, const void **data);
lam_status_t lam_gguf_get_arr_str(const lam_gguf_t *g, const char *key, uint64_t idx,
                                  lam_gguf_str_t *out);

/* ---- tensors ---- */
int64_t lam_gguf_n_tensors(const lam_gguf_t *g);
const lam_gguf_tensor_t *lam_gguf_tensor_at(const lam_gguf_t *g, int64_t i);
const lam_gguf_tensor_t *lam_gguf_find_tensor(const lam_gguf_t *g, const char *name);

/* ---- tensor types ---- */
const char *lam_ggml_type_name(uint32_t type);      /* "?" if unknown */
/* Block size (elements) and bytes per block; false if the type is unknown. */
bool lam_ggml_type_size(uint32_t type, int64_t *block_elems, int64_t *block_bytes);
/* Dequantises n elements (n a multiple of the block size) to float32. */
lam_status_t lam_dequant(uint32_t type, const void *src, float *dst, int64_t n);
bool lam_dequant_supported(uint32_t type);

#endif
