#include "compute_node/generate.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct gen_state {
    int32_t *tok, *pos, *slot; /* [T] batch under construction */
    uint8_t *want;             /* [T] */
    int *owner;                /* [T] sequence whose next token this row samples, or -1 */
    float *logits;             /* [T][vocab] */
    lam_sampler_t *samplers;   /* [n] */
    int32_t *next;             /* [n] token to feed next decode step */
    bool *live;                /* [n] */
} gen_state_t;

static void gen_state_free(gen_state_t *g, int n)
{
    if (g->samplers)
        for (int i = 0; i < n; i++)
            lam_sampler_free(&g->samplers[i]);
    free(g->tok); free(g->pos); free(g->slot); free(g->want); free(g->owner);
    free(g->logits); free(g->samplers); free(g->next); free(g->live);
}

/* Samples for every row that wants logits, appends to its sequence, and
 * retires sequences that are done. */
static void take_samples(gen_state_t *g, lam_gen_seq_t *seqs, int rows, int vocab,
                         const lam_gen_hooks_t *h)
{
    int r_out = 0;
    for (int r = 0; r < rows; r++) {
        if (!g->want[r])
            continue;
        int i = g->owner[r];
        lam_gen_seq_t *s = &seqs[i];
        int32_t t = lam_sampler_sample(&g->samplers[i], g->logits + (size_t)r_out * vocab);
        r_out++;
        s->out[s->n_out++] = t;
        g->next[i] = t;
        if (h && h->on_token)
            h->on_token(h->ud, i, t);
        if (s->n_out >= s->max_new || (h && h->is_eog && h->is_eog(h->ud, t)))
            g->live[i] = false;
    }
}

static lam_status_t ref_forward(void *e, const lam_batch_t *b, float *logits)
{
    return lam_engine_forward(e, b, logits);
}
static void ref_slot_reset(void *e, int slot) { lam_engine_slot_reset(e, slot); }
static void ref_limits(const void *e, int *n_slots, int *max_ctx, int *max_batch_tokens)
{
    lam_engine_limits(e, n_slots, max_ctx, max_batch_tokens);
}

lam_status_t lam_generate_batch(lam_engine_t *e, lam_gen_seq_t *seqs, int n, const lam_gen_hooks_t *h,
                                lam_gen_stats_t *stats)
{
    lam_gen_engine_t eng = {e, lam_engine_config(e), ref_forward, ref_slot_reset, ref_limits};
    return lam_generate_batch_on(&eng, seqs, n, h, stats);
}

lam_status_t lam_generate_batch_on(const lam_gen_engine_t *eng, lam_gen_seq_t *seqs, int n,
                                   const lam_gen_hooks_t *h, lam_gen_stats_t *stats)
{
    const lam_model_config_t *c = eng->cfg;
    int T = 0, ctx = 0, n_slots = 0;
    eng->limits(eng->e, &n_slots, &ctx, &T);
    if (n < 1 || n > n_slots) {
        lam_log_error("generate: %d sequences for %d slots", n, n_slots);
        return LAM_ERR_INVALID_ARG;
    }
    for (int i = 0; i < n; i++) {
        if (seqs[i].n_prompt < 1 || seqs[i].max_new < 0 || seqs[i].n_prompt + seqs[i].max_new > ctx) {
            lam_log_error("generate: sequence %d: prompt %d + %d new tokens does not fit the context %d",
                          i, seqs[i].n_prompt, seqs[i].max_new, ctx);
            return LAM_ERR_RANGE;
        }
    }
    gen_state_t g = {0};
    g.tok = malloc(T * sizeof *g.tok);
    g.pos = malloc(T * sizeof *g.pos);
    g.slot = malloc(T * sizeof *g.slot);
    g.want = malloc(T * sizeof *g.want);
    g.owner = malloc(T * sizeof *g.owner);
    g.logits = malloc((size_t)T * c->vocab * sizeof *g.logits);
    g.samplers = calloc(n, sizeof *g.samplers);
    g.next = calloc(n, sizeof *g.next);
    g.live = calloc(n, sizeof *g.live);
    lam_status_t st = LAM_OK;
    if (!g.tok || !g.pos || !g.slot || !g.want || !g.owner || !g.logits || !g.samplers || !g.next || !g.live)
        st = LAM_ERR_NO_MEMORY;
    for (int i = 0; i < n && st == LAM_OK; i++) {
        st = lam_sampler_init(&g.samplers[i], &seqs[i].sp, c->vocab);
        eng->slot_reset(eng->e, i);
        seqs[i].n_out = 0;
        g.live[i] = seqs[i].max_new > 0;
    }
    if (st != LAM_OK) {
        gen_state_free(&g, n);
        return st;
    }
    lam_gen_stats_t s0 = {0};
    /* prefill: pack prompt chunks of all sequences into batches of T tokens */
    double t0 = lam_now_s();
    int seq = 0, off = 0;
    while (seq < n && st == LAM_OK) {
        int rows = 0;
        while (rows < T && seq < n) {
            lam_gen_seq_t *s = &seqs[seq];
            g.tok[rows] = s->prompt[off];
            g.pos[rows] = off;
            g.slot[rows] = seq;
            g.owner[rows] = seq;
            g.want[rows] = off == s->n_prompt - 1 && g.live[seq];
            rows++;
            if (++off == s->n_prompt) {
                seq++;
                off = 0;
            }
        }
        lam_batch_t b = {rows, g.tok, g.pos, g.slot, g.want};
        st = eng->forward(eng->e, &b, g.logits);
        if (st == LAM_OK)
            take_samples(&g, seqs, rows, c->vocab, h);
        s0.prefill_tokens += rows;
    }
    double t1 = lam_now_s();
    /* decode: one token per live sequence per step */
    while (st == LAM_OK) {
        int rows = 0;
        for (int i = 0; i < n && rows < T; i++) {
            if (!g.live[i])
                continue;
            g.tok[rows] = g.next[i];
            g.pos[rows] = seqs[i].n_prompt + seqs[i].n_out - 1;
            g.slot[rows] = i;
            g.owner[rows] = i;
            g.want[rows] = 1;
            rows++;
        }
        if (rows == 0)
            break;
        lam_batch_t b = {rows, g.tok, g.pos, g.slot, g.want};
        st = eng->forward(eng->e, &b, g.logits);
        if (st == LAM_OK)
            take_samples(&g, seqs, rows, c->vocab, h);
        s0.decode_tokens += rows;
        s0.decode_steps++;
    }
    s0.prefill_s = t1 - t0;
    s0.decode_s = lam_now_s() - t1;
    if (stats)
        *stats = s0;
    gen_state_free(&g, n);
    return st;
}
