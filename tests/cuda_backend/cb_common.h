/* Shared by the CUDA test suites: the model and its teacher-forcing
 * sequences, the GPU probe, and comparison of logits with the reference
 * engine's. */
#ifndef LAM_TEST_CB_COMMON_H
#define LAM_TEST_CB_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "common/gguf.h"
#include "common/model.h"

#define CB_MAX_SEQ 8

typedef struct cb_env {
    bool have_gpu;
    char why[256];              /* the GPU's description, or why there is none */
    bool synthetic;             /* random-weight stand-in for SmolLM2 */
    char model_path[4096];
    lam_gguf_t *gguf;
    lam_model_t *model;
    int n_seq;
    int32_t *tok[CB_MAX_SEQ];   /* teacher-forced token sequences */
    int len[CB_MAX_SEQ];
} cb_env_t;

extern cb_env_t g_cb;

/* Probes the GPU; loads the model (real or synthetic) and the sequences:
 * the fixture prompts with llama.cpp's greedy continuations, or random
 * tokens for the synthetic model (fewer and shorter under
 * LAMINA_TEST_QUICK). Without a GPU the model is loaded only if
 * always_load. */
int cb_env_init(bool always_load);
void cb_env_free(void);

/* Prints the skip line and returns true when there is no GPU. */
bool cb_skip_without_gpu(const char *test);

/* Logit agreement between a path under test and the reference. */
typedef struct cb_cmp {
    long rows, agree, bad;      /* bad: rows with NaN or Inf */
    double err2, ref2;          /* sum of squared differences, of squared reference values */
    double max_row_rel;         /* max over rows of |d|_2 / |ref|_2 */
} cb_cmp_t;

void cb_cmp_rows(cb_cmp_t *c, const float *got, const float *ref, int rows, int vocab);
/* Prints "label: top-1 a/b (x%), normalised RMS error e, ..." and checks
 * top-1 >= min_agree, nrmse <= max_nrmse, no NaN/Inf. */
void cb_cmp_check(const cb_cmp_t *c, const char *label, double min_agree, double max_nrmse);

#endif
