/* lamina-compute-node: loads a model and generates text for a prompt.
 * This release runs attention locally (--local-attention) on the
 * reference engine; remote attention nodes come with the offload work. */
#include "common/gguf.h"
#include "common/log.h"
#include "common/model.h"
#include "common/tokenizer.h"
#include "compute_node/engine.h"
#include "compute_node/generate.h"

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
    lam_sampler_params_t sp;
} opts_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lamina-compute-node --local-attention [options] --prompt TEXT\n"
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
            "      --local-attention   run attention in this process (required in this release)\n"
            "  -h, --help\n");
}

static bool parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static bool parse_float(const char *s, float lo, float hi, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    enum { O_NOCHAT = 256, O_SYSTEM, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_LOCAL, O_BATCH };
    static const struct option lopts[] = {
        {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, 'p'},
        {"no-chat", no_argument, 0, O_NOCHAT}, {"system", required_argument, 0, O_SYSTEM},
        {"max-tokens", required_argument, 0, 'n'}, {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"top-p", required_argument, 0, O_TOPP},
        {"seed", required_argument, 0, O_SEED}, {"threads", required_argument, 0, 't'},
        {"ctx", required_argument, 0, 'c'}, {"batch", required_argument, 0, O_BATCH},
        {"local-attention", no_argument, 0, O_LOCAL}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    lam_model_default_path(o->model, sizeof o->model);
    o->chat = true;
    o->max_new = 128;
    o->ctx = 2048;
    o->batch = 256;
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
        case 'n': ok = parse_int(optarg, 0, 1 << 20, &o->max_new); break;
        case O_TEMP: ok = parse_float(optarg, 0.0f, 100.0f, &o->sp.temperature); break;
        case O_TOPK: ok = parse_int(optarg, 0, 1 << 24, &o->sp.top_k); break;
        case O_TOPP: ok = parse_float(optarg, 1e-6f, 1.0f, &o->sp.top_p); break;
        case O_SEED: {
            char *end;
            errno = 0;
            o->sp.seed = strtoull(optarg, &end, 10);
            ok = !errno && end != optarg && !*end;
            break;
        }
        case 't': ok = parse_int(optarg, 1, 4096, &o->threads); break;
        case 'c': ok = parse_int(optarg, 1, 1 << 24, &o->ctx); break;
        case O_BATCH: ok = parse_int(optarg, 1, 1 << 16, &o->batch); break;
        case O_LOCAL: o->local_attention = true; break;
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
    if (!o->local_attention) {
        fprintf(stderr, "lamina-compute-node: remote attention nodes are not supported in this release; "
                        "pass --local-attention\n");
        return -1;
    }
    return 0;
}

typedef struct stream {
    const lam_tok_t *tok;
} stream_t;

static bool on_eog(void *ud, int32_t t) { return lam_tok_is_eog(((stream_t *)ud)->tok, t); }

static void on_token(void *ud, int seq, int32_t t)
{
    stream_t *s = ud;
    if (lam_tok_is_special(s->tok, t))
        return;
    size_t len;
    const char *p = lam_tok_piece(s->tok, t, &len);
    fwrite(p, 1, len, stdout);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    opts_t o = {0};
    if (parse_args(argc, argv, &o))
        return 2;
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
