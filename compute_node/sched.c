#include "compute_node/sched.h"
#include "common/log.h"
#include "compute_node/generate.h"

#include <stdlib.h>
#include <string.h>

enum { REQ_FREE, REQ_WAITING, REQ_PREFILL, REQ_DECODE };

typedef struct req {
    int state;
    uint64_t order;        /* arrival order */
    double t_queued;
    int32_t *prompt;       /* [n_prompt] */
    int32_t *out;          /* [max_new] generated tokens (kept for recomputation) */
    int n_prompt, fed;     /* prompt (or, replaying, history) tokens already processed */
    int n_hist;            /* tokens to prefill: n_prompt, or prompt + out[0..n_out-2] when replaying */
    bool replay;           /* prefilling history after a node loss: no token to sample at the end */
    int recomputes;        /* KV rebuilds so far */
    int max_new, n_out;
    int32_t next;          /* decode input */
    lam_sampler_t smp;
    uint64_t seq_id, epoch;
    uint64_t in_step;      /* step number this request last joined */
} req_t;

struct lam_sched {
    lam_pipe_t *p;
    lam_remote_t *r;
    int vocab;
    lam_sched_opts_t o;
    lam_sched_hooks_t h;
    req_t *reqs;           /* [max_queue + max_seqs] */
    int n_reqs;
    uint64_t order_next, seq_next, step_no;
    int n_active;
    /* step under construction */
    lam_remote_seq_t *seqs;   /* [max_seqs] */
    int *owner;               /* [max_seqs] request of each chunk */
    int32_t *tok;             /* [max_step_tokens] */
    uint8_t *want;            /* [max_step_tokens] */
    int16_t *seq_st;          /* [max_seqs] */
    float *logits;            /* [max_seqs][vocab]: one wanted row per chunk at most */
    uint64_t *release;        /* [n_reqs] */
    int n_release;
};

void lam_sched_destroy(lam_sched_t *s)
{
    if (!s)
        return;
    for (int i = 0; s->reqs && i < s->n_reqs; i++) {
        free(s->reqs[i].prompt);
        free(s->reqs[i].out);
        lam_sampler_free(&s->reqs[i].smp);
    }
    free(s->reqs);
    free(s->seqs);
    free(s->owner);
    free(s->tok);
    free(s->want);
    free(s->seq_st);
    free(s->logits);
    free(s->release);
    free(s);
}

lam_status_t lam_sched_create(lam_pipe_t *p, lam_remote_t *r, int vocab, const lam_sched_opts_t *o,
                              const lam_sched_hooks_t *h, lam_sched_t **out)
{
    if (o->max_seqs < 1 || o->max_queue < 0 || o->chunk < 1 || o->max_step_tokens < o->max_seqs ||
        o->max_ctx < 2 || o->recompute_on_loss < 0) {
        lam_log_error("scheduler: bad limits (max_step_tokens must be at least max_seqs)");
        return LAM_ERR_CONFIG;
    }
    lam_sched_t *s = calloc(1, sizeof *s);
    if (!s)
        return LAM_ERR_NO_MEMORY;
    s->p = p;
    s->r = r;
    s->vocab = vocab;
    s->o = *o;
    s->h = *h;
    s->n_reqs = o->max_queue + o->max_seqs;
    s->reqs = calloc((size_t)s->n_reqs, sizeof *s->reqs);
    s->seqs = calloc((size_t)o->max_seqs, sizeof *s->seqs);
    s->owner = calloc((size_t)o->max_seqs, sizeof *s->owner);
    s->tok = calloc((size_t)o->max_step_tokens, sizeof *s->tok);
    s->want = calloc((size_t)o->max_step_tokens, sizeof *s->want);
    s->seq_st = calloc((size_t)o->max_seqs, sizeof *s->seq_st);
    s->logits = calloc((size_t)o->max_seqs * vocab, sizeof *s->logits);
    s->release = calloc((size_t)s->n_reqs, sizeof *s->release);
    if (!s->reqs || !s->seqs || !s->owner || !s->tok || !s->want || !s->seq_st || !s->logits || !s->release) {
        lam_sched_destroy(s);
        return LAM_ERR_NO_MEMORY;
    }
    *out = s;
    return LAM_OK;
}

int lam_sched_pending(const lam_sched_t *s)
{
    int n = 0;
    for (int i = 0; i < s->n_reqs; i++)
        n += s->reqs[i].state != REQ_FREE;
    return n;
}

int lam_sched_active(const lam_sched_t *s) { return s->n_active; }

lam_status_t lam_sched_cancel(lam_sched_t *s, int req)
{
    if (req < 0 || req >= s->n_reqs || s->reqs[req].state == REQ_FREE)
        return LAM_ERR_NOT_FOUND;
    req_t *q = &s->reqs[req];
    if (q->state == REQ_PREFILL || q->state == REQ_DECODE) {
        s->n_active--;
        /* a sequence still unknown to the nodes (admitted, no chunk sent
         * yet) is released too: unknown ids are ignored there */
        lam_remote_release(s->r, &q->seq_id, 1);
    }
    q->state = REQ_FREE;
    return LAM_OK;
}

int lam_sched_submit(lam_sched_t *s, const int32_t *prompt, int n_prompt, int max_new,
                     const lam_sampler_params_t *sp)
{
    if (n_prompt < 1 || max_new < 0 || n_prompt + max_new > s->o.max_ctx) {
        lam_log_error("scheduler: prompt of %d tokens + %d new does not fit the context of %d", n_prompt,
                      max_new, s->o.max_ctx);
        return LAM_ERR_RANGE;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= s->vocab) {
            lam_log_error("scheduler: prompt token %d out of range", prompt[i]);
            return LAM_ERR_INVALID_ARG;
        }
    int waiting = 0, slot = -1;
    for (int i = 0; i < s->n_reqs; i++) {
        waiting += s->reqs[i].state == REQ_WAITING;
        if (slot < 0 && s->reqs[i].state == REQ_FREE)
            slot = i;
    }
    if (slot < 0 || waiting >= s->o.max_queue) {
        lam_log_warn("scheduler: queue full (%d waiting)", waiting);
        return LAM_ERR_NO_MEMORY;
    }
    req_t *q = &s->reqs[slot];
    lam_sampler_free(&q->smp);
    free(q->prompt);
    free(q->out);
    memset(q, 0, sizeof *q);
    q->prompt = malloc((size_t)n_prompt * sizeof *q->prompt);
    q->out = malloc((size_t)(max_new > 0 ? max_new : 1) * sizeof *q->out);
    lam_status_t st = q->prompt && q->out ? lam_sampler_init(&q->smp, sp, s->vocab) : LAM_ERR_NO_MEMORY;
    if (st != LAM_OK) {
        free(q->prompt);
        free(q->out);
        q->prompt = q->out = NULL;
        return st;
    }
    memcpy(q->prompt, prompt, (size_t)n_prompt * sizeof *prompt);
    q->n_prompt = n_prompt;
    q->n_hist = n_prompt;
    q->max_new = max_new;
    q->order = s->order_next++;
    q->t_queued = lam_now_s();
    q->state = REQ_WAITING;
    return slot;
}

static void finish(lam_sched_t *s, int i, lam_status_t st)
{
    req_t *q = &s->reqs[i];
    if (q->state == REQ_PREFILL || q->state == REQ_DECODE) {
        s->n_active--;
        s->release[s->n_release++] = q->seq_id;
    }
    q->state = REQ_FREE;
    if (s->h.on_done)
        s->h.on_done(s->h.ud, i, st);
}

/* Request i lost its KV on the attention nodes (a node went, why). With
 * recomputes left it queues again to prefill its history under a new
 * sequence id; otherwise it fails with why. */
static void lost(lam_sched_t *s, int i, lam_status_t why)
{
    req_t *q = &s->reqs[i];
    if (q->recomputes >= s->o.recompute_on_loss) {
        lam_log_error("scheduler: request %d failed: an attention node holding its KV cache was lost (%s)", i,
                      lam_status_str(why));
        finish(s, i, why);
        return;
    }
    q->recomputes++;
    s->n_active--;
    s->release[s->n_release++] = q->seq_id; /* the nodes that stayed still hold it */
    /* in decode the KV held prompt + out[0 .. n_out-2]; out[n_out-1] is the
     * next input (the same if it was replaying that already). Still in its
     * prompt: start that again. */
    q->replay = q->replay || q->state == REQ_DECODE;
    q->n_hist = q->replay ? q->n_prompt + q->n_out - 1 : q->n_prompt;
    q->fed = 0;
    q->state = REQ_WAITING; /* its old arrival order puts it first */
    q->t_queued = lam_now_s();
    lam_log_warn("scheduler: request %d lost its KV cache with an attention node; recomputing %d tokens once the "
                 "nodes are back (rebuild %d of at most %d)",
                 i, q->n_hist, q->recomputes, s->o.recompute_on_loss);
}

/* Token k of request q's history: the prompt, then what it generated. */
static int32_t hist_token(const req_t *q, int k)
{
    return k < q->n_prompt ? q->prompt[k] : q->out[k - q->n_prompt];
}

/* The oldest waiting request, or -1. */
static int oldest_waiting(const lam_sched_t *s)
{
    int best = -1;
    for (int i = 0; i < s->n_reqs; i++)
        if (s->reqs[i].state == REQ_WAITING && (best < 0 || s->reqs[i].order < s->reqs[best].order))
            best = i;
    return best;
}

static void admit_and_expire(lam_sched_t *s)
{
    uint64_t epoch = lam_remote_epoch(s->r);
    for (int i = 0; i < s->n_reqs; i++) {
        req_t *q = &s->reqs[i];
        if ((q->state == REQ_PREFILL || q->state == REQ_DECODE) && q->epoch != epoch)
            lost(s, i, LAM_ERR_CONN_CLOSED);
    }
    double now = lam_now_s();
    if (s->o.queue_timeout_s > 0)
        for (int i = 0; i < s->n_reqs; i++)
            if (s->reqs[i].state == REQ_WAITING && now - s->reqs[i].t_queued > s->o.queue_timeout_s) {
                lam_log_error("scheduler: request %d waited %.1f s for the attention nodes; failing it", i,
                              now - s->reqs[i].t_queued);
                finish(s, i, LAM_ERR_TIMEOUT);
            }
    if (!lam_remote_ready(s->r))
        return;
    int i;
    while (s->n_active < s->o.max_seqs && (i = oldest_waiting(s)) >= 0) {
        req_t *q = &s->reqs[i];
        q->state = REQ_PREFILL;
        q->seq_id = ++s->seq_next;
        q->epoch = epoch;
        s->n_active++;
    }
}

/* Fills the step: decode tokens first (one per sequence), then prompt
 * chunks in arrival order while the token budget lasts. */
static void build_step(lam_sched_t *s, lam_step_t *st)
{
    int n_seq = 0, n_tok = 0;
    s->step_no++;
    for (int i = 0; i < s->n_reqs; i++) {
        req_t *q = &s->reqs[i];
        if (q->state != REQ_DECODE)
            continue;
        q->in_step = s->step_no;
        s->seqs[n_seq] = (lam_remote_seq_t){q->seq_id, q->n_prompt + q->n_out - 1, 1};
        s->owner[n_seq++] = i;
        s->tok[n_tok] = q->next;
        s->want[n_tok++] = 1;
    }
    for (;;) {
        int best = -1;
        for (int i = 0; i < s->n_reqs; i++) {
            req_t *q = &s->reqs[i];
            if (q->state == REQ_PREFILL && q->in_step != s->step_no && (best < 0 || q->order < s->reqs[best].order))
                best = i;
        }
        int budget = s->o.max_step_tokens - n_tok;
        if (best < 0 || budget <= 0)
            break;
        req_t *q = &s->reqs[best];
        q->in_step = s->step_no;
        int c = q->n_hist - q->fed;
        c = c < s->o.chunk ? c : s->o.chunk;
        c = c < budget ? c : budget;
        s->seqs[n_seq] = (lam_remote_seq_t){q->seq_id, q->fed, c};
        s->owner[n_seq++] = best;
        for (int j = 0; j < c; j++) {
            s->tok[n_tok] = hist_token(q, q->fed + j);
            s->want[n_tok++] = !q->replay && q->fed + j == q->n_hist - 1 && q->max_new > 0;
        }
    }
    *st = (lam_step_t){n_seq, s->seqs, n_tok, s->tok, s->want};
}

int lam_sched_step(lam_sched_t *s)
{
    s->n_release = 0;
    admit_and_expire(s);
    lam_step_t step;
    build_step(s, &step);
    if (step.n_seq == 0) {
        if (s->n_release)
            lam_remote_release(s->r, s->release, s->n_release);
        return 0;
    }
    lam_status_t st = lam_pipe_step(s->p, &step, s->logits, s->seq_st);
    int row = 0;
    for (int c = 0; c < step.n_seq; c++) {
        int i = s->owner[c];
        req_t *q = &s->reqs[i];
        if (st != LAM_OK) {
            /* the step did not happen: the request is as it was before it */
            if (st == LAM_ERR_CONN_CLOSED || st == LAM_ERR_TIMEOUT)
                lost(s, i, st);
            else
                finish(s, i, st);
            continue;
        }
        /* the chunk's last token has a logits row iff build_step wanted it */
        bool has_row = q->state == REQ_DECODE ||
                       (!q->replay && q->fed + step.seqs[c].n_tok == q->n_hist && q->max_new > 0);
        float *lg = s->logits + (size_t)row * s->vocab;
        row += has_row;
        if (s->seq_st[c] != 0) {
            lam_log_error("scheduler: request %d failed on an attention node: %s", i,
                          lam_status_str((lam_status_t)s->seq_st[c]));
            finish(s, i, (lam_status_t)s->seq_st[c]);
            continue;
        }
        if (q->state == REQ_PREFILL) {
            q->fed += step.seqs[c].n_tok;
            if (q->fed < q->n_hist)
                continue;
            if (q->replay) {
                /* the KV is whole again; out[n_out-1] is the next input */
                q->replay = false;
                q->state = REQ_DECODE;
                lam_log_info("scheduler: request %d: KV cache rebuilt (%d tokens)", i, q->n_hist);
                continue;
            }
            if (q->max_new == 0) {
                finish(s, i, LAM_OK);
                continue;
            }
            q->state = REQ_DECODE;
        }
        int32_t t = lam_sampler_sample(&q->smp, lg);
        q->out[q->n_out++] = t;
        q->next = t;
        if (s->h.on_token)
            s->h.on_token(s->h.ud, i, t);
        if (q->n_out >= q->max_new || (s->h.is_eog && s->h.is_eog(s->h.ud, t)))
            finish(s, i, LAM_OK);
    }
    if (s->n_release)
        lam_remote_release(s->r, s->release, s->n_release);
    return step.n_tok;
}
