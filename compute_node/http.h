/* The compute node's OpenAI-compatible HTTP front end (libmicrohttpd,
 * one thread per connection):
 *
 *   POST /v1/completions, POST /v1/chat/completions   (JSON; "stream": true as SSE)
 *   GET  /v1/models, GET /v1/models/{id}
 *   GET  /health     200 when every attention node is connected, else 503
 *   GET  /metrics    Prometheus text format
 *
 * Every 4xx/5xx carries {"error":{"message","type","param","code"}}. With
 * an API key, /v1/ requests need "Authorization: Bearer KEY" (401
 * otherwise); /health and /metrics stay open for probes and scrapers.
 * Requests go to the serving loop (serve.h); a connection thread blocks on
 * its request's tokens and watches its socket, so a client that goes away
 * cancels its request. */
#ifndef LAM_HTTP_H
#define LAM_HTTP_H

#include <signal.h>
#include <stddef.h>

#include "common/tokenizer.h"
#include "compute_node/metrics.h"
#include "compute_node/sampler.h"
#include "compute_node/serve.h"

typedef struct lam_http lam_http_t;

typedef struct lam_http_opts {
    const char *listen;             /* address or host name to bind */
    int port;                       /* 0: any free port (lam_http_port tells) */
    const char *api_key;            /* NULL: no authentication */
    const char *model_name;         /* what /v1/models lists and requests must name */
    size_t max_body;                /* request bodies larger than this get 413 */
    int max_conns;                  /* concurrent connections */
    int ctx;                        /* context window: prompt + generated tokens */
    int default_max_tokens;         /* for requests without max_tokens */
    lam_sampler_params_t defaults;  /* temperature, top_k, top_p when a request gives none */
    /* optional: a signal handler's flag; once nonzero the server drains as
     * after lam_http_drain (at once, not when the serving loop gets to it) */
    const volatile sig_atomic_t *shutdown_flag;
} lam_http_opts_t;

/* Binds and starts serving; n_nodes attention nodes behind r (for /health
 * and /metrics). The caller keeps sv, tok, r and mx alive until
 * lam_http_stop returns. */
lam_status_t lam_http_start(const lam_http_opts_t *o, lam_serve_t *sv, const lam_tok_t *tok, lam_remote_t *r,
                            int n_nodes, lam_metrics_t *mx, lam_http_t **out);
int lam_http_port(const lam_http_t *h);
const char *lam_http_addr(const lam_http_t *h);
/* From now on new /v1/ requests get 503; running ones carry on. */
void lam_http_drain(lam_http_t *h);
/* Requests being received or answered (idle keep-alive connections are
 * not counted). */
int lam_http_busy(lam_http_t *h);
/* Closes the listener and every connection, waiting for their threads. */
void lam_http_stop(lam_http_t *h);

#endif
