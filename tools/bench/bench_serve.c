/* lamina-bench serve: the HTTP service under N concurrent streaming
 * clients. Starts an attention node and lamina-compute-node on loopback
 * (or uses --server HOST:PORT), sends every client's streamed completion at
 * once and measures, per request, the time to the first token (TTFT) and
 * the time per output token after it (TPOT), and over all of them the
 * generated tokens per second.
 *
 * The ceiling is the same work without HTTP: the same prompts, greedy, the
 * same token counts, through the in-process scheduler and pipeline against
 * the same attention node, timed from submission to the last token. Greedy
 * decoding makes both runs produce the same tokens, so the ratio is the
 * cost of the service itself (threads, SSE, JSON, text, and on a small
 * machine the CPU those take from the dense work). Served and in-process
 * rounds alternate, best of 3 each (1 with --quick). */
#include "common/log.h"
#include "common/proc.h"
#include "common/tokenizer.h"
#include "compute_node/backend.h"
#include "compute_node/pipeline.h"
#include "compute_node/remote.h"
#include "compute_node/sched.h"
#include "tools/bench/bench.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct sclient {
    char host[256];
    int port;
    char body[768];
    double t_send, t_first, t_last;
    int tokens;      /* from the usage chunk */
    bool ok;
} sclient_t;

/* ---- a minimal streaming HTTP client ---- */

typedef struct rd {
    int fd;
    char buf[16384];
    size_t pos, len;
} rd_t;

static int rd_getc(rd_t *r)
{
    if (r->pos == r->len) {
        struct pollfd p = {r->fd, POLLIN, 0};
        if (poll(&p, 1, 600000) <= 0)
            return -1;
        ssize_t n = recv(r->fd, r->buf, sizeof r->buf, 0);
        if (n <= 0)
            return -1;
        r->pos = 0;
        r->len = (size_t)n;
    }
    return (unsigned char)r->buf[r->pos++];
}

static int rd_line(rd_t *r, char *line, size_t cap)
{
    size_t n = 0;
    int c;
    while ((c = rd_getc(r)) >= 0 && c != '\n')
        if (n + 1 < cap)
            line[n++] = (char)c;
    if (c < 0)
        return -1;
    if (n && line[n - 1] == '\r')
        n--;
    line[n] = '\0';
    return (int)n;
}

static int dial(const char *host, int port)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, ps, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* One streamed request: the body is read chunk by chunk, event by event. */
static void *client_main(void *arg)
{
    sclient_t *c = arg;
    rd_t *r = calloc(1, sizeof *r);
    char req[2048], line[16384];
    const char *key = getenv("LAMINA_BENCH_API_KEY");
    char auth[300] = "";
    if (key)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", key);
    int n = snprintf(req, sizeof req,
                     "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Type: "
                     "application/json\r\n%sContent-Length: %zu\r\n\r\n%s", c->host, auth, strlen(c->body), c->body);
    c->t_send = lam_now_s();
    if (!r || (r->fd = dial(c->host, c->port)) < 0 || send(r->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        free(r);
        return NULL;
    }
    int status = 0;
    bool chunked = false;
    if (rd_line(r, line, sizeof line) < 0 || sscanf(line, "HTTP/1.%*d %d", &status) != 1 || status != 200)
        goto out;
    while (rd_line(r, line, sizeof line) > 0)
        chunked |= !strncasecmp(line, "Transfer-Encoding:", 18) && strstr(line, "chunked");
    /* de-chunk into events: "data: {...}" lines */
    char ev[16384];
    size_t el = 0;
    long left = 0;
    for (;;) {
        if (chunked && left == 0) {
            if (rd_line(r, line, sizeof line) < 0 || (left = strtol(line, NULL, 16)) <= 0)
                break;
        }
        int ch = rd_getc(r);
        if (ch < 0)
            break;
        if (chunked && --left == 0)
            rd_line(r, line, sizeof line); /* the chunk's CRLF */
        if (ch != '\n') {
            if (el + 1 < sizeof ev)
                ev[el++] = (char)ch;
            continue;
        }
        ev[el] = '\0';
        el = 0;
        if (strncmp(ev, "data: ", 6) != 0)
            continue;
        if (!strcmp(ev + 6, "[DONE]")) {
            c->ok = c->tokens > 0;
            break;
        }
        json_t *j = json_loads(ev + 6, 0, NULL);
        const char *text = json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text"));
        double now = lam_now_s();
        if (text && *text) {
            if (c->t_first == 0)
                c->t_first = now;
            c->t_last = now;
        }
        json_t *u = json_object_get(j, "usage");
        if (json_is_object(u))
            c->tokens = (int)json_integer_value(json_object_get(u, "completion_tokens"));
        json_decref(j);
    }
out:
    close(r->fd);
    free(r);
    return NULL;
}

/* The first model id from GET /v1/models. */
static int server_model(const char *host, int port, char *out, size_t len)
{
    const char *key = getenv("LAMINA_BENCH_API_KEY");
    char req[512], auth[300] = "";
    if (key)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", key);
    int n = snprintf(req, sizeof req, "GET /v1/models HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n", host,
                     auth);
    int fd = dial(host, port);
    if (fd < 0 || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char buf[8192];
    size_t got = 0;
    ssize_t r;
    while (got + 1 < sizeof buf && (r = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0)
        got += (size_t)r;
    close(fd);
    buf[got] = '\0';
    const char *body = strstr(buf, "\r\n\r\n");
    json_t *j = body ? json_loads(body + 4, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id"));
    if (id)
        snprintf(out, len, "%s", id);
    json_decref(j);
    return id ? 0 : -1;
}

/* ---- the ceiling: the same work through the in-process scheduler ---- */

typedef struct cnt {
    long tokens;
    int failed;
    const lam_tok_t *tok;
} cnt_t;

static void cnt_token(void *ud, int req, int32_t t)
{
    (void)req;
    (void)t;
    ((cnt_t *)ud)->tokens++;
}
static void cnt_done(void *ud, int req, lam_status_t st)
{
    (void)req;
    ((cnt_t *)ud)->failed += st != LAM_OK;
}
static bool cnt_eog(void *ud, int32_t t) { return lam_tok_is_eog(((cnt_t *)ud)->tok, t); }

typedef struct ceiling {
    lam_backend_t *be;
    lam_remote_t *r;
    lam_pipe_t *p;
    int32_t **ids;          /* [B] the prompts, tokenised as the server does */
    int *n_ids;
} ceiling_t;

static void ceiling_close(ceiling_t *c, int B)
{
    lam_pipe_destroy(c->p);
    lam_remote_destroy(c->r);
    lam_backend_destroy(c->be);
    for (int i = 0; c->ids && i < B; i++)
        free(c->ids[i]);
    free(c->ids);
    free(c->n_ids);
    memset(c, 0, sizeof *c);
}

static int ceiling_open(ceiling_t *c, const lam_model_t *m, const lam_tok_t *tok, int an_port, char **prompts, int B)
{
    memset(c, 0, sizeof *c);
    lam_remote_addr_t addr;
    snprintf(addr.host, sizeof addr.host, "127.0.0.1");
    addr.port = an_port;
    int batch = B > 256 ? B : 256;
    lam_remote_opts_t ro = {.n_nodes = 1, .addrs = &addr, .token = getenv("LAMINA_CLUSTER_TOKEN"),
                            .fingerprint = m->fingerprint, .cfg = &m->cfg, .kv_dtype = LAM_DT_F16,
                            .act_dtype = LAM_DT_F16, .max_tokens = batch, .max_seqs = B};
    lam_pipe_opts_t po = {.max_tokens = batch, .max_seqs = B};
    c->ids = calloc((size_t)B, sizeof *c->ids);
    c->n_ids = calloc((size_t)B, sizeof *c->n_ids);
    if (!c->ids || !c->n_ids || lam_backend_cpu_create(m, false, &c->be) != LAM_OK ||
        lam_remote_create(&ro, &c->r) != LAM_OK || lam_remote_wait_ready(c->r, 20000) != LAM_OK ||
        lam_pipe_create(c->be, c->r, &po, &c->p) != LAM_OK)
        return -1;
    for (int i = 0; i < B; i++) {
        size_t n = 0;
        if (lam_tok_encode(tok, prompts[i], strlen(prompts[i]), true, true, &c->ids[i], &n) != LAM_OK)
            return -1;
        c->n_ids[i] = (int)n;
    }
    return 0;
}

/* Tokens/s of the B prompts, gen greedy tokens each (end-of-generation
 * stops a sequence, as on the server), from submission to the last token. */
static double ceiling_round(ceiling_t *c, const lam_model_t *m, const lam_tok_t *tok, int B, int gen, long *tokens)
{
    int batch = B > 256 ? B : 256;
    lam_sched_opts_t so = {.max_seqs = B, .max_queue = B, .chunk = batch, .max_step_tokens = batch, .max_ctx = 2048};
    cnt_t cnt = {.tok = tok};
    lam_sched_hooks_t h = {cnt_token, cnt_done, cnt_eog, &cnt};
    lam_sched_t *s = NULL;
    lam_sampler_params_t greedy = {.temperature = 0.0f, .top_p = 1.0f};
    if (lam_sched_create(c->p, c->r, m->cfg.vocab, &so, &h, &s) != LAM_OK)
        return -1;
    double t0 = lam_now_s();
    for (int i = 0; i < B; i++)
        if (lam_sched_submit(s, c->ids[i], c->n_ids[i], gen, &greedy) < 0) {
            lam_sched_destroy(s);
            return -1;
        }
    while (lam_sched_pending(s) > 0)
        if (lam_sched_step(s) == 0)
            usleep(1000);
    double dt = lam_now_s() - t0;
    lam_sched_destroy(s);
    *tokens = cnt.tokens;
    return cnt.failed ? -1 : cnt.tokens / dt;
}

/* ---- the mode ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double q)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)(q * n + 0.999999) - 1; /* nearest rank */
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

typedef struct served {
    double tps, wall;
    long tokens;
    int ok;
    double ttft[3], tpot[3]; /* p50, p90, p99 */
} served_t;

/* All B clients at once. */
static void served_round(sclient_t *tmpl, int B, served_t *out)
{
    sclient_t *cl = calloc((size_t)B, sizeof *cl);
    pthread_t *th = calloc((size_t)B, sizeof *th);
    double *ttft = calloc((size_t)B, sizeof *ttft), *tpot = calloc((size_t)B, sizeof *tpot);
    memset(out, 0, sizeof *out);
    if (!cl || !th || !ttft || !tpot)
        goto out;
    for (int i = 0; i < B; i++) {
        cl[i] = tmpl[i];
        cl[i].t_first = cl[i].t_last = 0;
        cl[i].tokens = 0;
        cl[i].ok = false;
    }
    double t0 = lam_now_s();
    for (int i = 0; i < B; i++)
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    for (int i = 0; i < B; i++)
        pthread_join(th[i], NULL);
    out->wall = lam_now_s() - t0;
    for (int i = 0; i < B; i++) {
        if (!cl[i].ok)
            continue;
        out->tokens += cl[i].tokens;
        ttft[out->ok] = cl[i].t_first - cl[i].t_send;
        tpot[out->ok] = cl[i].tokens > 1 ? (cl[i].t_last - cl[i].t_first) / (cl[i].tokens - 1) : 0;
        out->ok++;
    }
    out->tps = out->tokens / out->wall;
    const double q[3] = {0.5, 0.9, 0.99};
    for (int k = 0; k < 3; k++) {
        out->ttft[k] = pct(ttft, out->ok, q[k]);
        out->tpot[k] = pct(tpot, out->ok, q[k]);
    }
out:
    free(cl);
    free(th);
    free(ttft);
    free(tpot);
}

int bench_serve(const bench_opts_t *o)
{
    const int B = o->quick && o->clients > 4 ? 4 : o->clients, rounds = o->quick ? 1 : 3;
    lam_gguf_t *g = NULL;
    lam_model_t *m = NULL;
    lam_tok_t *tok = NULL;
    lam_proc_t an = {0}, cn = {0};
    ceiling_t ce = {0};
    sclient_t *cl = calloc((size_t)B, sizeof *cl);
    char **prompts = calloc((size_t)B, sizeof *prompts);
    int rc = 1;
    if (!cl || !prompts || bench_open_model(o, true, &g, &m) || lam_tok_from_gguf(g, &tok) != LAM_OK)
        goto done;
    char host[256] = "127.0.0.1";
    int port = 0;
    int node_threads = bench_node_threads(o);
    if (o->server) {
        const char *colon = strrchr(o->server, ':');
        if (!colon || (port = atoi(colon + 1)) <= 0) {
            lam_log_error("bench: --server wants HOST:PORT");
            goto done;
        }
        snprintf(host, sizeof host, "%.*s", (int)(colon - o->server), o->server);
    } else {
        char an_bin[4096], cn_bin[4096], th_s[16], nth_s[16], seqs[16], batch[16];
        if (!lam_proc_sibling("lamina-attention-node", "attention_node", an_bin, sizeof an_bin) ||
            !lam_proc_sibling("lamina-compute-node", "compute_node", cn_bin, sizeof cn_bin)) {
            lam_log_error("bench: lamina-attention-node / lamina-compute-node not found next to lamina-bench");
            goto done;
        }
        setenv("LAMINA_CLUSTER_TOKEN", "bench-cluster-token-0123456789", 0);
        snprintf(th_s, sizeof th_s, "%d", o->threads);
        snprintf(nth_s, sizeof nth_s, "%d", node_threads);
        snprintf(seqs, sizeof seqs, "%d", B);
        snprintf(batch, sizeof batch, "%d", B > 256 ? B : 256);
        const char *an_args[] = {"--model", o->model, "--port", "0", "--kv-dtype", "f16", "--kv-capacity", "1G",
                                 "--threads", nth_s, "--max-batch-tokens", batch, NULL};
        if (lam_proc_start(&an, an_bin, an_args, 60.0) != 0)
            goto done;
        char attn[64];
        snprintf(attn, sizeof attn, "127.0.0.1:%d", an.port);
        const char *cn_args[] = {"--model", o->model, "--attention", attn, "--http-port", "0", "--threads", th_s,
                                 "--max-seqs", seqs, "--batch", batch, "--model-name", "bench", NULL};
        if (lam_proc_start(&cn, cn_bin, cn_args, 120.0) != 0)
            goto done;
        port = cn.port;
    }
    char model_name[256];
    if (server_model(host, port, model_name, sizeof model_name) != 0) {
        lam_log_error("bench: no model id from GET /v1/models at %s:%d", host, port);
        goto done;
    }
    for (int i = 0; i < B; i++) {
        int a = 1 + 7 * i;
        if (asprintf(&prompts[i], "Here is a list of numbers: %d, %d, %d, %d,", a, a + 1, a + 2, a + 3) < 0)
            goto done;
        snprintf(cl[i].host, sizeof cl[i].host, "%s", host);
        cl[i].port = port;
        snprintf(cl[i].body, sizeof cl[i].body,
                 "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0,\"stream\":true,"
                 "\"stream_options\":{\"include_usage\":true}}", model_name, prompts[i], o->gen);
    }
    /* warm-up: one request alone */
    sclient_t warm = cl[0];
    client_main(&warm);
    if (!warm.ok) {
        lam_log_error("bench: the server at %s:%d did not answer a streamed completion", host, port);
        goto done;
    }
    if (an.pid > 0 && ceiling_open(&ce, m, tok, an.port, prompts, B) != 0) {
        lam_log_error("bench: the in-process pipeline could not start");
        goto done;
    }
    /* served and in-process rounds alternate (the server idles meanwhile),
     * so both see the same machine; the best of each is kept */
    served_t best = {0}, r;
    double ceiling = -1;
    long ceil_tokens = 0;
    for (int k = 0; k < rounds; k++) {
        served_round(cl, B, &r);
        if (r.ok < B)
            lam_log_error("bench: %d of %d requests failed", B - r.ok, B);
        else if (r.tps > best.tps)
            best = r;
        long t = 0;
        double c = ce.p ? ceiling_round(&ce, m, tok, B, o->gen, &t) : -1;
        if (c > ceiling) {
            ceiling = c;
            ceil_tokens = t;
        }
        printf("round %d: served %.1f tok/s", k + 1, r.tps);
        printf(c > 0 ? ", in-process %.1f tok/s\n" : "\n", c);
    }
    double ratio = ceiling > 0 && best.tps > 0 ? best.tps / ceiling : 0;
    printf("HTTP serving, %d concurrent streaming clients, %d tokens each (greedy), compute %d threads, "
           "1 attention node (%d threads), UCX_TLS=%s; best of %d rounds\n", B, o->gen, o->threads, node_threads,
           getenv("UCX_TLS") ? getenv("UCX_TLS") : "(default)", rounds);
    printf("%-26s %10s %10s %10s\n", "", "p50", "p90", "p99");
    printf("%-26s %10.1f %10.1f %10.1f\n", "TTFT ms", best.ttft[0] * 1e3, best.ttft[1] * 1e3, best.ttft[2] * 1e3);
    printf("%-26s %10.1f %10.1f %10.1f\n", "TPOT ms", best.tpot[0] * 1e3, best.tpot[1] * 1e3, best.tpot[2] * 1e3);
    if (ceiling > 0)
        printf("served: %ld tokens in %.2f s = %.1f tok/s; in-process scheduler, same work: %ld tokens, %.1f tok/s; "
               "ratio %.3f\n", best.tokens, best.wall, best.tps, ceil_tokens, ceiling, ratio);
    else
        printf("served: %ld tokens in %.2f s = %.1f tok/s (no ceiling: an existing server)\n", best.tokens, best.wall,
               best.tps);
    rc = best.ok == B ? 0 : 1;
    if (rc == 0 && o->json) {
        json_t *res = json_array();
        json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:s, s:f, s:i, s:i, s:I, s:f}", "name",
                                             "serve_throughput", "metric", "tokens_per_s", "value", best.tps,
                                             "ceiling", ceiling, "ceiling_name", "in_process_scheduler", "ratio",
                                             ratio, "clients", B, "gen", o->gen, "tokens", (json_int_t)best.tokens,
                                             "wall_s", best.wall));
        json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:f, s:i}", "name", "serve_ttft", "metric",
                                             "seconds", "p50", best.ttft[0], "p90", best.ttft[1], "p99",
                                             best.ttft[2], "clients", B));
        json_array_append_new(res, json_pack("{s:s, s:s, s:f, s:f, s:f, s:i}", "name", "serve_tpot", "metric",
                                             "seconds", "p50", best.tpot[0], "p90", best.tpot[1], "p99",
                                             best.tpot[2], "clients", B));
        rc = bench_write_json(o, "serve", res);
    }
done:
    ceiling_close(&ce, B);
    if (cn.pid > 0)
        lam_proc_stop(&cn, 0);
    if (an.pid > 0)
        lam_proc_stop(&an, 0);
    for (int i = 0; prompts && i < B; i++)
        free(prompts[i]);
    free(prompts);
    free(cl);
    lam_tok_free(tok);
    lam_model_free(m);
    lam_gguf_close(g);
    return rc;
}
