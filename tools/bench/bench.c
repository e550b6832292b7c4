/* lamina-bench: benchmarks that print a ratio against a ceiling measured in
 * the same run, and optionally write the results as JSON.
 *
 *   lamina-bench reference [--model M] [--threads N] [--no-peer] [--json FILE]
 *     reference-engine decode tokens/s at batch 1 and 16 on the model, next
 *     to llama.cpp (scripts/peer/bench-llama-cpp.sh: llama-bench and
 *     llama-batched-bench) on the same model and thread count.
 *
 *   lamina-bench memory [--model M] [--threads N] [--json FILE]
 *     the machine's streaming-read bandwidth (the ceiling), and the weight
 *     bytes the reference engine reads per second at batch-1 decode, as a
 *     ratio of it. The streaming rate is the JSON's "mem_gbps" result, which
 *     calibrates lamina-estimate's eff_mem; the engine's rate ("weight_gbps")
 *     is not, since multiplying from Q4_1/Q8_0 blocks made batch 1 bound by
 *     expanding them rather than by memory. */
#include "common/dtype.h"
#include "common/gguf.h"
#include "common/log.h"
#include "common/model.h"
#include "common/proc.h"
#include "compute_node/dense.h"
#include "compute_node/engine.h"
#include "compute_node/generate.h"
#include "tools/bench/bench.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


/* Shapes match the peer's commands: llama-bench -p 0 -n 64 (one sequence,
 * 64 decode steps), llama-batched-bench -npp 16 -ntg 32 -npl 16. */
typedef struct shape {
    const char *name;
    int batch, prompt, gen;
    const char *peer_key;
} shape_t;

static const shape_t g_shapes[] = {
    {"decode_b1", 1, 1, 64, "llama_cpp_tg_b1_tps"},
    {"decode_b16", 16, 16, 32, "llama_cpp_tg_b16_tps"},
};
#define N_SHAPES (sizeof g_shapes / sizeof g_shapes[0])

static double run_shape(const lam_model_t *m, const shape_t *s)
{
    return bench_engine_decode_tps(m, s->batch, s->prompt, s->gen);
}

double bench_engine_decode_tps(const lam_model_t *m, int batch, int prompt, int gen)
{
    const shape_t shape = {"", batch, prompt, gen, ""}, *s = &shape;
    lam_engine_opts_t eo = {.n_slots = s->batch, .max_ctx = s->prompt + s->gen + 1, .max_batch_tokens = 512};
    lam_engine_t *e = NULL;
    if (lam_engine_create(m, &eo, &e) != LAM_OK)
        return -1.0;
    lam_gen_seq_t *seqs = calloc((size_t)s->batch, sizeof *seqs);
    int32_t *prompts = malloc((size_t)s->batch * s->prompt * sizeof *prompts);
    int32_t *outs = malloc((size_t)s->batch * s->gen * sizeof *outs);
    for (int i = 0; i < s->batch * s->prompt; i++)
        prompts[i] = 1000 + (i * 7919) % 20000; /* arbitrary ordinary tokens */
    for (int b = 0; b < s->batch; b++)
        seqs[b] = (lam_gen_seq_t){.prompt = prompts + b * s->prompt, .n_prompt = s->prompt, .max_new = s->gen,
                                  .sp = {.temperature = 0.0f, .top_p = 1.0f}, .out = outs + b * s->gen};
    lam_gen_stats_t st = {0};
    lam_status_t rc = lam_generate_batch(e, seqs, s->batch, NULL, &st);
    free(seqs);
    free(prompts);
    free(outs);
    lam_engine_free(e);
    if (rc != LAM_OK || st.decode_s <= 0)
        return -1.0;
    return (double)st.decode_tokens / st.decode_s;
}

/* Runs the llama.cpp peer; fills tps[] in g_shapes order (0 if missing). */
static bool run_peer(const bench_opts_t *o, double *tps)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s/scripts/peer/bench-llama-cpp.sh' '%s' %d", LAM_SOURCE_DIR, o->model, o->threads);
    FILE *p = popen(cmd, "r");
    if (!p)
        return false;
    char line[256], key[64];
    double v;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, "%63s %lf", key, &v) == 2)
            for (size_t i = 0; i < N_SHAPES; i++)
                if (!strcmp(key, g_shapes[i].peer_key))
                    tps[i] = v;
    int rc = pclose(p);
    return rc == 0;
}

/* Opens and loads the model (blocks_only: as a CPU compute node loads it);
 * the reader and loader log why on failure. */
int bench_open_model(const bench_opts_t *o, bool blocks_only, lam_gguf_t **g, lam_model_t **m)
{
    char err[512];
    if (lam_gguf_open(o->model, g, err, sizeof err) != LAM_OK)
        return 1;
    lam_model_load_opts_t lo = {.blocks_only = blocks_only};
    if (lam_model_load_opts(*g, &lo, m) != LAM_OK) {
        lam_gguf_close(*g);
        *g = NULL;
        return 1;
    }
    return 0;
}

static int bench_reference(const bench_opts_t *o)
{
    lam_gguf_t *g = NULL;
    lam_model_t *m = NULL;
    if (bench_open_model(o, true, &g, &m))
        return 1;
    double ours[N_SHAPES], peer[N_SHAPES] = {0};
    run_shape(m, &g_shapes[0]); /* warm-up: page in weights, start threads */
    for (size_t i = 0; i < N_SHAPES; i++)
        ours[i] = run_shape(m, &g_shapes[i]);
    bool have_peer = o->peer && run_peer(o, peer);
    if (o->peer && !have_peer)
        fprintf(stderr, "lamina-bench: the llama.cpp peer did not run (scripts/peer/build-llama-cpp.sh)\n");

    printf("reference engine vs llama.cpp, %d threads, %s\n", o->threads, o->model);
    printf("%-12s %6s %8s %6s %14s %16s %8s\n", "shape", "batch", "prompt", "gen", "lamina tok/s", "llama.cpp tok/s",
           "ratio");
    json_t *res = json_array();
    for (size_t i = 0; i < N_SHAPES; i++) {
        const shape_t *s = &g_shapes[i];
        double ratio = have_peer && peer[i] > 0 ? ours[i] / peer[i] : 0.0;
        printf("%-12s %6d %8d %6d %14.1f ", s->name, s->batch, s->prompt, s->gen, ours[i]);
        if (have_peer && peer[i] > 0)
            printf("%16.1f %8.3f\n", peer[i], ratio);
        else
            printf("%16s %8s\n", "n/a", "n/a");
        json_t *r = json_pack("{s:s, s:s, s:f, s:i, s:i, s:i, s:i}", "name", s->name, "metric", "decode_tokens_per_s",
                              "value", ours[i], "batch", s->batch, "prompt", s->prompt, "gen", s->gen,
                              "threads", o->threads);
        if (have_peer && peer[i] > 0) {
            json_object_set_new(r, "ceiling", json_real(peer[i]));
            json_object_set_new(r, "ceiling_name", json_string("llama.cpp"));
            json_object_set_new(r, "ratio", json_real(ratio));
        }
        json_array_append_new(res, r);
    }
    int rc = o->json ? bench_write_json(o, "reference", res) : 0;
    if (!o->json)
        json_decref(res);
    lam_model_free(m);
    lam_gguf_close(g);
    return rc;
}

/* Best of several passes of a parallel sum over a buffer much larger than
 * the caches: the streaming-read bandwidth in GB/s. */
double bench_stream_read_gbps(size_t bytes)
{
    size_t n = bytes / sizeof(float);
    float *buf = malloc(n * sizeof *buf);
    if (!buf)
        return -1.0;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)(i & 1023);
    double best = 0.0;
    volatile float sink = 0.0f;
    for (int rep = 0; rep < 6; rep++) {
        double t0 = lam_now_s();
        float total = 0.0f;
#pragma omp parallel for simd schedule(static) reduction(+ : total)
        for (size_t i = 0; i < n; i++)
            total += buf[i];
        double dt = lam_now_s() - t0;
        sink += total;
        if (dt > 0 && bytes / dt / 1e9 > best)
            best = bytes / dt / 1e9;
    }
    (void)sink;
    free(buf);
    return best;
}

int bench_write_json(const bench_opts_t *o, const char *mode, json_t *res)
{
    char host[256] = "unknown";
    gethostname(host, sizeof host - 1);
    json_t *doc = json_pack("{s:s, s:s, s:s, s:I, s:o}", "tool", "lamina-bench", "mode", mode, "machine", host,
                            "unix_time", (json_int_t)time(NULL), "results", res);
    json_object_set_new(doc, "model", json_string(o->model));
    int rc = 0;
    if (json_dump_file(doc, o->json, JSON_INDENT(2)) != 0) {
        fprintf(stderr, "lamina-bench: cannot write %s\n", o->json);
        rc = 1;
    }
    json_decref(doc);
    return rc;
}

static int bench_memory(const bench_opts_t *o)
{
    lam_gguf_t *g = NULL;
    lam_model_t *m = NULL;
    if (bench_open_model(o, true, &g, &m))
        return 1;
    size_t stream_bytes = (size_t)1 << 30;
    double ceiling = bench_stream_read_gbps(stream_bytes);
    run_shape(m, &g_shapes[0]); /* warm-up */
    double tps = run_shape(m, &g_shapes[0]);
    /* every matrix (the LM head included) is read once per decode step */
    double step_bytes = (double)lam_dense_step_bytes(m);
    double achieved = tps * step_bytes / 1e9;
    double ratio = ceiling > 0 ? achieved / ceiling : 0.0;
    printf("memory bandwidth, %d threads, %s\n", o->threads, o->model);
    printf("%-22s %12s %12s %8s\n", "measure", "GB/s", "ceiling", "ratio");
    printf("%-22s %12.2f %12s %8s\n", "stream_read (1 GiB)", ceiling, "-", "-");
    printf("%-22s %12.2f %12.2f %8.3f   (%.1f tok/s x %.0f MiB of weights)\n", "weight_stream_b1", achieved,
           ceiling, ratio, tps, step_bytes / 1048576.0);
    int rc = 0;
    if (o->json) {
        json_t *res = json_array();
        json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:I, s:i}", "name", "stream_read", "metric",
                                             "mem_gbps", "value", ceiling, "bytes", (json_int_t)stream_bytes,
                                             "threads", o->threads));
        json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:s, s:f, s:I, s:f, s:i}", "name",
                                             "weight_stream_b1", "metric", "weight_gbps", "value", achieved, "ceiling",
                                             ceiling, "ceiling_name", "stream_read", "ratio", ratio, "bytes",
                                             (json_int_t)step_bytes, "tokens_per_s", tps, "threads", o->threads));
        rc = bench_write_json(o, "memory", res);
    }
    lam_model_free(m);
    lam_gguf_close(g);
    return rc;
}

int bench_parse_cpus(const char *s, cpu_set_t *set)
{
    CPU_ZERO(set);
    long ncpu = sysconf(_SC_NPROCESSORS_CONF);
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long a = strtol(p, &end, 10), b = a;
        if (errno || end == p || a < 0)
            return -1;
        p = end;
        if (*p == '-') {
            b = strtol(p + 1, &end, 10);
            if (errno || end == p + 1 || b < a)
                return -1;
            p = end;
        }
        if (b >= ncpu || b >= CPU_SETSIZE)
            return -1;
        for (long c = a; c <= b; c++)
            CPU_SET((int)c, set);
        if (*p == ',' && p[1])
            p++;
        else if (*p)
            return -1;
    }
    return CPU_COUNT(set) > 0 ? 0 : -1;
}

int bench_start_node(const bench_opts_t *o, lam_proc_t *p, const char *bin, const char *const *args)
{
    cpu_set_t mine;
    bool pin = o->node_cpus_str != NULL && sched_getaffinity(0, sizeof mine, &mine) == 0;
    /* the child inherits the starting thread's CPUs */
    if (pin && sched_setaffinity(0, sizeof o->node_cpus, &o->node_cpus) != 0) {
        lam_log_error("bench: cannot run a node on CPUs %s: %s", o->node_cpus_str, strerror(errno));
        return -1;
    }
    int rc = lam_proc_start(p, bin, args, 60.0);
    if (pin)
        sched_setaffinity(0, sizeof mine, &mine);
    return rc;
}

int bench_node_threads(const bench_opts_t *o)
{
    if (o->node_cpus_str)
        return CPU_COUNT(&o->node_cpus);
    return o->threads > 1 ? o->threads / 2 : 1;
}

const char *bench_taskset(const bench_opts_t *o, bool node)
{
    static char buf[2][300];
    const char *l = node ? o->node_cpus_str : o->compute_cpus_str;
    if (!l)
        return "";
    snprintf(buf[node], sizeof buf[node], "taskset -c %s ", l);
    return buf[node];
}

static void usage(FILE *f)
{
    fprintf(f, "usage: lamina-bench MODE [options]\n"
               "modes:\n"
               "  reference    reference-engine decode tokens/s at batch 1 and 16 vs llama.cpp\n"
               "  memory       streaming-read bandwidth, and weight bytes/s at batch-1 decode over it\n"
               "  attention    paged-attention decode K+V bytes/s (fp16 KV) over streaming-read bandwidth\n"
               "  exchange     per-layer q/k/v -> o round trip to an attention node over ucx_perftest\n"
               "  pipeline     two-micro-batch decode step over max(dense, attention + exchange)\n"
               "  offload      end-to-end decode tokens/s, offloaded vs the reference engine\n"
               "  serve        HTTP streaming clients: tokens/s, TTFT, TPOT; tokens/s over the\n"
               "               in-process scheduler on the same work\n"
               "  gpu-attention  CUDA paged attention K+V bytes/s over the device copy bandwidth\n"
               "  gpu-dense    CUDA dense step: batch 1 weight bytes/s over copy bandwidth, batch 256\n"
               "               TFLOP/s over a cuBLAS GEMM (the model and a random LLaMA-3-8B shape)\n"
               "  gpu-e2e      decode tokens/s: GPU compute + CPU attention node vs monolithic GPU\n"
               "               (GPU modes exit 3 without a usable GPU or CUDA)\n"
               "options:\n"
               "  -m, --model PATH   GGUF model (default: the shipped SmolLM2 in ~/.cache/lamina)\n"
               "  -t, --threads N    threads for both engines (default: all cores)\n"
               "      --no-peer      do not run llama.cpp (no ratio)\n"
               "      --quick        fewer sizes and repetitions (a smoke run)\n"
               "      --json FILE    also write the results as JSON\n"
               "  serve: --clients N (16), --gen N tokens per request (64),\n"
               "         --server HOST:PORT (an existing server; default: start one)\n"
               "  gpu-e2e: --ctx LIST (4096,8192,16384,32768), --batch N sequences (4),\n"
               "         --random-weights (random device weights of the model's shape)\n"
               "  attention: --page-tokens N (default: the attention node's, 64)\n"
               "  pipeline: --batch N (default: 16, 32, 64); exchange: --batch N (1, 16, 64)\n"
               "  exchange, pipeline, offload:\n"
               "         --node-cpus LIST     run the attention nodes on these CPUs (\"1\", \"8-15\")\n"
               "         --compute-cpus LIST  run this process (the compute side) on these CPUs;\n"
               "                              --threads defaults to their count\n"
               "         --spin-us N          nodes and compute side poll the network this long\n"
               "                              before sleeping (0)\n"
               "         --wire-dtype T       q/k/v/o on the wire: f16 (default), bf16 or f32\n");
}

int main(int argc, char **argv)
{
    enum { O_NOPEER = 256, O_JSON, O_QUICK, O_CLIENTS, O_GEN, O_SERVER, O_CTX, O_BATCH, O_RANDOM, O_NODE_CPUS,
           O_COMPUTE_CPUS, O_SPIN, O_PAGE, O_WIRE };
    static const struct option lopts[] = {{"model", required_argument, 0, 'm'}, {"threads", required_argument, 0, 't'},
                                          {"no-peer", no_argument, 0, O_NOPEER}, {"json", required_argument, 0, O_JSON},
                                          {"quick", no_argument, 0, O_QUICK},
                                          {"clients", required_argument, 0, O_CLIENTS},
                                          {"gen", required_argument, 0, O_GEN},
                                          {"server", required_argument, 0, O_SERVER},
                                          {"ctx", required_argument, 0, O_CTX},
                                          {"batch", required_argument, 0, O_BATCH},
                                          {"random-weights", no_argument, 0, O_RANDOM},
                                          {"node-cpus", required_argument, 0, O_NODE_CPUS},
                                          {"compute-cpus", required_argument, 0, O_COMPUTE_CPUS},
                                          {"spin-us", required_argument, 0, O_SPIN},
                                          {"page-tokens", required_argument, 0, O_PAGE},
                                          {"wire-dtype", required_argument, 0, O_WIRE},
                                          {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bench_opts_t o = {.peer = true, .threads = omp_get_num_procs(), .clients = 16, .gen = 64,
                      .wire_dtype = LAM_DT_F16};
    lam_model_default_path(o.model, sizeof o.model);
    if (argc < 2 || argv[1][0] == '-') {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *mode = argv[1];
    optind = 2;
    int c;
    bool threads_set = false;
    while ((c = getopt_long(argc, argv, "m:t:h", lopts, NULL)) != -1) {
        switch (c) {
        case 'm': snprintf(o.model, sizeof o.model, "%s", optarg); break;
        case 't': {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || *end || v < 1 || v > 4096) {
                fprintf(stderr, "lamina-bench: invalid thread count '%s'\n", optarg);
                return 2;
            }
            o.threads = (int)v;
            threads_set = true;
            break;
        }
        case O_NODE_CPUS:
        case O_COMPUTE_CPUS:
            if (bench_parse_cpus(optarg, c == O_NODE_CPUS ? &o.node_cpus : &o.compute_cpus) != 0) {
                fprintf(stderr, "lamina-bench: invalid CPU list '%s' (e.g. 1 or 0-3,8)\n", optarg);
                return 2;
            }
            *(c == O_NODE_CPUS ? &o.node_cpus_str : &o.compute_cpus_str) = optarg;
            break;
        case O_SPIN: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 0 || v > 1000000) {
                fprintf(stderr, "lamina-bench: invalid --spin-us '%s'\n", optarg);
                return 2;
            }
            o.spin_us = (int)v;
            break;
        }
        case O_WIRE:
            if ((o.wire_dtype = lam_dtype_parse(optarg)) < 0) {
                fprintf(stderr, "lamina-bench: invalid --wire-dtype '%s' (f16, bf16 or f32)\n", optarg);
                return 2;
            }
            break;
        case O_NOPEER: o.peer = false; break;
        case O_JSON: o.json = optarg; break;
        case O_QUICK: o.quick = true; break;
        case O_PAGE:
        case O_CLIENTS:
        case O_BATCH:
        case O_GEN: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 4096) {
                fprintf(stderr, "lamina-bench: invalid count '%s'\n", optarg);
                return 2;
            }
            *(c == O_CLIENTS ? &o.clients : c == O_BATCH ? &o.batch : c == O_PAGE ? &o.page_tokens : &o.gen) = (int)v;
            break;
        }
        case O_SERVER: o.server = optarg; break;
        case O_CTX: o.ctx_list = optarg; break;
        case O_RANDOM: o.random_weights = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    /* offload modes: see lamina-compute-node (libgomp spinning starves the
     * comm thread and the local attention nodes) */
    if (!strcmp(mode, "exchange") || !strcmp(mode, "pipeline") || !strcmp(mode, "offload") || !strcmp(mode, "serve") ||
        !strcmp(mode, "gpu-e2e"))
        lam_proc_reexec_with_env("GOMP_SPINCOUNT", "10000", argv);
    if (o.compute_cpus_str) {
        /* before any OpenMP region, so the thread pool inherits it */
        if (sched_setaffinity(0, sizeof o.compute_cpus, &o.compute_cpus) != 0) {
            fprintf(stderr, "lamina-bench: cannot run on CPUs %s: %s\n", o.compute_cpus_str, strerror(errno));
            return 2;
        }
        if (!threads_set)
            o.threads = CPU_COUNT(&o.compute_cpus);
    }
    omp_set_num_threads(o.threads);
    static const struct {
        const char *name;
        int (*run)(const bench_opts_t *);
    } modes[] = {{"reference", bench_reference}, {"memory", bench_memory}, {"exchange", bench_exchange},
                 {"pipeline", bench_pipeline}, {"offload", bench_offload}, {"attention", bench_attention},
                 {"serve", bench_serve}, {"gpu-attention", bench_gpu_attention}, {"gpu-dense", bench_gpu_dense},
                 {"gpu-e2e", bench_gpu_e2e}};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(mode, modes[i].name))
            return modes[i].run(&o);
    fprintf(stderr, "lamina-bench: unknown mode '%s'\n", mode);
    usage(stderr);
    return 2;
}
