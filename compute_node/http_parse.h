/* The body of POST /v1/completions and /v1/chat/completions, parsed and
 * checked field by field: every problem is a 4xx (or 500 when memory runs
 * out) that names the field, in OpenAI's error shape. No HTTP here, so the
 * parser can be tested and fuzzed on its own (tests/fuzz/fuzz_http.c). */
#ifndef LAM_HTTP_PARSE_H
#define LAM_HTTP_PARSE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/tokenizer.h"
#include "compute_node/sampler.h"
#include "compute_node/serve_text.h"

#define LAM_HTTP_MAX_STOP_BYTES 256
#define LAM_HTTP_MAX_MESSAGES 4096

/* A refused request: status, OpenAI error type and code, the offending
 * field (NULL: the request as a whole), a message for the client. */
typedef struct lam_http_err {
    int status;
    const char *type, *param, *code;
    char msg[512];
} lam_http_err_t;

/* What the parser needs to know about the server. */
typedef struct lam_http_parse_cfg {
    const lam_tok_t *tok;
    const char *model_name;         /* requests must name it */
    int ctx;                        /* prompt + generated tokens */
    int default_max_tokens;         /* for requests without max_tokens */
    lam_sampler_params_t defaults;  /* temperature, top_k, top_p when a request gives none */
} lam_http_parse_cfg_t;

typedef struct lam_http_req {
    bool stream, include_usage;
    int32_t *ids;                   /* the prompt (the caller frees it, also after a refusal) */
    size_t n_ids;
    int max_new;                    /* at most ctx - n_ids */
    lam_sampler_params_t sp;
    bool have_seed;                 /* the request gave its seed */
    const char *stop[LAM_SERVE_MAX_STOPS]; /* point into the parsed JSON */
    int n_stop;
} lam_http_req_t;

/* src as valid UTF-8 in dst[cap] (cap > 0), cut to fit at a code point
 * boundary: bytes that do not form a code point become '?'. For messages
 * that quote raw input: the JSON parser's error text, a URL path. */
void lam_http_utf8_sanitize(const char *src, char *dst, size_t cap);

/* Fills e and returns -1; a message cut to fit e->msg is cut between code
 * points. */
int lam_http_refuse(lam_http_err_t *e, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Parses body[len] into *r (zeroed by the caller); chat selects
 * "messages" over "prompt". seed is used when the request brings none.
 * *root receives the parsed JSON (or NULL), which r's stop strings point
 * into: the caller json_decref()s it once done with them, and frees r->ids,
 * whether the request was accepted (0) or refused (-1, e filled). */
int lam_http_parse_request(const lam_http_parse_cfg_t *cfg, bool chat, const char *body, size_t len,
                           uint64_t seed, lam_http_req_t *r, json_t **root, lam_http_err_t *e);

#endif
