/* Wire codec (proto/wire.c): golden bytes for the header, seeded round trips
 * of every message type at several alignments, the protocol limits at their
 * edges, a table of malformed messages (each a named mutation of a valid one
 * with the exact status and reason it must give), every truncation, and a
 * short in-process mutation run so ctest's sanitizer build sees random bytes
 * too (the long run is scripts/fuzz.sh). */
#include "proto/wire.h"

#include <CUnit/Basic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR 16u
#define ATTN_FIXED (HDR + sizeof(lam_wire_attn_t)) /* 44: where the sequence table starts */

/* ---- helpers --------------------------------------------------------------- */

typedef struct rng {
    uint64_t s;
} rng_t;

static uint64_t rnd(rng_t *r) /* splitmix64 */
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform enough in [lo, hi] for tests. */
static uint32_t rnd_in(rng_t *r, uint32_t lo, uint32_t hi) { return lo + (uint32_t)(rnd(r) % ((uint64_t)hi - lo + 1)); }

static void rnd_bytes(rng_t *r, void *dst, size_t n)
{
    uint8_t *p = dst;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd(r);
}

typedef struct msg {
    uint8_t *buf;
    size_t len;
} msg_t;

static msg_t msg_alloc(size_t n)
{
    msg_t m = {calloc(1, n ? n : 1), n};
    CU_ASSERT_FATAL(m.buf != NULL);
    return m;
}

static void msg_free(msg_t *m)
{
    free(m->buf);
    m->buf = NULL;
    m->len = 0;
}

static void put_le(uint8_t *p, unsigned width, uint64_t v)
{
    for (unsigned i = 0; i < width; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Decodes a copy placed `align` bytes past a malloc'd (16-aligned) base, so
 * that packed reads at every alignment run under the sanitizers. On success
 * the arrays in *out are rebased to point into m->buf, so callers can compare
 * them against offsets in the original. */
static lam_status_t decode_at(const msg_t *m, size_t align, lam_msg_t *out, char *why, size_t why_len)
{
    uint8_t *copy = malloc(m->len + align + 1);
    CU_ASSERT_FATAL(copy != NULL);
    memcpy(copy + align, m->buf, m->len);
    lam_status_t st = lam_wire_decode(copy + align, m->len, out, why, why_len);
    if (st == LAM_OK) {
        const uint8_t *lo = copy + align;
#define REBASE(p)                                                                                          \
    do {                                                                                                   \
        if (p) {                                                                                           \
            CU_ASSERT((const uint8_t *)(p) >= lo && (const uint8_t *)(p) <= lo + m->len);                 \
            (p) = (const void *)(m->buf + ((const uint8_t *)(p) - lo));                                    \
        }                                                                                                  \
    } while (0)
        if (out->type == LAM_MSG_ATTN || out->type == LAM_MSG_ATTN_RESULT) {
            REBASE(out->u.attn.seq);
            REBASE(out->u.attn.q);
            REBASE(out->u.attn.k);
            REBASE(out->u.attn.v);
            REBASE(out->u.attn.o);
        } else if (out->type == LAM_MSG_SEQ_RELEASE) {
            REBASE(out->u.release.ids);
        } else if (out->type == LAM_MSG_ERROR) {
            REBASE(out->u.error.msg);
        }
#undef REBASE
    }
    free(copy);
    return st;
}

/* Independent of lam_wire_attn_layout: the header comment's formula. */
static size_t expect_attn_size(const lam_wire_attn_t *h, int result, size_t *q_off, size_t *kv_bytes)
{
    size_t es = lam_dtype_size(h->dtype);
    size_t q = (size_t)h->n_tok * h->n_q_heads * h->head_dim * es;
    size_t kv = (size_t)h->n_tok * h->n_kv_heads * h->head_dim * es;
    size_t start = ATTN_FIXED + 16 * (size_t)h->n_seq;
    if (q_off)
        *q_off = start;
    if (kv_bytes)
        *kv_bytes = kv;
    return start + q + (result ? 0 : 2 * kv);
}

/* An ATTN or ATTN_RESULT message with random tensor bytes. */
static msg_t build_attn(rng_t *r, uint32_t tag, int result, const lam_wire_attn_t *h, const lam_wire_seq_t *seq)
{
    lam_wire_attn_layout_t L = lam_wire_attn_layout(h, result);
    CU_ASSERT_FATAL(L.total != 0);
    msg_t m = msg_alloc(L.total);
    CU_ASSERT_FATAL(lam_wire_put_attn(m.buf, tag, result, h, seq) == L.total);
    rnd_bytes(r, m.buf + L.seq + 16 * (size_t)h->n_seq, L.total - L.seq - 16 * (size_t)h->n_seq);
    return m;
}

/* Checks a decoded ATTN/ATTN_RESULT against what was encoded, with the
 * offsets computed here rather than by the codec. */
static void check_attn(const msg_t *m, const lam_msg_t *d, uint32_t tag, int result, const lam_wire_attn_t *h,
                       const lam_wire_seq_t *seq)
{
    size_t q_off, kv;
    size_t total = expect_attn_size(h, result, &q_off, &kv);
    size_t q_bytes = total - q_off - (result ? 0 : 2 * kv);
    CU_ASSERT(m->len == total);
    CU_ASSERT(d->type == (result ? LAM_MSG_ATTN_RESULT : LAM_MSG_ATTN));
    CU_ASSERT(d->tag == tag);
    CU_ASSERT(memcmp(&d->u.attn.h, h, sizeof *h) == 0);
    CU_ASSERT((const void *)d->u.attn.seq == (const void *)(m->buf + ATTN_FIXED));
    CU_ASSERT(memcmp(d->u.attn.seq, seq, 16 * (size_t)h->n_seq) == 0);
    if (result) {
        CU_ASSERT(d->u.attn.o == m->buf + q_off);
        CU_ASSERT(d->u.attn.q == NULL && d->u.attn.k == NULL && d->u.attn.v == NULL);
    } else {
        CU_ASSERT(d->u.attn.q == m->buf + q_off);
        CU_ASSERT(d->u.attn.k == m->buf + q_off + q_bytes);
        CU_ASSERT(d->u.attn.v == m->buf + q_off + q_bytes + kv);
        CU_ASSERT(d->u.attn.o == NULL);
    }
}

/* ---- golden bytes and layout ----------------------------------------------- */

static void test_golden_bytes(void)
{
    uint8_t buf[64];
    static const uint8_t ok[16] = {'L', 'A', 'M', 'W', 2, 0, 4, 0, 0, 0, 0, 0, 4, 3, 2, 1};
    CU_ASSERT(lam_wire_put_ok(buf, 0x01020304u) == 16);
    CU_ASSERT(memcmp(buf, ok, 16) == 0);

    static const uint8_t err[] = {'L', 'A', 'M', 'W', 2, 0, 10, 0, 10, 0, 0, 0, 7, 0, 0, 0,
                                  0x70, 0xFE, 0xFF, 0xFF, 2, 0, 0, 0, 'h', 'i'};
    CU_ASSERT(lam_wire_put_error(buf, 7, LAM_ERR_PROTO, "hi") == sizeof err);
    CU_ASSERT(memcmp(buf, err, sizeof err) == 0);

    /* SEQ_RELEASE of one id: header, n_seq, reserved, the id little-endian. */
    uint64_t id = 0x1122334455667788ull;
    static const uint8_t rel[] = {'L', 'A', 'M', 'W', 2, 0, 7, 0, 16, 0, 0, 0, 9, 0, 0, 0,
                                  1, 0, 0, 0, 0, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
    CU_ASSERT(lam_wire_put_release(buf, 9, &id, 1) == sizeof rel);
    CU_ASSERT(memcmp(buf, rel, sizeof rel) == 0);

    CU_ASSERT(lam_wire_put_hdr(buf, LAM_MSG_STATS_REPLY, 56, 5) == 16 + 56);
}

static void test_layout(void)
{
    lam_wire_attn_t h = {.dtype = LAM_DT_F16, .n_seq = 3, .n_q_heads = 4, .n_kv_heads = 2, .head_dim = 8, .n_tok = 7};
    lam_wire_attn_layout_t L = lam_wire_attn_layout(&h, 0);
    /* q: 7*4*8*2 = 448 bytes, k and v: 7*2*8*2 = 224 each. */
    CU_ASSERT(L.seq == 44 && L.q == 92 && L.k == 540 && L.v == 764 && L.total == 988 && L.o == 0);
    L = lam_wire_attn_layout(&h, 1);
    CU_ASSERT(L.seq == 44 && L.o == 92 && L.total == 540 && L.q == 0 && L.k == 0 && L.v == 0);

    /* Each limit, just inside and just outside. */
    lam_wire_attn_t big = {.dtype = LAM_DT_F32, .n_seq = LAM_WIRE_MAX_SEQ, .n_q_heads = 1, .n_kv_heads = 1,
                           .head_dim = 1, .n_tok = LAM_WIRE_MAX_TOK};
    CU_ASSERT(lam_wire_attn_layout(&big, 0).total == 44 + 16 * 4096 + 3 * 4 * 65536);
    big.n_seq++;
    CU_ASSERT(lam_wire_attn_layout(&big, 0).total == 0);
    big.n_seq--;
    big.n_tok++;
    CU_ASSERT(lam_wire_attn_layout(&big, 0).total == 0);
    big.n_tok = 1;
    big.n_q_heads = LAM_WIRE_MAX_HEADS + 1;
    CU_ASSERT(lam_wire_attn_layout(&big, 1).total == 0);
    big.n_q_heads = 1;
    big.n_kv_heads = LAM_WIRE_MAX_HEADS + 1;
    CU_ASSERT(lam_wire_attn_layout(&big, 0).total == 0);
    big.n_kv_heads = 1;
    big.head_dim = LAM_WIRE_MAX_HEAD_DIM + 1;
    CU_ASSERT(lam_wire_attn_layout(&big, 0).total == 0);
    big.head_dim = 1;
    big.dtype = LAM_DT_END;
    CU_ASSERT(lam_wire_attn_layout(&big, 0).total == 0);

    /* Every count at its limit is 3 * 2^38 bytes of tensors: within the
     * limits but beyond the 32-bit len field, so no layout and no writer. */
    lam_wire_attn_t huge = {.dtype = LAM_DT_F32, .n_seq = 1, .n_q_heads = LAM_WIRE_MAX_HEADS,
                            .n_kv_heads = LAM_WIRE_MAX_HEADS, .head_dim = LAM_WIRE_MAX_HEAD_DIM,
                            .n_tok = LAM_WIRE_MAX_TOK};
    CU_ASSERT(lam_wire_attn_layout(&huge, 0).total == 0);
    CU_ASSERT(lam_wire_attn_layout(&huge, 1).total == 0);
    uint8_t canary[64];
    memset(canary, 0xAA, sizeof canary);
    lam_wire_seq_t s = {1, 0, 1, 0};
    CU_ASSERT(lam_wire_put_attn(canary, 1, 0, &huge, &s) == 0);
    CU_ASSERT(canary[0] == 0xAA && canary[63] == 0xAA);
}

static void test_type_names(void)
{
    static const char *names[] = {"unknown", "HELLO", "HELLO_CHALLENGE", "HELLO_AUTH", "HELLO_OK", "ATTN",
                                  "ATTN_RESULT", "SEQ_RELEASE", "STATS", "STATS_REPLY", "ERROR"};
    for (unsigned t = 0; t < LAM_MSG_TYPE_END; t++)
        CU_ASSERT(strcmp(lam_msg_type_name((uint16_t)t), names[t]) == 0);
    CU_ASSERT(strcmp(lam_msg_type_name(LAM_MSG_TYPE_END), "unknown") == 0);
    CU_ASSERT(strcmp(lam_msg_type_name(0xFFFF), "unknown") == 0);
}

/* ---- round trips ----------------------------------------------------------- */

static void random_hello(rng_t *r, lam_wire_hello_t *b)
{
    memset(b, 0, sizeof *b);
    b->caps = (uint32_t)rnd(r);
    b->max_msg = (uint32_t)rnd(r);
    b->model_fingerprint = rnd(r);
    b->shard_count = (uint16_t)rnd_in(r, 1, 0xFFFF);
    b->shard_index = (uint16_t)rnd_in(r, 0, b->shard_count - 1u);
    b->kv_dtype = (uint8_t)rnd_in(r, 0, LAM_DT_END - 1);
    b->act_dtype = (uint8_t)rnd_in(r, 0, LAM_DT_END - 1);
    rnd_bytes(r, b->nonce, sizeof b->nonce);
}

static void random_challenge(rng_t *r, lam_wire_challenge_t *b)
{
    memset(b, 0, sizeof *b);
    b->caps = (uint32_t)rnd(r);
    b->max_msg = (uint32_t)rnd(r);
    b->model_fingerprint = rnd(r);
    b->shard_count = (uint16_t)rnd_in(r, 1, 64);
    b->shard_index = (uint16_t)rnd_in(r, 0, b->shard_count - 1u);
    b->n_kv_heads = (uint16_t)rnd_in(r, 1, 64);
    b->n_heads = (uint16_t)(b->n_kv_heads * rnd_in(r, 1, LAM_WIRE_MAX_HEADS / b->n_kv_heads));
    b->kv_head_begin = (uint16_t)rnd_in(r, 0, b->n_kv_heads - 1u);
    b->kv_head_end = (uint16_t)rnd_in(r, b->kv_head_begin + 1u, b->n_kv_heads);
    b->n_layers = (uint16_t)rnd_in(r, 1, LAM_WIRE_MAX_LAYERS);
    b->head_dim = (uint16_t)rnd_in(r, 1, LAM_WIRE_MAX_HEAD_DIM);
    b->max_ctx = (uint32_t)rnd(r);
    b->page_tokens = rnd_in(r, 1, 4096);
    b->pages_total = rnd(r);
    b->kv_dtype = (uint8_t)rnd_in(r, 0, LAM_DT_END - 1);
    rnd_bytes(r, b->nonce, sizeof b->nonce);
    rnd_bytes(r, b->mac, sizeof b->mac);
}

/* n_seq sequences with unique nonzero ids splitting n_tok tokens; chunk
 * lengths are mostly 1 (decode) with some prefill chunks. */
static void random_attn(rng_t *r, int result, unsigned dtype, lam_wire_attn_t *h, lam_wire_seq_t *seq,
                        unsigned max_seq)
{
    static const uint16_t dims[] = {1, 3, 7, 64, 128};
    memset(h, 0, sizeof *h);
    h->step = rnd(r);
    h->layer = (uint16_t)rnd_in(r, 0, LAM_WIRE_MAX_LAYERS - 1);
    h->mb = (uint8_t)rnd_in(r, 0, 1);
    h->dtype = (uint8_t)dtype;
    h->n_seq = (uint16_t)rnd_in(r, 1, max_seq);
    h->n_kv_heads = (uint16_t)rnd_in(r, 1, 4);
    h->n_q_heads = (uint16_t)(h->n_kv_heads * rnd_in(r, 1, 4));
    h->head_dim = dims[rnd_in(r, 0, sizeof dims / sizeof dims[0] - 1)];
    uint32_t n_tok = 0;
    int prefill = rnd_in(r, 0, 3) == 0;
    static const int16_t statuses[] = {0, 0, 0, LAM_ERR_KV_FULL, LAM_ERR_SEQ_UNKNOWN, LAM_ERR_SEQ_POS,
                                       LAM_ERR_CTX_FULL, -999};
    for (unsigned i = 0; i < h->n_seq; i++) {
        lam_wire_seq_t s;
        /* The low half makes ids unique; the high half makes them look like
         * real ones. Order is random because the high half is. */
        s.seq_id = (rnd(r) << 32) | (i + 1);
        s.n_tok = (uint16_t)(prefill ? rnd_in(r, 1, 40) : 1);
        s.pos = rnd_in(r, 0, LAM_WIRE_MAX_POS - s.n_tok);
        s.status = result ? statuses[rnd_in(r, 0, sizeof statuses / sizeof statuses[0] - 1)] : 0;
        n_tok += s.n_tok;
        memcpy(&seq[i], &s, sizeof s);
    }
    h->n_tok = n_tok;
}

static void roundtrip_fixed(rng_t *r, unsigned iter)
{
    lam_msg_t d;
    char why[256];
    uint8_t buf[256];
    uint32_t tag = (uint32_t)rnd(r);
    size_t align = iter % 8;
    msg_t m = {buf, 0};

    lam_wire_hello_t hello;
    random_hello(r, &hello);
    m.len = lam_wire_put_hello(buf, tag, &hello);
    CU_ASSERT(m.len == 16 + 56);
    CU_ASSERT(decode_at(&m, align, &d, why, sizeof why) == LAM_OK);
    CU_ASSERT(d.type == LAM_MSG_HELLO && d.tag == tag && !memcmp(&d.u.hello, &hello, sizeof hello));

    lam_wire_challenge_t ch;
    random_challenge(r, &ch);
    m.len = lam_wire_put_challenge(buf, tag, &ch);
    CU_ASSERT(m.len == 16 + 120);
    CU_ASSERT(decode_at(&m, align, &d, why, sizeof why) == LAM_OK);
    CU_ASSERT(d.type == LAM_MSG_HELLO_CHALLENGE && d.tag == tag && !memcmp(&d.u.challenge, &ch, sizeof ch));

    lam_wire_auth_t auth;
    rnd_bytes(r, auth.mac, sizeof auth.mac);
    m.len = lam_wire_put_auth(buf, tag, &auth);
    CU_ASSERT(m.len == 16 + 32);
    CU_ASSERT(decode_at(&m, align, &d, why, sizeof why) == LAM_OK);
    CU_ASSERT(d.type == LAM_MSG_HELLO_AUTH && d.tag == tag && !memcmp(&d.u.auth, &auth, sizeof auth));

    m.len = lam_wire_put_ok(buf, tag);
    CU_ASSERT(m.len == 16);
    CU_ASSERT(decode_at(&m, align, &d, why, sizeof why) == LAM_OK);
    CU_ASSERT(d.type == LAM_MSG_HELLO_OK && d.tag == tag);

    m.len = lam_wire_put_stats_req(buf, tag);
    CU_ASSERT(m.len == 16);
    CU_ASSERT(decode_at(&m, align, &d, why, sizeof why) == LAM_OK);
    CU_ASSERT(d.type == LAM_MSG_STATS && d.tag == tag);

    lam_wire_stats_t st;
    rnd_bytes(r, &st, sizeof st);
    m.len = lam_wire_put_stats(buf, tag, &st);
    CU_ASSERT(m.len == 16 + 56);
    CU_ASSERT(decode_at(&m, align, &d, why, sizeof why) == LAM_OK);
    CU_ASSERT(d.type == LAM_MSG_STATS_REPLY && d.tag == tag && !memcmp(&d.u.stats, &st, sizeof st));
}

static void roundtrip_var(rng_t *r, unsigned iter)
{
    lam_msg_t d;
    char why[256];
    uint32_t tag = (uint32_t)rnd(r);
    size_t align = iter % 8;

    /* ERROR: random printable text of random length, sometimes over the cap. */
    size_t n = rnd_in(r, 0, iter % 16 == 0 ? 3000 : 200);
    char *text = malloc(n + 1);
    CU_ASSERT_FATAL(text != NULL);
    for (size_t i = 0; i < n; i++)
        text[i] = (char)rnd_in(r, 32, 126);
    text[n] = '\0';
    int32_t code = -(int32_t)rnd_in(r, 1, 999);
    size_t want = lam_wire_error_size(n);
    size_t kept = n < LAM_WIRE_MAX_ERROR_TEXT ? n : LAM_WIRE_MAX_ERROR_TEXT;
    CU_ASSERT(want == 16 + 8 + kept);
    msg_t m = msg_alloc(want);
    CU_ASSERT(lam_wire_put_error(m.buf, tag, code, text) == want);
    CU_ASSERT(decode_at(&m, align, &d, why, sizeof why) == LAM_OK);
    CU_ASSERT(d.type == LAM_MSG_ERROR && d.tag == tag && d.u.error.code == code);
    CU_ASSERT(d.u.error.msg_len == kept && d.u.error.msg == (const char *)m.buf + 24);
    CU_ASSERT(memcmp(d.u.error.msg, text, kept) == 0);
    char shown[LAM_WIRE_MAX_ERROR_TEXT + 1];
    lam_wire_error_text(&d, shown); /* printable text is shown as sent */
    CU_ASSERT(strlen(shown) == kept && memcmp(shown, text, kept) == 0);
    msg_free(&m);
    free(text);
    lam_msg_t ctl = {.type = LAM_MSG_ERROR, .u.error = {.code = code, .msg_len = 6, .msg = "a\x1b[2J\x7f"}};
    lam_wire_error_text(&ctl, shown); /* control bytes never reach a log line */
    CU_ASSERT_STRING_EQUAL(shown, "a?[2J?");

    /* SEQ_RELEASE: random nonzero ids, occasionally many. */
    uint32_t n_seq = rnd_in(r, 1, iter % 32 == 0 ? LAM_WIRE_MAX_RELEASE : 100);
    uint64_t *ids = malloc(8 * (size_t)n_seq);
    CU_ASSERT_FATAL(ids != NULL);
    for (uint32_t i = 0; i < n_seq; i++)
        ids[i] = rnd(r) | 1;
    CU_ASSERT(lam_wire_release_size(n_seq) == 24 + 8 * (size_t)n_seq);
    m = msg_alloc(lam_wire_release_size(n_seq));
    CU_ASSERT(lam_wire_put_release(m.buf, tag, ids, n_seq) == m.len);
    CU_ASSERT(decode_at(&m, align, &d, why, sizeof why) == LAM_OK);
    CU_ASSERT(d.type == LAM_MSG_SEQ_RELEASE && d.tag == tag && d.u.release.n_seq == n_seq);
    CU_ASSERT(d.u.release.ids == m.buf + 24 && memcmp(d.u.release.ids, ids, 8 * (size_t)n_seq) == 0);
    msg_free(&m);
    free(ids);

    /* ATTN and ATTN_RESULT for every dtype. */
    static lam_wire_seq_t seq[LAM_WIRE_MAX_SEQ];
    for (int result = 0; result < 2; result++) {
        for (unsigned dt = 0; dt < LAM_DT_END; dt++) {
            lam_wire_attn_t h;
            random_attn(r, result, dt, &h, seq, iter % 16 == 0 ? 600 : 24);
            m = build_attn(r, tag, result, &h, seq);
            lam_status_t s = decode_at(&m, align, &d, why, sizeof why);
            CU_ASSERT(s == LAM_OK);
            if (s != LAM_OK)
                printf("\n  round trip rejected: %s", why);
            else
                check_attn(&m, &d, tag, result, &h, seq);
            msg_free(&m);
        }
    }
}

static void test_roundtrip(void)
{
    static const uint64_t seeds[] = {1, 42, 0xC0FFEE, 20240601};
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        rng_t r = {seeds[s]};
        for (unsigned i = 0; i < 100; i++) {
            roundtrip_fixed(&r, i);
            roundtrip_var(&r, i);
        }
    }
}

/* The limits are inclusive: a message at every limit at once decodes. */
static void test_limits_accepted(void)
{
    rng_t r = {7};
    lam_msg_t d;
    char why[256] = "";
    static lam_wire_seq_t seq[LAM_WIRE_MAX_SEQ];
    lam_wire_attn_t h = {.step = UINT64_MAX, .layer = LAM_WIRE_MAX_LAYERS - 1, .mb = 1, .dtype = LAM_DT_BF16,
                         .n_seq = LAM_WIRE_MAX_SEQ, .n_q_heads = 1, .n_kv_heads = 1, .head_dim = 1,
                         .n_tok = LAM_WIRE_MAX_TOK};
    /* 4096 sequences of 16 tokens = 65536; ids chosen to share their low 13
     * bits, the worst case for a hash table of 8192 slots. */
    for (unsigned i = 0; i < LAM_WIRE_MAX_SEQ; i++) {
        lam_wire_seq_t s = {((uint64_t)(i + 1) << 13) | 5, LAM_WIRE_MAX_POS - 16, 16, 0};
        memcpy(&seq[i], &s, sizeof s);
    }
    msg_t m = build_attn(&r, 1, 0, &h, seq);
    CU_ASSERT(decode_at(&m, 3, &d, why, sizeof why) == LAM_OK);
    check_attn(&m, &d, 1, 0, &h, seq);
    /* The same with the first id repeated last: found although far apart. */
    memcpy(m.buf + ATTN_FIXED + 16 * (LAM_WIRE_MAX_SEQ - 1), m.buf + ATTN_FIXED, 8);
    CU_ASSERT(lam_wire_decode(m.buf, m.len, &d, why, sizeof why) == LAM_ERR_PROTO);
    CU_ASSERT(strstr(why, "more than once") != NULL);
    msg_free(&m);

    /* Heads and head_dim at their limits, one token. */
    lam_wire_attn_t w = {.dtype = LAM_DT_F32, .n_seq = 1, .n_q_heads = LAM_WIRE_MAX_HEADS,
                         .n_kv_heads = LAM_WIRE_MAX_HEADS, .head_dim = LAM_WIRE_MAX_HEAD_DIM, .n_tok = 1};
    lam_wire_seq_t one = {UINT64_MAX, 0, 1, 0};
    for (int result = 0; result < 2; result++) {
        m = build_attn(&r, 2, result, &w, &one);
        CU_ASSERT(decode_at(&m, 1, &d, why, sizeof why) == LAM_OK);
        check_attn(&m, &d, 2, result, &w, &one);
        msg_free(&m);
    }

    /* SEQ_RELEASE and ERROR at their limits; beyond them the writers refuse. */
    CU_ASSERT(lam_wire_release_size(0) == 0);
    CU_ASSERT(lam_wire_release_size(LAM_WIRE_MAX_RELEASE + 1) == 0);
    uint8_t canary[32];
    memset(canary, 0xAA, sizeof canary);
    uint64_t id = 1;
    CU_ASSERT(lam_wire_put_release(canary, 1, &id, 0) == 0 && canary[0] == 0xAA);
    CU_ASSERT(lam_wire_error_size(LAM_WIRE_MAX_ERROR_TEXT + 1) == 24 + LAM_WIRE_MAX_ERROR_TEXT);
    CU_ASSERT(lam_wire_error_size(SIZE_MAX) == 24 + LAM_WIRE_MAX_ERROR_TEXT);
    m = msg_alloc(24);
    CU_ASSERT(lam_wire_put_error(m.buf, 3, LAM_ERR_NET, NULL) == 24);
    CU_ASSERT(lam_wire_decode(m.buf, m.len, &d, why, sizeof why) == LAM_OK);
    CU_ASSERT(d.u.error.msg_len == 0 && d.u.error.code == LAM_ERR_NET);
    msg_free(&m);
}

/* ---- malformed messages ---------------------------------------------------- */

enum { B_HELLO, B_CHALLENGE, B_AUTH, B_OK, B_STATS, B_STATS_REPLY, B_ATTN, B_RESULT, B_RELEASE, B_ERROR, B_COUNT };

/* The ATTN base: 3 sequences of 1, 4 and 2 tokens; 4 query and 2 KV heads
 * of 8 in f16; 988 bytes (result: 540). */
static const lam_wire_seq_t g_base_seq[3] = {{11, 0, 1, 0}, {22, 100, 4, 0}, {33, 7, 2, 0}};
static const lam_wire_attn_t g_base_attn = {.step = 9, .layer = 5, .mb = 1, .dtype = LAM_DT_F16, .n_seq = 3,
                                            .n_q_heads = 4, .n_kv_heads = 2, .head_dim = 8, .n_tok = 7};

static msg_t build_base(int which)
{
    rng_t r = {(uint64_t)which + 100};
    msg_t m;
    switch (which) {
    case B_HELLO: {
        lam_wire_hello_t b = {.caps = 3, .max_msg = 1u << 20, .model_fingerprint = 0x1122334455667788ull,
                              .shard_index = 1, .shard_count = 2, .kv_dtype = LAM_DT_F16, .act_dtype = LAM_DT_BF16};
        memset(b.nonce, 0x5A, sizeof b.nonce);
        m = msg_alloc(16 + sizeof b);
        lam_wire_put_hello(m.buf, 1, &b);
        return m;
    }
    case B_CHALLENGE: {
        lam_wire_challenge_t b = {.caps = 3, .max_msg = 1u << 20, .model_fingerprint = 0x1122334455667788ull,
                                  .shard_index = 1, .shard_count = 2, .kv_head_begin = 4, .kv_head_end = 8,
                                  .n_layers = 30, .n_heads = 32, .n_kv_heads = 8, .head_dim = 64,
                                  .max_ctx = 8192, .page_tokens = 16, .pages_total = 1000, .kv_dtype = LAM_DT_F16};
        m = msg_alloc(16 + sizeof b);
        lam_wire_put_challenge(m.buf, 2, &b);
        return m;
    }
    case B_AUTH: {
        lam_wire_auth_t b;
        memset(b.mac, 0xA5, sizeof b.mac);
        m = msg_alloc(16 + sizeof b);
        lam_wire_put_auth(m.buf, 3, &b);
        return m;
    }
    case B_OK:
        m = msg_alloc(16);
        lam_wire_put_ok(m.buf, 4);
        return m;
    case B_STATS:
        m = msg_alloc(16);
        lam_wire_put_stats_req(m.buf, 5);
        return m;
    case B_STATS_REPLY: {
        lam_wire_stats_t b = {1000, 10, 3, 77, 900, 123456, 0};
        m = msg_alloc(16 + sizeof b);
        lam_wire_put_stats(m.buf, 6, &b);
        return m;
    }
    case B_ATTN:
        return build_attn(&r, 7, 0, &g_base_attn, g_base_seq);
    case B_RESULT: {
        lam_wire_seq_t seq[3];
        memcpy(seq, g_base_seq, sizeof seq);
        seq[1].status = LAM_ERR_SEQ_UNKNOWN;
        return build_attn(&r, 8, 1, &g_base_attn, seq);
    }
    case B_RELEASE: {
        static const uint64_t ids[3] = {5, 6, 7};
        m = msg_alloc(lam_wire_release_size(3));
        lam_wire_put_release(m.buf, 9, ids, 3);
        return m;
    }
    case B_ERROR:
        m = msg_alloc(lam_wire_error_size(9));
        lam_wire_put_error(m.buf, 10, LAM_ERR_PROTO, "bad thing");
        return m;
    }
    CU_FAIL_FATAL("unknown base message");
    return (msg_t){0};
}

typedef struct patch {
    uint32_t off;
    uint8_t width; /* 0: unused */
    uint64_t val;
} patch_t;

typedef struct bad_case {
    const char *name;
    int base;
    patch_t p[2];
    int grow;            /* bytes (zero) added at the end, or cut if negative */
    int keep_len;        /* leave hdr.len as built, disagreeing with the buffer after grow */
    lam_status_t expect;
    const char *why_has; /* the reason must mention this */
} bad_case_t;

#define FLD(type, base, field) {(uint32_t)((base) + offsetof(type, field)), sizeof(((type *)0)->field)
#define PH(field, v) FLD(lam_wire_hdr_t, 0, field), (uint64_t)(v)}
#define PA(field, v) FLD(lam_wire_attn_t, HDR, field), (uint64_t)(v)}
#define PS(i, field, v) FLD(lam_wire_seq_t, ATTN_FIXED + 16 * (i), field), (uint64_t)(v)}
#define PHELLO(field, v) FLD(lam_wire_hello_t, HDR, field), (uint64_t)(v)}
#define PCH(field, v) FLD(lam_wire_challenge_t, HDR, field), (uint64_t)(v)}
#define PREL(field, v) FLD(lam_wire_release_t, HDR, field), (uint64_t)(v)}
#define PERR(field, v) FLD(lam_wire_error_t, HDR, field), (uint64_t)(v)}
#define P_ID(i, v) {HDR + 8 + 8 * (i), 8, (uint64_t)(v)}
#define PBYTE(off, v) {(off), 1, (v)}
#define E_PROTO LAM_ERR_PROTO
#define E_VER LAM_ERR_PROTO_VERSION

static const bad_case_t g_bad[] = {
    /* header */
    {"bad magic", B_OK, {PH(magic, 0x574D414Du)}, 0, 0, E_VER, "magic"},
    {"byte-swapped magic", B_ATTN, {PH(magic, 0x4C414D57u)}, 0, 0, E_VER, "magic"},
    {"version 0", B_HELLO, {PH(version, 0)}, 0, 0, E_VER, "version"},
    {"version 1 (before node_ns)", B_ATTN, {PH(version, 1)}, 0, 0, E_VER, "version"},
    {"version 3", B_ATTN, {PH(version, 3)}, 0, 0, E_VER, "version"},
    {"15-byte header", B_OK, {{0}}, -1, 0, E_PROTO, "header"},
    {"empty buffer", B_OK, {{0}}, -16, 0, E_PROTO, "header"},
    {"type 0", B_OK, {PH(type, 0)}, 0, 0, E_PROTO, "type 0"},
    {"type LAM_MSG_TYPE_END", B_OK, {PH(type, LAM_MSG_TYPE_END)}, 0, 0, E_PROTO, "type"},
    {"type 0xFFFF", B_STATS, {PH(type, 0xFFFF)}, 0, 0, E_PROTO, "type"},
    {"hdr.len one short of the buffer", B_ATTN, {{0}}, 1, 1, E_PROTO, "header len"},
    {"hdr.len one past the buffer", B_ATTN, {{0}}, -1, 1, E_PROTO, "header len"},
    {"hdr.len 0xFFFFFFFF", B_RELEASE, {PH(len, 0xFFFFFFFFu)}, 0, 0, E_PROTO, "header len"},
    /* ATTN lengths */
    {"ATTN trailing byte", B_ATTN, {{0}}, 1, 0, E_PROTO, "layout 988"},
    {"ATTN one byte short", B_ATTN, {{0}}, -1, 0, E_PROTO, "layout 988"},
    {"ATTN fixed part cut", B_ATTN, {{0}}, 43 - 988, 0, E_PROTO, "shorter"},
    {"ATTN_RESULT sized as a request", B_RESULT, {{0}}, 448, 0, E_PROTO, "layout 540"},
    {"ATTN_RESULT dtype f32 in f16 bytes", B_RESULT, {PA(dtype, LAM_DT_F32)}, 0, 0, E_PROTO, "layout"},
    /* ATTN counts and shape */
    {"n_seq 0", B_ATTN, {PA(n_seq, 0)}, 0, 0, E_PROTO, "n_seq 0"},
    {"n_seq over limit", B_ATTN, {PA(n_seq, LAM_WIRE_MAX_SEQ + 1)}, 0, 0, E_PROTO, "n_seq 4097"},
    {"n_tok 0", B_ATTN, {PA(n_tok, 0)}, 0, 0, E_PROTO, "n_tok 0"},
    {"n_tok over limit", B_ATTN, {PA(n_tok, LAM_WIRE_MAX_TOK + 1)}, 0, 0, E_PROTO, "n_tok 65537"},
    {"n_tok 2^32-1", B_RESULT, {PA(n_tok, 0xFFFFFFFFu)}, 0, 0, E_PROTO, "n_tok"},
    {"n_q_heads over limit", B_ATTN, {PA(n_q_heads, 1026)}, 0, 0, E_PROTO, "n_q_heads 1026"},
    {"n_q_heads 0", B_ATTN, {PA(n_q_heads, 0)}, 0, 0, E_PROTO, "n_q_heads 0"},
    {"n_kv_heads 0", B_ATTN, {PA(n_kv_heads, 0)}, 0, 0, E_PROTO, "n_kv_heads 0"},
    {"n_kv_heads over limit", B_RESULT, {PA(n_kv_heads, 2048)}, 0, 0, E_PROTO, "n_kv_heads 2048"},
    {"n_q_heads not a multiple of n_kv_heads", B_ATTN, {PA(n_q_heads, 3)}, 0, 0, E_PROTO, "multiple"},
    {"head_dim 0", B_ATTN, {PA(head_dim, 0)}, 0, 0, E_PROTO, "head_dim 0"},
    {"head_dim over limit", B_ATTN, {PA(head_dim, 1025)}, 0, 0, E_PROTO, "head_dim 1025"},
    {"layer at limit", B_ATTN, {PA(layer, LAM_WIRE_MAX_LAYERS)}, 0, 0, E_PROTO, "layer 1024"},
    {"layer just inside limit", B_ATTN, {PA(layer, LAM_WIRE_MAX_LAYERS - 1)}, 0, 0, LAM_OK, NULL},
    {"micro-batch 2", B_ATTN, {PA(mb, 2)}, 0, 0, E_PROTO, "micro-batch 2"},
    {"dtype 3", B_ATTN, {PA(dtype, LAM_DT_END)}, 0, 0, E_PROTO, "dtype 3"},
    {"dtype 255", B_RESULT, {PA(dtype, 255)}, 0, 0, E_PROTO, "dtype 255"},
    {"ATTN with node_ns (a result's field)", B_ATTN, {PA(node_ns, 1)}, 0, 0, E_PROTO, "node_ns"},
    {"ATTN_RESULT with node_ns", B_RESULT, {PA(node_ns, 0xFFFFFFFFu)}, 0, 0, LAM_OK, NULL},
    /* ATTN sequence table */
    {"n_tok sum mismatch", B_ATTN, {PS(0, n_tok, 2)}, 0, 0, E_PROTO, "sum"},
    {"zero-length chunk", B_ATTN, {PS(1, n_tok, 0), PS(2, n_tok, 6)}, 0, 0, E_PROTO, "sequence 1 has n_tok 0"},
    {"pos + n_tok past MAX_POS", B_ATTN, {PS(1, pos, LAM_WIRE_MAX_POS - 3)}, 0, 0, E_PROTO, "exceeds"},
    {"pos + n_tok exactly MAX_POS", B_ATTN, {PS(1, pos, LAM_WIRE_MAX_POS - 4)}, 0, 0, LAM_OK, NULL},
    {"pos + n_tok wraps 32 bits", B_RESULT, {PS(2, pos, 0xFFFFFFFFu)}, 0, 0, E_PROTO, "sequence 2 pos"},
    {"duplicate seq id", B_ATTN, {PS(2, seq_id, 11)}, 0, 0, E_PROTO, "id 11 appears more than once"},
    {"duplicate seq id in a result", B_RESULT, {PS(0, seq_id, 22)}, 0, 0, E_PROTO, "more than once"},
    {"seq id 0", B_ATTN, {PS(1, seq_id, 0)}, 0, 0, E_PROTO, "sequence 1 has id 0"},
    {"status in a request", B_ATTN, {PS(0, status, (uint16_t)LAM_ERR_SEQ_POS)}, 0, 0, E_PROTO, "request"},
    {"result status -1000", B_RESULT, {PS(1, status, (uint16_t)-1000)}, 0, 0, E_PROTO, "status -1000"},
    {"result status 1", B_RESULT, {PS(0, status, 1)}, 0, 0, E_PROTO, "status 1"},
    {"result status -999", B_RESULT, {PS(2, status, (uint16_t)-999)}, 0, 0, LAM_OK, NULL},
    /* fixed-size and empty bodies */
    {"HELLO_OK with a body", B_OK, {{0}}, 1, 0, E_PROTO, "HELLO_OK: body of 1"},
    {"STATS with a body", B_STATS, {{0}}, 8, 0, E_PROTO, "STATS: body of 8"},
    {"HELLO one byte short", B_HELLO, {{0}}, -1, 0, E_PROTO, "expected 56"},
    {"HELLO one byte long", B_HELLO, {{0}}, 1, 0, E_PROTO, "expected 56"},
    {"HELLO_AUTH one byte short", B_AUTH, {{0}}, -1, 0, E_PROTO, "expected 32"},
    {"STATS_REPLY one byte long", B_STATS_REPLY, {{0}}, 1, 0, E_PROTO, "expected 56"},
    {"HELLO_CHALLENGE one byte short", B_CHALLENGE, {{0}}, -1, 0, E_PROTO, "expected 120"},
    /* HELLO */
    {"HELLO shard_index == shard_count", B_HELLO, {PHELLO(shard_index, 2)}, 0, 0, E_PROTO, "shard 2 of 2"},
    {"HELLO shard_count 0", B_HELLO, {PHELLO(shard_count, 0), PHELLO(shard_index, 0)}, 0, 0, E_PROTO, "shard 0 of 0"},
    {"HELLO kv_dtype 3", B_HELLO, {PHELLO(kv_dtype, 3)}, 0, 0, E_PROTO, "kv_dtype 3"},
    {"HELLO act_dtype 9", B_HELLO, {PHELLO(act_dtype, 9)}, 0, 0, E_PROTO, "act_dtype 9"},
    {"HELLO reserved nonzero", B_HELLO, {PHELLO(reserved, 0x100)}, 0, 0, E_PROTO, "reserved"},
    /* HELLO_CHALLENGE */
    {"CHALLENGE shard 5 of 2", B_CHALLENGE, {PCH(shard_index, 5)}, 0, 0, E_PROTO, "shard 5 of 2"},
    {"CHALLENGE empty KV head range", B_CHALLENGE, {PCH(kv_head_begin, 8)}, 0, 0, E_PROTO, "KV heads [8, 8)"},
    {"CHALLENGE KV heads past n_kv_heads", B_CHALLENGE, {PCH(kv_head_end, 9)}, 0, 0, E_PROTO, "KV heads [4, 9)"},
    {"CHALLENGE n_kv_heads 0", B_CHALLENGE, {PCH(n_kv_heads, 0)}, 0, 0, E_PROTO, "n_kv_heads 0"},
    {"CHALLENGE n_heads not a multiple", B_CHALLENGE, {PCH(n_heads, 30)}, 0, 0, E_PROTO, "multiple"},
    {"CHALLENGE page_tokens 0", B_CHALLENGE, {PCH(page_tokens, 0)}, 0, 0, E_PROTO, "page_tokens"},
    {"CHALLENGE head_dim over limit", B_CHALLENGE, {PCH(head_dim, 1025)}, 0, 0, E_PROTO, "head_dim 1025"},
    {"CHALLENGE n_layers 0", B_CHALLENGE, {PCH(n_layers, 0)}, 0, 0, E_PROTO, "n_layers 0"},
    {"CHALLENGE kv_dtype 3", B_CHALLENGE, {PCH(kv_dtype, 3)}, 0, 0, E_PROTO, "kv_dtype 3"},
    {"CHALLENGE last reserved byte", B_CHALLENGE,
     {PBYTE(HDR + offsetof(lam_wire_challenge_t, reserved) + 6, 1)}, 0, 0, E_PROTO, "reserved byte 6"},
    /* SEQ_RELEASE */
    {"release count 0", B_RELEASE, {PREL(n_seq, 0)}, -24, 0, E_PROTO, "n_seq 0"},
    {"release count over limit", B_RELEASE, {PREL(n_seq, LAM_WIRE_MAX_RELEASE + 1)}, 0, 0, E_PROTO, "n_seq 65537"},
    {"release count one more than ids", B_RELEASE, {PREL(n_seq, 4)}, 0, 0, E_PROTO, "does not match 4 ids"},
    {"release trailing byte", B_RELEASE, {{0}}, 1, 0, E_PROTO, "does not match"},
    {"release id 0", B_RELEASE, {P_ID(1, 0)}, 0, 0, E_PROTO, "id 1 is 0"},
    {"release reserved nonzero", B_RELEASE, {PREL(reserved, 7)}, 0, 0, E_PROTO, "reserved"},
    {"release fixed part cut", B_RELEASE, {{0}}, -25, 0, E_PROTO, "shorter"},
    /* ERROR */
    {"error text too long", B_ERROR, {PERR(msg_len, LAM_WIRE_MAX_ERROR_TEXT + 1)}, 1016, 0, E_PROTO, "msg_len 1025"},
    {"error text at the limit", B_ERROR, {PERR(msg_len, LAM_WIRE_MAX_ERROR_TEXT)}, 1015, 0, LAM_OK, NULL},
    {"error msg_len past the body", B_ERROR, {PERR(msg_len, 10)}, 0, 0, E_PROTO, "msg_len 10"},
    {"error fixed part cut", B_ERROR, {{0}}, -10, 0, E_PROTO, "shorter"},
};
#define N_BAD (sizeof g_bad / sizeof g_bad[0])

static void test_malformed_table(void)
{
    unsigned n_reject = 0;
    for (size_t i = 0; i < N_BAD; i++) {
        const bad_case_t *c = &g_bad[i];
        msg_t m = build_base(c->base);
        if (c->grow) {
            size_t n = (size_t)((long)m.len + c->grow);
            uint8_t *b = calloc(1, n ? n : 1);
            CU_ASSERT_FATAL(b != NULL);
            memcpy(b, m.buf, n < m.len ? n : m.len);
            free(m.buf);
            m.buf = b;
            m.len = n;
            if (!c->keep_len && n >= HDR)
                put_le(m.buf + offsetof(lam_wire_hdr_t, len), 4, n - HDR);
        }
        for (size_t k = 0; k < 2; k++)
            if (c->p[k].width) {
                CU_ASSERT_FATAL(c->p[k].off + c->p[k].width <= m.len);
                put_le(m.buf + c->p[k].off, c->p[k].width, c->p[k].val);
            }
        lam_msg_t d;
        char why[512] = "";
        lam_status_t st = decode_at(&m, i % 4, &d, why, sizeof why);
        printf("\n  %-40s -> %s", c->name, st == LAM_OK ? "accepted" : why);
        CU_ASSERT(st == c->expect);
        if (c->expect != LAM_OK) {
            n_reject++;
            CU_ASSERT(strlen(why) > 0 && !strchr(why, '\n'));
            if (c->why_has && !strstr(why, c->why_has)) {
                printf("  [reason lacks \"%s\"]", c->why_has);
                CU_FAIL("reason does not name the fault");
            }
        }
        msg_free(&m);
    }
    printf("\n  %u rejections, %zu acceptances at the edges\n", n_reject, N_BAD - n_reject);
    CU_ASSERT(n_reject >= 30);
}

/* Every proper prefix of every valid message, whether hdr.len still claims
 * the whole body or was rewritten to match the prefix, is rejected. */
static void test_every_truncation(void)
{
    unsigned checked = 0, wrong = 0;
    for (int b = 0; b < B_COUNT; b++) {
        msg_t m = build_base(b);
        for (size_t n = 0; n < m.len; n++) {
            for (int fix = 0; fix < 2; fix++) {
                msg_t t = msg_alloc(n);
                memcpy(t.buf, m.buf, n);
                if (fix && n >= HDR)
                    put_le(t.buf + offsetof(lam_wire_hdr_t, len), 4, n - HDR);
                lam_msg_t d;
                char why[256] = "";
                lam_status_t st = decode_at(&t, n % 8, &d, why, sizeof why);
                checked++;
                if (st != LAM_ERR_PROTO || !why[0]) {
                    wrong++;
                    printf("\n  base %d cut to %zu (fix %d): status %d", b, n, fix, st);
                }
                msg_free(&t);
            }
        }
        msg_free(&m);
    }
    printf("\n  %u truncations rejected\n", checked);
    CU_ASSERT(wrong == 0);
}

/* The reason is cut to why_len, always terminated, and why may be NULL. */
static void test_why_buffer(void)
{
    msg_t m = build_base(B_ATTN);
    m.buf[0] ^= 1;
    lam_msg_t d;
    char why[8];
    memset(why, 'x', sizeof why);
    CU_ASSERT(lam_wire_decode(m.buf, m.len, &d, why, sizeof why) == LAM_ERR_PROTO_VERSION);
    CU_ASSERT(strlen(why) == 7);
    CU_ASSERT(lam_wire_decode(m.buf, m.len, &d, NULL, 0) == LAM_ERR_PROTO_VERSION);
    why[0] = 'x';
    CU_ASSERT(lam_wire_decode(m.buf, m.len, &d, why, 1) == LAM_ERR_PROTO_VERSION && why[0] == '\0');
    m.buf[0] ^= 1;
    CU_ASSERT(lam_wire_decode(m.buf, m.len, &d, NULL, 0) == LAM_OK);
    CU_ASSERT(lam_wire_decode(NULL, 0, &d, why, sizeof why) == LAM_ERR_PROTO);
    msg_free(&m);
}

/* Random byte mutations of valid messages at odd alignments: no crash (the
 * sanitizer build checks the reads), and whatever is accepted is coherent. */
static void test_mutations(void)
{
    rng_t r = {0xF022};
    unsigned accepted = 0, total = 0;
    for (int b = 0; b < B_COUNT; b++) {
        msg_t base = build_base(b);
        for (unsigned it = 0; it < 3000; it++) {
            msg_t m = msg_alloc(base.len);
            memcpy(m.buf, base.buf, base.len);
            unsigned flips = rnd_in(&r, 1, 4);
            for (unsigned f = 0; f < flips && m.len; f++) {
                /* Most flips in the first 100 bytes, where the fields are. */
                size_t span = m.len < 100 || rnd_in(&r, 0, 3) ? (m.len < 100 ? m.len : 100) : m.len;
                m.buf[rnd_in(&r, 0, (uint32_t)span - 1)] = (uint8_t)rnd(&r);
            }
            lam_msg_t d;
            char why[256] = "";
            lam_status_t st = decode_at(&m, 1 + it % 7, &d, why, sizeof why);
            total++;
            if (st == LAM_OK) {
                accepted++;
                CU_ASSERT(d.type >= LAM_MSG_HELLO && d.type < LAM_MSG_TYPE_END);
                if (d.type == LAM_MSG_ATTN || d.type == LAM_MSG_ATTN_RESULT)
                    CU_ASSERT(lam_wire_attn_layout(&d.u.attn.h, d.type == LAM_MSG_ATTN_RESULT).total == m.len);
            } else {
                CU_ASSERT((st == LAM_ERR_PROTO || st == LAM_ERR_PROTO_VERSION) && why[0] && !strchr(why, '\n'));
            }
            msg_free(&m);
        }
        msg_free(&base);
    }
    printf("\n  %u of %u mutated messages still valid\n", accepted, total);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("wire", NULL, NULL);
    CU_add_test(s, "golden_bytes", test_golden_bytes);
    CU_add_test(s, "layout", test_layout);
    CU_add_test(s, "type_names", test_type_names);
    CU_add_test(s, "roundtrip", test_roundtrip);
    CU_add_test(s, "limits_accepted", test_limits_accepted);
    CU_add_test(s, "malformed_table", test_malformed_table);
    CU_add_test(s, "every_truncation", test_every_truncation);
    CU_add_test(s, "why_buffer", test_why_buffer);
    CU_add_test(s, "mutations", test_mutations);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
