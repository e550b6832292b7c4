/* lam_convert: element-type conversion, bit-identical to common/dtype.h's
 * scalar helpers on every input (NaN, Inf and subnormals included).
 *
 * f32 <-> f16 uses F16C; the hardware rounds to nearest even like
 * lam_fp32_to_fp16 but keeps NaN payloads, so NaN lanes are rewritten to the
 * helpers' canonical form. f32 <-> bf16 is integer arithmetic (not
 * AVX512-BF16's vcvtneps2bf16, which flushes subnormals). f16 <-> bf16 goes
 * through f32, exact in the first step, as the helpers compose. */
#include "kernels/cpu/attn.h"

#include <string.h>

#include "common/dtype.h"
#include "kernels/cpu/attn_internal.h"

void lam_cvt_f32_to_f16_scalar(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = lam_fp32_to_fp16(src[i]);
}

void lam_cvt_f16_to_f32_scalar(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = lam_fp16_to_fp32(src[i]);
}

void lam_cvt_f32_to_bf16_scalar(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = lam_fp32_to_bf16(src[i]);
}

void lam_cvt_bf16_to_f32_scalar(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = lam_bf16_to_fp32(src[i]);
}

#ifdef LAM_ATTN_HAVE_X86
#include <immintrin.h>

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define T256 __attribute__((target("avx2,fma,f16c")))

/* ---- AVX-512: 16 at a time, masked tails ---- */

/* NaN lanes get the scalar helpers' quiet NaN; the fix-up only runs when
 * there is one (they are rare, and it costs more than the conversion). */
T512 static __m256i f32_to_f16_16(__m512 x)
{
    __m256i h = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    if (__builtin_expect(!nan, 1))
        return h;
    __m512i sign = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(x), 16), _mm512_set1_epi32(0x8000));
    __m256i qnan = _mm512_cvtepi32_epi16(_mm512_or_si512(sign, _mm512_set1_epi32(0x7e00)));
    return _mm256_mask_mov_epi16(h, nan, qnan);
}

T512 static __m512 f16_to_f32_16(__m256i h)
{
    __m512 f = _mm512_cvtph_ps(h);
    __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
    if (__builtin_expect(!nan, 1))
        return f;
    __m512i w = _mm512_cvtepu16_epi32(h);
    __m512i bits = _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x8000)), 16),
                                   _mm512_or_si512(_mm512_set1_epi32(0x7f800000),
                                                   _mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x3ff)), 13)));
    return _mm512_mask_mov_ps(f, nan, _mm512_castsi512_ps(bits));
}

T512 static __m256i f32_to_bf16_16(__m512i x)
{
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(x, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

T512 void lam_cvt_f32_to_f16_avx512(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), f32_to_f16_16(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, f32_to_f16_16(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

T512 void lam_cvt_f16_to_f32_avx512(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, f16_to_f32_16(_mm256_loadu_si256((const __m256i *)(src + i))));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, f16_to_f32_16(_mm256_maskz_loadu_epi16(m, src + i)));
    }
}

T512 void lam_cvt_f32_to_bf16_avx512(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), f32_to_bf16_16(_mm512_loadu_si512(src + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, f32_to_bf16_16(_mm512_maskz_loadu_epi32(m, src + i)));
    }
}

T512 void lam_cvt_bf16_to_f32_avx512(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
        _mm512_storeu_si512(dst + i, _mm512_slli_epi32(w, 16));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i));
        _mm512_mask_storeu_epi32(dst + i, m, _mm512_slli_epi32(w, 16));
    }
}

/* ---- AVX2: 8 at a time, scalar tails ---- */

/* 8 x 32-bit lanes holding values <= 0xffff -> 8 x 16 bits */
T256 static __m128i narrow8(__m256i v)
{
    return _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

T256 void lam_cvt_f32_to_f16_avx2(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256i nan32 = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        __m128i nan = _mm_packs_epi32(_mm256_castsi256_si128(nan32), _mm256_extracti128_si256(nan32, 1));
        __m256i sign = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 16), _mm256_set1_epi32(0x8000));
        __m128i qnan = narrow8(_mm256_or_si256(sign, _mm256_set1_epi32(0x7e00)));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_blendv_epi8(h, qnan, nan));
    }
    lam_cvt_f32_to_f16_scalar(dst + i, src + i, n - i);
}

T256 void lam_cvt_f16_to_f32_avx2(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        __m256 f = _mm256_cvtph_ps(h);
        __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
        __m256i w = _mm256_cvtepu16_epi32(h);
        __m256i bits = _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x8000)), 16),
                                       _mm256_or_si256(_mm256_set1_epi32(0x7f800000),
                                                       _mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x3ff)), 13)));
        _mm256_storeu_ps(dst + i, _mm256_blendv_ps(f, _mm256_castsi256_ps(bits), nan));
    }
    lam_cvt_f16_to_f32_scalar(dst + i, src + i, n - i);
}

T256 void lam_cvt_f32_to_bf16_avx2(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
        __m256i q = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
        _mm_storeu_si128((__m128i *)(dst + i), narrow8(_mm256_blendv_epi8(r, q, nan)));
    }
    lam_cvt_f32_to_bf16_scalar(dst + i, src + i, n - i);
}

T256 void lam_cvt_bf16_to_f32_avx2(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(w, 16));
    }
    lam_cvt_bf16_to_f32_scalar(dst + i, src + i, n - i);
}
#endif /* LAM_ATTN_HAVE_X86 */

/* f16 <-> bf16 through an f32 chunk on the stack */
static void cvt_via_f32(const attn_isa_t *isa, void *dst, int dst_dtype, const void *src, int src_dtype, size_t n)
{
    float tmp[256];
    for (size_t i = 0; i < n; i += 256) {
        size_t k = n - i < 256 ? n - i : 256;
        if (src_dtype == LAM_DT_F16)
            isa->f16_to_f32(tmp, (const uint16_t *)src + i, k);
        else
            isa->bf16_to_f32(tmp, (const uint16_t *)src + i, k);
        if (dst_dtype == LAM_DT_F16)
            isa->f32_to_f16((uint16_t *)dst + i, tmp, k);
        else
            isa->f32_to_bf16((uint16_t *)dst + i, tmp, k);
    }
}

void lam_convert(void *dst, int dst_dtype, const void *src, int src_dtype, size_t n)
{
    size_t dsz = lam_dtype_size((unsigned)dst_dtype), ssz = lam_dtype_size((unsigned)src_dtype);
    if (!dsz || !ssz || !n)
        return;
    if (dst_dtype == src_dtype) {
        memmove(dst, src, n * dsz);
        return;
    }
    const attn_isa_t *isa = lam_attn_isa_get();
    if (src_dtype == LAM_DT_F32 && dst_dtype == LAM_DT_F16)
        isa->f32_to_f16(dst, src, n);
    else if (src_dtype == LAM_DT_F32)
        isa->f32_to_bf16(dst, src, n);
    else if (dst_dtype == LAM_DT_F32 && src_dtype == LAM_DT_F16)
        isa->f16_to_f32(dst, src, n);
    else if (dst_dtype == LAM_DT_F32)
        isa->bf16_to_f32(dst, src, n);
    else
        cvt_via_f32(isa, dst, dst_dtype, src, src_dtype, n);
}
