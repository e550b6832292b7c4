/* libFuzzer target for what the HTTP API makes of a client's bytes: the
 * completion request parser (compute_node/http_parse.c, with the tokenizer
 * and chat template behind it) and the incremental text filter that turns
 * generated tokens into UTF-8 and applies stop strings
 * (compute_node/serve_text.c). Built and run by scripts/fuzz.sh with clang,
 * ASan and UBSan; not part of the CMake build.
 *
 * The first input byte picks the mode; invariants, any violation abort()s:
 *
 *   0, 1  the rest is a /v1/completions (0) or /v1/chat/completions (1)
 *         body. A refusal has a 4xx/5xx status, the type that goes with
 *         it, a known field or none, and a non-empty message that is valid
 *         UTF-8 (it goes into a JSON reply). An accepted request has a
 *         prompt of 1 to ctx-1 ids inside the vocabulary, room for
 *         max_new, sampling values inside their ranges, the request's
 *         seed or the server's, and at most 4 stop strings of 1 to 256 bytes;
 *         its prompt's tokens pushed through the text filter with its stop
 *         strings give what the reference below gives for their text.
 *   2     [n_stop][len, bytes]...[chunking seed][text]: the text, cut into
 *         chunks the seed picks, through the text filter with those stop
 *         strings (made valid UTF-8) must give the reference's output.
 *   any   the input (up to a NUL) quoted into a message through
 *         lam_http_utf8_sanitize is valid UTF-8 that fits, and unchanged
 *         when it was valid and fitted.
 *
 * The reference is written independently of serve_text.c: after each
 * piece, the text so far is made valid UTF-8 at once (each maximal
 * ill-formed subpart becomes one U+FFFD; a code point still being
 * completed waits); generation ends after the first piece whose text holds
 * a stop string, cut before the earliest one in it (a stop string that
 * completes first ends it, even if a longer one would have started
 * earlier: what a client streaming tokens sees).
 *
 * LAM_FUZZ_SEEDS=dir ./fuzz_http writes seed inputs into dir and exits. */
#include "common/log.h"
#include "common/tokenizer.h"
#include "compute_node/http_parse.h"
#include "compute_node/serve_text.h"
#include "tests/fuzz/fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_NAME "fuzz-model"
#define CTX 48
#define SERVER_SEED 0x5eedull

static lam_tok_t *g_tok;

/* ---- the tokenizer: byte-level BPE over all 256 bytes, ChatML -------------- */

static bool gpt2_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
}

static void make_tokenizer(void)
{
    static char text[256][4];
    const char *tokens[256 + 8];
    int32_t types[256 + 8];
    unsigned shifted = 0;
    for (unsigned b = 0; b < 256; b++) {
        unsigned cp = gpt2_printable(b) ? b : 0x100 + shifted++;
        if (cp < 0x80) {
            text[b][0] = (char)cp;
        } else {
            text[b][0] = (char)(0xc0 | cp >> 6);
            text[b][1] = (char)(0x80 | (cp & 0x3f));
        }
        tokens[b] = text[b];
        types[b] = LAM_TOK_TYPE_NORMAL;
    }
    int n = 256;
    const char *extra[] = {"he", "ll", "hell", "hello", "\xc4\xa0w", "<|endoftext|>", "<|im_start|>",
                           "<|im_end|>"};
    for (int i = 0; i < 8; i++, n++) {
        tokens[n] = extra[i];
        types[n] = i < 5 ? LAM_TOK_TYPE_NORMAL : LAM_TOK_TYPE_CONTROL;
    }
    static const char *merges[] = {"h e", "l l", "he ll", "hell o", "\xc4\xa0 w"};
    static const char tmpl[] =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
        "{% endif %}";
    lam_tok_spec_t spec;
    lam_tok_spec_init(&spec, LAM_TOK_MODEL_BPE);
    spec.n_vocab = n;
    spec.tokens = tokens;
    spec.types = types;
    spec.merges = merges;
    spec.n_merges = sizeof merges / sizeof merges[0];
    spec.bos = n - 3; /* <|endoftext|> */
    spec.eos = n - 1; /* <|im_end|> */
    spec.add_bos = true;
    spec.chat_template = tmpl;
    spec.chat_template_len = sizeof tmpl - 1;
    CHECK(lam_tok_create(&spec, &g_tok) == LAM_OK);
}

/* ---- the reference -------------------------------------------------------- */

static void buf_add(lam_serve_str_t *s, const void *p, size_t n)
{
    CHECK(lam_serve_str_add(s, p, n) == LAM_OK);
}

/* Valid UTF-8 from any bytes: each maximal ill-formed subpart (a lead byte
 * and the continuation bytes that may follow it, cut short) becomes one
 * U+FFFD; bytes that can start nothing become one each. */
static void ref_utf8(const uint8_t *b, size_t n, lam_serve_str_t *out)
{
    static const char fffd[] = "\xef\xbf\xbd";
    for (size_t i = 0; i < n;) {
        uint8_t c = b[i];
        size_t need = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
                    : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        if (need == 0) {
            buf_add(out, fffd, 3);
            i++;
            continue;
        }
        /* the second byte's range depends on the lead (no overlongs, no
         * surrogates, nothing above U+10FFFF); later ones are 80..BF */
        uint8_t lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
        uint8_t hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
        size_t k = 1;
        while (k < need && i + k < n && b[i + k] >= (k == 1 ? lo : 0x80) && b[i + k] <= (k == 1 ? hi : 0xbf))
            k++;
        if (k == need)
            buf_add(out, b + i, need);
        else
            buf_add(out, fffd, 3);
        i += k;
    }
}

/* Where the earliest stop string in text starts (text->n: none). */
static size_t ref_first_stop(const lam_serve_str_t *text, char *const *stops, int n_stop)
{
    size_t cut = text->n;
    for (int s = 0; s < n_stop; s++) {
        size_t len = strlen(stops[s]);
        for (size_t i = 0; i < cut && i + len <= text->n; i++)
            if (!memcmp(text->p + i, stops[s], len)) {
                cut = i;
                break;
            }
    }
    return cut;
}

/* How many bytes at the end of b[0..n) are a code point still being
 * completed: a lead byte followed by fewer continuation bytes than it
 * needs, each allowed where it stands. */
static size_t ref_pending(const uint8_t *b, size_t n)
{
    size_t p = n;
    while (p > 0 && n - p < 3 && b[p - 1] >= 0x80 && b[p - 1] <= 0xbf)
        p--;
    if (p == 0)
        return 0;
    uint8_t c = b[--p];
    size_t need = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (need == 0 || n - p >= need)
        return 0;
    uint8_t lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
    uint8_t hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
    if (n - p >= 2 && (b[p + 1] < lo || b[p + 1] > hi))
        return 0;
    return n - p;
}

/* The reference output for bytes text[0..n) pushed in pieces that end at
 * ends[0..n_ends): generation ends after the first piece whose text (the
 * whole code points so far) holds a stop string, cut before the earliest
 * one in it; with none, the whole text at the end. */
static void ref_output(const uint8_t *text, size_t n, const size_t *ends, size_t n_ends, char *const *stops,
                       int n_stop, lam_serve_str_t *out, bool *stopped)
{
    lam_serve_str_t v = {0};
    for (size_t j = 0; j <= n_ends; j++) {
        size_t len = j < n_ends ? ends[j] - ref_pending(text, ends[j]) : n;
        v.n = 0;
        ref_utf8(text, len, &v);
        size_t cut = ref_first_stop(&v, stops, n_stop);
        *stopped = cut < v.n;
        if (*stopped || j == n_ends) {
            buf_add(out, v.p ? v.p : "", cut);
            break;
        }
    }
    lam_serve_str_free(&v);
}

static bool valid_utf8(const char *p, size_t n)
{
    lam_serve_str_t v = {0};
    ref_utf8((const uint8_t *)p, n, &v);
    bool ok = v.n == n && (n == 0 || !memcmp(v.p, p, n));
    lam_serve_str_free(&v);
    return ok;
}

static void dump(const char *what, const char *p, size_t n)
{
    fprintf(stderr, "%s:", what);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %02x", (unsigned char)p[i]);
    fprintf(stderr, "\n");
}

/* got: what the filter t gave (finished) for the bytes text[0..n), pushed
 * in pieces that end at ends[0..n_ends); compared with the reference. */
static void compare(const lam_serve_text_t *t, const lam_serve_str_t *got, const uint8_t *text, size_t n,
                    const size_t *ends, size_t n_ends)
{
    lam_serve_str_t want = {0};
    bool want_stopped;
    ref_output(text, n, ends, n_ends, t->stop, t->n_stop, &want, &want_stopped);
    if (getenv("FUZZ_HTTP_DEBUG")) { /* replaying a finding: show both sides */
        for (int s = 0; s < t->n_stop; s++)
            dump("stop", t->stop[s], t->stop_len[s]);
        dump("text", (const char *)text, n);
        fprintf(stderr, "pieces end at:");
        for (size_t j = 0; j < n_ends; j++)
            fprintf(stderr, " %zu", ends[j]);
        fprintf(stderr, "\n");
        dump("want", want.p, want.n);
        dump("got", got->p, got->n);
    }
    CHECK(t->stopped == want_stopped);
    CHECK(got->n == want.n);
    CHECK(want.n == 0 || !memcmp(got->p, want.p, want.n));
    CHECK(valid_utf8(got->p, got->n));
    lam_serve_str_free(&want);
}

/* ---- mode 0/1: a request body ---------------------------------------------- */

static bool known_param(const char *p)
{
    static const char *fields[] = {"model", "prompt", "messages", "max_tokens", "max_completion_tokens",
                                   "temperature", "top_p", "top_k", "seed", "n", "best_of", "stream",
                                   "stream_options", "echo", "logprobs", "suffix", "stop"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!strcmp(p, fields[i]))
            return true;
    return false;
}

static void check_refusal(const lam_http_err_t *e)
{
    CHECK(e->status == 400 || e->status == 404 || e->status == 500);
    CHECK(e->type && !strcmp(e->type, e->status < 500 ? "invalid_request_error" : "server_error"));
    CHECK(e->status == 500 || e->code);
    CHECK(!e->param || known_param(e->param));
    size_t n = strnlen(e->msg, sizeof e->msg);
    CHECK(n > 0 && n < sizeof e->msg);
    CHECK(valid_utf8(e->msg, n));
}

/* The accepted prompt's tokens, one at a time, through the filter with the
 * request's stop strings; special tokens add no text. */
static void check_prompt_text(const lam_http_req_t *r)
{
    lam_serve_text_t t;
    CHECK(lam_serve_text_init(&t, g_tok, r->stop, r->n_stop) == LAM_OK);
    lam_serve_str_t got = {0}, pieces = {0};
    size_t *ends = malloc(r->n_ids * sizeof *ends), n_ends = 0;
    CHECK(ends);
    for (size_t i = 0; i < r->n_ids; i++) {
        if (!lam_tok_is_special(g_tok, r->ids[i])) {
            size_t len;
            const char *p = lam_tok_piece(g_tok, r->ids[i], &len);
            CHECK(p);
            buf_add(&pieces, p, len);
            ends[n_ends++] = pieces.n;
        }
        bool stopped = lam_serve_text_push(&t, r->ids[i], &got);
        CHECK(stopped == t.stopped);
    }
    lam_serve_text_finish(&t, &got);
    compare(&t, &got, (const uint8_t *)pieces.p, pieces.n, ends, n_ends);
    free(ends);
    lam_serve_str_free(&got);
    lam_serve_str_free(&pieces);
    lam_serve_text_free(&t);
}

static void check_accepted(const lam_http_req_t *r, json_t *root)
{
    CHECK(json_is_object(root));
    CHECK(r->n_ids >= 1 && r->n_ids < CTX);
    for (size_t i = 0; i < r->n_ids; i++)
        CHECK(r->ids[i] >= 0 && r->ids[i] < lam_tok_n_vocab(g_tok));
    CHECK(r->max_new >= 0 && (size_t)r->max_new <= CTX - r->n_ids);
    CHECK(r->sp.temperature >= 0.0f && r->sp.temperature <= 2.0f);
    CHECK(r->sp.top_p > 0.0f && r->sp.top_p <= 1.0f);
    CHECK(r->sp.top_k >= 0);
    json_t *seed = json_object_get(root, "seed");
    if (r->have_seed)
        CHECK(r->sp.seed == (uint64_t)json_integer_value(seed));
    else
        CHECK(r->sp.seed == SERVER_SEED && (!seed || json_is_null(seed)));
    CHECK(r->n_stop >= 0 && r->n_stop <= LAM_SERVE_MAX_STOPS);
    for (int i = 0; i < r->n_stop; i++) {
        size_t len = strlen(r->stop[i]);
        CHECK(len >= 1 && len <= LAM_HTTP_MAX_STOP_BYTES);
        CHECK(valid_utf8(r->stop[i], len));
    }
    CHECK(r->include_usage ? json_is_object(json_object_get(root, "stream_options")) : true);
    check_prompt_text(r);
}

static void fuzz_body(bool chat, const uint8_t *body, size_t len)
{
    const lam_http_parse_cfg_t cfg = {g_tok, MODEL_NAME, CTX, 16, {0.7f, 40, 0.95f, 0}};
    lam_http_req_t r = {0};
    lam_http_err_t e = {0};
    json_t *root = NULL;
    int rc = lam_http_parse_request(&cfg, chat, (const char *)body, len, SERVER_SEED, &r, &root, &e);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0)
        check_accepted(&r, root);
    else
        check_refusal(&e);
    free(r.ids);
    json_decref(root);
}

/* ---- mode 2: a text stream -------------------------------------------------- */

static void fuzz_stream(const uint8_t *d, size_t n)
{
    if (n < 2)
        return;
    int n_stop = d[0] % (LAM_SERVE_MAX_STOPS + 1);
    size_t i = 1;
    lam_serve_str_t clean[LAM_SERVE_MAX_STOPS] = {{0}};
    const char *stops[LAM_SERVE_MAX_STOPS];
    int k = 0;
    for (int s = 0; s < n_stop && i < n; s++) {
        size_t len = d[i++] % 16 + 1;
        if (len > n - i)
            len = n - i;
        ref_utf8(d + i, len, &clean[k]);
        i += len;
        if (clean[k].n > 0 && strlen(clean[k].p) == clean[k].n) { /* the filter takes C strings */
            stops[k] = clean[k].p;
            k++;
        } else {
            lam_serve_str_free(&clean[k]);
        }
    }
    unsigned seed = i < n ? d[i++] : 0;
    lam_serve_text_t t;
    CHECK(lam_serve_text_init(&t, NULL, stops, k) == LAM_OK);
    lam_serve_str_t got = {0};
    size_t *ends = NULL, n_ends = 0, cap = 0, out_at_stop = 0;
    bool stopped = false;
    for (size_t at = i; at < n;) {
        size_t chunk = (size_t)rand_r(&seed) % 9; /* empty chunks too */
        if (chunk > n - at)
            chunk = n - at;
        bool was = stopped;
        stopped = lam_serve_text_push_bytes(&t, d + at, chunk, &got);
        CHECK(stopped == t.stopped && (!was || stopped)); /* once stopped, nothing more comes out */
        if (stopped && !was)
            out_at_stop = got.n;
        CHECK(!stopped || got.n == out_at_stop);
        at += chunk;
        if (n_ends == cap) {
            cap = cap ? 2 * cap : 64;
            ends = realloc(ends, cap * sizeof *ends);
            CHECK(ends);
        }
        ends[n_ends++] = at - i;
    }
    size_t before = got.n;
    lam_serve_text_finish(&t, &got);
    CHECK(!stopped || got.n == before);
    compare(&t, &got, d + i, n - i, ends, n_ends);
    free(ends);
    lam_serve_str_free(&got);
    lam_serve_text_free(&t);
    for (int s = 0; s < k; s++)
        lam_serve_str_free(&clean[s]);
}

/* Any bytes (up to a NUL) quoted into a message: valid UTF-8 that fits,
 * and the same bytes when they were valid and fit. */
static void check_sanitize(const uint8_t *data, size_t size)
{
    char *src = malloc(size + 1), dst[64];
    CHECK(src);
    memcpy(src, data, size);
    src[size] = '\0';
    size_t cap = 1 + data[0] % sizeof dst, len = strlen(src);
    lam_http_utf8_sanitize(src, dst, cap);
    size_t n = strlen(dst);
    CHECK(n < cap && valid_utf8(dst, n));
    if (len < cap && valid_utf8(src, len))
        CHECK(n == len && !memcmp(dst, src, len));
    free(src);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    check_sanitize(data, size);
    switch (data[0] % 3) {
    case 0: fuzz_body(false, data + 1, size - 1); break;
    case 1: fuzz_body(true, data + 1, size - 1); break;
    default: fuzz_stream(data + 1, size - 1); break;
    }
    return 0;
}

/* ---- seeds ------------------------------------------------------------------ */

static void write_seed(const char *dir, int i, uint8_t mode, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%02d", dir, i);
    FILE *f = fopen(path, "wb");
    CHECK(f && fputc(mode, f) == mode && fwrite(p, 1, n, f) == n && fclose(f) == 0);
}

static void write_seeds(const char *dir)
{
    static const char *compl[] = {
        "{\"model\":\"" MODEL_NAME "\",\"prompt\":\"hello world\",\"max_tokens\":8,\"stop\":[\"wor\",\"ll\"]}",
        "{\"model\":\"" MODEL_NAME "\",\"prompt\":[\"hello\"],\"temperature\":0.5,\"top_p\":0.9,\"top_k\":4,"
        "\"seed\":-3,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
        "{\"model\":\"" MODEL_NAME "\",\"prompt\":[[104,101,108]],\"n\":1,\"best_of\":1,\"echo\":false,"
        "\"logprobs\":null,\"suffix\":null,\"stop\":\"\\u00e9\\n\"}",
        "{\"model\":\"" MODEL_NAME "\",\"prompt\":[1,2,3,264],\"max_tokens\":100}",
        "{\"model\":\"other\",\"prompt\":\"x\"}",
    };
    static const char *chat[] = {
        "{\"model\":\"" MODEL_NAME "\",\"messages\":[{\"role\":\"system\",\"content\":\"hi\"},{\"role\":\"user\","
        "\"content\":\"hello\"}],\"max_completion_tokens\":4,\"stop\":[\"<|im_end|>\",\"\\n\\n\"]}",
        "{\"model\":\"" MODEL_NAME "\",\"messages\":[{\"role\":\"developer\",\"content\":null},{\"role\":"
        "\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\","
        "\"text\":\"\\ud83d\\ude00\"}]}]}",
    };
    int i = 0;
    for (size_t k = 0; k < sizeof compl / sizeof compl[0]; k++, i++)
        write_seed(dir, i, 0, compl[k], strlen(compl[k]));
    for (size_t k = 0; k < sizeof chat / sizeof chat[0]; k++, i++)
        write_seed(dir, i, 1, chat[k], strlen(chat[k]));
    /* streams: two stops ("lo" and "\xe2\x82\xac" = U+20AC), a chunking seed,
     * text with the stop split by chunks, bad bytes, a cut code point */
    static const uint8_t s1[] = {2, 2, 'l', 'o', 3, 0xe2, 0x82, 0xac, 7, 'h', 'e', 'l', 0xe2, 0x82,
                                 0x80, 0xff, 'l', 'l', 'o', 0xe2, 0x82, 0xac, 'x'};
    static const uint8_t s2[] = {1, 3, 'a', 'b', 'c', 42, 'x', 'a', 'b', 0xc3, 'a', 'b', 'c', 0xf0, 0x9f};
    static const uint8_t s3[] = {0, 9, 0xed, 0xa0, 0x80, 0xf4, 0x90, 0xe0, 0x80, 0xc0, 0xaf, 'z'};
    write_seed(dir, i++, 2, s1, sizeof s1);
    write_seed(dir, i++, 2, s2, sizeof s2);
    write_seed(dir, i++, 2, s3, sizeof s3);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    lam_log_set_level(LAM_LOG_QUIET);
    make_tokenizer();
    const char *dir = getenv("LAM_FUZZ_SEEDS");
    if (dir) {
        write_seeds(dir);
        exit(0);
    }
    return 0;
}
