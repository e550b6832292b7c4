/* Tensor types and dequantisation to float32. Block layouts follow ggml's
 * (see the struct comments); every routine is a plain loop: this runs once
 * at load time, clarity over speed. */
#include "common/dtype.h"
#include "common/gguf.h"

#include <string.h>

#define QK_K 256

typedef struct type_info {
    const char *name;
    int64_t block_elems, block_bytes;
    bool dequant;
} type_info_t;

static const type_info_t g_types[] = {
    [LAM_GGML_F32] = {"F32", 1, 4, true},
    [LAM_GGML_F16] = {"F16", 1, 2, true},
    [LAM_GGML_Q4_0] = {"Q4_0", 32, 18, true},
    [LAM_GGML_Q4_1] = {"Q4_1", 32, 20, true},
    [LAM_GGML_Q5_0] = {"Q5_0", 32, 22, true},
    [LAM_GGML_Q5_1] = {"Q5_1", 32, 24, true},
    [LAM_GGML_Q8_0] = {"Q8_0", 32, 34, true},
    [LAM_GGML_Q8_1] = {"Q8_1", 32, 36, false},
    [LAM_GGML_Q2_K] = {"Q2_K", QK_K, 84, true},
    [LAM_GGML_Q3_K] = {"Q3_K", QK_K, 110, true},
    [LAM_GGML_Q4_K] = {"Q4_K", QK_K, 144, true},
    [LAM_GGML_Q5_K] = {"Q5_K", QK_K, 176, true},
    [LAM_GGML_Q6_K] = {"Q6_K", QK_K, 210, true},
    [LAM_GGML_Q8_K] = {"Q8_K", QK_K, 292, false},
    [LAM_GGML_BF16] = {"BF16", 1, 2, true},
};
#define N_TYPES (sizeof g_types / sizeof g_types[0])

static const type_info_t *type_info(uint32_t type)
{
    return type < N_TYPES && g_types[type].name ? &g_types[type] : NULL;
}

const char *lam_ggml_type_name(uint32_t type)
{
    const type_info_t *ti = type_info(type);
    return ti ? ti->name : "?";
}

bool lam_ggml_type_size(uint32_t type, int64_t *block_elems, int64_t *block_bytes)
{
    const type_info_t *ti = type_info(type);
    if (!ti)
        return false;
    *block_elems = ti->block_elems;
    *block_bytes = ti->block_bytes;
    return true;
}

bool lam_dequant_supported(uint32_t type)
{
    const type_info_t *ti = type_info(type);
    return ti && ti->dequant;
}

static float half(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return lam_fp16_to_fp32(h);
}

/* Q4_0 {f16 d; u8 qs[16]}: x = (nibble - 8) * d; low nibbles are 0..15, high 16..31 */
static void dq_q4_0(const uint8_t *b, float *y)
{
    float d = half(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = ((qs[j] & 0xf) - 8) * d;
        y[j + 16] = ((qs[j] >> 4) - 8) * d;
    }
}

/* Q4_1 {f16 d, m; u8 qs[16]}: x = nibble * d + m */
static void dq_q4_1(const uint8_t *b, float *y)
{
    float d = half(b), m = half(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (qs[j] & 0xf) * d + m;
        y[j + 16] = (qs[j] >> 4) * d + m;
    }
}

/* Q5_0 {f16 d; u32 qh; u8 qs[16]}: fifth bit j of element j from qh */
static void dq_q5_0(const uint8_t *b, float *y)
{
    float d = half(b);
    uint32_t qh;
    memcpy(&qh, b + 2, 4);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = (((qs[j] & 0xf) | h0) - 16) * d;
        y[j + 16] = (((qs[j] >> 4) | h1) - 16) * d;
    }
}

/* Q5_1 {f16 d, m; u32 qh; u8 qs[16]} */
static void dq_q5_1(const uint8_t *b, float *y)
{
    float d = half(b), m = half(b + 2);
    uint32_t qh;
    memcpy(&qh, b + 4, 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = ((qs[j] & 0xf) | h0) * d + m;
        y[j + 16] = ((qs[j] >> 4) | h1) * d + m;
    }
}

/* Q8_0 {f16 d; i8 qs[32]} */
static void dq_q8_0(const uint8_t *b, float *y)
{
    float d = half(b);
    for (int j = 0; j < 32; j++)
        y[j] = (int8_t)b[2 + j] * d;
}

/* 6-bit scale and min j (0..7) packed in 12 bytes (Q4_K, Q5_K) */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q2_K {u8 scales[16]; u8 qs[64]; f16 d, dmin}: 16 groups of 16, 2-bit quants */
static void dq_q2_k(const uint8_t *b, float *y)
{
    const uint8_t *scales = b, *q = b + 16;
    float d = half(b + 80), dmin = half(b + 82);
    int is = 0;
    for (int n = 0; n < QK_K; n += 128) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int half_ = 0; half_ < 2; half_++) {
                int sc = scales[is++];
                float dl = d * (sc & 0xf), ml = dmin * (sc >> 4);
                for (int l = 0; l < 16; l++)
                    *y++ = dl * ((q[l + 16 * half_] >> shift) & 3) - ml;
            }
        }
        q += 32;
    }
}

/* Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}: 3-bit quants, 6-bit signed scales */
static void dq_q3_k(const uint8_t *b, float *y)
{
    const uint8_t *hm = b, *q = b + 32, *packed = b + 96;
    float d_all = half(b + 108);
    int8_t scales[16];
    for (int i = 0; i < 16; i++) {
        /* low 4 bits: nibble i of bytes 0..7; high 2 bits: pair (i/4) of byte 8 + i%4 */
        int lo = i < 8 ? packed[i] & 0xf : packed[i - 8] >> 4;
        int hi = (packed[8 + (i % 4)] >> (2 * (i / 4))) & 3;
        scales[i] = (int8_t)((lo | (hi << 4)) - 32);
    }
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < QK_K; n += 128) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int half_ = 0; half_ < 2; half_++) {
                float dl = d_all * scales[is++];
                for (int l = 0; l < 16; l++) {
                    int k = l + 16 * half_;
                    int v = ((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
                    *y++ = dl * v;
                }
            }
            m <<= 1;
        }
        q += 32;
    }
}

/* Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}: 8 groups of 32 */
static void dq_q4_k(const uint8_t *b, float *y)
{
    float d = half(b), dmin = half(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
        int sc, m;
        scale_min_k4(is, scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        scale_min_k4(is + 1, scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * (q[l] & 0xf) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * (q[l] >> 4) - m2;
    }
}

/* Q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} */
static void dq_q5_k(const uint8_t *b, float *y)
{
    float d = half(b), dmin = half(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
        int sc, m;
        scale_min_k4(is, scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        scale_min_k4(is + 1, scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * ((ql[l] & 0xf) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
}

/* Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: 16 groups of 16, 6-bit quants */
static void dq_q6_k(const uint8_t *b, float *y)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = half(b + 208);
    for (int n = 0; n < QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

typedef void (*dq_block_fn)(const uint8_t *b, float *y);

lam_status_t lam_dequant(uint32_t type, const void *src, float *dst, int64_t n)
{
    const type_info_t *ti = type_info(type);
    if (!ti || !ti->dequant)
        return LAM_ERR_GGUF_BAD_TYPE;
    if (n < 0 || n % ti->block_elems)
        return LAM_ERR_INVALID_ARG;
    const uint8_t *s = src;
    switch (type) {
    case LAM_GGML_F32:
        memcpy(dst, src, (size_t)n * 4);
        return LAM_OK;
    case LAM_GGML_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = half(s + 2 * i);
        return LAM_OK;
    case LAM_GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = lam_bf16_to_fp32(h);
        }
        return LAM_OK;
    default:
        break;
    }
    dq_block_fn fn = NULL;
    switch (type) {
    case LAM_GGML_Q4_0: fn = dq_q4_0; break;
    case LAM_GGML_Q4_1: fn = dq_q4_1; break;
    case LAM_GGML_Q5_0: fn = dq_q5_0; break;
    case LAM_GGML_Q5_1: fn = dq_q5_1; break;
    case LAM_GGML_Q8_0: fn = dq_q8_0; break;
    case LAM_GGML_Q2_K: fn = dq_q2_k; break;
    case LAM_GGML_Q3_K: fn = dq_q3_k; break;
    case LAM_GGML_Q4_K: fn = dq_q4_k; break;
    case LAM_GGML_Q5_K: fn = dq_q5_k; break;
    case LAM_GGML_Q6_K: fn = dq_q6_k; break;
    default: return LAM_ERR_GGUF_BAD_TYPE;
    }
    int64_t nb = n / ti->block_elems;
    for (int64_t i = 0; i < nb; i++)
        fn(s + i * ti->block_bytes, dst + i * ti->block_elems);
    return LAM_OK;
}
