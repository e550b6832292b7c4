/* Reference engine against llama.cpp on SmolLM2-135M-Instruct
 * (tests/fixtures/smollm2_greedy.txt, made by scripts/peer/make-fixtures.sh):
 * teacher-forced top-1 at every prompt position and greedy continuations;
 * batched generation equals one-at-a-time; bad batches are refused. */
#include "common/gguf.h"
#include "common/model.h"
#include "compute_node/engine.h"
#include "compute_node/generate.h"
#include "kernels/cpu/ops.h"
#include "tests/util/fixtures.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lam_gguf_t *g_gguf;
static lam_model_t *g_model;
static fx_prompt_t *g_prompts;     /* llama.cpp on the F32-dequantised weights */
static int g_n_prompts;
static fx_prompt_t *g_prompts_q;   /* llama.cpp on the Q4_1 weights (Q8 activations) */
static int g_n_prompts_q;
static int g_n_loaded, g_n_loaded_q; /* counts to free */
static bool g_skip;
static bool g_quant_act;           /* engine mode for the current test */

static int suite_init(void)
{
    char path[4096], fx[4096];
    if (!fx_model_path(path, sizeof path, &g_skip))
        return g_skip ? 0 : -1;
    /* as the CPU compute node loads it: Q4_1/Q8_0 matrices as blocks only */
    lam_model_load_opts_t lo = {.blocks_only = true};
    if (lam_gguf_open(path, &g_gguf, NULL, 0) != LAM_OK || lam_model_load_opts(g_gguf, &lo, &g_model) != LAM_OK)
        return -1;
    g_n_prompts = fx_load_prompts(fx_source_path("tests/fixtures/smollm2_greedy_f32.txt", fx, sizeof fx), &g_prompts);
    g_n_prompts_q = fx_load_prompts(fx_source_path("tests/fixtures/smollm2_greedy.txt", fx, sizeof fx), &g_prompts_q);
    g_n_loaded = g_n_prompts;
    g_n_loaded_q = g_n_prompts_q;
    if (g_n_prompts < 5 || g_n_prompts_q < 5)
        return -1;
    /* Sanitizer builds run ~10x slower: check memory safety on a subset. */
    const char *quick = getenv("LAMINA_TEST_QUICK");
    if (quick && !strcmp(quick, "1")) {
        printf("\n  LAMINA_TEST_QUICK=1: 2 prompts, 8 greedy tokens each\n");
        g_n_prompts = g_n_prompts_q = 2;
        for (int p = 0; p < 2; p++) {
            g_prompts[p].n_greedy = g_prompts[p].n_greedy < 8 ? g_prompts[p].n_greedy : 8;
            g_prompts_q[p].n_greedy = g_prompts_q[p].n_greedy < 8 ? g_prompts_q[p].n_greedy : 8;
        }
    }
    return 0;
}

static int suite_clean(void)
{
    fx_free_prompts(g_prompts, g_n_loaded);
    fx_free_prompts(g_prompts_q, g_n_loaded_q);
    lam_model_free(g_model);
    lam_gguf_close(g_gguf);
    return 0;
}

#define SKIP_IF_NO_MODEL()                                       \
    do {                                                         \
        if (g_skip) {                                            \
            printf("\n  SKIPPED: no test model\n");              \
            return;                                              \
        }                                                        \
    } while (0)

static lam_engine_t *make_engine(int slots, int ctx, int batch)
{
    lam_engine_opts_t o = {slots, ctx, batch, g_quant_act};
    lam_engine_t *e = NULL;
    CU_ASSERT_FATAL(lam_engine_create(g_model, &o, &e) == LAM_OK);
    return e;
}

/* Returns the fraction of prompt positions where our argmax is llama.cpp's. */
static double teacher_forced(const fx_prompt_t *prompts, int n_prompts)
{
    int vocab = g_model->cfg.vocab, agree = 0, total = 0, small_gap_misses = 0;
    for (int p = 0; p < n_prompts; p++) {
        const fx_prompt_t *fp = &prompts[p];
        CU_ASSERT_FATAL(fp->n_top1 == fp->n_tokens);
        lam_engine_t *e = make_engine(1, fp->n_tokens + 8, fp->n_tokens);
        int32_t *pos = malloc(fp->n_tokens * sizeof *pos), *slot = calloc(fp->n_tokens, sizeof *slot);
        float *logits = malloc((size_t)fp->n_tokens * vocab * sizeof *logits);
        for (int i = 0; i < fp->n_tokens; i++)
            pos[i] = i;
        lam_batch_t b = {fp->n_tokens, fp->tokens, pos, slot, NULL};
        CU_ASSERT_FATAL(lam_engine_forward(e, &b, logits) == LAM_OK);
        int a = 0;
        for (int i = 0; i < fp->n_tokens; i++) {
            const float *row = logits + (size_t)i * vocab;
            int finite = 1;
            for (int k = 0; k < vocab; k++)
                finite &= isfinite(row[k]) != 0;
            CU_ASSERT_FATAL(finite);
            int32_t top = lam_argmax_f32(row, vocab);
            if (top == fp->top1[i]) {
                a++;
            } else if (fp->n_gap == fp->n_tokens && fp->top1_gap[i] < 0.5f) {
                small_gap_misses++;
            }
        }
        printf("\n  %-14s teacher-forced top-1: %d/%d", fp->name, a, fp->n_tokens);
        agree += a;
        total += fp->n_tokens;
        free(pos);
        free(slot);
        free(logits);
        lam_engine_free(e);
    }
    double r = (double)agree / total;
    printf("\n  teacher-forced top-1 agreement with llama.cpp: %d/%d = %.2f%% (%d misses where llama.cpp's margin < 0.5)\n",
           agree, total, 100.0 * r, small_gap_misses);
    return r;
}

/* Greedy continuation of a prompt, one sequence alone. */
static void greedy_one(const fx_prompt_t *fp, int32_t *out, int n_new)
{
    lam_engine_t *e = make_engine(1, fp->n_tokens + n_new + 1, 512);
    lam_gen_seq_t s = {.prompt = fp->tokens, .n_prompt = fp->n_tokens, .max_new = n_new,
                       .sp = {.temperature = 0.0f, .top_p = 1.0f}, .out = out};
    CU_ASSERT_FATAL(lam_generate_batch(e, &s, 1, NULL, NULL) == LAM_OK);
    CU_ASSERT(s.n_out == n_new);
    lam_engine_free(e);
}

/* Returns how many prompts' greedy continuations equal llama.cpp's. */
static int greedy_continuations(const fx_prompt_t *prompts, int n_prompts)
{
    int identical = 0;
    for (int p = 0; p < n_prompts; p++) {
        const fx_prompt_t *fp = &prompts[p];
        CU_ASSERT_FATAL(fp->n_greedy >= (getenv("LAMINA_TEST_QUICK") ? 8 : 32));
        int32_t *out = malloc(fp->n_greedy * sizeof *out);
        greedy_one(fp, out, fp->n_greedy);
        int same = 0;
        while (same < fp->n_greedy && out[same] == fp->greedy[same])
            same++;
        printf("\n  %-14s greedy: first %d/%d tokens identical", fp->name, same, fp->n_greedy);
        identical += same == fp->n_greedy;
        free(out);
    }
    printf("\n  greedy continuations identical to llama.cpp: %d/%d prompts\n", identical, n_prompts);
    return identical;
}

/* The oracle: llama.cpp computing in f32 on the same (dequantised) weights.
 * Acceptance: top-1 agreement >= 98%, greedy identical for >= 4 of 5. */
static void test_f32_teacher_forced(void)
{
    SKIP_IF_NO_MODEL();
    g_quant_act = false;
    CU_ASSERT(teacher_forced(g_prompts, g_n_prompts) >= 0.98);
}

static void test_f32_greedy(void)
{
    SKIP_IF_NO_MODEL();
    g_quant_act = false;
    CU_ASSERT(greedy_continuations(g_prompts, g_n_prompts) * 5 >= g_n_prompts * 4);
}

/* llama.cpp on the Q4_1 file rounds activations to 8 bits before every
 * product; with quant_act the engine does the same. Rounding flips make
 * near-tied tokens differ, so this is a floor, not bit-exactness. */
static void test_q4_teacher_forced(void)
{
    SKIP_IF_NO_MODEL();
    g_quant_act = true;
    CU_ASSERT(teacher_forced(g_prompts_q, g_n_prompts_q) >= 0.95);
    greedy_continuations(g_prompts_q, g_n_prompts_q);
    g_quant_act = false;
}

static void test_batched_equals_single(void)
{
    SKIP_IF_NO_MODEL();
    int n = g_n_prompts, n_new = getenv("LAMINA_TEST_QUICK") ? 6 : 24, ctx = 0;
    for (int p = 0; p < n; p++)
        if (g_prompts[p].n_tokens + n_new > ctx)
            ctx = g_prompts[p].n_tokens + n_new;
    /* a small batch limit forces prompts to be split across forward calls */
    lam_engine_t *e = make_engine(n, ctx, 37);
    lam_gen_seq_t *seqs = calloc(n, sizeof *seqs);
    for (int p = 0; p < n; p++) {
        seqs[p] = (lam_gen_seq_t){.prompt = g_prompts[p].tokens, .n_prompt = g_prompts[p].n_tokens,
                                  .max_new = n_new - (p % 3), .sp = {.temperature = 0.0f, .top_p = 1.0f}};
        seqs[p].out = malloc(n_new * sizeof(int32_t));
    }
    lam_gen_stats_t st;
    CU_ASSERT_FATAL(lam_generate_batch(e, seqs, n, NULL, &st) == LAM_OK);
    for (int p = 0; p < n; p++) {
        int32_t *ref = malloc(n_new * sizeof *ref);
        greedy_one(&g_prompts[p], ref, seqs[p].max_new);
        CU_ASSERT(seqs[p].n_out == seqs[p].max_new);
        CU_ASSERT(memcmp(ref, seqs[p].out, seqs[p].n_out * sizeof *ref) == 0);
        free(ref);
        free(seqs[p].out);
    }
    free(seqs);
    lam_engine_free(e);
}

/* The blocks-only model (the suite's) against the full f32 load: the same
 * logits, bit for bit, with and without llama.cpp's activation rounding;
 * and it holds the matrices in a fraction of the memory. */
static void test_blocks_equal_f32(void)
{
    SKIP_IF_NO_MODEL();
    lam_model_t *full = NULL;
    CU_ASSERT_FATAL(lam_model_load(g_gguf, &full) == LAM_OK);
    CU_ASSERT(g_model->layers[0].wq == NULL && g_model->layers[0].wblk[LAM_W_Q] != NULL);
    CU_ASSERT(full->layers[0].wq != NULL && full->layers[0].wblk[LAM_W_Q] != NULL);
    printf("\n  weights held: %.1f MiB blocks only, %.1f MiB with f32", g_model->weight_bytes / 1048576.0,
           full->weight_bytes / 1048576.0);
    CU_ASSERT(g_model->weight_bytes * 4 < full->weight_bytes);
    const fx_prompt_t *fp = &g_prompts[0];
    int vocab = g_model->cfg.vocab, n = fp->n_tokens;
    int32_t *pos = malloc(n * sizeof *pos), *slot = calloc(n, sizeof *slot);
    float *a = malloc((size_t)n * vocab * sizeof *a), *b = malloc((size_t)n * vocab * sizeof *b);
    for (int i = 0; i < n; i++)
        pos[i] = i;
    for (int q = 0; q < 2; q++) {
        lam_engine_opts_t o = {1, n + 8, n, q == 1};
        lam_engine_t *e1 = NULL, *e2 = NULL;
        CU_ASSERT_FATAL(lam_engine_create(g_model, &o, &e1) == LAM_OK);
        CU_ASSERT_FATAL(lam_engine_create(full, &o, &e2) == LAM_OK);
        lam_batch_t bt = {n, fp->tokens, pos, slot, NULL};
        CU_ASSERT_FATAL(lam_engine_forward(e1, &bt, a) == LAM_OK);
        CU_ASSERT_FATAL(lam_engine_forward(e2, &bt, b) == LAM_OK);
        CU_ASSERT(!memcmp(a, b, (size_t)n * vocab * sizeof *a));
        lam_engine_free(e1);
        lam_engine_free(e2);
    }
    free(pos);
    free(slot);
    free(a);
    free(b);
    lam_model_free(full);
}

static void test_bad_batches(void)
{
    SKIP_IF_NO_MODEL();
    lam_engine_t *e = make_engine(2, 16, 8);
    float *logits = malloc((size_t)8 * g_model->cfg.vocab * sizeof *logits);
    int32_t tok[2] = {1, 2}, pos[2] = {0, 1}, slot[2] = {0, 0};
    lam_batch_t ok = {2, tok, pos, slot, NULL};
    CU_ASSERT(lam_engine_forward(e, &ok, logits) == LAM_OK);
    CU_ASSERT(lam_engine_slot_len(e, 0) == 2);
    struct { int32_t tok, pos, slot; int n; } bad[] = {
        {-1, 2, 0, 1}, {g_model->cfg.vocab, 2, 0, 1}, /* token out of range */
        {5, 2, 2, 1}, {5, 2, -1, 1},                  /* slot out of range */
        {5, 5, 0, 1}, {5, 1, 0, 1}, {5, 1, 1, 1},     /* position gap or rewind */
        {5, 2, 0, 0}, {5, 2, 0, 9},                   /* batch size */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t t[9], p[9], s[9];
        for (int j = 0; j < 9; j++) {
            t[j] = bad[i].tok;
            p[j] = bad[i].pos + j;
            s[j] = bad[i].slot;
        }
        lam_batch_t b = {bad[i].n, t, p, s, NULL};
        CU_ASSERT(lam_engine_forward(e, &b, logits) != LAM_OK);
        CU_ASSERT(lam_engine_slot_len(e, 0) == 2 && lam_engine_slot_len(e, 1) == 0);
    }
    /* context full */
    lam_engine_slot_reset(e, 1);
    int32_t t16[8], p16[8], s16[8];
    for (int round = 0; round < 2; round++) {
        for (int j = 0; j < 8; j++) {
            t16[j] = 3;
            p16[j] = round * 8 + j;
            s16[j] = 1;
        }
        lam_batch_t b = {8, t16, p16, s16, NULL};
        CU_ASSERT(lam_engine_forward(e, &b, logits) == LAM_OK);
    }
    int32_t t1 = 3, p1 = 16, s1 = 1;
    lam_batch_t full = {1, &t1, &p1, &s1, NULL};
    CU_ASSERT(lam_engine_forward(e, &full, logits) == LAM_ERR_RANGE);
    free(logits);
    lam_engine_free(e);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("engine_vs_llama_cpp", suite_init, suite_clean);
    CU_add_test(s, "f32_teacher_forced_top1", test_f32_teacher_forced);
    CU_add_test(s, "f32_greedy_continuations", test_f32_greedy);
    CU_add_test(s, "q4_1_quant_act_vs_llama_cpp", test_q4_teacher_forced);
    CU_add_test(s, "batched_equals_single", test_batched_equals_single);
    CU_add_test(s, "blocks_only_equals_f32", test_blocks_equal_f32);
    CU_add_test(s, "bad_batches", test_bad_batches);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
