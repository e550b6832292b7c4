/* lamina-compute-node: serves a model over an OpenAI-compatible HTTP API
 * with attention offloaded to attention nodes (--attention host:port,...:
 * the dense layers run here, the KV cache and attention there), or, with
 * --prompt, generates text for one prompt and exits (offloaded, or in this
 * process on the reference engine with --local-attention).
 *
 * Options come from one table (common/config.h): defaults, --config FILE,
 * LAMINA_<NAME> environment variables, the command line. */
#include "common/config.h"
#include "common/gguf.h"
#include "common/log.h"
#include "common/notify.h"
#include "common/proc.h"
#include "common/model.h"
#include "common/tokenizer.h"
#include "compute_node/backend_cuda.h"
#include "compute_node/engine.h"
#include "compute_node/generate.h"
#include "compute_node/mono_cuda.h"
#include "compute_node/sched.h"
#include "compute_node/serve_run.h"
#include "compute_node/stack.h"

#include <errno.h>
#include <omp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG "lamina-compute-node"

typedef struct opts {
    char *model, *prompt, *system, *seed, *attention, *token_file;
    bool chat, local_attention;
    int max_new, threads, ctx, batch;
    float temperature, top_p;
    int top_k;
    int kv_dtype, wire_dtype;   /* lam_dtype_t; wire 3 ("auto") = same as kv */
    int attn_timeout_ms, connect_timeout_ms, spin_us;
    /* serving */
    char *http_listen, *api_key_file, *model_name;
    int http_port, max_seqs, max_queue, drain_timeout, recompute;
    size_t max_body;
    int device;                 /* index in DEVICES */
} opts_t;

static const char *const DTYPES[] = {"f32", "f16", "bf16", NULL};           /* lam_dtype_t order */
static const char *const WIRE_DTYPES[] = {"f32", "f16", "bf16", "auto", NULL};
#define WIRE_AUTO 3
static const char *const DEVICES[] = {"cpu", "cuda", NULL};
#define DEVICE_CUDA 1

static bool check_seed(const char *text, void *field, char *why, size_t why_len)
{
    (void)field;
    char *end;
    errno = 0;
    (void)strtoull(text, &end, 10);
    if (errno || end == text || *end || *text == '-') {
        snprintf(why, why_len, "not an unsigned integer");
        return false;
    }
    return true;
}

static bool check_addrs(const char *text, void *field, char *why, size_t why_len)
{
    (void)field;
    lam_remote_addr_t addrs[64];
    return lam_remote_parse_addrs(text, addrs, 64, why, why_len) > 0;
}

#define OPT(name, sh, type, field, def, lo, hi, meta, help) \
    {name, sh, type, offsetof(opts_t, field), def, lo, hi, NULL, meta, help, NULL}

static const lam_cfg_opt_t OPTIONS[] = {
    OPT("model", 'm', LAM_CFG_STRING, model, NULL, 0, 0, "PATH",
        "GGUF model (default: $LAMINA_MODEL_DIR or ~/.cache/lamina,\nSmolLM2-135M-Instruct.Q4_1.gguf)"),
    {"attention", 0, LAM_CFG_STRING, offsetof(opts_t, attention), NULL, 0, 0, NULL, "LIST",
     "attention nodes, host:port[,host:port...]; node i serves KV-head shard i of N\n"
     "(N must divide the KV head count). Needed to serve HTTP.", check_addrs},
    {"kv-dtype", 0, LAM_CFG_ENUM, offsetof(opts_t, kv_dtype), "f16", 0, 0, DTYPES, NULL,
     "KV dtype the attention nodes hold", NULL},
    {"wire-dtype", 0, LAM_CFG_ENUM, offsetof(opts_t, wire_dtype), "auto", 0, 0, WIRE_DTYPES, NULL,
     "q/k/v/o dtype on the wire (auto: the KV dtype)", NULL},
    OPT("token-file", 0, LAM_CFG_STRING, token_file, NULL, 0, 0, "PATH",
        "cluster token shared with the attention nodes (or $LAMINA_CLUSTER_TOKEN)"),
    OPT("attn-timeout", 0, LAM_CFG_INT, attn_timeout_ms, "30000", 1, 3600000, "MS",
        "per-layer attention deadline; a node that misses it is dropped"),
    OPT("connect-timeout", 0, LAM_CFG_INT, connect_timeout_ms, "10000", 1, 3600000, "MS",
        "how long to wait for the attention nodes at start"),
    OPT("spin-us", 0, LAM_CFG_INT, spin_us, "0", 0, 1000000, "N",
        "poll the network for attention results from the compute thread this long before sleeping"),
    OPT("threads", 't', LAM_CFG_INT, threads, NULL, 0, 4096, "N", "OpenMP threads (0: all cores)"),
    OPT("ctx", 'c', LAM_CFG_INT, ctx, "2048", 2, 1 << 24, "N", "context length per sequence (prompt + generated)"),
    OPT("batch", 0, LAM_CFG_INT, batch, "256", 1, 1 << 16, "N",
        "tokens per step, and the prompt chunk size (at least --max-seqs when serving)"),
    OPT("max-seqs", 0, LAM_CFG_INT, max_seqs, "32", 1, 4096, "N", "serving: sequences running at once"),
    OPT("max-queue", 0, LAM_CFG_INT, max_queue, "256", 0, 1 << 20, "N",
        "serving: requests waiting beyond --max-seqs; more get 429"),
    OPT("recompute-on-loss", 0, LAM_CFG_INT, recompute, "0", 0, 1000, "N",
        "when an attention node is lost, rebuild the KV of the running\nrequests by recomputation once it is back, at most N times per\nrequest (0: fail them at once)"),
    OPT("http-listen", 0, LAM_CFG_STRING, http_listen, "127.0.0.1", 0, 0, "ADDR",
        "serving: address to bind (0.0.0.0 or :: for every interface)"),
    OPT("http-port", 0, LAM_CFG_INT, http_port, "8080", 0, 65535, "N", "serving: HTTP port (0: any free port)"),
    OPT("api-key-file", 0, LAM_CFG_STRING, api_key_file, NULL, 0, 0, "PATH",
        "serving: file holding the API key; /v1/ requests must send\n\"Authorization: Bearer KEY\" (unset: no key)"),
    OPT("model-name", 0, LAM_CFG_STRING, model_name, NULL, 0, 0, "NAME",
        "serving: the model id /v1/models lists and requests name\n(default: the GGUF's general.name, else the file name)"),
    OPT("max-body", 0, LAM_CFG_SIZE, max_body, "1M", 1024, 1073741824, "SIZE",
        "serving: largest request body accepted (larger: 413)"),
    OPT("drain-timeout", 0, LAM_CFG_INT, drain_timeout, "30", 0, 86400, "S",
        "serving: on SIGTERM/SIGINT, let running requests finish this long,\nthen cancel the rest"),
    OPT("max-tokens", 'n', LAM_CFG_INT, max_new, "128", 0, 1 << 20, "N",
        "tokens to generate (serving: for requests without max_tokens)"),
    OPT("temperature", 0, LAM_CFG_FLOAT, temperature, "0.8", 0, 100, "F",
        "0 = greedy (serving: for requests without temperature)"),
    OPT("top-k", 0, LAM_CFG_INT, top_k, "40", 0, 1 << 24, "N", "0 = off (serving: for requests without top_k)"),
    OPT("top-p", 0, LAM_CFG_FLOAT, top_p, "0.95", 1e-6, 1, "F", "1 = off (serving: for requests without top_p)"),
    {"seed", 0, LAM_CFG_STRING, offsetof(opts_t, seed), NULL, 0, 0, NULL, "N",
     "one-shot sampling seed (default: from the clock)", check_seed},
    OPT("prompt", 'p', LAM_CFG_STRING, prompt, NULL, 0, 0, "TEXT", "generate for this prompt and exit (no HTTP)"),
    OPT("chat", 0, LAM_CFG_BOOL, chat, "true", 0, 0, NULL,
        "one-shot: wrap the prompt in the model's chat template\n(--no-chat: use it as raw text)"),
    OPT("system", 0, LAM_CFG_STRING, system, NULL, 0, 0, "TEXT", "one-shot: system message for the chat template"),
    OPT("local-attention", 0, LAM_CFG_BOOL, local_attention, NULL, 0, 0, NULL,
        "one-shot: run attention in this process (reference engine)"),
    {"device", 0, LAM_CFG_ENUM, offsetof(opts_t, device), "cpu", 0, 0, DEVICES, NULL,
     "where the dense layers run: cpu, or cuda (weights on the GPU; CUDA_VISIBLE_DEVICES\n"
     "picks it); with --local-attention, cuda runs the whole model on the GPU (monolithic)", NULL},
    /* new rows go here */
};

static const lam_cfg_spec_t SPEC = {
    PROG,
    "--attention HOST:PORT[,...] [options]              (serve the HTTP API)\n"
    "       " PROG " (--attention LIST | --local-attention) --prompt TEXT  (one prompt)",
    "Without --prompt the compute node serves POST /v1/completions, POST /v1/chat/completions,\n"
    "GET /v1/models, /health and /metrics on --http-listen:--http-port; serving needs\n"
    "--attention (the reference engine behind --local-attention runs one prompt only).\n"
    "SIGTERM/SIGINT drain the running requests (--drain-timeout) and exit 0.",
    OPTIONS,
    (int)(sizeof OPTIONS / sizeof OPTIONS[0]),
};

static int config_error(const char *fmt, const char *arg)
{
    fprintf(stderr, PROG ": ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: " PROG " --attention HOST:PORT[,...] [options]   (--help lists every option)\n");
    return -1;
}

/* The API key: the file's first line, without surrounding whitespace. */
static char *read_api_key(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        config_error("--api-key-file: cannot read '%s'", path);
        return NULL;
    }
    char line[1024];
    char *key = fgets(line, sizeof line, f) ? line : NULL;
    fclose(f);
    while (key && (*key == ' ' || *key == '\t'))
        key++;
    size_t n = key ? strcspn(key, "\r\n") : 0;
    while (n && (key[n - 1] == ' ' || key[n - 1] == '\t'))
        n--;
    if (n == 0) {
        config_error("--api-key-file: '%s' holds no key on its first line", path);
        return NULL;
    }
    key[n] = '\0';
    return strdup(key);
}

static int load_opts(int argc, char **argv, opts_t *o, bool *help)
{
    char err[1024];
    if (lam_cfg_load(&SPEC, o, argc, argv, help, err, sizeof err) != LAM_OK)
        return config_error("%s", err);
    if (*help)
        return 0;
    if (!o->model) {
        char path[4096];
        o->model = strdup(lam_model_default_path(path, sizeof path));
    }
    if (o->wire_dtype == WIRE_AUTO)
        o->wire_dtype = o->kv_dtype;
    if (!o->prompt && o->local_attention)
        return config_error("%s", "--local-attention runs one prompt: --prompt is required "
                                  "(the HTTP service needs --attention)");
    if (!o->prompt && !o->attention)
        return config_error("%s", "give either --attention HOST:PORT[,...] (serve HTTP, or one --prompt) or "
                                  "--local-attention --prompt TEXT");
    if (o->prompt && !o->local_attention == !o->attention)
        return config_error("%s", "give either --attention HOST:PORT[,...] or --local-attention");
    if (!o->prompt && o->batch < o->max_seqs)
        return config_error("%s", "--batch must be at least --max-seqs (every running sequence gets a token "
                                  "in each step)");
    return 0;
}

typedef struct stream {
    const lam_tok_t *tok;
} stream_t;

static bool on_eog(void *ud, int32_t t) { return lam_tok_is_eog(((stream_t *)ud)->tok, t); }

static void on_token(void *ud, int seq, int32_t t)
{
    (void)seq;
    stream_t *s = ud;
    if (lam_tok_is_special(s->tok, t))
        return;
    size_t len;
    const char *p = lam_tok_piece(s->tok, t, &len);
    fwrite(p, 1, len, stdout);
    fflush(stdout);
}

typedef struct remote_run {
    stream_t s;
    lam_status_t status;
    int n_out;
} remote_run_t;

static bool rr_eog(void *ud, int32_t t) { return on_eog(&((remote_run_t *)ud)->s, t); }
static void rr_token(void *ud, int req, int32_t t)
{
    ((remote_run_t *)ud)->n_out++;
    on_token(&((remote_run_t *)ud)->s, req, t);
}
static void rr_done(void *ud, int req, lam_status_t st)
{
    (void)req;
    ((remote_run_t *)ud)->status = st;
}

/* Generates with attention on the attention nodes. */
static int run_remote(const opts_t *o, const lam_sampler_params_t *sp, const lam_gguf_t *g, const lam_model_t *m,
                      const lam_tok_t *tok, const int32_t *ids, int n_ids)
{
    int rc = 1;
    lam_stack_t sk = {0};
    lam_sched_t *sc = NULL;
    lam_stack_cfg_t kc = {.attention = o->attention, .token_file = o->token_file, .kv_dtype = o->kv_dtype,
                          .wire_dtype = o->wire_dtype, .batch = o->batch, .max_seqs = 16,
                          .attn_timeout_ms = o->attn_timeout_ms, .connect_timeout_ms = o->connect_timeout_ms,
                          .spin_us = o->spin_us, .cuda = o->device == DEVICE_CUDA, .gguf = g};
    lam_sched_opts_t so = {.max_seqs = 16, .max_queue = 16, .chunk = o->batch, .max_step_tokens = o->batch,
                           .max_ctx = o->ctx, .queue_timeout_s = o->connect_timeout_ms / 1000.0,
                           .recompute_on_loss = o->recompute};
    remote_run_t run = {{tok}, LAM_ERR_TIMEOUT, 0};
    lam_sched_hooks_t hooks = {rr_token, rr_done, rr_eog, &run};
    lam_stack_err_t ke = lam_stack_open(&kc, m, &sk);
    if (ke != LAM_STACK_OK) {
        rc = ke == LAM_STACK_BAD_ARGS ? 2 : 1;
        goto done;
    }
    if (lam_sched_create(sk.p, sk.r, m->cfg.vocab, &so, &hooks, &sc) != LAM_OK)
        goto done;
    if (lam_sched_submit(sc, ids, n_ids, o->max_new, sp) < 0)
        goto done;
    double t0 = lam_now_s();
    while (lam_sched_pending(sc) > 0)
        if (lam_sched_step(sc) == 0)
            usleep(10000); /* waiting for attention nodes */
    double dt = lam_now_s() - t0;
    printf("\n");
    fflush(stdout);
    if (run.status != LAM_OK) {
        lam_log_error("generation failed: %s", lam_status_str(run.status));
        goto done;
    }
    const lam_pipe_stats_t *ps = lam_pipe_stats(sk.p);
    lam_log_info("%d prompt + %d generated tokens in %.2f s over %d attention node(s); %ld steps, dense %.2f s, "
                 "waiting for attention %.2f s",
                 n_ids, run.n_out, dt, sk.n_nodes, ps->steps, ps->dense_s, ps->wait_s);
    rc = 0;
done:
    lam_sched_destroy(sc);
    lam_stack_close(&sk);
    return rc;
}

/* The model id /v1/models reports: general.name, else the file name
 * without its directory and ".gguf". */
static char *default_model_name(const lam_gguf_t *g, const char *path)
{
    lam_gguf_str_t name;
    if (lam_gguf_get_str(g, "general.name", &name) == LAM_OK && name.len > 0 && name.len < 256 &&
        !memchr(name.ptr, '\0', name.len))
        return strndup(name.ptr, name.len);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf"))
        n -= 5;
    return strndup(base, n);
}

static int serve(const opts_t *o, const char *api_key, const lam_gguf_t *g, const lam_model_t *m,
                 const lam_tok_t *tok)
{
    char *name = o->model_name ? strdup(o->model_name) : default_model_name(g, o->model);
    lam_serve_cfg_t c = {.attention = o->attention, .token_file = o->token_file, .kv_dtype = o->kv_dtype,
                         .wire_dtype = o->wire_dtype, .attn_timeout_ms = o->attn_timeout_ms,
                         .connect_timeout_ms = o->connect_timeout_ms, .spin_us = o->spin_us, .ctx = o->ctx,
                         .batch = o->batch, .max_seqs = o->max_seqs, .max_queue = o->max_queue,
                         .recompute_on_loss = o->recompute, .threads = o->threads,
                         .default_max_tokens = o->max_new,
                         .defaults = {.temperature = o->temperature, .top_k = o->top_k, .top_p = o->top_p},
                         .http_listen = o->http_listen, .http_port = o->http_port, .api_key = api_key,
                         .model_name = name ? name : "model", .max_body = o->max_body,
                         .drain_timeout_s = o->drain_timeout, .gguf = g, .cuda = o->device == DEVICE_CUDA};
    int rc = lam_serve_run(&c, m, tok);
    free(name);
    return rc;
}

int main(int argc, char **argv)
{
    opts_t o = {0};
    bool help = false;
    if (load_opts(argc, argv, &o, &help)) {
        lam_cfg_free(&SPEC, &o);
        return 2;
    }
    char *api_key = NULL; /* read before the model: a bad file is a configuration error */
    if (help || (!o.prompt && o.api_key_file && !(api_key = read_api_key(o.api_key_file)))) {
        lam_cfg_free(&SPEC, &o);
        return help ? 0 : 2;
    }
    if (o.device == DEVICE_CUDA) { /* refused before anything is loaded */
        char why[256];
        if (lam_backend_cuda_probe(0, why, sizeof why) != LAM_OK) {
            const char *what = strcmp(why, "built without CUDA") ? "no usable CUDA device: " : "";
            fprintf(stderr, PROG ": --device cuda: %s%s\n", what, why);
            free(api_key);
            lam_cfg_free(&SPEC, &o);
            return 2;
        }
    }
    /* libgomp's idle workers spin for ~0.3 s after each parallel region by
     * default, starving the thread that talks to the attention nodes (and
     * local attention nodes) between layers: 30x fewer spins measured 2x
     * more tokens/s at batch 1. Read at load time, hence the re-exec. */
    if (o.attention)
        lam_proc_reexec_with_env("GOMP_SPINCOUNT", "10000", argv);
    if (o.threads)
        omp_set_num_threads(o.threads);
    lam_sampler_params_t sp = {.temperature = o.temperature, .top_k = o.top_k, .top_p = o.top_p,
                               .seed = o.seed ? strtoull(o.seed, NULL, 10)
                                              : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32)};
    int rc = 1;
    lam_gguf_t *g = NULL;
    lam_model_t *m = NULL;
    lam_tok_t *tok = NULL;
    lam_engine_t *e = NULL;
    lam_mono_cuda_t *mono = NULL;
    char *text = NULL;
    int32_t *ids = NULL, *out = NULL;
    size_t n_ids = 0;
    char err[512];
    double t0 = lam_now_s();
    lam_notify_status("Loading %s", o.model);
    if (lam_gguf_open(o.model, &g, err, sizeof err) != LAM_OK)
        goto done; /* the reader logged the reason */
    /* the CPU dense path reads Q4_1/Q8_0 blocks as they are; the CUDA
     * backend uploads from f32 */
    lam_model_load_opts_t lo = {.blocks_only = o.device != DEVICE_CUDA};
    if (lam_model_load_opts(g, &lo, &m) != LAM_OK || lam_tok_from_gguf(g, &tok) != LAM_OK)
        goto done;
    lam_log_info("loaded %s: %d layers, dim %d, %d/%d heads, vocab %d, %.0f MiB of weights, %.2f s",
                 o.model, m->cfg.n_layers, m->cfg.dim, m->cfg.n_heads, m->cfg.n_kv_heads, m->cfg.vocab,
                 m->weight_bytes / 1048576.0, lam_now_s() - t0);
    if (!o.prompt) {
        rc = serve(&o, api_key, g, m, tok);
        goto done;
    }
    const char *prompt = o.prompt;
    if (o.chat) {
        lam_chat_msg_t msgs[2];
        size_t nm = 0;
        if (o.system)
            msgs[nm++] = (lam_chat_msg_t){"system", o.system};
        msgs[nm++] = (lam_chat_msg_t){"user", o.prompt};
        if (lam_tok_chat_render(tok, msgs, nm, true, &text) != LAM_OK) {
            lam_log_error("cannot render the chat template; use --no-chat");
            goto done;
        }
        prompt = text;
    }
    if (lam_tok_encode(tok, prompt, strlen(prompt), true, o.chat, &ids, &n_ids) != LAM_OK)
        goto done;
    if (n_ids == 0) {
        lam_log_error("the prompt is empty after tokenisation");
        goto done;
    }
    if ((int)n_ids + o.max_new > o.ctx) {
        lam_log_error("prompt (%zu tokens) + %d new tokens exceed the context of %d (--ctx)", n_ids, o.max_new, o.ctx);
        goto done;
    }
    if (o.attention) {
        rc = run_remote(&o, &sp, g, m, tok, ids, (int)n_ids);
        goto done;
    }
    lam_engine_opts_t eo = {.n_slots = 1, .max_ctx = o.ctx, .max_batch_tokens = o.batch};
    /* --device cuda: the whole model on the GPU, KV cache included */
    lam_mono_cuda_opts_t mo = {.be = {.gguf = g}, .n_slots = 1, .max_ctx = o.ctx, .max_batch_tokens = o.batch,
                               .kv_dtype = o.kv_dtype};
    lam_gen_engine_t eng = {0};
    lam_status_t est = o.device == DEVICE_CUDA ? lam_mono_cuda_create(m, &mo, &mono) : lam_engine_create(m, &eo, &e);
    if (est != LAM_OK)
        goto done;
    if (mono)
        lam_mono_cuda_gen_engine(mono, &eng);
    out = malloc(((size_t)o.max_new + 1) * sizeof *out);
    if (!out)
        goto done;
    lam_gen_seq_t seq = {.prompt = ids, .n_prompt = (int)n_ids, .max_new = o.max_new, .sp = sp, .out = out};
    stream_t s = {tok};
    lam_gen_hooks_t hooks = {on_eog, on_token, &s};
    lam_gen_stats_t st;
    if ((mono ? lam_generate_batch_on(&eng, &seq, 1, &hooks, &st) : lam_generate_batch(e, &seq, 1, &hooks, &st)) !=
        LAM_OK)
        goto done;
    printf("\n");
    fflush(stdout);
    lam_log_info("prompt %ld tokens in %.2f s (%.1f tok/s); generated %ld tokens in %.2f s (%.1f tok/s)",
                 st.prefill_tokens, st.prefill_s, st.prefill_tokens / (st.prefill_s > 0 ? st.prefill_s : 1),
                 st.decode_tokens + 1, st.decode_s, st.decode_tokens / (st.decode_s > 0 ? st.decode_s : 1));
    rc = 0;
done:
    free(out);
    free(ids);
    free(text);
    lam_engine_free(e);
    lam_mono_cuda_destroy(mono);
    lam_tok_free(tok);
    lam_model_free(m);
    lam_gguf_close(g);
    if (api_key) {
        memset(api_key, 0, strlen(api_key));
        free(api_key);
    }
    lam_cfg_free(&SPEC, &o);
    return rc;
}
