/* Model shapes: presets, derived sizes, and loading from GGUF or config.json. */
#include "tools/estimate/estimate.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/gguf.h"

/* Shapes from the models' published config.json files (Hugging Face hub). */
static const lam_est_model_t presets[] = {
    /* name           arch     L   d     ff     heads kv  hd   vocab   tied  bias */
    {"llama-2-7b",   "llama", 32, 4096, 11008, 32, 32, 128, 32000, false, false},
    {"llama-2-13b",  "llama", 40, 5120, 13824, 40, 40, 128, 32000, false, false},
    {"llama-2-70b",  "llama", 80, 8192, 28672, 64, 8, 128, 32000, false, false},
    {"llama-33b",    "llama", 60, 6656, 17920, 52, 52, 128, 32000, false, false},
    {"llama-65b",    "llama", 80, 8192, 22016, 64, 64, 128, 32000, false, false},
    {"llama-3-8b",   "llama", 32, 4096, 14336, 32, 8, 128, 128256, false, false},
    {"llama-3-70b",  "llama", 80, 8192, 28672, 64, 8, 128, 128256, false, false},
    {"mistral-7b",   "llama", 32, 4096, 14336, 32, 8, 128, 32000, false, false},
    {"qwen2-7b",     "qwen2", 28, 3584, 18944, 28, 4, 128, 152064, false, true},
    {"qwen2-72b",    "qwen2", 80, 8192, 29568, 64, 8, 128, 152064, false, true},
    {"smollm2-135m", "llama", 30, 576, 1536, 9, 3, 64, 49152, true, false},
};

int lam_est_model_preset_count(void)
{
    return (int)(sizeof presets / sizeof presets[0]);
}

const lam_est_model_t *lam_est_model_preset_at(int i)
{
    return (i >= 0 && i < lam_est_model_preset_count()) ? &presets[i] : NULL;
}

const lam_est_model_t *lam_est_model_preset(const char *name)
{
    for (int i = 0; i < lam_est_model_preset_count(); i++)
        if (!strcasecmp(presets[i].name, name))
            return &presets[i];
    return NULL;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- derived sizes ---- */

static double attn_params_per_layer(const lam_est_model_t *m)
{
    double q = (double)m->n_heads * m->head_dim, kv = (double)m->n_kv_heads * m->head_dim;
    double d = (double)m->d_model;
    double p = d * q + 2 * d * kv + q * d; /* Wq, Wk, Wv, Wo */
    if (m->qkv_bias)
        p += q + 2 * kv;
    return p;
}

static double ffn_params_per_layer(const lam_est_model_t *m)
{
    return 3.0 * m->d_model * m->d_ff; /* gate, up, down */
}

double lam_est_model_gemm_params(const lam_est_model_t *m)
{
    double per_layer = attn_params_per_layer(m) + ffn_params_per_layer(m);
    return m->n_layers * per_layer + (double)m->vocab * m->d_model; /* + LM head */
}

double lam_est_model_params(const lam_est_model_t *m)
{
    double norms = (2.0 * m->n_layers + 1) * m->d_model;
    double emb = (double)m->vocab * m->d_model;
    return lam_est_model_gemm_params(m) + norms + (m->tied_embeddings ? 0 : emb);
}

double lam_est_dense_flops_per_token(const lam_est_model_t *m)
{
    return 2.0 * lam_est_model_gemm_params(m);
}

double lam_est_kv_bytes_per_token(const lam_est_model_t *m, double elem_bytes)
{
    return 2.0 * m->n_layers * m->n_kv_heads * m->head_dim * elem_bytes;
}

double lam_est_attn_flops_per_token(const lam_est_model_t *m, double ctx)
{
    return 4.0 * m->n_layers * m->n_heads * m->head_dim * ctx;
}

double lam_est_exchange_bytes(const lam_est_model_t *m, double elem_bytes)
{
    return (2.0 * m->n_heads * m->head_dim + 2.0 * m->n_kv_heads * m->head_dim) * elem_bytes;
}

lam_status_t lam_est_model_validate(const lam_est_model_t *m, char *err, size_t errlen)
{
    const struct { const char *name; int64_t v; } f[] = {
        {"block_count/num_hidden_layers", m->n_layers},
        {"embedding_length/hidden_size", m->d_model},
        {"feed_forward_length/intermediate_size", m->d_ff},
        {"head_count/num_attention_heads", m->n_heads},
        {"head_count_kv/num_key_value_heads", m->n_kv_heads},
        {"head_dim", m->head_dim},
        {"vocab_size", m->vocab},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].v <= 0 || f[i].v > ((int64_t)1 << 32)) {
            seterr(err, errlen, "model %s: %s = %lld: must be a positive integer", m->name,
                   f[i].name, (long long)f[i].v);
            return LAM_ERR_MODEL_CONFIG;
        }
    }
    if (m->n_heads % m->n_kv_heads) {
        seterr(err, errlen, "model %s: %lld query heads are not a multiple of %lld KV heads",
               m->name, (long long)m->n_heads, (long long)m->n_kv_heads);
        return LAM_ERR_MODEL_CONFIG;
    }
    return LAM_OK;
}

/* ---- GGUF ---- */

static lam_status_t gguf_u64(const lam_gguf_t *g, const char *arch, const char *suffix,
                             int64_t *out, bool required, const char *path, char *err,
                             size_t errlen)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint64_t v;
    lam_status_t st = lam_gguf_get_u64(g, key, &v);
    if (st == LAM_ERR_NOT_FOUND && !required)
        return LAM_OK;
    if (st != LAM_OK) {
        seterr(err, errlen, "%s: metadata key '%s': %s", path, key, lam_status_str(st));
        return LAM_ERR_MODEL_CONFIG;
    }
    if (v > INT64_MAX) {
        seterr(err, errlen, "%s: metadata key '%s' = %llu: too large", path, key,
               (unsigned long long)v);
        return LAM_ERR_MODEL_CONFIG;
    }
    *out = (int64_t)v;
    return LAM_OK;
}

lam_status_t lam_est_model_from_gguf(const char *path, lam_est_model_t *out, char *err,
                                     size_t errlen)
{
    lam_gguf_t *g = NULL;
    char gerr[256] = "";
    lam_status_t st = lam_gguf_open(path, &g, gerr, sizeof gerr);
    if (st != LAM_OK) {
        seterr(err, errlen, "%s: %s", path, gerr[0] ? gerr : lam_status_str(st));
        return st;
    }
    lam_est_model_t m;
    memset(&m, 0, sizeof m);
    lam_gguf_str_t s;
    st = lam_gguf_get_str(g, "general.architecture", &s);
    if (st != LAM_OK || s.len == 0 || s.len >= sizeof m.arch) {
        seterr(err, errlen, "%s: metadata key 'general.architecture' missing or invalid", path);
        st = LAM_ERR_MODEL_CONFIG;
        goto out_close;
    }
    memcpy(m.arch, s.ptr, s.len);
    if (lam_gguf_get_str(g, "general.name", &s) == LAM_OK && s.len > 0) {
        size_t n = s.len < sizeof m.name - 1 ? s.len : sizeof m.name - 1;
        memcpy(m.name, s.ptr, n);
    } else {
        const char *base = strrchr(path, '/');
        snprintf(m.name, sizeof m.name, "%s", base ? base + 1 : path);
    }
    if ((st = gguf_u64(g, m.arch, "block_count", &m.n_layers, true, path, err, errlen)) ||
        (st = gguf_u64(g, m.arch, "embedding_length", &m.d_model, true, path, err, errlen)) ||
        (st = gguf_u64(g, m.arch, "feed_forward_length", &m.d_ff, true, path, err, errlen)) ||
        (st = gguf_u64(g, m.arch, "attention.head_count", &m.n_heads, true, path, err, errlen)))
        goto out_close;
    m.n_kv_heads = m.n_heads; /* absent head_count_kv means no GQA */
    if ((st = gguf_u64(g, m.arch, "attention.head_count_kv", &m.n_kv_heads, false, path, err,
                       errlen)) ||
        (st = gguf_u64(g, m.arch, "vocab_size", &m.vocab, false, path, err, errlen)))
        goto out_close;
    if (m.vocab == 0) {
        lam_gguf_vtype_t et;
        uint64_t n = 0;
        const void *data;
        if (lam_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data) != LAM_OK) {
            seterr(err, errlen, "%s: neither '%s.vocab_size' nor 'tokenizer.ggml.tokens' present",
                   path, m.arch);
            st = LAM_ERR_MODEL_CONFIG;
            goto out_close;
        }
        m.vocab = (int64_t)n;
    }
    if (m.n_heads > 0)
        m.head_dim = m.d_model / m.n_heads;
    if ((st = gguf_u64(g, m.arch, "attention.key_length", &m.head_dim, false, path, err, errlen)))
        goto out_close;
    m.tied_embeddings = lam_gguf_find_tensor(g, "output.weight") == NULL;
    m.qkv_bias = lam_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    if ((st = lam_est_model_validate(&m, err, errlen)) != LAM_OK) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", err ? err : "");
        seterr(err, errlen, "%s: %s", path, tmp);
        goto out_close;
    }
    *out = m;
out_close:
    lam_gguf_close(g);
    return st;
}

/* ---- Hugging Face config.json ---- */

/* Line of the first occurrence of "key" in the file text, for error messages. */
static int json_key_line(const char *text, const char *key, char *line, size_t linelen)
{
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(text, pat);
    if (!p)
        return 0;
    int n = 1;
    const char *bol = text;
    for (const char *q = text; q < p; q++)
        if (*q == '\n') {
            n++;
            bol = q + 1;
        }
    const char *eol = strchr(bol, '\n');
    size_t len = eol ? (size_t)(eol - bol) : strlen(bol);
    while (len && (*bol == ' ' || *bol == '\t')) {
        bol++;
        len--;
    }
    if (len >= linelen)
        len = linelen - 1;
    memcpy(line, bol, len);
    line[len] = '\0';
    return n;
}

static lam_status_t hf_int(json_t *root, const char *text, const char *path, const char *key,
                           int64_t *out, bool required, char *err, size_t errlen)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (!required)
            return LAM_OK;
        seterr(err, errlen, "%s: required key '%s' missing", path, key);
        return LAM_ERR_MODEL_CONFIG;
    }
    char line[160] = "";
    if (!json_is_integer(v) || json_integer_value(v) <= 0) {
        int ln = json_key_line(text, key, line, sizeof line);
        seterr(err, errlen, "%s:%d: '%s' must be a positive integer: '%s'", path, ln, key, line);
        return LAM_ERR_MODEL_CONFIG;
    }
    *out = json_integer_value(v);
    return LAM_OK;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
        if (cap - n - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = n;
    }
    return buf;
}

lam_status_t lam_est_model_from_hf_config(const char *path, lam_est_model_t *out, char *err,
                                          size_t errlen)
{
    char *text = read_file(path, NULL);
    if (!text) {
        seterr(err, errlen, "%s: cannot read file", path);
        return LAM_ERR_IO;
    }
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    lam_status_t st = LAM_OK;
    if (!root) {
        seterr(err, errlen, "%s:%d:%d: JSON error: %s", path, je.line, je.column, je.text);
        free(text);
        return LAM_ERR_MODEL_CONFIG;
    }
    lam_est_model_t m;
    memset(&m, 0, sizeof m);
    if (!json_is_object(root)) {
        seterr(err, errlen, "%s:1: top level must be a JSON object", path);
        st = LAM_ERR_MODEL_CONFIG;
        goto out;
    }
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    snprintf(m.arch, sizeof m.arch, "%s", mt ? mt : "llama");
    const char *base = strrchr(path, '/');
    const char *nm = json_string_value(json_object_get(root, "_name_or_path"));
    snprintf(m.name, sizeof m.name, "%s", nm ? nm : (base ? base + 1 : path));
    if ((st = hf_int(root, text, path, "num_hidden_layers", &m.n_layers, true, err, errlen)) ||
        (st = hf_int(root, text, path, "hidden_size", &m.d_model, true, err, errlen)) ||
        (st = hf_int(root, text, path, "intermediate_size", &m.d_ff, true, err, errlen)) ||
        (st = hf_int(root, text, path, "num_attention_heads", &m.n_heads, true, err, errlen)) ||
        (st = hf_int(root, text, path, "vocab_size", &m.vocab, true, err, errlen)))
        goto out;
    m.n_kv_heads = m.n_heads;
    m.head_dim = m.d_model / m.n_heads;
    if ((st = hf_int(root, text, path, "num_key_value_heads", &m.n_kv_heads, false, err,
                     errlen)) ||
        (st = hf_int(root, text, path, "head_dim", &m.head_dim, false, err, errlen)))
        goto out;
    m.tied_embeddings = json_is_true(json_object_get(root, "tie_word_embeddings"));
    m.qkv_bias = !strcmp(m.arch, "qwen2") ||
                 json_is_true(json_object_get(root, "attention_bias"));
    if ((st = lam_est_model_validate(&m, err, errlen)) != LAM_OK) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", err ? err : "");
        seterr(err, errlen, "%s: %s", path, tmp);
        goto out;
    }
    *out = m;
out:
    json_decref(root);
    free(text);
    return st;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

lam_status_t lam_est_model_load(const char *spec, lam_est_model_t *out, char *err, size_t errlen)
{
    const lam_est_model_t *p = lam_est_model_preset(spec);
    if (p) {
        *out = *p;
        return LAM_OK;
    }
    if (ends_with(spec, ".gguf"))
        return lam_est_model_from_gguf(spec, out, err, errlen);
    if (ends_with(spec, ".json"))
        return lam_est_model_from_hf_config(spec, out, err, errlen);
    char list[512] = "";
    for (int i = 0; i < lam_est_model_preset_count(); i++) {
        strncat(list, presets[i].name, sizeof list - strlen(list) - 3);
        if (i + 1 < lam_est_model_preset_count())
            strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    seterr(err, errlen, "unknown model '%s': not a preset (%s), .gguf or config .json", spec,
           list);
    return LAM_ERR_NOT_FOUND;
}
