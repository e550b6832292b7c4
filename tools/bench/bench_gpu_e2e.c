/* lamina-bench gpu-e2e: decode tokens/s of attention offload (the GPU
 * compute node: CUDA backend, pipeline, one CPU attention node process on
 * loopback UCX) next to the monolithic GPU mode (the same weights, KV cache
 * and attention on the GPU), at several contexts, in one run.
 *
 * --model gives the model file: its weights when it has them (SmolLM2),
 * else (or with --random-weights) random weights of its shape made on the
 * device, seeded the same for both paths: a LLaMA-3-8B-shaped file from
 * lamina-synth-model holds only the configuration. --ctx LIST (default
 * 4096,8192,16384,32768; --quick 4096) and --batch N (default 4) set the
 * shape; each sequence is prefilled to the context in 2048-token chunks,
 * then 32 decode steps (8 with --quick) are timed. The CPU attention node
 * prefills causally on the host, which costs O(context^2): offload runs
 * only up to LAMINA_BENCH_OFFLOAD_MAX_CTX (default 8192) tokens.
 *
 * Exit status: 0, 1 on failure, 3 without a usable GPU or CUDA. */
#include "tools/bench/bench.h"
#include "tools/bench/bench_gpu.h"

#include <stdio.h>

#ifdef LAMINA_HAVE_CUDA

#include "common/dtype.h"
#include "common/log.h"
#include "common/proc.h"
#include "compute_node/backend_cuda.h"
#include "compute_node/mono_cuda.h"
#include "compute_node/pipeline.h"
#include "compute_node/remote.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define E2E_CHUNK 2048
#define E2E_MAX_CTX 16
#define E2E_SEED 8

typedef struct e2e {
    const bench_opts_t *o;
    lam_gguf_t *g;
    lam_model_t *m;              /* NULL: random weights of cfg */
    lam_model_config_t cfg;
    uint64_t fingerprint;
    int ctx[E2E_MAX_CTX], n_ctx, B, G;
    int32_t *tok;                /* [E2E_CHUNK] */
    float *logits;               /* [B][vocab] */
    double mono_tps[E2E_MAX_CTX], off_tps[E2E_MAX_CTX], off_dense[E2E_MAX_CTX], off_wait[E2E_MAX_CTX];
} e2e_t;

static int32_t token_at(const e2e_t *e, long i) { return (int32_t)((1000 + i * 7919) % e->cfg.vocab); }

/* ---- monolithic ---------------------------------------------------------------- */

static int run_mono(e2e_t *e)
{
    const int max_ctx = e->ctx[e->n_ctx - 1] + e->G + 1;
    lam_mono_cuda_opts_t mo = {.be = {.gguf = e->g}, .n_slots = e->B, .max_ctx = max_ctx,
                               .max_batch_tokens = E2E_CHUNK, .kv_dtype = LAM_DT_F16};
    lam_mono_cuda_t *mono = NULL;
    lam_status_t st = e->m ? lam_mono_cuda_create(e->m, &mo, &mono)
                           : lam_mono_cuda_create_random(&e->cfg, &mo, E2E_SEED, &mono);
    if (st != LAM_OK)
        return 1;
    int32_t pos[E2E_CHUNK], slot[E2E_CHUNK];
    uint8_t want[E2E_CHUNK];
    int rc = 0;
    for (int ci = 0; ci < e->n_ctx && rc == 0; ci++) {
        const int ctx = e->ctx[ci];
        for (int s = 0; s < e->B; s++) {
            lam_mono_cuda_slot_reset(mono, s);
            for (int p0 = 0; p0 < ctx && rc == 0; p0 += E2E_CHUNK) {
                int n = ctx - p0 < E2E_CHUNK ? ctx - p0 : E2E_CHUNK;
                for (int t = 0; t < n; t++) {
                    e->tok[t] = token_at(e, (long)s * 7 + p0 + t);
                    pos[t] = p0 + t;
                    slot[t] = s;
                    want[t] = t == n - 1;
                }
                lam_batch_t b = {n, e->tok, pos, slot, want};
                rc = lam_mono_cuda_forward(mono, &b, e->logits) != LAM_OK;
            }
        }
        double t0 = lam_now_s();
        for (int step = 0; step < e->G && rc == 0; step++) {
            for (int s = 0; s < e->B; s++) {
                e->tok[s] = token_at(e, step * 31 + s);
                pos[s] = ctx + step;
                slot[s] = s;
            }
            lam_batch_t b = {e->B, e->tok, pos, slot, NULL};
            rc = lam_mono_cuda_forward(mono, &b, e->logits) != LAM_OK;
        }
        e->mono_tps[ci] = rc ? 0 : (double)e->B * e->G / (lam_now_s() - t0);
        printf("  monolithic: context %d done (%.1f tok/s)\n", ctx, e->mono_tps[ci]);
        fflush(stdout);
    }
    lam_mono_cuda_destroy(mono);
    return rc;
}

/* ---- offloaded ------------------------------------------------------------------ */

static int run_offload(e2e_t *e, int max_ctx)
{
    char bin[4096], threads[16], cap[32], mctx[16], chunk[16], seqs[16];
    if (!lam_proc_sibling("lamina-attention-node", "attention_node", bin, sizeof bin)) {
        lam_log_error("bench: lamina-attention-node not found next to lamina-bench");
        return 1;
    }
    setenv("LAMINA_CLUSTER_TOKEN", "bench-cluster-token-0123456789", 0);
    const int node_ctx = max_ctx + e->G + 1;
    const size_t per_tok = (size_t)e->cfg.n_layers * 2 * e->cfg.n_kv_heads * e->cfg.head_dim * 2;
    size_t capacity = (size_t)e->B * ((size_t)node_ctx + 32) * per_tok * 21 / 20;
    int nt = omp_get_num_procs() - 2;
    snprintf(threads, sizeof threads, "%d", nt < 1 ? 1 : nt);
    snprintf(cap, sizeof cap, "%zuM", capacity / 1048576 + 1);
    snprintf(mctx, sizeof mctx, "%d", node_ctx);
    snprintf(chunk, sizeof chunk, "%d", E2E_CHUNK);
    snprintf(seqs, sizeof seqs, "%d", e->B + 4);
    const char *args[] = {"--model", e->o->model, "--port", "0", "--kv-dtype", "f16", "--kv-capacity", cap,
                          "--max-ctx", mctx, "--max-batch-tokens", chunk, "--max-seqs", seqs, "--threads", threads,
                          "--device", "cpu", NULL};
    lam_proc_t node = {0};
    if (lam_proc_start(&node, bin, args, 120.0) != 0)
        return 1;
    lam_remote_addr_t addr = {"127.0.0.1", node.port};
    lam_remote_opts_t ro = {.n_nodes = 1, .addrs = &addr, .token = getenv("LAMINA_CLUSTER_TOKEN"),
                            .fingerprint = e->fingerprint, .cfg = &e->cfg, .kv_dtype = LAM_DT_F16,
                            .act_dtype = LAM_DT_F16, .max_tokens = E2E_CHUNK, .max_seqs = e->B,
                            .timeout_ms = 600000};
    lam_pipe_opts_t po = {.max_tokens = E2E_CHUNK, .max_seqs = e->B};
    lam_backend_cuda_opts_t bo = {.gguf = e->g};
    lam_backend_t *be = NULL;
    lam_remote_t *r = NULL;
    lam_pipe_t *p = NULL;
    int rc = 1;
    lam_status_t st = e->m ? lam_backend_cuda_create(e->m, &bo, &be)
                           : lam_backend_cuda_create_random(&e->cfg, &bo, E2E_SEED, &be);
    if (st != LAM_OK || lam_remote_create(&ro, &r) != LAM_OK || lam_remote_wait_ready(r, 30000) != LAM_OK ||
        lam_pipe_create(be, r, &po, &p) != LAM_OK)
        goto done;
    int16_t sst[64];
    lam_remote_seq_t sq[64];
    uint8_t want[E2E_CHUNK];
    rc = 0;
    for (int ci = 0; ci < e->n_ctx && rc == 0 && e->ctx[ci] <= max_ctx; ci++) {
        const int ctx = e->ctx[ci];
        uint64_t ids[64];
        for (int s = 0; s < e->B; s++) {
            ids[s] = (uint64_t)ctx * 64 + (uint64_t)s + 1;
            for (int p0 = 0; p0 < ctx && rc == 0; p0 += E2E_CHUNK) {
                int n = ctx - p0 < E2E_CHUNK ? ctx - p0 : E2E_CHUNK;
                for (int t = 0; t < n; t++) {
                    e->tok[t] = token_at(e, (long)s * 7 + p0 + t);
                    want[t] = t == n - 1;
                }
                sq[0] = (lam_remote_seq_t){ids[s], p0, n};
                lam_step_t step = {1, sq, n, e->tok, want};
                rc = lam_pipe_step(p, &step, e->logits, sst) != LAM_OK || sst[0] != 0;
            }
        }
        lam_pipe_stats_reset(p);
        double t0 = lam_now_s();
        for (int step = 0; step < e->G && rc == 0; step++) {
            for (int s = 0; s < e->B; s++) {
                e->tok[s] = token_at(e, step * 31 + s);
                sq[s] = (lam_remote_seq_t){ids[s], ctx + step, 1};
            }
            lam_step_t stp = {e->B, sq, e->B, e->tok, NULL};
            rc = lam_pipe_step(p, &stp, e->logits, sst) != LAM_OK;
            for (int s = 0; s < e->B && rc == 0; s++)
                rc = sst[s] != 0;
        }
        double dt = lam_now_s() - t0;
        const lam_pipe_stats_t *ps = lam_pipe_stats(p);
        e->off_tps[ci] = rc ? 0 : (double)e->B * e->G / dt;
        e->off_dense[ci] = ps->steps ? ps->dense_s / ps->steps * 1e3 : 0;
        e->off_wait[ci] = ps->steps ? ps->wait_s / ps->steps * 1e3 : 0;
        lam_remote_release(r, ids, e->B);
        printf("  offloaded: context %d done (%.1f tok/s)\n", ctx, e->off_tps[ci]);
        fflush(stdout);
    }
done:
    if (rc)
        fprintf(stderr, "lamina-bench gpu-e2e: the offloaded run failed\n");
    lam_pipe_destroy(p);
    lam_remote_destroy(r);
    lam_backend_destroy(be);
    lam_proc_stop(&node, 0);
    return rc;
}

static int parse_ctx(e2e_t *e, const char *list)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    e->n_ctx = 0;
    for (char *t = strtok(buf, ","); t && e->n_ctx < E2E_MAX_CTX; t = strtok(NULL, ",")) {
        long v = strtol(t, NULL, 10);
        if (v < 1 || v > (1 << 20) || (e->n_ctx && v <= e->ctx[e->n_ctx - 1])) {
            fprintf(stderr, "lamina-bench gpu-e2e: --ctx wants increasing contexts, got '%s'\n", list);
            return -1;
        }
        e->ctx[e->n_ctx++] = (int)v;
    }
    return e->n_ctx ? 0 : -1;
}

int bench_gpu_e2e(const bench_opts_t *o)
{
    char why[256];
    if (!bench_gpu_ready("gpu-e2e", why, sizeof why))
        return 3;
    e2e_t e = {.o = o, .B = o->batch > 0 ? o->batch : 4, .G = o->quick ? 8 : 32};
    if (e.B > 64 || parse_ctx(&e, o->ctx_list ? o->ctx_list : o->quick ? "4096" : "4096,8192,16384,32768"))
        return 2;
    const char *env = getenv("LAMINA_BENCH_OFFLOAD_MAX_CTX");
    int off_max = env ? atoi(env) : 8192;
    char err[512];
    if (lam_gguf_open(o->model, &e.g, err, sizeof err) != LAM_OK ||
        lam_model_config_from_gguf(e.g, &e.cfg) != LAM_OK) {
        lam_gguf_close(e.g);
        return 1;
    }
    e.fingerprint = lam_gguf_fingerprint(e.g);
    if (!o->random_weights && lam_model_load(e.g, &e.m) != LAM_OK) {
        printf("gpu-e2e: %s has no loadable weights: random weights of its shape\n", o->model);
        e.m = NULL;
    }
    e.tok = malloc(E2E_CHUNK * sizeof *e.tok);
    e.logits = malloc((size_t)e.B * e.cfg.vocab * sizeof *e.logits);
    int rc = !e.tok || !e.logits;
    printf("gpu-e2e: %s (%s weights), %d layers, dim %d, batch %d, %d decode steps\n", o->model,
           e.m ? "its" : "random", e.cfg.n_layers, e.cfg.dim, e.B, e.G);
    if (!rc)
        rc = run_mono(&e);
    if (!rc)
        rc = run_offload(&e, off_max);
    printf("%-8s %6s %14s %14s %8s %12s %12s\n", "context", "batch", "mono tok/s", "offload tok/s", "ratio",
           "dense ms", "wait ms");
    json_t *res = json_array();
    for (int ci = 0; ci < e.n_ctx; ci++) {
        bool off = e.ctx[ci] <= off_max && e.off_tps[ci] > 0;
        printf("%-8d %6d %14.1f ", e.ctx[ci], e.B, e.mono_tps[ci]);
        if (off)
            printf("%14.1f %8.3f %12.2f %12.2f\n", e.off_tps[ci], e.off_tps[ci] / e.mono_tps[ci], e.off_dense[ci],
                   e.off_wait[ci]);
        else
            printf("%14s %8s %12s %12s\n", "-", "-", "-", "-");
        json_t *j = json_pack("{s:s, s:s, s:f, s:i, s:i, s:s}", "name", "gpu_e2e", "metric", "mono_decode_tps",
                              "value", e.mono_tps[ci], "context", e.ctx[ci], "batch", e.B, "weights",
                              e.m ? "file" : "random");
        if (off) {
            json_object_set_new(j, "offload_decode_tps", json_real(e.off_tps[ci]));
            json_object_set_new(j, "ratio", json_real(e.off_tps[ci] / e.mono_tps[ci]));
            json_object_set_new(j, "offload_dense_ms_per_step", json_real(e.off_dense[ci]));
            json_object_set_new(j, "offload_wait_ms_per_step", json_real(e.off_wait[ci]));
        }
        json_array_append_new(res, j);
    }
    if (o->json && bench_write_json(o, "gpu-e2e", res) != 0)
        rc = 1;
    else if (!o->json)
        json_decref(res);
    free(e.tok);
    free(e.logits);
    lam_model_free(e.m);
    lam_gguf_close(e.g);
    return rc;
}

#else

int bench_gpu_e2e(const bench_opts_t *o)
{
    (void)o;
    fprintf(stderr, "lamina-bench gpu-e2e: built without CUDA\n");
    return 3;
}

#endif
