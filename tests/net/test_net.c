/* UCX transport (proto/net.c) over loopback: echo round trips from 1 B to
 * 4 MiB, ordering, receive-pool backpressure, oversized messages, peer death
 * (a real child process killed with SIGKILL), refused connections, idle
 * sleeping, and shutdown with sends in flight.
 *
 * Servers run in their own thread (each lam_net_t is single-threaded) or are
 * pumped alternately with the client in one thread; the peer-death test runs
 * the server as a separate process (this binary re-executed with --serve).
 * UCX is pointed at loopback TCP unless the caller already set UCX_TLS etc.,
 * so UCX_TLS=sm,tcp and UCX_TLS=^cma can be tried from the environment. */
#include "common/log.h"
#include "proto/net.h"

#include <CUnit/Basic.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KiB ((size_t)1024)
#define MiB (KiB * KiB)

static char g_self[4096];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- message contents: [u32 seq][bytes from a generator seeded by seq] ---- */

static uint32_t g_salt;

static uint8_t gen_byte(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint8_t)(*s >> 24);
}

static void msg_fill(uint8_t *b, size_t len, uint32_t seq)
{
    uint64_t s = 0x9e3779b97f4a7c15ull ^ ((uint64_t)seq << 32) ^ g_salt ^ len;
    for (size_t i = 0; i < len; i++)
        b[i] = gen_byte(&s);
    if (len >= 4)
        memcpy(b, &seq, 4);
}

/* Returns the sequence number of a well-formed message, -1 otherwise. */
static int64_t msg_check(const uint8_t *b, size_t len)
{
    if (len < 4)
        return -1;
    uint32_t seq;
    memcpy(&seq, b, 4);
    uint64_t s = 0x9e3779b97f4a7c15ull ^ ((uint64_t)seq << 32) ^ g_salt ^ len;
    for (size_t i = 0; i < len; i++) {
        uint8_t v = gen_byte(&s);
        if (i >= 4 && b[i] != v)
            return -1;
    }
    return seq;
}

/* ---- a peer: callbacks and what they saw ---------------------------------- */

typedef struct peer {
    lam_net_t *net;
    int echo;        /* echo every message back */
    int check_seq;   /* messages carry seq numbers 0, 1, 2, ... */
    int slow_us;     /* sleep per message (a slow consumer) */
    int stall_on;    /* child process: "stall" message stops progress */
    atomic_int n_accepted, n_connected, n_closed, n_msgs, n_bad;
    atomic_int last_close; /* lam_status_t of the last on_close */
    atomic_int stalled;
    uint32_t next_seq;
    lam_conn_t *accepted[8];
    /* last message, copied (client side only) */
    uint8_t *last;
    size_t last_len, last_cap;
} peer_t;

static void echo_done(void *arg, lam_status_t st)
{
    free(arg);
}

static void on_accept(void *ud, lam_conn_t *c)
{
    peer_t *p = ud;
    int i = atomic_fetch_add(&p->n_accepted, 1);
    if (i < 8)
        p->accepted[i] = c;
}

static void on_connect(void *ud, lam_conn_t *c)
{
    peer_t *p = ud;
    atomic_fetch_add(&p->n_connected, 1);
}

static void on_msg(void *ud, lam_conn_t *c, const void *msg, size_t len)
{
    peer_t *p = ud;
    if (p->stall_on && len == 5 && !memcmp(msg, "stall", 5)) {
        static const char ok[] = "stalling";
        lam_net_send(c, ok, sizeof ok, NULL, NULL);
        atomic_store(&p->stalled, 1);
        return;
    }
    if (p->check_seq) {
        int64_t seq = msg_check(msg, len);
        if (seq != (int64_t)p->next_seq)
            atomic_fetch_add(&p->n_bad, 1);
        p->next_seq++;
    }
    if (p->slow_us)
        usleep((useconds_t)p->slow_us);
    if (p->echo) {
        void *copy = malloc(len);
        memcpy(copy, msg, len);
        if (lam_net_send(c, copy, len, echo_done, copy) != LAM_OK)
            free(copy);
    }
    if (p->last_cap < len) {
        free(p->last);
        p->last = malloc(len);
        p->last_cap = len;
    }
    memcpy(p->last, msg, len);
    p->last_len = len;
    atomic_fetch_add(&p->n_msgs, 1);
}

/* Per-test record of on_close order against send completions. */
static atomic_int g_sends_done, g_sends_failed, g_sends_done_at_close;

static void on_close(void *ud, lam_conn_t *c, lam_status_t why)
{
    peer_t *p = ud;
    atomic_store(&p->last_close, why);
    atomic_store(&g_sends_done_at_close, atomic_load(&g_sends_done));
    atomic_fetch_add(&p->n_closed, 1);
}

typedef struct send_rec {
    atomic_int done;
    atomic_int st;
} send_rec_t;

static void send_done(void *arg, lam_status_t st)
{
    send_rec_t *r = arg;
    atomic_store(&r->st, st);
    atomic_fetch_add(&r->done, 1);
    atomic_fetch_add(&g_sends_done, 1);
    if (st != LAM_OK)
        atomic_fetch_add(&g_sends_failed, 1);
}

static void peer_init(peer_t *p)
{
    memset(p, 0, sizeof *p);
}

static void peer_free(peer_t *p)
{
    free(p->last);
    p->last = NULL;
}

static lam_status_t peer_create(peer_t *p, size_t max_msg, int n_bufs)
{
    lam_net_opts_t o = {.max_msg = max_msg, .n_recv_bufs = n_bufs};
    lam_net_cbs_t cb = {on_accept, on_connect, on_msg, on_close, p};
    return lam_net_create(&o, &cb, &p->net);
}

/* Progress n (sleeping in lam_net_wait) until cond holds or ms pass. */
#define PUMP(n, cond, ms)                                                               \
    do {                                                                                \
        int64_t t0_ = now_ms();                                                         \
        while (!(cond) && now_ms() - t0_ < (ms)) {                                      \
            lam_net_progress(n);                                                        \
            if (!(cond))                                                                \
                lam_net_wait((n), 10);                                                  \
        }                                                                               \
    } while (0)

/* Progress two nets alternately in this thread. */
#define PUMP2(a, b, cond, ms)                                                           \
    do {                                                                                \
        int64_t t0_ = now_ms();                                                         \
        while (!(cond) && now_ms() - t0_ < (ms)) {                                      \
            lam_net_progress(a);                                                        \
            lam_net_progress(b);                                                        \
        }                                                                               \
    } while (0)

/* Records a failed check and jumps to the test's cleanup: with a server
 * thread running, CU_ASSERT_FATAL would leave it using a dead stack frame. */
#define REQUIRE(cond, label)                                                            \
    do {                                                                                \
        int ok_ = !!(cond);                                                             \
        CU_assertImplementation(ok_ ? CU_TRUE : CU_FALSE, __LINE__, #cond, __FILE__, "", \
                                CU_FALSE);                                              \
        if (!ok_)                                                                       \
            goto label;                                                                 \
    } while (0)

/* ---- a server in its own thread -------------------------------------------- */

typedef struct srv_cfg {
    const char *addr;
    size_t max_msg;
    int n_bufs;
    int echo, check_seq, slow_us;
} srv_cfg_t;

typedef struct server {
    peer_t p;
    pthread_t th;
    int running;
    atomic_int stop;
    int port;
} server_t;

static void *server_main(void *arg)
{
    server_t *s = arg;
    while (!atomic_load(&s->stop)) {
        lam_net_progress(s->p.net);
        lam_net_wait(s->p.net, 20);
    }
    lam_net_destroy(s->p.net);
    s->p.net = NULL;
    return NULL;
}

/* Returns 1 when the server listens and its thread runs. */
static int server_start(server_t *s, const srv_cfg_t *cfg)
{
    memset(s, 0, sizeof *s);
    peer_init(&s->p);
    s->p.echo = cfg->echo;
    s->p.check_seq = cfg->check_seq;
    s->p.slow_us = cfg->slow_us;
    CU_ASSERT(peer_create(&s->p, cfg->max_msg, cfg->n_bufs) == LAM_OK);
    CU_ASSERT(s->p.net && lam_net_listen(s->p.net, cfg->addr, 0, &s->port) == LAM_OK && s->port > 0);
    if (s->port > 0 && pthread_create(&s->th, NULL, server_main, s) == 0) {
        s->running = 1;
        return 1;
    }
    lam_net_destroy(s->p.net);
    s->p.net = NULL;
    return 0;
}

static void server_stop(server_t *s)
{
    if (s->running) {
        atomic_store(&s->stop, 1);
        pthread_join(s->th, NULL);
        s->running = 0;
    }
    peer_free(&s->p);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_echo_sizes(void)
{
    static const size_t sizes[] = {1, 100, 8 * KiB, 64 * KiB, 1 * MiB, 4 * MiB};
    server_t s;
    peer_t cl;
    peer_init(&cl);
    uint8_t *buf = malloc(4 * MiB);
    REQUIRE(server_start(&s, &(srv_cfg_t){.max_msg = 4 * MiB, .n_bufs = 4, .echo = 1}), out);
    REQUIRE(peer_create(&cl, 4 * MiB, 4) == LAM_OK, out);
    lam_conn_t *c = NULL;
    REQUIRE(lam_net_connect(cl.net, "127.0.0.1", s.port, &c) == LAM_OK, out);
    PUMP(cl.net, atomic_load(&cl.n_connected) == 1, 10000);
    REQUIRE(atomic_load(&cl.n_connected) == 1, out);
    CU_ASSERT(strstr(lam_conn_peer(c), "127.0.0.1:") != NULL);

    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t len = sizes[i];
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)rand();
        send_rec_t r = {0};
        int before = atomic_load(&cl.n_msgs);
        REQUIRE(lam_net_send(c, buf, len, send_done, &r) == LAM_OK, out);
        /* the callback never runs inside lam_net_send */
        CU_ASSERT(atomic_load(&r.done) == 0);
        PUMP(cl.net, atomic_load(&cl.n_msgs) > before && atomic_load(&r.done), 20000);
        CU_ASSERT(atomic_load(&r.done) == 1 && atomic_load(&r.st) == LAM_OK);
        REQUIRE(atomic_load(&cl.n_msgs) == before + 1, out);
        CU_ASSERT(cl.last_len == len && memcmp(cl.last, buf, len) == 0);
        if (cl.last_len != len || memcmp(cl.last, buf, len))
            printf("\n  echo of %zu bytes came back wrong", len);
    }

    /* API errors known at once */
    CU_ASSERT(lam_net_send(c, buf, 4 * MiB + 1, NULL, NULL) == LAM_ERR_INVALID_ARG);

    /* a local close: our on_close gets our reason, the server's says the peer left */
    lam_net_close(c, LAM_OK);
    CU_ASSERT(lam_net_send(c, buf, 1, NULL, NULL) == LAM_ERR_CONN_CLOSED);
    PUMP(cl.net, atomic_load(&cl.n_closed) == 1 && atomic_load(&s.p.n_closed) == 1, 10000);
    CU_ASSERT(atomic_load(&cl.n_closed) == 1 && atomic_load(&cl.last_close) == LAM_OK);
    CU_ASSERT(atomic_load(&s.p.n_closed) == 1 && atomic_load(&s.p.last_close) == LAM_ERR_CONN_CLOSED);
out:
    lam_net_destroy(cl.net);
    peer_free(&cl);
    server_stop(&s);
    free(buf);
}

/* Connecting by name when "localhost" means 127.0.0.1 first (IPv6 loopback
 * connections do not work with UCX 1.13's TCP transport: see test_ipv6). */
static int localhost_is_ipv4(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo("localhost", "1", &hints, &res) != 0 || !res)
        return 0;
    int v4 = res->ai_family == AF_INET;
    freeaddrinfo(res);
    return v4;
}

static void test_many_small_in_order(void)
{
    enum { N = 1000 };
    static uint8_t bufs[N][256];
    static send_rec_t recs[N];
    memset(recs, 0, sizeof recs);
    server_t s;
    peer_t cl;
    peer_init(&cl);
    cl.check_seq = 1;
    REQUIRE(server_start(&s, &(srv_cfg_t){.max_msg = 64 * KiB, .n_bufs = 4, .echo = 1, .check_seq = 1}), out);
    REQUIRE(peer_create(&cl, 64 * KiB, 4) == LAM_OK, out);
    lam_conn_t *c = NULL;
    REQUIRE(lam_net_connect(cl.net, localhost_is_ipv4() ? "localhost" : "127.0.0.1", s.port, &c) == LAM_OK, out);
    /* sent before the connection is up: they queue inside UCX */
    for (uint32_t i = 0; i < N; i++) {
        size_t len = 4 + (size_t)(rand() % 250);
        msg_fill(bufs[i], len, i);
        REQUIRE(lam_net_send(c, bufs[i], len, send_done, &recs[i]) == LAM_OK, out);
    }
    PUMP(cl.net, atomic_load(&cl.n_msgs) == N, 20000);
    CU_ASSERT(atomic_load(&cl.n_connected) == 1);
    CU_ASSERT(atomic_load(&cl.n_msgs) == N && atomic_load(&cl.n_bad) == 0);
    PUMP(cl.net, atomic_load(&s.p.n_msgs) == N, 5000); /* the server counts after echoing */
    CU_ASSERT(atomic_load(&s.p.n_msgs) == N && atomic_load(&s.p.n_bad) == 0);
    CU_ASSERT(lam_net_flush(cl.net, 5000) == LAM_OK);
    int ok = 0;
    for (int i = 0; i < N; i++)
        ok += atomic_load(&recs[i].done) == 1 && atomic_load(&recs[i].st) == LAM_OK;
    CU_ASSERT(ok == N);
out:
    lam_net_destroy(cl.net);
    peer_free(&cl);
    server_stop(&s);
}

/* n_recv_bufs = 2 and a slow consumer: the sender gets ahead by n messages,
 * which wait inside UCX (rendezvous descriptors or held eager data) and are
 * all delivered in order. */
static void run_backpressure(size_t len, int n, int slow_us)
{
    server_t s;
    peer_t cl;
    peer_init(&cl);
    uint8_t *bufs = malloc((size_t)n * len);
    send_rec_t *recs = calloc((size_t)n, sizeof *recs);
    REQUIRE(server_start(&s, &(srv_cfg_t){.max_msg = len, .n_bufs = 2, .check_seq = 1, .slow_us = slow_us}),
            out);
    REQUIRE(peer_create(&cl, len, 2) == LAM_OK, out);
    lam_conn_t *c = NULL;
    REQUIRE(lam_net_connect(cl.net, "127.0.0.1", s.port, &c) == LAM_OK, out);
    PUMP(cl.net, atomic_load(&cl.n_connected) == 1, 10000);
    REQUIRE(atomic_load(&cl.n_connected) == 1, out);
    for (int i = 0; i < n; i++) {
        msg_fill(bufs + (size_t)i * len, len, (uint32_t)i);
        REQUIRE(lam_net_send(c, bufs + (size_t)i * len, len, send_done, &recs[i]) == LAM_OK, out);
    }
    PUMP(cl.net, atomic_load(&s.p.n_msgs) == n, 60000);
    CU_ASSERT(atomic_load(&s.p.n_msgs) == n);
    CU_ASSERT(atomic_load(&s.p.n_bad) == 0);
    CU_ASSERT(lam_net_flush(cl.net, 10000) == LAM_OK);
    int ok = 0;
    for (int i = 0; i < n; i++)
        ok += atomic_load(&recs[i].done) == 1 && atomic_load(&recs[i].st) == LAM_OK;
    CU_ASSERT(ok == n);
out:
    lam_net_destroy(cl.net);
    peer_free(&cl);
    server_stop(&s);
    free(bufs);
    free(recs);
}

static void test_backpressure(void)
{
    run_backpressure(1024 * KiB, 50, 2000); /* rendezvous: above LAM_NET_RNDV_THRESH */
    run_backpressure(4 * KiB, 500, 200);   /* eager */
}

/* Sends stderr to a temporary file until capture_stderr_end, which echoes
 * it and returns the text (malloc'd). */
static char *capture_stderr_begin(int *saved)
{
    fflush(stderr);
    *saved = dup(2);
    char *path = strdup("/tmp/lamina_net_stderr_XXXXXX");
    int fd = mkstemp(path);
    dup2(fd, 2);
    close(fd);
    return path;
}

static char *capture_stderr_end(int saved, char *path)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "r");
    char *text = calloc(1, 1 << 16);
    if (f) {
        size_t k = fread(text, 1, (1 << 16) - 1, f);
        text[k] = 0;
        fclose(f);
    }
    unlink(path);
    free(path);
    fputs(text, stderr);
    return text;
}

static void test_oversized_closes_only_that_connection(void)
{
    server_t s;
    peer_t cl;
    peer_init(&cl);
    uint8_t *big = malloc(1 * MiB);
    msg_fill(big, 1 * MiB, 7);
    REQUIRE(server_start(&s, &(srv_cfg_t){.max_msg = 4 * KiB, .n_bufs = 4, .echo = 1}), out);
    REQUIRE(peer_create(&cl, 2 * MiB, 4) == LAM_OK, out);
    lam_conn_t *a = NULL, *b = NULL, *r = NULL;
    REQUIRE(lam_net_connect(cl.net, "127.0.0.1", s.port, &a) == LAM_OK, out);
    REQUIRE(lam_net_connect(cl.net, "127.0.0.1", s.port, &b) == LAM_OK, out);
    REQUIRE(lam_net_connect(cl.net, "127.0.0.1", s.port, &r) == LAM_OK, out);
    PUMP(cl.net, atomic_load(&cl.n_connected) == 3, 10000);
    REQUIRE(atomic_load(&cl.n_connected) == 3, out);

    int saved;
    char *path = capture_stderr_begin(&saved);
    send_rec_t ra = {0}, rr = {0};
    /* a: 8 KiB (eager on loopback), r: 1 MiB (rendezvous); both above the server's 4 KiB */
    CU_ASSERT(lam_net_send(a, big, 8 * KiB, send_done, &ra) == LAM_OK);
    CU_ASSERT(lam_net_send(r, big, 1 * MiB, send_done, &rr) == LAM_OK);
    PUMP(cl.net, atomic_load(&s.p.n_closed) == 2 && atomic_load(&cl.n_closed) == 2, 10000);
    char *text = capture_stderr_end(saved, path);
    CU_ASSERT(atomic_load(&s.p.n_closed) == 2 && atomic_load(&s.p.last_close) == LAM_ERR_PROTO);
    CU_ASSERT(atomic_load(&cl.n_closed) == 2);
    CU_ASSERT(atomic_load(&ra.done) == 1 && atomic_load(&rr.done) == 1);
    CU_ASSERT(atomic_load(&rr.st) != LAM_OK); /* the server refused the rendezvous */
    CU_ASSERT(strstr(text, "more than max_msg") != NULL);
    free(text);

    /* b still works */
    uint8_t small[1000];
    msg_fill(small, sizeof small, 1);
    int before = atomic_load(&cl.n_msgs);
    REQUIRE(lam_net_send(b, small, sizeof small, NULL, NULL) == LAM_OK, out);
    PUMP(cl.net, atomic_load(&cl.n_msgs) == before + 1, 10000);
    CU_ASSERT(atomic_load(&cl.n_msgs) == before + 1 && cl.last_len == sizeof small &&
              memcmp(cl.last, small, sizeof small) == 0);
    CU_ASSERT(atomic_load(&cl.n_closed) == 2);
out:
    lam_net_destroy(cl.net);
    peer_free(&cl);
    server_stop(&s);
    free(big);
}

/* The child side of test_peer_death: an echo server that stops progressing
 * (without exiting) after a "stall" message. */
static int child_serve(int port_fd)
{
    peer_t p;
    peer_init(&p);
    p.echo = 1;
    p.stall_on = 1;
    if (peer_create(&p, 4 * MiB, 4) != LAM_OK)
        return 1;
    int port = 0;
    if (lam_net_listen(p.net, NULL, 0, &port) != LAM_OK)
        return 1;
    if (write(port_fd, &port, sizeof port) != (ssize_t)sizeof port)
        return 1;
    close(port_fd);
    while (!atomic_load(&p.stalled)) {
        lam_net_progress(p.net);
        lam_net_wait(p.net, 100);
    }
    lam_net_flush(p.net, 1000);
    for (;;)
        pause();
}

/* Starts this binary as "--serve" in a child process; returns its pid and
 * its listening port, or -1. */
static pid_t spawn_child_server(int *port)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        char fdstr[16];
        snprintf(fdstr, sizeof fdstr, "%d", fds[1]);
        execl(g_self, g_self, "--serve", fdstr, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    *port = 0;
    struct pollfd pf = {.fd = fds[0], .events = POLLIN};
    if (pid < 0 || poll(&pf, 1, 20000) != 1 || read(fds[0], port, sizeof *port) != (ssize_t)sizeof *port ||
        *port <= 0) {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        pid = -1;
    }
    close(fds[0]);
    return pid;
}

static void test_peer_death(void)
{
    enum { NS = 4 };
    server_t s = {0};
    peer_t cl;
    peer_init(&cl);
    uint8_t *big = malloc(1 * MiB);
    msg_fill(big, 1 * MiB, 9);
    send_rec_t recs[NS];
    memset(recs, 0, sizeof recs);
    uint8_t hello[100];
    msg_fill(hello, sizeof hello, 3);
    int port = 0;
    pid_t pid = spawn_child_server(&port);
    REQUIRE(pid > 0, out);
    REQUIRE(peer_create(&cl, 4 * MiB, 4) == LAM_OK, out);
    lam_conn_t *c = NULL;
    REQUIRE(lam_net_connect(cl.net, "127.0.0.1", port, &c) == LAM_OK, out);
    PUMP(cl.net, atomic_load(&cl.n_connected) == 1, 10000);
    REQUIRE(atomic_load(&cl.n_connected) == 1, out);
    CU_ASSERT(lam_net_send(c, hello, sizeof hello, NULL, NULL) == LAM_OK);
    PUMP(cl.net, atomic_load(&cl.n_msgs) == 1, 10000);
    CU_ASSERT(atomic_load(&cl.n_msgs) == 1 && cl.last_len == sizeof hello && !memcmp(cl.last, hello, sizeof hello));

    /* stop the child's progress, then queue rendezvous sends it never takes */
    CU_ASSERT(lam_net_send(c, "stall", 5, NULL, NULL) == LAM_OK);
    PUMP(cl.net, atomic_load(&cl.n_msgs) == 2, 10000);
    REQUIRE(atomic_load(&cl.n_msgs) == 2 && !strcmp((const char *)cl.last, "stalling"), out);
    atomic_store(&g_sends_done, 0);
    for (int i = 0; i < NS; i++)
        CU_ASSERT(lam_net_send(c, big, 1 * MiB, send_done, &recs[i]) == LAM_OK);
    PUMP(cl.net, 0, 300);
    CU_ASSERT(atomic_load(&g_sends_done) == 0);

    CU_ASSERT(kill(pid, SIGKILL) == 0);
    int64_t t0 = now_ms();
    PUMP(cl.net, atomic_load(&cl.n_closed) == 1, 10000);
    int64_t dt = now_ms() - t0;
    printf("\n  on_close %lld ms after SIGKILL ", (long long)dt);
    CU_ASSERT(atomic_load(&cl.n_closed) == 1);
    CU_ASSERT(atomic_load(&cl.last_close) == LAM_ERR_CONN_CLOSED);
    CU_ASSERT(dt < 2000); /* functional deadline: peer death is noticed promptly */
    /* every pending send completed with an error, before on_close */
    CU_ASSERT(atomic_load(&g_sends_done_at_close) == NS);
    for (int i = 0; i < NS; i++)
        CU_ASSERT(atomic_load(&recs[i].done) == 1 && atomic_load(&recs[i].st) != LAM_OK);

    /* the same client connects to a new server on a new port */
    REQUIRE(server_start(&s, &(srv_cfg_t){.max_msg = 4 * MiB, .n_bufs = 4, .echo = 1}), out);
    CU_ASSERT(s.port != port);
    lam_conn_t *c2 = NULL;
    REQUIRE(lam_net_connect(cl.net, "127.0.0.1", s.port, &c2) == LAM_OK, out);
    PUMP(cl.net, atomic_load(&cl.n_connected) == 2, 10000);
    REQUIRE(atomic_load(&cl.n_connected) == 2, out);
    CU_ASSERT(lam_net_send(c2, hello, sizeof hello, NULL, NULL) == LAM_OK);
    PUMP(cl.net, atomic_load(&cl.n_msgs) == 3, 10000);
    CU_ASSERT(atomic_load(&cl.n_msgs) == 3 && cl.last_len == sizeof hello && !memcmp(cl.last, hello, sizeof hello));
out:
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    lam_net_destroy(cl.net);
    peer_free(&cl);
    server_stop(&s);
    free(big);
}

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    int ok = fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &l);
    if (fd >= 0)
        close(fd);
    return ok ? ntohs(a.sin_port) : -1;
}

static int closed_port6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    socklen_t l = sizeof a;
    int ok = fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &l);
    if (fd >= 0)
        close(fd);
    return ok ? ntohs(a.sin6_port) : -1;
}

static int have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* IPv6 addresses resolve for listening and connecting. No data crosses an
 * IPv6 loopback connection here: UCX 1.13's TCP transport mishandles it (the
 * server's data-lane connect reads past a heap buffer in ucs_sockaddr_str and
 * dials ::1 at the port of its IPv4 interface), so the client side is checked
 * against a port with no listener. */
static void test_ipv6(void)
{
    if (!have_ipv6_loopback()) {
        printf("\n  no IPv6 loopback here: skipped ");
        return;
    }
    peer_t sv, cl;
    peer_init(&sv);
    peer_init(&cl);
    int port = 0;
    REQUIRE(peer_create(&sv, 64 * KiB, 2) == LAM_OK && peer_create(&cl, 64 * KiB, 2) == LAM_OK, out);
    REQUIRE(lam_net_listen(sv.net, "::1", 0, &port) == LAM_OK && port > 0, out);
    CU_ASSERT(lam_net_listen(sv.net, "::1", 0, &port) == LAM_ERR_INVALID_ARG); /* one listener */
    int closed = closed_port6();
    REQUIRE(closed > 0, out);
    lam_conn_t *c = NULL;
    REQUIRE(lam_net_connect(cl.net, "::1", closed, &c) == LAM_OK, out);
    CU_ASSERT(strncmp(lam_conn_peer(c), "[::1]:", 6) == 0);
    PUMP(cl.net, atomic_load(&cl.n_closed) == 1, 10000);
    CU_ASSERT(atomic_load(&cl.n_closed) == 1 && atomic_load(&cl.n_connected) == 0);
out:
    lam_net_destroy(cl.net);
    lam_net_destroy(sv.net);
    peer_free(&cl);
    peer_free(&sv);
}

static void test_connect_refused(void)
{
    peer_t cl;
    peer_init(&cl);
    REQUIRE(peer_create(&cl, 64 * KiB, 2) == LAM_OK, out);
    int port = closed_port();
    REQUIRE(port > 0, out);
    lam_conn_t *c = NULL;
    int64_t t0 = now_ms();
    REQUIRE(lam_net_connect(cl.net, "127.0.0.1", port, &c) == LAM_OK, out);
    send_rec_t r = {0};
    uint8_t m[10] = {0};
    CU_ASSERT(lam_net_send(c, m, sizeof m, send_done, &r) == LAM_OK);
    PUMP(cl.net, atomic_load(&cl.n_closed) == 1, 10000);
    printf("\n  refused after %lld ms ", (long long)(now_ms() - t0));
    CU_ASSERT(atomic_load(&cl.n_closed) == 1 && atomic_load(&cl.last_close) != LAM_OK);
    CU_ASSERT(atomic_load(&cl.n_connected) == 0);
    CU_ASSERT(atomic_load(&r.done) == 1 && atomic_load(&r.st) != LAM_OK);
    /* an unresolvable name fails at once */
    CU_ASSERT(lam_net_connect(cl.net, "no-such-host.invalid", 1, &c) == LAM_ERR_NET);
out:
    lam_net_destroy(cl.net);
    peer_free(&cl);
}

static void *write_eventfd_later(void *arg)
{
    usleep(50000);
    uint64_t one = 1;
    if (write(*(int *)arg, &one, sizeof one) != sizeof one)
        abort();
    return NULL;
}

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3 + ru.ru_stime.tv_sec * 1e3 +
           ru.ru_stime.tv_usec / 1e3;
}

/* Two nets pumped alternately in this thread (no server thread). */
static int pair_connect(peer_t *sv, peer_t *cl, size_t max_msg, lam_conn_t **c)
{
    int port = 0;
    if (peer_create(sv, max_msg, 2) != LAM_OK || peer_create(cl, max_msg, 2) != LAM_OK ||
        lam_net_listen(sv->net, "", 0, &port) != LAM_OK || lam_net_connect(cl->net, "127.0.0.1", port, c) != LAM_OK)
        return 0;
    PUMP2(cl->net, sv->net, atomic_load(&cl->n_connected) == 1 && atomic_load(&sv->n_accepted) == 1, 10000);
    return atomic_load(&cl->n_connected) == 1 && atomic_load(&sv->n_accepted) == 1;
}

static void test_wait_sleeps(void)
{
    peer_t sv, cl;
    peer_init(&sv);
    peer_init(&cl);
    int efd = -1;
    lam_conn_t *c = NULL;
    REQUIRE(pair_connect(&sv, &cl, 64 * KiB, &c), out);
    PUMP2(cl.net, sv.net, 0, 200); /* let wireup settle */

    /* idle: one wait sleeps for (nearly) its whole timeout and burns little CPU */
    while (lam_net_progress(cl.net) > 0)
        ;
    double c0 = cpu_ms();
    int64_t t0 = now_ms();
    CU_ASSERT(lam_net_wait(cl.net, 200) == LAM_OK);
    int64_t dt = now_ms() - t0;
    double cpu = cpu_ms() - c0;
    printf("\n  idle wait: %lld ms wall, %.1f ms cpu ", (long long)dt, cpu);
    CU_ASSERT(dt >= 150);
    CU_ASSERT(cpu < 50);

    /* a watched fd ends the wait */
    efd = eventfd(0, EFD_CLOEXEC);
    REQUIRE(efd >= 0, out);
    CU_ASSERT(lam_net_watch_fd(cl.net, efd) == LAM_OK);
    pthread_t th;
    while (lam_net_progress(cl.net) > 0)
        ;
    t0 = now_ms();
    REQUIRE(pthread_create(&th, NULL, write_eventfd_later, &efd) == 0, out);
    CU_ASSERT(lam_net_wait(cl.net, 5000) == LAM_OK);
    dt = now_ms() - t0;
    pthread_join(th, NULL);
    CU_ASSERT(dt < 2000);

    /* a message from the peer ends the wait too */
    uint8_t m[64];
    msg_fill(m, sizeof m, 5);
    CU_ASSERT(lam_net_send(sv.accepted[0], m, sizeof m, NULL, NULL) == LAM_OK);
    lam_net_progress(sv.net);
    t0 = now_ms();
    PUMP(cl.net, atomic_load(&cl.n_msgs) == 1, 5000);
    CU_ASSERT(atomic_load(&cl.n_msgs) == 1);
    CU_ASSERT(now_ms() - t0 < 2000);

    /* graceful close: both sides hear of it */
    lam_net_close(c, LAM_OK);
    PUMP2(cl.net, sv.net, atomic_load(&cl.n_closed) == 1 && atomic_load(&sv.n_closed) == 1, 10000);
    CU_ASSERT(atomic_load(&cl.n_closed) == 1 && atomic_load(&sv.n_closed) == 1);
out:
    if (efd >= 0)
        close(efd);
    lam_net_destroy(cl.net);
    lam_net_destroy(sv.net);
    peer_free(&cl);
    peer_free(&sv);
}

/* Destroy with rendezvous sends in flight to a peer that is not progressing:
 * every send completes (with an error) before on_close, nothing leaks, and
 * the peer then sees the connection close. */
static void test_shutdown_with_sends_in_flight(void)
{
    enum { NS = 6 };
    peer_t sv, cl;
    peer_init(&sv);
    peer_init(&cl);
    uint8_t *big = malloc(1 * MiB);
    msg_fill(big, 1 * MiB, 11);
    send_rec_t recs[NS + 1];
    memset(recs, 0, sizeof recs);
    lam_conn_t *c = NULL;
    REQUIRE(pair_connect(&sv, &cl, 1 * MiB, &c), out);
    atomic_store(&g_sends_done, 0);
    for (int i = 0; i < NS; i++)
        CU_ASSERT(lam_net_send(c, big, 1 * MiB, send_done, &recs[i]) == LAM_OK);
    CU_ASSERT(lam_net_send(c, big, 100, send_done, &recs[NS]) == LAM_OK);
    int64_t t0 = now_ms();
    lam_net_destroy(cl.net); /* the server is not progressed meanwhile */
    cl.net = NULL;
    printf("\n  destroy took %lld ms ", (long long)(now_ms() - t0));
    CU_ASSERT(atomic_load(&cl.n_closed) == 1);
    CU_ASSERT(atomic_load(&g_sends_done_at_close) == NS + 1);
    int failed = 0;
    for (int i = 0; i <= NS; i++) {
        CU_ASSERT(atomic_load(&recs[i].done) == 1);
        failed += atomic_load(&recs[i].st) != LAM_OK;
    }
    CU_ASSERT(failed >= NS); /* at least the rendezvous sends the server never took */
    PUMP(sv.net, atomic_load(&sv.n_closed) == 1, 10000);
    CU_ASSERT(atomic_load(&sv.n_closed) == 1);
out:
    lam_net_destroy(cl.net);
    lam_net_destroy(sv.net);
    free(big);
    peer_free(&cl);
    peer_free(&sv);
}

/* A graceful close waits for the peer's disconnect reply; destroying while a
 * stalled peer still owes it finishes within the shutdown bound anyway, with
 * one on_close. */
static void test_destroy_during_graceful_close(void)
{
    peer_t sv, cl;
    peer_init(&sv);
    peer_init(&cl);
    lam_conn_t *c = NULL;
    REQUIRE(pair_connect(&sv, &cl, 64 * KiB, &c), out);
    uint8_t m[3000];
    msg_fill(m, sizeof m, 2);
    send_rec_t r = {0};
    CU_ASSERT(lam_net_send(c, m, sizeof m, send_done, &r) == LAM_OK);
    lam_net_close(c, LAM_ERR_PROTO);
    PUMP(cl.net, 0, 100); /* the server does not answer */
    int64_t t0 = now_ms();
    lam_net_destroy(cl.net);
    cl.net = NULL;
    printf("\n  destroy took %lld ms ", (long long)(now_ms() - t0));
    CU_ASSERT(atomic_load(&r.done) == 1);
    CU_ASSERT(atomic_load(&cl.n_closed) == 1 && atomic_load(&cl.last_close) == LAM_ERR_PROTO);
    PUMP(sv.net, atomic_load(&sv.n_closed) == 1, 10000);
    CU_ASSERT(atomic_load(&sv.n_closed) == 1);
out:
    lam_net_destroy(cl.net);
    lam_net_destroy(sv.net);
    peer_free(&cl);
    peer_free(&sv);
}

int main(int argc, char **argv)
{
    /* Loopback TCP unless the caller chose otherwise. UCX reads
     * UCX_WARN_UNUSED_ENV_VARS when the library loads, before main, so the
     * first run sets the environment and re-executes itself. */
    if (!getenv("UCX_WARN_UNUSED_ENV_VARS")) {
        setenv("UCX_TLS", "tcp", 0);
        setenv("UCX_NET_DEVICES", "lo", 0);
        setenv("UCX_MM_ERROR_HANDLING", "y", 0);
        setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 0);
        execv("/proc/self/exe", argv);
        perror("re-executing with the UCX environment");
    }
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && !strcmp(argv[1], "--serve"))
        return child_serve(atoi(argv[2]));

    ssize_t k = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (k <= 0)
        return 1;
    g_self[k] = 0;
    unsigned seed = (unsigned)time(NULL);
    const char *se = getenv("LAMINA_TEST_SEED");
    if (se)
        seed = (unsigned)strtoul(se, NULL, 10);
    srand(seed);
    g_salt = seed;
    printf("seed %u, UCX_TLS=%s\n", seed, getenv("UCX_TLS"));

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("net", NULL, NULL);
    CU_add_test(s, "echo_sizes", test_echo_sizes);
    CU_add_test(s, "many_small_in_order", test_many_small_in_order);
    CU_add_test(s, "backpressure", test_backpressure);
    CU_add_test(s, "oversized_closes_only_that_connection", test_oversized_closes_only_that_connection);
    CU_add_test(s, "peer_death", test_peer_death);
    CU_add_test(s, "ipv6", test_ipv6);
    CU_add_test(s, "connect_refused", test_connect_refused);
    CU_add_test(s, "wait_sleeps", test_wait_sleeps);
    CU_add_test(s, "shutdown_with_sends_in_flight", test_shutdown_with_sends_in_flight);
    CU_add_test(s, "destroy_during_graceful_close", test_destroy_during_graceful_close);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
