/* lamina-bench modes for attention offload. Each starts its own attention
 * node processes on loopback (lamina-attention-node next to lamina-bench or
 * in the build tree), with the UCX settings of the environment.
 *
 *   exchange  per-layer round trip of a decode micro-batch (q/k/v out, o
 *             back) through the real protocol and an attention node, minus
 *             the node's attention time for that message (K/V append and
 *             kernel, from its ATTN_RESULT), median, over the ceiling
 *             ucx_perftest -t ucp_am_lat measures at the request and reply
 *             sizes (one-way latency of each, medians).
 *   pipeline  decode step time with two micro-batches over max(dense,
 *             attention + exchange), the latter two measured on the same
 *             batch with one micro-batch (no overlap).
 *   offload   end-to-end decode tokens/s at batch 1 and 16, offloaded (one
 *             attention node) vs the reference engine. */
#include "common/log.h"
#include "common/proc.h"
#include "compute_node/backend.h"
#include "compute_node/generate.h"
#include "compute_node/pipeline.h"
#include "compute_node/remote.h"
#include "compute_node/sched.h"
#include "proto/net.h"
#include "tools/bench/bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_NODES 8

typedef struct cluster {
    int n;
    lam_proc_t np[MAX_NODES];
    lam_remote_t *r;
} cluster_t;

static void cluster_stop(cluster_t *c)
{
    lam_remote_destroy(c->r);
    for (int i = 0; i < c->n; i++)
        if (c->np[i].pid > 0)
            lam_proc_stop(&c->np[i], 0);
    memset(c, 0, sizeof *c);
}

/* Starts n nodes (threads each) and connects a client for micro-batches of
 * max_tokens tokens / max_seqs sequences. Each node's KV capacity holds
 * kv_tokens tokens of its heads (rounded up to 64-token pages per
 * sequence), and at least 1 GiB. */
static int cluster_start(cluster_t *c, const bench_opts_t *o, const lam_model_t *m, int n, int node_threads,
                         int max_tokens, int max_seqs, long kv_tokens)
{
    memset(c, 0, sizeof *c);
    char bin[4096];
    if (!lam_proc_sibling("lamina-attention-node", "attention_node", bin, sizeof bin)) {
        lam_log_error("bench: lamina-attention-node not found next to lamina-bench");
        return -1;
    }
    setenv("LAMINA_CLUSTER_TOKEN", "bench-cluster-token-0123456789", 0);
    lam_remote_addr_t addrs[MAX_NODES];
    char threads[16], shard[32], mbt[16], spin[16], cap[32];
    long page_tokens = 64, pages = (kv_tokens + page_tokens - 1) / page_tokens + max_seqs;
    size_t kv_mib = (size_t)pages * page_tokens * m->cfg.n_layers * (m->cfg.n_kv_heads / n) * m->cfg.head_dim * 2 *
                        sizeof(uint16_t) >> 20;
    snprintf(cap, sizeof cap, "%zuM", kv_mib > 1024 ? kv_mib + 64 : 1024);
    snprintf(spin, sizeof spin, "%d", o->spin_us);
    snprintf(threads, sizeof threads, "%d", node_threads);
    snprintf(mbt, sizeof mbt, "%d", max_tokens > 2048 ? max_tokens : 2048);
    for (int i = 0; i < n; i++) {
        snprintf(shard, sizeof shard, "%d/%d", i, n);
        const char *args[] = {"--model", o->model, "--port", "0", "--shard", shard, "--kv-dtype", "f16",
                              "--kv-capacity", cap, "--threads", threads, "--max-batch-tokens", mbt,
                              "--spin-us", spin, NULL};
        if (bench_start_node(o, &c->np[i], bin, args) != 0) {
            cluster_stop(c);
            return -1;
        }
        c->n = i + 1;
        snprintf(addrs[i].host, sizeof addrs[i].host, "127.0.0.1");
        addrs[i].port = c->np[i].port;
    }
    lam_remote_opts_t ro = {.n_nodes = n, .addrs = addrs, .token = getenv("LAMINA_CLUSTER_TOKEN"),
                            .fingerprint = m->fingerprint, .cfg = &m->cfg, .kv_dtype = LAM_DT_F16,
                            .act_dtype = o->wire_dtype, .max_tokens = max_tokens, .max_seqs = max_seqs,
                            .spin_us = o->spin_us};
    if (lam_remote_create(&ro, &c->r) != LAM_OK || lam_remote_wait_ready(c->r, 20000) != LAM_OK) {
        cluster_stop(c);
        return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ucx_perftest -t ucp_am_lat at `size` bytes: median one-way latency in
 * microseconds, or -1. Runs a server and a client on loopback. */
static double perftest_am_lat_us(const bench_opts_t *o, size_t size, int iters)
{
    static int port = 0;
    if (port == 0)
        port = 20000 + (int)(getpid() % 20000);
    port++;
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "(%sucx_perftest -p %d >/dev/null 2>&1 &) ; sleep 0.5; "
             "timeout 60 %sucx_perftest 127.0.0.1 -p %d -t ucp_am_lat -s %zu -n %d 2>/dev/null",
             bench_taskset(o, true), port, bench_taskset(o, false), port, size, iters);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1.0;
    char line[512];
    double med = -1.0;
    while (fgets(line, sizeof line, p)) {
        long it;
        double m50;
        if (sscanf(line, "Final: %ld %lf", &it, &m50) == 2)
            med = m50;
    }
    pclose(p);
    return med;
}

static void fill_random(float *x, size_t n, unsigned *seed)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)rand_r(seed) / (float)RAND_MAX - 0.5f;
}

/* One round of the exchange bench: `steps` decode steps of every layer
 * from step s0 on; appends each round trip, and each less the node's own
 * time, to rtt[] and exch[] from *n on. */
static int exchange_round(lam_remote_t *r, const lam_model_config_t *c, int B, int s0, int steps, const float *q,
                          const float *k, const float *v, float *out, double *rtt, double *exch, int *n)
{
    lam_remote_seq_t seqs[64];
    int16_t st[64];
    for (int s = s0; s < s0 + steps; s++) {
        for (int i = 0; i < B; i++)
            seqs[i] = (lam_remote_seq_t){(uint64_t)i + 1, s, 1};
        for (int l = 0; l < c->n_layers; l++) {
            double t0 = lam_now_s();
            if (lam_remote_submit(r, 0, (uint64_t)s, l, seqs, B, B, q, k, v, out) != LAM_OK ||
                lam_remote_wait(r, 0, st) != LAM_OK)
                return 1;
            rtt[*n] = (lam_now_s() - t0) * 1e6;
            exch[*n] = rtt[*n] - lam_remote_node_ns(r, 0) / 1e3;
            ++*n;
        }
    }
    return 0;
}

/* This VM's speed drifts by up to a third within minutes, so the exchange
 * and its ceiling are measured in alternation: EXCH_ROUNDS rounds of
 * (steps / EXCH_ROUNDS decode steps, then ucx_perftest at both sizes), the
 * cluster idle (asleep) while perftest runs on the same CPUs. The ratio
 * reported is the median of the rounds' ratios. */
#define EXCH_ROUNDS 5

static int exchange_run(const bench_opts_t *o)
{
    lam_gguf_t *g = NULL;
    lam_model_t *m = NULL;
    if (bench_open_model(o, true, &g, &m))
        return 1;
    const lam_model_config_t *c = &m->cfg;
    const int batches[] = {1, 16, 64};
    const int n_batches = o->batch ? 1 : o->quick ? 2 : 3, per_round = o->quick ? 2 : 8;
    const int pt_iters = o->quick ? 400 : 1000;
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    json_t *res = json_array();
    printf("per-layer exchange round trip, 1 attention node, %s on the wire, UCX_TLS=%s, UCX_RNDV_THRESH=%s\n"
           "%d rounds of %d steps x %d layers, each followed by ucx_perftest (%d iterations per size)\n",
           lam_dtype_name((unsigned)o->wire_dtype), getenv("UCX_TLS") ? getenv("UCX_TLS") : "(default)",
           getenv("UCX_RNDV_THRESH"), EXCH_ROUNDS, per_round,
           c->n_layers, pt_iters);
    printf("%-8s %10s %10s %10s %10s %10s %12s %8s  %s\n", "batch", "req B", "reply B", "rtt us", "node us",
           "exch us", "perftest us", "ratio", "rounds' ratios");
    int rc = 0;
    for (int bi = 0; bi < n_batches; bi++) {
        int B = o->batch ? o->batch : batches[bi];
        if (B > 64) {
            lam_log_error("bench: exchange takes --batch up to 64");
            rc = 1;
            break;
        }
        cluster_t cl;
        if (cluster_start(&cl, o, m, 1, 1, B, B, 0) != 0) {
            rc = 1;
            break;
        }
        float *q = malloc((size_t)B * q_dim * sizeof *q), *k = malloc((size_t)B * kv_dim * sizeof *k),
              *v = malloc((size_t)B * kv_dim * sizeof *v), *out = malloc((size_t)B * q_dim * sizeof *out);
        unsigned seed = 1234;
        fill_random(q, (size_t)B * q_dim, &seed);
        fill_random(k, (size_t)B * kv_dim, &seed);
        fill_random(v, (size_t)B * kv_dim, &seed);
        int n_rt = EXCH_ROUNDS * per_round * c->n_layers, n = 0;
        double *rtt = malloc((size_t)n_rt * sizeof *rtt), *exch_us = malloc((size_t)n_rt * sizeof *exch_us);
        double *tmp = malloc((size_t)n_rt * sizeof *tmp), pts[EXCH_ROUNDS], ratios[EXCH_ROUNDS];
        lam_wire_attn_t h = {.n_seq = (uint16_t)B, .n_q_heads = (uint16_t)c->n_heads,
                             .n_kv_heads = (uint16_t)c->n_kv_heads, .head_dim = (uint16_t)c->head_dim,
                             .n_tok = (uint32_t)B, .dtype = (uint8_t)o->wire_dtype};
        size_t req = lam_wire_attn_layout(&h, 0).total, rep = lam_wire_attn_layout(&h, 1).total;
        lam_remote_node_info_t before, after;
        double attn_ns = 0;
        uint64_t attn_msgs = 0;
        int nr = 0, nw = 0;
        /* one step untimed: first touches on both sides */
        if (exchange_round(cl.r, c, B, 0, 1, q, k, v, out, tmp, tmp + c->n_layers, &nw))
            rc = 1;
        lam_remote_request_stats(cl.r);
        usleep(200000);
        lam_remote_node_info(cl.r, 0, &before);
        for (int rd = 0; rd < EXCH_ROUNDS && rc == 0; rd++) {
            int n0 = n;
            if (exchange_round(cl.r, c, B, 1 + rd * per_round, per_round, q, k, v, out, rtt, exch_us, &n)) {
                rc = 1;
                break;
            }
            /* the node's kernel time over the round, then let both sides
             * fall asleep before perftest takes the CPUs */
            lam_remote_request_stats(cl.r);
            usleep(100000);
            lam_remote_node_info(cl.r, 0, &after);
            attn_ns += (double)(after.stats.attn_ns - before.stats.attn_ns);
            attn_msgs += after.stats.attn_msgs - before.stats.attn_msgs;
            before = after;
            double a = perftest_am_lat_us(o, req, pt_iters), b = perftest_am_lat_us(o, rep, pt_iters);
            if (a <= 0 || b <= 0)
                continue; /* perftest failed: this round has no ceiling */
            memcpy(tmp, exch_us + n0, (size_t)(n - n0) * sizeof *tmp);
            pts[nr] = a + b;
            ratios[nr] = median(tmp, n - n0) / pts[nr];
            nr++;
        }
        double kern_us = attn_msgs ? attn_ns / 1e3 / (double)attn_msgs : 0.0;
        double med = n ? median(rtt, n) : -1, exch = n ? median(exch_us, n) : -1;
        cluster_stop(&cl);
        char rlist[EXCH_ROUNDS * 8 + 1] = "";
        for (int i = 0; i < nr; i++)
            snprintf(rlist + strlen(rlist), sizeof rlist - strlen(rlist), "%s%.2f", i ? " " : "", ratios[i]);
        memcpy(tmp, ratios, (size_t)nr * sizeof *tmp); /* median() sorts; keep the rounds' order */
        double pt = nr ? median(pts, nr) : -1, ratio = nr ? median(tmp, nr) : 0;
        printf("%-8d %10zu %10zu %10.1f %10.1f %10.1f %12.1f %8.2f  %s\n", B, req, rep, med, kern_us, exch, pt, ratio,
               rlist);
        json_t *rr = json_array();
        for (int i = 0; i < nr; i++)
            json_array_append_new(rr, json_real(ratios[i]));
        json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:s, s:f, s:o, s:i, s:s, s:I, s:I, s:f, s:f}",
                                             "name", "exchange", "metric", "exchange_us", "value", exch, "ceiling",
                                             pt, "ceiling_name", "ucx_perftest_ucp_am_lat", "ratio", ratio,
                                             "round_ratios", rr, "batch", B, "wire_dtype",
                                             lam_dtype_name((unsigned)o->wire_dtype), "request_bytes", (json_int_t)req,
                                             "reply_bytes", (json_int_t)rep, "rtt_us", med, "node_attention_us",
                                             kern_us));
        free(q);
        free(k);
        free(v);
        free(out);
        free(rtt);
        free(exch_us);
        free(tmp);
        if (nr == 0 && rc == 0) {
            lam_log_error("bench: ucx_perftest gave no result (is ucx-utils installed?)");
            rc = 1;
        }
        if (rc)
            break;
    }
    if (rc == 0 && o->json)
        rc = bench_write_json(o, "exchange", res);
    else
        json_decref(res);
    lam_model_free(m);
    lam_gguf_close(g);
    return rc;
}

int bench_exchange(const bench_opts_t *o)
{
    /* Node, compute side and ucx_perftest on one transport. Left to itself
     * ucx_perftest takes shared memory on loopback, which the attention
     * links (peer error handling, worker wake-ups) do not get: TCP is what
     * separate hosts use here. ucx_perftest also gets the links' rendezvous
     * threshold. What the caller set is kept. */
    bool set = !getenv("UCX_TLS"), set_rndv = !getenv("UCX_RNDV_THRESH");
    char thresh[32];
    snprintf(thresh, sizeof thresh, "%d", LAM_NET_RNDV_THRESH);
    if (set)
        setenv("UCX_TLS", "tcp", 1);
    if (set_rndv)
        setenv("UCX_RNDV_THRESH", thresh, 1);
    int rc = exchange_run(o);
    if (set)
        unsetenv("UCX_TLS");
    if (set_rndv)
        unsetenv("UCX_RNDV_THRESH");
    return rc;
}

/* Prefills B sequences of ctx random tokens through each of the np
 * pipelines (pipeline k's ids from 1 + k * B), then times `steps` decode
 * steps of each, taking the pipelines in turn step by step so that the
 * machine's drift (a VM's bandwidth can move by 10-20% within a minute)
 * falls on all of them alike; per-step stats into out[k]. The sequences
 * are released on the nodes afterwards. */
static int decode_steps(lam_pipe_t *const *p, int np, lam_remote_t *r, int vocab, int B, int ctx, int steps,
                        lam_pipe_stats_t *out)
{
    int T = B * ctx > B ? B * ctx : B;
    int32_t *tok = malloc((size_t)T * sizeof *tok);
    float *logits = malloc((size_t)B * vocab * sizeof *logits);
    lam_remote_seq_t *seqs = malloc((size_t)B * sizeof *seqs);
    int16_t *st = malloc((size_t)B * sizeof *st);
    uint8_t *want = calloc((size_t)T, 1);
    uint64_t *ids = malloc((size_t)np * B * sizeof *ids);
    int rc = !tok || !logits || !seqs || !st || !want || !ids;
    /* prefill one sequence at a time (chunks of ctx) */
    for (int k = 0; k < np; k++)
        for (int b = 0; b < B && rc == 0; b++) {
            for (int t = 0; t < ctx; t++)
                tok[t] = 1000 + (b * 131 + t * 7919) % 20000;
            seqs[0] = (lam_remote_seq_t){1 + (uint64_t)k * B + b, 0, ctx};
            lam_step_t s = {1, seqs, ctx, tok, want};
            rc = lam_pipe_step(p[k], &s, logits, st) != LAM_OK;
            if (rc == 0 && st[0] != 0) {
                lam_log_error("bench: prefill of sequence %d failed on the attention node: %s", b,
                              lam_status_str((lam_status_t)st[0]));
                rc = 1;
            }
        }
    for (int k = 0; k < np; k++)
        lam_pipe_stats_reset(p[k]);
    for (int i = 0; i < steps && rc == 0; i++)
        for (int k = 0; k < np && rc == 0; k++) {
            for (int b = 0; b < B; b++) {
                seqs[b] = (lam_remote_seq_t){1 + (uint64_t)k * B + b, ctx + i, 1};
                tok[b] = 1000 + (b * 17 + i) % 20000;
                want[b] = 1;
            }
            lam_step_t s = {B, seqs, B, tok, want};
            rc = lam_pipe_step(p[k], &s, logits, st) != LAM_OK;
            for (int b = 0; b < B && rc == 0; b++)
                if (st[b] != 0) {
                    lam_log_error("bench: sequence %d failed on the attention node: %s", b,
                                  lam_status_str((lam_status_t)st[b]));
                    rc = 1;
                }
        }
    for (int k = 0; k < np; k++)
        out[k] = *lam_pipe_stats(p[k]);
    if (ids) {
        for (int i = 0; i < np * B; i++)
            ids[i] = 1 + (uint64_t)i;
        lam_remote_release(r, ids, np * B);
    }
    free(ids);
    free(tok);
    free(logits);
    free(seqs);
    free(st);
    free(want);
    return rc;
}

/* One batch size of the pipeline mode; appends its result to res. */
static int pipeline_batch(const bench_opts_t *o, const lam_model_t *m, int B, json_t *res)
{
    const int ctx = o->quick ? 128 : 512, steps = o->quick ? 8 : 32;
    int node_threads = bench_node_threads(o);
    cluster_t cl;
    lam_backend_t *be = NULL;
    lam_pipe_t *p2 = NULL, *p1 = NULL;
    int rc = 1;
    if (cluster_start(&cl, o, m, 1, node_threads, ctx > B ? ctx : B, B, 2L * B * (ctx + steps)) != 0)
        goto done;
    lam_pipe_opts_t po = {.max_tokens = ctx > B ? ctx : B, .max_seqs = B};
    if (lam_backend_cpu_create(m, false, &be) != LAM_OK || lam_pipe_create(be, cl.r, &po, &p2) != LAM_OK)
        goto done;
    po.single_mb = true;
    if (lam_pipe_create(be, cl.r, &po, &p1) != LAM_OK)
        goto done;
    lam_pipe_t *const pp[2] = {p2, p1};
    lam_pipe_stats_t ss[2];
    if (decode_steps(pp, 2, cl.r, m->cfg.vocab, B, ctx, steps, ss))
        goto done;
    const lam_pipe_stats_t s2 = ss[0], s1 = ss[1];
    /* with one micro-batch nothing overlaps: whatever the step spends
     * outside dense work is attention + exchange (packing, UCX, the node,
     * thread hand-offs), which is more than the time blocked in wait */
    double t2 = s2.step_s / s2.steps, dense = s1.dense_s / s1.steps, attn = (s1.step_s - s1.dense_s) / s1.steps;
    double bound = dense > attn ? dense : attn, ratio = t2 / bound;
    /* the dense work the two micro-batches actually do (each streams the
     * weights once): what is left over that is overlap lost */
    double dense2 = s2.dense_s / s2.steps, bound2 = dense2 > attn ? dense2 : attn;
    printf("decode step, batch %d, context %d, 1 attention node (%d threads%s%s), compute %d threads%s%s, "
           "%s on the wire, UCX_TLS=%s\n",
           B, ctx, node_threads, o->node_cpus_str ? ", CPUs " : "", o->node_cpus_str ? o->node_cpus_str : "",
           o->threads, o->compute_cpus_str ? ", CPUs " : "", o->compute_cpus_str ? o->compute_cpus_str : "",
           lam_dtype_name((unsigned)o->wire_dtype), getenv("UCX_TLS") ? getenv("UCX_TLS") : "(default)");
    printf("%-34s %10s\n", "measure", "ms/step");
    printf("%-34s %10.2f\n", "dense (one micro-batch)", dense * 1e3);
    printf("%-34s %10.2f\n", "attention + exchange (one mb)", attn * 1e3);
    printf("%-34s %10.2f\n", "sequential step (one mb)", s1.step_s / s1.steps * 1e3);
    printf("%-34s %10.2f\n", "dense (two micro-batches)", dense2 * 1e3);
    printf("%-34s %10.2f\n", "blocked in wait (two mb)", s2.wait_s / s2.steps * 1e3);
    printf("%-34s %10.2f   ratio over max(dense, attn+exch): %.3f\n", "two micro-batches", t2 * 1e3, ratio);
    printf("%-34s %10s   over max(two-mb dense, attn+exch): %.3f\n", "", "", t2 / bound2);
    json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:s, s:f, s:i, s:i, s:f, s:f, s:f, s:f, s:f}", "name",
                                         "pipeline_step", "metric", "step_ms", "value", t2 * 1e3, "ceiling",
                                         bound * 1e3, "ceiling_name", "max(dense, attention+exchange)", "ratio",
                                         ratio, "batch", B, "ctx", ctx, "dense_ms", dense * 1e3, "attn_exchange_ms",
                                         attn * 1e3, "sequential_ms", s1.step_s / s1.steps * 1e3, "dense_2mb_ms",
                                         dense2 * 1e3, "ratio_2mb_dense", t2 / bound2));
    rc = 0;
done:
    lam_pipe_destroy(p1);
    lam_pipe_destroy(p2);
    lam_backend_destroy(be);
    cluster_stop(&cl);
    return rc;
}

int bench_pipeline(const bench_opts_t *o)
{
    lam_gguf_t *g = NULL;
    lam_model_t *m = NULL;
    if (bench_open_model(o, true, &g, &m))
        return 1;
    /* micro-batching streams the weights once per micro-batch: the larger
     * batches show how that cost amortises */
    const int batches[] = {16, 32, 64};
    int n_b = o->batch ? 1 : o->quick ? 1 : 3, rc = 0;
    json_t *res = json_array();
    for (int i = 0; i < n_b && rc == 0; i++)
        rc = pipeline_batch(o, m, o->batch ? o->batch : batches[i], res);
    if (rc == 0 && o->json)
        rc = bench_write_json(o, "pipeline", res);
    else
        json_decref(res);
    lam_model_free(m);
    lam_gguf_close(g);
    return rc;
}

typedef struct count {
    long tokens;
    int failed;
} count_t;

static void cnt_token(void *ud, int req, int32_t t)
{
    (void)req;
    (void)t;
    ((count_t *)ud)->tokens++;
}

static void cnt_done(void *ud, int req, lam_status_t st)
{
    (void)req;
    ((count_t *)ud)->failed += st != LAM_OK;
}

/* Offloaded decode tokens/s for `batch` sequences (prompt, gen as the
 * reference shapes): time from the first all-decode step to the end. */
static double offload_tps(lam_pipe_t *p, lam_remote_t *r, int vocab, int batch, int prompt, int gen)
{
    count_t cnt = {0};
    lam_sched_opts_t so = {.max_seqs = batch, .max_queue = batch, .chunk = prompt, .max_step_tokens = batch * prompt,
                           .max_ctx = prompt + gen + 1};
    lam_sched_hooks_t h = {cnt_token, cnt_done, NULL, &cnt};
    lam_sched_t *s = NULL;
    if (lam_sched_create(p, r, vocab, &so, &h, &s) != LAM_OK)
        return -1;
    int32_t *pr = malloc((size_t)prompt * sizeof *pr);
    lam_sampler_params_t greedy = {.temperature = 0.0f, .top_p = 1.0f};
    for (int b = 0; b < batch; b++) {
        for (int t = 0; t < prompt; t++)
            pr[t] = 1000 + ((b * prompt + t) * 7919) % 20000;
        lam_sched_submit(s, pr, prompt, gen, &greedy);
    }
    lam_sched_step(s); /* the prompts (and the first token) */
    long t_first = cnt.tokens;
    double t0 = lam_now_s();
    while (lam_sched_pending(s) > 0)
        if (lam_sched_step(s) == 0)
            break;
    double dt = lam_now_s() - t0;
    long decoded = cnt.tokens - t_first;
    free(pr);
    lam_sched_destroy(s);
    return cnt.failed || dt <= 0 ? -1 : decoded / dt;
}

int bench_offload(const bench_opts_t *o)
{
    lam_gguf_t *g = NULL;
    lam_model_t *m = NULL;
    if (bench_open_model(o, true, &g, &m))
        return 1;
    const int shapes[][3] = {{1, 1, 64}, {16, 16, 32}};
    int node_threads = bench_node_threads(o);
    json_t *res = json_array();
    printf("end-to-end decode, offloaded (1 attention node, %d threads, f16 KV) vs reference engine, %d threads\n",
           node_threads, o->threads);
    printf("%-12s %14s %14s %8s\n", "shape", "offload tok/s", "engine tok/s", "ratio");
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        int B = shapes[i][0], P = shapes[i][1], G = shapes[i][2];
        cluster_t cl;
        lam_backend_t *be = NULL;
        lam_pipe_t *p = NULL;
        lam_pipe_opts_t po = {.max_tokens = B * P, .max_seqs = B};
        if (cluster_start(&cl, o, m, 1, node_threads, B * P, B, 0) != 0 ||
            lam_backend_cpu_create(m, false, &be) != LAM_OK ||
            lam_pipe_create(be, cl.r, &po, &p) != LAM_OK) {
            rc = 1;
        } else {
            double off = offload_tps(p, cl.r, m->cfg.vocab, B, P, G);
            double ref = bench_engine_decode_tps(m, B, P, G);
            double ratio = ref > 0 ? off / ref : 0;
            printf("decode_b%-4d %14.1f %14.1f %8.3f\n", B, off, ref, ratio);
            char name[32];
            snprintf(name, sizeof name, "decode_b%d", B);
            json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:s, s:f, s:i}", "name", name, "metric",
                                                 "tokens_per_s", "value", off, "ceiling", ref, "ceiling_name",
                                                 "reference_engine", "ratio", ratio, "batch", B));
            rc = off > 0 ? 0 : 1;
        }
        lam_pipe_destroy(p);
        lam_backend_destroy(be);
        cluster_stop(&cl);
    }
    if (rc == 0 && o->json)
        rc = bench_write_json(o, "offload", res);
    else
        json_decref(res);
    lam_model_free(m);
    lam_gguf_close(g);
    return rc;
}
