/* Tokenizer tests: ids against llama.cpp on the real model, round trips on
 * seeded random text, pre-tokenizer splits, special-token parsing, chat
 * rendering, a hand-built SentencePiece vocabulary, and malformed metadata.
 *
 * Seed: LAMINA_TEST_SEED=<n> repeats a run; otherwise fresh and printed. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/gguf.h"
#include "common/log.h"
#include "common/tok_internal.h"
#include "common/tokenizer.h"
#include "tests/util/fixtures.h"
#include "tests/util/gguf_build.h"

static uint64_t g_seed;
static uint64_t g_rng;
static lam_gguf_t *g_gguf;
static lam_tok_t *g_tok;   /* the real model's tokenizer, NULL if unavailable */
static bool g_skip_model;  /* model missing and LAMINA_ALLOW_NO_MODEL=1 */
static char g_model_err[1600];

static uint64_t rnd(void) {
    /* xorshift64* */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545f4914f6cdd1dull;
}

static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* Checks the model is there; FAILs (or skips visibly) otherwise. */
static bool need_model(void) {
    if (g_tok) return true;
    if (g_skip_model) {
        printf("\n  SKIPPED: no test model (LAMINA_ALLOW_NO_MODEL=1)\n");
        return false;
    }
    printf("\n  %s\n", g_model_err);
    CU_FAIL("the test model is needed (run scripts/fetch-model.sh or set LAMINA_MODEL_DIR)");
    return false;
}

static int32_t *enc(const lam_tok_t *t, const char *s, size_t n, bool add_special, bool parse_special,
                    size_t *n_ids) {
    int32_t *ids = NULL;
    *n_ids = 0;
    lam_status_t st = lam_tok_encode(t, s, n, add_special, parse_special, &ids, n_ids);
    CU_ASSERT_EQUAL(st, LAM_OK);
    return ids;
}

static bool ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof(int32_t)) == 0);
}

static void print_ids(const char *what, const int32_t *v, size_t n) {
    printf("    %s:", what);
    for (size_t i = 0; i < n; i++) printf(" %d", v[i]);
    printf("\n");
}

/* decode(encode(s)) == s; returns true if it holds. */
static bool round_trip(const lam_tok_t *t, const char *s, size_t n, bool parse_special) {
    size_t ni, dl = 0;
    int32_t *ids = enc(t, s, n, false, parse_special, &ni);
    char *d = NULL;
    lam_status_t st = lam_tok_decode(t, ids, ni, &d, &dl);
    bool ok = st == LAM_OK && dl == n && memcmp(d, s, n) == 0;
    free(ids);
    free(d);
    return ok;
}

static void print_hex(const char *what, const char *s, size_t n) {
    printf("    %s (%zu bytes):", what, n);
    for (size_t i = 0; i < n && i < 64; i++) printf(" %02x", (unsigned char)s[i]);
    printf("%s\n", n > 64 ? " ..." : "");
}

static void byte_coverage(const lam_tok_t *t, bool *covered) {
    for (int b = 0; b < 256; b++) covered[b] = lam_tok_byte_token(t, (uint8_t)b) != LAM_TOK_NULL;
}

/* ---- the llama.cpp fixture ---- */

typedef struct fx_line {
    char *text;
    size_t len;
    int32_t *ids;
    size_t n_ids;
} fx_line_t;

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A fixture file: lines grouped in sections ("@pre NAME" starts one; the
 * llama.cpp file has a single unnamed section). */
typedef struct fx_set {
    char name[32];
    fx_line_t *v;
    size_t n;
} fx_set_t;

static fx_set_t *g_fxs;  /* tests/fixtures/smollm2_tokens.txt */
static size_t g_n_fxs;
static fx_set_t *g_var;  /* tests/tokenizer/llamacpp_variants.txt */
static size_t g_n_var;
static fx_line_t *g_fx;  /* g_fxs[0] */
static size_t g_n_fx;
static bool g_fx_ok, g_var_ok;

static bool load_fixture(const char *rel, fx_set_t **sets_out, size_t *n_sets_out) {
    char path[1024];
    fx_source_path(rel, path, sizeof(path));
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("\n  cannot open %s\n", path);
        return false;
    }
    fx_set_t *sets = NULL;
    size_t n_sets = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    bool ok = true;
    while (ok && (got = getline(&line, &cap, f)) > 0) {
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got == 0 || line[0] == '#') continue;
        if (line[0] == '@' || n_sets == 0) {
            sets = realloc(sets, (n_sets + 1) * sizeof(*sets));
            memset(&sets[n_sets], 0, sizeof(sets[n_sets]));
            if (line[0] == '@')
                snprintf(sets[n_sets].name, sizeof(sets[n_sets].name), "%s",
                         !strncmp(line, "@pre ", 5) ? line + 5 : line + 1);
            n_sets++;
            if (line[0] == '@') continue;
        }
        fx_set_t *set = &sets[n_sets - 1];
        char *sp = strchr(line, ' ');
        size_t hl = sp ? (size_t)(sp - line) : (size_t)got;
        fx_line_t fl = {0};
        fl.text = malloc(hl / 2 + 1);
        ok = hl % 2 == 0;
        for (size_t i = 0; ok && i < hl / 2; i++) {
            int hi = hexval(line[2 * i]), lo = hexval(line[2 * i + 1]);
            ok = hi >= 0 && lo >= 0;
            fl.text[i] = (char)(hi << 4 | lo);
        }
        fl.len = hl / 2;
        fl.text[fl.len] = '\0';
        size_t idcap = 16;
        fl.ids = malloc(idcap * sizeof(int32_t));
        for (char *tok = sp ? strtok(sp, " \t") : NULL; tok; tok = strtok(NULL, " \t")) {
            if (fl.n_ids == idcap) fl.ids = realloc(fl.ids, (idcap *= 2) * sizeof(int32_t));
            fl.ids[fl.n_ids++] = (int32_t)strtol(tok, NULL, 10);
        }
        set->v = realloc(set->v, (set->n + 1) * sizeof(*set->v));
        set->v[set->n++] = fl;
    }
    free(line);
    fclose(f);
    if (!ok) printf("\n  malformed line in %s\n", path);
    *sets_out = sets;
    *n_sets_out = n_sets;
    return ok && n_sets > 0 && sets[0].n > 0;
}

static void free_fixture(fx_set_t *sets, size_t n) {
    for (size_t k = 0; k < n; k++) {
        for (size_t i = 0; i < sets[k].n; i++) {
            free(sets[k].v[i].text);
            free(sets[k].v[i].ids);
        }
        free(sets[k].v);
    }
    free(sets);
}

/* Encodes every line; prints the differences; returns how many matched. */
static size_t match_lines(const lam_tok_t *t, const fx_line_t *v, size_t n) {
    size_t matched = 0;
    for (size_t i = 0; i < n; i++) {
        size_t ni;
        int32_t *ids = enc(t, v[i].text, v[i].len, false, true, &ni);
        if (ids_equal(ids, ni, v[i].ids, v[i].n_ids)) {
            matched++;
        } else {
            printf("\n  line %zu differs: \"%.*s\"\n", i, (int)(v[i].len > 80 ? 80 : v[i].len), v[i].text);
            print_ids("llama.cpp", v[i].ids, v[i].n_ids);
            print_ids("lamina   ", ids, ni);
        }
        free(ids);
    }
    return matched;
}

static void test_fixture_matches_llamacpp(void) {
    if (!need_model()) return;
    CU_ASSERT_FATAL(g_fx_ok);
    size_t matched = match_lines(g_tok, g_fx, g_n_fx);
    printf("\n  fixture: %zu/%zu strings tokenised exactly as llama.cpp ", matched, g_n_fx);
    CU_ASSERT_EQUAL(matched, g_n_fx);
}

/* The model's vocabulary and merges, read into a spec by hand, with
 * another pre-tokenizer: checks lam_tok_create on a real vocabulary and
 * the llama3 / gpt2 splitters against llama.cpp. */
static lam_tok_t *model_vocab_with_pre(lam_tok_pre_t pre) {
    lam_gguf_vtype_t et;
    uint64_t n_tok, n_mrg;
    const void *data;
    if (lam_gguf_get_arr(g_gguf, "tokenizer.ggml.tokens", &et, &n_tok, &data) ||
        lam_gguf_get_arr(g_gguf, "tokenizer.ggml.merges", &et, &n_mrg, &data) ||
        lam_gguf_get_arr(g_gguf, "tokenizer.ggml.token_type", &et, &n_tok, &data))
        return NULL;
    const char **tok = malloc(n_tok * sizeof(char *)), **mrg = malloc(n_mrg * sizeof(char *));
    size_t *tl = malloc(n_tok * sizeof(size_t)), *ml = malloc(n_mrg * sizeof(size_t));
    int32_t *types = malloc(n_tok * sizeof(int32_t));
    memcpy(types, data, n_tok * sizeof(int32_t));
    lam_gguf_str_t str;
    for (uint64_t i = 0; i < n_tok; i++) {
        lam_gguf_get_arr_str(g_gguf, "tokenizer.ggml.tokens", i, &str);
        tok[i] = str.ptr;
        tl[i] = (size_t)str.len;
    }
    for (uint64_t i = 0; i < n_mrg; i++) {
        lam_gguf_get_arr_str(g_gguf, "tokenizer.ggml.merges", i, &str);
        mrg[i] = str.ptr;
        ml[i] = (size_t)str.len;
    }
    lam_tok_spec_t spec;
    lam_tok_spec_init(&spec, LAM_TOK_MODEL_BPE);
    spec.pre = pre;
    spec.n_vocab = (int32_t)n_tok;
    spec.tokens = tok;
    spec.token_lens = tl;
    spec.types = types;
    spec.merges = mrg;
    spec.merge_lens = ml;
    spec.n_merges = (size_t)n_mrg;
    spec.bos = 1;
    spec.eos = 2;
    lam_tok_t *t = NULL;
    CU_ASSERT_EQUAL(lam_tok_create(&spec, &t), LAM_OK);
    free(tok);
    free(tl);
    free(mrg);
    free(ml);
    free(types);
    return t;
}

static void test_bpe_variants(void) {
    if (!need_model()) return;
    CU_ASSERT_FATAL(g_var_ok);
    for (size_t k = 0; k < g_n_var; k++) {
        lam_tok_pre_t pre;
        if (!strcmp(g_var[k].name, "llama-bpe")) pre = LAM_TOK_PRE_LLAMA3;
        else if (!strcmp(g_var[k].name, "gpt-2")) pre = LAM_TOK_PRE_GPT2;
        else if (!strcmp(g_var[k].name, "spm")) continue; /* test_spm_llamacpp */
        else {
            printf("\n  unknown section '%s'\n", g_var[k].name);
            CU_FAIL("unknown fixture section");
            continue;
        }
        lam_tok_t *t = model_vocab_with_pre(pre);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        size_t matched = match_lines(t, g_var[k].v, g_var[k].n);
        printf("\n  pre %s: %zu/%zu strings as llama.cpp", g_var[k].name, matched, g_var[k].n);
        CU_ASSERT_EQUAL(matched, g_var[k].n);
        bool covered[256];
        byte_coverage(t, covered);
        for (size_t i = 0; i < g_var[k].n; i++) {
            const fx_line_t *l = &g_var[k].v[i];
            bool spellable = true;
            for (size_t j = 0; j < l->len; j++) spellable = spellable && covered[(unsigned char)l->text[j]];
            if (spellable && !round_trip(t, l->text, l->len, true)) CU_FAIL("round trip");
        }
        lam_tok_free(t);
    }
    printf(" ");
}

static void test_fixture_round_trip(void) {
    if (!need_model()) return;
    CU_ASSERT_FATAL(g_fx_ok);
    for (size_t i = 0; i < g_n_fx; i++) {
        for (int ps = 0; ps < 2; ps++) {
            if (!round_trip(g_tok, g_fx[i].text, g_fx[i].len, ps)) {
                print_hex("round trip failed", g_fx[i].text, g_fx[i].len);
                CU_FAIL("decode(encode(s)) != s");
            }
        }
    }
}

/* ---- the real model ---- */

static void test_model_metadata(void) {
    if (!need_model()) return;
    CU_ASSERT_EQUAL(lam_tok_n_vocab(g_tok), 49152);
    CU_ASSERT_EQUAL(lam_tok_model(g_tok), LAM_TOK_MODEL_BPE);
    CU_ASSERT_EQUAL(lam_tok_pre(g_tok), LAM_TOK_PRE_SMOLLM);
    CU_ASSERT_EQUAL(lam_tok_bos(g_tok), 1);
    CU_ASSERT_EQUAL(lam_tok_eos(g_tok), 2);
    CU_ASSERT_EQUAL(lam_tok_eot(g_tok), 2); /* <|im_end|> */
    CU_ASSERT_EQUAL(lam_tok_unk(g_tok), 0);
    CU_ASSERT_TRUE(lam_tok_is_eog(g_tok, 2));
    CU_ASSERT_TRUE(lam_tok_is_eog(g_tok, 0)); /* <|endoftext|> */
    CU_ASSERT_TRUE(lam_tok_is_eog(g_tok, 4)); /* <reponame>, as llama.cpp */
    CU_ASSERT_FALSE(lam_tok_is_eog(g_tok, 5));
    CU_ASSERT_FALSE(lam_tok_is_eog(g_tok, 1));
    CU_ASSERT_FALSE(lam_tok_is_eog(g_tok, 905));
    CU_ASSERT_TRUE(lam_tok_is_special(g_tok, 1));
    CU_ASSERT_FALSE(lam_tok_is_special(g_tok, 905));
    CU_ASSERT_EQUAL(lam_tok_type(g_tok, 1), LAM_TOK_TYPE_CONTROL);
    CU_ASSERT_EQUAL(lam_tok_type(g_tok, -1), LAM_TOK_TYPE_UNDEFINED);

    size_t n;
    const char *p = lam_tok_piece(g_tok, 905, &n); /* "Ġworld" */
    CU_ASSERT_TRUE(p && n == 6 && memcmp(p, " world", 6) == 0);
    p = lam_tok_text(g_tok, 905, &n);
    CU_ASSERT_TRUE(p && n == 7 && memcmp(p, "\xc4\xa0world", 7) == 0);
    p = lam_tok_piece(g_tok, 1, &n);
    CU_ASSERT_TRUE(p && n == 12 && memcmp(p, "<|im_start|>", 12) == 0);
    CU_ASSERT_PTR_NULL(lam_tok_piece(g_tok, 49152, &n));
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(lam_tok_find(g_tok, "<|im_end|>", 10), 2);
    CU_ASSERT_EQUAL(lam_tok_find(g_tok, "no such token", 13), LAM_TOK_NULL);

    /* a byte with a token encodes to it; SmolLM2 lacks 21, dropped as
     * llama.cpp drops them */
    int n_lost = 0;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        size_t ni;
        int32_t *ids = enc(g_tok, &c, 1, false, false, &ni);
        int32_t bt = lam_tok_byte_token(g_tok, (uint8_t)b);
        if (bt == LAM_TOK_NULL) {
            n_lost++;
            CU_ASSERT_EQUAL(ni, 0);
        } else {
            CU_ASSERT_TRUE(ni == 1 && ids[0] == bt);
            p = lam_tok_piece(g_tok, bt, &n);
            CU_ASSERT_TRUE(n == 1 && (unsigned char)p[0] == b);
        }
        free(ids);
    }
    CU_ASSERT_EQUAL(n_lost, 21);
    CU_ASSERT_EQUAL(lam_tok_byte_token(g_tok, 0xff), LAM_TOK_NULL);
    CU_ASSERT_EQUAL(lam_tok_byte_token(g_tok, 'a'), 81);

    /* add_special adds nothing for SmolLM2 (add_bos_token = false) */
    size_t n1, n2;
    int32_t *a = enc(g_tok, "Hi", 2, true, true, &n1), *b = enc(g_tok, "Hi", 2, false, true, &n2);
    CU_ASSERT_TRUE(ids_equal(a, n1, b, n2));
    free(a);
    free(b);

    char *d = NULL;
    int32_t bad = 49152;
    CU_ASSERT_EQUAL(lam_tok_decode(g_tok, &bad, 1, &d, &n), LAM_ERR_RANGE);
    CU_ASSERT_EQUAL(lam_tok_decode(g_tok, NULL, 0, &d, &n), LAM_OK);
    CU_ASSERT_TRUE(d && n == 0 && d[0] == '\0');
    free(d);
    int32_t *ids = (int32_t *)1;
    CU_ASSERT_EQUAL(lam_tok_encode(g_tok, NULL, 0, false, true, &ids, &n), LAM_OK);
    CU_ASSERT_EQUAL(n, 0);
    free(ids);
}

static void test_special_parsing(void) {
    if (!need_model()) return;
    const char *s = "<|im_start|>user\nHi<|im_end|>";
    size_t n;
    int32_t *ids = enc(g_tok, s, strlen(s), false, true, &n);
    CU_ASSERT_TRUE(n >= 3 && ids[0] == 1 && ids[n - 1] == 2);
    size_t n_special = 0;
    for (size_t i = 0; i < n; i++) n_special += lam_tok_is_special(g_tok, ids[i]);
    CU_ASSERT_EQUAL(n_special, 2);
    free(ids);

    ids = enc(g_tok, s, strlen(s), false, false, &n);
    CU_ASSERT_TRUE(n > 3);
    for (size_t i = 0; i < n; i++) CU_ASSERT_FALSE(lam_tok_is_special(g_tok, ids[i]));
    char *d = NULL;
    size_t dl;
    CU_ASSERT_EQUAL(lam_tok_decode(g_tok, ids, n, &d, &dl), LAM_OK);
    CU_ASSERT_TRUE(d && dl == strlen(s) && strcmp(d, s) == 0);
    free(d);
    free(ids);

    /* adjacent and repeated specials, and a near miss */
    s = "<|im_end|><|im_end|>x<|im_end|";
    ids = enc(g_tok, s, strlen(s), false, true, &n);
    CU_ASSERT_TRUE(n >= 3 && ids[0] == 2 && ids[1] == 2);
    for (size_t i = 2; i < n; i++) CU_ASSERT_NOT_EQUAL(ids[i], 2);
    free(ids);
}

/* Random text: raw bytes, or UTF-8 from a mix of scripts, spaces, digits,
 * punctuation, and (optionally) special-token texts. */
/* covered: bytes that may appear (NULL: all), so that round trips are
 * only asked of text the vocabulary can spell */
static size_t random_text(char *buf, size_t cap, bool raw, bool specials, bool no_2581, const bool *covered) {
    static const char *const sp[] = {"<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start", "|>"};
    static const uint32_t ranges[][2] = {
        {0x20, 0x7e}, {0x30, 0x39}, {0x09, 0x0d}, {0x20, 0x20}, {0xa0, 0x24f}, {0x370, 0x3ff},
        {0x400, 0x4ff}, {0x600, 0x6ff}, {0x900, 0x97f}, {0x2000, 0x206f}, {0x2100, 0x2bff},
        {0x3000, 0x30ff}, {0x4e00, 0x9fff}, {0xac00, 0xd7a3}, {0xff00, 0xffef}, {0x1f300, 0x1faff},
        {0x10000, 0x10ffff}, {0x0, 0x1f},
    };
    size_t n = 0, want = rnd_below(cap / 4);
    if (raw) {
        while (n < want) {
            unsigned char b = (unsigned char)rnd();
            if (!covered || covered[b]) buf[n++] = (char)b;
        }
        return n;
    }
    while (n + 16 < cap && n < want) {
        if (specials && rnd_below(12) == 0) {
            const char *s = sp[rnd_below(sizeof(sp) / sizeof(sp[0]))];
            memcpy(buf + n, s, strlen(s));
            n += strlen(s);
            continue;
        }
        const uint32_t *r = ranges[rnd_below(sizeof(ranges) / sizeof(ranges[0]))];
        uint32_t c = r[0] + (uint32_t)rnd_below(r[1] - r[0] + 1);
        if ((c >= 0xd800 && c <= 0xdfff) || (no_2581 && c == 0x2581)) continue;
        size_t start = n;
        if (c < 0x80) {
            buf[n++] = (char)c;
        } else if (c < 0x800) {
            buf[n++] = (char)(0xc0 | c >> 6);
            buf[n++] = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            buf[n++] = (char)(0xe0 | c >> 12);
            buf[n++] = (char)(0x80 | ((c >> 6) & 0x3f));
            buf[n++] = (char)(0x80 | (c & 0x3f));
        } else {
            buf[n++] = (char)(0xf0 | c >> 18);
            buf[n++] = (char)(0x80 | ((c >> 12) & 0x3f));
            buf[n++] = (char)(0x80 | ((c >> 6) & 0x3f));
            buf[n++] = (char)(0x80 | (c & 0x3f));
        }
        for (size_t i = start; covered && i < n; i++)
            if (!covered[(unsigned char)buf[i]]) n = start; /* not spellable: drop it */
    }
    return n;
}

static void test_random_round_trip(void) {
    if (!need_model()) return;
    static char buf[2048];
    bool covered[256];
    byte_coverage(g_tok, covered);
    size_t fails = 0, runs = 0;
    for (int i = 0; i < 1500; i++) {
        int kind = i % 3;
        size_t n = random_text(buf, sizeof(buf), kind == 0, kind == 2, false, covered);
        for (int ps = 0; ps < 2; ps++) {
            runs++;
            if (!round_trip(g_tok, buf, n, ps)) {
                if (fails++ < 3) print_hex("round trip failed", buf, n);
            }
        }
    }
    printf("\n  %zu random round trips, %zu failed ", runs, fails);
    CU_ASSERT_EQUAL(fails, 0);
}

/* A 256 KiB word, a long digit run and a long space run stay fast. */
static void test_long_input(void) {
    if (!need_model()) return;
    size_t n = 256 * 1024;
    char *s = malloc(n);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int kind = 0; kind < 3; kind++) {
        for (size_t i = 0; i < n; i++)
            s[i] = kind == 0 ? b64[rnd_below(52)] : kind == 1 ? (char)('0' + rnd_below(10)) : ' ';
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        size_t ni;
        int32_t *ids = enc(g_tok, s, n, false, true, &ni);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        printf("\n  %s: %zu bytes -> %zu tokens in %.1f ms", kind == 0 ? "letters" : kind == 1 ? "digits" : "spaces",
               n, ni, ms);
        char *d = NULL;
        size_t dl;
        CU_ASSERT_EQUAL(lam_tok_decode(g_tok, ids, ni, &d, &dl), LAM_OK);
        CU_ASSERT_TRUE(d && dl == n && memcmp(d, s, n) == 0);
        free(d);
        free(ids);
    }
    printf(" ");
    free(s);
}

static void test_chat_template(void) {
    static const char *expected =
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat's 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n2 + 2 = 4.<|im_end|>\n"
        "<|im_start|>user\nAnd times three?<|im_end|>\n"
        "<|im_start|>assistant\n";
    lam_chat_msg_t msgs[] = {
        {"user", "What's 2+2?"}, {"assistant", "2 + 2 = 4."}, {"user", "And times three?"}};
    char *out = NULL;

    /* explicit default system message, no model needed */
    CU_ASSERT_EQUAL(lam_chat_render(LAM_CHAT_CHATML, msgs, 3, true,
                                    "You are a helpful AI assistant named SmolLM, trained by Hugging Face", &out),
                    LAM_OK);
    CU_ASSERT_STRING_EQUAL(out, expected);
    free(out);

    lam_chat_msg_t sys[] = {{"system", "Be brief."}, {"user", "Hi"}};
    CU_ASSERT_EQUAL(lam_chat_render(LAM_CHAT_CHATML, sys, 2, false, "ignored", &out), LAM_OK);
    CU_ASSERT_STRING_EQUAL(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    free(out);
    CU_ASSERT_EQUAL(lam_chat_render(LAM_CHAT_CHATML, NULL, 0, true, "x", &out), LAM_OK);
    CU_ASSERT_STRING_EQUAL(out, "<|im_start|>assistant\n");
    free(out);
    CU_ASSERT_EQUAL(lam_chat_render(LAM_CHAT_LLAMA3, sys, 2, true, NULL, &out), LAM_OK);
    CU_ASSERT_STRING_EQUAL(out,
                           "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                           "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    free(out);
    lam_chat_msg_t bad[] = {{"user", NULL}};
    CU_ASSERT_EQUAL(lam_chat_render(LAM_CHAT_CHATML, bad, 1, true, NULL, &out), LAM_ERR_INVALID_ARG);

    if (!need_model()) return;
    /* the default comes from the model's template */
    lam_chat_format_t fmt = LAM_CHAT_LLAMA3;
    CU_ASSERT_TRUE(lam_tok_chat_format(g_tok, &fmt));
    CU_ASSERT_EQUAL(fmt, LAM_CHAT_CHATML);
    CU_ASSERT_STRING_EQUAL(lam_tok_chat_default_system(g_tok),
                           "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    CU_ASSERT_EQUAL(lam_tok_chat_render(g_tok, msgs, 3, true, &out), LAM_OK);
    CU_ASSERT_STRING_EQUAL(out, expected);

    /* and the rendered prompt tokenises as llama.cpp does (last fixture line) */
    CU_ASSERT_FATAL(g_fx_ok);
    bool found = false;
    for (size_t i = 0; i < g_n_fx; i++) {
        if (g_fx[i].len == strlen(out) && memcmp(g_fx[i].text, out, g_fx[i].len) == 0) {
            size_t n;
            int32_t *ids = enc(g_tok, out, strlen(out), false, true, &n);
            CU_ASSERT_TRUE(ids_equal(ids, n, g_fx[i].ids, g_fx[i].n_ids));
            free(ids);
            found = true;
        }
    }
    if (!found) printf("\n  (rendered chat prompt is not among the fixture strings) ");
    free(out);
}

/* ---- pre-tokenizers ---- */

typedef struct split_case {
    lam_tok_pre_t pre;
    const char *text;
    const char *words[24]; /* NULL-terminated */
} split_case_t;

/* Expected splits checked against Python's `regex` module with the
 * patterns in tok_pretok.c. */
static const split_case_t split_cases[] = {
    {LAM_TOK_PRE_GPT2, "Hello world", {"Hello", " world"}},
    {LAM_TOK_PRE_GPT2, "I'm  ok!!\n\n x", {"I", "'m", " ", " ok", "!!", "\n\n", " x"}},
    {LAM_TOK_PRE_GPT2, "they'll've IT'S", {"they", "'ll", "'ve", " IT", "'", "S"}},
    {LAM_TOK_PRE_GPT2, "abc123 4x", {"abc", "123", " 4", "x"}},
    {LAM_TOK_PRE_GPT2, "x   ", {"x", "   "}},
    {LAM_TOK_PRE_GPT2, " \t!", {" ", "\t", "!"}},
    {LAM_TOK_PRE_GPT2, "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87\xef\xbc\x8c", {"caf\xc3\xa9", " \xe4\xb8\xad\xe6\x96\x87", "\xef\xbc\x8c"}},
    {LAM_TOK_PRE_GPT2, "a\xc2\xa0" "b", {"a", "\xc2\xa0", "b"}},
    /* U+2EE58, CJK Ext. I (Unicode 15.1), is a letter */
    {LAM_TOK_PRE_GPT2, "\xf0\xae\xb9\x98're", {"\xf0\xae\xb9\x98", "'re"}},
    {LAM_TOK_PRE_SMOLLM, "abc123 4x", {"abc", "1", "2", "3", " ", "4", "x"}},
    {LAM_TOK_PRE_SMOLLM, "v2.0 \xd9\xa3", {"v", "2", ".", "0", " ", "\xd9\xa3"}},
    {LAM_TOK_PRE_SMOLLM, "x 1", {"x", " ", "1"}},
    {LAM_TOK_PRE_LLAMA3, "Hello 12345 world's\r\n\r\n  x",
     {"Hello", " ", "123", "45", " world", "'s", "\r\n\r\n", " ", " x"}},
    {LAM_TOK_PRE_LLAMA3, "IT'S (ok)\n", {"IT", "'S", " (", "ok", ")\n"}},
    {LAM_TOK_PRE_LLAMA3, "a  b \n", {"a", " ", " b", " \n"}},
    {LAM_TOK_PRE_LLAMA3, "x ", {"x", " "}},
    {LAM_TOK_PRE_LLAMA3, "!!a\t\tb", {"!!", "a", "\t", "\tb"}},
};

static void test_pretokenizers(void) {
    lam_tok_pretok_scratch_t sc = {0};
    lam_tok_spans_t sp = {0};
    for (size_t c = 0; c < sizeof(split_cases) / sizeof(split_cases[0]); c++) {
        const split_case_t *k = &split_cases[c];
        sp.n = 0;
        CU_ASSERT_EQUAL_FATAL(lam_tok_pretokenize(k->pre, k->text, strlen(k->text), &sc, &sp), LAM_OK);
        size_t nw = 0;
        while (k->words[nw]) nw++;
        bool ok = sp.n == nw;
        for (size_t i = 0; ok && i < nw; i++)
            ok = sp.v[i].len == strlen(k->words[i]) && memcmp(k->text + sp.v[i].off, k->words[i], sp.v[i].len) == 0;
        if (!ok) {
            printf("\n  split case %zu (pre %d) \"%s\" gave:", c, (int)k->pre, k->text);
            for (size_t i = 0; i < sp.n; i++) printf(" [%.*s]", (int)sp.v[i].len, k->text + sp.v[i].off);
            printf("\n");
        }
        CU_ASSERT_TRUE(ok);
    }
    /* words tile the input exactly, for any bytes */
    char buf[512];
    for (int i = 0; i < 300; i++) {
        size_t n = random_text(buf, sizeof(buf), i % 2 == 0, false, false, NULL);
        for (int pre = 0; pre < 3; pre++) {
            sp.n = 0;
            CU_ASSERT_EQUAL(lam_tok_pretokenize((lam_tok_pre_t)pre, buf, n, &sc, &sp), LAM_OK);
            size_t pos = 0;
            bool ok = true;
            for (size_t w = 0; w < sp.n; w++) {
                ok = ok && sp.v[w].off == pos && sp.v[w].len > 0;
                pos += sp.v[w].len;
            }
            CU_ASSERT_TRUE(ok && pos == n);
        }
    }
    free(sp.v);
    lam_tok_pretok_scratch_free(&sc);
}

/* ---- small hand-built vocabularies ---- */

/* Byte-level BPE over a few letters: every byte's mapped character is a
 * token (ids 0..255 in byte order), then merged tokens. */
typedef struct small_bpe {
    char text[256 + 16][8];
    const char *tokens[256 + 16];
    int32_t types[256 + 16];
    int n;
} small_bpe_t;

static size_t utf8_put(uint32_t c, char *o) {
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    o[0] = (char)(0xc0 | c >> 6);
    o[1] = (char)(0x80 | (c & 0x3f));
    return 2;
}

static uint32_t gpt2_byte_cp(unsigned b) {
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae) return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || x >= 0xae)) k++;
    return 0x100 + k;
}

static int32_t small_add(small_bpe_t *v, const char *s, int32_t type) {
    snprintf(v->text[v->n], sizeof(v->text[0]), "%s", s);
    v->tokens[v->n] = v->text[v->n];
    v->types[v->n] = type;
    return v->n++;
}

static void small_bpe_init(small_bpe_t *v) {
    v->n = 0;
    for (unsigned b = 0; b < 256; b++) {
        char t[8] = {0};
        utf8_put(gpt2_byte_cp(b), t);
        small_add(v, t, LAM_TOK_TYPE_NORMAL);
    }
}

static void test_small_bpe(void) {
    small_bpe_t v;
    small_bpe_init(&v);
    int32_t ab = small_add(&v, "ab", 1);         /* 256 */
    int32_t bc = small_add(&v, "bc", 1);         /* 257 */
    int32_t abc = small_add(&v, "abc", 1);       /* 258 */
    int32_t sp_a = small_add(&v, "\xc4\xa0" "a", 1); /* "Ġa" 259 */
    int32_t end = small_add(&v, "<end>", LAM_TOK_TYPE_CONTROL); /* 260 */
    int32_t usr = small_add(&v, "<u>", LAM_TOK_TYPE_USER_DEFINED); /* 261 */
    int32_t whole = small_add(&v, "cab", 1);     /* 262: no merge makes it */
    /* rank order: "b c" before "a b", so "abc" -> a + bc -> no "a bc" merge */
    const char *merges[] = {"b c", "a b", "ab c", "\xc4\xa0 a"};
    lam_tok_spec_t spec;
    lam_tok_spec_init(&spec, LAM_TOK_MODEL_BPE);
    spec.n_vocab = v.n;
    spec.tokens = v.tokens;
    spec.types = v.types;
    spec.merges = merges;
    spec.n_merges = 4;
    spec.eos = end;
    lam_tok_t *t = NULL;
    CU_ASSERT_EQUAL_FATAL(lam_tok_create(&spec, &t), LAM_OK);

    size_t n;
    int32_t *ids = enc(t, "abc", 3, false, true, &n);
    int32_t e1[] = {'a', bc};
    CU_ASSERT_TRUE(ids_equal(ids, n, e1, 2));
    free(ids);
    ids = enc(t, "ab a", 4, false, true, &n);
    int32_t e2[] = {ab, sp_a};
    CU_ASSERT_TRUE(ids_equal(ids, n, e2, 2));
    free(ids);
    ids = enc(t, "abab", 4, false, true, &n);
    int32_t e3[] = {ab, ab};
    CU_ASSERT_TRUE(ids_equal(ids, n, e3, 2));
    free(ids);
    /* specials: control only with parse_special, user-defined always */
    ids = enc(t, "a<end>b<u>", 10, false, true, &n);
    int32_t e4[] = {'a', end, 'b', usr};
    CU_ASSERT_TRUE(ids_equal(ids, n, e4, 4));
    free(ids);
    ids = enc(t, "a<end>b<u>", 10, false, false, &n);
    int32_t e5[] = {'a', '<', 'e', 'n', 'd', '>', 'b', usr};
    CU_ASSERT_TRUE(ids_equal(ids, n, e5, 8));
    free(ids);
    ids = enc(t, "cab", 3, false, true, &n);
    int32_t e6[] = {'c', ab};
    CU_ASSERT_TRUE(ids_equal(ids, n, e6, 2));
    free(ids);
    /* every byte has a token here, so any bytes survive a round trip */
    char buf[1024];
    size_t fails = 0;
    for (int i = 0; i < 300; i++) {
        size_t len = random_text(buf, sizeof(buf), i % 2 == 0, i % 3 == 0, false, NULL);
        for (int ps = 0; ps < 2; ps++)
            if (!round_trip(t, buf, len, ps) && fails++ < 3) print_hex("round trip failed", buf, len);
    }
    CU_ASSERT_EQUAL(fails, 0);
    lam_tok_free(t);

    /* llama3 pre-tokenizer looks whole words up before merging */
    spec.pre = LAM_TOK_PRE_LLAMA3;
    CU_ASSERT_EQUAL_FATAL(lam_tok_create(&spec, &t), LAM_OK);
    ids = enc(t, "cab", 3, false, true, &n);
    CU_ASSERT_TRUE(n == 1 && ids[0] == whole);
    free(ids);
    ids = enc(t, "abc", 3, false, true, &n);
    CU_ASSERT_TRUE(n == 1 && ids[0] == abc);
    free(ids);
    lam_tok_free(t);

    /* add_special with add_bos/add_eos */
    spec.pre = LAM_TOK_PRE_GPT2;
    spec.bos = end;
    spec.add_bos = spec.add_eos = true;
    CU_ASSERT_EQUAL_FATAL(lam_tok_create(&spec, &t), LAM_OK);
    ids = enc(t, "ab", 2, true, true, &n);
    int32_t e7[] = {end, ab, end};
    CU_ASSERT_TRUE(ids_equal(ids, n, e7, 3));
    free(ids);
    CU_ASSERT_TRUE(lam_tok_is_eog(t, end));
    lam_tok_free(t);
}

/* Which chat format and default system message a template implies. */
static void test_chat_detect(void) {
    static const struct {
        const char *tmpl;
        bool supported;
        lam_chat_format_t fmt;
        const char *default_system;
    } cases[] = {
        {NULL, true, LAM_CHAT_CHATML, NULL},
        /* SmolLM2's, with a real newline and with a Jinja "\n" escape */
        {"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
         "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
         "'<|im_end|>' + '\n'}}{% endfor %}",
         true, LAM_CHAT_CHATML, "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
        {"{{ '<|im_start|>system\\nBe kind.\\nAlways.<|im_end|>\\n' }}{{ '<|im_start|>' + m['role'] }}",
         true, LAM_CHAT_CHATML, "Be kind.\nAlways."},
        /* Qwen2.5 style: the first system header is followed by an expression */
        {"{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + "
         "'<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen.<|im_end|>\n' }}{%- endif %}",
         true, LAM_CHAT_CHATML, "You are Qwen."},
        {"{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}",
         true, LAM_CHAT_CHATML, NULL},
        {"{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}", true, LAM_CHAT_LLAMA3, NULL},
        {"{{ '[INST] ' + message['content'] + ' [/INST]' }}", false, LAM_CHAT_CHATML, NULL},
    };
    small_bpe_t v;
    small_bpe_init(&v);
    small_add(&v, "ab", LAM_TOK_TYPE_NORMAL);
    const char *merges[] = {"a b"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lam_tok_spec_t spec;
        lam_tok_spec_init(&spec, LAM_TOK_MODEL_BPE);
        spec.n_vocab = v.n;
        spec.tokens = v.tokens;
        spec.types = v.types;
        spec.merges = merges;
        spec.n_merges = 1;
        spec.chat_template = cases[i].tmpl;
        spec.chat_template_len = cases[i].tmpl ? strlen(cases[i].tmpl) : 0;
        lam_tok_t *t = NULL;
        CU_ASSERT_EQUAL_FATAL(lam_tok_create(&spec, &t), LAM_OK);
        lam_chat_format_t fmt = (lam_chat_format_t)-1;
        bool sup = lam_tok_chat_format(t, &fmt);
        const char *ds = lam_tok_chat_default_system(t);
        bool ok = sup == cases[i].supported && (!sup || fmt == cases[i].fmt) &&
                  ((ds == NULL) == (cases[i].default_system == NULL)) &&
                  (!ds || strcmp(ds, cases[i].default_system) == 0);
        if (!ok) printf("\n  chat template case %zu: supported %d fmt %d default '%s'\n", i, sup, (int)fmt, ds ? ds : "(none)");
        CU_ASSERT_TRUE(ok);
        lam_tok_free(t);
    }
}

/* SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces. */
enum { SPM_UNK, SPM_BOS, SPM_EOS, SPM_BYTE0, SPM_SP = SPM_BYTE0 + 256, SPM_A, SPM_B, SPM_C, SPM_AB,
       SPM_BC, SPM_SPA, SPM_SPAB, SPM_ABC, SPM_AA, SPM_SPT, SPM_TH, SPM_HE, SPM_THE, SPM_SPTHE, SPM_E,
       SPM_T, SPM_H, SPM_SPSP, SPM_N };

typedef struct spm_vocab {
    char text[SPM_N][12];
    const char *tokens[SPM_N];
    float scores[SPM_N];
    int32_t types[SPM_N];
} spm_vocab_t;

static void spm_vocab_init(spm_vocab_t *v) {
    static const struct { const char *s; float score; } pieces[] = {
        {"\xe2\x96\x81", -1.0f}, {"a", -2.0f}, {"b", -2.0f}, {"c", -2.0f}, {"ab", -1.5f},
        {"bc", -0.5f}, {"\xe2\x96\x81" "a", -1.0f}, {"\xe2\x96\x81" "ab", -3.0f}, {"abc", -0.2f}, {"aa", -1.0f},
        {"\xe2\x96\x81" "t", -4.0f}, {"th", -3.0f}, {"he", -3.5f}, {"the", -2.5f}, {"\xe2\x96\x81" "the", -1.2f},
        {"e", -5.0f}, {"t", -5.0f}, {"h", -5.0f}, {"\xe2\x96\x81\xe2\x96\x81", -6.0f},
    };
    for (int i = 0; i < SPM_N; i++) {
        v->scores[i] = 0.0f;
        if (i == SPM_UNK) {
            snprintf(v->text[i], sizeof(v->text[i]), "<unk>");
            v->types[i] = LAM_TOK_TYPE_UNKNOWN;
        } else if (i == SPM_BOS || i == SPM_EOS) {
            snprintf(v->text[i], sizeof(v->text[i]), "%s", i == SPM_BOS ? "<s>" : "</s>");
            v->types[i] = LAM_TOK_TYPE_CONTROL;
        } else if (i < SPM_SP) {
            snprintf(v->text[i], sizeof(v->text[i]), "<0x%02X>", i - SPM_BYTE0);
            v->types[i] = LAM_TOK_TYPE_BYTE;
        } else {
            snprintf(v->text[i], sizeof(v->text[i]), "%s", pieces[i - SPM_SP].s);
            v->scores[i] = pieces[i - SPM_SP].score;
            v->types[i] = LAM_TOK_TYPE_NORMAL;
        }
        v->tokens[i] = v->text[i];
    }
}

typedef struct spm_case {
    const char *text;
    bool space_prefix, add_special, parse_special;
    int32_t ids[12];
    int n;
} spm_case_t;

/* Worked by hand from the scores above (higher merges first, ties to the
 * left): "▁abc": bc(-0.5) > ▁a(-1.0) > ab(-1.5), then a+bc = abc(-0.2). */
static const spm_case_t spm_cases[] = {
    {"abc", true, false, true, {SPM_SP, SPM_ABC}, 2},
    {"ab", true, false, true, {SPM_SPAB}, 1},
    {"ab", true, true, true, {SPM_BOS, SPM_SPAB}, 2},
    {"\xc3\xa9", true, false, true, {SPM_SP, SPM_BYTE0 + 0xc3, SPM_BYTE0 + 0xa9}, 3},
    {"a b", false, false, true, {SPM_A, SPM_SP, SPM_B}, 3},
    {"aaa", false, false, true, {SPM_AA, SPM_A}, 2},
    {"<s>ab", true, false, true, {SPM_BOS, SPM_SPAB}, 2},
    {"<s>ab", true, false, false, {SPM_SP, SPM_BYTE0 + '<', SPM_BYTE0 + 's', SPM_BYTE0 + '>', SPM_AB}, 5},
    {"c</s>", true, false, true, {SPM_SP, SPM_C, SPM_EOS}, 3},
    {"", true, true, true, {SPM_BOS}, 1},
};

static void check_spm(lam_tok_t *t, const spm_case_t *k, size_t idx) {
    size_t n;
    int32_t *ids = enc(t, k->text, strlen(k->text), k->add_special, k->parse_special, &n);
    bool ok = ids_equal(ids, n, k->ids, (size_t)k->n);
    if (!ok) {
        printf("\n  spm case %zu \"%s\"\n", idx, k->text);
        print_ids("expected", k->ids, (size_t)k->n);
        print_ids("got     ", ids, n);
    }
    CU_ASSERT_TRUE(ok);
    free(ids);
}

static void test_spm_arrays(void) {
    static spm_vocab_t v;
    spm_vocab_init(&v);
    lam_tok_spec_t spec;
    lam_tok_spec_init(&spec, LAM_TOK_MODEL_SPM);
    spec.n_vocab = SPM_N;
    spec.tokens = v.tokens;
    spec.scores = v.scores;
    spec.types = v.types;
    spec.unk = SPM_UNK;
    spec.bos = SPM_BOS;
    spec.eos = SPM_EOS;
    for (int sp = 0; sp < 2; sp++) {
        spec.add_space_prefix = sp;
        lam_tok_t *t = NULL;
        CU_ASSERT_EQUAL_FATAL(lam_tok_create(&spec, &t), LAM_OK);
        for (size_t i = 0; i < sizeof(spm_cases) / sizeof(spm_cases[0]); i++)
            if (spm_cases[i].space_prefix == (bool)sp) check_spm(t, &spm_cases[i], i);
        size_t n;
        const char *p = lam_tok_piece(t, SPM_SPAB, &n);
        CU_ASSERT_TRUE(n == 3 && memcmp(p, " ab", 3) == 0);
        p = lam_tok_piece(t, SPM_BYTE0 + 0xc3, &n);
        CU_ASSERT_TRUE(n == 1 && (unsigned char)p[0] == 0xc3);
        /* round trips, U+2581 excluded (SentencePiece maps it to a space) */
        char buf[1024];
        size_t fails = 0;
        for (int i = 0; i < 400; i++) {
            size_t len = random_text(buf, sizeof(buf), false, false, true, NULL);
            for (int ps = 0; ps < 2; ps++)
                if (!round_trip(t, buf, len, ps) && fails++ < 3) print_hex("spm round trip failed", buf, len);
        }
        CU_ASSERT_EQUAL(fails, 0);
        const char *s = "<s> x<s>y";
        CU_ASSERT_TRUE(round_trip(t, s, strlen(s), true));
        lam_tok_free(t);
    }
}

/* The same vocabulary through llama.cpp (llamacpp_variants.txt, @spm). */
static void test_spm_llamacpp(void) {
    CU_ASSERT_FATAL(g_var_ok);
    static spm_vocab_t v;
    spm_vocab_init(&v);
    lam_tok_spec_t spec;
    lam_tok_spec_init(&spec, LAM_TOK_MODEL_SPM);
    spec.n_vocab = SPM_N;
    spec.tokens = v.tokens;
    spec.scores = v.scores;
    spec.types = v.types;
    spec.unk = SPM_UNK;
    spec.bos = SPM_BOS;
    spec.eos = SPM_EOS;
    lam_tok_t *t = NULL;
    CU_ASSERT_EQUAL_FATAL(lam_tok_create(&spec, &t), LAM_OK);
    bool found = false;
    for (size_t k = 0; k < g_n_var; k++) {
        if (strcmp(g_var[k].name, "spm") != 0) continue;
        found = true;
        size_t matched = match_lines(t, g_var[k].v, g_var[k].n);
        printf("\n  spm: %zu/%zu strings as llama.cpp ", matched, g_var[k].n);
        CU_ASSERT_EQUAL(matched, g_var[k].n);
    }
    CU_ASSERT_TRUE(found);
    lam_tok_free(t);
}

/* ---- GGUF files built in memory ---- */

static void kv_arr_str(gb_t *b, const char *key, const char *const *v, size_t n) {
    gb_kv_arr(b, key, LAM_GGUF_STRING, n);
    for (size_t i = 0; i < n; i++) gb_str(b, v[i]);
}

static void kv_arr_i32(gb_t *b, const char *key, const int32_t *v, size_t n) {
    gb_kv_arr(b, key, LAM_GGUF_INT32, n);
    for (size_t i = 0; i < n; i++) gb_u32(b, (uint32_t)v[i]);
}

static void kv_arr_f32(gb_t *b, const char *key, const float *v, size_t n) {
    gb_kv_arr(b, key, LAM_GGUF_FLOAT32, n);
    for (size_t i = 0; i < n; i++) gb_f32(b, v[i]);
}

/* Header + the kvs in `kv` (count n_kv) + padding; zero tensors. */
static const char *write_gguf(const gb_t *kv, uint64_t n_kv, const char *tag) {
    gb_t f = {0};
    gb_bytes(&f, "GGUF", 4);
    gb_u32(&f, 3);
    gb_u64(&f, 0);
    gb_u64(&f, n_kv);
    gb_bytes(&f, kv->buf, kv->len);
    gb_pad(&f, 32);
    const char *path = gb_write_tmp(&f, tag);
    gb_free(&f);
    return path;
}

static lam_status_t tok_from_file(const char *path, lam_tok_t **t) {
    lam_gguf_t *g = NULL;
    char err[256];
    lam_status_t st = lam_gguf_open(path, &g, err, sizeof(err));
    if (st != LAM_OK) {
        printf("\n  gguf open failed: %s\n", err);
        return st;
    }
    st = lam_tok_from_gguf(g, t);
    lam_gguf_close(g);
    return st;
}

static void test_spm_gguf(void) {
    static spm_vocab_t v;
    spm_vocab_init(&v);
    gb_t kv = {0};
    gb_kv_str(&kv, "tokenizer.ggml.model", "llama");
    kv_arr_str(&kv, "tokenizer.ggml.tokens", v.tokens, SPM_N);
    kv_arr_f32(&kv, "tokenizer.ggml.scores", v.scores, SPM_N);
    kv_arr_i32(&kv, "tokenizer.ggml.token_type", v.types, SPM_N);
    gb_kv_u32(&kv, "tokenizer.ggml.bos_token_id", SPM_BOS);
    gb_kv_u32(&kv, "tokenizer.ggml.eos_token_id", SPM_EOS);
    gb_kv_u32(&kv, "tokenizer.ggml.unknown_token_id", SPM_UNK);
    gb_kv_bool(&kv, "tokenizer.ggml.add_bos_token", 1);
    gb_kv_str(&kv, "tokenizer.chat_template", "{{ '[INST] ' + message['content'] + ' [/INST]' }}");
    const char *path = write_gguf(&kv, 9, "tok_spm");
    gb_free(&kv);
    lam_tok_t *t = NULL;
    CU_ASSERT_EQUAL_FATAL(tok_from_file(path, &t), LAM_OK);
    unlink(path);
    CU_ASSERT_EQUAL(lam_tok_model(t), LAM_TOK_MODEL_SPM);
    CU_ASSERT_EQUAL(lam_tok_bos(t), SPM_BOS);
    CU_ASSERT_TRUE(lam_tok_is_eog(t, SPM_EOS));
    for (size_t i = 0; i < sizeof(spm_cases) / sizeof(spm_cases[0]); i++)
        if (spm_cases[i].space_prefix) check_spm(t, &spm_cases[i], i); /* SPM default: prefix on */
    /* an [INST] template is not a format we render */
    char *out = NULL;
    lam_chat_msg_t m = {"user", "hi"};
    CU_ASSERT_FALSE(lam_tok_chat_format(t, NULL));
    CU_ASSERT_EQUAL(lam_tok_chat_render(t, &m, 1, true, &out), LAM_ERR_UNSUPPORTED);
    lam_tok_free(t);
}

/* Malformed metadata: each case breaks one thing in an otherwise valid
 * tiny BPE vocabulary and must give a clean error, never a crash. */
enum fault {
    F_NONE, F_PRE_UNKNOWN, F_NO_MODEL, F_MODEL_BERT, F_MODEL_U32, F_NO_TOKENS, F_TOKENS_U32,
    F_TOKENS_EMPTY, F_NO_MERGES, F_MERGE_UNKNOWN, F_MERGE_RESULT_UNKNOWN, F_MERGE_NO_SPACE,
    F_MERGES_I32, F_BOS_RANGE, F_EOS_STRING, F_BOS_NEGATIVE, F_TYPES_COUNT, F_TYPES_STR,
    F_TYPE_VALUE, F_SCORES_I32, F_SCORES_COUNT, F_ADD_BOS_NO_BOS, F_ADD_BOS_U32, F_TEMPLATE_U32,
};

static const struct {
    enum fault f;
    const char *name;
    lam_status_t want;
} bad_cases[] = {
    {F_NONE, "valid", LAM_OK},
    {F_PRE_UNKNOWN, "unknown pre-tokenizer (falls back to gpt2)", LAM_OK},
    {F_NO_MODEL, "no tokenizer.ggml.model", LAM_ERR_TOKENIZER},
    {F_MODEL_BERT, "model 'bert'", LAM_ERR_UNSUPPORTED},
    {F_MODEL_U32, "model is a number", LAM_ERR_TOKENIZER},
    {F_NO_TOKENS, "no tokens array", LAM_ERR_TOKENIZER},
    {F_TOKENS_U32, "tokens array of u32", LAM_ERR_TOKENIZER},
    {F_TOKENS_EMPTY, "empty tokens array", LAM_ERR_TOKENIZER},
    {F_NO_MERGES, "gpt2 without merges", LAM_ERR_TOKENIZER},
    {F_MERGE_UNKNOWN, "merge names an unknown token", LAM_ERR_TOKENIZER},
    {F_MERGE_RESULT_UNKNOWN, "merge result not a token", LAM_ERR_TOKENIZER},
    {F_MERGE_NO_SPACE, "merge without a space", LAM_ERR_TOKENIZER},
    {F_MERGES_I32, "merges array of i32", LAM_ERR_TOKENIZER},
    {F_BOS_RANGE, "bos id out of range", LAM_ERR_TOKENIZER},
    {F_EOS_STRING, "eos id is a string", LAM_ERR_TOKENIZER},
    {F_BOS_NEGATIVE, "bos id is -1 as i32", LAM_ERR_TOKENIZER},
    {F_TYPES_COUNT, "token_type shorter than tokens", LAM_ERR_TOKENIZER},
    {F_TYPES_STR, "token_type of strings", LAM_ERR_TOKENIZER},
    {F_TYPE_VALUE, "token type 42", LAM_ERR_TOKENIZER},
    {F_SCORES_I32, "scores of i32", LAM_ERR_TOKENIZER},
    {F_SCORES_COUNT, "scores longer than tokens", LAM_ERR_TOKENIZER},
    {F_ADD_BOS_NO_BOS, "add_bos without a bos id", LAM_ERR_TOKENIZER},
    {F_ADD_BOS_U32, "add_bos_token is a number", LAM_ERR_TOKENIZER},
    {F_TEMPLATE_U32, "chat template is a number", LAM_ERR_TOKENIZER},
};

static const char *build_bad(enum fault f) {
    static const char *const toks[] = {"a", "b", "ab", "<end>"};
    static const int32_t types[] = {1, 1, 1, 3};
    static const float scores[] = {0, 0, 0, 0, 0};
    gb_t kv = {0};
    uint64_t n = 0;
    if (f != F_NO_MODEL) {
        if (f == F_MODEL_U32) gb_kv_u32(&kv, "tokenizer.ggml.model", 2);
        else gb_kv_str(&kv, "tokenizer.ggml.model", f == F_MODEL_BERT ? "bert" : "gpt2");
        n++;
    }
    gb_kv_str(&kv, "tokenizer.ggml.pre", f == F_PRE_UNKNOWN ? "no-such-pre" : "smollm");
    n++;
    if (f == F_TOKENS_U32) {
        kv_arr_i32(&kv, "tokenizer.ggml.tokens", types, 4);
        n++;
    } else if (f != F_NO_TOKENS) {
        kv_arr_str(&kv, "tokenizer.ggml.tokens", toks, f == F_TOKENS_EMPTY ? 0 : 4);
        n++;
    }
    if (f == F_TYPES_STR) {
        kv_arr_str(&kv, "tokenizer.ggml.token_type", toks, 4);
    } else {
        int32_t ty[4] = {1, 1, 1, 3};
        if (f == F_TYPE_VALUE) ty[1] = 42;
        kv_arr_i32(&kv, "tokenizer.ggml.token_type", ty, f == F_TYPES_COUNT ? 3 : 4);
    }
    n++;
    if (f == F_SCORES_I32) {
        kv_arr_i32(&kv, "tokenizer.ggml.scores", types, 4);
        n++;
    } else if (f == F_SCORES_COUNT) {
        kv_arr_f32(&kv, "tokenizer.ggml.scores", scores, 5);
        n++;
    }
    if (f == F_MERGES_I32) {
        kv_arr_i32(&kv, "tokenizer.ggml.merges", types, 1);
        n++;
    } else if (f != F_NO_MERGES) {
        const char *m = f == F_MERGE_UNKNOWN ? "a c" : f == F_MERGE_RESULT_UNKNOWN ? "b a"
                        : f == F_MERGE_NO_SPACE ? "ab" : "a b";
        kv_arr_str(&kv, "tokenizer.ggml.merges", &m, 1);
        n++;
    }
    if (f == F_BOS_RANGE) {
        gb_kv_u32(&kv, "tokenizer.ggml.bos_token_id", 4);
        n++;
    } else if (f == F_BOS_NEGATIVE) {
        gb_str(&kv, "tokenizer.ggml.bos_token_id");
        gb_u32(&kv, LAM_GGUF_INT32);
        gb_u32(&kv, (uint32_t)-1);
        n++;
    } else if (f != F_ADD_BOS_NO_BOS) {
        gb_kv_u32(&kv, "tokenizer.ggml.bos_token_id", 3);
        n++;
    }
    if (f == F_EOS_STRING) gb_kv_str(&kv, "tokenizer.ggml.eos_token_id", "3");
    else gb_kv_u32(&kv, "tokenizer.ggml.eos_token_id", 3);
    n++;
    if (f == F_ADD_BOS_U32) gb_kv_u32(&kv, "tokenizer.ggml.add_bos_token", 1);
    else gb_kv_bool(&kv, "tokenizer.ggml.add_bos_token", 1);
    n++;
    if (f == F_TEMPLATE_U32) gb_kv_u32(&kv, "tokenizer.chat_template", 7);
    else gb_kv_str(&kv, "tokenizer.chat_template", "{{ '<|im_start|>' + m['role'] }}");
    n++;
    const char *path = write_gguf(&kv, n, "tok_bad");
    gb_free(&kv);
    return path;
}

static void test_bad_metadata(void) {
    printf("\n");
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const char *path = build_bad(bad_cases[i].f);
        char copy[1024];
        snprintf(copy, sizeof(copy), "%s", path);
        lam_tok_t *t = NULL;
        printf("  case: %s\n", bad_cases[i].name);
        lam_status_t st = tok_from_file(copy, &t);
        unlink(copy);
        if (st != bad_cases[i].want)
            printf("  case '%s': got %s, expected %s\n", bad_cases[i].name, lam_status_str(st),
                   lam_status_str(bad_cases[i].want));
        CU_ASSERT_EQUAL(st, bad_cases[i].want);
        if (st == LAM_OK) {
            CU_ASSERT_PTR_NOT_NULL(t);
            size_t n;
            int32_t *ids = enc(t, "ab<end>", 7, true, true, &n);
            int32_t e[] = {3, 2, 3};
            CU_ASSERT_TRUE(ids_equal(ids, n, e, 3));
            free(ids);
            lam_tok_free(t);
        } else {
            CU_ASSERT_PTR_NULL(t);
        }
    }

    /* lam_tok_create argument checks */
    lam_tok_spec_t spec;
    lam_tok_t *t = NULL;
    const char *toks[] = {"a", NULL};
    lam_tok_spec_init(&spec, LAM_TOK_MODEL_BPE);
    CU_ASSERT_EQUAL(lam_tok_create(&spec, &t), LAM_ERR_TOKENIZER); /* empty */
    spec.n_vocab = 2;
    spec.tokens = toks;
    CU_ASSERT_EQUAL(lam_tok_create(&spec, &t), LAM_ERR_TOKENIZER); /* NULL token text */
    spec.n_vocab = 1;
    spec.eot = 1;
    CU_ASSERT_EQUAL(lam_tok_create(&spec, &t), LAM_ERR_TOKENIZER); /* eot out of range */
    spec.eot = LAM_TOK_NULL;
    spec.model = (lam_tok_model_t)7;
    CU_ASSERT_EQUAL(lam_tok_create(&spec, &t), LAM_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_EQUAL(lam_tok_create(NULL, &t), LAM_ERR_INVALID_ARG);
}

/* ---- suite ---- */

static int suite_init(void) {
    const char *env = getenv("LAMINA_TEST_SEED");
    g_seed = env && *env ? strtoull(env, NULL, 0) : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    if (!g_seed) g_seed = 1;
    g_rng = g_seed;
    printf("tokenizer tests: seed %llu (LAMINA_TEST_SEED to repeat)\n", (unsigned long long)g_seed);
    g_fx_ok = load_fixture("tests/fixtures/smollm2_tokens.txt", &g_fxs, &g_n_fxs);
    if (g_fx_ok) {
        g_fx = g_fxs[0].v;
        g_n_fx = g_fxs[0].n;
    }
    g_var_ok = load_fixture("tests/tokenizer/llamacpp_variants.txt", &g_var, &g_n_var);

    char path[1024];
    bool skip = false;
    if (!fx_model_path(path, sizeof(path), &skip)) {
        g_skip_model = skip;
        snprintf(g_model_err, sizeof(g_model_err), "test model %s is missing", path);
        return 0;
    }
    char err[256];
    lam_status_t st = lam_gguf_open(path, &g_gguf, err, sizeof(err));
    if (st != LAM_OK) {
        snprintf(g_model_err, sizeof(g_model_err), "cannot open %s: %s", path, err);
        return 0;
    }
    st = lam_tok_from_gguf(g_gguf, &g_tok);
    if (st != LAM_OK) snprintf(g_model_err, sizeof(g_model_err), "tokenizer from %s: %s", path, lam_status_str(st));
    return 0;
}

static int suite_clean(void) {
    lam_tok_free(g_tok);
    lam_gguf_close(g_gguf);
    free_fixture(g_fxs, g_n_fxs);
    free_fixture(g_var, g_n_var);
    return 0;
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("tokenizer", suite_init, suite_clean);
    CU_add_test(s, "pre-tokenizer splits", test_pretokenizers);
    CU_add_test(s, "small byte-level BPE", test_small_bpe);
    CU_add_test(s, "SentencePiece from arrays", test_spm_arrays);
    CU_add_test(s, "SentencePiece from GGUF", test_spm_gguf);
    CU_add_test(s, "SentencePiece vs llama.cpp", test_spm_llamacpp);
    CU_add_test(s, "malformed metadata", test_bad_metadata);
    CU_add_test(s, "chat template", test_chat_template);
    CU_add_test(s, "chat template detection", test_chat_detect);
    CU_add_test(s, "model metadata", test_model_metadata);
    CU_add_test(s, "llama.cpp fixture ids", test_fixture_matches_llamacpp);
    CU_add_test(s, "fixture round trips", test_fixture_round_trip);
    CU_add_test(s, "llama3 / gpt2 pre-tokenizers vs llama.cpp", test_bpe_variants);
    CU_add_test(s, "special tokens", test_special_parsing);
    CU_add_test(s, "random round trips", test_random_round_trip);
    CU_add_test(s, "long inputs", test_long_input);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
