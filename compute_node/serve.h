/* The serving loop: one thread (the caller of lam_serve_loop: the main
 * thread in lamina-compute-node) owns the lam_sched_t (and through it the
 * pipeline and the backend) and runs steps while there is work, sleeping
 * on a condition variable when idle. Other threads (HTTP) hand it requests
 * through a mutex-protected inbox and read each request's tokens from the
 * request's own channel as they are generated.
 *
 * Why the main thread: OpenMP's thread pool belongs to the thread that
 * starts parallel regions. The model is loaded (in parallel) on the main
 * thread; a second thread running the dense work would get a second pool,
 * and libgomp throttles its spin-waiting once its threads outnumber the
 * cores, which made every parallel region slower (measured: ~60% slower
 * decode steps on 2 cores). One thread doing all the parallel work keeps
 * one pool.
 *
 * Cancellation (client gone, stop string reached, shutdown) is a request
 * to the loop: it removes the request at the next step boundary and
 * releases its sequence on the attention nodes.
 *
 * A request handle is shared by its submitter and the loop (reference
 * counted): the submitter calls lam_serve_req_release once, whatever state
 * the request is in. */
#ifndef LAM_SERVE_H
#define LAM_SERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/tokenizer.h"
#include "compute_node/metrics.h"
#include "compute_node/sched.h"

typedef struct lam_serve lam_serve_t;
typedef struct lam_serve_req lam_serve_req_t;

typedef struct lam_serve_opts {
    int max_seqs;           /* sequences running at once */
    int max_queue;          /* requests waiting beyond those (more: refused) */
    int chunk;              /* prompt tokens per sequence per step */
    int max_step_tokens;    /* tokens per step */
    int max_ctx;            /* prompt + generated tokens per sequence */
    double queue_timeout_s; /* fail a request waiting this long for the attention nodes (0: never) */
    int threads;            /* OpenMP threads for the dense work, set on the loop's thread (0: as it is) */
    int recompute_on_loss;  /* lam_sched_opts_t's */
} lam_serve_opts_t;

/* How a request ended. */
typedef enum lam_serve_end {
    LAM_SERVE_RUNNING = 0,
    LAM_SERVE_FINISHED,  /* max_new tokens or an end-of-generation token */
    LAM_SERVE_FAILED,    /* the scheduler failed it: see status */
    LAM_SERVE_CANCELLED, /* lam_serve_req_cancel */
    LAM_SERVE_SHUTDOWN,  /* cancelled by lam_serve_cancel_all */
} lam_serve_end_t;

typedef struct lam_serve_snap {
    int n_tok;           /* tokens generated so far (lam_serve_req_tokens) */
    lam_serve_end_t end;
    lam_status_t status; /* LAM_SERVE_FAILED: why */
} lam_serve_snap_t;

/* A scheduler over pipeline p and remote r. tok gives the
 * end-of-generation tokens; mx (may be NULL) gets tokens, batch and queue
 * figures. */
lam_status_t lam_serve_create(lam_pipe_t *p, lam_remote_t *r, const lam_tok_t *tok, int vocab,
                              const lam_serve_opts_t *o, lam_metrics_t *mx, lam_serve_t **out);
/* Runs the scheduler on the calling thread until lam_serve_stop; calls
 * tick(ud) (may be NULL) between steps, about every tick_ms. On stop every
 * request still in flight ends as LAM_SERVE_SHUTDOWN (sequences released). */
void lam_serve_loop(lam_serve_t *s, int tick_ms, void (*tick)(void *ud), void *ud);
/* Makes lam_serve_loop return (any thread, or tick); refuses new requests. */
void lam_serve_stop(lam_serve_t *s);
/* After the loop has returned (or never ran): requests still pending end
 * as LAM_SERVE_SHUTDOWN; their handles stay valid until released. */
void lam_serve_destroy(lam_serve_t *s);

/* Queues a request (the prompt is copied). Errors: LAM_ERR_RANGE (does not
 * fit the context), LAM_ERR_INVALID_ARG (bad tokens or sampler),
 * LAM_ERR_NO_MEMORY (max_seqs + max_queue requests already in flight),
 * LAM_ERR_CONN_CLOSED (lam_serve_stop_accepting was called). */
lam_status_t lam_serve_submit(lam_serve_t *s, const int32_t *prompt, int n_prompt, int max_new,
                              const lam_sampler_params_t *sp, lam_serve_req_t **out);

/* Waits up to timeout_ms until the request has more than `have` tokens or
 * has ended, and describes it. */
void lam_serve_req_wait(lam_serve_req_t *q, int have, int timeout_ms, lam_serve_snap_t *snap);
/* The generated tokens; entries below a snapshot's n_tok never change. */
const int32_t *lam_serve_req_tokens(const lam_serve_req_t *q);
/* Seconds from submission to the first token (-1: none yet). */
double lam_serve_req_ttft(lam_serve_req_t *q);
/* Asks the loop to drop the request (no effect once ended). */
void lam_serve_req_cancel(lam_serve_req_t *q);
/* Gives up the submitter's reference; cancels the request if it runs. */
void lam_serve_req_release(lam_serve_req_t *q);

/* New submissions fail with LAM_ERR_CONN_CLOSED from now on. */
void lam_serve_stop_accepting(lam_serve_t *s);
/* Requests submitted and not yet ended. */
int lam_serve_in_flight(lam_serve_t *s);
/* Ends every request in flight as LAM_SERVE_SHUTDOWN at the next step
 * boundary (their sequences are released); the loop goes on. */
void lam_serve_cancel_all(lam_serve_t *s);

#endif
