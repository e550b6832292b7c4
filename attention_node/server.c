/* The attention node's protocol server; see server.h. One thread: every
 * callback below runs from lam_net_progress in lam_an_server_run. */
#include "attention_node/server.h"

#include "attention_node/exec.h"
#include "attention_node/kv.h"
#include "common/dtype.h"
#include "common/log.h"
#include "proto/auth.h"
#include "proto/net.h"
#include "proto/wire.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AN_DEFAULT_RECV_BUFS 8
#define AN_DEFAULT_SEND_BUFS 4
#define AN_MAX_SEND_BUFS 16     /* reply buffers per connection, at most */
#define AN_HS_BUFS 2            /* small reply buffers for the handshake and errors */
/* Between an ERROR and closing the connection: a receiver's lam_net drops
 * messages that are still undelivered when it sees the connection fail, so
 * an immediate close could swallow the ERROR that explains it. */
#define AN_CLOSE_GRACE_NS (200ull * 1000000ull)

typedef enum {
    CS_HELLO,       /* waiting for HELLO */
    CS_CHALLENGED,  /* HELLO_CHALLENGE sent, waiting for HELLO_AUTH */
    CS_AUTHED,
    CS_CLOSING,     /* refused: ERROR sent, closing at close_at_ns; input ignored */
} an_conn_state_t;

typedef struct an_conn an_conn_t;

typedef struct an_buf {
    an_conn_t *conn;
    uint8_t *data;
    size_t size;
    bool busy;              /* a send from it is in flight */
} an_buf_t;

struct an_conn {
    lam_an_server_t *srv;
    lam_conn_t *c;
    an_conn_t *prev, *next; /* the server's list of connections */
    uint32_t owner;         /* connection number: scopes its sequence ids */
    an_conn_state_t state;
    uint64_t close_at_ns;   /* CS_CLOSING: when to close; 0 once lam_net_close ran */
    lam_status_t close_why;
    uint8_t act_dtype;
    uint8_t nonce_c[LAM_WIRE_NONCE], nonce_a[LAM_WIRE_NONCE];
    char peer[64];
    an_buf_t bufs[AN_HS_BUFS + AN_MAX_SEND_BUFS];
    int n_bufs;
};

struct lam_an_server {
    lam_an_config_t cfg;
    char token[1024];
    char listen_addr[256];
    int kv_begin, n_kv, n_q, group;  /* this shard's heads */
    size_t max_msg, max_reply;
    lam_an_exec_t *exec;             /* where the pages are, what runs attention (exec.h) */
    lam_kv_t *kv;                    /* exec->kv: the books */
    lam_status_t fatal;              /* the executor failed: stop serving */
    lam_net_t *net;
    uint32_t next_owner;
    an_conn_t *conns;
    int n_conns;
    int n_closing;                   /* connections waiting for close_at_ns */

    int max_seq;                     /* sequences per ATTN message */
    lam_wire_seq_t *res_seq;         /* [max_seq] reply table */

    lam_wire_stats_t stats;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- configuration -------------------------------------------------------- */

static lam_wire_attn_t max_attn(const lam_an_config_t *cfg, int n_q, int n_kv)
{
    uint32_t t = (uint32_t)cfg->max_batch_tokens;
    return (lam_wire_attn_t){.dtype = LAM_DT_F32,
                             .n_seq = (uint16_t)(t < LAM_WIRE_MAX_SEQ ? t : LAM_WIRE_MAX_SEQ),
                             .n_q_heads = (uint16_t)n_q,
                             .n_kv_heads = (uint16_t)n_kv,
                             .head_dim = (uint16_t)cfg->head_dim,
                             .n_tok = t};
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

size_t lam_an_max_msg(const lam_an_config_t *cfg)
{
    if (cfg->shard_count < 1 || cfg->n_kv_heads % cfg->shard_count || cfg->n_heads % cfg->n_kv_heads ||
        cfg->max_batch_tokens < 1 || (uint32_t)cfg->max_batch_tokens > LAM_WIRE_MAX_TOK)
        return 0;
    int n_kv = cfg->n_kv_heads / cfg->shard_count, n_q = n_kv * (cfg->n_heads / cfg->n_kv_heads);
    lam_wire_attn_t h = max_attn(cfg, n_q, n_kv);
    size_t attn = lam_wire_attn_layout(&h, 0).total;
    if (!attn)
        return 0;
    /* any SEQ_RELEASE fits, whatever batch size the client releases in */
    size_t m = max_sz(attn, lam_wire_release_size(LAM_WIRE_MAX_RELEASE));
    m = max_sz(m, lam_wire_error_size(LAM_WIRE_MAX_ERROR_TEXT));
    return max_sz(m, sizeof(lam_wire_hdr_t) + sizeof(lam_wire_challenge_t));
}

static lam_status_t check_config(const lam_an_config_t *c)
{
#define BAD(...) do { lam_log_error(__VA_ARGS__); return LAM_ERR_CONFIG; } while (0)
    if (c->n_layers < 1 || (uint32_t)c->n_layers > LAM_WIRE_MAX_LAYERS || c->n_heads < 1 ||
        (uint32_t)c->n_heads > LAM_WIRE_MAX_HEADS || c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads ||
        c->head_dim < 1 || (uint32_t)c->head_dim > LAM_WIRE_MAX_HEAD_DIM)
        BAD("attention node: model shape outside the wire limits (%d layers, %d/%d heads, head_dim %d)",
            c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim);
    if (c->shard_count < 1 || c->shard_index < 0 || c->shard_index >= c->shard_count)
        BAD("attention node: shard %d/%d does not exist", c->shard_index, c->shard_count);
    if (c->n_kv_heads % c->shard_count)
        BAD("attention node: %d shards do not divide the model's %d KV heads", c->shard_count, c->n_kv_heads);
    if (lam_dtype_size((unsigned)c->kv_dtype) == 0)
        BAD("attention node: unknown KV dtype %d", c->kv_dtype);
    if (c->max_ctx < 1 || (uint32_t)c->max_ctx > LAM_WIRE_MAX_POS)
        BAD("attention node: max_ctx %d outside 1..%u", c->max_ctx, LAM_WIRE_MAX_POS);
    if (c->max_batch_tokens < 1 || (uint32_t)c->max_batch_tokens > LAM_WIRE_MAX_TOK)
        BAD("attention node: max_batch_tokens %d outside 1..%u", c->max_batch_tokens, LAM_WIRE_MAX_TOK);
    if (c->send_bufs < 0 || c->send_bufs > AN_MAX_SEND_BUFS || c->recv_bufs < 0 || c->recv_bufs > 1024)
        BAD("attention node: buffer counts out of range");
    if (!c->token || !*c->token)
        BAD("attention node: no cluster token");
    if (lam_an_max_msg(c) == 0)
        BAD("attention node: an ATTN message of %d tokens exceeds the wire limits", c->max_batch_tokens);
    return LAM_OK;
#undef BAD
}

/* ---- reply buffers ---------------------------------------------------------- */

static void on_sent(void *arg, lam_status_t st)
{
    an_buf_t *b = arg;
    b->busy = false;
    if (st != LAM_OK)
        lam_log_debug("attention node: reply to %s not delivered: %s", b->conn->peer, lam_status_str(st));
}

static an_buf_t *find_buf(an_conn_t *k, size_t need)
{
    for (int i = 0; i < k->n_bufs; i++)
        if (!k->bufs[i].busy && k->bufs[i].size >= need)
            return &k->bufs[i];
    return NULL;
}

static bool add_bufs(an_conn_t *k, int n, size_t size)
{
    for (int i = 0; i < n; i++) {
        an_buf_t *b = &k->bufs[k->n_bufs];
        b->data = malloc(size);
        if (!b->data)
            return false;
        b->conn = k;
        b->size = size;
        b->busy = false;
        k->n_bufs++;
    }
    return true;
}

static void conn_free(an_conn_t *k)
{
    for (int i = 0; i < k->n_bufs; i++)
        free(k->bufs[i].data);
    free(k);
}

/* A free reply buffer of at least `need` bytes. Callbacks cannot wait for
 * a send to complete (lam_net_progress does nothing when called from one),
 * so an authenticated connection whose buffers are all in flight gets one
 * more, up to AN_MAX_SEND_BUFS; past that the peer is not taking its replies
 * and NULL sends it away. */
static an_buf_t *get_buf(an_conn_t *k, size_t need)
{
    an_buf_t *b = find_buf(k, need);
    if (b || k->state != CS_AUTHED || k->n_bufs >= AN_HS_BUFS + AN_MAX_SEND_BUFS)
        return b;
    if (!add_bufs(k, 1, k->srv->max_reply))
        return NULL;
    lam_log_debug("attention node: %s has %d replies in flight", k->peer, k->n_bufs - AN_HS_BUFS);
    return &k->bufs[k->n_bufs - 1];
}

static void send_buf(an_conn_t *k, an_buf_t *b, size_t len)
{
    b->busy = true;
    lam_status_t st = lam_net_send(k->c, b->data, len, on_sent, b);
    if (st != LAM_OK) {
        b->busy = false;
        lam_log_debug("attention node: cannot send to %s: %s", k->peer, lam_status_str(st));
    }
}

/* Sends ERROR(code, text) and closes the connection; counts a rejected
 * message unless the failure is ours. */
static void fail_conn(an_conn_t *k, uint32_t tag, lam_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail_conn(an_conn_t *k, uint32_t tag, lam_status_t code, const char *fmt, ...)
{
    char text[LAM_WIRE_MAX_ERROR_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (code != LAM_ERR_NO_MEMORY) /* every refusal of what a peer sent */
        k->srv->stats.bad_msgs++;
    lam_log_warn("attention node: closing %s (connection %u): %s: %s", k->peer, k->owner, lam_status_str(code), text);
    if (k->state == CS_CLOSING)
        return;
    an_buf_t *b = get_buf(k, lam_wire_error_size(strlen(text)));
    if (b)
        send_buf(k, b, lam_wire_put_error(b->data, tag, code, text));
    k->state = CS_CLOSING;
    k->close_why = code;
    if (b && b->busy) {
        k->close_at_ns = now_ns() + AN_CLOSE_GRACE_NS;
        k->srv->n_closing++;
    } else {
        lam_net_close(k->c, code);
    }
}

/* Closes the refused connections whose grace time is over. */
static void close_due(lam_an_server_t *s)
{
    uint64_t now = now_ns();
    for (an_conn_t *k = s->conns; k; k = k->next)
        if (k->state == CS_CLOSING && k->close_at_ns && now >= k->close_at_ns) {
            k->close_at_ns = 0;
            s->n_closing--;
            lam_net_close(k->c, k->close_why);
        }
}

/* ---- handshake ---------------------------------------------------------------- */

static void on_hello(an_conn_t *k, const lam_msg_t *m)
{
    lam_an_server_t *s = k->srv;
    const lam_wire_hello_t *h = &m->u.hello;
    if (k->state != CS_HELLO) {
        fail_conn(k, m->tag, LAM_ERR_PROTO, "HELLO twice");
        return;
    }
    if (h->model_fingerprint != s->cfg.fingerprint) {
        fail_conn(k, m->tag, LAM_ERR_MODEL_MISMATCH,
                  "model fingerprint %016llx, this node serves %016llx",
                  (unsigned long long)h->model_fingerprint, (unsigned long long)s->cfg.fingerprint);
        return;
    }
    if (h->shard_index != s->cfg.shard_index || h->shard_count != s->cfg.shard_count) {
        fail_conn(k, m->tag, LAM_ERR_MODEL_MISMATCH, "expected shard %u/%u, this node is shard %d/%d",
                  h->shard_index, h->shard_count, s->cfg.shard_index, s->cfg.shard_count);
        return;
    }
    if (h->kv_dtype != s->cfg.kv_dtype) {
        fail_conn(k, m->tag, LAM_ERR_MODEL_MISMATCH, "expected KV dtype %s, this node stores %s",
                  lam_dtype_name(h->kv_dtype), lam_dtype_name((unsigned)s->cfg.kv_dtype));
        return;
    }
    if (lam_dtype_size(h->act_dtype) == 0) {
        fail_conn(k, m->tag, LAM_ERR_PROTO, "unknown activation dtype %u", h->act_dtype);
        return;
    }
    k->act_dtype = h->act_dtype;
    memcpy(k->nonce_c, h->nonce, LAM_WIRE_NONCE);
    lam_auth_nonce(k->nonce_a);
    const lam_kv_stats_t ks = lam_kv_stats(s->kv);
    lam_wire_challenge_t c = {
        .caps = LAM_CAP_PREFILL_CHUNKS | LAM_CAP_STATS,
        .max_msg = (uint32_t)s->max_msg,
        .model_fingerprint = s->cfg.fingerprint,
        .shard_index = (uint16_t)s->cfg.shard_index,
        .shard_count = (uint16_t)s->cfg.shard_count,
        .kv_head_begin = (uint16_t)s->kv_begin,
        .kv_head_end = (uint16_t)(s->kv_begin + s->n_kv),
        .n_layers = (uint16_t)s->cfg.n_layers,
        .n_heads = (uint16_t)s->cfg.n_heads,
        .n_kv_heads = (uint16_t)s->cfg.n_kv_heads,
        .head_dim = (uint16_t)s->cfg.head_dim,
        .max_ctx = (uint32_t)s->cfg.max_ctx,
        .page_tokens = (uint32_t)lam_kv_geom(s->kv)->page_tokens,
        .pages_total = (uint64_t)ks.pages_total,
        .kv_dtype = (uint8_t)s->cfg.kv_dtype,
    };
    memcpy(c.nonce, k->nonce_a, LAM_WIRE_NONCE);
    lam_auth_mac(c.mac, s->token, "lamina-a", k->nonce_c, k->nonce_a);
    an_buf_t *b = get_buf(k, sizeof(lam_wire_hdr_t) + sizeof c);
    if (!b) {
        fail_conn(k, m->tag, LAM_ERR_PROTO, "HELLO while the last reply is in flight");
        return;
    }
    send_buf(k, b, lam_wire_put_challenge(b->data, m->tag, &c));
    k->state = CS_CHALLENGED;
}

static void on_auth(an_conn_t *k, const lam_msg_t *m)
{
    lam_an_server_t *s = k->srv;
    if (k->state != CS_CHALLENGED) {
        fail_conn(k, m->tag, LAM_ERR_AUTH, "HELLO_AUTH without a challenge");
        return;
    }
    uint8_t want[LAM_WIRE_MAC];
    lam_auth_mac(want, s->token, "lamina-c", k->nonce_a, k->nonce_c);
    if (!lam_auth_equal(want, m->u.auth.mac)) {
        fail_conn(k, m->tag, LAM_ERR_AUTH, "cluster token proof does not match");
        return;
    }
    int n = s->cfg.send_bufs ? s->cfg.send_bufs : AN_DEFAULT_SEND_BUFS;
    if (!add_bufs(k, n, s->max_reply)) {
        fail_conn(k, m->tag, LAM_ERR_NO_MEMORY, "cannot allocate %d reply buffers of %zu bytes", n,
                  s->max_reply);
        return;
    }
    k->state = CS_AUTHED;
    lam_log_info("attention node: %s (connection %u) authenticated, activations %s", k->peer, k->owner,
                 lam_dtype_name(k->act_dtype));
    an_buf_t *b = get_buf(k, sizeof(lam_wire_hdr_t));
    send_buf(k, b, lam_wire_put_ok(b->data, m->tag)); /* the pool was just added: b is free */
}

/* ---- attention ------------------------------------------------------------------ */

static void on_attn(an_conn_t *k, const lam_msg_t *m)
{
    lam_an_server_t *s = k->srv;
    const lam_wire_attn_t *h = &m->u.attn.h;
    if (h->layer >= s->cfg.n_layers) {
        fail_conn(k, m->tag, LAM_ERR_PROTO, "layer %u, the model has %d", h->layer, s->cfg.n_layers);
        return;
    }
    if (h->n_q_heads != s->n_q || h->n_kv_heads != s->n_kv || h->head_dim != s->cfg.head_dim) {
        fail_conn(k, m->tag, LAM_ERR_PROTO,
                  "shape %u query / %u KV heads x %u, this shard has %d / %d heads x %d", h->n_q_heads,
                  h->n_kv_heads, h->head_dim, s->n_q, s->n_kv, s->cfg.head_dim);
        return;
    }
    if (lam_dtype_size(h->dtype) == 0) {
        fail_conn(k, m->tag, LAM_ERR_PROTO, "unknown dtype %u", h->dtype);
        return;
    }
    if (h->n_tok > (uint32_t)s->cfg.max_batch_tokens || (int)h->n_seq > s->max_seq) {
        fail_conn(k, m->tag, LAM_ERR_PROTO, "%u tokens in %u sequences, this node takes at most %d tokens",
                  h->n_tok, h->n_seq, s->cfg.max_batch_tokens);
        return;
    }
    const lam_wire_attn_layout_t res = lam_wire_attn_layout(h, 1);
    an_buf_t *b = get_buf(k, res.total);
    if (!b) {
        fail_conn(k, m->tag, LAM_ERR_PROTO, "%d replies in flight: the peer does not take them",
                  AN_MAX_SEND_BUFS);
        return;
    }

    const size_t esz = lam_dtype_size(h->dtype);
    const size_t qrow = (size_t)s->n_q * s->cfg.head_dim, kvrow = (size_t)s->n_kv * s->cfg.head_dim;
    const int layer = h->layer;
    lam_an_exec_t *x = s->exec;
    uint8_t *o = b->data + res.o;
    uint32_t r = 0;
    uint64_t t0 = now_ns(); /* attention time: KV append and the kernel */
    x->i->begin(x, layer, h->dtype);
    for (int i = 0; i < h->n_seq; i++) {
        lam_wire_seq_t e;
        memcpy(&e, &m->u.attn.seq[i], sizeof e);
        lam_kv_seq_t *q = NULL;
        lam_status_t st = lam_kv_seq_get(s->kv, k->owner, e.seq_id, &q);
        if (st == LAM_OK)
            st = lam_kv_reserve(s->kv, q, layer, (int)e.pos, e.n_tok);
        if (st == LAM_OK) {
            x->i->add(x, q, (int)e.pos, e.n_tok, m->u.attn.q + r * qrow * esz, m->u.attn.k + r * kvrow * esz,
                      m->u.attn.v + r * kvrow * esz, o);
            lam_kv_commit(s->kv, q, layer, (int)e.pos, e.n_tok);
        } else {
            memset(o, 0, e.n_tok * qrow * esz);
            lam_log_debug("attention node: %s sequence %llu layer %d pos %u+%u: %s", k->peer,
                          (unsigned long long)e.seq_id, layer, e.pos, e.n_tok, lam_status_str(st));
        }
        e.status = (int16_t)st;
        s->res_seq[i] = e;
        r += e.n_tok;
        o += e.n_tok * qrow * esz;
    }

    lam_status_t st = x->i->run(x);
    uint64_t dt = now_ns() - t0;
    s->stats.attn_ns += dt;
    if (st != LAM_OK) {
        /* the device failed (logged where it did): this node's cache can no
         * longer be trusted; stop, so every peer sees the node go */
        lam_log_error("attention node: the %s executor failed (%s); stopping", x->i->name, lam_status_str(st));
        s->fatal = st;
        return;
    }
    s->stats.attn_msgs++;
    s->stats.attn_tokens += h->n_tok;

    lam_wire_attn_t hr = *h;
    hr.node_ns = dt < UINT32_MAX ? (uint32_t)dt : UINT32_MAX;
    size_t len = lam_wire_put_attn(b->data, m->tag, 1, &hr, s->res_seq);
    send_buf(k, b, len);
}

static void on_release(an_conn_t *k, const lam_msg_t *m)
{
    int unknown = 0;
    for (uint32_t i = 0; i < m->u.release.n_seq; i++) {
        uint64_t id;
        memcpy(&id, m->u.release.ids + 8 * (size_t)i, sizeof id);
        unknown += lam_kv_release_id(k->srv->kv, k->owner, id) != LAM_OK;
    }
    if (unknown)
        lam_log_debug("attention node: %s released %d unknown sequence(s)", k->peer, unknown);
}

static void on_stats(an_conn_t *k, const lam_msg_t *m)
{
    lam_an_server_t *s = k->srv;
    lam_kv_stats_t ks = lam_kv_stats(s->kv);
    s->stats.pages_total = (uint64_t)ks.pages_total;
    s->stats.pages_used = (uint64_t)ks.pages_used;
    s->stats.n_seqs = (uint64_t)ks.seqs;
    an_buf_t *b = get_buf(k, sizeof(lam_wire_hdr_t) + sizeof(lam_wire_stats_t));
    if (b)
        send_buf(k, b, lam_wire_put_stats(b->data, m->tag, &s->stats));
    else
        fail_conn(k, m->tag, LAM_ERR_PROTO, "%d replies in flight: the peer does not take them",
                  AN_MAX_SEND_BUFS);
}

static void on_peer_error(an_conn_t *k, const lam_msg_t *m)
{
    char text[LAM_WIRE_MAX_ERROR_TEXT + 1];
    lam_wire_error_text(m, text);
    lam_log_warn("attention node: %s reports %s (%d): %s", k->peer, lam_status_str((lam_status_t)m->u.error.code),
                 m->u.error.code, text);
}

/* ---- transport callbacks ----------------------------------------------------------- */

static void on_accept(void *ud, lam_conn_t *c)
{
    lam_an_server_t *s = ud;
    an_conn_t *k = calloc(1, sizeof *k);
    if (!k || !add_bufs(k, AN_HS_BUFS, lam_wire_error_size(LAM_WIRE_MAX_ERROR_TEXT))) {
        lam_log_error("attention node: out of memory accepting %s", lam_conn_peer(c));
        if (k)
            conn_free(k);
        lam_net_close(c, LAM_ERR_NO_MEMORY);
        return;
    }
    k->srv = s;
    k->c = c;
    k->owner = s->next_owner++;
    if (!s->next_owner)
        s->next_owner = 1;
    snprintf(k->peer, sizeof k->peer, "%s", lam_conn_peer(c));
    lam_conn_set_ud(c, k);
    k->next = s->conns;
    if (s->conns)
        s->conns->prev = k;
    s->conns = k;
    s->n_conns++;
    lam_log_info("attention node: accepted %s (connection %u, %d open)", k->peer, k->owner, s->n_conns);
}

static void on_connect(void *ud, lam_conn_t *c) { (void)ud, (void)c; }

static void on_msg(void *ud, lam_conn_t *c, const void *buf, size_t len)
{
    lam_an_server_t *s = ud;
    an_conn_t *k = lam_conn_ud(c);
    if (!k || k->state == CS_CLOSING)
        return;
    lam_msg_t m;
    char why[256] = "";
    lam_status_t st = lam_wire_decode(buf, len, &m, why, sizeof why);
    if (st != LAM_OK) {
        uint32_t tag = 0;
        if (len >= sizeof(lam_wire_hdr_t))
            memcpy(&tag, (const uint8_t *)buf + offsetof(lam_wire_hdr_t, tag), sizeof tag);
        fail_conn(k, tag, st, "bad message (%zu bytes): %s", len, why[0] ? why : "undecodable");
    } else if (m.type == LAM_MSG_ERROR) {
        on_peer_error(k, &m);
    } else if (m.type == LAM_MSG_HELLO) {
        on_hello(k, &m);
    } else if (m.type == LAM_MSG_HELLO_AUTH) {
        on_auth(k, &m);
    } else if (k->state != CS_AUTHED) {
        fail_conn(k, m.tag, LAM_ERR_AUTH, "%s before authentication", lam_msg_type_name(m.type));
    } else if (m.type == LAM_MSG_ATTN) {
        on_attn(k, &m);
    } else if (m.type == LAM_MSG_SEQ_RELEASE) {
        on_release(k, &m);
    } else if (m.type == LAM_MSG_STATS) {
        on_stats(k, &m);
    } else {
        fail_conn(k, m.tag, LAM_ERR_PROTO, "unexpected %s from a compute node", lam_msg_type_name(m.type));
    }
    (void)s;
}

static void on_close(void *ud, lam_conn_t *c, lam_status_t why)
{
    lam_an_server_t *s = ud;
    an_conn_t *k = lam_conn_ud(c);
    if (!k)
        return;
    int n = lam_kv_release_owner(s->kv, k->owner);
    if (k->state == CS_CLOSING && k->close_at_ns)
        s->n_closing--;
    if (k->prev)
        k->prev->next = k->next;
    else
        s->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    s->n_conns--;
    lam_log_info("attention node: closed %s (connection %u, %s), released %d sequence(s), %d open", k->peer,
                 k->owner, lam_status_str(why), n, s->n_conns);
    lam_conn_set_ud(c, NULL);
    conn_free(k); /* every send from its buffers has completed (proto/net.h) */
}

/* ---- lifecycle ------------------------------------------------------------------------ */

lam_status_t lam_an_server_create(const lam_an_config_t *cfg, lam_an_server_t **out)
{
    lam_status_t st = check_config(cfg);
    if (st)
        return st;
    lam_an_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return LAM_ERR_NO_MEMORY;
    s->cfg = *cfg;
    snprintf(s->token, sizeof s->token, "%s", cfg->token);
    s->cfg.token = s->token;
    snprintf(s->listen_addr, sizeof s->listen_addr, "%s", cfg->listen_addr ? cfg->listen_addr : "127.0.0.1");
    s->cfg.listen_addr = s->listen_addr;
    s->n_kv = cfg->n_kv_heads / cfg->shard_count;
    s->kv_begin = cfg->shard_index * s->n_kv;
    s->group = cfg->n_heads / cfg->n_kv_heads;
    s->n_q = s->n_kv * s->group;
    s->next_owner = 1;
    s->max_msg = lam_an_max_msg(cfg);
    lam_wire_attn_t mh = max_attn(cfg, s->n_q, s->n_kv);
    s->max_seq = mh.n_seq;
    s->max_reply = max_sz(lam_wire_attn_layout(&mh, 1).total, lam_wire_error_size(LAM_WIRE_MAX_ERROR_TEXT));
    s->max_reply = max_sz(s->max_reply, sizeof(lam_wire_hdr_t) + sizeof(lam_wire_stats_t));

    s->res_seq = malloc((size_t)s->max_seq * sizeof *s->res_seq);
    if (!s->res_seq) {
        lam_an_server_destroy(s);
        return LAM_ERR_NO_MEMORY;
    }

    lam_an_exec_opts_t xo = {
        .kv = {.n_layers = cfg->n_layers, .n_kv_heads = s->n_kv, .head_dim = cfg->head_dim,
               .page_tokens = cfg->page_tokens, .dtype = cfg->kv_dtype, .capacity_bytes = cfg->kv_capacity,
               .max_ctx = cfg->max_ctx, .max_seqs = cfg->max_seqs},
        .group = s->group, .max_tokens = cfg->max_batch_tokens, .max_seqs = s->max_seq, .device = cfg->cuda_device};
    st = cfg->device == LAM_AN_DEVICE_CUDA ? lam_an_exec_cuda_create(&xo, &s->exec) : lam_an_exec_cpu_create(&xo, &s->exec);
    if (st) {
        lam_an_server_destroy(s);
        return st;
    }
    s->kv = s->exec->kv;
    lam_net_opts_t no = {.max_msg = max_sz(s->max_msg, s->max_reply),
                         .n_recv_bufs = cfg->recv_bufs ? cfg->recv_bufs : AN_DEFAULT_RECV_BUFS};
    lam_net_cbs_t cbs = {.on_accept = on_accept, .on_connect = on_connect, .on_msg = on_msg,
                         .on_close = on_close, .ud = s};
    if ((st = lam_net_create(&no, &cbs, &s->net))) {
        lam_an_server_destroy(s);
        return st;
    }
    lam_kv_stats_t ks = lam_kv_stats(s->kv);
    s->stats.pages_total = (uint64_t)ks.pages_total;
    lam_log_info("attention node: shard %d/%d, KV heads [%d, %d), %d query heads, %d layers, head_dim %d, "
                 "max %d tokens per message (%zu bytes), attention kernel %s",
                 cfg->shard_index, cfg->shard_count, s->kv_begin, s->kv_begin + s->n_kv, s->n_q, cfg->n_layers,
                 cfg->head_dim, cfg->max_batch_tokens, s->max_msg, s->exec->kernel);
    *out = s;
    return LAM_OK;
}

lam_status_t lam_an_server_listen(lam_an_server_t *s, int *bound_port)
{
    return lam_net_listen(s->net, s->listen_addr, s->cfg.port, bound_port);
}

lam_status_t lam_an_server_run(lam_an_server_t *s, volatile sig_atomic_t *stop)
{
    uint64_t last = 0;
    while (!*stop && s->fatal == LAM_OK) {
        /* between the layers of a busy compute node the next message comes
         * within microseconds: poll for a while before paying an epoll
         * wake-up (tens of microseconds) */
        if (now_ns() - last > (uint64_t)s->cfg.spin_us * 1000u)
            lam_net_wait(s->net, s->n_closing ? 20 : 1000);
        bool any = false;
        while (!*stop && s->fatal == LAM_OK && lam_net_progress(s->net) > 0)
            any = true;
        if (any)
            last = now_ns();
        if (s->n_closing)
            close_due(s);
    }
    return s->fatal;
}

void lam_an_server_destroy(lam_an_server_t *s)
{
    if (!s)
        return;
    if (s->net)
        lam_net_destroy(s->net); /* on_close for every connection: releases and frees them */
    lam_an_exec_destroy(s->exec);
    free(s->res_seq);
    free(s);
}
