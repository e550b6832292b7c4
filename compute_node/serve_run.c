#include "compute_node/serve_run.h"
#include "common/log.h"
#include "common/notify.h"
#include "compute_node/http.h"
#include "compute_node/serve.h"
#include "compute_node/stack.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t g_signals;

static void on_signal(int sig)
{
    (void)sig;
    g_signals++;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* What the serving loop's tick (every 100 ms, on the main thread) looks
 * after: the STATS refresh for /metrics, and shutdown. SIGTERM/SIGINT:
 * stop taking requests, let running ones finish for up to drain_timeout_s
 * (a second signal cuts that short), then cancel the rest, which releases
 * their sequences on the attention nodes; stop once nothing is in flight. */
typedef struct run_state {
    const lam_serve_cfg_t *c;
    lam_http_t *h;
    lam_serve_t *sv;
    lam_remote_t *r;
    double t_stats, deadline;
    bool draining, cancelled;
    sig_atomic_t seen;
} run_state_t;

static void tick(void *ud)
{
    run_state_t *st = ud;
    double now = lam_now_s();
    if (now - st->t_stats >= 1.0) {
        lam_remote_request_stats(st->r);
        st->t_stats = now;
    }
    if (!st->draining && g_signals) {
        st->draining = true;
        st->seen = g_signals;
        st->deadline = now + st->c->drain_timeout_s;
        lam_notify_stopping();
        lam_http_drain(st->h);
        lam_serve_stop_accepting(st->sv);
        lam_log_info("shutting down: %d request(s) in flight, waiting up to %d s for them",
                     lam_serve_in_flight(st->sv), st->c->drain_timeout_s);
    }
    if (!st->draining)
        return;
    int n = lam_serve_in_flight(st->sv);
    if (n == 0) {
        lam_serve_stop(st->sv);
    } else if (!st->cancelled && (now >= st->deadline || g_signals != st->seen)) {
        lam_log_warn("shutting down: cancelling %d unfinished request(s)", n);
        lam_serve_cancel_all(st->sv);
        st->cancelled = true;
    }
}

int lam_serve_run(const lam_serve_cfg_t *c, const lam_model_t *m, const lam_tok_t *tok)
{
    /* handlers only count; the serving loop's tick acts */
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    lam_metrics_t *mx = NULL;
    lam_stack_t sk = {0};
    lam_serve_t *sv = NULL;
    lam_http_t *h = NULL;
    if (lam_metrics_create(10, &mx) != LAM_OK)
        goto done;
    lam_stack_cfg_t kc = {.attention = c->attention, .token_file = c->token_file, .kv_dtype = c->kv_dtype,
                          .wire_dtype = c->wire_dtype, .batch = c->batch, .max_seqs = c->max_seqs,
                          .attn_timeout_ms = c->attn_timeout_ms, .connect_timeout_ms = c->connect_timeout_ms,
                          .spin_us = c->spin_us, .cuda = c->cuda, .gguf = c->gguf, .notify = true,
                          .on_exchange = lam_metrics_exchange, .exchange_ud = mx};
    lam_stack_err_t ke = lam_stack_open(&kc, m, &sk);
    if (ke != LAM_STACK_OK) {
        rc = ke == LAM_STACK_FAILED ? 1 : 2;
        goto done;
    }
    lam_serve_opts_t so = {.max_seqs = c->max_seqs, .max_queue = c->max_queue, .chunk = c->batch,
                           .max_step_tokens = c->batch, .max_ctx = c->ctx, .threads = c->threads,
                           .recompute_on_loss = c->recompute_on_loss};
    if (lam_serve_create(sk.p, sk.r, tok, m->cfg.vocab, &so, mx, &sv) != LAM_OK)
        goto done;
    lam_http_opts_t ho = {.listen = c->http_listen, .port = c->http_port, .api_key = c->api_key,
                          .model_name = c->model_name, .max_body = c->max_body,
                          .max_conns = c->max_seqs + c->max_queue + 64, .ctx = c->ctx,
                          .default_max_tokens = c->default_max_tokens, .defaults = c->defaults,
                          .shutdown_flag = &g_signals};
    if (lam_http_start(&ho, sv, tok, sk.r, sk.n_nodes, mx, &h) != LAM_OK)
        goto done;
    const char *addr = lam_http_addr(h);
    bool v6 = strchr(addr, ':') != NULL;
    printf("lamina-compute-node: http listening on %s%s%s:%d\n", v6 ? "[" : "", addr, v6 ? "]" : "", lam_http_port(h));
    fflush(stdout);
    lam_log_info("serving '%s' on http://%s%s%s:%d with %d attention node(s); up to %d sequences, %d queued",
                 c->model_name, v6 ? "[" : "", addr, v6 ? "]" : "", lam_http_port(h), sk.n_nodes, c->max_seqs,
                 c->max_queue);
    lam_notify_ready_status("Serving %s on %s:%d", c->model_name, addr, lam_http_port(h));

    /* the dense work runs here, on the main thread (serve.h says why) */
    run_state_t st = {.c = c, .h = h, .sv = sv, .r = sk.r};
    lam_serve_loop(sv, 100, tick, &st);
    /* the last replies (a final SSE event, an error body) still go out */
    for (double t_end = lam_now_s() + 2.0; lam_http_busy(h) > 0 && lam_now_s() < t_end;)
        nap_ms(10);
    const lam_pipe_stats_t *ps = lam_pipe_stats(sk.p);
    lam_log_info("served %ld steps, %ld tokens: %.2f s in steps, dense %.2f s, waiting for attention %.2f s",
                 ps->steps, ps->tokens, ps->step_s, ps->dense_s, ps->wait_s);
    rc = 0;
done:
    lam_http_stop(h); /* joins the connection threads: no handle outlives the loop */
    lam_serve_destroy(sv);
    lam_stack_close(&sk);
    lam_metrics_destroy(mx);
    if (rc == 0)
        lam_log_info("shut down cleanly");
    return rc;
}
