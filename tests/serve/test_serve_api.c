/* The HTTP API of lamina-compute-node, end to end: a real attention node
 * and compute node on loopback, SmolLM2-135M-Instruct, raw HTTP.
 *   - /v1/models, /health, completions, chat completions, usage counts,
 *     finish reasons;
 *   - streaming (SSE) gives the same text as the whole reply with the same
 *     seed; include_usage;
 *   - stop strings (string and array) cut the text where they start;
 *   - /metrics counters move;
 *   - API key: 401 without it, /health open;
 *   - a table of malformed requests, each answered with its status and an
 *     OpenAI-style error body, and the server still serves afterwards;
 *   - the attention node lost: /health and requests answer 503; back on
 *     its port: served again. */
#include "common/log.h"
#include "tests/serve/serve_fixture.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool g_skip;
static lam_proc_t g_an, g_cn;
static int g_port;
static int g_ctx = 512;
static bool g_quick; /* LAMINA_TEST_QUICK: shorter generations (sanitizers) */

#define CHAT "/v1/chat/completions"
#define COMPL "/v1/completions"

static const char *finish_reason(const json_t *reply)
{
    return json_string_value(json_object_get(json_array_get(json_object_get(reply, "choices"), 0), "finish_reason"));
}

static json_int_t usage(const json_t *reply, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(reply, "usage"), key));
}

static void test_models_health(void)
{
    if (g_skip)
        return;
    int st;
    json_t *j = sf_get(g_port, "/v1/models", &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(sf_streq(json_string_value(json_object_get(j, "object")), "list"));
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    CU_ASSERT(sf_streq(json_string_value(json_object_get(m, "id")), SF_MODEL_NAME));
    CU_ASSERT(sf_streq(json_string_value(json_object_get(m, "object")), "model"));
    json_decref(j);
    j = sf_get(g_port, "/v1/models/" SF_MODEL_NAME, &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(sf_streq(json_string_value(json_object_get(j, "id")), SF_MODEL_NAME));
    json_decref(j);
    j = sf_get(g_port, "/v1/models/another-model", &st);
    CU_ASSERT_EQUAL(st, 404);
    CU_ASSERT(sf_is_error(j));
    json_decref(j);
    /* a name that is not UTF-8 once unescaped: quoted with '?' for it */
    j = sf_get(g_port, "/v1/models/x%FFy", &st);
    CU_ASSERT_EQUAL(st, 404);
    CU_ASSERT(sf_streq(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
                       "The model 'x?y' does not exist"));
    json_decref(j);
    j = sf_get(g_port, "/health", &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(sf_streq(json_string_value(json_object_get(j, "status")), "ok"));
    CU_ASSERT(json_is_true(json_object_get(json_array_get(json_object_get(j, "attention_nodes"), 0), "up")));
    json_decref(j);
}

static void test_completion(void)
{
    if (g_skip)
        return;
    int st;
    json_t *j = sf_post(g_port, COMPL,
                        "{\"model\":\"" SF_MODEL_NAME "\",\"prompt\":\"The capital of France is\","
                        "\"max_tokens\":12,\"temperature\":0}", &st);
    CU_ASSERT_EQUAL_FATAL(st, 200);
    CU_ASSERT(sf_streq(json_string_value(json_object_get(j, "object")), "text_completion"));
    const char *id = json_string_value(json_object_get(j, "id"));
    CU_ASSERT(id && !strncmp(id, "cmpl-", 5));
    CU_ASSERT(sf_streq(json_string_value(json_object_get(j, "model")), SF_MODEL_NAME));
    const char *text = sf_reply_text(j);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    printf("\n  completion: \"%s\" (%s)", text, finish_reason(j));
    CU_ASSERT(strlen(text) > 0);
    json_int_t pt = usage(j, "prompt_tokens"), ct = usage(j, "completion_tokens");
    CU_ASSERT(pt >= 4 && pt <= 10);
    CU_ASSERT_EQUAL(usage(j, "total_tokens"), pt + ct);
    /* 12 tokens, or fewer with an end-of-text token */
    CU_ASSERT((ct == 12 && sf_streq(finish_reason(j), "length")) || (ct < 12 && sf_streq(finish_reason(j), "stop")));
    /* greedy is deterministic, and token ids work as a prompt */
    char body[512];
    json_t *again = sf_post(g_port, COMPL,
                            "{\"model\":\"" SF_MODEL_NAME "\",\"prompt\":[\"The capital of France is\"],"
                            "\"max_tokens\":12,\"temperature\":0}", &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(sf_streq(sf_reply_text(again), text));
    json_decref(again);
    /* max_tokens 0: nothing generated */
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":[504, 3458, 282],\"max_tokens\":0}", SF_MODEL_NAME);
    again = sf_post(g_port, COMPL, body, &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(sf_streq(sf_reply_text(again), ""));
    CU_ASSERT_EQUAL(usage(again, "prompt_tokens"), 3);
    CU_ASSERT_EQUAL(usage(again, "completion_tokens"), 0);
    CU_ASSERT(sf_streq(finish_reason(again), "length"));
    json_decref(again);
    json_decref(j);
}

static void test_chat(void)
{
    if (g_skip)
        return;
    int st;
    json_t *j = sf_post(g_port, CHAT,
                        "{\"model\":\"" SF_MODEL_NAME "\",\"messages\":[{\"role\":\"system\",\"content\":\"You are "
                        "a helpful assistant.\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is the "
                        "capital of France?\"}]}],\"max_tokens\":40,\"temperature\":0}", &st);
    CU_ASSERT_EQUAL_FATAL(st, 200);
    CU_ASSERT(sf_streq(json_string_value(json_object_get(j, "object")), "chat.completion"));
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    CU_ASSERT(sf_streq(json_string_value(json_object_get(msg, "role")), "assistant"));
    const char *text = sf_reply_text(j);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    printf("\n  chat: \"%s\" (%s, %d tokens)", text, finish_reason(j), (int)usage(j, "completion_tokens"));
    CU_ASSERT(strstr(text, "Paris") != NULL);
    CU_ASSERT(usage(j, "prompt_tokens") > 10);
    CU_ASSERT(sf_streq(finish_reason(j), "stop")); /* it says Paris and ends its turn */
    CU_ASSERT(usage(j, "completion_tokens") < 40);
    json_decref(j);
}

/* Reads a whole SSE stream: the concatenated text, the finish reason, the
 * usage chunk's completion_tokens (-1 if none), the event count. */
typedef struct streamed {
    char text[8192];
    char finish[32];
    int completion_tokens, events;
    bool role_first, done;
} streamed_t;

static int read_stream(int port, const char *path, const char *body, streamed_t *out)
{
    memset(out, 0, sizeof *out);
    out->completion_tokens = -1;
    hc_stream_t *s = malloc(sizeof *s);
    if (hc_stream_open(s, port, path, SF_AUTH, body, 60.0) != 0 || s->status != 200) {
        free(s);
        return -1;
    }
    char *ev;
    size_t n = 0;
    while ((ev = hc_stream_event(s, 120.0))) {
        if (!strcmp(ev, "[DONE]")) {
            out->done = true;
            free(ev);
            break;
        }
        json_t *j = json_loads(ev, 0, NULL);
        free(ev);
        if (!j)
            break;
        json_t *c = json_array_get(json_object_get(j, "choices"), 0);
        json_t *delta = json_object_get(c, "delta");
        const char *t = json_string_value(delta ? json_object_get(delta, "content") : json_object_get(c, "text"));
        if (out->events == 0 && delta)
            out->role_first = json_is_string(json_object_get(delta, "role"));
        if (t && n + strlen(t) < sizeof out->text) {
            memcpy(out->text + n, t, strlen(t) + 1);
            n += strlen(t);
        }
        if (json_is_string(json_object_get(c, "finish_reason")))
            snprintf(out->finish, sizeof out->finish, "%s", json_string_value(json_object_get(c, "finish_reason")));
        json_t *u = json_object_get(j, "usage");
        if (json_is_object(u))
            out->completion_tokens = (int)json_integer_value(json_object_get(u, "completion_tokens"));
        if (json_object_get(j, "error"))
            snprintf(out->finish, sizeof out->finish, "error");
        out->events++;
        json_decref(j);
    }
    hc_stream_close(s);
    free(s);
    return 0;
}

static void test_stream_matches_whole(void)
{
    if (g_skip)
        return;
    const char *chat = "{\"model\":\"" SF_MODEL_NAME "\",\"messages\":[{\"role\":\"user\",\"content\":\"Write a "
                       "haiku about the sea.\"}],\"max_tokens\":%d,\"temperature\":0.9,\"seed\":1234%s}";
    char body[1024];
    int n_tok = g_quick ? 8 : 24;
    snprintf(body, sizeof body, chat, n_tok, "");
    int st;
    json_t *whole = sf_post(g_port, CHAT, body, &st);
    CU_ASSERT_EQUAL_FATAL(st, 200);
    snprintf(body, sizeof body, chat, n_tok, ",\"stream\":true");
    streamed_t s;
    CU_ASSERT_EQUAL_FATAL(read_stream(g_port, CHAT, body, &s), 0);
    printf("\n  streamed chat: %d events, \"%s\" (%s)", s.events, s.text, s.finish);
    CU_ASSERT(s.done);
    CU_ASSERT(s.role_first);
    CU_ASSERT(sf_streq(s.text, sf_reply_text(whole)));
    CU_ASSERT(sf_streq(s.finish, finish_reason(whole)));
    CU_ASSERT(s.events >= 3);
    json_decref(whole);

    /* completions, with the usage chunk */
    const char *compl = "{\"model\":\"" SF_MODEL_NAME "\",\"prompt\":\"Once upon a time\",\"max_tokens\":16,"
                        "\"seed\":7,\"temperature\":1.0,\"top_p\":0.9%s}";
    snprintf(body, sizeof body, compl, "");
    whole = sf_post(g_port, COMPL, body, &st);
    CU_ASSERT_EQUAL_FATAL(st, 200);
    snprintf(body, sizeof body, compl, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    CU_ASSERT_EQUAL_FATAL(read_stream(g_port, COMPL, body, &s), 0);
    CU_ASSERT(s.done);
    CU_ASSERT(sf_streq(s.text, sf_reply_text(whole)));
    CU_ASSERT_EQUAL(s.completion_tokens, usage(whole, "completion_tokens"));
    json_decref(whole);
}

static void test_stop_strings(void)
{
    if (g_skip)
        return;
    const char *fmt = "{\"model\":\"" SF_MODEL_NAME "\",\"prompt\":\"List the days of the week:\","
                      "\"max_tokens\":%d,\"temperature\":0%s}";
    char body[1024];
    int n_tok = g_quick ? 16 : 40;
    snprintf(body, sizeof body, fmt, n_tok, "");
    int st;
    json_t *full = sf_post(g_port, COMPL, body, &st);
    CU_ASSERT_EQUAL_FATAL(st, 200);
    const char *text = sf_reply_text(full);
    size_t len = strlen(text);
    CU_ASSERT_FATAL(len >= 12);
    /* a stop string from the middle of the greedy text (a few bytes that
     * likely span a token boundary) */
    char stop[8], want[512];
    size_t at = len / 3;
    for (; at + 4 <= len; at++) { /* 4 plain bytes from the middle: likely across a token boundary */
        bool plain = true;
        for (int i = 0; i < 4; i++)
            plain = plain && text[at + i] > 0x20 && text[at + i] < 0x7f && text[at + i] != '"' && text[at + i] != '\\';
        if (plain)
            break;
    }
    CU_ASSERT_FATAL(at + 4 <= len); /* greedy text of 16+ tokens has 4 plain bytes in a row */
    memcpy(stop, text + at, 4);
    stop[4] = '\0';
    size_t first = (size_t)(strstr(text, stop) - text);
    snprintf(want, sizeof want, "%.*s", (int)first, text);
    char extra[128];
    snprintf(extra, sizeof extra, ",\"stop\":\"%s\"", stop);
    snprintf(body, sizeof body, fmt, n_tok, extra);
    json_t *cut = sf_post(g_port, COMPL, body, &st);
    CU_ASSERT_EQUAL(st, 200);
    printf("\n  stop \"%s\": \"%s\"", stop, sf_reply_text(cut));
    CU_ASSERT(sf_streq(sf_reply_text(cut), want));
    CU_ASSERT(sf_streq(finish_reason(cut), "stop"));
    CU_ASSERT(usage(cut, "completion_tokens") < usage(full, "completion_tokens"));
    json_decref(cut);
    /* as an array, with strings that never occur, streamed */
    snprintf(extra, sizeof extra, ",\"stop\":[\"@@@\",\"%s\",\"\\u00e9\\u00e9\"],\"stream\":true", stop);
    snprintf(body, sizeof body, fmt, n_tok, extra);
    streamed_t s;
    CU_ASSERT_EQUAL_FATAL(read_stream(g_port, COMPL, body, &s), 0);
    CU_ASSERT(sf_streq(s.text, want));
    CU_ASSERT(sf_streq(s.finish, "stop"));
    json_decref(full);
}

static void test_metrics(void)
{
    if (g_skip)
        return;
    /* requests cancelled by earlier tests (stop strings) end at a step
     * boundary after their reply: wait until nothing runs */
    for (int i = 0; i < 100 && sf_metric(g_port, "lamina_batch_size") != 0; i++)
        usleep(20000);
    const char *ok200 = "lamina_http_requests_total{endpoint=\"/v1/completions\",status=\"200\"}";
    double req0 = sf_metric(g_port, ok200), gen0 = sf_metric(g_port, "lamina_generation_tokens_total"),
           prompt0 = sf_metric(g_port, "lamina_prompt_tokens_total"),
           exch0 = sf_metric(g_port, "lamina_exchange_seconds_count");
    int st;
    json_t *j = sf_post(g_port, COMPL, "{\"model\":\"" SF_MODEL_NAME "\",\"prompt\":\"Hello\",\"max_tokens\":5,"
                                       "\"temperature\":0}", &st);
    CU_ASSERT_EQUAL(st, 200);
    json_int_t ct = usage(j, "completion_tokens"), pt = usage(j, "prompt_tokens");
    json_decref(j);
    CU_ASSERT_EQUAL(sf_metric(g_port, ok200), (req0 < 0 ? 0 : req0) + 1);
    CU_ASSERT_EQUAL(sf_metric(g_port, "lamina_generation_tokens_total"), gen0 + (double)ct);
    CU_ASSERT_EQUAL(sf_metric(g_port, "lamina_prompt_tokens_total"), prompt0 + (double)pt);
    /* 30 layers, at least one micro-batch per step, ct steps + the prompt */
    CU_ASSERT(sf_metric(g_port, "lamina_exchange_seconds_count") >= exch0 + 30.0 * (double)ct);
    CU_ASSERT(sf_metric(g_port, "lamina_exchange_seconds_bucket{le=\"+Inf\"}") ==
              sf_metric(g_port, "lamina_exchange_seconds_count"));
    CU_ASSERT_EQUAL(sf_metric(g_port, "lamina_attention_node_up{node=\"0\""), 1);
    CU_ASSERT(sf_metric(g_port, "lamina_attention_node_kv_pages_total{node=\"0\"") > 0);
    CU_ASSERT(sf_metric(g_port, "lamina_generation_tokens_per_second") >= 0);
    CU_ASSERT_EQUAL(sf_metric(g_port, "lamina_queue_length"), 0);
    CU_ASSERT(sf_metric(g_port, "lamina_time_to_first_token_seconds_count") >= 1);
    /* errors are counted by status */
    json_decref(sf_post(g_port, COMPL, "{", &st));
    CU_ASSERT(sf_metric(g_port, "lamina_http_requests_total{endpoint=\"/v1/completions\",status=\"400\"}") >= 1);
}

static void test_api_key(void)
{
    if (g_skip)
        return;
    const char *body = "{\"model\":\"" SF_MODEL_NAME "\",\"prompt\":\"Hi\",\"max_tokens\":1}";
    const char *bad[] = {NULL, "Authorization: Bearer wrong-key\r\n", "Authorization: Basic " SF_API_KEY "\r\n",
                         "Authorization: Bearer " SF_API_KEY "x\r\n", "Authorization: Bearer\r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hc_resp_t r;
        CU_ASSERT_FATAL(hc_request(g_port, "POST", COMPL, bad[i], body, strlen(body), 30, &r) == 0);
        CU_ASSERT_EQUAL(r.status, 401);
        json_t *j = json_loads(r.body, 0, NULL);
        CU_ASSERT(sf_is_error(j));
        CU_ASSERT(sf_streq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                               "invalid_api_key"));
        json_decref(j);
        hc_resp_free(&r);
    }
    hc_resp_t r;
    CU_ASSERT_FATAL(hc_request(g_port, "GET", "/v1/models", NULL, NULL, 0, 30, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 401);
    hc_resp_free(&r);
    /* probes and scrapers need no key */
    CU_ASSERT_FATAL(hc_request(g_port, "GET", "/health", NULL, NULL, 0, 30, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    hc_resp_free(&r);
}

typedef struct bad_case {
    const char *name, *method, *path, *body;
    int status;
    const char *param; /* expected error.param, or NULL for any */
} bad_case_t;

#define M "\"model\":\"" SF_MODEL_NAME "\""
static const bad_case_t BAD[] = {
    {"not JSON", "POST", COMPL, "{\"model\":", 400, NULL},
    {"not an object", "POST", COMPL, "[1,2]", 400, NULL},
    {"empty body", "POST", CHAT, "", 400, NULL},
    {"no model", "POST", COMPL, "{\"prompt\":\"x\"}", 400, "model"},
    {"model not a string", "POST", COMPL, "{\"model\":7,\"prompt\":\"x\"}", 400, "model"},
    {"unknown model", "POST", COMPL, "{\"model\":\"gpt-9\",\"prompt\":\"x\"}", 404, "model"},
    {"no prompt", "POST", COMPL, "{" M "}", 400, "prompt"},
    {"prompt not text", "POST", COMPL, "{" M ",\"prompt\":{\"a\":1}}", 400, "prompt"},
    {"two prompts", "POST", COMPL, "{" M ",\"prompt\":[\"a\",\"b\"]}", 400, "prompt"},
    {"token out of range", "POST", COMPL, "{" M ",\"prompt\":[1,99999999]}", 400, "prompt"},
    {"empty prompt", "POST", COMPL, "{" M ",\"prompt\":\"\"}", 400, "prompt"},
    {"max_tokens a string", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"max_tokens\":\"5\"}", 400, "max_tokens"},
    {"max_tokens negative", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"max_tokens\":-1}", 400, "max_tokens"},
    {"temperature too high", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"temperature\":5}", 400, "temperature"},
    {"temperature a string", "POST", CHAT, "{" M ",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                          "\"temperature\":\"hot\"}", 400, "temperature"},
    {"top_p zero", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"top_p\":0}", 400, "top_p"},
    {"seed fractional", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"seed\":1.5}", 400, "seed"},
    {"n > 1", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"n\":2}", 400, "n"},
    {"stream not a boolean", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"stream\":\"yes\"}", 400, "stream"},
    {"five stop strings", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400,
     "stop"},
    {"stop not a string", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"stop\":[3]}", 400, "stop"},
    {"empty stop string", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"stop\":\"\"}", 400, "stop"},
    {"no messages", "POST", CHAT, "{" M "}", 400, "messages"},
    {"messages empty", "POST", CHAT, "{" M ",\"messages\":[]}", 400, "messages"},
    {"messages not an array", "POST", CHAT, "{" M ",\"messages\":\"hi\"}", 400, "messages"},
    {"message without role", "POST", CHAT, "{" M ",\"messages\":[{\"content\":\"x\"}]}", 400, "messages"},
    {"unknown role", "POST", CHAT, "{" M ",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400,
     "messages"},
    {"content a number", "POST", CHAT, "{" M ",\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages"},
    {"image part", "POST", CHAT, "{" M ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
     400, "messages"},
    {"duplicate key", "POST", COMPL, "{" M ",\"prompt\":\"x\",\"prompt\":\"y\"}", 400, NULL},
    /* C strings would end at a NUL (a name would match, a text be cut):
     * the JSON parser refuses \u0000 */
    {"NUL in a string", "POST", COMPL, "{\"model\":\"" SF_MODEL_NAME "\\u0000x\",\"prompt\":\"x\"}", 400, NULL},
    {"unknown path", "GET", "/v2/whatever", NULL, 404, NULL},
    {"unknown v1 path", "POST", "/v1/embeddings", "{}", 404, NULL},
    {"GET on completions", "GET", COMPL, NULL, 405, NULL},
    {"DELETE on models", "DELETE", "/v1/models", NULL, 405, NULL},
    {"POST on health", "POST", "/health", "{}", 405, NULL},
};

static void check_bad(const bad_case_t *c)
{
    hc_resp_t r;
    int rc = hc_request(g_port, c->method, c->path, SF_AUTH, c->body, c->body ? strlen(c->body) : 0, 30, &r);
    CU_ASSERT_EQUAL(rc, 0);
    json_t *j = r.body ? json_loads(r.body, 0, NULL) : NULL;
    bool ok = r.status == c->status && sf_is_error(j);
    const char *param = json_string_value(json_object_get(json_object_get(j, "error"), "param"));
    if (c->param)
        ok = ok && param && !strcmp(param, c->param);
    if (!ok)
        printf("\n  %s: status %d (want %d), body %.300s", c->name, r.status, c->status, r.body ? r.body : "");
    CU_ASSERT(ok);
    json_decref(j);
    hc_resp_free(&r);
}

static void test_bad_requests(void)
{
    if (g_skip)
        return;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        check_bad(&BAD[i]);
    /* a prompt longer than the context: 400 before it is queued */
    size_t cap = (size_t)g_ctx * 8 + 256;
    char *body = malloc(cap);
    size_t n = (size_t)snprintf(body, cap, "{" M ",\"prompt\":[");
    for (int i = 0; i < g_ctx; i++)
        n += (size_t)snprintf(body + n, cap - n, "%s%d", i ? "," : "", 1000 + i % 1000);
    snprintf(body + n, cap - n, "]}");
    bad_case_t long_prompt = {"prompt as long as the context", "POST", COMPL, body, 400, "prompt"};
    check_bad(&long_prompt);
    int st;
    json_t *j = sf_post(g_port, COMPL, body, &st);
    CU_ASSERT(sf_streq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                           "context_length_exceeded"));
    json_decref(j);
    free(body);
    /* an oversized body (the server runs with --max-body 64K), announced
     * in Content-Length: refused before it is read */
    size_t big = 100 * 1024;
    body = malloc(big + 1);
    memset(body, ' ', big);
    body[big] = '\0';
    bad_case_t too_big = {"body over --max-body", "POST", COMPL, body, 413, NULL};
    check_bad(&too_big);
    free(body);
    /* the same sent in chunks, with no length announced: refused at the end */
    size_t cap2 = 8 * 1024 * 14 + 1024, m = 0;
    char *raw = malloc(cap2);
    m += (size_t)snprintf(raw, cap2, "POST " COMPL " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" SF_AUTH
                                     "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 12; i++) {
        m += (size_t)snprintf(raw + m, cap2 - m, "2000\r\n");
        memset(raw + m, ' ', 8192);
        m += 8192;
        m += (size_t)snprintf(raw + m, cap2 - m, "\r\n");
    }
    m += (size_t)snprintf(raw + m, cap2 - m, "0\r\n\r\n");
    hc_resp_t r;
    CU_ASSERT_FATAL(hc_request_raw(g_port, raw, m, 30, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 413);
    j = r.body ? json_loads(r.body, 0, NULL) : NULL;
    CU_ASSERT(sf_is_error(j));
    json_decref(j);
    hc_resp_free(&r);
    free(raw);
    /* an unknown model with a long non-ASCII name: the message quoting it
     * is cut to fit, on a code point boundary, and still says what is wrong */
    body = malloc(4096);
    n = (size_t)snprintf(body, 4096, "{\"model\":\"x");
    for (int i = 0; i < 700; i++)
        n += (size_t)snprintf(body + n, 4096 - n, "\xc3\xa9");
    snprintf(body + n, 4096 - n, "\",\"prompt\":\"x\"}");
    j = sf_post(g_port, COMPL, body, &st);
    CU_ASSERT_EQUAL(st, 404);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    CU_ASSERT(msg && !strncmp(msg, "The model 'x\xc3\xa9", 14));
    json_decref(j);
    free(body);
    /* the JSON parser's error quotes the input up to a byte in the middle
     * of a character: the message stays valid UTF-8 and says what is wrong */
    j = sf_post(g_port, COMPL, "{\"model\":\"\\u\xc3\xa9\"}", &st);
    CU_ASSERT_EQUAL(st, 400);
    msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    CU_ASSERT(msg && strstr(msg, "not valid JSON: invalid escape"));
    json_decref(j);
    /* still serving */
    j = sf_post(g_port, COMPL, "{" M ",\"prompt\":\"Good morning\",\"max_tokens\":3}", &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_PTR_NOT_NULL(sf_reply_text(j));
    json_decref(j);
}

/* Polls /health until it answers `want` (up to timeout_s). */
static int wait_health(int want, double timeout_s)
{
    int st = 0;
    for (double t_end = lam_now_s() + timeout_s; lam_now_s() < t_end;) {
        json_decref(sf_get(g_port, "/health", &st));
        if (st == want)
            break;
        usleep(100000);
    }
    return st;
}

/* The attention node dies: /health and new requests say 503; it comes
 * back on its port: the compute node reconnects and serves again. */
static void test_attention_node_lost(void)
{
    if (g_skip)
        return;
    int port = g_an.port, st;
    lam_proc_stop(&g_an, 1);
    CU_ASSERT_EQUAL(wait_health(503, 10), 503);
    json_t *j = sf_post(g_port, COMPL, "{" M ",\"prompt\":\"Hello\",\"max_tokens\":2}", &st);
    CU_ASSERT_EQUAL(st, 503);
    CU_ASSERT(sf_is_error(j));
    CU_ASSERT(sf_streq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                           "attention_unavailable"));
    json_decref(j);
    CU_ASSERT_FATAL(sf_start_attention(&g_an, port) == 0);
    CU_ASSERT_EQUAL(wait_health(200, 20), 200);
    j = sf_post(g_port, COMPL, "{" M ",\"prompt\":\"Hello\",\"max_tokens\":2}", &st);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    CU_ASSERT_EQUAL(sf_metric(g_port, "lamina_attention_node_losses_total{node=\"0\""), 1);
}

static int suite_init(void)
{
    g_quick = getenv("LAMINA_TEST_QUICK") != NULL;
    char ctx[16];
    snprintf(ctx, sizeof ctx, "%d", g_ctx);
    const char *extra[] = {"--ctx", ctx, "--max-body", "64K", "--max-tokens", "32", NULL};
    int rc = sf_suite_start(&g_an, &g_cn, &g_skip, extra);
    g_port = g_cn.port;
    return rc;
}

static int suite_clean(void)
{
    return sf_suite_stop(&g_an, &g_cn);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("serve_api", suite_init, suite_clean);
    CU_add_test(s, "/v1/models and /health", test_models_health);
    CU_add_test(s, "completion: text, usage, finish reasons", test_completion);
    CU_add_test(s, "chat completion", test_chat);
    CU_add_test(s, "streaming equals the whole reply", test_stream_matches_whole);
    CU_add_test(s, "stop strings", test_stop_strings);
    CU_add_test(s, "/metrics counters move", test_metrics);
    CU_add_test(s, "API key", test_api_key);
    CU_add_test(s, "malformed requests, then a good one", test_bad_requests);
    CU_add_test(s, "attention node lost and back", test_attention_node_lost);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
