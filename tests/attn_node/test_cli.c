/* lamina-attention-node's configuration: every bad value (command line,
 * config file, environment) exits 2 with one line naming the problem and
 * its source; --help and --print-config exit 0; the file < environment <
 * command line precedence reaches the running node; a missing model exits
 * 1; a clean SIGTERM exits 0; under a stand-in for systemd it reports
 * STATUS, READY=1 once it serves and STOPPING=1 on SIGTERM. */
#include "tests/attn_node/node_client.h"

#include "common/dtype.h"

#include <CUnit/Basic.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char *g_model;

static void test_bad_values(void)
{
    static const struct {
        const char *args[6];
        const char *expect; /* in stderr, which is that one line unless noted */
    } cases[] = {
        {{"--port", "x"}, "--port"},
        {{"--port", "65536"}, "--port"},
        {{"--port", "-1"}, "--port"},
        {{"--shard", "2/2"}, "--shard"},
        {{"--shard", "1"}, "--shard"},
        {{"--shard", "0/0"}, "--shard"},
        {{"--shard", "a/b"}, "--shard"},
        {{"--kv-dtype", "q4_0"}, "--kv-dtype"},
        {{"--kv-capacity", "0"}, "--kv-capacity"},
        {{"--kv-capacity", "12Q"}, "--kv-capacity"},
        {{"--kv-capacity", "G"}, "--kv-capacity"},
        {{"--kv-capacity", "99999999999T"}, "--kv-capacity"},
        {{"--page-tokens", "0"}, "--page-tokens"},
        {{"--max-ctx", "0"}, "--max-ctx"},
        {{"--max-seqs", "-3"}, "--max-seqs"},
        {{"--max-batch-tokens", "0"}, "--max-batch-tokens"},
        {{"--max-batch-tokens", "70000"}, "--max-batch-tokens"},
        {{"--threads", "0"}, "--threads"},
        {{"--log-level", "loud"}, "--log-level"},
        {{"--bogus"}, "unknown option"},
        {{"--port"}, "needs a value"},
        {{"extra"}, "unexpected argument"},
        {{"--shard", "1/3"}, "do not divide"},  /* 3 shards, 2 KV heads */
        {{"--kv-capacity", "1K"}, "holds no page"}, /* a page of the tiny model is 4 KiB in f16 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[10] = {"--model", g_model};
        int n = 2;
        for (int j = 0; cases[i].args[j]; j++)
            argv[n++] = cases[i].args[j];
        argv[n] = NULL;
        char err[512];
        int rc = nc_run(argv, err, sizeof err);
        /* the last two are found after the model is read, among log lines */
        bool one_line = i + 2 < sizeof cases / sizeof cases[0] && strchr(err, '\n') == err + strlen(err) - 1;
        bool ok = rc == 2 && strstr(err, cases[i].expect) &&
                  (one_line || i + 2 >= sizeof cases / sizeof cases[0]);
        if (!ok)
            printf("\n  %s %s: exit %d, stderr '%s'\n", cases[i].args[0], cases[i].args[1] ? cases[i].args[1] : "",
                   rc, err);
        CU_ASSERT(ok);
    }
}

static void test_token_and_model(void)
{
    char err[512];
    /* no token at all */
    unsetenv("LAMINA_CLUSTER_TOKEN");
    CU_ASSERT(nc_run((const char *[]){"--model", g_model, NULL}, err, sizeof err) == 2);
    CU_ASSERT(strstr(err, "token") != NULL);
    /* a token file with a short token */
    char path[] = "/tmp/lamina-an-token-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, "short\n", 6) == 6);
    close(fd);
    CU_ASSERT(nc_run((const char *[]){"--model", g_model, "--token-file", path, NULL}, err, sizeof err) == 2);
    CU_ASSERT(strstr(err, "too short") != NULL);
    unlink(path);
    CU_ASSERT(nc_run((const char *[]){"--model", g_model, "--token-file", path, NULL}, err, sizeof err) == 2);
    nc_env();
    /* a model that is not there */
    CU_ASSERT(nc_run((const char *[]){"--model", "/nonexistent/model.gguf", NULL}, err, sizeof err) == 1);
    CU_ASSERT(strstr(err, "/nonexistent/model.gguf") != NULL);
    CU_ASSERT(nc_run((const char *[]){"--help", NULL}, NULL, 0) == 0);
    CU_ASSERT(nc_run((const char *[]){"--print-config", NULL}, NULL, 0) == 0);
}

static const char *write_conf(char *path, size_t len, const char *text)
{
    snprintf(path, len, "/tmp/lamina-an-conf-XXXXXX");
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* Exit 2, one line on stderr, containing every string in expect. */
static void expect_exit_2(const char *what, const char *const *args, const char *const *expect)
{
    char err[1024];
    int rc = nc_run(args, err, sizeof err);
    bool ok = rc == 2 && strchr(err, '\n') == err + strlen(err) - 1;
    for (int i = 0; expect[i]; i++)
        ok = ok && strstr(err, expect[i]);
    if (!ok)
        printf("\n  %s: exit %d, stderr '%s'\n", what, rc, err);
    CU_ASSERT(ok);
}

static void test_config_file_errors(void)
{
    static const struct {
        const char *text;
        const char *where; /* ":LINE:" */
        const char *quoted, *reason;
    } cases[] = {
        {"# node 0\nport = 7401\nkv-capacity = 12Q\n", ":3:", "'12Q'", "not a size"},
        {"kv-capcity = 1G\n", ":1:", "'kv-capcity'", "did you mean 'kv-capacity'?"},
        {"shard = 2/2\n", ":1:", "'2/2'", "not a shard"},
        {"port = 1\nport = 2\n", ":2:", "'port'", "set twice, first on line 1"},
        {"listen 0.0.0.0\n", ":1:", "'listen 0.0.0.0'", "missing '='"},
        {"model = \"/x.gguf\n", ":1:", "'\"/x.gguf'", "unterminated quote"},
        {"kv-dtype = q8_0\n", ":1:", "'q8_0'", "not one of: f16, bf16, f32"},
        {"max-batch-tokens = 70000\n", ":1:", "'70000'", "must be 1 to 65536"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[64], where[128];
        write_conf(path, sizeof path, cases[i].text);
        snprintf(where, sizeof where, "%s%s", path, cases[i].where);
        expect_exit_2(cases[i].text, (const char *[]){"--model", g_model, "--config", path, NULL},
                      (const char *[]){where, cases[i].quoted, cases[i].reason, NULL});
        /* the same file named by LAMINA_CONFIG */
        setenv("LAMINA_CONFIG", path, 1);
        expect_exit_2(cases[i].text, (const char *[]){"--model", g_model, NULL},
                      (const char *[]){where, cases[i].quoted, cases[i].reason, NULL});
        unsetenv("LAMINA_CONFIG");
        unlink(path);
    }
    expect_exit_2("missing file", (const char *[]){"--config", "/nonexistent/an.conf", NULL},
                  (const char *[]){"/nonexistent/an.conf", "No such file", NULL});
    /* environment values are checked like the others and named */
    setenv("LAMINA_PORT", "http", 1);
    expect_exit_2("LAMINA_PORT", (const char *[]){"--model", g_model, NULL},
                  (const char *[]){"LAMINA_PORT='http': not an integer", NULL});
    unsetenv("LAMINA_PORT");
    setenv("LAMINA_KV_CAPACITY", "0", 1);
    expect_exit_2("LAMINA_KV_CAPACITY", (const char *[]){"--model", g_model, NULL},
                  (const char *[]){"LAMINA_KV_CAPACITY='0': out of bounds", NULL});
    unsetenv("LAMINA_KV_CAPACITY");
}

/* file < environment < command line, seen in the node's handshake */
static void test_precedence(void)
{
    char path[64], err[1024];
    write_conf(path, sizeof path,
               "page-tokens = 8\nmax-ctx = 100\nkv-dtype = bf16\nkv-capacity = 2M\n"
               "log-level = warn   # the tests' level\n");
    setenv("LAMINA_MAX_CTX", "120", 1);
    setenv("LAMINA_PAGE_TOKENS", "32", 1);
    /* --print-config shows the merged result and exits 0 */
    CU_ASSERT(nc_run((const char *[]){"--config", path, "--page-tokens", "4", "--print-config", NULL}, err,
                     sizeof err) == 0);
    nc_node_t n;
    CU_ASSERT_FATAL(nc_node_start(&n, g_model, (const char *[]){"--config", path, "--page-tokens", "4", NULL}));
    unsetenv("LAMINA_MAX_CTX");
    unsetenv("LAMINA_PAGE_TOKENS");
    nc_conn_t *c = nc_connect(n.port);
    CU_ASSERT(c != NULL);
    lam_wire_hello_t h = nc_hello_default(nc_fingerprint(g_model), 0, 1, LAM_DT_BF16, LAM_DT_F32);
    lam_wire_challenge_t ch;
    if (c && nc_hello(c, &h, &ch)) {
        CU_ASSERT(ch.kv_dtype == LAM_DT_BF16); /* file */
        CU_ASSERT(ch.max_ctx == 120);          /* environment over file */
        CU_ASSERT(ch.page_tokens == 4);        /* command line over both */
        /* 2 MiB of pages of 2 layers x K,V x 2 heads x 4 tokens x 16 x 2 bytes = 1 KiB */
        CU_ASSERT(ch.pages_total == 2048);
    } else {
        CU_FAIL("no challenge from the node");
    }
    if (c)
        nc_free(c);
    CU_ASSERT(nc_node_stop(&n) == 0);
    unlink(path);
}

/* A stand-in for systemd's notification socket. */
static void test_systemd_notify(void)
{
    char sock_path[108];
    snprintf(sock_path, sizeof sock_path, "/tmp/lamina-an-notify-%d", (int)getpid());
    unlink(sock_path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock_path);
    CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    setenv("NOTIFY_SOCKET", sock_path, 1);
    nc_node_t n;
    bool started = nc_node_start(&n, g_model, (const char *[]){"--kv-capacity", "1M", NULL});
    unsetenv("NOTIFY_SOCKET");
    CU_ASSERT_FATAL(started);
    /* everything it sent up to now, in order: STATUS lines, then READY */
    char msgs[8][512];
    int n_msgs = 0, ready_at = -1;
    while (n_msgs < 8 && ready_at < 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) != 1)
            break;
        ssize_t r = recv(fd, msgs[n_msgs], sizeof msgs[0] - 1, 0);
        msgs[n_msgs][r > 0 ? r : 0] = '\0';
        if (!strncmp(msgs[n_msgs], "READY=1\n", 8))
            ready_at = n_msgs;
        n_msgs++;
    }
    CU_ASSERT(ready_at >= 2);
    for (int i = 0; i < ready_at; i++)
        CU_ASSERT(!strncmp(msgs[i], "STATUS=", 7));
    if (ready_at >= 2) {
        CU_ASSERT(strstr(msgs[0], "Reading model") != NULL);
        CU_ASSERT(strstr(msgs[1], "Allocating 1.0 MiB") != NULL);
        char want[64];
        snprintf(want, sizeof want, "on 127.0.0.1:%d", n.port);
        CU_ASSERT(strstr(msgs[ready_at], "STATUS=Serving shard 0/1") && strstr(msgs[ready_at], want));
    }
    /* it serves when it says so */
    nc_conn_t *c = nc_connect(n.port);
    CU_ASSERT(c != NULL);
    if (c)
        nc_free(c);
    CU_ASSERT(nc_node_stop(&n) == 0);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char last[512] = "";
    if (poll(&p, 1, 5000) == 1) {
        ssize_t r = recv(fd, last, sizeof last - 1, 0);
        last[r > 0 ? r : 0] = '\0';
    }
    CU_ASSERT_STRING_EQUAL(last, "STOPPING=1\nSTATUS=Stopping");
    close(fd);
    unlink(sock_path);
}

static void test_start_stop(void)
{
    nc_node_t n;
    CU_ASSERT_FATAL(nc_node_start(&n, g_model, (const char *[]){"--kv-capacity", "1M", "--kv-dtype", "bf16",
                                                                "--max-seqs", "3", "--threads", "1", NULL}));
    CU_ASSERT(n.port > 0);
    CU_ASSERT(nc_node_stop(&n) == 0);
}

int main(void)
{
    nc_env();
    if (!nc_init())
        return 1;
    g_model = nc_tiny_model();
    if (!g_model)
        return 1;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("attn_node_cli", NULL, NULL);
    CU_add_test(s, "bad_values_exit_2", test_bad_values);
    CU_add_test(s, "token_and_model", test_token_and_model);
    CU_add_test(s, "config_file_errors", test_config_file_errors);
    CU_add_test(s, "precedence", test_precedence);
    CU_add_test(s, "systemd_notify", test_systemd_notify);
    CU_add_test(s, "start_stop", test_start_stop);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    nc_shutdown();
    unlink(g_model);
    return fails ? 1 : 0;
}
