#include "tests/attn_node/node_client.h"

#include "common/dtype.h"
#include "common/gguf.h"
#include "kernels/cpu/attn.h"
#include "proto/auth.h"
#include "tests/util/gguf_build.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef LAM_AN_BIN
#error "LAM_AN_BIN: path of lamina-attention-node"
#endif

#define NC_MAX_MSG (8u << 20)
#define NC_QUEUE 64

static int64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- model and environment ------------------------------------------------------ */

const char *nc_tiny_model(void)
{
    static char path[256];
    if (path[0])
        return path;
    gb_t b = {0};
    gb_bytes(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 1); /* tensors */
    gb_u64(&b, 7); /* metadata */
    gb_kv_str(&b, "general.architecture", "llama");
    gb_kv_u32(&b, "llama.block_count", NC_LAYERS);
    gb_kv_u32(&b, "llama.embedding_length", NC_HEADS * NC_HEAD_DIM);
    gb_kv_u32(&b, "llama.feed_forward_length", 128);
    gb_kv_u32(&b, "llama.attention.head_count", NC_HEADS);
    gb_kv_u32(&b, "llama.attention.head_count_kv", NC_KV_HEADS);
    gb_kv_u32(&b, "llama.context_length", NC_CTX);
    gb_tensor_info(&b, "token_embd.weight", 2, (int64_t[]){NC_HEADS * NC_HEAD_DIM, 8}, 0 /* F32 */, 0);
    gb_pad(&b, 32);
    for (int i = 0; i < NC_HEADS * NC_HEAD_DIM * 8; i++)
        gb_f32(&b, 0.01f * (float)(i % 7));
    const char *p = gb_write_tmp(&b, "attn-node-tiny");
    gb_free(&b);
    if (p)
        snprintf(path, sizeof path, "%s", p);
    return p ? path : NULL;
}

uint64_t nc_fingerprint(const char *path)
{
    lam_gguf_t *g = NULL;
    if (lam_gguf_open(path, &g, NULL, 0) != LAM_OK)
        return 0;
    uint64_t f = lam_gguf_fingerprint(g);
    lam_gguf_close(g);
    return f;
}

void nc_env(void)
{
    setenv("UCX_TLS", "tcp", 0);
    setenv("UCX_NET_DEVICES", "lo", 0);
    setenv("UCX_MM_ERROR_HANDLING", "y", 0);
    setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 0);
    setenv("LAMINA_CLUSTER_TOKEN", NC_TOKEN, 1);
}

/* ---- processes ------------------------------------------------------------------- */

static pid_t spawn(const char *const *argv, int out_fd, int err_fd)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (out_fd >= 0)
        dup2(out_fd, 1);
    if (err_fd >= 0)
        dup2(err_fd, 2);
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static int wait_exit(pid_t pid, int timeout_ms)
{
    int64_t end = ms_now() + timeout_ms;
    for (;;) {
        int ws;
        pid_t r = waitpid(pid, &ws, WNOHANG);
        if (r == pid)
            return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
        if (r < 0)
            return -1;
        if (ms_now() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &ws, 0);
            return -1;
        }
        usleep(10000);
    }
}

bool nc_node_start(nc_node_t *n, const char *model, const char *const *extra)
{
    const char *argv[64] = {LAM_AN_BIN, "--model", model, "--port", "0", "--log-level", "warn"};
    int argc = 7;
    for (int i = 0; extra && extra[i] && argc < 63; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    int p[2];
    if (pipe(p))
        return false;
    fflush(stdout);
    fflush(stderr);
    n->pid = spawn(argv, p[1], -1);
    close(p[1]);
    n->out_fd = p[0];
    n->port = -1;
    char line[512];
    size_t len = 0;
    int64_t end = ms_now() + 30000;
    while (ms_now() < end) {
        struct pollfd pf = {.fd = n->out_fd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t r = read(n->out_fd, line + len, 1);
        if (r <= 0)
            break;
        if (line[len] == '\n') {
            line[len] = '\0';
            const char *pre = "lamina-attention-node: listening on ";
            const char *colon = strrchr(line, ':');
            if (!strncmp(line, pre, strlen(pre)) && colon) {
                n->port = atoi(colon + 1);
                return n->port > 0;
            }
            len = 0;
        } else if (len < sizeof line - 2) {
            len++;
        }
    }
    printf("\n  lamina-attention-node did not start listening\n");
    kill(n->pid, SIGKILL);
    wait_exit(n->pid, 5000);
    close(n->out_fd);
    return false;
}

int nc_node_stop(nc_node_t *n)
{
    kill(n->pid, SIGTERM);
    int st = wait_exit(n->pid, 20000);
    close(n->out_fd);
    return st;
}

int nc_run(const char *const *args, char *err, size_t errlen)
{
    const char *argv[64] = {LAM_AN_BIN};
    int argc = 1;
    for (int i = 0; args[i] && argc < 63; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    int p[2];
    if (pipe(p))
        return -1;
    int devnull = open("/dev/null", O_WRONLY);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = spawn(argv, devnull, p[1]);
    close(p[1]);
    close(devnull);
    char buf[4096];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(p[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(p[0]);
    if (err && errlen)
        snprintf(err, errlen, "%s", buf);
    return wait_exit(pid, 10000);
}

/* ---- connections --------------------------------------------------------------------- */

struct nc_conn {
    lam_conn_t *c;
    bool connected, closed;
    void *q[NC_QUEUE];
    size_t qlen[NC_QUEUE];
    int head, n;
    void *last;      /* buffer of the last nc_recv_msg */
};

static lam_net_t *g_net;

static void cb_connect(void *ud, lam_conn_t *c)
{
    nc_conn_t *k = lam_conn_ud(c);
    if (k)
        k->connected = true;
}

static void cb_msg(void *ud, lam_conn_t *c, const void *buf, size_t len)
{
    nc_conn_t *k = lam_conn_ud(c);
    if (!k || k->n == NC_QUEUE)
        return;
    void *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    int i = (k->head + k->n) % NC_QUEUE;
    k->q[i] = copy;
    k->qlen[i] = len;
    k->n++;
}

static void cb_close(void *ud, lam_conn_t *c, lam_status_t why)
{
    nc_conn_t *k = lam_conn_ud(c);
    if (!k)
        return;
    k->closed = true;
    k->c = NULL;
}

bool nc_init(void)
{
    nc_env();
    if (lam_auth_init() != LAM_OK)
        return false;
    lam_net_opts_t o = {.max_msg = NC_MAX_MSG, .n_recv_bufs = 8};
    lam_net_cbs_t cbs = {.on_connect = cb_connect, .on_msg = cb_msg, .on_close = cb_close};
    return lam_net_create(&o, &cbs, &g_net) == LAM_OK;
}

void nc_shutdown(void)
{
    if (g_net)
        lam_net_destroy(g_net);
    g_net = NULL;
}

static void pump(int ms)
{
    lam_net_progress(g_net);
    lam_net_wait(g_net, ms);
    while (lam_net_progress(g_net) > 0) {
    }
}

nc_conn_t *nc_connect(int port)
{
    nc_conn_t *k = calloc(1, sizeof *k);
    if (lam_net_connect(g_net, "127.0.0.1", port, &k->c) != LAM_OK) {
        free(k);
        return NULL;
    }
    lam_conn_set_ud(k->c, k);
    int64_t end = ms_now() + 5000;
    while (!k->connected && !k->closed && ms_now() < end)
        pump(10);
    if (!k->connected || k->closed) {
        nc_free(k);
        return NULL;
    }
    return k;
}

bool nc_closed(const nc_conn_t *c) { return c->closed; }

void nc_free(nc_conn_t *k)
{
    if (!k)
        return;
    if (!k->closed && k->c) {
        lam_net_close(k->c, LAM_OK);
        int64_t end = ms_now() + 5000;
        while (!k->closed && ms_now() < end)
            pump(10);
        if (!k->closed && k->c)
            lam_conn_set_ud(k->c, NULL);
    }
    for (int i = 0; i < k->n; i++)
        free(k->q[(k->head + i) % NC_QUEUE]);
    free(k->last);
    free(k);
}

static void sent_free(void *arg, lam_status_t st) { free(arg); }

bool nc_send(nc_conn_t *k, const void *buf, size_t len)
{
    if (k->closed)
        return false;
    void *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    if (lam_net_send(k->c, copy, len, sent_free, copy) != LAM_OK) {
        free(copy);
        return false;
    }
    pump(0);
    return true;
}

bool nc_recv(nc_conn_t *k, void **buf, size_t *len, int timeout_ms)
{
    int64_t end = ms_now() + timeout_ms;
    while (!k->n && !k->closed && ms_now() < end)
        pump(10);
    if (!k->n)
        return false;
    *buf = k->q[k->head];
    *len = k->qlen[k->head];
    k->head = (k->head + 1) % NC_QUEUE;
    k->n--;
    return true;
}

bool nc_recv_msg(nc_conn_t *k, lam_msg_t *m, int timeout_ms)
{
    void *buf;
    size_t len;
    if (!nc_recv(k, &buf, &len, timeout_ms))
        return false;
    free(k->last);
    k->last = buf;
    char why[256];
    if (lam_wire_decode(buf, len, m, why, sizeof why) != LAM_OK) {
        printf("\n  reply does not decode: %s\n", why);
        return false;
    }
    return true;
}

bool nc_wait_closed(nc_conn_t *k, int timeout_ms)
{
    int64_t end = ms_now() + timeout_ms;
    while (!k->closed && ms_now() < end)
        pump(10);
    return k->closed;
}

/* ---- protocol -------------------------------------------------------------------------- */

lam_wire_hello_t nc_hello_default(uint64_t fingerprint, int shard_index, int shard_count, int kv_dtype,
                                  int act_dtype)
{
    lam_wire_hello_t h = {.caps = LAM_CAP_PREFILL_CHUNKS | LAM_CAP_STATS,
                          .max_msg = NC_MAX_MSG,
                          .model_fingerprint = fingerprint,
                          .shard_index = (uint16_t)shard_index,
                          .shard_count = (uint16_t)shard_count,
                          .kv_dtype = (uint8_t)kv_dtype,
                          .act_dtype = (uint8_t)act_dtype};
    lam_auth_nonce(h.nonce);
    return h;
}

bool nc_hello(nc_conn_t *c, const lam_wire_hello_t *h, lam_wire_challenge_t *out)
{
    uint8_t buf[256];
    size_t n = lam_wire_put_hello(buf, 1, h);
    if (!nc_send(c, buf, n))
        return false;
    lam_msg_t m;
    if (!nc_recv_msg(c, &m, 5000))
        return false;
    if (m.type != LAM_MSG_HELLO_CHALLENGE) {
        printf("\n  HELLO answered with %s\n", lam_msg_type_name(m.type));
        if (m.type == LAM_MSG_ERROR)
            printf("  error %d: %.*s\n", m.u.error.code, (int)m.u.error.msg_len, m.u.error.msg);
        return false;
    }
    *out = m.u.challenge;
    return m.tag == 1;
}

bool nc_handshake(nc_conn_t *c, const lam_wire_hello_t *h, const char *token, lam_wire_challenge_t *out)
{
    if (!nc_hello(c, h, out))
        return false;
    uint8_t mac[LAM_WIRE_MAC];
    lam_auth_mac(mac, token, "lamina-a", h->nonce, out->nonce);
    bool node_ok = lam_auth_equal(mac, out->mac);
    lam_wire_auth_t a;
    lam_auth_mac(a.mac, token, "lamina-c", out->nonce, h->nonce);
    uint8_t buf[128];
    size_t n = lam_wire_put_auth(buf, 2, &a);
    if (!nc_send(c, buf, n))
        return false;
    lam_msg_t m;
    if (!nc_recv_msg(c, &m, 5000))
        return false;
    return node_ok && m.type == LAM_MSG_HELLO_OK && m.tag == 2;
}

bool nc_expect_error_close(nc_conn_t *c, int code, bool proto_any)
{
    lam_msg_t m;
    bool ok = nc_recv_msg(c, &m, 5000);
    if (!ok) {
        printf("\n  no ERROR reply\n");
    } else if (m.type != LAM_MSG_ERROR) {
        printf("\n  got %s instead of ERROR\n", lam_msg_type_name(m.type));
        ok = false;
    } else {
        bool code_ok = m.u.error.code == code ||
                       (proto_any && (m.u.error.code == LAM_ERR_PROTO || m.u.error.code == LAM_ERR_PROTO_VERSION));
        if (!code_ok)
            printf("\n  ERROR %d (%.*s), expected %d\n", m.u.error.code, (int)m.u.error.msg_len, m.u.error.msg,
                   code);
        ok = code_ok && m.u.error.msg_len > 0;
    }
    if (!nc_wait_closed(c, 5000)) {
        printf("\n  connection not closed after the ERROR\n");
        ok = false;
    }
    return ok;
}

void *nc_attn_build(const lam_wire_attn_t *h, const lam_wire_seq_t *seq, const float *q, const float *k,
                    const float *v, uint32_t tag, size_t *len)
{
    lam_wire_attn_layout_t L = lam_wire_attn_layout(h, 0);
    if (!L.total)
        return NULL;
    uint8_t *buf = calloc(1, L.total);
    lam_wire_put_attn(buf, tag, 0, h, seq);
    size_t nq = (size_t)h->n_tok * h->n_q_heads * h->head_dim, nkv = (size_t)h->n_tok * h->n_kv_heads * h->head_dim;
    lam_convert(buf + L.q, h->dtype, q, LAM_DT_F32, nq);
    lam_convert(buf + L.k, h->dtype, k, LAM_DT_F32, nkv);
    lam_convert(buf + L.v, h->dtype, v, LAM_DT_F32, nkv);
    *len = L.total;
    return buf;
}

bool nc_stats(nc_conn_t *c, lam_wire_stats_t *out)
{
    uint8_t buf[64];
    size_t n = lam_wire_put_stats_req(buf, 77);
    lam_msg_t m;
    if (!nc_send(c, buf, n) || !nc_recv_msg(c, &m, 5000) || m.type != LAM_MSG_STATS_REPLY || m.tag != 77)
        return false;
    *out = m.u.stats;
    return true;
}
