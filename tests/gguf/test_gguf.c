/* GGUF reader: dequantisation against ggml's own (tests/fixtures/
 * quant_ref.gguf), accessors, and a table of corrupt files, each of which
 * must give one clear error and no crash, also through the CLI. */
#include "common/gguf.h"
#include "common/log.h"
#include "common/model.h"
#include "tests/util/fixtures.h"
#include "tests/util/gguf_build.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_dequant_matches_ggml(void)
{
    char path[4096], err[512];
    lam_gguf_t *g = NULL;
    fx_source_path("tests/fixtures/quant_ref.gguf", path, sizeof path);
    CU_ASSERT_FATAL(lam_gguf_open(path, &g, err, sizeof err) == LAM_OK);
    int checked = 0;
    for (int64_t i = 0; i < lam_gguf_n_tensors(g); i++) {
        const lam_gguf_tensor_t *t = lam_gguf_tensor_at(g, i);
        if (strstr(t->name, ".expected"))
            continue;
        char en[128];
        snprintf(en, sizeof en, "%s.expected", t->name);
        const lam_gguf_tensor_t *x = lam_gguf_find_tensor(g, en);
        CU_ASSERT_FATAL(x != NULL && x->type == LAM_GGML_F32 && x->n_elem == t->n_elem);
        float *y = malloc(t->n_elem * sizeof *y);
        CU_ASSERT_FATAL(lam_dequant(t->type, t->data, y, t->n_elem) == LAM_OK);
        int bad = 0;
        for (int64_t k = 0; k < t->n_elem; k++) {
            float e;
            memcpy(&e, (const char *)x->data + 4 * k, 4);
            bad += !(y[k] == e) && !(isnan(y[k]) && isnan(e));
        }
        if (bad)
            printf("\n  %s: %d of %lld values differ", t->name, bad, (long long)t->n_elem);
        CU_ASSERT(bad == 0);
        free(y);
        checked++;
    }
    printf("\n  %d tensor types bit-identical to ggml's dequantisation\n", checked);
    CU_ASSERT(checked >= 8);
    lam_gguf_close(g);
}

/* A small valid file: 3 metadata keys, tensors "a" (F32 [4,2]) and "b" (Q8_0 [32]). */
typedef struct layout {
    size_t off_version, off_n_tensors, off_n_kv, off_str_len, off_arr_n, off_info_a, off_ne_b,
        off_type_b, off_offset_b, off_data;
} layout_t;

static void build_valid(gb_t *b, layout_t *L)
{
    memset(b, 0, sizeof *b);
    gb_bytes(b, "GGUF", 4);
    L->off_version = b->len;
    gb_u32(b, 3);
    L->off_n_tensors = b->len;
    gb_u64(b, 2);
    L->off_n_kv = b->len;
    gb_u64(b, 3);
    gb_str(b, "general.name");
    gb_u32(b, LAM_GGUF_STRING);
    L->off_str_len = b->len;
    gb_str(b, "tiny");
    gb_kv_u32(b, "tiny.count", 7);
    gb_str(b, "tiny.list");
    gb_u32(b, LAM_GGUF_ARRAY);
    gb_u32(b, LAM_GGUF_INT32);
    L->off_arr_n = b->len;
    gb_u64(b, 3);
    for (int32_t i = 0; i < 3; i++)
        gb_bytes(b, &i, 4);
    L->off_info_a = b->len;
    gb_tensor_info(b, "a", 2, (int64_t[]){4, 2}, LAM_GGML_F32, 0);
    gb_str(b, "b");
    gb_u32(b, 1);
    L->off_ne_b = b->len;
    gb_u64(b, 32);
    L->off_type_b = b->len;
    gb_u32(b, LAM_GGML_Q8_0);
    L->off_offset_b = b->len;
    gb_u64(b, 32);
    gb_pad(b, 32);
    L->off_data = b->len;
    for (int i = 0; i < 8; i++)
        gb_f32(b, (float)i);
    gb_pad(b, 32);
    uint16_t d = 0x3c00; /* 1.0 */
    gb_bytes(b, &d, 2);
    for (int i = 0; i < 32; i++)
        gb_u8(b, (uint8_t)(i - 16));
}

static lam_status_t open_bytes(const gb_t *b, const char *tag, char *err, size_t errlen)
{
    const char *path = gb_write_tmp(b, tag);
    CU_ASSERT_FATAL(path != NULL);
    lam_gguf_t *g = NULL;
    lam_status_t st = lam_gguf_open(path, &g, err, errlen);
    lam_gguf_close(g);
    unlink(path);
    return st;
}

static void test_valid_file_and_accessors(void)
{
    gb_t b;
    layout_t L;
    build_valid(&b, &L);
    const char *path = gb_write_tmp(&b, "valid");
    lam_gguf_t *g = NULL;
    char err[256];
    CU_ASSERT_FATAL(lam_gguf_open(path, &g, err, sizeof err) == LAM_OK);
    CU_ASSERT(lam_gguf_version(g) == 3);
    CU_ASSERT(lam_gguf_n_kv(g) == 3 && lam_gguf_n_tensors(g) == 2);
    lam_gguf_str_t s;
    CU_ASSERT(lam_gguf_get_str(g, "general.name", &s) == LAM_OK && s.len == 4 && !memcmp(s.ptr, "tiny", 4));
    uint32_t u;
    uint64_t u64;
    int64_t i64;
    float f;
    CU_ASSERT(lam_gguf_get_u32(g, "tiny.count", &u) == LAM_OK && u == 7);
    CU_ASSERT(lam_gguf_get_u64(g, "tiny.count", &u64) == LAM_OK && u64 == 7);
    CU_ASSERT(lam_gguf_get_i64(g, "tiny.count", &i64) == LAM_OK && i64 == 7);
    CU_ASSERT(lam_gguf_get_u32(g, "general.name", &u) == LAM_ERR_GGUF_BAD_TYPE);
    CU_ASSERT(lam_gguf_get_f32(g, "tiny.count", &f) == LAM_ERR_GGUF_BAD_TYPE);
    CU_ASSERT(lam_gguf_get_u32(g, "missing", &u) == LAM_ERR_NOT_FOUND);
    lam_gguf_vtype_t et;
    uint64_t n;
    const void *data;
    CU_ASSERT(lam_gguf_get_arr(g, "tiny.list", &et, &n, &data) == LAM_OK && et == LAM_GGUF_INT32 && n == 3);
    CU_ASSERT(lam_gguf_get_arr_str(g, "tiny.list", 0, &s) == LAM_ERR_GGUF_BAD_TYPE);
    const lam_gguf_tensor_t *a = lam_gguf_find_tensor(g, "a"), *bt = lam_gguf_find_tensor(g, "b");
    CU_ASSERT_FATAL(a && bt);
    CU_ASSERT(a->ne[0] == 4 && a->ne[1] == 2 && a->n_elem == 8 && a->nbytes == 32);
    CU_ASSERT(((const float *)a->data)[5] == 5.0f);
    float y[32];
    CU_ASSERT(bt->nbytes == 34 && lam_dequant(bt->type, bt->data, y, 32) == LAM_OK);
    CU_ASSERT(y[0] == -16.0f && y[31] == 15.0f);
    CU_ASSERT(lam_gguf_find_tensor(g, "c") == NULL);
    lam_gguf_close(g);
    unlink(path);
    gb_free(&b);
}

/* Every proper prefix of a valid file is truncated somewhere: all must fail. */
static void test_every_truncation_fails(void)
{
    gb_t b;
    layout_t L;
    build_valid(&b, &L);
    size_t full = b.len;
    int failures = 0;
    lam_log_set_level(LAM_LOG_QUIET);
    for (size_t n = 0; n < full; n++) {
        b.len = n;
        char err[256];
        failures += open_bytes(&b, "trunc", err, sizeof err) != LAM_OK;
    }
    lam_log_set_level(LAM_LOG_INFO);
    CU_ASSERT(failures == (int)full);
    gb_free(&b);
}

typedef struct corrupt_case {
    const char *name;
    lam_status_t expect;
    void (*apply)(gb_t *b, const layout_t *L);
} corrupt_case_t;

static void put32(gb_t *b, size_t off, uint32_t v) { memcpy(b->buf + off, &v, 4); }
static void put64(gb_t *b, size_t off, uint64_t v) { memcpy(b->buf + off, &v, 8); }

static void c_magic(gb_t *b, const layout_t *L) { b->buf[0] = 'X'; }
static void c_version1(gb_t *b, const layout_t *L) { put32(b, L->off_version, 1); }
static void c_version_be(gb_t *b, const layout_t *L) { put32(b, L->off_version, 0x03000000u); }
static void c_truncated_data(gb_t *b, const layout_t *L) { b->len -= 10; }
static void c_offset_past_end(gb_t *b, const layout_t *L) { put64(b, L->off_offset_b, 1u << 20); }
static void c_offset_unaligned(gb_t *b, const layout_t *L) { put64(b, L->off_offset_b, 33); }
static void c_absurd_dim(gb_t *b, const layout_t *L) { put64(b, L->off_ne_b, 1ull << 62); }
static void c_zero_dim(gb_t *b, const layout_t *L) { put64(b, L->off_ne_b, 0); }
static void c_bad_block(gb_t *b, const layout_t *L) { put64(b, L->off_ne_b, 33); }
static void c_unknown_type(gb_t *b, const layout_t *L) { put32(b, L->off_type_b, 99); }
static void c_str_too_long(gb_t *b, const layout_t *L) { put64(b, L->off_str_len, b->len * 4); }
static void c_str_huge(gb_t *b, const layout_t *L) { put64(b, L->off_str_len, UINT64_MAX - 4); }
static void c_array_huge(gb_t *b, const layout_t *L) { put64(b, L->off_arr_n, 1ull << 61); }
static void c_too_many_tensors(gb_t *b, const layout_t *L) { put64(b, L->off_n_tensors, 1ull << 40); }
static void c_too_many_kv(gb_t *b, const layout_t *L) { put64(b, L->off_n_kv, UINT64_MAX); }
static void c_rank5(gb_t *b, const layout_t *L) { put32(b, L->off_ne_b - 4, 5); }
static void c_empty(gb_t *b, const layout_t *L) { b->len = 0; }
static void c_dup_tensor(gb_t *b, const layout_t *L) { b->buf[L->off_ne_b - 5] = 'a'; }
/* tensor "b" renamed "\n" and given an unknown type: the error quotes the name */
static void c_ctl_name(gb_t *b, const layout_t *L)
{
    b->buf[L->off_ne_b - 5] = '\n';
    put32(b, L->off_type_b, 99);
}

static const corrupt_case_t g_cases[] = {
    {"bad magic", LAM_ERR_GGUF_MAGIC, c_magic},
    {"empty file", LAM_ERR_GGUF_MAGIC, c_empty},
    {"version 1", LAM_ERR_GGUF_VERSION, c_version1},
    {"big-endian version", LAM_ERR_GGUF_VERSION, c_version_be},
    {"truncated tensor data", LAM_ERR_GGUF_BAD_OFFSET, c_truncated_data},
    {"offset past end of file", LAM_ERR_GGUF_BAD_OFFSET, c_offset_past_end},
    {"unaligned offset", LAM_ERR_GGUF_BAD_OFFSET, c_offset_unaligned},
    {"absurd dimension", LAM_ERR_GGUF_BAD_SHAPE, c_absurd_dim},
    {"zero dimension", LAM_ERR_GGUF_BAD_SHAPE, c_zero_dim},
    {"row not a block multiple", LAM_ERR_GGUF_BAD_SHAPE, c_bad_block},
    {"rank 5", LAM_ERR_GGUF_BAD_SHAPE, c_rank5},
    {"unknown tensor type", LAM_ERR_GGUF_BAD_TYPE, c_unknown_type},
    {"string longer than file", LAM_ERR_GGUF_TRUNCATED, c_str_too_long},
    {"string length near 2^64", LAM_ERR_GGUF_TRUNCATED, c_str_huge},
    {"array count 2^61", LAM_ERR_GGUF_TRUNCATED, c_array_huge},
    {"tensor count 2^40", LAM_ERR_GGUF_TRUNCATED, c_too_many_tensors},
    {"kv count 2^64-1", LAM_ERR_GGUF_TRUNCATED, c_too_many_kv},
    {"duplicate tensor name", LAM_ERR_GGUF_BAD_KEY, c_dup_tensor},
    {"newline in a tensor name", LAM_ERR_GGUF_BAD_TYPE, c_ctl_name},
};
#define N_CASES (sizeof g_cases / sizeof g_cases[0])

static void test_corrupt_table(void)
{
    for (size_t i = 0; i < N_CASES; i++) {
        gb_t b;
        layout_t L;
        build_valid(&b, &L);
        g_cases[i].apply(&b, &L);
        char err[512] = "";
        lam_log_set_level(LAM_LOG_QUIET);
        lam_status_t st = open_bytes(&b, "corrupt", err, sizeof err);
        lam_log_set_level(LAM_LOG_INFO);
        printf("\n  %-26s -> %s", g_cases[i].name, err);
        CU_ASSERT(st == g_cases[i].expect);
        CU_ASSERT(strlen(err) > 0 && !strchr(err, '\n'));
        if (g_cases[i].apply == c_ctl_name)
            CU_ASSERT(strstr(err, "tensor '\\x0a'") != NULL);
        gb_free(&b);
    }
    printf("\n");
}

/* The program exits non-zero with exactly one error line for each case. */
static void test_cli_one_error_line(void)
{
    for (size_t i = 0; i < N_CASES; i++) {
        gb_t b;
        layout_t L;
        build_valid(&b, &L);
        g_cases[i].apply(&b, &L);
        char path[300], cmd[1024], log[320];
        snprintf(path, sizeof path, "%s", gb_write_tmp(&b, "cli"));
        snprintf(log, sizeof log, "%s.log", path);
        snprintf(cmd, sizeof cmd, "'%s' --local-attention --model '%s' --prompt hi >/dev/null 2>'%s'",
                 LAM_COMPUTE_NODE_BIN, path, log);
        int rc = system(cmd);
        CU_ASSERT(WIFEXITED(rc) && WEXITSTATUS(rc) != 0 && WEXITSTATUS(rc) < 128);
        FILE *f = fopen(log, "r");
        int lines = 0, errors = 0;
        char line[1024];
        while (f && fgets(line, sizeof line, f)) {
            lines++;
            errors += strstr(line, "error") != NULL;
        }
        if (f)
            fclose(f);
        if (lines != 1 || errors != 1)
            printf("\n  %s: %d lines on stderr", g_cases[i].name, lines);
        CU_ASSERT(lines == 1 && errors == 1);
        unlink(path);
        unlink(log);
        gb_free(&b);
    }
}

/* Structurally valid files that are not loadable models. */
static void write_model_file(gb_t *b, const char *arch, uint32_t heads, uint32_t kv_heads, int64_t emb_rows,
                             bool with_blocks)
{
    memset(b, 0, sizeof *b);
    gb_bytes(b, "GGUF", 4);
    gb_u32(b, 3);
    gb_u64(b, 1);
    gb_u64(b, with_blocks ? 6 : 5);
    gb_kv_str(b, "general.architecture", arch);
    char k[64];
    if (with_blocks) {
        snprintf(k, sizeof k, "%s.block_count", arch);
        gb_kv_u32(b, k, 1);
    }
    snprintf(k, sizeof k, "%s.embedding_length", arch);
    gb_kv_u32(b, k, 64);
    snprintf(k, sizeof k, "%s.feed_forward_length", arch);
    gb_kv_u32(b, k, 128);
    snprintf(k, sizeof k, "%s.attention.head_count", arch);
    gb_kv_u32(b, k, heads);
    snprintf(k, sizeof k, "%s.attention.head_count_kv", arch);
    gb_kv_u32(b, k, kv_heads);
    gb_tensor_info(b, "token_embd.weight", 2, (int64_t[]){64, emb_rows}, LAM_GGML_F32, 0);
    gb_pad(b, 32);
    for (int64_t i = 0; i < 64 * emb_rows; i++)
        gb_f32(b, 0.01f * (float)(i % 7));
}

static void test_bad_model_configs(void)
{
    struct { const char *name, *arch; uint32_t heads, kv; bool blocks; lam_status_t expect; } cases[] = {
        {"valid config", "llama", 4, 2, true, LAM_OK},
        {"unsupported arch", "mamba", 4, 2, true, LAM_ERR_UNSUPPORTED},
        {"missing block_count", "llama", 4, 2, false, LAM_ERR_MODEL_CONFIG},
        {"heads not multiple of kv", "llama", 4, 3, true, LAM_ERR_MODEL_CONFIG},
        {"zero heads", "llama", 0, 0, true, LAM_ERR_MODEL_CONFIG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gb_t b;
        write_model_file(&b, cases[i].arch, cases[i].heads, cases[i].kv, 10, cases[i].blocks);
        const char *path = gb_write_tmp(&b, "cfg");
        lam_gguf_t *g = NULL;
        CU_ASSERT_FATAL(lam_gguf_open(path, &g, NULL, 0) == LAM_OK);
        lam_model_config_t cfg;
        lam_log_set_level(LAM_LOG_QUIET);
        lam_status_t st = lam_model_config_from_gguf(g, &cfg);
        /* a config that parses still lacks the layer tensors: loading must fail cleanly */
        lam_model_t *m = NULL;
        lam_status_t lst = lam_model_load(g, &m);
        lam_log_set_level(LAM_LOG_INFO);
        CU_ASSERT(st == cases[i].expect);
        if (st == LAM_OK) {
            CU_ASSERT(cfg.n_layers == 1 && cfg.dim == 64 && cfg.head_dim == 16 && cfg.vocab == 10);
            CU_ASSERT(cfg.tied_embeddings);
        }
        CU_ASSERT(lst != LAM_OK && m == NULL);
        lam_gguf_close(g);
        unlink(path);
        gb_free(&b);
    }
}

/* A valid config whose Q8_0 embedding is kept as blocks and whose layers
 * are missing: the blocks-only load (the CPU compute node's) fails with the
 * missing tensor's error and frees what it kept (ASan's leak check). */
static void test_blocks_only_incomplete(void)
{
    gb_t b;
    memset(&b, 0, sizeof b);
    gb_bytes(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 1);
    gb_u64(&b, 6);
    gb_kv_str(&b, "general.architecture", "llama");
    gb_kv_u32(&b, "llama.block_count", 1);
    gb_kv_u32(&b, "llama.embedding_length", 64);
    gb_kv_u32(&b, "llama.feed_forward_length", 128);
    gb_kv_u32(&b, "llama.attention.head_count", 4);
    gb_kv_u32(&b, "llama.attention.head_count_kv", 2);
    gb_tensor_info(&b, "token_embd.weight", 2, (int64_t[]){64, 10}, LAM_GGML_Q8_0, 0);
    gb_pad(&b, 32);
    for (int blk = 0; blk < 10 * 64 / 32; blk++) {
        gb_u8(&b, 0x00); /* d = fp16 0.5 */
        gb_u8(&b, 0x38);
        for (int j = 0; j < 32; j++)
            gb_u8(&b, (uint8_t)(j - 16));
    }
    const char *path = gb_write_tmp(&b, "blk");
    lam_gguf_t *g = NULL;
    CU_ASSERT_FATAL(lam_gguf_open(path, &g, NULL, 0) == LAM_OK);
    lam_model_load_opts_t lo = {.blocks_only = true};
    lam_model_t *m = NULL;
    lam_log_set_level(LAM_LOG_QUIET);
    lam_status_t st = lam_model_load_opts(g, &lo, &m);
    lam_log_set_level(LAM_LOG_INFO);
    CU_ASSERT(st == LAM_ERR_MODEL_CONFIG && m == NULL);
    lam_gguf_close(g);
    unlink(path);
    gb_free(&b);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("gguf", NULL, NULL);
    CU_add_test(s, "dequant_matches_ggml", test_dequant_matches_ggml);
    CU_add_test(s, "valid_file_and_accessors", test_valid_file_and_accessors);
    CU_add_test(s, "every_truncation_fails", test_every_truncation_fails);
    CU_add_test(s, "corrupt_table", test_corrupt_table);
    CU_add_test(s, "cli_one_error_line", test_cli_one_error_line);
    CU_add_test(s, "bad_model_configs", test_bad_model_configs);
    CU_add_test(s, "blocks_only_incomplete", test_blocks_only_incomplete);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
