/* Shared by http.c (the daemon, routing, small endpoints) and http_gen.c
 * (the completion endpoints); nothing else includes it. */
#ifndef LAM_HTTP_INTERNAL_H
#define LAM_HTTP_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "compute_node/http.h"

struct lam_http {
    lam_http_opts_t o;          /* strings below are owned copies */
    char *api_key, *model_name;
    struct MHD_Daemon *d;
    lam_serve_t *sv;
    const lam_tok_t *tok;
    lam_remote_t *r;
    int n_nodes;
    lam_metrics_t *mx;
    atomic_bool draining;
    atomic_int busy;            /* requests between their first call and MHD's completion notice */
    atomic_ulong next_id;
    pthread_mutex_t rng_mu;     /* seeds for requests that bring none */
    uint64_t rng;
    long t_start;
    char addr[128];
    int port;
};

/* Queues a JSON body (takes ownership of body) with `status`, counts it. */
enum MHD_Result lam_http_reply_json(lam_http_t *h, struct MHD_Connection *c, lam_metrics_ep_t ep, int status,
                                    json_t *body);
/* An OpenAI-style error: {"error":{"message","type","param","code"}};
 * param and code may be NULL. */
enum MHD_Result lam_http_reply_error(lam_http_t *h, struct MHD_Connection *c, lam_metrics_ep_t ep, int status,
                                     const char *type, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/* POST /v1/completions (chat false) and /v1/chat/completions (chat true)
 * with the whole body in hand. */
enum MHD_Result lam_http_generate(lam_http_t *h, struct MHD_Connection *c, bool chat, const char *body,
                                  size_t len);

/* Has the client closed its end (or the socket failed)? */
bool lam_http_client_gone(int fd);

#endif
