/* lamina-attention-node as a process, spoken to over loopback UCX with
 * lam_net + lam_wire: handshake and its refusals, malformed ATTN messages
 * (each closes only its own connection), per-sequence statuses, releases,
 * and attention results against a plain-C reference. The nodes serve a tiny
 * model file built here (config only); random inputs, the seed is printed. */
#include "common/dtype.h"
#include "common/log.h"
#include "kernels/cpu/attn.h"
#include "kernels/cpu/ops.h"
#include "proto/auth.h"
#include "tests/attn_node/node_client.h"
#include "tests/util/fixtures.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *g_model;
static uint64_t g_fp;

static float frand(void) { return (float)rand() / RAND_MAX * 2.0f - 1.0f; }

static float rounded(float x, int dt)
{
    if (dt == LAM_DT_F16)
        return lam_fp16_to_fp32(lam_fp32_to_fp16(x));
    if (dt == LAM_DT_BF16)
        return lam_bf16_to_fp32(lam_fp32_to_bf16(x));
    return x;
}

static nc_conn_t *connect_auth(int port, int kv_dtype, int act_dtype, int shard, int shards)
{
    nc_conn_t *c = nc_connect(port);
    if (!c)
        return NULL;
    lam_wire_hello_t h = nc_hello_default(g_fp, shard, shards, kv_dtype, act_dtype);
    lam_wire_challenge_t ch;
    if (!nc_handshake(c, &h, NC_TOKEN, &ch)) {
        nc_free(c);
        return NULL;
    }
    return c;
}

/* ---- a compute node's view: sequences with their K/V history -------------------- */

typedef struct ref_seq {
    uint64_t id;
    int len[NC_LAYERS];
    float *K[NC_LAYERS], *V[NC_LAYERS]; /* [NC_CTX][n_kv * hd], as the node stores them */
} ref_seq_t;

typedef struct ref {
    int n_q, n_kv;          /* this shard's heads */
    int kv_dtype, act_dtype;
    float tol;
    ref_seq_t seqs[16];
    int n_seqs;
    uint64_t step;
    uint32_t tag;
    double max_err;
} ref_t;

static void ref_init(ref_t *r, int shards, int kv_dtype, int act_dtype, float tol)
{
    memset(r, 0, sizeof *r);
    r->n_kv = NC_KV_HEADS / shards;
    r->n_q = r->n_kv * (NC_HEADS / NC_KV_HEADS);
    r->kv_dtype = kv_dtype;
    r->act_dtype = act_dtype;
    r->tol = tol;
    r->tag = 100;
}

static ref_seq_t *ref_seq(ref_t *r, uint64_t id)
{
    for (int i = 0; i < r->n_seqs; i++)
        if (r->seqs[i].id == id)
            return &r->seqs[i];
    ref_seq_t *s = &r->seqs[r->n_seqs++];
    s->id = id;
    for (int l = 0; l < NC_LAYERS; l++) {
        s->K[l] = calloc((size_t)NC_CTX * r->n_kv * NC_HEAD_DIM, sizeof(float));
        s->V[l] = calloc((size_t)NC_CTX * r->n_kv * NC_HEAD_DIM, sizeof(float));
        s->len[l] = 0;
    }
    return s;
}

/* The node dropped the sequence (released, or its connection closed). */
static void ref_forget(ref_t *r, uint64_t id)
{
    ref_seq_t *s = ref_seq(r, id);
    for (int l = 0; l < NC_LAYERS; l++)
        s->len[l] = 0;
}

static void ref_free(ref_t *r)
{
    for (int i = 0; i < r->n_seqs; i++)
        for (int l = 0; l < NC_LAYERS; l++) {
            free(r->seqs[i].K[l]);
            free(r->seqs[i].V[l]);
        }
}

typedef struct chunk {
    uint64_t id;
    uint32_t pos;
    uint16_t n;
} chunk_t;

/* One ATTN round trip for `layer`: random q/k/v for the chunks, checks the
 * reply's framing, stores each chunk's status, and compares the output rows
 * of successful chunks with lam_attn_ref_f32 over the reference history
 * (failed chunks must come back as zero rows). */
static bool exchange(nc_conn_t *c, ref_t *r, int layer, const chunk_t *ch, int n_seq, int16_t *status)
{
    const int hd = NC_HEAD_DIM, qrow = r->n_q * hd, kvrow = r->n_kv * hd;
    int n_tok = 0;
    lam_wire_seq_t seq[16];
    for (int i = 0; i < n_seq; i++) {
        seq[i] = (lam_wire_seq_t){.seq_id = ch[i].id, .pos = ch[i].pos, .n_tok = ch[i].n};
        n_tok += ch[i].n;
    }
    float *q = malloc((size_t)n_tok * qrow * sizeof *q), *k = malloc((size_t)n_tok * kvrow * sizeof *k);
    float *v = malloc((size_t)n_tok * kvrow * sizeof *v);
    for (int i = 0; i < n_tok * qrow; i++)
        q[i] = 2.0f * frand();
    for (int i = 0; i < n_tok * kvrow; i++) {
        k[i] = frand();
        v[i] = frand();
    }
    lam_wire_attn_t h = {.step = r->step++, .layer = (uint16_t)layer, .mb = (uint8_t)(r->step & 1),
                         .dtype = (uint8_t)r->act_dtype, .n_seq = (uint16_t)n_seq, .n_q_heads = (uint16_t)r->n_q,
                         .n_kv_heads = (uint16_t)r->n_kv, .head_dim = (uint16_t)hd, .n_tok = (uint32_t)n_tok};
    uint32_t tag = r->tag++;
    size_t len;
    void *msg = nc_attn_build(&h, seq, q, k, v, tag, &len);
    bool ok = msg && nc_send(c, msg, len);
    free(msg);
    lam_msg_t m;
    if (ok && !nc_recv_msg(c, &m, 10000)) {
        printf("\n  no ATTN_RESULT\n");
        ok = false;
    }
    if (ok && (m.type != LAM_MSG_ATTN_RESULT || m.tag != tag || m.u.attn.h.step != h.step ||
               m.u.attn.h.layer != layer || m.u.attn.h.mb != h.mb || m.u.attn.h.dtype != h.dtype ||
               m.u.attn.h.n_seq != n_seq || m.u.attn.h.n_tok != (uint32_t)n_tok ||
               m.u.attn.h.n_q_heads != r->n_q || m.u.attn.h.n_kv_heads != r->n_kv)) {
        printf("\n  reply type %s tag %u does not match the request\n", lam_msg_type_name(m.type), m.tag);
        if (m.type == LAM_MSG_ERROR)
            printf("  error %d: %.*s\n", m.u.error.code, (int)m.u.error.msg_len, m.u.error.msg);
        ok = false;
    }
    if (!ok) {
        free(q), free(k), free(v);
        return false;
    }
    size_t esz = lam_dtype_size(h.dtype);
    float *o = malloc((size_t)n_tok * qrow * sizeof *o), *want = malloc((size_t)qrow * sizeof *want);
    float scratch[NC_CTX], qr[NC_HEADS * NC_HEAD_DIM];
    lam_convert(o, LAM_DT_F32, m.u.attn.o, h.dtype, (size_t)n_tok * qrow);
    int row = 0;
    for (int i = 0; i < n_seq; i++) {
        lam_wire_seq_t e;
        memcpy(&e, &m.u.attn.seq[i], sizeof e);
        ok &= e.seq_id == ch[i].id && e.pos == ch[i].pos && e.n_tok == ch[i].n;
        status[i] = e.status;
        if (e.status != 0) {
            for (int j = 0; j < ch[i].n * qrow; j++)
                ok &= o[(size_t)row * qrow + j] == 0.0f;
            row += ch[i].n;
            continue;
        }
        ref_seq_t *s = ref_seq(r, ch[i].id);
        for (int t = 0; t < ch[i].n; t++)
            for (int j = 0; j < kvrow; j++) {
                size_t src = (size_t)(row + t) * kvrow + j, dst = (size_t)(ch[i].pos + t) * kvrow + j;
                s->K[layer][dst] = rounded(rounded(k[src], r->act_dtype), r->kv_dtype);
                s->V[layer][dst] = rounded(rounded(v[src], r->act_dtype), r->kv_dtype);
            }
        s->len[layer] = (int)ch[i].pos + ch[i].n;
        for (int t = 0; t < ch[i].n; t++) {
            for (int j = 0; j < qrow; j++)
                qr[j] = rounded(q[(size_t)(row + t) * qrow + j], r->act_dtype);
            lam_attn_ref_f32(want, qr, s->K[layer], s->V[layer], (int)ch[i].pos + t + 1, r->n_q, r->n_kv, hd, kvrow,
                             scratch);
            for (int j = 0; j < qrow; j++) {
                double d = fabs((double)o[(size_t)(row + t) * qrow + j] - want[j]);
                if (!(d <= r->max_err))
                    r->max_err = d;
            }
        }
        row += ch[i].n;
    }
    (void)esz;
    free(o), free(want), free(q), free(k), free(v);
    if (r->max_err > r->tol) {
        printf("\n  attention output differs from the reference by %g (tolerance %g)\n", r->max_err, r->tol);
        ok = false;
    }
    return ok;
}

/* exchange() over every layer, all chunks expected to succeed. */
static bool step_all_layers(nc_conn_t *c, ref_t *r, const chunk_t *ch, int n_seq)
{
    int16_t st[16];
    for (int l = 0; l < NC_LAYERS; l++) {
        if (!exchange(c, r, l, ch, n_seq, st))
            return false;
        for (int i = 0; i < n_seq; i++)
            if (st[i] != 0) {
                printf("\n  sequence %llu layer %d: status %d\n", (unsigned long long)ch[i].id, l, st[i]);
                return false;
            }
    }
    return true;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_handshake(void)
{
    nc_node_t n;
    CU_ASSERT_FATAL(nc_node_start(&n, g_model, (const char *[]){"--kv-capacity", "4M", NULL}));
    nc_conn_t *c = nc_connect(n.port);
    CU_ASSERT_FATAL(c != NULL);
    lam_wire_hello_t h = nc_hello_default(g_fp, 0, 1, LAM_DT_F16, LAM_DT_F32);
    lam_wire_challenge_t ch;
    CU_ASSERT(nc_handshake(c, &h, NC_TOKEN, &ch));
    CU_ASSERT(ch.caps == (LAM_CAP_PREFILL_CHUNKS | LAM_CAP_STATS));
    CU_ASSERT(ch.model_fingerprint == g_fp);
    CU_ASSERT(ch.shard_index == 0 && ch.shard_count == 1 && ch.kv_head_begin == 0 && ch.kv_head_end == NC_KV_HEADS);
    CU_ASSERT(ch.n_layers == NC_LAYERS && ch.n_heads == NC_HEADS && ch.n_kv_heads == NC_KV_HEADS &&
              ch.head_dim == NC_HEAD_DIM);
    CU_ASSERT(ch.max_ctx == NC_CTX && ch.page_tokens == 64 && ch.kv_dtype == LAM_DT_F16);
    /* page: 2 layers x K,V x 2 heads x 16 tokens x 16 x 2 bytes = 4 KiB */
    CU_ASSERT(ch.pages_total == 256);
    lam_wire_attn_t mh = {.dtype = LAM_DT_F32, .n_seq = 2048, .n_q_heads = NC_HEADS, .n_kv_heads = NC_KV_HEADS,
                          .head_dim = NC_HEAD_DIM, .n_tok = 2048};
    CU_ASSERT(ch.max_msg >= lam_wire_attn_layout(&mh, 0).total);
    CU_ASSERT(ch.max_msg >= lam_wire_release_size(LAM_WIRE_MAX_RELEASE));
    lam_wire_stats_t st;
    CU_ASSERT(nc_stats(c, &st));
    CU_ASSERT(st.pages_total == 256 && st.pages_used == 0 && st.n_seqs == 0 && st.bad_msgs == 0);
    /* two connections at once */
    nc_conn_t *c2 = connect_auth(n.port, LAM_DT_F16, LAM_DT_BF16, 0, 1);
    CU_ASSERT(c2 != NULL);
    CU_ASSERT(nc_stats(c, &st));
    nc_free(c2);
    nc_free(c);
    CU_ASSERT(nc_node_stop(&n) == 0);
}

static void test_handshake_refusals(void)
{
    nc_node_t n;
    CU_ASSERT_FATAL(nc_node_start(&n, g_model, (const char *[]){"--kv-capacity", "4M", "--shard", "1/2", NULL}));
    lam_wire_challenge_t ch;
    struct {
        const char *name;
        uint64_t fp;
        int shard, shards, kv, act;
        int code;
    } cases[] = {
        {"wrong fingerprint", g_fp ^ 1, 1, 2, LAM_DT_F16, LAM_DT_F32, LAM_ERR_MODEL_MISMATCH},
        {"wrong shard index", g_fp, 0, 2, LAM_DT_F16, LAM_DT_F32, LAM_ERR_MODEL_MISMATCH},
        {"wrong shard count", g_fp, 1, 3, LAM_DT_F16, LAM_DT_F32, LAM_ERR_MODEL_MISMATCH},
        {"wrong KV dtype", g_fp, 1, 2, LAM_DT_BF16, LAM_DT_F32, LAM_ERR_MODEL_MISMATCH},
        {"unknown activation dtype", g_fp, 1, 2, LAM_DT_F16, 9, LAM_ERR_PROTO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nc_conn_t *c = nc_connect(n.port);
        CU_ASSERT_FATAL(c != NULL);
        lam_wire_hello_t h = nc_hello_default(cases[i].fp, cases[i].shard, cases[i].shards, cases[i].kv,
                                              cases[i].act);
        uint8_t buf[256];
        CU_ASSERT(nc_send(c, buf, lam_wire_put_hello(buf, 1, &h)));
        bool ok = nc_expect_error_close(c, cases[i].code, cases[i].code == LAM_ERR_PROTO);
        if (!ok)
            printf("\n  case: %s\n", cases[i].name);
        CU_ASSERT(ok);
        nc_free(c);
    }

    /* wrong token: the node's proof does not check out with ours, and ours is refused */
    nc_conn_t *c = nc_connect(n.port);
    CU_ASSERT_FATAL(c != NULL);
    lam_wire_hello_t h = nc_hello_default(g_fp, 1, 2, LAM_DT_F16, LAM_DT_F32);
    const char *wrong = "not-the-cluster-token-at-all";
    CU_ASSERT_FATAL(nc_hello(c, &h, &ch));
    uint8_t mac[LAM_WIRE_MAC];
    lam_auth_mac(mac, wrong, "lamina-a", h.nonce, ch.nonce);
    CU_ASSERT(!lam_auth_equal(mac, ch.mac));
    lam_auth_mac(mac, NC_TOKEN, "lamina-a", h.nonce, ch.nonce);
    CU_ASSERT(lam_auth_equal(mac, ch.mac));
    CU_ASSERT(ch.kv_head_begin == 1 && ch.kv_head_end == 2 && ch.shard_index == 1 && ch.shard_count == 2);
    lam_wire_auth_t a;
    lam_auth_mac(a.mac, wrong, "lamina-c", ch.nonce, h.nonce);
    uint8_t buf[128];
    CU_ASSERT(nc_send(c, buf, lam_wire_put_auth(buf, 2, &a)));
    CU_ASSERT(nc_expect_error_close(c, LAM_ERR_AUTH, false));
    nc_free(c);

    /* a proof for someone else's nonces (replay) */
    c = nc_connect(n.port);
    CU_ASSERT_FATAL(c != NULL);
    h = nc_hello_default(g_fp, 1, 2, LAM_DT_F16, LAM_DT_F32);
    CU_ASSERT_FATAL(nc_hello(c, &h, &ch));
    uint8_t other[LAM_WIRE_NONCE];
    lam_auth_nonce(other);
    lam_auth_mac(a.mac, NC_TOKEN, "lamina-c", other, h.nonce);
    CU_ASSERT(nc_send(c, buf, lam_wire_put_auth(buf, 2, &a)));
    CU_ASSERT(nc_expect_error_close(c, LAM_ERR_AUTH, false));
    nc_free(c);

    /* messages before authentication */
    for (int i = 0; i < 4; i++) {
        c = nc_connect(n.port);
        CU_ASSERT_FATAL(c != NULL);
        uint8_t *msg = NULL;
        size_t len = 0;
        int code = LAM_ERR_AUTH;
        if (i == 0) { /* ATTN straight away */
            lam_wire_attn_t ah = {.layer = 0, .dtype = LAM_DT_F32, .n_seq = 1, .n_q_heads = 2, .n_kv_heads = 1,
                                  .head_dim = NC_HEAD_DIM, .n_tok = 1};
            lam_wire_seq_t sq = {.seq_id = 1, .pos = 0, .n_tok = 1};
            float q[2 * NC_HEAD_DIM] = {0}, kv[NC_HEAD_DIM] = {0};
            msg = nc_attn_build(&ah, &sq, q, kv, kv, 5, &len);
        } else if (i == 1) { /* STATS */
            msg = malloc(64);
            len = lam_wire_put_stats_req(msg, 5);
        } else if (i == 2) { /* HELLO_AUTH without HELLO */
            msg = malloc(64);
            len = lam_wire_put_auth(msg, 5, &a);
        } else { /* STATS after HELLO, before HELLO_AUTH */
            h = nc_hello_default(g_fp, 1, 2, LAM_DT_F16, LAM_DT_F32);
            CU_ASSERT(nc_hello(c, &h, &ch));
            msg = malloc(64);
            len = lam_wire_put_stats_req(msg, 5);
        }
        CU_ASSERT(nc_send(c, msg, len));
        free(msg);
        bool ok = nc_expect_error_close(c, code, false);
        if (!ok)
            printf("\n  before-auth case %d\n", i);
        CU_ASSERT(ok);
        nc_free(c);
    }

    /* HELLO twice */
    c = nc_connect(n.port);
    CU_ASSERT_FATAL(c != NULL);
    h = nc_hello_default(g_fp, 1, 2, LAM_DT_F16, LAM_DT_F32);
    CU_ASSERT(nc_hello(c, &h, &ch));
    CU_ASSERT(nc_send(c, buf, lam_wire_put_hello(buf, 1, &h)));
    CU_ASSERT(nc_expect_error_close(c, LAM_ERR_PROTO, false));
    nc_free(c);

    /* and a proper client still gets in */
    c = connect_auth(n.port, LAM_DT_F16, LAM_DT_F32, 1, 2);
    CU_ASSERT_FATAL(c != NULL);
    lam_wire_stats_t st;
    CU_ASSERT(nc_stats(c, &st));
    CU_ASSERT(st.bad_msgs == 12); /* every refusal above */
    nc_free(c);
    CU_ASSERT(nc_node_stop(&n) == 0);
}

/* Malformed or misfitting ATTN messages, each on its own authenticated
 * connection: ERROR and close; a good connection keeps getting correct
 * results between them. */
static void test_bad_attn(void)
{
    nc_node_t n;
    CU_ASSERT_FATAL(nc_node_start(&n, g_model,
                                  (const char *[]){"--kv-dtype", "f32", "--kv-capacity", "4M",
                                                   "--max-batch-tokens", "8", NULL}));
    nc_conn_t *good = connect_auth(n.port, LAM_DT_F32, LAM_DT_F32, 0, 1);
    CU_ASSERT_FATAL(good != NULL);
    ref_t r;
    ref_init(&r, 1, LAM_DT_F32, LAM_DT_F32, 1e-5f);
    uint32_t good_pos = 0;

    enum {
        B_LAYER, B_QHEADS, B_KVHEADS, B_HEADDIM, B_GARBAGE, B_TRUNC, B_MAGIC, B_VERSION, B_LEN, B_TYPE,
        B_STATS_REPLY, B_SHORT, B_SUM, B_DUP, B_ZERO_ID, B_DTYPE, B_TOO_MANY, B_RESULT, B_COUNT
    };
    static const char *names[B_COUNT] = {
        "layer out of range", "query heads", "KV heads", "head_dim", "garbage bytes", "truncated", "bad magic",
        "bad version", "length field", "unknown type", "STATS_REPLY from a client", "shorter than a header",
        "chunk lengths do not add up", "duplicate sequence ids", "sequence id 0", "unknown dtype",
        "more tokens than --max-batch-tokens", "ATTN_RESULT from a client"};
    for (int b = 0; b < B_COUNT; b++) {
        nc_conn_t *c = connect_auth(n.port, LAM_DT_F32, LAM_DT_F32, 0, 1);
        CU_ASSERT_FATAL(c != NULL);
        lam_wire_attn_t h = {.layer = 1, .dtype = LAM_DT_F32, .n_seq = 2, .n_q_heads = NC_HEADS,
                             .n_kv_heads = NC_KV_HEADS, .head_dim = NC_HEAD_DIM, .n_tok = 3};
        lam_wire_seq_t sq[2] = {{.seq_id = 1, .pos = 0, .n_tok = 2}, {.seq_id = 2, .pos = 0, .n_tok = 1}};
        if (b == B_LAYER)
            h.layer = NC_LAYERS;
        if (b == B_QHEADS)
            h.n_q_heads = NC_KV_HEADS;
        if (b == B_KVHEADS)
            h.n_kv_heads = 1;
        if (b == B_HEADDIM)
            h.head_dim = 8;
        if (b == B_DUP)
            sq[1].seq_id = 1;
        if (b == B_ZERO_ID)
            sq[0].seq_id = 0;
        if (b == B_TOO_MANY) {
            h.dtype = LAM_DT_F16; /* fits in max_msg, which is sized for f32 */
            h.n_tok = 9;
            sq[0].n_tok = 8;
        }
        static float q[16 * NC_HEADS * NC_HEAD_DIM], kv[16 * NC_KV_HEADS * NC_HEAD_DIM];
        for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
            q[i] = frand();
        for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
            kv[i] = frand();
        size_t len;
        uint8_t *msg = nc_attn_build(&h, sq, q, kv, kv, 9, &len);
        CU_ASSERT_FATAL(msg != NULL);
        lam_wire_hdr_t hdr;
        memcpy(&hdr, msg, sizeof hdr);
        switch (b) {
        case B_GARBAGE:
            for (size_t i = 0; i < len; i++)
                msg[i] = (uint8_t)rand();
            msg[0] ^= 0x5a; /* surely not the magic */
            break;
        case B_TRUNC: len -= 7; break;
        case B_MAGIC: hdr.magic ^= 0x01000000; break;
        case B_VERSION: hdr.version = 99; break;
        case B_LEN: hdr.len += 4; break;
        case B_TYPE: hdr.type = 200; break;
        case B_SHORT: len = 5; break;
        case B_SUM: {
            lam_wire_seq_t e;
            memcpy(&e, msg + sizeof hdr + sizeof h, sizeof e);
            e.n_tok = 1;
            memcpy(msg + sizeof hdr + sizeof h, &e, sizeof e);
            break;
        }
        case B_DTYPE: msg[sizeof hdr + 11] = 7; break; /* lam_wire_attn_t.dtype */
        case B_RESULT: hdr.type = LAM_MSG_ATTN_RESULT; break;
        case B_STATS_REPLY: {
            lam_wire_stats_t st = {0};
            len = lam_wire_put_stats(msg, 9, &st);
            memcpy(&hdr, msg, sizeof hdr);
            break;
        }
        default: break;
        }
        if (b == B_MAGIC || b == B_VERSION || b == B_LEN || b == B_TYPE || b == B_RESULT)
            memcpy(msg, &hdr, sizeof hdr);
        CU_ASSERT(nc_send(c, msg, len));
        free(msg);
        bool ok = nc_expect_error_close(c, LAM_ERR_PROTO, true);
        if (!ok)
            printf("\n  bad ATTN case: %s\n", names[b]);
        CU_ASSERT(ok);
        nc_free(c);

        /* the good connection carries on: a decode step of its sequence on every layer */
        chunk_t ch = {.id = 42, .pos = good_pos, .n = (uint16_t)(good_pos ? 1 : 3)};
        bool good_ok = step_all_layers(good, &r, &ch, 1);
        if (!good_ok)
            printf("\n  good connection failed after: %s\n", names[b]);
        CU_ASSERT_FATAL(good_ok);
        good_pos += ch.n;
    }
    lam_wire_stats_t st;
    CU_ASSERT(nc_stats(good, &st));
    CU_ASSERT(st.bad_msgs == B_COUNT);
    CU_ASSERT(st.n_seqs == 1); /* the bad connections' sequences went with them */
    CU_ASSERT(st.attn_msgs == (uint64_t)B_COUNT * NC_LAYERS);
    nc_free(good);
    ref_free(&r);
    CU_ASSERT(nc_node_stop(&n) == 0);
}

/* Decode steps of several sequences with prefill chunks mixed in, against
 * the plain-C reference. */
static void numeric(int kv_dtype, int act_dtype, int shard, int shards, float tol)
{
    char shard_arg[16];
    snprintf(shard_arg, sizeof shard_arg, "%d/%d", shard, shards);
    nc_node_t n;
    CU_ASSERT_FATAL(nc_node_start(&n, g_model,
                                  (const char *[]){"--kv-dtype", lam_dtype_name((unsigned)kv_dtype), "--kv-capacity",
                                                   "8M", "--shard", shard_arg, "--max-batch-tokens", "64",
                                                   "--page-tokens", "4", "--threads", "2", NULL}));
    nc_conn_t *c = connect_auth(n.port, kv_dtype, act_dtype, shard, shards);
    CU_ASSERT_FATAL(c != NULL);
    ref_t r;
    ref_init(&r, shards, kv_dtype, act_dtype, tol);
    /* step 0: two prompts; then decode, with a third prompt arriving in two chunks */
    chunk_t s0[] = {{11, 0, 5}, {22, 0, 3}};
    CU_ASSERT(step_all_layers(c, &r, s0, 2));
    chunk_t s1[] = {{11, 5, 1}, {22, 3, 1}};
    CU_ASSERT(step_all_layers(c, &r, s1, 2));
    chunk_t s2[] = {{22, 4, 1}, {33, 0, 4}, {11, 6, 1}};
    CU_ASSERT(step_all_layers(c, &r, s2, 3));
    chunk_t s3[] = {{11, 7, 1}, {22, 5, 1}, {33, 4, 13}};
    CU_ASSERT(step_all_layers(c, &r, s3, 3));
    for (uint32_t t = 0; t < 6; t++) {
        chunk_t s4[] = {{33, 17 + t, 1}, {11, 8 + t, 1}, {22, 6 + t, 1}};
        CU_ASSERT(step_all_layers(c, &r, s4, 3));
    }
    /* a long prompt across many pages */
    chunk_t s5[] = {{44, 0, 40}};
    CU_ASSERT(step_all_layers(c, &r, s5, 1));
    printf(" [kv %s, act %s, shard %d/%d: max error %.3g] ", lam_dtype_name((unsigned)kv_dtype),
           lam_dtype_name((unsigned)act_dtype), shard, shards, r.max_err);
    lam_wire_stats_t st;
    CU_ASSERT(nc_stats(c, &st));
    CU_ASSERT(st.n_seqs == 4 && st.attn_tokens > 0 && st.attn_ns > 0);
    nc_free(c);
    ref_free(&r);
    CU_ASSERT(nc_node_stop(&n) == 0);
}

static void test_numeric_f32(void) { numeric(LAM_DT_F32, LAM_DT_F32, 0, 1, 1e-5f); }
static void test_numeric_shard(void) { numeric(LAM_DT_F32, LAM_DT_F32, 1, 2, 1e-5f); }
/* f16 output rounding: |o| <= 1, so half an f16 ulp is below 5e-4 */
static void test_numeric_f16(void) { numeric(LAM_DT_F16, LAM_DT_F16, 0, 1, 1e-3f); }
static void test_numeric_bf16(void) { numeric(LAM_DT_BF16, LAM_DT_F32, 1, 2, 1e-5f); }

/* Per-sequence statuses on a node with 4 pages of 4 tokens and a context
 * of 14; the connection stays usable throughout. */
static void test_seq_errors(void)
{
    nc_node_t n;
    CU_ASSERT_FATAL(nc_node_start(&n, g_model,
                                  (const char *[]){"--kv-dtype", "f32", "--kv-capacity", "8K", "--page-tokens", "4",
                                                   "--max-ctx", "14", "--max-batch-tokens", "64", NULL}));
    nc_conn_t *c = connect_auth(n.port, LAM_DT_F32, LAM_DT_F32, 0, 1);
    CU_ASSERT_FATAL(c != NULL);
    ref_t r;
    ref_init(&r, 1, LAM_DT_F32, LAM_DT_F32, 1e-5f);
    int16_t st[8];
    lam_wire_stats_t ss;
    CU_ASSERT(nc_stats(c, &ss));
    CU_ASSERT(ss.pages_total == 4);

    /* A takes 3 pages, B wants 2 of the 1 left, C takes the last, D skips
     * ahead, E is longer than the context */
    chunk_t m1[] = {{1, 0, 12}, {2, 0, 8}, {3, 0, 1}, {4, 3, 1}, {5, 0, 15}};
    for (int l = 0; l < NC_LAYERS; l++) {
        CU_ASSERT_FATAL(exchange(c, &r, l, m1, 5, st));
        CU_ASSERT(st[0] == 0 && st[1] == LAM_ERR_KV_FULL && st[2] == 0 && st[3] == LAM_ERR_SEQ_POS &&
                  st[4] == LAM_ERR_CTX_FULL);
    }
    CU_ASSERT(nc_stats(c, &ss));
    CU_ASSERT(ss.pages_used == 4 && ss.n_seqs == 5);
    /* A needs a 4th page: none left */
    chunk_t m2[] = {{1, 12, 1}, {3, 1, 1}};
    CU_ASSERT(exchange(c, &r, 0, m2, 2, st));
    CU_ASSERT(st[0] == LAM_ERR_KV_FULL && st[1] == 0);

    /* release A, C and an id never seen */
    uint8_t buf[256];
    uint64_t ids[] = {1, 3, 999};
    CU_ASSERT(nc_send(c, buf, lam_wire_put_release(buf, 3, ids, 3)));
    ref_forget(&r, 1);
    ref_forget(&r, 3);
    CU_ASSERT(nc_stats(c, &ss));
    CU_ASSERT(ss.pages_used == 0 && ss.n_seqs == 3);
    /* B stays poisoned although pages are free now; F fills the whole context */
    chunk_t m3[] = {{2, 0, 1}, {6, 0, 14}, {4, 0, 1}};
    CU_ASSERT(exchange(c, &r, 0, m3, 3, st));
    CU_ASSERT(st[0] == LAM_ERR_KV_FULL && st[1] == 0 && st[2] == LAM_ERR_SEQ_POS);
    CU_ASSERT(nc_stats(c, &ss));
    CU_ASSERT(ss.pages_used == 4);
    uint64_t ids2[] = {2, 4, 5, 6};
    CU_ASSERT(nc_send(c, buf, lam_wire_put_release(buf, 4, ids2, 4)));
    for (int i = 0; i < 4; i++)
        ref_forget(&r, ids2[i]);
    CU_ASSERT(nc_stats(c, &ss));
    CU_ASSERT(ss.pages_used == 0 && ss.n_seqs == 0);
    /* B's id is a fresh sequence now */
    chunk_t m4[] = {{2, 0, 4}};
    CU_ASSERT(step_all_layers(c, &r, m4, 1));
    CU_ASSERT(nc_stats(c, &ss));
    CU_ASSERT(ss.pages_used == 1 && ss.n_seqs == 1 && ss.bad_msgs == 0);

    /* closing the connection releases its sequences; the same ids on
     * another connection are other sequences */
    nc_conn_t *c2 = connect_auth(n.port, LAM_DT_F32, LAM_DT_F32, 0, 1);
    CU_ASSERT_FATAL(c2 != NULL);
    ref_t r2;
    ref_init(&r2, 1, LAM_DT_F32, LAM_DT_F32, 1e-5f);
    chunk_t m5[] = {{2, 0, 8}};
    CU_ASSERT(step_all_layers(c2, &r2, m5, 1));
    CU_ASSERT(nc_stats(c2, &ss));
    CU_ASSERT(ss.pages_used == 3 && ss.n_seqs == 2);
    nc_free(c);
    bool back = false;
    for (int i = 0; i < 100 && !back; i++) {
        CU_ASSERT_FATAL(nc_stats(c2, &ss));
        back = ss.pages_used == 2 && ss.n_seqs == 1;
        if (!back)
            usleep(20000);
    }
    CU_ASSERT(back);
    nc_free(c2);
    ref_free(&r);
    ref_free(&r2);
    CU_ASSERT(nc_node_stop(&n) == 0);
}

/* The real model, when present: configuration and fingerprint from its file. */
static void test_real_model(void)
{
    char path[4096];
    bool skip;
    if (!fx_model_path(path, sizeof path, &skip)) {
        CU_ASSERT(skip);
        return;
    }
    uint64_t fp = nc_fingerprint(path);
    nc_node_t n;
    CU_ASSERT_FATAL(nc_node_start(&n, path, (const char *[]){"--kv-capacity", "16M", "--shard", "2/3", NULL}));
    nc_conn_t *c = nc_connect(n.port);
    CU_ASSERT_FATAL(c != NULL);
    lam_wire_hello_t h = nc_hello_default(fp, 2, 3, LAM_DT_F16, LAM_DT_F16);
    lam_wire_challenge_t ch;
    CU_ASSERT(nc_handshake(c, &h, NC_TOKEN, &ch));
    CU_ASSERT(ch.n_layers == 30 && ch.n_heads == 9 && ch.n_kv_heads == 3 && ch.head_dim == 64);
    CU_ASSERT(ch.kv_head_begin == 2 && ch.kv_head_end == 3 && ch.model_fingerprint == fp);
    nc_free(c);
    CU_ASSERT(nc_node_stop(&n) == 0);
}

int main(void)
{
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    printf("attention node test seed %u\n", seed);
    if (!nc_init())
        return 1;
    lam_log_set_level(LAM_LOG_WARN);
    g_model = nc_tiny_model();
    g_fp = g_model ? nc_fingerprint(g_model) : 0;
    if (!g_model || !g_fp) {
        printf("cannot build the test model\n");
        return 1;
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("attn_node_server", NULL, NULL);
    CU_add_test(s, "handshake", test_handshake);
    CU_add_test(s, "handshake_refusals", test_handshake_refusals);
    CU_add_test(s, "bad_attn_messages", test_bad_attn);
    CU_add_test(s, "numeric_f32", test_numeric_f32);
    CU_add_test(s, "numeric_shard_1_of_2", test_numeric_shard);
    CU_add_test(s, "numeric_f16", test_numeric_f16);
    CU_add_test(s, "numeric_bf16_kv", test_numeric_bf16);
    CU_add_test(s, "sequence_errors_and_release", test_seq_errors);
    CU_add_test(s, "real_model", test_real_model);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    nc_shutdown();
    unlink(g_model);
    return fails ? 1 : 0;
}
