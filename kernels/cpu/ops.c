#include "kernels/cpu/ops.h"

#include <math.h>
#include <string.h>

#include "common/dtype.h"
#include "kernels/cpu/attn_internal.h"

/* Built twice (AVX2+FMA and baseline), picked at load time by the CPU. */
#define LAM_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))

LAM_MULTIVERSION
float lam_dot_f32(const float *a, const float *b, int n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void lam_rmsnorm_f32(float *y, const float *x, const float *w, int n, float eps)
{
    float ss = 0.0f;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    float scale = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * scale * w[i];
}

LAM_MULTIVERSION
void lam_matmul_rows_scalar(float *y, const float *x, const float *W, const float *bias, int T, int I, int O, int o0,
                            int o1)
{
    /* Each weight row is read once and used for every token of the batch. */
    for (int o = o0; o < o1; o++) {
        const float *w = W + (int64_t)o * I;
        float b = bias ? bias[o] : 0.0f;
        for (int t = 0; t < T; t++) {
            const float *xt = x + (int64_t)t * I;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int i = 0; i < I; i++)
                s += w[i] * xt[i];
            y[(int64_t)t * O + o] = s + b;
        }
    }
}

void lam_dequant_qw_scalar(float *dst, const uint8_t *src, int type, int n)
{
    for (int b = 0; b < n / 32; b++, dst += 32) {
        __builtin_prefetch(src + QW_PREFETCH_AHEAD);
        uint16_t h[2];
        memcpy(h, src, sizeof h);
        float d = lam_fp16_to_fp32(h[0]);
        if (type == LAM_QW_Q4_1) {
            float m = lam_fp16_to_fp32(h[1]);
            for (int j = 0; j < 16; j++) {
                dst[j] = (src[4 + j] & 0xf) * d + m;
                dst[j + 16] = (src[4 + j] >> 4) * d + m;
            }
            src += 20;
        } else {
            for (int j = 0; j < 32; j++)
                dst[j] = (int8_t)src[2 + j] * d;
            src += 34;
        }
    }
}

void lam_dequant_qw(float *dst, const uint8_t *src, lam_qw_type_t type, int n)
{
    lam_attn_isa_get()->dequant_qw(dst, src, (int)type, n);
}

#define MATMUL_BLOCK 16 /* rows per OpenMP work item */

void lam_matmul_f32(float *y, const float *x, const float *W, const float *bias, int T, int I, int O)
{
    const attn_isa_t *isa = lam_attn_isa_get();
    int nb = (O + MATMUL_BLOCK - 1) / MATMUL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) {
        int o0 = b * MATMUL_BLOCK, o1 = O - o0 < MATMUL_BLOCK ? O : o0 + MATMUL_BLOCK;
        isa->matmul_rows(y, x, W, bias, T, I, O, o0, o1);
    }
}

#define QTILE 4 /* rows expanded at a time: the SIMD kernels' register tile */

void lam_matmul_q(float *y, const float *x, const uint8_t *Wq, lam_qw_type_t type, const float *bias, int T, int I,
                  int O)
{
    const attn_isa_t *isa = lam_attn_isa_get();
    size_t rb = lam_qw_row_bytes(type, I);
    int nt = (O + QTILE - 1) / QTILE;
#pragma omp parallel
    {
        /* on the stack (at most 256 KiB); 2 tiles, so that the kernel's
         * prefetch of "the next tile" stays inside. Aligned to a cache
         * line: the AVX2 kernels ran 15-20% slower on the stack's 16-byte
         * alignment (vectors across lines) */
        float buf[2 * QTILE * I] __attribute__((aligned(64)));
#pragma omp for schedule(static)
        for (int i = 0; i < nt; i++) {
            int o = i * QTILE, nr = O - o < QTILE ? O - o : QTILE;
            if (isa->matmul_qw_tile) {
                isa->matmul_qw_tile(y, x, Wq + (size_t)o * rb, rb, (int)type, bias, T, I, O, o, nr, buf);
                continue;
            }
            for (int r = 0; r < nr; r++)
                isa->dequant_qw(buf + (size_t)r * I, Wq + (size_t)(o + r) * rb, (int)type, I);
            /* rows [o, o + nr) with y and bias shifted by o: row r of buf is row o + r */
            isa->matmul_rows(y + o, x, buf, bias ? bias + o : NULL, T, I, O, 0, nr);
        }
    }
}

void lam_rope_angles(float *cs, int n_rot, int pos, float theta, float freq_scale, const float *freq_div)
{
    for (int i = 0; i < n_rot / 2; i++) {
        float freq = powf(theta, -2.0f * (float)i / (float)n_rot);
        if (freq_div)
            freq /= freq_div[i];
        float ang = (float)pos * freq_scale * freq;
        cs[2 * i] = cosf(ang);
        cs[2 * i + 1] = sinf(ang);
    }
}

void lam_rope_apply_f32(float *x, int n_heads, int head_dim, int n_rot, const float *cs, int neox)
{
    int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1];
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (int64_t)h * head_dim;
            int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float x0 = xh[a], x1 = xh[b];
            xh[a] = x0 * c - x1 * s;
            xh[b] = x0 * s + x1 * c;
        }
    }
}

void lam_rope_f32(float *x, int n_heads, int head_dim, int n_rot, int pos, float theta,
                  float freq_scale, const float *freq_div, int neox)
{
    float cs[LAM_ROPE_MAX_ROT];
    lam_rope_angles(cs, n_rot, pos, theta, freq_scale, freq_div);
    lam_rope_apply_f32(x, n_heads, head_dim, n_rot, cs, neox);
}

void lam_swiglu_scalar(float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void lam_swiglu_f32(float *g, const float *u, int n)
{
    lam_attn_isa_get()->swiglu(g, u, n > 0 ? (size_t)n : 0);
}

void lam_softmax_f32(float *x, int n)
{
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max)
            max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++)
        x[i] /= sum;
}

void lam_attn_ref_f32(float *out, const float *q, const float *K, const float *V, int n_ctx,
                      int n_heads, int n_kv_heads, int head_dim, int kv_stride, float *scratch)
{
    int group = n_heads / n_kv_heads;
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int h = 0; h < n_heads; h++) {
        const float *qh = q + (int64_t)h * head_dim;
        int kvh = h / group;
        for (int t = 0; t < n_ctx; t++)
            scratch[t] = lam_dot_f32(qh, K + (int64_t)t * kv_stride + kvh * head_dim, head_dim) * scale;
        lam_softmax_f32(scratch, n_ctx);
        float *oh = out + (int64_t)h * head_dim;
        for (int d = 0; d < head_dim; d++)
            oh[d] = 0.0f;
        for (int t = 0; t < n_ctx; t++) {
            const float *vt = V + (int64_t)t * kv_stride + kvh * head_dim;
            float a = scratch[t];
            for (int d = 0; d < head_dim; d++)
                oh[d] += a * vt[d];
        }
    }
}

int32_t lam_argmax_f32(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

void lam_act_round_q8_32(float *y, const float *x, int n, float *corr)
{
    if (n % 32) {
        memmove(y, x, (size_t)n * sizeof *y);
        return;
    }
    for (int b = 0; b < n; b += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b + j]));
        float d = lam_fp16_to_fp32(lam_fp32_to_fp16(amax / 127.0f));
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            float q = rintf(x[b + j] * id);
            sum += (int)q;
            y[b + j] = q * d;
        }
        if (corr)
            corr[b / 32] = lam_fp16_to_fp32(lam_fp32_to_fp16(amax / 127.0f * (float)sum)) - d * (float)sum;
    }
}

void lam_act_round_q8_k(float *y, const float *x, int n)
{
    if (n % 256) {
        memmove(y, x, (size_t)n * sizeof *y);
        return;
    }
    for (int b = 0; b < n; b += 256) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; j++) {
            float ax = fabsf(x[b + j]);
            if (ax > amax) {
                amax = ax;
                max = x[b + j];
            }
        }
        if (amax == 0.0f) {
            for (int j = 0; j < 256; j++)
                y[b + j] = 0.0f;
            continue;
        }
        float iscale = -127.0f / max, d = 1.0f / iscale;
        for (int j = 0; j < 256; j++)
            y[b + j] = fminf(127.0f, rintf(iscale * x[b + j])) * d;
    }
}

void lam_act_round_f16(float *y, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = lam_fp16_to_fp32(lam_fp32_to_fp16(x[i]));
}

void lam_act_round_bf16(float *y, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = lam_bf16_to_fp32(lam_fp32_to_bf16(x[i]));
}
