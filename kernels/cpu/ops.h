/* CPU reference kernels (float32). Row-major everywhere; shapes in brackets. */
#ifndef LAM_KERNELS_CPU_OPS_H
#define LAM_KERNELS_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

/* y[i] = x[i] / rms(x) * w[i], rms = sqrt(mean(x^2) + eps) */
void lam_rmsnorm_f32(float *y, const float *x, const float *w, int n, float eps);

/* y[T][O] = x[T][I] · W[O][I]ᵀ (+ bias[O] if non-NULL). OpenMP over O,
 * SIMD by the attention kernels' ISA (lam_attn_isa). Bit-for-bit, each
 * output depends only on its row, its token and I: not on T, O or the
 * thread count, so any split of a batch gives the same results. */
void lam_matmul_f32(float *y, const float *x, const float *W, const float *bias, int T, int I, int O);

/* Block-quantised weight rows that lam_matmul_q reads directly (GGUF's
 * block layouts): Q4_1 {f16 d, m; u8 qs[16]} x = nibble*d + m, 20 bytes per
 * 32 weights; Q8_0 {f16 d; i8 qs[32]} x = q*d, 34 bytes per 32. */
typedef enum lam_qw_type { LAM_QW_NONE = 0, LAM_QW_Q4_1, LAM_QW_Q8_0 } lam_qw_type_t;

/* Bytes of one row of n weights (n % 32 == 0). */
static inline size_t lam_qw_row_bytes(lam_qw_type_t type, int n)
{
    return (size_t)(n / 32) * (type == LAM_QW_Q4_1 ? 20u : 34u);
}

/* dst[0..n) = the weights of n / 32 blocks, as common/dequant.c gives them. */
void lam_dequant_qw(float *dst, const uint8_t *src, lam_qw_type_t type, int n);

/* lam_matmul_f32 with W[o] = lam_dequant_qw(row o of Wq), bit for bit:
 * each tile of 4 rows is expanded into a small buffer and multiplied by
 * the same kernel. Streams 20 or 34 bytes per 32 weights instead of 128,
 * and costs the expansion once per tile per call, which pays where the
 * product is memory-bound (few tokens). I % 32 == 0, I <= LAM_MATMUL_Q_MAX_I
 * (the expanded tile lives on the stack). */
#define LAM_MATMUL_Q_MAX_I 8192
void lam_matmul_q(float *y, const float *x, const uint8_t *Wq, lam_qw_type_t type, const float *bias, int T, int I,
                  int O);

float lam_dot_f32(const float *a, const float *b, int n);

/* Rotary embedding in place on x[n_heads][head_dim] at position pos.
 * neox = 0: rotate pairs (x[2i], x[2i+1]); neox = 1: (x[i], x[i + n_rot/2]).
 * Angle for pair i: pos * freq_scale * theta^(-2i/n_rot) / freq_div[i] (freq_div may be NULL).
 * n_rot <= LAM_ROPE_MAX_ROT. */
void lam_rope_f32(float *x, int n_heads, int head_dim, int n_rot, int pos, float theta,
                  float freq_scale, const float *freq_div, int neox);

/* lam_rope_f32 in two halves, for callers that rotate several tensors (or
 * layers) at one position: cs[2i], cs[2i+1] = cos, sin of pair i's angle
 * (n_rot <= LAM_ROPE_MAX_ROT floats), then the rotation. The same bits as
 * lam_rope_f32. */
#define LAM_ROPE_MAX_ROT 1024
void lam_rope_angles(float *cs, int n_rot, int pos, float theta, float freq_scale, const float *freq_div);
void lam_rope_apply_f32(float *x, int n_heads, int head_dim, int n_rot, const float *cs, int neox);

/* g[i] = silu(g[i]) * u[i] */
void lam_swiglu_f32(float *g, const float *u, int n);

/* In place, numerically stable. */
void lam_softmax_f32(float *x, int n);

/* One query token's attention over a contiguous cache.
 *   q   [n_heads][head_dim]          (already rotated)
 *   K,V [n_ctx][kv_stride]           (KV head h at offset h*head_dim)
 *   out [n_heads][head_dim]
 *   scratch [n_ctx]
 * Query head h uses KV head h / (n_heads / n_kv_heads). */
void lam_attn_ref_f32(float *out, const float *q, const float *K, const float *V, int n_ctx,
                      int n_heads, int n_kv_heads, int head_dim, int kv_stride, float *scratch);

int32_t lam_argmax_f32(const float *x, int n);

/* Activation rounding as llama.cpp's CPU kernels do it before a matrix
 * product with quantised weights, returned dequantised (y may equal x):
 *   q8_32: per block of 32, d = fp16(amax/127), q = rint(x*127/amax), y = q*d
 *   q8_k:  per block of 256, d = max/-127 (max = the value of largest |x|),
 *          q = min(127, rint(x/d)), y = q*d
 *   f16 / bf16: round each value to that type.
 * n must be a multiple of the block size (32 / 256); otherwise unchanged.
 * q8_32 also gives, per block, corr = fp16(amax/127 * Σq) - d·Σq: Q4_1/Q5_1
 * kernels multiply the weights' block minimum by that fp16 sum, so
 * y·w + Σ_b min_b·corr_b reproduces them (corr may be NULL). */
void lam_act_round_q8_32(float *y, const float *x, int n, float *corr);
void lam_act_round_q8_k(float *y, const float *x, int n);
void lam_act_round_f16(float *y, const float *x, int n);
void lam_act_round_bf16(float *y, const float *x, int n);

#endif
