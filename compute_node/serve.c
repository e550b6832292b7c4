#include "compute_node/serve.h"
#include "common/log.h"

#include <errno.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct lam_serve_req {
    lam_serve_t *s;
    atomic_int refs;                /* the submitter's, the scheduler's until the end, a cancel's */
    int32_t *prompt;                /* [n_prompt] */
    int n_prompt, max_new;
    lam_sampler_params_t sp;
    double t_submit;
    int sched_id;                   /* loop thread only; -1 when not in the scheduler */
    /* under mu: */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t *toks;                  /* [max_new] */
    int n_tok;
    lam_serve_end_t end;
    lam_status_t status;
    double t_first;
    /* under s->mu: */
    bool cancel_queued;             /* once: a request enters the cancel list at most once */
    lam_serve_req_t *next, *next_cancel;
};

struct lam_serve {
    lam_remote_t *r;
    const lam_tok_t *tok;
    lam_metrics_t *mx;
    lam_serve_opts_t o;
    lam_sched_t *sc;
    lam_serve_req_t **by_id;        /* [n_slots] scheduler id -> request; loop thread only */
    int n_slots;
    long step_tokens;               /* tokens generated in the current step (loop thread) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lam_serve_req_t *in_head, *in_tail, *cancel_head;
    bool stop, accepting, cancel_all;
    int in_flight;
};

static void req_unref(lam_serve_req_t *q)
{
    if (atomic_fetch_sub(&q->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q->prompt);
    free(q->toks);
    free(q);
}

/* Ends q (loop thread); the first end wins. */
static void req_end(lam_serve_t *s, lam_serve_req_t *q, lam_serve_end_t how, lam_status_t st)
{
    pthread_mutex_lock(&q->mu);
    bool first = q->end == LAM_SERVE_RUNNING;
    if (first) {
        q->end = how;
        q->status = st;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    if (first) {
        pthread_mutex_lock(&s->mu);
        s->in_flight--;
        pthread_mutex_unlock(&s->mu);
    }
}

/* ---- scheduler hooks (loop thread, inside lam_sched_step) ---- */

static void on_token(void *ud, int id, int32_t t)
{
    lam_serve_t *s = ud;
    lam_serve_req_t *q = s->by_id[id];
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    if (q->n_tok < q->max_new)
        q->toks[q->n_tok++] = t;
    bool first = q->n_tok == 1;
    if (first)
        q->t_first = lam_now_s();
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    if (first)
        lam_metrics_ttft(s->mx, q->t_first - q->t_submit);
    s->step_tokens++;
}

static void on_done(void *ud, int id, lam_status_t st)
{
    lam_serve_t *s = ud;
    lam_serve_req_t *q = s->by_id[id];
    if (!q)
        return;
    s->by_id[id] = NULL;
    q->sched_id = -1;
    /* counted before the submitter can see the end (and read /metrics) */
    lam_metrics_gen_tokens(s->mx, s->step_tokens);
    s->step_tokens = 0;
    req_end(s, q, st == LAM_OK ? LAM_SERVE_FINISHED : LAM_SERVE_FAILED, st);
    req_unref(q);
}

static bool is_eog(void *ud, int32_t t) { return lam_tok_is_eog(((lam_serve_t *)ud)->tok, t); }

/* ---- the loop ---- */

static void admit(lam_serve_t *s, lam_serve_req_t *q)
{
    int id = lam_sched_submit(s->sc, q->prompt, q->n_prompt, q->max_new, &q->sp);
    if (id < 0) {
        req_end(s, q, LAM_SERVE_FAILED, (lam_status_t)id);
        req_unref(q);
        return;
    }
    s->by_id[id] = q;
    q->sched_id = id;
    lam_metrics_prompt_tokens(s->mx, q->n_prompt);
}

static void cancel_one(lam_serve_t *s, lam_serve_req_t *q, lam_serve_end_t how)
{
    int id = q->sched_id;
    if (id < 0 || s->by_id[id] != q)
        return; /* ended already */
    lam_sched_cancel(s->sc, id);
    s->by_id[id] = NULL;
    q->sched_id = -1;
    req_end(s, q, how, LAM_OK);
    req_unref(q);
}

static void publish_counts(lam_serve_t *s)
{
    int pending = lam_sched_pending(s->sc), active = lam_sched_active(s->sc);
    pthread_mutex_lock(&s->mu);
    int inbox = 0;
    for (lam_serve_req_t *q = s->in_head; q; q = q->next)
        inbox++;
    pthread_mutex_unlock(&s->mu);
    lam_metrics_sched(s->mx, active, pending - active + inbox);
}

static void wait_ms(lam_serve_t *s, int ms)
{
    struct timespec ts;
    lam_deadline_ts(&ts, ms);
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

void lam_serve_loop(lam_serve_t *s, int tick_ms, void (*tick)(void *ud), void *ud)
{
    if (s->o.threads > 0)
        omp_set_num_threads(s->o.threads);
    double t_tick = lam_now_s();
    pthread_mutex_lock(&s->mu);
    for (;;) {
        lam_serve_req_t *in = s->in_head, *cn = s->cancel_head;
        s->in_head = s->in_tail = s->cancel_head = NULL;
        bool all = s->cancel_all || s->stop, stop = s->stop;
        s->cancel_all = false;
        pthread_mutex_unlock(&s->mu);

        while (in) {
            lam_serve_req_t *next = in->next;
            admit(s, in);
            in = next;
        }
        while (cn) {
            lam_serve_req_t *next = cn->next_cancel;
            cancel_one(s, cn, LAM_SERVE_CANCELLED);
            req_unref(cn); /* the cancel's reference */
            cn = next;
        }
        if (all)
            for (int i = 0; i < s->n_slots; i++)
                if (s->by_id[i])
                    cancel_one(s, s->by_id[i], LAM_SERVE_SHUTDOWN);
        if (stop) {
            publish_counts(s);
            return;
        }
        int n = 0;
        if (lam_sched_pending(s->sc) > 0) {
            s->step_tokens = 0;
            n = lam_sched_step(s->sc);
            lam_metrics_gen_tokens(s->mx, s->step_tokens);
        }
        publish_counts(s);
        if (tick && lam_now_s() - t_tick >= tick_ms * 1e-3) {
            tick(ud);
            t_tick = lam_now_s();
        }

        pthread_mutex_lock(&s->mu);
        if (!s->in_head && !s->cancel_head && !s->cancel_all && !s->stop) {
            if (lam_sched_pending(s->sc) == 0)
                wait_ms(s, tick_ms); /* idle: a submission or the next tick wakes us */
            else if (n == 0)
                wait_ms(s, 10);      /* queued requests wait for the attention nodes */
        }
    }
}

void lam_serve_stop(lam_serve_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->accepting = false;
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

lam_status_t lam_serve_create(lam_pipe_t *p, lam_remote_t *r, const lam_tok_t *tok, int vocab,
                              const lam_serve_opts_t *o, lam_metrics_t *mx, lam_serve_t **out)
{
    if (o->max_seqs < 1 || o->max_queue < 0)
        return LAM_ERR_CONFIG;
    lam_serve_t *s = calloc(1, sizeof *s);
    if (!s)
        return LAM_ERR_NO_MEMORY;
    s->r = r;
    s->tok = tok;
    s->mx = mx;
    s->o = *o;
    s->accepting = true;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    /* the scheduler may hold every request in flight waiting (while the
     * nodes are down): its queue is max_seqs + max_queue long, and
     * lam_serve_submit enforces the real limit */
    lam_sched_opts_t so = {.max_seqs = o->max_seqs, .max_queue = o->max_seqs + o->max_queue, .chunk = o->chunk,
                           .max_step_tokens = o->max_step_tokens, .max_ctx = o->max_ctx,
                           .queue_timeout_s = o->queue_timeout_s, .recompute_on_loss = o->recompute_on_loss};
    lam_sched_hooks_t h = {on_token, on_done, is_eog, s};
    s->n_slots = so.max_seqs + so.max_queue;
    s->by_id = calloc((size_t)s->n_slots, sizeof *s->by_id);
    lam_status_t st = s->by_id ? lam_sched_create(p, r, vocab, &so, &h, &s->sc) : LAM_ERR_NO_MEMORY;
    if (st != LAM_OK) {
        lam_serve_destroy(s);
        return st;
    }
    *out = s;
    return LAM_OK;
}

void lam_serve_destroy(lam_serve_t *s)
{
    if (!s)
        return;
    /* what the loop did not see: submissions (never admitted) and cancels */
    for (lam_serve_req_t *q = s->in_head, *next; q; q = next) {
        next = q->next;
        req_end(s, q, LAM_SERVE_SHUTDOWN, LAM_OK);
        req_unref(q);
    }
    for (lam_serve_req_t *q = s->cancel_head, *next; q; q = next) {
        next = q->next_cancel;
        req_unref(q);
    }
    for (int i = 0; s->by_id && i < s->n_slots; i++)
        if (s->by_id[i]) {
            req_end(s, s->by_id[i], LAM_SERVE_SHUTDOWN, LAM_OK);
            req_unref(s->by_id[i]);
        }
    lam_sched_destroy(s->sc);
    free(s->by_id);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

lam_status_t lam_serve_submit(lam_serve_t *s, const int32_t *prompt, int n_prompt, int max_new,
                              const lam_sampler_params_t *sp, lam_serve_req_t **out)
{
    if (n_prompt < 1 || max_new < 0 || n_prompt + max_new > s->o.max_ctx)
        return LAM_ERR_RANGE;
    lam_serve_req_t *q = calloc(1, sizeof *q);
    if (!q)
        return LAM_ERR_NO_MEMORY;
    q->prompt = malloc((size_t)n_prompt * sizeof *q->prompt);
    q->toks = malloc(((size_t)max_new + 1) * sizeof *q->toks);
    if (!q->prompt || !q->toks) {
        free(q->prompt);
        free(q->toks);
        free(q);
        return LAM_ERR_NO_MEMORY;
    }
    memcpy(q->prompt, prompt, (size_t)n_prompt * sizeof *prompt);
    q->s = s;
    q->n_prompt = n_prompt;
    q->max_new = max_new;
    q->sp = *sp;
    q->sched_id = -1;
    q->t_submit = lam_now_s();
    q->t_first = -1;
    atomic_init(&q->refs, 2);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    pthread_mutex_lock(&s->mu);
    lam_status_t st = !s->accepting                                  ? LAM_ERR_CONN_CLOSED
                      : s->in_flight >= s->o.max_seqs + s->o.max_queue ? LAM_ERR_NO_MEMORY
                                                                       : LAM_OK;
    if (st == LAM_OK) {
        s->in_flight++;
        if (s->in_tail)
            s->in_tail->next = q;
        else
            s->in_head = q;
        s->in_tail = q;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (st != LAM_OK) {
        atomic_store(&q->refs, 1);
        req_unref(q);
        return st;
    }
    *out = q;
    return LAM_OK;
}

void lam_serve_req_wait(lam_serve_req_t *q, int have, int timeout_ms, lam_serve_snap_t *snap)
{
    struct timespec ts;
    lam_deadline_ts(&ts, timeout_ms);
    pthread_mutex_lock(&q->mu);
    int rc = 0;
    while (q->n_tok <= have && q->end == LAM_SERVE_RUNNING && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&q->cv, &q->mu, &ts);
    snap->n_tok = q->n_tok;
    snap->end = q->end;
    snap->status = q->status;
    pthread_mutex_unlock(&q->mu);
}

const int32_t *lam_serve_req_tokens(const lam_serve_req_t *q) { return q->toks; }

double lam_serve_req_ttft(lam_serve_req_t *q)
{
    pthread_mutex_lock(&q->mu);
    double t = q->t_first < 0 ? -1.0 : q->t_first - q->t_submit;
    pthread_mutex_unlock(&q->mu);
    return t;
}

void lam_serve_req_cancel(lam_serve_req_t *q)
{
    lam_serve_t *s = q->s;
    pthread_mutex_lock(&q->mu);
    bool running = q->end == LAM_SERVE_RUNNING;
    pthread_mutex_unlock(&q->mu);
    if (!running)
        return;
    pthread_mutex_lock(&s->mu);
    if (!q->cancel_queued) {
        q->cancel_queued = true;
        atomic_fetch_add(&q->refs, 1);
        q->next_cancel = s->cancel_head;
        s->cancel_head = q;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

void lam_serve_req_release(lam_serve_req_t *q)
{
    if (!q)
        return;
    lam_serve_req_cancel(q);
    req_unref(q);
}

void lam_serve_stop_accepting(lam_serve_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->accepting = false;
    pthread_mutex_unlock(&s->mu);
}

int lam_serve_in_flight(lam_serve_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->in_flight;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void lam_serve_cancel_all(lam_serve_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->cancel_all = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}
