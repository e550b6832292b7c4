/* Attention offload end to end: real lamina-attention-node processes on
 * loopback UCX, the compute node's pipeline and scheduler in this process,
 * on SmolLM2-135M-Instruct.
 *   - 16 concurrent sequences of different prompt lengths, greedy, with
 *     prompts chunked so prefill and decode share steps: with f32 KV the
 *     tokens equal the reference engine's, through 1 and through 3 nodes;
 *   - with f16 KV, teacher-forced top-1 agrees with the reference >= 99%;
 *   - a node killed with SIGKILL mid-generation: the affected requests fail
 *     within 2 s, the compute side stays up, reconnects when the node is
 *     back, and then serves new requests correctly;
 *   - bad configurations (node count not dividing the KV heads, a wrong
 *     cluster token) are refused with a clear error. */
#include "common/gguf.h"
#include "common/model.h"
#include "common/proc.h"
#include "compute_node/backend.h"
#include "compute_node/engine.h"
#include "compute_node/generate.h"
#include "compute_node/pipeline.h"
#include "compute_node/remote.h"
#include "compute_node/sched.h"
#include "kernels/cpu/ops.h"
#include "tests/util/fixtures.h"
#include "tests/util/nodeproc.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_SEQ 16
#define MAX_NODES 3

static lam_gguf_t *g_gguf;
static lam_model_t *g_model;
static bool g_skip;
static int g_new;                      /* tokens generated per sequence */
static int g_nseq = N_SEQ;             /* sequences (fewer and shorter under LAMINA_TEST_QUICK) */
static int32_t *g_prompt[N_SEQ];
static int g_n_prompt[N_SEQ];
static int32_t *g_ref[N_SEQ];          /* reference engine's greedy continuation */
static char g_model_path[4096];
static int g_spin_us;                  /* --spin-us of the nodes and the compute side */
static int g_recompute;                /* the scheduler's recompute_on_loss */

/* ---- a local cluster: N attention node processes + the compute side ---- */

typedef struct cluster {
    int n;
    lam_proc_t np[MAX_NODES];
    char kv[8];
    lam_backend_t *be;
    lam_remote_t *r;
    lam_pipe_t *p;
} cluster_t;

static int start_node(cluster_t *c, int i, int port)
{
    char shard[32], ports[16], spin[16];
    snprintf(shard, sizeof shard, "%d/%d", i, c->n);
    snprintf(ports, sizeof ports, "%d", port);
    snprintf(spin, sizeof spin, "%d", g_spin_us);
    const char *args[] = {"--model", g_model_path, "--port", ports, "--shard", shard, "--kv-dtype", c->kv,
                          "--kv-capacity", "256M", "--threads", "1", "--spin-us", spin, NULL};
    return lam_proc_start(&c->np[i], LAM_ATTN_NODE_BIN, args, 60.0);
}

static void cluster_stop(cluster_t *c)
{
    lam_pipe_destroy(c->p);
    lam_remote_destroy(c->r);
    lam_backend_destroy(c->be);
    for (int i = 0; i < c->n; i++)
        if (c->np[i].pid > 0)
            lam_proc_stop(&c->np[i], 0);
    memset(c, 0, sizeof *c);
}

static int cluster_start(cluster_t *c, int n, const char *kv, int max_tokens)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    snprintf(c->kv, sizeof c->kv, "%s", kv);
    lam_remote_addr_t addrs[MAX_NODES];
    for (int i = 0; i < n; i++) {
        if (start_node(c, i, 0) != 0)
            return -1;
        snprintf(addrs[i].host, sizeof addrs[i].host, "127.0.0.1");
        addrs[i].port = c->np[i].port;
    }
    lam_remote_opts_t ro = {.n_nodes = n, .addrs = addrs, .token = getenv("LAMINA_CLUSTER_TOKEN"),
                            .fingerprint = g_model->fingerprint, .cfg = &g_model->cfg,
                            .kv_dtype = lam_dtype_parse(kv), .act_dtype = lam_dtype_parse(kv),
                            .max_tokens = max_tokens, .max_seqs = N_SEQ, .timeout_ms = 60000,
                            .spin_us = g_spin_us};
    lam_pipe_opts_t po = {.max_tokens = max_tokens, .max_seqs = N_SEQ};
    if (lam_backend_cpu_create(g_model, false, &c->be) != LAM_OK || lam_remote_create(&ro, &c->r) != LAM_OK ||
        lam_remote_wait_ready(c->r, 20000) != LAM_OK || lam_pipe_create(c->be, c->r, &po, &c->p) != LAM_OK) {
        cluster_stop(c);
        return -1;
    }
    return 0;
}

/* ---- scheduler runs ---- */

typedef struct run {
    int32_t out[N_SEQ][64];
    int n_out[N_SEQ];
    lam_status_t st[N_SEQ];
    bool done[N_SEQ];
    int req_of[N_SEQ * 2];           /* scheduler id -> our index */
    double t_first_fail;
} run_t;

static void on_token(void *ud, int req, int32_t t)
{
    run_t *r = ud;
    int i = r->req_of[req];
    if (r->n_out[i] < 64)
        r->out[i][r->n_out[i]++] = t;
}

static void on_done(void *ud, int req, lam_status_t st)
{
    run_t *r = ud;
    int i = r->req_of[req];
    r->st[i] = st;
    r->done[i] = true;
    if (st != LAM_OK && r->t_first_fail == 0)
        r->t_first_fail = lam_now_s();
}

static lam_sched_t *make_sched(cluster_t *c, run_t *run, int chunk)
{
    lam_sched_opts_t so = {.max_seqs = N_SEQ, .max_queue = N_SEQ, .chunk = chunk, .max_step_tokens = 256,
                           .max_ctx = 256, .queue_timeout_s = 30, .recompute_on_loss = g_recompute};
    lam_sched_hooks_t h = {on_token, on_done, NULL, run};
    lam_sched_t *s = NULL;
    CU_ASSERT_FATAL(lam_sched_create(c->p, c->r, g_model->cfg.vocab, &so, &h, &s) == LAM_OK);
    return s;
}

static void submit_all(lam_sched_t *s, run_t *run, int max_new)
{
    lam_sampler_params_t greedy = {.temperature = 0.0f, .top_p = 1.0f};
    for (int i = 0; i < g_nseq; i++) {
        int id = lam_sched_submit(s, g_prompt[i], g_n_prompt[i], max_new, &greedy);
        CU_ASSERT_FATAL(id >= 0 && id < N_SEQ * 2);
        run->req_of[id] = i;
    }
}

static void run_until_idle(lam_sched_t *s, double limit_s)
{
    double t0 = lam_now_s();
    while (lam_sched_pending(s) > 0 && lam_now_s() - t0 < limit_s)
        if (lam_sched_step(s) == 0)
            usleep(5000);
}

static int count_exact(const run_t *run)
{
    int exact = 0;
    for (int i = 0; i < g_nseq; i++) {
        bool same = run->st[i] == LAM_OK && run->n_out[i] == g_new &&
                    !memcmp(run->out[i], g_ref[i], (size_t)g_new * sizeof(int32_t));
        if (!same)
            printf("\n  sequence %d (prompt %d tokens): status %d, %d tokens, differs from the reference", i,
                   g_n_prompt[i], run->st[i], run->n_out[i]);
        exact += same;
    }
    return exact;
}

static void exact_tokens(int n_nodes)
{
    if (g_skip)
        return;
    cluster_t c;
    CU_ASSERT_FATAL(cluster_start(&c, n_nodes, "f32", 256) == 0);
    run_t *run = calloc(1, sizeof *run);
    lam_sched_t *s = make_sched(&c, run, 16); /* 16-token chunks: prompts span several steps */
    submit_all(s, run, g_new);
    run_until_idle(s, 300);
    CU_ASSERT_EQUAL(lam_sched_pending(s), 0);
    CU_ASSERT_EQUAL(count_exact(run), g_nseq);
    const lam_pipe_stats_t *ps = lam_pipe_stats(c.p);
    printf("\n  %d node(s): %ld steps, %ld tokens, dense %.2f s, waiting %.2f s", n_nodes, ps->steps, ps->tokens,
           ps->dense_s, ps->wait_s);
    lam_sched_destroy(s);
    free(run);
    cluster_stop(&c);
}

static void test_f32_exact_one_node(void) { exact_tokens(1); }
static void test_f32_exact_three_nodes(void) { exact_tokens(3); }

/* The compute thread polls the network itself while it waits (and keeps
 * the comm thread from waking for answers): same tokens. */
static void test_f32_exact_polling(void)
{
    g_spin_us = 500;
    exact_tokens(3);
    g_spin_us = 0;
}

/* Teacher forcing: the prompt plus the reference continuation go in as
 * one chunk per sequence; the argmax at every position is compared. */
static void test_f16_teacher_forced(void)
{
    if (g_skip)
        return;
    const int group = g_nseq < 4 ? g_nseq : 4, vocab = g_model->cfg.vocab;
    int max_len = 0;
    for (int i = 0; i < g_nseq; i++)
        max_len = g_n_prompt[i] + g_new > max_len ? g_n_prompt[i] + g_new : max_len;
    int max_tokens = group * max_len;
    cluster_t c;
    CU_ASSERT_FATAL(cluster_start(&c, 3, "f16", max_tokens) == 0);
    lam_engine_opts_t eo = {.n_slots = group, .max_ctx = max_len, .max_batch_tokens = max_tokens};
    lam_engine_t *e = NULL;
    CU_ASSERT_FATAL(lam_engine_create(g_model, &eo, &e) == LAM_OK);
    float *lg = malloc((size_t)max_tokens * vocab * sizeof *lg);
    float *lr = malloc((size_t)max_tokens * vocab * sizeof *lr);
    int32_t *tok = malloc((size_t)max_tokens * sizeof *tok), *pos = malloc((size_t)max_tokens * sizeof *pos),
            *slot = malloc((size_t)max_tokens * sizeof *slot);
    int16_t st[N_SEQ];
    long agree = 0, total = 0;
    uint64_t next_id = 1000;
    for (int g0 = 0; g0 + group <= g_nseq; g0 += group) {
        lam_remote_seq_t seqs[4];
        uint64_t ids[4];
        int n = 0;
        for (int j = 0; j < group; j++) {
            int i = g0 + j, len = g_n_prompt[i] + g_new;
            seqs[j] = (lam_remote_seq_t){ids[j] = next_id++, 0, len};
            lam_engine_slot_reset(e, j);
            for (int t = 0; t < len; t++) {
                tok[n] = t < g_n_prompt[i] ? g_prompt[i][t] : g_ref[i][t - g_n_prompt[i]];
                pos[n] = t;
                slot[n++] = j;
            }
        }
        lam_step_t step = {group, seqs, n, tok, NULL};
        CU_ASSERT_FATAL(lam_pipe_step(c.p, &step, lg, st) == LAM_OK);
        for (int j = 0; j < group; j++)
            CU_ASSERT_EQUAL(st[j], 0);
        lam_batch_t b = {n, tok, pos, slot, NULL};
        CU_ASSERT_FATAL(lam_engine_forward(e, &b, lr) == LAM_OK);
        for (int t = 0; t < n; t++) {
            agree += lam_argmax_f32(lg + (size_t)t * vocab, vocab) == lam_argmax_f32(lr + (size_t)t * vocab, vocab);
            total++;
        }
        lam_remote_release(c.r, ids, group);
    }
    double rate = (double)agree / (double)total;
    printf("\n  f16 KV, 3 nodes: teacher-forced top-1 %ld/%ld (%.2f%%)", agree, total, 100.0 * rate);
    CU_ASSERT(rate >= 0.99);
    free(lg);
    free(lr);
    free(tok);
    free(pos);
    free(slot);
    lam_engine_free(e);
    cluster_stop(&c);
}

/* SIGKILL one of three nodes mid-generation. */
static void node_killed(void)
{
    if (g_skip)
        return;
    cluster_t c;
    CU_ASSERT_FATAL(cluster_start(&c, 3, "f32", 256) == 0);
    run_t *run = calloc(1, sizeof *run);
    lam_sched_t *s = make_sched(&c, run, 64);
    submit_all(s, run, 60);
    int steps = 0;
    while (steps < 4 && lam_sched_pending(s) > 0)
        steps += lam_sched_step(s) > 0;
    int port = c.np[1].port;
    double t_kill = lam_now_s();
    lam_proc_stop(&c.np[1], 1);
    run_until_idle(s, 30);
    CU_ASSERT_EQUAL(lam_sched_pending(s), 0);
    int failed = 0;
    for (int i = 0; i < g_nseq; i++)
        failed += run->done[i] && (run->st[i] == LAM_ERR_CONN_CLOSED || run->st[i] == LAM_ERR_TIMEOUT);
    CU_ASSERT_EQUAL(failed, g_nseq);
    double noticed = run->t_first_fail - t_kill;
    printf("\n  node killed: %d/%d requests failed, first failure %.3f s after the kill", failed, g_nseq, noticed);
    CU_ASSERT(run->t_first_fail > 0 && noticed < 2.0);
    CU_ASSERT_FALSE(lam_remote_ready(c.r));

    /* the node comes back on the same port; the compute side reconnects */
    int started = start_node(&c, 1, port);
    CU_ASSERT_EQUAL(started, 0);
    lam_status_t ready = started == 0 ? lam_remote_wait_ready(c.r, 15000) : LAM_ERR_CONN_CLOSED;
    CU_ASSERT_EQUAL(ready, LAM_OK);
    if (ready == LAM_OK) {
        memset(run, 0, sizeof *run);
        submit_all(s, run, g_new);
        run_until_idle(s, 300);
        CU_ASSERT_EQUAL(count_exact(run), g_nseq);
    }
    lam_sched_destroy(s);
    free(run);
    cluster_stop(&c);
}

static void test_node_killed(void) { node_killed(); }

/* The same while the compute thread polls and the comm thread is muted:
 * the loss must still be noticed within 2 s. */
static void test_node_killed_polling(void)
{
    g_spin_us = 500;
    node_killed();
    g_spin_us = 0;
}

/* With recompute_on_loss the requests survive the kill: they wait while
 * the node is down, their KV is prefilled again once it is back, and every
 * one of them ends with exactly the reference tokens. */
static void test_node_killed_recompute(void)
{
    if (g_skip)
        return;
    g_recompute = 2;
    cluster_t c;
    CU_ASSERT_FATAL(cluster_start(&c, 3, "f32", 256) == 0);
    run_t *run = calloc(1, sizeof *run);
    lam_sched_t *s = make_sched(&c, run, 64);
    submit_all(s, run, g_new);
    /* kill once every request is half-way through its tokens (none done:
     * they run in lock-step after their prompts) */
    for (int k = 0; k < 1000; k++) {
        int min_out = g_new;
        for (int i = 0; i < g_nseq; i++)
            min_out = run->n_out[i] < min_out ? run->n_out[i] : min_out;
        if (min_out >= (g_new > 2 ? g_new / 2 : 1))
            break;
        lam_sched_step(s);
    }
    int port = c.np[1].port, before[N_SEQ];
    memcpy(before, run->n_out, sizeof before);
    lam_proc_stop(&c.np[1], 1);
    /* keep stepping while it is down: nothing may fail or move on */
    double t0 = lam_now_s();
    while (lam_now_s() - t0 < 1.0)
        if (lam_sched_step(s) == 0)
            usleep(5000);
    int done_early = 0, moved = 0;
    for (int i = 0; i < g_nseq; i++) {
        done_early += run->done[i];
        moved += run->n_out[i] != before[i];
    }
    CU_ASSERT_EQUAL(done_early, 0);
    CU_ASSERT_EQUAL(moved, 0);
    CU_ASSERT_EQUAL(lam_sched_pending(s), g_nseq);
    int started = start_node(&c, 1, port);
    CU_ASSERT_EQUAL(started, 0);
    if (started == 0) {
        run_until_idle(s, 300);
        CU_ASSERT_EQUAL(lam_sched_pending(s), 0);
        int generated = 0;
        for (int i = 0; i < g_nseq; i++)
            generated += before[i];
        printf("\n  node killed after %d generated tokens, back after 1 s", generated);
        CU_ASSERT_EQUAL(count_exact(run), g_nseq);
    }
    lam_sched_destroy(s);
    free(run);
    cluster_stop(&c);
    g_recompute = 0;
}

/* Configurations the compute side must refuse. */
static void test_bad_config(void)
{
    if (g_skip)
        return;
    /* two nodes cannot split three KV heads */
    lam_remote_addr_t addrs[2] = {{"127.0.0.1", 1}, {"127.0.0.1", 2}};
    lam_remote_opts_t ro = {.n_nodes = 2, .addrs = addrs, .token = "x", .fingerprint = g_model->fingerprint,
                            .cfg = &g_model->cfg, .kv_dtype = LAM_DT_F32, .act_dtype = LAM_DT_F32,
                            .max_tokens = 16, .max_seqs = 4};
    lam_remote_t *r = NULL;
    CU_ASSERT_EQUAL(lam_remote_create(&ro, &r), LAM_ERR_CONFIG);

    /* a node with a different cluster token is never accepted */
    cluster_t c = {.n = 1};
    snprintf(c.kv, sizeof c.kv, "f32");
    CU_ASSERT_FATAL(start_node(&c, 0, 0) == 0);
    addrs[0].port = c.np[0].port;
    ro.n_nodes = 1;
    ro.token = "a-different-token-of-enough-length";
    ro.reconnect_ms = 200;
    CU_ASSERT_FATAL(lam_remote_create(&ro, &r) == LAM_OK);
    CU_ASSERT_EQUAL(lam_remote_wait_ready(r, 1500), LAM_ERR_TIMEOUT);
    lam_remote_destroy(r);
    /* nor one that expects another shard layout */
    ro.token = getenv("LAMINA_CLUSTER_TOKEN");
    lam_model_config_t other = g_model->cfg;
    other.n_layers = 7;
    ro.cfg = &other;
    CU_ASSERT_FATAL(lam_remote_create(&ro, &r) == LAM_OK);
    CU_ASSERT_EQUAL(lam_remote_wait_ready(r, 1500), LAM_ERR_TIMEOUT);
    lam_remote_destroy(r);
    /* the node kept serving: a correct client still gets in */
    ro.cfg = &g_model->cfg;
    CU_ASSERT_FATAL(lam_remote_create(&ro, &r) == LAM_OK);
    CU_ASSERT_EQUAL(lam_remote_wait_ready(r, 10000), LAM_OK);
    lam_remote_destroy(r);
    lam_proc_stop(&c.np[0], 0);
}

/* ---- setup ---- */

static int suite_init(void)
{
    np_loopback_env();
    if (!fx_model_path(g_model_path, sizeof g_model_path, &g_skip))
        return g_skip ? 0 : -1;
    if (lam_gguf_open(g_model_path, &g_gguf, NULL, 0) != LAM_OK || lam_model_load(g_gguf, &g_model) != LAM_OK)
        return -1;
    char fx[4096];
    fx_prompt_t *p = NULL;
    int n = fx_load_prompts(fx_source_path("tests/fixtures/smollm2_greedy_f32.txt", fx, sizeof fx), &p);
    if (n < 8)
        return -1;
    /* Sanitizer builds run the dense f32 work ~15x slower: there the suite
     * checks memory safety on 4 short sequences; the full acceptance runs
     * in the plain build. */
    bool quick = getenv("LAMINA_TEST_QUICK") != NULL;
    g_new = quick ? 4 : 24;
    g_nseq = quick ? 4 : N_SEQ;
    if (quick)
        printf("\n  LAMINA_TEST_QUICK=1: %d sequences of at most 14 prompt tokens, %d new tokens\n", g_nseq, g_new);
    /* 16 prompts of different lengths: the fixtures and shorter prefixes */
    for (int i = 0; i < N_SEQ; i++) {
        const fx_prompt_t *f = &p[i % 8];
        int len = quick ? 7 + 2 * (i % 4) : f->n_tokens - (i / 8) * 9 - (i % 5);
        g_n_prompt[i] = len < 4 ? 4 : len;
        g_prompt[i] = malloc((size_t)g_n_prompt[i] * sizeof(int32_t));
        memcpy(g_prompt[i], f->tokens, (size_t)g_n_prompt[i] * sizeof(int32_t));
        g_ref[i] = calloc((size_t)g_new, sizeof(int32_t));
    }
    fx_free_prompts(p, n);
    /* the reference: the local engine, all 16 at once */
    lam_engine_opts_t eo = {.n_slots = N_SEQ, .max_ctx = 256, .max_batch_tokens = 512};
    lam_engine_t *e = NULL;
    if (lam_engine_create(g_model, &eo, &e) != LAM_OK)
        return -1;
    lam_gen_seq_t seqs[N_SEQ];
    for (int i = 0; i < g_nseq; i++)
        seqs[i] = (lam_gen_seq_t){.prompt = g_prompt[i], .n_prompt = g_n_prompt[i], .max_new = g_new,
                                  .sp = {.temperature = 0.0f, .top_p = 1.0f}, .out = g_ref[i]};
    lam_status_t st = lam_generate_batch(e, seqs, g_nseq, NULL, NULL);
    lam_engine_free(e);
    return st == LAM_OK ? 0 : -1;
}

static int suite_clean(void)
{
    for (int i = 0; i < N_SEQ; i++) {
        free(g_prompt[i]);
        free(g_ref[i]);
    }
    lam_model_free(g_model);
    lam_gguf_close(g_gguf);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("offload", suite_init, suite_clean);
    CU_add_test(s, "f32 KV, 1 node: reference tokens", test_f32_exact_one_node);
    CU_add_test(s, "f32 KV, 3 nodes: reference tokens", test_f32_exact_three_nodes);
    CU_add_test(s, "f32 KV, 3 nodes, compute thread polling: reference tokens", test_f32_exact_polling);
    CU_add_test(s, "f16 KV, 3 nodes: teacher-forced top-1 >= 99%", test_f16_teacher_forced);
    CU_add_test(s, "node killed mid-generation, then back", test_node_killed);
    CU_add_test(s, "the same with the compute thread polling", test_node_killed_polling);
    CU_add_test(s, "node killed with recompute-on-loss: the requests finish, reference tokens",
                test_node_killed_recompute);
    CU_add_test(s, "bad configurations refused", test_bad_config);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
