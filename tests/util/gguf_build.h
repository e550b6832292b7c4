/* Test helper: builds GGUF files byte by byte, valid or deliberately broken. */
#ifndef LAM_TEST_GGUF_BUILD_H
#define LAM_TEST_GGUF_BUILD_H

#include <stddef.h>
#include <stdint.h>

typedef struct gb {
    uint8_t *buf;
    size_t len, cap;
} gb_t;

void gb_bytes(gb_t *b, const void *p, size_t n);
void gb_u8(gb_t *b, uint8_t v);
void gb_u32(gb_t *b, uint32_t v);
void gb_u64(gb_t *b, uint64_t v);
void gb_f32(gb_t *b, float v);
void gb_str(gb_t *b, const char *s);            /* u64 length + bytes */
void gb_pad(gb_t *b, size_t align);             /* zero bytes up to a multiple of align */
/* key/value helpers: key, vtype, value */
void gb_kv_u32(gb_t *b, const char *key, uint32_t v);
void gb_kv_f32(gb_t *b, const char *key, float v);
void gb_kv_str(gb_t *b, const char *key, const char *v);
void gb_kv_bool(gb_t *b, const char *key, int v);
/* An array's key and header (element type, count); the elements follow. */
void gb_kv_arr(gb_t *b, const char *key, uint32_t elem_type, uint64_t n);
/* Tensor info: name, dims, type, offset. */
void gb_tensor_info(gb_t *b, const char *name, int n_dims, const int64_t *ne, uint32_t type, uint64_t offset);
void gb_free(gb_t *b);
/* Writes the buffer to a fresh temporary file; returns its path (static buffer). */
const char *gb_write_tmp(const gb_t *b, const char *tag);

#endif
