/* POST /v1/completions and /v1/chat/completions: the request body is
 * validated field by field (every problem is a 4xx naming the field), the
 * prompt tokenised, the request handed to the serving loop, and the tokens
 * turned into text as they come (serve_text.h: whole code points, stop
 * strings) for one JSON reply or a stream of server-sent events. */
#include "compute_node/http_internal.h"
#include "common/log.h"
#include "compute_node/serve_text.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_STOP_BYTES 256

/* A refused request: status, OpenAI error type, the offending field. */
typedef struct perr {
    int status;
    const char *type, *param, *code;
    char msg[512];
} perr_t;

typedef struct gen_params {
    bool stream, include_usage;
    int32_t *ids;                    /* the prompt */
    size_t n_ids;
    int max_new;                     /* -1: the server's default */
    lam_sampler_params_t sp;
    bool have_seed;
    const char *stop[LAM_SERVE_MAX_STOPS]; /* point into the parsed body */
    int n_stop;
} gen_params_t;

static int refuse(perr_t *e, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int refuse(perr_t *e, int status, const char *param, const char *code, const char *fmt, ...)
{
    e->status = status;
    e->type = status < 500 ? "invalid_request_error" : "server_error";
    e->param = param;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* Optional number field within [lo, hi] (lo excluded if lo_open): 1 set,
 * 0 absent or null, -1 refused. */
static int opt_number(json_t *root, const char *key, double lo, double hi, bool lo_open, double *out, perr_t *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return refuse(e, 400, key, "invalid_type", "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!isfinite(x) || x > hi || x < lo || (lo_open && x == lo))
        return refuse(e, 400, key, "invalid_value", "'%s' must be in %c%g, %g]", key, lo_open ? '(' : '[', lo, hi);
    *out = x;
    return 1;
}

static int opt_int(json_t *root, const char *key, json_int_t lo, json_int_t hi, json_int_t *out, perr_t *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return refuse(e, 400, key, "invalid_type", "'%s' must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return refuse(e, 400, key, "invalid_value", "'%s' must be between %" JSON_INTEGER_FORMAT " and %"
                      JSON_INTEGER_FORMAT, key, lo, hi);
    *out = x;
    return 1;
}

static int opt_bool(json_t *root, const char *key, bool *out, perr_t *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return refuse(e, 400, key, "invalid_type", "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 1;
}

static int encode(lam_http_t *h, const char *text, size_t len, gen_params_t *g, const char *param, perr_t *e)
{
    if (lam_tok_encode(h->tok, text, len, true, true, &g->ids, &g->n_ids) != LAM_OK)
        return refuse(e, 400, param, "invalid_value", "'%s' could not be tokenised", param);
    return 0;
}

static int token_array(lam_http_t *h, json_t *arr, gen_params_t *g, perr_t *e)
{
    size_t n = json_array_size(arr);
    g->ids = malloc((n ? n : 1) * sizeof *g->ids);
    if (!g->ids)
        return refuse(e, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(arr, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= lam_tok_n_vocab(h->tok))
            return refuse(e, 400, "prompt", "invalid_value",
                          "'prompt' as an array must hold token ids in [0, %d) or one string",
                          lam_tok_n_vocab(h->tok));
        g->ids[i] = (int32_t)json_integer_value(t);
    }
    g->n_ids = n;
    return 0;
}

static int parse_prompt(lam_http_t *h, json_t *root, gen_params_t *g, perr_t *e)
{
    json_t *p = json_object_get(root, "prompt");
    if (!p)
        return refuse(e, 400, "prompt", "missing_field", "'prompt' is required");
    if (json_is_string(p))
        return encode(h, json_string_value(p), json_string_length(p), g, "prompt", e);
    if (!json_is_array(p))
        return refuse(e, 400, "prompt", "invalid_type", "'prompt' must be a string or an array");
    json_t *first = json_array_get(p, 0);
    if (json_array_size(p) == 1 && json_is_string(first))
        return encode(h, json_string_value(first), json_string_length(first), g, "prompt", e);
    if (json_array_size(p) == 1 && json_is_array(first))
        return token_array(h, first, g, e);
    if (json_array_size(p) > 1 && json_is_string(first))
        return refuse(e, 400, "prompt", "unsupported", "one prompt per request: batches of prompts are not supported");
    return token_array(h, p, g, e);
}

/* A message's content: a string, null, or an array of {"type":"text"} parts
 * (joined into *owned, which the caller frees). */
static const char *message_text(json_t *content, char **owned, int i, perr_t *e)
{
    if (!content || json_is_null(content))
        return "";
    if (json_is_string(content))
        return json_string_value(content);
    if (!json_is_array(content)) {
        refuse(e, 400, "messages", "invalid_type", "messages[%d].content must be a string or an array of parts", i);
        return NULL;
    }
    lam_serve_str_t s = {0};
    lam_serve_str_add(&s, "", 0);
    for (size_t k = 0; k < json_array_size(content); k++) {
        json_t *part = json_array_get(content, k), *type = json_object_get(part, "type"),
               *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !json_is_string(text)) {
            lam_serve_str_free(&s);
            refuse(e, 400, "messages", "unsupported", "messages[%d].content[%zu]: only text parts are supported", i, k);
            return NULL;
        }
        lam_serve_str_add(&s, json_string_value(text), json_string_length(text));
    }
    *owned = s.p;
    return s.p ? s.p : "";
}

static int parse_messages(lam_http_t *h, json_t *root, gen_params_t *g, perr_t *e)
{
    json_t *m = json_object_get(root, "messages");
    if (!m)
        return refuse(e, 400, "messages", "missing_field", "'messages' is required");
    size_t n = json_array_size(m);
    if (!json_is_array(m) || n == 0)
        return refuse(e, 400, "messages", "invalid_type", "'messages' must be a non-empty array");
    if (n > 4096)
        return refuse(e, 400, "messages", "invalid_value", "too many messages");
    lam_chat_msg_t *msgs = calloc(n, sizeof *msgs);
    char **owned = calloc(n, sizeof *owned);
    int rc = msgs && owned ? 0 : refuse(e, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *msg = json_array_get(m, i), *role = json_object_get(msg, "role");
        if (!json_is_object(msg) || !json_is_string(role)) {
            rc = refuse(e, 400, "messages", "invalid_type", "messages[%zu] must be an object with a string 'role'", i);
            break;
        }
        const char *r = json_string_value(role);
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "developer")) {
            rc = refuse(e, 400, "messages", "invalid_value",
                        "messages[%zu].role must be system, developer, user or assistant", i);
            break;
        }
        const char *text = message_text(json_object_get(msg, "content"), &owned[i], (int)i, e);
        if (!text) {
            rc = -1;
            break;
        }
        msgs[i] = (lam_chat_msg_t){strcmp(r, "developer") ? r : "system", text};
    }
    char *prompt = NULL;
    if (rc == 0 && lam_tok_chat_render(h->tok, msgs, n, true, &prompt) != LAM_OK)
        rc = refuse(e, 400, "messages", "unsupported",
                    "this model's chat template is not supported; use /v1/completions with a prompt");
    if (rc == 0)
        rc = encode(h, prompt, strlen(prompt), g, "messages", e);
    free(prompt);
    for (size_t i = 0; owned && i < n; i++)
        free(owned[i]);
    free(owned);
    free(msgs);
    return rc;
}

static int parse_stop(json_t *root, gen_params_t *g, perr_t *e)
{
    json_t *s = json_object_get(root, "stop");
    if (!s || json_is_null(s))
        return 0;
    json_t *one[1] = {s};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(s)) {
        n = json_array_size(s);
        if (n > LAM_SERVE_MAX_STOPS)
            return refuse(e, 400, "stop", "invalid_value", "'stop' takes at most %d strings", LAM_SERVE_MAX_STOPS);
        items = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = items ? items[i] : json_array_get(s, i);
        if (!json_is_string(v))
            return refuse(e, 400, "stop", "invalid_type", "'stop' must be a string or an array of strings");
        size_t len = json_string_length(v);
        if (len == 0 || len > MAX_STOP_BYTES || strlen(json_string_value(v)) != len)
            return refuse(e, 400, "stop", "invalid_value", "stop strings must be 1 to %d bytes without NUL",
                          MAX_STOP_BYTES);
        g->stop[g->n_stop++] = json_string_value(v);
    }
    return 0;
}

static uint64_t next_seed(lam_http_t *h)
{
    pthread_mutex_lock(&h->rng_mu);
    uint64_t z = (h->rng += 0x9E3779B97F4A7C15ull);
    pthread_mutex_unlock(&h->rng_mu);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Everything but the prompt. */
static int parse_options(lam_http_t *h, json_t *root, bool chat, gen_params_t *g, perr_t *e)
{
    double x;
    json_int_t i;
    int rc;
    g->sp = h->o.defaults;
    g->max_new = -1;
    if ((rc = opt_int(root, "max_tokens", 0, 1 << 24, &i, e)) < 0)
        return -1;
    if (rc)
        g->max_new = (int)i;
    if (chat && (rc = opt_int(root, "max_completion_tokens", 0, 1 << 24, &i, e)) != 0) {
        if (rc < 0)
            return -1;
        g->max_new = (int)i;
    }
    if ((rc = opt_number(root, "temperature", 0.0, 2.0, false, &x, e)) < 0)
        return -1;
    if (rc)
        g->sp.temperature = (float)x;
    if ((rc = opt_number(root, "top_p", 0.0, 1.0, true, &x, e)) < 0)
        return -1;
    if (rc)
        g->sp.top_p = (float)x;
    if ((rc = opt_int(root, "top_k", 0, 1 << 24, &i, e)) < 0)
        return -1;
    if (rc)
        g->sp.top_k = (int)i;
    if ((rc = opt_int(root, "seed", INT64_MIN, INT64_MAX, &i, e)) < 0)
        return -1;
    g->have_seed = rc == 1;
    g->sp.seed = rc ? (uint64_t)i : next_seed(h);
    if ((rc = opt_int(root, "n", 1, 1, &i, e)) < 0 || opt_int(root, "best_of", 1, 1, &i, e) < 0)
        return refuse(e, 400, e->param, "unsupported", "only one choice per request ('%s' must be 1)", e->param);
    if (opt_bool(root, "stream", &g->stream, e) < 0)
        return -1;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so) && (!json_is_object(so) || opt_bool(so, "include_usage", &g->include_usage, e) < 0))
        return refuse(e, 400, "stream_options", "invalid_type", "'stream_options' must be an object with a boolean "
                      "'include_usage'");
    bool echo = false;
    if (opt_bool(root, "echo", &echo, e) < 0 || echo)
        return refuse(e, 400, "echo", "unsupported", "'echo' is not supported");
    json_t *lp = json_object_get(root, "logprobs");
    if (lp && !json_is_null(lp) && !json_is_false(lp) && !(json_is_integer(lp) && json_integer_value(lp) == 0))
        return refuse(e, 400, "logprobs", "unsupported", "'logprobs' is not supported");
    json_t *suffix = json_object_get(root, "suffix");
    if (suffix && !json_is_null(suffix))
        return refuse(e, 400, "suffix", "unsupported", "'suffix' is not supported");
    return parse_stop(root, g, e);
}

static int parse_request(lam_http_t *h, bool chat, const char *body, size_t len, gen_params_t *g, json_t **root,
                         perr_t *e)
{
    json_error_t je;
    *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!*root)
        return refuse(e, 400, NULL, "invalid_json", "The body is not valid JSON: %s (line %d, column %d)", je.text,
                      je.line, je.column);
    if (!json_is_object(*root))
        return refuse(e, 400, NULL, "invalid_json", "The body must be a JSON object");
    json_t *model = json_object_get(*root, "model");
    if (!model)
        return refuse(e, 400, "model", "missing_field", "'model' is required");
    if (!json_is_string(model))
        return refuse(e, 400, "model", "invalid_type", "'model' must be a string");
    if (strcmp(json_string_value(model), h->model_name) != 0)
        return refuse(e, 404, "model", "model_not_found", "The model '%s' does not exist (this server has '%s')",
                      json_string_value(model), h->model_name);
    if (parse_options(h, *root, chat, g, e) < 0)
        return -1;
    if ((chat ? parse_messages(h, *root, g, e) : parse_prompt(h, *root, g, e)) < 0)
        return -1;
    const char *what = chat ? "messages" : "prompt";
    if (g->n_ids == 0)
        return refuse(e, 400, what, "invalid_value", "The prompt is empty");
    if ((int64_t)g->n_ids >= h->o.ctx)
        return refuse(e, 400, what, "context_length_exceeded",
                      "This model's context is %d tokens; the prompt has %zu (at least one must be left to generate)",
                      h->o.ctx, g->n_ids);
    int room = h->o.ctx - (int)g->n_ids;
    if (g->max_new < 0)
        g->max_new = h->o.default_max_tokens;
    if (g->max_new > room)
        g->max_new = room;
    return 0;
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
static void failure(const gen_t *g, perr_t *e)
{
    if (g->end == LAM_SERVE_SHUTDOWN)
        refuse(e, 503, NULL, "shutting_down", "The server shut down before the request finished");
    else if (g->status == LAM_ERR_CONN_CLOSED || g->status == LAM_ERR_TIMEOUT)
        refuse(e, 503, NULL, "attention_unavailable", "An attention node was lost (%s); retry the request",
               lam_status_str(g->status));
    else if (g->status == LAM_ERR_KV_FULL || g->status == LAM_ERR_CTX_FULL)
        refuse(e, 503, NULL, "kv_cache_full", "The attention nodes are out of KV cache (%s); retry later",
               lam_status_str(g->status));
    else
        refuse(e, 500, NULL, "generation_failed", "Generation failed: %s", lam_status_str(g->status));
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
        perr_t e;
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
        perr_t e;
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
    gen_params_t p = {0};
    perr_t e = {0};
    json_t *root = NULL;
    gen_t *g = NULL;
    enum MHD_Result ret;
    if (parse_request(h, chat, body, len, &p, &root, &e) < 0)
        goto refused;
    g = calloc(1, sizeof *g);
    if (!g || lam_serve_text_init(&g->text, h->tok, p.stop, p.n_stop) != LAM_OK) {
        refuse(&e, 500, NULL, NULL, "out of memory");
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
        refuse(&e, 503, NULL, "attention_unavailable", "The attention nodes are not all connected; retry later");
        goto refused;
    }
    lam_status_t st = lam_serve_submit(h->sv, p.ids, (int)p.n_ids, p.max_new, &p.sp, &g->q);
    if (st == LAM_ERR_NO_MEMORY) {
        refuse(&e, 429, NULL, "queue_full", "The server is at capacity; retry later");
        e.type = "rate_limit_error";
        goto refused;
    }
    if (st == LAM_ERR_CONN_CLOSED) {
        refuse(&e, 503, NULL, "shutting_down", "The server is shutting down");
        goto refused;
    }
    if (st != LAM_OK) {
        refuse(&e, 400, NULL, "invalid_value", "The request cannot be served: %s", lam_status_str(st));
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
