/* POST /v1/completions and /v1/chat/completions: the request body is
 * validated field by field and the prompt tokenised (http_parse.c: every
 * problem is a 4xx naming the field), the request handed to the serving
 * loop, and the tokens turned into text as they come (serve_text.h: whole
 * code points, stop strings) for one JSON reply or a stream of server-sent
 * events. */
#include "compute_node/http_internal.h"
#include "compute_node/http_parse.h"
#include "common/log.h"
#include "compute_node/serve_text.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t next_seed(lam_http_t *h)
{
    pthread_mutex_lock(&h->rng_mu);
    uint64_t z = (h->rng += 0x9E3779B97F4A7C15ull);
    pthread_mutex_unlock(&h->rng_mu);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- generation ---- */

typedef struct gen {
    lam_http_t *h;
    lam_serve_req_t *q;
    lam_serve_text_t text;
    bool chat, include_usage;
    int n_prompt, have, fd;
    const char *finish;              /* set when the outcome is known */
    lam_serve_end_t end;             /* LAM_SERVE_FAILED / _SHUTDOWN / _CANCELLED: an error */
    lam_status_t status;
    int n_completion;
    char id[48];
    json_int_t created;
    lam_serve_str_t out;             /* stream bytes not yet handed to MHD */
    size_t out_pos;
    bool done;                       /* stream: [DONE] queued */
} gen_t;

static void gen_free(void *cls)
{
    gen_t *g = cls;
    lam_serve_req_release(g->q);
    lam_serve_text_free(&g->text);
    lam_serve_str_free(&g->out);
    free(g);
}

/* Waits up to timeout_ms for tokens; appends new text to delta; sets
 * g->finish when the request is over. */
static void advance(gen_t *g, int timeout_ms, lam_serve_str_t *delta)
{
    lam_serve_snap_t sn;
    lam_serve_req_wait(g->q, g->have, timeout_ms, &sn);
    const int32_t *t = lam_serve_req_tokens(g->q);
    while (g->have < sn.n_tok) {
        if (lam_serve_text_push(&g->text, t[g->have++], delta)) {
            lam_serve_req_cancel(g->q); /* a stop string: the rest is not wanted */
            g->finish = "stop";
            g->n_completion = g->have;
            return;
        }
    }
    if (sn.end == LAM_SERVE_RUNNING)
        return;
    g->n_completion = sn.n_tok;
    if (sn.end == LAM_SERVE_FINISHED) {
        lam_serve_text_finish(&g->text, delta);
        g->finish = sn.n_tok > 0 && lam_tok_is_eog(g->h->tok, t[sn.n_tok - 1]) ? "stop" : "length";
    } else {
        g->end = sn.end;
        g->status = sn.status;
        g->finish = "error";
    }
}

/* The error a failed request answers with. */
static void failure(const gen_t *g, lam_http_err_t *e)
{
    if (g->end == LAM_SERVE_SHUTDOWN)
        lam_http_refuse(e, 503, NULL, "shutting_down", "The server shut down before the request finished");
    else if (g->status == LAM_ERR_CONN_CLOSED || g->status == LAM_ERR_TIMEOUT)
        lam_http_refuse(e, 503, NULL, "attention_unavailable", "An attention node was lost (%s); retry the request",
                        lam_status_str(g->status));
    else if (g->status == LAM_ERR_KV_FULL || g->status == LAM_ERR_CTX_FULL)
        lam_http_refuse(e, 503, NULL, "kv_cache_full", "The attention nodes are out of KV cache (%s); retry later",
                        lam_status_str(g->status));
    else
        lam_http_refuse(e, 500, NULL, "generation_failed", "Generation failed: %s", lam_status_str(g->status));
}

static json_t *usage(const gen_t *g)
{
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", g->n_prompt, "completion_tokens", g->n_completion,
                     "total_tokens", g->n_prompt + g->n_completion);
}

static json_t *envelope(const gen_t *g, const char *object, json_t *choice)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", g->id, "object", object, "created", g->created, "model",
                     g->h->model_name, "choices", choice);
}

static json_t *text_json(const char *p, size_t n)
{
    json_t *s = json_stringn(p ? p : "", n);
    return s ? s : json_string(""); /* serve_text only emits valid UTF-8 */
}

/* One stream chunk: text (may be empty), finish NULL while running. */
static json_t *chunk(const gen_t *g, const char *p, size_t n, const char *finish, bool role)
{
    json_t *fin = finish ? json_string(finish) : json_null(), *c;
    if (g->chat) {
        json_t *delta = json_object();
        if (role)
            json_object_set_new(delta, "role", json_string("assistant"));
        if (role || n || !finish)
            json_object_set_new(delta, "content", text_json(p, n));
        c = envelope(g, "chat.completion.chunk",
                     json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "delta", delta, "logprobs", "finish_reason", fin));
    } else {
        c = envelope(g, "text_completion",
                     json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "text", text_json(p, n), "logprobs",
                               "finish_reason", fin));
    }
    if (c && g->include_usage)
        json_object_set_new(c, "usage", json_null());
    return c;
}

static void event(gen_t *g, json_t *obj)
{
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (s)
        lam_serve_str_printf(&g->out, "data: %s\n\n", s);
    free(s);
}

static void stream_step(gen_t *g)
{
    lam_serve_str_t delta = {0};
    advance(g, 100, &delta);
    if (delta.n)
        event(g, chunk(g, delta.p, delta.n, NULL, false));
    lam_serve_str_free(&delta);
    if (!g->finish)
        return;
    if (g->end != LAM_SERVE_RUNNING) {
        lam_http_err_t e;
        failure(g, &e);
        event(g, json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", e.msg, "type", e.type, "param", "code",
                           e.code));
    } else {
        event(g, chunk(g, NULL, 0, g->finish, false));
        if (g->include_usage) {
            event(g, json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", g->id, "object",
                               g->chat ? "chat.completion.chunk" : "text_completion", "created", g->created,
                               "model", g->h->model_name, "choices", "usage", usage(g)));
        }
    }
    lam_serve_str_add(&g->out, "data: [DONE]\n\n", 14);
    g->done = true;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    gen_t *g = cls;
    for (;;) {
        if (g->out_pos < g->out.n) {
            size_t n = g->out.n - g->out_pos < max ? g->out.n - g->out_pos : max;
            memcpy(buf, g->out.p + g->out_pos, n);
            g->out_pos += n;
            if (g->out_pos == g->out.n)
                g->out_pos = g->out.n = 0;
            return (ssize_t)n;
        }
        if (g->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (lam_http_client_gone(g->fd)) {
            lam_serve_req_cancel(g->q);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        stream_step(g);
    }
}

static enum MHD_Result reply_stream(lam_http_t *h, struct MHD_Connection *c, gen_t *g, lam_metrics_ep_t ep)
{
    if (g->chat)
        event(g, chunk(g, NULL, 0, NULL, true)); /* the role first, at once */
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, g, gen_free);
    if (!resp) {
        gen_free(g);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    lam_metrics_request(h->mx, ep, MHD_HTTP_OK);
    return ret;
}

static enum MHD_Result reply_whole(lam_http_t *h, struct MHD_Connection *c, gen_t *g, lam_metrics_ep_t ep)
{
    lam_serve_str_t all = {0};
    while (!g->finish) {
        if (lam_http_client_gone(g->fd)) {
            lam_serve_req_cancel(g->q);
            lam_serve_str_free(&all);
            gen_free(g);
            lam_metrics_request(h->mx, ep, 499); /* counted as "other": nobody to answer */
            return MHD_NO;
        }
        advance(g, 100, &all);
    }
    enum MHD_Result ret;
    if (g->end != LAM_SERVE_RUNNING) {
        lam_http_err_t e;
        failure(g, &e);
        ret = lam_http_reply_error(h, c, ep, e.status, e.type, e.param, e.code, "%s", e.msg);
    } else {
        json_t *choice = g->chat ? json_pack("{s:i, s:{s:s, s:o}, s:n, s:s}", "index", 0, "message", "role",
                                             "assistant", "content", text_json(all.p, all.n), "logprobs",
                                             "finish_reason", g->finish)
                                 : json_pack("{s:i, s:o, s:n, s:s}", "index", 0, "text", text_json(all.p, all.n),
                                             "logprobs", "finish_reason", g->finish);
        json_t *body = envelope(g, g->chat ? "chat.completion" : "text_completion", choice);
        if (body)
            json_object_set_new(body, "usage", usage(g));
        ret = lam_http_reply_json(h, c, ep, MHD_HTTP_OK, body);
    }
    lam_serve_str_free(&all);
    gen_free(g);
    return ret;
}

enum MHD_Result lam_http_generate(lam_http_t *h, struct MHD_Connection *c, bool chat, const char *body, size_t len)
{
    lam_metrics_ep_t ep = chat ? LAM_EP_CHAT : LAM_EP_COMPLETIONS;
    lam_http_req_t p = {0};
    lam_http_err_t e = {0};
    json_t *root = NULL;
    gen_t *g = NULL;
    enum MHD_Result ret;
    lam_http_parse_cfg_t cfg = {h->tok, h->model_name, h->o.ctx, h->o.default_max_tokens, h->o.defaults};
    if (lam_http_parse_request(&cfg, chat, body, len, next_seed(h), &p, &root, &e) < 0)
        goto refused;
    g = calloc(1, sizeof *g);
    if (!g || lam_serve_text_init(&g->text, h->tok, p.stop, p.n_stop) != LAM_OK) {
        lam_http_refuse(&e, 500, NULL, NULL, "out of memory");
        goto refused;
    }
    g->h = h;
    g->chat = chat;
    g->include_usage = p.stream && p.include_usage;
    g->n_prompt = (int)p.n_ids;
    g->created = (json_int_t)time(NULL);
    uint64_t id = next_seed(h) ^ (uint64_t)atomic_fetch_add(&h->next_id, 1);
    snprintf(g->id, sizeof g->id, "%s-%016" PRIx64, chat ? "chatcmpl" : "cmpl", id);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    g->fd = ci ? ci->connect_fd : -1;
    if (!lam_remote_ready(h->r)) {
        lam_http_refuse(&e, 503, NULL, "attention_unavailable",
                        "The attention nodes are not all connected; retry later");
        goto refused;
    }
    lam_status_t st = lam_serve_submit(h->sv, p.ids, (int)p.n_ids, p.max_new, &p.sp, &g->q);
    if (st == LAM_ERR_NO_MEMORY) {
        lam_http_refuse(&e, 429, NULL, "queue_full", "The server is at capacity; retry later");
        e.type = "rate_limit_error";
        goto refused;
    }
    if (st == LAM_ERR_CONN_CLOSED) {
        lam_http_refuse(&e, 503, NULL, "shutting_down", "The server is shutting down");
        goto refused;
    }
    if (st != LAM_OK) {
        lam_http_refuse(&e, 400, NULL, "invalid_value", "The request cannot be served: %s", lam_status_str(st));
        goto refused;
    }
    free(p.ids);
    json_decref(root); /* the stop strings were copied by lam_serve_text_init */
    return p.stream ? reply_stream(h, c, g, ep) : reply_whole(h, c, g, ep);
refused:
    if (g) {
        lam_serve_text_free(&g->text);
        free(g);
    }
    free(p.ids);
    ret = lam_http_reply_error(h, c, ep, e.status, e.type, e.param, e.code, "%s", e.msg);
    json_decref(root);
    return ret;
}
