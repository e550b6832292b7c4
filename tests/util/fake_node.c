/* The fake attention node of fake_node.h. Every callback runs on the fake's
 * own thread (from lam_net_progress) and holds f->mu, which also guards
 * what the test thread arms and reads. */
#include "tests/util/fake_node.h"

#include "common/dtype.h"
#include "common/log.h"
#include "proto/auth.h"
#include "proto/net.h"
#include "proto/wire.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define Q_PER (FN_HEADS / FN_SHARDS)      /* query heads per shard */
#define KV_PER (FN_KV_HEADS / FN_SHARDS)  /* KV heads per shard */
#define QROW (Q_PER * FN_HEAD_DIM)        /* one token's q or o on a shard */
#define KVROW (KV_PER * FN_HEAD_DIM)
#define CONN_SEQS 16                      /* sequences one connection holds */
#define FAKE_MAX_MSG (128 * 1024)
#define OVERSIZE_MSG (64 * 1024)          /* far above what the compute side takes */

typedef struct fseq {
    uint64_t id;
    int len[FN_LAYERS];
    float k[FN_LAYERS][FN_MAX_CTX][KVROW], v[FN_LAYERS][FN_MAX_CTX][KVROW];
} fseq_t;

enum { FC_HELLO, FC_CHALLENGED, FC_AUTHED };

typedef struct fconn {
    lam_conn_t *c;
    int shard;                        /* from HELLO; -1 before */
    int state;
    uint8_t nonce_c[LAM_WIRE_NONCE], nonce_a[LAM_WIRE_NONCE];
    int hs_bad;                       /* fn_hs_bad_t done on this connection, -1 none */
    bool hs_auth_ok;
    bool attn_bad;                    /* an ATTN misbehaviour was done here */
    fseq_t *seqs;                     /* [CONN_SEQS] */
    int n_seqs;
    struct fconn *next;
} fconn_t;

struct fn_node {
    char token[512];
    lam_net_t *net;
    int port;
    pthread_t thr;
    bool thr_started;
    atomic_bool stop;
    pthread_mutex_t mu;               /* everything below */
    pthread_cond_t cv;
    fconn_t *conns;
    int attn_arm;                     /* fn_attn_bad_t for the next ATTN on FN_BAD_SHARD, -1 none */
    bool hold_arm;                    /* hold the other shard's next answer */
    int hs_arm;                       /* fn_hs_bad_t for the next HELLO on FN_BAD_SHARD, -1 none */
    bool hs_auth_ok, kick;
    bool fired;                       /* the armed misbehaviour happened */
    uint8_t *held;                    /* the other shard's answer, sent once the bad connection is gone */
    size_t held_len;
    fconn_t *held_on;
    bool bad_gone;                    /* the connection that misbehaved last is closed */
    fn_counts_t n;
    float o[FN_MAX_TOK * 2 * QROW + QROW]; /* answer scratch, room for the bad shapes */
};

/* ---- reference ------------------------------------------------------------------------ */

void fn_ref_attn(int n_q, int n_kv, int pos, int n_tok, const float *q, size_t q_stride, const float *k,
                 const float *v, size_t kv_stride, float *o, size_t o_stride)
{
    const int group = n_q / n_kv;
    const float scale = 1.0f / sqrtf((float)FN_HEAD_DIM);
    float w[FN_MAX_CTX];
    for (int t = 0; t < n_tok; t++) {
        int last = pos + t;
        for (int h = 0; h < n_q; h++) {
            const float *qh = q + (size_t)t * q_stride + (size_t)h * FN_HEAD_DIM;
            size_t kvo = (size_t)(h / group) * FN_HEAD_DIM;
            float mx = -INFINITY, sum = 0.0f;
            for (int j = 0; j <= last; j++) {
                float s = 0.0f;
                for (int d = 0; d < FN_HEAD_DIM; d++)
                    s += qh[d] * k[(size_t)j * kv_stride + kvo + d];
                w[j] = s * scale;
                mx = w[j] > mx ? w[j] : mx;
            }
            for (int j = 0; j <= last; j++) {
                w[j] = expf(w[j] - mx);
                sum += w[j];
            }
            float *oh = o + (size_t)t * o_stride + (size_t)h * FN_HEAD_DIM;
            for (int d = 0; d < FN_HEAD_DIM; d++) {
                float acc = 0.0f;
                for (int j = 0; j <= last; j++)
                    acc += w[j] * v[(size_t)j * kv_stride + kvo + d];
                oh[d] = acc / sum;
            }
        }
    }
}

/* ---- helpers ---------------------------------------------------------------------------- */

static void fake_error(fn_node_t *f, const char *what)
{
    if (f->n.errors++ == 0)
        snprintf(f->n.first_error, sizeof f->n.first_error, "%s", what);
}

static void sent_free(void *arg, lam_status_t st)
{
    (void)st;
    free(arg);
}

/* Sends a malloc'd message and frees it when the send is over. */
static void fsend(fconn_t *k, uint8_t *buf, size_t len)
{
    if (lam_net_send(k->c, buf, len, sent_free, buf) != LAM_OK)
        free(buf);
}

static uint8_t *copy_msg(const uint8_t *b, size_t len)
{
    uint8_t *c = malloc(len);
    memcpy(c, b, len);
    return c;
}

static void put_u16(uint8_t *b, size_t off, uint16_t v) { memcpy(b + off, &v, 2); }

static void add_u32(uint8_t *b, size_t off, int32_t d)
{
    uint32_t v;
    memcpy(&v, b + off, 4);
    v += (uint32_t)d;
    memcpy(b + off, &v, 4);
}

static fseq_t *fseq_get(fconn_t *k, uint64_t id)
{
    for (int i = 0; i < k->n_seqs; i++)
        if (k->seqs[i].id == id)
            return &k->seqs[i];
    if (k->n_seqs == CONN_SEQS)
        return NULL;
    fseq_t *s = &k->seqs[k->n_seqs++];
    memset(s, 0, sizeof *s);
    s->id = id;
    return s;
}

static void fseq_drop(fconn_t *k, uint64_t id)
{
    for (int i = 0; i < k->n_seqs; i++)
        if (k->seqs[i].id == id) {
            k->seqs[i] = k->seqs[--k->n_seqs];
            return;
        }
}

/* ---- ATTN -------------------------------------------------------------------------------- */

/* ATTN_RESULT from its parts: o is f32 [h->n_tok][h->n_q_heads * h->head_dim],
 * stored as h->dtype; `extra` zero bytes of room after it. */
static uint8_t *encode_result(uint32_t tag, const lam_wire_attn_t *h, const lam_wire_seq_t *seq, const float *o,
                              size_t extra, size_t *len)
{
    lam_wire_attn_layout_t L = lam_wire_attn_layout(h, 1);
    uint8_t *b = calloc(1, L.total + extra);
    lam_wire_put_attn(b, tag, 1, h, seq);
    size_t n = (size_t)h->n_tok * h->n_q_heads * h->head_dim, es = lam_dtype_size(h->dtype);
    for (size_t i = 0; i < n; i++)
        lam_dtype_store(b + L.o + i * es, h->dtype, o[i]);
    *len = L.total;
    return b;
}

/* The right answer's parts: appends k/v to the connection's sequences and
 * computes o [n_tok][QROW]; seq gets the per-sequence statuses. */
static void compute_answer(fn_node_t *f, fconn_t *k, const lam_msg_t *m, lam_wire_seq_t *seq, float *o)
{
    const lam_wire_attn_t *h = &m->u.attn.h;
    float q[FN_MAX_TOK * QROW];
    uint32_t row = 0;
    for (int i = 0; i < h->n_seq; i++) {
        memcpy(&seq[i], &m->u.attn.seq[i], sizeof seq[i]);
        int pos = (int)seq[i].pos, n = seq[i].n_tok;
        fseq_t *s = fseq_get(k, seq[i].seq_id);
        lam_status_t st = !s ? LAM_ERR_KV_FULL
                          : pos != s->len[h->layer] ? LAM_ERR_SEQ_POS
                          : pos + n > FN_MAX_CTX ? LAM_ERR_CTX_FULL : LAM_OK;
        if (st == LAM_OK) {
            for (int t = 0; t < n; t++)
                for (size_t e = 0; e < KVROW; e++) {
                    size_t src = ((row + (size_t)t) * KVROW + e) * 4;
                    s->k[h->layer][pos + t][e] = lam_dtype_load(m->u.attn.k + src, LAM_DT_F32);
                    s->v[h->layer][pos + t][e] = lam_dtype_load(m->u.attn.v + src, LAM_DT_F32);
                }
            for (size_t e = 0; e < (size_t)n * QROW; e++)
                q[e] = lam_dtype_load(m->u.attn.q + (row * QROW + e) * 4, LAM_DT_F32);
            s->len[h->layer] = pos + n;
            fn_ref_attn(Q_PER, KV_PER, pos, n, q, QROW, &s->k[h->layer][0][0], &s->v[h->layer][0][0], KVROW,
                        o + row * QROW, QROW);
        } else {
            memset(o + row * QROW, 0, (size_t)n * QROW * sizeof *o);
            fake_error(f, "a chunk the fake node could not append (its limits, or the positions sent)");
        }
        seq[i].status = (int16_t)st;
        row += (uint32_t)n;
    }
}

/* FN_BAD_SHARD's answer to the armed ATTN. */
static void misbehave(fn_node_t *f, fconn_t *k, const lam_msg_t *m, fn_attn_bad_t how)
{
    lam_wire_attn_t h = m->u.attn.h;
    lam_wire_seq_t seq[FN_MAX_SEQS + 1];
    float *o = f->o;
    memset(f->o, 0, sizeof f->o);
    compute_answer(f, k, m, seq, o);
    uint32_t tag = m->tag;
    size_t extra = 0, len = 0;
    k->attn_bad = how != FN_OK_NAN_INF && how != FN_OK_SEQ_KV_FULL; /* those keep the connection */
    /* what the message says */
    switch (how) {
    case FN_BAD_TAG_FUTURE: tag += 1000; break;
    case FN_BAD_TAG_ZERO: tag = 0; break;
    case FN_BAD_STEP: h.step++; break;
    case FN_BAD_LAYER: h.layer ^= 1; break;
    case FN_BAD_MB: h.mb ^= 1; break;
    case FN_BAD_MB_UNSUBMITTED: h.mb ^= 1, tag++; break;
    case FN_BAD_SEQ_FEWER: h.n_tok -= seq[--h.n_seq].n_tok; break;
    case FN_BAD_SEQ_MORE:
        seq[h.n_seq] = (lam_wire_seq_t){.seq_id = 0x5eed0001ull, .pos = 0, .n_tok = 1};
        h.n_seq++, h.n_tok++;
        break;
    case FN_BAD_SEQ_UNKNOWN: seq[1].seq_id = 0x5eed0002ull; break;
    case FN_BAD_SEQ_ORDER: {
        lam_wire_seq_t t = seq[0];
        seq[0] = seq[1];
        seq[1] = t;
        break;
    }
    case FN_BAD_SEQ_POS: seq[0].pos++; break;
    case FN_BAD_SEQ_SPLIT: seq[0].n_tok--, seq[1].n_tok++; break;
    case FN_BAD_DTYPE_F16: h.dtype = LAM_DT_F16; break;
    case FN_BAD_O_LONG: extra = 4; break;
    case FN_BAD_Q_HEADS: h.n_q_heads *= 2; break;
    case FN_BAD_KV_HEADS: h.n_kv_heads *= 2; break;
    case FN_BAD_HEAD_DIM: h.head_dim /= 2; break;
    case FN_BAD_STATUS_POSITIVE: seq[0].status = 1; break;
    case FN_BAD_STATUS_BELOW: seq[0].status = -1000; break;
    case FN_BAD_STATUS_NOT_SEQ: seq[0].status = LAM_ERR_PROTO; break;
    case FN_OK_NAN_INF:
        o[0] = NAN;
        o[QROW + 3] = INFINITY;
        o[(size_t)h.n_tok * QROW - 1] = -INFINITY;
        break;
    case FN_OK_SEQ_KV_FULL:
        seq[1].status = LAM_ERR_KV_FULL;
        memset(o + (size_t)seq[0].n_tok * QROW, 0, (size_t)seq[1].n_tok * QROW * sizeof *o);
        break;
    default: break;
    }
    uint8_t *b = encode_result(tag, &h, seq, o, extra, &len);
    /* its bytes */
    switch (how) {
    case FN_BAD_CUT: len--; break;
    case FN_BAD_HEADER_ONLY: len = 8; break;
    case FN_BAD_MAGIC: b[0] ^= 0xff; break;
    case FN_BAD_VERSION: put_u16(b, offsetof(lam_wire_hdr_t, version), LAM_WIRE_VERSION + 1); break;
    case FN_BAD_TYPE_REQUEST: put_u16(b, offsetof(lam_wire_hdr_t, type), LAM_MSG_ATTN); break;
    case FN_BAD_TYPE_UNKNOWN: put_u16(b, offsetof(lam_wire_hdr_t, type), 99); break;
    case FN_BAD_DTYPE_UNKNOWN: b[sizeof(lam_wire_hdr_t) + offsetof(lam_wire_attn_t, dtype)] = 9; break;
    case FN_BAD_O_SHORT:
        len -= 4;
        add_u32(b, offsetof(lam_wire_hdr_t, len), -4);
        break;
    case FN_BAD_O_LONG:
        len += 4;
        add_u32(b, offsetof(lam_wire_hdr_t, len), 4);
        break;
    default: break;
    }
    /* what goes out */
    switch (how) {
    case FN_BAD_HELLO_OK:
        fsend(k, b, lam_wire_put_ok(b, m->tag));
        break;
    case FN_BAD_DUPLICATE:
        fsend(k, copy_msg(b, len), len);
        fsend(k, b, len);
        break;
    case FN_BAD_EXTRA_RESULT:
        fsend(k, b, len);
        h.mb ^= 1;
        b = encode_result(m->tag + 1, &h, seq, o, 0, &len);
        fsend(k, b, len);
        break;
    case FN_BAD_OVERSIZE:
        free(b);
        b = calloc(1, OVERSIZE_MSG);
        lam_wire_put_hdr(b, LAM_MSG_ATTN_RESULT, (uint32_t)(OVERSIZE_MSG - sizeof(lam_wire_hdr_t)), m->tag);
        fsend(k, b, OVERSIZE_MSG);
        break;
    case FN_BAD_ERROR_OPEN:
    case FN_BAD_ERROR_CLOSE:
        free(b);
        b = malloc(lam_wire_error_size(64));
        fsend(k, b, lam_wire_put_error(b, m->tag, LAM_ERR_KV_FULL, "refusing this connection\n\x1b[2J"));
        if (how == FN_BAD_ERROR_CLOSE)
            lam_net_close(k->c, LAM_ERR_KV_FULL);
        break;
    case FN_BAD_CLOSE:
        free(b);
        lam_net_close(k->c, LAM_ERR_CONN_CLOSED);
        break;
    case FN_BAD_SILENT: free(b); break;
    default: fsend(k, b, len); break;
    }
}

static void on_attn(fn_node_t *f, fconn_t *k, const lam_msg_t *m)
{
    const lam_wire_attn_t *h = &m->u.attn.h;
    if (h->layer >= FN_LAYERS || h->n_q_heads != Q_PER || h->n_kv_heads != KV_PER || h->head_dim != FN_HEAD_DIM ||
        h->dtype != LAM_DT_F32 || h->n_seq > FN_MAX_SEQS || h->n_tok > FN_MAX_TOK) {
        fake_error(f, "ATTN with a shape the compute side should not send");
        lam_net_close(k->c, LAM_ERR_PROTO);
        return;
    }
    if (k->shard == FN_BAD_SHARD && f->attn_arm >= 0) {
        fn_attn_bad_t how = (fn_attn_bad_t)f->attn_arm;
        f->attn_arm = -1;
        f->fired = true;
        misbehave(f, k, m, how);
        return;
    }
    lam_wire_seq_t seq[FN_MAX_SEQS];
    compute_answer(f, k, m, seq, f->o);
    size_t len;
    lam_wire_attn_t rh = *h;
    rh.node_ns = FN_NODE_NS(k->shard, h->layer);
    uint8_t *b = encode_result(m->tag, &rh, seq, f->o, 0, &len);
    if (k->shard != FN_BAD_SHARD && f->hold_arm) {
        f->hold_arm = false;
        if (!f->bad_gone) {
            f->held = b;
            f->held_len = len;
            f->held_on = k;
            return;
        }
    }
    fsend(k, b, len);
}

/* ---- handshake ----------------------------------------------------------------------------- */

static uint8_t *make_challenge(fn_node_t *f, fconn_t *k, uint32_t tag, int bad, size_t *len)
{
    int s = k->shard;
    lam_wire_challenge_t c = {
        .caps = LAM_CAP_PREFILL_CHUNKS | LAM_CAP_STATS,
        .max_msg = FAKE_MAX_MSG,
        .model_fingerprint = FN_FINGERPRINT,
        .shard_index = (uint16_t)s,
        .shard_count = FN_SHARDS,
        .kv_head_begin = (uint16_t)(s * KV_PER),
        .kv_head_end = (uint16_t)((s + 1) * KV_PER),
        .n_layers = FN_LAYERS,
        .n_heads = FN_HEADS,
        .n_kv_heads = FN_KV_HEADS,
        .head_dim = FN_HEAD_DIM,
        .max_ctx = FN_MAX_CTX,
        .page_tokens = 16,
        .pages_total = 64,
        .kv_dtype = LAM_DT_F32,
    };
    lam_auth_nonce(k->nonce_a);
    memcpy(c.nonce, k->nonce_a, LAM_WIRE_NONCE);
    const char *token = f->token;
    switch (bad) {
    case FN_HS_MAC: token = "another-cluster-token-0123456789"; break;
    case FN_HS_FINGERPRINT: c.model_fingerprint ^= 1; break;
    case FN_HS_SHARD: c.shard_index = (uint16_t)(1 - s); break;
    case FN_HS_KV_RANGE: c.kv_head_begin = 0, c.kv_head_end = FN_KV_HEADS; break;
    case FN_HS_LAYERS: c.n_layers = FN_LAYERS + 1; break;
    case FN_HS_HEAD_DIM: c.head_dim = FN_HEAD_DIM * 2; break;
    case FN_HS_KV_DTYPE: c.kv_dtype = LAM_DT_F16; break;
    case FN_HS_MAX_MSG: c.max_msg = 256; break;
    default: break;
    }
    lam_auth_mac(c.mac, token, "lamina-a", k->nonce_c, k->nonce_a);
    uint8_t *b = malloc(sizeof(lam_wire_hdr_t) + sizeof c);
    *len = lam_wire_put_challenge(b, tag, &c) - (bad == FN_HS_TRUNCATED);
    return b;
}

static void on_hello(fn_node_t *f, fconn_t *k, const lam_msg_t *m)
{
    const lam_wire_hello_t *h = &m->u.hello;
    if (k->state != FC_HELLO || h->model_fingerprint != FN_FINGERPRINT || h->shard_count != FN_SHARDS ||
        h->shard_index >= FN_SHARDS || h->kv_dtype != LAM_DT_F32 || h->act_dtype != LAM_DT_F32) {
        fake_error(f, "HELLO that does not match the synthetic model");
        lam_net_close(k->c, LAM_ERR_MODEL_MISMATCH);
        return;
    }
    k->shard = h->shard_index;
    memcpy(k->nonce_c, h->nonce, LAM_WIRE_NONCE);
    if (k->shard == FN_BAD_SHARD && f->hs_arm >= 0) {
        k->hs_bad = f->hs_arm;
        k->hs_auth_ok = f->hs_auth_ok;
        f->hs_arm = -1;
        f->fired = true;
    }
    size_t len;
    uint8_t *b;
    switch (k->hs_bad) {
    case FN_HS_OK_FIRST:
        b = malloc(sizeof(lam_wire_hdr_t));
        fsend(k, b, lam_wire_put_ok(b, m->tag));
        return;
    case FN_HS_RESULT_FIRST: {
        lam_wire_attn_t ah = {.n_seq = 1, .n_q_heads = Q_PER, .n_kv_heads = KV_PER, .head_dim = FN_HEAD_DIM,
                              .n_tok = 1};
        lam_wire_seq_t sq = {.seq_id = 7, .n_tok = 1};
        float o[QROW] = {0};
        b = encode_result(m->tag, &ah, &sq, o, 0, &len);
        fsend(k, b, len);
        return;
    }
    case FN_HS_STATS_FIRST: {
        lam_wire_stats_t st = {.pages_total = 64};
        b = malloc(sizeof(lam_wire_hdr_t) + sizeof st);
        fsend(k, b, lam_wire_put_stats(b, m->tag, &st));
        break; /* and the challenge */
    }
    case FN_HS_ERROR:
        b = malloc(lam_wire_error_size(64));
        fsend(k, b, lam_wire_put_error(b, m->tag, LAM_ERR_MODEL_MISMATCH, "this node serves another model"));
        return;
    case FN_HS_SILENT: return;
    default: break;
    }
    b = make_challenge(f, k, m->tag, k->hs_bad, &len);
    fsend(k, b, len);
    k->state = FC_CHALLENGED;
}

static void on_auth(fn_node_t *f, fconn_t *k, const lam_msg_t *m)
{
    if (k->hs_bad >= 0 && !k->hs_auth_ok)
        f->n.bad_auth++;
    uint8_t want[LAM_WIRE_MAC];
    lam_auth_mac(want, f->token, "lamina-c", k->nonce_a, k->nonce_c);
    if (k->state != FC_CHALLENGED || !lam_auth_equal(want, m->u.auth.mac)) {
        if (k->hs_bad < 0)
            fake_error(f, "HELLO_AUTH out of order or with a wrong proof");
        lam_net_close(k->c, LAM_ERR_AUTH);
        return;
    }
    size_t len;
    uint8_t *b;
    if (k->hs_bad == FN_HS_CHALLENGE_TWICE) {
        b = make_challenge(f, k, m->tag, -1, &len);
        fsend(k, b, len);
        return;
    }
    b = malloc(sizeof(lam_wire_hdr_t));
    fsend(k, b, lam_wire_put_ok(b, m->tag));
    k->state = FC_AUTHED;
    f->n.authed[k->shard]++;
}

/* ---- transport callbacks ---------------------------------------------------------------------- */

static void fake_on_accept(void *ud, lam_conn_t *c)
{
    fn_node_t *f = ud;
    fconn_t *k = calloc(1, sizeof *k);
    k->seqs = calloc(CONN_SEQS, sizeof *k->seqs);
    k->c = c;
    k->shard = -1;
    k->hs_bad = -1;
    lam_conn_set_ud(c, k);
    pthread_mutex_lock(&f->mu);
    k->next = f->conns;
    f->conns = k;
    pthread_mutex_unlock(&f->mu);
}

static void fake_on_msg(void *ud, lam_conn_t *c, const void *buf, size_t len)
{
    fn_node_t *f = ud;
    fconn_t *k = lam_conn_ud(c);
    lam_msg_t m;
    pthread_mutex_lock(&f->mu);
    if (lam_wire_decode(buf, len, &m, NULL, 0) != LAM_OK) {
        fake_error(f, "undecodable message from the compute side");
        lam_net_close(c, LAM_ERR_PROTO);
    } else if (m.type == LAM_MSG_HELLO) {
        on_hello(f, k, &m);
    } else if (m.type == LAM_MSG_HELLO_AUTH) {
        on_auth(f, k, &m);
    } else if (k->state != FC_AUTHED) {
        fake_error(f, "a message before authentication");
        lam_net_close(c, LAM_ERR_AUTH);
    } else if (m.type == LAM_MSG_ATTN) {
        on_attn(f, k, &m);
    } else if (m.type == LAM_MSG_SEQ_RELEASE) {
        for (uint32_t i = 0; i < m.u.release.n_seq; i++) {
            uint64_t id;
            memcpy(&id, m.u.release.ids + 8 * (size_t)i, sizeof id);
            fseq_drop(k, id);
        }
    } else if (m.type == LAM_MSG_STATS) {
        lam_wire_stats_t st = {.pages_total = 64, .n_seqs = (uint64_t)k->n_seqs};
        uint8_t *b = malloc(sizeof(lam_wire_hdr_t) + sizeof st);
        fsend(k, b, lam_wire_put_stats(b, m.tag, &st));
    } else {
        fake_error(f, "a message type a compute node does not send");
        lam_net_close(c, LAM_ERR_PROTO);
    }
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void fake_on_close(void *ud, lam_conn_t *c, lam_status_t why)
{
    fn_node_t *f = ud;
    fconn_t *k = lam_conn_ud(c);
    (void)why;
    if (!k)
        return;
    pthread_mutex_lock(&f->mu);
    if (k->shard >= 0)
        f->n.closed[k->shard]++;
    if (k->attn_bad || k->hs_bad >= 0) {
        f->n.bad_closed++;
        f->bad_gone = true;
        if (f->held && f->held_on != k) {
            fsend(f->held_on, f->held, f->held_len); /* stale by now: the compute side must ignore it */
            f->held = NULL;
        }
    }
    if (f->held && f->held_on == k) {
        free(f->held);
        f->held = NULL;
    }
    for (fconn_t **pp = &f->conns; *pp; pp = &(*pp)->next)
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    free(k->seqs);
    free(k);
}

static void *fake_main(void *arg)
{
    fn_node_t *f = arg;
    while (!atomic_load(&f->stop)) {
        pthread_mutex_lock(&f->mu);
        if (f->kick) {
            f->kick = false;
            for (fconn_t *k = f->conns; k; k = k->next)
                if (k->shard == FN_BAD_SHARD && k->state == FC_AUTHED)
                    lam_net_close(k->c, LAM_ERR_CONN_CLOSED);
        }
        pthread_mutex_unlock(&f->mu);
        if (lam_net_progress(f->net) == 0)
            lam_net_wait(f->net, 5);
    }
    return NULL;
}

/* ---- API ----------------------------------------------------------------------------------------- */

int fn_start(const char *token, fn_node_t **out)
{
    fn_node_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->token, sizeof f->token, "%s", token);
    f->attn_arm = f->hs_arm = -1;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    lam_net_opts_t no = {.max_msg = FAKE_MAX_MSG, .n_recv_bufs = 16};
    lam_net_cbs_t cbs = {.on_accept = fake_on_accept, .on_msg = fake_on_msg, .on_close = fake_on_close, .ud = f};
    if (lam_net_create(&no, &cbs, &f->net) != LAM_OK ||
        lam_net_listen(f->net, "127.0.0.1", 0, &f->port) != LAM_OK ||
        pthread_create(&f->thr, NULL, fake_main, f) != 0) {
        fn_stop(f);
        return -1;
    }
    f->thr_started = true;
    *out = f;
    return 0;
}

void fn_stop(fn_node_t *f)
{
    if (!f)
        return;
    if (f->thr_started) {
        atomic_store(&f->stop, true);
        pthread_join(f->thr, NULL);
    }
    lam_net_destroy(f->net); /* on_close for every connection frees it */
    free(f->held);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

int fn_port(const fn_node_t *f) { return f->port; }

void fn_arm_attn(fn_node_t *f, fn_attn_bad_t how, bool hold)
{
    pthread_mutex_lock(&f->mu);
    f->attn_arm = (int)how;
    f->hold_arm = hold;
    f->bad_gone = false;
    f->fired = false;
    pthread_mutex_unlock(&f->mu);
}

void fn_arm_hello(fn_node_t *f, fn_hs_bad_t how, bool auth_ok, bool kick)
{
    pthread_mutex_lock(&f->mu);
    f->hs_arm = (int)how;
    f->hs_auth_ok = auth_ok;
    f->kick = kick;
    f->fired = false;
    pthread_mutex_unlock(&f->mu);
}

bool fn_disarm(fn_node_t *f)
{
    pthread_mutex_lock(&f->mu);
    bool fired = f->fired;
    f->attn_arm = f->hs_arm = -1;
    f->hold_arm = false;
    pthread_mutex_unlock(&f->mu);
    return fired;
}

void fn_counts(fn_node_t *f, fn_counts_t *out)
{
    pthread_mutex_lock(&f->mu);
    *out = f->n;
    out->seqs = 0;
    for (fconn_t *k = f->conns; k; k = k->next)
        out->seqs += k->n_seqs;
    pthread_mutex_unlock(&f->mu);
}

int fn_wait_bad_closed(fn_node_t *f, int want, double cap_s)
{
    double end = lam_now_s() + cap_s;
    pthread_mutex_lock(&f->mu);
    while (f->n.bad_closed < want && lam_now_s() < end) {
        struct timespec ts;
        lam_deadline_ts(&ts, 20);
        pthread_cond_timedwait(&f->cv, &f->mu, &ts);
    }
    int v = f->n.bad_closed;
    pthread_mutex_unlock(&f->mu);
    return v;
}
