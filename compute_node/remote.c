#include "compute_node/remote.h"
#include "common/log.h"
#include "kernels/cpu/attn.h"
#include "proto/auth.h"
#include "proto/net.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

enum { NODE_DOWN, NODE_CONNECTING, NODE_CHALLENGED, NODE_UP };
enum { MB_IDLE, MB_SUBMITTED, MB_SENT, MB_DONE, MB_FAILED };
#define HANDSHAKE_TIMEOUT_S 5.0
#define RELEASE_BATCH 4096

typedef struct node {
    int idx;
    int state;
    lam_conn_t *conn;
    char peer[300];
    double next_try, since;
    uint8_t nonce_c[LAM_WIRE_NONCE], nonce_a[LAM_WIRE_NONCE];
    int q_begin, n_q, kv_begin, n_kv; /* this node's heads */
    uint8_t hello[128], auth[64];     /* handshake messages in flight */
    uint8_t stats_req[16];
    uint8_t *send[2];                 /* ATTN message per micro-batch */
    int send_busy[2];
    uint8_t *rel;                     /* SEQ_RELEASE message */
    int rel_busy, stats_busy;
    lam_wire_stats_t stats;
    uint64_t losses;
    uint32_t tag_floor;               /* requests sent on this connection have tags from here on */
} node_t;

typedef struct mb_slot {
    int state;
    uint32_t tag;
    uint64_t step;
    int layer, n_seq, n_tok;
    const lam_remote_seq_t *seqs;
    const float *q, *k, *v;
    uint64_t answered;                /* bit per node */
    uint32_t node_ns;                 /* the slowest node's own time for it (ATTN_RESULT) */
    lam_status_t err;
    double deadline, t_submit;
    int16_t *st_buf;                  /* [max_seqs] per-sequence status, merged */
    float *o_buf;                     /* the submitter's output buffer */
} mb_slot_t;

struct lam_remote {
    lam_remote_opts_t o;
    lam_remote_addr_t *addrs;
    char token[512];
    lam_model_config_t cfg;
    int q_dim, kv_dim, hd;
    size_t max_msg;
    lam_net_t *net;
    pthread_t thr;
    int efd;
    atomic_bool stop;
    bool closing;                     /* lam_remote_destroy: connection losses are expected */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_mutex_t wmu;              /* the UCX worker and everything below: whoever runs a round */
    node_t *nodes;
    atomic_int n_up;
    atomic_uint_fast64_t epoch;
    mb_slot_t mb[2];
    uint32_t tag_next;
    uint64_t *relq;                   /* ids waiting to be released, under mu */
    int rel_n, rel_cap;
    atomic_bool want_stats;
    atomic_int fin[2];                /* micro-batch finished (DONE or FAILED): lets wait spin */
    bool muted;                       /* UCX activity does not wake the comm thread (compute thread's) */
    bool polled;                      /* the compute thread polls while it computes (its own) */
};

static void wake(lam_remote_t *r)
{
    uint64_t one = 1;
    ssize_t w = write(r->efd, &one, sizeof one);
    (void)w;
}

static size_t attn_size(const lam_remote_t *r, const node_t *n, int n_seq, int n_tok, int result)
{
    lam_wire_attn_t h = {.n_seq = (uint16_t)n_seq, .n_q_heads = (uint16_t)n->n_q, .n_kv_heads = (uint16_t)n->n_kv,
                         .head_dim = (uint16_t)r->hd, .n_tok = (uint32_t)n_tok, .dtype = (uint8_t)r->o.act_dtype};
    return lam_wire_attn_layout(&h, result).total;
}

/* Micro-batch slot s is out with the nodes (mu held). */
static bool mb_in_flight(const mb_slot_t *s) { return s->state == MB_SUBMITTED || s->state == MB_SENT; }

/* ---- failure handling (comm thread) ---- */

/* Fails every micro-batch in flight; called with mu held. */
static void fail_inflight_locked(lam_remote_t *r, lam_status_t why)
{
    for (int m = 0; m < 2; m++) {
        mb_slot_t *s = &r->mb[m];
        if (mb_in_flight(s)) {
            s->state = MB_FAILED;
            s->err = why;
            atomic_store(&r->fin[m], 1);
        }
    }
    pthread_cond_broadcast(&r->cv);
}

static void node_lost(lam_remote_t *r, node_t *n, lam_status_t why)
{
    bool was_up = n->state == NODE_UP;
    n->state = NODE_DOWN;
    n->conn = NULL;
    n->next_try = lam_now_s() + r->o.reconnect_ms / 1000.0;
    n->send_busy[0] = n->send_busy[1] = 0;
    n->rel_busy = n->stats_busy = 0;
    if (was_up && r->closing) {
        atomic_fetch_sub(&r->n_up, 1);
    } else if (was_up) {
        n->losses++;
        atomic_fetch_sub(&r->n_up, 1);
        atomic_fetch_add(&r->epoch, 1);
        lam_log_error("remote: attention node %d (%s) lost: %s; its requests fail, reconnecting", n->idx,
                      n->peer, lam_status_str(why));
        pthread_mutex_lock(&r->mu);
        fail_inflight_locked(r, why == LAM_ERR_TIMEOUT ? LAM_ERR_TIMEOUT : LAM_ERR_CONN_CLOSED);
        /* the node forgot everything; the others are told by the scheduler */
        pthread_mutex_unlock(&r->mu);
    } else {
        lam_log_debug("remote: attention node %d (%s) not reachable: %s", n->idx, n->peer, lam_status_str(why));
    }
}

/* Drops a node that broke the protocol. An authenticated node counts as
 * lost at once, so that no other node's answer completes the work in flight
 * while the close is under way (cb_close then ignores the connection); its
 * sends still in flight keep their buffers busy until they complete. */
static void drop_node(lam_remote_t *r, node_t *n, lam_conn_t *c, lam_status_t why)
{
    lam_net_close(c, why);
    if (n->conn != c || n->state != NODE_UP)
        return; /* not up yet: cb_close reports it */
    int busy[4] = {n->send_busy[0], n->send_busy[1], n->rel_busy, n->stats_busy};
    node_lost(r, n, why);
    n->send_busy[0] = busy[0], n->send_busy[1] = busy[1], n->rel_busy = busy[2], n->stats_busy = busy[3];
}

/* ---- handshake ---- */

static void send_hello(lam_remote_t *r, node_t *n)
{
    lam_wire_hello_t h = {
        .caps = LAM_CAP_PREFILL_CHUNKS | LAM_CAP_STATS,
        .max_msg = (uint32_t)r->max_msg,
        .model_fingerprint = r->o.fingerprint,
        .shard_index = (uint16_t)n->idx,
        .shard_count = (uint16_t)r->o.n_nodes,
        .kv_dtype = (uint8_t)r->o.kv_dtype,
        .act_dtype = (uint8_t)r->o.act_dtype,
    };
    lam_auth_nonce(n->nonce_c);
    memcpy(h.nonce, n->nonce_c, LAM_WIRE_NONCE);
    size_t len = lam_wire_put_hello(n->hello, 0, &h);
    if (lam_net_send(n->conn, n->hello, len, NULL, NULL) != LAM_OK)
        lam_net_close(n->conn, LAM_ERR_NET);
}

/* Returns a reason if the node is not the one we expect, else NULL. */
static const char *check_challenge(lam_remote_t *r, node_t *n, const lam_wire_challenge_t *c, size_t need)
{
    const lam_model_config_t *cfg = &r->cfg;
    if (c->model_fingerprint != r->o.fingerprint)
        return "it serves a different model (fingerprint)";
    if (c->shard_index != n->idx || c->shard_count != r->o.n_nodes)
        return "it is configured as a different shard";
    if (c->kv_head_begin != n->kv_begin || c->kv_head_end != n->kv_begin + n->n_kv)
        return "its KV head range differs";
    if (c->n_layers != cfg->n_layers || c->n_heads != cfg->n_heads || c->n_kv_heads != cfg->n_kv_heads ||
        c->head_dim != cfg->head_dim)
        return "its model shape differs";
    if (c->kv_dtype != r->o.kv_dtype)
        return "its KV dtype differs";
    if (c->max_msg < need)
        return "its largest message is smaller than one micro-batch (lower the micro-batch size or raise "
               "its --max-batch-tokens)";
    return NULL;
}

static void on_challenge(lam_remote_t *r, node_t *n, const lam_wire_challenge_t *c)
{
    uint8_t expect[LAM_WIRE_MAC];
    lam_auth_mac(expect, r->token, "lamina-a", n->nonce_c, c->nonce);
    if (!lam_auth_equal(expect, c->mac)) {
        lam_log_error("remote: attention node %d (%s) failed authentication (cluster token differs)", n->idx,
                      n->peer);
        lam_net_close(n->conn, LAM_ERR_AUTH);
        return;
    }
    const char *bad = check_challenge(r, n, c, attn_size(r, n, r->o.max_seqs, r->o.max_tokens, 0));
    if (bad) {
        lam_log_error("remote: attention node %d (%s) refused: %s", n->idx, n->peer, bad);
        lam_net_close(n->conn, LAM_ERR_MODEL_MISMATCH);
        return;
    }
    memcpy(n->nonce_a, c->nonce, LAM_WIRE_NONCE);
    lam_wire_auth_t a;
    lam_auth_mac(a.mac, r->token, "lamina-c", n->nonce_a, n->nonce_c);
    size_t len = lam_wire_put_auth(n->auth, 0, &a);
    n->state = NODE_CHALLENGED;
    if (lam_net_send(n->conn, n->auth, len, NULL, NULL) != LAM_OK)
        lam_net_close(n->conn, LAM_ERR_NET);
}

/* ---- data path ---- */

static void on_attn_sent(void *arg, lam_status_t st)
{
    int *busy = arg;
    *busy = 0;
    (void)st; /* a failed send is followed by the connection's on_close */
}

/* Packs this node's heads of the micro-batch into its send buffer and sends. */
static lam_status_t send_attn(lam_remote_t *r, node_t *n, int m, const mb_slot_t *s)
{
    lam_wire_attn_t h = {.step = s->step, .layer = (uint16_t)s->layer, .mb = (uint8_t)m,
                         .dtype = (uint8_t)r->o.act_dtype, .n_seq = (uint16_t)s->n_seq,
                         .n_q_heads = (uint16_t)n->n_q, .n_kv_heads = (uint16_t)n->n_kv,
                         .head_dim = (uint16_t)r->hd, .n_tok = (uint32_t)s->n_tok};
    uint8_t *buf = n->send[m];
    lam_wire_attn_layout_t L = lam_wire_attn_layout(&h, 0);
    lam_wire_seq_t *ws = (lam_wire_seq_t *)(buf + L.seq);
    for (int i = 0; i < s->n_seq; i++) {
        lam_wire_seq_t e = {.seq_id = s->seqs[i].id, .pos = (uint32_t)s->seqs[i].pos,
                            .n_tok = (uint16_t)s->seqs[i].n_tok};
        memcpy(&ws[i], &e, sizeof e);
    }
    lam_wire_put_attn(buf, s->tag, 0, &h, ws);
    size_t es = lam_dtype_size((unsigned)r->o.act_dtype);
    size_t qrow = (size_t)n->n_q * r->hd, kvrow = (size_t)n->n_kv * r->hd;
    /* a node holding every head takes whole rows: one conversion per tensor */
    int nt = s->n_tok, per = qrow == (size_t)r->q_dim ? nt : 1;
    for (int t = 0; t < nt; t += per) {
        lam_convert(buf + L.q + t * qrow * es, r->o.act_dtype, s->q + (size_t)t * r->q_dim + (size_t)n->q_begin * r->hd,
                    LAM_DT_F32, qrow * per);
        lam_convert(buf + L.k + t * kvrow * es, r->o.act_dtype,
                    s->k + (size_t)t * r->kv_dim + (size_t)n->kv_begin * r->hd, LAM_DT_F32, kvrow * per);
        lam_convert(buf + L.v + t * kvrow * es, r->o.act_dtype,
                    s->v + (size_t)t * r->kv_dim + (size_t)n->kv_begin * r->hd, LAM_DT_F32, kvrow * per);
    }
    n->send_busy[m] = 1;
    lam_status_t st = lam_net_send(n->conn, buf, L.total, on_attn_sent, &n->send_busy[m]);
    if (st != LAM_OK)
        n->send_busy[m] = 0;
    return st;
}

static void on_result(lam_remote_t *r, node_t *n, const lam_msg_t *msg)
{
    const lam_wire_attn_t *h = &msg->u.attn.h;
    int m = h->mb;
    uint32_t tag = msg->tag;
    uint64_t bit = 1ull << n->idx;
    pthread_mutex_lock(&r->mu);
    mb_slot_t *s = &r->mb[m];
    bool current = s->state == MB_SENT && s->tag == tag && !(s->answered & bit);
    /* Each tag names one request of one micro-batch, and a node answers each
     * request it got on this connection once. An answer to a request that
     * failed meanwhile (another node was lost) is stale; a tag never sent on
     * this connection, another micro-batch's tag, or a second answer means
     * the node does not follow the protocol. */
    bool sent_here = (int32_t)(tag - n->tag_floor) >= 0 && tag != r->mb[1 - m].tag;
    bool stale = !current && sent_here &&
                 ((int32_t)(tag - s->tag) < 0 ||
                  (tag == s->tag && (s->state == MB_FAILED || s->state == MB_IDLE) && !(s->answered & bit)));
    pthread_mutex_unlock(&r->mu);
    if (stale) {
        lam_log_debug("remote: node %d: stale result (tag %u) dropped", n->idx, tag);
        return;
    }
    if (!current) {
        lam_log_error("remote: attention node %d (%s) answered a request it was not sent, or answered twice (tag %u, "
                      "micro-batch %d); dropping it", n->idx, n->peer, tag, m);
        drop_node(r, n, n->conn, LAM_ERR_PROTO);
        return;
    }
    if (h->step != s->step || h->layer != s->layer || h->n_seq != s->n_seq || h->n_tok != (uint32_t)s->n_tok ||
        h->n_q_heads != n->n_q || h->n_kv_heads != n->n_kv || h->head_dim != r->hd || h->dtype != r->o.act_dtype) {
        lam_log_error("remote: attention node %d (%s) answered with the wrong step, layer or shape; dropping it",
                      n->idx, n->peer);
        drop_node(r, n, n->conn, LAM_ERR_PROTO);
        return;
    }
    /* everything is checked before anything is written */
    for (int i = 0; i < s->n_seq; i++) {
        lam_wire_seq_t e;
        memcpy(&e, &msg->u.attn.seq[i], sizeof e);
        if (e.seq_id != s->seqs[i].id || e.pos != (uint32_t)s->seqs[i].pos || e.n_tok != s->seqs[i].n_tok) {
            lam_log_error("remote: attention node %d (%s) answered for the wrong sequences or chunks", n->idx,
                          n->peer);
            drop_node(r, n, n->conn, LAM_ERR_PROTO);
            return;
        }
        /* per-sequence errors are status.h's KV cache and sequence group */
        if (e.status != 0 && (e.status > LAM_ERR_KV_FULL || e.status <= LAM_ERR_KV_FULL - 100)) {
            lam_log_error("remote: attention node %d (%s) gave a sequence status %d, not a per-sequence error; "
                          "dropping it", n->idx, n->peer, e.status);
            drop_node(r, n, n->conn, LAM_ERR_PROTO);
            return;
        }
    }
    /* Values are not judged: NaN or Inf in o is the attention of what was
     * sent (f16 overflow, a diverging model) and belongs to the sequences;
     * dropping the node would lose every sequence's KV over one value. */
    size_t es = lam_dtype_size(h->dtype), row = (size_t)n->n_q * r->hd;
    int per = row == (size_t)r->q_dim ? s->n_tok : 1;
    for (int t = 0; t < s->n_tok; t += per)
        lam_convert(s->o_buf + (size_t)t * r->q_dim + (size_t)n->q_begin * r->hd, LAM_DT_F32,
                    msg->u.attn.o + t * row * es, h->dtype, row * per);
    for (int i = 0; i < s->n_seq; i++) {
        lam_wire_seq_t e;
        memcpy(&e, &msg->u.attn.seq[i], sizeof e);
        if (e.status != 0 && s->st_buf[i] == 0)
            s->st_buf[i] = e.status;
    }
    pthread_mutex_lock(&r->mu);
    s->answered |= 1ull << n->idx;
    s->node_ns = h->node_ns > s->node_ns ? h->node_ns : s->node_ns;
    bool done = s->answered == (r->o.n_nodes == 64 ? ~0ull : (1ull << r->o.n_nodes) - 1);
    int layer = s->layer;
    double t_submit = s->t_submit;
    if (done) {
        s->state = MB_DONE;
        atomic_store(&r->fin[m], 1);
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    if (done && r->o.on_exchange)
        r->o.on_exchange(r->o.exchange_ud, layer, lam_now_s() - t_submit);
}

/* ---- net callbacks (comm thread) ---- */

static void cb_connect(void *ud, lam_conn_t *c)
{
    lam_remote_t *r = ud;
    node_t *n = lam_conn_ud(c);
    snprintf(n->peer, sizeof n->peer, "%s", lam_conn_peer(c));
    send_hello(r, n);
}

static void cb_msg(void *ud, lam_conn_t *c, const void *buf, size_t len)
{
    lam_remote_t *r = ud;
    node_t *n = lam_conn_ud(c);
    lam_msg_t msg;
    char why[160];
    if (lam_wire_decode(buf, len, &msg, why, sizeof why) != LAM_OK) {
        lam_log_error("remote: attention node %d (%s) sent a bad message: %s", n->idx, n->peer, why);
        drop_node(r, n, c, LAM_ERR_PROTO);
        return;
    }
    switch (msg.type) {
    case LAM_MSG_HELLO_CHALLENGE:
        if (n->state == NODE_CONNECTING) {
            on_challenge(r, n, &msg.u.challenge);
            return;
        }
        break;
    case LAM_MSG_HELLO_OK:
        if (n->state == NODE_CHALLENGED) {
            n->state = NODE_UP;
            lam_log_info("remote: attention node %d (%s) connected", n->idx, n->peer);
            pthread_mutex_lock(&r->mu);
            n->tag_floor = r->tag_next + 1; /* before n_up: no submit gets a lower tag from here on */
            atomic_fetch_add(&r->n_up, 1);
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
            return;
        }
        break;
    case LAM_MSG_ATTN_RESULT:
        if (n->state == NODE_UP) {
            on_result(r, n, &msg);
            return;
        }
        break;
    case LAM_MSG_STATS_REPLY:
        if (n->state == NODE_UP) { /* nothing but the handshake before HELLO_OK */
            n->stats = msg.u.stats;
            return;
        }
        break;
    case LAM_MSG_ERROR: {
        /* A node sends ERROR when it refuses the connection, and closes it
         * soon after: fail what is in flight now, not at the deadline. */
        char text[LAM_WIRE_MAX_ERROR_TEXT + 1];
        lam_wire_error_text(&msg, text);
        lam_log_error("remote: attention node %d (%s) reports: %s: %s", n->idx, n->peer,
                      lam_status_str((lam_status_t)msg.u.error.code), text);
        drop_node(r, n, c, LAM_ERR_CONN_CLOSED);
        return;
    }
    default: break;
    }
    lam_log_error("remote: attention node %d (%s) sent an unexpected %s", n->idx, n->peer,
                  lam_msg_type_name(msg.type));
    drop_node(r, n, c, LAM_ERR_PROTO);
}

static void cb_close(void *ud, lam_conn_t *c, lam_status_t why)
{
    lam_remote_t *r = ud;
    node_t *n = lam_conn_ud(c);
    if (n && n->conn == c)
        node_lost(r, n, why);
}

/* ---- comm thread ---- */

static void try_connect(lam_remote_t *r, node_t *n, double now)
{
    lam_conn_t *c = NULL;
    n->since = now;
    n->next_try = now + r->o.reconnect_ms / 1000.0;
    snprintf(n->peer, sizeof n->peer, "%s:%d", r->addrs[n->idx].host, r->addrs[n->idx].port);
    if (lam_net_connect(r->net, r->addrs[n->idx].host, r->addrs[n->idx].port, &c) != LAM_OK)
        return;
    n->conn = c;
    n->state = NODE_CONNECTING;
    lam_conn_set_ud(c, n);
}

static void pump_submissions(lam_remote_t *r)
{
    for (int m = 0; m < 2; m++) {
        pthread_mutex_lock(&r->mu);
        mb_slot_t s = r->mb[m];
        pthread_mutex_unlock(&r->mu);
        if (s.state != MB_SUBMITTED)
            continue;
        bool ready = true;
        for (int i = 0; i < r->o.n_nodes; i++)
            ready = ready && r->nodes[i].state == NODE_UP && !r->nodes[i].send_busy[m];
        if (!ready) {
            bool down = false;
            for (int i = 0; i < r->o.n_nodes; i++)
                down = down || r->nodes[i].state != NODE_UP;
            if (down) {
                pthread_mutex_lock(&r->mu);
                fail_inflight_locked(r, LAM_ERR_CONN_CLOSED);
                pthread_mutex_unlock(&r->mu);
            }
            continue; /* a previous send of this slot is still completing */
        }
        lam_status_t st = LAM_OK;
        for (int i = 0; i < r->o.n_nodes && st == LAM_OK; i++)
            st = send_attn(r, &r->nodes[i], m, &s);
        pthread_mutex_lock(&r->mu);
        if (r->mb[m].state == MB_SUBMITTED && r->mb[m].tag == s.tag) {
            if (st == LAM_OK) {
                r->mb[m].state = MB_SENT;
                r->mb[m].deadline = lam_now_s() + r->o.timeout_ms / 1000.0;
            } else {
                r->mb[m].state = MB_FAILED;
                r->mb[m].err = LAM_ERR_CONN_CLOSED;
                atomic_store(&r->fin[m], 1);
                pthread_cond_broadcast(&r->cv);
            }
        }
        pthread_mutex_unlock(&r->mu);
    }
}

static void on_rel_sent(void *arg, lam_status_t st)
{
    int *busy = arg;
    *busy = 0;
    (void)st;
}

static void pump_releases(lam_remote_t *r)
{
    for (int i = 0; i < r->o.n_nodes; i++)
        if (r->nodes[i].state == NODE_UP && r->nodes[i].rel_busy)
            return; /* one release message per node in flight; the rest waits */
    pthread_mutex_lock(&r->mu);
    int n = r->rel_n < RELEASE_BATCH ? r->rel_n : RELEASE_BATCH;
    if (n == 0) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    uint64_t ids[RELEASE_BATCH];
    memcpy(ids, r->relq, (size_t)n * sizeof *ids);
    memmove(r->relq, r->relq + n, (size_t)(r->rel_n - n) * sizeof *ids);
    r->rel_n -= n;
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->o.n_nodes; i++) {
        node_t *nd = &r->nodes[i];
        if (nd->state != NODE_UP)
            continue; /* a node that is down holds nothing */
        size_t len = lam_wire_put_release(nd->rel, 0, ids, (uint32_t)n);
        nd->rel_busy = 1;
        if (lam_net_send(nd->conn, nd->rel, len, on_rel_sent, &nd->rel_busy) != LAM_OK)
            nd->rel_busy = 0;
    }
}

static void pump_timers(lam_remote_t *r, double now)
{
    for (int i = 0; i < r->o.n_nodes; i++) {
        node_t *n = &r->nodes[i];
        if (n->state == NODE_DOWN && now >= n->next_try)
            try_connect(r, n, now);
        else if ((n->state == NODE_CONNECTING || n->state == NODE_CHALLENGED) && n->conn &&
                 now - n->since > HANDSHAKE_TIMEOUT_S)
            lam_net_close(n->conn, LAM_ERR_TIMEOUT);
    }
    for (int m = 0; m < 2; m++) {
        pthread_mutex_lock(&r->mu);
        mb_slot_t *s = &r->mb[m];
        uint64_t late = s->state == MB_SENT && now > s->deadline ? ~s->answered : 0;
        pthread_mutex_unlock(&r->mu);
        for (int i = 0; i < r->o.n_nodes && late; i++) {
            if ((late & (1ull << i)) && r->nodes[i].conn) {
                lam_log_error("remote: attention node %d (%s) missed the %d ms deadline", i, r->nodes[i].peer,
                              r->o.timeout_ms);
                lam_net_close(r->nodes[i].conn, LAM_ERR_TIMEOUT);
            }
        }
    }
    if (atomic_exchange(&r->want_stats, false)) {
        for (int i = 0; i < r->o.n_nodes; i++) {
            node_t *n = &r->nodes[i];
            if (n->state != NODE_UP || n->stats_busy)
                continue;
            size_t len = lam_wire_put_stats_req(n->stats_req, 0);
            n->stats_busy = 1;
            if (lam_net_send(n->conn, n->stats_req, len, on_rel_sent, &n->stats_busy) != LAM_OK)
                n->stats_busy = 0;
        }
    }
}

/* One round of network work; the caller holds wmu. */
static int comm_round(lam_remote_t *r, double now)
{
    pump_timers(r, now);
    pump_submissions(r);
    pump_releases(r);
    return lam_net_progress(r->net);
}

/* The compute thread runs a round itself if the comm thread is not in one:
 * sends go out and answers are taken in without a thread hand-off. Returns
 * false if the worker was busy. */
static bool inline_round(lam_remote_t *r)
{
    if (pthread_mutex_trylock(&r->wmu) != 0)
        return false;
    pump_submissions(r); /* timers and releases are the comm thread's */
    lam_net_progress(r->net);
    pthread_mutex_unlock(&r->wmu);
    return true;
}

/* Compute thread only. */
static void set_muted(lam_remote_t *r, bool mute)
{
    if (r->muted != mute) {
        lam_net_mute(r->net, mute);
        r->muted = mute;
    }
}

static void *comm_main(void *arg)
{
    lam_remote_t *r = arg;
    pthread_mutex_lock(&r->wmu);
    while (!atomic_load(&r->stop)) {
        uint64_t v;
        bool woken = false;
        while (read(r->efd, &v, sizeof v) > 0)
            woken = true;
        /* idle: sleep until UCX or a submission wakes us; a compute thread
         * that waits for its answers polls the worker itself meanwhile */
        if (comm_round(r, lam_now_s()) == 0 && !woken)
            lam_net_wait_unlocking(r->net, 20, &r->wmu);
    }
    /* leave no released sequence behind on the nodes */
    pump_releases(r);
    lam_net_flush(r->net, 500);
    pthread_mutex_unlock(&r->wmu);
    return NULL;
}

/* ---- public API ---- */

int lam_remote_parse_addrs(const char *s, lam_remote_addr_t *addrs, int max, char *why, size_t why_len)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *colon = NULL;
        for (const char *q = p; q < p + len; q++)
            if (*q == ':')
                colon = q;
        if (n == max) {
            snprintf(why, why_len, "more than %d attention nodes", max);
            return -1;
        }
        if (!colon || colon == p || (size_t)(colon - p) >= sizeof addrs[0].host) {
            snprintf(why, why_len, "'%.*s' is not host:port", (int)len, p);
            return -1;
        }
        char *e;
        errno = 0;
        long port = strtol(colon + 1, &e, 10);
        if (errno || e != p + len || port < 1 || port > 65535) {
            snprintf(why, why_len, "'%.*s': bad port", (int)len, p);
            return -1;
        }
        memcpy(addrs[n].host, p, (size_t)(colon - p));
        addrs[n].host[colon - p] = '\0';
        addrs[n].port = (int)port;
        n++;
        if (!end)
            break;
        p = end + 1;
    }
    if (n == 0)
        snprintf(why, why_len, "no attention node addresses");
    return n ? n : -1;
}

void lam_remote_destroy(lam_remote_t *r)
{
    if (!r)
        return;
    if (r->thr) {
        atomic_store(&r->stop, true);
        wake(r);
        pthread_join(r->thr, NULL);
    }
    r->closing = true;
    lam_net_destroy(r->net);
    if (r->efd >= 0)
        close(r->efd);
    for (int i = 0; r->nodes && i < r->o.n_nodes; i++) {
        free(r->nodes[i].send[0]);
        free(r->nodes[i].send[1]);
        free(r->nodes[i].rel);
    }
    for (int m = 0; m < 2; m++) {
        free(r->mb[m].st_buf);
    }
    free(r->nodes);
    free(r->addrs);
    free(r->relq);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->wmu);
    free(r);
}

lam_status_t lam_remote_create(const lam_remote_opts_t *o, lam_remote_t **out)
{
    const lam_model_config_t *c = o->cfg;
    if (o->n_nodes < 1 || o->n_nodes > 64 || c->n_kv_heads % o->n_nodes != 0) {
        lam_log_error("remote: %d attention nodes cannot split %d KV heads evenly (the node count must divide "
                      "the KV head count)", o->n_nodes, c->n_kv_heads);
        return LAM_ERR_CONFIG;
    }
    if (o->max_tokens < 1 || o->max_seqs < 1 || o->max_seqs > (int)LAM_WIRE_MAX_SEQ ||
        o->max_tokens > (int)LAM_WIRE_MAX_TOK || lam_dtype_size((unsigned)o->act_dtype) == 0 ||
        lam_dtype_size((unsigned)o->kv_dtype) == 0) {
        lam_log_error("remote: bad micro-batch limits or dtypes");
        return LAM_ERR_CONFIG;
    }
    if (lam_auth_init() != LAM_OK)
        return LAM_ERR_UNSUPPORTED;
    lam_remote_t *r = calloc(1, sizeof *r);
    if (!r)
        return LAM_ERR_NO_MEMORY;
    r->o = *o;
    r->efd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    pthread_mutex_init(&r->wmu, NULL);
    if (r->o.timeout_ms <= 0)
        r->o.timeout_ms = 30000;
    if (r->o.reconnect_ms <= 0)
        r->o.reconnect_ms = 500;
    if (r->o.spin_us < 0)
        r->o.spin_us = 0;
    r->cfg = *c;
    r->o.cfg = &r->cfg;
    snprintf(r->token, sizeof r->token, "%s", o->token ? o->token : "");
    r->o.token = r->token;
    r->hd = c->head_dim;
    r->q_dim = c->n_heads * c->head_dim;
    r->kv_dim = c->n_kv_heads * c->head_dim;
    r->addrs = calloc((size_t)o->n_nodes, sizeof *r->addrs);
    r->nodes = calloc((size_t)o->n_nodes, sizeof *r->nodes);
    r->rel_cap = 1 << 16;
    r->relq = calloc((size_t)r->rel_cap, sizeof *r->relq);
    lam_status_t st = r->addrs && r->nodes && r->relq ? LAM_OK : LAM_ERR_NO_MEMORY;
    if (st == LAM_OK)
        memcpy(r->addrs, o->addrs, (size_t)o->n_nodes * sizeof *r->addrs);
    r->o.addrs = r->addrs;
    int kv_per = c->n_kv_heads / o->n_nodes, group = c->n_heads / c->n_kv_heads;
    size_t biggest = 0;
    for (int i = 0; i < o->n_nodes && st == LAM_OK; i++) {
        node_t *n = &r->nodes[i];
        n->idx = i;
        n->kv_begin = i * kv_per;
        n->n_kv = kv_per;
        n->q_begin = n->kv_begin * group;
        n->n_q = kv_per * group;
        size_t sz = attn_size(r, n, o->max_seqs, o->max_tokens, 0);
        size_t rs = attn_size(r, n, o->max_seqs, o->max_tokens, 1);
        if (sz == 0 || rs == 0) {
            lam_log_error("remote: a micro-batch of %d tokens exceeds the protocol's message limits", o->max_tokens);
            st = LAM_ERR_CONFIG;
            break;
        }
        biggest = sz > biggest ? sz : biggest;
        biggest = rs > biggest ? rs : biggest;
        n->send[0] = malloc(sz);
        n->send[1] = malloc(sz);
        n->rel = malloc(lam_wire_release_size(RELEASE_BATCH));
        if (!n->send[0] || !n->send[1] || !n->rel)
            st = LAM_ERR_NO_MEMORY;
    }
    for (int m = 0; m < 2 && st == LAM_OK; m++) {
        r->mb[m].st_buf = calloc((size_t)o->max_seqs, sizeof(int16_t));
        if (!r->mb[m].st_buf)
            st = LAM_ERR_NO_MEMORY;
    }
    r->max_msg = biggest + 4096;
    if (st == LAM_OK) {
        lam_net_opts_t no = {.max_msg = r->max_msg, .n_recv_bufs = 2 * o->n_nodes + 4, .shared = 1};
        lam_net_cbs_t cbs = {.on_connect = cb_connect, .on_msg = cb_msg, .on_close = cb_close, .ud = r};
        st = lam_net_create(&no, &cbs, &r->net);
    }
    if (st == LAM_OK) {
        r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        st = r->efd >= 0 && lam_net_watch_fd(r->net, r->efd) == LAM_OK ? LAM_OK : LAM_ERR_NET;
    }
    if (st == LAM_OK && pthread_create(&r->thr, NULL, comm_main, r) != 0)
        st = LAM_ERR_NO_MEMORY;
    if (st != LAM_OK) {
        lam_remote_destroy(r);
        return st;
    }
    *out = r;
    return LAM_OK;
}

bool lam_remote_ready(lam_remote_t *r) { return atomic_load(&r->n_up) == r->o.n_nodes; }
uint64_t lam_remote_epoch(lam_remote_t *r) { return atomic_load(&r->epoch); }

lam_status_t lam_remote_wait_ready(lam_remote_t *r, int timeout_ms)
{
    struct timespec ts;
    lam_deadline_ts(&ts, timeout_ms);
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    while (!lam_remote_ready(r) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    pthread_mutex_unlock(&r->mu);
    if (!lam_remote_ready(r)) {
        for (int i = 0; i < r->o.n_nodes; i++)
            if (r->nodes[i].state != NODE_UP)
                lam_log_error("remote: attention node %d (%s:%d) not connected after %d ms", i, r->addrs[i].host,
                              r->addrs[i].port, timeout_ms);
        return LAM_ERR_TIMEOUT;
    }
    return LAM_OK;
}

lam_status_t lam_remote_submit(lam_remote_t *r, int mb, uint64_t step, int layer, const lam_remote_seq_t *seqs,
                               int n_seq, int n_tok, const float *q, const float *k, const float *v, float *o)
{
    if (mb < 0 || mb > 1 || n_seq < 1 || n_seq > r->o.max_seqs || n_tok < 1 || n_tok > r->o.max_tokens)
        return LAM_ERR_INVALID_ARG;
    if (!lam_remote_ready(r))
        return LAM_ERR_CONN_CLOSED;
    pthread_mutex_lock(&r->mu);
    mb_slot_t *s = &r->mb[mb];
    if (s->state != MB_IDLE) {
        pthread_mutex_unlock(&r->mu);
        return LAM_ERR_INVALID_ARG;
    }
    s->tag = ++r->tag_next;
    s->step = step;
    s->layer = layer;
    s->seqs = seqs;
    s->n_seq = n_seq;
    s->n_tok = n_tok;
    s->q = q;
    s->k = k;
    s->v = v;
    s->o_buf = o;
    s->t_submit = lam_now_s();
    s->answered = 0;
    s->node_ns = 0;
    s->err = LAM_OK;
    memset(s->st_buf, 0, (size_t)n_seq * sizeof *s->st_buf);
    atomic_store(&r->fin[mb], 0);
    s->state = MB_SUBMITTED;
    bool other = mb_in_flight(&r->mb[!mb]);
    pthread_mutex_unlock(&r->mu);
    if (r->polled)
        set_muted(r, true); /* our polls take the answers in (lam_remote_set_polled) */
    else if (other)
        set_muted(r, false); /* the other micro-batch needs progress while we compute */
    if (!inline_round(r))
        wake(r); /* the comm thread is in a round; make sure it runs another */
    return LAM_OK;
}

lam_status_t lam_remote_wait(lam_remote_t *r, int mb, int16_t *seq_status)
{
    /* results usually land within tens of microseconds of each other
     * between layers: poll the network from this thread for a while
     * before sleeping on the condition */
    double t_end = lam_now_s() + r->o.spin_us * 1e-6;
    if (!atomic_load(&r->fin[mb]) && r->o.spin_us > 0) {
        /* keep the sleeping comm thread from waking for the answer: on
         * shared cores its wake-up would cost more than the round trip */
        set_muted(r, true);
        while (!atomic_load(&r->fin[mb]) && lam_now_s() < t_end)
            inline_round(r);
    }
    /* stay muted while this thread keeps coming back for its answers (one
     * micro-batch at a time, or polling between its products); the comm
     * thread still runs a round every 20 ms and whenever it is woken for
     * releases or stats. Unmute before sleeping below: then the comm thread
     * takes the answer in. */
    if (r->muted) {
        pthread_mutex_lock(&r->mu);
        bool other = mb_in_flight(&r->mb[!mb]);
        pthread_mutex_unlock(&r->mu);
        if ((other && !r->polled) || !atomic_load(&r->fin[mb]))
            set_muted(r, false);
    }
    pthread_mutex_lock(&r->mu);
    mb_slot_t *s = &r->mb[mb];
    if (s->state == MB_IDLE) {
        pthread_mutex_unlock(&r->mu);
        return LAM_ERR_INVALID_ARG;
    }
    while (mb_in_flight(s))
        pthread_cond_wait(&r->cv, &r->mu);
    lam_status_t st = s->state == MB_DONE ? LAM_OK : s->err;
    if (seq_status)
        memcpy(seq_status, s->st_buf, (size_t)s->n_seq * sizeof *seq_status);
    s->state = MB_IDLE;
    pthread_mutex_unlock(&r->mu);
    return st;
}

void lam_remote_set_polled(lam_remote_t *r, bool polled)
{
    r->polled = polled;
    if (!polled)
        set_muted(r, false);
}

void lam_remote_poll(void *arg)
{
    lam_remote_t *r = arg;
    pthread_mutex_lock(&r->mu);
    bool busy = mb_in_flight(&r->mb[0]) || mb_in_flight(&r->mb[1]);
    pthread_mutex_unlock(&r->mu);
    if (busy)
        inline_round(r);
}

uint32_t lam_remote_node_ns(lam_remote_t *r, int mb)
{
    pthread_mutex_lock(&r->mu);
    uint32_t ns = r->mb[mb].node_ns;
    pthread_mutex_unlock(&r->mu);
    return ns;
}

void lam_remote_release(lam_remote_t *r, const uint64_t *ids, int n)
{
    pthread_mutex_lock(&r->mu);
    int room = r->rel_cap - r->rel_n;
    if (n > room) {
        lam_log_warn("remote: release queue full; %d sequences are left to the nodes' connection cleanup", n - room);
        n = room;
    }
    memcpy(r->relq + r->rel_n, ids, (size_t)n * sizeof *ids);
    r->rel_n += n;
    pthread_mutex_unlock(&r->mu);
    wake(r);
}

void lam_remote_request_stats(lam_remote_t *r)
{
    atomic_store(&r->want_stats, true);
    wake(r);
}

void lam_remote_node_info(lam_remote_t *r, int i, lam_remote_node_info_t *out)
{
    memset(out, 0, sizeof *out);
    if (i < 0 || i >= r->o.n_nodes)
        return;
    node_t *n = &r->nodes[i];
    /* read without the comm thread's cooperation: a torn stats copy only
     * skews a monitoring number */
    out->up = n->state == NODE_UP;
    snprintf(out->peer, sizeof out->peer, "%s:%d", r->addrs[i].host, r->addrs[i].port);
    memcpy(&out->stats, &n->stats, sizeof out->stats);
    out->losses = n->losses;
}
