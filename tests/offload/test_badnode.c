/* The compute node's client of attention nodes (compute_node/remote.c)
 * against a misbehaving attention node.
 *
 * tests/util/fake_node.h plays both shards of a small synthetic model on
 * one loopback UCX listener, with the real handshake and correct causal
 * attention over the q/k/v it receives. One lam_remote_t stays connected to
 * it through the suite.
 *
 * Per row of a table, shard 1 answers one ATTN wrongly (truncated, bad
 * magic or version, wrong type, tag, step, layer, micro-batch, sequences,
 * dtype, shape, o size, status; a duplicate; an ERROR; a close; silence).
 * lam_remote_wait must fail with LAM_ERR_CONN_CLOSED (remote.h: a node
 * whose connection drops — the compute side drops a node that breaks the
 * protocol) or, for silence, LAM_ERR_TIMEOUT; exactly that node is lost
 * (the epoch moves by one; shard 0 stays connected, and its answer, held
 * back until shard 1's connection is gone, arrives stale and is ignored);
 * the compute side reconnects, and the next exchanges — two micro-batches
 * in flight, prefill chunks then decode tokens on every layer — give the
 * reference output.
 *
 * Not failures: NaN and Inf in o are delivered as values (they are the
 * attention of what was sent — f16 overflow, a diverging model — and belong
 * to the sequences, not to the connection: dropping the node would lose
 * every sequence's KV over one value), and a per-sequence error (KV full)
 * reaches seq_status while the node stays.
 *
 * A second table breaks the handshake replies (a proof made with another
 * token, another model, shard, head range, shape or KV dtype, a max_msg too
 * small, truncated, replies out of order, ERROR, a second challenge,
 * silence): the compute side never counts that connection as up, sends no
 * HELLO_AUTH after a challenge it must refuse, and gets in on the next try. */
#include "common/log.h"
#include "compute_node/remote.h"
#include "proto/auth.h"
#include "tests/util/fake_node.h"
#include "tests/util/nodeproc.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TOK FN_MAX_TOK   /* per micro-batch */
#define MAX_SEQS FN_MAX_SEQS
#define Q_DIM FN_Q_DIM
#define KV_DIM FN_KV_DIM
#define BAD_QOFF ((size_t)FN_BAD_SHARD * (FN_HEADS / FN_SHARDS) * FN_HEAD_DIM) /* its columns of o */
#define BAD_QROW ((size_t)(FN_HEADS / FN_SHARDS) * FN_HEAD_DIM)

typedef struct attn_case {
    const char *name;
    fn_attn_bad_t how;
    lam_status_t expect;  /* lam_remote_wait's status */
} attn_case_t;

typedef struct hs_case {
    const char *name;
    fn_hs_bad_t how;
    bool auth_ok;         /* the compute side may answer with HELLO_AUTH */
} hs_case_t;

static char g_token[512];

/* ---- the compute side's view: sequences, micro-batches, the expected output ---------- */

typedef struct tseq {
    uint64_t id;
    float k[FN_LAYERS][FN_MAX_CTX][KV_DIM], v[FN_LAYERS][FN_MAX_CTX][KV_DIM];
} tseq_t;

typedef struct mbatch {
    int n_seq, n_tok;
    lam_remote_seq_t seqs[MAX_SEQS];
    tseq_t *ts[MAX_SEQS];
    float q[MAX_TOK * Q_DIM], k[MAX_TOK * KV_DIM], v[MAX_TOK * KV_DIM];
    float o[MAX_TOK * Q_DIM], want[MAX_TOK * Q_DIM];
    int16_t st[MAX_SEQS];
} mbatch_t;

static uint64_t g_rng = 0x243f6a8885a308d3ull;
static uint64_t g_next_id = 1000;
static uint64_t g_step;

static float frand(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) & 0xffffff) / 8388608.0f - 1.0f; /* [-1, 1) */
}

static tseq_t *tseq_new(void)
{
    tseq_t *s = calloc(1, sizeof *s);
    s->id = g_next_id++;
    return s;
}

static void mb_add(mbatch_t *b, tseq_t *s, int pos, int n_tok)
{
    b->ts[b->n_seq] = s;
    b->seqs[b->n_seq++] = (lam_remote_seq_t){s->id, pos, n_tok};
    b->n_tok += n_tok;
}

/* Fresh q/k/v for the chunks at this layer; the keys and values join the
 * sequences' history and the expected output is computed over it. */
static void mb_fill(mbatch_t *b, int layer)
{
    int row = 0;
    for (int i = 0; i < b->n_seq; i++) {
        tseq_t *s = b->ts[i];
        int pos = b->seqs[i].pos, n = b->seqs[i].n_tok;
        for (int t = 0; t < n; t++) {
            for (int e = 0; e < Q_DIM; e++)
                b->q[(row + t) * Q_DIM + e] = frand();
            for (int e = 0; e < KV_DIM; e++) {
                b->k[(row + t) * KV_DIM + e] = s->k[layer][pos + t][e] = frand();
                b->v[(row + t) * KV_DIM + e] = s->v[layer][pos + t][e] = frand();
            }
        }
        fn_ref_attn(FN_HEADS, FN_KV_HEADS, pos, n, b->q + (size_t)row * Q_DIM, Q_DIM, &s->k[layer][0][0],
                    &s->v[layer][0][0], KV_DIM, b->want + (size_t)row * Q_DIM, Q_DIM);
        row += n;
    }
    for (int i = 0; i < b->n_tok * Q_DIM; i++)
        b->o[i] = NAN; /* every element must be written */
}

static lam_status_t mb_submit(lam_remote_t *r, mbatch_t *b, int mb, int layer)
{
    return lam_remote_submit(r, mb, g_step, layer, b->seqs, b->n_seq, b->n_tok, b->q, b->k, b->v, b->o);
}

static bool close_to(float got, float want) { return fabsf(got - want) <= 1e-5f; }

/* Elements of o that differ from the expected output. */
static int mb_mismatches(const mbatch_t *b)
{
    int bad = 0;
    for (int i = 0; i < b->n_tok * Q_DIM; i++)
        bad += !close_to(b->o[i], b->want[i]);
    return bad;
}

static void release(lam_remote_t *r, tseq_t **s, int n)
{
    uint64_t ids[8];
    for (int i = 0; i < n; i++)
        ids[i] = s[i]->id;
    lam_remote_release(r, ids, n);
}

#define CHECK(cond, label)                                                                                        \
    do {                                                                                                          \
        bool ok_ = (cond);                                                                                        \
        CU_ASSERT(ok_);                                                                                           \
        if (!ok_)                                                                                                 \
            printf("\n  [%s] failed: %s", (label), #cond);                                                        \
    } while (0)

/* Correct exchanges: micro-batches 0 and 1 in flight together, on every
 * layer a prefill chunk per sequence, then one decode token each. */
static void good_round(lam_remote_t *r, const char *label)
{
    static const int chunk[3] = {5, 3, 4};
    tseq_t *s[3] = {tseq_new(), tseq_new(), tseq_new()};
    mbatch_t *b[2] = {calloc(1, sizeof(mbatch_t)), calloc(1, sizeof(mbatch_t))};
    for (int phase = 0; phase < 2; phase++) {
        for (int m = 0; m < 2; m++)
            b[m]->n_seq = b[m]->n_tok = 0;
        for (int i = 0; i < 3; i++) /* sequences 0, 1 in micro-batch 0; 2 in 1 */
            mb_add(b[i == 2], s[i], phase ? chunk[i] : 0, phase ? 1 : chunk[i]);
        g_step++;
        for (int layer = 0; layer < FN_LAYERS; layer++) {
            lam_status_t sub[2];
            for (int m = 0; m < 2; m++) {
                mb_fill(b[m], layer);
                sub[m] = mb_submit(r, b[m], m, layer);
            }
            for (int m = 0; m < 2; m++) {
                lam_status_t st = sub[m] == LAM_OK ? lam_remote_wait(r, m, b[m]->st) : sub[m];
                CHECK(st == LAM_OK, label);
                if (st != LAM_OK) {
                    printf(" (micro-batch %d, layer %d: %s)", m, layer, lam_status_str(st));
                    continue;
                }
                for (int i = 0; i < b[m]->n_seq; i++)
                    CHECK(b[m]->st[i] == 0, label);
                /* the slowest shard's reported time */
                CHECK(lam_remote_node_ns(r, m) == FN_NODE_NS(FN_SHARDS - 1, layer), label);
                int bad = mb_mismatches(b[m]);
                CHECK(bad == 0, label);
                if (bad)
                    printf(" (micro-batch %d, layer %d: %d elements differ)", m, layer, bad);
            }
        }
    }
    release(r, s, 3);
    for (int i = 0; i < 3; i++)
        free(s[i]);
    free(b[0]);
    free(b[1]);
}

/* One exchange (micro-batch 0, layer 1, two prefill chunks) in which shard
 * FN_BAD_SHARD does what bc says; when the exchange must fail, the other
 * shard holds its answer back until the bad connection is gone. Returns
 * lam_remote_wait's status; b keeps o and the statuses. */
static lam_status_t bad_round(lam_remote_t *r, fn_node_t *f, const attn_case_t *bc, mbatch_t *b)
{
    tseq_t *s[2] = {tseq_new(), tseq_new()};
    memset(b, 0, sizeof *b);
    mb_add(b, s[0], 0, 3);
    mb_add(b, s[1], 0, 2);
    mb_fill(b, 1);
    fn_arm_attn(f, bc->how, bc->expect == LAM_ERR_CONN_CLOSED);
    g_step++;
    lam_status_t st = mb_submit(r, b, 0, 1);
    if (st == LAM_OK)
        st = lam_remote_wait(r, 0, b->st);
    /* done with these sequences either way (after a failure they are dead) */
    release(r, s, 2);
    CHECK(fn_disarm(f), bc->name);
    free(s[0]);
    free(s[1]);
    return st;
}

/* One failure row: the wait fails as expected, exactly the bad node is
 * lost, it comes back, and correct exchanges follow. */
static void failure_row(lam_remote_t *r, fn_node_t *f, const attn_case_t *bc)
{
    mbatch_t *b = calloc(1, sizeof *b);
    uint64_t epoch0 = lam_remote_epoch(r);
    lam_remote_node_info_t i0[FN_SHARDS], i1[FN_SHARDS];
    fn_counts_t c0, c1;
    for (int i = 0; i < FN_SHARDS; i++)
        lam_remote_node_info(r, i, &i0[i]);
    fn_counts(f, &c0);

    lam_status_t st = bad_round(r, f, bc, b);
    CHECK(st == bc->expect, bc->name);
    if (st != bc->expect)
        printf(" (got %s, expected %s)", lam_status_str(st), lam_status_str(bc->expect));

    /* the bad connection is closed and the compute side gets back in */
    CHECK(fn_wait_bad_closed(f, c0.bad_closed + 1, 30.0) == c0.bad_closed + 1, bc->name);
    CHECK(lam_remote_wait_ready(r, 15000) == LAM_OK, bc->name);
    CHECK(lam_remote_epoch(r) == epoch0 + 1, bc->name);
    for (int i = 0; i < FN_SHARDS; i++)
        lam_remote_node_info(r, i, &i1[i]);
    fn_counts(f, &c1);
    for (int i = 0; i < FN_SHARDS; i++) {
        int lost = i == FN_BAD_SHARD;
        CHECK(i1[i].losses == i0[i].losses + (uint64_t)lost, bc->name);
        CHECK(c1.authed[i] == c0.authed[i] + lost, bc->name);
    }
    good_round(r, bc->name);
    fn_counts(f, &c1);
    CHECK(c1.errors == 0, bc->name);
    free(b);
}

/* ---- suite state ------------------------------------------------------------------------ */

static fn_node_t *g_fake;
static lam_remote_t *g_r;

static lam_status_t remote_open(fn_node_t *f, int timeout_ms, lam_remote_t **out)
{
    static const lam_model_config_t cfg = {.arch = "llama", .n_layers = FN_LAYERS, .dim = Q_DIM,
                                           .n_heads = FN_HEADS, .n_kv_heads = FN_KV_HEADS,
                                           .head_dim = FN_HEAD_DIM, .ffn_dim = 64, .vocab = 32,
                                           .max_ctx = FN_MAX_CTX, .n_rot = FN_HEAD_DIM, .rope_theta = 10000.0f,
                                           .rope_freq_scale = 1.0f, .norm_eps = 1e-5f};
    lam_remote_addr_t addrs[FN_SHARDS];
    for (int i = 0; i < FN_SHARDS; i++) {
        snprintf(addrs[i].host, sizeof addrs[i].host, "127.0.0.1");
        addrs[i].port = fn_port(f); /* one listener plays every shard: the HELLO says which */
    }
    lam_remote_opts_t ro = {.n_nodes = FN_SHARDS, .addrs = addrs, .token = g_token,
                            .fingerprint = FN_FINGERPRINT, .cfg = &cfg, .kv_dtype = LAM_DT_F32,
                            .act_dtype = LAM_DT_F32, .max_tokens = MAX_TOK, .max_seqs = MAX_SEQS,
                            .timeout_ms = timeout_ms, .reconnect_ms = 50};
    *out = NULL;
    lam_status_t st = lam_remote_create(&ro, out);
    if (st == LAM_OK && (st = lam_remote_wait_ready(*out, 15000)) != LAM_OK) {
        lam_remote_destroy(*out);
        *out = NULL;
    }
    return st;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_baseline(void)
{
    CU_ASSERT_FATAL(g_r != NULL);
    good_round(g_r, "baseline");
    fn_counts_t c;
    fn_counts(g_fake, &c);
    CU_ASSERT_EQUAL(c.errors, 0);
    CU_ASSERT_EQUAL(c.authed[0], 1);
    CU_ASSERT_EQUAL(c.authed[1], 1);
    CU_ASSERT_EQUAL(lam_remote_epoch(g_r), 0);
}

static const attn_case_t g_attn_cases[] = {
    {"truncated: last byte missing", FN_BAD_CUT, LAM_ERR_CONN_CLOSED},
    {"truncated: 8 bytes", FN_BAD_HEADER_ONLY, LAM_ERR_CONN_CLOSED},
    {"bad magic", FN_BAD_MAGIC, LAM_ERR_CONN_CLOSED},
    {"bad version", FN_BAD_VERSION, LAM_ERR_CONN_CLOSED},
    {"type ATTN on a result", FN_BAD_TYPE_REQUEST, LAM_ERR_CONN_CLOSED},
    {"unknown type", FN_BAD_TYPE_UNKNOWN, LAM_ERR_CONN_CLOSED},
    {"HELLO_OK instead of the result", FN_BAD_HELLO_OK, LAM_ERR_CONN_CLOSED},
    {"tag never issued", FN_BAD_TAG_FUTURE, LAM_ERR_CONN_CLOSED},
    {"tag older than the connection", FN_BAD_TAG_ZERO, LAM_ERR_CONN_CLOSED},
    {"wrong step", FN_BAD_STEP, LAM_ERR_CONN_CLOSED},
    {"wrong layer", FN_BAD_LAYER, LAM_ERR_CONN_CLOSED},
    {"wrong micro-batch", FN_BAD_MB, LAM_ERR_CONN_CLOSED},
    {"micro-batch never submitted", FN_BAD_MB_UNSUBMITTED, LAM_ERR_CONN_CLOSED},
    {"one sequence fewer", FN_BAD_SEQ_FEWER, LAM_ERR_CONN_CLOSED},
    {"one sequence more", FN_BAD_SEQ_MORE, LAM_ERR_CONN_CLOSED},
    {"unknown sequence id", FN_BAD_SEQ_UNKNOWN, LAM_ERR_CONN_CLOSED},
    {"sequences reordered", FN_BAD_SEQ_ORDER, LAM_ERR_CONN_CLOSED},
    {"wrong position", FN_BAD_SEQ_POS, LAM_ERR_CONN_CLOSED},
    {"chunk lengths differ, same total", FN_BAD_SEQ_SPLIT, LAM_ERR_CONN_CLOSED},
    {"dtype f16 where f32 was asked", FN_BAD_DTYPE_F16, LAM_ERR_CONN_CLOSED},
    {"unknown dtype", FN_BAD_DTYPE_UNKNOWN, LAM_ERR_CONN_CLOSED},
    {"o too short", FN_BAD_O_SHORT, LAM_ERR_CONN_CLOSED},
    {"o too long", FN_BAD_O_LONG, LAM_ERR_CONN_CLOSED},
    {"twice the query heads", FN_BAD_Q_HEADS, LAM_ERR_CONN_CLOSED},
    {"wrong KV head count", FN_BAD_KV_HEADS, LAM_ERR_CONN_CLOSED},
    {"half the head_dim", FN_BAD_HEAD_DIM, LAM_ERR_CONN_CLOSED},
    {"sequence status positive", FN_BAD_STATUS_POSITIVE, LAM_ERR_CONN_CLOSED},
    {"sequence status below every group", FN_BAD_STATUS_BELOW, LAM_ERR_CONN_CLOSED},
    {"sequence status not a per-sequence error", FN_BAD_STATUS_NOT_SEQ, LAM_ERR_CONN_CLOSED},
    {"duplicate result", FN_BAD_DUPLICATE, LAM_ERR_CONN_CLOSED},
    {"extra result for micro-batch 1", FN_BAD_EXTRA_RESULT, LAM_ERR_CONN_CLOSED},
    {"message over max_msg", FN_BAD_OVERSIZE, LAM_ERR_CONN_CLOSED},
    {"ERROR, connection left open", FN_BAD_ERROR_OPEN, LAM_ERR_CONN_CLOSED},
    {"ERROR, then closed", FN_BAD_ERROR_CLOSE, LAM_ERR_CONN_CLOSED},
    {"closed without an answer", FN_BAD_CLOSE, LAM_ERR_CONN_CLOSED},
};

static void test_bad_results(void)
{
    CU_ASSERT_FATAL(g_r != NULL);
    size_t n = sizeof g_attn_cases / sizeof g_attn_cases[0];
    for (size_t i = 0; i < n; i++)
        failure_row(g_r, g_fake, &g_attn_cases[i]);
    printf("\n  %zu malformed results, each: node dropped, reconnected, correct answers after ", n);
}

/* Values and per-sequence errors are data: the node stays. */
static void test_data_passes(void)
{
    CU_ASSERT_FATAL(g_r != NULL);
    static const attn_case_t nan_inf = {"NaN and Inf in o", FN_OK_NAN_INF, LAM_OK};
    static const attn_case_t kv_full = {"a sequence's KV full", FN_OK_SEQ_KV_FULL, LAM_OK};
    mbatch_t *b = calloc(1, sizeof *b);
    uint64_t epoch0 = lam_remote_epoch(g_r);
    fn_counts_t c0, c1;
    fn_counts(g_fake, &c0);

    CU_ASSERT_EQUAL(bad_round(g_r, g_fake, &nan_inf, b), LAM_OK);
    int bad = 0;
    for (int t = 0; t < b->n_tok; t++)
        for (size_t e = 0; e < Q_DIM; e++) {
            size_t i = (size_t)t * Q_DIM + e;
            bool mine = e >= BAD_QOFF && e < BAD_QOFF + BAD_QROW;
            size_t local = mine ? (size_t)t * BAD_QROW + (e - BAD_QOFF) : SIZE_MAX; /* index in shard 1's o */
            if (local == 0)
                bad += !isnan(b->o[i]);
            else if (local == BAD_QROW + 3)
                bad += !(isinf(b->o[i]) && b->o[i] > 0);
            else if (local == (size_t)b->n_tok * BAD_QROW - 1)
                bad += !(isinf(b->o[i]) && b->o[i] < 0);
            else
                bad += !close_to(b->o[i], b->want[i]);
        }
    CU_ASSERT_EQUAL(bad, 0);

    CU_ASSERT_EQUAL(bad_round(g_r, g_fake, &kv_full, b), LAM_OK);
    CU_ASSERT_EQUAL(b->st[0], 0);
    CU_ASSERT_EQUAL(b->st[1], LAM_ERR_KV_FULL);
    bad = 0;
    for (int t = 0; t < b->n_tok; t++)
        for (size_t e = 0; e < Q_DIM; e++) {
            size_t i = (size_t)t * Q_DIM + e;
            bool zero = t >= b->seqs[0].n_tok && e >= BAD_QOFF && e < BAD_QOFF + BAD_QROW;
            bad += zero ? b->o[i] != 0.0f : !close_to(b->o[i], b->want[i]);
        }
    CU_ASSERT_EQUAL(bad, 0);

    CU_ASSERT_EQUAL(lam_remote_epoch(g_r), epoch0);
    CU_ASSERT(lam_remote_ready(g_r));
    fn_counts(g_fake, &c1);
    CU_ASSERT_EQUAL(c1.authed[FN_BAD_SHARD], c0.authed[FN_BAD_SHARD]);
    good_round(g_r, "after data rows");
    fn_counts(g_fake, &c1);
    CU_ASSERT_EQUAL(c1.errors, 0);
    free(b);
}

/* Silence: a fake node and a compute side of its own, with a short deadline. */
static void test_silence(void)
{
    static const attn_case_t silent = {"silent until the deadline", FN_BAD_SILENT, LAM_ERR_TIMEOUT};
    fn_node_t *f = NULL;
    lam_remote_t *r = NULL;
    CU_ASSERT_FATAL(fn_start(g_token, &f) == 0);
    /* long enough for a loaded sanitizer run to answer in time, short
     * enough to wait out once */
    CU_ASSERT_EQUAL(remote_open(f, 1500, &r), LAM_OK);
    if (r) {
        good_round(r, "short deadline, before");
        failure_row(r, f, &silent);
        lam_remote_destroy(r);
    }
    fn_stop(f);
}

static const hs_case_t g_hs_cases[] = {
    {"proof made with another token", FN_HS_MAC, false},
    {"another model fingerprint", FN_HS_FINGERPRINT, false},
    {"another shard", FN_HS_SHARD, false},
    {"another KV head range", FN_HS_KV_RANGE, false},
    {"another layer count", FN_HS_LAYERS, false},
    {"another head_dim", FN_HS_HEAD_DIM, false},
    {"another KV dtype", FN_HS_KV_DTYPE, false},
    {"max_msg below one micro-batch", FN_HS_MAX_MSG, false},
    {"truncated challenge", FN_HS_TRUNCATED, false},
    {"HELLO_OK without a challenge", FN_HS_OK_FIRST, false},
    {"ATTN_RESULT before authentication", FN_HS_RESULT_FIRST, false},
    {"STATS_REPLY before authentication", FN_HS_STATS_FIRST, false},
    {"ERROR, connection left open", FN_HS_ERROR, false},
    {"a second challenge instead of HELLO_OK", FN_HS_CHALLENGE_TWICE, true},
    {"silence (handshake deadline)", FN_HS_SILENT, false},
};

static void test_bad_handshakes(void)
{
    CU_ASSERT_FATAL(g_r != NULL);
    size_t n = sizeof g_hs_cases / sizeof g_hs_cases[0];
    for (size_t i = 0; i < n; i++) {
        const hs_case_t *hc = &g_hs_cases[i];
        lam_remote_node_info_t ni0, ni1;
        lam_remote_node_info(g_r, FN_BAD_SHARD, &ni0);
        fn_counts_t c0, c1;
        fn_counts(g_fake, &c0);
        uint64_t epoch0 = lam_remote_epoch(g_r);
        /* drop FN_BAD_SHARD's connection; its next HELLO gets the bad reply */
        fn_arm_hello(g_fake, hc->how, hc->auth_ok, true);
        CHECK(fn_wait_bad_closed(g_fake, c0.bad_closed + 1, 30.0) == c0.bad_closed + 1, hc->name);
        CHECK(lam_remote_wait_ready(g_r, 15000) == LAM_OK, hc->name);
        CHECK(fn_disarm(g_fake), hc->name);
        fn_counts(g_fake, &c1);
        CHECK(c1.bad_auth == c0.bad_auth, hc->name);
        /* one handshake got through after the kick; the refused one never counted as up */
        CHECK(c1.authed[FN_BAD_SHARD] == c0.authed[FN_BAD_SHARD] + 1, hc->name);
        lam_remote_node_info(g_r, FN_BAD_SHARD, &ni1);
        CHECK(ni1.losses == ni0.losses + 1, hc->name);
        CHECK(lam_remote_epoch(g_r) == epoch0 + 1, hc->name);
        good_round(g_r, hc->name);
    }
    fn_counts_t c;
    fn_counts(g_fake, &c);
    CU_ASSERT_EQUAL(c.errors, 0);
    printf("\n  %zu bad handshake replies refused ", n);
}

/* Shard 0 was never dropped, and every sequence was released on the nodes. */
static void test_good_shard_intact(void)
{
    CU_ASSERT_FATAL(g_r != NULL);
    fn_counts_t c;
    fn_counts(g_fake, &c);
    CU_ASSERT_EQUAL(c.authed[0], 1);
    CU_ASSERT_EQUAL(c.closed[0], 0);
    /* releases travel in the background */
    for (double end = lam_now_s() + 10.0; c.seqs > 0 && lam_now_s() < end;) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
        fn_counts(g_fake, &c);
    }
    CU_ASSERT_EQUAL(c.seqs, 0);
    CU_ASSERT_EQUAL(c.errors, 0);
    if (c.errors)
        printf("\n  the fake node saw: %s", c.first_error);
}

/* ---- setup -------------------------------------------------------------------------------- */

static int suite_init(void)
{
    np_loopback_env();
    /* the compute side's error line for each row is expected and stays
     * visible; LAMINA_LOG_LEVEL=debug also shows the stale results dropped */
    if (!getenv("LAMINA_LOG_LEVEL"))
        lam_log_set_level(LAM_LOG_ERROR);
    if (lam_auth_init() != LAM_OK)
        return -1;
    snprintf(g_token, sizeof g_token, "%s", getenv("LAMINA_CLUSTER_TOKEN"));
    if (fn_start(g_token, &g_fake) != 0)
        return -1;
    return remote_open(g_fake, 20000, &g_r) == LAM_OK ? 0 : -1;
}

static int suite_clean(void)
{
    lam_remote_destroy(g_r); /* first: the fake node answers its closes */
    fn_stop(g_fake);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("badnode", suite_init, suite_clean);
    CU_add_test(s, "two fake shards: handshake and reference output", test_baseline);
    CU_add_test(s, "malformed results drop the node; it comes back", test_bad_results);
    CU_add_test(s, "NaN/Inf and per-sequence errors are data", test_data_passes);
    CU_add_test(s, "a silent node misses the deadline", test_silence);
    CU_add_test(s, "bad handshake replies are refused", test_bad_handshakes);
    CU_add_test(s, "the good shard stayed connected and released everything", test_good_shard_intact);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
