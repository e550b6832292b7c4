#include "tests/cuda_backend/cb_common.h"

#include "compute_node/backend_cuda.h"
#include "kernels/cpu/ops.h"
#include "tests/cuda_backend/synth_model.h"
#include "tests/util/fixtures.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cb_env_t g_cb;

int cb_env_init(bool always_load)
{
    memset(&g_cb, 0, sizeof g_cb);
    g_cb.have_gpu = lam_backend_cuda_probe(0, g_cb.why, sizeof g_cb.why) == LAM_OK;
    printf("\n  GPU: %s\n", g_cb.have_gpu ? g_cb.why : "none");
    if (!always_load && !g_cb.have_gpu)
        return 0;
    if (!synth_model_or_real(g_cb.model_path, sizeof g_cb.model_path, &g_cb.synthetic))
        return -1;
    if (lam_gguf_open(g_cb.model_path, &g_cb.gguf, NULL, 0) != LAM_OK ||
        lam_model_load(g_cb.gguf, &g_cb.model) != LAM_OK)
        return -1;
    if (!g_cb.synthetic) {
        char fx[4096];
        fx_prompt_t *p = NULL;
        int n = fx_load_prompts(fx_source_path("tests/fixtures/smollm2_greedy_f32.txt", fx, sizeof fx), &p);
        if (n < 1)
            return -1;
        g_cb.n_seq = n < CB_MAX_SEQ ? n : CB_MAX_SEQ;
        for (int i = 0; i < g_cb.n_seq; i++) {
            g_cb.len[i] = p[i].n_tokens + p[i].n_greedy;
            g_cb.tok[i] = malloc((size_t)g_cb.len[i] * sizeof(int32_t));
            memcpy(g_cb.tok[i], p[i].tokens, (size_t)p[i].n_tokens * sizeof(int32_t));
            memcpy(g_cb.tok[i] + p[i].n_tokens, p[i].greedy, (size_t)p[i].n_greedy * sizeof(int32_t));
        }
        fx_free_prompts(p, n);
    } else {
        uint64_t s = 42;
        g_cb.n_seq = 4;
        for (int i = 0; i < g_cb.n_seq; i++) {
            g_cb.len[i] = 40 + 13 * i; /* across page boundaries, not multiples of 16 */
            g_cb.tok[i] = malloc((size_t)g_cb.len[i] * sizeof(int32_t));
            for (int t = 0; t < g_cb.len[i]; t++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                g_cb.tok[i][t] = (int32_t)((s >> 33) % (uint64_t)g_cb.model->cfg.vocab);
            }
        }
    }
    /* sanitizer builds run the f32 reference ~15x slower: fewer, shorter sequences */
    if (getenv("LAMINA_TEST_QUICK")) {
        g_cb.n_seq = g_cb.n_seq < 4 ? g_cb.n_seq : 4;
        for (int i = 0; i < g_cb.n_seq; i++)
            g_cb.len[i] = g_cb.len[i] < 20 ? g_cb.len[i] : 20;
        printf("  LAMINA_TEST_QUICK=1: %d sequences of at most 20 tokens\n", g_cb.n_seq);
    }
    return 0;
}

void cb_env_free(void)
{
    for (int i = 0; i < CB_MAX_SEQ; i++)
        free(g_cb.tok[i]);
    lam_model_free(g_cb.model);
    lam_gguf_close(g_cb.gguf);
    synth_model_remove();
    memset(&g_cb, 0, sizeof g_cb);
}

bool cb_skip_without_gpu(const char *test)
{
    if (g_cb.have_gpu)
        return false;
    printf("\n  SKIPPED %s: no CUDA device (%s)", test, g_cb.why);
    return true;
}

void cb_cmp_rows(cb_cmp_t *c, const float *got, const float *ref, int rows, int vocab)
{
    for (int r = 0; r < rows; r++) {
        const float *g = got + (size_t)r * vocab, *f = ref + (size_t)r * vocab;
        double e2 = 0, r2 = 0;
        bool finite = true;
        for (int j = 0; j < vocab; j++) {
            finite &= isfinite(g[j]) != 0;
            double d = (double)g[j] - (double)f[j];
            e2 += d * d;
            r2 += (double)f[j] * f[j];
        }
        c->rows++;
        if (!finite) {
            c->bad++;
            continue;
        }
        c->agree += lam_argmax_f32(g, vocab) == lam_argmax_f32(f, vocab);
        c->err2 += e2;
        c->ref2 += r2;
        double rel = r2 > 0 ? sqrt(e2 / r2) : 0;
        c->max_row_rel = rel > c->max_row_rel ? rel : c->max_row_rel;
    }
}

void cb_cmp_check(const cb_cmp_t *c, const char *label, double min_agree, double max_nrmse)
{
    double agree = c->rows ? (double)c->agree / (double)c->rows : 0;
    double nrmse = c->ref2 > 0 ? sqrt(c->err2 / c->ref2) : 0;
    printf("\n  %s: top-1 %ld/%ld (%.2f%%), normalised RMS error %.2e (worst row %.2e), %ld non-finite rows", label,
           c->agree, c->rows, 100.0 * agree, nrmse, c->max_row_rel, c->bad);
    CU_ASSERT(c->rows > 0);
    CU_ASSERT_EQUAL(c->bad, 0);
    CU_ASSERT(agree >= min_agree);
    CU_ASSERT(nrmse <= max_nrmse);
}
