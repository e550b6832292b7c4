/* Test helper: paths and the llama.cpp fixtures under tests/fixtures/. */
#ifndef LAM_TEST_FIXTURES_H
#define LAM_TEST_FIXTURES_H

#include <stdbool.h>
#include <stdint.h>

typedef struct fx_prompt {
    char name[64];
    int32_t *tokens; int n_tokens;   /* prompt ids */
    int32_t *top1;   int n_top1;     /* llama.cpp argmax after each prompt position */
    float *top1_gap; int n_gap;      /* its logit margin over the runner-up */
    int32_t *greedy; int n_greedy;   /* llama.cpp greedy continuation */
} fx_prompt_t;

/* "<source dir>/<rel>" (source dir from LAMINA_SOURCE_DIR, else "."). */
const char *fx_source_path(const char *rel, char *buf, int len);

/* The shipped test model. If it is missing: returns NULL after printing why;
 * *skip is set when LAMINA_ALLOW_NO_MODEL=1 (the caller then skips). */
const char *fx_model_path(char *buf, int len, bool *skip);

/* Parses tests/fixtures/smollm2_greedy.txt. Returns the count, or -1. */
int fx_load_prompts(const char *path, fx_prompt_t **out);
void fx_free_prompts(fx_prompt_t *p, int n);

#endif
