#include "tests/cuda_backend/synth_model.h"

#include "common/dtype.h"
#include "common/gguf.h"
#include "common/model.h"
#include "tests/util/gguf_build.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const synth_shape_t synth_smollm2 = {.n_layers = 30, .dim = 576, .n_heads = 9, .n_kv_heads = 3, .ffn_dim = 1536,
                                     .vocab = 49152, .ctx = 8192, .rope_theta = 100000.0f};
const synth_shape_t synth_llama3_8b = {.n_layers = 32, .dim = 4096, .n_heads = 32, .n_kv_heads = 8, .ffn_dim = 14336,
                                       .vocab = 128256, .ctx = 32768, .rope_theta = 500000.0f, .config_only = true};

typedef struct tensor {
    char name[64];
    int64_t ne0, ne1;
    int n_dims;
    uint32_t type;
    float scale;            /* Q4_1: values in about ±scale; F32: 1 ± scale */
    uint64_t offset, bytes;
} tensor_t;

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_unit(uint64_t *s) { return (float)(rng_next(s) >> 40) / 16777216.0f; }

/* Q4_1 block: f16 d, f16 m, 16 bytes of 4-bit codes; x = d * q + m */
static void fill_q4_1(uint8_t *p, int64_t n_blocks, float scale, uint64_t *rng)
{
    for (int64_t b = 0; b < n_blocks; b++, p += 20) {
        float a = scale * (0.75f + 0.5f * rng_unit(rng)); /* blocks differ a little, as real ones do */
        uint16_t d = lam_fp32_to_fp16(2.0f * a / 15.0f), m = lam_fp32_to_fp16(-a);
        memcpy(p, &d, 2);
        memcpy(p + 2, &m, 2);
        for (int i = 0; i < 16; i += 8) {
            uint64_t r = rng_next(rng);
            memcpy(p + 4 + i, &r, 8);
        }
    }
}

static void add(tensor_t *t, int *k, const char *name, int64_t ne0, int64_t ne1, uint32_t type, float scale)
{
    tensor_t *x = &t[(*k)++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->ne0 = ne0;
    x->ne1 = ne1;
    x->n_dims = ne1 > 1 ? 2 : 1;
    x->type = type;
    x->scale = scale;
}

int synth_model_write(const char *path, const synth_shape_t *s, uint64_t seed)
{
    const int hd = s->dim / s->n_heads, q_dim = s->n_heads * hd, kv_dim = s->n_kv_heads * hd;
    if (s->dim % s->n_heads || s->n_heads % s->n_kv_heads || s->dim % 32 || s->ffn_dim % 32 || q_dim % 32) {
        printf("synthetic model: shape not representable in Q4_1\n");
        return -1;
    }
    int n_t = s->config_only ? 1 : 2 + 9 * s->n_layers;
    tensor_t *t = calloc((size_t)n_t, sizeof *t);
    if (!t)
        return -1;
    int k = 0;
    char n[64];
    add(t, &k, "token_embd.weight", s->dim, s->vocab, s->config_only ? LAM_GGML_F16 : LAM_GGML_Q4_1, 1.0f);
    if (!s->config_only)
        add(t, &k, "output_norm.weight", s->dim, 1, LAM_GGML_F32, 0.1f);
    for (int l = 0; l < s->n_layers && !s->config_only; l++) {
        const float in_d = sqrtf(3.0f / (float)s->dim);
        static const struct { const char *suffix; int kind; } rows[] = {
            {"attn_norm", 0}, {"attn_q", 1}, {"attn_k", 2}, {"attn_v", 2}, {"attn_output", 3},
            {"ffn_norm", 0}, {"ffn_gate", 4}, {"ffn_up", 4}, {"ffn_down", 5}};
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
            snprintf(n, sizeof n, "blk.%d.%s.weight", l, rows[r].suffix);
            switch (rows[r].kind) {
            case 0: add(t, &k, n, s->dim, 1, LAM_GGML_F32, 0.1f); break;
            case 1: add(t, &k, n, s->dim, q_dim, LAM_GGML_Q4_1, in_d); break;
            case 2: add(t, &k, n, s->dim, kv_dim, LAM_GGML_Q4_1, in_d); break;
            case 3: add(t, &k, n, q_dim, s->dim, LAM_GGML_Q4_1, sqrtf(3.0f / (float)q_dim)); break;
            case 4: add(t, &k, n, s->dim, s->ffn_dim, LAM_GGML_Q4_1, in_d); break;
            default: add(t, &k, n, s->ffn_dim, s->dim, LAM_GGML_Q4_1, sqrtf(3.0f / (float)s->ffn_dim)); break;
            }
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < n_t; i++) {
        t[i].offset = off;
        t[i].bytes = t[i].type == LAM_GGML_F32   ? (uint64_t)t[i].ne0 * 4
                     : t[i].type == LAM_GGML_F16 ? (uint64_t)(t[i].ne0 * t[i].ne1) * 2
                                                 : (uint64_t)(t[i].ne0 * t[i].ne1 / 32) * 20;
        off += (t[i].bytes + 31) / 32 * 32;
    }
    gb_t b = {0};
    gb_bytes(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, (uint64_t)n_t);
    gb_u64(&b, 11);
    gb_kv_str(&b, "general.architecture", "llama");
    gb_kv_str(&b, "general.name", "lamina synthetic (random weights)");
    gb_kv_u32(&b, "llama.block_count", (uint32_t)s->n_layers);
    gb_kv_u32(&b, "llama.context_length", (uint32_t)s->ctx);
    gb_kv_u32(&b, "llama.embedding_length", (uint32_t)s->dim);
    gb_kv_u32(&b, "llama.feed_forward_length", (uint32_t)s->ffn_dim);
    gb_kv_u32(&b, "llama.attention.head_count", (uint32_t)s->n_heads);
    gb_kv_u32(&b, "llama.attention.head_count_kv", (uint32_t)s->n_kv_heads);
    gb_kv_f32(&b, "llama.rope.freq_base", s->rope_theta);
    gb_kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gb_kv_u32(&b, "llama.vocab_size", (uint32_t)s->vocab);
    for (int i = 0; i < n_t; i++) {
        int64_t ne[2] = {t[i].ne0, t[i].ne1};
        gb_tensor_info(&b, t[i].name, t[i].n_dims, ne, t[i].type, t[i].offset);
    }
    gb_pad(&b, 32);
    size_t data0 = b.len;
    if (s->config_only) {
        free(t);
        FILE *f = fopen(path, "wb");
        int rc = f && fwrite(b.buf, 1, b.len, f) == b.len && ftruncate(fileno(f), (off_t)(data0 + off)) == 0 ? 0 : -1;
        if (f && fclose(f) != 0)
            rc = -1;
        if (rc)
            printf("synthetic model: cannot write %s\n", path);
        gb_free(&b);
        return rc;
    }
    uint8_t zero[32] = {0};
    for (size_t need = data0 + off; b.len < need;) /* reserve the data section */
        gb_bytes(&b, zero, need - b.len < sizeof zero ? need - b.len : sizeof zero);
    uint64_t rng = seed ^ 0x5eed5eed5eedull;
    for (int i = 0; i < n_t; i++) {
        uint8_t *p = b.buf + data0 + t[i].offset;
        if (t[i].type == LAM_GGML_F32) {
            for (int64_t j = 0; j < t[i].ne0; j++) {
                float v = 1.0f + t[i].scale * (2.0f * rng_unit(&rng) - 1.0f);
                memcpy(p + 4 * j, &v, 4);
            }
        } else {
            fill_q4_1(p, t[i].ne0 * t[i].ne1 / 32, t[i].scale, &rng);
        }
    }
    free(t);
    FILE *f = fopen(path, "wb");
    int rc = f && fwrite(b.buf, 1, b.len, f) == b.len ? 0 : -1;
    if (f && fclose(f) != 0)
        rc = -1;
    if (rc)
        printf("synthetic model: cannot write %s\n", path);
    gb_free(&b);
    return rc;
}

static char g_path[512];
static int g_written;

void synth_model_remove(void)
{
    if (g_written)
        unlink(g_path);
    g_written = 0;
}

const char *synth_model_or_real(char *buf, int len, bool *synthetic)
{
    *synthetic = false;
    lam_model_default_path(buf, (size_t)len);
    if (access(buf, R_OK) == 0)
        return buf;
    char *path = g_path;
    if (!g_written) {
        const char *dir = getenv("TMPDIR");
        snprintf(path, sizeof g_path, "%s/lamina-synth-smollm2-%d.gguf", dir && *dir ? dir : "/tmp", (int)getpid());
        printf("\n  NOTE: %s is missing: using a synthetic model of SmolLM2-135M's shape with random Q4_1 weights "
               "(%s)\n", buf, path);
        if (synth_model_write(path, &synth_smollm2, 135) != 0)
            return NULL;
        g_written = 1;
    }
    *synthetic = true;
    snprintf(buf, (size_t)len, "%s", path);
    return buf;
}
