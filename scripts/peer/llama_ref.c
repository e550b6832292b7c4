/*
 * llama_ref.c - reference outputs from llama.cpp for Lamina's tests.
 *
 * Our own program against llama.cpp's public C API (llama.h); it is built
 * outside the repository by scripts/peer/build-llama-cpp.sh.
 *
 *   llama_ref [opts] tokenize MODEL INFILE OUTFILE
 *       INFILE: one hex-encoded UTF-8 string per line ('#' lines and blank
 *       lines skipped). Tokenized with add_special=false, parse_special=true.
 *       OUTFILE: for each string, "# <printable>" then "<hex> <id> <id> ...".
 *
 *   llama_ref [opts] eval MODEL PROMPTFILE OUTFILE NGEN
 *       PROMPTFILE: "<name> <hex>" per line. For each prompt (fresh memory):
 *       the whole prompt is decoded in one batch with logits at every
 *       position; top1 = argmax at each position; then NGEN greedy tokens,
 *       one at a time, never stopping at EOS. OUTFILE per prompt:
 *           prompt <name>
 *           tokens <ids>
 *           top1 <argmax per prompt position>
 *           # top1_gap <logit(top1) - logit(second) per position>
 *           greedy <NGEN ids>
 *           # greedy_gap <gap per generated token>
 *           <blank>
 *       Argmax ties go to the lowest id. Decoded text goes to stderr.
 *
 * Options: -t N threads (default 1), --kv f32|f16 KV cache type
 * (default f32), --fa use flash attention (default off), --repack allow
 * weight repacking into extra buffer types (default off: plain ggml kernels),
 * -v llama.cpp logging.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

#define MAX_LINE  (1 << 20)
#define N_CTX     2048

typedef struct {
    int  n_threads;
    bool kv_f16;
    bool flash_attn;
    bool repack;
    bool verbose;
} ref_opts_t;

static void quiet_log(enum ggml_log_level level, const char *text, void *user)
{
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes hex text of length n into out (capacity >= n/2 + 1, NUL added).
 * Returns the byte count or -1 on malformed input. */
static int hex_decode(const char *hex, size_t n, char *out)
{
    if (n % 2)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval((unsigned char)hex[i]), lo = hexval((unsigned char)hex[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (char)(hi << 4 | lo);
    }
    out[n / 2] = '\0';
    return (int)(n / 2);
}

/* Printable one-line rendering: C escapes for control bytes, UTF-8 kept. */
static void put_printable(FILE *f, const char *s, int n)
{
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')      fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c < 0x20 || c == 0x7f) fprintf(f, "\\x%02x", c);
        else fputc(c, f);
    }
}

static void strip_eol(char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
}

/* Tokenizes text; returns a malloc'd id array and its length in *n_out. */
static llama_token *tokenize(const struct llama_vocab *vocab, const char *text,
                             int len, int *n_out)
{
    int cap = len + 16;
    llama_token *ids = malloc(sizeof(*ids) * (size_t)cap);
    if (!ids)
        return NULL;
    int n = llama_tokenize(vocab, text, len, ids, cap, false, true);
    if (n < 0) {
        cap = -n;
        llama_token *grown = realloc(ids, sizeof(*ids) * (size_t)cap);
        if (!grown) {
            free(ids);
            return NULL;
        }
        ids = grown;
        n = llama_tokenize(vocab, text, len, ids, cap, false, true);
    }
    if (n < 0) {
        free(ids);
        return NULL;
    }
    *n_out = n;
    return ids;
}

static void put_piece(FILE *f, const struct llama_vocab *vocab, llama_token id)
{
    char buf[256];
    int n = llama_token_to_piece(vocab, id, buf, sizeof(buf), 0, true);
    if (n > 0)
        fwrite(buf, 1, (size_t)n, f);
}

/* Argmax with ties to the lowest index; *gap = best - second best. */
static llama_token argmax(const float *logits, int n_vocab, float *gap)
{
    int best = 0;
    float b1 = logits[0], b2 = -INFINITY;
    for (int i = 1; i < n_vocab; i++) {
        if (logits[i] > b1) {
            b2 = b1;
            b1 = logits[i];
            best = i;
        } else if (logits[i] > b2) {
            b2 = logits[i];
        }
    }
    *gap = b1 - b2;
    return best;
}

static int run_tokenize(const struct llama_vocab *vocab, FILE *in, FILE *out)
{
    static char line[MAX_LINE], text[MAX_LINE / 2 + 1];
    int lineno = 0, count = 0;
    while (fgets(line, sizeof(line), in)) {
        lineno++;
        strip_eol(line);
        if (line[0] == '#' || line[0] == '\0')
            continue;
        int len = hex_decode(line, strlen(line), text);
        if (len <= 0) {
            fprintf(stderr, "line %d: bad or empty hex string\n", lineno);
            return 1;
        }
        int n = 0;
        llama_token *ids = tokenize(vocab, text, len, &n);
        if (!ids) {
            fprintf(stderr, "line %d: tokenize failed\n", lineno);
            return 1;
        }
        fputs("# ", out);
        put_printable(out, text, len);
        fprintf(out, "\n%s", line);
        for (int i = 0; i < n; i++)
            fprintf(out, " %d", ids[i]);
        fputc('\n', out);
        free(ids);
        count++;
    }
    fprintf(stderr, "tokenized %d strings\n", count);
    return 0;
}

static struct llama_context *new_context(struct llama_model *model, const ref_opts_t *o)
{
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = N_CTX;
    cp.n_batch = N_CTX;
    cp.n_ubatch = N_CTX;
    cp.n_seq_max = 1;
    cp.n_threads = o->n_threads;
    cp.n_threads_batch = o->n_threads;
    cp.flash_attn_type = o->flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                                       : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = o->kv_f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
    cp.type_v = cp.type_k;
    cp.no_perf = true;
    return llama_init_from_model(model, cp);
}

static int eval_prompt(struct llama_context *ctx, const struct llama_vocab *vocab,
                       const char *name, const char *text, int len, int ngen, FILE *out)
{
    int n_vocab = llama_vocab_n_tokens(vocab);
    int n = 0, rc = 1;
    llama_token *ids = tokenize(vocab, text, len, &n);
    if (!ids || n == 0 || n + ngen > N_CTX) {
        fprintf(stderr, "%s: tokenize failed or prompt too long (%d)\n", name, n);
        free(ids);
        return 1;
    }
    llama_token *top1 = calloc((size_t)n, sizeof(*top1));
    float *top1_gap = malloc(sizeof(float) * (size_t)n);
    llama_token *gen = malloc(sizeof(*gen) * (size_t)(ngen + 1));
    float *gen_gap = malloc(sizeof(float) * (size_t)(ngen + 1));
    struct llama_batch batch = llama_batch_init(n, 0, 1);
    if (!top1 || !top1_gap || !gen || !gen_gap)
        goto free_all;

    llama_memory_clear(llama_get_memory(ctx), true);

    /* Whole prompt in one batch, logits at every position. */
    batch.n_tokens = n;
    for (int i = 0; i < n; i++) {
        batch.token[i] = ids[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    if (llama_decode(ctx, batch) != 0) {
        fprintf(stderr, "%s: prompt decode failed\n", name);
        goto free_all;
    }
    for (int i = 0; i < n; i++)
        top1[i] = argmax(llama_get_logits_ith(ctx, i), n_vocab, &top1_gap[i]);

    /* Greedy: the first generated token is the argmax after the prompt. */
    llama_token next = top1[n - 1];
    for (int g = 0; g < ngen; g++) {
        gen[g] = next;
        if (g == 0)
            gen_gap[0] = top1_gap[n - 1];
        if (g + 1 == ngen)
            break;
        batch.n_tokens = 1;
        batch.token[0] = next;
        batch.pos[0] = n + g;
        batch.n_seq_id[0] = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0] = 1;
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "%s: decode failed at step %d\n", name, g);
            goto free_all;
        }
        next = argmax(llama_get_logits_ith(ctx, 0), n_vocab, &gen_gap[g + 1]);
    }

    fprintf(out, "prompt %s\ntokens", name);
    for (int i = 0; i < n; i++) fprintf(out, " %d", ids[i]);
    fputs("\ntop1", out);
    for (int i = 0; i < n; i++) fprintf(out, " %d", top1[i]);
    fputs("\n# top1_gap", out);
    for (int i = 0; i < n; i++) fprintf(out, " %.4f", top1_gap[i]);
    fputs("\ngreedy", out);
    for (int g = 0; g < ngen; g++) fprintf(out, " %d", gen[g]);
    fputs("\n# greedy_gap", out);
    for (int g = 0; g < ngen; g++) fprintf(out, " %.4f", gen_gap[g]);
    fputs("\n\n", out);

    fprintf(stderr, "=== %s (%d prompt tokens)\n", name, n);
    for (int i = 0; i < n; i++) put_piece(stderr, vocab, ids[i]);
    fputs("[[", stderr);
    for (int g = 0; g < ngen; g++) put_piece(stderr, vocab, gen[g]);
    fputs("]]\n", stderr);
    rc = 0;

free_all:
    llama_batch_free(batch);
    free(gen_gap);
    free(gen);
    free(top1_gap);
    free(top1);
    free(ids);
    return rc;
}

static int run_eval(struct llama_model *model, const ref_opts_t *o, FILE *in,
                    FILE *out, int ngen)
{
    static char line[MAX_LINE], text[MAX_LINE / 2 + 1];
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    struct llama_context *ctx = new_context(model, o);
    if (!ctx) {
        fprintf(stderr, "cannot create context\n");
        return 1;
    }
    fprintf(out, "# llama.cpp (llama-cpp-python 0.3.36 vendor), threads=%d kv=%s "
                 "flash_attn=%s repack=%s ngen=%d, greedy does not stop at EOS\n\n",
            o->n_threads, o->kv_f16 ? "f16" : "f32", o->flash_attn ? "on" : "off",
            o->repack ? "on" : "off", ngen);
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), in)) {
        lineno++;
        strip_eol(line);
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char *sp = strchr(line, ' ');
        if (!sp) {
            fprintf(stderr, "line %d: expected '<name> <hex>'\n", lineno);
            rc = 1;
            break;
        }
        *sp = '\0';
        int len = hex_decode(sp + 1, strlen(sp + 1), text);
        if (len <= 0) {
            fprintf(stderr, "line %d: bad or empty hex\n", lineno);
            rc = 1;
            break;
        }
        rc = eval_prompt(ctx, vocab, line, text, len, ngen, out);
    }
    llama_free(ctx);
    return rc;
}

static int usage(void)
{
    fputs("usage: llama_ref [-t N] [--kv f32|f16] [--fa] [--repack] [-v]\n"
          "         tokenize MODEL INFILE OUTFILE\n"
          "       | eval MODEL PROMPTFILE OUTFILE NGEN\n", stderr);
    return 2;
}

int main(int argc, char **argv)
{
    ref_opts_t o = { .n_threads = 1 };
    int a = 1;
    for (; a < argc && argv[a][0] == '-'; a++) {
        if (!strcmp(argv[a], "-t") && a + 1 < argc) o.n_threads = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--kv") && a + 1 < argc) o.kv_f16 = !strcmp(argv[++a], "f16");
        else if (!strcmp(argv[a], "--fa")) o.flash_attn = true;
        else if (!strcmp(argv[a], "--repack")) o.repack = true;
        else if (!strcmp(argv[a], "-v")) o.verbose = true;
        else return usage();
    }
    if (a + 4 > argc || o.n_threads < 1)
        return usage();
    const char *mode = argv[a], *model_path = argv[a + 1];
    bool eval = !strcmp(mode, "eval");
    if (!eval && strcmp(mode, "tokenize"))
        return usage();
    if (eval && a + 5 > argc)
        return usage();
    int ngen = eval ? atoi(argv[a + 4]) : 0;
    if (eval && ngen < 1)
        return usage();

    if (!o.verbose)
        llama_log_set(quiet_log, NULL);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.vocab_only = !eval;
    mp.use_extra_bufts = o.repack;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", model_path);
        return 1;
    }
    FILE *in = fopen(argv[a + 2], "r");
    FILE *out = in ? fopen(argv[a + 3], "w") : NULL;
    int rc = 1;
    if (!in || !out) {
        fprintf(stderr, "cannot open %s / %s\n", argv[a + 2], argv[a + 3]);
    } else {
        rc = eval ? run_eval(model, &o, in, out, ngen)
                  : run_tokenize(llama_model_get_vocab(model), in, out);
    }
    if (out && fclose(out) != 0)
        rc = 1;
    if (in)
        fclose(in);
    llama_model_free(model);
    llama_backend_free();
    return rc;
}
