/* Paged attention, flash-decoding style (see kernels/README.md).
 *
 * Main kernel: one block of NW warps per (sequence, KV head, chunk of its
 * query heads, block of query rows, key split). The block holds up to NQ
 * query vectors (rows x heads of one KV head) in registers. A key row is
 * read by a group of L lanes, each lane taking one or two 16-byte vectors
 * of it, so a warp reads KPW = 32 / L keys at once and each K/V row is read
 * once for all the query vectors of the block (GQA). Every lane group keeps
 * its own online softmax state (max m, sum l, acc) per query vector; the
 * groups of a warp merge through shuffles, the warps through shared memory.
 * Scores are kept in the log2 domain (q is pre-scaled by scale * log2 e).
 *
 * With one split the block writes the normalised output; with several each
 * block writes its (m, l, acc) to the workspace and lam_k_attn_merge
 * combines the splits of a (row, head) with weights 2^(m_i - max m). */
#include "kernels/cuda/internal.cuh"

#include <cuda_fp16.h>
#include <float.h>
#include <limits.h>

#define NW 4                 /* warps per block */
#define MIN_SPLIT_KEYS 64    /* fewer keys per split cost more in partials than they gain */
#define MAX_SPLITS 256
#define BLOCKS_PER_SM 4      /* split target: this many blocks per multiprocessor */

/* ---- K/V element types ------------------------------------------------------ */

/* 16 bytes of K or V as f32 values. */
template <int DT> struct kv_vec;
template <> struct kv_vec<LAM_DT_F32> {
    static constexpr int E = 4;
    static __device__ __forceinline__ void cvt(const uint4 &w, float *f)
    {
        f[0] = __uint_as_float(w.x);
        f[1] = __uint_as_float(w.y);
        f[2] = __uint_as_float(w.z);
        f[3] = __uint_as_float(w.w);
    }
};
template <> struct kv_vec<LAM_DT_F16> {
    static constexpr int E = 8;
    static __device__ __forceinline__ void cvt(const uint4 &w, float *f)
    {
        const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            f[2 * k] = __half2float(__ushort_as_half((unsigned short)(u[k] & 0xffffu)));
            f[2 * k + 1] = __half2float(__ushort_as_half((unsigned short)(u[k] >> 16)));
        }
    }
};
template <> struct kv_vec<LAM_DT_BF16> {
    static constexpr int E = 8;
    static __device__ __forceinline__ void cvt(const uint4 &w, float *f)
    {
        const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            f[2 * k] = __uint_as_float(u[k] << 16);
            f[2 * k + 1] = __uint_as_float(u[k] & 0xffff0000u);
        }
    }
};

/* ---- the work of one launch ----------------------------------------------------- */

typedef struct attn_launch {
    lam_cuda_attn_args_t a;
    int n_heads;         /* n_kv_heads * group */
    int gh, n_hc, rb;    /* heads per block, head chunks, rows per block */
    int n_rb;            /* row blocks in the grid (the kernel strides over more) */
    int n_splits, split_keys;
    float *ws_acc;       /* [n_tok][n_heads][n_splits][head_dim] */
    float *ws_ml;        /* [n_tok][n_heads][n_splits][2] */
} attn_launch_t;

template <int DT, int HD, int NQ>
__global__ void __launch_bounds__(NW * 32) lam_k_attn(const attn_launch_t P)
{
    constexpr int E = kv_vec<DT>::E;            /* elements per 16-byte vector */
    constexpr int VPR = HD / E;                 /* vectors per key row */
    constexpr int L = VPR < 32 ? VPR : 32;      /* lanes per key row */
    constexpr int NV = VPR / L;                 /* vectors per lane */
    constexpr int D = NV * E;                   /* dims per lane */
    constexpr int KPW = 32 / L;                 /* keys per warp and step */
    constexpr int U = NQ * D <= 32 ? 4 : 2;     /* keys per lane group and step */
    constexpr int ESZ = 16 / E;
    static_assert(VPR % L == 0 && 32 % L == 0, "head_dim does not fit the lane layout");

    __shared__ float sm_acc[NW][NQ][HD];
    __shared__ float sm_m[NW][NQ], sm_l[NW][NQ];

    const lam_cuda_attn_args_t &a = P.a;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int li = lane % L, kg = lane / L;

    /* which work item: split innermost */
    long long b = blockIdx.x;
    const int sp = (int)(b % P.n_splits);
    b /= P.n_splits;
    const int rb0 = (int)(b % P.n_rb);
    b /= P.n_rb;
    const int hc = (int)(b % P.n_hc);
    b /= P.n_hc;
    const int h = (int)(b % a.n_kv_heads);
    const int s = (int)(b / a.n_kv_heads);

    const int row0 = a.row[s];
    int rows_s = a.row[s + 1] - row0;
    if (row0 < 0 || row0 >= a.n_tok || rows_s <= 0)
        return;
    if (rows_s > a.n_tok - row0)
        rows_s = a.n_tok - row0;
    const int p0 = a.pos[s];
    const int32_t *ptab = a.pages + a.page_start[s];
    const int g0 = hc * P.gh;
    const int gh = min(P.gh, a.group - g0);
    const float qmul = a.scale * 1.4426950408889634f; /* log2 e */
    const size_t head_off = (size_t)h * a.head_stride;

    for (int rb = rb0; rb * P.rb < rows_s; rb += P.n_rb) {
        const int r0 = rb * P.rb;
        const int nr = min(P.rb, rows_s - r0);
        const int nq = nr * gh;
        const long long keys_max = (long long)p0 + r0 + nr; /* keys of the block's last row */
        const long long k_begin = (long long)sp * P.split_keys;
        long long k_end = sp == P.n_splits - 1 ? keys_max : min(keys_max, k_begin + P.split_keys);

        /* the query vectors: i -> row r0 + i / gh, head g0 + i % gh */
        float q[NQ][D], acc[NQ][D], m[NQ], l[NQ];
        long long lim[NQ];
#pragma unroll
        for (int i = 0; i < NQ; i++) {
            m[i] = -FLT_MAX;
            l[i] = 0.0f;
            lim[i] = -1;
#pragma unroll
            for (int d = 0; d < D; d++) {
                acc[i][d] = 0.0f;
                q[i][d] = 0.0f;
            }
            if (i < nq) {
                int r = r0 + i / gh, g = g0 + i % gh;
                lim[i] = (long long)p0 + r + 1;
                const float *qr = a.q + ((size_t)(row0 + r) * P.n_heads + (size_t)h * a.group + g) * HD;
#pragma unroll
                for (int v = 0; v < NV; v++) {
#pragma unroll
                    for (int e = 0; e < E; e += 4) {
                        float4 f = *(const float4 *)(qr + (v * L + li) * E + e);
                        q[i][v * E + e] = f.x * qmul;
                        q[i][v * E + e + 1] = f.y * qmul;
                        q[i][v * E + e + 2] = f.z * qmul;
                        q[i][v * E + e + 3] = f.w * qmul;
                    }
                }
            }
        }

        for (long long base = k_begin; base < k_end; base += (long long)NW * KPW * U) {
            uint4 kw[U][NV], vw[U][NV];
            long long j[U];
            bool ok[U], bad[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                j[u] = base + (long long)(u * NW + warp) * KPW + kg;
                ok[u] = j[u] < k_end;
                bad[u] = false;
                int pidx = 0;
                if (ok[u]) {
                    pidx = ptab[j[u] / a.page_tokens];
                    bad[u] = pidx < 0 || pidx >= a.n_pages;
                }
                if (ok[u] && !bad[u]) {
                    const uint8_t *pg = a.pool + (size_t)pidx * a.page_bytes + head_off +
                                        (size_t)(j[u] % a.page_tokens) * (HD * ESZ);
                    const uint4 *kp = (const uint4 *)(pg + a.k_off), *vp = (const uint4 *)(pg + a.v_off);
#pragma unroll
                    for (int v = 0; v < NV; v++) {
                        kw[u][v] = __ldg(kp + v * L + li);
                        vw[u][v] = __ldg(vp + v * L + li);
                    }
                } else {
#pragma unroll
                    for (int v = 0; v < NV; v++)
                        kw[u][v] = vw[u][v] = make_uint4(0, 0, 0, 0);
                }
            }
            /* scores, reduced over the L lanes of a key */
            float sc[U][NQ];
#pragma unroll
            for (int u = 0; u < U; u++) {
                float kf[D];
#pragma unroll
                for (int v = 0; v < NV; v++)
                    kv_vec<DT>::cvt(kw[u][v], kf + v * E);
#pragma unroll
                for (int i = 0; i < NQ; i++) {
                    float t = 0.0f;
#pragma unroll
                    for (int d = 0; d < D; d++)
                        t = fmaf(q[i][d], kf[d], t);
#pragma unroll
                    for (int o = L / 2; o > 0; o >>= 1)
                        t += __shfl_xor_sync(0xffffffffu, t, o);
                    sc[u][i] = j[u] < lim[i] && ok[u] ? (bad[u] ? __int_as_float(0x7fc00000) : t) : -INFINITY;
                }
            }
            /* online softmax update */
#pragma unroll
            for (int i = 0; i < NQ; i++) {
                float mx = m[i];
#pragma unroll
                for (int u = 0; u < U; u++)
                    mx = fmaxf(mx, sc[u][i]);
                float corr = exp2f(m[i] - mx);
                m[i] = mx;
                l[i] *= corr;
#pragma unroll
                for (int d = 0; d < D; d++)
                    acc[i][d] *= corr;
#pragma unroll
                for (int u = 0; u < U; u++) {
                    float p = exp2f(sc[u][i] - mx);
                    l[i] += p;
                    float vf[D];
#pragma unroll
                    for (int v = 0; v < NV; v++)
                        kv_vec<DT>::cvt(vw[u][v], vf + v * E);
#pragma unroll
                    for (int d = 0; d < D; d++)
                        acc[i][d] = fmaf(p, vf[d], acc[i][d]);
                }
            }
        }

        /* merge the lane groups of this warp */
#pragma unroll
        for (int o = L; o < 32; o <<= 1) {
#pragma unroll
            for (int i = 0; i < NQ; i++) {
                float mo = __shfl_xor_sync(0xffffffffu, m[i], o);
                float lo = __shfl_xor_sync(0xffffffffu, l[i], o);
                float mx = fmaxf(m[i], mo);
                float ca = exp2f(m[i] - mx), cb = exp2f(mo - mx);
                m[i] = mx;
                l[i] = l[i] * ca + lo * cb;
#pragma unroll
                for (int d = 0; d < D; d++) {
                    float ao = __shfl_xor_sync(0xffffffffu, acc[i][d], o);
                    acc[i][d] = acc[i][d] * ca + ao * cb;
                }
            }
        }
        /* then the warps, through shared memory */
        if (kg == 0) {
#pragma unroll
            for (int i = 0; i < NQ; i++) {
#pragma unroll
                for (int v = 0; v < NV; v++)
#pragma unroll
                    for (int e = 0; e < E; e++)
                        sm_acc[warp][i][(v * L + li) * E + e] = acc[i][v * E + e];
                if (li == 0) {
                    sm_m[warp][i] = m[i];
                    sm_l[warp][i] = l[i];
                }
            }
        }
        __syncthreads();
        for (int t = threadIdx.x; t < nq * HD; t += NW * 32) {
            int i = t / HD, d = t % HD;
            float mx = sm_m[0][i];
#pragma unroll
            for (int w = 1; w < NW; w++)
                mx = fmaxf(mx, sm_m[w][i]);
            float lsum = 0.0f, asum = 0.0f;
#pragma unroll
            for (int w = 0; w < NW; w++) {
                float c = exp2f(sm_m[w][i] - mx);
                lsum += sm_l[w][i] * c;
                asum += sm_acc[w][i][d] * c;
            }
            int r = r0 + i / gh, g = g0 + i % gh;
            size_t rh = (size_t)(row0 + r) * P.n_heads + (size_t)h * a.group + g; /* (row, head) */
            if (P.n_splits == 1) {
                a.out[rh * HD + d] = asum / lsum; /* no keys: 0 / 0 = NaN */
            } else {
                size_t ps = rh * P.n_splits + sp;
                P.ws_acc[ps * HD + d] = asum;
                if (d == 0) {
                    P.ws_ml[2 * ps] = mx;
                    P.ws_ml[2 * ps + 1] = lsum;
                }
            }
        }
        __syncthreads(); /* shared memory is reused by the next row block */
    }
}

/* One warp per (row, head): out = sum_i 2^(m_i - M) acc_i / sum_i 2^(m_i - M) l_i. */
__global__ void lam_k_attn_merge(float *out, const float *ws_acc, const float *ws_ml, size_t n_items, int n_splits,
                                 int hd)
{
    const int lane = threadIdx.x & 31;
    const size_t warps = (size_t)gridDim.x * (blockDim.x >> 5);
    for (size_t it = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); it < n_items; it += warps) {
        const float *ml = ws_ml + it * n_splits * 2;
        const float *acc = ws_acc + it * n_splits * (size_t)hd;
        float mx = -FLT_MAX;
        for (int i = lane; i < n_splits; i += 32)
            mx = fmaxf(mx, ml[2 * i]);
        for (int o = 16; o > 0; o >>= 1)
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float lsum = 0.0f;
        for (int i = lane; i < n_splits; i += 32)
            lsum += ml[2 * i + 1] * exp2f(ml[2 * i] - mx);
        lsum = lam_d_warp_sum(lsum);
        for (int d = lane * 4; d < hd; d += 128) {
            float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            for (int i = 0; i < n_splits; i++) {
                float c = exp2f(ml[2 * i] - mx);
                float4 v = *(const float4 *)(acc + (size_t)i * hd + d);
                sum.x = fmaf(v.x, c, sum.x);
                sum.y = fmaf(v.y, c, sum.y);
                sum.z = fmaf(v.z, c, sum.z);
                sum.w = fmaf(v.w, c, sum.w);
            }
            float4 o4 = make_float4(sum.x / lsum, sum.y / lsum, sum.z / lsum, sum.w / lsum);
            *(float4 *)(out + it * (size_t)hd + d) = o4;
        }
    }
}

/* ---- host side ---------------------------------------------------------------- */

lam_status_t lam_cu_attn_check(const lam_cuda_attn_args_t *a, const char *op)
{
    LAM_CU_ARG(a, "%s: NULL arguments", op);
    LAM_CU_ARG(a->row && a->pos && a->page_start && a->pages && a->pool, "%s: NULL pointer", op);
    LAM_CU_ARG(a->n_seq >= 0 && a->n_tok >= 0 && a->max_rows >= 1 && a->max_keys >= 1,
               "%s: bad batch (n_seq %d, n_tok %d, max_rows %d, max_keys %d)", op, a->n_seq, a->n_tok, a->max_rows,
               a->max_keys);
    LAM_CU_ARG(a->head_dim == 64 || a->head_dim == 128 || a->head_dim == 256,
               "%s: head_dim %d (supported: 64, 128, 256)", op, a->head_dim);
    LAM_CU_ARG(lam_cu_is_dtype(a->kv_dtype), "%s: bad kv dtype %d", op, a->kv_dtype);
    LAM_CU_ARG(a->n_kv_heads >= 1 && a->group >= 1 && a->group <= 64 && a->page_tokens >= 1 && a->n_pages >= 1,
               "%s: bad cache shape (kv heads %d, group %d, page tokens %d, pages %lld)", op, a->n_kv_heads, a->group,
               a->page_tokens, (long long)a->n_pages);
    LAM_CU_ARG((int64_t)a->n_kv_heads * a->group <= 4096, "%s: too many heads", op);
    size_t row_bytes = (size_t)a->head_dim * lam_dtype_size((unsigned)a->kv_dtype);
    size_t block_bytes = (size_t)a->page_tokens * row_bytes;
    LAM_CU_ARG(a->head_stride >= block_bytes || a->n_kv_heads == 1, "%s: head_stride %zu < one head's block %zu",
               op, a->head_stride, block_bytes);
    size_t last = (size_t)(a->n_kv_heads - 1) * a->head_stride + block_bytes;
    LAM_CU_ARG(a->k_off + last <= a->page_bytes && a->v_off + last <= a->page_bytes,
               "%s: K/V blocks (k_off %zu, v_off %zu, %zu bytes) do not fit a %zu-byte page", op, a->k_off, a->v_off,
               last, a->page_bytes);
    LAM_CU_ARG(a->page_bytes % 16 == 0 && a->k_off % 16 == 0 && a->v_off % 16 == 0 && a->head_stride % 16 == 0 &&
                   lam_cu_aligned(a->pool, 16),
               "%s: pool, page_bytes, k_off, v_off and head_stride must be multiples of 16", op);
    LAM_CU_ARG((uint64_t)a->n_pages <= SIZE_MAX / a->page_bytes, "%s: pool size overflows", op);
    LAM_CU_ARG(lam_cu_aligned(a->row, 4) && lam_cu_aligned(a->pos, 4) && lam_cu_aligned(a->page_start, 4) &&
                   lam_cu_aligned(a->pages, 4),
               "%s: misaligned table", op);
    return LAM_OK;
}

/* Chooses the grid; fills L (except the workspace pointers) and plan. */
static lam_status_t make_plan(const lam_cuda_attn_args_t *a, size_t ws_bytes, int min_splits, attn_launch_t *L,
                              int *nq_out, lam_cuda_attn_plan_t *plan)
{
    int nq = 8;
    if (a->max_rows == 1) /* decode: the smallest register tile that holds the group */
        nq = a->group <= 1 ? 1 : a->group <= 2 ? 2 : a->group <= 4 ? 4 : 8;
    L->a = *a;
    L->n_heads = a->n_kv_heads * a->group;
    L->gh = a->group < nq ? a->group : nq;
    L->n_hc = (a->group + L->gh - 1) / L->gh;
    L->rb = nq / L->gh;
    L->n_rb = (a->max_rows + L->rb - 1) / L->rb;
    int64_t base = (int64_t)a->n_seq * a->n_kv_heads * L->n_hc * L->n_rb;
    int sm = lam_cuda_sm_count();
    int64_t target = (int64_t)BLOCKS_PER_SM * (sm > 0 ? sm : 1);
    int64_t splits = base > 0 ? (target + base - 1) / base : 1;
    int64_t by_keys = (a->max_keys + MIN_SPLIT_KEYS - 1) / MIN_SPLIT_KEYS;
    if (splits > by_keys)
        splits = by_keys;
    if (splits < min_splits)
        splits = min_splits < a->max_keys ? min_splits : a->max_keys;
    if (splits > MAX_SPLITS)
        splits = MAX_SPLITS;
    size_t per_split = (size_t)a->n_tok * L->n_heads * ((size_t)a->head_dim + 2) * sizeof(float);
    if (splits > 1 && per_split > 0 && (size_t)splits > ws_bytes / per_split)
        splits = (int64_t)(ws_bytes / per_split);
    if (splits < 2)
        splits = 1;
    int64_t chunk = (a->max_keys + splits - 1) / splits;
    splits = (a->max_keys + chunk - 1) / chunk;
    L->n_splits = (int)splits;
    L->split_keys = (int)chunk;
    int64_t blocks = base * splits;
    LAM_CU_ARG(blocks <= INT_MAX, "cuda attn: %lld blocks is too many", (long long)blocks);
    *nq_out = nq;
    plan->n_splits = L->n_splits;
    plan->split_keys = L->split_keys;
    plan->n_blocks = blocks;
    plan->ws_used = splits > 1 ? per_split * (size_t)splits : 0;
    return LAM_OK;
}

extern "C" size_t lam_cuda_attn_workspace_size(int head_dim)
{
    if (head_dim < 1)
        return 0;
    int sm = lam_cuda_sm_count();
    /* Splits are only used while (blocks without splits) < target, and then
     * blocks x splits < 2 x target with at most 8 query vectors each. */
    size_t target = (size_t)BLOCKS_PER_SM * (size_t)(sm > 0 ? sm : 1);
    return 2 * target * 8 * ((size_t)head_dim + 2) * sizeof(float);
}

extern "C" lam_status_t lam_cuda_attn_plan(const lam_cuda_attn_args_t *a, size_t ws_bytes,
                                           lam_cuda_attn_plan_t *plan)
{
    lam_status_t st = lam_cu_attn_check(a, "cuda attn");
    if (st != LAM_OK)
        return st;
    LAM_CU_ARG(plan, "cuda attn: NULL plan");
    attn_launch_t L;
    int nq;
    return make_plan(a, ws_bytes, 0, &L, &nq, plan);
}

template <int DT, int HD>
static void launch_nq(int nq, unsigned blocks, cudaStream_t stream, const attn_launch_t &L)
{
    switch (nq) {
    case 1: lam_k_attn<DT, HD, 1><<<blocks, NW * 32, 0, stream>>>(L); break;
    case 2: lam_k_attn<DT, HD, 2><<<blocks, NW * 32, 0, stream>>>(L); break;
    case 4: lam_k_attn<DT, HD, 4><<<blocks, NW * 32, 0, stream>>>(L); break;
    default: lam_k_attn<DT, HD, 8><<<blocks, NW * 32, 0, stream>>>(L); break;
    }
}

template <int DT>
static void launch_hd(int hd, int nq, unsigned blocks, cudaStream_t stream, const attn_launch_t &L)
{
    switch (hd) {
    case 64: launch_nq<DT, 64>(nq, blocks, stream, L); break;
    case 128: launch_nq<DT, 128>(nq, blocks, stream, L); break;
    default: launch_nq<DT, 256>(nq, blocks, stream, L); break;
    }
}

extern "C" lam_status_t lam_cuda_attn(const lam_cuda_attn_args_t *a, void *ws, size_t ws_bytes, int min_splits,
                                      cudaStream_t stream)
{
    lam_status_t st = lam_cu_attn_check(a, "cuda attn");
    if (st != LAM_OK)
        return st;
    LAM_CU_ARG(a->q && a->out, "cuda attn: NULL q or out");
    LAM_CU_ARG(lam_cu_aligned(a->q, 16) && lam_cu_aligned(a->out, 16) && lam_cu_aligned(ws, 16),
               "cuda attn: q, out and workspace must be 16-byte aligned");
    LAM_CU_ARG(ws || ws_bytes == 0, "cuda attn: NULL workspace of %zu bytes", ws_bytes);
    LAM_CU_ARG(min_splits >= 0, "cuda attn: bad min_splits %d", min_splits);
    if (a->n_seq == 0 || a->n_tok == 0)
        return LAM_OK;
    attn_launch_t L;
    lam_cuda_attn_plan_t plan;
    int nq;
    st = make_plan(a, ws_bytes, min_splits, &L, &nq, &plan);
    if (st != LAM_OK)
        return st;
    size_t items = (size_t)a->n_tok * L.n_heads;
    L.ws_acc = (float *)ws;
    L.ws_ml = L.n_splits > 1 ? L.ws_acc + items * L.n_splits * (size_t)a->head_dim : NULL;
    unsigned blocks = (unsigned)plan.n_blocks;
    switch (a->kv_dtype) {
    case LAM_DT_F32: launch_hd<LAM_DT_F32>(a->head_dim, nq, blocks, stream, L); break;
    case LAM_DT_F16: launch_hd<LAM_DT_F16>(a->head_dim, nq, blocks, stream, L); break;
    default: launch_hd<LAM_DT_BF16>(a->head_dim, nq, blocks, stream, L); break;
    }
    LAM_CU_LAUNCHED();
    if (L.n_splits > 1) {
        lam_k_attn_merge<<<lam_cu_blocks(items, 4, 65535), 128, 0, stream>>>(a->out, L.ws_acc, L.ws_ml, items,
                                                                           L.n_splits, a->head_dim);
        LAM_CU_LAUNCHED();
    }
    return LAM_OK;
}
