/* lamina-attention-node: holds the KV cache of one shard of a model's KV
 * heads and runs attention for compute nodes (attention_node/server.h).
 * Reads only the model's configuration and fingerprint, never its weights.
 *
 * Exit status: 0 after SIGTERM/SIGINT, 2 for a bad command line or a
 * configuration that cannot work (shards, token, capacity), 1 for failures
 * at run time (model file, memory, transport). */
#include "attention_node/server.h"
#include "common/dtype.h"
#include "common/gguf.h"
#include "common/log.h"
#include "common/parse.h"
#include "common/model.h"
#include "proto/auth.h"

#include <errno.h>
#include <getopt.h>
#include <omp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "lamina-attention-node"

typedef struct opts {
    char model[4096];
    const char *listen;
    const char *token_file;
    int port;
    int shard_index, shard_count;
    int kv_dtype;
    size_t kv_capacity;
    int page_tokens, max_ctx, max_seqs, max_batch_tokens, threads, spin_us;
    lam_log_level_t log_level;
} opts_t;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) { g_stop = sig; }

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " [options]\n"
            "  -m, --model PATH          GGUF model; only its configuration is read (default:\n"
            "                            $LAMINA_MODEL_DIR or ~/.cache/lamina, SmolLM2-135M-Instruct.Q4_1.gguf)\n"
            "  -l, --listen ADDR         address to listen on (default 127.0.0.1)\n"
            "  -p, --port N              port (default 7400; 0 = any free port)\n"
            "      --shard I/N           this node is shard I of N; N must divide the model's KV heads\n"
            "                            (default 0/1)\n"
            "      --kv-dtype T          f16, bf16 or f32 (default f16)\n"
            "      --kv-capacity SIZE    memory for KV pages, e.g. 512M, 2G (default 1G)\n"
            "      --page-tokens N       tokens per KV page (default 16)\n"
            "      --max-ctx N           longest sequence (default: the model's context length)\n"
            "      --max-seqs N          sequences held at once (default 256)\n"
            "      --max-batch-tokens N  tokens per ATTN message (default 2048)\n"
            "      --token-file PATH     cluster token (first line; else LAMINA_CLUSTER_TOKEN)\n"
            "  -t, --threads N           OpenMP threads (default: all cores)\n"
            "      --log-level L         debug, info, warn or error (default info)\n"
            "      --spin-us N           poll this long after the last message before sleeping\n"
            "                            (default 0 = always sleep; for dedicated cores)\n"
            "  -h, --help\n"
            "Prints '" PROG ": listening on ADDR:PORT' on stdout once it serves.\n");
}

/* "1073741824", "512K", "512M", "2G", "1T" (binary units; an optional
 * trailing "B" or "iB"). */
static bool parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if (shift && (!strcmp(end, "iB") || !strcmp(end, "B")))
        end += strlen(end);
    else if (!shift && !strcmp(end, "B"))
        end++;
    if (*end || v == 0 || v > (SIZE_MAX >> shift))
        return false;
    *out = (size_t)v << shift;
    return true;
}

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

static int parse_log_level(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i]))
            return i;
    return -1;
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    enum { O_SHARD = 256, O_KVDT, O_KVCAP, O_PAGE, O_CTX, O_SEQS, O_BATCH, O_TOKEN, O_LOG, O_SPIN };
    static const struct option lopts[] = {
        {"model", required_argument, 0, 'm'},        {"listen", required_argument, 0, 'l'},
        {"port", required_argument, 0, 'p'},         {"shard", required_argument, 0, O_SHARD},
        {"kv-dtype", required_argument, 0, O_KVDT},  {"kv-capacity", required_argument, 0, O_KVCAP},
        {"page-tokens", required_argument, 0, O_PAGE}, {"max-ctx", required_argument, 0, O_CTX},
        {"max-seqs", required_argument, 0, O_SEQS},  {"max-batch-tokens", required_argument, 0, O_BATCH},
        {"token-file", required_argument, 0, O_TOKEN}, {"threads", required_argument, 0, 't'},
        {"log-level", required_argument, 0, O_LOG},  {"spin-us", required_argument, 0, O_SPIN},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    lam_model_default_path(o->model, sizeof o->model);
    o->listen = "127.0.0.1";
    o->port = 7400;
    o->shard_count = 1;
    o->kv_dtype = LAM_DT_F16;
    o->kv_capacity = (size_t)1 << 30;
    o->page_tokens = 16;
    o->max_seqs = 256;
    o->max_batch_tokens = 2048;
    o->spin_us = 0;
    o->log_level = LAM_LOG_INFO;
    opterr = 0;
    int c, li = -1;
    while ((c = getopt_long(argc, argv, ":m:l:p:t:h", lopts, &li)) != -1) {
        bool ok = true;
        const char *hint = "";
        /* the option's name for messages: long form when it was used */
        char name[64];
        if (li >= 0)
            snprintf(name, sizeof name, "--%s", lopts[li].name);
        else
            snprintf(name, sizeof name, "-%c", c);
        li = -1;
        switch (c) {
        case 'm':
            ok = *optarg && strlen(optarg) < sizeof o->model;
            snprintf(o->model, sizeof o->model, "%s", optarg);
            break;
        case 'l': ok = *optarg != '\0'; o->listen = optarg; break;
        case 'p': ok = lam_parse_int(optarg, 0, 65535, &o->port), hint = " (0..65535)"; break;
        case O_SHARD:
            ok = parse_shard(optarg, &o->shard_index, &o->shard_count), hint = " (I/N with 0 <= I < N)";
            break;
        case O_KVDT: ok = (o->kv_dtype = lam_dtype_parse(optarg)) >= 0, hint = " (f16, bf16 or f32)"; break;
        case O_KVCAP: ok = parse_size(optarg, &o->kv_capacity), hint = " (bytes > 0, suffix K, M, G or T)"; break;
        case O_PAGE: ok = lam_parse_int(optarg, 1, 65536, &o->page_tokens), hint = " (1..65536)"; break;
        case O_CTX: ok = lam_parse_int(optarg, 1, 1 << 24, &o->max_ctx), hint = " (1..16777216)"; break;
        case O_SEQS: ok = lam_parse_int(optarg, 1, 1 << 24, &o->max_seqs), hint = " (1..16777216)"; break;
        case O_BATCH: ok = lam_parse_int(optarg, 1, 65536, &o->max_batch_tokens), hint = " (1..65536)"; break;
        case O_TOKEN: ok = *optarg != '\0'; o->token_file = optarg; break;
        case 't': ok = lam_parse_int(optarg, 1, 4096, &o->threads), hint = " (1..4096)"; break;
        case O_SPIN: ok = lam_parse_int(optarg, 0, 1000000, &o->spin_us), hint = " (0..1000000)"; break;
        case O_LOG: {
            int l = parse_log_level(optarg);
            ok = l >= 0;
            o->log_level = (lam_log_level_t)l;
            hint = " (debug, info, warn or error)";
            break;
        }
        case 'h': usage(stdout); exit(0);
        case ':':
            fprintf(stderr, PROG ": option '%s' needs a value\n", argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, PROG ": unknown option '%s' (see --help)\n", argv[optind - 1]);
            return -1;
        }
        if (!ok) {
            fprintf(stderr, PROG ": invalid value '%s' for option %s%s\n", optarg, name, hint);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts_t o = {0};
    if (parse_args(argc, argv, &o))
        return 2;
    lam_log_set_level(o.log_level);
    if (o.threads)
        omp_set_num_threads(o.threads);

    static char token[1024];
    if (lam_auth_init() != LAM_OK)
        return 1;
    if (lam_auth_load_token(o.token_file, token, sizeof token) != LAM_OK)
        return 2; /* logged */

    lam_gguf_t *g = NULL;
    char err[512];
    if (lam_gguf_open(o.model, &g, err, sizeof err) != LAM_OK) {
        fprintf(stderr, PROG ": cannot open model %s: %s\n", o.model, err);
        return 1;
    }
    lam_model_config_t mc;
    lam_status_t st = lam_model_config_from_gguf(g, &mc);
    uint64_t fingerprint = lam_gguf_fingerprint(g);
    lam_gguf_close(g);
    if (st != LAM_OK) {
        fprintf(stderr, PROG ": %s: not a usable model configuration (%s)\n", o.model, lam_status_str(st));
        return 1;
    }
    if (mc.n_kv_heads % o.shard_count) {
        fprintf(stderr, PROG ": --shard %d/%d: %d shards do not divide the model's %d KV heads\n", o.shard_index,
                o.shard_count, o.shard_count, mc.n_kv_heads);
        return 2;
    }

    lam_an_config_t cfg = {
        .fingerprint = fingerprint,
        .n_layers = mc.n_layers, .n_heads = mc.n_heads, .n_kv_heads = mc.n_kv_heads, .head_dim = mc.head_dim,
        .shard_index = o.shard_index, .shard_count = o.shard_count,
        .kv_dtype = o.kv_dtype, .kv_capacity = o.kv_capacity, .page_tokens = o.page_tokens,
        .max_ctx = o.max_ctx ? o.max_ctx : mc.max_ctx, .max_seqs = o.max_seqs,
        .max_batch_tokens = o.max_batch_tokens,
        .spin_us = o.spin_us,
        .token = token, .listen_addr = o.listen, .port = o.port,
    };
    lam_log_info("attention node: model %s (%s, fingerprint %016llx), KV %s, capacity %.1f MiB, context %d",
                 o.model, mc.arch, (unsigned long long)fingerprint, lam_dtype_name((unsigned)o.kv_dtype),
                 o.kv_capacity / 1048576.0, cfg.max_ctx);
    lam_an_server_t *s = NULL;
    /* a restarted node (systemd, an operator) must get its port back while
     * the old process's connections linger in TIME_WAIT */
    setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
    if ((st = lam_an_server_create(&cfg, &s)) != LAM_OK) {
        fprintf(stderr, PROG ": cannot start: %s\n", lam_status_str(st));
        return st == LAM_ERR_CONFIG ? 2 : 1;
    }
    memset(token, 0, sizeof token);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int port = 0;
    if ((st = lam_an_server_listen(s, &port)) != LAM_OK) {
        fprintf(stderr, PROG ": cannot listen on %s:%d: %s\n", o.listen, o.port, lam_status_str(st));
        lam_an_server_destroy(s);
        return 1;
    }
    printf(PROG ": listening on %s:%d\n", o.listen, port);
    fflush(stdout);

    lam_an_server_run(s, &g_stop);
    lam_log_info("attention node: %s, shutting down", g_stop == SIGINT ? "SIGINT" : "SIGTERM");
    lam_an_server_destroy(s);
    return 0;
}
