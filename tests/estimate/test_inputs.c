/* lamina-estimate: inputs. The shipped catalog is complete and sourced; bad
 * catalogs, configurations, lengths, config.json and GGUF files give a clear
 * error that names the file, the line and the offending text. */
#include "est_test.h"

#include <stdint.h>
#include <unistd.h>

#include "common/model.h"

/* ---- the shipped catalog ---- */

static void test_shipped_catalog(void)
{
    lam_est_catalog_t c;
    est_shipped_catalog(&c);
    static const char *need[] = {"h100", "h200", "a100", "h20", "l40s", "l20", "a10", "rtx4090",
                                 "cpu-spr", "cpu-genoa"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        CU_ASSERT(lam_est_catalog_find(&c, need[i]) >= 0);
    for (int i = 0; i < c.n_dev; i++) {
        const lam_est_device_t *d = &c.dev[i];
        CU_ASSERT(d->name[0] != '\0');
        for (int f = 0; f < LAM_EST_F_COUNT; f++) {
            if (!d->f[f].set)
                continue;
            /* every figure has a source and a date */
            CU_ASSERT(strlen(d->f[f].src) > 10);
            CU_ASSERT(strlen(d->f[f].date) >= 4);
            if (f == LAM_EST_F_PRICE) /* prices are labelled as assumptions */
                CU_ASSERT_PTR_NOT_NULL(strstr(d->f[f].src, "ASSUMPTION"));
        }
    }
    /* datasheet numbers quoted in the design notes */
    const lam_est_device_t *h100 = &c.dev[lam_est_catalog_find(&c, "h100")];
    const lam_est_device_t *h20 = &c.dev[lam_est_catalog_find(&c, "h20")];
    CU_ASSERT_DOUBLE_EQUAL(h100->f[LAM_EST_F_FLOPS].v, 989.4e12, 1e9);
    CU_ASSERT_DOUBLE_EQUAL(h100->f[LAM_EST_F_MEM_BW].v, 3.35e12, 1e6);
    CU_ASSERT_DOUBLE_EQUAL(h100->f[LAM_EST_F_MEM_CAP].v, 80e9, 1);
    CU_ASSERT_DOUBLE_EQUAL(h100->f[LAM_EST_F_POWER].v, 700, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(h20->f[LAM_EST_F_FLOPS].v, 148e12, 1e9);
    CU_ASSERT_DOUBLE_EQUAL(h20->f[LAM_EST_F_MEM_BW].v, 4.0e12, 1e6);
    CU_ASSERT_DOUBLE_EQUAL(h20->f[LAM_EST_F_MEM_CAP].v, 96e9, 1);
    CU_ASSERT_DOUBLE_EQUAL(h20->f[LAM_EST_F_POWER].v, 400, 1e-9);
    lam_est_catalog_free(&c);
}

static void test_overlay_and_set(void)
{
    lam_est_catalog_t c;
    est_test_catalog(&c);
    char err[512] = "";
    /* an overlay changes only what it names and may add devices */
    const char *ov = "[t]\nprice = 3 | my quote | 2026-01\n[new]\nkind=gpu\nflops=1T\n"
                     "mem_bw=1T\nmem_cap=1G\nnet_bw=1G\nnet_lat=1u\npower=1\nprice=1\n";
    CU_ASSERT_EQUAL(lam_est_catalog_parse(&c, ov, "overlay", err, sizeof err), LAM_OK);
    int t = lam_est_catalog_find(&c, "t");
    CU_ASSERT_EQUAL(c.dev[t].f[LAM_EST_F_PRICE].v, 3.0);
    CU_ASSERT_STRING_EQUAL(c.dev[t].f[LAM_EST_F_PRICE].src, "my quote");
    CU_ASSERT_EQUAL(c.dev[t].f[LAM_EST_F_FLOPS].v, 100e12);
    CU_ASSERT(lam_est_catalog_find(&c, "new") >= 0);
    CU_ASSERT_EQUAL(lam_est_catalog_set(&c, "t.mem_bw=2T", err, sizeof err), LAM_OK);
    CU_ASSERT_EQUAL(c.dev[t].f[LAM_EST_F_MEM_BW].v, 2e12);
    CU_ASSERT_EQUAL(lam_est_catalog_set(&c, "eff_mem=0.5", err, sizeof err), LAM_OK);
    CU_ASSERT_EQUAL(lam_est_eff(&c, &c.dev[t], LAM_EST_EFF_MEM), 0.5);
    CU_ASSERT_EQUAL(lam_est_catalog_set(&c, "t.eff_mem=0.25", err, sizeof err), LAM_OK);
    CU_ASSERT_EQUAL(lam_est_eff(&c, &c.dev[t], LAM_EST_EFF_MEM), 0.25);
    /* bad --set values */
    static const struct { const char *set, *msg; } bad[] = {
        {"t.price=-1", "must be in (0"},
        {"t.price=0", "must be in (0"},
        {"nosuch.price=1", "unknown device 'nosuch'"},
        {"t.colour=1", "unknown device key 'colour'"},
        {"eff_compute=2", "must be in (0, 1]"},
        {"speed=2", "unknown factor 'speed'"},
        {"t.flops", "expected KEY=VALUE"},
        {"t.flops=lots", "is not a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CU_ASSERT_NOT_EQUAL(lam_est_catalog_set(&c, bad[i].set, err, sizeof err), LAM_OK);
        if (!strstr(err, bad[i].msg))
            fprintf(stderr, "--set %s: got '%s', want '%s'\n", bad[i].set, err, bad[i].msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].msg));
    }
    lam_est_catalog_free(&c);
}

/* Table of malformed catalogs: the error must name origin:line and quote. */
static void test_bad_catalogs(void)
{
    static const struct { const char *text, *want; } bad[] = {
        {"[x]\nkind = gpu\nflops = -5T\n", "bad.cat:3: 'flops' must be in (0"},
        {"[x]\nkind = gpu\n\nmem_bw = 0\n", "bad.cat:4: 'mem_bw' must be in (0"},
        {"[x]\nflops = fast\n", "bad.cat:2: 'flops' is not a number: 'flops = fast'"},
        {"[x]\nflops = 1T extra\n", "bad.cat:2: 'flops' is not a number"},
        {"[x]\nflop = 1T\n", "bad.cat:2: unknown key 'flop': 'flop = 1T'"},
        {"# c\n[x]\nflops 1T\n", "bad.cat:3: expected 'key = value' or '[section]': 'flops 1T'"},
        {"flops = 1T\n", "bad.cat:1: key outside any [section]"},
        {"[x\n", "bad.cat:1: bad section header: '[x'"},
        {"[]\n", "bad.cat:1: section name must be"},
        {"[a b]\n", "bad.cat:1: bad character ' ' in device id"},
        {"[x]\nkind = tpu\n", "bad.cat:2: kind must be 'gpu' or 'cpu': 'kind = tpu'"},
        {"[defaults]\neff_compute = 1.5\n", "bad.cat:2: 'eff_compute' must be in (0, 1]"},
        {"[defaults]\nspeed = 1\n", "bad.cat:2: unknown factor 'speed'"},
        {"\n\n[x]\nkind = gpu\nflops = 1T\n", "bad.cat:3: device 'x' lacks required key 'mem_bw'"},
        {"[x]\nflops = 1T\n", "bad.cat:1: device 'x' lacks required key 'kind'"},
        {"[x]\nkind = gpu\nnet_lat = 2\n", "bad.cat:3: 'net_lat' must be in (0, 1]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lam_est_catalog_t c;
        lam_est_catalog_init(&c);
        char err[512] = "";
        CU_ASSERT_NOT_EQUAL(lam_est_catalog_parse(&c, bad[i].text, "bad.cat", err, sizeof err),
                            LAM_OK);
        if (!strstr(err, bad[i].want))
            fprintf(stderr, "\ncase %zu: got '%s', want '%s'\n", i, err, bad[i].want);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].want));
        lam_est_catalog_free(&c);
    }
    /* a missing file and a binary file */
    lam_est_catalog_t c;
    lam_est_catalog_init(&c);
    char err[512] = "";
    CU_ASSERT_EQUAL(lam_est_catalog_load(&c, "/nonexistent/cat.txt", err, sizeof err), LAM_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/cat.txt: cannot open catalog"));
    char path[] = "/tmp/lam_est_binXXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, "[x]\0\1\2", 6), 6);
    close(fd);
    CU_ASSERT_EQUAL(lam_est_catalog_load(&c, path, err, sizeof err), LAM_ERR_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "NUL byte"));
    unlink(path);
    lam_est_catalog_free(&c);
}

static void test_numbers(void)
{
    double v;
    CU_ASSERT_TRUE(lam_est_parse_number("989.4T", &v) && v == 989.4e12);
    CU_ASSERT_TRUE(lam_est_parse_number("80Gi", &v) && v == 80.0 * 1073741824.0);
    CU_ASSERT_TRUE(lam_est_parse_number("5u", &v) && fabs(v - 5e-6) < 1e-18);
    CU_ASSERT_TRUE(lam_est_parse_number("3.35e12", &v) && v == 3.35e12);
    CU_ASSERT_FALSE(lam_est_parse_number("", &v));
    CU_ASSERT_FALSE(lam_est_parse_number("T", &v));
    CU_ASSERT_FALSE(lam_est_parse_number("1X", &v));
    CU_ASSERT_FALSE(lam_est_parse_number("nan", &v));
    CU_ASSERT_FALSE(lam_est_parse_number("1e999", &v));
}

static void test_bad_configs_and_lengths(void)
{
    lam_est_catalog_t c;
    est_test_catalog(&c);
    lam_est_config_t cfg;
    char err[512];
    static const struct { const char *spec, *want; } bad[] = {
        {"2xh999", "unknown device 'h999' (catalog has: t, c)"},
        {"0xt", "device count 0 must be 1..1024"},
        {"-1xt", "device count -1 must be 1..1024"},
        {"twoxt", "should be COUNTxDEVICE"},
        {"1xt+", "should be COUNTxDEVICE"},
        {"pd:1xt", "expected pd:PREFILL/DECODE"},
        {"1xt+2xnope", "unknown device 'nope'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CU_ASSERT_NOT_EQUAL(lam_est_config_parse(&c, bad[i].spec, &cfg, err, sizeof err), LAM_OK);
        if (!strstr(err, bad[i].want))
            fprintf(stderr, "\n'%s': got '%s'\n", bad[i].spec, err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].want));
    }
    CU_ASSERT_EQUAL(lam_est_config_parse(&c, "pd:1xt/2xt", &cfg, err, sizeof err), LAM_OK);
    CU_ASSERT_EQUAL(cfg.mode, LAM_EST_SPLIT);
    CU_ASSERT_EQUAL(cfg.n_b, 2);
    lam_est_dist_t d;
    static const char *bad_len[] = {"0", "-5", "abc", "12x", "uniform:10:5", "uniform:0:5",
                                    "uniform:5", "list:", "list:1,,2", "list:1,-2"};
    for (size_t i = 0; i < sizeof bad_len / sizeof bad_len[0]; i++) {
        err[0] = '\0';
        CU_ASSERT_NOT_EQUAL(lam_est_dist_parse(bad_len[i], &d, err, sizeof err), LAM_OK);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad_len[i]));
    }
    lam_est_catalog_free(&c);
}

/* ---- model files ---- */

static void write_text(char *path, const char *text)
{
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_hf_config(void)
{
    char path[] = "/tmp/lam_est_cfgXXXXXX";
    write_text(path, "{\n  \"model_type\": \"llama\",\n  \"hidden_size\": 4096,\n"
               "  \"intermediate_size\": 14336,\n  \"num_attention_heads\": 32,\n"
               "  \"num_hidden_layers\": 32,\n  \"num_key_value_heads\": 8,\n"
               "  \"vocab_size\": 128256,\n  \"tie_word_embeddings\": false\n}\n");
    lam_est_model_t m;
    char err[512] = "";
    CU_ASSERT_EQUAL_FATAL(lam_est_model_from_hf_config(path, &m, err, sizeof err), LAM_OK);
    const lam_est_model_t *p = lam_est_model_preset("llama-3-8b");
    CU_ASSERT_EQUAL(m.n_layers, p->n_layers);
    CU_ASSERT_EQUAL(m.n_kv_heads, 8);
    CU_ASSERT_EQUAL(m.head_dim, 128);
    CU_ASSERT_EQUAL(lam_est_model_params(&m), lam_est_model_params(p));
    unlink(path);

    static const struct { const char *text, *want; } bad[] = {
        {"{\n  \"hidden_size\": 4096,\n  oops\n}\n", ":3:"},
        {"{\n  \"num_hidden_layers\": 32,\n  \"hidden_size\": -4096,\n  \"vocab_size\": 8\n}\n",
         ":3: 'hidden_size' must be a positive integer: '\"hidden_size\": -4096,'"},
        {"{\"num_hidden_layers\": 32, \"hidden_size\": 4096}", "required key 'intermediate_size'"},
        {"{\"num_hidden_layers\": 32, \"hidden_size\": 4096, \"intermediate_size\": 1,\n"
         "\"num_attention_heads\": 32, \"vocab_size\": 10, \"num_key_value_heads\": 0}",
         ":2: 'num_key_value_heads' must be a positive integer"},
        {"{\"num_hidden_layers\": 32, \"hidden_size\": 4096, \"intermediate_size\": 1,\n"
         "\"num_attention_heads\": 32, \"vocab_size\": 10, \"num_key_value_heads\": 5}",
         "32 query heads are not a multiple of 5 KV heads"},
        {"{\"num_hidden_layers\": \"32\"}", "'num_hidden_layers' must be a positive integer"},
        {"[1, 2]", "top level must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char p2[] = "/tmp/lam_est_cfgXXXXXX";
        write_text(p2, bad[i].text);
        err[0] = '\0';
        CU_ASSERT_NOT_EQUAL(lam_est_model_from_hf_config(p2, &m, err, sizeof err), LAM_OK);
        if (!strstr(err, bad[i].want) || !strstr(err, p2))
            fprintf(stderr, "\nconfig case %zu: got '%s', want '%s'\n", i, err, bad[i].want);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].want));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, p2));
        unlink(p2);
    }
    CU_ASSERT_EQUAL(lam_est_model_load("no-such-model", &m, err, sizeof err), LAM_ERR_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown model 'no-such-model'"));
}

/* A minimal GGUF v3 writer: metadata only, plus an optional output.weight. */
typedef struct buf {
    unsigned char d[4096];
    size_t n;
} buf_t;

static void put(buf_t *b, const void *p, size_t n)
{
    CU_ASSERT_FATAL(b->n + n <= sizeof b->d);
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void put_u32(buf_t *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf_t *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf_t *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void kv_u32(buf_t *b, const char *k, uint32_t v)
{
    put_str(b, k);
    put_u32(b, 4); /* UINT32 */
    put_u32(b, v);
}
static void kv_str(buf_t *b, const char *k, const char *v)
{
    put_str(b, k);
    put_u32(b, 8); /* STRING */
    put_str(b, v);
}

static void write_gguf(char *path, bool with_output, bool with_kv_heads, bool bad_magic)
{
    buf_t b = {{0}, 0};
    put(&b, bad_magic ? "GGUX" : "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, with_output ? 1 : 0);
    put_u64(&b, with_kv_heads ? 8 : 7);
    kv_str(&b, "general.architecture", "llama");
    kv_str(&b, "general.name", "tiny");
    kv_u32(&b, "llama.block_count", 30);
    kv_u32(&b, "llama.embedding_length", 576);
    kv_u32(&b, "llama.feed_forward_length", 1536);
    kv_u32(&b, "llama.attention.head_count", 9);
    kv_u32(&b, "llama.vocab_size", 49152);
    if (with_kv_heads)
        kv_u32(&b, "llama.attention.head_count_kv", 3);
    if (with_output) {
        put_str(&b, "output.weight");
        put_u32(&b, 1);
        put_u64(&b, 8);
        put_u32(&b, 0); /* F32 */
        put_u64(&b, 0);
    }
    while (b.n % 32)
        b.d[b.n++] = 0;
    if (with_output)
        for (int i = 0; i < 32; i++)
            b.d[b.n++] = 0;
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, b.d, b.n), (ssize_t)b.n);
    close(fd);
}

static void test_gguf(void)
{
    lam_est_model_t m;
    char err[512] = "";
    char p1[] = "/tmp/lam_est_ggufXXXXXX";
    write_gguf(p1, false, true, false);
    lam_status_t st = lam_est_model_from_gguf(p1, &m, err, sizeof err);
    if (st != LAM_OK)
        fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_EQUAL_FATAL(st, LAM_OK);
    /* same shape as the SmolLM2-135M preset, tied (no output.weight) */
    const lam_est_model_t *smol = lam_est_model_preset("smollm2-135m");
    CU_ASSERT_STRING_EQUAL(m.name, "tiny");
    CU_ASSERT_EQUAL(m.n_kv_heads, 3);
    CU_ASSERT_EQUAL(m.head_dim, 64);
    CU_ASSERT_TRUE(m.tied_embeddings);
    CU_ASSERT_EQUAL(lam_est_model_params(&m), lam_est_model_params(smol));
    CU_ASSERT_EQUAL(lam_est_kv_bytes_per_token(&m, 2), 23040.0);
    unlink(p1);

    char p2[] = "/tmp/lam_est_ggufXXXXXX";
    write_gguf(p2, true, false, false);
    CU_ASSERT_EQUAL_FATAL(lam_est_model_from_gguf(p2, &m, err, sizeof err), LAM_OK);
    CU_ASSERT_FALSE(m.tied_embeddings);
    CU_ASSERT_EQUAL(m.n_kv_heads, 9); /* no head_count_kv: no GQA */
    unlink(p2);

    char p3[] = "/tmp/lam_est_ggufXXXXXX";
    write_gguf(p3, false, true, true);
    CU_ASSERT_NOT_EQUAL(lam_est_model_from_gguf(p3, &m, err, sizeof err), LAM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, p3));
    unlink(p3);

    /* the real test model, when scripts/fetch-model.sh has been run */
    char real[1024];
    lam_model_default_path(real, sizeof real);
    if (access(real, R_OK) != 0) {
        fprintf(stderr, "\n  (skipped: %s not present)\n", real);
        return;
    }
    CU_ASSERT_EQUAL_FATAL(lam_est_model_load(real, &m, err, sizeof err), LAM_OK);
    CU_ASSERT_EQUAL(m.n_layers, smol->n_layers);
    CU_ASSERT_EQUAL(m.d_model, smol->d_model);
    CU_ASSERT_EQUAL(m.d_ff, smol->d_ff);
    CU_ASSERT_EQUAL(m.n_heads, smol->n_heads);
    CU_ASSERT_EQUAL(m.n_kv_heads, smol->n_kv_heads);
    CU_ASSERT_EQUAL(m.head_dim, smol->head_dim);
    CU_ASSERT_EQUAL(m.vocab, smol->vocab);
    CU_ASSERT_TRUE(m.tied_embeddings);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"shipped catalog", test_shipped_catalog},
        {"overlay and --set", test_overlay_and_set},
        {"malformed catalogs", test_bad_catalogs},
        {"numbers with suffixes", test_numbers},
        {"bad configurations and lengths", test_bad_configs_and_lengths},
        {"config.json", test_hf_config},
        {"GGUF", test_gguf},
        CU_TEST_INFO_NULL,
    };
    return est_run("estimate-inputs", tests);
}
