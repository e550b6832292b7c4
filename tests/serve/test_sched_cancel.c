/* lam_sched_cancel against a real attention node: a running and a queued
 * request are removed between steps, their sequences are released on the
 * node (its STATS show them gone), on_done is not called for them, the
 * request left running produces exactly the tokens it produces alone, and
 * the freed slots serve new requests correctly. */
#include "common/gguf.h"
#include "common/log.h"
#include "common/model.h"
#include "common/proc.h"
#include "compute_node/backend.h"
#include "compute_node/pipeline.h"
#include "compute_node/remote.h"
#include "compute_node/sched.h"
#include "tests/util/fixtures.h"
#include "tests/util/nodeproc.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_REQ 3
#define GEN 12

static bool g_skip;
static char g_model_path[4096];
static lam_gguf_t *g_gguf;
static lam_model_t *g_model;
static fx_prompt_t *g_prompts;
static int g_n_prompts;

typedef struct run {
    int32_t out[8][GEN];
    int n_out[8];
    int done[8];
    lam_status_t st[8];
    int req_of[16];
} run_t;

static void on_token(void *ud, int req, int32_t t)
{
    run_t *r = ud;
    int i = r->req_of[req];
    if (r->n_out[i] < GEN)
        r->out[i][r->n_out[i]++] = t;
}

static void on_done(void *ud, int req, lam_status_t st)
{
    run_t *r = ud;
    int i = r->req_of[req];
    r->done[i]++;
    r->st[i] = st;
}

static int submit(lam_sched_t *s, run_t *r, int i, int prompt)
{
    lam_sampler_params_t greedy = {.temperature = 0.0f, .top_p = 1.0f};
    const fx_prompt_t *p = &g_prompts[prompt % g_n_prompts];
    int n = p->n_tokens < 24 ? p->n_tokens : 24;
    int id = lam_sched_submit(s, p->tokens, n, GEN, &greedy);
    CU_ASSERT_FATAL(id >= 0 && id < 16);
    r->req_of[id] = i;
    return id;
}

static void run_until_idle(lam_sched_t *s)
{
    double t0 = lam_now_s();
    while (lam_sched_pending(s) > 0 && lam_now_s() - t0 < 120)
        if (lam_sched_step(s) == 0)
            usleep(2000);
}

/* Sequences the node holds, from a fresh STATS (or -1). */
static int node_seqs(lam_remote_t *r, int want)
{
    lam_remote_node_info_t info = {0};
    for (int i = 0; i < 40; i++) {
        lam_remote_request_stats(r);
        usleep(50000);
        lam_remote_node_info(r, 0, &info);
        if ((int)info.stats.n_seqs == want)
            break;
    }
    return (int)info.stats.n_seqs;
}

static void test_cancel(void)
{
    if (g_skip)
        return;
    lam_proc_t an;
    const char *args[] = {"--model", g_model_path, "--port", "0", "--kv-dtype", "f32", "--kv-capacity", "128M",
                          "--threads", "1", NULL};
    CU_ASSERT_FATAL(lam_proc_start(&an, LAM_ATTN_NODE_BIN, args, 60.0) == 0);
    lam_remote_addr_t addr = {"127.0.0.1", an.port};
    lam_remote_opts_t ro = {.n_nodes = 1, .addrs = &addr, .token = getenv("LAMINA_CLUSTER_TOKEN"),
                            .fingerprint = g_model->fingerprint, .cfg = &g_model->cfg, .kv_dtype = LAM_DT_F32,
                            .act_dtype = LAM_DT_F32, .max_tokens = 64, .max_seqs = 2, .timeout_ms = 60000};
    lam_pipe_opts_t po = {.max_tokens = 64, .max_seqs = 2};
    lam_sched_opts_t so = {.max_seqs = 2, .max_queue = 4, .chunk = 32, .max_step_tokens = 64, .max_ctx = 128};
    lam_backend_t *be = NULL;
    lam_remote_t *r = NULL;
    lam_pipe_t *p = NULL;
    CU_ASSERT_FATAL(lam_backend_cpu_create(g_model, false, &be) == LAM_OK);
    CU_ASSERT_FATAL(lam_remote_create(&ro, &r) == LAM_OK);
    CU_ASSERT_FATAL(lam_remote_wait_ready(r, 20000) == LAM_OK);
    CU_ASSERT_FATAL(lam_pipe_create(be, r, &po, &p) == LAM_OK);
    run_t *ref = calloc(1, sizeof *ref), *run = calloc(1, sizeof *run);
    lam_sched_hooks_t h = {on_token, on_done, NULL, ref};
    lam_sched_t *s = NULL;

    /* the reference: each request alone */
    CU_ASSERT_FATAL(lam_sched_create(p, r, g_model->cfg.vocab, &so, &h, &s) == LAM_OK);
    for (int i = 0; i < N_REQ; i++) {
        submit(s, ref, i, i);
        run_until_idle(s);
        CU_ASSERT_EQUAL(ref->n_out[i], GEN);
    }
    lam_sched_destroy(s);
    CU_ASSERT_EQUAL(node_seqs(r, 0), 0);

    /* A and B run, C waits (two sequences at most) */
    h.ud = run;
    CU_ASSERT_FATAL(lam_sched_create(p, r, g_model->cfg.vocab, &so, &h, &s) == LAM_OK);
    submit(s, run, 0, 0);
    int b = submit(s, run, 1, 1), c = submit(s, run, 2, 2);
    while (run->n_out[0] < 3 || run->n_out[1] < 3)
        CU_ASSERT_FATAL(lam_sched_step(s) > 0);
    CU_ASSERT_EQUAL(lam_sched_active(s), 2);
    CU_ASSERT_EQUAL(node_seqs(r, 2), 2);
    int b_tokens = run->n_out[1];
    CU_ASSERT_EQUAL(lam_sched_cancel(s, b), LAM_OK);
    CU_ASSERT_EQUAL(lam_sched_cancel(s, c), LAM_OK);
    CU_ASSERT_EQUAL(lam_sched_cancel(s, b), LAM_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(lam_sched_cancel(s, 15), LAM_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(lam_sched_cancel(s, -1), LAM_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(lam_sched_pending(s), 1);
    CU_ASSERT_EQUAL(lam_sched_active(s), 1);
    CU_ASSERT_EQUAL(node_seqs(r, 1), 1); /* B's sequence is gone from the node */
    run_until_idle(s);
    CU_ASSERT_EQUAL(run->done[0], 1);
    CU_ASSERT_EQUAL(run->st[0], LAM_OK);
    CU_ASSERT_EQUAL(run->done[1] + run->done[2], 0);
    CU_ASSERT_EQUAL(run->n_out[1], b_tokens);
    CU_ASSERT_EQUAL(run->n_out[2], 0);
    CU_ASSERT(!memcmp(run->out[0], ref->out[0], sizeof ref->out[0]));

    /* the freed slots take new requests, which come out right */
    memset(run, 0, sizeof *run);
    submit(s, run, 1, 1);
    submit(s, run, 2, 2);
    run_until_idle(s);
    CU_ASSERT(run->done[1] == 1 && run->done[2] == 1);
    CU_ASSERT(!memcmp(run->out[1], ref->out[1], sizeof ref->out[1]));
    CU_ASSERT(!memcmp(run->out[2], ref->out[2], sizeof ref->out[2]));
    CU_ASSERT_EQUAL(node_seqs(r, 0), 0);
    lam_sched_destroy(s);
    free(ref);
    free(run);
    lam_pipe_destroy(p);
    lam_remote_destroy(r);
    lam_backend_destroy(be);
    lam_proc_stop(&an, 0);
}

static int suite_init(void)
{
    np_loopback_env();
    if (!fx_model_path(g_model_path, sizeof g_model_path, &g_skip))
        return g_skip ? 0 : -1;
    if (lam_gguf_open(g_model_path, &g_gguf, NULL, 0) != LAM_OK || lam_model_load(g_gguf, &g_model) != LAM_OK)
        return -1;
    char fx[4096];
    g_n_prompts = fx_load_prompts(fx_source_path("tests/fixtures/smollm2_greedy_f32.txt", fx, sizeof fx), &g_prompts);
    return g_n_prompts >= N_REQ ? 0 : -1;
}

static int suite_clean(void)
{
    if (g_prompts)
        fx_free_prompts(g_prompts, g_n_prompts);
    lam_model_free(g_model);
    lam_gguf_close(g_gguf);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("sched_cancel", suite_init, suite_clean);
    CU_add_test(s, "cancel a running and a queued request", test_cancel);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
