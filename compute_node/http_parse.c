/* Request bodies of the completion endpoints (http_parse.h). */
#include "compute_node/http_parse.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* Cuts a code point that truncation left incomplete at the end of s, so a
 * message quoting the request (valid UTF-8) stays valid UTF-8. */
static void utf8_trim_tail(char *s)
{
    size_t len = strlen(s), i = len;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (len - (i - 1) < need)
        s[i - 1] = '\0';
}

void lam_http_utf8_sanitize(const char *src, char *dst, size_t cap)
{
    const utf8proc_uint8_t *s = (const utf8proc_uint8_t *)src;
    utf8proc_ssize_t left = (utf8proc_ssize_t)strlen(src);
    size_t o = 0;
    while (left > 0) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s, left, &cp);
        bool bad = k < 1;
        if (bad)
            k = 1;
        if (o + (size_t)k >= cap)
            break;
        if (bad)
            dst[o] = '?';
        else
            memcpy(dst + o, s, (size_t)k);
        o += (size_t)k;
        s += k;
        left -= k;
    }
    dst[o] = '\0';
}

int lam_http_refuse(lam_http_err_t *e, int status, const char *param, const char *code, const char *fmt, ...)
{
    e->status = status;
    e->type = status < 500 ? "invalid_request_error" : "server_error";
    e->param = param;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof e->msg)
        utf8_trim_tail(e->msg);
    return -1;
}

/* Optional number field within [lo, hi] (lo excluded if lo_open): 1 set,
 * 0 absent or null, -1 refused. */
static int opt_number(json_t *root, const char *key, double lo, double hi, bool lo_open, double *out, lam_http_err_t *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return lam_http_refuse(e, 400, key, "invalid_type", "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!isfinite(x) || x > hi || x < lo || (lo_open && x == lo))
        return lam_http_refuse(e, 400, key, "invalid_value", "'%s' must be in %c%g, %g]", key, lo_open ? '(' : '[',
                               lo, hi);
    *out = x;
    return 1;
}

static int opt_int(json_t *root, const char *key, json_int_t lo, json_int_t hi, json_int_t *out, lam_http_err_t *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return lam_http_refuse(e, 400, key, "invalid_type", "'%s' must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return lam_http_refuse(e, 400, key, "invalid_value", "'%s' must be between %" JSON_INTEGER_FORMAT " and %"
                               JSON_INTEGER_FORMAT, key, lo, hi);
    *out = x;
    return 1;
}

static int opt_bool(json_t *root, const char *key, bool *out, lam_http_err_t *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return lam_http_refuse(e, 400, key, "invalid_type", "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 1;
}

static int encode(const lam_http_parse_cfg_t *cfg, const char *text, size_t len, lam_http_req_t *g,
                  const char *param, lam_http_err_t *e)
{
    if (lam_tok_encode(cfg->tok, text, len, true, true, &g->ids, &g->n_ids) != LAM_OK)
        return lam_http_refuse(e, 400, param, "invalid_value", "'%s' could not be tokenised", param);
    return 0;
}

static int token_array(const lam_http_parse_cfg_t *cfg, json_t *arr, lam_http_req_t *g, lam_http_err_t *e)
{
    size_t n = json_array_size(arr);
    g->ids = malloc((n ? n : 1) * sizeof *g->ids);
    if (!g->ids)
        return lam_http_refuse(e, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(arr, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= lam_tok_n_vocab(cfg->tok))
            return lam_http_refuse(e, 400, "prompt", "invalid_value",
                                   "'prompt' as an array must hold token ids in [0, %d) or one string",
                                   lam_tok_n_vocab(cfg->tok));
        g->ids[i] = (int32_t)json_integer_value(t);
    }
    g->n_ids = n;
    return 0;
}

static int parse_prompt(const lam_http_parse_cfg_t *cfg, json_t *root, lam_http_req_t *g, lam_http_err_t *e)
{
    json_t *p = json_object_get(root, "prompt");
    if (!p)
        return lam_http_refuse(e, 400, "prompt", "missing_field", "'prompt' is required");
    if (json_is_string(p))
        return encode(cfg, json_string_value(p), json_string_length(p), g, "prompt", e);
    if (!json_is_array(p))
        return lam_http_refuse(e, 400, "prompt", "invalid_type", "'prompt' must be a string or an array");
    json_t *first = json_array_get(p, 0);
    if (json_array_size(p) == 1 && json_is_string(first))
        return encode(cfg, json_string_value(first), json_string_length(first), g, "prompt", e);
    if (json_array_size(p) == 1 && json_is_array(first))
        return token_array(cfg, first, g, e);
    if (json_array_size(p) > 1 && json_is_string(first))
        return lam_http_refuse(e, 400, "prompt", "unsupported",
                               "one prompt per request: batches of prompts are not supported");
    return token_array(cfg, p, g, e);
}

/* A message's content: a string, null, or an array of {"type":"text"} parts
 * (joined into *owned, which the caller frees). Strings hold no NUL: the
 * JSON parser refuses \u0000. */
static const char *message_text(json_t *content, char **owned, int i, lam_http_err_t *e)
{
    if (!content || json_is_null(content))
        return "";
    if (json_is_string(content))
        return json_string_value(content);
    if (!json_is_array(content)) {
        lam_http_refuse(e, 400, "messages", "invalid_type",
                        "messages[%d].content must be a string or an array of parts", i);
        return NULL;
    }
    lam_serve_str_t s = {0};
    lam_serve_str_add(&s, "", 0);
    for (size_t k = 0; k < json_array_size(content); k++) {
        json_t *part = json_array_get(content, k), *type = json_object_get(part, "type"),
               *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !json_is_string(text)) {
            lam_serve_str_free(&s);
            lam_http_refuse(e, 400, "messages", "unsupported",
                            "messages[%d].content[%zu]: only text parts are supported", i, k);
            return NULL;
        }
        if (lam_serve_str_add(&s, json_string_value(text), json_string_length(text)) != LAM_OK) {
            lam_serve_str_free(&s);
            lam_http_refuse(e, 500, NULL, NULL, "out of memory");
            return NULL;
        }
    }
    if (!s.p) { /* no parts, and the first add ran out of memory */
        lam_http_refuse(e, 500, NULL, NULL, "out of memory");
        return NULL;
    }
    *owned = s.p;
    return s.p;
}

static int parse_messages(const lam_http_parse_cfg_t *cfg, json_t *root, lam_http_req_t *g, lam_http_err_t *e)
{
    json_t *m = json_object_get(root, "messages");
    if (!m)
        return lam_http_refuse(e, 400, "messages", "missing_field", "'messages' is required");
    size_t n = json_array_size(m);
    if (!json_is_array(m) || n == 0)
        return lam_http_refuse(e, 400, "messages", "invalid_type", "'messages' must be a non-empty array");
    if (n > LAM_HTTP_MAX_MESSAGES)
        return lam_http_refuse(e, 400, "messages", "invalid_value", "too many messages");
    lam_chat_msg_t *msgs = calloc(n, sizeof *msgs);
    char **owned = calloc(n, sizeof *owned);
    int rc = msgs && owned ? 0 : lam_http_refuse(e, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *msg = json_array_get(m, i), *role = json_object_get(msg, "role");
        if (!json_is_object(msg) || !json_is_string(role)) {
            rc = lam_http_refuse(e, 400, "messages", "invalid_type",
                                 "messages[%zu] must be an object with a string 'role'", i);
            break;
        }
        const char *r = json_string_value(role);
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "developer")) {
            rc = lam_http_refuse(e, 400, "messages", "invalid_value",
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
    if (rc == 0 && lam_tok_chat_render(cfg->tok, msgs, n, true, &prompt) != LAM_OK)
        rc = lam_http_refuse(e, 400, "messages", "unsupported",
                             "this model's chat template is not supported; use /v1/completions with a prompt");
    if (rc == 0)
        rc = encode(cfg, prompt, strlen(prompt), g, "messages", e);
    free(prompt);
    for (size_t i = 0; owned && i < n; i++)
        free(owned[i]);
    free(owned);
    free(msgs);
    return rc;
}

static int parse_stop(json_t *root, lam_http_req_t *g, lam_http_err_t *e)
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
            return lam_http_refuse(e, 400, "stop", "invalid_value", "'stop' takes at most %d strings",
                                   LAM_SERVE_MAX_STOPS);
        items = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = items ? items[i] : json_array_get(s, i);
        if (!json_is_string(v))
            return lam_http_refuse(e, 400, "stop", "invalid_type", "'stop' must be a string or an array of strings");
        size_t len = json_string_length(v);
        if (len == 0 || len > LAM_HTTP_MAX_STOP_BYTES || strlen(json_string_value(v)) != len)
            return lam_http_refuse(e, 400, "stop", "invalid_value", "stop strings must be 1 to %d bytes without NUL",
                                   LAM_HTTP_MAX_STOP_BYTES);
        g->stop[g->n_stop++] = json_string_value(v);
    }
    return 0;
}

/* Everything but the prompt. */
static int parse_options(const lam_http_parse_cfg_t *cfg, json_t *root, bool chat, uint64_t seed, lam_http_req_t *g,
                         lam_http_err_t *e)
{
    double x;
    json_int_t i;
    int rc;
    g->sp = cfg->defaults;
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
    g->sp.seed = rc ? (uint64_t)i : seed;
    if ((rc = opt_int(root, "n", 1, 1, &i, e)) < 0 || opt_int(root, "best_of", 1, 1, &i, e) < 0)
        return lam_http_refuse(e, 400, e->param, "unsupported", "only one choice per request ('%s' must be 1)",
                               e->param);
    if (opt_bool(root, "stream", &g->stream, e) < 0)
        return -1;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so) && (!json_is_object(so) || opt_bool(so, "include_usage", &g->include_usage, e) < 0))
        return lam_http_refuse(e, 400, "stream_options", "invalid_type",
                               "'stream_options' must be an object with a boolean 'include_usage'");
    bool echo = false;
    if (opt_bool(root, "echo", &echo, e) < 0 || echo)
        return lam_http_refuse(e, 400, "echo", "unsupported", "'echo' is not supported");
    json_t *lp = json_object_get(root, "logprobs");
    if (lp && !json_is_null(lp) && !json_is_false(lp) && !(json_is_integer(lp) && json_integer_value(lp) == 0))
        return lam_http_refuse(e, 400, "logprobs", "unsupported", "'logprobs' is not supported");
    json_t *suffix = json_object_get(root, "suffix");
    if (suffix && !json_is_null(suffix))
        return lam_http_refuse(e, 400, "suffix", "unsupported", "'suffix' is not supported");
    return parse_stop(root, g, e);
}

int lam_http_parse_request(const lam_http_parse_cfg_t *cfg, bool chat, const char *body, size_t len,
                           uint64_t seed, lam_http_req_t *g, json_t **root, lam_http_err_t *e)
{
    json_error_t je;
    *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!*root) {
        char why[sizeof je.text];
        lam_http_utf8_sanitize(je.text, why, sizeof why);
        return lam_http_refuse(e, 400, NULL, "invalid_json", "The body is not valid JSON: %s (line %d, column %d)",
                               why, je.line, je.column);
    }
    if (!json_is_object(*root))
        return lam_http_refuse(e, 400, NULL, "invalid_json", "The body must be a JSON object");
    json_t *model = json_object_get(*root, "model");
    if (!model)
        return lam_http_refuse(e, 400, "model", "missing_field", "'model' is required");
    if (!json_is_string(model))
        return lam_http_refuse(e, 400, "model", "invalid_type", "'model' must be a string");
    if (strcmp(json_string_value(model), cfg->model_name) != 0)
        return lam_http_refuse(e, 404, "model", "model_not_found",
                               "The model '%s' does not exist (this server has '%s')", json_string_value(model),
                               cfg->model_name);
    if (parse_options(cfg, *root, chat, seed, g, e) < 0)
        return -1;
    if ((chat ? parse_messages(cfg, *root, g, e) : parse_prompt(cfg, *root, g, e)) < 0)
        return -1;
    const char *what = chat ? "messages" : "prompt";
    if (g->n_ids == 0)
        return lam_http_refuse(e, 400, what, "invalid_value", "The prompt is empty");
    if ((int64_t)g->n_ids >= cfg->ctx)
        return lam_http_refuse(e, 400, what, "context_length_exceeded",
                               "This model's context is %d tokens; the prompt has %zu "
                               "(at least one must be left to generate)",
                               cfg->ctx, g->n_ids);
    int room = cfg->ctx - (int)g->n_ids;
    if (g->max_new < 0)
        g->max_new = cfg->default_max_tokens;
    if (g->max_new > room)
        g->max_new = room;
    return 0;
}

