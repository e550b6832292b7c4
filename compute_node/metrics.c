#include "compute_node/metrics.h"
#include "common/log.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Statuses the server answers with; anything else is counted as "other". */
static const int STATUS_CODES[] = {200, 400, 401, 404, 405, 413, 429, 500, 503};
#define N_STATUS (sizeof STATUS_CODES / sizeof STATUS_CODES[0] + 1)

static const char *const EP_NAMES[LAM_EP_COUNT] = {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                                   "/health", "/metrics", "other"};

/* Fixed upper bounds in seconds (+Inf implied). */
static const double EXCHANGE_BOUNDS[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                         0.025,  0.05,    0.1,    0.25,  1.0};
static const double TTFT_BOUNDS[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0};
#define MAX_BOUNDS 12

typedef struct hist {
    const double *bounds;
    int n_bounds;
    atomic_ulong count[MAX_BOUNDS + 1]; /* per bucket, not cumulative; last: +Inf */
    atomic_ulong sum_ns;
} hist_t;

#define RING 64 /* seconds of token counts kept (>= the window) */

struct lam_metrics {
    atomic_ulong requests[LAM_EP_COUNT][N_STATUS];
    atomic_long prompt_tokens, gen_tokens;
    atomic_int running, waiting;
    hist_t exchange, ttft;
    int window_s;
    pthread_mutex_t mu; /* the ring */
    long ring_sec[RING];
    long ring_tok[RING];
};

static void hist_init(hist_t *h, const double *bounds, int n)
{
    h->bounds = bounds;
    h->n_bounds = n;
}

static void hist_observe(hist_t *h, double v)
{
    int b = 0;
    while (b < h->n_bounds && v > h->bounds[b])
        b++;
    atomic_fetch_add_explicit(&h->count[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, (unsigned long)(v > 0 ? v * 1e9 : 0), memory_order_relaxed);
}

lam_status_t lam_metrics_create(int window_s, lam_metrics_t **out)
{
    if (window_s < 1 || window_s > RING - 2)
        return LAM_ERR_INVALID_ARG;
    lam_metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return LAM_ERR_NO_MEMORY;
    m->window_s = window_s;
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->exchange, EXCHANGE_BOUNDS, (int)(sizeof EXCHANGE_BOUNDS / sizeof EXCHANGE_BOUNDS[0]));
    hist_init(&m->ttft, TTFT_BOUNDS, (int)(sizeof TTFT_BOUNDS / sizeof TTFT_BOUNDS[0]));
    for (int i = 0; i < RING; i++)
        m->ring_sec[i] = -1;
    *out = m;
    return LAM_OK;
}

void lam_metrics_destroy(lam_metrics_t *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void lam_metrics_request(lam_metrics_t *m, lam_metrics_ep_t ep, int http_status)
{
    if (!m || ep < 0 || ep >= LAM_EP_COUNT)
        return;
    size_t s = 0;
    while (s < N_STATUS - 1 && STATUS_CODES[s] != http_status)
        s++;
    atomic_fetch_add(&m->requests[ep][s], 1);
}

void lam_metrics_prompt_tokens(lam_metrics_t *m, long n)
{
    if (m)
        atomic_fetch_add(&m->prompt_tokens, n);
}

void lam_metrics_gen_tokens(lam_metrics_t *m, long n)
{
    if (!m || n <= 0)
        return;
    atomic_fetch_add(&m->gen_tokens, n);
    long sec = (long)floor(lam_now_s());
    pthread_mutex_lock(&m->mu);
    int i = (int)(sec % RING);
    if (m->ring_sec[i] != sec) {
        m->ring_sec[i] = sec;
        m->ring_tok[i] = 0;
    }
    m->ring_tok[i] += n;
    pthread_mutex_unlock(&m->mu);
}

double lam_metrics_tokens_per_s(lam_metrics_t *m)
{
    /* the last window_s whole seconds (the current one is still filling) */
    long now = (long)floor(lam_now_s()), sum = 0;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < RING; i++)
        if (m->ring_sec[i] >= now - m->window_s && m->ring_sec[i] < now)
            sum += m->ring_tok[i];
    pthread_mutex_unlock(&m->mu);
    return (double)sum / m->window_s;
}

void lam_metrics_sched(lam_metrics_t *m, int running, int waiting)
{
    if (!m)
        return;
    atomic_store(&m->running, running);
    atomic_store(&m->waiting, waiting);
}

void lam_metrics_ttft(lam_metrics_t *m, double seconds)
{
    if (m)
        hist_observe(&m->ttft, seconds);
}

void lam_metrics_exchange(void *ud, int layer, double seconds)
{
    (void)layer;
    if (ud)
        hist_observe(&((lam_metrics_t *)ud)->exchange, seconds);
}

static void hist_render(const hist_t *h, const char *name, const char *help, lam_serve_str_t *out)
{
    lam_serve_str_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    unsigned long cum = 0;
    for (int b = 0; b <= h->n_bounds; b++) {
        cum += atomic_load(&h->count[b]);
        if (b < h->n_bounds)
            lam_serve_str_printf(out, "%s_bucket{le=\"%g\"} %lu\n", name, h->bounds[b], cum);
        else
            lam_serve_str_printf(out, "%s_bucket{le=\"+Inf\"} %lu\n", name, cum);
    }
    lam_serve_str_printf(out, "%s_sum %.9f\n%s_count %lu\n", name, atomic_load(&h->sum_ns) / 1e9, name, cum);
}

/* A label value with \, " and newline escaped. */
static void label_value(const char *s, char *buf, size_t len)
{
    size_t o = 0;
    for (; *s && o + 3 < len; s++) {
        if (*s == '\\' || *s == '"') {
            buf[o++] = '\\';
            buf[o++] = *s;
        } else if (*s == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else {
            buf[o++] = *s;
        }
    }
    buf[o] = '\0';
}

lam_status_t lam_metrics_render(lam_metrics_t *m, lam_remote_t *r, int n_nodes, lam_serve_str_t *out)
{
    lam_serve_str_printf(out, "# HELP lamina_http_requests_total HTTP requests answered, by endpoint and status.\n"
                              "# TYPE lamina_http_requests_total counter\n");
    for (int e = 0; e < LAM_EP_COUNT; e++)
        for (size_t s = 0; s < N_STATUS; s++) {
            unsigned long v = atomic_load(&m->requests[e][s]);
            if (!v)
                continue;
            if (s < N_STATUS - 1)
                lam_serve_str_printf(out, "lamina_http_requests_total{endpoint=\"%s\",status=\"%d\"} %lu\n",
                                     EP_NAMES[e], STATUS_CODES[s], v);
            else
                lam_serve_str_printf(out, "lamina_http_requests_total{endpoint=\"%s\",status=\"other\"} %lu\n",
                                     EP_NAMES[e], v);
        }
    lam_serve_str_printf(out,
                         "# HELP lamina_prompt_tokens_total Prompt tokens of accepted requests.\n"
                         "# TYPE lamina_prompt_tokens_total counter\nlamina_prompt_tokens_total %ld\n"
                         "# HELP lamina_generation_tokens_total Tokens generated.\n"
                         "# TYPE lamina_generation_tokens_total counter\nlamina_generation_tokens_total %ld\n"
                         "# HELP lamina_generation_tokens_per_second Tokens generated per second over the last %d s.\n"
                         "# TYPE lamina_generation_tokens_per_second gauge\n"
                         "lamina_generation_tokens_per_second %.3f\n"
                         "# HELP lamina_batch_size Sequences running (prefill or decode) after the last step.\n"
                         "# TYPE lamina_batch_size gauge\nlamina_batch_size %d\n"
                         "# HELP lamina_queue_length Requests waiting to be admitted.\n"
                         "# TYPE lamina_queue_length gauge\nlamina_queue_length %d\n",
                         atomic_load(&m->prompt_tokens), atomic_load(&m->gen_tokens), m->window_s,
                         lam_metrics_tokens_per_s(m), atomic_load(&m->running), atomic_load(&m->waiting));
    if (r && n_nodes > 0) {
        static const char *const names[] = {"up", "kv_pages_used", "kv_pages_total", "sequences", "losses_total"};
        static const char *const helps[] = {"1 when the attention node is connected and authenticated.",
                                            "KV cache pages in use on the attention node (last STATS).",
                                            "KV cache pages on the attention node (last STATS).",
                                            "Sequences held by the attention node (last STATS).",
                                            "Connections to the attention node lost so far."};
        lam_remote_node_info_t *info = calloc((size_t)n_nodes, sizeof *info);
        if (!info)
            return LAM_ERR_NO_MEMORY;
        for (int i = 0; i < n_nodes; i++)
            lam_remote_node_info(r, i, &info[i]);
        for (int k = 0; k < 5; k++) {
            lam_serve_str_printf(out, "# HELP lamina_attention_node_%s %s\n# TYPE lamina_attention_node_%s %s\n",
                                 names[k], helps[k], names[k], k == 4 ? "counter" : "gauge");
            for (int i = 0; i < n_nodes; i++) {
                char peer[700];
                label_value(info[i].peer, peer, sizeof peer);
                uint64_t v = k == 0 ? info[i].up : k == 1 ? info[i].stats.pages_used
                           : k == 2 ? info[i].stats.pages_total : k == 3 ? info[i].stats.n_seqs : info[i].losses;
                lam_serve_str_printf(out, "lamina_attention_node_%s{node=\"%d\",peer=\"%s\"} %llu\n", names[k], i,
                                     peer, (unsigned long long)v);
            }
        }
        free(info);
    }
    hist_render(&m->exchange, "lamina_exchange_seconds",
                "Per-layer attention exchange of one micro-batch: q/k/v submitted to every node's answer.", out);
    hist_render(&m->ttft, "lamina_time_to_first_token_seconds",
                "Time from accepting a request to its first generated token.", out);
    return out->p ? LAM_OK : LAM_ERR_NO_MEMORY;
}
