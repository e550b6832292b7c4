/* libFuzzer target for the config file parser and value parsers
 * (common/config*.c), on the test option table of tests/config/. Built and
 * run by scripts/fuzz.sh with clang, ASan and UBSan.
 *
 * Each input is loaded as a config file (up to its first NUL byte), and
 * also given to every option as a value. Invariants: the result is LAM_OK
 * or LAM_ERR_CONFIG; an error is one line starting with "fuzz.conf:LINE:"
 * (or the value's source); what loads dumps to a file that loads back to
 * the same dump. Any violation abort()s.
 *
 * LAM_FUZZ_SEEDS=dir ./fuzz_config writes a few config files into dir and
 * exits: the fuzzer's starting corpus. */
#include "tests/config/cfg_spec.h"
#include "tests/fuzz/fuzz.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dump(const tcfg_t *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f);
    lam_cfg_dump(&tcfg_spec, c, f);
    CHECK(fclose(f) == 0);
    return text;
}

static void fresh(tcfg_t *c)
{
    char err[256];
    memset(c, 0, sizeof *c);
    CHECK(lam_cfg_set_defaults(&tcfg_spec, c, err, sizeof err) == LAM_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    CHECK(text);
    memcpy(text, data, size);
    text[size] = '\0';
    char err[512];
    tcfg_t a, b;

    fresh(&a);
    err[0] = '\0';
    lam_status_t st = lam_cfg_load_text(&tcfg_spec, &a, "fuzz.conf", text, err, sizeof err);
    CHECK(st == LAM_OK || st == LAM_ERR_CONFIG);
    if (st == LAM_OK) {
        char *d1 = dump(&a);
        fresh(&b);
        CHECK(lam_cfg_load_text(&tcfg_spec, &b, "dump", d1, err, sizeof err) == LAM_OK);
        char *d2 = dump(&b);
        CHECK(!strcmp(d1, d2));
        free(d1);
        free(d2);
        lam_cfg_free(&tcfg_spec, &b);
    } else {
        CHECK(!strncmp(err, "fuzz.conf:", 10) && !strchr(err, '\n'));
    }
    lam_cfg_free(&tcfg_spec, &a);

    /* the same bytes as a value of each option */
    for (int i = 0; i < tcfg_spec.n_opts; i++) {
        fresh(&a);
        st = lam_cfg_set(&tcfg_spec, &a, tcfg_opts[i].name, text, "src", err, sizeof err);
        CHECK(st == LAM_OK || (st == LAM_ERR_CONFIG && !strncmp(err, "src: '", 6) && !strchr(err, '\n')));
        if (st == LAM_OK) {
            char *d1 = dump(&a);
            fresh(&b);
            CHECK(lam_cfg_load_text(&tcfg_spec, &b, "dump", d1, err, sizeof err) == LAM_OK);
            char *d2 = dump(&b);
            CHECK(!strcmp(d1, d2));
            free(d1);
            free(d2);
            lam_cfg_free(&tcfg_spec, &b);
        }
        lam_cfg_free(&tcfg_spec, &a);
    }
    free(text);
    return 0;
}

static void write_seed(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "fuzz_config: cannot write %s\n", path);
        exit(1);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("LAM_FUZZ_SEEDS");
    if (!dir || !*dir)
        return 0;
    write_seed(dir, "all", "# every option\nverbose = yes\nchat = off\nport = 7401\nlevel = -4\n"
                           "seed = 18446744073709551615\ntemperature = 1.25\nbias = -3e7\n"
                           "kv-capacity = 512MiB\nany-size = 3T\nname = \"a \\\"b\\\" # \\\\c\"  # tail\n"
                           "token-file = /etc/lamina/token\nkv-dtype = bf16\nshard = 1/2\n");
    write_seed(dir, "crlf", "port = 1\r\nname = x\r\n");
    write_seed(dir, "dup", "port = 1\nport = 2\n");
    write_seed(dir, "value", "7400");
    write_seed(dir, "size", "1536M");
    exit(0);
}
