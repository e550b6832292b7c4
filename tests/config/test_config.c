/* common/config.c: the file syntax (a table of malformed files, each
 * rejected with FILE:LINE, the text and a specific reason), values at
 * their bounds, precedence (defaults < file < environment < command
 * line), the command-line forms, --help and --print-config, dump/load
 * round trips, bad option tables, and seeded random garbage. */
#include "tests/config/cfg_spec.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_err[1024];

static lam_status_t load_text(tcfg_t *c, const char *text)
{
    memset(c, 0, sizeof *c);
    lam_status_t st = lam_cfg_set_defaults(&tcfg_spec, c, g_err, sizeof g_err);
    CU_ASSERT_FATAL(st == LAM_OK);
    return lam_cfg_load_text(&tcfg_spec, c, "test.conf", text, g_err, sizeof g_err);
}

/* Runs lam_cfg_load with argv (NULL-terminated, without the program
 * name), capturing stdout into out (may be NULL). */
static lam_status_t load_argv(tcfg_t *c, const char *const *args, bool *shown, char *out, size_t out_len)
{
    char *argv[32] = {"lamina-test"};
    int argc = 1;
    for (; args[argc - 1]; argc++)
        argv[argc] = (char *)args[argc - 1];
    argv[argc] = NULL;
    fflush(stdout);
    int saved = dup(1);
    FILE *tmp = tmpfile();
    CU_ASSERT_FATAL(saved >= 0 && tmp);
    dup2(fileno(tmp), 1);
    memset(c, 0, sizeof *c);
    lam_status_t st = lam_cfg_load(&tcfg_spec, c, argc, argv, shown, g_err, sizeof g_err);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    if (out) {
        rewind(tmp);
        size_t n = fread(out, 1, out_len - 1, tmp);
        out[n] = '\0';
    }
    fclose(tmp);
    return st;
}

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/lamina-cfg-test-XXXXXX");
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    size_t n = strlen(text);
    CU_ASSERT_FATAL(write(fd, text, n) == (ssize_t)n);
    close(fd);
    return path;
}

static void test_malformed_files(void)
{
    static const struct {
        const char *text;
        int line;
        const char *quoted; /* the offending text as the message shows it */
        const char *reason;
    } cases[] = {
        {"port = 80\nprot = 81\n", 2, "'prot'", "did you mean 'port'?"},
        {"kv_capacity = 1G\n", 1, "'kv_capacity'", "did you mean 'kv-capacity'?"},
        {"zzzzzz = 1\n", 1, "'zzzzzz'", "unknown key"},
        {"no-chat = true\n", 1, "'no-chat'", "write 'chat = false'"},
        {"config = x.conf\n", 1, "'config'", "cannot include another"},
        {"port = abc\n", 1, "'abc'", "not an integer"},
        {"port = 12x\n", 1, "'12x'", "not an integer"},
        {"port = 1.5\n", 1, "'1.5'", "not an integer"},
        {"port = 65536\n", 1, "'65536'", "must be 0 to 65535"},
        {"port = -1\n", 1, "'-1'", "must be 0 to 65535"},
        {"port = 99999999999999999999\n", 1, "'99999999999999999999'", "must be 0 to 65535"},
        {"level = -11\n", 1, "'-11'", "must be -10 to 10"},
        {"seed = -1\n", 1, "'-1'", "must be 0 to 18446744073709551615"},
        {"seed = 18446744073709551616\n", 1, "'18446744073709551616'", "out of bounds"},
        {"seed = 0x10\n", 1, "'0x10'", "not an integer"},
        {"temperature = warm\n", 1, "'warm'", "not a number"},
        {"temperature = 2.5\n", 1, "'2.5'", "must be 0 to 2"},
        {"temperature = nan\n", 1, "'nan'", "out of bounds"},
        {"bias = inf\n", 1, "'inf'", "out of bounds"},
        {"bias = 1e999\n", 1, "'1e999'", "out of bounds"},
        {"kv-capacity = 0\n", 1, "'0'", "must be 1 to 1T"},
        {"kv-capacity = 2T\n", 1, "'2T'", "must be 1 to 1T"},
        {"kv-capacity = 12Q\n", 1, "'12Q'", "not a size"},
        {"kv-capacity = G\n", 1, "'G'", "not a size"},
        {"kv-capacity = -1G\n", 1, "'-1G'", "out of bounds"},
        {"kv-capacity = 1.5G\n", 1, "'1.5G'", "not a size"},
        {"any-size = 99999999999T\n", 1, "'99999999999T'", "out of bounds"},
        {"any-size = 99999999999999999999\n", 1, "'99999999999999999999'", "out of bounds"},
        {"verbose = maybe\n", 1, "'maybe'", "not a boolean"},
        {"kv-dtype = q4_0\n", 1, "'q4_0'", "not one of: f16, bf16, f32"},
        {"shard = 2/2\n", 1, "'2/2'", "not a shard"},
        {"# fine\n\nport 80\n", 3, "'port 80'", "missing '='"},
        {"port\n", 1, "'port'", "missing '='"},
        {"= 80\n", 1, "'= 80'", "missing key"},
        {"name =\n", 1, "'name'", "no value"},
        {"name = # only a comment\n", 1, "'name'", "no value"},
        {"name = \"abc\n", 1, "'\"abc'", "unterminated quote"},
        {"name = \"a\\\"\n", 1, "'\"a\\\\\"'", "unterminated quote"},
        {"name = \"a\\qb\"\n", 1, "'\"a\\\\qb\"'", "unknown escape"},
        {"name = \"abc\" def\n", 1, "'def'", "stray text"},
        {"port = 80\nname = x\nport = 81\n", 3, "'port'", "set twice, first on line 1"},
        {"port = 80\r\nport = 80\r\n", 2, "'port'", "set twice, first on line 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tcfg_t c;
        lam_status_t st = load_text(&c, cases[i].text);
        char where[64];
        snprintf(where, sizeof where, "test.conf:%d: ", cases[i].line);
        bool ok = st == LAM_ERR_CONFIG && !strncmp(g_err, where, strlen(where)) && strstr(g_err, cases[i].quoted) &&
                  strstr(g_err, cases[i].reason) && !strchr(g_err, '\n');
        if (!ok)
            printf("\n  case %zu: status %d, message '%s'\n", i, st, g_err);
        CU_ASSERT(ok);
        lam_cfg_free(&tcfg_spec, &c);
    }
}

static void test_good_file(void)
{
    tcfg_t c;
    const char *text = "# a comment\n"
                       "   \t\n"
                       "port=81\n"
                       "  level = -10   # trailing comment\n"
                       "verbose = yes\n"
                       "chat = OFF\n"
                       "seed = 18446744073709551615\n"
                       "temperature = 2\n"
                       "kv-capacity = 1TiB\n"
                       "any-size = 512K\n"
                       "name = \"a \\\"quoted\\\" # \\\\ name\" # comment\n"
                       "token-file = /etc/lamina/token#not-a-comment\n"
                       "kv-dtype = bf16\n"
                       "shard = 3/4"; /* no final newline */
    CU_ASSERT_FATAL(load_text(&c, text) == LAM_OK);
    CU_ASSERT(c.port == 81 && c.level == -10 && c.verbose && !c.chat);
    CU_ASSERT(c.seed == UINT64_MAX);
    CU_ASSERT(c.temp == 2.0f);
    CU_ASSERT(c.cap == (size_t)1 << 40 && c.any_size == 512 << 10);
    CU_ASSERT_STRING_EQUAL(c.name, "a \"quoted\" # \\ name");
    CU_ASSERT_STRING_EQUAL(c.token_file, "/etc/lamina/token#not-a-comment");
    CU_ASSERT(c.dtype == 1);
    CU_ASSERT_STRING_EQUAL(c.shard, "3/4");
    lam_cfg_free(&tcfg_spec, &c);
    CU_ASSERT(c.name == NULL && c.shard == NULL);

    CU_ASSERT(load_text(&c, "") == LAM_OK);
    CU_ASSERT(c.port == 7400 && c.chat && c.cap == (size_t)1 << 30 && !strcmp(c.name, "node") && !c.token_file);
    CU_ASSERT(c.temp == 0.8f && c.level == -3);
    lam_cfg_free(&tcfg_spec, &c);
    CU_ASSERT(load_text(&c, "name = \"\"\n") == LAM_OK && c.name && !c.name[0]);
    lam_cfg_free(&tcfg_spec, &c);
    /* control bytes are kept in values and escaped in messages */
    CU_ASSERT(load_text(&c, "name = a\x01\x02\n") == LAM_OK && !strcmp(c.name, "a\x01\x02"));
    lam_cfg_free(&tcfg_spec, &c);
    CU_ASSERT(load_text(&c, "port = a\x01\\\n") == LAM_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(g_err, "test.conf:1: 'a\\x01\\\\': not an integer");
    lam_cfg_free(&tcfg_spec, &c);
}

static void test_bounds(void)
{
    static const struct {
        const char *name, *text;
        bool ok;
    } cases[] = {
        {"port", "0", true}, {"port", "65535", true}, {"port", "65536", false}, {"port", "-1", false},
        {"ctx", "1", true}, {"ctx", "0", false}, {"ctx", "16777216", true}, {"ctx", "16777217", false},
        {"level", "-10", true}, {"level", "10", true}, {"level", "-11", false}, {"level", "11", false},
        {"seed", "0", true}, {"seed", "18446744073709551615", true}, {"seed", "18446744073709551616", false},
        {"temperature", "0", true}, {"temperature", "2", true}, {"temperature", "2.0000002", false},
        {"temperature", "-0.0000001", false}, {"temperature", "1e-50", true},
        {"kv-capacity", "1", true}, {"kv-capacity", "1B", true}, {"kv-capacity", "1T", true},
        {"kv-capacity", "1099511627777", false}, {"kv-capacity", "0", false},
        {"any-size", "0", true}, {"any-size", "16777215T", true}, {"any-size", "16777216T", false},
        {"any-size", "18446744073709551615", true}, {"any-size", "18446744073709551616", false},
        {"verbose", "1", true}, {"verbose", "On", true}, {"verbose", "2", false}, {"verbose", "", false},
        {"kv-dtype", "f32", true}, {"kv-dtype", "F32", false},
        {"shard", "63/64", true}, {"shard", "0/65", false}, {"shard", "-1/2", false},
        {"name", "line\nbreak", false}, {"name", "", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tcfg_t c;
        CU_ASSERT_FATAL(load_text(&c, "") == LAM_OK);
        tcfg_t before = c;
        lam_status_t st = lam_cfg_set(&tcfg_spec, &c, cases[i].name, cases[i].text, "here", g_err, sizeof g_err);
        bool ok = (st == LAM_OK) == cases[i].ok;
        if (!cases[i].ok) /* a rejected value leaves the field alone */
            ok = ok && !strncmp(g_err, "here: '", 7) && !memcmp(&before, &c, sizeof c);
        if (!ok)
            printf("\n  %s = '%s': status %d, '%s'\n", cases[i].name, cases[i].text, st, g_err);
        CU_ASSERT(ok);
        lam_cfg_free(&tcfg_spec, &c);
    }
    size_t z = 0;
    CU_ASSERT(lam_cfg_parse_size("512M", &z) && z == 512u << 20);
    CU_ASSERT(lam_cfg_parse_size("2G", &z) && z == (size_t)2 << 30);
    CU_ASSERT(lam_cfg_parse_size("3k", &z) && z == 3072);
    CU_ASSERT(lam_cfg_parse_size("7", &z) && z == 7);
    CU_ASSERT(!lam_cfg_parse_size(" 7", &z) && !lam_cfg_parse_size("+7", &z) && !lam_cfg_parse_size("7 ", &z));
    CU_ASSERT(!lam_cfg_parse_size("7iB", &z) && !lam_cfg_parse_size("7GB2", &z) && !lam_cfg_parse_size("", &z));
}

static void test_precedence(void)
{
    char *path = write_tmp("port = 1000\nlevel = 1\nseed = 5\nname = from-file\n");
    char file[64];
    snprintf(file, sizeof file, "%s", path);
    tcfg_t c;
    bool shown;
    unsetenv("LAMINA_PORT"), unsetenv("LAMINA_LEVEL"), unsetenv("LAMINA_CONFIG"), unsetenv("LAMINA_NAME");
    CU_ASSERT_FATAL(load_argv(&c, (const char *[]){"--config", file, NULL}, &shown, NULL, 0) == LAM_OK);
    CU_ASSERT(!shown && c.port == 1000 && c.level == 1 && c.seed == 5 && !strcmp(c.name, "from-file"));
    lam_cfg_free(&tcfg_spec, &c);

    setenv("LAMINA_PORT", "2000", 1);
    setenv("LAMINA_LEVEL", "2", 1);
    setenv("LAMINA_NAME", "", 1); /* empty: unset */
    CU_ASSERT_FATAL(load_argv(&c, (const char *[]){"--level", "3", "--config", file, NULL}, &shown, NULL, 0) ==
                    LAM_OK);
    CU_ASSERT(c.port == 2000 && c.level == 3 && c.seed == 5 && !strcmp(c.name, "from-file"));
    lam_cfg_free(&tcfg_spec, &c);

    /* LAMINA_CONFIG names the file when --config does not */
    setenv("LAMINA_CONFIG", file, 1);
    CU_ASSERT_FATAL(load_argv(&c, (const char *[]){"-p", "3000", NULL}, &shown, NULL, 0) == LAM_OK);
    CU_ASSERT(c.port == 3000 && c.level == 2 && c.seed == 5);
    lam_cfg_free(&tcfg_spec, &c);

    /* errors name their source */
    setenv("LAMINA_PORT", "http", 1);
    CU_ASSERT(load_argv(&c, (const char *[]){NULL}, &shown, NULL, 0) == LAM_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(g_err, "LAMINA_PORT='http': not an integer");
    lam_cfg_free(&tcfg_spec, &c);
    setenv("LAMINA_PORT", "1", 1);
    CU_ASSERT(load_argv(&c, (const char *[]){"--port", "http", NULL}, &shown, NULL, 0) == LAM_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(g_err, "option --port: 'http': not an integer");
    lam_cfg_free(&tcfg_spec, &c);
    CU_ASSERT(load_argv(&c, (const char *[]){"-p", "http", NULL}, &shown, NULL, 0) == LAM_ERR_CONFIG);
    CU_ASSERT_STRING_EQUAL(g_err, "option -p (--port): 'http': not an integer");
    lam_cfg_free(&tcfg_spec, &c);
    unlink(file);
    CU_ASSERT(load_argv(&c, (const char *[]){NULL}, &shown, NULL, 0) == LAM_ERR_CONFIG);
    CU_ASSERT(strstr(g_err, file) && strstr(g_err, "No such file") != NULL);
    lam_cfg_free(&tcfg_spec, &c);
    CU_ASSERT(load_argv(&c, (const char *[]){"--config", "/", NULL}, &shown, NULL, 0) == LAM_ERR_CONFIG);
    CU_ASSERT(strstr(g_err, "cannot read config file /") != NULL);
    lam_cfg_free(&tcfg_spec, &c);
    unsetenv("LAMINA_PORT"), unsetenv("LAMINA_LEVEL"), unsetenv("LAMINA_CONFIG"), unsetenv("LAMINA_NAME");
}

static void test_command_line(void)
{
    tcfg_t c;
    bool shown;
    CU_ASSERT_FATAL(load_argv(&c, (const char *[]){"-v", "--no-chat", "-p81", "--seed=9", "-n", "x y", "--name=z",
                                                   "--kv-dtype", "f32", "--temperature=0", "--", NULL},
                              &shown, NULL, 0) == LAM_OK);
    CU_ASSERT(c.verbose && !c.chat && c.port == 81 && c.seed == 9 && !strcmp(c.name, "z") && c.dtype == 2);
    CU_ASSERT(c.temp == 0.0f);
    lam_cfg_free(&tcfg_spec, &c);
    CU_ASSERT_FATAL(load_argv(&c, (const char *[]){"--verbose=false", "--chat", "--port", "-0", NULL}, &shown, NULL,
                              0) == LAM_OK);
    CU_ASSERT(!c.verbose && c.chat && c.port == 0);
    lam_cfg_free(&tcfg_spec, &c);

    static const struct {
        const char *args[5];
        const char *expect;
    } bad[] = {
        {{"--prot", "1"}, "unknown option '--prot' (see --help; did you mean --port?)"},
        {{"--bogus"}, "unknown option '--bogus' (see --help)"},
        {{"-x"}, "unknown option '-x' (see --help)"},
        {{"--port"}, "option --port needs a value"},
        {{"-p"}, "option -p (--port) needs a value"},
        {{"--no-chat=1"}, "option --no-chat takes no value"},
        {{"-vv"}, "option -v (--verbose) takes no value"},
        {{"--no-port"}, "unknown option '--no-port'"},
        {{"extra"}, "unexpected argument 'extra'"},
        {{"--", "-p"}, "unexpected argument '-p'"},
        {{"-"}, "unexpected argument '-'"},
        {{"--help=1"}, "option --help takes no value"},
        {{"--config"}, "option --config needs a value"},
        {{"--config="}, "option --config: '': an empty path"},
        {{"--chat=maybe"}, "option --chat: 'maybe': not a boolean"},
        {{"--port", "1", "--port", "x"}, "option --port: 'x': not an integer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lam_status_t st = load_argv(&c, bad[i].args, &shown, NULL, 0);
        bool ok = st == LAM_ERR_CONFIG && strstr(g_err, bad[i].expect) && !shown;
        if (!ok)
            printf("\n  %s: status %d, '%s'\n", bad[i].args[0], st, g_err);
        CU_ASSERT(ok);
        lam_cfg_free(&tcfg_spec, &c);
    }
    /* the last repetition wins */
    CU_ASSERT(load_argv(&c, (const char *[]){"-p", "1", "--port=2", NULL}, &shown, NULL, 0) == LAM_OK && c.port == 2);
    lam_cfg_free(&tcfg_spec, &c);
}

static void test_help(void)
{
    static char out[16384];
    tcfg_t c;
    bool shown = false;
    /* --help wins over later arguments, even bad ones, and leaves defaults */
    CU_ASSERT_FATAL(load_argv(&c, (const char *[]){"-p", "5", "-h", "--bogus", NULL}, &shown, out, sizeof out) ==
                    LAM_OK);
    CU_ASSERT(shown && c.port == 7400);
    lam_cfg_free(&tcfg_spec, &c);
    CU_ASSERT(strstr(out, "usage: lamina-test [options]") && strstr(out, "An epilog line.") != NULL);
    for (int i = 0; i < tcfg_spec.n_opts; i++) {
        const lam_cfg_opt_t *o = &tcfg_opts[i];
        char want[128], env[64];
        snprintf(want, sizeof want, "--%s%s", o->type == LAM_CFG_BOOL ? "[no-]" : "", o->name);
        size_t k = (size_t)snprintf(env, sizeof env, "env LAMINA_");
        for (const char *p = o->name; *p; p++)
            env[k++] = *p == '-' ? '_' : (char)(*p - 32 * (*p >= 'a' && *p <= 'z'));
        env[k] = '\0';
        const char *at = strstr(out, want);
        char first[128];
        snprintf(first, sizeof first, "%.*s", (int)strcspn(o->help, "\n"), o->help);
        bool ok = at && strstr(at, env) && strstr(out, first) != NULL;
        if (o->short_name) {
            char sh[8];
            snprintf(sh, sizeof sh, "-%c, --", o->short_name);
            ok = ok && strstr(out, sh);
        }
        if (!ok)
            printf("\n  --help lacks %s\n", o->name);
        CU_ASSERT(ok);
    }
    CU_ASSERT(strstr(out, "0 = any free port") != NULL); /* second help line */
    CU_ASSERT(strstr(out, "[default: 7400; 0 to 65535; env LAMINA_PORT]") != NULL);
    CU_ASSERT(strstr(out, "--kv-dtype f16|bf16|f32") && strstr(out, "one of f16, bf16, f32") != NULL);
    CU_ASSERT(strstr(out, "[default: 1G; 1 to 1T; env LAMINA_KV_CAPACITY]") != NULL);
    CU_ASSERT(strstr(out, "[default: unset; 1 to 16777216; env LAMINA_CTX]") != NULL);
    CU_ASSERT(strstr(out, "[default: 0; env LAMINA_BIAS]") != NULL);
    CU_ASSERT(strstr(out, "--config PATH") && strstr(out, "--print-config") && strstr(out, "-h, --help") != NULL);
}

static void assert_same(const tcfg_t *a, const tcfg_t *b)
{
    CU_ASSERT(a->verbose == b->verbose && a->chat == b->chat && a->port == b->port && a->level == b->level);
    CU_ASSERT(a->ctx == b->ctx);
    CU_ASSERT(a->seed == b->seed && a->temp == b->temp && a->bias == b->bias && a->cap == b->cap);
    CU_ASSERT(a->any_size == b->any_size && a->dtype == b->dtype);
    CU_ASSERT((!a->name && !b->name) || (a->name && b->name && !strcmp(a->name, b->name)));
    CU_ASSERT((!a->token_file && !b->token_file) ||
              (a->token_file && b->token_file && !strcmp(a->token_file, b->token_file)));
    CU_ASSERT(!strcmp(a->shard, b->shard));
}

/* A dump loads back into the same struct, for seeded random values. */
static void test_round_trip(void)
{
    unsigned seed = 1234;
    const char *s = getenv("LAMINA_TEST_SEED");
    if (s)
        seed = (unsigned)strtoul(s, NULL, 10);
    srand(seed);
    static const char alphabet[] = "ab \"\\#=x/\t'";
    for (int iter = 0; iter < 200; iter++) {
        tcfg_t a, b;
        CU_ASSERT_FATAL(load_text(&a, "") == LAM_OK);
        a.verbose = rand() & 1, a.chat = rand() & 1;
        a.port = rand() % 65536, a.level = rand() % 21 - 10;
        a.ctx = rand() & 1 ? rand() % (1 << 24) + 1 : 0; /* 0: not set */
        a.seed = ((uint64_t)rand() << 40) ^ ((uint64_t)rand() << 20) ^ (uint64_t)rand();
        a.temp = (float)rand() / (float)RAND_MAX * 2.0f;
        a.bias = ((float)rand() - RAND_MAX / 2) * 1e-3f * (float)(rand() % 1000);
        a.cap = (size_t)(rand() % 1024 + 1) << (10 * (rand() % 4));
        a.any_size = (size_t)rand() * (size_t)rand();
        a.dtype = rand() % 3;
        char name[24];
        int n = rand() % (int)sizeof name;
        for (int i = 0; i < n; i++)
            name[i] = alphabet[rand() % (int)(sizeof alphabet - 1)];
        name[n] = '\0';
        free(a.name);
        a.name = strdup(name);
        if (rand() & 1)
            a.token_file = strdup("/run/credentials/x/token");
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        lam_cfg_dump(&tcfg_spec, &a, f);
        fclose(f);
        lam_status_t st = load_text(&b, text);
        if (st != LAM_OK)
            printf("\n  seed %u iteration %d: %s\n%s", seed, iter, g_err, text);
        CU_ASSERT(st == LAM_OK);
        assert_same(&a, &b);
        free(text);
        lam_cfg_free(&tcfg_spec, &a);
        lam_cfg_free(&tcfg_spec, &b);
    }
}

static void test_print_config(void)
{
    static char out[8192];
    tcfg_t c, d;
    bool shown = false;
    CU_ASSERT_FATAL(load_argv(&c, (const char *[]){"--print-config", "--port", "99", "--name", "q\"x", NULL}, &shown,
                              out, sizeof out) == LAM_OK);
    CU_ASSERT(shown && c.port == 99);
    CU_ASSERT(strstr(out, "port = 99\n") && strstr(out, "name = \"q\\\"x\"\n") != NULL);
    CU_ASSERT(strstr(out, "# token-file is not set\n") && strstr(out, "# ctx is not set\n") != NULL);
    CU_ASSERT(load_text(&d, out) == LAM_OK);
    assert_same(&c, &d);
    lam_cfg_free(&tcfg_spec, &c);
    lam_cfg_free(&tcfg_spec, &d);
}

static void test_bad_tables(void)
{
    static const char *const no_choices[] = {NULL};
    static const struct {
        lam_cfg_opt_t opts[2];
        const char *expect;
    } cases[] = {
        {{{"a", 0, LAM_CFG_INT, 0, NULL, 0, 1, NULL, NULL, "h", NULL},
          {"a", 0, LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "'a' appears twice"},
        {{{"a", 'x', LAM_CFG_INT, 0, NULL, 0, 1, NULL, NULL, "h", NULL},
          {"b", 'x', LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "share -x"},
        {{{"a", 0, LAM_CFG_INT, 0, "7", 0, 1, NULL, NULL, "h", NULL},
          {"b", 0, LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "default of 'a': '7': out of bounds"},
        {{{"a", 0, LAM_CFG_ENUM, 0, NULL, 0, 0, no_choices, NULL, "h", NULL},
          {"b", 0, LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "needs choices"},
        {{{"help", 0, LAM_CFG_BOOL, 0, NULL, 0, 0, NULL, NULL, "h", NULL},
          {"b", 0, LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "builtin"},
        {{{"a", 'h', LAM_CFG_BOOL, 0, NULL, 0, 0, NULL, NULL, "h", NULL},
          {"b", 0, LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "bad short name"},
        {{{"Bad_Name", 0, LAM_CFG_BOOL, 0, NULL, 0, 0, NULL, NULL, "h", NULL},
          {"b", 0, LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "name must be"},
        {{{"chat", 0, LAM_CFG_BOOL, 0, NULL, 0, 0, NULL, NULL, "h", NULL},
          {"no-chat", 0, LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "clashes with --no-chat"},
        {{{"a", 0, LAM_CFG_INT, 0, NULL, 2, 1, NULL, NULL, "h", NULL},
          {"b", 0, LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "min > max"},
        {{{"a", 0, LAM_CFG_INT, 0, NULL, 0, 1e12, NULL, NULL, "h", NULL},
          {"b", 0, LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "bounds outside the type"},
        {{{"a", 0, LAM_CFG_INT, 0, NULL, 0, 1, NULL, NULL, NULL, NULL},
          {"b", 0, LAM_CFG_INT, 4, NULL, 0, 1, NULL, NULL, "h", NULL}},
         "no help text"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lam_cfg_spec_t spec = {"bad-prog", NULL, NULL, cases[i].opts, 2};
        int dst[2] = {0, 0};
        lam_status_t st = lam_cfg_set_defaults(&spec, dst, g_err, sizeof g_err);
        bool ok = st == LAM_ERR_CONFIG && strstr(g_err, "option table of bad-prog") && strstr(g_err, cases[i].expect);
        if (!ok)
            printf("\n  table %zu: status %d, '%s'\n", i, st, g_err);
        CU_ASSERT(ok);
    }
    lam_cfg_spec_t nameless = {NULL, NULL, NULL, tcfg_opts, tcfg_spec.n_opts};
    tcfg_t c;
    memset(&c, 0, sizeof c);
    CU_ASSERT(lam_cfg_set_defaults(&nameless, &c, g_err, sizeof g_err) == LAM_ERR_CONFIG);
    CU_ASSERT(strstr(g_err, "no program name") != NULL);
}

/* Random bytes as a config file: OK or LAM_ERR_CONFIG, never a crash
 * (the sanitizer build checks memory). Half the inputs are made of
 * config-like pieces so that they get past the first line. */
static void test_garbage(void)
{
    unsigned seed = 99;
    const char *s = getenv("LAMINA_TEST_SEED");
    if (s)
        seed = (unsigned)strtoul(s, NULL, 10);
    srand(seed);
    static const char *const pieces[] = {"port", "name", "kv-capacity", "seed", " = ", "=", "\"", "\\", "#", "\n",
                                         "\r\n", " ", "\t", "1", "-", "G", "x", "true", "shard", "3/4", "chat",
                                         "no-", "bias", "1e9", "kv-dtype", "bf16"};
    int ok = 0, rejected = 0;
    for (int iter = 0; iter < 4000; iter++) {
        char text[256];
        size_t n = (size_t)(rand() % 255);
        if (iter & 1) {
            for (size_t i = 0; i < n; i++)
                text[i] = (char)(rand() % 255 + 1);
            text[n] = '\0';
        } else {
            text[0] = '\0';
            while (strlen(text) + 16 < sizeof text && (size_t)rand() % 64 != 0)
                strcat(text, pieces[rand() % (int)(sizeof pieces / sizeof pieces[0])]);
        }
        tcfg_t c;
        g_err[0] = '\0';
        lam_status_t st = load_text(&c, text);
        CU_ASSERT(st == LAM_OK || (st == LAM_ERR_CONFIG && !strncmp(g_err, "test.conf:", 10)));
        if (st == LAM_OK)
            ok++;
        else
            rejected++;
        lam_cfg_free(&tcfg_spec, &c);
    }
    printf("(seed %u: %d accepted, %d rejected) ", seed, ok, rejected);
    CU_ASSERT(ok > 0 && rejected > 0);

    /* a NUL byte in a file */
    char path[] = "/tmp/lamina-cfg-nul-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, "port = 1\nna\0me = x\n", 19) == 19);
    close(fd);
    tcfg_t c;
    CU_ASSERT_FATAL(load_text(&c, "") == LAM_OK);
    CU_ASSERT(lam_cfg_load_file(&tcfg_spec, &c, path, g_err, sizeof g_err) == LAM_ERR_CONFIG);
    CU_ASSERT(strstr(g_err, ":2: contains a NUL byte") != NULL);
    lam_cfg_free(&tcfg_spec, &c);
    unlink(path);
}

/* No hidden shared state: threads loading different files at once each
 * get their own values. */
static void *thread_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    char text[64], err[256];
    snprintf(text, sizeof text, "port = %d\nname = \"t%d\"\n", 1000 + id, id);
    for (int i = 0; i < 300; i++) {
        tcfg_t c;
        memset(&c, 0, sizeof c);
        if (lam_cfg_set_defaults(&tcfg_spec, &c, err, sizeof err) != LAM_OK ||
            lam_cfg_load_text(&tcfg_spec, &c, "t.conf", text, err, sizeof err) != LAM_OK || c.port != 1000 + id ||
            atoi(c.name + 1) != id)
            return (void *)1;
        lam_cfg_free(&tcfg_spec, &c);
    }
    return NULL;
}

static void test_threads(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CU_ASSERT_FATAL(pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        CU_ASSERT(r == NULL);
    }
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("config", NULL, NULL);
    CU_add_test(s, "malformed_files", test_malformed_files);
    CU_add_test(s, "good_file", test_good_file);
    CU_add_test(s, "bounds", test_bounds);
    CU_add_test(s, "precedence", test_precedence);
    CU_add_test(s, "command_line", test_command_line);
    CU_add_test(s, "help", test_help);
    CU_add_test(s, "round_trip", test_round_trip);
    CU_add_test(s, "print_config", test_print_config);
    CU_add_test(s, "bad_tables", test_bad_tables);
    CU_add_test(s, "garbage", test_garbage);
    CU_add_test(s, "threads", test_threads);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
