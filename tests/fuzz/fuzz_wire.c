/* libFuzzer target for the wire decoder (proto/wire.c). Built and run by
 * scripts/fuzz.sh with clang, ASan and UBSan; not part of the CMake build.
 *
 * Each input is decoded twice: as given, and as a copy at an odd address
 * with magic, version and hdr.len made right, so that most inputs reach the
 * per-type checks instead of dying on the header. Whatever the decoder
 * accepts must be coherent: re-encoding the decoded fields with the writers
 * gives back the same bytes, and every array lies inside the input. Any
 * violation abort()s, which libFuzzer reports as a crash.
 *
 * LAM_FUZZ_SEEDS=dir ./fuzz_wire writes one valid message of each type (and
 * a few shapes of ATTN) into dir and exits: the fuzzer's starting corpus. */
#include "proto/wire.h"
#include "tests/fuzz/fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room to re-encode the largest message whose fixed parts a fuzzer input
 * can carry (a SEQ_RELEASE of LAM_WIRE_MAX_RELEASE ids). */
static uint8_t g_re[16 + 8 + 8 * LAM_WIRE_MAX_RELEASE];
static uint64_t g_ids[LAM_WIRE_MAX_RELEASE];

static int inside(const void *p, size_t n, const uint8_t *buf, size_t len)
{
    const uint8_t *q = p;
    return q >= buf && q <= buf + len && n <= (size_t)(buf + len - q);
}

static void check_accepted(const uint8_t *buf, size_t len, const lam_msg_t *m)
{
    lam_wire_hdr_t hdr;
    memcpy(&hdr, buf, sizeof hdr);
    CHECK(len >= 16 && hdr.len == len - 16 && m->type == hdr.type && m->tag == hdr.tag);
    CHECK(m->type >= LAM_MSG_HELLO && m->type < LAM_MSG_TYPE_END);
    CHECK(strcmp(lam_msg_type_name(m->type), "unknown") != 0);
    size_t n = 0;
    switch (m->type) {
    case LAM_MSG_HELLO: n = lam_wire_put_hello(g_re, m->tag, &m->u.hello); break;
    case LAM_MSG_HELLO_CHALLENGE: n = lam_wire_put_challenge(g_re, m->tag, &m->u.challenge); break;
    case LAM_MSG_HELLO_AUTH: n = lam_wire_put_auth(g_re, m->tag, &m->u.auth); break;
    case LAM_MSG_HELLO_OK: n = lam_wire_put_ok(g_re, m->tag); break;
    case LAM_MSG_STATS: n = lam_wire_put_stats_req(g_re, m->tag); break;
    case LAM_MSG_STATS_REPLY: n = lam_wire_put_stats(g_re, m->tag, &m->u.stats); break;
    case LAM_MSG_ATTN:
    case LAM_MSG_ATTN_RESULT: {
        int result = m->type == LAM_MSG_ATTN_RESULT;
        const lam_wire_attn_t *h = &m->u.attn.h;
        lam_wire_attn_layout_t L = lam_wire_attn_layout(h, result);
        CHECK(L.total == len && h->n_seq >= 1 && h->n_tok >= 1);
        size_t es = lam_dtype_size(h->dtype);
        size_t q = (size_t)h->n_tok * h->n_q_heads * h->head_dim * es;
        size_t kv = (size_t)h->n_tok * h->n_kv_heads * h->head_dim * es;
        CHECK((const uint8_t *)m->u.attn.seq == buf + L.seq && inside(m->u.attn.seq, 16 * (size_t)h->n_seq, buf, len));
        if (result) {
            CHECK(m->u.attn.o == buf + L.o && inside(m->u.attn.o, q, buf, len));
            CHECK(!m->u.attn.q && !m->u.attn.k && !m->u.attn.v);
            CHECK(L.o + q == len);
        } else {
            CHECK(m->u.attn.q == buf + L.q && inside(m->u.attn.q, q, buf, len));
            CHECK(m->u.attn.k == buf + L.k && inside(m->u.attn.k, kv, buf, len));
            CHECK(m->u.attn.v == buf + L.v && inside(m->u.attn.v, kv, buf, len));
            CHECK(!m->u.attn.o && L.v + kv == len);
        }
        /* The sequence table says what the header promised. */
        uint64_t sum = 0;
        for (size_t i = 0; i < h->n_seq; i++) {
            lam_wire_seq_t s;
            memcpy(&s, buf + L.seq + 16 * i, sizeof s);
            CHECK(s.seq_id && s.n_tok && (uint64_t)s.pos + s.n_tok <= LAM_WIRE_MAX_POS);
            CHECK(result ? s.status <= 0 && s.status >= -999 : s.status == 0);
            sum += s.n_tok;
        }
        CHECK(sum == h->n_tok);
        /* Unique ids, checked the slow obvious way (max_len keeps n small). */
        for (size_t i = 0; i < h->n_seq; i++)
            for (size_t j = 0; j < i; j++)
                CHECK(memcmp(&m->u.attn.seq[i].seq_id, &m->u.attn.seq[j].seq_id, 8) != 0);
        /* Header, fixed part and table re-encode to the same bytes. */
        n = lam_wire_put_attn(g_re, m->tag, result, h, m->u.attn.seq);
        CHECK(n == len);
        CHECK(!memcmp(g_re, buf, L.seq + 16 * (size_t)h->n_seq));
        return;
    }
    case LAM_MSG_SEQ_RELEASE:
        CHECK(m->u.release.ids == buf + 24 && inside(m->u.release.ids, 8 * (size_t)m->u.release.n_seq, buf, len));
        CHECK(m->u.release.n_seq >= 1 && m->u.release.n_seq <= LAM_WIRE_MAX_RELEASE);
        memcpy(g_ids, m->u.release.ids, 8 * (size_t)m->u.release.n_seq);
        n = lam_wire_put_release(g_re, m->tag, g_ids, m->u.release.n_seq);
        break;
    case LAM_MSG_ERROR: {
        CHECK(m->u.error.msg == (const char *)buf + 24 && inside(m->u.error.msg, m->u.error.msg_len, buf, len));
        CHECK(m->u.error.msg_len <= LAM_WIRE_MAX_ERROR_TEXT);
        /* put_error takes a C string: re-encode only text without NULs. */
        char text[LAM_WIRE_MAX_ERROR_TEXT + 1];
        memcpy(text, m->u.error.msg, m->u.error.msg_len);
        text[m->u.error.msg_len] = '\0';
        if (strlen(text) != m->u.error.msg_len) {
            CHECK(len == 24 + (size_t)m->u.error.msg_len);
            return;
        }
        CHECK(lam_wire_error_size(m->u.error.msg_len) == len);
        n = lam_wire_put_error(g_re, m->tag, m->u.error.code, text);
        break;
    }
    default:
        CHECK(!"decoder accepted an unknown type");
    }
    CHECK(n == len);
    CHECK(!memcmp(g_re, buf, len));
}

static void check_one(const uint8_t *buf, size_t len)
{
    lam_msg_t m;
    char why[160];
    memset(why, 0x7F, sizeof why);
    lam_status_t st = lam_wire_decode(buf, len, &m, why, sizeof why);
    if (st == LAM_OK) {
        check_accepted(buf, len, &m);
        return;
    }
    CHECK(st == LAM_ERR_PROTO || st == LAM_ERR_PROTO_VERSION);
    /* One line of reason, always terminated. */
    size_t n = strnlen(why, sizeof why);
    CHECK(n > 0 && n < sizeof why && !memchr(why, '\n', n));
    /* Same verdict without a reason buffer. */
    CHECK(lam_wire_decode(buf, len, &m, NULL, 0) == st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_one(data, size);
    if (size < 16)
        return 0;
    /* The repaired copy at an odd address (malloc'd to its exact end, so
     * ASan sees any read past it). */
    uint8_t *mem = malloc(size + 1);
    if (!mem)
        return 0;
    uint8_t *p = mem + 1;
    memcpy(p, data, size);
    lam_wire_hdr_t hdr;
    memcpy(&hdr, p, sizeof hdr);
    hdr.magic = LAM_WIRE_MAGIC;
    hdr.version = LAM_WIRE_VERSION;
    hdr.len = (uint32_t)(size - 16);
    memcpy(p, &hdr, sizeof hdr);
    check_one(p, size);
    free(mem);
    return 0;
}

/* ---- seed corpus ----------------------------------------------------------- */

static void write_seed(const char *dir, const char *name, const void *buf, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "fuzz_wire: cannot write %s\n", path);
        exit(1);
    }
    /* A seed must itself be valid, or the corpus starts off wrong. */
    lam_msg_t m;
    char why[160];
    if (lam_wire_decode(buf, len, &m, why, sizeof why) != LAM_OK) {
        fprintf(stderr, "fuzz_wire: seed %s invalid: %s\n", name, why);
        exit(1);
    }
}

static void write_attn_seed(const char *dir, const char *name, int result, const lam_wire_attn_t *h,
                            const lam_wire_seq_t *seq)
{
    static uint8_t buf[1 << 16];
    lam_wire_attn_layout_t L = lam_wire_attn_layout(h, result);
    if (!L.total || L.total > sizeof buf || lam_wire_put_attn(buf, 1, result, h, seq) != L.total) {
        fprintf(stderr, "fuzz_wire: seed %s does not fit\n", name);
        exit(1);
    }
    for (size_t i = L.seq + 16 * (size_t)h->n_seq; i < L.total; i++)
        buf[i] = (uint8_t)(i * 131u);
    write_seed(dir, name, buf, L.total);
}

static void write_seeds(const char *dir)
{
    uint8_t buf[2048];
    lam_wire_hello_t hello = {.caps = LAM_CAP_PREFILL_CHUNKS | LAM_CAP_STATS, .max_msg = 1u << 24,
                              .model_fingerprint = 0x0123456789ABCDEFull, .shard_index = 0, .shard_count = 2,
                              .kv_dtype = LAM_DT_F16, .act_dtype = LAM_DT_BF16};
    memset(hello.nonce, 0x11, sizeof hello.nonce);
    write_seed(dir, "hello", buf, lam_wire_put_hello(buf, 1, &hello));

    lam_wire_challenge_t ch = {.caps = LAM_CAP_STATS, .max_msg = 1u << 24, .model_fingerprint = 0x0123456789ABCDEFull,
                               .shard_index = 1, .shard_count = 2, .kv_head_begin = 4, .kv_head_end = 8,
                               .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128, .max_ctx = 8192,
                               .page_tokens = 16, .pages_total = 4096, .kv_dtype = LAM_DT_F16};
    memset(ch.nonce, 0x22, sizeof ch.nonce);
    memset(ch.mac, 0x33, sizeof ch.mac);
    write_seed(dir, "challenge", buf, lam_wire_put_challenge(buf, 2, &ch));

    lam_wire_auth_t auth;
    memset(auth.mac, 0x44, sizeof auth.mac);
    write_seed(dir, "auth", buf, lam_wire_put_auth(buf, 3, &auth));
    write_seed(dir, "ok", buf, lam_wire_put_ok(buf, 4));
    write_seed(dir, "stats", buf, lam_wire_put_stats_req(buf, 5));
    lam_wire_stats_t st = {4096, 100, 3, 1000, 5000, 123456789, 2};
    write_seed(dir, "stats_reply", buf, lam_wire_put_stats(buf, 6, &st));

    uint64_t ids[4] = {1, 2, 0xFFFFFFFFFFFFFFFFull, 1ull << 40};
    write_seed(dir, "release", buf, lam_wire_put_release(buf, 7, ids, 4));
    write_seed(dir, "error", buf, lam_wire_put_error(buf, 8, LAM_ERR_SEQ_UNKNOWN, "sequence 7 not held"));
    write_seed(dir, "error_empty", buf, lam_wire_put_error(buf, 9, LAM_ERR_PROTO, ""));

    /* ATTN: decode (one token per sequence) and prefill chunks, each dtype. */
    lam_wire_seq_t seq[8];
    for (unsigned i = 0; i < 8; i++) {
        lam_wire_seq_t s = {1000 + i, 17 * i, 1, 0};
        memcpy(&seq[i], &s, sizeof s);
    }
    lam_wire_attn_t h = {.step = 3, .layer = 2, .mb = 0, .dtype = LAM_DT_F16, .n_seq = 8, .n_q_heads = 4,
                         .n_kv_heads = 2, .head_dim = 4, .n_tok = 8};
    write_attn_seed(dir, "attn_decode_f16", 0, &h, seq);
    h.dtype = LAM_DT_F32;
    write_attn_seed(dir, "attn_decode_f32", 0, &h, seq);
    seq[3].status = LAM_ERR_KV_FULL;
    write_attn_seed(dir, "attn_result_f32", 1, &h, seq);
    seq[3].status = 0;

    lam_wire_seq_t pre[2] = {{42, 0, 5, 0}, {43, LAM_WIRE_MAX_POS - 3, 3, 0}};
    lam_wire_attn_t hp = {.step = 4, .layer = 1023, .mb = 1, .dtype = LAM_DT_BF16, .n_seq = 2, .n_q_heads = 3,
                          .n_kv_heads = 1, .head_dim = 2, .n_tok = 8};
    write_attn_seed(dir, "attn_prefill_bf16", 0, &hp, pre);
    write_attn_seed(dir, "attn_result_bf16", 1, &hp, pre);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("LAM_FUZZ_SEEDS");
    if (dir && *dir) {
        write_seeds(dir);
        exit(0);
    }
    return 0;
}
