/* lamina-compute-node's service under load and at its edges, with real
 * processes on loopback:
 *   - 32 concurrent streaming clients (threads), sampled with seeds: each
 *     gets exactly the text a single-client run gives with the same seed
 *     (batch composition, chunking and arrival order do not change it);
 *   - a client that disconnects mid-stream: its request is cancelled, the
 *     generation stops and the attention node's KV pages are freed;
 *   - a full server answers 429 with an error body;
 *   - SIGTERM with requests in flight: new requests get 503, a short one
 *     completes, a long one is cancelled at the drain deadline with an
 *     error event, the process exits 0 and the KV cache is empty again;
 *     systemd notifications (to a socket of ours) come in order: STATUS
 *     while loading and connecting, READY=1, STOPPING=1.
 * Under LAMINA_TEST_QUICK=1 (sanitizers) the concurrent case runs 4
 * clients and fewer tokens, and the drain lasts longer. */
#include "common/log.h"
#include "tests/serve/serve_fixture.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CLIENTS 32

static bool g_skip, g_quick;
static lam_proc_t g_an, g_cn;
static int g_port;

#define M "\"model\":\"" SF_MODEL_NAME "\""
#define KV_USED "lamina_attention_node_kv_pages_used{node=\"0\""

static const char *const TOPICS[] = {"a lighthouse", "the moon", "a cat who learns to code", "autumn rain"};

/* Streams one request and collects its text and how it ended. */
typedef struct client {
    int port, idx;
    char body[512];
    const char *path;
    char text[4096];
    char finish[32];
    int events, status;
    bool done;
} client_t;

static void *client_main(void *arg)
{
    client_t *c = arg;
    hc_stream_t *s = malloc(sizeof *s);
    c->text[0] = c->finish[0] = '\0';
    if (hc_stream_open(s, c->port, c->path, SF_AUTH, c->body, 120.0) != 0) {
        free(s);
        return NULL;
    }
    c->status = s->status;
    size_t n = 0;
    char *ev;
    while (c->status == 200 && (ev = hc_stream_event(s, 300.0))) {
        if (!strcmp(ev, "[DONE]")) {
            c->done = true;
            free(ev);
            break;
        }
        json_t *j = json_loads(ev, 0, NULL);
        free(ev);
        json_t *ch = json_array_get(json_object_get(j, "choices"), 0), *d = json_object_get(ch, "delta");
        const char *t = json_string_value(d ? json_object_get(d, "content") : json_object_get(ch, "text"));
        if (t && n + strlen(t) < sizeof c->text) {
            memcpy(c->text + n, t, strlen(t) + 1);
            n += strlen(t);
        }
        if (json_is_string(json_object_get(ch, "finish_reason")))
            snprintf(c->finish, sizeof c->finish, "%s", json_string_value(json_object_get(ch, "finish_reason")));
        if (json_object_get(j, "error"))
            snprintf(c->finish, sizeof c->finish, "error:%s",
                     json_string_value(json_object_get(json_object_get(j, "error"), "code")));
        c->events++;
        json_decref(j);
    }
    hc_stream_close(s);
    free(s);
    return NULL;
}

static void make_client(client_t *c, int i, int port, int max_tokens)
{
    memset(c, 0, sizeof *c);
    c->port = port;
    c->idx = i;
    unsigned seed = 1000u + (unsigned)i * 7919u;
    if (i % 2 == 0) {
        c->path = "/v1/chat/completions";
        snprintf(c->body, sizeof c->body,
                 "{" M ",\"messages\":[{\"role\":\"user\",\"content\":\"Tell me a short story about %s.\"}],"
                 "\"max_tokens\":%d,\"temperature\":0.9,\"top_p\":0.95,\"seed\":%u,\"stream\":true}",
                 TOPICS[(i / 2) % 4], max_tokens, seed);
    } else {
        c->path = "/v1/completions";
        snprintf(c->body, sizeof c->body,
                 "{" M ",\"prompt\":\"Here is a poem about %s:\\n\",\"max_tokens\":%d,\"temperature\":1.0,"
                 "\"seed\":%u,\"stream\":true}", TOPICS[(i / 2) % 4], max_tokens, seed);
    }
}

static void test_concurrent_clients(void)
{
    if (g_skip)
        return;
    const int n = g_quick ? 4 : MAX_CLIENTS, max_tokens = g_quick ? 4 : 16;
    client_t *single = calloc(MAX_CLIENTS, sizeof *single), *multi = calloc(MAX_CLIENTS, sizeof *multi);
    /* one at a time */
    double t0 = lam_now_s();
    for (int i = 0; i < n; i++) {
        make_client(&single[i], i, g_port, max_tokens);
        client_main(&single[i]);
        CU_ASSERT(single[i].done && single[i].status == 200);
    }
    double t_single = lam_now_s() - t0;
    /* all at once */
    pthread_t th[MAX_CLIENTS];
    t0 = lam_now_s();
    for (int i = 0; i < n; i++) {
        make_client(&multi[i], i, g_port, max_tokens);
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, client_main, &multi[i]) == 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    double t_multi = lam_now_s() - t0;
    int same = 0, completed = 0;
    for (int i = 0; i < n; i++) {
        completed += multi[i].done && multi[i].status == 200;
        bool eq = !strcmp(single[i].text, multi[i].text) && !strcmp(single[i].finish, multi[i].finish);
        if (!eq)
            printf("\n  client %d differs:\n    alone: \"%s\" (%s)\n    batched: \"%s\" (%s)", i, single[i].text,
                   single[i].finish, multi[i].text, multi[i].finish);
        same += eq;
    }
    printf("\n  %d clients: %d completed, %d identical to their single-client run; %.1f s one by one, %.1f s at "
           "once", n, completed, same, t_single, t_multi);
    printf("\n  e.g. client 0: \"%.80s\"", multi[0].text);
    CU_ASSERT_EQUAL(completed, n);
    CU_ASSERT_EQUAL(same, n);
    /* different seeds really sample differently: more distinct texts than
     * the 8 distinct prompts (needs the full run) */
    int distinct = 0;
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int k = 0; k < i && !seen; k++)
            seen = !strcmp(multi[k].text, multi[i].text);
        distinct += !seen;
    }
    printf("\n  %d distinct texts from %d requests", distinct, n);
    if (n == MAX_CLIENTS)
        CU_ASSERT(distinct > 8);
    free(single);
    free(multi);
}

/* Polls a metric until pred holds (up to timeout_s); returns the last value. */
static double wait_metric(int port, const char *series, bool (*pred)(double), double timeout_s)
{
    double v = -1, deadline = lam_now_s() + timeout_s;
    while (lam_now_s() < deadline) {
        v = sf_metric(port, series);
        if (pred(v))
            break;
        usleep(100000);
    }
    return v;
}

static bool positive(double v) { return v > 0; }
static bool zero(double v) { return v == 0; }

static void test_disconnect_cancels(void)
{
    if (g_skip)
        return;
    double g0 = sf_metric(g_port, "lamina_generation_tokens_total");
    hc_stream_t *s = malloc(sizeof *s);
    const char *body = "{" M ",\"prompt\":\"Count from one to one thousand: one, two,\",\"max_tokens\":1500,"
                       "\"temperature\":0,\"stream\":true}";
    CU_ASSERT_FATAL(hc_stream_open(s, g_port, "/v1/completions", SF_AUTH, body, 60) == 0 && s->status == 200);
    for (int i = 0; i < 3; i++)
        free(hc_stream_event(s, 60));
    double used = wait_metric(g_port, KV_USED, positive, 5);
    CU_ASSERT(used > 0);
    CU_ASSERT_EQUAL(sf_metric(g_port, "lamina_batch_size"), 1);
    hc_stream_close(s); /* the client goes away */
    free(s);
    double t0 = lam_now_s();
    double left = wait_metric(g_port, KV_USED, zero, 10);
    double batch = wait_metric(g_port, "lamina_batch_size", zero, 5);
    printf("\n  disconnect: KV pages %.0f -> %.0f within %.2f s, batch %.0f", used, left, lam_now_s() - t0, batch);
    CU_ASSERT_EQUAL(left, 0);
    CU_ASSERT_EQUAL(batch, 0);
    double g1 = sf_metric(g_port, "lamina_generation_tokens_total");
    usleep(500000);
    CU_ASSERT_EQUAL(sf_metric(g_port, "lamina_generation_tokens_total"), g1); /* nothing generates any more */
    CU_ASSERT(g1 - g0 < 1000); /* it stopped long before max_tokens */
}

/* A datagram socket standing in for systemd's notify socket. */
static int notify_open(char *path, size_t len)
{
    snprintf(path, len, "/tmp/lamina-notify-%d.sock", (int)getpid());
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Appends the messages that arrived to log ("msg|msg|..."), waiting up to
 * timeout_s for one containing `want` (NULL: just drain). */
static bool notify_read(int fd, char *log, size_t cap, const char *want, double timeout_s)
{
    double deadline = lam_now_s() + timeout_s;
    for (;;) {
        char msg[512];
        ssize_t n;
        while ((n = recv(fd, msg, sizeof msg - 1, 0)) > 0) {
            msg[n] = '\0';
            size_t l = strlen(log);
            snprintf(log + l, cap - l, "%s|", msg);
        }
        if (!want || strstr(log, want) || lam_now_s() > deadline)
            return !want || strstr(log, want);
        usleep(10000);
    }
}

/* A second compute node with two sequences and no queue: the third
 * request is refused; then SIGTERM with one short and one long request.
 * Its systemd notifications go to a socket of ours: STATUS while loading
 * and connecting, READY=1 after that, STOPPING=1 on SIGTERM. */
static void test_full_then_sigterm(void)
{
    if (g_skip)
        return;
    lam_proc_t cn;
    /* the drain must outlast the short request (sanitizers run ~15x slower) */
    const char *extra[] = {"--max-seqs", "2", "--max-queue", "0", "--drain-timeout", g_quick ? "15" : "3", NULL};
    char npath[108], nlog[4096] = "";
    int nfd = notify_open(npath, sizeof npath);
    CU_ASSERT_FATAL(nfd >= 0);
    setenv("NOTIFY_SOCKET", npath, 1);
    int started = sf_start_compute(&cn, g_an.port, extra);
    unsetenv("NOTIFY_SOCKET");
    CU_ASSERT_FATAL(started == 0);
    CU_ASSERT(notify_read(nfd, nlog, sizeof nlog, "READY=1", 10));
    const char *loading = strstr(nlog, "STATUS=Loading"), *connecting = strstr(nlog, "STATUS=Connecting"),
               *ready = strstr(nlog, "READY=1");
    printf("\n  notifications: %s", nlog);
    CU_ASSERT(loading && connecting && ready && loading < connecting && connecting < ready);
    CU_ASSERT(strstr(nlog, "STOPPING=1") == NULL);
    int port = cn.port, st, short_tokens = g_quick ? 3 : 40;
    client_t *c = calloc(2, sizeof *c);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        c[i].port = port;
        c[i].path = "/v1/completions";
        snprintf(c[i].body, sizeof c[i].body,
                 "{" M ",\"prompt\":\"Once upon a time\",\"max_tokens\":%d,\"temperature\":0,\"stream\":true}",
                 i == 0 ? 1800 : short_tokens);
    }
    /* two long requests fill it (the second one streamed here) */
    CU_ASSERT_FATAL(pthread_create(&th[0], NULL, client_main, &c[0]) == 0);
    double deadline = lam_now_s() + 60;
    while (c[0].events == 0 && lam_now_s() < deadline)
        usleep(5000);
    hc_stream_t *second = malloc(sizeof *second);
    CU_ASSERT_FATAL(hc_stream_open(second, port, "/v1/completions", SF_AUTH, c[0].body, 60) == 0);
    CU_ASSERT_EQUAL(second->status, 200);
    free(hc_stream_event(second, 60));
    /* a third is refused */
    json_t *j = sf_post(port, "/v1/completions", "{" M ",\"prompt\":\"Hi\",\"max_tokens\":2}", &st);
    CU_ASSERT_EQUAL(st, 429);
    CU_ASSERT(sf_is_error(j));
    CU_ASSERT(sf_error_code_is(j, "queue_full"));
    json_decref(j);
    hc_stream_close(second); /* gone: its place frees up */
    free(second);
    while (sf_metric(port, "lamina_batch_size") != 1 && lam_now_s() < deadline)
        usleep(20000);

    /* SIGTERM while the long one runs and a short one has started */
    CU_ASSERT_FATAL(pthread_create(&th[1], NULL, client_main, &c[1]) == 0);
    while (c[1].events == 0 && lam_now_s() < deadline + 60)
        usleep(5000);
    double t_term = lam_now_s();
    kill(cn.pid, SIGTERM);
    usleep(300000);
    j = sf_post(port, "/v1/completions", "{" M ",\"prompt\":\"Hi\",\"max_tokens\":2}", &st);
    CU_ASSERT_EQUAL(st, 503);
    CU_ASSERT(sf_is_error(j));
    json_decref(j);
    j = sf_get(port, "/health", &st);
    CU_ASSERT_EQUAL(st, 503);
    CU_ASSERT(sf_str_is(json_object_get(j, "status"), "draining"));
    json_decref(j);
    pthread_join(th[1], NULL);
    pthread_join(th[0], NULL);
    int status = sf_wait_exit(&cn, 30);
    notify_read(nfd, nlog, sizeof nlog, NULL, 0);
    CU_ASSERT(strstr(nlog, "STOPPING=1") != NULL);
    close(nfd);
    unlink(npath);
    double t_exit = lam_now_s() - t_term;
    printf("\n  SIGTERM: short request %s after %d events, long one %s after %d events; exit status %d after %.1f s",
           c[1].finish, c[1].events, c[0].finish, c[0].events,
           status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1, t_exit);
    CU_ASSERT_STRING_EQUAL(c[1].finish, "length"); /* finished within the drain time */
    CU_ASSERT(c[1].done);
    CU_ASSERT_STRING_EQUAL(c[0].finish, "error:shutting_down");
    CU_ASSERT(c[0].done);
    CU_ASSERT(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* the cancelled request's KV is free on the (shared) attention node */
    CU_ASSERT_EQUAL(wait_metric(g_port, KV_USED, zero, 10), 0);
    free(c);
}

static int suite_init(void)
{
    g_quick = getenv("LAMINA_TEST_QUICK") != NULL;
    const char *extra[] = {"--max-seqs", "32", "--ctx", "2048", NULL};
    int rc = sf_suite_start(&g_an, &g_cn, &g_skip, extra);
    g_port = g_cn.port;
    return rc;
}

static int suite_clean(void)
{
    return sf_suite_stop(&g_an, &g_cn);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("serve_load", suite_init, suite_clean);
    CU_add_test(s, "32 concurrent streams equal their single-client runs", test_concurrent_clients);
    CU_add_test(s, "client disconnect cancels and frees KV", test_disconnect_cancels);
    CU_add_test(s, "429 when full; SIGTERM drains and exits 0", test_full_then_sigterm);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
