/* lamina-bench internals shared by the mode files: options, the ceilings
 * every mode measures against, JSON output. */
#ifndef LAM_TOOLS_BENCH_H
#define LAM_TOOLS_BENCH_H

#include <jansson.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/gguf.h"
#include "common/model.h"

typedef struct bench_opts {
    char model[4096];
    int threads;
    bool peer;        /* run llama.cpp where a mode compares with it */
    bool quick;       /* fewer sizes and repetitions (smoke runs) */
    const char *json; /* also write results here */
    int clients;      /* serve: concurrent streaming clients */
    int gen;          /* serve: tokens per request */
    const char *server; /* serve: an existing server's host:port (NULL: start one) */
    const char *ctx_list; /* gpu-e2e: contexts, comma-separated (NULL: the default list) */
    int batch;          /* gpu-e2e: sequences (0: 4) */
    bool random_weights; /* gpu-e2e: random device weights of the model's shape */
    /* offload modes: CPUs of the attention nodes and of this process (the
     * compute side), as separate hosts would have; empty: no pinning */
    const char *node_cpus_str, *compute_cpus_str;
    cpu_set_t node_cpus, compute_cpus;
    int page_tokens;    /* attention: tokens per KV page (0: the node's default) */
    int spin_us;        /* offload modes: --spin-us of the nodes and the compute side */
    int wire_dtype;     /* offload modes: q/k/v/o dtype on the wire (lam_dtype_t; default f16) */
} bench_opts_t;

/* Parses a CPU list ("0-3,6") into *set; returns 0, or -1 if malformed or
 * beyond the machine's CPUs. */
int bench_parse_cpus(const char *s, cpu_set_t *set);

/* Starts a child process (lam_proc_start) on o's node CPUs if any are set. */
struct lam_proc;
int bench_start_node(const bench_opts_t *o, struct lam_proc *p, const char *bin, const char *const *args);

/* Threads per attention node: the node CPUs' count if set, else half of
 * o->threads (the node shares the cores). */
int bench_node_threads(const bench_opts_t *o);

/* "taskset -c LIST " for the node (node = true) or compute CPUs, or "". */
const char *bench_taskset(const bench_opts_t *o, bool node);

/* Opens and loads the model; logs why on failure and returns nonzero. */
int bench_open_model(const bench_opts_t *o, bool blocks_only, lam_gguf_t **g, lam_model_t **m);

/* Best of several parallel sums over `bytes` of memory: streaming-read GB/s
 * with the current OpenMP thread count. */
double bench_stream_read_gbps(size_t bytes);

/* Writes {"tool","mode","machine","unix_time","model","results": res} to
 * o->json; takes ownership of res. */
int bench_write_json(const bench_opts_t *o, const char *mode, json_t *res);

int bench_attention(const bench_opts_t *o);

/* Reference-engine decode tokens/s: batch sequences of `prompt` arbitrary
 * tokens, `gen` greedy tokens each. */
double bench_engine_decode_tps(const lam_model_t *m, int batch, int prompt, int gen);

/* Attention-offload modes (bench_offload.c). */
int bench_exchange(const bench_opts_t *o);
int bench_pipeline(const bench_opts_t *o);
int bench_offload(const bench_opts_t *o);

/* The HTTP service under concurrent streaming clients (bench_serve.c). */
int bench_serve(const bench_opts_t *o);

/* GPU modes (bench_gpu.c, bench_gpu_e2e.c): exit status 3 without a GPU. */
int bench_gpu_attention(const bench_opts_t *o);
int bench_gpu_dense(const bench_opts_t *o);
int bench_gpu_e2e(const bench_opts_t *o);

#endif
