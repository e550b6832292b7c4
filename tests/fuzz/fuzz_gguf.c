/* libFuzzer target for model files: the GGUF reader (common/gguf.c), the
 * model configuration and weight loader (common/model.c, dequant.c) and the
 * tokenizer built from a file's metadata (common/tok*.c). Model files come
 * from wherever an operator downloads them, so all of this is an untrusted-
 * input boundary. Built and run by scripts/fuzz.sh with clang, ASan and
 * UBSan; not part of the CMake build.
 *
 * Each input is opened as a file (through a memfd). Invariants, any
 * violation abort()s:
 *   - lam_gguf_open gives LAM_OK, or an error status with a one-line message;
 *   - what opens is readable through every accessor: each key with the
 *     getter of its type (and fails with the others), each string of each
 *     string array; each tensor lies inside the file, has as many bytes as
 *     its type and shape say, and dequantises when its type is supported;
 *     the same bytes give the same fingerprint twice;
 *   - the model configuration and both loads (blocks kept, and f32) give
 *     LAM_OK or an error, and a loaded model has the configuration's shapes;
 *   - a tokenizer that builds encodes a few fixed texts and the input's own
 *     first bytes into ids inside its vocabulary, decodes them, gives a
 *     piece for every id, and renders a chat when it knows the format.
 *
 * LAM_FUZZ_SEEDS=dir ./fuzz_gguf writes small valid model files into dir
 * (a one-layer LLaMA with a byte-level BPE tokenizer and mixed tensor types,
 * an SPM tokenizer, K-quant tensors) and exits: the fuzzer's corpus. */
#include "common/gguf.h"
#include "common/log.h"
#include "common/model.h"
#include "common/tokenizer.h"
#include "tests/fuzz/fuzz.h"
#include "tests/util/gguf_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Tensors up to this many elements are dequantised (the input is at most
 * a few tens of KiB, so only the types with the fewest bits get near). */
#define FUZZ_DEQUANT_MAX (1 << 20)

/* ---- checks ---------------------------------------------------------------- */

static void check_error_line(const char *err)
{
    size_t n = strlen(err);
    CHECK(n > 0);
    CHECK(!memchr(err, '\n', n));
}

static void check_keys(const lam_gguf_t *g)
{
    int64_t n = lam_gguf_n_kv(g);
    CHECK(n >= 0);
    for (int64_t i = 0; i < n; i++) {
        lam_gguf_str_t k = lam_gguf_key_at(g, i);
        CHECK(k.ptr && k.len > 0 && k.len < 65536);
        char key[65536];
        memcpy(key, k.ptr, k.len);
        key[k.len] = '\0';
        if (strlen(key) != k.len) /* a NUL inside: not reachable by a C string */
            continue;
        CHECK(lam_gguf_find_key(g, key) == i);
        lam_gguf_vtype_t t = lam_gguf_kv_type(g, i);
        uint64_t u;
        int64_t s;
        float f;
        bool b;
        lam_gguf_str_t str;
        lam_gguf_vtype_t et;
        uint64_t cnt;
        const void *arr;
        /* getters of another kind fail; the own kind's may still refuse a
         * value out of its range (a negative int as u64) */
        lam_status_t su = lam_gguf_get_u64(g, key, &u), ss = lam_gguf_get_i64(g, key, &s);
        lam_status_t sf = lam_gguf_get_f32(g, key, &f), sb = lam_gguf_get_bool(g, key, &b);
        lam_status_t sstr = lam_gguf_get_str(g, key, &str), sa = lam_gguf_get_arr(g, key, &et, &cnt, &arr);
        bool is_int = t <= LAM_GGUF_INT32 || t == LAM_GGUF_UINT64 || t == LAM_GGUF_INT64;
        bool is_float = t == LAM_GGUF_FLOAT32 || t == LAM_GGUF_FLOAT64;
        CHECK(is_int || (su != LAM_OK && ss != LAM_OK));
        CHECK(is_int || su == ss); /* both "wrong type" */
        CHECK(!is_int || su == LAM_OK || ss == LAM_OK);
        CHECK((sf == LAM_OK) == is_float);
        CHECK((sb == LAM_OK) == (t == LAM_GGUF_BOOL));
        CHECK((sstr == LAM_OK) == (t == LAM_GGUF_STRING));
        CHECK((sa == LAM_OK) == (t == LAM_GGUF_ARRAY));
        if (sstr == LAM_OK && str.len)
            CHECK(str.ptr != NULL);
        if (sa == LAM_OK && et == LAM_GGUF_STRING) {
            uint64_t lim = cnt < 4096 ? cnt : 4096;
            for (uint64_t j = 0; j < lim; j++) {
                CHECK(lam_gguf_get_arr_str(g, key, j, &str) == LAM_OK);
                CHECK(!str.len || str.ptr);
                volatile char c = str.len ? str.ptr[str.len - 1] : 0; /* inside the mapping (ASan) */
                (void)c;
            }
            CHECK(lam_gguf_get_arr_str(g, key, cnt, &str) != LAM_OK);
        } else if (sa == LAM_OK && cnt) {
            CHECK(arr != NULL);
        }
    }
}

static void check_tensors(const lam_gguf_t *g, const uint8_t *base, size_t size)
{
    int64_t n = lam_gguf_n_tensors(g);
    CHECK(n >= 0);
    for (int64_t i = 0; i < n; i++) {
        const lam_gguf_tensor_t *t = lam_gguf_tensor_at(g, i);
        CHECK(t && t->name);
        CHECK(lam_gguf_find_tensor(g, t->name) == t);
        CHECK(t->n_dims >= 1 && t->n_dims <= LAM_GGUF_MAX_DIMS);
        int64_t ne = 1;
        for (int d = 0; d < LAM_GGUF_MAX_DIMS; d++) {
            CHECK(t->ne[d] >= 1);
            CHECK(ne <= INT64_MAX / t->ne[d]);
            ne *= t->ne[d];
        }
        CHECK(ne == t->n_elem);
        int64_t be, bb;
        CHECK(lam_ggml_type_size(t->type, &be, &bb));
        CHECK(t->ne[0] % be == 0);
        CHECK((uint64_t)(t->n_elem / be) * (uint64_t)bb == t->nbytes);
        /* the data lies inside the file's bytes */
        const uint8_t *d = t->data;
        CHECK(d >= base && (size_t)(d - base) <= size && t->nbytes <= size - (size_t)(d - base));
        if (lam_dequant_supported(t->type) && t->n_elem <= FUZZ_DEQUANT_MAX) {
            float *out = malloc((size_t)t->n_elem * sizeof *out);
            CHECK(out);
            CHECK(lam_dequant(t->type, t->data, out, t->n_elem) == LAM_OK);
            free(out);
        }
    }
}

static void check_model(const lam_gguf_t *g)
{
    lam_model_config_t cfg;
    lam_status_t st = lam_model_config_from_gguf(g, &cfg);
    CHECK(st <= LAM_OK);
    if (st != LAM_OK)
        return;
    CHECK(cfg.n_layers >= 1 && cfg.dim >= 1 && cfg.n_heads >= 1 && cfg.n_kv_heads >= 1 && cfg.vocab >= 1);
    CHECK(cfg.n_heads % cfg.n_kv_heads == 0);
    for (int blocks = 0; blocks < 2; blocks++) {
        lam_model_load_opts_t lo = {.blocks_only = blocks};
        lam_model_t *m = NULL;
        st = lam_model_load_opts(g, &lo, &m);
        CHECK(st <= LAM_OK && (st == LAM_OK) == (m != NULL));
        if (!m)
            continue;
        CHECK(m->cfg.n_layers == cfg.n_layers && m->cfg.dim == cfg.dim && m->cfg.vocab == cfg.vocab);
        CHECK(m->layers && m->out_norm);
        CHECK(m->tok_embd || m->tok_embd_blk);
        for (int l = 0; l < m->cfg.n_layers; l++)
            CHECK(m->layers[l].attn_norm && m->layers[l].ffn_norm);
        lam_model_free(m);
    }
}

static void check_ids(const lam_tok_t *tok, const int32_t *ids, size_t n)
{
    int32_t nv = lam_tok_n_vocab(tok);
    for (size_t i = 0; i < n; i++) {
        CHECK(ids[i] >= 0 && ids[i] < nv);
        size_t len = 0;
        CHECK(lam_tok_piece(tok, ids[i], &len) != NULL);
    }
    char *text = NULL;
    size_t len = 0;
    CHECK(lam_tok_decode(tok, ids, n, &text, &len) == LAM_OK);
    CHECK(text && strlen(text) <= len);
    free(text);
}

static void encode_check(const lam_tok_t *tok, const char *text, size_t len, bool special)
{
    int32_t *ids = NULL;
    size_t n = 0;
    lam_status_t st = lam_tok_encode(tok, text, len, special, special, &ids, &n);
    CHECK(st <= LAM_OK);
    if (st == LAM_OK)
        check_ids(tok, ids, n);
    free(ids);
}

static void check_tokenizer(const lam_gguf_t *g, const uint8_t *data, size_t size)
{
    lam_tok_t *tok = NULL;
    lam_status_t st = lam_tok_from_gguf(g, &tok);
    CHECK(st <= LAM_OK && (st == LAM_OK) == (tok != NULL));
    if (!tok)
        return;
    int32_t nv = lam_tok_n_vocab(tok);
    CHECK(nv >= 1);
    int32_t special[] = {lam_tok_bos(tok), lam_tok_eos(tok), lam_tok_eot(tok), lam_tok_unk(tok), lam_tok_pad(tok)};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        CHECK(special[i] == LAM_TOK_NULL || (special[i] >= 0 && special[i] < nv));
    static const char *texts[] = {
        "Hello world", " hello  there\n\n", "caf\xc3\xa9 \xe2\x82\xac 12345 \xf0\x9f\x98\x80",
        "<|im_start|>user\nhi<|im_end|>", "\xff\xfe bad utf-8 \xc3", "",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        for (int sp = 0; sp < 2; sp++)
            encode_check(tok, texts[i], strlen(texts[i]), sp);
    encode_check(tok, (const char *)data, size < 256 ? size : 256, true);
    for (int32_t id = 0; id < nv && id < 1024; id++) {
        size_t len = 0;
        CHECK(lam_tok_piece(tok, id, &len) != NULL);
        (void)lam_tok_is_eog(tok, id);
        (void)lam_tok_type(tok, id);
    }
    CHECK(lam_tok_piece(tok, nv, NULL) == NULL);
    int32_t bad = nv;
    char *text = NULL;
    size_t len = 0;
    CHECK(lam_tok_decode(tok, &bad, 1, &text, &len) != LAM_OK);
    free(text);
    lam_chat_format_t fmt;
    if (lam_tok_chat_format(tok, &fmt)) {
        lam_chat_msg_t msgs[] = {{"user", "What is 2+2?"}, {"assistant", "4"}};
        char *out = NULL;
        CHECK(lam_tok_chat_render(tok, msgs, 2, true, &out) == LAM_OK && out);
        encode_check(tok, out, strlen(out), true);
        free(out);
    }
    lam_tok_free(tok);
}

/* ---- the target -------------------------------------------------------------- */

static int fuzz_fd = -1;

/* The input as a file: a memfd rewritten for each input. */
static const char *as_file(const uint8_t *data, size_t size)
{
    static char path[64];
    if (fuzz_fd < 0) {
        fuzz_fd = memfd_create("fuzz.gguf", MFD_CLOEXEC);
        CHECK(fuzz_fd >= 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fuzz_fd);
    }
    CHECK(ftruncate(fuzz_fd, 0) == 0);
    for (size_t off = 0; off < size;) {
        ssize_t w = pwrite(fuzz_fd, data + off, size - off, (off_t)off);
        CHECK(w > 0);
        off += (size_t)w;
    }
    return path;
}

static lam_gguf_t *open_input(const char *path, uint64_t *fp)
{
    char err[512] = "";
    lam_gguf_t *g = NULL;
    lam_status_t st = lam_gguf_open(path, &g, err, sizeof err);
    CHECK((st == LAM_OK) == (g != NULL));
    if (st != LAM_OK) {
        CHECK(st < 0);
        check_error_line(err);
        return NULL;
    }
    *fp = lam_gguf_fingerprint(g);
    return g;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = as_file(data, size);
    uint64_t fp1 = 0, fp2 = 0;
    lam_gguf_t *g = open_input(path, &fp1);
    if (!g)
        return 0;
    CHECK(lam_gguf_file_size(g) == size);
    lam_gguf_t *g2 = open_input(path, &fp2);
    CHECK(g2 && fp1 == fp2);
    lam_gguf_close(g2);
    /* the mapping starts data_offset + offset before a tensor's data, and
     * holds the input's bytes */
    if (lam_gguf_n_tensors(g) > 0) {
        const lam_gguf_tensor_t *t0 = lam_gguf_tensor_at(g, 0);
        CHECK(lam_gguf_data_offset(g) + t0->offset <= size);
        const uint8_t *base = (const uint8_t *)t0->data - t0->offset - lam_gguf_data_offset(g);
        CHECK(memcmp(base, data, size) == 0);
        check_tensors(g, base, size);
    }
    check_keys(g);
    check_model(g);
    check_tokenizer(g, data, size);
    lam_gguf_close(g);
    return 0;
}

/* ---- seeds ----------------------------------------------------------------- */

static void seed_header(gb_t *b, uint64_t n_tensors, uint64_t n_kv)
{
    memset(b, 0, sizeof *b);
    gb_bytes(b, "GGUF", 4);
    gb_u32(b, 3);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}

typedef struct seed_tensor {
    const char *name;
    int64_t ne0, ne1;
    uint32_t type;
} seed_tensor_t;

/* Tensor infos, then the data: random bytes, except f16 scales that stay
 * small (the first two bytes of each block are set to 0x3c00 = 1.0 for the
 * block types; f32/f16/bf16 data is small values). */
static void seed_tensors(gb_t *b, const seed_tensor_t *t, int n, unsigned seed)
{
    uint64_t off = 0, bytes[64];
    for (int i = 0; i < n; i++) {
        int64_t be, bb;
        CHECK(lam_ggml_type_size(t[i].type, &be, &bb));
        bytes[i] = (uint64_t)(t[i].ne0 * t[i].ne1 / be * bb);
        gb_tensor_info(b, t[i].name, t[i].ne1 > 1 ? 2 : 1, (int64_t[]){t[i].ne0, t[i].ne1}, t[i].type, off);
        off = (off + bytes[i] + 31) / 32 * 32;
    }
    gb_pad(b, 32);
    for (int i = 0; i < n; i++) {
        int64_t be, bb;
        lam_ggml_type_size(t[i].type, &be, &bb);
        for (uint64_t j = 0; j < bytes[i]; j++) {
            uint8_t v = (uint8_t)rand_r(&seed);
            if (t[i].type == LAM_GGML_F32 && j % 4 == 3)
                v = 0x3c; /* about ±0.01 */
            else if ((t[i].type == LAM_GGML_F16 || t[i].type == LAM_GGML_BF16) && j % 2 == 1)
                v = t[i].type == LAM_GGML_F16 ? 0x20 : 0x3c;
            else if (be > 1 && j % (uint64_t)bb < 2)
                v = j % (uint64_t)bb == 0 ? 0x00 : 0x20; /* d = f16 ~0.0078 */
            gb_u8(b, v);
        }
        gb_pad(b, 32);
    }
}

static void write_seed(const char *dir, const char *name, gb_t *b)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(b->buf, 1, b->len, f) == b->len && fclose(f) == 0);
    gb_free(b);
}

/* A one-layer LLaMA (dim 32, 2 heads, 1 KV head, FFN 64) with a byte-level
 * BPE vocabulary and ChatML, tied embeddings, one tensor type per matrix. */
static void seed_llama(const char *dir)
{
    static const char *tokens[] = {
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "h", "e", "l", "o", "w", "r", "d", "\xc4\xa0", "a", "t",
        "!", "1", "2", "he", "ll", "hell", "hello", "\xc4\xa0w", "or", "\xc4\xa0wor", "\xc4\xa0word",
    };
    static const char *merges[] = {"h e", "l l", "he ll", "hell o", "\xc4\xa0 w", "o r", "\xc4\xa0w or",
                                   "\xc4\xa0wor d"};
    const int nv = (int)(sizeof tokens / sizeof tokens[0]), nm = (int)(sizeof merges / sizeof merges[0]);
    const seed_tensor_t t[] = {
        {"token_embd.weight", 32, nv, LAM_GGML_Q8_0},     {"output_norm.weight", 32, 1, LAM_GGML_F32},
        {"blk.0.attn_norm.weight", 32, 1, LAM_GGML_F32},  {"blk.0.attn_q.weight", 32, 32, LAM_GGML_Q4_1},
        {"blk.0.attn_k.weight", 32, 16, LAM_GGML_Q8_0},   {"blk.0.attn_v.weight", 32, 16, LAM_GGML_F16},
        {"blk.0.attn_output.weight", 32, 32, LAM_GGML_Q4_0}, {"blk.0.ffn_norm.weight", 32, 1, LAM_GGML_F32},
        {"blk.0.ffn_gate.weight", 32, 64, LAM_GGML_Q5_1}, {"blk.0.ffn_up.weight", 32, 64, LAM_GGML_BF16},
        {"blk.0.ffn_down.weight", 64, 32, LAM_GGML_Q5_0},
    };
    const int n_t = (int)(sizeof t / sizeof t[0]);
    gb_t b;
    seed_header(&b, (uint64_t)n_t, 18);
    gb_kv_str(&b, "general.architecture", "llama");
    gb_kv_u32(&b, "llama.block_count", 1);
    gb_kv_u32(&b, "llama.embedding_length", 32);
    gb_kv_u32(&b, "llama.feed_forward_length", 64);
    gb_kv_u32(&b, "llama.attention.head_count", 2);
    gb_kv_u32(&b, "llama.attention.head_count_kv", 1);
    gb_kv_u32(&b, "llama.context_length", 64);
    gb_kv_f32(&b, "llama.rope.freq_base", 10000.0f);
    gb_kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(&b, "tokenizer.ggml.pre", "smollm");
    gb_kv_arr(&b, "tokenizer.ggml.tokens", LAM_GGUF_STRING, (uint64_t)nv);
    for (int i = 0; i < nv; i++)
        gb_str(&b, tokens[i]);
    gb_kv_arr(&b, "tokenizer.ggml.token_type", LAM_GGUF_INT32, (uint64_t)nv);
    for (int i = 0; i < nv; i++)
        gb_u32(&b, i < 3 ? 3 : 1);
    gb_kv_arr(&b, "tokenizer.ggml.merges", LAM_GGUF_STRING, (uint64_t)nm);
    for (int i = 0; i < nm; i++)
        gb_str(&b, merges[i]);
    gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", 1);
    gb_kv_u32(&b, "tokenizer.ggml.eos_token_id", 2);
    gb_kv_u32(&b, "tokenizer.ggml.unknown_token_id", 0);
    gb_kv_str(&b, "tokenizer.chat_template",
              "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
              "{% endif %}");
    seed_tensors(&b, t, n_t, 1);
    write_seed(dir, "llama_bpe.gguf", &b);
}

/* An SPM vocabulary with byte fallback tokens, no tensors. */
static void seed_spm(const char *dir)
{
    static const char *tokens[] = {"<unk>", "<s>", "</s>", "<0x0A>", "<0x41>", "\xe2\x96\x81", "\xe2\x96\x81h",
                                   "e", "l", "o", "h", "\xe2\x96\x81he", "ll", "llo"};
    const int nv = (int)(sizeof tokens / sizeof tokens[0]);
    gb_t b;
    seed_header(&b, 0, 7);
    gb_kv_str(&b, "tokenizer.ggml.model", "llama");
    gb_kv_arr(&b, "tokenizer.ggml.tokens", LAM_GGUF_STRING, (uint64_t)nv);
    for (int i = 0; i < nv; i++)
        gb_str(&b, tokens[i]);
    gb_kv_arr(&b, "tokenizer.ggml.scores", LAM_GGUF_FLOAT32, (uint64_t)nv);
    for (int i = 0; i < nv; i++)
        gb_f32(&b, -(float)i);
    gb_kv_arr(&b, "tokenizer.ggml.token_type", LAM_GGUF_INT32, (uint64_t)nv);
    for (int i = 0; i < nv; i++)
        gb_u32(&b, i == 0 ? 2 : i < 3 ? 3 : i < 5 ? 6 : 1);
    gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", 1);
    gb_kv_u32(&b, "tokenizer.ggml.eos_token_id", 2);
    gb_kv_bool(&b, "tokenizer.ggml.add_bos_token", 1);
    gb_pad(&b, 32);
    write_seed(dir, "spm.gguf", &b);
}

/* K-quant and 8-bit tensors of two 256-element rows, one of every other
 * value type in the metadata. */
static void seed_kquants(const char *dir)
{
    const seed_tensor_t t[] = {
        {"q2k", 256, 2, LAM_GGML_Q2_K}, {"q3k", 256, 2, LAM_GGML_Q3_K}, {"q4k", 256, 2, LAM_GGML_Q4_K},
        {"q5k", 256, 2, LAM_GGML_Q5_K}, {"q6k", 256, 2, LAM_GGML_Q6_K}, {"q8k", 256, 1, LAM_GGML_Q8_K},
        {"q81", 64, 2, LAM_GGML_Q8_1},
    };
    const int n_t = (int)(sizeof t / sizeof t[0]);
    gb_t b;
    seed_header(&b, (uint64_t)n_t, 6);
    gb_str(&b, "v.u8");
    gb_u32(&b, LAM_GGUF_UINT8);
    gb_u8(&b, 7);
    gb_str(&b, "v.i64");
    gb_u32(&b, LAM_GGUF_INT64);
    gb_u64(&b, (uint64_t)-5);
    gb_str(&b, "v.f64");
    gb_u32(&b, LAM_GGUF_FLOAT64);
    double d = 0.25;
    gb_bytes(&b, &d, 8);
    gb_kv_bool(&b, "v.bool", 0);
    gb_kv_arr(&b, "v.arr_u16", LAM_GGUF_UINT16, 3);
    for (int i = 0; i < 3; i++) {
        uint16_t x = (uint16_t)i;
        gb_bytes(&b, &x, 2);
    }
    gb_kv_str(&b, "general.alignment_note", "32");
    seed_tensors(&b, t, n_t, 2);
    write_seed(dir, "kquants.gguf", &b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    lam_log_set_level(LAM_LOG_QUIET);
    const char *dir = getenv("LAM_FUZZ_SEEDS");
    if (!dir)
        return 0;
    seed_llama(dir);
    seed_spm(dir);
    seed_kquants(dir);
    exit(0);
}
