/* Scalar dtype helpers: fp16 and bf16 <-> fp32, exact and branch-light. */
#ifndef LAM_DTYPE_H
#define LAM_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Element types of activations on the wire and in KV caches. The values are
 * part of the wire format (proto/wire.h): append only. */
typedef enum lam_dtype {
    LAM_DT_F32 = 0,
    LAM_DT_F16 = 1,
    LAM_DT_BF16 = 2,
    LAM_DT_END
} lam_dtype_t;

static inline size_t lam_dtype_size(unsigned dt)
{
    return dt == LAM_DT_F32 ? 4 : dt == LAM_DT_F16 || dt == LAM_DT_BF16 ? 2 : 0;
}

static inline const char *lam_dtype_name(unsigned dt)
{
    return dt == LAM_DT_F32 ? "f32" : dt == LAM_DT_F16 ? "f16" : dt == LAM_DT_BF16 ? "bf16" : "unknown";
}

/* "f32"/"fp32", "f16"/"fp16", "bf16"; -1 otherwise. */
static inline int lam_dtype_parse(const char *s)
{
    if (!strcmp(s, "f32") || !strcmp(s, "fp32"))
        return LAM_DT_F32;
    if (!strcmp(s, "f16") || !strcmp(s, "fp16"))
        return LAM_DT_F16;
    if (!strcmp(s, "bf16"))
        return LAM_DT_BF16;
    return -1;
}

static inline float lam_fp32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t lam_fp32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float lam_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) /* inf / nan */
        return lam_fp32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return lam_fp32_from_bits(sign);
        /* subnormal: man * 2^-24 */
        float f = (float)man * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    return lam_fp32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

/* Round to nearest even; overflow to inf; nan stays nan. */
static inline uint16_t lam_fp32_to_fp16(float f)
{
    uint32_t x = lam_fp32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) { /* below fp16 normal range: subnormal or zero */
        float a = lam_fp32_from_bits(ax);
        /* adding 0.5 (2^-1) shifts the value so the fp32 mantissa rounds at 2^-24 */
        float t = a + 0.5f;
        return (uint16_t)(sign | (lam_fp32_to_bits(t) - 0x3f000000u));
    }
    uint32_t mant_odd = (ax >> 13) & 1;
    ax += 0xc8000fffu + mant_odd; /* rebias exponent (-112 << 23) and round */
    return (uint16_t)(sign | (ax >> 13));
}

static inline float lam_bf16_to_fp32(uint16_t h) { return lam_fp32_from_bits((uint32_t)h << 16); }

static inline uint16_t lam_fp32_to_bf16(float f)
{
    uint32_t x = lam_fp32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* One element of type dt at p (any alignment), as f32 / from f32. */
static inline float lam_dtype_load(const void *p, unsigned dt)
{
    uint16_t h;
    float f;
    if (dt == LAM_DT_F32) {
        memcpy(&f, p, 4);
        return f;
    }
    memcpy(&h, p, 2);
    return dt == LAM_DT_F16 ? lam_fp16_to_fp32(h) : lam_bf16_to_fp32(h);
}

static inline void lam_dtype_store(void *p, unsigned dt, float v)
{
    if (dt == LAM_DT_F32) {
        memcpy(p, &v, 4);
        return;
    }
    uint16_t h = dt == LAM_DT_F16 ? lam_fp32_to_fp16(v) : lam_fp32_to_bf16(v);
    memcpy(p, &h, 2);
}

#endif
