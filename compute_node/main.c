/* lamina-compute-node: loads a model and generates text for a prompt,
 * either with attention offloaded to attention nodes (--attention
 * host:port,...: the dense layers run here, the KV cache and attention
 * there) or entirely in this process on the reference engine
 * (--local-attention). */
#include "common/gguf.h"
#include "common/log.h"
#include "common/parse.h"
#include "common/proc.h"
#include "common/model.h"
#include "common/tokenizer.h"
#include "compute_node/engine.h"
#include "compute_node/generate.h"
#include "compute_node/sched.h"
#include "proto/auth.h"

#include <errno.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct opts {
    char model[4096];
    const char *prompt;
    const char *system;
    bool chat, local_attention;
    int max_new, ctx, threads, batch;
    const char *attention;      /* host:port[,host:port...] */
    const char *token_file;
    int kv_dtype, wire_dtype;   /* lam_dtype_t; wire -1 = same as kv */
    int attn_timeout_ms, connect_timeout_ms, spin_us;
    lam_sampler_params_t sp;
} opts_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lamina-compute-node (--attention HOST:PORT[,...] | --local-attention) [options] --prompt TEXT\n"
            "  -m, --model PATH        GGUF model (default: $LAMINA_MODEL_DIR or ~/.cache/lamina,\n"
            "                          SmolLM2-135M-Instruct.Q4_1.gguf)\n"
            "  -p, --prompt TEXT       prompt\n"
            "      --no-chat           use the prompt as raw text (default: wrap it in the\n"
            "                          model's chat template as a user message)\n"
            "      --system TEXT       system message for the chat template\n"
            "  -n, --max-tokens N      tokens to generate (default 128)\n"
            "      --temperature F     0 = greedy (default 0.8)\n"
            "      --top-k N           0 = off (default 40)\n"
            "      --top-p F           1 = off (default 0.95)\n"
            "      --seed N            sampling seed (default: from the clock)\n"
            "  -t, --threads N         OpenMP threads (default: all cores)\n"
            "  -c, --ctx N             context length per sequence (default 2048)\n"
            "      --batch N           prefill chunk size in tokens (default 256)\n"
            "      --attention LIST    attention nodes, host:port[,host:port...]; node i serves\n"
            "                          KV-head shard i of N (N must divide the KV head count)\n"
            "      --kv-dtype T        KV dtype the attention nodes hold: f16 (default), bf16, f32\n"
            "      --wire-dtype T      q/k/v/o dtype on the wire (default: the KV dtype)\n"
            "      --token-file PATH   cluster token (or $LAMINA_CLUSTER_TOKEN)\n"
            "      --attn-timeout MS   per-layer attention deadline (default 30000)\n"
            "      --connect-timeout MS  wait this long for the attention nodes (default 10000)\n"
            "      --spin-us N         poll for attention results this long before sleeping (default 0)\n"
            "      --local-attention   run attention in this process (reference engine)\n"
            "  -h, --help\n");
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    enum { O_NOCHAT = 256, O_SYSTEM, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_LOCAL, O_BATCH, O_ATTN, O_KVDT, O_WIREDT,
           O_TOKEN, O_ATTN_TO, O_CONN_TO, O_SPIN };
    static const struct option lopts[] = {
        {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, 'p'},
        {"no-chat", no_argument, 0, O_NOCHAT}, {"system", required_argument, 0, O_SYSTEM},
        {"max-tokens", required_argument, 0, 'n'}, {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"top-p", required_argument, 0, O_TOPP},
        {"seed", required_argument, 0, O_SEED}, {"threads", required_argument, 0, 't'},
        {"ctx", required_argument, 0, 'c'}, {"batch", required_argument, 0, O_BATCH},
        {"local-attention", no_argument, 0, O_LOCAL}, {"attention", required_argument, 0, O_ATTN},
        {"kv-dtype", required_argument, 0, O_KVDT}, {"wire-dtype", required_argument, 0, O_WIREDT},
        {"token-file", required_argument, 0, O_TOKEN}, {"attn-timeout", required_argument, 0, O_ATTN_TO},
        {"connect-timeout", required_argument, 0, O_CONN_TO}, {"spin-us", required_argument, 0, O_SPIN}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    lam_model_default_path(o->model, sizeof o->model);
    o->chat = true;
    o->max_new = 128;
    o->ctx = 2048;
    o->batch = 256;
    o->kv_dtype = LAM_DT_F16;
    o->wire_dtype = -1;
    o->attn_timeout_ms = 30000;
    o->connect_timeout_ms = 10000;
    o->spin_us = 0;
    o->sp = (lam_sampler_params_t){.temperature = 0.8f, .top_k = 40, .top_p = 0.95f,
                                   .seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32)};
    int c;
    while ((c = getopt_long(argc, argv, "m:p:n:t:c:h", lopts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'm': snprintf(o->model, sizeof o->model, "%s", optarg); break;
        case 'p': o->prompt = optarg; break;
        case O_NOCHAT: o->chat = false; break;
        case O_SYSTEM: o->system = optarg; break;
        case 'n': ok = lam_parse_int(optarg, 0, 1 << 20, &o->max_new); break;
        case O_TEMP: ok = lam_parse_float(optarg, 0.0f, 100.0f, &o->sp.temperature); break;
        case O_TOPK: ok = lam_parse_int(optarg, 0, 1 << 24, &o->sp.top_k); break;
        case O_TOPP: ok = lam_parse_float(optarg, 1e-6f, 1.0f, &o->sp.top_p); break;
        case O_SEED: {
            char *end;
            errno = 0;
            o->sp.seed = strtoull(optarg, &end, 10);
            ok = !errno && end != optarg && !*end;
            break;
        }
        case 't': ok = lam_parse_int(optarg, 1, 4096, &o->threads); break;
        case 'c': ok = lam_parse_int(optarg, 1, 1 << 24, &o->ctx); break;
        case O_BATCH: ok = lam_parse_int(optarg, 1, 1 << 16, &o->batch); break;
        case O_LOCAL: o->local_attention = true; break;
        case O_ATTN: o->attention = optarg; break;
        case O_KVDT: ok = (o->kv_dtype = lam_dtype_parse(optarg)) >= 0; break;
        case O_WIREDT: ok = (o->wire_dtype = lam_dtype_parse(optarg)) >= 0; break;
        case O_TOKEN: o->token_file = optarg; break;
        case O_ATTN_TO: ok = lam_parse_int(optarg, 1, 3600000, &o->attn_timeout_ms); break;
        case O_CONN_TO: ok = lam_parse_int(optarg, 1, 3600000, &o->connect_timeout_ms); break;
        case O_SPIN: ok = lam_parse_int(optarg, 0, 1000000, &o->spin_us); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        if (!ok) {
            fprintf(stderr, "lamina-compute-node: invalid value '%s' for option '%s'\n", optarg, argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lamina-compute-node: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->prompt) {
        fprintf(stderr, "lamina-compute-node: --prompt is required\n");
        return -1;
    }
    if (!o->local_attention == !o->attention) {
        fprintf(stderr, "lamina-compute-node: give either --attention HOST:PORT[,...] or --local-attention\n");
        return -1;
    }
    if (o->wire_dtype < 0)
        o->wire_dtype = o->kv_dtype;
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
static int run_remote(const opts_t *o, const lam_model_t *m, const lam_tok_t *tok, const int32_t *ids, int n_ids)
{
    char token[512], why[256];
    lam_remote_addr_t addrs[64];
    int n_nodes = lam_remote_parse_addrs(o->attention, addrs, 64, why, sizeof why);
    if (n_nodes < 0) {
        lam_log_error("--attention: %s", why);
        return 2;
    }
    if (lam_auth_load_token(o->token_file, token, sizeof token) != LAM_OK)
        return 2;
    int rc = 1;
    lam_backend_t *be = NULL;
    lam_remote_t *r = NULL;
    lam_pipe_t *p = NULL;
    lam_sched_t *sc = NULL;
    lam_remote_opts_t ro = {.n_nodes = n_nodes, .addrs = addrs, .token = token, .fingerprint = m->fingerprint,
                            .cfg = &m->cfg, .kv_dtype = o->kv_dtype, .act_dtype = o->wire_dtype,
                            .max_tokens = o->batch, .max_seqs = 16, .timeout_ms = o->attn_timeout_ms,
                            .spin_us = o->spin_us};
    lam_pipe_opts_t po = {.max_tokens = o->batch, .max_seqs = 16};
    lam_sched_opts_t so = {.max_seqs = 16, .max_queue = 16, .chunk = o->batch, .max_step_tokens = o->batch,
                           .max_ctx = o->ctx, .queue_timeout_s = o->connect_timeout_ms / 1000.0};
    remote_run_t run = {{tok}, LAM_ERR_TIMEOUT, 0};
    lam_sched_hooks_t hooks = {rr_token, rr_done, rr_eog, &run};
    if (lam_backend_cpu_create(m, false, &be) != LAM_OK || lam_remote_create(&ro, &r) != LAM_OK)
        goto done;
    if (lam_remote_wait_ready(r, o->connect_timeout_ms) != LAM_OK)
        goto done;
    if (lam_pipe_create(be, r, &po, &p) != LAM_OK || lam_sched_create(p, r, m->cfg.vocab, &so, &hooks, &sc) != LAM_OK)
        goto done;
    if (lam_sched_submit(sc, ids, n_ids, o->max_new, &o->sp) < 0)
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
    const lam_pipe_stats_t *ps = lam_pipe_stats(p);
    lam_log_info("%d prompt + %d generated tokens in %.2f s over %d attention node(s); %ld steps, dense %.2f s, "
                 "waiting for attention %.2f s",
                 n_ids, run.n_out, dt, n_nodes, ps->steps, ps->dense_s, ps->wait_s);
    rc = 0;
done:
    lam_sched_destroy(sc);
    lam_pipe_destroy(p);
    lam_remote_destroy(r);
    lam_backend_destroy(be);
    return rc;
}

int main(int argc, char **argv)
{
    opts_t o = {0};
    if (parse_args(argc, argv, &o))
        return 2;
    /* libgomp's idle workers spin for ~0.3 s after each parallel region by
     * default, starving the thread that talks to the attention nodes (and
     * local attention nodes) between layers: 30x fewer spins measured 2x
     * more tokens/s at batch 1. Read at load time, hence the re-exec. */
    if (o.attention)
        lam_proc_reexec_with_env("GOMP_SPINCOUNT", "10000", argv);
    if (o.threads)
        omp_set_num_threads(o.threads);
    int rc = 1;
    lam_gguf_t *g = NULL;
    lam_model_t *m = NULL;
    lam_tok_t *tok = NULL;
    lam_engine_t *e = NULL;
    char *text = NULL;
    int32_t *ids = NULL, *out = NULL;
    size_t n_ids = 0;
    char err[512];
    double t0 = lam_now_s();
    if (lam_gguf_open(o.model, &g, err, sizeof err) != LAM_OK)
        goto done; /* the reader logged the reason */
    if (lam_model_load(g, &m) != LAM_OK || lam_tok_from_gguf(g, &tok) != LAM_OK)
        goto done;
    lam_log_info("loaded %s: %d layers, dim %d, %d/%d heads, vocab %d, %.0f MiB f32 weights, %.2f s",
                 o.model, m->cfg.n_layers, m->cfg.dim, m->cfg.n_heads, m->cfg.n_kv_heads, m->cfg.vocab,
                 m->weight_bytes / 1048576.0, lam_now_s() - t0);
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
        rc = run_remote(&o, m, tok, ids, (int)n_ids);
        goto done;
    }
    lam_engine_opts_t eo = {.n_slots = 1, .max_ctx = o.ctx, .max_batch_tokens = o.batch};
    if (lam_engine_create(m, &eo, &e) != LAM_OK)
        goto done;
    out = malloc(((size_t)o.max_new + 1) * sizeof *out);
    if (!out)
        goto done;
    lam_gen_seq_t seq = {.prompt = ids, .n_prompt = (int)n_ids, .max_new = o.max_new, .sp = o.sp, .out = out};
    stream_t s = {tok};
    lam_gen_hooks_t hooks = {on_eog, on_token, &s};
    lam_gen_stats_t st;
    if (lam_generate_batch(e, &seq, 1, &hooks, &st) != LAM_OK)
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
    lam_tok_free(tok);
    lam_model_free(m);
    lam_gguf_close(g);
    return rc;
}
