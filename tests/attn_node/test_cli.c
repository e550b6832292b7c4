/* lamina-attention-node's command line: every bad value exits 2 with one
 * line naming the problem; --help exits 0; a missing model exits 1; a
 * clean SIGTERM exits 0. */
#include "tests/attn_node/node_client.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    g_model = nc_tiny_model();
    if (!g_model)
        return 1;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("attn_node_cli", NULL, NULL);
    CU_add_test(s, "bad_values_exit_2", test_bad_values);
    CU_add_test(s, "token_and_model", test_token_and_model);
    CU_add_test(s, "start_stop", test_start_stop);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    unlink(g_model);
    return fails ? 1 : 0;
}
