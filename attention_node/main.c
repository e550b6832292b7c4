/* lamina-attention-node: holds the KV cache of one shard of a model's KV
 * heads and runs attention for compute nodes (attention_node/server.h).
 * Reads only the model's configuration and fingerprint, never its weights.
 *
 * Options come from one table (g_opts): config file (--config), LAMINA_<NAME>
 * environment, command line (common/config.h). Under systemd (Type=notify)
 * it reports STATUS while it loads, READY=1 once the KV pool is allocated
 * and the listener is up, STOPPING=1 on SIGTERM.
 *
 * Exit status: 0 after SIGTERM/SIGINT, 2 for a bad configuration (command
 * line, config file, environment) or one that cannot work (shards, token,
 * capacity), 1 for failures at run time (model file, memory, transport). */
#include "attention_node/server.h"
#include "common/config.h"
#include "common/dtype.h"
#include "common/gguf.h"
#include "common/log.h"
#include "common/model.h"
#include "common/notify.h"
#include "common/parse.h"
#include "proto/auth.h"

#include <omp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "lamina-attention-node"

typedef struct opts {
    char *model;
    char *listen;
    int port;
    char *shard;              /* "I/N", checked by check_shard */
    int kv_dtype;             /* index in g_dtypes */
    size_t kv_capacity;
    int page_tokens, max_ctx, max_seqs, max_batch_tokens; /* max_ctx 0: the model's */
    char *token_file;
    int threads;              /* 0: all cores */
    int log_level;            /* lam_log_level_t */
    int spin_us;
    int device;               /* index in g_devices */
} opts_t;

static const char *const g_dtypes[] = {"f16", "bf16", "f32", NULL};
static const char *const g_levels[] = {"debug", "info", "warn", "error", "quiet", NULL};
static const char *const g_devices[] = {"cpu", "cuda", NULL};

/* "I/N" with 0 <= I < N <= 65535 */
static bool parse_shard(const char *s, int *index, int *count)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s)
        return false;
    char a[32];
    size_t n = (size_t)(slash - s);
    if (n >= sizeof a)
        return false;
    memcpy(a, s, n);
    a[n] = '\0';
    if (!lam_parse_int(a, 0, 65534, index) || !lam_parse_int(slash + 1, 1, 65535, count))
        return false;
    return *index < *count;
}

static bool check_shard(const char *text, void *field, char *why, size_t why_len)
{
    int i, n;
    if (parse_shard(text, &i, &n))
        return true;
    snprintf(why, why_len, "not a shard I/N with 0 <= I < N <= 65535");
    return false;
}

static bool check_nonempty(const char *text, void *field, char *why, size_t why_len)
{
    if (*text)
        return true;
    snprintf(why, why_len, "must not be empty");
    return false;
}

#define OPT(field) offsetof(opts_t, field)

/* One row per option: the config file key, --name and LAMINA_<NAME>.
 * The model's default depends on the environment, so it is filled in at
 * startup (row 0). */
static lam_cfg_opt_t g_opts[] = {
    {"model", 'm', LAM_CFG_STRING, OPT(model), NULL, 0, 0, NULL, "PATH",
     "GGUF model; only its configuration and fingerprint are read\n"
     "(default from $LAMINA_MODEL_DIR or ~/.cache/lamina)", check_nonempty},
    {"listen", 'l', LAM_CFG_STRING, OPT(listen), "127.0.0.1", 0, 0, NULL, "ADDR", "address to listen on",
     check_nonempty},
    {"port", 'p', LAM_CFG_INT, OPT(port), "7400", 0, 65535, NULL, NULL, "port (0 = any free port)", NULL},
    {"shard", 0, LAM_CFG_STRING, OPT(shard), "0/1", 0, 0, NULL, "I/N",
     "this node is shard I of N; N must divide the model's KV heads", check_shard},
    {"kv-dtype", 0, LAM_CFG_ENUM, OPT(kv_dtype), "f16", 0, 0, g_dtypes, NULL, "KV cache element type", NULL},
    {"kv-capacity", 0, LAM_CFG_SIZE, OPT(kv_capacity), "1G", 1, (double)SIZE_MAX, NULL, NULL,
     "memory for KV pages, e.g. 512M, 2G; allocated at start", NULL},
    {"page-tokens", 0, LAM_CFG_INT, OPT(page_tokens), "64", 1, 65536, NULL, NULL, "tokens per KV page", NULL},
    {"max-ctx", 0, LAM_CFG_INT, OPT(max_ctx), NULL, 1, 1 << 24, NULL, NULL,
     "longest sequence (not set: the model's context length)", NULL},
    {"max-seqs", 0, LAM_CFG_INT, OPT(max_seqs), "256", 1, 1 << 24, NULL, NULL, "sequences held at once", NULL},
    {"max-batch-tokens", 0, LAM_CFG_INT, OPT(max_batch_tokens), "2048", 1, 65536, NULL, NULL,
     "tokens per ATTN message (sizes the buffers)", NULL},
    {"token-file", 0, LAM_CFG_STRING, OPT(token_file), NULL, 0, 0, NULL, "PATH",
     "cluster token: the file's first line (not set: $LAMINA_CLUSTER_TOKEN)", check_nonempty},
    {"threads", 't', LAM_CFG_INT, OPT(threads), NULL, 1, 4096, NULL, NULL,
     "OpenMP threads for attention (not set: all cores)", NULL},
    {"log-level", 0, LAM_CFG_ENUM, OPT(log_level), "info", 0, 0, g_levels, NULL, "log verbosity on stderr", NULL},
    {"spin-us", 0, LAM_CFG_INT, OPT(spin_us), "0", 0, 1000000, NULL, NULL,
     "poll this long after the last message before sleeping\n(0 = always sleep; for dedicated cores)", NULL},
    {"device", 0, LAM_CFG_ENUM, OPT(device), "cpu", 0, 0, g_devices, NULL,
     "where the KV cache lives and attention runs: cpu (host memory)\nor cuda (GPU memory; CUDA_VISIBLE_DEVICES picks the GPU)", NULL},
};

static const lam_cfg_spec_t g_spec = {
    PROG, "[options]",
    "Prints '" PROG ": listening on ADDR:PORT' on stdout once it serves.\n"
    "Exit status: 0 after SIGTERM/SIGINT, 2 for a bad configuration, 1 for failures at run time.",
    g_opts, (int)(sizeof g_opts / sizeof g_opts[0]),
};

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) { g_stop = sig; }

/* Everything after the configuration: returns the exit status. */
static int serve(const opts_t *o)
{
    int shard_index = 0, shard_count = 1;
    parse_shard(o->shard, &shard_index, &shard_count); /* checked when it was set */
    int kv_dtype = lam_dtype_parse(g_dtypes[o->kv_dtype]);
    lam_log_set_level((lam_log_level_t)o->log_level);
    if (o->threads)
        omp_set_num_threads(o->threads);

    /* SIGTERM while the KV pool is being allocated still ends in a clean exit */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    static char token[1024];
    if (lam_auth_init() != LAM_OK)
        return 1;
    if (lam_auth_load_token(o->token_file, token, sizeof token) != LAM_OK)
        return 2; /* logged */

    lam_notify_status("Reading model configuration from %s", o->model);
    lam_gguf_t *g = NULL;
    char err[512];
    if (lam_gguf_open(o->model, &g, err, sizeof err) != LAM_OK) {
        fprintf(stderr, PROG ": cannot open model %s: %s\n", o->model, err);
        return 1;
    }
    lam_model_config_t mc;
    lam_status_t st = lam_model_config_from_gguf(g, &mc);
    uint64_t fingerprint = lam_gguf_fingerprint(g);
    lam_gguf_close(g);
    if (st != LAM_OK) {
        fprintf(stderr, PROG ": %s: not a usable model configuration (%s)\n", o->model, lam_status_str(st));
        return 1;
    }
    if (mc.n_kv_heads % shard_count) {
        fprintf(stderr, PROG ": --shard %d/%d: %d shards do not divide the model's %d KV heads\n", shard_index,
                shard_count, shard_count, mc.n_kv_heads);
        return 2;
    }

    lam_an_config_t cfg = {
        .fingerprint = fingerprint,
        .n_layers = mc.n_layers, .n_heads = mc.n_heads, .n_kv_heads = mc.n_kv_heads, .head_dim = mc.head_dim,
        .shard_index = shard_index, .shard_count = shard_count,
        .kv_dtype = kv_dtype, .kv_capacity = o->kv_capacity, .page_tokens = o->page_tokens,
        .max_ctx = o->max_ctx ? o->max_ctx : mc.max_ctx, .max_seqs = o->max_seqs,
        .max_batch_tokens = o->max_batch_tokens,
        .spin_us = o->spin_us,
        .device = o->device == 1 ? LAM_AN_DEVICE_CUDA : LAM_AN_DEVICE_CPU,
        .token = token, .listen_addr = o->listen, .port = o->port,
    };
    lam_log_info("attention node: model %s (%s, fingerprint %016llx), KV %s, capacity %.1f MiB, context %d",
                 o->model, mc.arch, (unsigned long long)fingerprint, lam_dtype_name((unsigned)kv_dtype),
                 o->kv_capacity / 1048576.0, cfg.max_ctx);
    lam_notify_status("Allocating %.1f MiB of KV pages", o->kv_capacity / 1048576.0);
    lam_an_server_t *s = NULL;
    /* a restarted node (systemd, an operator) must get its port back while
     * the old process's connections linger in TIME_WAIT */
    setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
    if ((st = lam_an_server_create(&cfg, &s)) != LAM_OK) {
        fprintf(stderr, PROG ": cannot start: %s\n", lam_status_str(st));
        /* no GPU, or a build without CUDA, for --device cuda: a configuration that cannot work */
        return st == LAM_ERR_CONFIG || st == LAM_ERR_NO_DEVICE || st == LAM_ERR_UNSUPPORTED ? 2 : 1;
    }
    memset(token, 0, sizeof token);

    int port = 0;
    if ((st = lam_an_server_listen(s, &port)) != LAM_OK) {
        fprintf(stderr, PROG ": cannot listen on %s:%d: %s\n", o->listen, o->port, lam_status_str(st));
        lam_an_server_destroy(s);
        return 1;
    }
    printf(PROG ": listening on %s:%d\n", o->listen, port);
    fflush(stdout);
    /* only now: the KV pool is allocated and compute nodes can connect */
    lam_notify_ready_status("Serving shard %d/%d on %s:%d (KV %s, %.1f MiB)", shard_index, shard_count, o->listen,
                            port, lam_dtype_name((unsigned)kv_dtype), o->kv_capacity / 1048576.0);

    if (!g_stop)
        st = lam_an_server_run(s, &g_stop);
    lam_notify_stopping();
    int rc = 0;
    if (g_stop) {
        lam_log_info("attention node: %s, shutting down", g_stop == SIGINT ? "SIGINT" : "SIGTERM");
    } else {
        lam_log_error("attention node: event loop failed: %s", lam_status_str(st));
        rc = 1;
    }
    lam_an_server_destroy(s);
    return rc;
}

int main(int argc, char **argv)
{
    static char model_default[4096];
    g_opts[0].def = lam_model_default_path(model_default, sizeof model_default);
    opts_t o;
    memset(&o, 0, sizeof o);
    char err[1024];
    bool shown = false;
    int rc;
    if (lam_cfg_load(&g_spec, &o, argc, argv, &shown, err, sizeof err) != LAM_OK) {
        fprintf(stderr, PROG ": %s\n", err);
        rc = 2;
    } else {
        rc = shown ? 0 : serve(&o);
    }
    lam_cfg_free(&g_spec, &o);
    return rc;
}
