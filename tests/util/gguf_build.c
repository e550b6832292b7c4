#include "tests/util/gguf_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void gb_bytes(gb_t *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *nb = realloc(b->buf, cap);
        if (!nb)
            abort();
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}

void gb_u8(gb_t *b, uint8_t v) { gb_bytes(b, &v, 1); }
void gb_u32(gb_t *b, uint32_t v) { gb_bytes(b, &v, 4); }
void gb_u64(gb_t *b, uint64_t v) { gb_bytes(b, &v, 8); }
void gb_f32(gb_t *b, float v) { gb_bytes(b, &v, 4); }

void gb_str(gb_t *b, const char *s)
{
    gb_u64(b, strlen(s));
    gb_bytes(b, s, strlen(s));
}

void gb_pad(gb_t *b, size_t align)
{
    while (b->len % align)
        gb_u8(b, 0);
}

void gb_kv_u32(gb_t *b, const char *key, uint32_t v) { gb_str(b, key); gb_u32(b, 4); gb_u32(b, v); }
void gb_kv_f32(gb_t *b, const char *key, float v) { gb_str(b, key); gb_u32(b, 6); gb_f32(b, v); }
void gb_kv_str(gb_t *b, const char *key, const char *v) { gb_str(b, key); gb_u32(b, 8); gb_str(b, v); }
void gb_kv_bool(gb_t *b, const char *key, int v) { gb_str(b, key); gb_u32(b, 7); gb_u8(b, (uint8_t)v); }

void gb_kv_arr(gb_t *b, const char *key, uint32_t elem_type, uint64_t n)
{
    gb_str(b, key);
    gb_u32(b, 9); /* array */
    gb_u32(b, elem_type);
    gb_u64(b, n);
}

void gb_tensor_info(gb_t *b, const char *name, int n_dims, const int64_t *ne, uint32_t type, uint64_t offset)
{
    gb_str(b, name);
    gb_u32(b, (uint32_t)n_dims);
    for (int i = 0; i < n_dims; i++)
        gb_u64(b, (uint64_t)ne[i]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

void gb_free(gb_t *b)
{
    free(b->buf);
    b->buf = NULL;
    b->len = b->cap = 0;
}

const char *gb_write_tmp(const gb_t *b, const char *tag)
{
    static char path[256];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/lamina-test-%d-%s.gguf", dir ? dir : "/tmp", (int)getpid(), tag);
    FILE *f = fopen(path, "wb");
    if (!f)
        return NULL;
    if (b->len && fwrite(b->buf, 1, b->len, f) != b->len) {
        fclose(f);
        return NULL;
    }
    fclose(f);
    return path;
}
