#include "compute_node/pipeline.h"
#include "common/log.h"
#include "compute_node/generate.h"

#include <stdlib.h>
#include <string.h>

typedef struct mb {
    lam_backend_mb_t *act;
    int seq0, n_seq;        /* chunks [seq0, seq0 + n_seq) of the step */
    int tok0, n_tok;        /* tokens [tok0, tok0 + n_tok) */
    int32_t *pos;           /* [max_tokens] position of each token */
    int16_t *st;            /* [max_seqs] this layer's per-sequence status */
    bool in_flight;
} mb_t;

struct lam_pipe {
    lam_backend_t *be;
    lam_remote_t *r;
    lam_pipe_opts_t o;
    int n_layers, vocab;
    uint64_t step_no;
    mb_t mb[2];
    lam_pipe_stats_t stats;
};

void lam_pipe_destroy(lam_pipe_t *p)
{
    if (!p)
        return;
    if (p->be->poll_arg == p->r) {
        p->be->poll = NULL, p->be->poll_arg = NULL;
        lam_remote_set_polled(p->r, false);
    }
    for (int m = 0; m < 2; m++) {
        p->be->i->mb_destroy(p->be, p->mb[m].act);
        free(p->mb[m].pos);
        free(p->mb[m].st);
    }
    free(p);
}

lam_status_t lam_pipe_create(lam_backend_t *be, lam_remote_t *r, const lam_pipe_opts_t *o, lam_pipe_t **out)
{
    if (o->max_tokens < 1 || o->max_seqs < 1)
        return LAM_ERR_INVALID_ARG;
    lam_pipe_t *p = calloc(1, sizeof *p);
    if (!p)
        return LAM_ERR_NO_MEMORY;
    p->be = be;
    p->r = r;
    be->poll = lam_remote_poll;
    be->poll_arg = r;
    lam_remote_set_polled(r, be->polls);
    p->o = *o;
    p->n_layers = be->cfg->n_layers;
    p->vocab = be->cfg->vocab;
    lam_status_t st = LAM_OK;
    for (int m = 0; m < 2 && st == LAM_OK; m++) {
        st = be->i->mb_create(be, o->max_tokens, &p->mb[m].act);
        p->mb[m].pos = malloc((size_t)o->max_tokens * sizeof(int32_t));
        p->mb[m].st = malloc((size_t)o->max_seqs * sizeof(int16_t));
        if (st == LAM_OK && (!p->mb[m].pos || !p->mb[m].st))
            st = LAM_ERR_NO_MEMORY;
    }
    if (st != LAM_OK) {
        lam_pipe_destroy(p);
        return st;
    }
    *out = p;
    return LAM_OK;
}

const lam_pipe_stats_t *lam_pipe_stats(const lam_pipe_t *p) { return &p->stats; }
void lam_pipe_stats_reset(lam_pipe_t *p) { memset(&p->stats, 0, sizeof p->stats); }

/* Dense part before attention of layer l, then hand q/k/v to the nodes. */
static lam_status_t start_layer(lam_pipe_t *p, const lam_step_t *s, mb_t *m, int idx, int l)
{
    const float *q, *k, *v;
    double t0 = lam_now_s();
    lam_status_t st = p->be->i->attn_in(p->be, m->act, l, m->pos, m->n_tok, &q, &k, &v);
    p->stats.dense_s += lam_now_s() - t0;
    if (st != LAM_OK)
        return st;
    st = lam_remote_submit(p->r, idx, p->step_no, l, s->seqs + m->seq0, m->n_seq, m->n_tok, q, k, v,
                           p->be->i->attn_out_buf(p->be, m->act));
    m->in_flight = st == LAM_OK;
    return st;
}

/* Waits for layer l's attention output, merges per-sequence errors. */
static lam_status_t finish_attention(lam_pipe_t *p, mb_t *m, int idx, int16_t *seq_status)
{
    double t0 = lam_now_s();
    lam_status_t st = lam_remote_wait(p->r, idx, m->st);
    p->stats.wait_s += lam_now_s() - t0;
    m->in_flight = false;
    for (int i = 0; i < m->n_seq && st == LAM_OK; i++)
        if (m->st[i] != 0 && seq_status[m->seq0 + i] == 0)
            seq_status[m->seq0 + i] = m->st[i];
    return st;
}

static int check_step(const lam_pipe_t *p, const lam_step_t *s)
{
    if (s->n_seq < 1 || s->n_seq > p->o.max_seqs || s->n_tok < 1 || s->n_tok > p->o.max_tokens)
        return 0;
    long sum = 0;
    for (int i = 0; i < s->n_seq; i++) {
        if (s->seqs[i].n_tok < 1 || s->seqs[i].pos < 0 || s->seqs[i].id == 0)
            return 0;
        sum += s->seqs[i].n_tok;
    }
    for (int t = 0; t < s->n_tok; t++)
        if (s->tok[t] < 0 || s->tok[t] >= p->vocab)
            return 0;
    return sum == s->n_tok;
}

lam_status_t lam_pipe_step(lam_pipe_t *p, const lam_step_t *s, float *logits, int16_t *seq_status)
{
    if (!check_step(p, s)) {
        lam_log_error("pipeline: malformed step (%d chunks, %d tokens)", s->n_seq, s->n_tok);
        return LAM_ERR_INVALID_ARG;
    }
    double t_start = lam_now_s();
    p->step_no++;
    memset(seq_status, 0, (size_t)s->n_seq * sizeof *seq_status);

    /* split at the sequence boundary nearest half the tokens */
    int split = s->n_seq, acc = 0;
    if (!p->o.single_mb && s->n_seq > 1) {
        for (int i = 0; i < s->n_seq - 1; i++) {
            acc += s->seqs[i].n_tok;
            split = i + 1;
            if (2 * acc >= s->n_tok)
                break;
        }
    }
    int n_mb = split < s->n_seq ? 2 : 1;
    p->mb[0].seq0 = 0;
    p->mb[0].n_seq = split;
    p->mb[1].seq0 = split;
    p->mb[1].n_seq = s->n_seq - split;
    int tok = 0;
    for (int m = 0; m < n_mb; m++) {
        mb_t *b = &p->mb[m];
        b->tok0 = tok;
        b->n_tok = 0;
        for (int i = b->seq0; i < b->seq0 + b->n_seq; i++)
            for (int j = 0; j < s->seqs[i].n_tok; j++)
                b->pos[b->n_tok++] = s->seqs[i].pos + j;
        tok += b->n_tok;
    }

    lam_status_t st = LAM_OK;
    for (int m = 0; m < n_mb && st == LAM_OK; m++) {
        double t0 = lam_now_s();
        st = p->be->i->embed(p->be, p->mb[m].act, s->tok + p->mb[m].tok0, p->mb[m].n_tok);
        p->stats.dense_s += lam_now_s() - t0;
        if (st == LAM_OK)
            st = start_layer(p, s, &p->mb[m], m, 0);
    }
    for (int l = 0; l < p->n_layers && st == LAM_OK; l++) {
        for (int m = 0; m < n_mb && st == LAM_OK; m++) {
            mb_t *b = &p->mb[m];
            st = finish_attention(p, b, m, seq_status);
            if (st != LAM_OK)
                break;
            double t0 = lam_now_s();
            st = p->be->i->attn_out(p->be, b->act, l, b->n_tok);
            p->stats.dense_s += lam_now_s() - t0;
            if (st == LAM_OK && l + 1 < p->n_layers)
                st = start_layer(p, s, b, m, l + 1);
        }
    }
    /* after a failure, collect the other micro-batch so its slot is free */
    for (int m = 0; m < n_mb; m++)
        if (p->mb[m].in_flight)
            finish_attention(p, &p->mb[m], m, seq_status);

    int rows = 0;
    if (st == LAM_OK && n_mb == 2 && p->be->i->logits2) {
        /* one pass over the LM head for both micro-batches */
        double t0 = lam_now_s();
        const uint8_t *w = s->want;
        st = p->be->i->logits2(p->be, p->mb[0].act, w ? w + p->mb[0].tok0 : NULL, p->mb[0].n_tok, p->mb[1].act,
                               w ? w + p->mb[1].tok0 : NULL, p->mb[1].n_tok, logits, &rows);
        p->stats.dense_s += lam_now_s() - t0;
        n_mb = st == LAM_OK ? 0 : n_mb; /* done, or per micro-batch below */
        st = st == LAM_ERR_INVALID_ARG ? LAM_OK : st;
    }
    for (int m = 0; m < n_mb && st == LAM_OK; m++) {
        int n_out = 0;
        double t0 = lam_now_s();
        st = p->be->i->logits(p->be, p->mb[m].act, s->want ? s->want + p->mb[m].tok0 : NULL, p->mb[m].n_tok,
                              logits + (size_t)rows * p->vocab, &n_out);
        p->stats.dense_s += lam_now_s() - t0;
        rows += n_out;
    }
    p->stats.steps++;
    p->stats.tokens += s->n_tok;
    p->stats.step_s += lam_now_s() - t_start;
    return st;
}
