/* GGUF reader: parse and validate everything up front, then serve lookups.
 * Layout (little endian):
 *   "GGUF" u32 version u64 n_tensors u64 n_kv
 *   n_kv    × { str key, u32 vtype, value }
 *   n_tensors × { str name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   padding to general.alignment (default 32), then the tensor data section.
 * A str is u64 length + bytes; an array is u32 elem vtype + u64 count + elems. */
#include "common/gguf.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_KEY_LEN 65535
#define GGUF_MAX_NAME_LEN 256

typedef struct gguf_kv {
    lam_gguf_str_t key;
    uint32_t type;
    uint32_t arr_type;     /* arrays only */
    uint64_t arr_n;        /* arrays only */
    const uint8_t *val;    /* scalar value, string header, or first array element */
    uint64_t *str_offs;    /* string arrays: file offset of each element's header */
} gguf_kv_t;

struct lam_gguf {
    int fd;
    const uint8_t *map;
    uint64_t size;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_off;
    int64_t n_kv;
    gguf_kv_t *kv;
    int64_t n_tensors;
    lam_gguf_tensor_t *tensors;
    int64_t *sorted; /* tensor indices sorted by name, for lookup */
};

typedef struct reader {
    const uint8_t *base;
    uint64_t off, size;
    char *err;
    size_t errlen;
    const char *path;
} reader_t;

static lam_status_t fail(reader_t *r, lam_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static lam_status_t fail(reader_t *r, lam_status_t st, const char *fmt, ...)
{
    char raw[512], msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    /* names from the file are quoted in the message: one line whatever they hold */
    lam_log_escape(msg, sizeof msg, raw);
    if (r->err && r->errlen)
        snprintf(r->err, r->errlen, "%s: %s", r->path, msg);
    lam_log_error("%s: %s", r->path, msg);
    return st;
}

static bool rd_has(const reader_t *r, uint64_t n) { return n <= r->size - r->off; }

static lam_status_t rd_bytes(reader_t *r, uint64_t n, const uint8_t **p, const char *what)
{
    if (!rd_has(r, n))
        return fail(r, LAM_ERR_GGUF_TRUNCATED,
                    "truncated: %s needs %llu bytes at offset %llu, file has %llu", what,
                    (unsigned long long)n, (unsigned long long)r->off, (unsigned long long)r->size);
    *p = r->base + r->off;
    r->off += n;
    return LAM_OK;
}

static lam_status_t rd_u32(reader_t *r, uint32_t *v, const char *what)
{
    const uint8_t *p = NULL;
    lam_status_t st = rd_bytes(r, 4, &p, what);
    if (st == LAM_OK)
        memcpy(v, p, 4);
    return st;
}

static lam_status_t rd_u64(reader_t *r, uint64_t *v, const char *what)
{
    const uint8_t *p = NULL;
    lam_status_t st = rd_bytes(r, 8, &p, what);
    if (st == LAM_OK)
        memcpy(v, p, 8);
    return st;
}

static lam_status_t rd_str(reader_t *r, lam_gguf_str_t *s, uint64_t max_len, const char *what)
{
    uint64_t len;
    const uint8_t *p = NULL;
    lam_status_t st = rd_u64(r, &len, what);
    if (st != LAM_OK)
        return st;
    if (len > r->size - r->off)
        return fail(r, LAM_ERR_GGUF_TRUNCATED,
                    "%s at offset %llu claims length %llu, past end of file (%llu bytes)", what,
                    (unsigned long long)(r->off - 8), (unsigned long long)len,
                    (unsigned long long)r->size);
    if (len > max_len)
        return fail(r, LAM_ERR_GGUF_BAD_KEY, "%s at offset %llu is too long (%llu bytes)", what,
                    (unsigned long long)(r->off - 8), (unsigned long long)len);
    st = rd_bytes(r, len, &p, what);
    if (st != LAM_OK)
        return st;
    s->ptr = (const char *)p;
    s->len = len;
    return LAM_OK;
}

static const uint64_t vtype_size[LAM_GGUF_VTYPE_COUNT] = {
    [LAM_GGUF_UINT8] = 1,  [LAM_GGUF_INT8] = 1,    [LAM_GGUF_UINT16] = 2, [LAM_GGUF_INT16] = 2,
    [LAM_GGUF_UINT32] = 4, [LAM_GGUF_INT32] = 4,   [LAM_GGUF_FLOAT32] = 4, [LAM_GGUF_BOOL] = 1,
    [LAM_GGUF_STRING] = 0, [LAM_GGUF_ARRAY] = 0,   [LAM_GGUF_UINT64] = 8, [LAM_GGUF_INT64] = 8,
    [LAM_GGUF_FLOAT64] = 8,
};

static lam_status_t rd_kv(reader_t *r, gguf_kv_t *kv, int64_t idx)
{
    lam_status_t st = rd_str(r, &kv->key, GGUF_MAX_KEY_LEN, "metadata key");
    if (st != LAM_OK)
        return st;
    if (kv->key.len == 0)
        return fail(r, LAM_ERR_GGUF_BAD_KEY, "metadata key %lld is empty", (long long)idx);
    st = rd_u32(r, &kv->type, "metadata value type");
    if (st != LAM_OK)
        return st;
    if (kv->type >= LAM_GGUF_VTYPE_COUNT)
        return fail(r, LAM_ERR_GGUF_BAD_TYPE, "metadata key '%.*s' has unknown value type %u",
                    (int)kv->key.len, kv->key.ptr, kv->type);
    if (kv->type == LAM_GGUF_STRING) {
        lam_gguf_str_t s;
        kv->val = r->base + r->off;
        return rd_str(r, &s, UINT64_MAX, "metadata string");
    }
    if (kv->type != LAM_GGUF_ARRAY) {
        kv->val = r->base + r->off;
        if (kv->type == LAM_GGUF_BOOL && rd_has(r, 1) && kv->val[0] > 1)
            return fail(r, LAM_ERR_GGUF_BAD_TYPE, "metadata key '%.*s': bool value %u",
                        (int)kv->key.len, kv->key.ptr, kv->val[0]);
        const uint8_t *p;
        return rd_bytes(r, vtype_size[kv->type], &p, "metadata value");
    }
    st = rd_u32(r, &kv->arr_type, "array element type");
    if (st != LAM_OK)
        return st;
    st = rd_u64(r, &kv->arr_n, "array length");
    if (st != LAM_OK)
        return st;
    if (kv->arr_type >= LAM_GGUF_VTYPE_COUNT || kv->arr_type == LAM_GGUF_ARRAY)
        return fail(r, LAM_ERR_GGUF_BAD_TYPE, "metadata key '%.*s': unsupported array element type %u",
                    (int)kv->key.len, kv->key.ptr, kv->arr_type);
    kv->val = r->base + r->off;
    if (kv->arr_type != LAM_GGUF_STRING) {
        uint64_t es = vtype_size[kv->arr_type];
        if (kv->arr_n > (r->size - r->off) / es)
            return fail(r, LAM_ERR_GGUF_TRUNCATED,
                        "array '%.*s' claims %llu elements, more than the file holds",
                        (int)kv->key.len, kv->key.ptr, (unsigned long long)kv->arr_n);
        const uint8_t *p;
        return rd_bytes(r, kv->arr_n * es, &p, "array data");
    }
    /* each string element needs at least its 8-byte length */
    if (kv->arr_n > (r->size - r->off) / 8)
        return fail(r, LAM_ERR_GGUF_TRUNCATED,
                    "string array '%.*s' claims %llu elements, more than the file holds",
                    (int)kv->key.len, kv->key.ptr, (unsigned long long)kv->arr_n);
    kv->str_offs = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof *kv->str_offs);
    if (!kv->str_offs)
        return fail(r, LAM_ERR_NO_MEMORY, "out of memory for array '%.*s'", (int)kv->key.len, kv->key.ptr);
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        lam_gguf_str_t s;
        kv->str_offs[i] = r->off;
        st = rd_str(r, &s, UINT64_MAX, "array string");
        if (st != LAM_OK)
            return st;
    }
    return LAM_OK;
}

static int str_cmp(lam_gguf_str_t a, lam_gguf_str_t b)
{
    uint64_t n = a.len < b.len ? a.len : b.len;
    int c = memcmp(a.ptr, b.ptr, n);
    if (c)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

static int cmp_kv_idx(const void *a, const void *b, void *kv)
{
    const gguf_kv_t *k = kv;
    return str_cmp(k[*(const int64_t *)a].key, k[*(const int64_t *)b].key);
}

static int cmp_tensor_idx(const void *a, const void *b, void *tensors)
{
    const lam_gguf_tensor_t *t = tensors;
    return strcmp(t[*(const int64_t *)a].name, t[*(const int64_t *)b].name);
}

static lam_status_t check_duplicate_keys(reader_t *r, lam_gguf_t *g)
{
    if (g->n_kv < 2)
        return LAM_OK;
    int64_t *idx = malloc(g->n_kv * sizeof *idx);
    if (!idx)
        return fail(r, LAM_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < g->n_kv; i++)
        idx[i] = i;
    qsort_r(idx, g->n_kv, sizeof *idx, cmp_kv_idx, g->kv);
    lam_status_t st = LAM_OK;
    for (int64_t i = 1; i < g->n_kv && st == LAM_OK; i++)
        if (!str_cmp(g->kv[idx[i]].key, g->kv[idx[i - 1]].key))
            st = fail(r, LAM_ERR_GGUF_BAD_KEY, "duplicate metadata key '%.*s'",
                      (int)g->kv[idx[i]].key.len, g->kv[idx[i]].key.ptr);
    free(idx);
    return st;
}

static lam_status_t rd_tensor(reader_t *r, lam_gguf_tensor_t *t, int64_t idx)
{
    lam_gguf_str_t name;
    lam_status_t st = rd_str(r, &name, GGUF_MAX_NAME_LEN, "tensor name");
    if (st != LAM_OK)
        return st;
    if (name.len == 0 || memchr(name.ptr, 0, name.len))
        return fail(r, LAM_ERR_GGUF_BAD_KEY, "tensor %lld has an empty or invalid name", (long long)idx);
    t->name = malloc(name.len + 1);
    if (!t->name)
        return fail(r, LAM_ERR_NO_MEMORY, "out of memory");
    memcpy(t->name, name.ptr, name.len);
    t->name[name.len] = 0;
    if ((st = rd_u32(r, &t->n_dims, "tensor rank")) != LAM_OK)
        return st;
    if (t->n_dims < 1 || t->n_dims > LAM_GGUF_MAX_DIMS)
        return fail(r, LAM_ERR_GGUF_BAD_SHAPE, "tensor '%s' has rank %u (1..%d allowed)", t->name,
                    t->n_dims, LAM_GGUF_MAX_DIMS);
    int64_t n = 1;
    for (int d = 0; d < LAM_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if ((uint32_t)d < t->n_dims && (st = rd_u64(r, &ne, "tensor dimension")) != LAM_OK)
            return st;
        if (ne == 0 || ne > (uint64_t)INT64_MAX / (uint64_t)n)
            return fail(r, LAM_ERR_GGUF_BAD_SHAPE, "tensor '%s' has an absurd dimension %d = %llu",
                        t->name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        n *= (int64_t)ne;
    }
    t->n_elem = n;
    if ((st = rd_u32(r, &t->type, "tensor type")) != LAM_OK)
        return st;
    int64_t be, bb;
    if (!lam_ggml_type_size(t->type, &be, &bb))
        return fail(r, LAM_ERR_GGUF_BAD_TYPE, "tensor '%s' has unknown type %u", t->name, t->type);
    if (t->ne[0] % be)
        return fail(r, LAM_ERR_GGUF_BAD_SHAPE, "tensor '%s': row length %lld is not a multiple of the %s block size %lld",
                    t->name, (long long)t->ne[0], lam_ggml_type_name(t->type), (long long)be);
    if (n / be > INT64_MAX / bb)
        return fail(r, LAM_ERR_GGUF_BAD_SHAPE, "tensor '%s' size overflows", t->name);
    t->nbytes = (uint64_t)(n / be * bb);
    if (t->nbytes > r->size)
        return fail(r, LAM_ERR_GGUF_BAD_SHAPE, "tensor '%s' has absurd dimensions: %llu bytes, more than the whole file",
                    t->name, (unsigned long long)t->nbytes);
    return rd_u64(r, &t->offset, "tensor offset");
}

static void gguf_free_parts(lam_gguf_t *g)
{
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++)
            free(g->kv[i].str_offs);
    if (g->tensors)
        for (int64_t i = 0; i < g->n_tensors; i++)
            free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(g->sorted);
}

static lam_status_t gguf_parse(reader_t *r, lam_gguf_t *g)
{
    const uint8_t *magic;
    lam_status_t st;
    if (r->size < 4 || memcmp(r->base, "GGUF", 4)) {
        return fail(r, LAM_ERR_GGUF_MAGIC, "not a GGUF file (bad magic)");
    }
    rd_bytes(r, 4, &magic, "magic");
    if ((st = rd_u32(r, &g->version, "version")) != LAM_OK)
        return st;
    if (g->version != 2 && g->version != 3)
        return fail(r, LAM_ERR_GGUF_VERSION, "unsupported GGUF version %u (2 and 3 are supported%s)",
                    g->version, (g->version & 0xffff) == 0 ? "; big-endian files are not" : "");
    uint64_t n_tensors, n_kv;
    if ((st = rd_u64(r, &n_tensors, "tensor count")) != LAM_OK ||
        (st = rd_u64(r, &n_kv, "metadata count")) != LAM_OK)
        return st;
    /* minimal encodings: kv = 8 (key len) + 1 + 4 + 1; tensor = 8 + 1 + 4 + 8 + 4 + 8 */
    if (n_kv > (r->size - r->off) / 14)
        return fail(r, LAM_ERR_GGUF_TRUNCATED, "metadata count %llu is more than the file can hold",
                    (unsigned long long)n_kv);
    if (n_tensors > (r->size - r->off) / 33)
        return fail(r, LAM_ERR_GGUF_TRUNCATED, "tensor count %llu is more than the file can hold",
                    (unsigned long long)n_tensors);
    g->n_kv = (int64_t)n_kv;
    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->n_tensors = (int64_t)n_tensors;
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    g->sorted = calloc(n_tensors ? n_tensors : 1, sizeof *g->sorted);
    if (!g->kv || !g->tensors || !g->sorted)
        return fail(r, LAM_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < g->n_kv; i++)
        if ((st = rd_kv(r, &g->kv[i], i)) != LAM_OK)
            return st;
    if ((st = check_duplicate_keys(r, g)) != LAM_OK)
        return st;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = lam_gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        uint32_t a;
        if (g->kv[ai].type != LAM_GGUF_UINT32)
            return fail(r, LAM_ERR_GGUF_BAD_TYPE, "general.alignment must be uint32");
        memcpy(&a, g->kv[ai].val, 4);
        if (a == 0 || (a & (a - 1)))
            return fail(r, LAM_ERR_GGUF_BAD_OFFSET, "general.alignment %u is not a power of two", a);
        g->alignment = a;
    }
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((st = rd_tensor(r, &g->tensors[i], i)) != LAM_OK)
            return st;
    uint64_t data_off = (r->off + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors > 0 && data_off > r->size)
        return fail(r, LAM_ERR_GGUF_TRUNCATED, "tensor data section starts at %llu, past end of file",
                    (unsigned long long)data_off);
    g->data_off = data_off;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        lam_gguf_tensor_t *t = &g->tensors[i];
        uint64_t avail = r->size - data_off;
        if (t->offset % g->alignment)
            return fail(r, LAM_ERR_GGUF_BAD_OFFSET, "tensor '%s' offset %llu is not aligned to %llu",
                        t->name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return fail(r, LAM_ERR_GGUF_BAD_OFFSET,
                        "tensor '%s' data [%llu, +%llu) runs past end of file (data section holds %llu bytes)",
                        t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                        (unsigned long long)avail);
        t->data = r->base + data_off + t->offset;
        g->sorted[i] = i;
    }
    qsort_r(g->sorted, g->n_tensors, sizeof *g->sorted, cmp_tensor_idx, g->tensors);
    for (int64_t i = 1; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[g->sorted[i]].name, g->tensors[g->sorted[i - 1]].name))
            return fail(r, LAM_ERR_GGUF_BAD_KEY, "duplicate tensor name '%s'", g->tensors[g->sorted[i]].name);
    return LAM_OK;
}

lam_status_t lam_gguf_open(const char *path, lam_gguf_t **out, char *err, size_t errlen)
{
    reader_t r = {.err = err, .errlen = errlen, .path = path};
    if (err && errlen)
        err[0] = 0;
    lam_gguf_t *g = calloc(1, sizeof *g);
    if (!g)
        return fail(&r, LAM_ERR_NO_MEMORY, "out of memory");
    g->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (g->fd < 0) {
        lam_status_t st = fail(&r, LAM_ERR_IO, "cannot open: %s", strerror(errno));
        free(g);
        return st;
    }
    struct stat sb;
    if (fstat(g->fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(g->fd);
        free(g);
        return fail(&r, LAM_ERR_IO, "not a regular file");
    }
    g->size = (uint64_t)sb.st_size;
    if (g->size > 0) {
        void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, g->fd, 0);
        if (m == MAP_FAILED) {
            close(g->fd);
            free(g);
            return fail(&r, LAM_ERR_IO, "mmap failed: %s", strerror(errno));
        }
        g->map = m;
    }
    r.base = g->map;
    r.size = g->size;
    lam_status_t st = gguf_parse(&r, g);
    if (st != LAM_OK) {
        lam_gguf_close(g);
        return st;
    }
    *out = g;
    return LAM_OK;
}

void lam_gguf_close(lam_gguf_t *g)
{
    if (!g)
        return;
    gguf_free_parts(g);
    if (g->map)
        munmap((void *)g->map, g->size);
    if (g->fd >= 0)
        close(g->fd);
    free(g);
}

uint32_t lam_gguf_version(const lam_gguf_t *g) { return g->version; }
uint64_t lam_gguf_file_size(const lam_gguf_t *g) { return g->size; }

uint64_t lam_gguf_data_offset(const lam_gguf_t *g) { return g->data_off; }

int64_t lam_gguf_n_kv(const lam_gguf_t *g) { return g->n_kv; }

uint64_t lam_gguf_fingerprint(const lam_gguf_t *g)
{
    uint64_t h = 1469598103934665603ull;
    uint64_t end = g->data_off < g->size ? g->data_off : g->size;
    for (uint64_t i = 0; i < end; i++) {
        h ^= g->map[i];
        h *= 1099511628211ull;
    }
    return h;
}
lam_gguf_str_t lam_gguf_key_at(const lam_gguf_t *g, int64_t i) { return g->kv[i].key; }
lam_gguf_vtype_t lam_gguf_kv_type(const lam_gguf_t *g, int64_t i) { return (lam_gguf_vtype_t)g->kv[i].type; }

int64_t lam_gguf_find_key(const lam_gguf_t *g, const char *key)
{
    size_t n = strlen(key);
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key.len == n && !memcmp(g->kv[i].key.ptr, key, n))
            return i;
    return -1;
}

/* Reads a scalar integer kv as int64 (or uint64 via *u), recording sign. */
static lam_status_t get_int(const lam_gguf_t *g, const char *key, int64_t *s, uint64_t *u, bool *neg)
{
    int64_t i = lam_gguf_find_key(g, key);
    if (i < 0)
        return LAM_ERR_NOT_FOUND;
    const uint8_t *p = g->kv[i].val;
    *neg = false;
    switch (g->kv[i].type) {
    case LAM_GGUF_UINT8: *u = p[0]; break;
    case LAM_GGUF_INT8: *s = (int8_t)p[0]; *neg = *s < 0; *u = (uint64_t)*s; break;
    case LAM_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); *u = v; break; }
    case LAM_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); *s = v; *neg = v < 0; *u = (uint64_t)*s; break; }
    case LAM_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); *u = v; break; }
    case LAM_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); *s = v; *neg = v < 0; *u = (uint64_t)*s; break; }
    case LAM_GGUF_UINT64: memcpy(u, p, 8); break;
    case LAM_GGUF_INT64: memcpy(s, p, 8); *neg = *s < 0; *u = (uint64_t)*s; break;
    default: return LAM_ERR_GGUF_BAD_TYPE;
    }
    if (!*neg)
        *s = *u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)*u;
    return LAM_OK;
}

lam_status_t lam_gguf_get_u64(const lam_gguf_t *g, const char *key, uint64_t *out)
{
    int64_t s; uint64_t u; bool neg;
    lam_status_t st = get_int(g, key, &s, &u, &neg);
    if (st != LAM_OK)
        return st;
    if (neg)
        return LAM_ERR_RANGE;
    *out = u;
    return LAM_OK;
}

lam_status_t lam_gguf_get_u32(const lam_gguf_t *g, const char *key, uint32_t *out)
{
    uint64_t u;
    lam_status_t st = lam_gguf_get_u64(g, key, &u);
    if (st != LAM_OK)
        return st;
    if (u > UINT32_MAX)
        return LAM_ERR_RANGE;
    *out = (uint32_t)u;
    return LAM_OK;
}

lam_status_t lam_gguf_get_i64(const lam_gguf_t *g, const char *key, int64_t *out)
{
    int64_t s; uint64_t u; bool neg;
    lam_status_t st = get_int(g, key, &s, &u, &neg);
    if (st != LAM_OK)
        return st;
    if (!neg && u > (uint64_t)INT64_MAX)
        return LAM_ERR_RANGE;
    *out = s;
    return LAM_OK;
}

lam_status_t lam_gguf_get_f32(const lam_gguf_t *g, const char *key, float *out)
{
    int64_t i = lam_gguf_find_key(g, key);
    if (i < 0)
        return LAM_ERR_NOT_FOUND;
    if (g->kv[i].type == LAM_GGUF_FLOAT32) {
        memcpy(out, g->kv[i].val, 4);
    } else if (g->kv[i].type == LAM_GGUF_FLOAT64) {
        double d;
        memcpy(&d, g->kv[i].val, 8);
        *out = (float)d;
    } else {
        return LAM_ERR_GGUF_BAD_TYPE;
    }
    return LAM_OK;
}

lam_status_t lam_gguf_get_bool(const lam_gguf_t *g, const char *key, bool *out)
{
    int64_t i = lam_gguf_find_key(g, key);
    if (i < 0)
        return LAM_ERR_NOT_FOUND;
    if (g->kv[i].type != LAM_GGUF_BOOL)
        return LAM_ERR_GGUF_BAD_TYPE;
    *out = g->kv[i].val[0] != 0;
    return LAM_OK;
}

static lam_gguf_str_t str_at(const uint8_t *p)
{
    lam_gguf_str_t s;
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

lam_status_t lam_gguf_get_str(const lam_gguf_t *g, const char *key, lam_gguf_str_t *out)
{
    int64_t i = lam_gguf_find_key(g, key);
    if (i < 0)
        return LAM_ERR_NOT_FOUND;
    if (g->kv[i].type != LAM_GGUF_STRING)
        return LAM_ERR_GGUF_BAD_TYPE;
    *out = str_at(g->kv[i].val);
    return LAM_OK;
}

lam_status_t lam_gguf_get_arr(const lam_gguf_t *g, const char *key, lam_gguf_vtype_t *elem_type,
                              uint64_t *n, const void **data)
{
    int64_t i = lam_gguf_find_key(g, key);
    if (i < 0)
        return LAM_ERR_NOT_FOUND;
    if (g->kv[i].type != LAM_GGUF_ARRAY)
        return LAM_ERR_GGUF_BAD_TYPE;
    *elem_type = (lam_gguf_vtype_t)g->kv[i].arr_type;
    *n = g->kv[i].arr_n;
    *data = g->kv[i].arr_type == LAM_GGUF_STRING ? NULL : g->kv[i].val;
    return LAM_OK;
}

lam_status_t lam_gguf_get_arr_str(const lam_gguf_t *g, const char *key, uint64_t idx, lam_gguf_str_t *out)
{
    int64_t i = lam_gguf_find_key(g, key);
    if (i < 0)
        return LAM_ERR_NOT_FOUND;
    if (g->kv[i].type != LAM_GGUF_ARRAY || g->kv[i].arr_type != LAM_GGUF_STRING)
        return LAM_ERR_GGUF_BAD_TYPE;
    if (idx >= g->kv[i].arr_n)
        return LAM_ERR_RANGE;
    *out = str_at(g->map + g->kv[i].str_offs[idx]);
    return LAM_OK;
}

int64_t lam_gguf_n_tensors(const lam_gguf_t *g) { return g->n_tensors; }

const lam_gguf_tensor_t *lam_gguf_tensor_at(const lam_gguf_t *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const lam_gguf_tensor_t *lam_gguf_find_tensor(const lam_gguf_t *g, const char *name)
{
    int64_t lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->tensors[g->sorted[mid]].name, name);
        if (!c)
            return &g->tensors[g->sorted[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}
